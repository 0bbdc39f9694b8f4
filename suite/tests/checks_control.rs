//! Every check passes against the mock directly (the control) and through a faithful proxy, in
//! each backend profile; skips only where the catalogue says the check does not apply.

mod support;

use mock_server::Profile;
use serde_json::Value;
use suite::checks::{self, Grade, Outcome};

use support::faulty_proxy::{Balance, Fault, FaultyProxy};
use support::{assert_grade, direct, lb_sticky_through, mock, run_auth_origin, via};

/// What a correct path grades: pass, except where the check does not apply.
fn control_grade(profile: Profile, id: &str) -> Grade {
    let no_websocket = profile == Profile::Dorkos
        && (id.starts_with("ws.") || id == "compress.single" || id == "auth.origin");
    // The control paths are plain HTTP/1.1: HTTP/2-only checks skip there, as do h2.websocket
    // (the h2 transport) and tls.redirect (a plain listener that redirects).
    let not_h2 = !checks::http2::applies(id, suite::tls::Transport::H1);
    if id == "lb.sticky" || id == "h2.websocket" || id == "tls.redirect" || no_websocket || not_h2 {
        Grade::Skip
    } else {
        Grade::Pass
    }
}

/// Runs the whole catalogue on a correct path and checks every grade.
async fn control(profile: Profile, through_proxy: bool) -> Vec<Outcome> {
    let m = mock(profile, "mock-a").await;
    let proxy;
    let target = if through_proxy {
        proxy = FaultyProxy::start(Fault::None, vec![m.addr()]).await;
        via(&proxy, &[&m], profile)
    } else {
        direct(&m, profile)
    };
    let mut outcomes = checks::run_all(&target).await;
    outcomes.push(run_auth_origin(&target, &[&m]).await);
    // Every check but the browser tier's, which needs a browser (tests/browser.rs).
    assert_eq!(outcomes.len(), checks::catalogue().iter().filter(|c| !c.browser).count());
    let context = format!("{profile} {}", target.label);
    for o in &outcomes {
        assert_grade(o, control_grade(profile, &o.id), &context);
    }
    outcomes
}

