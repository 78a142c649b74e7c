//! How a loop wakes another loop that sleeps: through the other loop's eventfd, or, on
//! io_uring, with a `MSG_RING` from its own ring ([`WakeVia`]).
//!
//! The choice is the sender's. `Shared::notify` (in `handle.rs`) asks the loop running
//! on the sending thread, if any, to wake the target through its ring; it falls back to
//! the eventfd when there is no such loop, when that loop or the target is on epoll,
//! when the loop is set to [`WakeVia::Eventfd`], or when the message cannot be queued.
//! `MsgRing` is the default: in `benches/cross_core.sh` it made a loop-to-loop round
//! trip cheaper and faster than the eventfd (which stays an option).
//! A message the kernel fails to deliver comes back as a failed CQE with a tag naming
//! the target (an index into the loop's table of targets); the loop then writes that
//! target's eventfd, so a wake-up is never lost.

use super::handle::Shared;
use super::{thread, IoLoop};
use crate::poller::Waker;
use std::cell::{Cell, RefCell};
use std::os::fd::AsRawFd;
use std::sync::Arc;

/// How a loop wakes other loops when it sends them work ([`IoLoop::set_wake_via`]).
///
/// ```
/// use coreloop::{IoLoop, WakeVia};
/// let lp = IoLoop::new()?;
/// lp.set_wake_via(WakeVia::Eventfd);
/// assert_eq!(lp.wake_via(), WakeVia::Eventfd);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WakeVia {
    /// Write the target's eventfd (every backend; the woken loop reads it back).
    Eventfd,
    /// Post a CQE into the target's ring with `IORING_OP_MSG_RING` from this loop's
    /// ring: one `io_uring_enter` for the sender, nothing to read back for the target.
    /// Only between two io_uring loops; anything else uses the eventfd.
    MsgRing,
}

/// The targets a loop has woken through its ring, at most this many (others get the
/// eventfd): the tag of a failed message is an index into this table.
const MAX_TARGETS: usize = 1024;

/// A loop's side of the ring wake-ups.
pub(super) struct RingWakes {
    via: Cell<WakeVia>,
    /// (target loop id, its eventfd for the fallback), indexed by tag.
    targets: RefCell<Vec<(u64, Arc<Waker>)>>,
    failed: RefCell<Vec<u32>>,
}

impl Default for RingWakes {
    fn default() -> Self {
        RingWakes {
            via: Cell::new(WakeVia::MsgRing),
            targets: RefCell::default(),
            failed: RefCell::default(),
        }
    }
}

impl IoLoop {
    /// How this loop wakes another loop it sends work to while that loop sleeps (see
    /// [`WakeVia`]); default [`WakeVia::MsgRing`], which measured faster here
    /// (`benches/cross_core.sh`: a loop-to-loop round trip's p50 about 27% lower and
    /// its CPU about 29% lower than by eventfd). Sends from threads without a running
    /// loop, and to or from epoll loops, always use the eventfd.
    ///
    /// ```
    /// use coreloop::{IoLoop, WakeVia};
    /// let lp = IoLoop::new()?;
    /// lp.set_wake_via(WakeVia::MsgRing); // an epoll loop keeps using eventfds
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_wake_via(&self, via: WakeVia) {
        self.inner.wakes.via.set(via);
    }

    /// How this loop wakes other loops; see [`set_wake_via`](Self::set_wake_via).
    ///
    /// ```
    /// use coreloop::{IoLoop, WakeVia};
    /// let lp = IoLoop::new()?;
    /// assert_eq!(lp.wake_via(), WakeVia::MsgRing);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wake_via(&self) -> WakeVia {
        self.inner.wakes.via.get()
    }

    /// Wakes `target` through this loop's ring; false if the caller must use its
    /// eventfd instead.
    fn wake_by_ring(&self, target: &Shared) -> bool {
        let inner = &*self.inner;
        if inner.wakes.via.get() != WakeVia::MsgRing || target.id == inner.handle.shared.id {
            return false;
        }
        let Some(ring) = target.ring.as_ref() else {
            return false;
        };
        let mut targets = inner.wakes.targets.borrow_mut();
        let tag = match targets.iter().position(|(id, _)| *id == target.id) {
            Some(i) => i,
            None if targets.len() < MAX_TARGETS => {
                targets.push((target.id, target.waker.clone()));
                targets.len() - 1
            }
            None => return false,
        };
        let Ok(mut poller) = inner.poller.try_borrow_mut() else {
            return false;
        };
        poller.wake_ring(ring.as_raw_fd(), tag as u32).is_ok()
    }

    /// After a poll: the targets whose ring message failed get their eventfd written.
    pub(super) fn rewake_failed(&self) {
        let inner = &*self.inner;
        let targets = inner.wakes.targets.borrow();
        if targets.is_empty() {
            return;
        }
        let mut failed = inner.wakes.failed.borrow_mut();
        inner.poller.borrow_mut().take_failed_wakes(&mut failed);
        for tag in failed.drain(..) {
            if let Some((_, waker)) = targets.get(tag as usize) {
                if let Err(e) = waker.wake() {
                    log::error!("coreloop: could not wake a loop: {e}");
                }
            }
        }
    }
}

/// Wakes `target` through the ring of the loop running on this thread, if it can (and
/// counts the wake-up on that loop either way); false if the caller must write the
/// target's eventfd.
pub(super) fn wake_from_this_thread(target: &Shared) -> bool {
    let Some(lp) = thread::current() else {
        return false;
    };
    let by_ring = lp.wake_by_ring(target);
    let c = &lp.inner.stats.counters;
    let n = if by_ring {
        &c.ring_wakes
    } else {
        &c.eventfd_wakes
    };
    n.set(n.get() + 1);
    by_ring
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Backend;
    use std::time::Duration;

    /// A message the kernel refuses (its target is not a ring) comes back as a failed
    /// CQE; the loop then writes the target's eventfd: the wake-up is not lost.
    #[test]
    fn a_failed_msg_ring_falls_back_to_the_eventfd() {
        let Ok(lp) = IoLoop::with_backend(Backend::Uring) else {
            assert!(
                std::env::var_os("CORELOOP_REQUIRE_URING").is_none(),
                "io_uring unavailable"
            );
            eprintln!("skipped: io_uring unavailable here");
            return;
        };
        lp.set_wake_via(WakeVia::MsgRing);
        let waker = Arc::new(Waker::new().unwrap());
        // A pipe is not a ring: MSG_RING to it fails (EBADFD) after submission.
        let (r, _w) = std::io::pipe().unwrap();
        let target = Shared::new(waker.clone(), Some(r.into()));
        assert!(lp.wake_by_ring(&target), "the message was not queued");
        assert_eq!(waker.take_count(), 0, "the eventfd was written at once");
        lp.call_later(Duration::from_millis(20), |lp| lp.stop());
        lp.start().unwrap();
        assert_eq!(
            waker.take_count(),
            1,
            "the failed message was not followed up"
        );
    }

    /// A loop set to eventfd, or a target without a ring, is not woken through a ring.
    #[test]
    fn no_ring_wake_unless_both_sides_can() {
        let lp = IoLoop::new().unwrap();
        let waker = Arc::new(Waker::new().unwrap());
        let no_ring = Shared::new(waker.clone(), None);
        lp.set_wake_via(WakeVia::MsgRing);
        assert!(!lp.wake_by_ring(&no_ring));
        lp.set_wake_via(WakeVia::Eventfd);
        let (r, _w) = std::io::pipe().unwrap();
        let ring = Shared::new(waker, Some(r.into()));
        assert!(!lp.wake_by_ring(&ring));
    }
}
