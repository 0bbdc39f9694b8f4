//! Diagnosis of a user's config: the line that causes a failed check, printed like a
//! compiler (`file:line: <the line>` and why), and the corrected copy that `check --fix`
//! writes (the smallest change per failed check). One module per proxy kind, each reading the
//! config with a parser for its format; this module owns what they share: the cause and edit
//! types, applying edits to the text, the unified diff, and which request paths each check
//! sends (so a kind can find the block that serves them).

pub mod apache;
pub mod caddy;
pub mod envoy;
pub mod haproxy;
pub mod nginx;
pub mod traefik;
mod yaml;

use std::path::{Path, PathBuf};
use std::time::Duration;

use mock_server::Profile;
use serde::Serialize;

use super::config::ConfigFile;

/// The config line that makes a check fail, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cause {
    pub check: String,
    /// The file the line is in: the user's config, or a distribution's file around it
    /// (Debian's nginx.conf) that the user never wrote.
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// The line as written, trimmed.
    pub text: String,
    pub why: String,
}

impl Cause {
    /// `file:line: <the line>`, as compilers print a location.
    pub fn location(&self) -> String {
        format!("{}:{}: {}", self.file.display(), self.line, self.text)
    }
}

/// One change of the corrected copy, by 1-based line of the original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// New lines after line N (0: before the first line).
    InsertAfter { line: usize, lines: Vec<String> },
    /// Line N becomes these lines (none: removed).
    Replace { line: usize, lines: Vec<String> },
}

/// What a kind can change to fix the failed checks.
#[derive(Debug, Clone, Default)]
pub struct Correction {
    pub edits: Vec<Edit>,
    /// Edits of the files rendered with the config (Traefik's dynamic file), by the path of
    /// the file as the situation's config names it.
    pub companions: Vec<(PathBuf, Vec<Edit>)>,
    /// Per fixed check, what was changed (one line each, for the report).
    pub fixed: Vec<(String, String)>,
    /// Failed checks this kind has no automatic fix for, with the reason.
    pub unfixed: Vec<(String, String)>,
}

/// Said of a failed check whose kind has changes for other configs but none for this one.
pub const NO_FIX_HERE: &str = "no automatic fix for this check in this config: apply the printed fix by hand";

impl Correction {
    /// Records what was changed for `check` (one part per change), or that nothing was.
    pub fn record(&mut self, check: &str, mut did: Vec<String>) {
        if did.is_empty() {
            self.unfixed.push((check.to_string(), NO_FIX_HERE.into()));
        } else {
            did.dedup();
            self.fixed.push((check.to_string(), did.join("; ")));
        }
    }
}

/// What the diagnosis knows about the run besides the config.
pub struct Situation<'a> {
    pub config: &'a ConfigFile,
    /// The config's text as written.
    pub text: &'a str,
    /// The file that wraps the user's config (Debian's nginx.conf), when there is one.
    pub context: Option<PathBuf>,
    pub profile: Profile,
    pub idle: Duration,
    /// The proxy's message when it refused the config (`nginx -t`).
    pub setup_error: Option<String>,
    /// How the client reached the proxy: over plain HTTP a listener that only redirects to
    /// HTTPS is what every check meets.
    pub transport: crate::tls::Transport,
}

/// The pseudo check id of a setup error (the proxy refused the config) in causes and fixes.
pub const SETUP: &str = "setup";

#[cfg(test)]
impl<'a> Situation<'a> {
    /// A config read alone, as the kinds' unit tests read it: plain HTTP/1.1, no distribution
    /// context, the `openchamber` profile, idle 75 s, no setup error.
    pub(crate) fn alone(config: &'a ConfigFile, text: &'a str) -> Situation<'a> {
        Situation { transport: crate::tls::Transport::H1, config, text, context: None, profile: mock_server::Profile::Openchamber, idle: Duration::from_secs(75), setup_error: None }
    }
}

/// `text` written as a `kind` config named `name` in a folder of its own (kept while the
/// returned folder lives), and read back: what the kinds' unit tests diagnose.
#[cfg(test)]
pub(crate) fn written(kind: &str, name: &str, text: &str) -> (tempfile::TempDir, ConfigFile) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let config = ConfigFile::load(&path, crate::proxies::Kind::parse(kind)).unwrap();
    (dir, config)
}

