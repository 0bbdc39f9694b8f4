//! The native runtime: proxies run as processes of this machine. Each gets its own temporary
//! prefix and free loopback ports, the config validated by the proxy's own checker, readiness
//! awaited by a real request through it, and its process group stopped on every exit path
//! (normal end, error, panic, Ctrl-C: the live-process registry and its handler). The prefix is
//! removed on a clean stop and kept (its path printed) after a failure, for debugging.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::{Backend, ProxyInstance, Runtime, SetupError};
use crate::proxies::catalogue::{Availability, ProxySpec};
use crate::proxies::config::ConfigFile;
use crate::proxies::kinds::Mode;
use crate::proxies::render::{self, Ports, Rendered, TlsEndpoint};
use crate::tls::{Transport, Trust};

/// Starts the proxy binaries installed on this machine.
#[derive(Debug, Clone, Default)]
pub struct NativeRuntime {
    /// `proxy-configs/` (where `_context` files live).
    pub configs_root: PathBuf,
    /// Keep the prefix of a proxy that refused its config or never came up (a user debugging
    /// one config wants it; a matrix run, whose evidence already carries the proxy's message,
    /// does not).
    pub keep_failed_setups: bool,
}

impl NativeRuntime {
    pub fn new(configs_root: PathBuf) -> Self {
        NativeRuntime { configs_root, keep_failed_setups: true }
    }

    /// The same runtime, removing the prefixes of failed setups.
    pub fn discarding_failed_setups(self) -> Self {
        NativeRuntime { keep_failed_setups: false, ..self }
    }

    /// Keeps a failed setup's prefix (when asked) and says where, for the error message.
    fn keep_or_discard(&self, prefix: tempfile::TempDir) -> String {
        if self.keep_failed_setups {
            crate::leftovers::release(prefix.path());
            format!("\n(rendered config and logs kept in {})", prefix.keep().display())
        } else {
            String::new()
        }
    }
}

/// Live process groups and their prefixes, so a Ctrl-C handler can stop everything.
static LIVE: Mutex<Option<HashMap<i32, PathBuf>>> = Mutex::new(None);

fn register(pgid: i32, prefix: &Path) {
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(HashMap::new).insert(pgid, prefix.to_path_buf());
}

fn unregister(pgid: i32) {
    if let Some(map) = LIVE.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        map.remove(&pgid);
    }
}

/// Kills every proxy this process started and removes their prefixes: for signal handlers.
pub fn stop_all_live() {
    let live = LIVE.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
    for (pgid, prefix) in live {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        let _ = std::fs::remove_dir_all(prefix);
    }
    // The container runtime's containers and networks, by this process's owner label.
    super::docker::remove_own();
    // The browser tier's Chromium and its profile.
    crate::browser::kill_live();
}

/// On Ctrl-C (or SIGTERM), stop every proxy this process started, remove their prefixes and
/// exit with 130. Installed once per process (the CLI, and each test binary that starts proxies).
/// Also removes what an earlier, SIGKILLed suite process left behind.
pub fn stop_on_interrupt() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let reaped = crate::leftovers::reap();
        if reaped != crate::leftovers::Reaped::default() {
            eprintln!(
                "proxy-suite: removed what a killed earlier run left: {} processes, {} prefixes",
                reaped.processes, reaped.prefixes
            );
        }
        let reaped = super::docker::reap();
        if reaped != super::docker::Reaped::default() {
            eprintln!(
                "proxy-suite: removed what a killed earlier run left in Docker: {} containers, {} networks",
                reaped.containers, reaped.networks
            );
        }
        let _ = ctrlc::set_handler(|| {
            stop_all_live();
            eprintln!("\nproxy-suite: interrupted; every proxy and the browser stopped, prefixes, profiles, containers and networks removed");
            std::process::exit(130);
        });
    });
}

/// A proxy process serving a rendered config.
#[derive(Debug)]
pub struct NativeInstance {
    /// `nginx@1.22`, ...
    pub proxy: String,
    /// The version the binary reported.
    pub version: String,
    /// The loopback address the proxy listens on.
    pub addr: SocketAddr,
    /// The Host a browser sends to this site.
    pub host: String,
    /// What rendering rewrote.
    pub rewrites: Vec<String>,
    /// The transports the config offers, and its TLS listener.
    pub transports: Vec<Transport>,
    pub tls: Option<TlsEndpoint>,
    /// The command line that started it.
    pub command: String,
    child: Option<Child>,
    prefix: Option<tempfile::TempDir>,
    keep_prefix: bool,
}

