//! The client side of every check, acting as a browser would: HTTP requests and WebSocket
//! handshakes sent to the target's address with the site's `Host`, from the target's client
//! address (not the proxy's own 127.0.0.1, so forwarded headers can tell the two apart), and the
//! SSE tick reader that stamps each event the moment its bytes arrive. Every network operation
//! here has a timeout, so a check never hangs on a proxy that stops answering.

use std::fmt::Display;
use std::future::Future;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::Eventsource;
use flate2::write::GzDecoder;
use futures::{SinkExt, StreamExt};
use mock_server::now_us;
use reqwest::header::{HeaderMap, ACCEPT, ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, HOST};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use super::Target;
use crate::tls::Transport;

/// Opening a TCP connection to a proxy on loopback takes microseconds; ten seconds is a dead
/// proxy, not a slow one.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Budget for one exchange that takes milliseconds when it works (a handshake, an echo, a small
/// response): far above any scheduling noise, far below "hangs".
pub(crate) const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);

/// A fresh client for one check, connecting from the target's client address: no automatic
/// decompression (checks need the bytes and the `Content-Encoding` as the proxy sent them), no
/// connection kept between requests (each request opens its own connection, as separate browser
/// tabs would), no system proxy. HTTP/1.1 only on `h1` and `h1-tls`; on `h2` the client offers
/// `h2` and `http/1.1` by ALPN as a browser does. Over TLS it trusts the run's authority alone
/// and resolves the site's name to the target's address, so SNI and Host are the site's.
pub(crate) fn http_client(target: &Target) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_gzip()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .connect_timeout(CONNECT_TIMEOUT)
        .local_address(source_address(target))
        .redirect(reqwest::redirect::Policy::none());
    if target.transport != Transport::H2 {
        builder = builder.http1_only();
    }
    if let (true, Some(trust)) = (target.transport.is_tls(), &target.trust) {
        let ca = reqwest::Certificate::from_pem(trust.ca_pem.as_bytes())
            .expect("the run's authority is PEM the suite itself wrote");
        builder = builder
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .https_only(true)
            .resolve(&target.host, target.addr);
    }
    builder
        .build()
        .expect("a client with the run's own authority always builds")
}

/// The local address the client binds: the target's client address when it can reach the
/// target (same address family), else none (the system picks, as for any client).
fn source_address(target: &Target) -> Option<IpAddr> {
    (target.client_ip.is_ipv4() == target.addr.is_ipv4()).then_some(target.client_ip)
}

/// A TCP connection to the target from its client address.
pub(crate) async fn connect(target: &Target) -> io::Result<TcpStream> {
    let socket = if target.addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source_address(target) {
        socket.bind(SocketAddr::new(ip, 0)).map_err(|e| {
            io::Error::new(e.kind(), format!("binding the client address {ip}: {e}"))
        })?;
    }
    socket.connect(target.addr).await
}

/// A request to `path` (with its query) on the target, carrying the site's `Host`. Over TLS
/// the URL names the site itself (the client resolves it to the target), so Host, or HTTP/2's
/// `:authority`, is the site's name without a port, as a browser on port 443 sends it.
pub(crate) fn request(
    client: &reqwest::Client,
    method: reqwest::Method,
    target: &Target,
    path: &str,
) -> reqwest::RequestBuilder {
    if target.transport.is_tls() {
        return client.request(method, format!("https://{}{}", target.host, path));
    }
    client
        .request(method, format!("http://{}{}", target.addr, path))
        .header(HOST, &target.host)
}

pub(crate) fn get(
    client: &reqwest::Client,
    target: &Target,
    path: &str,
) -> reqwest::RequestBuilder {
    request(client, reqwest::Method::GET, target, path)
}

/// Runs `fut` under a timeout; the error says what failed and why, with the error's causes
/// (reqwest's own message alone is "error sending request").
pub(crate) async fn within<T, E>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, String>
where
    E: std::error::Error,
{
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {}", error_chain(&e))),
        Err(_) => Err(format!("{what}: nothing within {}", secs(limit))),
    }
}

/// An error with its causes, `outer: inner: root`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// `75 s`, `1.5 s`.
pub(crate) fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

