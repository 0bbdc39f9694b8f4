//! `proxy-suite`: list the proxies, check one config, or run the whole matrix.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mock_server::Profile;
use suite::checks::Grade;
use suite::matrix::{self, Plan};
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
        Cmd::Check { proxy, config, profile, idle, only, transport, json, junit, runtime: r } => {
            let image = r.image.clone().map(|reference| runtimes::UserImage { reference, layout: r.layout });
            let kind = if image.is_some() { RuntimeKind::Docker } else { r.runtime };
            let proxy_runtime = match make_runtime(kind, r.host_gateway, r.rewrite_loopback, false, image) {
                Ok(p) => p,
                Err(e) => return setup_failure(&e),
            };
            runtime.block_on(check(proxy, config, profile, Duration::from_secs(idle), only, transport, json, junit, proxy_runtime, r.image))
        }
        Cmd::Matrix { idle, out, proxies, only, configs, shard, junit, full_evidence, runtime: kinds } => {
            let mut proxy_runtimes = Vec::new();
            for kind in MatrixRuntime::expand(&kinds) {
                match make_runtime(kind, true, true, true, None) {
                    Ok(p) => proxy_runtimes.push(p),
                    Err(e) => return setup_failure(&e),
                }
            }
            let plan = Plan { idle: Duration::from_secs(idle), proxies, only, configs, shard };
            runtime.block_on(matrix::run(plan, matrix::Output { dir: out, junit, full_evidence }, proxy_runtimes))
        }
        Cmd::Merge { inputs, out, junit, full_evidence } => merge(&inputs, &out, junit.as_deref(), full_evidence),
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
        let req = RunRequest { spec: spec.clone(), config: config.clone(), profile, idle, only: only.clone(), keep_on_fail: true, transport };
        if !json {
            eprintln!("running {} checks on {} with {} ({}, profile {profile}, transport {transport}, idle {}s)...", run::selected(&req.only).len(), req.config.path.display(), req.spec.name, runtime.name(), idle.as_secs());
        }
        let result = run::run_proxy(runtime.clone(), req, &run::Schedule::single()).await;
        if !json {
            print_result(&result);
        }
        results.push(result);
    }
    if json {
        let docs: Vec<_> = results.iter().map(suite::report::json::check_document).collect();
        let out = if docs.len() == 1 { serde_json::to_string_pretty(&docs[0]) } else { serde_json::to_string_pretty(&docs) };
        println!("{}", out.unwrap());
    }
    if let Some(path) = &junit {
        if let Err(e) = report::junit::write(path, &report::junit::check_report(&results)) {
            return setup_failure(&format!("cannot write {}: {e}", path.display()));
        }
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

fn print_result(result: &RunResult) {
    println!("{} {} / {} / profile {} / transport {}", result.proxy, result.version.as_deref().unwrap_or("?"), result.config, result.profile, result.transport);
    for r in &result.rewrites {
        println!("  rewrote: {r}");
    }
    if let Some(issue) = &result.setup_error {
        println!("\nSETUP ERROR ({}): {}", issue.kind, issue.message);
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
        if !c.sign.is_empty() {
            println!("  sign:     {}", c.sign);
        }
        if !c.fix.is_empty() {
            println!("  fix:      {}", c.fix);
        }
    }
}
