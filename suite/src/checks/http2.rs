//! What HTTP/2 adds at the proxy, read on the wire: `h2.headers` (no connection-specific header
//! in an HTTP/2 response, RFC 9113 §8.2.2: Chrome refuses such a response with
//! `net::ERR_HTTP2_PROTOCOL_ERROR`), and the failure sign of a stream the proxy resets or a
//! connection it ends with GOAWAY where HTTP/1.1 would have cut a body ([`browser_sign`]).
//!
//! HTTP/2 client libraries (h2, hence hyper and reqwest) hide or refuse a malformed header
//! block, so `h2.headers` speaks the protocol itself: TLS with ALPN `h2`, the connection
//! preface, one HEADERS frame per request, and every frame read back until each stream's
//! response header block is complete. Header blocks are decoded with `loona-hpack`. The frame
//! codec ([`wire`]) is public for the tests' faulty proxy, which leaks a header the same way.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};

use super::client::{self, within, EXCHANGE_TIMEOUT};
use super::{CheckInfo, Grade, Outcome, Target};
use crate::tls::Transport;

pub const H2_HEADERS: CheckInfo = CheckInfo {
    id: "h2.headers",
    requirement: "Over HTTP/2 the proxy sends no connection-specific header (Connection, Keep-Alive, Proxy-Connection, Transfer-Encoding, Upgrade; TE other than \"trailers\"), RFC 9113 §8.2.2",
    sign: "net::ERR_HTTP2_PROTOCOL_ERROR: Chrome refuses the response (the page, an API call or the event stream fails) while HTTP/1.1 and curl without HTTP/2 work",
    fix: "Add no hop-by-hop header to responses (remove add_header Connection/Keep-Alive/Upgrade/Transfer-Encoding/TE) and hide the ones a backend sends (proxy_hide_header Upgrade; proxy_hide_header Proxy-Connection; proxy_hide_header TE;)",
    long: false,
    bulky: false,
    needs_ui_password: false,
    browser: false,
};

/// Checks that grade HTTP/2 only; on another transport they skip, and a skip there is not a
/// deviation a config's `.expected` file must list.
pub const H2_ONLY: &[&str] = &[H2_HEADERS.id];

/// Whether check `id` means anything over `transport`.
pub fn applies(id: &str, transport: Transport) -> bool {
    transport == Transport::H2 || !H2_ONLY.contains(&id)
}

/// Chrome's error for a response it refuses or a stream reset under it.
pub const CHROME_H2_ERROR: &str = "net::ERR_HTTP2_PROTOCOL_ERROR";
/// Chrome's error for an HTTP/1.1 chunked body cut before its last chunk.
pub const CHROME_CHUNKED_ERROR: &str = "net::ERR_INCOMPLETE_CHUNKED_ENCODING";

/// How [`h2_frame_of`] says that the proxy sent the frame.
const FROM_PROXY: &str = "received from the proxy";
/// What hyper says of an HTTP/1.1 chunked body whose connection ended before its last chunk.
const H1_CHUNKED_CUT: &str = "unexpected EOF during chunk";
/// What hyper says of an HTTP/1.1 body whose connection ended before its length was reached.
const H1_BODY_CUT: &str = "end of file before message length reached";

/// The failure sign of a failed outcome as a browser shows it on `transport`: where the
/// evidence is a stream the proxy reset (RST_STREAM) or a connection it ended (GOAWAY) over
/// HTTP/2, Chrome's `net::ERR_HTTP2_PROTOCOL_ERROR` leads the guide's sign; where an HTTP/1.1
/// body was cut, `net::ERR_INCOMPLETE_CHUNKED_ENCODING`. Other signs are kept as they are.
pub fn browser_sign(outcome: &Outcome, transport: Transport) -> Option<String> {
    if !matches!(outcome.grade, Grade::Fail | Grade::Warn) || outcome.sign.contains(CHROME_H2_ERROR) {
        return None;
    }
    let actual = &outcome.actual;
    if transport == Transport::H2 && (actual.contains("RST_STREAM") || actual.contains("GOAWAY")) {
        let why = if actual.contains(FROM_PROXY) {
            "the proxy reset the HTTP/2 stream or ended the connection"
        } else {
            "the proxy's response broke HTTP/2, so the client reset the stream"
        };
        return Some(format!("{CHROME_H2_ERROR} in the browser ({why}); {}", outcome.sign));
    }
    if transport == Transport::H2 {
        return None;
    }
    if actual.contains(H1_CHUNKED_CUT) {
        return Some(format!(
            "{CHROME_CHUNKED_ERROR} in the browser (the proxy closed the connection before the last chunk); {}",
            outcome.sign
        ));
    }
    if actual.contains(H1_BODY_CUT) {
        return Some(format!(
            "{CHROME_CHUNKED_ERROR} in the browser (net::ERR_CONTENT_LENGTH_MISMATCH for a body with a length: the proxy closed the connection mid-body); {}",
            outcome.sign
        ));
    }
    None
}

