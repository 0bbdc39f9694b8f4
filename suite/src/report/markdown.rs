//! `matrix.md`: the matrix as a Markdown table a docs page can embed, with a note under it for
//! every cell that is not a pass (the guide's failure sign, the fix, expected against actual).
//!
//! Also owns what `index.html` and `performance.md` show the same way: the [`Table`] (rows are
//! the control, then every proxy x config x profile; columns are check ids in catalogue order),
//! the per-proxy [`verdicts`] both pages lead with, how a grade reads without colour
//! ([`mark`]), the header facts, and the Markdown templates' environment.

use minijinja::{context, Environment};
use serde::Serialize;

use super::{Machine, MatrixRun};
use crate::checks::{self, Grade, Outcome};
use crate::proxies::config::Role;
use crate::run::RunResult;

const TEMPLATE: &str = include_str!("../../templates/matrix.md.j2");

/// The rows and columns of the matrix.
pub struct Table<'a> {
    /// Check ids: the catalogue's that ran anywhere, in its order, then any unknown id seen.
    pub columns: Vec<String>,
    pub rows: Vec<Row<'a>>,
}

/// One proxy x config x profile (or the control), with its outcome in each column.
pub struct Row<'a> {
    pub run: &'a RunResult,
    /// The direct control: the checks against the mock itself.
    pub control: bool,
    /// A negative control: test infrastructure, shown apart from the matrix.
    pub negative: bool,
    /// One per column; `None` when the check did not run in this run.
    pub cells: Vec<Option<&'a Outcome>>,
}

impl<'a> Table<'a> {
    pub fn new(matrix: &'a MatrixRun) -> Table<'a> {
        let all = || matrix.direct.iter().chain(&matrix.runs);
        let ran = |id: &str| all().any(|r| r.checks.iter().any(|c| c.id == id));
        let mut columns: Vec<String> =
            checks::catalogue().iter().map(|c| c.id).filter(|id| ran(id)).map(String::from).collect();
        for outcome in all().flat_map(|r| &r.checks) {
            if !columns.contains(&outcome.id) {
                columns.push(outcome.id.clone());
            }
        }
        if columns.is_empty() {
            // Nothing ran at all (every run a setup error): still show what would have.
            columns = checks::catalogue().iter().map(|c| c.id.to_string()).collect();
        }
        let row = |run: &'a RunResult, control: bool| Row {
            run,
            control,
            negative: run.role == Some(Role::NegativeControl),
            cells: columns.iter().map(|id| run.checks.iter().find(|c| &c.id == id)).collect(),
        };
        let rows = matrix
            .direct
            .iter()
            .map(|r| row(r, true))
            .chain(matrix.runs.iter().map(|r| row(r, false)))
            .collect();
        Table { columns, rows }
    }
}

impl Row<'_> {
    /// `nginx@1.22 1.22.1`, or `direct (control)`.
    pub fn proxy_label(&self) -> String {
        match (&self.run.version, self.control) {
            (_, true) => "direct (control)".to_string(),
            (Some(version), false) => format!("{} {version}", self.run.proxy),
            (None, false) => self.run.proxy.clone(),
        }
    }

    /// The row in one line: `nginx@1.22 1.22.1 · nginx/first-try.conf · openchamber` (with
    /// the transport and runtime when they are not plain HTTP/1.1 and native).
    pub fn label(&self) -> String {
        format!("{} · {} · {}", self.proxy_label(), self.run.config, profile_label(self.run))
    }
}

/// How one config did under one profile.
#[derive(Serialize)]
pub struct ProfileVerdict {
    pub profile: String,
    /// `pass` (every check passes or is skipped), `warn`, `fail` (a fail or an error), `setup`.
    pub grade: &'static str,
    pub mark: &'static str,
    /// The checks that are not a pass or a skip (`sse.stream fail`), or the setup error.
    pub problems: Vec<String>,
}

/// How one config did under every profile it ran in.
#[derive(Serialize)]
pub struct ConfigVerdict {
    pub config: String,
    /// No fail, error, warn or setup error under any profile (skips say why they do not apply).
    pub passes_everything: bool,
    pub profiles: Vec<ProfileVerdict>,
}

/// What a reader comes for, per proxy that ran: does the guide's example work, and which
/// known-good config passes everything.
#[derive(Serialize)]
pub struct ProxyVerdict {
    /// `nginx@1.22 1.22.1`.
    pub proxy: String,
    /// Configs of role `guide`.
    pub guide: Vec<ConfigVerdict>,
    /// Configs of role `known-good`.
    pub known_good: Vec<ConfigVerdict>,
}

