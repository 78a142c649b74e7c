//! The grammar of a request head and its framing rules, in one place: the request line
//! (RFC 9112 §3), the target (RFC 9112 §3.2, RFC 3986), field lines (RFC 9112 §5, RFC
//! 9110 §5.5), `Host` (RFC 9110 §7.2), and how the body is framed (RFC 9112 §6). The
//! same field-line grammar checks chunk trailers, and the chunk-size line is here too.
//!
//! One rule for line endings: CRLF ends every line. A lone LF or a lone CR anywhere is
//! a 400 (RFC 9112 §2.2 lets a server choose; accepting bare LF is how a server and a
//! proxy in front of it come to disagree on where a header, and so a request, ends).
//!
//! Written by hand rather than with httparse, which is lenient where this must be
//! strict (bare LF, `HTTP/1.2`, extra parts in the request line answered as a version
//! error, target characters outside RFC 3986) and cannot check a head as it arrives.
//! The fuzz targets in `fuzz/` compare it with hyper's parser.

use super::request::{Method, Request, Span, CONNECT, OPTIONS, STANDARD_METHODS};
use super::{HttpConfig, MAX_HEAD_LIMIT};
use std::ops::Range;

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

const BAD: Refused = Refused(400);

// Character classes, one bit each, in one table.
const TOKEN: u8 = 1; // tchar (RFC 9110 §5.6.2)
const VALUE: u8 = 2; // field-vchar, SP, HTAB, obs-text (RFC 9110 §5.5)
const PCHAR: u8 = 4; // RFC 3986 pchar less pct-encoded: unreserved, sub-delims, ':', '@'
const HOST: u8 = 8; // RFC 3986 reg-name less pct-encoded: unreserved, sub-delims
const HEX: u8 = 16;
const DIGIT: u8 = 32;
const PATH: u8 = 64; // what an absolute-path is made of, less pct-encoded: pchar and '/'

static CLASS: [u8; 256] = classes();

const fn classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let alpha = c.is_ascii_alphabetic();
        let digit = c.is_ascii_digit();
        let unreserved = alpha || digit || matches!(c, b'-' | b'.' | b'_' | b'~');
        let sub_delim = matches!(
            c,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
        );
        let mut v = 0;
        if alpha
            || digit
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            )
        {
            v |= TOKEN;
        }
        if c == b'\t' || (c >= 0x20 && c != 0x7f) {
            v |= VALUE;
        }
        if unreserved || sub_delim || c == b':' || c == b'@' {
            v |= PCHAR;
        }
        if unreserved || sub_delim || c == b':' || c == b'@' || c == b'/' {
            v |= PATH;
        }
        if unreserved || sub_delim {
            v |= HOST;
        }
        if c.is_ascii_hexdigit() {
            v |= HEX;
        }
        if digit {
            v |= DIGIT;
        }
        t[b] = v;
        b += 1;
    }
    t
}

fn is(c: u8, class: u8) -> bool {
    CLASS[usize::from(c)] & class != 0
}

/// Whether `c` is a `tchar` (RFC 9110 §5.6.2): what methods and field names are made of.
pub(crate) fn is_tchar(c: u8) -> bool {
    is(c, TOKEN)
}

/// Where the run of `class` bytes starting at `from` ends.
#[inline]
fn run(b: &[u8], from: usize, class: u8) -> usize {
    match b.get(from..) {
        Some(rest) => {
            from + rest
                .iter()
                .position(|&c| !is(c, class))
                .unwrap_or(rest.len())
        }
        None => from,
    }
}

/// Where the run of field-value bytes starting at `from` ends: eight bytes at a time,
/// the first control character among them found with a mask (a CR ends a value; long
/// values such as cookies are common), HTAB being the one control character a value
/// may have.
#[inline(always)]
fn value_end(b: &[u8], from: usize) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while i + 8 <= b.len() {
        let w = u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        // A byte below 0x20, or 0x7f: the ASCII ones (high bit clear) whose value
        // plus 0x60 does not reach 0x80, or plus 1 does. (No carry crosses a byte.)
        let ascii = !w & HI;
        let low = (w & !HI).wrapping_add(LO * 0x60) & ascii;
        let del = (w & !HI).wrapping_add(LO) & ascii;
        let control = (!low & ascii) | (del & ascii);
        if control == 0 {
            i += 8;
            continue;
        }
        let at = i + (control.trailing_zeros() / 8) as usize;
        if b[at] != b'\t' {
            return at;
        }
        i = at + 1;
    }
    run(b, i, VALUE)
}

