//! `Runtime`: one pinned thread per core, each running its own [`IoLoop`].
//!
//! Loops share nothing on the hot path. They talk by sending work through
//! [`LoopHandle`]s: [`Runtime::call_on`] runs a closure on one core and
//! [`Runtime::call_on_all`] on every core and gathers the answers (Seastar's
//! `invoke_on_all`), each as a [`Call`](crate::Call) that a plain thread waits for, a
//! task awaits, or a loop continues with; the same calls exist on [`IoLoop`].
//!
//! Servers attached to a runtime are stopped with it: [`Runtime::drain`] drains every
//! one within a deadline and then stops the loops, and so does SIGINT or SIGTERM with
//! [`RuntimeBuilder::stop_on_signals`]. A new instance of the service can take over
//! their listening sockets ([`RuntimeBuilder::upgrade_socket`],
//! [`RuntimeBuilder::take_over`], [`Runtime::ready`]) before the old one drains.
//!
//! Files: `builder.rs` (starting: cores, backend, per-core setup), `cpus.rs` (how many
//! loops "every core" means: the affinity mask and the cgroup's CPU quota), `calls.rs`
//! (calls on one core or every core), `shard.rs` (which shard a loop is), `signals.rs`
//! (SIGINT, SIGTERM), `watchdog.rs` (a loop stuck in one job), `handover.rs` (handing
//! the listening sockets to a new instance, and taking them), `inherit.rs` (sockets
//! taken over or passed by systemd, which servers claim instead of binding).

mod builder;
mod calls;
mod cpus;
mod handover;
mod inherit;
mod pool;
mod shard;
mod signals;
mod watchdog;

pub use builder::{Cores, RuntimeBuilder, SetupResult, DEFAULT_DRAIN_DEADLINE};
pub(crate) use calls::call_all;
pub use calls::CallTarget;
pub use cpus::CoresChosen;
pub(crate) use inherit::{Group as InheritedGroup, Origin as InheritedOrigin};
pub(crate) use pool::{pool_of, Pool};
pub use pool::{BlockingConfig, BlockingStats, DEFAULT_BLOCKING_THREADS};
pub use shard::shard_of;

use crate::reactor::{panic_message, Call, CallError, LoopHandle};
use signals::SignalWatcher;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the runtime does with a server attached to it (the server layer implements
/// it): drain it at a graceful stop, hand its listening sockets to a new instance.
pub(crate) trait AttachedServer: Send + Sync {
    /// Drains it within `deadline`, answering how many connections were cut.
    fn drain(&self, deadline: Duration) -> Call<usize>;
    /// Stops it accepting (its listeners close; open connections go on).
    fn stop_accepting(&self) -> Call<()>;
    /// Its address and a copy of every listening socket it accepts from, by core.
    fn listeners(&self) -> Call<(SocketAddr, Vec<OwnedFd>)>;
}

type AttachedList = Vec<(u64, Arc<dyn AttachedServer>)>;

/// The servers attached to a runtime, by id, so that a graceful stop drains them all
/// (and a hand-over passes all their sockets).
#[derive(Clone, Default)]
pub(crate) struct Attached(Arc<Mutex<AttachedList>>);

/// A server's way back to its runtime's list (weak: a server does not keep the list of
/// a runtime that has gone).
#[derive(Clone)]
pub(crate) struct AttachedRef(std::sync::Weak<Mutex<AttachedList>>);

impl AttachedRef {
    /// Takes server `id` off the list (it has been drained or closed).
    pub(crate) fn remove(&self, id: u64) {
        if let Some(list) = self.0.upgrade() {
            list.lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|(i, _)| *i != id);
        }
    }
}

