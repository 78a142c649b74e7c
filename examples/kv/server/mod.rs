//! The key-value server: one runtime, a RESP server and an HTTP API on it, and each
//! core's share of the keys built in the runtime's setup. The parts, one file each:
//! `resp` (the protocol), `commands` (names, arities, options, what runs on the owner),
//! `store` (a core's keys and their expiry), `core` (a core's state and who owns a
//! key), `conn` (a RESP connection: forwarding, reply order, back-pressure; its
//! `gather` the commands that need several cores) and `http_api`.

pub mod commands;
pub mod conn;
pub mod core;
pub mod http_api;
pub mod resp;
pub mod store;

use coreloop::http::HttpServer;
use coreloop::{CallError, Runtime, RuntimeBuilder, RuntimeError, ServerHandle, TcpServer};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

pub use self::core::{CoreReport, ShardOverride};

/// Redis's `proto-max-bulk-len`.
pub const DEFAULT_MAX_BULK: usize = 512 * 1024 * 1024;

/// What the server is told at start.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on (both ports).
    pub ip: IpAddr,
    /// RESP port (0: any free port).
    pub port: u16,
    /// HTTP port (0: any free port).
    pub http_port: u16,
    /// Largest bulk string a client may send; a longer one is a protocol error.
    pub max_bulk: usize,
    /// Benchmark aid: put every key on this core or the next one.
    pub shard_override: ShardOverride,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 6380,
            http_port: 8380,
            max_bulk: DEFAULT_MAX_BULK,
            shard_override: ShardOverride::None,
        }
    }
}

/// A running server.
pub struct Kv {
    runtime: Runtime,
    resp: ServerHandle,
    http: ServerHandle,
}

/// Builds the runtime from `builder` (cores, backend), each core's state, and both
/// servers on it.
pub fn start(builder: RuntimeBuilder, cfg: Config) -> io::Result<Kv> {
    let shared = Arc::new(cfg.clone());
    let runtime = builder
        .on_start(move |lp, _| lp.set_local(core::Core::new(lp, shared.clone())))
        .build()?;
    // A graceful stop (a signal, `drain`) closes idle RESP connections and the
    // others once the replies to what they sent are out.
    let resp = TcpServer::new(conn::serve)
        .when_draining(conn::drain)
        .serve(&runtime, SocketAddr::new(cfg.ip, cfg.port));
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            let _ = runtime.shutdown();
            return Err(e);
        }
    };
    let http = match HttpServer::new(http_api::app())
        .serve(&runtime, SocketAddr::new(cfg.ip, cfg.http_port))
    {
        Ok(h) => h,
        Err(e) => {
            let _ = runtime.shutdown();
            return Err(e);
        }
    };
    Ok(Kv {
        runtime,
        resp,
        http,
    })
}

impl Kv {
    /// Where RESP is served.
    pub fn resp_addr(&self) -> SocketAddr {
        self.resp.local_addr()
    }

    /// Where the HTTP API is served.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    /// The runtime both servers run on.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Every core's figures (the tests read them).
    #[allow(dead_code)]
    pub fn stats(&self) -> Result<Vec<CoreReport>, CallError> {
        self.runtime.call_on_all(CoreReport::of).wait()
    }

    /// Stops gracefully: no new connections; RESP connections close once the replies to
    /// what they sent are out, HTTP ones after their request; whatever is still open at
    /// `deadline` is cut. Returns how many were cut.
    #[allow(dead_code)] // the tests stop it this way; the program by a signal
    pub fn drain(self, deadline: Duration) -> Result<usize, RuntimeError> {
        self.runtime.drain(deadline)
    }

    /// Waits until a signal has stopped the server gracefully (`stop_on_signals`).
    pub fn wait(self) -> Result<(), RuntimeError> {
        self.runtime.wait()
    }
}
