//! Each check fails (or warns, where the catalogue says so) through the faulty proxy built to
//! break it: the proof that the checks can fail.

mod support;

use std::time::Duration;

use futures::future::join_all;
use mock_server::Profile;
use rstest::rstest;
use suite::checks::Grade::{Fail, Warn};
use suite::checks::{self, Grade};

use support::faulty_proxy::{Balance, Fault, FaultyProxy};
use support::{assert_grade, lb_sticky_through, mock, run_auth_origin, via};

/// Runs `expected` checks through a proxy with `fault` in front of one openchamber mock.
async fn through(fault: Fault, profile: Profile, expected: &[(&str, Grade)]) {
    let m = mock(profile, "mock-a").await;
    let proxy = FaultyProxy::start(fault, vec![m.addr()]).await;
    let target = via(&proxy, &[&m], profile);
    // auth.origin last and alone: the UI password it needs would make every other check 401.
    let (auth, others): (Vec<_>, Vec<_>) =
        expected.iter().partition(|(id, _)| *id == "auth.origin");
    let mut outcomes = join_all(others.iter().map(|(id, _)| checks::run(id, &target))).await;
    if !auth.is_empty() {
        outcomes.push(run_auth_origin(&target, &[&m]).await);
    }
    let expected: Vec<_> = others.into_iter().chain(auth).collect();
    for (outcome, (id, want)) in outcomes.iter().zip(&expected) {
        assert_eq!(outcome.id, *id);
        assert_grade(outcome, *want, &format!("{fault:?} ({profile})"));
    }
}

/// One faulty proxy per case, and the grades it must cause.
#[rstest]
#[case::buffered_sse(Fault::BufferSse, Profile::Openchamber, &[("sse.stream", Fail)])]
#[case::buffered_sse_dorkos(Fault::BufferSse, Profile::Dorkos, &[("sse.stream", Fail)])]
#[case::stripped_upgrade(Fault::StripUpgrade, Profile::Openchamber, &[("ws.upgrade", Fail), ("ws.terminal", Fail)])]
#[case::idle_cut(
    Fault::CutIdleAfter(Duration::from_secs(1)),
    Profile::Openchamber,
    &[("ws.idle", Fail), ("sse.idle", Fail), ("http.slow", Fail)]
)]
#[case::idle_cut_dorkos(Fault::CutIdleAfter(Duration::from_secs(1)), Profile::Dorkos, &[("sse.idle", Fail), ("http.slow", Fail)])]
#[case::double_gzip(Fault::DoubleGzip, Profile::Openchamber, &[("compress.single", Fail), ("compress.sse", Fail)])]
#[case::flushed_sse_gzip(Fault::GzipSseFlushed, Profile::Openchamber, &[("compress.sse", Warn)])]
#[case::wrong_content_encoding(Fault::WrongContentEncoding, Profile::Openchamber, &[("compress.single", Fail)])]
#[case::dropped_forwarded(Fault::DropForwarded, Profile::Openchamber, &[("headers.forwarded", Fail), ("auth.origin", Fail)])]
#[case::body_cap(Fault::CapBody(8 * 1024 * 1024), Profile::Openchamber, &[("body.large", Fail), ("body.streaming", Warn)])]
#[case::body_cap_dorkos(Fault::CapBody(1024 * 1024), Profile::Dorkos, &[("body.large", Fail), ("body.streaming", Warn)])]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_breaks_its_check(
    #[case] fault: Fault,
    #[case] profile: Profile,
    #[case] expected: &[(&str, Grade)],
) {
    through(fault, profile, expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_fails_lb_sticky() {
    let outcome = lb_sticky_through(Balance::RoundRobin).await;
    assert_grade(&outcome, Fail, "round robin");
    assert!(
        outcome.actual.contains("mock-a") && outcome.actual.contains("mock-b"),
        "{}",
        outcome.actual
    );
}
