//! The checks: one module per area of the guide. Each check carries its stable id, the guide's
//! sentence it tests and the failure sign a user would see, and grades a [`Target`] (a proxy
//! instance, or the mock itself as the control) with evidence.

use std::net::SocketAddr;
use std::time::Duration;

use mock_server::Profile;
use serde::{Deserialize, Serialize};

/// How a check ended, after Autobahn and Http11Probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grade {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl std::fmt::Display for Grade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Grade::Pass => "pass",
            Grade::Warn => "warn",
            Grade::Fail => "fail",
            Grade::Skip => "skip",
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

/// Where a check sends its traffic, and what it may assume about the backend behind it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Label for reports: `nginx@1.22/openchamber-guide.conf` or `direct`.
    pub label: String,
    /// The address the client connects to: the proxy's listener, or the mock for the control.
    pub addr: SocketAddr,
    /// The Host header a browser would send to this site.
    pub host: String,
    /// Profile of the backend(s) behind the target.
    pub profile: Profile,
    /// Instance ids of the backends behind the target (several for load-balanced configs).
    pub backends: Vec<String>,
    /// Idle period for `ws.idle`, `sse.idle` and `http.slow`.
    pub idle: Duration,
    /// True when the target is the mock itself (the control run).
    pub direct: bool,
}