/// What an HTTP/2 error in an error's causes was on the wire (`RST_STREAM INTERNAL_ERROR
/// (0x2) received`), for [`client::error_chain`]: reqwest's own words ("stream error
/// received: unexpected internal error encountered") do not name the frame.
pub(crate) fn h2_frame_of(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let h2 = e.downcast_ref::<h2::Error>()?;
    let reason = h2.reason()?;
    let frame = if h2.is_go_away() {
        "GOAWAY"
    } else if h2.is_reset() {
        "RST_STREAM"
    } else {
        return None;
    };
    let side = if h2.is_remote() { FROM_PROXY } else { "sent by the client" };
    Some(format!("HTTP/2 {frame} {} {side}", wire::error_name(u32::from(reason))))
}

/// The HTTP/2 frame layer, just enough to read what a proxy sends (RFC 9113 §4, §6).
pub mod wire {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    const PADDED: u8 = 0x8;
    const PRIORITY: u8 = 0x20;
    /// The largest frame a peer may send before SETTINGS_MAX_FRAME_SIZE is raised, which
    /// neither side here does.
    pub const MAX_FRAME: usize = 16_384;

    #[derive(Debug, Clone)]
    pub struct Frame {
        pub kind: u8,
        pub flags: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    impl Frame {
        /// The frame's type as RFC 9113 names it.
        pub fn kind_name(&self) -> String {
            match self.kind {
                0x0 => "DATA",
                0x1 => "HEADERS",
                0x2 => "PRIORITY",
                0x3 => "RST_STREAM",
                0x4 => "SETTINGS",
                0x5 => "PUSH_PROMISE",
                0x6 => "PING",
                0x7 => "GOAWAY",
                0x8 => "WINDOW_UPDATE",
                0x9 => "CONTINUATION",
                other => return format!("type 0x{other:x}"),
            }
            .to_string()
        }

        /// The header block fragment of a HEADERS frame (padding and priority removed) or a
        /// CONTINUATION frame.
        pub fn fragment(&self) -> Result<&[u8], String> {
            let p = &self.payload[..];
            if self.kind != HEADERS {
                return Ok(p);
            }
            let (pad, start) = if self.flags & PADDED != 0 {
                (*p.first().ok_or("HEADERS frame PADDED without a pad length")? as usize, 1)
            } else {
                (0, 0)
            };
            let start = start + if self.flags & PRIORITY != 0 { 5 } else { 0 };
            p.get(start..p.len().saturating_sub(pad))
                .filter(|_| start + pad <= p.len())
                .ok_or_else(|| "HEADERS frame shorter than its padding and priority".to_string())
        }

        /// The error code of a RST_STREAM or GOAWAY frame.
        pub fn error_code(&self) -> Option<u32> {
            let at = match self.kind {
                RST_STREAM => 0,
                GOAWAY => 4,
                _ => return None,
            };
            self.payload.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }

        /// The last stream id a GOAWAY frame says the peer processed.
        pub fn last_stream(&self) -> Option<u32> {
            (self.kind == GOAWAY)
                .then(|| self.payload.get(..4))
                .flatten()
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff)
        }
    }

