//! `RuntimeBuilder`: which cores, which backend, and the setup each core runs before
//! its loop starts.
//!
//! Starting is two-phase, so that nothing hangs and every failure reaches the caller:
//! every thread builds its loop and reports its handle; once all exist, every loop
//! learns every shard's handle and runs its setup closures, and reports how they went
//! (an error or a panic message, by shard). Only when every setup succeeded does
//! [`build`](RuntimeBuilder::build) return the runtime; otherwise it stops the loops,
//! joins their threads and returns the first failure.

use super::cpus::{self, CgroupFs, CoresChosen};
use super::pool::{BlockingConfig, LoopPool, Pool};
use super::shard::{set_shard, Peers};
use super::signals::SignalWatcher;
use super::{handover, inherit, Attached, Runtime, RuntimeError, ShardError, Upgrade};
use crate::poller::Backend;
use crate::reactor::{panic_message, IoLoop, LoopHandle, WakeVia};
use std::fmt;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

type Setup = Arc<dyn Fn(&IoLoop, usize) -> Result<(), String> + Send + Sync + 'static>;

/// What a setup closure may return: nothing, or a `Result` whose error (anything
/// `Display`) makes [`RuntimeBuilder::build`] fail.
///
/// ```
/// use coreloop::{Cores, Runtime};
/// let err = Runtime::builder()
///     .cores(Cores::Count(2))
///     .on_start(|_lp, shard| if shard == 1 { Err("no config for shard 1") } else { Ok(()) })
///     .build()
///     .unwrap_err();
/// assert!(err.to_string().contains("shard 1") && err.to_string().contains("no config"));
/// ```
pub trait SetupResult {
    /// `Err` with the message to report.
    fn into_result(self) -> Result<(), String>;
}

impl SetupResult for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: fmt::Display> SetupResult for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// Which cores a [`Runtime`] runs on. The choice, and why, is logged when the runtime
/// starts and exported in its metrics ([`CoresChosen`]).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Cores {
    /// One loop on every core this process may run on (its affinity mask), but no more
    /// than the CPUs its cgroup's CPU quota is worth, rounded up: a container limited
    /// to 2 CPUs on a 64-CPU host runs 2 loops, not 64 sharing 2 CPUs of time.
    #[default]
    All,
    /// This many loops, on the first cores (wrapping around if there are more loops than
    /// cores).
    Count(usize),
    /// One loop on each of these core ids.
    List(Vec<usize>),
}

/// Default [`RuntimeBuilder::drain_deadline`].
pub const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// Configures and starts a [`Runtime`].
///
/// ```
/// use coreloop::{Backend, Cores, Runtime};
/// let rt = Runtime::builder()
///     .cores(Cores::Count(2))
///     .backend(Backend::Auto)
///     .pin(true)
///     .on_start(|lp, shard| log::info!("shard {shard} on {:?}", lp.backend()))
///     .build()?;
/// assert_eq!(rt.shards(), 2);
/// rt.shutdown().unwrap();
/// # Ok::<(), coreloop::RuntimeError>(())
/// ```
pub struct RuntimeBuilder {
    cores: Cores,
    pin: bool,
    backend: Backend,
    setups: Vec<Setup>,
    stop_on_signals: bool,
    drain_deadline: Duration,
    name: String,
    watchdog: Option<Duration>,
    cgroup: CgroupFs,
    blocking: BlockingConfig,
    upgrade_socket: Option<PathBuf>,
    take_over: bool,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            cores: Cores::All,
            pin: true,
            backend: Backend::Auto,
            setups: Vec::new(),
            stop_on_signals: false,
            drain_deadline: DEFAULT_DRAIN_DEADLINE,
            name: "coreloop".to_string(),
            watchdog: None,
            cgroup: CgroupFs::default(),
            blocking: BlockingConfig::default(),
            upgrade_socket: None,
            take_over: false,
        }
    }
}

impl RuntimeBuilder {
    /// Which cores to run on (default: all).
    pub fn cores(mut self, cores: Cores) -> Self {
        self.cores = cores;
        self
    }

