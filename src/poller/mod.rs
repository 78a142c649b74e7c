//! The poller: the thin layer under the loop that registers file descriptors, waits for
//! readiness and wakes up.
//!
//! # The contract every backend keeps
//!
//! A backend is one file in this folder (`epoll.rs`, `uring.rs`); both are always compiled
//! on Linux and the choice is made at run time in [`Poller::new`]. The `match` on the
//! backend lives in this file and nowhere else. A backend provides:
//!
//! - `register(fd, token, interest)`: start reporting readiness of `fd` under `token`
//!   (a value below 2^56 chosen by the loop). Registering an fd twice is the loop's
//!   bug, not the backend's: the loop keeps one registration per fd.
//! - `reregister(fd, token, interest)`: change the interest of a registered fd.
//! - `deregister(fd)`: stop reporting `fd`. No event for it is reported after this
//!   returns, even one the kernel had already produced (the loop also filters by token
//!   generation, so a stale event can never reach a handler registered later on the
//!   same fd number).
//! - `poll(events, timeout)`: submit whatever is queued, wait at most `timeout` (`None`
//!   = until woken; `Some(ZERO)` = do not block; never shorter than asked, so timers
//!   never fire early) and append the ready `(token, Ready)` pairs to `events`.
//!   Wake-ups through the [`Waker`] end the wait and are consumed here, never reported.
//!
//! Readiness is **level-triggered** on both backends, as in Tornado: as long as an fd is
//! ready for something its interest includes, each `poll` reports it again. epoll gives
//! that directly; io_uring gives it with a one-shot `POLL_ADD` re-armed before the next
//! wait (see `uring.rs` for why not multishot).
//!
//! The backends use `unsafe` for the raw syscalls and the ring; each block says why it
//! holds. Nothing above this module needs `unsafe`.

mod batch;
mod bufring;
pub(crate) mod epoll;
pub(crate) mod uring;
mod waker;

pub(crate) use waker::Waker;

use crate::buffer::BufferPool;
use crate::ioloop::IoLoop;
use std::fmt;
use std::io;
use std::ops::BitOr;
use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// What a handler wants to hear about: readable, writable, or both.
///
/// Errors and hang-ups are always reported, whatever the interest (as epoll does).
///
/// ```
/// use coreloop::Interest;
/// let both = Interest::READABLE | Interest::WRITABLE;
/// assert!(both.is_readable() && both.is_writable());
/// assert!(!Interest::READABLE.is_writable());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Interest(u8);

impl Interest {
    /// Wake the handler when the fd can be read without blocking.
    pub const READABLE: Interest = Interest(1);
    /// Wake the handler when the fd can be written without blocking.
    pub const WRITABLE: Interest = Interest(2);
    /// Only errors and hang-ups (a handler parked while it has nothing to do).
    pub const NONE: Interest = Interest(0);

    /// True if the interest includes readability.
    pub const fn is_readable(self) -> bool {
        self.0 & 1 != 0
    }

    /// True if the interest includes writability.
    pub const fn is_writable(self) -> bool {
        self.0 & 2 != 0
    }

    /// The readiness bits this interest lets through to a handler.
    pub(crate) fn mask(self) -> Ready {
        let mut r = Ready::ERROR | Ready::HUP;
        if self.is_readable() {
            r = r | Ready::READABLE;
        }
        if self.is_writable() {
            r = r | Ready::WRITABLE;
        }
        r
    }
}

impl BitOr for Interest {
    type Output = Interest;
    fn bitor(self, rhs: Interest) -> Interest {
        Interest(self.0 | rhs.0)
    }
}

impl fmt::Debug for Interest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.is_readable(), self.is_writable()) {
            (true, true) => f.write_str("READABLE | WRITABLE"),
            (true, false) => f.write_str("READABLE"),
            (false, true) => f.write_str("WRITABLE"),
            (false, false) => f.write_str("NONE"),
        }
    }
}

