//! `Runtime`: one pinned thread per core, each running its own [`IoLoop`].
//!
//! Loops share nothing on the hot path. They talk by sending callbacks through
//! [`LoopHandle`]s; [`Runtime::broadcast`] sends one to every core and
//! [`Runtime::invoke_on_all`] gathers one answer from each (Seastar's `invoke_on_all`),
//! which is how statistics are merged and how a service shards its state.

mod shard;
mod signals;

pub(crate) use signals::wait_for_stop_signal;

use crate::poller::Backend;
use crate::reactor::{panic_message, IoLoop, LoopClosed, LoopHandle};
use shard::{set_shard, Peers};
use signals::SignalWatcher;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

type Setup = Arc<dyn Fn(&IoLoop, usize) + Send + Sync + 'static>;

/// Which cores a [`Runtime`] runs on.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Cores {
    /// One loop on every core this process may run on.
    #[default]
    All,
    /// This many loops, on the first cores (wrapping around if there are more loops than
    /// cores).
    Count(usize),
    /// One loop on each of these core ids.
    List(Vec<usize>),
}

/// Configures and starts a [`Runtime`].
///
/// ```
/// use coreloop::{Backend, Cores, Runtime};
/// let rt = Runtime::builder()
///     .cores(Cores::Count(2))
///     .backend(Backend::Auto)
///     .pin(true)
///     .on_start(|lp, shard| log::info!("shard {shard} on {:?}", lp.backend()))
///     .build()?;
/// assert_eq!(rt.shards(), 2);
/// rt.shutdown().unwrap();
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct RuntimeBuilder {
    cores: Cores,
    pin: bool,
    backend: Backend,
    setups: Vec<Setup>,
    stop_on_signals: bool,
    name: String,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            cores: Cores::All,
            pin: true,
            backend: Backend::Auto,
            setups: Vec::new(),
            stop_on_signals: false,
            name: "coreloop".to_string(),
        }
    }
}

impl RuntimeBuilder {
    /// Which cores to run on (default: all).
    pub fn cores(mut self, cores: Cores) -> Self {
        self.cores = cores;
        self
    }

    /// Pin each loop thread to its core (default: on). A failed pin is logged, not fatal.
    pub fn pin(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    /// The backend of every loop (default: `Auto`). A forced backend that cannot be set
    /// up makes [`build`](Self::build) fail.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Runs `setup(loop, shard_id)` on each loop's thread before the loop starts: where a
    /// service opens its listeners and builds its per-core state. Several setups run in
    /// the order they were added.
    pub fn on_start<F>(mut self, setup: F) -> Self
    where
        F: Fn(&IoLoop, usize) + Send + Sync + 'static,
    {
        self.setups.push(Arc::new(setup));
        self
    }

    /// Each loop, while busy, gathers completions for up to `wait` once one has come
    /// (default: off): less CPU per request near saturation for up to `wait` more
    /// latency there, none at moderate load; see
    /// [`IoLoop::set_batch_wait`] (io_uring on Linux 6.12 or later; ignored elsewhere).
    ///
    /// ```
    /// use coreloop::{Cores, Runtime};
    /// use std::time::Duration;
    /// let rt = Runtime::builder()
    ///     .cores(Cores::Count(1))
    ///     .batch_wait(Duration::from_micros(100))
    ///     .build()?;
    /// rt.shutdown().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn batch_wait(self, wait: Duration) -> Self {
        self.on_start(move |lp, _| {
            lp.set_batch_wait(wait);
        })
    }

    /// Stop every loop gracefully on SIGINT or SIGTERM (default: off).
    pub fn stop_on_signals(mut self, on: bool) -> Self {
        self.stop_on_signals = on;
        self
    }

    /// Prefix of the loop threads' names (`coreloop-0`, `coreloop-1`, …).
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Starts the loops. Returns once every loop exists and has a handle, so messages
    /// can be sent at once; setup closures may still be running.
    pub fn build(self) -> io::Result<Runtime> {
        let placement = self.placement()?;
        let n = placement.len();
        let mut threads = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        let peers: Peers = Arc::default();
        for (shard, core) in placement.into_iter().enumerate() {
            let (tx, rx) = crossbeam_channel::bounded(1);
            let setups = self.setups.clone();
            let peers = peers.clone();
            let backend = self.backend;
            let pin = self.pin;
            let spawned = std::thread::Builder::new()
                .name(format!("{}-{shard}", self.name))
                .spawn(move || {
                    if let (true, Some(core)) = (pin, core) {
                        if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                            log::warn!("coreloop: could not pin shard {shard} to core {core}");
                        }
                    }
                    let lp = match IoLoop::with_backend(backend) {
                        Ok(lp) => lp,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return Ok(());
                        }
                    };
                    set_shard(&lp, shard, n, peers);
                    let _ = tx.send(Ok(lp.handle()));
                    // Close the loop however this thread ends, so handles see it is gone.
                    let _close = CloseOnDrop(lp.clone());
                    for setup in &setups {
                        setup(&lp, shard);
                    }
                    lp.start()
                });
            let thread = match spawned {
                Ok(t) => t,
                Err(e) => {
                    stop_and_join(&handles, threads);
                    return Err(e);
                }
            };
            threads.push(Some(thread));
            match rx.recv() {
                Ok(Ok(h)) => handles.push(h),
                Ok(Err(e)) => {
                    stop_and_join(&handles, threads);
                    return Err(e);
                }
                Err(_) => {
                    stop_and_join(&handles, threads);
                    return Err(io::Error::other(format!(
                        "coreloop: shard {shard} ended before its loop was built"
                    )));
                }
            }
        }
        // Every loop sees every shard's handle from here on (IoLoop::shard_handle).
        let _ = peers.set(handles.clone());
        let mut rt = Runtime {
            handles,
            threads,
            signals: None,
        };
        if self.stop_on_signals {
            let loops = rt.handles.clone();
            rt.signals = Some(SignalWatcher::start(move |sig| {
                log::info!("coreloop: signal {sig}: stopping {} loops", loops.len());
                for h in &loops {
                    let _ = h.stop();
                }
            })?);
        }
        Ok(rt)
    }

    /// The core of each shard (`None`: not pinned).
    fn placement(&self) -> io::Result<Vec<Option<usize>>> {
        let available: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        let fallback_count = || std::thread::available_parallelism().map_or(1, |n| n.get());
        let placement = match &self.cores {
            Cores::All if available.is_empty() => vec![None; fallback_count()],
            Cores::All => available.iter().map(|&c| Some(c)).collect(),
            Cores::Count(n) => (0..*n)
                .map(|i| (!available.is_empty()).then(|| available[i % available.len()]))
                .collect(),
            Cores::List(list) => {
                if let Some(bad) = list.iter().find(|c| !available.contains(c)) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("core {bad} is not one this process may run on: {available:?}"),
                    ));
                }
                list.iter().map(|&c| Some(c)).collect()
            }
        };
        if placement.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a runtime needs at least one core",
            ));
        }
        Ok(placement)
    }
}