/// The backend profile of a run, with its transport when it is not plain HTTP/1.1 and its
/// runtime when it is not native (`openchamber · h2 · docker`): the same config runs once per
/// transport it offers and runtime asked for. The tables show both in columns of their own.
pub fn profile_label(run: &RunResult) -> String {
    let mut label = run.profile.as_str().to_string();
    if run.transport != crate::tls::Transport::H1 {
        label.push_str(&format!(" · {}", run.transport.as_str()));
    }
    if run.runtime != "native" {
        label.push_str(&format!(" · {}", run.runtime));
    }
    label
}

fn profile_verdict(run: &RunResult) -> ProfileVerdict {
    let profile = profile_label(run);
    if let Some(issue) = &run.setup_error {
        return ProfileVerdict { profile, grade: "setup", mark: SETUP_MARK, problems: vec![format!("setup error ({})", issue.kind)] };
    }
    let problems = |grades: &[Grade]| -> Vec<String> {
        run.checks.iter().filter(|c| grades.contains(&c.grade)).map(|c| format!("{} {}", c.id, c.grade)).collect()
    };
    let failing = problems(&[Grade::Fail, Grade::Error]);
    if !failing.is_empty() {
        return ProfileVerdict { profile, grade: "fail", mark: mark(Grade::Fail), problems: failing };
    }
    let warnings = problems(&[Grade::Warn]);
    if !warnings.is_empty() {
        return ProfileVerdict { profile, grade: "warn", mark: mark(Grade::Warn), problems: warnings };
    }
    ProfileVerdict { profile, grade: "pass", mark: mark(Grade::Pass), problems: Vec::new() }
}

/// One verdict per proxy that ran, in catalogue order.
pub fn verdicts(matrix: &MatrixRun) -> Vec<ProxyVerdict> {
    let of_role = |proxy: &str, role: Role| -> Vec<ConfigVerdict> {
        let runs: Vec<&RunResult> = matrix.runs.iter().filter(|r| r.proxy == proxy && r.role == Some(role)).collect();
        let mut configs: Vec<&str> = runs.iter().map(|r| r.config.as_str()).collect();
        configs.dedup();
        configs
            .into_iter()
            .map(|config| {
                let profiles: Vec<ProfileVerdict> = runs.iter().filter(|r| r.config == config).map(|r| profile_verdict(r)).collect();
                ConfigVerdict { config: config.to_string(), passes_everything: profiles.iter().all(|p| p.grade == "pass"), profiles }
            })
            .collect()
    };
    matrix
        .proxies
        .iter()
        .filter(|p| matrix.runs.iter().any(|r| r.proxy == p.name))
        .map(|p| ProxyVerdict {
            proxy: match &p.version {
                Some(v) => format!("{} {v}", p.name),
                None => p.name.clone(),
            },
            guide: of_role(&p.name, Role::Guide),
            known_good: of_role(&p.name, Role::KnownGood),
        })
        .collect()
}

/// A grade as a symbol that reads without colour.
pub fn mark(grade: Grade) -> &'static str {
    match grade {
        Grade::Pass => "✓",
        Grade::Warn => "⚠",
        Grade::Fail => "✗",
        Grade::Skip => "○",
        Grade::Error => "‼",
    }
}

/// Marks a run that has no grades because it could not be set up.
pub const SETUP_MARK: &str = "⊘";

/// `2 CPUs, 7.7 GiB, Debian GNU/Linux 12, kernel 6.1.0-18-amd64`.
pub fn machine_line(m: &Machine) -> String {
    format!("{} CPUs, {:.1} GiB, {}, kernel {}", m.cpus, m.memory_gib, m.os, m.kernel)
}

/// `2026-11-22 15:15:44 UTC` from RFC 3339 `2026-11-22T15:15:44.946847363Z` (other text as is).
pub fn date_line(rfc3339: &str) -> String {
    match rfc3339.strip_suffix('Z') {
        Some(utc) if utc.len() >= 19 && utc.as_bytes()[10] == b'T' => {
            let seconds = utc.split('.').next().unwrap_or(utc);
            format!("{} UTC", seconds.replacen('T', " ", 1))
        }
        _ => rfc3339.to_string(),
    }
}

/// `4 min 12 s`.
pub fn duration_line(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{} min {} s", s / 60, s % 60),
    }
}

/// One line per proxy of the catalogue: the exact version and source that ran, or why not.
#[derive(Serialize)]
pub struct ProxyLine {
    pub name: String,
    pub ran: bool,
    /// `1.22.1, Debian package nginx` or the missing reason.
    pub text: String,
}

