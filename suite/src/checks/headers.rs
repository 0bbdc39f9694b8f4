//! `headers.forwarded`: what the backend sees of the client through the proxy — `Host`,
//! `X-Forwarded-For`, `X-Forwarded-Proto` (required), `X-Real-IP`, `X-Forwarded-Host` (in the
//! guides' examples) — on a plain request and on a WebSocket upgrade, read from the mock's
//! `/api/mock/request` reports.
//!
//! Host names are compared case-insensitively without the port: nginx's `$host`, which the
//! guides use, drops the port the browser sent. A changed port is noted in the evidence (it
//! matters to the backend's origin check, graded by `auth.origin`), not graded here.

use std::net::IpAddr;

use mock_server::Profile;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::client::{
    body_bytes, client_ip, get, http_client, text_json, within, ws_close, ws_connect, ws_next,
    EXCHANGE_TIMEOUT,
};
use super::{CheckInfo, Grade, Outcome, Target};
use crate::tls::Transport;

pub const HEADERS_FORWARDED: CheckInfo = CheckInfo {
    id: "headers.forwarded",
    requirement: "Forward normal proxy headers such as Host, X-Forwarded-For, and X-Forwarded-Proto (the examples also set X-Real-IP and X-Forwarded-Host)",
    sign: "The backend sees the proxy instead of the browser: wrong host, client address or scheme (rate limiting, Secure cookies and the WebSocket origin check go wrong)",
    fix: "proxy_set_header Host $host; proxy_set_header X-Real-IP $remote_addr; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $host;",
    long: false,
    bulky: false,
    needs_ui_password: false,
    browser: false,
};

/// Values a client sends itself, to see whether the proxy passes them on unverified.
const SPOOFED_FOR: &str = "203.0.113.7";
/// The X-Forwarded-Proto a client sends itself: the scheme it did not use.
fn spoofed_proto(target: &Target) -> &'static str {
    if target.transport.is_tls() {
        "http"
    } else {
        "https"
    }
}

