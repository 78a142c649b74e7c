//! RESP2, the Redis protocol: commands parsed in place from the read buffer, replies
//! written straight into the stream's write buffer.
//!
//! A command is either a multibulk (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, what redis-cli
//! and redis-benchmark send) or an inline line (`PING\r\n`, what telnet users and
//! redis-benchmark's `PING_INLINE` send). The parser records where each argument lies
//! (offsets from the command's first byte); nothing is copied or allocated per command.
//!
//! It is resumable: a command cut by the end of the buffer keeps its progress in
//! [`Parser`], so a large command that arrives in many reads is scanned once, not once
//! per read, and a bulk whose bytes have not all arrived is not looked at again until
//! they have. A bulk's declared length is checked against the maximum before anything
//! is done with it, and nothing is allocated from it: the buffer grows only as bytes
//! arrive.
//!
//! Errors carry Redis's own wording (networking.c), so clients see what they would see
//! from Redis.

use std::fmt;

/// Longest inline command, and longest `*N` / `$N` line (Redis's PROTO_INLINE_MAX_SIZE).
pub const INLINE_MAX: usize = 64 * 1024;

/// Why the bytes are not RESP; the connection answers `-ERR Protocol error: ...` and
/// closes, as Redis does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtoError {
    TooBigInline,
    TooBigMbulkCount,
    InvalidMultibulkLength,
    TooBigBulkCount,
    ExpectedDollar(u8),
    InvalidBulkLength,
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::TooBigInline => f.write_str("too big inline request"),
            ProtoError::TooBigMbulkCount => f.write_str("too big mbulk count string"),
            ProtoError::InvalidMultibulkLength => f.write_str("invalid multibulk length"),
            ProtoError::TooBigBulkCount => f.write_str("too big bulk count string"),
            ProtoError::ExpectedDollar(c) => write!(f, "expected '$', got '{}'", *c as char),
            ProtoError::InvalidBulkLength => f.write_str("invalid bulk length"),
        }
    }
}

/// What [`Parser::parse`] found at the start of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole command of this many bytes; its arguments are in [`Parser::args`]
    /// (none: an empty command, `*0` or a blank line, which is skipped).
    Command(usize),
    /// More bytes are needed; the progress is kept for the next call with the same
    /// buffer start.
    Partial,
    /// Not RESP.
    Error(ProtoError),
}

/// A resumable RESP parser; one per connection.
#[derive(Default)]
pub struct Parser {
    /// Argument spans, from the command's first byte.
    args: Vec<(usize, usize)>,
    /// Bytes of the current command already parsed (into `args`).
    pos: usize,
    /// Arguments still expected by the multibulk being parsed (`None`: not started).
    left: Option<u64>,
    /// Don't look again until the buffer holds this many bytes.
    need: usize,
}

impl Parser {
    /// The spans of the last whole command's arguments.
    pub fn args(&self) -> &[(usize, usize)] {
        &self.args
    }

    /// Forgets the command in progress.
    pub fn reset(&mut self) {
        self.args.clear();
        self.pos = 0;
        self.left = None;
        self.need = 0;
    }

    /// Parses the command at the start of `buf` (the same start as in the previous call
    /// if that returned `Partial`), with bulks of at most `max_bulk` bytes.
    pub fn parse(&mut self, buf: &[u8], max_bulk: usize) -> Parsed {
        if buf.len() < self.need {
            return Parsed::Partial;
        }
        if self.left.is_none() && buf.first() != Some(&b'*') {
            return self.inline(buf);
        }
        let out = self.multibulk(buf, max_bulk);
        if !matches!(out, Parsed::Partial) {
            self.pos = 0;
            self.left = None;
            self.need = 0;
        }
        out
    }

