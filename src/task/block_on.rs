//! `block_on`: waiting for a future on a plain thread (not a loop's).

use crate::reactor::IoLoop;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

/// Wakes a thread parked in `block_on`.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `fut` to completion on the calling thread, parking it between polls: how a
/// plain thread (`main`, a test, a thread outside coreloop) waits for a task's handle or
/// any other future woken from elsewhere. Futures that need a loop (sleeps, stream I/O)
/// belong in a task on a loop; await that task's handle here.
///
/// # Panics
/// On a thread whose loop is running (inside a callback or task): blocking there would
/// stop the loop the future may be waiting for. Await the future in a task instead.
///
/// ```
/// use coreloop::{block_on, Cores, Runtime};
/// let rt = Runtime::builder().cores(Cores::Count(1)).build()?;
/// let answer = rt.handle(0).spawn(|| async { 40 + 2 });
/// assert_eq!(block_on(answer), Ok(42));
/// rt.shutdown().unwrap();
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn block_on<F: Future>(fut: F) -> F::Output {
    assert!(
        IoLoop::current().is_none(),
        "coreloop::block_on inside a running loop would block it: await in a task instead"
    );
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        // A wake between the poll and the park leaves the token set: park returns at once.
        std::thread::park();
    }
}
