//! The checks: one module per area of the guide. Each check carries its stable id, the guide's
//! sentence it tests and the failure sign a user would see, and grades a [`Target`] (a proxy
//! instance, or the mock itself as the control) with evidence.

pub mod auth;
pub mod balancing;
pub mod bodies;
pub mod browser;
mod client;

pub use client::Tick;
pub mod compression;
pub mod headers;
pub mod http2;
pub mod sse;
pub mod timeouts;
pub mod tls_redirect;
pub mod websocket;
pub mod websocket_h2;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use mock_server::Profile;

use crate::tls::{Transport, Trust};
use serde::{Deserialize, Serialize};

/// How a check ended, after Autobahn and Http11Probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grade {
    Pass,
    Warn,
    Fail,
    Skip,
    /// The check itself broke (a panic, an internal fault): counted as a failure, never a skip.
    Error,
}

impl std::fmt::Display for Grade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Grade::Pass => "pass",
            Grade::Warn => "warn",
            Grade::Fail => "fail",
            Grade::Skip => "skip",
            Grade::Error => "error",
        })
    }
}

/// What the catalogue says about one check: constant, shared by every run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CheckInfo {
    /// Stable id used in results, snapshots and the CLI (`sse.stream`).
    pub id: &'static str,
    /// The guide's requirement this check tests.
    pub requirement: &'static str,
    /// The failure sign from the guides a user would see when it fails.
    pub sign: &'static str,
    /// The fix the guides give for it.
    pub fix: &'static str,
    /// True when the check lasts about one idle period (`ws.idle`, `sse.idle`, `http.slow`).
    pub long: bool,
    /// True when the check pushes bulky bodies (50 MB): it runs after every run's timing
    /// checks, a few runs at a time.
    pub bulky: bool,
    /// True when the check needs the backends in UI-password mode (`auth.origin`): it runs
    /// alone, after the other short checks of its run.
    pub needs_ui_password: bool,
    /// True for the browser tier (`browser.*`): run in headless Chromium, only when a run is
    /// handed a browser context (`--browser`), never in an ordinary run.
    pub browser: bool,
}

/// One graded check with its evidence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub id: String,
    pub grade: Grade,
    /// What the guide requires, in terms of what was measured.
    pub expected: String,
    /// What was measured.
    pub actual: String,
    /// Failure sign a user would see (empty on pass).
    pub sign: String,
    /// The guide's fix (empty on pass).
    pub fix: String,
    /// Raw measurements (tick timings, hashes, headers seen...), check-specific.
    pub measurements: serde_json::Value,
    /// Wall time the check took, in milliseconds (volatile: redacted in snapshots).
    pub elapsed_ms: u64,
}

/// The default client address: on loopback but not 127.0.0.1, where the proxies connect from.
pub const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Where a check sends its traffic, and what it may assume about the backend behind it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Label for reports: `nginx@1.22/openchamber-guide.conf` or `direct`.
    pub label: String,
    /// The address the client connects to: the proxy's listener, or the mock for the control.
    pub addr: SocketAddr,
    /// The Host header a browser would send to this site.
    pub host: String,
    /// The address every check's client connects from ([`CLIENT_IP`] by default): not the
    /// proxy's own address, so the backend's view of the client (X-Forwarded-For, X-Real-IP)
    /// cannot be confused with the proxy's. `lb.sticky` adds clients of its own.
    pub client_ip: IpAddr,
    /// Profile of the backend(s) behind the target.
    pub profile: Profile,
    /// Instance ids of the backends behind the target (several for load-balanced configs).
    pub backends: Vec<String>,
    /// Idle period for `ws.idle`, `sse.idle` and `http.slow`.
    pub idle: Duration,
    /// True when the target is the mock itself (the control run).
    pub direct: bool,
    /// The UI password when the backends behind the target run in auth mode (only while
    /// `auth.origin` runs); `None` otherwise.
    pub ui_password: Option<String>,
    /// How the client reaches the target: plain HTTP/1.1, HTTP/1.1 over TLS or HTTP/2.
    pub transport: Transport,
    /// The run's certificate authority, the only one a TLS client trusts (set for TLS
    /// transports; `host` resolves to `addr`, so SNI and Host are the site's name).
    pub trust: Option<Trust>,
    /// The config's TLS listener, on every run of a config that has one (on a TLS transport
    /// it is `addr`): where the plain listener's redirect to `https://` leads (`tls.redirect`).
    pub tls_listener: Option<SocketAddr>,
}

