//! HAProxy: the config read as sections (`global`, `defaults`, `frontend`, `backend`,
//! `listen`), each directive with its line and words, and from those the line behind each
//! failed check (short `timeout server`/`client`, no `timeout tunnel`, `option
//! http-buffer-request`, compression of text/event-stream, no `option forwardfor`, `balance
//! roundrobin`, a 301 redirect) and the smallest edit that fixes it.
//!
//! Why a reader of our own: HAProxy's format is line-based (a section keyword at the start of
//! a line, then its directives, `#` comments) and no maintained Rust crate parses it with
//! line numbers.

use std::time::Duration;

use super::{too_short, Cause, Correction, Edit, Situation};

/// One directive line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub line: usize,
    pub words: Vec<String>,
}

impl Line {
    fn starts(&self, words: &[&str]) -> bool {
        self.words.len() >= words.len() && self.words.iter().zip(words).all(|(a, b)| a == b)
    }
}

/// One section and its directives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// `defaults`, `frontend`, `backend`, `listen`, `global`.
    pub keyword: String,
    pub name: String,
    pub line: usize,
    pub body: Vec<Line>,
}

const SECTIONS: &[&str] = &["global", "defaults", "frontend", "backend", "listen", "resolvers", "peers", "userlist", "program", "http-errors", "ring", "cache"];

/// The sections of a config.
pub fn parse(text: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let code = raw.split('#').next().unwrap_or("");
        let words: Vec<String> = code.split_whitespace().map(String::from).collect();
        let Some(first) = words.first() else { continue };
        if SECTIONS.contains(&first.as_str()) {
            out.push(Section { keyword: first.clone(), name: words.get(1).cloned().unwrap_or_default(), line: i + 1, body: Vec::new() });
        } else if let Some(section) = out.last_mut() {
            section.body.push(Line { line: i + 1, words });
        }
    }
    out
}

/// HAProxy's time syntax: milliseconds by default, or `us`, `ms`, `s`, `m`, `h`, `d`.
pub fn duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let n: u64 = text[..split].parse().ok()?;
    Some(match &text[split..] {
        "" | "ms" => Duration::from_millis(n),
        "us" => Duration::from_micros(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86400),
        _ => return None,
    })
}

/// The proxying sections (frontend, backend, listen) and the defaults they take values from.
struct Sections<'a> {
    all: &'a [Section],
}

impl<'a> Sections<'a> {
    /// The line setting `words` in force for the traffic: a backend's or listen's own, a
    /// frontend's, else the last defaults section's.
    fn find(&self, words: &[&str]) -> Option<&'a Line> {
        let order = ["backend", "listen", "frontend", "defaults"];
        order.iter().find_map(|k| self.all.iter().filter(|s| s.keyword == *k).find_map(|s| s.body.iter().rev().find(|l| l.starts(words))))
    }

    fn first(&self, keywords: &[&str]) -> Option<&'a Section> {
        keywords.iter().find_map(|k| self.all.iter().find(|s| s.keyword == *k))
    }

    fn every(&self, keyword: &'static str) -> impl Iterator<Item = &'a Section> + use<'a> {
        self.all.iter().filter(move |s| s.keyword == keyword)
    }
}

fn text_of(text: &str, line: usize) -> String {
    text.lines().nth(line - 1).unwrap_or("").trim().to_string()
}

