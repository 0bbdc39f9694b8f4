//! Envoy: the bootstrap YAML read with line numbers (every listener's
//! `http_connection_manager` with its inline `route_config` and routes), and from it the line
//! behind each failed check: no `upgrade_configs` (WebSocket handshakes refused), a route
//! without `timeout` (the default 15 s ends every slower response and stream), a short
//! `stream_idle_timeout`, no `use_remote_address` / X-Forwarded-Host / X-Real-IP, and
//! `allow_connect` on HTTP/2 (extended CONNECT the backend refuses). The edits are those of
//! `proxy-configs/envoy/known-good.yaml`, in place.

use std::time::Duration;

use super::yaml::{self, Node};
use super::{too_short, Cause, Correction, Situation};

/// One `http_connection_manager` filter: where it is written, its settings, and its routes.
struct Manager<'a> {
    /// The line of the filter's `name`.
    line: usize,
    /// Its `typed_config`.
    config: &'a Node,
    /// The inline `route_config` (none: routes come from RDS, which the file does not show).
    route_config: Option<&'a Node>,
    /// Every route entry (`match` and `route`) of every virtual host.
    routes: Vec<&'a Node>,
}

fn managers(root: &Node) -> Vec<Manager<'_>> {
    let mut out = Vec::new();
    for listener in yaml::items(yaml::get(root, &["static_resources", "listeners"])) {
        for chain in yaml::items(yaml::get(listener, &["filter_chains"])) {
            for filter in yaml::items(yaml::get(chain, &["filters"])) {
                let name = yaml::text(yaml::get(filter, &["name"])).unwrap_or("");
                let Some(config) = yaml::get(filter, &["typed_config"]) else { continue };
                let kind = yaml::text(yaml::get(config, &["@type"])).unwrap_or("");
                if !name.contains("http_connection_manager") && !kind.ends_with("HttpConnectionManager") {
                    continue;
                }
                let line = filter.as_mapping().and_then(|m| yaml::key_line(m, "name")).unwrap_or_else(|| yaml::line(filter));
                let route_config = yaml::get(config, &["route_config"]);
                let routes = route_config
                    .map(|rc| yaml::items(yaml::get(rc, &["virtual_hosts"])).flat_map(|vh| yaml::items(yaml::get(vh, &["routes"]))).filter(|r| yaml::get(r, &["route"]).is_some()).collect())
                    .unwrap_or_default();
                out.push(Manager { line, config, route_config, routes });
            }
        }
    }
    out
}

/// Envoy's duration in YAML: `15s`, `0.5s`, `3600s` (the JSON form of the proto Duration).
fn duration(text: &str) -> Option<Duration> {
    text.trim().strip_suffix('s').and_then(|n| n.parse::<f64>().ok()).filter(|n| *n >= 0.0).map(Duration::from_secs_f64)
}

/// A timeout that is set and cuts before the idle period ends (0s: none).
fn cuts(node: Option<&Node>, idle: Duration) -> bool {
    yaml::text(node).and_then(duration).is_some_and(|d| !d.is_zero() && too_short(d, idle))
}

fn websocket(node: Option<&Node>) -> bool {
    yaml::items(node).any(|u| yaml::text(yaml::get(u, &["upgrade_type"])).is_some_and(|t| t.eq_ignore_ascii_case("websocket")) && yaml::text(yaml::get(u, &["enabled"])) != Some("false"))
}

impl Manager<'_> {
    fn upgrades(&self) -> bool {
        websocket(yaml::get(self.config, &["upgrade_configs"])) || (!self.routes.is_empty() && self.routes.iter().all(|r| websocket(yaml::get(r, &["route", "upgrade_configs"]))))
    }

    /// The stream idle timeout in force: the manager's, 5 minutes by default.
    fn stream_idle_cuts(&self, idle: Duration) -> bool {
        match yaml::get(self.config, &["stream_idle_timeout"]) {
            Some(n) => cuts(Some(n), idle),
            None => too_short(Duration::from_secs(300), idle),
        }
    }

    /// Whether a request header is added at the route config, virtual host or route level.
    fn adds(&self, header: &str) -> bool {
        let Some(rc) = self.route_config else { return false };
        let levels = std::iter::once(rc).chain(yaml::items(yaml::get(rc, &["virtual_hosts"]))).chain(self.routes.iter().copied());
        levels.flat_map(|l| yaml::items(yaml::get(l, &["request_headers_to_add"]))).any(|h| yaml::text(yaml::get(h, &["header", "key"])).is_some_and(|k| k.eq_ignore_ascii_case(header)))
    }

    fn remote_address(&self) -> bool {
        yaml::text(yaml::get(self.config, &["use_remote_address"])) == Some("true")
    }

    /// `http2_protocol_options.allow_connect: true`, by its line.
    fn allow_connect(&self) -> Option<usize> {
        let options = yaml::get(self.config, &["http2_protocol_options"])?;
        (yaml::text(yaml::get(options, &["allow_connect"])) == Some("true")).then(|| options.as_mapping().and_then(|m| yaml::key_line(m, "allow_connect"))).flatten()
    }
}

