//! The notes server: one runtime, the HTTP API on it, and a SQLite database every query
//! of which runs on the runtime's blocking pool. `db` is the database (one connection
//! per pool thread), `api` the routes.

pub mod api;
pub mod db;

use coreloop::http::{HttpConfig, HttpServer};
use coreloop::{BlockingConfig, Runtime, RuntimeBuilder, ServerHandle};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use db::Db;

/// The server's own limit on a request body: past it, 413 before any handler runs.
pub const MAX_BODY: usize = 1024 * 1024;

/// What the server is told at start.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on.
    pub ip: IpAddr,
    /// Port (0: any free port).
    pub port: u16,
    /// The SQLite file (created if missing).
    pub db: PathBuf,
    /// Most threads of the blocking pool, so most queries at once.
    pub blocking_threads: usize,
    /// Run the queries on the loops instead of the pool (a benchmark's comparison).
    pub inline: bool,
    /// Generated notes to add at start (a benchmark's data set).
    pub seed: u64,
}

impl Config {
    /// The defaults, with the database at `db`.
    pub fn new(db: PathBuf) -> Config {
        Config {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8890,
            db,
            blocking_threads: 16,
            inline: false,
            seed: 0,
        }
    }
}

/// A running server.
pub struct Notes {
    runtime: Runtime,
    http: ServerHandle,
    db: Db,
}

/// Opens the database, builds the runtime from `builder` (cores, backend) with its
/// blocking pool, and serves the API on it.
pub fn start(builder: RuntimeBuilder, cfg: Config) -> io::Result<Notes> {
    let db = Db::create(&cfg.db)
        .map_err(|e| io::Error::other(format!("database {}: {e}", cfg.db.display())))?;
    if cfg.seed > 0 {
        db.seed(cfg.seed)
            .map_err(|e| io::Error::other(format!("seeding the database: {e}")))?;
    }
    let runtime = builder
        .blocking(BlockingConfig {
            max_threads: cfg.blocking_threads,
            ..BlockingConfig::default()
        })
        .build()?;
    let app = api::app(api::Api {
        db: db.clone(),
        inline: cfg.inline,
    })
    // The runtime's numbers, the blocking pool's among them, for Prometheus.
    .route("/metrics", coreloop::metrics::route());
    let http = HttpServer::new(app)
        .config(HttpConfig {
            max_body: MAX_BODY,
            ..HttpConfig::default()
        })
        .serve(&runtime, SocketAddr::new(cfg.ip, cfg.port));
    match http {
        Ok(http) => Ok(Notes { runtime, http, db }),
        Err(e) => {
            let _ = runtime.shutdown();
            Err(e)
        }
    }
}

impl Notes {
    /// Where the API is served.
    pub fn addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    /// The runtime it runs on.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Stops gracefully: requests in flight (and their queries) finish within
    /// `deadline` (the tests stop it so).
    #[allow(dead_code)]
    pub fn drain(self, deadline: Duration) -> io::Result<usize> {
        Ok(self.runtime.drain(deadline)?)
    }

    /// Waits until a signal stops it.
    pub fn wait(self) -> io::Result<()> {
        Ok(self.runtime.wait()?)
    }
}
