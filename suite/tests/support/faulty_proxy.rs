//! A deliberately faulty reverse proxy, for tests only: a small HTTP/1.1 proxy on loopback in
//! front of spawned mocks that behaves like a correct proxy (every byte passed through, the
//! forwarding headers added, upgrades spliced) except for the one [`Fault`] it is built with.
//! It proves that each check can fail, in seconds, without a real proxy installed.
//!
//! Each client connection goes to one backend (round robin over connections, or pinned by
//! client address like nginx's `ip_hash`); each request opens its own upstream connection.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// What the proxy gets wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: a faithful proxy (the control for every check through a proxy).
    None,
    /// Holds the body of an event stream until it ends (`proxy_buffering on`, X-Accel ignored);
    /// the headers go out at once.
    BufferSse,
    /// Drops `Upgrade` and `Connection` from requests (no WebSocket support).
    StripUpgrade,
    /// Closes a connection whose upstream sent nothing for this long (504 before the response
    /// headers), like a short `proxy_read_timeout`; upgraded sockets idle in both directions.
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
    /// Refuses request bodies above this many bytes with 413, and buffers every body whole
    /// before passing it on (`proxy_request_buffering on`).
    CapBody(u64),
}

/// How connections are spread over several backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Every new connection to the next backend.
    RoundRobin,
    /// One backend per client address, like `ip_hash`.
    ClientIp,
}

struct Config {
    fault: Fault,
    balance: Balance,
    backends: Vec<SocketAddr>,
    next: AtomicUsize,
}

/// A running faulty proxy; stops (with every connection) when dropped.
pub struct FaultyProxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
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
        let config = Arc::new(Config {
            fault,
            balance,
            backends,
            next: AtomicUsize::new(0),
        });
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((tcp, peer)) = accepted else { continue };
                        let config = config.clone();
                        connections.spawn(async move {
                            let _ = serve(tcp, peer, config).await;
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        FaultyProxy { addr, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        // Dropping the accept task's JoinSet aborts every connection.
        self.task.abort();
    }
}

/// A request or response head: the start line and the header fields, in order.
struct Head {
    start: String,
    fields: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .any(|(_, v)| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }

    fn remove(&mut self, name: &str) {
        self.fields.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    fn set(&mut self, name: &str, value: impl Into<String>) {
        self.remove(name);
        self.fields.push((name.to_string(), value.into()));
    }

    fn status(&self) -> u16 {
        self.start
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn method(&self) -> &str {
        self.start.split_whitespace().next().unwrap_or("")
    }

    fn is_event_stream(&self) -> bool {
        self.get("content-type").is_some_and(|ct| {
            ct.trim()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        })
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.start);
        for (n, v) in &self.fields {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// Reads a head; `None` on a clean end of the connection before it.
async fn read_head(r: &mut (impl AsyncBufRead + Unpin)) -> io::Result<Option<Head>> {
    let mut start = String::new();
    if r.read_line(&mut start).await? == 0 {
        return Ok(None);
    }
    let mut fields = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "head cut short",
            ));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            fields.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(Some(Head {
        start: start.trim_end_matches(['\r', '\n']).to_string(),
        fields,
    }))
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

fn request_framing(head: &Head) -> Framing {
    if head.has_token("transfer-encoding", "chunked") {
        Framing::Chunked
    } else {
        match head.get("content-length").and_then(|v| v.parse().ok()) {
            Some(0) | None => Framing::Empty,
            Some(n) => Framing::Length(n),
        }
    }
}

fn response_framing(method: &str, head: &Head) -> Framing {
    let status = head.status();
    if method.eq_ignore_ascii_case("HEAD") || status < 200 || status == 204 || status == 304 {
        Framing::Empty
    } else if head.has_token("transfer-encoding", "chunked") {
        Framing::Chunked
    } else {
        match head.get("content-length").and_then(|v| v.parse().ok()) {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    }
}

/// Reads a body piece by piece as it arrives, whatever its framing.
struct Body {
    framing: Framing,
    left: u64,
    done: bool,
    /// With a fault that cuts idle upstreams: the longest wait for the next piece.
    idle: Option<Duration>,
}

impl Body {
    fn new(framing: Framing, idle: Option<Duration>) -> Body {
        let left = if let Framing::Length(n) = framing {
            n
        } else {
            0
        };
        Body {
            framing,
            left,
            done: framing == Framing::Empty,
            idle,
        }
    }

    async fn next(&mut self, r: &mut (impl AsyncBufRead + Unpin)) -> io::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        match self.idle {
            Some(limit) => tokio::time::timeout(limit, self.read_piece(r))
                .await
                .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "upstream idle"))),
            None => self.read_piece(r).await,
        }
    }

    async fn read_piece(
        &mut self,
        r: &mut (impl AsyncBufRead + Unpin),
    ) -> io::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; 64 * 1024];
        match self.framing {
            Framing::Empty => Ok(None),
            Framing::Length(_) => {
                let want = buf.len().min(self.left as usize);
                let n = r.read(&mut buf[..want]).await?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "body cut short",
                    ));
                }
                self.left -= n as u64;
                self.done = self.left == 0;
                buf.truncate(n);
                Ok(Some(buf))
            }
            Framing::UntilClose => {
                let n = r.read(&mut buf).await?;
                if n == 0 {
                    self.done = true;
                    return Ok(None);
                }
                buf.truncate(n);
                Ok(Some(buf))
            }
            Framing::Chunked => {
                let mut line = String::new();
                r.read_line(&mut line).await?;
                let size_text = line
                    .trim()
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string();
                let size = usize::from_str_radix(&size_text, 16).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad chunk size {line:?}"),
                    )
                })?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    loop {
                        let mut t = String::new();
                        if r.read_line(&mut t).await? == 0 || t.trim().is_empty() {
                            break;
                        }
                    }
                    self.done = true;
                    return Ok(None);
                }
                let mut data = vec![0u8; size];
                r.read_exact(&mut data).await?;
                let mut crlf = String::new();
                r.read_line(&mut crlf).await?;
                Ok(Some(data))
            }
        }
    }

    async fn read_all(mut self, r: &mut (impl AsyncBufRead + Unpin)) -> io::Result<Vec<u8>> {
        let mut all = Vec::new();
        while let Some(piece) = self.next(r).await? {
            all.extend_from_slice(&piece);
        }
        Ok(all)
    }
}

