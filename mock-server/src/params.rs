//! Bad input handling shared by every route: the query-parameter extractor with bounds checks,
//! and [`Reject`], the 4xx-with-a-message every handler returns instead of panicking.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An error answer: JSON `{"error": message}` (or raw text for a refused WebSocket upgrade,
/// see [`Reject::raw`]).
#[derive(Debug)]
pub(crate) struct Reject {
    status: StatusCode,
    message: String,
    raw: bool,
}

impl Reject {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Reject {
            status,
            message: message.into(),
            raw: false,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Reject::new(StatusCode::BAD_REQUEST, message)
    }

    /// As the real server refuses an upgrade: a bare status with `Connection: close` and a
    /// plain-text body, no JSON.
    pub fn raw(status: StatusCode, message: impl Into<String>) -> Self {
        Reject {
            raw: true,
            ..Reject::new(status, message)
        }
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        if self.raw {
            let mut res = (self.status, self.message).into_response();
            let headers = res.headers_mut();
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            res
        } else {
            json_response(
                self.status,
                serde_json::json!({ "error": self.message }).to_string(),
            )
        }
    }
}

/// A JSON body with the type Express gives it.
pub(crate) fn json_response(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    let mut res = (status, body.into()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    res
}

/// The request's query parameters (last value wins); malformed query strings are a 400.
pub(crate) struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Reject;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Reject> {
        Params::from_uri(&parts.uri)
    }
}

impl Params {
    pub fn from_uri(uri: &axum::http::Uri) -> Result<Self, Reject> {
        Query::<HashMap<String, String>>::try_from_uri(uri)
            .map(|Query(map)| Params(map))
            .map_err(|e| Reject::bad_request(format!("malformed query string: {e}")))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// An integer parameter within `range`, `None` when absent.
    pub fn bounded(&self, name: &str, range: RangeInclusive<u64>) -> Result<Option<u64>, Reject> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        match raw.trim().parse::<u64>() {
            Ok(v) if range.contains(&v) => Ok(Some(v)),
            _ => Err(Reject::bad_request(format!(
                "{name} must be an integer in {}..={}, got {raw:?}",
                range.start(),
                range.end()
            ))),
        }
    }

    /// A millisecond duration within `range`, `None` when absent.
    pub fn millis(
        &self,
        name: &str,
        range: RangeInclusive<u64>,
    ) -> Result<Option<Duration>, Reject> {
        Ok(self.bounded(name, range)?.map(Duration::from_millis))
    }

    /// A required integer parameter within `range`.
    pub fn required(&self, name: &str, range: RangeInclusive<u64>) -> Result<u64, Reject> {
        let (lo, hi) = (*range.start(), *range.end());
        self.bounded(name, range)?.ok_or_else(|| {
            Reject::bad_request(format!("missing {name} (an integer in {lo}..={hi})"))
        })
    }

    /// A boolean switch: `1`/`true` or `0`/`false`; absent is `false`.
    pub fn flag(&self, name: &str) -> Result<bool, Reject> {
        match self.get(name).map(str::trim) {
            None | Some("0") | Some("false") => Ok(false),
            Some("1") | Some("true") | Some("") => Ok(true),
            Some(other) => Err(Reject::bad_request(format!(
                "{name} must be 1 or 0, got {other:?}"
            ))),
        }
    }
}

/// First value of a header, as text.
pub(crate) fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// First element of a possibly comma-separated header (`X-Forwarded-Proto: https, http`).
pub(crate) fn first_forwarded<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    header_str(headers, name)
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// `Upgrade: websocket` present (the refusals of such requests are raw, see [`Reject::raw`]).
pub(crate) fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    header_str(headers, header::UPGRADE)
        .map(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
        })
        .unwrap_or(false)
}

/// The WebSocket handshake extractor with axum's rejection (not an upgrade, wrong version...)
/// turned into a [`Reject`], so that handlers validate their parameters first.
pub(crate) type Upgrade = Result<
    axum::extract::ws::WebSocketUpgrade,
    axum::extract::ws::rejection::WebSocketUpgradeRejection,
>;

pub(crate) fn upgrade(ws: Upgrade) -> Result<axum::extract::ws::WebSocketUpgrade, Reject> {
    ws.map_err(|e| Reject::new(e.status(), e.body_text()))
}
