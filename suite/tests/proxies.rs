//! The proxy runner against the real binaries: every config validates with its proxy's own
//! checker, each proxy carries plain, SSE and WebSocket traffic through a minimal good config,
//! bad input is a setup error with the proxy's message, a missing binary is a skip with a
//! hint, and nothing is left running afterwards.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use mock_server::Profile;
use suite::backend::Backends;
use suite::proxies::{self, catalogue, Availability, ConfigFile, Kind, ProxySpec};
use suite::runtimes::{NativeRuntime, Runtime, SetupError};

fn runtime() -> NativeRuntime {
    NativeRuntime::new(proxies::config::default_root())
}

/// Every proxy available on this machine; the missing ones are skips, or failures under
/// `PROXY_SUITE_STRICT=1` (CI).
fn available() -> Vec<ProxySpec> {
    catalogue::all()
        .into_iter()
        .filter(|spec| match spec.availability() {
            Availability::Available { .. } => true,
            Availability::Missing { reason, hint } => {
                suite::strict::skip_or_fail(&spec.name, &format!("{reason} ({hint})"));
                false
            }
        })
        .collect()
}

fn config(id: &str) -> ConfigFile {
    let path = proxies::config::default_root().join(id);
    ConfigFile::load(&path, None).unwrap_or_else(|e| panic!("{e}"))
}

fn port_is_free(addr: SocketAddr) -> bool {
    TcpListener::bind(addr).is_ok()
}

