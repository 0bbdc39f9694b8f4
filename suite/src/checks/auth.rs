//! `auth.origin`: with a UI password set, OpenChamber accepts a WebSocket upgrade only when its
//! `Origin` equals the public origin it rebuilds from `X-Forwarded-Proto`/`X-Forwarded-Host` or
//! `Host`. A proxy that rewrites `Host` without forwarding the public one breaks every WebSocket
//! once a password is set; this check upgrades as the browser does and sees whether the backend
//! accepted.

use futures::future::join_all;
use mock_server::Profile;
use serde_json::json;
use tokio::time::Instant;

use super::client::{ws_close, ws_connect, EXCHANGE_TIMEOUT};
use super::websocket::{first_frame, grade_probes, open, Probe, EVENT_ROUTES, TERMINAL_ROUTE};
use super::{CheckInfo, Outcome, Target};

pub const AUTH_ORIGIN: CheckInfo = CheckInfo {
    id: "auth.origin",
    requirement: "OpenChamber with a UI password checks the Origin of WebSocket upgrades against the public origin rebuilt from the forwarded headers (forward Host, X-Forwarded-Host, X-Forwarded-Proto)",
    sign: "Page loads, but sending messages fails (WebSocket upgrades refused with 403 \"Invalid origin\" once a UI password is set)",
    fix: "Forward the public Host (proxy_set_header Host $host; X-Forwarded-Host $host; X-Forwarded-Proto $scheme) on the WebSocket routes too — in nginx a proxy_set_header inside a location replaces every inherited one",
    long: false,
    bulky: false,
    needs_ui_password: true,
};

/// An Origin no site of the run has: the backend must refuse it, or it is not checking origins.
const FOREIGN_ORIGIN: &str = "http://foreign.invalid";

pub async fn origin(target: &Target) -> Outcome {
    let info = &AUTH_ORIGIN;
    if target.profile == Profile::Dorkos {
        return info.skip("the DorkOS backend has no UI password and no WebSocket routes");
    }
    let Some(password) = target.ui_password.as_deref() else {
        return info.skip("the backends are not in UI-password mode for this run");
    };
    let origin = format!("http://{}", target.host);
    let token: String = url::form_urlencoded::byte_serialize(password.as_bytes()).collect();
    let query = format!("oc_url_token={token}&mock_silent=1");
    let headers = [
        ("origin", origin.clone()),
        ("authorization", format!("Bearer {password}")),
    ];
    let routes: Vec<&str> = EVENT_ROUTES
        .iter()
        .map(|(r, _)| *r)
        .chain([TERMINAL_ROUTE])
        .collect();
    let probes = join_all(routes.iter().map(|route| async {
        let mut probe = Probe::new(route);
        let result = async {
            let mut ws = open(&mut probe, target, &query, &headers).await?;
            first_frame(&mut probe, &mut ws, Instant::now() + EXCHANGE_TIMEOUT).await?;
            ws_close(ws).await;
            Ok(())
        }
        .await;
        probe.end(result)
    }))
    .await;
    // Control: a foreign Origin with the same credentials must be refused by the backend.
    let foreign = [("origin", FOREIGN_ORIGIN.to_string()), headers[1].clone()];
    let foreign_status =
        match ws_connect(target, &format!("{}?{query}", EVENT_ROUTES[0].0), &foreign).await {
            Ok((ws, up)) => {
                ws_close(ws).await;
                Some(up.status)
            }
            Err(refused) => refused.status,
        };
    let control = match foreign_status {
        Some(101) => format!(
            "note: an upgrade with the foreign Origin {FOREIGN_ORIGIN} was accepted too, so the backend did not check origins (auth mode off, or the proxy rewrote Origin)"
        ),
        Some(s) => format!("a foreign Origin was refused ({s}), as it should be"),
        None => "the foreign-Origin control got no HTTP answer".to_string(),
    };
    let expected = format!(
        "with the browser's Origin {origin} and the UI password (oc_url_token and bearer), the upgrade on every WebSocket route is accepted (101 and the first frame)"
    );
    let pass = format!(
        "101 with Origin {origin} on all {} routes; {control}",
        probes.len()
    );
    let m = json!({
        "origin": origin,
        "foreign_origin": FOREIGN_ORIGIN,
        "foreign_origin_status": foreign_status,
        "control": control,
    });
    grade_probes(info, expected, pass, probes, m)
}
