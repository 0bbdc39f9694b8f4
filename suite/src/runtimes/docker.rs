//! The container runtime: each proxy runs in a container of its locally built image
//! (`scripts/images.sh`: `proxy-suite/nginx:1.22.1`, ...; nothing is ever pulled), on a
//! user-defined Docker network of its own, with its listener published on a loopback port of
//! this machine. It is the second implementation of [`Runtime`]; the checks and reports see the
//! same [`ProxyInstance`] as in native mode.
//!
//! Containers and networks go through `testcontainers` (`GenericImage` on the local tag,
//! `with_network`, `with_host(.., Host::HostGateway)`, mounts, labels); the run's network, the
//! port binding on 127.0.0.1 only and the clean-up by label use its re-exported `bollard`
//! client, because testcontainers creates networks without labels and binds ports on every
//! interface.
//!
//! What a run looks like:
//! - The config is rendered by its kind's module exactly as in native mode, into a prefix that
//!   is mounted at the same path inside the container, so the kind's own command lines (and the
//!   distribution context around the user's file) work unchanged with the image's binary. The
//!   listener becomes `0.0.0.0:8080` inside the container, published on `127.0.0.1:<free>`; a
//!   TLS listener `0.0.0.0:8443`, published the same way (the run's certificate and CA are in
//!   the mounted prefix), so h1-tls and h2 run as natively.
//! - A user's own image (`check --image REF`, [`super::user_image`]) runs with its own
//!   entrypoint, command and outer config instead: the kind renders the site alone and it is
//!   mounted where the image's layout reads it (the prefix is mounted as well). Nothing is
//!   pulled; the image's reference and id are recorded in the result, as the local image's are.
//! - The backend stays where the config says it is, as users deploy it:
//!   a service name (`openchamber:3000`, `dorkos:4242`) is the workspace's mock in a container
//!   of its own on the run's network under that name, found through Docker's DNS as users'
//!   Compose services are ([`super::service_mock`]); `host.docker.internal:3000` resolves
//!   only when the run maps it to `host-gateway` ([`DockerRuntime::host_gateway`]), and then
//!   reaches the mock through the default bridge's gateway, as a user's `--add-host
//!   host.docker.internal:host-gateway` does; `127.0.0.1:3000` / `localhost:3000` is the
//!   container itself: kept as written by default (the checks see the 502 users see, and the
//!   rewrites say why and what to write instead), or rewritten to the Docker host on the run's
//!   gateway with [`Loopback::ToHost`] (the matrix, whose configs mean "the app on this host").
//! - The forwarders accept connections only from peers inside the run network's subnet: the
//!   mock never becomes reachable from elsewhere.
//! - Every container and network carries `proxy-suite=1` and `proxy-suite.owner=<owner tag>`
//!   ([`crate::leftovers::owner_tag`]); they are removed on stop, on drop (errors, panics), by
//!   the Ctrl-C/SIGTERM handler ([`remove_own`]), and by the next suite process when their owner
//!   was SIGKILLed ([`reap`]).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use regex::Regex;
use testcontainers::bollard::query_parameters::{
    InspectNetworkOptions, ListContainersOptionsBuilder, ListNetworksOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use testcontainers::bollard::Docker;
use testcontainers::core::{ContainerPort, Host, Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use super::service_mock::{self, ServiceMock};
use super::user_image::{self, UserImage};
use super::{Backend, ImageRecord, ProxyInstance, Runtime, SetupError};
use crate::proxies::catalogue::ProxySpec;
use crate::proxies::config::ConfigFile;
use crate::proxies::kinds::{ImageLayout, Mode, Placement, IN_IMAGE};
use crate::proxies::render::{self, Ports, Rendered, TlsEndpoint};
use crate::tls::Transport;

/// The port the proxy listens on inside its container.
pub const CONTAINER_PORT: u16 = 8080;
/// The port a config's TLS listener gets inside its container (published like the plain one).
pub const CONTAINER_TLS_PORT: u16 = 8443;
/// Label on everything the suite creates in Docker.
pub const LABEL: &str = "proxy-suite";
/// Label naming the suite process that created it (`pid:start time`).
pub const OWNER_LABEL: &str = "proxy-suite.owner";

/// What a loopback backend (`127.0.0.1:3000`, `localhost:3000`) becomes in a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loopback {
    /// Kept as written: inside the container it is the container itself (users' 502).
    Literal,
    /// Rewritten to the Docker host, reached through the run network's gateway.
    ToHost,
}

/// Runs proxies as containers of the images `scripts/images.sh` built.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    /// `proxy-configs/`; the repository root (with `images/images.tsv`) is its parent.
    pub configs_root: PathBuf,
    /// Keep the prefix of a failed setup (see [`super::NativeRuntime`]).
    pub keep_failed_setups: bool,
    /// Map `host.docker.internal` to `host-gateway` in the proxy's container.
    pub host_gateway: bool,
    /// What loopback backends become.
    pub loopback: Loopback,
    /// A user's own image instead of the locally built one (`check --image`).
    pub image: Option<UserImage>,
    /// The matrix's one network, shared by every run whose backends are all on loopback
    /// (rewritten to the host): see [`SharedNetwork`]. `None`: a network per run.
    shared: Option<Arc<SharedNetwork>>,
}

impl DockerRuntime {
    /// As `proxy-suite check` runs a user's config: loopback kept, no host-gateway mapping.
    pub fn new(configs_root: PathBuf) -> Self {
        DockerRuntime { configs_root, keep_failed_setups: true, host_gateway: false, loopback: Loopback::Literal, image: None, shared: None }
    }

    /// As the matrix runs the repository's configs, written for "the app on this host".
    ///
    /// Its runs share one network ([`SharedNetwork`]): a network per run cost the engine a
    /// create and a remove (with their iptables rules) for each of a matrix's 240 runs.
    pub fn for_matrix(configs_root: PathBuf) -> Self {
        DockerRuntime {
            configs_root,
            keep_failed_setups: false,
            host_gateway: true,
            loopback: Loopback::ToHost,
            image: None,
            shared: Some(Arc::new(SharedNetwork::default())),
        }
    }
}

/// One user-defined network for many runs (the matrix's), created at the first run that needs
/// it and removed when the runtime goes (or by the interrupt handler and the reaper, by label,
/// like every network of the suite). Runs on it tell their backends apart by port: each run's
/// loopback backends become the gateway at a port of their own, where that run's forwarder
/// listens. Service names and `host.docker.internal` keep the port the config wrote, so a run
/// that names them gets a network of its own.
#[derive(Debug, Default)]
struct SharedNetwork {
    net: tokio::sync::OnceCell<RunNetwork>,
}

impl Drop for SharedNetwork {
    fn drop(&mut self) {
        if let Some(net) = self.net.take() {
            let _ = block(async move { remove_network(&net.name).await });
        }
    }
}

/// Removes a network of this process, best effort: one that cannot go now (an endpoint left)
/// carries the suite's labels, so the interrupt handler or the next run's reaper takes it.
async fn remove_network(name: &str) {
    if let Ok(docker) = client().await {
        let _ = docker.remove_network(name).await;
    }
}

/// The tokio runtime the Docker client and the forwarders run on: the [`Runtime`] trait is
/// synchronous and called from blocking threads, CLI and tests alike.
fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("proxy-suite-docker")
            .enable_all()
            .build()
            .expect("tokio runtime for docker")
    })
}

/// Runs `f` on [`rt`] and waits for it, from any thread.
fn block<F>(f: F) -> Result<F::Output, String>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    futures::executor::block_on(rt().spawn(f)).map_err(|e| format!("docker task failed: {e}"))
}

