//! Every HTTP request gets an answer: 5xx where the work failed (a call to another core
//! that panicked or could not run, a response abandoned unfinished, a handler past its
//! deadline), never an empty 200; and a streamed response has flow control (it waits
//! for a slow client, learns that the client has gone, and is told when a part cannot
//! be buffered).
mod util;

use coreloop::http::{Application, HttpConfig, Response, Route};
use coreloop::{Backend, CallError, IoLoop, LoopHandle};
use coreloop_macros::on_both_backends;
use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// A handle to a loop that is already closed.
fn closed_loop() -> LoopHandle {
    IoLoop::with_backend(Backend::Epoll).unwrap().handle()
}

fn server(backend: Backend, app: Application, cfg: HttpConfig) -> util::Served {
    util::serve_http(backend, app, cfg)
}

/// One request (HTTP/1.0: the server closes after it); the status and the body.
fn get(s: &util::Served, path: &str) -> (u16, String) {
    util::get_status_and_body(s.local_addr(), path)
}

/// Answers a call's outcome: 200 with the value, or 500/503 saying why.
fn answer(mut r: Response, outcome: Result<String, CallError>) {
    match outcome {
        Ok(v) => r.write(v),
        Err(CallError::Panicked(m)) => {
            r.set_status(500);
            r.write(format!("the owner core failed: {m}"));
        }
        Err(CallError::Closed) => {
            r.set_status(503);
            r.write("the owner core is gone");
        }
        Err(e) => {
            r.set_status(500);
            r.write(format!("the call failed: {e}"));
        }
    }
    r.finish();
}

fn app() -> Application {
    let dead = closed_loop();
    Application::new()
        .route(
            "/other-core-panics",
            Route::new().get(|lp, _, r| {
                let far = lp.shard_handle((lp.shard_id() + 1) % 2).unwrap();
                lp.call_on(
                    &far,
                    |_| -> String { panic!("index out of range") }).then(move |_, outcome| answer(r, outcome));
            }),
        )
        .route(
            "/other-core-closed",
            Route::new().get(move |lp, _, r| {
                lp.call_on(&dead, |_| String::from("never")).then(move |_, o| answer(r, o));
            }),
        )
        .route(
            "/continuation-forgets",
            Route::new().get(|lp, _, mut r| {
                let far = lp.shard_handle((lp.shard_id() + 1) % 2).unwrap();
                r.write("partial");
                // The continuation drops the response without finishing it.
                lp.call_on(&far, |_| ()).then(move |_, _| drop(r));
            }),
        )
        .route(
            "/timer-cancelled",
            Route::new().get(|lp, _, r| {
                let id = lp.call_later(Duration::from_secs(60), move |_| r.finish());
                lp.add_callback(move |lp| {
                    lp.remove_timeout(id); // drops the closure, and the response in it
                });
            }),
        )
        .route(
            "/never",
            Route::new().get(|_, _, r| {
                // Kept somewhere and never finished.
                thread_local!(static KEPT: RefCell<Vec<Response>> = const { RefCell::new(Vec::new()) });
                KEPT.with(|k| k.borrow_mut().push(r));
            }),
        )
        .route(
            "/stream-never",
            Route::new().get(|_, _, mut r| {
                r.write("first part");
                r.flush().unwrap();
                // Kept somewhere and never finished: the part that went out stays the
                // only one.
                thread_local!(static KEPT: RefCell<Vec<Response>> = const { RefCell::new(Vec::new()) });
                KEPT.with(|k| k.borrow_mut().push(r));
            }),
        )
        .route(
            "/late",
            Route::new().get(|lp, _, mut r| {
                // Finished after the deadline has answered for it: ignored.
                lp.call_later(Duration::from_millis(400), move |_| {
                    r.write("too late");
                    r.finish();
                });
            }),
        )
        .route("/fine", Route::new().get(|_, _, mut r| r.write("fine")))
}

