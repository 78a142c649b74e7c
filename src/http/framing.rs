//! Message framing that requests and responses share (RFC 9112 §6-7): a Content-Length
//! value, a chunk-size line, and where a chunked body ends. The server's request
//! decoder uses the same grammar (`head.rs`); a client (loadtest) reads responses with
//! these, so the two sides cannot drift apart.
//!
//! One difference is deliberate: a client tolerates spaces and tabs at the end of a
//! chunk-size line (`5 \r\n`), which the server refuses in a request (400). The
//! grammar has no whitespace there, but servers that pad chunk sizes exist, and
//! browsers, curl, Go's net/http and most clients accept them; a load generator that
//! counted those answers as errors would measure the wrong thing. A request's framing
//! is where tolerance is dangerous (a proxy in front may read it otherwise: request
//! smuggling), so the server stays strict. Nothing else is tolerated: whitespace inside
//! the size (`5 0`), before it, or any other byte still breaks the framing.

use super::head::{chunk_size as chunk_size_line, decimal, field_line};

/// A message whose framing is broken: what follows it cannot be trusted.
///
/// ```
/// use coreloop::http::framing::{chunked_len, FramingError};
/// assert_eq!(chunked_len(b"zz\r\n"), Err(FramingError));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramingError;

impl std::fmt::Display for FramingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed HTTP message framing")
    }
}

impl std::error::Error for FramingError {}

/// One Content-Length value (without surrounding whitespace): digits only, no
/// overflow. A list or a repeated field is the caller's to compare (RFC 9112 §6.3: all
/// values must be the same).
///
/// ```
/// use coreloop::http::framing::content_length;
/// assert_eq!(content_length(b"42"), Some(42));
/// assert_eq!(content_length(b"+42"), None);
/// assert_eq!(content_length(b"99999999999999999999999"), None);
/// ```
pub fn content_length(value: &[u8]) -> Option<u64> {
    decimal(value)
}

/// A chunk-size line of a response, without its CRLF (`1*HEXDIG` then chunk
/// extensions, which must be well formed and are ignored; spaces and tabs at the end
/// are tolerated, see the module's doc): the chunk's size; `None` if malformed or over
/// `u64`.
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
    chunk_size_line(&line[..end])
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
    let mut at = 0;
    loop {
        let Some(eol) = find_crlf(&b[at..]) else {
            return Ok(None);
        };
        let size = chunk_size(&b[at..at + eol]).ok_or(FramingError)?;
        at += eol + 2;
        if size == 0 {
            // The trailer section: field lines up to an empty line.
            loop {
                if b.len() < at + 2 {
                    return Ok(None);
                }
                if &b[at..at + 2] == b"\r\n" {
                    return Ok(Some(at + 2));
                }
                let Some(eol) = find_crlf(&b[at..]) else {
                    return Ok(None);
                };
                let (_, _, next) = field_line(&b[..at + eol + 2], at).map_err(|_| FramingError)?;
                at = next;
            }
        }
        // A size near u64::MAX would overflow the sums below: no buffer is that big.
        let end = usize::try_from(size)
            .ok()
            .and_then(|s| at.checked_add(s))
            .and_then(|e| e.checked_add(2))
            .ok_or(FramingError)?;
        if b.len() < end {
            return Ok(None);
        }
        if &b[end - 2..end] != b"\r\n" {
            return Err(FramingError);
        }
        at = end;
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    memchr::memmem::find(b, b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_end_where_their_framing_says() {
        type Case = (&'static [u8], Result<Option<usize>, FramingError>);
        let cases: &[Case] = &[
            (b"0\r\n\r\n", Ok(Some(5))),
            (b"3\r\nabc\r\n0\r\n\r\n", Ok(Some(13))),
            (b"3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n", Ok(Some(23))),
            (b"3\r\nabc", Ok(None)),
            (b"3\r\nabc\r\n0\r\nT: v\r\n", Ok(None)),
            (b"3\r\nabcX\r\n", Err(FramingError)),
            (b"g\r\n", Err(FramingError)),
            (b"0\r\nno colon\r\n\r\n", Err(FramingError)),
            (b"ffffffffffffffff\r\nab", Err(FramingError)),
            // Padded chunk sizes, as some servers send them: tolerated by a client.
            (b"3 \r\nabc\r\n0\t \r\n\r\n", Ok(Some(16))),
            (b"3;x=y  \r\nabc\r\n0\r\n\r\n", Ok(Some(19))),
            (b"3 ", Ok(None)),
            // But nothing else: whitespace inside or before the size, a lone CR.
            (b"3 4\r\n", Err(FramingError)),
            (b" 3\r\n", Err(FramingError)),
            (b"3\r \r\n", Err(FramingError)),
            (b"  \r\n", Err(FramingError)),
            (b"fffffffffffffffff\r\n", Err(FramingError)),
        ];
        for (b, want) in cases {
            assert_eq!(chunked_len(b), *want, "{:?}", String::from_utf8_lossy(b));
        }
    }
}
