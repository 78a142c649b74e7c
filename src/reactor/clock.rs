//! The loop's time keeping, in one type: the loop's time ([`IoLoop::time`]) and the
//! reads that refresh it, how each job is timed for stall detection, the split of each
//! iteration into busy and idle time, and the stamps a layer above takes (an HTTP
//! response's end), which serve as the end of the job that took them.
//!
//! Times are nanoseconds of the kernel's monotonic clock (`CLOCK_MONOTONIC`, which
//! `Instant` reads too), so that the loop's arithmetic is integer arithmetic; the
//! `Instant` of the loop's time is kept beside it for the public API and the timers.
//!
//! Reads, by kind:
//!
//! - **precise** (`CLOCK_MONOTONIC`): after each wait for I/O (the iteration's start),
//!   for a stamp, and to catch up before timers or a wait when jobs ran without one;
//! - **coarse** (`CLOCK_MONOTONIC_COARSE`, a few ns from the vDSO, to the kernel's tick
//!   of 1-4 ms): after each job, to find stalls, when the stall threshold is at least ten
//!   ticks (the default, 50 ms, is). A lower threshold, or a watchdog, times each job
//!   precisely; `Duration::MAX` turns timing off.
//!
//! The source of time is a parameter ([`Source`]), so the tests below move time by
//! hand, as the timer heap's tests do.
//!
//! [`IoLoop::time`]: super::IoLoop::time

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Where time comes from.
pub(crate) trait Source {
    /// The monotonic clock now, ns.
    fn precise(&self) -> u64;
    /// The coarse monotonic clock now, ns (the same origin, to a tick).
    fn coarse(&self) -> u64;
    /// How far apart the coarse clock's readings step.
    fn tick(&self) -> Duration;
}

/// The kernel's clocks (through libc, which reads them from the vDSO).
pub(crate) struct Kernel;

fn ns(t: rustix::time::Timespec) -> u64 {
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

impl Source for Kernel {
    fn precise(&self) -> u64 {
        ns(rustix::time::clock_gettime(
            rustix::time::ClockId::Monotonic,
        ))
    }
    fn coarse(&self) -> u64 {
        ns(rustix::time::clock_gettime(
            rustix::time::ClockId::MonotonicCoarse,
        ))
    }
    fn tick(&self) -> Duration {
        let r = rustix::time::clock_getres(rustix::time::ClockId::MonotonicCoarse);
        Duration::new(r.tv_sec as u64, r.tv_nsec as u32)
    }
}

/// How the loop times each job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobClock {
    /// A precise read after each job: a stall threshold under ten ticks of the coarse
    /// clock, or a watchdog (which reads the precise clock).
    Precise,
    /// A coarse read after each job: the precise clock is then read once per round and
    /// step, not per job.
    Coarse,
    /// Not timed: stall detection is off.
    Off,
}

/// The loop's clock.
pub(crate) struct Clock<S: Source = Kernel> {
    source: S,
    /// One instant and its reading in ns, to turn readings into instants.
    origin: (Instant, u64),
    /// The loop's time, ns, and as an instant (made when first asked for after a read).
    now_ns: Cell<u64>,
    now: Cell<Option<Instant>>,
    /// A stamp was taken during the current job: it is the job's end.
    stamped: Cell<bool>,
    /// Jobs ended without a precise read since the last one: the loop's time is behind.
    stale: Cell<bool>,
    /// When the current job started, by its job clock (ns).
    job_start: Cell<u64>,
    stall_after: Cell<Duration>,
    /// A watchdog reads when each job started: jobs are timed precisely.
    watched: Cell<bool>,
    /// The shortest stall threshold timed with the coarse clock (ten of its ticks).
    coarse_enough: Duration,
    /// How jobs are timed now (follows from `stall_after` and `watched`).
    mode: Cell<JobClock>,
    /// When the current wait for I/O began (an idle wait), ns.
    idle_from: Cell<Option<u64>>,
    /// Idle time of the iteration so far, ns.
    idle: Cell<u64>,
}

impl Default for Clock<Kernel> {
    fn default() -> Self {
        Clock::new(Kernel, super::stats::DEFAULT_STALL)
    }
}

