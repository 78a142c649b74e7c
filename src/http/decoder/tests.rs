//! The decoder over whole byte streams: where requests end, what is refused, limits,
//! and the same answer however the bytes are split.

use super::{decode_all, Decoded, Outcome};
use crate::http::HttpConfig;

fn whole(input: &[u8]) -> Decoded {
    decode_all([input], &HttpConfig::default())
}

/// The paths of the requests decoded, and the outcome.
fn paths(input: &[u8]) -> (Vec<String>, Outcome) {
    let d = whole(input);
    (
        d.requests.iter().map(|m| m.path.clone()).collect(),
        d.outcome,
    )
}

/// Every way of splitting `input` in two, and byte by byte, decodes as the whole does.
fn assert_split_invariant(input: &[u8], cfg: &HttpConfig) {
    let want = decode_all([input], cfg);
    for at in 0..=input.len() {
        let (a, b) = input.split_at(at);
        assert_eq!(
            decode_all([a, b], cfg),
            want,
            "split at {at}: {:?}",
            String::from_utf8_lossy(input)
        );
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(decode_all(bytes, cfg), want, "byte by byte");
}

#[test]
fn pipelined_requests_with_every_framing() {
    let input = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
        POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
        PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=\"v\"\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n\
        GET /d HTTP/1.1\r\nHost: x\r\n\r\n";
    let d = whole(input);
    assert_eq!(d.outcome, Outcome::Idle);
    let got: Vec<(&str, &[u8])> = d
        .requests
        .iter()
        .map(|m| (m.path.as_str(), &m.body[..]))
        .collect();
    assert_eq!(
        got,
        vec![
            ("/a", &b""[..]),
            ("/b", b"hello"),
            ("/c", b"abcde"),
            ("/d", b"")
        ]
    );
    assert_split_invariant(input, &HttpConfig::default());
}

#[test]
fn the_issues_line_ending_cases_are_refused_not_dropped() {
    // A head ended by bare LFs: refused at once, not left waiting for CRLF CRLF.
    assert_eq!(
        paths(b"GET / HTTP/1.1\nHost: x\n\n"),
        (vec![], Outcome::Refused(400))
    );
    assert_eq!(paths(b"GET / HTTP/1.1\n"), (vec![], Outcome::Refused(400)));
    // A bare LF ending the head: the request after it does not disappear unanswered.
    let two = b"GET / HTTP/1.1\r\nHost: x\r\n\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(paths(two), (vec![], Outcome::Refused(400)));
    // A bare CR anywhere in the head.
    for input in [
        &b"GET / HTTP/1.1\rHost: x\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\r\n",
        b"GET /\r HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\rGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r", // (waits: the LF may follow)
    ] {
        let want = if input.ends_with(b"\r\n\r") {
            Outcome::Partial
        } else {
            Outcome::Refused(400)
        };
        assert_eq!(
            whole(input).outcome,
            want,
            "{:?}",
            String::from_utf8_lossy(input)
        );
        assert_split_invariant(input, &HttpConfig::default());
    }
}

#[test]
fn empty_lines_before_a_request_line_are_ignored() {
    let input = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(
        paths(input),
        (vec!["/a".into(), "/b".into()], Outcome::Idle)
    );
    let input = b"\r\n\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n\r\n";
    assert_eq!(paths(input), (vec!["/b".into()], Outcome::Idle));
    assert_split_invariant(input, &HttpConfig::default());
    // Not without end: a head's worth of them is refused.
    let cfg = HttpConfig {
        max_head: 64,
        ..HttpConfig::default()
    };
    let many = b"\r\n".repeat(40);
    assert_eq!(decode_all([&many[..]], &cfg).outcome, Outcome::Refused(400));
    assert_split_invariant(&many, &cfg);
}

#[test]
fn a_1_0_request_with_transfer_encoding_is_refused_before_its_body() {
    let input = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n\
        2e\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n";
    assert_eq!(paths(input), (vec![], Outcome::Refused(400)));
}

#[test]
fn transfer_encoding_is_chunked_last_or_refused() {
    let body = b"\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases: &[(&[u8], Result<usize, u16>)] = &[
        (b"Transfer-Encoding: chunked", Ok(2)),
        (b"Transfer-Encoding:\tchunked", Ok(2)),
        (b"Transfer-Encoding: chunked,", Ok(2)),
        (b"Transfer-Encoding: ,chunked", Ok(2)),
        (b"Transfer-Encoding: CHUNKED", Ok(2)),
        (
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            Err(400),
        ),
        (
            b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked",
            Err(501),
        ),
        (
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
            Err(400),
        ),
        (b"Transfer-Encoding: identity", Err(400)),
        (b"Transfer-Encoding: xchunked", Err(400)),
        (b"Transfer-Encoding: chunked\r\nContent-Length: 5", Err(400)),
    ];
    for (field, want) in cases {
        let mut input = b"POST /te HTTP/1.1\r\nHost: x\r\n".to_vec();
        input.extend_from_slice(field);
        input.extend_from_slice(body);
        let d = whole(&input);
        let got = match d.outcome {
            Outcome::Refused(c) => Err(c),
            _ => Ok(d.requests.len()),
        };
        assert_eq!(got, *want, "{:?}", String::from_utf8_lossy(field));
        if want.is_ok() {
            assert_eq!(d.requests[0].body, b"hello");
            assert_eq!(d.requests[1].path, "/next");
        }
    }
}

