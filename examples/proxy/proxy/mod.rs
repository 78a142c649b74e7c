//! The reverse proxy: one runtime, a TCP server on every core whose connections read
//! requests with the HTTP server's own decoder (`framing::RequestDecoder`) and forward
//! them with that core's `HttpClient` to an upstream chosen by round robin. The parts:
//! `front` (a client's connection: requests in, answers out, both bodies streamed),
//! `headers` (hop-by-hop fields out, `X-Forwarded-*` and `Via` in), `upstreams`
//! (round robin, and skipping an upstream that keeps failing).

pub mod front;
pub mod headers;
pub mod upstreams;

use coreloop::http::{ClientConfig, HttpClient, HttpConfig};
use coreloop::{Runtime, RuntimeBuilder, RuntimeError, ServerHandle, TcpServer};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Weak;
use std::sync::Arc;
use std::time::Duration;

/// What the proxy is told at start.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on.
    pub ip: IpAddr,
    /// Port (0: any free port).
    pub port: u16,
    /// Where requests go, in turn.
    pub upstreams: Vec<upstreams::Target>,
    /// The client's pools and deadlines (per core, per upstream), and the roots it
    /// verifies TLS upstreams with (`tls`; the system's by default).
    pub client: ClientConfig,
    /// Limits of the requests read from clients (head, URI, fields, body).
    pub http: HttpConfig,
    /// Failures in a row after which an upstream is skipped (nginx's `max_fails`).
    pub max_fails: u32,
    /// For how long (nginx's `fail_timeout`).
    pub fail_timeout: Duration,
    /// How long a client's connection may wait for its next request.
    pub idle_timeout: Duration,
    /// How long a request head may take to arrive, from its first byte.
    pub head_timeout: Duration,
    /// The longest pause in a request body, and in a client's reading of an answer.
    pub client_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8080,
            upstreams: Vec::new(),
            // Envoy's default bound on an upstream's connections (per core here): the
            // client's own default (100, Seastar's) would queue requests a proxy in
            // front of many clients should pass on.
            client: ClientConfig {
                max_per_host: 1024,
                ..ClientConfig::default()
            },
            http: HttpConfig {
                // Bodies are streamed, not held: no limit beyond the client's patience.
                max_body: usize::MAX,
                ..HttpConfig::default()
            },
            max_fails: 3,
            fail_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            head_timeout: Duration::from_secs(10),
            client_timeout: Duration::from_secs(60),
        }
    }
}

/// One core's share of the proxy: its client (and so its pools), its view of the
/// upstreams, its connections (for a graceful stop).
pub struct Core {
    pub cfg: Arc<Config>,
    pub client: HttpClient,
    pub upstreams: upstreams::Upstreams,
    pub draining: Cell<bool>,
    pub fronts: RefCell<HashMap<u64, Weak<front::Front>>>,
    pub next_id: Cell<u64>,
    /// Where the X-Forwarded-For and Via values are put together (no allocation per
    /// request).
    pub scratch: RefCell<(Vec<u8>, Vec<u8>)>,
}

/// A running proxy.
pub struct Proxy {
    runtime: Runtime,
    server: ServerHandle,
}

/// Builds the runtime from `builder` (cores, backend), each core's share, and the
/// proxy's server on it.
pub fn start(builder: RuntimeBuilder, cfg: Config) -> io::Result<Proxy> {
    if cfg.upstreams.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no upstream (--upstream host:port)",
        ));
    }
    let shared = Arc::new(cfg.clone());
    let client = HttpClient::new(cfg.client.clone());
    let runtime = builder
        .on_start(move |lp, _| {
            lp.set_local(Core {
                cfg: shared.clone(),
                client: client.clone(),
                upstreams: upstreams::Upstreams::new(
                    &shared.upstreams,
                    shared.max_fails,
                    shared.fail_timeout,
                ),
                draining: Cell::new(false),
                fronts: RefCell::new(HashMap::new()),
                next_id: Cell::new(0),
                scratch: RefCell::new((Vec::new(), Vec::new())),
            })
        })
        .build()?;
    let server = TcpServer::new(front::serve)
        .when_draining(front::drain)
        .serve(&runtime, SocketAddr::new(cfg.ip, cfg.port));
    match server {
        Ok(server) => Ok(Proxy { runtime, server }),
        Err(e) => {
            let _ = runtime.shutdown();
            Err(e)
        }
    }
}

impl Proxy {
    /// Where the proxy listens.
    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The runtime it runs on.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Stops gracefully: no new connections, idle ones close, the others after their
    /// answer; whatever is still open at `deadline` is cut. How many were cut.
    #[allow(dead_code)] // the tests stop it this way; the program by a signal
    pub fn drain(self, deadline: Duration) -> Result<usize, RuntimeError> {
        self.runtime.drain(deadline)
    }

    /// Waits until a signal has stopped the proxy gracefully (`stop_on_signals`).
    pub fn wait(self) -> Result<(), RuntimeError> {
        self.runtime.wait()
    }
}
