//! Apache httpd: the config read as directives (one per line, `\` continuations joined,
//! `<VirtualHost>`-style sections tracked), and from those the line behind each failed check
//! (a `ProxyPass` without `upgrade=websocket`, `ProxyPreserveHost` off, a short `ProxyTimeout`,
//! a small `LimitRequestBody`, DEFLATE on text/event-stream, a 301 redirect) and the smallest
//! edit that fixes it.
//!
//! Why a reader of our own: httpd's format is one directive per line with case-insensitive
//! names, and no maintained Rust crate parses it with line numbers.

use std::time::Duration;

use super::{too_short, Cause, Correction, Edit, Situation};

/// One directive (or section opening, `<VirtualHost *:80>` as name `<VirtualHost`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub line: usize,
    pub name: String,
    pub args: Vec<String>,
}

impl Directive {
    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// The directives of a config, in order, with their lines (a continued directive has the line
/// it starts on).
pub fn parse(text: &str) -> Vec<Directive> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let (start, mut joined) = pending.take().unwrap_or((i + 1, String::new()));
        joined.push_str(raw.trim());
        if let Some(stripped) = joined.strip_suffix('\\') {
            pending = Some((start, format!("{stripped} ")));
            continue;
        }
        let code = joined.trim();
        if code.is_empty() || code.starts_with('#') {
            continue;
        }
        let code = code.trim_end_matches('>');
        let mut words = code.split_whitespace().map(|w| w.trim_matches('"').to_string());
        let name = words.next().unwrap_or_default();
        out.push(Directive { line: start, name, args: words.collect() });
    }
    out
}

fn text_of(text: &str, line: usize) -> String {
    text.lines().nth(line - 1).unwrap_or("").trim().to_string()
}

fn seconds(d: &Directive) -> Option<Duration> {
    d.args.first()?.parse().ok().map(Duration::from_secs)
}

/// ProxyPass lines that send to an HTTP backend (not `!` exclusions).
fn proxy_passes(all: &[Directive]) -> impl Iterator<Item = &Directive> {
    all.iter().filter(|d| d.is("ProxyPass") && d.args.get(1).is_some_and(|u| u.starts_with("http")))
}

fn upgrades(all: &[Directive]) -> bool {
    let wstunnel = all.iter().any(|d| (d.is("ProxyPass") || d.is("ProxyPassMatch")) && d.args.iter().any(|a| a.starts_with("ws://") || a.starts_with("wss://")));
    let rewrite = all.iter().any(|d| d.is("RewriteRule") && d.args.iter().any(|a| a.starts_with("ws://") || a.contains("[P")) && all.iter().any(|r| r.is("RewriteCond") && r.args.iter().any(|a| a.to_ascii_lowercase().contains("upgrade"))));
    wstunnel || rewrite || proxy_passes(all).all(|d| d.args.iter().any(|a| a == "upgrade=websocket"))
}

fn preserves_host(all: &[Directive]) -> Option<&Directive> {
    all.iter().rev().find(|d| d.is("ProxyPreserveHost"))
}

