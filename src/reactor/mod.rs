//! The reactor: `IoLoop`, Tornado's IOLoop, one per thread.
//!
//! # One iteration
//!
//! 1. Stop if asked to.
//! 2. Move jobs sent from other threads (at most a batch of them) into the queue.
//! 3. Run the jobs that are queued now (callbacks and polls of woken tasks, in the order
//!    they were queued); one added meanwhile runs in the next round (Tornado's rule:
//!    a busy producer cannot starve I/O or timers).
//! 4. Fire every timer due now that was added before this step, earliest first, equal
//!    deadlines in the order they were added. A timer cancelled by an earlier one does not
//!    run.
//! 5. Run the work deferred to the end of a step (a stream's writes of this step go out
//!    in one send).
//! 6. While jobs keep coming, steps 2-5 again, as another round, up to 64 rounds or
//!    1,024 jobs (or until a stop is asked for): a chain of jobs, such as a task that
//!    wakes another, costs no I/O poll per link.
//! 7. Wait for I/O: not at all if jobs are pending, else until the next deadline,
//!    else until woken; then dispatch readiness to handlers and completions to their
//!    owners (io_uring), running each one's deferred work right after it.
//!
//! User code is never called while loop state is borrowed: due timers, ready events and
//! handlers are taken out, the borrow is released, then they run, so any callback may
//! call any method of the loop re-entrantly. A panic in user code is caught and logged
//! with where the callback was added, and the loop goes on; a handler that panicked is
//! removed, since calling it again on a level-triggered fd would panic in a loop.
//!
//! # Files
//!
//! This file holds the loop object and its state; each concern adds its methods in its
//! own file: `iteration.rs` (start, stop, close, one iteration), `handlers.rs` (fd
//! handlers), `timer.rs` (timers and the timer heap), `callbacks.rs` (the run queue,
//! local and remote), `calls.rs` (`Call`: work on another loop, awaited, continued or waited for), `handle.rs` (the
//! cross-thread `LoopHandle` and its wake-up protocol), `registry.rs` (per-loop values,
//! resources the loop closes with itself, work deferred to the end of a step) and
//! `completion.rs` (completion ops for the layers above, on backends that have them),
//! `tasks.rs` (where a woken task goes, the tasks a loop has alive, and the task type
//! the run queue holds), `wake.rs` (how a loop wakes another: eventfd or io_uring
//! `MSG_RING`), `thread.rs` (what a thread is to the loops: one thread-local context),
//! `clock.rs` (the loop's time keeping) and `histogram.rs` (the histograms hot paths
//! record into).

mod budget;
mod callbacks;
mod calls;
mod clock;
mod completion;
mod handle;
mod handlers;
mod histogram;
mod iteration;
mod registry;
mod stats;
mod tasks;
mod thread;
mod timer;
mod wake;

pub use budget::DEFAULT_BUFFER_BUDGET;
pub(crate) use budget::{Budget, FLOOR as BUDGET_FLOOR};
pub(crate) use calls::{gather, Reply};
pub use calls::{Call, CallError, CallFuture};
pub(crate) use completion::Sink;
pub(crate) use handle::EPOCH;
pub use handle::{LoopClosed, LoopHandle, RemoteCallback};
pub(crate) use histogram::LogHistogram;
pub(crate) use registry::{Resource, StepEnd};
pub use stats::LoopStats;
pub(crate) use stats::{nanos, new_histogram};
pub(crate) use tasks::{Runnable, TaskKey, TaskMeta};
pub(crate) use thread::mark_loop_thread;
pub use timer::TimeoutId;
pub use wake::WakeVia;

use crate::buffer::BufferPool;
use crate::poller::{Backend, Completion, Poller, Waker};
use callbacks::RunQueue;
use calls::Calls;
use handle::Shared;
use handlers::Handlers;
use registry::Registry;
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use timer::Timers;