    /// `INTERNAL_ERROR (0x2)`: an HTTP/2 error code by its RFC 9113 §7 name.
    pub fn error_name(code: u32) -> String {
        const NAMES: [&str; 14] = [
            "NO_ERROR",
            "PROTOCOL_ERROR",
            "INTERNAL_ERROR",
            "FLOW_CONTROL_ERROR",
            "SETTINGS_TIMEOUT",
            "STREAM_CLOSED",
            "FRAME_SIZE_ERROR",
            "REFUSED_STREAM",
            "CANCEL",
            "COMPRESSION_ERROR",
            "CONNECT_ERROR",
            "ENHANCE_YOUR_CALM",
            "INADEQUATE_SECURITY",
            "HTTP_1_1_REQUIRED",
        ];
        match NAMES.get(code as usize) {
            Some(name) => format!("{name} (0x{code:x})"),
            None => format!("unknown error code 0x{code:x}"),
        }
    }

    /// Reads one frame; a frame above [`MAX_FRAME`] is an error (the peer broke the protocol).
    pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Frame> {
        let mut head = [0u8; 9];
        r.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        if len > MAX_FRAME {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a {len}-byte frame, above the {MAX_FRAME} bytes allowed"),
            ));
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await?;
        Ok(Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        })
    }

    pub async fn write_frame<W: AsyncWrite + Unpin>(
        w: &mut W,
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let len = payload.len() as u32;
        let mut bytes = Vec::with_capacity(9 + payload.len());
        bytes.extend_from_slice(&len.to_be_bytes()[1..]);
        bytes.extend_from_slice(&[kind, flags]);
        bytes.extend_from_slice(&stream.to_be_bytes());
        bytes.extend_from_slice(payload);
        w.write_all(&bytes).await?;
        w.flush().await
    }
}

/// The connection-specific header fields of RFC 9113 §8.2.2 found in a header list: every
/// `connection`, `keep-alive`, `proxy-connection`, `transfer-encoding`, `upgrade`, and a `te`
/// other than `trailers`.
pub fn connection_specific(headers: &[(String, String)]) -> Vec<(String, String)> {
    const NAMES: [&str; 5] = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"];
    headers
        .iter()
        .filter(|(n, v)| {
            let n = n.to_ascii_lowercase();
            NAMES.contains(&n.as_str()) || (n == "te" && !v.trim().eq_ignore_ascii_case("trailers"))
        })
        .cloned()
        .collect()
}

/// One request `h2.headers` sends, and what came back on its stream.
#[derive(Debug)]
struct Exchange {
    /// What the request stands for (`an ordinary GET`), for evidence.
    what: &'static str,
    path: String,
    accept: &'static str,
    stream: u32,
    /// Every response header block (1xx ones first), decoded.
    blocks: Vec<Vec<(String, String)>>,
    /// The error code of a RST_STREAM on this stream.
    reset: Option<u32>,
}

impl Exchange {
    fn complete(&self) -> bool {
        self.reset.is_some()
            || self
                .blocks
                .last()
                .and_then(|b| b.iter().find(|(n, _)| n == ":status"))
                .is_some_and(|(_, v)| !v.starts_with('1'))
    }

    fn to_json(&self) -> Value {
        json!({
            "what": self.what,
            "path": self.path,
            "stream": self.stream,
            "header_blocks": self.blocks.iter().map(|b| b.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>()).collect::<Vec<_>>(),
            "rst_stream": self.reset.map(wire::error_name),
        })
    }
}

/// What came back on one HTTP/2 connection.
#[derive(Debug, Default)]
struct Conversation {
    alpn: Option<String>,
    /// Every frame received, one line each (capped), for evidence.
    frames: Vec<String>,
    /// `(last stream id, error code)` of a GOAWAY.
    goaway: Option<(u32, u32)>,
    /// Why reading stopped before every stream was complete.
    broken: Option<String>,
}

/// Frames listed in the evidence at most; a stream of DATA frames says nothing more.
const FRAMES_LISTED: usize = 40;

