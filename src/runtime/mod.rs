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
//! [`RuntimeBuilder::stop_on_signals`].
//!
//! Files: `builder.rs` (starting: cores, backend, per-core setup), `cpus.rs` (how many
//! loops "every core" means: the affinity mask and the cgroup's CPU quota), `calls.rs`
//! (calls on one core or every core), `shard.rs` (which shard a loop is), `signals.rs`
//! (SIGINT, SIGTERM), `watchdog.rs` (a loop stuck in one job).

mod builder;
mod calls;
mod cpus;
mod pool;
mod shard;
mod signals;
mod watchdog;

pub use builder::{Cores, RuntimeBuilder, SetupResult, DEFAULT_DRAIN_DEADLINE};
pub(crate) use calls::call_all;
pub use calls::CallTarget;
pub use cpus::CoresChosen;
pub(crate) use pool::{pool_of, Pool};
pub use pool::{BlockingConfig, BlockingStats, DEFAULT_BLOCKING_THREADS};
pub use shard::shard_of;

use crate::reactor::{panic_message, Call, CallError, LoopHandle};
use signals::SignalWatcher;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How to drain one attached server: within a deadline, answering how many
/// connections were cut.
pub(crate) type DrainFn = Arc<dyn Fn(Duration) -> Call<usize> + Send + Sync>;

/// The servers attached to a runtime, by id, so that a graceful stop drains them all.
#[derive(Clone, Default)]
pub(crate) struct Attached(Arc<Mutex<Vec<(u64, DrainFn)>>>);

/// A server's way back to its runtime's list (weak: a server does not keep the list of
/// a runtime that has gone).
#[derive(Clone)]
pub(crate) struct AttachedRef(std::sync::Weak<Mutex<Vec<(u64, DrainFn)>>>);

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
    pub(crate) fn add(&self, id: u64, drain: DrainFn) -> AttachedRef {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, drain));
        AttachedRef(Arc::downgrade(&self.0))
    }

    /// Drains every attached server at once, within `deadline`; how many connections
    /// were cut in all.
    fn drain_all(&self, deadline: Duration) -> usize {
        let all: Vec<DrainFn> = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, d)| d.clone())
            .collect();
        let calls: Vec<Call<usize>> = all.iter().map(|d| d(deadline)).collect();
        match crate::reactor::gather(calls).wait() {
            Ok(cut) => cut.into_iter().sum(),
            Err(e) => {
                log::warn!("coreloop: draining the runtime's servers: {e}");
                0
            }
        }
    }
}

/// Thread-per-core: one pinned [`IoLoop`] per chosen core.
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
    /// How long a stop waits for the pool's running jobs.
    drain_deadline: Duration,
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
