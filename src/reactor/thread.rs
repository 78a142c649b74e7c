//! What a thread is to the loops, in one thread-local context: the loop it runs now,
//! the loops made on it, whether it runs a loop for a runtime, its id (compared on
//! every task wake-up, without cloning the thread's handle), and how many jobs it sent
//! to loops (one in so many carries its send time).

use super::{Inner, IoLoop};
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::thread::ThreadId;

struct ThreadContext {
    /// The loop running on this thread (inside `start`).
    current: RefCell<Option<IoLoop>>,
    /// The loops made on this thread, by id (usually one): where a task woken here goes.
    loops: RefCell<Vec<(u64, Weak<Inner>)>>,
    /// This thread runs (or is about to run) a loop for a runtime: set before its setup
    /// runs, so a blocking wait is refused there too, not only while the loop runs.
    loop_thread: Cell<bool>,
    id: ThreadId,
    /// Jobs this thread sent to loops.
    sends: Cell<u32>,
}

thread_local! {
    static THREAD: ThreadContext = ThreadContext {
        current: RefCell::new(None),
        loops: RefCell::new(Vec::new()),
        loop_thread: Cell::new(false),
        id: std::thread::current().id(),
        sends: Cell::new(0),
    };
}

/// This thread's id (`None` while the thread is being torn down).
pub(super) fn id() -> Option<ThreadId> {
    THREAD.try_with(|t| t.id).ok()
}

/// The loop running on this thread, if one is.
pub(super) fn current() -> Option<IoLoop> {
    THREAD
        .try_with(|t| t.current.try_borrow().ok()?.clone())
        .ok()
        .flatten()
}

/// Sets (or, with `None`, clears) the loop running on this thread; returns the one that
/// was.
pub(super) fn set_current(lp: Option<IoLoop>) -> Option<IoLoop> {
    THREAD
        .try_with(|t| std::mem::replace(&mut *t.current.borrow_mut(), lp))
        .ok()
        .flatten()
}

/// Records `lp` as a loop of this thread (for wakes on this thread).
pub(super) fn register_loop(lp: &IoLoop) {
    let _ = THREAD.try_with(|t| {
        let mut l = t.loops.borrow_mut();
        l.retain(|(_, w)| w.strong_count() > 0);
        l.push((lp.id(), Rc::downgrade(&lp.inner)));
    });
}

/// The loop of this thread with id `id`, if it is still there.
pub(super) fn loop_by_id(id: u64) -> Option<IoLoop> {
    THREAD
        .try_with(|t| {
            t.loops
                .borrow()
                .iter()
                .find(|(i, _)| *i == id)
                .and_then(|(_, w)| w.upgrade())
                .map(|inner| IoLoop { inner })
        })
        .ok()
        .flatten()
}

/// Marks this thread as a loop's thread for good (`Call::wait` refuses there).
pub(crate) fn mark_loop_thread() {
    let _ = THREAD.try_with(|t| t.loop_thread.set(true));
}

/// Counts a job this thread sends to a loop: how many it has sent, this one included
/// (`None` while the thread is being torn down).
pub(super) fn count_send() -> Option<u32> {
    THREAD
        .try_with(|t| {
            let n = t.sends.get().wrapping_add(1);
            t.sends.set(n);
            n
        })
        .ok()
}

/// True on a thread that runs (or is about to run) a loop.
pub(super) fn on_loop_thread() -> bool {
    THREAD.try_with(|t| t.loop_thread.get()).unwrap_or(false) || current().is_some()
}
