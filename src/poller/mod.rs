//! The poller: the thin layer under the loop that registers file descriptors, waits for
//! readiness and completions, and wakes up.
//!
//! # The contract every backend keeps
//!
//! A backend is one module in this folder (`epoll.rs`, `uring/`); both are always
//! compiled on Linux and the choice is made at run time in [`Poller::new`]. The `match`
//! on the backend lives in this file and nowhere else. Every backend provides
//! readiness:
//!
//! - `register(fd, token, interest)`: start reporting readiness of `fd` under `token`
//!   (a value below 2^56 chosen by the loop). Registering an fd twice is the loop's
//!   bug, not the backend's: the loop keeps one registration per fd.
//! - `reregister(fd, token, interest)`: change the interest of a registered fd.
//! - `deregister(fd)`: stop reporting `fd`. No event for it is reported after this
//!   returns, even one the kernel had already produced (the loop also filters by token
//!   generation, so a stale event can never reach a handler registered later on the
//!   same fd number).
//! - `poll(events, completions, timeout)`: submit whatever is queued, wait at most
//!   `timeout` (`None` = until woken; `Some(ZERO)` = do not block; never shorter than
//!   asked, so timers never fire early) and append the ready `(token, Ready)` pairs to
//!   `events` and the finished completion ops to `completions`. Wake-ups through the
//!   [`Waker`] end the wait and are consumed here, never reported.
//!
//! Readiness is **level-triggered** on both backends, as in Tornado: as long as an fd is
//! ready for something its interest includes, each `poll` reports it again. epoll gives
//! that directly; io_uring gives it with a one-shot `POLL_ADD` re-armed before the next
//! wait (see `uring/mod.rs` for why not multishot).
//!
//! A backend may also offer **completion ops** ([`Poller::completes`]): io_uring does,
//! epoll does not (there [`Poller::submit`] answers `Unsupported`, and the layers above
//! use readiness instead). An op is a [`Submission`] with an owner of type `S` (the
//! poller never looks inside it: the loop decides what an owner is); each of its results
//! comes back from `poll` as a [`Completion`] with that owner. An op keeps what the
//! kernel may touch (a send's buffer) until its last completion, also when its owner has
//! gone away or it was cancelled.
//!
//! The backends use `unsafe` for the raw syscalls and the ring; each block says why it
//! holds. Nothing above this module needs `unsafe` (bar the buffer code in `buffer/`).
//! The poller uses nothing from the layers above it.

mod backend;
pub(crate) mod epoll;
mod interest;
pub(crate) mod uring;
mod waker;

pub use backend::Backend;
pub(crate) use interest::{event_mask, ready_of_mask};
pub use interest::{Interest, Ready};
pub(crate) use waker::Waker;

use crate::buffer::BufferPool;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

/// One readiness report: the loop's token and what is ready.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Event {
    pub token: u64,
    pub ready: Ready,
}

/// A completion op to start (io_uring only; see the module docs).
pub(crate) enum Submission {
    /// Accept connections on a listening socket: every connection (or error) is a
    /// completion with [`Completion::file`] set; `multishot: false` accepts one.
    /// Accepted sockets are nonblocking and close-on-exec.
    Accept { fd: RawFd, multishot: bool },
    /// Receive into the loop's provided buffers until about `limit` bytes (at least 1)
    /// have come, or the op is cancelled or ended by the kernel: every chunk is a
    /// completion whose [`Completion::buf`] holds the bytes; a result of 0 with no bytes
    /// is end of file. The op takes no more than `limit` bytes from the socket, plus at
    /// most what remains of the provided buffer it was filling: the rest stays in the
    /// kernel (so a bounded reader slows its peer by TCP flow control).
    Recv { fd: RawFd, limit: usize },
    /// Complete once the socket reports an error or a hangup (a one-shot poll for
    /// `POLLERR | POLLHUP`; the result is the poll mask): how a socket nobody receives
    /// from learns that its peer reset it.
    Hangup { fd: RawFd },
    /// Send `buf[offset..]`; the op owns `buf` until its completion, which hands it back
    /// in [`Completion::buf`] with the number of bytes sent (maybe fewer than asked).
    Send {
        fd: RawFd,
        buf: Vec<u8>,
        offset: usize,
    },
}

/// Names an op in flight (to cancel it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OpId(pub(crate) u64);

/// One result of a completion op.
#[derive(Debug)]
pub(crate) struct Completion {
    /// The kernel's result: a byte count (or a value the op documents), or an error.
    pub result: io::Result<u32>,
    /// More completions follow for this op (multishot); false on its last.
    pub more: bool,
    /// Bytes that come with it: received data, or the buffer a send owned (empty if none).
    pub buf: Vec<u8>,
    /// The file an accept made.
    pub file: Option<OwnedFd>,
}

/// The one place that dispatches to a backend. `S` is the owner of a completion op,
/// chosen by the loop.
pub(crate) enum Poller<S: Clone> {
    Epoll(epoll::Epoll),
    /// Boxed: the ring with its tables is ten times the size of the epoll state.
    Uring(Box<uring::Uring<S>>),
}

