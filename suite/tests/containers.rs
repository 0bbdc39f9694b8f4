//! The container tier: the proxies in containers of the locally built images
//! (`scripts/images.sh`), against the same mock. Runs wherever a Docker engine answers and the
//! images are built; otherwise a skip with the reason, or a failure under
//! `PROXY_SUITE_STRICT=1` (CI).
//!
//! - Parity: each pinned proxy's known-good config (or the guide's example where there is no
//!   known-good one) gets the same grades in a container as natively, on a fast subset of checks.
//! - The container-only bugs users report: a `127.0.0.1` upstream (the container itself: every
//!   check fails, the rewrites say why), a service-name upstream (the mock in a container of
//!   its own, found through Docker's DNS: passes, `auth.origin` included), `host.docker.internal`
//!   with the host-gateway mapping (passes) and without it (nginx refuses the config: the name
//!   does not resolve).
//! - A user's own image (`check --image`): the layout detected, the config mounted where the
//!   image reads it, the image recorded; a missing reference is an error at once.
//! - TLS in a container: h1-tls and h2 through the published TLS port.
//! - Nothing of the suite is left in Docker afterwards.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mock_server::Profile;
use suite::checks::Grade;
use suite::proxies::{self, catalogue, ConfigFile, ProxySpec};
use suite::run::{self, RunRequest, RunResult};
use suite::runtimes::{DockerRuntime, Loopback, NativeRuntime, Runtime};

/// The fast subset: every area the outer context or the network can change, no idle period.
const FAST: [&str; 5] = ["ws.upgrade", "sse.stream", "headers.forwarded", "compress.single", "body.large"];

/// The fast subset without `headers.forwarded`: through a published port every proxy sees the
/// gateway as the client (see `explained`), which is not what the container-only cases, user
/// images and TLS are about.
const SAME_CLIENT_FREE: [&str; 3] = ["ws.upgrade", "sse.stream", "body.large"];

/// The tests run one after the other: each starts many containers, and on two cores the
/// timing checks of one would measure the other's load; each also counts this process's
/// leftovers at its end.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether the tier can run here; prints the skip (or panics under strict mode) when not.
fn engine_ready() -> bool {
    if let Err(reason) = suite::runtimes::docker::engine() {
        suite::strict::skip_or_fail("docker", &reason);
        return false;
    }
    true
}

/// This test's turn at the engine (see [`SERIAL`]), with the interrupt handler installed;
/// `None` (a skip, or a failure under strict mode) where no engine answers.
async fn exclusive_engine() -> Option<tokio::sync::MutexGuard<'static, ()>> {
    suite::runtimes::stop_on_interrupt();
    let serial = SERIAL.lock().await;
    engine_ready().then_some(serial)
}

/// Says how long `what` took and that nothing of this process is left in Docker.
fn finish(what: &str, started: Instant) {
    eprintln!("{what} in {:.1}s", started.elapsed().as_secs_f64());
    assert_eq!(suite_objects_in_docker(), (0, 0), "containers/networks left behind");
}

fn spec(name: &str) -> ProxySpec {
    catalogue::resolve(name).unwrap_or_else(|e| panic!("{e}"))
}

fn config_at(path: PathBuf) -> ConfigFile {
    ConfigFile::load(&path, None).unwrap_or_else(|e| panic!("{e}"))
}

fn config(id: &str) -> ConfigFile {
    config_at(proxies::config::default_root().join(id))
}

fn docker_for_matrix() -> DockerRuntime {
    DockerRuntime::for_matrix(proxies::config::default_root())
}

fn request(spec: ProxySpec, config: ConfigFile, only: &[&str]) -> RunRequest {
    RunRequest { spec, config, profile: Profile::Openchamber, idle: Duration::from_secs(5), only: only.iter().map(|s| s.to_string()).collect(), keep_on_fail: false, transport: suite::tls::Transport::H1, browser: None }
}

/// A grade that differs for a known, stated reason of the container deployment, never noise.
fn explained(native: &suite::checks::Outcome, docker: &suite::checks::Outcome) -> Option<&'static str> {
    (native.grade != Grade::Fail).then(|| suite::runtimes::docker::deployment_reason(Some(native), docker)).flatten()
}

/// Every check of `r` passed, or the evidence of those that did not.
fn assert_all_pass(label: &str, r: &RunResult) {
    assert!(r.setup_error.is_none(), "{label}: {:?}\n{}", r.setup_error, r.rewrites.join("\n"));
    let other: Vec<_> = r.checks.iter().filter(|c| c.grade != Grade::Pass).map(|c| (&c.id, c.grade, &c.actual)).collect();
    assert!(other.is_empty(), "{label}: {other:?}");
}