/// The requests of `h2.headers`: two ordinary API responses with a length, and an event
/// stream (chunked from the backend, long-lived), where a proxy might pass the backend's
/// `Transfer-Encoding` or add a `Connection: keep-alive` of its own.
fn requests(target: &Target) -> Vec<Exchange> {
    let sse = super::sse::routes(target.profile)[0];
    [
        ("an ordinary GET (JSON with a length)", "/api/mock/json?size=512".to_string(), "application/json"),
        ("the request report (JSON)", "/api/mock/request".to_string(), "*/*"),
        ("an event stream", format!("{sse}?ticks=1&interval_ms=1&hold_ms=0"), "text/event-stream"),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (what, path, accept))| Exchange {
        what,
        path,
        accept,
        stream: 1 + 2 * i as u32,
        blocks: Vec::new(),
        reset: None,
    })
    .collect()
}

pub async fn headers(target: &Target) -> Outcome {
    let info = &H2_HEADERS;
    if target.transport != Transport::H2 {
        return info.skip(format!(
            "reads HTTP/2 frames: the {} transport has none (run with --transport h2)",
            target.transport
        ));
    }
    let mut exchanges = requests(target);
    let conversation = match converse(target, &mut exchanges).await {
        Ok(c) => c,
        Err(e) => {
            let expected = "a TLS connection with ALPN h2 whose response header blocks can be read";
            return info.outcome(Grade::Fail, expected, format!("no HTTP/2 conversation: {e}"), json!({"error": e}));
        }
    };
    if conversation.alpn.as_deref() != Some("h2") {
        return info.skip(format!(
            "the proxy chose {:?} by ALPN, not h2: a browser speaks HTTP/1.1 to it",
            conversation.alpn.as_deref().unwrap_or("nothing")
        ));
    }
    let expected = format!(
        "over HTTP/2 (ALPN h2), the response header blocks of {} carry no connection-specific header (Connection, Keep-Alive, Proxy-Connection, Transfer-Encoding, Upgrade; TE other than trailers), and no stream is reset",
        exchanges.iter().map(|e| format!("GET {}", e.path)).collect::<Vec<_>>().join(", ")
    );
    let mut problems = Vec::new();
    for e in &exchanges {
        let found: Vec<String> = e
            .blocks
            .iter()
            .flat_map(|b| connection_specific(b))
            .map(|(n, v)| format!("{n}: {v}"))
            .collect();
        if !found.is_empty() {
            problems.push(format!(
                "{} (GET {}, stream {}): {} in the response HEADERS",
                e.what,
                e.path,
                e.stream,
                found.join(", ")
            ));
        }
        if let Some(code) = e.reset {
            problems.push(format!("GET {} (stream {}): RST_STREAM {}", e.path, e.stream, wire::error_name(code)));
        } else if !e.complete() {
            let why = match (conversation.goaway, &conversation.broken) {
                (Some((last, code)), _) => format!("GOAWAY {} (last stream {last})", wire::error_name(code)),
                (None, Some(why)) => why.clone(),
                (None, None) => "the connection ended".to_string(),
            };
            problems.push(format!("GET {} (stream {}): no response headers: {why}", e.path, e.stream));
        }
    }
    let m = json!({
        "alpn": conversation.alpn,
        "streams": exchanges.iter().map(Exchange::to_json).collect::<Vec<_>>(),
        "goaway": conversation.goaway.map(|(last, code)| json!({"last_stream": last, "error": wire::error_name(code)})),
        "frames": conversation.frames,
    });
    let count: usize = exchanges.iter().flat_map(|e| e.blocks.iter()).map(Vec::len).sum();
    let actual = format!(
        "{} responses over HTTP/2, {count} header fields in all, none connection-specific",
        exchanges.len()
    );
    info.pass_unless(&problems, expected, actual, m)
}

