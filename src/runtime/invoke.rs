//! Blocking calls into a runtime's loops from a plain thread: run a closure on one
//! core, or on every core, and wait for the answers. Every call answers: with the
//! value, the panic message, or the fact that the loop was closed.

use super::{Runtime, RuntimeError, ShardError};
use crate::reactor::{send_call, CallError, IoLoop, LoopClosed, LoopHandle, Reply};
use std::sync::Arc;

/// Runs `f` on every loop behind `handles` and waits for every answer, by index.
/// Refuses (`WouldDeadlock`) on a thread that runs one of those loops.
pub(crate) fn invoke_all<T, F>(handles: &[LoopHandle], f: F) -> Result<Vec<T>, RuntimeError>
where
    T: Send + 'static,
    F: Fn(&IoLoop) -> T + Send + Sync + 'static,
{
    refuse_on_own_loop(handles)?;
    let f = Arc::new(f);
    let waiting: Vec<_> = handles
        .iter()
        .map(|h| {
            let (tx, rx) = crossbeam_channel::bounded(1);
            let f = f.clone();
            send_call(h, Reply::channel(tx), move |lp| f(lp));
            rx
        })
        .collect();
    let mut answers = Vec::with_capacity(handles.len());
    let mut failures = Vec::new();
    for (shard, rx) in waiting.into_iter().enumerate() {
        // A reply always answers: with the value, a panic, or Closed when dropped.
        match rx.recv().unwrap_or(Err(CallError::Closed)) {
            Ok(v) => answers.push(v),
            Err(e) => failures.push((shard, ShardError::from(e))),
        }
    }
    if failures.is_empty() {
        Ok(answers)
    } else {
        Err(RuntimeError::Shards(failures))
    }
}

fn refuse_on_own_loop(handles: &[LoopHandle]) -> Result<(), RuntimeError> {
    if let Some(cur) = IoLoop::current() {
        let me = cur.handle();
        if handles.iter().any(|h| h.same_loop(&me)) {
            return Err(RuntimeError::WouldDeadlock);
        }
    }
    Ok(())
}

impl Runtime {
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

    /// Runs `f` on shard `shard` and returns its value, blocking the calling thread until
    /// it has run: "do this on core k and give me the answer". A panic in `f` comes back
    /// as [`ShardError::Panicked`] with its message (the loop logs it and goes on), a
    /// closed loop as [`ShardError::Closed`]. Call it from outside the runtime's loops
    /// (`WouldDeadlock` otherwise); from a loop use [`IoLoop::submit_to`].
    ///
    /// ```
    /// use coreloop::{Cores, Runtime, RuntimeError, ShardError};
    /// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
    /// assert_eq!(rt.invoke_on(1, |lp| lp.shard_id() * 10).unwrap(), 10);
    /// match rt.invoke_on(0, |_| -> u8 { panic!("bad key") }) {
    ///     Err(RuntimeError::Shards(e)) => assert!(matches!(&e[..], [(0, ShardError::Panicked(m))] if m == "bad key")),
    ///     other => panic!("{other:?}"),
    /// }
    /// rt.shutdown().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn invoke_on<T, F>(&self, shard: usize, f: F) -> Result<T, RuntimeError>
    where
        T: Send + 'static,
        F: FnOnce(&IoLoop) -> T + Send + 'static,
    {
        let h = self
            .handles
            .get(shard)
            .ok_or(RuntimeError::NoSuchShard(shard))?;
        refuse_on_own_loop(std::slice::from_ref(h))?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        send_call(h, Reply::channel(tx), f);
        rx.recv()
            .unwrap_or(Err(CallError::Closed))
            .map_err(|e| RuntimeError::Shards(vec![(shard, e.into())]))
    }

    /// Runs `f` on every loop and returns the answers by shard id, blocking the calling
    /// thread until all have answered. Every shard answers: a panic comes back with its
    /// message, a closed loop as `Closed`. Call it from outside the runtime's loops (a loop
    /// that waited for itself would never answer: that is `WouldDeadlock`); from inside a
    /// loop use [`IoLoop::submit_to_all`].
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
        invoke_all(&self.handles, f)
    }
}
