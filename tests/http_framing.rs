//! Request framing over raw sockets, on both backends (issue 10, items 1-7): the exact
//! bytes a hostile client or a proxy in front could send, and where the server says
//! one request ends and the next begins. A refused request gets its status and the
//! connection closes; nothing after it is answered as a request.
mod util;
use util::Listen;

use coreloop_macros::on_both_backends;

use coreloop::http::{Application, HttpConfig, HttpServer, Route};
use coreloop::{Backend, Cores, Runtime};
use std::io::{Read, Write};
use std::net::TcpStream;

fn server(backend: Backend) -> util::Served {
    let echo =
        |_: coreloop::IoLoop, req: coreloop::http::Request, mut r: coreloop::http::Response| {
            r.write(format!(
                "{} {}?{} [{}]",
                req.method(),
                req.path(),
                req.query(),
                String::from_utf8_lossy(req.body())
            ));
        };
    let app = Application::new()
        .route(
            "/",
            Route::new()
                .get(echo)
                .post(echo)
                .put(echo)
                .method("OPTIONS", echo),
        )
        .route("/{*rest}", Route::new().get(echo).post(echo).put(echo));
    HttpServer::new(app)
        .config(HttpConfig::default())
        .listen(
            Runtime::builder().backend(backend).cores(Cores::Count(1)),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap()
}

/// Sends `req` whole, half-closes, and reads everything the server sends until it
/// closes: the statuses and bodies of the responses, in order.
fn exchange(s: &util::Served, req: &[u8]) -> Answers {
    let mut c = TcpStream::connect(s.local_addr()).unwrap();
    c.set_read_timeout(Some(util::HANG)).unwrap();
    c.write_all(req).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut raw = Vec::new();
    if let Err(e) = c.read_to_end(&mut raw) {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    parse_responses(&raw)
}

fn parse_responses(mut raw: &[u8]) -> Answers {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let text = String::from_utf8_lossy(raw).into_owned();
        let head_end = text.find("\r\n\r\n").expect("a whole head") + 4;
        let head = &text[..head_end];
        let status: u16 = head[9..12].parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        let body = String::from_utf8_lossy(&raw[head_end..head_end + len]).into_owned();
        if status != 100 {
            out.push((status, body));
        }
        raw = &raw[head_end + len..];
    }
    out
}

fn ok(body: &str) -> (u16, String) {
    (200, body.to_string())
}

fn refused(code: u16) -> (u16, String) {
    let reason = match code {
        400 => "Bad Request",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "?",
    };
    (code, format!("{code}: {reason}"))
}

/// What a connection answered: status and body of each response, in order.
type Answers = Vec<(u16, String)>;

fn check(s: &util::Served, cases: &[(&[u8], Answers)]) {
    for (req, want) in cases {
        assert_eq!(
            &exchange(s, req),
            want,
            "{:?}",
            String::from_utf8_lossy(req)
        );
    }
}

/// Item 1: one valid Host, required on 1.1.
#[on_both_backends]
#[test]
fn host_is_one_valid_field(backend: Backend) {
    let s = server(backend);
    check(
        &s,
        &[
            (
                b"GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                vec![refused(400)],
            ),
            (
                b"GET /a HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
                vec![refused(400)],
            ),
            (b"GET /a HTTP/1.1\r\nHost: a b\r\n\r\n", vec![refused(400)]),
            (b"GET /a HTTP/1.1\r\nHost: a/b\r\n\r\n", vec![refused(400)]),
            (b"GET /a HTTP/1.1\r\nHost: u@a\r\n\r\n", vec![refused(400)]),
            (b"GET /a HTTP/1.1\r\n\r\n", vec![refused(400)]),
            (b"GET /a HTTP/1.0\r\n\r\n", vec![ok("GET /a? []")]),
            (
                b"GET /a HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n",
                vec![ok("GET /a? []")],
            ),
        ],
    );
    s.shutdown().unwrap();
}

/// Item 2: Transfer-Encoding in an HTTP/1.0 request is faulty framing: 400 and close,
/// its chunked body never read as a request.
#[on_both_backends]
#[test]
fn transfer_encoding_in_1_0_is_refused(backend: Backend) {
    let s = server(backend);
    check(
        &s,
        &[
            (
                b"POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n26\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n",
                vec![refused(400)],
            ),
            (
                b"POST /a HTTP/1.0\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
                vec![refused(400)],
            ),
        ],
    );
    s.shutdown().unwrap();
}

/// Item 3: Transfer-Encoding is a list, chunked final (or 400/501 and close);
/// Content-Length lists only with identical values.
#[on_both_backends]
#[test]
fn transfer_encoding_and_content_length_lists(backend: Backend) {
    let s = server(backend);
    let next = "GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    for te in [
        "\tchunked",
        "chunked,",
        ",chunked",
        " , chunked ,",
        "CHUNKED",
    ] {
        let req = format!("POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:{te}\r\n\r\n3\r\nabc\r\n0\r\n\r\n{next}");
        assert_eq!(
            exchange(&s, req.as_bytes()),
            vec![ok("POST /te? [abc]"), ok("GET /next? []")],
            "{te:?}"
        );
    }
    let chunked_body = format!("3\r\nabc\r\n0\r\n\r\n{next}");
    for (te, code) in [
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            400,
        ),
        ("Transfer-Encoding: chunked, chunked", 400),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
            400,
        ),
        ("Transfer-Encoding: identity", 400),
        ("Transfer-Encoding: ,", 400),
        ("Transfer-Encoding: chunked\r\nContent-Length: 3", 400),
        ("Transfer-Encoding: gzip, chunked", 501),
        ("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked", 501),
    ] {
        let req = format!("POST /te HTTP/1.1\r\nHost: x\r\n{te}\r\n\r\n{chunked_body}");
        assert_eq!(exchange(&s, req.as_bytes()), vec![refused(code)], "{te:?}");
    }
    for (cl, want) in [
        (
            "Content-Length: 3, 3",
            vec![ok("POST /cl? [abc]"), ok("GET /next? []")],
        ),
        (
            "Content-Length: 3,3",
            vec![ok("POST /cl? [abc]"), ok("GET /next? []")],
        ),
        (
            "Content-Length: 3\r\nContent-Length: 3",
            vec![ok("POST /cl? [abc]"), ok("GET /next? []")],
        ),
        ("Content-Length: 3, 4", vec![refused(400)]),
        ("Content-Length: 3\r\nContent-Length: 0", vec![refused(400)]),
        ("Content-Length: 3,", vec![refused(400)]),
        ("Content-Length: 3 3", vec![refused(400)]),
    ] {
        let req = format!("POST /cl HTTP/1.1\r\nHost: x\r\n{cl}\r\n\r\nabc{next}");
        assert_eq!(exchange(&s, req.as_bytes()), want, "{cl:?}");
    }
    s.shutdown().unwrap();
}

