//! Connecting: a nonblocking TCP connect watched through the loop (on either backend,
//! by the socket becoming writable), which becomes an [`IoStream`] once it completes:
//! one [`Connecting`] value, given a continuation or awaited by a task. A name is looked
//! up first (on the blocking pool, `resolve.rs`) and its addresses tried in turn.
//!
//! The pending connect owns the socket until it completes, fails or times out; a task
//! that drops its connect future cancels it: the handler and the timer go, and the
//! socket is closed (no descriptor is left behind).

use super::resolve::{lookup, ToConnectAddr};
use crate::iostream::IoStream;
use crate::poller::Interest;
use crate::reactor::{IoLoop, TimeoutId, WeakLoop};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Who hears how a connect ended.
type ConnectCallback = Box<dyn FnOnce(&IoLoop, io::Result<IoStream>)>;

/// A connect in progress: the socket, its timer, and who hears how it ended.
struct Pending {
    fd: RefCell<Option<OwnedFd>>,
    timer: Cell<Option<TimeoutId>>,
    done: RefCell<Option<ConnectCallback>>,
}

impl Pending {
    /// Takes the socket out, and the handler and the timer with it: the connect is over.
    fn finish(&self, lp: &IoLoop) -> Option<OwnedFd> {
        let fd = self.fd.borrow_mut().take()?;
        lp.remove_handler(fd.as_raw_fd());
        if let Some(t) = self.timer.take() {
            lp.remove_timeout(t);
        }
        Some(fd)
    }

    fn report(&self, lp: &IoLoop, r: io::Result<IoStream>) {
        report(&self.done, lp, r);
    }
}

/// A connect to a name or an address: its addresses tried in turn, the one being tried,
/// and who hears how it ended.
struct Attempt {
    done: RefCell<Option<ConnectCallback>>,
    current: RefCell<Option<Rc<Pending>>>,
}

impl Attempt {
    fn report(&self, lp: &IoLoop, r: io::Result<IoStream>) {
        report(&self.done, lp, r);
    }

    /// Nobody waits any more: the address being tried is given up and its socket closed.
    fn cancel(&self, lp: Option<&IoLoop>) {
        self.done.borrow_mut().take();
        let current = self.current.borrow_mut().take();
        if let Some(p) = current {
            p.done.borrow_mut().take();
            match lp {
                Some(lp) => drop(p.finish(lp)),
                None => drop(p.fd.borrow_mut().take()),
            }
        }
    }
}

/// What a connect was asked to reach: addresses, a host and port to look up, or why the
/// input is neither.
type Target = io::Result<Result<Vec<SocketAddr>, (String, u16)>>;

/// Starts a connect to `target` on `lp` within `timeout`; `done` hears how it ended, in
/// a later step.
fn begin(lp: &IoLoop, target: Target, timeout: Duration, done: ConnectCallback) -> Rc<Attempt> {
    let attempt = Rc::new(Attempt {
        done: RefCell::new(Some(done)),
        current: RefCell::new(None),
    });
    let deadline = Instant::now() + timeout;
    let weak = Rc::downgrade(&attempt);
    match target {
        Ok(Ok(addrs)) => try_next(lp, &attempt, addrs.into(), deadline, None),
        Ok(Err((host, port))) => lookup(lp, host, port, timeout, move |lp, found| {
            let Some(a) = weak.upgrade() else { return };
            match found {
                Ok(addrs) => try_next(lp, &a, addrs.into(), deadline, None),
                Err(e) => a.report(lp, Err(e)),
            }
        }),
        Err(e) => lp.add_callback(move |lp| {
            if let Some(a) = weak.upgrade() {
                a.report(lp, Err(e));
            }
        }),
    }
    attempt
}