impl<S: Source> Clock<S> {
    pub(crate) fn new(source: S, stall_after: Duration) -> Clock<S> {
        // (The instant first: a reading taken after it never puts an instant made from
        // it earlier than the instant the kernel had; timers made from instants then
        // never fire early.)
        let instant = Instant::now();
        let reading = source.precise();
        let coarse_enough = source.tick().saturating_mul(10);
        let job_start = source.coarse();
        let clock = Clock {
            origin: (instant, reading),
            now_ns: Cell::new(reading),
            now: Cell::new(Some(instant)),
            stamped: Cell::new(false),
            stale: Cell::new(false),
            job_start: Cell::new(job_start),
            stall_after: Cell::new(stall_after),
            watched: Cell::new(false),
            coarse_enough,
            mode: Cell::new(JobClock::Precise),
            idle_from: Cell::new(None),
            idle: Cell::new(0),
            source,
        };
        clock.mode.set(clock.mode_of());
        clock
    }

    /// The loop's time.
    pub(crate) fn now(&self) -> Instant {
        match self.now.get() {
            Some(t) => t,
            None => {
                let t = self.instant(self.now_ns.get());
                self.now.set(Some(t));
                t
            }
        }
    }

    /// The loop's time, ns.
    pub(crate) fn now_ns(&self) -> u64 {
        self.now_ns.get()
    }

    /// The instant of reading `ns`.
    pub(crate) fn instant(&self, ns: u64) -> Instant {
        let (instant, reading) = self.origin;
        match ns.checked_sub(reading) {
            Some(after) => instant + Duration::from_nanos(after),
            None => instant - Duration::from_nanos(reading - ns),
        }
    }

    /// The reading of `t` on this clock (never before the kernel's: see `new`).
    pub(crate) fn ns_of(&self, t: Instant) -> u64 {
        let (instant, reading) = self.origin;
        match t.checked_duration_since(instant) {
            Some(after) => reading.saturating_add(after.as_nanos().min(u64::MAX.into()) as u64),
            None => reading.saturating_sub(instant.duration_since(t).as_nanos() as u64),
        }
    }

    /// The precise clock now, leaving the loop's time as it is.
    pub(crate) fn precise_ns(&self) -> u64 {
        self.source.precise()
    }

    /// Reads the precise clock: the loop's time is now.
    pub(crate) fn read(&self) -> u64 {
        let t = self.source.precise().max(self.now_ns.get());
        self.now_ns.set(t);
        self.now.set(None);
        self.stale.set(false);
        t
    }

    /// Reads the precise clock for a time that must be exact (an HTTP response's end);
    /// the job running ends at this time too, which saves it a read.
    pub(crate) fn stamp(&self) -> u64 {
        self.stamped.set(true);
        self.read()
    }

    /// How each job is timed.
    #[inline]
    pub(crate) fn job_clock(&self) -> JobClock {
        self.mode.get()
    }

    /// How each job is to be timed, from the threshold and the watchdog.
    fn mode_of(&self) -> JobClock {
        let after = self.stall_after.get();
        if self.watched.get() {
            JobClock::Precise
        } else if after == Duration::MAX {
            JobClock::Off
        } else if after >= self.coarse_enough {
            JobClock::Coarse
        } else {
            JobClock::Precise
        }
    }

    pub(crate) fn stall_after(&self) -> Duration {
        self.stall_after.get()
    }

    /// A job taking longer than `after` is a stall; the job running now is timed from
    /// here on its new clock.
    pub(crate) fn set_stall_after(&self, after: Duration) {
        self.stall_after.set(after);
        self.mode.set(self.mode_of());
        self.restart_job();
    }

    /// Whether a watchdog reads when each job starts (then jobs are timed precisely).
    pub(crate) fn set_watched(&self, on: bool) {
        self.watched.set(on);
        self.mode.set(self.mode_of());
        self.restart_job();
    }

    pub(crate) fn watched(&self) -> bool {
        self.watched.get()
    }

    /// The next job starts now, by its job clock.
    fn restart_job(&self) {
        let start = match self.job_clock() {
            JobClock::Coarse => self.source.coarse(),
            // (The loop's time may be behind, left by jobs timed otherwise: not a
            // start for this one.)
            JobClock::Precise => self.read(),
            JobClock::Off => 0,
        };
        self.job_start.set(start);
    }

    /// A job ended now: how long it took (zero when jobs are not timed). The next job
    /// starts now.
    pub(crate) fn job_ended(&self) -> Duration {
        let stamped = self.stamped.replace(false);
        match self.job_clock() {
            JobClock::Precise => {
                let end = if stamped {
                    self.now_ns.get()
                } else {
                    self.read()
                };
                let start = self.job_start.replace(end);
                Duration::from_nanos(end.saturating_sub(start))
            }
            JobClock::Coarse => {
                self.stale.set(!stamped);
                // A stamp is a precise end, and no worse for the coarse clock's tick
                // (both clocks count from the same origin; the coarse one lags by less
                // than a tick): one read fewer.
                let end = if stamped {
                    self.now_ns.get()
                } else {
                    self.source.coarse()
                };
                let start = self.job_start.replace(end);
                Duration::from_nanos(end.saturating_sub(start))
            }
            JobClock::Off => {
                self.stale.set(!stamped);
                Duration::ZERO
            }
        }
    }

