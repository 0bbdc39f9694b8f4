//! One run: a proxy with a config and a backend profile, every selected check graded through
//! it. Also the direct control (the same checks against the mock itself) and the plan of a
//! whole matrix.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};

use mock_server::Profile;
use serde::{Deserialize, Serialize};

use crate::backend::Backends;
use crate::checks::{self, Grade, Outcome, Target};
use crate::proxies::config::Role;
use crate::proxies::{render, Availability, ConfigFile, Kind, ProxySpec};
use crate::runtimes::{Runtime, SetupError};
use crate::tls::{Transport, Trust};

/// The password the backends take while `auth.origin` runs.
const UI_PASSWORD: &str = "proxy-suite-ui-password";

/// What to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub spec: ProxySpec,
    pub config: ConfigFile,
    pub profile: Profile,
    pub idle: Duration,
    /// Check ids to run; empty means all.
    pub only: Vec<String>,
    /// Keep the proxy's prefix when a check fails (for a user debugging their config).
    pub keep_on_fail: bool,
    /// How the checks' client reaches the proxy ([`transports_for`] says which the config
    /// offers).
    pub transport: Transport,
    /// The process's browser, when this run includes the browser tier (`--browser`, and
    /// [`browser_tier_applies`]): the run gets its own incognito context in it.
    pub browser: Option<Arc<crate::browser::Browser>>,
}

/// The result of one proxy x config x profile.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// `nginx@1.22`, `npm`, or `direct`.
    pub proxy: String,
    /// The exact version the binary reported (None when it could not run).
    pub version: Option<String>,
    /// Where the binary came from.
    pub source: String,
    /// The runtime that ran the proxy (`native`); the checks never depend on it.
    #[serde(default = "native")]
    pub runtime: String,
    /// The container image that ran the proxy (reference and id), in a container runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<crate::runtimes::ImageRecord>,
    /// `nginx/openchamber-guide.conf`.
    pub config: String,
    /// What the config is for (a negative control's fails are by design).
    pub role: Option<Role>,
    /// For a negative control: the checks it is built to fail.
    #[serde(default)]
    pub negative_control: Vec<String>,
    pub profile: Profile,
    /// How the client reached the proxy; results written before transports read as `h1`.
    #[serde(default)]
    pub transport: Transport,
    /// Set when the proxy could not be brought up: not a check result.
    pub setup_error: Option<SetupIssue>,
    /// What the suite rewrote in the config.
    pub rewrites: Vec<String>,
    pub checks: Vec<Outcome>,
    pub elapsed_ms: u64,
}

/// Why a run has no grades.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetupIssue {
    /// `missing` (a skip: binary not installed), `invalid-config`, `not-ready`, `error`.
    pub kind: String,
    pub message: String,
}

/// The runtime of results written before runs recorded it.
fn native() -> String {
    "native".into()
}

impl RunResult {
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| matches!(c.grade, Grade::Fail | Grade::Error))
    }
}

/// The profiles a config is run under. The config's `# profile:` header decides (the DorkOS
/// configs say `dorkos`). Without one, a config whose backend addresses (found as the renderer
/// finds them) are all on DorkOS's port 4242 is a DorkOS config, as a user's own file handed to
/// `proxy-suite check` may be; every other config runs under `openchamber` (the backend helps
/// with `X-Accel-Buffering`, heartbeats) and `bare` (it does not), so a config that passes only
/// because the backend helps is visible.
pub fn profiles_for(config: &ConfigFile) -> Vec<Profile> {
    if !config.profiles.is_empty() {
        return config.profiles.clone();
    }
    let mut text = std::fs::read_to_string(&config.path).unwrap_or_default();
    for companion in config.companions() {
        text.push_str(&std::fs::read_to_string(companion).unwrap_or_default());
    }
    let ports = render::backend_ports(&crate::proxies::kinds::code_of(&text));
    if !ports.is_empty() && ports.iter().all(|p| *p == Profile::Dorkos.default_port()) {
        vec![Profile::Dorkos]
    } else {
        vec![Profile::Openchamber, Profile::Bare]
    }
}

