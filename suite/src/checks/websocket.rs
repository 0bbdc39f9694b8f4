//! WebSockets through the proxy: `ws.upgrade` (the handshake and frames both ways on every
//! WebSocket route), `ws.terminal` (the terminal's protocol v3 round trip), `ws.idle` (a socket
//! with no traffic survives the idle period). DorkOS has no WebSocket routes: skipped there.

use std::time::Duration;

use futures::future::join_all;
use mock_server::Profile;
use serde_json::{json, Map, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::client::{
    describe_frame, ms_since, secs, text_json, ws_close, ws_connect, ws_next, ws_send, Ws,
    EXCHANGE_TIMEOUT, NO_FRAME, WS_OVER_H2,
};
use super::timeouts::idle_deadline;
use super::{CheckInfo, Outcome, Target};
use crate::tls::Transport;

pub const WS_UPGRADE: CheckInfo = CheckInfo {
    id: "ws.upgrade",
    requirement: "WebSockets for live message transport: /api/event/ws, /api/global/event/ws, /api/terminal/ws",
    sign: "Page loads, but sending messages fails (or \"400 Bad Request\" on the WebSocket handshake)",
    fix: "Enable WebSocket proxying: proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\"; on each WebSocket route",
    long: false,
    bulky: false,
    needs_ui_password: false,
    browser: false,
};

pub const WS_TERMINAL: CheckInfo = CheckInfo {
    id: "ws.terminal",
    requirement: "WebSockets for live message transport: /api/terminal/ws (terminal sessions)",
    sign: "Everything works locally, but breaks only behind the proxy (the proxy is missing WebSocket support)",
    fix: "location = /api/terminal/ws { proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\"; proxy_buffering off; }",
    long: false,
    bulky: false,
    needs_ui_password: false,
    browser: false,
};

pub const WS_IDLE: CheckInfo = CheckInfo {
    id: "ws.idle",
    requirement: "Long-lived read timeouts for live streams and terminal sessions",
    sign: "Connection drops after 60 seconds",
    fix: "proxy_read_timeout 3600s; proxy_send_timeout 3600s; on the WebSocket routes (Caddy: transport http { read_timeout 3600s write_timeout 3600s })",
    long: true,
    bulky: false,
    needs_ui_password: false,
    browser: false,
};

/// The event WebSocket routes and the scope of their `ready` frame.
pub(crate) const EVENT_ROUTES: [(&str, &str); 2] = [
    ("/api/event/ws", "directory"),
    ("/api/global/event/ws", "global"),
];
pub(crate) const TERMINAL_ROUTE: &str = "/api/terminal/ws";
/// The browser gives up on the WebSocket and falls back to SSE when `ready` takes longer.
const READY_BUDGET: Duration = Duration::from_secs(2);
/// Text echoes per event route; their round-trip times feed the performance report.
const ECHOES: usize = 20;
/// A binary frame large enough to span several TCP segments and proxy buffers.
const BINARY_ECHO_BYTES: usize = 16 * 1024;

pub(crate) fn not_on_dorkos(info: &CheckInfo, target: &Target) -> Option<Outcome> {
    (target.profile == Profile::Dorkos)
        .then(|| info.skip("the DorkOS backend has no WebSocket routes (SSE only)"))
}

/// What happened on one route: a timeline of steps and the first problem, if any.
pub(crate) struct Probe {
    pub route: String,
    start: Instant,
    steps: Vec<Value>,
    pub extra: Map<String, Value>,
    pub problem: Option<String>,
}

impl Probe {
    pub fn new(route: &str) -> Probe {
        Probe {
            route: route.to_string(),
            start: Instant::now(),
            steps: Vec::new(),
            extra: Map::new(),
            problem: None,
        }
    }

    pub fn step(&mut self, what: &str, detail: impl Into<Value>) {
        self.steps
            .push(json!({"at_ms": ms_since(self.start), "step": what, "detail": detail.into()}));
    }

    pub fn end(mut self, result: Result<(), String>) -> Probe {
        if let Err(e) = result {
            self.step("failed", e.clone());
            self.problem = Some(e);
        }
        self
    }

    pub fn to_json(&self) -> Value {
        let mut j = json!({"path": self.route, "ok": self.problem.is_none(), "problem": self.problem, "steps": self.steps});
        for (k, v) in &self.extra {
            j[k] = v.clone();
        }
        j
    }
}

/// Grades a set of per-route probes: pass when every route worked.
pub(crate) fn grade_probes(
    info: &CheckInfo,
    expected: String,
    pass_text: String,
    probes: Vec<Probe>,
    mut m: Value,
) -> Outcome {
    let bad: Vec<String> = probes
        .iter()
        .filter_map(|p| p.problem.as_ref().map(|e| format!("{}: {e}", p.route)))
        .collect();
    m["paths"] = Value::Array(probes.iter().map(Probe::to_json).collect());
    info.pass_unless(&bad, expected, pass_text, m)
}

/// Opens `route?query` and records the handshake; a refusal is the probe's problem.
pub(crate) async fn open(
    probe: &mut Probe,
    target: &Target,
    query: &str,
    extra: &[(&str, String)],
) -> Result<Ws, String> {
    let path = if query.is_empty() {
        probe.route.clone()
    } else {
        format!("{}?{query}", probe.route)
    };
    match ws_connect(target, &path, extra).await {
        Ok((ws, up)) => {
            probe.extra.insert("status".into(), json!(up.status));
            probe.step(
                "handshake",
                format!("{} after {} ms", up.status, up.handshake_ms),
            );
            if target.transport == Transport::H2 {
                probe.extra.insert("transport".into(), json!(WS_OVER_H2));
            }
            if let Some(instance) = up.headers.get("x-mock-instance") {
                probe.extra.insert(
                    "instance".into(),
                    json!(String::from_utf8_lossy(instance.as_bytes())),
                );
            }
            Ok(ws)
        }
        Err(refused) => {
            probe.extra.insert("status".into(), json!(refused.status));
            Err(format!("upgrade refused: {refused}"))
        }
    }
}

/// Waits for the first frame the backend sends on a fresh socket: `ready` on the event routes,
/// the terminal's `hello`.
pub(crate) async fn first_frame(
    probe: &mut Probe,
    ws: &mut Ws,
    deadline: Instant,
) -> Result<(), String> {
    if probe.route == TERMINAL_ROUTE {
        let hello = term_expect(ws, "hello", deadline).await?;
        probe.step("hello", hello.clone());
        if hello.get("v").and_then(Value::as_u64) != Some(3) {
            return Err(format!("hello is not protocol v3: {hello}"));
        }
        return Ok(());
    }
    let msg = ws_next(ws, deadline)
        .await
        .map_err(|e| format!("no ready frame: {e}"))?;
    let v = text_json(&msg)
        .ok_or_else(|| format!("first frame is not JSON text: {}", describe_frame(&msg)))?;
    if v.get("type").and_then(Value::as_str) != Some("ready") {
        return Err(format!("first frame is not ready: {v}"));
    }
    probe.step("ready", v);
    Ok(())
}

/// Whether a probe failed only because its first frame (`ready`, the terminal's `hello`) did
/// not come before the deadline, on a socket that opened.
fn first_frame_missed(problem: &str) -> bool {
    ["no ready frame: ", "no hello frame: "].iter().any(|p| problem.strip_prefix(p) == Some(super::client::NO_FRAME))
}

/// Sends `msg` and waits for the same frame back; other frames in between are skipped.
pub(crate) async fn echo(ws: &mut Ws, msg: Message) -> Result<Duration, String> {
    let sent = Instant::now();
    ws_send(ws, msg.clone()).await?;
    let deadline = sent + EXCHANGE_TIMEOUT;
    let mut skipped = Vec::new();
    loop {
        match ws_next(ws, deadline).await {
            Ok(back) if back == msg => return Ok(sent.elapsed()),
            Ok(other) => skipped.push(describe_frame(&other)),
            Err(e) => {
                return Err(format!(
                    "echo of a {} did not come back: {e}{}",
                    describe_frame(&msg),
                    if skipped.is_empty() {
                        String::new()
                    } else {
                        format!(" (got instead: {})", skipped.join(", "))
                    }
                ))
            }
        }
    }
}

/// Waits for a text frame whose JSON `type` is `kind`.
async fn expect_type(ws: &mut Ws, kind: &str, deadline: Instant) -> Result<Value, String> {
    loop {
        let msg = ws_next(ws, deadline)
            .await
            .map_err(|e| format!("no {kind} frame: {e}"))?;
        if let Some(v) = text_json(&msg) {
            if v.get("type").and_then(Value::as_str) == Some(kind) {
                return Ok(v);
            }
        }
    }
}

pub async fn upgrade(target: &Target) -> Outcome {
    let info = &WS_UPGRADE;
    if let Some(skip) = not_on_dorkos(info, target) {
        return skip;
    }
    let (mut probes, terminal) = tokio::join!(
        join_all(
            EVENT_ROUTES
                .iter()
                .map(|(route, scope)| event_route(target, route, scope))
        ),
        terminal_route(target)
    );
    probes.push(terminal);
    // A route whose first frame missed its budget is read again on a fresh socket before it is
    // graded: a proxy that holds frames holds them every time, a stall of the machine does not
    // repeat (seen once natively in 548 runs sharing two cores). The first read stays in the
    // evidence.
    let mut late_first_reads = Vec::new();
    for p in probes.iter_mut().filter(|p| p.problem.as_deref().is_some_and(first_frame_missed)) {
        let again = match EVENT_ROUTES.iter().find(|(route, _)| *route == p.route) {
            Some((route, scope)) => event_route(target, route, scope).await,
            None => terminal_route(target).await,
        };
        late_first_reads.push(std::mem::replace(p, again).to_json());
    }
    let rtt = probes[0]
        .extra
        .get("echo_rtt_us")
        .cloned()
        .unwrap_or(json!([]));
    let expected = format!(
        "101 on /api/event/ws, /api/global/event/ws and /api/terminal/ws; ready (or hello) within {}; text and binary frames echoed intact; the server's own frames arrive",
        secs(READY_BUDGET)
    );
    let pass = format!(
        "101 on all {} routes, frames intact both ways ({ECHOES} echoes per event route)",
        probes.len()
    );
    let mut m = json!({"echo_rtt_us": rtt});
    if !late_first_reads.is_empty() {
        m["late_first_reads"] = Value::Array(late_first_reads);
    }
    grade_probes(info, expected, pass, probes, m)
}

async fn event_route(target: &Target, route: &str, scope: &str) -> Probe {
    let mut probe = Probe::new(route);
    let result = async {
        let start = Instant::now();
        let mut ws = open(
            &mut probe,
            target,
            "mock_echo=1&mock_silent=1&mock_push_after_ms=200",
            &[],
        )
        .await?;
        first_frame(&mut probe, &mut ws, start + READY_BUDGET).await?;
        let push = expect_type(&mut ws, "mock.push", Instant::now() + EXCHANGE_TIMEOUT).await?;
        probe.step("server push", push);
        let mut rtts = Vec::with_capacity(ECHOES);
        for n in 0..ECHOES {
            let text =
                json!({"type": "suite.echo", "n": n, "scope": scope, "text": "héllo ✓ — 中文 ❤"})
                    .to_string();
            rtts.push(echo(&mut ws, Message::text(text)).await?.as_micros() as u64);
        }
        probe.step("text echoes", format!("{ECHOES} intact"));
        probe.extra.insert("echo_rtt_us".into(), json!(rtts));
        let binary: Vec<u8> = (0..BINARY_ECHO_BYTES)
            .map(|i| (i * 7 % 256) as u8)
            .collect();
        echo(&mut ws, Message::binary(binary)).await?;
        probe.step("binary echo", format!("{BINARY_ECHO_BYTES} bytes intact"));
        ws_close(ws).await;
        Ok(())
    }
    .await;
    probe.end(result)
}

async fn terminal_route(target: &Target) -> Probe {
    let mut probe = Probe::new(TERMINAL_ROUTE);
    let result = async {
        let start = Instant::now();
        let mut ws = open(&mut probe, target, "mock_silent=1", &[]).await?;
        first_frame(&mut probe, &mut ws, start + READY_BUDGET).await?;
        ping_and_close(&mut probe, ws).await
    }
    .await;
    probe.end(result)
}

/// Ends a terminal session the way every terminal probe does: a ping answered by a pong.
pub(crate) async fn ping_and_close(probe: &mut Probe, mut ws: Ws) -> Result<(), String> {
    ws_send(&mut ws, term(json!({"t": "ping"}))).await?;
    let pong = term_expect(&mut ws, "pong", Instant::now() + EXCHANGE_TIMEOUT).await?;
    probe.step("pong", pong);
    ws_close(ws).await;
    Ok(())
}

/// A terminal protocol v3 frame: binary, `0x01` then UTF-8 JSON.
fn term(v: Value) -> Message {
    let mut bytes = vec![0x01];
    bytes.extend_from_slice(v.to_string().as_bytes());
    Message::binary(bytes)
}

fn term_decode(msg: &Message) -> Result<Value, String> {
    match msg {
        Message::Binary(b) if b.first() == Some(&0x01) => {
            serde_json::from_slice(&b[1..]).map_err(|e| {
                format!(
                    "terminal frame with invalid JSON ({e}): {}",
                    describe_frame(msg)
                )
            })
        }
        other => Err(format!(
            "not a protocol v3 frame: {}",
            describe_frame(other)
        )),
    }
}

/// Waits for the terminal frame `{"t": t, ...}`; an `error` frame or a malformed frame ends it.
async fn term_expect(ws: &mut Ws, t: &str, deadline: Instant) -> Result<Value, String> {
    loop {
        let msg = ws_next(ws, deadline)
            .await
            .map_err(|e| format!("no {t} frame: {e}"))?;
        let v = term_decode(&msg)?;
        match v.get("t").and_then(Value::as_str) {
            Some(kind) if kind == t => return Ok(v),
            Some("error") => return Err(format!("error frame instead of {t}: {v}")),
            _ => continue,
        }
    }
}

pub async fn terminal(target: &Target) -> Outcome {
    let info = &WS_TERMINAL;
    if let Some(skip) = not_on_dorkos(info, target) {
        return skip;
    }
    let mut probe = Probe::new(TERMINAL_ROUTE);
    let result = async {
        let mut ws = open(&mut probe, target, "mock_silent=1", &[]).await?;
        first_frame(&mut probe, &mut ws, Instant::now() + EXCHANGE_TIMEOUT).await?;
        terminal_session(&mut probe, &mut ws, "suite-term").await?;
        // A write close to the 64 KiB frame limit, as a pasted block of text would be.
        let big: String = "0123456789abcdef✓".repeat(2500);
        terminal_write(&mut probe, &mut ws, "suite-term", &big).await?;
        ping_and_close(&mut probe, ws).await
    }
    .await;
    let probe = probe.end(result);
    let expected = "hello v3 from the server; hello, attach, write and ping from the client answered with snapshot, output (payload intact, also for a 40 KiB write) and pong, all as binary 0x01+JSON frames".to_string();
    grade_probes(
        info,
        expected,
        "full protocol v3 round trip, payloads intact".into(),
        vec![probe],
        json!({}),
    )
}

/// hello, attach, a small write: the start of every terminal session.
async fn terminal_session(probe: &mut Probe, ws: &mut Ws, session: &str) -> Result<(), String> {
    ws_send(ws, term(json!({"t": "hello", "v": 3}))).await?;
    ws_send(ws, term(json!({"t": "attach", "s": session}))).await?;
    let snapshot = term_expect(ws, "snapshot", Instant::now() + EXCHANGE_TIMEOUT).await?;
    if snapshot.get("s").and_then(Value::as_str) != Some(session) {
        return Err(format!("snapshot for the wrong session: {snapshot}"));
    }
    probe.step("snapshot", snapshot);
    terminal_write(probe, ws, session, "echo héllo ✓\r").await
}

/// Writes `data` to the session and waits for the same data back as output.
async fn terminal_write(
    probe: &mut Probe,
    ws: &mut Ws,
    session: &str,
    data: &str,
) -> Result<(), String> {
    ws_send(ws, term(json!({"t": "write", "s": session, "d": data}))).await?;
    let output = term_expect(ws, "output", Instant::now() + EXCHANGE_TIMEOUT).await?;
    let back = output.get("d").and_then(Value::as_str).unwrap_or_default();
    if back != data || output.get("s").and_then(Value::as_str) != Some(session) {
        return Err(format!(
            "output differs from the write: sent {} chars, got {} chars for session {:?}",
            data.chars().count(),
            back.chars().count(),
            output.get("s")
        ));
    }
    probe.step("output", format!("{} chars intact", data.chars().count()));
    Ok(())
}

pub async fn idle(target: &Target) -> Outcome {
    let info = &WS_IDLE;
    if let Some(skip) = not_on_dorkos(info, target) {
        return skip;
    }
    let idle = target.idle;
    let (mut probes, terminal) = tokio::join!(
        join_all(
            EVENT_ROUTES
                .iter()
                .map(|(route, _)| idle_event_route(target, route, idle))
        ),
        idle_terminal(target, idle)
    );
    probes.push(terminal);
    let expected = format!(
        "on every WebSocket route, after {} without any frame (no pings either), a frame from the server and one from the client both arrive on the same connection",
        secs(idle)
    );
    let pass = format!(
        "all {} routes survived {} of silence",
        probes.len(),
        secs(idle)
    );
    let m = json!({"idle_ms": idle.as_millis() as u64, "deadline_ms": idle_deadline(idle).as_millis() as u64});
    grade_probes(info, expected, pass, probes, m)
}

/// An event socket whose server pushes one frame after the idle period; then the client's echo.
async fn idle_event_route(target: &Target, route: &str, idle: Duration) -> Probe {
    let mut probe = Probe::new(route);
    let result = async {
        let query = format!(
            "mock_silent=1&mock_echo=1&mock_push_after_ms={}",
            idle.as_millis()
        );
        let mut ws = open(&mut probe, target, &query, &[]).await?;
        let connected = Instant::now();
        first_frame(&mut probe, &mut ws, connected + EXCHANGE_TIMEOUT).await?;
        let push = expect_type(&mut ws, "mock.push", connected + idle_deadline(idle))
            .await
            .map_err(|e| format!("{e} (after {} ms of silence)", ms_since(connected)))?;
        probe.step("server frame after the idle period", push);
        echo(
            &mut ws,
            Message::text(json!({"type": "suite.after-idle"}).to_string()),
        )
        .await?;
        probe.step("client frame echoed", "intact");
        ws_close(ws).await;
        Ok(())
    }
    .await;
    probe.end(result)
}

/// A terminal session left silent for the idle period, then a write and a ping.
async fn idle_terminal(target: &Target, idle: Duration) -> Probe {
    let mut probe = Probe::new(TERMINAL_ROUTE);
    let result = async {
        let mut ws = open(&mut probe, target, "mock_silent=1", &[]).await?;
        first_frame(&mut probe, &mut ws, Instant::now() + EXCHANGE_TIMEOUT).await?;
        terminal_session(&mut probe, &mut ws, "suite-idle").await?;
        let silent_from = Instant::now();
        // Keep reading during the silence, so a proxy that cuts the socket is seen at once.
        loop {
            match ws_next(&mut ws, silent_from + idle).await {
                Ok(_) => continue,
                Err(e) if e == NO_FRAME => break,
                Err(e) => return Err(format!("{e} after {} ms of silence", ms_since(silent_from))),
            }
        }
        probe.step(
            "silence",
            format!("{} ms without a frame", ms_since(silent_from)),
        );
        terminal_write(&mut probe, &mut ws, "suite-idle", "after idle ✓\r").await?;
        ping_and_close(&mut probe, ws).await
    }
    .await;
    probe.end(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_missed_first_frame_is_read_again() {
        assert!(first_frame_missed(&format!("no ready frame: {}", super::super::client::NO_FRAME)));
        assert!(first_frame_missed(&format!("no hello frame: {}", super::super::client::NO_FRAME)));
        assert!(!first_frame_missed("upgrade refused: HTTP 400 instead of 101"));
        assert!(!first_frame_missed("no ready frame: the connection closed (1006)"));
        assert!(!first_frame_missed(&format!("echo of a text frame did not come back: {}", super::super::client::NO_FRAME)));
    }
}