    /// A stamp taken outside any job (just before the wait): it is the loop's time,
    /// nothing else.
    pub(crate) fn forget_stamp(&self) {
        self.stamped.set(false);
    }

    /// Jobs ended without a precise read: one read for them all, so that timers and the
    /// wait for I/O count from now. Returns whether it read.
    pub(crate) fn catch_up(&self) -> bool {
        if self.stale.get() {
            self.read();
            return true;
        }
        false
    }

    /// Whether jobs ended without a precise read since the last one.
    pub(crate) fn stale(&self) -> bool {
        self.stale.get()
    }

    /// The loop is about to wait for I/O; `idle`: with nothing to do (the time until
    /// it runs again is idle, not busy).
    pub(crate) fn wait_begins(&self, idle: bool) {
        self.idle_from.set(idle.then(|| self.now_ns.get()));
    }

    /// The wait is over (or, for an idle poll, the spinning): reads the clock. The next
    /// job starts now.
    pub(crate) fn wait_ended(&self) -> u64 {
        let now = self.read();
        self.stamped.set(false);
        if let Some(from) = self.idle_from.take() {
            self.idle.set(self.idle.get() + now.saturating_sub(from));
        }
        // The next job starts now, by the read just made, whatever clock times jobs
        // (the coarse clock's readings lag the precise one's by less than a tick, the
        // precision of coarse timing anyway).
        self.job_start.set(now);
        now
    }

