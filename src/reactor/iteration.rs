//! Running a loop: `start`, `stop`, `close`, and one iteration (the module docs of
//! `reactor/mod.rs` list its steps).

use super::callbacks::Job;
use super::completion::Sink;
use super::handle::since_epoch;
use super::{panic_message, thread, IoLoop};
use crate::poller::{Completion, Event};
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe, Location};
use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

/// Rounds of the run queue per iteration at most, before the loop polls for I/O.
const MAX_ROUNDS: usize = 64;
/// Jobs per iteration at most (counted at the end of a round), before the I/O poll.
const MAX_JOBS: usize = 1024;
/// While idle-polling, the I/O is polled (without blocking) once every this many
/// looks at the run queue: about every microsecond.
const IDLE_POLL_IO_EVERY: u32 = 32;

impl IoLoop {
    /// Runs the loop until [`stop`](Self::stop) is called.
    ///
    /// Returns an error at once if a loop is already running on this thread (starting a
    /// loop from inside a callback would block the outer one forever), or if the loop has
    /// been closed; and the poller's error if waiting for I/O fails. If `stop()` was called
    /// while the loop was not running, returns at once.
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// let lp = IoLoop::new()?;
    /// lp.add_callback(|lp| {
    ///     assert!(lp.start().is_err()); // not a deadlock
    ///     lp.stop();
    /// });
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn start(&self) -> io::Result<()> {
        if self.inner.running.get() || thread::current().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                "an IoLoop is already running on this thread",
            ));
        }
        if !self.inner.queue.is_open() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the IoLoop has been closed",
            ));
        }
        let _running = RunningGuard::enter(self);
        let shared = &self.inner.handle.shared;
        // Each iteration starts when the last one ended (its last clock read).
        self.inner.clock.wait_ended();
        loop {
            if shared.stop.load(Ordering::Relaxed) && shared.stop.swap(false, Ordering::AcqRel) {
                return Ok(());
            }
            self.iterate()?;
        }
    }

    /// Makes [`start`](Self::start) return after the iteration in progress; if the loop
    /// is not running, its next `start()` returns at once. Any thread can do the same
    /// through [`LoopHandle::stop`](crate::LoopHandle::stop).
    pub fn stop(&self) {
        self.inner.handle.shared.stop.store(true, Ordering::Release);
    }

    /// Closes the loop: drops every handler, timer and queued callback, and makes every
    /// [`LoopHandle`](crate::LoopHandle) return [`LoopClosed`](crate::LoopClosed) from now on. A running loop
    /// stops after the iteration in progress. The fds of handlers are not closed (the loop
    /// never owned them). Dropping the last `IoLoop` clone does the same.
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// let lp = IoLoop::new()?;
    /// let h = lp.handle();
    /// lp.close();
    /// assert!(h.is_closed() && lp.start().is_err());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn close(&self) {
        let shared = &self.inner.handle.shared;
        shared.closed.store(true, Ordering::Release);
        shared.stop.store(true, Ordering::Release);
        // Open streams and acceptors first: closing them removes their handlers and ops.
        let open = self.inner.registry.take_resources();
        for r in &open {
            r.close_resource(self);
        }
        drop(open);
        // Tasks' futures are dropped here, on the loop's thread (the only one allowed to).
        self.drop_tasks();
        // Take everything out first, then drop it with nothing borrowed: destructors of
        // user closures may call back into the loop.
        let (fds, handlers) = self.inner.handlers.take_all();
        for fd in fds {
            let _ = self.inner.poller.borrow_mut().deregister(fd);
        }
        let queued = self.inner.queue.close();
        let timers = std::mem::take(&mut *self.inner.timers.queue.borrow_mut());
        let calls = self.inner.calls.take_all();
        let registry = self.inner.registry.take_all();
        drop((handlers, queued, timers, calls, registry));
    }

    /// One iteration; see the module docs for the steps.
    fn iterate(&self) -> io::Result<()> {
        let inner = &*self.inner;
        let clock = &inner.clock;
        // The end of the last iteration: no clock read to start this one.
        let start = clock.now_ns();

        // Rounds of the run queue, then one wait for I/O. A round runs the jobs queued
        // before it (one added meanwhile waits for the next round: Tornado's rule),
        // then the timers due, then the work deferred to the end of the step. More
        // rounds follow while jobs keep coming, within a budget, so that a chain of
        // jobs (a task waking another) costs no I/O poll per link, and a busy producer
        // still cannot starve I/O or timers.
        let mut rounds = 0;
        let mut jobs = 0;
        let remote_pending = loop {
            let (remote_pending, came) = inner.queue.take_remote();
            if came > 0 {
                let c = &inner.stats.counters.remote_jobs;
                c.set(c.get() + came as u64);
            }
            jobs += self.run_round();
            rounds += 1;
            let more = inner.queue.local_len() > 0 || remote_pending;
            if !more
                || rounds >= MAX_ROUNDS
                || jobs >= MAX_JOBS
                || inner.handle.shared.stop.load(Ordering::Relaxed)
            {
                break remote_pending;
            }
        };

        // Work for when the sends queued so far reach the kernel (on io_uring: now, at
        // the wait); a stamp it takes is the loop's time, not a job's end.
        self.run_before_wait();
        clock.forget_stamp();
        clock.catch_up();
        // Wait for I/O: not at all if jobs are pending, else until the next deadline.
        let shared = &inner.handle.shared;
        let mut timeout = if remote_pending || inner.queue.local_len() > 0 {
            Some(Duration::ZERO)
        } else {
            let next = inner.timers.queue.borrow_mut().next_deadline();
            next.map(|d| Duration::from_nanos(d.saturating_sub(clock.now_ns())))
        };
        let mut may_sleep = timeout != Some(Duration::ZERO);
        let mut events = std::mem::take(&mut *inner.handlers.events.borrow_mut());
        let mut completions = std::mem::take(&mut *inner.completions.borrow_mut());
        if clock.watched() {
            // Waiting is not busy (a watchdog must not see a sleeping or idle-polling
            // loop as stuck).
            shared.busy_since.store(0, Ordering::Relaxed);
        }
        // Idle from here (the end of the last job) while there is nothing to do: spinning
        // in the idle poll, then sleeping in the poller.
        let idle = may_sleep;
        clock.wait_begins(idle);
        let mut polled = None;
        if idle {
            polled = self.idle_poll(&mut timeout, &mut events, &mut completions);
            may_sleep = polled.is_none() && timeout != Some(Duration::ZERO);
        }
        if may_sleep {
            shared.needs_wake.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if inner.queue.remote_waiting() || shared.stop.load(Ordering::SeqCst) {
                timeout = Some(Duration::ZERO);
            }
        }
        let polled = match polled {
            Some(r) => r,
            None => inner.poller.borrow_mut().poll(
                &mut events,
                &mut completions,
                &mut inner.pool.borrow_mut(),
                timeout,
            ),
        };
        if may_sleep {
            shared.needs_wake.store(false, Ordering::Relaxed);
        }
        self.rewake_failed();
        clock.wait_ended();
        if clock.watched() {
            let since = since_epoch(clock.now());
            shared.busy_since.store(since, Ordering::Relaxed);
        }
        let stats = &inner.stats;
        // The writes an event causes go out right after it (one send per stream for
        // however many responses it produced), not after the whole batch: an early
        // connection's answer does not wait for the rest of the batch.
        for ev in &events {
            stats.activity.set(None);
            self.dispatch(*ev);
            self.run_step_end();
            self.job_done("fd handler", "");
        }
        let c = &stats.counters;
        c.events.set(c.events.get() + events.len() as u64);
        c.completions
            .set(c.completions.get() + completions.len() as u64);
        events.clear();
        *inner.handlers.events.borrow_mut() = events;
        let here = Location::caller();
        for (sink, c) in completions.drain(..) {
            stats.activity.set(None);
            self.run_guarded("completion", here, || sink(self, c));
            self.run_step_end();
            self.job_done("completion", "");
        }
        *inner.completions.borrow_mut() = completions;
        let (busy, idle) = clock.iteration_ended(start);
        stats.iteration(busy, idle, may_sleep);
        polled
    }

    /// The idle poll ([`IoLoop::set_idle_poll`]): with nothing to do since now, looks
    /// at the run queue and (every [`IDLE_POLL_IO_EVERY`] looks) polls the I/O without
    /// blocking, for up to the idle poll or the next timer. Returns the I/O poll's result
    /// if it found events; sets `timeout` to zero if jobs came or the loop was stopped,
    /// else shortens it by the time spent here.
    fn idle_poll(
        &self,
        timeout: &mut Option<Duration>,
        events: &mut Vec<Event>,
        completions: &mut Vec<(Sink, Completion)>,
    ) -> Option<io::Result<()>> {
        let inner = &*self.inner;
        let poll = inner.idle_poll.get();
        if poll.is_zero() {
            return None;
        }
        let shared = &inner.handle.shared;
        let from = Instant::now();
        let until = from + timeout.map_or(poll, |t| t.min(poll));
        let mut spins = 0u32;
        loop {
            if inner.queue.remote_waiting() || shared.stop.load(Ordering::Relaxed) {
                *timeout = Some(Duration::ZERO);
                return None;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(IDLE_POLL_IO_EVERY) {
                let r = inner.poller.borrow_mut().poll(
                    events,
                    completions,
                    &mut inner.pool.borrow_mut(),
                    Some(Duration::ZERO),
                );
                if r.is_err() || !events.is_empty() || !completions.is_empty() {
                    return Some(r);
                }
                let now = Instant::now();
                if now >= until {
                    // The spin took its time off the sleep a timer allows.
                    *timeout = timeout.map(|t| t.saturating_sub(now - from));
                    return None;
                }
            }
            std::hint::spin_loop();
        }
    }

    /// A job ended now: times it (see the loop's clock), and reports a stall if it took
    /// too long. The next job starts now (for a watchdog, when one is set).
    fn job_done(&self, what: &str, name: &str) {
        let clock = &self.inner.clock;
        let took = clock.job_ended();
        self.inner
            .stats
            .job_done(what, name, took, clock.stall_after());
        if clock.watched() {
            let since = since_epoch(clock.now());
            self.inner
                .handle
                .shared
                .busy_since
                .store(since, Ordering::Relaxed);
        }
    }

    /// One round: the jobs queued now, the timers due now, the step's deferred work.
    /// Returns how many jobs ran.
    fn run_round(&self) -> usize {
        let inner = &*self.inner;
        let stats = &inner.stats;
        let n = inner.queue.local_len();
        for _ in 0..n {
            stats.activity.set(None);
            match inner.queue.pop() {
                Some(Job::Callback(cb, sent)) => {
                    if let Some(sent) = sent {
                        stats.remote_sent_at(sent);
                    }
                    let c = &stats.counters.callbacks;
                    c.set(c.get() + 1);
                    let name = cb.name;
                    self.run_guarded("callback", cb.at, || (cb.f)(self));
                    self.job_done("callback", name);
                }
                Some(Job::Task(t, sent)) => {
                    if let Some(sent) = sent {
                        stats.remote_sent_at(sent);
                    }
                    let c = &stats.counters.task_polls;
                    c.set(c.get() + 1);
                    let (at, name) = (t.metadata().spawned_at, t.metadata().name);
                    self.run_guarded("task", at, || {
                        t.run();
                    });
                    self.job_done("task poll of", name);
                }
                None => break,
            }
        }

        // Due timers (now: after the jobs above), excluding those added by the timers
        // themselves. (The loop's time is caught up first if jobs left it behind, so
        // that timers that came due meanwhile run now, and their lateness is right.)
        let clock = &inner.clock;
        let limit = inner.timers.queue.borrow().next_seq();
        loop {
            if clock.stale() && inner.timers.queue.borrow_mut().next_deadline().is_some() {
                clock.catch_up();
            }
            let due = inner
                .timers
                .queue
                .borrow_mut()
                .pop_due(clock.now_ns(), limit);
            let Some((deadline, t)) = due else { break };
            stats.timer_lag(clock.now_ns().saturating_sub(deadline));
            stats.activity.set(None);
            let name = t.name;
            self.run_guarded("timer", t.at, || (t.f)(self));
            self.job_done("timer", name);
        }

        // Writes made by jobs and timers go out before the wait. (A stamp this takes is
        // the loop's time, not the end of a job to come.)
        self.run_step_end();
        clock.forget_stamp();
        n
    }

    /// Runs user code, catching and logging a panic. Returns false if it panicked.
    pub(super) fn run_guarded(&self, what: &str, at: &Location<'_>, f: impl FnOnce()) -> bool {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(()) => true,
            Err(payload) => {
                log::error!(
                    "coreloop: exception in {what} added at {at}: {}",
                    panic_message(&*payload)
                );
                false
            }
        }
    }
}

/// Marks the loop as running and current for the duration of `start()`, also when it
/// unwinds.
struct RunningGuard;

impl RunningGuard {
    fn enter(lp: &IoLoop) -> RunningGuard {
        lp.inner.running.set(true);
        drop(thread::set_current(Some(lp.clone())));
        RunningGuard
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        let lp = thread::set_current(None);
        if let Some(lp) = lp {
            lp.inner.running.set(false);
        }
    }
}
