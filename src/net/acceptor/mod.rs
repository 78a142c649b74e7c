//! `Acceptor`: accepting connections on one loop and handing each over as an
//! [`IoStream`].
//!
//! What is the same on both backends lives here: the connection count and limit, the
//! pause when the process is out of file descriptors, the hand-over. How connections
//! are accepted is each backend's half, chosen once when the acceptor starts:
//! `uring.rs` (a multishot accept op) and `epoll.rs` (a readiness handler that accepts
//! until `WouldBlock`).

mod epoll;
mod uring;

use super::listen::ListenOptions;
use crate::iostream::{IoStream, WeakStream};
use crate::poller::OpId;
use crate::reactor::{IoLoop, Resource, WeakLoop};
use socket2::SockRef;
use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};

/// Why accepting is paused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pause {
    Running,
    /// Out of file descriptors: retried after `fd_exhausted_pause`.
    FdExhausted,
    /// `max_connections` reached: resumed when one closes.
    Full,
    /// Its owner asked it to hold off (a queue of accepted connections is full).
    Held,
    /// Stopped for good.
    Stopped,
}

/// How this acceptor accepts: the backend's half and its state.
enum Mode {
    /// io_uring: the accept op in flight, if any.
    Uring { op: Option<OpId> },
    /// epoll: a readable handler on the listener.
    Epoll,
}

type OnConn = Box<dyn FnMut(&IoLoop, IoStream)>;
type OnEmpty = Box<dyn FnOnce(&IoLoop)>;

struct AccState {
    listener: Option<TcpListener>,
    lp: WeakLoop,
    opts: ListenOptions,
    on_conn: Option<OnConn>,
    /// The connections accepted here and still open.
    conns: slab::Slab<WeakStream>,
    accepted: u64,
    pause: Pause,
    mode: Mode,
    /// One log line per episode of fd exhaustion.
    logged_exhaustion: bool,
    resource_key: Option<usize>,
    /// Runs once no connection accepted here is open (a drain waits for it).
    on_empty: Option<OnEmpty>,
    /// Stopped with an io_uring accept still in flight: connections it accepted before
    /// its cancel took effect are still admitted (`on_conn` is kept until its last
    /// completion).
    cancelling: bool,
}

/// Accepts connections on one loop and hands each, as an [`IoStream`] with TCP_NODELAY
/// set, to a callback.
///
/// On io_uring it runs one multishot accept (single accepts near the connection limit);
/// on epoll it accepts until `WouldBlock`, at
/// most [`ListenOptions::accepts_per_event`] per readiness event. When the process runs
/// out of file descriptors (`EMFILE`, `ENFILE`) it pauses for
/// [`ListenOptions::fd_exhausted_pause`] and logs once, instead of spinning; while
/// [`ListenOptions::max_connections`] are open it stops accepting, and resumes as they
/// close. The loop keeps it alive until [`stop`](Acceptor::stop) or the loop closes:
/// dropping an `Acceptor` (every clone is a handle to the same one) does nothing to it.
///
/// ```
/// use coreloop::{bind_reuseport, Acceptor, IoLoop, ListenOptions};
/// use std::io::{Read, Write};
///
/// let lp = IoLoop::new()?;
/// let listener = bind_reuseport("127.0.0.1:0".parse().unwrap(), 128)?;
/// let addr = listener.local_addr()?;
/// let acceptor = Acceptor::start(&lp, listener, ListenOptions::default(), |lp, stream| {
///     stream.write(b"hi\n").then(|lp, s, _| { s.close(); lp.stop(); });
/// })?;
/// let client = std::thread::spawn(move || {
///     let mut c = std::net::TcpStream::connect(addr).unwrap();
///     let mut got = String::new();
///     c.read_to_string(&mut got).unwrap();
///     got
/// });
/// lp.start()?;
/// assert_eq!(client.join().unwrap(), "hi\n");
/// assert_eq!(acceptor.accepted(), 1);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Acceptor {
    inner: Rc<AccInner>,
}

struct AccInner {
    st: RefCell<AccState>,
}

