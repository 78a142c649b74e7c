//! `ClientRequest`: what to fetch and how, its URL, where it connects, and its head as
//! it goes on the wire.

use super::error::ClientError;
use crate::http::head::is_tchar;
use rustls::pki_types::ServerName;
use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// A request for [`HttpClient::fetch`](super::HttpClient::fetch): method, URL, headers,
/// body, and how the answer comes. Built with its methods, each returning it.
///
/// The URL is `http://host[:port]/path?query` or `https://host[:port]/path?query` (TLS,
/// the host's certificate verified with the client's
/// [`TlsConnector`](crate::tls::TlsConnector)), or an origin-form target
/// (`/path?query`, plain HTTP) with [`connect_to`](Self::connect_to) saying where it
/// goes. `Host` is set from the URL unless a `Host` header is given;
/// `Content-Length` or `Transfer-Encoding: chunked` from the body (they cannot be set
/// as headers).
///
/// ```
/// use coreloop::http::ClientRequest;
/// use std::time::Duration;
/// let get = ClientRequest::get("http://127.0.0.1:8080/items?page=2")
///     .header("Accept", "application/json")
///     .timeout(Duration::from_secs(5));
/// let post = ClientRequest::new("POST", "http://127.0.0.1:8080/items").body("name=x");
/// # let _ = (get, post);
/// ```
#[derive(Clone, Debug)]
pub struct ClientRequest {
    pub(super) method: Cow<'static, str>,
    pub(super) url: String,
    /// The header lines as they go on the wire (`name: value` CRLF each), checked as
    /// they were added (one buffer: no allocation per header).
    fields: Vec<u8>,
    /// Why a header was refused, if one was (the fetch fails with it).
    refused: Option<String>,
    has_host: bool,
    /// A `Connection: close` header was given.
    close: bool,
    pub(super) body: Body,
    pub(super) stream_response: bool,
    pub(super) redirects: u8,
    pub(super) timeout: Option<Duration>,
    pub(super) connect_to: Option<SocketAddr>,
}

/// A request's body.
#[derive(Clone, Debug)]
pub(super) enum Body {
    None,
    /// All of it, sent with its Content-Length.
    Fixed(Vec<u8>),
    /// Written later through the [`Exchange`](super::Exchange): with this length
    /// (`Content-Length`), or chunked.
    Streamed(Option<u64>),
}

impl ClientRequest {
    /// A request with `method` (`GET`, `POST`, ..., any token) for `url`.
    pub fn new(method: &str, url: impl Into<String>) -> ClientRequest {
        const KNOWN: [&str; 8] = [
            "GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
        ];
        let method = match KNOWN.iter().find(|m| **m == method) {
            Some(m) => Cow::Borrowed(*m),
            None => Cow::Owned(method.to_string()),
        };
        ClientRequest {
            method,
            url: url.into(),
            fields: Vec::new(),
            refused: None,
            has_host: false,
            close: false,
            body: Body::None,
            stream_response: false,
            redirects: 0,
            timeout: None,
            connect_to: None,
        }
    }

    /// A GET request for `url`.
    pub fn get(url: impl Into<String>) -> ClientRequest {
        ClientRequest::new("GET", url)
    }

    /// Adds a header (kept in order; a name may repeat). A name that is not a token, a
    /// value with CR, LF or NUL, `Content-Length` or `Transfer-Encoding` (set from the
    /// body) make the fetch fail with [`ClientError::Invalid`].
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> ClientRequest {
        self.add_header(name, value.as_ref());
        self
    }

    fn add_header(&mut self, name: &str, value: &[u8]) {
        let refuse = if name.is_empty() || !name.bytes().all(is_tchar) {
            Some(format!("header name {name:?} is not a token"))
        } else if memchr::memchr3(b'\r', b'\n', 0, value).is_some() {
            Some(format!("header {name} has CR, LF or NUL in its value"))
        } else if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            Some(format!(
                "{name} is set by the client from the body (use body or streamed_body)"
            ))
        } else {
            None
        };
        if let Some(why) = refuse {
            self.refused.get_or_insert(why);
            return;
        }
        if self.fields.capacity() == 0 {
            // One allocation for a typical set of fields, rather than a chain of them.
            self.fields.reserve(256);
        }
        self.has_host |= name.eq_ignore_ascii_case("host");
        if name.eq_ignore_ascii_case("connection") {
            self.close |= value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
        self.fields.extend_from_slice(name.as_bytes());
        self.fields.extend_from_slice(b": ");
        self.fields.extend_from_slice(value.trim_ascii());
        self.fields.extend_from_slice(b"\r\n");
    }

