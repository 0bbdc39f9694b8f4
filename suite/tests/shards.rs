//! `matrix --shard K/N` and `merge` as CI runs them: three shards of a small plan (two proxies,
//! a few configs, three short checks), merged, grade the same as one run of the whole plan;
//! bad input to `merge` exits 2 with the reason.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn suite() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_proxy-suite"));
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    cmd
}

const PROXIES: [&str; 2] = ["nginx@1.31", "caddy@2.11"];
const CONFIGS: [&str; 5] = [
    "nginx/openchamber-guide.conf",
    "nginx/first-try.conf",
    "nginx/neg-no-forwarded.conf",
    "caddy/openchamber-guide.Caddyfile",
    "caddy/dorkos-guide.Caddyfile",
];
const CHECKS: [&str; 3] = ["ws.upgrade", "headers.forwarded", "compress.single"];

fn available(proxy: &str) -> bool {
    let out = suite().args(["list", "--json"]).output().unwrap();
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    list["proxies"].as_array().into_iter().flatten().any(|p| p["name"] == proxy && p["availability"]["status"] == "available")
}

/// `proxy-suite matrix` on the small plan, `extra` flags added; its matrix.json.
fn matrix(out: &Path, extra: &[&str]) -> Value {
    let mut cmd = suite();
    cmd.args(["matrix", "--idle", "5", "--out"]).arg(out).args(extra);
    for p in PROXIES {
        cmd.args(["--proxy", p]);
    }
    for c in CONFIGS {
        cmd.args(["--config", c]);
    }
    for c in CHECKS {
        cmd.args(["--only", c]);
    }
    let status = cmd.output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    serde_json::from_str(&std::fs::read_to_string(out.join("matrix.json")).unwrap()).unwrap()
}

/// `proxy config profile` -> `check grade`, for every run of a matrix.json.
fn grades(doc: &Value) -> BTreeMap<String, BTreeMap<String, String>> {
    doc["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let key = format!("{} {} {} {}", r["proxy"]["name"].as_str().unwrap(), r["config"].as_str().unwrap(), r["profile"].as_str().unwrap(), r["transport"].as_str().unwrap_or("h1"));
            let mut cells: BTreeMap<String, String> =
                r["checks"].as_array().unwrap().iter().map(|c| (c["id"].as_str().unwrap().to_string(), c["grade"].as_str().unwrap().to_string())).collect();
            if let Some(kind) = r["setup_error"]["kind"].as_str() {
                cells.insert("setup".into(), kind.into());
            }
            (key, cells)
        })
        .collect()
}

#[test]
fn three_shards_merged_grade_as_one_run() {
    if let Some(missing) = PROXIES.iter().find(|p| !available(p)) {
        suite::strict::skip_or_fail(missing, "not installed (./proxy-suite setup)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let whole = matrix(&dir.path().join("whole"), &[]);
    let mut shard_runs = Vec::new();
    for k in 1..=3 {
        let doc = matrix(&dir.path().join(format!("shard-{k}")), &["--shard", &format!("{k}/3")]);
        assert_eq!(doc["shard"], format!("{k}/3"));
        assert!(!doc["direct"].as_array().unwrap().is_empty(), "every shard runs the controls");
        shard_runs.push(grades(&doc).into_keys().collect::<Vec<_>>());
    }
    // The shards partition the plan: each run in exactly one shard.
    let mut all: Vec<String> = shard_runs.concat();
    all.sort();
    let expected: Vec<String> = grades(&whole).into_keys().collect();
    assert_eq!(all, expected);
    assert!(shard_runs.iter().all(|r| !r.is_empty()), "{shard_runs:?}");

    let merged_dir = dir.path().join("merged");
    let junit = dir.path().join("junit.xml");
    let out = suite()
        .arg("merge")
        .args((1..=3).rev().map(|k| dir.path().join(format!("shard-{k}"))))
        .arg("--out")
        .arg(&merged_dir)
        .arg("--junit")
        .arg(&junit)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let names = ["index.html", "matrix.json", "matrix.md", "performance.md"];
    assert!(names.iter().all(|n| merged_dir.join(n).exists()));
    let merged: Value = serde_json::from_str(&std::fs::read_to_string(merged_dir.join("matrix.json")).unwrap()).unwrap();
    assert_eq!(grades(&merged), grades(&whole));
    assert_eq!(merged["shard"], Value::Null);
    assert!(std::fs::read_to_string(&junit).unwrap().contains("<testsuites"));

    // Bad input exits 2 with the reason.
    let missing = suite().args(["merge", "/nonexistent/shard"]).arg("--out").arg(dir.path().join("x")).output().unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/shard"));
    let twice = suite().arg("merge").arg(dir.path().join("shard-1")).arg(dir.path().join("shard-1")).arg("--out").arg(dir.path().join("y")).output().unwrap();
    assert_eq!(twice.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&twice.stderr).contains("overlapping shards"));
}