/// Milliseconds since `start`, for evidence.
pub(crate) fn ms_since(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// All values of one header, joined with `, ` as a recipient would combine them.
pub(crate) fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// Headers as `[[name, value], ...]`, the shape the mock reports what it saw in.
pub(crate) fn headers_json(headers: &HeaderMap) -> Value {
    Value::Array(
        headers
            .iter()
            .map(|(k, v)| json!([k.as_str(), String::from_utf8_lossy(v.as_bytes())]))
            .collect(),
    )
}

/// The address the proxy sees this client connect from: the target's client address, or (when
/// that cannot reach the target) the one the routing picks (no packet is sent to find it).
pub(crate) fn client_ip(target: &Target) -> IpAddr {
    if let Some(ip) = source_address(target) {
        return ip;
    }
    let unspecified: SocketAddr = if target.addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    std::net::UdpSocket::bind(unspecified)
        .and_then(|s| s.connect(target.addr).and_then(|_| s.local_addr()))
        .map(|a| a.ip())
        .unwrap_or(target.addr.ip())
}

/// Reads a response body under a timeout (the body of an error page, a JSON report).
pub(crate) async fn body_bytes(resp: reqwest::Response, limit: Duration) -> Result<Bytes, String> {
    within(limit, "reading the body", resp.bytes()).await
}

/// At most `max` characters of a body, for evidence.
pub(crate) fn snippet(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        s.push('…');
    }
    s.trim().to_string()
}

// ---------------------------------------------------------------------------------------------
// WebSocket

/// A byte stream a WebSocket runs on: TCP, or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(crate) type Ws = WebSocketStream<Box<dyn Io>>;

/// What a WebSocket over the `h2` transport is: a browser opens it as HTTP/1.1 over TLS unless
/// the proxy advertises extended CONNECT (RFC 8441), which nginx never does; evidence says so.
pub(crate) const WS_OVER_H2: &str = "WebSocket over HTTP/1.1 on TLS (a browser falls back to it on an h2 site unless the proxy advertises extended CONNECT)";

/// The TLS session of a WebSocket: ALPN `http/1.1` (the Upgrade handshake is HTTP/1.1), SNI the
/// site's name, the run's authority trusted alone.
async fn tls_for_ws(target: &Target, tcp: TcpStream) -> Result<Box<dyn Io>, String> {
    let Some(trust) = &target.trust else {
        return Err("a TLS transport without the run's authority".into());
    };
    let config = trust.client_config(&[b"http/1.1"])?;
    let name = rustls_pki_types::ServerName::try_from(target.host.clone())
        .map_err(|e| format!("{} is not a server name: {e}", target.host))?;
    let tls = within(
        EXCHANGE_TIMEOUT,
        "TLS handshake",
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await?;
    Ok(Box::new(tls))
}

/// What [`ws_next`] says when the deadline passed without a frame (and without a close).
pub(crate) const NO_FRAME: &str = "no frame before the deadline";

/// An accepted handshake.
pub(crate) struct Upgraded {
    pub status: u16,
    pub headers: HeaderMap,
    /// Milliseconds from the TCP connect to the 101.
    pub handshake_ms: u64,
}

/// A handshake that did not end in 101.
#[derive(Debug)]
pub(crate) struct Refused {
    /// The status the proxy or backend answered with, when there was an HTTP answer.
    pub status: Option<u16>,
    pub detail: String,
}

impl Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(status) => write!(f, "HTTP {status} instead of 101 ({})", self.detail),
            None => f.write_str(&self.detail),
        }
    }
}

