//! Message framing (RFC 9112 §6-7), sans-I/O, for whoever drives a connection itself:
//! the server's own request decoder ([`RequestDecoder`], what a proxy reads its
//! clients with), the one response decoder ([`ResponseDecoder`], what
//! [`HttpClient`](super::HttpClient) and loadtest read answers with), and the pieces
//! they share: a Content-Length value, a chunk-size line, where a chunked body ends.
//! Requests and responses have one grammar (`head.rs`), so the two sides cannot drift
//! apart.
//!
//! One difference is deliberate: a client tolerates spaces and tabs at the end of a
//! chunk-size line (`5 \r\n`), which the server refuses in a request (400). The
//! grammar has no whitespace there, but servers that pad chunk sizes exist, and
//! browsers, curl, Go's net/http and most clients accept them; a load generator that
//! counted those answers as errors would measure the wrong thing. A request's framing
//! is where tolerance is dangerous (a proxy in front may read it otherwise: request
//! smuggling), so the server stays strict. Nothing else is tolerated: whitespace inside
//! the size (`5 0`), before it, or any other byte still breaks the framing.

use super::head::{chunk_size as chunk_size_line, decimal};
pub use super::request_decoder::{RequestDecoder, RequestEvent, RequestHead};
pub use super::response_decoder::{
    BodyLength, ResponseDecoder, ResponseEvent, ResponseHead, DEFAULT_MAX_RESPONSE_HEAD,
    DEFAULT_MAX_RESPONSE_HEADERS,
};

/// A message whose framing is broken: what follows it cannot be trusted. It says
/// what was wrong.
///
/// ```
/// use coreloop::http::framing::chunked_len;
/// let e = chunked_len(b"zz\r\n").unwrap_err();
/// assert_eq!(e.reason(), "malformed chunk-size line");
/// assert_eq!(e.to_string(), "malformed HTTP message: malformed chunk-size line");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramingError {
    reason: &'static str,
}

impl FramingError {
    pub(crate) fn new(reason: &'static str) -> FramingError {
        FramingError { reason }
    }

    /// What was wrong, in a few words.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl std::fmt::Display for FramingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed HTTP message: {}", self.reason)
    }
}

impl std::error::Error for FramingError {}

/// One Content-Length value (without surrounding whitespace): digits only, at most
/// `i64::MAX` (as Go and most implementations bound it; nothing is that long). A list
/// or a repeated field is the caller's to compare (RFC 9112 §6.3: all values must be
/// the same).
///
/// ```
/// use coreloop::http::framing::content_length;
/// assert_eq!(content_length(b"42"), Some(42));
/// assert_eq!(content_length(b"+42"), None);
/// assert_eq!(content_length(b"99999999999999999999999"), None);
/// ```
pub fn content_length(value: &[u8]) -> Option<u64> {
    decimal(value).filter(|&n| n <= i64::MAX as u64)
}

/// A chunk-size line of a response, without its CRLF (`1*HEXDIG` then chunk
/// extensions, which must be well formed and are ignored; spaces and tabs at the end
/// are tolerated, see the module's doc): the chunk's size; `None` if malformed or over
/// `i64::MAX`.
///
/// ```
/// use coreloop::http::framing::chunk_size;
/// assert_eq!(chunk_size(b"1a"), Some(26));
/// assert_eq!(chunk_size(b"5;name=\"v\""), Some(5));
/// assert_eq!(chunk_size(b"5  "), Some(5)); // padded by the server
/// assert_eq!(chunk_size(b"5 junk"), None);
/// assert_eq!(chunk_size(b"5 0"), None);
/// ```
pub fn chunk_size(line: &[u8]) -> Option<u64> {
    let end = line
        .iter()
        .rposition(|&c| c != b' ' && c != b'\t')
        .map_or(0, |i| i + 1);
    chunk_size_line(&line[..end]).filter(|&n| n <= i64::MAX as u64)
}

