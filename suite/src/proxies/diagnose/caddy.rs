//! Caddy: the Caddyfile read through Caddy's own adapter (`caddy adapt`, the binary the suite
//! runs), so the diagnosis sees what Caddy makes of it: every `reverse_proxy` and `encode`
//! handler with its settings. The JSON has no line numbers, so each finding is mapped back to
//! the Caddyfile line that writes the directive (the first line starting with its name).
//! What it names: an `encode` that compresses what the backend already compresses (and Caddy
//! 2.11's SSE), a `reverse_proxy` without `header_up X-Real-IP`, a short `read_timeout`.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::{too_short, Cause, Correction, Edit, Situation};

/// The adapted JSON config, or why there is none (no `caddy` here, or a Caddyfile it rejects:
/// the run's own validation reports that).
fn adapt(s: &Situation) -> Result<Value, String> {
    let out = Command::new("caddy").args(["adapt", "--adapter", "caddyfile", "--config"]).arg(&s.config.path).output().map_err(|e| format!("cannot run caddy adapt: {e}"))?;
    if !out.status.success() {
        return Err(format!("caddy adapt: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("caddy adapt printed no JSON: {e}"))
}

/// Every handler object of the adapted config (routes, subroutes), depth first.
fn handlers(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(map) => {
            if map.contains_key("handler") {
                out.push(v.clone());
            }
            for child in map.values() {
                handlers(child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| handlers(i, out)),
        _ => {}
    }
}

/// The 1-based line of the first directive `name` in the Caddyfile.
fn line_of(text: &str, name: &str) -> Option<usize> {
    text.lines().position(|l| l.split_whitespace().next() == Some(name)).map(|i| i + 1)
}

fn text_of(text: &str, line: usize) -> String {
    text.lines().nth(line - 1).unwrap_or("").trim().to_string()
}

fn sets_header(proxy: &Value, header: &str) -> bool {
    proxy.pointer("/headers/request/set").and_then(Value::as_object).is_some_and(|set| set.keys().any(|k| k.eq_ignore_ascii_case(header)))
}

pub fn causes(s: &Situation, failed: &[&str]) -> Result<Vec<Cause>, String> {
    let config = adapt(s)?;
    let mut all = Vec::new();
    handlers(&config, &mut all);
    let proxies: Vec<&Value> = all.iter().filter(|h| h["handler"] == "reverse_proxy").collect();
    let encodes = all.iter().any(|h| h["handler"] == "encode");
    let mut out = Vec::new();
    let mut at = |check: &str, name: &str, why: String| {
        if let Some(line) = line_of(s.text, name) {
            let c = Cause { check: check.into(), file: s.config.path.clone(), line, text: text_of(s.text, line), why };
            if !out.contains(&c) {
                out.push(c);
            }
        }
    };
    for check in failed {
        match *check {
            "compress.sse" | "compress.single" if encodes => at(check, "encode", "Caddy compresses responses here on top of the backend (Caddy 2.11 also gzips the SSE streams)".into()),
            "headers.forwarded" if proxies.iter().any(|p| !sets_header(p, "X-Real-IP")) => {
                at(check, "reverse_proxy", "Caddy sends X-Forwarded-For/-Proto/-Host itself but no X-Real-IP: add `header_up X-Real-IP {remote_host}`".into());
            }
            "ws.idle" | "sse.idle" | "http.slow" => {
                for p in &proxies {
                    let read = p.pointer("/transport/read_timeout").and_then(Value::as_u64).map(Duration::from_nanos);
                    if read.is_some_and(|t| too_short(t, s.idle)) {
                        at(check, "read_timeout", format!("read_timeout is not longer than the {}s idle period", s.idle.as_secs()));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

pub fn correct(s: &Situation, failed: &[&str]) -> Result<Correction, String> {
    let config = adapt(s)?;
    let mut all = Vec::new();
    handlers(&config, &mut all);
    let lines: Vec<&str> = s.text.lines().collect();
    let mut c = Correction::default();
    for check in failed {
        let mut did = Vec::new();
        match *check {
            "compress.sse" | "compress.single" => {
                // One compression layer: the backend's (OpenChamber compresses, and leaves its
                // streams uncompressed).
                if let Some(line) = line_of(s.text, "encode") {
                    c.edits.push(Edit::Replace { line, lines: Vec::new() });
                    did.push("`encode` removed: the backend compresses".to_string());
                }
            }
            "headers.forwarded" => {
                if let Some(line) = line_of(s.text, "reverse_proxy") {
                    let raw = lines[line - 1];
                    let indent = &raw[..raw.len() - raw.trim_start().len()];
                    let header = format!("{indent}\theader_up X-Real-IP {{remote_host}}");
                    if raw.trim_end().ends_with('{') {
                        c.edits.push(Edit::InsertAfter { line, lines: vec![header] });
                    } else {
                        c.edits.push(Edit::Replace { line, lines: vec![format!("{} {{", raw.trim_end()), header, format!("{indent}}}")] });
                    }
                    did.push("header_up X-Real-IP {remote_host}".to_string());
                }
            }
            _ => {}
        }
        if did.is_empty() {
            c.unfixed.push((check.to_string(), "no automatic fix for this check in a Caddyfile yet: apply the printed fix by hand".into()));
        } else {
            c.fixed.push((check.to_string(), did.join("; ")));
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxies::ConfigFile;

    #[test]
    fn encode_and_no_x_real_ip_are_named_and_fixed() {
        if Command::new("caddy").arg("version").output().is_err() {
            eprintln!("no caddy here: skipped");
            return;
        }
        let path = crate::proxies::config::default_root().join("caddy/encode-gzip.Caddyfile");
        let config = ConfigFile::load(&path, None).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let s = Situation::alone(&config, &text);
        let failed = ["compress.sse", "headers.forwarded"];
        let found = causes(&s, &failed).unwrap();
        assert_eq!(found.iter().map(|c| c.text.as_str()).collect::<Vec<_>>(), vec!["encode gzip", "reverse_proxy 127.0.0.1:3000"], "{found:#?}");
        let fixed = super::super::apply(&text, &correct(&s, &failed).unwrap().edits);
        assert!(!fixed.contains("\tencode gzip") && fixed.contains("\treverse_proxy 127.0.0.1:3000 {\n\t\theader_up X-Real-IP {remote_host}\n\t}\n"), "{fixed}");
        let (_dir, after) = super::super::written("caddy", "Caddyfile", &fixed);
        let s = Situation::alone(&after, &fixed);
        assert_eq!(causes(&s, &failed).unwrap(), vec![]);
    }
}