    fn inline(&mut self, buf: &[u8]) -> Parsed {
        self.args.clear();
        let Some(nl) = memchr::memchr(b'\n', buf) else {
            if buf.len() > INLINE_MAX {
                return Parsed::Error(ProtoError::TooBigInline);
            }
            self.need = buf.len() + 1;
            return Parsed::Partial;
        };
        self.need = 0;
        let end = if nl > 0 && buf[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        let mut i = 0;
        while i < end {
            while i < end && buf[i].is_ascii_whitespace() {
                i += 1;
            }
            let start = i;
            while i < end && !buf[i].is_ascii_whitespace() {
                i += 1;
            }
            if i > start {
                self.args.push((start, i));
            }
        }
        Parsed::Command(nl + 1)
    }

    fn multibulk(&mut self, buf: &[u8], max_bulk: usize) -> Parsed {
        if self.left.is_none() {
            self.args.clear();
            let (n, next) = match line_number(buf, 1) {
                Line::Partial => return self.partial(buf, ProtoError::TooBigMbulkCount),
                Line::Bad => return Parsed::Error(ProtoError::InvalidMultibulkLength),
                Line::Number(n, next) => (n, next),
            };
            if n > i64::from(i32::MAX) {
                return Parsed::Error(ProtoError::InvalidMultibulkLength);
            }
            if n <= 0 {
                return Parsed::Command(next); // empty: skipped, as Redis does
            }
            self.left = Some(n as u64);
            self.pos = next;
        }
        while self.left > Some(0) {
            let at = self.pos;
            match buf.get(at) {
                None => return self.wait(at + 1),
                Some(b'$') => {}
                Some(&c) => return Parsed::Error(ProtoError::ExpectedDollar(c)),
            }
            let (len, start) = match line_number(&buf[at..], 1) {
                Line::Partial => return self.partial(&buf[at..], ProtoError::TooBigBulkCount),
                Line::Bad => return Parsed::Error(ProtoError::InvalidBulkLength),
                Line::Number(n, next) => (n, at + next),
            };
            if len < 0 || len as u64 > max_bulk as u64 {
                return Parsed::Error(ProtoError::InvalidBulkLength);
            }
            let end = start + len as usize;
            // The bulk and its CRLF (not checked, as Redis does not).
            if buf.len() < end + 2 {
                return self.wait(end + 2);
            }
            self.args.push((start, end));
            self.pos = end + 2;
            self.left = self.left.map(|l| l - 1);
        }
        Parsed::Command(self.pos)
    }

    fn wait(&mut self, need: usize) -> Parsed {
        self.need = need;
        Parsed::Partial
    }

    /// A `*N`/`$N` line with no CRLF yet: wait, unless it is already too long.
    fn partial(&mut self, line: &[u8], too_big: ProtoError) -> Parsed {
        if line.len() > INLINE_MAX {
            return Parsed::Error(too_big);
        }
        self.need = 0;
        Parsed::Partial
    }
}

enum Line {
    Partial,
    Bad,
    /// The number, and where the next line starts.
    Number(i64, usize),
}

/// The decimal number from `from` up to the CR of a CRLF-ended line.
fn line_number(buf: &[u8], from: usize) -> Line {
    let Some(cr) = memchr::memchr(b'\r', &buf[from.min(buf.len())..]).map(|i| i + from) else {
        return Line::Partial;
    };
    if cr + 1 >= buf.len() {
        return Line::Partial;
    }
    match parse_i64(&buf[from..cr]) {
        Some(n) => Line::Number(n, cr + 2),
        None => Line::Bad,
    }
}

/// A strict decimal i64, as Redis's string2ll: optional `-`, digits, no leading zeros
/// (but `0`), no spaces, no `+`, in range.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 20 || (digits[0] == b'0' && s.len() > 1) {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        v = v.checked_mul(10)?;
        v = if neg {
            v.checked_sub(d)?
        } else {
            v.checked_add(d)?
        };
    }
    Some(v)
}

// ---------------------------------------------------------------------- replies

/// `+OK`.
pub const OK: &[u8] = b"+OK\r\n";
/// The nil bulk.
pub const NIL: &[u8] = b"$-1\r\n";

/// `$len\r\nbytes\r\n`.
pub fn bulk(out: &mut Vec<u8>, v: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(itoa::Buffer::new().format(v.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(v);
    out.extend_from_slice(b"\r\n");
}

/// A bulk, or nil.
pub fn opt_bulk(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) => bulk(out, v),
        None => out.extend_from_slice(NIL),
    }
}

/// `:n`.
pub fn int(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `*n` (the elements follow).
pub fn array(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `-ERR msg`, with CR and LF made spaces (as Redis does), so a message that quotes
/// client bytes cannot break the reply's framing.
pub fn error(out: &mut Vec<u8>, msg: &str) {
    out.extend_from_slice(b"-ERR ");
    out.extend(
        msg.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8]) -> (Parsed, Vec<Vec<u8>>) {
        let mut p = Parser::default();
        let r = p.parse(bytes, 1024);
        let args = p
            .args()
            .iter()
            .map(|&(a, b)| bytes[a..b].to_vec())
            .collect();
        (r, args)
    }

    #[test]
    fn multibulk_and_inline_commands_parse_to_their_arguments() {
        let (r, a) = parse_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nrest");
        assert_eq!(r, Parsed::Command(20));
        assert_eq!(a, vec![b"GET".to_vec(), b"k".to_vec()]);
        let (r, a) = parse_all(b"  SET  a   b\r\n");
        assert_eq!(r, Parsed::Command(14));
        assert_eq!(a, vec![b"SET".to_vec(), b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(parse_all(b"*0\r\n").0, Parsed::Command(4));
    }

    #[test]
    fn a_command_cut_anywhere_resumes_to_the_same_result() {
        let whole = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
        for cut in 0..whole.len() {
            let mut p = Parser::default();
            let r1 = p.parse(&whole[..cut], 1024);
            assert_eq!(r1, Parsed::Partial, "cut at {cut}");
            assert_eq!(p.parse(whole, 1024), Parsed::Command(whole.len()));
            assert_eq!(p.args().len(), 3);
        }
    }

    #[test]
    fn bad_bytes_get_rediss_protocol_errors() {
        let e = |b: &[u8]| parse_all(b).0;
        use ProtoError::*;
        assert_eq!(e(b"*x\r\n"), Parsed::Error(InvalidMultibulkLength));
        assert_eq!(e(b"*1\r\nx"), Parsed::Error(ExpectedDollar(b'x')));
        assert_eq!(e(b"*1\r\n$-5\r\n"), Parsed::Error(InvalidBulkLength));
        assert_eq!(e(b"*1\r\n$1025\r\n"), Parsed::Error(InvalidBulkLength));
        assert_eq!(e(&[b'a'; INLINE_MAX + 1]), Parsed::Error(TooBigInline));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"012"), None);
        assert_eq!(parse_i64(b"9223372036854775808"), None);
    }
}
