//! The machine-readable results: a contract for other tools, versioned by `schema`.
//!
//! `proxy-suite check --json` prints [`check_document`]: one run as below, every measurement,
//! with `"schema": 1` (schema 2 only added fields to a run). `results/matrix.json` is
//! [`matrix_text`]:
//!
//! - `schema`: `2`; bumped on any incompatible change (fields may be added within a schema).
//! - `generated_at`: UTC start of the run that produced the document, RFC 3339 (the start, not
//!   the time of writing, so the same run always gives the same document; a merge of shards
//!   takes the earliest start).
//! - `evidence`: `summary` (published: a passing cell keeps only the samples the reports draw
//!   from, see [`summary_measurements`]) or `full` (`--full-evidence`: every measurement).
//! - `shard`: `"K/N"` when the document is one shard of a plan (`matrix --shard`), else null.
//! - `machine`: `{cpus, memory_gib, os, kernel}`.
//! - `idle_s`: the idle period of `ws.idle`, `sse.idle` and `http.slow`, in seconds.
//! - `wall_ms`: wall time of the whole matrix run, in milliseconds (of a merge: the longest
//!   shard's).
//! - `proxies`: every proxy of the catalogue, `{name, version, source, runs_on, missing}`:
//!   the exact version and source that ran, or (`missing`) why it did not, with an install hint.
//! - `checks`: the catalogue in order, `{id, requirement, sign, fix, long, ...}`.
//! - `direct`: the control (the checks against the mock itself), one run per profile.
//! - `runs`: every proxy x config x profile, ordered by proxy (catalogue order), config id and
//!   profile (then transport and runtime). A run (also in `direct`) is `{proxy: {name,
//!   version, source, runtime, image}, transport, config, profile,
//!   role, negative_control, setup_error, rewrites, elapsed_ms, check_ms, checks}`; `role` is the
//!   config's (`guide`, `first-try`, `known-good`, `negative-control`, `user`; null in
//!   `direct`), `negative_control` the checks a negative control is built to fail;
//!   `setup_error` (`{kind, message}`, kind `missing`, `invalid-config`, `not-ready` or
//!   `error`) means the run has no grades and is not a result; each of `checks` (one cell of
//!   the matrix) is `{id, grade, expected, actual, sign, fix, measurements}` (its time is in
//!   the run's `check_ms`, `{id: ms}`, so that a cell's line changes only with what it
//!   measured), with
//!   `grade` one of `pass`, `warn`, `fail`, `skip`, `error` (the check itself broke: counted as
//!   a failure), and `measurements` check-specific. `image` (`{reference, id}`) is there for
//!   a run in a container only.
//! - `runtime_differences` (only in a matrix of both runtimes, when there are any): each check
//!   graded differently natively and in a container, `{proxy, config, profile, transport,
//!   check, grades, actual, reason}`, `reason` null when no `.expected` entry explains it.
//!
//! Layout: compact JSON with one entry of `proxies` and `checks`, one run header and one cell
//! per line, so a republish without a change in behaviour differs only in the lines that carry
//! the date, versions and timings.
//!
//! Changes from schema 1: `evidence`, `shard`, `role` and `negative_control` added; passing
//! cells keep summary measurements unless `evidence` is `full`; a cell's `elapsed_ms` moved to
//! its run's `check_ms`; runs in a fixed order; the line layout above (schema 1 was indented
//! JSON). `check --json` keeps schema 1: a run with `elapsed_ms` in each cell.

use serde_json::{json, Map, Value};

use super::{Evidence, MatrixRun};
use crate::checks::{self, Grade, Outcome};
use crate::run::RunResult;
use mock_server::Profile;

/// Schema of `matrix.json`, bumped on any incompatible change.
pub const SCHEMA: u32 = 2;

/// Schema of `check --json`, bumped on any incompatible change.
pub const CHECK_SCHEMA: u32 = 1;

/// Ticks a passing `sse.stream` cell keeps per route in a summary: enough to draw its chart.
const SAMPLED_TICKS: usize = 5;

/// `proxy-suite check --json`: one proxy, one config, one profile, every measurement.
pub fn check_document(result: &RunResult) -> Value {
    let mut doc = run_header(result);
    doc["checks"] = result.checks.iter().map(cell_value).collect();
    doc["schema"] = json!(CHECK_SCHEMA);
    doc
}