/// The file a kind's distribution wraps around the user's config, when the diagnosis reads
/// it (the `gzip on` of Debian's nginx.conf, NPM's nginx.conf).
pub fn context_file(config: &ConfigFile, distribution: Option<&str>, root: &Path) -> Option<PathBuf> {
    let path = match config.kind.name() {
        "nginx" => {
            let name = distribution.map(String::from).or_else(|| config.context.clone()).unwrap_or_else(|| "debian".into());
            if name == super::kinds::IN_IMAGE {
                return None;
            }
            root.join(format!("nginx/_context/{name}.conf"))
        }
        "npm" => root.join("npm/_context/nginx.conf"),
        _ => return None,
    };
    path.exists().then_some(path)
}

/// The ids of the checks a run did not pass (fail or warn), in its order.
pub fn not_passed(checks: &[crate::checks::Outcome]) -> Vec<&str> {
    checks.iter().filter(|c| matches!(c.grade, crate::checks::Grade::Fail | crate::checks::Grade::Warn)).map(|c| c.id.as_str()).collect()
}

/// The causes of the failed checks `failed` that the kind's parser can point at.
pub fn causes(s: &Situation, failed: &[&str]) -> Vec<Cause> {
    let mut asked = twins(failed);
    if failed.iter().any(|id| is_browser(id)) {
        asked.push(PAGE);
    }
    let found = match s.config.kind.name() {
        "nginx" | "npm" => nginx::causes(s, &asked),
        "haproxy" => haproxy::causes(s, &asked),
        "apache" => apache::causes(s, &asked),
        "caddy" => caddy::causes(s, &asked),
        "traefik" => traefik::causes(s, &asked),
        "envoy" => envoy::causes(s, &asked),
        _ => Ok(Vec::new()),
    };
    // A config the parser cannot read has no cause to show; the proxy's own validation
    // reports what is wrong with it.
    let mut found = as_asked(failed, found.unwrap_or_default(), |c| c.check.clone(), |c, id| Cause { check: id.to_string(), ..c.clone() });
    // By check as the run lists them, then as a compiler lists errors: file, then line.
    found.sort_by_key(|c| (failed.iter().position(|f| *f == c.check), c.file.clone(), c.line));
    found
}

/// The causes of a run's failed checks (and of its setup error), as `check` prints them and
/// the matrix publishes them: the config read as the run's proxy read it, in the context its
/// distribution wraps around it (none for a user's own image).
pub fn causes_of_run(result: &crate::run::RunResult, config: &ConfigFile, spec: &crate::proxies::ProxySpec, in_image: bool, idle: Duration) -> Vec<Cause> {
    let Ok(text) = std::fs::read_to_string(&config.path) else { return Vec::new() };
    let root = super::config::default_root();
    let distribution = if in_image { Some(super::kinds::IN_IMAGE) } else { spec.kind.distribution(&spec.source) };
    let setup_error = result.setup_error.as_ref().map(|e| e.message.clone());
    let s = Situation { transport: result.transport, config, text: &text, context: context_file(config, distribution, &root), profile: result.profile, idle, setup_error };
    let mut failed = not_passed(&result.checks);
    if result.setup_error.is_some() {
        failed.insert(0, SETUP);
    }
    causes(&s, &failed)
}

/// The browser tier's page itself (`/api/mock/browser`, loaded through the proxy before any
/// probe): what keeps it from running is a cause of every browser check that failed.
pub const PAGE: &str = "browser.page";

fn is_browser(id: &str) -> bool {
    crate::checks::info(id).is_some_and(|c| c.browser)
}

/// The checks to diagnose for `failed`: a browser check's cause is its protocol twin's
/// (`browser.upload`: `body.large`'s), each asked once.
fn twins<'a>(failed: &[&'a str]) -> Vec<&'a str> {
    let mut asked: Vec<&str> = Vec::new();
    for id in failed {
        let twin = crate::checks::browser::protocol_twin(id);
        if !asked.contains(&twin) {
            asked.push(twin);
        }
    }
    asked
}

/// Findings about the twins, said of the checks that were asked: a twin's finding goes to every
/// browser check of it, and stays its own only where the twin itself failed.
fn as_asked<T>(failed: &[&str], found: Vec<T>, check: impl Fn(&T) -> String, relabel: impl Fn(&T, &str) -> T) -> Vec<T> {
    let mut out = Vec::new();
    for f in found {
        let id = check(&f);
        let of_it = |b: &str| crate::checks::browser::protocol_twin(b) == id || (id == PAGE && is_browser(b));
        for browser in failed.iter().filter(|b| **b != id && of_it(b)) {
            out.push(relabel(&f, browser));
        }
        if failed.contains(&id.as_str()) {
            out.push(f);
        }
    }
    out
}

