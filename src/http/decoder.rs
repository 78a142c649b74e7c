//! The request decoder: bytes in, events out, no I/O (h11's and hyper's split of
//! roles). A connection feeds it the unread bytes of its stream and consumes what it
//! says it used; every decision on where a request, its head, its body and its chunks
//! end is made here (with the grammar of `head.rs`), so the same bytes give the same
//! requests however they were split into reads.
//!
//! Memory is bounded: the decoder never asks to keep more than a head (`max_head`), a
//! chunk-size line or a trailer section buffered; body bytes are handed out as they
//! arrive. Line endings are CRLF only: a lone CR or LF is refused as soon as it is seen,
//! so a client using them gets its 400 at once rather than waiting for a timeout.

use super::framing::{find_blank_line, find_crlf, lone_cr_or_lf};
use super::head::{
    check_fields, chunk_size, parse_head, BodyKind, Head, Parsed, Refused, MAX_CHUNK_LINE,
};
use super::HttpConfig;
use std::ops::Range;

/// What [`Decoder::decode`] found.
#[derive(Debug)]
pub(crate) enum Event {
    /// More bytes are needed (what was consumed so far is done with).
    NeedMore,
    /// A request head, put in the caller's slot. Unless its body is `BodyKind::None`,
    /// `Body` events and an `End` follow.
    Head,
    /// Body bytes (de-chunked): this range of the buffer given to `decode`.
    Body(Range<usize>),
    /// The body (and the trailers) ended: the request is complete.
    End,
    /// The request is refused with this status; nothing after it can be trusted.
    Error(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Length {
        left: u64,
    },
    ChunkSize {
        total: u64,
    },
    ChunkData {
        left: u64,
        total: u64,
    },
    /// The CRLF after a chunk's data.
    ChunkEnd {
        total: u64,
    },
    Trailers,
    Failed(u16),
}

/// One connection's request decoder.
#[derive(Debug)]
pub(crate) struct Decoder {
    state: State,
    /// Bytes at the front of the current head, trailer section or chunk-size line
    /// already checked without finding its end.
    scanned: usize,
    /// Bytes of empty lines skipped before the current head.
    skipped: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            state: State::Head,
            scanned: 0,
            skipped: 0,
        }
    }
}

impl Decoder {
    /// True between requests: waiting for a head, none of which has been seen (empty
    /// lines before it do not count).
    pub(crate) fn between_requests(&self) -> bool {
        self.state == State::Head && self.scanned == 0
    }