impl<S: Clone> Poller<S> {
    /// Builds the backend asked for; `Auto` resolves as [`Backend`] documents.
    pub(crate) fn new(backend: Backend, waker: &Arc<Waker>) -> io::Result<Poller<S>> {
        let backend = match backend {
            Backend::Auto => Backend::from_env().unwrap_or(Backend::Auto),
            b => b,
        };
        match backend {
            Backend::Epoll => Ok(Poller::Epoll(epoll::Epoll::new(waker)?)),
            Backend::Uring => Ok(Poller::Uring(Box::new(uring::Uring::new(waker)?))),
            Backend::Auto => match uring::Uring::new(waker) {
                Ok(u) => Ok(Poller::Uring(Box::new(u))),
                Err(e) => {
                    static ONCE: std::sync::Once = std::sync::Once::new();
                    ONCE.call_once(|| {
                        log::warn!("io_uring unavailable ({e}); coreloop falls back to epoll")
                    });
                    Ok(Poller::Epoll(epoll::Epoll::new(waker)?))
                }
            },
        }
    }

    pub(crate) fn backend(&self) -> Backend {
        match self {
            Poller::Epoll(_) => Backend::Epoll,
            Poller::Uring(_) => Backend::Uring,
        }
    }

    /// The backend and, for io_uring, the setup flags the kernel accepted.
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Poller::Epoll(_) => "epoll (level-triggered)",
            Poller::Uring(p) => p.describe(),
        }
    }

    pub(crate) fn register(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        debug_assert!(token < 1 << 56);
        match self {
            Poller::Epoll(p) => p.register(fd, token, interest),
            Poller::Uring(p) => p.register(fd, token, interest),
        }
    }

    pub(crate) fn reregister(
        &mut self,
        fd: RawFd,
        token: u64,
        interest: Interest,
    ) -> io::Result<()> {
        match self {
            Poller::Epoll(p) => p.reregister(fd, token, interest),
            Poller::Uring(p) => p.reregister(fd, token, interest),
        }
    }

    pub(crate) fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        match self {
            Poller::Epoll(p) => p.deregister(fd),
            Poller::Uring(p) => p.deregister(fd),
        }
    }

    pub(crate) fn poll(
        &mut self,
        events: &mut Vec<Event>,
        completions: &mut Vec<(S, Completion)>,
        pool: &mut BufferPool,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        match self {
            Poller::Epoll(p) => p.poll(events, timeout),
            Poller::Uring(p) => p.poll(events, completions, pool, timeout),
        }
    }

    /// Starts a completion op owned by `owner`; `Unsupported` on a backend without them.
    pub(crate) fn submit(&mut self, op: Submission, owner: S) -> io::Result<OpId> {
        match self {
            Poller::Uring(p) => p.submit(op, owner),
            Poller::Epoll(_) => Err(io::ErrorKind::Unsupported.into()),
        }
    }

    /// Asks the kernel to cancel an op; its last completion still comes (with
    /// `ECANCELED` or its result) and releases what the op owns.
    pub(crate) fn cancel(&mut self, op: OpId) {
        if let Poller::Uring(p) = self {
            p.cancel(op);
        }
    }

    /// Closes `fd`: through the ring behind every op queued before it (so its number
    /// cannot be reused under them), or at once.
    pub(crate) fn close_fd(&mut self, fd: OwnedFd) {
        match self {
            Poller::Uring(p) => p.close_fd(fd),
            Poller::Epoll(_) => drop(fd),
        }
    }

    /// A duplicate of the ring's fd, for other loops' `MSG_RING` wake-ups (io_uring).
    pub(crate) fn ring_fd(&self) -> Option<OwnedFd> {
        match self {
            Poller::Uring(p) => p.ring_fd().ok(),
            Poller::Epoll(_) => None,
        }
    }

    /// Wakes the loop whose ring is `target` with a `MSG_RING` from this ring; an error
    /// means the caller must use the target's eventfd. A failure the kernel reports
    /// later comes back, with `tag`, from [`take_failed_wakes`](Self::take_failed_wakes).
    pub(crate) fn wake_ring(&mut self, target: RawFd, tag: u32) -> io::Result<()> {
        match self {
            Poller::Uring(p) => p.wake_ring(target, tag),
            Poller::Epoll(_) => Err(io::ErrorKind::Unsupported.into()),
        }
    }

    /// Appends the tags of `MSG_RING` wake-ups that failed since the last call.
    pub(crate) fn take_failed_wakes(&mut self, out: &mut Vec<u32>) {
        if let Poller::Uring(p) = self {
            p.take_failed_wakes(out);
        }
    }

    /// io_uring SQEs queued so far (zero on epoll).
    pub(crate) fn sqes(&self) -> u64 {
        match self {
            Poller::Uring(p) => p.sqes(),
            Poller::Epoll(_) => 0,
        }
    }

    /// See [`IoLoop::set_batch_wait`](crate::IoLoop::set_batch_wait).
    pub(crate) fn set_batch_wait(&mut self, wait: Duration) -> bool {
        match self {
            Poller::Uring(p) => p.set_batch_wait(wait),
            Poller::Epoll(_) => false,
        }
    }
}
