//! `performance.md`: the latency each proxy adds, under the `openchamber` profile, to an SSE
//! tick (arrival lag, from `sse.stream`) and to a WebSocket echo (round trip, from
//! `ws.upgrade`), against the direct control measured in the same run.
//!
//! Also reads the SSE tick lists out of `sse.stream` measurements for the HTML chart
//! ([`sse_paths`]). Measurements are read tolerantly: a missing field means no sample.

use hdrhistogram::Histogram;
use minijinja::context;
use mock_server::Profile;
use serde::Serialize;
use serde_json::Value;

use super::markdown::{self, environment, mark, Table};
use super::MatrixRun;
use crate::checks::{Outcome, Tick};
use crate::run::RunResult;

const TEMPLATE: &str = include_str!("../../templates/performance.md.j2");

/// The profile whose runs are compared: the real OpenChamber backend.
pub(crate) const PROFILE: Profile = Profile::Openchamber;

/// The ticks read on one SSE route.
#[derive(Debug, Clone)]
pub struct PathTicks {
    /// The route, without the instrument query.
    pub route: String,
    pub ticks: Vec<Tick>,
    /// Lags as the check recorded them (`lag_us`), when it did.
    pub lag_us: Option<Vec<f64>>,
}

/// How many ticks an `sse.stream` outcome asked for over all its routes, when recorded.
pub fn planned_ticks(outcome: &Outcome) -> Option<u64> {
    // A published pass leaves its plan out: it is the suite's own, `TICKS` per route.
    let per_route = outcome.measurements.pointer("/plan/ticks").and_then(Value::as_u64).unwrap_or(crate::checks::sse::TICKS as u64);
    let routes = outcome.measurements.get("paths").and_then(Value::as_array)?.len() as u64;
    Some(per_route * routes)
}

/// The tick lists of an `sse.stream` outcome, one per route.
pub fn sse_paths(outcome: &Outcome) -> Vec<PathTicks> {
    let Some(paths) = outcome.measurements.get("paths").and_then(Value::as_array) else {
        return Vec::new();
    };
    paths
        .iter()
        .map(|p| {
            let path = p.get("path").and_then(Value::as_str).unwrap_or("?");
            let ticks = p
                .get("ticks")
                .and_then(Value::as_array)
                .map(|ticks| ticks.iter().filter_map(tick).collect())
                .unwrap_or_default();
            let lag_us = p.get("lag_us").and_then(Value::as_array).map(|l| l.iter().filter_map(Value::as_f64).collect());
            PathTicks { route: path.split('?').next().unwrap_or(path).to_string(), ticks, lag_us }
        })
        .collect()
}

fn tick(v: &Value) -> Option<Tick> {
    Some(Tick {
        seq: v.get("seq")?.as_u64()?,
        emitted_at_us: v.get("emitted_at_us")?.as_u64()?,
        arrived_at_us: v.get("arrived_at_us")?.as_u64()?,
    })
}

/// Every tick's lag in microseconds: `lag_us` when recorded, else from the tick timestamps.
pub fn sse_lags_us(outcome: &Outcome) -> Vec<f64> {
    sse_paths(outcome)
        .into_iter()
        .flat_map(|p| match p.lag_us {
            Some(lags) => lags,
            None => p.ticks.iter().map(|t| t.arrived_at_us as f64 - t.emitted_at_us as f64).collect(),
        })
        .collect()
}

/// Every WebSocket echo round trip in microseconds: each route's `echo_rtt_us`, or the
/// top-level list when no route has one.
pub fn ws_echoes_us(outcome: &Outcome) -> Vec<f64> {
    let numbers = |v: Option<&Value>| -> Vec<f64> {
        v.and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default()
    };
    let m = &outcome.measurements;
    let per_route: Vec<f64> = m
        .get("paths")
        .and_then(Value::as_array)
        .map(|paths| paths.iter().flat_map(|p| numbers(p.get("echo_rtt_us"))).collect())
        .unwrap_or_default();
    if per_route.is_empty() {
        numbers(m.get("echo_rtt_us"))
    } else {
        per_route
    }
}

/// p50 and p99 of a set of samples in µs, by nearest rank, to 3 significant digits (an HDR
/// histogram: exact below 2 ms, within 0.1 % above).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub samples: usize,
    pub p50: f64,
    pub p99: f64,
}

impl Percentiles {
    /// `None` without samples. A negative sample (a clock step) counts as 0.
    pub fn of(samples: Vec<f64>) -> Option<Percentiles> {
        let mut histogram = Histogram::<u64>::new(3).ok()?;
        for sample in samples {
            histogram.record(sample.max(0.0).round() as u64).ok()?;
        }
        if histogram.is_empty() {
            return None;
        }
        Some(Percentiles {
            samples: histogram.len() as usize,
            p50: histogram.value_at_quantile(0.50) as f64,
            p99: histogram.value_at_quantile(0.99) as f64,
        })
    }
}

/// A proxy run faster than the control by more than this (p50, µs) means the control was
/// measured under more load than the proxy: the figures then say more about the machine.
const FASTER_THAN_CONTROL_US: f64 = 500.0;

