//! The published matrix as a user reads it: every cell that fails or warns carries the fix in
//! that proxy's own syntax, and `check` names the config line behind it wherever the config
//! has one. Walks `results/matrix.json` as committed, with the diagnosis `check` prints.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use suite::checks::Grade;
use suite::proxies::{catalogue, config, diagnose};

/// Failures whose cause is not a line of the config, with the reason a reader gets instead.
/// Keyed by config and check (every proxy, profile and transport of that pair).
const NO_LINE: &[(&str, &str, &str)] = &[];

/// Fixes a check prints in place of the kind's advice, for a fault only that advice does not
/// cover (the origin overwritten by the proxy, the prefix a `proxy_pass .../` strips).
fn special_fix(fix: &str) -> bool {
    fix == suite::checks::auth::ORIGIN_OVERWRITE_FIX
}

#[test]
fn every_failure_of_the_published_matrix_prints_its_proxys_fix_and_its_cause() {
    let workspace = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let published = suite::report::merge::read(&workspace.join("results/matrix.json")).unwrap();
    let matrix = &published.doc.run;
    let idle = Duration::from_secs(matrix.idle_s);
    let root = config::default_root();
    let configs: BTreeMap<String, config::ConfigFile> = config::discover(&root).unwrap().into_iter().map(|c| (c.id.clone(), c)).collect();
    // Caddyfiles are read through `caddy adapt`.
    let caddy = std::process::Command::new("caddy").arg("version").output().is_ok_and(|o| o.status.success());
    if !caddy {
        suite::strict::skip_or_fail("caddy", "not installed: the Caddy cells' causes are not checked (run `./proxy-suite setup`)");
    }

    let mut problems = BTreeMap::<String, String>::new();
    let (mut cells, mut with_cause, mut without_line) = (0, 0, 0);
    for run in &matrix.runs {
        let spec = catalogue::resolve(&run.proxy).unwrap_or_else(|e| panic!("{}: {e}", run.proxy));
        let Some(config) = configs.get(&run.config) else {
            problems.insert(format!("{}: published, but no such file in proxy-configs/", run.config), String::new());
            continue;
        };
        if config.kind.name() == "caddy" && !caddy {
            continue;
        }
        let failed: Vec<&suite::checks::Outcome> = run.checks.iter().filter(|c| matches!(c.grade, Grade::Fail | Grade::Warn)).collect();
        for c in &failed {
            match spec.kind.fix(&c.id) {
                Some(own) if c.fix == own || special_fix(&c.fix) => {}
                Some(own) => {
                    problems.insert(format!("{} {} {}: published fix is not {}'s own", run.proxy, run.config, c.id, spec.kind), format!("published {:?}, the kind's {own:?}", c.fix));
                }
                None => {
                    problems.insert(format!("{} {}: {} has no fix of its own", run.proxy, c.id, spec.kind), String::new());
                }
            }
        }
        let causes = diagnose::causes_of_run(run, config, &spec, false, idle);
        let mut ids: Vec<&str> = failed.iter().map(|c| c.id.as_str()).collect();
        if run.setup_error.as_ref().is_some_and(|e| e.kind == "invalid-config") {
            ids.insert(0, diagnose::SETUP);
        }
        for id in ids {
            cells += 1;
            if causes.iter().any(|c| c.check == id) {
                with_cause += 1;
            } else if NO_LINE.iter().any(|(file, check, _)| *file == run.config && *check == id) {
                without_line += 1;
            } else {
                problems.insert(format!("{}: {id} has no cause", run.config), format!("{} {} {}", run.proxy, run.profile, run.transport));
            }
        }
    }
    eprintln!("{cells} failing or warning cells: {with_cause} with the config line that causes them, {without_line} without one (NO_LINE says why)");
    let listed: Vec<String> = problems.iter().map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k} (e.g. {v})") }).collect();
    assert!(listed.is_empty(), "{} problems:\n{}", listed.len(), listed.join("\n"));
    assert!(cells > 100, "only {cells} failing cells in the published matrix");
}
