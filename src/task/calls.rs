//! Awaiting work on other cores: the async forms of `submit_to` and `submit_to_all`,
//! with the same always-answers outcome.

use crate::reactor::{CallError, IoLoop, LoopHandle};
use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// An outcome delivered on this loop, and the task waiting for it.
struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

fn slot<T>() -> Rc<RefCell<Slot<T>>> {
    Rc::new(RefCell::new(Slot {
        value: None,
        waker: None,
    }))
}

fn fill<T>(s: &RefCell<Slot<T>>, v: T) {
    let w = {
        let mut s = s.borrow_mut();
        s.value = Some(v);
        s.waker.take()
    };
    if let Some(w) = w {
        w.wake();
    }
}

async fn wait<T>(s: Rc<RefCell<Slot<T>>>) -> T {
    std::future::poll_fn(move |cx| {
        let mut st = s.borrow_mut();
        match st.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                st.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
    .await
}

impl IoLoop {
    /// Runs `f` on the loop behind `target` and resolves to what became of it:
    /// [`submit_to`](Self::submit_to) for tasks. Dropping the future before it resolves
    /// does not stop `f` (it may be running on the other core); its value is dropped.
    ///
    /// ```
    /// use coreloop::{Cores, Runtime};
    /// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
    /// let task = rt.handle(0).spawn(|| async {
    ///     let lp = coreloop::IoLoop::current().unwrap();
    ///     let other = lp.shard_handle(1).unwrap();
    ///     lp.call_on(&other, |far| far.shard_id() * 10).await
    /// });
    /// assert_eq!(coreloop::block_on(task).unwrap(), Ok(10));
    /// rt.shutdown().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn call_on<T, F>(
        &self,
        target: &LoopHandle,
        f: F,
    ) -> impl Future<Output = Result<T, CallError>> + 'static
    where
        T: Send + 'static,
        F: FnOnce(&IoLoop) -> T + Send + 'static,
    {
        let s = slot();
        let filled = s.clone();
        self.submit_to(target, f, move |_, outcome| fill(&filled, outcome));
        wait(s)
    }

    /// Runs `f` on every shard of this loop's runtime and resolves to every outcome, by
    /// shard id: [`submit_to_all`](Self::submit_to_all) for tasks.
    ///
    /// ```
    /// use coreloop::{Cores, Runtime};
    /// let rt = Runtime::builder().cores(Cores::Count(2)).build()?;
    /// let task = rt.handle(1).spawn(|| async {
    ///     let lp = coreloop::IoLoop::current().unwrap();
    ///     lp.call_on_all(|far| far.shard_id()).await
    /// });
    /// assert_eq!(coreloop::block_on(task).unwrap(), vec![Ok(0), Ok(1)]);
    /// rt.shutdown().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn call_on_all<T, F>(
        &self,
        f: F,
    ) -> impl Future<Output = Vec<Result<T, CallError>>> + 'static
    where
        T: Send + 'static,
        F: Fn(&IoLoop) -> T + Send + Sync + 'static,
    {
        let s = slot();
        let filled = s.clone();
        self.submit_to_all(f, move |_, all| fill(&filled, all));
        wait(s)
    }
}
