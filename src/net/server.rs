//! Servers on every core of a runtime: [`TcpServer::serve`] (and
//! [`HttpServer::serve`](crate::http::HttpServer::serve), built on it) attaches a
//! listener and an [`Acceptor`] per core to a running [`Runtime`] and returns a
//! [`ServerHandle`] that stops, drains and closes that server alone, while the runtime
//! and its other servers go on. The runtime knows its servers: [`Runtime::drain`] and a
//! signal with `stop_on_signals` drain them all.

use super::acceptor::Acceptor;
use super::listen::{bind_listeners, spread, ListenOptions};
use crate::iostream::{IoStream, TlsConfig};
use crate::reactor::{Call, IoLoop, LoopHandle, Reply};
use crate::runtime::{AttachedRef, AttachedServer, InheritedOrigin, Runtime};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Names one server in the process (every kind of server takes its id from here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ServerId(u64);

impl ServerId {
    pub(crate) fn next() -> ServerId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ServerId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// The acceptors a loop runs, by the server they belong to (usually one per server; a
/// server that took over more sockets than it has cores accepts from several on some).
/// An acceptor stays here after it stops accepting, so that its open connections are
/// still counted, drained and closed; it leaves when its server is drained or closed.
#[derive(Default)]
struct LoopServers(RefCell<Vec<(ServerId, Acceptor)>>);

/// This loop's acceptors of server `id`.
fn acceptors_of(lp: &IoLoop, id: ServerId) -> Vec<Acceptor> {
    lp.local::<LoopServers>()
        .0
        .borrow()
        .iter()
        .filter(|(i, _)| *i == id)
        .map(|(_, a)| a.clone())
        .collect()
}

/// Connections server `id` accepted on this loop, in all and still open.
pub(crate) fn server_counts(lp: &IoLoop, id: ServerId) -> (u64, usize) {
    acceptors_of(lp, id).iter().fold((0, 0), |(a, o), acc| {
        (a + acc.accepted(), o + acc.connections())
    })
}

/// Stops this loop's acceptors of server `id` and forgets them.
fn remove_acceptors(lp: &IoLoop, id: ServerId) -> Vec<Acceptor> {
    let gone: Vec<Acceptor> = {
        let servers = lp.local::<LoopServers>();
        let mut list = servers.0.borrow_mut();
        let (gone, kept) = std::mem::take(&mut *list)
            .into_iter()
            .partition(|(i, _)| *i == id);
        *list = kept;
        gone.into_iter().map(|(_, a)| a).collect()
    };
    for acc in &gone {
        acc.stop();
    }
    gone
}

type OnConn = Arc<dyn Fn(&IoLoop, IoStream) + Send + Sync>;

mod sealed {
    pub trait Sealed<M> {}
}

/// What a connection handler may return (see [`TcpServer::new`]): `()` (the handler
/// keeps the stream, or hands it to its callbacks), or a future, run as a task on the
/// connection's loop: of `()`, or of `io::Result<()>` (an error is logged at debug
/// level). `M` tells them apart; it is inferred.
pub trait ConnReturn<M>: sealed::Sealed<M> + 'static {
    #[doc(hidden)]
    fn run(self, lp: &IoLoop);
}

/// The kinds of connection handler (the `M` of [`ConnReturn`]).
#[doc(hidden)]
pub enum PlainConn {}
#[doc(hidden)]
pub enum AsyncConn {}

impl sealed::Sealed<PlainConn> for () {}
impl ConnReturn<PlainConn> for () {
    fn run(self, _: &IoLoop) {}
}

/// What an async connection handler's future may resolve to.
pub trait ConnOutput: 'static {
    #[doc(hidden)]
    fn report(self);
}

impl ConnOutput for () {
    fn report(self) {}
}

impl ConnOutput for io::Result<()> {
    fn report(self) {
        if let Err(e) = self {
            log::debug!("coreloop: a connection handler ended with an error: {e}");
        }
    }
}

impl<F: std::future::Future + 'static> sealed::Sealed<AsyncConn> for F where F::Output: ConnOutput {}
impl<F: std::future::Future + 'static> ConnReturn<AsyncConn> for F
where
    F::Output: ConnOutput,
{
    fn run(self, lp: &IoLoop) {
        lp.spawn(async move { self.await.report() }).detach();
    }
}

