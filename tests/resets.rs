//! A connection its peer resets closes when the kernel reports the reset, on both
//! backends, whatever the stream is doing: receiving, or paused with bytes unread and
//! no recv armed (the case a hostile-client trial left open: kv kept fds of reset
//! connections for good). A hangup with no error (both directions done) neither closes
//! the stream, whose unread bytes still come, nor wakes the loop again and again (epoll
//! reports it whatever the interest: a paused stream made the loop spin).
#[path = "util/kv.rs"]
mod kv;
mod util;

use coreloop::Backend;
use coreloop_macros::on_both_backends;
use std::io::{ErrorKind, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};
use util::{new_loop, run, run_for, tcp_pair};

/// Closes `c` with a reset (SO_LINGER 0).
fn reset(c: TcpStream) {
    socket2::SockRef::from(&c)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c);
}

/// Writes up to `n` bytes without blocking (what the kernel's buffers take); returns
/// how many.
fn write_some(c: &mut TcpStream, n: usize) -> usize {
    c.set_nonblocking(true).unwrap();
    let data = vec![1u8; n];
    let mut at = 0;
    while at < n {
        match c.write(&data[at..]) {
            Ok(k) => at += k,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    c.set_nonblocking(false).unwrap();
    at
}

/// The file descriptors this process has open.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Waits until this process has `fds` file descriptors open at most; fails after
/// `util::HANG` with what is left.
fn fds_back_to(fds: usize, what: &str) {
    let end = Instant::now() + util::HANG;
    while open_fds() > fds {
        assert!(
            Instant::now() < end,
            "{what}: {} fds still open",
            open_fds() - fds
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[on_both_backends]
#[test]
fn a_paused_stream_closes_when_its_peer_resets(backend: Backend) {
    let lp = new_loop(backend);
    let (s, mut client) = tcp_pair(&lp);
    write_some(&mut client, 256 * 1024);
    run_for(&lp, Duration::from_millis(200));
    assert!(
        s.read_buffer_len() > 0 && !s.closed(),
        "paused, bytes unread"
    );
    s.set_close_callback(|lp, _| lp.stop());
    reset(client);
    run(&lp);
    assert_eq!(
        s.error().map(|e| e.kind()),
        Some(ErrorKind::ConnectionReset)
    );
}

#[on_both_backends]
#[test]
fn a_paused_stream_whose_peer_hung_up_keeps_its_bytes_and_the_loop_asleep(backend: Backend) {
    // Past the pause mark, and little enough for the server's socket to take it all
    // with the end of file behind it.
    const N: usize = 100 * 1024;
    let lp = new_loop(backend);
    let (s, mut client) = tcp_pair(&lp);
    let sent = write_some(&mut client, N);
    assert_eq!(sent, N, "the kernel took {sent} bytes");
    client.shutdown(Shutdown::Write).unwrap();
    s.shutdown_write();
    run_for(&lp, Duration::from_millis(200));
    assert!(!s.closed(), "a hangup is no error");
    // Both directions are done: the socket hangs up, and the paused stream must not
    // be woken for it on every wait.
    let before = lp.loop_stats().iterations;
    run_for(&lp, Duration::from_millis(300));
    let woken = lp.loop_stats().iterations - before;
    assert!(
        woken < 50,
        "{woken} loop iterations in 300 ms of nothing to do"
    );
    // Every byte is still there for a reader, then the end of the stream.
    s.read_until_close().then(move |lp, _, r| {
        assert_eq!(r.unwrap().len(), sent);
        lp.stop();
    });
    run(&lp);
    drop(client);
}

#[on_both_backends]
#[test]
fn kv_closes_connections_reset_in_the_middle_of_a_bulk(backend: Backend) {
    // 300 clients send the start of a 200 KB SET and reset, all open at once; then
    // 300 more, one after the other. kv keeps no connection: RESP ones have no timeout,
    // so one the reset did not close would stay for good.
    let kv = kv::start(backend, 2);
    let fds = open_fds();
    let mut ask = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$200000\r\n".to_vec();
    ask.extend_from_slice(&[b'x'; 100_000]);
    let mut open = Vec::new();
    for _ in 0..300 {
        let mut c = TcpStream::connect(kv.resp_addr()).unwrap();
        let _ = c.write_all(&ask);
        open.push(c);
    }
    std::thread::sleep(Duration::from_millis(100));
    open.into_iter().for_each(reset);
    for _ in 0..300 {
        let mut c = TcpStream::connect(kv.resp_addr()).unwrap();
        let _ = c.write_all(&ask);
        reset(c);
    }
    fds_back_to(fds, "kv connections reset mid-bulk");
    let mut c = kv::Client::connect(kv.resp_addr());
    assert_eq!(c.call(&["PING"]), "+PONG\r\n", "kv still serves");
    kv.drain(Duration::from_secs(5)).unwrap();
}
