//! Every check of the catalogue is shown able to fail twice over: by a faulty-proxy case
//! (`FAULT_CASES` in `support/mod.rs`, each case a test of `checks_fail.rs`) and by a
//! negative-control config on a real proxy (a file in `proxy-configs/<kind>/` whose
//! `# negative-control:` header names the check, graded by the conformance test). A check added
//! to the catalogue without both, or a header naming a check that does not exist, fails here.

mod support;

use std::collections::BTreeMap;

use suite::checks::{self, Grade};
use suite::proxies::config::{default_root, discover};

use support::FAULT_CASES;

fn catalogue_ids() -> Vec<&'static str> {
    checks::catalogue().iter().map(|c| c.id).collect()
}

#[test]
fn every_check_has_a_fault_case() {
    let mut proofs: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for case in FAULT_CASES {
        for (id, grade) in case.grades {
            if matches!(grade, Grade::Fail | Grade::Warn) {
                proofs
                    .entry(id)
                    .or_default()
                    .push(format!("{} ({grade})", case.name));
            }
        }
    }
    for (id, cases) in &proofs {
        println!("{id}: {}", cases.join(", "));
    }
    let missing: Vec<&str> = catalogue_ids()
        .into_iter()
        .filter(|id| !proofs.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "no faulty-proxy case makes these checks fail or warn: {missing:?} \
         (add a case to FAULT_CASES in tests/support/mod.rs and its test in checks_fail.rs)"
    );
}

#[test]
fn every_check_has_a_negative_control() {
    let root = default_root();
    let configs = discover(&root)
        .unwrap_or_else(|e| panic!("cannot read the configs under {}: {e}", root.display()));
    let ids = catalogue_ids();
    let mut controls: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut unknown = Vec::new();
    for config in &configs {
        for entry in &config.negative_control {
            // `id` (must fail) or `id:warn` / `id:fail`.
            let (id, grade) = entry.split_once(':').unwrap_or((entry, "fail"));
            match ids.iter().find(|known| **known == id) {
                Some(known) if grade == "fail" || grade == "warn" => controls
                    .entry(known)
                    .or_default()
                    .push(format!("{} ({grade})", config.id)),
                _ => unknown.push(format!("{}: {entry:?}", config.id)),
            }
        }
    }
    for (id, files) in &controls {
        println!("{id}: {}", files.join(", "));
    }
    assert!(
        unknown.is_empty(),
        "`# negative-control:` entries that name no check of the catalogue (or a grade other \
         than fail/warn): {unknown:?}"
    );
    let missing: Vec<&str> = ids
        .into_iter()
        .filter(|id| !controls.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "no config under {} names these checks in its `# negative-control:` header: {missing:?} \
         (add a config built to fail each, with its .expected file)",
        root.display()
    );
}
