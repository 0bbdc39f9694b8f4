//! nginx: a site file (`server { ... }`, and `map`/`upstream` at http level) as put in
//! `sites-enabled/`, run inside the `nginx.conf` its distribution ships: Debian's for the
//! Debian package (gzip on), nginx's own `conf/nginx.conf` for the wheel's stock build.

use std::ffi::OsString;
use std::path::Path;

use regex::{Captures, Regex};

use super::{capture, os_args, user_code, ImageLayout, Layout, Mode, Placement, ProxyKind, RenderInput, Site, IN_IMAGE};
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
        let site = site(input.text, r)?;
        // In an image, its own files are included (or missing, as users find out); certbot's
        // files are copied either way, as users mount /etc/letsencrypt into the container.
        let in_image = input.distribution == Some(IN_IMAGE);
        let site = distribution_files(&site, input.prefix, !in_image, r)?;
        let host = input.config.host.clone().or_else(|| server_name(&site)).unwrap_or_else(|| input.default_host.clone());
        let site_path = input.prefix.join("site.conf");
        write(&site_path, &site)?;
        if in_image {
            r.note("inside the image's own nginx.conf".into());
            return Ok(Site { main: site_path.clone(), host, admin_port: None, user_files: vec![site_path] });
        }
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

    fn images(&self) -> Vec<ImageLayout> {
        vec![
            // nginx.org's image: nginx.conf includes conf.d/*.conf, whose default.conf is the
            // default site; logs symlinked to the container's output.
            ImageLayout { image: "nginx", layout: Layout::Official, config: "/etc/nginx/conf.d/default.conf", placement: Placement::Site, marker: "/etc/nginx/conf.d", logs: "/var/log/nginx", binary: "/usr/sbin/nginx" },
            // Debian's nginx package: the default site is sites-enabled/default (conf.d exists
            // too, empty); proxy_params and snippets/ beside nginx.conf.
            ImageLayout { image: "debian + nginx package", layout: Layout::Debian, config: "/etc/nginx/sites-enabled/default", placement: Placement::Site, marker: "/etc/nginx/sites-enabled", logs: "/var/log/nginx", binary: "/usr/sbin/nginx" },
        ]
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
            "h2.headers" => "Add no hop-by-hop header to responses: remove add_header Connection/Keep-Alive/Proxy-Connection/Transfer-Encoding/Upgrade/TE (nginx sends them over HTTP/2 as written); for a backend that sends them: proxy_hide_header Proxy-Connection; proxy_hide_header TE; proxy_hide_header Upgrade;",
            "h2.websocket" => "nginx does not implement WebSocket over HTTP/2 (RFC 8441) and never advertises it: browsers open HTTP/1.1 upgrades, which need proxy_http_version 1.1 and the Upgrade/Connection headers on the WebSocket locations",
            "tls.redirect" => "In the plain server, return 308 https://$host$request_uri; (certbot writes 301, which turns a POST upload into a GET)",
            "browser.reconnect" => "Remove proxy_set_header Last-Event-ID \"\"; (and proxy_pass_request_headers off;) from the SSE routes: nginx then passes the browser's Last-Event-ID to the backend, which resumes after it",
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

/// Rewrites listeners, certificates and backends of an nginx server-level text. A plain
/// `listen` moves to the run's loopback port, a `listen ... ssl` to its TLS port (with `http2`
/// kept, as is `http2 on;`), and every `ssl_certificate`/`ssl_certificate_key` to the run's
/// certificate for the site's names. IPv6 listeners are dropped (the suite listens on loopback).
fn site(text: &str, r: &mut Rewriter) -> Result<String, String> {
    let listen_re = Regex::new(r"(?m)^(\s*)listen\s+([^;]+);").expect("static regex");
    let names = server_names(text);
    let mut notes = Vec::new();
    let (mut plain, mut tls) = (false, false);
    let mut failure = None;
    let text = listen_re
        .replace_all(text, |c: &Captures| {
            let args = &c[2];
            if args.trim_start().starts_with('[') {
                notes.push(format!("listen {args} -> removed (IPv6; the suite listens on loopback)"));
                return format!("{}# [proxy-suite] listen {args}; (IPv6 listener removed)", &c[1]);
            }
            let flags: Vec<&str> = args.split_whitespace().skip(1).collect();
            let keep: Vec<&str> = flags.iter().copied().filter(|a| matches!(*a, "default_server" | "ssl" | "http2")).collect();
            let addr = if flags.contains(&"ssl") {
                tls = true;
                if flags.contains(&"http2") {
                    r.offer_h2();
                }
                match r.tls_listen(&names) {
                    Ok((addr, _)) => addr,
                    Err(e) => {
                        failure = Some(e);
                        r.listen()
                    }
                }
            } else {
                plain = true;
                r.listen()
            };
            notes.push(format!("listen {args} -> {addr}{}", if keep.is_empty() { String::new() } else { format!(" {}", keep.join(" ")) }));
            format!("{}listen {addr}{}{};", &c[1], if keep.is_empty() { "" } else { " " }, keep.join(" "))
        })
        .into_owned();
    if let Some(e) = failure {
        return Err(e);
    }
    for n in notes {
        r.note(n);
    }
    if tls && !plain {
        r.tls_only();
    }
    if Regex::new(r"(?m)^\s*http2\s+on\s*;").expect("static regex").is_match(&text) {
        r.offer_h2();
    }
    // Certificates: the run's, wherever the config (or certbot) said they are.
    let cert_re = Regex::new(r"(?m)^(\s*)(ssl_certificate(_key)?)\s+([^;]*);").expect("static regex");
    let text = if cert_re.is_match(&text) {
        let (_, files) = r.tls_listen(&names)?;
        let mut notes = Vec::new();
        let out = cert_re
            .replace_all(&text, |c: &Captures| {
                let path = if c.get(3).is_some() { &files.key } else { &files.cert };
                notes.push(format!("{} {} -> the run's {}", &c[2], c[4].trim(), if c.get(3).is_some() { "key" } else { "certificate" }));
                format!("{}{} {};", &c[1], &c[2], path.display())
            })
            .into_owned();
        for n in notes {
            r.note(n);
        }
        out
    } else {
        text
    };
    Ok(r.upstreams(&text))
}

/// Where Debian's nginx-common keeps the files a site file includes (`proxy_params`,
/// `snippets/`, `fastcgi_params`, `mime.types`).
const DEBIAN_NGINX: &str = "/etc/nginx";
/// Where Debian's certbot packages keep what `certbot --nginx` copies to /etc/letsencrypt.
const CERTBOT_FILES: [(&str, &str); 2] = [
    ("options-ssl-nginx.conf", "/usr/lib/python3/dist-packages/certbot_nginx/_internal/tls_configs/options-ssl-nginx.conf"),
    ("ssl-dhparams.pem", "/usr/lib/python3/dist-packages/certbot/ssl-dhparams.pem"),
];

/// A site file as a distribution runs it: what it includes from Debian's nginx-common
/// (`include proxy_params;`, `include snippets/...;`, `fastcgi_params`, `mime.types`, relative or
/// under /etc/nginx) copied from the installed package into the prefix, and what certbot added
/// (`include /etc/letsencrypt/options-ssl-nginx.conf;`, `ssl_dhparam
/// /etc/letsencrypt/ssl-dhparams.pem;`) copied from Debian's certbot packages. Each is reported.
fn distribution_files(site: &str, prefix: &Path, etc_nginx: bool, r: &mut Rewriter) -> Result<String, String> {
    let include = Regex::new(r"(?m)(^\s*|[{;]\s*)(include|ssl_dhparam)\s+([^;\s]+)\s*;").expect("static regex");
    let mut failure = None;
    let mut notes = Vec::new();
    let out = include.replace_all(site, |c: &Captures| {
        let path = &c[3];
        let copy = |from: &Path, rel: &str| -> Result<std::path::PathBuf, String> {
            let to = prefix.join(rel);
            if let Some(dir) = to.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            std::fs::copy(from, &to).map_err(|e| format!("`{} {path};` needs {} (install its package): {e}", &c[2], from.display()))?;
            Ok(to)
        };
        let letsencrypt = path.strip_prefix("/etc/letsencrypt/");
        let result = if let Some(name) = letsencrypt.filter(|n| !n.starts_with("live/")) {
            match CERTBOT_FILES.iter().find(|(n, _)| *n == name) {
                Some((n, from)) => copy(Path::new(from), &format!("letsencrypt/{n}")).map(|to| {
                    notes.push(format!("{} {path} -> {} (copied from Debian's certbot package: {from})", &c[2], to.display()));
                    Some(to)
                }),
                None => Ok(None),
            }
        } else if etc_nginx && &c[2] == "include" && !path.contains('*') && (path.starts_with("/etc/nginx/") || !path.starts_with('/')) {
            let rel = path.strip_prefix("/etc/nginx/").unwrap_or(path);
            let from = Path::new(DEBIAN_NGINX).join(rel);
            // mime.types is already in the prefix (the context's); every other file from Debian.
            if rel == "mime.types" && !path.starts_with('/') {
                Ok(None)
            } else {
                copy(&from, rel).map(|to| {
                    notes.push(format!("include {path} -> {} (copied from Debian's nginx-common: {})", to.display(), from.display()));
                    Some(to)
                })
            }
        } else {
            Ok(None)
        };
        match result {
            Ok(Some(to)) => format!("{}{} {};", &c[1], &c[2], to.display()),
            Ok(None) => c[0].to_string(),
            Err(e) => {
                failure.get_or_insert(e);
                c[0].to_string()
            }
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    for n in notes {
        r.note(n);
    }
    Ok(out.into_owned())
}

/// Every name of every `server_name` (the certificate covers them all), without `_`,
/// `localhost`, regexes and wildcards.
fn server_names(text: &str) -> Vec<String> {
    let re = Regex::new(r"(?m)^\s*server_name\s+([^;]+);").expect("static regex");
    let mut names = Vec::new();
    for c in re.captures_iter(&super::code_of(text)) {
        for n in c[1].split_whitespace() {
            let ok = n != "_" && n != "localhost" && !n.starts_with('~') && !n.contains('*') && n.contains('.');
            if ok && !names.iter().any(|m: &String| m == n) {
                names.push(n.to_string());
            }
        }
    }
    names
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
    use crate::tls::Transport;

    #[test]
    fn listeners_move_to_loopback_and_ipv6_is_dropped() {
        let mut r = rewriter();
        let out = site("server {\n  listen 80 default_server;\n  listen [::]:80;\n  location / { proxy_pass http://localhost:4242; }\n}\n", &mut r).unwrap();
        assert!(out.contains("listen 127.0.0.1:4000 default_server;"), "{out}");
        assert!(out.contains("# [proxy-suite] listen [::]:80;"), "{out}");
        assert!(out.contains("proxy_pass http://127.0.0.1:5001;"), "{out}");
    }

    #[test]
    fn tls_listeners_and_certificates_go_to_the_runs_files() {
        let site = "server {\n  listen 80;\n  return 301 https://$host$request_uri;\n}\nserver {\n  listen 443 ssl http2;\n  listen [::]:443 ssl;\n  server_name a.example.com b.example.com;\n  ssl_certificate /etc/letsencrypt/live/a.example.com/fullchain.pem;\n  ssl_certificate_key /etc/letsencrypt/live/a.example.com/privkey.pem;\n  location / { proxy_pass http://127.0.0.1:3000; }\n}\n";
        let (_dir, rendered) = crate::proxies::kinds::tests::render("nginx", &[("a.conf", site)]);
        let out = std::fs::read_to_string(&rendered.user_files[0]).unwrap();
        let tls = rendered.tls.as_ref().expect("a TLS listener");
        assert!(out.contains("listen 127.0.0.1:4000;"), "{out}");
        assert!(out.contains("listen 127.0.0.1:4443 ssl http2;"), "{out}");
        assert!(out.contains(&format!("ssl_certificate {};", tls.files.cert.display())), "{out}");
        assert!(out.contains(&format!("ssl_certificate_key {};", tls.files.key.display())), "{out}");
        assert!(tls.files.names.contains(&"b.example.com".to_string()), "{:?}", tls.files.names);
        assert_eq!(rendered.transports(), vec![Transport::H1, Transport::H1Tls, Transport::H2]);
    }

    #[test]
    fn a_tls_only_site_offers_no_plain_transport() {
        let site = "server {\n  listen 443 ssl;\n  server_name a.example.com;\n  ssl_certificate /x.pem;\n  ssl_certificate_key /y.pem;\n  location / { proxy_pass http://127.0.0.1:3000; }\n}\n";
        let (_dir, rendered) = crate::proxies::kinds::tests::render("nginx", &[("a.conf", site)]);
        assert_eq!(rendered.transports(), vec![Transport::H1Tls]);
    }

    #[test]
    fn debian_and_certbot_includes_are_copied_into_the_prefix() {
        if !Path::new(CERTBOT_FILES[0].1).exists() || !Path::new("/etc/nginx/proxy_params").exists() {
            return; // scripts/setup.sh installs them; proxies.rs fails when they are missing
        }
        let site = "server {\n  listen 443 ssl;\n  ssl_certificate /etc/letsencrypt/live/a/fullchain.pem;\n  ssl_certificate_key /etc/letsencrypt/live/a/privkey.pem;\n  include /etc/letsencrypt/options-ssl-nginx.conf;\n  ssl_dhparam /etc/letsencrypt/ssl-dhparams.pem;\n  location / { include proxy_params; proxy_pass http://127.0.0.1:3000; }\n}\n";
        let (dir, rendered) = crate::proxies::kinds::tests::render("nginx", &[("a.conf", site)]);
        let out = std::fs::read_to_string(&rendered.user_files[0]).unwrap();
        let prefix = dir.path().join("prefix");
        for file in ["proxy_params", "letsencrypt/options-ssl-nginx.conf", "letsencrypt/ssl-dhparams.pem"] {
            assert!(prefix.join(file).exists(), "{file}");
            assert!(out.contains(&prefix.join(file).display().to_string()), "{out}");
        }
        assert!(!out.contains("/etc/letsencrypt"), "{out}");
    }

    #[test]
    fn a_site_without_proxy_pass_proxies_nothing() {
        assert!(missing_proxy_pass("server {\n  listen 80;\n  root /var/www;\n}").unwrap().contains("proxy_pass"));
        assert!(missing_proxy_pass("server { listen 80; location / { proxy_pass http://x; } }").is_none());
        assert!(missing_proxy_pass("location / {\n    proxy_pass $forward_scheme://$server:$port$request_uri;\n}").is_none());
    }
}
