//! `proxy-suite` as a user runs it: exit status 0 / 1 / 2, the `--json` contract, and clear
//! errors for bad input. Uses nginx when it is installed (skips, saying so, when not; fails
//! under `PROXY_SUITE_STRICT=1`).

use std::process::Command;

fn suite() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_proxy-suite"));
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    cmd
}

fn nginx_available() -> bool {
    let out = suite().args(["list", "--json"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let available = list["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["kind"] == "nginx" && p["availability"]["status"] == "available");
    if !available {
        suite::strict::skip_or_fail("nginx", "not installed (run `./proxy-suite setup`)");
    }
    available
}

#[test]
fn list_json_names_every_proxy_with_version_and_source() {
    let out = suite().args(["list", "--json"]).output().unwrap();
    assert!(out.status.success());
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["schema"], 1);
    let names: Vec<&str> = list["proxies"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for name in ["nginx@1.22", "nginx@1.31", "caddy@2.6", "caddy@2.11", "haproxy@2.6", "haproxy@2.8", "apache@2.4", "traefik@3.7", "envoy@1.40", "npm"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
}

#[test]
fn a_failing_check_exits_1_with_the_json_contract() {
    if !nginx_available() {
        return;
    }
    let out = suite()
        .args(["check", "--proxy", "nginx", "--config", "proxy-configs/nginx/neg-small-body.conf", "--only", "body.large", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // A failed check keeps the proxy's prefix for the user, and says where.
    let kept = stderr.split("for debugging: ").nth(1).map(|p| p.lines().next().unwrap_or("").to_string());
    let kept = kept.expect("the kept prefix is named on stderr");
    assert!(std::path::Path::new(&kept).join("logs").exists(), "{kept}");
    std::fs::remove_dir_all(&kept).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["schema"], 1);
    assert!(doc["proxy"]["version"].as_str().is_some_and(|v| v.starts_with("1.")));
    assert_eq!(doc["config"], "nginx/neg-small-body.conf");
    assert_eq!(doc["profile"], "openchamber");
    let check = &doc["checks"][0];
    assert_eq!(check["id"], "body.large");
    assert_eq!(check["grade"], "fail");
    assert_eq!(check["sign"], "File uploads fail");
    for field in ["expected", "actual", "measurements"] {
        assert!(!check[field].is_null(), "{field} missing");
    }
}

#[test]
fn a_passing_config_exits_0_and_prints_a_table() {
    if !nginx_available() {
        return;
    }
    let out = suite()
        .args(["check", "--proxy", "nginx", "--config", "proxy-configs/nginx/openchamber-guide.conf", "--only", "sse.stream", "--only", "ws.upgrade"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("sse.stream") && stdout.contains("PASS"), "{stdout}");
    assert!(stdout.contains("rewrote: backend 127.0.0.1:3000 -> mock"), "{stdout}");
}

#[test]
fn an_invalid_config_exits_2_with_the_proxys_message() {
    if !nginx_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.conf");
    std::fs::write(&path, "server {\n  listen 8080;\n  location / { proxy_pass http://localhost:3000 }\n}\n").unwrap();
    let out = suite().args(["check", "--proxy", "nginx", "--config"]).arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("SETUP ERROR (invalid-config)"), "{stdout}");
    assert!(stdout.contains("nginx: [emerg]"), "the proxy's own message: {stdout}");
    // The user's run keeps the rendered config for inspection; clean it up here.
    if let Some(kept) = stdout.split("kept in ").nth(1) {
        let _ = std::fs::remove_dir_all(kept.split(')').next().unwrap());
    }
}

#[test]
fn bad_input_is_a_clear_error_with_exit_2() {
    let out = suite().args(["check", "--proxy", "lighttpd", "--config", "x.conf"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown proxy `lighttpd`"));

    let out = suite().args(["check", "--proxy", "nginx", "--config", "/nonexistent/site.conf"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config /nonexistent/site.conf"));

    let out = suite().args(["check", "--proxy", "nginx", "--config", "proxy-configs/nginx/first-try.conf", "--only", "sse.bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown check `sse.bogus`"));
}
