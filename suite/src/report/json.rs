//! The machine-readable results: a contract for other tools, versioned by `schema`.
//!
//! `proxy-suite check --json` prints [`check_document`]: one run as below, every measurement,
//! with `"schema": 1` (schema 2 only added fields to a run). `results/matrix.json` is
//! [`matrix_text`]:
//!
//! - `schema`: `3`; bumped on any incompatible change (fields may be added within a schema).
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
//! - `expected`: `{"<check id> <profile> <transport>": text}`, the Expected most cells of that
//!   check, profile and transport share; a cell whose Expected is that text leaves it out.
//! - `actual`: `{"<check id> <profile> <transport> <grade>": text}`, the same for the Actual;
//!   a cell whose Actual is that text leaves it out.
//! - `fix`: `{"<check id> <proxy> <grade>": text}`, the same for the Fix (each proxy kind has
//!   its own advice); a cell whose Fix is that text leaves it out.
//! - `rewrites`: `{"<proxy> <runtime> <config>": [rewrite, ...]}`, what the suite rewrote in a
//!   config for a proxy when its runs (profiles, transports) share it; a run whose rewrites
//!   are that list leaves them out.
//! - `direct`: the control (the checks against the mock itself), one run per profile.
//! - `runs`: every proxy x config x profile, ordered by proxy (catalogue order), config id and
//!   profile (then transport and runtime). A run (also in `direct`) is `{proxy: {name,
//!   version, source, runtime, image}, transport, config, profile,
//!   role, negative_control, setup_error, rewrites, elapsed_ms, check_ms, checks}`; `role` is the
//!   config's (`guide`, `first-try`, `known-good`, `negative-control`, `user`; null in
//!   `direct`), `negative_control` the checks a negative control is built to fail;
//!   `setup_error` (`{kind, message}`, kind `missing`, `invalid-config`, `not-ready` or
//!   `error`) means the run has no grades and is not a result; each of `checks` (one cell of
//!   the matrix) is `{id, grade, expected, actual, sign, fix, measurements}`, where `expected`
//!   is left out when it is the `expected` table's, `actual` when it is the `actual` table's,
//!   `fix` when it is the `fix` table's, `measurements` when null, and `sign` and `fix` when they are the
//!   catalogue's for a `warn` or `fail` or empty for another grade (its time is in
//!   the run's `check_ms`, `{id: ms}`, so that a cell's line changes only with what it
//!   measured), with
//!   `grade` one of `pass`, `warn`, `fail`, `skip`, `error` (the check itself broke: counted as
//!   a failure), and `measurements` check-specific. `image` (`{reference, id}`) is there for
//!   a run in a container only.
//! - `runtime_differences` (only in a matrix of both runtimes, when there are any): each check
//!   graded differently natively and in a container, `{proxy, config, profile, transport,
//!   check, grades, actual, reason}`, `reason` null when no `.expected` entry explains it.
//! - `causes` (when any cell fails or warns where the config's parser can point at a line):
//!   `{config, file, line, text, why, checks}`, once per config and line, `file` only when the
//!   line is in another file than the config (the distribution's context): what `proxy-suite
//!   check` prints as `cause: file:line: text` for each of `checks`.
//!
//! Layout: compact JSON with one entry of `proxies` and `checks`, one run header and one cell
//! per line, so a republish without a change in behaviour differs only in the lines that carry
//! the date, versions and timings.
//!
//! Changes from schema 2: the `expected` and `actual` tables and the cells' left-out fields above; published
//! (summary) evidence of a cell that is not a pass drops what changes on every run whatever the
//! proxy does and cuts long strings ([`published_measurements`]); rewrites show the run's
//! prefix and ports as `<prefix>` and `<port>`. Schemas 1 and 2 are still read.
//!
//! Changes from schema 1: `evidence`, `shard`, `role` and `negative_control` added; passing
//! cells keep summary measurements unless `evidence` is `full`; a cell's `elapsed_ms` moved to
//! its run's `check_ms`; runs in a fixed order; the line layout above (schema 1 was indented
//! JSON). `check --json` keeps schema 1: a run with `elapsed_ms` in each cell.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::{Evidence, MatrixRun};
use crate::checks::{self, Grade, Outcome};
use crate::run::RunResult;
use mock_server::Profile;

