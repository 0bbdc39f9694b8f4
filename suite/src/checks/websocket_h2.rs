//! WebSocket over HTTP/2 (RFC 8441, extended CONNECT): `h2.websocket`. A browser on an HTTP/2
//! site opens its sockets as streams of that connection when the proxy advertises
//! `SETTINGS_ENABLE_CONNECT_PROTOCOL = 1`, and over a separate HTTP/1.1 connection otherwise.
//! So the check asks what the proxy advertises and, when it does, whether a `CONNECT` with
//! `:protocol websocket` reaches the backend's socket (an HTTP/1.1 upgrade behind the proxy)
//! and frames go through both ways. HTTP/2 is the `h2` crate's, TLS is rustls with ALPN `h2`;
//! the stream is handed to tungstenite as the socket's bytes, so the frames are tungstenite's.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures::future::join_all;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::http::{Method, Request};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::client::{
    connect, error_chain, ms_since, within, Io, Ws, CONNECT_TIMEOUT, EXCHANGE_TIMEOUT,
};
use super::websocket::{
    echo, first_frame, grade_probes, not_on_dorkos, ping_and_close, Probe, EVENT_ROUTES,
    TERMINAL_ROUTE,
};
use super::{CheckInfo, Outcome, Target};
use crate::tls::Transport;

pub const H2_WEBSOCKET: CheckInfo = CheckInfo {
    id: "h2.websocket",
    requirement: "WebSocket over HTTP/2 (RFC 8441): a proxy that advertises SETTINGS_ENABLE_CONNECT_PROTOCOL bridges an extended CONNECT (:protocol websocket) to the backend's WebSocket on /api/event/ws and /api/terminal/ws",
    sign: "the proxy advertises WebSocket over HTTP/2 but cannot bridge it: every socket of a browser that uses it breaks",
    fix: "Bridge extended CONNECT to the backend's HTTP/1.1 upgrade on the WebSocket routes, or stop advertising it (HAProxy: option h2-workaround-bogus-websocket-clients; Envoy: allow_connect only with upgrade_configs websocket on the connection manager)",
    long: false,
    bulky: false,
    needs_ui_password: false,
    browser: false,
};

/// The routes a browser's sockets take: an event socket and the terminal.
const ROUTES: [&str; 2] = [EVENT_ROUTES[0].0, TERMINAL_ROUTE];

pub async fn websocket(target: &Target) -> Outcome {
    let info = &H2_WEBSOCKET;
    if target.transport != Transport::H2 {
        return info.skip(format!(
            "WebSocket over HTTP/2 needs the h2 transport; over {} a browser opens its sockets as HTTP/1.1 upgrades, which ws.upgrade grades",
            target.transport
        ));
    }
    if let Some(skip) = not_on_dorkos(info, target) {
        return skip;
    }
    let expected = format!(
        "when the proxy's SETTINGS say ENABLE_CONNECT_PROTOCOL = 1: an extended CONNECT (:protocol websocket, :scheme https, :authority {}, Origin https://{}) on {} is answered 200, the backend's first frame arrives and a frame sent comes back",
        target.host,
        target.host,
        ROUTES.join(" and ")
    );
    let session = match H2Session::open(target).await {
        Ok(s) => s,
        Err(e) => {
            return info.outcome(
                super::Grade::Fail,
                expected,
                format!("no HTTP/2 session to read the proxy's SETTINGS from: {e}"),
                Value::Null,
            )
        }
    };
    let advertised = session.send.is_extended_connect_protocol_enabled();
    let mut m = json!({
        "settings_enable_connect_protocol": advertised,
        "first_request": session.first_request,
    });
    if !advertised {
        return info.outcome(
            super::Grade::Skip,
            expected,
            "the proxy does not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL: browsers open this site's WebSockets over HTTP/1.1, which ws.upgrade grades",
            m,
        );
    }
    let probes = join_all(
        ROUTES
            .iter()
            .map(|route| bridged(target, session.send.clone(), route)),
    )
    .await;
    m["advertised"] = json!("SETTINGS_ENABLE_CONNECT_PROTOCOL = 1");
    session.close();
    grade_probes(info, expected, format!("advertised, and the extended CONNECT is bridged on {}: 200, the backend's first frame, frames echoed", ROUTES.join(" and ")), probes, m)
}