    /// Every header given, as (name, value), in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        // Checked when added: names are tokens, values have no CR or LF.
        self.fields
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|line| {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let colon = line.iter().position(|&b| b == b':')?;
                let name = std::str::from_utf8(&line[..colon]).ok()?;
                Some((name, line.get(colon + 2..).unwrap_or(b"")))
            })
    }

    /// The body, sent whole with its `Content-Length`.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> ClientRequest {
        self.body = Body::Fixed(body.into());
        self
    }

    /// A body written while the request is in flight, through
    /// [`Fetching::exchange`](super::Fetching::exchange): of `length` bytes (sent with
    /// that `Content-Length`), or, with `None`, chunked. Such a request is never retried
    /// (its body cannot be sent again), nor redirected with its body.
    pub fn streamed_body(mut self, length: Option<u64>) -> ClientRequest {
        self.body = Body::Streamed(length);
        self
    }

    /// The fetch answers as soon as the response head is in, with the body bytes that
    /// came with it ([`ClientResponse::body`](super::ClientResponse::body)); the rest
    /// is read with [`ClientResponse::body_part`](super::ClientResponse::body_part), as
    /// the reader asks for it (nothing more is read from the server meanwhile, so a
    /// slow reader slows the server down instead of buffering without limit). Without
    /// it the whole body is read first, up to `max_body`.
    pub fn stream_response(mut self) -> ClientRequest {
        self.stream_response = true;
        self
    }

    /// Follows up to `max` redirects (301, 302, 303, 307, 308 with a `Location`):
    /// 303, and 301 or 302 after a POST, become a GET without the body; 307 and 308
    /// repeat the method and body. Not followed by default (the 3xx is the answer).
    /// From `http` to `https` is followed; from `https` to `http` is refused
    /// ([`ClientError::Invalid`]: the request would go on unencrypted). Going to another
    /// host or scheme drops `Host`, `Authorization` and [`connect_to`](Self::connect_to).
    pub fn follow_redirects(mut self, max: u8) -> ClientRequest {
        self.redirects = max;
        self
    }

    /// A deadline for this whole fetch (queue, connect, request and response),
    /// replacing the client's `total_timeout`.
    pub fn timeout(mut self, timeout: Duration) -> ClientRequest {
        self.timeout = Some(timeout);
        self
    }

    /// Connects to `addr` instead of the URL's host (whose name still goes in `Host`):
    /// for a host name this client cannot look up, or an upstream chosen by the caller.
    /// With it the URL may be an origin-form target (`/path?query`).
    pub fn connect_to(mut self, addr: SocketAddr) -> ClientRequest {
        self.connect_to = Some(addr);
        self
    }

    /// The method.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The URL (or target) as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// RFC 9110 §9.2.2: what may be sent again without changing the outcome.
    pub(super) fn idempotent(&self) -> bool {
        matches!(
            &*self.method,
            "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"
        )
    }

    /// Whether the request may be sent again after a failure before any answer: an
    /// idempotent method and a body that can be sent again.
    pub(super) fn replayable(&self) -> bool {
        self.idempotent() && !matches!(self.body, Body::Streamed(_))
    }

    /// Where the request goes (checked: a request that cannot be made fails here,
    /// before anything is sent).
    pub(super) fn prepare(&self) -> Result<Prepared, ClientError> {
        if self.method.is_empty() || !self.method.bytes().all(is_tchar) {
            return Err(invalid(format!("method {:?} is not a token", self.method)));
        }
        if let Some(why) = &self.refused {
            return Err(invalid(why.clone()));
        }
        let url = parse_url(&self.url, self.connect_to.is_some())?;
        let tls = match url.tls {
            false => None,
            true => {
                let name = url.host.to_ascii_lowercase();
                if ServerName::try_from(name.as_str()).is_err() {
                    return Err(invalid(format!(
                        "{:?} is not a name TLS can verify a certificate for",
                        url.host
                    )));
                }
                Some(name)
            }
        };
        let (addr, lookup) = match self.connect_to {
            Some(a) => (a, None),
            None => match literal(url.host, url.port) {
                Some(a) => (a, None),
                None => (
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), url.port),
                    Some(url.host.to_string()),
                ),
            },
        };
        Ok(Prepared {
            addr,
            lookup,
            authority: url.authority.map(str::to_ascii_lowercase),
            tls,
            target: url.target,
            slash: url.slash,
            close: self.close,
        })
    }

    /// Writes the head as it goes on the wire (request line, the headers, `Host`, the
    /// body's framing, the empty line), for `p` (this request's).
    pub(super) fn write_head(&self, p: &Prepared, head: &mut Vec<u8>) {
        head.extend_from_slice(self.method.as_bytes());
        head.push(b' ');
        if p.slash {
            head.push(b'/');
        }
        head.extend_from_slice(self.url[p.target.clone()].as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        head.extend_from_slice(&self.fields);
        if !self.has_host {
            head.extend_from_slice(b"Host: ");
            match &p.authority {
                Some(a) => head.extend_from_slice(a.as_bytes()),
                None => {
                    let _ = std::io::Write::write_fmt(head, format_args!("{}", p.addr));
                }
            }
            head.extend_from_slice(b"\r\n");
        }
        match &self.body {
            Body::Fixed(b) => write_length(head, b.len() as u64),
            Body::Streamed(Some(n)) => write_length(head, *n),
            Body::Streamed(None) => head.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            // A method that means something with a body says it has none (RFC 9110
            // §8.6); the others say nothing.
            Body::None if matches!(&*self.method, "POST" | "PUT" | "PATCH") => {
                write_length(head, 0)
            }
            Body::None => {}
        }
        head.extend_from_slice(b"\r\n");
    }

    /// The request to make for a redirect to `location` (answered `status` to this
    /// request at `from`), or `None` if it is not to be followed (a streamed body
    /// cannot be sent again).
    pub(super) fn redirected(
        &self,
        status: u16,
        location: &str,
        from: &Prepared,
    ) -> Result<Option<ClientRequest>, ClientError> {
        let to_get = status == 303 && self.method != "HEAD"
            || matches!(status, 301 | 302) && self.method == "POST";
        if !to_get && matches!(self.body, Body::Streamed(_)) {
            return Ok(None);
        }
        let mut next = self.clone();
        next.redirects = self.redirects.saturating_sub(1);
        if to_get {
            next.method = Cow::Borrowed("GET");
            next.body = Body::None;
        }
        let location = location.trim();
        let https = from.tls.is_some();
        let scheme = if https { "https://" } else { "http://" };
        let url = if let Some(rest) = strip_prefix_ignore_case(location, "http://") {
            if https {
                return Err(invalid(format!(
                    "redirect from https to {location:?} refused: the request would go \
                     unencrypted"
                )));
            }
            format!("http://{rest}")
        } else if let Some(rest) = strip_prefix_ignore_case(location, "https://") {
            format!("https://{rest}")
        } else if let Some(rest) = location.strip_prefix("//") {
            format!("{scheme}{rest}")
        } else if location.contains("://") {
            return Err(invalid(format!(
                "redirect to {location:?}: only http and https are supported"
            )));
        } else {
            let authority = from
                .authority
                .clone()
                .unwrap_or_else(|| from.addr.to_string());
            let path = if location.starts_with('/') {
                location.to_string()
            } else {
                // Relative to the current path's directory (RFC 3986 §5.2.3).
                let target = target_in(&self.url, &from.target, from.slash);
                let dir_end = target.split('?').next().unwrap_or("/").rfind('/');
                format!("{}{location}", &target[..dir_end.map_or(0, |e| e + 1)])
            };
            format!("{scheme}{authority}{path}")
        };
        let same_origin = parse_url(&url, false)
            .map(|u| u.tls == https && u.authority.map(str::to_ascii_lowercase) == from.authority)
            .unwrap_or(false);
        if !same_origin {
            // Another host, or another scheme (its port and its security differ): the
            // old address, Host and credentials do not apply there.
            next.connect_to = None;
            next.fields.clear();
            next.has_host = false;
            next.close = false;
            for (k, v) in self.headers() {
                if !k.eq_ignore_ascii_case("host") && !k.eq_ignore_ascii_case("authorization") {
                    next.add_header(k, v);
                }
            }
        }
        next.url = url;
        Ok(Some(next))
    }
}

