//! The browser tier's client: one headless Chromium (Debian's `chromium`) per process, driven
//! over the DevTools protocol, with one incognito context per proxy run and one tab per check.
//!
//! Chromium starts with its own empty profile in a temporary folder (`proxy-suite-chromium-*`,
//! claimed like a run's prefix: removed on close and on drop, and by [`crate::leftovers::reap`]
//! with the browser's processes, which carry the owner in their environment, when a SIGKILLed
//! suite could not; Ctrl-C and SIGTERM kill its process tree and remove the profile at once,
//! [`kill_live`]). Background networking, component updates and sync are off, and every
//! host name resolves to loopback, so the browser talks to nothing but the proxies under test.
//! A tab records what the page cannot see of itself: the network's failures
//! (`Network.loadingFailed` error texts such as `net::ERR_INCOMPLETE_CHUNKED_ENCODING`), the
//! WebSocket handshakes' statuses and frame errors, and the console.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chromiumoxide::browser::BrowserConfig;
use chromiumoxide::cdp::browser_protocol::browser::BrowserContextId;
use chromiumoxide::cdp::browser_protocol::log::EventEntryAdded;
use chromiumoxide::cdp::browser_protocol::network::{
    EventLoadingFailed, EventRequestWillBeSent, EventWebSocketCreated, EventWebSocketFrameError,
    EventWebSocketHandshakeResponseReceived,
};
use chromiumoxide::cdp::browser_protocol::target::{CreateBrowserContextParams, CreateTargetParams};
use chromiumoxide::cdp::js_protocol::runtime::{EvaluateParams, EventExceptionThrown};
use chromiumoxide::Page;
use futures::StreamExt;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::tls::Transport;

/// The component name a missing browser is reported under (skip, or failure in strict mode).
pub const COMPONENT: &str = "chromium";
/// What a user without Chromium runs.
pub const INSTALL_HINT: &str = "install Debian's chromium: `./proxy-suite setup --with-browser` (or `apt-get install chromium`)";
/// Where a user's Chromium is, when it is not `chromium` on the PATH.
pub const EXECUTABLE_ENV: &str = "PROXY_SUITE_CHROMIUM";

/// How long one DevTools command may take: a probe's promise (a 50 MB upload through a slow
/// proxy) resolves within its own timeout, well below this.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

/// The longest request body the DevTools protocol reports with a request (see [`Tab::watch`]).
const MAX_POST_DATA_SEEN: i64 = 1024;

/// Why no browser could be had.
#[derive(Debug, Clone)]
pub enum Unavailable {
    /// Not installed: a skip with the install hint (a failure in strict mode).
    Missing(String),
    /// Installed but it would not start: always an error.
    Broken(String),
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::Missing(why) => write!(f, "{why}; {INSTALL_HINT}"),
            Unavailable::Broken(why) => write!(f, "chromium does not start: {why}"),
        }
    }
}

/// The Chromium executable: `$PROXY_SUITE_CHROMIUM`, else `chromium` on the PATH.
pub fn executable() -> Result<PathBuf, Unavailable> {
    if let Some(path) = std::env::var_os(EXECUTABLE_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Unavailable::Missing(format!("{EXECUTABLE_ENV}={} is not a file", path.display())))
        };
    }
    which::which("chromium").map_err(|_| Unavailable::Missing("chromium not found on the PATH".into()))
}

/// The browser this process runs (its main process and profile folder), for the interrupt
/// handler: Ctrl-C and SIGTERM end the process without running destructors.
static LIVE: Mutex<Option<(u32, PathBuf)>> = Mutex::new(None);

/// Kills the browser this process started, with its helper processes, and removes its profile
/// (the interrupt handler's part, after the proxies are stopped).
pub fn kill_live() {
    let Some((pid, profile)) = lock(&LIVE).take() else { return };
    let Ok(pid) = i32::try_from(pid) else { return };
    // Its helpers (zygotes, renderers, the network service) carry no owner tag and would write
    // into the profile for a moment after the browser died: the whole tree goes at once.
    for p in std::iter::once(pid).chain(descendants(pid)) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
    }
    let _ = std::fs::remove_dir_all(profile);
}