    /// The iteration that began at `start` (the loop's time then) ended: its busy and
    /// idle time, ns.
    pub(crate) fn iteration_ended(&self, start: u64) -> (u64, u64) {
        self.catch_up();
        let total = self.now_ns.get().saturating_sub(start);
        let idle = self.idle.replace(0);
        (total.saturating_sub(idle), idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    /// Time moved by hand.
    #[derive(Clone, Default)]
    struct Hand {
        precise: Rc<Cell<u64>>,
        coarse: Rc<Cell<u64>>,
        reads: Rc<Cell<u32>>,
    }

    impl Hand {
        /// Both clocks move on by `ns`; the coarse one only to its tick (1 ms).
        fn advance(&self, ns: u64) {
            self.precise.set(self.precise.get() + ns);
            self.coarse.set(self.precise.get() / 1_000_000 * 1_000_000);
        }
    }

    impl Source for Hand {
        fn precise(&self) -> u64 {
            self.reads.set(self.reads.get() + 1);
            self.precise.get()
        }
        fn coarse(&self) -> u64 {
            self.coarse.get()
        }
        fn tick(&self) -> Duration {
            Duration::from_millis(1)
        }
    }

    const MS: u64 = 1_000_000;

    fn clock(stall_after: Duration) -> (Clock<Hand>, Hand) {
        let hand = Hand::default();
        hand.advance(1000 * MS);
        (Clock::new(hand.clone(), stall_after), hand)
    }

    #[test]
    fn jobs_are_timed_by_the_coarse_clock_when_the_threshold_allows() {
        let (c, hand) = clock(Duration::from_millis(50));
        assert_eq!(c.job_clock(), JobClock::Coarse);
        c.wait_ended();
        let reads = hand.reads.get();
        hand.advance(60 * MS);
        assert_eq!(c.job_ended(), Duration::from_millis(60));
        hand.advance(MS / 2);
        assert!(c.job_ended() < Duration::from_millis(1));
        // No precise read per job: the loop's time is behind, and caught up once.
        assert_eq!(hand.reads.get(), reads);
        assert!(c.stale());
        assert!(c.catch_up());
        assert_eq!(c.now_ns(), 1060 * MS + MS / 2);
        assert!(!c.catch_up(), "once is enough");
    }

    #[test]
    fn precise_and_coarse_readings_time_a_job_to_a_tick() {
        // A job that starts at a precise reading (after a wait) and ends at a coarse
        // one (or the other way round) is timed to within the coarse clock's tick.
        let (c, hand) = clock(Duration::from_millis(50));
        hand.advance(MS * 7 / 10);
        c.wait_ended(); // starts at 1000.7 ms
        hand.advance(55 * MS);
        let took = c.job_ended(); // ends at 1055 ms by the coarse clock
        assert!(took > Duration::from_millis(54) && took <= Duration::from_millis(55));
        hand.advance(2 * MS + MS / 2);
        c.stamp(); // a precise end: 1058.2 ms
        let took = c.job_ended();
        assert!(took >= Duration::from_millis(2) && took <= Duration::from_millis(4));
    }

    #[test]
    fn a_low_threshold_or_a_watchdog_times_jobs_precisely() {
        let (c, hand) = clock(Duration::from_millis(5));
        assert_eq!(c.job_clock(), JobClock::Precise);
        c.wait_ended();
        hand.advance(3 * MS + 1);
        assert_eq!(c.job_ended(), Duration::from_nanos(3 * MS + 1));
        assert_eq!(
            c.now_ns(),
            1003 * MS + 1,
            "the job's end is the loop's time"
        );
        assert!(!c.stale());
        let (c, _) = clock(Duration::from_millis(50));
        c.set_watched(true);
        assert_eq!(c.job_clock(), JobClock::Precise);
        c.set_stall_after(Duration::MAX);
        assert_eq!(c.job_clock(), JobClock::Precise, "a watchdog still reads");
        c.set_watched(false);
        assert_eq!(c.job_clock(), JobClock::Off);
    }

    #[test]
    fn a_new_job_clock_times_the_running_job_from_when_it_changed() {
        let (c, hand) = clock(Duration::MAX);
        c.wait_ended();
        hand.advance(60 * MS);
        c.job_ended(); // not timed
        c.set_stall_after(Duration::from_millis(5));
        hand.advance(MS);
        assert_eq!(c.job_ended(), Duration::from_millis(1), "not 61 ms");
        hand.advance(60 * MS);
        c.set_stall_after(Duration::from_millis(50));
        hand.advance(2 * MS);
        assert_eq!(c.job_ended(), Duration::from_millis(2), "not 62 ms");
    }

    #[test]
    fn a_stamp_is_the_end_of_its_job() {
        for threshold in [Duration::from_millis(5), Duration::from_millis(50)] {
            let (c, hand) = clock(threshold);
            c.wait_ended();
            hand.advance(2 * MS);
            let at = c.stamp();
            let reads = hand.reads.get();
            hand.advance(MS);
            c.job_ended();
            // The stamp served: no read for the job, and the loop's time is the stamp.
            assert_eq!(hand.reads.get(), reads);
            assert_eq!(c.now_ns(), at);
            assert!(!c.stale());
            // It serves that job only: the next one is timed as usual.
            hand.advance(MS);
            c.job_ended();
            assert_eq!(c.stale(), threshold == Duration::from_millis(50));
        }
    }

    #[test]
    fn a_stamp_before_a_wait_never_serves_a_job_after_it() {
        let (c, hand) = clock(Duration::from_millis(5));
        c.wait_ended();
        c.stamp();
        c.forget_stamp();
        c.wait_begins(true);
        hand.advance(100 * MS); // asleep
        c.wait_ended();
        hand.advance(MS);
        assert_eq!(c.job_ended(), Duration::from_millis(1), "not 101 ms");
    }

    #[test]
    fn iterations_split_into_busy_and_idle() {
        let (c, hand) = clock(Duration::from_millis(50));
        let start = c.wait_ended();
        hand.advance(2 * MS); // jobs
        c.job_ended();
        c.catch_up();
        c.wait_begins(true);
        hand.advance(10 * MS); // asleep
        c.wait_ended();
        hand.advance(MS); // events
        c.job_ended();
        assert_eq!(c.iteration_ended(start), (3 * MS, 10 * MS));
        // A wait that was not idle (jobs were pending) is busy.
        let start = c.now_ns();
        c.wait_begins(false);
        hand.advance(MS);
        c.wait_ended();
        assert_eq!(c.iteration_ended(start), (MS, 0));
    }

    #[test]
    fn the_loops_time_never_goes_back_and_matches_instants() {
        let (c, hand) = clock(Duration::from_millis(50));
        let t0 = c.now();
        hand.advance(5 * MS);
        c.read();
        assert_eq!(c.now() - t0, Duration::from_millis(5));
        hand.precise.set(hand.precise.get() - MS); // a clock that stepped back
        c.read();
        assert_eq!(c.now() - t0, Duration::from_millis(5));
        assert_eq!(c.instant(c.now_ns()), c.now());
        assert_eq!(
            c.instant(c.now_ns() - 7 * MS),
            c.now() - Duration::from_millis(7)
        );
    }
}
