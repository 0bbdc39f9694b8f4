//! Traefik: the static file and its file provider's dynamic file (`<name>.dynamic.yml`) read
//! with line numbers, and from them the line behind each failed check. What it names: a
//! router with no headers middleware pinning X-Forwarded-Proto (Traefik 3.7 sends
//! `X-Forwarded-Proto: ws` on WebSocket upgrades, so the backend rebuilds `ws://host` as the
//! origin and refuses the upgrade), and an entry point whose `readTimeout` (60 s by default)
//! cuts long uploads. The edits are those of `proxy-configs/traefik/known-good*.yml`, in the
//! file each belongs in.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::yaml::{self, Node};
use super::{too_short, Cause, Correction, Edit, Situation};

/// The dynamic file: its path, text and document.
struct Dynamic {
    path: PathBuf,
    text: String,
    root: Node,
}

fn dynamic(s: &Situation) -> Result<Option<Dynamic>, String> {
    let Some(path) = s.config.companions().into_iter().next() else { return Ok(None) };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let root = yaml::parse(&text)?;
    Ok(Some(Dynamic { path, text, root }))
}

/// The middleware a router needs for its scheme, as known-good.dynamic.yml names it.
fn scheme_middleware(tls: bool) -> (&'static str, &'static str) {
    if tls { ("public-scheme-tls", "https") } else { ("public-scheme", "http") }
}

/// A middleware name without its provider (`public-scheme@file`).
fn bare(name: &str) -> &str {
    name.split('@').next().unwrap_or(name)
}

/// Whether the middleware `name` sets X-Forwarded-Proto on the request.
fn pins_scheme(d: &Dynamic, name: &str) -> bool {
    yaml::get(&d.root, &["http", "middlewares", bare(name), "headers", "customRequestHeaders"])
        .and_then(Node::as_mapping)
        .is_some_and(|h| h.keys().any(|k| k.as_str().eq_ignore_ascii_case("X-Forwarded-Proto")))
}

/// Middleware names of a sequence.
fn names(node: Option<&Node>) -> Vec<String> {
    node.and_then(Node::as_sequence).map(|s| s.iter().filter_map(|n| yaml::text(Some(n)).map(String::from)).collect()).unwrap_or_default()
}

/// Routers (name, node, key line) that leave X-Forwarded-Proto as Traefik sets it, counting the
/// middlewares of their entry points in the static file.
fn unpinned<'a>(static_root: &Node, d: &'a Dynamic) -> Vec<(String, &'a Node, usize)> {
    let Some(routers) = yaml::get(&d.root, &["http", "routers"]).and_then(Node::as_mapping) else { return Vec::new() };
    routers
        .iter()
        .filter(|(_, r)| {
            let mut all = names(yaml::get(r, &["middlewares"]));
            for ep in names(yaml::get(r, &["entryPoints"])) {
                all.extend(names(yaml::get(static_root, &["entryPoints", ep.as_str(), "http", "middlewares"])));
            }
            !all.iter().any(|m| pins_scheme(d, m))
        })
        .map(|(k, r)| (k.as_str().to_string(), r, k.span().start().map(|m| m.line()).unwrap_or(1)))
        .collect()
}

/// Traefik's duration: Go's (`60s`, `1h`, `500ms`) or bare seconds.
fn duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Some(Duration::from_secs(n));
    }
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let n: f64 = t[..split].parse().ok()?;
    let unit = match &t[split..] {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(n * unit))
}

/// Entry points (name, node, key line) whose readTimeout (60 s unless set; 0: none) cuts a
/// request body that takes longer than the idle period.
fn short_reads(root: &Node, idle: Duration) -> Vec<(String, &Node, usize)> {
    let Some(eps) = yaml::get(root, &["entryPoints"]).and_then(Node::as_mapping) else { return Vec::new() };
    eps.iter()
        .filter(|(_, ep)| {
            let read = yaml::text(yaml::get(ep, &["transport", "respondingTimeouts", "readTimeout"])).and_then(duration).unwrap_or(Duration::from_secs(60));
            !read.is_zero() && too_short(read, idle)
        })
        .map(|(k, ep)| (k.as_str().to_string(), ep, k.span().start().map(|m| m.line()).unwrap_or(1)))
        .collect()
}

fn text_of(text: &str, line: usize) -> String {
    text.lines().nth(line - 1).unwrap_or("").trim().to_string()
}

