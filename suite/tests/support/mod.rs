//! Shared by the check tests: spawned mocks, targets pointing at them directly or through the
//! faulty proxy, grade lookups, and the table of faulty-proxy cases that shows every check able
//! to fail ([`FAULT_CASES`], run by `checks_fail.rs`, enumerated by `every_check_can_fail.rs`).
#![allow(dead_code)]

pub mod faulty_h2;
pub mod faulty_proxy;

use std::net::SocketAddr;
use std::time::Duration;

use futures::future::join_all;
use mock_server::{MockConfig, Profile, RunningMock};
use suite::checks::Grade::{Fail, Pass, Skip, Warn};
use suite::checks::{self, Grade, Outcome, Target};
use suite::tls::Transport;

use faulty_h2::{FaultyH2Proxy, H2Fault};
use faulty_proxy::{Balance, Fault, FaultyProxy};

/// The idle period of the tests: long enough that a faithful path never looks idle-cut, short
/// enough to keep the suite fast (the faulty proxy cuts idle connections after 1 s).
pub const IDLE: Duration = Duration::from_secs(3);
/// A browser's Host for the site under test.
pub const HOST: &str = "openchamber.test";
pub const UI_PASSWORD: &str = "s3cret pw";

pub async fn mock(profile: Profile, instance: &str) -> RunningMock {
    let mut config = MockConfig::new(profile);
    config.instance_id = instance.to_string();
    mock_server::spawn(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("spawn the mock")
}

fn target(
    label: &str,
    addr: SocketAddr,
    profile: Profile,
    backends: &[&RunningMock],
    direct: bool,
) -> Target {
    Target {
        label: label.to_string(),
        addr,
        host: HOST.to_string(),
        profile,
        backends: backends
            .iter()
            .map(|m| m.instance_id().to_string())
            .collect(),
        idle: IDLE,
        client_ip: checks::CLIENT_IP,
        direct,
        ui_password: None,
        transport: Transport::H1,
        trust: None,
        tls_listener: None,
    }
}

/// The mock itself, as the control.
pub fn direct(mock: &RunningMock, profile: Profile) -> Target {
    target("direct", mock.addr(), profile, &[mock], true)
}

/// The faulty proxy in front of `mocks`, reached on its plain listener (it has a TLS one too,
/// as a config with both listeners does).
pub fn via(proxy: &FaultyProxy, mocks: &[&RunningMock], profile: Profile) -> Target {
    via_transport(proxy, mocks, profile, Transport::H1)
}

/// The faulty proxy in front of `mocks`, reached over `transport` (TLS ones on its TLS
/// listener, whose certificate covers the site's name).
pub fn via_transport(
    proxy: &FaultyProxy,
    mocks: &[&RunningMock],
    profile: Profile,
    transport: Transport,
) -> Target {
    let addr = if transport.is_tls() {
        proxy.tls_addr()
    } else {
        proxy.addr()
    };
    let mut target = target("faulty-proxy", addr, profile, mocks, false);
    target.transport = transport;
    target.trust = Some(proxy.trust());
    target.tls_listener = Some(proxy.tls_addr());
    target
}

/// The HTTP/2 faulty proxy in front of `mock`, reached as a browser would (TLS, ALPN h2, the
/// site's name resolving to the proxy, the proxy's authority trusted alone).
pub fn via_h2(proxy: &FaultyH2Proxy, mock: &RunningMock, profile: Profile) -> Target {
    let mut t = target("faulty-proxy-h2", proxy.addr(), profile, &[mock], false);
    t.transport = suite::tls::Transport::H2;
    t.trust = Some(proxy.trust());
    t
}

/// Runs `auth.origin` with the mocks in UI-password mode, as the runner does.
pub async fn run_auth_origin(target: &Target, mocks: &[&RunningMock]) -> Outcome {
    for m in mocks {
        m.set_ui_password(Some(UI_PASSWORD.to_string()));
    }
    let mut authed = target.clone();
    authed.ui_password = Some(UI_PASSWORD.to_string());
    let outcome = checks::run("auth.origin", &authed).await;
    for m in mocks {
        m.set_ui_password(None);
    }
    outcome
}

/// Fails the test with the whole evidence when a check's grade is not `want`.
pub fn assert_grade(outcome: &Outcome, want: Grade, context: &str) {
    // Shown with --nocapture: what each check concluded, to read the evidence.
    println!(
        "[{context}] {} {} ({} ms): {}",
        outcome.id, outcome.grade, outcome.elapsed_ms, outcome.actual
    );
    assert_eq!(
        outcome.grade,
        want,
        "{context}: {} graded {}, wanted {want}\nexpected: {}\nactual: {}\nmeasurements: {}",
        outcome.id,
        outcome.grade,
        outcome.expected,
        outcome.actual,
        serde_json::to_string_pretty(&outcome.measurements).unwrap_or_default()
    );
    if matches!(outcome.grade, Grade::Warn | Grade::Fail) {
        assert!(
            !outcome.expected.is_empty()
                && !outcome.actual.is_empty()
                && !outcome.sign.is_empty()
                && !outcome.fix.is_empty(),
            "{context}: {} is {} without full evidence: {outcome:?}",
            outcome.id,
            outcome.grade
        );
    }
    if outcome.grade == Grade::Skip {
        assert!(
            !outcome.actual.is_empty(),
            "{context}: {} skipped without a reason",
            outcome.id
        );
    }
}

/// `lb.sticky` through a faithful proxy spreading two mocks by `balance`.
pub async fn lb_sticky_through(balance: Balance) -> Outcome {
    let (a, b) = (
        mock(Profile::Openchamber, "mock-a").await,
        mock(Profile::Openchamber, "mock-b").await,
    );
    let proxy = FaultyProxy::start_balanced(Fault::None, vec![a.addr(), b.addr()], balance).await;
    checks::run("lb.sticky", &via(&proxy, &[&a, &b], Profile::Openchamber)).await
}

/// One faulty proxy in front of `backends` mocks, and the grades it must cause.
pub struct FaultCase {
    /// The test's name in `checks_fail.rs`.
    pub name: &'static str,
    pub fault: Fault,
    pub balance: Balance,
    pub backends: usize,
    pub profile: Profile,
    pub grades: &'static [(&'static str, Grade)],
    /// Words the Actual of every graded check must contain.
    pub evidence: &'static [&'static str],
    /// Set for a fault of the proxy's HTTP/2 face (`fault` is then unused): the checks run
    /// over TLS with ALPN h2 against [`FaultyH2Proxy`].
    pub h2_fault: Option<H2Fault>,
    /// How the checks reach the proxy (`h1`: its plain listener).
    pub transport: Transport,
}