/// Schema of `matrix.json`, bumped on any incompatible change.
pub const SCHEMA: u32 = 3;

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
        // A cell that is not a pass keeps its evidence, less what changes on every run without
        // saying anything (dates, socket keys, ephemeral ports) and what no report reads.
        for cell in run.direct.iter_mut().chain(run.runs.iter_mut()).flat_map(|r| r.checks.iter_mut()) {
            if cell.grade != Grade::Pass {
                cell.measurements = published_measurements(&cell.id, &cell.measurements);
            }
        }
        for r in run.direct.iter_mut().chain(run.runs.iter_mut()) {
            r.rewrites = r.rewrites.iter().map(|w| stable_rewrite(w)).collect();
        }
        // A passing proxy cell draws no chart: its lags are enough, and only under the profile
        // performance.md compares. The controls keep their sampled ticks, the line every
        // failing cell's chart is drawn against.
        for r in run.runs.iter_mut() {
            let compared = r.profile == super::performance::PROFILE;
            for cell in r.checks.iter_mut().filter(|c| c.grade == Grade::Pass) {
                for route in cell.measurements.get_mut("paths").and_then(Value::as_array_mut).into_iter().flatten() {
                    if let Some(route) = route.as_object_mut() {
                        route.remove("ticks");
                        if !compared {
                            route.remove("lag_us");
                            route.remove("echo_rtt_us");
                        }
                    }
                }
                if let (false, Some(m)) = (compared, cell.measurements.as_object_mut()) {
                    m.remove("echo_rtt_us");
                }
                // The plan is the control's too; the first route's echoes are in its entry.
                if let Some(m) = cell.measurements.as_object_mut() {
                    m.remove("plan");
                    let per_route = m.get("paths").and_then(Value::as_array).is_some_and(|p| p.iter().any(|r| r.get("echo_rtt_us").is_some()));
                    if per_route {
                        m.remove("echo_rtt_us");
                    }
                    // Routes left with their path alone say what the catalogue says already.
                    let only_paths = m.get("paths").and_then(Value::as_array).is_some_and(|p| p.iter().all(|r| r.as_object().is_some_and(|o| o.len() == 1 && o.contains_key("path"))));
                    if only_paths {
                        m.remove("paths");
                    }
                }
                if cell.measurements.as_object().is_some_and(Map::is_empty) {
                    cell.measurements = Value::Null;
                }
            }
        }
    }
    run
}

/// What a passing cell keeps in a summary: the samples the reports draw from, nothing else
/// (null for most checks). `sse.stream`: the plan, and per route its path (without the query,
/// which the plan says), every tick's lag
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
    // A route by its path alone: the query a check sent is the plan's (`ticks`, `interval_ms`),
    // the same on every cell.
    let route_path = |route: &mut Value| {
        if let Some(path) = route.get("path").and_then(Value::as_str).and_then(|p| p.split_once('?')).map(|(p, _)| p.to_string()) {
            route["path"] = path.into();
        }
    };
    let routes = match id {
        "sse.stream" => paths(&|p| {
            let mut route = pick(p, &["path", "lag_us"]);
            route_path(&mut route);
            if let Some(ticks) = p.get("ticks").and_then(Value::as_array) {
                route["ticks"] = sample(ticks, SAMPLED_TICKS).into();
            }
            route
        }),
        _ => paths(&|p| {
            let mut route = pick(p, &["path", "echo_rtt_us"]);
            route_path(&mut route);
            route
        }),
    };
    if let Some(routes) = routes {
        out["paths"] = routes;
    }
    out
}

/// Longest string a published cell keeps whole; a response body or an error chain beyond it is
/// cut (`--full-evidence` keeps it).
const PUBLISHED_TEXT: usize = 64;

