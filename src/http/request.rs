//! `Request`, and reading a request head: httparse for the syntax, then the framing
//! rules of RFC 9112 (Content-Length, Transfer-Encoding, Connection, Expect), each
//! failure mapped to its status code.

use super::{HttpConfig, MAX_HEAD_LIMIT};
use std::net::SocketAddr;

/// A byte range of the request head (which is at most [`MAX_HEAD_LIMIT`] bytes long).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Span(u16, u16);

/// The method: one of [`STANDARD_METHODS`] by index, or where it lies in the head.
#[derive(Debug, Clone, Copy)]
enum Method {
    Standard(u8),
    Sent(Span),
}

/// What few requests have: a body, the route's captures.
#[derive(Debug, Clone, Default)]
pub(crate) struct Extra {
    pub body: Vec<u8>,
    pub params: Vec<(String, String)>,
}

/// An HTTP request: method, target, headers, body, and the route's captures.
///
/// It keeps the bytes of its head and refers into them, so reading a request allocates
/// little: the head, and the body if there is one. It is small (128 bytes: it moves
/// from the parser to the handler without a call to memcpy).
///
/// ```
/// # use coreloop::http::{Application, Route};
/// let route = Route::new().get(|_, req, mut resp| {
///     let name = req.query_arg("name").unwrap_or("world");
///     resp.write(format!("Hello, {name} ({} {})", req.method(), req.path()));
/// });
/// # let _ = Application::new().route("/", route);
/// ```
#[derive(Debug, Clone)]
pub struct Request {
    /// The head's bytes. Method, target and header names are ASCII (httparse checked);
    /// a header value is validated as UTF-8 only when asked for as `&str`.
    head: Vec<u8>,
    method: Method,
    path: Span,
    query: Span,
    pub(crate) minor_version: u8,
    headers: smallvec::SmallVec<[(Span, Span); 4]>,
    pub(crate) extra: Option<Box<Extra>>,
    pub(crate) peer: Option<SocketAddr>,
}

impl Request {
    fn bytes(&self, s: Span) -> &[u8] {
        &self.head[s.0 as usize..s.1 as usize]
    }

    /// Method, target and header names are ASCII (the parser checked), so this
    /// validation of a few bytes always succeeds.
    fn ascii(&self, s: Span) -> &str {
        std::str::from_utf8(self.bytes(s)).unwrap_or("")
    }

    /// The method, as sent (`GET`, `POST`, …).
    pub fn method(&self) -> &str {
        match self.method {
            Method::Standard(i) => STANDARD_METHODS[usize::from(i)],
            Method::Sent(s) => self.ascii(s),
        }
    }
    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.ascii(self.path)
    }
    /// The raw query string (after `?`), possibly empty.
    pub fn query(&self) -> &str {
        self.ascii(self.query)
    }
    /// The first value of query argument `name`, as sent (not percent-decoded).
    pub fn query_arg(&self, name: &str) -> Option<&str> {
        self.query().split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then_some(v)
        })
    }
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub fn minor_version(&self) -> u8 {
        self.minor_version
    }
    /// The first value of header `name` (case-insensitive), if it is UTF-8 (see
    /// [`header_bytes`](Self::header_bytes) for any value).
    pub fn header(&self, name: &str) -> Option<&str> {
        let (_, v) = self
            .headers
            .iter()
            .find(|(k, _)| self.ascii(*k).eq_ignore_ascii_case(name))?;
        std::str::from_utf8(self.bytes(*v)).ok()
    }
    /// The first value of header `name` (case-insensitive), as bytes.
    pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| self.ascii(*k).eq_ignore_ascii_case(name))
            .map(|(_, v)| self.bytes(*v))
    }
    /// Every header as (name, value), in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.headers
            .iter()
            .map(|(k, v)| (self.ascii(*k), self.bytes(*v)))
    }
    /// The body (de-chunked), empty if there was none.
    pub fn body(&self) -> &[u8] {
        self.extra.as_ref().map_or(&[], |e| &e.body)
    }
    /// A capture of the route's pattern (`{id}` in `/user/{id}`).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.extra
            .as_ref()?
            .params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    /// The client's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The body and captures, made on first use.
    pub(crate) fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }
}

/// The head's buffer goes back to the thread's small-buffer list (see
/// `IoStream::take_until_now`): no malloc and free per request.
impl Drop for Request {
    fn drop(&mut self) {
        crate::buffer::recycle_small(std::mem::take(&mut self.head));
    }
}

/// How the body of a request is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    None,
    Length(u64),
    Chunked,
}

