//! The watchdog: a thread that notices a loop stuck in one job while it is still stuck
//! (the loop's own stall report comes only when the job ends, which a job in an endless
//! loop or a deadlock never does).
//!
//! Each watched loop publishes when its current job started (one relaxed store per job,
//! on a cache line of its own); the watchdog reads them every quarter of its threshold
//! and logs once per stuck job: which loop, for how long so far.

use crate::reactor::{LoopHandle, EPOCH};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub(crate) struct Watchdog {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Watchdog {
    /// Watches `loops` (their shard ids are their indexes): a job running longer than
    /// `after` is reported.
    pub(crate) fn start(
        name: &str,
        loops: Vec<LoopHandle>,
        after: Duration,
    ) -> std::io::Result<Watchdog> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let period = (after / 4).max(Duration::from_millis(1));
        let thread = std::thread::Builder::new()
            .name(format!("{name}-watchdog"))
            .spawn(move || {
                // The start of the job last reported, per loop (reported once each).
                let mut reported = vec![0u64; loops.len()];
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(period);
                    let now = Instant::now().saturating_duration_since(*EPOCH);
                    for (shard, h) in loops.iter().enumerate() {
                        let since = h.busy_since();
                        if since == 0 || since == reported[shard] || h.is_closed() {
                            continue;
                        }
                        let busy = now.saturating_sub(Duration::from_nanos(since));
                        if busy > after {
                            reported[shard] = since;
                            log::warn!(
                                "coreloop: watchdog: shard {shard} has been busy in one job for {busy:?} and is still in it"
                            );
                        }
                    }
                }
            })?;
        Ok(Watchdog { stop, thread })
    }

    pub(crate) fn close(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}
