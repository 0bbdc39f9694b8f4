//! Traefik: a static file `<name>.yml` whose file provider names `<name>.dynamic.yml` beside it
//! (routers, services, middlewares). Traefik has no validator: a bad static file makes it exit,
//! which the readiness wait reports.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use regex::{Captures, Regex};

use super::{capture, code_of, ImageLayout, Layout, Placement, Mode, ProxyKind, RenderInput, Site};
use crate::proxies::render::{write, Rendered, Rewriter};

pub static KIND: Traefik = Traefik;

pub struct Traefik;

impl ProxyKind for Traefik {
    fn name(&self) -> &'static str {
        "traefik"
    }

    fn parse_version(&self, output: &str) -> Option<String> {
        capture(r"Version:\s+v?(\d+\.\d+\.\d+)", output)
    }

    fn companions(&self, config: &Path) -> Vec<PathBuf> {
        let stem = config.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let dynamic = config.with_file_name(format!("{stem}.dynamic.yml"));
        if dynamic.exists() { vec![dynamic] } else { Vec::new() }
    }

    /// The static file's entry point moves to loopback and its file provider points at the
    /// rendered dynamic file.
    fn render(&self, input: &RenderInput, r: &mut Rewriter) -> Result<Site, String> {
        let listen = r.listen();
        let address = Regex::new(r#"(?m)^(\s*address:\s*)["']?[^"'\n]*:(\d+)["']?\s*$"#).expect("static regex");
        // An entry point on :443 is the deployment's TLS one (its routers say `tls`): it moves
        // to the run's TLS port, and the file provider gets the run's certificate.
        let names: Vec<String> = Regex::new(r"Host\(`([^`]+)`\)").expect("static regex")
            .captures_iter(&self.companions(&input.config.path).iter().map(|p| std::fs::read_to_string(p).unwrap_or_default()).collect::<String>())
            .map(|c| c[1].to_string())
            .collect();
        let mut notes = Vec::new();
        let (mut plain, mut tls) = (false, None);
        let mut failure = None;
        let mut text = address
            .replace_all(input.text, |c: &Captures| {
                if &c[2] == "443" {
                    match r.tls_listen(&names) {
                        Ok((addr, files)) => {
                            notes.push(format!("entry point :443 -> {addr} (TLS, the run's certificate in the file provider)"));
                            tls = Some(files);
                            return format!("{}\"{addr}\"", &c[1]);
                        }
                        Err(e) => failure = Some(e),
                    }
                }
                plain = true;
                notes.push(format!("entry point :{} -> {listen}", &c[2]));
                format!("{}\"{listen}\"", &c[1])
            })
            .into_owned();
        if let Some(e) = failure {
            return Err(e);
        }
        for n in notes {
            r.note(n);
        }
        if tls.is_some() {
            r.offer_h2();
            if !plain {
                r.tls_only();
            }
        }
        let mut host = input.default_host.clone();
        let mut user_files = Vec::new();
        let rule_host = Regex::new(r"Host\(`([^`]+)`\)").expect("static regex");
        for companion in self.companions(&input.config.path) {
            let name = companion.file_name().and_then(|n| n.to_str()).unwrap_or("dynamic.yml").to_string();
            let mut dynamic = r.upstreams(&std::fs::read_to_string(&companion).map_err(|e| format!("cannot read {}: {e}", companion.display()))?);
            if let Some(files) = &tls {
                dynamic = with_certificate(&dynamic, files, r)?;
            }
            if let Some(c) = rule_host.captures(&dynamic) {
                host = c[1].to_string();
            }
            let out = input.prefix.join(&name);
            write(&out, &dynamic)?;
            let filename = Regex::new(&format!(r"(?m)(filename:\s*)[\x22']?[^\n\x22']*{}[\x22']?", regex::escape(&name))).expect("escaped regex");
            text = filename.replace_all(&text, |c: &Captures| format!("{}\"{}\"", &c[1], out.display())).into_owned();
            r.note(format!("file provider -> rendered {name}"));
            user_files.push(out);
        }
        let main = input.prefix.join("traefik.yml");
        write(&main, &text)?;
        user_files.insert(0, main.clone());
        Ok(Site { main, host, admin_port: None, user_files })
    }

    fn missing_route(&self, rendered: &Rendered) -> Option<String> {
        // (The `tls.certificates` of the dynamic file may be the suite's; they are no route.)
        let Some((_, dynamic)) = rendered.user_files.split_first() else { return Some("nothing rendered".into()) };
        if dynamic.is_empty() {
            return Some("no dynamic file: routers and services live in the file provider's file, `<name>.dynamic.yml` beside the static `<name>.yml`".into());
        }
        let code: String = dynamic.iter().map(|p| code_of(&std::fs::read_to_string(p).unwrap_or_default())).collect::<Vec<_>>().join("\n");
        let key = |k: &str| Regex::new(&format!(r"(?m)^\s*(?:-\s*)?{k}:")).expect("static regex").is_match(&code);
        if !key("routers") || !key("rule") {
            return Some("no router: the dynamic file has no `http.routers` entry with a `rule`, so every request gets 404".into());
        }
        if !key("services") || !key("url") {
            return Some("no service: the dynamic file has no `http.services` entry with a server `url`".into());
        }
        None
    }

    fn args(&self, mode: Mode, rendered: &Rendered, _prefix: &Path) -> Option<Vec<OsString>> {
        (mode == Mode::Run).then(|| vec![OsString::from(format!("--configFile={}", rendered.main.display()))])
    }

    fn images(&self) -> Vec<ImageLayout> {
        // The official image ships no traefik.yml (its marker is the binary); `traefik` with
        // no arguments reads /etc/traefik/traefik.yml.
        vec![ImageLayout { image: "traefik", layout: Layout::Official, config: "/etc/traefik/traefik.yml", placement: Placement::Main, marker: "/usr/local/bin/traefik", logs: "/dev/stdout", binary: "/usr/local/bin/traefik" }]
    }

    fn fix(&self, check_id: &str) -> Option<&'static str> {
        Some(match check_id {
            "ws.upgrade" | "ws.terminal" => "Traefik passes WebSocket upgrades by itself: the router's rule must match the WebSocket paths (/api/event/ws, /api/global/event/ws, /api/terminal/ws), with no middleware that answers them",
            "ws.idle" | "sse.idle" => "entryPoints.<name>.transport.respondingTimeouts: { readTimeout: 0, writeTimeout: 0s, idleTimeout: 3600s } and serversTransports.<name>.forwardingTimeouts.responseHeaderTimeout: 0s",
            "sse.stream" => "Traefik flushes text/event-stream at once: remove a buffering or compress middleware from the SSE routes",
            "sse.headers" => "No compress middleware and no headers middleware that changes Content-Type or Cache-Control on the SSE routes",
            "http.slow" => "serversTransports.<name>.forwardingTimeouts.responseHeaderTimeout: 0s and entryPoints.<name>.transport.respondingTimeouts.writeTimeout: 0s",
            "body.large" => "entryPoints.<name>.transport.respondingTimeouts.readTimeout: 3600s (the default 60 s cuts long uploads), and no buffering middleware with a smaller maxRequestBodyBytes",
            "body.streaming" => "Remove the buffering middleware (it reads the whole request body before forwarding)",
            "compress.single" => "Remove the compress middleware where the backend already compresses (one compression layer)",
            "compress.sse" => "compress middleware with excludedContentTypes: [text/event-stream], or none on the SSE routes",
            "headers.forwarded" => "Traefik sets X-Forwarded-For/-Host and X-Real-Ip and passes Host (loadBalancer.passHostHeader: true, the default), but sends X-Forwarded-Proto: ws on WebSocket upgrades: pin it with a headers middleware on the router, customRequestHeaders: { X-Forwarded-Proto: \"http\" } (\"https\" behind TLS), and remove middlewares that drop the others",
            "auth.origin" => "Traefik sends X-Forwarded-Proto: ws on upgrades: pin it with a headers middleware, customRequestHeaders: { X-Forwarded-Proto: \"http\" } (\"https\" behind TLS)",
            "lb.sticky" => "Traefik sticks by cookie, not client address: services.<name>.loadBalancer.sticky.cookie: { name: openchamber_backend } (a browser keeps it)",
            "h2.headers" => "Remove customResponseHeaders (headers middleware) that set Connection, Keep-Alive, Proxy-Connection, Transfer-Encoding, Upgrade or TE",
            "h2.websocket" => "Traefik does not advertise extended CONNECT: browsers open HTTP/1.1 upgrades, which it passes",
            "tls.redirect" => "A redirectScheme middleware (scheme: https, permanent: true) on the plain entry point's router: Traefik 3.7 answers a POST with 308 (a GET with 301), which keeps the upload; no hand-written 301/302 redirect for POST routes",
            "browser.reconnect" => "No headers middleware with customRequestHeaders Last-Event-ID: \"\" on the router: Traefik passes the browser's Last-Event-ID to the backend, which resumes after it",
            _ => return None,
        })
    }

    fn smoke_config(&self) -> &'static str {
        "traefik/known-good.yml"
    }
}