/// All values of a header in a mock report (`"headers": [[name, value], ...]`).
pub(crate) fn seen(report: &Value, name: &str) -> Vec<String> {
    report
        .get("headers")
        .and_then(Value::as_array)
        .map(|hs| {
            hs.iter()
                .filter_map(|pair| {
                    let n = pair.get(0)?.as_str()?;
                    let v = pair.get(1)?.as_str()?;
                    n.eq_ignore_ascii_case(name).then(|| v.to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The comma-separated items of every value of a header, in order.
fn items(report: &Value, name: &str) -> Vec<String> {
    seen(report, name)
        .iter()
        .flat_map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// `example.test:8080` → (`example.test`, `Some("8080")`); `[::1]:80` → (`[::1]`, `Some("80")`).
pub(crate) fn split_host(host: &str) -> (String, Option<String>) {
    let host = host.trim().to_ascii_lowercase();
    let (name, port) = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => (
                host[..=end].to_string(),
                host[end + 1..].strip_prefix(':').map(str::to_string),
            ),
            None => (host.clone(), None),
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) if p.chars().all(|c| c.is_ascii_digit()) => {
                (n.to_string(), Some(p.to_string()))
            }
            _ => (host.clone(), None),
        }
    };
    (name, port)
}

/// The report of a plain request.
async fn report_http(target: &Target, spoof: bool) -> Result<Value, String> {
    let client = http_client(target);
    let mut request = get(&client, target, "/api/mock/request");
    if spoof {
        request = request
            .header("x-forwarded-for", SPOOFED_FOR)
            .header("x-forwarded-proto", spoofed_proto(target));
    }
    let response = within(EXCHANGE_TIMEOUT, "request", request.send()).await?;
    let status = response.status();
    let version = format!("{:?}", response.version());
    let body = body_bytes(response, EXCHANGE_TIMEOUT).await?;
    if !status.is_success() {
        return Err(format!("status {status}"));
    }
    let mut report: Value =
        serde_json::from_slice(&body).map_err(|e| format!("report is not JSON: {e}"))?;
    // The protocol the client spoke with the proxy (ALPN's choice over TLS).
    report["client_http_version"] = json!(version);
    Ok(report)
}

/// The report of a WebSocket upgrade (the first text frame on `/api/mock/request/ws`).
async fn report_ws(target: &Target) -> Result<Value, String> {
    let (mut ws, _) = ws_connect(target, "/api/mock/request/ws", &[])
        .await
        .map_err(|r| r.to_string())?;
    let msg = ws_next(&mut ws, Instant::now() + EXCHANGE_TIMEOUT).await?;
    ws_close(ws).await;
    text_json(&msg).ok_or_else(|| "the first frame is not a JSON report".to_string())
}

#[derive(Default)]
struct Findings {
    problems: Vec<String>,
    warnings: Vec<String>,
    notes: Vec<String>,
}

/// Grades what the backend saw of one request from this client.
fn judge(report: &Value, target: &Target, client: IpAddr, label: &str, f: &mut Findings) {
    let hosts = seen(report, "host");
    let (want_name, want_port) = split_host(&target.host);
    match hosts.first() {
        None => f.problems.push(format!("{label}: no Host")),
        Some(h) => {
            let (name, port) = split_host(h);
            if name != want_name {
                f.problems.push(format!(
                    "{label}: Host {h:?}, the client sent {:?}",
                    target.host
                ));
            } else if port != want_port {
                f.notes.push(format!(
                    "{label}: Host {h:?} keeps the name but not the port of the client's {:?}",
                    target.host
                ));
            }
        }
    }
    if target.direct {
        let peer = report
            .get("peer")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !peer.starts_with(&client.to_string()) && !peer.starts_with(&format!("[{client}]")) {
            f.problems
                .push(format!("{label}: peer {peer:?} is not the client {client}"));
        }
        return;
    }
    let xff = items(report, "x-forwarded-for");
    match xff.last() {
        None => f.problems.push(format!("{label}: no X-Forwarded-For")),
        Some(last) if last.parse::<IpAddr>().ok() != Some(client) => f.problems.push(format!(
            "{label}: X-Forwarded-For {:?} does not end with the client {client}{}",
            xff.join(", "),
            if last.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
                " (another loopback address: likely the proxy's own, not the client's)"
            } else {
                ""
            }
        )),
        Some(_) => {}
    }
    match items(report, "x-forwarded-proto").first() {
        None => f.problems.push(format!("{label}: no X-Forwarded-Proto")),
        Some(p) if !p.eq_ignore_ascii_case(target.transport.scheme()) => f.problems.push(format!(
            "{label}: X-Forwarded-Proto {p:?}, the client used {}",
            target.transport.scheme()
        )),
        Some(_) => {}
    }
    // X-Real-IP is a SHOULD (missing: warn), but one that names someone else (the proxy's own
    // address, a client-sent value) misleads the backend as much as a wrong X-Forwarded-For.
    match seen(report, "x-real-ip").as_slice() {
        [] => f.warnings.push(format!("{label}: no X-Real-IP")),
        [ip] if ip.trim().parse::<IpAddr>().ok() == Some(client) => {}
        values => f.problems.push(format!(
            "{label}: X-Real-IP {:?} is not the client {client}",
            values.join(", ")
        )),
    }
    match seen(report, "x-forwarded-host").first() {
        None => f.warnings.push(format!("{label}: no X-Forwarded-Host")),
        Some(h) if split_host(h.split(',').next().unwrap_or(h)).0 != want_name => {
            f.warnings.push(format!(
                "{label}: X-Forwarded-Host {h:?}, the client sent Host {:?}",
                target.host
            ))
        }
        Some(_) => {}
    }
}

/// Notes what became of the forwarded headers the client sent itself.
fn judge_spoofed(report: &Value, target: &Target, f: &mut Findings) {
    let spoofed = spoofed_proto(target);
    let xff = items(report, "x-forwarded-for");
    if xff.iter().any(|v| v == SPOOFED_FOR) {
        f.notes.push(format!(
            "a client-sent X-Forwarded-For {SPOOFED_FOR} reaches the backend unverified as {:?} (OpenChamber's rate limiting keys on the first value)",
            xff.join(", ")
        ));
    }
    if items(report, "x-forwarded-proto")
        .first()
        .is_some_and(|p| p.eq_ignore_ascii_case(spoofed))
    {
        f.notes.push(format!(
            "a client-sent X-Forwarded-Proto: {spoofed} reaches the backend unverified (the backend builds its origin and cookies' Secure flag from it)"
        ));
    }
}

pub async fn forwarded(target: &Target) -> Outcome {
    let info = &HEADERS_FORWARDED;
    let client = client_ip(target);
    let with_ws = target.profile != Profile::Dorkos;
    let (plain, spoofed, upgrade) = tokio::join!(
        report_http(target, false),
        report_http(target, true),
        async {
            if with_ws {
                Some(report_ws(target).await)
            } else {
                None
            }
        }
    );
    let expected = if target.direct {
        format!(
            "direct control: Host {:?} as sent, the peer is the client {client}",
            target.host
        )
    } else {
        format!(
            "on a request and a WebSocket upgrade from the client {client} (not the proxy's 127.0.0.1), the backend sees Host {:?} (host name; port noted), X-Forwarded-For ending with exactly {client}, X-Forwarded-Proto {}; X-Real-IP equal to {client} and X-Forwarded-Host present (warn when missing)",
            target.host,
            target.transport.scheme()
        )
    };
    let mut f = Findings::default();
    let mut m = json!({"client_ip": client.to_string(), "client_host": target.host, "direct": target.direct});
    match &plain {
        Ok(r) if target.transport == Transport::H2 && r["client_http_version"] != "HTTP/2.0" => f.problems.push(format!(
            "the client offered h2 by ALPN and the proxy answered over {} (its TLS listener does not speak HTTP/2 as configured)",
            r["client_http_version"].as_str().unwrap_or("?")
        )),
        Ok(r) => judge(r, target, client, "request", &mut f),
        Err(e) => f
            .problems
            .push(format!("GET /api/mock/request failed: {e}")),
    }
    match &upgrade {
        Some(Ok(r)) => judge(r, target, client, "upgrade", &mut f),
        Some(Err(e)) => f
            .notes
            .push(format!("upgrade report unavailable ({e}); see ws.upgrade")),
        None => f
            .notes
            .push("no WebSocket on the DorkOS backend: upgrade not checked".to_string()),
    }
    match &spoofed {
        Ok(r) if !target.direct => judge_spoofed(r, target, &mut f),
        Ok(_) => {}
        Err(e) => f.notes.push(format!(
            "request with client-sent X-Forwarded-* failed: {e}"
        )),
    }
    let as_json = |r: &Result<Value, String>| match r {
        Ok(v) => v.clone(),
        Err(e) => json!({"error": e}),
    };
    m["request"] = as_json(&plain);
    m["request_spoofed"] = as_json(&spoofed);
    m["spoofed_sent"] =
        json!({"x-forwarded-for": SPOOFED_FOR, "x-forwarded-proto": spoofed_proto(target)});
    m["upgrade"] = upgrade.as_ref().map(as_json).unwrap_or(Value::Null);
    m["notes"] = json!(f.notes);
    let grade = if !f.problems.is_empty() {
        Grade::Fail
    } else if !f.warnings.is_empty() {
        Grade::Warn
    } else {
        Grade::Pass
    };
    let mut lines: Vec<String> = f.problems.iter().chain(&f.warnings).cloned().collect();
    if lines.is_empty() {
        lines.push(if target.direct {
            "Host as sent, peer is the client".to_string()
        } else {
            "Host, X-Forwarded-For, X-Forwarded-Proto, X-Real-IP and X-Forwarded-Host as expected"
                .to_string()
        });
    }
    lines.extend(f.notes.iter().map(|n| format!("note: {n}")));
    info.outcome(grade, expected, lines.join("; "), m)
}

#[cfg(test)]
mod tests {
    use super::split_host;

    #[test]
    fn host_names_and_ports() {
        assert_eq!(
            split_host("Example.test:8080"),
            ("example.test".into(), Some("8080".into()))
        );
        assert_eq!(split_host("example.test"), ("example.test".into(), None));
        assert_eq!(split_host("[::1]:80"), ("[::1]".into(), Some("80".into())));
        assert_eq!(split_host("[::1]"), ("[::1]".into(), None));
    }
}
