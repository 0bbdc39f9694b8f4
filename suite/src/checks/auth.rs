//! `auth.origin`: with a UI password set, OpenChamber accepts a WebSocket upgrade only when its
//! `Origin` equals the public origin it rebuilds from `X-Forwarded-Proto`/`X-Forwarded-Host` or
//! `Host`. A proxy that rewrites `Host` without forwarding the public one breaks every WebSocket
//! once a password is set; this check upgrades as the browser does and sees whether the backend
//! accepted. A proxy that overwrites `Origin` (the forums' answer to that 403) makes the backend
//! accept every site: the same upgrade with a foreign Origin must still be refused.

use futures::future::join_all;
use mock_server::Profile;
use serde_json::json;
use tokio::time::Instant;

use super::client::{ws_close, ws_connect, EXCHANGE_TIMEOUT};
use super::websocket::{first_frame, grade_probes, open, Probe, EVENT_ROUTES, TERMINAL_ROUTE};
use super::{CheckInfo, Grade, Outcome, Target};

pub const AUTH_ORIGIN: CheckInfo = CheckInfo {
    id: "auth.origin",
    requirement: "OpenChamber with a UI password checks the Origin of WebSocket upgrades against the public origin rebuilt from the forwarded headers (forward Host, X-Forwarded-Host, X-Forwarded-Proto)",
    sign: "Page loads, but sending messages fails (WebSocket upgrades refused with 403 \"Invalid origin\" once a UI password is set)",
    fix: "Forward the public Host (proxy_set_header Host $host; X-Forwarded-Host $host; X-Forwarded-Proto $scheme) on the WebSocket routes too — in nginx a proxy_set_header inside a location replaces every inherited one",
    long: false,
    bulky: false,
    needs_ui_password: true,
    browser: false,
};

/// An Origin no site of the run has: the backend must refuse it, or it is not checking origins.
const FOREIGN_ORIGIN: &str = "http://foreign.invalid";

/// What a user would see of a proxy that "fixes" the 403 by overwriting Origin: nothing, until
/// another site opens their terminal.
pub const ORIGIN_OVERWRITE_SIGN: &str = "The 403 is gone, but any web page can now open your terminal WebSocket: the proxy replaces the browser's Origin, so the backend's cross-site check passes for every site";
pub const ORIGIN_OVERWRITE_FIX: &str = "Never set Origin in the proxy (remove proxy_set_header Origin ...); forward Host, X-Forwarded-Host and X-Forwarded-Proto instead, so the backend compares the browser's own Origin with the public origin";

pub async fn origin(target: &Target) -> Outcome {
    let info = &AUTH_ORIGIN;
    if target.profile == Profile::Dorkos {
        return info.skip("the DorkOS backend has no UI password and no WebSocket routes");
    }
    let Some(password) = target.ui_password.as_deref() else {
        return info.skip("the backends are not in UI-password mode for this run");
    };
    // The Origin a browser sends: https:// behind TLS, which the backend compares with the
    // X-Forwarded-Proto the proxy sets.
    let origin = format!("{}://{}", target.transport.scheme(), target.host);
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
    // A foreign Origin with the same credentials must be refused on every route: a proxy that
    // overwrites Origin (a common answer to the 403) makes the backend accept any site.
    let foreign_headers = [("origin", FOREIGN_ORIGIN.to_string()), headers[1].clone()];
    let (foreign_headers, query) = (&foreign_headers, &query);
    let foreign = join_all(routes.iter().map(|route| async move {
        let path = format!("{route}?{query}");
        match ws_connect(target, &path, foreign_headers).await {
            Ok((ws, up)) => {
                ws_close(ws).await;
                (route.to_string(), Some(up.status), None)
            }
            Err(refused) => (route.to_string(), refused.status, Some(refused.to_string())),
        }
    }))
    .await;
    let accepted: Vec<&str> = foreign
        .iter()
        .filter(|(_, status, _)| *status == Some(101))
        .map(|(route, _, _)| route.as_str())
        .collect();
    let unanswered: Vec<String> = foreign
        .iter()
        .filter(|(_, status, _)| status.is_none())
        .map(|(route, _, detail)| format!("{route}: {}", detail.as_deref().unwrap_or("")))
        .collect();
    let control = if !unanswered.is_empty() {
        format!(
            "note: the foreign-Origin control got no HTTP answer on {}",
            unanswered.join("; ")
        )
    } else {
        let statuses: Vec<String> = foreign
            .iter()
            .filter_map(|(_, s, _)| s.map(|s| s.to_string()))
            .collect();
        format!(
            "the foreign Origin {FOREIGN_ORIGIN} was refused on every route ({})",
            statuses.join(", ")
        )
    };
    let expected = format!(
        "with the browser's Origin {origin} and the UI password (oc_url_token and bearer), the upgrade on every WebSocket route is accepted (101 and the first frame); with the foreign Origin {FOREIGN_ORIGIN} and the same credentials it is refused (403)"
    );
    let pass = format!(
        "101 with Origin {origin} on all {} routes; {control}",
        probes.len()
    );
    let m = json!({
        "origin": origin,
        "foreign_origin": FOREIGN_ORIGIN,
        "foreign_origin_status": foreign.iter().map(|(route, status, detail)| json!({"path": route, "status": status, "detail": detail})).collect::<Vec<_>>(),
        "control": control,
    });
    let mut outcome = grade_probes(info, expected, pass, probes, m);
    if !accepted.is_empty() {
        let overwrite = format!(
            "an upgrade with the foreign Origin {FOREIGN_ORIGIN} was accepted (101) on {}: the backend's cross-site check no longer sees the browser's Origin (the proxy replaces it)",
            accepted.join(", ")
        );
        outcome.actual = if outcome.grade == Grade::Pass {
            overwrite
        } else {
            format!("{overwrite}; {}", outcome.actual)
        };
        outcome.grade = Grade::Fail;
        outcome.sign = ORIGIN_OVERWRITE_SIGN.to_string();
        outcome.fix = ORIGIN_OVERWRITE_FIX.to_string();
    }
    outcome
}
