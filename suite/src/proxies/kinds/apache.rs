//! Apache httpd: a site file (`<VirtualHost *:80>`), run inside a copy of Debian 12's
//! `/etc/apache2` as the package installs it (apache2.conf, mods-enabled, conf-enabled), with the
//! modules a proxy site needs enabled as `a2enmod` does; `<VirtualHost>` moves to the loopback
//! listener.

use std::ffi::OsString;
use std::path::Path;

use regex::{Captures, Regex};

use super::{capture, code_of, has_directive, ImageLayout, Layout, Mode, Placement, ProxyKind, RenderInput, Site, user_code, IN_IMAGE};
use crate::proxies::render::{write, Rendered, Rewriter};

pub static KIND: Apache = Apache;

pub struct Apache;

impl ProxyKind for Apache {
    fn name(&self) -> &'static str {
        "apache"
    }

    fn parse_version(&self, output: &str) -> Option<String> {
        capture(r"Apache/(\d+\.\d+\.\d+)", output)
    }

    fn render(&self, input: &RenderInput, r: &mut Rewriter) -> Result<Site, String> {
        let text = r.upstreams(input.text);
        let listen = r.listen();
        // Each <VirtualHost> to the run's plain port, or to its TLS port when it says
        // `SSLEngine on` (its certificate lines then name the run's files).
        let vhost = Regex::new(r"(?is)(<VirtualHost\s+[^>]*>)(.*?</VirtualHost>)").expect("static regex");
        let ssl_engine = Regex::new(r"(?im)^\s*SSLEngine\s+on\b").expect("static regex");
        let cert_line = Regex::new(r"(?im)^(\s*)(SSLCertificateFile|SSLCertificateKeyFile|SSLCertificateChainFile)\s+(.*)$").expect("static regex");
        let server_names = Regex::new(r"(?im)^\s*Server(?:Name|Alias)\s+(.+)$").expect("static regex");
        let names: Vec<String> = server_names.captures_iter(&code_of(&text)).flat_map(|c| c[1].split_whitespace().map(String::from).collect::<Vec<_>>()).filter(|n| n.contains('.') && !n.contains('*')).collect();
        let mut notes = Vec::new();
        let (mut plain, mut tls) = (false, false);
        let mut failure = None;
        let text = vhost.replace_all(&text, |c: &Captures| {
            if !ssl_engine.is_match(&c[2]) {
                plain = true;
                notes.push(format!("{} -> <VirtualHost {listen}>", &c[1]));
                return format!("<VirtualHost {listen}>{}", &c[2]);
            }
            tls = true;
            let (addr, files) = match r.tls_listen(&names) {
                Ok(t) => t,
                Err(e) => {
                    failure = Some(e);
                    return c[0].to_string();
                }
            };
            notes.push(format!("{} (SSLEngine on) -> <VirtualHost {addr}>", &c[1]));
            let body = cert_line.replace_all(&c[2], |l: &Captures| {
                notes.push(format!("{} {} -> the run's {}", &l[2], l[3].trim(), if l[2].eq_ignore_ascii_case("SSLCertificateKeyFile") { "key" } else { "certificate" }));
                match l[2].to_ascii_lowercase().as_str() {
                    "sslcertificatekeyfile" => format!("{}{} {}", &l[1], &l[2], files.key.display()),
                    "sslcertificatefile" => format!("{}{} {}", &l[1], &l[2], files.cert.display()),
                    _ => format!("{}# [proxy-suite] {} {} (the run's certificate needs no chain)", &l[1], &l[2], l[3].trim()),
                }
            });
            format!("<VirtualHost {addr}>{body}")
        });
        if let Some(e) = failure {
            return Err(e);
        }
        for n in notes {
            r.note(n);
        }
        if tls && !plain {
            r.tls_only();
        }
        let protocols = Regex::new(r"(?im)^\s*Protocols\s+.*\bh2\b").expect("static regex");
        if tls && protocols.is_match(&code_of(&text)) {
            r.offer_h2();
        }
        let tls_listen = tls.then(|| r.tls_listen(&[]).map(|(a, _)| a.to_string())).transpose()?;
        let listen_re = Regex::new(r"(?im)^(\s*)(Listen\s+.*)$").expect("static regex");
        let text = listen_re.replace_all(&text, "$1# [proxy-suite] $2").into_owned();
        let server_name = Regex::new(r"(?im)^\s*ServerName\s+(\S+)").expect("static regex");
        let host = server_name.captures(&text).map(|c| c[1].to_string()).unwrap_or_else(|| input.default_host.clone());
        if input.distribution == Some(IN_IMAGE) {
            // The image's own config around it, with what `image_files` adds.
            let site = input.prefix.join("site.conf");
            write(&site, &text)?;
            r.note("inside the image's own Apache config".into());
            return Ok(Site { main: site.clone(), host, admin_port: None, user_files: vec![site] });
        }
        let root = input.prefix.join(SERVER_ROOT);
        let mut modules = vec!["proxy", "proxy_http", "proxy_wstunnel", "headers", "rewrite"];
        if tls {
            modules.extend(["ssl", "http2"]);
        }
        debian_tree(Path::new(DEBIAN_ETC), &root, &modules)?;
        let site = root.join("sites-enabled").join("site.conf");
        write(&site, &text)?;
        let mut ports = format!("# proxy-suite: was `Listen 80` (and `Listen 443` with mod_ssl): the run's addresses\nListen {listen}\n");
        if let Some(tls_listen) = &tls_listen {
            ports.push_str(&format!("Listen {tls_listen}\n"));
        }
        write(&root.join("ports.conf"), &ports)?;
        let logs = input.prefix.join("logs");
        let main = root.join("proxy-suite.conf");
        write(&main, &envvars(&logs))?;
        r.note(format!(
            "wrapped in Debian's {DEBIAN_ETC} (apache2.conf, mods-enabled, conf-enabled as installed; `a2enmod {}`; ports.conf -> the run's Listen; sites-enabled -> the site under test; envvars -> the prefix)",
            modules.join(" ")
        ));
        Ok(Site { main, host, admin_port: None, user_files: vec![site] })
    }

    fn missing_route(&self, rendered: &Rendered) -> Option<String> {
        let code = user_code(rendered);
        let rewrite_proxy = Regex::new(r"(?im)^\s*RewriteRule\s.*\[[^\]]*\bP\b").expect("static regex");
        (!has_directive(&code, "ProxyPass", true) && !has_directive(&code, "ProxyPassMatch", true) && !rewrite_proxy.is_match(&code))
            .then(|| "no `ProxyPass` (or `RewriteRule ... [P]`): nothing sends requests to the backend".to_string())
    }

    fn args(&self, mode: Mode, rendered: &Rendered, prefix: &Path) -> Option<Vec<OsString>> {
        let switch = if mode == Mode::Validate { "-t" } else { "-DFOREGROUND" };
        Some(vec![switch.into(), "-f".into(), rendered.main.clone().into_os_string(), "-d".into(), prefix.join(SERVER_ROOT).into_os_string()])
    }

    fn images(&self) -> Vec<ImageLayout> {
        vec![
            // The official httpd image: one httpd.conf (no sites folder), mod_proxy and
            // mod_proxy_http present but not loaded; users mount an edited httpd.conf.
            ImageLayout { image: "httpd", layout: Layout::Official, config: "/usr/local/apache2/conf/httpd.conf", placement: Placement::Generated, marker: "/usr/local/apache2/conf", logs: "/usr/local/apache2/logs", binary: "/usr/local/apache2/bin/httpd" },
            // Debian's apache2 package: the site in sites-enabled/, modules by a2enmod.
            ImageLayout { image: "debian + apache2 package", layout: Layout::Debian, config: "/etc/apache2/sites-enabled/000-default.conf", placement: Placement::Site, marker: "/etc/apache2/apache2.conf", logs: "/var/log/apache2", binary: "/usr/sbin/apache2" },
        ]
    }

    /// What users add to the image's config for a proxying site: the modules (`a2enmod proxy
    /// proxy_http proxy_wstunnel headers rewrite`, and `ssl http2` for a TLS site) and a
    /// `Listen` for each of the site's ports. Debian: a conf-enabled file (included before
    /// sites-enabled). Official httpd: its own httpd.conf (`image_config`, read from the
    /// image) with those lines and an `Include` of the site appended.
    fn image_files(&self, layout: &ImageLayout, rendered: &Rendered, listen: &[std::net::SocketAddr], image_config: Option<&str>) -> Vec<(String, String)> {
        let modules_dir = match layout.layout {
            Layout::Debian => "/usr/lib/apache2/modules",
            Layout::Official => "modules",
        };
        let mut modules = vec!["proxy", "proxy_http", "proxy_wstunnel", "headers", "rewrite"];
        if rendered.tls.is_some() {
            modules.extend(["socache_shmcb", "ssl", "http2"]);
        }
        let mut text = String::from("# proxy-suite: what a user adds for a proxying site (a2enmod and a Listen per port)\n");
        for m in modules {
            text.push_str(&format!("<IfModule !{m}_module>\n  LoadModule {m}_module {modules_dir}/mod_{m}.so\n</IfModule>\n"));
        }
        if layout.layout == Layout::Debian && rendered.tls.is_some() {
            // As `a2enmod ssl http2` enables them (APACHE_RUN_DIR comes from envvars).
            text.push_str("Include /etc/apache2/mods-available/ssl.conf\nInclude /etc/apache2/mods-available/http2.conf\n");
        }
        for addr in listen {
            text.push_str(&format!("Listen {addr}\n"));
        }
        let site = rendered.user_files.first().map(|p| p.display().to_string()).unwrap_or_default();
        match layout.layout {
            Layout::Debian => vec![("/etc/apache2/conf-enabled/proxy-suite.conf".into(), text)],
            Layout::Official => {
                let own = image_config.unwrap_or("# proxy-suite: the image's httpd.conf could not be read\n");
                vec![(layout.config.into(), format!("{own}\n{text}Include {site}\n"))]
            }
        }
    }

    fn fix(&self, check_id: &str) -> Option<&'static str> {
        Some(match check_id {
            "ws.upgrade" | "ws.terminal" => "ProxyPass / http://127.0.0.1:3000/ upgrade=websocket (mod_proxy_http, httpd 2.4.47+)",
            "ws.idle" => "ProxyTimeout 3600 and Timeout 3600 (an upgraded tunnel idles up to the larger), with ProxyPass ... upgrade=websocket",
            "sse.stream" => "Keep mod_deflate off the SSE routes: SetEnv no-gzip 1 (mod_proxy_http itself flushes as the backend writes)",
            "sse.headers" => "SetEnv no-gzip 1, and no Header set on Content-Type or Cache-Control for the SSE routes",
            "sse.idle" | "http.slow" => "ProxyTimeout 3600 (it defaults to Timeout: 60 s compiled in, 300 s on Debian)",
            "body.large" => "LimitRequestBody 104857600 (or 0) in the VirtualHost",
            "body.streaming" => "RequestReadTimeout header=20-40,minrate=500 body=0 (Debian's mod_reqtimeout cuts a paused upload), and no SetEnv proxy-sendcl",
            "compress.single" => "SetEnv no-gzip 1 where the backend already compresses (Debian enables mod_deflate)",
            "compress.sse" => "SetEnv no-gzip 1 (at least on the SSE routes: SetEnvIf Request_URI \"(event|stream)\" no-gzip)",
            "headers.forwarded" => "ProxyPreserveHost On; ProxyAddHeaders On; RequestHeader set X-Forwarded-Proto \"expr=%{REQUEST_SCHEME}\"; RequestHeader set X-Real-IP \"expr=%{REMOTE_ADDR}\"",
            "auth.origin" => "ProxyPreserveHost On (else Host becomes the backend's address) and RequestHeader set X-Forwarded-Proto \"expr=%{REQUEST_SCHEME}\"",
            "lb.sticky" => "mod_proxy_balancer has no client-address hashing: stick by cookie, <Proxy balancer://app> BalancerMember http://127.0.0.1:3000 route=1 ... ProxySet stickysession=ROUTEID </Proxy> with Header add Set-Cookie \"ROUTEID=.%{BALANCER_WORKER_ROUTE}e; path=/\" env=BALANCER_ROUTE_CHANGED",
            "h2.headers" => "Remove Header set/always set lines for Connection, Keep-Alive, Proxy-Connection, Transfer-Encoding, Upgrade or TE (Header unset Upgrade for a backend that sends it, e.g. another Apache with Protocols h2c)",
            "h2.websocket" => "Apache advertises WebSocket over HTTP/2 only with H2WebSockets on (mod_http2): with it, keep ProxyPass ... upgrade=websocket on the WebSocket routes, or leave H2WebSockets off",
            "tls.redirect" => "Redirect 308 / https://openchamber.example.com/ in the plain <VirtualHost *:80> (Redirect permanent is 301)",
            "browser.reconnect" => "No RequestHeader unset Last-Event-ID (or set) on the SSE routes: mod_proxy passes the browser's Last-Event-ID to the backend, which resumes after it",
            _ => return None,
        })
    }

    fn smoke_config(&self) -> &'static str {
        "apache/known-good.conf"
    }
}

