//! IoStream: Tornado's IOStream cases, on both backends, over TCP loopback.
mod util;

use coreloop_macros::on_both_backends;

use coreloop::{Backend, IoLoop, IoStream};
use std::cell::{Cell, RefCell};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::thread;
use std::time::Duration;
use util::{new_loop, run, run_for, tcp_pair};

type Got = Rc<RefCell<Vec<Result<Vec<u8>, ErrorKind>>>>;

/// Records a read's outcome, then stops the loop.
fn record_then_stop(
    got: &Got,
) -> impl FnOnce(&IoLoop, &IoStream, std::io::Result<Vec<u8>>) + 'static {
    let g = got.clone();
    move |lp, _, r| {
        g.borrow_mut().push(r.map_err(|e| e.kind()));
        lp.stop();
    }
}

fn record(got: &Got) -> impl FnOnce(&IoLoop, &IoStream, std::io::Result<Vec<u8>>) + 'static {
    let g = got.clone();
    move |_, _, r| g.borrow_mut().push(r.map_err(|e| e.kind()))
}

/// Writes `parts` from another thread with a pause between them, so that they arrive
/// as separate reads; then keeps (or closes) the socket.
fn trickle(
    mut client: TcpStream,
    parts: &'static [&'static [u8]],
    close: bool,
) -> thread::JoinHandle<TcpStream> {
    thread::spawn(move || {
        for p in parts {
            client.write_all(p).unwrap();
            thread::sleep(Duration::from_millis(15));
        }
        if close {
            client.shutdown(std::net::Shutdown::Write).unwrap();
        }
        client
    })
}

#[on_both_backends]
#[test]
fn delimiter_split_across_reads(backend: Backend) {
    let lp = new_loop(backend);
    let (s, client) = tcp_pair(&lp);
    let t = trickle(client, &[b"hel", b"lo\r", b"\nwor", b"ld\r\n"], false);
    let got: Got = Rc::default();
    let g = got.clone();
    s.read_until(b"\r\n", 100).then(move |_, s, first| {
        g.borrow_mut().push(first.map_err(|e| e.kind()));
        let g = g.clone();
        s.read_until(b"\r\n", 100).then(move |lp, _, second| {
            g.borrow_mut().push(second.map_err(|e| e.kind()));
            lp.stop();
        });
    });
    run(&lp);
    assert_eq!(
        *got.borrow(),
        vec![Ok(b"hello\r\n".to_vec()), Ok(b"world\r\n".to_vec())]
    );
    drop(t.join());
}

#[on_both_backends]
#[test]
fn many_requests_in_one_packet_are_read_one_by_one(backend: Backend) {
    let lp = new_loop(backend);
    let (s, mut client) = tcp_pair(&lp);
    let req: Vec<u8> = (0..32)
        .flat_map(|i| format!("req {i}\r\n").into_bytes())
        .collect();
    client.write_all(&req).unwrap();
    let lines = Rc::new(RefCell::new(Vec::new()));
    fn next(s: &IoStream, lines: Rc<RefCell<Vec<String>>>) {
        s.read_until(b"\r\n", 64).then(move |lp, s, r| {
            lines
                .borrow_mut()
                .push(String::from_utf8(r.unwrap()).unwrap());
            if lines.borrow().len() == 32 {
                lp.stop();
            } else {
                next(s, lines);
            }
        });
    }
    next(&s, lines.clone());
    run(&lp);
    let want: Vec<String> = (0..32).map(|i| format!("req {i}\r\n")).collect();
    assert_eq!(*lines.borrow(), want);
}

#[on_both_backends]
#[test]
fn eof_in_the_middle_of_a_delimiter(backend: Backend) {
    let lp = new_loop(backend);
    let (s, client) = tcp_pair(&lp);
    let t = trickle(client, &[b"abc\r"], true);
    let got: Got = Rc::default();
    let order = Rc::new(RefCell::new(Vec::new()));
    let (g, o) = (got.clone(), order.clone());
    s.read_until(b"\r\n", 100).then(move |_, _, r| {
        g.borrow_mut().push(r.map_err(|e| e.kind()));
        o.borrow_mut().push("read");
    });
    let o = order.clone();
    s.set_close_callback(move |lp, _| {
        o.borrow_mut().push("close");
        lp.stop();
    });
    run(&lp);
    assert_eq!(*got.borrow(), vec![Err(ErrorKind::UnexpectedEof)]);
    assert_eq!(*order.borrow(), ["read", "close"]);
    assert!(s.closed() && s.error().is_none());
    drop(t.join());
}