const fn case(
    name: &'static str,
    fault: Fault,
    profile: Profile,
    grades: &'static [(&'static str, Grade)],
) -> FaultCase {
    FaultCase {
        name,
        fault,
        balance: Balance::ClientIp,
        backends: 1,
        profile,
        grades,
        evidence: &[],
        h2_fault: None,
        transport: Transport::H1,
    }
}

/// A fault of the HTTP/2 face, in front of one OpenChamber mock.
const fn h2_case(
    name: &'static str,
    fault: H2Fault,
    grades: &'static [(&'static str, Grade)],
    evidence: &'static [&'static str],
) -> FaultCase {
    FaultCase {
        h2_fault: Some(fault),
        evidence,
        ..case(name, Fault::None, Profile::Openchamber, grades)
    }
}

/// A faithful proxy over two mocks, spread by `balance`.
const fn balanced(
    name: &'static str,
    balance: Balance,
    grades: &'static [(&'static str, Grade)],
) -> FaultCase {
    FaultCase {
        balance,
        backends: 2,
        ..case(name, Fault::None, Profile::Openchamber, grades)
    }
}

/// Every fault, and what it breaks: each check of the catalogue fails (or warns, where the
/// catalogue says so) in at least one case.
#[rustfmt::skip]
pub const FAULT_CASES: &[FaultCase] = {
    use Profile::{Dorkos, Openchamber};
    const IDLE_CUT: Fault = Fault::CutIdleAfter(Duration::from_secs(1));
    // Ticks come 100 ms apart: flushed every 600 ms they arrive in batches, each up to 600 ms
    // late, inside the 1 s budget.
    const BATCHES: Fault = Fault::BatchSse(Duration::from_millis(600));
    &[
        case("buffered_sse", Fault::BufferSse, Openchamber, &[("sse.stream", Fail)]),
        case("buffered_sse_dorkos", Fault::BufferSse, Dorkos, &[("sse.stream", Fail)]),
        case("batched_sse", BATCHES, Openchamber, &[("sse.stream", Warn)]),
        case("sse_as_text", Fault::SseAsText, Openchamber, &[("sse.headers", Fail)]),
        case("no_transform_dropped", Fault::DropNoTransform, Openchamber, &[("sse.headers", Fail)]),
        case("stripped_upgrade", Fault::StripUpgrade, Openchamber, &[("ws.upgrade", Fail), ("ws.terminal", Fail)]),
        case("idle_cut", IDLE_CUT, Openchamber, &[("ws.idle", Fail), ("sse.idle", Fail), ("http.slow", Fail)]),
        case("idle_cut_dorkos", IDLE_CUT, Dorkos, &[("sse.idle", Fail), ("http.slow", Fail)]),
        case("double_gzip", Fault::DoubleGzip, Openchamber, &[("compress.single", Fail), ("compress.sse", Fail)]),
        case("flushed_sse_gzip", Fault::GzipSseFlushed, Openchamber, &[("compress.sse", Warn)]),
        case("wrong_content_encoding", Fault::WrongContentEncoding, Openchamber, &[("compress.single", Fail)]),
        case("dropped_forwarded", Fault::DropForwarded, Openchamber, &[("headers.forwarded", Fail), ("auth.origin", Fail)]),
        case("proxy_address_forwarded", Fault::ForwardProxyAddress, Openchamber, &[("headers.forwarded", Fail)]),
        case("overwritten_origin", Fault::OverwriteOrigin, Openchamber, &[("auth.origin", Fail)]),
        case("body_cap", Fault::CapBody(8 * 1024 * 1024), Openchamber, &[("body.large", Fail), ("body.streaming", Warn)]),
        case("body_cap_dorkos", Fault::CapBody(1024 * 1024), Dorkos, &[("body.large", Fail), ("body.streaming", Warn)]),
        FaultCase {
            evidence: &["mock-a", "mock-b"],
            ..balanced("round_robin", Balance::RoundRobin, &[("lb.sticky", Fail)])
        },
        balanced("first_only", Balance::FirstOnly, &[("lb.sticky", Fail)]),
        h2_case("h2_connection_header", H2Fault::AddHeader("Connection", "keep-alive"), &[("h2.headers", Fail)], &["connection: keep-alive"]),
        h2_case("h2_idle_reset", H2Fault::CutIdleAfter(Duration::from_secs(1)), &[("sse.idle", Fail)], &["RST_STREAM INTERNAL_ERROR (0x2)"]),
        FaultCase {
            evidence: &["301", "GET"],
            ..case("redirect_301", Fault::RedirectToHttps(301), Openchamber, &[("tls.redirect", Warn)])
        },
        case("redirect_308", Fault::RedirectToHttps(308), Openchamber, &[("tls.redirect", Pass)]),
        FaultCase {
            transport: Transport::H2,
            evidence: &["501"],
            ..case("extended_connect_refused", Fault::RefuseExtendedConnect, Openchamber, &[("h2.websocket", Fail)])
        },
        FaultCase {
            transport: Transport::H2,
            ..case("extended_connect_not_advertised", Fault::None, Openchamber, &[("h2.websocket", Skip)])
        },
        // The browser tier, in headless Chromium through the same faults.
        FaultCase {
            evidence: &["no event"],
            ..case("browser_buffered_sse", Fault::BufferSse, Openchamber, &[("browser.sse", Fail)])
        },
        FaultCase {
            evidence: &["never opened", "1006"],
            ..case("browser_stripped_upgrade", Fault::StripUpgrade, Openchamber, &[("browser.ws", Fail)])
        },
        FaultCase {
            evidence: &["413"],
            ..case("browser_body_cap", Fault::CapBody(8 * 1024 * 1024), Openchamber, &[("browser.upload", Fail)])
        },
        FaultCase {
            evidence: &["shown twice", "Last-Event-ID"],
            ..case("browser_lost_resume", Fault::DropLastEventId, Dorkos, &[("browser.reconnect", Fail)])
        },
        // A proxy that cuts idle streams: the browser comes back and resumes (what the user
        // sees of a short read timeout on a durable stream).
        FaultCase {
            evidence: &["the proxy cut"],
            ..case("browser_idle_cut_resumes", IDLE_CUT, Dorkos, &[("browser.reconnect", Pass)])
        },
    ]
};