/// A TCP server on every core of a runtime: one listener and one [`Acceptor`] per loop,
/// all on the same port (SO_REUSEPORT: the kernel spreads connections over the cores),
/// handing connections to `on_conn` on the loop that accepted them.
///
/// Built like [`HttpServer`](crate::http::HttpServer): `new`, then
/// [`config`](Self::config) if the defaults do not do, then [`serve`](Self::serve) on a
/// runtime, which gives the [`ServerHandle`] every kind of server has.
///
/// ```
/// use coreloop::{Cores, Runtime, TcpServer};
/// use std::io::{Read, Write};
///
/// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
/// // Echo one line back, then close.
/// let server = TcpServer::new(|_lp, stream| {
///     let _ = stream.read_until(b"\n", 1024).then(|_, s, line| {
///         if let Ok(line) = line {
///             s.write(&line);
///         }
///         s.close(); // what was written still goes out
///     });
/// })
/// .serve(&rt, "127.0.0.1:0".parse().unwrap())?;
/// let mut c = std::net::TcpStream::connect(server.local_addr())?;
/// c.write_all(b"ping\n")?;
/// let mut got = String::new();
/// c.read_to_string(&mut got)?;
/// assert_eq!(got, "ping\n");
/// rt.shutdown()?;
/// # Ok::<(), coreloop::RuntimeError>(())
/// ```
#[derive(Clone)]
pub struct TcpServer {
    on_conn: OnConn,
    opts: ListenOptions,
    tell: Option<Tell>,
    tls: Option<TlsConfig>,
}

impl TcpServer {
    /// A server that hands every connection it accepts to `on_conn`, on the loop that
    /// accepted it, with the default [`ListenOptions`]. The handler may be a callback
    /// (returning `()`) or async (returning a future, run as a task on that loop); either
    /// way, the stream closes once nothing holds it (a task that returns, even early
    /// with `?`, closes it; what it wrote still goes out).
    ///
    /// ```
    /// use coreloop::{Cores, Runtime, TcpServer};
    /// use std::io::{Read, Write};
    /// let rt = Runtime::builder().cores(Cores::Count(1)).build()?;
    /// // An async line echo: `?` ends the task, and with it the connection.
    /// let echo = TcpServer::new(|_lp, s| async move {
    ///     loop {
    ///         let line = s.read_until(b"\n", 1024).await?;
    ///         s.write(&line).await?;
    ///     }
    ///     #[allow(unreachable_code)]
    ///     Ok::<(), std::io::Error>(())
    /// })
    /// .serve(&rt, "127.0.0.1:0".parse().unwrap())?;
    /// let mut c = std::net::TcpStream::connect(echo.local_addr())?;
    /// c.write_all(b"one\ntwo\n")?;
    /// c.shutdown(std::net::Shutdown::Write)?;
    /// let mut got = String::new();
    /// c.read_to_string(&mut got)?;
    /// assert_eq!(got, "one\ntwo\n");
    /// rt.shutdown()?;
    /// # Ok::<(), coreloop::RuntimeError>(())
    /// ```
    pub fn new<F, R, M>(on_conn: F) -> TcpServer
    where
        F: Fn(&IoLoop, IoStream) -> R + Send + Sync + 'static,
        R: ConnReturn<M>,
    {
        TcpServer {
            on_conn: Arc::new(move |lp: &IoLoop, s: IoStream| on_conn(lp, s).run(lp)),
            opts: ListenOptions::default(),
            tell: None,
            tls: None,
        }
    }

