//! Table tests of the head grammar and framing rules.
use super::*;

fn parse(s: &str) -> Result<Head, Refused> {
    parse_bytes(s.as_bytes().to_vec())
}

/// Parses `b`, exactly a head, and (to show that nothing after a head matters) the same
/// head followed by more bytes, which must give the same.
fn parse_bytes(b: Vec<u8>) -> Result<Head, Refused> {
    let cfg = HttpConfig::default();
    let exact = parse_head(&b, &cfg);
    let mut longer = b.clone();
    longer.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n\n\r\x00 trailing bytes");
    let followed = parse_head(&longer, &cfg);
    match (&exact, &followed) {
        (Ok(a), Ok(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}")),
        // (A fault is answered the same; a valid head never depends on what follows.)
        (Err(_), _) => {}
        (Ok(_), Err(e)) => panic!("valid alone, refused when followed: {e:?}"),
    }
    let p = exact?;
    assert_eq!(p.len, b.len(), "a head ends at its empty line");
    Ok(p.into_head(&b))
}

fn status(s: &str) -> Result<BodyKind, u16> {
    parse(s).map(|h| h.body).map_err(|r| r.0)
}

#[test]
fn framing_and_refusals() {
    use BodyKind::*;
    let cases: &[(&str, Result<BodyKind, u16>)] = &[
        ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", Ok(None)),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n", Ok(Length(5))),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0005\r\n\r\n", Ok(Length(5))),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", Ok(None)),
        // Content-Length lists and repeats: all the same valid number, or 400.
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", Ok(Length(5))),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n", Ok(Length(3))),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3,3\r\n\r\n", Ok(Length(3))),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\n", Err(400)),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3,\r\n\r\n", Err(400)),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ,3\r\n\r\n", Err(400)),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", Err(400)),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", Err(400)),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n", Err(400)),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5 5\r\n\r\n", Err(400)),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\n", Err(400)),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n", Err(400)),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", Err(400)),
        ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", Err(413)),
        // Transfer-Encoding is a list: chunked last and once, or 400/501.
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", Ok(Chunked)),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n", Ok(Chunked)),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\tchunked\r\n\r\n", Ok(Chunked)),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked,\r\n\r\n", Ok(Chunked)),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,chunked\r\n\r\n", Ok(Chunked)),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: , chunked ,\t,\r\n\r\n", Ok(Chunked)),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", Err(400)),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", Err(400)),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", Err(501)),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Err(501)),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", Err(400)),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", Err(400)),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", Err(400)),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", Err(400)),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\n\r\n", Err(400)),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,\r\n\r\n", Err(400)),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chun ked\r\n\r\n", Err(400)),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", Err(400)),
        ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", Err(400)),
        // HTTP/1.0 with Transfer-Encoding: faulty framing (RFC 9112 §6.1).
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Err(400)),
        ("POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", Err(400)),
        // Versions: 1.x is 1.0 or (from 1.1 on) 1.1; another major is 505.
        ("GET / HTTP/2.0\r\nHost: x\r\n\r\n", Err(505)),
        ("GET / HTTP/0.9\r\nHost: x\r\n\r\n", Err(505)),
        ("GET / HTTP/1.2\r\nHost: x\r\n\r\n", Ok(None)),
        ("GET / HTTP/1.9\r\n\r\n", Err(400)), // served as 1.1: needs Host
        ("GET / HTTP/1.10\r\nHost: x\r\n\r\n", Err(400)),
        ("GET / HTTP/11\r\nHost: x\r\n\r\n", Err(400)),
        ("GET / http/1.1\r\nHost: x\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1 \r\nHost: x\r\n\r\n", Err(400)),
        ("GET /\r\n\r\n", Err(400)),
        ("GET / HTTP/1.0\r\n\r\n", Ok(None)),
        // The request line: exactly three parts, one SP between them.
        ("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", Err(400)),
        ("GET  / HTTP/1.1\r\nHost: x\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1\r\n\r\n", Err(400)),
        (" GET / HTTP/1.1\r\nHost: x\r\n\r\n", Err(400)),
        ("G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n", Err(400)),
        ("GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n", Err(400)),
        ("GET nonsense HTTP/1.1\r\nHost: x\r\n\r\n", Err(400)),
        // Field lines: a token, a colon at once, no control characters, no fold.
        ("GET / HTTP/1.1\r\nHost x\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1\r\nHost : x\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1\r\n Host: x\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1\r\nHost: x\r\nX: a\x7fb\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1\r\nHost: x\r\nX: a\nb\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1\r\nHost: x\r\nX[]: v\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1\r\nHost: x\r\nX: \t tabs and spaces\t \r\n\r\n", Ok(None)),
        ("GET / HTTP/1.1\r\nHost: x\r\nX:\r\n\r\n", Ok(None)),
    ];
    for (head, want) in cases {
        assert_eq!(&status(head), want, "{head:?}");
    }
}

