//! The browser tier: the user-visible checks repeated in headless Chromium, through the proxy,
//! from the mock's page (`/api/mock/browser`, same origin as the app): `browser.sse`
//! (EventSource on every SSE route), `browser.ws` (the app's sockets, text and binary frames, the
//! terminal's protocol), `browser.upload` (a 50 MB `fetch`) and `browser.reconnect` (a DorkOS
//! durable stream ended again and again: EventSource comes back and resumes after
//! `Last-Event-ID`, whether the backend or the proxy cut it). Each keeps the page's own
//! timeline (`performance.now()` and the wall clock of every event) and what Chromium reported
//! (`net::ERR_...` texts, handshake statuses, close codes, console errors) as evidence.
//!
//! These checks are a tier of their own ([`CheckInfo::browser`]): a run executes them only when
//! it is handed a browser context (`check --browser`, `matrix --browser`, `tests/browser.rs`).

use std::time::Duration;

use mock_server::Profile;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{CheckInfo, Grade, Outcome, Target};
use crate::browser::{page_url, Context, NetLog, Tab};

pub const BROWSER_SSE: CheckInfo = CheckInfo {
    id: "browser.sse",
    requirement: "SSE without buffering, as the browser sees it: an EventSource on every SSE route gets its events as they are sent",
    sign: "Notifications or live status do not update",
    fix: "Disable buffering on SSE routes: proxy_buffering off; proxy_cache off; (and X-Accel-Buffering \"no\"); Caddy: flush_interval -1",
    long: false,
    bulky: false,
    needs_ui_password: false,
    browser: true,
};

pub const BROWSER_WS: CheckInfo = CheckInfo {
    id: "browser.ws",
    requirement: "WebSockets for live message transport, as the browser sees it: /api/event/ws, /api/global/event/ws, /api/terminal/ws open and carry text and binary frames",
    sign: "Page loads, but sending messages fails (or \"400 Bad Request\" on the WebSocket handshake)",
    fix: "Enable WebSocket proxying: proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\"; on each WebSocket route",
    long: false,
    bulky: false,
    needs_ui_password: false,
    browser: true,
};

pub const BROWSER_UPLOAD: CheckInfo = CheckInfo {
    id: "browser.upload",
    requirement: "Large request bodies for attachments, as the browser sends them: a 50 MB fetch upload reaches the backend",
    sign: "File uploads fail",
    fix: "client_max_body_size 50M; (client_body_buffer_size 50M;) — increase body size limits if users upload files",
    long: false,
    bulky: true,
    needs_ui_password: false,
    browser: true,
};

pub const BROWSER_RECONNECT: CheckInfo = CheckInfo {
    id: "browser.reconnect",
    requirement: "Durable streams resume after a cut: when a DorkOS session stream ends (the backend ends it, or the proxy cuts it when idle), the browser's EventSource reconnects with Last-Event-ID and gets every later event once",
    sign: "After a reconnect, messages are missing or shown twice, or live updates stop until the page is reloaded",
    fix: "Pass the browser's Last-Event-ID request header through to the backend unchanged (no rule that clears it or forwards only a list of headers), and answer the reconnect like the first request: no cached or error response on the SSE routes",
    long: false,
    bulky: false,
    needs_ui_password: false,
    browser: true,
};

/// The protocol-level check that tests the same requirement as a browser check (its fix
/// applies, and where the two disagree the difference is a finding); any other id is itself
/// (`browser.reconnect` too: no protocol check resumes a stream).
pub fn protocol_twin(id: &str) -> &str {
    match id {
        "browser.sse" => "sse.stream",
        "browser.ws" => "ws.upgrade",
        "browser.upload" => "body.large",
        other => other,
    }
}

/// Whether a browser check runs under `profile`. Under `bare` only `browser.sse`: that profile
/// differs from `openchamber` only in the streams' helper headers and heartbeats, so its sockets
/// and uploads would repeat the `openchamber` run's (the tier stays seconds long).
/// `browser.reconnect` only under `dorkos`: only DorkOS's durable streams carry event ids to
/// resume from.
pub fn runs_under(id: &str, profile: Profile) -> bool {
    match id {
        "browser.reconnect" => profile == Profile::Dorkos,
        _ => profile != Profile::Bare || id == BROWSER_SSE.id,
    }
}

/// Whether a browser check measures timing (and so waits for a quiet moment of the machine):
/// `browser.reconnect` judges the order of events and who ended a connection after 2 s of
/// silence, with half a second of margin, not lags.
pub fn measures_timing(id: &str) -> bool {
    id != BROWSER_RECONNECT.id
}

