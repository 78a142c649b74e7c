//! Metrics: what every loop (and every HTTP server on it) recorded, gathered from the
//! cores through the loops themselves, merged, and exported.
//!
//! Recording happens where the work is, on each loop's own thread, without a lock or a
//! shared cache line (`reactor/stats.rs` for the loop, `http/stats.rs` for the HTTP
//! server). Nothing is shared until someone asks: [`Runtime::stats`] or
//! [`IoLoop::stats`] sends every core a call for a copy of its numbers (a
//! [`Call`]: waited for from a plain thread, awaited in a task, or continued
//! on a loop without blocking it), and a [`Snapshot`] keeps the per-core detail and adds
//! the histograms up. [`Snapshot::to_prometheus`] writes Prometheus's text
//! format (aggregated, or per core with a `shard` label; `prometheus.rs` the format,
//! `http.rs` the HTTP servers' series: the HTTP layer knows nothing of it);
//! [`hgrm`] writes any histogram in HdrHistogram's percentile format.

mod client;
mod hgrm;
mod http;
mod prometheus;
mod server;
mod tls;

pub use crate::runtime::BlockingStats;
pub use hgrm::hgrm;
pub use prometheus::LATENCY_BUCKETS;
pub(crate) use prometheus::{labels, Exposition};
pub use server::{ServerCoreStats, ServerStats};

use crate::http::{ClientStats, HttpStats};
use crate::iostream::TlsStats;
use crate::reactor::{Call, IoLoop, LoopStats};
use crate::runtime::{CoresChosen, Runtime};

/// What one core recorded: its loop, and each HTTP server it serves.
#[derive(Clone, Debug)]
pub struct CoreStats {
    /// The core's shard id.
    pub shard: usize,
    /// The loop's counters and histograms.
    pub reactor: LoopStats,
    /// Each HTTP server on this core, by the address it listens on (or "streams" for
    /// connections handed to `serve_stream`).
    pub http: Vec<HttpStats>,
    /// Each upstream the HTTP client fetched from on this core, by its address.
    pub client: Vec<ClientStats>,
    /// The TLS streams of this core (servers' and clients').
    pub tls: TlsStats,
}

/// Every core's numbers at one moment (each core copied its own when asked).
///
/// ```
/// use coreloop::{Cores, Runtime};
/// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
/// let s = rt.stats().wait().unwrap();
/// assert_eq!(s.cores.len(), 2);
/// let total = s.total();
/// assert_eq!(total.iterations, s.cores[0].reactor.iterations + s.cores[1].reactor.iterations);
/// let text = s.to_prometheus(false);
/// assert!(text.contains("# TYPE coreloop_loop_iteration_seconds histogram"));
/// rt.shutdown().unwrap();
/// # Ok::<(), coreloop::RuntimeError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The cores that answered, by shard id.
    pub cores: Vec<CoreStats>,
    /// How many loops the runtime runs, and why (exported as the gauge
    /// `coreloop_cores_chosen{reason="..."}`); `None` for a loop made alone.
    pub cores_chosen: Option<CoresChosen>,
    /// The runtime's blocking pool (`call_blocking`); for a loop made alone, the pool
    /// the process shares.
    pub blocking: BlockingStats,
}

/// What a counter family takes from a loop's numbers.
type Counter = fn(&LoopStats) -> f64;
/// What a histogram family takes from a loop's numbers.
type Hist = fn(&LoopStats) -> &hdrhistogram::Histogram<u64>;

/// A copy of what this loop recorded.
fn core_stats(lp: &IoLoop) -> CoreStats {
    CoreStats {
        shard: lp.shard_id(),
        reactor: lp.loop_stats(),
        http: crate::http::server_stats(lp),
        client: crate::http::client_stats(lp),
        tls: crate::iostream::tls_stats_of(lp),
    }
}

/// A core's numbers, and the runtime's choice of cores as this core knows it.
fn core_and_choice(lp: &IoLoop) -> (CoreStats, Option<CoresChosen>) {
    (core_stats(lp), lp.cores_chosen())
}