#[test]
fn host_must_be_one_valid_field() {
    let cases: &[(&str, Result<BodyKind, u16>)] = &[
        (
            "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
            Ok(BodyKind::None),
        ),
        (
            "GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
            Ok(BodyKind::None),
        ),
        (
            "GET / HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n",
            Ok(BodyKind::None),
        ),
        (
            "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
            Ok(BodyKind::None),
        ),
        (
            "GET / HTTP/1.1\r\nHost: ex%41mple\r\n\r\n",
            Ok(BodyKind::None),
        ),
        ("GET / HTTP/1.1\r\nHost: \r\n\r\n", Ok(BodyKind::None)), // RFC 9110 §7.2
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", Err(400)),
        ("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1\r\nHost: a:1:2\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1\r\nHost: []\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1\r\nHost: a%zz\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1\r\nHost: \"a\"\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1\r\nHost: caf\u{e9}\r\n\r\n", Err(400)),
    ];
    for (head, want) in cases {
        assert_eq!(&status(head), want, "{head:?}");
    }
}

#[test]
fn targets_split_as_rfc_3986_says() {
    let ok: &[(&str, &str, &str)] = &[
        ("GET /a/b?x=1&y=2 HTTP/1.1", "/a/b", "x=1&y=2"),
        ("GET /a?b?c/d HTTP/1.1", "/a", "b?c/d"),
        ("GET http://example.com/p?q HTTP/1.1", "/p", "q"),
        ("GET HTTP://example.com/p HTTP/1.1", "/p", ""),
        ("GET hTTpS://example.com:443/p HTTP/1.1", "/p", ""),
        ("GET http://example.com HTTP/1.1", "/", ""),
        ("GET http://a?/x HTTP/1.1", "/", "/x"),
        ("GET http://[::1]:8080/v6 HTTP/1.1", "/v6", ""),
        ("OPTIONS * HTTP/1.1", "*", ""),
        (
            "GET /~user/a-b_c.d!$&'()*+,;=:@ HTTP/1.1",
            "/~user/a-b_c.d!$&'()*+,;=:@",
            "",
        ),
        ("GET /%2F%41 HTTP/1.1", "/%2F%41", ""),
    ];
    for (line, path, query) in ok {
        let h = parse(&format!("{line}\r\nHost: x\r\n\r\n"));
        let h = h.unwrap_or_else(|e| panic!("{line:?}: {e:?}"));
        assert_eq!((h.req.path(), h.req.query()), (*path, *query), "{line:?}");
    }
    let refused: &[&str] = &[
        "GET /a#frag HTTP/1.1",
        "GET http://a/b#frag HTTP/1.1",
        "GET http://user@a/ HTTP/1.1",
        "GET http://user:pw@a/ HTTP/1.1",
        "GET http:///x HTTP/1.1",
        "GET http://:80/x HTTP/1.1",
        "GET http:/a HTTP/1.1",
        "GET ftp://a/x HTTP/1.1",
        "GET * HTTP/1.1",
        "OPTIONS ** HTTP/1.1",
        "GET a.com:443 HTTP/1.1",
        "CONNECT a.com:443 HTTP/1.1",
        // CONNECT takes the authority-form only (RFC 9112 §3.2.3).
        "CONNECT / HTTP/1.1",
        "CONNECT /a?b HTTP/1.1",
        "CONNECT http://a.com/ HTTP/1.1",
        "CONNECT * HTTP/1.1",
        "CONNECT [::1]:443 HTTP/1.1",
        "GET /a\"b HTTP/1.1",
        "GET /a<b> HTTP/1.1",
        "GET /a\\b HTTP/1.1",
        "GET /a{b} HTTP/1.1",
        "GET /a|b HTTP/1.1",
        "GET /a^b HTTP/1.1",
        "GET /a`b HTTP/1.1",
        "GET /a[b] HTTP/1.1",
        "GET /caf\u{e9} HTTP/1.1",
        "GET /a%4 HTTP/1.1",
        "GET /%41%zz HTTP/1.1",
        "GET /a% HTTP/1.1",
        "GET /a\x7f HTTP/1.1",
    ];
    for line in refused {
        let h = parse(&format!("{line}\r\nHost: x\r\n\r\n"));
        assert_eq!(h.map(|h| h.body).unwrap_err(), Refused(400), "{line:?}");
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
        (
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: x,\tclose\r\n\r\n",
            false,
        ),
        ("GET / HTTP/1.0\r\n\r\n", false),
        ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
        ("GET / HTTP/1.2\r\nHost: x\r\n\r\n", true),
    ];
    for (head, want) in cases {
        assert_eq!(parse(head).unwrap().keep_alive, want, "{head:?}");
    }
    assert_eq!(
        parse("GET / HTTP/1.2\r\nHost: x\r\n\r\n")
            .unwrap()
            .req
            .minor_version(),
        1
    );
}