/// The run as published: runs in their fixed order, each cell's measurements kept as
/// `evidence` says. Idempotent, so a merge of published shards renders as the run did.
pub fn with_evidence(run: &MatrixRun, evidence: Evidence) -> MatrixRun {
    let mut run = run.clone();
    let proxy_rank = |name: &str| run.proxies.iter().position(|p| p.name == name).unwrap_or(usize::MAX);
    let profile_rank = |p: Profile| Profile::ALL.iter().position(|x| *x == p).unwrap_or(usize::MAX);
    let mut keyed: Vec<_> = std::mem::take(&mut run.runs)
        .into_iter()
        .map(|r| ((proxy_rank(&r.proxy), r.proxy.clone(), r.config.clone(), profile_rank(r.profile), r.transport, (r.runtime != "native", r.runtime.clone())), r))
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    run.runs = keyed.into_iter().map(|(_, r)| r).collect();
    run.direct.sort_by_key(|r| profile_rank(r.profile));
    if evidence == Evidence::Summary {
        for cell in run.direct.iter_mut().chain(run.runs.iter_mut()).flat_map(|r| r.checks.iter_mut()) {
            if cell.grade == Grade::Pass {
                cell.measurements = summary_measurements(&cell.id, &cell.measurements);
            }
        }
        // A passing proxy cell draws no chart: its lags (for performance.md) are enough. The
        // controls keep their sampled ticks, the line every failing cell's chart is drawn against.
        for cell in run.runs.iter_mut().flat_map(|r| r.checks.iter_mut()).filter(|c| c.grade == Grade::Pass) {
            for route in cell.measurements.get_mut("paths").and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(route) = route.as_object_mut() {
                    route.remove("ticks");
                }
            }
        }
    }
    run
}

/// What a passing cell keeps in a summary: the samples the reports draw from, nothing else
/// (null for most checks). `sse.stream`: the plan, and per route its path, every tick's lag
/// (`lag_us`, for `performance.md`) and [`SAMPLED_TICKS`] ticks spread over the stream (for the
/// chart). `ws.upgrade`: the echo round trips (`echo_rtt_us`, top level and per route).
pub fn summary_measurements(id: &str, m: &Value) -> Value {
    let pick = |from: &Value, keys: &[&str]| -> Value {
        let picked: Map<String, Value> = keys.iter().filter_map(|k| from.get(*k).map(|v| (k.to_string(), v.clone()))).collect();
        Value::Object(picked)
    };
    let paths = |keep: &dyn Fn(&Value) -> Value| -> Option<Value> {
        m.get("paths").and_then(Value::as_array).map(|ps| ps.iter().map(keep).collect())
    };
    let mut out = match id {
        "sse.stream" => pick(m, &["plan"]),
        "ws.upgrade" => pick(m, &["echo_rtt_us"]),
        _ => return Value::Null,
    };
    let routes = match id {
        "sse.stream" => paths(&|p| {
            let mut route = pick(p, &["path", "lag_us"]);
            if let Some(ticks) = p.get("ticks").and_then(Value::as_array) {
                route["ticks"] = sample(ticks, SAMPLED_TICKS).into();
            }
            route
        }),
        _ => paths(&|p| pick(p, &["path", "echo_rtt_us"])),
    };
    if let Some(routes) = routes {
        out["paths"] = routes;
    }
    out
}

/// At most `n` items spread evenly, the first and the last included.
fn sample(items: &[Value], n: usize) -> Vec<Value> {
    if items.len() <= n || n < 2 {
        return items.iter().take(n).cloned().collect();
    }
    (0..n).map(|i| items[i * (items.len() - 1) / (n - 1)].clone()).collect()
}

/// The text of `matrix.json` for a run already passed through [`with_evidence`].
pub fn matrix_text(run: &MatrixRun, evidence: Evidence) -> String {
    let line = |v: Value| v.to_string();
    let list = |items: Vec<String>| format!("[\n{}\n]", items.join(",\n"));
    let head = [
        ("schema", json!(SCHEMA)),
        ("generated_at", json!(run.started_at)),
        ("evidence", json!(evidence)),
        ("shard", json!(run.shard)),
        ("machine", json!(run.machine)),
        ("idle_s", json!(run.idle_s)),
        ("wall_ms", json!(run.wall_ms)),
    ];
    let mut fields: Vec<String> = head.into_iter().map(|(k, v)| format!("{}:{}", json!(k), line(v))).collect();
    // Serialized straight from the structs: their fields in declaration order, `name`/`id` first.
    let entry = |v: Result<String, serde_json::Error>| v.unwrap_or_else(|e| json!({"error": e.to_string()}).to_string());
    fields.push(format!("\"proxies\":{}", list(run.proxies.iter().map(|p| entry(serde_json::to_string(p))).collect())));
    fields.push(format!("\"checks\":{}", list(checks::catalogue().iter().map(|c| entry(serde_json::to_string(c))).collect())));
    fields.push(format!("\"direct\":{}", list(run.direct.iter().map(run_text).collect())));
    fields.push(format!("\"runs\":{}", list(run.runs.iter().map(run_text).collect())));
    // Only a matrix of more than one runtime compares them.
    if !run.runtime_differences.is_empty() {
        fields.push(format!("\"runtime_differences\":{}", list(run.runtime_differences.iter().map(|d| entry(serde_json::to_string(d))).collect())));
    }
    format!("{{{}}}\n", fields.join(",\n"))
}