/// Item 4: chunk extensions and trailers have the field grammar, or 400 and close.
#[on_both_backends]
#[test]
fn chunk_extensions_and_trailers_are_checked(backend: Backend) {
    let s = server(backend);
    let head = "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let next = "GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    for body in [
        "3;a=b;c;d=\"q;\\\"\"\r\nabc\r\n0\r\n\r\n",
        "3 ; a = b\r\nabc\r\n0;z\r\nX-T: v\r\nY: w\r\n\r\n",
    ] {
        let req = format!("{head}{body}{next}");
        assert_eq!(
            exchange(&s, req.as_bytes()),
            vec![ok("POST /c? [abc]"), ok("GET /next? []")],
            "{body:?}"
        );
    }
    for body in [
        "3;a b\r\nabc\r\n0\r\n\r\n",
        "3;\x00\r\nabc\r\n0\r\n\r\n",
        "3;=v\r\nabc\r\n0\r\n\r\n",
        "3;a=\"open\r\nabc\r\n0\r\n\r\n",
        "3\r\nabcXY0\r\n\r\n",
        "0\r\ngarbage trailer\r\n\r\n",
        "0\r\nX : v\r\n\r\n",
        "0\r\nX: v\r\n folded\r\n\r\n",
        "0\r\nX: a\x01b\r\n\r\n",
    ] {
        let req = format!("{head}{body}{next}");
        assert_eq!(exchange(&s, req.as_bytes()), vec![refused(400)], "{body:?}");
    }
    s.shutdown().unwrap();
}

