//! Benchmark of the mock itself, driven in-process (no proxy): SSE tick lag with 1,000
//! concurrent streams at 10 ticks/s each, and WebSocket echo round trips over 100 connections.
//! Writes `results/bench-mock.md`. Run with `cargo bench -p mock-server --bench mock`;
//! `MOCK_BENCH_SECS` shortens or lengthens each phase (default 10).
//!
//! The mock is the control of every timing check: if it added lag itself, a proxy could not be
//! told apart from the backend. Targets: p99 tick lag < 10 ms, >= 20,000 echo round trips/s.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use mock_server::{now_us, MockConfig, Profile, RunningMock};
use tokio_tungstenite::tungstenite::Message;

const STREAMS: usize = 1_000;
const TICK_INTERVAL_MS: u64 = 100;
const WS_CONNECTIONS: usize = 100;
const TARGET_P99_TICK_LAG_MS: f64 = 10.0;
const TARGET_ROUND_TRIPS_PER_S: f64 = 20_000.0;

fn main() {
    let secs: u64 = std::env::var("MOCK_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let load_before = loadavg();
    let (ticks, echo) = runtime.block_on(async {
        let mock = mock_server::spawn(
            MockConfig::new(Profile::Openchamber),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .expect("bind the mock");
        let ticks = sse_tick_lag(&mock, secs).await;
        let echo = ws_echo(&mock, secs).await;
        mock.shutdown().await;
        (ticks, echo)
    });
    let load_after = loadavg();
    let report = render(secs, &ticks, &echo, &load_before, &load_after);
    print!("{report}");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../results/bench-mock.md");
    std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/../results")).unwrap();
    std::fs::write(path, report).expect("write results/bench-mock.md");
    eprintln!("wrote {path}");
}

struct TickFigures {
    lag_us: Histogram<u64>,
    expected: u64,
    failed_streams: usize,
}

/// Opens the streams spread over one tick interval (as real clients connect at different
/// moments), then records arrival minus `emitted_at_us` for every tick.
async fn sse_tick_lag(mock: &RunningMock, secs: u64) -> TickFigures {
    let ticks_per_stream = secs * 1000 / TICK_INTERVAL_MS;
    let url = mock.url(&format!(
        "/api/event?ticks={ticks_per_stream}&interval_ms={TICK_INTERVAL_MS}"
    ));
    let client = reqwest::Client::builder()
        .no_gzip()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let spread = Duration::from_micros(TICK_INTERVAL_MS * 1000 / STREAMS as u64);
    let mut tasks = Vec::with_capacity(STREAMS);
    for i in 0..STREAMS {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(spread * i as u32).await;
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let res = client.get(&url).send().await.map_err(|e| e.to_string())?;
            let mut body = res.bytes_stream();
            let mut pending = Vec::new();
            while let Some(chunk) = body.next().await {
                let arrived = now_us();
                pending.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
                while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
                    if let Some(emitted) = emitted_at(&pending[..end]) {
                        hist.record(arrived.saturating_sub(emitted).max(1)).unwrap();
                    }
                    pending.drain(..end + 2);
                }
            }
            Ok::<_, String>(hist)
        }));
    }
    let mut lag_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut failed_streams = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(h) => lag_us.add(h).unwrap(),
            Err(e) => {
                failed_streams += 1;
                eprintln!("stream failed: {e}");
            }
        }
    }
    TickFigures {
        lag_us,
        expected: ticks_per_stream * STREAMS as u64,
        failed_streams,
    }
}

