//! The SSE routes of both backends (OpenChamber's five, DorkOS's three): per-profile headers,
//! first frames, heartbeats, and the tick instrument (`ticks`, `interval_ms`, `silence_ms`,
//! `hold_ms`, `pad`). Every frame is its own body chunk, so hyper flushes ticks one by one.

use std::convert::Infallible;
use std::fmt::Write;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use tokio::time::Instant;

use crate::params::{header_str, Params, Reject};
use crate::{now_us, AppState, Profile, Shutdown};

/// Whether `path` is one of the SSE routes (Express `compression` skips them by path).
pub(crate) fn is_sse_path(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    matches!(
        segments.as_slice(),
        ["", "api", "event"]
            | ["", "api", "global", "event"]
            | ["", "api", "notifications", "stream"]
            | ["", "api", "openchamber", "events"]
            | ["", "api", "terminal", _, "stream"]
            | ["", "api", "events"]
            | ["", "api", "sessions" | "rooms", _, "events"]
    )
}

pub(crate) fn routes(profile: Profile) -> Router<AppState> {
    use EventStream::*;
    match profile {
        Profile::Openchamber | Profile::Bare => Router::new()
            .route("/api/event", get(|s, p, h| open(Event, s, p, h, None)))
            .route(
                "/api/global/event",
                get(|s, p, h| open(GlobalEvent, s, p, h, None)),
            )
            .route(
                "/api/notifications/stream",
                get(|s, p, h| open(Notifications, s, p, h, None)),
            )
            .route(
                "/api/openchamber/events",
                get(|s, p, h| open(OpenchamberEvents, s, p, h, None)),
            )
            .route(
                "/api/terminal/{session_id}/stream",
                get(|Path(id): Path<String>, s, p, h| open(Terminal, s, p, h, Some(id))),
            ),
        Profile::Dorkos => Router::new()
            .route(
                "/api/events",
                get(|s, p, h| open(DorkosEvents, s, p, h, None)),
            )
            .route(
                "/api/sessions/{id}/events",
                get(|Path(id): Path<String>, s, p, h| open(DorkosDurable, s, p, h, Some(id))),
            )
            .route(
                "/api/rooms/{id}/events",
                get(|Path(id): Path<String>, s, p, h| open(DorkosDurable, s, p, h, Some(id))),
            ),
    }
}

/// One kind of event stream, as the real server serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventStream {
    /// `/api/event`: upstream events proxied as `data: {"type":..,"properties":..}`.
    Event,
    /// `/api/global/event`: the same, wrapped as `{"directory":..,"payload":..}`.
    GlobalEvent,
    /// `/api/notifications/stream`.
    Notifications,
    /// `/api/openchamber/events`.
    OpenchamberEvents,
    /// `/api/terminal/:sessionId/stream` (legacy, still in the docs).
    Terminal,
    /// DorkOS `/api/events`.
    DorkosEvents,
    /// DorkOS `/api/sessions/:id/events`, `/api/rooms/:id/events`: `id:` lines, resumable.
    DorkosDurable,
}

/// A periodic frame the real server sends to keep the stream (and proxies) alive.
#[derive(Debug, Clone, Copy)]
enum Beat {
    /// `:heartbeat` comment.
    Comment,
    /// Upstream `server.heartbeat` event (wrapped on the global stream).
    ServerHeartbeat { global: bool },
    /// `openchamber:heartbeat` data event.
    OpenchamberHeartbeat,
}

impl Beat {
    fn frame(self) -> String {
        match self {
            Beat::Comment => ":heartbeat\n\n".to_owned(),
            Beat::ServerHeartbeat { global } => data_frame(&wrap(
                global,
                r#"{"type":"server.heartbeat","properties":{}}"#,
            )),
            Beat::OpenchamberHeartbeat => data_frame(&format!(
                r#"{{"type":"openchamber:heartbeat","timestamp":{}}}"#,
                now_us() / 1000
            )),
        }
    }
}

fn data_frame(json: &str) -> String {
    format!("data: {json}\n\n")
}

