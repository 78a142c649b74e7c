//! Connecting: a nonblocking TCP connect watched through the loop (on either backend,
//! by the socket becoming writable), which becomes an [`IoStream`] once it completes;
//! with a callback, or awaited by a task.
//!
//! The pending connect owns the socket until it completes, fails or times out; a task
//! that drops its connect future cancels it: the handler and the timer go, and the
//! socket is closed (no descriptor is left behind).

use crate::iostream::{ConnectCallback, IoStream};
use crate::poller::Interest;
use crate::reactor::{IoLoop, TimeoutId, WeakLoop};
use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

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

/// Starts a connect to `addr` on `lp`; `done` hears how it ended.
fn start(
    lp: &IoLoop,
    addr: SocketAddr,
    timeout: Duration,
    done: ConnectCallback,
) -> io::Result<Rc<Pending>> {
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
    let fd: OwnedFd = sock.into();
    let raw = fd.as_raw_fd();
    let pending = Rc::new(Pending {
        fd: RefCell::new(Some(fd)),
        timer: Cell::new(None),
        done: RefCell::new(Some(done)),
    });
    // The handler and the timer share the pending connect; whichever comes first takes
    // it. Both hold it weakly: the connect's owner keeps it.
    let weak = Rc::downgrade(&pending);
    lp.add_handler(raw, Interest::WRITABLE, move |lp, fd, _ready| {
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
    })?;
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
    Ok(pending)
}

/// Keeps a callback connect's state alive until it ends.
#[derive(Default)]
struct Connecting(RefCell<slab::Slab<Rc<Pending>>>);

impl IoStream {
    /// Connects to `addr` without blocking the loop (TCP_NODELAY set), then calls `cb`
    /// with the stream or the error. The connect is watched through the loop's readiness
    /// on either backend; `timeout` bounds it (a timeout is `TimedOut`).
    ///
    /// ```
    /// use coreloop::{IoLoop, IoStream};
    /// use std::time::Duration;
    /// let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let lp = IoLoop::new()?;
    /// IoStream::connect(&lp, l.local_addr()?, Duration::from_secs(5), |lp, r| {
    ///     assert!(r.is_ok());
    ///     lp.stop();
    /// })?;
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connect<F>(lp: &IoLoop, addr: SocketAddr, timeout: Duration, cb: F) -> io::Result<()>
    where
        F: FnOnce(&IoLoop, io::Result<IoStream>) + 'static,
    {
        let key = Rc::new(Cell::new(usize::MAX));
        let k = key.clone();
        let cb: ConnectCallback = Box::new(cb);
        let done = Box::new(move |lp: &IoLoop, r: io::Result<IoStream>| {
            let p = lp.local::<Connecting>().0.borrow_mut().try_remove(k.get());
            drop(p);
            cb(lp, r);
        });
        let pending = start(lp, addr, timeout, done)?;
        key.set(lp.local::<Connecting>().0.borrow_mut().insert(pending));
        Ok(())
    }

    /// Connects to `addr` from a task of the running loop (TCP_NODELAY set); `timeout`
    /// bounds it (`TimedOut`). Dropping the future cancels the connect and closes its
    /// socket.
    ///
    /// ```
    /// use coreloop::{IoLoop, IoStream};
    /// use std::time::Duration;
    /// let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let addr = l.local_addr()?;
    /// let lp = IoLoop::new()?;
    /// let s = lp.run_until_complete(IoStream::connect_async(addr, Duration::from_secs(5)))?;
    /// assert_eq!(s?.peer_addr()?, addr);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn connect_async(addr: SocketAddr, timeout: Duration) -> io::Result<IoStream> {
        let lp = IoLoop::current().ok_or_else(|| {
            io::Error::other("IoStream::connect_async must be awaited by a task of a running loop")
        })?;
        // The outcome, and the task waiting for it.
        type Slot = (Option<io::Result<IoStream>>, Option<Waker>);
        let slot: Rc<RefCell<Slot>> = Rc::new(RefCell::new((None, None)));
        let s = slot.clone();
        let pending = start(
            &lp,
            addr,
            timeout,
            Box::new(move |_, r| {
                let w = {
                    let mut s = s.borrow_mut();
                    s.0 = Some(r);
                    s.1.take()
                };
                if let Some(w) = w {
                    w.wake();
                }
            }),
        )?;
        let _cancel = CancelOnDrop(pending, lp.downgrade());
        std::future::poll_fn(|cx| {
            let mut s = slot.borrow_mut();
            match s.0.take() {
                Some(r) => Poll::Ready(r),
                None => {
                    s.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
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
