//! `HttpServer`: an [`Application`] served on every core of a runtime, on connections
//! it accepts itself or on streams the service hands it.

use super::app::Application;
use super::conn::serve;
use super::server_conns::{drain, name_server};
use super::HttpConfig;
use crate::iostream::{IoStream, TlsConfig};
use crate::net::{serve_on, start_tls, ServerHandle, ServerId};
use crate::reactor::IoLoop;
use crate::runtime::Runtime;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

/// Serves an [`Application`] over HTTP/1.1 on every core, each with its own
/// SO_REUSEPORT listener (Tornado's `HTTPServer(app).listen(port)`).
///
/// Built like [`TcpServer`](crate::TcpServer): `new`, then [`config`](Self::config) if
/// the defaults do not do, then [`serve`](Self::serve) on a runtime the service owns,
/// beside its other servers, which gives the [`ServerHandle`] every kind of server has
/// (its [`drain`](ServerHandle::drain) lets the requests in flight finish).
/// [`serve_stream`](Self::serve_stream) speaks HTTP on a connection the service
/// accepted itself.
///
/// ```
/// use coreloop::http::{Application, HttpServer, Route};
/// use coreloop::{Cores, Runtime};
/// use std::io::{Read, Write};
///
/// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
/// let app = Application::new()
///     .route("/", Route::new().get(|_, _, mut resp| resp.write("Hello, world")));
/// let server = HttpServer::new(app).serve(&rt, "127.0.0.1:0".parse().unwrap())?;
/// let mut c = std::net::TcpStream::connect(server.local_addr())?;
/// c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
/// let mut reply = String::new();
/// c.read_to_string(&mut reply)?;
/// assert!(reply.starts_with("HTTP/1.1 200 OK\r\n") && reply.ends_with("\r\n\r\nHello, world"));
/// rt.shutdown()?;
/// # Ok::<(), coreloop::RuntimeError>(())
/// ```
#[derive(Clone, Debug)]
pub struct HttpServer {
    app: Arc<Application>,
    cfg: Arc<HttpConfig>,
    /// The id the connections of `serve_stream` are registered under.
    id: ServerId,
    tls: Option<TlsConfig>,
}

impl HttpServer {
    /// A server for `app` with the default [`HttpConfig`].
    pub fn new(app: Application) -> HttpServer {
        HttpServer {
            app: Arc::new(app),
            cfg: Arc::new(HttpConfig::default()),
            id: ServerId::next(),
            tls: None,
        }
    }

    /// Replaces the limits and timeouts.
    pub fn config(mut self, mut cfg: HttpConfig) -> HttpServer {
        cfg.max_head = cfg.max_head.min(super::MAX_HEAD_LIMIT);
        self.cfg = Arc::new(cfg);
        self
    }

    /// Serves HTTPS: every connection speaks TLS with `tls` (ALPN `http/1.1` unless
    /// the configuration offers protocols of its own). Handlers see the same requests
    /// as over plain HTTP.
    ///
    /// ```no_run
    /// use coreloop::http::{Application, HttpServer, Route};
    /// use coreloop::tls::TlsConfig;
    /// use coreloop::Runtime;
    /// let rt = Runtime::builder().build()?;
    /// let app = Application::new().route("/", Route::new().get(|_, _, mut r| r.write("secure")));
    /// let tls = TlsConfig::new("cert.pem", "key.pem")?;
    /// let server = HttpServer::new(app).tls(tls).serve(&rt, "0.0.0.0:8443".parse().unwrap())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn tls(mut self, tls: TlsConfig) -> HttpServer {
        self.tls = Some(if tls.has_alpn() {
            tls
        } else {
            tls.alpn(&[b"http/1.1"])
        });
        self
    }

    /// Serves on `addr` on every core of `runtime`, beside whatever else it runs; port 0
    /// picks a free port ([`ServerHandle::local_addr`] says which), a port already
    /// served is refused unless the config's `listen.share_port` says to share it.
    /// Returns once every core accepts, or the error of the core that cannot. Call it
    /// from a plain thread.
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
    /// assert_eq!(admin.drain(Duration::from_secs(1)).wait()?, 0);
    /// // The api server is still serving here.
    /// rt.shutdown()?;
    /// # Ok::<(), coreloop::RuntimeError>(())
    /// ```
    pub fn serve(&self, runtime: &Runtime, addr: SocketAddr) -> io::Result<ServerHandle> {
        let id = ServerId::next();
        let (app, cfg, tls) = (self.app.clone(), self.cfg.clone(), self.tls.clone());
        let opts = cfg.listen.clone();
        let handle = serve_on(
            id,
            runtime,
            addr,
            opts,
            move |lp, stream| {
                if start_tls(lp, tls.as_ref(), &stream) {
                    serve(lp, id, stream, app.clone(), cfg.clone())
                }
            },
            Some(Arc::new(move |lp: &IoLoop| drain(lp, id))),
        )?;
        // Its numbers are named by its address on every core.
        let name = handle.local_addr().to_string();
        let named = crate::runtime::call_all(runtime.handles(), move |lp| {
            name_server(lp, id, name.clone())
        })
        .wait();
        if let Err(e) = named {
            let _ = handle.close().wait();
            return Err(e.into());
        }
        Ok(handle)
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
        if start_tls(lp, self.tls.as_ref(), &stream) {
            serve(lp, self.id, stream, self.app.clone(), self.cfg.clone());
        }
    }
}