#[test]
fn fields_methods_and_limits() {
    let h = parse("GET / HTTP/1.1\r\nHost: x\r\nX-A:  spaced value \r\n\r\n").unwrap();
    assert_eq!(h.req.header("x-a"), Some("spaced value"));
    assert_eq!(h.req.headers().count(), 2);
    assert_eq!(h.req.method(), "GET");
    let h = parse("PROPFIND /d HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!((h.req.method(), h.req.path()), ("PROPFIND", "/d"));
    // A header value that is not UTF-8 (obs-text): accepted, bytes kept.
    let raw = b"GET /x HTTP/1.1\r\nHost: x\r\nX-Latin: caf\xe9\r\n\r\n".to_vec();
    let h = parse_bytes(raw).unwrap();
    assert_eq!(h.req.header("x-latin"), None);
    assert_eq!(h.req.header_bytes("x-latin"), Some(&b"caf\xe9"[..]));
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
    assert_eq!(parse(&long).unwrap_err(), Refused(414));
    let many: String = (0..70).map(|i| format!("X-{i}: v\r\n")).collect();
    let head = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    assert_eq!(parse(&head).unwrap_err(), Refused(431));
    // Long values take the eight-at-a-time path: a control byte anywhere is found.
    for at in 0..40 {
        let mut v = vec![b'v'; 40];
        v[at] = 0x01;
        let mut head = b"GET / HTTP/1.1\r\nHost: x\r\nCookie: ".to_vec();
        head.extend_from_slice(&v);
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_bytes(head).unwrap_err(), BAD, "{at}");
    }
}

#[test]
fn value_end_matches_a_byte_by_byte_scan() {
    for c in 0..=255u8 {
        for at in 0..17 {
            let mut b = vec![b'a'; 17];
            b[at] = c;
            let naive = run(&b, 0, VALUE);
            assert_eq!(value_end(&b, 0), naive, "byte {c:#x} at {at}");
        }
    }
    // Tabs (the control character a value may have) before the end, in every place.
    for tab in 0..24 {
        for end in tab + 1..24 {
            let mut b = vec![b'a'; 24];
            b[tab] = b'\t';
            b[end] = b'\r';
            assert_eq!(value_end(&b, 0), end, "tab at {tab}, CR at {end}");
        }
    }
}

