//! Which shard of a runtime a loop is: its id, how many there are, and every shard's
//! handle. Set by the runtime on each loop's thread before its setup runs; a loop made
//! alone is shard 0 of 1.

use crate::reactor::{IoLoop, LoopHandle};
use std::sync::{Arc, OnceLock};

/// The handles of every shard of a runtime, shared by its loops; set once, before
/// `Runtime::build` returns.
pub(crate) type Peers = Arc<OnceLock<Vec<LoopHandle>>>;

/// A loop's place in its runtime (a per-loop value, `IoLoop::local`).
pub(crate) struct Shard {
    id: usize,
    count: usize,
    peers: Peers,
}

impl Default for Shard {
    fn default() -> Self {
        Shard {
            id: 0,
            count: 1,
            peers: Peers::default(),
        }
    }
}

/// Makes `lp` shard `id` of `count`, with `peers` (filled once every loop exists).
pub(crate) fn set_shard(lp: &IoLoop, id: usize, count: usize, peers: Peers) {
    let shard = Shard { id, count, peers };
    lp.set_local(shard);
}

impl IoLoop {
    /// This loop's shard id in its [`Runtime`](crate::Runtime) (0 for a loop made alone).
    pub fn shard_id(&self) -> usize {
        self.local::<Shard>().id
    }

    /// How many loops its [`Runtime`](crate::Runtime) runs (1 for a loop made alone).
    pub fn shard_count(&self) -> usize {
        self.local::<Shard>().count
    }

    /// The handle of shard `id` of this loop's [`Runtime`](crate::Runtime), to send it
    /// work (see [`submit_to`](Self::submit_to)). Known once the runtime is built: not
    /// yet inside `on_start` setup closures. `None` for a loop made alone.
    ///
    /// ```
    /// use coreloop::{Cores, Runtime};
    /// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
    /// let ok = rt.invoke_on_all(|lp| {
    ///     let next = (lp.shard_id() + 1) % lp.shard_count();
    ///     lp.shard_handle(next).is_some()
    /// }).unwrap();
    /// assert_eq!(ok, vec![true, true]);
    /// rt.shutdown().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn shard_handle(&self, id: usize) -> Option<LoopHandle> {
        self.local::<Shard>().peers.get()?.get(id).cloned()
    }
}