/// Every core's answer, as one snapshot.
fn snapshot(all: Vec<(CoreStats, Option<CoresChosen>)>, blocking: BlockingStats) -> Snapshot {
    let cores_chosen = all.first().and_then(|(_, c)| c.clone());
    Snapshot {
        cores: all.into_iter().map(|(s, _)| s).collect(),
        cores_chosen,
        blocking,
    }
}

impl Snapshot {
    /// Every core's loop numbers added up.
    pub fn total(&self) -> LoopStats {
        let mut it = self.cores.iter();
        let Some(first) = it.next() else {
            return IoLoop::empty_stats();
        };
        let mut t = first.reactor.clone();
        for c in it {
            t.merge(&c.reactor);
        }
        t
    }

    /// Every core's numbers of the HTTP client's fetches from `upstream` (its address,
    /// as in [`ClientStats::upstream`]) added up.
    pub fn client_total(&self, upstream: &str) -> Option<ClientStats> {
        let all = crate::http::client_by_upstream(
            self.cores
                .iter()
                .flat_map(|c| c.client.iter())
                .filter(|s| s.upstream == upstream),
        );
        all.into_iter().next()
    }

    /// Every core's numbers of the HTTP server listening on `name` (its address, as in
    /// [`HttpStats::server`]) added up.
    pub fn http_total(&self, name: &str) -> Option<HttpStats> {
        let mut out: Option<HttpStats> = None;
        for c in &self.cores {
            for h in c.http.iter().filter(|h| h.server == name) {
                match &mut out {
                    Some(t) => t.merge(h),
                    None => out = Some(h.clone()),
                }
            }
        }
        out
    }

