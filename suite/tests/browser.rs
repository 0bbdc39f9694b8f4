//! The browser tier: headless Chromium through every available proxy x guide example and
//! known-good config (and the browser's negative controls), over plain HTTP/1.1 and TLS (h2
//! where the proxy offers it), graded against each config's `.expected` file. One Chromium
//! for the whole binary, one incognito context per run, every run at once; only the browser
//! checks run, so the binary costs seconds, not an idle period. Without Chromium it skips
//! with the install hint (fails under `PROXY_SUITE_STRICT=1`).

mod support;

use std::time::{Duration, Instant};

use suite::checks::Grade;
use suite::matrix::{self, Plan};
use suite::proxies::{self, ConfigFile};

fn browser_ids() -> Vec<String> {
    suite::checks::catalogue().iter().filter(|c| c.browser).map(|c| c.id.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_tier_grades_every_guide_and_known_good_config_as_expected() {
    suite::runtimes::stop_on_interrupt();
    let started = Instant::now();
    let Some(browser) = support::browser().await else { return };
    eprintln!("browser: {} (started in {:.1} s)", browser.version(), started.elapsed().as_secs_f64());
    let configs: Vec<ConfigFile> = proxies::config::discover(&proxies::config::default_root())
        .unwrap()
        .into_iter()
        .filter(|c| {
            let offered = suite::run::transports_for(c, &proxies::config::default_root());
            offered.iter().any(|t| suite::run::browser_tier_applies(c, *t, &offered))
        })
        .collect();
    let plan = Plan {
        idle: Duration::from_secs(75),
        proxies: std::env::var("PROXY_SUITE_PROXIES").map(|v| v.split(',').map(String::from).collect()).unwrap_or_default(),
        only: browser_ids(),
        configs: configs.iter().map(|c| c.id.clone()).collect(),
        shard: None,
        browser: Some(browser.clone()),
    };
    let run = matrix::execute(&plan, None).await.expect("matrix plan");
    drop(plan);
    support::close_browser(browser).await;
    let graded = run.runs.iter().filter(|r| !r.checks.is_empty()).count();
    eprintln!(
        "browser tier: {} runs ({graded} graded), wall {:.1} s (Chromium included: {:.1} s)",
        run.runs.len(),
        run.wall_ms as f64 / 1000.0,
        started.elapsed().as_secs_f64()
    );

    let mut problems = Vec::new();
    for p in &run.proxies {
        if let Some(why) = &p.missing {
            if let Err(message) = suite::strict::unavailable(&p.name, why) {
                problems.push(message);
            }
        }
    }
    let ids = browser_ids();
    for r in &run.runs {
        let config = configs.iter().find(|c| c.id == r.config).expect("a planned config");
        let label = format!("{} {} {} {}", r.proxy, r.config, r.profile, r.transport);
        for c in &r.checks {
            eprintln!("  {label}: {} {} ({} ms) {}", c.id, c.grade, c.elapsed_ms, c.actual);
        }
        let expectations = suite::expected::load(&config.expected_path()).unwrap_or_else(|e| panic!("{e}"));
        for p in suite::expected::compare(&expectations, r) {
            problems.push(format!("{label}: {p}"));
        }
        let want = ids.iter().filter(|id| suite::checks::browser::runs_under(id, r.profile)).count();
        if r.setup_error.is_none() && r.checks.len() != want {
            problems.push(format!("{label}: {} browser checks graded, not {want}", r.checks.len()));
        }
        for c in r.checks.iter().filter(|c| matches!(c.grade, Grade::Fail | Grade::Warn)) {
            if c.sign.is_empty() || c.fix.is_empty() || c.actual.is_empty() {
                problems.push(format!("{label}: {} is {} without full evidence", c.id, c.grade));
            }
        }
        for id in config.negative_control.iter().filter(|n| n.starts_with("browser.") && suite::checks::browser::runs_under(n, r.profile)) {
            let grade = r.checks.iter().find(|c| &c.id == id).map(|c| c.grade);
            if r.setup_error.is_none() && grade != Some(Grade::Fail) {
                problems.push(format!("{label}: negative control must fail {id}, got {grade:?}"));
            }
        }
    }
    assert!(graded > 0 || run.runs.is_empty(), "no run graded a browser check");
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}
