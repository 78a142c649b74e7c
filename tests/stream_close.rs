//! How a stream ends, as a user hits it: dropping the last handle closes the connection
//! (gracefully: what was written still goes out), a write that has resolved is delivered
//! by a following close, a close waits for the bytes within the linger time, and the
//! futures traits' `close` means the stream's.
mod util;

use coreloop::{Backend, Cores, Runtime, StreamError, TcpServer};
use coreloop_macros::on_both_backends;
use std::cell::Cell;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::time::{Duration, Instant};
use util::{new_loop, run, tcp_pair};

fn runtime(backend: Backend) -> Runtime {
    Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(1))
        .build()
        .unwrap()
}

/// Reads until the server closes; the time that took.
fn read_to_close(c: &mut TcpStream) -> (String, Duration) {
    c.set_read_timeout(Some(util::HANG)).unwrap();
    let t0 = Instant::now();
    let mut got = String::new();
    c.read_to_string(&mut got)
        .expect("the server closes within the bound");
    (got, t0.elapsed())
}

/// Waits until `f` holds (bounded by `util::HANG`).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + util::HANG;
    while !f() {
        assert!(Instant::now() < end, "{what}: not within {:?}", util::HANG);
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[on_both_backends]
#[test]
fn a_connection_handler_that_drops_its_stream_closes_the_connection(backend: Backend) {
    let rt = runtime(backend);
    let server = TcpServer::new(|_, s| drop(s))
        .serve(&rt, "127.0.0.1:0".parse().unwrap())
        .unwrap();
    for _ in 0..20 {
        let mut c = TcpStream::connect(server.local_addr()).unwrap();
        let (got, _) = read_to_close(&mut c);
        assert_eq!(got, "");
    }
    eventually("no connection left open", || {
        server.open_connections().wait().unwrap() == 0
    });
    assert_eq!(
        rt.call_on(0, |lp| lp.open_resources()).wait().unwrap(),
        1, // the acceptor
        "no stream left in the loop's table"
    );
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn an_async_handler_that_returns_early_with_an_error_closes_the_connection(backend: Backend) {
    let rt = runtime(backend);
    let server = TcpServer::new(|_, s| async move {
        // The client sends no newline within 4 bytes: `?` returns at once.
        let line = s.read_until(b"\n", 4).await?;
        s.write(&line).await?;
        Ok::<(), std::io::Error>(())
    })
    .serve(&rt, "127.0.0.1:0".parse().unwrap())
    .unwrap();
    let mut c = TcpStream::connect(server.local_addr()).unwrap();
    c.write_all(b"far too long\n").unwrap();
    let (got, _) = read_to_close(&mut c);
    assert_eq!(got, "");
    eventually("no connection left open", || {
        server.open_connections().wait().unwrap() == 0
    });
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_dropped_stream_still_sends_what_was_written(backend: Backend) {
    let rt = runtime(backend);
    // 2 MiB written, then the handle dropped at once: all of it arrives, then EOF.
    let server = TcpServer::new(|_, s| {
        s.write(&vec![b'x'; 2 << 20]);
    })
    .serve(&rt, "127.0.0.1:0".parse().unwrap())
    .unwrap();
    let mut c = TcpStream::connect(server.local_addr()).unwrap();
    std::thread::sleep(Duration::from_millis(50)); // the server is stuck behind us now
    let (got, _) = read_to_close(&mut c);
    assert_eq!(got.len(), 2 << 20);
    assert!(got.bytes().all(|b| b == b'x'));
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_pending_read_keeps_a_stream_nobody_holds_and_its_end_closes_it(backend: Backend) {
    let lp = new_loop(backend);
    let (s, mut client) = tcp_pair(&lp);
    s.read_until(b"\n", 64).then(|_, s, line| {
        s.write(&line.unwrap());
        // Nothing waits on it and nobody holds it after this: it closes.
    });
    drop(s);
    assert_eq!(lp.open_resources(), 1, "the read keeps it");
    client.write_all(b"ping\n").unwrap();
    lp.call_later(Duration::from_millis(100), |lp| lp.stop());
    run(&lp);
    let (got, _) = read_to_close(&mut client);
    assert_eq!(got, "ping\n");
    assert_eq!(lp.open_resources(), 0);
}

#[on_both_backends]
#[test]
fn a_stream_made_and_dropped_closes_its_socket(backend: Backend) {
    let lp = new_loop(backend);
    let (s, mut client) = tcp_pair(&lp);
    drop(s);
    lp.call_later(Duration::from_millis(20), |lp| lp.stop());
    run(&lp);
    assert_eq!(lp.open_resources(), 0);
    let (got, _) = read_to_close(&mut client);
    assert_eq!(got, "");
}

#[on_both_backends]
#[test]
fn a_resolved_write_then_close_delivers_the_bytes(backend: Backend) {
    let lp = new_loop(backend);
    let (s, mut client) = tcp_pair(&lp);
    lp.run_until_complete(async move {
        // The natural port of Tornado's `yield stream.write(data); stream.close()`.
        s.write(b"bye").await.unwrap();
        s.close();
    })
    .unwrap();
    // The close may still be sending: let the loop run it out.
    lp.call_later(Duration::from_millis(20), |lp| lp.stop());
    run(&lp);
    let (got, _) = read_to_close(&mut client);
    assert_eq!(got, "bye");
}

#[on_both_backends]
#[test]
fn writes_not_awaited_then_close_deliver_every_byte_in_order(backend: Backend) {
    let lp = new_loop(backend);
    let (s, mut client) = tcp_pair(&lp);
    let closed: Rc<Cell<Option<bool>>> = Rc::default();
    let c = closed.clone();
    for i in 0..100 {
        s.write(format!("{i},").as_bytes());
    }
    s.close().then(move |lp, _, r| {
        c.set(Some(r.is_ok()));
        lp.stop();
    });
    run(&lp);
    assert_eq!(
        closed.get(),
        Some(true),
        "the close answers once the bytes are out"
    );
    let (got, _) = read_to_close(&mut client);
    let want: String = (0..100).map(|i| format!("{i},")).collect();
    assert_eq!(got, want);
}

#[on_both_backends]
#[test]
fn futures_close_flushes_and_closes_as_the_stream_does(backend: Backend) {
    use futures::AsyncWriteExt;
    let lp = new_loop(backend);
    let (s, mut client) = tcp_pair(&lp);
    lp.run_until_complete(async move {
        let mut s = s;
        // `write_all` through AsyncWrite buffers; `close` (the trait's, by name) sends
        // and closes: the inherent method of the same name means the same.
        AsyncWriteExt::write_all(&mut s, b"through the trait")
            .await
            .unwrap();
        AsyncWriteExt::close(&mut s).await.unwrap();
        assert!(s.closed());
        s.close().await.unwrap(); // the inherent one, again: already closed, fine
    })
    .unwrap();
    let (got, _) = read_to_close(&mut client);
    assert_eq!(got, "through the trait");
}

#[on_both_backends]
#[test]
fn a_close_whose_peer_never_reads_is_cut_at_the_linger_time(backend: Backend) {
    let lp = new_loop(backend);
    let (s, client) = tcp_pair(&lp);
    s.set_linger(Duration::from_millis(200));
    s.write(&vec![0u8; 16 << 20]); // far more than the socket buffers take
    let outcome: Rc<Cell<Option<ErrorKind>>> = Rc::default();
    let o = outcome.clone();
    let t0 = Instant::now();
    s.close().then(move |lp, _, r| {
        o.set(Some(r.map_or_else(|e| e.kind(), |()| ErrorKind::Other)));
        lp.stop();
    });
    assert!(s.closed(), "closed for its owner at once");
    run(&lp);
    let took = t0.elapsed();
    assert_eq!(outcome.get(), Some(ErrorKind::TimedOut));
    assert!(took >= Duration::from_millis(190), "{took:?}");
    assert_eq!(lp.open_resources(), 0);
    let e = StreamError::LingerTimeout;
    assert_eq!(e.kind(), ErrorKind::TimedOut);
    drop(client);
}

#[on_both_backends]
#[test]
fn reads_and_writes_after_close_fail_and_say_why(backend: Backend) {
    let lp = new_loop(backend);
    let (s, _client) = tcp_pair(&lp);
    s.close();
    let answers: Rc<std::cell::RefCell<Vec<ErrorKind>>> = Rc::default();
    let (a, b) = (answers.clone(), answers.clone());
    s.write(b"late")
        .then(move |_, _, r| a.borrow_mut().push(r.unwrap_err().kind()));
    s.read_some(10).then(move |lp, _, r| {
        b.borrow_mut().push(r.unwrap_err().kind());
        lp.stop();
    });
    run(&lp);
    assert_eq!(
        *answers.borrow(),
        [ErrorKind::NotConnected, ErrorKind::NotConnected]
    );
}

#[on_both_backends]
#[test]
fn a_stream_handed_to_a_task_closes_when_the_task_ends(backend: Backend) {
    let lp = new_loop(backend);
    let (s, mut client) = tcp_pair(&lp);
    client.write_all(b"hello\n").unwrap();
    let task = lp.spawn(async move {
        let line = s.read_until(b"\n", 64).await?;
        s.write(&line).await?;
        Ok::<_, std::io::Error>(())
    });
    lp.run_until_complete(task).unwrap().unwrap().unwrap();
    lp.call_later(Duration::from_millis(20), |lp| lp.stop());
    run(&lp);
    let (got, _) = read_to_close(&mut client);
    assert_eq!(got, "hello\n");
    assert_eq!(lp.open_resources(), 0);
}

#[on_both_backends]
#[test]
fn a_stream_kept_in_a_close_callback_is_not_kept_open(backend: Backend) {
    // A close callback alone does not keep a stream: it runs when it closes.
    let lp = new_loop(backend);
    let (s, mut client) = tcp_pair(&lp);
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    s.set_close_callback(move |lp, _| {
        r.set(true);
        lp.stop();
    });
    drop(s);
    run(&lp);
    assert!(ran.get());
    let (got, _) = read_to_close(&mut client);
    assert_eq!(got, "");
}