/// One run: its header on one line, then one cell per line.
fn run_text(result: &RunResult) -> String {
    // Every cell's time on the header line: a cell's line changes only when what it measured
    // does, not on every republish.
    let cells: Vec<String> = result
        .checks
        .iter()
        .map(|c| ordered(&cell_fields(c).into_iter().filter(|(k, _)| *k != "elapsed_ms").collect::<Vec<_>>()))
        .collect();
    let mut header = run_fields(result);
    let times: Map<String, Value> = result.checks.iter().map(|c| (c.id.clone(), json!(c.elapsed_ms))).collect();
    header.push(("check_ms", Value::Object(times)));
    header.push(("checks", Value::Null));
    let header = ordered(&header);
    // The cells in place of the null: `"checks":null}` is the header's end.
    let open = &header[..header.len() - "null}".len()];
    if cells.is_empty() {
        format!("{open}[]}}")
    } else {
        format!("{open}[\n{}]}}", cells.join(",\n"))
    }
}

/// An object with its fields in the given order (serde_json sorts them), so each line of
/// `matrix.json` starts with what tells it apart: a run's proxy and config, a cell's id and grade.
fn ordered(fields: &[(&str, Value)]) -> String {
    let inner: Vec<String> = fields.iter().map(|(k, v)| format!("{}:{v}", Value::from(*k))).collect();
    format!("{{{}}}", inner.join(","))
}

/// A run's fields but its cells.
fn run_fields(result: &RunResult) -> Vec<(&'static str, Value)> {
    let mut proxy = json!({"name": result.proxy, "version": result.version, "source": result.source, "runtime": result.runtime});
    // The image (reference and id) of a container run; native runs have none.
    if let Some(image) = &result.image {
        proxy["image"] = json!(image);
    }
    vec![
        ("proxy", proxy),
        ("transport", json!(result.transport)),
        ("config", json!(result.config)),
        ("profile", json!(result.profile)),
        ("role", json!(result.role)),
        ("negative_control", json!(result.negative_control)),
        ("setup_error", json!(result.setup_error)),
        ("rewrites", json!(result.rewrites)),
        ("elapsed_ms", json!(result.elapsed_ms)),
    ]
}

fn run_header(result: &RunResult) -> Value {
    Value::Object(run_fields(result).into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

fn cell_fields(c: &Outcome) -> Vec<(&'static str, Value)> {
    vec![
        ("id", json!(c.id)),
        ("grade", json!(c.grade)),
        ("expected", json!(c.expected)),
        ("actual", json!(c.actual)),
        ("sign", json!(c.sign)),
        ("fix", json!(c.fix)),
        ("measurements", c.measurements.clone()),
        ("elapsed_ms", json!(c.elapsed_ms)),
    ]
}

fn cell_value(c: &Outcome) -> Value {
    Value::Object(cell_fields(c).into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// A `matrix.json` read back: the run, its schema and how much evidence it kept.
#[derive(Debug, Clone)]
pub struct Document {
    pub schema: u32,
    pub evidence: Evidence,
    pub run: MatrixRun,
}

/// Reads a `matrix.json` of schema 1 or 2 (schema 1 has no roles: they are left empty).
pub fn read_matrix(text: &str) -> Result<Document, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let schema = doc.get("schema").and_then(Value::as_u64).ok_or("no `schema` field: not a matrix.json")? as u32;
    if schema != 1 && schema != SCHEMA {
        return Err(format!("schema {schema}, this proxy-suite reads schema 1 and {SCHEMA}"));
    }
    let parse = |k: &str| doc.get(k).cloned().ok_or_else(|| format!("no `{k}` field"));
    let runs = |k: &str| -> Result<Vec<RunResult>, String> {
        parse(k)?.as_array().ok_or_else(|| format!("`{k}` is not a list"))?.iter().map(run_from_value).collect()
    };
    let evidence = match doc.get("evidence") {
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("`evidence`: {e}"))?,
        // Schema 1 kept everything.
        None => Evidence::Full,
    };
    let run = MatrixRun {
        started_at: serde_json::from_value(parse("generated_at")?).map_err(|e| format!("`generated_at`: {e}"))?,
        machine: serde_json::from_value(parse("machine")?).map_err(|e| format!("`machine`: {e}"))?,
        idle_s: parse("idle_s")?.as_u64().ok_or("`idle_s` is not a number")?,
        wall_ms: parse("wall_ms")?.as_u64().ok_or("`wall_ms` is not a number")?,
        proxies: serde_json::from_value(parse("proxies")?).map_err(|e| format!("`proxies`: {e}"))?,
        shard: match doc.get("shard") {
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("`shard`: {e}"))?,
            None => None,
        },
        direct: runs("direct")?,
        runs: runs("runs")?,
        runtime_differences: match doc.get("runtime_differences") {
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("`runtime_differences`: {e}"))?,
            None => Vec::new(),
        },
    };
    Ok(Document { schema, evidence, run })
}

