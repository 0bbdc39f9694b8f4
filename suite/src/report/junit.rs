//! JUnit XML (`--junit FILE` on `check` and `matrix`), the format CI systems read test results
//! from, written with `quick-junit` (as nextest does).
//!
//! One `<testsuite>` per run (proxy x config x profile, and each direct control), one
//! `<testcase>` per check, named by the check id, classname `proxy/config/profile`:
//!
//! - `pass`: a passing test case.
//! - `warn`: passing (the requirement holds; a SHOULD of the guide does not), with the warning
//!   in the case's `<system-out>`: a CI keeps it visible without turning red.
//! - `fail`: `<failure>`, message the actual result, text Expected / Actual / failure sign / fix.
//! - `error` (the check itself broke): `<error>`, same text.
//! - `skip`: `<skipped>` with the reason as message.
//! - A run whose proxy did not come up: one `<error>` test case named `setup` (a `<skipped>`
//!   one when the proxy is not installed here), since there is nothing to grade.
//!
//! A negative control (role `negative-control`) is test infrastructure: a check it is built to
//! fail passes in JUnit when it fails (the control works) and fails when it passes (the check
//! could not see the fault); the case's `<system-out>` says so.

use std::path::Path;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::MatrixRun;
use crate::checks::{Grade, Outcome};
use crate::proxies::config::Role;
use crate::run::RunResult;

/// The report of a matrix run: the controls first, then every run.
pub fn matrix_report(run: &MatrixRun) -> Report {
    let mut report = Report::new("proxy-suite matrix");
    report.set_time(Duration::from_millis(run.wall_ms));
    report.add_test_suites(run.direct.iter().chain(&run.runs).map(suite));
    report
}

/// The report of `proxy-suite check`: one run per transport it covered.
pub fn check_report(results: &[RunResult]) -> Report {
    let mut report = Report::new("proxy-suite check");
    report.set_time(Duration::from_millis(results.iter().map(|r| r.elapsed_ms).sum()));
    report.add_test_suites(results.iter().map(suite));
    report
}

/// Writes `report` to `path` (through a temporary file, like the other reports).
pub fn write(path: &Path, report: &Report) -> std::io::Result<()> {
    let text = report.to_string().map_err(|e| std::io::Error::other(format!("JUnit XML: {e}")))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    super::write_atomically(path, &text)
}

/// `nginx@1.22/nginx/first-try.conf/openchamber`.
fn classname(run: &RunResult) -> String {
    format!("{}/{}/{}", run.proxy, run.config, run.profile)
}

fn suite(run: &RunResult) -> TestSuite {
    let mut suite = TestSuite::new(classname(run));
    suite.set_time(Duration::from_millis(run.elapsed_ms));
    suite.add_property(Property::new("proxy", run.proxy.as_str()));
    if let Some(version) = &run.version {
        suite.add_property(Property::new("version", version.as_str()));
    }
    suite.add_property(Property::new("config", run.config.as_str()));
    suite.add_property(Property::new("profile", run.profile.as_str()));
    if let Some(role) = run.role {
        let role = serde_json::to_value(role).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        suite.add_property(Property::new("role", role));
    }
    if let Some(issue) = &run.setup_error {
        let (mut status, what) = match issue.kind.as_str() {
            "missing" => (TestCaseStatus::skipped(), "not run"),
            _ => (TestCaseStatus::non_success(NonSuccessKind::Error), "setup error"),
        };
        status.set_type(issue.kind.as_str()).set_message(format!("{what} ({}): no check graded", issue.kind)).set_description(issue.message.as_str());
        let mut case = TestCase::new("setup", status);
        case.set_classname(classname(run));
        suite.add_test_case(case);
        return suite;
    }
    let negative = run.role == Some(Role::NegativeControl);
    suite.add_test_cases(run.checks.iter().map(|c| case(run, c, negative && run.negative_control.contains(&c.id))));
    suite
}

/// Expected / Actual / failure sign / fix, one per line.
fn details(c: &Outcome) -> String {
    let mut text = format!("Expected: {}\nActual: {}", c.expected, c.actual);
    if !c.sign.is_empty() {
        text.push_str(&format!("\nFailure sign: {}", c.sign));
    }
    if !c.fix.is_empty() {
        text.push_str(&format!("\nFix: {}", c.fix));
    }
    text
}

fn case(run: &RunResult, c: &Outcome, built_to_fail: bool) -> TestCase {
    let mut out = None;
    let status = match (c.grade, built_to_fail) {
        (Grade::Fail, true) => {
            out = Some(format!("negative control: fails by design, as it should.\n{}", details(c)));
            TestCaseStatus::success()
        }
        (Grade::Pass | Grade::Warn, true) => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_type("negative-control")
                .set_message(format!("negative control was graded {}: the check did not see the fault it is built to show", c.grade))
                .set_description(details(c));
            s
        }
        (Grade::Pass, false) => TestCaseStatus::success(),
        (Grade::Warn, false) => {
            out = Some(format!("warn: {}", details(c)));
            TestCaseStatus::success()
        }
        (Grade::Skip, _) => {
            let mut s = TestCaseStatus::skipped();
            s.set_message(c.actual.as_str());
            s
        }
        (Grade::Fail, false) | (Grade::Error, _) => {
            let kind = if c.grade == Grade::Error { NonSuccessKind::Error } else { NonSuccessKind::Failure };
            let mut s = TestCaseStatus::non_success(kind);
            s.set_type(c.grade.to_string()).set_message(c.actual.as_str()).set_description(details(c));
            s
        }
    };
    let mut case = TestCase::new(c.id.as_str(), status);
    case.set_classname(classname(run)).set_time(Duration::from_millis(c.elapsed_ms));
    if let Some(out) = out {
        case.set_system_out(out);
    }
    case
}
