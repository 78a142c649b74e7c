//! The blocking pool: threads a runtime owns for work that would stall a loop (a
//! blocking database driver or SDK, file I/O on epoll, name lookup, CPU-heavy work).
//! tokio's `spawn_blocking`, Tornado's `IOLoop.run_in_executor`.
//!
//! [`IoLoop::call_blocking`] (and [`Runtime::call_blocking`]) runs a closure on a pool
//! thread and gives its value back as a [`Call`], awaited, continued on the asking loop
//! or waited for, like a call to another core.
//!
//! Bounded, so that overload is an answer and never a pile-up: threads are started on
//! demand up to [`BlockingConfig::max_threads`] and retire after
//! [`BlockingConfig::idle_timeout`] without work; when every thread is busy, up to
//! [`BlockingConfig::queue`] jobs wait; past that a call answers [`CallError::Full`] at
//! once. A panic answers [`CallError::Panicked`] (logged; the thread goes on). When the
//! runtime stops, queued jobs answer [`CallError::Closed`] and running ones get the
//! drain deadline to finish; a job still running after it is left to finish on its
//! own (a thread cannot be cancelled), and its answer is dropped.
//!
//! One mutex holds the queue, the counts and the histograms: every job takes it twice
//! (queued, and taken plus its run recorded), where waking a sleeping thread costs far
//! more. Pool threads are put on their cores when they start (see
//! [`BlockingConfig::cores`]); a thread started from a pinned loop would otherwise
//! inherit that loop's core.

use crate::reactor::{nanos, new_histogram, panic_message, Call, CallError, IoLoop, Reply};
use crate::runtime::Runtime;
use hdrhistogram::Histogram;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// How a runtime's blocking pool is bounded ([`RuntimeBuilder::blocking`](crate::RuntimeBuilder::blocking)).
///
/// ```
/// use coreloop::{BlockingConfig, Cores, Runtime};
/// use std::time::Duration;
/// let rt = Runtime::builder()
///     .cores(Cores::Count(1))
///     .blocking(BlockingConfig { max_threads: 4, queue: 16, ..BlockingConfig::default() })
///     .build()?;
/// assert_eq!(rt.call_blocking(|| 6 * 7).wait(), Ok(42));
/// rt.shutdown()?;
/// # Ok::<(), coreloop::RuntimeError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockingConfig {
    /// Most threads at once (default [`DEFAULT_BLOCKING_THREADS`], 64). Threads start
    /// when a job finds none idle and retire after `idle_timeout` without work. At least 1.
    pub max_threads: usize,
    /// Most jobs waiting for a thread when all `max_threads` are busy (default 1024);
    /// past it a call answers [`CallError::Full`]. 0: a job runs at once or is refused.
    pub queue: usize,
    /// How long a thread waits for work before it retires (default 10 s, as tokio's).
    pub idle_timeout: Duration,
    /// The cores pool threads may run on. `None` (default): every core the process may
    /// use (as the thread that builds the runtime sees it) except those the runtime's
    /// loops are pinned to, or all of them if that leaves none (2 loops on a 2-core
    /// machine: the pool shares their cores, and the kernel schedules it beside them).
    /// A lone loop's pool uses every core the process was started on.
    ///
    /// Off the loops' cores, a long job never takes CPU time from a loop; the price is
    /// a wake-up across cores each way, which on a virtual machine can cost tens of
    /// microseconds per call (`benches/pool_compare.sh`), against a few on one core.
    pub cores: Option<Vec<usize>>,
}

/// Default [`BlockingConfig::max_threads`].
pub const DEFAULT_BLOCKING_THREADS: usize = 64;

impl Default for BlockingConfig {
    fn default() -> Self {
        BlockingConfig {
            max_threads: DEFAULT_BLOCKING_THREADS,
            queue: 1024,
            idle_timeout: Duration::from_secs(10),
            cores: None,
        }
    }
}

