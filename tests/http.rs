//! The HTTP/1.1 server over a raw socket client (exact bytes), on both backends.
mod util;
use util::Listen;

use coreloop_macros::on_both_backends;

use coreloop::http::{Application, HttpConfig, HttpServer, Route};
use coreloop::{Backend, Cores, Runtime};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

fn app() -> Application {
    Application::new()
        .route("/", Route::new().get(|_, _, mut r| r.write("Hello, world")))
        .route(
            "/echo",
            Route::new()
                .post(|_, req, mut r| r.write(req.body()))
                .put(|_, req, mut r| r.write(req.body())),
        )
        .route(
            "/user/{id}",
            Route::new().get(|_, req, mut r| r.write(format!("user {}", req.param("id").unwrap()))),
        )
        .route(
            "/panic",
            Route::new().get(|_, _, _| -> () { panic!("handler boom") }),
        )
        .route(
            "/later",
            Route::new().get(|lp, _, mut r| {
                lp.call_later(Duration::from_millis(20), move |_| {
                    r.write("later");
                    r.finish();
                });
            }),
        )
        .route(
            "/cross",
            Route::new().get(|lp, _, mut r| {
                let other = (lp.shard_id() + 1) % lp.shard_count();
                let target = lp.shard_handle(other).expect("peers known");
                let here = lp.shard_id();
                lp.call_on(&target, |far| far.shard_id())
                    .then(move |_, far| {
                        r.write(format!("from {here} via {}", far.unwrap()));
                        r.finish();
                    });
            }),
        )
        .route(
            "/big",
            Route::new().get(|_, _, mut r| r.write(vec![b'b'; 4 << 20])),
        )
        .route(
            "/stream",
            Route::new().get(|lp, _, mut r| {
                r.set_header("Content-Type", "text/plain");
                r.write("first;");
                r.flush().unwrap();
                lp.call_later(Duration::from_millis(10), move |_| {
                    r.write("second");
                    r.finish();
                });
            }),
        )
        .route(
            "/query",
            Route::new().get(|_, req, mut r| r.write(req.query_arg("q").unwrap_or("-"))),
        )
}

fn server(backend: Backend, cores: usize, cfg: HttpConfig) -> util::Served {
    HttpServer::new(app())
        .config(cfg)
        .listen(
            Runtime::builder()
                .backend(backend)
                .cores(Cores::Count(cores)),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap()
}

fn connect(s: &util::Served) -> TcpStream {
    let c = TcpStream::connect(s.local_addr()).unwrap();
    c.set_read_timeout(Some(util::HANG)).unwrap();
    c.set_nodelay(true).unwrap();
    c
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response (status line, headers, Content-Length body; no body for HEAD).
fn read_resp(r: &mut BufReader<TcpStream>, head_request: bool) -> Option<Resp> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let status: u16 = line.split(' ').nth(1)?.parse().ok()?;
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).ok()?;
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.to_string(), v.trim().to_string()));
    }
    let mut resp = Resp {
        status,
        headers,
        body: Vec::new(),
    };
    if !head_request && status != 100 && resp.header("transfer-encoding") == Some("chunked") {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim_end(), 16).ok()?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break; // (no trailers from this server)
            }
            resp.body.extend_from_slice(&chunk[..n]);
        }
    } else if !head_request && status != 100 {
        let n: usize = resp
            .header("content-length")
            .map_or(0, |v| v.parse().unwrap());
        resp.body = vec![0; n];
        r.read_exact(&mut resp.body).ok()?;
    }
    Some(resp)
}

/// Sends `req` and reads one response.
fn exchange(s: &util::Served, req: &[u8]) -> Resp {
    let mut c = connect(s);
    c.write_all(req).unwrap();
    read_resp(&mut BufReader::new(c), req.starts_with(b"HEAD")).expect("a response")
}

