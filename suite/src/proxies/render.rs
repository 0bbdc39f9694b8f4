//! Rendering: a config as the user wrote it becomes a runnable copy in the run's prefix. The
//! listener moves to a free loopback port, every backend address (`127.0.0.1:3000`,
//! `localhost:4242`, ...) to a mock instance, and the outer context its distribution ships is
//! filled in around it. Every rewrite is recorded so the report can say what changed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use regex::{Captures, Regex};

use super::catalogue::Kind;
use super::config::ConfigFile;

/// Ports the guides and users give their backend: OpenChamber's 3000 (and 3001.. for extra
/// instances) and DorkOS's 4242.
fn is_backend_port(port: u16) -> bool {
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
}

/// The ports a rendering may use.
#[derive(Debug, Clone)]
pub struct Ports {
    pub listen: SocketAddr,
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
    let mut r = Rewriter { rewrites: Vec::new(), upstreams: BTreeMap::new(), ports: ports.clone() };
    let default_host = config.host.clone().unwrap_or_else(|| "proxy-suite.test".to_string());
    let (main, host, admin_port) = match config.kind {
        Kind::Nginx => render_nginx(config, &text, prefix, &mut r, context_root, default_host, distribution)?,
        Kind::Npm => render_npm(config, &text, prefix, &mut r, context_root, default_host)?,
        Kind::Caddy => render_caddy(&text, prefix, &mut r, default_host)?,
        Kind::Haproxy => render_haproxy(&text, prefix, &mut r, default_host)?,
        Kind::Apache => render_apache(&text, prefix, &mut r, context_root, default_host)?,
        Kind::Traefik => render_traefik(config, &text, prefix, &mut r, default_host)?,
        Kind::Envoy => render_envoy(&text, prefix, &mut r, default_host)?,
    };
    Ok(Rendered { main, rewrites: r.rewrites, host, admin_port })
}

/// What a kind's renderer returns: the main file, the public host, Envoy's admin port.
type Output = Result<(PathBuf, String, Option<u16>), String>;

struct Rewriter {
    rewrites: Vec<String>,
    /// Backend port as written -> mock address, in order of first appearance.
    upstreams: BTreeMap<u16, SocketAddr>,
    ports: Ports,
}

impl Rewriter {
    fn note(&mut self, what: String) {
        if !self.rewrites.contains(&what) {
            self.rewrites.push(what);
        }
    }

    /// The mock that stands for a backend port of the config: distinct ports map to distinct
    /// mock instances, in order of first appearance.
    fn backend_for(&mut self, port: u16) -> SocketAddr {
        if let Some(addr) = self.upstreams.get(&port) {
            return *addr;
        }
        let index = self.upstreams.len() % self.ports.backends.len().max(1);
        let addr = self.ports.backends.get(index).copied().unwrap_or(self.ports.listen);
        self.upstreams.insert(port, addr);
        addr
    }