/// Opens a WebSocket to `path` (with its query) through the target, with the site's `Host` and
/// any `extra` headers (Origin, Authorization).
pub(crate) async fn ws_connect(
    target: &Target,
    path: &str,
    extra: &[(&str, String)],
) -> Result<(Ws, Upgraded), Refused> {
    let refused = |detail: String| Refused {
        status: None,
        detail,
    };
    let start = Instant::now();
    let tcp = within(CONNECT_TIMEOUT, "connect", connect(target))
        .await
        .map_err(refused)?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = if target.transport.is_tls() {
        tls_for_ws(target, tcp).await.map_err(refused)?
    } else {
        Box::new(tcp)
    };
    let mut request = format!("{}://{}{}", target.transport.ws_scheme(), target.host, path)
        .into_client_request()
        .map_err(|e| refused(format!("invalid request: {e}")))?;
    for (name, value) in extra {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| refused(format!("invalid header name {name}: {e}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|e| refused(format!("invalid header value {value:?}: {e}")))?;
        request.headers_mut().insert(name, value);
    }
    match tokio::time::timeout(
        EXCHANGE_TIMEOUT,
        tokio_tungstenite::client_async(request, stream),
    )
    .await
    {
        Ok(Ok((ws, response))) => Ok((
            ws,
            Upgraded {
                status: response.status().as_u16(),
                headers: response.headers().clone(),
                handshake_ms: ms_since(start),
            },
        )),
        Ok(Err(tungstenite::Error::Http(response))) => Err(Refused {
            status: Some(response.status().as_u16()),
            detail: match response.body().as_deref() {
                Some(body) if !body.is_empty() => format!("body {:?}", snippet(body, 120)),
                _ => "no body".to_string(),
            },
        }),
        Ok(Err(e)) => Err(refused(format!("handshake failed: {}", error_chain(&e)))),
        Err(_) => Err(refused(format!(
            "no handshake answer within {}",
            secs(EXCHANGE_TIMEOUT)
        ))),
    }
}

/// The next text or binary frame before `deadline`. Pings are answered by tungstenite and,
/// like pongs, skipped; a close, an error or the end of the connection is an error.
pub(crate) async fn ws_next(ws: &mut Ws, deadline: Instant) -> Result<Message, String> {
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Err(NO_FRAME.to_string()),
            Ok(None) => return Err("connection ended".to_string()),
            Ok(Some(Err(e))) => return Err(format!("connection error: {}", error_chain(&e))),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Err(match frame {
                    Some(f) => format!(
                        "closed by the peer (code {}, {:?})",
                        u16::from(f.code),
                        f.reason.as_str()
                    ),
                    None => "closed by the peer".to_string(),
                })
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => continue,
            Ok(Some(Ok(msg))) => return Ok(msg),
        }
    }
}

pub(crate) async fn ws_send(ws: &mut Ws, msg: Message) -> Result<(), String> {
    within(EXCHANGE_TIMEOUT, "sending a frame", ws.send(msg)).await
}

/// Ends a WebSocket politely; errors are irrelevant once the check has its evidence.
pub(crate) async fn ws_close(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
}

/// The JSON of a text frame.
pub(crate) fn text_json(msg: &Message) -> Option<Value> {
    match msg {
        Message::Text(text) => serde_json::from_str(text.as_str()).ok(),
        _ => None,
    }
}

/// A frame as evidence: kind, length and the start of its content.
pub(crate) fn describe_frame(msg: &Message) -> String {
    match msg {
        Message::Text(t) => format!("text {:?}", snippet(t.as_bytes(), 100)),
        Message::Binary(b) => format!("binary, {} bytes", b.len()),
        other => format!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// SSE

/// One `mock.tick` event as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tick {
    pub seq: u64,
    pub emitted_at_us: u64,
    pub arrived_at_us: u64,
}

impl Tick {
    /// What the path between mock and client added (same clock on both ends).
    pub fn lag_us(&self) -> i64 {
        self.arrived_at_us as i64 - self.emitted_at_us as i64
    }

    pub fn to_json(&self) -> Value {
        json!({
            "seq": self.seq,
            "emitted_at_us": self.emitted_at_us,
            "arrived_at_us": self.arrived_at_us,
            "lag_ms": (self.lag_us() as f64 / 100.0).round() / 10.0,
        })
    }
}

/// How long to keep reading a stream: at least until `until`, and `extend` past the last tick
/// (so a mock slowed by a loaded machine is not mistaken for a late proxy), never past `cap`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub until: Instant,
    pub extend: Duration,
    pub cap: Instant,
}

/// What a client reading one SSE stream saw.
#[derive(Debug)]
pub(crate) struct SseRead {
    pub path: String,
    /// `None` when no response arrived.
    pub status: Option<u16>,
    pub headers: HeaderMap,
    pub content_encoding: Option<String>,
    pub ticks: Vec<Tick>,
    /// Every event, ticks included (first frames, heartbeat events).
    pub events: usize,
    /// Why reading stopped.
    pub end: String,
    /// Milliseconds from the request to the end of reading.
    pub read_ms: u64,
}

impl SseRead {
    pub fn to_json(&self) -> Value {
        json!({
            "path": self.path,
            "status": self.status,
            "headers": headers_json(&self.headers),
            "content_encoding": self.content_encoding,
            "events": self.events,
            "end": self.end,
            "read_ms": self.read_ms,
            "ticks": self.ticks.iter().map(Tick::to_json).collect::<Vec<_>>(),
            "lag_us": self.ticks.iter().map(Tick::lag_us).collect::<Vec<_>>(),
        })
    }
}