/// Writes one piece of a body in `framing` (chunked pieces get their own chunk) and flushes,
/// so a stream leaves the proxy as it arrived.
async fn write_piece(
    w: &mut (impl AsyncWrite + Unpin),
    framing: Framing,
    piece: &[u8],
) -> io::Result<()> {
    if piece.is_empty() {
        return Ok(());
    }
    if framing == Framing::Chunked {
        w.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .await?;
        w.write_all(piece).await?;
        w.write_all(b"\r\n").await?;
    } else {
        w.write_all(piece).await?;
    }
    w.flush().await
}

async fn write_end(w: &mut (impl AsyncWrite + Unpin), framing: Framing) -> io::Result<()> {
    if framing == Framing::Chunked {
        w.write_all(b"0\r\n\r\n").await?;
    }
    w.flush().await
}

/// Sends a complete response whose body is `body`, with its length.
async fn write_whole(
    w: &mut (impl AsyncWrite + Unpin),
    mut head: Head,
    body: &[u8],
) -> io::Result<()> {
    head.remove("transfer-encoding");
    head.set("content-length", body.len().to_string());
    w.write_all(&head.to_bytes()).await?;
    w.write_all(body).await?;
    w.flush().await
}

fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data)?;
    enc.finish()
}

fn gunzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    GzDecoder::new(data).read_to_end(&mut out)?;
    Ok(out)
}

fn pick(config: &Config, peer: IpAddr) -> SocketAddr {
    let n = config.backends.len();
    let i = match config.balance {
        Balance::RoundRobin => config.next.fetch_add(1, Ordering::SeqCst) % n,
        Balance::ClientIp => match peer {
            IpAddr::V4(v4) => v4.octets().iter().map(|b| *b as usize).sum::<usize>() % n,
            IpAddr::V6(v6) => v6.octets().iter().map(|b| *b as usize).sum::<usize>() % n,
        },
    };
    config.backends[i]
}