/// The global stream wraps every upstream event with its directory.
fn wrap(global: bool, payload: &str) -> String {
    if global {
        format!(r#"{{"directory":"global","payload":{payload}}}"#)
    } else {
        payload.to_owned()
    }
}

impl EventStream {
    fn content_type(self) -> &'static str {
        match self {
            EventStream::Notifications | EventStream::OpenchamberEvents | EventStream::Terminal => {
                "text/event-stream; charset=utf-8"
            }
            _ => "text/event-stream",
        }
    }

    fn cache_control(self) -> &'static str {
        match self {
            EventStream::Notifications | EventStream::OpenchamberEvents | EventStream::Terminal => {
                "no-cache, no-transform"
            }
            _ => "no-cache",
        }
    }

    fn heartbeats(self) -> &'static [(Duration, Beat)] {
        const fn s(secs: u64) -> Duration {
            Duration::from_secs(secs)
        }
        const EVENT: &[(Duration, Beat)] = &[
            (s(20), Beat::Comment),
            (s(10), Beat::ServerHeartbeat { global: false }),
        ];
        const GLOBAL: &[(Duration, Beat)] = &[
            (s(20), Beat::Comment),
            (s(10), Beat::ServerHeartbeat { global: true }),
        ];
        const NOTIFICATIONS: &[(Duration, Beat)] = &[(s(20), Beat::Comment)];
        const OPENCHAMBER: &[(Duration, Beat)] = &[(s(25), Beat::OpenchamberHeartbeat)];
        const EVERY_15S: &[(Duration, Beat)] = &[(s(15), Beat::Comment)];
        match self {
            EventStream::Event => EVENT,
            EventStream::GlobalEvent => GLOBAL,
            EventStream::Notifications => NOTIFICATIONS,
            EventStream::OpenchamberEvents => OPENCHAMBER,
            EventStream::Terminal | EventStream::DorkosEvents | EventStream::DorkosDurable => {
                EVERY_15S
            }
        }
    }

    fn first_frames(self, id: Option<&str>) -> Vec<String> {
        let connected = r#"{"type":"server.connected","properties":{}}"#;
        let ms = now_us() / 1000;
        let id_json = serde_json::to_string(id.unwrap_or("")).unwrap_or_default();
        match self {
            EventStream::Event => vec![data_frame(connected)],
            EventStream::GlobalEvent => vec![data_frame(&wrap(true, connected))],
            EventStream::Notifications => vec![data_frame(&format!(
                r#"{{"type":"openchamber:notification-stream-ready","timestamp":{ms}}}"#
            ))],
            EventStream::OpenchamberEvents => vec![data_frame(&format!(
                r#"{{"type":"openchamber:event-stream-ready","timestamp":{ms}}}"#
            ))],
            EventStream::Terminal => vec![
                data_frame(&format!(r#"{{"type":"connected","sessionId":{id_json}}}"#)),
                data_frame(r#"{"type":"data","data":"$ "}"#),
            ],
            EventStream::DorkosEvents => vec![data_frame(r#"{"type":"connected"}"#)],
            EventStream::DorkosDurable => vec![data_frame(&format!(
                r#"{{"type":"connected","streamId":{id_json}}}"#
            ))],
        }
    }

    /// DorkOS streams number their events with `id:` lines.
    fn tick_ids(self) -> bool {
        matches!(self, EventStream::DorkosEvents | EventStream::DorkosDurable)
    }
}

/// What the client asked of the tick instrument.
#[derive(Debug, Clone)]
struct TickPlan {
    ticks: Option<u64>,
    interval: Duration,
    silence: Duration,
    hold: Option<Duration>,
    pad: String,
    /// `seq` of the first tick (DorkOS durable streams resume after `Last-Event-ID`).
    first_seq: u64,
    /// The reconnection time to ask of an `EventSource` (`retry:`), sent before anything else.
    retry: Option<u64>,
}

const MAX_MS: u64 = 3_600_000;

impl TickPlan {
    fn parse(params: &Params) -> Result<Self, Reject> {
        Ok(TickPlan {
            ticks: params.bounded("ticks", 0..=10_000)?,
            interval: params
                .millis("interval_ms", 1..=60_000)?
                .unwrap_or(Duration::from_millis(100)),
            silence: params.millis("silence_ms", 0..=MAX_MS)?.unwrap_or_default(),
            hold: params.millis("hold_ms", 0..=MAX_MS)?,
            pad: "x".repeat(params.bounded("pad", 0..=65_536)?.unwrap_or(0) as usize),
            first_seq: 0,
            retry: params.bounded("retry_ms", 0..=MAX_MS)?,
        })
    }

    /// When tick `n` (counted from 0) is due: the first right after the first frames.
    fn tick_at(&self, start: Instant, n: u64) -> Instant {
        start + self.interval * n as u32
    }

    /// When the stream ends: `hold` after the last tick; never without `ticks` and `hold`.
    fn end(&self, start: Instant) -> Option<Instant> {
        let hold = self.hold.unwrap_or_default();
        match self.ticks {
            Some(0) => Some(start + hold),
            Some(n) => Some(self.tick_at(start, n - 1) + hold),
            None => self.hold.map(|h| start + h),
        }
    }

    fn tick_frame(&self, seq: u64, with_id: bool) -> Bytes {
        let mut frame = String::with_capacity(96 + self.pad.len());
        if with_id {
            let _ = writeln!(frame, "id: {seq}");
        }
        let _ = write!(
            frame,
            "data: {{\"type\":\"mock.tick\",\"seq\":{seq},\"emitted_at_us\":{},\"pad\":\"{}\"}}\n\n",
            now_us(),
            self.pad
        );
        Bytes::from(frame)
    }
}

async fn open(
    kind: EventStream,
    State(state): State<AppState>,
    params: Params,
    headers: HeaderMap,
    id: Option<String>,
) -> Result<Response, Reject> {
    let mut plan = TickPlan::parse(&params)?;
    if kind == EventStream::DorkosDurable {
        if let Some(last) = header_str(&headers, "last-event-id") {
            let last: u64 = last.trim().parse().map_err(|_| {
                Reject::bad_request(format!("Last-Event-ID must be an integer, got {last:?}"))
            })?;
            plan.first_seq = last.saturating_add(1);
        }
    }
    let helpers = state.profile().helpers();
    let body = stream_body(kind, helpers, plan, id, state.shutdown());

    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(kind.content_type()),
    );
    if helpers {
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(kind.cache_control()),
        );
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    }
    Ok(res)
}

/// The byte stream: silence, first frames, then ticks and heartbeats in time order, then end.
fn stream_body(
    kind: EventStream,
    helpers: bool,
    plan: TickPlan,
    id: Option<String>,
    mut shutdown: Shutdown,
) -> Body {
    let stream = async_stream::stream! {
        // Silence means no byte at all: not even the first frame or a heartbeat.
        if !plan.silence.is_zero() && !shutdown.sleep_until(Instant::now() + plan.silence).await {
            return;
        }
        // A client told to reconnect quickly (the browser tier's resume probe) hears it first.
        if let Some(ms) = plan.retry {
            yield Ok::<Bytes, Infallible>(Bytes::from(format!("retry: {ms}\n\n")));
        }
        for frame in kind.first_frames(id.as_deref()) {
            yield Ok::<Bytes, Infallible>(Bytes::from(frame));
        }
        let start = Instant::now();
        let beats = if helpers { kind.heartbeats() } else { &[] };
        let mut next_beat: Vec<Instant> = beats.iter().map(|(every, _)| start + *every).collect();
        let ticks = plan.ticks.unwrap_or(0);
        let end = plan.end(start);
        let mut sent = 0u64;
        loop {
            let next_tick = (sent < ticks).then(|| plan.tick_at(start, sent));
            let beat = next_beat.iter().enumerate().min_by_key(|(_, at)| **at).map(|(i, at)| (i, *at));
            let deadline = [next_tick, beat.map(|b| b.1), end].into_iter().flatten().min();
            let Some(deadline) = deadline else {
                // No tick, no heartbeat, no end (bare profile without instruments): stay open.
                shutdown.wait().await;
                break;
            };
            if !shutdown.sleep_until(deadline).await {
                break;
            }
            // At equal times a tick goes before the end, so `hold_ms=0` still sends the last tick.
            if next_tick == Some(deadline) {
                yield Ok(plan.tick_frame(plan.first_seq + sent, kind.tick_ids()));
                sent += 1;
            } else if end == Some(deadline) {
                break;
            } else if let Some((i, _)) = beat {
                yield Ok(Bytes::from(beats[i].1.frame()));
                next_beat[i] += beats[i].0;
            }
        }
    };
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_paths() {
        for p in [
            "/api/event",
            "/api/global/event",
            "/api/notifications/stream",
            "/api/openchamber/events",
            "/api/terminal/abc/stream",
            "/api/events",
            "/api/sessions/1/events",
            "/api/rooms/x/events",
        ] {
            assert!(is_sse_path(p), "{p}");
        }
        for p in ["/api/event/ws", "/api/mock/json", "/api/terminal/ws", "/"] {
            assert!(!is_sse_path(p), "{p}");
        }
    }
}
