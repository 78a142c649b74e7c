//! async/await on the loop: tasks beside the callbacks, sharing the loop's run queue,
//! timers and I/O.
//!
//! A task is a future the loop polls. [`IoLoop::spawn`] (or [`spawn`] for the loop
//! running on this thread) starts one on this loop; the future need not be `Send`, since
//! it never leaves the loop's thread. [`LoopHandle::spawn`] starts one on another loop
//! from any thread, from a `Send` closure that makes the future there. Either returns a
//! [`JoinHandle`], a future of the task's outcome that any loop or thread may await
//! ([`block_on`] on a plain thread). Dropping the handle cancels the task (its future is
//! dropped on its loop without being polled again); [`JoinHandle::detach`] lets it run
//! on its own. A panic in a task is caught, logged once, and comes out of the handle as
//! [`JoinError::Panicked`]; the loop goes on.
//!
//! Task polls and callbacks share one FIFO run queue and the loop's per-iteration
//! budget. The task cell and waker are `async-task`'s (the crate smol builds on); the
//! loop's side (where a woken task goes) is `reactor/tasks.rs`.
//!
//! Files: `time.rs` (sleep, timeout, interval on the loop's timer heap), `block_on.rs`
//! (waiting for a future on a plain thread). Awaiting work on other cores is awaiting
//! a [`Call`](crate::Call) (`reactor/calls.rs`).

mod block_on;
mod time;

pub use block_on::block_on;
pub use time::{interval, sleep, sleep_until, timeout, Elapsed, Interval, Sleep};

use crate::reactor::{panic_message, IoLoop, LoopHandle};
pub(crate) use crate::reactor::{Runnable, TaskMeta};
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe, Location};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// Why a task gave no value.
///
/// ```
/// use coreloop::JoinError;
/// assert_eq!(JoinError::Cancelled.to_string(), "the task was cancelled");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinError {
    /// The task panicked (its loop logged it and went on); the panic's message.
    Panicked(String),
    /// The task was cancelled, or its loop closed, before it finished.
    Cancelled,
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked(m) => write!(f, "the task panicked: {m}"),
            JoinError::Cancelled => f.write_str("the task was cancelled"),
        }
    }
}

impl std::error::Error for JoinError {}

/// The outcome of a task: a future that any loop or thread may await. Dropping it
/// cancels the task; [`detach`](Self::detach) lets the task run on without it.
///
/// ```
/// use coreloop::IoLoop;
/// let lp = IoLoop::new()?;
/// let out = lp.run_until_complete(async {
///     let lp = IoLoop::current().unwrap();
///     let a = lp.spawn(async { 6 });
///     let b = lp.spawn(async { 7 });
///     a.await.unwrap() * b.await.unwrap()
/// })?;
/// assert_eq!(out, 42);
/// # Ok::<(), std::io::Error>(())
/// ```
#[must_use = "dropping a JoinHandle cancels its task; call detach() to let it run"]
pub struct JoinHandle<T> {
    inner: Join<T>,
}

enum Join<T> {
    /// A task of the loop that spawned it: async-task's own handle.
    Local(async_task::FallibleTask<Result<T, JoinError>, TaskMeta>),
    /// A task started on another loop.
    Remote(Arc<Remote<T>>),
    /// Detached, or its outcome taken.
    Gone,
}

impl<T> JoinHandle<T> {
    /// Lets the task run on its own: its outcome is dropped when it finishes.
    pub fn detach(mut self) {
        match std::mem::replace(&mut self.inner, Join::Gone) {
            Join::Local(t) => t.detach(),
            Join::Remote(r) => r.detach(),
            Join::Gone => {}
        }
    }

    /// Cancels the task (the same as dropping the handle): it is not polled again, and
    /// its future is dropped on its loop.
    pub fn cancel(self) {
        drop(self);
    }

