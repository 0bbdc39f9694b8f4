//! Plain HTTP routes: the headers every response carries per profile, gzip on both sides of the
//! threshold, the request report, the slow route, sized JSON, and bad parameters.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::*;
use mock_server::{MockConfig, Profile};
use rstest::rstest;
use sha2::{Digest, Sha256};

#[rstest]
#[case(Profile::Openchamber, Some("noindex, nofollow"))]
#[case(Profile::Bare, Some("noindex, nofollow"))]
#[case(Profile::Dorkos, None)]
#[tokio::test]
async fn every_response_carries_the_instance_and_robots_headers(
    #[case] profile: Profile,
    #[case] robots: Option<&str>,
) {
    let mock = mock_with(MockConfig {
        instance_id: "blue".into(),
        ..MockConfig::new(profile)
    })
    .await;
    assert_eq!(mock.instance_id(), "blue");
    for path in [
        "/",
        "/health",
        "/api/mock/json?size=10",
        "/api/nope",
        "/api/mock/json?size=1",
    ] {
        let res = get(&mock, path, &[]).await;
        assert_eq!(header(&res, "x-mock-instance"), Some("blue"), "{path}");
        assert_eq!(header(&res, "x-robots-tag"), robots, "{path}");
    }
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[rstest]
#[case(Profile::Openchamber, 1023, false)]
#[case(Profile::Openchamber, 1024, true)]
#[case(Profile::Openchamber, 200_000, true)]
#[case(Profile::Bare, 1023, false)]
#[case(Profile::Bare, 1024, true)]
#[case(Profile::Dorkos, 1024, false)]
#[case(Profile::Dorkos, 200_000, false)]
#[tokio::test]
async fn gzip_threshold(#[case] profile: Profile, #[case] size: usize, #[case] gzipped: bool) {
    let mock = mock(profile).await;
    let res = get(
        &mock,
        &format!("/api/mock/json?size={size}"),
        &[("Accept-Encoding", "gzip")],
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "content-encoding"), gzipped.then_some("gzip"));
    assert_eq!(
        header(&res, "x-mock-identity-length").unwrap(),
        size.to_string()
    );
    let sha = header(&res, "x-mock-identity-sha256").unwrap().to_owned();
    let vary = header(&res, "vary").map(str::to_owned);
    let raw = res.bytes().await.unwrap();
    let body = if gzipped { gunzip(&raw) } else { raw.to_vec() };
    assert_eq!(body.len(), size);
    assert_eq!(hex::encode(Sha256::digest(&body)), sha);
    serde_json::from_slice::<serde_json::Value>(&body).unwrap();
    // Express adds Vary to every compressible response it could have compressed.
    assert_eq!(vary.as_deref(), profile.gzip().then_some("Accept-Encoding"));
}

#[rstest]
#[case(None)]
#[case(Some("identity"))]
#[case(Some("gzip;q=0"))]
#[case(Some("br"))]
#[tokio::test]
async fn no_gzip_unless_accepted(#[case] accept_encoding: Option<&str>) {
    let mock = mock(Profile::Openchamber).await;
    let headers: Vec<_> = accept_encoding
        .map(|ae| ("Accept-Encoding", ae))
        .into_iter()
        .collect();
    let res = get(&mock, "/api/mock/json?size=5000", &headers).await;
    assert_eq!(header(&res, "content-encoding"), None);
    assert_eq!(res.bytes().await.unwrap().len(), 5000);
}

#[tokio::test]
async fn accept_event_stream_disables_gzip_on_any_route() {
    let mock = mock(Profile::Openchamber).await;
    let res = get(
        &mock,
        "/api/mock/json?size=5000",
        &[("Accept-Encoding", "gzip"), ("Accept", "text/event-stream")],
    )
    .await;
    assert_eq!(header(&res, "content-encoding"), None);
}

#[tokio::test]
async fn json_of_50_mb_is_served() {
    let mock = mock(Profile::Openchamber).await;
    let res = get(&mock, "/api/mock/json?size=52428800", &[]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().len(), 52_428_800);
}

