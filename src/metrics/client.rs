//! The HTTP client's numbers in Prometheus's text format (the `coreloop_http_client_*`
//! series of the README's table): the metrics layer reads `http::ClientStats`; the
//! client knows nothing of the format.

use super::prometheus::{borrowed, labels, Exposition};
use super::CoreStats;
use crate::http::{client_by_upstream as by_upstream, ClientStats};

type Field = fn(&ClientStats) -> f64;

/// The client's series: per upstream, summed over the cores unless `per_core`.
pub(super) fn export(e: &mut Exposition, cores: &[CoreStats], per_core: bool) {
    let mut series: Vec<(String, ClientStats)> = Vec::new();
    if per_core {
        for c in cores {
            for s in by_upstream(c.client.iter()) {
                series.push((c.shard.to_string(), s));
            }
        }
    } else {
        for s in by_upstream(cores.iter().flat_map(|c| c.client.iter())) {
            series.push((String::new(), s));
        }
    }
    if series.is_empty() {
        return;
    }
    let base = |up: &str, shard: &str| -> Vec<(&'static str, String)> {
        let mut v = vec![("upstream", up.to_string())];
        if !shard.is_empty() {
            v.push(("shard", shard.to_string()));
        }
        v
    };
    let simple: [(&str, &str, &str, Field); 7] = [
        (
            "coreloop_http_client_requests_total",
            "counter",
            "Fetches started.",
            |s| s.requests as f64,
        ),
        (
            "coreloop_http_client_retries_total",
            "counter",
            "Requests sent again after their reused connection closed before any answer.",
            |s| s.retries as f64,
        ),
        (
            "coreloop_http_client_connections_opened_total",
            "counter",
            "Connections opened.",
            |s| s.opened as f64,
        ),
        (
            "coreloop_http_client_reused_total",
            "counter",
            "Requests sent on a reused connection.",
            |s| s.reused as f64,
        ),
        (
            "coreloop_http_client_open_connections",
            "gauge",
            "Connections open.",
            |s| s.open as f64,
        ),
        (
            "coreloop_http_client_idle_connections",
            "gauge",
            "Connections idle in the pool.",
            |s| s.idle as f64,
        ),
        (
            "coreloop_http_client_queued_requests",
            "gauge",
            "Requests waiting for a connection.",
            |s| s.queued as f64,
        ),
    ];
    for (name, kind, help, get) in simple {
        e.family(name, kind, help);
        for (shard, s) in &series {
            e.sample(name, &labels(&borrowed(&base(&s.upstream, shard))), get(s));
        }
    }
    let name = "coreloop_http_client_responses_total";
    e.family(name, "counter", "Responses by status class.");
    for (shard, s) in &series {
        for (i, n) in s.responses.iter().enumerate() {
            let mut p = base(&s.upstream, shard);
            p.push(("class", format!("{}xx", i + 1)));
            e.sample(name, &labels(&borrowed(&p)), *n as f64);
        }
    }
    let name = "coreloop_http_client_errors_total";
    e.family(name, "counter", "Fetches that failed, by kind.");
    for (shard, s) in &series {
        for (kind, n) in &s.errors {
            let mut p = base(&s.upstream, shard);
            p.push(("kind", kind.clone()));
            e.sample(name, &labels(&borrowed(&p)), *n as f64);
        }
    }
    let name = "coreloop_http_client_response_seconds";
    e.family(
        name,
        "histogram",
        "From the start of a fetch (its wait for a connection included) to its response head.",
    );
    for (shard, s) in &series {
        let p = base(&s.upstream, shard);
        e.histogram(name, &borrowed(&p), &s.latency);
    }
}