    /// Prometheus's text exposition: aggregated over the cores, or with `per_core` one
    /// series per core with a `shard` label (per-core series multiply quickly; the
    /// default is the sum). Accepted connections are always per core (how SO_REUSEPORT
    /// spread them).
    pub fn to_prometheus(&self, per_core: bool) -> String {
        let mut e = Exposition::default();
        let series: Vec<(String, LoopStats)> = if per_core {
            self.cores
                .iter()
                .map(|c| (c.shard.to_string(), c.reactor.clone()))
                .collect()
        } else {
            vec![(String::new(), self.total())]
        };
        let counters: [(&str, &str, Counter); 15] = [
            ("coreloop_loop_iterations_total", "Loop iterations.", |s| {
                s.iterations as f64
            }),
            ("coreloop_loop_callbacks_total", "Callbacks run.", |s| {
                s.callbacks as f64
            }),
            ("coreloop_loop_task_polls_total", "Polls of tasks.", |s| {
                s.task_polls as f64
            }),
            ("coreloop_loop_timers_total", "Timers fired.", |s| {
                s.timers as f64
            }),
            (
                "coreloop_loop_events_total",
                "Readiness events dispatched to handlers.",
                |s| s.events as f64,
            ),
            (
                "coreloop_loop_completions_total",
                "io_uring completions dispatched.",
                |s| s.completions as f64,
            ),
            (
                "coreloop_loop_sleeps_total",
                "Waits for I/O that were allowed to block.",
                |s| s.sleeps as f64,
            ),
            (
                "coreloop_loop_remote_jobs_total",
                "Callbacks and task wakes sent from other threads.",
                |s| s.remote_jobs as f64,
            ),
            (
                "coreloop_loop_eventfd_wakes_total",
                "Sleeping loops this loop woke with an eventfd write.",
                |s| s.eventfd_wakes as f64,
            ),
            (
                "coreloop_loop_ring_wakes_total",
                "Sleeping loops this loop woke with an io_uring MSG_RING.",
                |s| s.ring_wakes as f64,
            ),
            (
                "coreloop_loop_sqes_total",
                "io_uring submission queue entries queued (0 on epoll).",
                |s| s.sqes as f64,
            ),
            (
                "coreloop_loop_stalls_total",
                "Jobs that kept the loop busy past the stall threshold.",
                |s| s.stalls as f64,
            ),
            (
                "coreloop_loop_budget_holds_total",
                "Times a stream was held back: the loop was over its buffer budget.",
                |s| s.budget_holds as f64,
            ),
            (
                "coreloop_loop_busy_seconds_total",
                "Time the loop spent running jobs and dispatching I/O.",
                |s| s.busy.as_secs_f64(),
            ),
            (
                "coreloop_loop_idle_seconds_total",
                "Time the loop had nothing to do (idle-polling or in blocking waits).",
                |s| s.idle.as_secs_f64(),
            ),
        ];
        let gauges: [(&str, &str, Counter); 1] = [(
            "coreloop_loop_buffered_bytes",
            "Bytes the loop's streams buffer: unread input and unsent output.",
            |s| s.buffered as f64,
        )];
        let families = counters.iter().map(|c| ("counter", c));
        for (kind, (name, help, get)) in families.chain(gauges.iter().map(|g| ("gauge", g))) {
            e.family(name, kind, help);
            for (shard, s) in &series {
                e.sample(name, &labels(&shard_label(shard)), get(s));
            }
        }
        let hists: [(&str, &str, Hist); 4] = [
            (
                "coreloop_loop_iteration_seconds",
                "The busy part of each loop iteration.",
                |s| &s.iteration_ns,
            ),
            (
                "coreloop_loop_timer_lag_seconds",
                "How late timers fired after their deadline.",
                |s| &s.timer_lag_ns,
            ),
            (
                "coreloop_loop_remote_wait_seconds",
                "From a job's send on another thread to its run (one in 16 sampled).",
                |s| &s.remote_wait_ns,
            ),
            ("coreloop_loop_stall_seconds", "Lengths of stalls.", |s| {
                &s.stall_ns
            }),
        ];
        for (name, help, get) in hists {
            e.family(name, "histogram", help);
            for (shard, s) in &series {
                e.histogram(name, &shard_label(shard), get(s));
            }
        }
        if let Some(c) = &self.cores_chosen {
            e.family(
                "coreloop_cores_chosen",
                "gauge",
                "Loops the runtime runs, and why that many (reason: affinity, cpu_quota, \
                 unknown, count, list).",
            );
            e.sample(
                "coreloop_cores_chosen",
                &labels(&[("reason", c.reason)]),
                c.loops as f64,
            );
        }
        http::export(&mut e, &self.cores, per_core);
        let tls: Vec<(String, TlsStats)> = if per_core {
            self.cores
                .iter()
                .map(|c| (c.shard.to_string(), c.tls.clone()))
                .collect()
        } else {
            let mut t = TlsStats::default();
            for c in &self.cores {
                t.merge(&c.tls);
            }
            vec![(String::new(), t)]
        };
        tls::export(&mut e, &tls);
        export_blocking(&mut e, &self.blocking);
        client::export(&mut e, &self.cores, per_core);
        e.finish()
    }
}

/// The blocking pool's series (one pool per runtime: never by shard).
fn export_blocking(e: &mut Exposition, b: &BlockingStats) {
    let gauges = [
        (
            "coreloop_blocking_threads",
            "Blocking pool threads alive (running a job or idle).",
            b.threads,
        ),
        (
            "coreloop_blocking_idle_threads",
            "Blocking pool threads waiting for work.",
            b.idle,
        ),
        (
            "coreloop_blocking_max_threads",
            "The blocking pool's bound on threads.",
            b.max_threads,
        ),
        (
            "coreloop_blocking_queue_depth",
            "Jobs waiting for a blocking pool thread.",
            b.queued,
        ),
    ];
    for (name, help, v) in gauges {
        e.family(name, "gauge", help);
        e.sample(name, "", v as f64);
    }
    let name = "coreloop_blocking_jobs_total";
    e.family(
        name,
        "counter",
        "Blocking calls by outcome: done, panicked, rejected (pool full), closed (queued at shutdown).",
    );
    for (outcome, n) in [
        ("done", b.done),
        ("panicked", b.panicked),
        ("rejected", b.rejected),
        ("closed", b.closed),
    ] {
        e.sample(name, &labels(&[("outcome", outcome)]), n as f64);
    }
    let hists = [
        (
            "coreloop_blocking_wait_seconds",
            "From a blocking call to its start on a pool thread.",
            &b.wait_ns,
        ),
        (
            "coreloop_blocking_run_seconds",
            "How long each blocking call ran.",
            &b.run_ns,
        ),
    ];
    for (name, help, h) in hists {
        e.family(name, "histogram", help);
        e.histogram(name, &[], h);
    }
}

