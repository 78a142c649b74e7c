//! `Request`, and reading a request head: httparse for the syntax, then the framing
//! rules of RFC 9112 (Content-Length, Transfer-Encoding, Connection, Expect), each
//! failure mapped to its status code.

use super::HttpConfig;
use std::net::SocketAddr;

/// An HTTP request: method, target, headers, body, and the route's captures.
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
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) minor_version: u8,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) params: Vec<(String, String)>,
    pub(crate) peer: Option<SocketAddr>,
}

impl Request {
    /// The method, upper case as sent (`GET`, `POST`, …).
    pub fn method(&self) -> &str {
        &self.method
    }
    /// The path, without the query.
    pub fn path(&self) -> &str {
        &self.path
    }
    /// The raw query string (after `?`), possibly empty.
    pub fn query(&self) -> &str {
        &self.query
    }
    /// The first value of query argument `name`, as sent (not percent-decoded).
    pub fn query_arg(&self, name: &str) -> Option<&str> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then_some(v)
        })
    }
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub fn minor_version(&self) -> u8 {
        self.minor_version
    }
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// Every header, in order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }
    /// The body (de-chunked), empty if there was none.
    pub fn body(&self) -> &[u8] {
        &self.body
    }
    /// A capture of the route's pattern (`{id}` in `/user/{id}`).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    /// The client's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
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

fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Parses a complete head (up to and including the blank line).
pub(crate) fn parse_head(buf: &[u8], cfg: &HttpConfig) -> Result<Head, Refused> {
    let mut headers = vec![httparse::EMPTY_HEADER; cfg.max_headers];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Refused(400)),
        Err(httparse::Error::TooManyHeaders) => return Err(Refused(431)),
        Err(httparse::Error::Version) => return Err(Refused(505)),
        Err(_) => return Err(Refused(400)),
    }
    let method = parsed.method.ok_or(Refused(400))?.to_string();
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
        rest.find('/').map_or("/", |i| &rest[i..])
    } else {
        return Err(Refused(400));
    };
    let (path, query) = origin.split_once('?').unwrap_or((origin, ""));

    let mut out_headers = Vec::with_capacity(parsed.headers.len());
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Option<String> = None;
    let (mut close, mut keep_alive_token, mut expect_continue, mut host) =
        (false, false, false, false);
    for h in parsed.headers.iter() {
        // Header values must be visible ASCII or obs-text; httparse has checked the
        // bytes; keep them as text (lossy for obs-text).
        let value = String::from_utf8_lossy(h.value).trim().to_string();
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            // Each value (a list too) must be all digits, and all must agree.
            for v in value.split(',') {
                let v = v.trim();
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Refused(400));
                }
                let n: u64 = v.parse().map_err(|_| Refused(400))?;
                if content_length.is_some_and(|m| m != n) {
                    return Err(Refused(400));
                }
                content_length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let te = transfer_encoding.get_or_insert_with(String::new);
            if !te.is_empty() {
                te.push(',');
            }
            te.push_str(&value);
        } else if name.eq_ignore_ascii_case("connection") {
            close |= has_token(&value, "close");
            keep_alive_token |= has_token(&value, "keep-alive");
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue |= value.eq_ignore_ascii_case("100-continue");
        } else if name.eq_ignore_ascii_case("host") {
            host = true;
        }
        out_headers.push((name.to_string(), value));
    }
    if minor_version == 1 && !host {
        return Err(Refused(400)); // RFC 9112 3.2: a 1.1 request without Host
    }
    let body = match (transfer_encoding, content_length) {
        (Some(_), Some(_)) => return Err(Refused(400)),
        (Some(te), None) => {
            let codings: Vec<&str> = te.split(',').map(str::trim).collect();
            match codings.as_slice() {
                [only] if only.eq_ignore_ascii_case("chunked") => BodyKind::Chunked,
                // chunked must come last; anything else (gzip, …) we do not decode.
                _ => return Err(Refused(501)),
            }
        }
        (None, Some(0)) | (None, None) => BodyKind::None,
        (None, Some(n)) => BodyKind::Length(n),
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
    Ok(Head {
        req: Request {
            method,
            path: path.to_string(),
            query: query.to_string(),
            minor_version,
            headers: out_headers,
            body: Vec::new(),
            params: Vec::new(),
            peer: None,
        },
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

    fn parse(s: &str) -> Result<Head, Refused> {
        parse_head(s.as_bytes(), &HttpConfig::default())
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