/// The corrected copy's edits for the failed checks, or why there is none.
pub fn correct(s: &Situation, failed: &[&str]) -> Result<Correction, String> {
    let asked = twins(failed);
    let mut correction = match s.config.kind.name() {
        "nginx" | "npm" => nginx::correct(s, &asked),
        "haproxy" => haproxy::correct(s, &asked),
        "apache" => apache::correct(s, &asked),
        "caddy" => caddy::correct(s, &asked),
        "traefik" => traefik::correct(s, &asked),
        "envoy" => envoy::correct(s, &asked),
        other => Err(format!("--fix does not rewrite {other} configs yet: apply the printed fix by hand")),
    }?;
    let relabel = |(_, what): &(String, String), id: &str| (id.to_string(), what.clone());
    correction.fixed = as_asked(failed, std::mem::take(&mut correction.fixed), |f| f.0.clone(), relabel);
    correction.unfixed = as_asked(failed, std::mem::take(&mut correction.unfixed), |f| f.0.clone(), relabel);
    Ok(correction)
}

/// `text` with `edits` applied. Edits at the same line keep their order; a line that an
/// earlier edit already inserts at the same place is not repeated (two checks asking for the
/// same directive in the same block), while the lines of one edit are kept as they are (a
/// YAML block repeats `- header:`).
pub fn apply(text: &str, edits: &[Edit]) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<String> = Vec::new();
    let inserts_after = |n: usize| {
        let mut seen: Vec<String> = Vec::new();
        for e in edits {
            if let Edit::InsertAfter { line, lines } = e {
                if *line == n {
                    let new: Vec<String> = lines.iter().filter(|l| !seen.contains(l)).cloned().collect();
                    seen.extend(new);
                }
            }
        }
        seen
    };
    out.extend(inserts_after(0));
    for (i, original) in lines.iter().enumerate() {
        let n = i + 1;
        match edits.iter().find_map(|e| match e {
            Edit::Replace { line, lines } if *line == n => Some(lines),
            _ => None,
        }) {
            Some(replacement) => out.extend(replacement.iter().cloned()),
            None => out.push(original.to_string()),
        }
        out.extend(inserts_after(n));
    }
    let mut result = out.join("\n");
    if text.ends_with('\n') {
        result.push('\n');
    }
    result
}

/// One file of a corrected copy as written.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    pub text: String,
}

/// Where a companion of `config` goes beside `target`: the same suffix after the target's
/// stem (`first-try.dynamic.yml` of `first-try.yml` → `site.dynamic.yml` of `site.yml`), so
/// the kind finds it beside the corrected copy as it found the original.
pub fn companion_target(config: &Path, companion: &Path, target: &Path) -> PathBuf {
    let stem = |p: &Path| p.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
    let name = companion.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let suffix = name.strip_prefix(&stem(config)).unwrap_or(name);
    target.with_file_name(format!("{}{suffix}", stem(target)))
}

/// Writes the corrected copy of `text` (the config's current text) to `target`, and each of
/// the config's companion files beside it with its edits, the config's lines naming a
/// companion renamed with it. The config's file first, then the companions.
pub fn write_corrected(config: &ConfigFile, text: &str, correction: &Correction, target: &Path) -> Result<Vec<Written>, String> {
    let mut main = apply(text, &correction.edits);
    let mut out = Vec::new();
    for companion in config.companions() {
        let to = companion_target(&config.path, &companion, target);
        let original = std::fs::read_to_string(&companion).map_err(|e| format!("cannot read {}: {e}", companion.display()))?;
        let edits = correction.companions.iter().filter(|(p, _)| *p == companion).flat_map(|(_, e)| e.iter().cloned()).collect::<Vec<_>>();
        let (from_name, to_name) = (companion.file_name().and_then(|n| n.to_str()).unwrap_or_default(), to.file_name().and_then(|n| n.to_str()).unwrap_or_default());
        if from_name != to_name {
            let ends = main.ends_with('\n');
            main = main.lines().map(|l| if l.trim_start().starts_with('#') { l.to_string() } else { l.replace(from_name, to_name) }).collect::<Vec<_>>().join("\n");
            if ends {
                main.push('\n');
            }
        }
        out.push(Written { path: to, text: apply(&original, &edits) });
    }
    out.insert(0, Written { path: target.to_path_buf(), text: main });
    for w in &out {
        std::fs::write(&w.path, &w.text).map_err(|e| format!("cannot write {}: {e}", w.path.display()))?;
    }
    Ok(out)
}

