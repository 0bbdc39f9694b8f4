//! Who may talk to the mock: the mock's own access token (required off loopback, so it is never
//! an open relay), and OpenChamber's UI-password mode: `oc_ui_session` cookie from
//! `POST /auth/session`, bearer, or `?oc_url_token=` on WebSocket/SSE GETs, plus the Origin check
//! on WebSocket upgrades that breaks behind a proxy which rewrites `Host` without forwarding it.
//! Also the control route that switches UI-password mode from outside the process
//! (`--control-token`: the suite's switch for a mock running in a container).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::Router;
use sha2::{Digest, Sha256};

use crate::params::{
    first_forwarded, header_str, is_websocket_upgrade, json_response, Params, Reject,
};
use crate::sse::is_sse_path;
use crate::AppState;

const SESSION_COOKIE: &str = "oc_ui_session";
/// `POST /auth/session` bodies are tiny; anything bigger is refused rather than buffered.
const SESSION_BODY_LIMIT: usize = 64 * 1024;

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/auth/session", post(login).get(status))
}

/// Where a mock in a container gets its UI password switched (outside `/api`, so that the
/// switch itself never needs the UI credentials it turns on).
pub const CONTROL_UI_PASSWORD: &str = "/mock-control/ui-password";

pub(crate) fn control_routes() -> Router<AppState> {
    Router::new().route(CONTROL_UI_PASSWORD, put(switch_ui_password))
}

/// `PUT /mock-control/ui-password` with `X-Mock-Control-Token`: the body is the new password,
/// an empty body turns UI-password mode off. 204; 404 when the mock has no control token (the
/// route does not exist for it), 403 for a wrong or missing token.
async fn switch_ui_password(State(state): State<AppState>, req: Request) -> Result<Response, Reject> {
    let Some(token) = state.config.control_token.as_deref() else {
        return Err(Reject::new(StatusCode::NOT_FOUND, "no such route"));
    };
    if header_str(req.headers(), "x-mock-control-token") != Some(token) {
        return Err(Reject::new(StatusCode::FORBIDDEN, "missing or wrong X-Mock-Control-Token"));
    }
    let body = axum::body::to_bytes(req.into_body(), SESSION_BODY_LIMIT)
        .await
        .map_err(|_| Reject::new(StatusCode::PAYLOAD_TOO_LARGE, "password too large"))?;
    let password = String::from_utf8(body.to_vec())
        .map_err(|_| Reject::bad_request("the password must be UTF-8"))?;
    *state.ui_password.write().unwrap_or_else(|e| e.into_inner()) =
        (!password.is_empty()).then_some(password);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A refusal in the form the real server uses for this request: raw text for an upgrade.
fn refuse(upgrade: bool, status: StatusCode, message: &str) -> Response {
    if upgrade {
        Reject::raw(status, message).into_response()
    } else {
        Reject::new(status, message).into_response()
    }
}

/// `--access-token`: `X-Mock-Access-Token` or `?mock_access_token=` on every request.
pub(crate) async fn require_access_token(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = state.config.access_token.as_deref() else {
        return next.run(req).await;
    };
    let by_header = header_str(req.headers(), "x-mock-access-token") == Some(token);
    let by_query = Params::from_uri(req.uri())
        .map(|p| p.get("mock_access_token") == Some(token))
        .unwrap_or(false);
    if by_header || by_query {
        next.run(req).await
    } else {
        let upgrade = is_websocket_upgrade(req.headers());
        refuse(
            upgrade,
            StatusCode::UNAUTHORIZED,
            "missing or wrong X-Mock-Access-Token",
        )
    }
}

/// UI-password mode: every `/api` route needs credentials; WebSocket upgrades also a matching
/// Origin. Credentials are checked first (401), then the Origin (403 `Invalid origin`).
pub(crate) async fn require_ui_auth(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(password) = state.ui_password() else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    if !(path == "/api" || path.starts_with("/api/")) {
        return next.run(req).await;
    }
    let upgrade = is_websocket_upgrade(req.headers());
    // The short-lived URL token exists for clients that cannot set headers: EventSource, WebSocket.
    let url_token_allowed = req.method() == Method::GET && (upgrade || is_sse_path(path));
    let url_token_ok = url_token_allowed
        && Params::from_uri(req.uri())
            .map(|p| p.get("oc_url_token") == Some(password.as_str()))
            .unwrap_or(false);
    if !url_token_ok && !has_credentials(&state, req.headers(), &password) {
        return refuse(
            upgrade,
            StatusCode::UNAUTHORIZED,
            "UI authentication required",
        );
    }
    if upgrade && !origin_matches(req.headers()) {
        return refuse(true, StatusCode::FORBIDDEN, "Invalid origin");
    }
    next.run(req).await
}

/// The origin the server expects: `{X-Forwarded-Proto or http}://{X-Forwarded-Host or Host}`
/// (first value of each; the mock itself only speaks plain HTTP).
pub(crate) fn expected_origin(headers: &HeaderMap) -> Option<String> {
    let proto = first_forwarded(headers, "x-forwarded-proto").unwrap_or("http");
    let host = first_forwarded(headers, "x-forwarded-host")
        .or_else(|| header_str(headers, header::HOST))?;
    Some(format!("{proto}://{host}"))
}

fn origin_matches(headers: &HeaderMap) -> bool {
    match (
        header_str(headers, header::ORIGIN),
        expected_origin(headers),
    ) {
        (Some(origin), Some(expected)) => origin == expected,
        _ => false,
    }
}

/// Session cookies are derived from the password, so changing it logs everyone out.
fn session_token(state: &AppState, password: &str) -> String {
    let mut h = Sha256::new();
    h.update(state.session_key);
    h.update(password.as_bytes());
    hex::encode(h.finalize())
}

fn has_credentials(state: &AppState, headers: &HeaderMap, password: &str) -> bool {
    let bearer = header_str(headers, header::AUTHORIZATION)
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == password);
    bearer || session_cookie(headers).is_some_and(|c| c == session_token(state, password))
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
}

