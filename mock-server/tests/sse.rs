//! SSE routes: headers per profile, first frames, the tick instrument (timing fields, silence,
//! hold, pad), DorkOS `id:` lines and resume, never gzip, bad parameters.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mock_server::Profile;
use rstest::rstest;

/// (profile, path, content type, cache control, first frame type) of every SSE route.
#[rstest]
#[case(
    Profile::Openchamber,
    "/api/event",
    "text/event-stream",
    "no-cache",
    "server.connected"
)]
#[case(
    Profile::Openchamber,
    "/api/global/event",
    "text/event-stream",
    "no-cache",
    "server.connected"
)]
#[case(
    Profile::Openchamber,
    "/api/notifications/stream",
    "text/event-stream; charset=utf-8",
    "no-cache, no-transform",
    "openchamber:notification-stream-ready"
)]
#[case(
    Profile::Openchamber,
    "/api/openchamber/events",
    "text/event-stream; charset=utf-8",
    "no-cache, no-transform",
    "openchamber:event-stream-ready"
)]
#[case(
    Profile::Openchamber,
    "/api/terminal/s1/stream",
    "text/event-stream; charset=utf-8",
    "no-cache, no-transform",
    "connected"
)]
#[case(
    Profile::Dorkos,
    "/api/events",
    "text/event-stream",
    "no-cache",
    "connected"
)]
#[case(
    Profile::Dorkos,
    "/api/sessions/abc/events",
    "text/event-stream",
    "no-cache",
    "connected"
)]
#[case(
    Profile::Dorkos,
    "/api/rooms/r1/events",
    "text/event-stream",
    "no-cache",
    "connected"
)]
#[tokio::test]
async fn helper_headers_and_first_frame(
    #[case] profile: Profile,
    #[case] path: &str,
    #[case] content_type: &str,
    #[case] cache_control: &str,
    #[case] first_type: &str,
) {
    let mock = mock(profile).await;
    let (headers, mut frames) = sse(&mock, path).await;
    assert_eq!(hval(&headers, "content-type"), Some(content_type));
    assert_eq!(hval(&headers, "cache-control"), Some(cache_control));
    assert_eq!(hval(&headers, "connection"), Some("keep-alive"));
    assert_eq!(hval(&headers, "x-accel-buffering"), Some("no"));
    assert_eq!(hval(&headers, "content-encoding"), None);
    assert_eq!(hval(&headers, "x-mock-instance"), Some("mock"));
    let first = frames.next().await.unwrap().json();
    let ty = first.get("payload").unwrap_or(&first)["type"].clone();
    assert_eq!(ty, first_type, "{first}");
}

#[rstest]
#[case("/api/event", "text/event-stream")]
#[case("/api/global/event", "text/event-stream")]
#[case("/api/notifications/stream", "text/event-stream; charset=utf-8")]
#[case("/api/openchamber/events", "text/event-stream; charset=utf-8")]
#[case("/api/terminal/s1/stream", "text/event-stream; charset=utf-8")]
#[tokio::test]
async fn bare_profile_sends_only_the_content_type(#[case] path: &str, #[case] content_type: &str) {
    let mock = mock(Profile::Bare).await;
    let (headers, mut frames) = sse(&mock, path).await;
    assert_eq!(hval(&headers, "content-type"), Some(content_type));
    for absent in ["cache-control", "connection", "x-accel-buffering"] {
        assert_eq!(hval(&headers, absent), None, "{absent} on {path}");
    }
    // Same payloads as openchamber.
    assert!(frames.next().await.unwrap().text.starts_with("data: {"));
}

#[tokio::test]
async fn global_stream_wraps_events_and_terminal_stream_sends_data() {
    let mock = mock(Profile::Openchamber).await;
    let (_, mut global) = sse(&mock, "/api/global/event").await;
    let first = global.next().await.unwrap().json();
    assert_eq!(first["directory"], "global");
    assert_eq!(first["payload"]["type"], "server.connected");

    let (_, mut term) = sse(&mock, "/api/terminal/sess-9/stream").await;
    assert_eq!(term.next().await.unwrap().json()["sessionId"], "sess-9");
    assert_eq!(term.next().await.unwrap().json()["type"], "data");
}