/// True once the server has closed the connection (EOF or reset) within the timeout.
fn closed_by_server(mut r: BufReader<TcpStream>) -> bool {
    let mut rest = Vec::new();
    match r.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[on_both_backends]
#[test]
fn hello_world_is_tornados(backend: Backend) {
    let s = server(backend, 1, HttpConfig::default());
    let r = exchange(&s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, world"));
    assert_eq!(r.header("content-length"), Some("12"));
    assert_eq!(r.header("content-type"), Some("text/html; charset=UTF-8"));
    assert_eq!(r.header("server"), Some("coreloop"));
    let date = r.header("date").unwrap();
    assert!(date.ends_with(" GMT") && date.len() == 29, "{date}");
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn keep_alive_by_version_and_connection_close(backend: Backend) {
    let s = server(backend, 1, HttpConfig::default());
    // 1.1: three requests on one connection.
    let c = connect(&s);
    let mut r = BufReader::new(c.try_clone().unwrap());
    for i in 0..3 {
        (&c).write_all(format!("GET /user/{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let resp = read_resp(&mut r, false).unwrap();
        assert_eq!(resp.text(), format!("user {i}"));
        assert_eq!(resp.header("connection"), None);
    }
    (&c).write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(
        read_resp(&mut r, false).unwrap().header("connection"),
        Some("close")
    );
    assert!(closed_by_server(r));
    // 1.0 closes unless it asks for keep-alive.
    let c = connect(&s);
    (&c).write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut r = BufReader::new(c);
    assert_eq!(read_resp(&mut r, false).unwrap().status, 200);
    assert!(closed_by_server(r));
    let c = connect(&s);
    (&c).write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    assert_eq!(
        read_resp(&mut r, false).unwrap().header("connection"),
        Some("keep-alive")
    );
    (&c).write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    assert_eq!(read_resp(&mut r, false).unwrap().status, 200);
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn thirty_two_pipelined_requests_in_one_write(backend: Backend) {
    let s = server(backend, 1, HttpConfig::default());
    let c = connect(&s);
    let all: String = (0..32)
        .map(|i| format!("GET /user/{i} HTTP/1.1\r\nHost: x\r\n\r\n"))
        .collect();
    (&c).write_all(all.as_bytes()).unwrap();
    let mut r = BufReader::new(c);
    for i in 0..32 {
        assert_eq!(
            read_resp(&mut r, false).unwrap().text(),
            format!("user {i}")
        );
    }
    s.shutdown().unwrap();
}

/// Pipelined requests answered at once, later from a timer, from another core, with a
/// body, streamed, and refused by a panic, all in one write: the answers come in
/// request order, whichever way each was made.
#[on_both_backends]
#[test]
fn pipelined_requests_of_every_kind_answer_in_order(backend: Backend) {
    let s = server(backend, 2, HttpConfig::default());
    let c = connect(&s);
    let reqs = [
        ("GET /later HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), "later"),
        ("GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), "Hello, world"),
        (
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody".to_string(),
            "body",
        ),
        ("GET /cross HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), "from "),
        ("GET /user/7 HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), "user 7"),
        ("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), "first;second"),
        (
            "PUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n"
                .to_string(),
            "ab",
        ),
        ("GET /later HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), "later"),
        ("GET /query?q=last HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), "last"),
    ];
    let all: String = reqs.iter().map(|(r, _)| r.as_str()).collect();
    (&c).write_all(all.as_bytes()).unwrap();
    let mut r = BufReader::new(c);
    for (req, want) in &reqs {
        let resp = read_resp(&mut r, false).unwrap();
        assert_eq!(resp.status, 200, "{req:?}");
        assert!(
            resp.text().starts_with(want),
            "{req:?} got {:?}",
            resp.text()
        );
    }
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_request_split_one_byte_per_write(backend: Backend) {
    let s = server(backend, 1, HttpConfig::default());
    let c = connect(&s);
    let req = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    for b in req {
        (&c).write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let r = read_resp(&mut BufReader::new(c), false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn bodies_by_length_and_chunked(backend: Backend) {
    let s = server(backend, 1, HttpConfig::default());
    let r = exchange(
        &s,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world",
    );
    assert_eq!(r.text(), "hello world");
    let r = exchange(
        &s,
        b"PUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    assert_eq!((r.status, r.text().as_str()), (200, "hello world"));
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn bad_input_gets_the_right_status_and_a_close(backend: Backend) {
    let cfg = HttpConfig {
        max_body: 1024,
        ..HttpConfig::default()
    };
    let s = server(backend, 1, cfg);
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(20_000));
    let big_headers = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "h".repeat(20_000)
    );
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"GARBAGE\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400), // no Host
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n".to_vec(), 400),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(), 400),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc".to_vec(), 400),
        // A final coding other than chunked: the length is unknown (RFC 9112 6.3).
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(), 400),
        // Chunked over a coding not implemented.
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec(), 501),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n".to_vec(), 505),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n".to_vec(), 413),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n".to_vec(), 413),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(), 400),
        (long_uri.into_bytes(), 414),
        (big_headers.into_bytes(), 431),
    ];
    for (req, want) in cases {
        let mut c = connect(&s);
        let _ = c.write_all(&req);
        let mut r = BufReader::new(c);
        let resp = read_resp(&mut r, false).unwrap_or_else(|| {
            panic!(
                "no answer to {:?}",
                String::from_utf8_lossy(&req[..req.len().min(60)])
            )
        });
        assert_eq!(
            resp.status,
            want,
            "{:?}",
            String::from_utf8_lossy(&req[..req.len().min(60)])
        );
        assert_eq!(resp.header("connection"), Some("close"));
        assert!(closed_by_server(r));
    }
    // The server is fine afterwards.
    assert_eq!(
        exchange(&s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").status,
        200
    );
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn head_404_405_and_query(backend: Backend) {
    let s = server(backend, 1, HttpConfig::default());
    let r = exchange(&s, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((r.status, r.header("content-length")), (200, Some("12")));
    // No body followed: the next response on the connection parses cleanly.
    let c = connect(&s);
    (&c).write_all(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET /user/7 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut rd = BufReader::new(c);
    assert_eq!(read_resp(&mut rd, true).unwrap().status, 200);
    assert_eq!(read_resp(&mut rd, false).unwrap().text(), "user 7");
    assert_eq!(
        exchange(&s, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").status,
        404
    );
    let r = exchange(&s, b"DELETE /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((r.status, r.header("allow")), (405, Some("POST, PUT")));
    assert_eq!(
        exchange(&s, b"GET /query?a=1&q=yes HTTP/1.1\r\nHost: x\r\n\r\n").text(),
        "yes"
    );
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn expect_100_continue(backend: Backend) {
    let s = server(backend, 1, HttpConfig::default());
    let c = connect(&s);
    (&c).write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let interim = read_resp(&mut r, false).unwrap();
    assert_eq!(interim.status, 100);
    (&c).write_all(b"body").unwrap();
    assert_eq!(read_resp(&mut r, false).unwrap().text(), "body");
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_panicking_handler_gets_500_and_the_server_goes_on(backend: Backend) {
    let s = server(backend, 1, HttpConfig::default());
    let mut c = connect(&s);
    c.write_all(b"GET /panic HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(c);
    let resp = read_resp(&mut r, false).unwrap();
    assert_eq!(
        (resp.status, resp.header("connection")),
        (500, Some("close"))
    );
    assert!(closed_by_server(r));
    assert_eq!(
        exchange(&s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").text(),
        "Hello, world"
    );
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn responses_finished_later_and_from_another_core(backend: Backend) {
    let s = server(backend, 2, HttpConfig::default());
    // Several connections so that both cores accept some.
    for _ in 0..8 {
        assert_eq!(
            exchange(&s, b"GET /later HTTP/1.1\r\nHost: x\r\n\r\n").text(),
            "later"
        );
        let t = exchange(&s, b"GET /cross HTTP/1.1\r\nHost: x\r\n\r\n").text();
        let (here, far) = t
            .strip_prefix("from ")
            .unwrap()
            .split_once(" via ")
            .unwrap();
        assert_ne!(here, far, "{t}");
    }
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn clients_that_reset_or_half_close(backend: Backend) {
    let s = server(backend, 1, HttpConfig::default());
    // Reset mid-request.
    let c = connect(&s);
    (&c).write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        .unwrap();
    socket2::SockRef::from(&c)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c);
    // Reset mid-response (4 MiB answer, read a little).
    let mut c = connect(&s);
    c.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut some = [0u8; 1000];
    c.read_exact(&mut some).unwrap();
    socket2::SockRef::from(&c)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c);
    // Half-close after the request: the answer still comes.
    let c = connect(&s);
    (&c).write_all(b"GET /later HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut r = BufReader::new(c);
    assert_eq!(read_resp(&mut r, false).unwrap().text(), "later");
    assert!(closed_by_server(r));
    // And the server still serves.
    assert_eq!(
        exchange(&s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").status,
        200
    );
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn slow_clients_time_out_and_others_are_served(backend: Backend) {
    let cfg = HttpConfig {
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        ..HttpConfig::default()
    };
    let s = server(backend, 1, cfg);
    // 200 connections that send half a head and stop.
    let slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut c = connect(&s);
            c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            c
        })
        .collect();
    // Meanwhile a normal client is served.
    for _ in 0..10 {
        assert_eq!(
            exchange(&s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").text(),
            "Hello, world"
        );
    }
    // The slow ones are closed by the header timeout.
    for c in slow {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(closed_by_server(BufReader::new(c)));
    }
    // An idle kept-alive connection is closed by the idle timeout.
    let c = connect(&s);
    (&c).write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(c);
    assert_eq!(read_resp(&mut r, false).unwrap().status, 200);
    assert!(closed_by_server(r));
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn streamed_responses_are_chunked(backend: Backend) {
    let s = server(backend, 1, HttpConfig::default());
    let mut c = connect(&s);
    c.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    c.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains("Transfer-Encoding: chunked") && !head.contains("Content-Length"),
        "{head}"
    );
    assert_eq!(body, "6\r\nfirst;\r\n6\r\nsecond\r\n0\r\n\r\n");
    // Keep-alive goes on after a chunked response.
    let c = connect(&s);
    (&c).write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(c);
    let mut chunked = String::new();
    while !chunked.ends_with("0\r\n\r\n") {
        let mut l = String::new();
        assert!(r.read_line(&mut l).unwrap() > 0);
        chunked.push_str(&l);
    }
    assert_eq!(read_resp(&mut r, false).unwrap().text(), "Hello, world");
    // HTTP/1.0: no chunked coding; the body runs to the close.
    let mut c = connect(&s);
    c.write_all(b"GET /stream HTTP/1.0\r\n\r\n").unwrap();
    let mut raw = String::new();
    c.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains("Connection: close") && !head.contains("chunked"),
        "{head}"
    );
    assert_eq!(body, "first;second");
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn graceful_shutdown_finishes_requests_in_flight(backend: Backend) {
    let s = server(backend, 2, HttpConfig::default());
    let addr = s.local_addr();
    // An idle kept-alive connection, and one whose request is being answered (/later
    // answers after 20 ms).
    let idle = connect(&s);
    (&idle)
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut idle_r = BufReader::new(idle);
    assert_eq!(read_resp(&mut idle_r, false).unwrap().status, 200);
    let busy = connect(&s);
    (&busy)
        .write_all(b"GET /later HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let left = s.drain(Duration::from_secs(5)).wait().unwrap();
    assert_eq!(left, 0, "every connection ended before the deadline");
    // The request in flight got its answer, marked as the last on its connection.
    let mut busy_r = BufReader::new(busy);
    let r = read_resp(&mut busy_r, false).unwrap();
    assert_eq!(
        (r.text().as_str(), r.header("connection")),
        ("later", Some("close"))
    );
    assert!(closed_by_server(busy_r));
    assert!(closed_by_server(idle_r));
    // Nobody listens any more.
    assert!(TcpStream::connect(addr).is_err());
}

/// Many short connections leave nothing behind on the loop: no open resources, no
/// pending timers, no connection in the server's registry.
#[on_both_backends]
#[test]
fn closed_connections_leave_nothing_behind(backend: Backend) {
    // Timeouts far beyond the test's bound: a timer left behind would not go away by
    // firing before the check below gives up.
    let cfg = HttpConfig {
        header_timeout: Duration::from_secs(600),
        idle_timeout: Duration::from_secs(600),
        ..HttpConfig::default()
    };
    let s = server(backend, 1, cfg);
    for _ in 0..300 {
        let r = exchange(
            &s,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 200);
    }
    for _ in 0..300 {
        let mut c = connect(&s);
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut r = BufReader::new(c.try_clone().unwrap());
        assert_eq!(read_resp(&mut r, false).unwrap().status, 200);
        drop(c); // the client closes a kept-alive connection
    }
    let deadline = std::time::Instant::now() + util::HANG;
    loop {
        let left = s
            .runtime()
            .call_on_all(|lp| (lp.open_resources(), lp.pending_timers()))
            .wait()
            .unwrap();
        // One open resource: the acceptor. Timers: none per connection.
        if left == vec![(1, 0)] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn curl_agrees(backend: Backend) {
    let Some(curl) = util::require_tool("curl") else {
        return;
    };
    let s = server(backend, 2, HttpConfig::default());
    let url = format!("http://{}/", s.local_addr());
    let out = std::process::Command::new(&curl)
        .args(["-s", "--max-time", "10", &url, &url])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Hello, worldHello, world"
    );
    let post = std::process::Command::new(&curl)
        .args([
            "-s",
            "--max-time",
            "10",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "curl body",
            &format!("{url}echo"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&post.stdout), "curl body");
    s.shutdown().unwrap();
}
