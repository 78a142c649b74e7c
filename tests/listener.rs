//! Listening on every core, accepting, the connection limit, and fd exhaustion.
mod util;
use util::Listen;

use coreloop_macros::on_both_backends;

use coreloop::{
    bind_reuseport, Acceptor, Backend, Cores, IoStream, ListenOptions, Runtime, TcpServer,
};
use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use util::{new_loop, run};

fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Epoll => "epoll",
        _ => "uring",
    }
}

/// Echoes lines until the peer closes.
fn echo_lines(s: &IoStream) {
    s.read_until(b"\n", 1024).then(|_, s, line| {
        if let Ok(line) = line {
            s.write(&line);
            echo_lines(s);
        }
    });
}

#[on_both_backends]
#[test]
fn port_zero_on_two_cores_shares_one_port_and_both_accept(backend: Backend) {
    let per_shard = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let nodelay = Arc::new(AtomicUsize::new(0));
    let (p, n) = (per_shard.clone(), nodelay.clone());
    let server = TcpServer::new(move |lp, s| {
        p[lp.shard_id()].fetch_add(1, Ordering::Relaxed);
        if s.nodelay().unwrap() {
            n.fetch_add(1, Ordering::Relaxed);
        }
        echo_lines(&s);
    })
    .listen(
        Runtime::builder().backend(backend).cores(Cores::Count(2)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0, "the real port is reported");
    let mut clients = Vec::new();
    for _ in 0..1000 {
        clients.push(TcpStream::connect(addr).unwrap());
    }
    // Every connection is served: each echoes a line.
    for c in clients.iter_mut() {
        c.write_all(b"x\n").unwrap();
    }
    for c in clients.iter_mut() {
        c.set_read_timeout(Some(util::HANG)).unwrap();
        let mut b = [0u8; 2];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x\n");
    }
    let counts = [
        per_shard[0].load(Ordering::Relaxed),
        per_shard[1].load(Ordering::Relaxed),
    ];
    assert_eq!(counts[0] + counts[1], 1000);
    assert!(
        counts[0] > 0 && counts[1] > 0,
        "both cores accept: {counts:?}"
    );
    assert_eq!(
        nodelay.load(Ordering::Relaxed),
        1000,
        "TCP_NODELAY on every accepted socket"
    );
    drop(clients);
    server.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn ipv6_listeners_work_too(backend: Backend) {
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback here: nothing to check");
        return;
    };
    drop(probe);
    let server = TcpServer::new(|_, s| echo_lines(&s))
        .listen(
            Runtime::builder().backend(backend).cores(Cores::Count(2)),
            "[::1]:0".parse().unwrap(),
        )
        .unwrap();
    assert!(server.local_addr().is_ipv6());
    let mut c = TcpStream::connect(server.local_addr()).unwrap();
    c.write_all(b"six\n").unwrap();
    let mut b = [0u8; 4];
    c.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"six\n");
    server.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_taken_port_is_an_error_not_a_panic(backend: Backend) {
    // A plain listener without SO_REUSEPORT holds the port.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap();
    let r = TcpServer::new(|_, _| {}).listen(
        Runtime::builder().backend(backend).cores(Cores::Count(2)),
        addr,
    );
    assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::AddrInUse);
}

#[on_both_backends]
#[test]
fn the_connection_limit_stops_accepting_until_one_closes(backend: Backend) {
    let lp = new_loop(backend);
    let listener = bind_reuseport("127.0.0.1:0".parse().unwrap(), 128).unwrap();
    let addr = listener.local_addr().unwrap();
    let opts = ListenOptions {
        max_connections: 5,
        ..ListenOptions::default()
    };
    // Kept until the peer closes (end of file closes a stream).
    let kept: Rc<RefCell<Vec<coreloop::IoStream>>> = Rc::default();
    let k = kept.clone();
    let acc = Acceptor::start(&lp, listener, opts, move |_, stream| {
        k.borrow_mut().push(stream);
    })
    .unwrap();
    // The kernel completes all ten handshakes (backlog); the acceptor takes five.
    let clients: Rc<RefCell<Vec<TcpStream>>> = Rc::new(RefCell::new(
        (0..10).map(|_| TcpStream::connect(addr).unwrap()).collect(),
    ));
    let seen = Rc::new(RefCell::new(Vec::new()));
    let (a, s, c) = (acc.clone(), seen.clone(), clients.clone());
    lp.call_later(Duration::from_millis(100), move |lp| {
        s.borrow_mut()
            .push((a.accepted(), a.connections(), a.is_paused()));
        // Close two of the accepted ones (accepted in connect order).
        c.borrow_mut().drain(..2);
        let (a, s) = (a.clone(), s.clone());
        lp.call_later(Duration::from_millis(200), move |lp| {
            s.borrow_mut()
                .push((a.accepted(), a.connections(), a.is_paused()));
            lp.stop();
        });
    });
    run(&lp);
    assert_eq!(*seen.borrow(), [(5, 5, true), (7, 5, true)]);
}