/// A unified diff of the original and the corrected copy, with 3 lines of context.
pub fn unified_diff(original: &str, corrected: &str, original_name: &str, corrected_name: &str) -> String {
    similar::TextDiff::from_lines(original, corrected).unified_diff().context_radius(3).header(original_name, corrected_name).to_string()
}

/// Where the corrected copy goes by default: beside the original, `.fixed` before the
/// extension (`site.conf` → `site.fixed.conf`), so a kind still recognises the file.
pub fn default_output(original: &Path) -> PathBuf {
    let stem = original.file_stem().and_then(|s| s.to_str()).unwrap_or("config");
    let name = match original.extension().and_then(|e| e.to_str()) {
        Some(ext) => format!("{stem}.fixed.{ext}"),
        None => format!("{stem}.fixed"),
    };
    original.with_file_name(name)
}

/// The request paths a check sends for a profile, where a block that serves them decides
/// its grade (empty: the check does not depend on a route).
pub fn paths(check: &str, profile: Profile) -> &'static [&'static str] {
    let dorkos = profile == Profile::Dorkos;
    match check {
        "ws.upgrade" | "auth.origin" => &["/api/event/ws", "/api/global/event/ws", "/api/terminal/ws"],
        "ws.terminal" => &["/api/terminal/ws"],
        "ws.idle" => &["/api/event/ws"],
        "sse.stream" | "sse.headers" | "sse.idle" | "compress.sse" if dorkos => &["/api/events", "/api/sessions/suite/events"],
        "sse.stream" | "sse.headers" | "sse.idle" | "compress.sse" => &["/api/event", "/api/global/event", "/api/notifications/stream", "/api/openchamber/events", "/api/terminal/suite/stream"],
        "http.slow" => &["/api/mock/slow"],
        "body.large" | "body.streaming" => &["/api/fs/upload"],
        "compress.single" => &["/api/mock/json"],
        "headers.forwarded" => &["/api/mock/request"],
        "browser.reconnect" => &["/api/sessions/browser-resume/events"],
        PAGE => &["/api/mock/browser"],
        _ => &[],
    }
}