/// Set once this process created something in Docker (the interrupt handler then cleans up).
static USED: AtomicBool = AtomicBool::new(false);

/// Set by the interrupt handler: no container or network is created any more, so that what
/// it removes stays removed.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Said by every creation once the interrupt handler runs.
const STOPPING_MESSAGE: &str = "interrupted: the suite is stopping";

/// The prefixes of live container runs, for the interrupt handler.
static PREFIXES: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Held for good by the interrupt handler's clean-up: a run that ends meanwhile (its streams
/// cut by the removal) waits in [`DockerInstance::shutdown`] for the handler's exit instead of
/// reporting the cut as a failure and exiting first.
static INTERRUPTED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn live_prefixes() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    PREFIXES.lock().unwrap_or_else(|e| e.into_inner())
}

/// A Docker client that answered a ping, or why there is none. The first one that answers is
/// kept for the process (every call made a connection and a ping of its own: a matrix makes
/// thousands).
async fn client() -> Result<Docker, String> {
    static CLIENT: tokio::sync::OnceCell<Docker> = tokio::sync::OnceCell::const_new();
    CLIENT.get_or_try_init(connect).await.cloned()
}

async fn connect() -> Result<Docker, String> {
    let docker = Docker::connect_with_local_defaults().map_err(|e| format!("cannot reach the Docker engine: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(5), docker.ping()).await {
        Ok(Ok(_)) => Ok(docker),
        Ok(Err(e)) => Err(format!("the Docker engine does not answer: {e}")),
        Err(_) => Err("the Docker engine does not answer within 5 s".into()),
    }
}

/// Whether a Docker engine answers here; the reason when not (for a skip, or a strict failure).
pub fn engine() -> Result<(), String> {
    block(async { client().await.map(drop) })?
}

fn labels() -> HashMap<String, String> {
    HashMap::from([(LABEL.to_string(), "1".to_string()), (OWNER_LABEL.to_string(), crate::leftovers::owner_tag())])
}

/// The locally built image of a proxy (`images/images.tsv` and `$CACHE/images/built.tsv`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalImage {
    /// `proxy-suite/nginx:1.22.1`.
    pub tag: String,
    /// `sha256:...`, as the engine reports it.
    pub id: String,
    /// The proxy binary inside the image.
    pub binary: String,
    /// The exact version: the tag's (`1.22.1`, `2.15-nginx-1.31.3`), or a user image's
    /// version label.
    pub version: String,
}

impl LocalImage {
    pub fn version(&self) -> &str {
        &self.version
    }
}

/// The image `scripts/images.sh` built for the proxy `name` (`nginx@1.22`, `npm`), checked
/// against the engine; `Missing` with the command that builds it otherwise.
fn local_image(repo_root: &Path, name: &str) -> Result<LocalImage, SetupError> {
    let missing = |reason: String| SetupError::Missing {
        proxy: format!("{name} (docker)"),
        reason,
        hint: format!("bash scripts/images.sh --only {name} (images are built here, never pulled)"),
    };
    let table = std::fs::read_to_string(repo_root.join("images/images.tsv")).map_err(|e| missing(format!("cannot read images/images.tsv: {e}")))?;
    let row = table
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .ok_or_else(|| missing(format!("images/images.tsv has no image for {name}")))?;
    let binary = row.get(7).copied().unwrap_or("").to_string();
    let built = crate::proxies::catalogue::cache_dir().join("images/built.tsv");
    let built_text = std::fs::read_to_string(&built).unwrap_or_default();
    let tag = built_text
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .and_then(|f| f.get(1).map(|t| t.to_string()))
        .ok_or_else(|| missing(format!("no image of {name} built yet ({} names none)", built.display())))?;
    let inspect_tag = tag.clone();
    let id = block(async move {
        let docker = client().await?;
        docker.inspect_image(&inspect_tag).await.map(|i| i.id.unwrap_or_default()).map_err(|e| format!("image {inspect_tag} is not in the engine: {e}"))
    })
    .and_then(|r| r)
    .map_err(missing)?;
    let version = tag.rsplit_once(':').map(|(_, v)| v).unwrap_or(&tag).to_string();
    Ok(LocalImage { tag, id, binary, version })
}

/// An IPv4 subnet (`172.20.0.0/16`): who may connect to a forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn parse(text: &str) -> Option<Subnet> {
        let (base, prefix) = text.split_once('/')?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
        Some(Subnet { base: base.parse().ok()?, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let IpAddr::V4(ip) = ip else { return false };
        let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
        u32::from(ip) & mask == u32::from(self.base) & mask
    }
}

/// The run's own network.
#[derive(Debug, Clone)]
struct RunNetwork {
    name: String,
    gateway: Ipv4Addr,
    subnet: Subnet,
}

/// A network of `size` addresses (a power of two, 16 for one run's /28), from the suite's pool.
async fn create_network(docker: &Docker, size: u32) -> Result<RunNetwork, String> {
    use testcontainers::bollard::models::NetworkCreateRequest;
    static N: AtomicU32 = AtomicU32::new(0);
    if STOPPING.load(Ordering::SeqCst) {
        return Err(STOPPING_MESSAGE.into());
    }
    let name = format!("proxy-suite-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    USED.store(true, Ordering::SeqCst);
    // Docker's default address pools hold about 30 networks: a matrix with a network per run
    // would need more at once. Each network takes a block of the suite's own pool instead
    // (`PROXY_SUITE_DOCKER_POOL`, a /16, default 10.213.0.0/16), the next one when another
    // network holds it.
    let pool = std::env::var("PROXY_SUITE_DOCKER_POOL").ok().and_then(|p| Subnet::parse(&p)).unwrap_or(Subnet { base: Ipv4Addr::new(10, 213, 0, 0), prefix: 16 });
    let size = size.next_power_of_two().clamp(16, 1 << 12);
    let prefix_len = 32 - size.trailing_zeros() as u8;
    let slots = 1u32 << (prefix_len.saturating_sub(pool.prefix)).min(16);
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919);
    let mut last = String::new();
    for _ in 0..64 {
        let slot = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % slots;
        let base = Ipv4Addr::from(u32::from(pool.base) + slot * size);
        let subnet = Subnet { base, prefix: prefix_len };
        let gateway = Ipv4Addr::from(u32::from(base) + 1);
        let ipam = testcontainers::bollard::models::Ipam {
            config: Some(vec![testcontainers::bollard::models::IpamConfig {
                subnet: Some(format!("{base}/{prefix_len}")),
                gateway: Some(gateway.to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let request = NetworkCreateRequest { name: name.clone(), driver: Some("bridge".into()), labels: Some(labels()), ipam: Some(ipam), ..Default::default() };
        match docker.create_network(request).await {
            Ok(_) => return Ok(RunNetwork { name, gateway, subnet }),
            Err(e) if e.to_string().contains("overlap") => last = e.to_string(),
            Err(e) => return Err(format!("cannot create the network {name}: {e}")),
        }
    }
    Err(format!("cannot create the network {name}: no free /{prefix_len} in {}/{}: {last}", pool.base, pool.prefix))
}

/// The gateway and subnet of a network (`bridge` is the default one, `host-gateway`'s).
async fn gateway_of(docker: &Docker, network: &str) -> Result<(Ipv4Addr, Subnet), String> {
    let inspect = docker.inspect_network(network, None::<InspectNetworkOptions>).await.map_err(|e| format!("cannot inspect network {network}: {e}"))?;
    let config = inspect.ipam.and_then(|i| i.config).unwrap_or_default();
    for c in config {
        let Some(subnet) = c.subnet.as_deref().and_then(Subnet::parse) else { continue };
        // The default bridge names no gateway in its IPAM config: it is the subnet's first
        // address (docker0's), as the engine assigns it.
        let gateway = c.gateway.as_deref().and_then(|g| g.parse().ok()).unwrap_or_else(|| Ipv4Addr::from(u32::from(subnet.base) + 1));
        return Ok((gateway, subnet));
    }
    Err(format!("network {network} has no IPv4 gateway"))
}

/// The forwarders' buffer from the proxy to the mock (uploads).
const UPLOAD_BUFFER: usize = 64 * 1024;

/// Forwards connections from `listen` (a host address on a Docker network; port 0: one the
/// kernel picks) to the in-process mock at `to`, for peers inside `allow` only. Returns where
/// it listens.
async fn forwarder(listen: SocketAddr, allow: Subnet, to: SocketAddr) -> Result<(SocketAddr, tokio::task::AbortHandle), String> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen} for the backend: {e}"))?;
    let bound = listener.local_addr().map_err(|e| format!("cannot read the forwarder's address: {e}"))?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut inbound, peer)) = listener.accept().await else { continue };
            if !allow.contains(peer.ip()) {
                continue; // dropped: not a container of this run
            }
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    // 64 KiB toward the mock: a matrix sends two 50 MB bodies per run through
                    // here, and tokio's default 8 KiB made that 8 times the system calls.
                    let _ = tokio::io::copy_bidirectional_with_sizes(&mut inbound, &mut outbound, UPLOAD_BUFFER, 8 * 1024).await;
                }
            });
        }
    });
    Ok((bound, task.abort_handle()))
}

