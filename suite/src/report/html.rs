//! `index.html`: one self-contained page (inline CSS and JS, nothing fetched): the matrix, each
//! cell opening its evidence, and for `sse.stream` a chart of tick emission against arrival,
//! direct versus through the proxy, so a buffering proxy is seen at a glance.
//!
//! The page leads with the per-proxy verdicts (the guide's example, the known-good config),
//! then the matrix; negative controls (test infrastructure) have their own table below it.
//! A passing cell through a proxy has no evidence section of its own: one shared panel shows
//! what was measured (the requirement is the column's tooltip), and it has no chart. The
//! evidence and charts that matter are the non-pass cells' and the controls'; this keeps the
//! page small (passing cells' sections were two thirds of it).
//!
//! Rendered from `templates/index.html` with HTML auto-escaping; this module only computes what
//! the template shows (labels, evidence text, chart coordinates).

use std::collections::BTreeMap;

use minijinja::{context, AutoEscape, Environment};
use serde::Serialize;
use serde_json::Value;

use super::markdown::{self, mark, Row, Table, SETUP_MARK};
use super::markdown::profile_label;
use super::performance::{planned_ticks, sse_paths, PathTicks};
use super::{json, Evidence as Kept, MatrixRun};
use crate::checks::{self, Grade, Outcome};
use crate::run::{RunResult, SetupIssue};

const TEMPLATE: &str = include_str!("../../templates/index.html");

#[derive(Serialize)]
struct Column {
    id: String,
    /// `ws`, `sse`...: the part before the dot, shown on its own line.
    area: String,
    /// The rest of the id.
    name: String,
    requirement: String,
}

/// Consecutive rows of one proxy (or of the control), under one heading row.
#[derive(Serialize)]
struct Group {
    /// `nginx@1.22 1.22.1` or `direct (control)`.
    proxy: String,
    source: String,
    control: bool,
    rows: Vec<PageRow>,
}

#[derive(Serialize)]
struct PageRow {
    /// The row in one line, for the panel of a passing cell.
    label: String,
    /// Profile and transport: with a column's check id and the grade, the key of the `actual`
    /// table of `matrix.json`.
    key: String,
    config: String,
    profile: String,
    transport: String,
    runtime: String,
    setup: Option<SetupIssue>,
    cells: Vec<Cell>,
}

#[derive(Serialize)]
struct Cell {
    /// `pass`, `warn`, `fail`, `skip`; `none` when the check did not run.
    grade: String,
    mark: &'static str,
    /// The evidence section the cell opens.
    evidence: Option<String>,
    /// One line for the tooltip; empty for a pass whose Actual is the usual one (the page's
    /// script shows that one).
    actual: String,
    /// A pass through a proxy: no section of its own; the page's script shows the check, the
    /// row, `actual` and `took_ms` in one shared panel.
    brief: Option<Brief>,
}

#[derive(Serialize)]
struct Brief {
    took_ms: u64,
}

#[derive(Serialize)]
struct Evidence {
    id: String,
    row: String,
    check: String,
    requirement: String,
    grade: String,
    mark: &'static str,
    expected: String,
    actual: String,
    sign: String,
    fix: String,
    elapsed_ms: u64,
    /// Pretty-printed JSON, already escaped for element content (see [`text_content`]); `None`
    /// when nothing was kept.
    measurements: Option<minijinja::Value>,
    /// The id of this cell's SSE chart, drawn once in the overview and shown here by reference.
    chart: Option<String>,
}

/// The `sse.stream` chart of one run, in the overview below the matrix.
#[derive(Serialize)]
struct ChartCard {
    /// The chart's own id, for the evidence panel to show it again (`<use>`).
    id: String,
    proxy: String,
    config: String,
    profile: String,
    grade: String,
    mark: &'static str,
    evidence: String,
    chart: Chart,
}