/// One run of `direct` or `runs` back into a [`RunResult`].
fn run_from_value(v: &Value) -> Result<RunResult, String> {
    let label = format!("{} {}", v.pointer("/proxy/name").unwrap_or(&Value::Null), v.get("config").unwrap_or(&Value::Null));
    let text = |p: &str| v.pointer(p).and_then(Value::as_str).map(String::from);
    let field = |k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    let or_default = |k: &str| v.get(k).filter(|x| !x.is_null()).cloned();
    let fail = |k: &str, e: serde_json::Error| format!("run {label}: `{k}`: {e}");
    Ok(RunResult {
        proxy: text("/proxy/name").ok_or_else(|| format!("run {label}: no proxy name"))?,
        version: text("/proxy/version"),
        source: text("/proxy/source").unwrap_or_default(),
        runtime: text("/proxy/runtime").unwrap_or_else(|| "native".into()),
        image: v.pointer("/proxy/image").filter(|x| !x.is_null()).cloned().map(serde_json::from_value).transpose().map_err(|e| fail("image", e))?,
        transport: or_default("transport").map(serde_json::from_value).transpose().map_err(|e| fail("transport", e))?.unwrap_or_default(),
        config: text("/config").ok_or_else(|| format!("run {label}: no config"))?,
        role: serde_json::from_value(field("role")).map_err(|e| fail("role", e))?,
        negative_control: or_default("negative_control").map(serde_json::from_value).transpose().map_err(|e| fail("negative_control", e))?.unwrap_or_default(),
        profile: serde_json::from_value(field("profile")).map_err(|e| fail("profile", e))?,
        setup_error: serde_json::from_value(field("setup_error")).map_err(|e| fail("setup_error", e))?,
        rewrites: or_default("rewrites").map(serde_json::from_value).transpose().map_err(|e| fail("rewrites", e))?.unwrap_or_default(),
        checks: serde_json::from_value(with_times(field("checks"), v.get("check_ms"))).map_err(|e| fail("checks", e))?,
        elapsed_ms: v.get("elapsed_ms").and_then(Value::as_u64).unwrap_or(0),
    })
}

/// Puts each cell's `elapsed_ms` back from its run's `check_ms` (0 when not recorded).
fn with_times(mut cells: Value, times: Option<&Value>) -> Value {
    for cell in cells.as_array_mut().into_iter().flatten() {
        if cell.get("elapsed_ms").is_none() {
            let id = cell.get("id").and_then(Value::as_str).unwrap_or_default();
            let ms = times.and_then(|t| t.get(id)).and_then(Value::as_u64).unwrap_or(0);
            cell["elapsed_ms"] = json!(ms);
        }
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_keeps_first_and_last() {
        let items: Vec<Value> = (0..20).map(Value::from).collect();
        assert_eq!(sample(&items, 5), [0, 4, 9, 14, 19].map(Value::from));
        assert_eq!(sample(&items[..3], 5).len(), 3);
    }

    #[test]
    fn summary_is_idempotent() {
        let m = json!({"plan": {"ticks": 20}, "paths": [{"path": "/api/event", "lag_us": [1, 2], "headers": [["a", "b"]],
            "ticks": (0..20).map(|s| json!({"seq": s})).collect::<Vec<_>>()}]});
        let once = summary_measurements("sse.stream", &m);
        assert_eq!(once["paths"][0]["ticks"].as_array().unwrap().len(), SAMPLED_TICKS);
        assert!(once["paths"][0].get("headers").is_none());
        assert_eq!(summary_measurements("sse.stream", &once), once);
        assert_eq!(summary_measurements("headers.forwarded", &m), Value::Null);
    }
}
