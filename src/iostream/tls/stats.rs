//! What a loop's TLS streams recorded: handshakes (full and resumed), failures by
//! cause, and how long handshakes took. Written by the loop's own thread only.

use super::TlsError;
use crate::metrics::{labels, Exposition};
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

/// The TLS series, summed or by shard.
pub(crate) fn export(e: &mut Exposition, series: &[(String, TlsStats)]) {
    let with_shard = |shard: &str, more: &[(&'static str, &'static str)]| {
        let mut p: Vec<(&str, String)> = more.iter().map(|(k, v)| (*k, v.to_string())).collect();
        if !shard.is_empty() {
            p.push(("shard", shard.to_string()));
        }
        p
    };
    let as_labels = |p: &[(&str, String)]| {
        let pairs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
        labels(&pairs)
    };
    let name = "coreloop_tls_handshakes_total";
    e.family(
        name,
        "counter",
        "TLS handshakes completed, by kind (full, resumed).",
    );
    for (shard, s) in series {
        for (kind, n) in [("full", s.full), ("resumed", s.resumed)] {
            e.sample(
                name,
                &as_labels(&with_shard(shard, &[("kind", kind)])),
                n as f64,
            );
        }
    }
    let name = "coreloop_tls_failures_total";
    e.family(
        name,
        "counter",
        "TLS streams that failed, by cause (timeout, bad_message, alert, certificate, \
         incompatible, eof, other).",
    );
    for (shard, s) in series {
        for cause in TlsError::ALL {
            let p = with_shard(shard, &[("cause", cause.as_str())]);
            e.sample(name, &as_labels(&p), s.failures_of(cause) as f64);
        }
    }
    let name = "coreloop_tls_handshake_seconds";
    e.family(
        name,
        "histogram",
        "From a stream becoming TLS to its handshake's end (round trips included).",
    );
    for (shard, s) in series {
        let p = with_shard(shard, &[]);
        let pairs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
        e.histogram(name, &pairs, &s.duration_ns);
    }
}