/// The process's browser for a test of the browser tier: `None` (the test skips, saying so)
/// when Chromium is not installed, a failure naming it under `PROXY_SUITE_STRICT=1`; a
/// Chromium that is installed but does not start always fails the test.
pub async fn browser() -> Option<std::sync::Arc<suite::browser::Browser>> {
    match suite::browser::Browser::launch().await {
        Ok(b) => Some(std::sync::Arc::new(b)),
        Err(e @ suite::browser::Unavailable::Missing(_)) => {
            suite::strict::skip_or_fail(suite::browser::COMPONENT, &e.to_string());
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// Closes the browser once every context has let go of it.
pub async fn close_browser(browser: std::sync::Arc<suite::browser::Browser>) {
    if let Ok(b) = std::sync::Arc::try_unwrap(browser) {
        b.close().await;
    }
}

/// Runs the case `name` of [`FAULT_CASES`]: fails the test unless every check grades as listed.
pub async fn run_fault_case(name: &str) {
    let case = FAULT_CASES
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no fault case {name:?} in FAULT_CASES"));
    let mut mocks = Vec::new();
    for i in 0..case.backends {
        let instance = format!("mock-{}", char::from(b'a' + i as u8));
        mocks.push(mock(case.profile, &instance).await);
    }
    let mocks: Vec<&RunningMock> = mocks.iter().collect();
    let addrs = mocks.iter().map(|m| m.addr()).collect();
    let (_proxy, _h2_proxy, target);
    if let Some(fault) = case.h2_fault {
        let proxy = FaultyH2Proxy::start(fault, mocks[0].addr(), HOST).await;
        target = via_h2(&proxy, mocks[0], case.profile);
        _h2_proxy = Some(proxy);
    } else {
        let proxy = FaultyProxy::start_balanced(case.fault, addrs, case.balance).await;
        target = via_transport(&proxy, &mocks, case.profile, case.transport);
        _proxy = Some(proxy);
    }
    // auth.origin last and alone: the UI password it needs would make every other check 401.
    let (auth, others): (Vec<_>, Vec<_>) =
        case.grades.iter().partition(|(id, _)| *id == "auth.origin");
    let in_browser = others.iter().any(|(id, _)| checks::info(id).is_some_and(|c| c.browser));
    let mut outcomes = if in_browser {
        let Some(browser) = browser().await else { return };
        let context = std::sync::Arc::new(browser.context().await.expect("a browser context"));
        let mut outcomes = Vec::new();
        for (id, _) in &others {
            outcomes.push(checks::run_in_browser(id, &target, &context).await);
        }
        if let Ok(context) = std::sync::Arc::try_unwrap(context) {
            context.dispose().await;
        }
        close_browser(browser).await;
        outcomes
    } else {
        join_all(others.iter().map(|(id, _)| checks::run(id, &target))).await
    };
    if !auth.is_empty() {
        outcomes.push(run_auth_origin(&target, &mocks).await);
    }
    let fault = case.h2_fault.map_or_else(|| format!("{:?}", case.fault), |f| format!("{f:?} over h2"));
    let context = format!("{} {fault} ({})", case.name, case.profile);
    for (outcome, (id, want)) in outcomes.iter().zip(others.into_iter().chain(auth)) {
        assert_eq!(outcome.id, *id);
        assert_grade(outcome, want, &context);
        // Over HTTP/2 a reset stream is what Chrome reports as a protocol error.
        if case.h2_fault.is_some() && outcome.actual.contains("RST_STREAM") {
            assert!(
                outcome.sign.starts_with(suite::checks::http2::CHROME_H2_ERROR),
                "{context}: {id}'s sign does not name {}: {}",
                suite::checks::http2::CHROME_H2_ERROR,
                outcome.sign
            );
        }
        for word in case.evidence {
            assert!(
                outcome.actual.contains(word),
                "{context}: {id}'s Actual does not name {word:?}: {}",
                outcome.actual
            );
        }
    }
}