/// Opens TLS with ALPN `h2` (and `http/1.1`, as a browser offers) to the target from the
/// client address, sends the preface, SETTINGS and one HEADERS frame per exchange, and reads
/// frames until every stream has its response headers (or a reset), the connection ends, or
/// [`EXCHANGE_TIMEOUT`] passes.
async fn converse(target: &Target, exchanges: &mut [Exchange]) -> Result<Conversation, String> {
    let Some(trust) = &target.trust else {
        return Err("a TLS transport without the run's authority".into());
    };
    let tcp = within(client::CONNECT_TIMEOUT, "connect", client::connect(target)).await?;
    let _ = tcp.set_nodelay(true);
    let config = trust.client_config(&[b"h2", b"http/1.1"])?;
    let name = rustls_pki_types::ServerName::try_from(target.host.clone())
        .map_err(|e| format!("{} is not a server name: {e}", target.host))?;
    let mut tls = within(
        EXCHANGE_TIMEOUT,
        "TLS handshake",
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await?;
    let mut conversation = Conversation {
        alpn: tls.get_ref().1.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()),
        ..Conversation::default()
    };
    if conversation.alpn.as_deref() != Some("h2") {
        return Ok(conversation);
    }
    let talk = async {
        send_requests(&mut tls, target, exchanges).await?;
        read_responses(&mut tls, exchanges, &mut conversation).await
    };
    match tokio::time::timeout(EXCHANGE_TIMEOUT, talk).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => conversation.broken = Some(e),
        Err(_) => {
            conversation.broken = Some(format!("nothing more within {}", client::secs(EXCHANGE_TIMEOUT)))
        }
    }
    // A polite end; the answer does not matter.
    let goaway = [0u8; 8];
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        wire::write_frame(&mut tls, wire::GOAWAY, 0, 0, &goaway),
    )
    .await;
    Ok(conversation)
}

async fn send_requests<S: AsyncWrite + Unpin>(
    io: &mut S,
    target: &Target,
    exchanges: &[Exchange],
) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let io_err = |e: std::io::Error| format!("sending: {e}");
    io.write_all(wire::PREFACE).await.map_err(io_err)?;
    wire::write_frame(io, wire::SETTINGS, 0, 0, &[]).await.map_err(io_err)?;
    let mut encoder = loona_hpack::Encoder::new();
    for e in exchanges {
        let fields: [(&str, &str); 7] = [
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", &target.host),
            (":path", &e.path),
            ("accept", e.accept),
            ("cache-control", "no-cache"),
            ("user-agent", "proxy-suite (h2.headers)"),
        ];
        let block = encoder.encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        if block.len() > wire::MAX_FRAME {
            return Err(format!("a {}-byte header block for {}", block.len(), e.path));
        }
        let flags = wire::END_HEADERS | wire::END_STREAM;
        wire::write_frame(io, wire::HEADERS, flags, e.stream, &block).await.map_err(io_err)?;
    }
    Ok(())
}