/// A backend address as a config names it: host (`127.0.0.1`, `openchamber`,
/// `host.docker.internal`) and port, for the backend ports of the guides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendRef {
    pub host: String,
    pub port: u16,
}

impl BackendRef {
    pub fn is_loopback(&self) -> bool {
        matches!(self.host.as_str(), "127.0.0.1" | "localhost" | "[::1]")
    }
}

/// Every backend address of `text`, in order of first appearance.
pub fn backend_refs(text: &str) -> Vec<BackendRef> {
    let re = Regex::new(r"(?i)(?:^|[^A-Za-z0-9_.\-])([A-Za-z0-9][A-Za-z0-9_.\-]*|\[::1\]):(\d{2,5})\b").expect("static regex");
    let mut out: Vec<BackendRef> = Vec::new();
    for c in re.captures_iter(text) {
        let port: u16 = c[2].parse().unwrap_or(0);
        let host = c[1].to_ascii_lowercase();
        // A scheme (`http:3000` cannot be one) or a bare number is not a host.
        if !render::is_backend_port(port) || host.chars().all(|ch| ch.is_ascii_digit()) {
            continue;
        }
        let r = BackendRef { host, port };
        if !out.contains(&r) {
            out.push(r);
        }
    }
    // Envoy's YAML gives host and port on two lines (`address:` then `port_value:`).
    let yaml = Regex::new(r#"(?m)address:\s*["']?([A-Za-z0-9][A-Za-z0-9_.\-]*)["']?\s*\n\s*(?:-\s*)?port_value:\s*(\d{2,5})\b"#).expect("static regex");
    for c in yaml.captures_iter(text) {
        let port: u16 = c[2].parse().unwrap_or(0);
        let r = BackendRef { host: c[1].to_ascii_lowercase(), port };
        if render::is_backend_port(port) && !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// What a run's backends are, for a config and a runtime's options.
#[derive(Debug, Default)]
struct BackendPlan {
    /// What the renderer maps loopback ports to (in order of their first appearance).
    render_backends: Vec<SocketAddr>,
    /// Host addresses to forward (listen address -> mock).
    forwards: BTreeMap<SocketAddr, SocketAddr>,
    /// Names to add to the container's /etc/hosts.
    hosts: BTreeMap<String, Host>,
    /// Compose services to run as mocks in containers of their own: (name, port, index of the
    /// run's backend they stand for).
    services: Vec<(String, u16, usize)>,
    /// Said in the rewrites.
    notes: Vec<String>,
    /// No backend can be reached from the container: readiness accepts any answer.
    unreachable: bool,
}

impl BackendPlan {
    /// The forward planned at `planned` listens at `bound` instead (a port of the run's own on
    /// a shared network): the renderer and the notes say so.
    fn moved(&mut self, planned: SocketAddr, bound: SocketAddr) {
        for b in self.render_backends.iter_mut().filter(|b| **b == planned) {
            *b = bound;
        }
        for n in self.notes.iter_mut() {
            *n = n.replace(&format!("-> {planned} ("), &format!("-> {bound} ("));
        }
        if let Some(to) = self.forwards.remove(&planned) {
            self.forwards.insert(bound, to);
        }
    }
}

/// Addresses on the matrix's shared network: room for every run of a matrix at once (240
/// containers today), and more.
const SHARED_NETWORK_SIZE: u32 = 1024;

fn plan_backends(text: &str, mocks: &[SocketAddr], net: &RunNetwork, bridge: Option<(Ipv4Addr, Subnet)>, host_gateway: bool, loopback: Loopback) -> BackendPlan {
    let mut refs = backend_refs(text);
    if refs.is_empty() {
        // A config that names no backend in its text (NPM's forward host and port are form
        // fields: 127.0.0.1:3000, what a user enters first) gets the kinds' default.
        refs.push(BackendRef { host: "127.0.0.1".into(), port: 3000 });
    }
    let mut ports: Vec<u16> = Vec::new();
    for r in &refs {
        if !ports.contains(&r.port) {
            ports.push(r.port);
        }
    }
    let mock_for = |port: u16| -> SocketAddr {
        let i = ports.iter().position(|p| *p == port).unwrap_or(0);
        mocks.get(i % mocks.len().max(1)).copied().unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], port)))
    };
    let mut plan = BackendPlan::default();
    let mut reachable = 0;
    let mut loopback_ports: Vec<u16> = Vec::new();
    for r in refs.iter().filter(|r| r.is_loopback()) {
        if !loopback_ports.contains(&r.port) {
            loopback_ports.push(r.port);
        }
    }
    for port in loopback_ports {
        match loopback {
            Loopback::Literal => plan.render_backends.push(SocketAddr::from(([127, 0, 0, 1], port))),
            Loopback::ToHost => {
                let at = SocketAddr::from((net.gateway, port));
                plan.render_backends.push(at);
                plan.forwards.insert(at, mock_for(port));
            }
        }
    }
    for r in &refs {
        let written = format!("{}:{}", r.host, r.port);
        if r.is_loopback() {
            match loopback {
                Loopback::Literal => plan.notes.push(format!(
                    "backend {written} kept as written: inside a container it is the container itself, not this host, so the proxy answers 502. Write a service name on the proxy's Docker network (`openchamber:{p}`) or `host.docker.internal:{p}` with `--add-host host.docker.internal:host-gateway` (compose: `extra_hosts: [\"host.docker.internal:host-gateway\"]`)",
                    p = r.port
                )),
                Loopback::ToHost => {
                    reachable += 1;
                    plan.notes.push(format!(
                        "backend {written} -> {}:{} (the Docker host on the run network's gateway: inside a container {} is the container itself) -> mock {}",
                        net.gateway, r.port, r.host, mock_for(r.port)
                    ))
                }
            }
        } else if r.host == "host.docker.internal" {
            match (host_gateway, bridge) {
                (true, Some((gw, _))) => {
                    reachable += 1;
                    plan.hosts.insert(r.host.clone(), Host::HostGateway);
                    plan.forwards.insert(SocketAddr::from((gw, r.port)), mock_for(r.port));
                    plan.notes.push(format!("backend {written} kept; host.docker.internal mapped to host-gateway ({gw}, the default bridge's gateway on this host) -> mock {}", mock_for(r.port)));
                }
                _ => plan.notes.push(format!(
                    "backend {written} kept; host.docker.internal is NOT mapped (no `--add-host host.docker.internal:host-gateway`): on Linux the name does not resolve in the container"
                )),
            }
        } else if r.host.parse::<IpAddr>().is_err() {
            reachable += 1;
            if plan.services.iter().any(|(name, _, _)| *name == r.host) {
                // One container per name: a second port of the same service is not served.
                plan.notes.push(format!("backend {written} kept; the service {} already runs on another port: nothing listens on {}", r.host, r.port));
                continue;
            }
            let backend = plan.services.len() % mocks.len().max(1);
            plan.services.push((r.host.clone(), r.port, backend));
            plan.notes.push(format!(
                "backend {written} kept; the service {} is the mock (backend {}) in a container of its own on the run's network {}, found through Docker's DNS",
                r.host,
                backend + 1,
                net.name
            ));
        }
    }
    plan.unreachable = reachable == 0;
    plan
}

