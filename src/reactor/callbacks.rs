//! The run queue: one FIFO of jobs, callbacks and task polls alike. Jobs added on the
//! loop's thread are a plain queue push; those sent from other threads (callbacks, and
//! tasks woken there) come through a crossbeam channel and join the queue once per
//! iteration, a bounded batch at a time.

use super::handle::Remote;
use super::tasks::Runnable;
use super::IoLoop;
use crossbeam_channel::{Receiver, TryRecvError};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::panic::Location;
use std::time::Instant;

/// Remote callbacks moved into the local queue per iteration at most, so a flood from
/// other threads cannot starve I/O and timers.
pub(crate) const REMOTE_BATCH: usize = 4096;

pub(super) type Callback = Box<dyn FnOnce(&IoLoop)>;

/// A callback, where it was added (for the panic log) and its type (for stall reports).
pub(crate) struct Queued {
    pub(super) f: Callback,
    pub(super) at: &'static Location<'static>,
    pub(super) name: &'static str,
}

/// One step of work for the loop: a callback, or a poll of a task. A job from another
/// thread may carry when it was sent (sampled, for the remote-wait histogram).
pub(super) enum Job {
    Callback(Queued, Option<Instant>),
    Task(Runnable, Option<Instant>),
}

/// Jobs waiting to run.
pub(super) struct RunQueue {
    local: RefCell<VecDeque<Job>>,
    /// `None` once the loop is closed.
    remote: RefCell<Option<Receiver<Remote>>>,
}

impl RunQueue {
    pub(super) fn new(remote: Receiver<Remote>) -> RunQueue {
        RunQueue {
            local: RefCell::new(VecDeque::new()),
            remote: RefCell::new(Some(remote)),
        }
    }

    /// Moves up to [`REMOTE_BATCH`] remote callbacks into the local queue; says whether
    /// more are waiting, and how many came.
    pub(super) fn take_remote(&self) -> (bool, usize) {
        let remote = self.remote.borrow();
        let Some(rx) = remote.as_ref() else {
            return (false, 0);
        };
        if rx.is_empty() {
            return (false, 0); // (the usual case: one look, no attempt to receive)
        }
        let mut q = self.local.borrow_mut();
        let before = q.len();
        for _ in 0..REMOTE_BATCH {
            match rx.try_recv() {
                Ok(Remote::Callback { f, at, name, sent }) => {
                    q.push_back(Job::Callback(Queued { f, at, name }, sent))
                }
                Ok(Remote::Task(t, sent)) => q.push_back(Job::Task(t, sent)),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        (!rx.is_empty(), q.len() - before)
    }

    /// Whether a remote callback is waiting (checked right before the loop sleeps).
    pub(super) fn remote_waiting(&self) -> bool {
        self.remote
            .borrow()
            .as_ref()
            .is_some_and(|rx| !rx.is_empty())
    }

    pub(super) fn local_len(&self) -> usize {
        self.local.borrow().len()
    }

    pub(super) fn pop(&self) -> Option<Job> {
        self.local.borrow_mut().pop_front()
    }

    /// Queues a task poll (a wake on the loop's own thread).
    pub(super) fn push_task(&self, t: Runnable) {
        self.local.borrow_mut().push_back(Job::Task(t, None));
    }

    /// False once the loop is closed.
    pub(super) fn is_open(&self) -> bool {
        self.remote.borrow().is_some()
    }

    /// Closes the queue: returns what it held, for the caller to drop with nothing
    /// borrowed.
    pub(super) fn close(&self) -> (Option<Receiver<Remote>>, VecDeque<Job>) {
        let rx = self.remote.borrow_mut().take();
        let local = std::mem::take(&mut *self.local.borrow_mut());
        (rx, local)
    }
}

impl IoLoop {
    /// Runs `f` on this loop in its next iteration. On the loop's own thread this is a
    /// queue push: no lock, no atomic, no syscall. From other threads use
    /// [`LoopHandle::add_callback`](crate::LoopHandle::add_callback).
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
        self.inner.queue.local.borrow_mut().push_back(Job::Callback(
            Queued {
                f: Box::new(f),
                at: Location::caller(),
                name: std::any::type_name::<F>(),
            },
            None,
        ));
    }
}
