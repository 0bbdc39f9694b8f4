//! Rendering: a config as the user wrote it becomes a runnable copy in the run's prefix. The
//! listener moves to a free loopback port, every backend address (`127.0.0.1:3000`,
//! `localhost:4242`, ...) to a mock instance, and the outer context its distribution ships is
//! filled in around it. Every rewrite is recorded so the report can say what changed.
//!
//! This module owns what every kind shares (the [`Rewriter`] of listeners and backend
//! addresses, context templates); each kind's own rendering is in its module of
//! [`super::kinds`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use regex::{Captures, Regex};

use super::config::ConfigFile;
use crate::tls::{TlsFiles, Transport};
use super::kinds::RenderInput;

/// Ports the guides and users give their backend: OpenChamber's 3000 (and 3001.. for extra
/// instances) and DorkOS's 4242.
pub fn is_backend_port(port: u16) -> bool {
    (3000..=3009).contains(&port) || port == 4242
}

/// What rendering produced.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The file the proxy is started with.
    pub main: PathBuf,
    /// Human-readable list of what was rewritten.
    pub rewrites: Vec<String>,
    /// The Host header a browser would send to this site.
    pub host: String,
    /// Envoy's admin listener, when the config has one (moved to a free port).
    pub admin_port: Option<u16>,
    /// The rendered files that came from the user's config (not the contexts around it).
    pub user_files: Vec<PathBuf>,
    /// Whether the config has a plain-HTTP listener (at `Ports::listen`).
    pub plain: bool,
    /// The TLS listener, when the config has one (at `Ports::tls_listen`).
    pub tls: Option<TlsEndpoint>,
}

/// A TLS listener of a rendered config.
#[derive(Debug, Clone)]
pub struct TlsEndpoint {
    pub addr: SocketAddr,
    /// The run's certificate files, in the prefix.
    pub files: TlsFiles,
    /// Whether the listener offers HTTP/2 (ALPN `h2`) as configured.
    pub h2: bool,
}

impl Rendered {
    /// The transports the rendered config offers a browser, in order.
    pub fn transports(&self) -> Vec<Transport> {
        transports(self.plain, self.tls.as_ref())
    }

    /// Where a client of `transport` connects, when the config offers it.
    pub fn addr_for(&self, transport: Transport, plain: SocketAddr) -> Option<SocketAddr> {
        self.transports().contains(&transport).then(|| if transport.is_tls() { self.tls.as_ref().map(|t| t.addr) } else { Some(plain) }).flatten()
    }
}

/// The transports of a plain listener (when `plain`) and a TLS one, in order.
pub fn transports(plain: bool, tls: Option<&TlsEndpoint>) -> Vec<Transport> {
    let mut out = Vec::new();
    if plain {
        out.push(Transport::H1);
    }
    if let Some(tls) = tls {
        out.push(Transport::H1Tls);
        if tls.h2 {
            out.push(Transport::H2);
        }
    }
    out
}

/// The ports a rendering may use.
#[derive(Debug, Clone)]
pub struct Ports {
    pub listen: SocketAddr,
    /// Where a TLS listener of the config goes (a config with both keeps both).
    pub tls_listen: SocketAddr,
    pub backends: Vec<SocketAddr>,
    /// A spare free port for admin listeners.
    pub spare: u16,
}

/// Renders `config` into `prefix`; `context_root` is `proxy-configs/`. `distribution` names
/// the outer context the proxy's distribution ships (`debian` for Debian's nginx, `stock` for
/// nginx's own build); it wins over the config's `# context:` line, since the same site file
/// runs inside whatever `nginx.conf` the installed nginx comes with.
pub fn render(config: &ConfigFile, prefix: &Path, ports: &Ports, context_root: &Path, distribution: Option<&str>) -> Result<Rendered, String> {
    std::fs::create_dir_all(prefix.join("logs")).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(&config.path)
        .map_err(|e| format!("cannot read {}: {e}", config.path.display()))?;
    let mut r = Rewriter::new(ports.clone());
    r.tls_dir = prefix.join("tls");
    r.site_names = config.host.iter().cloned().collect();
    let default_host = config.host.clone().unwrap_or_else(|| "proxy-suite.test".to_string());
    let input = RenderInput { config, text: &text, prefix, context_root, default_host, distribution };
    let site = config.kind.render(&input, &mut r)?;
    let tls = match r.tls.take() {
        Some(files) => Some(TlsEndpoint { addr: ports.tls_listen, files, h2: r.h2 }),
        None => None,
    };
    Ok(Rendered { main: site.main, rewrites: r.rewrites, host: site.host, admin_port: site.admin_port, user_files: site.user_files, plain: !r.no_plain, tls })
}

/// The backend addresses a config names (`127.0.0.1:3000`, `localhost:4242`, `[::1]:3001`),
/// as the [`Rewriter`] finds them: their ports, in order of first appearance.
pub fn backend_ports(text: &str) -> Vec<u16> {
    let mut ports = Vec::new();
    for c in backend_address().captures_iter(text) {
        let port: u16 = c[2].parse().unwrap_or(0);
        if is_backend_port(port) && !ports.contains(&port) {
            ports.push(port);
        }
    }
    ports
}

fn backend_address() -> Regex {
    Regex::new(r"\b(127\.0\.0\.1|localhost|\[::1\]):(\d{2,5})\b").expect("static regex")
}