/// Whether `name`, a token, is `lower` (lowercase letters and `-`) in any case. A
/// token byte with bit 0x20 set is one of those only if it is that letter in either
/// case (or `-`), so one OR per byte makes the comparison, eight bytes at a time.
fn name_is(name: &[u8], lower: &[u8]) -> bool {
    const CASE: u64 = 0x2020_2020_2020_2020;
    let n = name.len();
    if n != lower.len() {
        return false;
    }
    let word = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8"));
    let half = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4"));
    match n {
        0..=3 => name.iter().zip(lower).all(|(a, b)| a | 0x20 == *b),
        4..=8 => {
            // (The two halves overlap when shorter than eight.)
            half(name, 0) | CASE as u32 == half(lower, 0)
                && half(name, n - 4) | CASE as u32 == half(lower, n - 4)
        }
        _ => {
            let mut i = 0;
            while i + 8 < n {
                if word(name, i) | CASE != word(lower, i) {
                    return false;
                }
                i += 8;
            }
            word(name, n - 8) | CASE == word(lower, n - 8)
        }
    }
}

fn trim_ows(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|&c| c != b' ' && c != b'\t')
        .unwrap_or(b.len());
    let end = b[start..]
        .iter()
        .rposition(|&c| c != b' ' && c != b'\t')
        .map_or(start, |e| start + e + 1);
    &b[start..end]
}

/// The elements of a comma-separated list (RFC 9110 §5.6.1), OWS trimmed, empty ones
/// included (callers decide).
fn list(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&c| c == b',').map(trim_ows)
}

/// A `pct-encoded` at `b[i]` (`%` then two hex digits)?
fn pct(b: &[u8], i: usize) -> bool {
    i + 2 < b.len() && is(b[i + 1], HEX) && is(b[i + 2], HEX)
}

/// One field line (`name ":" OWS value OWS CRLF`) starting at `b[at]`: the name, the
/// value (OWS trimmed) and where the next line starts. No whitespace before the colon,
/// no obs-fold, no control character in the value (RFC 9112 §5.1, §5.2).
#[inline(always)]
pub(crate) fn field_line(
    b: &[u8],
    at: usize,
) -> Result<(Range<usize>, Range<usize>, usize), Refused> {
    let name_end = run(b, at, TOKEN);
    if name_end == at || b.get(name_end) != Some(&b':') {
        return Err(BAD);
    }
    let ows = |c: u8| c == b' ' || c == b'\t';
    let mut v = name_end + 1;
    while b.get(v).is_some_and(|&c| ows(c)) {
        v += 1;
    }
    let end = value_end(b, v);
    if b.get(end..end + 2) != Some(b"\r\n") {
        return Err(BAD);
    }
    let mut ve = end;
    while ve > v && ows(b[ve - 1]) {
        ve -= 1;
    }
    Ok((at..name_end, v..ve, end + 2))
}

/// Checks a field section (`*( field-line CRLF ) CRLF`, the whole of `b`): chunk
/// trailers, which are validated and then dropped.
pub(crate) fn check_fields(b: &[u8], max_fields: usize) -> Result<(), Refused> {
    let mut at = 0;
    let mut n = 0;
    while b.get(at..at + 2) != Some(b"\r\n") {
        let (_, _, next) = field_line(b, at)?;
        n += 1;
        if n > max_fields {
            return Err(Refused(431));
        }
        at = next;
    }
    if at + 2 == b.len() {
        Ok(())
    } else {
        Err(BAD)
    }
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2; RFC 3986 §3.2.2): an IP literal in brackets
/// or a reg-name (which covers IPv4), then digits after a colon. Empty is valid.
#[inline(always)]
fn valid_host(h: &[u8]) -> bool {
    // The usual one: a name (or an IPv4 address) alone.
    h.iter().all(|&c| is(c, HOST)) || valid_host_with_port(h)
}

