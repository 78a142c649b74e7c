//! `Request`: a parsed request head (the parsing is in `head.rs`), its body and the
//! route's captures.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

/// A byte range of the request head (which is at most
/// [`MAX_HEAD_LIMIT`](super::MAX_HEAD_LIMIT) bytes long).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Span(u16, u16);

impl Span {
    /// The span of `r` (within a head, so it fits 16 bits).
    pub(crate) fn of(r: Range<usize>) -> Span {
        Span(r.start as u16, r.end as u16)
    }
}

/// The method: one of [`STANDARD_METHODS`] by index, or where it lies in the head.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Method {
    Standard(u8),
    Sent(Span),
}

/// What few requests have: a body, the route's captures, what a proxy in front said.
#[derive(Debug, Clone, Default)]
pub(crate) struct Extra {
    pub body: Vec<u8>,
    pub params: Vec<(String, String)>,
    /// The client's address a trusted proxy gave (`HttpConfig::xheaders`).
    pub forwarded_ip: Option<IpAddr>,
    /// The scheme a trusted proxy gave was https.
    pub https: bool,
}

/// An HTTP request: method, target, headers, body, and the route's captures.
///
/// It keeps the bytes of its head and refers into them, so reading a request allocates
/// little: the head, and the body if there is one. Header fields are found in the head
/// when asked for (the parser checked them; it keeps no list). It is small (under 128
/// bytes: it moves from the parser to the handler without a call to memcpy).
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
    /// The head's bytes, a valid head (the parser checked). Method, target and header
    /// names are ASCII; a header value is validated as UTF-8 only when asked for as
    /// `&str`.
    head: Vec<u8>,
    method: Method,
    /// Empty: an absolute-form target without a path, which means `/`.
    path: Span,
    query: Span,
    pub(crate) minor_version: u8,
    pub(crate) extra: Option<Box<Extra>>,
    pub(crate) peer: Option<SocketAddr>,
}

impl Request {
    /// A request over the bytes of its head, as the parser found it.
    pub(crate) fn from_head(
        head: Vec<u8>,
        method: Method,
        path: Span,
        query: Span,
        minor_version: u8,
    ) -> Request {
        Request {
            head,
            method,
            path,
            query,
            minor_version,
            extra: None,
            peer: None,
        }
    }

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
    /// Whether the method is HEAD (without comparing strings).
    pub(crate) fn is_head(&self) -> bool {
        matches!(self.method, Method::Standard(HEAD))
    }
    /// The method's index in [`STANDARD_METHODS`], if it is one of them.
    pub(crate) fn standard_method(&self) -> Option<u8> {
        match self.method {
            Method::Standard(i) => Some(i),
            Method::Sent(_) => None,
        }
    }
    /// The path, without the query.
    pub fn path(&self) -> &str {
        if self.path.0 == self.path.1 {
            return "/";
        }
        self.ascii(self.path)
    }
    /// The path's bytes (ASCII: the parser checked), for routing without a UTF-8 check.
    pub(crate) fn path_bytes(&self) -> &[u8] {
        if self.path.0 == self.path.1 {
            return b"/";
        }
        self.bytes(self.path)
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
        std::str::from_utf8(self.header_bytes(name)?).ok()
    }
    /// The first value of header `name` (case-insensitive), as bytes.
    pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.headers()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
    /// Every header as (name, value), in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        // The head is valid: CRLF ends each line, the request line first and an empty
        // line last; a field line is `name ":" OWS value OWS`.
        let fields = memchr::memchr(b'\n', &self.head).map_or(&[][..], |i| &self.head[i + 1..]);
        fields
            .split(|&c| c == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .take_while(|line| !line.is_empty())
            .filter_map(|line| {
                let colon = memchr::memchr(b':', line)?;
                let name = std::str::from_utf8(&line[..colon]).unwrap_or("");
                let ows = |c: &u8| *c == b' ' || *c == b'\t';
                let v = &line[colon + 1..];
                let start = v.iter().position(|c| !ows(c)).unwrap_or(v.len());
                let end = v.iter().rposition(|c| !ows(c)).map_or(start, |e| e + 1);
                Some((name, &v[start..end]))
            })
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
    /// The address of the connection's peer (a proxy, if one is in front).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The client's IP address (Tornado's `remote_ip`): the peer's, or, with
    /// [`HttpConfig::xheaders`](super::HttpConfig::xheaders), the one a proxy in front
    /// gave in `X-Real-Ip`, else the last of `X-Forwarded-For` (the one it added).
    ///
    /// ```
    /// # use coreloop::http::{Application, Route};
    /// let route = Route::new().get(|_, req, mut resp| {
    ///     let who = req.remote_ip().map(|ip| ip.to_string()).unwrap_or_default();
    ///     resp.write(format!("{}://... from {who}", req.scheme()));
    /// });
    /// # let _ = Application::new().route("/", route);
    /// ```
    pub fn remote_ip(&self) -> Option<IpAddr> {
        self.extra
            .as_ref()
            .and_then(|e| e.forwarded_ip)
            .or(self.peer.map(|p| p.ip()))
    }

    /// `http`, or, with [`HttpConfig::xheaders`](super::HttpConfig::xheaders), `https`
    /// if a proxy in front said so in `X-Scheme`, else `X-Forwarded-Proto` (Tornado's
    /// `protocol`).
    pub fn scheme(&self) -> &'static str {
        if self.extra.as_ref().is_some_and(|e| e.https) {
            "https"
        } else {
            "http"
        }
    }