impl CheckInfo {
    /// An outcome of this check with its evidence; the failure sign and the fix are attached to
    /// every `warn` and `fail` (a `skip` is not the proxy's fault, a `pass` needs no fix).
    pub fn outcome(
        &self,
        grade: Grade,
        expected: impl Into<String>,
        actual: impl Into<String>,
        measurements: serde_json::Value,
    ) -> Outcome {
        let blame = matches!(grade, Grade::Warn | Grade::Fail);
        Outcome {
            id: self.id.to_string(),
            grade,
            expected: expected.into(),
            actual: actual.into(),
            sign: if blame {
                self.sign.to_string()
            } else {
                String::new()
            },
            fix: if blame {
                self.fix.to_string()
            } else {
                String::new()
            },
            measurements,
            elapsed_ms: 0,
        }
    }

    /// `pass` with `pass_actual` when nothing went wrong, else `fail` with every problem
    /// (one per route or case) as its Actual.
    pub fn pass_unless(
        &self,
        problems: &[String],
        expected: impl Into<String>,
        pass_actual: impl Into<String>,
        measurements: serde_json::Value,
    ) -> Outcome {
        if problems.is_empty() {
            self.outcome(Grade::Pass, expected, pass_actual, measurements)
        } else {
            self.outcome(Grade::Fail, expected, problems.join("; "), measurements)
        }
    }

    /// A `skip`, with the reason as its Actual.
    pub fn skip(&self, reason: impl Into<String>) -> Outcome {
        self.outcome(Grade::Skip, "", reason, serde_json::Value::Null)
    }
}

/// Every check, in catalogue order (`shared/reference/checks.md`).
static CATALOGUE: [CheckInfo; 21] = [
    websocket::WS_UPGRADE,
    websocket::WS_TERMINAL,
    websocket::WS_IDLE,
    sse::SSE_STREAM,
    sse::SSE_HEADERS,
    sse::SSE_IDLE,
    timeouts::HTTP_SLOW,
    bodies::BODY_LARGE,
    bodies::BODY_STREAMING,
    compression::COMPRESS_SINGLE,
    compression::COMPRESS_SSE,
    headers::HEADERS_FORWARDED,
    auth::AUTH_ORIGIN,
    balancing::LB_STICKY,
    http2::H2_HEADERS,
    websocket_h2::H2_WEBSOCKET,
    tls_redirect::TLS_REDIRECT,
    browser::BROWSER_SSE,
    browser::BROWSER_WS,
    browser::BROWSER_UPLOAD,
    browser::BROWSER_RECONNECT,
];

/// Every check, in catalogue order.
pub fn catalogue() -> &'static [CheckInfo] {
    &CATALOGUE
}

/// The catalogue entry of one check id.
pub fn info(id: &str) -> Option<&'static CheckInfo> {
    CATALOGUE.iter().find(|c| c.id == id)
}

async fn dispatch(id: &str, target: &Target) -> Outcome {
    match id {
        "ws.upgrade" => websocket::upgrade(target).await,
        "ws.terminal" => websocket::terminal(target).await,
        "ws.idle" => websocket::idle(target).await,
        "sse.stream" => sse::stream(target).await,
        "sse.headers" => sse::headers(target).await,
        "sse.idle" => sse::idle(target).await,
        "http.slow" => timeouts::slow(target).await,
        "body.large" => bodies::large(target).await,
        "body.streaming" => bodies::streaming(target).await,
        "compress.single" => compression::single(target).await,
        "compress.sse" => compression::sse(target).await,
        "headers.forwarded" => headers::forwarded(target).await,
        "auth.origin" => auth::origin(target).await,
        "lb.sticky" => balancing::sticky(target).await,
        "h2.headers" => http2::headers(target).await,
        "h2.websocket" => websocket_h2::websocket(target).await,
        "tls.redirect" => tls_redirect::redirect(target).await,
        other => match info(other) {
            Some(info) if info.browser => info.skip(BROWSER_TIER_SKIP),
            _ => unknown(other),
        },
    }
}