impl Attached {
    /// Puts server `id` on the list; returns its way back.
    pub(crate) fn add(&self, id: u64, server: Arc<dyn AttachedServer>) -> AttachedRef {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, server));
        AttachedRef(Arc::downgrade(&self.0))
    }

    /// The servers attached now, in the order they were attached.
    fn list(&self) -> Vec<Arc<dyn AttachedServer>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// Drains every attached server at once, within `deadline`; how many connections
    /// were cut in all.
    fn drain_all(&self, deadline: Duration) -> usize {
        let calls: Vec<Call<usize>> = self.list().iter().map(|s| s.drain(deadline)).collect();
        match crate::reactor::gather(calls).wait() {
            Ok(cut) => cut.into_iter().sum(),
            Err(e) => {
                log::warn!("coreloop: draining the runtime's servers: {e}");
                0
            }
        }
    }
}

/// Thread-per-core: one pinned [`IoLoop`](crate::IoLoop) per chosen core.
///
/// Stopping it: [`shutdown`](Self::shutdown) stops every loop now (open connections
/// are closed); [`drain`](Self::drain) first drains every server attached to it, within
/// a deadline; [`wait`](Self::wait) waits until the loops stop some other way (a
/// signal with [`RuntimeBuilder::stop_on_signals`], a handle's
/// [`stop`](LoopHandle::stop)). Dropping a runtime is [`shutdown`](Self::shutdown)
/// with the errors logged.
///
/// ```
/// use coreloop::Runtime;
/// let rt = Runtime::builder().build()?;
/// // Ask every shard for its id and gather the answers.
/// let ids = rt.call_on_all(|lp| lp.shard_id()).wait().unwrap();
/// assert_eq!(ids, (0..rt.shards()).collect::<Vec<_>>());
/// rt.shutdown().unwrap();
/// # Ok::<(), coreloop::RuntimeError>(())
/// ```
pub struct Runtime {
    handles: Vec<LoopHandle>,
    threads: Vec<Option<JoinHandle<io::Result<()>>>>,
    signals: Option<SignalWatcher>,
    watchdog: Option<watchdog::Watchdog>,
    attached: Attached,
    /// The blocking pool (`call_blocking`), closed once the loops have stopped.
    pool: pool::Pool,
    /// Listening sockets taken over from the instance this one replaces, until servers
    /// claim them.
    inherited: inherit::Inherited,
    /// Where this instance is in a hand-over (`None`: no upgrade socket).
    upgrade: Mutex<Option<Upgrade>>,
    /// How long a drain started by a signal or a hand-over waits, and a stop waits for
    /// the pool's running jobs.
    drain_deadline: Duration,
}

/// The upgrade socket's state.
enum Upgrade {
    /// Bound at `path` (a fresh start); hand-overs are served once ready.
    Fresh(socket2::Socket, PathBuf),
    /// Sockets taken over; the old instance is told once this one is ready.
    TakenOver(handover::TakenOver, PathBuf),
    /// Ready: serving hand-overs.
    Serving(handover::HandoverServer),
}

impl Runtime {
    /// A builder with the defaults: every core, pinned, `Backend::Auto`.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// How many loops run.
    pub fn shards(&self) -> usize {
        self.handles.len()
    }

    /// The handle of shard `shard`. Panics if `shard >= self.shards()`.
    pub fn handle(&self, shard: usize) -> &LoopHandle {
        &self.handles[shard]
    }

    /// Every shard's handle, by shard id.
    pub fn handles(&self) -> &[LoopHandle] {
        &self.handles
    }

    /// Asks every loop to stop, without waiting. Loops already closed are skipped.
    pub fn stop(&self) {
        for h in &self.handles {
            let _ = h.stop();
        }
    }

    /// Waits until every loop has stopped (through [`stop`](Self::stop), a handle, or a
    /// signal with [`RuntimeBuilder::stop_on_signals`]) and reports every shard that
    /// ended by a panic or an I/O error.
    pub fn wait(mut self) -> Result<(), RuntimeError> {
        self.join_all()
    }

    /// Stops every loop now (their open connections are closed), waits for them, and
    /// reports as [`wait`](Self::wait) does. The blocking pool's queued jobs answer
    /// [`CallError::Closed`]; its running jobs get the
    /// [`drain_deadline`](RuntimeBuilder::drain_deadline) to finish (every stop waits
    /// that long at most for them, as tokio's runtime waits for `spawn_blocking` work).
    pub fn shutdown(self) -> Result<(), RuntimeError> {
        self.stop();
        self.wait()
    }

