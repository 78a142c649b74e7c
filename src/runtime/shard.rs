//! Which shard of a runtime a loop is: its id, how many there are, and every shard's
//! handle. Set by the runtime on each loop's thread before its setup runs; a loop made
//! alone is shard 0 of 1.

use super::CoresChosen;
use crate::reactor::{CallError, IoLoop, LoopHandle};
use std::cell::RefCell;
use std::hash::{Hash, Hasher};
use std::rc::Rc;
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

    /// Runs `f` on every shard of this loop's runtime (on this loop alone if it is not in
    /// one), then `then` here with every outcome, by shard id, once all have answered.
    /// The non-blocking gather for code running on a loop (where
    /// [`Runtime::invoke_on_all`](crate::Runtime::invoke_on_all), which blocks, would
    /// wait for itself).
    ///
    /// ```
    /// use coreloop::{Cores, Runtime};
    /// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// rt.handle(1).add_callback(move |lp| {
    ///     lp.submit_to_all(|far| far.shard_id() + 10, move |_, all| {
    ///         tx.send(all).unwrap();
    ///     });
    /// }).unwrap();
    /// assert_eq!(rx.recv().unwrap(), vec![Ok(10), Ok(11)]);
    /// rt.shutdown().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[track_caller]
    pub fn submit_to_all<T, F, G>(&self, f: F, then: G)
    where
        T: Send + 'static,
        F: Fn(&IoLoop) -> T + Send + Sync + 'static,
        G: FnOnce(&IoLoop, Vec<Result<T, CallError>>) + 'static,
    {
        let targets = self.shard_handles();
        let n = targets.len();
        let gather = Rc::new(RefCell::new(Gather {
            answers: (0..n).map(|_| None).collect(),
            left: n,
            then: Some(then),
        }));
        let f = std::sync::Arc::new(f);
        for (shard, target) in targets.iter().enumerate() {
            let f = f.clone();
            let g = gather.clone();
            self.submit_to(
                target,
                move |lp| f(lp),
                move |lp, answer| {
                    let done = {
                        let mut g = g.borrow_mut();
                        g.answers[shard] = Some(answer);
                        g.left -= 1;
                        (g.left == 0).then(|| {
                            let answers = std::mem::take(&mut g.answers);
                            (g.then.take(), answers)
                        })
                    };
                    if let Some((Some(then), answers)) = done {
                        then(lp, answers.into_iter().flatten().collect());
                    }
                },
            );
        }
    }
}

/// The answers of a `submit_to_all` so far.
struct Gather<T, G> {
    answers: Vec<Option<Result<T, CallError>>>,
    left: usize,
    then: Option<G>,
}
