//! A loop's budget for buffered bytes (issue 24, item 4), on both backends: each
//! connection's buffers are bounded, but many clients that pipeline and never read
//! added up (500 of them took hello to 706 MB). Past the budget, the connections that
//! hold the most are held back (they stop reading and answering), counted in the
//! loop's numbers; a client that reads its answers is still served, and the held-back
//! ones get every answer once they read.
mod util;
use util::Listen;

use coreloop::http::{Application, HttpServer, Route};
use coreloop::{Backend, Cores, Runtime};
use coreloop_macros::on_both_backends;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const BUDGET: usize = 4 << 20;
const CLIENTS: usize = 16;
/// 64 KiB answers: 6 MiB for each client, more than the kernel's socket buffers hold.
const GETS: usize = 96;
const ANSWER: usize = 64 * 1024;

fn server(backend: Backend) -> util::Served {
    let app = Application::new()
        .route(
            "/",
            Route::new().get(|_, _, mut r| r.write(vec![b'b'; ANSWER])),
        )
        .route(
            "/async",
            Route::new().get(|_lp, _, mut r| async move {
                r.write(vec![b'b'; ANSWER]);
                r
            }),
        );
    HttpServer::new(app)
        .listen(
            Runtime::builder()
                .backend(backend)
                .cores(Cores::Count(1))
                .buffer_budget(BUDGET),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap()
}

/// A client with a small receive window, so that the answers wait in the server.
fn small_window_client(s: &util::Served) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&s.local_addr().into()).unwrap();
    let c: TcpStream = sock.into();
    c.set_read_timeout(Some(util::HANG)).unwrap();
    c
}

/// Reads one answer; true if it is a 200 with the whole body.
fn whole_answer(r: &mut impl BufRead) -> bool {
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 || !line.starts_with("HTTP/1.1 200") {
        return false;
    }
    let mut len = 0;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 {
            return false;
        }
        if h == "\r\n" {
            break;
        }
        if let Some(v) = h.strip_prefix("Content-Length: ") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).is_ok() && len == ANSWER
}

#[on_both_backends]
#[test]
fn clients_that_pipeline_and_never_read_are_held_within_the_loops_budget(backend: Backend) {
    held_within_the_budget(backend, "/");
}

#[on_both_backends]
#[test]
fn async_answers_to_clients_that_never_read_are_held_within_the_budget(backend: Backend) {
    // Written by a task, outside the stream's dispatch: counted when they wait for a
    // send.
    held_within_the_budget(backend, "/async");
}

fn held_within_the_budget(backend: Backend, path: &str) {
    let s = server(backend);
    let buffered = || s.runtime().stats().wait().unwrap().total().buffered as usize;
    // Each client's answers pass what the kernel takes and then the stream's own
    // high-water mark (1 MiB): together they would hold some 17 MB in the server.
    let reqs = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").repeat(GETS);
    let mut clients = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..CLIENTS {
        let c = small_window_client(&s);
        let mut w = c.try_clone().unwrap();
        let reqs = reqs.clone();
        writers.push(std::thread::spawn(move || {
            w.write_all(reqs.as_bytes()).unwrap()
        }));
        clients.push(c);
    }
    // While nobody reads: the loop holds its budget, plus a high-water mark once (the
    // answers of one stream's step, counted when it ends), plus for each connection at
    // most 16 KiB and an answer past them.
    let mut most = 0;
    let end = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < end {
        most = most.max(buffered());
        std::thread::sleep(Duration::from_millis(10));
    }
    let bound = BUDGET + coreloop::DEFAULT_HIGH_WATER + CLIENTS * (16 * 1024 + ANSWER);
    assert!(
        most > BUDGET / 2 && most <= bound,
        "{most} bytes buffered at most, for a budget of {BUDGET}"
    );
    let holds = s.runtime().stats().wait().unwrap().total().budget_holds;
    assert!(holds >= 1, "connections held back: {holds}");
    // A client that reads its answer is served meanwhile.
    let mut polite = TcpStream::connect(s.local_addr()).unwrap();
    polite.set_read_timeout(Some(util::HANG)).unwrap();
    polite
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert!(
        whole_answer(&mut BufReader::new(polite)),
        "the polite client"
    );
    // Once they read, every held-back client gets every answer.
    for (i, c) in clients.into_iter().enumerate() {
        let mut r = BufReader::new(c);
        let answered = (0..GETS).take_while(|_| whole_answer(&mut r)).count();
        assert_eq!(answered, GETS, "client {i}");
    }
    for w in writers {
        w.join().unwrap();
    }
    let end = Instant::now() + util::HANG;
    while buffered() > 0 {
        assert!(Instant::now() < end, "{} bytes still counted", buffered());
        std::thread::sleep(Duration::from_millis(10));
    }
    s.shutdown().unwrap();
}