impl ProxyInstance for NativeInstance {
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

    fn transports(&self) -> Vec<Transport> {
        self.transports.clone()
    }

    fn tls(&self) -> Option<&TlsEndpoint> {
        self.tls.as_ref()
    }

    fn command(&self) -> &str {
        &self.command
    }

    /// The last lines of every log in the prefix.
    fn log_tail(&self) -> String {
        self.prefix().map(log_tail).unwrap_or_default()
    }

    fn prefix(&self) -> Option<&Path> {
        self.prefix.as_ref().map(|p| p.path())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn keep_prefix(&mut self) {
        self.keep_prefix = true;
    }

    /// Stops the process group and removes the prefix (kept if asked, or while panicking).
    fn stop(mut self: Box<Self>) {
        self.shutdown();
    }
}

impl NativeInstance {
    fn shutdown(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = child.id() as i32;
            // SIGTERM first so the proxy closes its listeners; SIGKILL the group after a bound.
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // Workers (nginx, apache) share the group: kill whatever is left of it.
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            let _ = child.wait();
            unregister(pgid);
        }
        if let Some(prefix) = self.prefix.take() {
            crate::leftovers::close_prefix(prefix, self.keep_prefix, &self.proxy);
        }
    }
}

impl Drop for NativeInstance {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A free loopback port for a proxy to bind. Picked below the kernel's ephemeral range (so no
/// client socket of this process can be holding it) and never handed out twice by this
/// process: two proxies given the same port would answer for each other.
pub fn free_port() -> Result<u16, SetupError> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000; // 20000..32000, under Linux's default ephemeral range (32768..)
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (start + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(SetupError::Io("no free loopback port in 20000..32000".into()))
}

impl Runtime for NativeRuntime {
    fn name(&self) -> &'static str {
        "native"
    }

    fn start(&self, spec: &ProxySpec, config: &ConfigFile, backends: &[Backend]) -> Result<Box<dyn ProxyInstance>, SetupError> {
        self.start_native(spec, config, &super::addrs(backends)).map(|i| Box::new(i) as Box<dyn ProxyInstance>)
    }

    /// Traefik, which has no checker, is started and awaited instead.
    fn validate(&self, spec: &ProxySpec, config: &ConfigFile, backends: &[Backend]) -> Result<(), SetupError> {
        let backends = &super::addrs(backends);
        if let Availability::Missing { reason, hint } = spec.availability() {
            return Err(SetupError::Missing { proxy: spec.name.clone(), reason, hint });
        }
        let (prefix, ports, rendered) = self.prepare(spec, config, backends)?;
        if spec.kind.args(Mode::Validate, &rendered, prefix.path()).is_some() {
            return Ok(());
        }
        drop((prefix, ports, rendered));
        self.start_native(spec, config, backends).map(drop)
    }
}

impl NativeRuntime {
    fn start_native(&self, spec: &ProxySpec, config: &ConfigFile, backends: &[SocketAddr]) -> Result<NativeInstance, SetupError> {
        let version = match spec.availability() {
            Availability::Available { version } => version,
            Availability::Missing { reason, hint } => {
                return Err(SetupError::Missing { proxy: spec.name.clone(), reason, hint })
            }
        };
        // Ports are picked by the kernel and released before the proxy binds; a rare race with
        // another instance is retried once with fresh ports.
        match self.start_once(spec, config, backends, &version) {
            Err(SetupError::NotReady { log_tail, .. }) if log_tail.contains("in use") => {
                self.start_once(spec, config, backends, &version)
            }
            other => other,
        }
    }

