//! The matrix runner: every available proxy x config x profile of a [`Plan`], all at once (the
//! long checks overlap, so the whole run costs about one idle period), with a progress bar, or
//! one deterministic [`Shard`] of it, in one runtime or in several side by side (`--runtime
//! native,docker`: every request once per runtime, all at once, and every grade that differs
//! between them listed as a [`RuntimeDifference`]). What it produces is a [`MatrixRun`]; the
//! files are written by [`crate::report`], which only writes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use mock_server::Profile;

use crate::report::{self, Evidence, Machine, MatrixRun, ProxyEntry, RuntimeDifference, Shard};
use crate::proxies::{self, catalogue, Availability, ConfigFile, NativeRuntime, ProxySpec, Runtime};
use crate::run::{self, RunRequest, RunResult, Schedule};

/// What a matrix run covers.
#[derive(Debug, Clone)]
pub struct Plan {
    pub idle: Duration,
    /// Proxy name prefixes to include; empty means all.
    pub proxies: Vec<String>,
    /// Check ids; empty means all.
    pub only: Vec<String>,
    /// Config ids (`nginx/first-try.conf`) to include; empty means all.
    pub configs: Vec<String>,
    /// Run only this slice of the requests (see [`requests`]); `None` runs them all.
    pub shard: Option<Shard>,
    /// The browser tier (`--browser`): this process's Chromium, used by the runs
    /// [`run::browser_tier_applies`] selects.
    pub browser: Option<Arc<crate::browser::Browser>>,
}

/// Every (proxy, config, profile) the plan covers, and the catalogue entries.
///
/// With a shard `K/N`, the requests are sorted by `(proxy, config, profile)` and shard K takes
/// the K-th, (K+N)-th, ... of them: a slice that depends only on the plan and the installed
/// proxies, so N machines running shards 1..N together run every request exactly once.
pub fn requests(plan: &Plan) -> Result<(Vec<ProxyEntry>, Vec<RunRequest>), String> {
    let configs = proxies::config::discover(&proxies::config::default_root())?;
    let mut entries = Vec::new();
    let mut requests = Vec::new();
    for spec in catalogue::all() {
        if !plan.proxies.is_empty() && !plan.proxies.iter().any(|p| spec.name.starts_with(p.as_str())) {
            continue;
        }
        let availability = spec.availability();
        entries.push(entry(&spec, &availability));
        if !matches!(availability, Availability::Available { .. }) {
            continue;
        }
        for config in configs.iter().filter(|c| c.kind == spec.kind) {
            if !plan.configs.is_empty() && !plan.configs.contains(&config.id) {
                continue;
            }
            let transports = run::transports_for(config, &proxies::config::default_root());
            for profile in run::profiles_for(config) {
                for transport in &transports {
                    let req = request(&spec, config, profile, *transport, &transports, plan);
                    // A run that would grade nothing (`--only browser.*` over TLS) is not started.
                    if !run::selected(&req.only, req.browser.is_some()).is_empty() {
                        requests.push(req);
                    }
                }
            }
        }
    }
    if let Some(shard) = plan.shard {
        requests.sort_by(|a, b| request_key(a).cmp(&request_key(b)));
        requests = requests.into_iter().skip(shard.index - 1).step_by(shard.count).collect();
    }
    Ok((entries, requests))
}

/// The stable key a shard slices by.
fn request_key(r: &RunRequest) -> (String, String, &'static str, &'static str) {
    (r.spec.name.clone(), r.config.id.clone(), r.profile.as_str(), r.transport.as_str())
}

fn request(spec: &ProxySpec, config: &ConfigFile, profile: Profile, transport: crate::tls::Transport, offered: &[crate::tls::Transport], plan: &Plan) -> RunRequest {
    let browser = plan.browser.clone().filter(|_| run::browser_tier_applies(config, transport, offered));
    RunRequest { spec: spec.clone(), config: config.clone(), profile, idle: plan.idle, only: plan.only.clone(), keep_on_fail: false, transport, browser }
}

fn entry(spec: &ProxySpec, availability: &Availability) -> ProxyEntry {
    let (version, missing) = match availability {
        Availability::Available { version } => (Some(version.clone()), None),
        Availability::Missing { reason, hint } => (None, Some(format!("{reason}; {hint}"))),
    };
    ProxyEntry { name: spec.name.clone(), version, source: spec.source.describe(), runs_on: spec.runs_on.clone(), missing }
}

