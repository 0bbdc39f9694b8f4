//! A deliberately faulty reverse proxy, for tests only: an HTTP/1.1 proxy on loopback in front
//! of spawned mocks that behaves like a correct proxy (bodies streamed through, the forwarding
//! headers added, upgrades spliced) except for the one [`Fault`] it is built with. It proves that
//! each check can fail, in seconds, without a real proxy installed.
//!
//! HTTP is hyper's (server and client side, upgrades through `hyper::upgrade::on`), so a check
//! that fails here fails because of the fault, not because of a framing bug in a test helper.
//! What this file adds is the faults, one small function each. Each client connection goes to
//! one backend ([`Balance`]); each request opens its own upstream connection.
//!
//! Besides its plain listener it has a TLS one (rustls, a certificate of the suite's own per-run
//! authority, ALPN `h2` and `http/1.1`), serving the same proxy over HTTP/1.1 or HTTP/2 (hyper's
//! server), so the faults of a TLS deployment (a redirecting plain listener, extended CONNECT
//! advertised but not bridged) can be shown too.

use std::convert::Infallible;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_stream::try_stream;
use bytes::{Bytes, BytesMut};
use flate2::write::{GzDecoder, GzEncoder};
use flate2::Compression;
use futures::{Stream, StreamExt, TryStreamExt};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use suite::tls::Trust;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::io::{InspectReader, InspectWriter};
use tokio_util::sync::CancellationToken;

/// What the proxy gets wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: a faithful proxy (the control for every check through a proxy).
    None,
    /// Holds the body of an event stream until it ends (`proxy_buffering on`, X-Accel ignored);
    /// the headers go out at once.
    BufferSse,
    /// Holds the bytes of an event stream and lets them out on a timer, like a proxy flushing
    /// its buffer every so often: events arrive in batches.
    BatchSse(Duration),
    /// Rewrites an event stream's `Content-Type` to `text/plain` (a proxy or CDN that retypes
    /// responses it does not know).
    SseAsText,
    /// Drops `no-transform` from an event stream's `Cache-Control` (a proxy setting its own).
    DropNoTransform,
    /// Drops `Upgrade` and `Connection` from requests (no WebSocket support).
    StripUpgrade,
    /// Answers 504 when the upstream sends no response headers for this long, cuts a response
    /// body that stalls this long, and closes an upgraded socket idle this long in both
    /// directions, like a short `proxy_read_timeout`.
    CutIdleAfter(Duration),
    /// Gzips every response to a client that accepts gzip, even one already gzipped, and
    /// event streams too, without flushing (ticks wait in the compressor).
    DoubleGzip,
    /// Gzips event streams for clients that accept gzip, flushing after every chunk.
    GzipSseFlushed,
    /// Decodes gzipped responses but keeps `Content-Encoding: gzip`.
    WrongContentEncoding,
    /// Sends no X-Forwarded-* / X-Real-IP (and strips the client's), and rewrites Host to the
    /// backend's address.
    DropForwarded,
    /// Forwards its own address as the client's in X-Forwarded-For and X-Real-IP (what a
    /// proxy behind another one does when it trusts nobody's X-Forwarded-For).
    ForwardProxyAddress,
    /// Replaces the browser's `Origin` with `http://<Host>` (`proxy_set_header Origin
    /// http://$host;`): the backend then accepts upgrades from any site.
    OverwriteOrigin,
    /// Refuses request bodies above this many bytes with 413, and buffers every body whole
    /// before passing it on (`proxy_request_buffering on`).
    CapBody(u64),
    /// The plain listener answers every request with this status and `Location:
    /// https://<Host><uri>` (certbot's `return 301 https://$host$request_uri;`); the TLS
    /// listener proxies.
    RedirectToHttps(u16),
    /// Over HTTP/2, advertises `SETTINGS_ENABLE_CONNECT_PROTOCOL` but answers every extended
    /// CONNECT with 501: WebSocket over HTTP/2 offered, not bridged.
    RefuseExtendedConnect,
    /// Drops the browser's `Last-Event-ID` from requests (a proxy that passes only the request
    /// headers it lists): a resumed event stream starts over.
    DropLastEventId,
}

/// How client connections are spread over several backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Every new connection to the next backend.
    RoundRobin,
    /// One backend per client network, like nginx's `ip_hash` (which keys on the first three
    /// octets of an IPv4 address): clients in different /24s spread over the backends.
    ClientIp,
    /// The first backend serves everything; the others are backups, used only while the first
    /// cannot be reached (`server a; server b backup;`).
    FirstOnly,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