pub fn causes(s: &Situation, failed: &[&str]) -> Result<Vec<Cause>, String> {
    let all = parse(s.text);
    let mut out = Vec::new();
    let mut at = |check: &str, line: usize, why: String| {
        let c = Cause { check: check.into(), file: s.config.path.clone(), line, text: text_of(s.text, line), why };
        if !out.contains(&c) {
            out.push(c);
        }
    };
    let vhost = all.iter().find(|d| d.is("<VirtualHost")).map(|d| d.line).unwrap_or(1);
    for check in failed {
        match *check {
            "ws.upgrade" | "ws.terminal" | "ws.idle" | "auth.origin" if !upgrades(&all) => {
                for d in proxy_passes(&all).filter(|d| !d.args.iter().any(|a| a == "upgrade=websocket")) {
                    at(check, d.line, "no `upgrade=websocket` on this ProxyPass: mod_proxy_http does not tunnel the WebSocket handshake (400)".into());
                }
            }
            "ws.idle" | "sse.idle" | "http.slow" => {
                let timeout = all.iter().rev().find(|d| d.is("ProxyTimeout")).or_else(|| all.iter().rev().find(|d| d.is("Timeout")));
                if let Some(d) = timeout.filter(|d| seconds(d).is_some_and(|t| too_short(t, s.idle))) {
                    at(check, d.line, format!("{}s is not longer than the {}s idle period: httpd gives up on the silent backend", d.args[0], s.idle.as_secs()));
                }
            }
            "auth.origin" | "headers.forwarded" => {
                match preserves_host(&all) {
                    Some(d) if d.args.first().is_some_and(|a| a.eq_ignore_ascii_case("on")) => {}
                    Some(d) => at(check, d.line, "ProxyPreserveHost Off sends the backend's own address as Host: the backend rebuilds the wrong origin".into()),
                    None => at(check, vhost, "no `ProxyPreserveHost On`: httpd sends the backend's own address as Host (Off by default), so the backend rebuilds the wrong origin".into()),
                }
                if *check == "headers.forwarded" && !all.iter().any(|d| d.is("RequestHeader") && d.args.iter().any(|a| a.eq_ignore_ascii_case("X-Forwarded-Proto"))) {
                    at(check, vhost, "no `RequestHeader set X-Forwarded-Proto`: httpd's ProxyAddHeaders sends X-Forwarded-For/-Host but no -Proto or X-Real-IP".into());
                }
            }
            "body.large" => {
                if let Some(d) = all.iter().rev().find(|d| d.is("LimitRequestBody")).filter(|d| d.args.first().and_then(|a| a.parse::<u64>().ok()).is_some_and(|n| n != 0 && n < 50_000_000)) {
                    at(check, d.line, format!("LimitRequestBody {} is below the 50 MB upload: 413", d.args[0]));
                }
            }
            "compress.sse" | "compress.single" => {
                for d in all.iter().filter(|d| (d.is("AddOutputFilterByType") && d.args.iter().any(|a| a.eq_ignore_ascii_case("DEFLATE")) && (*check == "compress.single" || d.args.iter().any(|a| a == "text/event-stream"))) || (d.is("SetOutputFilter") && d.args.iter().any(|a| a.eq_ignore_ascii_case("DEFLATE")))) {
                    at(check, d.line, "mod_deflate compresses this response on top of the backend (or holds the stream's events)".into());
                }
            }
            "tls.redirect" => {
                for d in all.iter().filter(|d| d.is("Redirect") && d.args.first().is_some_and(|a| a == "301" || a.eq_ignore_ascii_case("permanent"))) {
                    at(check, d.line, "301 lets a browser turn the redirected POST into a GET: use 308".into());
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

pub fn correct(s: &Situation, failed: &[&str]) -> Result<Correction, String> {
    let all = parse(s.text);
    let lines: Vec<&str> = s.text.lines().collect();
    let mut c = Correction::default();
    let vhosts: Vec<&Directive> = all.iter().filter(|d| d.is("<VirtualHost")).collect();
    if vhosts.is_empty() {
        return Err("no <VirtualHost>: nothing to correct".into());
    }
    // New lines go right after each <VirtualHost> line, indented like the next line.
    let indent = |line: usize| -> String { lines.get(line).map(|l| l[..l.len() - l.trim_start().len()].to_string()).filter(|i| !i.is_empty()).unwrap_or_else(|| "\t".into()) };
    let add = |c: &mut Correction, text: &str| {
        for v in &vhosts {
            c.edits.push(Edit::InsertAfter { line: v.line, lines: vec![format!("{}{text}", indent(v.line))] });
        }
    };
    for check in failed {
        let mut did = Vec::new();
        match *check {
            "ws.upgrade" | "ws.terminal" | "ws.idle" | "auth.origin" if !upgrades(&all) => {
                for d in proxy_passes(&all).filter(|d| !d.args.iter().any(|a| a == "upgrade=websocket")) {
                    let line = lines[d.line - 1].trim_end();
                    if !c.edits.iter().any(|e| matches!(e, Edit::Replace { line: l, .. } if *l == d.line)) {
                        c.edits.push(Edit::Replace { line: d.line, lines: vec![format!("{line} upgrade=websocket")] });
                    }
                    did.push("upgrade=websocket on ProxyPass".to_string());
                }
                if *check == "auth.origin" && !preserves_host(&all).is_some_and(|d| d.args.first().is_some_and(|a| a.eq_ignore_ascii_case("on"))) {
                    add(&mut c, "ProxyPreserveHost On");
                    did.push("ProxyPreserveHost On".into());
                }
            }
            "ws.idle" | "sse.idle" | "http.slow" => {
                match all.iter().rev().find(|d| d.is("ProxyTimeout")) {
                    Some(d) if seconds(d).is_some_and(|t| too_short(t, s.idle)) => {
                        c.edits.push(Edit::Replace { line: d.line, lines: vec![format!("{}ProxyTimeout 3600", &lines[d.line - 1][..lines[d.line - 1].len() - lines[d.line - 1].trim_start().len()])] });
                        did.push("ProxyTimeout 3600".into());
                    }
                    Some(_) => {}
                    None => {
                        add(&mut c, "ProxyTimeout 3600");
                        did.push("ProxyTimeout 3600".into());
                    }
                }
            }
            "auth.origin" | "headers.forwarded" => {
                if !preserves_host(&all).is_some_and(|d| d.args.first().is_some_and(|a| a.eq_ignore_ascii_case("on"))) {
                    match preserves_host(&all) {
                        Some(d) => c.edits.push(Edit::Replace { line: d.line, lines: vec![lines[d.line - 1].replace("Off", "On").replace("off", "On")] }),
                        None => add(&mut c, "ProxyPreserveHost On"),
                    }
                    did.push("ProxyPreserveHost On".into());
                }
                if *check == "headers.forwarded" {
                    if !all.iter().any(|d| d.is("RequestHeader") && d.args.iter().any(|a| a.eq_ignore_ascii_case("X-Forwarded-Proto"))) {
                        add(&mut c, "RequestHeader set X-Forwarded-Proto \"expr=%{REQUEST_SCHEME}\"");
                    }
                    if !all.iter().any(|d| d.is("RequestHeader") && d.args.iter().any(|a| a.eq_ignore_ascii_case("X-Real-IP"))) {
                        add(&mut c, "RequestHeader set X-Real-IP \"expr=%{REMOTE_ADDR}\"");
                    }
                    did.push("RequestHeader set X-Forwarded-Proto and X-Real-IP".into());
                }
            }
            "body.large" => {
                add(&mut c, "LimitRequestBody 104857600");
                did.push("LimitRequestBody 104857600".into());
            }
            "compress.sse" | "compress.single" => {
                add(&mut c, "SetEnv no-gzip 1");
                did.push("SetEnv no-gzip 1 (the backend compresses)".into());
            }
            _ => {}
        }
        c.record(check, did);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxies::ConfigFile;

    #[test]
    fn first_try_causes_name_the_proxypass_and_the_virtualhost() {
        let path = crate::proxies::config::default_root().join("apache/first-try.conf");
        let config = ConfigFile::load(&path, None).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let s = Situation::alone(&config, &text);
        let failed = ["ws.upgrade", "ws.terminal", "ws.idle", "headers.forwarded", "auth.origin"];
        let causes = causes(&s, &failed).unwrap();
        let ws = causes.iter().find(|c| c.check == "ws.upgrade").unwrap();
        assert_eq!(ws.text, "ProxyPass / http://127.0.0.1:3000/");
        assert!(ws.why.contains("upgrade=websocket"));
        assert!(causes.iter().any(|c| c.check == "headers.forwarded" && c.text == "<VirtualHost *:80>" && c.why.contains("ProxyPreserveHost")));
        let c = correct(&s, &failed).unwrap();
        assert!(c.unfixed.is_empty(), "{:?}", c.unfixed);
        let fixed = super::super::apply(&text, &c.edits);
        assert!(fixed.contains("\tProxyPass / http://127.0.0.1:3000/ upgrade=websocket\n"), "{fixed}");
        assert_eq!(fixed.matches("ProxyPreserveHost On").count(), 1, "{fixed}");
        let (_dir, config) = super::super::written("apache", "fixed.conf", &fixed);
        let s = Situation::alone(&config, &fixed);
        assert_eq!(super::causes(&s, &failed).unwrap(), vec![]);
    }
}