/// A request ready to go: where it goes.
#[derive(Debug)]
pub(super) struct Prepared {
    pub(super) addr: SocketAddr,
    /// A host name to look up first (the port is `addr`'s); `addr` is then the first
    /// address it has.
    pub(super) lookup: Option<String>,
    /// `host[:port]` from the URL, lowercase (`None` for an origin-form target).
    pub(super) authority: Option<String>,
    /// For `https`: the server's name (the URL's host, lowercase), sent as SNI and
    /// checked against its certificate.
    pub(super) tls: Option<String>,
    /// The origin-form target: these bytes of the URL, after a `/` if `slash`.
    target: std::ops::Range<usize>,
    slash: bool,
    /// The request says `Connection: close`: the connection is not reused after it.
    pub(super) close: bool,
}

fn write_length(head: &mut Vec<u8>, n: u64) {
    head.extend_from_slice(b"Content-Length: ");
    head.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    head.extend_from_slice(b"\r\n");
}

fn invalid(why: String) -> ClientError {
    ClientError::Invalid(why)
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// A URL's parts (borrowed from it: parsing allocates nothing).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Url<'a> {
    /// `https`.
    pub(super) tls: bool,
    pub(super) host: &'a str,
    pub(super) port: u16,
    /// `host[:port]` as given (`None` for an origin-form target).
    pub(super) authority: Option<&'a str>,
    /// The target: these bytes of the URL (without a fragment), after a `/` if
    /// `slash` (an empty path, or a query alone).
    pub(super) target: std::ops::Range<usize>,
    pub(super) slash: bool,
}