/// What is ready on an fd, as passed to a handler.
///
/// A handler only sees readable or writable if its [`Interest`] asked for it; `ERROR`
/// and `HUP` are always passed on.
///
/// ```
/// use coreloop::Ready;
/// let r = Ready::READABLE | Ready::HUP;
/// assert!(r.is_readable() && r.is_hup() && !r.is_error());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Ready(u8);

impl Ready {
    /// Nothing is ready.
    pub const EMPTY: Ready = Ready(0);
    /// Data (or a pending connection, or end of file) can be read.
    pub const READABLE: Ready = Ready(1);
    /// The fd can be written.
    pub const WRITABLE: Ready = Ready(2);
    /// An error is pending on the fd (`EPOLLERR`/`POLLERR`).
    pub const ERROR: Ready = Ready(4);
    /// The peer hung up or shut down its writing side (`EPOLLHUP`, `EPOLLRDHUP`).
    pub const HUP: Ready = Ready(8);

    /// True if readable.
    pub const fn is_readable(self) -> bool {
        self.0 & 1 != 0
    }
    /// True if writable.
    pub const fn is_writable(self) -> bool {
        self.0 & 2 != 0
    }
    /// True if an error is pending.
    pub const fn is_error(self) -> bool {
        self.0 & 4 != 0
    }
    /// True if the peer hung up.
    pub const fn is_hup(self) -> bool {
        self.0 & 8 != 0
    }
    /// True if no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub(crate) const fn intersect(self, other: Ready) -> Ready {
        Ready(self.0 & other.0)
    }
}

impl BitOr for Ready {
    type Output = Ready;
    fn bitor(self, rhs: Ready) -> Ready {
        Ready(self.0 | rhs.0)
    }
}

impl fmt::Debug for Ready {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Ready::READABLE, "READABLE"),
            (Ready::WRITABLE, "WRITABLE"),
            (Ready::ERROR, "ERROR"),
            (Ready::HUP, "HUP"),
        ];
        let mut first = true;
        for (bit, name) in names {
            if self.0 & bit.0 != 0 {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("EMPTY")?;
        }
        Ok(())
    }
}

/// Which kernel interface a loop waits on.
///
/// `Auto` (the default) takes io_uring when the kernel has it and allows it, and the
/// opcodes coreloop needs pass a probe; otherwise it falls back to epoll and logs that
/// once per process. The environment variable `CORELOOP_BACKEND=uring|epoll` overrides
/// `Auto` (and only `Auto`: a backend chosen in code is kept).
///
/// ```
/// use coreloop::{Backend, IoLoop};
/// let lp = IoLoop::with_backend(Backend::Epoll)?;
/// assert_eq!(lp.backend(), Backend::Epoll);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// io_uring if available, else epoll; `CORELOOP_BACKEND` may force either.
    #[default]
    Auto,
    /// Linux epoll: readiness, level-triggered.
    Epoll,
    /// Linux io_uring, set up with `SINGLE_ISSUER`, `DEFER_TASKRUN` and `COOP_TASKRUN`
    /// where the kernel has them.
    Uring,
}

impl Backend {
    /// Parses `"auto"`, `"epoll"` or `"uring"` (also `"io_uring"`), ignoring case.
    ///
    /// ```
    /// use coreloop::Backend;
    /// assert_eq!(Backend::parse("uring"), Some(Backend::Uring));
    /// assert_eq!(Backend::parse("kqueue"), None);
    /// ```
    pub fn parse(s: &str) -> Option<Backend> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Some(Backend::Auto),
            "epoll" => Some(Backend::Epoll),
            "uring" | "io_uring" | "iouring" => Some(Backend::Uring),
            _ => None,
        }
    }

    /// The backend named by `CORELOOP_BACKEND`, if it is set to a known name.
    pub fn from_env() -> Option<Backend> {
        let v = std::env::var("CORELOOP_BACKEND").ok()?;
        let b = Backend::parse(&v);
        if b.is_none() {
            log::warn!("CORELOOP_BACKEND={v:?} is not one of auto, epoll, uring; ignored");
        }
        b
    }
}

