//! Calls between loops that always answer, and one value to wait on them three ways.
//!
//! A [`Call`] is work sent to one loop (or to every shard) whose answer comes back:
//! awaited in a task (`.await`), handed to a continuation on the asking loop
//! ([`Call::then`]), or waited for on a plain thread ([`Call::wait`]). Seastar's
//! `submit_to` and `invoke_on`, under one name with three ways to wait.
//!
//! How "always" holds: the closure travels with a [`Reply`] that answers exactly once.
//! Running the closure answers with its value or its panic; a reply dropped unanswered
//! (the target loop closed and dropped its queue) answers [`CallError::Closed`] from its
//! destructor. An answer for a loop goes back through that loop's queue, so a
//! continuation runs there, never inside the call that asked; only if the asking loop
//! is closed too is there nobody left to tell.

use super::handle::LoopHandle;
use super::{panic_message, IoLoop};
use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// Why a call gave no value.
///
/// ```
/// use coreloop::CallError;
/// let e = CallError::Panicked("boom".into());
/// assert_eq!(e.to_string(), "the call panicked: boom");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The closure panicked on the target loop (which logged it and went on); the
    /// panic's message.
    Panicked(String),
    /// The target loop was closed: the closure did not run (or its answer could not be
    /// given).
    Closed,
    /// There is no shard with this id in the runtime.
    NoSuchShard(usize),
    /// A blocking [`Call::wait`] on a loop's thread: the loop would stop while it
    /// waited, and could be the one that has to answer. Await the call, or give it a
    /// continuation with [`Call::then`].
    WouldDeadlock,
    /// The work could not be queued: the queue it goes to is full (the blocking pool's
    /// threads are all busy and its queue is at its bound). Try again later, or answer
    /// the client that the service is overloaded.
    Full,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Panicked(m) => write!(f, "the call panicked: {m}"),
            CallError::Closed => f.write_str("the target loop is closed; the call did not run"),
            CallError::NoSuchShard(s) => write!(f, "no shard {s} in this runtime"),
            CallError::WouldDeadlock => f.write_str(
                "a loop's thread cannot block waiting for a call: await it or use then()",
            ),
            CallError::Full => f.write_str("the queue is full; the call did not run"),
        }
    }
}

impl std::error::Error for CallError {}

impl From<CallError> for std::io::Error {
    fn from(e: CallError) -> std::io::Error {
        let kind = match e {
            CallError::Closed => std::io::ErrorKind::NotConnected,
            CallError::WouldDeadlock => std::io::ErrorKind::Deadlock,
            CallError::NoSuchShard(_) => std::io::ErrorKind::InvalidInput,
            CallError::Full => std::io::ErrorKind::WouldBlock,
            CallError::Panicked(_) => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, e)
    }
}

/// A call's outcome, type-erased for the trip back to a loop's continuation.
type Answer = Result<Box<dyn Any + Send>, CallError>;

type Continuation = Box<dyn FnOnce(&IoLoop, Answer)>;

/// Continuations waiting for their answer from another loop.
#[derive(Default)]
pub(super) struct Calls {
    waiting: RefCell<slab::Slab<Continuation>>,
}

impl Calls {
    /// Takes every waiting continuation out (the loop is closing), for the caller to drop
    /// with nothing borrowed.
    pub(super) fn take_all(&self) -> slab::Slab<Continuation> {
        std::mem::take(&mut *self.waiting.borrow_mut())
    }
}

/// Where a call's outcome goes; answers exactly once (dropped unanswered, it answers
/// [`CallError::Closed`]). `Send`: it travels with the work and may be answered from
/// any thread, later than the work started (a drain answers when its connections have
/// closed).
pub(crate) struct Reply<T: Send + 'static> {
    to: Option<ReplyTo<T>>,
}

type ReplyFn<T> = Box<dyn FnOnce(Result<T, CallError>) + Send>;

enum ReplyTo<T> {
    /// A continuation waiting on a loop, by key.
    Loop { back: LoopHandle, key: usize },
    /// A thread blocked on a channel.
    Channel(crossbeam_channel::Sender<Result<T, CallError>>),
    /// Anything else (a future's slot, a part of a gather, a mapping), run where the
    /// answer is given.
    Fn(ReplyFn<T>),
}

