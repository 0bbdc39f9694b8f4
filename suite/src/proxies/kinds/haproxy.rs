//! HAProxy: a whole `haproxy.cfg`. `bind` lines move to loopback; directives that need system
//! paths or privileges (chroot, stats socket, user, group, daemon, syslog) are commented out.

use std::ffi::OsString;
use std::path::Path;

use super::{capture, has_directive, os_args, user_code, ImageLayout, Layout, Placement, Mode, ProxyKind, RenderInput, Site};
use crate::proxies::render::{write, Rendered, Rewriter};

pub static KIND: Haproxy = Haproxy;

pub struct Haproxy;

impl ProxyKind for Haproxy {
    fn name(&self) -> &'static str {
        "haproxy"
    }

    fn parse_version(&self, output: &str) -> Option<String> {
        capture(r"(?i)HA-?Proxy version (\S+)", output)
    }

    fn render(&self, input: &RenderInput, r: &mut Rewriter) -> Result<Site, String> {
        let text = r.upstreams(input.text);
        let listen = r.listen();
        let mut out = String::new();
        let mut bound_in_section = false;
        let mut tls_in_section = false;
        let (mut plain, mut tls) = (false, false);
        for line in text.lines() {
            let trimmed = line.trim_start();
            let word = trimmed.split_whitespace().next().unwrap_or("");
            let indent = &line[..line.len() - trimmed.len()];
            if !line.starts_with(char::is_whitespace) && !word.is_empty() {
                bound_in_section = false;
                tls_in_section = false;
            }
            let system = matches!(word, "chroot" | "user" | "group" | "daemon")
                || trimmed.starts_with("stats socket")
                || (word == "log" && !trimmed.starts_with("log global"))
                || (word == "errorfile" && trimmed.split_whitespace().nth(2).is_some_and(|f| !Path::new(f).exists()));
            if system {
                r.note(format!("`{trimmed}` commented out (system path or privilege)"));
                out.push_str(&format!("{indent}# [proxy-suite] {trimmed}\n"));
            } else if word == "bind" && trimmed.split_whitespace().any(|w| w == "ssl") {
                // `bind :443 ssl crt <pem> [alpn h2,http/1.1] ...`: to the run's TLS port, with
                // the run's certificate and key in one PEM; every other option as written.
                if tls_in_section {
                    r.note(format!("`{trimmed}` commented out (one TLS listener per run)"));
                    out.push_str(&format!("{indent}# [proxy-suite] {trimmed}\n"));
                    continue;
                }
                let (addr, files) = r.tls_listen(&[])?;
                let words: Vec<&str> = trimmed.split_whitespace().skip(2).collect();
                let mut options = Vec::new();
                let mut i = 0;
                while i < words.len() {
                    if matches!(words[i], "crt" | "crt-list" | "ca-file" | "crl-file") {
                        i += 2;
                        continue;
                    }
                    if words[i] == "alpn" && words.get(i + 1).is_some_and(|a| a.split(',').any(|p| p == "h2")) {
                        r.offer_h2();
                    }
                    options.push(words[i]);
                    i += 1;
                }
                let ssl = options.iter().position(|w| *w == "ssl").map_or(0, |p| p + 1);
                let crt = format!("crt {}", files.combined.display());
                options.insert(ssl, &crt);
                r.note(format!("`{trimmed}` -> bind {addr} {}", options.join(" ").replace(&crt, "crt <the run's certificate and key>")));
                out.push_str(&format!("{indent}bind {addr} {}\n", options.join(" ")));
                tls_in_section = true;
                tls = true;
            } else if word == "bind" {
                plain = true;
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
        if tls && !plain {
            r.tls_only();
        }
        let main = input.prefix.join("haproxy.cfg");
        write(&main, &out)?;
        Ok(Site { main: main.clone(), host: input.default_host.clone(), admin_port: None, user_files: vec![main] })
    }

    fn missing_route(&self, rendered: &Rendered) -> Option<String> {
        let code = user_code(rendered);
        if !has_directive(&code, "frontend", false) && !has_directive(&code, "listen", false) {
            return Some("no `frontend` or `listen` section: nothing accepts requests".into());
        }
        (!has_directive(&code, "server", false))
            .then(|| "no `server` line: no backend sends requests to the backend address".to_string())
    }

    fn args(&self, mode: Mode, rendered: &Rendered, _prefix: &Path) -> Option<Vec<OsString>> {
        let mut args = os_args([if mode == Mode::Validate { "-c" } else { "-db" }, "-f"]);
        args.push(rendered.main.clone().into_os_string());
        Some(args)
    }

    fn images(&self) -> Vec<ImageLayout> {
        vec![
            // The official image ships no syslog: logs go to stdout (`log stdout`).
            ImageLayout { image: "haproxy", layout: Layout::Official, config: "/usr/local/etc/haproxy/haproxy.cfg", placement: Placement::Main, marker: "/usr/local/etc/haproxy", logs: "/dev/stdout", binary: "/usr/local/sbin/haproxy" },
            // Debian's package logs to syslog (/dev/log), which no daemon reads in a container.
            ImageLayout { image: "debian + haproxy package", layout: Layout::Debian, config: "/etc/haproxy/haproxy.cfg", placement: Placement::Main, marker: "/etc/haproxy/haproxy.cfg", logs: "/dev/log", binary: "/usr/sbin/haproxy" },
        ]
    }

    fn fix(&self, check_id: &str) -> Option<&'static str> {
        Some(match check_id {
            "ws.upgrade" | "ws.terminal" => "mode http in the frontend and backend (HAProxy then passes WebSocket upgrades by itself), and no http-request rule that keeps /api/*/ws from the backend",
            "ws.idle" => "timeout tunnel 1h (upgraded connections), with timeout client 1h and timeout server 1h",
            "sse.stream" => "option http-no-delay (without it each small chunk is held about 200 ms), and no compression of text/event-stream",
            "sse.headers" => "No compression type text/event-stream and no http-response set-header on Content-Type or Cache-Control",
            "sse.idle" => "timeout server 1h and timeout client 1h (Debian's defaults are 50 s)",
            "http.slow" => "timeout server 1h (Debian's default 50 s answers 504)",
            "body.large" => "Remove http-request deny rules on req.body_size below 50 MB and option http-buffer-request (HAProxy sets no body limit by default)",
            "body.streaming" => "Remove option http-buffer-request (it waits for the body before forwarding)",
            "compress.single" => "Remove compression algo/type where the backend already compresses (one compression layer)",
            "compress.sse" => "compression type without text/event-stream (or no compression)",
            "headers.forwarded" => "option forwardfor; http-request set-header X-Forwarded-Proto http if !{ ssl_fc } (https if { ssl_fc }); http-request set-header X-Forwarded-Host %[req.hdr(host)]; http-request set-header X-Real-IP %[src]",
            "auth.origin" => "Keep Host as sent, and http-request set-header X-Forwarded-Host %[req.hdr(host)] and X-Forwarded-Proto (http if !{ ssl_fc }, https if { ssl_fc }) in the frontend",
            "lb.sticky" => "balance source (with hash-type consistent) in the backend, one server line per instance",
            "h2.headers" => "Remove http-response set-header/add-header lines for Connection, Keep-Alive, Proxy-Connection, Transfer-Encoding, Upgrade or TE (http-response del-header for a backend that sends them)",
            "h2.websocket" => "HAProxy bridges extended CONNECT to an HTTP/1.1 upgrade by itself (2.4+); to stop advertising it: option h2-workaround-bogus-websocket-clients in the frontend",
            "tls.redirect" => "http-request redirect scheme https code 308 unless { ssl_fc } (without `code`, HAProxy answers 302, which turns a POST upload into a GET)",
            "browser.reconnect" => "No http-request del-header Last-Event-ID (or set-header) on the SSE backend: HAProxy passes the browser's Last-Event-ID to the backend, which resumes after it",
            _ => return None,
        })
    }

    fn smoke_config(&self) -> &'static str {
        "haproxy/known-good.cfg"
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::missing;

    #[test]
    fn a_haproxy_config_without_frontend_or_server_serves_nothing() {
        let defaults = "defaults\n\tmode http\n";
        assert!(missing("haproxy", &[("h.cfg", defaults)]).unwrap().contains("no `frontend` or `listen`"));
        let no_server = format!("{defaults}frontend web\n\tbind :80\n\tdefault_backend app\nbackend app\n");
        assert!(missing("haproxy", &[("h.cfg", &no_server)]).unwrap().contains("no `server`"));
        let good = format!("{no_server}\tserver app1 127.0.0.1:3000\n");
        assert_eq!(missing("haproxy", &[("h.cfg", &good)]), None);
    }
}