struct Shared {
    fault: Fault,
    balance: Balance,
    backends: Vec<SocketAddr>,
    next: AtomicUsize,
    /// Cancelled when the proxy is dropped: ends every task it spawned.
    stop: CancellationToken,
}

/// One client connection: who it is, where it came in, and the backends to try in order.
struct Client {
    shared: Arc<Shared>,
    peer: IpAddr,
    local: IpAddr,
    backends: Vec<SocketAddr>,
    /// Came in on the TLS listener.
    tls: bool,
}

/// A running faulty proxy; stops (with every connection) when dropped.
pub struct FaultyProxy {
    addr: SocketAddr,
    tls_addr: SocketAddr,
    trust: Trust,
    stop: CancellationToken,
    /// The certificate files of the TLS listener.
    _tls_dir: tempfile::TempDir,
}

impl FaultyProxy {
    /// One proxy on a free loopback port with `fault`, pinning each client to one backend.
    pub async fn start(fault: Fault, backends: Vec<SocketAddr>) -> FaultyProxy {
        FaultyProxy::start_balanced(fault, backends, Balance::ClientIp).await
    }

    pub async fn start_balanced(
        fault: Fault,
        backends: Vec<SocketAddr>,
        balance: Balance,
    ) -> FaultyProxy {
        assert!(!backends.is_empty(), "a proxy needs a backend");
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            fault,
            balance,
            backends,
            next: AtomicUsize::new(0),
            stop: CancellationToken::new(),
        });
        let stop = shared.stop.clone();
        let tls_dir = tempfile::tempdir().expect("a directory for the certificate");
        let files = suite::tls::issue(&[super::HOST.to_string()], tls_dir.path())
            .expect("the run's certificate");
        let tls_listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind a loopback port");
        let tls_addr = tls_listener.local_addr().expect("local address");
        spawn(
            &stop,
            serve_tls(tls_listener, tls_acceptor(&files), shared.clone()),
        );
        spawn(&stop, async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    continue;
                };
                let Ok(local) = tcp.local_addr() else {
                    continue;
                };
                let client = Arc::new(Client {
                    backends: choose(&shared, peer.ip()),
                    peer: peer.ip(),
                    local: local.ip(),
                    shared: shared.clone(),
                    tls: false,
                });
                let _ = tcp.set_nodelay(true);
                let service = service_fn(move |req| {
                    let client = client.clone();
                    async move { Ok::<_, Infallible>(proxy(req, client).await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades();
                spawn(&shared.stop, connection);
            }
        });
        FaultyProxy {
            addr,
            tls_addr,
            trust: Trust {
                ca_pem: files.ca_pem,
            },
            stop,
            _tls_dir: tls_dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The TLS listener (its certificate covers the tests' site, [`super::HOST`]).
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls_addr
    }

    /// The authority a client of the TLS listener trusts.
    pub fn trust(&self) -> Trust {
        self.trust.clone()
    }
}

/// A rustls server with the certificate `files` hold, offering `h2` and `http/1.1`.
fn tls_acceptor(files: &suite::tls::TlsFiles) -> TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .expect("the certificate the suite wrote");
    let key = PrivateKeyDer::from_pem_file(&files.key).expect("the key the suite wrote");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| Ok(b.with_no_client_auth().with_single_cert(certs, key)?))
        .expect("a TLS server configuration");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// The TLS listener: HTTP/2 when the client chose it by ALPN, HTTP/1.1 otherwise, each request
/// through [`proxy`] as on the plain listener.
async fn serve_tls(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        let Ok(local) = tcp.local_addr() else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let client = Arc::new(Client {
            backends: choose(&shared, peer.ip()),
            peer: peer.ip(),
            local: local.ip(),
            shared: shared.clone(),
            tls: true,
        });
        let acceptor = acceptor.clone();
        spawn(&shared.stop, async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let fault = client.shared.fault;
            let service = service_fn(move |req| {
                let client = client.clone();
                async move { Ok::<_, Infallible>(proxy(from_h2(req), client).await) }
            });
            if h2 {
                let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                if fault == Fault::RefuseExtendedConnect {
                    builder.enable_connect_protocol();
                }
                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
            } else {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades()
                    .await;
            }
        });
    }
}

