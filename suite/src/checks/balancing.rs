//! `lb.sticky`: with several backends behind one proxy (the WebSocket how-to's `ip_hash`
//! upstream), every request and upgrade of one client lands on one instance, seen through the
//! mock's `X-Mock-Instance` header and its request reports.

use std::collections::BTreeMap;

use mock_server::Profile;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::client::{
    body_bytes, get, header, http_client, text_json, within, ws_close, ws_connect, ws_next,
    EXCHANGE_TIMEOUT,
};
use super::{CheckInfo, Grade, Outcome, Target};

pub const LB_STICKY: CheckInfo = CheckInfo {
    id: "lb.sticky",
    requirement: "If you run multiple backend instances, use ip_hash so a client always connects to the same upstream server (sticky sessions)",
    sign: "A client's requests and WebSockets land on different backends: sessions and live state seem to vanish between requests",
    fix: "upstream backend { ip_hash; server 127.0.0.1:3000; server 127.0.0.1:3001; ... }",
    long: false,
    bulky: false,
    needs_ui_password: false,
};

/// Plain requests and upgrades from one client, each on its own connection: with two backends
/// a round-robin proxy cannot put twelve of them on one instance.
const REQUESTS: usize = 12;
const UPGRADES: usize = 4;

/// Where one request landed.
struct Landing {
    what: String,
    instance: Result<String, String>,
}

async fn land_http(target: &Target) -> Result<String, String> {
    let client = http_client();
    let response = within(
        EXCHANGE_TIMEOUT,
        "request",
        get(&client, target, "/api/mock/request").send(),
    )
    .await?;
    let from_header = header(response.headers(), "x-mock-instance");
    let status = response.status();
    let body = body_bytes(response, EXCHANGE_TIMEOUT).await?;
    let from_report = serde_json::from_slice::<Value>(&body).ok().and_then(|r| {
        r.get("instance")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    if !status.is_success() {
        return Err(format!("status {status}"));
    }
    from_report
        .or(from_header)
        .ok_or_else(|| "no instance in the report or headers".to_string())
}

async fn land_ws(target: &Target, path: &str) -> Result<String, String> {
    let (mut ws, up) = ws_connect(target, path, &[])
        .await
        .map_err(|r| r.to_string())?;
    let from_header = header(&up.headers, "x-mock-instance");
    let from_report = if path.starts_with("/api/mock/request/ws") {
        ws_next(&mut ws, Instant::now() + EXCHANGE_TIMEOUT)
            .await
            .ok()
            .and_then(|m| text_json(&m))
            .and_then(|r| {
                r.get("instance")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
    } else {
        None
    };
    ws_close(ws).await;
    from_report
        .or(from_header)
        .ok_or_else(|| "no instance in the report or the 101's headers".to_string())
}

pub async fn sticky(target: &Target) -> Outcome {
    let info = &LB_STICKY;
    if target.backends.len() < 2 {
        return info.skip("a single backend behind this config: nothing to balance");
    }
    let mut landings = Vec::new();
    let upgrades = if target.profile == Profile::Dorkos {
        0
    } else {
        UPGRADES
    };
    for i in 0..REQUESTS.max(upgrades) {
        if i < REQUESTS {
            landings.push(Landing {
                what: format!("request {}", i + 1),
                instance: land_http(target).await,
            });
        }
        if i < upgrades {
            let path = if i % 2 == 0 {
                "/api/event/ws?mock_silent=1"
            } else {
                "/api/mock/request/ws"
            };
            landings.push(Landing {
                what: format!("upgrade {path}"),
                instance: land_ws(target, path).await,
            });
        }
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for l in &landings {
        if let Ok(i) = &l.instance {
            *counts.entry(i.clone()).or_default() += 1;
        }
    }
    let http_ok = landings
        .iter()
        .filter(|l| l.what.starts_with("request") && l.instance.is_ok())
        .count();
    let failed: Vec<String> = landings
        .iter()
        .filter_map(|l| {
            l.instance
                .as_ref()
                .err()
                .map(|e| format!("{}: {e}", l.what))
        })
        .collect();
    let expected = format!(
        "{REQUESTS} requests and {upgrades} upgrades from one client, each on its own connection, all land on one of the {} backends",
        target.backends.len()
    );
    let m = json!({
        "backends": target.backends,
        "counts": counts,
        "landings": landings.iter().map(|l| json!({"what": l.what, "instance": l.instance.as_ref().ok(), "error": l.instance.as_ref().err()})).collect::<Vec<_>>(),
    });
    let spread = counts
        .iter()
        .map(|(i, n)| format!("{i} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut actual = if counts.len() > 1 {
        format!("spread over {} instances: {spread}", counts.len())
    } else {
        format!("all on {spread}")
    };
    if !failed.is_empty() {
        actual.push_str(&format!("; not observed: {}", failed.join("; ")));
    }
    let grade = if counts.len() > 1 || http_ok < REQUESTS / 2 {
        Grade::Fail
    } else {
        Grade::Pass
    };
    info.outcome(grade, expected, actual, m)
}
