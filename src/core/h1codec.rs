//! The client side of HTTP/1.1 where edgebox speaks it itself: the
//! gateway's owned upstream connections (roles/gateway/owned.rs), and the
//! blocking client of CLI commands, probes and forwarding (httpclient.rs).
//!
//! hyper's client hands each request through a channel to a dispatcher
//! task and the answer and its body back through two more; an owned
//! connection is driven by the one task that uses it, so it writes the
//! request itself and reads the answer here: the head parsed by httparse
//! (hyper's own parser) into header values that share the read buffer, and
//! the body framed as RFC 9112 §6.3 says, by Content-Length, chunked coding
//! or the end of the connection. Anything the codec cannot frame with
//! certainty is an error, and a connection is not used again after it.

use std::io::Write;
use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version};

/// The largest answer head (status line and headers), and trailer section.
pub const MAX_HEAD: usize = 64 * 1024;

/// The most headers an answer head may have.
const MAX_HEADERS: usize = 100;

/// The longest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 4096;

/// Why an answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("the answer's head is over {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("malformed answer head: {0}")]
    Head(httparse::Error),
    #[error("answer header {0:?}: invalid {1}")]
    Header(String, &'static str),
    #[error("invalid or conflicting Content-Length {0:?}")]
    ContentLength(String),
    #[error("answered 101 Switching Protocols to a request that asked for no upgrade")]
    Upgrade,
    #[error("malformed chunked body at byte {0}: {1}")]
    Chunk(u64, &'static str),
    #[error("the upstream closed the connection {0}")]
    Closed(&'static str),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Writes a request head for a body of `body_len` bytes to `out`. Host is
/// the upstream's; the client's framing headers give way to the body's
/// length, and its `Expect` to the body that follows at once.
pub fn encode_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    host: &HeaderValue,
    headers: &HeaderMap,
    body_len: usize,
) {
    for part in [method.as_str().as_bytes(), b" ", target.as_bytes(), b" HTTP/1.1\r\nhost: ", host.as_bytes()] {
        out.extend_from_slice(part);
    }
    for (name, value) in headers {
        if name == HOST || name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == EXPECT {
            continue;
        }
        for part in [b"\r\n", name.as_str().as_bytes(), b": ", value.as_bytes()] {
            out.extend_from_slice(part);
        }
    }
    // A method that defines a body says how long it is, even when empty
    // (RFC 9110 §8.6); others say nothing of an empty one.
    if body_len > 0 || matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        out.extend_from_slice(b"\r\ncontent-length: ");
        let _ = write!(out, "{body_len}");
    }
    out.extend_from_slice(b"\r\n\r\n");
}

/// An answer's head, and how its body is framed.
pub struct Head {
    pub response: Response<()>,
    pub body: BodyState,
    /// The connection may carry another request once the body is read.
    pub keep_alive: bool,
}

/// Decodes the final answer head at the start of `buf`, dropping interim
/// (1xx) answers before it; None: more bytes are needed.
pub fn decode_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, AnswerError> {
    loop {
        let Some(head) = decode_one_head(buf, method)? else {
            if buf.len() > MAX_HEAD {
                return Err(AnswerError::HeadTooLarge);
            }
            return Ok(None);
        };
        match head.response.status() {
            StatusCode::SWITCHING_PROTOCOLS => return Err(AnswerError::Upgrade),
            s if s.is_informational() => continue,
            _ => return Ok(Some(head)),
        }
    }
}

/// Where a header's name and value lie in the head.
#[derive(Clone, Copy, Default)]
struct Span {
    name: (usize, usize),
    value: (usize, usize),
}

fn decode_one_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, AnswerError> {
    let mut parsed = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut spans = [Span::default(); MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut answer, buf, &mut parsed)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(AnswerError::Head(e)),
    };
    if len > MAX_HEAD {
        return Err(AnswerError::HeadTooLarge);
    }
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| (s.as_ptr() as usize - base, s.as_ptr() as usize - base + s.len());
    let count = answer.headers.len();
    for (span, h) in spans.iter_mut().zip(answer.headers.iter()) {
        *span = Span { name: at(h.name.as_bytes()), value: at(h.value) };
    }
    let version = match answer.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let status = StatusCode::from_u16(answer.code.unwrap_or_default())
        .map_err(|_| AnswerError::Head(httparse::Error::Status))?;
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(count);
    for span in &spans[..count] {
        let name = &head[span.name.0..span.name.1];
        let name = HeaderName::from_bytes(name)
            .map_err(|_| AnswerError::Header(String::from_utf8_lossy(name).into_owned(), "name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(span.value.0..span.value.1))
            .map_err(|_| AnswerError::Header(name.to_string(), "value"))?;
        headers.append(name, value);
    }
    let (body, framed) = framing(&headers, status, method)?;
    let keep_alive = framed && persistent(&headers, version);
    if matches!(body, BodyState::Chunked(_) | BodyState::UntilClose) {
        // Chunked or read to the end: a Content-Length beside it is void
        // (RFC 9112 §6.3), and must not reach the client.
        headers.remove(CONTENT_LENGTH);
    }
    // The version is the upstream's business: the client gets the gateway's.
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(Some(Head { response, body, keep_alive }))
}

/// How the body is framed, and whether its end leaves the connection in
/// step (false: it is read to the connection's end, or its framing was
/// ambiguous).
fn framing(headers: &HeaderMap, status: StatusCode, method: &Method) -> Result<(BodyState, bool), AnswerError> {
    if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((BodyState::Done, true));
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        let last = headers.get_all(TRANSFER_ENCODING).iter().next_back();
        let last = last.and_then(|v| v.as_bytes().rsplit(|b| *b == b',').next()).map(<[u8]>::trim_ascii);
        let chunked = last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        // Transfer-Encoding with Content-Length smells of smuggling: the
        // connection goes after this answer.
        let unambiguous = chunked && !headers.contains_key(CONTENT_LENGTH);
        return Ok(match chunked {
            true => (BodyState::Chunked(Chunked::default()), unambiguous),
            false => (BodyState::UntilClose, false),
        });
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for item in value.as_bytes().split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            let bad = || AnswerError::ContentLength(String::from_utf8_lossy(value.as_bytes()).into_owned());
            if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
                return Err(bad());
            }
            let n = item.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            if length.is_some_and(|l| l != n) {
                return Err(bad());
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => (BodyState::Done, true),
        Some(n) => (BodyState::Length(n), true),
        None => (BodyState::UntilClose, false),
    })
}