/// An HTTP/2 request as the HTTP/1.1 request the backend gets: `:authority` as Host, the
/// origin-form target.
fn from_h2(mut req: Request<Incoming>) -> Request<Incoming> {
    if req.version() != hyper::Version::HTTP_2 {
        return req;
    }
    if let Some(authority) = req.uri().authority().map(|a| a.to_string()) {
        if !req.headers().contains_key(header::HOST) {
            set(req.headers_mut(), header::HOST, &authority);
        }
    }
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "/".into());
    if let Ok(uri) = target.parse() {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = hyper::Version::HTTP_11;
    req
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Runs `task` until it ends or the proxy is dropped.
fn spawn<F: std::future::Future + Send + 'static>(stop: &CancellationToken, task: F) {
    let stop = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = task => {}
        }
    });
}

/// The backends a new client connection may use, in the order to try them.
fn choose(shared: &Shared, peer: IpAddr) -> Vec<SocketAddr> {
    let backends = &shared.backends;
    let i = match shared.balance {
        Balance::FirstOnly => return backends.clone(),
        Balance::RoundRobin => shared.next.fetch_add(1, Ordering::SeqCst),
        Balance::ClientIp => match peer {
            IpAddr::V4(v4) => v4.octets()[..3].iter().map(|b| *b as usize).sum(),
            IpAddr::V6(v6) => v6.octets()[..6].iter().map(|b| *b as usize).sum(),
        },
    };
    vec![backends[i % backends.len()]]
}

/// One request: the request faults, the exchange with the backend, the response faults.
async fn proxy(mut req: Request<Incoming>, client: Arc<Client>) -> Response<Body> {
    let fault = client.shared.fault;
    match fault {
        Fault::RedirectToHttps(status) if !client.tls => return redirect_to_https(&req, status),
        Fault::RefuseExtendedConnect if req.method() == hyper::Method::CONNECT => {
            return answer(
                StatusCode::NOT_IMPLEMENTED,
                "extended CONNECT is not bridged\n",
            )
        }
        _ => {}
    }
    let accepts_gzip = has_token(req.headers(), header::ACCEPT_ENCODING, "gzip");
    let backend = client.backends[0];
    match fault {
        Fault::DropForwarded => drop_forwarded(req.headers_mut(), backend),
        Fault::ForwardProxyAddress => forward(req.headers_mut(), client.local),
        _ => forward(req.headers_mut(), client.peer),
    }
    match fault {
        Fault::StripUpgrade => strip_upgrade(req.headers_mut()),
        Fault::OverwriteOrigin => overwrite_origin(req.headers_mut()),
        Fault::DropLastEventId => {
            req.headers_mut().remove("last-event-id");
        }
        _ => {}
    }
    let client_upgrade = hyper::upgrade::on(&mut req);
    let req = match fault {
        Fault::CapBody(cap) => match buffer_capped(req, cap, &client).await {
            Ok(req) => req,
            Err(refusal) => return refusal,
        },
        _ => req.map(|b| b.map_err(BoxError::from).boxed_unsync()),
    };
    let idle = match fault {
        Fault::CutIdleAfter(limit) => Some(limit),
        _ => None,
    };
    let exchange = exchange(&client, req);
    let result = match idle {
        Some(limit) => match tokio::time::timeout(limit, exchange).await {
            Ok(result) => result,
            Err(_) => return answer(StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n"),
        },
        None => exchange.await,
    };
    let mut resp = match result {
        Ok(resp) => resp,
        Err(e) => return answer(StatusCode::BAD_GATEWAY, format!("upstream: {e}\n")),
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        spawn(
            &client.shared.stop,
            splice(client_upgrade, upstream_upgrade, idle),
        );
        return resp.map(|_| empty());
    }
    respond(fault, accepts_gzip, resp)
}

/// Sends a request on a new connection to the client's backend (or, with backups, the first
/// one that can be reached).
async fn exchange(client: &Client, req: Request<Body>) -> Result<Response<Incoming>, BoxError> {
    let mut refused = None;
    for backend in &client.backends {
        match TcpStream::connect(backend).await {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                spawn(&client.shared.stop, connection.with_upgrades());
                return Ok(sender.send_request(req).await?);
            }
            Err(e) => refused = Some(e),
        }
    }
    Err(refused.map_or_else(|| "no backend".into(), BoxError::from))
}

// --- Request faults ---