/// The transports a config offers a browser, found by rendering it as a run would (into a
/// scratch prefix, with placeholder ports): plain HTTP/1.1 where it listens without TLS,
/// HTTP/1.1 over TLS and (when its TLS listener enables it) HTTP/2 where it has TLS. A config
/// that does not render offers `h1`, so its run reports the render error.
pub fn transports_for(config: &ConfigFile, root: &std::path::Path) -> Vec<Transport> {
    let Ok(prefix) = tempfile::tempdir() else { return vec![Transport::H1] };
    let ports = render::Ports {
        listen: ([127, 0, 0, 1], 1).into(),
        tls_listen: ([127, 0, 0, 1], 2).into(),
        backends: vec![([127, 0, 0, 1], 3).into(); config.backends.max(1)],
        spare: 4,
    };
    match render::render(config, prefix.path(), &ports, root, None) {
        Ok(rendered) if !rendered.transports().is_empty() => rendered.transports(),
        _ => vec![Transport::H1],
    }
}

/// Replaces the catalogue's generic fix of every non-passing outcome with the kind's own advice,
/// in its syntax, where it has some.
pub fn advise(kind: Kind, outcomes: &mut [Outcome]) {
    for outcome in outcomes.iter_mut().filter(|o| matches!(o.grade, Grade::Warn | Grade::Fail)) {
        if let Some(fix) = kind.fix(&outcome.id) {
            outcome.fix = fix.to_string();
        }
    }
}

/// Selected check ids, in catalogue order: the browser tier only when `browser` is set.
pub fn selected(only: &[String], browser: bool) -> Vec<&'static str> {
    checks::catalogue()
        .iter()
        .filter(|c| browser || !c.browser)
        .map(|c| c.id)
        .filter(|id| only.is_empty() || only.iter().any(|o| o == id))
        .collect()
}

/// Whether a matrix run of `config` over `transport` includes the browser tier: the configs a
/// user copies (guide examples, known-good) and the browser's own negative controls, over each
/// way a browser reaches the site. That is plain HTTP/1.1, and TLS as Chromium negotiates it:
/// HTTP/2 where the TLS listener offers it (an `h1-tls` run beside it would repeat the `h2` one,
/// since the browser takes h2 when offered), else HTTP/1.1 over TLS. `offered` is what
/// [`transports_for`] found.
pub fn browser_tier_applies(config: &ConfigFile, transport: Transport, offered: &[Transport]) -> bool {
    let reached = match transport {
        Transport::H1 | Transport::H2 => true,
        Transport::H1Tls => !offered.contains(&Transport::H2),
    };
    reached
        && (matches!(config.role, Role::Guide | Role::KnownGood | Role::User)
            || config.negative_control.iter().any(|n| n.starts_with("browser.") || REPEATED_BY_THE_BROWSER.contains(&n.as_str())))
}

/// The protocol checks whose requirement the browser tier repeats (the page itself is a
/// compressed response, like `compress.single`'s): their negative controls run in the browser
/// too, so the matrix shows where the browser and the protocol check agree and where not.
const REPEATED_BY_THE_BROWSER: &[&str] = &["sse.stream", "sse.headers", "sse.idle", "ws.upgrade", "body.large", "compress.single"];