/// Where Debian's apache2 package installs its configuration: the outer context of every site.
const DEBIAN_ETC: &str = "/etc/apache2";
/// The copy of it in a run's prefix (the server root, as /etc/apache2 is Debian's).
const SERVER_ROOT: &str = "apache2";

/// Copies Debian's configuration tree as installed into `root`: `apache2.conf`, `magic`, and the
/// modules and confs the package enables (`mods-enabled`, `conf-enabled`, their links followed),
/// then enables `modules` as `a2enmod` does (with the modules each `.load` says it depends on).
/// `sites-enabled` starts empty (Debian's 000-default disabled, as `a2dissite` does): the site
/// under test is the only one.
fn debian_tree(etc: &Path, root: &Path, modules: &[&str]) -> Result<(), String> {
    let copy = |from: &Path, to: &Path| {
        std::fs::copy(from, to).map(|_| ()).map_err(|e| format!("cannot copy {} (Debian's apache2 package): {e}", from.display()))
    };
    for dir in ["mods-enabled", "conf-enabled", "sites-enabled"] {
        std::fs::create_dir_all(root.join(dir)).map_err(|e| format!("cannot create {}: {e}", root.join(dir).display()))?;
    }
    for file in ["apache2.conf", "magic"] {
        copy(&etc.join(file), &root.join(file))?;
    }
    for dir in ["mods-enabled", "conf-enabled"] {
        let entries = std::fs::read_dir(etc.join(dir)).map_err(|e| format!("cannot read {}: {e} (is Debian's apache2 installed?)", etc.join(dir).display()))?;
        for entry in entries.flatten() {
            copy(&entry.path(), &root.join(dir).join(entry.file_name()))?;
        }
    }
    let depends = Regex::new(r"(?m)^#\s*Depends:\s*(.+)$").expect("static regex");
    let mut wanted: Vec<String> = modules.iter().map(|m| m.to_string()).collect();
    while let Some(module) = wanted.pop() {
        let load = root.join("mods-enabled").join(format!("{module}.load"));
        if load.exists() {
            continue;
        }
        let available = etc.join("mods-available");
        let text = std::fs::read_to_string(available.join(format!("{module}.load")))
            .map_err(|e| format!("cannot enable module {module}: {}: {e}", available.join(format!("{module}.load")).display()))?;
        write(&load, &text)?;
        let conf = available.join(format!("{module}.conf"));
        if conf.exists() {
            copy(&conf, &root.join("mods-enabled").join(format!("{module}.conf")))?;
        }
        if let Some(c) = depends.captures(&text) {
            wanted.extend(c[1].split_whitespace().map(String::from));
        }
    }
    Ok(())
}

