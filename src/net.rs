//! Listening on every core: SO_REUSEPORT listeners, an [`Acceptor`] per loop, and
//! [`TcpServer`] to run one on every core of a [`Runtime`].
//!
//! Every core binds its own socket to the same address with `SO_REUSEPORT`, so the
//! kernel spreads new connections across cores and no accept lock exists. With port 0,
//! the first core to bind gets a real port and the others bind that one.

use crate::ioloop::{IoLoop, Resource, WeakLoop};
use crate::iostream::IoStream;
use crate::poller::{Completion, Interest, Sink};
use crate::runtime::{Runtime, RuntimeBuilder, RuntimeError};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How an [`Acceptor`] listens and accepts.
///
/// ```
/// use coreloop::ListenOptions;
/// let opts = ListenOptions { max_connections: 10_000, ..ListenOptions::default() };
/// assert_eq!(opts.backlog, 1024);
/// ```
#[derive(Clone, Debug)]
pub struct ListenOptions {
    /// The kernel's queue of connections not yet accepted.
    pub backlog: i32,
    /// Open connections per loop at most; accepting stops while it is reached.
    pub max_connections: usize,
    /// epoll: accepts per readiness event at most (level triggering brings the rest).
    pub accepts_per_event: usize,
    /// How long accepting pauses when the process is out of file descriptors.
    pub fd_exhausted_pause: Duration,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            backlog: 1024,
            max_connections: 100_000,
            accepts_per_event: 64,
            fd_exhausted_pause: Duration::from_millis(100),
        }
    }
}

/// Binds a nonblocking TCP listener with `SO_REUSEADDR` and `SO_REUSEPORT` (IPv4 or
/// IPv6; an IPv6 listener is IPv6-only, so `[::]` and `0.0.0.0` can share a port).
///
/// ```
/// let a = coreloop::bind_reuseport("127.0.0.1:0".parse().unwrap(), 128)?;
/// let port = a.local_addr()?.port();
/// // A second listener on the same port: the kernel balances between them.
/// let b = coreloop::bind_reuseport(a.local_addr()?, 128)?;
/// assert_eq!(b.local_addr()?.port(), port);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn bind_reuseport(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.set_cloexec(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog)?;
    Ok(s.into())
}

/// Why accepting is paused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pause {
    Running,
    /// Out of file descriptors: retried after `fd_exhausted_pause`.
    FdExhausted,
    /// `max_connections` reached: resumed when one closes.
    Full,
    /// Stopped for good.
    Stopped,
}

type OnConn = Box<dyn FnMut(&IoLoop, IoStream)>;

