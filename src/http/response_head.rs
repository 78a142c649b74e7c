//! Response heads: the one writer of a status line and headers, for handlers' answers
//! (`response.rs`) and the server's own refusals (`conn.rs`); and [`Heads`], a loop's
//! `Date` line of this second with the heads rendered with it, so that the usual
//! answer's head is one copy and its length.

use super::date::http_date;
use std::cell::{Cell, RefCell};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// The `Content-Type` of a response that sets none.
const DEFAULT_CONTENT_TYPE: &str = "text/html; charset=UTF-8";
/// The `Content-Length` header's name, up to its value.
const CONTENT_LENGTH: &[u8] = b"Content-Length: ";
/// Heads kept rendered per loop at most (pairs of status and content type).
const MAX_RENDERED: usize = 16;

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

/// A head rendered up to its `Content-Length` value: its status, its content type as
/// set (`None`: the default), the bytes.
type Rendered = (u16, Option<Box<str>>, Vec<u8>);

/// A loop's `Date` line of this second, and the heads rendered with it: by status and
/// content type, each up to the value of its `Content-Length`. An answer whose only
/// header of its own is `Content-Type` (or none) has its head copied from here: the
/// status line and headers are formatted once a second per loop, not per response.
pub(crate) struct Heads {
    /// The loop time (ns) until which `date` is right (0: never formatted).
    until: Cell<u64>,
    /// `Date: ...\r\n`.
    date: RefCell<String>,
    rendered: RefCell<Vec<Rendered>>,
}

impl Default for Heads {
    fn default() -> Self {
        Heads {
            until: Cell::new(0),
            date: RefCell::new(String::new()),
            rendered: RefCell::new(Vec::new()),
        }
    }
}

impl Heads {
    /// Brings the `Date` line to `now` (the loop's time, ns): the wall clock is read and
    /// the heads formatted anew once a second; otherwise a comparison.
    #[inline]
    pub(crate) fn refresh(&self, now: u64) {
        if now >= self.until.get() {
            self.reformat(now);
        }
    }

    #[cold]
    #[inline(never)]
    fn reformat(&self, now: u64) {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let left = Duration::from_secs(1) - Duration::from_nanos(u64::from(wall.subsec_nanos()));
        *self.date.borrow_mut() = format!("Date: {}\r\n", http_date(wall.as_secs()));
        self.rendered.borrow_mut().clear();
        self.until.set(now + left.as_nanos() as u64);
    }

    /// Appends `head` (status line, headers, the empty line) to `out`, with this
    /// second's date (as of the last [`refresh`](Self::refresh)).
    pub(super) fn write(&self, head: &ResponseHead<'_>, out: &mut Vec<u8>) {
        let content_type = match head.headers {
            [] => Some(None),
            [(k, v)] if k.eq_ignore_ascii_case("content-type") => Some(Some(v.as_str())),
            _ => None,
        };
        match (content_type, head.content_length) {
            // The usual answer: its head up to the length, from the rendered ones.
            (Some(ct), Some(n)) if head.keep_alive && head.minor_version == 1 => {
                self.append_rendered(head.status, ct, out);
                out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                out.extend_from_slice(b"\r\n\r\n");
            }
            _ => self.write_general(head, out),
        }
    }

    /// Appends the head of a keep-alive 1.1 answer with `status` and `content_type`
    /// (`None`: the default) up to its `Content-Length` value, rendered at most once a
    /// second.
    fn append_rendered(&self, status: u16, content_type: Option<&str>, out: &mut Vec<u8>) {
        let rendered = self.rendered.borrow();
        let found = rendered
            .iter()
            .find(|(s, ct, _)| *s == status && ct.as_deref() == content_type);
        match found {
            Some((_, _, head)) => out.extend_from_slice(head),
            None => {
                drop(rendered);
                self.render(status, content_type, out);
            }
        }
    }

    /// Renders the head of [`append_rendered`](Self::append_rendered), keeps it and
    /// appends it.
    #[cold]
    #[inline(never)]
    fn render(&self, status: u16, content_type: Option<&str>, out: &mut Vec<u8>) {
        let headers: Vec<(String, String)> = content_type
            .map(|ct| vec![("Content-Type".to_string(), ct.to_string())])
            .unwrap_or_default();
        let mut bytes = Vec::new();
        let head = ResponseHead {
            status,
            headers: &headers,
            keep_alive: true,
            minor_version: 1,
            content_length: Some(0),
        };
        self.write_general(&head, &mut bytes);
        // (Up to the value: the general head ends `Content-Length: 0\r\n\r\n`.)
        bytes.truncate(bytes.len() - b"0\r\n\r\n".len());
        out.extend_from_slice(&bytes);
        let mut rendered = self.rendered.borrow_mut();
        if rendered.len() == MAX_RENDERED {
            rendered.remove(0);
        }
        rendered.push((status, content_type.map(Box::from), bytes));
    }