    /// How the protocol asks its connections to finish when the server drains
    /// ([`ServerHandle::drain`], [`Runtime::drain`], a signal): `f` runs on every core
    /// once accepting has stopped there, and the drain then waits for the connections
    /// to close (an HTTP server closes the idle ones and answers the rest with
    /// `Connection: close`). Without it a drain only waits.
    ///
    /// ```
    /// use coreloop::{IoLoop, TcpServer};
    /// // Each core keeps its connections in a per-loop list and closes the idle ones.
    /// #[derive(Default)]
    /// struct Idle(std::cell::RefCell<Vec<coreloop::IoStream>>);
    /// let server = TcpServer::new(|lp, s| lp.local::<Idle>().0.borrow_mut().push(s))
    ///     .when_draining(|lp: &IoLoop| {
    ///         for s in lp.local::<Idle>().0.borrow_mut().drain(..) {
    ///             s.close();
    ///         }
    ///     });
    /// # let _ = server;
    /// ```
    pub fn when_draining<F>(mut self, f: F) -> TcpServer
    where
        F: Fn(&IoLoop) + Send + Sync + 'static,
    {
        self.tell = Some(Arc::new(f));
        self
    }

    /// Replaces how it listens and accepts (backlog, connection limit, port sharing).
    pub fn config(mut self, opts: ListenOptions) -> TcpServer {
        self.opts = opts;
        self
    }

    /// Speaks TLS on every connection: each accepted stream is made the server side of
    /// a TLS connection ([`TlsConfig::wrap`]) before `on_conn` gets it, so the handler
    /// reads and writes plaintext as on a plain stream (the handshake runs meanwhile;
    /// what it writes goes out once the handshake is over).
    ///
    /// ```no_run
    /// use coreloop::tls::TlsConfig;
    /// use coreloop::{Runtime, TcpServer};
    /// let rt = Runtime::builder().build()?;
    /// let tls = TlsConfig::new("cert.pem", "key.pem")?;
    /// let echo = TcpServer::new(|_, s| async move {
    ///     let line = s.read_until(b"\n", 1024).await?;
    ///     s.write(&line).await?;
    ///     Ok::<(), std::io::Error>(())
    /// })
    /// .tls(tls)
    /// .serve(&rt, "0.0.0.0:7443".parse().unwrap())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn tls(mut self, tls: TlsConfig) -> TcpServer {
        self.tls = Some(tls);
        self
    }

    /// Serves on `addr` on every core of `runtime`, beside whatever else it runs. Port 0
    /// picks a free port, the same on every core ([`ServerHandle::local_addr`]). A port
    /// this process or another already listens on is refused (`AddrInUse`) unless
    /// [`ListenOptions::share_port`] opts in to sharing it. If the runtime took over
    /// listening sockets on `addr` from the instance it replaces
    /// ([`RuntimeBuilder::take_over`](crate::RuntimeBuilder::take_over); for port 0,
    /// the first group left on the same IP), or systemd passed it sockets on `addr`
    /// (`LISTEN_FDS`), it serves on those instead of binding. Returns once every core
    /// accepts; if a core cannot (its acceptor fails, or setting it up panics), the
    /// cores already accepting stop again and the error says which core and why. Call
    /// it from a plain thread (it waits for the loops).
    ///
    /// ```
    /// use coreloop::{Cores, Runtime, TcpServer};
    /// use std::io::Read;
    ///
    /// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
    /// let any = "127.0.0.1:0".parse().unwrap();
    /// let hello = TcpServer::new(|_, s| { s.write(b"hello\n"); s.close(); }).serve(&rt, any)?;
    /// let bye = TcpServer::new(|_, s| { s.write(b"bye\n"); s.close(); }).serve(&rt, any)?;
    /// hello.close().wait()?; // the other server and the runtime go on
    /// let mut got = String::new();
    /// std::net::TcpStream::connect(bye.local_addr())?.read_to_string(&mut got)?;
    /// assert_eq!(got, "bye\n");
    /// // The same port twice is refused.
    /// let again = TcpServer::new(|_, s| s.close()).serve(&rt, bye.local_addr());
    /// assert_eq!(again.unwrap_err().kind(), std::io::ErrorKind::AddrInUse);
    /// rt.shutdown()?;
    /// # Ok::<(), coreloop::RuntimeError>(())
    /// ```
    pub fn serve(&self, runtime: &Runtime, addr: SocketAddr) -> io::Result<ServerHandle> {
        let on_conn = self.on_conn.clone();
        let tls = self.tls.clone();
        serve_on(
            ServerId::next(),
            runtime,
            addr,
            self.opts.clone(),
            move |lp, s| {
                if start_tls(lp, tls.as_ref(), &s) {
                    on_conn(lp, s)
                }
            },
            self.tell.clone(),
        )
    }
}

