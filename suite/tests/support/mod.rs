//! Shared by the check tests: spawned mocks, targets pointing at them directly or through the
//! faulty proxy, and grade lookups.
#![allow(dead_code)]

pub mod faulty_proxy;

use std::net::SocketAddr;
use std::time::Duration;

use mock_server::{MockConfig, Profile, RunningMock};
use suite::checks::{self, Grade, Outcome, Target};

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
    }
}

/// The mock itself, as the control.
pub fn direct(mock: &RunningMock, profile: Profile) -> Target {
    target("direct", mock.addr(), profile, &[mock], true)
}

/// The faulty proxy in front of `mocks`.
pub fn via(proxy: &FaultyProxy, mocks: &[&RunningMock], profile: Profile) -> Target {
    target("faulty-proxy", proxy.addr(), profile, mocks, false)
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