/// The dynamic file serving the run's certificate: the `certFile`/`keyFile` it names point at
/// the run's files, or (when it names none) a `tls.certificates` entry is added.
fn with_certificate(dynamic: &str, files: &crate::tls::TlsFiles, r: &mut Rewriter) -> Result<String, String> {
    let cert = Regex::new(r#"(?m)^(\s*(?:-\s*)?certFile:\s*).*$"#).expect("static regex");
    let key = Regex::new(r#"(?m)^(\s*keyFile:\s*).*$"#).expect("static regex");
    if cert.is_match(dynamic) {
        let out = cert.replace_all(dynamic, |c: &Captures| format!("{}\"{}\"", &c[1], files.cert.display())).into_owned();
        let out = key.replace_all(&out, |c: &Captures| format!("{}\"{}\"", &c[1], files.key.display())).into_owned();
        r.note("tls certFile/keyFile -> the run's certificate and key".into());
        return Ok(out);
    }
    if Regex::new(r"(?m)^tls:").expect("static regex").is_match(dynamic) {
        return Err("the dynamic file has a top-level `tls:` without `certFile`: add the certificate there".into());
    }
    r.note("tls.certificates: the run's certificate added to the file provider".into());
    Ok(format!("{dynamic}\n# [proxy-suite] the run's certificate\ntls:\n  certificates:\n    - certFile: \"{}\"\n      keyFile: \"{}\"\n", files.cert.display(), files.key.display()))
}

#[cfg(test)]
mod tests {
    use super::super::tests::missing;

    const STATIC: &str = "entryPoints:\n  web:\n    address: \":80\"\nproviders:\n  file:\n    filename: site.dynamic.yml\n";

    #[test]
    fn a_traefik_config_without_dynamic_file_router_or_service_serves_nothing() {
        assert!(missing("traefik", &[("site.yml", STATIC)]).unwrap().contains("no dynamic file"));
        let no_router = "http:\n  services:\n    app:\n      loadBalancer:\n        servers:\n          - url: \"http://127.0.0.1:3000\"\n";
        assert!(missing("traefik", &[("site.yml", STATIC), ("site.dynamic.yml", no_router)]).unwrap().contains("no router"));
        let no_service = "http:\n  routers:\n    app:\n      rule: \"PathPrefix(`/`)\"\n      service: app\n";
        assert!(missing("traefik", &[("site.yml", STATIC), ("site.dynamic.yml", no_service)]).unwrap().contains("no service"));
        let both = format!("{no_service}{}", no_router.trim_start_matches("http:\n"));
        assert_eq!(missing("traefik", &[("site.yml", STATIC), ("site.dynamic.yml", &both)]), None);
    }
}
