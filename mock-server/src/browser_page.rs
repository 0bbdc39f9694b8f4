//! The browser page `GET /api/mock/browser`: served under the app's own API prefix, so it is
//! same-origin with every route through any proxy config that passes `/api/`. Its script
//! (`browser_page.js`) does what the OpenChamber UI does (EventSource on the SSE routes,
//! WebSockets with text and binary frames, a large `fetch` upload) when the suite's browser
//! harness calls its probes, and keeps a timeline of every event in `window.records`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::AppState;

/// The path of the page.
pub const PATH: &str = "/api/mock/browser";

const SCRIPT: &str = include_str!("browser_page.js");

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route(PATH, get(page))
}

async fn page() -> Response {
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>proxy-suite browser probe</title></head>\
         <body><pre id=\"log\"></pre><script>\n{SCRIPT}\n</script></body></html>\n"
    );
    let mut res = (StatusCode::OK, html).into_response();
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
