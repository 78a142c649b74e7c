//! Streams awaited by tasks: the async reads and writes, `AsyncRead`/`AsyncWrite` with
//! the futures ecosystem's adaptors, the accept stream and async connect; and
//! cancellation: a future dropped part-way loses no bytes, duplicates none and leaks no
//! descriptor.
mod util;

use coreloop::{sleep, timeout, Backend, Incoming, IoLoop, IoStream, StreamError};
use coreloop_macros::on_both_backends;
use futures::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;
use util::{new_loop, tcp_pair};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Open descriptors of this process. The tests of this file run one at a time (they
/// take `SERIAL`), so that counting descriptors sees only the test's own.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

#[on_both_backends]
#[test]
fn reads_and_writes_in_a_task(backend: Backend) {
    let _serial = serial();
    let lp = new_loop(backend);
    let (s, mut peer) = tcp_pair(&lp);
    s.set_close_on_eof(false); // it answers after the peer has shut down its side
    let writer = std::thread::spawn(move || {
        peer.write_all(b"one\ntwo\nABCDEFGHrest").unwrap();
        std::thread::sleep(ms(20));
        peer.write_all(b"late").unwrap();
        let mut back = vec![0u8; 3 << 20];
        peer.read_exact(&mut back).unwrap();
        assert!(back.iter().all(|&b| b == 9));
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).unwrap();
        rest
    });
    let got = lp
        .run_until_complete(async move {
            let a = s.read_until(b"\n", 64).await?;
            let b = s.read_until(b"\n", 64).await?;
            let c = s.read_bytes(8).await?;
            let d = s.read_some(100).await?; // "rest", buffered
            let e = s.read_some(100).await?; // "late", after a wait
            s.write(&vec![9u8; 3 << 20]).await?;
            s.flush().await?;
            let eof = s.read_some(100).await?; // the peer shut down its side
            s.write(b"bye").await?;
            s.flush().await?;
            s.close();
            Ok::<_, std::io::Error>((a, b, c, d, e, eof))
        })
        .unwrap()
        .unwrap();
    assert_eq!(got.0, b"one\n");
    assert_eq!(got.1, b"two\n");
    assert_eq!(got.2, b"ABCDEFGH");
    assert_eq!(got.3, b"rest");
    assert_eq!(got.4, b"late");
    assert!(got.5.is_empty());
    assert_eq!(writer.join().unwrap(), b"bye");
}

#[on_both_backends]
#[test]
fn the_futures_io_adaptors_work_on_a_stream(backend: Backend) {
    let _serial = serial();
    let lp = new_loop(backend);
    let (s, mut peer) = tcp_pair(&lp);
    let client = std::thread::spawn(move || {
        let body: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        peer.write_all(b"header line\n").unwrap();
        peer.write_all(&body).unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        let mut echoed = Vec::new();
        peer.read_to_end(&mut echoed).unwrap();
        (body, echoed)
    });
    lp.run_until_complete(async move {
        let mut reader = BufReader::new(s.clone());
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        assert_eq!(line, "header line\n");
        // Echo the rest with futures::io::copy, then close.
        let mut w = s.clone();
        futures::io::copy(reader, &mut w).await?;
        AsyncWriteExt::close(&mut w).await?;
        Ok::<_, std::io::Error>(())
    })
    .unwrap()
    .unwrap();
    let (body, echoed) = client.join().unwrap();
    assert_eq!(echoed, body);
}

#[on_both_backends]
#[test]
fn a_read_dropped_part_way_leaves_every_byte_for_the_next(backend: Backend) {
    let _serial = serial();
    let lp = new_loop(backend);
    let (s, mut peer) = tcp_pair(&lp);
    let sender = std::thread::spawn(move || {
        // Bytes arrive while the first read waits for a delimiter that never comes.
        for chunk in [&b"abc"[..], b"def", b"ghi"] {
            std::thread::sleep(ms(10));
            peer.write_all(chunk).unwrap();
        }
        std::thread::sleep(ms(50));
        peer.write_all(b"\n").unwrap();
        peer
    });
    let (first, second) = lp
        .run_until_complete(async move {
            // The read is dropped (a timeout) while the recv is in flight, with bytes
            // already received.
            let first = timeout(ms(45), s.read_until(b"\n", 64)).await;
            let second = s.read_until(b"\n", 64).await;
            (first.is_err(), second)
        })
        .unwrap();
    assert!(first, "the first read timed out");
    assert_eq!(
        second.unwrap(),
        b"abcdefghi\n",
        "nothing lost, nothing twice"
    );
    drop(sender.join().unwrap());
}

