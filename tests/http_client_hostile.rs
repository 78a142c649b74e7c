//! The HTTP client against hostile upstreams, each a raw socket scripted here: every
//! case gets a clear error (never a hang) with bounded memory, and the retry rule holds:
//! once, on a new connection, only for a request that may be sent again and only when
//! its reused connection closed before any byte of the answer.
mod util;

use coreloop::http::{ClientConfig, ClientError, ClientRequest, Deadline, HttpClient};
use coreloop::{Backend, IoLoop};
use coreloop_macros::on_both_backends;
use std::net::TcpStream;
use std::time::{Duration, Instant};
use util::upstream::{peer_closes, read_request, reset, send, Raw};

/// A server answering every connection's first request with `answer` (then
/// `after(stream)`), and the outcome of one GET to it with `cfg`.
fn one_answer(
    backend: Backend,
    cfg: ClientConfig,
    answer: &'static [u8],
    after: fn(TcpStream),
) -> (Result<(u16, Vec<u8>), ClientError>, Duration) {
    let raw = Raw::start(move |_, mut c| {
        if read_request(&mut c).is_some() {
            send(&mut c, answer);
            after(c);
        }
    });
    get_once(backend, cfg, &raw)
}

fn get_once(
    backend: Backend,
    cfg: ClientConfig,
    raw: &Raw,
) -> (Result<(u16, Vec<u8>), ClientError>, Duration) {
    let url = format!("http://{}/", raw.addr);
    let client = HttpClient::new(cfg);
    util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        let t0 = Instant::now();
        let r = client.fetch(&lp, ClientRequest::get(&url)).await;
        (r.map(|r| (r.status(), r.body().to_vec())), t0.elapsed())
    })
}

fn close(c: TcpStream) {
    drop(c);
}

fn linger(c: TcpStream) {
    std::thread::sleep(Duration::from_secs(3));
    drop(c);
}

fn fast() -> ClientConfig {
    ClientConfig {
        head_timeout: Duration::from_millis(400),
        body_timeout: Duration::from_millis(400),
        ..ClientConfig::default()
    }
}

