//! Each check fails (or warns, where the catalogue says so) through the faulty proxy built to
//! break it: the proof that the checks can fail.

mod support;

use std::time::Duration;

use futures::future::join_all;
use mock_server::Profile;
use suite::checks::{self, Grade};
use suite::checks::Grade::{Fail, Warn};

use support::faulty_proxy::{Balance, Fault, FaultyProxy};
use support::{assert_grade, mock, run_auth_origin, via};

/// Runs `expected` checks through a proxy with `fault` in front of one openchamber mock.
async fn through(fault: Fault, profile: Profile, expected: &[(&str, Grade)]) {
    let m = mock(profile, "mock-a").await;
    let proxy = FaultyProxy::start(fault, vec![m.addr()]).await;
    let target = via(&proxy, &[&m], profile);
    let outcomes = join_all(expected.iter().map(|(id, _)| {
        let target = &target;
        let m = &m;
        async move {
            if *id == "auth.origin" {
                run_auth_origin(target, &[m]).await
            } else {
                checks::run(id, target).await
            }
        }
    }))
    .await;
    for (outcome, (id, want)) in outcomes.iter().zip(expected) {
        assert_eq!(outcome.id, *id);
        assert_grade(outcome, *want, &format!("{fault:?} ({profile})"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_sse_fails_sse_stream() {
    through(Fault::BufferSse, Profile::Openchamber, &[("sse.stream", Fail)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_sse_fails_sse_stream_on_dorkos() {
    through(Fault::BufferSse, Profile::Dorkos, &[("sse.stream", Fail)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripped_upgrade_fails_websockets() {
    through(Fault::StripUpgrade, Profile::Openchamber, &[("ws.upgrade", Fail), ("ws.terminal", Fail)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_cut_fails_idle_checks() {
    let cut = Fault::CutIdleAfter(Duration::from_secs(1));
    through(cut, Profile::Openchamber, &[("ws.idle", Fail), ("sse.idle", Fail), ("http.slow", Fail)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_gzip_fails_compression() {
    through(Fault::DoubleGzip, Profile::Openchamber, &[("compress.single", Fail), ("compress.sse", Fail)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_sse_gzip_warns() {
    through(Fault::GzipSseFlushed, Profile::Openchamber, &[("compress.sse", Warn)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_encoding_fails_compress_single() {
    through(Fault::WrongContentEncoding, Profile::Openchamber, &[("compress.single", Fail)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_forwarded_headers_fail_headers_and_origin() {
    through(Fault::DropForwarded, Profile::Openchamber, &[("headers.forwarded", Fail), ("auth.origin", Fail)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_cap_fails_large_bodies_and_buffering_warns() {
    let cap = Fault::CapBody(8 * 1024 * 1024);
    through(cap, Profile::Openchamber, &[("body.large", Fail), ("body.streaming", Warn)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_fails_lb_sticky() {
    let (a, b) = (mock(Profile::Openchamber, "mock-a").await, mock(Profile::Openchamber, "mock-b").await);
    let proxy = FaultyProxy::start_balanced(Fault::None, vec![a.addr(), b.addr()], Balance::RoundRobin).await;
    let outcome = checks::run("lb.sticky", &via(&proxy, &[&a, &b], Profile::Openchamber)).await;
    assert_grade(&outcome, Fail, "round robin");
    assert!(outcome.actual.contains("mock-a") && outcome.actual.contains("mock-b"), "{}", outcome.actual);
}
