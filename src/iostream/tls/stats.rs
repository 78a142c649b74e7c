//! What a loop's TLS streams recorded: handshakes (full and resumed), failures by
//! cause, and how long handshakes took. Written by the loop's own thread only.

use super::TlsError;
use crate::reactor::{nanos, new_histogram, IoLoop};
use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::time::Duration;

/// One loop's TLS numbers (a copy, in [`CoreStats`](crate::metrics::CoreStats)).
///
/// ```
/// let t = coreloop::tls::TlsStats::default();
/// assert_eq!(t.handshakes(), 0);
/// ```
#[derive(Clone, Debug)]
pub struct TlsStats {
    /// Full handshakes completed.
    pub full: u64,
    /// Resumed handshakes completed (a session ticket or id).
    pub resumed: u64,
    /// Failures, by cause, in the order of [`TlsError::ALL`].
    pub failures: [u64; 7],
    /// Handshake durations, nanoseconds: from the stream becoming TLS (the accept, or
    /// the client's start) to the handshake's end, the peer's round trips and any wait
    /// for the loop's handshake queue included.
    pub duration_ns: Histogram<u64>,
}

impl Default for TlsStats {
    fn default() -> Self {
        TlsStats {
            full: 0,
            resumed: 0,
            failures: [0; 7],
            duration_ns: new_histogram(),
        }
    }
}

impl TlsStats {
    /// Handshakes completed, full and resumed.
    pub fn handshakes(&self) -> u64 {
        self.full + self.resumed
    }

    /// Failures with `cause`.
    pub fn failures_of(&self, cause: TlsError) -> u64 {
        self.failures[cause.index()]
    }

    /// Adds another loop's numbers.
    pub fn merge(&mut self, other: &TlsStats) {
        self.full += other.full;
        self.resumed += other.resumed;
        for (a, b) in self.failures.iter_mut().zip(other.failures) {
            *a += b;
        }
        let _ = self.duration_ns.add(&other.duration_ns);
    }
}

#[derive(Default)]
struct Recorded(RefCell<TlsStats>);

pub(super) fn record_handshake(lp: &IoLoop, resumed: bool, took: Duration) {
    let r = lp.local::<Recorded>();
    let mut s = r.0.borrow_mut();
    if resumed {
        s.resumed += 1;
    } else {
        s.full += 1;
    }
    s.duration_ns.saturating_record(nanos(took));
}

pub(super) fn record_failure(lp: &IoLoop, cause: TlsError) {
    lp.local::<Recorded>().0.borrow_mut().failures[cause.index()] += 1;
}

/// A copy of this loop's TLS numbers.
pub(crate) fn stats_of(lp: &IoLoop) -> TlsStats {
    lp.local::<Recorded>().0.borrow().clone()
}