/// Orders the work of concurrent runs so that their measurements do not disturb each other:
/// every proxy is started first (start-up is the heaviest moment), then the timing-sensitive
/// checks, a limited number of runs at a time, then the 50 MB uploads, a few at a time. The
/// long idle checks start with the timing phase and span the rest, so a whole matrix costs
/// about one idle period.
#[derive(Clone)]
pub struct Schedule {
    started: Gate,
    timed: Gate,
    /// Every run's checks done: with the browser tier on, runs whose stop takes a network
    /// interface away (a container's) stop only after it (see [`Schedule::with_browser`]).
    checked: Gate,
    holds_stops: bool,
    /// Runs whose timing-sensitive checks may run at once: with all 100 runs of a matrix at
    /// once, the 2-core machine itself delayed ticks by up to 0.7 s, too close to the 1 s
    /// budget; 16 at a time keeps the phase well inside one idle period.
    timing: Arc<Semaphore>,
    uploads: Arc<Semaphore>,
    /// The browser tier's 50 MB uploads at once (each holds the body in a tab, and the
    /// timing checks are over when they run).
    browser_uploads: Arc<Semaphore>,
    /// The browser tier's tabs that measure timings at once: a renderer starved by many tabs
    /// on a small machine delays every stream of its page alike (seen: 1.2 s on all five).
    browser_timing: Arc<Semaphore>,
    created: Instant,
}

/// When a [`Schedule`]'s phases ended, from its creation: what a whole matrix's time went to.
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    /// Every proxy up (or failed).
    pub started: Option<Duration>,
    /// Every run's timing-sensitive checks done (uploads and the long checks' ends follow).
    pub timed: Option<Duration>,
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = |d: Option<Duration>| d.map(|d| format!("{:.0} s", d.as_secs_f64())).unwrap_or_else(|| "never".into());
        write!(f, "every proxy up after {}, every timing check done after {}", at(self.started), at(self.timed))
    }
}

/// How many browser uploads run at once (see [`Schedule`]).
const BROWSER_UPLOAD_SLOTS: usize = 4;
/// How many browser tabs measure timings at once (see [`Schedule`]): at 6 the worst tick lag
/// of a passing `browser.sse` over 117 runs was 100 ms, a tenth of the budget; at 12 the
/// 2-core machine reached a load of 24 and passing configs had ticks 1.5 s late.
const BROWSER_TIMING_SLOTS: usize = 6;

/// How many runs measure timings at once (see [`Schedule`]).
const TIMING_SLOTS: usize = 16;

/// Counts runs still before a point; everyone waits until all have passed it. Remembers when
/// the last one did.
#[derive(Clone)]
struct Gate(Arc<watch::Sender<usize>>, Arc<std::sync::OnceLock<Instant>>);

impl Gate {
    fn new(runs: usize) -> Gate {
        Gate(Arc::new(watch::channel(runs).0), Arc::default())
    }

    fn arrive(&self) {
        self.0.send_modify(|left| *left = left.saturating_sub(1));
        if *self.0.borrow() == 0 {
            let _ = self.1.set(Instant::now());
        }
    }

    async fn all_arrived(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|left| *left == 0).await;
    }
}

impl Schedule {
    /// For `runs` concurrent runs, with `upload_slots` uploads at a time.
    pub fn new(runs: usize, upload_slots: usize) -> Schedule {
        Schedule {
            started: Gate::new(runs),
            timed: Gate::new(runs),
            checked: Gate::new(runs),
            holds_stops: false,
            timing: Arc::new(Semaphore::new(TIMING_SLOTS)),
            uploads: Arc::new(Semaphore::new(upload_slots.max(1))),
            browser_uploads: Arc::new(Semaphore::new(BROWSER_UPLOAD_SLOTS)),
            browser_timing: Arc::new(Semaphore::new(BROWSER_TIMING_SLOTS)),
            created: Instant::now(),
        }
    }

    /// When its phases ended so far.
    pub fn phases(&self) -> Phases {
        let since = |gate: &Gate| gate.1.get().map(|at| at.saturating_duration_since(self.created));
        Phases { started: since(&self.started), timed: since(&self.timed) }
    }

