//! Shared helpers for the integration tests.
#![allow(dead_code)]

pub mod upstream;

use coreloop::{Backend, IoLoop};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::{Mutex, OnceLock};
use std::thread::ThreadId;
use std::time::Duration;

/// A server whose connections echo lines of up to `max` bytes and never end by
/// themselves (an async handler; `?` ends a connection on its first error).
pub fn line_echo(max: usize) -> coreloop::TcpServer {
    coreloop::TcpServer::new(move |_, s| async move {
        loop {
            let line = s.read_until(b"\n", max).await?;
            s.write(&line).await?;
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    })
}

/// The bound after which a test that waits for the loop counts as hung.
pub const HANG: Duration = Duration::from_secs(20);

/// A loop on `backend`; the test fails if that backend cannot be set up here.
pub fn new_loop(backend: Backend) -> IoLoop {
    let lp = IoLoop::with_backend(backend)
        .unwrap_or_else(|e| panic!("{backend:?} backend unavailable: {e}"));
    assert_eq!(lp.backend(), backend);
    lp
}

/// Runs `lp` until something stops it; fails the test if that takes longer than `HANG`.
pub fn run(lp: &IoLoop) {
    let hung = Rc::new(Cell::new(false));
    let h = hung.clone();
    let guard = lp.call_later(HANG, move |lp| {
        h.set(true);
        lp.stop();
    });
    lp.start().expect("start");
    lp.remove_timeout(guard);
    assert!(!hung.get(), "the loop did not stop within {HANG:?}");
}

/// Runs `fut` as a task on a new loop of `backend` until it completes; fails the test if
/// that takes longer than `HANG`.
pub fn run_task<T: 'static>(
    backend: Backend,
    fut: impl std::future::Future<Output = T> + 'static,
) -> T {
    let lp = new_loop(backend);
    let out = lp
        .run_until_complete(coreloop::timeout(HANG, fut))
        .expect("the loop runs");
    out.expect("the test hung")
}

/// Runs `lp` for `d` (a timer stops it), for tests that check something does NOT happen.
pub fn run_for(lp: &IoLoop, d: Duration) {
    lp.call_later(d, |lp| lp.stop());
    lp.start().expect("start");
}

/// The CPUs the calling thread may run on, as the kernel lists them ("0", "0-1").
pub fn cpus_allowed() -> String {
    let status = std::fs::read_to_string("/proc/thread-self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list")
        .trim()
        .to_string()
}

/// The programs some tests run, each with its Debian package and what those tests
/// check with it. The README's "Optional tools" section lists the same.
pub const TOOLS: &[(&str, &str, &str)] = &[
    (
        "redis-cli",
        "redis-tools",
        "the kv example answers Redis's own client as Redis does",
    ),
    (
        "redis-benchmark",
        "redis-tools",
        "the kv example runs every redis-benchmark test without an error",
    ),
    (
        "promtool",
        "prometheus",
        "the metrics exposition parses with Prometheus's own checker",
    ),
    (
        "systemd-socket-activate",
        "systemd",
        "a socket-activated service (LISTEN_FDS) serves on the socket it is given",
    ),
    (
        "curl",
        "curl",
        "curl, as a client, agrees with the HTTP server",
    ),
    (
        "ab",
        "apache2-utils",
        "ApacheBench through the proxy example gets every answer, kept alive",
    ),
    (
        "wrk",
        "wrk",
        "wrk through the proxy example gets every answer, without errors",
    ),
    (
        "nginx",
        "nginx",
        "the HTTP server behind (or in front of) nginx as a proxy",
    ),
    (
        "haproxy",
        "haproxy",
        "the HTTP server behind (or in front of) haproxy as a proxy",
    ),
    (
        "openssl",
        "openssl",
        "TLS material and clients for the tests that need them",
    ),
    (
        "wrk",
        "wrk",
        "load from wrk, a client that is not ours, with no error",
    ),
    (
        "h2load",
        "nghttp2-client",
        "HTTPS load from h2load --h1 (keep-alive and a new connection per request)",
    ),
];

/// Where the program `tool` (one of [`TOOLS`]) is: in `PATH`, or in the sbin
/// directories Debian puts daemons in (nginx, haproxy), which a user's `PATH` may lack.
/// `None` if it is not installed: then the test should return at once, having been
/// told why here. This prints `SKIPPED: <test>: <tool> not found (...)` to stderr
/// (shown by a plain `cargo test`, not held back with the test's output), or,
/// with `CORELOOP_REQUIRE_TOOLS` set (as CI sets it, having installed every package),
/// fails the test instead: there a missing tool is a broken setup, not a skip.
pub fn require_tool(tool: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let (_, package, adds) = TOOLS
        .iter()
        .find(|(name, _, _)| *name == tool)
        .unwrap_or_else(|| panic!("{tool} is not in tests/util's TOOLS: add it there"));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin", "/sbin"].map(Into::into));
    let found = dirs.map(|d| d.join(tool)).find(|p| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    });
    if found.is_none() {
        let thread = std::thread::current();
        let test = thread.name().unwrap_or("?");
        let why = format!("{tool} not found (Debian package {package}): {adds}");
        assert!(
            std::env::var_os("CORELOOP_REQUIRE_TOOLS").is_none(),
            "{test}: {why}; CORELOOP_REQUIRE_TOOLS is set, so it is required \
             (apt-get install {package})"
        );
        // Straight to the process's stderr, past the test harness's capture, so that a
        // plain `cargo test` shows it.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {why}");
    }
    found
}

