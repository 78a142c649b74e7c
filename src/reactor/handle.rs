//! `LoopHandle`: the only way into a loop from another thread.
//!
//! # The wake-up protocol
//!
//! A remote callback goes onto the loop's crossbeam channel; then the sender writes the
//! loop's eventfd **only if** it takes the `needs_wake` flag (true → false). The loop sets
//! that flag just before it blocks and then looks at the channel (and the stop flag) once
//! more; both sides put a `SeqCst` fence between their store and their load, so at least
//! one of them sees the other: either the loop sees the callback and does not block, or
//! the sender sees the flag and wakes it. A burst of callbacks to a sleeping loop costs
//! one `write(2)`; callbacks to a busy loop cost none. No wake-up is lost, and no poll
//! timeout cap is needed to stay correct. (A sender on an io_uring loop may wake an
//! io_uring target with a `MSG_RING` instead of the `write(2)`: `wake.rs`.)

use super::stats::REMOTE_SAMPLE;
use super::tasks::Runnable;
use super::IoLoop;
use crate::poller::Waker;
use crossbeam_channel::Sender;
use std::fmt;
use std::os::fd::OwnedFd;
use std::panic::Location;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What other threads send a loop: a callback (with where it was sent from), or a task
/// to poll (woken from another thread).
pub(crate) enum Remote {
    Callback {
        f: RemoteCallback,
        at: &'static Location<'static>,
        name: &'static str,
        sent: Option<Instant>,
    },
    Task(Runnable, Option<Instant>),
}

/// The send time, for one send in `REMOTE_SAMPLE` (a clock read on every send would
/// cost more than the rest of the send).
fn sample_sent() -> Option<Instant> {
    let k = super::thread::count_send()?;
    (k % REMOTE_SAMPLE == 0).then(Instant::now)
}

/// State shared by a loop and its handles.
pub(crate) struct Shared {
    pub(crate) waker: Arc<Waker>,
    /// A duplicate of the loop's ring fd (io_uring), for `MSG_RING` wake-ups (`wake.rs`).
    pub(crate) ring: Option<OwnedFd>,
    /// Set by the loop right before it may block; taken by the one sender that wakes it.
    pub(crate) needs_wake: AtomicBool,
    /// A stop was asked for; the loop takes it at the top of its next iteration.
    pub(crate) stop: AtomicBool,
    /// The loop has been closed (or dropped); nothing sent now will ever run.
    pub(crate) closed: AtomicBool,
    /// Unique per loop in this process, to recognise "the loop running on this thread".
    pub(crate) id: u64,
    /// When the job the loop runs now started, nanoseconds after `EPOCH` (0: between
    /// jobs, or waiting for I/O), for a watchdog on another thread. On a cache line of
    /// its own: the loop writes it after every job; the watchdog reads it rarely.
    pub(crate) busy_since: crossbeam_utils::CachePadded<AtomicU64>,
}

/// The origin of `Shared::busy_since`.
pub(crate) static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

