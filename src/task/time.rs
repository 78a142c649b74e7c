//! Time for tasks, on the loop's own timer heap: `sleep`, `sleep_until`, `timeout` and
//! `interval`. A sleep arms one timer when first polled; dropping it cancels the timer
//! (lazily, like `remove_timeout`). They must be polled by a task of a running loop.

use crate::reactor::{IoLoop, TimeoutId, WeakLoop};
use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// What a sleep's timer and its future share.
#[derive(Default)]
struct Shared {
    fired: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

/// A future that completes at a deadline (see [`sleep`]).
#[must_use = "a sleep does nothing unless awaited"]
pub struct Sleep {
    deadline: Instant,
    armed: Option<(WeakLoop, TimeoutId, Rc<Shared>)>,
}

/// Completes once `delay` has passed (measured from this call; never early), on the
/// loop's timer heap.
///
/// ```
/// use coreloop::IoLoop;
/// use std::time::{Duration, Instant};
/// let lp = IoLoop::new()?;
/// let t0 = Instant::now();
/// lp.run_until_complete(coreloop::sleep(Duration::from_millis(10)))?;
/// assert!(t0.elapsed() >= Duration::from_millis(10));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn sleep(delay: Duration) -> Sleep {
    let deadline = Instant::now()
        .checked_add(delay)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365 * 30));
    sleep_until(deadline)
}

/// Completes at `deadline` (never earlier), on the loop's timer heap.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        armed: None,
    }
}

impl Sleep {
    /// When it completes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some((_, _, shared)) = &self.armed {
            if shared.fired.get() {
                return Poll::Ready(());
            }
            shared.waker.set(Some(cx.waker().clone()));
            return Poll::Pending;
        }
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        let lp = IoLoop::current()
            .expect("coreloop: a sleep or timeout must be polled by a task of a running loop");
        let shared = Rc::new(Shared::default());
        shared.waker.set(Some(cx.waker().clone()));
        let s = shared.clone();
        let id = lp.add_timeout(self.deadline, move |_| {
            s.fired.set(true);
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        });
        self.armed = Some((lp.downgrade(), id, shared));
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some((lp, id, shared)) = self.armed.take() {
            if !shared.fired.get() {
                if let Some(lp) = lp.upgrade() {
                    lp.remove_timeout(id);
                }
            }
        }
    }
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// A [`timeout`] ran out before its future completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the deadline passed before the future completed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for std::io::Error {
    fn from(e: Elapsed) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::TimedOut, e)
    }
}

/// `fut`'s output, or [`Elapsed`] if `limit` passes first (then `fut` is dropped, which
/// cancels it: the stream futures keep what they have not handed out).
///
/// ```
/// use coreloop::{timeout, sleep, Elapsed, IoLoop};
/// use std::time::Duration;
/// let lp = IoLoop::new()?;
/// let r = lp.run_until_complete(timeout(Duration::from_millis(5), sleep(Duration::from_secs(60))))?;
/// assert_eq!(r, Err(Elapsed));
/// let r = lp.run_until_complete(timeout(Duration::from_secs(60), async { 7 }))?;
/// assert_eq!(r, Ok(7));
/// # Ok::<(), std::io::Error>(())
/// ```
pub async fn timeout<F: Future>(limit: Duration, fut: F) -> Result<F::Output, Elapsed> {
    let mut fut = std::pin::pin!(fut);
    let mut deadline = std::pin::pin!(sleep(limit));
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(Elapsed));
        }
        Poll::Pending
    })
    .await
}

/// Ticks every `period` (see [`Interval::tick`]): Tornado's `PeriodicCallback` for
/// tasks. A tick missed because the loop was busy is skipped, keeping the phase.
///
/// ```
/// use coreloop::IoLoop;
/// use std::time::Duration;
/// let lp = IoLoop::new()?;
/// let n = lp.run_until_complete(async {
///     let mut every = coreloop::interval(Duration::from_millis(2));
///     for _ in 0..3 {
///         every.tick().await;
///     }
///     3
/// })?;
/// assert_eq!(n, 3);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Panics
/// If `period` is zero.
pub fn interval(period: Duration) -> Interval {
    assert!(!period.is_zero(), "an interval's period must not be zero");
    Interval {
        next: Instant::now() + period,
        period,
    }
}

/// Periodic ticks on the loop's timer heap (see [`interval`]).
#[derive(Debug)]
pub struct Interval {
    next: Instant,
    period: Duration,
}

impl Interval {
    /// Waits for the next tick; returns when it was due.
    pub async fn tick(&mut self) -> Instant {
        let due = self.next;
        sleep_until(due).await;
        let now = Instant::now();
        // Skip the ticks the loop was too busy to see, keeping the phase.
        let missed = now.saturating_duration_since(due).as_nanos() / self.period.as_nanos();
        self.next = due + self.period * (missed as u32 + 1);
        due
    }

    /// The time between ticks.
    pub fn period(&self) -> Duration {
        self.period
    }
}