/// Closes a loop when its thread leaves, also by unwinding.
struct CloseOnDrop(IoLoop);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

fn stop_and_join(handles: &[LoopHandle], threads: Vec<Option<JoinHandle<io::Result<()>>>>) {
    for h in handles {
        let _ = h.stop();
    }
    for t in threads.into_iter().flatten() {
        let _ = t.join();
    }
}

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

    /// Runs `f` on every loop. Returns the first `LoopClosed`, after trying every loop.
    ///
    /// ```
    /// use coreloop::{Cores, Runtime};
    /// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
    /// rt.broadcast(|lp| log::info!("hello from shard {}", lp.shard_id())).unwrap();
    /// rt.shutdown().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[track_caller]
    pub fn broadcast<F>(&self, f: F) -> Result<(), LoopClosed>
    where
        F: Fn(&IoLoop) + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        let mut result = Ok(());
        for h in &self.handles {
            let f = f.clone();
            if let Err(e) = h.add_callback(move |lp| f(lp)) {
                result = result.and(Err(e));
            }
        }
        result
    }

    /// Runs `f` on every loop and returns the answers by shard id, blocking the calling
    /// thread until all have answered. Call it from outside the runtime's loops (a loop
    /// that waited for itself would never answer: that is `WouldDeadlock`); from inside a
    /// loop use [`IoLoop::submit_to`].
    ///
    /// ```
    /// use coreloop::{Cores, Runtime};
    /// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
    /// let total: usize = rt.invoke_on_all(|lp| lp.shard_id() + 1).unwrap().iter().sum();
    /// assert_eq!(total, 3);
    /// rt.shutdown().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn invoke_on_all<T, F>(&self, f: F) -> Result<Vec<T>, RuntimeError>
    where
        T: Send + 'static,
        F: Fn(&IoLoop) -> T + Send + Sync + 'static,
    {
        if let Some(cur) = IoLoop::current() {
            if self.handles.iter().any(|h| h.shared.id == cur.id()) {
                return Err(RuntimeError::WouldDeadlock);
            }
        }
        let f = Arc::new(f);
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut failures = Vec::new();
        for (shard, h) in self.handles.iter().enumerate() {
            let f = f.clone();
            let tx = tx.clone();
            let sent = h.add_callback(move |lp| {
                let _ = tx.send((shard, f(lp)));
            });
            if sent.is_err() {
                failures.push((shard, ShardError::Closed));
            }
        }
        drop(tx);
        let mut answers: Vec<Option<T>> = (0..self.handles.len()).map(|_| None).collect();
        // Every callback holds a sender; when the last one has answered, panicked (its
        // sender is dropped while unwinding) or been dropped by a closing loop, recv ends.
        while let Ok((shard, v)) = rx.recv() {
            answers[shard] = Some(v);
        }
        for (shard, a) in answers.iter().enumerate() {
            if a.is_none() && !failures.iter().any(|(s, _)| *s == shard) {
                failures.push((shard, ShardError::NoAnswer));
            }
        }
        if failures.is_empty() {
            Ok(answers.into_iter().flatten().collect())
        } else {
            failures.sort_by_key(|(s, _)| *s);
            Err(RuntimeError::Shards(failures))
        }
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

    fn join_all(&mut self) -> Result<(), RuntimeError> {
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
    /// The loop thread panicked outside any callback (callbacks' panics are caught and
    /// logged by the loop); the panic's message.
    Panicked(String),
    /// `start()` failed: the poller returned this error.
    Io(io::Error),
    /// The loop was closed before the request reached it.
    Closed,
    /// The request reached the loop but no answer came back: the callback panicked (see
    /// the log) or the loop closed before running it.
    NoAnswer,
}

impl fmt::Display for ShardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardError::Panicked(m) => write!(f, "panicked: {m}"),
            ShardError::Io(e) => write!(f, "I/O error: {e}"),
            ShardError::Closed => f.write_str("loop closed"),
            ShardError::NoAnswer => f.write_str("no answer (callback panicked or loop closed)"),
        }
    }
}

/// What went wrong in a [`Runtime`] call.
#[derive(Debug)]
pub enum RuntimeError {
    /// These shards failed, by shard id.
    Shards(Vec<(usize, ShardError)>),
    /// A blocking gather was called from one of the runtime's own loops.
    WouldDeadlock,
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
        }
    }
}

impl std::error::Error for RuntimeError {}
