//! Request bodies: upload hash and byte timings, the caps (413 declared and streamed), 415,
//! missing path, JSON bodies up to 50 MB, invalid JSON, DorkOS limits.

mod common;

use std::time::Duration;

use common::*;
use mock_server::Profile;
use rstest::rstest;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn upload_reports_length_hash_and_byte_times() {
    let mock = mock(Profile::Openchamber).await;
    let chunks: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 100_000]).collect();
    let expected = {
        let mut h = Sha256::new();
        chunks.iter().for_each(|c| h.update(c));
        hex::encode(h.finalize())
    };
    // Streamed with pauses, so first and last byte arrive at different times.
    let body = futures::stream::unfold(chunks.into_iter(), |mut it| async move {
        let chunk = it.next()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        Some((Ok::<_, std::io::Error>(chunk), it))
    });
    let res = post(
        &mock,
        "/api/fs/upload?path=/tmp/x.bin",
        Some("application/octet-stream"),
        reqwest::Body::wrap_stream(body),
    )
    .await;
    assert_eq!(res.status(), 200);
    let report: serde_json::Value = res.json().await.unwrap();
    assert_eq!(report["instance"], "mock");
    assert_eq!(report["bytes"], 400_000);
    assert_eq!(report["sha256"], expected);
    let received = report["received_at_us"].as_u64().unwrap();
    let first = report["first_byte_at_us"].as_u64().unwrap();
    let last = report["last_byte_at_us"].as_u64().unwrap();
    assert!(received <= first && first <= last);
    assert!(
        last - first >= 200_000,
        "streamed chunks arrived together: {report}"
    );
}

#[tokio::test]
async fn empty_upload_has_no_byte_times() {
    let mock = mock(Profile::Openchamber).await;
    let res = post(
        &mock,
        "/api/fs/upload?path=e",
        Some("application/octet-stream"),
        Vec::new(),
    )
    .await;
    let report: serde_json::Value = res.json().await.unwrap();
    assert_eq!(report["bytes"], 0);
    assert!(report["first_byte_at_us"].is_null());
    assert_eq!(report["sha256"], hex::encode(Sha256::digest(b"")));
}

#[rstest]
#[case(None)]
#[case(Some("application/json"))]
#[case(Some("multipart/form-data; boundary=x"))]
#[tokio::test]
async fn upload_with_a_wrong_type_is_415(#[case] content_type: Option<&str>) {
    let mock = mock(Profile::Openchamber).await;
    let res = post(
        &mock,
        "/api/fs/upload?path=a",
        content_type,
        vec![0u8; 10_000],
    )
    .await;
    assert_eq!(res.status(), 415);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("application/octet-stream"));
}

#[tokio::test]
async fn upload_without_path_is_400() {
    let mock = mock(Profile::Openchamber).await;
    let res = post(
        &mock,
        "/api/fs/upload",
        Some("application/octet-stream"),
        "x",
    )
    .await;
    assert_eq!(res.status(), 400);
}

/// A declared length over the cap is refused before a byte of body is sent.
#[rstest]
#[case(Profile::Openchamber, "/api/fs/upload?path=a", "application/octet-stream", 100 * 1024 * 1024)]
#[case(Profile::Dorkos, "/api/fs/upload?path=a", "application/octet-stream", 10 * 1024 * 1024)]
#[case(Profile::Openchamber, "/api/mock/body", "application/json", 50 * 1024 * 1024)]
#[case(Profile::Dorkos, "/api/mock/body", "application/json", 1024 * 1024)]
#[tokio::test]
async fn declared_length_over_the_cap_is_413(
    #[case] profile: Profile,
    #[case] path: &str,
    #[case] content_type: &str,
    #[case] cap: u64,
) {
    let mock = mock(profile).await;
    let mut tcp = tokio::net::TcpStream::connect(mock.addr()).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: mock\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        cap + 1
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(&cap.to_string()), "{answer}");
}

/// A chunked body is counted as it streams; the 413 still reaches the client.
#[tokio::test]
async fn streamed_upload_over_the_cap_is_413() {
    let mock = mock(Profile::Dorkos).await;
    let chunk = vec![7u8; 1024 * 1024];
    let body = futures::stream::iter((0..11).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let res = post(
        &mock,
        "/api/fs/upload?path=big",
        Some("application/octet-stream"),
        reqwest::Body::wrap_stream(body),
    )
    .await;
    assert_eq!(res.status(), 413);
}

#[tokio::test]
async fn upload_of_exactly_the_cap_is_accepted() {
    let mock = mock(Profile::Dorkos).await;
    let data = vec![1u8; 10 * 1024 * 1024];
    let res = post(
        &mock,
        "/api/fs/upload?path=cap",
        Some("application/octet-stream"),
        data.clone(),
    )
    .await;
    assert_eq!(res.status(), 200);
    let report: serde_json::Value = res.json().await.unwrap();
    assert_eq!(report["sha256"], hex::encode(Sha256::digest(&data)));
}

fn json_body(size: usize) -> Vec<u8> {
    let mut body = br#"{"blob":""#.to_vec();
    body.resize(size - 2, b'a');
    body.extend_from_slice(br#""}"#);
    body
}

#[tokio::test]
async fn json_body_of_50_mb_is_accepted() {
    let mock = mock(Profile::Openchamber).await;
    let body = json_body(50 * 1024 * 1024);
    let sha = hex::encode(Sha256::digest(&body));
    let res = post(
        &mock,
        "/api/mock/body",
        Some("application/json; charset=utf-8"),
        body,
    )
    .await;
    assert_eq!(res.status(), 200);
    let report: serde_json::Value = res.json().await.unwrap();
    assert_eq!(report["bytes"], 50 * 1024 * 1024);
    assert_eq!(report["sha256"], sha);
}

#[tokio::test]
async fn json_body_over_50_mb_is_413() {
    let mock = mock(Profile::Openchamber).await;
    let res = post(
        &mock,
        "/api/mock/body",
        Some("application/json"),
        json_body(50 * 1024 * 1024 + 1),
    )
    .await;
    assert_eq!(res.status(), 413);
}

#[rstest]
#[case("application/json", "{not json", 400)]
#[case("text/plain", "{}", 415)]
#[case("application/json", "", 200)]
#[case("application/json", "[1,2,3]", 200)]
#[tokio::test]
async fn json_body_validation(
    #[case] content_type: &str,
    #[case] body: &'static str,
    #[case] status: u16,
) {
    let mock = mock(Profile::Openchamber).await;
    let res = post(&mock, "/api/mock/body", Some(content_type), body).await;
    assert_eq!(res.status(), status);
}
