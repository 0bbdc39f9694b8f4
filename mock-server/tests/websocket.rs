//! WebSocket routes: `ready` first frames, echo, push, requested close codes, the upgrade report,
//! and the terminal protocol v3 framing (hello, attach, write, ping, BAD_FRAME, 64 KiB cap).

mod common;

use std::time::Duration;

use common::*;
use futures::SinkExt;
use mock_server::Profile;
use rstest::rstest;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

#[rstest]
#[case(Profile::Openchamber, "/api/event/ws", "directory")]
#[case(Profile::Openchamber, "/api/global/event/ws", "global")]
#[case(Profile::Bare, "/api/event/ws", "directory")]
#[case(Profile::Bare, "/api/global/event/ws", "global")]
#[tokio::test]
async fn first_frame_is_ready_with_scope(
    #[case] profile: Profile,
    #[case] path: &str,
    #[case] scope: &str,
) {
    let mock = mock(profile).await;
    let mut ws = ws_connect(&ws_url(&mock, path), &[]).await.unwrap();
    assert_eq!(
        ws_next_json(&mut ws).await,
        json!({"type": "ready", "scope": scope})
    );
}

#[tokio::test]
async fn echo_returns_text_and_binary_unchanged() {
    let mock = mock(Profile::Openchamber).await;
    let mut ws = ws_connect(
        &ws_url(&mock, "/api/event/ws?mock_echo=1&mock_silent=1"),
        &[],
    )
    .await
    .unwrap();
    ws_next_json(&mut ws).await;
    ws.send(Message::text("hello ✓")).await.unwrap();
    assert_eq!(ws_next(&mut ws).await, Message::text("hello ✓"));
    let blob: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    ws.send(Message::binary(blob.clone())).await.unwrap();
    assert_eq!(ws_next(&mut ws).await, Message::binary(blob));
}

#[tokio::test]
async fn push_after_sends_one_timed_frame() {
    let mock = mock(Profile::Openchamber).await;
    let before = mock_server::now_us();
    let mut ws = ws_connect(
        &ws_url(
            &mock,
            "/api/global/event/ws?mock_silent=1&mock_push_after_ms=300",
        ),
        &[],
    )
    .await
    .unwrap();
    ws_next_json(&mut ws).await;
    let push = ws_next_json(&mut ws).await;
    assert_eq!(push["type"], "mock.push");
    assert!(push["emitted_at_us"].as_u64().unwrap() >= before + 300_000);
}

#[tokio::test]
async fn silent_sockets_send_nothing_after_ready() {
    let mock = mock(Profile::Openchamber).await;
    let mut ws = ws_connect(&ws_url(&mock, "/api/event/ws?mock_silent=1"), &[])
        .await
        .unwrap();
    ws_next_json(&mut ws).await;
    let next = tokio::time::timeout(
        Duration::from_millis(800),
        futures::StreamExt::next(&mut ws),
    )
    .await;
    assert!(next.is_err(), "{next:?}");
}

#[rstest]
#[case(1000)]
#[case(1011)]
#[case(1012)]
#[case(1013)]
#[case(4321)]
#[tokio::test]
async fn close_with_the_requested_code(#[case] code: u16) {
    let mock = mock(Profile::Openchamber).await;
    let mut ws = ws_connect(
        &ws_url(&mock, &format!("/api/event/ws?mock_close={code}")),
        &[],
    )
    .await
    .unwrap();
    ws_next_json(&mut ws).await;
    match ws_next(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::from(code)),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[rstest]
#[case("mock_close=999")]
#[case("mock_close=5000")]
#[case("mock_close=1006")]
#[case("mock_close=2000")]
#[case("mock_echo=maybe")]
#[case("mock_push_after_ms=-5")]
#[tokio::test]
async fn bad_socket_parameters_refuse_the_upgrade_with_400(#[case] query: &str) {
    let mock = mock(Profile::Openchamber).await;
    let err = ws_connect(&ws_url(&mock, &format!("/api/event/ws?{query}")), &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("400"), "{err}");
}

#[tokio::test]
async fn upgrade_report_is_the_first_frame() {
    let mock = mock(Profile::Openchamber).await;
    let mut ws = ws_connect(
        &ws_url(&mock, "/api/mock/request/ws?x=1"),
        &[
            ("X-Forwarded-Host", "example.com"),
            ("Origin", "http://example.com"),
        ],
    )
    .await
    .unwrap();
    let report = ws_next_json(&mut ws).await;
    assert_eq!(report["method"], "GET");
    assert_eq!(report["query"], "x=1");
    let headers: Vec<(String, String)> = serde_json::from_value(report["headers"].clone()).unwrap();
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.to_lowercase())
    };
    assert_eq!(get("upgrade").as_deref(), Some("websocket"));
    assert!(get("connection").unwrap().contains("upgrade"));
    assert_eq!(get("x-forwarded-host").as_deref(), Some("example.com"));
    // Echo by default afterwards.
    ws.send(Message::text("again")).await.unwrap();
    assert_eq!(ws_next(&mut ws).await, Message::text("again"));
}