    /// Decodes from the front of `buf` (the unread bytes; what an earlier call
    /// consumed is no longer in it). Returns how many bytes were consumed, and what was
    /// found; a head goes into `head` (a slot rather than the return value: a head is
    /// some 150 bytes, and each move of it is a call to memcpy). Call again after
    /// anything but `NeedMore` (or after `NeedMore` once more bytes have arrived); after
    /// `Error` it answers `Error` again.
    pub(crate) fn decode(
        &mut self,
        buf: &[u8],
        cfg: &HttpConfig,
        head: &mut Option<Head>,
    ) -> (usize, Event) {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match self.state {
                State::Head => {
                    let (n, ev) = self.head(rest, cfg, head);
                    return (pos + n, ev);
                }
                State::Length { left } => {
                    if left == 0 {
                        self.state = State::Head;
                        return (pos, Event::End);
                    }
                    if rest.is_empty() {
                        return (pos, Event::NeedMore);
                    }
                    let n = left.min(rest.len() as u64) as usize;
                    self.state = State::Length {
                        left: left - n as u64,
                    };
                    return (pos + n, Event::Body(pos..pos + n));
                }
                State::ChunkSize { total } => match self.line(rest, false, MAX_CHUNK_LINE + 2) {
                    Err(()) => return self.fail(pos, 400),
                    Ok(None) if rest.len() > MAX_CHUNK_LINE + 2 => return self.fail(pos, 400),
                    Ok(None) => return (pos, Event::NeedMore),
                    Ok(Some(end)) => {
                        let Some(size) = chunk_size(&rest[..end]) else {
                            return self.fail(pos, 400);
                        };
                        pos += end + 2;
                        if size == 0 {
                            self.state = State::Trailers;
                            continue;
                        }
                        let total = total.saturating_add(size);
                        if total > cfg.max_body as u64 {
                            return self.fail(pos, 413);
                        }
                        self.state = State::ChunkData { left: size, total };
                    }
                },
                State::ChunkData { left, total } => {
                    if rest.is_empty() {
                        return (pos, Event::NeedMore);
                    }
                    let n = left.min(rest.len() as u64) as usize;
                    self.state = if n as u64 == left {
                        State::ChunkEnd { total }
                    } else {
                        State::ChunkData {
                            left: left - n as u64,
                            total,
                        }
                    };
                    return (pos + n, Event::Body(pos..pos + n));
                }
                State::ChunkEnd { total } => match rest {
                    [] | [b'\r'] => return (pos, Event::NeedMore),
                    [b'\r', b'\n', ..] => {
                        pos += 2;
                        self.state = State::ChunkSize { total };
                    }
                    _ => return self.fail(pos, 400),
                },
                State::Trailers => {
                    if rest.starts_with(b"\r\n") {
                        self.state = State::Head;
                        self.scanned = 0;
                        return (pos + 2, Event::End);
                    }
                    match self.line(rest, true, cfg.max_head) {
                        Err(()) => return self.fail(pos, 400),
                        Ok(None) if rest.len() > cfg.max_head => return self.fail(pos, 431),
                        Ok(None) => return (pos, Event::NeedMore),
                        Ok(Some(end)) => {
                            let len = end + 4;
                            // Validated, then dropped (not merged into the head).
                            if let Err(Refused(code)) = check_fields(&rest[..len], cfg.max_headers)
                            {
                                return self.fail(pos, lone_first(&rest[..len], code));
                            }
                            self.state = State::Head;
                            return (pos + len, Event::End);
                        }
                    }
                }
                State::Failed(code) => return (pos, Event::Error(code)),
            }
        }
    }

    fn fail(&mut self, pos: usize, code: u16) -> (usize, Event) {
        self.state = State::Failed(code);
        (pos, Event::Error(code))
    }

    /// The head at the front of `b`, after any empty lines.
    fn head(&mut self, b: &[u8], cfg: &HttpConfig, slot: &mut Option<Head>) -> (usize, Event) {
        let mut pos = 0;
        if self.scanned == 0 {
            // Empty lines before a request line are ignored (RFC 9112 §2.2), up to a
            // head's worth.
            while b.len() >= pos + 2 && b[pos] == b'\r' && b[pos + 1] == b'\n' {
                pos += 2;
            }
            if pos > 0 {
                self.skipped += pos;
                if self.skipped > cfg.max_head {
                    return self.fail(pos, 400);
                }
            }
            match &b[pos..] {
                [] | [b'\r'] => return (pos, Event::NeedMore),
                [b'\n', ..] => return self.fail(pos, 400),
                _ => {}
            }
        }
        let rest = &b[pos..];
        let max = cfg.max_head.min(super::MAX_HEAD_LIMIT);
        if self.scanned == 0 {
            // The usual case, a whole valid head: parsed in one pass, straight from the
            // buffer. (Anything else, a part or a fault, is found the careful way below,
            // which decides how it is answered; a valid head is the same either way.)
            if let Ok(p) = parse_head(rest, cfg) {
                if p.len <= max {
                    return self.took_head(pos, rest, p, slot);
                }
            }
        }
        match self.line(rest, true, max) {
            Err(()) => self.fail(pos, 400),
            Ok(Some(end)) => {
                let len = end + 4;
                match parse_head(&rest[..len], cfg) {
                    Ok(p) if p.len == len => self.took_head(pos, rest, p, slot),
                    Ok(_) => self.fail(pos, 400), // (a valid head ends at its empty line)
                    Err(Refused(code)) => self.fail(pos, lone_first(&rest[..len], code)),
                }
            }
            Ok(None) if rest.len() <= max => (pos, Event::NeedMore),
            Ok(None) => {
                // Over the limit: 414 if the request line alone is too long, else 431.
                let line_fits = find_crlf(&rest[..max], 0).is_some();
                self.fail(pos, if line_fits { 431 } else { 414 })
            }
        }
    }

    /// A valid head `p` at the front of `rest` (after `pos` bytes of empty lines): into
    /// the slot, and on to its body.
    fn took_head(
        &mut self,
        pos: usize,
        rest: &[u8],
        p: Parsed,
        slot: &mut Option<Head>,
    ) -> (usize, Event) {
        self.skipped = 0;
        self.state = match p.body {
            BodyKind::None => State::Head,
            BodyKind::Length(n) => State::Length { left: n },
            BodyKind::Chunked => State::ChunkSize { total: 0 },
        };
        *slot = Some(p.into_head(rest));
        (pos + p.len, Event::Head)
    }

    /// Finds the end of the section at the front of `b`, within its first `limit`
    /// bytes: where its empty line starts (`blank`: a head or trailers, ending
    /// `\r\n\r\n`) or its CRLF (a chunk-size line); `None` if it is not there (yet).
    /// Errs on a lone CR or LF among the bytes searched without finding the end, so a
    /// client that ends lines that way is answered at once. (A lone one before the end
    /// is left to the grammar, whose refusal then says 400: see [`lone_first`]. Either
    /// way a lone CR or LF is a 400, however the bytes were split.) What was searched
    /// is not searched again.
    fn line(&mut self, b: &[u8], blank: bool, limit: usize) -> Result<Option<usize>, ()> {
        let hay = &b[..b.len().min(limit)];
        let found = if blank {
            find_blank_line(hay, self.scanned.saturating_sub(3))
        } else {
            find_crlf(hay, self.scanned.saturating_sub(1))
        };
        if let Some(end) = found {
            self.scanned = 0;
            return Ok(Some(end));
        }
        if lone_cr_or_lf(hay, self.scanned.saturating_sub(1)) {
            return Err(());
        }
        self.scanned = hay.len();
        Ok(None)
    }
}