impl Url<'_> {
    /// The origin-form target of `url` (which this was parsed from).
    #[cfg(test)]
    fn target_of<'u>(&self, url: &'u str) -> Cow<'u, str> {
        target_in(url, &self.target, self.slash)
    }
}

/// The target at `range` of `url`, after a `/` if `slash`.
fn target_in<'u>(url: &'u str, range: &std::ops::Range<usize>, slash: bool) -> Cow<'u, str> {
    let t = &url[range.clone()];
    if slash {
        Cow::Owned(format!("/{t}"))
    } else {
        Cow::Borrowed(t)
    }
}

/// `http://host[:port][/path][?query][#fragment]` (or `https://`), or (`origin_ok`) a
/// bare target.
pub(super) fn parse_url(url: &str, origin_ok: bool) -> Result<Url<'_>, ClientError> {
    let target = |from: usize| -> Result<(std::ops::Range<usize>, bool), ClientError> {
        let t = &url[from..];
        let end = from + t.find('#').unwrap_or(t.len());
        let t = &url[from..end];
        if t.bytes().any(|b| b <= b' ' || b == 0x7f || b >= 0x80) {
            return Err(invalid(format!(
                "target {t:?} has a space, a control or a non-ASCII byte (percent-encode it)"
            )));
        }
        Ok((from..end, !t.starts_with('/')))
    };
    if url.starts_with('/') {
        if !origin_ok {
            return Err(invalid(format!(
                "{url:?} has no host: give an http:// or https:// URL, or connect_to an address"
            )));
        }
        let (target, slash) = target(0)?;
        return Ok(Url {
            tls: false,
            host: "",
            port: 80,
            authority: None,
            target,
            slash,
        });
    }
    let (tls, rest) = match strip_prefix_ignore_case(url, "http://") {
        Some(r) => (false, r),
        None => match strip_prefix_ignore_case(url, "https://") {
            Some(r) => (true, r),
            None => {
                return Err(invalid(format!(
                    "{url:?} is not an http:// or https:// URL"
                )))
            }
        },
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.contains('@') {
        return Err(invalid("credentials in the URL are not supported".into()));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let close = v6
            .find(']')
            .ok_or_else(|| invalid(format!("bad IPv6 host in {url:?}")))?;
        (&v6[..close], &v6[close + 1..])
    } else {
        match authority.rfind(':') {
            Some(c) => (&authority[..c], &authority[c..]),
            None => (authority, ""),
        }
    };
    let port = match port {
        "" | ":" if tls => 443,
        "" | ":" => 80,
        p => p
            .strip_prefix(':')
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|&p| p != 0)
            .ok_or_else(|| invalid(format!("bad port in {url:?}")))?,
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'));
    if !host_ok {
        return Err(invalid(format!("bad host in {url:?}")));
    }
    let (target, slash) = target(url.len() - rest.len() + end)?;
    Ok(Url {
        tls,
        host,
        port,
        authority: Some(authority),
        target,
        slash,
    })
}