struct Inner {
    poller: RefCell<Poller<Sink>>,
    /// The poller's backend (never `Auto`), without a look into the poller.
    backend: Backend,
    /// Completions reaped by the last wait, and the loop's pool of I/O buffers.
    completions: RefCell<Vec<(Sink, Completion)>>,
    pool: RefCell<BufferPool>,
    handlers: Handlers,
    timers: Timers,
    queue: RunQueue,
    calls: Calls,
    registry: Registry,
    tasks: tasks::Tasks,
    stats: stats::Stats,
    handle: LoopHandle,
    running: Cell<bool>,
    /// The loop's time, and how jobs are timed.
    clock: clock::Clock,
    /// How long the loop looks for work before it sleeps (zero: it sleeps at once).
    idle_poll: Cell<Duration>,
    /// How this loop wakes other loops (`wake.rs`).
    wakes: wake::RingWakes,
    /// What the layers above buffer on this loop, and its limit (`budget.rs`).
    budget: Rc<budget::Budget>,
}

/// An event loop: fd handlers, a timer heap and a callback queue, run by one thread.
///
/// `IoLoop` is a cheap reference-counted pointer (cloning it does not make a new loop;
/// dropping the last clone closes the loop, and the streams and acceptors it keeps)
/// and is `!Send`: a loop belongs to the thread that made it. Other threads reach it
/// through a [`LoopHandle`]. Callbacks, timers and handlers get `&IoLoop` and may call
/// any method on it, including from inside a handler for the handler's own fd.
///
/// Storing a clone of the loop inside one of its own callbacks or handlers makes a
/// reference cycle; call [`IoLoop::close`] (a [`Runtime`](crate::Runtime) does) to break
/// it, or keep the `&IoLoop` the callback is given instead.
///
/// ```
/// use coreloop::IoLoop;
/// use std::time::Duration;
///
/// let lp = IoLoop::new()?;
/// lp.add_callback(|lp| println!("runs first, at {:?}", lp.time()));
/// lp.call_later(Duration::from_millis(10), |lp| lp.stop());
/// lp.start()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct IoLoop {
    inner: Rc<Inner>,
}

/// A non-owning reference to a loop, for objects the loop's own handlers keep alive
/// (holding an `IoLoop` there would make a reference cycle).
#[derive(Clone)]
pub(crate) struct WeakLoop(std::rc::Weak<Inner>);

impl WeakLoop {
    pub(crate) fn upgrade(&self) -> Option<IoLoop> {
        self.0.upgrade().map(|inner| IoLoop { inner })
    }
}

impl IoLoop {
    pub(crate) fn downgrade(&self) -> WeakLoop {
        WeakLoop(Rc::downgrade(&self.inner))
    }

    /// A loop on [`Backend::Auto`].
    pub fn new() -> io::Result<IoLoop> {
        IoLoop::with_backend(Backend::Auto)
    }

    /// A loop on the given backend. `Auto` falls back to epoll when io_uring is missing;
    /// an explicit `Uring` returns the error instead.
    ///
    /// ```
    /// use coreloop::{Backend, IoLoop};
    /// let lp = IoLoop::with_backend(Backend::Auto)?;
    /// assert_ne!(lp.backend(), Backend::Auto); // resolved to what it runs on
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_backend(backend: Backend) -> io::Result<IoLoop> {
        let waker = Arc::new(Waker::new()?);
        let poller = Poller::new(backend, &waker)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let handle = LoopHandle {
            tx,
            shared: Arc::new(Shared::new(waker, poller.ring_fd())),
        };
        let lp = IoLoop {
            inner: Rc::new(Inner {
                backend: poller.backend(),
                poller: RefCell::new(poller),
                completions: RefCell::new(Vec::with_capacity(1024)),
                pool: RefCell::new(BufferPool::default()),
                handlers: Handlers::default(),
                timers: Timers::default(),
                queue: RunQueue::new(rx),
                calls: Calls::default(),
                registry: Registry::default(),
                tasks: tasks::Tasks::default(),
                stats: stats::Stats::default(),
                handle,
                running: Cell::new(false),
                clock: clock::Clock::default(),
                idle_poll: Cell::new(Duration::ZERO),
                wakes: wake::RingWakes::default(),
                budget: Rc::default(),
            }),
        };
        thread::register_loop(&lp);
        Ok(lp)
    }

    /// The loop running on this thread, if one is (inside its callbacks, timers and
    /// handlers).
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// assert!(IoLoop::current().is_none());
    /// let lp = IoLoop::new()?;
    /// lp.add_callback(|lp| {
    ///     let cur = IoLoop::current().expect("inside the loop");
    ///     assert!(cur.handle().same_loop(&lp.handle()));
    ///     lp.stop();
    /// });
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn current() -> Option<IoLoop> {
        thread::current()
    }

