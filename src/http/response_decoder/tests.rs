//! Table tests of the response grammar and framing rules, and split invariance.
use super::*;

/// Decodes `buf` whole: the head's status and framing, the body, and whether the
/// response ended (`eof`: the connection closes after `buf`).
fn decode_all(
    buf: &[u8],
    head_request: bool,
    eof: bool,
) -> Result<(u16, BodyLength, bool, Vec<u8>, bool), String> {
    let mut d = ResponseDecoder::new();
    d.answering_head(head_request);
    let mut at = 0;
    let mut head = None;
    let mut body = Vec::new();
    loop {
        let (n, ev) = d.decode(&buf[at..]);
        let here = at;
        at += n;
        match ev {
            ResponseEvent::Head(h) if h.status() < 200 => {}
            ResponseEvent::Head(h) => {
                let none = h.body() == BodyLength::None;
                head = Some((h.status(), h.body(), h.keep_alive()));
                if none {
                    let (s, b, k) = head.unwrap();
                    return Ok((s, b, k, body, true));
                }
            }
            ResponseEvent::Body(r) => body.extend_from_slice(&buf[here..][r]),
            ResponseEvent::End => {
                let (s, b, k) = head.expect("a head before the end");
                return Ok((s, b, k, body, true));
            }
            ResponseEvent::Error(e) => return Err(e.reason().to_string()),
            ResponseEvent::NeedMore => {
                if eof {
                    return match d.eof() {
                        ResponseEvent::End => {
                            let (s, b, k) = head.expect("a head");
                            Ok((s, b, k, body, true))
                        }
                        ResponseEvent::Error(e) => Err(e.reason().to_string()),
                        _ => Err("nothing".into()),
                    };
                }
                let (s, b, k) = head.ok_or("partial head")?;
                return Ok((s, b, k, body, false));
            }
        }
    }
}

