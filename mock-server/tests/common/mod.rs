//! Helpers shared by the integration tests: an in-process mock per test on 127.0.0.1:0, a
//! client that neither adds nor decodes gzip, SSE frame reading and WebSocket connecting.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use mock_server::{MockConfig, Profile, RunningMock};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Generous bound for anything that should be immediate (a loaded 2-core machine).
pub const PATIENCE: Duration = Duration::from_secs(10);

pub async fn mock(profile: Profile) -> RunningMock {
    mock_with(MockConfig::new(profile)).await
}

pub async fn mock_with(config: MockConfig) -> RunningMock {
    mock_server::spawn(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("mock binds 127.0.0.1:0")
}

/// No automatic `Accept-Encoding` and no decoding: the tests look at the wire.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_gzip().build().unwrap()
}

pub fn header<'a>(res: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Reads an SSE body frame by frame (split on blank lines), with the arrival time of each.
pub struct SseReader {
    stream: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

pub struct Frame {
    pub text: String,
    pub arrived: Instant,
    pub arrived_us: u64,
}

impl Frame {
    /// The JSON of the frame's `data:` line.
    pub fn json(&self) -> serde_json::Value {
        let data = self
            .text
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap_or_else(|| panic!("no data line in {:?}", self.text));
        serde_json::from_str(data).unwrap()
    }

    pub fn is_comment(&self) -> bool {
        self.text.starts_with(':')
    }
}

impl SseReader {
    pub fn new(res: reqwest::Response) -> Self {
        SseReader {
            stream: res.bytes_stream().boxed(),
            buf: Vec::new(),
        }
    }

    /// The next complete frame; `None` when the stream ended.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let rest = self.buf.split_off(pos + 2);
                let frame = std::mem::replace(&mut self.buf, rest);
                return Some(Frame {
                    text: String::from_utf8(frame[..pos].to_vec()).unwrap(),
                    arrived: Instant::now(),
                    arrived_us: mock_server::now_us(),
                });
            }
            match tokio::time::timeout(PATIENCE * 3, self.stream.next()).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.unwrap()),
                Ok(None) => {
                    assert!(
                        self.buf.is_empty(),
                        "stream ended mid-frame: {:?}",
                        self.buf
                    );
                    return None;
                }
                Err(_) => panic!("no SSE frame within {:?}", PATIENCE * 3),
            }
        }
    }

    /// The next raw body chunk (to see whether any byte at all arrives).
    pub async fn next_chunk(&mut self) -> Option<bytes::Bytes> {
        self.stream.next().await.map(|c| c.unwrap())
    }

    /// Whether the body has ended (cleanly or by a broken connection) within patience.
    pub async fn ends(&mut self) -> bool {
        loop {
            match tokio::time::timeout(PATIENCE, self.stream.next()).await {
                Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// GET with extra headers (and no automatic `Accept-Encoding`).
pub async fn get(mock: &RunningMock, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client().get(mock.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// POST `body` with a `Content-Type` (none when `None`).
pub async fn post(
    mock: &RunningMock,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut req = client().post(mock.url(path)).body(body);
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    req.send().await.unwrap()
}

/// Opens an SSE stream without `Accept-Encoding`; its headers and a frame reader.
pub async fn sse(
    mock: &RunningMock,
    path_and_query: &str,
) -> (reqwest::header::HeaderMap, SseReader) {
    sse_with(mock, path_and_query, &[]).await
}

pub async fn sse_with(
    mock: &RunningMock,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> (reqwest::header::HeaderMap, SseReader) {
    let res = get(mock, path_and_query, headers).await;
    assert_eq!(res.status(), 200, "GET {path_and_query}");
    (res.headers().clone(), SseReader::new(res))
}

pub fn hval<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Connects a WebSocket with extra request headers; the handshake error is returned as is.
pub async fn ws_connect(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake within patience")
        .map(|(ws, _)| ws)
}

pub fn ws_url(mock: &RunningMock, path_and_query: &str) -> String {
    format!("ws://{}{}", mock.addr(), path_and_query)
}

/// The next message other than pings/pongs, within patience.
pub async fn ws_next(ws: &mut Ws) -> tokio_tungstenite::tungstenite::Message {
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let msg = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a WebSocket message within patience")
            .expect("socket open")
            .expect("no socket error");
        if !matches!(msg, Message::Ping(_) | Message::Pong(_)) {
            return msg;
        }
    }
}

pub async fn ws_next_json(ws: &mut Ws) -> serde_json::Value {
    match ws_next(ws).await {
        tokio_tungstenite::tungstenite::Message::Text(t) => serde_json::from_str(&t).unwrap(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}