impl Acceptor {
    /// Starts accepting on `listener` (made nonblocking here) on `lp`.
    pub fn start<F>(
        lp: &IoLoop,
        listener: TcpListener,
        opts: ListenOptions,
        on_conn: F,
    ) -> io::Result<Acceptor>
    where
        F: FnMut(&IoLoop, IoStream) + 'static,
    {
        listener.set_nonblocking(true)?;
        let mode = if lp.completes() {
            Mode::Uring { op: None }
        } else {
            Mode::Epoll
        };
        let acc = Acceptor {
            inner: Rc::new(AccInner {
                st: RefCell::new(AccState {
                    listener: Some(listener),
                    lp: lp.downgrade(),
                    opts,
                    on_conn: Some(Box::new(on_conn)),
                    conns: slab::Slab::new(),
                    accepted: 0,
                    pause: Pause::Running,
                    mode,
                    logged_exhaustion: false,
                    resource_key: None,
                    on_empty: None,
                    cancelling: false,
                }),
            }),
        };
        if acc.inner.on_uring() {
            uring::arm(&acc.inner, lp)?;
        } else {
            epoll::start(&acc.inner, lp)?;
        }
        let key = lp.track(acc.inner.clone());
        acc.inner.st.borrow_mut().resource_key = Some(key);
        Ok(acc)
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.inner.st.borrow().listener {
            Some(l) => l.local_addr(),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// A copy of the listening socket (the same socket, and accept queue, under
    /// another descriptor), while it accepts: what a hand-over passes on.
    pub(crate) fn clone_listener(&self) -> Option<OwnedFd> {
        let st = self.inner.st.borrow();
        let l = st.listener.as_ref()?;
        match l.try_clone() {
            Ok(l) => Some(l.into()),
            Err(e) => {
                log::warn!("coreloop: copying a listening socket: {e}");
                None
            }
        }
    }

    /// Connections accepted here and still open.
    pub fn connections(&self) -> usize {
        self.inner.st.borrow().conns.len()
    }

    /// Closes every connection accepted here that is still open, at once: what they
    /// had not sent yet is dropped, each stream's close callback runs. Accepting goes on
    /// unless [`stop`](Self::stop)ped.
    pub fn close_connections(&self) {
        let open: Vec<IoStream> = self
            .inner
            .st
            .borrow()
            .conns
            .iter()
            .filter_map(|(_, w)| w.upgrade())
            .collect();
        for s in open {
            s.abort();
        }
    }

    /// Runs `f` (in a later step) once no connection accepted here is open: at once if
    /// none is. Replaces an earlier one.
    pub(crate) fn when_empty(&self, f: impl FnOnce(&IoLoop) + 'static) {
        let empty = {
            let mut st = self.inner.st.borrow_mut();
            st.on_empty = Some(Box::new(f));
            st.conns.is_empty()
        };
        if empty {
            self.inner.run_on_empty();
        }
    }

    /// Connections accepted here in all.
    pub fn accepted(&self) -> u64 {
        self.inner.st.borrow().accepted
    }

    /// True while accepting is paused (out of fds, or at the connection limit).
    pub fn is_paused(&self) -> bool {
        self.inner.st.borrow().pause != Pause::Running
    }

    /// Holds off accepting (connections wait in the kernel's backlog) until
    /// [`resume`](Self::resume).
    pub(crate) fn hold(&self) {
        let lp = self.inner.st.borrow().lp.upgrade();
        if let Some(lp) = lp {
            self.inner.pause(&lp, Pause::Held);
        }
    }

    /// Accepts again after [`hold`](Self::hold).
    pub(crate) fn resume(&self) {
        let lp = self.inner.st.borrow().lp.upgrade();
        let held = self.inner.st.borrow().pause == Pause::Held;
        if let (Some(lp), true) = (lp, held) {
            self.inner.resume(&lp);
        }
    }

    /// Stops accepting and closes the listener; open connections are not touched.
    pub fn stop(&self) {
        let lp = self.inner.st.borrow().lp.upgrade();
        if let Some(lp) = lp {
            self.inner.stop_on(&lp);
        }
    }
}

impl AccInner {
    /// Queues the `when_empty` callback, if one waits.
    fn run_on_empty(&self) {
        let (f, lp) = {
            let mut st = self.st.borrow_mut();
            (st.on_empty.take(), st.lp.upgrade())
        };
        if let (Some(f), Some(lp)) = (f, lp) {
            lp.add_callback(f);
        }
    }

    fn on_uring(&self) -> bool {
        matches!(self.st.borrow().mode, Mode::Uring { .. })
    }

    fn listener_fd(&self) -> Option<RawFd> {
        self.st.borrow().listener.as_ref().map(|l| l.as_raw_fd())
    }

    /// Sets up an accepted connection and hands it over.
    fn admit(self: &Rc<Self>, lp: &IoLoop, fd: OwnedFd) {
        if let Err(e) = SockRef::from(&fd).set_tcp_nodelay(true) {
            log::debug!("coreloop: TCP_NODELAY on an accepted socket: {e}");
        }
        let stream = match IoStream::from_fd(lp, fd) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("coreloop: setting up an accepted connection: {e}");
                return;
            }
        };
        let (full, key) = {
            let mut st = self.st.borrow_mut();
            let key = st.conns.insert(stream.downgrade());
            st.accepted += 1;
            st.logged_exhaustion = false;
            (st.conns.len() >= st.opts.max_connections, key)
        };
        stream.set_guard(Box::new(ConnGuard(Rc::downgrade(self), key)));
        if full {
            self.pause(lp, Pause::Full);
        }
        // The callback runs with nothing borrowed; it may stop the acceptor.
        let cb = self.st.borrow_mut().on_conn.take();
        if let Some(mut cb) = cb {
            cb(lp, stream);
            let mut st = self.st.borrow_mut();
            if st.on_conn.is_none() && (st.pause != Pause::Stopped || st.cancelling) {
                st.on_conn = Some(cb);
            }
        }
    }

