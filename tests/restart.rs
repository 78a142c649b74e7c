//! Zero-downtime restart: a new instance takes over the running one's listening sockets
//! (`RuntimeBuilder::upgrade_socket` + `take_over`, `Runtime::ready`), and the old one
//! drains only once the new one serves. Instances are runtimes in this process (the
//! sockets go over the Unix socket and SCM_RIGHTS all the same), and the last test runs
//! a child under systemd-socket-activate (socket activation, `LISTEN_FDS`). Clients are
//! std sockets.

mod util;

use coreloop::http::{Application, HttpConfig, HttpServer, Route};
use coreloop::{Backend, Cores, ListenOptions, Runtime, ServerHandle};
use coreloop_macros::on_both_backends;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A fresh upgrade socket path for one test on one backend.
fn socket_path(test: &str, backend: Backend) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "coreloop-test-{}-{test}-{backend:?}.sock",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&p);
    p
}

/// An instance: `cores` loops (not pinned: several run in this process at once).
fn instance(backend: Backend, cores: usize, path: Option<&PathBuf>, take_over: bool) -> Runtime {
    let mut b = Runtime::builder()
        .cores(Cores::Count(cores))
        .pin(false)
        .backend(backend)
        .drain_deadline(Duration::from_secs(5));
    if let Some(p) = path {
        b = b.upgrade_socket(p).take_over(take_over);
    }
    b.build().unwrap()
}

/// Answers `gen N` on `/`: a client sees which instance answered.
fn serve_gen(rt: &Runtime, addr: SocketAddr, gen: usize, listen: ListenOptions) -> ServerHandle {
    let body = format!("gen {gen}");
    let app = Application::new().route(
        "/",
        Route::new().get(move |_, _, mut resp| resp.write(body.clone())),
    );
    let cfg = HttpConfig {
        listen,
        ..HttpConfig::default()
    };
    HttpServer::new(app).config(cfg).serve(rt, addr).unwrap()
}

const ANY: &str = "127.0.0.1:0";

/// Reads one response; its status and body. `Ok(None)`: the connection closed before
/// any byte of it.
fn read_response(r: &mut BufReader<TcpStream>) -> io::Result<Option<(u16, String, bool)>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
    let (mut len, mut close) = (0usize, false);
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.to_ascii_lowercase();
        if l == "\r\n" || l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            len = v.trim().parse().map_err(io::Error::other)?;
        }
        if l.starts_with("connection:") && l.contains("close") {
            close = true;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(Some((status, String::from_utf8_lossy(&body).into(), close)))
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";

/// What the clients saw.
#[derive(Default, Debug)]
struct Seen {
    /// Answers, by generation.
    answers: Vec<usize>,
    /// Requests that got no answer (refused, reset, closed, timed out, garbled), each
    /// with why.
    failures: Vec<String>,
    /// Requests sent again because the server had closed a kept-alive connection
    /// before any byte of their answer (as browsers and curl do): not failures.
    retried: usize,
}

impl Seen {
    fn answered(&mut self, body: &str) {
        let gen: usize = body.trim_start_matches("gen ").parse().unwrap_or(0);
        if self.answers.len() <= gen {
            self.answers.resize(gen + 1, 0);
        }
        self.answers[gen] += 1;
    }
}

/// One client thread until `stop`: a request every 2 ms, on a kept-alive connection
/// (`keep_alive`) or on a new connection each.
fn client(addr: SocketAddr, keep_alive: bool, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let mut conn: Option<(BufReader<TcpStream>, bool)> = None; // (stream, answered before)
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(2));
        // A kept-alive connection the server closed while idle is reopened first.
        if let Some((r, _)) = &conn {
            let s = r.get_ref();
            s.set_nonblocking(true).unwrap();
            let closed = match s.peek(&mut [0]) {
                Ok(n) => n == 0,
                Err(e) => e.kind() != io::ErrorKind::WouldBlock,
            };
            s.set_nonblocking(false).unwrap();
            if closed {
                conn = None;
            }
        }
        let mut retried = false;
        loop {
            if conn.is_none() {
                match TcpStream::connect(addr) {
                    Ok(s) => {
                        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        conn = Some((BufReader::new(s), false));
                    }
                    Err(e) => {
                        seen.lock().unwrap().failures.push(format!("connect: {e}"));
                        break;
                    }
                }
            }
            let (r, reused) = conn.as_mut().unwrap();
            let reused = *reused;
            let outcome = r
                .get_mut()
                .write_all(REQUEST)
                .and_then(|_| read_response(r));
            // Closed before any byte of the answer (an end of file, a reset, or a
            // write into a closed connection).
            let closed = match &outcome {
                Ok(None) => true,
                Err(e) => matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ),
                Ok(Some(_)) => false,
            };
            match outcome {
                Ok(Some((200, body, close))) => {
                    seen.lock().unwrap().answered(&body);
                    if close || !keep_alive {
                        conn = None;
                    } else {
                        conn.as_mut().unwrap().1 = true;
                    }
                    break;
                }
                // On a connection that had answered before, a request that met its
                // close is sent again, once, on a new one (RFC 9112 9.3.1).
                _ if closed && reused && !retried => {
                    retried = true;
                    seen.lock().unwrap().retried += 1;
                    conn = None;
                }
                other => {
                    seen.lock().unwrap().failures.push(format!(
                        "{} connection: {other:?}",
                        if reused { "reused" } else { "new" }
                    ));
                    conn = None;
                    break;
                }
            }
        }
        if !keep_alive {
            conn = None;
        }
    }
}

