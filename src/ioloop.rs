//! `IoLoop`: Tornado's IOLoop, one per thread.
//!
//! # One iteration
//!
//! 1. Stop if asked to.
//! 2. Move callbacks sent from other threads (at most [`REMOTE_BATCH`]) into the queue.
//! 3. Run the callbacks that are queued now; one added meanwhile runs next iteration
//!    (Tornado's rule: a busy producer cannot starve I/O or timers).
//! 4. Fire every timer due now that was added before this step, earliest first, equal
//!    deadlines in the order they were added. A timer cancelled by an earlier one does not
//!    run.
//! 5. Flush the stream writes made so far (one send per stream, however many writes).
//! 6. Wait for I/O: not at all if callbacks are pending, else until the next deadline,
//!    else until woken; then dispatch readiness to handlers and completions to their
//!    owners (io_uring), flushing each one's writes right after it.
//!
//! User code is never called while loop state is borrowed: due timers, ready events and
//! handlers are taken out, the borrow is released, then they run, so any callback may
//! call any method of the loop re-entrantly. A panic in user code is caught and logged
//! with where the callback was added, and the loop goes on; a handler that panicked is
//! removed, since calling it again on a level-triggered fd would panic in a loop.

use crate::buffer::BufferPool;
use crate::handle::{LoopClosed, LoopHandle, Remote, Shared};
use crate::poller::uring::Uring;
use crate::poller::{Backend, Completion, Event, Interest, Poller, Ready, Sink, Waker};
use crate::timer::{TimeoutId, TimerQueue};
use crossbeam_channel::{Receiver, TryRecvError};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe, Location};
use std::rc::Rc;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Remote callbacks moved into the local queue per iteration at most, so a flood from
/// other threads cannot starve I/O and timers.
pub const REMOTE_BATCH: usize = 4096;

type Callback = Box<dyn FnOnce(&IoLoop)>;
type Handler = Box<dyn FnMut(&IoLoop, RawFd, Ready)>;

/// A callback and where it was added, for the panic log.
struct Queued {
    f: Callback,
    at: &'static Location<'static>,
}

struct HandlerEntry {
    interest: Interest,
    /// `None` while the handler runs (it is taken out so that it can touch the loop).
    handler: Option<Handler>,
    at: &'static Location<'static>,
}

/// Per-fd slot; the generation outlives removals so that a token names one registration.
#[derive(Default)]
struct FdSlot {
    generation: u32,
    entry: Option<HandlerEntry>,
}

const GEN_MASK: u32 = 0xff_ffff;

fn token(fd: RawFd, generation: u32) -> u64 {
    (u64::from(generation & GEN_MASK) << 32) | u64::from(fd as u32)
}

struct Inner {
    poller: RefCell<Poller>,
    handlers: RefCell<Vec<FdSlot>>,
    timers: RefCell<TimerQueue<Queued>>,
    callbacks: RefCell<VecDeque<Queued>>,
    /// `None` once the loop is closed.
    remote: RefCell<Option<Receiver<Remote>>>,
    handle: LoopHandle,
    running: Cell<bool>,
    now: Cell<Instant>,
    shard: Cell<(usize, usize)>,
    /// Every shard's handle, by shard id: filled by the Runtime once all loops exist.
    peers: RefCell<Option<Peers>>,
    events: RefCell<Vec<Event>>,
    completions: RefCell<Vec<(Sink, Completion)>>,
    pool: RefCell<BufferPool>,
    /// Open streams and acceptors: kept alive while open (as Tornado's loop keeps an
    /// IOStream alive through its handler), closed by `close()`.
    resources: RefCell<slab::Slab<Rc<dyn Resource>>>,
    /// `submit_to` continuations waiting for their answer from another loop.
    continuations: RefCell<slab::Slab<Continuation>>,
    /// Streams with writes to flush before the loop waits again.
    flushes: RefCell<Vec<Rc<dyn Flush>>>,
    /// Per-loop values by type (`IoLoop::local`).
    locals: RefCell<std::collections::HashMap<std::any::TypeId, Rc<dyn Any>>>,
}