async fn serve(client: TcpStream, peer: SocketAddr, config: Arc<Config>) -> io::Result<()> {
    let _ = client.set_nodelay(true);
    let backend = pick(&config, peer.ip());
    let (cr, mut cw) = client.into_split();
    let mut cr = BufReader::new(cr);
    let fault = config.fault;
    let idle = match fault {
        Fault::CutIdleAfter(d) => Some(d),
        _ => None,
    };
    while let Some(mut req) = read_head(&mut cr).await? {
        let method = req.method().to_string();
        let accepts_gzip = req.has_token("accept-encoding", "gzip");
        let client_host = req.get("host").unwrap_or_default().to_string();
        if fault == Fault::DropForwarded {
            for name in [
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
                "x-real-ip",
                "forwarded",
            ] {
                req.remove(name);
            }
            req.set("Host", backend.to_string());
        } else {
            let xff = match req.get("x-forwarded-for") {
                Some(prev) => format!("{prev}, {}", peer.ip()),
                None => peer.ip().to_string(),
            };
            req.set("X-Forwarded-For", xff);
            req.set("X-Forwarded-Proto", "http");
            req.set("X-Real-IP", peer.ip().to_string());
            req.set("X-Forwarded-Host", client_host);
        }
        if fault == Fault::StripUpgrade {
            req.remove("upgrade");
            req.remove("connection");
        }
        let framing = request_framing(&req);

        // The request body: buffered whole (and capped) with CapBody, else streamed on.
        let buffered = match fault {
            Fault::CapBody(cap) => {
                if let Framing::Length(n) = framing {
                    if n > cap {
                        return refuse_too_large(&mut cr, &mut cw, n).await;
                    }
                }
                let body = Body::new(framing, None).read_all(&mut cr).await?;
                if body.len() as u64 > cap {
                    return refuse_too_large(&mut cr, &mut cw, 0).await;
                }
                Some(body)
            }
            _ => None,
        };
        let upstream = TcpStream::connect(backend).await?;
        let _ = upstream.set_nodelay(true);
        let (ur, mut uw) = upstream.into_split();
        let mut ur = BufReader::new(ur);
        match buffered {
            Some(body) => {
                req.remove("transfer-encoding");
                if framing != Framing::Empty {
                    req.set("Content-Length", body.len().to_string());
                }
                uw.write_all(&req.to_bytes()).await?;
                uw.write_all(&body).await?;
                uw.flush().await?;
            }
            None => {
                uw.write_all(&req.to_bytes()).await?;
                uw.flush().await?;
                let mut body = Body::new(framing, None);
                while let Some(piece) = body.next(&mut cr).await? {
                    write_piece(&mut uw, framing, &piece).await?;
                }
                if framing == Framing::Chunked {
                    write_end(&mut uw, framing).await?;
                }
            }
        }

        let head = match idle {
            Some(limit) => match tokio::time::timeout(limit, read_head(&mut ur)).await {
                Ok(h) => h?,
                Err(_) => {
                    let body = b"upstream timed out\n";
                    let resp = Head {
                        start: "HTTP/1.1 504 Gateway Time-out".into(),
                        fields: vec![
                            ("Content-Type".into(), "text/plain".into()),
                            ("Connection".into(), "close".into()),
                        ],
                    };
                    return write_whole(&mut cw, resp, body).await;
                }
            },
            None => read_head(&mut ur).await?,
        };
        let Some(mut resp) = head else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "upstream closed without a response",
            ));
        };
        if resp.status() == 101 {
            cw.write_all(&resp.to_bytes()).await?;
            cw.flush().await?;
            return splice(cr, cw, ur, uw, idle).await;
        }
        let out = response_framing(&method, &resp);
        let upstream_body = Body::new(out, idle);
        let gzipped = resp
            .get("content-encoding")
            .is_some_and(|ce| ce.trim().eq_ignore_ascii_case("gzip"));
        let closes = out == Framing::UntilClose || resp.has_token("connection", "close");
        match fault {
            Fault::BufferSse if resp.is_event_stream() => {
                // The headers at once, the body only when the stream ends.
                cw.write_all(&resp.to_bytes()).await?;
                cw.flush().await?;
                let all = upstream_body.read_all(&mut ur).await?;
                write_piece(&mut cw, out, &all).await?;
                write_end(&mut cw, out).await?;
            }
            Fault::DoubleGzip if accepts_gzip && resp.is_event_stream() => {
                stream_gzipped(&mut ur, &mut cw, resp, upstream_body, false).await?;
            }
            Fault::DoubleGzip if accepts_gzip && out != Framing::Empty => {
                let all = upstream_body.read_all(&mut ur).await?;
                resp.set("Content-Encoding", "gzip");
                write_whole(&mut cw, resp, &gzip(&all)?).await?;
            }
            Fault::WrongContentEncoding if gzipped => {
                let all = upstream_body.read_all(&mut ur).await?;
                write_whole(&mut cw, resp, &gunzip(&all)?).await?;
            }
            Fault::GzipSseFlushed if resp.is_event_stream() && accepts_gzip && !gzipped => {
                stream_gzipped(&mut ur, &mut cw, resp, upstream_body, true).await?;
            }
            _ => {
                let mut body = upstream_body;
                cw.write_all(&resp.to_bytes()).await?;
                cw.flush().await?;
                while let Some(piece) = body.next(&mut ur).await? {
                    write_piece(&mut cw, out, &piece).await?;
                }
                write_end(&mut cw, out).await?;
            }
        }
        if closes {
            return cw.shutdown().await;
        }
    }
    Ok(())
}