fn cause(check: &str, file: &Path, text: &str, line: usize, why: String) -> Cause {
    Cause { check: check.into(), file: file.to_path_buf(), line, text: text_of(text, line), why }
}

pub fn causes(s: &Situation, failed: &[&str]) -> Result<Vec<Cause>, String> {
    let root = yaml::parse(s.text)?;
    let d = dynamic(s)?;
    let mut out = Vec::new();
    for check in failed {
        match *check {
            "headers.forwarded" | "auth.origin" => {
                let Some(d) = &d else { continue };
                for (name, r, line) in unpinned(&root, d) {
                    let (_, scheme) = scheme_middleware(yaml::get(r, &["tls"]).is_some());
                    let why = if *check == "auth.origin" {
                        format!("router {name} has no headers middleware pinning X-Forwarded-Proto: Traefik sends `X-Forwarded-Proto: ws` on WebSocket upgrades, the backend rebuilds ws://host as the origin and refuses the upgrade (403 Invalid origin)")
                    } else {
                        format!("router {name} has no headers middleware pinning X-Forwarded-Proto: Traefik sends `ws` on WebSocket upgrades instead of the client's scheme ({scheme})")
                    };
                    out.push(cause(check, &d.path, &d.text, line, why));
                }
            }
            "body.large" | "body.streaming" => {
                for (name, ep, line) in short_reads(&root, s.idle) {
                    let line = yaml::get(ep, &["transport", "respondingTimeouts"]).and_then(Node::as_mapping).and_then(|t| yaml::key_line(t, "readTimeout")).unwrap_or(line);
                    out.push(cause(check, &s.config.path, s.text, line, format!("entry point {name}: readTimeout (60 s unless set) cuts a request whose body takes longer")));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

pub fn correct(s: &Situation, failed: &[&str]) -> Result<Correction, String> {
    let root = yaml::parse(s.text)?;
    let d = dynamic(s)?;
    let mut c = Correction::default();
    let (mut edits, mut dynamic_edits) = (Vec::new(), Vec::new());
    let mut defined: Vec<&str> = Vec::new();
    for check in failed {
        let mut did = Vec::new();
        match *check {
            "headers.forwarded" | "auth.origin" => 'arm: {
                let Some(d) = &d else { break 'arm };
                let step = yaml::step(&d.root);
                let Some(http) = yaml::get(&d.root, &["http"]) else { break 'arm };
                for (name, r, _) in unpinned(&root, d) {
                    let tls = yaml::get(r, &["tls"]).is_some();
                    let (middleware, scheme) = scheme_middleware(tls);
                    // The middleware, once per file.
                    if !defined.contains(&middleware) && yaml::get(http, &["middlewares", middleware]).is_none() {
                        defined.push(middleware);
                        let body = yaml::nest(&["# Traefik sends `X-Forwarded-Proto: ws` on WebSocket upgrades: pin the public scheme.", &format!("{middleware}:"), &format!("{}headers:", " ".repeat(step)), &format!("{}customRequestHeaders:", " ".repeat(2 * step)), &format!("{}X-Forwarded-Proto: \"{scheme}\"", " ".repeat(3 * step))], 0, step);
                        let edit = match yaml::get(http, &["middlewares"]) {
                            Some(m) => yaml::add_to_mapping(&d.text, m, None, &body),
                            None => {
                                let mut block = vec!["middlewares:".to_string()];
                                block.extend(yaml::nest(&body.iter().map(String::as_str).collect::<Vec<_>>(), 1, step));
                                yaml::add_to_mapping(&d.text, http, Some("routers"), &block)
                            }
                        };
                        let Some(edit) = edit else { continue };
                        dynamic_edits.push(with_blank_line(edit, yaml::get(http, &["middlewares"]).is_none()));
                    }
                    let edit = match yaml::get(r, &["middlewares"]).and_then(Node::as_sequence) {
                        Some(seq) => yaml::add_to_sequence(&d.text, seq, &[vec![middleware.to_string()]]),
                        None => yaml::add_to_mapping(&d.text, r, None, &["middlewares:".to_string(), format!("{}- {middleware}", " ".repeat(step))]),
                    };
                    if let Some(edit) = edit {
                        dynamic_edits.push(edit);
                        did.push(format!("router {name}: middleware {middleware} (headers.customRequestHeaders X-Forwarded-Proto: \"{scheme}\")"));
                    }
                }
            }
            "body.large" | "body.streaming" => {
                let step = yaml::step(&root);
                for (name, ep, _) in short_reads(&root, s.idle) {
                    let read = yaml::get(ep, &["transport", "respondingTimeouts"]);
                    let edit = match (read.and_then(Node::as_mapping).and_then(|t| yaml::key_line(t, "readTimeout")), read, yaml::get(ep, &["transport"])) {
                        (Some(line), _, _) => Some(Edit::Replace { line, lines: vec![format!("{}readTimeout: 3600s", yaml::indent_of(s.text, line))] }),
                        (None, Some(t), _) => yaml::add_to_mapping(s.text, t, None, &["readTimeout: 3600s".into()]),
                        (None, None, Some(t)) => yaml::add_to_mapping(s.text, t, None, &yaml::nest(&["respondingTimeouts:", &format!("{}readTimeout: 3600s", " ".repeat(step))], 0, step)),
                        (None, None, None) => yaml::add_to_mapping(s.text, ep, None, &yaml::nest(&["transport:", &format!("{}respondingTimeouts:", " ".repeat(step)), &format!("{}readTimeout: 3600s", " ".repeat(2 * step))], 0, step)),
                    };
                    if let Some(e) = edit {
                        edits.push(e);
                        did.push(format!("entry point {name}: transport.respondingTimeouts.readTimeout: 3600s"));
                    }
                }
            }
            _ => {}
        }
        c.record(check, did);
    }
    yaml::order(&mut edits);
    yaml::order(&mut dynamic_edits);
    c.edits = edits;
    if let Some(d) = d.filter(|_| !dynamic_edits.is_empty()) {
        c.companions.push((d.path, dynamic_edits));
    }
    Ok(c)
}

/// A new top-level block set apart by a blank line, as the file's blocks are.
fn with_blank_line(edit: Edit, blank: bool) -> Edit {
    match edit {
        Edit::InsertAfter { line, mut lines } if blank => {
            lines.insert(0, String::new());
            Edit::InsertAfter { line, lines }
        }
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxies::ConfigFile;

    #[test]
    fn first_try_names_the_router_and_pins_the_scheme_in_the_dynamic_file() {
        let path = crate::proxies::config::default_root().join("traefik/first-try.yml");
        let config = ConfigFile::load(&path, None).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let failed = ["headers.forwarded", "auth.origin"];
        let found = causes(&Situation::alone(&config, &text), &failed).unwrap();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().all(|c| c.file.ends_with("traefik/first-try.dynamic.yml") && c.line == 7 && c.text == "openchamber:"), "{found:?}");
        let c = correct(&Situation::alone(&config, &text), &failed).unwrap();
        assert!(c.edits.is_empty() && c.unfixed.is_empty());
        let (file, edits) = &c.companions[0];
        let fixed = super::super::apply(&std::fs::read_to_string(file).unwrap(), edits);
        assert!(fixed.contains("      service: openchamber\n      middlewares:\n        - public-scheme\n\n  middlewares:\n"), "{fixed}");
        assert!(fixed.contains("    public-scheme:\n      headers:\n        customRequestHeaders:\n          X-Forwarded-Proto: \"http\"\n"), "{fixed}");
        // Read back, the router is pinned.
        let root = yaml::parse(&fixed).unwrap();
        let d = Dynamic { path: file.clone(), text: fixed, root };
        assert!(unpinned(&yaml::parse(&text).unwrap(), &d).is_empty());
    }

    #[test]
    fn a_short_read_timeout_is_named_and_raised() {
        let text = "entryPoints:\n  web:\n    address: \":80\"\n";
        let (_dir, config) = super::super::written("traefik", "t.yml", &text);
        let found = causes(&Situation::alone(&config, text), &["body.large"]).unwrap();
        assert_eq!(found[0].text, "web:");
        let fixed = super::super::apply(text, &correct(&Situation::alone(&config, text), &["body.large"]).unwrap().edits);
        assert_eq!(fixed, "entryPoints:\n  web:\n    address: \":80\"\n    transport:\n      respondingTimeouts:\n        readTimeout: 3600s\n");
        assert_eq!(duration("1h"), Some(Duration::from_secs(3600)));
    }
}