fn text_of(text: &str, line: usize) -> String {
    text.lines().nth(line - 1).unwrap_or("").trim().to_string()
}

/// The line of `key` in a mapping node, else the node's own first line.
fn line_of(node: &Node, key: &str) -> usize {
    node.as_mapping().and_then(|m| yaml::key_line(m, key)).unwrap_or_else(|| yaml::line(node))
}

pub fn causes(s: &Situation, failed: &[&str]) -> Result<Vec<Cause>, String> {
    let root = yaml::parse(s.text)?;
    let all = managers(&root);
    let mut out = Vec::new();
    let mut at = |check: &str, line: usize, why: String| {
        let c = Cause { check: check.into(), file: s.config.path.clone(), line, text: text_of(s.text, line), why };
        if !out.contains(&c) {
            out.push(c);
        }
    };
    let idle = s.idle.as_secs();
    for check in failed {
        for m in &all {
            if matches!(*check, "ws.upgrade" | "ws.terminal" | "ws.idle" | "auth.origin") && !m.upgrades() {
                at(check, m.line, "no `upgrade_configs: [{upgrade_type: websocket}]` on this http_connection_manager: Envoy refuses every WebSocket handshake (403), so no socket opens".into());
            }
            if matches!(*check, "ws.idle" | "sse.idle") && m.stream_idle_cuts(s.idle) {
                let line = m.config.as_mapping().and_then(|c| yaml::key_line(c, "stream_idle_timeout")).unwrap_or(m.line);
                at(check, line, format!("the stream idle timeout (5 min unless set) is not longer than the {idle}s idle period: Envoy resets the silent stream"));
            }
            if matches!(*check, "sse.idle" | "http.slow") {
                for r in m.routes.iter().copied() {
                    let route = yaml::get(r, &["route"]).unwrap_or(r);
                    match yaml::get(route, &["timeout"]) {
                        None => at(check, yaml::line(r), "no `timeout` on this route: Envoy's default 15 s ends any response that takes longer (504 upstream request timeout), an event stream included".into()),
                        Some(t) if cuts(Some(t), s.idle) => at(check, line_of(route, "timeout"), format!("the route timeout is not longer than the {idle}s idle period: Envoy answers 504 or ends the stream")),
                        Some(_) => {}
                    }
                    if cuts(yaml::get(route, &["idle_timeout"]), s.idle) {
                        at(check, line_of(route, "idle_timeout"), format!("the route idle_timeout is not longer than the {idle}s idle period"));
                    }
                }
            }
            if *check == "headers.forwarded" {
                if !m.remote_address() {
                    let line = m.config.as_mapping().and_then(|c| yaml::key_line(c, "use_remote_address")).unwrap_or(m.line);
                    at(check, line, "no `use_remote_address: true`: Envoy does not take the client's address as X-Forwarded-For (nor X-Forwarded-Proto from the connection)".into());
                }
                let missing: Vec<&str> = ["X-Real-IP", "X-Forwarded-Host"].into_iter().filter(|h| !m.adds(h)).collect();
                if !missing.is_empty() {
                    let line = if m.route_config.is_some() { line_of(m.config, "route_config") } else { m.line };
                    at(check, line, format!("no request_headers_to_add for {}: Envoy sets neither by itself", missing.join(" or ")));
                }
            }
            if *check == "h2.websocket" {
                if let Some(line) = m.allow_connect() {
                    at(check, line, "allow_connect advertises extended CONNECT, which Envoy turns into an HTTP/1.1 upgrade without Sec-WebSocket-Key: the backend refuses it (400)".into());
                }
            }
        }
    }
    Ok(out)
}