/// A logger that keeps every record with the thread that logged it.
struct Capture(Mutex<Vec<(ThreadId, String)>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        let thread = std::thread::current();
        let line = format!(
            "{}: {} {}",
            thread.name().unwrap_or("?"),
            r.level(),
            r.args()
        );
        self.0
            .lock()
            .unwrap()
            .push((std::thread::current().id(), line));
    }
    fn flush(&self) {}
}

fn capture() -> &'static Capture {
    static C: OnceLock<&'static Capture> = OnceLock::new();
    C.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        log::set_logger(c).expect("the only logger in this test binary");
        log::set_max_level(log::LevelFilter::Trace);
        c
    })
}

/// Starts capturing log records (call before the code under test runs).
pub fn capture_logs() {
    capture();
}

/// The records logged so far by the calling thread.
pub fn logs_of_this_thread() -> Vec<String> {
    let me = std::thread::current().id();
    capture()
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| *t == me)
        .map(|(_, l)| l.clone())
        .collect()
}

/// The records logged so far by any thread whose name starts with `prefix` (a runtime's
/// loop threads are `coreloop-N`).
pub fn logs_of_threads(prefix: &str) -> Vec<String> {
    capture()
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, l)| l.starts_with(prefix))
        .map(|(_, l)| l.clone())
        .collect()
}

/// A connected TCP pair over loopback: the server end as an `IoStream` on `lp`, the
/// client end as a blocking std socket.
pub fn tcp_pair(lp: &IoLoop) -> (coreloop::IoStream, std::net::TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (server, _) = l.accept().unwrap();
    (coreloop::IoStream::new(lp, server).unwrap(), client)
}

/// Prints log records to stderr (for child processes whose stderr a test reads).
pub fn log_to_stderr() {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, r: &log::Record) {
            eprintln!("{} {}", r.level(), r.args());
        }
        fn flush(&self) {}
    }
    static L: Stderr = Stderr;
    let _ = log::set_logger(&L);
    log::set_max_level(log::LevelFilter::Info);
}

/// A runtime with one server on it, owned together: what most tests start.
#[derive(Debug)]
pub struct Served {
    pub rt: coreloop::Runtime,
    pub server: coreloop::ServerHandle,
}

impl Served {
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.server.local_addr()
    }

    pub fn runtime(&self) -> &coreloop::Runtime {
        &self.rt
    }

    pub fn handle(&self) -> &coreloop::ServerHandle {
        &self.server
    }

    pub fn open_connections(&self) -> coreloop::Call<usize> {
        self.server.open_connections()
    }

    pub fn stop_accepting(&self) -> coreloop::Call<()> {
        self.server.stop_accepting()
    }

    pub fn drain(&self, deadline: Duration) -> coreloop::Call<usize> {
        self.server.drain(deadline)
    }

    pub fn shutdown(self) -> Result<(), coreloop::RuntimeError> {
        self.rt.shutdown()
    }

    pub fn wait(self) -> Result<(), coreloop::RuntimeError> {
        self.rt.wait()
    }
}

/// Starts a runtime from a builder and serves on it.
pub trait Listen {
    fn listen(
        self,
        builder: coreloop::RuntimeBuilder,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<Served>;
}

impl Listen for coreloop::http::HttpServer {
    fn listen(
        self,
        builder: coreloop::RuntimeBuilder,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<Served> {
        let rt = builder.build()?;
        let server = self.serve(&rt, addr)?;
        Ok(Served { rt, server })
    }
}

impl Listen for coreloop::TcpServer {
    fn listen(
        self,
        builder: coreloop::RuntimeBuilder,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<Served> {
        let rt = builder.build()?;
        let server = self.serve(&rt, addr)?;
        Ok(Served { rt, server })
    }
}

/// `app` served with `cfg` on a runtime of two cores on `backend`, on a free port.
pub fn serve_http(
    backend: coreloop::Backend,
    app: coreloop::http::Application,
    cfg: coreloop::http::HttpConfig,
) -> Served {
    coreloop::http::HttpServer::new(app)
        .config(cfg)
        .listen(
            coreloop::Runtime::builder()
                .backend(backend)
                .cores(coreloop::Cores::Count(2)),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap()
}

/// Sends one request (HTTP/1.0, so the server closes after it) to `addr` and returns the
/// status and the body.
pub fn get_status_and_body(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(HANG)).unwrap();
    write!(c, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut all = String::new();
    c.read_to_string(&mut all).unwrap();
    let status = all
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = all
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}
pub mod tls;