    /// Renders `config` into a fresh prefix and runs the proxy's own validator on it. The
    /// prefix is returned for starting; on an invalid config it is kept for inspection.
    fn prepare(&self, spec: &ProxySpec, config: &ConfigFile, backends: &[SocketAddr]) -> Result<(tempfile::TempDir, Ports, Rendered), SetupError> {
        let prefix = tempfile::Builder::new()
            .prefix(&format!("proxy-suite-{}-", spec.name.replace('@', "-")))
            .tempdir()
            .map_err(|e| SetupError::Io(format!("cannot create a prefix: {e}")))?;
        let ports = Ports {
            listen: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            tls_listen: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            backends: backends.to_vec(),
            spare: free_port()?,
        };
        // nginx workers run as `nobody`: they must be able to traverse the prefix to write
        // buffered request bodies into it.
        std::fs::set_permissions(prefix.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711))
            .map_err(|e| SetupError::Io(format!("cannot set prefix permissions: {e}")))?;
        // If this process is SIGKILLed, the next one removes the prefix (see `leftovers`).
        crate::leftovers::claim(prefix.path()).map_err(|e| SetupError::Io(format!("cannot write the prefix's owner: {e}")))?;
        let distribution = spec.kind.distribution(&spec.source);
        let rendered = render::render(config, prefix.path(), &ports, &self.configs_root, distribution)
            .map_err(|message| SetupError::Render { config: config.id.clone(), message })?;
        if let Some(mut cmd) = proxy_command(spec, &rendered, prefix.path(), Mode::Validate) {
            let out = cmd.output().map_err(|e| SetupError::Io(format!("cannot run {}: {e}", spec.binary.display())))?;
            if !out.status.success() {
                let message = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                let kept = self.keep_or_discard(prefix);
                return Err(SetupError::InvalidConfig {
                    proxy: spec.name.clone(),
                    config: config.id.clone(),
                    message: format!("{}{kept}", message.trim()),
                });
            }
        }
        // After the proxy's own validator (its message says more about a broken file), before
        // starting: a config that proxies nothing would only time out in the readiness wait.
        if let Some(missing) = spec.kind.missing_route(&rendered) {
            let kept = self.keep_or_discard(prefix);
            return Err(SetupError::NoRoute { config: config.id.clone(), missing: format!("{missing}{kept}") });
        }
        Ok((prefix, ports, rendered))
    }

    fn start_once(&self, spec: &ProxySpec, config: &ConfigFile, backends: &[SocketAddr], version: &str) -> Result<NativeInstance, SetupError> {
        let (prefix, ports, rendered) = self.prepare(spec, config, backends)?;
        let mut cmd = proxy_command(spec, &rendered, prefix.path(), Mode::Run)
            .ok_or_else(|| SetupError::Io(format!("{} has no command line to serve a config", spec.kind)))?;
        let logs = prefix.path().join("logs");
        let stdout = std::fs::File::create(logs.join("stdout.log")).map_err(|e| SetupError::Io(e.to_string()))?;
        let stderr = std::fs::File::create(logs.join("stderr.log")).map_err(|e| SetupError::Io(e.to_string()))?;
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        // Own process group, so the whole tree (master and workers) is stopped with one signal,
        // and a Ctrl-C in the terminal reaches the suite, which then stops the group itself.
        cmd.process_group(0);
        // If the suite dies without unwinding (SIGKILL), the kernel still stops the proxy.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let command = format!("{cmd:?}");
        let child = spawn_from_launcher(cmd).map_err(|e| SetupError::Io(format!("cannot start {}: {e}", spec.binary.display())))?;
        register(child.id() as i32, prefix.path());
        let mut instance = NativeInstance {
            proxy: spec.name.clone(),
            version: version.to_string(),
            addr: ports.listen,
            host: rendered.host.clone(),
            rewrites: rendered.rewrites.clone(),
            transports: rendered.transports(),
            tls: rendered.tls.clone(),
            command,
            child: Some(child),
            prefix: Some(prefix),
            keep_prefix: false,
        };
        if let Err(message) = wait_ready(&mut instance, Duration::from_secs(20)) {
            if self.keep_failed_setups {
                instance.keep_prefix = true;
            }
            let log_tail = instance.log_tail();
            let prefix = instance.prefix().map(|p| p.display().to_string()).unwrap_or_default();
            return Err(SetupError::NotReady { proxy: spec.name.clone(), message, log_tail, prefix });
        }
        Ok(instance)
    }
}

/// Spawns `cmd` from one long-lived thread. The kernel sends the parent-death signal when the
/// *thread* that forked the child exits, not the process: a proxy spawned from a pooled worker
/// thread would be killed when that thread retires (tokio retires idle blocking threads after
/// 10 s, which cut every long-lived connection at about 10 s).
fn spawn_from_launcher(cmd: Command) -> std::io::Result<Child> {
    use std::sync::mpsc;
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static LAUNCHER: std::sync::OnceLock<Mutex<mpsc::Sender<Job>>> = std::sync::OnceLock::new();
    let launcher = LAUNCHER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("proxy-launcher".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("launcher thread");
        Mutex::new(tx)
    });
    let (reply, result) = mpsc::channel();
    launcher
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply))
        .map_err(|_| std::io::Error::other("launcher thread gone"))?;
    result.recv().map_err(|_| std::io::Error::other("launcher thread gone"))?
}

