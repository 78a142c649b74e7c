//! What the HTTP client records per upstream (host address) on each core, gathered
//! with the rest of a core's numbers ([`Snapshot`](crate::metrics::Snapshot)) and
//! exported with them.

use super::pool::Pool;
use crate::metrics::{labels, CoreStats, Exposition};
use crate::reactor::new_histogram;
use hdrhistogram::Histogram;

/// One upstream's numbers on one core (or summed), as the client recorded them.
#[derive(Clone, Debug)]
pub struct ClientStats {
    /// The upstream's address (`127.0.0.1:8080`; its pools for plain HTTP and for each
    /// TLS server name add up under it).
    pub upstream: String,
    /// Fetches started (each redirect followed counts once more; a retry is counted in
    /// `retries`).
    pub requests: u64,
    /// Responses by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub responses: [u64; 5],
    /// Fetches that failed, by [`ClientError::kind`](super::ClientError::kind).
    pub errors: Vec<(String, u64)>,
    /// Requests sent again after their reused connection closed before any answer.
    pub retries: u64,
    /// Connections opened.
    pub opened: u64,
    /// Requests sent on a reused connection.
    pub reused: u64,
    /// Connections open now.
    pub open: u64,
    /// Of which idle in the pool.
    pub idle: u64,
    /// Requests waiting for a connection now.
    pub queued: u64,
    /// From the start of a fetch (its wait for a connection included) to its response
    /// head, ns.
    pub latency: Histogram<u64>,
}

impl ClientStats {
    pub(super) fn of(p: &Pool) -> ClientStats {
        let s = &p.stats;
        let (open, idle) = p.counts();
        ClientStats {
            upstream: p.addr.to_string(),
            requests: s.requests.get(),
            responses: std::array::from_fn(|i| s.responses[i].get()),
            errors: s
                .errors
                .borrow()
                .iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect(),
            retries: s.retries.get(),
            opened: s.opened.get(),
            reused: s.reused.get(),
            open: open as u64,
            idle: idle as u64,
            queued: p.queued() as u64,
            latency: s.latency.borrow().clone(),
        }
    }

    /// Adds `o`'s numbers (of the same upstream: another core's, or another client's).
    pub fn merge(&mut self, o: &ClientStats) {
        self.requests += o.requests;
        for (a, b) in self.responses.iter_mut().zip(o.responses) {
            *a += b;
        }
        for (k, n) in &o.errors {
            match self.errors.iter_mut().find(|(x, _)| x == k) {
                Some((_, m)) => *m += n,
                None => self.errors.push((k.clone(), *n)),
            }
        }
        self.retries += o.retries;
        self.opened += o.opened;
        self.reused += o.reused;
        self.open += o.open;
        self.idle += o.idle;
        self.queued += o.queued;
        let _ = self.latency.add(&o.latency);
    }

    /// The count of errors of `kind` (0 if none).
    pub fn errors_of(&self, kind: &str) -> u64 {
        self.errors
            .iter()
            .find(|(k, _)| k == kind)
            .map_or(0, |(_, n)| *n)
    }

    fn empty(upstream: &str) -> ClientStats {
        ClientStats {
            upstream: upstream.to_string(),
            requests: 0,
            responses: [0; 5],
            errors: Vec::new(),
            retries: 0,
            opened: 0,
            reused: 0,
            open: 0,
            idle: 0,
            queued: 0,
            latency: new_histogram(),
        }
    }
}

/// Every upstream's numbers in `stats` (one core's list, in which an upstream may
/// appear once per client), one entry each.
pub(crate) fn by_upstream<'a>(stats: impl Iterator<Item = &'a ClientStats>) -> Vec<ClientStats> {
    let mut out: Vec<ClientStats> = Vec::new();
    for s in stats {
        match out.iter_mut().find(|o| o.upstream == s.upstream) {
            Some(o) => o.merge(s),
            None => {
                let mut o = ClientStats::empty(&s.upstream);
                o.merge(s);
                out.push(o);
            }
        }
    }
    out
}

type Field = fn(&ClientStats) -> f64;

/// The client's series: per upstream, summed over the cores unless `per_core`.
pub(crate) fn export(e: &mut Exposition, cores: &[CoreStats], per_core: bool) {
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
    let lbl = |pairs: &[(&'static str, String)]| {
        let p: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        labels(&p)
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
            e.sample(name, &lbl(&base(&s.upstream, shard)), get(s));
        }
    }
    let name = "coreloop_http_client_responses_total";
    e.family(name, "counter", "Responses by status class.");
    for (shard, s) in &series {
        for (i, n) in s.responses.iter().enumerate() {
            let mut p = base(&s.upstream, shard);
            p.push(("class", format!("{}xx", i + 1)));
            e.sample(name, &lbl(&p), *n as f64);
        }
    }
    let name = "coreloop_http_client_errors_total";
    e.family(name, "counter", "Fetches that failed, by kind.");
    for (shard, s) in &series {
        for (kind, n) in &s.errors {
            let mut p = base(&s.upstream, shard);
            p.push(("kind", kind.clone()));
            e.sample(name, &lbl(&p), *n as f64);
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
        let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
        e.histogram(name, &p, &s.latency);
    }
}
