//! Mock of the OpenChamber (and DorkOS) backend, faithful on the wire, with instruments that make
//! every requirement of the reverse-proxy guides measurable from the client side.
//!
//! This module owns the configuration ([`MockConfig`]), the router ([`app`]), the in-process
//! server ([`spawn`], [`RunningMock`]), the shared state, the shutdown signal every long-lived
//! stream listens to, and the headers every response carries. `README.md` is the wire contract.
//!
//! - [`profile`]: what differs between `openchamber`, `bare` and `dorkos`.
//! - [`cli`]: the binary's flags and their validation.
//! - `sse`, `websocket`, `terminal`: the streaming routes.
//! - `compression`, `bodies`, `auth`, `instruments`: gzip rules, body caps, UI password, probes.
//! - [`browser_page`]: the page the suite's headless Chromium loads through a proxy.

pub mod cli;
pub mod profile;

mod auth;
mod bodies;
pub mod browser_page;
mod compression;
mod instruments;
mod params;
mod sse;
mod terminal;
mod websocket;

use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{from_fn_with_state, Next};
use axum::response::Response;
use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tower::ServiceExt;

pub use auth::CONTROL_UI_PASSWORD;
pub use profile::Profile;

/// How one mock instance behaves.
#[derive(Debug, Clone)]
pub struct MockConfig {
    pub profile: Profile,
    /// Sent as `X-Mock-Instance` on every response, so instances behind one proxy can be told
    /// apart. Characters not allowed in a header value are replaced by `_`.
    pub instance_id: String,
    /// UI-password mode (session cookie / bearer / `oc_url_token`, Origin check on upgrades).
    pub ui_password: Option<String>,
    /// When set, every request must carry `X-Mock-Access-Token` or `?mock_access_token=`.
    pub access_token: Option<String>,
    /// When not empty, connections from any other peer are closed unanswered (the mock in a
    /// container answers only its private Docker network).
    pub allow_from: Vec<ipnet::IpNet>,
    /// When set, `PUT /mock-control/ui-password` with `X-Mock-Control-Token` switches UI-password
    /// mode (what [`RunningMock::set_ui_password`] does in-process, for a mock in a container).
    pub control_token: Option<String>,
}

impl MockConfig {
    pub fn new(profile: Profile) -> Self {
        MockConfig {
            profile,
            instance_id: "mock".to_owned(),
            ui_password: None,
            access_token: None,
            allow_from: Vec::new(),
            control_token: None,
        }
    }
}

/// Microseconds since the Unix epoch: the clock every `*_at_us` field uses. Client and mock
/// share one machine, so arrival minus emission is the delay a proxy added.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The router serving every route of `config.profile`. Peer addresses appear in reports when the
/// server inserts `ConnectInfo<SocketAddr>` (as [`spawn`] does).
pub fn app(config: MockConfig) -> Router {
    router(AppState::new(config))
}

/// Binds `addr` (port 0 picks a free port) and serves [`app`] in a tokio task.
pub async fn spawn(config: MockConfig, addr: SocketAddr) -> io::Result<RunningMock> {
    spawn_on(config, TcpListener::bind(addr).await?)
}

/// Serves [`app`] on an already bound listener (the binary binds first so that the default
/// instance id can name the real port).
pub fn spawn_on(config: MockConfig, listener: TcpListener) -> io::Result<RunningMock> {
    let addr = listener.local_addr()?;
    let state = AppState::new(config);
    let task = tokio::spawn(accept_loop(
        listener,
        router(state.clone()),
        state.shutdown(),
        state.config.allow_from.clone(),
    ));
    Ok(RunningMock {
        addr,
        state,
        task: Some(task),
    })
}

/// A mock served in-process. Dropping it stops the server and every connection.
pub struct RunningMock {
    addr: SocketAddr,
    state: AppState,
    task: Option<JoinHandle<()>>,
}

impl RunningMock {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn instance_id(&self) -> &str {
        &self.state.config.instance_id
    }

    pub fn profile(&self) -> Profile {
        self.state.config.profile
    }

    /// `http://{addr}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Turns UI-password mode on (`Some`) or off (`None`) for the requests that follow.
    pub fn set_ui_password(&self, pw: Option<String>) {
        *self
            .state
            .ui_password
            .write()
            .unwrap_or_else(|e| e.into_inner()) = pw;
    }

