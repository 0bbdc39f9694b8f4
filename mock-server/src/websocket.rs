//! The event WebSockets (`/api/event/ws`, `/api/global/event/ws`): `ready` first, then events,
//! JSON heartbeats and protocol pings; plus the instruments `mock_echo`, `mock_silent`,
//! `mock_push_after_ms`, `mock_close`. Also the socket loop `/api/mock/request/ws` reuses.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tokio::time::{interval_at, Instant, Interval};

use crate::params::{upgrade, Params, Reject, Upgrade};
use crate::{now_us, AppState, Shutdown};

/// Protocol ping + JSON heartbeat period of the real server.
pub(crate) const PING_EVERY: Duration = Duration::from_secs(15);
/// Upstream `server.heartbeat` event period.
const EVENT_EVERY: Duration = Duration::from_secs(10);
/// How long to wait for the client's answer to a close frame before dropping the connection.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/event/ws",
            get(|s, p, ws| open(Scope::Directory, s, p, ws)),
        )
        .route(
            "/api/global/event/ws",
            get(|s, p, ws| open(Scope::Global, s, p, ws)),
        )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Directory,
    Global,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Directory => "directory",
            Scope::Global => "global",
        }
    }
}

/// What the client asked of the socket instruments.
#[derive(Debug, Clone, Default)]
pub(crate) struct SocketPlan {
    pub echo: bool,
    /// Nothing after the first frame unless asked: no pings, heartbeats or events.
    pub silent: bool,
    pub push_after: Option<Duration>,
    pub close: Option<u16>,
}

impl SocketPlan {
    pub fn parse(params: &Params) -> Result<Self, Reject> {
        let close = params.bounded("mock_close", 1000..=4999)?.map(|c| c as u16);
        if let Some(code) = close {
            if !sendable_close_code(code) {
                return Err(Reject::bad_request(format!(
                    "mock_close={code} may not be sent in a close frame (RFC 6455 7.4)"
                )));
            }
        }
        Ok(SocketPlan {
            echo: params.flag("mock_echo")?,
            silent: params.flag("mock_silent")?,
            push_after: params.millis("mock_push_after_ms", 0..=3_600_000)?,
            close,
        })
    }
}

/// 1004-1006 and 1015 are reserved for endpoints' own reporting, 1016-2999 for future use.
fn sendable_close_code(code: u16) -> bool {
    !matches!(code, 1004..=1006 | 1015..=2999)
}

async fn open(
    scope: Scope,
    State(state): State<AppState>,
    params: Params,
    ws: Upgrade,
) -> Result<Response, Reject> {
    let plan = SocketPlan::parse(&params)?;
    let ws = upgrade(ws)?;
    let periodic = state.profile().helpers() && !plan.silent;
    let ready = format!(r#"{{"type":"ready","scope":"{}"}}"#, scope.as_str());
    let shutdown = state.shutdown();
    Ok(ws.on_upgrade(move |socket| async move {
        let events = periodic.then_some(scope);
        run(socket, ready, plan, events, shutdown).await
    }))
}

fn every(period: Duration) -> Interval {
    interval_at(Instant::now() + period, period)
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn text(s: String) -> Message {
    Message::Text(Utf8Bytes::from(s))
}

/// Drives one socket: `first` frame, optional close, then echo / push / periodic frames until the
/// client leaves or the instance shuts down. `events` is the scope whose periodic frames to send.
pub(crate) async fn run(
    mut socket: WebSocket,
    first: String,
    plan: SocketPlan,
    events: Option<Scope>,
    mut shutdown: Shutdown,
) {
    if socket.send(text(first)).await.is_err() {
        return;
    }
    if let Some(code) = plan.close {
        close(&mut socket, code, "mock_close").await;
        return;
    }
    let mut pings = events.map(|_| every(PING_EVERY));
    let mut upstream = events.map(|_| every(EVENT_EVERY));
    let mut push = plan.push_after.map(|d| Box::pin(tokio::time::sleep(d)));
    let mut event_id = 0u64;
    loop {
        let sent = tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) if plan.echo => socket.send(msg).await,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => Ok(()),
            },
            _ = tick(&mut pings) => {
                match socket.send(Message::Ping(Default::default())).await {
                    Ok(()) => socket.send(text(format!(r#"{{"type":"heartbeat","timestamp":{}}}"#, now_us() / 1000))).await,
                    err => err,
                }
            }
            _ = tick(&mut upstream) => {
                event_id += 1;
                let payload = r#"{"type":"server.heartbeat","properties":{}}"#;
                let payload = match events {
                    Some(Scope::Global) => format!(r#"{{"directory":"global","payload":{payload}}}"#),
                    _ => payload.to_owned(),
                };
                socket.send(text(format!(r#"{{"type":"event","payload":{payload},"eventId":"{event_id}"}}"#))).await
            }
            _ = async { push.as_mut().expect("guarded").await }, if push.is_some() => {
                push = None;
                socket.send(text(format!(r#"{{"type":"mock.push","emitted_at_us":{}}}"#, now_us()))).await
            }
            _ = shutdown.wait() => {
                close(&mut socket, 1001, "server shutting down").await;
                return;
            }
        };
        if sent.is_err() {
            break;
        }
    }
}

/// Sends a close frame and waits (briefly) for the client's answer, so the code arrives intact.
pub(crate) async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}