fn outcome<'a>(outcomes: &'a [Outcome], id: &str) -> &'a Outcome {
    outcomes
        .iter()
        .find(|o| o.id == id)
        .expect("outcome present")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_openchamber_passes_with_evidence() {
    let outcomes = control(Profile::Openchamber, false).await;

    let sse = &outcome(&outcomes, "sse.stream").measurements;
    let paths = sse["paths"].as_array().expect("paths");
    assert_eq!(paths.len(), 5, "every SSE route of the profile");
    for p in paths {
        let ticks = p["ticks"].as_array().expect("ticks");
        assert_eq!(ticks.len(), 20);
        for key in ["seq", "emitted_at_us", "arrived_at_us", "lag_ms"] {
            assert!(ticks[0].get(key).is_some(), "tick has {key}");
        }
        assert_eq!(p["lag_us"].as_array().map(Vec::len), Some(20));
    }

    let ws = &outcome(&outcomes, "ws.upgrade").measurements;
    assert_eq!(ws["echo_rtt_us"].as_array().map(Vec::len), Some(20));

    let body = &outcome(&outcomes, "body.large").measurements;
    for u in body["uploads"].as_array().expect("uploads") {
        assert_eq!(u["bytes_sent"], u["bytes_received"]);
        assert_eq!(u["sha256_sent"], u["sha256_received"]);
        assert!(u["status"]
            .as_u64()
            .is_some_and(|s| (200..300).contains(&s)));
    }

    let headers = &outcome(&outcomes, "headers.forwarded").measurements;
    assert!(headers["request"]["headers"]
        .as_array()
        .is_some_and(|h| !h.is_empty()));
    assert!(headers["upgrade"]["headers"].is_array());
    // The client connects from its own address, not the proxies' 127.0.0.1.
    assert_eq!(headers["client_ip"], "127.0.0.2");
    for report in ["request", "upgrade"] {
        let peer = headers[report]["peer"].as_str().unwrap_or_default();
        assert!(peer.starts_with("127.0.0.2:"), "{report} peer {peer}");
    }

    for o in &outcomes {
        assert!(
            o.measurements != Value::Null || o.grade == Grade::Skip,
            "{} has measurements",
            o.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_bare_passes() {
    control(Profile::Bare, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_dorkos_passes_or_skips() {
    let outcomes = control(Profile::Dorkos, false).await;
    let sse = &outcome(&outcomes, "sse.stream").measurements;
    assert_eq!(
        sse["paths"].as_array().map(Vec::len),
        Some(3),
        "the DorkOS SSE routes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faithful_proxy_openchamber_passes() {
    let outcomes = control(Profile::Openchamber, true).await;
    // Through the proxy the backend's peer is the proxy (127.0.0.1), X-Forwarded-For ends with
    // the client's own 127.0.0.2: the check can tell the two apart.
    let headers = &outcome(&outcomes, "headers.forwarded").measurements;
    let report = &headers["request"];
    let peer = report["peer"].as_str().unwrap_or_default();
    assert!(peer.starts_with("127.0.0.1:"), "proxy's peer {peer}");
    let xff: Vec<&str> = report["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h[0] == "x-forwarded-for")
        .filter_map(|h| h[1].as_str())
        .collect();
    assert_eq!(
        xff.last().map(|v| v.rsplit(',').next().unwrap_or(v).trim()),
        Some("127.0.0.2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faithful_proxy_bare_passes() {
    control(Profile::Bare, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faithful_proxy_dorkos_passes_or_skips() {
    control(Profile::Dorkos, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_balancing_passes_lb_sticky() {
    let outcome = lb_sticky_through(Balance::ClientIp).await;
    assert_grade(&outcome, Grade::Pass, "ip-sticky balancing");
    // Several clients, from different /24s, on more than one instance.
    let m = &outcome.measurements;
    let clients = m["clients"].as_array().expect("clients");
    assert!(clients.len() >= 3, "{clients:?}");
    let subnets: std::collections::BTreeSet<&str> = clients
        .iter()
        .filter_map(|c| c["client"].as_str())
        .filter_map(|ip| ip.rsplit_once('.').map(|(net, _)| net))
        .collect();
    assert_eq!(subnets.len(), clients.len(), "one client per /24");
    assert!(m["instances_served"]
        .as_array()
        .is_some_and(|s| s.len() > 1));
}

#[test]
fn catalogue_is_complete_and_ordered() {
    let ids: Vec<&str> = checks::catalogue().iter().map(|c| c.id).collect();
    assert_eq!(
        ids,
        [
            "ws.upgrade",
            "ws.terminal",
            "ws.idle",
            "sse.stream",
            "sse.headers",
            "sse.idle",
            "http.slow",
            "body.large",
            "body.streaming",
            "compress.single",
            "compress.sse",
            "headers.forwarded",
            "auth.origin",
            "lb.sticky",
            "h2.headers",
            "h2.websocket",
            "tls.redirect",
            "browser.sse",
            "browser.ws",
            "browser.upload",
            "browser.reconnect"
        ]
    );
    for c in checks::catalogue() {
        assert!(
            !c.requirement.is_empty() && !c.sign.is_empty() && !c.fix.is_empty(),
            "{} is documented",
            c.id
        );
        assert_eq!(checks::info(c.id).map(|i| i.id), Some(c.id));
        assert_eq!(
            c.long,
            ["ws.idle", "sse.idle", "http.slow"].contains(&c.id),
            "{} long flag",
            c.id
        );
    }
    assert!(checks::info("no.such").is_none());
}

/// Without a browser a browser-tier check is a skip saying how to run it, never a pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_check_without_a_browser_is_a_skip_naming_the_flag() {
    let m = mock(Profile::Openchamber, "mock-a").await;
    let outcome = checks::run("browser.sse", &direct(&m, Profile::Openchamber)).await;
    assert_eq!(outcome.grade, Grade::Skip);
    assert!(outcome.actual.contains("--browser"), "{}", outcome.actual);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_check_is_a_skip_with_reason() {
    let m = mock(Profile::Openchamber, "mock-a").await;
    let outcome = checks::run("no.such", &direct(&m, Profile::Openchamber)).await;
    assert_eq!(outcome.grade, Grade::Skip);
    assert!(outcome.actual.contains("unknown"));
}

/// `h2.headers` through a faithful HTTP/2 proxy: every response's header block read from the
/// frames, none connection-specific (the backend's Transfer-Encoding on the event stream is
/// dropped, as RFC 9113 asks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_headers_pass_through_a_faithful_http2_proxy() {
    use support::faulty_h2::{FaultyH2Proxy, H2Fault};
    let m = mock(Profile::Openchamber, "mock-a").await;
    let proxy = FaultyH2Proxy::start(H2Fault::None, m.addr(), support::HOST).await;
    let target = support::via_h2(&proxy, &m, Profile::Openchamber);
    let o = checks::run("h2.headers", &target).await;
    assert_grade(&o, Grade::Pass, "faithful HTTP/2 proxy");
    assert_eq!(o.measurements["alpn"], "h2");
    let streams = o.measurements["streams"].as_array().expect("streams");
    assert_eq!(streams.len(), 3);
    for s in streams {
        let blocks = s["header_blocks"].as_array().expect("header blocks");
        assert_eq!(blocks.last().and_then(|b| b[0][0].as_str()), Some(":status"), "{s}");
    }
}
