// The browser page's probes: what the OpenChamber UI does with the app's live routes, each
// recorded with performance.now() and the wall clock into window.records, which the suite's
// harness reads back over the DevTools protocol. Every probe resolves (never rejects) with a
// summary; the records are the timeline.
"use strict";
window.records = [];

function record(kind, route, detail) {
  window.records.push({ t_ms: performance.now(), wall_ms: Date.now(), kind, route, detail: detail ?? null });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// EventSource on every route for `windowMs`: opens, every event (ticks with their lag from the
// backend's emission), errors with the readyState the browser reports.
window.probeSse = async function (routes, windowMs) {
  const results = routes.map((route) => ({ route, opened: false, events: 0, ticks: 0, first_event_ms: null, max_lag_ms: null, errors: [], last_event_id: null }));
  const started = performance.now();
  const sources = routes.map((route, i) => {
    const r = results[i];
    record("sse.open", route);
    const es = new EventSource(route);
    es.onopen = () => { r.opened = true; record("sse.opened", route); };
    es.onmessage = (ev) => {
      r.events += 1;
      if (r.first_event_ms === null) r.first_event_ms = performance.now() - started;
      r.last_event_id = ev.lastEventId || r.last_event_id;
      let lag = null;
      try {
        const data = JSON.parse(ev.data);
        if (data.type === "mock.tick") {
          r.ticks += 1;
          lag = Date.now() - data.emitted_at_us / 1000;
          r.max_lag_ms = Math.max(r.max_lag_ms ?? 0, lag);
        }
      } catch (e) { /* a non-JSON event is still an event */ }
      record("sse.event", route, { id: ev.lastEventId, lag_ms: lag, data: ev.data.slice(0, 120) });
    };
    es.onerror = () => {
      const state = ["CONNECTING", "OPEN", "CLOSED"][es.readyState];
      r.errors.push(state);
      record("sse.error", route, { readyState: state });
    };
    return es;
  });
  await sleep(windowMs);
  sources.forEach((es, i) => { es.close(); record("sse.closed", routes[i]); });
  return results;
};

// One EventSource on a durable stream for `windowMs`, across the reconnects the browser makes
// by itself when the stream ends: per connection, the ticks' first and last seq and when the
// last event and the end came; every tick's seq in arrival order.
window.probeReconnect = async function (route, windowMs) {
  const r = { route, connections: [], seqs: [], errors: [], final_state: null };
  const states = ["CONNECTING", "OPEN", "CLOSED"];
  const started = performance.now();
  let current = null;
  record("sse.open", route);
  const es = new EventSource(route);
  es.onopen = () => {
    current = { opened_ms: performance.now() - started, first_seq: null, last_seq: null, ticks: 0, last_event_ms: null, ended_ms: null };
    r.connections.push(current);
    record("sse.opened", route, { connection: r.connections.length });
  };
  es.onmessage = (ev) => {
    const at = performance.now() - started;
    try {
      const data = JSON.parse(ev.data);
      if (data.type === "mock.tick") {
        r.seqs.push(data.seq);
        if (current) {
          if (current.first_seq === null) current.first_seq = data.seq;
          current.last_seq = data.seq;
          current.ticks += 1;
        }
      }
    } catch (e) { /* a non-JSON event is still an event */ }
    if (current) current.last_event_ms = at;
    record("sse.event", route, { id: ev.lastEventId, data: ev.data.slice(0, 120) });
  };
  es.onerror = () => {
    const at = performance.now() - started;
    if (current && current.ended_ms === null) current.ended_ms = at;
    current = null;
    r.errors.push({ at_ms: at, state: states[es.readyState] });
    record("sse.error", route, { readyState: states[es.readyState] });
  };
  await sleep(windowMs);
  r.final_state = states[es.readyState];
  es.close();
  record("sse.closed", route);
  return r;
};

// The terminal's protocol v3 frame: 0x01 + UTF-8 JSON.
function terminalFrame(obj) {
  const json = new TextEncoder().encode(JSON.stringify(obj));
  const frame = new Uint8Array(json.length + 1);
  frame[0] = 1;
  frame.set(json, 1);
  return frame;
}

function decodeTerminal(data) {
  const bytes = new Uint8Array(data);
  if (bytes[0] !== 1) return null;
  try { return JSON.parse(new TextDecoder().decode(bytes.subarray(1))); } catch (e) { return null; }
}

// One socket as the UI uses it. Event sockets (`?mock_echo=1`): `ready` first, then a text and a
// binary frame must come back intact. The terminal: `hello` v3, then hello/attach/write answered
// by snapshot and output, binary frames only.
function probeSocket(route, terminal, timeoutMs) {
  return new Promise((resolve) => {
    const r = { route, opened: false, first: null, echoed_text: false, echoed_binary: false, snapshot: false, output: false, close_code: null, close_reason: null, was_clean: null, errors: 0, done: false };
    const url = new URL(route, location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    record("ws.open", route);
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    const text = "browser text " + Math.random();
    const binary = new Uint8Array(4096).map((_, i) => (i * 7) % 256);
    const finish = () => { if (!r.done) { r.done = true; clearTimeout(timer); try { ws.close(1000); } catch (e) {} resolve(r); } };
    const timer = setTimeout(finish, timeoutMs);
    const complete = () => terminal ? (r.snapshot && r.output) : (r.echoed_text && r.echoed_binary);
    ws.onopen = () => {
      r.opened = true;
      record("ws.opened", route, { protocol: ws.protocol, extensions: ws.extensions });
      if (terminal) {
        ws.send(terminalFrame({ t: "hello", v: 3 }));
        ws.send(terminalFrame({ t: "attach", s: "browser" }));
        ws.send(terminalFrame({ t: "write", s: "browser", d: "echo browser\n" }));
      } else {
        ws.send(text);
        ws.send(binary);
      }
    };
    ws.onmessage = (ev) => {
      let detail;
      if (typeof ev.data === "string") {
        detail = { text: ev.data.slice(0, 120) };
        if (ev.data === text) r.echoed_text = true;
        else if (r.first === null) { try { r.first = JSON.parse(ev.data).type ?? null; } catch (e) {} }
      } else {
        const bytes = new Uint8Array(ev.data);
        detail = { binary: bytes.length };
        if (terminal) {
          const msg = decodeTerminal(ev.data);
          detail.frame = msg;
          if (msg && r.first === null) r.first = msg.t;
          if (msg && msg.t === "snapshot") r.snapshot = true;
          if (msg && msg.t === "output" && msg.d === "echo browser\n") r.output = true;
        } else if (bytes.length === binary.length && bytes.every((b, i) => b === binary[i])) {
          r.echoed_binary = true;
        }
      }
      record("ws.message", route, detail);
      if (complete()) finish();
    };
    ws.onerror = () => { r.errors += 1; record("ws.error", route); };
    ws.onclose = (ev) => {
      r.close_code = ev.code; r.close_reason = ev.reason; r.was_clean = ev.wasClean;
      record("ws.close", route, { code: ev.code, reason: ev.reason, wasClean: ev.wasClean });
      finish();
    };
  });
}

window.probeWs = async function (sockets, timeoutMs) {
  return Promise.all(sockets.map((s) => probeSocket(s.route, s.terminal, timeoutMs)));
};

// A file upload as the UI sends it: fetch POST of `size` bytes (byte i = i mod 251, so the
// suite knows its SHA-256), application/octet-stream; the status and the backend's report.
window.probeUpload = async function (route, size, timeoutMs) {
  const body = new Uint8Array(size);
  // The 251-byte pattern, then doubled in place: a 50 MB body in a few milliseconds.
  for (let i = 0; i < Math.min(size, 251); i++) body[i] = i;
  for (let filled = Math.min(size, 251); filled < size; filled *= 2) body.copyWithin(filled, 0, Math.min(filled, size - filled));
  const r = { route, size, status: null, status_text: null, report: null, error: null, ms: null };
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  const started = performance.now();
  record("upload.start", route, { size });
  try {
    const res = await fetch(route, { method: "POST", headers: { "Content-Type": "application/octet-stream" }, body, signal: controller.signal });
    r.status = res.status;
    r.status_text = res.statusText;
    const text = await res.text();
    try { r.report = JSON.parse(text); } catch (e) { r.report = text.slice(0, 300); }
  } catch (e) {
    r.error = String(e);
  }
  clearTimeout(timer);
  r.ms = performance.now() - started;
  record("upload.end", route, { status: r.status, error: r.error, ms: r.ms });
  return r;
};

record("page.loaded", location.pathname);
