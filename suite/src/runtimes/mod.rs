//! Runtimes: how a proxy is brought up for a run. A [`Runtime`] renders a config for a proxy,
//! validates it, starts the proxy and hands back a running [`ProxyInstance`]; the checks and
//! reports see only that trait object, never which runtime ran it (the run records the
//! runtime's name). [`native`] runs the binaries installed on this machine; [`docker`] runs
//! them as containers of the locally built images, beside it.

pub mod docker;
pub mod native;
pub mod service_mock;
pub mod user_image;

use std::net::SocketAddr;
use std::path::Path;

use crate::proxies::render::TlsEndpoint;
use crate::proxies::{ConfigFile, ProxySpec};
use crate::tls::Transport;

pub use docker::{DockerRuntime, Loopback};
pub use user_image::UserImage;
pub use native::{stop_on_interrupt, NativeRuntime};

/// Why a proxy could not be brought up. Never a check result: the report shows it apart.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SetupError {
    /// The binary is missing: a skip, with the reason and how to install it.
    #[error("{proxy} is not available: {reason} (install: {hint})")]
    Missing { proxy: String, reason: String, hint: String },
    /// The proxy's own validator rejected the config; carries its message.
    #[error("{proxy} rejected the config {config}:\n{message}")]
    InvalidConfig { proxy: String, config: String, message: String },
    /// The config could not be rendered (unreadable file, unknown layout).
    #[error("cannot render {config}: {message}")]
    Render { config: String, message: String },
    /// The config is valid but proxies nothing (no site, listener, route or backend server):
    /// said before starting, instead of waiting for a readiness that cannot come.
    #[error("{config} proxies nothing to the backend: {missing}")]
    NoRoute { config: String, missing: String },
    /// Started, but never answered through to the backend in time.
    #[error("{proxy} did not become ready: {message}\n--- log tail ({prefix}) ---\n{log_tail}")]
    NotReady { proxy: String, message: String, log_tail: String, prefix: String },
    #[error("{0}")]
    Io(String),
}

impl SetupError {
    /// Short kind for reports and expected-outcomes files.
    pub fn kind(&self) -> &'static str {
        match self {
            SetupError::Missing { .. } => "missing",
            SetupError::InvalidConfig { .. } | SetupError::Render { .. } | SetupError::NoRoute { .. } => "invalid-config",
            SetupError::NotReady { .. } => "not-ready",
            SetupError::Io(_) => "error",
        }
    }
}

/// A backend a run puts behind its proxy: the in-process mock at `addr`, and what it is. A
/// runtime that must run the backend somewhere else (the container runtime, for a config that
/// names a Compose service) starts a mock of the same profile and instance there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub addr: SocketAddr,
    /// `mock-1`, ...: its `X-Mock-Instance`.
    pub instance: String,
    pub profile: mock_server::Profile,
}

/// Where each backend listens on this machine.
pub fn addrs(backends: &[Backend]) -> Vec<SocketAddr> {
    backends.iter().map(|b| b.addr).collect()
}

/// A way to run proxies.
pub trait Runtime: Send + Sync {
    /// `native`, ...: recorded in every run's result.
    fn name(&self) -> &'static str;

    /// Renders `config` for `spec` with its backends at `backends`, validates it, starts the
    /// proxy and waits until a request reaches a backend through it.
    fn start(&self, spec: &ProxySpec, config: &ConfigFile, backends: &[Backend]) -> Result<Box<dyn ProxyInstance>, SetupError>;

    /// Whether stopping an instance adds or removes a network interface of this machine (a
    /// container's): the browser tier's Chromium aborts its requests in flight when one does.
    fn stop_changes_interfaces(&self) -> bool {
        false
    }

    /// Validates `config` with the proxy's own checker, without serving it (a kind without a
    /// checker is started and stopped instead).
    fn validate(&self, spec: &ProxySpec, config: &ConfigFile, backends: &[Backend]) -> Result<(), SetupError>;
}

/// The container image a run used: its reference and the id the engine gave it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageRecord {
    /// `proxy-suite/nginx:1.22.1`, or the `--image` reference as given.
    pub reference: String,
    /// `sha256:...`.
    pub id: String,
}

/// A proxy serving a rendered config, until [`ProxyInstance::stop`] (or drop) stops it.
pub trait ProxyInstance: Send + std::fmt::Debug {
    /// The address a client connects to.
    fn addr(&self) -> SocketAddr;
    /// The Host a browser sends to this site.
    fn host(&self) -> &str;
    /// The version the binary reported.
    fn version(&self) -> &str;
    /// What rendering rewrote in the config.
    fn rewrites(&self) -> &[String];
    /// The transports the config offers a browser (plain HTTP/1.1 unless it has TLS).
    fn transports(&self) -> Vec<Transport> {
        vec![Transport::H1]
    }
    /// The config's TLS listener and the run's certificate, when it has one.
    fn tls(&self) -> Option<&TlsEndpoint> {
        None
    }
    /// The container image that runs it, when it runs in one.
    fn image(&self) -> Option<ImageRecord> {
        None
    }
    /// The command line that started it.
    fn command(&self) -> &str;
    /// The last lines of the proxy's logs.
    fn log_tail(&self) -> String;
    /// Where the rendered config and logs are on this machine, while it runs.
    fn prefix(&self) -> Option<&Path>;
    /// The process id on this machine, when the proxy is a process of it.
    fn pid(&self) -> Option<u32>;
    /// The backends this instance runs itself (a Compose service's mock in a container), whose
    /// UI password the run switches with the in-process ones.
    fn own_backends(&self) -> Vec<crate::backend::RemoteMock> {
        Vec::new()
    }
    /// Keep the prefix when the instance stops (a check failed and the logs matter).
    fn keep_prefix(&mut self);
    /// Stops the proxy and removes its prefix (unless kept).
    fn stop(self: Box<Self>);
}
