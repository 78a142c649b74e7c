//! The key-value example (examples/kv) against bad input, byte for byte from a raw
//! socket: malformed RESP, bulk lengths over the maximum, unknown commands, wrong
//! arity, INCR on a non-integer, and a client that floods and never reads.
#[path = "util/kv.rs"]
mod kv;
mod util;

use coreloop::Backend;
use coreloop_macros::on_both_backends;
use kv::{key_on, Client, Config};
use std::io::{ErrorKind, Write};
use std::time::{Duration, Instant};

#[on_both_backends]
#[test]
fn malformed_resp_gets_a_protocol_error_after_earlier_replies_then_the_connection_closes(
    backend: Backend,
) {
    let kv = kv::start(backend, 2);
    let remote = [key_on("r", 0, 2), key_on("r", 1, 2)];
    let cases: &[(&[u8], &str)] = &[
        (
            b"*x\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\nxGET\r\n",
            "-ERR Protocol error: expected '$', got 'x'\r\n",
        ),
        (
            b"*1\r\n$-5\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*2\r\n$3\r\nGET\r\n$abc\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*2\r\n$3\r\nGET\r\n$536870913\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
    ];
    for (bad, want) in cases {
        let mut c = Client::connect(kv.resp_addr());
        // Commands before the bad bytes, on both cores, are answered first, in order.
        let mut bytes = Vec::new();
        for k in &remote {
            bytes.extend_from_slice(&kv::encode(&["SET", k, "v"]));
            bytes.extend_from_slice(&kv::encode(&["GET", k]));
        }
        bytes.extend_from_slice(b"PING\r\n");
        bytes.extend_from_slice(bad);
        bytes.extend_from_slice(b"PING\r\n"); // never run: the connection is closing
        c.send(&bytes);
        for _ in 0..2 {
            assert_eq!(c.reply(), "+OK\r\n");
            assert_eq!(c.reply(), "$1\r\nv\r\n");
        }
        assert_eq!(c.reply(), "+PONG\r\n");
        assert_eq!(c.reply(), *want, "after {:?}", String::from_utf8_lossy(bad));
        assert!(
            c.closed_by_server(),
            "closed after {:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // A too long inline request, without its newline.
    let mut c = Client::connect(kv.resp_addr());
    c.send(&vec![b'a'; 64 * 1024 + 10]);
    assert_eq!(c.reply(), "-ERR Protocol error: too big inline request\r\n");
    assert!(c.closed_by_server());
    kv.drain(Duration::from_secs(5)).unwrap();
}

#[on_both_backends]
#[test]
fn unknown_commands_wrong_arity_and_bad_integers_get_rediss_errors_and_the_connection_stays(
    backend: Backend,
) {
    let kv = kv::start(backend, 2);
    let mut c = Client::connect(kv.resp_addr());
    let cases: &[(&[u8], &str)] = &[
        (
            b"FOO\r\n",
            "-ERR unknown command 'FOO', with args beginning with: \r\n",
        ),
        (
            b"*3\r\n$3\r\nFOO\r\n$1\r\na\r\n$3\r\nb\nc\r\n",
            "-ERR unknown command 'FOO', with args beginning with: 'a' 'b c' \r\n",
        ),
        (
            b"GET\r\n",
            "-ERR wrong number of arguments for 'get' command\r\n",
        ),
        (
            b"get a b\r\n",
            "-ERR wrong number of arguments for 'get' command\r\n",
        ),
        (
            b"MSET a b c\r\n",
            "-ERR wrong number of arguments for 'mset' command\r\n",
        ),
        (
            b"PING a b\r\n",
            "-ERR wrong number of arguments for 'ping' command\r\n",
        ),
        (b"SET n abc\r\n", "+OK\r\n"),
        (
            b"INCR n\r\n",
            "-ERR value is not an integer or out of range\r\n",
        ),
        (
            b"INCRBY n 1\r\n",
            "-ERR value is not an integer or out of range\r\n",
        ),
        (b"SET n 9223372036854775807\r\n", "+OK\r\n"),
        (
            b"INCR n\r\n",
            "-ERR increment or decrement would overflow\r\n",
        ),
        (
            b"INCRBY x 1.5\r\n",
            "-ERR value is not an integer or out of range\r\n",
        ),
        (
            b"EXPIRE x soon\r\n",
            "-ERR value is not an integer or out of range\r\n",
        ),
        (
            b"SET k v EX -1\r\n",
            "-ERR invalid expire time in 'set' command\r\n",
        ),
        (b"SET k v FOREVER\r\n", "-ERR syntax error\r\n"),
        (b"*0\r\n\r\nPING\r\n", "+PONG\r\n"), // empty commands are skipped
    ];
    for (bad, want) in cases {
        c.send(bad);
        assert_eq!(c.reply(), *want, "for {:?}", String::from_utf8_lossy(bad));
    }
    let long = format!("FOO {}\r\n", "x".repeat(300));
    c.send(long.as_bytes());
    let want = format!(
        "-ERR unknown command 'FOO', with args beginning with: '{}' \r\n",
        "x".repeat(128)
    );
    assert_eq!(c.reply(), want);
    assert_eq!(c.call(&["PING"]), "+PONG\r\n");
    kv.drain(Duration::from_secs(5)).unwrap();
}

#[on_both_backends]
#[test]
fn bulks_over_the_maximum_are_refused_and_long_ones_are_not_allocated_up_front(backend: Backend) {
    // A small maximum: one byte more is refused, the maximum itself works.
    let cfg = Config {
        port: 0,
        http_port: 0,
        max_bulk: 1024,
        ..Config::default()
    };
    let kv = kv::start_with(backend, 1, cfg);
    let mut c = Client::connect(kv.resp_addr());
    let max = "v".repeat(1024);
    assert_eq!(c.call(&["SET", "k", &max]), "+OK\r\n");
    assert_eq!(c.call(&["GET", "k"]), format!("$1024\r\n{max}\r\n"));
    c.cmd(&["SET", "k", &format!("{max}!")]);
    assert_eq!(c.reply(), "-ERR Protocol error: invalid bulk length\r\n");
    assert!(c.closed_by_server());
    kv.drain(Duration::from_secs(5)).unwrap();

    // The default maximum, 512 MB: a bulk that long is accepted, but its memory grows
    // with the bytes that arrived, not with the length announced.
    let kv = kv::start(backend, 1);
    let mut c = Client::connect(kv.resp_addr());
    assert_eq!(c.call(&["PING"]), "+PONG\r\n");
    let before = kv::vm_kb("VmData");
    c.send(b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$536870912\r\n");
    c.send(&vec![b'x'; 1 << 20]);
    let mut other = Client::connect(kv.resp_addr());
    assert_eq!(other.call(&["PING"]), "+PONG\r\n"); // the server is not stuck
    std::thread::sleep(Duration::from_millis(200));
    let grown_mb = kv::vm_kb("VmData").saturating_sub(before) / 1024;
    assert!(
        grown_mb < 200,
        "data segment grew by {grown_mb} MB for 1 MB received"
    );
    kv.drain(Duration::from_secs(5)).unwrap();
}

#[on_both_backends]
#[test]
fn a_client_that_floods_and_never_reads_is_throttled_and_still_gets_every_reply(backend: Backend) {
    let kv = kv::start(backend, 2);
    // Small client buffers, so what the kernel holds does not hide the server's.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(64 * 1024).unwrap();
    sock.set_send_buffer_size(64 * 1024).unwrap();
    sock.connect(&kv.resp_addr().into()).unwrap();
    let mut c = Client {
        r: std::io::BufReader::new(std::net::TcpStream::from(sock)),
    };
    c.r.get_ref().set_read_timeout(Some(util::HANG)).unwrap();
    let here = kv::core_of(&kv, &mut c);
    let value = "v".repeat(1024);
    let (local, remote) = (key_on("f", here, 2), key_on("f", 1 - here, 2));
    assert_eq!(c.call(&["SET", &local, &value]), "+OK\r\n");
    assert_eq!(c.call(&["SET", &remote, &value]), "+OK\r\n");
    // Each 30-byte GET asks for a 1 KiB reply: a server that kept reading would buffer
    // 35 times what it received.
    let mut chunk = Vec::new();
    for _ in 0..100 {
        chunk.extend_from_slice(&kv::encode(&["GET", &local]));
        chunk.extend_from_slice(&kv::encode(&["GET", &remote]));
    }
    let rss_before = kv::vm_kb("VmRSS");
    let s = c.r.get_mut();
    s.set_nonblocking(true).unwrap();
    let (mut sent, mut at) = (0usize, 0usize);
    let start = Instant::now();
    let mut blocked_since: Option<Instant> = None;
    loop {
        match s.write(&chunk[at..]) {
            Ok(n) => {
                blocked_since = None;
                at += n;
                if at == chunk.len() {
                    sent += 200;
                    at = 0;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let since = *blocked_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(500) {
                    break; // throttled: the server stopped reading
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("the server dropped the connection after {sent} commands: {e}"),
        }
        assert!(
            sent < 2_000_000,
            "the server kept reading: {sent} commands buffered"
        );
        assert!(start.elapsed() < util::HANG, "never throttled");
    }
    let grown_mb = kv::vm_kb("VmRSS").saturating_sub(rss_before) / 1024;
    assert!(grown_mb < 128, "memory grew by {grown_mb} MB");
    // Finish the cut command, then read everything: every GET is answered, in order.
    s.set_nonblocking(false).unwrap();
    let mut w = s.try_clone().unwrap();
    let rest = chunk[at..].to_vec();
    let writer = std::thread::spawn(move || w.write_all(&rest));
    sent += 200;
    let want = format!("$1024\r\n{value}\r\n");
    for i in 0..sent {
        assert_eq!(c.reply(), want, "reply {i} of {sent}");
    }
    writer.join().unwrap().unwrap();
    assert_eq!(c.call(&["PING"]), "+PONG\r\n");
    kv.drain(Duration::from_secs(5)).unwrap();
}