impl<T: Send + 'static> Reply<T> {
    /// A reply that runs `f` with the outcome, on whichever thread answers.
    pub(crate) fn to_fn(f: impl FnOnce(Result<T, CallError>) + Send + 'static) -> Reply<T> {
        Reply {
            to: Some(ReplyTo::Fn(Box::new(f))),
        }
    }

    /// Runs `f` on `lp` (catching and logging a panic) and answers with the outcome.
    pub(crate) fn run(self, lp: &IoLoop, f: impl FnOnce(&IoLoop) -> T) {
        let outcome = catch_unwind(AssertUnwindSafe(|| f(lp))).map_err(|p| {
            let msg = panic_message(&*p).to_string();
            let thread = std::thread::current();
            let on = thread.name().unwrap_or("a loop");
            log::error!("coreloop: a call panicked on {on}: {msg}");
            CallError::Panicked(msg)
        });
        self.send(outcome);
    }

    /// Answers with `outcome`.
    pub(crate) fn send(mut self, outcome: Result<T, CallError>) {
        self.answer(outcome);
    }

    fn answer(&mut self, outcome: Result<T, CallError>) {
        match self.to.take() {
            Some(ReplyTo::Loop { back, key }) => {
                let answer: Answer = outcome.map(|v| Box::new(v) as Box<dyn Any + Send>);
                let sent = back.add_callback(move |lp| {
                    let k = lp.inner.calls.waiting.borrow_mut().try_remove(key);
                    if let Some(k) = k {
                        k(lp, answer);
                    }
                });
                if sent.is_err() {
                    log::debug!("coreloop: a call's answer dropped: the asking loop is closed");
                }
            }
            Some(ReplyTo::Channel(tx)) => {
                let _ = tx.send(outcome);
            }
            Some(ReplyTo::Fn(f)) => f(outcome),
            None => {}
        }
    }
}

impl<T: Send + 'static> Drop for Reply<T> {
    fn drop(&mut self) {
        if self.to.is_some() {
            self.answer(Err(CallError::Closed));
        }
    }
}

/// Sends `f` to `target` with `reply`; a closed target answers at once (by dropping
/// the refused callback, and with it the reply).
#[track_caller]
pub(crate) fn send_call<T, F>(target: &LoopHandle, reply: Reply<T>, f: F)
where
    T: Send + 'static,
    F: FnOnce(&IoLoop) -> T + Send + 'static,
{
    let _ = target.add_callback(move |remote| reply.run(remote, f));
}

type Start<T> = Box<dyn FnOnce(Reply<T>) + Send>;

/// Work sent elsewhere (another core, every core, the blocking pool) whose answer comes
/// back, waited for in one of three ways:
///
/// - `.await` in a task (or in [`block_on`](crate::block_on) on a plain thread);
/// - [`then`](Call::then): a continuation on the asking loop, in a later step;
/// - [`wait`](Call::wait): block a plain thread until the answer is there (refused on a
///   loop's thread: [`CallError::WouldDeadlock`]).
///
/// The answer is the work's value, or a [`CallError`] saying why there is none (it
/// panicked; the loop it was sent to is closed; ...): every call answers. A call is
/// lazy: nothing is sent until it is awaited, given a continuation or waited for, and
/// a call dropped before that does nothing. Dropping an awaited call before it resolves
/// does not stop the work (it may be running on the other core); its value is dropped.
///
/// ```
/// use coreloop::{Cores, Runtime};
/// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
///
/// // From a plain thread: block until the answer is there.
/// assert_eq!(rt.call_on(1, |lp| lp.shard_id() * 10).wait(), Ok(10));
///
/// // From a loop: a continuation back on the asking loop.
/// let (tx, rx) = std::sync::mpsc::channel();
/// rt.handle(0).add_callback(move |lp| {
///     let local = std::rc::Rc::new("not Send"); // a continuation may keep loop-local values
///     lp.call_on(1, |far| far.shard_id()).then(move |_, answer| {
///         tx.send((answer, *local)).unwrap();
///     });
/// }).unwrap();
/// assert_eq!(rx.recv().unwrap(), (Ok(1), "not Send"));
///
/// // From a task: await it.
/// let task = rt.handle(0).spawn(|| async {
///     let lp = coreloop::IoLoop::current().unwrap();
///     lp.call_on_all(|far| far.shard_id()).await
/// });
/// assert_eq!(coreloop::block_on(task).unwrap(), Ok(vec![0, 1]));
/// rt.shutdown().unwrap();
/// # Ok::<(), coreloop::RuntimeError>(())
/// ```
#[must_use = "a call does nothing until it is awaited, given a continuation with then(), or waited for"]
pub struct Call<T: Send + 'static> {
    start: Option<Start<T>>,
    /// The loop that made the call (by id), where [`then`](Call::then) continues when
    /// it is given on that loop's thread before the loop runs.
    origin: Option<u64>,
}

