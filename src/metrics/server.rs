//! One server's numbers: [`ServerHandle::stats`], gathered from every core it runs on.

use crate::http::HttpStats;
use crate::net::{server_counts, ServerHandle};
use crate::reactor::Call;

/// One server's numbers on one core.
#[derive(Clone, Debug)]
pub struct ServerCoreStats {
    /// The core's shard id.
    pub shard: usize,
    /// Connections accepted on this core.
    pub accepted: u64,
    /// Connections open on this core now.
    pub open: usize,
}

/// One server's numbers ([`ServerHandle::stats`]): connections per core (how
/// SO_REUSEPORT spread them), and for an HTTP server its requests, responses and
/// latency, every core's added up.
#[derive(Clone, Debug, Default)]
pub struct ServerStats {
    /// By shard id.
    pub cores: Vec<ServerCoreStats>,
    /// An HTTP server's numbers (`None` for other servers).
    pub http: Option<HttpStats>,
}

impl ServerStats {
    /// Connections accepted, on all cores.
    pub fn accepted(&self) -> u64 {
        self.cores.iter().map(|c| c.accepted).sum()
    }

    /// Connections open now, on all cores.
    pub fn open(&self) -> usize {
        self.cores.iter().map(|c| c.open).sum()
    }
}

impl ServerHandle {
    /// This server's numbers, gathered from every core it runs on, as a [`Call`].
    ///
    /// ```
    /// use coreloop::http::{Application, HttpServer, Route};
    /// use coreloop::{Cores, Runtime};
    /// use std::io::{Read, Write};
    /// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
    /// let app = Application::new().route("/", Route::new().get(|_, _, mut r| r.write("hi")));
    /// let server = HttpServer::new(app).serve(&rt, "127.0.0.1:0".parse().unwrap())?;
    /// let mut c = std::net::TcpStream::connect(server.local_addr())?;
    /// c.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    /// c.read_to_end(&mut Vec::new())?;
    /// let stats = server.stats().wait()?;
    /// assert_eq!(stats.accepted(), 1);
    /// assert_eq!(stats.http.unwrap().responses[1], 1); // one 2xx
    /// rt.shutdown()?;
    /// # Ok::<(), coreloop::RuntimeError>(())
    /// ```
    pub fn stats(&self) -> Call<ServerStats> {
        let id = self.id();
        crate::runtime::call_all(self.loops(), move |lp| {
            let (accepted, open) = server_counts(lp, id);
            let core = ServerCoreStats {
                shard: lp.shard_id(),
                accepted,
                open,
            };
            (core, crate::http::server_stats_of(lp, id))
        })
        .map(|per_core| {
            let mut out = ServerStats::default();
            for (core, http) in per_core {
                out.cores.push(core);
                match (&mut out.http, http) {
                    (Some(t), Some(h)) => t.merge(&h),
                    (t @ None, Some(h)) => *t = Some(h),
                    (_, None) => {}
                }
            }
            out
        })
    }
}