/// Whether the upstream keeps the connection open after this answer.
fn persistent(headers: &HeaderMap, version: Version) -> bool {
    let has = |token: &[u8]| {
        headers
            .get_all(CONNECTION)
            .iter()
            .any(|v| v.as_bytes().split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token)))
    };
    match version {
        Version::HTTP_10 => has(b"keep-alive"),
        _ => !has(b"close"),
    }
}

/// Where the reading of an answer's body stands.
pub enum BodyState {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunked),
    /// Everything up to the connection's end.
    UntilClose,
    Done,
}

/// What the buffered bytes gave.
pub enum Decoded {
    Data(Bytes),
    /// More bytes are needed.
    More,
    End,
}

impl BodyState {
    /// Takes the next piece of the body out of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, AnswerError> {
        match self {
            BodyState::Done => Ok(Decoded::End),
            BodyState::Length(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                if *left == 0 {
                    *self = BodyState::Done;
                }
                Ok(Decoded::Data(buf.split_to(n).freeze()))
            }
            BodyState::UntilClose => match buf.is_empty() {
                true => Ok(Decoded::More),
                false => Ok(Decoded::Data(buf.split().freeze())),
            },
            BodyState::Chunked(chunked) => {
                let decoded = chunked.decode(buf)?;
                if let Decoded::End = decoded {
                    *self = BodyState::Done;
                }
                Ok(decoded)
            }
        }
    }

    /// The connection ended: the end of a body read to the end, an error
    /// for any other.
    pub fn eof(&mut self) -> Result<(), AnswerError> {
        match self {
            BodyState::UntilClose | BodyState::Done => {
                *self = BodyState::Done;
                Ok(())
            }
            _ => Err(AnswerError::Closed("in the middle of the answer's body")),
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, BodyState::Done)
    }

    /// The bytes still to come, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            BodyState::Length(n) => Some(*n),
            BodyState::Done => Some(0),
            _ => None,
        }
    }
}