    /// For a plan with the browser tier: Chromium aborts every request in flight, with
    /// `net::ERR_NETWORK_CHANGED`, when a network interface of the machine comes or goes, and
    /// removing a container removes its interface. Seen in `matrix --runtime docker --browser`:
    /// 18 of 300 browser cells failed so, on configs that pass natively. So container runs keep
    /// their container until every run's checks are done (they are all started before any
    /// check runs).
    pub fn with_browser(mut self, browser: bool) -> Schedule {
        self.holds_stops = browser;
        self
    }

    /// A schedule for one run alone.
    pub fn single() -> Schedule {
        Schedule::new(1, 1)
    }
}

/// A run's place in the [`Schedule`]: passes every gate it has not passed when dropped, so a
/// run that ends early (setup error) never holds the others back.
struct Arrival {
    schedule: Schedule,
    started: bool,
    timed: bool,
    checked: bool,
}

impl Arrival {
    fn new(schedule: &Schedule) -> Arrival {
        Arrival { schedule: schedule.clone(), started: false, timed: false, checked: false }
    }

    /// This run's proxy is up (or failed); wait until every run's is.
    async fn started(&mut self) {
        if !self.started {
            self.started = true;
            self.schedule.started.arrive();
        }
        self.schedule.started.all_arrived().await;
    }

    /// This run's timing checks are done; wait until every run's are.
    async fn timed(&mut self) {
        if !self.timed {
            self.timed = true;
            self.schedule.timed.arrive();
        }
        self.schedule.timed.all_arrived().await;
    }

    /// This run's checks are done; when its stop would disturb the browser tier of the
    /// others (see [`Schedule::with_browser`]), wait until every run's are.
    async fn checked(&mut self, stop_changes_interfaces: bool) {
        if !self.checked {
            self.checked = true;
            self.schedule.checked.arrive();
        }
        if stop_changes_interfaces && self.schedule.holds_stops {
            self.schedule.checked.all_arrived().await;
        }
    }
}

impl Drop for Arrival {
    fn drop(&mut self) {
        if !self.checked {
            self.schedule.checked.arrive();
        }
        if !self.started {
            self.schedule.started.arrive();
        }
        if !self.timed {
            self.schedule.timed.arrive();
        }
    }
}