    /// Stops gracefully: drains every server attached to the runtime at once (each
    /// stops accepting, lets what is in flight finish, and closes what is still open at
    /// `deadline`), closes the blocking pool (jobs still queued answer
    /// [`CallError::Closed`], running ones may finish until `deadline`), then stops the
    /// loops and waits for them. Returns how many connections were cut at the deadline.
    ///
    /// ```
    /// use coreloop::{Cores, Runtime, TcpServer};
    /// use std::time::Duration;
    /// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
    /// let _echo = TcpServer::new(|_, s| s.close()).serve(&rt, "127.0.0.1:0".parse().unwrap())?;
    /// assert_eq!(rt.drain(Duration::from_secs(5))?, 0);
    /// # Ok::<(), coreloop::RuntimeError>(())
    /// ```
    pub fn drain(self, deadline: Duration) -> Result<usize, RuntimeError> {
        let end = std::time::Instant::now() + deadline;
        let cut = self.attached.drain_all(deadline);
        self.pool
            .close(end.saturating_duration_since(std::time::Instant::now()));
        self.shutdown()?;
        Ok(cut)
    }

    /// Its blocking pool.
    pub(crate) fn blocking_pool(&self) -> Pool {
        self.pool.clone()
    }

    /// The servers attached to this runtime.
    pub(crate) fn attached(&self) -> &Attached {
        &self.attached
    }

    /// The listening sockets for a server about to serve on `addr`, if this instance
    /// took them over from the one it replaces (or systemd passed them): the server
    /// accepts from those instead of binding. Port 0 takes the first group left on the
    /// same IP (the predecessor's port).
    pub(crate) fn claim_listeners(&self, addr: SocketAddr) -> Option<InheritedGroup> {
        inherit::claim(&self.inherited, addr)
    }

    /// Says this instance serves: call it once every server is attached.
    ///
    /// If it took over from a running instance ([`RuntimeBuilder::take_over`]), that
    /// one now stops accepting (this one accepts from the same sockets, so no
    /// connection queued in them is lost), drains within its drain deadline, and its
    /// [`wait`](Self::wait) returns. Sockets taken over that no server claimed are
    /// closed (logged). With an [upgrade socket](RuntimeBuilder::upgrade_socket), this
    /// instance hands over to the next one from now on. Without either it does nothing.
    ///
    /// ```
    /// use coreloop::{Cores, Runtime, TcpServer};
    /// use std::io::Read;
    /// let path = std::env::temp_dir().join(format!("coreloop-doc-{}.sock", std::process::id()));
    /// let old = Runtime::builder().cores(Cores::Count(1)).upgrade_socket(&path).build()?;
    /// let greet = |gen: &'static str| move |_: &coreloop::IoLoop, s: coreloop::IoStream| {
    ///     s.write(gen.as_bytes());
    ///     s.close();
    /// };
    /// let server = TcpServer::new(greet("old")).serve(&old, "127.0.0.1:0".parse().unwrap())?;
    /// old.ready()?;
    /// // A new instance (here in the same process) takes over the same sockets.
    /// let new = Runtime::builder().cores(Cores::Count(2)).upgrade_socket(&path).take_over(true).build()?;
    /// let again = TcpServer::new(greet("new")).serve(&new, "127.0.0.1:0".parse().unwrap())?;
    /// assert_eq!(again.local_addr(), server.local_addr());
    /// new.ready()?;
    /// old.wait()?; // drained and stopped by the hand-over
    /// let mut got = String::new();
    /// std::net::TcpStream::connect(server.local_addr())?.read_to_string(&mut got)?;
    /// assert_eq!(got, "new");
    /// new.shutdown()?;
    /// # Ok::<(), coreloop::RuntimeError>(())
    /// ```
    pub fn ready(&self) -> Result<(), RuntimeError> {
        for g in self.inherited.take_all() {
            log::warn!(
                "coreloop: {} listening socket(s) of {} taken over, but no server serves that address: closed (connections queued in them are lost)",
                g.listeners.len(),
                g.addr
            );
        }
        let mut upgrade = self.upgrade.lock().unwrap_or_else(|p| p.into_inner());
        let (listener, path) = match upgrade.take() {
            None => return Ok(()),
            Some(serving @ Upgrade::Serving(_)) => {
                *upgrade = Some(serving);
                return Ok(());
            }
            Some(Upgrade::Fresh(listener, path)) => (listener, path),
            Some(Upgrade::TakenOver(taken, path)) => (taken.ready().0, path),
        };
        let ctx = handover::Ctx {
            attached: self.attached.clone(),
            loops: self.handles.clone(),
            deadline: self.drain_deadline,
        };
        *upgrade = Some(Upgrade::Serving(handover::HandoverServer::start(
            listener, path, ctx,
        )?));
        Ok(())
    }

