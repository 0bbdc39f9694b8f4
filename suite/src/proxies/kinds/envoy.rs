//! Envoy: a bootstrap YAML. Listener ports move to loopback, backend ports to mocks, the admin
//! listener (if any) to a spare port.

use std::ffi::OsString;
use std::path::Path;

use regex::Regex;

use super::{capture, user_code, ImageLayout, Layout, Placement, Mode, ProxyKind, RenderInput, Site};
use crate::proxies::render::{is_backend_port, write, Rendered, Rewriter};

pub static KIND: Envoy = Envoy;

pub struct Envoy;

impl ProxyKind for Envoy {
    fn name(&self) -> &'static str {
        "envoy"
    }

    fn parse_version(&self, output: &str) -> Option<String> {
        capture(r"/(\d+\.\d+\.\d+)/", output)
    }

    fn render(&self, input: &RenderInput, r: &mut Rewriter) -> Result<Site, String> {
        let listen = r.listen();
        let spare = r.spare();
        let port_re = Regex::new(r"^(\s*(?:-\s*)?port_value:\s*)(\d+)(.*)$").expect("static regex");
        let addr_re = Regex::new(r#"^(\s*(?:-\s*)?address:\s*)["']?(0\.0\.0\.0|::|localhost|127\.0\.0\.1|"::")["']?\s*$"#).expect("static regex");
        let filename_re = Regex::new(r#"^(\s*(?:-\s*)?filename:\s*)(.*)$"#).expect("static regex");
        let tls_context = input.text.contains("DownstreamTlsContext");
        // Lines, so an `address:` line can take the IP of the port that follows it: the
        // listener's (0.0.0.0 in a container), the backend's, or loopback for the admin.
        let mut out: Vec<String> = Vec::new();
        let mut pending_address: Option<usize> = None;
        let mut in_admin = false;
        let mut admin_port = None;
        let (mut plain, mut tls) = (false, false);
        // The key a `filename:` belongs to (`certificate_chain`, `private_key`).
        let mut last_key = String::new();
        for line in input.text.lines() {
            if !line.starts_with(char::is_whitespace) && !line.trim().is_empty() && !line.starts_with('#') {
                in_admin = line.starts_with("admin:");
            }
            if let Some(c) = port_re.captures(line) {
                let port: u16 = c[2].parse().unwrap_or(0);
                let (ip, new) = if in_admin {
                    admin_port = Some(spare);
                    r.note(format!("admin port {port} -> {spare}"));
                    (std::net::IpAddr::from([127, 0, 0, 1]), spare)
                } else if is_backend_port(port) {
                    let addr = r.backend_for(port);
                    r.note(format!("backend port {port} -> mock {addr}"));
                    (addr.ip(), addr.port())
                } else if tls_context && (port == 443 || port == 8443) {
                    // The deployment's TLS listener (its filter chain has a DownstreamTlsContext).
                    let (addr, _) = r.tls_listen(&[])?;
                    r.note(format!("listener port {port} -> {addr} (TLS)"));
                    tls = true;
                    (addr.ip(), addr.port())
                } else {
                    r.note(format!("listener port {port} -> {listen}"));
                    plain = true;
                    (listen.ip(), listen.port())
                };
                if let Some(i) = pending_address.take() {
                    out[i] = out[i].replace("127.0.0.1", &ip.to_string());
                }
                out.push(format!("{}{new}{}", &c[1], &c[3]));
            } else if let (Some(c), true) = (filename_re.captures(line), matches!(last_key.as_str(), "certificate_chain" | "private_key")) {
                let (_, files) = r.tls_listen(&[])?;
                let path = if last_key == "private_key" { &files.key } else { &files.cert };
                r.note(format!("{last_key} {} -> the run's {}", c[2].trim(), if last_key == "private_key" { "key" } else { "certificate" }));
                out.push(format!("{}\"{}\"", &c[1], path.display()));
            } else if let Some(c) = addr_re.captures(line) {
                pending_address = Some(out.len());
                out.push(format!("{}127.0.0.1", &c[1]));
            } else {
                out.push(line.to_string());
            }
            if line.contains("alpn_protocols") && line.contains("h2") {
                r.offer_h2();
            }
            if let Some(key) = line.trim().trim_start_matches("- ").strip_suffix(':') {
                last_key = key.to_string();
            }
        }
        if tls && !plain {
            r.tls_only();
        }
        let out = out.join("\n") + "\n";
        let main = input.prefix.join("envoy.yaml");
        write(&main, &out)?;
        Ok(Site { main: main.clone(), host: input.default_host.clone(), admin_port, user_files: vec![main] })
    }

    fn missing_route(&self, rendered: &Rendered) -> Option<String> {
        let code = user_code(rendered);
        let key = |k: &str| Regex::new(&format!(r"(?m)^\s*(?:-\s*)?{k}:")).expect("static regex").is_match(&code);
        if !key("listeners") {
            return Some("no `static_resources.listeners`: nothing accepts requests".into());
        }
        if !key("clusters") {
            return Some("no `static_resources.clusters`: no backend to send requests to".into());
        }
        (!key("cluster")).then(|| "no route with a `cluster`: no request is sent to the backend".to_string())
    }

    fn args(&self, mode: Mode, rendered: &Rendered, prefix: &Path) -> Option<Vec<OsString>> {
        // Without --disable-hot-restart a second concurrent Envoy exits ("unable to bind domain
        // socket with base_id=0").
        let mut args: Vec<OsString> = vec!["--disable-hot-restart".into()];
        if mode == Mode::Validate {
            args.extend(["--mode".into(), "validate".into()]);
        } else {
            args.extend(["--log-level".into(), "warn".into(), "--log-path".into(), prefix.join("logs/envoy.log").into_os_string()]);
        }
        args.extend(["-c".into(), rendered.main.clone().into_os_string()]);
        Some(args)
    }

    fn images(&self) -> Vec<ImageLayout> {
        vec![ImageLayout { image: "envoyproxy/envoy", layout: Layout::Official, config: "/etc/envoy/envoy.yaml", placement: Placement::Main, marker: "/etc/envoy", logs: "/dev/stdout", binary: "/usr/local/bin/envoy" }]
    }

    fn fix(&self, check_id: &str) -> Option<&'static str> {
        Some(match check_id {
            "ws.upgrade" | "ws.terminal" => "upgrade_configs: [{upgrade_type: websocket}] on the http_connection_manager (without it Envoy refuses upgrades with 403)",
            "ws.idle" => "Route timeout: 0s and idle_timeout: 3600s, stream_idle_timeout: 3600s on the http_connection_manager, with upgrade_configs: [{upgrade_type: websocket}]",
            "sse.stream" => "Envoy streams responses: remove a buffer or compressor filter from the SSE routes",
            "sse.headers" => "No compressor filter for text/event-stream and no response_headers_to_add on Content-Type or Cache-Control",
            "sse.idle" => "Route timeout: 0s (the default 15 s ends any response) and idle_timeout: 3600s; stream_idle_timeout: 3600s on the http_connection_manager",
            "http.slow" => "Route timeout: 0s (the default 15 s answers 504 upstream request timeout)",
            "body.large" => "Remove the envoy.filters.http.buffer filter or raise its max_request_bytes above 50 MB (Envoy streams bodies otherwise)",
            "body.streaming" => "Remove the envoy.filters.http.buffer filter (it waits for the whole body)",
            "compress.single" => "Remove the envoy.filters.http.compressor filter where the backend already compresses (one compression layer)",
            "compress.sse" => "compressor filter with a content_type list without text/event-stream (or no compressor)",
            "headers.forwarded" => "use_remote_address: true; request_headers_to_add X-Real-IP %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% and X-Forwarded-Host %REQ(:AUTHORITY)% (with skip_xff_append: true, append X-Forwarded-For yourself)",
            "auth.origin" => "Keep Host (no host_rewrite_literal or auto_host_rewrite), add X-Forwarded-Host %REQ(:AUTHORITY)%, use_remote_address: true for X-Forwarded-Proto",
            "lb.sticky" => "Cluster lb_policy: RING_HASH and route hash_policy: [{connection_properties: {source_ip: true}}]",
            "h2.headers" => "Remove response_headers_to_add entries for Connection, Keep-Alive, Proxy-Connection, Transfer-Encoding, Upgrade or TE (response_headers_to_remove for a backend that sends them)",
            "h2.websocket" => "Remove allow_connect from http2_protocol_options: Envoy forwards the extended CONNECT as an upgrade without Sec-WebSocket-Key, which the backend refuses; without it browsers open HTTP/1.1 upgrades",
            "tls.redirect" => "On the plain listener's route: redirect: { https_redirect: true, response_code: PERMANENT_REDIRECT } (the default is 301)",
            "browser.reconnect" => "Do not list Last-Event-ID in request_headers_to_remove (route, virtual host or connection manager): Envoy passes the browser's Last-Event-ID to the backend, which resumes after it",
            _ => return None,
        })
    }

    fn smoke_config(&self) -> &'static str {
        "envoy/known-good.yaml"
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::missing;

    #[test]
    fn an_envoy_bootstrap_without_listeners_or_clusters_serves_nothing() {
        assert!(missing("envoy", &[("e.yaml", "admin:\n  address:\n    socket_address: { address: 127.0.0.1, port_value: 9901 }\n")]).unwrap().contains("listeners"));
        assert!(missing("envoy", &[("e.yaml", "static_resources:\n  listeners:\n  - name: l\n")]).unwrap().contains("clusters"));
    }
}
