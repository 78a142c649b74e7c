//! `HttpServer`: an [`Application`] served on every core of a runtime.

use super::app::Application;
use super::conn::{drain, serve};
use super::HttpConfig;
use crate::net::TcpServer;
use crate::runtime::{Runtime, RuntimeBuilder, RuntimeError};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Serves an [`Application`] over HTTP/1.1 on every core, each with its own
/// SO_REUSEPORT listener (Tornado's `HTTPServer(app).listen(port)`).
///
/// ```
/// use coreloop::http::{Application, HttpServer, Route};
/// use coreloop::{Cores, Runtime};
/// use std::io::{Read, Write};
///
/// let app = Application::new()
///     .route("/", Route::new().get(|_, _, mut resp| resp.write("Hello, world")));
/// let server = HttpServer::new(app)
///     .listen(Runtime::builder().cores(Cores::Count(2)), "127.0.0.1:0".parse().unwrap())?;
/// let mut c = std::net::TcpStream::connect(server.local_addr())?;
/// c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
/// let mut reply = String::new();
/// c.read_to_string(&mut reply)?;
/// assert!(reply.starts_with("HTTP/1.1 200 OK\r\n") && reply.ends_with("\r\n\r\nHello, world"));
/// server.shutdown().unwrap();
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct HttpServer {
    app: Arc<Application>,
    cfg: Arc<HttpConfig>,
}

impl HttpServer {
    /// A server for `app` with the default [`HttpConfig`].
    pub fn new(app: Application) -> HttpServer {
        HttpServer {
            app: Arc::new(app),
            cfg: Arc::new(HttpConfig::default()),
        }
    }

    /// Replaces the limits and timeouts.
    pub fn config(mut self, mut cfg: HttpConfig) -> HttpServer {
        cfg.max_head = cfg.max_head.min(super::MAX_HEAD_LIMIT);
        self.cfg = Arc::new(cfg);
        self
    }

    /// Starts `builder`'s runtime and serves on `addr` on every core; port 0 picks a
    /// free port ([`TcpServer::local_addr`] says which).
    pub fn listen(
        self,
        builder: RuntimeBuilder,
        addr: SocketAddr,
    ) -> io::Result<RunningHttpServer> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let HttpServer { app, cfg } = self;
        let opts = cfg.listen.clone();
        let tcp = TcpServer::bind(builder, addr, opts, move |lp, stream| {
            serve(lp, id, stream, app.clone(), cfg.clone());
        })?;
        Ok(RunningHttpServer { tcp, id })
    }
}

/// An [`HttpServer`] serving on every core of its runtime.
#[derive(Debug)]
pub struct RunningHttpServer {
    tcp: TcpServer,
    id: u64,
}

impl RunningHttpServer {
    /// The address every core listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.tcp.local_addr()
    }

    /// The runtime it runs on.
    pub fn runtime(&self) -> &Runtime {
        self.tcp.runtime()
    }

    /// Connections open on all cores.
    pub fn open_connections(&self) -> Result<usize, RuntimeError> {
        self.tcp.open_connections()
    }

    /// Stops at once: every loop stops and closes its connections.
    pub fn shutdown(self) -> Result<(), RuntimeError> {
        self.tcp.shutdown()
    }

    /// Waits until the loops stop (a signal with `stop_on_signals`, or a handle).
    pub fn wait(self) -> Result<(), RuntimeError> {
        self.tcp.wait()
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully (see
    /// [`graceful_shutdown`](Self::graceful_shutdown)); returns what that returns. The
    /// runtime should not also stop on signals itself (`stop_on_signals`), or the loops
    /// stop at once instead.
    pub fn run_until_signal(self, deadline: Duration) -> io::Result<usize> {
        let sig = crate::runtime::wait_for_stop_signal()?;
        log::info!("coreloop: signal {sig}: shutting down gracefully");
        self.graceful_shutdown(deadline).map_err(io::Error::other)
    }

    /// Shuts down gracefully: stops accepting, closes the connections that wait for a
    /// request, lets the requests in flight finish (their responses say
    /// `Connection: close`), and stops every loop once no connection is left or
    /// `deadline` has passed. Returns how many connections were still open then (and
    /// closed without their answer).
    ///
    /// ```
    /// use coreloop::http::{Application, HttpServer, Route};
    /// use coreloop::{Cores, Runtime};
    /// use std::time::Duration;
    /// let app = Application::new().route("/", Route::new().get(|_, _, mut r| r.write("hi")));
    /// let server = HttpServer::new(app)
    ///     .listen(Runtime::builder().cores(Cores::Count(2)), "127.0.0.1:0".parse().unwrap())?;
    /// let left = server.graceful_shutdown(Duration::from_secs(5)).unwrap();
    /// assert_eq!(left, 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn graceful_shutdown(self, deadline: Duration) -> Result<usize, RuntimeError> {
        let end = Instant::now() + deadline;
        self.tcp.stop_accepting()?;
        let id = self.id;
        self.tcp.runtime().invoke_on_all(move |lp| drain(lp, id))?;
        let left = loop {
            let open = self.tcp.open_connections()?;
            if open == 0 || Instant::now() >= end {
                break open;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        self.tcp.shutdown()?;
        Ok(left)
    }
}