/// Connects to the next of `addrs` with its share of the time left (so that an address
/// that never answers leaves time for the others); on failure, the next; when none is
/// left, the last error.
fn try_next(
    lp: &IoLoop,
    attempt: &Rc<Attempt>,
    mut addrs: VecDeque<SocketAddr>,
    deadline: Instant,
    mut last: Option<io::Error>,
) {
    while let Some(addr) = addrs.pop_front() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            last = Some(io::ErrorKind::TimedOut.into());
            break;
        }
        let fd = match open(addr) {
            Ok(fd) => fd,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        let share = left / (addrs.len() as u32 + 1);
        let weak = Rc::downgrade(attempt);
        let done: ConnectCallback = Box::new(move |lp, r| {
            let Some(a) = weak.upgrade() else {
                if let Ok(s) = r {
                    s.close();
                }
                return;
            };
            a.current.borrow_mut().take();
            match r {
                Ok(s) => a.report(lp, Ok(s)),
                Err(e) => try_next(lp, &a, addrs, deadline, Some(e)),
            }
        });
        let pending = watch(lp, fd, share, done);
        attempt.current.replace(Some(pending));
        return;
    }
    let e =
        last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address to connect to"));
    // Never inside the call that started the connect.
    let weak = Rc::downgrade(attempt);
    lp.add_callback(move |lp| {
        if let Some(a) = weak.upgrade() {
            a.report(lp, Err(e));
        }
    });
}

/// A nonblocking socket connecting to `addr`.
fn open(addr: SocketAddr) -> io::Result<OwnedFd> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    sock.set_cloexec(true)?;
    sock.set_tcp_nodelay(true)?;
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(sock.into())
}

/// Watches a connecting socket until it is writable (connected or failed) or `timeout`.
fn watch(lp: &IoLoop, fd: OwnedFd, timeout: Duration, done: ConnectCallback) -> Rc<Pending> {
    let raw = fd.as_raw_fd();
    let pending = Rc::new(Pending {
        fd: RefCell::new(Some(fd)),
        timer: Cell::new(None),
        done: RefCell::new(Some(done)),
    });
    // The handler and the timer share the pending connect; whichever comes first takes
    // it. Both hold it weakly: the connect's owner keeps it.
    let weak = Rc::downgrade(&pending);
    let watched = lp.add_handler(raw, Interest::WRITABLE, move |lp, fd, _ready| {
        let Some(p) = weak.upgrade() else {
            lp.remove_handler(fd);
            return;
        };
        let Some(owned) = p.finish(lp) else { return };
        let result = match socket2::SockRef::from(&owned).take_error() {
            Ok(None) => IoStream::from_fd(lp, owned),
            Ok(Some(e)) | Err(e) => Err(e),
        };
        p.report(lp, result);
    });
    if let Err(e) = watched {
        pending.fd.borrow_mut().take();
        let done = pending.done.borrow_mut().take();
        if let Some(done) = done {
            lp.add_callback(move |lp| done(lp, Err(e)));
        }
        return pending;
    }
    let weak = Rc::downgrade(&pending);
    let timer = lp.call_later(timeout, move |lp| {
        if let Some(p) = weak.upgrade() {
            p.timer.set(None);
            if p.finish(lp).is_some() {
                p.report(lp, Err(io::ErrorKind::TimedOut.into()));
            }
        }
    });
    pending.timer.set(Some(timer));
    pending
}

/// Keeps a callback connect's state alive until it ends.
#[derive(Default)]
struct Connects(RefCell<slab::Slab<Rc<Attempt>>>);

/// A connect ([`IoStream::connect`]): give it a continuation with
/// [`then`](Connecting::then) or `.await` it in a task; until then nothing is sent (not
/// even a name lookup). Dropping an awaited connect before it completes cancels it and
/// closes its socket.
#[must_use = "a connect does nothing until it is given a continuation with then() or awaited"]
pub struct Connecting {
    lp: WeakLoop,
    target: Option<Target>,
    timeout: Duration,
    /// Once polled: the outcome's slot, and the connect (cancelled if dropped).
    started: Option<(Slot, CancelOnDrop)>,
}

/// The outcome, and the task waiting for it.
type Slot = Rc<RefCell<(Option<io::Result<IoStream>>, Option<Waker>)>>;