#[rstest]
#[case(Profile::Openchamber, "/api/event")]
#[case(Profile::Bare, "/api/notifications/stream")]
#[case(Profile::Dorkos, "/api/events")]
#[tokio::test]
async fn ticks_carry_sequence_and_emission_time(#[case] profile: Profile, #[case] path: &str) {
    let mock = mock(profile).await;
    let (_, mut frames) = sse(&mock, &format!("{path}?ticks=5&interval_ms=100&pad=16")).await;
    frames.next().await.unwrap(); // first frame
    let mut emitted = Vec::new();
    for seq in 0..5u64 {
        let frame = frames.next().await.unwrap();
        let tick = frame.json();
        assert_eq!(tick["type"], "mock.tick");
        assert_eq!(tick["seq"], seq);
        assert_eq!(tick["pad"], "x".repeat(16));
        if profile == Profile::Dorkos {
            assert!(
                frame.text.starts_with(&format!("id: {seq}\n")),
                "{}",
                frame.text
            );
        } else {
            assert!(!frame.text.contains("id:"), "{}", frame.text);
        }
        let at = tick["emitted_at_us"].as_u64().unwrap();
        assert!(at <= frame.arrived_us, "emitted after arrival");
        assert!(frame.arrived_us - at < 5_000_000, "lag over 5 s");
        emitted.push(at);
    }
    assert!(emitted.windows(2).all(|w| w[0] < w[1]), "{emitted:?}");
    // Ticks follow a fixed schedule: 4 intervals between the first and the last (lower bound).
    assert!(emitted[4] - emitted[0] >= 300_000, "{emitted:?}");
    // hold_ms defaults to 0 with ticks: the stream ends after the last tick.
    assert!(frames.next().await.is_none());
}

#[tokio::test]
async fn silence_means_no_body_byte_then_normal_stream() {
    let mock = mock(Profile::Openchamber).await;
    let sent = Instant::now();
    let (headers, mut frames) = sse(&mock, "/api/event?silence_ms=1500&ticks=1").await;
    assert_eq!(hval(&headers, "x-accel-buffering"), Some("no"));
    let chunk = frames.next_chunk().await.unwrap();
    assert!(
        sent.elapsed() >= Duration::from_millis(1500),
        "a byte came during the silence"
    );
    assert!(
        String::from_utf8_lossy(&chunk).starts_with("data: "),
        "{chunk:?}"
    );
}

#[tokio::test]
async fn silence_sends_headers_before_the_first_byte() {
    let mock = mock(Profile::Openchamber).await;
    let sent = Instant::now();
    let res = get(&mock, "/api/event?silence_ms=4000", &[]).await;
    // Headers are flushed at once, well before the silence ends.
    assert!(
        sent.elapsed() < Duration::from_millis(3500),
        "headers waited for the body"
    );
    let mut frames = SseReader::new(res);
    let early = tokio::time::timeout(Duration::from_millis(1000), frames.next_chunk()).await;
    assert!(early.is_err(), "a body byte during the silence: {early:?}");
}

#[tokio::test]
async fn hold_keeps_the_stream_open_after_the_last_tick() {
    let mock = mock(Profile::Openchamber).await;
    let (_, mut frames) = sse(&mock, "/api/event?ticks=1&hold_ms=800").await;
    frames.next().await.unwrap();
    let tick = frames.next().await.unwrap().json();
    assert!(frames.next().await.is_none());
    let ended = mock_server::now_us();
    assert!(ended - tick["emitted_at_us"].as_u64().unwrap() >= 750_000);
}

#[tokio::test]
async fn without_ticks_the_stream_stays_open() {
    let mock = mock(Profile::Openchamber).await;
    let (_, mut frames) = sse(&mock, "/api/openchamber/events").await;
    frames.next().await.unwrap();
    let more = tokio::time::timeout(Duration::from_millis(700), frames.next()).await;
    assert!(more.is_err(), "the stream ended or sent something early");
}

#[tokio::test]
async fn hold_without_ticks_ends_the_stream() {
    let mock = mock(Profile::Bare).await;
    let (_, mut frames) = sse(&mock, "/api/event?hold_ms=200").await;
    frames.next().await.unwrap();
    assert!(frames.next().await.is_none());
}