/// The length of the whole chunked body at the front of `b` (chunks, last chunk and
/// trailer section): `Ok(None)` if it is not all there yet, an error if its framing is
/// broken (a bad chunk-size line, data not followed by CRLF, a malformed trailer line).
///
/// ```
/// use coreloop::http::framing::chunked_len;
/// let body = b"5\r\nhello\r\n0\r\n\r\nNEXT";
/// assert_eq!(chunked_len(body), Ok(Some(body.len() - 4)));
/// assert_eq!(chunked_len(&body[..8]), Ok(None));
/// ```
pub fn chunked_len(b: &[u8]) -> Result<Option<usize>, FramingError> {
    // The response decoder's chunked state machine: one reader of chunked bodies.
    let mut d = ResponseDecoder::chunked_body();
    let mut at = 0;
    loop {
        let (n, ev) = d.decode(&b[at..]);
        at += n;
        match ev {
            ResponseEvent::Body(_) => {}
            ResponseEvent::End => return Ok(Some(at)),
            ResponseEvent::NeedMore | ResponseEvent::Head(_) => return Ok(None),
            ResponseEvent::Error(e) => return Err(e),
        }
    }
}

/// Whether `b[from..]` has a CR followed by something else than LF, or an LF not after
/// a CR (a CR at the very end may yet be followed by an LF).
pub(crate) fn lone_cr_or_lf(b: &[u8], from: usize) -> bool {
    memchr::memchr2_iter(b'\r', b'\n', &b[from.min(b.len())..]).any(|i| {
        let i = from + i;
        if b[i] == b'\r' {
            b.get(i + 1).is_some_and(|&c| c != b'\n')
        } else {
            i == 0 || b[i - 1] != b'\r'
        }
    })
}

/// Where the first CRLF at or after `from` starts. (memchr for the CR, then a look at
/// the next byte: `memmem::find` builds a searcher on every call, which costs more than
/// the search itself in a short head.)
pub(crate) fn find_crlf(b: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at + 2 <= b.len() {
        let i = at + memchr::memchr(b'\r', &b[at..b.len() - 1])?;
        if b[i + 1] == b'\n' {
            return Some(i);
        }
        at = i + 1;
    }
    None
}

/// Where the first `\r\n\r\n` at or after `from` starts.
pub(crate) fn find_blank_line(b: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at + 4 <= b.len() {
        let i = at + memchr::memchr(b'\r', &b[at..b.len() - 3])?;
        if b[i + 1] == b'\n' && b[i + 2] == b'\r' && b[i + 3] == b'\n' {
            return Some(i);
        }
        at = i + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_end_where_their_framing_says() {
        type Case = (&'static [u8], Result<Option<usize>, ()>);
        let cases: &[Case] = &[
            (b"0\r\n\r\n", Ok(Some(5))),
            (b"3\r\nabc\r\n0\r\n\r\n", Ok(Some(13))),
            (b"3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n", Ok(Some(23))),
            (b"3\r\nabc", Ok(None)),
            (b"3\r\nabc\r\n0\r\nT: v\r\n", Ok(None)),
            (b"3\r\nabcX\r\n", Err(())),
            (b"g\r\n", Err(())),
            (b"0\r\nno colon\r\n\r\n", Err(())),
            (b"ffffffffffffffff\r\nab", Err(())),
            // Padded chunk sizes, as some servers send them: tolerated by a client.
            (b"3 \r\nabc\r\n0\t \r\n\r\n", Ok(Some(16))),
            (b"3;x=y  \r\nabc\r\n0\r\n\r\n", Ok(Some(19))),
            (b"3 ", Ok(None)),
            // But nothing else: whitespace inside or before the size, a lone CR.
            (b"3 4\r\n", Err(())),
            (b" 3\r\n", Err(())),
            (b"3\r \r\n", Err(())),
            (b"  \r\n", Err(())),
            (b"fffffffffffffffff\r\n", Err(())),
        ];
        for (b, want) in cases {
            assert_eq!(
                chunked_len(b).map_err(|_| ()),
                *want,
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
    }
}