/// Where `host` is, if it says so itself: an IP literal, or `localhost`. Any other
/// name is looked up on the loop's blocking pool before a pool of connections is chosen
/// (`Flight::start`).
pub(super) fn literal(host: &str, port: u16) -> Option<SocketAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_and_target() {
        let target = |u: &str| parse_url(u, false).unwrap().target_of(u).to_string();
        let u = "http://127.0.0.1:8080/a/b?c=d#frag";
        let url = parse_url(u, false).unwrap();
        assert_eq!((url.host, url.port), ("127.0.0.1", 8080));
        assert_eq!(target(u), "/a/b?c=d");
        assert_eq!(url.authority, Some("127.0.0.1:8080"));
        assert_eq!(target("HTTP://Example.COM"), "/");
        assert_eq!(target("http://example.com?x"), "/?x");
        assert_eq!(parse_url("http://example.com", false).unwrap().port, 80);
        let v6 = parse_url("http://[::1]:9/", false).unwrap();
        assert_eq!((v6.host, v6.port), ("::1", 9));
        let tls = parse_url("HTTPS://Example.com/x", false).unwrap();
        assert_eq!((tls.tls, tls.host, tls.port), (true, "Example.com", 443));
        let tls = parse_url("https://[::1]:8443", false).unwrap();
        assert_eq!((tls.tls, tls.host, tls.port), (true, "::1", 8443));
        assert!(!parse_url(u, false).unwrap().tls);
        for bad in [
            "ftp://x/",
            "http://user@x/",
            "http://x:0/",
            "http://x:99999/",
            "http://x:y/",
            "http:///path",
            "http://x/a b",
            "http://x/\u{e9}",
            "/no/host",
            "x",
        ] {
            assert!(parse_url(bad, false).is_err(), "{bad}");
        }
        let u = "/with/host?x#f";
        assert_eq!(parse_url(u, true).unwrap().target_of(u), "/with/host?x");
    }

    #[test]
    fn ip_literals_and_localhost_need_no_lookup_and_names_do() {
        assert_eq!(
            literal("10.1.2.3", 80),
            Some("10.1.2.3:80".parse().unwrap())
        );
        assert_eq!(literal("::1", 81), Some("[::1]:81".parse().unwrap()));
        assert_eq!(
            literal("LocalHost", 82),
            Some("127.0.0.1:82".parse().unwrap())
        );
        assert_eq!(literal("example.com", 80), None);
        // https: the server's name (lowercase) for SNI and the certificate's check.
        let p = ClientRequest::get("https://Example.COM/")
            .prepare()
            .unwrap();
        assert_eq!(
            (p.tls.as_deref(), p.lookup.as_deref(), p.addr.port()),
            (Some("example.com"), Some("Example.COM"), 443)
        );
        let p = ClientRequest::get("https://127.0.0.1:8443/")
            .prepare()
            .unwrap();
        assert_eq!((p.tls.as_deref(), p.lookup), (Some("127.0.0.1"), None));
        assert!(ClientRequest::get("http://example.com/")
            .prepare()
            .unwrap()
            .tls
            .is_none());
        assert!(matches!(
            ClientRequest::get("https://[zz::1]/").prepare(),
            Err(ClientError::Invalid(_))
        ));
        let p = ClientRequest::get("http://example.com:8080/")
            .prepare()
            .unwrap();
        assert_eq!(
            (p.lookup.as_deref(), p.addr.port()),
            (Some("example.com"), 8080)
        );
    }

    fn head_of(r: &ClientRequest) -> String {
        let p = r.prepare().unwrap();
        let mut head = Vec::new();
        r.write_head(&p, &mut head);
        String::from_utf8(head).unwrap()
    }

    #[test]
    fn heads_carry_host_framing_and_the_headers_in_order() {
        let r = ClientRequest::new("POST", "http://127.0.0.1:8080/x?y")
            .header("A", "1")
            .header("a", "2")
            .body("hello");
        assert_eq!(
            head_of(&r),
            "POST /x?y HTTP/1.1\r\nA: 1\r\na: 2\r\nHost: 127.0.0.1:8080\r\nContent-Length: 5\r\n\r\n"
        );
        let r = ClientRequest::get("/t")
            .connect_to("127.0.0.1:9".parse().unwrap())
            .header("Host", "svc")
            .streamed_body(None);
        assert_eq!(
            head_of(&r),
            "GET /t HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let r = ClientRequest::get("http://Example.Com:81?q")
            .connect_to("127.0.0.1:9".parse().unwrap());
        assert_eq!(
            head_of(&r),
            "GET /?q HTTP/1.1\r\nHost: example.com:81\r\n\r\n"
        );
        let r = ClientRequest::new("DELETE", "/x").connect_to("127.0.0.1:9".parse().unwrap());
        assert_eq!(
            head_of(&r),
            "DELETE /x HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n"
        );
        let bad = [
            ClientRequest::new("GE T", "http://1.2.3.4/"),
            ClientRequest::get("http://1.2.3.4/").header("X", "a\r\nInjected: 1"),
            ClientRequest::get("http://1.2.3.4/").header("Content-Length", "3"),
            ClientRequest::get("http://1.2.3.4/").header("Bad Name", "v"),
        ];
        for r in bad {
            assert!(matches!(r.prepare(), Err(ClientError::Invalid(_))), "{r:?}");
        }
    }

    #[test]
    fn redirects_change_the_method_as_browsers_do() {
        let post = ClientRequest::new("POST", "http://127.0.0.1:1/a/b?q")
            .body("x")
            .follow_redirects(3);
        let from = post.prepare().unwrap();
        let r = post.redirected(302, "c", &from).unwrap().unwrap();
        assert_eq!(
            (&*r.method, r.url.as_str()),
            ("GET", "http://127.0.0.1:1/a/c")
        );
        assert!(matches!(r.body, Body::None));
        assert_eq!(r.redirects, 2);
        let r = post.redirected(307, "/elsewhere", &from).unwrap().unwrap();
        assert_eq!(
            (&*r.method, r.url.as_str()),
            ("POST", "http://127.0.0.1:1/elsewhere")
        );
        assert!(matches!(r.body, Body::Fixed(_)));
        let get = ClientRequest::get("http://127.0.0.1:1/")
            .header("Authorization", "secret")
            .connect_to("127.0.0.1:1".parse().unwrap());
        let from = get.prepare().unwrap();
        let r = get
            .redirected(301, "http://127.0.0.2:2/x", &from)
            .unwrap()
            .unwrap();
        assert!(
            r.connect_to.is_none() && r.headers().next().is_none(),
            "{r:?}"
        );
        let streamed = ClientRequest::new("PUT", "http://127.0.0.1:1/").streamed_body(None);
        let from = streamed.prepare().unwrap();
        assert!(streamed.redirected(307, "/again", &from).unwrap().is_none());
        assert!(get.redirected(302, "ftp://x/", &from).is_err());
    }

    #[test]
    fn redirects_keep_the_scheme_go_up_to_https_and_never_down() {
        let get = ClientRequest::get("https://a.example/x/y")
            .header("Authorization", "secret")
            .follow_redirects(3);
        let from = get.prepare().unwrap();
        let to = |loc: &str| get.redirected(302, loc, &from);
        for (loc, url) in [
            ("z", "https://a.example/x/z"),
            ("/z", "https://a.example/z"),
            ("//b.example/z", "https://b.example/z"),
            ("HTTPS://b.example/", "https://b.example/"),
        ] {
            assert_eq!(to(loc).unwrap().unwrap().url, url, "{loc}");
        }
        // Same origin: the credentials go on; another host: they do not.
        assert!(to("/z").unwrap().unwrap().headers().next().is_some());
        assert!(to("//b.example/")
            .unwrap()
            .unwrap()
            .headers()
            .next()
            .is_none());
        for down in ["http://a.example/x/y", "HTTP://b.example/"] {
            let e = to(down).unwrap_err();
            assert!(e.to_string().contains("refused"), "{e}");
        }
        // Up from http: followed, and another origin (same host and port, another
        // scheme): Authorization and connect_to stay behind.
        let plain = ClientRequest::get("http://a.example:8443/")
            .header("Authorization", "secret")
            .connect_to("127.0.0.1:8443".parse().unwrap())
            .follow_redirects(1);
        let from = plain.prepare().unwrap();
        let up = plain
            .redirected(301, "https://a.example:8443/", &from)
            .unwrap()
            .unwrap();
        assert_eq!(up.url, "https://a.example:8443/");
        assert!(
            up.connect_to.is_none() && up.headers().next().is_none(),
            "{up:?}"
        );
        assert_eq!(
            plain
                .redirected(301, "//a.example:8443/", &from)
                .unwrap()
                .unwrap()
                .url,
            "http://a.example:8443/"
        );
    }
}