/// [`valid_host`] for a host with a port, an IP literal or a pct-encoded byte.
fn valid_host_with_port(h: &[u8]) -> bool {
    let mut i = 0;
    if h.first() == Some(&b'[') {
        let Some(close) = h.iter().position(|&c| c == b']') else {
            return false;
        };
        if close == 1 || !h[1..close].iter().all(|&c| is(c, HOST) || c == b':') {
            return false;
        }
        i = close + 1;
    } else {
        while i < h.len() && h[i] != b':' {
            if is(h[i], HOST) {
                i += 1;
            } else if h[i] == b'%' && pct(h, i) {
                i += 3;
            } else {
                return false;
            }
        }
    }
    match h.get(i) {
        None => true,
        Some(b':') => h[i + 1..].iter().all(|&c| is(c, DIGIT)),
        Some(_) => false,
    }
}

/// Path and query of a target (relative to its start; an empty path means "/").
struct Target {
    path: Range<usize>,
    query: Range<usize>,
}

/// `absolute-path [ "?" query ]` from `t[from]` (RFC 3986 §3.3, §3.4): pchars, `/`,
/// pct-encoded, and `?` in the query. Anything else, a fragment (`#`) among them, is
/// refused.
fn path_and_query(t: &[u8], from: usize) -> Result<Target, Refused> {
    let mut i = from;
    let mut q = None;
    while i < t.len() {
        let c = t[i];
        if is(c, PATH) {
            i += 1;
        } else if c == b'%' && pct(t, i) {
            i += 3;
        } else if c == b'?' {
            if q.is_none() {
                q = Some(i);
            }
            i += 1;
        } else {
            return Err(BAD);
        }
    }
    Ok(match q {
        Some(q) => Target {
            path: from..q,
            query: q + 1..t.len(),
        },
        None => Target {
            path: from..t.len(),
            query: t.len()..t.len(),
        },
    })
}

/// The request target (RFC 9112 §3.2): origin-form, absolute-form (`http` or `https`,
/// any case; authority without userinfo), or `*` for OPTIONS. Authority-form (CONNECT,
/// refused before this) is not served.
fn target(t: &[u8], options: bool) -> Result<Target, Refused> {
    match t.first() {
        Some(b'/') => path_and_query(t, 0),
        Some(b'*') if t.len() == 1 && options => Ok(Target {
            path: 0..1,
            query: 1..1,
        }),
        Some(c) if c.is_ascii_alphabetic() => {
            let colon = t.iter().position(|&c| c == b':').ok_or(BAD)?;
            let scheme = &t[..colon];
            if !(scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")) {
                return Err(BAD);
            }
            let auth = colon + 3;
            if t.get(colon..auth) != Some(b"://") {
                return Err(BAD);
            }
            let auth_end = t[auth..]
                .iter()
                .position(|&c| matches!(c, b'/' | b'?' | b'#'))
                .map_or(t.len(), |e| auth + e);
            let host = &t[auth..auth_end];
            // A host is required in an http(s) URI (RFC 9110 §4.2.1), userinfo is not
            // allowed (RFC 9110 §4.2.4): `@` is not a host character, so both show here.
            if host.is_empty() || host[0] == b':' || !valid_host(host) {
                return Err(BAD);
            }
            path_and_query(t, auth_end)
        }
        _ => Err(BAD),
    }
}

/// What the fields say about framing and the connection.
#[derive(Default)]
struct Fields {
    hosts: u8,
    length: Option<u64>,
    /// Transfer codings seen, in order: how many, whether the last is chunked, and
    /// whether chunked came earlier than last (or twice).
    codings: u32,
    last_chunked: bool,
    chunked_early: bool,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
}

