//! The loop's budget for buffered bytes: what the layers above hold in buffers on this
//! loop (a stream's unread input and unsent output) is counted here, and past a limit
//! the largest holders are held back until the loop is back within it.
//!
//! Each connection's buffers are bounded, but many connections whose clients send and
//! never read add up (500 clients that pipelined without reading took a server to
//! 700 MB). Past the limit, a holder that holds more than [`FLOOR`] is held back: a
//! stream stops reading ahead and tells its writer to wait, as over its high-water
//! mark. Holders under the floor go on, so ordinary requests and answers are still
//! served; and a held-back stream whose client reads drains, is let go at half the
//! floor, and goes on in steps of the floor. So the loop holds at most its limit, plus
//! what one holder added in one step before it was counted (a stream counts at the end
//! of a dispatch, and when its bytes wait for a send: at most a high-water mark), plus
//! for each holder the floor and what it wrote past it before it was held back (an
//! answer). Every held-back holder is let go once the loop is back under seven eighths
//! of the limit. The numbers are the loop's (`LoopStats::buffered`,
//! `LoopStats::budget_holds`).
//!
//! The count costs a few additions when a holder's buffers change; the checks are one
//! comparison while the loop is within its budget.

use super::IoLoop;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// Default [`IoLoop::set_buffer_budget`]: bytes buffered on one loop.
pub const DEFAULT_BUFFER_BUDGET: usize = 128 << 20;

/// A holder may always hold this much, whatever the loop holds: an ordinary answer or
/// request is never held back.
pub(crate) const FLOOR: usize = 16 * 1024;

/// What a held-back holder runs once the loop is back within its budget.
type Release = Box<dyn FnOnce(&IoLoop)>;

/// One loop's count of buffered bytes and its limit.
pub(crate) struct Budget {
    limit: Cell<usize>,
    /// Bytes held now, by all holders.
    held: Cell<usize>,
    /// Times a holder was held back.
    holds: Cell<u64>,
    /// The held-back holders, to let go.
    waiting: RefCell<Vec<Release>>,
    /// Some holders wait, and no release of them is queued yet.
    to_release: Cell<bool>,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            limit: Cell::new(DEFAULT_BUFFER_BUDGET),
            held: Cell::new(0),
            holds: Cell::new(0),
            waiting: RefCell::new(Vec::new()),
            to_release: Cell::new(false),
        }
    }
}

impl Budget {
    /// A holder that holds `counted` bytes goes away without being let go (a stream
    /// dropped with its loop).
    pub(crate) fn forget(&self, counted: usize) {
        self.held.set(self.held.get() - counted);
    }

    /// A holder now holds `now` bytes instead of `was`.
    pub(crate) fn change(&self, lp: &IoLoop, was: usize, now: usize) {
        let held = self.held.get() - was + now;
        self.held.set(held);
        if self.to_release.get() && now < was && held <= self.limit.get() / 8 * 7 {
            self.release_later(lp);
        }
    }

    /// Whether the loop holds more than its limit now: then a holder over [`FLOOR`] is
    /// held back.
    #[inline]
    pub(crate) fn over(&self) -> bool {
        self.held.get() > self.limit.get()
    }

    /// Queues `release` (for a held-back holder) to run in a callback once the loop is
    /// back under seven eighths of its budget.
    pub(crate) fn hold(&self, release: Release) {
        self.waiting.borrow_mut().push(release);
        self.to_release.set(true);
    }

    /// Counts a hold (each time a holder is held back, released or not since).
    pub(crate) fn note_hold(&self) {
        self.holds.set(self.holds.get() + 1);
    }

    /// Lets the held-back holders go, in a callback (the caller may hold a borrow).
    fn release_later(&self, lp: &IoLoop) {
        self.to_release.set(false);
        lp.add_callback(|lp| {
            let budget = &lp.inner.budget;
            let waiting = std::mem::take(&mut *budget.waiting.borrow_mut());
            for release in waiting {
                release(lp);
            }
        });
    }

    pub(crate) fn held(&self) -> usize {
        self.held.get()
    }

    pub(crate) fn holds(&self) -> u64 {
        self.holds.get()
    }
}

impl IoLoop {
    /// Sets how many bytes this loop's streams may buffer in all, unread input and
    /// unsent output together (default [`DEFAULT_BUFFER_BUDGET`], 128 MiB). Past it,
    /// a stream that holds more than 16 KiB is held back: it stops reading ahead (a
    /// read that waits still gets its bytes), and
    /// [`IoStream::over_high_water`](crate::IoStream::over_high_water) says its writer
    /// should wait, until the loop is back under seven eighths of the budget or the
    /// stream has drained to 8 KiB. Streams that hold less go on. The loop then holds
    /// at most the budget plus, for each stream, 16 KiB and what it wrote past them
    /// before it was held back. [`LoopStats`](crate::LoopStats) has the bytes buffered
    /// and how often a stream was held back.
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// let lp = IoLoop::new()?;
    /// lp.set_buffer_budget(64 << 20);
    /// assert_eq!(lp.loop_stats().buffered, 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_buffer_budget(&self, bytes: usize) {
        self.inner.budget.limit.set(bytes);
    }

    /// The loop's budget for buffered bytes.
    pub(crate) fn budget(&self) -> Rc<Budget> {
        self.inner.budget.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_limit_holders_are_held_and_released_below_seven_eighths() {
        let lp = IoLoop::new().unwrap();
        let b = lp.budget();
        let b = &*b;
        lp.set_buffer_budget(1 << 20);
        b.change(&lp, 0, 600 << 10);
        assert!(!b.over(), "within the budget");
        b.change(&lp, 0, 600 << 10);
        assert!(b.over());
        let released = Rc::new(Cell::new(false));
        let r = released.clone();
        b.note_hold();
        b.hold(Box::new(move |_| r.set(true)));
        assert_eq!(b.holds(), 1);
        b.change(&lp, 600 << 10, 400 << 10);
        lp.add_callback(|lp| lp.stop());
        lp.start().unwrap();
        assert!(!released.get(), "1000 KiB is over seven eighths of 1 MiB");
        b.change(&lp, 400 << 10, 0);
        assert_eq!(b.held(), 600 << 10);
        lp.add_callback(|lp| lp.stop());
        lp.start().unwrap();
        assert!(released.get(), "released under seven eighths");
        b.forget(600 << 10);
        assert_eq!(b.held(), 0);
    }
}