    /// Takes the client's address and scheme from the headers a proxy in front sets
    /// (`HttpConfig::xheaders`): a value that is not an IP address, or a scheme other
    /// than http or https, is ignored.
    pub(crate) fn trust_xheaders(&mut self) {
        let last = |v: &str| v.rsplit(',').next().unwrap_or("").trim().to_string();
        let ip = self
            .header("x-real-ip")
            .map(|v| v.trim().to_string())
            .or_else(|| self.header("x-forwarded-for").map(last))
            .and_then(|v| v.parse::<IpAddr>().ok());
        let https = self
            .header("x-scheme")
            .or_else(|| self.header("x-forwarded-proto"))
            .map(last)
            .is_some_and(|v| v.eq_ignore_ascii_case("https"));
        if ip.is_some() || https {
            let e = self.extra_mut();
            e.forwarded_ip = ip;
            e.https = https;
        }
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

/// GET's index in [`STANDARD_METHODS`].
pub(crate) const GET: u8 = 0;
/// HEAD's index in [`STANDARD_METHODS`].
pub(crate) const HEAD: u8 = 2;
/// OPTIONS's index in [`STANDARD_METHODS`].
pub(crate) const OPTIONS: u8 = 6;
/// CONNECT's index in [`STANDARD_METHODS`].
pub(crate) const CONNECT: u8 = 7;

/// The methods of RFC 9110 and PATCH, kept as `&'static str` so that `method()` costs
/// no UTF-8 check.
pub(crate) const STANDARD_METHODS: [&str; 9] = [
    "GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// A request moves from the parser to the handler three or four times: up to 128
    /// bytes it moves inline, past that by a call to memcpy each time. It may also go
    /// to another thread.
    #[test]
    fn head_is_heads_index() {
        assert_eq!(STANDARD_METHODS[usize::from(HEAD)], "HEAD");
        assert_eq!(STANDARD_METHODS[usize::from(OPTIONS)], "OPTIONS");
    }

    #[test]
    fn a_request_is_small_and_send() {
        fn send<T: Send>() {}
        send::<Request>();
        assert!(std::mem::size_of::<Request>() <= 128);
    }

    #[test]
    fn query_arguments() {
        let head = b"GET /a?x=1&y=2&flag HTTP/1.1\r\n\r\n".to_vec();
        let req = Request::from_head(
            head,
            Method::Standard(0),
            Span::of(4..6),
            Span::of(7..19),
            1,
        );
        assert_eq!((req.path(), req.query()), ("/a", "x=1&y=2&flag"));
        assert_eq!(req.query_arg("y"), Some("2"));
        assert_eq!(req.query_arg("flag"), Some(""));
        assert_eq!(req.query_arg("z"), None);
    }
}
