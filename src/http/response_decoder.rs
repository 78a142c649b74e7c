//! The response decoder: bytes in, events out, no I/O, the mirror of the request
//! decoder. The one response parser of the project: [`HttpClient`](super::HttpClient)
//! reads its answers with it, and so does loadtest.
//!
//! A client is given more latitude than a server in one place only, the chunk-size
//! line (see [`chunk_size`](super::framing::chunk_size)). The head's grammar is the
//! request's (`head.rs`): CRLF ends every line, field lines are `name ":" OWS value
//! OWS` without whitespace before the colon or obs-fold, and the framing rules are
//! RFC 9112 §6.3's: a Transfer-Encoding whose final coding is chunked wins over a
//! Content-Length (and the connection is not reused after such a message, which may
//! be an attempt at response splitting); another final coding means the body runs
//! until the server closes; a list of Content-Length values must all be the same;
//! the answer to a HEAD request and 1xx, 204 and 304 answers have no body.
//!
//! Memory is bounded: a head, a chunk-size line or a trailer section is never asked
//! to be buffered past its limit; body bytes are handed out as they arrive. Bytes that
//! cannot begin a response (anything but `HTTP/`) fail at once, without waiting for a
//! head's worth of them.

use super::framing::{
    chunk_size, content_length, find_blank_line, find_crlf, lone_cr_or_lf, FramingError,
};
use super::head::{field_line, MAX_CHUNK_LINE};
use std::ops::Range;

/// How a message's body is delimited (RFC 9112 §6.3).
///
/// ```
/// use coreloop::http::framing::{BodyLength, ResponseDecoder, ResponseEvent};
/// let mut d = ResponseDecoder::new();
/// let (_, ev) = d.decode(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
/// let ResponseEvent::Head(head) = ev else { panic!() };
/// assert_eq!(head.body(), BodyLength::Length(5));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLength {
    /// No body (the answer to HEAD; 1xx, 204, 304; a request without framing headers).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding, ended by its last chunk.
    Chunked,
    /// Until the sender closes the connection (a response only).
    UntilClose,
}

/// A response head: status line and header fields, with what they say about the body
/// and the connection. It keeps the head's bytes and refers into them.
#[derive(Clone, Debug)]
pub struct ResponseHead {
    /// The head's bytes, then where each field's name and value are in them (four
    /// `u32`s a field): one allocation for both.
    bytes: Vec<u8>,
    len: u32,
    status: u16,
    minor_version: u8,
    reason: Range<u32>,
    body: BodyLength,
    keep_alive: bool,
}

/// A field's name and value, as offsets into the head.
type Spans = [u32; 4];

impl ResponseHead {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }
    /// The reason phrase (`OK`), possibly empty; lossy if it is not UTF-8.
    pub fn reason(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes[span(&self.reason)])
    }
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub fn minor_version(&self) -> u8 {
        self.minor_version
    }
    /// How the body is delimited.
    pub fn body(&self) -> BodyLength {
        self.body
    }
    /// Whether the connection may carry another request after this response's body:
    /// HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with `keep-alive`, never after
    /// a body delimited by the close or framed by both Transfer-Encoding and
    /// Content-Length.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }
    /// The first value of header `name` (case-insensitive), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
    /// Every header as (name, value), in order (values with surrounding whitespace
    /// trimmed).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        let (head, spans) = self.bytes.split_at(self.len as usize);
        spans.chunks_exact(16).map(move |c| {
            let c: &[u8; 16] = c.try_into().unwrap_or(&[0; 16]);
            let at = |i: usize| u32::from_ne_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]) as usize;
            // Names are tokens (ASCII): the check cannot fail.
            let name = std::str::from_utf8(&head[at(0)..at(4)]).unwrap_or("");
            (name, &head[at(8)..at(12)])
        })
    }
    /// The head's bytes, as received (status line through the empty line).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

fn span(r: &Range<u32>) -> Range<usize> {
    r.start as usize..r.end as usize
}