#[test]
fn framing_of_responses() {
    use BodyLength::*;
    type Case = (
        &'static str,
        Result<(u16, BodyLength, bool, &'static str), ()>,
    );
    let cases: &[Case] = &[
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", Ok((200, Length(2), true, "hi"))),
        ("HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nhi", Ok((200, Length(2), true, "hi"))),
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi", Ok((200, Length(2), true, "hi"))),
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi", Err(())),
        ("HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nhi", Err(())),
        ("HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nhi", Err(())),
        ("HTTP/1.1 200 OK\r\nContent-Length: 0x2\r\n\r\nhi", Err(())),
        ("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", Err(())),
        ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", Ok((200, Length(0), true, ""))),
        ("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", Ok((200, Length(0), true, ""))),
        ("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", Ok((200, Length(0), true, ""))),
        ("HTTP/1.1 599 Whatever it likes\r\nContent-Length: 0\r\n\r\n", Ok((599, Length(0), true, ""))),
        // Chunked, also over a Content-Length (then not reused).
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n", Ok((200, Chunked, true, "hi"))),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n", Ok((200, Chunked, true, "hi"))),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 7\r\n\r\n2\r\nhi\r\n0\r\n\r\n", Ok((200, Chunked, false, "hi"))),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: 1\r\n\r\n", Ok((200, Chunked, true, "hi"))),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhiX\r\n0\r\n\r\n", Err(())),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nz\r\nhi\r\n0\r\n\r\n", Err(())),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nbad trailer\r\n\r\n", Err(())),
        // Another final coding, or none at all: until the close, never reused.
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc", Ok((200, UntilClose, false, "abc"))),
        ("HTTP/1.1 200 OK\r\n\r\nabc", Ok((200, UntilClose, false, "abc"))),
        ("HTTP/1.0 200 OK\r\n\r\nabc", Ok((200, UntilClose, false, "abc"))),
        ("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", Err(())),
        // No body: 1xx (interim, then the final answer), 204, 304.
        ("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", Ok((200, Length(1), true, "x"))),
        ("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", Ok((204, None, true, ""))),
        ("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", Ok((304, None, true, ""))),
        // Keep-alive by version and Connection.
        ("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", Ok((200, Length(0), false, ""))),
        ("HTTP/1.1 200 OK\r\nConnection: foo, Close\r\nContent-Length: 0\r\n\r\n", Ok((200, Length(0), false, ""))),
        ("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", Ok((200, Length(0), false, ""))),
        ("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", Ok((200, Length(0), true, ""))),
        // Malformed heads.
        ("HTTP/2.0 200 OK\r\n\r\n", Err(())),
        ("HTTP/1.1 20 OK\r\n\r\n", Err(())),
        ("HTTP/1.1 099 OK\r\n\r\n", Err(())),
        ("HTTP/1.1 2000 OK\r\n\r\n", Err(())),
        ("HTTP/1.1  200 OK\r\n\r\n", Err(())),
        ("HTTP/1.1 200 OK\nContent-Length: 0\n\n", Err(())),
        ("HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", Err(())),
        ("HTTP/1.1 200 OK\r\nX: a\r\n folded\r\nContent-Length: 0\r\n\r\n", Err(())),
        ("HTTP/1.1 200 OK\r\n: empty name\r\n\r\n", Err(())),
        ("HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n", Err(())),
        ("HTTP/1.1 200 O\x01K\r\n\r\n", Err(())),
        ("ICY 200 OK\r\n\r\n", Err(())),
        ("hello", Err(())),
    ];
    for (input, want) in cases {
        let got = decode_all(input.as_bytes(), false, true);
        match (want, &got) {
            (Ok((s, b, k, body)), Ok((s2, b2, k2, body2, true))) => assert_eq!(
                (*s, *b, *k, body.as_bytes()),
                (*s2, *b2, *k2, &body2[..]),
                "{input:?}"
            ),
            (Err(()), Err(_)) => {}
            _ => panic!("{input:?}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn a_head_request_has_no_body_whatever_its_head_says() {
    let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n";
    let got = decode_all(buf, true, false).unwrap();
    assert_eq!((got.0, got.1, got.4), (200, BodyLength::None, true));
    // The decoder forgets it after that response: the next one has its body.
    let mut d = ResponseDecoder::new();
    d.answering_head(true);
    let two = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
    let (n, ev) = d.decode(two);
    assert!(matches!(ev, ResponseEvent::Head(h) if h.body() == BodyLength::None));
    let (m, ev) = d.decode(&two[n..]);
    assert!(matches!(ev, ResponseEvent::Head(h) if h.body() == BodyLength::Length(2)));
    assert!(matches!(d.decode(&two[n + m..]).1, ResponseEvent::Body(r) if r == (0..2)));
}

#[test]
fn headers_are_kept_in_order_with_their_values_trimmed() {
    let mut d = ResponseDecoder::new();
    let (n, ev) = d.decode(b"HTTP/1.1 404 Not Found\r\nA: 1\r\nSet-Cookie:  x=y \r\nset-cookie: z\r\nContent-Length: 0\r\n\r\n");
    let ResponseEvent::Head(h) = ev else {
        panic!("{ev:?}")
    };
    assert_eq!(n, h.as_bytes().len());
    assert_eq!(
        (h.status(), &*h.reason(), h.minor_version()),
        (404, "Not Found", 1)
    );
    let all: Vec<(&str, &[u8])> = h.headers().collect();
    assert_eq!(
        all,
        vec![
            ("A", &b"1"[..]),
            ("Set-Cookie", b"x=y"),
            ("set-cookie", b"z"),
            ("Content-Length", b"0")
        ]
    );
    assert_eq!(h.header("SET-COOKIE"), Some("x=y"));
    assert_eq!(h.header("missing"), None);
}

#[test]
fn limits_and_early_refusal() {
    // Garbage fails at its first bytes, without waiting for a head's worth.
    let mut d = ResponseDecoder::new();
    assert!(matches!(d.decode(b"X").1, ResponseEvent::Error(_)));
    let mut d = ResponseDecoder::new();
    assert!(matches!(d.decode(b"HTT").1, ResponseEvent::NeedMore));
    // So does a bare LF, before the head's end could come.
    let mut d = ResponseDecoder::new();
    assert!(matches!(
        d.decode(b"HTTP/1.1 200 OK\nServer: x").1,
        ResponseEvent::Error(_)
    ));
    // A head over the limit fails once the limit has passed, not before.
    let mut d = ResponseDecoder::with_limits(100, 10);
    let mut head = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
    head.resize(100, b'a');
    assert!(matches!(d.decode(&head).1, ResponseEvent::NeedMore));
    head.push(b'a');
    let ResponseEvent::Error(e) = d.decode(&head).1 else {
        panic!()
    };
    assert_eq!(e.reason(), "response head too large");
    // Too many fields.
    let mut d = ResponseDecoder::with_limits(1000, 2);
    let ev = d
        .decode(b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n")
        .1;
    assert!(matches!(ev, ResponseEvent::Error(e) if e.reason() == "too many header fields"));
    // A chunk-size line without its end fails past its limit.
    let mut d = ResponseDecoder::chunked_body();
    let long = vec![b'1'; MAX_CHUNK_LINE + 3];
    assert!(matches!(d.decode(&long).1, ResponseEvent::Error(_)));
    // After an error, always the error.
    assert!(matches!(d.decode(b"0\r\n\r\n").1, ResponseEvent::Error(_)));
    assert!(matches!(d.eof(), ResponseEvent::Error(_)));
}

#[test]
fn the_end_of_the_connection() {
    // Between responses: nothing lost.
    let mut d = ResponseDecoder::new();
    assert!(matches!(d.eof(), ResponseEvent::NeedMore));
    // In a head, or a body with a length: cut short.
    for cut in [
        &b"HTTP/1.1 200 OK\r\nContent-"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    ] {
        assert!(
            decode_all(cut, false, true).is_err(),
            "{:?}",
            String::from_utf8_lossy(cut)
        );
    }
    // A body delimited by the close ends there.
    let got = decode_all(b"HTTP/1.1 200 OK\r\n\r\nall of it", false, true).unwrap();
    assert_eq!(got.3, b"all of it");
}

/// The same bytes give the same events' sum (head, body, end) however they are split:
/// every split in two, and one byte at a time.
#[test]
fn split_invariance() {
    let inputs: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b \r\nhello\r\n3\r\n, x\r\n0\r\nT: 1\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
    ];
    for input in inputs {
        let whole = feed(&[input]);
        for cut in 0..input.len() {
            assert_eq!(feed(&[&input[..cut], &input[cut..]]), whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(feed(&bytes), whole, "byte by byte");
    }
}

/// Feeds `parts` one after another as a connection would deliver them (unconsumed
/// bytes stay at the front): the statuses, body and end or error seen.
fn feed(parts: &[&[u8]]) -> (Vec<u16>, Vec<u8>, bool, Option<&'static str>) {
    let mut d = ResponseDecoder::new();
    let mut buf = Vec::new();
    let (mut statuses, mut body, mut ended) = (Vec::new(), Vec::new(), false);
    for part in parts {
        buf.extend_from_slice(part);
        loop {
            let (n, ev) = d.decode(&buf);
            match ev {
                ResponseEvent::NeedMore => {
                    buf.drain(..n);
                    break;
                }
                ResponseEvent::Head(h) => statuses.push(h.status()),
                ResponseEvent::Body(r) => body.extend_from_slice(&buf[r]),
                ResponseEvent::End => ended = true,
                ResponseEvent::Error(e) => return (statuses, body, ended, Some(e.reason())),
            }
            buf.drain(..n);
            if ended {
                return (statuses, body, ended, None);
            }
        }
    }
    (statuses, body, ended, None)
}