/// `return <status> https://$host$request_uri;`
fn redirect_to_https(req: &Request<Incoming>, status: u16) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let mut resp = answer(
        StatusCode::from_u16(status).expect("a redirect status"),
        "moved to https\n",
    );
    set(
        resp.headers_mut(),
        header::LOCATION,
        &format!("https://{host}{}", req.uri()),
    );
    resp
}

/// What a correct proxy adds, naming `client` as the client.
fn forward(headers: &mut HeaderMap, client: IpAddr) {
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(before) => format!("{before}, {client}"),
        None => client.to_string(),
    };
    set(headers, "x-forwarded-for", &xff);
    set(headers, "x-forwarded-proto", "http");
    set(headers, "x-real-ip", &client.to_string());
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert("x-forwarded-host", host);
    }
}

fn drop_forwarded(headers: &mut HeaderMap, backend: SocketAddr) {
    for name in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-real-ip",
        "forwarded",
    ] {
        headers.remove(name);
    }
    set(headers, header::HOST, &backend.to_string());
}

fn strip_upgrade(headers: &mut HeaderMap) {
    headers.remove(header::UPGRADE);
    headers.remove(header::CONNECTION);
}

fn overwrite_origin(headers: &mut HeaderMap) {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let origin = format!("http://{host}");
    set(headers, header::ORIGIN, &origin);
}

/// `proxy_request_buffering on` under a `client_max_body_size`: the whole body is read before
/// the backend sees a byte, and refused with 413 above the cap.
async fn buffer_capped(
    req: Request<Incoming>,
    cap: u64,
    client: &Client,
) -> Result<Request<Body>, Response<Body>> {
    let (mut parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap) {
        return Err(too_large(&client.shared.stop, body));
    }
    let limit = usize::try_from(cap).unwrap_or(usize::MAX);
    let whole = match Limited::new(body, limit).collect().await {
        Ok(whole) => whole.to_bytes(),
        Err(_) => return Err(answer(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n")),
    };
    // Sent on with the length hyper gives it, as nginx does after buffering.
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts.headers.remove(header::CONTENT_LENGTH);
    Ok(Request::from_parts(parts, full(whole)))
}

/// Answers 413 like nginx: the answer first, then the body read and discarded for a while, so
/// the client sees the answer instead of a reset.
fn too_large(stop: &CancellationToken, body: Incoming) -> Response<Body> {
    let drain = body.into_data_stream().for_each(|_| async {});
    spawn(stop, tokio::time::timeout(Duration::from_secs(10), drain));
    answer(
        StatusCode::PAYLOAD_TOO_LARGE,
        "413 Request Entity Too Large\n",
    )
}

// --- Response faults ---

/// The response faults; anything they do not apply to passes as it came.
fn respond(fault: Fault, accepts_gzip: bool, resp: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    let headers = &mut parts.headers;
    let sse = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        });
    let gzipped = has_token(headers, header::CONTENT_ENCODING, "gzip");
    let body = match fault {
        Fault::BufferSse if sse => hold_until_end(body),
        Fault::BatchSse(every) if sse => batch(body, every),
        Fault::SseAsText if sse => {
            set(headers, header::CONTENT_TYPE, "text/plain; charset=utf-8");
            pass(body)
        }
        Fault::DropNoTransform if sse => {
            drop_no_transform(headers);
            pass(body)
        }
        Fault::CutIdleAfter(limit) => cut_when_stalled(body, limit),
        Fault::DoubleGzip if accepts_gzip && !hyper::body::Body::is_end_stream(&body) => {
            gzip_headers(headers);
            recode(body, gzip(), false)
        }
        Fault::GzipSseFlushed if sse && accepts_gzip && !gzipped => {
            gzip_headers(headers);
            recode(body, gzip(), true)
        }
        Fault::WrongContentEncoding if gzipped => {
            headers.remove(header::CONTENT_LENGTH);
            recode(body, GzDecoder::new(Vec::new()), true)
        }
        _ => pass(body),
    };
    Response::from_parts(parts, body)
}

fn hold_until_end(body: Incoming) -> Body {
    from_stream(try_stream! { yield body.collect().await?.to_bytes(); })
}

/// Lets the bytes held so far out at every tick of a timer `every` apart.
fn batch(body: Incoming, every: Duration) -> Body {
    from_stream(try_stream! {
        let mut pieces = body.into_data_stream();
        let mut timer = tokio::time::interval(every);
        let mut held = BytesMut::new();
        loop {
            let piece = tokio::select! {
                piece = pieces.next() => Some(piece),
                _ = timer.tick(), if !held.is_empty() => None,
            };
            match piece {
                Some(Some(piece)) => held.extend_from_slice(&piece?),
                Some(None) => break,
                None => yield held.split().freeze(),
            }
        }
        yield held.freeze();
    })
}