/// The status for a section the grammar refused with `code`: 400 if it holds a lone CR
/// or LF (so that it is the same status as when the lone one is seen before the end
/// arrives), else `code`.
fn lone_first(section: &[u8], code: u16) -> u16 {
    if code != 400 && lone_cr_or_lf(section, 0) {
        400
    } else {
        code
    }
}

#[cfg(any(test, feature = "fuzzing"))]
#[allow(unused_imports)] // (Message: for the fuzz targets)
pub use self::drive::{decode_all, Decoded, Message, Outcome};

/// Driving the decoder over a byte stream in memory as a connection does (for tests
/// and the fuzz targets): the requests it yields, and checks of its promises.
#[cfg(any(test, feature = "fuzzing"))]
mod drive {
    use super::{Decoder, Event};
    use crate::http::head::MAX_CHUNK_LINE;
    use crate::http::HttpConfig;

    /// A whole request, as a handler would see it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Message {
        /// The method, as sent.
        pub method: String,
        /// The path (`/` for an absolute-form target without one).
        pub path: String,
        /// The query, without `?`.
        pub query: String,
        /// 0 or 1.
        pub minor_version: u8,
        /// Every header, in order.
        pub headers: Vec<(String, Vec<u8>)>,
        /// The body, de-chunked.
        pub body: Vec<u8>,
        /// Whether the connection stays open after it.
        pub keep_alive: bool,
        /// Whether the client waits for `100 Continue`.
        pub expect_continue: bool,
    }

    /// How the byte stream ended for the decoder.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Outcome {
        /// Between requests (or after empty lines only).
        Idle,
        /// In the middle of a request: more bytes were needed.
        Partial,
        /// The last request closes the connection: later bytes are not read.
        Closed,
        /// Refused with this status.
        Refused(u16),
    }

    /// What the decoder made of a byte stream.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Decoded {
        /// The complete requests, in order.
        pub requests: Vec<Message>,
        /// How it ended.
        pub outcome: Outcome,
    }

    /// Feeds `chunks` in order to a decoder as reads would deliver them, keeping the
    /// unconsumed bytes as a stream's read buffer does. Panics if the decoder breaks a
    /// promise: it keeps more buffered than its limits allow, hands out a body over
    /// `max_body`, or stops making progress.
    pub fn decode_all<'a>(chunks: impl IntoIterator<Item = &'a [u8]>, cfg: &HttpConfig) -> Decoded {
        let mut dec = Decoder::default();
        let mut slot = None;
        let mut unread: Vec<u8> = Vec::new();
        let mut requests = Vec::new();
        let mut current: Option<Message> = None;
        let limit = cfg.max_head.max(MAX_CHUNK_LINE);
        for chunk in chunks {
            unread.extend_from_slice(chunk);
            let budget = 2 * unread.len() + 8;
            let mut steps = 0usize;
            loop {
                steps += 1;
                assert!(steps <= budget, "no progress");
                let (n, ev) = dec.decode(&unread, cfg, &mut slot);
                assert!(n <= unread.len(), "consumed more than given");
                let mut done = None;
                let need_more = match ev {
                    Event::NeedMore => true,
                    Event::Head => {
                        let h = slot.take().expect("a head in the slot");
                        let m = Message {
                            method: h.req.method().to_string(),
                            path: h.req.path().to_string(),
                            query: h.req.query().to_string(),
                            minor_version: h.req.minor_version(),
                            headers: h
                                .req
                                .headers()
                                .map(|(k, v)| (k.to_string(), v.to_vec()))
                                .collect(),
                            body: Vec::new(),
                            keep_alive: h.keep_alive,
                            expect_continue: h.expect_continue,
                        };
                        if h.body == crate::http::head::BodyKind::None {
                            done = Some(m);
                        } else {
                            current = Some(m);
                        }
                        false
                    }
                    Event::Body(r) => {
                        let m = current.as_mut().expect("body without a head");
                        assert!(!r.is_empty(), "an empty body event");
                        m.body.extend_from_slice(&unread[r]);
                        assert!(m.body.len() <= cfg.max_body, "body over max_body");
                        false
                    }
                    Event::End => {
                        done = Some(current.take().expect("end without a head"));
                        false
                    }
                    Event::Error(code) => {
                        return Decoded {
                            requests,
                            outcome: Outcome::Refused(code),
                        };
                    }
                };
                unread.drain(..n);
                if let Some(m) = done {
                    let close = !m.keep_alive;
                    requests.push(m);
                    if close {
                        return Decoded {
                            requests,
                            outcome: Outcome::Closed,
                        };
                    }
                }
                if need_more {
                    assert!(
                        unread.len() <= limit,
                        "{} bytes left buffered, over the limit {limit}",
                        unread.len()
                    );
                    break;
                }
            }
        }
        let idle = current.is_none() && dec.between_requests() && unread.is_empty();
        Decoded {
            requests,
            outcome: if idle {
                Outcome::Idle
            } else {
                Outcome::Partial
            },
        }
    }
}

#[cfg(test)]
mod tests;