#[on_both_backends]
#[test]
fn read_bytes_zero_completes_at_once(backend: Backend) {
    let lp = new_loop(backend);
    let (s, _client) = tcp_pair(&lp);
    let got: Got = Rc::default();
    s.read_bytes(0).then(record_then_stop(&got));
    run(&lp);
    assert_eq!(*got.borrow(), vec![Ok(vec![])]);
}

#[on_both_backends]
#[test]
fn read_bytes_and_partial_reads(backend: Backend) {
    let lp = new_loop(backend);
    let (s, client) = tcp_pair(&lp);
    let t = trickle(client, &[b"0123", b"456789", b"abc"], false);
    let got: Got = Rc::default();
    let g = got.clone();
    s.read_bytes(7).then(move |_, s, r| {
        g.borrow_mut().push(r.map_err(|e| e.kind()));
        s.read_some(100).then(record_then_stop(&g));
    });
    run(&lp);
    let got = got.borrow();
    assert_eq!(got[0], Ok(b"0123456".to_vec()));
    // What was already there: the rest of the second write (a partial read does not
    // wait for more).
    assert_eq!(got[1], Ok(b"789".to_vec()));
    drop(t.join());
}

#[on_both_backends]
#[test]
fn data_before_close_is_delivered_before_the_close(backend: Backend) {
    let lp = new_loop(backend);
    let (s, mut client) = tcp_pair(&lp);
    client.write_all(b"last words").unwrap();
    drop(client);
    let events = Rc::new(RefCell::new(Vec::new()));
    let e = events.clone();
    // Start reading only once the FIN is surely there too.
    lp.call_later(Duration::from_millis(20), move |_| {
        let e2 = e.clone();
        s.read_some(100).then(move |_, s, r| {
            e2.borrow_mut()
                .push(format!("data {:?}", r.map(String::from_utf8)));
            let e3 = e2.clone();
            s.read_some(100).then(move |_, _, r| {
                e3.borrow_mut()
                    .push(format!("then {:?}", r.map_err(|e| e.kind())));
            });
        });
        let e4 = e.clone();
        s.set_close_callback(move |lp, _| {
            e4.borrow_mut().push("closed".into());
            lp.stop();
        });
    });
    run(&lp);
    assert_eq!(
        *events.borrow(),
        ["data Ok(Ok(\"last words\"))", "then Ok([])", "closed"]
    );
}

#[on_both_backends]
#[test]
fn read_until_close_gets_everything(backend: Backend) {
    let lp = new_loop(backend);
    let (s, client) = tcp_pair(&lp);
    let t = trickle(client, &[b"one ", b"two ", b"three"], true);
    let got: Got = Rc::default();
    s.read_until_close().then(record_then_stop(&got));
    run(&lp);
    assert_eq!(*got.borrow(), vec![Ok(b"one two three".to_vec())]);
    drop(t.join());
}

#[on_both_backends]
#[test]
fn close_callback_fires_once_with_a_read_pending(backend: Backend) {
    let lp = new_loop(backend);
    let (s, client) = tcp_pair(&lp);
    let closes = Rc::new(Cell::new(0));
    let got: Got = Rc::default();
    s.read_until(b"\n", 100).then(record(&got));
    let c = closes.clone();
    s.set_close_callback(move |_, _| c.set(c.get() + 1));
    lp.call_later(Duration::from_millis(10), move |_| drop(client));
    run_for(&lp, Duration::from_millis(100));
    assert_eq!(closes.get(), 1);
    assert_eq!(*got.borrow(), vec![Err(ErrorKind::UnexpectedEof)]);
    // Closing again does nothing more.
    s.close();
    run_for(&lp, Duration::from_millis(10));
    assert_eq!(closes.get(), 1);
}

#[on_both_backends]
#[test]
fn max_bytes_exceeded_closes_with_an_error(backend: Backend) {
    let lp = new_loop(backend);
    let (s, mut client) = tcp_pair(&lp);
    client.write_all(&[b'x'; 100]).unwrap();
    let got: Got = Rc::default();
    s.read_until(b"\n", 16).then(record_then_stop(&got));
    run(&lp);
    assert_eq!(*got.borrow(), vec![Err(ErrorKind::InvalidData)]);
    assert!(s.closed());
    assert_eq!(s.error().unwrap().kind(), ErrorKind::InvalidData);
}