/// Every process below `root` (children, their children, ...), from `/proc/<pid>/stat`.
fn descendants(root: i32) -> Vec<i32> {
    let parent_of = |pid: i32| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Field 4, after the command name in parentheses (which may hold spaces).
        stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
    };
    let all: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter_map(|pid| Some((pid, parent_of(pid)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    found.remove(0);
    found
}

/// The one Chromium of this process.
pub struct Browser {
    inner: Option<chromiumoxide::Browser>,
    handler: JoinHandle<()>,
    profile: Option<tempfile::TempDir>,
    version: String,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").field("version", &self.version).finish()
    }
}

impl Browser {
    /// Starts Chromium headless with a fresh profile (after removing what a killed suite left).
    pub async fn launch() -> Result<Browser, Unavailable> {
        let exe = executable()?;
        crate::leftovers::reap();
        let profile = tempfile::Builder::new()
            .prefix("proxy-suite-chromium-")
            .tempdir()
            .map_err(|e| Unavailable::Broken(format!("cannot create the profile folder: {e}")))?;
        crate::leftovers::claim(profile.path()).map_err(|e| Unavailable::Broken(format!("cannot claim the profile folder: {e}")))?;
        let pin = crate::tls::leaf_spki_pin().map_err(Unavailable::Broken)?;
        let mut config = BrowserConfig::builder()
            .chrome_executable(&exe)
            .user_data_dir(profile.path())
            .disable_default_args()
            .launch_timeout(Duration::from_secs(30))
            .request_timeout(COMMAND_TIMEOUT)
            .env(crate::leftovers::OWNER_ENV, crate::leftovers::owner_tag())
            // chromiumoxide writes each as `--key` or `--key=value`.
            .args([
                "disable-background-networking",
                "disable-component-update",
                "disable-sync",
                "no-first-run",
                "no-default-browser-check",
                "disable-default-apps",
                "disable-extensions",
                "disable-breakpad",
                "disable-dev-shm-usage",
                "use-mock-keychain",
                "metrics-recording-only",
                // Timers of a headless tab must not be throttled while a probe waits.
                "disable-background-timer-throttling",
                "disable-renderer-backgrounding",
                "disable-backgrounding-occluded-windows",
            ])
            .args([
                ("password-store", "basic"),
                // Plain http:// is what the h1 tier tests: no HTTPS-first upgrade of it.
                ("disable-features", "HttpsUpgrades,HttpsFirstBalancedModeAutoEnable,Translate,MediaRouter,OptimizationHints"),
                // A site's name (the Host the proxy's config routes on) reaches the proxy's
                // loopback listener; no name leaves the machine.
                ("host-resolver-rules", "MAP * 127.0.0.1,EXCLUDE localhost"),
            ])
            // TLS runs: the certificates of this process's leaf key and no other, whatever
            // authority a run made for them (see `tls`); every other certificate error stands.
            .arg(("ignore-certificate-errors-spki-list", pin.as_str()));
        // Chromium refuses to run as root with its sandbox (containers, CI).
        if running_as_root() {
            config = config.no_sandbox();
        }
        let config = config.build().map_err(Unavailable::Broken)?;
        let (mut inner, mut handler) = chromiumoxide::Browser::launch(config).await.map_err(|e| Unavailable::Broken(e.to_string()))?;
        if let Some(pid) = inner.get_mut_child().and_then(|c| c.as_mut_inner().id()) {
            *lock(&LIVE) = Some((pid, profile.path().to_path_buf()));
        }
        // The handler is the connection's event loop: it must be polled for any command to
        // complete. It ends when the browser goes.
        let handler = tokio::spawn(async move { while handler.next().await.is_some() {} });
        let version = match inner.version().await {
            Ok(v) => v.product,
            Err(e) => {
                handler.abort();
                return Err(Unavailable::Broken(format!("no answer to Browser.getVersion: {e}")));
            }
        };
        Ok(Browser { inner: Some(inner), handler, profile: Some(profile), version })
    }

    /// `Chrome/156.0...` as the browser reports itself.
    pub fn version(&self) -> &str {
        &self.version
    }

    fn inner(&self) -> &chromiumoxide::Browser {
        self.inner.as_ref().expect("the browser is open until close or drop")
    }

    /// A fresh incognito context (no cookies, cache or sockets shared with other runs).
    pub async fn context(self: &Arc<Self>) -> Result<Context, String> {
        let id = self
            .inner()
            .create_browser_context(CreateBrowserContextParams::default())
            .await
            .map_err(|e| format!("Target.createBrowserContext failed: {e}"))?;
        Ok(Context { browser: self.clone(), id: Some(id) })
    }

    /// Closes the browser, waits for its processes to end and removes its profile.
    pub async fn close(mut self) {
        lock(&LIVE).take();
        if let Some(mut inner) = self.inner.take() {
            let closed = tokio::time::timeout(Duration::from_secs(5), async {
                let _ = inner.close().await;
                let _ = inner.wait().await;
            })
            .await;
            if closed.is_err() {
                let _ = inner.kill().await;
            }
        }
        self.handler.abort();
        if let Some(profile) = self.profile.take() {
            let _ = profile.close();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Dropping chromiumoxide's browser kills its process (kill_on_drop); the profile's
        // TempDir removes the folder.
        lock(&LIVE).take();
        self.handler.abort();
        if let Some(mut inner) = self.inner.take() {
            if let Some(child) = inner.get_mut_child() {
                let _ = child.as_mut_inner().start_kill();
            }
        }
    }
}

/// One proxy run's incognito context.
pub struct Context {
    browser: Arc<Browser>,
    id: Option<BrowserContextId>,
}

impl Context {
    /// Opens a tab on `url` and waits until it has loaded; what the network did meanwhile is in
    /// the tab's [`NetLog`], also when loading fails.
    pub async fn open(&self, url: &str) -> Result<Tab, (String, NetLog)> {
        let params = CreateTargetParams::builder()
            .url("about:blank")
            .browser_context_id(self.id.clone().expect("open until dispose"))
            .build()
            .map_err(|e| (e, NetLog::default()))?;
        let page = self
            .browser
            .inner()
            .new_page(params)
            .await
            .map_err(|e| (format!("Target.createTarget failed: {e}"), NetLog::default()))?;
        let tab = Tab::watch(page).await.map_err(|e| (e, NetLog::default()))?;
        if let Err(e) = tab.page.goto(url).await {
            let log = tab.net_log();
            tab.close().await;
            return Err((format!("the page {url} did not load: {e}"), log));
        }
        Ok(tab)
    }

    /// Disposes of the context (and every tab left in it).
    pub async fn dispose(mut self) {
        if let Some(id) = self.id.take() {
            let _ = self.browser.inner().dispose_browser_context(id).await;
        }
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // A context dropped without `dispose` (a check that panicked) is disposed in the
        // background; the browser's own close disposes of whatever is left.
        if let (Some(id), Ok(rt)) = (self.id.take(), tokio::runtime::Handle::try_current()) {
            let browser = self.browser.clone();
            rt.spawn(async move {
                let _ = browser.inner().dispose_browser_context(id).await;
            });
        }
    }
}

/// What the browser itself reported while a tab was open, each with the milliseconds since the
/// tab opened.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NetLog {
    /// `Network.loadingFailed`: the URL and the browser's error text (`net::ERR_...`).
    pub failed: Vec<(u64, String, String)>,
    /// WebSocket handshake responses: the URL and the status the browser got.
    pub handshakes: Vec<(u64, String, i64)>,
    /// `Network.webSocketFrameError` messages.
    pub frame_errors: Vec<(u64, String, String)>,
    /// Console and log entries of level error or warning, and uncaught exceptions.
    pub console: Vec<(u64, String)>,
}

impl NetLog {
    /// Every error text the browser gave for URLs containing `route`.
    pub fn errors_for(&self, route: &str) -> Vec<String> {
        let mut out: Vec<String> = self.failed.iter().filter(|(_, url, _)| url.contains(route)).map(|(_, _, e)| e.clone()).collect();
        out.extend(self.frame_errors.iter().filter(|(_, url, _)| url.contains(route)).map(|(_, _, e)| e.clone()));
        out.extend(self.console.iter().filter(|(_, text)| text.contains(route)).map(|(_, t)| t.clone()));
        // The page's own closing of a stream (`EventSource.close()`) is not the proxy's doing;
        // an error said twice (as a frame error and on the console) is kept once.
        out.retain(|e| e != "net::ERR_ABORTED");
        let all = out.clone();
        out.retain(|e| !all.iter().any(|other| other != e && other.contains(e.as_str())));
        out.dedup();
        out
    }
}

/// An open tab with its listeners.
pub struct Tab {
    page: Page,
    log: Arc<Mutex<NetLog>>,
    listeners: Vec<JoinHandle<()>>,
}

impl Tab {
    async fn watch(page: Page) -> Result<Tab, String> {
        let log = Arc::new(Mutex::new(NetLog::default()));
        let urls: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let opened = Instant::now();
        let ms = move || opened.elapsed().as_millis() as u64;
        let listen_err = |e: chromiumoxide::error::CdpError| format!("cannot listen to the tab's events: {e}");
        // chromiumoxide enables the Network domain with Chromium's defaults, which put every
        // request body into `requestWillBeSent`: a 50 MB upload became 67 MB of base64 over
        // the DevTools socket, 3 s of CPU for a body the harness never reads. Bodies stay out.
        let quiet = chromiumoxide::cdp::browser_protocol::network::EnableParams::builder().max_post_data_size(MAX_POST_DATA_SEEN).build();
        page.execute(quiet).await.map_err(|e| format!("Network.enable failed: {e}"))?;
        let mut listeners = Vec::new();

        let mut sent = page.event_listener::<EventRequestWillBeSent>().await.map_err(listen_err)?;
        let u = urls.clone();
        listeners.push(tokio::spawn(async move {
            while let Some(ev) = sent.next().await {
                lock(&u).insert(ev.request_id.inner().clone(), ev.request.url.clone());
            }
        }));
        let mut created = page.event_listener::<EventWebSocketCreated>().await.map_err(listen_err)?;
        let u = urls.clone();
        listeners.push(tokio::spawn(async move {
            while let Some(ev) = created.next().await {
                lock(&u).insert(ev.request_id.inner().clone(), ev.url.clone());
            }
        }));
        let url_of = |urls: &Arc<Mutex<HashMap<String, String>>>, id: &str| lock(urls).get(id).cloned().unwrap_or_default();

        let mut failed = page.event_listener::<EventLoadingFailed>().await.map_err(listen_err)?;
        let (l, u) = (log.clone(), urls.clone());
        listeners.push(tokio::spawn(async move {
            while let Some(ev) = failed.next().await {
                let url = url_of(&u, ev.request_id.inner());
                lock(&l).failed.push((ms(), url, ev.error_text.clone()));
            }
        }));
        let mut handshakes = page.event_listener::<EventWebSocketHandshakeResponseReceived>().await.map_err(listen_err)?;
        let (l, u) = (log.clone(), urls.clone());
        listeners.push(tokio::spawn(async move {
            while let Some(ev) = handshakes.next().await {
                let url = url_of(&u, ev.request_id.inner());
                lock(&l).handshakes.push((ms(), url, ev.response.status));
            }
        }));
        let mut frame_errors = page.event_listener::<EventWebSocketFrameError>().await.map_err(listen_err)?;
        let (l, u) = (log.clone(), urls.clone());
        listeners.push(tokio::spawn(async move {
            while let Some(ev) = frame_errors.next().await {
                let url = url_of(&u, ev.request_id.inner());
                lock(&l).frame_errors.push((ms(), url, ev.error_message.clone()));
            }
        }));
        let mut entries = page.event_listener::<EventEntryAdded>().await.map_err(listen_err)?;
        let l = log.clone();
        listeners.push(tokio::spawn(async move {
            use chromiumoxide::cdp::browser_protocol::log::LogEntryLevel;
            while let Some(ev) = entries.next().await {
                if matches!(ev.entry.level, LogEntryLevel::Error | LogEntryLevel::Warning) {
                    let url = ev.entry.url.clone().unwrap_or_default();
                    let text = if url.is_empty() || ev.entry.text.contains(&url) { ev.entry.text.clone() } else { format!("{} ({url})", ev.entry.text) };
                    lock(&l).console.push((ms(), text));
                }
            }
        }));
        let mut exceptions = page.event_listener::<EventExceptionThrown>().await.map_err(listen_err)?;
        let l = log.clone();
        listeners.push(tokio::spawn(async move {
            while let Some(ev) = exceptions.next().await {
                let d = &ev.exception_details;
                let text = d.exception.as_ref().and_then(|e| e.description.clone()).unwrap_or_else(|| d.text.clone());
                lock(&l).console.push((ms(), format!("uncaught: {text}")));
            }
        }));
        Ok(Tab { page, log, listeners })
    }

    /// Evaluates `expression` in the page, awaiting the promise it returns, and gives back its
    /// value as JSON.
    pub async fn evaluate(&self, expression: &str) -> Result<serde_json::Value, String> {
        let params = EvaluateParams::builder()
            .expression(expression)
            .await_promise(true)
            .return_by_value(true)
            .build()
            .map_err(|e| format!("cannot build Runtime.evaluate: {e}"))?;
        let result = self.page.evaluate_expression(params).await.map_err(|e| format!("Runtime.evaluate of {expression:?} failed: {e}"))?;
        Ok(result.value().cloned().unwrap_or(serde_json::Value::Null))
    }

    /// The page's own timeline (`window.records`).
    pub async fn records(&self) -> serde_json::Value {
        self.evaluate("window.records || []").await.unwrap_or(serde_json::Value::Null)
    }

    /// What the browser reported so far.
    pub fn net_log(&self) -> NetLog {
        lock(&self.log).clone()
    }

    /// Closes the tab.
    pub async fn close(self) {
        for l in &self.listeners {
            l.abort();
        }
        let _ = self.page.close().await;
    }
}

/// Whether this process runs as root: `/proc/self` belongs to the process's effective user.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The page's URL on a target: the site's name (the Host the proxy's config routes on,
/// resolved to loopback by the browser) with the listener's port, or the address itself when
/// the site has no name; `https` over a TLS transport.
pub fn page_url(transport: Transport, host: &str, addr: SocketAddr, path: &str) -> String {
    let scheme = transport.scheme();
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    if name.is_empty() || name.contains(['[', ':']) || name.parse::<std::net::IpAddr>().is_ok() || !addr.ip().is_loopback() {
        format!("{scheme}://{addr}{path}")
    } else {
        format!("{scheme}://{name}:{}{path}", addr.port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_asked_for_by_the_sites_name_on_the_listeners_port() {
        let addr: SocketAddr = "127.0.0.1:4711".parse().unwrap();
        assert_eq!(page_url(Transport::H1, "openchamber.example.com", addr, "/p"), "http://openchamber.example.com:4711/p");
        assert_eq!(page_url(Transport::H1, "openchamber.example.com:80", addr, "/p"), "http://openchamber.example.com:4711/p");
        assert_eq!(page_url(Transport::H1, "127.0.0.1:4711", addr, "/p"), "http://127.0.0.1:4711/p");
        assert_eq!(page_url(Transport::H1, "", addr, "/p"), "http://127.0.0.1:4711/p");
        assert_eq!(page_url(Transport::H2, "dorkos.example.com:443", addr, "/p"), "https://dorkos.example.com:4711/p");
    }
}
