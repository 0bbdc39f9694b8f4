//! Long read timeouts: `http.slow` (a plain `/api` response that takes the idle period), and the
//! idle budget shared with `ws.idle` (in `websocket`) and `sse.idle` (in `sse`).
//!
//! The idle period defaults to 75 s: longer than the 60 s read timeout of nginx and Traefik and
//! the 50 s of stock HAProxy, so a config that forgets its timeouts fails.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::time::Instant;

use super::client::{body_bytes, get, http_client, ms_since, secs, snippet, within};
use super::{CheckInfo, Grade, Outcome, Target};

pub const HTTP_SLOW: CheckInfo = CheckInfo {
    id: "http.slow",
    requirement: "Long-lived read timeouts (DorkOS: \"502 Bad Gateway on long requests\": the upstream timeout is shorter than the response time)",
    sign: "502 Bad Gateway on long requests",
    fix: "Increase both proxy_read_timeout and proxy_send_timeout (e.g. 3600s; Caddy: transport http { read_timeout 3600s write_timeout 3600s })",
    long: true,
    bulky: false,
    needs_ui_password: false,
    browser: false,
};

/// How long a check waits for what should arrive after the idle period: the period plus a
/// margin of 15 s or half the period, whichever is larger, so a loaded machine never turns a
/// survived idle period into a fail, and a dead connection never hangs the run.
pub fn idle_deadline(idle: Duration) -> Duration {
    idle + (idle / 2).max(Duration::from_secs(15))
}

/// Size of the slow response body, small enough to fit any buffer and not be compressed
/// (the client does not offer gzip).
const SLOW_BODY: usize = 2048;

pub async fn slow(target: &Target) -> Outcome {
    let info = &HTTP_SLOW;
    let idle = target.idle;
    let path = format!(
        "/api/mock/slow?delay_ms={}&size={SLOW_BODY}",
        idle.as_millis()
    );
    let expected = format!(
        "GET {path}: 200 with the full {SLOW_BODY}-byte body after {} of silence",
        secs(idle)
    );
    let client = http_client(target);
    let start = Instant::now();
    let limit = idle_deadline(idle);
    let answer = within(limit, "response", get(&client, target, &path).send()).await;
    let headers_ms = ms_since(start);
    let response = match answer {
        Ok(r) => r,
        Err(e) => {
            let actual = format!("no response: {e} (after {headers_ms} ms)");
            let m = json!({"path": path, "idle_ms": idle.as_millis() as u64, "error": e, "after_ms": headers_ms});
            return info.outcome(Grade::Fail, expected, actual, m);
        }
    };
    let status = response.status();
    let body = body_bytes(response, Duration::from_secs(15)).await;
    let total_ms = ms_since(start);
    let mut m = json!({
        "path": path,
        "idle_ms": idle.as_millis() as u64,
        "status": status.as_u16(),
        "headers_after_ms": headers_ms,
        "total_ms": total_ms,
    });
    match body {
        Err(e) => {
            m["error"] = json!(e);
            let actual = format!("{status} after {headers_ms} ms, then the body broke: {e}");
            info.outcome(Grade::Fail, expected, actual, m)
        }
        Ok(body) => {
            m["body_bytes"] = json!(body.len());
            if status == StatusCode::OK && body.len() == SLOW_BODY {
                let actual = format!("200 with {} bytes after {headers_ms} ms", body.len());
                info.outcome(Grade::Pass, expected, actual, m)
            } else {
                let actual = format!(
                    "{status} after {headers_ms} ms, {} body bytes: {:?}",
                    body.len(),
                    snippet(&body, 120)
                );
                info.outcome(Grade::Fail, expected, actual, m)
            }
        }
    }
}