/// A proxy serving a rendered config in a container.
#[derive(Debug)]
pub struct DockerInstance {
    /// `nginx@1.22`, ...
    pub proxy: String,
    pub version: String,
    /// The published loopback address.
    pub addr: SocketAddr,
    pub host: String,
    pub rewrites: Vec<String>,
    pub command: String,
    /// The image that ran.
    pub image: Option<LocalImage>,
    /// Whether the config listens on plain HTTP (at `addr`).
    plain: bool,
    /// The config's TLS listener, at its published address.
    tls: Option<TlsEndpoint>,
    container_id: Option<String>,
    container: Option<ContainerAsync<GenericImage>>,
    network: Option<String>,
    /// The shared network the container is on: kept until the container is gone (the last
    /// holder removes it).
    shared_network: Option<Arc<SharedNetwork>>,
    forwarders: Vec<tokio::task::AbortHandle>,
    /// The Compose services' mocks (removed after the proxy).
    services: Vec<ServiceMock>,
    prefix: Option<tempfile::TempDir>,
    keep_prefix: bool,
}

impl DockerInstance {
    fn shutdown(&mut self) {
        drop(INTERRUPTED.lock());
        for f in self.forwarders.drain(..) {
            f.abort();
        }
        let container = self.container.take();
        let network = self.network.take();
        let services = std::mem::take(&mut self.services);
        if container.is_some() || network.is_some() || !services.is_empty() {
            let _ = block(async move {
                if let Some(c) = container {
                    let _ = c.rm().await;
                }
                if let Ok(docker) = client().await {
                    for s in &services {
                        service_mock::remove(&docker, &s.container_id).await;
                    }
                }
                if let Some(n) = network {
                    remove_network(&n).await;
                }
            });
        }
        drop(self.shared_network.take());
        if let Some(prefix) = self.prefix.take() {
            live_prefixes().retain(|p| p != prefix.path());
            crate::leftovers::close_prefix(prefix, self.keep_prefix, &self.proxy);
        }
    }
}

impl Drop for DockerInstance {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl ProxyInstance for DockerInstance {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn host(&self) -> &str {
        &self.host
    }
    fn version(&self) -> &str {
        &self.version
    }
    fn rewrites(&self) -> &[String] {
        &self.rewrites
    }
    fn command(&self) -> &str {
        &self.command
    }
    fn transports(&self) -> Vec<Transport> {
        render::transports(self.plain, self.tls.as_ref())
    }
    fn tls(&self) -> Option<&TlsEndpoint> {
        self.tls.as_ref()
    }
    fn image(&self) -> Option<ImageRecord> {
        self.image.as_ref().map(|i| ImageRecord { reference: i.tag.clone(), id: i.id.clone() })
    }
    /// The prefix's log files and the container's own output.
    fn log_tail(&self) -> String {
        let mut out = self.prefix().map(super::native::log_tail).unwrap_or_default();
        if let Some(id) = self.container_id.clone() {
            out.push_str(&container_logs(id));
        }
        out
    }
    fn prefix(&self) -> Option<&Path> {
        self.prefix.as_ref().map(|p| p.path())
    }
    fn pid(&self) -> Option<u32> {
        None
    }
    fn own_backends(&self) -> Vec<crate::backend::RemoteMock> {
        self.services.iter().map(ServiceMock::remote).collect()
    }
    fn keep_prefix(&mut self) {
        self.keep_prefix = true;
    }
    fn stop(mut self: Box<Self>) {
        self.shutdown();
    }
}

/// The last lines of a container's stdout and stderr.
fn container_logs(id: String) -> String {
    block(async move {
        let Ok(docker) = client().await else { return String::new() };
        let text = output_tail(&docker, &id, 30).await;
        if text.is_empty() { text } else { format!("== container {} output ==\n{text}", &id[..id.len().min(12)]) }
    })
    .unwrap_or_default()
}

/// The last `lines` lines of a container's stdout and stderr.
pub(super) async fn output_tail(docker: &Docker, id: &str, lines: usize) -> String {
    use futures::StreamExt;
    let options = LogsOptionsBuilder::new().stdout(true).stderr(true).tail(&lines.to_string()).build();
    let mut stream = docker.logs(id, Some(options));
    let mut text = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        text.push_str(&chunk.to_string());
    }
    text
}

impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn start(&self, spec: &ProxySpec, config: &ConfigFile, backends: &[Backend]) -> Result<Box<dyn ProxyInstance>, SetupError> {
        self.start_container(spec, config, backends, true).map(|i| Box::new(i) as Box<dyn ProxyInstance>)
    }

    fn stop_changes_interfaces(&self) -> bool {
        true
    }

    fn validate(&self, spec: &ProxySpec, config: &ConfigFile, backends: &[Backend]) -> Result<(), SetupError> {
        self.start_container(spec, config, backends, false).map(drop)
    }
}

/// How a container of a run is started.
#[derive(Clone)]
struct Launch {
    /// Arguments after the kind's binary as entrypoint; `None`: the image's own entrypoint
    /// and command (a user's image, `--image`).
    args: Option<Vec<String>>,
    /// Files of the prefix mounted at a path of the image (host path, path in the image).
    files: Vec<(String, String)>,
    /// Container ports published on 127.0.0.1.
    publish: Vec<u16>,
}

/// The container request for `image` with the run's network, hosts, prefix and labels.
fn request(image: &LocalImage, launch: Launch, net: &RunNetwork, hosts: &BTreeMap<String, Host>, prefix: &Path) -> testcontainers::core::ContainerRequest<GenericImage> {
    let (repo, tag) = split_reference(&image.tag);
    let mut img = GenericImage::new(repo, tag).with_wait_for(WaitFor::Nothing);
    if launch.args.is_some() {
        img = img.with_entrypoint(&image.binary);
    }
    for port in &launch.publish {
        img = img.with_exposed_port(ContainerPort::Tcp(*port));
    }
    let p = prefix.display().to_string();
    let mut req = img
        .with_network(net.name.clone())
        .with_labels(labels())
        .with_mount(Mount::bind_mount(p.clone(), p.clone()))
        .with_startup_timeout(Duration::from_secs(60));
    for (from, to) in &launch.files {
        req = req.with_mount(Mount::bind_mount(from.clone(), to.clone()));
    }
    if let Some(args) = launch.args {
        req = req
            .with_cmd(args)
            .with_env_var("HOME", p.clone())
            .with_env_var("XDG_DATA_HOME", format!("{p}/data"))
            .with_env_var("XDG_CONFIG_HOME", format!("{p}/config"));
    }
    for (name, host) in hosts {
        req = req.with_host(name.clone(), host.clone());
    }
    {
        // Published on loopback only: the proxy is this machine's client's, nobody else's; and
        // only the listeners asked for (testcontainers publishes every port the image exposes
        // on every interface otherwise: a validator would take host ports for nothing).
        let ports = launch.publish.clone();
        req = req.with_host_config_modifier(move |hc| {
            use testcontainers::bollard::models::PortBinding;
            hc.publish_all_ports = Some(false);
            hc.port_bindings = Some(
                ports
                    .iter()
                    .map(|port| (format!("{port}/tcp"), Some(vec![PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(String::new()) }])))
                    .collect(),
            );
        });
    }
    req
}