/// Rewrites listeners and backend addresses, and records each rewrite.
pub struct Rewriter {
    rewrites: Vec<String>,
    /// Backend port as written -> mock address, in order of first appearance.
    upstreams: BTreeMap<u16, SocketAddr>,
    ports: Ports,
    /// Where the run's certificate goes (`<prefix>/tls`).
    tls_dir: PathBuf,
    /// The run's certificate, once a TLS listener asked for it.
    tls: Option<TlsFiles>,
    /// Whether the TLS listener offers HTTP/2.
    h2: bool,
    /// Names the certificate covers besides the ones a kind finds (the config's `# host:`).
    site_names: Vec<String>,
    /// Set by a kind whose config has a TLS listener only.
    no_plain: bool,
}

impl Rewriter {
    pub fn new(ports: Ports) -> Rewriter {
        Rewriter { rewrites: Vec::new(), upstreams: BTreeMap::new(), ports, tls_dir: PathBuf::from("tls"), tls: None, h2: false, site_names: Vec::new(), no_plain: false }
    }

    pub fn note(&mut self, what: String) {
        if !self.rewrites.contains(&what) {
            self.rewrites.push(what);
        }
    }

    /// The mock that stands for a backend port of the config: distinct ports map to distinct
    /// mock instances, in order of first appearance.
    pub fn backend_for(&mut self, port: u16) -> SocketAddr {
        if let Some(addr) = self.upstreams.get(&port) {
            return *addr;
        }
        let index = self.upstreams.len() % self.ports.backends.len().max(1);
        let addr = self.ports.backends.get(index).copied().unwrap_or(self.ports.listen);
        self.upstreams.insert(port, addr);
        addr
    }

    /// Rewrites `127.0.0.1:3000`, `localhost:4242`, `[::1]:3001` to mock addresses.
    pub fn upstreams(&mut self, text: &str) -> String {
        backend_address().replace_all(text, |c: &Captures| {
            let port: u16 = c[2].parse().unwrap_or(0);
            if !is_backend_port(port) {
                return c[0].to_string();
            }
            let addr = self.backend_for(port);
            self.note(format!("backend {} -> mock {addr}", &c[0]));
            addr.to_string()
        })
        .into_owned()
    }

    /// The loopback address the proxy listens on.
    pub fn listen(&self) -> SocketAddr {
        self.ports.listen
    }

    /// The loopback address a TLS listener moves to, with the run's certificate for `names`
    /// (issued on the first call; the suite's test name is always covered).
    pub fn tls_listen(&mut self, names: &[String]) -> Result<(SocketAddr, TlsFiles), String> {
        if self.tls.is_none() {
            let all: Vec<String> = self.site_names.iter().chain(names).cloned().collect();
            self.tls = Some(crate::tls::issue(&all, &self.tls_dir)?);
        }
        let files = self.tls.clone().expect("issued above");
        Ok((self.ports.tls_listen, files))
    }

    /// The TLS listener offers HTTP/2 (ALPN `h2`).
    pub fn offer_h2(&mut self) {
        self.h2 = true;
    }

    /// The config has no plain-HTTP listener: only its TLS listener serves.
    pub fn tls_only(&mut self) {
        self.no_plain = true;
    }

    /// A spare free port (for admin listeners).
    pub fn spare(&self) -> u16 {
        self.ports.spare
    }
}

pub fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

pub fn read_context(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("missing context file {}: {e}", path.display()))
}

/// Fills `{{ name }}` placeholders (and `{% if %}` blocks) of a context file.
pub fn fill(template: &str, vars: &minijinja::Value) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.set_keep_trailing_newline(true);
    env.render_str(template, vars).map_err(|e| format!("context template: {e}"))
}

/// Drops the leading `#` header lines (text that goes somewhere a header cannot be, such as
/// NPM's Advanced tab).
pub fn strip_header(text: &str) -> String {
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.peek() {
        if l.trim().is_empty() || l.trim_start().starts_with('#') {
            lines.next();
        } else {
            break;
        }
    }
    lines.collect::<Vec<_>>().join("\n") + "\n"
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A rewriter with listener 127.0.0.1:4000 and mocks 127.0.0.1:5001, :5002 (for the
    /// kinds' unit tests too).
    pub fn rewriter() -> Rewriter {
        Rewriter::new(Ports { listen: "127.0.0.1:4000".parse().unwrap(), tls_listen: "127.0.0.1:4443".parse().unwrap(), backends: vec!["127.0.0.1:5001".parse().unwrap(), "127.0.0.1:5002".parse().unwrap()], spare: 4001 })
    }

    #[test]
    fn backends_map_to_distinct_mocks_in_order() {
        let mut r = rewriter();
        let out = r.upstreams("server 127.0.0.1:3000;\nserver localhost:3001;\nproxy_pass http://127.0.0.1:3000;\nlisten 127.0.0.1:8080;");
        assert_eq!(out, "server 127.0.0.1:5001;\nserver 127.0.0.1:5002;\nproxy_pass http://127.0.0.1:5001;\nlisten 127.0.0.1:8080;");
    }

    #[test]
    fn backend_ports_are_found_as_the_rewriter_finds_them() {
        assert_eq!(backend_ports("proxy_pass http://localhost:4242; # :8080\nserver 127.0.0.1:3000;\nlisten 127.0.0.1:80;"), vec![4242, 3000]);
    }
}