/// Grades every selected check on `target`. `auth.origin` runs after the other short checks,
/// alone, with the backends in auth mode (the UI password would make every other check need
/// credentials); the long idle checks have made their requests by then.
async fn grade(target: &Target, backends: &Backends, remote: &[crate::backend::RemoteMock], only: &[String], browser: Option<&Arc<crate::browser::Browser>>, arrival: &mut Arrival) -> Vec<Outcome> {
    arrival.started().await;
    let ids = selected(only, browser.is_some());
    let entry = |id: &str| checks::info(id).copied();
    let is_long = |id: &str| entry(id).is_some_and(|c| c.long);
    let is_bulky = |id: &str| entry(id).is_some_and(|c| c.bulky);
    let is_authed = |id: &str| entry(id).is_some_and(|c| c.needs_ui_password);
    let is_browser = |id: &str| entry(id).is_some_and(|c| c.browser);
    let in_browser: Vec<&str> = ids.iter().copied().filter(|id| is_browser(id) && checks::browser::runs_under(id, target.profile)).collect();
    let ids_protocol: Vec<&str> = ids.iter().copied().filter(|id| !is_browser(id)).collect();
    let long: Vec<&str> = ids_protocol.iter().copied().filter(|id| is_long(id)).collect();
    let bulky: Vec<&str> = ids_protocol.iter().copied().filter(|id| is_bulky(id)).collect();
    let authed: Vec<&str> = ids_protocol.iter().copied().filter(|id| is_authed(id)).collect();
    let timing: Vec<&str> = ids_protocol
        .iter()
        .copied()
        .filter(|id| !is_long(id) && !is_bulky(id) && !is_authed(id))
        .collect();
    let long_checks = futures::future::join_all(long.iter().map(|id| checks::run(id, target)));
    let short_checks = async {
        let slot = arrival.schedule.timing.clone().acquire_owned().await;
        let mut outcomes = futures::future::join_all(timing.iter().map(|id| checks::run(id, target))).await;
        if !authed.is_empty() {
            match backends.set_ui_password(Some(UI_PASSWORD), remote).await {
                Ok(()) => {
                    let mut with_password = target.clone();
                    with_password.ui_password = Some(UI_PASSWORD.into());
                    for id in &authed {
                        outcomes.push(checks::run(id, &with_password).await);
                    }
                }
                Err(e) => outcomes.extend(authed.iter().filter_map(|id| checks::info(id)).map(|info| info.outcome(Grade::Error, "the backends in UI-password mode", e.clone(), serde_json::Value::Null))),
            }
            // Left on, it would turn every later request of the run into a 401: said, not hidden.
            if let Err(e) = backends.set_ui_password(None, remote).await {
                for o in outcomes.iter_mut().filter(|o| authed.contains(&o.id.as_str())) {
                    o.grade = Grade::Error;
                    o.actual = format!("{}; then UI-password mode could not be turned off: {e}", o.actual);
                }
            }
        }
        drop(slot);
        arrival.timed().await;
        for id in &bulky {
            let _slot = arrival.schedule.uploads.acquire().await;
            outcomes.push(checks::run(id, target).await);
        }
        if let Some(browser) = browser.filter(|_| !in_browser.is_empty()) {
            outcomes.extend(in_the_browser(browser, &in_browser, target, &arrival.schedule).await);
        }
        outcomes
    };
    let (mut outcomes, long_outcomes) = futures::future::join(short_checks, long_checks).await;
    outcomes.extend(long_outcomes);
    let order = |id: &str| ids.iter().position(|i| *i == id).unwrap_or(usize::MAX);
    outcomes.sort_by_key(|o| order(&o.id));
    outcomes
}

/// The browser tier of one run, after its other short checks (every proxy is up by then, so no
/// container is being created while the browser measures): one incognito context, one check
/// at a time, the timing-sensitive checks in a timing slot, the uploads in an upload slot.
/// (Watching a run's streams and sockets at once, as the app's page does, made the machine's
/// own delays reach the lag budget: ticks 0.9 s late on configs that pass.)
async fn in_the_browser(browser: &Arc<crate::browser::Browser>, ids: &[&str], target: &Target, schedule: &Schedule) -> Vec<Outcome> {
    let context = match browser.context().await {
        Ok(c) => Arc::new(c),
        Err(e) => {
            return ids
                .iter()
                .filter_map(|id| checks::info(id))
                .map(|info| info.outcome(Grade::Error, "a browser context for the run", e.clone(), serde_json::Value::Null))
                .collect()
        }
    };
    let mut outcomes = Vec::new();
    for id in ids {
        let bulky = checks::info(id).is_some_and(|c| c.bulky);
        let _slot = match (bulky, checks::browser::measures_timing(id)) {
            (true, _) => Some(schedule.browser_uploads.acquire().await),
            (false, true) => Some(schedule.browser_timing.acquire().await),
            (false, false) => None,
        };
        outcomes.push(checks::run_in_browser(id, target, &context).await);
    }
    if let Ok(context) = Arc::try_unwrap(context) {
        context.dispose().await;
    }
    outcomes
}

impl RunResult {
    /// A result with nothing measured yet.
    fn new(proxy: String, source: String, config: String, profile: Profile) -> RunResult {
        RunResult {
            proxy,
            version: None,
            source,
            runtime: native(),
            image: None,
            config,
            role: None,
            negative_control: Vec::new(),
            profile,
            transport: Transport::H1,
            setup_error: None,
            rewrites: Vec::new(),
            checks: Vec::new(),
            elapsed_ms: 0,
        }
    }

