//! A plain-HTTP listener that redirects to HTTPS: `tls.redirect`. What a browser does with the
//! redirect decides what survives it: a `301`/`302` (or `303`) makes it repeat a POST as a GET
//! without its body (Fetch, "HTTP-redirect fetch"), so an upload sent to the `http://` address
//! is lost; `307`/`308` keep the method and the body. An EventSource follows any redirect of its
//! GET and streams from the new URL. The check sends both to the plain listener of a config
//! that also has a TLS listener, follows each redirect once as the browser would (to the site's
//! name, which the run resolves to the TLS listener), and notes HSTS on the TLS answers.
//!
//! Graded on the plain listener's own row (`h1`); a plain listener that serves the site itself
//! (no redirect) is a skip: the other checks of that row grade it.

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, LOCATION};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::client::{
    body_bytes, header, http_client, read_ticks, request, snippet, within, EXCHANGE_TIMEOUT,
};
use super::sse::{routes, tick_path, tick_window};
use super::{CheckInfo, Grade, Outcome, Target};
use crate::tls::Transport;

pub const TLS_REDIRECT: CheckInfo = CheckInfo {
    id: "tls.redirect",
    requirement: "A plain-HTTP listener that redirects to HTTPS keeps each request: 307/308 for an upload (a browser repeats a POST answered 301/302 as a GET, without its body), and an SSE request redirected to https:// streams there",
    sign: "Uploads sent to the http:// address are lost (the browser repeats a POST answered 301/302 as a GET without its body), or the redirect to https:// leads to nothing",
    fix: "Redirect with 308, which keeps the method and the body: nginx `return 308 https://$host$request_uri;` (certbot writes 301), HAProxy `http-request redirect scheme https code 308`; Caddy's automatic HTTPS redirect is already 308",
    long: false,
    bulky: false,
    needs_ui_password: false,
    browser: false,
};

/// An upload a browser would send (a small file: body limits are `body.large`'s business).
const UPLOAD_BYTES: usize = 512 * 1024;
const UPLOAD_PATH: &str = "/api/fs/upload?path=suite%2Fredirect.bin";
/// Ticks read after following the SSE redirect: enough to see the stream live.
const TICKS_WANTED: usize = 3;

/// What the plain listener answered to one request.
struct PlainAnswer {
    status: Option<u16>,
    location: Option<String>,
    /// `X-Mock-Instance`: the request reached the backend (no redirect).
    instance: Option<String>,
    error: Option<String>,
}

impl PlainAnswer {
    /// The https:// URL on the site's name the answer redirects to, when it is such a redirect.
    fn https_location(&self, host: &str) -> Option<url::Url> {
        let status = self.status?;
        if !(300..400).contains(&status) {
            return None;
        }
        let url = url::Url::parse(self.location.as_deref()?).ok()?;
        (url.scheme() == "https" && url.host_str().is_some_and(|h| h.eq_ignore_ascii_case(host)))
            .then_some(url)
    }

    fn to_json(&self) -> Value {
        json!({"status": self.status, "location": self.location, "instance": self.instance, "error": self.error})
    }

    fn describe(&self) -> String {
        match (self.status, &self.location, &self.error) {
            (_, _, Some(e)) => e.clone(),
            (Some(s), Some(l), _) => format!("{s} to {l}"),
            (Some(s), None, _) if self.instance.is_some() => format!("{s} from the backend"),
            (Some(s), None, _) => format!("{s}"),
            (None, _, None) => "no answer".into(),
        }
    }
}

/// The run's TLS listener as a browser reaches it after the redirect: the site's name resolved
/// to it, `h2` and `http/1.1` offered by ALPN.
fn over_tls(target: &Target) -> Option<Target> {
    let mut tls = target.clone();
    tls.addr = target.tls_listener?;
    tls.transport = Transport::H2;
    Some(tls)
}