/// The run's main file: what `/etc/apache2/envvars` exports (apache2ctl reads it; `apache2 -f`
/// does not), pointed into the run's prefix, then Debian's `apache2.conf` unchanged.
fn envvars(logs: &Path) -> String {
    let logs = logs.display();
    format!(
        "# proxy-suite: /etc/apache2/envvars, with the run, lock and log directories in the prefix\n\
         Define APACHE_RUN_USER www-data\n\
         Define APACHE_RUN_GROUP www-data\n\
         Define APACHE_PID_FILE {logs}/apache2.pid\n\
         Define APACHE_RUN_DIR {logs}\n\
         Define APACHE_LOCK_DIR {logs}\n\
         Define APACHE_LOG_DIR {logs}\n\
         Include apache2.conf\n"
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::missing;

    #[test]
    fn an_apache_site_without_proxypass_serves_nothing() {
        let vhost = |body: &str| format!("<VirtualHost *:80>\n{body}\n</VirtualHost>\n");
        assert!(missing("apache", &[("a.conf", &vhost("\tDocumentRoot /var/www"))]).unwrap().contains("ProxyPass"));
        assert!(missing("apache", &[("a.conf", &vhost("\tProxyPassReverse / http://127.0.0.1:3000/"))]).is_some());
        assert_eq!(missing("apache", &[("a.conf", &vhost("\tProxyPass / http://127.0.0.1:3000/"))]), None);
        assert_eq!(missing("apache", &[("a.conf", &vhost("\tRewriteEngine On\n\tRewriteRule ^/(.*) http://127.0.0.1:3000/$1 [P,L]"))]), None);
    }
}