fn grades(r: &RunResult) -> Vec<(String, Grade)> {
    r.checks.iter().map(|c| (c.id.clone(), c.grade)).collect()
}

/// A missing image is a skip with the command that builds it (strict: a failure).
fn image_missing(r: &RunResult) -> bool {
    match &r.setup_error {
        Some(issue) if issue.kind == "missing" => {
            suite::strict::skip_or_fail(&format!("{} (docker)", r.proxy), &issue.message);
            true
        }
        _ => false,
    }
}

fn suite_objects_in_docker() -> (usize, usize) {
    let count = |args: &[&str]| {
        let out = std::process::Command::new("docker").args(args).output().expect("docker cli");
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).count()
    };
    let owner = format!("label=proxy-suite.owner={}", suite::leftovers::owner_tag());
    (count(&["ps", "-aq", "--filter", &owner]), count(&["network", "ls", "-q", "--filter", &owner]))
}

/// The same grades in a container as natively, for every pinned proxy's known-good config
/// (nginx, NPM and Caddy have none: their guides' examples).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_good_configs_grade_the_same_in_a_container_as_natively() {
    let Some(_serial) = exclusive_engine().await else { return };
    let started = Instant::now();
    let cases = [
        ("nginx@1.22", "nginx/openchamber-guide.conf"),
        ("nginx@1.31", "nginx/openchamber-guide.conf"),
        ("npm", "npm/openchamber-advanced-ws-off.conf"),
        ("caddy@2.6", "caddy/openchamber-guide.Caddyfile"),
        ("caddy@2.11", "caddy/openchamber-guide.Caddyfile"),
        ("haproxy@2.6", "haproxy/known-good.cfg"),
        ("haproxy@2.8", "haproxy/known-good.cfg"),
        ("apache@2.4", "apache/known-good.conf"),
        ("traefik@3.7", "traefik/known-good.yml"),
        ("envoy@1.40", "envoy/known-good.yaml"),
    ];
    let native: Arc<dyn Runtime> = Arc::new(NativeRuntime::new(proxies::config::default_root()).discarding_failed_setups());
    let docker: Arc<dyn Runtime> = Arc::new(docker_for_matrix());
    let schedule = run::Schedule::new(cases.len() * 2, 2);
    let runs = cases.iter().flat_map(|(name, id)| {
        [native.clone(), docker.clone()].into_iter().map(|rt| {
            let req = request(spec(name), config(id), &FAST);
            let schedule = schedule.clone();
            async move { run::run_proxy(rt, req, &schedule).await }
        })
    });
    let results = futures::future::join_all(runs).await;
    let mut differences = Vec::new();
    for pair in results.chunks(2) {
        let (n, d) = (&pair[0], &pair[1]);
        if image_missing(d) {
            continue;
        }
        assert_eq!(d.runtime, "docker");
        assert!(d.rewrites.iter().any(|r| r.contains("image proxy-suite/") && r.contains("sha256:")), "{}: image not recorded: {:?}", d.proxy, d.rewrites);
        eprintln!("{} {}: native {:?} | docker {} {:?}", d.proxy, d.config, grades(n), d.version.as_deref().unwrap_or("?"), grades(d));
        let unexplained: Vec<&str> = n
            .checks
            .iter()
            .zip(&d.checks)
            .filter(|(a, b)| a.grade != b.grade)
            .filter(|(a, b)| match explained(a, b) {
                Some(reason) => {
                    eprintln!("  {} {}: {} native, {} docker: {reason}", d.proxy, a.id, a.grade, b.grade);
                    false
                }
                None => true,
            })
            .map(|(a, _)| a.id.as_str())
            .collect();
        if n.setup_error.is_some() || d.setup_error.is_some() || n.checks.len() != d.checks.len() || !unexplained.is_empty() {
            differences.push(format!(
                "{} {}: native {:?} {:?}\n  docker {:?} {:?}\n  docker evidence: {}",
                d.proxy,
                d.config,
                grades(n),
                n.setup_error.as_ref().map(|e| &e.message),
                grades(d),
                d.setup_error.as_ref().map(|e| &e.message),
                d.checks.iter().filter(|c| c.grade != Grade::Pass).map(|c| format!("{}: {}", c.id, c.actual)).collect::<Vec<_>>().join("; ")
            ));
        }
    }
    drop(docker); // its shared network goes with it
    eprintln!("parity: {} runs in {:.1}s", cases.len() * 2, started.elapsed().as_secs_f64());
    assert!(differences.is_empty(), "grades differ between native and docker:\n{}", differences.join("\n"));
    assert_eq!(suite_objects_in_docker(), (0, 0), "containers/networks left behind");
}