    fn set_setup_error(&mut self, kind: &str, message: String) {
        self.setup_error = Some(SetupIssue { kind: kind.into(), message });
    }
}

/// The version the proxy's binary reports, for a run whose proxy never came up (a setup error
/// still says which version refused the config); `None` when the binary cannot run.
async fn available_version(spec: &ProxySpec) -> Option<String> {
    let spec = spec.clone();
    match tokio::task::spawn_blocking(move || spec.availability()).await {
        Ok(Availability::Available { version }) => Some(version),
        _ => None,
    }
}

/// Starts the mock instances of a run; a failure is recorded as the run's setup error.
async fn start_backends(result: &mut RunResult, count: usize) -> Option<Backends> {
    match Backends::start(result.profile, count).await {
        Ok(b) => Some(b),
        Err(e) => {
            result.set_setup_error("error", format!("cannot start the mock: {e}"));
            None
        }
    }
}

/// Runs the checks against the mock itself: the control every proxy is compared with.
pub async fn run_direct(profile: Profile, backends_count: usize, idle: Duration, only: &[String], schedule: &Schedule) -> RunResult {
    let mut arrival = Arrival::new(schedule);
    let started = std::time::Instant::now();
    let mut result = RunResult::new("direct".into(), "mock-server (no proxy)".into(), "direct".into(), profile);
    result.version = Some(env!("CARGO_PKG_VERSION").into());
    let Some(backends) = start_backends(&mut result, backends_count).await else { return result };
    let target = Target {
        label: "direct".into(),
        addr: backends.addrs()[0],
        host: backends.addrs()[0].to_string(),
        profile,
        backends: backends.instance_ids(),
        idle,
        client_ip: checks::CLIENT_IP,
        direct: true,
        ui_password: None,
        transport: Transport::H1,
        trust: None,
        tls_listener: None,
    };
    result.checks = grade(&target, &backends, &[], only, None, &mut arrival).await;
    backends.shutdown().await;
    result.elapsed_ms = started.elapsed().as_millis() as u64;
    result
}