impl<T: Send + 'static> Call<T> {
    /// A call that, once waited on, is started by `start` with where its answer goes.
    pub(crate) fn new(start: impl FnOnce(Reply<T>) + Send + 'static) -> Call<T> {
        Call {
            start: Some(Box::new(start)),
            origin: None,
        }
    }

    /// The same call, made by `lp`: its continuation runs there.
    pub(crate) fn made_by(mut self, lp: &IoLoop) -> Call<T> {
        self.origin = Some(lp.id());
        self
    }

    /// Runs `f` on the loop behind `target`.
    pub(crate) fn on(target: LoopHandle, f: impl FnOnce(&IoLoop) -> T + Send + 'static) -> Call<T> {
        Call::new(move |reply| send_call(&target, reply, f))
    }

    /// A call that answers `e` at once.
    pub(crate) fn failed(e: CallError) -> Call<T> {
        Call::new(move |reply| reply.send(Err(e)))
    }

    /// The same call, its value passed through `f` (on the thread that answers).
    pub(crate) fn map<U: Send + 'static>(self, f: impl FnOnce(T) -> U + Send + 'static) -> Call<U> {
        Call::new(move |reply: Reply<U>| {
            self.start(Reply::to_fn(move |outcome| reply.send(outcome.map(f))));
        })
    }

    fn start(mut self, reply: Reply<T>) {
        if let Some(start) = self.start.take() {
            start(reply);
        }
    }

    /// Sends the work and runs `then` with its outcome on the loop that made the call
    /// (`lp.call_on(..)`; or this thread's running loop), in a later step (never inside
    /// this call), unless that loop closes first. Only the work and its value cross
    /// threads: `then` stays here and may hold this loop's state (an unfinished HTTP
    /// response, say).
    ///
    /// # Panics
    /// Off that loop's thread, or off any loop's thread for a call a runtime made: there
    /// is no loop to run `then` on. Use [`wait`](Self::wait) or `.await` there.
    ///
    /// ```
    /// use coreloop::{CallError, Cores, Runtime};
    /// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// rt.handle(0).add_callback(move |lp| {
    ///     lp.call_on(1, |_| -> u32 { panic!("no such key") }).then(move |_, answer| {
    ///         tx.send(answer).unwrap();
    ///     });
    /// }).unwrap();
    /// assert_eq!(rx.recv().unwrap(), Err(CallError::Panicked("no such key".into())));
    /// rt.shutdown().unwrap();
    /// # Ok::<(), coreloop::RuntimeError>(())
    /// ```
    #[track_caller]
    pub fn then<G>(self, then: G)
    where
        G: FnOnce(&IoLoop, Result<T, CallError>) + 'static,
    {
        let here = self.origin.and_then(super::thread::loop_by_id);
        let Some(lp) = here.or_else(IoLoop::current) else {
            panic!("Call::then off a loop's thread: there is no loop to continue on (use wait() or .await)");
        };
        let key =
            lp.inner
                .calls
                .waiting
                .borrow_mut()
                .insert(Box::new(move |lp, answer: Answer| {
                    let answer = answer.map(|v| match v.downcast::<T>() {
                        Ok(v) => *v,
                        Err(_) => unreachable!("a call's answer has the type its sender made"),
                    });
                    then(lp, answer);
                }));
        self.start(Reply {
            to: Some(ReplyTo::Loop {
                back: lp.handle(),
                key,
            }),
        });
    }

    /// Sends the work and blocks the calling thread until its answer is there. Refused
    /// with [`CallError::WouldDeadlock`] on any loop's thread (of any runtime, during
    /// its setup too): a loop that blocked could be the one that has to answer, and
    /// would stall every connection it serves meanwhile.
    ///
    /// ```
    /// use coreloop::{CallError, Cores, Runtime};
    /// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
    /// assert_eq!(rt.call_on(0, |lp| lp.shard_count()).wait(), Ok(2));
    /// // From inside a loop it refuses instead of blocking it.
    /// let inner = rt.call_on(0, |lp| lp.call_on(1, |_| ()).wait()).wait();
    /// assert_eq!(inner, Ok(Err(CallError::WouldDeadlock)));
    /// rt.shutdown().unwrap();
    /// # Ok::<(), coreloop::RuntimeError>(())
    /// ```
    pub fn wait(self) -> Result<T, CallError> {
        if super::thread::on_loop_thread() {
            return Err(CallError::WouldDeadlock);
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.start(Reply {
            to: Some(ReplyTo::Channel(tx)),
        });
        // A reply always answers: with the value, a panic, or Closed when dropped.
        rx.recv().unwrap_or(Err(CallError::Closed))
    }
}