    pub(crate) fn join_all(&mut self) -> Result<(), RuntimeError> {
        let mut failures = Vec::new();
        for (shard, t) in self.threads.iter_mut().enumerate() {
            let Some(t) = t.take() else { continue };
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push((shard, ShardError::Io(e))),
                Err(payload) => failures.push((
                    shard,
                    ShardError::Panicked(panic_message(&*payload).to_string()),
                )),
            }
            // One loop failing must not leave the others running forever.
            if !failures.is_empty() {
                for h in &self.handles {
                    let _ = h.stop();
                }
            }
        }
        self.pool.close(self.drain_deadline);
        if let Some(s) = self.signals.take() {
            s.close();
        }
        let upgrade = self
            .upgrade
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match upgrade {
            Some(Upgrade::Serving(h)) => h.close(),
            Some(Upgrade::Fresh(_, path)) => handover::remove_socket_file(&path),
            // The old instance serves on when this one goes before being ready.
            Some(Upgrade::TakenOver(..)) | None => {}
        }
        if let Some(w) = self.watchdog.take() {
            w.close();
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(RuntimeError::Shards(failures))
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if self.threads.iter().any(Option::is_some) {
            self.stop();
            if let Err(e) = self.join_all() {
                log::error!("coreloop: runtime dropped: {e}");
            }
        }
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("shards", &self.handles.len())
            .finish()
    }
}

/// Why a shard of a runtime failed.
#[derive(Debug)]
pub enum ShardError {
    /// The loop thread panicked outside any callback; the panic's message.
    Panicked(String),
    /// The loop ended with an I/O error from its poller.
    Io(io::Error),
    /// The shard's setup (`RuntimeBuilder::on_start`) failed or panicked; why.
    Setup(String),
}

impl fmt::Display for ShardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardError::Panicked(m) => write!(f, "panicked: {m}"),
            ShardError::Io(e) => write!(f, "I/O error: {e}"),
            ShardError::Setup(m) => write!(f, "setup failed: {m}"),
        }
    }
}

/// What went wrong starting or stopping a [`Runtime`].
///
/// It converts into `io::Error`, so `?` works in a function returning `io::Result`.
#[derive(Debug)]
pub enum RuntimeError {
    /// These shards failed, by shard id.
    Shards(Vec<(usize, ShardError)>),
    /// The runtime could not start: no such core, no thread, no loop (its poller could
    /// not be set up), or a signal handler could not be installed.
    Io(io::Error),
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeError::Shards(list) => {
                for (i, (shard, e)) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "shard {shard}: {e}")?;
                }
                Ok(())
            }
            RuntimeError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RuntimeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RuntimeError::Io(e) => Some(e),
            RuntimeError::Shards(_) => None,
        }
    }
}

impl From<io::Error> for RuntimeError {
    fn from(e: io::Error) -> RuntimeError {
        RuntimeError::Io(e)
    }
}

impl From<RuntimeError> for io::Error {
    fn from(e: RuntimeError) -> io::Error {
        match e {
            RuntimeError::Io(e) => e,
            other => io::Error::other(other),
        }
    }
}

impl From<CallError> for RuntimeError {
    fn from(e: CallError) -> RuntimeError {
        RuntimeError::Io(e.into())
    }
}