/// Evidence of a cell that is not a pass, as published: every field kept, except headers and
/// fields that differ on every run whatever the proxy does (`date`, the WebSocket key and
/// accept, the client's ephemeral `peer` port), per-tick stamps outside `sse.stream` (only its
/// chart reads them; `lag_us` stays), and long strings cut to [`PUBLISHED_TEXT`]. Idempotent.
pub fn published_measurements(id: &str, m: &Value) -> Value {
    fn volatile_header(pair: &Value) -> bool {
        let name = pair.get(0).and_then(Value::as_str).unwrap_or_default();
        ["date", "sec-websocket-key", "sec-websocket-accept"].iter().any(|v| name.eq_ignore_ascii_case(v))
    }
    fn walk(v: &Value, keep_ticks: bool) -> Value {
        match v {
            // A string cut before (a merge of published shards) stays as it was: cutting the cut
            // would count the cut's bytes as the original's.
            Value::String(text) if text.chars().count() > PUBLISHED_TEXT && !already_cut(text) => {
                let cut: String = text.chars().take(PUBLISHED_TEXT).collect();
                Value::String(format!("{cut}… ({} bytes in all)", text.len()))
            }
            Value::Array(items) => Value::Array(
                items.iter().filter(|item| !volatile_header(item)).map(|item| walk(item, keep_ticks)).collect(),
            ),
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .filter(|(k, _)| k.as_str() != "peer")
                    .filter(|(k, _)| keep_ticks || k.as_str() != "ticks" || !fields.contains_key("lag_us"))
                    .map(|(k, v)| (k.clone(), walk(v, keep_ticks)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    let mut out = walk(m, id == "sse.stream");
    // A cell whose evidence is still long: the first route in full, the others by what tells
    // them apart (the routes of one failure mostly repeat it).
    if id != "sse.stream" && out.to_string().len() > PUBLISHED_CELL {
        if let Some(paths) = out.get_mut("paths").and_then(Value::as_array_mut) {
            for route in paths.iter_mut().skip(1) {
                if let Some(fields) = route.as_object_mut() {
                    fields.retain(|k, _| ROUTE_SUMMARY.contains(&k.as_str()));
                }
            }
        }
    }
    out
}

/// Whether `text` ends as [`published_measurements`] ends a string it cut: `… (N bytes in all)`.
fn already_cut(text: &str) -> bool {
    text.strip_suffix(" bytes in all)")
        .and_then(|head| head.rsplit_once("… ("))
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Bytes of published evidence past which routes after the first keep only [`ROUTE_SUMMARY`].
const PUBLISHED_CELL: usize = 600;
/// What a route's entry keeps in a long cell: its path and its outcome.
const ROUTE_SUMMARY: [&str; 9] = ["path", "status", "ok", "problem", "summary", "end", "error", "grade", "read_ms"];

/// A rewrite as published: the run's own temporary prefix and the ports it was given are the
/// same placeholders on every run, so a republish changes a rewrite only when the rewrite does.
pub fn stable_rewrite(rewrite: &str) -> String {
    static PREFIX: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"/[^\s]*?/proxy-suite-[^/\s]+").expect("valid regex"));
    static PORT: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"(127\.0\.0\.1|\[::1\]|localhost):\d{4,5}\b").expect("valid regex"));
    // Only what the suite chose (right of the arrow); the config's own side stays as written.
    match rewrite.split_once(" -> ") {
        Some((from, to)) => {
            let to = PREFIX.replace_all(to, "<prefix>");
            format!("{from} -> {}", PORT.replace_all(&to, "$1:<port>"))
        }
        None => rewrite.to_string(),
    }
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
    let tables = Tables { expected: expected_table(run), actual: actual_table(run), fix: fix_table(run), rewrites: rewrites_table(run), catalogue: catalogue_values() };
    let object = |table: &BTreeMap<String, String>| {
        let entries = table.iter().map(|(key, text)| format!("{}:{}", json!(key), json!(text))).collect::<Vec<_>>();
        format!("{{\n{}\n}}", entries.join(",\n"))
    };
    fields.push(format!("\"expected\":{}", object(&tables.expected)));
    fields.push(format!("\"actual\":{}", object(&tables.actual)));
    fields.push(format!("\"fix\":{}", object(&tables.fix)));
    let lists: Vec<String> = tables.rewrites.iter().map(|(key, list)| format!("{}:{}", json!(key), json!(list))).collect();
    fields.push(format!("\"rewrites\":{{\n{}\n}}", lists.join(",\n")));
    fields.push(format!("\"direct\":{}", list(run.direct.iter().map(|r| run_text(r, &tables)).collect())));
    fields.push(format!("\"runs\":{}", list(run.runs.iter().map(|r| run_text(r, &tables)).collect())));
    // Only a matrix of more than one runtime compares them.
    if !run.runtime_differences.is_empty() {
        fields.push(format!("\"runtime_differences\":{}", list(run.runtime_differences.iter().map(|d| entry(serde_json::to_string(d))).collect())));
    }
    if !run.causes.is_empty() {
        fields.push(format!("\"causes\":{}", list(run.causes.iter().map(|c| entry(serde_json::to_string(c))).collect())));
    }
    format!("{{{}}}\n", fields.join(",\n"))
}

/// What cells leave out because the document says it once (see [`run_text`]).
struct Tables {
    expected: BTreeMap<String, String>,
    actual: BTreeMap<String, String>,
    fix: BTreeMap<String, String>,
    rewrites: BTreeMap<String, Vec<String>>,
    /// The catalogue the document carries (`checks`): the sign and fix a cell defaults to.
    catalogue: Vec<Value>,
}

/// The key of a cell's Expected in the document's `expected` table: the same check, profile and
/// transport ask the same of every proxy.
pub(crate) fn expected_key(id: &str, profile: Profile, transport: crate::tls::Transport) -> String {
    format!("{id} {profile} {transport}")
}

/// Per check, profile and transport, the Expected most cells share (the first in text order on
/// a tie, so the table is the same for the same cells).
fn expected_table(run: &MatrixRun) -> BTreeMap<String, String> {
    usual_text(run, |c, r| expected_key(&c.id, r.profile, r.transport), |c| &c.expected)
}

/// Per check, profile, transport and grade, the Actual most cells share: what a pass measured
/// when no number in it changes from run to run, the reason of a skip.
pub(crate) fn actual_table(run: &MatrixRun) -> BTreeMap<String, String> {
    usual_text(run, |c, r| actual_key(c, r), |c| &c.actual)
}

/// Per check and proxy, the Fix most failing or warning cells share: the kind's own advice
/// (see [`crate::proxies::kinds`]), said once.
pub(crate) fn fix_table(run: &MatrixRun) -> BTreeMap<String, String> {
    usual_text(run, |c, r| fix_key(c, r), |c| &c.fix)
}

/// Per proxy, runtime and config, the rewrites most of its runs share (two or more).
fn rewrites_table(run: &MatrixRun) -> BTreeMap<String, Vec<String>> {
    let mut counts: BTreeMap<String, BTreeMap<&Vec<String>, usize>> = BTreeMap::new();
    for r in &run.runs {
        *counts.entry(rewrites_key(r)).or_default().entry(&r.rewrites).or_default() += 1;
    }
    counts
        .into_iter()
        .filter_map(|(key, lists)| {
            let best = lists.into_iter().filter(|(list, n)| *n >= 2 && !list.is_empty()).max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))?;
            Some((key, best.0.clone()))
        })
        .collect()
}

