//! The faulty proxy's HTTP/2 face, for `h2.headers`: TLS (a certificate from the suite's own
//! per-run authority) with ALPN `h2` in front of one mock, each request passed on over
//! HTTP/1.1 and its response sent back as HEADERS and DATA frames, plus the one [`H2Fault`]:
//! a leaked connection-specific header (`h2.headers`), or a stream reset on an idle timeout
//! (the RST_STREAM evidence and Chrome's sign of the idle checks over HTTP/2).
//!
//! It speaks the frame layer itself (the suite's `checks::http2::wire`, HPACK from
//! `loona-hpack`) because h2, hence hyper, refuses to send a connection-specific header: the
//! very fault this proxy must be able to commit. It serves what its cases ask, GETs with
//! small bodies, one stream at a time per connection; a body above the client's initial flow-control window
//! (64 KiB) is cut with RST_STREAM rather than sent against the protocol.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use suite::checks::http2::wire::{self, Frame};
use suite::tls::{TlsFiles, Trust};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// What the HTTP/2 face gets wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H2Fault {
    /// Nothing: hop-by-hop headers of the backend's response are dropped, as RFC 9113 asks.
    None,
    /// Adds this header to every response, as `add_header Connection "keep-alive";` does in
    /// nginx.
    AddHeader(&'static str, &'static str),
    /// Answers 504 when the backend sends no response headers for this long, and resets the
    /// stream (RST_STREAM INTERNAL_ERROR) when a body stalls this long: nginx's short
    /// `proxy_read_timeout` over HTTP/2, as measured.
    CutIdleAfter(Duration),
}

impl H2Fault {
    /// How long the backend may stay silent.
    fn patience(self) -> Duration {
        match self {
            H2Fault::CutIdleAfter(limit) => limit,
            _ => UPSTREAM_TIMEOUT,
        }
    }
}

/// Response headers of HTTP/1.1 that mean nothing on an HTTP/2 connection.
const HOP_BY_HOP: [&str; 6] = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"];
/// The client's initial flow-control window, which this proxy never waits to see raised.
const WINDOW: usize = 65_535;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// A running HTTP/2 faulty proxy; stops (with every connection) when dropped.
pub struct FaultyH2Proxy {
    addr: SocketAddr,
    trust: Trust,
    stop: CancellationToken,
    _certificates: tempfile::TempDir,
}

impl FaultyH2Proxy {
    /// One proxy on a free loopback port serving `host` with a certificate of its own authority.
    pub async fn start(fault: H2Fault, backend: SocketAddr, host: &str) -> FaultyH2Proxy {
        let dir = tempfile::tempdir().expect("a temporary folder for the certificate");
        let files = suite::tls::issue(&[host.to_string()], dir.path()).expect("the proxy's certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(&files));
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let stop = CancellationToken::new();
        let until = stop.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    _ = until.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                };
                let acceptor = acceptor.clone();
                let until = until.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    tokio::select! {
                        _ = until.cancelled() => {}
                        _ = serve(tls, fault, backend, peer.ip()) => {}
                    }
                });
            }
        });
        FaultyH2Proxy { addr, trust: Trust { ca_pem: files.ca_pem }, stop, _certificates: dir }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The authority a client must trust to reach it.
    pub fn trust(&self) -> Trust {
        self.trust.clone()
    }
}

impl Drop for FaultyH2Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn server_config(files: &TlsFiles) -> Arc<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .expect("the certificate the suite wrote");
    let key = PrivateKeyDer::from_pem_file(&files.key).expect("the key the suite wrote");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("a usable certificate");
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// One client connection: the preface, then each request as it comes.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, fault: H2Fault, backend: SocketAddr, peer: IpAddr) -> Result<(), String> {
    let mut preface = [0u8; 24];
    io.read_exact(&mut preface).await.map_err(|e| e.to_string())?;
    if preface != wire::PREFACE {
        return Err("not the HTTP/2 preface".into());
    }
    let io_err = |e: std::io::Error| e.to_string();
    wire::write_frame(&mut io, wire::SETTINGS, 0, 0, &[]).await.map_err(io_err)?;
    let mut decoder = loona_hpack::Decoder::new();
    let mut encoder = loona_hpack::Encoder::new();
    let mut sent = 0usize;
    loop {
        let frame = wire::read_frame(&mut io).await.map_err(io_err)?;
        match frame.kind {
            wire::SETTINGS if frame.flags & wire::ACK == 0 => {
                wire::write_frame(&mut io, wire::SETTINGS, wire::ACK, 0, &[]).await.map_err(io_err)?
            }
            wire::PING if frame.flags & wire::ACK == 0 => {
                wire::write_frame(&mut io, wire::PING, wire::ACK, 0, &frame.payload).await.map_err(io_err)?
            }
            wire::GOAWAY => return Ok(()),
            wire::HEADERS if frame.flags & wire::END_HEADERS != 0 => {
                let fields = decoder.decode(frame.fragment()?).map_err(|e| format!("{e:?}"))?;
                let fields = fields
                    .into_iter()
                    .map(|(n, v)| (String::from_utf8_lossy(&n).into_owned(), String::from_utf8_lossy(&v).into_owned()))
                    .collect::<Vec<_>>();
                respond(&mut io, &mut encoder, &frame, &fields, fault, backend, peer, &mut sent).await?;
            }
            wire::HEADERS => return Err("a header block in several frames (not needed by h2.headers)".into()),
            _ => {}
        }
    }
}