/// What a hostile answer gets: malformed heads and framing are `Malformed` at once,
/// without waiting for a deadline.
#[on_both_backends]
#[test]
fn malformed_answers_are_refused_at_once(backend: Backend) {
    let cases: &[&'static [u8]] = &[
        b"HTTP/1.1 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    ];
    for answer in cases {
        let (r, took) = one_answer(backend, fast(), answer, linger);
        let shown = String::from_utf8_lossy(answer);
        assert!(
            matches!(r, Err(ClientError::Malformed(_))),
            "{shown:?}: {r:?}"
        );
        assert!(took < Duration::from_millis(300), "{shown:?} took {took:?}");
    }
}

#[on_both_backends]
#[test]
fn an_oversized_head_is_refused_with_bounded_memory(backend: Backend) {
    let raw = Raw::start(|_, mut c| {
        read_request(&mut c);
        send(&mut c, b"HTTP/1.1 200 OK\r\n");
        // Header lines without an end, far past the limit (8 MiB).
        let line = [b"X-Filler: ".as_slice(), &[b'a'; 1000], b"\r\n"].concat();
        for _ in 0..8 * 1024 {
            if std::io::Write::write_all(&mut c, &line).is_err() {
                return;
            }
        }
    });
    let cfg = ClientConfig {
        max_head: 16 * 1024,
        ..fast()
    };
    let (r, _) = get_once(backend, cfg, &raw);
    match r {
        Err(ClientError::Malformed(e)) => assert_eq!(e.reason(), "response head too large"),
        other => panic!("{other:?}"),
    }
    // So many header lines within the limit: too many fields.
    let raw = Raw::start(|_, mut c| {
        read_request(&mut c);
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..200 {
            head.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        head.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        send(&mut c, &head);
        linger(c);
    });
    let (r, _) = get_once(backend, fast(), &raw);
    assert!(matches!(r, Err(ClientError::Malformed(e)) if e.reason() == "too many header fields"));
}

#[on_both_backends]
#[test]
fn a_buffered_body_over_max_body_is_refused_before_it_is_all_read(backend: Backend) {
    let raw = Raw::start(|_, mut c| {
        read_request(&mut c);
        send(
            &mut c,
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n",
        );
        let part = vec![b'x'; 64 * 1024];
        for _ in 0..16 * 1024 {
            if std::io::Write::write_all(&mut c, &part).is_err() {
                return;
            }
        }
    });
    let cfg = ClientConfig {
        max_body: 1024 * 1024,
        ..fast()
    };
    let (r, _) = get_once(backend, cfg, &raw);
    assert!(
        matches!(r, Err(ClientError::TooLarge { limit: 1048576 })),
        "{r:?}"
    );
}

/// Answers cut short: a body shorter than its length, a chunk cut off, a reset.
#[on_both_backends]
#[test]
fn an_answer_cut_short_is_a_connection_error(backend: Backend) {
    type Case = (&'static [u8], fn(TcpStream));
    let cases: &[Case] = &[
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", close),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            close,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789",
            reset,
        ),
        (b"HTTP/1.1 200 OK\r\nCont", close),
        (b"", close),
    ];
    for (answer, after) in cases {
        let (r, took) = one_answer(backend, fast(), answer, *after);
        let shown = String::from_utf8_lossy(answer);
        assert!(
            matches!(
                &r,
                Err(ClientError::Connection(_)) | Err(ClientError::Malformed(_))
            ),
            "{shown:?}: {r:?}"
        );
        assert!(took < Duration::from_millis(300), "{shown:?} took {took:?}");
    }
}

/// Deadlines: a server that never answers, one that trickles its head, one that stops
/// mid-body, one that trickles its body under the body deadline but past the total.
#[on_both_backends]
#[test]
fn every_wait_has_a_deadline(backend: Backend) {
    // Never answering.
    let (r, took) = one_answer(backend, fast(), b"", linger);
    assert!(
        matches!(r, Err(ClientError::Timeout(Deadline::Head))),
        "{r:?}"
    );
    assert!(
        took >= Duration::from_millis(390) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // A head trickled in, a byte every 50 ms: the head deadline is not moved by progress.
    let raw = Raw::start(|_, mut c| {
        read_request(&mut c);
        for b in b"HTTP/1.1 200 OK\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n" {
            send(&mut c, &[*b]);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let (r, took) = get_once(backend, fast(), &raw);
    assert!(
        matches!(r, Err(ClientError::Timeout(Deadline::Head))),
        "{r:?}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    // A body that stops.
    let (r, _) = one_answer(
        backend,
        fast(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel",
        linger,
    );
    assert!(
        matches!(r, Err(ClientError::Timeout(Deadline::Body))),
        "{r:?}"
    );
    // A body trickled in under the body deadline: the total deadline ends it.
    let raw = Raw::start(|_, mut c| {
        read_request(&mut c);
        send(&mut c, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
        for _ in 0..100 {
            send(&mut c, b"x");
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let cfg = ClientConfig {
        total_timeout: Some(Duration::from_millis(600)),
        ..fast()
    };
    let (r, took) = get_once(backend, cfg, &raw);
    assert!(
        matches!(r, Err(ClientError::Timeout(Deadline::Total))),
        "{r:?}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[on_both_backends]
#[test]
fn a_connect_that_gets_no_answer_times_out(backend: Backend) {
    // A listener whose backlog is full: the kernel drops further SYNs.
    let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    l.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    l.listen(0).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&addr.into());
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(50));
    let cfg = ClientConfig {
        connect_timeout: Duration::from_millis(300),
        ..fast()
    };
    let client = HttpClient::new(cfg);
    let (r, took) = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        let t0 = Instant::now();
        let r = client
            .fetch(&lp, ClientRequest::get(format!("http://{addr}/")))
            .await;
        (r.map(|r| r.status()), t0.elapsed())
    });
    assert!(
        matches!(r, Err(ClientError::Timeout(Deadline::Connect))),
        "{r:?}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    drop(held);
}

/// The server closes a reused connection as the request arrives, before any byte of
/// its answer: a GET is sent again once, on a new connection; a POST is not.
#[on_both_backends]
#[test]
fn a_request_crossing_the_servers_idle_close_is_retried_once_if_idempotent(backend: Backend) {
    let raw = Raw::start(|i, mut c| {
        if i == 0 {
            read_request(&mut c);
            send(&mut c, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst");
            read_request(&mut c); // the second request: closed without an answer
            return;
        }
        read_request(&mut c);
        send(&mut c, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nretry");
        linger(c);
    });
    let url = format!("http://{}/", raw.addr);
    let client = HttpClient::default();
    let (first, second, stats) = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        let a = client.fetch(&lp, ClientRequest::get(&url)).await.unwrap();
        let b = client.fetch(&lp, ClientRequest::get(&url)).await.unwrap();
        (
            a.body().to_vec(),
            b.body().to_vec(),
            lp.stats().await.unwrap(),
        )
    });
    assert_eq!((first, second), (b"first".to_vec(), b"retry".to_vec()));
    let st = stats.client_total(&raw.addr.to_string()).unwrap();
    assert_eq!((st.retries, st.opened), (1, 2));
    assert_eq!(raw.accepted(), 2);

    // The same with a POST: not sent again.
    let raw = Raw::start(|i, mut c| {
        if i == 0 {
            read_request(&mut c);
            send(&mut c, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst");
            read_request(&mut c);
        }
    });
    let url = format!("http://{}/", raw.addr);
    let client = HttpClient::default();
    let second = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        client.fetch(&lp, ClientRequest::get(&url)).await.unwrap();
        client
            .fetch(&lp, ClientRequest::new("POST", &url).body("once"))
            .await
            .map(|r| r.status())
    });
    assert!(
        matches!(second, Err(ClientError::Connection(_))),
        "{second:?}"
    );
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(raw.accepted(), 1, "a POST is not sent again");

    // A new connection that closes before answering: nothing to retry (not reused).
    let (r, _) = one_answer(backend, fast(), b"", close);
    assert!(matches!(r, Err(ClientError::Connection(_))), "{r:?}");
}

/// The server closes an idle connection before it is reused: the pool notices and the
/// next request goes on a new connection, with no error and no retry.
#[on_both_backends]
#[test]
fn an_idle_connection_the_server_closed_is_not_reused(backend: Backend) {
    let raw = Raw::start(|_, mut c| {
        read_request(&mut c);
        send(&mut c, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        std::thread::sleep(Duration::from_millis(50));
        // closed while idle
    });
    let url = format!("http://{}/", raw.addr);
    let client = HttpClient::default();
    let stats = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        client.fetch(&lp, ClientRequest::get(&url)).await.unwrap();
        coreloop::sleep(Duration::from_millis(300)).await;
        let r = client.fetch(&lp, ClientRequest::get(&url)).await.unwrap();
        assert_eq!(r.body(), b"ok");
        lp.stats().await.unwrap()
    });
    let st = stats.client_total(&raw.addr.to_string()).unwrap();
    assert_eq!((st.retries, st.opened, st.reused), (0, 2, 0));
}

/// Bodies framed three ways, an interim 100, trailers; and a server that sends more
/// than its Content-Length has its connection closed rather than reused.
#[on_both_backends]
#[test]
fn every_framing_of_an_answer(backend: Backend) {
    let cases: &[(&'static [u8], &[u8])] = &[
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3;x=y\r\nllo\r\n0\r\nT: 1\r\n\r\n",
            b"hello",
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
        (b"HTTP/1.0 200 OK\r\n\r\nhello", b"hello"),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", b""),
    ];
    for (answer, body) in cases {
        let (r, _) = one_answer(backend, fast(), answer, close);
        let shown = String::from_utf8_lossy(answer);
        assert_eq!(r.unwrap().1, *body, "{shown:?}");
    }
    // More bytes than the length: the answer is the length's worth, and the rest is
    // never taken for the next answer.
    let raw = Raw::start(|_, mut c| {
        while read_request(&mut c).is_some() {
            send(&mut c, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhello");
        }
    });
    let url = format!("http://{}/", raw.addr);
    let client = HttpClient::default();
    let bodies = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        let mut out = Vec::new();
        for _ in 0..2 {
            let r = client.fetch(&lp, ClientRequest::get(&url)).await.unwrap();
            out.push(r.body().to_vec());
        }
        out
    });
    assert_eq!(bodies, vec![b"he".to_vec(), b"he".to_vec()]);
    assert_eq!(
        raw.accepted(),
        2,
        "the connection with extra bytes was not reused"
    );
}

/// A fetch dropped before its answer (a cancelled task) closes its connection.
#[on_both_backends]
#[test]
fn a_cancelled_fetch_closes_its_connection(backend: Backend) {
    let (tx, rx) = std::sync::mpsc::channel();
    let raw = Raw::start(move |_, mut c| {
        read_request(&mut c);
        let closed = peer_closes(&mut c, Duration::from_secs(5));
        tx.send(closed).unwrap();
    });
    let url = format!("http://{}/", raw.addr);
    let client = HttpClient::default();
    let r = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        coreloop::timeout(
            Duration::from_millis(100),
            client.fetch(&lp, ClientRequest::get(&url)),
        )
        .await
    });
    assert!(r.is_err(), "it timed out");
    assert!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        "the server saw the close"
    );
}

/// An idle connection stays in the pool for idle_timeout, then the client closes it.
#[on_both_backends]
#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout(backend: Backend) {
    let (tx, rx) = std::sync::mpsc::channel();
    let raw = Raw::start(move |_, mut c| {
        read_request(&mut c);
        send(&mut c, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let t0 = Instant::now();
        let closed = peer_closes(&mut c, Duration::from_secs(10));
        tx.send((closed, t0.elapsed())).unwrap();
    });
    let url = format!("http://{}/", raw.addr);
    let client = HttpClient::new(ClientConfig {
        idle_timeout: Duration::from_millis(300),
        ..ClientConfig::default()
    });
    let (idle_after_answer, open_later) = util::run_task(backend, async move {
        let lp = IoLoop::current().unwrap();
        client.fetch(&lp, ClientRequest::get(url)).await.unwrap();
        let a = lp.stats().await.unwrap();
        coreloop::sleep(Duration::from_millis(600)).await;
        let b = lp.stats().await.unwrap();
        let up = |s: &coreloop::metrics::Snapshot| {
            s.cores[0]
                .client
                .iter()
                .map(|c| (c.open, c.idle))
                .next()
                .unwrap()
        };
        (up(&a), up(&b))
    });
    assert_eq!(idle_after_answer, (1, 1));
    assert_eq!(open_later, (0, 0));
    let (closed, after) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(closed, "the client closed it");
    assert!(
        after >= Duration::from_millis(250) && after < Duration::from_secs(3),
        "{after:?}"
    );
}
