//! Compression through the proxy: `compress.single` (a body is compressed in one layer only, and
//! its `Content-Encoding` matches its bytes) and `compress.sse` (SSE is not compressed, or at
//! least not delayed by compression).

use std::io::Read;

use flate2::read::{GzDecoder, ZlibDecoder};
use futures::future::join_all;
use mock_server::Profile;
use reqwest::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::client::{
    body_bytes, get, header, http_client, read_ticks, within, SseRead, EXCHANGE_TIMEOUT,
};
use super::sse::{read_all_routes, reread_late, tick_path, tick_plan, tick_window, timeliness, TICKS};
use super::{CheckInfo, Grade, Outcome, Target};

pub const COMPRESS_SINGLE: CheckInfo = CheckInfo {
    id: "compress.single",
    requirement: "Keep compression enabled in only one layer (OpenChamber already gzips bodies of 1 KiB and more): no double compression, no wrong Content-Encoding",
    sign: "Double-compressed responses or incorrect Content-Encoding headers (browser: ERR_CONTENT_DECODING_FAILED)",
    fix: "Disable gzip on the proxy if OpenChamber is already compressing responses: gzip off; (Cloudflare: Rules → Compression → disable)",
    long: false,
    bulky: false,
    needs_ui_password: false,
    browser: false,
};

pub const COMPRESS_SSE: CheckInfo = CheckInfo {
    id: "compress.sse",
    requirement: "Disable gzip on SSE routes (the proxy must not compress and buffer live traffic)",
    sign: "Everything works locally, but breaks only behind the proxy (the proxy is compressing and buffering live traffic)",
    fix: "gzip off; on the SSE routes (and on the proxy host if the backend already compresses)",
    long: false,
    bulky: false,
    needs_ui_password: false,
    browser: false,
};

/// A body above the backend's 1024-byte gzip threshold, and one below it, each asked for with
/// and without `Accept-Encoding: gzip`.
const CASES: [(usize, bool); 4] = [(4096, true), (4096, false), (200, true), (200, false)];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

pub async fn single(target: &Target) -> Outcome {
    let info = &COMPRESS_SINGLE;
    if target.profile == Profile::Dorkos {
        return info
            .skip("the DorkOS backend never compresses: there is no second layer to clash with");
    }
    let cases = join_all(
        CASES
            .iter()
            .map(|&(size, gzip)| json_case(target, size, gzip)),
    )
    .await;
    let expected = "GET /api/mock/json?size=4096 and ?size=200, with and without Accept-Encoding: gzip: each body decodes exactly once, per its Content-Encoding, to the backend's identity bytes (SHA-256 match); gzip only when the client accepts it".to_string();
    let problems: Vec<String> = cases.iter().filter_map(|(p, _)| p.clone()).collect();
    let summary: Vec<String> = cases
        .iter()
        .map(|(_, j)| {
            format!(
                "{} bytes{}: {}",
                j["size"],
                if j["accept_gzip"] == json!(true) {
                    " (gzip accepted)"
                } else {
                    ""
                },
                j["content_encoding"].as_str().unwrap_or("identity")
            )
        })
        .collect();
    let m = json!({"cases": cases.into_iter().map(|(_, j)| j).collect::<Vec<_>>()});
    let actual = format!(
        "every body decodes once to the original ({})",
        summary.join(", ")
    );
    info.pass_unless(&problems, expected, actual, m)
}

/// One request for a JSON body of `size` identity bytes; the problem, if any, and the evidence.
async fn json_case(target: &Target, size: usize, gzip: bool) -> (Option<String>, Value) {
    let label = format!(
        "{size} bytes{}",
        if gzip {
            " with gzip accepted"
        } else {
            " without Accept-Encoding"
        }
    );
    let client = http_client(target);
    let mut request = get(&client, target, &format!("/api/mock/json?size={size}"));
    if gzip {
        request = request.header(ACCEPT_ENCODING, "gzip");
    }
    let mut j = json!({"size": size, "accept_gzip": gzip});
    let response = match within(EXCHANGE_TIMEOUT, "response", request.send()).await {
        Ok(r) => r,
        Err(e) => {
            j["error"] = json!(e);
            return (Some(format!("{label}: {e}")), j);
        }
    };
    let status = response.status().as_u16();
    let h = response.headers().clone();
    let ce = header(&h, CONTENT_ENCODING.as_str()).map(|v| v.trim().to_ascii_lowercase());
    let identity_sha = header(&h, "x-mock-identity-sha256");
    j["status"] = json!(status);
    j["content_encoding"] = json!(ce);
    j["content_length"] = json!(header(&h, CONTENT_LENGTH.as_str()));
    j["identity_sha256"] = json!(identity_sha);
    j["identity_length"] = json!(header(&h, "x-mock-identity-length"));
    let raw = match body_bytes(response, EXCHANGE_TIMEOUT).await {
        Ok(b) => b,
        Err(e) => {
            j["error"] = json!(e);
            return (Some(format!("{label}: {status}, then {e}")), j);
        }
    };
    j["raw_bytes"] = json!(raw.len());
    let problem = judge_body(
        status,
        gzip,
        ce.as_deref(),
        &raw,
        identity_sha.as_deref(),
        &mut j,
    );
    j["problem"] = json!(problem);
    (problem.map(|p| format!("{label}: {p}")), j)
}