// epoll and poll share their event bits on Linux; one mapping serves both backends.
const _: () = {
    assert!(libc::EPOLLIN as i16 == libc::POLLIN);
    assert!(libc::EPOLLPRI as i16 == libc::POLLPRI);
    assert!(libc::EPOLLOUT as i16 == libc::POLLOUT);
    assert!(libc::EPOLLERR as i16 == libc::POLLERR);
    assert!(libc::EPOLLHUP as i16 == libc::POLLHUP);
    assert!(libc::EPOLLRDHUP as i16 == libc::POLLRDHUP);
};

/// The kernel event mask (epoll or poll: the same bits) for an interest.
pub(crate) fn event_mask(interest: Interest) -> u32 {
    let mut m = 0;
    if interest.is_readable() {
        m |= libc::POLLIN | libc::POLLRDHUP;
    }
    if interest.is_writable() {
        m |= libc::POLLOUT;
    }
    m as u32
}

/// What a kernel event mask (epoll or poll) says is ready.
pub(crate) fn ready_of_mask(mask: u32) -> Ready {
    let m = mask as i16;
    let mut r = Ready::EMPTY;
    if m & (libc::POLLIN | libc::POLLPRI) != 0 {
        r = r | Ready::READABLE;
    }
    if m & libc::POLLOUT != 0 {
        r = r | Ready::WRITABLE;
    }
    if m & (libc::POLLERR | libc::POLLNVAL) != 0 {
        r = r | Ready::ERROR;
    }
    if m & (libc::POLLHUP | libc::POLLRDHUP) != 0 {
        r = r | Ready::HUP;
    }
    r
}

/// One readiness report: the loop's token and what is ready.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Event {
    pub token: u64,
    pub ready: Ready,
}

/// Where a completion op's results go: called by the loop, with no loop state borrowed,
/// once per CQE. (A later async layer can make this a closure that wakes a task.)
pub(crate) type Sink = Rc<dyn Fn(&IoLoop, Completion)>;

/// The result of one CQE of a completion op (io_uring only).
pub(crate) enum Completion {
    /// A multishot accept produced a connection or an error; `more` is false once the
    /// accept has ended and must be restarted to accept again.
    Accept {
        result: io::Result<OwnedFd>,
        more: bool,
    },
    /// A multishot recv produced data (empty: end of file) or an error; `more` as above.
    Recv {
        result: io::Result<Vec<u8>>,
        more: bool,
    },
    /// A send finished: how many bytes went out, and the buffer back.
    Send {
        result: io::Result<usize>,
        buf: Vec<u8>,
    },
}

/// The one place that dispatches to a backend.
pub(crate) enum Poller {
    Epoll(epoll::Epoll),
    /// Boxed: the ring with its tables is ten times the size of the epoll state.
    Uring(Box<uring::Uring>),
}

impl Poller {
    /// Builds the backend asked for; `Auto` resolves as [`Backend`] documents.
    pub(crate) fn new(backend: Backend, waker: &Arc<Waker>) -> io::Result<Poller> {
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
        completions: &mut Vec<(Sink, Completion)>,
        pool: &mut BufferPool,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        match self {
            Poller::Epoll(p) => p.poll(events, timeout),
            Poller::Uring(p) => p.poll(events, completions, pool, timeout),
        }
    }

    /// See [`IoLoop::set_batch_wait`](crate::IoLoop::set_batch_wait).
    pub(crate) fn set_batch_wait(&mut self, wait: Duration) -> bool {
        match self {
            Poller::Uring(p) => p.set_batch_wait(wait),
            Poller::Epoll(_) => false,
        }
    }

    /// The io_uring backend, for completion ops; `None` on epoll.
    pub(crate) fn uring(&mut self) -> Option<&mut uring::Uring> {
        match self {
            Poller::Uring(p) => Some(p),
            Poller::Epoll(_) => None,
        }
    }
}
