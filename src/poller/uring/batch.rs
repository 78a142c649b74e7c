//! When a loop gathers completions before it runs (`IoLoop::set_batch_wait`).
//!
//! A batch wait saves CPU only where the loop is near saturation: there it would wake for
//! a few completions at a time, paying a sleep and a wake-up for each handful, and the
//! requests it serves already wait in queues far longer than the batch. On a loop with
//! time to spare it saves less and delays every answer by up to the whole wait (measured
//! on the hello server at 20,000 requests/s over 64 connections: median latency 34 us
//! without, 111 us with a 100 us wait). So the wait is used only while the loop is busy:
//! its thread's CPU time over the last window of wall time is above [`BUSY_ABOVE`], and
//! it stops below [`IDLE_BELOW`] (the gap keeps it from flapping, since batching itself
//! lowers the CPU the loop needs). CPU time, not time outside the wait, because on
//! io_uring most of the work (sends, the recvs of task work) runs inside the wait call.

use std::time::{Duration, Instant};

/// How often the loop's thread CPU time is sampled.
const WINDOW: Duration = Duration::from_millis(20);
/// Busy from this share of one core over a window...
const BUSY_ABOVE: f64 = 0.75;
/// ...until below this one.
const IDLE_BELOW: f64 = 0.6;

/// The batch wait of one loop and whether it applies now.
#[derive(Debug, Default)]
pub(crate) struct BatchWait {
    /// The wait asked for, microseconds (0: off).
    wait_us: u32,
    busy: bool,
    /// Start of the current window: wall time and the thread's CPU time.
    window: Option<(Instant, Duration)>,
}

impl BatchWait {
    /// Sets the wait (zero turns batching off).
    pub(crate) fn set(&mut self, wait: Duration) {
        self.wait_us = u32::try_from(wait.as_micros()).unwrap_or(u32::MAX);
        self.busy = false;
        self.window = None;
    }

    /// The batch wait for the next wait, microseconds: 0 unless one is set and the loop
    /// is busy. Samples the thread's CPU time when a window has passed.
    pub(crate) fn next_wait_us(&mut self) -> u32 {
        if self.wait_us == 0 {
            return 0;
        }
        let now = Instant::now();
        match self.window {
            Some((start, _)) if now.duration_since(start) < WINDOW => {}
            Some((start, cpu0)) => {
                let cpu = thread_cpu_time();
                self.judge(cpu.saturating_sub(cpu0), now.duration_since(start));
                self.window = Some((now, cpu));
            }
            None => self.window = Some((now, thread_cpu_time())),
        }
        if self.busy {
            self.wait_us
        } else {
            0
        }
    }

    /// Marks the loop busy until the next sample (for tests of the busy path).
    #[cfg(test)]
    pub(crate) fn force_busy(&mut self) {
        self.busy = true;
        self.window = Some((Instant::now() + Duration::from_secs(3600), Duration::ZERO));
    }

    /// Updates `busy` from the CPU time the thread used over `wall`.
    fn judge(&mut self, cpu: Duration, wall: Duration) {
        let share = cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9);
        self.busy = if self.busy {
            share >= IDLE_BELOW
        } else {
            share > BUSY_ABOVE
        };
    }
}

/// CPU time (user and system) the calling thread has used.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the struct we pass.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn busy_above_three_quarters_until_below_six_tenths() {
        let mut b = BatchWait::default();
        b.set(Duration::from_micros(100));
        b.judge(ms(14), ms(20)); // 70%: not yet
        assert!(!b.busy);
        b.judge(ms(17), ms(20)); // 85%
        assert!(b.busy);
        b.judge(ms(13), ms(20)); // 65%: batching lowered it, still busy
        assert!(b.busy);
        b.judge(ms(11), ms(20)); // 55%
        assert!(!b.busy);
        b.judge(ms(13), ms(20)); // 65%: not busy again until above 75%
        assert!(!b.busy);
    }

    #[test]
    fn off_or_idle_means_no_batch_wait() {
        let mut b = BatchWait::default();
        assert_eq!(b.next_wait_us(), 0, "not set");
        b.set(Duration::from_micros(100));
        assert_eq!(b.next_wait_us(), 0, "an idle thread is not busy");
        b.force_busy(); // no new sample before the next call, however slow this test
        assert_eq!(b.next_wait_us(), 100, "busy");
        b.set(Duration::ZERO);
        assert_eq!(b.next_wait_us(), 0, "turned off");
    }

    /// The thread's CPU clock advances while it works (and only its own work counts:
    /// the bound is on CPU time, not on how long the machine lets it run).
    #[test]
    fn the_thread_cpu_clock_counts_this_threads_work() {
        let cpu0 = thread_cpu_time();
        let start = Instant::now();
        while thread_cpu_time() - cpu0 < ms(20) {
            assert!(start.elapsed() < Duration::from_secs(30), "CPU clock stuck");
        }
        let other = std::thread::spawn(thread_cpu_time).join().unwrap();
        assert!(other < ms(20), "a new thread starts near zero: {other:?}");
    }
}