#[test]
fn names_are_compared_as_eq_ignore_ascii_case_does() {
    let names = [
        &b"host"[..],
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"expect",
        b"te",
    ];
    // Every token byte, in every position, of names of every length that matters.
    let tchars: Vec<u8> = (0..=255u8).filter(|&c| is(c, TOKEN)).collect();
    for lower in names {
        for at in 0..lower.len() {
            for &c in &tchars {
                let mut name = lower.to_vec();
                name[at] = c;
                let want = name.eq_ignore_ascii_case(lower);
                assert_eq!(
                    name_is(&name, lower),
                    want,
                    "{:?}",
                    String::from_utf8_lossy(&name)
                );
                name.make_ascii_uppercase();
                let want = name.eq_ignore_ascii_case(lower);
                assert_eq!(
                    name_is(&name, lower),
                    want,
                    "{:?}",
                    String::from_utf8_lossy(&name)
                );
            }
        }
        assert!(!name_is(&lower[1..], lower));
    }
}

#[test]
fn expect_continue_only_with_a_body_on_1_1() {
    let h =
        parse("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    assert!(h.unwrap().expect_continue);
    let h = parse("GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n");
    assert!(!h.unwrap().expect_continue);
}

#[test]
fn chunk_size_lines() {
    let cases: &[(&[u8], Option<u64>)] = &[
        (b"0", Some(0)),
        (b"000", Some(0)),
        (b"1a", Some(26)),
        (b"FF;name=value", Some(255)),
        (b"ff ; name = value ; flag", Some(255)),
        (b"5;a=\"quoted ; \\\" value\"", Some(5)),
        (b"5;a", Some(5)),
        (b"5 ;a", Some(5)),
        (b"5\t;\ta\t=\tb", Some(5)),
        (b"5;a ;b", Some(5)),
        (b"5;a=\"q\" ;b", Some(5)),
        // No whitespace at the end of the line (RFC 9112 §7.1.1: BWS only before ";"
        // and around "="), after the size or after an extension.
        (b"5 ", None),
        (b"5\t", None),
        (b"5  ", None),
        (b"5;a ", None),
        (b"5;a=b ", None),
        (b"5;a=\"q\"\t", None),
        (b"5;a =", None),
        (b"00000000000000000000001", Some(1)),
        (b"ffffffffffffffff", Some(u64::MAX)),
        (b"10000000000000000", None),
        (b"", None),
        (b"zz", None),
        (b"-1", None),
        (b"+1", None),
        (b" 1", None),
        (b"0x1", None),
        (b"5;", None),
        (b"5;=v", None),
        (b"5;a=", None),
        (b"5;a=\"unterminated", None),
        (b"5;a=b c", None),
        (b"5;a\x00", None),
        (b"5;a=\"\x01\"", None),
        (b"5 6", None),
        (b"5\r", None),
    ];
    for (line, want) in cases {
        assert_eq!(
            chunk_size(line),
            *want,
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn trailer_sections_use_the_field_grammar() {
    assert_eq!(check_fields(b"\r\n", 8), Ok(()));
    assert_eq!(check_fields(b"A: b\r\nC-D: e f\r\n\r\n", 8), Ok(()));
    for bad in [
        &b"A b\r\n\r\n"[..],
        b"A : b\r\n\r\n",
        b" A: b\r\n\r\n",
        b"A: b\r\n c\r\n\r\n",
        b"A: \x00\r\n\r\n",
        b"garbage\r\n\r\n",
    ] {
        assert_eq!(
            check_fields(bad, 8),
            Err(BAD),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(check_fields(b"A: 1\r\nB: 2\r\n\r\n", 1), Err(Refused(431)));
}

#[test]
fn standard_methods_are_found_by_name_exactly() {
    for (i, m) in STANDARD_METHODS.iter().enumerate() {
        assert_eq!(standard_method(m.as_bytes()), Some(i as u8), "{m}");
    }
    for m in ["get", "GETS", "GE", "", "PROPFIND", "Head"] {
        assert_eq!(standard_method(m.as_bytes()), None, "{m}");
    }
}