/// Runs the plan: the direct control once per profile (in every shard, so each shard's report
/// stands alone and its proxies are compared with a control measured beside them), every
/// request concurrently.
pub async fn execute(plan: &Plan, progress: Option<&ProgressBar>) -> Result<MatrixRun, String> {
    let runtime: Arc<dyn Runtime> = Arc::new(NativeRuntime::new(proxies::config::default_root()).discarding_failed_setups());
    execute_with(plan, progress, vec![runtime]).await
}

/// [`execute`] in other runtimes (`--runtime docker`, `--runtime native,docker`): every
/// request runs once in each, concurrently.
pub async fn execute_with(plan: &Plan, progress: Option<&ProgressBar>, runtimes: Vec<Arc<dyn Runtime>>) -> Result<MatrixRun, String> {
    let started = Instant::now();
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let (proxies, requests) = requests(plan)?;
    let requests: Vec<(RunRequest, Arc<dyn Runtime>)> =
        requests.into_iter().flat_map(|req| runtimes.iter().map(move |rt| (req.clone(), rt.clone()))).collect();
    let mut profiles: Vec<Profile> = requests.iter().map(|(r, _)| r.profile).collect();
    profiles.sort_by_key(|p| p.to_string());
    profiles.dedup();
    if profiles.is_empty() {
        profiles = vec![Profile::Openchamber, Profile::Bare];
    }
    let schedule = Schedule::new(requests.len() + profiles.len(), 2).with_browser(plan.browser.is_some());
    if let Some(bar) = progress {
        bar.set_length((requests.len() + profiles.len()) as u64);
    }
    let direct = futures::future::join_all(profiles.iter().map(|profile| {
        let schedule = schedule.clone();
        async move {
            let r = run::run_direct(*profile, 1, plan.idle, &plan.only, &schedule).await;
            if let Some(bar) = progress {
                bar.inc(1);
            }
            r
        }
    }));
    let runs = futures::future::join_all(requests.into_iter().map(|(req, runtime)| {
        let schedule = schedule.clone();
        async move {
            let r = run::run_proxy(runtime, req, &schedule).await;
            if let Some(bar) = progress {
                bar.inc(1);
                bar.println(status_line(&r));
            }
            r
        }
    }));
    let (direct, runs) = futures::future::join(direct, runs).await;
    if progress.is_some() {
        eprintln!("phases: {}, every run ended after {:.0} s", schedule.phases(), started.elapsed().as_secs_f64());
    }
    let runtime_differences = runtime_differences(&runs, &proxies::config::default_root());
    let causes = published_causes(&runs, &proxies::config::default_root(), plan.idle);
    Ok(MatrixRun {
        started_at,
        machine: machine(),
        idle_s: plan.idle.as_secs(),
        wall_ms: started.elapsed().as_millis() as u64,
        proxies,
        shard: plan.shard,
        direct,
        runs,
        runtime_differences,
        causes,
    })
}

/// The config lines behind the failing and warning cells of `runs` (configs under `root`),
/// found as `check` finds them for each run's proxy: once per config and line with the checks
/// it fails.
pub fn published_causes(runs: &[RunResult], root: &std::path::Path, idle: Duration) -> Vec<crate::report::PublishedCause> {
    use std::collections::BTreeMap;
    let mut lines: BTreeMap<(String, Option<String>, usize, String, String), Vec<String>> = BTreeMap::new();
    for r in runs {
        if crate::proxies::diagnose::not_passed(&r.checks).is_empty() && r.setup_error.as_ref().is_none_or(|e| e.kind != "invalid-config") {
            continue;
        }
        let (Ok(spec), Ok(config)) = (crate::proxies::catalogue::resolve(&r.proxy), ConfigFile::load(&root.join(&r.config), None)) else { continue };
        for c in crate::proxies::diagnose::causes_of_run(r, &config, &spec, false, idle) {
            let file = (c.file != config.path).then(|| c.file.strip_prefix(root).map(|p| p.display().to_string()).unwrap_or_else(|_| c.file.display().to_string()));
            let checks = lines.entry((r.config.clone(), file, c.line, c.text, c.why)).or_default();
            if !checks.contains(&c.check) {
                checks.push(c.check);
            }
        }
    }
    let order = |id: &str| crate::checks::catalogue().iter().position(|c| c.id == id).map_or(0, |i| i + 1);
    lines
        .into_iter()
        .map(|((config, file, line, text, why), mut checks)| {
            checks.sort_by_key(|c| order(c));
            crate::report::PublishedCause { config, file, line, text, why, checks }
        })
        .collect()
}