pub fn proxy_lines(matrix: &MatrixRun) -> Vec<ProxyLine> {
    matrix
        .proxies
        .iter()
        .map(|p| match (&p.version, &p.missing) {
            (Some(version), None) => ProxyLine {
                name: p.name.clone(),
                ran: true,
                text: match &p.runs_on {
                    Some(on) => format!("{version}, {}, on {on}", p.source),
                    None => format!("{version}, {}", p.source),
                },
            },
            (_, missing) => ProxyLine {
                name: p.name.clone(),
                ran: false,
                text: format!("not run: {}", missing.as_deref().unwrap_or("no version reported")),
            },
        })
        .collect()
}

/// Escapes text for a Markdown table cell or a note: one line, no table or link syntax, no HTML.
pub fn md_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '\\' | '|' | '`' | '*' | '[' | ']' => {
                out.push('\\');
                out.push(ch);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => {}
            '\n' => out.push(' '),
            _ => out.push(ch),
        }
    }
    out
}

/// A template environment for Markdown: blocks trimmed, no HTML escaping, the `md` filter.
pub fn environment(name: &'static str, source: &'static str) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_filter("md", |text: String| md_escape(&text));
    env.add_template(name, source).expect("built-in template parses");
    env
}

/// One cell of the Markdown table.
#[derive(Serialize)]
struct Cell {
    mark: &'static str,
    word: String,
    note: Option<usize>,
}

/// What a note says; equal notes (a skip's reason on many rows) share one number.
#[derive(Serialize, PartialEq)]
struct Note {
    mark: &'static str,
    word: String,
    check: String,
    sign: String,
    fix: String,
    expected: String,
    actual: String,
}

#[derive(Serialize)]
struct MdRow {
    proxy: String,
    config: String,
    profile: String,
    transport: String,
    runtime: String,
    cells: Vec<Cell>,
    negative: bool,
}

#[derive(Default)]
struct Notes(Vec<Note>);

impl Notes {
    /// The number of `note`, adding it when new.
    fn number(&mut self, note: Note) -> usize {
        match self.0.iter().position(|n| *n == note) {
            Some(i) => i + 1,
            None => {
                self.0.push(note);
                self.0.len()
            }
        }
    }
}

fn cells(row: &Row, notes: &mut Notes) -> Vec<Cell> {
    let none = || Cell { mark: "—", word: String::new(), note: None };
    if let Some(issue) = &row.run.setup_error {
        let note = notes.number(Note {
            mark: SETUP_MARK,
            word: format!("setup error ({})", issue.kind),
            check: String::new(),
            sign: String::new(),
            fix: String::new(),
            expected: String::new(),
            actual: issue.message.clone(),
        });
        let first = Cell { mark: SETUP_MARK, word: "setup error".into(), note: Some(note) };
        return std::iter::once(first).chain(row.cells.iter().skip(1).map(|_| none())).collect();
    }
    row.cells
        .iter()
        .map(|cell| match cell {
            None => none(),
            Some(o) => Cell {
                mark: mark(o.grade),
                word: o.grade.to_string(),
                note: (o.grade != Grade::Pass).then(|| {
                    notes.number(Note {
                        mark: mark(o.grade),
                        word: o.grade.to_string(),
                        check: o.id.clone(),
                        sign: o.sign.clone(),
                        fix: o.fix.clone(),
                        expected: o.expected.clone(),
                        actual: o.actual.clone(),
                    })
                }),
            },
        })
        .collect()
}

/// A runtime difference as the reports show it.
#[derive(Serialize)]
pub struct DifferenceLine {
    pub proxy: String,
    pub config: String,
    pub profile: String,
    pub transport: String,
    pub check: String,
    /// `native pass · docker fail`.
    pub grades: String,
    pub actual: String,
    /// The `.expected` reason, or `unexplained`.
    pub reason: String,
    pub explained: bool,
}

/// The runtime differences of a matrix, for `matrix.md` and `index.html`.
pub fn differences(list: &[super::RuntimeDifference]) -> Vec<DifferenceLine> {
    list.iter()
        .map(|d| DifferenceLine {
            proxy: d.proxy.clone(),
            config: d.config.clone(),
            profile: d.profile.clone(),
            transport: d.transport.clone(),
            check: d.check.clone(),
            grades: d.grades.iter().map(|(rt, g)| format!("{rt} {g}")).collect::<Vec<_>>().join(" · "),
            actual: d.actual.clone(),
            reason: d.reason.clone().unwrap_or_else(|| "unexplained: no `runtime=` entry in the config's .expected".into()),
            explained: d.reason.is_some(),
        })
        .collect()
}

