//! Stopping servers as a service does: stop accepting and keep counting, drain what is
//! in flight (after a stop_accepting too), close, drain a whole runtime; and a port that
//! is served already is refused unless sharing it is asked for.
mod util;

use coreloop::http::{Application, HttpServer, Route};
use coreloop::{Backend, Cores, ListenOptions, Runtime, TcpServer};
use coreloop_macros::on_both_backends;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn runtime(backend: Backend) -> Runtime {
    Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(2))
        .build()
        .unwrap()
}

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A server whose connections echo lines and never end by themselves.
fn line_echo() -> TcpServer {
    util::line_echo(1024)
}

/// Connects and makes sure the server has the connection (one echoed line).
fn connected(addr: SocketAddr) -> TcpStream {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(util::HANG)).unwrap();
    c.write_all(b"hi\n").unwrap();
    let mut b = [0u8; 3];
    c.read_exact(&mut b).unwrap();
    c
}

fn at_eof(c: &mut TcpStream) -> bool {
    matches!(c.read(&mut [0u8; 16]), Ok(0))
}

/// An HTTP server with a route that answers after `ms` milliseconds.
fn slow_http(rt: &Runtime) -> coreloop::ServerHandle {
    let app = Application::new().route(
        "/slow/{ms}",
        Route::new().get(|lp, req, mut resp| {
            let ms: u64 = req.param("ms").and_then(|m| m.parse().ok()).unwrap_or(0);
            lp.call_later(Duration::from_millis(ms), move |_| {
                resp.write("finally");
                resp.finish();
            });
        }),
    );
    HttpServer::new(app).serve(rt, any()).unwrap()
}

/// Sends a slow request; the connection and when it was sent.
fn slow_request(addr: SocketAddr, ms: u64) -> TcpStream {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(util::HANG)).unwrap();
    write!(c, "GET /slow/{ms} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    c
}

fn read_answer(c: &mut TcpStream) -> String {
    let mut got = String::new();
    c.read_to_string(&mut got).unwrap();
    got
}

#[on_both_backends]
#[test]
fn after_stop_accepting_open_connections_are_still_counted_drained_and_closed(backend: Backend) {
    let rt = runtime(backend);
    let server = line_echo().serve(&rt, any()).unwrap();
    let mut c = connected(server.local_addr());
    server.stop_accepting().wait().unwrap();
    assert_eq!(server.open_connections().wait().unwrap(), 1);
    // Still served.
    c.write_all(b"again\n").unwrap();
    let mut b = [0u8; 6];
    c.read_exact(&mut b).unwrap();
    // No new connections.
    assert!(TcpStream::connect(server.local_addr()).is_err());
    // A drain waits out its deadline for the open one, then closes it.
    let t0 = Instant::now();
    assert_eq!(server.drain(Duration::from_millis(300)).wait().unwrap(), 1);
    assert!(
        t0.elapsed() >= Duration::from_millis(290),
        "{:?}",
        t0.elapsed()
    );
    assert!(at_eof(&mut c), "the client sees the close");
    assert_eq!(server.open_connections().wait().unwrap(), 0);
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn close_after_stop_accepting_closes_the_open_connections(backend: Backend) {
    let rt = runtime(backend);
    let server = line_echo().serve(&rt, any()).unwrap();
    let mut c = connected(server.local_addr());
    server.stop_accepting().wait().unwrap();
    server.close().wait().unwrap();
    assert!(at_eof(&mut c));
    assert_eq!(server.open_connections().wait().unwrap(), 0);
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn an_http_drain_after_stop_accepting_lets_the_request_in_flight_finish(backend: Backend) {
    let rt = runtime(backend);
    let server = slow_http(&rt);
    let mut c = slow_request(server.local_addr(), 400);
    std::thread::sleep(Duration::from_millis(50)); // the request is in its handler
    server.stop_accepting().wait().unwrap();
    let t0 = Instant::now();
    let cut = server.drain(Duration::from_secs(3)).wait().unwrap();
    let took = t0.elapsed();
    assert_eq!(cut, 0, "nothing was cut");
    assert!(
        took >= Duration::from_millis(300),
        "waited for the answer: {took:?}"
    );
    let got = read_answer(&mut c);
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(got.contains("Connection: close\r\n"), "{got}");
    assert!(got.ends_with("finally"), "{got}");
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_runtime_drain_finishes_every_servers_requests_then_stops_the_loops(backend: Backend) {
    let rt = runtime(backend);
    let a = slow_http(&rt);
    let b = slow_http(&rt);
    let echo = line_echo().serve(&rt, any()).unwrap();
    let mut ca = slow_request(a.local_addr(), 300);
    let mut cb = slow_request(b.local_addr(), 100);
    let mut ce = connected(echo.local_addr());
    std::thread::sleep(Duration::from_millis(50));
    let handles = rt.handles().to_vec();
    // The echo connection never ends by itself: it is the one cut at the deadline.
    let cut = rt.drain(Duration::from_secs(1)).unwrap();
    assert_eq!(cut, 1);
    assert!(read_answer(&mut ca).ends_with("finally"));
    assert!(read_answer(&mut cb).ends_with("finally"));
    assert!(at_eof(&mut ce));
    assert!(handles.iter().all(|h| h.is_closed()));
}

#[on_both_backends]
#[test]
fn a_port_this_process_serves_is_refused_unless_shared(backend: Backend) {
    let rt = runtime(backend);
    let lines = line_echo().serve(&rt, any()).unwrap();
    let port = lines.local_addr();
    // An HTTP server on the line server's port: refused, not silently sharing it.
    let app = Application::new().route("/", Route::new().get(|_, _, mut r| r.write("http")));
    let e = HttpServer::new(app.clone()).serve(&rt, port).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AddrInUse, "{e}");
    // Every connection still goes to the line server.
    for _ in 0..20 {
        drop(connected(port));
    }
    // Two servers that both opt in share it (a rolling restart by hand).
    let shared = ListenOptions {
        share_port: true,
        ..ListenOptions::default()
    };
    let one = line_echo()
        .config(shared.clone())
        .serve(&rt, any())
        .unwrap();
    let two = line_echo().config(shared).serve(&rt, one.local_addr());
    assert!(two.is_ok(), "{two:?}");
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_port_another_socket_holds_is_refused(backend: Backend) {
    let rt = runtime(backend);
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let e = line_echo()
        .serve(&rt, other.local_addr().unwrap())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AddrInUse, "{e}");
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_servers_stats_count_its_connections_per_core(backend: Backend) {
    let rt = runtime(backend);
    let server = line_echo().serve(&rt, any()).unwrap();
    let clients: Vec<TcpStream> = (0..8).map(|_| connected(server.local_addr())).collect();
    let stats = server.stats().wait().unwrap();
    assert_eq!(stats.cores.len(), 2);
    assert_eq!((stats.accepted(), stats.open()), (8, 8));
    assert!(stats.http.is_none());
    drop(clients);
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn dropping_a_server_handle_leaves_the_server_serving_and_attached(backend: Backend) {
    let rt = runtime(backend);
    let addr = {
        let server = line_echo().serve(&rt, any()).unwrap();
        server.local_addr()
    }; // every handle dropped
    let mut c = connected(addr);
    c.write_all(b"still\n").unwrap();
    let mut b = [0u8; 6];
    c.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"still\n");
    // The runtime still knows it: its drain cuts the open connection.
    assert_eq!(rt.drain(Duration::from_millis(100)).unwrap(), 1);
    assert!(at_eof(&mut c));
}