/// What [`ResponseDecoder::decode`] found.
#[derive(Debug)]
pub enum ResponseEvent {
    /// More bytes are needed (what was consumed so far is done with).
    NeedMore,
    /// A response head. A 1xx head is interim: the final response's head follows.
    /// Unless its body is [`BodyLength::None`], `Body` events and an `End` follow.
    Head(ResponseHead),
    /// Body bytes (de-chunked): this range of the buffer given to `decode`.
    Body(Range<usize>),
    /// The body (and any trailers) ended: the response is complete.
    End,
    /// The response is malformed; nothing after it can be trusted.
    Error(FramingError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Length { left: u64 },
    ChunkSize,
    ChunkData { left: u64 },
    ChunkEnd,
    Trailers,
    UntilClose,
    Failed(&'static str),
}

/// One connection's response decoder (sans-I/O: it is handed the unread bytes and
/// says how many it consumed and what it found), for a client that drives its own
/// connection. [`HttpClient`](super::HttpClient) uses it; so does loadtest.
///
/// ```
/// use coreloop::http::framing::{ResponseDecoder, ResponseEvent};
/// let mut d = ResponseDecoder::new();
/// let buf = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
/// let mut at = 0;
/// let mut body = Vec::new();
/// loop {
///     let (n, ev) = d.decode(&buf[at..]);
///     match ev {
///         ResponseEvent::Head(h) => assert_eq!(h.status(), 200),
///         ResponseEvent::Body(r) => body.extend_from_slice(&buf[at..][r]),
///         ResponseEvent::End => break,
///         other => panic!("{other:?}"),
///     }
///     at += n;
/// }
/// assert_eq!(body, b"hello");
/// ```
#[derive(Debug)]
pub struct ResponseDecoder {
    state: State,
    /// Bytes at the front of the current head, chunk-size line or trailer section
    /// already searched without finding its end.
    scanned: usize,
    /// The request this response answers was HEAD: no body, whatever the head says.
    head_request: bool,
    max_head: usize,
    max_headers: usize,
}

impl Default for ResponseDecoder {
    fn default() -> Self {
        ResponseDecoder::new()
    }
}

/// Default largest response head, bytes.
pub const DEFAULT_MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Default most header fields in a response head.
pub const DEFAULT_MAX_RESPONSE_HEADERS: usize = 128;

impl ResponseDecoder {
    /// A decoder with the default limits (a 64 KiB head, 128 header fields).
    pub fn new() -> ResponseDecoder {
        ResponseDecoder::with_limits(DEFAULT_MAX_RESPONSE_HEAD, DEFAULT_MAX_RESPONSE_HEADERS)
    }

    /// A decoder that refuses heads (and trailer sections) over `max_head` bytes or
    /// with more than `max_headers` fields.
    ///
    /// ```
    /// use coreloop::http::framing::{ResponseDecoder, ResponseEvent};
    /// let mut d = ResponseDecoder::with_limits(64, 8);
    /// let (_, ev) = d.decode(&[b"HTTP/1.1 200 OK\r\nX: ".as_slice(), &[b'a'; 100]].concat());
    /// assert!(matches!(ev, ResponseEvent::Error(_)));
    /// ```
    pub fn with_limits(max_head: usize, max_headers: usize) -> ResponseDecoder {
        ResponseDecoder {
            state: State::Head,
            scanned: 0,
            head_request: false,
            max_head: max_head.min(u32::MAX as usize),
            max_headers,
        }
    }

    /// A decoder at the start of a chunked body (for `framing::chunked_len`).
    pub(crate) fn chunked_body() -> ResponseDecoder {
        ResponseDecoder {
            state: State::ChunkSize,
            ..ResponseDecoder::new()
        }
    }

    /// Says whether the next response answers a HEAD request (which has no body,
    /// whatever its framing headers say: RFC 9110 §9.3.2). Call before its head.
    pub fn answering_head(&mut self, head: bool) {
        self.head_request = head;
    }

    /// True between responses: no byte of the next head has been consumed.
    pub fn between_responses(&self) -> bool {
        self.state == State::Head && self.scanned == 0
    }

    /// Decodes from the front of `buf` (the unread bytes; what an earlier call consumed
    /// is no longer in it). Returns how many bytes were consumed, and what was found.
    /// Call again after anything but `NeedMore` (or after `NeedMore` once more bytes
    /// have arrived); after `Error` it answers `Error` again.
    pub fn decode(&mut self, buf: &[u8]) -> (usize, ResponseEvent) {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match self.state {
                State::Head => {
                    let (n, ev) = self.head(rest);
                    return (pos + n, ev);
                }
                State::Length { left } => {
                    if left == 0 {
                        self.state = State::Head;
                        return (pos, ResponseEvent::End);
                    }
                    if rest.is_empty() {
                        return (pos, ResponseEvent::NeedMore);
                    }
                    let n = left.min(rest.len() as u64) as usize;
                    self.state = State::Length {
                        left: left - n as u64,
                    };
                    return (pos + n, ResponseEvent::Body(pos..pos + n));
                }
                State::UntilClose => {
                    if rest.is_empty() {
                        return (pos, ResponseEvent::NeedMore);
                    }
                    return (buf.len(), ResponseEvent::Body(pos..buf.len()));
                }
                State::ChunkSize => {
                    let hay = &rest[..rest.len().min(MAX_CHUNK_LINE + 2)];
                    match find_crlf(hay, self.scanned.saturating_sub(1)) {
                        None if rest.len() > MAX_CHUNK_LINE + 2 => {
                            return self.fail(pos, "chunk-size line too long")
                        }
                        None => {
                            self.scanned = hay.len();
                            return (pos, ResponseEvent::NeedMore);
                        }
                        Some(end) => {
                            self.scanned = 0;
                            let Some(size) = chunk_size(&rest[..end]) else {
                                return self.fail(pos, "malformed chunk-size line");
                            };
                            pos += end + 2;
                            self.state = if size == 0 {
                                State::Trailers
                            } else {
                                State::ChunkData { left: size }
                            };
                        }
                    }
                }
                State::ChunkData { left } => {
                    if rest.is_empty() {
                        return (pos, ResponseEvent::NeedMore);
                    }
                    let n = left.min(rest.len() as u64) as usize;
                    self.state = if n as u64 == left {
                        State::ChunkEnd
                    } else {
                        State::ChunkData {
                            left: left - n as u64,
                        }
                    };
                    return (pos + n, ResponseEvent::Body(pos..pos + n));
                }
                State::ChunkEnd => match rest {
                    [] | [b'\r'] => return (pos, ResponseEvent::NeedMore),
                    [b'\r', b'\n', ..] => {
                        pos += 2;
                        self.state = State::ChunkSize;
                    }
                    _ => return self.fail(pos, "chunk data not followed by CRLF"),
                },
                State::Trailers => {
                    if rest.starts_with(b"\r\n") {
                        self.finish_message();
                        return (pos + 2, ResponseEvent::End);
                    }
                    if rest.len() == 1 && rest[0] == b'\r' {
                        return (pos, ResponseEvent::NeedMore);
                    }
                    let hay = &rest[..rest.len().min(self.max_head)];
                    match find_blank_line(hay, self.scanned.saturating_sub(3)) {
                        None if rest.len() > self.max_head => {
                            return self.fail(pos, "trailer section too large")
                        }
                        None => {
                            self.scanned = hay.len();
                            return (pos, ResponseEvent::NeedMore);
                        }
                        Some(end) => {
                            let section = &rest[..end + 4];
                            if let Err(why) = fields(section, 0, self.max_headers, |_, _| Ok(())) {
                                return self.fail(pos, why);
                            }
                            self.finish_message();
                            return (pos + end + 4, ResponseEvent::End);
                        }
                    }
                }
                State::Failed(why) => return (pos, ResponseEvent::Error(FramingError::new(why))),
            }
        }
    }

    /// The connection closed: the end of a body delimited by the close (`End`), or an
    /// error if a response was cut short. Between responses it answers `NeedMore`
    /// (nothing was lost).
    ///
    /// ```
    /// use coreloop::http::framing::{ResponseDecoder, ResponseEvent};
    /// let mut d = ResponseDecoder::new();
    /// let (n, _head) = d.decode(b"HTTP/1.0 200 OK\r\n\r\n");
    /// assert_eq!(n, 19);
    /// assert!(matches!(d.decode(b"all of it").1, ResponseEvent::Body(_)));
    /// assert!(matches!(d.eof(), ResponseEvent::End));
    /// ```
    pub fn eof(&mut self) -> ResponseEvent {
        match self.state {
            State::UntilClose => {
                self.finish_message();
                ResponseEvent::End
            }
            State::Head if self.scanned == 0 => ResponseEvent::NeedMore,
            State::Failed(why) => ResponseEvent::Error(FramingError::new(why)),
            State::Head => self.fail(0, "connection closed in the middle of a head").1,
            _ => self.fail(0, "connection closed in the middle of a body").1,
        }
    }

    fn finish_message(&mut self) {
        self.state = State::Head;
        self.scanned = 0;
        self.head_request = false;
    }

    fn fail(&mut self, pos: usize, why: &'static str) -> (usize, ResponseEvent) {
        self.state = State::Failed(why);
        (pos, ResponseEvent::Error(FramingError::new(why)))
    }

    /// The head at the front of `b`.
    fn head(&mut self, b: &[u8]) -> (usize, ResponseEvent) {
        let n = b.len().min(5);
        if b[..n] != b"HTTP/"[..n] {
            return self.fail(0, "not an HTTP response (no HTTP/ status line)");
        }
        let hay = &b[..b.len().min(self.max_head)];
        let Some(end) = find_blank_line(hay, self.scanned.saturating_sub(3)) else {
            if b.len() > self.max_head {
                return self.fail(0, "response head too large");
            }
            // A line ended by a bare LF (or a CR with something else after it) would
            // leave the head without its end: fail now rather than at a timeout.
            if lone_cr_or_lf(hay, self.scanned.saturating_sub(1)) {
                return self.fail(0, "a line of the head not ended by CRLF");
            }
            self.scanned = hay.len();
            return (0, ResponseEvent::NeedMore);
        };
        self.scanned = 0;
        let len = end + 4;
        match parse_head(&b[..len], self.head_request, self.max_headers) {
            Ok(head) => {
                self.state = match head.body {
                    BodyLength::None => State::Head,
                    BodyLength::Length(n) => State::Length { left: n },
                    BodyLength::Chunked => State::ChunkSize,
                    BodyLength::UntilClose => State::UntilClose,
                };
                if head.status >= 200 && head.body == BodyLength::None {
                    self.head_request = false;
                }
                (len, ResponseEvent::Head(head))
            }
            Err(why) => self.fail(0, why),
        }
    }
}

/// Parses a whole head (status line through the empty line).
fn parse_head(
    b: &[u8],
    head_request: bool,
    max_headers: usize,
) -> Result<ResponseHead, &'static str> {
    // HTTP-version SP 3DIGIT SP [ reason-phrase ] CRLF; the SP before an empty reason
    // is often left out, and tolerated.
    let bad_line = "malformed status line";
    let v = b.get(..12).ok_or(bad_line)?;
    if &v[..5] != b"HTTP/" || !v[5].is_ascii_digit() || v[6] != b'.' || !v[7].is_ascii_digit() {
        return Err(bad_line);
    }
    if v[5] != b'1' {
        return Err("not HTTP/1.x");
    }
    if v[8] != b' ' || !v[9..12].iter().all(u8::is_ascii_digit) {
        return Err(bad_line);
    }
    let status = v[9..12]
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if status < 100 {
        return Err("status code under 100");
    }
    let line_end = find_crlf(b, 0).ok_or(bad_line)?;
    let reason = match line_end {
        12 => 12..12,
        _ if b[12] == b' ' => 13..line_end,
        _ => return Err(bad_line),
    };
    if !b[reason.clone()]
        .iter()
        .all(|&c| c == b'\t' || c == b' ' || (c > 0x20 && c != 0x7f))
    {
        return Err("malformed reason phrase");
    }
    let minor_version = u8::from(v[7] != b'0');
    let mut f = Framing::default();
    let mut spans: smallvec::SmallVec<[Spans; 16]> = smallvec::SmallVec::new();
    fields(b, line_end + 2, max_headers, |name, value| {
        f.take(&b[name.clone()], &b[value.clone()])?;
        let at = |i: usize| i as u32;
        spans.push([at(name.start), at(name.end), at(value.start), at(value.end)]);
        Ok(())
    })?;
    let mut bytes = Vec::with_capacity(b.len() + spans.len() * 16);
    bytes.extend_from_slice(b);
    for s in &spans {
        for x in s {
            bytes.extend_from_slice(&x.to_ne_bytes());
        }
    }
    let no_body = head_request || matches!(status, 100..=199 | 204 | 304);
    let (body, mut keep_alive) = f.body(minor_version, no_body)?;
    if status == 101 {
        keep_alive = false; // the connection is no longer HTTP
    }
    Ok(ResponseHead {
        bytes,
        len: b.len() as u32,
        status,
        minor_version,
        reason: reason.start as u32..reason.end as u32,
        body,
        keep_alive,
    })
}

