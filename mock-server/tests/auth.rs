//! UI-password mode: 401 without credentials, bearer, session cookie, `oc_url_token`, the Origin
//! check on upgrades (accepted and refused with a raw 403), toggling at run time.

mod common;

use common::*;
use mock_server::{MockConfig, Profile, RunningMock};
use rstest::rstest;
use tokio_tungstenite::tungstenite::Error as WsError;

const PW: &str = "s3cret";

async fn protected() -> RunningMock {
    mock_with(MockConfig {
        ui_password: Some(PW.into()),
        ..MockConfig::new(Profile::Openchamber)
    })
    .await
}

/// `POST /auth/session`, optionally as if behind a proxy that sets `X-Forwarded-Proto`.
async fn login(
    mock: &RunningMock,
    password: &str,
    forwarded_proto: Option<&str>,
) -> reqwest::Response {
    let mut req = client()
        .post(mock.url("/auth/session"))
        .json(&serde_json::json!({ "password": password }));
    if let Some(proto) = forwarded_proto {
        req = req.header("X-Forwarded-Proto", proto);
    }
    req.send().await.unwrap()
}

fn refused_status(err: &WsError) -> (u16, Option<String>, String) {
    match err {
        WsError::Http(res) => (
            res.status().as_u16(),
            res.headers()
                .get("connection")
                .map(|v| v.to_str().unwrap().to_lowercase()),
            String::from_utf8_lossy(res.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[rstest]
#[case("/api/mock/request")]
#[case("/api/event")]
#[case("/api/mock/json?size=10")]
#[tokio::test]
async fn api_routes_need_credentials(#[case] path: &str) {
    let mock = protected().await;
    let res = get(&mock, path, &[]).await;
    assert_eq!(res.status(), 401);
    let res = get(&mock, path, &[("Authorization", "Bearer wrong")]).await;
    assert_eq!(res.status(), 401);
    let res = get(&mock, path, &[("Authorization", &format!("Bearer {PW}"))]).await;
    assert_eq!(res.status(), 200);
    // Non-API pages stay open.
    assert_eq!(get(&mock, "/", &[]).await.status(), 200);
}

#[tokio::test]
async fn session_cookie_from_login() {
    let mock = protected().await;
    assert_eq!(login(&mock, "nope", None).await.status(), 401);
    let res = login(&mock, PW, Some("https")).await;
    assert_eq!(res.status(), 200);
    let cookie = header(&res, "set-cookie").unwrap().to_owned();
    for attr in ["oc_ui_session=", "HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let pair = cookie.split(';').next().unwrap().to_owned();
    let res = get(
        &mock,
        "/api/mock/request",
        &[("Cookie", &format!("theme=dark; {pair}"))],
    )
    .await;
    assert_eq!(res.status(), 200);
    let res = get(&mock, "/auth/session", &[("Cookie", &pair)]).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn login_cookie_is_not_secure_over_plain_http() {
    let mock = protected().await;
    let res = login(&mock, PW, None).await;
    assert!(!header(&res, "set-cookie").unwrap().contains("Secure"));
}

#[tokio::test]
async fn url_token_only_on_sse_and_websocket_gets() {
    let mock = protected().await;
    let res = get(&mock, &format!("/api/event?oc_url_token={PW}"), &[]).await;
    assert_eq!(res.status(), 200);
    let res = get(&mock, &format!("/api/mock/request?oc_url_token={PW}"), &[]).await;
    assert_eq!(res.status(), 401);
    let origin = format!("http://{}", mock.addr());
    ws_connect(
        &ws_url(&mock, &format!("/api/event/ws?oc_url_token={PW}")),
        &[("Origin", &origin)],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn upgrade_without_credentials_is_a_raw_401() {
    let mock = protected().await;
    let origin = format!("http://{}", mock.addr());
    let err = ws_connect(&ws_url(&mock, "/api/event/ws"), &[("Origin", &origin)])
        .await
        .unwrap_err();
    let (status, connection, _) = refused_status(&err);
    assert_eq!(status, 401);
    assert_eq!(connection.as_deref(), Some("close"));
}

/// The origin the server expects is built from X-Forwarded-Proto / X-Forwarded-Host / Host.
#[rstest]
#[case(&[], None, false)]
#[case(&[], Some("http://HOST"), true)]
#[case(&[], Some("https://HOST"), false)]
#[case(&[], Some("http://evil.example"), false)]
#[case(&[("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "oc.example.com")], Some("https://oc.example.com"), true)]
#[case(&[("X-Forwarded-Proto", "https, http"), ("X-Forwarded-Host", "oc.example.com, inner")], Some("https://oc.example.com"), true)]
#[case(&[("X-Forwarded-Host", "oc.example.com")], Some("https://oc.example.com"), false)]
#[case(&[("X-Forwarded-Proto", "https")], Some("https://HOST"), true)]
#[tokio::test]
async fn origin_check_on_upgrades(
    #[case] forwarded: &[(&str, &str)],
    #[case] origin: Option<&str>,
    #[case] accepted: bool,
) {
    let mock = protected().await;
    let host = mock.addr().to_string();
    let origin = origin.map(|o| o.replace("HOST", &host));
    let auth = format!("Bearer {PW}");
    let mut headers: Vec<(&str, &str)> = forwarded.to_vec();
    headers.push(("Authorization", &auth));
    if let Some(o) = origin.as_deref() {
        headers.push(("Origin", o));
    }
    for path in ["/api/event/ws", "/api/global/event/ws", "/api/terminal/ws"] {
        let result = ws_connect(&ws_url(&mock, path), &headers).await;
        if accepted {
            result.unwrap_or_else(|e| panic!("{path} refused: {e}"));
        } else {
            let (status, connection, body) = refused_status(&result.expect_err("refused"));
            assert_eq!(status, 403, "{path}");
            assert_eq!(connection.as_deref(), Some("close"));
            assert_eq!(body, "Invalid origin");
        }
    }
}

#[tokio::test]
async fn password_can_be_switched_at_run_time() {
    let mock = mock(Profile::Openchamber).await;
    let report = || get(&mock, "/api/mock/request", &[]);
    assert_eq!(report().await.status(), 200);
    // Without a password there is no Origin check either.
    ws_connect(
        &ws_url(&mock, "/api/event/ws"),
        &[("Origin", "http://evil.example")],
    )
    .await
    .unwrap();

    mock.set_ui_password(Some(PW.into()));
    assert_eq!(report().await.status(), 401);
    let err = ws_connect(
        &ws_url(&mock, &format!("/api/event/ws?oc_url_token={PW}")),
        &[("Origin", "http://evil.example")],
    )
    .await
    .unwrap_err();
    assert_eq!(refused_status(&err).0, 403);

    mock.set_ui_password(None);
    assert_eq!(report().await.status(), 200);
}