    /// Pin each loop thread to its core (default: on). A failed pin is logged, not fatal.
    pub fn pin(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    /// The backend of every loop (default: `Auto`). A forced backend that cannot be set
    /// up makes [`build`](Self::build) fail.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Runs `setup(loop, shard_id)` on each loop's thread before the loop starts: where a
    /// service builds its per-core state (with [`IoLoop::set_local`]) and opens what the
    /// core needs. Every shard's handle is known by then. Several setups run in the order
    /// they were added. A setup may return `()` or a `Result`: an error, or a panic, on
    /// any core makes [`build`](Self::build) fail with the shard and the message.
    ///
    /// ```
    /// use coreloop::{Cores, Runtime};
    /// struct Cache { capacity: usize }
    /// let capacity = 1024; // from the service's configuration
    /// let rt = Runtime::builder()
    ///     .cores(Cores::Count(2))
    ///     .on_start(move |lp, _shard| lp.set_local(Cache { capacity }))
    ///     .build()?;
    /// let caps = rt.call_on_all(|lp| lp.get_local::<Cache>().unwrap().capacity).wait().unwrap();
    /// assert_eq!(caps, vec![1024, 1024]);
    /// rt.shutdown().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn on_start<F, R>(mut self, setup: F) -> Self
    where
        F: Fn(&IoLoop, usize) -> R + Send + Sync + 'static,
        R: SetupResult,
    {
        self.setups
            .push(Arc::new(move |lp, shard| setup(lp, shard).into_result()));
        self
    }

    /// Each loop, while busy, gathers completions for up to `wait` once one has come
    /// (default: off): less CPU per request near saturation for up to `wait` more
    /// latency there, none at moderate load; see
    /// [`IoLoop::set_batch_wait`] (io_uring on Linux 6.12 or later; ignored elsewhere).
    ///
    /// ```
    /// use coreloop::{Cores, Runtime};
    /// use std::time::Duration;
    /// let rt = Runtime::builder()
    ///     .cores(Cores::Count(1))
    ///     .batch_wait(Duration::from_micros(100))
    ///     .build()?;
    /// rt.shutdown().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn batch_wait(self, wait: Duration) -> Self {
        self.on_start(move |lp, _| {
            lp.set_batch_wait(wait);
        })
    }