impl fmt::Debug for TcpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpServer")
            .field("opts", &self.opts)
            .finish()
    }
}

/// Makes an accepted stream TLS if the server speaks it; false (the stream cut) if
/// that failed.
pub(crate) fn start_tls(lp: &IoLoop, tls: Option<&TlsConfig>, s: &IoStream) -> bool {
    let Some(tls) = tls else { return true };
    match tls.wrap(lp, s) {
        Ok(()) => true,
        Err(e) => {
            log::warn!("coreloop: cannot start TLS on an accepted connection: {e}");
            s.abort();
            false
        }
    }
}

/// How a protocol asks its connections on one loop to finish, when its server drains
/// (HTTP closes idle ones and answers the rest with `Connection: close`).
pub(crate) type Tell = Arc<dyn Fn(&IoLoop) + Send + Sync>;

/// Attaches a server under `id` to every core of `runtime`.
pub(crate) fn serve_on<F>(
    id: ServerId,
    runtime: &Runtime,
    addr: SocketAddr,
    opts: ListenOptions,
    on_conn: F,
    tell: Option<Tell>,
) -> io::Result<ServerHandle>
where
    F: Fn(&IoLoop, IoStream) + Send + Sync + 'static,
{
    let loops = runtime.handles();
    let listeners: Vec<Vec<TcpListener>> = match runtime.claim_listeners(addr) {
        Some(group) => {
            log::info!(
                "coreloop: serving on {} listening socket(s) of {} {}",
                group.listeners.len(),
                group.addr,
                match group.origin {
                    InheritedOrigin::Handover => "taken over",
                    InheritedOrigin::Systemd => "passed by systemd",
                }
            );
            let bind_more = group.origin == InheritedOrigin::Handover;
            spread(
                group.addr,
                group.listeners,
                bind_more,
                opts.backlog,
                loops.len(),
            )?
        }
        None => bind_listeners(addr, &opts, loops.len())?
            .into_iter()
            .map(|l| vec![l])
            .collect(),
    };
    let local_addr = listeners[0][0].local_addr()?;
    let listeners: Arc<Mutex<Vec<Vec<TcpListener>>>> = Arc::new(Mutex::new(listeners));
    let on_conn = Arc::new(on_conn);
    // Every server is on its runtime's list until it is drained or closed (so that a
    // graceful stop of the runtime drains it, whether or not a handle is kept).
    let attached = std::sync::OnceLock::new();
    let handle = ServerHandle {
        inner: Arc::new(ServerInner {
            id,
            local_addr,
            loops: loops.to_vec(),
            tell,
            attached,
        }),
    };
    let all = handle.inner.loops.clone();
    let started = crate::runtime::call_all(loops, move |lp| -> io::Result<()> {
        let me = lp.handle();
        let shard = all
            .iter()
            .position(|h| h.same_loop(&me))
            .unwrap_or(usize::MAX);
        let mine = listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(shard)
            .map(std::mem::take)
            .filter(|l| !l.is_empty())
            .ok_or_else(|| io::Error::other("no listener for this core"))?;
        for listener in mine {
            let on_conn = on_conn.clone();
            let acc = Acceptor::start(lp, listener, opts.clone(), move |lp, s| on_conn(lp, s))?;
            lp.local::<LoopServers>().0.borrow_mut().push((id, acc));
        }
        Ok(())
    })
    .wait();
    let failure = match started {
        Ok(results) => results
            .into_iter()
            .enumerate()
            .find_map(|(shard, r)| r.err().map(|e| (Some(shard), e))),
        Err(e) => Some((None, io::Error::from(e))),
    };
    if let Some((shard, e)) = failure {
        let _ = handle.close().wait();
        return Err(match shard {
            Some(shard) => io::Error::new(
                e.kind(),
                format!("coreloop: shard {shard} cannot serve: {e}"),
            ),
            None => e,
        });
    }
    let server: Arc<dyn AttachedServer> = Arc::new(handle.clone());
    let _ = handle
        .inner
        .attached
        .set(runtime.attached().add(id.0, server));
    Ok(handle)
}

