//! Request bodies through the proxy: `body.large` (a 50 MB upload and a 50 MB JSON body reach
//! the backend byte for byte) and `body.streaming` (the proxy passes an upload on while it is
//! still being sent, as `proxy_request_buffering off` does).
//!
//! Bodies are generated once per process and streamed from memory in 64 KiB slices, so several
//! proxies checked at once share one copy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mock_server::{now_us, Profile};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::client::{body_bytes, http_client, ms_since, request, snippet, within};
use super::{CheckInfo, Grade, Outcome, Target};

pub const BODY_LARGE: CheckInfo = CheckInfo {
    id: "body.large",
    requirement: "Large request bodies for attachments and file operations",
    sign: "File uploads fail",
    fix: "client_max_body_size 50M; (client_body_buffer_size 50M;) — increase body size limits if users upload files",
    long: false,
    bulky: true,
    needs_ui_password: false,
    browser: false,
};

pub const BODY_STREAMING: CheckInfo = CheckInfo {
    id: "body.streaming",
    requirement: "proxy_request_buffering off: uploads reach the backend while they are sent",
    sign: "Uploads reach the backend only once the proxy has buffered the whole body (slow or stalled large uploads)",
    fix: "proxy_request_buffering off;",
    long: false,
    bulky: false,
    needs_ui_password: false,
    browser: false,
};

/// "50 MB" as the guide's attachments: 50,000,000 bytes, under both the guide's
/// `client_max_body_size 50M` (50 MiB) and the backend's 50 MiB JSON limit.
const LARGE: u64 = 50_000_000;
/// One upload may take this long: 50 MB over loopback takes well under a second, a proxy that
/// spools to disk a few seconds.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(120);
const SLICE: usize = 64 * 1024;
/// body.streaming: 512 KiB (below any default body cap, so only buffering is measured), the
/// second half sent after a 2 s pause.
const STREAMED: u64 = 512 * 1024;
const PAUSE: Duration = Duration::from_secs(2);

/// The body sizes for a profile: 50 MB, or 90% of a smaller backend limit (DorkOS: 1 MiB JSON,
/// 10 MiB uploads), so the backend itself never refuses them.
pub(crate) fn large_sizes(profile: Profile) -> (u64, u64) {
    let fit = |limit: u64| LARGE.min(limit - limit / 10);
    (fit(profile.upload_limit()), fit(profile.json_limit()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Octets,
    Json,
}

impl Kind {
    fn content_type(self) -> &'static str {
        match self {
            Kind::Octets => "application/octet-stream",
            Kind::Json => "application/json",
        }
    }
}

struct Payload {
    kind: Kind,
    bytes: Bytes,
    sha256: String,
}

/// The payload of a kind and length, generated on first use (off the async threads: hashing
/// 50 MB must not stall the tick timestamps of checks running at the same time).
async fn payload(kind: Kind, len: u64) -> Arc<Payload> {
    static CACHE: tokio::sync::Mutex<Vec<Arc<Payload>>> = tokio::sync::Mutex::const_new(Vec::new());
    let mut cache = CACHE.lock().await;
    if let Some(p) = cache
        .iter()
        .find(|p| p.kind == kind && p.bytes.len() as u64 == len)
    {
        return p.clone();
    }
    let p = tokio::task::spawn_blocking(move || {
        let bytes = generate(kind, len as usize);
        let sha256 = hex::encode(Sha256::digest(&bytes));
        Arc::new(Payload {
            kind,
            bytes,
            sha256,
        })
    })
    .await
    .expect("payload generation does not panic");
    cache.push(p.clone());
    p
}

/// Deterministic content: pseudo-random bytes, or a JSON object padded to exactly `len` bytes.
fn generate(kind: Kind, len: usize) -> Bytes {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    match kind {
        Kind::Octets => {
            let mut v = Vec::with_capacity(len + 8);
            while v.len() < len {
                v.extend_from_slice(&next().to_le_bytes());
            }
            v.truncate(len);
            Bytes::from(v)
        }
        Kind::Json => {
            const HEAD: &[u8] = br#"{"suite":"body.large","pad":""#;
            const TAIL: &[u8] = br#""}"#;
            const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
            let pad = len.saturating_sub(HEAD.len() + TAIL.len());
            let mut v = Vec::with_capacity(len);
            v.extend_from_slice(HEAD);
            v.extend((0..pad).map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize]));
            v.extend_from_slice(TAIL);
            Bytes::from(v)
        }
    }
}

