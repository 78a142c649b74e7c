//! Which shard of a runtime a loop is: its id, how many there are, and every shard's
//! handle. Set by the runtime on each loop's thread before its setup runs; a loop made
//! alone is shard 0 of 1.

use super::CoresChosen;
use crate::reactor::{IoLoop, LoopHandle};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

/// The handles of every shard of a runtime, shared by its loops; set once, before
/// `Runtime::build` returns.
pub(crate) type Peers = Arc<OnceLock<Vec<LoopHandle>>>;

/// A loop's place in its runtime (a per-loop value, `IoLoop::local`).
pub(crate) struct Shard {
    id: usize,
    count: usize,
    peers: Peers,
    /// Why the runtime runs `count` loops (`None` for a loop made alone).
    chosen: Option<Arc<CoresChosen>>,
}

impl Default for Shard {
    fn default() -> Self {
        Shard {
            id: 0,
            count: 1,
            peers: Peers::default(),
            chosen: None,
        }
    }
}

/// The shard that owns `key` among `shards`: the same answer on every core and every
/// thread of the process (a fixed hash, not a randomly seeded one), spread evenly.
/// How a service that keeps data sharded by key finds the owner to forward a request to.
///
/// ```
/// let a = coreloop::shard_of("user:42", 4);
/// assert!(a < 4);
/// assert_eq!(a, coreloop::shard_of("user:42", 4)); // stable
/// assert_eq!(coreloop::shard_of(&b"any key"[..], 1), 0);
/// ```
pub fn shard_of<K: Hash + ?Sized>(key: &K, shards: usize) -> usize {
    let mut h = std::hash::DefaultHasher::new(); // SipHash with fixed keys
    key.hash(&mut h);
    // Lemire's multiply-shift: uniform over 0..shards without a division.
    ((u128::from(h.finish()) * shards as u128) >> 64) as usize
}

/// Makes `lp` shard `id` of `count`, with `peers` (filled once every loop exists) and
/// why its runtime runs that many.
pub(crate) fn set_shard(
    lp: &IoLoop,
    id: usize,
    count: usize,
    peers: Peers,
    chosen: Arc<CoresChosen>,
) {
    let shard = Shard {
        id,
        count,
        peers,
        chosen: Some(chosen),
    };
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

    /// Why its runtime runs that many loops (`None` for a loop made alone).
    pub(crate) fn cores_chosen(&self) -> Option<CoresChosen> {
        self.local::<Shard>().chosen.as_deref().cloned()
    }

    /// The handle of shard `id` of this loop's [`Runtime`](crate::Runtime), to send it
    /// work (see [`call_on`](Self::call_on)). Known once the runtime is built: not
    /// yet inside `on_start` setup closures. `None` for a loop made alone.
    ///
    /// ```
    /// use coreloop::{Cores, Runtime};
    /// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
    /// let ok = rt.call_on_all(|lp| {
    ///     let next = (lp.shard_id() + 1) % lp.shard_count();
    ///     lp.shard_handle(next).is_some()
    /// }).wait();
    /// assert_eq!(ok, Ok(vec![true, true]));
    /// rt.shutdown().unwrap();
    /// # Ok::<(), coreloop::RuntimeError>(())
    /// ```
    pub fn shard_handle(&self, id: usize) -> Option<LoopHandle> {
        self.local::<Shard>().peers.get()?.get(id).cloned()
    }

    /// The shard of this loop's runtime that owns `key` ([`shard_of`] with this
    /// runtime's shard count).
    pub fn shard_of<K: Hash + ?Sized>(&self, key: &K) -> usize {
        shard_of(key, self.shard_count())
    }

    /// Every shard's handle, by shard id (this loop's alone if it is not in a runtime).
    pub fn shard_handles(&self) -> Vec<LoopHandle> {
        match self.local::<Shard>().peers.get() {
            Some(all) => all.clone(),
            None => vec![self.handle()],
        }
    }
}