/// An SVG chart, every coordinate in the units of its `viewBox`.
#[derive(Serialize)]
struct Chart {
    width: f64,
    height: f64,
    /// The plot area.
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    x_ticks: Vec<AxisTick>,
    y_ticks: Vec<AxisTick>,
    /// Where arrival = emission: the line a tick that is not delayed sits on.
    ideal: [f64; 4],
    series: Vec<Series>,
    legend: Vec<LegendItem>,
    /// Said across the plot when ticks are missing through the proxy (a buffering proxy shows
    /// nothing at all: there is no point to see).
    missing: Option<String>,
}

#[derive(Serialize)]
struct AxisTick {
    pos: f64,
    label: String,
}

/// The ticks of one route, through the proxy or direct.
#[derive(Serialize)]
struct Series {
    /// `direct` or `proxy`: the CSS class.
    class: &'static str,
    /// The tooltip: source, route, ticks and worst lag.
    title: String,
    points: Vec<Point>,
}

#[derive(Serialize)]
struct Point {
    x: f64,
    y: f64,
}

#[derive(Serialize)]
struct LegendItem {
    class: &'static str,
    text: String,
}

const CHART_W: f64 = 360.0;
const CHART_H: f64 = 262.0;
const PLOT_LEFT: f64 = 50.0;
const PLOT_RIGHT: f64 = CHART_W - 12.0;
const PLOT_TOP: f64 = 10.0;
/// Below the plot: tick labels, the axis title and two legend lines.
const PLOT_BOTTOM: f64 = CHART_H - 72.0;

/// A step of 1, 2, 2.5 or 5 times a power of ten giving at most 5 intervals over `span`.
fn nice_step(span: f64) -> f64 {
    let raw = (span / 5.0).max(1.0);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude)
}

