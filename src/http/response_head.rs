//! Response heads: the one writer of a status line and headers, for handlers' answers
//! (`response.rs`) and the server's own refusals (`conn.rs`), with the usual answer's
//! head formatted once a second per core.

use super::date::with_date_line;
use std::cell::RefCell;
use std::time::Instant;

/// The reason phrase of a status code.
pub(crate) fn reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// How every 200 head starts: its status line and the `Server` header.
const OK_START: &[u8] = b"HTTP/1.1 200 OK\r\nServer: coreloop\r\n";
/// The `Content-Type` of a response that sets none.
const DEFAULT_CONTENT_TYPE: &[u8] = b"Content-Type: text/html; charset=UTF-8\r\n";
/// The `Content-Length` header's name, up to its value.
const CONTENT_LENGTH: &[u8] = b"Content-Length: ";

/// What goes into a response head.
pub(super) struct ResponseHead<'a> {
    pub(super) status: u16,
    /// The handler's own headers (none of those the server manages).
    pub(super) headers: &'a [(String, String)],
    pub(super) keep_alive: bool,
    pub(super) minor_version: u8,
    /// `None`: the body is streamed.
    pub(super) content_length: Option<usize>,
}

impl ResponseHead<'_> {
    /// Appends the head (status line, headers, the empty line) to `out`; `now` is the
    /// loop's time, for the `Date` header.
    pub(super) fn write(&self, out: &mut Vec<u8>, now: Instant) {
        match self.content_length {
            // The usual answer: its head up to the length is formatted once a second.
            Some(n)
                if self.status == 200
                    && self.headers.is_empty()
                    && self.keep_alive
                    && self.minor_version == 1 =>
            {
                append_ok_head(out, now);
                out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                out.extend_from_slice(b"\r\n\r\n");
            }
            _ => self.write_general(out, now),
        }
    }

    fn write_general(&self, out: &mut Vec<u8>, now: Instant) {
        let bodiless_status = matches!(self.status, 100..=199 | 204 | 304);
        let mut num = itoa::Buffer::new();
        if self.status == 200 {
            out.extend_from_slice(OK_START);
        } else {
            out.extend_from_slice(b"HTTP/1.1 ");
            out.extend_from_slice(num.format(self.status).as_bytes());
            out.push(b' ');
            out.extend_from_slice(reason(self.status).as_bytes());
            out.extend_from_slice(b"\r\nServer: coreloop\r\n");
        }
        with_date_line(now, |line, _| out.extend_from_slice(line.as_bytes()));
        if !bodiless_status
            && !self
                .headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            out.extend_from_slice(DEFAULT_CONTENT_TYPE);
        }
        if !bodiless_status {
            match self.content_length {
                Some(n) => {
                    out.extend_from_slice(CONTENT_LENGTH);
                    out.extend_from_slice(num.format(n).as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                None if self.minor_version == 1 => {
                    out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                }
                None => {}
            }
        }
        if !self.keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if self.minor_version == 0 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        for (k, v) in self.headers {
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// The head of the usual answer (200, no headers of the handler's own) up to its
/// Content-Length value, and the loop time until which it is right (its Date line).
struct OkHead {
    until: Option<Instant>,
    bytes: Vec<u8>,
}

thread_local! {
    static OK_HEAD: RefCell<OkHead> = const { RefCell::new(OkHead { until: None, bytes: Vec::new() }) };
}

/// Appends the head of a 200 answer with the default headers (`Server`, `Date`,
/// `Content-Type: text/html; charset=UTF-8`), up to the value of its `Content-Length`,
/// which the caller writes. Formatted once a second per core: most calls cost a
/// comparison and a copy.
fn append_ok_head(out: &mut Vec<u8>, now: Instant) {
    OK_HEAD.with(|c| {
        let mut c = c.borrow_mut();
        if c.until.is_none_or(|until| now >= until) {
            let (until, bytes) = with_date_line(now, |line, until| {
                // The same pieces, in the same order, as the general head.
                let b = [
                    OK_START,
                    line.as_bytes(),
                    DEFAULT_CONTENT_TYPE,
                    CONTENT_LENGTH,
                ]
                .concat();
                (until, b)
            });
            c.until = Some(until);
            c.bytes = bytes;
        }
        out.extend_from_slice(&c.bytes);
    })
}

/// Appends the server's own answer to a request it refuses: `code`, a short text body
/// saying why, and `Connection: close` (what follows such a request cannot be trusted).
pub(super) fn write_refusal(out: &mut Vec<u8>, code: u16, now: Instant) {
    let body = format!("{code}: {}", reason(code));
    let headers = [(
        "Content-Type".to_string(),
        "text/plain; charset=UTF-8".to_string(),
    )];
    ResponseHead {
        status: code,
        headers: &headers,
        keep_alive: false,
        minor_version: 1,
        content_length: Some(body.len()),
    }
    .write(out, now);
    out.extend_from_slice(body.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::ResponseHead;
    use std::time::Instant;

    /// The once-a-second head of the usual answer is byte for byte the general one.
    #[test]
    fn the_cached_head_is_the_general_head() {
        let now = Instant::now();
        for n in [0, 12, 100_000] {
            let head = ResponseHead {
                status: 200,
                headers: &[],
                keep_alive: true,
                minor_version: 1,
                content_length: Some(n),
            };
            let (mut fast, mut general) = (Vec::new(), Vec::new());
            head.write(&mut fast, now);
            head.write_general(&mut general, now);
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                String::from_utf8(general).unwrap()
            );
        }
    }
}
