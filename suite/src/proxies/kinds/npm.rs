//! Nginx Proxy Manager: the text of a proxy host's Advanced tab, put into the proxy-host server
//! block NPM 2.15 generates (with its "Websockets Support" switch from `# websockets:`), inside
//! NPM's own `nginx.conf`, and run on the newest nginx available here (NPM itself ships only as
//! a container image; results say which nginx ran it).

use std::ffi::OsString;
use std::path::Path;

use regex::Regex;

use super::{user_code, ImageLayout, Layout, Mode, Placement, ProxyKind, RenderInput, RunsOn, Site, IN_IMAGE};
use crate::proxies::render::{fill, read_context, strip_header, write, Rendered, Rewriter};

pub static KIND: Npm = Npm;

pub struct Npm;

/// NPM's own test for an Advanced text that replaces its `location /`
/// (`location = /...` does not count).
const ROOT_LOCATION: &str = r"(?im)^(?:.*;)?\s*?location\s*?/\s*?\{";

impl ProxyKind for Npm {
    fn name(&self) -> &'static str {
        "npm"
    }

    fn parse_version(&self, output: &str) -> Option<String> {
        super::nginx::KIND.parse_version(output)
    }

    fn runs_on(&self) -> Option<RunsOn> {
        Some(RunsOn { base: "nginx", pinned: "2.15 (generated config)" })
    }

    fn render(&self, input: &RenderInput, r: &mut Rewriter) -> Result<Site, String> {
        let (config, prefix, host) = (input.config, input.prefix, input.default_host.clone());
        let advanced = r.upstreams(&strip_header(input.text));
        let has_root = Regex::new(ROOT_LOCATION).expect("static regex").is_match(&advanced);
        let dir = input.context_root.join("npm/_context");
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
            // NPM's image has its includes in conf.d/include; elsewhere they are the context's.
            site_includes_dir => if input.distribution == Some(IN_IMAGE) { "/etc/nginx/conf.d/include".to_string() } else { prefix.display().to_string() },
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
            let mime = input.context_root.join("nginx/_context/mime.types");
            std::fs::copy(&mime, prefix.join("mime.types")).map_err(|e| format!("cannot copy {}: {e}", mime.display()))?;
        }
        let site = site.ok_or("npm/_context has no proxy-host template (*.j2)")?;
        // NPM's nginx.conf includes the proxy host; render it knowing the site path.
        let main_template = read_context(&dir.join("nginx.conf"))?;
        let vars = minijinja::context! { site => site.display().to_string(), ..vars };
        let main = prefix.join("nginx.conf");
        write(&main, &fill(&main_template, &vars)?)?;
        Ok(Site { main, host, admin_port: None, user_files: vec![site] })
    }

    /// The generated proxy host proxies by itself; only an Advanced text that replaces its
    /// `location /` with one that has no `proxy_pass` serves nothing.
    fn missing_route(&self, rendered: &Rendered) -> Option<String> {
        // NPM's own `location /` proxies through its included proxy.conf.
        let code = user_code(rendered);
        let includes_proxy_conf = Regex::new(r"(?m)^\s*include\s+\S*/proxy\.conf;").expect("static regex").is_match(&code);
        (!includes_proxy_conf && super::nginx::missing_proxy_pass(&code).is_some())
            .then(|| "no `proxy_pass`: the Advanced tab replaces NPM's `location /` with one that sends nothing to the backend".to_string())
    }

    fn args(&self, mode: Mode, rendered: &Rendered, prefix: &Path) -> Option<Vec<OsString>> {
        Some(super::nginx::args(mode, rendered, prefix))
    }

    fn images(&self) -> Vec<ImageLayout> {
        // NPM writes one file per proxy host, included by its nginx.conf; OpenResty is
        // installed as nginx.
        vec![ImageLayout { image: "jc21/nginx-proxy-manager", layout: Layout::Official, config: "/data/nginx/proxy_host/1.conf", placement: Placement::Site, marker: "/data/nginx/proxy_host", logs: "/data/logs", binary: "/usr/sbin/nginx" }]
    }

    fn fix(&self, check_id: &str) -> Option<&'static str> {
        Some(match check_id {
            "ws.upgrade" | "ws.terminal" => "Turn on \"Websockets Support\" on the proxy host (NPM then writes the Upgrade/Connection headers and proxy_http_version 1.1 itself; do not repeat proxy_http_version in the Advanced tab)",
            "ws.idle" => "Advanced tab: proxy_read_timeout 3600s; proxy_send_timeout 3600s; (NPM's nginx.conf sets 90 s)",
            "sse.stream" => "Advanced tab: proxy_buffering off; proxy_cache off; gzip off; (plain directives there are inherited by NPM's location /)",
            "sse.headers" => "Advanced tab: gzip off; proxy_buffering off; (NPM's nginx.conf turns gzip on)",
            "sse.idle" => "Advanced tab: proxy_read_timeout 3600s; (NPM's nginx.conf sets 90 s)",
            "http.slow" => "Advanced tab: proxy_read_timeout 3600s; proxy_send_timeout 3600s; (NPM's nginx.conf sets 90 s)",
            "body.large" => "Advanced tab: client_max_body_size 50M; or remove a smaller one (NPM's nginx.conf allows 2000m)",
            "body.streaming" => "Advanced tab: proxy_request_buffering off;",
            "compress.single" => "Advanced tab: gzip off; (NPM's nginx.conf turns gzip on; the backend already compresses)",
            "compress.sse" => "Advanced tab: gzip off;",
            "headers.forwarded" => "NPM sends no X-Forwarded-Host, and a proxy_set_header in the Advanced tab is dropped inside NPM's own location /: give the Advanced tab its own location / { proxy_set_header Host $host; proxy_set_header X-Forwarded-Host $host; proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Real-IP $remote_addr; proxy_pass $forward_scheme://$server:$port$request_uri; }",
            "auth.origin" => "Websockets Support on, and any location in the Advanced tab that sets a header must also set proxy_set_header Host $host; X-Forwarded-Host $host; X-Forwarded-Proto $scheme; (one proxy_set_header drops every inherited one)",
            "lb.sticky" => "An NPM proxy host forwards to one host and port: put several backends behind an nginx upstream with ip_hash (or a single backend)",
            "h2.headers" => "In the Advanced tab, add no hop-by-hop header (no add_header Connection/Keep-Alive/Upgrade/Transfer-Encoding/TE); for a backend that sends them: proxy_hide_header Proxy-Connection; proxy_hide_header TE; proxy_hide_header Upgrade;",
            "h2.websocket" => "NPM runs nginx, which does not implement WebSocket over HTTP/2 (RFC 8441): browsers open HTTP/1.1 upgrades (Websockets Support on)",
            "tls.redirect" => "NPM's Force SSL answers 301: turn it off and put if ($scheme = \"http\") { return 308 https://$host$request_uri; } in the Advanced tab",
            "browser.reconnect" => "Advanced tab: no proxy_set_header Last-Event-ID \"\"; (NPM's generated location passes the browser's Last-Event-ID to the backend, which resumes after it)",
            _ => return None,
        })
    }

    fn smoke_config(&self) -> &'static str {
        "npm/first-try.conf"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::tests::missing;

    #[test]
    fn an_advanced_root_location_without_proxy_pass_serves_nothing() {
        assert_eq!(missing("npm", &[("a.conf", "# websockets: on\n")]), None);
        assert!(missing("npm", &[("a.conf", "location / {\n  return 200;\n}\n")]).unwrap().contains("Advanced tab"));
    }

    #[test]
    fn root_location_regex_matches_as_npm_does() {
        let re = Regex::new(ROOT_LOCATION).unwrap();
        assert!(re.is_match("gzip off;\nlocation / { proxy_pass x; }"));
        assert!(!re.is_match("location = /api/event { proxy_pass x; }"));
        assert!(!re.is_match("location /api { proxy_pass x; }"));
    }
}