struct ServerInner {
    id: ServerId,
    local_addr: SocketAddr,
    loops: Vec<LoopHandle>,
    tell: Option<Tell>,
    /// Its place on the runtime's list of servers (set once it serves on every core).
    attached: std::sync::OnceLock<AttachedRef>,
}

impl ServerInner {
    /// The server is done (drained or closed): off the runtime's list.
    fn detach(&self) {
        if let Some(a) = self.attached.get() {
            a.remove(self.id.0);
        }
    }
}

/// One server attached to a runtime, on every core, whatever its protocol (what
/// [`TcpServer::serve`] and [`HttpServer::serve`](crate::http::HttpServer::serve)
/// return): stop it accepting, drain it, close it, count its connections, while the
/// runtime and its other servers go on.
///
/// Every method that needs the cores gives a [`Call`]: [`wait`](Call::wait) for it from
/// a plain thread, await it in a task, or continue with [`then`](Call::then) on a loop.
///
/// | what | method |
/// |---|---|
/// | stop taking new connections; open ones go on | [`stop_accepting`](Self::stop_accepting) |
/// | stop gracefully: finish what is in flight, close the rest at a deadline | [`drain`](Self::drain) |
/// | stop now: close every connection | [`close`](Self::close) |
/// | connections open now | [`open_connections`](Self::open_connections) |
///
/// Dropping a handle does nothing to the server: it serves until it is drained or
/// closed, or its runtime stops. Clones are handles to the same server.
///
/// ```
/// use coreloop::{Cores, Runtime, TcpServer};
/// use std::time::Duration;
/// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
/// let server = TcpServer::new(|_, s| s.close()).serve(&rt, "127.0.0.1:0".parse().unwrap())?;
/// assert_eq!(server.open_connections().wait()?, 0);
/// let cut = server.drain(Duration::from_secs(1)).wait()?; // nothing open: at once
/// assert_eq!(cut, 0);
/// rt.shutdown()?;
/// # Ok::<(), coreloop::RuntimeError>(())
/// ```
#[derive(Clone)]
pub struct ServerHandle {
    inner: Arc<ServerInner>,
}

impl ServerHandle {
    /// The address every core listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    pub(crate) fn id(&self) -> ServerId {
        self.inner.id
    }

    /// The loops the server runs on, by shard.
    pub(crate) fn loops(&self) -> &[LoopHandle] {
        &self.inner.loops
    }

    /// Runs `f` with this server's acceptors on every core, by shard.
    fn on_each<T, F>(&self, f: F) -> Call<Vec<T>>
    where
        T: Send + 'static,
        F: Fn(&IoLoop, Vec<Acceptor>) -> T + Send + Sync + 'static,
    {
        let id = self.inner.id;
        crate::runtime::call_all(&self.inner.loops, move |lp| f(lp, acceptors_of(lp, id)))
    }

    /// Connections this server accepted that are still open, on all cores (those open
    /// after [`stop_accepting`](Self::stop_accepting) included).
    pub fn open_connections(&self) -> Call<usize> {
        self.on_each(|_, accs| accs.iter().map(Acceptor::connections).sum::<usize>())
            .map(|per_core| per_core.into_iter().sum())
    }

    /// Stops accepting on every core and closes the listeners; open connections go on
    /// (and are still counted, drained and closed by this handle).
    pub fn stop_accepting(&self) -> Call<()> {
        self.on_each(|_, accs| accs.iter().for_each(Acceptor::stop))
            .map(drop)
    }

    /// Stops gracefully: stops accepting, asks the protocol to finish (HTTP closes the
    /// connections that wait for a request and answers the requests in flight with
    /// `Connection: close`), waits until every connection has closed or `deadline` has
    /// passed, then closes those still open. Answers how many that was (connections
    /// cut without finishing). Each core drains on its own, without a thread waiting.
    ///
    /// ```
    /// use coreloop::{Cores, Runtime, TcpServer};
    /// use std::io::{Read, Write};
    /// use std::time::Duration;
    /// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
    /// // A server whose connections never finish by themselves.
    /// let server = TcpServer::new(|_, s| { let _ = s.read_until_close().then(|_, _, _| {}); })
    ///     .serve(&rt, "127.0.0.1:0".parse().unwrap())?;
    /// let mut c = std::net::TcpStream::connect(server.local_addr())?;
    /// c.write_all(b"x")?;
    /// while server.open_connections().wait()? == 0 {}
    /// assert_eq!(server.drain(Duration::from_millis(50)).wait()?, 1);
    /// assert_eq!(c.read(&mut [0; 1])?, 0); // closed at the deadline
    /// rt.shutdown()?;
    /// # Ok::<(), coreloop::RuntimeError>(())
    /// ```
    pub fn drain(&self, deadline: Duration) -> Call<usize> {
        let inner = self.inner.clone();
        let end = Instant::now() + deadline;
        let parts = inner
            .loops
            .iter()
            .map(|h| {
                let (h, inner) = (h.clone(), inner.clone());
                Call::new(move |reply: Reply<usize>| {
                    let _ = h.add_callback(move |lp| drain_here(lp, &inner, end, reply));
                })
            })
            .collect();
        crate::reactor::gather(parts).map(move |cut| {
            inner.detach();
            cut.into_iter().sum()
        })
    }

    /// Stops at once: stops accepting and closes every connection this server accepted
    /// (what they had not sent yet is dropped).
    pub fn close(&self) -> Call<()> {
        let id = self.inner.id;
        let inner = self.inner.clone();
        crate::runtime::call_all(&self.inner.loops, move |lp| {
            for acc in remove_acceptors(lp, id) {
                acc.close_connections();
            }
        })
        .map(move |_| inner.detach())
    }
}