fn emitted_at(frame: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"emitted_at_us\":";
    let at = frame.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = frame[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&frame[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

struct EchoFigures {
    rtt_us: Histogram<u64>,
    elapsed: Duration,
}

/// Each connection sends a small text frame, waits for its echo, repeats, for `secs`.
async fn ws_echo(mock: &RunningMock, secs: u64) -> EchoFigures {
    let url = format!(
        "ws://{}/api/event/ws?mock_echo=1&mock_silent=1",
        mock.addr()
    );
    let mut sockets = Vec::with_capacity(WS_CONNECTIONS);
    for _ in 0..WS_CONNECTIONS {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .expect("connect");
        ws.next().await.unwrap().unwrap(); // ready
        sockets.push(ws);
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
                let payload = "x".repeat(32);
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    ws.send(Message::text(payload.clone())).await.unwrap();
                    match ws.next().await {
                        Some(Ok(Message::Text(_))) => {}
                        other => panic!("no echo: {other:?}"),
                    }
                    hist.record((sent.elapsed().as_micros() as u64).max(1))
                        .unwrap();
                }
                let _ = ws.close(None).await;
                hist
            })
        })
        .collect();
    let mut rtt_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for task in tasks {
        rtt_us.add(task.await.unwrap()).unwrap();
    }
    EchoFigures {
        rtt_us,
        elapsed: start.elapsed(),
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn shortfall(ok: bool, text: String) -> String {
    if ok {
        "met".to_owned()
    } else {
        text
    }
}

fn render(
    secs: u64,
    t: &TickFigures,
    e: &EchoFigures,
    load_before: &str,
    load_after: &str,
) -> String {
    let p50 = ms(t.lag_us.value_at_quantile(0.50));
    let p99 = ms(t.lag_us.value_at_quantile(0.99));
    let max = ms(t.lag_us.max());
    let rps = e.rtt_us.len() as f64 / e.elapsed.as_secs_f64();
    let mut out = String::new();
    let _ = writeln!(out, "# Mock backend benchmark\n");
    let _ = writeln!(
        out,
        "Produced by `cargo bench -p mock-server --bench mock` (`mock-server/benches/mock.rs`). The mock \
         (openchamber profile) is served in-process on 127.0.0.1 and driven directly, no proxy; client \
         and server share one tokio runtime and the machine's cores.\n"
    );
    let _ = writeln!(out, "- date: {}", date());
    let _ = writeln!(out, "- machine: {} cores (nproc), {}", nproc(), cpu_model());
    let _ = writeln!(
        out,
        "- load average (1/5/15 min) before: {load_before}, after: {load_after}"
    );
    let _ = writeln!(out, "- phase length: {secs} s each\n");

    let _ = writeln!(out, "## SSE tick lag\n");
    let _ = writeln!(
        out,
        "{STREAMS} concurrent `/api/event` streams, one tick every {TICK_INTERVAL_MS} ms each \
         ({} ticks/s in all), opened spread over one interval. Lag = arrival at the client minus the \
         tick's `emitted_at_us`.\n",
        STREAMS as u64 * 1000 / TICK_INTERVAL_MS
    );
    let _ = writeln!(out, "| figure | value | target |");
    let _ = writeln!(out, "|---|---|---|");
    let _ = writeln!(
        out,
        "| ticks received | {} of {} | all |",
        t.lag_us.len(),
        t.expected
    );
    let _ = writeln!(out, "| failed streams | {} | 0 |", t.failed_streams);
    let _ = writeln!(out, "| p50 lag | {p50:.3} ms | |");
    let _ = writeln!(
        out,
        "| p99 lag | {p99:.3} ms | < {TARGET_P99_TICK_LAG_MS} ms: {} |",
        shortfall(
            p99 < TARGET_P99_TICK_LAG_MS,
            format!("missed by {:.3} ms", p99 - TARGET_P99_TICK_LAG_MS)
        )
    );
    let _ = writeln!(out, "| max lag | {max:.3} ms | |\n");

    let _ = writeln!(out, "## WebSocket echo\n");
    let _ = writeln!(
        out,
        "{WS_CONNECTIONS} connections to `/api/event/ws?mock_echo=1&mock_silent=1`, each sending a \
         32-byte text frame and waiting for its echo before the next.\n"
    );
    let _ = writeln!(out, "| figure | value | target |");
    let _ = writeln!(out, "|---|---|---|");
    let _ = writeln!(
        out,
        "| round trips | {} in {:.2} s | |",
        e.rtt_us.len(),
        e.elapsed.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| round trips/s | {rps:.0} | >= {TARGET_ROUND_TRIPS_PER_S:.0}: {} |",
        shortfall(
            rps >= TARGET_ROUND_TRIPS_PER_S,
            format!(
                "short by {:.0} ({:.0} %)",
                TARGET_ROUND_TRIPS_PER_S - rps,
                100.0 * (TARGET_ROUND_TRIPS_PER_S - rps) / TARGET_ROUND_TRIPS_PER_S
            )
        )
    );
    let _ = writeln!(
        out,
        "| p50 round trip | {:.3} ms | |",
        ms(e.rtt_us.value_at_quantile(0.50))
    );
    let _ = writeln!(
        out,
        "| p99 round trip | {:.3} ms | |",
        ms(e.rtt_us.value_at_quantile(0.99))
    );
    out
}

fn nproc() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| format!("{} s since the epoch", now_us() / 1_000_000))
}
