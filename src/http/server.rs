//! `HttpServer`: an [`Application`] served on every core of a runtime.

use super::app::Application;
use super::conn::serve;
use super::HttpConfig;
use crate::net::TcpServer;
use crate::runtime::RuntimeBuilder;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

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
    pub fn config(mut self, cfg: HttpConfig) -> HttpServer {
        self.cfg = Arc::new(cfg);
        self
    }

    /// Starts `builder`'s runtime and serves on `addr` on every core; port 0 picks a
    /// free port ([`TcpServer::local_addr`] says which).
    pub fn listen(self, builder: RuntimeBuilder, addr: SocketAddr) -> io::Result<TcpServer> {
        let HttpServer { app, cfg } = self;
        let opts = cfg.listen.clone();
        TcpServer::bind(builder, addr, opts, move |lp, stream| {
            serve(lp, stream, app.clone(), cfg.clone());
        })
    }
}