#[on_both_backends]
#[test]
fn failed_work_on_another_core_is_answered_with_why(backend: Backend) {
    let s = server(backend, app(), HttpConfig::default());
    assert_eq!(
        get(&s, "/other-core-panics"),
        (500, "the owner core failed: index out of range".into())
    );
    assert_eq!(
        get(&s, "/other-core-closed"),
        (503, "the owner core is gone".into())
    );
    assert_eq!(get(&s, "/fine"), (200, "fine".into()));
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_response_abandoned_unfinished_is_a_500_never_an_empty_200(backend: Backend) {
    let s = server(backend, app(), HttpConfig::default());
    assert_eq!(
        get(&s, "/continuation-forgets"),
        (500, "500: Internal Server Error".into())
    );
    assert_eq!(
        get(&s, "/timer-cancelled"),
        (500, "500: Internal Server Error".into())
    );
    assert_eq!(get(&s, "/fine"), (200, "fine".into()));
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_handler_past_its_deadline_is_answered_503(backend: Backend) {
    let cfg = HttpConfig {
        handler_timeout: Some(Duration::from_millis(200)),
        ..HttpConfig::default()
    };
    let s = server(backend, app(), cfg);
    let t0 = Instant::now();
    assert_eq!(get(&s, "/never"), (503, "503: Service Unavailable".into()));
    assert!(t0.elapsed() >= Duration::from_millis(200));
    // A handler that finishes in time is not affected.
    assert_eq!(get(&s, "/fine"), (200, "fine".into()));
    // A response finished after its 503: nothing more goes out, the connection closes.
    assert_eq!(get(&s, "/late"), (503, "503: Service Unavailable".into()));
    // A streamed response past its deadline is cut off: its head and first part, no
    // last chunk.
    let mut c = TcpStream::connect(s.local_addr()).unwrap();
    c.set_read_timeout(Some(util::HANG)).unwrap();
    c.write_all(b"GET /stream-never HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut all = String::new();
    c.read_to_string(&mut all).unwrap();
    assert!(all.starts_with("HTTP/1.1 200 OK\r\n"), "{all:?}");
    assert!(all.contains("Transfer-Encoding: chunked\r\n"), "{all:?}");
    assert!(all.ends_with("\r\n\r\na\r\nfirst part\r\n"), "{all:?}");
    s.shutdown().unwrap();
}

/// The handler's deadline counts from each request's dispatch, on a connection that
/// served others and waited between them (one timer per connection serves every
/// deadline it has).
#[on_both_backends]
#[test]
fn the_handler_deadline_counts_per_request_on_a_kept_alive_connection(backend: Backend) {
    let cfg = HttpConfig {
        handler_timeout: Some(Duration::from_millis(300)),
        idle_timeout: Duration::from_secs(30),
        ..HttpConfig::default()
    };
    let s = server(backend, app(), cfg);
    let mut c = TcpStream::connect(s.local_addr()).unwrap();
    c.set_read_timeout(Some(util::HANG)).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut answer_to = |path: &str| {
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut status = String::new();
        r.read_line(&mut status).unwrap();
        let mut len = 0;
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if let Some(v) = line.strip_prefix("Content-Length: ") {
                len = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        (status, String::from_utf8(body).unwrap())
    };
    for _ in 0..3 {
        // Answered in time, then a pause longer than the handler's deadline.
        assert_eq!(answer_to("/fine").1, "fine");
        std::thread::sleep(Duration::from_millis(400));
    }
    let t0 = Instant::now();
    let (status, body) = answer_to("/never");
    assert!(status.starts_with("HTTP/1.1 503 "), "{status:?}");
    assert_eq!(body, "503: Service Unavailable");
    assert!(t0.elapsed() >= Duration::from_millis(300));
    s.shutdown().unwrap();
}

const PART: usize = 64 * 1024;
const PARTS: usize = 1000;

/// Streams PARTS parts of PART bytes, waiting for the client whenever the connection is
/// over its high-water mark; counts the parts produced and whether it ever waited.
fn stream_parts(
    lp: &IoLoop,
    mut r: Response,
    mut i: usize,
    made: Arc<AtomicUsize>,
    waited: Arc<AtomicBool>,
) {
    while i < PARTS {
        if r.client_gone() {
            return;
        }
        if r.over_high_water() {
            waited.store(true, Ordering::SeqCst);
            return r.on_drain(move |lp, r| stream_parts(lp, r, i, made, waited));
        }
        r.write(vec![b'a' + (i % 26) as u8; PART]);
        if r.flush().is_err() {
            return;
        }
        made.fetch_add(1, Ordering::SeqCst);
        i += 1;
    }
    let _ = lp;
    r.finish();
}

#[on_both_backends]
#[test]
fn a_streamed_response_waits_for_a_slow_client(backend: Backend) {
    let made = Arc::new(AtomicUsize::new(0));
    let waited = Arc::new(AtomicBool::new(false));
    let (m, w) = (made.clone(), waited.clone());
    let app = Application::new().route(
        "/parts",
        Route::new().get(move |lp, _, r| stream_parts(&lp, r, 0, m.clone(), w.clone())),
    );
    let s = server(backend, app, HttpConfig::default());
    let mut c = TcpStream::connect(s.local_addr()).unwrap();
    c.set_read_timeout(Some(util::HANG)).unwrap();
    c.write_all(b"GET /parts HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // The client does not read: the handler must stop well short of 64 MB.
    std::thread::sleep(Duration::from_millis(500));
    let early = made.load(Ordering::SeqCst);
    assert!(
        waited.load(Ordering::SeqCst),
        "the handler saw back-pressure"
    );
    assert!(
        early * PART < 16 << 20,
        "{early} parts ({} MB) made while the client read nothing",
        (early * PART) >> 20
    );
    // Now it reads: everything arrives, in order, de-chunked.
    let mut r = BufReader::new(c);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    for i in 0..PARTS {
        line.clear();
        r.read_line(&mut line).unwrap();
        assert_eq!(
            usize::from_str_radix(line.trim_end(), 16).unwrap(),
            PART,
            "part {i}"
        );
        let mut part = vec![0u8; PART + 2];
        r.read_exact(&mut part).unwrap();
        assert!(part[..PART].iter().all(|&b| b == b'a' + (i % 26) as u8));
    }
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "0\r\n");
    assert_eq!(made.load(Ordering::SeqCst), PARTS);
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_stream_learns_that_its_client_has_gone(backend: Backend) {
    // A server-sent-events style handler: a tick every 5 ms until the client goes.
    let (tx, rx) = mpsc::channel::<usize>();
    let tx = Arc::new(Mutex::new(tx));
    let app = Application::new().route(
        "/events",
        Route::new().get(move |lp, _, mut r| {
            r.write("start\n");
            let _ = r.flush();
            fn tick(lp: &IoLoop, mut r: Response, n: usize, tx: Arc<Mutex<mpsc::Sender<usize>>>) {
                if r.client_gone() {
                    let _ = tx.lock().unwrap().send(n);
                    return;
                }
                r.write(format!("event {n}\n"));
                let _ = r.flush();
                lp.call_later(Duration::from_millis(5), move |lp| tick(lp, r, n + 1, tx));
            }
            tick(&lp, r, 0, tx.clone());
        }),
    );
    let s = server(backend, app, HttpConfig::default());
    let mut c = TcpStream::connect(s.local_addr()).unwrap();
    c.set_read_timeout(Some(util::HANG)).unwrap();
    c.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("event 3") {
        let mut b = [0u8; 256];
        let n = match c.read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.unwrap(),
        };
        assert!(n > 0);
        got.extend_from_slice(&b[..n]);
    }
    drop(c);
    let ticks = rx
        .recv_timeout(util::HANG)
        .expect("the handler saw the client go");
    assert!(ticks >= 3);
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_part_too_big_to_buffer_is_reported_to_the_handler(backend: Backend) {
    let (tx, rx) = mpsc::channel::<String>();
    let tx = Arc::new(Mutex::new(tx));
    let app = Application::new().route(
        "/huge",
        Route::new().get(move |_, _, mut r| {
            r.write("head;");
            let _ = r.flush();
            // 65 MiB at once: past the connection's 64 MiB write limit.
            r.write(vec![b'x'; 65 << 20]);
            let e = r.flush().expect_err("the part cannot be buffered");
            let _ = tx.lock().unwrap().send(e.to_string());
        }),
    );
    let s = server(backend, app, HttpConfig::default());
    let mut c = TcpStream::connect(s.local_addr()).unwrap();
    c.write_all(b"GET /huge HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let why = rx.recv_timeout(util::HANG).unwrap();
    assert!(why.contains("write buffer over its limit"), "{why}");
    s.shutdown().unwrap();
}