/// An axis over `[0, max]` ms: its upper end (a whole number of steps) and its ticks.
fn axis(max: f64, place: impl Fn(f64, f64) -> f64) -> (f64, Vec<AxisTick>) {
    let step = nice_step(max);
    let top = (max / step).ceil().max(1.0) * step;
    let ticks = (0..=(top / step).round() as usize)
        .map(|i| i as f64 * step)
        .map(|v| AxisTick { pos: round(place(v, top)), label: format!("{v}") })
        .collect();
    (top, ticks)
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// One run's routes, times in ms from the run's first emission.
struct Source {
    class: &'static str,
    name: &'static str,
    paths: Vec<PathTicks>,
    /// Ticks asked for over every route, when recorded.
    planned: Option<u64>,
    /// The first emission, in µs: time 0 of the chart.
    origin: u64,
    /// When the last tick was due, in ms from the first (`plan`), when recorded.
    schedule_ms: Option<f64>,
}

impl Source {
    fn new(class: &'static str, name: &'static str, outcome: &Outcome) -> Source {
        let paths = sse_paths(outcome);
        let origin = paths.iter().flat_map(|p| &p.ticks).map(|t| t.emitted_at_us).min().unwrap_or(0);
        let plan = |key: &str| outcome.measurements.pointer(&format!("/plan/{key}")).and_then(Value::as_f64);
        let schedule_ms = plan("ticks").zip(plan("interval_ms")).map(|(n, every)| (n - 1.0).max(0.0) * every);
        Source { class, name, paths, planned: planned_ticks(outcome), origin, schedule_ms }
    }

    fn ms(&self, us: u64) -> f64 {
        us.saturating_sub(self.origin) as f64 / 1000.0
    }

    fn ticks(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.paths.iter().flat_map(|p| &p.ticks).map(|t| (self.ms(t.emitted_at_us), self.ms(t.arrived_at_us)))
    }

    fn count(&self) -> usize {
        self.paths.iter().map(|p| p.ticks.len()).sum()
    }
}

/// Emission (x) against arrival (y) of every tick of `outcome` (the control's own when
/// `is_control`), over those of its `control` when there is one. `None` when nothing was
/// measured.
fn sse_chart(outcome: &Outcome, is_control: bool, control: Option<&Outcome>) -> Option<Chart> {
    let mut sources = Vec::new();
    if let Some(direct) = control {
        sources.push(Source::new("direct", "direct (control)", direct));
    }
    let (class, name) = if is_control { ("direct", "direct") } else { ("proxy", "through the proxy") };
    sources.push(Source::new(class, name, outcome));
    let all = || sources.iter().flat_map(Source::ticks);
    let schedule = sources.iter().filter_map(|s| s.schedule_ms).reduce(f64::max);
    if all().next().is_none() && schedule.is_none() {
        // Nothing measured (a skip, an error before any stream opened): no chart to draw.
        return None;
    }
    let x_max = all().map(|(e, _)| e).fold(schedule.unwrap_or(0.0), f64::max);
    let y_max = all().map(|(_, a)| a).fold(x_max, f64::max);
    let (x_top, x_ticks) = axis(x_max, |v, top| PLOT_LEFT + v / top * (PLOT_RIGHT - PLOT_LEFT));
    let (y_top, y_ticks) = axis(y_max, |v, top| PLOT_BOTTOM - v / top * (PLOT_BOTTOM - PLOT_TOP));
    let x = |ms: f64| round(PLOT_LEFT + ms / x_top * (PLOT_RIGHT - PLOT_LEFT));
    let y = |ms: f64| round(PLOT_BOTTOM - ms / y_top * (PLOT_BOTTOM - PLOT_TOP));
    let ideal_end = x_top.min(y_top);
    let series = sources
        .iter()
        .flat_map(|s| {
            s.paths.iter().map(move |p| {
                let mut ticks = p.ticks.clone();
                ticks.sort_by_key(|t| t.seq);
                let worst = ticks.iter().map(|t| s.ms(t.arrived_at_us) - s.ms(t.emitted_at_us)).fold(0.0, f64::max);
                Series {
                    class: s.class,
                    title: format!("{} {}: {} ticks, worst lag {worst:.1} ms", s.name, p.route, ticks.len()),
                    points: ticks.iter().map(|t| Point { x: x(s.ms(t.emitted_at_us)), y: y(s.ms(t.arrived_at_us)) }).collect(),
                }
            })
        })
        .collect();
    let legend = sources
        .iter()
        .map(|s| LegendItem {
            class: s.class,
            text: match s.planned {
                Some(planned) => format!("{}: {} of {planned} ticks", s.name, s.count()),
                None => format!("{}: {} ticks", s.name, s.count()),
            },
        })
        .collect();
    let measured = sources.last().expect("the outcome's own source");
    let missing = match measured.planned {
        Some(planned) if (measured.count() as u64) < planned => {
            Some(format!("{} of {planned} ticks arrived ({name})", measured.count()))
        }
        None if measured.count() == 0 => Some(format!("no tick arrived ({name})")),
        _ => None,
    };
    Some(Chart {
        missing,
        width: CHART_W,
        height: CHART_H,
        left: PLOT_LEFT,
        right: PLOT_RIGHT,
        top: PLOT_TOP,
        bottom: PLOT_BOTTOM,
        x_ticks,
        y_ticks,
        ideal: [x(0.0), y(0.0), x(ideal_end), y(ideal_end)],
        series,
        legend,
    })
}

/// Measurements as JSON, indented, with every array or object that fits on a line kept on one
/// (a tick per line rather than five).
fn pretty_json(value: &Value) -> String {
    const WIDTH: usize = 96;
    fn write(value: &Value, indent: usize, out: &mut String) {
        let compact = value.to_string();
        let children: Vec<(Option<String>, &Value)> = match value {
            Value::Array(items) => items.iter().map(|v| (None, v)).collect(),
            Value::Object(map) => map.iter().map(|(k, v)| (Some(Value::from(k.as_str()).to_string()), v)).collect(),
            _ => Vec::new(),
        };
        if children.is_empty() || indent + compact.len() <= WIDTH {
            out.push_str(&compact);
            return;
        }
        let (open, close) = if value.is_array() { ('[', ']') } else { ('{', '}') };
        if value.is_array() && children.iter().all(|(_, v)| !v.is_array() && !v.is_object()) {
            // A list of numbers or strings: filled line by line.
            out.push(open);
            let mut line = WIDTH;
            for (i, (_, child)) in children.iter().enumerate() {
                let item = child.to_string();
                if line + item.len() + 2 > WIDTH {
                    out.push('\n');
                    out.push_str(&" ".repeat(indent + 2));
                    line = indent + 2;
                } else if i > 0 {
                    out.push(' ');
                    line += 1;
                }
                out.push_str(&item);
                line += item.len();
                if i + 1 < children.len() {
                    out.push(',');
                    line += 1;
                }
            }
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            out.push(close);
            return;
        }
        out.push(open);
        for (i, (key, child)) in children.iter().enumerate() {
            out.push('\n');
            out.push_str(&" ".repeat(indent + 2));
            if let Some(key) = key {
                out.push_str(key);
                out.push_str(": ");
            }
            write(child, indent + 2, out);
            if i + 1 < children.len() {
                out.push(',');
            }
        }
        out.push('\n');
        out.push_str(&" ".repeat(indent));
        out.push(close);
    }
    let mut out = String::new();
    write(value, 0, &mut out);
    out
}

/// The direct control of a run: the control run of the same profile.
fn control_of<'a>(table: &'a Table, row: &Row) -> Option<&'a RunResult> {
    (!row.control)
        .then(|| table.rows.iter().find(|r| r.control && r.run.profile == row.run.profile).map(|r| r.run))
        .flatten()
}