struct AccState {
    listener: Option<TcpListener>,
    lp: WeakLoop,
    opts: ListenOptions,
    on_conn: Option<OnConn>,
    live: usize,
    accepted: u64,
    pause: Pause,
    /// io_uring: the multishot accept in flight.
    accept_op: Option<u64>,
    uring: bool,
    /// One log line per episode of fd exhaustion.
    logged_exhaustion: bool,
    resource_key: Option<usize>,
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
/// close. The loop keeps it alive until [`stop`](Acceptor::stop) or the loop closes.
///
/// ```
/// use coreloop::{bind_reuseport, Acceptor, IoLoop, ListenOptions};
/// use std::io::{Read, Write};
///
/// let lp = IoLoop::new()?;
/// let listener = bind_reuseport("127.0.0.1:0".parse().unwrap(), 128)?;
/// let addr = listener.local_addr()?;
/// let acceptor = Acceptor::start(&lp, listener, ListenOptions::default(), |lp, stream| {
///     stream.write_then(b"hi\n", |lp, s| { s.close(); lp.stop(); }).unwrap();
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
        let uring = lp.with_uring(|_| ()).is_some();
        let inner = Rc::new(AccInner {
            st: RefCell::new(AccState {
                listener: Some(listener),
                lp: lp.downgrade(),
                opts,
                on_conn: Some(Box::new(on_conn)),
                live: 0,
                accepted: 0,
                pause: Pause::Running,
                accept_op: None,
                uring,
                logged_exhaustion: false,
                resource_key: None,
            }),
        });
        let acc = Acceptor { inner };
        if !uring {
            let fd = acc.listener_fd().expect("listener");
            let weak = Rc::downgrade(&acc.inner);
            lp.add_handler(fd, Interest::READABLE, move |lp, _, _| {
                if let Some(inner) = weak.upgrade() {
                    Acceptor { inner }.accept_ready(lp);
                }
            })?;
        } else {
            acc.arm(lp)?;
        }
        let key = lp.track(acc.inner.clone());
        acc.inner.st.borrow_mut().resource_key = Some(key);
        Ok(acc)
    }

    fn listener_fd(&self) -> Option<i32> {
        self.inner
            .st
            .borrow()
            .listener
            .as_ref()
            .map(|l| l.as_raw_fd())
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.inner.st.borrow().listener {
            Some(l) => l.local_addr(),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Connections accepted here and still open.
    pub fn connections(&self) -> usize {
        self.inner.st.borrow().live
    }

    /// Connections accepted here in all.
    pub fn accepted(&self) -> u64 {
        self.inner.st.borrow().accepted
    }

    /// True while accepting is paused (out of fds, or at the connection limit).
    pub fn is_paused(&self) -> bool {
        self.inner.st.borrow().pause != Pause::Running
    }

    /// Stops accepting and closes the listener; open connections are not touched.
    pub fn stop(&self) {
        let lp = self.inner.st.borrow().lp.upgrade();
        if let Some(lp) = lp {
            self.inner.stop_on(&lp);
        }
    }

    /// io_uring: starts accepting. A multishot accept takes every connection waiting in
    /// the backlog inside the kernel before a cancel can stop it, so it is used only
    /// while the connection limit is more than twice the backlog away; closer to the
    /// limit, one accept at a time keeps the limit exact.
    fn arm(&self, lp: &IoLoop) -> io::Result<()> {
        let Some(fd) = self.listener_fd() else {
            return Ok(());
        };
        let multishot = {
            let st = self.inner.st.borrow();
            let room = st.opts.max_connections.saturating_sub(st.live);
            room > 2 * st.opts.backlog.max(1) as usize
        };
        let weak = Rc::downgrade(&self.inner);
        let sink: Sink = Rc::new(move |lp, c| on_accept_cqe(&weak, lp, c));
        let op = lp
            .with_uring(|u| u.accept(fd, multishot, sink))
            .unwrap_or_else(|| Err(io::ErrorKind::Unsupported.into()))?;
        self.inner.st.borrow_mut().accept_op = Some(op);
        Ok(())
    }

    /// epoll: the listener is readable.
    fn accept_ready(&self, lp: &IoLoop) {
        let n = self.inner.st.borrow().opts.accepts_per_event;
        for _ in 0..n {
            let r = {
                let st = self.inner.st.borrow();
                if st.pause != Pause::Running {
                    return;
                }
                let Some(l) = st.listener.as_ref() else {
                    return;
                };
                SockRef::from(l).accept()
            };
            match r {
                Ok((sock, _)) => {
                    let fd: OwnedFd = sock.into();
                    if let Err(e) = SockRef::from(&fd).set_nonblocking(true) {
                        log::warn!("coreloop: accepted socket: {e}");
                        continue;
                    }
                    self.admit(lp, fd);
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return,
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => {}
                    _ if is_exhaustion(&e) => {
                        self.pause_exhausted(lp, &e);
                        return;
                    }
                    _ => {
                        log::warn!("coreloop: accept: {e}");
                        return;
                    }
                },
            }
        }
    }

    /// Sets up an accepted connection and hands it over.
    fn admit(&self, lp: &IoLoop, fd: OwnedFd) {
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
        let full = {
            let mut st = self.inner.st.borrow_mut();
            st.live += 1;
            st.accepted += 1;
            st.logged_exhaustion = false;
            st.live >= st.opts.max_connections
        };
        stream.set_guard(Box::new(ConnGuard(Rc::downgrade(&self.inner))));
        if full {
            self.inner.pause(lp, Pause::Full);
        }
        // The callback runs with nothing borrowed; it may stop the acceptor.
        let cb = self.inner.st.borrow_mut().on_conn.take();
        if let Some(mut cb) = cb {
            cb(lp, stream);
            let mut st = self.inner.st.borrow_mut();
            if st.on_conn.is_none() && st.pause != Pause::Stopped {
                st.on_conn = Some(cb);
            }
        }
    }

    fn pause_exhausted(&self, lp: &IoLoop, e: &io::Error) {
        let (pause_for, log_it) = {
            let mut st = self.inner.st.borrow_mut();
            let log_it = !st.logged_exhaustion;
            st.logged_exhaustion = true;
            (st.opts.fd_exhausted_pause, log_it)
        };
        if log_it {
            log::warn!(
                "coreloop: accept failed ({e}): out of file descriptors; pausing accepts for {pause_for:?} at a time until some are free"
            );
        }
        self.inner.pause(lp, Pause::FdExhausted);
        let weak = Rc::downgrade(&self.inner);
        lp.call_later(pause_for, move |lp| {
            if let Some(inner) = weak.upgrade() {
                if inner.st.borrow().pause == Pause::FdExhausted {
                    inner.resume(lp);
                }
            }
        });
    }
}

impl AccInner {
    fn pause(&self, lp: &IoLoop, why: Pause) {
        let (uring, op, fd) = {
            let mut st = self.st.borrow_mut();
            if st.pause == Pause::Stopped {
                return;
            }
            st.pause = why;
            (
                st.uring,
                st.accept_op.take(),
                st.listener.as_ref().map(|l| l.as_raw_fd()),
            )
        };
        if uring {
            if let Some(op) = op {
                let _ = lp.with_uring(|u| u.cancel(op));
            }
        } else if let Some(fd) = fd {
            let _ = lp.update_handler(fd, Interest::NONE);
        }
    }

    fn resume(self: &Rc<Self>, lp: &IoLoop) {
        let (uring, fd) = {
            let mut st = self.st.borrow_mut();
            if st.pause == Pause::Stopped || st.live >= st.opts.max_connections {
                return;
            }
            st.pause = Pause::Running;
            (st.uring, st.listener.as_ref().map(|l| l.as_raw_fd()))
        };
        if uring {
            let acc = Acceptor {
                inner: self.clone(),
            };
            if self.st.borrow().accept_op.is_none() {
                if let Err(e) = acc.arm(lp) {
                    log::error!("coreloop: restarting accept: {e}");
                }
            }
        } else if let Some(fd) = fd {
            let _ = lp.update_handler(fd, Interest::READABLE);
        }
    }

    fn stop_on(&self, lp: &IoLoop) {
        let (listener, op, key, cb) = {
            let mut st = self.st.borrow_mut();
            if st.pause == Pause::Stopped {
                return;
            }
            st.pause = Pause::Stopped;
            (
                st.listener.take(),
                st.accept_op.take(),
                st.resource_key.take(),
                st.on_conn.take(),
            )
        };
        if let Some(l) = listener {
            match lp.with_uring(|u| {
                if let Some(op) = op {
                    let _ = u.cancel(op);
                }
            }) {
                Some(()) => {
                    let fd: OwnedFd = l.into();
                    lp.with_uring(|u| u.close_fd(fd));
                }
                None => {
                    lp.remove_handler(l.as_raw_fd());
                    drop(l);
                }
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

/// io_uring: a CQE of the multishot accept.
fn on_accept_cqe(weak: &Weak<AccInner>, lp: &IoLoop, c: Completion) {
    let Some(inner) = weak.upgrade() else { return };
    let Completion::Accept { result, more } = c else {
        return;
    };
    let acc = Acceptor { inner };
    if !more {
        acc.inner.st.borrow_mut().accept_op = None;
    }
    match result {
        Ok(fd) => {
            if acc.inner.st.borrow().pause == Pause::Stopped {
                return; // accepted just before the stop: dropping it closes it
            }
            acc.admit(lp, fd);
        }
        Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => return,
        Err(e) if is_exhaustion(&e) => {
            acc.pause_exhausted(lp, &e);
            return;
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
        Err(e) => log::warn!("coreloop: accept: {e}"),
    }
    // The multishot accept ended on its own: start another while running.
    let rearm = {
        let st = acc.inner.st.borrow();
        st.pause == Pause::Running && st.accept_op.is_none() && st.listener.is_some()
    };
    if rearm {
        if let Err(e) = acc.arm(lp) {
            log::error!("coreloop: restarting accept: {e}");
        }
    }
}

fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Dropped when an accepted stream closes: counts it out, resumes accepting if full.
struct ConnGuard(Weak<AccInner>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        let (resume, lp) = {
            let mut st = inner.st.borrow_mut();
            st.live -= 1;
            (
                st.pause == Pause::Full && st.live < st.opts.max_connections,
                st.lp.upgrade(),
            )
        };
        if let (true, Some(lp)) = (resume, lp) {
            inner.resume(&lp);
        }
    }
}

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.st.borrow();
        f.debug_struct("Acceptor")
            .field("live", &st.live)
            .field("accepted", &st.accepted)
            .field("pause", &st.pause)
            .finish()
    }
}

/// A TCP server on every core of a [`Runtime`]: one SO_REUSEPORT listener and one
/// [`Acceptor`] per loop, all on the same port, handing connections to `on_conn` on the
/// loop that accepted them.
///
/// ```
/// use coreloop::{Cores, ListenOptions, Runtime, TcpServer};
/// use std::io::{Read, Write};
///
/// let server = TcpServer::bind(
///     Runtime::builder().cores(Cores::Count(2)),
///     "127.0.0.1:0".parse().unwrap(),
///     ListenOptions::default(),
///     |_lp, stream| {
///         // Echo one line back.
///         stream.read_until(b"\n", 1024, |_, s, line| {
///             if let Ok(line) = line { let _ = s.write_then(&line, |_, s| s.close()); }
///         }).unwrap();
///     },
/// )?;
/// let mut c = std::net::TcpStream::connect(server.local_addr())?;
/// c.write_all(b"ping\n")?;
/// let mut got = String::new();
/// c.read_to_string(&mut got)?;
/// assert_eq!(got, "ping\n");
/// server.shutdown().unwrap();
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct TcpServer {
    runtime: Runtime,
    local_addr: SocketAddr,
    id: u64,
}

/// The acceptors each loop runs, by the id of the `TcpServer` they belong to.
#[derive(Default)]
struct LoopAcceptors(RefCell<Vec<(u64, Acceptor)>>);

impl TcpServer {
    /// Starts `builder`'s runtime with a listener on `addr` on every core. Port 0 works:
    /// the first core binds and the rest bind the port it got, which
    /// [`local_addr`](Self::local_addr) reports. Returns once every core listens.
    pub fn bind<F>(
        builder: RuntimeBuilder,
        addr: SocketAddr,
        opts: ListenOptions,
        on_conn: F,
    ) -> io::Result<TcpServer>
    where
        F: Fn(&IoLoop, IoStream) + Send + Sync + 'static,
    {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let bound: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let (tx, rx) = crossbeam_channel::unbounded::<io::Result<SocketAddr>>();
        let on_conn = Arc::new(on_conn);
        let runtime = builder
            .on_start(move |lp, _shard| {
                let result = (|| {
                    // Held while binding: the first binds `addr`, later ones its real port.
                    let mut b = bound.lock().unwrap_or_else(|p| p.into_inner());
                    let listener = bind_reuseport(b.unwrap_or(addr), opts.backlog)?;
                    let local = listener.local_addr()?;
                    *b = Some(local);
                    drop(b);
                    let on_conn = on_conn.clone();
                    let acc =
                        Acceptor::start(lp, listener, opts.clone(), move |lp, s| on_conn(lp, s))?;
                    lp.local::<LoopAcceptors>().0.borrow_mut().push((id, acc));
                    Ok(local)
                })();
                let _ = tx.send(result);
            })
            .build()?;
        let mut local_addr = None;
        for _ in 0..runtime.shards() {
            match rx.recv() {
                Ok(Ok(a)) => local_addr = Some(a),
                Ok(Err(e)) => {
                    let _ = runtime.shutdown();
                    return Err(e);
                }
                Err(_) => {
                    let _ = runtime.shutdown();
                    return Err(io::Error::other("a shard ended before it listened"));
                }
            }
        }
        Ok(TcpServer {
            runtime,
            local_addr: local_addr.expect("at least one shard"),
            id,
        })
    }

    /// Stops accepting on every core and closes the listeners; open connections go on.
    /// Returns once every core has stopped.
    pub fn stop_accepting(&self) -> Result<(), RuntimeError> {
        let id = self.id;
        self.runtime
            .invoke_on_all(move |lp| {
                let accs = lp.local::<LoopAcceptors>();
                let mine: Vec<Acceptor> = accs
                    .0
                    .borrow()
                    .iter()
                    .filter(|(i, _)| *i == id)
                    .map(|(_, a)| a.clone())
                    .collect();
                for a in mine {
                    a.stop();
                }
            })
            .map(drop)
    }

    /// Connections accepted by this server and still open, on all cores.
    pub fn open_connections(&self) -> Result<usize, RuntimeError> {
        let id = self.id;
        let per_core = self.runtime.invoke_on_all(move |lp| {
            lp.local::<LoopAcceptors>()
                .0
                .borrow()
                .iter()
                .filter(|(i, _)| *i == id)
                .map(|(_, a)| a.connections())
                .sum::<usize>()
        })?;
        Ok(per_core.into_iter().sum())
    }

    /// The address every core listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The runtime the server runs on (to broadcast to it or gather from it).
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Stops every loop and waits for them.
    pub fn shutdown(self) -> Result<(), RuntimeError> {
        self.runtime.shutdown()
    }

    /// Waits until the loops stop (a signal with `stop_on_signals`, or a handle).
    pub fn wait(self) -> Result<(), RuntimeError> {
        self.runtime.wait()
    }
}

impl fmt::Debug for TcpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpServer")
            .field("local_addr", &self.local_addr)
            .field("shards", &self.runtime.shards())
            .finish()
    }
}
