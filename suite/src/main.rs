//! `proxy-suite`: list the proxies, check one config, or run the whole matrix.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mock_server::Profile;
use suite::checks::Grade;
use suite::matrix::{self, Plan};
use suite::lang::Lang;
use suite::proxies::diagnose::{self, Cause};
use suite::proxies::{self, catalogue, Availability, ConfigFile};
use suite::report::{self, merge, MatrixRun, Shard};
use suite::runtimes::{self, DockerRuntime, NativeRuntime, Runtime};
use suite::run::{self, RunRequest, RunResult};
use suite::tls::Transport;

#[derive(Parser)]
#[command(name = "proxy-suite", version, about = "Does your reverse proxy really work in front of a real-time web app? Runs real proxies in front of a mock OpenChamber/DorkOS backend and grades every requirement of the reverse-proxy guides.")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List every proxy with its version, source and whether it is available here.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run the checks on one config, as a user reproducing a bug report would.
    Check {
        /// Proxy to run, `kind[@version]` (`nginx`, `nginx@1.22`, `caddy@2.11`, `npm`, ...).
        #[arg(long)]
        proxy: String,
        /// The config file, exactly as you run it (listen port and backend address are rewritten).
        #[arg(long)]
        config: PathBuf,
        /// Backend profile: `openchamber` (default), `bare` (no helper headers) or `dorkos`.
        #[arg(long, value_enum)]
        profile: Option<Profile>,
        /// Idle period in seconds for ws.idle, sse.idle and http.slow.
        #[arg(long, default_value_t = 75)]
        idle: u64,
        /// Run only these check ids (repeatable).
        #[arg(long = "only")]
        only: Vec<String>,
        /// Transport of the checks' client: `h1` (plain HTTP/1.1), `h1-tls`, `h2` (TLS, ALPN
        /// h2) or `all` (each the config offers). Default: the first the config offers.
        #[arg(long)]
        transport: Option<String>,
        /// Print JSON (schema 1) instead of a table.
        #[arg(long)]
        json: bool,
        /// Also write the result as JUnit XML to this file (for CI).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Write a corrected copy of the config (never the original) with the smallest change
        /// that fixes each failed check, re-run those checks on it, and show the diff only when
        /// they pass.
        #[arg(long)]
        fix: bool,
        /// Where `--fix` writes the corrected copy (default: beside the config, `NAME.fixed.EXT`).
        #[arg(long, value_name = "FILE", requires = "fix")]
        write: Option<PathBuf>,
        /// Language of the failure sign and the guide's rule (`en`, `zh`, `ko`), quoted from the
        /// OpenChamber guide in that language. Default: from LC_ALL, LC_MESSAGES or LANG.
        #[arg(long, value_enum)]
        lang: Option<Lang>,
        /// Also run the browser tier (`browser.*`) in headless Chromium (Debian's `chromium`,
        /// `./proxy-suite setup --with-browser`), over the transport the checks use (over TLS Chromium negotiates h2 where offered).
        #[arg(long)]
        browser: bool,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Run every available proxy x config x profile and write the matrix to results/.
    Matrix {
        /// Idle period in seconds for ws.idle, sse.idle and http.slow.
        #[arg(long, default_value_t = 75)]
        idle: u64,
        /// Output folder.
        #[arg(long, default_value = "results")]
        out: PathBuf,
        /// Only proxies whose name starts with one of these (repeatable).
        #[arg(long = "proxy")]
        proxies: Vec<String>,
        /// Run only these check ids (repeatable).
        #[arg(long = "only")]
        only: Vec<String>,
        /// Only these configs, by id (`nginx/first-try.conf`, repeatable).
        #[arg(long = "config", value_name = "ID")]
        configs: Vec<String>,
        /// Run only shard K of N (`2/3`): every N-th run of the plan sorted by proxy, config
        /// and profile; join the outputs with `proxy-suite merge`.
        #[arg(long, value_name = "K/N")]
        shard: Option<Shard>,
        /// Also write the results as JUnit XML to this file (for CI).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Keep every measurement of passing cells too (large files; not for publishing).
        #[arg(long)]
        full_evidence: bool,
        /// Also run the browser tier (`browser.*`) in headless Chromium (Debian's `chromium`,
        /// `./proxy-suite setup --with-browser`), on the guides' examples,
        /// the known-good configs and the browser's negative controls, over plain HTTP/1.1 and TLS (h2 where offered).
        #[arg(long)]
        browser: bool,
        /// `native` (the binaries of this machine), `docker` (the locally built images;
        /// loopback backends moved to the Docker host, host.docker.internal mapped), or both
        /// (`native,docker` or `both`): every run in each, side by side, and each grade that
        /// differs between them listed as a finding.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "native")]
        runtime: Vec<MatrixRuntime>,
    },
    /// Join the outputs of `matrix --shard` runs (folders holding matrix.json) into one matrix.
    Merge {
        /// Shard output folders (or their matrix.json files).
        #[arg(required = true, value_name = "DIR")]
        inputs: Vec<PathBuf>,
        /// Output folder.
        #[arg(long, default_value = "results")]
        out: PathBuf,
        /// Also write the merged results as JUnit XML to this file.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Keep every measurement of passing cells, where every input has them.
        #[arg(long)]
        full_evidence: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RuntimeKind {
    Native,
    Docker,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum MatrixRuntime {
    Native,
    Docker,
    /// native and docker.
    Both,
}

impl MatrixRuntime {
    /// The runtimes `--runtime` names, each once, native first.
    fn expand(list: &[MatrixRuntime]) -> Vec<RuntimeKind> {
        let has = |k: MatrixRuntime| list.iter().any(|r| *r == k || *r == MatrixRuntime::Both);
        let mut out = Vec::new();
        if has(MatrixRuntime::Native) {
            out.push(RuntimeKind::Native);
        }
        if has(MatrixRuntime::Docker) {
            out.push(RuntimeKind::Docker);
        }
        out
    }
}

/// How `check` brings the proxy up.
#[derive(clap::Args)]
struct RuntimeArgs {
    /// `native` (the binaries of this machine) or `docker` (a container of the locally built
    /// image, on its own Docker network; `bash scripts/images.sh` builds the images).
    #[arg(long, value_enum, default_value_t = RuntimeKind::Native)]
    runtime: RuntimeKind,
    /// docker: map host.docker.internal to host-gateway (`--add-host
    /// host.docker.internal:host-gateway`); without it the name does not resolve, as on Linux.
    #[arg(long)]
    host_gateway: bool,
    /// docker: rewrite 127.0.0.1/localhost backends to the Docker host. By default they are
    /// kept: inside a container they are the container itself (the 502 users see).
    #[arg(long)]
    rewrite_loopback: bool,
    /// Run the checks in a container of this image (implies --runtime docker), with the config
    /// mounted where the image reads it (`--proxy` names the kind: `--proxy nginx --image
    /// nginx:1.27`). The image must be in the local engine: nothing is pulled.
    #[arg(long, value_name = "REF")]
    image: Option<String>,
    /// The image's layout, where its config goes: `official` (the kind's official image:
    /// nginx's conf.d/default.conf, /usr/local/etc/haproxy, httpd's httpd.conf) or `debian`
    /// (Debian's packages: sites-enabled/default, /etc/haproxy, /etc/apache2). Default:
    /// detected from paths in the image.
    #[arg(long, value_enum, requires = "image")]
    layout: Option<suite::proxies::kinds::Layout>,
}

/// The runtime to use, or the setup error (exit 2) when Docker is asked for and absent: a
/// failure naming the component under PROXY_SUITE_STRICT=1.
fn make_runtime(kind: RuntimeKind, host_gateway: bool, rewrite_loopback: bool, matrix: bool, image: Option<runtimes::UserImage>) -> Result<Arc<dyn Runtime>, String> {
    let root = proxies::config::default_root();
    match kind {
        RuntimeKind::Native if matrix => Ok(Arc::new(NativeRuntime::new(root).discarding_failed_setups())),
        RuntimeKind::Native => Ok(Arc::new(NativeRuntime::new(root))),
        RuntimeKind::Docker => {
            if let Err(reason) = runtimes::docker::engine() {
                let reason = format!("{reason} (start the Docker engine, or use --runtime native)");
                suite::strict::unavailable("docker", &reason)?;
                return Err(format!("--runtime docker: {reason}"));
            }
            let mut docker = if matrix { DockerRuntime::for_matrix(root) } else { DockerRuntime::new(root) };
            docker.host_gateway |= host_gateway;
            if rewrite_loopback {
                docker.loopback = runtimes::Loopback::ToHost;
            }
            docker.image = image;
            Ok(Arc::new(docker))
        }
    }
}

fn main() -> ExitCode {
    // Ctrl-C: stop every proxy this process started and remove its prefix before exiting.
    runtimes::stop_on_interrupt();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match cli.command {
        Cmd::List { json } => list(json),
        Cmd::Check { proxy, config, profile, idle, only, transport, json, junit, fix, write, lang, browser, runtime: r } => {
            let image = r.image.clone().map(|reference| runtimes::UserImage { reference, layout: r.layout });
            let kind = if image.is_some() { RuntimeKind::Docker } else { r.runtime };
            let proxy_runtime = match make_runtime(kind, r.host_gateway, r.rewrite_loopback, false, image) {
                Ok(p) => p,
                Err(e) => return setup_failure(&e),
            };
            let repair = fix.then(|| write.clone());
            let lang = lang.unwrap_or_else(Lang::from_env);
            runtime.block_on(async {
                let browser = match launch_browser(&only, browser).await {
                    Ok(b) => b,
                    Err(e) => return setup_failure(&e),
                };
                let code = check(proxy, config, profile, Duration::from_secs(idle), only, transport, json, junit, proxy_runtime, r.image, repair, lang, browser.clone()).await;
                close_browser(browser).await;
                code
            })
        }
        Cmd::Matrix { idle, out, proxies, only, configs, shard, junit, full_evidence, browser, runtime: kinds } => {
            let mut proxy_runtimes = Vec::new();
            for kind in MatrixRuntime::expand(&kinds) {
                match make_runtime(kind, true, true, true, None) {
                    Ok(p) => proxy_runtimes.push(p),
                    Err(e) => return setup_failure(&e),
                }
            }
            runtime.block_on(async {
                let browser = match launch_browser(&only, browser).await {
                    Ok(b) => b,
                    Err(e) => return setup_failure(&e),
                };
                let plan = Plan { idle: Duration::from_secs(idle), proxies, only, configs, shard, browser: browser.clone() };
                let code = matrix::run(plan, matrix::Output { dir: out, junit, full_evidence }, proxy_runtimes).await;
                close_browser(browser).await;
                code
            })
        }
        Cmd::Merge { inputs, out, junit, full_evidence } => merge(&inputs, &out, junit.as_deref(), full_evidence),
    }
}

/// `--only browser.*` without `--browser` would run nothing: said at once.
fn browser_tier_asked(only: &[String], browser: bool) -> Result<(), String> {
    match only.iter().find(|id| suite::checks::info(id).is_some_and(|c| c.browser)) {
        Some(id) if !browser => Err(format!("`{id}` is a check of the browser tier: add --browser")),
        _ => Ok(()),
    }
}

/// The process's one Chromium, when `--browser` asks for it; a missing one is a setup error
/// with the install hint, and so is a browser check in `--only` without `--browser`.
async fn launch_browser(only: &[String], wanted: bool) -> Result<Option<Arc<suite::browser::Browser>>, String> {
    browser_tier_asked(only, wanted)?;
    if !wanted {
        return Ok(None);
    }
    let browser = suite::browser::Browser::launch().await.map_err(|e| format!("--browser: {e}"))?;
    eprintln!("browser tier: {}", browser.version());
    Ok(Some(Arc::new(browser)))
}

/// Closes the browser (its processes and profile); every run has let go of it by now.
async fn close_browser(browser: Option<Arc<suite::browser::Browser>>) {
    if let Some(browser) = browser.and_then(|b| Arc::try_unwrap(b).ok()) {
        browser.close().await;
    }
}

/// `proxy-suite merge`: bad input (a missing folder, overlapping shards, different idle
/// periods or schemas) exits 2 with the reason.
fn merge(inputs: &[PathBuf], out: &Path, junit: Option<&Path>, full_evidence: bool) -> ExitCode {
    let read: Result<Vec<_>, String> = inputs.iter().map(|p| merge::read(p)).collect();
    let merged = match read.and_then(|inputs| merge::merge(inputs, full_evidence)) {
        Ok(m) => m,
        Err(e) => return setup_failure(&format!("merge: {e}")),
    };
    for w in &merged.warnings {
        eprintln!("proxy-suite merge: warning: {w}");
    }
    let mut run = merged.run;
    fill_roles(&mut run);
    // A native run and its container twin may have been in different shards.
    run.runtime_differences = matrix::runtime_differences(&run.runs, &proxies::config::default_root());
    run.causes = matrix::published_causes(&run.runs, &proxies::config::default_root(), Duration::from_secs(run.idle_s));
    if let Err(e) = report::write_all(out, &run, merged.evidence) {
        return setup_failure(&format!("merge: cannot write {}: {e}", out.display()));
    }
    if let Some(path) = junit {
        if let Err(e) = report::junit::write(path, &report::junit::matrix_report(&run)) {
            return setup_failure(&format!("merge: cannot write {}: {e}", path.display()));
        }
    }
    eprintln!("merge: {} inputs, {} runs, written to {}", inputs.len(), run.runs.len(), out.display());
    ExitCode::SUCCESS
}

/// Schema 1 recorded no config roles: take them from `proxy-configs/` where the config is
/// still there, so the reports can tell guide examples and negative controls apart.
fn fill_roles(run: &mut MatrixRun) {
    if run.runs.iter().all(|r| r.role.is_some()) {
        return;
    }
    let Ok(configs) = proxies::config::discover(&proxies::config::default_root()) else { return };
    for r in run.runs.iter_mut().filter(|r| r.role.is_none()) {
        if let Some(c) = configs.iter().find(|c| c.id == r.config) {
            r.role = Some(c.role);
            r.negative_control = c.negative_control.clone();
        }
    }
}

fn list(json: bool) -> ExitCode {
    let rows: Vec<serde_json::Value> = catalogue::all()
        .into_iter()
        .map(|spec| {
            let availability = spec.availability();
            serde_json::json!({
                "name": spec.name,
                "kind": spec.kind,
                "pinned": spec.pinned,
                "source": spec.source.describe(),
                "binary": spec.binary,
                "runs_on": spec.runs_on,
                "availability": availability,
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"schema": 1, "proxies": rows})).unwrap());
        return ExitCode::SUCCESS;
    }
    println!("{:<12} {:<24} {:<34} STATUS", "PROXY", "VERSION", "SOURCE");
    for spec in catalogue::all() {
        let (version, status) = match spec.availability() {
            Availability::Available { version } => (version, "available".to_string()),
            Availability::Missing { reason, hint } => (spec.pinned.clone(), format!("missing: {reason}; {hint}")),
        };
        let source = match &spec.runs_on {
            Some(nginx) => format!("generated config on {nginx}"),
            None => spec.source.describe(),
        };
        println!("{:<12} {:<24} {:<34} {status}", spec.name, version, source);
    }
    ExitCode::SUCCESS
}

#[allow(clippy::too_many_arguments)]
async fn check(
    proxy: String,
    config: PathBuf,
    profile: Option<Profile>,
    idle: Duration,
    only: Vec<String>,
    transport: Option<String>,
    json: bool,
    junit: Option<PathBuf>,
    runtime: Arc<dyn Runtime>,
    image: Option<String>,
    repair: Option<Option<PathBuf>>,
    lang: Lang,
    browser: Option<Arc<suite::browser::Browser>>,
) -> ExitCode {
    let mut spec = match catalogue::resolve(&proxy) {
        Ok(s) => s,
        Err(e) => return setup_failure(&e),
    };
    if let Some(reference) = &image {
        // A user's image: `--proxy` gave the kind; the image is what runs.
        spec.name = format!("{} ({reference})", spec.kind);
    }
    for id in &only {
        if suite::checks::info(id).is_none() {
            let ids: Vec<&str> = suite::checks::catalogue().iter().map(|c| c.id).collect();
            return setup_failure(&format!("unknown check `{id}`; known: {}", ids.join(", ")));
        }
    }
    let config = match ConfigFile::load(&config, Some(spec.kind)) {
        Ok(c) => c,
        Err(e) => return setup_failure(&e),
    };
    let profile = profile.unwrap_or_else(|| run::profiles_for(&config)[0]);
    let offered = run::transports_for(&config, &proxies::config::default_root());
    let transports = match transport.as_deref() {
        None => vec![offered[0]],
        Some("all") => offered.clone(),
        Some(name) => match Transport::parse(name) {
            Some(t) => vec![t],
            None => return setup_failure(&format!("unknown transport `{name}`; known: h1, h1-tls, h2, all")),
        },
    };
    let mut results = Vec::new();
    for transport in transports {
        // The transport asked for is the one the browser is pointed at (over TLS, Chromium
        // still negotiates h2 where the proxy offers it; the evidence says which it took).
        let browser = browser.clone();
        let req = RunRequest { spec: spec.clone(), config: config.clone(), profile, idle, only: only.clone(), keep_on_fail: true, transport, browser };
        if !json {
            eprintln!("running {} checks on {} with {} ({}, profile {profile}, transport {transport}, idle {}s)...", run::selected(&req.only, req.browser.is_some()).len(), req.config.path.display(), req.spec.name, runtime.name(), idle.as_secs());
        }
        let result = run::run_proxy(runtime.clone(), req, &run::Schedule::single()).await;
        let causes = diagnose::causes_of_run(&result, &config, &spec, image.is_some(), idle);
        if !json {
            print_result(&result, &causes, lang);
        }
        results.push((result, causes));
    }
    let mut repaired = None;
    if let Some(write) = repair {
        let failed: Vec<String> = {
            let mut ids: Vec<String> = Vec::new();
            for (r, _) in &results {
                for id in diagnose::not_passed(&r.checks) {
                    if !ids.iter().any(|i| i == id) {
                        ids.push(id.to_string());
                    }
                }
            }
            ids
        };
        let setup_error = results.iter().find_map(|(r, _)| r.setup_error.as_ref().filter(|e| e.kind == "invalid-config").map(|e| e.message.clone()));
        let failures = Failures { checks: failed, setup_error, only: only.clone() };
        let outcome = repair_config(&config, &spec, failures, write, profile, idle, runtime.clone(), image.is_some(), json, results.first().map(|(r, _)| r.transport).unwrap_or_default()).await;
        repaired = Some(outcome);
    }
    let results: Vec<(RunResult, Vec<Cause>)> = results;
    if json {
        let docs: Vec<_> = results
            .iter()
            .map(|(r, causes)| {
                let mut doc = suite::report::json::check_document(r);
                add_causes(&mut doc, causes);
                add_guide(&mut doc, lang);
                if let Some(repaired) = &repaired {
                    doc["repair"] = repaired.to_json();
                }
                doc
            })
            .collect();
        let out = if docs.len() == 1 { serde_json::to_string_pretty(&docs[0]) } else { serde_json::to_string_pretty(&docs) };
        println!("{}", out.unwrap());
    }
    let results: Vec<RunResult> = results.into_iter().map(|(r, _)| r).collect();
    if let Some(path) = &junit {
        if let Err(e) = report::junit::write(path, &report::junit::check_report(&results)) {
            return setup_failure(&format!("cannot write {}: {e}", path.display()));
        }
    }
    if let Some(repaired) = &repaired {
        return match repaired {
            Repair::Error(_) => ExitCode::from(2),
            Repair::NothingFailed => ExitCode::SUCCESS,
            Repair::Done { held, unfixed, .. } if *held && unfixed.is_empty() => ExitCode::SUCCESS,
            _ => ExitCode::from(1),
        };
    }
    if results.iter().any(|r| r.setup_error.is_some()) {
        ExitCode::from(2)
    } else if results.iter().any(RunResult::failed) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn setup_failure(message: &str) -> ExitCode {
    eprintln!("proxy-suite: {message}");
    ExitCode::from(2)
}

fn print_result(result: &RunResult, causes: &[Cause], lang: Lang) {
    println!("{} {} / {} / profile {} / transport {}", result.proxy, result.version.as_deref().unwrap_or("?"), result.config, result.profile, result.transport);
    for r in &result.rewrites {
        println!("  rewrote: {r}");
    }
    if let Some(issue) = &result.setup_error {
        println!("\nSETUP ERROR ({}): {}", issue.kind, issue.message);
        for cause in causes.iter().filter(|c| c.check == diagnose::SETUP) {
            println!("  cause:    {}", cause.location());
            println!("            {}", cause.why);
        }
        return;
    }
    println!();
    for c in &result.checks {
        println!("  {:<18} {} {}", c.id, report::markdown::mark(c.grade), c.grade.to_string().to_uppercase());
    }
    for c in result.checks.iter().filter(|c| c.grade != Grade::Pass) {
        println!("\n{} [{}]", c.id, c.grade);
        println!("  expected: {}", c.expected);
        println!("  actual:   {}", c.actual);
        // The guide's own words in the user's language where the check tests one of its rules
        // (English keeps the catalogue's sign, and adds the rule).
        let quote = suite::lang::quote(&c.id, lang);
        match quote {
            Some(q) if lang != Lang::En => println!("  sign:     {}", q.sign.join(" — ")),
            _ if !c.sign.is_empty() => println!("  sign:     {}", c.sign),
            _ => {}
        }
        if let Some(q) = quote {
            println!("  guide:    {}", q.rule);
        }
        if !c.fix.is_empty() {
            println!("  fix:      {}", c.fix);
        }
        for cause in causes.iter().filter(|cause| cause.check == c.id) {
            println!("  cause:    {}", cause.location());
            println!("            {}", cause.why);
        }
    }
}

/// Each cell's causes in a check document, under `causes` (left out where there are none, so
/// the document of a run without any is as before).
fn add_causes(doc: &mut serde_json::Value, causes: &[Cause]) {
    let Some(cells) = doc.get_mut("checks").and_then(|c| c.as_array_mut()) else { return };
    for cell in cells {
        let id = cell["id"].as_str().unwrap_or("").to_string();
        let mine: Vec<&Cause> = causes.iter().filter(|c| c.check == id).collect();
        if !mine.is_empty() {
            cell["causes"] = serde_json::json!(mine);
        }
    }
}

/// Each non-passing cell's guide quotation in the user's language, under `guide`
/// (`{lang, sign, rule, source}`), where the check tests one of the guide's rules.
fn add_guide(doc: &mut serde_json::Value, lang: Lang) {
    let Some(cells) = doc.get_mut("checks").and_then(|c| c.as_array_mut()) else { return };
    for cell in cells.iter_mut().filter(|c| c["grade"] == "fail" || c["grade"] == "warn") {
        let id = cell["id"].as_str().unwrap_or("").to_string();
        if let Some(q) = suite::lang::quote(&id, lang) {
            cell["guide"] = serde_json::json!({"lang": lang, "sign": q.sign, "rule": q.rule, "source": suite::lang::source(lang)});
        }
    }
}

/// What `--fix` did.
enum Repair {
    /// Nothing failed, nothing to write.
    NothingFailed,
    /// Bad input or a config the kind cannot rewrite: the reason.
    Error(String),
    Done {
        written: PathBuf,
        /// (check, what was changed).
        fixed: Vec<(String, String)>,
        /// (check, why there is no fix).
        unfixed: Vec<(String, String)>,
        /// The re-run's grade of each fixed check.
        rerun: Vec<(String, Grade)>,
        /// Every fixed check passes on the corrected copy.
        held: bool,
        /// The unified diff, only when the fixes held.
        diff: Option<String>,
    },
}

impl Repair {
    fn to_json(&self) -> serde_json::Value {
        match self {
            Repair::NothingFailed => serde_json::json!({"status": "nothing-failed"}),
            Repair::Error(e) => serde_json::json!({"status": "error", "message": e}),
            Repair::Done { written, fixed, unfixed, rerun, held, diff } => serde_json::json!({
                "status": if *held { "held" } else { "not-held" },
                "written": written,
                "fixed": fixed.iter().map(|(c, w)| serde_json::json!({"check": c, "change": w})).collect::<Vec<_>>(),
                "unfixed": unfixed.iter().map(|(c, w)| serde_json::json!({"check": c, "reason": w})).collect::<Vec<_>>(),
                "rerun": rerun.iter().map(|(c, g)| serde_json::json!({"check": c, "grade": g})).collect::<Vec<_>>(),
                "diff": diff,
            }),
        }
    }
}

/// What `--fix` starts from: the run's failed checks, or the setup error that kept the proxy
/// from starting (every selected check then waits for the corrected copy).
struct Failures {
    checks: Vec<String>,
    setup_error: Option<String>,
    /// The checks the user selected (`--only`; empty: all).
    only: Vec<String>,
}

/// At most this many rounds of correcting and re-running: a corrected setup error lets the
/// checks run for the first time, and their failures get a second round.
const REPAIR_ROUNDS: usize = 3;

/// `check --fix`: writes the corrected copy, re-runs the checks it fixes on it (correcting
/// again what only then fails, for a setup error), and shows the diff only when they pass.
#[allow(clippy::too_many_arguments)]
async fn repair_config(config: &ConfigFile, spec: &proxies::ProxySpec, failures: Failures, write: Option<PathBuf>, profile: Profile, idle: Duration, runtime: Arc<dyn Runtime>, in_image: bool, json: bool, transport: Transport) -> Repair {
    let say = |line: String| {
        if !json {
            println!("{line}");
        }
    };
    if failures.checks.is_empty() && failures.setup_error.is_none() {
        say("\n--fix: every check passed; nothing to correct".into());
        return Repair::NothingFailed;
    }
    let Ok(original) = std::fs::read_to_string(&config.path) else { return Repair::Error(format!("cannot read {}", config.path.display())) };
    let companions: Vec<(PathBuf, String)> = config.companions().into_iter().filter_map(|p| std::fs::read_to_string(&p).ok().map(|t| (p, t))).collect();
    let target = write.unwrap_or_else(|| diagnose::default_output(&config.path));
    let same = |a: &Path, b: &Path| a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y);
    if same(&target, &config.path) {
        let e = format!("--write {} is the config itself: --fix never changes the original", target.display());
        eprintln!("proxy-suite: {e}");
        return Repair::Error(e);
    }
    let root = proxies::config::default_root();
    let distribution = if in_image { Some(suite::proxies::kinds::IN_IMAGE) } else { spec.kind.distribution(&spec.source) };
    let mut current = original.clone();
    let mut current_config = config.clone();
    let mut pending = failures.checks.clone();
    let mut setup_error = failures.setup_error.clone();
    let mut fixed: Vec<(String, String)> = Vec::new();
    let mut unfixed: Vec<(String, String)> = Vec::new();
    let mut rerun: Vec<(String, Grade)> = Vec::new();
    for _round in 0..REPAIR_ROUNDS {
        let s = diagnose::Situation { transport, config: &current_config, text: &current, context: diagnose::context_file(&current_config, distribution, &root), profile, idle, setup_error: setup_error.clone() };
        let mut ids: Vec<&str> = pending.iter().map(String::as_str).collect();
        if setup_error.is_some() {
            ids.insert(0, diagnose::SETUP);
        }
        let correction = match diagnose::correct(&s, &ids) {
            Ok(c) => c,
            Err(e) => {
                say(format!("\n--fix: {e}"));
                return Repair::Error(e);
            }
        };
        for (check, why) in &correction.unfixed {
            say(format!("\n--fix: no fix for {check}: {why}"));
        }
        unfixed.extend(correction.unfixed.clone());
        if correction.fixed.is_empty() {
            break;
        }
        let written = match diagnose::write_corrected(&current_config, &current, &correction, &target) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("proxy-suite: {e}");
                return Repair::Error(e);
            }
        };
        current = written[0].text.clone();
        say(format!("\n--fix: wrote {}", written.iter().map(|w| w.path.display().to_string()).collect::<Vec<_>>().join(", ")));
        for (check, what) in &correction.fixed {
            say(format!("  {check:<18} {what}"));
        }
        current_config = match ConfigFile::load(&target, Some(spec.kind)) {
            Ok(c) => c,
            Err(e) => return Repair::Error(e),
        };
        // After a setup fix every selected check runs for the first time.
        let only: Vec<String> = if setup_error.is_some() { failures.only.clone() } else { correction.fixed.iter().map(|(c, _)| c.clone()).collect() };
        fixed.extend(correction.fixed);
        if !json {
            eprintln!("re-running {} on {}...", if only.is_empty() { "every check".to_string() } else { only.join(", ") }, target.display());
        }
        let req = RunRequest { spec: spec.clone(), config: current_config.clone(), profile, idle, only, keep_on_fail: false, transport, browser: None };
        let result = run::run_proxy(runtime.clone(), req, &run::Schedule::single()).await;
        if let Some(issue) = &result.setup_error {
            say(format!("--fix: the corrected copy did not start ({}): {}; no diff shown", issue.kind, issue.message));
            return Repair::Done { written: target, fixed, unfixed, rerun, held: false, diff: None };
        }
        rerun = result.checks.iter().map(|c| (c.id.clone(), c.grade)).collect();
        for (check, grade) in &rerun {
            say(format!("  re-run {check:<18} {} {}", report::markdown::mark(*grade), grade.to_string().to_uppercase()));
        }
        let still: Vec<String> = diagnose::not_passed(&result.checks).into_iter().map(String::from).collect();
        let not_held: Vec<&String> = still.iter().filter(|c| fixed.iter().any(|(f, _)| f == *c)).collect();
        if !not_held.is_empty() {
            for check in &not_held {
                let what = fixed.iter().find(|(c, _)| c == *check).map(|(_, w)| w.as_str()).unwrap_or("");
                say(format!("--fix: the fix for {check} did not hold (still failing on the corrected copy): {what}"));
            }
            say("--fix: no diff shown: the corrected copy does not pass what it was meant to fix".into());
            return Repair::Done { written: target, fixed, unfixed, rerun, held: false, diff: None };
        }
        // Checks that ran for the first time (after a setup fix) and failed: another round.
        pending = still.into_iter().filter(|c| !unfixed.iter().any(|(u, _)| u == c)).collect();
        setup_error = None;
        if pending.is_empty() {
            break;
        }
    }
    if fixed.is_empty() {
        say("--fix: nothing written".into());
        return Repair::Done { written: target, fixed, unfixed, rerun, held: false, diff: None };
    }
    if !pending.is_empty() {
        say(format!("--fix: still failing after {REPAIR_ROUNDS} rounds: {}; no diff shown", pending.join(", ")));
        return Repair::Done { written: target, fixed, unfixed, rerun, held: false, diff: None };
    }
    let mut diff = diagnose::unified_diff(&original, &current, &config.path.display().to_string(), &target.display().to_string());
    // The files rendered with the config (Traefik's dynamic file), as written beside the copy.
    for (path, before) in &companions {
        let to = diagnose::companion_target(&config.path, path, &target);
        let after = std::fs::read_to_string(&to).unwrap_or_default();
        if after != *before {
            diff.push_str(&diagnose::unified_diff(before, &after, &path.display().to_string(), &to.display().to_string()));
        }
    }
    say(format!("\n{diff}"));
    Repair::Done { written: target, fixed, unfixed, rerun, held: true, diff: Some(diff) }
}
