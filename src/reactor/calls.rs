//! Calls between loops that always answer: `submit_to` runs a closure on another loop
//! and its continuation back on this one (Seastar's `submit_to`), with the closure's
//! value, or why there is none: it panicked (the message is kept), or it could not run
//! because the target loop was closed (before the call was sent, or before it ran).
//!
//! How "always" holds: the closure travels with a [`Reply`] that answers exactly once.
//! Running the closure answers with its value or its panic; a reply dropped unanswered
//! (the target loop closed and dropped its queue) answers [`CallError::Closed`] from its
//! destructor. The answer goes back through the asking loop's queue, so the continuation
//! runs on that loop, never inside `submit_to` itself; only if the asking loop is closed
//! too is there nobody left to tell.

use super::handle::LoopHandle;
use super::{panic_message, IoLoop};
use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Why a call to another loop gave no value.
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
    /// The target loop was closed: the closure did not run.
    Closed,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Panicked(m) => write!(f, "the call panicked: {m}"),
            CallError::Closed => f.write_str("the target loop is closed; the call did not run"),
        }
    }
}

impl std::error::Error for CallError {}

/// A call's outcome, type-erased for the trip back.
type Answer = Result<Box<dyn Any + Send>, CallError>;

type Continuation = Box<dyn FnOnce(&IoLoop, Answer)>;

/// `submit_to` continuations waiting for their answer from another loop.
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
/// [`CallError::Closed`]).
pub(crate) struct Reply<T: Send + 'static> {
    to: Option<ReplyTo<T>>,
}

enum ReplyTo<T> {
    /// A continuation waiting on a loop, by key.
    Loop { back: LoopHandle, key: usize },
    /// A thread blocked on a channel.
    Channel(crossbeam_channel::Sender<Result<T, CallError>>),
}

impl<T: Send + 'static> Reply<T> {
    /// A reply to a thread waiting on `tx`.
    pub(crate) fn channel(tx: crossbeam_channel::Sender<Result<T, CallError>>) -> Reply<T> {
        Reply {
            to: Some(ReplyTo::Channel(tx)),
        }
    }

    /// Runs `f` on `lp` (catching and logging a panic) and answers with the outcome.
    pub(crate) fn run(mut self, lp: &IoLoop, f: impl FnOnce(&IoLoop) -> T) {
        let outcome = catch_unwind(AssertUnwindSafe(|| f(lp))).map_err(|p| {
            let msg = panic_message(&*p).to_string();
            let thread = std::thread::current();
            let on = thread.name().unwrap_or("a loop");
            log::error!("coreloop: a call panicked on {on}: {msg}");
            CallError::Panicked(msg)
        });
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
pub(crate) fn send_call<T, F>(target: &LoopHandle, reply: Reply<T>, f: F)
where
    T: Send + 'static,
    F: FnOnce(&IoLoop) -> T + Send + 'static,
{
    let _ = target.add_callback(move |remote| reply.run(remote, f));
}

impl IoLoop {
    /// Runs `f` on the loop behind `target`, then `then` back on this loop with what
    /// became of it: `Ok` with `f`'s value, or a [`CallError`] if `f` panicked (the
    /// message is kept) or could not run because `target`'s loop is closed. `then` always
    /// runs (in a later step of this loop, never inside this call) unless this loop
    /// closes first. Neither loop blocks; this is how shards ask each other for things
    /// (Seastar's `submit_to`). Only `f` and its value cross threads: `then` stays here,
    /// so it may hold this loop's state (an unfinished HTTP response, say).
    ///
    /// ```
    /// use coreloop::{CallError, Cores, Runtime};
    /// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// rt.handle(0).add_callback(move |lp| {
    ///     let other = lp.shard_handle(1).unwrap();
    ///     let local = std::rc::Rc::new("not Send"); // `then` may keep loop-local values
    ///     lp.submit_to(&other, |far| far.shard_id() * 21, move |_, answer| {
    ///         tx.send((answer, *local)).unwrap();
    ///     });
    /// }).unwrap();
    /// assert_eq!(rx.recv().unwrap(), (Ok(21), "not Send"));
    ///
    /// // A panic on the other core is an answer too.
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// rt.handle(0).add_callback(move |lp| {
    ///     let other = lp.shard_handle(1).unwrap();
    ///     lp.submit_to(&other, |_| -> u32 { panic!("no such key") }, move |_, answer| {
    ///         tx.send(answer).unwrap();
    ///     });
    /// }).unwrap();
    /// assert_eq!(rx.recv().unwrap(), Err(CallError::Panicked("no such key".into())));
    /// rt.shutdown().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[track_caller]
    pub fn submit_to<T, F, G>(&self, target: &LoopHandle, f: F, then: G)
    where
        T: Send + 'static,
        F: FnOnce(&IoLoop) -> T + Send + 'static,
        G: FnOnce(&IoLoop, Result<T, CallError>) + 'static,
    {
        let key =
            self.inner
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
        let reply = Reply {
            to: Some(ReplyTo::Loop {
                back: self.handle(),
                key,
            }),
        };
        send_call(target, reply, f);
    }
}
