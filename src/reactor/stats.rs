//! What a loop records about itself, always on and written only by its own thread:
//! counters, and HdrHistograms of iteration time, loop lag (how late timers fire),
//! the wait of jobs sent from other threads, and stalls (one job keeping the loop busy
//! past a threshold, logged once with what ran).
//!
//! The times come from the loop's clock (`clock.rs`), which times each job. Cost: a few
//! nanoseconds per histogram record, plain `Cell` counters; no lock, no atomic, no
//! shared cache line. Histograms can be switched off ([`IoLoop::set_recording`]);
//! counters always count.

use super::histogram::LogHistogram;
use super::IoLoop;
use hdrhistogram::Histogram;
use std::cell::{Cell, RefCell};
use std::time::Duration;

/// Values are recorded in nanoseconds, up to a minute, with two significant digits
/// (1% precision; about 30 KiB per histogram).
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 2).expect("valid histogram bounds")
}

/// Nanoseconds of a duration, for a histogram (saturating).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A loop's stall threshold when none is set.
pub(crate) const DEFAULT_STALL: Duration = Duration::from_millis(50);

/// The counters of a loop.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) iterations: Cell<u64>,
    pub(super) callbacks: Cell<u64>,
    pub(super) task_polls: Cell<u64>,
    pub(super) timers: Cell<u64>,
    pub(super) events: Cell<u64>,
    pub(super) completions: Cell<u64>,
    /// Waits for I/O that were allowed to block.
    pub(super) sleeps: Cell<u64>,
    /// Jobs (callbacks and task wakes) that came from other threads.
    pub(super) remote_jobs: Cell<u64>,
    /// Sleeping loops this loop's thread woke: by eventfd write, by `MSG_RING`.
    pub(super) eventfd_wakes: Cell<u64>,
    pub(super) ring_wakes: Cell<u64>,
    pub(super) stalls: Cell<u64>,
    /// Time in waits that were allowed to block (idle), and in the rest (busy).
    pub(super) idle_ns: Cell<u64>,
    pub(super) busy_ns: Cell<u64>,
}

/// A loop's histograms (copied into HdrHistograms when asked for: `histogram.rs`).
#[derive(Default)]
pub(super) struct Histograms {
    /// The busy part of each iteration.
    pub(super) iteration: LogHistogram,
    /// How late each timer ran, after its deadline.
    pub(super) lag: LogHistogram,
    /// From a job's send on another thread to its run (sampled, one in
    /// [`REMOTE_SAMPLE`]).
    pub(super) remote_wait: LogHistogram,
    /// The length of each stall.
    pub(super) stall: LogHistogram,
}

/// One job in [`REMOTE_SAMPLE`] sent from another thread carries its send time.
pub(crate) const REMOTE_SAMPLE: u32 = 16;

pub(super) struct Stats {
    pub(super) counters: Counters,
    pub(super) hist: RefCell<Histograms>,
    /// Histograms are recorded (counters always are).
    pub(super) recording: Cell<bool>,
    /// What the loop is running now, when a layer above says (an HTTP route).
    pub(super) activity: Cell<Option<&'static str>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            counters: Counters::default(),
            hist: RefCell::new(Histograms::default()),
            recording: Cell::new(true),
            activity: Cell::new(None),
        }
    }
}

fn bump(c: &Cell<u64>, by: u64) {
    c.set(c.get().wrapping_add(by));
}

impl Stats {
    /// A job (callback, task poll, handler, completion, timer) took `took`: a stall if
    /// that is past `stall_after`.
    pub(super) fn job_done(&self, what: &str, name: &str, took: Duration, stall_after: Duration) {
        if took < stall_after {
            return;
        }
        self.stall(what, name, took, stall_after);
    }

    #[cold]
    #[inline(never)]
    fn stall(&self, what: &str, name: &str, took: Duration, stall_after: Duration) {
        bump(&self.counters.stalls, 1);
        if self.recording.get() {
            self.hist.borrow_mut().stall.record(nanos(took));
        }
        let activity = self.activity.get();
        let what = match activity {
            Some(a) => format!("{what} ({a})"),
            None => format!("{what} {name}"),
        };
        log::warn!(
            "coreloop: stall: the loop was busy for {took:?} in one {what} (threshold {stall_after:?})"
        );
    }

    /// A timer ran `late` ns after its deadline.
    pub(super) fn timer_lag(&self, late: u64) {
        bump(&self.counters.timers, 1);
        if self.recording.get() {
            self.hist.borrow_mut().lag.record(late);
        }
    }