/// What one upload showed: client side and the backend's report.
struct Upload {
    j: Value,
    /// Empty when the backend got every byte with a 2xx.
    problem: Option<String>,
    report: Option<Value>,
    /// When the client resumed sending after the pause (body.streaming only).
    resumed_at_us: u64,
}

/// POSTs `payload` to `path` with its Content-Length (as a browser sends a file), streamed in
/// slices; with `pause`, the second half goes out only after it.
async fn upload(
    target: &Target,
    path: &str,
    payload: Arc<Payload>,
    pause: Option<Duration>,
) -> Upload {
    let len = payload.bytes.len();
    let resumed = Arc::new(AtomicU64::new(0));
    let split = if pause.is_some() { len / 2 } else { len };
    let body_stream = {
        let payload = payload.clone();
        let resumed = resumed.clone();
        futures::stream::unfold(0usize, move |offset| {
            let payload = payload.clone();
            let resumed = resumed.clone();
            async move {
                if offset >= len {
                    return None;
                }
                if offset == split {
                    if let Some(p) = pause {
                        tokio::time::sleep(p).await;
                        resumed.store(now_us(), Ordering::SeqCst);
                    }
                }
                let end = (offset + SLICE)
                    .min(len)
                    .min(if offset < split { split } else { len });
                Some((
                    Ok::<Bytes, std::io::Error>(payload.bytes.slice(offset..end)),
                    end,
                ))
            }
        })
    };
    let client = http_client(target);
    let start = Instant::now();
    let started_at_us = now_us();
    let sent = request(&client, Method::POST, target, path)
        .header(CONTENT_TYPE, payload.kind.content_type())
        .header(CONTENT_LENGTH, len)
        .body(reqwest::Body::wrap_stream(body_stream))
        .send();
    let mut j = json!({
        "path": path,
        "content_type": payload.kind.content_type(),
        "bytes_sent": len,
        "sha256_sent": payload.sha256,
        "started_at_us": started_at_us,
    });
    let mut out = Upload {
        j: Value::Null,
        problem: None,
        report: None,
        resumed_at_us: 0,
    };
    let response = match within(UPLOAD_TIMEOUT, "upload", sent).await {
        Ok(r) => r,
        Err(e) => {
            j["error"] = json!(e);
            j["failed_after_ms"] = json!(ms_since(start));
            out.problem = Some(e);
            out.j = j;
            return out;
        }
    };
    let status = response.status();
    j["status"] = json!(status.as_u16());
    j["response_ms"] = json!(ms_since(start));
    out.resumed_at_us = resumed.load(Ordering::SeqCst);
    if pause.is_some() {
        j["resumed_at_us"] = json!(out.resumed_at_us);
    }
    let body = match body_bytes(response, Duration::from_secs(15)).await {
        Ok(b) => b,
        Err(e) => {
            out.problem = Some(format!("{status}, then {e}"));
            j["error"] = json!(e);
            out.j = j;
            return out;
        }
    };
    j["total_ms"] = json!(ms_since(start));
    let report: Option<Value> = serde_json::from_slice(&body).ok();
    let received = report
        .as_ref()
        .and_then(|r| r.get("bytes"))
        .and_then(Value::as_u64);
    let sha = report
        .as_ref()
        .and_then(|r| r.get("sha256"))
        .and_then(Value::as_str)
        .map(str::to_string);
    j["bytes_received"] = json!(received);
    j["sha256_received"] = json!(sha);
    j["report"] = report.clone().unwrap_or_else(|| json!(snippet(&body, 200)));
    out.problem = if !status.is_success() {
        Some(format!("{status}: {:?}", snippet(&body, 120)))
    } else if received != Some(len as u64) {
        Some(format!("backend received {received:?} of {len} bytes"))
    } else if sha.as_deref() != Some(payload.sha256.as_str()) {
        Some(format!(
            "backend's SHA-256 {sha:?} differs from the one sent"
        ))
    } else {
        None
    };
    out.report = report;
    out.j = j;
    out
}