/// A chunked body's framing (RFC 9112 §7.1), decoded as bytes arrive:
/// `size[;ext]CRLF data CRLF` ... `0[;ext]CRLF [trailers] CRLF`. Trailers
/// are read and dropped.
#[derive(Default)]
pub struct Chunked {
    state: ChunkState,
    /// Bytes of the body read so far: where an error lies.
    offset: u64,
    /// Bytes in the current size line or trailer section.
    line: usize,
}

#[derive(Default, Clone, Copy, PartialEq)]
enum ChunkState {
    /// Before the size's first hex digit; then the size so far.
    #[default]
    SizeStart,
    Size(u64),
    /// After the size: extensions (ignored), up to the line's CR.
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line, or the empty line that ends all.
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    End,
}

impl Chunked {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, AnswerError> {
        use ChunkState::*;
        let mut used = 0;
        loop {
            if let Data(left) = self.state {
                // The framing read so far goes; the data is handed on whole.
                buf.advance(used);
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                self.state = if n as u64 == left { DataCr } else { Data(left - n as u64) };
                self.offset += n as u64;
                return Ok(Decoded::Data(buf.split_to(n).freeze()));
            }
            if used == buf.len() {
                buf.advance(used);
                return Ok(Decoded::More);
            }
            let b = buf[used];
            used += 1;
            self.offset += 1;
            self.line += 1;
            let fail = |why| AnswerError::Chunk(self.offset - 1, why);
            self.state = match (self.state, b) {
                (SizeStart, _) if b.is_ascii_hexdigit() => Size(hex(b)),
                (SizeStart, _) => return Err(fail("expected a chunk size")),
                (Size(n), _) if b.is_ascii_hexdigit() => match n >> 56 {
                    0 => Size(n << 4 | hex(b)),
                    _ => return Err(fail("chunk size too large")),
                },
                (Size(n), b'\r') => SizeLf(n),
                (Size(n), b';' | b' ' | b'\t') => Extension(n),
                (Size(_), _) => return Err(fail("invalid byte in a chunk size")),
                (Extension(n), b'\r') => SizeLf(n),
                (Extension(_), b'\n') => return Err(fail("bare LF after a chunk size")),
                (Extension(n), _) => Extension(n),
                (SizeLf(0), b'\n') => TrailerStart,
                (SizeLf(n), b'\n') => Data(n),
                (SizeLf(_), _) => return Err(fail("expected LF after a chunk size")),
                (DataCr, b'\r') => DataLf,
                (DataCr, _) => return Err(fail("expected CR after chunk data")),
                (DataLf, b'\n') => SizeStart,
                (DataLf, _) => return Err(fail("expected LF after chunk data")),
                (TrailerStart, b'\r') => EndLf,
                (TrailerStart | Trailer, b'\n') => return Err(fail("bare LF in the trailers")),
                (Trailer, b'\r') => TrailerLf,
                (TrailerStart | Trailer, _) => Trailer,
                (TrailerLf, b'\n') => TrailerStart,
                (TrailerLf, _) => return Err(fail("expected LF after a trailer")),
                (EndLf, b'\n') => End,
                (EndLf, _) => return Err(fail("expected LF at the end of the body")),
                (Data(_) | End, _) => unreachable!("handled before the byte is read"),
            };
            match self.state {
                SizeLf(_) | Size(_) | Extension(_) if self.line > MAX_CHUNK_LINE => {
                    return Err(AnswerError::Chunk(self.offset - 1, "chunk size line too long"));
                }
                TrailerStart | Trailer | TrailerLf | EndLf if self.line > MAX_HEAD => {
                    return Err(AnswerError::Chunk(self.offset - 1, "trailers too large"));
                }
                Data(_) | SizeStart => self.line = 0,
                End => {
                    buf.advance(used);
                    return Ok(Decoded::End);
                }
                _ => {}
            }
        }
    }
}