#[on_both_backends]
#[test]
fn a_delimiter_found_past_max_bytes_is_an_error(backend: Backend) {
    let lp = new_loop(backend);
    let (s, mut client) = tcp_pair(&lp);
    client.write_all(b"0123456789\n").unwrap();
    let got: Got = Rc::default();
    s.read_until(b"\n", 5).then(record_then_stop(&got));
    run(&lp);
    assert_eq!(*got.borrow(), vec![Err(ErrorKind::InvalidData)]);
}

#[on_both_backends]
#[test]
fn a_read_buffer_over_its_maximum_closes_the_stream(backend: Backend) {
    let lp = new_loop(backend);
    let (s, client) = tcp_pair(&lp);
    s.set_max_buffer_size(8 * 1024);
    let t = thread::spawn(move || {
        let mut client = client;
        // 1 MiB without a newline; the server must not buffer it all.
        let _ = client.write_all(&vec![b'y'; 1 << 20]);
    });
    let got: Got = Rc::default();
    s.read_until(b"\n", usize::MAX).then(record_then_stop(&got));
    run(&lp);
    assert_eq!(*got.borrow(), vec![Err(ErrorKind::InvalidData)]);
    assert!(s.closed());
    t.join().unwrap();
}

#[on_both_backends]
#[test]
fn a_delimiter_search_over_a_large_buffer_is_linear(backend: Backend) {
    // 4 MiB arriving in many small reads with the delimiter at the very end: a search
    // that restarted from the beginning on every read would scan ~hundreds of GiB.
    // (A hang here, bounded by HANG, is the failure; no timing is asserted.)
    let lp = new_loop(backend);
    let (s, client) = tcp_pair(&lp);
    s.set_max_buffer_size(8 << 20);
    let t = thread::spawn(move || {
        let mut client = client;
        for _ in 0..1024 {
            client.write_all(&[b'z'; 4096]).unwrap();
        }
        client.write_all(b"END").unwrap();
        client
    });
    let got = Rc::new(Cell::new(0));
    let g = got.clone();
    s.read_until(b"END", 8 << 20).then(move |lp, _, r| {
        g.set(r.unwrap().len());
        lp.stop();
    });
    run(&lp);
    assert_eq!(got.get(), 4096 * 1024 + 3);
    drop(t.join());
}

#[on_both_backends]
#[test]
fn eight_mib_to_a_slow_reader_completes_and_flushes_once(backend: Backend) {
    let lp = new_loop(backend);
    let (s, client) = tcp_pair(&lp);
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    let expect = data.clone();
    let reader = thread::spawn(move || {
        let mut client = client;
        let mut got = Vec::with_capacity(8 << 20);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            thread::sleep(Duration::from_micros(500)); // slow
            match client.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("{e}"),
            }
        }
        got
    });
    let flushed = Rc::new(Cell::new(0));
    let f = flushed.clone();
    s.write(&data).then(move |lp, s, _| {
        f.set(f.get() + 1);
        assert_eq!(s.write_buffer_len(), 0);
        s.close();
        lp.stop();
    });
    assert!(s.over_high_water(), "8 MiB is over the default 1 MiB mark");
    run(&lp);
    assert_eq!(flushed.get(), 1);
    let got = reader.join().unwrap();
    assert_eq!(got.len(), expect.len());
    assert!(got == expect, "content differs");
}

#[on_both_backends]
#[test]
fn a_writer_waits_for_drain_instead_of_buffering(backend: Backend) {
    // The writer writes 64 KiB chunks while under the high-water mark and waits for
    // on_drain otherwise: its buffer never holds much more than the mark.
    let lp = new_loop(backend);
    let (s, client) = tcp_pair(&lp);
    s.set_high_water_mark(256 * 1024);
    let reader = thread::spawn(move || {
        let mut client = client;
        let mut n = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            thread::sleep(Duration::from_micros(300));
            match client.read(&mut buf) {
                Ok(0) => break n,
                Ok(k) => n += k,
                Err(e) => panic!("{e}"),
            }
        }
    });
    let max_seen = Rc::new(Cell::new(0usize));
    fn pump(s: &IoStream, left: usize, max_seen: Rc<Cell<usize>>) {
        let mut left = left;
        while left > 0 && !s.over_high_water() {
            s.write(&[7u8; 64 * 1024]);
            left -= 1;
            max_seen.set(max_seen.get().max(s.write_buffer_len()));
        }
        if left == 0 {
            s.write(b"").then(|lp, s, _| {
                s.close();
                lp.stop();
            });
        } else {
            s.on_drain(move |_, s| pump(s, left, max_seen));
        }
    }
    pump(&s, 128, max_seen.clone()); // 8 MiB in all
    run(&lp);
    assert_eq!(reader.join().unwrap(), 128 * 64 * 1024);
    assert!(
        max_seen.get() <= 256 * 1024 + 64 * 1024,
        "buffered {}",
        max_seen.get()
    );
}

