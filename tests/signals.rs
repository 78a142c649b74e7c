//! SIGTERM and SIGINT stop a Runtime built with `stop_on_signals(true)`, gracefully: the
//! requests in flight on every server attached to it are answered first.
//!
//! Its own test binary (so its own process): a signal reaches the whole process, and no
//! other test may be running a runtime when it arrives. The two cases run one after the
//! other in one test for the same reason.

use coreloop::http::{Application, HttpServer, Route};
use coreloop::{Backend, Cores, Runtime, TcpServer};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

fn stops_on(backend: Backend, signal: i32) {
    let rt = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(2))
        .stop_on_signals(true)
        .build()
        .unwrap();
    let handles = rt.handles().to_vec();
    // Both loops are up and answering before the signal.
    assert_eq!(
        rt.call_on_all(|lp| lp.shard_id()).wait().unwrap(),
        vec![0, 1]
    );
    signal_hook::low_level::raise(signal).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(rt.wait().is_ok()).unwrap());
    let clean = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the runtime did not stop on the signal");
    assert!(clean);
    assert!(handles.iter().all(|h| h.is_closed()));
}

/// A request in flight when the signal comes is answered in full; a second server on
/// the same runtime is drained too; then the loops stop.
fn drains_on(backend: Backend, signal: i32) {
    let rt = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(2))
        .stop_on_signals(true)
        .drain_deadline(Duration::from_secs(1))
        .build()
        .unwrap();
    let app = Application::new().route(
        "/slow",
        Route::new().get(|_lp, _req, mut resp| async move {
            coreloop::sleep(Duration::from_millis(400)).await;
            resp.write("answered in full");
            resp
        }),
    );
    let http = HttpServer::new(app)
        .serve(&rt, "127.0.0.1:0".parse().unwrap())
        .unwrap();
    let tcp = TcpServer::new(|_, s| {
        s.read_until_close().then(|_, _, _| {});
    })
    .serve(&rt, "127.0.0.1:0".parse().unwrap())
    .unwrap();
    let mut idle = TcpStream::connect(tcp.local_addr()).unwrap();
    let mut c = TcpStream::connect(http.local_addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100)); // in the handler now
    signal_hook::low_level::raise(signal).unwrap();
    let mut got = String::new();
    c.read_to_string(&mut got).unwrap();
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got:?}");
    assert!(got.contains("Connection: close\r\n"), "{got:?}");
    assert!(got.ends_with("answered in full"), "{got:?}");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(rt.wait().is_ok()).unwrap());
    let clean = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the runtime did not stop after draining");
    assert!(clean);
    // The idle connection of the other server was cut at the deadline or by the stop.
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert!(matches!(idle.read(&mut [0u8; 8]), Ok(0) | Err(_)));
}

#[test]
fn sigterm_and_sigint_stop_every_loop_on_both_backends() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    stops_on(Backend::Epoll, SIGTERM);
    stops_on(Backend::Uring, SIGINT);
    stops_on(Backend::Uring, SIGTERM);
    stops_on(Backend::Epoll, SIGINT);
    drains_on(Backend::Epoll, SIGTERM);
    drains_on(Backend::Uring, SIGTERM);
    drains_on(Backend::Uring, SIGINT);
}