/// The page every check loads.
const PAGE: &str = mock_server::browser_page::PATH;
/// How long the EventSources listen.
const SSE_WINDOW: Duration = Duration::from_millis(2500);
/// Ticks 100 ms apart for the whole window, then the stream stays open (a proxy that buffers
/// until the end delivers nothing inside the window).
const SSE_QUERY: &str = "ticks=40&interval_ms=100&hold_ms=20000";
/// A tick later than this from its emission came in a batch (as `sse.stream`).
const LAG_BUDGET_MS: f64 = super::sse::LAG_BUDGET_MS;
/// How long the sockets get to open and echo.
const WS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the upload may take in the page.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// The SSE routes the UI opens, per profile.
fn sse_routes(profile: Profile) -> Vec<String> {
    let routes: &[&str] = match profile {
        Profile::Openchamber | Profile::Bare => &[
            "/api/event",
            "/api/global/event",
            "/api/notifications/stream",
            "/api/openchamber/events",
            "/api/terminal/browser/stream",
        ],
        Profile::Dorkos => &["/api/events", "/api/sessions/browser/events", "/api/rooms/browser/events"],
    };
    routes.iter().map(|r| format!("{r}?{SSE_QUERY}")).collect()
}

/// Dispatches a browser-tier check.
pub(super) async fn dispatch(id: &str, target: &Target, context: &Context) -> Outcome {
    match id {
        "browser.sse" => sse(target, context).await,
        "browser.ws" => ws(target, context).await,
        "browser.upload" => upload(target, context).await,
        "browser.reconnect" => reconnect(target, context).await,
        other => super::unknown(other),
    }
}

/// The page opened through the proxy, or the outcome saying why it is not there.
async fn open(info: &CheckInfo, target: &Target, context: &Context, expected: &str) -> Result<(Tab, String), Outcome> {
    let url = page_url(target.transport, &target.host, target.addr, PAGE);
    let fail = |actual: String, net: &NetLog| info.outcome(Grade::Fail, expected, actual, json!({"page": url, "net": net}));
    let tab = context.open(&url).await.map_err(|(e, net)| fail(format!("{e}{}", browser_said(&net.errors_for(PAGE))), &net))?;
    let status = tab.evaluate("performance.getEntriesByType('navigation')[0]?.responseStatus ?? null").await.unwrap_or(Value::Null);
    let loaded = tab.evaluate("typeof window.probeSse === 'function'").await.unwrap_or(Value::Bool(false));
    if loaded != Value::Bool(true) {
        let net = tab.net_log();
        // The page as the browser took it: a proxy that rewrites every Content-Type or drops
        // the Content-Encoding of the gzipped page leaves no script to run.
        let content_type = tab.evaluate("document.contentType").await.unwrap_or(Value::Null);
        let text = tab.evaluate("(document.body?.innerText ?? '').slice(0, 80)").await.unwrap_or(Value::Null);
        tab.close().await;
        let start = match text.as_str() {
            // Compressed bytes shown as text say nothing but that they are not text.
            Some(t) if t.chars().any(|c| c == char::REPLACEMENT_CHARACTER || (c.is_control() && !c.is_whitespace())) => "bytes that are not text".to_string(),
            Some(t) => format!("{t:?}"),
            None => "nothing".to_string(),
        };
        return Err(fail(format!("the page {PAGE} did not run through the proxy (HTTP status {status}, taken as {content_type}, starting with {start})"), &net));
    }
    Ok((tab, url))
}

/// ` (browser: a; b)`, or nothing.
fn browser_said(errors: &[String]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!(" (browser: {})", errors.join("; "))
    }
}

/// Opens the page, evaluates a probe and takes the evidence: what the probe returned, the
/// measurements every browser check keeps and the browser's own reports. A probe that does not
/// run is the check's error, not the proxy's fault.
async fn probe(info: &CheckInfo, target: &Target, context: &Context, expected: &str, expression: &str) -> Result<(Value, Value, NetLog), Outcome> {
    let (tab, url) = open(info, target, context, expected).await?;
    let result = match tab.evaluate(expression).await {
        Ok(r) => r,
        Err(e) => {
            tab.close().await;
            return Err(info.outcome(Grade::Error, expected, format!("the page's probe did not run: {e}"), Value::Null));
        }
    };
    let (measurements, net) = evidence(tab, &url, &result).await;
    Ok((result, measurements, net))
}