#[rstest]
#[case("/api/mock/json")]
#[case("/api/mock/json?size=1")]
#[case("/api/mock/json?size=52428801")]
#[case("/api/mock/json?size=ten")]
#[case("/api/mock/slow?delay_ms=3600001")]
#[case("/api/mock/slow?size=0")]
#[case("/api/mock/request/ws?mock_close=1005")]
#[tokio::test]
async fn bad_parameters_are_400_with_a_message(#[case] path: &str) {
    let mock = mock(Profile::Openchamber).await;
    let res = get(&mock, path, &[]).await;
    assert_eq!(res.status(), 400, "{path}");
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(!body["error"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn request_report_shows_what_the_backend_saw() {
    let mock = mock(Profile::Openchamber).await;
    let res = client()
        .post(mock.url("/api/mock/request?a=1&b=2"))
        .header("X-Forwarded-For", "203.0.113.7")
        .header("X-Forwarded-Proto", "https")
        .header("X-Real-IP", "203.0.113.7")
        .header("Forwarded", "for=203.0.113.7")
        .header("Via", "1.1 proxy")
        .header("Accept-Encoding", "gzip")
        .body("ignored")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let report: serde_json::Value = res.json().await.unwrap();
    assert_eq!(report["instance"], "mock");
    assert_eq!(report["method"], "POST");
    assert_eq!(report["path"], "/api/mock/request");
    assert_eq!(report["query"], "a=1&b=2");
    assert_eq!(report["version"], "HTTP/1.1");
    let peer: std::net::SocketAddr = report["peer"].as_str().unwrap().parse().unwrap();
    assert!(peer.ip().is_loopback());
    let headers: Vec<(String, String)> = serde_json::from_value(report["headers"].clone()).unwrap();
    let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    let pos = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .unwrap_or_else(|| panic!("{n} missing: {names:?}"))
    };
    // Arrival order, lower-case names.
    assert!(pos("x-forwarded-for") < pos("x-forwarded-proto"));
    assert!(pos("x-forwarded-proto") < pos("x-real-ip"));
    assert!(pos("forwarded") < pos("via"));
    assert!(headers.contains(&("host".into(), mock.addr().to_string())));
    assert!(headers.contains(&("via".into(), "1.1 proxy".into())));
}

#[tokio::test]
async fn slow_route_sends_nothing_before_the_delay() {
    let mock = mock(Profile::Openchamber).await;
    let sent = Instant::now();
    let res = get(&mock, "/api/mock/slow?delay_ms=700&size=100", &[]).await;
    assert!(
        sent.elapsed() >= Duration::from_millis(700),
        "headers before the delay"
    );
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().len(), 100);
}

#[tokio::test]
async fn slow_route_is_gzipped_above_the_threshold() {
    let mock = mock(Profile::Openchamber).await;
    let res = get(
        &mock,
        "/api/mock/slow?delay_ms=0&size=4096",
        &[("Accept-Encoding", "gzip")],
    )
    .await;
    assert_eq!(header(&res, "content-encoding"), Some("gzip"));
}

#[tokio::test]
async fn non_api_gets_serve_the_ui_and_unknown_api_routes_are_404() {
    let mock = mock(Profile::Openchamber).await;
    for path in ["/", "/sessions/123"] {
        let res = get(&mock, path, &[]).await;
        assert_eq!(res.status(), 200);
        assert!(header(&res, "content-type")
            .unwrap()
            .starts_with("text/html"));
    }
    let res = get(&mock, "/api/nope", &[]).await;
    assert_eq!(res.status(), 404);
    let res = get(&mock, "/health", &[]).await;
    let health: serde_json::Value = res.json().await.unwrap();
    assert_eq!(health["profile"], "openchamber");
}

#[tokio::test]
async fn access_token_is_required_when_configured() {
    let mock = mock_with(MockConfig {
        access_token: Some("t0k".into()),
        ..MockConfig::new(Profile::Openchamber)
    })
    .await;
    let res = get(&mock, "/api/mock/request", &[]).await;
    assert_eq!(res.status(), 401);
    assert_eq!(header(&res, "x-mock-instance"), Some("mock"));
    let res = get(
        &mock,
        "/api/mock/request",
        &[("X-Mock-Access-Token", "t0k")],
    )
    .await;
    assert_eq!(res.status(), 200);
    let res = get(&mock, "/?mock_access_token=t0k", &[]).await;
    assert_eq!(res.status(), 200);
    let refused = ws_connect(&ws_url(&mock, "/api/event/ws"), &[])
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("401"), "{refused}");
    ws_connect(&ws_url(&mock, "/api/event/ws?mock_access_token=t0k"), &[])
        .await
        .unwrap();
}