    /// A job sent from another thread at `sent` (one in [`REMOTE_SAMPLE`]) runs now.
    pub(super) fn remote_sent_at(&self, sent: std::time::Instant) {
        if self.recording.get() {
            let waited = sent.elapsed();
            self.hist.borrow_mut().remote_wait.record(nanos(waited));
        }
    }

    /// An iteration ended: `busy` ns running jobs, `idle` ns with nothing to do
    /// (idle-polling or asleep); `slept` if it waited in the poller.
    pub(super) fn iteration(&self, busy: u64, idle: u64, slept: bool) {
        let c = &self.counters;
        bump(&c.iterations, 1);
        bump(&c.busy_ns, busy);
        bump(&c.idle_ns, idle);
        if slept {
            bump(&c.sleeps, 1);
        }
        if self.recording.get() {
            self.hist.borrow_mut().iteration.record(busy);
        }
    }
}

/// A copy of what one loop recorded, to merge and export (see `metrics/`).
#[derive(Clone, Debug)]
pub struct LoopStats {
    /// Loop iterations.
    pub iterations: u64,
    /// Callbacks run (local and from other threads).
    pub callbacks: u64,
    /// Polls of tasks.
    pub task_polls: u64,
    /// Timers fired.
    pub timers: u64,
    /// Readiness events dispatched to handlers.
    pub events: u64,
    /// Completions of io_uring ops dispatched.
    pub completions: u64,
    /// Waits for I/O that were allowed to block (the loop had nothing to do).
    pub sleeps: u64,
    /// Jobs (callbacks, task wakes) sent from other threads.
    pub remote_jobs: u64,
    /// Sleeping loops this loop woke with an eventfd write (when it sent them work).
    pub eventfd_wakes: u64,
    /// Sleeping loops this loop woke with an io_uring `MSG_RING` (see
    /// [`WakeVia`](crate::WakeVia)).
    pub ring_wakes: u64,
    /// io_uring submission queue entries queued (zero on epoll): with the requests a
    /// server answered, what each costs the kernel interface.
    pub sqes: u64,
    /// Jobs that kept the loop busy past the stall threshold.
    pub stalls: u64,
    /// Bytes the loop's streams buffer now, unread input and unsent output (a gauge;
    /// see [`IoLoop::set_buffer_budget`]).
    pub buffered: u64,
    /// Times a stream was held back because the loop was over its buffer budget.
    pub budget_holds: u64,
    /// Time with nothing to do: idle-polling, then in waits allowed to block.
    pub idle: Duration,
    /// Time spent doing anything else.
    pub busy: Duration,
    /// The busy part of each iteration, nanoseconds.
    pub iteration_ns: Histogram<u64>,
    /// How late timers fired after their deadline, nanoseconds.
    pub timer_lag_ns: Histogram<u64>,
    /// From a job's send on another thread to its run, nanoseconds (one job in 16).
    pub remote_wait_ns: Histogram<u64>,
    /// Stall lengths, nanoseconds.
    pub stall_ns: Histogram<u64>,
}

impl LoopStats {
    /// The share of time the loop was busy (0 to 1).
    pub fn utilization(&self) -> f64 {
        let total = self.busy + self.idle;
        if total.is_zero() {
            0.0
        } else {
            self.busy.as_secs_f64() / total.as_secs_f64()
        }
    }

    /// Adds `other`'s counts and histograms to these (for totals over cores).
    pub fn merge(&mut self, other: &LoopStats) {
        self.iterations += other.iterations;
        self.callbacks += other.callbacks;
        self.task_polls += other.task_polls;
        self.timers += other.timers;
        self.events += other.events;
        self.completions += other.completions;
        self.sleeps += other.sleeps;
        self.remote_jobs += other.remote_jobs;
        self.eventfd_wakes += other.eventfd_wakes;
        self.ring_wakes += other.ring_wakes;
        self.sqes += other.sqes;
        self.stalls += other.stalls;
        self.buffered += other.buffered;
        self.budget_holds += other.budget_holds;
        self.idle += other.idle;
        self.busy += other.busy;
        let _ = self.iteration_ns.add(&other.iteration_ns);
        let _ = self.timer_lag_ns.add(&other.timer_lag_ns);
        let _ = self.remote_wait_ns.add(&other.remote_wait_ns);
        let _ = self.stall_ns.add(&other.stall_ns);
    }
}