/// A refusal after pipelined requests in the same write, then a half-close: the
/// answers queued before the refusal all go out, then the refusal, then the close (RFC
/// 9112 section 9.3.2). On io_uring the client's end of file used to close the
/// connection while most answers still waited for a send: 151 of 1,000 came, no 400.
#[on_both_backends]
#[test]
fn answers_queued_before_a_refusal_survive_a_half_close(backend: Backend) {
    let s = server(backend);
    let mut req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
    req.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n");
    // A client with a small receive window keeps the answers waiting for a send while
    // the end of file arrives; the default window, sometimes (the usual io_uring case).
    for window in [None, Some(4096), None, Some(4096), None] {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        if let Some(w) = window {
            sock.set_recv_buffer_size(w).unwrap();
        }
        sock.connect(&s.local_addr().into()).unwrap();
        let mut c: TcpStream = sock.into();
        c.set_read_timeout(Some(util::HANG)).unwrap();
        c.write_all(&req).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut raw = Vec::new();
        c.read_to_end(&mut raw).unwrap();
        let got = parse_responses(&raw);
        let answered = got.iter().take_while(|a| **a == ok("GET /a? []")).count();
        assert_eq!(answered, 1000, "answers before the refusal ({window:?})");
        assert_eq!(got[1000..], [refused(400)], "{window:?}");
    }
    s.shutdown().unwrap();
}

/// Item 5: CRLF is the only line ending; a lone LF or CR anywhere (head, chunk lines,
/// after chunk data, trailers) is a 400 at once, never a silent drop or a wait for the
/// timeout.
#[on_both_backends]
#[test]
fn lone_lf_and_cr_are_refused_everywhere(backend: Backend) {
    let s = server(backend);
    let refusals: &[&[u8]] = &[
        b"GET / HTTP/1.1\nHost: x\n\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n",
        b"GET / HTTP/1.1\rHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n",
        b"\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\n\r\n",
    ];
    for req in refusals {
        assert_eq!(
            &exchange(&s, req),
            &vec![refused(400)],
            "{:?}",
            String::from_utf8_lossy(req)
        );
    }
    // Without the half-close: the refusal comes without waiting for more bytes.
    let mut c = TcpStream::connect(s.local_addr()).unwrap();
    c.set_read_timeout(Some(util::HANG)).unwrap();
    c.write_all(b"GET / HTTP/1.1\nHost: x\n\n").unwrap();
    let mut raw = Vec::new();
    let _ = c.read_to_end(&mut raw);
    assert_eq!(parse_responses(&raw), vec![refused(400)]);
    s.shutdown().unwrap();
}

/// Item 6: empty lines before a request line are ignored (a client's CRLF after a
/// POST body).
#[on_both_backends]
#[test]
fn empty_lines_before_a_request_are_ignored(backend: Backend) {
    let s = server(backend);
    check(
        &s,
        &[
            (
                b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
                vec![ok("POST /a? [abc]"), ok("GET /b? []")],
            ),
            (b"\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n", vec![ok("GET /b? []")]),
        ],
    );
    s.shutdown().unwrap();
}