    /// Ends every stream and WebSocket (close 1001), lets in-flight responses finish for up to
    /// two seconds, then aborts whatever is left.
    pub async fn shutdown(mut self) {
        self.state.trigger_shutdown();
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for RunningMock {
    fn drop(&mut self) {
        self.state.trigger_shutdown();
        // Aborting the accept task drops its JoinSet, which aborts every connection task.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for RunningMock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningMock")
            .field("addr", &self.addr)
            .field("instance_id", &self.instance_id())
            .field("profile", &self.profile())
            .finish()
    }
}

/// State shared by every handler of one instance.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

pub(crate) struct Shared {
    pub config: MockConfig,
    pub instance_header: HeaderValue,
    /// Run-time switchable (the suite turns it on only for its origin check).
    pub ui_password: RwLock<Option<String>>,
    /// Per-process secret that session cookies are derived from.
    pub session_key: [u8; 16],
    shutdown: watch::Sender<bool>,
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    fn new(config: MockConfig) -> Self {
        let sanitized: String = config
            .instance_id
            .chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '_' })
            .collect();
        let instance_header =
            HeaderValue::from_str(&sanitized).unwrap_or(HeaderValue::from_static("mock"));
        let (shutdown, _) = watch::channel(false);
        AppState(Arc::new(Shared {
            ui_password: RwLock::new(config.ui_password.clone()),
            config,
            instance_header,
            session_key: random_key(),
            shutdown,
        }))
    }

    pub fn profile(&self) -> Profile {
        self.config.profile
    }

    pub fn instance(&self) -> &str {
        &self.config.instance_id
    }

    pub fn ui_password(&self) -> Option<String> {
        self.ui_password
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn shutdown(&self) -> Shutdown {
        Shutdown(self.0.shutdown.subscribe())
    }

    fn trigger_shutdown(&self) {
        self.0.shutdown.send_replace(true);
    }
}

/// Random enough for a mock's session secret, without a crate: std's hasher keys are random
/// per process.
fn random_key() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    let mut key = [0u8; 16];
    for chunk in key.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(now_us());
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    key
}

/// The signal long-lived streams and sockets end on, so that shutting a mock down never waits on
/// an SSE stream that would otherwise stay open forever.
#[derive(Clone)]
pub(crate) struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Completes when the instance shuts down (or its state is gone).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|down| *down).await;
    }

    /// Sleeps until `deadline`; `false` when shutdown came first.
    pub async fn sleep_until(&mut self, deadline: Instant) -> bool {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => true,
            _ = self.wait() => false,
        }
    }
}

fn router(state: AppState) -> Router {
    let profile = state.profile();
    Router::new()
        .merge(sse::routes(profile))
        .merge(websocket::routes())
        .merge(terminal::routes())
        .merge(bodies::routes())
        .merge(browser_page::routes())
        .merge(instruments::routes())
        .merge(auth::routes())
        .merge(auth::control_routes())
        .fallback(instruments::fallback)
        // Innermost first: auth sees only what passed the access token; gzip wraps auth's 401s
        // like Express does; the common headers go on every response, refusals included.
        .layer(from_fn_with_state(state.clone(), auth::require_ui_auth))
        .layer(from_fn_with_state(state.clone(), compression::gzip))
        .layer(from_fn_with_state(
            state.clone(),
            auth::require_access_token,
        ))
        .layer(from_fn_with_state(state.clone(), common_headers))
        // Body caps are enforced per route (413 with a message), not by axum's 2 MB default.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// `X-Mock-Instance` everywhere; `X-Robots-Tag` as the real OpenChamber server sends it.
async fn common_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let headers = res.headers_mut();
    headers.insert("x-mock-instance", state.instance_header.clone());
    if state.profile().robots_tag() {
        headers.insert(
            "x-robots-tag",
            HeaderValue::from_static("noindex, nofollow"),
        );
    }
    res
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    mut shutdown: Shutdown,
    allow_from: Vec<ipnet::IpNet>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((_, peer)) if !allowed(&allow_from, peer) => {
                    tracing::warn!("refused a connection from {peer}: not in --allow-from");
                }
                Ok((tcp, peer)) => {
                    connections.spawn(serve_connection(tcp, peer, router.clone(), shutdown.clone()));
                }
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning on the error.
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.wait() => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Whether `peer` may connect: anyone when no network is listed.
fn allowed(allow_from: &[ipnet::IpNet], peer: SocketAddr) -> bool {
    let ip = match peer.ip() {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(peer.ip()),
        v4 => v4,
    };
    allow_from.is_empty() || allow_from.iter().any(|net| net.contains(&ip))
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    mut shutdown: Shutdown,
) {
    // The real server turns Nagle off so that every SSE frame leaves at once.
    let _ = tcp.set_nodelay(true);
    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.wait() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