/// `path?query` of a URL.
fn path_of(url: &url::Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

pub async fn redirect(target: &Target) -> Outcome {
    let info = &TLS_REDIRECT;
    if target.transport != Transport::H1 {
        return info
            .skip("graded on the plain listener's own row (h1): the redirect is its answer");
    }
    let (Some(tls), true) = (over_tls(target), target.trust.is_some()) else {
        return info.skip("no TLS listener besides the plain one: nothing to redirect to");
    };
    let payload: Bytes = (0..UPLOAD_BYTES)
        .map(|i| (i * 31 % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let sse_route = routes(target.profile)[0];
    let sse_path = tick_path(sse_route);
    let client = http_client(target);
    let post = request(&client, Method::POST, target, UPLOAD_PATH)
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(payload.clone());
    let get = request(&client, Method::GET, target, &sse_path)
        .header("accept", "text/event-stream")
        .header("cache-control", "no-cache");
    let (post_answer, sse_answer) = tokio::join!(ask_plain(post), ask_plain(get));
    let post_to = post_answer.https_location(&target.host);
    let sse_to = sse_answer.https_location(&target.host);
    let mut m = json!({
        "plain_post": {"path": UPLOAD_PATH, "bytes": UPLOAD_BYTES},
        "plain_sse": {"path": sse_path},
        "tls_listener": tls.addr.to_string(),
    });
    m["plain_post"]["answer"] = post_answer.to_json();
    m["plain_sse"]["answer"] = sse_answer.to_json();
    let expected = format!(
        "from the plain listener, a POST upload ({UPLOAD_BYTES} bytes) redirected with 307/308 to https://{}, where it arrives whole; an SSE request redirected to https://{} streams ticks there",
        target.host, target.host
    );
    if post_to.is_none() && sse_to.is_none() {
        return info.outcome(
            Grade::Skip,
            expected,
            format!(
                "the plain listener does not redirect to https://{} (POST: {}; SSE: {}): it answers for itself, and the other checks of this row grade it",
                target.host,
                post_answer.describe(),
                sse_answer.describe()
            ),
            m,
        );
    }
    // Losing the upload is the browser's doing with a permanent answer; a redirect that
    // leads nowhere, or a stream that does not arrive, is the proxy's break.
    let mut lost: Vec<String> = Vec::new();
    let mut broken: Vec<String> = Vec::new();
    let mut hsts: Vec<Value> = Vec::new();
    match (&post_to, post_answer.status) {
        (Some(to), Some(status @ (301 | 302 | 303))) => lost.push(format!(
            "the POST upload is answered {status} to {to}: a browser repeats it there as a GET without its body"
        )),
        (Some(to), Some(status)) => {
            let (summary, seen) = repost(&tls, to, payload).await;
            m["followed_post"] = summary.clone();
            hsts.push(json!({"url": to.as_str(), "strict_transport_security": seen.hsts}));
            if let Some(problem) = seen.problem {
                broken.push(format!("the POST upload answered {status} to {to}, then there: {problem}"));
            }
        }
        _ => {}
    }
    if post_to.is_none() {
        if let Some(status) = post_answer.status.filter(|s| (300..400).contains(s)) {
            broken.push(format!(
                "the POST upload is answered {status} to {:?}, not to https://{}",
                post_answer.location, target.host
            ));
        }
    }
    match &sse_to {
        Some(to) => {
            let start = Instant::now();
            let read =
                read_ticks(&tls, &path_of(to), false, TICKS_WANTED, tick_window(start)).await;
            hsts.push(json!({"url": to.as_str(), "strict_transport_security": header(&read.headers, "strict-transport-security")}));
            let ticks = read.ticks.len();
            m["followed_sse"] = read.to_json();
            if read.status != Some(200) || ticks == 0 {
                broken.push(format!(
                    "the SSE request is redirected to {to}, but there: {} ({ticks} ticks)",
                    read.end
                ));
            }
        }
        None => {
            if let Some(status) = sse_answer.status.filter(|s| (300..400).contains(s)) {
                broken.push(format!(
                    "the SSE request is answered {status} to {:?}, not to https://{}",
                    sse_answer.location, target.host
                ));
            }
        }
    }
    m["hsts"] = Value::Array(hsts.clone());
    let hsts_note = match hsts
        .iter()
        .find_map(|h| h["strict_transport_security"].as_str())
    {
        Some(value) => format!("HSTS on the TLS answers: {value:?}"),
        None => "no Strict-Transport-Security on the TLS answers".to_string(),
    };
    m["hsts_note"] = json!(hsts_note);
    let (grade, actual) = if !broken.is_empty() {
        (Grade::Fail, [broken, lost].concat().join("; "))
    } else if !lost.is_empty() {
        (Grade::Warn, lost.join("; "))
    } else {
        (
            Grade::Pass,
            format!(
                "POST {}; SSE {}; {hsts_note}",
                post_answer.describe(),
                if sse_to.is_some() {
                    format!("{}, ticks stream over TLS", sse_answer.describe())
                } else {
                    sse_answer.describe()
                }
            ),
        )
    };
    let actual = if grade == Grade::Pass {
        actual
    } else {
        format!("{actual} ({hsts_note})")
    };
    info.outcome(grade, expected, actual, m)
}

/// Sends one request to the plain listener and records the head of its answer, without
/// following it (an SSE answer from the backend never ends: its body is not read).
async fn ask_plain(req: reqwest::RequestBuilder) -> PlainAnswer {
    match within(
        EXCHANGE_TIMEOUT,
        "request to the plain listener",
        req.send(),
    )
    .await
    {
        Ok(resp) => PlainAnswer {
            status: Some(resp.status().as_u16()),
            location: header(resp.headers(), LOCATION.as_str()),
            instance: header(resp.headers(), "x-mock-instance"),
            error: None,
        },
        Err(e) => PlainAnswer {
            status: None,
            location: None,
            instance: None,
            error: Some(e),
        },
    }
}

/// What the TLS listener did with a re-sent upload.
struct Reposted {
    problem: Option<String>,
    hsts: Option<String>,
}

/// Re-sends the upload to `to` as the browser does after a 307/308: same method, same body.
async fn repost(tls: &Target, to: &url::Url, payload: Bytes) -> (Value, Reposted) {
    let client = http_client(tls);
    let len = payload.len();
    let sent = request(&client, Method::POST, tls, &path_of(to))
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(payload)
        .send();
    let resp = match within(EXCHANGE_TIMEOUT, "re-sent upload", sent).await {
        Ok(r) => r,
        Err(e) => {
            return (
                json!({"url": to.as_str(), "error": e}),
                Reposted {
                    problem: Some(e),
                    hsts: None,
                },
            )
        }
    };
    let status = resp.status();
    let version = format!("{:?}", resp.version());
    let hsts = header(resp.headers(), "strict-transport-security");
    let body = body_bytes(resp, EXCHANGE_TIMEOUT).await.unwrap_or_default();
    let received = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|r| r.get("bytes").and_then(Value::as_u64));
    let problem = if !status.is_success() {
        Some(format!("{status}: {:?}", snippet(&body, 120)))
    } else if received != Some(len as u64) {
        Some(format!("the backend received {received:?} of {len} bytes"))
    } else {
        None
    };
    let j = json!({"url": to.as_str(), "status": status.as_u16(), "http_version": version, "bytes_received": received});
    (j, Reposted { problem, hsts })
}