/// The kind's command line for `mode` with this machine's binary, in the prefix's environment;
/// `None` when the kind has none for that mode (Traefik has no validator).
fn proxy_command(spec: &ProxySpec, rendered: &Rendered, prefix: &Path, mode: Mode) -> Option<Command> {
    let args = spec.kind.args(mode, rendered, prefix)?;
    let mut cmd = Command::new(&spec.binary);
    envs(&mut cmd, prefix);
    cmd.args(args);
    Some(cmd)
}

/// Keeps every proxy's state inside its prefix (Caddy's storage and autosave under HOME/XDG).
/// The owner tag lets a later run find and kill workers that outlive a SIGKILLed suite.
fn envs(cmd: &mut Command, prefix: &Path) {
    cmd.env("HOME", prefix).env("XDG_DATA_HOME", prefix.join("data")).env("XDG_CONFIG_HOME", prefix.join("config"));
    cmd.env(crate::leftovers::OWNER_ENV, crate::leftovers::owner_tag());
}

/// Waits until a request through the proxy reaches the backend (`X-Mock-Instance` in the
/// answer). A proxy that exits, or answers only for itself, is not ready.
fn wait_ready(instance: &mut NativeInstance, bound: Duration) -> Result<(), String> {
    let deadline = Instant::now() + bound;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        if let Some(child) = instance.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("the process exited with {status}"));
            }
        }
        let answer = match &instance.tls {
            // A config with TLS is probed there: its plain listener may only redirect to it.
            Some(tls) => probe_tls(tls, &instance.host),
            None => probe(instance.addr, &instance.host),
        };
        match answer {
            Ok(head) if head.to_ascii_lowercase().contains("\nx-mock-instance:") => {
                // A proxy that lost its port to another exits at once; make sure the answer
                // came from a process that is still ours.
                std::thread::sleep(Duration::from_millis(300));
                if let Some(Ok(Some(status))) = instance.child.as_mut().map(|c| c.try_wait()) {
                    return Err(format!("the process exited with {status}"));
                }
                return Ok(());
            }
            Ok(head) => last = format!("answered without reaching the backend: {}", head.lines().next().unwrap_or("")),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("no request reached the backend within {}s; last: {last}", bound.as_secs()))
}

/// One plain HTTP/1.1 request; returns the response head.
pub(super) fn probe(addr: SocketAddr, host: &str) -> Result<String, String> {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok();
    request_head(&mut stream, host).map_err(|e| e.to_string())
}

/// Sends the readiness request on `stream` and reads the response head.
fn request_head(stream: &mut (impl std::io::Read + std::io::Write), host: &str) -> Result<String, std::io::Error> {
    write!(stream, "GET /api/mock/request HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk)? {
            0 => break,
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
    if buf.is_empty() {
        return Err(std::io::Error::other("connection closed without an answer"));
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// One HTTP/1.1 request over TLS, as a browser sends it (SNI and Host the site's name, the
/// run's authority trusted alone); returns the response head.
pub(super) fn probe_tls(tls: &TlsEndpoint, host: &str) -> Result<String, String> {
    let config = Trust { ca_pem: tls.files.ca_pem.clone() }.client_config(&[b"http/1.1"])?;
    let name = rustls_pki_types::ServerName::try_from(host.to_string()).map_err(|e| format!("{host} is not a server name: {e}"))?;
    let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let tcp = std::net::TcpStream::connect_timeout(&tls.addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(2))).ok();
    tcp.set_write_timeout(Some(Duration::from_secs(2))).ok();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    request_head(&mut stream, host).map_err(|e| format!("TLS: {e}"))
}

/// Last lines of every `*.log` in the prefix's `logs/`.
pub(super) fn log_tail(prefix: &Path) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(prefix.join("logs")) else { return out };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if lines.is_empty() {
            continue;
        }
        out.push_str(&format!("== {} ==\n", path.file_name().unwrap_or_default().to_string_lossy()));
        for l in &lines[lines.len().saturating_sub(15)..] {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}