/// What a blocking pool recorded (in [`Snapshot::blocking`](crate::metrics::Snapshot)).
///
/// ```
/// use coreloop::{Cores, Runtime};
/// let rt = Runtime::builder().cores(Cores::Count(1)).build()?;
/// rt.call_blocking(|| std::thread::sleep(std::time::Duration::from_millis(1))).wait()?;
/// let pool = rt.stats().wait()?.blocking;
/// assert_eq!((pool.done, pool.run_ns.len()), (1, 1));
/// assert!(pool.threads >= 1 && pool.threads <= pool.max_threads);
/// rt.shutdown()?;
/// # Ok::<(), coreloop::RuntimeError>(())
/// ```
#[derive(Clone, Debug)]
pub struct BlockingStats {
    /// The configured bound on threads.
    pub max_threads: usize,
    /// Threads alive now (running a job or idle).
    pub threads: usize,
    /// Of those, waiting for work.
    pub idle: usize,
    /// Jobs waiting for a thread now.
    pub queued: usize,
    /// Jobs that ran to the end (their value was answered).
    pub done: u64,
    /// Jobs that panicked (answered [`CallError::Panicked`]).
    pub panicked: u64,
    /// Calls refused because threads and queue were full ([`CallError::Full`]).
    pub rejected: u64,
    /// Jobs still queued when the pool closed (answered [`CallError::Closed`]).
    pub closed: u64,
    /// Nanoseconds each job waited between its call and its start.
    pub wait_ns: Histogram<u64>,
    /// Nanoseconds each job ran.
    pub run_ns: Histogram<u64>,
}

impl Default for BlockingStats {
    fn default() -> Self {
        BlockingStats {
            max_threads: 0,
            threads: 0,
            idle: 0,
            queued: 0,
            done: 0,
            panicked: 0,
            rejected: 0,
            closed: 0,
            wait_ns: new_histogram(),
            run_ns: new_histogram(),
        }
    }
}

/// A closure and where its value goes.
trait Work: Send {
    /// Runs it and answers; true if it panicked.
    fn run(self: Box<Self>) -> bool;
    /// Answers `e` without running it.
    fn refuse(self: Box<Self>, e: CallError);
}

struct Task<T: Send + 'static, F> {
    f: F,
    reply: Reply<T>,
}

impl<T: Send + 'static, F: FnOnce() -> T + Send> Work for Task<T, F> {
    fn run(self: Box<Self>) -> bool {
        let Task { f, reply } = *self;
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(v) => {
                reply.send(Ok(v));
                false
            }
            Err(p) => {
                let msg = panic_message(&*p).to_string();
                log::error!("coreloop: a blocking call panicked: {msg}");
                reply.send(Err(CallError::Panicked(msg)));
                true
            }
        }
    }

    fn refuse(self: Box<Self>, e: CallError) {
        self.reply.send(Err(e));
    }
}

struct Job {
    queued_at: Instant,
    work: Box<dyn Work>,
}

struct State {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
    closed: bool,
    stats: BlockingStats,
}

struct Shared {
    cfg: BlockingConfig,
    /// The cores its threads run on (`None`: any).
    cores: Option<Vec<usize>>,
    name: String,
    state: Mutex<State>,
    /// Idle threads wait here for work.
    work: Condvar,
    /// `close` waits here for the last thread to leave.
    gone: Condvar,
}

/// A blocking pool; clones share it.
#[derive(Clone)]
pub(crate) struct Pool(Arc<Shared>);