/// Escapes text for the content of an element (`<pre>`): `&`, `<` and `>`. Quotes need no
/// escaping there, and measurements are full of them: escaping them too would double the page.
fn text_content(text: &str) -> minijinja::Value {
    let escaped = text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    minijinja::Value::from_safe_string(escaped)
}

/// What the page shows of the table.
struct Page {
    /// The matrix, grouped by proxy: the controls and every run but the negative controls.
    groups: Vec<Group>,
    /// The negative controls, grouped by proxy.
    negative: Vec<Group>,
    evidence: Vec<Evidence>,
    /// The SSE chart of every run whose `sse.stream` is not a pass, and of the controls.
    cards: Vec<ChartCard>,
}

/// The page's rows grouped by proxy, the evidence of every cell, and the SSE charts.
fn rows(table: &Table, kept: Kept, usual: &BTreeMap<String, String>) -> Page {
    let (mut evidence, mut cards) = (Vec::new(), Vec::new());
    let (mut groups, mut negative) = (Vec::<Group>::new(), Vec::<Group>::new());
    for (r, row) in table.rows.iter().enumerate() {
        let control = control_of(table, row);
        let mut cells = Vec::new();
        for (c, cell) in row.cells.iter().enumerate() {
            let Some(outcome) = cell else {
                cells.push(Cell { grade: "none".into(), mark: "—", evidence: None, actual: "not run".into(), brief: None });
                continue;
            };
            let id = format!("ev-{r}-{c}");
            // A pass or a skip says all in one line: it shares the page's one panel instead of a
            // section of its own (a summary page only).
            // A negative control's cells too: they fail by design, and matrix.json keeps their
            // evidence.
            let brief = (matches!(outcome.grade, Grade::Pass | Grade::Skip) || row.negative) && !row.control && kept == Kept::Summary;
            let direct = control.and_then(|d| d.checks.iter().find(|o| o.id == outcome.id));
            let chart = (outcome.id == "sse.stream" && !brief).then(|| sse_chart(outcome, row.control, direct)).flatten();
            let chart_id = chart.map(|chart| {
                let chart_id = format!("chart-{r}-{c}");
                cards.push(ChartCard {
                    id: chart_id.clone(),
                    proxy: row.proxy_label(),
                    config: row.run.config.clone(),
                    profile: profile_label(row.run),
                    grade: outcome.grade.to_string(),
                    mark: mark(outcome.grade),
                    evidence: id.clone(),
                    chart,
                });
                chart_id
            });
            if brief {
                let usual = usual.get(&json::actual_key(outcome, row.run));
                cells.push(Cell {
                    grade: outcome.grade.to_string(),
                    mark: mark(outcome.grade),
                    evidence: None,
                    actual: if usual == Some(&outcome.actual) { String::new() } else { cut(&outcome.actual, PAGE_TEXT_CHARS) },
                    brief: Some(Brief { took_ms: outcome.elapsed_ms }),
                });
                continue;
            }
            cells.push(Cell {
                grade: outcome.grade.to_string(),
                mark: mark(outcome.grade),
                evidence: Some(id.clone()),
                // The whole Actual is in the evidence the cell opens; the tooltip is a glance.
                actual: cut(&outcome.actual, TOOLTIP_CHARS),
                brief: None,
            });
            // The page's copy of a long text is cut (matrix.json has it whole).
            let text = |t: &String| if kept == Kept::Full { t.clone() } else { cut(t, PAGE_TEXT_CHARS) };
            evidence.push(Evidence {
                id,
                row: row.label(),
                check: outcome.id.clone(),
                requirement: checks::info(&outcome.id).map(|i| i.requirement.to_string()).unwrap_or_default(),
                grade: outcome.grade.to_string(),
                mark: mark(outcome.grade),
                expected: text(&outcome.expected),
                actual: text(&outcome.actual),
                sign: outcome.sign.clone(),
                fix: text(&outcome.fix),
                elapsed_ms: outcome.elapsed_ms,
                measurements: (!outcome.measurements.is_null()).then(|| text_content(&page_measurements(&outcome.measurements, kept))),
                chart: chart_id,
            });
        }
        let page_row = PageRow {
            label: row.label(),
            key: format!("{} {}", row.run.profile, row.run.transport),
            config: row.run.config.clone(),
            profile: row.run.profile.as_str().to_string(),
            transport: row.run.transport.as_str().to_string(),
            runtime: row.run.runtime.clone(),
            setup: row.run.setup_error.clone(),
            cells,
        };
        let proxy = row.proxy_label();
        let groups = if row.negative { &mut negative } else { &mut groups };
        match groups.last_mut() {
            Some(group) if group.proxy == proxy && group.control == row.control => group.rows.push(page_row),
            _ => groups.push(Group { proxy, source: row.run.source.clone(), control: row.control, rows: vec![page_row] }),
        }
    }
    Page { groups, negative, evidence, cards }
}