/// Every check graded differently in two runtimes for the same proxy, config, profile and
/// transport (a setup error counts as a grade: `setup: kind`), with its reason: the `runtime=`
/// entry of the config's `.expected` (under `root`), else the container deployment's own
/// ([`crate::runtimes::docker::deployment_reason`]), else none: then it is unexplained.
pub fn runtime_differences(runs: &[RunResult], root: &std::path::Path) -> Vec<RuntimeDifference> {
    use std::collections::BTreeMap;
    let mut groups: BTreeMap<(String, String, String, &'static str), Vec<&RunResult>> = BTreeMap::new();
    for r in runs {
        groups.entry((r.proxy.clone(), r.config.clone(), r.profile.to_string(), r.transport.as_str())).or_default().push(r);
    }
    let grade_of = |r: &RunResult, id: &str| -> Option<String> {
        match &r.setup_error {
            Some(issue) => Some(format!("setup: {}", issue.kind)),
            None => r.checks.iter().find(|c| c.id == id).map(|c| c.grade.to_string()),
        }
    };
    let mut out = Vec::new();
    for ((proxy, config, profile, transport), mut group) in groups {
        if group.len() < 2 {
            continue;
        }
        // Native first: the reference the container is compared with.
        group.sort_by_key(|r| (r.runtime != "native", r.runtime.clone()));
        let expectations = crate::expected::load(&root.join(format!("{config}.expected"))).unwrap_or_default();
        let mut ids: Vec<String> = Vec::new();
        for r in &group {
            for c in &r.checks {
                if !ids.contains(&c.id) {
                    ids.push(c.id.clone());
                }
            }
        }
        if group.iter().any(|r| r.setup_error.is_some()) && group.iter().any(|r| r.setup_error.is_none()) || ids.is_empty() {
            ids.insert(0, "setup".into());
        }
        for id in ids {
            let grades: Vec<(String, String)> = group
                .iter()
                .map(|r| (r.runtime.clone(), if id == "setup" { r.setup_error.as_ref().map(|i| format!("setup: {}", i.kind)).unwrap_or_else(|| "started".into()) } else { grade_of(r, &id).unwrap_or_else(|| "not run".into()) }))
                .collect();
            if grades.iter().all(|(_, g)| *g == grades[0].1) {
                continue;
            }
            // The runtime that differs from the first (native) one explains itself.
            let Some(other) = group.iter().skip(1).zip(grades.iter().skip(1)).find(|(_, (_, g))| *g != grades[0].1).map(|(r, _)| *r) else { continue };
            let actual = match (&other.setup_error, id.as_str()) {
                (Some(issue), _) => issue.message.lines().next().unwrap_or("").to_string(),
                (None, _) => other.checks.iter().find(|c| c.id == id).map(|c| c.actual.lines().next().unwrap_or("").to_string()).unwrap_or_default(),
            };
            let outcome = other.checks.iter().find(|c| c.id == id);
            let native = group[0].checks.iter().find(|c| c.id == id).filter(|_| group[0].runtime == "native");
            // A run that did not start has no grades: its setup's reason is every check's.
            let reason_id = if other.setup_error.is_some() { "setup" } else { id.as_str() };
            let reason = crate::expected::runtime_reason(&expectations, other, reason_id)
                .map(|e| e.reason.clone())
                .or_else(|| outcome.filter(|_| other.runtime == "docker").and_then(|o| crate::runtimes::docker::deployment_reason(native, o)).map(String::from));
            out.push(RuntimeDifference { proxy: proxy.clone(), config: config.clone(), profile: profile.clone(), transport: transport.to_string(), check: id, grades, actual, reason });
        }
    }
    out
}

fn status_line(r: &RunResult) -> String {
    let grades = match &r.setup_error {
        Some(issue) => format!("setup error ({})", issue.kind),
        None => {
            let count = |g| r.checks.iter().filter(|c| c.grade == g).count();
            use crate::checks::Grade::*;
            format!("{} pass, {} warn, {} fail, {} skip, {} error", count(Pass), count(Warn), count(Fail), count(Skip), count(Error))
        }
    };
    format!("done {:<11} {:<40} {:<12} {:<6} {:<6} {grades}", r.proxy, r.config, r.profile, r.transport, r.runtime)
}

/// The machine the run happened on, for the published results.
pub fn machine() -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
        .unwrap_or_else(|| std::env::consts::OS.to_string());
    let memory_kib: f64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()))
        .unwrap_or(0.0);
    Machine {
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        os,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
    }
}