/// The idle period a timeout must exceed, with room for the check's own margin.
pub(crate) fn too_short(timeout: Duration, idle: Duration) -> bool {
    timeout <= idle + Duration::from_secs(5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_apply_in_place_and_do_not_repeat_a_line() {
        let text = "a\nb\nc\n";
        let edits = vec![
            Edit::InsertAfter { line: 1, lines: vec!["x".into()] },
            Edit::InsertAfter { line: 1, lines: vec!["x".into(), "y".into()] },
            Edit::Replace { line: 3, lines: vec![] },
            Edit::InsertAfter { line: 0, lines: vec!["top".into()] },
        ];
        assert_eq!(apply(text, &edits), "top\na\nx\ny\nb\n");
        // One edit's own lines are all kept.
        assert_eq!(apply(text, &[Edit::InsertAfter { line: 1, lines: vec!["- h".into(), "- h".into()] }]), "a\n- h\n- h\nb\nc\n");
    }

    #[test]
    fn the_corrected_copy_goes_beside_the_original() {
        assert_eq!(default_output(Path::new("/x/site.conf")), PathBuf::from("/x/site.fixed.conf"));
        assert_eq!(default_output(Path::new("/x/Caddyfile")), PathBuf::from("/x/Caddyfile.fixed"));
    }

    /// Traefik's dynamic file goes beside the copy under the copy's name, and the static file
    /// names it there (its comments left alone).
    #[test]
    fn a_companion_is_written_beside_the_copy_and_named_by_it() {
        assert_eq!(companion_target(Path::new("/a/first-try.yml"), Path::new("/a/first-try.dynamic.yml"), Path::new("/b/site.yml")), PathBuf::from("/b/site.dynamic.yml"));
        let path = crate::proxies::config::default_root().join("traefik/first-try.yml");
        let config = ConfigFile::load(&path, None).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let dynamic = config.companions().remove(0);
        let edit = Edit::InsertAfter { line: 0, lines: vec!["# edited".into()] };
        let correction = Correction { companions: vec![(dynamic, vec![edit])], ..Correction::default() };
        let dir = tempfile::tempdir().unwrap();
        let written = write_corrected(&config, &text, &correction, &dir.path().join("site.yml")).unwrap();
        assert_eq!(written.iter().map(|w| w.path.file_name().unwrap().to_str().unwrap()).collect::<Vec<_>>(), vec!["site.yml", "site.dynamic.yml"]);
        assert!(written[0].text.contains("    filename: site.dynamic.yml\n"), "{}", written[0].text);
        assert!(std::fs::read_to_string(dir.path().join("site.dynamic.yml")).unwrap().starts_with("# edited\n# source: proxy-suite (dynamic configuration of first-try.yml"));
    }
}

/// Failures of the guide examples and first-try configs that `--fix` knows it cannot fix, by
/// config id (the tests hold it to saying so).
pub const NO_FIX: &[(&str, &str)] = &[
    // NPM's own location / takes its headers from proxy.conf only.
    ("npm/first-try.conf", "headers.forwarded"),
    ("npm/first-try-ws-off.conf", "headers.forwarded"),
];

/// Every guide example and first-try config of a kind `--fix` rewrites (nginx, NPM, HAProxy,
/// Apache, Caddy, Traefik, Envoy): each failure its
/// expected-outcomes file lists (openchamber profile, plain HTTP/1.1) has a cause and a fix, and
/// the corrected text has no cause left for it; what has no fix is only what is known to have
/// none. The re-runs on real proxies are in `tests/cli.rs` and were measured by hand.
#[cfg(test)]
mod every_example {
    use super::*;
    use crate::proxies::config::Role;


    #[test]
    fn every_failure_of_the_examples_has_a_cause_and_a_fix_that_removes_it() {
        let root = crate::proxies::config::default_root();
        let mut problems = Vec::new();
        let mut fixed = 0;
        for config in crate::proxies::config::discover(&root).unwrap() {
            if !matches!(config.role, Role::Guide | Role::FirstTry) || !matches!(config.kind.name(), "nginx" | "npm" | "haproxy" | "apache" | "caddy" | "traefik" | "envoy") {
                continue;
            }
            // Caddyfiles are read through `caddy adapt`.
            if config.kind.name() == "caddy" && std::process::Command::new("caddy").arg("version").output().is_err() {
                eprintln!("no caddy here: {} not diagnosed", config.id);
                continue;
            }
            let expectations = crate::expected::load(&config.expected_path()).unwrap();
            let failed: Vec<&str> = expectations
                .iter()
                // Failures of one transport (certbot's redirecting plain listener) are not the config's
                // to fix.
                .filter(|e| matches!(e.outcome.as_str(), "fail" | "warn") && e.profile.as_deref().is_none_or(|p| p == "openchamber") && e.transport.is_none() && e.proxy.is_none())
                .map(|e| e.id.as_str())
                .collect();
            let text = std::fs::read_to_string(&config.path).unwrap();
            let context = context_file(&config, None, &root);
            // The failures of every transport are the TLS listener's where there is one (a
            // plain listener beside it may only redirect).
            let offered = crate::run::transports_for(&config, &root);
            let transport = if offered.contains(&crate::tls::Transport::H1Tls) { crate::tls::Transport::H1Tls } else { offered[0] };
            let setup_error = expectations.iter().find(|e| e.id == "setup" && e.runtime.is_none()).map(|_| "nginx: [emerg] \"proxy_http_version\" directive is duplicate in x:1".to_string());
            let mut ids = failed.clone();
            if setup_error.is_some() {
                ids.insert(0, SETUP);
            }
            let s = Situation { transport, context: context.clone(), setup_error: setup_error.clone(), ..Situation::alone(&config, &text) };
            let found = causes(&s, &ids);
            for id in &ids {
                let known = NO_FIX.contains(&(config.id.as_str(), *id));
                if !found.iter().any(|c| c.check == *id) && !known {
                    problems.push(format!("{}: {id} has no cause", config.id));
                }
            }
            let correction = correct(&s, &ids).unwrap();
            for (id, why) in &correction.unfixed {
                if !NO_FIX.contains(&(config.id.as_str(), id.as_str())) {
                    problems.push(format!("{}: {id} has no fix ({why})", config.id));
                }
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(config.path.file_name().unwrap());
            let corrected = write_corrected(&config, &text, &correction, &path).unwrap().remove(0).text;
            let after = ConfigFile::load(&path, Some(config.kind)).unwrap();
            let s = Situation { transport, context, ..Situation::alone(&after, &corrected) };
            for c in causes(&s, &failed) {
                if !NO_FIX.contains(&(config.id.as_str(), c.check.as_str())) {
                    problems.push(format!("{}: after --fix, {} still has a cause: {} ({})", config.id, c.check, c.location(), c.why));
                }
            }
            fixed += correction.fixed.len();
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        assert!(fixed >= 20, "only {fixed} fixes");
    }
}