#[test]
fn chunk_lines_data_ends_and_trailers_are_checked() {
    let head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let cases: &[(&[u8], Outcome)] = &[
        (b"5\r\nhello\r\n0\r\n\r\n", Outcome::Idle),
        (
            b"5;a=b;c;d=\"q;\\\"\"\r\nhello\r\n0;z\r\nX: y\r\nZ: w\r\n\r\n",
            Outcome::Idle,
        ),
        (b"5 ;a=b\r\nhello\r\n0\r\n\r\n", Outcome::Idle),
        (b"5\nhello\r\n0\r\n\r\n", Outcome::Refused(400)),
        (b"5\rhello\r\n0\r\n\r\n", Outcome::Refused(400)),
        (b"5\r\nhello\n0\r\n\r\n", Outcome::Refused(400)),
        (b"5\r\nhelloXY0\r\n\r\n", Outcome::Refused(400)),
        (b"5\r\nhello\r\r\n0\r\n\r\n", Outcome::Refused(400)),
        (b"5;a b\r\nhello\r\n0\r\n\r\n", Outcome::Refused(400)),
        // Whitespace at the end of a chunk-size line, with or without an extension.
        (b"5 \r\nhello\r\n0\r\n\r\n", Outcome::Refused(400)),
        (b"5\t\r\nhello\r\n0\r\n\r\n", Outcome::Refused(400)),
        (b"5;a=b \r\nhello\r\n0\r\n\r\n", Outcome::Refused(400)),
        (b"5\r\nhello\r\n0 \r\n\r\n", Outcome::Refused(400)),
        (b"5;\x00\r\nhello\r\n0\r\n\r\n", Outcome::Refused(400)),
        (b"5;a=\"\r\nhello\r\n0\r\n\r\n", Outcome::Refused(400)),
        (b"0\r\nbad trailer\r\n\r\n", Outcome::Refused(400)),
        (b"0\r\nX : y\r\n\r\n", Outcome::Refused(400)),
        (b"0\r\nX: y\r\n folded\r\n\r\n", Outcome::Refused(400)),
        (b"0\r\nX: a\x01b\r\n\r\n", Outcome::Refused(400)),
        (b"0\r\nX: y\n\r\n", Outcome::Refused(400)),
        (b"0\r\nX: y\r\n\n", Outcome::Refused(400)),
        (b"0\r\n\n", Outcome::Refused(400)),
        (b"-1\r\n", Outcome::Refused(400)),
        (b"10000000000000000\r\n", Outcome::Refused(400)),
        (b"fffffffffff\r\n", Outcome::Refused(413)),
        (b"5\r\nhel", Outcome::Partial),
        (b"0\r\nX: y\r\n", Outcome::Partial),
    ];
    for (body, want) in cases {
        let input = [&head[..], body].concat();
        assert_eq!(
            whole(&input).outcome,
            *want,
            "{:?}",
            String::from_utf8_lossy(body)
        );
        assert_split_invariant(&input, &HttpConfig::default());
    }
}

#[test]
fn limits_are_enforced_without_buffering_past_them() {
    let cfg = HttpConfig {
        max_head: 256,
        max_uri: 64,
        max_body: 10,
        ..HttpConfig::default()
    };
    let decode = |input: &[u8]| decode_all([input], &cfg).outcome;
    // A request line that never ends: 414; a header section that does not: 431.
    assert_eq!(
        decode(&[b"GET /".as_slice(), &[b'a'; 300]].concat()),
        Outcome::Refused(414)
    );
    let fields = [b"GET / HTTP/1.1\r\nHost: x\r\nX: ".as_slice(), &[b'v'; 300]].concat();
    assert_eq!(decode(&fields), Outcome::Refused(431));
    assert_split_invariant(&fields, &cfg);
    // Exactly at the limit is fine.
    let mut exact = b"GET / HTTP/1.1\r\nHost: x\r\nX: ".to_vec();
    exact.resize(252, b'v');
    exact.extend_from_slice(b"\r\n\r\n");
    assert_eq!(exact.len(), 256);
    assert_eq!(decode(&exact), Outcome::Idle);
    exact.insert(30, b'v');
    assert_eq!(decode(&exact), Outcome::Refused(431));
    // Bodies: Content-Length over the limit at once; chunks as they add up.
    assert_eq!(
        decode(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n"),
        Outcome::Refused(413)
    );
    let chunked =
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n5\r\n";
    assert_eq!(decode(chunked), Outcome::Refused(413));
    // A chunk-size line that never ends.
    let long_ext = [&chunked[..chunked.len() - 5], b"1;", &[b'e'; 5000]].concat();
    assert_eq!(decode(&long_ext), Outcome::Refused(400));
    // Trailers over max_head.
    let trailers = [
        &b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: "[..],
        &[b't'; 300],
    ]
    .concat();
    assert_eq!(decode(&trailers), Outcome::Refused(431));
}

#[test]
fn a_request_that_closes_ends_the_stream() {
    let input = b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(paths(input), (vec!["/a".into()], Outcome::Closed));
    let input = b"GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.0\r\n\r\n";
    assert_eq!(paths(input), (vec!["/a".into()], Outcome::Closed));
}

#[test]
fn split_invariance_over_a_mixed_stream() {
    let input = b"\r\nGET /a?q=1 HTTP/1.1\r\nHost: x\r\nX:  v \r\n\r\n\
        POST http://h/b HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n\
        PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n\
        1\r\na\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n\
        GET /e HTTP/1.0\r\nConnection: keep-alive\r\n\r\n\
        GET /f HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n";
    let d = whole(input);
    assert_eq!(d.requests.len(), 4);
    assert_eq!(d.outcome, Outcome::Refused(400));
    assert!(d.requests[2].expect_continue);
    assert_eq!(d.requests[2].body, b"a0123456789abcdef");
    assert_split_invariant(input, &HttpConfig::default());
}
