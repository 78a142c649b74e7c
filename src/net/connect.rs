//! Connecting: a nonblocking TCP connect watched through the loop (on either backend,
//! by the socket becoming writable), which becomes an [`IoStream`] once it completes:
//! one [`Connecting`] value, given a continuation or awaited by a task.
//!
//! The pending connect owns the socket until it completes, fails or times out; a task
//! that drops its connect future cancels it: the handler and the timer go, and the
//! socket is closed (no descriptor is left behind).

use crate::iostream::IoStream;
use crate::poller::Interest;
use crate::reactor::{IoLoop, TimeoutId, WeakLoop};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

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
        let done = self.done.borrow_mut().take();
        match done {
            Some(f) => f(lp, r),
            // Nobody is waiting any more: a stream made meanwhile is closed.
            None => {
                if let Ok(s) = r {
                    s.close();
                }
            }
        }
    }
}

/// Starts a connect to `addr` on `lp`; `done` hears how it ended (or is handed back
/// with the error, if the connect could not start).
fn start(
    lp: &IoLoop,
    addr: SocketAddr,
    timeout: Duration,
    done: ConnectCallback,
) -> Result<Rc<Pending>, (io::Error, ConnectCallback)> {
    match open(lp, addr) {
        Ok(fd) => Ok(watch(lp, fd, timeout, done)),
        Err(e) => Err((e, done)),
    }
}

/// A nonblocking socket connecting to `addr`.
fn open(lp: &IoLoop, addr: SocketAddr) -> io::Result<OwnedFd> {
    use socket2::{Domain, Protocol, Socket, Type};
    let _ = lp;
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
struct Connects(RefCell<slab::Slab<Rc<Pending>>>);

/// A connect to a TCP address ([`IoStream::connect`]): give it a continuation with
/// [`then`](Connecting::then) or `.await` it in a task; until then nothing is sent.
/// Dropping an awaited connect before it completes cancels it and closes its socket.
#[must_use = "a connect does nothing until it is given a continuation with then() or awaited"]
pub struct Connecting {
    lp: WeakLoop,
    addr: SocketAddr,
    timeout: Duration,
    /// Once polled: the outcome's slot, and the connect (cancelled if dropped).
    started: Option<(Slot, CancelOnDrop)>,
}

/// The outcome, and the task waiting for it.
type Slot = Rc<RefCell<(Option<io::Result<IoStream>>, Option<Waker>)>>;

impl IoStream {
    /// Connects to `addr` on `lp` without blocking it (TCP_NODELAY set); `timeout`
    /// bounds it (a timeout is `TimedOut`). The connect is watched through the loop's
    /// readiness on either backend. Continue with [`then`](Connecting::then), or await
    /// it in a task of `lp`.
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
    /// // Awaited:
    /// let s = lp.run_until_complete(IoStream::connect(&lp, addr, Duration::from_secs(5)))?;
    /// assert_eq!(s?.peer_addr()?, addr);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connect(lp: &IoLoop, addr: SocketAddr, timeout: Duration) -> Connecting {
        Connecting {
            lp: lp.downgrade(),
            addr,
            timeout,
            started: None,
        }
    }
}

impl Connecting {
    /// Connects, then runs `then` on the loop with the stream or the error, in a later
    /// step (unless the loop closes first).
    pub fn then<F>(self, then: F)
    where
        F: FnOnce(&IoLoop, io::Result<IoStream>) + 'static,
    {
        let Some(lp) = self.lp.upgrade() else { return };
        let key = Rc::new(Cell::new(usize::MAX));
        let k = key.clone();
        let done: ConnectCallback = Box::new(move |lp: &IoLoop, r: io::Result<IoStream>| {
            let p = lp.local::<Connects>().0.borrow_mut().try_remove(k.get());
            drop(p);
            then(lp, r);
        });
        match start(&lp, self.addr, self.timeout, done) {
            Ok(pending) => key.set(lp.local::<Connects>().0.borrow_mut().insert(pending)),
            Err((e, done)) => lp.add_callback(move |lp| done(lp, Err(e))),
        }
    }
}

impl Future for Connecting {
    type Output = io::Result<IoStream>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.started.is_none() {
            let Some(lp) = self.lp.upgrade() else {
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
            match start(&lp, self.addr, self.timeout, done) {
                Ok(pending) => self.started = Some((slot, CancelOnDrop(pending, lp.downgrade()))),
                Err((e, _)) => return Poll::Ready(Err(e)),
            }
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
            .field("addr", &self.addr)
            .field("started", &self.started.is_some())
            .finish()
    }
}

/// A connect future dropped before the end: the connect stops and its socket closes.
/// (It holds its loop weakly: a task must not keep its own loop alive.)
struct CancelOnDrop(Rc<Pending>, WeakLoop);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.done.borrow_mut().take();
        match self.1.upgrade() {
            Some(lp) => drop(self.0.finish(&lp)),
            None => drop(self.0.fd.borrow_mut().take()),
        }
    }
}
