//! Bad input to a TLS server, on both backends: garbage instead of a ClientHello, a
//! record cut short (during the handshake and after it), a handshake trickled a byte
//! at a time, a fatal alert, a client that never finishes, a flood of handshake bytes.
//! Each is a close (or, for the trickle, a handshake that works), counted by cause,
//! with the server serving on.
mod util;

use coreloop::tls::{TlsConfig, TlsError, TlsStats};
use coreloop::{Backend, Cores, Runtime, ServerHandle};
use coreloop_macros::on_both_backends;
use rustls::pki_types::ServerName;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};
use util::tls::{client_config, connect, eventually, Certs};

struct Fixture {
    _certs: Certs,
    rt: Runtime,
    server: ServerHandle,
    cfg: Arc<rustls::ClientConfig>,
}

/// A TLS line echo on one core with a short handshake timeout.
fn fixture(backend: Backend) -> Fixture {
    fixture_with(backend, Duration::from_millis(300))
}

fn fixture_with(backend: Backend, handshake_timeout: Duration) -> Fixture {
    let certs = Certs::new();
    let (cert, key) = certs.server();
    let rt = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(1))
        .build()
        .unwrap();
    let tls = TlsConfig::new(&cert, &key)
        .unwrap()
        .handshake_timeout(handshake_timeout);
    let server = util::line_echo(1024)
        .tls(tls)
        .serve(&rt, "127.0.0.1:0".parse().unwrap())
        .unwrap();
    let cfg = client_config(&certs.ca(), &[]);
    Fixture {
        _certs: certs,
        rt,
        server,
        cfg,
    }
}

impl Fixture {
    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    fn stats(&self) -> TlsStats {
        let s = self.rt.stats().wait().unwrap();
        s.cores[0].tls.clone()
    }

    fn wait_for(&self, cause: TlsError, n: u64) {
        eventually(&format!("{n} failures of {cause:?}"), || {
            self.stats().failures_of(cause) == n
        });
    }

    /// The server still serves a good client, and nothing is left open.
    fn still_serves(self) {
        let mut c = connect(self.addr(), "localhost", &self.cfg);
        c.write_all(b"fine\n").unwrap();
        let mut got = [0u8; 5];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"fine\n");
        drop(c);
        eventually("every connection closed", || {
            self.server.open_connections().wait().unwrap() == 0
        });
        self.rt.shutdown().unwrap();
    }

    fn raw(&self) -> TcpStream {
        let c = TcpStream::connect(self.addr()).unwrap();
        c.set_read_timeout(Some(util::HANG)).unwrap();
        c.set_nodelay(true).unwrap();
        c
    }
}

/// Reads until the server closes; what it sent (an alert, perhaps).
fn until_closed(c: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    got
}

/// A ClientHello (and whatever else a client sends first) for `cfg`.
fn client_hello(cfg: &Arc<rustls::ClientConfig>) -> (rustls::ClientConnection, Vec<u8>) {
    let mut conn =
        rustls::ClientConnection::new(cfg.clone(), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    (conn, hello)
}

#[on_both_backends]
#[test]
fn garbage_instead_of_a_client_hello_is_closed_with_an_alert(backend: Backend) {
    let f = fixture(backend);
    let mut c = f.raw();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let got = until_closed(&mut c);
    // A TLS alert record (type 21), nothing else.
    assert!(got.is_empty() || got[0] == 21, "{got:?}");
    let mut c = f.raw();
    c.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .unwrap();
    until_closed(&mut c);
    f.wait_for(TlsError::BadMessage, 2);
    f.still_serves();
}

#[on_both_backends]
#[test]
fn a_record_cut_short_closes_during_and_after_the_handshake(backend: Backend) {
    let f = fixture(backend);
    // Half a ClientHello, then the client closes: the handshake ends in end of file.
    let (_, hello) = client_hello(&f.cfg);
    let mut c = f.raw();
    c.write_all(&hello[..hello.len() / 2]).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    until_closed(&mut c);
    f.wait_for(TlsError::Eof, 1);
    // After the handshake: half a record of data, then end of file: a truncation.
    let mut good = connect(f.addr(), "localhost", &f.cfg);
    good.conn.writer().write_all(b"cut\n").unwrap();
    let mut record = Vec::new();
    while good.conn.wants_write() {
        good.conn.write_tls(&mut record).unwrap();
    }
    good.sock.write_all(&record[..record.len() - 3]).unwrap();
    good.sock.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = good.sock.read_to_end(&mut rest);
    f.wait_for(TlsError::BadMessage, 1);
    f.still_serves();
}

#[on_both_backends]
#[test]
fn a_handshake_trickled_byte_by_byte_completes(backend: Backend) {
    // A ClientHello is some 1,500 bytes (a post-quantum key share): 1,500 sends.
    let f = fixture_with(backend, util::HANG);
    let (mut conn, hello) = client_hello(&f.cfg);
    let mut c = f.raw();
    for b in &hello {
        c.write_all(std::slice::from_ref(b)).unwrap();
        std::thread::sleep(Duration::from_micros(50));
    }
    // The rest of the handshake the usual way, then a line.
    while conn.is_handshaking() {
        conn.complete_io(&mut c).unwrap();
    }
    let mut s = rustls::Stream::new(&mut conn, &mut c);
    s.write_all(b"slow\n").unwrap();
    let mut got = [0u8; 5];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"slow\n");
    assert_eq!(f.stats().full, 1);
    assert_eq!(f.stats().failures, [0; 7]);
    drop(c);
    f.still_serves();
}