pub async fn large(target: &Target) -> Outcome {
    let info = &BODY_LARGE;
    let (upload_len, json_len) = large_sizes(target.profile);
    let file = upload(
        target,
        "/api/fs/upload?path=suite%2Fbody-large.bin",
        payload(Kind::Octets, upload_len).await,
        None,
    )
    .await;
    let json_body = upload(
        target,
        "/api/mock/body",
        payload(Kind::Json, json_len).await,
        None,
    )
    .await;
    let expected = format!(
        "POST /api/fs/upload ({upload_len} bytes application/octet-stream) and POST /api/mock/body ({json_len} bytes JSON): 2xx, and the backend received every byte (length and SHA-256 match)"
    );
    let problems: Vec<String> = [("upload", &file), ("JSON body", &json_body)]
        .iter()
        .filter_map(|(what, u)| u.problem.as_ref().map(|p| format!("{what}: {p}")))
        .collect();
    let m = json!({"uploads": [file.j, json_body.j]});
    info.pass_unless(
        &problems,
        expected,
        "both bodies arrived whole (length and SHA-256 match), 2xx",
        m,
    )
}

pub async fn streaming(target: &Target) -> Outcome {
    let info = &BODY_STREAMING;
    let expected = format!(
        "the backend sees the first bytes of a {STREAMED}-byte upload before the client sends its second half ({} ms later)",
        PAUSE.as_millis()
    );
    let first = streamed_upload(target).await;
    // A first byte that came late is measured again, once, as `sse.stream` reads a late route
    // again: on a loaded machine the way into a container can take longer than the pause, and
    // a proxy that buffers the body is late both times. The first measurement stays in the
    // evidence.
    let (measured, late_first) = match &first {
        Streamed::Late { ms, .. } => (streamed_upload(target).await, Some(*ms)),
        _ => (first, None),
    };
    let late_note = late_first
        .map(|ms| format!("; a first upload reached the backend {ms:.0} ms after the second half was sent, measured again"))
        .unwrap_or_default();
    let (grade, actual, mut m) = match measured {
        Streamed::Failed(actual, m) => (Grade::Fail, format!("{actual}{late_note}"), m),
        Streamed::Ahead { ms, m } => (Grade::Pass, format!("the backend had the first bytes {ms:.0} ms before the second half was sent{late_note}"), m),
        Streamed::Late { ms, m } => {
            let twice = late_first.map(|first| format!(" (the first upload: {first:.0} ms)")).unwrap_or_default();
            (Grade::Warn, format!("the backend saw the first byte only {ms:.0} ms after the second half was sent{twice}: the proxy buffered the whole body"), m)
        }
    };
    if let Some(late) = late_first {
        m["late_first_upload_ms"] = json!(late);
    }
    info.outcome(grade, expected, actual, m)
}

/// One paused upload of `body.streaming`, judged.
enum Streamed {
    /// The upload failed, or the backend's report lacks its first byte's time.
    Failed(String, Value),
    /// The backend had the first bytes `ms` before the client resumed.
    Ahead { ms: f64, m: Value },
    /// The backend saw the first byte `ms` after the client resumed.
    Late { ms: f64, m: Value },
}

async fn streamed_upload(target: &Target) -> Streamed {
    let u = upload(
        target,
        "/api/fs/upload?path=suite%2Fbody-streaming.bin",
        payload(Kind::Octets, STREAMED).await,
        Some(PAUSE),
    )
    .await;
    let mut m = u.j;
    if let Some(problem) = u.problem {
        return Streamed::Failed(format!("the upload itself failed: {problem}"), m);
    }
    let first = u
        .report
        .as_ref()
        .and_then(|r| r.get("first_byte_at_us"))
        .and_then(Value::as_u64);
    let Some(first) = first else {
        return Streamed::Failed("the backend's report has no first_byte_at_us".into(), m);
    };
    let ahead_ms = (u.resumed_at_us as i64 - first as i64) as f64 / 1000.0;
    m["first_byte_before_resume_ms"] = json!(ahead_ms);
    if first < u.resumed_at_us {
        Streamed::Ahead { ms: ahead_ms, m }
    } else {
        Streamed::Late { ms: -ahead_ms, m }
    }
}