/// A run where a browser check and the protocol check of the same requirement
/// ([`checks::browser::protocol_twin`]) disagree on whether it works.
#[derive(Serialize)]
pub struct BrowserDisagreement {
    pub proxy: String,
    pub config: String,
    /// A negative control: its fault is by design; the disagreement is still what the user sees.
    pub negative: bool,
    pub profile: String,
    pub transport: String,
    /// `browser.sse fail`.
    pub browser: String,
    /// `sse.stream pass`.
    pub protocol: String,
    /// What the browser measured: the explanation.
    pub actual: String,
}

/// How the browser tier compares with the protocol checks over a whole matrix.
#[derive(Serialize)]
pub struct BrowserComparison {
    /// Browser cells that have a protocol twin graded in the same run.
    pub compared: usize,
    pub disagreements: Vec<BrowserDisagreement>,
}

/// Every browser cell next to its protocol twin in the same run: they agree when both work
/// (pass, or warn: works against a SHOULD) or both do not; skips are not compared.
pub fn browser_comparison(matrix: &MatrixRun) -> Option<BrowserComparison> {
    let works = |g: Grade| matches!(g, Grade::Pass | Grade::Warn);
    let mut compared = 0;
    let mut disagreements = Vec::new();
    for run in &matrix.runs {
        for b in run.checks.iter().filter(|c| checks::info(&c.id).is_some_and(|i| i.browser)) {
            let twin = checks::browser::protocol_twin(&b.id);
            let Some(p) = run.checks.iter().find(|c| c.id == twin && c.id != b.id) else { continue };
            if b.grade == Grade::Skip || p.grade == Grade::Skip {
                continue;
            }
            compared += 1;
            if works(b.grade) != works(p.grade) {
                disagreements.push(BrowserDisagreement {
                    proxy: run.version.as_ref().map(|v| format!("{} {v}", run.proxy)).unwrap_or_else(|| run.proxy.clone()),
                    config: run.config.clone(),
                    negative: run.role == Some(Role::NegativeControl),
                    profile: run.profile.as_str().to_string(),
                    transport: run.transport.as_str().to_string(),
                    browser: format!("{} {}", b.id, b.grade),
                    protocol: format!("{} {}", p.id, p.grade),
                    actual: b.actual.clone(),
                });
            }
        }
    }
    (compared > 0).then_some(BrowserComparison { compared, disagreements })
}

/// One config's causes, for `matrix.md`.
#[derive(Serialize)]
pub struct ConfigCauses {
    pub config: String,
    pub lines: Vec<CauseLine>,
}

#[derive(Serialize)]
pub struct CauseLine {
    pub checks: Vec<String>,
    /// `file:line`.
    pub location: String,
    pub text: String,
    pub why: String,
}

/// The published causes, grouped by config in the order they are listed.
pub fn causes(list: &[super::PublishedCause]) -> Vec<ConfigCauses> {
    let mut out: Vec<ConfigCauses> = Vec::new();
    for c in list {
        let file = c.file.as_deref().unwrap_or(&c.config);
        let line = CauseLine { checks: c.checks.clone(), location: format!("{file}:{}", c.line), text: c.text.clone(), why: c.why.trim_end_matches('.').to_string() };
        match out.last_mut() {
            Some(group) if group.config == c.config => group.lines.push(line),
            _ => out.push(ConfigCauses { config: c.config.clone(), lines: vec![line] }),
        }
    }
    out
}

/// The text of `matrix.md`.
pub fn render(matrix: &MatrixRun) -> Result<String, minijinja::Error> {
    let table = Table::new(matrix);
    let mut notes = Notes::default();
    // Negative controls last, so the notes of the matrix come first.
    let ordered = table.rows.iter().filter(|r| !r.negative).chain(table.rows.iter().filter(|r| r.negative));
    let rows: Vec<MdRow> = ordered
        .map(|row| MdRow {
            proxy: row.proxy_label(),
            config: row.run.config.clone(),
            profile: row.run.profile.as_str().to_string(),
            transport: row.run.transport.as_str().to_string(),
            runtime: row.run.runtime.clone(),
            cells: cells(row, &mut notes),
            negative: row.negative,
        })
        .collect();
    let (negative, rows): (Vec<MdRow>, Vec<MdRow>) = rows.into_iter().partition(|r| r.negative);
    let env = environment("matrix.md", TEMPLATE);
    env.get_template("matrix.md")?.render(context! {
        started_at => date_line(&matrix.started_at),
        machine => machine_line(&matrix.machine),
        idle_s => matrix.idle_s,
        wall => duration_line(matrix.wall_ms),
        proxies => proxy_lines(matrix),
        columns => table.columns,
        rows => rows,
        negative => negative,
        verdicts => verdicts(matrix),
        differences => differences(&matrix.runtime_differences),
        causes => causes(&matrix.causes),
        browser => browser_comparison(matrix),
        // A note's number is its position from 1 (`loop.index`).
        notes => notes.0,
    })
}