/// Decodes `raw` once per `ce` and compares it with the backend's identity hash.
fn judge_body(
    status: u16,
    gzip_accepted: bool,
    ce: Option<&str>,
    raw: &[u8],
    identity_sha: Option<&str>,
    j: &mut Value,
) -> Option<String> {
    if status != 200 {
        return Some(format!("status {status}"));
    }
    let Some(identity_sha) = identity_sha else {
        return Some(
            "X-Mock-Identity-Sha256 missing from the response: the body cannot be verified".into(),
        );
    };
    let decoded = match ce {
        None | Some("identity") => Ok(raw.to_vec()),
        Some("gzip") | Some("x-gzip") => decode(GzDecoder::new(raw)),
        Some("deflate") => decode(ZlibDecoder::new(raw)),
        Some(other) => {
            return Some(format!(
                "Content-Encoding {other:?}, which the client did not ask for"
            ))
        }
    };
    let decoded = match decoded {
        Ok(d) => d,
        Err(e) => {
            return Some(format!(
                "Content-Encoding {:?} but the body does not decode as such ({e}): ERR_CONTENT_DECODING_FAILED",
                ce.unwrap_or("")
            ))
        }
    };
    let sha = hex::encode(Sha256::digest(&decoded));
    j["decoded_bytes"] = json!(decoded.len());
    j["decoded_sha256"] = json!(sha);
    let compressed = !matches!(ce, None | Some("identity"));
    if compressed && !gzip_accepted {
        return Some(format!(
            "{} sent to a client that did not accept it",
            ce.unwrap_or("")
        ));
    }
    if sha.eq_ignore_ascii_case(identity_sha.trim()) {
        return None;
    }
    Some(if decoded.starts_with(&GZIP_MAGIC) && compressed {
        "double gzip: decoding once leaves gzip data, not the JSON".to_string()
    } else if decoded.starts_with(&GZIP_MAGIC) {
        "gzip bytes without Content-Encoding: gzip".to_string()
    } else {
        format!(
            "the decoded body ({} bytes) differs from the backend's",
            decoded.len()
        )
    })
}

fn decode(mut reader: impl Read) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    reader.read_to_end(&mut out)?;
    Ok(out)
}

pub async fn sse(target: &Target) -> Outcome {
    let info = &COMPRESS_SSE;
    let (reads, late_first) = reread_late(target, true, read_all_routes(target, true).await).await;
    // A route that gave no stream with gzip offered is read again without it: on time there, the
    // compression is what holds the stream; silent there too, there is no stream whose
    // compression could be judged (sse.stream reports it).
    let unanswered: Vec<&str> = reads
        .iter()
        .filter(|r| r.status != Some(200))
        .map(|r| r.path_route())
        .collect();
    let start = Instant::now();
    let identity: Vec<SseRead> = join_all(unanswered.iter().map(|route| async move {
        read_ticks(target, &tick_path(route), false, TICKS, tick_window(start)).await
    }))
    .await;
    let expected = "SSE requested with Accept-Encoding: gzip arrives uncompressed on every route (warn: compressed but flushed per event; fail: compression delays ticks or holds the stream)".to_string();
    let mut grade = Grade::Pass;
    let mut judged = 0;
    let mut lines = Vec::new();
    let mut not_judged = Vec::new();
    let mut paths = Vec::new();
    for read in &reads {
        let verdict = timeliness(read);
        let encoding = read
            .content_encoding
            .as_deref()
            .map(str::trim)
            .filter(|ce| !ce.eq_ignore_ascii_case("identity"));
        let without_gzip = identity
            .iter()
            .find(|r| r.path_route() == read.path_route());
        let (route_grade, line) = match (read.status, encoding, without_gzip) {
            (Some(200), None, _) => (
                Some(Grade::Pass),
                format!("{}: not compressed ({})", read.path_route(), verdict.summary),
            ),
            (Some(200), Some(ce), _) => (
                Some(if verdict.on_time {
                    Grade::Warn
                } else {
                    Grade::Fail
                }),
                format!(
                    "{}: Content-Encoding {ce}, {}",
                    read.path_route(),
                    verdict.summary
                ),
            ),
            (_, _, Some(plain)) if timeliness(plain).on_time => (
                Some(Grade::Fail),
                format!(
                    "{}: with Accept-Encoding: gzip {}, without it all {TICKS} ticks on time: the compression holds the stream",
                    read.path_route(),
                    verdict.summary
                ),
            ),
            (_, _, plain) => (
                None,
                format!(
                    "{}: {} with Accept-Encoding: gzip, {} without",
                    read.path_route(),
                    verdict.summary,
                    plain.map(|p| timeliness(p).summary).unwrap_or_default()
                ),
            ),
        };
        match route_grade {
            Some(g) => {
                judged += 1;
                grade = grade.max(g);
                if g != Grade::Pass {
                    lines.push(line.clone());
                }
            }
            None => not_judged.push(line.clone()),
        }
        let mut j = read.to_json();
        j["grade"] = json!(route_grade);
        j["summary"] = json!(line);
        if let Some(plain) = without_gzip {
            j["without_gzip"] = plain.to_json();
        }
        paths.push(j);
    }
    let mut m = json!({"plan": tick_plan(), "paths": paths});
    if !late_first.is_empty() {
        m["late_first_reads"] = json!(late_first);
    }
    if judged == 0 {
        let example = reads
            .first()
            .map(|r| timeliness(r).summary)
            .unwrap_or_default();
        return info.skip(format!(
            "no SSE stream to judge: none of the {} routes answered, with or without Accept-Encoding: gzip ({example}); sse.stream reports it",
            reads.len()
        ));
    }
    let mut actual = if grade == Grade::Pass {
        format!("{judged} routes: not compressed")
    } else {
        lines.join("; ")
    };
    if !not_judged.is_empty() {
        actual.push_str(&format!(
            "; not judged (no stream with or without gzip): {}",
            not_judged.join("; ")
        ));
    }
    info.outcome(grade, expected, actual, m)
}