type Continuation = Box<dyn FnOnce(&IoLoop, Box<dyn Any + Send>)>;

/// Something with output to flush once the current step of the loop is over (so that
/// the writes of one step go out in one syscall).
pub(crate) trait Flush {
    fn flush(self: Rc<Self>, lp: &IoLoop);
}

/// Something a loop keeps alive while it is open and closes when the loop closes.
pub(crate) trait Resource {
    /// Closes it; it untracks itself.
    fn close_resource(&self, lp: &IoLoop);
}

thread_local! {
    static CURRENT: RefCell<Option<IoLoop>> = const { RefCell::new(None) };
}

/// An event loop: fd handlers, a timer heap and a callback queue, run by one thread.
///
/// `IoLoop` is a cheap reference-counted pointer (cloning it does not make a new loop)
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

/// The handles of every shard of a runtime, shared by its loops; set once, before
/// `Runtime::build` returns.
pub(crate) type Peers = Arc<std::sync::OnceLock<Vec<LoopHandle>>>;

/// A non-owning reference to a loop, for objects the loop's own handlers keep alive
/// (holding an `IoLoop` there would make a reference cycle).
#[derive(Clone)]
pub(crate) struct WeakLoop(std::rc::Weak<Inner>);

impl WeakLoop {
    /// A reference to no loop.
    pub(crate) fn dangling() -> WeakLoop {
        WeakLoop(std::rc::Weak::new())
    }

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
            shared: Arc::new(Shared::new(waker)),
        };
        Ok(IoLoop {
            inner: Rc::new(Inner {
                poller: RefCell::new(poller),
                handlers: RefCell::new(Vec::new()),
                timers: RefCell::new(TimerQueue::default()),
                callbacks: RefCell::new(VecDeque::new()),
                remote: RefCell::new(Some(rx)),
                handle,
                running: Cell::new(false),
                now: Cell::new(Instant::now()),
                shard: Cell::new((0, 1)),
                peers: RefCell::new(None),
                events: RefCell::new(Vec::with_capacity(1024)),
                completions: RefCell::new(Vec::with_capacity(1024)),
                pool: RefCell::new(BufferPool::default()),
                resources: RefCell::new(slab::Slab::new()),
                continuations: RefCell::new(slab::Slab::new()),
                flushes: RefCell::new(Vec::new()),
                locals: RefCell::new(std::collections::HashMap::new()),
            }),
        })
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
        CURRENT.with(|c| c.borrow().clone())
    }

    /// The backend this loop runs on (never `Auto`).
    pub fn backend(&self) -> Backend {
        self.inner.poller.borrow().backend()
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

    /// A handle other threads can use to send callbacks to this loop or stop it.
    pub fn handle(&self) -> LoopHandle {
        self.inner.handle.clone()
    }

    /// This loop's shard id in its [`Runtime`](crate::Runtime) (0 for a loop made alone).
    pub fn shard_id(&self) -> usize {
        self.inner.shard.get().0
    }

    /// How many loops its [`Runtime`](crate::Runtime) runs (1 for a loop made alone).
    pub fn shard_count(&self) -> usize {
        self.inner.shard.get().1
    }

    pub(crate) fn set_shard(&self, id: usize, count: usize) {
        self.inner.shard.set((id, count));
    }

    pub(crate) fn set_peers(&self, peers: Peers) {
        *self.inner.peers.borrow_mut() = Some(peers);
    }

    /// The handle of shard `id` of this loop's [`Runtime`](crate::Runtime), to send it
    /// work (see [`submit_to`](Self::submit_to)). Known once the runtime is built: not
    /// yet inside `on_start` setup closures. `None` for a loop made alone.
    ///
    /// ```
    /// use coreloop::{Cores, Runtime};
    /// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
    /// let ok = rt.invoke_on_all(|lp| {
    ///     let next = (lp.shard_id() + 1) % lp.shard_count();
    ///     lp.shard_handle(next).is_some()
    /// }).unwrap();
    /// assert_eq!(ok, vec![true, true]);
    /// rt.shutdown().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn shard_handle(&self, id: usize) -> Option<LoopHandle> {
        self.inner.peers.borrow().as_ref()?.get()?.get(id).cloned()
    }

    pub(crate) fn id(&self) -> u64 {
        self.inner.handle.shared.id
    }

    /// The loop's cached monotonic time: refreshed at the start of each iteration and
    /// after each wait for I/O. Cheaper than `Instant::now()`, and the same for all the
    /// callbacks of one step.
    pub fn time(&self) -> Instant {
        self.inner.now.get()
    }

    /// True while `start()` is running.
    pub fn is_running(&self) -> bool {
        self.inner.running.get()
    }

    // ---------------------------------------------------------------- handlers

    /// Calls `handler` whenever `fd` is ready for what `interest` asks (level-triggered:
    /// again on every iteration while it stays ready), or has an error or hang-up.
    ///
    /// The loop does not own `fd`: remove the handler before closing it. Adding a second
    /// handler for an fd that has one is an `AlreadyExists` error. A handler that panics
    /// is removed (and the panic logged).
    ///
    /// ```
    /// use coreloop::{Interest, IoLoop};
    /// use std::io::{Read, Write};
    /// use std::os::fd::AsRawFd;
    /// use std::os::unix::net::UnixStream;
    ///
    /// let lp = IoLoop::new()?;
    /// let (mut a, mut b) = UnixStream::pair()?;
    /// b.set_nonblocking(true)?;
    /// a.write_all(b"ping")?;
    /// lp.add_handler(b.as_raw_fd(), Interest::READABLE, move |lp, fd, ready| {
    ///     assert!(ready.is_readable());
    ///     let mut buf = [0u8; 4];
    ///     b.read_exact(&mut buf).unwrap();
    ///     assert_eq!(&buf, b"ping");
    ///     lp.remove_handler(fd);
    ///     lp.stop();
    /// })?;
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[track_caller]
    pub fn add_handler<F>(&self, fd: RawFd, interest: Interest, handler: F) -> io::Result<()>
    where
        F: FnMut(&IoLoop, RawFd, Ready) + 'static,
    {
        let at = Location::caller();
        let idx = usize::try_from(fd)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "negative fd"))?;
        let mut hs = self.inner.handlers.borrow_mut();
        let old_generation = match hs.get(idx) {
            Some(FdSlot { entry: Some(_), .. }) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("fd {fd} already has a handler"),
                ));
            }
            Some(slot) => slot.generation,
            None => 0,
        };
        let generation = old_generation.wrapping_add(1) & GEN_MASK;
        // The poller refuses an fd that is not open before the table grows for it, so a
        // bogus fd number costs no memory.
        self.inner
            .poller
            .borrow_mut()
            .register(fd, token(fd, generation), interest)?;
        if hs.len() <= idx {
            hs.resize_with(idx + 1, FdSlot::default);
        }
        let slot = &mut hs[idx];
        slot.generation = generation;
        slot.entry = Some(HandlerEntry {
            interest,
            handler: Some(Box::new(handler)),
            at,
        });
        Ok(())
    }

    /// Changes what the handler of `fd` is called for. `NotFound` if `fd` has no handler;
    /// asking for the interest it already has costs nothing.
    ///
    /// ```
    /// use coreloop::{Interest, IoLoop};
    /// use std::os::fd::AsRawFd;
    /// use std::os::unix::net::UnixStream;
    /// let lp = IoLoop::new()?;
    /// let (a, _b) = UnixStream::pair()?;
    /// lp.add_handler(a.as_raw_fd(), Interest::READABLE, |_, _, _| {})?;
    /// lp.update_handler(a.as_raw_fd(), Interest::READABLE | Interest::WRITABLE)?;
    /// lp.remove_handler(a.as_raw_fd());
    /// assert!(lp.update_handler(a.as_raw_fd(), Interest::READABLE).is_err());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn update_handler(&self, fd: RawFd, interest: Interest) -> io::Result<()> {
        let mut hs = self.inner.handlers.borrow_mut();
        let slot = usize::try_from(fd).ok().and_then(|i| hs.get_mut(i));
        let Some(FdSlot {
            generation,
            entry: Some(entry),
        }) = slot
        else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("fd {fd} has no handler"),
            ));
        };
        if entry.interest != interest {
            self.inner
                .poller
                .borrow_mut()
                .reregister(fd, token(fd, *generation), interest)?;
            entry.interest = interest;
        }
        Ok(())
    }

    /// Stops calling the handler of `fd`; a no-op if it has none. Safe to call from any
    /// handler, including the one being removed; a removed fd is not dispatched again,
    /// not even for an event already collected in this iteration.
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// let lp = IoLoop::new()?;
    /// lp.remove_handler(12345); // unknown fd: nothing happens
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn remove_handler(&self, fd: RawFd) {
        let removed = {
            let mut hs = self.inner.handlers.borrow_mut();
            let Some(entry) = usize::try_from(fd)
                .ok()
                .and_then(|i| hs.get_mut(i))
                .and_then(|s| s.entry.take())
            else {
                return;
            };
            if let Err(e) = self.inner.poller.borrow_mut().deregister(fd) {
                log::warn!("coreloop: removing fd {fd} from the poller: {e}");
            }
            entry
        };
        // The handler (and what it owns) is dropped with no loop state borrowed.
        drop(removed);
    }

    // ---------------------------------------------------------------- timers

    /// Runs `f` at `deadline` (never earlier), in the iteration after it passes.
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// use std::time::{Duration, Instant};
    /// let lp = IoLoop::new()?;
    /// let t0 = Instant::now();
    /// lp.add_timeout(t0 + Duration::from_millis(5), move |lp| {
    ///     assert!(Instant::now() >= t0 + Duration::from_millis(5));
    ///     lp.stop();
    /// });
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[track_caller]
    pub fn add_timeout<F>(&self, deadline: Instant, f: F) -> TimeoutId
    where
        F: FnOnce(&IoLoop) + 'static,
    {
        let q = Queued {
            f: Box::new(f),
            at: Location::caller(),
        };
        self.inner.timers.borrow_mut().insert(deadline, q)
    }

    /// The same as [`add_timeout`](Self::add_timeout) (Tornado's `call_at`).
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// use std::time::{Duration, Instant};
    /// let lp = IoLoop::new()?;
    /// lp.call_at(Instant::now() + Duration::from_millis(1), |lp| lp.stop());
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[track_caller]
    pub fn call_at<F>(&self, deadline: Instant, f: F) -> TimeoutId
    where
        F: FnOnce(&IoLoop) + 'static,
    {
        self.add_timeout(deadline, f)
    }

    /// Runs `f` once `delay` has passed from now (measured now, not from the cached
    /// [`time`](Self::time), so it never fires early).
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// use std::time::Duration;
    /// let lp = IoLoop::new()?;
    /// lp.call_later(Duration::from_millis(1), |lp| lp.stop());
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[track_caller]
    pub fn call_later<F>(&self, delay: Duration, f: F) -> TimeoutId
    where
        F: FnOnce(&IoLoop) + 'static,
    {
        let deadline = Instant::now().checked_add(delay).unwrap_or_else(far_future);
        self.add_timeout(deadline, f)
    }

    /// Cancels a timer. A no-op if it already fired, was cancelled, or `id` is unknown; an
    /// old id never cancels a newer timer. Returns whether a pending timer was cancelled.
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// use std::time::Duration;
    /// let lp = IoLoop::new()?;
    /// let id = lp.call_later(Duration::from_secs(1), |_| panic!("cancelled"));
    /// assert!(lp.remove_timeout(id));
    /// assert!(!lp.remove_timeout(id));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn remove_timeout(&self, id: TimeoutId) -> bool {
        let cancelled = self.inner.timers.borrow_mut().cancel(id);
        // The callback is dropped with no loop state borrowed.
        cancelled.is_some()
    }

    /// Timers that will still fire.
    pub fn pending_timers(&self) -> usize {
        self.inner.timers.borrow().len()
    }

    /// Entries in the timer heap, cancelled ones not yet dropped included (lazy
    /// cancellation; the heap is compacted when more than half of it is cancelled).
    pub fn timer_heap_len(&self) -> usize {
        self.inner.timers.borrow().heap_len()
    }

    // ---------------------------------------------------------------- callbacks

    /// Runs `f` on this loop in its next iteration. On the loop's own thread this is a
    /// queue push: no lock, no atomic, no syscall. From other threads use
    /// [`LoopHandle::add_callback`].
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// let lp = IoLoop::new()?;
    /// lp.add_callback(|lp| lp.add_callback(|lp| lp.stop()));
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[track_caller]
    pub fn add_callback<F>(&self, f: F)
    where
        F: FnOnce(&IoLoop) + 'static,
    {
        self.inner.callbacks.borrow_mut().push_back(Queued {
            f: Box::new(f),
            at: Location::caller(),
        });
    }

    /// Runs `f` on the loop behind `target`, then `then` with its answer back on this
    /// loop (Seastar's `submit_to`). Neither loop blocks; this is how shards ask each
    /// other for things. Only `f` and its answer cross threads: `then` stays here, so it
    /// may hold this loop's state (an unfinished HTTP response, say). Fails if `target`'s
    /// loop is closed; if `f` panics or `target` closes before running it, `then` is
    /// dropped when this loop closes.
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// use std::rc::Rc;
    /// let a = IoLoop::new()?;
    /// std::thread::scope(|s| -> std::io::Result<()> {
    ///     let (tx, rx) = std::sync::mpsc::channel();
    ///     s.spawn(move || {
    ///         let b = IoLoop::new().unwrap();
    ///         tx.send(b.handle()).unwrap();
    ///         b.start().unwrap();
    ///     });
    ///     let b = rx.recv().unwrap();
    ///     let local = Rc::new("not Send"); // `then` may keep loop-local values
    ///     let b2 = b.clone();
    ///     a.submit_to(&b, |_b| 6 * 7, move |a, answer| {
    ///         assert_eq!((answer, *local), (42, "not Send"));
    ///         b2.stop().unwrap();
    ///         a.stop();
    ///     }).unwrap();
    ///     a.start()
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[track_caller]
    pub fn submit_to<T, F, G>(&self, target: &LoopHandle, f: F, then: G) -> Result<(), LoopClosed>
    where
        T: Send + 'static,
        F: FnOnce(&IoLoop) -> T + Send + 'static,
        G: FnOnce(&IoLoop, T) + 'static,
    {
        let key = self.inner.continuations.borrow_mut().insert(Box::new(
            move |lp, answer: Box<dyn Any + Send>| match answer.downcast::<T>() {
                Ok(v) => then(lp, *v),
                Err(_) => unreachable!("a submit_to answer has the type its sender made"),
            },
        ));
        let back = self.handle();
        let sent = target.add_callback(move |remote| {
            let answer: Box<dyn Any + Send> = Box::new(f(remote));
            let r = back.add_callback(move |lp| {
                let k = lp.inner.continuations.borrow_mut().try_remove(key);
                if let Some(k) = k {
                    k(lp, answer);
                }
            });
            if r.is_err() {
                log::debug!("coreloop: submit_to answer dropped: the asking loop is closed");
            }
        });
        if sent.is_err() {
            let k = self.inner.continuations.borrow_mut().try_remove(key);
            drop(k);
        }
        sent
    }

    // ---------------------------------------------------------------- running

    /// Runs the loop until [`stop`](Self::stop) is called.
    ///
    /// Returns an error at once if a loop is already running on this thread (starting a
    /// loop from inside a callback would block the outer one forever), or if the loop has
    /// been closed; and the poller's error if waiting for I/O fails. If `stop()` was called
    /// while the loop was not running, returns at once.
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// let lp = IoLoop::new()?;
    /// lp.add_callback(|lp| {
    ///     assert!(lp.start().is_err()); // not a deadlock
    ///     lp.stop();
    /// });
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn start(&self) -> io::Result<()> {
        if self.inner.running.get() || CURRENT.with(|c| c.borrow().is_some()) {
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                "an IoLoop is already running on this thread",
            ));
        }
        if self.inner.remote.borrow().is_none() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the IoLoop has been closed",
            ));
        }
        let _running = RunningGuard::enter(self);
        let shared = &self.inner.handle.shared;
        loop {
            if shared.stop.load(Ordering::Relaxed) && shared.stop.swap(false, Ordering::AcqRel) {
                return Ok(());
            }
            self.iterate()?;
        }
    }

    /// Makes [`start`](Self::start) return after the iteration in progress; if the loop
    /// is not running, its next `start()` returns at once. Any thread can do the same
    /// through [`LoopHandle::stop`].
    pub fn stop(&self) {
        self.inner.handle.shared.stop.store(true, Ordering::Release);
    }

    /// Closes the loop: drops every handler, timer and queued callback, and makes every
    /// [`LoopHandle`] return [`LoopClosed`](crate::LoopClosed) from now on. A running loop
    /// stops after the iteration in progress. The fds of handlers are not closed (the loop
    /// never owned them). Dropping the last `IoLoop` clone does the same.
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// let lp = IoLoop::new()?;
    /// let h = lp.handle();
    /// lp.close();
    /// assert!(h.is_closed() && lp.start().is_err());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn close(&self) {
        let shared = &self.inner.handle.shared;
        shared.closed.store(true, Ordering::Release);
        shared.stop.store(true, Ordering::Release);
        // Open streams and acceptors first: closing them removes their handlers and ops.
        let open: Vec<_> = self.inner.resources.borrow_mut().drain().collect();
        for r in &open {
            r.close_resource(self);
        }
        drop(open);
        // Take everything out first, then drop it with nothing borrowed: destructors of
        // user closures may call back into the loop.
        let rx = self.inner.remote.borrow_mut().take();
        let handlers = std::mem::take(&mut *self.inner.handlers.borrow_mut());
        for (fd, slot) in handlers.iter().enumerate() {
            if slot.entry.is_some() {
                let _ = self.inner.poller.borrow_mut().deregister(fd as RawFd);
            }
        }
        let callbacks = std::mem::take(&mut *self.inner.callbacks.borrow_mut());
        let timers = std::mem::take(&mut *self.inner.timers.borrow_mut());
        let continuations = std::mem::take(&mut *self.inner.continuations.borrow_mut());
        let flushes = std::mem::take(&mut *self.inner.flushes.borrow_mut());
        let locals = std::mem::take(&mut *self.inner.locals.borrow_mut());
        drop((
            rx,
            handlers,
            callbacks,
            timers,
            continuations,
            flushes,
            locals,
        ));
    }

    /// One iteration; see the module docs for the steps.
    fn iterate(&self) -> io::Result<()> {
        let inner = &*self.inner;
        inner.now.set(Instant::now());

        // Callbacks from other threads join the local queue.
        let mut remote_pending = false;
        if let Some(rx) = inner.remote.borrow().as_ref() {
            let mut q = inner.callbacks.borrow_mut();
            for _ in 0..REMOTE_BATCH {
                match rx.try_recv() {
                    Ok(r) => q.push_back(Queued { f: r.f, at: r.at }),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            remote_pending = !rx.is_empty();
        }

        // The callbacks queued before this point; later ones wait for the next iteration.
        let n = inner.callbacks.borrow().len();
        for _ in 0..n {
            let Some(cb) = inner.callbacks.borrow_mut().pop_front() else {
                break;
            };
            self.run_guarded("callback", cb.at, || (cb.f)(self));
        }

        // Due timers, excluding those added by the timers themselves.
        let now = Instant::now();
        let limit = inner.timers.borrow().next_seq();
        loop {
            let due = inner.timers.borrow_mut().pop_due(now, limit);
            let Some(t) = due else { break };
            self.run_guarded("timer", t.at, || (t.f)(self));
        }

        // Writes made by callbacks and timers go out before the wait.
        self.run_flushes();

        // Wait for I/O.
        let shared = &inner.handle.shared;
        let mut timeout = if remote_pending || !inner.callbacks.borrow().is_empty() {
            Some(Duration::ZERO)
        } else {
            let next = inner.timers.borrow_mut().next_deadline();
            next.map(|d| d.saturating_duration_since(Instant::now()))
        };
        let may_sleep = timeout != Some(Duration::ZERO);
        if may_sleep {
            shared.needs_wake.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let remote_waiting = inner
                .remote
                .borrow()
                .as_ref()
                .is_some_and(|rx| !rx.is_empty());
            if remote_waiting || shared.stop.load(Ordering::SeqCst) {
                timeout = Some(Duration::ZERO);
            }
        }
        let mut events = std::mem::take(&mut *inner.events.borrow_mut());
        let mut completions = std::mem::take(&mut *inner.completions.borrow_mut());
        let polled = inner.poller.borrow_mut().poll(
            &mut events,
            &mut completions,
            &mut inner.pool.borrow_mut(),
            timeout,
        );
        if may_sleep {
            shared.needs_wake.store(false, Ordering::Relaxed);
        }
        inner.now.set(Instant::now());
        // The writes an event causes go out right after it (one send per stream for
        // however many responses it produced), not after the whole batch: an early
        // connection's answer does not wait for the rest of the batch.
        for ev in &events {
            self.dispatch(*ev);
            self.run_flushes();
        }
        events.clear();
        *inner.events.borrow_mut() = events;
        let here = Location::caller();
        for (sink, c) in completions.drain(..) {
            self.run_guarded("completion", here, || sink(self, c));
            self.run_flushes();
        }
        *inner.completions.borrow_mut() = completions;
        polled
    }

    fn dispatch(&self, ev: Event) {
        let fd = (ev.token & 0xffff_ffff) as u32 as RawFd;
        let generation = (ev.token >> 32) as u32;
        let taken = {
            let mut hs = self.inner.handlers.borrow_mut();
            let Some(slot) = hs.get_mut(fd as usize) else {
                return;
            };
            if slot.generation != generation {
                return; // removed (and maybe re-added) since the event was collected
            }
            let Some(entry) = slot.entry.as_mut() else {
                return;
            };
            let ready = ev.ready.intersect(entry.interest.mask());
            if ready.is_empty() {
                return;
            }
            entry.handler.take().map(|h| (h, ready, entry.at))
        };
        let Some((mut handler, ready, at)) = taken else {
            return;
        };
        let ok = self.run_guarded("handler", at, || handler(self, fd, ready));
        let (leftover, remove) = {
            let mut hs = self.inner.handlers.borrow_mut();
            match hs.get_mut(fd as usize) {
                // Still the registration we dispatched to: put the handler back, or, if
                // it panicked, remove it (calling it again on a level-triggered fd would
                // only panic again).
                Some(FdSlot {
                    generation: g,
                    entry: Some(entry),
                }) if *g == generation && entry.handler.is_none() => {
                    if ok {
                        entry.handler = Some(handler);
                        (None, false)
                    } else {
                        (Some(handler), true)
                    }
                }
                // It removed (or replaced) itself meanwhile; a newer registration on
                // the same fd is left alone.
                _ => (Some(handler), false),
            }
        };
        if remove {
            self.remove_handler(fd);
        }
        drop(leftover);
    }

    /// The io_uring backend, for completion ops; `None` on epoll. Never call user code
    /// inside `f`: the poller is borrowed.
    pub(crate) fn with_uring<R>(&self, f: impl FnOnce(&mut Uring) -> R) -> Option<R> {
        self.inner.poller.borrow_mut().uring().map(f)
    }

    /// Flushes `f` once the current step is over, before the loop waits for I/O.
    pub(crate) fn defer_flush(&self, f: Rc<dyn Flush>) {
        self.inner.flushes.borrow_mut().push(f);
    }

    fn run_flushes(&self) {
        if self.inner.flushes.borrow().is_empty() {
            return;
        }
        loop {
            let mut batch = {
                let mut list = self.inner.flushes.borrow_mut();
                if list.is_empty() {
                    return;
                }
                std::mem::take(&mut *list)
            };
            for f in batch.drain(..) {
                f.flush(self);
            }
            // The list's allocation is kept for the next step (unless flushing queued
            // more meanwhile): a fresh one per step was a malloc per keep-alive request.
            let mut list = self.inner.flushes.borrow_mut();
            if list.is_empty() {
                *list = batch;
            }
        }
    }

    /// This loop's value of type `T`, made with `T::default()` on first use: per-core
    /// state of a service (a cache shard, counters, a registry) without a global and
    /// without locks. Each loop has its own; other cores reach it by sending a callback.
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// use std::cell::Cell;
    /// #[derive(Default)]
    /// struct Hits(Cell<u64>);
    /// let lp = IoLoop::new()?;
    /// lp.local::<Hits>().0.set(1);
    /// assert_eq!(lp.local::<Hits>().0.get(), 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn local<T: Default + 'static>(&self) -> Rc<T> {
        let id = std::any::TypeId::of::<T>();
        let found = self.inner.locals.borrow().get(&id).cloned();
        let any = found.unwrap_or_else(|| {
            let v: Rc<dyn Any> = Rc::new(T::default());
            self.inner.locals.borrow_mut().insert(id, v.clone());
            v
        });
        match any.downcast::<T>() {
            Ok(v) => v,
            Err(_) => unreachable!("locals are keyed by their type"),
        }
    }

    /// Keeps `r` alive until [`untrack`](Self::untrack) or the loop closes.
    pub(crate) fn track(&self, r: Rc<dyn Resource>) -> usize {
        self.inner.resources.borrow_mut().insert(r)
    }

    /// Forgets a tracked resource (dropped with nothing borrowed).
    pub(crate) fn untrack(&self, key: usize) {
        let r = self.inner.resources.borrow_mut().try_remove(key);
        drop(r);
    }

    /// Open streams and acceptors on this loop.
    pub fn open_resources(&self) -> usize {
        self.inner.resources.borrow().len()
    }

    /// The loop's pool of read buffers.
    pub(crate) fn with_pool<R>(&self, f: impl FnOnce(&mut BufferPool) -> R) -> R {
        f(&mut self.inner.pool.borrow_mut())
    }

    /// Runs user code, catching and logging a panic. Returns false if it panicked.
    fn run_guarded(&self, what: &str, at: &Location<'_>, f: impl FnOnce()) -> bool {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(()) => true,
            Err(payload) => {
                log::error!(
                    "coreloop: exception in {what} added at {at}: {}",
                    panic_message(&*payload)
                );
                false
            }
        }
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

fn far_future() -> Instant {
    // About 30 years: later than any deadline a program means.
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

/// Marks the loop as running and current for the duration of `start()`, also when it
/// unwinds.
struct RunningGuard;

impl RunningGuard {
    fn enter(lp: &IoLoop) -> RunningGuard {
        lp.inner.running.set(true);
        CURRENT.with(|c| *c.borrow_mut() = Some(lp.clone()));
        RunningGuard
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        let lp = CURRENT.with(|c| c.borrow_mut().take());
        if let Some(lp) = lp {
            lp.inner.running.set(false);
        }
    }
}

impl Drop for IoLoop {
    fn drop(&mut self) {
        // The last clone: close, so that open streams (which the loop keeps alive) are
        // closed and release their fds, instead of outliving the loop.
        if Rc::strong_count(&self.inner) == 1 && !self.inner.resources.borrow().is_empty() {
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
            .field("shard", &self.inner.shard.get())
            .field("running", &self.inner.running.get())
            .finish()
    }
}
