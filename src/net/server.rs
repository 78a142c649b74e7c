//! `TcpServer`: an acceptor on every core of a runtime.

use super::acceptor::Acceptor;
use super::listen::{bind_reuseport, ListenOptions};
use crate::iostream::IoStream;
use crate::reactor::IoLoop;
use crate::runtime::{Runtime, RuntimeBuilder, RuntimeError};
use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

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