/// Decodes an answer that arrived whole (`step` its length; httpclient.rs),
/// or in pieces of `step` bytes as a connection would read it (tests and
/// fuzzing): the head, the body, and the bytes left after it.
pub fn decode_in_pieces(answer: &[u8], method: &Method, step: usize) -> Result<(Head, Vec<u8>, Vec<u8>), AnswerError> {
    let mut buf = BytesMut::new();
    let mut chunks = answer.chunks(step);
    let mut head = loop {
        if let Some(head) = decode_head(&mut buf, method)? {
            break head;
        }
        match chunks.next() {
            Some(c) => buf.extend_from_slice(c),
            None => return Err(AnswerError::Closed("before the answer")),
        }
    };
    let mut body = Vec::new();
    loop {
        match head.body.decode(&mut buf)? {
            Decoded::Data(d) => body.extend_from_slice(&d),
            Decoded::End => break,
            Decoded::More => match chunks.next() {
                Some(c) => buf.extend_from_slice(c),
                None => {
                    head.body.eof()?;
                    break;
                }
            },
        }
    }
    let rest = [&buf[..], &chunks.flatten().copied().collect::<Vec<u8>>()[..]].concat();
    Ok((head, body, rest))
}

fn hex(b: u8) -> u64 {
    u64::from(match b {
        b'0'..=b'9' => b - b'0',
        _ => (b | 0x20) - b'a' + 10,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_steps(answer: &[u8], method: &Method) -> (Head, Vec<u8>, Vec<u8>) {
        let whole = decode_in_pieces(answer, method, answer.len().max(1)).unwrap();
        for step in 1..answer.len() {
            let (head, body, rest) = decode_in_pieces(answer, method, step).unwrap();
            assert_eq!((head.response.status(), &body, &rest), (whole.0.response.status(), &whole.1, &whole.2));
            assert_eq!(head.keep_alive, whole.0.keep_alive, "step {step}");
        }
        whole
    }

    #[test]
    fn requests_carry_the_upstream_host_and_the_body_length() {
        let mut headers = HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("1"));
        headers.insert(HOST, HeaderValue::from_static("client.example"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("99"));
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert(EXPECT, HeaderValue::from_static("100-continue"));
        let host = HeaderValue::from_static("up:8080");
        let mut out = Vec::new();
        encode_head(&mut out, &Method::POST, "/p?q=1", &host, &headers, 2);
        assert_eq!(out, b"POST /p?q=1 HTTP/1.1\r\nhost: up:8080\r\nx-a: 1\r\ncontent-length: 2\r\n\r\n");
        out.clear();
        encode_head(&mut out, &Method::GET, "/", &host, &HeaderMap::new(), 0);
        assert_eq!(out, b"GET / HTTP/1.1\r\nhost: up:8080\r\n\r\n");
        out.clear();
        encode_head(&mut out, &Method::PUT, "/", &host, &HeaderMap::new(), 0);
        assert_eq!(out, b"PUT / HTTP/1.1\r\nhost: up:8080\r\ncontent-length: 0\r\n\r\n");
    }

    #[test]
    fn bodies_are_framed_by_length_chunks_or_the_connections_end() {
        let (head, body, rest) =
            all_steps(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-b: two\r\n\r\nhelloGET", &Method::GET);
        assert_eq!(
            (head.response.headers()["x-b"].as_bytes(), &body[..], &rest[..]),
            (&b"two"[..], &b"hello"[..], &b"GET"[..])
        );
        assert!(head.keep_alive);
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5;ext=\"a\"\r\nhello\r\nA \r\n0123456789\r\n0\r\nx-t: 1\r\n\r\nNEXT";
        let (head, body, rest) = all_steps(chunked, &Method::GET);
        assert_eq!((&body[..], &rest[..]), (&b"hello0123456789"[..], &b"NEXT"[..]));
        assert!(head.keep_alive);
        let (head, body, _) = all_steps(b"HTTP/1.1 200 OK\r\n\r\nto the end", &Method::GET);
        assert_eq!((&body[..], head.keep_alive), (&b"to the end"[..], false));
        // Both: chunked wins, Content-Length goes, and so does the connection.
        let (head, body, _) = all_steps(
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
            &Method::GET,
        );
        assert_eq!((&body[..], head.keep_alive), (&b"x"[..], false));
        assert!(!head.response.headers().contains_key(CONTENT_LENGTH));
        // A coding other than chunked last: read to the end.
        let (head, body, _) = all_steps(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nzz", &Method::GET);
        assert_eq!((&body[..], head.keep_alive), (&b"zz"[..], false));
    }

    #[test]
    fn some_answers_have_no_body_whatever_they_say() {
        let (head, body, rest) = all_steps(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nNEXT", &Method::HEAD);
        assert_eq!((&body[..], &rest[..], head.keep_alive), (&b""[..], &b"NEXT"[..], true));
        assert_eq!(head.response.headers()[CONTENT_LENGTH], "5");
        for status in ["204 No Content", "304 Not Modified"] {
            let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 5\r\n\r\nNEXT");
            let (_, body, rest) = all_steps(answer.as_bytes(), &Method::GET);
            assert_eq!((&body[..], &rest[..]), (&b""[..], &b"NEXT"[..]));
        }
        // Interim answers go; the final one is read.
        let (head, body, _) = all_steps(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 1\r\n\r\nx",
            &Method::POST,
        );
        assert_eq!((head.response.status(), &body[..]), (StatusCode::CREATED, &b"x"[..]));
        assert!(!head.response.headers().contains_key("link"));
    }

    #[test]
    fn the_connection_persists_as_the_version_and_connection_header_say() {
        let keep = |answer: &[u8]| all_steps(answer, &Method::GET).0.keep_alive;
        assert!(!keep(b"HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 0\r\n\r\n"));
        assert!(!keep(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n"));
        assert!(keep(b"HTTP/1.0 200 OK\r\nconnection: x, Keep-Alive\r\ncontent-length: 0\r\n\r\n"));
        assert!(keep(b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\ncontent-length: 2\r\n\r\nok"));
    }

    #[test]
    fn malformed_answers_are_errors_that_say_what_is_wrong() {
        let err = |answer: &[u8]| decode_in_pieces(answer, &Method::GET, answer.len()).err().map(|e| e.to_string());
        let cases: &[(&[u8], &str)] = &[
            (b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nx", "conflicting Content-Length \"2\""),
            (b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", "Content-Length \"-1\""),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n", "Content-Length"),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 1 2\r\n\r\n", "Content-Length \"1 2\""),
            (b"HTTP/1.1 2000 OK\r\n\r\n", "malformed answer head"),
            (b"HTTP/1.1 099 OK\r\n\r\n", "malformed answer head"),
            (b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", "malformed answer head"),
            (b"\x16\x03\x01\x00", "malformed answer head"),
            (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "101"),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab", "closed the connection in the middle"),
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", "byte 0: expected a chunk size"),
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\nx", "byte 1: invalid byte"),
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nxy", "byte 4: expected CR"),
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10000000000000000\r\n", "chunk size too large"),
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nx-t: 1\n\r\n", "bare LF in the trailers"),
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\n", "closed the connection in the middle"),
        ];
        for (answer, expected) in cases {
            let got = err(answer).unwrap_or_else(|| panic!("{:?} decoded", String::from_utf8_lossy(answer)));
            assert!(got.contains(expected), "{:?}: {got}", String::from_utf8_lossy(answer));
        }
        // Unbounded heads, size lines and trailers stop at their bounds.
        let long_head = [&b"HTTP/1.1 200 OK\r\nx: "[..], &vec![b'a'; MAX_HEAD + 1]].concat();
        assert!(err(&long_head).unwrap().contains("head is over"));
        let long_ext =
            [&b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1;"[..], &vec![b'a'; MAX_CHUNK_LINE]].concat();
        assert!(err(&long_ext).unwrap().contains("chunk size line too long"));
        let trailers = b"x: y\r\n".repeat(MAX_HEAD / 6 + 1);
        let long_trailers = [&b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n"[..], &trailers].concat();
        assert!(err(&long_trailers).unwrap().contains("trailers too large"));
    }
}