/// How many containers the engine is asked to start at once. All of a matrix's 240 at once
/// kept the engine busy past testcontainers' 60 s start-up bound (72 runs lost on 2 cores);
/// a few at a time, each start takes a fraction of a second.
static STARTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// Starts a container of `launch`, again (up to three times) when the engine picked a host
/// port another process of this machine took meanwhile ("address already in use": Docker's
/// port allocator and the kernel's ephemeral ports share a range, and a matrix binds hundreds).
fn start(image: &LocalImage, launch: &Launch, net: &RunNetwork, hosts: &BTreeMap<String, Host>, prefix: &Path) -> Result<ContainerAsync<GenericImage>, String> {
    let mut attempt = 1;
    loop {
        if STOPPING.load(Ordering::SeqCst) {
            return Err(STOPPING_MESSAGE.into());
        }
        let req = request(image, launch.clone(), net, hosts, prefix);
        let starting = async move {
            let _turn = STARTS.acquire().await;
            req.start().await.map_err(|e| e.to_string())
        };
        match block(starting).and_then(|r| r) {
            Err(e) if attempt < 3 && e.contains("address already in use") => attempt += 1,
            other => return other,
        }
    }
}

/// `repo[:tag]` (a registry's port is not a tag: `host:5000/img` is `latest`; an image id
/// `sha256:<hex>` splits the same way and joins back as it was).
fn split_reference(reference: &str) -> (&str, &str) {
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (reference, "latest"),
    }
}

impl DockerRuntime {
    fn start_container(&self, spec: &ProxySpec, config: &ConfigFile, backends: &[Backend], serve: bool) -> Result<DockerInstance, SetupError> {
        let io = |m: String| SetupError::Io(m);
        block(async { client().await.map(drop) }).and_then(|r| r).map_err(|reason| SetupError::Missing {
            proxy: "docker".into(),
            reason,
            hint: "start the Docker engine (systemctl start docker), or run with --runtime native".into(),
        })?;
        let (image, user) = match &self.image {
            None => {
                let repo_root = self.configs_root.parent().unwrap_or(Path::new(".")).to_path_buf();
                (local_image(&repo_root, &spec.name)?, None)
            }
            Some(wanted) => {
                USED.store(true, Ordering::SeqCst);
                let (kind, wanted) = (spec.kind, wanted.clone());
                let resolved = block(async move {
                    let docker = client().await.map_err(SetupError::Io)?;
                    user_image::resolve(&docker, kind, &wanted, labels()).await
                })
                .map_err(io)??;
                (resolved.image.clone(), Some(resolved))
            }
        };
        let prefix = tempfile::Builder::new()
            .prefix(&format!("proxy-suite-{}-docker-", spec.name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' }).collect::<String>()))
            .tempdir()
            .map_err(|e| io(format!("cannot create a prefix: {e}")))?;
        std::fs::set_permissions(prefix.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711)).map_err(|e| io(e.to_string()))?;
        crate::leftovers::claim(prefix.path()).map_err(|e| io(format!("cannot write the prefix's owner: {e}")))?;
        live_prefixes().push(prefix.path().to_path_buf());
        let mut rewrites = vec![format!("runtime docker: image {} ({})", image.tag, image.id)];
        if let Some(u) = &user {
            rewrites.push(format!("{} ({}); the image's own entrypoint and command run it", u.note, u.layout.image));
        }
        let mut instance = DockerInstance {
            proxy: spec.name.clone(),
            version: image.version().to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            host: String::new(),
            rewrites,
            command: String::new(),
            image: Some(image.clone()),
            plain: true,
            tls: None,
            container_id: None,
            container: None,
            network: None,
            shared_network: None,
            forwarders: Vec::new(),
            services: Vec::new(),
            prefix: Some(prefix),
            keep_prefix: false,
        };
        let result = self.bring_up(&mut instance, spec, config, backends, &image, user.as_ref(), serve);
        if let Err(e) = result {
            if self.keep_failed_setups {
                instance.keep_prefix = true;
            }
            return Err(e);
        }
        Ok(instance)
    }

    #[allow(clippy::too_many_arguments)]
    fn bring_up(&self, instance: &mut DockerInstance, spec: &ProxySpec, config: &ConfigFile, backends: &[Backend], image: &LocalImage, user: Option<&user_image::Resolved>, serve: bool) -> Result<(), SetupError> {
        let io = |m: String| SetupError::Io(m);
        let prefix = instance.prefix().expect("prefix").to_path_buf();
        // The user's text (with companions), for where its backends are.
        let mut text = std::fs::read_to_string(&config.path).map_err(|e| SetupError::Render { config: config.id.clone(), message: e.to_string() })?;
        for c in config.kind.companions(&config.path) {
            text.push('\n');
            text.push_str(&std::fs::read_to_string(&c).unwrap_or_default());
        }
        // The matrix's shared network, when every backend is on loopback (moved to the host,
        // each run at ports of its own); a network of the run's own otherwise.
        let all_loopback = backend_refs(&text).iter().all(BackendRef::is_loopback);
        let shared = self.shared.clone().filter(|_| self.loopback == Loopback::ToHost && all_loopback);
        let on_shared = shared.is_some();
        instance.shared_network = shared.clone();
        let (net, bridge) = block(async move {
            let docker = client().await?;
            let net = match &shared {
                Some(s) => s.net.get_or_try_init(|| create_network(&docker, SHARED_NETWORK_SIZE)).await?.clone(),
                None => create_network(&docker, 16).await?,
            };
            let bridge = gateway_of(&docker, "bridge").await.ok();
            Ok::<_, String>((net, bridge))
        })
        .and_then(|r| r)
        .map_err(io)?;
        if !on_shared {
            instance.network = Some(net.name.clone());
        }
        let mut plan = plan_backends(&text, &super::addrs(backends), &net, bridge, self.host_gateway, self.loopback);
        self.start_services(instance, &plan, backends, &net)?;
        for (listen, to) in plan.forwards.clone() {
            let at = if on_shared { SocketAddr::new(listen.ip(), 0) } else { listen };
            let (bound, handle) = block(forwarder(at, net.subnet, to)).and_then(|r| r).map_err(io)?;
            instance.forwarders.push(handle);
            if bound != listen {
                plan.moved(listen, bound);
            }
        }
        let ports = Ports {
            listen: SocketAddr::from(([0, 0, 0, 0], CONTAINER_PORT)),
            backends: if plan.render_backends.is_empty() { vec![SocketAddr::from(([127, 0, 0, 1], 3000))] } else { plan.render_backends.clone() },
            spare: CONTAINER_PORT + 1,
            tls_listen: SocketAddr::from(([0, 0, 0, 0], CONTAINER_TLS_PORT)),
        };
        // A user's image brings its own outer config: the kind renders the site alone.
        let distribution = if user.is_some() { Some(IN_IMAGE) } else { spec.kind.distribution(&spec.source) };
        let rendered = render::render(config, &prefix, &ports, &self.configs_root, distribution)
            .map_err(|message| SetupError::Render { config: config.id.clone(), message })?;
        instance.host = rendered.host.clone();
        instance.plain = rendered.plain;
        // The renderer's backend notes are replaced by the container's (which say where each
        // backend really is from inside the container).
        instance.rewrites.extend(rendered.rewrites.iter().filter(|r| !r.starts_with("backend ")).cloned());
        instance.rewrites.extend(plan.notes.iter().cloned());
        if let Some(missing) = spec.kind.missing_route(&rendered) {
            return Err(SetupError::NoRoute { config: config.id.clone(), missing });
        }
        // The proxy's own checker runs in a container of its own only to validate, or to say
        // why a serving container did not come up: a config that serves needs no second
        // container (a matrix starts hundreds).
        let mut checker = None;
        let launch = match user {
            Some(u) => self.image_launch(instance, spec, &rendered, &ports, u, &prefix)?,
            None => {
                if let Some(args) = spec.kind.args(Mode::Validate, &rendered, &prefix) {
                    if !serve {
                        return self.validate_in_container(spec, config, image, args, &net, &plan, &prefix);
                    }
                    checker = Some(args);
                }
                let args = spec
                    .kind
                    .args(Mode::Run, &rendered, &prefix)
                    .ok_or_else(|| SetupError::Io(format!("{} has no command line to serve a config", spec.kind)))?
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect();
                Launch { args: Some(args), files: Vec::new(), publish: Vec::new() }
            }
        };
        let served = self.serve(instance, spec, image, &rendered, launch, &net, &plan, &prefix, user.is_some());
        match (served, checker) {
            (Err(not_up), Some(args)) => {
                self.validate_in_container(spec, config, image, args, &net, &plan, &prefix)?;
                Err(not_up)
            }
            (served, _) => served,
        }
    }

    /// The mounts of a user's image: the rendered file where its layout reads it, and the
    /// files the kind adds for that layout (written into the prefix first).
    fn image_launch(&self, instance: &mut DockerInstance, spec: &ProxySpec, rendered: &Rendered, ports: &Ports, user: &user_image::Resolved, prefix: &Path) -> Result<Launch, SetupError> {
        let layout: &ImageLayout = &user.layout;
        let mut files = Vec::new();
        let placed = match layout.placement {
            Placement::Site => rendered.user_files.first().cloned(),
            Placement::Main => Some(rendered.main.clone()),
            Placement::Generated => None,
        };
        if let Some(file) = placed {
            instance.rewrites.push(format!("{} mounted at {} ({} layout)", file.display(), layout.config, layout.layout));
            files.push((file.display().to_string(), layout.config.to_string()));
        }
        let mut listen = Vec::new();
        if rendered.plain {
            listen.push(ports.listen);
        }
        if rendered.tls.is_some() {
            listen.push(ports.tls_listen);
        }
        let extra_dir = prefix.join("image");
        for (i, (at, text)) in spec.kind.image_files(layout, rendered, &listen, user.own_config.as_deref()).into_iter().enumerate() {
            std::fs::create_dir_all(&extra_dir).map_err(|e| SetupError::Io(e.to_string()))?;
            let name = Path::new(&at).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| format!("file-{i}"));
            let file = extra_dir.join(format!("{i}-{name}"));
            std::fs::write(&file, text).map_err(|e| SetupError::Io(format!("cannot write {}: {e}", file.display())))?;
            instance.rewrites.push(format!("{} mounted at {at} (added for the {} layout)", file.display(), layout.layout));
            files.push((file.display().to_string(), at));
        }
        Ok(Launch { args: None, files, publish: Vec::new() })
    }

