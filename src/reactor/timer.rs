//! Timers: the loop's `add_timeout`, `call_at`, `call_later` and `remove_timeout`, and
//! the timer heap under them, a binary min-heap keyed by `(deadline, sequence)`, with
//! lazy cancellation, generation-checked ids and compaction.
//!
//! The heap is a plain data structure. The loop passes the time in (`pop_due(now, ..)`), so
//! these tests never sleep and the queue has no clock of its own.
//!
//! - **Order**: earliest deadline first; equal deadlines in the order they were added
//!   (the sequence number breaks ties).
//! - **Cancellation is lazy**: `cancel` takes the value out of its slot at once (so it can
//!   never fire) and leaves the heap entry behind; stale entries are skipped when they
//!   reach the top. When stale entries are more than [`COMPACT_MIN`] and more than half
//!   the heap, the heap is rebuilt without them, so any number of add+cancel pairs keeps
//!   memory bounded.
//! - **Ids carry a generation**: a slot reused by a new timer has a new generation, so an
//!   old [`TimeoutId`] can neither cancel nor identify the new timer.

use super::callbacks::Queued;
use super::IoLoop;
use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::panic::Location;
use std::time::{Duration, Instant};

/// Stale heap entries tolerated before compaction is considered (and only when they are
/// also more than half of the heap).
pub(crate) const COMPACT_MIN: usize = 512;

/// The loop's timers.
#[derive(Default)]
pub(super) struct Timers {
    pub(super) queue: RefCell<TimerQueue<Queued>>,
}

impl IoLoop {
    /// Runs `f` at `deadline` (never earlier), in the iteration after it passes.
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// use std::time::{Duration, Instant};
    /// let lp = IoLoop::new()?;
    /// let t0 = Instant::now();
    /// lp.add_timeout(t0 + Duration::from_millis(5), move |lp| {
    ///     assert!(Instant::now() >= t0 + Duration::from_millis(5));
    ///     lp.stop();
    /// });
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[track_caller]
    pub fn add_timeout<F>(&self, deadline: Instant, f: F) -> TimeoutId
    where
        F: FnOnce(&IoLoop) + 'static,
    {
        let q = Queued {
            f: Box::new(f),
            at: Location::caller(),
            name: std::any::type_name::<F>(),
        };
        let deadline = self.inner.clock.ns_of(deadline);
        self.inner.timers.queue.borrow_mut().insert(deadline, q)
    }

    /// The same as [`add_timeout`](Self::add_timeout) (Tornado's `call_at`).
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// use std::time::{Duration, Instant};
    /// let lp = IoLoop::new()?;
    /// lp.call_at(Instant::now() + Duration::from_millis(1), |lp| lp.stop());
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[track_caller]
    pub fn call_at<F>(&self, deadline: Instant, f: F) -> TimeoutId
    where
        F: FnOnce(&IoLoop) + 'static,
    {
        self.add_timeout(deadline, f)
    }

    /// Runs `f` once `delay` has passed from now (measured now, not from the cached
    /// [`time`](Self::time), so it never fires early).
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// use std::time::Duration;
    /// let lp = IoLoop::new()?;
    /// lp.call_later(Duration::from_millis(1), |lp| lp.stop());
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[track_caller]
    pub fn call_later<F>(&self, delay: Duration, f: F) -> TimeoutId
    where
        F: FnOnce(&IoLoop) + 'static,
    {
        let q = Queued {
            f: Box::new(f),
            at: Location::caller(),
            name: std::any::type_name::<F>(),
        };
        let delay = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        let deadline = self.inner.clock.precise_ns().saturating_add(delay);
        self.inner.timers.queue.borrow_mut().insert(deadline, q)
    }

    /// Cancels a timer. A no-op if it already fired, was cancelled, or `id` is unknown; an
    /// old id never cancels a newer timer. Returns whether a pending timer was cancelled.
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// use std::time::Duration;
    /// let lp = IoLoop::new()?;
    /// let id = lp.call_later(Duration::from_secs(1), |_| panic!("cancelled"));
    /// assert!(lp.remove_timeout(id));
    /// assert!(!lp.remove_timeout(id));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn remove_timeout(&self, id: TimeoutId) -> bool {
        let cancelled = self.inner.timers.queue.borrow_mut().cancel(id);
        // The callback is dropped with no loop state borrowed.
        cancelled.is_some()
    }

    /// Timers that will still fire.
    pub fn pending_timers(&self) -> usize {
        self.inner.timers.queue.borrow().len()
    }

    /// Entries in the timer heap, cancelled ones not yet dropped included. Cancellation
    /// is lazy; cancelled entries are dropped once they are more than 512 and more than
    /// half of the heap, so the heap never holds more than `2 * pending + 1` or
    /// `pending + 513` entries, whichever is larger.
    pub fn timer_heap_len(&self) -> usize {
        self.inner.timers.queue.borrow().heap_len()
    }
}