impl Fields {
    #[inline(always)]
    fn take(&mut self, name: &[u8], value: &[u8]) -> Result<(), Refused> {
        match name.len() {
            4 if name_is(name, b"host") => {
                self.hosts += 1;
                if self.hosts > 1 || !valid_host(value) {
                    return Err(BAD);
                }
            }
            14 if name_is(name, b"content-length") => {
                // A list (or repeated field) is accepted only if every value is the
                // same valid number (RFC 9112 §6.3).
                for v in list(value) {
                    let n = decimal(v).ok_or(BAD)?;
                    if self.length.is_some_and(|m| m != n) {
                        return Err(BAD);
                    }
                    self.length = Some(n);
                }
            }
            17 if name_is(name, b"transfer-encoding") => {
                // Codings are a list, over every Transfer-Encoding field; empty
                // elements do not count (RFC 9110 §5.6.1).
                for coding in list(value).filter(|c| !c.is_empty()) {
                    let name_end = run(coding, 0, TOKEN);
                    if name_end == 0 {
                        return Err(BAD);
                    }
                    if name_end < coding.len()
                        && trim_ows(&coding[name_end..]).first() != Some(&b';')
                    {
                        return Err(BAD); // not `token *( OWS ";" OWS parameter )`
                    }
                    if self.last_chunked {
                        self.chunked_early = true;
                    }
                    self.last_chunked = coding.eq_ignore_ascii_case(b"chunked");
                    self.codings += 1;
                }
                if self.codings == 0 {
                    return Err(BAD); // a Transfer-Encoding naming no coding
                }
            }
            10 if name_is(name, b"connection") => {
                for t in list(value) {
                    self.close |= t.eq_ignore_ascii_case(b"close");
                    self.keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            6 if name_is(name, b"expect") => {
                self.expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
            }
            _ => {}
        }
        Ok(())
    }

    /// The framing of the body (RFC 9112 §6.1, §6.3).
    fn body(&self, minor_version: u8) -> Result<BodyKind, Refused> {
        if self.codings == 0 {
            return Ok(match self.length {
                None | Some(0) => BodyKind::None,
                Some(n) => BodyKind::Length(n),
            });
        }
        // Transfer-Encoding in an HTTP/1.0 request is faulty framing; with a
        // Content-Length too, the two could be read differently; chunked must be the
        // final coding, and applied once.
        if minor_version == 0 || self.length.is_some() || !self.last_chunked || self.chunked_early {
            return Err(BAD);
        }
        if self.codings > 1 {
            return Err(Refused(501)); // another coding under chunked: not implemented
        }
        Ok(BodyKind::Chunked)
    }
}

/// A head the grammar accepted: where its parts lie (offsets from its start) and what it
/// says about the body and the connection. Small and `Copy`: the request is made from
/// it and the head's bytes only once the head is known to be whole and valid
/// ([`Parsed::into_head`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parsed {
    /// The head's length, through its empty line.
    pub len: usize,
    method: Method,
    /// Empty: an absolute-form target without a path, which means `/`.
    path: Span,
    query: Span,
    minor_version: u8,
    pub body: BodyKind,
    keep_alive: bool,
    expect_continue: bool,
}

impl Parsed {
    /// The request, over a copy of the head (the first [`len`](Self::len) bytes of
    /// `b`, the bytes it was parsed from).
    pub(crate) fn into_head(self, b: &[u8]) -> Head {
        let bytes = crate::buffer::small_copy(&b[..self.len]);
        Head {
            req: Request::from_head(
                bytes,
                self.method,
                self.path,
                self.query,
                self.minor_version,
            ),
            body: self.body,
            keep_alive: self.keep_alive,
            expect_continue: self.expect_continue,
        }
    }
}

/// Parses the head at the front of `b`, in one pass: request line, field lines, the
/// empty line. `b` may be exactly a head or go on past it (the unread bytes of a
/// stream): nothing after the empty line is looked at. Bytes that end before the head
/// does are refused (400) like any other malformed head; the decoder tells the two
/// apart by finding the head's end first. A refusal is the first rule broken, in the
/// order of the checks below.
pub(crate) fn parse_head(b: &[u8], cfg: &HttpConfig) -> Result<Parsed, Refused> {
    // Request line: method SP request-target SP HTTP-version CRLF, one SP each.
    let (method, t_start) = if b.starts_with(b"GET ") {
        (Method::Standard(0), 4)
    } else {
        let end = run(b, 0, TOKEN);
        if end == 0 || b.get(end) != Some(&b' ') {
            return Err(BAD);
        }
        let m = match standard_method(&b[..end]) {
            Some(i) => Method::Standard(i),
            None => Method::Sent(Span::of(0..end)),
        };
        (m, end + 1)
    };
    // The target ends at the first SP, CR or LF. An origin-form target (the usual one)
    // is checked on the way (`None`: it breaks RFC 3986, refused after the checks
    // that come first); another form is checked once its end is known.
    let (t_end, origin) = if b.get(t_start) == Some(&b'/') {
        origin_form(b, t_start)?
    } else {
        let len = b[t_start..]
            .iter()
            .position(|&c| c == b' ' || c == b'\r' || c == b'\n')
            .ok_or(BAD)?;
        (t_start + len, None)
    };
    if b[t_end] != b' ' || t_end == t_start {
        return Err(BAD);
    }
    let v = t_end + 1;
    let version = b.get(v..v + 10).ok_or(BAD)?;
    if &version[..5] != b"HTTP/"
        || !version[5].is_ascii_digit()
        || version[6] != b'.'
        || !version[7].is_ascii_digit()
        || &version[8..] != b"\r\n"
    {
        return Err(BAD);
    }
    if t_end - t_start > cfg.max_uri {
        return Err(Refused(414));
    }
    if version[5] != b'1' {
        return Err(Refused(505));
    }
    // HTTP/1.2 and later minors are served as 1.1 (RFC 9110 §2.5).
    let minor_version = u8::from(version[7] != b'0');
    if matches!(method, Method::Standard(CONNECT)) {
        // CONNECT's target is the authority-form and only that (RFC 9112 §3.2.3): with
        // another form the request is malformed, and the authority-form (a tunnel) is
        // not served.
        return Err(BAD);
    }
    let target = match origin {
        Some(t) => t,
        None if b[t_start] == b'/' => return Err(BAD),
        None => {
            let options = matches!(method, Method::Standard(OPTIONS));
            let t = target(&b[t_start..t_end], options)?;
            let shift = |r: Range<usize>| r.start + t_start..r.end + t_start;
            Target {
                path: shift(t.path),
                query: shift(t.query),
            }
        }
    };

    let mut fields = Fields::default();
    let mut count = 0;
    let mut at = v + 10;
    while b.get(at..at + 2) != Some(b"\r\n") {
        let (name, value, next) = field_line(b, at)?;
        if count >= cfg.max_headers {
            return Err(Refused(431));
        }
        count += 1;
        fields.take(&b[name], &b[value])?;
        at = next;
    }
    let len = at + 2;
    if len > MAX_HEAD_LIMIT {
        return Err(Refused(431)); // (offsets are 16-bit; the decoder never passes more)
    }
    if minor_version == 1 && fields.hosts == 0 {
        return Err(BAD); // RFC 9112 §3.2: a 1.1 request without Host
    }
    let body = fields.body(minor_version)?;
    if let BodyKind::Length(n) = body {
        if n > cfg.max_body as u64 {
            return Err(Refused(413));
        }
    }
    let keep_alive = if minor_version == 1 {
        !fields.close
    } else {
        fields.keep_alive && !fields.close
    };
    Ok(Parsed {
        len,
        method,
        path: Span::of(target.path),
        query: Span::of(target.query),
        minor_version,
        body,
        keep_alive,
        expect_continue: fields.expect_continue && minor_version == 1 && body != BodyKind::None,
    })
}

/// An origin-form target (`absolute-path [ "?" query ]`, RFC 3986 §3.3, §3.4) from
/// `b[from]` (a `/`) to the first SP, CR or LF: where it ends, and its path and query
/// (`None` if it has a byte RFC 3986 does not allow: a fragment, a bad `%`, ...). One
/// class lookup per byte.
#[inline(always)]
fn origin_form(b: &[u8], from: usize) -> Result<(usize, Option<Target>), Refused> {
    let mut i = from;
    let mut q = None;
    let mut valid = true;
    loop {
        let Some(&c) = b.get(i) else {
            return Err(BAD); // (the end of the bytes, not of the target)
        };
        if is(c, PATH) {
            i += 1;
            continue;
        }
        match c {
            b' ' | b'\r' | b'\n' => break,
            b'?' => {
                q.get_or_insert(i);
                i += 1;
            }
            b'%' if pct(b, i) => i += 3,
            _ => {
                valid = false;
                i += 1;
            }
        }
    }
    let target = match q {
        Some(q) => Target {
            path: from..q,
            query: q + 1..i,
        },
        None => Target {
            path: from..i,
            query: i..i,
        },
    };
    Ok((i, valid.then_some(target)))
}

/// The index in [`STANDARD_METHODS`] of `m`, if it is one of them: a match the compiler
/// turns into a few compares of the length and the bytes, not a scan of the table with
/// a call to memcmp for each.
fn standard_method(m: &[u8]) -> Option<u8> {
    let i = match m {
        b"GET" => 0,
        b"POST" => 1,
        b"HEAD" => 2,
        b"PUT" => 3,
        b"DELETE" => 4,
        b"PATCH" => 5,
        b"OPTIONS" => 6,
        b"CONNECT" => 7,
        b"TRACE" => 8,
        _ => return None,
    };
    debug_assert_eq!(STANDARD_METHODS[i].as_bytes(), m);
    Some(i as u8)
}

/// Longest chunk-size line (size and extensions), bytes.
pub(crate) const MAX_CHUNK_LINE: usize = 4096;

/// A chunk-size line without its CRLF: `1*HEXDIG *( BWS ";" BWS ext-name [ BWS "=" BWS
/// ext-val ] )`, names tokens and values tokens or quoted strings (RFC 9112 §7.1.1).
/// Whitespace only before a `;` or around a `=`: none at the end of the line (`5 `),
/// which readers disagree on. Returns the size; `None` if malformed or over `u64`.
pub(crate) fn chunk_size(line: &[u8]) -> Option<u64> {
    let hex_end = run(line, 0, HEX);
    if hex_end == 0 {
        return None;
    }
    let mut size: u64 = 0;
    for &c in &line[..hex_end] {
        let d = (c as char).to_digit(16)? as u64;
        size = size.checked_mul(16)?.checked_add(d)?;
    }
    let ws = |i: usize| run_ws(line, i);
    let mut i = hex_end;
    while i < line.len() {
        // BWS ";" BWS ext-name
        i = ws(i);
        if line.get(i) != Some(&b';') {
            return None;
        }
        i = ws(i + 1);
        let name_end = run(line, i, TOKEN);
        if name_end == i {
            return None;
        }
        i = name_end;
        // [ BWS "=" BWS ext-val ]: the whitespace belongs to the `=` only if one follows.
        let eq = ws(i);
        if line.get(eq) == Some(&b'=') {
            i = ws(eq + 1);
            i = if line.get(i) == Some(&b'"') {
                quoted_string_end(line, i)?
            } else {
                let e = run(line, i, TOKEN);
                if e == i {
                    return None;
                }
                e
            };
        }
    }
    Some(size)
}

/// `1*DIGIT` as a number; `None` if empty, not digits, or over `u64`.
pub(crate) fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(|&c| is(c, DIGIT)) {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn run_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    i
}

/// Where the quoted-string starting at `b[at]` (a `"`) ends (just past its closing
/// quote), RFC 9110 §5.6.4.
fn quoted_string_end(b: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    while i < b.len() {
        match b[i] {
            b'"' => return Some(i + 1),
            b'\\' => {
                let c = *b.get(i + 1)?;
                if !is(c, VALUE) {
                    return None;
                }
                i += 2;
            }
            c if is(c, VALUE) => i += 1,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests;