/// `t` as nanoseconds after `EPOCH` (at least 1, so that 0 can mean "not busy").
pub(crate) fn since_epoch(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(*EPOCH).as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl Shared {
    pub(crate) fn new(waker: Arc<Waker>, ring: Option<OwnedFd>) -> Shared {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Shared {
            waker,
            ring,
            needs_wake: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            busy_since: crossbeam_utils::CachePadded::new(AtomicU64::new(0)),
        }
    }

    /// Wakes the loop if it may be asleep. Call after publishing what it should see.
    pub(crate) fn notify(&self) {
        fence(Ordering::SeqCst);
        if self.needs_wake.load(Ordering::SeqCst) && self.needs_wake.swap(false, Ordering::SeqCst) {
            if super::wake::wake_from_this_thread(self) {
                return;
            }
            if let Err(e) = self.waker.wake() {
                log::error!("coreloop: could not wake a loop: {e}");
            }
        }
    }
}

/// A `Send + Sync + Clone` handle to an [`IoLoop`], for other threads.
///
/// It is Tornado's thread-safe `add_callback`: the callback is queued on a channel and
/// runs on the loop's thread, in a later iteration, in the order it was sent relative to
/// other callbacks sent from the same thread. Sending never blocks. Once the loop has
/// been closed or dropped, every call returns [`LoopClosed`] (handing the callback back)
/// instead of queueing work that would never run; a callback accepted just before the
/// loop closed is dropped unrun, as Tornado drops the callbacks of a closed loop.
/// Dropping a handle does nothing to its loop.
///
/// ```
/// use coreloop::IoLoop;
/// let lp = IoLoop::new()?;
/// let handle = lp.handle();
/// std::thread::spawn(move || {
///     handle.add_callback(|lp| lp.stop()).expect("loop is alive");
/// });
/// lp.start()?; // returns once the other thread's callback has run
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct LoopHandle {
    pub(crate) tx: Sender<Remote>,
    pub(crate) shared: Arc<Shared>,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<LoopHandle>();
};

impl LoopHandle {
    /// Queues `f` to run on the loop's thread, waking the loop if it sleeps.
    ///
    /// Returns [`LoopClosed`] with the callback if the loop is gone.
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// let lp = IoLoop::new()?;
    /// let h = lp.handle();
    /// h.add_callback(|lp| lp.stop()).unwrap();
    /// lp.start()?;
    /// drop(lp);
    /// assert!(h.add_callback(|_| {}).is_err());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[track_caller]
    pub fn add_callback<F>(&self, f: F) -> Result<(), LoopClosed>
    where
        F: FnOnce(&IoLoop) + Send + 'static,
    {
        let f: RemoteCallback = Box::new(f);
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(LoopClosed(Some(f)));
        }
        let remote = Remote::Callback {
            f,
            at: Location::caller(),
            name: std::any::type_name::<F>(),
            sent: sample_sent(),
        };
        match self.tx.send(remote) {
            Ok(()) => {
                self.shared.notify();
                Ok(())
            }
            Err(e) => match e.into_inner() {
                Remote::Callback { f, .. } => Err(LoopClosed(Some(f))),
                Remote::Task(..) => unreachable!("a callback was sent"),
            },
        }
    }

    /// Queues a task to be polled on the loop (a wake from another thread); gives it
    /// back if the loop is closed.
    pub(crate) fn send_task(&self, task: Runnable) -> Result<(), Runnable> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(task);
        }
        match self.tx.send(Remote::Task(task, sample_sent())) {
            Ok(()) => {
                self.shared.notify();
                Ok(())
            }
            Err(e) => match e.into_inner() {
                Remote::Task(t, _) => Err(t),
                Remote::Callback { .. } => unreachable!("a task was sent"),
            },
        }
    }

    /// Asks the loop to stop: `start()` returns after the iteration in progress. A loop
    /// that is not running returns at once from its next `start()`.
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// let lp = IoLoop::new()?;
    /// lp.handle().stop().unwrap();
    /// lp.start()?; // returns at once
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn stop(&self) -> Result<(), LoopClosed> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(LoopClosed(None));
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.notify();
        Ok(())
    }

    /// When the loop's current job started (nanoseconds after `EPOCH`; 0: between jobs
    /// or waiting), if a watchdog watches it.
    pub(crate) fn busy_since(&self) -> u64 {
        self.shared.busy_since.load(Ordering::Relaxed)
    }

    /// True once the loop has been closed or dropped.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// True if both handles lead to the same loop.
    pub fn same_loop(&self, other: &LoopHandle) -> bool {
        self.shared.id == other.shared.id
    }
}

impl fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopHandle")
            .field("loop", &self.shared.id)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// The loop a [`LoopHandle`] leads to has been closed; the callback (if any) comes back.
///
/// ```
/// use coreloop::IoLoop;
/// let h = IoLoop::new()?.handle(); // the loop is dropped at the end of the statement
/// let err = h.add_callback(|_| {}).unwrap_err();
/// assert!(err.into_callback().is_some());
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct LoopClosed(Option<RemoteCallback>);

/// A callback as sent to another thread's loop.
pub type RemoteCallback = Box<dyn FnOnce(&IoLoop) + Send>;

impl LoopClosed {
    /// The callback that was refused, if the call carried one.
    pub fn into_callback(self) -> Option<RemoteCallback> {
        self.0
    }
}

impl fmt::Debug for LoopClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoopClosed")
    }
}

impl fmt::Display for LoopClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the event loop has been closed")
    }
}

impl std::error::Error for LoopClosed {}
