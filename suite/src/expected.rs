//! Expected outcomes: beside each config, `<config>.expected` lists every non-pass grade the
//! suite measures on it, with the reason in one line (after rustls's BoGo runner: known
//! deviations in one file, stale entries flagged).
//!
//! Format, one entry a line: `<check-id|setup> <grade|setup-kind> [profile=P] [proxy=NAME] [transport=h1|h1-tls|h2] [runtime=native|docker] # reason`.
//! `setup invalid-config` says the proxy must refuse the config. A grade without qualifiers
//! applies to every proxy, profile, transport and runtime the config runs under; `runtime=`
//! says a grade is one of that runtime only (the container's networking or outer context): the
//! matrix of both runtimes lists a grade that differs between them as a finding, with this
//! reason when there is one.

use std::path::Path;

use crate::checks::Grade;
use crate::run::RunResult;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// Check id, or `setup`.
    pub id: String,
    /// Grade (`warn`, `fail`, `skip`) or, for `setup`, the setup kind (`invalid-config`).
    pub outcome: String,
    pub profile: Option<String>,
    pub proxy: Option<String>,
    /// The transport it applies to (`h1`, `h1-tls`, `h2`); none: every one the config offers.
    pub transport: Option<String>,
    /// The runtime it applies to (`native`, `docker`); none: both.
    pub runtime: Option<String>,
    pub reason: String,
    pub line: usize,
}

impl Expectation {
    fn applies(&self, result: &RunResult) -> bool {
        self.profile.as_deref().is_none_or(|p| p == result.profile.to_string())
            && self.proxy.as_deref().is_none_or(|p| p == result.proxy)
            && self.transport.as_deref().is_none_or(|t| t == result.transport.as_str())
            && self.runtime.as_deref().is_none_or(|r| r == result.runtime)
    }
}

/// Reads an expected-outcomes file; a missing file means "every check passes".
pub fn load(path: &Path) -> Result<Vec<Expectation>, String> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let (entry, reason) = raw.split_once('#').unwrap_or((raw, ""));
        let words: Vec<&str> = entry.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        if words.len() < 2 || reason.trim().is_empty() {
            return Err(format!("{}:{}: expected `<check-id> <grade> [profile=P] [proxy=NAME] # reason`", path.display(), i + 1));
        }
        let mut e = Expectation {
            id: words[0].to_string(),
            outcome: words[1].to_string(),
            profile: None,
            proxy: None,
            transport: None,
            runtime: None,
            reason: reason.trim().to_string(),
            line: i + 1,
        };
        for q in &words[2..] {
            match q.split_once('=') {
                Some(("profile", v)) => e.profile = Some(v.to_string()),
                Some(("proxy", v)) => e.proxy = Some(v.to_string()),
                Some(("transport", v)) if crate::tls::Transport::parse(v).is_some() => e.transport = Some(v.to_string()),
                Some(("runtime", v)) if matches!(v, "native" | "docker") => e.runtime = Some(v.to_string()),
                _ => return Err(format!("{}:{}: unknown qualifier `{q}`", path.display(), i + 1)),
            }
        }
        out.push(e);
    }
    Ok(out)
}

/// The entry that explains `check`'s grade in `result` as one of its runtime only (qualified
/// `runtime=`), when there is one.
pub fn runtime_reason<'a>(expectations: &'a [Expectation], result: &RunResult, check: &str) -> Option<&'a Expectation> {
    expectations.iter().find(|e| e.runtime.is_some() && e.id == check && e.applies(result))
}

/// Whether the config is expected to be refused by `proxy` natively (a `runtime=docker` entry
/// is the container's outer context, not the proxy's validation here).
pub fn expects_invalid<'a>(expectations: &'a [Expectation], proxy: &str) -> Option<&'a Expectation> {
    expectations.iter().find(|e| {
        e.id == "setup" && e.outcome == "invalid-config" && e.proxy.as_deref().is_none_or(|p| p == proxy) && e.runtime.as_deref().is_none_or(|r| r == "native")
    })
}

