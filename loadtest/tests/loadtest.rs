//! loadtest against coreloop servers in the same process, on both backends.

use coreloop::http::{Application, HttpServer, Route};
use coreloop::{Backend, Cores, Runtime, ServerHandle};
use coreloop_macros::on_both_backends;
use loadtest::{run, Config};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// loadtest's `--backend` value for a backend.
fn backend_arg(b: Backend) -> &'static str {
    match b {
        Backend::Epoll => "epoll",
        _ => "uring",
    }
}

/// The server under test. Neither it nor the client is pinned: pinned, both would run
/// on the first core (in one process, `Cores::Count(1)` means the same core), and on a
/// busy machine the two could wait on each other for seconds.
fn server(app: Application) -> Served {
    let rt = Runtime::builder()
        .cores(Cores::Count(1))
        .pin(false)
        .backend(Backend::Auto)
        .build()
        .unwrap();
    let server = HttpServer::new(app)
        .serve(&rt, "127.0.0.1:0".parse().unwrap())
        .unwrap();
    Served { rt, server }
}

/// The server's runtime, and its handle.
struct Served {
    rt: Runtime,
    server: ServerHandle,
}

impl Served {
    fn local_addr(&self) -> std::net::SocketAddr {
        self.server.local_addr()
    }

    fn shutdown(self) -> Result<(), coreloop::RuntimeError> {
        self.rt.shutdown()
    }
}

fn cfg(args: &[&str]) -> Config {
    let mut all = vec!["loadtest", "--no-pin"];
    all.extend_from_slice(args);
    Config::from_args(all).unwrap()
}

fn counted_server() -> (Served, Arc<AtomicU64>) {
    let n = Arc::new(AtomicU64::new(0));
    let c = n.clone();
    let app = Application::new().route(
        "/",
        Route::new().get(move |_, _, mut r| {
            c.fetch_add(1, Ordering::Relaxed);
            r.write("Hello, world");
        }),
    );
    (server(app), n)
}

/// Every response is counted once and only once, with and without pipelining, for GET
/// and for HEAD.
#[on_both_backends]
#[test]
fn successes_equal_what_the_server_answered(backend: Backend) {
    let backend = backend_arg(backend);
    let (s, count) = counted_server();
    let url = format!("http://{}/", s.local_addr());
    // HEAD: answers carry a Content-Length and no body (RFC 9110 9.3.2).
    for extra in [
        &[][..],
        &["--pipeline", "8"][..],
        &["--method", "HEAD"][..],
        &["--method", "HEAD", "--pipeline", "8"][..],
    ] {
        let before = count.load(Ordering::Relaxed);
        let mut args = vec!["-c", "8", "-d", "1s", "--backend", backend];
        args.extend_from_slice(extra);
        args.push(&url);
        let r = run(&cfg(&args)).unwrap();
        let answered = count.load(Ordering::Relaxed) - before;
        assert!(r.totals.requests > 1000, "{} requests", r.totals.requests);
        // Every answer counted once: none twice, and none lost but the ones still in
        // flight when the run ended (a starved client may not read them in the drain).
        assert!(
            r.totals.requests <= answered && answered <= r.totals.requests + r.totals.unfinished,
            "client and server disagree ({extra:?}): client {} (+{} unfinished), server \
             {answered}; errors: connect {} read {} write {} timeout {}",
            r.totals.requests,
            r.totals.unfinished,
            r.totals.connect_errors,
            r.totals.read_errors,
            r.totals.write_errors,
            r.totals.timeouts
        );
        assert_eq!(
            r.totals.read_errors
                + r.totals.write_errors
                + r.totals.connect_errors
                + r.totals.non_2xx_3xx,
            0
        );
    }
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn a_constant_rate_is_kept_within_five_percent(backend: Backend) {
    let backend = backend_arg(backend);
    let (s, _) = counted_server();
    let url = format!("http://{}/", s.local_addr());
    let r = run(&cfg(&[
        "-c",
        "10",
        "-d",
        "5s",
        "-R",
        "2000",
        "--backend",
        backend,
        &url,
    ]))
    .unwrap();
    let rps = r.rps();
    assert!(
        (1900.0..=2100.0).contains(&rps),
        "asked 2000/s, got {rps:.1}/s"
    );
    s.shutdown().unwrap();
}

/// wrk2's demonstration: the server stalls for 1 s once. At a constant rate, latency
/// is measured from when each request was due, so the stall shows in p99; a closed
/// loop only sees the few requests that were in flight, and its p99 hides it.
#[on_both_backends]
#[test]
fn a_stall_shows_at_a_constant_rate_and_hides_in_a_closed_loop(backend: Backend) {
    let backend = backend_arg(backend);
    let app = || {
        let calls = Arc::new(AtomicU64::new(0));
        Application::new().route(
            "/",
            Route::new().get(move |_, _, mut r| {
                // The 500th request blocks the whole server loop for a second.
                if calls.fetch_add(1, Ordering::Relaxed) == 500 {
                    std::thread::sleep(Duration::from_secs(1));
                }
                r.write("ok");
            }),
        )
    };
    let s = server(app());
    let url = format!("http://{}/", s.local_addr());
    let rate = run(&cfg(&[
        "-c",
        "10",
        "-d",
        "4s",
        "-R",
        "1000",
        "--backend",
        backend,
        &url,
    ]))
    .unwrap();
    s.shutdown().unwrap();
    let s = server(app());
    let url = format!("http://{}/", s.local_addr());
    let closed = run(&cfg(&["-c", "10", "-d", "4s", "--backend", backend, &url])).unwrap();
    s.shutdown().unwrap();
    let p99_rate = rate.latency_us(0.99);
    let p99_closed = closed.latency_us(0.99);
    assert!(
        p99_rate >= 300_000,
        "constant rate p99 {p99_rate} us should show the 1 s stall"
    );
    assert!(
        p99_closed < 100_000,
        "closed loop p99 {p99_closed} us should hide it"
    );
    assert!(
        closed.totals.latency.max() >= 900_000,
        "but its max shows it"
    );
}

#[on_both_backends]
#[test]
fn garbage_and_error_statuses_are_counted_not_taken_as_success(backend: Backend) {
    let backend = backend_arg(backend);
    // A server that answers every request with bytes that are not HTTP.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming().take(200) {
            let Ok(mut c) = c else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(b"this is not http\r\n\r\n").is_err() {
                        break;
                    }
                }
            });
        }
    });
    let r = run(&cfg(&[
        "-c",
        "2",
        "-d",
        "500ms",
        "--backend",
        backend,
        &format!("http://{addr}/"),
    ]))
    .unwrap();
    assert_eq!(r.totals.requests, 0);
    assert!(r.totals.read_errors > 0);
    // 404s are responses, counted as non-2xx/3xx.
    let s = server(Application::new());
    let url = format!("http://{}/missing", s.local_addr());
    let r = run(&cfg(&[
        "-c",
        "2",
        "-d",
        "500ms",
        "--backend",
        backend,
        &url,
    ]))
    .unwrap();
    assert!(r.totals.requests > 0);
    assert_eq!(r.totals.non_2xx_3xx, r.totals.requests);
    s.shutdown().unwrap();
}