impl IoLoop {
    /// Numbers of nothing recorded (the sum of no cores).
    pub(crate) fn empty_stats() -> LoopStats {
        LoopStats {
            iterations: 0,
            callbacks: 0,
            task_polls: 0,
            timers: 0,
            events: 0,
            completions: 0,
            sleeps: 0,
            remote_jobs: 0,
            eventfd_wakes: 0,
            ring_wakes: 0,
            sqes: 0,
            stalls: 0,
            buffered: 0,
            budget_holds: 0,
            idle: Duration::ZERO,
            busy: Duration::ZERO,
            iteration_ns: new_histogram(),
            timer_lag_ns: new_histogram(),
            remote_wait_ns: new_histogram(),
            stall_ns: new_histogram(),
        }
    }

    /// A copy of what this loop has recorded since it was made.
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// let lp = IoLoop::new()?;
    /// lp.add_callback(|lp| lp.stop());
    /// lp.start()?;
    /// let s = lp.loop_stats();
    /// assert_eq!(s.callbacks, 1);
    /// assert!(s.iterations >= 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn loop_stats(&self) -> LoopStats {
        let s = &self.inner.stats;
        let c = &s.counters;
        let h = s.hist.borrow();
        LoopStats {
            iterations: c.iterations.get(),
            callbacks: c.callbacks.get(),
            task_polls: c.task_polls.get(),
            timers: c.timers.get(),
            events: c.events.get(),
            completions: c.completions.get(),
            sleeps: c.sleeps.get(),
            remote_jobs: c.remote_jobs.get(),
            eventfd_wakes: c.eventfd_wakes.get(),
            ring_wakes: c.ring_wakes.get(),
            sqes: self.inner.poller.try_borrow().map_or(0, |p| p.sqes()),
            stalls: c.stalls.get(),
            buffered: self.inner.budget.held() as u64,
            budget_holds: self.inner.budget.holds(),
            idle: Duration::from_nanos(c.idle_ns.get()),
            busy: Duration::from_nanos(c.busy_ns.get()),
            iteration_ns: h.iteration.to_hdr(),
            timer_lag_ns: h.lag.to_hdr(),
            remote_wait_ns: h.remote_wait.to_hdr(),
            stall_ns: h.stall.to_hdr(),
        }
    }

    /// Records histograms (the default) or not: the runtime switch that shows what
    /// recording costs. Counters count either way.
    pub fn set_recording(&self, on: bool) {
        self.inner.stats.recording.set(on);
    }

    /// Whether histograms are being recorded.
    pub fn recording(&self) -> bool {
        self.inner.stats.recording.get()
    }

    /// A job that keeps the loop busy longer than `after` is a stall: logged once (with
    /// how long, and what ran: the callback's or task's type, or the HTTP route),
    /// counted and recorded. Tornado's `set_blocking_log_threshold`; default 50 ms.
    ///
    /// Detection reads a clock after each job. For a threshold of at least ten ticks of
    /// the kernel's coarse clock (10-40 ms; the default is above) that is the coarse
    /// clock, a few ns a read, and a stall's length is known to a tick; a shorter one
    /// reads the precise clock (20-30 ns with a TSC clock source, most of what an empty
    /// task costs). `Duration::MAX` turns detection off, and with it those reads.
    ///
    /// ```
    /// use coreloop::IoLoop;
    /// use std::time::Duration;
    /// let lp = IoLoop::new()?;
    /// lp.set_stall_threshold(Duration::from_millis(5));
    /// lp.add_callback(|lp| { std::thread::sleep(Duration::from_millis(10)); lp.stop() });
    /// lp.start()?;
    /// assert_eq!(lp.loop_stats().stalls, 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_stall_threshold(&self, after: Duration) {
        self.inner.clock.set_stall_after(after);
    }

    /// Publishes when each job starts, for a watchdog thread (see
    /// `RuntimeBuilder::watchdog`): one relaxed store per job, on a cache line of its
    /// own.
    pub(crate) fn set_watched(&self, on: bool) {
        self.inner.clock.set_watched(on);
    }

    /// Names what the current job is running, for a stall report (the HTTP server names
    /// the route of each handler it calls). Cleared when the next job starts: a stall
    /// names the last activity set during the job.
    pub(crate) fn set_activity(&self, what: &'static str) {
        self.inner.stats.activity.set(Some(what));
    }
}