    /// Every loop looks for work for up to `poll` before it sleeps (default: zero); see
    /// [`IoLoop::set_idle_poll`]. Lower cross-core latency for CPU spent idle.
    ///
    /// ```
    /// use coreloop::{Cores, Runtime};
    /// use std::time::Duration;
    /// let rt = Runtime::builder()
    ///     .cores(Cores::Count(1))
    ///     .idle_poll(Duration::from_micros(50))
    ///     .build()?;
    /// rt.shutdown().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn idle_poll(self, poll: Duration) -> Self {
        self.on_start(move |lp, _| lp.set_idle_poll(poll))
    }

    /// How every loop wakes another loop it sends work to (default
    /// [`WakeVia::MsgRing`]); see [`IoLoop::set_wake_via`].
    ///
    /// ```
    /// use coreloop::{Cores, Runtime, WakeVia};
    /// let rt = Runtime::builder()
    ///     .cores(Cores::Count(1))
    ///     .wake_via(WakeVia::Eventfd)
    ///     .build()?;
    /// rt.shutdown().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wake_via(self, via: WakeVia) -> Self {
        self.on_start(move |lp, _| lp.set_wake_via(via))
    }

    /// How many bytes each loop's streams may buffer in all, unread input and unsent
    /// output (default [`DEFAULT_BUFFER_BUDGET`](crate::DEFAULT_BUFFER_BUDGET), 128 MiB
    /// per loop); past it the streams that hold the most are held back. See
    /// [`IoLoop::set_buffer_budget`].
    ///
    /// ```
    /// use coreloop::{Cores, Runtime};
    /// let rt = Runtime::builder()
    ///     .cores(Cores::Count(1))
    ///     .buffer_budget(32 << 20)
    ///     .build()?;
    /// rt.shutdown().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn buffer_budget(self, bytes: usize) -> Self {
        self.on_start(move |lp, _| lp.set_buffer_budget(bytes))
    }

    /// Whether every loop records its histograms (default: on; counters always count).
    /// Off shows what recording costs; see [`IoLoop::set_recording`].
    ///
    /// ```
    /// use coreloop::{Cores, Runtime};
    /// use std::time::Duration;
    /// let rt = Runtime::builder()
    ///     .cores(Cores::Count(1))
    ///     .recording(false)
    ///     .build()?;
    /// rt.shutdown().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn recording(self, on: bool) -> Self {
        self.on_start(move |lp, _| lp.set_recording(on))
    }

    /// The stall threshold of every loop (default 50 ms); see
    /// [`IoLoop::set_stall_threshold`].
    ///
    /// ```
    /// use coreloop::{Cores, Runtime};
    /// use std::time::Duration;
    /// let rt = Runtime::builder()
    ///     .cores(Cores::Count(1))
    ///     .stall_threshold(Duration::from_millis(10))
    ///     .build()?;
    /// rt.shutdown().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn stall_threshold(self, after: Duration) -> Self {
        self.on_start(move |lp, _| lp.set_stall_threshold(after))
    }

    /// Starts a watchdog thread (`{thread_name}-watchdog`) that reports a loop stuck in one job for longer than
    /// `after` while it is still stuck (the loop's own stall report comes only when the
    /// job ends). Each loop then publishes when every job starts: one relaxed store per
    /// job, on a cache line of its own. Default: no watchdog.
    ///
    /// ```
    /// use coreloop::{Cores, Runtime};
    /// use std::time::Duration;
    /// let rt = Runtime::builder()
    ///     .cores(Cores::Count(1))
    ///     .watchdog(Duration::from_millis(500))
    ///     .build()?;
    /// rt.shutdown().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn watchdog(mut self, after: Duration) -> Self {
        self.watchdog = Some(after);
        self.on_start(|lp, _| lp.set_watched(true))
    }

    /// On SIGINT or SIGTERM, stop gracefully (default: off): every server attached to
    /// the runtime stops accepting and drains (requests in flight are answered) within
    /// the [`drain_deadline`](Self::drain_deadline), then the loops stop and
    /// [`Runtime::wait`] returns. The same as calling [`Runtime::drain`] at the signal.
    ///
    /// ```no_run
    /// use coreloop::http::{Application, HttpServer, Route};
    /// use coreloop::Runtime;
    /// use std::time::Duration;
    /// let rt = Runtime::builder()
    ///     .stop_on_signals(true)
    ///     .drain_deadline(Duration::from_secs(10))
    ///     .build()?;
    /// let app = Application::new().route("/", Route::new().get(|_, _, mut r| r.write("hi")));
    /// HttpServer::new(app).serve(&rt, "127.0.0.1:8888".parse().unwrap())?;
    /// rt.wait()?; // until SIGINT or SIGTERM, and every request in flight answered
    /// # Ok::<(), coreloop::RuntimeError>(())
    /// ```
    pub fn stop_on_signals(mut self, on: bool) -> Self {
        self.stop_on_signals = on;
        self
    }

    /// How long a graceful stop started by a signal waits for open connections before
    /// it closes them (default [`DEFAULT_DRAIN_DEADLINE`], 30 s); also how long any stop
    /// ([`Runtime::shutdown`], a dropped runtime) waits for the blocking pool's running
    /// jobs.
    pub fn drain_deadline(mut self, deadline: Duration) -> Self {
        self.drain_deadline = deadline;
        self
    }

    /// Bounds the runtime's blocking pool ([`Runtime::call_blocking`],
    /// [`IoLoop::call_blocking`]): most threads, most queued jobs, how long an idle
    /// thread stays, which cores its threads run on. See [`BlockingConfig`] for the
    /// defaults.
    ///
    /// ```
    /// use coreloop::{BlockingConfig, Cores, Runtime};
    /// let rt = Runtime::builder()
    ///     .cores(Cores::Count(1))
    ///     .blocking(BlockingConfig { max_threads: 2, queue: 0, ..BlockingConfig::default() })
    ///     .build()?;
    /// assert_eq!(rt.stats().wait()?.blocking.max_threads, 2);
    /// rt.shutdown()?;
    /// # Ok::<(), coreloop::RuntimeError>(())
    /// ```
    pub fn blocking(mut self, cfg: BlockingConfig) -> Self {
        self.blocking = cfg;
        self
    }

    /// Where this instance hands its listening sockets to a new instance of the
    /// service (a zero-downtime restart): a Unix socket path (made owner-only), or a
    /// name in Linux's abstract namespace written `@name`. From [`Runtime::ready`] on,
    /// a new instance started with [`take_over`](Self::take_over) connects there, gets
    /// every attached server's per-core listening sockets, serves on them, and says so;
    /// only then does this instance stop accepting and drain (within the
    /// [`drain_deadline`](Self::drain_deadline)), and [`Runtime::wait`] returns. Only a
    /// process of the same user (or root) is served. [`build`](Self::build) fails if
    /// another instance is serving hand-overs there already (a file left by one that
    /// ended is replaced).
    ///
    /// ```no_run
    /// use coreloop::http::{Application, HttpServer, Route};
    /// use coreloop::Runtime;
    /// // `hello` for a fresh start, `hello --upgrade` to replace the running one.
    /// let upgrade = std::env::args().any(|a| a == "--upgrade");
    /// let rt = Runtime::builder()
    ///     .stop_on_signals(true)
    ///     .upgrade_socket("/run/hello/upgrade.sock")
    ///     .take_over(upgrade)
    ///     .build()?;
    /// let app = Application::new().route("/", Route::new().get(|_, _, mut r| r.write("hi")));
    /// HttpServer::new(app).serve(&rt, "0.0.0.0:8888".parse().unwrap())?; // the old sockets, if taken over
    /// rt.ready()?; // the old instance drains and exits; this one hands over from now on
    /// rt.wait()?;
    /// # Ok::<(), coreloop::RuntimeError>(())
    /// ```
    pub fn upgrade_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.upgrade_socket = Some(path.into());
        self
    }

    /// Start by taking over from the instance serving hand-overs at the
    /// [`upgrade_socket`](Self::upgrade_socket) (default: off): [`build`](Self::build)
    /// takes its listening sockets, and each server then serves on those of its
    /// address instead of binding (with more cores than sockets it binds more on the
    /// same port, which join the group; with fewer, a core accepts from several), until
    /// [`Runtime::ready`] tells the old instance to drain. If no instance runs there,
    /// it starts afresh (logged), so a deploy may always ask for it.
    pub fn take_over(mut self, on: bool) -> Self {
        self.take_over = on;
        self
    }

    /// Prefix of the loop threads' names (`coreloop-0`, `coreloop-1`, …).
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Starts the loops and runs every core's setup. Returns once every setup has
    /// finished; if one failed or panicked, every loop is stopped and joined, and the
    /// error names the shard and says why ([`RuntimeError::Shards`]); a runtime that
    /// cannot start at all (no such core, no loop) is [`RuntimeError::Io`].
    pub fn build(self) -> Result<Runtime, RuntimeError> {
        if self.take_over && self.upgrade_socket.is_none() {
            return Err(RuntimeError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "take_over needs an upgrade_socket to take over from",
            )));
        }
        // Sockets passed by systemd are read before any loop thread runs (reading
        // clears the environment variables).
        inherit::systemd_sockets();
        let available = available_cores();
        let (placement, chosen) = self.placement(&available)?;
        let pool = Pool::new(
            self.blocking.clone(),
            self.pool_cores(&available, &placement)?,
            &self.name,
        );
        let n = placement.len();
        log::info!("coreloop: {n} loops ({}): {}", chosen.reason, chosen.detail);
        let chosen = Arc::new(chosen);
        let mut threads = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        let mut gos = Vec::with_capacity(n);
        let peers: Peers = Arc::default();
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<(usize, Result<(), String>)>();
        for (shard, core) in placement.into_iter().enumerate() {
            let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
            let (go_tx, go_rx) = crossbeam_channel::bounded::<bool>(1);
            let setups = self.setups.clone();
            let peers = peers.clone();
            let chosen = chosen.clone();
            let done = done_tx.clone();
            let backend = self.backend;
            let pin = self.pin;
            let pool = pool.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{}-{shard}", self.name))
                .spawn(move || {
                    // A blocking call from this thread is refused from now on, setup
                    // included (the loops it would wait for may be waiting for it).
                    crate::reactor::mark_loop_thread();
                    if let (true, Some(core)) = (pin, core) {
                        if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                            log::warn!("coreloop: could not pin shard {shard} to core {core}");
                        }
                    }
                    let lp = match IoLoop::with_backend(backend) {
                        Ok(lp) => lp,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return Ok(());
                        }
                    };
                    set_shard(&lp, shard, n, peers, chosen);
                    lp.set_local(LoopPool(pool));
                    // Close the loop however this thread ends, so handles see it is gone.
                    let _close = CloseOnDrop(lp.clone());
                    let _ = ready_tx.send(Ok(lp.handle()));
                    if go_rx.recv() != Ok(true) {
                        return Ok(()); // another shard failed to start
                    }
                    let outcome = run_setups(&lp, shard, &setups);
                    let failed = outcome.is_err();
                    let _ = done.send((shard, outcome));
                    if failed {
                        return Ok(());
                    }
                    lp.start()
                });
            let thread = match spawned {
                Ok(t) => t,
                Err(e) => {
                    abort(&gos, &handles, threads);
                    return Err(e.into());
                }
            };
            threads.push(Some(thread));
            gos.push(go_tx);
            match ready_rx.recv() {
                Ok(Ok(h)) => handles.push(h),
                Ok(Err(e)) => {
                    abort(&gos, &handles, threads);
                    return Err(e.into());
                }
                Err(_) => {
                    abort(&gos, &handles, threads);
                    return Err(RuntimeError::Io(io::Error::other(format!(
                        "coreloop: shard {shard} ended before its loop was built"
                    ))));
                }
            }
        }
        drop(done_tx);
        // Every loop sees every shard's handle from here on (IoLoop::shard_handle), its
        // setup included.
        let _ = peers.set(handles.clone());
        for go in &gos {
            let _ = go.send(true);
        }
        let mut failures = Vec::new();
        for _ in 0..n {
            match done_rx.recv() {
                Ok((_, Ok(()))) => {}
                Ok((shard, Err(msg))) => failures.push((shard, ShardError::Setup(msg))),
                Err(_) => break, // a thread died outside its setup: join reports it
            }
        }
        let mut rt = Runtime {
            handles,
            threads,
            signals: None,
            watchdog: None,
            attached: Attached::default(),
            pool,
            inherited: Default::default(),
            upgrade: Mutex::new(None),
            drain_deadline: self.drain_deadline,
        };
        if !failures.is_empty() {
            rt.stop();
            let _ = rt.join_all();
            failures.sort_by_key(|(s, _)| *s);
            return Err(RuntimeError::Shards(failures));
        }
        if let Some(after) = self.watchdog {
            rt.watchdog = Some(super::watchdog::Watchdog::start(
                &self.name,
                rt.handles.clone(),
                after,
            )?);
        }
        if let Some(path) = self.upgrade_socket.clone() {
            let taken = match self.take_over {
                true => handover::take_over(&path, &rt.inherited)?,
                false => None,
            };
            let state = match taken {
                Some(t) => Upgrade::TakenOver(t, path),
                None => {
                    if self.take_over {
                        log::warn!(
                            "coreloop: no instance hands over at {}: starting afresh",
                            path.display()
                        );
                    }
                    Upgrade::Fresh(handover::bind(&path)?, path)
                }
            };
            rt.upgrade = Mutex::new(Some(state));
        }
        if self.stop_on_signals {
            let loops = rt.handles.clone();
            let attached = rt.attached.clone();
            let pool = rt.pool.clone();
            let deadline = self.drain_deadline;
            rt.signals = Some(SignalWatcher::start(move |sig| {
                let end = std::time::Instant::now() + deadline;
                log::info!(
                    "coreloop: signal {sig}: draining the servers (deadline {deadline:?}), then stopping {} loops",
                    loops.len()
                );
                let cut = attached.drain_all(deadline);
                if cut > 0 {
                    log::warn!("coreloop: {cut} connections were still open at the drain deadline and were closed");
                }
                pool.close(end.saturating_duration_since(std::time::Instant::now()));
                for h in &loops {
                    let _ = h.stop();
                }
            })?);
        }
        Ok(rt)
    }

    /// The cores of the blocking pool's threads: the configured ones, or those no loop
    /// is pinned to, or all of them if every core has a loop (`None`: unknown, where
    /// they start).
    fn pool_cores(
        &self,
        available: &[usize],
        placement: &[Option<usize>],
    ) -> io::Result<Option<Vec<usize>>> {
        if self.blocking.max_threads == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the blocking pool needs at least one thread (BlockingConfig::max_threads)",
            ));
        }
        if let Some(list) = &self.blocking.cores {
            if list.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "BlockingConfig::cores lists no core (None means the default)",
                ));
            }
            if let Some(bad) = list.iter().find(|c| !available.contains(c)) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("blocking pool core {bad} is not one this process may run on: {available:?}"),
                ));
            }
            return Ok(Some(list.clone()));
        }
        if available.is_empty() {
            return Ok(None); // the kernel did not say: where the threads start
        }
        let free: Vec<usize> = available
            .iter()
            .copied()
            .filter(|c| !(self.pin && placement.contains(&Some(*c))))
            .collect();
        Ok(Some(if free.is_empty() {
            available.to_vec()
        } else {
            free
        }))
    }

    /// The core of each shard (`None`: not pinned), and why that many (`cpus.rs`).
    fn placement(&self, available: &[usize]) -> io::Result<(Vec<Option<usize>>, CoresChosen)> {
        // Read for an explicit count too: more loops than the quota allows are worth a
        // warning.
        let quota = cpus::cpu_quota(&self.cgroup);
        let fallback = std::thread::available_parallelism().map_or(1, |n| n.get());
        cpus::choose(&self.cores, available, quota.as_ref(), fallback)
    }

    /// Reads the cgroup files under `root` (instead of `/sys/fs/cgroup`) and the
    /// process's cgroups from `self_cgroup` (instead of `/proc/self/cgroup`).
    #[cfg(test)]
    pub(crate) fn cgroup_fs(mut self, root: PathBuf, self_cgroup: PathBuf) -> Self {
        self.cgroup = CgroupFs { root, self_cgroup };
        self
    }
}

/// The cores the calling thread may run on.
fn available_cores() -> Vec<usize> {
    core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// Runs a shard's setups in order, catching a panic; the first failure ends them.
fn run_setups(lp: &IoLoop, shard: usize, setups: &[Setup]) -> Result<(), String> {
    for setup in setups {
        match catch_unwind(AssertUnwindSafe(|| setup(lp, shard))) {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => return Err(msg),
            Err(p) => return Err(format!("panicked: {}", panic_message(&*p))),
        }
    }
    Ok(())
}

/// Closes a loop when its thread leaves, also by unwinding.
struct CloseOnDrop(IoLoop);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Starting failed: the threads started so far are told not to go on, and joined.
fn abort(
    gos: &[crossbeam_channel::Sender<bool>],
    handles: &[LoopHandle],
    threads: Vec<Option<JoinHandle<io::Result<()>>>>,
) {
    for go in gos {
        let _ = go.send(false);
    }
    for h in handles {
        let _ = h.stop();
    }
    for t in threads.into_iter().flatten() {
        let _ = t.join();
    }
}
