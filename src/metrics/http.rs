//! HTTP servers' numbers in Prometheus's text format (the series of the README's
//! table): the metrics layer reads `http::HttpStats`; the HTTP layer knows nothing of
//! the format.

use super::prometheus::{borrowed, labels, Exposition};
use super::CoreStats;
use crate::http::{HttpStats, REFUSALS};

/// What a metric family takes from one server's numbers.
type Field = fn(&HttpStats) -> f64;

/// Writes every HTTP server's numbers in Prometheus's format.
pub(super) fn export(e: &mut Exposition, cores: &[CoreStats], per_core: bool) {
    // The series: (server, shard or "", stats).
    let mut series: Vec<(String, String, HttpStats)> = Vec::new();
    for c in cores {
        for h in &c.http {
            let shard = if per_core {
                c.shard.to_string()
            } else {
                String::new()
            };
            match series
                .iter_mut()
                .find(|(s, sh, _)| *s == h.server && *sh == shard)
            {
                Some((_, _, t)) => t.merge(h),
                None => series.push((h.server.clone(), shard, h.clone())),
            }
        }
    }
    let base = |server: &str, shard: &str| -> Vec<(&'static str, String)> {
        let mut v = vec![("server", server.to_string())];
        if !shard.is_empty() {
            v.push(("shard", shard.to_string()));
        }
        v
    };
    let simple: [(&str, &str, &str, Field); 5] = [
        (
            "coreloop_http_requests_total",
            "counter",
            "Requests read and routed.",
            |h| h.requests as f64,
        ),
        (
            "coreloop_http_received_bytes_total",
            "counter",
            "Bytes of request heads and bodies read.",
            |h| h.bytes_in as f64,
        ),
        (
            "coreloop_http_sent_bytes_total",
            "counter",
            "Bytes of responses written.",
            |h| h.bytes_out as f64,
        ),
        (
            "coreloop_http_open_connections",
            "gauge",
            "Connections open.",
            |h| h.open as f64,
        ),
        (
            "coreloop_http_idle_connections",
            "gauge",
            "Open connections waiting for a request.",
            |h| h.idle as f64,
        ),
    ];
    for (name, kind, help, get) in simple {
        e.family(name, kind, help);
        for (server, shard, h) in &series {
            e.sample(name, &labels(&borrowed(&base(server, shard))), get(h));
        }
    }
    e.family(
        "coreloop_http_responses_total",
        "counter",
        "Responses by status class.",
    );
    for (server, shard, h) in &series {
        for (i, n) in h.responses.iter().enumerate() {
            let mut p = base(server, shard);
            p.push(("class", format!("{}xx", i + 1)));
            e.sample(
                "coreloop_http_responses_total",
                &labels(&borrowed(&p)),
                *n as f64,
            );
        }
    }
    e.family(
        "coreloop_http_refusals_total",
        "counter",
        "Requests refused before a handler ran, by status.",
    );
    for (server, shard, h) in &series {
        for code in REFUSALS {
            let n = h
                .refusals
                .iter()
                .find(|(c, _)| *c == code)
                .map_or(0, |x| x.1);
            let mut p = base(server, shard);
            p.push(("status", code.to_string()));
            e.sample(
                "coreloop_http_refusals_total",
                &labels(&borrowed(&p)),
                n as f64,
            );
        }
    }
    // Accepted connections: always per core (how SO_REUSEPORT spread them).
    e.family(
        "coreloop_http_accepted_connections_total",
        "counter",
        "Connections accepted, by core.",
    );
    for c in cores {
        for h in &c.http {
            let p = [("server", h.server.clone()), ("shard", c.shard.to_string())];
            e.sample(
                "coreloop_http_accepted_connections_total",
                &labels(&borrowed(&p)),
                h.accepted as f64,
            );
        }
    }
    let name = "coreloop_http_request_duration_seconds";
    e.family(
        name,
        "histogram",
        "From the first byte of a request head to its response handed to the kernel.",
    );
    for (server, shard, h) in &series {
        for r in &h.latency {
            let mut p = base(server, shard);
            p.push(("route", r.route.clone()));
            p.push(("class", format!("{}xx", r.class)));
            e.histogram(name, &borrowed(&p), &r.ns);
        }
    }
}