/// One HTTP/2 connection to the proxy, as a browser opens it, with its connection task.
struct H2Session {
    send: h2::client::SendRequest<Bytes>,
    driver: tokio::task::JoinHandle<()>,
    /// The request sent before reading the settings, as evidence.
    first_request: Value,
}

impl H2Session {
    /// TLS with ALPN `h2` (SNI the site's name, the run's authority trusted alone), the HTTP/2
    /// handshake, then one GET answered: the server's SETTINGS is the first frame it sends, so
    /// once an answer has arrived its settings have been read.
    async fn open(target: &Target) -> Result<H2Session, String> {
        let Some(trust) = &target.trust else {
            return Err("a TLS transport without the run's authority".into());
        };
        let tcp = within(CONNECT_TIMEOUT, "connect", connect(target)).await?;
        let _ = tcp.set_nodelay(true);
        let name = rustls_pki_types::ServerName::try_from(target.host.clone())
            .map_err(|e| format!("{} is not a server name: {e}", target.host))?;
        let tls = within(
            EXCHANGE_TIMEOUT,
            "TLS handshake",
            tokio_rustls::TlsConnector::from(trust.client_config(&[b"h2"])?).connect(name, tcp),
        )
        .await?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err("the TLS listener did not choose h2 by ALPN".into());
        }
        let (send, connection) = within(
            EXCHANGE_TIMEOUT,
            "HTTP/2 handshake",
            h2::client::handshake(tls),
        )
        .await?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut session = H2Session {
            send,
            driver,
            first_request: Value::Null,
        };
        let path = "/api/mock/request";
        let request = Request::get(format!("https://{}{path}", target.host))
            .body(())
            .map_err(|e| format!("invalid request: {e}"))?;
        let start = Instant::now();
        let answer = async {
            let mut send = session.send.clone().ready().await?;
            let (response, _) = send.send_request(request, true)?;
            response.await
        };
        match within(EXCHANGE_TIMEOUT, "GET before reading the settings", answer).await {
            Ok(response) => {
                session.first_request = json!({"path": path, "status": response.status().as_u16(), "ms": ms_since(start)})
            }
            Err(e) => {
                session.close();
                return Err(e);
            }
        }
        Ok(session)
    }

    fn close(self) {
        self.driver.abort();
    }
}

/// An extended CONNECT on `route`, then the route's first frame and one exchange.
async fn bridged(target: &Target, mut send: h2::client::SendRequest<Bytes>, route: &str) -> Probe {
    let mut probe = Probe::new(route);
    let result = async {
        let start = Instant::now();
        let query = if route == TERMINAL_ROUTE {
            "mock_silent=1"
        } else {
            "mock_echo=1&mock_silent=1"
        };
        let mut ws =
            extended_connect(&mut probe, target, &mut send, &format!("{route}?{query}")).await?;
        first_frame(&mut probe, &mut ws, start + EXCHANGE_TIMEOUT).await?;
        if route == TERMINAL_ROUTE {
            return ping_and_close(&mut probe, ws).await;
        }
        let text = json!({"type": "suite.echo", "over": "h2 extended CONNECT", "text": "héllo ✓"})
            .to_string();
        let rtt = echo(&mut ws, Message::text(text)).await?;
        probe.step("text echo", format!("intact after {} µs", rtt.as_micros()));
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), ws.close(None)).await;
        Ok(())
    }
    .await;
    probe.end(result)
}

