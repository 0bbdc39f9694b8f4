//! `proxy-suite check --fix` on every guide example and every first-try config of every kind
//! (found by their `# role:` header), each on a real proxy of its kind: the corrected copy
//! passes every check the original failed, proven by the re-run, and a failure `--fix` knows
//! it has no fix for (`diagnose::NO_FIX`) is said to have none, with exit status 1. All the
//! runs go at once, one thread each: they spend their time waiting through idle periods.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use suite::proxies::config::{discover, ConfigFile, Role};
use suite::proxies::diagnose::NO_FIX;

/// Longer than the shortest default timeout a config under test keeps (nginx's and Apache's
/// 60 s, HAProxy's 50 s on Debian), so each of those fails and its fix is proven; the checks
/// hold a connection idle this long.
const IDLE: &str = "65";

fn available_kinds() -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_proxy-suite")).args(["list", "--json"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    list["proxies"].as_array().unwrap().iter().filter(|p| p["availability"]["status"] == "available").filter_map(|p| p["kind"].as_str().map(String::from)).collect()
}

struct Run {
    config: ConfigFile,
    code: Option<i32>,
    doc: serde_json::Value,
    stderr: String,
    written: PathBuf,
    _dir: tempfile::TempDir,
}

fn fix(config: ConfigFile) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let written = dir.path().join(config.path.file_name().unwrap());
    // A config deployed with TLS is graded where it serves the site: its plain listener may
    // only redirect there (certbot's), which is no failure of the site to fix.
    let offered = suite::run::transports_for(&config, &suite::proxies::config::default_root());
    let transport = if offered.iter().any(|t| t.as_str() == "h1-tls") { "h1-tls" } else { offered[0].as_str() };
    let out = Command::new(env!("CARGO_BIN_EXE_proxy-suite"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(["check", "--proxy", config.kind.name(), "--config"])
        .arg(&config.path)
        .args(["--transport", transport, "--idle", IDLE, "--lang", "en", "--json", "--fix", "--write"])
        .arg(&written)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // A failed run keeps the proxy's prefix for the user (named on stderr), and a refused
    // config its rendered files (named in the setup error): not here.
    let failed_runs = stderr.split("for debugging: ").skip(1).filter_map(|p| p.lines().next());
    let refused = stdout.split("kept in ").skip(1).filter_map(|p| p.split(')').next());
    for kept in failed_runs.chain(refused) {
        let _ = std::fs::remove_dir_all(kept.trim());
    }
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| serde_json::json!({"unreadable": e.to_string(), "stdout": String::from_utf8_lossy(&out.stdout)}));
    Run { config, code: out.status.code(), doc, stderr, written, _dir: dir }
}

fn ids(v: &serde_json::Value, key: &str) -> Vec<String> {
    v[key].as_array().map(|a| a.iter().filter_map(|e| e["check"].as_str().map(String::from)).collect()).unwrap_or_default()
}

#[test]
fn fix_corrects_every_guide_example_and_first_try_config_on_a_real_proxy() {
    let kinds = available_kinds();
    let mut configs = Vec::new();
    for config in discover(&suite::proxies::config::default_root()).unwrap().into_iter().filter(|c| matches!(c.role, Role::Guide | Role::FirstTry)) {
        if kinds.iter().any(|k| k == config.kind.name()) {
            configs.push(config);
        } else {
            suite::strict::skip_or_fail(config.kind.name(), &format!("not installed: {} not fixed (run `./proxy-suite setup`)", config.id));
        }
    }
    let started = Instant::now();
    let runs: Vec<Run> = configs.into_iter().map(|c| std::thread::spawn(move || fix(c))).collect::<Vec<_>>().into_iter().map(|h| h.join().unwrap()).collect();
    eprintln!("check --fix on {} configs at once: {:.0?}", runs.len(), started.elapsed());

    let mut problems = Vec::new();
    let mut proven = 0;
    for r in &runs {
        let id = &r.config.id;
        let doc = &r.doc;
        let mut failed: Vec<String> = doc["checks"].as_array().map(|a| a.iter().filter(|c| c["grade"] == "fail" || c["grade"] == "warn").filter_map(|c| c["id"].as_str().map(String::from)).collect()).unwrap_or_default();
        let repair = &doc["repair"];
        if repair.is_null() {
            problems.push(format!("{id}: no repair (exit {:?}): {doc}\n{}", r.code, r.stderr));
            continue;
        }
        // The proxy refused the config: its fix comes first, then every check runs on it.
        let refused = doc["setup_error"].is_object();
        if refused {
            failed.insert(0, "setup".into());
        }
        if failed.is_empty() {
            if repair["status"] != "nothing-failed" || r.code != Some(0) {
                problems.push(format!("{id}: nothing failed, yet exit {:?} and {repair}", r.code));
            }
            continue;
        }
        let (fixed, unfixed) = (ids(repair, "fixed"), ids(repair, "unfixed"));
        eprintln!("{id} on {} ({}): failed {failed:?}, fixed {fixed:?}, unfixed {unfixed:?}, {}, exit {:?}", doc["proxy"]["name"].as_str().unwrap_or("?"), doc["transport"].as_str().unwrap_or("?"), repair["status"], r.code);
        let rerun: Vec<(String, String)> = repair["rerun"].as_array().map(|a| a.iter().map(|c| (c["check"].as_str().unwrap_or("").to_string(), c["grade"].as_str().unwrap_or("").to_string())).collect()).unwrap_or_default();
        let mut known_unfixed = false;
        for check in &failed {
            if NO_FIX.contains(&(id.as_str(), check.as_str())) {
                known_unfixed = true;
                if !unfixed.contains(check) || fixed.contains(check) {
                    problems.push(format!("{id}: {check} has no fix, and --fix did not say so: {repair}"));
                }
            } else if !fixed.contains(check) {
                let actual = doc["checks"].as_array().and_then(|a| a.iter().find(|c| c["id"] == check.as_str())).map(|c| c["actual"].to_string()).unwrap_or_default();
                problems.push(format!("{id}: {check} failed ({actual}) and was not fixed: {}", repair["unfixed"]));
            } else if check != "setup" && !rerun.iter().any(|(c, g)| c == check && g == "pass") {
                problems.push(format!("{id}: the fix for {check} did not hold: re-run {rerun:?}"));
            } else {
                proven += 1;
            }
        }
        if unfixed.iter().any(|u| !NO_FIX.contains(&(id.as_str(), u.as_str()))) {
            problems.push(format!("{id}: unfixed beyond the known: {unfixed:?}"));
        }
        let want = if known_unfixed { 1 } else { 0 };
        if r.code != Some(want) {
            problems.push(format!("{id}: exit {:?}, want {want} ({repair})", r.code));
        }
        if !fixed.is_empty() {
            // Held: the diff is shown and the corrected copy is where it was asked for.
            if repair["status"] != "held" || !repair["diff"].as_str().is_some_and(|d| d.contains("+++ ")) || !r.written.exists() {
                problems.push(format!("{id}: fixes not shown as held: {repair}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(proven >= 20, "only {proven} fixes proven");
}
