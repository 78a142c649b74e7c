//! What a proxy changes in the heads it forwards: hop-by-hop fields go (RFC 9110
//! §7.6.1: `Connection`, those it names, `Proxy-Connection`, `Keep-Alive`, `TE`,
//! `Transfer-Encoding`, `Upgrade`; the framing is the proxy's own on each side), and
//! `X-Forwarded-For`, `X-Forwarded-Proto` and `Via` are added.

use coreloop::http::framing::BodyLength;
use coreloop::http::{ClientRequest, ClientResponse, Request};
use std::io::Write;

/// How this proxy names itself in `Via` (RFC 9110 §7.6.3: a pseudonym is enough).
pub const VIA: &str = "coreloop";

/// Whether `name` is hop-by-hop: one of RFC 9110's, or named by a `Connection` field
/// (`named`, its tokens), or framing the proxy sets itself (`Content-Length`).
fn hop_by_hop(name: &str, named: &[&[u8]]) -> bool {
    const HOP: [&str; 7] = [
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "transfer-encoding",
        "upgrade",
        "content-length",
    ];
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || named
            .iter()
            .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
}

/// The tokens of every `Connection` field in `headers`.
fn connection_tokens<'a>(headers: impl Iterator<Item = (&'a str, &'a [u8])>) -> Vec<&'a [u8]> {
    headers
        .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
        .collect()
}

/// The request to send upstream for `req`, from a client at `client_ip`: its method
/// and target, its end-to-end fields (and `Expect`, which the proxy answers itself,
/// left out), `X-Forwarded-For` with the client appended, `X-Forwarded-Proto`, `Via`.
pub fn upstream_request(req: &Request, client_ip: &str) -> ClientRequest {
    let mut target = String::with_capacity(req.path().len() + req.query().len() + 1);
    target.push_str(req.path());
    if !req.query().is_empty() {
        target.push('?');
        target.push_str(req.query());
    }
    let mut out = ClientRequest::new(req.method(), &target);
    let named = connection_tokens(req.headers());
    let mut forwarded_for: Option<Vec<u8>> = None;
    let mut via: Option<Vec<u8>> = None;
    for (name, value) in req.headers() {
        if hop_by_hop(name, &named) || name.eq_ignore_ascii_case("expect") {
            continue;
        }
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            join(&mut forwarded_for, value);
        } else if name.eq_ignore_ascii_case("via") {
            join(&mut via, value);
        } else if !name.eq_ignore_ascii_case("x-forwarded-proto") {
            out = out.header(name, value);
        }
    }
    join(&mut forwarded_for, client_ip.as_bytes());
    let received = if req.minor_version() == 0 {
        "1.0"
    } else {
        "1.1"
    };
    join(&mut via, format!("{received} {VIA}").as_bytes());
    out.header("X-Forwarded-For", forwarded_for.unwrap_or_default())
        .header("X-Forwarded-Proto", "http")
        .header("Via", via.unwrap_or_default())
}

/// `list` with `item` appended (`a, b`).
fn join(list: &mut Option<Vec<u8>>, item: &[u8]) {
    match list {
        Some(l) => {
            l.extend_from_slice(b", ");
            l.extend_from_slice(item);
        }
        None => *list = Some(item.to_vec()),
    }
}

/// How the body of a response goes to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutBody {
    /// None at all (HEAD, 204, 304).
    None,
    /// With the upstream's Content-Length, byte for byte.
    Length,
    /// Re-chunked (the upstream's was chunked or delimited by its close, and the client
    /// speaks HTTP/1.1: its connection can stay open).
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client, a body of unknown length).
    UntilClose,
}

/// How `resp`'s body goes to a client of HTTP/1.`minor`.
pub fn out_body(resp: &ClientResponse, minor: u8) -> OutBody {
    match resp.head().body() {
        BodyLength::None => OutBody::None,
        BodyLength::Length(_) => OutBody::Length,
        BodyLength::Chunked | BodyLength::UntilClose if minor == 1 => OutBody::Chunked,
        BodyLength::Chunked | BodyLength::UntilClose => OutBody::UntilClose,
    }
}

/// Writes the response head for the client: the upstream's status and end-to-end
/// fields, `Via` appended, the framing of `body`, and `Connection: close` if the
/// connection closes after it (`keep-alive` to an HTTP/1.0 client if it does not).
pub fn write_response_head(
    out: &mut Vec<u8>,
    resp: &ClientResponse,
    body: OutBody,
    minor: u8,
    close: bool,
) {
    let head = resp.head();
    let _ = write!(out, "HTTP/1.1 {} ", head.status());
    out.extend_from_slice(head.reason().as_bytes());
    out.extend_from_slice(b"\r\n");
    let named = connection_tokens(resp.headers());
    let mut via: Option<Vec<u8>> = None;
    let mut length: Option<&[u8]> = None;
    for (name, value) in resp.headers() {
        if name.eq_ignore_ascii_case("content-length") {
            length.get_or_insert(value);
        }
        if hop_by_hop(name, &named) {
            continue;
        }
        if name.eq_ignore_ascii_case("via") {
            join(&mut via, value);
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    let received = if head.minor_version() == 0 {
        "1.0"
    } else {
        "1.1"
    };
    join(&mut via, format!("{received} {VIA}").as_bytes());
    out.extend_from_slice(b"Via: ");
    out.extend_from_slice(&via.unwrap_or_default());
    out.extend_from_slice(b"\r\n");
    match (body, length) {
        // The length a HEAD answer (or a 304) states is passed on as it was.
        (OutBody::Length, Some(n)) | (OutBody::None, Some(n)) => {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(n.split(|&b| b == b',').next().unwrap_or(n).trim_ascii());
            out.extend_from_slice(b"\r\n");
        }
        (OutBody::Chunked, _) => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        _ => {}
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if minor == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `part` to `out` as it goes to the client: raw, or as one chunk.
pub fn write_part(out: &mut Vec<u8>, part: &[u8], body: OutBody) {
    match body {
        OutBody::Chunked if !part.is_empty() => {
            let _ = write!(out, "{:x}\r\n", part.len());
            out.extend_from_slice(part);
            out.extend_from_slice(b"\r\n");
        }
        OutBody::Length | OutBody::UntilClose => out.extend_from_slice(part),
        _ => {}
    }
}

/// The proxy's own answer (an upstream that failed: 502, 504, 503).
pub fn write_error(out: &mut Vec<u8>, status: u16, close: bool) {
    let reason = match status {
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        400 => "Bad Request",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    };
    let body = format!("{status} {reason}\n");
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nVia: 1.1 {VIA}\r\n{}\r\n{body}",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
}