    /// The head, formatted field by field.
    fn write_general(&self, head: &ResponseHead<'_>, out: &mut Vec<u8>) {
        let bodiless_status = matches!(head.status, 100..=199 | 204 | 304);
        let mut num = itoa::Buffer::new();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(num.format(head.status).as_bytes());
        out.push(b' ');
        out.extend_from_slice(reason(head.status).as_bytes());
        out.extend_from_slice(b"\r\nServer: coreloop\r\n");
        out.extend_from_slice(self.date.borrow().as_bytes());
        // The content type the handler set goes where the default would.
        let content_type = head
            .headers
            .iter()
            .position(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        if !bodiless_status {
            out.extend_from_slice(b"Content-Type: ");
            match content_type {
                Some(i) => out.extend_from_slice(head.headers[i].1.as_bytes()),
                None => out.extend_from_slice(DEFAULT_CONTENT_TYPE.as_bytes()),
            }
            out.extend_from_slice(b"\r\n");
            match head.content_length {
                Some(n) => {
                    out.extend_from_slice(CONTENT_LENGTH);
                    out.extend_from_slice(num.format(n).as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                None if head.minor_version == 1 => {
                    out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                }
                None => {}
            }
        }
        if !head.keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if head.minor_version == 0 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        for (i, (k, v)) in head.headers.iter().enumerate() {
            if Some(i) == content_type && !bodiless_status {
                continue; // written above
            }
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Appends the server's own answer to a request it refuses: `code`, a short text
    /// body saying why, and `Connection: close` (what follows such a request cannot be
    /// trusted).
    pub(super) fn write_refusal(&self, out: &mut Vec<u8>, code: u16) {
        let body = format!("{code}: {}", reason(code));
        let headers = [(
            "Content-Type".to_string(),
            "text/plain; charset=UTF-8".to_string(),
        )];
        let head = ResponseHead {
            status: code,
            headers: &headers,
            keep_alive: false,
            minor_version: 1,
            content_length: Some(body.len()),
        };
        self.write(&head, out);
        out.extend_from_slice(body.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::{Heads, ResponseHead};

    /// A rendered head is byte for byte the general one, for every status and content
    /// type, and the first use of a pair renders it.
    #[test]
    fn rendered_heads_are_the_general_heads() {
        let heads = Heads::default();
        let now = 1_000_000_000;
        heads.refresh(now);
        let ct = |v: &str| vec![("Content-Type".to_string(), v.to_string())];
        for status in [200, 201, 404, 500] {
            for headers in [vec![], ct("text/plain"), ct("application/json")] {
                for n in [0, 12, 100_000] {
                    let head = ResponseHead {
                        status,
                        headers: &headers,
                        keep_alive: true,
                        minor_version: 1,
                        content_length: Some(n),
                    };
                    let (mut fast, mut general) = (Vec::new(), Vec::new());
                    heads.write(&head, &mut fast);
                    heads.write_general(&head, &mut general);
                    assert_eq!(
                        String::from_utf8(fast).unwrap(),
                        String::from_utf8(general).unwrap()
                    );
                }
            }
        }
        assert_eq!(heads.rendered.borrow().len(), 12);
        // A second later, the date is formatted again and the heads with it.
        heads.refresh(now + 1_001_000_000);
        assert!(heads.rendered.borrow().is_empty());
    }

    #[test]
    fn heads_have_a_date_line_and_the_default_content_type() {
        let heads = Heads::default();
        heads.refresh(1);
        let mut out = Vec::new();
        let head = ResponseHead {
            status: 200,
            headers: &[],
            keep_alive: true,
            minor_version: 1,
            content_length: Some(12),
        };
        heads.write(&head, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\nServer: coreloop\r\nDate: "));
        assert!(text.ends_with(
            " GMT\r\nContent-Type: text/html; charset=UTF-8\r\nContent-Length: 12\r\n\r\n"
        ));
    }
}