    /// Accepting failed because the process is out of file descriptors: pause for a
    /// while (logging once per episode) instead of spinning on the error.
    fn pause_exhausted(self: &Rc<Self>, lp: &IoLoop, e: &io::Error) {
        let (pause_for, log_it) = {
            let mut st = self.st.borrow_mut();
            let log_it = !st.logged_exhaustion;
            st.logged_exhaustion = true;
            (st.opts.fd_exhausted_pause, log_it)
        };
        if log_it {
            log::warn!(
                "coreloop: accept failed ({e}): out of file descriptors; pausing accepts for {pause_for:?} at a time until some are free"
            );
        }
        self.pause(lp, Pause::FdExhausted);
        let weak = Rc::downgrade(self);
        lp.call_later(pause_for, move |lp| {
            if let Some(inner) = weak.upgrade() {
                if inner.st.borrow().pause == Pause::FdExhausted {
                    inner.resume(lp);
                }
            }
        });
    }

    fn pause(&self, lp: &IoLoop, why: Pause) {
        {
            let mut st = self.st.borrow_mut();
            if st.pause == Pause::Stopped {
                return;
            }
            st.pause = why;
        }
        if self.on_uring() {
            uring::pause(self, lp);
        } else {
            epoll::pause(self, lp);
        }
    }

    fn resume(self: &Rc<Self>, lp: &IoLoop) {
        {
            let mut st = self.st.borrow_mut();
            if st.pause == Pause::Stopped || st.conns.len() >= st.opts.max_connections {
                return;
            }
            st.pause = Pause::Running;
        }
        if self.on_uring() {
            uring::resume(self, lp);
        } else {
            epoll::resume(self, lp);
        }
    }

    fn stop_on(&self, lp: &IoLoop) {
        let (listener, mode, key, cb) = {
            let mut st = self.st.borrow_mut();
            if st.pause == Pause::Stopped {
                return;
            }
            st.pause = Pause::Stopped;
            let mode = std::mem::replace(&mut st.mode, Mode::Epoll);
            // An accept op in flight may still complete with connections the kernel
            // took from the queue before the cancel reached it: they are served.
            st.cancelling = matches!(mode, Mode::Uring { op: Some(_) });
            let cb = if st.cancelling {
                None
            } else {
                st.on_conn.take()
            };
            (st.listener.take(), mode, st.resource_key.take(), cb)
        };
        if let Some(l) = listener {
            match mode {
                Mode::Uring { op } => uring::stop(lp, l, op),
                Mode::Epoll => epoll::stop(lp, l),
            }
        }
        drop(cb);
        if let Some(key) = key {
            lp.untrack(key);
        }
    }
}

impl Resource for AccInner {
    fn close_resource(&self, lp: &IoLoop) {
        self.st.borrow_mut().resource_key = None; // the loop drops its table itself
        self.stop_on(lp);
    }
}

/// Errors that mean the process (or the system) is out of file descriptors or memory.
fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Dropped when an accepted stream closes: counts it out, resumes accepting if full.
struct ConnGuard(Weak<AccInner>, usize);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        let (resume, empty, lp) = {
            let mut st = inner.st.borrow_mut();
            st.conns.try_remove(self.1);
            (
                st.pause == Pause::Full && st.conns.len() < st.opts.max_connections,
                st.conns.is_empty() && st.on_empty.is_some(),
                st.lp.upgrade(),
            )
        };
        if let (true, Some(lp)) = (resume, lp) {
            inner.resume(&lp);
        }
        if empty {
            inner.run_on_empty();
        }
    }
}

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.st.borrow();
        f.debug_struct("Acceptor")
            .field("live", &st.conns.len())
            .field("accepted", &st.accepted)
            .field("pause", &st.pause)
            .finish()
    }
}
