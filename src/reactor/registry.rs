//! What a loop keeps for the layers above it: per-loop values by type, resources it
//! closes when it closes, and work deferred to the end of the current step.

use super::IoLoop;
use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

/// Work to do once the current step of the loop (a callback, a timer, one event or
/// completion) is over, before the loop waits again: how the writes a stream gets
/// within one step go out in one send.
pub(crate) trait StepEnd {
    fn run(self: Rc<Self>, lp: &IoLoop);
}

/// Something a loop keeps alive while it is open and closes when the loop closes (as
/// Tornado's `IOLoop.close(all_fds=True)` closes what it watches).
pub(crate) trait Resource {
    /// Closes it; it untracks itself.
    fn close_resource(&self, lp: &IoLoop);
}

/// A `TypeId` is already a hash: a map keyed by it needs no hashing of its own.
#[derive(Default)]
pub(super) struct TypeIdHasher(u64);

impl Hasher for TypeIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_ne_bytes(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(super) type Locals = HashMap<TypeId, Rc<dyn Any>, BuildHasherDefault<TypeIdHasher>>;

#[derive(Default)]
pub(super) struct Registry {
    /// Per-loop values by type (`IoLoop::local`).
    locals: RefCell<Locals>,
    /// Open resources: kept alive while open (as Tornado's loop keeps an IOStream
    /// alive through its handler), closed by `close()`.
    resources: RefCell<slab::Slab<Rc<dyn Resource>>>,
    /// Work for the end of the current step (taken out as it runs).
    step_end: RefCell<Vec<Option<Rc<dyn StepEnd>>>>,
    /// Work for just before the loop's next wait for I/O.
    before_wait: RefCell<Vec<Option<Rc<dyn StepEnd>>>>,
}

impl Registry {
    pub(super) fn has_resources(&self) -> bool {
        !self.resources.borrow().is_empty()
    }

    /// Takes the open resources out (the loop is closing), to be closed with nothing
    /// borrowed.
    pub(super) fn take_resources(&self) -> Vec<Rc<dyn Resource>> {
        self.resources.borrow_mut().drain().collect()
    }

    /// Takes the rest out (the loop is closing), for the caller to drop with nothing
    /// borrowed: values' destructors may call back into the loop.
    pub(super) fn take_all(&self) -> (Locals, Vec<Option<Rc<dyn StepEnd>>>) {
        (
            std::mem::take(&mut *self.locals.borrow_mut()),
            std::mem::take(&mut *self.step_end.borrow_mut()),
        )
    }
}

impl IoLoop {
    /// This loop's value of type `T`, made with `T::default()` on first use: per-core
    /// state of a service (a cache shard, counters, a registry) without a global and
    /// without locks. Each loop has its own; other cores reach it by sending a callback.
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// use std::cell::Cell;
    /// #[derive(Default)]
    /// struct Hits(Cell<u64>);
    /// let lp = IoLoop::new()?;
    /// lp.local::<Hits>().0.set(1);
    /// assert_eq!(lp.local::<Hits>().0.get(), 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn local<T: Default + 'static>(&self) -> Rc<T> {
        let id = TypeId::of::<T>();
        let found = self.inner.registry.locals.borrow().get(&id).cloned();
        let any = found.unwrap_or_else(|| {
            let v: Rc<dyn Any> = Rc::new(T::default());
            self.inner
                .registry
                .locals
                .borrow_mut()
                .insert(id, v.clone());
            v
        });
        match any.downcast::<T>() {
            Ok(v) => v,
            Err(_) => unreachable!("locals are keyed by their type"),
        }
    }

    /// Sets this loop's value of type `T` (what [`local`](Self::local) and
    /// [`get_local`](Self::get_local) return from now on), replacing any: per-core state
    /// built with configuration, in a runtime's setup (`RuntimeBuilder::on_start`).
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// struct Limits { max_keys: usize }
    /// let lp = IoLoop::new()?;
    /// assert!(lp.get_local::<Limits>().is_none());
    /// lp.set_local(Limits { max_keys: 10 });
    /// assert_eq!(lp.get_local::<Limits>().unwrap().max_keys, 10);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_local<T: 'static>(&self, value: T) {
        let old = self
            .inner
            .registry
            .locals
            .borrow_mut()
            .insert(TypeId::of::<T>(), Rc::new(value));
        drop(old);
    }

    /// This loop's value of type `T`, if one was set (with [`set_local`](Self::set_local),
    /// or made by [`local`](Self::local)).
    pub fn get_local<T: 'static>(&self) -> Option<Rc<T>> {
        let found = self
            .inner
            .registry
            .locals
            .borrow()
            .get(&TypeId::of::<T>())
            .cloned()?;
        found.downcast::<T>().ok()
    }

    /// Keeps `r` alive until [`untrack`](Self::untrack) or the loop closes.
    pub(crate) fn track(&self, r: Rc<dyn Resource>) -> usize {
        self.inner.registry.resources.borrow_mut().insert(r)
    }

    /// Forgets a tracked resource (dropped with nothing borrowed).
    pub(crate) fn untrack(&self, key: usize) {
        let r = self.inner.registry.resources.borrow_mut().try_remove(key);
        drop(r);
    }

    /// Open streams and acceptors on this loop.
    pub fn open_resources(&self) -> usize {
        self.inner.registry.resources.borrow().len()
    }

    /// Runs `w` once the current step is over, before the loop waits for I/O.
    #[inline]
    pub(crate) fn at_step_end(&self, w: Rc<dyn StepEnd>) {
        self.inner.registry.step_end.borrow_mut().push(Some(w));
    }

    /// Runs `w` just before the loop's next wait for I/O, after every job and timer of
    /// this iteration: work queued from there (`add_callback`) runs only after the
    /// loop has looked at its I/O, not in another round of this iteration.
    pub(crate) fn before_wait(&self, w: Rc<dyn StepEnd>) {
        self.inner.registry.before_wait.borrow_mut().push(Some(w));
    }

    /// Runs `w` once the writes made so far in this step have been handed to the
    /// kernel: at the end of the step on epoll, where the step's end writes each stream
    /// with a syscall; just before the loop's next wait on io_uring, whose wait submits
    /// the sends the step queued (so one run there serves every completion of the
    /// iteration, however many there were).
    pub(crate) fn when_written(&self, w: Rc<dyn StepEnd>) {
        match self.backend() {
            crate::Backend::Uring => self.before_wait(w),
            _ => self.at_step_end(w),
        }
    }

    /// Runs the work deferred to the end of this step (and what it defers in turn).
    #[inline]
    pub(super) fn run_step_end(&self) {
        let list = &self.inner.registry.step_end;
        if !list.borrow().is_empty() {
            run_list(self, list);
        }
    }

    /// Runs the work deferred to just before the next wait for I/O.
    #[inline]
    pub(super) fn run_before_wait(&self) {
        let list = &self.inner.registry.before_wait;
        if !list.borrow().is_empty() {
            run_list(self, list);
        }
    }
}

