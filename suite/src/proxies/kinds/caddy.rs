//! Caddy: a Caddyfile. Every site address becomes `http://<host>:<port>` bound to loopback; a
//! site Caddy would serve over HTTPS as deployed (a domain name without `http://`, or
//! `https://`) is also served at the run's TLS port with the run's certificate (`tls cert
//! key`) instead of ACME. The global options turn off the admin API and automatic HTTPS (the
//! certificate is the run's, and the plain listener keeps serving the site for the `h1` run
//! where Caddy would redirect it to HTTPS).

use std::ffi::OsString;
use std::path::Path;

use super::{capture, has_directive, os_args, user_code, ImageLayout, Layout, Placement, Mode, ProxyKind, RenderInput, Site};
use crate::proxies::render::{write, Rendered, Rewriter};

pub static KIND: Caddy = Caddy;

pub struct Caddy;

impl ProxyKind for Caddy {
    fn name(&self) -> &'static str {
        "caddy"
    }

    fn parse_version(&self, output: &str) -> Option<String> {
        capture(r"v?(\d+\.\d+\.\d+)", output)
    }

    fn render(&self, input: &RenderInput, r: &mut Rewriter) -> Result<Site, String> {
        let text = r.upstreams(input.text);
        let listen = r.listen();
        let mut out = String::new();
        let mut depth: i32 = 0;
        let mut saw_global = false;
        let mut host: Option<String> = None;
        // A site served over HTTPS too is written twice: Caddy refuses one block whose
        // addresses mix a plain and a TLS listener. `twin` is the TLS copy being collected.
        let mut twin: Option<String> = None;
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
                let mut tls_names = Vec::new();
                for addr in addresses.split([',', ' ']).filter(|a| !a.is_empty()) {
                    let bare = addr.trim_start_matches("https://").trim_start_matches("http://");
                    let name = bare.rsplit_once(':').map(|(h, _)| h).unwrap_or(bare).to_string();
                    if host.is_none() && !name.is_empty() {
                        host = Some(name.clone());
                    }
                    new.push(format!("http://{name}:{}", listen.port()));
                    r.note(format!("site {addr} -> http://{name}:{} bound to {}", listen.port(), listen.ip()));
                    if serves_https(addr, &name) {
                        tls_names.push(name);
                    }
                }
                let mut tls_line = String::new();
                if !tls_names.is_empty() {
                    let (tls_addr, files) = r.tls_listen(&tls_names)?;
                    r.offer_h2();
                    for name in &tls_names {
                        new.push(format!("https://{name}:{}", tls_addr.port()));
                        r.note(format!("site {name} (automatic HTTPS) -> https://{name}:{} with the run's certificate instead of ACME", tls_addr.port()));
                    }
                    tls_line = format!("\ttls {} {}\n", files.cert.display(), files.key.display());
                }
                let (plain, https): (Vec<String>, Vec<String>) = new.into_iter().partition(|a| a.starts_with("http://"));
                out.push_str(&format!("{} {{\n\tbind {}\n", plain.join(", "), listen.ip()));
                if !https.is_empty() {
                    twin = Some(format!("{} {{\n\tbind {}\n{tls_line}", https.join(", "), listen.ip()));
                }
                depth += 1;
                continue;
            }
            depth += code.matches('{').count() as i32 - code.matches('}').count() as i32;
            out.push_str(line);
            out.push('\n');
            if let Some(copy) = twin.as_mut() {
                copy.push_str(line);
                copy.push('\n');
                if depth == 0 {
                    out.push('\n');
                    out.push_str(&twin.take().unwrap_or_default());
                }
            }
        }
        if !saw_global {
            out = format!("{{\n\tadmin off\n\tauto_https off\n}}\n\n{out}");
        }
        r.note("global options: admin off, auto_https off".into());
        let main = input.prefix.join("Caddyfile");
        write(&main, &out)?;
        // The user's sites are in the one rendered file, with the global options the suite adds.
        Ok(Site { main: main.clone(), host: host.unwrap_or_else(|| input.default_host.clone()), admin_port: None, user_files: vec![main] })
    }

    fn missing_route(&self, rendered: &Rendered) -> Option<String> {
        // (Caddy's `tls` line of a served-over-HTTPS site is the suite's, not a route.)
        let code = user_code(rendered);
        if !code.lines().any(|l| l.trim_start().starts_with("bind ")) {
            return Some("no site block: the Caddyfile defines no address to serve (e.g. `:80 { reverse_proxy 127.0.0.1:3000 }`)".into());
        }
        (!has_directive(&code, "reverse_proxy", false))
            .then(|| "no `reverse_proxy`: no site sends requests to the backend".to_string())
    }

    fn args(&self, mode: Mode, rendered: &Rendered, _prefix: &Path) -> Option<Vec<OsString>> {
        let verb = if mode == Mode::Validate { "validate" } else { "run" };
        let mut args = os_args([verb, "--adapter", "caddyfile", "--config"]);
        args.push(rendered.main.clone().into_os_string());
        Some(args)
    }

    fn images(&self) -> Vec<ImageLayout> {
        // Caddy logs to stderr; its data and config state live in /data and /config. Debian's
        // caddy package reads the same /etc/caddy/Caddyfile.
        vec![ImageLayout { image: "caddy", layout: Layout::Official, config: "/etc/caddy/Caddyfile", placement: Placement::Main, marker: "/etc/caddy", logs: "/dev/stderr", binary: "/usr/bin/caddy" }]
    }

    fn fix(&self, check_id: &str) -> Option<&'static str> {
        Some(match check_id {
            "ws.upgrade" | "ws.terminal" => "reverse_proxy passes WebSocket upgrades by itself: make sure /api/event/ws, /api/global/event/ws and /api/terminal/ws reach a reverse_proxy (no handle, respond or matcher in front that keeps them away)",
            "ws.idle" | "sse.idle" | "http.slow" => "reverse_proxy 127.0.0.1:3000 { flush_interval -1; transport http { read_timeout 3600s; write_timeout 3600s } } (one directive per line)",
            "sse.stream" => "reverse_proxy 127.0.0.1:3000 { flush_interval -1 } and no encode on the SSE routes",
            "sse.headers" => "No encode and no header directive that changes Content-Type or Cache-Control on the SSE routes",
            "body.large" => "Remove a request_body { max_size ... } below 50MB (Caddy sets no body limit by default)",
            "body.streaming" => "Remove request_buffers from reverse_proxy (Caddy streams request bodies by default)",
            "compress.single" => "Remove encode where the backend already compresses (one compression layer)",
            "compress.sse" => "Remove encode (its default matcher includes text/*, so SSE), or give it a match { header Content-Type ... } block without text/event-stream",
            "headers.forwarded" => "Caddy passes Host and sets X-Forwarded-For/-Proto/-Host; add header_up X-Real-IP {remote_host} inside reverse_proxy",
            "auth.origin" => "Keep Caddy's Host and X-Forwarded-Proto (no header_up Host {upstream_hostport}, no header_up X-Forwarded-Proto other than {scheme})",
            "lb.sticky" => "reverse_proxy 127.0.0.1:3000 127.0.0.1:3001 { lb_policy ip_hash }",
            "h2.headers" => "Remove header directives that set Connection, Keep-Alive, Proxy-Connection, Transfer-Encoding, Upgrade or TE on responses (header_down -Upgrade etc. in reverse_proxy for a backend that sends them)",
            "h2.websocket" => "Caddy does not advertise extended CONNECT here: browsers open HTTP/1.1 upgrades, which reverse_proxy passes",
            "tls.redirect" => "Keep Caddy's automatic HTTP-to-HTTPS redirect (308); replace redir https://{host}{uri} permanent (301) with redir https://{host}{uri} 308",
            "browser.reconnect" => "No header_up -Last-Event-ID (or header_up Last-Event-ID ...) in reverse_proxy: Caddy passes the browser's Last-Event-ID to the backend, which resumes after it",
            _ => return None,
        })
    }

    fn smoke_config(&self) -> &'static str {
        "caddy/first-try.Caddyfile"
    }
}