/// The key of a run's rewrites in the `rewrites` table.
fn rewrites_key(r: &RunResult) -> String {
    format!("{} {} {}", r.proxy, r.runtime, r.config)
}

/// The key of a cell's Fix in the `fix` table.
fn fix_key(c: &Outcome, run: &RunResult) -> String {
    format!("{} {} {}", c.id, run.proxy, c.grade)
}

/// The key of a cell's Actual in the `actual` table.
pub(crate) fn actual_key(c: &Outcome, run: &RunResult) -> String {
    format!("{} {}", expected_key(&c.id, run.profile, run.transport), c.grade)
}

/// Per `key` of a cell, the `text` most cells share.
fn usual_text(run: &MatrixRun, key: impl Fn(&Outcome, &RunResult) -> String, text: impl Fn(&Outcome) -> &String) -> BTreeMap<String, String> {
    let mut counts: BTreeMap<String, BTreeMap<&str, usize>> = BTreeMap::new();
    for r in run.direct.iter().chain(&run.runs) {
        for c in &r.checks {
            *counts.entry(key(c, r)).or_default().entry(text(c).as_str()).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .filter_map(|(key, texts)| {
            // A text no other cell shares stays in its cell: the table would only add a line.
            let best = texts.iter().filter(|(_, n)| **n >= 2).max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))?;
            Some((key, best.0.to_string())).filter(|(_, text)| !text.is_empty())
        })
        .collect()
}