fn frame(v: Value) -> Message {
    let mut b = vec![0x01];
    b.extend(serde_json::to_vec(&v).unwrap());
    Message::binary(b)
}

async fn terminal_next(ws: &mut Ws) -> Value {
    match ws_next(ws).await {
        Message::Binary(b) => {
            assert_eq!(b[0], 0x01, "frame tag");
            serde_json::from_slice(&b[1..]).unwrap()
        }
        other => panic!("terminal sent a non-binary frame {other:?}"),
    }
}

#[rstest]
#[case(Profile::Openchamber)]
#[case(Profile::Bare)]
#[tokio::test]
async fn terminal_protocol_v3(#[case] profile: Profile) {
    let mock = mock(profile).await;
    let mut ws = ws_connect(&ws_url(&mock, "/api/terminal/ws"), &[])
        .await
        .unwrap();
    assert_eq!(terminal_next(&mut ws).await, json!({"t": "hello", "v": 3}));
    ws.send(frame(json!({"t": "hello", "v": 3}))).await.unwrap();
    ws.send(frame(json!({"t": "attach", "s": "t1"})))
        .await
        .unwrap();
    assert_eq!(
        terminal_next(&mut ws).await,
        json!({"t": "snapshot", "s": "t1", "d": ""})
    );
    ws.send(frame(json!({"t": "write", "s": "t1", "d": "ls -la\r"})))
        .await
        .unwrap();
    assert_eq!(
        terminal_next(&mut ws).await,
        json!({"t": "output", "s": "t1", "q": 1, "d": "ls -la\r"})
    );
    ws.send(frame(json!({"t": "ping"}))).await.unwrap();
    assert_eq!(terminal_next(&mut ws).await, json!({"t": "pong"}));
    ws.send(frame(json!({"t": "write", "s": "t1", "d": "exit"})))
        .await
        .unwrap();
    assert_eq!(terminal_next(&mut ws).await["q"], 2);
    assert_eq!(
        terminal_next(&mut ws).await,
        json!({"t": "exit", "s": "t1", "code": 0})
    );
}

#[rstest]
#[case(Message::text(r#"{"t":"ping"}"#))]
#[case(Message::binary(br#"{"t":"ping"}"#.to_vec()))]
#[case(Message::binary(b"\x01{not json".to_vec()))]
#[case(Message::binary(b"\x01\"just a string\"".to_vec()))]
#[tokio::test]
async fn terminal_bad_frames(#[case] bad: Message) {
    let mock = mock(Profile::Openchamber).await;
    let mut ws = ws_connect(&ws_url(&mock, "/api/terminal/ws"), &[])
        .await
        .unwrap();
    terminal_next(&mut ws).await;
    ws.send(bad).await.unwrap();
    let err = terminal_next(&mut ws).await;
    assert_eq!(err["t"], "error");
    assert_eq!(err["code"], "BAD_FRAME");
    assert!(err["message"].as_str().is_some());
    // The socket stays usable.
    ws.send(frame(json!({"t": "ping"}))).await.unwrap();
    assert_eq!(terminal_next(&mut ws).await, json!({"t": "pong"}));
}

#[tokio::test]
async fn terminal_message_over_64_kib_closes_with_1009() {
    let mock = mock(Profile::Openchamber).await;
    let mut ws = ws_connect(&ws_url(&mock, "/api/terminal/ws"), &[])
        .await
        .unwrap();
    terminal_next(&mut ws).await;
    let big = "y".repeat(70 * 1024);
    ws.send(frame(json!({"t": "write", "s": "a", "d": big})))
        .await
        .unwrap();
    match tokio::time::timeout(PATIENCE, futures::StreamExt::next(&mut ws))
        .await
        .unwrap()
    {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(f.code, CloseCode::Size),
        // A reset after the close frame is also a refusal; what matters is no output.
        Some(Err(_)) | None => {}
        other => panic!("expected close 1009, got {other:?}"),
    }
}
