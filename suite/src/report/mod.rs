//! Reports: the versioned JSON contract ([`json`]) and the published matrix ([`matrix`]):
//! `results/matrix.json`, `matrix.md`, `index.html`, `performance.md`.

pub mod json;
pub mod matrix;

use serde::{Deserialize, Serialize};

use crate::run::RunResult;

/// Everything one matrix run produced: the input of every report writer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MatrixRun {
    /// UTC start time, RFC 3339.
    pub started_at: String,
    pub machine: Machine,
    /// Idle period used by ws.idle, sse.idle and http.slow, in seconds.
    pub idle_s: u64,
    /// Wall time of the whole run, in milliseconds.
    pub wall_ms: u64,
    /// Every proxy of the catalogue: version and source that ran, or why it could not.
    pub proxies: Vec<ProxyEntry>,
    /// The control: the checks against the mock itself, once per profile.
    pub direct: Vec<RunResult>,
    /// Every proxy x config x profile.
    pub runs: Vec<RunResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub memory_gib: f64,
    pub os: String,
    pub kernel: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProxyEntry {
    pub name: String,
    /// Exact version the binary reported; None when missing.
    pub version: Option<String>,
    pub source: String,
    /// For `npm`: the nginx it ran on.
    pub runs_on: Option<String>,
    /// Why it was skipped, with an install hint.
    pub missing: Option<String>,
}

/// Writes every report of `run` into `out` (placeholder until the writers land).
pub fn write_all(out: &std::path::Path, run: &MatrixRun) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("matrix.json"), serde_json::to_vec_pretty(run)?)
}
