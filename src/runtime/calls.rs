//! Running work on one core or on every core, from a loop, a task or a plain thread:
//! `call_on` and `call_on_all` on [`IoLoop`] and [`Runtime`], each giving one
//! [`Call`] to await, continue with [`Call::then`] or [`Call::wait`] for.

use super::Runtime;
use crate::reactor::{gather, Call, CallError, IoLoop, LoopHandle};
use std::sync::Arc;

mod sealed {
    pub trait Sealed {}
    impl Sealed for usize {}
    impl Sealed for &crate::LoopHandle {}
    impl Sealed for crate::LoopHandle {}
}

/// Where [`call_on`](IoLoop::call_on) sends its work: a shard id of the runtime
/// (`usize`), or a loop's [`LoopHandle`] (any loop, in a runtime or not).
///
/// ```
/// use coreloop::{Cores, Runtime};
/// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
/// let by_id = rt.call_on(1, |lp| lp.shard_id()).wait();
/// let by_handle = rt.call_on(rt.handle(1), |lp| lp.shard_id()).wait();
/// assert_eq!((by_id, by_handle), (Ok(1), Ok(1)));
/// rt.shutdown().unwrap();
/// # Ok::<(), coreloop::RuntimeError>(())
/// ```
pub trait CallTarget: sealed::Sealed {
    #[doc(hidden)]
    fn pick(self, shards: &[LoopHandle]) -> Result<LoopHandle, CallError>;
}

impl CallTarget for usize {
    fn pick(self, shards: &[LoopHandle]) -> Result<LoopHandle, CallError> {
        shards
            .get(self)
            .cloned()
            .ok_or(CallError::NoSuchShard(self))
    }
}

impl CallTarget for &LoopHandle {
    fn pick(self, _: &[LoopHandle]) -> Result<LoopHandle, CallError> {
        Ok(self.clone())
    }
}

impl CallTarget for LoopHandle {
    fn pick(self, _: &[LoopHandle]) -> Result<LoopHandle, CallError> {
        Ok(self)
    }
}

/// One call of `f` on `target` among `shards`.
fn call_one<T, F>(shards: &[LoopHandle], target: impl CallTarget, f: F) -> Call<T>
where
    T: Send + 'static,
    F: FnOnce(&IoLoop) -> T + Send + 'static,
{
    match target.pick(shards) {
        Ok(h) => Call::on(h, f),
        Err(e) => Call::failed(e),
    }
}

/// One call of `f` on each of `shards`, gathered by shard id.
pub(crate) fn call_all<T, F>(shards: &[LoopHandle], f: F) -> Call<Vec<T>>
where
    T: Send + 'static,
    F: Fn(&IoLoop) -> T + Send + Sync + 'static,
{
    let f = Arc::new(f);
    gather(
        shards
            .iter()
            .map(|h| {
                let f = f.clone();
                Call::on(h.clone(), move |lp| f(lp))
            })
            .collect(),
    )
}

impl IoLoop {
    /// Runs `f` on `target`, a shard of this loop's runtime (by id) or any loop (by
    /// handle), and gives its answer as a [`Call`]: await it in a task, continue with
    /// [`Call::then`] on this loop, or [`Call::wait`] from a plain thread. The answer is
    /// `f`'s value, or why there is none: `f` panicked (the message is kept), the target
    /// loop is closed, there is no such shard. Neither loop blocks; this is how shards
    /// ask each other for things (Seastar's `submit_to`). Only `f` and its value cross
    /// threads. A loop made alone is shard 0 of 1.
    ///
    /// ```
    /// use coreloop::{Cores, Runtime};
    /// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
    /// let task = rt.handle(0).spawn(|| async {
    ///     let lp = coreloop::IoLoop::current().unwrap();
    ///     lp.call_on(1, |far| far.shard_id() * 10).await
    /// });
    /// assert_eq!(coreloop::block_on(task).unwrap(), Ok(10));
    /// rt.shutdown().unwrap();
    /// # Ok::<(), coreloop::RuntimeError>(())
    /// ```
    pub fn call_on<T, F>(&self, target: impl CallTarget, f: F) -> Call<T>
    where
        T: Send + 'static,
        F: FnOnce(&IoLoop) -> T + Send + 'static,
    {
        call_one(&self.shard_handles(), target, f).made_by(self)
    }

    /// Runs `f` on every shard of this loop's runtime (on this loop alone if it is not
    /// in one) and gives every answer, by shard id, as one [`Call`]. If a shard fails
    /// (panics, is closed), the call fails with the first failure in shard order, once
    /// every shard has answered.
    ///
    /// ```
    /// use coreloop::{Cores, Runtime};
    /// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// rt.handle(1).add_callback(move |lp| {
    ///     lp.call_on_all(|far| far.shard_id() + 10).then(move |_, all| tx.send(all).unwrap());
    /// }).unwrap();
    /// assert_eq!(rx.recv().unwrap(), Ok(vec![10, 11]));
    /// rt.shutdown().unwrap();
    /// # Ok::<(), coreloop::RuntimeError>(())
    /// ```
    pub fn call_on_all<T, F>(&self, f: F) -> Call<Vec<T>>
    where
        T: Send + 'static,
        F: Fn(&IoLoop) -> T + Send + Sync + 'static,
    {
        call_all(&self.shard_handles(), f).made_by(self)
    }
}

impl Runtime {
    /// Runs `f` on shard `target` (an id, or a loop's handle) and gives its answer as a
    /// [`Call`]: from a plain thread, [`Call::wait`] for it ("do this on core k and give
    /// me the answer"). The same as [`IoLoop::call_on`].
    ///
    /// ```
    /// use coreloop::{CallError, Cores, Runtime};
    /// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
    /// assert_eq!(rt.call_on(1, |lp| lp.shard_id() * 10).wait(), Ok(10));
    /// assert_eq!(rt.call_on(0, |_| -> u8 { panic!("bad key") }).wait(),
    ///            Err(CallError::Panicked("bad key".into())));
    /// assert_eq!(rt.call_on(7, |_| ()).wait(), Err(CallError::NoSuchShard(7)));
    /// rt.shutdown().unwrap();
    /// # Ok::<(), coreloop::RuntimeError>(())
    /// ```
    pub fn call_on<T, F>(&self, target: impl CallTarget, f: F) -> Call<T>
    where
        T: Send + 'static,
        F: FnOnce(&IoLoop) -> T + Send + 'static,
    {
        call_one(self.handles(), target, f)
    }

    /// Runs `f` on every shard and gives the answers by shard id as one [`Call`]; the
    /// same as [`IoLoop::call_on_all`].
    ///
    /// ```
    /// use coreloop::{Cores, Runtime};
    /// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
    /// let total: usize = rt.call_on_all(|lp| lp.shard_id() + 1).wait().unwrap().iter().sum();
    /// assert_eq!(total, 3);
    /// rt.shutdown().unwrap();
    /// # Ok::<(), coreloop::RuntimeError>(())
    /// ```
    pub fn call_on_all<T, F>(&self, f: F) -> Call<Vec<T>>
    where
        T: Send + 'static,
        F: Fn(&IoLoop) -> T + Send + Sync + 'static,
    {
        call_all(self.handles(), f)
    }
}