/// Whether Caddy serves a site address over HTTPS as deployed: `https://...`, or a host name
/// (not an IP, not `localhost`, not a bare `:port`) without `http://` and without port 80.
fn serves_https(addr: &str, name: &str) -> bool {
    if addr.starts_with("https://") {
        return true;
    }
    if addr.starts_with("http://") || name.is_empty() || name == "localhost" || name.parse::<std::net::IpAddr>().is_ok() {
        return false;
    }
    let port = addr.rsplit_once(':').map(|(_, p)| p);
    name.contains('.') && port.is_none_or(|p| p == "443")
}

#[cfg(test)]
mod tests {
    use super::super::tests::missing;

    #[test]
    fn a_caddyfile_without_a_site_or_reverse_proxy_serves_nothing() {
        assert!(missing("caddy", &[("Caddyfile", "")]).unwrap().contains("no site block"));
        assert!(missing("caddy", &[("Caddyfile", "# nothing yet\n{\n\tdebug\n}\n")]).unwrap().contains("no site block"));
        assert!(missing("caddy", &[("Caddyfile", ":80 {\n\tfile_server\n}\n")]).unwrap().contains("reverse_proxy"));
        assert_eq!(missing("caddy", &[("Caddyfile", ":80 {\n\treverse_proxy 127.0.0.1:3000\n}\n")]), None);
    }
}