    /// The Compose services' mocks of `plan`, on `net` under their names (before the proxy,
    /// whose config resolves them at start).
    fn start_services(&self, instance: &mut DockerInstance, plan: &BackendPlan, backends: &[Backend], net: &RunNetwork) -> Result<(), SetupError> {
        if plan.services.is_empty() {
            return Ok(());
        }
        let repo_root = self.configs_root.parent().unwrap_or(Path::new(".")).to_path_buf();
        let image = local_image(&repo_root, "mock-server")?;
        for (name, port, index) in plan.services.clone() {
            if STOPPING.load(Ordering::SeqCst) {
                return Err(SetupError::Io(STOPPING_MESSAGE.into()));
            }
            let backend = backends.get(index).cloned().ok_or_else(|| SetupError::Io(format!("no backend {} for the service {name}", index + 1)))?;
            let (mock_image, net) = (image.clone(), net.clone());
            let mock = block(async move {
                let docker = client().await?;
                service_mock::start(&docker, &mock_image, &net.name, net.subnet, (&name, port), &backend, labels()).await
            })
            .and_then(|r| r)
            .map_err(SetupError::Io)?;
            instance.rewrites.push(format!("service {}:{} -> {} in container {} ({}, {}) at {}", mock.name, mock.port, mock.instance, &mock.container_id[..12.min(mock.container_id.len())], image.tag, image.id, mock.ip));
            instance.services.push(mock);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn validate_in_container(&self, spec: &ProxySpec, config: &ConfigFile, image: &LocalImage, args: Vec<std::ffi::OsString>, net: &RunNetwork, plan: &BackendPlan, prefix: &Path) -> Result<(), SetupError> {
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let container = start(image, &Launch { args: Some(args), files: Vec::new(), publish: Vec::new() }, net, &plan.hosts, prefix)
            .map_err(|e| SetupError::Io(format!("cannot start the validator: {e}")))?;
        let outcome = block(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            let code = loop {
                if let Ok(Some(code)) = container.exit_code().await {
                    break Some(code);
                }
                if Instant::now() > deadline {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let out = String::from_utf8_lossy(&container.stdout_to_vec().await.unwrap_or_default()).into_owned()
                + &String::from_utf8_lossy(&container.stderr_to_vec().await.unwrap_or_default());
            let _ = container.rm().await;
            Ok::<_, String>((code, out))
        })
        .and_then(|r| r)
        .map_err(SetupError::Io)?;
        match outcome {
            (Some(0), _) => Ok(()),
            (code, out) => {
                let mut message = format!("{}\n(validator in {}, exit {:?})", out.trim(), image.tag, code);
                if out.contains("host.docker.internal") && !self.host_gateway {
                    message.push_str("\nhost.docker.internal resolves in a Linux container only with `--add-host host.docker.internal:host-gateway` (compose: `extra_hosts`); proxy-suite: --host-gateway");
                }
                Err(SetupError::InvalidConfig { proxy: spec.name.clone(), config: config.id.clone(), message })
            }
        }
    }

    /// Starts the serving container with the plain and TLS listeners the config has published
    /// on loopback, and waits until a request reaches the mock through it.
    #[allow(clippy::too_many_arguments)]
    fn serve(&self, instance: &mut DockerInstance, spec: &ProxySpec, image: &LocalImage, rendered: &Rendered, mut launch: Launch, net: &RunNetwork, plan: &BackendPlan, prefix: &Path, own_command: bool) -> Result<(), SetupError> {
        launch.publish = vec![CONTAINER_PORT];
        if rendered.tls.is_some() {
            launch.publish.push(CONTAINER_TLS_PORT);
        }
        let mounts: String = launch.files.iter().map(|(from, to)| format!("-v {from}:{to} ")).collect();
        instance.command = match &launch.args {
            Some(args) => format!("docker run --network {} {mounts}{} {} {}", net.name, image.tag, image.binary, args.join(" ")),
            None => format!("docker run --network {} {mounts}{} (its own command)", net.name, image.tag),
        };
        let container = start(image, &launch, net, &plan.hosts, prefix).map_err(|e| SetupError::Io(format!("cannot start the container: {e}")))?;
        instance.container_id = Some(container.id().to_string());
        let has_tls = rendered.tls.is_some();
        let (container, plain_port, tls_port) = block(async move {
            let plain = container.get_host_port_ipv4(ContainerPort::Tcp(CONTAINER_PORT)).await;
            let tls = if has_tls { Some(container.get_host_port_ipv4(ContainerPort::Tcp(CONTAINER_TLS_PORT)).await) } else { None };
            (container, plain, tls)
        })
        .map_err(SetupError::Io)?;
        instance.container = Some(container);
        let port = plain_port.map_err(|e| SetupError::Io(format!("no published port: {e}")))?;
        instance.addr = SocketAddr::from(([127, 0, 0, 1], port));
        instance.rewrites.push(format!("container port {CONTAINER_PORT} published on {}", instance.addr));
        if let (Some(tls), Some(tls_port)) = (&rendered.tls, tls_port) {
            let tls_port = tls_port.map_err(|e| SetupError::Io(format!("no published TLS port: {e}")))?;
            let addr = SocketAddr::from(([127, 0, 0, 1], tls_port));
            instance.rewrites.push(format!("container TLS port {CONTAINER_TLS_PORT} published on {addr}"));
            instance.tls = Some(TlsEndpoint { addr, files: tls.files.clone(), h2: tls.h2 });
        }
        if let Err(message) = wait_ready(instance, plan.unreachable, Duration::from_secs(20)) {
            let log_tail = instance.log_tail();
            // A user's image that exits at once refused the config (its own validator is
            // unknown to the suite): said as such, with its output.
            if own_command && message.starts_with("the container exited") {
                return Err(SetupError::InvalidConfig { proxy: image.tag.clone(), config: rendered.main.display().to_string(), message: format!("the proxy exited: {}", log_tail.trim()) });
            }
            return Err(SetupError::NotReady { proxy: spec.name.clone(), message, log_tail, prefix: prefix.display().to_string() });
        }
        Ok(())
    }
}

/// Waits until a request through the published port reaches the mock (`X-Mock-Instance`). When
/// no backend can be reached from the container (a loopback backend kept as written), any
/// answer of the proxy will do: the checks then show what users see.
fn wait_ready(instance: &DockerInstance, unreachable: bool, bound: Duration) -> Result<(), String> {
    let deadline = Instant::now() + bound;
    let mut last = String::from("no answer");
    // The engine is asked whether the container still runs only after a failed probe, at most
    // once a second: 240 runs starting at once, each asking every 150 ms, kept the engine busy.
    let mut inspected: Option<Instant> = None;
    while Instant::now() < deadline {
        let answer = match &instance.tls {
            // A config with TLS is probed there: its plain listener may only redirect to it.
            Some(tls) => super::native::probe_tls(tls, &instance.host),
            None => super::native::probe(instance.addr, &instance.host),
        };
        match answer {
            Ok(head) if head.to_ascii_lowercase().contains("\nx-mock-instance:") => return Ok(()),
            Ok(head) if unreachable && head.starts_with("HTTP/") => return Ok(()),
            Ok(head) => last = format!("answered without reaching the backend: {}", head.lines().next().unwrap_or("")),
            Err(e) => last = e,
        }
        if let Some(id) = instance.container_id.clone().filter(|_| inspected.is_none_or(|at| at.elapsed() >= Duration::from_secs(1))) {
            inspected = Some(Instant::now());
            let running = block(async move {
                let docker = client().await.ok()?;
                docker.inspect_container(&id, None).await.ok()?.state?.running
            })
            .ok()
            .flatten();
            if running == Some(false) {
                return Err("the container exited".into());
            }
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    Err(format!("no request reached the backend within {}s; last: {last}", bound.as_secs()))
}

/// Why `outcome`, measured through a container of this runtime, differs from `native` (the
/// same check natively, when there is one) whatever the config says, when that is the reason:
/// the checks' client is on this host, so its connections reach the container through the
/// published port from the run network's gateway.
/// - `headers.forwarded`: the proxy forwards the gateway as the client (X-Forwarded-For,
///   X-Real-IP). Only when the problems beyond the client address are the native run's own
///   (or there are none): the container adds that problem and no other.
/// - `lb.sticky`: a proxy that balances by client address (`ip_hash`, `balance source`) sees
///   every client as the one gateway address and sends them all to one backend.
///
/// A client elsewhere, through Docker's NAT, keeps its address; one on the Docker host (a
/// local reverse tunnel, a health check) does not.
pub fn deployment_reason(native: Option<&crate::checks::Outcome>, outcome: &crate::checks::Outcome) -> Option<&'static str> {
    use crate::checks::Grade;
    if outcome.grade == Grade::Pass {
        return None;
    }
    match outcome.id.as_str() {
        "headers.forwarded" => {
            let (client, other) = forwarded_problems(outcome);
            // A pass has no problems, whatever its text says.
            let native_other = native.filter(|n| n.grade != Grade::Pass).map(|n| forwarded_problems(n).1).unwrap_or_default();
            (!client.is_empty() && other == native_other).then_some(
                "the checks' client is on the Docker host: through the published port the proxy sees the run network's gateway as the client (users' clients on the host see the same; remote clients through Docker's NAT keep their address)",
            )
        }
        "lb.sticky" if outcome.actual.starts_with("only one instance ever served") && native.is_none_or(|n| n.grade == Grade::Pass) => Some(
            "every client reaches the container from the run network's gateway: balancing by client address (ip_hash) sees one client and sends all to one backend (clients on the Docker host see the same; remote clients through Docker's NAT keep their addresses and spread)",
        ),
        _ => None,
    }
}

/// A `headers.forwarded` outcome's problems (its warnings included), split into those about
/// the client's address and the others.
fn forwarded_problems(outcome: &crate::checks::Outcome) -> (Vec<&str>, Vec<&str>) {
    let client = crate::checks::CLIENT_IP;
    let about_client = |part: &&str| part.contains(&format!("is not the client {client}")) || part.contains(&format!("does not end with the client {client}"));
    // The problems come first, the notes (which may hold "; " themselves) after them.
    let problems_text = outcome.actual.split("note:").next().unwrap_or("");
    let mut problems: Vec<&str> = problems_text.split("; ").map(str::trim).filter(|p| !p.is_empty()).collect();
    problems.sort_unstable();
    problems.into_iter().partition(about_client)
}

/// Removes every container and network this process created (for the interrupt handler).
pub fn remove_own() {
    if !USED.load(Ordering::SeqCst) {
        return;
    }
    std::mem::forget(INTERRUPTED.lock());
    STOPPING.store(true, Ordering::SeqCst);
    let owner = crate::leftovers::owner_tag();
    // Creations already sent to the engine may still land after a sweep: sweep again (a
    // bounded number of times) until one finds nothing.
    let _ = block(async move {
        for sweep in 0..5 {
            let removed = remove_where(|o| o == owner).await;
            if sweep > 0 && removed == Reaped::default() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    for prefix in live_prefixes().drain(..) {
        let _ = std::fs::remove_dir_all(prefix);
    }
}

/// Containers and networks [`reap`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    pub containers: usize,
    pub networks: usize,
}

/// Removes the containers and networks of suite processes that are gone (SIGKILLed). Quick
/// and silent where no engine answers.
pub fn reap() -> Reaped {
    let socket = std::env::var_os("DOCKER_HOST").is_some() || Path::new("/var/run/docker.sock").exists();
    if !socket {
        return Reaped::default();
    }
    block(async { remove_where(|o| crate::leftovers::is_owner_tag(o) && !crate::leftovers::alive(o)).await }).unwrap_or_default()
}

async fn remove_where<F: Fn(&str) -> bool>(owner_matches: F) -> Reaped {
    let mut reaped = Reaped::default();
    let Ok(Ok(docker)) = tokio::time::timeout(Duration::from_secs(3), client()).await else { return reaped };
    let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL}=1")])]);
    let containers = docker.list_containers(Some(ListContainersOptionsBuilder::new().all(true).filters(&filters).build())).await.unwrap_or_default();
    let ids: Vec<String> = containers
        .into_iter()
        .filter(|c| owner_matches(c.labels.as_ref().and_then(|l| l.get(OWNER_LABEL)).map(String::as_str).unwrap_or_default()))
        .filter_map(|c| c.id)
        .collect();
    // All at once: one by one, the 60 containers of a matrix took 25 s to remove on 2 cores.
    let removals = ids.iter().map(|id| docker.remove_container(id, Some(RemoveContainerOptionsBuilder::new().force(true).v(true).build())));
    reaped.containers = futures::future::join_all(removals).await.iter().filter(|r| r.is_ok()).count();
    let networks = docker.list_networks(Some(ListNetworksOptionsBuilder::new().filters(&filters).build())).await.unwrap_or_default();
    let names: Vec<String> = networks
        .into_iter()
        .filter(|n| owner_matches(n.labels.as_ref().and_then(|l| l.get(OWNER_LABEL)).map(String::as_str).unwrap_or_default()))
        .filter_map(|n| n.name)
        .collect();
    reaped.networks = futures::future::join_all(names.iter().map(|n| docker.remove_network(n))).await.iter().filter(|r| r.is_ok()).count();
    reaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(grade: crate::checks::Grade, actual: &str) -> crate::checks::Outcome {
        crate::checks::Outcome { id: "headers.forwarded".into(), grade, expected: String::new(), actual: actual.into(), sign: String::new(), fix: String::new(), measurements: serde_json::Value::Null, elapsed_ms: 0 }
    }

    /// The gateway as client explains a container's grade only when it is the one problem the
    /// container adds to the native run's.
    #[test]
    fn the_gateway_explains_only_the_problems_it_adds() {
        use crate::checks::Grade::*;
        let gateway = "GET /api/mock/request: X-Forwarded-For \"172.30.0.1\" does not end with the client 127.0.0.2";
        let no_host = "GET /api/mock/request: no X-Forwarded-Host";
        let native_warn = forwarded(Warn, no_host);
        let docker = forwarded(Fail, &format!("{gateway}; {no_host}"));
        assert!(deployment_reason(Some(&native_warn), &docker).is_some());
        assert!(deployment_reason(None, &forwarded(Fail, gateway)).is_some());
        // A problem the native run does not have is not the deployment's.
        let other = forwarded(Fail, &format!("{gateway}; GET /api/mock/request: no X-Forwarded-Proto"));
        assert!(deployment_reason(Some(&native_warn), &other).is_none());
        assert!(deployment_reason(Some(&native_warn), &forwarded(Fail, "GET /api/mock/request: no X-Forwarded-Proto")).is_none());
        let mut sticky = forwarded(Fail, "only one instance ever served: all 4 clients landed on 127.0.0.1:3001; 127.0.0.1:3002 got nothing");
        sticky.id = "lb.sticky".into();
        let mut native_sticky = forwarded(Pass, "");
        native_sticky.id = "lb.sticky".into();
        assert!(deployment_reason(Some(&native_sticky), &sticky).is_some());
        native_sticky.grade = Fail;
        assert!(deployment_reason(Some(&native_sticky), &sticky).is_none());
    }

    #[test]
    fn a_subnet_admits_its_own_peers_only() {
        let s = Subnet::parse("172.20.0.0/16").unwrap();
        assert!(s.contains("172.20.3.4".parse().unwrap()));
        assert!(!s.contains("172.21.0.1".parse().unwrap()));
        assert!(!s.contains("127.0.0.1".parse().unwrap()));
        assert!(!s.contains("::1".parse().unwrap()));
        assert_eq!(Subnet::parse("garbage"), None);
        assert_eq!(Subnet::parse("10.0.0.0/33"), None);
    }

    #[test]
    fn backend_refs_are_found_by_host_and_port() {
        let refs = backend_refs("proxy_pass http://openchamber:3000;\nserver 127.0.0.1:3001;\nreverse_proxy host.docker.internal:4242\nlisten 8080;\nserver localhost:3000;\n  address: 127.0.0.1\n  port_value: 3002\n  address: 0.0.0.0\n  port_value: 10000");
        let got: Vec<String> = refs.iter().map(|r| format!("{}:{}", r.host, r.port)).collect();
        assert_eq!(got, ["openchamber:3000", "127.0.0.1:3001", "host.docker.internal:4242", "localhost:3000", "127.0.0.1:3002"]);
        assert!(refs[1].is_loopback() && !refs[0].is_loopback());
    }

    fn net() -> RunNetwork {
        RunNetwork { name: "n".into(), gateway: "172.30.0.1".parse().unwrap(), subnet: Subnet::parse("172.30.0.0/16").unwrap() }
    }

    #[test]
    fn a_loopback_backend_is_kept_and_explained_or_moved_to_the_host() {
        let mocks = ["127.0.0.1:5001".parse().unwrap()];
        let kept = plan_backends("proxy_pass http://127.0.0.1:3000;", &mocks, &net(), None, false, Loopback::Literal);
        assert!(kept.unreachable && kept.forwards.is_empty());
        assert_eq!(kept.render_backends, ["127.0.0.1:3000".parse::<SocketAddr>().unwrap()]);
        assert!(kept.notes[0].contains("container itself") && kept.notes[0].contains("host-gateway"), "{:?}", kept.notes);
        let moved = plan_backends("proxy_pass http://127.0.0.1:3000;", &mocks, &net(), None, false, Loopback::ToHost);
        assert!(!moved.unreachable);
        assert_eq!(moved.forwards.get(&"172.30.0.1:3000".parse().unwrap()), Some(&mocks[0]));
        // On a shared network the run's forwarder listens at a port of its own.
        let mut own_port = moved;
        let bound: SocketAddr = "172.30.0.1:41000".parse().unwrap();
        own_port.moved("172.30.0.1:3000".parse().unwrap(), bound);
        assert_eq!(own_port.render_backends, [bound]);
        assert_eq!(own_port.forwards.get(&bound), Some(&mocks[0]));
        assert!(own_port.notes[0].contains("-> 172.30.0.1:41000 ("), "{:?}", own_port.notes);
    }

    #[test]
    fn host_docker_internal_resolves_only_with_the_host_gateway_mapping() {
        let mocks = ["127.0.0.1:5001".parse().unwrap()];
        let bridge = Some(("172.17.0.1".parse().unwrap(), Subnet::parse("172.17.0.0/16").unwrap()));
        let with = plan_backends("proxy_pass http://host.docker.internal:3000;", &mocks, &net(), bridge, true, Loopback::Literal);
        assert_eq!(with.hosts.get("host.docker.internal").map(|h| h.to_string()), Some("host-gateway".into()));
        assert!(with.forwards.contains_key(&"172.17.0.1:3000".parse().unwrap()));
        let without = plan_backends("proxy_pass http://host.docker.internal:3000;", &mocks, &net(), bridge, false, Loopback::Literal);
        assert!(without.hosts.is_empty() && without.unreachable);
        let service = plan_backends("proxy_pass http://openchamber:3000;", &mocks, &net(), None, false, Loopback::Literal);
        assert_eq!(service.services, [("openchamber".to_string(), 3000, 0)]);
        assert!(service.hosts.is_empty() && service.forwards.is_empty() && !service.unreachable, "{service:?}");
    }
}