/// Decodes a body as it arrives, chunk by chunk, per its `Content-Encoding`.
enum Decoding {
    Identity,
    Gzip(Box<GzDecoder<Vec<u8>>>),
}

impl Decoding {
    fn chunk(&mut self, chunk: Bytes) -> io::Result<Bytes> {
        match self {
            Decoding::Identity => Ok(chunk),
            Decoding::Gzip(dec) => {
                dec.write_all(&chunk)?;
                dec.flush()?;
                Ok(Bytes::from(std::mem::take(dec.get_mut())))
            }
        }
    }
}

/// Opens `path` as a browser's EventSource does (`Accept: text/event-stream`, plus
/// `Accept-Encoding: gzip` when `gzip`), and reads events until `want` ticks have arrived or
/// the window closes. Each event is stamped when the bytes that complete it arrive.
pub(crate) async fn read_ticks(
    target: &Target,
    path: &str,
    gzip: bool,
    want: usize,
    window: Window,
) -> SseRead {
    let start = Instant::now();
    let mut read = SseRead {
        path: path.to_string(),
        status: None,
        headers: HeaderMap::new(),
        content_encoding: None,
        ticks: Vec::new(),
        events: 0,
        end: String::new(),
        read_ms: 0,
    };
    let client = http_client(target);
    let mut request = get(&client, target, path)
        .header(ACCEPT, "text/event-stream")
        .header(CACHE_CONTROL, "no-cache");
    if gzip {
        request = request.header(ACCEPT_ENCODING, "gzip");
    }
    let response = match tokio::time::timeout_at(window.until, request.send()).await {
        Err(_) => {
            read.end = format!("no response headers within {}", secs(window.until - start));
            read.read_ms = ms_since(start);
            return read;
        }
        Ok(Err(e)) => {
            read.end = format!("request failed: {}", error_chain(&e));
            read.read_ms = ms_since(start);
            return read;
        }
        Ok(Ok(r)) => r,
    };
    read.status = Some(response.status().as_u16());
    read.headers = response.headers().clone();
    read.content_encoding = header(&read.headers, CONTENT_ENCODING.as_str());
    if !response.status().is_success() {
        let body = body_bytes(response, Duration::from_secs(2))
            .await
            .unwrap_or_default();
        read.end = format!(
            "status {}, body {:?}",
            read.status.unwrap_or(0),
            snippet(&body, 120)
        );
        read.read_ms = ms_since(start);
        return read;
    }
    let mut decoding = match read.content_encoding.as_deref().map(str::trim) {
        None | Some("") | Some("identity") => Decoding::Identity,
        Some(ce) if ce.eq_ignore_ascii_case("gzip") => {
            Decoding::Gzip(Box::new(GzDecoder::new(Vec::new())))
        }
        Some(other) => {
            read.end = format!("cannot decode Content-Encoding {other:?}");
            read.read_ms = ms_since(start);
            return read;
        }
    };
    let mut events = response
        .bytes_stream()
        .map(move |chunk| decoding.chunk(chunk.map_err(|e| io::Error::other(error_chain(&e)))?))
        .eventsource();
    let mut deadline = window.until;
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Err(_) => {
                read.end = format!(
                    "stopped reading after {} ms with {} of {want} ticks",
                    ms_since(start),
                    read.ticks.len()
                );
                break;
            }
            Ok(None) => {
                read.end = format!("stream ended after {} ms", ms_since(start));
                break;
            }
            Ok(Some(Err(e))) => {
                read.end = format!("stream broke after {} ms: {e}", ms_since(start));
                break;
            }
            Ok(Some(Ok(event))) => {
                let arrived_at_us = now_us();
                read.events += 1;
                if let Some(tick) = parse_tick(&event.data, arrived_at_us) {
                    read.ticks.push(tick);
                    if read.ticks.len() >= want {
                        read.end = format!("all {want} ticks read");
                        break;
                    }
                    deadline = window
                        .cap
                        .min(window.until.max(Instant::now() + window.extend));
                }
            }
        }
    }
    read.read_ms = ms_since(start);
    read
}

fn parse_tick(data: &str, arrived_at_us: u64) -> Option<Tick> {
    let v: Value = serde_json::from_str(data).ok()?;
    if v.get("type")?.as_str()? != "mock.tick" {
        return None;
    }
    Some(Tick {
        seq: v.get("seq")?.as_u64()?,
        emitted_at_us: v.get("emitted_at_us")?.as_u64()?,
        arrived_at_us,
    })
}