    /// True once the task has finished (or been cancelled).
    pub fn is_finished(&self) -> bool {
        match &self.inner {
            Join::Local(t) => t.is_finished(),
            Join::Remote(r) => r.lock().outcome.is_some() || r.lock().ended,
            Join::Gone => true,
        }
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let out = match &mut self.inner {
            Join::Local(t) => match Pin::new(t).poll(cx) {
                Poll::Ready(Some(r)) => r,
                Poll::Ready(None) => Err(JoinError::Cancelled),
                Poll::Pending => return Poll::Pending,
            },
            Join::Remote(r) => match r.poll(cx) {
                Poll::Ready(o) => o,
                Poll::Pending => return Poll::Pending,
            },
            Join::Gone => Err(JoinError::Cancelled),
        };
        self.inner = Join::Gone;
        Poll::Ready(out)
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if let Join::Remote(r) = &self.inner {
            r.cancel();
        }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Wraps a task's future: keeps the task recorded on its loop until it ends either way,
/// and catches a panic (see [`catching`]).
async fn guarded<F: Future>(
    fut: F,
    at: &'static Location<'static>,
    live: LiveTask,
) -> Result<F::Output, JoinError> {
    let _live = live;
    catching(fut, at).await
}

/// `fut`'s output, or the message of a panic in one of its polls (logged once, with
/// where the task was spawned).
async fn catching<F: Future>(
    fut: F,
    at: &'static Location<'static>,
) -> Result<F::Output, JoinError> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(
        move |cx| match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(p) => {
                let msg = panic_message(&*p).to_string();
                log::error!("coreloop: task spawned at {at} panicked: {msg}");
                Poll::Ready(Err(JoinError::Panicked(msg)))
            }
        },
    )
    .await
}

/// A task's entry in its loop's list of live tasks, removed when the task's future is
/// dropped (it finished, was cancelled, or its loop is closing).
struct LiveTask {
    lp: crate::reactor::WeakLoop,
    key: crate::reactor::TaskKey,
}

impl Drop for LiveTask {
    fn drop(&mut self) {
        if let Some(lp) = self.lp.upgrade() {
            lp.task_ended(self.key);
        }
    }
}

impl IoLoop {
    /// Spawns `fut` as a task on this loop and returns its [`JoinHandle`]. The future
    /// need not be `Send`: it is polled and dropped on this loop's thread only. It first
    /// runs in a later step of the loop (never inside `spawn`), in FIFO order with the
    /// loop's callbacks.
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// use std::rc::Rc;
    /// let lp = IoLoop::new()?;
    /// let shared = Rc::new(5); // not Send: fine for a task of this loop
    /// let s = shared.clone();
    /// let task = lp.spawn(async move { *s + 1 });
    /// assert_eq!(lp.run_until_complete(task)?.unwrap(), 6);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[track_caller]
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        JoinHandle {
            inner: Join::Local(self.spawn_task(fut, Location::caller())),
        }
    }

    fn spawn_task<F>(
        &self,
        fut: F,
        at: &'static Location<'static>,
    ) -> async_task::FallibleTask<Result<F::Output, JoinError>, TaskMeta>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let (runnable, task) = self.make_task(fut, at);
        runnable.schedule();
        task
    }

    /// A task for `fut`, recorded as alive on this loop, not yet scheduled.
    fn make_task<F>(
        &self,
        fut: F,
        at: &'static Location<'static>,
    ) -> (
        Runnable,
        async_task::FallibleTask<Result<F::Output, JoinError>, TaskMeta>,
    )
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let target = self.task_target();
        // The task's entry is made first (its waker filled in below), so that the
        // future knows its key.
        let key = self.next_task_key();
        let live = LiveTask {
            lp: self.downgrade(),
            key,
        };
        let (runnable, task) = async_task::Builder::new()
            .metadata(TaskMeta {
                spawned_at: at,
                name: std::any::type_name::<F>(),
            })
            .spawn_local(move |_| guarded(fut, at, live), move |r| target.schedule(r));
        self.task_started(key, runnable.waker());
        (runnable, task.fallible())
    }

    /// Runs this loop until `fut` completes and returns its output (Tornado's
    /// `IOLoop.run_sync`): `fut` is spawned as a task, the loop starts, and it stops once
    /// the task is done. An error if the loop cannot start (it is running already, or
    /// closed); a panic in `fut` is resumed here.
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// use std::time::Duration;
    /// let lp = IoLoop::new()?;
    /// let v = lp.run_until_complete(async {
    ///     coreloop::sleep(Duration::from_millis(5)).await;
    ///     "slept"
    /// })?;
    /// assert_eq!(v, "slept");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[track_caller]
    pub fn run_until_complete<F>(&self, fut: F) -> std::io::Result<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let out = Rc::new(std::cell::RefCell::new(None));
        let o = out.clone();
        let stop = StopWhenDone(self.downgrade());
        let task = self.spawn(async move {
            // Dropped with the future, however it ends (a panic included).
            let _stop = stop;
            let v = fut.await;
            *o.borrow_mut() = Some(v);
        });
        let started = self.start();
        let result = task_outcome(task);
        started?;
        let value = out.borrow_mut().take();
        match (value, result) {
            (Some(v), _) => Ok(v),
            (None, Some(JoinError::Panicked(m))) => std::panic::panic_any(m),
            (None, _) => Err(std::io::Error::other(
                "the loop stopped before the future completed",
            )),
        }
    }
}