#[derive(serde::Deserialize)]
struct Login {
    password: String,
}

/// `POST /auth/session {"password":PW}` → the session cookie.
async fn login(State(state): State<AppState>, req: Request) -> Result<Response, Reject> {
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), SESSION_BODY_LIMIT)
        .await
        .map_err(|_| {
            Reject::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "session request body too large",
            )
        })?;
    let login: Login = serde_json::from_slice(&body)
        .map_err(|e| Reject::bad_request(format!("expected {{\"password\":\"...\"}}: {e}")))?;
    let Some(password) = state.ui_password() else {
        return Ok(json_response(
            StatusCode::OK,
            r#"{"authenticated":true,"disabled":true}"#,
        ));
    };
    if login.password != password {
        return Err(Reject::new(StatusCode::UNAUTHORIZED, "Invalid password"));
    }
    let secure = first_forwarded(&headers, "x-forwarded-proto")
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict{}",
        session_token(&state, &password),
        if secure { "; Secure" } else { "" }
    );
    let mut res = json_response(StatusCode::OK, Body::from(r#"{"authenticated":true}"#));
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("hex token is a valid header value"),
    );
    Ok(res)
}

/// `GET /auth/session`: 200 when authenticated (or no password is set), else 401.
async fn status(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, Reject> {
    match state.ui_password() {
        None => Ok(json_response(
            StatusCode::OK,
            r#"{"authenticated":true,"disabled":true}"#,
        )),
        Some(pw) if has_credentials(&state, &headers, &pw) => {
            Ok(json_response(StatusCode::OK, r#"{"authenticated":true}"#))
        }
        Some(_) => Err(Reject::new(
            StatusCode::UNAUTHORIZED,
            "UI authentication required",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn origin_is_built_from_forwarded_headers_first() {
        let h = headers(&[("host", "backend:3000")]);
        assert_eq!(expected_origin(&h).as_deref(), Some("http://backend:3000"));
        let h = headers(&[
            ("host", "backend:3000"),
            ("x-forwarded-host", "example.com, proxy.local"),
            ("x-forwarded-proto", "https,http"),
        ]);
        assert_eq!(expected_origin(&h).as_deref(), Some("https://example.com"));
        assert_eq!(expected_origin(&HeaderMap::new()), None);
    }

    #[test]
    fn session_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; oc_ui_session=abc; b=2")]);
        assert_eq!(session_cookie(&h), Some("abc"));
        assert_eq!(
            session_cookie(&headers(&[("cookie", "oc_ui_sessionx=1")])),
            None
        );
    }
}
