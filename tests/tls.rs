//! TLS on streams, on both backends, with certificates the test makes: TCP and HTTP
//! servers over TLS (rustls as the client), SNI, certificates reloaded while
//! connections are open, session resumption, the client side (`TlsConnector`) against
//! our own server and its verification, and the counters of it all.
mod util;

use coreloop::http::{Application, HttpServer, Route};
use coreloop::tls::{TlsConfig, TlsConnector, TlsError};
use coreloop::{Backend, Cores, IoLoop, IoStream, Runtime, StreamError, TcpServer};
use coreloop_macros::on_both_backends;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;
use util::tls::{client_config, connect, eventually, http_get, peer_cn, Certs};

fn runtime(backend: Backend, cores: usize) -> Runtime {
    Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(cores))
        .build()
        .unwrap()
}

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A line echo over TLS (async handler).
fn echo(rt: &Runtime, tls: TlsConfig) -> coreloop::ServerHandle {
    util::line_echo(64 * 1024)
        .tls(tls)
        .serve(rt, any())
        .unwrap()
}

fn tls_stats(rt: &Runtime) -> coreloop::tls::TlsStats {
    let s = rt.stats().wait().unwrap();
    let mut t = coreloop::tls::TlsStats::default();
    for c in &s.cores {
        t.merge(&c.tls);
    }
    t
}

/// Connects to `addr` as `connector`'s client for `name` (writing `early`, if any,
/// before the handshake ends) and checks that the handshake fails on the server's
/// certificate.
fn assert_certificate_refused(
    lp: &IoLoop,
    addr: SocketAddr,
    connector: TlsConnector,
    name: &'static str,
    early: &'static [u8],
) {
    let e = lp
        .run_until_complete({
            let lp = lp.clone();
            async move {
                let s = IoStream::connect(&lp, addr, Duration::from_secs(5)).await?;
                connector.wrap(&lp, &s, name)?;
                if !early.is_empty() {
                    s.write(early);
                }
                s.handshake().await
            }
        })
        .unwrap()
        .unwrap_err();
    assert_eq!(
        StreamError::of(&e),
        Some(StreamError::Tls(TlsError::Certificate)),
        "{e}"
    );
}

fn hello_app() -> Application {
    Application::new().route("/", Route::new().get(|_, _, mut r| r.write("Hello, TLS")))
}