/// Sends `CONNECT` with `:protocol websocket` as a browser does (RFC 8441 §5: no Upgrade, no
/// Sec-WebSocket-Key, `sec-websocket-version: 13`, the page's Origin) and, on 200, hands the
/// stream to tungstenite as a client socket.
async fn extended_connect(
    probe: &mut Probe,
    target: &Target,
    send: &mut h2::client::SendRequest<Bytes>,
    path: &str,
) -> Result<Ws, String> {
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("https://{}{path}", target.host))
        .header("sec-websocket-version", "13")
        .header("origin", format!("https://{}", target.host))
        .body(())
        .map_err(|e| format!("invalid request: {e}"))?;
    request
        .extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    let start = Instant::now();
    let sent = async {
        let mut send = send.clone().ready().await?;
        let (response, stream) = send.send_request(request, false)?;
        Ok::<_, h2::Error>((response.await?, stream))
    };
    let (response, stream) = match tokio::time::timeout(EXCHANGE_TIMEOUT, sent).await {
        Err(_) => {
            return Err(format!(
                "no answer to the extended CONNECT within {} s",
                EXCHANGE_TIMEOUT.as_secs()
            ))
        }
        Ok(Err(e)) => {
            return Err(format!(
                "extended CONNECT refused: {}",
                describe_h2_error(&e)
            ))
        }
        Ok(Ok(answer)) => answer,
    };
    let status = response.status().as_u16();
    probe.extra.insert("status".into(), json!(status));
    probe.extra.insert(
        "transport".into(),
        json!("WebSocket over HTTP/2 (extended CONNECT, RFC 8441)"),
    );
    if let Some(instance) = response.headers().get("x-mock-instance") {
        probe.extra.insert(
            "instance".into(),
            json!(String::from_utf8_lossy(instance.as_bytes())),
        );
    }
    if status != 200 {
        let body = read_some(response.into_body()).await;
        return Err(format!(
            "extended CONNECT answered {status} instead of 200{body}"
        ));
    }
    probe.step(
        "extended CONNECT",
        format!("200 after {} ms", ms_since(start)),
    );
    let io: Box<dyn Io> = Box::new(H2Stream {
        send: stream,
        recv: response.into_body(),
        pending: Bytes::new(),
    });
    Ok(WebSocketStream::from_raw_socket(io, Role::Client, None).await)
}

/// The start of a refusal's body, for evidence (` (body "...")`, or nothing).
async fn read_some(mut body: h2::RecvStream) -> String {
    match tokio::time::timeout(std::time::Duration::from_secs(2), body.data()).await {
        Ok(Some(Ok(bytes))) if !bytes.is_empty() => {
            format!(" (body {:?})", super::client::snippet(&bytes, 120))
        }
        _ => String::new(),
    }
}

/// A stream reset says which error code; a connection error says why.
fn describe_h2_error(e: &h2::Error) -> String {
    match e.reason() {
        Some(reason) if e.is_reset() => format!("stream reset by the proxy ({reason:?})"),
        Some(reason) if e.is_go_away() => {
            format!("connection closed by the proxy (GOAWAY {reason:?})")
        }
        _ => error_chain(e),
    }
}

/// The bytes of one HTTP/2 stream as a byte stream, for tungstenite: DATA frames read in order
/// (their flow-control window released as they are consumed), writes sent as DATA frames as
/// the peer's window allows, shutdown as END_STREAM.
struct H2Stream {
    send: h2::SendStream<Bytes>,
    recv: h2::RecvStream,
    /// What the last DATA frame held beyond the reader's buffer.
    pending: Bytes,
}

impl AsyncRead for H2Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.pending.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(describe_h2_error(&e)))),
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    this.pending = data;
                }
            }
        }
        let n = buf.remaining().min(this.pending.len());
        buf.put_slice(&this.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        this.send.reserve_capacity(buf.len());
        loop {
            let granted = this.send.capacity();
            if granted > 0 {
                let n = granted.min(buf.len());
                this.send
                    .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                    .map_err(|e| io::Error::other(describe_h2_error(&e)))?;
                return Poll::Ready(Ok(n));
            }
            match ready!(this.send.poll_capacity(cx)) {
                None => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the HTTP/2 stream is closed",
                    )))
                }
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(describe_h2_error(&e)))),
                Some(Ok(_)) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // DATA frames are queued to the connection task as they are written.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = self.get_mut().send.send_data(Bytes::new(), true);
        Poll::Ready(Ok(()))
    }
}
