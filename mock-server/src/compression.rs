//! Gzip exactly as the real server's Express `compression` middleware applies it: compressible
//! types only, 1024-byte threshold, never for SSE (by `Accept`, by path, or by response type),
//! `Vary: Accept-Encoding` on every compressible response, chunked output. DorkOS: never.

use std::io::Write;

use axum::body::{Body, HttpBody as _};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::params::header_str;
use crate::sse::is_sse_path;
use crate::AppState;

/// Express `compression`'s default `threshold`.
pub(crate) const THRESHOLD: u64 = 1024;

pub(crate) async fn gzip(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !state.profile().gzip() {
        return next.run(req).await;
    }
    let accepts_gzip = accepts_gzip(req.headers());
    let sse_request = header_str(req.headers(), header::ACCEPT)
        .is_some_and(|a| a.contains("text/event-stream"))
        || is_sse_path(req.uri().path());
    let head = req.method() == Method::HEAD;
    let res = next.run(req).await;

    if sse_request
        || !compressible(res.headers())
        || no_transform(res.headers())
        || no_body(res.status())
    {
        return res;
    }
    let mut res = res;
    add_vary(res.headers_mut());
    let size = res.body().size_hint().exact();
    let encoded = res.headers().contains_key(header::CONTENT_ENCODING);
    if size.is_none_or(|n| n < THRESHOLD) || encoded || head || !accepts_gzip {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Ok(gz) = tokio::task::spawn_blocking(move || gzip_bytes(&bytes)).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    parts
        .headers
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    parts.headers.remove(header::CONTENT_LENGTH);
    // Like Express: the compressed body goes out chunked, without Content-Length.
    let chunked = Body::from_stream(futures::stream::once(async move {
        Ok::<_, std::convert::Infallible>(bytes::Bytes::from(gz))
    }));
    Response::from_parts(parts, chunked)
}

pub(crate) fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        Compression::default(),
    );
    enc.write_all(data).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

/// `Accept-Encoding` allows gzip (explicitly or by `*`) with a non-zero q. No header: identity.
pub(crate) fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut star = None;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match coding.as_str() {
                "gzip" | "x-gzip" => gzip = Some(q > 0.0),
                "*" => star = Some(q > 0.0),
                _ => {}
            }
        }
    }
    gzip.or(star).unwrap_or(false)
}

/// The `compressible` database's verdict, reduced to the types the mock serves.
fn compressible(headers: &HeaderMap) -> bool {
    let Some(ct) = header_str(headers, header::CONTENT_TYPE) else {
        return false;
    };
    let ct = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if ct == "text/event-stream" {
        return false;
    }
    ct.starts_with("text/")
        || ct.ends_with("+json")
        || ct.ends_with("+xml")
        || matches!(
            ct.as_str(),
            "application/json" | "application/javascript" | "application/xml"
        )
}

fn no_transform(headers: &HeaderMap) -> bool {
    header_str(headers, header::CACHE_CONTROL).is_some_and(|cc| {
        cc.split(',')
            .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
    })
}

fn no_body(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

fn add_vary(headers: &mut HeaderMap) {
    let present = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|f| {
                let f = f.trim();
                f == "*" || f.eq_ignore_ascii_case("accept-encoding")
            })
        })
    });
    if !present {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ae(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn accept_encoding_negotiation() {
        assert!(accepts_gzip(&ae("gzip")));
        assert!(accepts_gzip(&ae("br, gzip;q=0.5, deflate")));
        assert!(accepts_gzip(&ae("*")));
        assert!(!accepts_gzip(&ae("gzip;q=0")));
        assert!(!accepts_gzip(&ae("*, gzip;q=0")));
        assert!(!accepts_gzip(&ae("identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