fn process_exists(pid: u32) -> bool {
    // A zombie would still have /proc/<pid>; the runner reaps, so the entry disappears.
    PathBuf::from(format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_config_passes_its_proxys_validator() {
    suite::runtimes::stop_on_interrupt();
    let backends = Backends::start(Profile::Openchamber, 3).await.unwrap();
    let configs = proxies::config::discover(&proxies::config::default_root()).unwrap();
    assert!(configs.len() >= 20, "expected the guides' configs, found {}", configs.len());
    let mut checked = 0;
    let mut failures = Vec::new();
    for spec in available() {
        for config in configs.iter().filter(|c| c.kind == spec.kind) {
            let (rt, s, c, addrs) = (runtime(), spec.clone(), config.clone(), backends.described());
            let result = tokio::task::spawn_blocking(move || rt.validate(&s, &c, &addrs).map_err(|e| (s.name, e)))
                .await
                .unwrap();
            // A config the expected-outcomes file says the proxy refuses must be refused.
            let expectations = suite::expected::load(&config.expected_path()).unwrap();
            let must_refuse = suite::expected::expects_invalid(&expectations, &spec.name).map(|e| e.reason.clone());
            match (result, must_refuse) {
                (Ok(()), None) => checked += 1,
                (Err((_, SetupError::InvalidConfig { message, .. })), Some(_)) => {
                    checked += 1;
                    if let Some(kept) = message.rsplit("kept in ").next() {
                        let _ = std::fs::remove_dir_all(kept.trim_end_matches(')'));
                    }
                }
                (Ok(()), Some(reason)) => failures.push(format!("{} {}: expected to be refused ({reason}) but validated", spec.name, config.id)),
                (Err((name, e)), _) => failures.push(format!("{name}: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "configs rejected by their proxy:\n{}", failures.join("\n\n"));
    eprintln!("{checked} (proxy, config) pairs validated");
    backends.shutdown().await;
}

/// One plain request, one SSE tick and one WebSocket `ready` frame through the proxy.
async fn carries_traffic(addr: SocketAddr, host: &str) -> Result<(), String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let plain = client
        .get(format!("http://{addr}/api/mock/request"))
        .header("Host", host)
        .send()
        .await
        .map_err(|e| format!("plain request: {e}"))?;
    if !plain.status().is_success() || plain.headers().get("x-mock-instance").is_none() {
        return Err(format!("plain request: status {}", plain.status()));
    }
    let sse = client
        .get(format!("http://{addr}/api/event?ticks=1&interval_ms=10"))
        .header("Host", host)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .map_err(|e| format!("sse request: {e}"))?;
    let body = sse.text().await.map_err(|e| format!("sse body: {e}"))?;
    if !body.contains("mock.tick") {
        return Err(format!("sse: no tick in {body:?}"));
    }
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{host}/api/event/ws"))
        .map_err(|e| e.to_string())?;
    let (mut ws, response) = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::client_async(request, stream))
        .await
        .map_err(|_| "websocket handshake timed out".to_string())?
        .map_err(|e| format!("websocket handshake: {e}"))?;
    if response.status().as_u16() != 101 {
        return Err(format!("websocket: status {}", response.status()));
    }
    use futures::StreamExt;
    let first = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.map_err(|_| "no ready frame".to_string())?;
    match first {
        Some(Ok(msg)) if msg.to_text().is_ok_and(|t| t.contains("ready")) => Ok(()),
        other => Err(format!("websocket: unexpected first frame {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_proxy_carries_plain_sse_and_websocket_traffic_then_stops() {
    suite::runtimes::stop_on_interrupt();
    let mut failures = Vec::new();
    let mut started = 0;
    for spec in available() {
        let backends = Backends::start(Profile::Openchamber, 1).await.unwrap();
        let (rt, s, c, addrs) = (runtime(), spec.clone(), config(spec.kind.smoke_config()), backends.described());
        let instance = match tokio::task::spawn_blocking(move || rt.start(&s, &c, &addrs)).await.unwrap() {
            Ok(i) => i,
            Err(e) => {
                failures.push(format!("{}: {e}", spec.name));
                continue;
            }
        };
        started += 1;
        if let Err(e) = carries_traffic(instance.addr(), instance.host()).await {
            failures.push(format!("{} {}: {e}\n{}", spec.name, spec.kind.smoke_config(), instance.log_tail()));
        }
        let (addr, pid) = (instance.addr(), instance.pid().unwrap());
        tokio::task::spawn_blocking(move || instance.stop()).await.unwrap();
        assert!(!process_exists(pid), "{}: process {pid} still running after stop", spec.name);
        assert!(port_is_free(addr), "{}: port {addr} still taken after stop", spec.name);
        backends.shutdown().await;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    eprintln!("{started} proxies started, carried traffic and stopped");
}

#[test]
fn an_invalid_config_is_a_setup_error_with_the_proxys_own_message() {
    suite::runtimes::stop_on_interrupt();
    let Some(spec) = available().into_iter().find(|s| s.kind.name() == "nginx") else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.conf");
    std::fs::write(&path, "server {\n  listen 80;\n  location / { proxy_pass http://127.0.0.1:3000; proxy_bogus_directive on; }\n}\n").unwrap();
    let config = ConfigFile::load(&path, Kind::parse("nginx")).unwrap();
    let err = runtime().start(&spec, &config, &[nowhere()]).unwrap_err();
    match &err {
        SetupError::InvalidConfig { message, .. } => {
            assert!(message.contains("unknown directive \"proxy_bogus_directive\""), "{message}");
            // The rendered config is kept for inspection; clean it up here.
            if let Some(kept) = message.rsplit("kept in ").next() {
                let _ = std::fs::remove_dir_all(kept.trim_end_matches(')'));
            }
        }
        other => panic!("expected InvalidConfig, got {other}"),
    }
}

#[test]
fn a_missing_binary_is_a_skip_with_an_install_hint() {
    suite::runtimes::stop_on_interrupt();
    let mut spec = catalogue::resolve("caddy@2.11").unwrap();
    spec.binary = PathBuf::from("/nonexistent/caddy");
    match spec.availability() {
        Availability::Missing { reason, hint } => {
            assert!(reason.contains("/nonexistent/caddy"));
            assert!(hint.contains("./proxy-suite setup"), "{hint}");
        }
        other => panic!("expected Missing, got {other:?}"),
    }
    let err = runtime().start(&spec, &config("caddy/first-try.Caddyfile"), &[nowhere()]).unwrap_err();
    assert!(matches!(err, SetupError::Missing { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_inside_a_run_still_stops_the_proxy_and_frees_its_port() {
    suite::runtimes::stop_on_interrupt();
    let Some(spec) = available().into_iter().find(|s| s.kind.name() == "nginx") else { return };
    let backends = Backends::start(Profile::Openchamber, 1).await.unwrap();
    let addrs = backends.described();
    let outcome = tokio::task::spawn_blocking(move || {
        let instance = runtime().start(&spec, &config("nginx/first-try.conf"), &addrs).unwrap();
        let seen = (instance.addr(), instance.pid().unwrap(), instance.prefix().unwrap().to_path_buf());
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _held = instance;
            panic!("a check blew up mid-run");
        }));
        (seen, result.is_err())
    })
    .await
    .unwrap();
    let ((addr, pid, prefix), panicked) = outcome;
    assert!(panicked);
    assert!(!process_exists(pid), "nginx {pid} survived the panic");
    assert!(port_is_free(addr), "port {addr} still taken after the panic");
    // The prefix is kept after a failure, for debugging; remove it here.
    assert!(prefix.exists(), "prefix should be kept after a panic");
    std::fs::remove_dir_all(prefix).unwrap();
    backends.shutdown().await;
}

/// A config the proxy accepts but that proxies nothing (an empty Caddyfile, a Traefik file with
/// no router) is a setup error at once, naming what is missing, instead of a 20 s readiness wait
/// ending in "not ready"; the run still records the proxy's version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_proxies_nothing_is_a_setup_error_at_once_with_the_version() {
    suite::runtimes::stop_on_interrupt();
    let traefik_static = "entryPoints:\n  web:\n    address: \":80\"\nproviders:\n  file:\n    filename: site.dynamic.yml\n";
    let no_router = "http:\n  services:\n    app:\n      loadBalancer:\n        servers:\n          - url: \"http://127.0.0.1:3000\"\n";
    let cases = [
        ("caddy", vec![("Caddyfile", "")], "no site block"),
        ("traefik", vec![("site.yml", traefik_static), ("site.dynamic.yml", no_router)], "no router"),
        ("traefik", vec![("site.yml", traefik_static)], "no dynamic file"),
    ];
    let mut ran = 0;
    for (kind, files, cause) in cases {
        let Some(spec) = available().into_iter().find(|s| s.kind.name() == kind) else { continue };
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in &files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let config = ConfigFile::load(&dir.path().join(files[0].0), Kind::parse(kind)).unwrap();
        let req = suite::run::RunRequest {
            spec: spec.clone(),
            config,
            profile: Profile::Openchamber,
            idle: Duration::from_secs(75),
            only: vec!["ws.upgrade".into()],
            keep_on_fail: false,
            transport: suite::tls::Transport::H1,
            browser: None,
        };
        let runtime: std::sync::Arc<dyn Runtime> = std::sync::Arc::new(runtime().discarding_failed_setups());
        let started = std::time::Instant::now();
        let result = suite::run::run_proxy(runtime, req, &suite::run::Schedule::single()).await;
        let elapsed = started.elapsed();
        let issue = result.setup_error.as_ref().unwrap_or_else(|| panic!("{kind} {files:?}: no setup error"));
        assert_eq!(issue.kind, "invalid-config", "{}", issue.message);
        assert!(issue.message.contains(cause), "{kind}: {:?} does not name {cause:?}", issue.message);
        // The readiness wait is 20 s; this error comes before anything starts.
        assert!(elapsed < Duration::from_secs(10), "{kind}: setup error after {elapsed:?}");
        assert!(result.version.as_deref().is_some_and(|v| v.chars().next().is_some_and(|c| c.is_ascii_digit())), "{kind}: version {:?}", result.version);
        assert_eq!(result.runtime, "native");
        ran += 1;
    }
    eprintln!("{ran} configs that proxy nothing refused at once");
}

/// A backend where nothing listens (the run fails before it would matter).
fn nowhere() -> suite::runtimes::Backend {
    suite::runtimes::Backend { addr: "127.0.0.1:9".parse().unwrap(), instance: "mock-1".into(), profile: Profile::Openchamber }
}