/// Item 7: request line and target.
#[on_both_backends]
#[test]
fn request_line_and_target_forms(backend: Backend) {
    let s = server(backend);
    check(
        &s,
        &[
            (b"GET http://a?/x HTTP/1.1\r\nHost: a\r\n\r\n", vec![ok("GET /?/x []")]),
            (b"GET HTTP://a/p?q HTTP/1.1\r\nHost: a\r\n\r\n", vec![ok("GET /p?q []")]),
            (b"GET hTTpS://a:443/p HTTP/1.1\r\nHost: a\r\n\r\n", vec![ok("GET /p? []")]),
            (b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", vec![(404, "404: Not Found".into())]),
            (b"GET /p HTTP/1.2\r\nHost: a\r\n\r\n", vec![ok("GET /p? []")]),
            (b"GET /p#frag HTTP/1.1\r\nHost: a\r\n\r\n", vec![refused(400)]),
            (b"GET http://u@a/p HTTP/1.1\r\nHost: a\r\n\r\n", vec![refused(400)]),
            (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", vec![refused(400)]),
            (b"GET /a\"b HTTP/1.1\r\nHost: a\r\n\r\n", vec![refused(400)]),
            (b"GET /a{b} HTTP/1.1\r\nHost: a\r\n\r\n", vec![refused(400)]),
            (b"GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n", vec![refused(400)]),
            (b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", vec![refused(400)]),
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", vec![refused(505)]),
            (
                b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
                vec![refused(400)],
            ),
        ],
    );
    s.shutdown().unwrap();
}

/// CONNECT takes the authority-form only (RFC 9112 §3.2.3), and this server tunnels
/// nothing: any CONNECT is a 400 and the connection closes (an origin-form one was
/// routed, answered 405, and kept open).
#[on_both_backends]
#[test]
fn connect_is_refused_and_closes_the_connection(backend: Backend) {
    let s = server(backend);
    let next = "GET /next HTTP/1.1\r\nHost: a\r\n\r\n";
    for line in [
        "CONNECT / HTTP/1.1",
        "CONNECT /x?y HTTP/1.1",
        "CONNECT a.com:443 HTTP/1.1",
        "CONNECT http://a.com/ HTTP/1.1",
    ] {
        let req = format!("{line}\r\nHost: a\r\n\r\n{next}");
        assert_eq!(exchange(&s, req.as_bytes()), vec![refused(400)], "{line}");
    }
    // Without the half-close: the server closes by itself.
    let mut c = TcpStream::connect(s.local_addr()).unwrap();
    c.set_read_timeout(Some(util::HANG)).unwrap();
    c.write_all(format!("CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n{next}").as_bytes())
        .unwrap();
    let mut raw = Vec::new();
    let _ = c.read_to_end(&mut raw);
    assert_eq!(parse_responses(&raw), vec![refused(400)]);
    // A method named in another case is another method (methods are case-sensitive).
    assert_eq!(
        exchange(
            &s,
            b"connect / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        ),
        vec![(405, "405: Method Not Allowed".into())]
    );
    s.shutdown().unwrap();
}

/// A chunk-size line ends at its size or its last extension: whitespace before the
/// CRLF (`5 \r\n`), which parsers read differently, is a 400 and the connection closes.
#[on_both_backends]
#[test]
fn chunk_size_lines_with_trailing_whitespace_are_refused(backend: Backend) {
    let s = server(backend);
    let head = "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let next = "GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    for body in [
        "5 \r\nhello\r\n0\r\n\r\n",
        "5\t\r\nhello\r\n0\r\n\r\n",
        "5;a=b \r\nhello\r\n0\r\n\r\n",
        "5\r\nhello\r\n0 \r\n\r\n",
    ] {
        let req = format!("{head}{body}{next}");
        assert_eq!(exchange(&s, req.as_bytes()), vec![refused(400)], "{body:?}");
    }
    // Whitespace where the grammar has it (before ";", around "=") is fine.
    let req = format!("{head}5 ; a = b\r\nhello\r\n0\r\n\r\n{next}");
    assert_eq!(
        exchange(&s, req.as_bytes()),
        vec![ok("POST /c? [hello]"), ok("GET /next? []")]
    );
    s.shutdown().unwrap();
}