/// The Failure sign and Fix a cell has unless it says otherwise: the catalogue's for a `warn`
/// or `fail`, none for the other grades.
fn default_sign_and_fix<'a>(catalogue: &'a [Value], id: &str, grade: Grade) -> (&'a str, &'a str) {
    if !matches!(grade, Grade::Warn | Grade::Fail) {
        return ("", "");
    }
    let entry = catalogue.iter().find(|c| c.get("id").and_then(Value::as_str) == Some(id));
    let text = |k: &str| entry.and_then(|c| c.get(k)).and_then(Value::as_str).unwrap_or_default();
    (text("sign"), text("fix"))
}

fn catalogue_values() -> Vec<Value> {
    checks::catalogue().iter().filter_map(|c| serde_json::to_value(c).ok()).collect()
}

/// One run: its header on one line, then one cell per line. A cell leaves out what the document
/// already says: its Expected when it is the `expected` table's, its sign and fix when they are
/// the catalogue's.
fn run_text(result: &RunResult, tables: &Tables) -> String {
    // Every cell's time on the header line: a cell's line changes only when what it measured
    // does, not on every republish.
    let cells: Vec<String> = result
        .checks
        .iter()
        .map(|c| {
            let key = expected_key(&c.id, result.profile, result.transport);
            let shared = tables.expected.get(&key).map(String::as_str).unwrap_or_default();
            let usual = tables.actual.get(&actual_key(c, result)).map(String::as_str);
            let (sign, fix) = default_sign_and_fix(&tables.catalogue, &c.id, c.grade);
            let said = |k: &str, v: &Value| match k {
                "elapsed_ms" => false,
                "expected" => v.as_str() != Some(shared),
                "actual" => usual.is_none() || v.as_str() != usual,
                "sign" => v.as_str() != Some(sign),
                // Left out when the reader would restore it: the proxy's usual fix, else the
                // catalogue's.
                "fix" => v.as_str() != Some(tables.fix.get(&fix_key(c, result)).map(String::as_str).unwrap_or(fix)),
                "measurements" => !v.is_null(),
                _ => true,
            };
            ordered(&cell_fields(c).into_iter().filter(|(k, v)| said(k, v)).collect::<Vec<_>>())
        })
        .collect();
    let mut header = run_fields(result);
    if tables.rewrites.get(&rewrites_key(result)) == Some(&result.rewrites) {
        header.retain(|(k, _)| *k != "rewrites");
    }
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
    object(run_fields(result))
}

