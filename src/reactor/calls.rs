//! Calls between loops: `submit_to` runs a closure on another loop and its
//! continuation back on this one (Seastar's `submit_to`).

use super::handle::{LoopClosed, LoopHandle};
use super::IoLoop;
use std::any::Any;
use std::cell::RefCell;

type Continuation = Box<dyn FnOnce(&IoLoop, Box<dyn Any + Send>)>;

/// `submit_to` continuations waiting for their answer from another loop.
#[derive(Default)]
pub(super) struct Calls {
    pub(super) waiting: RefCell<slab::Slab<Continuation>>,
}

impl Calls {
    /// Takes every waiting continuation out (the loop is closing), for the caller to drop
    /// with nothing borrowed.
    pub(super) fn take_all(&self) -> slab::Slab<Continuation> {
        std::mem::take(&mut *self.waiting.borrow_mut())
    }
}

impl IoLoop {
    /// Runs `f` on the loop behind `target`, then `then` with its answer back on this
    /// loop (Seastar's `submit_to`). Neither loop blocks; this is how shards ask each
    /// other for things. Only `f` and its answer cross threads: `then` stays here, so it
    /// may hold this loop's state (an unfinished HTTP response, say). Fails if `target`'s
    /// loop is closed; if `f` panics or `target` closes before running it, `then` is
    /// dropped when this loop closes.
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// use std::rc::Rc;
    /// let a = IoLoop::new()?;
    /// std::thread::scope(|s| -> std::io::Result<()> {
    ///     let (tx, rx) = std::sync::mpsc::channel();
    ///     s.spawn(move || {
    ///         let b = IoLoop::new().unwrap();
    ///         tx.send(b.handle()).unwrap();
    ///         b.start().unwrap();
    ///     });
    ///     let b = rx.recv().unwrap();
    ///     let local = Rc::new("not Send"); // `then` may keep loop-local values
    ///     let b2 = b.clone();
    ///     a.submit_to(&b, |_b| 6 * 7, move |a, answer| {
    ///         assert_eq!((answer, *local), (42, "not Send"));
    ///         b2.stop().unwrap();
    ///         a.stop();
    ///     }).unwrap();
    ///     a.start()
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[track_caller]
    pub fn submit_to<T, F, G>(&self, target: &LoopHandle, f: F, then: G) -> Result<(), LoopClosed>
    where
        T: Send + 'static,
        F: FnOnce(&IoLoop) -> T + Send + 'static,
        G: FnOnce(&IoLoop, T) + 'static,
    {
        let key = self.inner.calls.waiting.borrow_mut().insert(Box::new(
            move |lp, answer: Box<dyn Any + Send>| match answer.downcast::<T>() {
                Ok(v) => then(lp, *v),
                Err(_) => unreachable!("a submit_to answer has the type its sender made"),
            },
        ));
        let back = self.handle();
        let sent = target.add_callback(move |remote| {
            let answer: Box<dyn Any + Send> = Box::new(f(remote));
            let r = back.add_callback(move |lp| {
                let k = lp.inner.calls.waiting.borrow_mut().try_remove(key);
                if let Some(k) = k {
                    k(lp, answer);
                }
            });
            if r.is_err() {
                log::debug!("coreloop: submit_to answer dropped: the asking loop is closed");
            }
        });
        if sent.is_err() {
            let k = self.inner.calls.waiting.borrow_mut().try_remove(key);
            drop(k);
        }
        sent
    }
}
