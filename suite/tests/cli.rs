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
    // The cause in the config, as `file:line` with the line.
    assert_eq!(check["causes"][0]["line"], 16, "{check}");
    assert_eq!(check["causes"][0]["text"], "client_max_body_size 1m;");
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

/// The kept prefix a failed run names on stderr, removed (the user's run keeps it).
fn remove_kept_prefix(stderr: &str) {
    for kept in stderr.split("for debugging: ").skip(1).filter_map(|p| p.lines().next()) {
        let _ = std::fs::remove_dir_all(kept.trim());
    }
}

/// `check --fix` on OpenChamber's own nginx example: the cause names the WebSocket locations,
/// the corrected copy repeats the dropped headers there, the re-run on a real nginx passes,
/// and only then is the diff shown. The original is never touched.
#[test]
fn check_fix_corrects_the_openchamber_nginx_example_and_proves_it() {
    if !nginx_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let corrected = dir.path().join("openchamber-guide.conf");
    let original = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../proxy-configs/nginx/openchamber-guide.conf")).unwrap();
    let out = suite()
        .args(["check", "--proxy", "nginx", "--config", "proxy-configs/nginx/openchamber-guide.conf", "--only", "auth.origin", "--lang", "en", "--fix", "--write"])
        .arg(&corrected)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    remove_kept_prefix(&stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("auth.origin         ✗ FAIL") || stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains("cause:    proxy-configs/nginx/openchamber-guide.conf:25: location = /api/terminal/ws {"), "{stdout}");
    assert!(stdout.contains("guide:    Forward normal proxy headers such as Host, X-Forwarded-For, and X-Forwarded-Proto."), "{stdout}");
    assert!(stdout.contains("re-run auth.origin"), "{stdout}");
    assert!(stdout.contains("+++ ") && stdout.contains("+        proxy_set_header X-Forwarded-Host $host;"), "{stdout}");
    let fixed = std::fs::read_to_string(&corrected).unwrap();
    assert_eq!(fixed.matches("proxy_set_header X-Forwarded-Host $host;").count(), 4, "{fixed}");
    let after = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../proxy-configs/nginx/openchamber-guide.conf")).unwrap();
    assert_eq!(after, original, "the original is never changed");
}

/// A failure `--fix` has no fix for is said, nothing is claimed, and the exit status is 1:
/// NPM's own `location /` cannot get X-Forwarded-Host from the Advanced text.
#[test]
fn check_fix_refuses_to_claim_a_fix_it_does_not_have() {
    if !nginx_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let corrected = dir.path().join("npm.conf");
    let out = suite()
        .args(["check", "--proxy", "npm", "--config", "proxy-configs/npm/first-try-ws-off.conf", "--only", "headers.forwarded", "--lang", "en", "--fix", "--write"])
        .arg(&corrected)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    remove_kept_prefix(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("--fix: no fix for headers.forwarded: NPM's own location /"), "{stdout}");
    assert!(stdout.contains("nothing written"), "{stdout}");
    assert!(!stdout.contains("+++ "), "{stdout}");
    assert!(!corrected.exists());
}

/// `--write` naming the config itself is refused: the original is never overwritten.
#[test]
fn check_fix_never_overwrites_the_original() {
    if !nginx_available() {
        return;
    }
    let out = suite()
        .args(["check", "--proxy", "nginx", "--config", "proxy-configs/nginx/neg-small-body.conf", "--only", "body.large", "--fix", "--write", "proxy-configs/nginx/neg-small-body.conf"])
        .output()
        .unwrap();
    remove_kept_prefix(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is the config itself"));
}

/// `--lang zh` and `--lang ko` print the failure sign and the rule in the guide's own words.
#[test]
fn check_lang_prints_the_guides_words() {
    if !nginx_available() {
        return;
    }
    for (lang, sign, rule) in [("zh", "文件上传失败 — client_max_body_size太小", "如果用户上传文件,请增大请求体大小限制。"), ("ko", "파일 업로드가 실패함 — client_max_body_size가 너무 작음", "사용자가 파일을 업로드한다면 본문 크기 제한을 늘리세요.")] {
        let out = suite().args(["check", "--proxy", "nginx", "--config", "proxy-configs/nginx/neg-small-body.conf", "--only", "body.large", "--lang", lang]).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        remove_kept_prefix(&String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{stdout}");
        assert!(stdout.contains(&format!("sign:     {sign}")), "{lang}: {stdout}");
        assert!(stdout.contains(&format!("guide:    {rule}")), "{lang}: {stdout}");
        // Directives stay in nginx's syntax.
        assert!(stdout.contains("client_max_body_size 50M;"), "{stdout}");
        assert!(stdout.contains("neg-small-body.conf:16: client_max_body_size 1m;"), "{stdout}");
    }
}