/// Named fields as one JSON object.
fn object(fields: Vec<(&'static str, Value)>) -> Value {
    Value::Object(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
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
    object(cell_fields(c))
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
    if !(1..=SCHEMA).contains(&schema) {
        return Err(format!("schema {schema}, this proxy-suite reads schemas 1 to {SCHEMA}"));
    }
    let parse = |k: &str| doc.get(k).cloned().ok_or_else(|| format!("no `{k}` field"));
    // What cells leave out (schema 3): the document's own catalogue and Expected table.
    let table = |k: &str| -> Result<BTreeMap<String, String>, String> {
        match doc.get(k) {
            Some(t) => serde_json::from_value(t.clone()).map_err(|e| format!("`{k}`: {e}")),
            None => Ok(BTreeMap::new()),
        }
    };
    let tables = Tables {
        expected: table("expected")?,
        actual: table("actual")?,
        fix: table("fix")?,
        rewrites: match doc.get("rewrites") {
            Some(t) => serde_json::from_value(t.clone()).map_err(|e| format!("`rewrites`: {e}"))?,
            None => BTreeMap::new(),
        },
        catalogue: doc.get("checks").and_then(Value::as_array).cloned().unwrap_or_else(catalogue_values),
    };
    let runs = |k: &str| -> Result<Vec<RunResult>, String> {
        parse(k)?
            .as_array()
            .ok_or_else(|| format!("`{k}` is not a list"))?
            .iter()
            .map(|v| run_from_value(v, &tables))
            .collect()
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
        causes: match doc.get("causes") {
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("`causes`: {e}"))?,
            None => Vec::new(),
        },
    };
    Ok(Document { schema, evidence, run })
}

/// One run of `direct` or `runs` back into a [`RunResult`], each cell completed with what it
/// left out (see [`run_text`]).
fn run_from_value(v: &Value, tables: &Tables) -> Result<RunResult, String> {
    let label = format!("{} {}", v.pointer("/proxy/name").unwrap_or(&Value::Null), v.get("config").unwrap_or(&Value::Null));
    let text = |p: &str| v.pointer(p).and_then(Value::as_str).map(String::from);
    let field = |k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    let or_default = |k: &str| v.get(k).filter(|x| !x.is_null()).cloned();
    let fail = |k: &str, e: serde_json::Error| format!("run {label}: `{k}`: {e}");
    let profile: Profile = serde_json::from_value(field("profile")).map_err(|e| fail("profile", e))?;
    let transport: crate::tls::Transport =
        or_default("transport").map(serde_json::from_value).transpose().map_err(|e| fail("transport", e))?.unwrap_or_default();
    let mut cells = with_times(field("checks"), v.get("check_ms"));
    for cell in cells.as_array_mut().into_iter().flatten() {
        let id = cell.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        let grade: Grade = serde_json::from_value(cell.get("grade").cloned().unwrap_or(Value::Null)).map_err(|e| fail("grade", e))?;
        let (sign, fix) = default_sign_and_fix(&tables.catalogue, &id, grade);
        let key = expected_key(&id, profile, transport);
        let shared = tables.expected.get(&key).cloned().unwrap_or_default();
        let usual = tables.actual.get(&format!("{key} {grade}")).cloned().unwrap_or_default();
        let proxy = v.pointer("/proxy/name").and_then(Value::as_str).unwrap_or_default();
        let kind_fix = tables.fix.get(&format!("{id} {proxy} {grade}")).map(String::as_str).unwrap_or(fix);
        if cell.get("measurements").is_none() {
            cell["measurements"] = Value::Null;
        }
        for (k, default) in [("expected", shared.as_str()), ("actual", usual.as_str()), ("sign", sign), ("fix", kind_fix)] {
            if cell.get(k).is_none() {
                cell[k] = json!(default);
            }
        }
    }
    Ok(RunResult {
        proxy: text("/proxy/name").ok_or_else(|| format!("run {label}: no proxy name"))?,
        version: text("/proxy/version"),
        source: text("/proxy/source").unwrap_or_default(),
        runtime: text("/proxy/runtime").unwrap_or_else(|| "native".into()),
        image: v.pointer("/proxy/image").filter(|x| !x.is_null()).cloned().map(serde_json::from_value).transpose().map_err(|e| fail("image", e))?,
        transport,
        config: text("/config").ok_or_else(|| format!("run {label}: no config"))?,
        role: serde_json::from_value(field("role")).map_err(|e| fail("role", e))?,
        negative_control: or_default("negative_control").map(serde_json::from_value).transpose().map_err(|e| fail("negative_control", e))?.unwrap_or_default(),
        profile,
        setup_error: serde_json::from_value(field("setup_error")).map_err(|e| fail("setup_error", e))?,
        rewrites: match or_default("rewrites") {
            Some(list) => serde_json::from_value(list).map_err(|e| fail("rewrites", e))?,
            // Left out: the table's list for its proxy, runtime and config (none: nothing).
            None => {
                let runtime = text("/proxy/runtime").unwrap_or_else(|| "native".into());
                let key = format!("{} {runtime} {}", text("/proxy/name").unwrap_or_default(), text("/config").unwrap_or_default());
                tables.rewrites.get(&key).cloned().unwrap_or_default()
            }
        },
        checks: serde_json::from_value(cells).map_err(|e| fail("checks", e))?,
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
    fn published_evidence_is_the_same_when_published_again() {
        let m = json!({"paths": [{"path": "/api/event/ws", "problem": "x".repeat(181)}, {"path": "/b", "problem": "y".repeat(90)}]});
        let once = published_measurements("ws.upgrade", &m);
        assert!(once["paths"][0]["problem"].as_str().unwrap().ends_with("(181 bytes in all)"), "{once}");
        assert_eq!(published_measurements("ws.upgrade", &once), once);
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