/// Identifies one timer; returned by `add_timeout`, `call_later` and `call_at`.
///
/// Cancelling an id whose timer already fired or was cancelled is a no-op, also after its
/// slot has been reused by another timer.
///
/// ```
/// use coreloop::IoLoop;
/// use std::time::Duration;
/// let lp = IoLoop::new()?;
/// let id = lp.call_later(Duration::from_secs(60), |_| unreachable!());
/// lp.remove_timeout(id);
/// lp.remove_timeout(id); // a no-op the second time
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimeoutId {
    index: u32,
    generation: u32,
}

struct Entry<K> {
    deadline: K,
    seq: u64,
    id: TimeoutId,
}

impl<K: Ord + Copy> PartialEq for Entry<K> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<K: Ord + Copy> Eq for Entry<K> {}
impl<K: Ord + Copy> PartialOrd for Entry<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: Ord + Copy> Ord for Entry<K> {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest entry.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.deadline, other.seq).cmp(&(self.deadline, self.seq))
    }
}

struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// The timer queue. `T` is what a timer carries (the loop stores its callbacks); `K` a
/// deadline (the loop's: nanoseconds of its clock).
pub(crate) struct TimerQueue<T, K = u64> {
    heap: BinaryHeap<Entry<K>>,
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    next_seq: u64,
    /// Heap entries whose slot no longer holds their timer.
    stale: usize,
}

impl<T, K: Ord + Copy> Default for TimerQueue<T, K> {
    fn default() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            next_seq: 0,
            stale: 0,
        }
    }
}

