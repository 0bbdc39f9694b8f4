//! The machine-readable results: a contract for other tools, versioned by `schema`.
//!
//! `proxy-suite check --json` prints [`check_document`] (one run); `results/matrix.json` is
//! [`matrix_document`]:
//!
//! - `schema`: `1`; bumped on any incompatible change (fields may be added within a schema).
//! - `generated_at`: UTC start of the run that produced the document, RFC 3339 (the start, not
//!   the time of writing, so the same run always gives the same document).
//! - `machine`: `{cpus, memory_gib, os, kernel}`.
//! - `idle_s`: the idle period of `ws.idle`, `sse.idle` and `http.slow`, in seconds.
//! - `wall_ms`: wall time of the whole matrix run, in milliseconds.
//! - `proxies`: every proxy of the catalogue, `{name, version, source, runs_on, missing}`:
//!   the exact version and source that ran, or (`missing`) why it did not, with an install hint.
//! - `checks`: the catalogue in order, `{id, requirement, sign, fix, long}`.
//! - `direct`: the control (the checks against the mock itself), one run per profile.
//! - `runs`: every proxy x config x profile. A run (also in `direct`) is
//!   `{proxy: {name, version, source}, config, profile, setup_error, rewrites, elapsed_ms, checks}`;
//!   `setup_error` (`{kind, message}`, kind `missing`, `invalid-config`, `not-ready` or
//!   `error`) means the run has no grades and is not a result; each of `checks` (one cell of
//!   the matrix) is `{id, grade, expected, actual, sign, fix, measurements, elapsed_ms}`, with
//!   `grade` one of `pass`, `warn`, `fail`, `skip`, and `measurements` check-specific.

use serde_json::{json, Value};

use super::MatrixRun;
use crate::checks;
use crate::run::RunResult;

/// Bumped on any incompatible change of the documents below.
pub const SCHEMA: u32 = 1;

/// `proxy-suite check --json`: one proxy, one config, one profile.
pub fn check_document(result: &RunResult) -> Value {
    let mut doc = run_value(result);
    doc["schema"] = json!(SCHEMA);
    doc
}

/// `results/matrix.json`: every cell of a matrix run, with the catalogue and the control.
pub fn matrix_document(run: &MatrixRun) -> Value {
    let with_elapsed = |r: &RunResult| {
        let mut doc = run_value(r);
        doc["elapsed_ms"] = json!(r.elapsed_ms);
        doc
    };
    json!({
        "schema": SCHEMA,
        "generated_at": run.started_at,
        "machine": run.machine,
        "idle_s": run.idle_s,
        "wall_ms": run.wall_ms,
        "proxies": run.proxies,
        "checks": checks::catalogue(),
        "direct": run.direct.iter().map(with_elapsed).collect::<Vec<_>>(),
        "runs": run.runs.iter().map(with_elapsed).collect::<Vec<_>>(),
    })
}

/// One run's fields, shared by both documents.
fn run_value(result: &RunResult) -> Value {
    let mut value = json!({
        "proxy": {"name": result.proxy, "version": result.version, "source": result.source},
        "config": result.config,
        "profile": result.profile,
        "setup_error": result.setup_error,
        "rewrites": result.rewrites,
        "checks": result.checks.iter().map(|c| json!({
            "id": c.id,
            "grade": c.grade,
            "expected": c.expected,
            "actual": c.actual,
            "sign": c.sign,
            "fix": c.fix,
            "measurements": c.measurements,
            "elapsed_ms": c.elapsed_ms,
        })).collect::<Vec<_>>(),
    });
    // Plain-HTTP runs read as before transports existed.
    if result.transport != crate::tls::Transport::H1 {
        value["transport"] = json!(result.transport);
    }
    value
}