#[tokio::test]
async fn dorkos_durable_streams_resume_after_last_event_id() {
    let mock = mock(Profile::Dorkos).await;
    let (_, mut frames) = sse_with(
        &mock,
        "/api/sessions/s/events?ticks=2&interval_ms=10",
        &[("Last-Event-ID", "41")],
    )
    .await;
    frames.next().await.unwrap();
    let tick = frames.next().await.unwrap();
    assert!(tick.text.starts_with("id: 42\n"), "{}", tick.text);
    assert_eq!(frames.next().await.unwrap().json()["seq"], 43);
}

#[tokio::test]
async fn retry_ms_asks_the_event_source_to_reconnect_that_soon_before_the_first_frame() {
    let mock = mock(Profile::Dorkos).await;
    let (_, mut frames) = sse(&mock, "/api/sessions/s/events?ticks=1&retry_ms=250").await;
    assert_eq!(frames.next().await.unwrap().text, "retry: 250");
    assert!(frames.next().await.unwrap().json()["type"] == "connected");
    let bad = get(&mock, "/api/sessions/s/events?retry_ms=soon", &[]).await;
    assert_eq!(bad.status(), 400);
}

/// Even when the client accepts gzip and ticks are big, SSE leaves the backend identity-encoded.
#[rstest]
#[case("/api/event")]
#[case("/api/global/event")]
#[case("/api/notifications/stream")]
#[case("/api/openchamber/events")]
#[case("/api/terminal/x/stream")]
#[tokio::test]
async fn sse_is_never_compressed(#[case] path: &str) {
    let mock = mock(Profile::Openchamber).await;
    let (headers, mut frames) = sse_with(
        &mock,
        &format!("{path}?ticks=2&interval_ms=5&pad=4096"),
        &[("Accept-Encoding", "gzip, deflate, br")],
    )
    .await;
    assert_eq!(hval(&headers, "content-encoding"), None);
    assert_eq!(hval(&headers, "vary"), None);
    let tick = loop {
        let frame = frames.next().await.unwrap().json();
        if frame["type"] == "mock.tick" {
            break frame;
        }
    };
    assert_eq!(tick["pad"].as_str().unwrap().len(), 4096);
}

#[rstest]
#[case("ticks=10001")]
#[case("ticks=-1")]
#[case("ticks=abc")]
#[case("interval_ms=0")]
#[case("interval_ms=60001")]
#[case("silence_ms=3600001")]
#[case("hold_ms=99999999999999999999999")]
#[case("pad=65537")]
#[tokio::test]
async fn out_of_range_parameters_are_400(#[case] query: &str) {
    let mock = mock(Profile::Openchamber).await;
    let res = get(&mock, &format!("/api/event?{query}"), &[]).await;
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.unwrap();
    let name = query.split('=').next().unwrap();
    assert!(body["error"].as_str().unwrap().contains(name), "{body}");
}

#[tokio::test]
async fn bad_last_event_id_is_400() {
    let mock = mock(Profile::Dorkos).await;
    let res = get(
        &mock,
        "/api/rooms/r/events",
        &[("Last-Event-ID", "yesterday")],
    )
    .await;
    assert_eq!(res.status(), 400);
}

#[rstest]
#[case(Profile::Openchamber, "/api/events")]
#[case(Profile::Dorkos, "/api/event")]
#[tokio::test]
async fn routes_of_the_other_backend_are_404(#[case] profile: Profile, #[case] path: &str) {
    let mock = mock(profile).await;
    assert_eq!(get(&mock, path, &[]).await.status(), 404);
}

/// Heartbeats take 10 s or more to show; both profiles are watched at once.
#[tokio::test]
async fn openchamber_sends_heartbeats_and_bare_does_not() {
    let oc = mock(Profile::Openchamber).await;
    let bare = mock(Profile::Bare).await;
    let (_, mut oc_frames) = sse(&oc, "/api/event").await;
    let (_, mut bare_frames) = sse(&bare, "/api/event").await;
    oc_frames.next().await.unwrap();
    bare_frames.next().await.unwrap();
    let (beat, quiet) = tokio::join!(
        oc_frames.next(),
        tokio::time::timeout(Duration::from_secs(12), bare_frames.next())
    );
    assert_eq!(beat.unwrap().json()["type"], "server.heartbeat");
    assert!(quiet.is_err(), "bare sent a heartbeat");
}