/// Runs `each` on every field line of the section starting at `b[at]` and ending with
/// the empty line that ends `b`; at most `max` of them.
fn fields(
    b: &[u8],
    mut at: usize,
    max: usize,
    mut each: impl FnMut(Range<usize>, Range<usize>) -> Result<(), &'static str>,
) -> Result<(), &'static str> {
    let mut n = 0;
    while b.get(at..at + 2) != Some(b"\r\n") {
        let (name, value, next) = field_line(b, at).map_err(|_| "malformed header field")?;
        n += 1;
        if n > max {
            return Err("too many header fields");
        }
        each(name, value)?;
        at = next;
    }
    if at + 2 == b.len() {
        Ok(())
    } else {
        Err("malformed header section")
    }
}

/// What the fields say about framing and the connection.
#[derive(Default)]
struct Framing {
    length: Option<u64>,
    codings: u32,
    last_chunked: bool,
    close: bool,
    keep_alive: bool,
}

impl Framing {
    fn take(&mut self, name: &[u8], value: &[u8]) -> Result<(), &'static str> {
        if name.eq_ignore_ascii_case(b"content-length") {
            // Every value (of a list, or of repeated fields) the same valid number.
            for v in value.split(|&c| c == b',') {
                let n = content_length(v.trim_ascii()).ok_or("malformed Content-Length")?;
                if self.length.is_some_and(|m| m != n) {
                    return Err("conflicting Content-Length values");
                }
                self.length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            for coding in value.split(|&c| c == b',').map(<[u8]>::trim_ascii) {
                if coding.is_empty() {
                    continue;
                }
                self.last_chunked = coding.eq_ignore_ascii_case(b"chunked");
                self.codings += 1;
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for t in value.split(|&c| c == b',').map(<[u8]>::trim_ascii) {
                self.close |= t.eq_ignore_ascii_case(b"close");
                self.keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        Ok(())
    }

    /// The body's framing and whether the connection stays open (RFC 9112 §6.3).
    fn body(&self, minor_version: u8, no_body: bool) -> Result<(BodyLength, bool), &'static str> {
        let mut keep_alive = if minor_version == 1 {
            !self.close
        } else {
            self.keep_alive && !self.close
        };
        if self.codings > 0 && minor_version == 0 {
            // Faulty framing in HTTP/1.0 (RFC 9112 §6.1): nothing can be trusted.
            return Err("Transfer-Encoding in an HTTP/1.0 response");
        }
        if no_body {
            return Ok((BodyLength::None, keep_alive));
        }
        if self.codings > 0 {
            if self.length.is_some() {
                keep_alive = false; // possible response splitting: not reused
            }
            if self.last_chunked {
                return Ok((BodyLength::Chunked, keep_alive));
            }
            return Ok((BodyLength::UntilClose, false));
        }
        Ok(match self.length {
            Some(n) => (BodyLength::Length(n), keep_alive),
            None => (BodyLength::UntilClose, false),
        })
    }
}

#[cfg(test)]
mod tests;