/// Runs `clients` kept-alive and as many new-connection clients against `addr` while
/// `restart` restarts the service; what they saw. One load at a time: on a small
/// machine, loads run side by side would starve each other's clients (a client that
/// stalls for long between its connect and its request is not what is tested here).
fn under_load(addr: SocketAddr, clients: usize, restart: impl FnOnce()) -> Seen {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let threads: Vec<_> = (0..2 * clients)
        .map(|i| {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || client(addr, i % 2 == 0, stop, seen))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    restart();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    Arc::try_unwrap(seen).unwrap().into_inner().unwrap()
}

/// Three hand-overs under a steady load, to 1, 2 and 1 cores from 2: every request is
/// answered, and each generation answered some.
#[on_both_backends]
#[test]
fn restarts_by_hand_over_under_load_lose_no_connection_and_no_request(backend: Backend) {
    let path = socket_path("load", backend);
    let first = instance(backend, 2, Some(&path), false);
    let addr = serve_gen(&first, ANY.parse().unwrap(), 1, ListenOptions::default()).local_addr();
    first.ready().unwrap();
    let mut current = Some(first);
    let started = Instant::now();
    let seen = under_load(addr, 4, || {
        for (gen, cores) in [(2, 1), (3, 2), (4, 1)] {
            let new = instance(backend, cores, Some(&path), true);
            let served = serve_gen(&new, ANY.parse().unwrap(), gen, ListenOptions::default());
            assert_eq!(served.local_addr(), addr, "the same port, taken over");
            new.ready().unwrap();
            // The old instance stops accepting, drains and stops by itself.
            current.replace(new).unwrap().wait().unwrap();
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    current.unwrap().shutdown().unwrap();
    eprintln!("{seen:?} in {:?}", started.elapsed());
    assert!(seen.failures.is_empty(), "failed: {:?}", seen.failures);
    for gen in 1..=4 {
        assert!(
            seen.answers.get(gen).copied().unwrap_or(0) > 0,
            "generation {gen} answered nothing: {:?}",
            seen.answers
        );
    }
    assert!(seen.answers.iter().sum::<usize>() > 200, "{seen:?}");
}

/// The same load and restarts by stop-and-start (a graceful drain, then a new instance
/// binds, as a plain restart does): requests fail, so the test above could see them.
#[on_both_backends]
#[test]
fn restarts_by_stop_and_start_under_the_same_load_fail_requests(backend: Backend) {
    let first = instance(backend, 2, None, false);
    let addr = serve_gen(&first, ANY.parse().unwrap(), 1, ListenOptions::default()).local_addr();
    let mut current = Some(first);
    let seen = under_load(addr, 4, || {
        for (gen, cores) in [(2, 1), (3, 2), (4, 1)] {
            current
                .take()
                .unwrap()
                .drain(Duration::from_secs(5))
                .unwrap();
            // A new process takes a moment to start.
            std::thread::sleep(Duration::from_millis(100));
            let new = instance(backend, cores, None, false);
            serve_gen(&new, addr, gen, ListenOptions::default());
            current = Some(new);
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    current.unwrap().shutdown().unwrap();
    eprintln!(
        "{} failures, {:?} answers",
        seen.failures.len(),
        seen.answers
    );
    assert!(
        seen.failures.iter().any(|f| f.contains("refused")),
        "a stop-and-start refused no connection: {seen:?}"
    );
}

/// Connections the old instance has not accepted yet (it is at its connection limit,
/// so they wait in its accept queue) are served by the new one: they sit in the very
/// sockets it takes over.
#[on_both_backends]
#[test]
fn connections_queued_in_the_old_accept_queue_are_served_by_the_new_instance(backend: Backend) {
    let path = socket_path("queued", backend);
    let old = instance(backend, 1, Some(&path), false);
    let one = ListenOptions {
        max_connections: 1,
        ..ListenOptions::default()
    };
    let server = serve_gen(&old, ANY.parse().unwrap(), 1, one);
    old.ready().unwrap();
    let addr = server.local_addr();
    let (holder, queued) = hold_and_queue(&server, 10);
    let new = instance(backend, 2, Some(&path), true);
    serve_gen(&new, ANY.parse().unwrap(), 2, ListenOptions::default());
    new.ready().unwrap();
    for (i, c) in queued.into_iter().enumerate() {
        let got = read_response(&mut BufReader::new(c)).unwrap();
        assert!(
            matches!(&got, Some((200, body, _)) if body == "gen 2"),
            "queued connection {i} got {got:?}"
        );
    }
    old.wait().unwrap(); // its one idle connection closed by the drain
    drop(holder);
    assert_eq!(
        get(addr).unwrap().1,
        "gen 2",
        "the new instance serves new connections"
    );
    new.shutdown().unwrap();
}

/// Without a hand-over, the same queued connections are lost when the old instance
/// closes its sockets (each SO_REUSEPORT socket is its own accept queue): what the test
/// above guards against.
#[on_both_backends]
#[test]
fn connections_queued_in_a_closed_listener_are_lost(backend: Backend) {
    let old = instance(backend, 1, None, false);
    let one = ListenOptions {
        max_connections: 1,
        ..ListenOptions::default()
    };
    let server = serve_gen(&old, ANY.parse().unwrap(), 1, one);
    let (_holder, queued) = hold_and_queue(&server, 10);
    old.drain(Duration::from_secs(5)).unwrap();
    for (i, c) in queued.into_iter().enumerate() {
        let got = read_response(&mut BufReader::new(c));
        assert!(
            matches!(got, Ok(None) | Err(_)),
            "queued connection {i} was answered: {got:?}"
        );
    }
}

/// One connection that keeps `server` (limited to one) busy, and `n` connections with a
/// request each, queued in its accept queue.
fn hold_and_queue(server: &ServerHandle, n: usize) -> (TcpStream, Vec<TcpStream>) {
    let holder = TcpStream::connect(server.local_addr()).unwrap();
    let until = Instant::now() + util::HANG;
    while server.open_connections().wait().unwrap() == 0 {
        assert!(Instant::now() < until, "the holder was never accepted");
        std::thread::sleep(Duration::from_millis(5));
    }
    let queued: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut c = TcpStream::connect(server.local_addr()).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c.write_all(REQUEST).unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        server.open_connections().wait().unwrap(),
        1,
        "the queued connections are not accepted (the limit holds them in the queue)"
    );
    (holder, queued)
}

/// One request on a new connection: status and body.
fn get(addr: SocketAddr) -> io::Result<(u16, String)> {
    let mut c = TcpStream::connect(addr)?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    c.write_all(REQUEST)?;
    let (status, body, _) = read_response(&mut BufReader::new(c))?
        .ok_or_else(|| io::Error::other("closed without an answer"))?;
    Ok((status, body))
}

/// A hand-over request from a process that is not an instance (wrong greeting) is
/// refused, and the running instance serves on and still hands over afterwards.
#[on_both_backends]
#[test]
fn a_bad_hand_over_request_is_refused_and_the_instance_serves_on(backend: Backend) {
    use std::os::unix::net::UnixStream;
    let path = socket_path("bad", backend);
    let old = instance(backend, 1, Some(&path), false);
    let addr = serve_gen(&old, ANY.parse().unwrap(), 1, ListenOptions::default()).local_addr();
    old.ready().unwrap();
    // A stream socket to a seqpacket listener cannot even connect.
    assert!(UnixStream::connect(&path).is_err());
    // A seqpacket peer that sends nonsense gets an error and nothing else.
    let bad = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::SEQPACKET, None).unwrap();
    bad.connect(&socket2::SockAddr::unix(&path).unwrap())
        .unwrap();
    let mut bad = bad;
    bad.write_all(b"give me your sockets").unwrap();
    bad.set_read_timeout(Some(util::HANG)).unwrap();
    let mut buf = [0u8; 256];
    let n = bad.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"error"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    drop(bad);
    assert_eq!(get(addr).unwrap().1, "gen 1", "it serves on");
    // And a real instance still takes over.
    let new = instance(backend, 1, Some(&path), true);
    serve_gen(&new, ANY.parse().unwrap(), 2, ListenOptions::default());
    new.ready().unwrap();
    old.wait().unwrap();
    assert_eq!(get(addr).unwrap().1, "gen 2");
    new.shutdown().unwrap();
}

/// A second instance started without taking over, while one runs and hands over at the
/// same path, is refused at build (it would otherwise fight over the port).
#[on_both_backends]
#[test]
fn a_fresh_start_beside_a_running_instance_is_refused(backend: Backend) {
    let path = socket_path("twice", backend);
    let old = instance(backend, 1, Some(&path), false);
    old.ready().unwrap();
    let again = Runtime::builder()
        .cores(Cores::Count(1))
        .pin(false)
        .backend(backend)
        .upgrade_socket(&path)
        .build();
    let e = io::Error::from(again.expect_err("refused"));
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
    old.shutdown().unwrap();
    assert!(
        !path.exists(),
        "the socket file goes with the last instance"
    );
    // A file left by an instance that ended without removing it is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    instance(backend, 1, Some(&path), false).shutdown().unwrap();
    // A take-over with nobody to take over from starts afresh.
    let alone = instance(backend, 1, Some(&path), true);
    let addr = serve_gen(&alone, ANY.parse().unwrap(), 1, ListenOptions::default()).local_addr();
    alone.ready().unwrap();
    assert_eq!(get(addr).unwrap().1, "gen 1");
    alone.shutdown().unwrap();
}

/// Socket activation: systemd-socket-activate listens, and on the first connection
/// starts the child below with the listening socket as descriptor 3 (`LISTEN_FDS=1`,
/// `LISTEN_FDNAMES=web`). The child serves on it instead of binding (binding would be
/// refused: the port is taken), and answers that first connection, which was queued
/// before the process existed.
#[on_both_backends]
#[test]
fn a_socket_activated_service_serves_on_the_socket_it_was_given(backend: Backend) {
    use std::process::{Command, Stdio};
    let Some(activate) = util::require_tool("systemd-socket-activate") else {
        return;
    };
    let addr = std::net::TcpListener::bind(ANY)
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = Command::new(activate)
        .arg(format!("--listen={addr}"))
        .arg("--fdname=web")
        .arg(format!("--setenv=CORELOOP_ACTIVATED={addr},{backend:?}"))
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "socket_activated_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + util::HANG;
    let got = loop {
        match get(addr) {
            Ok(got) => break got,
            Err(e) => {
                assert!(
                    Instant::now() < until,
                    "no answer from the activated child: {e}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    assert_eq!(got, (200, "activated".to_string()));
    // Served again, from every core the child runs (two, sharing the one socket).
    for _ in 0..20 {
        assert_eq!(get(addr).unwrap().1, "activated");
    }
    // SIGTERM, a graceful stop, once it has finished starting (it may answer before).
    let (tx, ready) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("CHILD READY") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let started = ready.recv_timeout(util::HANG).is_ok();
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    let err = lines.join().unwrap();
    assert!(started && status.success(), "child failed: {status}; {err}");
    assert!(
        err.contains("socket activation: 1 listening socket(s) on"),
        "{err}"
    );
    assert!(err.contains("named \"web\""), "{err}");
}

/// The child of the test above (run by it, with CORELOOP_ACTIVATED set).
#[test]
#[ignore = "run by a_socket_activated_service_serves_on_the_socket_it_was_given"]
fn socket_activated_child() {
    let Ok(spec) = std::env::var("CORELOOP_ACTIVATED") else {
        return;
    };
    util::log_to_stderr();
    let (addr, backend) = spec.split_once(',').unwrap();
    let backend = if backend == "Epoll" {
        Backend::Epoll
    } else {
        Backend::Uring
    };
    let rt = Runtime::builder()
        .cores(Cores::Count(2))
        .pin(false)
        .backend(backend)
        .stop_on_signals(true)
        .build()
        .unwrap();
    let app = Application::new().route(
        "/",
        Route::new().get(|_, _, mut resp| resp.write("activated")),
    );
    HttpServer::new(app)
        .serve(&rt, addr.parse().unwrap())
        .unwrap();
    rt.ready().unwrap();
    eprintln!("CHILD READY");
    rt.wait().unwrap();
}