impl Pool {
    /// A pool whose threads are named `{name}-blocking` and run on `cores` (`None`: any).
    pub(crate) fn new(cfg: BlockingConfig, cores: Option<Vec<usize>>, name: &str) -> Pool {
        let stats = BlockingStats {
            max_threads: cfg.max_threads,
            ..BlockingStats::default()
        };
        Pool(Arc::new(Shared {
            cfg,
            cores,
            name: format!("{name}-blocking"),
            state: Mutex::new(State {
                queue: VecDeque::new(),
                threads: 0,
                idle: 0,
                closed: false,
                stats,
            }),
            work: Condvar::new(),
            gone: Condvar::new(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `f` on a pool thread, as a call.
    pub(crate) fn call<T, F>(&self, f: F) -> Call<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let pool = self.clone();
        Call::new(move |reply| pool.submit(Box::new(Task { f, reply })))
    }

    /// Queues `work` for an idle thread, a new one, or a free place in the queue; or
    /// answers `Full` (or `Closed`) at once.
    fn submit(&self, work: Box<dyn Work>) {
        let cfg = &self.0.cfg;
        let mut st = self.lock();
        if st.closed {
            drop(st);
            return work.refuse(CallError::Closed);
        }
        // Each queued job not yet taken has an idle (or starting) thread on its way to
        // it, or waits for a busy one: at most `threads + queue` jobs are accepted.
        let waiting = st.queue.len();
        let spawn = st.idle <= waiting && st.threads < cfg.max_threads;
        if !spawn && waiting >= st.idle + cfg.queue {
            st.stats.rejected += 1;
            drop(st);
            return work.refuse(CallError::Full);
        }
        st.queue.push_back(Job {
            queued_at: Instant::now(),
            work,
        });
        if spawn {
            // Counted idle until it takes its first job: the jobs queued meanwhile are
            // its to take, not a reason for more threads or a refusal.
            st.threads += 1;
            st.idle += 1;
        }
        let notify = !spawn && st.idle > waiting;
        drop(st);
        if notify {
            self.0.work.notify_one();
        }
        if spawn {
            self.spawn();
        }
    }

    /// Starts a thread (counted already); if none can be started and no thread is left
    /// to run the queue, the queued jobs answer `Full`.
    fn spawn(&self) {
        let pool = self.clone();
        let started = std::thread::Builder::new()
            .name(self.0.name.clone())
            .spawn(move || pool.work());
        if let Err(e) = started {
            log::warn!("coreloop: the blocking pool could not start a thread: {e}");
            let mut st = self.lock();
            st.threads -= 1;
            st.idle -= 1;
            let stranded: Vec<Job> = if st.threads == 0 {
                st.stats.rejected += st.queue.len() as u64;
                st.queue.drain(..).collect()
            } else {
                Vec::new()
            };
            drop(st);
            for job in stranded {
                job.work.refuse(CallError::Full);
            }
        }
    }

    /// A pool thread: takes jobs until closed or idle for `idle_timeout`.
    fn work(self) {
        set_cores(self.0.cores.as_deref());
        let mut st = self.lock();
        st.idle -= 1; // counted by `submit` while it started
        loop {
            if let Some(job) = st.queue.pop_front() {
                let started = Instant::now();
                st.stats
                    .wait_ns
                    .saturating_record(nanos(started - job.queued_at));
                drop(st);
                let panicked = job.work.run();
                let ran = started.elapsed();
                st = self.lock();
                st.stats.run_ns.saturating_record(nanos(ran));
                if panicked {
                    st.stats.panicked += 1;
                } else {
                    st.stats.done += 1;
                }
                continue;
            }
            if st.closed {
                break;
            }
            st.idle += 1;
            let (guard, waited) = self
                .0
                .work
                .wait_timeout(st, self.0.cfg.idle_timeout)
                .unwrap_or_else(|p| p.into_inner());
            st = guard;
            st.idle -= 1;
            if waited.timed_out() && st.queue.is_empty() {
                break;
            }
        }
        st.threads -= 1;
        let last = st.threads == 0;
        drop(st);
        if last {
            self.0.gone.notify_all();
        }
    }

    /// Stops taking work: queued jobs answer `Closed`, idle threads leave, and this waits
    /// up to `deadline` for the running jobs to finish (those still running then are
    /// left to finish on their own, logged). A second close returns at once.
    pub(crate) fn close(&self, deadline: Duration) {
        let mut st = self.lock();
        if st.closed {
            return;
        }
        st.closed = true;
        let queued: Vec<Job> = st.queue.drain(..).collect();
        st.stats.closed += queued.len() as u64;
        drop(st);
        self.0.work.notify_all();
        for job in queued {
            job.work.refuse(CallError::Closed);
        }
        let end = Instant::now() + deadline;
        let mut st = self.lock();
        while st.threads > 0 {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!(
                    "coreloop: {} blocking jobs still running at the drain deadline; left to finish on their own",
                    st.threads
                );
                break;
            }
            st = self
                .0
                .gone
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// A copy of its numbers.
    pub(crate) fn stats(&self) -> BlockingStats {
        let st = self.lock();
        BlockingStats {
            threads: st.threads,
            idle: st.idle,
            queued: st.queue.len(),
            ..st.stats.clone()
        }
    }
}

/// Puts the calling thread on `cores` (`None`: leaves it where it is).
fn set_cores(cores: Option<&[usize]>) {
    use rustix::thread::{sched_setaffinity, CpuSet};
    let Some(list) = cores else { return };
    let mut set = CpuSet::new();
    list.iter()
        .filter(|&&c| c < CpuSet::MAX_CPU)
        .for_each(|&c| set.set(c));
    if let Err(e) = sched_setaffinity(None, &set) {
        log::debug!("coreloop: could not set a blocking thread's cores {cores:?}: {e}");
    }
}

/// The cores the process was started on (its main thread's, as `taskset` or a
/// scheduler set them), whatever core the calling thread is pinned to; `None` if the
/// kernel does not say.
fn process_cores() -> Option<Vec<usize>> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    let mut out = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.parse::<usize>().ok()?..=b.parse().ok()?),
            None => out.push(part.parse().ok()?),
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The pool of a loop: its runtime's, or for a loop made alone the process's shared one.
pub(crate) struct LoopPool(pub(crate) Pool);

impl Default for LoopPool {
    fn default() -> Self {
        static SHARED: OnceLock<Pool> = OnceLock::new();
        LoopPool(
            SHARED
                .get_or_init(|| Pool::new(BlockingConfig::default(), process_cores(), "coreloop"))
                .clone(),
        )
    }
}

/// `lp`'s pool.
pub(crate) fn pool_of(lp: &IoLoop) -> Pool {
    lp.local::<LoopPool>().0.clone()
}

impl IoLoop {
    /// Runs `f` on a thread of the blocking pool and gives its value back here, as a
    /// [`Call`]: `.await` it in a task (or an async handler), continue with
    /// [`Call::then`] on this loop, like [`call_on`](Self::call_on). For work that would
    /// stall the loop and every connection it serves: a blocking database driver or
    /// SDK, file I/O on epoll, CPU-heavy work (tokio's `spawn_blocking`, Tornado's
    /// `run_in_executor`).
    ///
    /// The answer is `f`'s value, or [`CallError::Full`] at once when every thread is
    /// busy and the queue is at its bound, [`CallError::Panicked`] if `f` panicked,
    /// [`CallError::Closed`] if the runtime stopped before `f` ran. The pool is the
    /// runtime's ([`RuntimeBuilder::blocking`](crate::RuntimeBuilder::blocking)); a
    /// loop made alone ([`IoLoop::new`]) uses one pool the process shares, with the
    /// default bounds, started on first use and never closed.
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// let lp = IoLoop::new()?;
    /// // A task awaits it; the loop runs other work meanwhile.
    /// let len = lp.run_until_complete({
    ///     let lp = lp.clone();
    ///     async move { lp.call_blocking(|| std::fs::read("Cargo.toml").map(|b| b.len())).await }
    /// })?;
    /// assert!(len.unwrap().unwrap() > 0);
    /// // A callback continues with it.
    /// lp.call_blocking(|| 2 + 2).then(|lp, four| {
    ///     assert_eq!(four, Ok(4));
    ///     lp.stop();
    /// });
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn call_blocking<T, F>(&self, f: F) -> Call<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.local::<LoopPool>().0.call(f).made_by(self)
    }
}

impl Runtime {
    /// Runs `f` on a thread of this runtime's blocking pool, as a [`Call`]; the same as
    /// [`IoLoop::call_blocking`], from a plain thread ([`Call::wait`]).
    ///
    /// ```
    /// use coreloop::{CallError, Cores, Runtime};
    /// let rt = Runtime::builder().cores(Cores::Count(1)).build()?;
    /// assert_eq!(rt.call_blocking(|| "done").wait(), Ok("done"));
    /// assert_eq!(rt.call_blocking(|| -> u8 { panic!("bad row") }).wait(),
    ///            Err(CallError::Panicked("bad row".into())));
    /// rt.shutdown()?;
    /// # Ok::<(), coreloop::RuntimeError>(())
    /// ```
    pub fn call_blocking<T, F>(&self, f: F) -> Call<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.pool.call(f)
    }
}
