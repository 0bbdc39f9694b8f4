//! nginx: a site file (`server { ... }`, and `map`/`upstream` at http level) as put in
//! `sites-enabled/`, run inside the `nginx.conf` its distribution ships: Debian's for the
//! Debian package (gzip on), nginx's own `conf/nginx.conf` for the wheel's stock build.

use std::ffi::OsString;
use std::path::Path;

use regex::{Captures, Regex};

use super::{capture, os_args, user_code, ImageLayout, Mode, ProxyKind, RenderInput, Site};
use crate::proxies::catalogue::Source;
use crate::proxies::render::{fill, read_context, write, Rendered, Rewriter};

pub static KIND: Nginx = Nginx;

pub struct Nginx;

impl ProxyKind for Nginx {
    fn name(&self) -> &'static str {
        "nginx"
    }

    fn parse_version(&self, output: &str) -> Option<String> {
        capture(r"nginx/(\d+\.\d+\.\d+)", output)
    }

    fn distribution(&self, source: &Source) -> Option<&'static str> {
        Some(match source {
            Source::Debian { .. } => "debian",
            Source::Pypi { .. } => "stock",
        })
    }

    fn render(&self, input: &RenderInput, r: &mut Rewriter) -> Result<Site, String> {
        let site = site(input.text, r);
        let host = input.config.host.clone().or_else(|| server_name(&site)).unwrap_or_else(|| input.default_host.clone());
        let site_path = input.prefix.join("site.conf");
        write(&site_path, &site)?;
        let context = input.distribution.map(String::from).or_else(|| input.config.context.clone()).unwrap_or_else(|| "debian".into());
        let main = context_around(input.context_root, &context, input.prefix, &site_path, r)?;
        Ok(Site { main, host, admin_port: None, user_files: vec![site_path] })
    }

    fn missing_route(&self, rendered: &Rendered) -> Option<String> {
        missing_proxy_pass(&user_code(rendered))
    }

    fn args(&self, mode: Mode, rendered: &Rendered, prefix: &Path) -> Option<Vec<OsString>> {
        Some(args(mode, rendered, prefix))
    }

    fn image(&self) -> ImageLayout {
        // nginx.org's image: site files in conf.d/, logs symlinked to the container's output.
        ImageLayout { image: "nginx", config: "/etc/nginx/conf.d/default.conf", logs: "/var/log/nginx", binary: "/usr/sbin/nginx" }
    }

    fn fix(&self, check_id: &str) -> Option<&'static str> {
        Some(match check_id {
            "ws.upgrade" => "On each WebSocket route (/api/event/ws, /api/global/event/ws, /api/terminal/ws): proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\";",
            "ws.terminal" => "location = /api/terminal/ws { proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\"; proxy_buffering off; proxy_pass ...; }",
            "ws.idle" => "proxy_read_timeout 3600s; proxy_send_timeout 3600s; on the WebSocket routes (the default 60 s cuts a silent connection)",
            "sse.stream" => "On the SSE routes: proxy_buffering off; proxy_cache off; gzip off; (proxy_http_version 1.1;) — do not rely on the backend's X-Accel-Buffering: no",
            "sse.headers" => "On the SSE routes: gzip off; proxy_buffering off; and no add_header/proxy_hide_header that changes Content-Type or Cache-Control",
            "sse.idle" => "proxy_read_timeout 3600s; on the SSE routes (the default 60 s cuts a silent stream)",
            "http.slow" => "proxy_read_timeout 3600s; proxy_send_timeout 3600s; (the default 60 s answers 504)",
            "body.large" => "client_max_body_size 50M; (the default is 1 MiB: larger uploads get 413)",
            "body.streaming" => "proxy_request_buffering off; proxy_http_version 1.1; (a chunked upload streams only over HTTP/1.1 upstream)",
            "compress.single" => "gzip off; where the backend already compresses (Debian's nginx.conf turns gzip on)",
            "compress.sse" => "gzip off; on the SSE routes (and do not list text/event-stream in gzip_types)",
            "headers.forwarded" => "proxy_set_header Host $host; proxy_set_header X-Real-IP $remote_addr; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $host;",
            "auth.origin" => "Repeat proxy_set_header Host $host; proxy_set_header X-Forwarded-Host $host; proxy_set_header X-Forwarded-Proto $scheme; inside every WebSocket location: one proxy_set_header in a location drops every inherited one",
            "lb.sticky" => "upstream openchamber { ip_hash; server 127.0.0.1:3000; server 127.0.0.1:3001; } and proxy_pass http://openchamber;",
            _ => return None,
        })
    }

    fn smoke_config(&self) -> &'static str {
        "nginx/websocket-howto-map.conf"
    }
}