/// Stops a loop when dropped: `run_until_complete`'s future is done, one way or another.
struct StopWhenDone(crate::reactor::WeakLoop);

impl Drop for StopWhenDone {
    fn drop(&mut self) {
        if let Some(lp) = self.0.upgrade() {
            lp.stop();
        }
    }
}

/// The error a finished (or dropped) task's handle holds, without blocking.
fn task_outcome<T>(task: JoinHandle<T>) -> Option<JoinError> {
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    let mut task = std::pin::pin!(task);
    match task.as_mut().poll(&mut cx) {
        Poll::Ready(Err(e)) => Some(e),
        _ => None,
    }
}

/// Spawns `fut` on the loop running on this thread (see [`IoLoop::spawn`]).
///
/// # Panics
/// If no loop is running on this thread (outside a loop's callbacks and tasks): use
/// [`IoLoop::spawn`] with the loop, or [`LoopHandle::spawn`] from another thread.
///
/// ```
/// use coreloop::IoLoop;
/// let lp = IoLoop::new()?;
/// let v = lp.run_until_complete(async {
///     coreloop::spawn(async { 2 + 2 }).await.unwrap()
/// })?;
/// assert_eq!(v, 4);
/// # Ok::<(), std::io::Error>(())
/// ```
#[track_caller]
pub fn spawn<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    match IoLoop::current() {
        Some(lp) => lp.spawn(fut),
        None => {
            panic!("coreloop::spawn outside a running loop: use IoLoop::spawn or LoopHandle::spawn")
        }
    }
}

