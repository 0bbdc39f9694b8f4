//! Reports: the versioned JSON contract ([`json`]), the published matrix (`matrix.json`,
//! `matrix.md`, `index.html`, `performance.md`), the JUnit XML a CI reads ([`junit`]) and the
//! joining of shard outputs ([`merge`]). Reports only write (and read back what they wrote):
//! running the matrix is [`crate::matrix`].

pub mod html;
pub mod json;
pub mod junit;
pub mod markdown;
pub mod merge;
pub mod performance;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

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
    /// The slice of the plan this run covered; `None` for the whole plan (or a merge of all).
    #[serde(default)]
    pub shard: Option<Shard>,
    /// The control: the checks against the mock itself, once per profile.
    pub direct: Vec<RunResult>,
    /// Every proxy x config x profile (x transport x runtime).
    pub runs: Vec<RunResult>,
    /// Grades that differ between runtimes for the same proxy, config, profile and transport
    /// (a matrix of both runtimes): findings, each with its reason or marked unexplained.
    #[serde(default)]
    pub runtime_differences: Vec<RuntimeDifference>,
    /// The config lines that cause the failing and warning cells, as `check` prints them
    /// ([`crate::proxies::diagnose`]), once per config, check and line.
    #[serde(default)]
    pub causes: Vec<PublishedCause>,
}

/// A config line that makes checks fail or warn, in a published matrix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PublishedCause {
    /// The config (`nginx/openchamber-guide.conf`).
    pub config: String,
    /// The file the line is in, under `proxy-configs/`, when it is not the config: the
    /// distribution's file around it (`nginx/_context/debian.conf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// 1-based.
    pub line: usize,
    /// The line as written, trimmed.
    pub text: String,
    pub why: String,
    /// The check ids it fails (`setup` when the proxy refused the config), in catalogue order.
    pub checks: Vec<String>,
}

/// One check graded differently in two runtimes: a finding of the container deployment
/// (different outer context, networking), never noise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeDifference {
    pub proxy: String,
    pub config: String,
    pub profile: String,
    pub transport: String,
    /// The check id, or `setup` when one runtime could not bring the proxy up.
    pub check: String,
    /// Grade (or `setup: kind`) per runtime, `native` first: `[["native", "pass"], ["docker", "fail"]]`.
    pub grades: Vec<(String, String)>,
    /// What the differing runtime measured (first line).
    pub actual: String,
    /// The `runtime=` entry of the config's `.expected` that explains it; `None`: unexplained.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub memory_gib: f64,
    pub os: String,
    pub kernel: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// Shard `index` of `count` (`2/3`): which slice of a plan's requests a run covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shard {
    /// From 1.
    pub index: usize,
    pub count: usize,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("shard `{s}`: expected K/N with 1 <= K <= N, e.g. 2/3");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (k.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Serialize for Shard {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Shard {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Shard, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// How much of each cell's measurements the published files keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Evidence {
    /// Every cell that is not a pass keeps all its measurements; a passing cell keeps only the
    /// samples the reports draw from (see [`json::summary_measurements`]). What is published.
    #[default]
    Summary,
    /// Every measurement of every cell (`--full-evidence`).
    Full,
}

/// Writes the four published files of a matrix run into `out` (created when missing):
/// `matrix.json`, `matrix.md`, `index.html` and `performance.md`, every cell's measurements
/// kept as `evidence` says. Each file is written to a temporary name first and renamed, so an
/// interrupted run never leaves a half-written file.
pub fn write_all(out: &Path, run: &MatrixRun, evidence: Evidence) -> std::io::Result<()> {
    let template = |e: minijinja::Error| std::io::Error::other(format!("report template: {e:#}"));
    let run = &json::with_evidence(run, evidence);
    let files = [
        ("matrix.json", json::matrix_text(run, evidence)),
        ("matrix.md", markdown::render(run).map_err(template)?),
        ("index.html", html::render_with(run, evidence).map_err(template)?),
        ("performance.md", performance::render(run).map_err(template)?),
    ];
    std::fs::create_dir_all(out)?;
    for (name, text) in files {
        write_atomically(&out.join(name), &text)?;
    }
    Ok(())
}

/// Writes `text` to a temporary name beside `path`, then renames it into place.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let partial = path.with_file_name(format!(".{name}.partial"));
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, path)
}