/// An nginx config that proxies nothing has no `proxy_pass` (NPM's generated one included).
pub(super) fn missing_proxy_pass(code: &str) -> Option<String> {
    let proxy_pass = Regex::new(r"(?m)(^|[;{}\s])proxy_pass\s").expect("static regex");
    (!proxy_pass.is_match(code)).then(|| "no `proxy_pass`: no location sends requests to the backend".to_string())
}

/// The validate and run command lines of nginx (and of NPM's generated config on nginx).
pub(super) fn args(mode: Mode, rendered: &Rendered, prefix: &Path) -> Vec<OsString> {
    let mut args = Vec::new();
    if mode == Mode::Validate {
        args.extend(os_args(["-t", "-q"]));
    }
    args.extend(os_args([
        OsString::from("-p"),
        prefix.as_os_str().to_owned(),
        OsString::from("-c"),
        rendered.main.as_os_str().to_owned(),
        OsString::from("-e"),
        prefix.join("logs/error.log").into_os_string(),
    ]));
    // nginx must stay in the foreground; add `daemon off;` unless the context says it already.
    let text = std::fs::read_to_string(&rendered.main).unwrap_or_default();
    if !text.lines().any(|l| l.trim_start().starts_with("daemon ")) {
        args.extend(os_args(["-g", "daemon off;"]));
    }
    args
}

/// Rewrites listeners and backends of an nginx server-level text.
fn site(text: &str, r: &mut Rewriter) -> String {
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

fn server_name(site: &str) -> Option<String> {
    let re = Regex::new(r"(?m)^\s*server_name\s+([^;\s]+)").expect("static regex");
    re.captures(site).map(|c| c[1].to_string()).filter(|n| n != "_" && n != "localhost")
}

/// Renders `proxy-configs/nginx/_context/<name>.conf` around `site`, copying `mime.types`
/// beside it.
fn context_around(root: &Path, name: &str, prefix: &Path, site: &Path, r: &mut Rewriter) -> Result<std::path::PathBuf, String> {
    let dir = root.join("nginx/_context");
    let mime = dir.join("mime.types");
    std::fs::copy(&mime, prefix.join("mime.types")).map_err(|e| format!("cannot copy {}: {e}", mime.display()))?;
    let template = read_context(&dir.join(format!("{name}.conf")))?;
    let vars = minijinja::context! { prefix => prefix.display().to_string(), site => site.display().to_string() };
    let main = prefix.join("nginx.conf");
    write(&main, &fill(&template, &vars)?)?;
    r.note(format!("wrapped in context nginx/_context/{name}.conf"));
    Ok(main)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxies::render::tests::rewriter;

    #[test]
    fn listeners_move_to_loopback_and_ipv6_is_dropped() {
        let mut r = rewriter();
        let out = site("server {\n  listen 80 default_server;\n  listen [::]:80;\n  location / { proxy_pass http://localhost:4242; }\n}\n", &mut r);
        assert!(out.contains("listen 127.0.0.1:4000 default_server;"), "{out}");
        assert!(out.contains("# [proxy-suite] listen [::]:80;"), "{out}");
        assert!(out.contains("proxy_pass http://127.0.0.1:5001;"), "{out}");
    }

    #[test]
    fn a_site_without_proxy_pass_proxies_nothing() {
        assert!(missing_proxy_pass("server {\n  listen 80;\n  root /var/www;\n}").unwrap().contains("proxy_pass"));
        assert!(missing_proxy_pass("server { listen 80; location / { proxy_pass http://x; } }").is_none());
        assert!(missing_proxy_pass("location / {\n    proxy_pass $forward_scheme://$server:$port$request_uri;\n}").is_none());
    }
}