    /// Rewrites `127.0.0.1:3000`, `localhost:4242`, `[::1]:3001` to mock addresses.
    fn upstreams(&mut self, text: &str) -> String {
        let re = Regex::new(r"\b(127\.0\.0\.1|localhost|\[::1\]):(\d{2,5})\b").expect("static regex");
        re.replace_all(text, |c: &Captures| {
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

    fn listen(&self) -> SocketAddr {
        self.ports.listen
    }

}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn read_context(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("missing context file {}: {e}", path.display()))
}

/// Fills `{{ name }}` placeholders (and `{% if %}` blocks) of a context file.
fn fill(template: &str, vars: &minijinja::Value) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.set_keep_trailing_newline(true);
    env.render_str(template, vars).map_err(|e| format!("context template: {e}"))
}

/// nginx: the user's site file goes inside the distribution's `nginx.conf`.
fn render_nginx(config: &ConfigFile, text: &str, prefix: &Path, r: &mut Rewriter, root: &Path, host: String, distribution: Option<&str>) -> Output {
    let site = nginx_site(text, r);
    let host = config.host.clone().or_else(|| nginx_server_name(&site)).unwrap_or(host);
    let site_path = prefix.join("site.conf");
    write(&site_path, &site)?;
    let context = distribution.map(String::from).or_else(|| config.context.clone()).unwrap_or_else(|| "debian".into());
    let main = nginx_context(root, "nginx", &context, prefix, &site_path, r)?;
    Ok((main, host, None))
}

/// Rewrites listeners and backends of an nginx server-level text.
fn nginx_site(text: &str, r: &mut Rewriter) -> String {
    let listen_re = Regex::new(r"(?m)^(\s*)listen\s+([^;]+);").expect("static regex");
    let listen = r.listen();
    let mut notes = Vec::new();
    let text = listen_re
        .replace_all(text, |c: &Captures| {
            let args = &c[2];
            if args.trim_start().starts_with('[') {
                notes.push(format!("listen {args} -> removed (IPv6; the suite listens on loopback)"));
                return format!("{}# [proxy-suite] listen {args}; (IPv6 listener removed)", &c[1]);
            }
            let keep: Vec<&str> = args.split_whitespace().skip(1).filter(|a| *a == "default_server").collect();
            notes.push(format!("listen {args} -> {listen}"));
            format!("{}listen {listen}{}{};", &c[1], if keep.is_empty() { "" } else { " " }, keep.join(" "))
        })
        .into_owned();
    for n in notes {
        r.note(n);
    }
    // TLS is not covered: certificate lines of a copied HTTPS example cannot load here.
    let ssl_re = Regex::new(r"(?m)^(\s*)(ssl_certificate(?:_key)?\s[^;]*;)").expect("static regex");
    let text = if ssl_re.is_match(&text) {
        r.note("ssl_certificate lines commented out (TLS front ends are not covered)".into());
        ssl_re.replace_all(&text, "$1# [proxy-suite] $2").into_owned()
    } else {
        text
    };
    r.upstreams(&text)
}

fn nginx_server_name(site: &str) -> Option<String> {
    let re = Regex::new(r"(?m)^\s*server_name\s+([^;\s]+)").expect("static regex");
    re.captures(site).map(|c| c[1].to_string()).filter(|n| n != "_" && n != "localhost")
}

/// Renders an nginx context file (`proxy-configs/<kind>/_context/<name>.conf`) around `site`,
/// copying `mime.types` beside it.
fn nginx_context(root: &Path, kind: &str, name: &str, prefix: &Path, site: &Path, r: &mut Rewriter) -> Result<PathBuf, String> {
    let dir = root.join(kind).join("_context");
    let mime = dir.join("mime.types");
    let mime = if mime.exists() { mime } else { root.join("nginx/_context/mime.types") };
    std::fs::copy(&mime, prefix.join("mime.types")).map_err(|e| format!("cannot copy {}: {e}", mime.display()))?;
    let template = read_context(&dir.join(format!("{name}.conf")))?;
    let vars = minijinja::context! { prefix => prefix.display().to_string(), site => site.display().to_string() };
    let main = prefix.join("nginx.conf");
    write(&main, &fill(&template, &vars)?)?;
    r.note(format!("wrapped in context {kind}/_context/{name}.conf"));
    Ok(main)
}

/// NPM: the Advanced-tab text goes into NPM's generated proxy-host block, inside NPM's
/// global nginx.conf, exactly where NPM would put it.
fn render_npm(config: &ConfigFile, text: &str, prefix: &Path, r: &mut Rewriter, root: &Path, host: String) -> Output {
    let advanced = r.upstreams(&strip_header(text));
    let root_location = Regex::new(r"(?im)^(?:.*;)?\s*?location\s*?/\s*?\{").expect("static regex");
    let has_root = root_location.is_match(&advanced);
    let dir = root.join("npm/_context");
    let backend = r.backend_for(3000);
    let listen = r.listen();
    let vars = minijinja::context! {
        prefix => prefix.display().to_string(),
        listen_port => listen.port(),
        listen => listen.to_string(),
        forward_host => backend.ip().to_string(),
        forward_port => backend.port(),
        websockets => config.websockets,
        advanced_config => advanced,
        advanced_has_root_location => has_root,
        site_includes_dir => prefix.display().to_string(),
        server_name => host.clone(),
    };
    r.note(format!("NPM proxy host: forward to mock {backend}, listen {listen}, Websockets Support {}", if config.websockets { "on" } else { "off" }));
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("missing {}: {e}", dir.display()))?;
    let mut site = None;
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if name == "mime.types" || name.ends_with(".md") {
            std::fs::copy(&path, prefix.join(&name)).map_err(|e| e.to_string())?;
            continue;
        }
        let out_name = name.strip_suffix(".j2").unwrap_or(&name).to_string();
        let filled = fill(&read_context(&path)?, &vars)?;
        write(&prefix.join(&out_name), &filled)?;
        if name.ends_with(".j2") {
            site = Some(prefix.join(out_name));
        }
    }
    if !prefix.join("mime.types").exists() {
        std::fs::copy(root.join("nginx/_context/mime.types"), prefix.join("mime.types")).map_err(|e| e.to_string())?;
    }
    let site = site.ok_or("npm/_context has no proxy-host template (*.j2)")?;
    // NPM's nginx.conf includes the proxy host; re-render it knowing the site path.
    let main_template = read_context(&dir.join("nginx.conf"))?;
    let vars = minijinja::context! { site => site.display().to_string(), ..vars };
    let main = prefix.join("nginx.conf");
    write(&main, &fill(&main_template, &vars)?)?;
    Ok((main, host, None))
}

