//! Several servers on one runtime the service owns: each stops, drains and shuts down
//! alone while the runtime and the other servers go on; a server that cannot start on
//! some core says so and leaves nothing behind; HTTP also runs on connections the
//! service accepted itself.
mod util;

use coreloop::http::{Application, HttpServer, Route};
use coreloop::{
    bind_reuseport, Acceptor, Backend, Cores, ListenOptions, Runtime, ServerHandle, TcpServer,
};
use coreloop_macros::on_both_backends;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn runtime(backend: Backend) -> Runtime {
    Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(2))
        .build()
        .unwrap()
}

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A server that greets every connection with `word` and closes it.
fn greeter(rt: &Runtime, word: &'static str) -> ServerHandle {
    TcpServer::new(move |_, s| {
        s.write(word.as_bytes()).then(|_, s, _| {
            s.close();
        });
    })
    .serve(rt, any())
    .unwrap()
}

fn read_all(addr: SocketAddr) -> std::io::Result<String> {
    let mut c = TcpStream::connect(addr)?;
    c.set_read_timeout(Some(util::HANG))?;
    let mut got = String::new();
    c.read_to_string(&mut got)?;
    Ok(got)
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(util::HANG)).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut got = String::new();
    c.read_to_string(&mut got).unwrap();
    got
}

#[on_both_backends]
#[test]
fn two_servers_on_one_runtime_one_shut_down_while_the_other_serves(backend: Backend) {
    let rt = runtime(backend);
    let a = greeter(&rt, "a");
    let b = greeter(&rt, "b");
    assert_ne!(a.local_addr(), b.local_addr());
    for _ in 0..4 {
        assert_eq!(read_all(a.local_addr()).unwrap(), "a");
        assert_eq!(read_all(b.local_addr()).unwrap(), "b");
    }
    a.close().wait().unwrap();
    // a's port no longer accepts (refused, or closed without a greeting); b serves.
    assert!(read_all(a.local_addr()).map_or(true, |s| s.is_empty()));
    for _ in 0..4 {
        assert_eq!(read_all(b.local_addr()).unwrap(), "b");
    }
    // The runtime itself is untouched.
    assert_eq!(
        rt.call_on_all(|lp| lp.shard_id()).wait().unwrap(),
        vec![0, 1]
    );
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn draining_a_server_waits_for_its_connections_then_cuts_the_rest(backend: Backend) {
    let rt = runtime(backend);
    // Echoes lines until the client closes.
    let echo = TcpServer::new(|_, s| {
        fn line(s: &coreloop::IoStream) {
            s.read_until(b"\n", 1024).then(|_, s, r| {
                if let Ok(l) = r {
                    s.write(&l);
                    line(s);
                }
            });
        }
        line(&s);
    })
    .serve(&rt, any())
    .unwrap();
    let other = greeter(&rt, "still here");
    let mut c = TcpStream::connect(echo.local_addr()).unwrap();
    c.set_read_timeout(Some(util::HANG)).unwrap();
    c.write_all(b"x\n").unwrap();
    let mut b = [0u8; 2];
    c.read_exact(&mut b).unwrap();
    assert_eq!(echo.open_connections().wait().unwrap(), 1);
    let stats = echo.stats().wait().unwrap();
    assert_eq!(stats.cores.iter().map(|c| c.open).sum::<usize>(), 1);
    assert_eq!((stats.accepted(), stats.open()), (1, 1));
    // The client keeps its connection: the drain waits out its deadline, then cuts it.
    let t0 = Instant::now();
    let cut = echo.drain(Duration::from_millis(300)).wait().unwrap();
    assert_eq!(cut, 1);
    assert!(t0.elapsed() >= Duration::from_millis(300));
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap(); // end of file: the server closed it
    assert!(rest.is_empty());
    assert_eq!(echo.open_connections().wait().unwrap(), 0);
    assert_eq!(read_all(other.local_addr()).unwrap(), "still here");
    // A connection that ends by itself ends the drain early.
    let echo2 = TcpServer::new(|_, s| {
        s.read_until_close().then(|_, s, _| {
            s.close();
        });
    })
    .serve(&rt, any())
    .unwrap();
    let c2 = TcpStream::connect(echo2.local_addr()).unwrap();
    let deadline = Instant::now() + util::HANG;
    while echo2.open_connections().wait().unwrap() == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    let closer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        drop(c2);
    });
    let t0 = Instant::now();
    assert_eq!(echo2.drain(util::HANG).wait().unwrap(), 0);
    assert!(t0.elapsed() < util::HANG / 2);
    closer.join().unwrap();
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_server_that_cannot_start_says_why_and_leaves_nothing_behind(backend: Backend) {
    let rt = runtime(backend);
    // A port another listener holds without SO_REUSEPORT.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = TcpServer::new(|_, s| {
        s.close();
    })
    .serve(&rt, taken.local_addr().unwrap())
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    // Nothing was left listening or registered: a new server starts fine.
    let ok = greeter(&rt, "ok");
    assert_eq!(read_all(ok.local_addr()).unwrap(), "ok");
    assert_eq!(
        rt.call_on_all(|lp| lp.open_resources()).wait().unwrap(),
        vec![1, 1],
        "one acceptor per core, nothing else"
    );
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn http_servers_share_a_runtime_and_shut_down_gracefully_one_at_a_time(backend: Backend) {
    let rt = runtime(backend);
    let api = HttpServer::new(Application::new().route(
        "/",
        Route::new().get(|lp, _, mut r| r.write(format!("api on {}", lp.shard_id()))),
    ))
    .serve(&rt, any())
    .unwrap();
    let admin = HttpServer::new(
        Application::new().route("/health", Route::new().get(|_, _, mut r| r.write("ok"))),
    )
    .serve(&rt, any())
    .unwrap();
    assert!(http_get(admin.local_addr(), "/health").ends_with("\r\n\r\nok"));
    assert!(http_get(api.local_addr(), "/").contains("\r\n\r\napi on "));
    assert_eq!(admin.drain(Duration::from_secs(5)).wait().unwrap(), 0);
    assert!(TcpStream::connect(admin.local_addr())
        .and_then(|mut c| {
            c.set_read_timeout(Some(util::HANG))?;
            c.write_all(b"GET /health HTTP/1.0\r\n\r\n")?;
            let mut s = String::new();
            c.read_to_string(&mut s)?;
            Ok(s)
        })
        .map_or(true, |s| s.is_empty()));
    assert!(http_get(api.local_addr(), "/").contains("\r\n\r\napi on "));
    rt.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn http_runs_on_a_connection_the_service_accepted_itself(backend: Backend) {
    let rt = runtime(backend);
    let http = HttpServer::new(
        Application::new().route("/", Route::new().get(|_, _, mut r| r.write("own accept"))),
    );
    let listener = bind_reuseport(any(), 128).unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = std::sync::Mutex::new(Some(listener));
    rt.call_on(0, move |lp| {
        let l = listener.lock().unwrap().take().unwrap();
        Acceptor::start(lp, l, ListenOptions::default(), move |lp, stream| {
            // The service's own policy first (here: nothing), then HTTP.
            http.serve_stream(lp, stream);
        })
        .map(drop)
    })
    .wait()
    .unwrap()
    .unwrap();
    for _ in 0..3 {
        assert!(http_get(addr, "/").ends_with("\r\n\r\nown accept"));
    }
    rt.shutdown().unwrap();
}
