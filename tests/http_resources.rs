//! What one connection may cost the server, over raw sockets on both backends (issue
//! 10, items 8-11): a client that pipelines without reading, one that stops reading
//! after its last request, one that resets in the middle of a body, slow ones.
mod util;
use util::Listen;

use coreloop_macros::on_both_backends;

use coreloop::http::{Application, HttpConfig, HttpServer, Route};
use coreloop::{Backend, Cores, Runtime};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// 64 KiB per answer of /big; `handled` counts the requests given to a handler.
fn server(backend: Backend, cfg: HttpConfig, handled: Arc<AtomicUsize>) -> util::Served {
    let app = Application::new()
        .route(
            "/",
            Route::new()
                .get(|_, _, mut r| r.write("Hello, world"))
                .post(|_, req, mut r| r.write(req.body())),
        )
        .route(
            "/later",
            Route::new().get(|lp, _, mut r| {
                lp.call_later(Duration::from_millis(50), move |_| {
                    r.write("later");
                    r.finish();
                });
            }),
        )
        .route(
            "/big",
            Route::new().get(move |_, _, mut r| {
                handled.fetch_add(1, Ordering::SeqCst);
                r.write(vec![b'b'; 64 * 1024]);
            }),
        );
    HttpServer::new(app)
        .config(cfg)
        .listen(
            Runtime::builder().backend(backend).cores(Cores::Count(1)),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap()
}

/// A client socket with a small receive buffer (so little sits in the kernel).
fn small_window_client(s: &util::Served) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(16 * 1024).unwrap();
    sock.connect(&s.local_addr().into()).unwrap();
    let c: TcpStream = sock.into();
    c.set_read_timeout(Some(util::HANG)).unwrap();
    c
}

/// Waits until `f` holds, failing the test after `util::HANG`.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + util::HANG;
    while !f() {
        assert!(Instant::now() < end, "not within {:?}: {what}", util::HANG);
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `f()` gives the same value twice 300 ms apart; returns it.
fn settled(mut f: impl FnMut() -> usize) -> usize {
    let mut last = f();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = f();
        if now == last {
            return now;
        }
        last = now;
    }
}

fn open(s: &util::Served) -> usize {
    s.open_connections().wait().unwrap()
}

/// Item 8: a client that pipelines 400 requests for 64 KiB answers (25 MiB) and reads
/// nothing: the server stops handling them once the unsent answers pass the stream's
/// high-water mark (1 MiB), and resumes as the client reads; every answer comes.
#[on_both_backends]
#[test]
fn pipelining_without_reading_is_bounded(backend: Backend) {
    const N: usize = 400;
    let handled = Arc::new(AtomicUsize::new(0));
    let s = server(backend, HttpConfig::default(), handled.clone());
    let c = small_window_client(&s);
    let writer = {
        let mut c = c.try_clone().unwrap();
        std::thread::spawn(move || {
            let reqs = "GET /big HTTP/1.1\r\nHost: x\r\n\r\n".repeat(N);
            let _ = c.write_all(reqs.as_bytes());
        })
    };
    let stalled = settled(|| handled.load(Ordering::SeqCst));
    // Bounded by the high-water mark plus what the kernel's socket buffers hold, far
    // below everything asked for.
    assert!(
        stalled < N / 2,
        "{stalled} of {N} answers made for a client that reads nothing"
    );
    let mut r = BufReader::new(c);
    for i in 0..N {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "answer {i}: {line:?}");
        let mut len = 0;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.strip_prefix("Content-Length: ") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        assert_eq!(len, 64 * 1024);
    }
    writer.join().unwrap();
    assert_eq!(handled.load(Ordering::SeqCst), N);
    s.shutdown().unwrap();
}