/// A parsed head: the request without its body, and what the connection must do.
#[derive(Debug)]
pub(crate) struct Head {
    pub req: Request,
    pub body: BodyKind,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

/// Why a head was refused: the status to answer (the connection then closes, since
/// the framing of what follows cannot be trusted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused(pub u16);

/// The methods of RFC 9110 and PATCH, kept as `&'static str` so that `method()` costs
/// no UTF-8 check.
const STANDARD_METHODS: [&str; 9] = [
    "GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

/// Where `part` (a slice of `base`) lies in `base`.
fn span(base: &[u8], part: &[u8]) -> Span {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    Span(start as u16, (start + part.len()) as u16)
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

/// Parses a complete head (up to and including the blank line); the request keeps it.
pub(crate) fn parse_head(buf: Vec<u8>, cfg: &HttpConfig) -> Result<Head, Refused> {
    if buf.len() > MAX_HEAD_LIMIT {
        return Err(Refused(431)); // spans are 16-bit (the server never reads more)
    }
    const MAX: usize = 128;
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX];
    let n_slots = cfg.max_headers.min(MAX);
    let mut parsed = httparse::Request::new(&mut []);
    match parsed.parse_with_uninit_headers(&buf, &mut slots[..n_slots]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Refused(400)),
        Err(httparse::Error::TooManyHeaders) => return Err(Refused(431)),
        Err(httparse::Error::Version) => return Err(Refused(505)),
        Err(_) => return Err(Refused(400)),
    }
    let method = parsed.method.ok_or(Refused(400))?;
    let method = match STANDARD_METHODS.iter().position(|m| *m == method) {
        Some(i) => Method::Standard(i as u8),
        None => Method::Sent(span(&buf, method.as_bytes())),
    };
    let target = parsed.path.ok_or(Refused(400))?;
    let minor_version = parsed.version.ok_or(Refused(400))?;
    if target.len() > cfg.max_uri {
        return Err(Refused(414));
    }
    // origin-form, absolute-form (proxies), or `*` for OPTIONS.
    let origin = if target.starts_with('/') || target == "*" {
        target
    } else if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        rest.find('/').map_or("", |i| &rest[i..])
    } else {
        return Err(Refused(400));
    };
    let (path, query) = match memchr::memchr(b'?', origin.as_bytes()) {
        Some(i) => (&origin[..i], &origin[i + 1..]),
        None => (origin, &origin[origin.len()..]),
    };
    let (path, query) = if path.is_empty() {
        (Span::default(), Span::default()) // absolute-form without a path: "/" below
    } else {
        (span(&buf, path.as_bytes()), span(&buf, query.as_bytes()))
    };

    let mut headers = smallvec::SmallVec::new();
    let mut content_length: Option<u64> = None;
    let mut chunked_only = true;
    let mut te_seen = false;
    let (mut close, mut keep_alive_token, mut expect_continue, mut host) =
        (false, false, false, false);
    for h in parsed.headers.iter() {
        let name = h.name;
        let value = trim(h.value);
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if is("host") {
            host = true;
        } else if is("content-length") {
            // Each value (a list too) must be all digits, and all must agree.
            for v in value.split(|&b| b == b',') {
                let v = trim(v);
                if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                    return Err(Refused(400));
                }
                let n = v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
                if content_length.is_some_and(|m| m != n) {
                    return Err(Refused(400));
                }
                content_length = Some(n);
            }
        } else if is("transfer-encoding") {
            // We decode chunked only; it must be the one coding.
            for coding in value.split(|&b| b == b',') {
                let coding = trim(coding);
                if coding.is_empty() {
                    continue;
                }
                chunked_only &= !te_seen && coding.eq_ignore_ascii_case(b"chunked");
                te_seen = true;
            }
        } else if is("connection") {
            for t in value.split(|&b| b == b',') {
                close |= trim(t).eq_ignore_ascii_case(b"close");
                keep_alive_token |= trim(t).eq_ignore_ascii_case(b"keep-alive");
            }
        } else if is("expect") {
            expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
        }
        headers.push((span(&buf, name.as_bytes()), span(&buf, value)));
    }
    if minor_version == 1 && !host {
        return Err(Refused(400)); // RFC 9112 3.2: a 1.1 request without Host
    }
    let body = match (te_seen, content_length) {
        (true, Some(_)) => return Err(Refused(400)),
        (true, None) if chunked_only => BodyKind::Chunked,
        (true, None) => return Err(Refused(501)),
        (false, Some(0)) | (false, None) => BodyKind::None,
        (false, Some(n)) => BodyKind::Length(n),
    };
    if let BodyKind::Length(n) = body {
        if n > cfg.max_body as u64 {
            return Err(Refused(413));
        }
    }
    let keep_alive = if minor_version == 1 {
        !close
    } else {
        keep_alive_token && !close
    };
    let mut req = Request {
        head: buf,
        method,
        path,
        query,
        minor_version,
        headers,
        extra: None,
        peer: None,
    };
    if req.path.1 == 0 {
        // No path in an absolute-form target: it means "/".
        req.head.push(b'/');
        let at = req.head.len() as u16 - 1;
        req.path = Span(at, at + 1);
        req.query = Span(at + 1, at + 1);
    }
    Ok(Head {
        req,
        body,
        keep_alive,
        expect_continue: expect_continue && minor_version == 1 && body != BodyKind::None,
    })
}