async fn read_responses<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    exchanges: &mut [Exchange],
    conversation: &mut Conversation,
) -> Result<(), String> {
    let mut decoder = loona_hpack::Decoder::new();
    // A header block in progress: its stream and the fragments so far.
    let mut block: Option<(u32, Vec<u8>)> = None;
    while !exchanges.iter().all(Exchange::complete) {
        let frame = wire::read_frame(io).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "the proxy closed the connection".to_string(),
            _ => format!("reading frames: {e}"),
        })?;
        if conversation.frames.len() < FRAMES_LISTED {
            let code = frame.error_code().map(|c| format!(" {}", wire::error_name(c))).unwrap_or_default();
            conversation.frames.push(format!(
                "{} stream {} flags 0x{:x} length {}{code}",
                frame.kind_name(),
                frame.stream,
                frame.flags,
                frame.payload.len()
            ));
        }
        match frame.kind {
            wire::SETTINGS if frame.flags & wire::ACK == 0 => {
                wire::write_frame(io, wire::SETTINGS, wire::ACK, 0, &[]).await.map_err(|e| e.to_string())?
            }
            wire::PING if frame.flags & wire::ACK == 0 => {
                wire::write_frame(io, wire::PING, wire::ACK, 0, &frame.payload).await.map_err(|e| e.to_string())?
            }
            wire::HEADERS | wire::CONTINUATION => {
                let mut fragments = match (frame.kind, block.take()) {
                    (wire::HEADERS, None) => (frame.stream, Vec::new()),
                    (wire::CONTINUATION, Some(open)) if open.0 == frame.stream => open,
                    _ => return Err(format!("a {} frame out of sequence on stream {}", frame.kind_name(), frame.stream)),
                };
                fragments.1.extend_from_slice(frame.fragment()?);
                if frame.flags & wire::END_HEADERS == 0 {
                    block = Some(fragments);
                    continue;
                }
                let fields = decoder
                    .decode(&fragments.1)
                    .map_err(|e| format!("the header block of stream {} does not decode: {e:?}", frame.stream))?;
                let fields = fields
                    .into_iter()
                    .map(|(n, v)| (String::from_utf8_lossy(&n).into_owned(), String::from_utf8_lossy(&v).into_owned()))
                    .collect();
                if let Some(e) = exchanges.iter_mut().find(|e| e.stream == frame.stream) {
                    e.blocks.push(fields);
                }
            }
            wire::RST_STREAM => {
                if let Some(e) = exchanges.iter_mut().find(|e| e.stream == frame.stream) {
                    e.reset = frame.error_code();
                }
            }
            wire::GOAWAY => {
                conversation.goaway = Some((frame.last_stream().unwrap_or(0), frame.error_code().unwrap_or(0)));
                let last = frame.last_stream().unwrap_or(0);
                // Streams above the last one processed will never be answered.
                if exchanges.iter().any(|e| !e.complete() && e.stream > last) {
                    return Ok(());
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn connection_specific_fields_are_found_te_trailers_is_not() {
        let found = connection_specific(&fields(&[
            (":status", "200"),
            ("content-type", "text/event-stream"),
            ("connection", "keep-alive"),
            ("te", "trailers"),
            ("te", "gzip"),
            ("transfer-encoding", "chunked"),
            ("x-upgrade", "no"),
        ]));
        assert_eq!(found, fields(&[("connection", "keep-alive"), ("te", "gzip"), ("transfer-encoding", "chunked")]));
    }

    #[test]
    fn error_codes_read_by_name() {
        assert_eq!(wire::error_name(2), "INTERNAL_ERROR (0x2)");
        assert_eq!(wire::error_name(0xd), "HTTP_1_1_REQUIRED (0xd)");
        assert_eq!(wire::error_name(0x42), "unknown error code 0x42");
    }

    #[test]
    fn a_padded_prioritised_headers_frame_yields_its_fragment() {
        let frame = wire::Frame {
            kind: wire::HEADERS,
            flags: 0x8 | 0x20 | wire::END_HEADERS,
            stream: 1,
            payload: [&[2u8][..], &[0, 0, 0, 3, 16], b"abc", &[0, 0]].concat(),
        };
        assert_eq!(frame.fragment().unwrap(), b"abc");
        let short = wire::Frame { payload: vec![9, 1], ..frame };
        assert!(short.fragment().is_err());
    }

    fn failed(actual: &str) -> Outcome {
        super::super::sse::SSE_IDLE.outcome(Grade::Fail, "the tick arrives", actual, Value::Null)
    }

    #[test]
    fn a_reset_over_h2_and_a_cut_chunked_body_over_h1_name_chromes_errors() {
        let reset = failed("stream broke: stream error received: unexpected internal error encountered [HTTP/2 RST_STREAM INTERNAL_ERROR (0x2) received from the proxy]");
        let sign = browser_sign(&reset, Transport::H2).unwrap();
        assert!(sign.starts_with(CHROME_H2_ERROR) && sign.ends_with(super::super::sse::SSE_IDLE.sign), "{sign}");
        let cut = failed("stream broke: error reading a body from connection: unexpected EOF during chunk size line");
        assert!(browser_sign(&cut, Transport::H1Tls).unwrap().starts_with(CHROME_CHUNKED_ERROR));
        assert!(browser_sign(&cut, Transport::H2).is_none());
        assert!(browser_sign(&failed("504 Gateway Timeout after 75 s"), Transport::H2).is_none());
    }

    #[test]
    fn h2_only_checks_apply_to_h2_alone() {
        assert!(applies("h2.headers", Transport::H2));
        assert!(!applies("h2.headers", Transport::H1Tls));
        assert!(applies("sse.idle", Transport::H1));
    }
}
