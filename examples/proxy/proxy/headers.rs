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

/// `Via`'s entry for this proxy, by the protocol version it received.
fn via_entry(minor: u8) -> &'static [u8] {
    if minor == 0 {
        b"1.0 coreloop"
    } else {
        b"1.1 coreloop"
    }
}

/// The request to send upstream for `req`, from a client at `client_ip`: its method
/// and target (after `origin`, `https://name` for a TLS upstream), its end-to-end fields (and `Expect`, which the proxy answers itself,
/// left out), `X-Forwarded-For` with the client appended, `X-Forwarded-Proto`, `Via`.
/// `xff` and `via` are buffers to put those values together in (kept by the caller:
/// no allocation per request).
pub fn upstream_request(
    req: &Request,
    origin: &str,
    client_ip: &str,
    xff: &mut Vec<u8>,
    via: &mut Vec<u8>,
) -> ClientRequest {
    let mut target = String::with_capacity(origin.len() + req.path().len() + req.query().len() + 1);
    target.push_str(origin);
    target.push_str(req.path());
    if !req.query().is_empty() {
        target.push('?');
        target.push_str(req.query());
    }
    let mut out = ClientRequest::new(req.method(), target);
    let named = connection_tokens(req.headers());
    xff.clear();
    via.clear();
    for (name, value) in req.headers() {
        if hop_by_hop(name, &named) || name.eq_ignore_ascii_case("expect") {
            continue;
        }
        let list = if name.eq_ignore_ascii_case("x-forwarded-for") {
            &mut *xff
        } else if name.eq_ignore_ascii_case("via") {
            &mut *via
        } else {
            if !name.eq_ignore_ascii_case("x-forwarded-proto") {
                out = out.header(name, value);
            }
            continue;
        };
        list.extend_from_slice(value);
        list.extend_from_slice(b", ");
    }
    xff.extend_from_slice(client_ip.as_bytes());
    via.extend_from_slice(via_entry(req.minor_version()));
    out.header("X-Forwarded-For", &xff[..])
        .header("X-Forwarded-Proto", "http")
        .header("Via", &via[..])
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
/// fields, `Via` added, the framing of `body`, and `Connection: close` if the
/// connection closes after it (`keep-alive` to an HTTP/1.0 client if it does not).
///
/// One pass over the fields: the upstream's `Via` lines are kept and this proxy's is
/// another line after them (a list split over lines is the same list, RFC 9110 §5.3);
/// fields a `Connection` field names (rare) are taken out again after the pass.
pub fn write_response_head(
    out: &mut Vec<u8>,
    resp: &ClientResponse,
    body: OutBody,
    minor: u8,
    close: bool,
) {
    let head = resp.head();
    let status = head.status();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(head.reason().as_bytes());
    out.extend_from_slice(b"\r\n");
    let fields_at = out.len();
    let mut length: Option<&[u8]> = None;
    let mut named = false;
    for (name, value) in resp.headers() {
        if name.eq_ignore_ascii_case("content-length") {
            length.get_or_insert(value);
        } else if name.eq_ignore_ascii_case("connection") {
            named |= value
                .split(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .any(|t| {
                    !t.eq_ignore_ascii_case(b"close") && !t.eq_ignore_ascii_case(b"keep-alive")
                });
        }
        if hop_by_hop(name, &[]) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if named {
        let tokens = connection_tokens(resp.headers());
        remove_named(out, fields_at, &tokens);
    }
    out.extend_from_slice(b"Via: ");
    out.extend_from_slice(via_entry(head.minor_version()));
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

/// Takes the field lines (written from `from` on, `name: value` CRLF each) whose name is
/// one of `tokens` out of `out`.
fn remove_named(out: &mut Vec<u8>, from: usize, tokens: &[&[u8]]) {
    let lines = out.split_off(from);
    for line in lines.split_inclusive(|&b| b == b'\n') {
        let name = line.split(|&b| b == b':').next().unwrap_or(b"");
        if !tokens.iter().any(|t| t.eq_ignore_ascii_case(name)) {
            out.extend_from_slice(line);
        }
    }
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