    /// The backend this loop runs on (never `Auto`).
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The backend with its details, for logs: on io_uring, the ring setup flags the
    /// kernel accepted (`DEFER_TASKRUN` and friends are worth half the CPU per request).
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// let lp = IoLoop::new()?;
    /// println!("running on {}", lp.backend_detail());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn backend_detail(&self) -> &'static str {
        self.inner.poller.borrow().describe()
    }

    /// Trades latency for CPU near saturation: while the loop is busy (its thread used
    /// more than 75% of a core over the last 20 ms, until below 60%), each wait for
    /// I/O, once a completion has come, gathers more for up to `wait` (up to 64) before
    /// the loop runs, so it wakes less often and does more per wake-up. A loop with
    /// time to spare waits as without it, so moderate load sees no added latency. The
    /// time counts from the start of the wait: a loop that was idle for longer runs at
    /// once, and a timer due sooner than `wait` is not delayed. While it applies,
    /// answers (and callbacks from other threads) can be up to `wait` later. io_uring
    /// on Linux 6.12 or later only (IORING_FEAT_MIN_TIMEOUT): returns whether it took
    /// effect; `Duration::ZERO` turns it off.
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// use std::time::Duration;
    /// let lp = IoLoop::new()?;
    /// let batching = lp.set_batch_wait(Duration::from_micros(100));
    /// println!("batch wait on {}: {batching}", lp.backend_detail());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_batch_wait(&self, wait: Duration) -> bool {
        self.inner.poller.borrow_mut().set_batch_wait(wait)
    }

    /// Trades CPU for latency: with nothing to do, the loop keeps looking at its run
    /// queue (and, every microsecond or so, at its I/O, without blocking) for up to
    /// `poll` before it goes to sleep. Work sent from another thread in that time is
    /// seen without the sleeping thread's wake-up, which is most of a cross-core round
    /// trip. The cost: up to `poll` of CPU after each burst of work, even if no more
    /// comes. Default zero (sleep at once).
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// use std::time::Duration;
    /// let lp = IoLoop::new()?;
    /// lp.set_idle_poll(Duration::from_micros(50));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_idle_poll(&self, poll: Duration) {
        self.inner.idle_poll.set(poll);
    }

    /// A handle other threads can use to send callbacks to this loop or stop it.
    pub fn handle(&self) -> LoopHandle {
        self.inner.handle.clone()
    }

    /// Unique per loop in this process.
    pub(crate) fn id(&self) -> u64 {
        self.inner.handle.shared.id
    }

    /// The loop's cached monotonic time: refreshed at the start of each iteration and
    /// after each wait for I/O. Cheaper than `Instant::now()`, and the same for all the
    /// callbacks of one step.
    pub fn time(&self) -> Instant {
        self.inner.clock.now()
    }

    /// The loop's time in nanoseconds of the monotonic clock (an origin of the kernel's
    /// choosing): for arithmetic on times without `Instant`'s.
    pub(crate) fn now_ns(&self) -> u64 {
        self.inner.clock.now_ns()
    }

    /// Reads the clock now, ns (for a time that must be exact, such as the end of a
    /// response); the job that runs ends at this time too, which saves it a clock read.
    pub(crate) fn stamp(&self) -> u64 {
        self.inner.clock.stamp()
    }

    /// True while `start()` is running.
    pub fn is_running(&self) -> bool {
        self.inner.running.get()
    }

    /// The loop's pool of I/O buffers.
    pub(crate) fn with_pool<R>(&self, f: impl FnOnce(&mut BufferPool) -> R) -> R {
        f(&mut self.inner.pool.borrow_mut())
    }
}

/// The text of a panic payload, when it has one.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(non-string panic payload)"
    }
}

impl Drop for IoLoop {
    fn drop(&mut self) {
        // The last clone: close, so that open streams (which the loop keeps alive) are
        // closed and release their fds, instead of outliving the loop.
        if Rc::strong_count(&self.inner) == 1 && self.inner.registry.has_resources() {
            self.close();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.handle.shared.closed.store(true, Ordering::Release);
    }
}

impl fmt::Debug for IoLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoLoop")
            .field("backend", &self.backend())
            .field("id", &self.id())
            .field("running", &self.inner.running.get())
            .finish()
    }
}