/// Drops the leading `#` header lines (NPM's Advanced tab would not contain them).
fn strip_header(text: &str) -> String {
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

/// Caddy: every site address becomes `http://<host>:<port>` bound to loopback; the global
/// options turn off the admin API and automatic HTTPS (no certificates here).
fn render_caddy(text: &str, prefix: &Path, r: &mut Rewriter, default_host: String) -> Output {
    let text = r.upstreams(text);
    let listen = r.listen();
    let mut out = String::new();
    let mut depth: i32 = 0;
    let mut saw_global = false;
    let mut host: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        let code = trimmed.split(" #").next().unwrap_or("").trim();
        if depth == 0 && !code.is_empty() && !code.starts_with('#') {
            if code == "{" {
                saw_global = true;
                out.push_str("{\n\tadmin off\n\tauto_https off\n");
                depth += 1;
                continue;
            }
            let Some(addresses) = code.strip_suffix('{') else {
                return Err(format!("Caddyfile line `{code}`: put the site's directives in a block (`address {{ ... }}`)"));
            };
            let mut new = Vec::new();
            for addr in addresses.split([',', ' ']).filter(|a| !a.is_empty()) {
                let bare = addr.trim_start_matches("https://").trim_start_matches("http://");
                let name = bare.rsplit_once(':').map(|(h, _)| h).unwrap_or(bare).to_string();
                if host.is_none() && !name.is_empty() {
                    host = Some(name.clone());
                }
                new.push(format!("http://{name}:{}", listen.port()));
                r.note(format!("site {addr} -> http://{name}:{} bound to {}", listen.port(), listen.ip()));
            }
            out.push_str(&format!("{} {{\n\tbind {}\n", new.join(", "), listen.ip()));
            depth += 1;
            continue;
        }
        depth += code.matches('{').count() as i32 - code.matches('}').count() as i32;
        out.push_str(line);
        out.push('\n');
    }
    if !saw_global {
        out = format!("{{\n\tadmin off\n\tauto_https off\n}}\n\n{out}");
    }
    r.note("global options: admin off, auto_https off".into());
    let main = prefix.join("Caddyfile");
    write(&main, &out)?;
    Ok((main, host.unwrap_or(default_host), None))
}

