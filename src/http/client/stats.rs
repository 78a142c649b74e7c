//! What the HTTP client records per upstream (host address) on each core, gathered
//! with the rest of a core's numbers ([`Snapshot`](crate::metrics::Snapshot)) and
//! exported with them.

use super::pool::Pool;
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