/// Runs the work in `list`, in order, and what it adds in turn. (Each is taken out of
/// its place to run, with nothing borrowed; the list keeps its allocation for the next
/// step: a fresh one per step was a malloc per keep-alive request.)
fn run_list(lp: &IoLoop, list: &RefCell<Vec<Option<Rc<dyn StepEnd>>>>) {
    let mut i = 0;
    loop {
        let w = match list.borrow_mut().get_mut(i) {
            Some(w) => w.take(),
            None => break,
        };
        if let Some(w) = w {
            w.run(lp);
        }
        i += 1;
    }
    if i > 0 {
        list.borrow_mut().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::time::Duration;

    #[derive(Default)]
    struct A(Cell<u32>);
    #[derive(Default)]
    struct B(Cell<u32>);

    #[test]
    fn locals_are_one_per_type_and_loop() {
        let lp = IoLoop::new().unwrap();
        lp.local::<A>().0.set(1);
        lp.local::<B>().0.set(2);
        assert_eq!((lp.local::<A>().0.get(), lp.local::<B>().0.get()), (1, 2));
        let other = IoLoop::new().unwrap();
        assert_eq!(other.local::<A>().0.get(), 0, "another loop has its own");
    }

    /// A link of a chain of jobs: records itself, then queues the next link from just
    /// before the wait (`after_io`) or as a callback of this step.
    struct Link {
        left: u32,
        after_io: bool,
        seen: Rc<std::cell::RefCell<Vec<&'static str>>>,
    }
    impl StepEnd for Link {
        fn run(self: Rc<Self>, lp: &IoLoop) {
            lp.add_callback(move |lp| self.step(lp));
        }
    }
    impl Link {
        fn step(self: Rc<Self>, lp: &IoLoop) {
            self.seen.borrow_mut().push("job");
            if self.left == 0 {
                return lp.stop();
            }
            let next = Rc::new(Link {
                left: self.left - 1,
                after_io: self.after_io,
                seen: self.seen.clone(),
            });
            if self.after_io {
                lp.before_wait(next);
            } else {
                lp.add_callback(move |lp| next.step(lp));
            }
        }
    }

    #[test]
    fn work_queued_before_the_wait_runs_after_the_loop_looked_at_its_io() {
        use crate::{Backend, Interest};
        use std::io::Write;
        use std::os::fd::AsRawFd;
        for backend in [Backend::Epoll, Backend::Uring] {
            for after_io in [false, true] {
                let Ok(lp) = IoLoop::with_backend(backend) else {
                    assert!(
                        std::env::var_os("CORELOOP_REQUIRE_URING").is_none(),
                        "io_uring unavailable"
                    );
                    eprintln!("skipped on {backend:?}: unavailable here");
                    continue;
                };
                let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
                b.write_all(b"x").unwrap();
                let seen = Rc::new(std::cell::RefCell::new(Vec::new()));
                let s = seen.clone();
                lp.add_handler(a.as_raw_fd(), Interest::READABLE, move |lp, fd, _| {
                    s.borrow_mut().push("io");
                    lp.remove_handler(fd);
                })
                .unwrap();
                let first = Rc::new(Link {
                    left: 3,
                    after_io,
                    seen: seen.clone(),
                });
                lp.add_callback(move |lp| first.step(lp));
                lp.start().unwrap();
                let want = if after_io {
                    // The ready fd is looked at before the second link.
                    ["job", "io", "job", "job", "job"]
                } else {
                    // A chain of callbacks runs in rounds before the loop polls.
                    ["job", "job", "job", "job", "io"]
                };
                assert_eq!(*seen.borrow(), want, "{backend:?}, after_io {after_io}");
            }
        }
    }

    /// Reads the clock at the end of a step, as the HTTP server does for a response's
    /// end time.
    struct Stamp;
    impl StepEnd for Stamp {
        fn run(self: Rc<Self>, lp: &IoLoop) {
            lp.stamp();
        }
    }

    #[test]
    fn a_clock_read_at_the_end_of_a_step_never_serves_a_later_one() {
        // A read at the end of a round, then a sleep in the poller: after it, the loop's
        // time must not go back to that read (it once did, for the job after the sleep).
        for threshold in [Duration::from_millis(50), Duration::from_millis(5)] {
            let lp = IoLoop::new().unwrap();
            lp.set_stall_threshold(threshold);
            lp.add_callback(|lp| lp.at_step_end(Rc::new(Stamp)));
            // (The time in the timer, then in a callback it adds: the next round.)
            let seen = Rc::new(Cell::new((None, None)));
            let s = seen.clone();
            lp.call_later(Duration::from_millis(60), move |lp| {
                s.set((Some(lp.time()), None));
                let s = s.clone();
                lp.add_callback(move |lp| {
                    s.set((s.get().0, Some(lp.time())));
                    lp.stop();
                });
            });
            lp.start().unwrap();
            let (Some(in_timer), Some(after)) = seen.get() else {
                panic!("both ran: {:?}", seen.get())
            };
            assert!(after >= in_timer, "the loop's time went back");
            assert_eq!(lp.loop_stats().stalls, 0, "nothing stalled");
        }
    }
}