/// An nginx config of the repository (`source`) with its backend written as users write it in
/// compose.
fn nginx_config_with_backend(dir: &tempfile::TempDir, source: &str, backend: &str) -> ConfigFile {
    let text = std::fs::read_to_string(proxies::config::default_root().join(source)).unwrap();
    assert!(text.contains("127.0.0.1:3000"), "{source} names 127.0.0.1:3000");
    let path = dir.path().join(format!("{}-{}.conf", source.replace(['/', '.'], "-"), backend.replace([':', '.'], "-")));
    std::fs::write(&path, text.replace("127.0.0.1:3000", backend)).unwrap();
    ConfigFile::load(&path, catalogue::resolve("nginx@1.31").ok().map(|s| s.kind)).unwrap()
}

/// The bugs that exist only in containers, reproduced on nginx 1.31's image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_only_backend_addresses_behave_as_users_see_them() {
    let Some(_serial) = exclusive_engine().await else { return };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let only = SAME_CLIENT_FREE;
    let as_user = |host_gateway: bool| -> Arc<dyn Runtime> {
        let mut rt = DockerRuntime::new(proxies::config::default_root());
        rt.keep_failed_setups = false;
        rt.host_gateway = host_gateway;
        assert_eq!(rt.loopback, Loopback::Literal);
        Arc::new(rt)
    };
    let run_only = |rt: Arc<dyn Runtime>, source: &str, backend: &str, only: &[&str]| {
        let req = request(spec("nginx@1.31"), nginx_config_with_backend(&dir, source, backend), only);
        async move { run::run_proxy(rt, req, &run::Schedule::single()).await }
    };
    let run = |rt: Arc<dyn Runtime>, backend: &str| run_only(rt, "nginx/openchamber-guide.conf", backend, &only);

    // 127.0.0.1 inside the container is the container: every check fails with the 502.
    let loopback = run(as_user(false), "127.0.0.1:3000").await;
    if image_missing(&loopback) {
        return;
    }
    assert!(loopback.setup_error.is_none(), "{:?}", loopback.setup_error);
    for c in &loopback.checks {
        assert_eq!(c.grade, Grade::Fail, "{}: {}", c.id, c.actual);
    }
    assert!(loopback.checks.iter().any(|c| c.actual.contains("502")), "the 502 is the evidence: {:?}", loopback.checks.iter().map(|c| &c.actual).collect::<Vec<_>>());
    let why = loopback.rewrites.join("\n");
    assert!(why.contains("container itself") && why.contains("host.docker.internal") && why.contains("openchamber:3000"), "{why}");

    // A service name on the run's network is the mock in a container of its own, found
    // through Docker's DNS; its UI password switches as the in-process mocks' do (auth.origin,
    // on the corrected guide example, which passes it natively).
    let with_auth = [&only[..], &["auth.origin"]].concat();
    let service = run_only(as_user(false), "nginx/openchamber-guide-corrected.conf", "openchamber:3000", &with_auth).await;
    assert!(service.setup_error.is_none(), "{:?}", service.setup_error);
    assert_eq!(service.checks.len(), with_auth.len(), "{:?}", grades(&service));
    assert!(service.checks.iter().all(|c| c.grade == Grade::Pass), "{:?}", service.checks.iter().map(|c| (&c.id, c.grade, &c.actual)).collect::<Vec<_>>());
    let why = service.rewrites.join("\n");
    assert!(why.contains("the service openchamber is the mock") && why.contains("Docker's DNS"), "{why}");
    assert!(why.contains("service openchamber:3000 -> mock-1 in container") && why.contains("proxy-suite/mock-server:"), "{why}");

    // host.docker.internal: resolves only with the host-gateway mapping.
    let mapped = run(as_user(true), "host.docker.internal:3000").await;
    assert!(mapped.setup_error.is_none(), "{:?}", mapped.setup_error);
    assert!(mapped.checks.iter().all(|c| c.grade == Grade::Pass), "{:?}", grades(&mapped));
    let unmapped = run(as_user(false), "host.docker.internal:3000").await;
    let issue = unmapped.setup_error.as_ref().expect("nginx refuses an upstream it cannot resolve");
    assert_eq!(issue.kind, "invalid-config", "{}", issue.message);
    assert!(issue.message.contains("host.docker.internal") && issue.message.contains("host-gateway"), "{}", issue.message);

    finish("container-only cases: 4 runs", started);
}