/// One row of a latency table, figures in milliseconds, already formatted.
#[derive(Serialize)]
struct LatencyRow {
    proxy: String,
    config: String,
    grade: String,
    samples: String,
    p50: String,
    p99: String,
    added_p50: String,
    added_p99: String,
    /// Faster than the control beyond noise (see [`FASTER_THAN_CONTROL_US`]).
    faster_than_control: bool,
}

/// What one check measured in one run.
struct Measured<'a> {
    outcome: Option<&'a Outcome>,
    figures: Option<Percentiles>,
    /// Samples a complete run gives (SSE: ticks asked for on every route), when known.
    planned: Option<u64>,
}

fn measured<'a>(run: &'a RunResult, id: &str, samples: fn(&Outcome) -> Vec<f64>, planned: fn(&Outcome) -> Option<u64>) -> Measured<'a> {
    let outcome = run.checks.iter().find(|c| c.id == id);
    Measured {
        outcome,
        figures: outcome.and_then(|o| Percentiles::of(samples(o))),
        planned: outcome.and_then(planned),
    }
}

fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}

/// `control` is the control's figures, `None` on the control's own row.
fn latency_row(label: (String, String), this: &Measured, control: Option<Option<&Percentiles>>) -> LatencyRow {
    let added = |pick: fn(&Percentiles) -> f64| match (&this.figures, control) {
        (_, None) => "(the control)".to_string(),
        (Some(f), Some(Some(c))) => format!("{:+.2} ms", (pick(f) - pick(c)) / 1000.0),
        _ => "—".to_string(),
    };
    let count = this.figures.map_or(0, |f| f.samples);
    LatencyRow {
        proxy: label.0,
        config: label.1,
        grade: this.outcome.map_or("not run".into(), |o| format!("{} {}", mark(o.grade), o.grade)),
        samples: match this.planned {
            Some(planned) => format!("{count} of {planned}"),
            None => count.to_string(),
        },
        p50: this.figures.map_or("—".into(), |f| ms(f.p50)),
        p99: this.figures.map_or("—".into(), |f| ms(f.p99)),
        added_p50: added(|f| f.p50),
        added_p99: added(|f| f.p99),
        faster_than_control: matches!((&this.figures, control), (Some(f), Some(Some(c))) if c.p50 - f.p50 > FASTER_THAN_CONTROL_US),
    }
}

/// A latency table: the control first, then every run of the profile that came up.
fn latency_table(
    table: &Table,
    id: &str,
    samples: fn(&Outcome) -> Vec<f64>,
    planned: fn(&Outcome) -> Option<u64>,
) -> Vec<LatencyRow> {
    let rows: Vec<_> = table
        .rows
        .iter()
        .filter(|r| r.run.profile == PROFILE && r.run.setup_error.is_none())
        .collect();
    let control = rows
        .iter()
        .find(|r| r.control)
        .and_then(|r| measured(r.run, id, samples, planned).figures);
    rows.iter()
        .map(|r| {
            // A config runs once per transport and runtime: those not plain and native are named.
            let mut config = r.run.config.clone();
            for (value, usual) in [(r.run.transport.as_str(), "h1"), (r.run.runtime.as_str(), "native")] {
                if value != usual && !r.control {
                    config.push_str(&format!(" · {value}"));
                }
            }
            let label = (r.proxy_label(), config);
            let control = (!r.control).then_some(control.as_ref());
            latency_row(label, &measured(r.run, id, samples, planned), control)
        })
        .collect()
}

/// The text of `performance.md`.
pub fn render(matrix: &MatrixRun) -> Result<String, minijinja::Error> {
    let table = Table::new(matrix);
    let not_measured: Vec<String> = table
        .rows
        .iter()
        .filter(|r| r.run.profile == PROFILE)
        .filter_map(|r| r.run.setup_error.as_ref().map(|e| format!("{}: {} ({})", r.label(), e.kind, e.message)))
        .collect();
    let sse = latency_table(&table, "sse.stream", sse_lags_us, planned_ticks);
    let ws = latency_table(&table, "ws.upgrade", ws_echoes_us, |_| None);
    let control_loaded = sse.iter().chain(&ws).any(|r| r.faster_than_control);
    let env = environment("performance.md", TEMPLATE);
    env.get_template("performance.md")?.render(context! {
        control_loaded => control_loaded,
        faster_than_control_ms => FASTER_THAN_CONTROL_US / 1000.0,
        started_at => markdown::date_line(&matrix.started_at),
        machine => markdown::machine_line(&matrix.machine),
        profile => PROFILE.as_str(),
        has_control => table.rows.iter().any(|r| r.control && r.run.profile == PROFILE),
        sse => sse,
        ws => ws,
        not_measured => not_measured,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let p = Percentiles::of((1..=100).map(f64::from).collect()).unwrap();
        assert_eq!((p.samples, p.p50, p.p99), (100, 50.0, 99.0));
        let one = Percentiles::of(vec![7.0]).unwrap();
        assert_eq!((one.p50, one.p99), (7.0, 7.0));
        // A buffered tick seconds late: within 0.1 %.
        let late = Percentiles::of(vec![300.0, 4_321_000.0]).unwrap();
        assert!((late.p99 - 4_321_000.0).abs() / 4_321_000.0 < 0.001, "{late:?}");
        assert!(Percentiles::of(Vec::new()).is_none());
    }
}
