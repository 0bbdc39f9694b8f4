//! `proxy-suite`: list the proxies, check one config, or run the whole matrix.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mock_server::Profile;
use suite::checks::Grade;
use suite::proxies::{self, catalogue, Availability, ConfigFile};
use suite::runtimes::{self, NativeRuntime, Runtime};
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
    },
}

fn main() -> ExitCode {
    // Ctrl-C: stop every proxy this process started and remove its prefix before exiting.
    runtimes::stop_on_interrupt();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match cli.command {
        Cmd::List { json } => list(json),
        Cmd::Check { proxy, config, profile, idle, only, transport, json } => {
            runtime.block_on(check(proxy, config, profile, Duration::from_secs(idle), only, transport, json))
        }
        Cmd::Matrix { idle, out, proxies, only } => {
            runtime.block_on(suite::report::matrix::run(Duration::from_secs(idle), out, proxies, only))
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

async fn check(proxy: String, config: PathBuf, profile: Option<Profile>, idle: Duration, only: Vec<String>, transport: Option<String>, json: bool) -> ExitCode {
    let spec = match catalogue::resolve(&proxy) {
        Ok(s) => s,
        Err(e) => return setup_failure(&e),
    };
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
    let runtime: Arc<dyn Runtime> = Arc::new(NativeRuntime::new(proxies::config::default_root()));
    let mut results = Vec::new();
    for transport in transports {
        let req = RunRequest { spec: spec.clone(), config: config.clone(), profile, idle, only: only.clone(), keep_on_fail: true, transport };
        if !json {
            eprintln!("running {} checks on {} with {} (profile {profile}, transport {transport}, idle {}s)...", run::selected(&req.only).len(), req.config.path.display(), req.spec.name, idle.as_secs());
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
        println!("  {:<18} {}", c.id, c.grade.to_string().to_uppercase());
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