/// Where and how the `matrix` command writes.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// The folder of the four reports.
    pub dir: PathBuf,
    /// Also write a JUnit XML report here.
    pub junit: Option<PathBuf>,
    /// Keep every measurement of passing cells too (see [`crate::report::Evidence`]).
    pub full_evidence: bool,
}

/// The `matrix` command: run, show progress, write the reports.
pub async fn run(plan: Plan, output: Output, runtimes: Vec<Arc<dyn Runtime>>) -> ExitCode {
    let idle = plan.idle;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} runs  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // The long checks decide the run's length: show how much of the idle window is left.
    let window = idle + Duration::from_secs(20);
    let ticker = {
        let bar = bar.clone();
        let started = Instant::now();
        tokio::spawn(async move {
            loop {
                let left = window.saturating_sub(started.elapsed()).as_secs();
                bar.set_message(format!("long checks (idle {}s): ~{left}s left", idle.as_secs()));
                bar.tick();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let result = execute_with(&plan, Some(&bar), runtimes).await;
    ticker.abort();
    bar.finish_and_clear();
    let matrix = match result {
        Ok(m) => m,
        Err(e) => {
            eprintln!("proxy-suite matrix: {e}");
            return ExitCode::from(2);
        }
    };
    if matrix.runs.is_empty() && plan.shard.is_none() {
        eprintln!("proxy-suite matrix: no proxy available; run `just setup`");
        return ExitCode::from(2);
    }
    let evidence = if output.full_evidence { Evidence::Full } else { Evidence::Summary };
    if let Err(e) = report::write_all(&output.dir, &matrix, evidence) {
        eprintln!("proxy-suite matrix: cannot write {}: {e}", output.dir.display());
        return ExitCode::from(2);
    }
    if let Some(path) = &output.junit {
        if let Err(e) = report::junit::write(path, &report::junit::matrix_report(&matrix)) {
            eprintln!("proxy-suite matrix: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    let shard = plan.shard.map(|s| format!(" (shard {s})")).unwrap_or_default();
    eprintln!("matrix: {} runs{shard} in {:.0}s, written to {}", matrix.runs.len(), matrix.wall_ms as f64 / 1000.0, output.dir.display());
    for d in &matrix.runtime_differences {
        let grades: Vec<String> = d.grades.iter().map(|(rt, g)| format!("{rt} {g}")).collect();
        eprintln!(
            "runtime difference: {} {} {} {} {}: {} — {}",
            d.proxy, d.config, d.profile, d.transport, d.check, grades.join(", "),
            d.reason.as_deref().map(|r| format!("expected: {r}")).unwrap_or_else(|| format!("UNEXPLAINED ({})", d.actual))
        );
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::{self, Grade};

    fn run(runtime: &str, grade: Grade, actual: &str) -> RunResult {
        let info = checks::info("headers.forwarded").unwrap();
        RunResult {
            proxy: "nginx@1.31".into(),
            version: Some("1.31.3".into()),
            source: "test".into(),
            runtime: runtime.into(),
            image: None,
            config: "nginx/openchamber-guide.conf".into(),
            role: None,
            negative_control: Vec::new(),
            profile: Profile::Openchamber,
            transport: crate::tls::Transport::H1,
            setup_error: None,
            rewrites: Vec::new(),
            checks: vec![info.outcome(grade, "e", actual, serde_json::Value::Null)],
            elapsed_ms: 0,
        }
    }

    #[test]
    fn a_grade_that_differs_between_runtimes_is_listed_with_its_reason() {
        let root = proxies::config::default_root();
        let client = checks::CLIENT_IP;
        let same = [run("native", Grade::Pass, "ok"), run("docker", Grade::Pass, "ok")];
        assert!(runtime_differences(&same, &root).is_empty());
        let gateway = format!("request: X-Real-IP \"10.213.0.1\" is not the client {client}; note: upgrade report unavailable (400; see ws.upgrade)");
        let explained = [run("docker", Grade::Fail, &gateway), run("native", Grade::Pass, "ok")];
        let d = runtime_differences(&explained, &root);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].grades, [("native".to_string(), "pass".to_string()), ("docker".to_string(), "fail".to_string())]);
        assert!(d[0].reason.as_deref().is_some_and(|r| r.contains("gateway")), "{d:?}");
        let other = [run("native", Grade::Pass, "ok"), run("docker", Grade::Fail, &format!("request: no X-Forwarded-Proto; {gateway}"))];
        let d = runtime_differences(&other, &root);
        assert_eq!(d[0].reason, None, "another problem besides the client address is unexplained: {d:?}");
    }
}