pub fn causes(s: &Situation, failed: &[&str]) -> Result<Vec<Cause>, String> {
    let parsed = parse(s.text);
    let secs = Sections { all: &parsed };
    let mut out = Vec::new();
    let mut at = |check: &str, line: usize, why: String| {
        let c = Cause { check: check.into(), file: s.config.path.clone(), line, text: text_of(s.text, line), why };
        if !out.contains(&c) {
            out.push(c);
        }
    };
    let anchor = secs.first(&["defaults", "backend", "listen"]).map(|s| s.line).unwrap_or(1);
    for check in failed {
        match *check {
            "ws.idle" => {
                let tunnel = secs.find(&["timeout", "tunnel"]);
                match tunnel {
                    Some(l) if l.words.get(2).and_then(|v| duration(v)).is_some_and(|d| too_short(d, s.idle)) => at(check, l.line, format!("timeout tunnel is not longer than the {}s idle period", s.idle.as_secs())),
                    Some(_) => {}
                    None => match secs.find(&["timeout", "server"]).or_else(|| secs.find(&["timeout", "client"])) {
                        Some(l) if l.words.get(2).and_then(|v| duration(v)).is_some_and(|d| too_short(d, s.idle)) => at(check, l.line, "no `timeout tunnel`: an upgraded WebSocket keeps this timeout, which cuts it while it is idle".into()),
                        _ => at(check, anchor, "no `timeout tunnel`: an idle upgraded WebSocket is cut at timeout client/server".into()),
                    },
                }
            }
            "sse.idle" | "http.slow" => {
                for words in [["timeout", "server"], ["timeout", "client"]] {
                    if let Some(l) = secs.find(&words) {
                        if l.words.get(2).and_then(|v| duration(v)).is_some_and(|d| too_short(d, s.idle)) {
                            at(check, l.line, format!("{} {} ({}) is not longer than the {}s idle period: HAProxy cuts the silent response", words[0], words[1], l.words[2], s.idle.as_secs()));
                        }
                    }
                }
            }
            "body.streaming" | "body.large" => {
                if let Some(l) = secs.find(&["option", "http-buffer-request"]) {
                    at(check, l.line, "option http-buffer-request waits for the whole upload before sending the backend a byte".into());
                }
            }
            "compress.sse" | "sse.stream" => {
                for sec in &parsed {
                    for l in sec.body.iter().filter(|l| l.starts(&["compression", "type"]) && l.words.iter().any(|w| w == "text/event-stream")) {
                        at(check, l.line, "compressing text/event-stream holds events in the compressor".into());
                    }
                }
            }
            "compress.single" => {
                for sec in &parsed {
                    for l in sec.body.iter().filter(|l| l.starts(&["compression", "algo"]) || l.starts(&["filter", "compression"])) {
                        at(check, l.line, "HAProxy compresses what the backend already compresses".into());
                    }
                }
            }
            "headers.forwarded" if secs.find(&["option", "forwardfor"]).is_none() => {
                let line = secs.first(&["frontend", "listen", "defaults"]).map(|s| s.line).unwrap_or(anchor);
                at(check, line, "no `option forwardfor` (no X-Forwarded-For), and no X-Forwarded-Proto/-Host or X-Real-IP set".into());
            }
            "lb.sticky" => {
                for b in secs.every("backend").chain(secs.every("listen")) {
                    if b.body.iter().filter(|l| l.starts(&["server"])).count() > 1 && !b.body.iter().any(|l| l.starts(&["balance", "source"]) || l.starts(&["stick", "on"]) || l.starts(&["hash-type"])) {
                        let line = b.body.iter().find(|l| l.starts(&["balance"])).map(|l| l.line).unwrap_or(b.line);
                        at(check, line, "no `balance source` (or a stick table): each request goes to the next server in turn".into());
                    }
                }
            }
            "tls.redirect" => {
                for sec in &parsed {
                    for l in sec.body.iter().filter(|l| l.starts(&["redirect"]) && l.words.windows(2).any(|w| w[0] == "code" && w[1] == "301")) {
                        at(check, l.line, "301 lets a browser turn the redirected POST into a GET: use code 308".into());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

pub fn correct(s: &Situation, failed: &[&str]) -> Result<Correction, String> {
    let parsed = parse(s.text);
    let secs = Sections { all: &parsed };
    let mut c = Correction::default();
    let lines: Vec<&str> = s.text.lines().collect();
    let indent = |line: usize| -> String { lines.get(line.wrapping_sub(1)).map(|l| l[..l.len() - l.trim_start().len()].to_string()).unwrap_or_else(|| "\t".into()) };
    // New lines go at the end of the section they belong in, indented like its last line.
    let add = |c: &mut Correction, section: &Section, text: &str| {
        let last = section.body.last().map(|l| l.line).unwrap_or(section.line);
        let ind = section.body.last().map(|l| indent(l.line)).unwrap_or_else(|| "\t".into());
        c.edits.push(Edit::InsertAfter { line: last, lines: vec![format!("{ind}{text}")] });
    };
    let defaults = secs.first(&["defaults"]).or_else(|| secs.first(&["backend", "listen"]));
    let front = secs.first(&["frontend", "listen"]);
    for check in failed {
        let mut did = Vec::new();
        match *check {
            "ws.idle" | "sse.idle" | "http.slow" => {
                let mut wanted = vec![["timeout", "server"], ["timeout", "client"]];
                if *check == "ws.idle" {
                    wanted.push(["timeout", "tunnel"]);
                }
                for words in wanted {
                    match secs.find(&words) {
                        Some(l) if l.words.get(2).and_then(|v| duration(v)).is_some_and(|d| !too_short(d, s.idle)) => {}
                        Some(l) => {
                            let (ind, rest) = (indent(l.line), lines[l.line - 1].trim_start());
                            let pad = rest.strip_prefix(&format!("{} {}", words[0], words[1])).map(|r| r.len() - r.trim_start().len()).unwrap_or(1).max(1);
                            c.edits.push(Edit::Replace { line: l.line, lines: vec![format!("{ind}{} {}{}3600s", words[0], words[1], " ".repeat(pad))] });
                            did.push(format!("{} {} 3600s", words[0], words[1]));
                        }
                        None => {
                            if let Some(d) = defaults {
                                add(&mut c, d, &format!("{} {} 3600s", words[0], words[1]));
                                did.push(format!("{} {} 3600s", words[0], words[1]));
                            }
                        }
                    }
                }
            }
            "body.streaming" => {
                if let Some(l) = secs.find(&["option", "http-buffer-request"]) {
                    c.edits.push(Edit::Replace { line: l.line, lines: Vec::new() });
                    did.push("option http-buffer-request removed".into());
                }
            }
            "compress.sse" => {
                for sec in &parsed {
                    for l in sec.body.iter().filter(|l| l.starts(&["compression", "type"]) && l.words.iter().any(|w| w == "text/event-stream")) {
                        let kept: Vec<&str> = l.words.iter().map(String::as_str).filter(|w| *w != "text/event-stream").collect();
                        let lines = if kept.len() > 2 { vec![format!("{}{}", indent(l.line), kept.join(" "))] } else { Vec::new() };
                        c.edits.push(Edit::Replace { line: l.line, lines });
                        did.push("text/event-stream taken out of compression type".into());
                    }
                }
            }
            "headers.forwarded" => {
                if let Some(f) = front {
                    let has = |w: &[&str]| f.body.iter().any(|l| l.starts(w));
                    if !has(&["option", "forwardfor"]) && secs.find(&["option", "forwardfor"]).is_none() {
                        add(&mut c, f, "option forwardfor");
                    }
                    for (header, line) in [
                        ("X-Forwarded-Proto", "http-request set-header X-Forwarded-Proto https if { ssl_fc }"),
                        ("X-Forwarded-Proto", "http-request set-header X-Forwarded-Proto http if !{ ssl_fc }"),
                        ("X-Forwarded-Host", "http-request set-header X-Forwarded-Host %[req.hdr(host)]"),
                        ("X-Real-IP", "http-request set-header X-Real-IP %[src]"),
                    ] {
                        if !f.body.iter().any(|l| l.words.iter().any(|w| w.eq_ignore_ascii_case(header))) {
                            add(&mut c, f, line);
                        }
                    }
                    did.push(format!("option forwardfor and X-Forwarded-Proto/-Host, X-Real-IP in {} {}", f.keyword, f.name));
                }
            }
            "tls.redirect" => {
                for sec in &parsed {
                    for l in sec.body.iter().filter(|l| l.starts(&["redirect"]) && l.words.iter().any(|w| w == "301")) {
                        let words: Vec<&str> = l.words.iter().map(|w| if w == "301" { "308" } else { w.as_str() }).collect();
                        c.edits.push(Edit::Replace { line: l.line, lines: vec![format!("{}{}", indent(l.line), words.join(" "))] });
                        did.push("redirect code 308".into());
                    }
                }
            }
            "lb.sticky" => {
                for b in secs.every("backend").chain(secs.every("listen")) {
                    if let Some(l) = b.body.iter().find(|l| l.starts(&["balance"])) {
                        c.edits.push(Edit::Replace { line: l.line, lines: vec![format!("{}balance source", indent(l.line))] });
                    } else {
                        add(&mut c, b, "balance source");
                    }
                    did.push(format!("balance source in {}", b.name));
                }
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

    fn run(id: &str, failed: &[&str]) -> (Vec<Cause>, String, Correction) {
        let path = crate::proxies::config::default_root().join(id);
        let config = ConfigFile::load(&path, None).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let s = Situation::alone(&config, &text);
        let causes = causes(&s, failed).unwrap();
        let c = correct(&s, failed).unwrap();
        (causes, super::super::apply(&text, &c.edits), c)
    }

    #[test]
    fn first_try_causes_are_debians_timeouts_and_no_forwardfor() {
        let (causes, fixed, c) = run("haproxy/first-try.cfg", &["ws.idle", "sse.idle", "http.slow", "headers.forwarded"]);
        let ws = causes.iter().find(|c| c.check == "ws.idle").unwrap();
        assert_eq!(ws.text, "timeout server  50000");
        assert!(ws.why.contains("timeout tunnel"));
        assert!(causes.iter().any(|c| c.check == "headers.forwarded" && c.text == "frontend main"));
        assert!(c.unfixed.is_empty());
        assert!(fixed.contains("timeout tunnel 3600s"), "{fixed}");
        assert!(fixed.contains("timeout server  3600s"), "{fixed}");
        assert!(fixed.contains("\toption forwardfor\n"), "{fixed}");
        // The corrected copy has no cause left.
        let (_dir, config) = super::super::written("haproxy", "fixed.cfg", &fixed);
        let s = Situation::alone(&config, &fixed);
        assert_eq!(super::causes(&s, &["ws.idle", "sse.idle", "http.slow", "headers.forwarded"]).unwrap(), vec![]);
    }

    #[test]
    fn buffering_and_event_stream_compression_are_named() {
        let text = "defaults\n mode http\n option http-buffer-request\n compression algo gzip\n compression type text/html text/event-stream\nfrontend f\n bind :80\n default_backend b\nbackend b\n server a 127.0.0.1:3000\n";
        let (_dir, config) = super::super::written("haproxy", "h.cfg", &text);
        let s = Situation::alone(&config, text);
        let causes = causes(&s, &["body.streaming", "compress.sse"]).unwrap();
        assert_eq!(causes.iter().map(|c| c.line).collect::<Vec<_>>(), vec![3, 5]);
        let fixed = super::super::apply(text, &correct(&s, &["body.streaming", "compress.sse"]).unwrap().edits);
        assert!(!fixed.contains("http-buffer-request") && fixed.contains(" compression type text/html\n"), "{fixed}");
    }
}