/// The evidence every browser check keeps: the page, the browser, what the probe returned, the
/// page's timeline and the browser's own reports.
async fn evidence(tab: Tab, url: &str, result: &Value) -> (Value, NetLog) {
    let timeline = tab.records().await;
    // What Chromium negotiated for the page (`h2`, `http/1.1`): over TLS it takes h2 where the
    // proxy offers it, whatever transport the run is labelled with.
    let protocol = tab.evaluate("performance.getEntriesByType('navigation')[0]?.nextHopProtocol ?? null").await.unwrap_or(Value::Null);
    let net = tab.net_log();
    tab.close().await;
    (json!({"page": url, "protocol": protocol, "result": result, "timeline": timeline, "net": net}), net)
}

pub async fn sse(target: &Target, context: &Context) -> Outcome {
    let info = &BROWSER_SSE;
    let routes = sse_routes(target.profile);
    let expected = format!(
        "an EventSource on each of {} opens and gets its ticks within {} s, each within {LAG_BUDGET_MS:.0} ms of its emission",
        routes.iter().map(|r| r.split('?').next().unwrap_or(r)).collect::<Vec<_>>().join(", "),
        SSE_WINDOW.as_secs_f64()
    );
    let call = format!("probeSse({}, {})", json!(routes), SSE_WINDOW.as_millis());
    let (result, measurements, net) = match probe(info, target, context, &expected, &call).await {
        Ok(taken) => taken,
        Err(outcome) => return outcome,
    };
    let mut failed = Vec::new();
    let mut late = Vec::new();
    for r in result.as_array().into_iter().flatten() {
        let route = r["route"].as_str().unwrap_or("?").split('?').next().unwrap_or("?");
        let said = browser_said(&net.errors_for(route));
        let errors = r["errors"].as_array().map(|e| e.len()).unwrap_or(0);
        if r["ticks"].as_u64().unwrap_or(0) == 0 {
            let what = if r["events"].as_u64().unwrap_or(0) > 0 {
                "its first frame but no tick"
            } else if r["opened"].as_bool() == Some(true) {
                "no event (the stream opened)"
            } else {
                "no event (the stream never opened)"
            };
            let errors = if errors > 0 { format!(", {errors} error events") } else { String::new() };
            failed.push(format!("{route}: {what} in {} s{errors}{said}", SSE_WINDOW.as_secs_f64()));
        } else if let Some(lag) = r["max_lag_ms"].as_f64().filter(|l| *l > LAG_BUDGET_MS) {
            late.push(format!("{route}: ticks up to {lag:.0} ms late{said}"));
        }
    }
    if !failed.is_empty() {
        failed.extend(late);
        return info.outcome(Grade::Fail, expected, failed.join("; "), measurements);
    }
    if !late.is_empty() {
        return info.outcome(Grade::Warn, expected, late.join("; "), measurements);
    }
    let worst = result.as_array().into_iter().flatten().filter_map(|r| r["max_lag_ms"].as_f64()).fold(0.0, f64::max);
    info.outcome(Grade::Pass, expected, format!("every EventSource got its ticks, worst lag {worst:.0} ms"), measurements)
}

pub async fn ws(target: &Target, context: &Context) -> Outcome {
    let info = &BROWSER_WS;
    if target.profile == Profile::Dorkos {
        return info.skip("DorkOS has no WebSocket routes");
    }
    let sockets = json!([
        {"route": "/api/event/ws?mock_echo=1", "terminal": false},
        {"route": "/api/global/event/ws?mock_echo=1", "terminal": false},
        {"route": "/api/terminal/ws", "terminal": true},
    ]);
    let expected = format!(
        "new WebSocket() on /api/event/ws, /api/global/event/ws and /api/terminal/ws opens within {} s; a text and a binary frame come back intact; the terminal answers attach and write (binary 0x01+JSON frames)",
        WS_TIMEOUT.as_secs()
    );
    let call = format!("probeWs({sockets}, {})", WS_TIMEOUT.as_millis());
    let (result, measurements, net) = match probe(info, target, context, &expected, &call).await {
        Ok(taken) => taken,
        Err(outcome) => return outcome,
    };
    let mut problems = Vec::new();
    for r in result.as_array().into_iter().flatten() {
        let route = r["route"].as_str().unwrap_or("?").split('?').next().unwrap_or("?");
        let terminal = route.ends_with("/terminal/ws");
        let ok = if terminal {
            r["snapshot"].as_bool() == Some(true) && r["output"].as_bool() == Some(true)
        } else {
            r["echoed_text"].as_bool() == Some(true) && r["echoed_binary"].as_bool() == Some(true)
        };
        if ok {
            continue;
        }
        let status = net.handshakes.iter().find(|(_, u, _)| u.contains(route)).map(|(_, _, s)| *s);
        let close = match r["close_code"].as_i64() {
            Some(code) => format!("closed with code {code}{}", match r["close_reason"].as_str() { Some(reason) if !reason.is_empty() => format!(" \"{reason}\""), _ => String::new() }),
            None => format!("still open after {} s", WS_TIMEOUT.as_secs()),
        };
        let what = if r["opened"].as_bool() != Some(true) {
            format!("never opened{}", status.map(|s| format!(" (handshake answered {s})")).unwrap_or_default())
        } else if terminal {
            format!("opened, but no snapshot and output for attach and write (first frame {})", r["first"])
        } else {
            let missing: Vec<&str> = [("text", r["echoed_text"].as_bool()), ("binary", r["echoed_binary"].as_bool())]
                .into_iter()
                .filter(|(_, b)| *b != Some(true))
                .map(|(k, _)| k)
                .collect();
            format!("opened, but the {} frame did not come back", missing.join(" and "))
        };
        problems.push(format!("{route}: {what}, {close}{}", browser_said(&net.errors_for(route))));
    }
    info.pass_unless(&problems, expected, "every socket opened and carried its frames", measurements)
}