/// `check --image`: a user's image runs with its own entrypoint, command and outer config, the
/// rendered file mounted where its layout reads it; the layout is detected from the image's
/// paths. Tried on the locally built images (no registry here): the wheel nginx is laid out as
/// the official image (conf.d/), Debian's nginx, haproxy and apache as Debian lays them out.
/// A reference the engine does not have is a `missing` setup error naming it, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_image_runs_with_the_config_where_its_layout_reads_it() {
    let Some(_serial) = exclusive_engine().await else { return };
    let started = Instant::now();
    let only = SAME_CLIENT_FREE;
    let with_image = |reference: &str| -> Arc<dyn Runtime> {
        let mut rt = DockerRuntime::for_matrix(proxies::config::default_root());
        rt.image = Some(suite::runtimes::UserImage { reference: reference.into(), layout: None });
        Arc::new(rt)
    };
    let cases = [
        ("nginx@1.31", "proxy-suite/nginx:1.31.3", "nginx/openchamber-guide.conf", "layout official", "/etc/nginx/conf.d/default.conf"),
        ("nginx@1.22", "proxy-suite/nginx:1.22.1", "nginx/openchamber-guide.conf", "layout debian", "/etc/nginx/sites-enabled/default"),
        ("haproxy@2.8", "proxy-suite/haproxy:2.8.25", "haproxy/known-good.cfg", "layout official", "/usr/local/etc/haproxy/haproxy.cfg"),
        ("haproxy@2.6", "proxy-suite/haproxy:2.6.12", "haproxy/known-good.cfg", "layout debian", "/etc/haproxy/haproxy.cfg"),
        ("apache@2.4", "proxy-suite/apache:2.4.71", "apache/known-good.conf", "layout debian", "/etc/apache2/sites-enabled/000-default.conf"),
        ("npm", "proxy-suite/npm:2.15-nginx-1.31.3", "npm/openchamber-advanced-ws-off.conf", "layout official", "/data/nginx/proxy_host/1.conf"),
    ];
    for (name, reference, id, layout, mounted) in cases {
        let r = run::run_proxy(with_image(reference), request(spec(name), config(id), &only), &run::Schedule::single()).await;
        if image_missing(&r) {
            continue;
        }
        let rewrites = r.rewrites.join("\n");
        eprintln!("{reference} ({id}): {:?}", grades(&r));
        assert_all_pass(reference, &r);
        assert!(rewrites.contains(layout) && rewrites.contains(&format!("mounted at {mounted}")), "{reference}: {rewrites}");
        let image = r.image.as_ref().expect("the image is recorded");
        assert_eq!(image.reference, reference);
        assert!(image.id.starts_with("sha256:"), "{image:?}");
    }
    let asked = Instant::now();
    let missing = run::run_proxy(with_image("proxy-suite/nginx:0.0.0-not-built"), request(spec("nginx@1.31"), config("nginx/openchamber-guide.conf"), &only), &run::Schedule::single()).await;
    let issue = missing.setup_error.as_ref().expect("a missing image is a setup error");
    assert_eq!(issue.kind, "missing", "{}", issue.message);
    assert!(issue.message.contains("proxy-suite/nginx:0.0.0-not-built") && issue.message.contains("never pulls"), "{}", issue.message);
    assert!(asked.elapsed() < Duration::from_secs(10), "a missing image took {:?}", asked.elapsed());
    finish(&format!("user images: {} runs", cases.len() + 1), started);
}

/// TLS in a container: the config's TLS listener is published beside the plain one, the run's
/// certificate and CA reach the container through the mounted prefix, and h1-tls and h2 grade
/// as natively.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_transports_run_in_a_container() {
    let Some(_serial) = exclusive_engine().await else { return };
    let started = Instant::now();
    let only = SAME_CLIENT_FREE;
    let docker: Arc<dyn Runtime> = Arc::new(docker_for_matrix());
    for transport in [suite::tls::Transport::H1Tls, suite::tls::Transport::H2] {
        let mut req = request(spec("nginx@1.31"), config("nginx/known-good-tls.conf"), &only);
        req.transport = transport;
        let r = run::run_proxy(docker.clone(), req, &run::Schedule::single()).await;
        if image_missing(&r) {
            return;
        }
        assert_all_pass(transport.as_str(), &r);
        assert!(r.rewrites.iter().any(|w| w.contains("container TLS port")), "{:?}", r.rewrites);
    }
    drop(docker); // its shared network goes with it
    finish("tls in a container: 2 runs", started);
}
