//! A stream's part in its loop's buffer budget (see `reactor/budget.rs`): what it
//! buffers, unread input and unsent output, is counted to the loop; past the loop's
//! limit, a stream that holds more than the floor is held back: it reads nothing ahead,
//! its writer is told to wait (`over_high_water`), and its drain callback waits, until
//! the loop lets it go or it has drained to half the floor.
//!
//! A stream is counted once it holds at least the budget's floor (16 KiB), and until it
//! holds nothing: one under the floor is never held back, and counting every request's
//! few hundred bytes would cost every request.

use super::IoStream;
use crate::reactor::{Budget, IoLoop, BUDGET_FLOOR};
use std::rc::Rc;

/// What a stream has counted to its loop's budget.
pub(super) struct Held {
    budget: Rc<Budget>,
    /// Bytes counted now (0: not counted).
    counted: usize,
    /// Held back: the loop is over its budget and this stream holds more than the
    /// floor.
    pub(super) back: bool,
    /// A release is queued with the loop (one per stream at most, however often it is
    /// held back and lets itself go meanwhile).
    waiting: bool,
}

impl Held {
    pub(super) fn new(lp: &IoLoop) -> Held {
        Held {
            budget: lp.budget(),
            counted: 0,
            back: false,
            waiting: false,
        }
    }

    /// Whether a stream that buffers `now` bytes must count them (cheap: the caller
    /// checks it under a borrow it has anyway).
    #[inline]
    pub(super) fn needs_count(&self, now: usize) -> bool {
        if self.counted == 0 {
            now >= BUDGET_FLOOR
        } else {
            now != self.counted
        }
    }

    /// Whether the loop holds more than its budget now.
    #[inline]
    pub(super) fn loop_over_budget(&self) -> bool {
        self.budget.over()
    }

    /// The stream holds nothing any more (it closed).
    pub(super) fn clear(&mut self, lp: &IoLoop) {
        if self.counted > 0 {
            self.budget.change(lp, self.counted, 0);
            self.counted = 0;
        }
        self.back = false;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.forget(self.counted);
    }
}

impl IoStream {
    /// Counts what the stream buffers now and says whether it is held back (for a
    /// writer that asks whether to wait).
    #[cold]
    #[inline(never)]
    pub(super) fn held_back_now(&self) -> bool {
        if let Some(lp) = self.lp() {
            self.count_buffered(&lp);
        }
        self.inner.st.borrow().held.back
    }

    /// Counts what the stream buffers now to the loop's budget, and holds the stream
    /// back or lets it go: at the end of each dispatch (bytes came, were read, answers
    /// were written), when a send ends, and when the stream closes (to zero).
    #[inline(never)]
    pub(super) fn count_buffered(&self, lp: &IoLoop) {
        let mut st = self.inner.st.borrow_mut();
        let now = if st.closed {
            0
        } else {
            st.r.unread() + st.w.buffered()
        };
        let h = &mut st.held;
        if !h.needs_count(now) {
            return;
        }
        h.budget.change(lp, h.counted, now);
        h.counted = now;
        let hold = h.budget.over()
            && now
                > if h.back {
                    BUDGET_FLOOR / 2
                } else {
                    BUDGET_FLOOR
                };
        if hold == h.back {
            return;
        }
        h.back = hold;
        if hold {
            h.budget.note_hold();
            if h.waiting {
                return; // (its release from an earlier hold is still queued)
            }
            h.waiting = true;
            let weak = self.downgrade();
            h.budget.hold(Box::new(move |_| {
                if let Some(s) = weak.upgrade() {
                    let mut st = s.inner.st.borrow_mut();
                    st.held.waiting = false;
                    st.held.back = false;
                    drop(st);
                    // Drain callbacks and receiving go on; the dispatch counts anew.
                    s.schedule_dispatch();
                }
            }));
        } else {
            drop(st);
            self.schedule_dispatch();
        }
    }
}