/// What a runtime does with its servers: drain them, and in a hand-over pass their
/// sockets on and stop them accepting.
impl AttachedServer for ServerHandle {
    fn drain(&self, deadline: Duration) -> Call<usize> {
        ServerHandle::drain(self, deadline)
    }

    fn stop_accepting(&self) -> Call<()> {
        ServerHandle::stop_accepting(self)
    }

    /// A copy of each listening socket, by core: the very sockets (and so accept
    /// queues) the acceptors use.
    fn listeners(&self) -> Call<(SocketAddr, Vec<OwnedFd>)> {
        let addr = self.inner.local_addr;
        self.on_each(|_, accs| {
            accs.iter()
                .filter_map(Acceptor::clone_listener)
                .collect::<Vec<OwnedFd>>()
        })
        .map(move |per_core| (addr, per_core.into_iter().flatten().collect()))
    }
}

/// One core's part of a drain: stop accepting, tell the protocol, answer when this
/// core's connections of the server are gone or at `end` (closing those left).
fn drain_here(lp: &IoLoop, server: &ServerInner, end: Instant, reply: Reply<usize>) {
    let id = server.id;
    let accs = acceptors_of(lp, id);
    if accs.is_empty() {
        return reply.send(Ok(0));
    }
    accs.iter().for_each(Acceptor::stop);
    if let Some(tell) = &server.tell {
        tell(lp);
    }
    let reply = Rc::new(RefCell::new(Some(reply)));
    let at_deadline = {
        let (accs, reply) = (accs.clone(), reply.clone());
        lp.call_at(end, move |lp| {
            let cut: usize = accs.iter().map(Acceptor::connections).sum();
            if cut > 0 {
                log::info!("coreloop: drain deadline: closing {cut} connections still open");
            }
            accs.iter().for_each(Acceptor::close_connections);
            remove_acceptors(lp, id);
            if let Some(r) = reply.borrow_mut().take() {
                r.send(Ok(cut));
            }
        })
    };
    // Answered once every acceptor of the server here has no connection left.
    let left = Rc::new(Cell::new(accs.len()));
    for acc in &accs {
        let (left, reply) = (left.clone(), reply.clone());
        acc.when_empty(move |lp| {
            left.set(left.get() - 1);
            if left.get() > 0 {
                return;
            }
            lp.remove_timeout(at_deadline);
            remove_acceptors(lp, id);
            if let Some(r) = reply.borrow_mut().take() {
                r.send(Ok(0));
            }
        });
    }
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.inner.local_addr)
            .field("cores", &self.inner.loops.len())
            .finish()
    }
}
