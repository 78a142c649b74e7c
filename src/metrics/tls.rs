//! TLS numbers in Prometheus's text format (the `coreloop_tls_*` series of the README's
//! table): the metrics layer reads `TlsStats`; the stream layer knows nothing of the
//! format.

use super::prometheus::{borrowed, labels, Exposition};
use crate::iostream::{TlsError, TlsStats};

/// The TLS series, summed or by shard.
pub(super) fn export(e: &mut Exposition, series: &[(String, TlsStats)]) {
    let with_shard = |shard: &str, more: &[(&'static str, &'static str)]| {
        let mut p: Vec<(&str, String)> = more.iter().map(|(k, v)| (*k, v.to_string())).collect();
        if !shard.is_empty() {
            p.push(("shard", shard.to_string()));
        }
        p
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
                &labels(&borrowed(&with_shard(shard, &[("kind", kind)]))),
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
            e.sample(name, &labels(&borrowed(&p)), s.failures_of(cause) as f64);
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
        e.histogram(name, &borrowed(&p), &s.duration_ns);
    }
}
