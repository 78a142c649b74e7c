//! Servers on every core of a runtime: [`TcpServer::serve`] attaches a listener and an
//! [`Acceptor`] per core to a running [`Runtime`] and returns a [`ServerHandle`] that
//! stops, drains and shuts down that server alone, while the runtime and its other
//! servers go on. [`TcpServer::bind`] is the one-call shortcut that also builds (and
//! owns) the runtime.

use super::acceptor::Acceptor;
use super::listen::{bind_reuseport, ListenOptions};
use crate::iostream::IoStream;
use crate::reactor::{IoLoop, LoopHandle};
use crate::runtime::{invoke_all, Runtime, RuntimeBuilder, RuntimeError};
use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
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

/// The acceptors a loop runs, by the server they belong to.
#[derive(Default)]
struct LoopServers(RefCell<Vec<(ServerId, Acceptor)>>);

/// This loop's acceptor of server `id`, if it has one.
fn acceptor_of(lp: &IoLoop, id: ServerId) -> Option<Acceptor> {
    lp.local::<LoopServers>()
        .0
        .borrow()
        .iter()
        .find(|(i, _)| *i == id)
        .map(|(_, a)| a.clone())
}

/// Stops this loop's acceptor of server `id` and forgets it.
fn remove_acceptor(lp: &IoLoop, id: ServerId) -> Option<Acceptor> {
    let servers = lp.local::<LoopServers>();
    let mut list = servers.0.borrow_mut();
    let at = list.iter().position(|(i, _)| *i == id)?;
    let (_, acc) = list.swap_remove(at);
    drop(list);
    acc.stop();
    Some(acc)
}

/// A TCP server on every core of a runtime: one SO_REUSEPORT listener and one
/// [`Acceptor`] per loop, all on the same port, handing connections to `on_conn` on the
/// loop that accepted them.
///
/// [`serve`](TcpServer::serve) attaches one to a runtime the service owns (several per
/// runtime, each with its own [`ServerHandle`]); [`bind`](TcpServer::bind) builds a
/// runtime for it alone.
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
    handle: ServerHandle,
}