/// Characters of a non-pass cell's Actual shown in its tooltip.
const TOOLTIP_CHARS: usize = 160;
/// Characters of an Expected, Actual or Fix the published page shows (matrix.json and a page
/// written with `--full-evidence` have them whole).
const PAGE_TEXT_CHARS: usize = 300;
/// Longest measurements the published page shows inline; longer ones are in `matrix.json`
/// (the page is for reading the verdicts and the charts, the JSON for tools and debugging).
const PAGE_MEASUREMENTS_CHARS: usize = 600;

/// `text` cut to `max` characters, with an ellipsis when cut.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// A cell's measurements as the page shows them: whole with `--full-evidence` or when short,
/// else where to find them.
fn page_measurements(m: &Value, kept: Kept) -> String {
    let text = pretty_json(m);
    if kept == Kept::Full || text.chars().count() <= PAGE_MEASUREMENTS_CHARS {
        return text;
    }
    format!("{} bytes of measurements: this cell in matrix.json (or the whole page with --full-evidence)", text.len())
}

/// Escapes like minijinja's HTML auto-escape but for `/`, which needs no escaping in HTML and
/// is in every route and config id: `&#x2f;` six times over made the page heavier.
fn formatter(out: &mut minijinja::Output, state: &minijinja::State, value: &minijinja::Value) -> Result<(), minijinja::Error> {
    match value.as_str() {
        Some(text) if state.auto_escape() == AutoEscape::Html && !value.is_safe() => {
            let mut escaped = String::with_capacity(text.len());
            for ch in text.chars() {
                match ch {
                    '&' => escaped.push_str("&amp;"),
                    '<' => escaped.push_str("&lt;"),
                    '>' => escaped.push_str("&gt;"),
                    '"' => escaped.push_str("&quot;"),
                    '\'' => escaped.push_str("&#x27;"),
                    _ => escaped.push(ch),
                }
            }
            out.write_str(&escaped).map_err(|e| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string()))
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// Grade counts over every proxy run (not the control), for the summary line.
fn counts(table: &Table) -> Vec<(String, &'static str, usize)> {
    let outcomes: Vec<&Outcome> = table.rows.iter().filter(|r| !r.control).flat_map(|r| r.cells.iter().flatten().copied()).collect();
    let mut counts: Vec<_> = [Grade::Pass, Grade::Warn, Grade::Fail, Grade::Skip, Grade::Error]
        .into_iter()
        .map(|g| (g.to_string(), mark(g), outcomes.iter().filter(|o| o.grade == g).count()))
        .collect();
    let setup = table.rows.iter().filter(|r| r.run.setup_error.is_some()).count();
    counts.push(("setup".into(), SETUP_MARK, setup));
    counts
}

/// The text of `index.html` as published: passing cells brief.
pub fn render(matrix: &MatrixRun) -> Result<String, minijinja::Error> {
    render_with(matrix, Kept::Summary)
}

/// The text of `index.html`; with full evidence kept every cell has its own evidence section
/// (and every `sse.stream` its chart).
pub fn render_with(matrix: &MatrixRun, kept: Kept) -> Result<String, minijinja::Error> {
    let table = Table::new(matrix);
    let columns: Vec<Column> = table
        .columns
        .iter()
        .map(|id| {
            let (area, name) = id.split_once('.').unwrap_or((id.as_str(), ""));
            Column {
                id: id.clone(),
                area: area.to_string(),
                name: name.to_string(),
                requirement: checks::info(id).map(|i| i.requirement.to_string()).unwrap_or_default(),
            }
        })
        .collect();
    // Only passes and skips are shown from the table (other cells have their own section).
    let usual: BTreeMap<String, String> =
        json::actual_table(matrix).into_iter().filter(|(k, _)| k.ends_with(" pass") || k.ends_with(" skip")).collect();
    let page = rows(&table, kept, &usual);
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.set_formatter(formatter);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_template("index.html", TEMPLATE)?;
    env.get_template("index.html")?.render(context! {
        schema => super::json::SCHEMA,
        started_at => markdown::date_line(&matrix.started_at),
        machine => markdown::machine_line(&matrix.machine),
        idle_s => matrix.idle_s,
        wall => markdown::duration_line(matrix.wall_ms),
        proxies => markdown::proxy_lines(matrix),
        counts => counts(&table),
        columns => columns,
        verdicts => markdown::verdicts(matrix),
        differences => markdown::differences(&matrix.runtime_differences),
        groups => page.groups,
        negative => page.negative,
        chart_size => [CHART_W, CHART_H],
        evidence => page.evidence,
        charts => page.cards,
        usual => serde_json::to_string(&usual).unwrap_or_default().replace("</", "<\\/"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pretty_json_keeps_short_values_on_one_line() {
        let v = json!({"ticks": [{"seq": 0, "lag_ms": 0.4}, {"seq": 1, "lag_ms": 0.5}], "long": "x".repeat(120)});
        let text = pretty_json(&v);
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v);
        assert!(text.contains("\"ticks\": [{\"lag_ms\":0.4,\"seq\":0},{\"lag_ms\":0.5,\"seq\":1}]"), "{text}");
        let lags = json!({"lag_us": (1_000_000..1_000_040).collect::<Vec<u64>>()});
        let text = pretty_json(&lags);
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), lags);
        assert!(text.lines().all(|l| l.len() <= 96), "{text}");
        assert!(text.lines().count() < 10, "{text}");
    }

    #[test]
    fn axis_ends_on_a_whole_step() {
        assert_eq!(nice_step(1900.0), 500.0);
        let (top, ticks) = axis(1900.0, |v, _| v);
        assert_eq!(top, 2000.0);
        assert_eq!(ticks.len(), 5);
    }
}