#[on_both_backends]
#[test]
fn a_fatal_alert_closes_during_and_after_the_handshake(backend: Backend) {
    let f = fixture(backend);
    // handshake_failure (40), fatal, in place of a ClientHello.
    let alert = [21u8, 3, 3, 0, 2, 2, 40];
    let mut c = f.raw();
    c.write_all(&alert).unwrap();
    until_closed(&mut c);
    f.wait_for(TlsError::Alert, 1);
    // After the handshake, a fatal alert sent in the clear: TLS 1.3 encrypts alerts
    // once the handshake is over, so this is a bad record.
    let mut good = connect(f.addr(), "localhost", &f.cfg);
    good.write_all(b"before\n").unwrap();
    let mut got = [0u8; 7];
    good.read_exact(&mut got).unwrap();
    good.sock.write_all(&alert).unwrap();
    until_closed(&mut good.sock);
    f.wait_for(TlsError::BadMessage, 1);
    // An encrypted close_notify mid-stream (what a client's alert is once the handshake
    // is over): a clean end, not a failure; the line before it is still answered.
    let mut polite = connect(f.addr(), "localhost", &f.cfg);
    polite.write_all(b"last\n").unwrap();
    polite.conn.send_close_notify();
    polite.flush().unwrap();
    let mut got = [0u8; 5];
    polite.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"last\n");
    polite.sock.shutdown(std::net::Shutdown::Write).unwrap();
    until_closed(&mut polite.sock);
    let t = f.stats();
    assert_eq!(t.failures, [0, 1, 1, 0, 0, 0, 0], "{t:?}");
    f.still_serves();
}

#[on_both_backends]
#[test]
fn a_client_that_never_finishes_is_cut_at_the_timeout(backend: Backend) {
    let f = fixture(backend);
    let start = Instant::now();
    // One sends nothing at all, one a ClientHello and nothing more.
    let mut silent = f.raw();
    let (_, hello) = client_hello(&f.cfg);
    let mut stalled = f.raw();
    stalled.write_all(&hello).unwrap();
    until_closed(&mut silent);
    until_closed(&mut stalled);
    assert!(start.elapsed() < util::HANG);
    f.wait_for(TlsError::Timeout, 2);
    f.still_serves();
}

#[on_both_backends]
#[test]
fn a_flood_of_handshake_bytes_is_cut_with_bounded_memory(backend: Backend) {
    let f = fixture(backend);
    // Records of handshake type, 16 KiB each, never a valid ClientHello: the server
    // holds at most 64 KiB of them before it cuts the connection.
    let mut c = f.raw();
    let mut record = vec![0x16, 0x03, 0x01, 0x40, 0x00];
    record.extend(std::iter::repeat_n(0xAB, 0x4000));
    let mut sent = 0usize;
    for _ in 0..256 {
        if c.write_all(&record).is_err() {
            break;
        }
        sent += record.len();
    }
    until_closed(&mut c);
    assert!(
        sent < 256 * record.len(),
        "the server read 4 MiB and never cut"
    );
    f.wait_for(TlsError::BadMessage, 1);
    f.still_serves();
}