#[on_both_backends]
#[test]
fn a_write_dropped_after_a_partial_send_loses_and_repeats_nothing(backend: Backend) {
    let _serial = serial();
    let lp = new_loop(backend);
    let (s, mut peer) = tcp_pair(&lp);
    s.set_high_water_mark(64 * 1024);
    let data: Vec<u8> = (0..(8u32 << 20)).map(|i| (i % 251) as u8).collect();
    let d = data.clone();
    let (written_before_drop, s2) = lp
        .run_until_complete(async move {
            // The peer does not read yet: futures' `write_all` (through `AsyncWrite`,
            // which takes what fits below the high-water mark) stops there and is
            // dropped there.
            let mut s = s;
            let r = timeout(ms(50), futures::AsyncWriteExt::write_all(&mut s, &d)).await;
            assert!(r.is_err(), "blocked by back-pressure");
            let handed = s.write_buffer_len();
            (handed, s)
        })
        .unwrap();
    assert!(written_before_drop > 0);
    // What was handed over before the drop still goes out, in order, once; then the
    // rest, written again by the caller from where it knows it stopped.
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        got
    });
    lp.run_until_complete(async move {
        s2.flush().await.unwrap();
        s2.close();
    })
    .unwrap();
    let got = reader.join().unwrap();
    assert!(!got.is_empty() && got.len() < data.len());
    assert_eq!(got, data[..got.len()], "a prefix, byte for byte");
}

#[on_both_backends]
#[test]
fn accepting_and_connecting_in_tasks_and_dropping_them_leaks_nothing(backend: Backend) {
    let _serial = serial();
    let lp = new_loop(backend);
    let incoming = Incoming::bind(&lp, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    let fds_before = open_fds();
    let got = lp
        .run_until_complete(async move {
            // An accept dropped before a connection came: nothing is lost.
            assert!(timeout(ms(10), incoming.accept()).await.is_err());
            let lp = IoLoop::current().unwrap();
            let client = IoStream::connect(&lp, addr, Duration::from_secs(5)).await?;
            let server = incoming.accept().await?;
            client.write(b"hi\n").await?;
            let line = server.read_until(b"\n", 16).await?;
            client.close();
            server.close();
            // A connect dropped before it completed closes its socket: one to a
            // listener whose backlog is full never completes.
            let full = TcpListener::bind("127.0.0.1:0")?;
            let full_addr = full.local_addr()?;
            let mut parked = Vec::new();
            for _ in 0..8 {
                if let Ok(c) = TcpStream::connect_timeout(&full_addr, ms(20)) {
                    parked.push(c);
                }
            }
            let r = timeout(
                ms(20),
                IoStream::connect(&lp, full_addr, Duration::from_secs(5)),
            )
            .await;
            drop(parked);
            drop(full);
            Ok::<_, std::io::Error>((line, r.is_err()))
        })
        .unwrap()
        .unwrap();
    assert_eq!(got.0, b"hi\n");
    let _ = got.1; // the connect may also have completed at once: either way, no leak
    lp.run_until_complete(sleep(ms(20))).unwrap(); // closes queued through the ring
    assert!(
        open_fds() <= fds_before,
        "descriptors left behind: {} before, {} after",
        fds_before,
        open_fds()
    );
}

#[on_both_backends]
#[test]
fn a_callback_read_and_a_task_read_never_wait_at_once(backend: Backend) {
    let _serial = serial();
    let lp = new_loop(backend);
    let (s, _peer) = tcp_pair(&lp);
    let s2 = s.clone();
    let r = lp
        .run_until_complete(async move {
            let waiting = IoLoop::current()
                .unwrap()
                .spawn(async move { s2.read_some(10).await });
            sleep(ms(5)).await;
            let (tx, rx) = std::sync::mpsc::channel();
            let t = tx.clone();
            s.read_bytes(1)
                .then(move |_, _, r| t.send(r.err().and_then(|e| StreamError::of(&e))).unwrap());
            sleep(ms(1)).await;
            let refused = rx.try_recv().expect("answered in a later step");
            drop(waiting); // the task's read ends: the callback read may now start
            sleep(ms(1)).await;
            s.read_bytes(1)
                .then(move |_, _, r| tx.send(r.err().and_then(|e| StreamError::of(&e))).unwrap());
            sleep(ms(1)).await;
            let accepted = rx.try_recv().is_err(); // still waiting for a byte
            (refused, accepted)
        })
        .unwrap();
    assert_eq!(r, (Some(StreamError::ReadPending), true));
}

/// For the valgrind check of dropping a loop with operations in flight: a loop with a
/// task blocked in a read, a connect in progress and an accept pending, dropped.
#[on_both_backends]
#[test]
fn a_loop_dropped_with_operations_in_flight_releases_them(backend: Backend) {
    let _serial = serial();
    let fds_before = open_fds();
    {
        let lp = new_loop(backend);
        let (s, peer) = tcp_pair(&lp);
        let incoming = Incoming::bind(&lp, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr: SocketAddr = incoming.local_addr().unwrap();
        lp.spawn(async move {
            let _ = s.read_until(b"\n", 64).await;
        })
        .detach();
        lp.spawn(async move {
            let _ = incoming.accept().await;
        })
        .detach();
        let connecting = IoStream::connect(&lp, addr, Duration::from_secs(5));
        lp.spawn(async move {
            let _ = connecting.await;
        })
        .detach();
        lp.call_later(ms(20), |lp| lp.stop());
        lp.start().unwrap();
        assert!(lp.tasks() > 0);
        drop(peer);
        drop(lp);
    }
    assert!(
        open_fds() <= fds_before,
        "descriptors left behind: {} before, {} after",
        fds_before,
        open_fds()
    );
}
