//! Probes under `/api/mock/`: the request report (what the backend saw, over HTTP and over a
//! WebSocket upgrade), the slow upstream, and JSON bodies of an exact size for the gzip
//! threshold. Also the non-API pages (`/`, `/health`) and the 404 fallback.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::params::{json_response, upgrade, Params, Reject, Upgrade};
use crate::websocket::{self, SocketPlan};
use crate::AppState;

/// Largest generated JSON body: the real server's 50 MB JSON limit.
const MAX_JSON: u64 = 50 * 1024 * 1024;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/mock/request", any(request_report))
        .route("/api/mock/request/ws", get(request_report_ws))
        .route("/api/mock/slow", get(slow))
        .route("/api/mock/json", get(sized_json))
        .route("/health", get(health))
        .route("/", get(index))
}

/// What the backend saw of a request: the proxy-facing half of every header check.
#[derive(serde::Serialize)]
struct RequestReport<'a> {
    instance: &'a str,
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    version: String,
    /// In arrival order (repeated names grouped at their first occurrence), names lower-case.
    headers: Vec<(&'a str, String)>,
    peer: Option<String>,
}

fn report(state: &AppState, parts: &Parts) -> String {
    let report = RequestReport {
        instance: state.instance(),
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        version: format!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        peer: parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.to_string()),
    };
    serde_json::to_string(&report).expect("report serializes")
}

async fn request_report(State(state): State<AppState>, req: axum::extract::Request) -> Response {
    let (parts, _body) = req.into_parts();
    json_response(StatusCode::OK, report(&state, &parts))
}

/// The upgrade request's report as the first frame, then the socket instruments (echo by
/// default, no periodic frames).
async fn request_report_ws(
    State(state): State<AppState>,
    params: Params,
    ws: Upgrade,
    req: axum::extract::Request,
) -> Result<Response, Reject> {
    let mut plan = SocketPlan::parse(&params)?;
    let ws = upgrade(ws)?;
    if params.get("mock_echo").is_none() {
        plan.echo = true;
    }
    let (parts, _body) = req.into_parts();
    let first = report(&state, &parts);
    let shutdown = state.shutdown();
    Ok(ws.on_upgrade(move |socket| websocket::run(socket, first, plan, None, shutdown)))
}

/// Answers only after `delay_ms`: nothing at all, not even headers, before then.
async fn slow(State(state): State<AppState>, params: Params) -> Result<Response, Reject> {
    let delay = params
        .millis("delay_ms", 0..=3_600_000)?
        .unwrap_or_default();
    let size = params.bounded("size", 2..=MAX_JSON)?.unwrap_or(64);
    if !state.shutdown().sleep_until(Instant::now() + delay).await {
        return Err(Reject::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "mock shutting down",
        ));
    }
    Ok(sized_json_response(size).await)
}

/// `size` bytes of JSON, with the identity length and hash in headers so a client can verify
/// what survived a proxy's gzip handling.
async fn sized_json(params: Params) -> Result<Response, Reject> {
    let size = params.required("size", 2..=MAX_JSON)?;
    Ok(sized_json_response(size).await)
}

async fn sized_json_response(size: u64) -> Response {
    let (body, sha) = tokio::task::spawn_blocking(move || {
        let body = json_of_size(size as usize);
        let sha = hex::encode(Sha256::digest(&body));
        (body, sha)
    })
    .await
    .expect("generating a JSON body does not panic");
    let mut res = json_response(StatusCode::OK, body);
    let h = res.headers_mut();
    h.insert("x-mock-identity-length", HeaderValue::from(size));
    h.insert(
        "x-mock-identity-sha256",
        HeaderValue::from_str(&sha).expect("hex"),
    );
    res
}

/// Deterministic JSON of exactly `size` bytes (`size >= 2`): `{"p":"abc…"}`, or `{}` followed by
/// spaces when too small for that.
pub(crate) fn json_of_size(size: usize) -> Vec<u8> {
    const FILLER: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    const WRAPPER: usize = r#"{"p":""}"#.len();
    let mut out = Vec::with_capacity(size);
    if size < WRAPPER {
        out.extend_from_slice(b"{}");
        out.resize(size.max(2), b' ');
        return out;
    }
    out.extend_from_slice(br#"{"p":""#);
    out.extend(FILLER.iter().copied().cycle().take(size - WRAPPER));
    out.extend_from_slice(br#""}"#);
    out
}

async fn health(State(state): State<AppState>) -> Response {
    json_response(
        StatusCode::OK,
        json!({ "status": "ok", "instance": state.instance(), "profile": state.profile() })
            .to_string(),
    )
}

/// The real server serves its web UI here (and for every non-API GET).
async fn index(State(state): State<AppState>) -> Response {
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>mock {}</title></head>\
         <body><div id=\"root\">mock backend ({} profile)</div></body></html>\n",
        state.instance(),
        state.profile()
    );
    let mut res = (StatusCode::OK, html).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    res
}

/// SPA fallback for non-API GETs, JSON 404 for the rest.
pub(crate) async fn fallback(
    state: State<AppState>,
    method: Method,
    uri: axum::http::Uri,
) -> Response {
    let api = uri.path() == "/api" || uri.path().starts_with("/api/");
    if !api && (method == Method::GET || method == Method::HEAD) {
        return index(state).await;
    }
    Reject::new(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_of_size_is_exact_and_valid() {
        for size in [2usize, 3, 7, 8, 9, 1023, 1024, 1025, 100_000] {
            let body = json_of_size(size);
            assert_eq!(body.len(), size);
            serde_json::from_slice::<serde_json::Value>(&body).unwrap();
        }
    }
}