fn drop_no_transform(headers: &mut HeaderMap) {
    let kept: Vec<String> = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("no-transform"))
        .map(str::to_string)
        .collect();
    headers.remove(header::CACHE_CONTROL);
    if !kept.is_empty() {
        set(headers, header::CACHE_CONTROL, &kept.join(", "));
    }
}

/// Ends the body with an error (the client sees it cut) when the upstream sends nothing for
/// `limit`.
fn cut_when_stalled(body: Incoming, limit: Duration) -> Body {
    from_stream(try_stream! {
        let mut pieces = body.into_data_stream();
        let stalled = |_| "upstream idle";
        while let Some(piece) = tokio::time::timeout(limit, pieces.next()).await.map_err(stalled)? {
            yield piece?;
        }
    })
}

fn gzip() -> GzEncoder<Vec<u8>> {
    GzEncoder::new(Vec::new(), Compression::default())
}

fn gzip_headers(headers: &mut HeaderMap) {
    headers.remove(header::CONTENT_LENGTH);
    set(headers, header::CONTENT_ENCODING, "gzip");
}

/// A flate2 coder writing into memory, for recoding a body piece by piece.
trait Coder: Write + Send + 'static {
    /// What the coder has written out so far.
    fn take(&mut self) -> Vec<u8>;
    /// The rest, at the end of the body.
    fn end(self) -> io::Result<Vec<u8>>;
}

macro_rules! coder {
    ($($ty:ty),*) => {$(
        impl Coder for $ty {
            fn take(&mut self) -> Vec<u8> { std::mem::take(self.get_mut()) }
            fn end(self) -> io::Result<Vec<u8>> { self.finish() }
        }
    )*};
}
coder!(GzEncoder<Vec<u8>>, GzDecoder<Vec<u8>>);

/// Runs a body through `coder`. With `flush`, each piece's output leaves at once (a gzip that
/// flushes per write); without, only when the coder's own buffer fills or the body ends
/// (nginx's gzip filter on an event stream).
fn recode(body: Incoming, mut coder: impl Coder, flush: bool) -> Body {
    from_stream(try_stream! {
        let mut pieces = body.into_data_stream();
        while let Some(piece) = pieces.next().await {
            coder.write_all(&piece?)?;
            if flush {
                coder.flush()?;
            }
            yield Bytes::from(coder.take());
        }
        yield Bytes::from(coder.end()?);
    })
}

// --- Upgrades ---

/// Passes an upgraded connection through both ways until either side closes, or (with `idle`)
/// until nothing has moved either way for that long.
async fn splice(client: OnUpgrade, upstream: OnUpgrade, idle: Option<Duration>) {
    let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) else {
        return;
    };
    let last = Arc::new(Mutex::new(Instant::now()));
    let seen = |last: Arc<Mutex<Instant>>| {
        move |_: &[u8]| {
            if let Ok(mut last) = last.lock() {
                *last = Instant::now();
            }
        }
    };
    let client = InspectWriter::new(TokioIo::new(client), seen(last.clone()));
    let mut client = InspectReader::new(client, seen(last.clone()));
    let mut upstream = TokioIo::new(upstream);
    let quiet = async {
        let Some(limit) = idle else {
            return std::future::pending().await;
        };
        loop {
            let deadline = *last.lock().unwrap_or_else(|e| e.into_inner()) + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        _ = quiet => {}
    }
}

// --- Small helpers ---

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Replaces a header; a value that is not a valid header value (never built here) is skipped.
fn set(headers: &mut HeaderMap, name: impl header::IntoHeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// A short plain-text answer of the proxy itself (502, 504, 413), closing the connection.
fn answer(status: StatusCode, text: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(full(text.into()));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn pass(body: Incoming) -> Body {
    body.map_err(BoxError::from).boxed_unsync()
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn empty() -> Body {
    full(Bytes::new())
}

/// A body from a stream of pieces; empty pieces (a coder that had nothing to say) are skipped.
fn from_stream(pieces: impl Stream<Item = Result<Bytes, BoxError>> + Send + 'static) -> Body {
    let frames = pieces
        .try_filter(|piece| std::future::ready(!piece.is_empty()))
        .map_ok(Frame::data);
    StreamBody::new(frames).boxed_unsync()
}