/// Passes one request to the backend and its response back on the request's stream.
#[allow(clippy::too_many_arguments)]
async fn respond<S: AsyncWrite + Unpin>(
    io: &mut S,
    encoder: &mut loona_hpack::Encoder<'_>,
    request: &Frame,
    fields: &[(String, String)],
    fault: H2Fault,
    backend: SocketAddr,
    peer: IpAddr,
    sent: &mut usize,
) -> Result<(), String> {
    let stream = request.stream;
    let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).unwrap_or_default();
    let host = field(":authority");
    let mut upstream = Request::builder().method(field(":method")).uri(field(":path")).header("host", host);
    for (n, v) in fields.iter().filter(|(n, _)| !n.starts_with(':')) {
        upstream = upstream.header(n, v);
    }
    let upstream = upstream
        .header("x-forwarded-for", peer.to_string())
        .header("x-real-ip", peer.to_string())
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let io_err = |e: std::io::Error| e.to_string();
    let response = match tokio::time::timeout(fault.patience(), exchange(backend, upstream)).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => return answer(io, encoder, stream, "502", "upstream failed\n").await,
        Err(_) => return answer(io, encoder, stream, "504", "upstream timed out\n").await,
    };
    let status = response.status().as_str().to_string();
    let mut out: Vec<(String, String)> = vec![(":status".into(), status)];
    for (n, v) in response.headers() {
        if !HOP_BY_HOP.contains(&n.as_str()) {
            out.push((n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()));
        }
    }
    if let H2Fault::AddHeader(name, value) = fault {
        out.push((name.to_ascii_lowercase(), value.to_string()));
    }
    let block = encoder.encode(out.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
    wire::write_frame(io, wire::HEADERS, wire::END_HEADERS, stream, &block).await.map_err(io_err)?;
    let mut body = response.into_body();
    loop {
        let frame = match tokio::time::timeout(fault.patience(), body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => break,
            _ => {
                let code = 2u32.to_be_bytes(); // INTERNAL_ERROR, as nginx sends
                return wire::write_frame(io, wire::RST_STREAM, 0, stream, &code).await.map_err(io_err);
            }
        };
        let Ok(data) = frame.into_data() else { continue };
        for piece in data.chunks(wire::MAX_FRAME) {
            *sent += piece.len();
            if *sent > WINDOW {
                let code = 8u32.to_be_bytes(); // CANCEL: more than this proxy sends
                return wire::write_frame(io, wire::RST_STREAM, 0, stream, &code).await.map_err(io_err);
            }
            wire::write_frame(io, wire::DATA, 0, stream, piece).await.map_err(io_err)?;
        }
    }
    wire::write_frame(io, wire::DATA, wire::END_STREAM, stream, &[]).await.map_err(io_err)
}

/// A short plain-text answer of the proxy itself (502, 504).
async fn answer<S: AsyncWrite + Unpin>(
    io: &mut S,
    encoder: &mut loona_hpack::Encoder<'_>,
    stream: u32,
    status: &str,
    text: &str,
) -> Result<(), String> {
    let length = text.len().to_string();
    let fields = [(":status", status), ("content-type", "text/plain"), ("content-length", length.as_str())];
    let block = encoder.encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
    let io_err = |e: std::io::Error| e.to_string();
    wire::write_frame(io, wire::HEADERS, wire::END_HEADERS, stream, &block).await.map_err(io_err)?;
    wire::write_frame(io, wire::DATA, wire::END_STREAM, stream, text.as_bytes()).await.map_err(io_err)
}

async fn exchange(backend: SocketAddr, req: Request<Empty<Bytes>>) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let tcp = TcpStream::connect(backend).await.map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    sender.send_request(req).await.map_err(|e| e.to_string())
}