impl<T, K: Ord + Copy> TimerQueue<T, K> {
    /// Adds a timer; it fires at the first `pop_due(now, ..)` with `now >= deadline`.
    pub(crate) fn insert(&mut self, deadline: K, value: T) -> TimeoutId {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    value: None,
                });
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 live timers")
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.value = Some(value);
        let id = TimeoutId {
            index,
            generation: slot.generation,
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Entry { deadline, seq, id });
        id
    }

    /// Takes the timer out if `id` is still pending; it will never fire.
    pub(crate) fn cancel(&mut self, id: TimeoutId) -> Option<T> {
        let value = self.release(id)?;
        self.stale += 1;
        if self.stale > COMPACT_MIN && self.stale * 2 > self.heap.len() {
            self.compact();
        }
        Some(value)
    }

    /// Empties the slot of a live id and bumps its generation.
    fn release(&mut self, id: TimeoutId) -> Option<T> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let value = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
        Some(value)
    }

    fn is_live(&self, id: TimeoutId) -> bool {
        let slot = &self.slots[id.index as usize];
        slot.generation == id.generation && slot.value.is_some()
    }

    /// Rebuilds the heap without the entries of cancelled timers.
    fn compact(&mut self) {
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        entries.retain(|e| self.is_live(e.id));
        self.heap = BinaryHeap::from(entries);
        self.stale = 0;
    }

    /// Drops stale entries from the top of the heap.
    fn skip_stale(&mut self) {
        while let Some(top) = self.heap.peek() {
            if self.is_live(top.id) {
                break;
            }
            self.heap.pop();
            self.stale -= 1;
        }
    }

    /// The earliest pending deadline.
    pub(crate) fn next_deadline(&mut self) -> Option<K> {
        self.skip_stale();
        self.heap.peek().map(|e| e.deadline)
    }

    /// The sequence number the next timer will get. Passing it as `seq_limit` to
    /// `pop_due` excludes timers added after this call.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Removes and returns the earliest timer due at `now` that was added before
    /// `seq_limit`.
    pub(crate) fn pop_due(&mut self, now: K, seq_limit: u64) -> Option<(K, T)> {
        loop {
            self.skip_stale();
            let top = self.heap.peek()?;
            if top.deadline > now || top.seq >= seq_limit {
                return None;
            }
            let (id, deadline) = (top.id, top.deadline);
            self.heap.pop();
            if let Some(v) = self.release(id) {
                return Some((deadline, v));
            }
        }
    }

    /// Timers that will still fire.
    pub(crate) fn len(&self) -> usize {
        self.heap.len() - self.stale
    }

    /// Entries in the heap, including those of cancelled timers not yet dropped.
    pub(crate) fn heap_len(&self) -> usize {
        self.heap.len()
    }

    /// Slots allocated (live plus free): bounded by the most timers ever pending at once.
    #[cfg(test)]
    fn slot_count(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn drain(q: &mut TimerQueue<&'static str, Instant>, now: Instant) -> Vec<&'static str> {
        let limit = q.next_seq();
        std::iter::from_fn(|| q.pop_due(now, limit).map(|(_, v)| v)).collect()
    }

    #[test]
    fn fires_earliest_first_and_equal_deadlines_in_insertion_order() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut q = TimerQueue::default();
        q.insert(t0 + ms(30), "c");
        q.insert(t0 + ms(10), "a1");
        q.insert(t0 + ms(20), "b");
        q.insert(t0 + ms(10), "a2");
        q.insert(t0 + ms(10), "a3");
        assert_eq!(drain(&mut q, t0 + ms(30)), ["a1", "a2", "a3", "b", "c"]);
    }

    #[test]
    fn never_fires_before_its_deadline() {
        let t0 = Instant::now();
        let mut q = TimerQueue::default();
        q.insert(t0 + Duration::from_millis(10), "x");
        assert!(drain(&mut q, t0).is_empty());
        assert!(drain(&mut q, t0 + Duration::from_micros(9_999)).is_empty());
        assert_eq!(drain(&mut q, t0 + Duration::from_millis(10)), ["x"]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn cancelled_timer_does_not_fire_and_cancel_is_idempotent() {
        let t0 = Instant::now();
        let mut q = TimerQueue::default();
        let a = q.insert(t0, "a");
        q.insert(t0, "b");
        assert_eq!(q.cancel(a), Some("a"));
        assert_eq!(q.cancel(a), None);
        assert_eq!(q.len(), 1);
        assert_eq!(drain(&mut q, t0), ["b"]);
    }

    #[test]
    fn stale_id_cannot_cancel_the_timer_that_reused_its_slot() {
        let t0 = Instant::now();
        let mut q = TimerQueue::default();
        let old = q.insert(t0, "old");
        assert_eq!(drain(&mut q, t0), ["old"]); // fired; slot freed
        let new = q.insert(t0, "new");
        assert_eq!(old.index, new.index, "the slot is reused");
        assert_eq!(q.cancel(old), None, "old id must not cancel the new timer");
        assert_eq!(drain(&mut q, t0), ["new"]);

        let c = q.insert(t0, "c");
        q.cancel(c);
        let d = q.insert(t0, "d");
        assert_eq!(c.index, d.index);
        assert_eq!(q.cancel(c), None);
        assert_eq!(drain(&mut q, t0), ["d"]);
    }

    #[test]
    fn pop_due_respects_the_sequence_limit() {
        let t0 = Instant::now();
        let mut q = TimerQueue::default();
        q.insert(t0, "before");
        let limit = q.next_seq();
        q.insert(t0, "after");
        assert_eq!(q.pop_due(t0, limit).map(|(_, v)| v), Some("before"));
        assert_eq!(q.pop_due(t0, limit).map(|(_, v)| v), None);
        assert_eq!(drain(&mut q, t0), ["after"]);
    }

    #[test]
    fn next_deadline_skips_cancelled_entries() {
        let t0 = Instant::now();
        let mut q = TimerQueue::default();
        let a = q.insert(t0 + Duration::from_millis(1), "a");
        q.insert(t0 + Duration::from_millis(5), "b");
        q.cancel(a);
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_millis(5)));
        assert_eq!(
            q.pop_due(t0 + Duration::from_millis(5), q.next_seq())
                .map(|(_, v)| v),
            Some("b")
        );
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn a_million_add_cancel_pairs_keep_the_heap_bounded() {
        let t0 = Instant::now();
        let mut q = TimerQueue::default();
        // A few long-lived timers stay pending throughout.
        for i in 0..100u64 {
            q.insert(t0 + Duration::from_secs(3600 + i), ());
        }
        let mut max_heap = 0;
        for i in 0..1_000_000u64 {
            let id = q.insert(t0 + Duration::from_secs(60 + i % 1000), ());
            q.cancel(id);
            max_heap = max_heap.max(q.heap_len());
        }
        assert_eq!(q.len(), 100);
        // Compaction keeps stale entries at most max(COMPACT_MIN, live) + 1.
        assert!(
            max_heap <= 100 + COMPACT_MIN + 101,
            "heap grew to {max_heap}"
        );
        assert!(q.slot_count() <= 101, "slots grew to {}", q.slot_count());
    }

    #[test]
    fn compaction_waits_for_more_than_half_stale() {
        let t0 = Instant::now();
        let mut q = TimerQueue::default();
        let live: Vec<_> = (0..2000).map(|_| q.insert(t0, ())).collect();
        for _ in 0..1500 {
            let id = q.insert(t0, ());
            q.cancel(id);
        }
        // 1500 stale of 3500: fewer than half, so no compaction yet.
        assert_eq!(q.heap_len(), 3500);
        for _ in 0..501 {
            let id = q.insert(t0, ());
            q.cancel(id);
        }
        assert_eq!(q.heap_len(), 2000, "2001 stale of 4001 triggers compaction");
        assert_eq!(q.len(), live.len());
    }
}