/// Parses a chunk-size line (`1a;ext=1\r\n`): the size, or `None` if malformed.
pub(crate) fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r\n")?;
    let hex = match line.iter().position(|&b| b == b';') {
        Some(i) => &line[..i],
        None => line,
    };
    let hex = std::str::from_utf8(hex).ok()?.trim_end_matches([' ', '\t']);
    if hex.is_empty() || hex.len() > 15 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request moves from the parser to the handler three or four times: up to 128
    /// bytes it moves inline, past that by a call to memcpy each time. It may also go
    /// to another thread.
    #[test]
    fn a_request_is_small_and_send() {
        fn send<T: Send>() {}
        send::<Request>();
        assert!(std::mem::size_of::<Request>() <= 128);
    }

    fn parse(s: &str) -> Result<Head, Refused> {
        parse_head(s.as_bytes().to_vec(), &HttpConfig::default())
    }

    #[test]
    fn framing_and_refusals() {
        let cases: &[(&str, Result<BodyKind, u16>)] = &[
            ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", Ok(BodyKind::None)),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n", Ok(BodyKind::Length(5))),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", Ok(BodyKind::Length(5))),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n", Ok(BodyKind::Length(5))),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", Err(400)),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", Err(400)),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n", Err(400)),
            ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", Ok(BodyKind::Chunked)),
            ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n", Ok(BodyKind::Chunked)),
            ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", Err(400)),
            ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Err(501)),
            ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", Err(501)),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", Err(413)),
            ("GET / HTTP/2.0\r\nHost: x\r\n\r\n", Err(505)),
            ("GET / HTTP/1.1\r\n\r\n", Err(400)),
            ("GET / HTTP/1.0\r\n\r\n", Ok(BodyKind::None)),
            ("GET /\r\n\r\n", Err(400)),
            ("G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n", Err(400)),
            ("GET / HTTP/1.1\r\nHost x\r\n\r\n", Err(400)),
            ("GET nonsense HTTP/1.1\r\nHost: x\r\n\r\n", Err(400)),
        ];
        for (head, want) in cases {
            let got = parse(head).map(|h| h.body).map_err(|r| r.0);
            assert_eq!(&got, want, "{head:?}");
        }
    }

    #[test]
    fn keep_alive_by_version_and_connection_header() {
        let cases = [
            ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", true),
            (
                "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                false,
            ),
            (
                "GET / HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive, Close\r\n\r\n",
                false,
            ),
            ("GET / HTTP/1.0\r\n\r\n", false),
            ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
        ];
        for (head, want) in cases {
            assert_eq!(parse(head).unwrap().keep_alive, want, "{head:?}");
        }
    }

    #[test]
    fn target_forms_query_and_limits() {
        let h = parse("GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!((h.req.path(), h.req.query()), ("/a/b", "x=1&y=2"));
        assert_eq!(h.req.query_arg("y"), Some("2"));
        assert_eq!(h.req.query_arg("z"), None);
        let h = parse("GET http://example.com/p?q HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!((h.req.path(), h.req.query()), ("/p", "q"));
        let h = parse("GET http://example.com HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!((h.req.path(), h.req.query()), ("/", ""));
        let h = parse("GET / HTTP/1.1\r\nHost: x\r\nX-A:  spaced value \r\n\r\n").unwrap();
        assert_eq!(h.req.header("x-a"), Some("spaced value"));
        assert_eq!(h.req.headers().count(), 2);
        assert_eq!(h.req.method(), "GET");
        // A header value that is not UTF-8 (obs-text): still parsed, bytes kept.
        let raw = b"GET /x HTTP/1.1\r\nHost: x\r\nX-Latin: caf\xe9\r\n\r\n".to_vec();
        let h = parse_head(raw, &HttpConfig::default()).unwrap();
        assert_eq!((h.req.method(), h.req.path()), ("GET", "/x"));
        assert_eq!(h.req.header("x-latin"), None);
        assert_eq!(h.req.header_bytes("x-latin"), Some(&b"caf\xe9"[..]));
        assert_eq!(h.req.header("host"), Some("x"));
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
        assert_eq!(parse(&long).unwrap_err(), Refused(414));
        let many: String = (0..70).map(|i| format!("X-{i}: v\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
        assert_eq!(parse(&head).unwrap_err(), Refused(431));
    }

    #[test]
    fn expect_continue_only_with_a_body_on_1_1() {
        let h = parse(
            "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        );
        assert!(h.unwrap().expect_continue);
        let h = parse("GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n");
        assert!(!h.unwrap().expect_continue);
    }

    #[test]
    fn chunk_size_lines() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"0\r\n", Some(0)),
            (b"1a\r\n", Some(26)),
            (b"FF;name=value\r\n", Some(255)),
            (b"\r\n", None),
            (b"zz\r\n", None),
            (b"-1\r\n", None),
            (b"1a", None),
            (b"ffffffffffffffff\r\n", None),
        ];
        for (line, want) in cases {
            assert_eq!(
                parse_chunk_size(line),
                *want,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