impl LoopHandle {
    /// Spawns a task on this handle's loop, from any thread: `make` is sent there, runs
    /// there, and makes the future (which need not be `Send`: it never leaves that loop).
    /// The returned handle may be awaited anywhere; dropping it cancels the task. If the
    /// loop is closed, the handle says [`JoinError::Cancelled`].
    ///
    /// ```
    /// use coreloop::{Cores, Runtime};
    /// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
    /// let task = rt.handle(1).spawn(|| async {
    ///     let lp = coreloop::IoLoop::current().unwrap();
    ///     let here = std::rc::Rc::new(lp.shard_id()); // not Send, and fine
    ///     *here
    /// });
    /// assert_eq!(coreloop::block_on(task), Ok(1));
    /// rt.shutdown().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[track_caller]
    pub fn spawn<M, F>(&self, make: M) -> JoinHandle<F::Output>
    where
        M: FnOnce() -> F + Send + 'static,
        F: Future + 'static,
        F::Output: Send + 'static,
    {
        let at = Location::caller();
        let remote = Arc::new(Remote::new());
        let r = remote.clone();
        let sent = self.add_callback(move |lp| {
            if r.lock().ended {
                return; // cancelled before it started
            }
            let finish = Finish(r.clone());
            let slot = Rc::new(std::cell::Cell::new(None));
            let own = slot.clone();
            let task = lp.spawn_task(
                async move {
                    let outcome = catching(async move { make().await }, at).await;
                    finish.done(outcome);
                    // Its handle, kept below for cancelling, goes once it is done.
                    if let (Some(key), Some(lp)) = (own.get(), IoLoop::current()) {
                        lp.add_callback(move |lp| {
                            let t = lp.local::<RemoteTasks>().0.borrow_mut().try_remove(key);
                            drop(t);
                        });
                    }
                },
                at,
            );
            let tasks = lp.local::<RemoteTasks>();
            let key = tasks.0.borrow_mut().insert(task);
            slot.set(Some(key));
            let me = lp.handle();
            let mut st = r.lock();
            if st.ended {
                // Cancelled meanwhile (from another thread): drop it now.
                drop(st);
                let t = tasks.0.borrow_mut().try_remove(key);
                drop(t);
            } else {
                st.cancel = Some((me, key));
            }
        });
        if sent.is_err() {
            remote.end(None);
        }
        JoinHandle {
            inner: Join::Remote(remote),
        }
    }
}

/// The handles of tasks started here from other loops, for cancelling them.
#[derive(Default)]
struct RemoteTasks(
    std::cell::RefCell<slab::Slab<async_task::FallibleTask<Result<(), JoinError>, TaskMeta>>>,
);

/// The outcome of a task on another loop, shared by the task and its handle.
struct Remote<T> {
    st: Mutex<RemoteState<T>>,
}

struct RemoteState<T> {
    outcome: Option<Result<T, JoinError>>,
    waker: Option<Waker>,
    /// The task ended (with an outcome, cancelled, or its loop closed), or its handle
    /// went away (cancelled or detached).
    ended: bool,
    detached: bool,
    /// Where the task's handle is kept: its loop and key.
    cancel: Option<(LoopHandle, usize)>,
}

impl<T> Remote<T> {
    fn new() -> Remote<T> {
        Remote {
            st: Mutex::new(RemoteState {
                outcome: None,
                waker: None,
                ended: false,
                detached: false,
                cancel: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RemoteState<T>> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The task ended: with its outcome, or (`None`) without one.
    fn end(&self, outcome: Option<Result<T, JoinError>>) {
        let waker = {
            let mut st = self.lock();
            if st.outcome.is_none() && !st.ended {
                st.outcome = Some(outcome.unwrap_or(Err(JoinError::Cancelled)));
            }
            st.ended = true;
            st.cancel = None;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<Result<T, JoinError>> {
        let mut st = self.lock();
        match st.outcome.take() {
            Some(o) => Poll::Ready(o),
            None if st.ended => Poll::Ready(Err(JoinError::Cancelled)),
            None => {
                st.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn detach(&self) {
        self.lock().detached = true;
    }

    /// The handle went away: unless detached or done, the task is cancelled on its loop.
    fn cancel(&self) {
        let target = {
            let mut st = self.lock();
            if st.detached || st.ended {
                return;
            }
            st.ended = true;
            st.cancel.take()
        };
        if let Some((h, key)) = target {
            let _ = h.add_callback(move |lp| {
                let t = lp.local::<RemoteTasks>().0.borrow_mut().try_remove(key);
                drop(t); // cancels the task: its future is dropped on this loop
            });
        }
    }
}

/// The remote task's side: reports its outcome; dropped without one (cancelled, or its
/// loop closing), it reports that.
struct Finish<T>(Arc<Remote<T>>);

impl<T> Finish<T> {
    fn done(self, outcome: Result<T, JoinError>) {
        self.0.end(Some(outcome));
    }
}

impl<T> Drop for Finish<T> {
    fn drop(&mut self) {
        self.0.end(None);
    }
}