pub fn correct(s: &Situation, failed: &[&str]) -> Result<Correction, String> {
    let root = yaml::parse(s.text)?;
    let all = managers(&root);
    let step = yaml::step(&root);
    let mut c = Correction::default();
    let mut edits = Vec::new();
    // A manager key goes after `stat_prefix`, where known-good.yaml has its settings.
    let manager_key = |edits: &mut Vec<super::Edit>, m: &Manager, key: &str, block: &[&str]| -> bool {
        if yaml::get(m.config, &[key]).is_some() {
            return false;
        }
        match yaml::add_to_mapping(s.text, m.config, Some("stat_prefix"), &yaml::nest(block, 0, step)) {
            Some(e) => {
                edits.push(e);
                true
            }
            None => false,
        }
    };
    for check in failed {
        let mut did = Vec::new();
        for m in &all {
            if matches!(*check, "ws.upgrade" | "ws.terminal" | "ws.idle" | "auth.origin") && !m.upgrades() && manager_key(&mut edits, m, "upgrade_configs", &["upgrade_configs:", "- upgrade_type: websocket"]) {
                did.push("upgrade_configs: [{upgrade_type: websocket}] on the http_connection_manager".to_string());
            }
            if matches!(*check, "ws.idle" | "sse.idle") && m.stream_idle_cuts(s.idle) {
                match m.config.as_mapping().and_then(|c| yaml::key_line(c, "stream_idle_timeout")) {
                    Some(line) => edits.push(super::Edit::Replace { line, lines: vec![format!("{}stream_idle_timeout: 3600s", yaml::indent_of(s.text, line))] }),
                    None => {
                        manager_key(&mut edits, m, "stream_idle_timeout", &["stream_idle_timeout: 3600s"]);
                    }
                }
                did.push("stream_idle_timeout: 3600s".into());
            }
            if matches!(*check, "sse.idle" | "http.slow") {
                for r in m.routes.iter().copied() {
                    let Some(route) = yaml::get(r, &["route"]) else { continue };
                    for (key, value) in [("timeout", "0s"), ("idle_timeout", "3600s")] {
                        match yaml::get(route, &[key]) {
                            None if key == "timeout" => {
                                if let Some(e) = yaml::add_to_mapping(s.text, route, None, &[format!("{key}: {value}")]) {
                                    edits.push(e);
                                    did.push(format!("route {key}: {value}"));
                                }
                            }
                            Some(t) if cuts(Some(t), s.idle) => {
                                let line = line_of(route, key);
                                edits.push(super::Edit::Replace { line, lines: vec![format!("{}{key}: {value}", yaml::indent_of(s.text, line))] });
                                did.push(format!("route {key}: {value}"));
                            }
                            _ => {}
                        }
                    }
                }
            }
            if *check == "headers.forwarded" {
                match m.config.as_mapping().and_then(|c| yaml::key_line(c, "use_remote_address")) {
                    _ if m.remote_address() => {}
                    Some(line) => edits.push(super::Edit::Replace { line, lines: vec![format!("{}use_remote_address: true", yaml::indent_of(s.text, line))] }),
                    None => {
                        manager_key(&mut edits, m, "use_remote_address", &["use_remote_address: true"]);
                    }
                }
                // Envoy's own append writes its host's non-loopback address for a loopback
                // peer: append the peer explicitly instead (known-good.yaml).
                manager_key(&mut edits, m, "skip_xff_append", &["skip_xff_append: true"]);
                let entries: Vec<Vec<String>> = [("X-Forwarded-For", "APPEND_IF_EXISTS_OR_ADD", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"), ("X-Real-IP", "OVERWRITE_IF_EXISTS_OR_ADD", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"), ("X-Forwarded-Host", "OVERWRITE_IF_EXISTS_OR_ADD", "%REQ(:AUTHORITY)%")]
                    .into_iter()
                    .filter(|(h, _, _)| !m.adds(h))
                    .map(|(h, action, value)| yaml::nest(&["header:", &format!("{}key: {h}", " ".repeat(step)), &format!("{}value: \"{value}\"", " ".repeat(step)), &format!("append_action: {action}")], 0, step))
                    .collect();
                if let Some(rc) = m.route_config.filter(|_| !entries.is_empty()) {
                    match yaml::get(rc, &["request_headers_to_add"]).and_then(Node::as_sequence) {
                        Some(seq) => edits.extend(yaml::add_to_sequence(s.text, seq, &entries)),
                        None => {
                            let mut block = vec!["request_headers_to_add:".to_string()];
                            for e in &entries {
                                block.extend(e.iter().enumerate().map(|(i, l)| if i == 0 { format!("- {l}") } else { format!("  {l}") }));
                            }
                            edits.extend(yaml::add_to_mapping(s.text, rc, Some("name"), &block));
                        }
                    }
                }
                did.push("use_remote_address: true, skip_xff_append: true and request_headers_to_add X-Forwarded-For, X-Real-IP, X-Forwarded-Host (route_config)".into());
            }
            if *check == "h2.websocket" {
                if let Some(line) = m.allow_connect() {
                    let options = yaml::get(m.config, &["http2_protocol_options"]).and_then(Node::as_mapping);
                    // The options block goes with its only setting.
                    if let Some(block) = options.filter(|o| o.len() == 1).and_then(|_| m.config.as_mapping().and_then(|c| yaml::key_line(c, "http2_protocol_options"))) {
                        edits.push(super::Edit::Replace { line: block, lines: Vec::new() });
                    }
                    edits.push(super::Edit::Replace { line, lines: Vec::new() });
                    did.push("allow_connect removed (browsers open HTTP/1.1 upgrades, which Envoy passes)".into());
                }
            }
        }
        c.record(check, did);
    }
    yaml::order(&mut edits);
    c.edits = edits;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxies::ConfigFile;

    #[test]
    fn first_try_names_the_manager_the_route_and_the_route_config() {
        let path = crate::proxies::config::default_root().join("envoy/first-try.yaml");
        let config = ConfigFile::load(&path, None).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let failed = ["ws.upgrade", "sse.idle", "http.slow", "headers.forwarded"];
        let found = causes(&Situation::alone(&config, &text), &failed).unwrap();
        let lines = |check: &str| found.iter().filter(|c| c.check == check).map(|c| c.line).collect::<Vec<_>>();
        assert_eq!(lines("ws.upgrade"), vec![19], "{found:?}");
        assert_eq!(found[0].text, "- name: envoy.filters.network.http_connection_manager");
        assert_eq!(lines("http.slow"), vec![37], "{found:?}");
        assert_eq!(lines("headers.forwarded"), vec![19, 31], "{found:?}");
        let c = correct(&Situation::alone(&config, &text), &failed).unwrap();
        assert!(c.unfixed.is_empty(), "{:?}", c.unfixed);
        let fixed = super::super::apply(&text, &c.edits);
        assert!(fixed.contains("          stat_prefix: ingress_http\n          upgrade_configs:\n          - upgrade_type: websocket\n"), "{fixed}");
        assert!(fixed.contains("                  cluster: openchamber\n                  timeout: 0s\n"), "{fixed}");
        assert!(fixed.contains("            name: local_route\n            request_headers_to_add:\n            - header:\n                key: X-Forwarded-For\n"), "{fixed}");
        // What known-good.yaml says, read back: no cause left.
        let root = yaml::parse(&fixed).unwrap();
        let m = &managers(&root)[0];
        assert!(m.upgrades() && m.remote_address() && m.adds("X-Forwarded-Host") && m.adds("X-Real-IP"));
        assert_eq!(causes(&Situation::alone(&config, &fixed), &failed).unwrap(), vec![]);
    }

    #[test]
    fn allow_connect_is_named_and_removed_with_its_block() {
        let path = crate::proxies::config::default_root().join("envoy/neg-h2-websocket.yaml");
        let config = ConfigFile::load(&path, None).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let found = causes(&Situation::alone(&config, &text), &["h2.websocket"]).unwrap();
        assert_eq!(found.iter().map(|c| (c.line, c.text.as_str())).collect::<Vec<_>>(), vec![(100, "allow_connect: true")]);
        let fixed = super::super::apply(&text, &correct(&Situation::alone(&config, &text), &["h2.websocket"]).unwrap().edits);
        let root = yaml::parse(&fixed).unwrap();
        assert!(managers(&root).iter().all(|m| yaml::get(m.config, &["http2_protocol_options"]).is_none()), "{fixed}");
        assert_eq!(fixed.lines().count(), text.lines().count() - 2);
    }

    #[test]
    fn durations_are_envoys() {
        assert_eq!(duration("15s"), Some(Duration::from_secs(15)));
        assert_eq!(duration("0.5s"), Some(Duration::from_millis(500)));
        assert_eq!(duration("15"), None);
    }
}