/// Item 9: a connection that ended its side (HTTP/1.0, `Connection: close`, a
/// half-close, or pipelining past the high-water mark) while its answers cannot be
/// flushed is closed after `send_timeout` without progress, with its fd and buffers.
#[on_both_backends]
#[test]
fn a_client_that_stops_reading_is_closed_after_the_send_timeout(backend: Backend) {
    let cfg = HttpConfig {
        send_timeout: Duration::from_millis(300),
        ..HttpConfig::default()
    };
    let s = server(backend, cfg, Arc::default());
    let asks: [&[u8]; 4] = [
        &b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n".repeat(64)[..],
        &[
            &b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n".repeat(63)[..],
            b"GET /big HTTP/1.0\r\n\r\n",
        ]
        .concat(),
        &[
            &b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n".repeat(63)[..],
            b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        ]
        .concat(),
        &b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n".repeat(128)[..],
    ];
    let mut clients = Vec::new();
    for (i, ask) in asks.iter().enumerate() {
        let mut c = small_window_client(&s);
        c.write_all(ask).unwrap();
        if i == 3 {
            c.shutdown(Shutdown::Write).unwrap(); // half-close after the requests
        }
        clients.push(c); // kept open, never read
    }
    eventually("every connection closed by the send timeout", || {
        open(&s) == 0
    });
    // Each client sees the close once it reads what was sent before it.
    for mut c in clients {
        let mut sink = Vec::new();
        match c.read_to_end(&mut sink) {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    s.shutdown().unwrap();
}

/// Item 9: the send timeout counts from the last progress, whichever timer of the
/// connection fires first: a head or idle deadline that falls due while the client is
/// stuck does not restart it (it used to, when a send finished after the pause, which
/// kept a stuck connection up to one more send timeout).
#[on_both_backends]
#[test]
fn a_stuck_client_is_closed_one_send_timeout_after_the_last_progress(backend: Backend) {
    let cfg = HttpConfig {
        header_timeout: Duration::from_secs(3),
        idle_timeout: Duration::from_secs(3),
        send_timeout: Duration::from_secs(4),
        ..HttpConfig::default()
    };
    let s = server(backend, cfg, Arc::default());
    let mut c = small_window_client(&s);
    c.write_all(&b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n".repeat(64))
        .unwrap();
    let asked = Instant::now();
    eventually("the connection open", || open(&s) == 1);
    eventually("the stuck connection closed", || open(&s) == 0);
    let took = asked.elapsed();
    // About 4 s after the answers stopped going out; restarted by the 3 s deadline it
    // would be about 7 s. The margin is for a loaded machine.
    assert!(
        took >= Duration::from_millis(3500) && took < Duration::from_millis(6000),
        "closed after {took:?}"
    );
    s.shutdown().unwrap();
}

/// Item 9: a slow reader that keeps reading is not cut off by the send timeout.
#[on_both_backends]
#[test]
fn a_slow_reader_that_makes_progress_is_served(backend: Backend) {
    let cfg = HttpConfig {
        send_timeout: Duration::from_millis(300),
        ..HttpConfig::default()
    };
    let s = server(backend, cfg, Arc::default());
    let mut c = small_window_client(&s);
    c.write_all(&b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n".repeat(40))
        .unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    // 2.6 MB at 16 KiB per 100 ms: some 16 s in all, far more than the send timeout,
    // but never 300 ms without progress.
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "closed while the client was still reading");
        got.extend_from_slice(&buf[..n]);
        std::thread::sleep(Duration::from_millis(100));
    }
    c.read_to_end(&mut got).unwrap();
    assert!(
        got.ends_with(b"Hello, world"),
        "every answer, then the last"
    );
    s.shutdown().unwrap();
}

/// Item 9: after a complete request, a partial next head is timed by header_timeout
/// (300 ms here), not by idle_timeout (an hour).
#[on_both_backends]
#[test]
fn a_partial_head_after_a_request_gets_the_header_timeout(backend: Backend) {
    let cfg = HttpConfig {
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(3600),
        ..HttpConfig::default()
    };
    let s = server(backend, cfg, Arc::default());
    let mut c = TcpStream::connect(s.local_addr()).unwrap();
    c.set_read_timeout(Some(util::HANG)).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost:")
        .unwrap();
    let mut raw = Vec::new();
    let r = c.read_to_end(&mut raw);
    assert!(
        r.is_ok(),
        "closed by the server, not by our read timeout: {r:?}"
    );
    assert!(
        raw.ends_with(b"Hello, world"),
        "the first request was answered"
    );
    // An idle kept-alive connection (nothing of a next request) stays open meanwhile.
    let mut idle = TcpStream::connect(s.local_addr()).unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    idle.set_read_timeout(Some(Duration::from_millis(900)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = idle.read(&mut buf).unwrap();
    assert!(n > 0);
    let e = idle.read(&mut buf).unwrap_err();
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{e}"
    );
    s.shutdown().unwrap();
}

/// Item 10: a reset while the server waits for the rest of a body closes the
/// connection then, on either backend (the body timeout is an hour).
#[on_both_backends]
#[test]
fn a_reset_during_a_body_closes_at_once(backend: Backend) {
    let cfg = HttpConfig {
        body_timeout: Duration::from_secs(3600),
        ..HttpConfig::default()
    };
    let s = server(backend, cfg, Arc::default());
    for round in 0..20 {
        let mut c = TcpStream::connect(s.local_addr()).unwrap();
        let body_part = vec![b'x'; round * 7000];
        c.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
            .unwrap();
        c.write_all(&body_part).unwrap();
        eventually("the server reads the body", || open(&s) == 1);
        std::thread::sleep(Duration::from_millis(5));
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(c); // RST
        eventually("the reset connection closed", || open(&s) == 0);
    }
    // The body arrives while an earlier answer is still being made (no read pending:
    // receiving pauses at 64 KiB), then the reset.
    for round in 0..10 {
        let mut c = TcpStream::connect(s.local_addr()).unwrap();
        let mut ask = b"GET /later HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        ask.extend_from_slice(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n");
        ask.extend_from_slice(&vec![b'x'; 50_000 + round * 20_000]);
        c.write_all(&ask).unwrap();
        std::thread::sleep(Duration::from_millis(100 + round as u64 * 10));
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(c); // RST
        eventually("the reset connection closed", || open(&s) == 0);
    }
    s.shutdown().unwrap();
}

/// Item 11: slowloris connections are closed at the header timeout while another
/// client is served; a trickled body is closed at the body deadline whatever its rate.
#[on_both_backends]
#[test]
fn slow_clients_are_closed_and_others_served(backend: Backend) {
    let cfg = HttpConfig {
        header_timeout: Duration::from_millis(500),
        body_timeout: Duration::from_millis(500),
        ..HttpConfig::default()
    };
    let s = server(backend, cfg, Arc::default());
    let slow: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut c = TcpStream::connect(s.local_addr()).unwrap();
            c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            c
        })
        .collect();
    // One byte at a time keeps coming on a few: progress does not extend the deadline.
    let tricklers: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut c = TcpStream::connect(s.local_addr()).unwrap();
            c.write_all(b"GET / HTTP/1.1\r\n").unwrap();
            c
        })
        .collect();
    let body_trickler = {
        let mut c = TcpStream::connect(s.local_addr()).unwrap();
        c.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
            .unwrap();
        c
    };
    let trickle = std::thread::spawn(move || {
        let mut all = tricklers;
        all.push(body_trickler);
        let mut closed = 0;
        for _ in 0..200 {
            closed = all
                .iter()
                .filter(|c| {
                    let mut w: &TcpStream = c;
                    w.write_all(b"a").is_err()
                })
                .count();
            if closed == all.len() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        closed
    });
    // Meanwhile a normal client is served.
    for _ in 0..20 {
        let mut c = TcpStream::connect(s.local_addr()).unwrap();
        c.set_read_timeout(Some(util::HANG)).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut raw = Vec::new();
        c.read_to_end(&mut raw).unwrap();
        assert!(raw.ends_with(b"Hello, world"));
    }
    // The trickled ones were cut off (their 10 s of trickling would outlast the test).
    assert_eq!(
        trickle.join().unwrap(),
        6,
        "every trickling client closed by its deadline"
    );
    for mut c in slow {
        c.set_read_timeout(Some(util::HANG)).unwrap();
        let mut sink = Vec::new();
        match c.read_to_end(&mut sink) {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    eventually("no connection left", || open(&s) == 0);
    s.shutdown().unwrap();
}
