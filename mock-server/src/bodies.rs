//! Request bodies: `POST /api/fs/upload` (octet-stream, streamed, capped, hashed, never stored)
//! and `POST /api/mock/body` (JSON, capped, validated). Both report the length, the sha256 and
//! when the first and last bytes arrived, which tells a buffering proxy from a streaming one.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::params::{header_str, json_response, Params, Reject};
use crate::{now_us, AppState};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/fs/upload", post(upload))
        .route("/api/mock/body", post(json_body))
}

/// What the backend saw of a request body.
#[derive(Debug, Serialize)]
struct BodyReport<'a> {
    instance: &'a str,
    bytes: u64,
    sha256: String,
    /// When the handler got the request head.
    received_at_us: u64,
    first_byte_at_us: Option<u64>,
    last_byte_at_us: Option<u64>,
}

async fn upload(
    State(state): State<AppState>,
    params: Params,
    req: Request,
) -> Result<Response, Reject> {
    if params.get("path").is_none_or(str::is_empty) {
        return Err(unread(
            req,
            Reject::bad_request("missing path query parameter"),
        ));
    }
    if let Err(reject) = require_type(req.headers(), "application/octet-stream") {
        return Err(unread(req, reject));
    }
    let limit = state.profile().upload_limit();
    let (report, _) = receive(state.instance(), req, limit, false).await?;
    Ok(report_response(&report))
}

async fn json_body(State(state): State<AppState>, req: Request) -> Result<Response, Reject> {
    if let Err(reject) = require_type(req.headers(), "application/json") {
        return Err(unread(req, reject));
    }
    let limit = state.profile().json_limit();
    let (report, body) = receive(state.instance(), req, limit, true).await?;
    // body-parser takes an empty body as `{}`; anything else must parse.
    if !body.is_empty() {
        serde_json::from_slice::<serde::de::IgnoredAny>(&body)
            .map_err(|e| Reject::bad_request(format!("invalid JSON: {e}")))?;
    }
    Ok(report_response(&report))
}

/// A refusal before the body was read: the body is discarded in the background.
fn unread(req: Request, reject: Reject) -> Reject {
    drain_in_background(req.into_body().into_data_stream());
    reject
}

fn report_response(report: &BodyReport<'_>) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::to_string(report).expect("report serializes"),
    )
}

/// 415 unless the media type (parameters ignored) is `expected`.
fn require_type(headers: &HeaderMap, expected: &str) -> Result<(), Reject> {
    let got = header_str(headers, header::CONTENT_TYPE).unwrap_or("");
    let media = got.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(Reject::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported media type {got:?}: expected {expected}"),
        ))
    }
}

fn too_large(limit: u64) -> Reject {
    Reject::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request entity too large: the limit is {limit} bytes"),
    )
}

/// After a 413 the rest of the body is read and discarded in the background, as Node does
/// (`req._dump()`): the client can finish sending and read the answer instead of a reset.
/// Bounded so that a client cannot keep the mock busy.
const DRAIN_BUDGET: u64 = 256 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(30);

fn drain_in_background(mut stream: BodyStream) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            let mut drained = 0u64;
            while let Some(Ok(chunk)) = stream.next().await {
                drained += chunk.len() as u64;
                if drained > DRAIN_BUDGET {
                    break;
                }
            }
        })
        .await;
    });
}

type BodyStream = axum::body::BodyDataStream;

/// Streams the body through the hasher, chunk by chunk; keeps the bytes only when `keep`
/// (JSON must be parsed; uploads are never held whole, nor written anywhere).
async fn receive<'a>(
    instance: &'a str,
    req: Request,
    limit: u64,
    keep: bool,
) -> Result<(BodyReport<'a>, Vec<u8>), Reject> {
    let received_at_us = now_us();
    let declared = header_str(req.headers(), header::CONTENT_LENGTH)
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut stream = Body::into_data_stream(req.into_body());
    // Refuse before reading a byte when the length is declared.
    if declared.is_some_and(|n| n > limit) {
        drain_in_background(stream);
        return Err(too_large(limit));
    }
    let mut kept = Vec::new();
    if keep {
        kept.reserve(declared.unwrap_or(0) as usize);
    }
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let (mut first, mut last) = (None, None);
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| Reject::bad_request(format!("reading the body failed: {e}")))?;
        if chunk.is_empty() {
            continue;
        }
        let at = now_us();
        first.get_or_insert(at);
        last = Some(at);
        bytes += chunk.len() as u64;
        if bytes > limit {
            drain_in_background(stream);
            return Err(too_large(limit));
        }
        hasher.update(&chunk);
        if keep {
            kept.extend_from_slice(&chunk);
        }
    }
    let report = BodyReport {
        instance,
        bytes,
        sha256: hex::encode(hasher.finalize()),
        received_at_us,
        first_byte_at_us: first,
        last_byte_at_us: last,
    };
    Ok((report, kept))
}