/// The upload's bytes as the page makes them: byte i is i mod 251.
fn upload_sha256(size: u64) -> String {
    let pattern: Vec<u8> = (0..251u32).map(|i| i as u8).collect();
    let mut hasher = Sha256::new();
    let mut left = size as usize;
    while left > 0 {
        let n = left.min(pattern.len());
        hasher.update(&pattern[..n]);
        left -= n;
    }
    hex::encode(hasher.finalize())
}

pub async fn upload(target: &Target, context: &Context) -> Outcome {
    let info = &BROWSER_UPLOAD;
    let (size, _) = super::bodies::large_sizes(target.profile);
    let route = "/api/fs/upload?path=browser%2Fupload.bin";
    let expected = format!("fetch POST of {size} bytes (application/octet-stream) to /api/fs/upload answers 2xx, and the backend received every byte (length and SHA-256 match)");
    let call = format!("probeUpload({}, {size}, {})", json!(route), UPLOAD_TIMEOUT.as_millis());
    let (result, measurements, net) = match probe(info, target, context, &expected, &call).await {
        Ok(taken) => taken,
        Err(outcome) => return outcome,
    };
    let said = browser_said(&net.errors_for("/api/fs/upload"));
    let status = result["status"].as_u64();
    let problem = match (status, result["error"].as_str()) {
        (_, Some(error)) => Some(format!("fetch failed: {error}{said}")),
        (Some(s), _) if !(200..300).contains(&s) => {
            let text = result["status_text"].as_str().unwrap_or("");
            let body = match &result["report"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Some(format!("answered {s} {text}: {}{said}", body.trim().chars().take(200).collect::<String>()))
        }
        (Some(_), None) => {
            let bytes = result["report"]["bytes"].as_u64();
            let sha = result["report"]["sha256"].as_str();
            if bytes != Some(size) || sha != Some(upload_sha256(size).as_str()) {
                Some(format!("the backend received {} bytes (sha256 {}), not the {size} sent", bytes.map_or("?".into(), |b| b.to_string()), sha.unwrap_or("?")))
            } else {
                None
            }
        }
        (None, None) => Some(format!("no answer{said}")),
    };
    let ms = result["ms"].as_f64().unwrap_or(0.0);
    match problem {
        Some(p) => info.outcome(Grade::Fail, expected, p, measurements),
        None => info.outcome(Grade::Pass, expected, format!("{size} bytes received intact in {ms:.0} ms"), measurements),
    }
}

/// The durable stream `browser.reconnect` opens: a few ticks, then silence until the backend
/// ends it ([`RESUME_HOLD`]), with `retry:` asking the browser to come back at once.
const RESUME_ROUTE: &str = "/api/sessions/browser-resume/events";
/// Ticks per connection, 100 ms apart.
const RESUME_TICKS: u64 = 3;
/// How long the backend keeps a connection open after its last tick (a proxy with a shorter
/// idle timeout cuts it first).
const RESUME_HOLD: Duration = Duration::from_millis(2000);
/// The `retry:` the stream asks for.
const RESUME_RETRY: Duration = Duration::from_millis(250);
/// How long the EventSource is watched: room for three connections.
const RESUME_WINDOW: Duration = Duration::from_millis(6500);
/// A connection that ended this much sooner than the backend's hold was cut by the proxy.
const CUT_MARGIN: Duration = Duration::from_millis(500);

pub async fn reconnect(target: &Target, context: &Context) -> Outcome {
    let info = &BROWSER_RECONNECT;
    if target.profile != Profile::Dorkos {
        return info.skip("only DorkOS's durable streams carry event ids to resume from (OpenChamber's streams have none)");
    }
    let route = format!(
        "{RESUME_ROUTE}?ticks={RESUME_TICKS}&interval_ms=100&hold_ms={}&retry_ms={}",
        RESUME_HOLD.as_millis(),
        RESUME_RETRY.as_millis()
    );
    let expected = format!(
        "an EventSource on {RESUME_ROUTE} (the backend ends each connection {} s after its last tick, or the proxy cuts it sooner) reconnects at least once within {} s, and every reconnect resumes right after the Last-Event-ID it sent: ticks 0, 1, 2, ... each once",
        RESUME_HOLD.as_secs_f64(),
        RESUME_WINDOW.as_secs_f64()
    );
    let call = format!("probeReconnect({}, {})", json!(route), RESUME_WINDOW.as_millis());
    let (result, measurements, net) = match probe(info, target, context, &expected, &call).await {
        Ok(taken) => taken,
        Err(outcome) => return outcome,
    };
    let said = browser_said(&net.errors_for(RESUME_ROUTE));
    let connections = result["connections"].as_array().cloned().unwrap_or_default();
    let seqs: Vec<u64> = result["seqs"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
    let state = result["final_state"].as_str().unwrap_or("?");
    if seqs.is_empty() {
        let what = if connections.is_empty() { "the stream never opened" } else { "the stream opened but no tick came" };
        return info.outcome(Grade::Fail, expected, format!("{what} (EventSource {state} at the end){said}"), measurements);
    }
    // Each connection after the first began where the one before it left off, or did not.
    let mut problems: Vec<(String, usize)> = Vec::new();
    for pair in connections.windows(2) {
        let (Some(last), Some(first)) = (pair[0]["last_seq"].as_u64(), pair[1]["first_seq"].as_u64()) else { continue };
        let problem = if first <= last {
            format!("after tick {last} the reconnected stream began again at tick {first}: {} events shown twice (the backend did not get Last-Event-ID: {last})", last - first + 1)
        } else if first > last + 1 {
            format!("after tick {last} the reconnected stream began at tick {first}: {} events lost", first - last - 1)
        } else {
            continue;
        };
        // The same restart on every reconnect is said once, with how often.
        match problems.iter_mut().find(|(p, _)| *p == problem) {
            Some((_, n)) => *n += 1,
            None => problems.push((problem, 1)),
        }
    }
    let mut problems: Vec<String> = problems.into_iter().map(|(p, n)| if n > 1 { format!("{p} (on {n} reconnects)") } else { p }).collect();
    if connections.len() < 2 {
        problems.push(format!(
            "the stream ended after tick {} and EventSource did not come back within {} s (it is {state}: a reconnect answered with an error status or another type is not retried){said}",
            seqs.last().unwrap_or(&0),
            RESUME_WINDOW.as_secs_f64()
        ));
    }
    // Who ended each connection: the backend after its hold, or the proxy sooner. A stream
    // whose events all came with its end (held back by the proxy) shows no silence to judge.
    let cuts: Vec<u64> = connections
        .iter()
        .filter_map(|c| Some((c["ended_ms"].as_f64()? - c["last_event_ms"].as_f64()?) as u64))
        .filter(|silence| *silence >= 100 && *silence + (CUT_MARGIN.as_millis() as u64) < RESUME_HOLD.as_millis() as u64)
        .collect();
    let cut = if cuts.is_empty() {
        "the backend ended each connection".to_string()
    } else {
        format!("the proxy cut {} idle connection(s) after {} ms of silence, before the backend's {} ms{said}", cuts.len(), cuts.iter().max().unwrap_or(&0), RESUME_HOLD.as_millis())
    };
    if !problems.is_empty() {
        problems.push(cut);
        return info.outcome(Grade::Fail, expected, problems.join("; "), measurements);
    }
    info.outcome(
        Grade::Pass,
        expected,
        format!("EventSource came back {} time(s) and resumed after its Last-Event-ID each time: ticks 0-{} each once; {cut}", connections.len() - 1, seqs.last().unwrap_or(&0)),
        measurements,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upload_hash_follows_the_pages_pattern() {
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(upload_sha256(1000), hex::encode(Sha256::digest(&bytes)));
    }
}