#[on_both_backends]
#[test]
fn peer_reset_is_an_error_not_a_panic(backend: Backend) {
    let lp = new_loop(backend);
    let (s, client) = tcp_pair(&lp);
    // SO_LINGER 0: close sends RST.
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    let got: Got = Rc::default();
    s.read_until(b"\n", 100).then(record(&got));
    let closed = Rc::new(Cell::new(false));
    let c = closed.clone();
    s.set_close_callback(move |lp, _| {
        c.set(true);
        lp.stop();
    });
    lp.call_later(Duration::from_millis(10), move |_| drop(client));
    run(&lp);
    assert!(closed.get());
    let got = got.borrow();
    assert_eq!(got.len(), 1);
    assert!(got[0].is_err(), "{got:?}");
    // Writes after the reset fail through the API.
    assert!(s.write_with(|o| o.push(b'x')).is_err());
}

#[on_both_backends]
#[test]
fn write_after_close_and_read_on_a_closed_stream_are_errors(backend: Backend) {
    let lp = new_loop(backend);
    let (s, _client) = tcp_pair(&lp);
    s.close();
    assert!(s.closed());
    assert_eq!(
        s.write_with(|o| o.extend_from_slice(b"late"))
            .unwrap_err()
            .kind(),
        ErrorKind::NotConnected
    );
    let refused: Rc<Cell<Option<ErrorKind>>> = Rc::default();
    let r = refused.clone();
    s.write(b"late")
        .then(move |_, _, sent| r.set(sent.err().map(|e| e.kind())));
    let got: Got = Rc::default();
    s.read_bytes(1).then(record_then_stop(&got));
    run(&lp);
    assert_eq!(*got.borrow(), vec![Err(ErrorKind::NotConnected)]);
    assert_eq!(refused.get(), Some(ErrorKind::NotConnected));
}

/// Regression: `write_then` with nothing left to send used to wait for a send that
/// would never come, when called outside the stream's own callbacks.
#[on_both_backends]
#[test]
fn write_then_with_nothing_buffered_runs_its_callback(backend: Backend) {
    let lp = new_loop(backend);
    let (s, _client) = tcp_pair(&lp);
    lp.call_later(Duration::from_millis(5), move |_| {
        s.write(b"").then(|lp, s, _| {
            s.close();
            lp.stop();
        });
    });
    run(&lp);
}

#[on_both_backends]
#[test]
fn connect_without_blocking_the_loop(backend: Backend) {
    let lp = new_loop(backend);
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let got: Got = Rc::default();
    let g = got.clone();
    IoStream::connect(&lp, addr, Duration::from_secs(5)).then(move |_, r| {
        let s = r.expect("connected");
        assert!(s.nodelay().unwrap());
        s.write(b"ping\n");
        s.read_until(b"\n", 64).then(record_then_stop(&g));
    });
    let server = thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut b = [0u8; 5];
        c.read_exact(&mut b).unwrap();
        c.write_all(&b).unwrap();
        c
    });
    run(&lp);
    assert_eq!(*got.borrow(), vec![Ok(b"ping\n".to_vec())]);
    drop(server.join());

    // Nobody listens on a port just freed: the error comes through the callback.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = Rc::new(Cell::new(None));
    let e = err.clone();
    IoStream::connect(&lp, port, Duration::from_secs(5)).then(move |lp, r| {
        e.set(Some(r.unwrap_err().kind()));
        lp.stop();
    });
    run(&lp);
    assert_eq!(err.get(), Some(ErrorKind::ConnectionRefused));
}

#[on_both_backends]
#[test]
fn only_one_read_at_a_time(backend: Backend) {
    let lp = new_loop(backend);
    let (s, _client) = tcp_pair(&lp);
    s.read_bytes(1).then(|_, _, _| {});
    let got: Got = Rc::default();
    s.read_bytes(1).then(record_then_stop(&got));
    run(&lp);
    assert_eq!(*got.borrow(), vec![Err(ErrorKind::ResourceBusy)]);
}

