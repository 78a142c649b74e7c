//! The loop's side of tasks: where a woken task goes, and the tasks a loop has alive.
//!
//! A task (a future polled by the loop, `task/`) is woken through a `Waker` that any
//! thread may hold. Woken on the loop's own thread, it joins the run queue with a plain
//! push: no lock, no atomic of ours, no syscall. Woken on another thread, it goes over
//! the loop's channel, and the eventfd is written only if the loop may be asleep (the
//! same path as `LoopHandle::add_callback`).
//!
//! A task's future must only be polled and dropped on its loop's thread. So when a loop
//! closes it wakes every task it still has and drops them there, which drops their
//! futures (and what they hold) on the right thread; a task woken from another thread
//! after its loop closed is never dropped there: it is leaked instead (its loop, the only
//! thread allowed to drop it, is gone).

use super::{thread, IoLoop, LoopHandle};
use std::cell::RefCell;
use std::panic::Location;
use std::task::Waker;
use std::thread::ThreadId;

/// What the loop knows of a task: where it was spawned (for the panic log) and its
/// future's type (for stall reports).
pub(crate) struct TaskMeta {
    pub(crate) spawned_at: &'static Location<'static>,
    pub(crate) name: &'static str,
}

/// A task ready to be polled, as the run queue holds it (defined here, with the queue's
/// side of tasks: the layer above, `task/`, makes them).
pub(crate) type Runnable = async_task::Runnable<TaskMeta>;

/// Where a task of one loop goes when it is woken. `Send + Sync`: wakers are.
#[derive(Clone)]
pub(crate) struct TaskTarget {
    handle: LoopHandle,
    id: u64,
    thread: ThreadId,
}

impl TaskTarget {
    /// Queues `task` to be polled on its loop.
    pub(crate) fn schedule(&self, task: Runnable) {
        if thread::id() == Some(self.thread) {
            match thread::loop_by_id(self.id) {
                Some(lp) => lp.inner.queue.push_task(task),
                // The loop is gone; this is its thread, so the task may be dropped here.
                None => drop(task),
            }
            return;
        }
        if let Err(task) = self.handle.send_task(task) {
            // The loop is closed, and only its thread may drop the task's future.
            log::debug!("coreloop: a task woken after its loop closed is leaked");
            std::mem::forget(task);
        }
    }
}

/// Where a live task is recorded: its key in the loop's `alive`, and which `alive`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaskKey {
    key: usize,
    generation: u64,
}

/// The tasks a loop has alive: a waker for each, so that closing the loop can reach
/// them all.
#[derive(Default)]
pub(super) struct Tasks {
    alive: RefCell<slab::Slab<Waker>>,
    /// Which `alive` the keys handed out now are for: closing the loop replaces it, and
    /// a task of the old one that ends then must not remove a new task's entry.
    generation: std::cell::Cell<u64>,
    /// Where this loop's tasks go, made once and shared by all of them (one reference
    /// count per task, not a channel sender and a handle each).
    target: std::cell::OnceCell<std::sync::Arc<TaskTarget>>,
}

impl IoLoop {
    /// Where this loop's tasks go when woken.
    pub(crate) fn task_target(&self) -> std::sync::Arc<TaskTarget> {
        self.inner
            .tasks
            .target
            .get_or_init(|| {
                std::sync::Arc::new(TaskTarget {
                    handle: self.handle(),
                    id: self.id(),
                    thread: thread::id().unwrap_or_else(|| std::thread::current().id()),
                })
            })
            .clone()
    }

    /// The key the next task recorded by [`task_started`] gets (known before the task
    /// is made, so that its future can hold it).
    ///
    /// [`task_started`]: Self::task_started
    pub(crate) fn next_task_key(&self) -> TaskKey {
        TaskKey {
            key: self.inner.tasks.alive.borrow().vacant_key(),
            generation: self.inner.tasks.generation.get(),
        }
    }

    /// Records a live task (its waker) under `key`, from [`next_task_key`] with no task
    /// recorded in between; [`task_ended`] forgets it.
    ///
    /// [`next_task_key`]: Self::next_task_key
    /// [`task_ended`]: Self::task_ended
    pub(crate) fn task_started(&self, key: TaskKey, waker: Waker) {
        let got = self.inner.tasks.alive.borrow_mut().insert(waker);
        // (Nothing runs between the two calls that could record a task.)
        assert_eq!(
            got, key.key,
            "a task was recorded between next_task_key and task_started"
        );
    }

    /// Forgets a task that finished or whose future was dropped.
    pub(crate) fn task_ended(&self, key: TaskKey) {
        if key.generation != self.inner.tasks.generation.get() {
            return; // its entry went with an earlier `alive` (the loop is closing)
        }
        let w = self.inner.tasks.alive.borrow_mut().try_remove(key.key);
        drop(w);
    }

    /// Tasks alive on this loop (spawned, not yet finished or dropped).
    pub fn tasks(&self) -> usize {
        self.inner.tasks.alive.borrow().len()
    }

    /// Closing: every task still alive is woken and then dropped here, which drops its
    /// future on this thread; returns nothing, and leaves no task behind.
    pub(super) fn drop_tasks(&self) {
        loop {
            let alive = std::mem::take(&mut *self.inner.tasks.alive.borrow_mut());
            if alive.is_empty() {
                return;
            }
            let g = &self.inner.tasks.generation;
            g.set(g.get() + 1);
            // Waking queues each idle task on this loop; dropping the queued runnables
            // drops the futures. (Dropping can end more tasks, or start some: go round.)
            for (_, w) in alive {
                w.wake();
            }
            while let Some(job) = self.inner.queue.pop() {
                drop(job);
            }
        }
    }
}
