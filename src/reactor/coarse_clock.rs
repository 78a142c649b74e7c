//! The kernel's coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`): the time of the last
//! timer tick, read from the vDSO in a few nanoseconds, where `Instant::now()` (which
//! reads the TSC and scales it) costs 20-30. Its resolution is the tick's (1-4 ms), fine
//! for telling a job of 50 ms from one of 5 us, which is what stall detection needs
//! once per job.

use std::time::Duration;

/// The coarse clock now, in nanoseconds (its origin is the kernel's, as
/// `CLOCK_MONOTONIC`'s).
pub(crate) fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

/// How far apart its readings step (the kernel's tick).
pub(crate) fn resolution() -> Duration {
    let r = rustix::time::clock_getres(rustix::time::ClockId::MonotonicCoarse);
    Duration::new(r.tv_sec as u64, r.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_moves_forward_within_its_resolution() {
        let res = resolution();
        assert!(
            res > Duration::ZERO && res <= Duration::from_millis(10),
            "{res:?}"
        );
        let a = now_ns();
        std::thread::sleep(Duration::from_millis(30));
        let b = now_ns();
        let took = Duration::from_nanos(b - a);
        assert!(took >= Duration::from_millis(30) - res, "{took:?}");
        assert!(took <= Duration::from_millis(30) + res + Duration::from_millis(500));
    }
}