#[on_both_backends]
#[test]
fn a_stopped_acceptor_refuses_new_connections(backend: Backend) {
    let lp = new_loop(backend);
    let listener = bind_reuseport("127.0.0.1:0".parse().unwrap(), 128).unwrap();
    let addr = listener.local_addr().unwrap();
    let acc = Acceptor::start(&lp, listener, ListenOptions::default(), |_, s| {
        echo_lines(&s)
    })
    .unwrap();
    lp.call_later(Duration::from_millis(5), |lp| lp.stop());
    run(&lp);
    acc.stop();
    lp.call_later(Duration::from_millis(5), |lp| lp.stop());
    run(&lp);
    assert!(TcpStream::connect(addr).is_err(), "the listener is closed");
    assert_eq!(lp.open_resources(), 0);
}

/// Many short connections, closed by either side, leave nothing open on the loop.
#[on_both_backends]
#[test]
fn closed_connections_leave_nothing_behind(backend: Backend) {
    let server = TcpServer::new(|_, s| echo_lines(&s))
        .listen(
            Runtime::builder().backend(backend).cores(Cores::Count(1)),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
    for i in 0..400 {
        let mut c = TcpStream::connect(server.local_addr()).unwrap();
        c.write_all(b"x\n").unwrap();
        let mut b = [0u8; 2];
        c.read_exact(&mut b).unwrap();
        if i % 2 == 0 {
            // Reset instead of a clean close, half of the time.
            socket2::SockRef::from(&c)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        }
    }
    let deadline = Instant::now() + util::HANG;
    loop {
        let open = server
            .runtime()
            .call_on_all(|lp| lp.open_resources())
            .wait()
            .unwrap();
        if open == vec![1] && server.open_connections().wait().unwrap() == 0 {
            break; // the acceptor only
        }
        assert!(Instant::now() < deadline, "left open: {open:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    server.shutdown().unwrap();
}

/// Runs the child below with RLIMIT_NOFILE lowered to 48, opens more connections than
/// it has descriptors for, and checks that it pauses instead of spinning, logs once,
/// and serves again once descriptors are free.
#[on_both_backends]
#[test]
fn fd_exhaustion_pauses_accepting_then_resumes(backend: Backend) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new("bash")
        .arg("-c")
        .arg("ulimit -n 48 && exec \"$0\" \"$@\"")
        .arg(exe)
        .args([
            "--exact",
            "fd_exhaustion_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CORELOOP_FD_CHILD", backend_name(backend))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest may have printed "test name ... " on the same line first.
            if let Some(p) = line.split("PORT ").nth(1) {
                let _ = tx.send(p.trim().parse::<u16>().unwrap());
            }
        }
    });
    let stderr = child.stderr.take().unwrap();
    let err_seen = Arc::new(Mutex::new(Vec::new()));
    let seen = err_seen.clone();
    let err_lines = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            seen.lock().unwrap().push(line);
        }
    });
    let port = rx.recv_timeout(util::HANG).expect("child did not start");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    // More connections than the child has descriptors.
    let mut clients: Vec<TcpStream> = (0..60).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    // Exhausted: the child must not spin. Over one second a spinning accept loop burns
    // about a whole core; a paused one retries ten times and sleeps.
    let cpu = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    let (t0, c0) = (Instant::now(), cpu(pid));
    std::thread::sleep(Duration::from_secs(1));
    let ticks = cpu(pid) - c0;
    let hz = 100.0; // USER_HZ on Linux
    let busy = ticks as f64 / hz / t0.elapsed().as_secs_f64();
    assert!(
        busy < 0.3,
        "child used {:.0}% of a core while out of fds",
        busy * 100.0
    );

    // One episode so far (the connections still pending keep the child out of fds
    // through about ten retries): one log line.
    let logged = err_seen.lock().unwrap().clone();
    let exhaustion_logs = logged
        .iter()
        .filter(|l| l.contains("out of file descriptors"))
        .count();
    assert_eq!(exhaustion_logs, 1, "one log line per episode: {logged:?}");

    // Free descriptors: close 30 of the accepted connections; a new one is served. (The
    // connections still in the backlog may then start a second episode.)
    clients.drain(..30);
    let mut fresh = TcpStream::connect(addr).unwrap();
    fresh
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    fresh.write_all(b"ping\n").unwrap();
    let mut b = [0u8; 5];
    fresh
        .read_exact(&mut b)
        .expect("served again once fds are free");
    assert_eq!(&b, b"ping\n");

    drop(child.stdin.take()); // the child stops when its stdin closes
    let status = child.wait().unwrap();
    err_lines.join().unwrap();
    let err = err_seen.lock().unwrap().clone();
    assert!(status.success(), "child failed: {err:?}");
    drop(clients);
}

#[test]
#[ignore = "the child process of fd_exhaustion_pauses_accepting_then_resumes"]
fn fd_exhaustion_child() {
    let Ok(name) = std::env::var("CORELOOP_FD_CHILD") else {
        return;
    };
    util::log_to_stderr();
    let lp = new_loop(Backend::parse(&name).unwrap());
    let listener = bind_reuseport("127.0.0.1:0".parse().unwrap(), 1024).unwrap();
    println!("PORT {}", listener.local_addr().unwrap().port());
    let opts = ListenOptions {
        fd_exhausted_pause: Duration::from_millis(100),
        ..ListenOptions::default()
    };
    let _acc = Acceptor::start(&lp, listener, opts, |_, s| echo_lines(&s)).unwrap();
    let h = lp.handle();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = h.stop();
    });
    lp.start().unwrap();
}