#[on_both_backends]
#[test]
fn a_tcp_server_echoes_over_tls_small_and_large(backend: Backend) {
    let certs = Certs::new();
    let (cert, key) = certs.server();
    let rt = runtime(backend, 2);
    let server = echo(&rt, TlsConfig::new(&cert, &key).unwrap());
    let cfg = client_config(&certs.ca(), &[]);
    let mut c = connect(server.local_addr(), "localhost", &cfg);
    c.write_all(b"hello\n").unwrap();
    let mut got = [0u8; 6];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello\n");
    // A line of 40,000 bytes: several records each way, bytes intact.
    let mut line: Vec<u8> = (0..40_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    line.push(b'\n');
    c.write_all(&line).unwrap();
    let mut back = vec![0u8; line.len()];
    c.read_exact(&mut back).unwrap();
    assert_eq!(back, line);
    drop(c);
    eventually("the connection closes", || {
        server.open_connections().wait().unwrap() == 0
    });
    let t = tls_stats(&rt);
    assert_eq!(t.handshakes(), 1, "{t:?}");
    assert_eq!(t.failures.iter().sum::<u64>(), 0, "{t:?}");
    assert_eq!(t.duration_ns.len(), 1);
    // The same in Prometheus's text, summed and by core.
    let snapshot = rt.stats().wait().unwrap();
    let text = snapshot.to_prometheus(false);
    for line in [
        "coreloop_tls_handshakes_total{kind=\"full\"} 1\n",
        "coreloop_tls_handshakes_total{kind=\"resumed\"} 0\n",
        "coreloop_tls_failures_total{cause=\"bad_message\"} 0\n",
        "coreloop_tls_handshake_seconds_count 1\n",
    ] {
        assert!(text.contains(line), "{line}{text}");
    }
    let per_core = snapshot.to_prometheus(true);
    assert_eq!(
        per_core
            .matches("coreloop_tls_handshakes_total{kind=\"full\",shard=")
            .count(),
        2,
        "{per_core}"
    );
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn an_https_server_answers_with_alpn_http_1_1(backend: Backend) {
    let certs = Certs::new();
    let (cert, key) = certs.server();
    let rt = runtime(backend, 2);
    let tls = TlsConfig::new(&cert, &key).unwrap();
    let server = HttpServer::new(hello_app())
        .tls(tls)
        .serve(&rt, any())
        .unwrap();
    let cfg = client_config(&certs.ca(), &[b"h2", b"http/1.1"]);
    for _ in 0..3 {
        let mut c = connect(server.local_addr(), "localhost", &cfg);
        assert_eq!(c.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        let answer = http_get(&mut c, "/");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nHello, TLS"), "{answer}");
    }
    // Plain HTTP to a TLS port: not TLS, refused (counted), no answer in plaintext.
    let mut plain = std::net::TcpStream::connect(server.local_addr()).unwrap();
    plain.set_read_timeout(Some(util::HANG)).unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!String::from_utf8_lossy(&got).contains("Hello"));
    eventually("the refusal is counted", || {
        tls_stats(&rt).failures_of(TlsError::BadMessage) == 1
    });
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn sni_chooses_among_certificates(backend: Backend) {
    let certs = Certs::new();
    let (a_cert, a_key) = certs.issue("alpha", &["alpha.test"]);
    let (b_cert, b_key) = certs.issue("beta", &["beta.test", "*.beta.test"]);
    let rt = runtime(backend, 1);
    let tls = TlsConfig::new(&a_cert, &a_key)
        .unwrap()
        .cert(&b_cert, &b_key)
        .unwrap();
    let server = echo(&rt, tls);
    let cfg = client_config(&certs.ca(), &[]);
    // Each name verifies only against its own certificate: the handshake succeeding
    // is the proof that SNI chose it.
    for (name, cn) in [
        ("alpha.test", "alpha"),
        ("beta.test", "beta"),
        ("www.beta.test", "beta"),
    ] {
        let mut c = connect(server.local_addr(), name, &cfg);
        assert_eq!(peer_cn(&c), cn, "{name}");
        c.write_all(b"x\n").unwrap();
        let mut got = [0u8; 2];
        c.read_exact(&mut got).unwrap();
    }
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_reload_serves_the_new_chain_to_new_connections_and_keeps_open_ones(backend: Backend) {
    let certs = Certs::new();
    let (cert, key) = certs.server();
    let rt = runtime(backend, 1);
    let tls = TlsConfig::new(&cert, &key).unwrap();
    let server = echo(&rt, tls.clone());
    let cfg = client_config(&certs.ca(), &[]);
    let mut before = connect(server.local_addr(), "localhost", &cfg);
    assert_eq!(peer_cn(&before), "server");
    // Renewed files in place, then a reload.
    let (renewed_cert, renewed_key) = certs.issue("renewed", &["localhost"]);
    std::fs::rename(&renewed_cert, &cert).unwrap();
    std::fs::rename(&renewed_key, &key).unwrap();
    tls.reload().unwrap();
    let mut after = connect(server.local_addr(), "localhost", &cfg);
    assert_eq!(peer_cn(&after), "renewed");
    for c in [&mut before, &mut after] {
        c.write_all(b"still here\n").unwrap();
        let mut got = [0u8; 11];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"still here\n");
    }
    // A broken file: the reload fails, saying which file, and nothing changes.
    std::fs::write(&key, "not a key").unwrap();
    let e = tls.reload().unwrap_err();
    assert!(e.to_string().contains("server.key"), "{e}");
    let c = connect(server.local_addr(), "localhost", &cfg);
    assert_eq!(peer_cn(&c), "renewed");
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn sessions_resume_by_ticket(backend: Backend) {
    let certs = Certs::new();
    let (cert, key) = certs.server();
    let rt = runtime(backend, 2);
    let server = HttpServer::new(hello_app())
        .tls(TlsConfig::new(&cert, &key).unwrap())
        .serve(&rt, any())
        .unwrap();
    let cfg = client_config(&certs.ca(), &[]);
    let mut first = connect(server.local_addr(), "localhost", &cfg);
    assert_eq!(
        first.conn.handshake_kind(),
        Some(rustls::HandshakeKind::Full)
    );
    assert!(http_get(&mut first, "/").ends_with("Hello, TLS"));
    let mut kinds = Vec::new();
    for _ in 0..4 {
        let mut c = connect(server.local_addr(), "localhost", &cfg);
        // The ticket is read with the first answer.
        assert!(http_get(&mut c, "/").ends_with("Hello, TLS"));
        kinds.push(c.conn.handshake_kind());
    }
    assert!(
        kinds
            .iter()
            .all(|k| *k == Some(rustls::HandshakeKind::Resumed)),
        "{kinds:?}"
    );
    eventually("the handshakes are counted", || {
        let t = tls_stats(&rt);
        t.full == 1 && t.resumed == 4
    });
    rt.shutdown().unwrap();
}

/// The client side on a loop: TlsConnector over IoStream::connect, against our own
/// server; a certificate from another CA does not verify.
#[on_both_backends]
#[test]
fn the_client_side_verifies_and_speaks_through_a_stream(backend: Backend) {
    let certs = Certs::new();
    let (cert, key) = certs.server();
    let rt = runtime(backend, 1);
    let server = echo(&rt, TlsConfig::new(&cert, &key).unwrap());
    let addr = server.local_addr();
    let lp = util::new_loop(backend);
    let good = TlsConnector::with_roots(certs.ca()).unwrap();
    let echoed = lp
        .run_until_complete({
            let lp = lp.clone();
            async move {
                let s = IoStream::connect(&lp, addr, Duration::from_secs(5)).await?;
                good.wrap(&lp, &s, "localhost")?;
                // Written before the handshake ends: goes out after it.
                s.write(b"over tls\n");
                s.handshake().await?;
                assert!(s.is_tls());
                s.read_until(b"\n", 1024).await
            }
        })
        .unwrap()
        .unwrap();
    assert_eq!(echoed, b"over tls\n");
    // Another CA's roots: the server's certificate does not verify.
    let other = Certs::new();
    let bad = TlsConnector::with_roots(other.ca()).unwrap();
    assert_certificate_refused(&lp, addr, bad, "localhost", b"never sent\n");
    // The wrong name: the same.
    let wrong = TlsConnector::with_roots(certs.ca()).unwrap();
    assert_certificate_refused(&lp, addr, wrong, "not-localhost.test", b"");
    let t = lp
        .run_until_complete({
            let lp = lp.clone();
            async move { lp.stats().await }
        })
        .unwrap()
        .unwrap();
    let t = &t.cores[0].tls;
    assert_eq!(
        (t.full, t.failures_of(TlsError::Certificate)),
        (1, 2),
        "{t:?}"
    );
    rt.shutdown().unwrap();
}

/// Many clients at once, each its own full handshake, with the handshakes answered in
/// the loop's queue and on the blocking pool: every one completes and is answered.
#[on_both_backends]
#[test]
fn many_handshakes_at_once_complete_in_the_queue_and_on_the_pool(backend: Backend) {
    let certs = Certs::new();
    let (cert, key) = certs.server();
    for on_pool in [false, true] {
        let rt = runtime(backend, 1);
        let tls = TlsConfig::new(&cert, &key)
            .unwrap()
            .handshake_on_pool(on_pool);
        let server = echo(&rt, tls);
        let addr = server.local_addr();
        let threads: Vec<_> = (0..64)
            .map(|i| {
                let cfg = client_config(&certs.ca(), &[]);
                std::thread::spawn(move || {
                    let mut c = connect(addr, "localhost", &cfg);
                    let line = format!("client {i}\n");
                    c.write_all(line.as_bytes()).unwrap();
                    let mut got = vec![0u8; line.len()];
                    c.read_exact(&mut got).unwrap();
                    assert_eq!(got, line.as_bytes());
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let t = tls_stats(&rt);
        assert_eq!((t.full, t.failures), (64, [0; 7]), "on_pool {on_pool}");
        rt.shutdown().unwrap();
    }
}

/// `TlsConnector::new()` trusts the system's roots, and only them: the test's own CA
/// is not among them, so its certificate is refused (verification is on by default).
#[on_both_backends]
#[test]
fn the_system_roots_do_not_trust_a_private_ca(backend: Backend) {
    let system = match TlsConnector::new() {
        Ok(c) => c,
        Err(e) => {
            // A machine without ca-certificates: nothing to test.
            eprintln!("SKIPPED: no system roots: {e}");
            return;
        }
    };
    let certs = Certs::new();
    let (cert, key) = certs.server();
    let rt = runtime(backend, 1);
    let server = echo(&rt, TlsConfig::new(&cert, &key).unwrap());
    let addr = server.local_addr();
    let lp = util::new_loop(backend);
    assert_certificate_refused(&lp, addr, system, "localhost", b"");
    rt.shutdown().unwrap();
}

/// What a handler writes just before it closes goes out, then close_notify: the
/// client reads it all and a clean end (rustls reports an end without close_notify as
/// an error).
#[on_both_backends]
#[test]
fn a_write_then_close_delivers_the_bytes_then_close_notify(backend: Backend) {
    let certs = Certs::new();
    let (cert, key) = certs.server();
    let rt = runtime(backend, 1);
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let sent = big.clone();
    let server = TcpServer::new(move |_, s| {
        // Written before the handshake is even over, and closed at once.
        s.write(b"bye\n");
        s.write(&sent);
        s.close();
    })
    .tls(TlsConfig::new(&cert, &key).unwrap())
    .serve(&rt, any())
    .unwrap();
    let cfg = client_config(&certs.ca(), &[]);
    for _ in 0..3 {
        let mut c = connect(server.local_addr(), "localhost", &cfg);
        let mut got = Vec::new();
        c.read_to_end(&mut got)
            .expect("a clean end, with close_notify");
        assert_eq!(&got[..4], b"bye\n");
        assert!(got[4..] == big[..], "{} bytes", got.len());
    }
    rt.shutdown().unwrap();
}