impl<T: Send + 'static> fmt::Debug for Call<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("sent", &self.start.is_none())
            .finish()
    }
}

/// Where an awaited call's answer waits for its task.
struct Slot<T> {
    value: Option<Result<T, CallError>>,
    waker: Option<Waker>,
}

/// The future of an awaited [`Call`].
pub struct CallFuture<T: Send + 'static> {
    call: Option<Call<T>>,
    slot: Option<Arc<Mutex<Slot<T>>>>,
}

impl<T: Send + 'static> Unpin for CallFuture<T> {}

impl<T: Send + 'static> Future for CallFuture<T> {
    type Output = Result<T, CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(call) = this.call.take() {
            let slot = Arc::new(Mutex::new(Slot {
                value: None,
                waker: Some(cx.waker().clone()),
            }));
            let filled = slot.clone();
            this.slot = Some(slot);
            call.start(Reply::to_fn(move |outcome| {
                let waker = {
                    let mut s = filled.lock().unwrap_or_else(|p| p.into_inner());
                    s.value = Some(outcome);
                    s.waker.take()
                };
                if let Some(w) = waker {
                    w.wake();
                }
            }));
        }
        let Some(slot) = &this.slot else {
            return Poll::Ready(Err(CallError::Closed));
        };
        let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
        match s.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    s.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl<T: Send + 'static> fmt::Debug for CallFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallFuture")
            .field("sent", &self.call.is_none())
            .finish()
    }
}

impl<T: Send + 'static> IntoFuture for Call<T> {
    type Output = Result<T, CallError>;
    type IntoFuture = CallFuture<T>;

    /// The work is sent at the first poll; the future resolves to its outcome.
    fn into_future(self) -> CallFuture<T> {
        CallFuture {
            call: Some(self),
            slot: None,
        }
    }
}

/// Gathers the answers of one call per target into one answer, by target index; the
/// first failure (in target order) fails the whole, once every target has answered.
pub(crate) fn gather<T: Send + 'static>(parts: Vec<Call<T>>) -> Call<Vec<T>> {
    Call::new(move |reply: Reply<Vec<T>>| {
        let n = parts.len();
        if n == 0 {
            return reply.send(Ok(Vec::new()));
        }
        struct State<T: Send + 'static> {
            answers: Vec<Option<Result<T, CallError>>>,
            left: usize,
            reply: Option<Reply<Vec<T>>>,
        }
        let st = Arc::new(Mutex::new(State {
            answers: (0..n).map(|_| None).collect(),
            left: n,
            reply: Some(reply),
        }));
        for (i, part) in parts.into_iter().enumerate() {
            let st = st.clone();
            part.start(Reply::to_fn(move |outcome| {
                let done = {
                    let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
                    s.answers[i] = Some(outcome);
                    s.left -= 1;
                    (s.left == 0).then(|| (std::mem::take(&mut s.answers), s.reply.take()))
                };
                if let Some((answers, Some(reply))) = done {
                    let all: Result<Vec<T>, CallError> = answers
                        .into_iter()
                        .map(|a| a.unwrap_or(Err(CallError::Closed)))
                        .collect();
                    reply.send(all);
                }
            }));
        }
    })
}
