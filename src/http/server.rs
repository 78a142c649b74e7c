//! `HttpServer`: an [`Application`] served on every core of a runtime, on connections
//! it accepts itself or on streams the service hands it.

use super::app::Application;
use super::conn::{drain, name_server, serve};
use super::HttpConfig;
use crate::iostream::IoStream;
use crate::net::{ServerHandle, ServerId, TcpServer};
use crate::reactor::IoLoop;
use crate::runtime::{Runtime, RuntimeBuilder, RuntimeError};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Serves an [`Application`] over HTTP/1.1 on every core, each with its own
/// SO_REUSEPORT listener (Tornado's `HTTPServer(app).listen(port)`).
///
/// [`serve`](Self::serve) attaches it to a runtime the service owns, beside its other
/// servers; [`listen`](Self::listen) builds a runtime for it alone;
/// [`serve_stream`](Self::serve_stream) speaks HTTP on a connection the service accepted
/// itself.
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
    /// The id the connections of `serve_stream` are registered under.
    id: ServerId,
}

impl HttpServer {
    /// A server for `app` with the default [`HttpConfig`].
    pub fn new(app: Application) -> HttpServer {
        HttpServer {
            app: Arc::new(app),
            cfg: Arc::new(HttpConfig::default()),
            id: ServerId::next(),
        }
    }

    /// Replaces the limits and timeouts.
    pub fn config(mut self, mut cfg: HttpConfig) -> HttpServer {
        cfg.max_head = cfg.max_head.min(super::MAX_HEAD_LIMIT);
        self.cfg = Arc::new(cfg);
        self
    }

    /// Serves on `addr` on every core of `runtime`, beside whatever else it runs; port 0
    /// picks a free port ([`HttpServerHandle::local_addr`] says which). Returns once every
    /// core accepts, or the error of the core that cannot. Call it from a plain thread.
    ///
    /// ```
    /// use coreloop::http::{Application, HttpServer, Route};
    /// use coreloop::{Cores, Runtime};
    /// use std::time::Duration;
    /// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
    /// let api = HttpServer::new(Application::new()
    ///     .route("/", Route::new().get(|_, _, mut r| r.write("api"))));
    /// let admin = HttpServer::new(Application::new()
    ///     .route("/health", Route::new().get(|_, _, mut r| r.write("ok"))));
    /// let any = "127.0.0.1:0".parse().unwrap();
    /// let (api, admin) = (api.serve(&rt, any)?, admin.serve(&rt, any)?);
    /// assert_ne!(api.local_addr(), admin.local_addr());
    /// assert_eq!(admin.graceful_shutdown(Duration::from_secs(1)).unwrap(), 0);
    /// // The api server is still serving here.
    /// rt.shutdown().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn serve(&self, runtime: &Runtime, addr: SocketAddr) -> io::Result<HttpServerHandle> {
        let id = ServerId::next();
        let (app, cfg) = (self.app.clone(), self.cfg.clone());
        let opts = cfg.listen.clone();
        let tcp = TcpServer::serve_as(id, runtime.handles(), addr, opts, move |lp, stream| {
            serve(lp, id, stream, app.clone(), cfg.clone());
        })?;
        // Its numbers are named by its address on every core.
        let name = tcp.local_addr().to_string();
        let named = crate::runtime::invoke_all(runtime.handles(), move |lp| {
            name_server(lp, id, name.clone())
        });
        if let Err(e) = named {
            let _ = tcp.shutdown();
            return Err(io::Error::other(e));
        }
        Ok(HttpServerHandle { tcp })
    }

    /// Starts `builder`'s runtime and serves on `addr` on every core (the shortcut for a
    /// process with one server); see [`serve`](Self::serve).
    pub fn listen(
        self,
        builder: RuntimeBuilder,
        addr: SocketAddr,
    ) -> io::Result<RunningHttpServer> {
        let runtime = builder.build()?;
        match self.serve(&runtime, addr) {
            Ok(handle) => Ok(RunningHttpServer { runtime, handle }),
            Err(e) => {
                let _ = runtime.shutdown();
                Err(e)
            }
        }
    }

    /// Speaks HTTP on `stream`, a connection the service accepted (or made) itself on
    /// loop `lp`: requests are read, routed and answered as on the server's own
    /// connections, until the stream closes.
    ///
    /// ```
    /// use coreloop::http::{Application, HttpServer, Route};
    /// use coreloop::{bind_reuseport, Acceptor, IoLoop, ListenOptions};
    /// use std::io::{Read, Write};
    ///
    /// let http = HttpServer::new(Application::new()
    ///     .route("/", Route::new().get(|_, _, mut r| r.write("mine"))));
    /// let lp = IoLoop::new()?;
    /// let listener = bind_reuseport("127.0.0.1:0".parse().unwrap(), 128)?;
    /// let addr = listener.local_addr()?;
    /// Acceptor::start(&lp, listener, ListenOptions::default(), move |lp, stream| {
    ///     // The service's own accept policy, then HTTP.
    ///     http.serve_stream(lp, stream);
    /// })?;
    /// let stop = lp.handle();
    /// let client = std::thread::spawn(move || {
    ///     let mut c = std::net::TcpStream::connect(addr).unwrap();
    ///     c.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    ///     let mut got = String::new();
    ///     c.read_to_string(&mut got).unwrap();
    ///     stop.stop().unwrap();
    ///     got
    /// });
    /// lp.start()?;
    /// assert!(client.join().unwrap().ends_with("\r\n\r\nmine"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn serve_stream(&self, lp: &IoLoop, stream: IoStream) {
        serve(lp, self.id, stream, self.app.clone(), self.cfg.clone());
    }
}