/// HAProxy: `bind` lines move to loopback; directives that need system paths or privileges
/// (chroot, stats socket, user, group, daemon, syslog) are commented out.
fn render_haproxy(text: &str, prefix: &Path, r: &mut Rewriter, host: String) -> Output {
    let text = r.upstreams(text);
    let listen = r.listen();
    let mut out = String::new();
    let mut bound_in_section = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let word = trimmed.split_whitespace().next().unwrap_or("");
        let indent = &line[..line.len() - trimmed.len()];
        if !line.starts_with(char::is_whitespace) && !word.is_empty() {
            bound_in_section = false;
        }
        let system = matches!(word, "chroot" | "user" | "group" | "daemon")
            || trimmed.starts_with("stats socket")
            || (word == "log" && !trimmed.starts_with("log global"))
            || (word == "errorfile" && trimmed.split_whitespace().nth(2).is_some_and(|f| !Path::new(f).exists()));
        if system {
            r.note(format!("`{trimmed}` commented out (system path or privilege)"));
            out.push_str(&format!("{indent}# [proxy-suite] {trimmed}\n"));
        } else if word == "bind" {
            if bound_in_section {
                r.note(format!("`{trimmed}` commented out (one listener per run)"));
                out.push_str(&format!("{indent}# [proxy-suite] {trimmed}\n"));
            } else {
                r.note(format!("`{trimmed}` -> bind {listen}"));
                out.push_str(&format!("{indent}bind {listen}\n"));
                bound_in_section = true;
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    let main = prefix.join("haproxy.cfg");
    write(&main, &out)?;
    Ok((main, host, None))
}

/// Apache: the site file goes inside Debian's apache2.conf; `<VirtualHost>` moves to the
/// loopback listener.
fn render_apache(text: &str, prefix: &Path, r: &mut Rewriter, root: &Path, host: String) -> Output {
    let text = r.upstreams(text);
    let listen = r.listen();
    let vhost = Regex::new(r"(?i)<VirtualHost\s+[^>]*>").expect("static regex");
    let mut notes = Vec::new();
    let text = vhost.replace_all(&text, |c: &Captures| {
        notes.push(format!("{} -> <VirtualHost {listen}>", &c[0]));
        format!("<VirtualHost {listen}>")
    });
    for n in notes {
        r.note(n);
    }
    let listen_re = Regex::new(r"(?im)^(\s*)(Listen\s+.*)$").expect("static regex");
    let text = listen_re.replace_all(&text, "$1# [proxy-suite] $2").into_owned();
    let server_name = Regex::new(r"(?im)^\s*ServerName\s+(\S+)").expect("static regex");
    let host = server_name.captures(&text).map(|c| c[1].to_string()).unwrap_or(host);
    let site = prefix.join("site.conf");
    write(&site, &text)?;
    let template = read_context(&root.join("apache/_context/apache2.conf"))?;
    let vars = minijinja::context! {
        prefix => prefix.display().to_string(),
        listen => listen.to_string(),
        site => site.display().to_string(),
    };
    let main = prefix.join("apache2.conf");
    write(&main, &fill(&template, &vars)?)?;
    r.note("wrapped in context apache/_context/apache2.conf".into());
    Ok((main, host, None))
}

/// Traefik: the static file's entry point moves to loopback and its file provider points at
/// the rendered dynamic file.
fn render_traefik(config: &ConfigFile, text: &str, prefix: &Path, r: &mut Rewriter, host: String) -> Output {
    let listen = r.listen();
    let address = Regex::new(r#"(?m)^(\s*address:\s*)["']?[^"'\n]*:(\d+)["']?\s*$"#).expect("static regex");
    let mut notes = Vec::new();
    let text = address
        .replace_all(text, |c: &Captures| {
            notes.push(format!("entry point :{} -> {listen}", &c[2]));
            format!("{}\"{listen}\"", &c[1])
        })
        .into_owned();
    for n in notes {
        r.note(n);
    }
    let mut text = text;
    let mut host = host;
    for companion in config.companions() {
        let name = companion.file_name().and_then(|n| n.to_str()).unwrap_or("dynamic.yml").to_string();
        let dynamic = r.upstreams(&std::fs::read_to_string(&companion).map_err(|e| e.to_string())?);
        let rule_host = Regex::new(r"Host\(`([^`]+)`\)").expect("static regex");
        if let Some(c) = rule_host.captures(&dynamic) {
            host = c[1].to_string();
        }
        let out = prefix.join(&name);
        write(&out, &dynamic)?;
        let filename = Regex::new(&format!(r"(?m)(filename:\s*)[\x22']?[^\n\x22']*{}[\x22']?", regex::escape(&name))).expect("escaped regex");
        text = filename.replace_all(&text, |c: &Captures| format!("{}\"{}\"", &c[1], out.display())).into_owned();
        r.note(format!("file provider -> rendered {name}"));
    }
    let main = prefix.join("traefik.yml");
    write(&main, &text)?;
    Ok((main, host, None))
}

/// Envoy: listener ports move to loopback, backend ports to mocks, the admin listener (if
/// any) to a spare port.
fn render_envoy(text: &str, prefix: &Path, r: &mut Rewriter, host: String) -> Output {
    let listen = r.listen();
    let spare = r.ports.spare;
    let port_re = Regex::new(r"^(\s*(?:-\s*)?port_value:\s*)(\d+)(.*)$").expect("static regex");
    let addr_re = Regex::new(r#"^(\s*(?:-\s*)?address:\s*)["']?(0\.0\.0\.0|::|localhost|127\.0\.0\.1|"::")["']?\s*$"#).expect("static regex");
    let mut out = String::new();
    let mut in_admin = false;
    let mut admin_port = None;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) && !line.trim().is_empty() && !line.starts_with('#') {
            in_admin = line.starts_with("admin:");
        }
        if let Some(c) = port_re.captures(line) {
            let port: u16 = c[2].parse().unwrap_or(0);
            let new = if in_admin {
                admin_port = Some(spare);
                r.note(format!("admin port {port} -> {spare}"));
                spare
            } else if is_backend_port(port) {
                let addr = r.backend_for(port);
                r.note(format!("backend port {port} -> mock {addr}"));
                addr.port()
            } else {
                r.note(format!("listener port {port} -> {listen}"));
                listen.port()
            };
            out.push_str(&format!("{}{new}{}\n", &c[1], &c[3]));
        } else if let Some(c) = addr_re.captures(line) {
            out.push_str(&format!("{}127.0.0.1\n", &c[1]));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    let main = prefix.join("envoy.yaml");
    write(&main, &out)?;
    Ok((main, host, admin_port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewriter() -> Rewriter {
        Rewriter {
            rewrites: Vec::new(),
            upstreams: BTreeMap::new(),
            ports: Ports { listen: "127.0.0.1:4000".parse().unwrap(), backends: vec!["127.0.0.1:5001".parse().unwrap(), "127.0.0.1:5002".parse().unwrap()], spare: 4001 },
        }
    }

    #[test]
    fn backends_map_to_distinct_mocks_in_order() {
        let mut r = rewriter();
        let out = r.upstreams("server 127.0.0.1:3000;\nserver localhost:3001;\nproxy_pass http://127.0.0.1:3000;\nlisten 127.0.0.1:8080;");
        assert_eq!(out, "server 127.0.0.1:5001;\nserver 127.0.0.1:5002;\nproxy_pass http://127.0.0.1:5001;\nlisten 127.0.0.1:8080;");
    }

    #[test]
    fn nginx_listeners_move_to_loopback_and_ipv6_is_dropped() {
        let mut r = rewriter();
        let out = nginx_site("server {\n  listen 80 default_server;\n  listen [::]:80;\n  location / { proxy_pass http://localhost:4242; }\n}\n", &mut r);
        assert!(out.contains("listen 127.0.0.1:4000 default_server;"), "{out}");
        assert!(out.contains("# [proxy-suite] listen [::]:80;"), "{out}");
        assert!(out.contains("proxy_pass http://127.0.0.1:5001;"), "{out}");
    }

    #[test]
    fn npm_root_location_regex_matches_as_npm_does() {
        let re = Regex::new(r"(?im)^(?:.*;)?\s*?location\s*?/\s*?\{").unwrap();
        assert!(re.is_match("gzip off;\nlocation / { proxy_pass x; }"));
        assert!(!re.is_match("location = /api/event { proxy_pass x; }"));
        assert!(!re.is_match("location /api { proxy_pass x; }"));
    }
}
