//! The conformance run: every check against every available proxy x config x profile, in one
//! run (the long checks overlap). Each run's grades are an insta snapshot, each config's
//! expected-outcomes file is checked against what was measured, every negative control fails
//! the checks it names, and the direct control passes everything.
//!
//! `PROXY_SUITE_IDLE` sets the idle period (default 75 s, as published); snapshots are taken
//! at the default, so a shorter idle period is for local experiments only.

use std::collections::BTreeMap;
use std::time::Duration;

use suite::checks::Grade;
use suite::proxies::{self, ConfigFile};
use suite::matrix::{self, Plan};
use suite::run::RunResult;
use suite::tls::Transport;

fn idle() -> Duration {
    let secs = std::env::var("PROXY_SUITE_IDLE").ok().and_then(|v| v.parse().ok()).unwrap_or(75);
    Duration::from_secs(secs)
}

/// The snapshot of one run: grades only (timings, versions and evidence are volatile), of the
/// checks that apply to its transport (an HTTP/2-only check's skip over HTTP/1.1 says nothing).
fn snapshot(run: &RunResult) -> serde_json::Value {
    let grades: BTreeMap<&str, String> = run
        .checks
        .iter()
        .filter(|c| suite::checks::http2::applies(&c.id, run.transport))
        .map(|c| (c.id.as_str(), c.grade.to_string()))
        .collect();
    let mut snap = serde_json::json!({
        "proxy": run.proxy,
        "config": run.config,
        "profile": run.profile,
        "setup_error": run.setup_error.as_ref().map(|s| s.kind.clone()),
        "grades": grades,
    });
    // Plain-HTTP runs keep the snapshots they had before transports existed.
    if run.transport != Transport::H1 {
        snap["transport"] = serde_json::json!(run.transport);
    }
    snap
}

/// Snapshots no run produced, expected-outcomes files without their config, and entries that
/// apply to no run of their config.
fn stale_files(runs: &[RunResult], configs: &BTreeMap<String, ConfigFile>) -> Vec<String> {
    let mut problems = Vec::new();
    let produced: std::collections::BTreeSet<String> = runs.iter().map(|r| format!("{}.snap", snapshot_name(r))).collect();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    for entry in std::fs::read_dir(&dir).expect("snapshot folder").filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".snap") && !produced.contains(&name) {
            problems.push(format!("stale snapshot tests/snapshots/{name}: no run produces it any more (delete it)"));
        }
    }
    let root = proxies::config::default_root();
    for kind_dir in std::fs::read_dir(&root).expect("proxy-configs").filter_map(|e| e.ok()).map(|e| e.path()) {
        let Ok(files) = std::fs::read_dir(&kind_dir) else { continue };
        for path in files.filter_map(|e| e.ok()).map(|e| e.path()) {
            let Some(config_path) = path.to_str().and_then(|p| p.strip_suffix(".expected")) else { continue };
            if !std::path::Path::new(config_path).exists() {
                problems.push(format!("stale {}: its config {config_path} does not exist", path.display()));
            }
        }
    }
    for (id, config) in configs {
        let expectations = suite::expected::load(&config.expected_path()).unwrap_or_else(|e| panic!("{e}"));
        let of_config: Vec<&RunResult> = runs.iter().filter(|r| &r.config == id).collect();
        for p in suite::expected::unused(&expectations, &of_config) {
            problems.push(format!("{id}.expected {p}"));
        }
    }
    problems
}

fn snapshot_name(run: &RunResult) -> String {
    let name = format!("{}__{}__{}", run.proxy, run.config, run.profile);
    let name = if run.transport == Transport::H1 { name } else { format!("{name}__{}", run.transport) };
    name.replace(['@', '/', '.'], "-")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_proxy_config_and_profile_graded_as_expected() {
    suite::runtimes::stop_on_interrupt();
    let plan = Plan {
        idle: idle(),
        proxies: std::env::var("PROXY_SUITE_PROXIES").map(|v| v.split(',').map(String::from).collect()).unwrap_or_default(),
        only: Vec::new(),
        configs: Vec::new(),
        shard: None,
        browser: None,
    };
    let run = matrix::execute(&plan, None).await.expect("matrix plan");
    eprintln!(
        "conformance: {} runs, idle {} s, wall {:.1} s ({:.2} x idle)",
        run.runs.len(),
        run.idle_s,
        run.wall_ms as f64 / 1000.0,
        run.wall_ms as f64 / 1000.0 / run.idle_s as f64
    );
    let mut problems = Vec::new();
    for p in &run.proxies {
        if let Some(why) = &p.missing {
            if let Err(message) = suite::strict::unavailable(&p.name, why) {
                problems.push(message);
            }
        }
    }

    // The control: the mock itself passes every check that applies to its profile (skips say
    // why: one backend for lb.sticky, no WebSockets on DorkOS).
    for direct in &run.direct {
        for c in &direct.checks {
            if matches!(c.grade, Grade::Fail | Grade::Warn) {
                problems.push(format!("direct/{}: {} is {} ({})", direct.profile, c.id, c.grade, c.actual));
            }
        }
    }

    let configs: BTreeMap<String, ConfigFile> = proxies::config::discover(&proxies::config::default_root())
        .unwrap()
        .into_iter()
        .map(|c| (c.id.clone(), c))
        .collect();
    for r in &run.runs {
        let config = &configs[&r.config];
        let label = format!("{} {} {} {}", r.proxy, r.config, r.profile, r.transport);
        // Expected outcomes: every non-pass listed with its reason, no stale entries.
        let expectations = suite::expected::load(&config.expected_path()).unwrap_or_else(|e| panic!("{e}"));
        for p in suite::expected::compare(&expectations, r) {
            problems.push(format!("{label}: {p}"));
        }
        // A negative control fails what it names (`id:warn`: warns, where the catalogue grades
        // that fault as a warning).
        for named in &config.negative_control {
            let (id, want) = match named.split_once(':') {
                Some((id, "warn")) => (id, Grade::Warn),
                _ => (named.as_str(), Grade::Fail),
            };
            let grade = r.checks.iter().find(|c| c.id == id).map(|c| c.grade);
            // The browser tier's controls are graded by tests/browser.rs (this run has no browser).
            let applies = suite::checks::http2::applies(id, r.transport) && !suite::checks::info(id).is_some_and(|c| c.browser);
            // A check graded on one transport only (`h2.websocket` on h2, `tls.redirect` on the
            // plain listener's h1) skips on the others, as the `.expected` file says there.
            let not_this_transport = grade == Some(Grade::Skip)
                && expectations.iter().any(|e| e.id == id && e.outcome == "skip" && e.transport.as_deref() == Some(r.transport.as_str()));
            if r.setup_error.is_none() && applies && grade != Some(want) && !not_this_transport {
                problems.push(format!("{label}: negative control must {want} {id}, got {grade:?}"));
            }
        }
    }

    // Stale files: with every proxy run, each snapshot and each expected-outcomes file must
    // belong to a run that still happens (a deleted config or proxy leaves them behind).
    let complete = plan.proxies.is_empty() && run.proxies.iter().all(|p| p.missing.is_none());
    if complete {
        problems.extend(stale_files(&run.runs, &configs));
    }

    // Said before the snapshots, which stop at the first difference: a grade that changed is
    // listed here with what was measured (a snapshot holds grades only).
    if !problems.is_empty() {
        eprintln!("{} problems:\n{}", problems.len(), problems.join("\n"));
    }
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        for r in &run.runs {
            insta::assert_json_snapshot!(snapshot_name(r), snapshot(r));
        }
    });
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}