impl TcpServer {
    /// Serves on `addr` on every core of `runtime`, which goes on running whatever else
    /// it runs. Port 0 picks a free port, the same on every core
    /// ([`ServerHandle::local_addr`]). Returns once every core accepts; if a core cannot
    /// (its listener or acceptor fails, or setting it up panics), the cores already
    /// accepting stop again and the error says which core and why. Call it from a plain
    /// thread (it waits for the loops).
    ///
    /// ```
    /// use coreloop::{Cores, ListenOptions, Runtime, TcpServer};
    /// use std::io::{Read, Write};
    ///
    /// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
    /// let any = "127.0.0.1:0".parse().unwrap();
    /// let hello = TcpServer::serve(&rt, any, ListenOptions::default(), |_, s| {
    ///     let _ = s.write_then(b"hello\n", |_, s| s.close());
    /// })?;
    /// let bye = TcpServer::serve(&rt, any, ListenOptions::default(), |_, s| {
    ///     let _ = s.write_then(b"bye\n", |_, s| s.close());
    /// })?;
    /// hello.shutdown().unwrap(); // the other server and the runtime go on
    /// let mut got = String::new();
    /// std::net::TcpStream::connect(bye.local_addr())?.read_to_string(&mut got)?;
    /// assert_eq!(got, "bye\n");
    /// rt.shutdown().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn serve<F>(
        runtime: &Runtime,
        addr: SocketAddr,
        opts: ListenOptions,
        on_conn: F,
    ) -> io::Result<ServerHandle>
    where
        F: Fn(&IoLoop, IoStream) + Send + Sync + 'static,
    {
        TcpServer::serve_as(ServerId::next(), runtime.handles(), addr, opts, on_conn)
    }

    /// [`serve`](Self::serve) under a given id, on the loops behind `loops`.
    pub(crate) fn serve_as<F>(
        id: ServerId,
        loops: &[LoopHandle],
        addr: SocketAddr,
        opts: ListenOptions,
        on_conn: F,
    ) -> io::Result<ServerHandle>
    where
        F: Fn(&IoLoop, IoStream) + Send + Sync + 'static,
    {
        // Every core's listener is bound here, the first on `addr` and the rest on the
        // port it got, then handed to its core.
        let mut listeners = Vec::with_capacity(loops.len());
        let mut local_addr = addr;
        for _ in loops {
            let l = bind_reuseport(local_addr, opts.backlog)?;
            local_addr = l.local_addr()?;
            listeners.push(Some(l));
        }
        let listeners: Arc<Mutex<Vec<Option<TcpListener>>>> = Arc::new(Mutex::new(listeners));
        let on_conn = Arc::new(on_conn);
        let handle = ServerHandle {
            id,
            local_addr,
            loops: loops.to_vec(),
        };
        let all = handle.loops.clone();
        let started = invoke_all(loops, move |lp| -> io::Result<()> {
            let me = lp.handle();
            let shard = all
                .iter()
                .position(|h| h.same_loop(&me))
                .unwrap_or(usize::MAX);
            let listener = listeners
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(shard)
                .and_then(Option::take)
                .ok_or_else(|| io::Error::other("no listener for this core"))?;
            let on_conn = on_conn.clone();
            let acc = Acceptor::start(lp, listener, opts.clone(), move |lp, s| on_conn(lp, s))?;
            lp.local::<LoopServers>().0.borrow_mut().push((id, acc));
            Ok(())
        });
        let failure = match started {
            Ok(results) => results
                .into_iter()
                .enumerate()
                .find_map(|(shard, r)| r.err().map(|e| (shard, e))),
            Err(e) => Some((usize::MAX, io::Error::other(e))),
        };
        if let Some((shard, e)) = failure {
            let _ = handle.shutdown();
            return Err(if shard == usize::MAX {
                e
            } else {
                io::Error::new(
                    e.kind(),
                    format!("coreloop: shard {shard} cannot serve: {e}"),
                )
            });
        }
        Ok(handle)
    }

    /// Starts `builder`'s runtime and serves on `addr` on every core (the shortcut for a
    /// process with one server); see [`serve`](Self::serve).
    pub fn bind<F>(
        builder: RuntimeBuilder,
        addr: SocketAddr,
        opts: ListenOptions,
        on_conn: F,
    ) -> io::Result<TcpServer>
    where
        F: Fn(&IoLoop, IoStream) + Send + Sync + 'static,
    {
        let runtime = builder.build()?;
        match TcpServer::serve(&runtime, addr, opts, on_conn) {
            Ok(handle) => Ok(TcpServer { runtime, handle }),
            Err(e) => {
                let _ = runtime.shutdown();
                Err(e)
            }
        }
    }

    /// The address every core listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr
    }

    /// The server's handle (stop accepting, drain, count connections).
    pub fn handle(&self) -> &ServerHandle {
        &self.handle
    }

    /// Connections accepted by this server and still open, on all cores.
    pub fn open_connections(&self) -> Result<usize, RuntimeError> {
        self.handle.open_connections()
    }

    /// Stops accepting on every core and closes the listeners; open connections go on.
    pub fn stop_accepting(&self) -> Result<(), RuntimeError> {
        self.handle.stop_accepting()
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

/// One server attached to a runtime, on every core: stop it accepting, drain it, shut
/// it down or count its connections, while the runtime and its other servers go on.
/// The methods wait for every core's answer: call them from a plain thread.
///
/// ```
/// use coreloop::{Cores, ListenOptions, Runtime, TcpServer};
/// use std::time::Duration;
/// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
/// let server = TcpServer::serve(&rt, "127.0.0.1:0".parse().unwrap(), ListenOptions::default(),
///     |_, s| s.close())?;
/// assert_eq!(server.open_connections().unwrap(), 0);
/// let cut = server.drain(Duration::from_secs(1)).unwrap(); // nothing open: returns at once
/// assert_eq!(cut, 0);
/// rt.shutdown().unwrap();
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct ServerHandle {
    id: ServerId,
    local_addr: SocketAddr,
    loops: Vec<LoopHandle>,
}

impl ServerHandle {
    /// The address every core listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub(crate) fn id(&self) -> ServerId {
        self.id
    }

    /// Runs `f` with this server's acceptor on every core, by shard.
    fn on_each<T, F>(&self, f: F) -> Result<Vec<T>, RuntimeError>
    where
        T: Send + 'static,
        F: Fn(&IoLoop, Option<Acceptor>) -> T + Send + Sync + 'static,
    {
        let id = self.id;
        invoke_all(&self.loops, move |lp| f(lp, acceptor_of(lp, id)))
    }

    /// Connections this server accepted that are still open, on each core by shard id
    /// (how SO_REUSEPORT spread them).
    pub fn connections_per_core(&self) -> Result<Vec<usize>, RuntimeError> {
        self.on_each(|_, a| a.map_or(0, |a| a.connections()))
    }

    /// Connections this server accepted that are still open, on all cores.
    pub fn open_connections(&self) -> Result<usize, RuntimeError> {
        Ok(self.connections_per_core()?.into_iter().sum())
    }

    /// Stops accepting on every core and closes the listeners; open connections go on.
    pub fn stop_accepting(&self) -> Result<(), RuntimeError> {
        let id = self.id;
        invoke_all(&self.loops, move |lp| drop(remove_acceptor(lp, id)))?;
        Ok(())
    }

    /// Stops accepting, waits until the server's connections have closed or `deadline`
    /// has passed, then closes those still open; returns how many that was.
    pub fn drain(&self, deadline: Duration) -> Result<usize, RuntimeError> {
        self.drain_with(deadline, |_| {})
    }

    /// [`drain`](Self::drain), running `tell(loop)` on every core once accepting has
    /// stopped (how a protocol asks its connections to finish: HTTP closes idle ones and
    /// answers the rest with `Connection: close`).
    pub(crate) fn drain_with(
        &self,
        deadline: Duration,
        tell: impl Fn(&IoLoop) + Send + Sync + 'static,
    ) -> Result<usize, RuntimeError> {
        let end = Instant::now() + deadline;
        // The acceptors stay registered (stopped) so their connections can be counted.
        self.on_each(|_, a| {
            if let Some(a) = a {
                a.stop();
            }
        })?;
        invoke_all(&self.loops, tell)?;
        let left = loop {
            let open = self.open_connections()?;
            if open == 0 || Instant::now() >= end {
                break open;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        self.shutdown()?;
        Ok(left)
    }

    /// Stops accepting and closes every connection this server accepted, now.
    pub fn shutdown(&self) -> Result<(), RuntimeError> {
        let id = self.id;
        invoke_all(&self.loops, move |lp| {
            if let Some(acc) = remove_acceptor(lp, id) {
                acc.close_connections();
            }
        })?;
        Ok(())
    }
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.local_addr)
            .field("cores", &self.loops.len())
            .finish()
    }
}

impl fmt::Debug for TcpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpServer")
            .field("local_addr", &self.handle.local_addr)
            .field("shards", &self.runtime.shards())
            .finish()
    }
}
