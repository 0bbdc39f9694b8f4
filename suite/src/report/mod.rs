//! Reports: the versioned JSON contract ([`json`]) and the published matrix ([`matrix`]):
//! `results/matrix.json`, `matrix.md`, `index.html`, `performance.md`.

pub mod html;
pub mod json;
pub mod markdown;
pub mod matrix;
pub mod performance;

use std::path::Path;

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

/// Writes the four published files of a matrix run into `out` (created when missing):
/// `matrix.json`, `matrix.md`, `index.html` and `performance.md`. Each file is written to a
/// temporary name first and renamed, so an interrupted run never leaves a half-written file.
pub fn write_all(out: &Path, run: &MatrixRun) -> std::io::Result<()> {
    let template = |e: minijinja::Error| std::io::Error::other(format!("report template: {e:#}"));
    let mut json = serde_json::to_string_pretty(&json::matrix_document(run))?;
    json.push('\n');
    let files = [
        ("matrix.json", json),
        ("matrix.md", markdown::render(run).map_err(template)?),
        ("index.html", html::render(run).map_err(template)?),
        ("performance.md", performance::render(run).map_err(template)?),
    ];
    std::fs::create_dir_all(out)?;
    for (name, text) in files {
        let partial = out.join(format!(".{name}.partial"));
        std::fs::write(&partial, text)?;
        std::fs::rename(&partial, out.join(name))?;
    }
    Ok(())
}