/// Gzips a stream on the fly. With `flush`, the compressor is flushed after every piece (a
/// proxy whose gzip flushes per write); without, output leaves only when the compressor's own
/// buffer fills or the stream ends (nginx's gzip filter on an event stream).
async fn stream_gzipped(
    ur: &mut BufReader<OwnedReadHalf>,
    cw: &mut OwnedWriteHalf,
    mut resp: Head,
    mut body: Body,
    flush: bool,
) -> io::Result<()> {
    resp.remove("content-length");
    resp.set("Content-Encoding", "gzip");
    resp.set("Transfer-Encoding", "chunked");
    cw.write_all(&resp.to_bytes()).await?;
    cw.flush().await?;
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    while let Some(piece) = body.next(ur).await? {
        enc.write_all(&piece)?;
        if flush {
            enc.flush()?;
        }
        let out = std::mem::take(enc.get_mut());
        write_piece(cw, Framing::Chunked, &out).await?;
    }
    let tail = enc.finish()?;
    write_piece(cw, Framing::Chunked, &tail).await?;
    write_end(cw, Framing::Chunked).await
}

/// Answers 413 like nginx: the response first, then the body read and discarded for a while
/// so the client sees the answer instead of a reset.
async fn refuse_too_large(
    cr: &mut BufReader<OwnedReadHalf>,
    cw: &mut OwnedWriteHalf,
    declared: u64,
) -> io::Result<()> {
    let body = b"<html><body><h1>413 Request Entity Too Large</h1></body></html>\n";
    let resp = Head {
        start: "HTTP/1.1 413 Request Entity Too Large".into(),
        fields: vec![
            ("Content-Type".into(), "text/html".into()),
            ("Connection".into(), "close".into()),
        ],
    };
    write_whole(cw, resp, body).await?;
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let mut sink = vec![0u8; 64 * 1024];
        let mut left = declared;
        while left > 0 {
            match cr.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n as u64),
            }
        }
    })
    .await;
    cw.shutdown().await
}

/// Passes an upgraded connection through both ways until either side closes, or (with `idle`)
/// until nothing has moved for that long.
async fn splice(
    mut cr: BufReader<OwnedReadHalf>,
    mut cw: OwnedWriteHalf,
    mut ur: BufReader<OwnedReadHalf>,
    mut uw: OwnedWriteHalf,
    idle: Option<Duration>,
) -> io::Result<()> {
    let limit = idle.unwrap_or(Duration::from_secs(24 * 3600));
    let mut up = vec![0u8; 64 * 1024];
    let mut down = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            n = cr.read(&mut up) => {
                let n = n?;
                if n == 0 { break; }
                uw.write_all(&up[..n]).await?;
                uw.flush().await?;
            }
            n = ur.read(&mut down) => {
                let n = n?;
                if n == 0 { break; }
                cw.write_all(&down[..n]).await?;
                cw.flush().await?;
            }
            _ = tokio::time::sleep(limit) => break,
        }
    }
    let _ = cw.shutdown().await;
    let _ = uw.shutdown().await;
    Ok(())
}
