//! `Runtime`: one pinned thread per core, each running its own [`IoLoop`].
//!
//! Loops share nothing on the hot path. They talk by sending callbacks through
//! [`LoopHandle`]s; [`Runtime::broadcast`] sends one to every core,
//! [`Runtime::invoke_on`] runs a closure on one core and [`Runtime::invoke_on_all`] on
//! every core and gather the answers (Seastar's `invoke_on_all`), which is how statistics
//! are merged and how a service reaches its sharded state from a plain thread. From a
//! loop, the same without blocking is [`IoLoop::submit_to`] and
//! [`IoLoop::submit_to_all`].
//!
//! Files: `builder.rs` (starting: cores, backend, per-core setup), `cpus.rs` (how many
//! loops "every core" means: the affinity mask and the cgroup's CPU quota), `invoke.rs` (blocking
//! calls from plain threads), `shard.rs` (which shard a loop is, and the non-blocking
//! calls between shards), `signals.rs` (SIGINT, SIGTERM).

mod builder;
mod cpus;
mod invoke;
mod shard;
mod signals;
mod watchdog;

pub use builder::{Cores, RuntimeBuilder, SetupResult};
pub use cpus::CoresChosen;
pub(crate) use invoke::invoke_all;
pub use shard::shard_of;
pub(crate) use signals::wait_for_stop_signal;

use crate::reactor::{panic_message, CallError, LoopHandle};
use signals::SignalWatcher;
use std::fmt;
use std::io;
use std::thread::JoinHandle;

/// Thread-per-core: one pinned [`IoLoop`] per chosen core.
///
/// Dropping a runtime stops and joins its loops (errors are logged); call
/// [`shutdown`](Self::shutdown) or [`wait`](Self::wait) to see them.
///
/// ```
/// use coreloop::Runtime;
/// let rt = Runtime::builder().build()?;
/// // Ask every shard for its id and gather the answers.
/// let ids = rt.invoke_on_all(|lp| lp.shard_id()).unwrap();
/// assert_eq!(ids, (0..rt.shards()).collect::<Vec<_>>());
/// rt.shutdown().unwrap();
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Runtime {
    handles: Vec<LoopHandle>,
    threads: Vec<Option<JoinHandle<io::Result<()>>>>,
    signals: Option<SignalWatcher>,
    watchdog: Option<watchdog::Watchdog>,
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

    /// Stops every loop, waits for them, and reports as [`wait`](Self::wait) does.
    pub fn shutdown(self) -> Result<(), RuntimeError> {
        self.stop();
        self.wait()
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

/// Why a shard did not do what was asked.
#[derive(Debug)]
pub enum ShardError {
    /// The call (or the loop thread, outside any callback) panicked; the panic's message.
    Panicked(String),
    /// `start()` failed: the poller returned this error.
    Io(io::Error),
    /// The loop was closed: the call did not run.
    Closed,
    /// The shard's setup (`RuntimeBuilder::on_start`) failed or panicked; why.
    Setup(String),
}

impl fmt::Display for ShardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardError::Panicked(m) => write!(f, "panicked: {m}"),
            ShardError::Io(e) => write!(f, "I/O error: {e}"),
            ShardError::Closed => f.write_str("loop closed"),
            ShardError::Setup(m) => write!(f, "setup failed: {m}"),
        }
    }
}

impl From<CallError> for ShardError {
    fn from(e: CallError) -> ShardError {
        match e {
            CallError::Panicked(m) => ShardError::Panicked(m),
            CallError::Closed => ShardError::Closed,
        }
    }
}

/// What went wrong in a [`Runtime`] call.
#[derive(Debug)]
pub enum RuntimeError {
    /// These shards failed, by shard id.
    Shards(Vec<(usize, ShardError)>),
    /// A blocking call was made from one of the runtime's own loops (it would wait for
    /// itself).
    WouldDeadlock,
    /// There is no shard with this id.
    NoSuchShard(usize),
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
            RuntimeError::WouldDeadlock => {
                f.write_str("a runtime loop cannot block waiting for the runtime's loops")
            }
            RuntimeError::NoSuchShard(s) => write!(f, "no shard {s} in this runtime"),
        }
    }
}

impl std::error::Error for RuntimeError {}