/// The `shard` label of a per-core series (none for the aggregate, whose shard is "").
fn shard_label(shard: &str) -> Vec<(&'static str, &str)> {
    if shard.is_empty() {
        Vec::new()
    } else {
        vec![("shard", shard)]
    }
}

/// The content type of Prometheus's text format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A route that serves every core's numbers in Prometheus's text format, gathered at
/// each request without blocking the loop that serves it: add it to an application
/// (`.route("/metrics", coreloop::metrics::route())`). Series are summed over the
/// cores; `?per_core=1` gives one series per core with a `shard` label.
///
/// ```
/// use coreloop::http::{Application, HttpServer};
/// use coreloop::{Cores, Runtime};
/// use std::io::{Read, Write};
/// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
/// let app = Application::new().route("/metrics", coreloop::metrics::route());
/// let server = HttpServer::new(app).serve(&rt, "127.0.0.1:0".parse().unwrap())?;
/// let mut c = std::net::TcpStream::connect(server.local_addr())?;
/// // Two requests: the second answer shows the first one's latency.
/// c.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\nGET /metrics HTTP/1.0\r\n\r\n")?;
/// let mut text = String::new();
/// c.read_to_string(&mut text)?;
/// assert!(text.contains("coreloop_loop_iterations_total "));
/// assert!(text.contains(r#"route="/metrics",class="2xx",le="#));
/// rt.shutdown()?;
/// # Ok::<(), coreloop::RuntimeError>(())
/// ```
pub fn route() -> crate::http::Route {
    crate::http::Route::new().get(|lp, req, mut resp| {
        let per_core = matches!(req.query_arg("per_core"), Some("1" | "true"));
        lp.stats().then(move |_, snapshot| match snapshot {
            Ok(snapshot) => {
                resp.set_header("Content-Type", PROMETHEUS_CONTENT_TYPE);
                resp.write(snapshot.to_prometheus(per_core));
                resp.finish();
            }
            Err(e) => {
                log::warn!("coreloop: gathering the metrics: {e}");
                resp.set_status(503);
                resp.finish();
            }
        });
    })
}

impl Runtime {
    /// Every core's numbers, gathered through the loops (each copies its own; no lock is
    /// shared), as one [`Call`]: [`wait`](Call::wait) for it from a plain thread. A core
    /// that cannot answer (closed) fails the call.
    pub fn stats(&self) -> Call<Snapshot> {
        let pool = self.blocking_pool();
        crate::runtime::call_all(self.handles(), core_and_choice)
            .map(move |all| snapshot(all, pool.stats()))
    }
}

impl IoLoop {
    /// Every core's numbers of this loop's runtime (this loop's alone if it is not in
    /// one), as one [`Call`]: continue with [`then`](Call::then) on this loop, or await
    /// it in a task, without blocking the loop. This one loop's own numbers, at once,
    /// are [`loop_stats`](IoLoop::loop_stats).
    ///
    /// ```
    /// use coreloop::{Cores, Runtime};
    /// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// rt.handle(0).add_callback(move |lp| {
    ///     lp.stats().then(move |_, s| tx.send(s.map(|s| s.cores.len())).unwrap());
    /// }).unwrap();
    /// assert_eq!(rx.recv().unwrap(), Ok(2));
    /// rt.shutdown().unwrap();
    /// # Ok::<(), coreloop::RuntimeError>(())
    /// ```
    pub fn stats(&self) -> Call<Snapshot> {
        let pool = crate::runtime::pool_of(self);
        crate::runtime::call_all(&self.shard_handles(), core_and_choice)
            .map(move |all| snapshot(all, pool.stats()))
            .made_by(self)
    }
}