/// One [`HttpServer`] attached to a runtime: stop it accepting, shut it down gracefully
/// or at once, count its connections, while the runtime and its other servers go on.
/// The methods wait for every core: call them from a plain thread.
#[derive(Clone, Debug)]
pub struct HttpServerHandle {
    tcp: ServerHandle,
}

impl HttpServerHandle {
    /// The address every core listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.tcp.local_addr()
    }

    /// Connections open on all cores.
    pub fn open_connections(&self) -> Result<usize, RuntimeError> {
        self.tcp.open_connections()
    }

    /// Connections open on each core, by shard id.
    pub fn connections_per_core(&self) -> Result<Vec<usize>, RuntimeError> {
        self.tcp.connections_per_core()
    }

    /// Stops accepting new connections; those open go on.
    pub fn stop_accepting(&self) -> Result<(), RuntimeError> {
        self.tcp.stop_accepting()
    }

    /// Shuts down gracefully: stops accepting, closes the connections that wait for a
    /// request, lets the requests in flight finish (their responses say
    /// `Connection: close`), and closes what is left once no connection is open or
    /// `deadline` has passed. Returns how many connections were still open then (and
    /// closed without their answer). The runtime goes on.
    pub fn graceful_shutdown(&self, deadline: Duration) -> Result<usize, RuntimeError> {
        let id = self.tcp.id();
        self.tcp.drain_with(deadline, move |lp| drain(lp, id))
    }

    /// Stops accepting and closes every connection now.
    pub fn shutdown(&self) -> Result<(), RuntimeError> {
        self.tcp.shutdown()
    }
}

/// An [`HttpServer`] serving on every core of a runtime it owns (what
/// [`HttpServer::listen`] returns).
#[derive(Debug)]
pub struct RunningHttpServer {
    runtime: Runtime,
    handle: HttpServerHandle,
}

impl RunningHttpServer {
    /// The address every core listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// The runtime it runs on.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The server's handle.
    pub fn handle(&self) -> &HttpServerHandle {
        &self.handle
    }

    /// Connections open on all cores.
    pub fn open_connections(&self) -> Result<usize, RuntimeError> {
        self.handle.open_connections()
    }

    /// Stops at once: every loop stops and closes its connections.
    pub fn shutdown(self) -> Result<(), RuntimeError> {
        self.runtime.shutdown()
    }

    /// Waits until the loops stop (a signal with `stop_on_signals`, or a handle).
    pub fn wait(self) -> Result<(), RuntimeError> {
        self.runtime.wait()
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

    /// Shuts the server down gracefully ([`HttpServerHandle::graceful_shutdown`]), then
    /// stops every loop. Returns how many connections were cut at the deadline.
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
        let left = self.handle.graceful_shutdown(deadline)?;
        self.runtime.shutdown()?;
        Ok(left)
    }
}