#[on_both_backends]
#[test]
fn output_in_wrks_layout_hgrm_and_json(backend: Backend) {
    let backend = backend_arg(backend);
    let (s, _) = counted_server();
    let url = format!("http://{}/", s.local_addr());
    let c = cfg(&[
        "-c",
        "4",
        "-d",
        "300ms",
        "--latency",
        "--backend",
        backend,
        &url,
    ]);
    let r = run(&c).unwrap();
    let text = r.wrk_text(&c);
    for needle in [
        "Running ",
        "threads and 4 connections",
        "Latency Distribution",
        " 99% ",
        "Requests/sec:",
        "Transfer/sec:",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from\n{text}");
    }
    let hgrm = r.hgrm();
    assert!(
        hgrm.contains("Value   Percentile   TotalCount") && hgrm.contains("#[Max"),
        "{hgrm}"
    );
    let json = r.json();
    assert!(
        json.starts_with("{\"requests\":") && json.contains("\"p99\":"),
        "{json}"
    );
    s.shutdown().unwrap();
}

/// `--server-metrics`: the server's own histogram over the run, beside the client's.
#[on_both_backends]
#[test]
fn the_servers_latency_is_read_from_its_metrics_endpoint(backend: Backend) {
    let backend = backend_arg(backend);
    let s = server(
        Application::new()
            .route("/", Route::new().get(|_, _, mut r| r.write("Hello, world")))
            .route("/metrics", coreloop::metrics::route()),
    );
    let url = format!("http://{}/", s.local_addr());
    let metrics = format!("http://{}/metrics", s.local_addr());
    let args = [
        "-c",
        "4",
        "-d",
        "1s",
        "--backend",
        backend,
        "--server-metrics",
        &metrics,
        &url,
    ];
    let r = run(&cfg(&args)).unwrap();
    let server = r.server.as_ref().expect("the server's histogram");
    let (client, counted) = (r.totals.requests as f64, server.count());
    assert!(client > 1000.0, "{client} requests");
    // Both count the requests of the same second, give or take those at its edges (the
    // first fetch of /metrics takes a moment while the load has begun).
    assert!(
        (counted - client).abs() <= 16.0 + client * 0.02,
        "server {counted}, client {client}"
    );
    let (s50, c50) = (
        server.quantile(0.5).unwrap() * 1e6,
        r.latency_us(0.5) as f64,
    );
    assert!(
        s50 > 0.0 && s50 <= c50,
        "server p50 {s50} us, client p50 {c50} us"
    );
    let text = r.wrk_text(&cfg(&args));
    assert!(text.contains("Server-side latency ("), "{text}");
    s.shutdown().unwrap();
}

#[test]
fn bad_arguments_get_a_message_and_a_nonzero_exit() {
    let exe = env!("CARGO_BIN_EXE_loadtest");
    let cases: &[&[&str]] = &[
        &["http://"],
        &["http:///path"],
        &["https://example.com/"],
        &["-c", "0", "http://127.0.0.1:1/"],
        &["-t", "0", "http://127.0.0.1:1/"],
        &["--bogus", "http://127.0.0.1:1/"],
        &["-d", "ten", "http://127.0.0.1:1/"],
        &[],
    ];
    for args in cases {
        let out = std::process::Command::new(exe)
            .args(*args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(!err.trim().is_empty(), "{args:?}: no message");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    }
}