#[on_both_backends]
#[test]
fn a_stream_nobody_holds_stays_open_while_a_read_waits(backend: Backend) {
    let lp = new_loop(backend);
    let (s, mut client) = tcp_pair(&lp);
    let got: Got = Rc::default();
    let g = got.clone();
    s.read_until(b"\n", 100).then(move |lp, s, r| {
        g.borrow_mut().push(r.map_err(|e| e.kind()));
        s.write(b"bye\n").then(|lp, s, _| {
            s.close();
            lp.stop();
        });
        let _ = lp;
    });
    drop(s); // the pending read keeps it
    assert_eq!(lp.open_resources(), 1);
    client.write_all(b"hi\n").unwrap();
    run(&lp);
    assert_eq!(*got.borrow(), vec![Ok(b"hi\n".to_vec())]);
    let mut reply = String::new();
    client.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "bye\n");
    assert_eq!(lp.open_resources(), 0);
}

/// A stream closed and dropped while io_uring still has a recv and a large send in
/// flight: the send's buffer must stay alive until its CQE. (Run under valgrind, this
/// is where a use-after-free would show.)
#[on_both_backends]
#[test]
fn dropped_with_operations_in_flight(backend: Backend) {
    let lp = new_loop(backend);
    let (s, client) = tcp_pair(&lp);
    s.read_until(b"\n", 100).then(|_, _, _| {});
    s.write(&vec![1u8; 4 << 20]); // far more than the socket buffer takes
                                  // Let the send reach the kernel, then close and drop everything.
    lp.call_later(Duration::from_millis(5), move |lp| {
        // No linger: the close cuts the connection with the send in flight.
        s.set_linger(Duration::ZERO);
        s.close();
        drop(s);
        lp.call_later(Duration::from_millis(20), |lp| lp.stop());
    });
    run(&lp);
    assert_eq!(lp.open_resources(), 0);
    // The client sees the connection end (FIN or RST), never a hang.
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut client = client;
    let mut sink = Vec::new();
    let r = client.read_to_end(&mut sink);
    assert!(r.is_ok() || r.unwrap_err().kind() == ErrorKind::ConnectionReset);
    drop(lp); // the ring drains its ops before freeing their memory
}

#[on_both_backends]
#[test]
fn closing_the_loop_closes_its_streams(backend: Backend) {
    let lp = new_loop(backend);
    let (s, mut client) = tcp_pair(&lp);
    s.read_until(b"\n", 100).then(|_, _, _| {});
    drop(s);
    run_for(&lp, Duration::from_millis(5));
    assert_eq!(lp.open_resources(), 1);
    drop(lp);
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(
        client.read(&mut buf).unwrap(),
        0,
        "EOF once the loop is gone"
    );
}

#[on_both_backends]
#[test]
fn unread_data_is_bounded_when_nobody_reads(backend: Backend) {
    // The peer sends 4 MiB; the owner reads nothing for a while. Receiving pauses, so the
    // stream buffers far less than was sent, and everything arrives once reading resumes.
    let lp = new_loop(backend);
    let (s, client) = tcp_pair(&lp);
    let t = thread::spawn(move || {
        let mut client = client;
        client.write_all(&vec![b'q'; 4 << 20]).unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        client
    });
    run_for(&lp, Duration::from_millis(200));
    let buffered = s.read_buffer_len();
    assert!(
        buffered < 1 << 20,
        "buffered {buffered} bytes with no read pending"
    );
    let got = Rc::new(Cell::new(0));
    let g = got.clone();
    s.read_until_close().then(move |lp, _, r| {
        g.set(r.unwrap().len());
        lp.stop();
    });
    run(&lp);
    assert_eq!(got.get(), 4 << 20);
    drop(t.join());
}

/// `write_with` lends the buffer: its closure may use the stream (the kv example's
/// INFO reads every connection's input buffer while serializing into one of them).
#[on_both_backends]
#[test]
fn write_with_may_use_the_stream_inside_its_closure(backend: Backend) {
    let lp = new_loop(backend);
    let (s, mut client) = tcp_pair(&lp);
    let s2 = s.clone();
    s.write_with(|o| {
        o.extend_from_slice(b"first ");
        assert_eq!(s2.read_buffer_len(), 0);
        assert!(!s2.closed());
        s2.write(b"nested\n");
        o.extend_from_slice(b"second ");
    })
    .unwrap();
    assert_eq!(s.write_buffer_len(), 20);
    s.flush().then(|lp, _, r| {
        r.unwrap();
        lp.stop();
    });
    run(&lp);
    let mut got = [0u8; 20];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"first second nested\n");
    // A closure that closes the stream: the write fails, nothing is sent.
    s.write_with(|o| {
        o.extend_from_slice(b"cut");
        s2.close();
    })
    .unwrap_err();
}