/// Why a browser-tier check given no browser did not run.
pub const BROWSER_TIER_SKIP: &str = "browser tier: run with --browser";

fn unknown(id: &str) -> Outcome {
    Outcome {
        id: id.to_string(),
        grade: Grade::Skip,
        expected: String::new(),
        actual: format!("unknown check id {id:?}"),
        sign: String::new(),
        fix: String::new(),
        measurements: serde_json::Value::Null,
        elapsed_ms: 0,
    }
}

/// The longest a check may take before it is cut. Every network operation inside a check has
/// its own timeout well below this; the cap only guards against a check that forgot one.
fn hard_limit(info: &CheckInfo, target: &Target) -> Duration {
    if info.long {
        timeouts::idle_deadline(target.idle) + Duration::from_secs(120)
    } else {
        Duration::from_secs(600)
    }
}

/// Runs one check against `target` and returns its outcome. Never panics: an error through the
/// proxy is evidence graded by the check, a check that panics is reported as a `skip` with the
/// internal error, and one that overruns its hard limit as a `fail`.
///
/// `auth.origin` needs the backends in UI-password mode, which breaks every other check: run it
/// on its own, with `Target::ui_password` set, while the backends have the password on.
pub async fn run(id: &str, target: &Target) -> Outcome {
    let Some(info) = info(id) else {
        return unknown(id);
    };
    let owned = target.clone();
    guarded(info, target, async move { dispatch(info.id, &owned).await }).await
}

/// Runs one browser-tier check against `target` in the run's browser `context`, guarded as
/// [`run`] guards the others. Any other id runs as [`run`] runs it.
pub async fn run_in_browser(id: &str, target: &Target, context: &std::sync::Arc<crate::browser::Context>) -> Outcome {
    let Some(info) = info(id) else {
        return unknown(id);
    };
    if !info.browser {
        return run(id, target).await;
    }
    let (owned, context) = (target.clone(), context.clone());
    guarded(info, target, async move { browser::dispatch(info.id, &owned, &context).await }).await
}

/// Runs a check's future in its own task: a panic is graded `error`, an overrun of the hard
/// limit `fail`; the elapsed time and the browser's sign (HTTP/2) are set.
async fn guarded(info: &'static CheckInfo, target: &Target, check: impl std::future::Future<Output = Outcome> + Send + 'static) -> Outcome {
    let started = Instant::now();
    let mut task = tokio::spawn(check);
    let limit = hard_limit(info, target);
    let mut outcome = match tokio::time::timeout(limit, &mut task).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(err)) => info.outcome(
            Grade::Error,
            "the check runs to its end",
            format!("internal error in the check: {}", panic_text(err)),
            serde_json::Value::Null,
        ),
        Err(_) => {
            task.abort();
            info.outcome(
                Grade::Fail,
                format!("the check finishes within {} s", limit.as_secs()),
                format!("no result after {} s", limit.as_secs()),
                serde_json::Value::Null,
            )
        }
    };
    if let Some(sign) = http2::browser_sign(&outcome, target.transport) {
        outcome.sign = sign;
    }
    outcome.elapsed_ms = started.elapsed().as_millis() as u64;
    outcome
}

fn panic_text(err: tokio::task::JoinError) -> String {
    if !err.is_panic() {
        return err.to_string();
    }
    let payload = err.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string())
}

/// Runs several checks on one target at the same time (the long ones overlap, so the whole set
/// costs about one idle period) and returns their outcomes in the order of `ids`.
pub async fn run_many(ids: &[&str], target: &Target) -> Vec<Outcome> {
    futures::future::join_all(ids.iter().map(|id| run(id, target))).await
}

/// Every check of the catalogue except `auth.origin` (which needs the backends in
/// UI-password mode) and the browser tier, at the same time.
pub async fn run_all(target: &Target) -> Vec<Outcome> {
    let ids: Vec<&str> = CATALOGUE
        .iter()
        .map(|c| c.id)
        .filter(|id| *id != auth::AUTH_ORIGIN.id && !info(id).is_some_and(|c| c.browser))
        .collect();
    run_many(&ids, target).await
}