/// Starts backends and the proxy, grades the checks through it, stops everything.
pub async fn run_proxy(runtime: Arc<dyn Runtime>, req: RunRequest, schedule: &Schedule) -> RunResult {
    let mut arrival = Arrival::new(schedule);
    let started = std::time::Instant::now();
    let mut result = RunResult::new(req.spec.name.clone(), req.spec.source.describe(), req.config.id.clone(), req.profile);
    result.role = Some(req.config.role);
    result.transport = req.transport;
    result.negative_control = req.config.negative_control.clone();
    result.runtime = runtime.name().to_string();
    // The version of this machine's binary says which version refused the config natively; a
    // container's is the image's, which a run that never started does not know.
    let native = runtime.name() == "native";
    let Some(backends) = start_backends(&mut result, req.config.backends).await else {
        result.version = if native { available_version(&req.spec).await } else { None };
        return result;
    };
    let runtime_changes_interfaces = runtime.stop_changes_interfaces();
    let described = backends.described();
    let (spec, config) = (req.spec.clone(), req.config.clone());
    let started_proxy = tokio::task::spawn_blocking(move || runtime.start(&spec, &config, &described))
        .await
        .unwrap_or_else(|e| Err(SetupError::Io(format!("launcher panicked: {e}"))));
    let mut instance = match started_proxy {
        Ok(instance) => instance,
        Err(e) => {
            result.set_setup_error(e.kind(), e.to_string());
            result.version = if native { available_version(&req.spec).await } else { None };
            backends.shutdown().await;
            result.elapsed_ms = started.elapsed().as_millis() as u64;
            return result;
        }
    };
    result.version = Some(instance.version().to_string());
    result.image = instance.image();
    result.rewrites = instance.rewrites().to_vec();
    let addr = match req.transport {
        Transport::H1 if instance.transports().contains(&Transport::H1) => Some(instance.addr()),
        t if instance.transports().contains(&t) => instance.tls().map(|tls| tls.addr),
        _ => None,
    };
    let Some(addr) = addr else {
        let offered: Vec<&str> = instance.transports().iter().map(|t| t.as_str()).collect();
        result.set_setup_error("invalid-config", format!("the config does not offer the {} transport (it offers {})", req.transport, offered.join(", ")));
        tokio::task::spawn_blocking(move || instance.stop()).await.ok();
        backends.shutdown().await;
        result.elapsed_ms = started.elapsed().as_millis() as u64;
        return result;
    };
    let target = Target {
        label: format!("{}/{}", req.spec.name, req.config.id),
        addr,
        host: instance.host().to_string(),
        profile: req.profile,
        backends: backends.instance_ids(),
        idle: req.idle,
        client_ip: checks::CLIENT_IP,
        direct: false,
        ui_password: None,
        transport: req.transport,
        trust: instance.tls().map(|tls| Trust { ca_pem: tls.files.ca_pem.clone() }),
        tls_listener: instance.tls().map(|tls| tls.addr),
    };
    let remote = instance.own_backends();
    result.checks = grade(&target, &backends, &remote, &req.only, req.browser.as_ref(), &mut arrival).await;
    advise(req.spec.kind, &mut result.checks);
    if req.keep_on_fail && result.failed() {
        instance.keep_prefix();
    }
    arrival.checked(runtime_changes_interfaces).await;
    tokio::task::spawn_blocking(move || instance.stop()).await.ok();
    backends.shutdown().await;
    result.elapsed_ms = started.elapsed().as_millis() as u64;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(kind: &str, name: &str, text: &str) -> (tempfile::TempDir, ConfigFile) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let config = ConfigFile::load(&path, Kind::parse(kind)).unwrap();
        (dir, config)
    }

    #[test]
    fn the_profile_header_decides_else_dorkos_port_only() {
        let (_d, c) = config("nginx", "a.conf", "# profile: dorkos\nserver { location / { proxy_pass http://127.0.0.1:3000; } }\n");
        assert_eq!(profiles_for(&c), vec![Profile::Dorkos]);
        let (_d, c) = config("nginx", "a.conf", "server { location / { proxy_pass http://localhost:4242; } }\n");
        assert_eq!(profiles_for(&c), vec![Profile::Dorkos]);
        let (_d, c) = config("nginx", "a.conf", "# talks of :4242 in a comment\nserver { location / { proxy_pass http://127.0.0.1:3000; } }\n");
        assert_eq!(profiles_for(&c), vec![Profile::Openchamber, Profile::Bare]);
        let (_d, c) = config("npm", "a.conf", "# websockets: on\n");
        assert_eq!(profiles_for(&c), vec![Profile::Openchamber, Profile::Bare]);
    }

    #[test]
    fn the_guides_configs_keep_their_profiles() {
        let configs = crate::proxies::config::discover(&crate::proxies::config::default_root()).unwrap();
        for c in &configs {
            let want = if c.id.contains("dorkos") { vec![Profile::Dorkos] } else { vec![Profile::Openchamber, Profile::Bare] };
            assert_eq!(profiles_for(c), want, "{}", c.id);
        }
    }

    #[test]
    fn a_non_pass_gets_the_kinds_own_fix() {
        let info = checks::info("ws.idle").unwrap();
        let mut outcomes = vec![
            info.outcome(Grade::Fail, "e", "a", serde_json::Value::Null),
            checks::info("ws.upgrade").unwrap().outcome(Grade::Pass, "e", "a", serde_json::Value::Null),
        ];
        assert_eq!(outcomes[0].fix, info.fix);
        advise(Kind::parse("haproxy").unwrap(), &mut outcomes);
        assert!(outcomes[0].fix.contains("timeout tunnel"), "{}", outcomes[0].fix);
        assert!(outcomes[1].fix.is_empty());
    }
}
