//! The terminal WebSocket `/api/terminal/ws`, protocol v3: binary frames only, each `0x01`
//! followed by UTF-8 JSON, 64 KiB max message. hello / attach → snapshot / write → output /
//! ping → pong; text frames and malformed frames get `BAD_FRAME`.

use std::collections::HashMap;

use axum::extract::ws::{Message, WebSocket};
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};
use tokio::time::{interval_at, Instant};

use crate::params::{upgrade, Params, Reject, Upgrade};
use crate::websocket::{close, PING_EVERY};
use crate::{AppState, Shutdown};

const PROTOCOL_VERSION: u64 = 3;
const FRAME_TAG: u8 = 0x01;
/// `ws` `maxPayload` of the real server; a bigger message closes the socket with 1009.
const MAX_MESSAGE: usize = 64 * 1024;

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/api/terminal/ws", get(open))
}

async fn open(
    State(state): State<AppState>,
    params: Params,
    ws: Upgrade,
) -> Result<Response, Reject> {
    let pings = state.profile().helpers() && !params.flag("mock_silent")?;
    let ws = upgrade(ws)?;
    let shutdown = state.shutdown();
    Ok(ws
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| run(socket, pings, shutdown)))
}

/// `0x01` + JSON.
fn encode(value: &Value) -> Message {
    let mut frame = Vec::with_capacity(64);
    frame.push(FRAME_TAG);
    serde_json::to_writer(&mut frame, value).expect("a JSON value always serializes");
    Message::Binary(frame.into())
}

fn error(code: &str, message: impl Into<String>) -> Value {
    json!({ "t": "error", "code": code, "message": message.into() })
}

fn bad_frame(message: impl Into<String>) -> Value {
    error("BAD_FRAME", message)
}

/// The JSON object of a client frame, or the `BAD_FRAME` answer.
fn decode(msg: &Message) -> Result<Map<String, Value>, Value> {
    let bytes = match msg {
        Message::Binary(b) => b,
        Message::Text(_) => {
            return Err(bad_frame(
                "text frames are not part of protocol v3: send binary 0x01 + JSON",
            ))
        }
        _ => return Err(bad_frame("unexpected frame")),
    };
    match bytes.split_first() {
        Some((&FRAME_TAG, json)) => match serde_json::from_slice(json) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(bad_frame("frame JSON must be an object")),
            Err(e) => Err(bad_frame(format!("malformed JSON: {e}"))),
        },
        _ => Err(bad_frame("binary frames must start with the 0x01 tag")),
    }
}

/// The per-connection terminal sessions: output sequence numbers per attached session id.
#[derive(Default)]
struct Sessions {
    output_seq: HashMap<String, u64>,
}

impl Sessions {
    /// The answers to one client frame (possibly none).
    fn handle(&mut self, msg: &Message) -> Vec<Value> {
        let frame = match decode(msg) {
            Ok(frame) => frame,
            Err(answer) => return vec![answer],
        };
        let session = frame.get("s").filter(|s| s.is_string() || s.is_number());
        let key = session.map(Value::to_string);
        match (frame.get("t").and_then(Value::as_str), session, key) {
            (Some("hello"), _, _) => match frame.get("v").and_then(Value::as_u64) {
                Some(PROTOCOL_VERSION) | None => vec![],
                Some(v) => vec![error(
                    "UNSUPPORTED_VERSION",
                    format!("protocol v{v} not supported, v3 only"),
                )],
            },
            (Some("ping"), _, _) => vec![json!({ "t": "pong" })],
            (Some("attach"), Some(s), Some(key)) => {
                self.output_seq.entry(key).or_insert(0);
                vec![json!({ "t": "snapshot", "s": s, "d": "" })]
            }
            (Some("detach"), Some(_), Some(key)) => {
                self.output_seq.remove(&key);
                vec![]
            }
            (Some("write"), Some(s), Some(key)) => {
                let Some(data) = frame.get("d").and_then(Value::as_str) else {
                    return vec![bad_frame("write needs a string d")];
                };
                let seq = self.output_seq.entry(key).or_insert(0);
                *seq += 1;
                let mut answers = vec![json!({ "t": "output", "s": s, "q": *seq, "d": data })];
                // Lets a check see the `exit` frame travel through the proxy.
                if data.trim() == "exit" {
                    answers.push(json!({ "t": "exit", "s": s, "code": 0 }));
                }
                answers
            }
            (Some("attach" | "detach" | "write"), _, _) => {
                vec![bad_frame("missing session id s (string or number)")]
            }
            (Some(other), _, _) => vec![error(
                "UNKNOWN_TYPE",
                format!("unknown frame type {other:?}"),
            )],
            (None, _, _) => vec![bad_frame("missing frame type t")],
        }
    }
}

async fn run(mut socket: WebSocket, pings: bool, mut shutdown: Shutdown) {
    let hello = json!({ "t": "hello", "v": PROTOCOL_VERSION });
    if socket.send(encode(&hello)).await.is_err() {
        return;
    }
    let mut sessions = Sessions::default();
    let mut ping_timer = interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None => return,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(msg)) => {
                    for answer in sessions.handle(&msg) {
                        if socket.send(encode(&answer)).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Err(_)) => {
                    // Over maxPayload (or a protocol error): `ws` closes with 1009.
                    close(&mut socket, 1009, "message too big").await;
                    return;
                }
            },
            _ = ping_timer.tick(), if pings => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            _ = shutdown.wait() => {
                close(&mut socket, 1001, "server shutting down").await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(json: &str) -> Message {
        let mut b = vec![FRAME_TAG];
        b.extend_from_slice(json.as_bytes());
        Message::Binary(b.into())
    }

    #[test]
    fn write_is_echoed_with_sequence_numbers() {
        let mut s = Sessions::default();
        assert_eq!(
            s.handle(&frame(r#"{"t":"attach","s":"a"}"#))[0]["t"],
            "snapshot"
        );
        let out = s.handle(&frame(r#"{"t":"write","s":"a","d":"ls\r"}"#));
        assert_eq!(out[0], json!({"t":"output","s":"a","q":1,"d":"ls\r"}));
        let out = s.handle(&frame(r#"{"t":"write","s":"a","d":"x"}"#));
        assert_eq!(out[0]["q"], 2);
    }

    #[test]
    fn bad_frames() {
        let mut s = Sessions::default();
        for msg in [
            Message::Text("{\"t\":\"ping\"}".into()),
            Message::Binary(b"{\"t\":\"ping\"}".to_vec().into()),
            frame("{not json"),
            frame("[1]"),
            frame(r#"{"t":"write","s":"a"}"#),
        ] {
            assert_eq!(s.handle(&msg)[0]["code"], "BAD_FRAME", "{msg:?}");
        }
        assert_eq!(
            s.handle(&frame(r#"{"t":"nope"}"#))[0]["code"],
            "UNKNOWN_TYPE"
        );
    }
}