impl IoStream {
    /// Connects to `to` on `lp` without blocking it (TCP_NODELAY set): a
    /// [`SocketAddr`], or a name, `"host:port"` or `(host, port)` (see
    /// [`ToConnectAddr`]), looked up on the blocking pool as
    /// [`IoLoop::resolve`] does, whose addresses are tried in turn until one accepts
    /// (each gets an equal share of the time left, so one that never answers leaves
    /// time for the rest; the last error is reported if none does). `timeout` bounds
    /// the whole, lookup included (a timeout is `TimedOut`). The connect is watched
    /// through the loop's readiness on either backend. Continue with
    /// [`then`](Connecting::then), or await it in a task of `lp`.
    ///
    /// ```
    /// use coreloop::{IoLoop, IoStream};
    /// use std::time::Duration;
    /// let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let addr = l.local_addr()?;
    /// let lp = IoLoop::new()?;
    /// // With a continuation:
    /// IoStream::connect(&lp, addr, Duration::from_secs(5)).then(|lp, r| {
    ///     assert!(r.is_ok());
    ///     lp.stop();
    /// });
    /// lp.start()?;
    /// // Awaited, by name:
    /// let name = format!("localhost:{}", addr.port());
    /// let s = lp.run_until_complete(IoStream::connect(&lp, name, Duration::from_secs(5)))?;
    /// assert_eq!(s?.peer_addr()?, addr);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connect(lp: &IoLoop, to: impl ToConnectAddr, timeout: Duration) -> Connecting {
        Connecting {
            lp: lp.downgrade(),
            target: Some(to.to_target()),
            timeout,
            started: None,
        }
    }
}

impl Connecting {
    /// Connects, then runs `then` on the loop with the stream or the error, in a later
    /// step (unless the loop closes first).
    pub fn then<F>(mut self, then: F)
    where
        F: FnOnce(&IoLoop, io::Result<IoStream>) + 'static,
    {
        let Some(lp) = self.lp.upgrade() else { return };
        let Some(target) = self.target.take() else {
            return;
        };
        let key = Rc::new(Cell::new(usize::MAX));
        let k = key.clone();
        let done: ConnectCallback = Box::new(move |lp: &IoLoop, r: io::Result<IoStream>| {
            let a = lp.local::<Connects>().0.borrow_mut().try_remove(k.get());
            drop(a);
            then(lp, r);
        });
        let attempt = begin(&lp, target, self.timeout, done);
        key.set(lp.local::<Connects>().0.borrow_mut().insert(attempt));
    }
}

impl Future for Connecting {
    type Output = io::Result<IoStream>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.started.is_none() {
            let Some(lp) = self.lp.upgrade() else {
                return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
            };
            let Some(target) = self.target.take() else {
                return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
            };
            let slot: Slot = Rc::new(RefCell::new((None, None)));
            let s = slot.clone();
            let done: ConnectCallback = Box::new(move |_, r| {
                let w = {
                    let mut s = s.borrow_mut();
                    s.0 = Some(r);
                    s.1.take()
                };
                if let Some(w) = w {
                    w.wake();
                }
            });
            let attempt = begin(&lp, target, self.timeout, done);
            self.started = Some((slot, CancelOnDrop(attempt, lp.downgrade())));
        }
        let Some((slot, _)) = &self.started else {
            unreachable!("started above");
        };
        let mut s = slot.borrow_mut();
        match s.0.take() {
            Some(r) => Poll::Ready(r),
            None => {
                s.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl fmt::Debug for Connecting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connecting")
            .field("to", &self.target)
            .field("started", &self.started.is_some())
            .finish()
    }
}

/// A connect future dropped before the end: the connect stops and its socket closes.
/// (It holds its loop weakly: a task must not keep its own loop alive.)
struct CancelOnDrop(Rc<Attempt>, WeakLoop);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel(self.1.upgrade().as_ref());
    }
}

/// Tells `done`'s callback, if it is still there, how a connect ended. Nobody is
/// waiting any more: a stream made meanwhile is closed.
fn report(done: &RefCell<Option<ConnectCallback>>, lp: &IoLoop, r: io::Result<IoStream>) {
    let done = done.borrow_mut().take();
    match done {
        Some(f) => f(lp, r),
        None => {
            if let Ok(s) = r {
                s.close();
            }
        }
    }
}