/// Compares a measured run with the expectations: every non-pass grade must be listed, and
/// every listed entry that applies must match what was measured (stale entries are flagged).
pub fn compare(expectations: &[Expectation], result: &RunResult) -> Vec<String> {
    let mut problems = Vec::new();
    let applicable: Vec<&Expectation> = expectations.iter().filter(|e| e.applies(result)).collect();
    if let Some(issue) = &result.setup_error {
        if !applicable.iter().any(|e| e.id == "setup" && e.outcome == issue.kind) {
            problems.push(format!("setup error not expected: {} ({})", issue.kind, first_line(&issue.message)));
        }
        return problems;
    }
    for e in applicable.iter().filter(|e| e.id == "setup") {
        problems.push(format!("line {}: expected setup `{}` but the proxy started (stale entry?)", e.line, e.outcome));
    }
    for outcome in &result.checks {
        let listed = applicable.iter().find(|e| e.id == outcome.id);
        match (outcome.grade, listed) {
            (Grade::Pass, None) => {}
            // A check of another transport only (h2.headers over HTTP/1.1) skips by design.
            (Grade::Skip, None) if !crate::checks::http2::applies(&outcome.id, result.transport) => {}
            (Grade::Pass, Some(e)) => problems.push(format!(
                "line {}: {} expected {} but now passes (stale entry: {})", e.line, outcome.id, e.outcome, e.reason
            )),
            (grade, None) => problems.push(format!(
                "{} is {grade} but not listed: add `{} {grade} # <reason>` ({})", outcome.id, outcome.id, first_line(&outcome.actual)
            )),
            (grade, Some(e)) if e.outcome != grade.to_string() => problems.push(format!(
                "line {}: {} expected {} but measured {grade} ({})", e.line, outcome.id, e.outcome, first_line(&outcome.actual)
            )),
            _ => {}
        }
    }
    problems
}

/// Entries that apply to none of `runs` (every run of the config): a proxy or profile the
/// config no longer runs under, so the entry can never be checked again (stale). An entry of
/// a runtime none of `runs` ran in is not judged (a native matrix cannot check `runtime=docker`).
pub fn unused(expectations: &[Expectation], runs: &[&RunResult]) -> Vec<String> {
    expectations
        .iter()
        .filter(|e| e.runtime.as_deref().is_none_or(|rt| runs.iter().any(|r| r.runtime == rt)))
        .filter(|e| !runs.iter().any(|r| e.applies(r)))
        .map(|e| format!("line {}: `{} {}` applies to no run of this config (stale entry: {})", e.line, e.id, e.outcome, e.reason))
        .collect()
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_entry_applies_to_that_runtime_and_is_not_stale_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.conf.expected");
        std::fs::write(&path, "headers.forwarded fail runtime=docker # the gateway is the client\n").unwrap();
        let e = load(&path).unwrap();
        assert_eq!(e[0].runtime.as_deref(), Some("docker"));
        std::fs::write(dir.path().join("b.expected"), "x fail runtime=podman # no\n").unwrap();
        assert!(load(&dir.path().join("b.expected")).unwrap_err().contains("runtime=podman"));
        let native: RunResult = serde_json::from_value(serde_json::json!({
            "proxy": "nginx@1.31", "version": null, "source": "", "config": "a.conf", "role": null,
            "profile": "openchamber", "setup_error": null, "rewrites": [], "checks": [], "elapsed_ms": 0
        }))
        .unwrap();
        assert_eq!(native.runtime, "native");
        assert!(unused(&e, &[&native]).is_empty(), "a native run cannot judge a docker entry");
        let mut docker = native.clone();
        docker.runtime = "docker".into();
        docker.config = "b.conf".into();
        assert!(e[0].applies(&docker) && !e[0].applies(&native));
    }
}
