//! Which upstream a request goes to: round robin on each core over the upstreams that
//! are up, an upstream that failed `max_fails` times in a row (refused, timed out, cut
//! off) skipped for `fail_timeout` (nginx's `max_fails` and `fail_timeout`, per core:
//! cores share nothing, so each learns on its own). When every upstream is down, they
//! are all tried again rather than refusing everything.

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Where an upstream is: its address, and for one spoken to over TLS (`--upstream
/// https://name:port`) the name its certificate must be for (sent as SNI).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    pub tls: Option<String>,
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Target {
        Target { addr, tls: None }
    }
}

/// One upstream, as this core sees it.
pub struct Upstream {
    pub addr: SocketAddr,
    /// What its requests' URLs start with: `https://name` (TLS to that name), or
    /// nothing (an origin-form target, plain HTTP).
    origin: String,
    fails: Cell<u32>,
    down_until: Cell<Option<Instant>>,
}

/// This core's upstreams and where the round robin is.
pub struct Upstreams {
    list: Vec<Upstream>,
    next: Cell<usize>,
    max_fails: u32,
    fail_timeout: Duration,
}

impl Upstreams {
    pub fn new(targets: &[Target], max_fails: u32, fail_timeout: Duration) -> Upstreams {
        Upstreams {
            list: targets
                .iter()
                .map(|t| Upstream {
                    addr: t.addr,
                    origin: t
                        .tls
                        .as_ref()
                        .map_or(String::new(), |n| format!("https://{n}")),
                    fails: Cell::new(0),
                    down_until: Cell::new(None),
                })
                .collect(),
            next: Cell::new(0),
            max_fails: max_fails.max(1),
            fail_timeout,
        }
    }

    /// The next upstream that is up (by index), skipping `not` (one that just failed
    /// this request); `None` if none is.
    pub fn pick(&self, now: Instant, not: Option<usize>) -> Option<usize> {
        let n = self.list.len();
        for _ in 0..n {
            let i = self.next.get() % n;
            self.next.set(i + 1);
            if Some(i) != not && self.up(i, now) {
                return Some(i);
            }
        }
        // Every one is down (or the only one just failed): try them again in turn.
        if not.is_some() {
            return None;
        }
        let i = self.next.get() % n;
        self.next.set(i + 1);
        Some(i)
    }

    fn up(&self, i: usize, now: Instant) -> bool {
        match self.list[i].down_until.get() {
            Some(t) if t > now => false,
            Some(_) => {
                // Its time out is over: one more chance (a failure puts it back down).
                self.list[i].down_until.set(None);
                self.list[i].fails.set(self.max_fails - 1);
                true
            }
            None => true,
        }
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.list[i].addr
    }

    /// What the URL of a request to upstream `i` starts with (its target follows).
    pub fn origin(&self, i: usize) -> &str {
        &self.list[i].origin
    }

    /// A request to upstream `i` got an answer.
    pub fn succeeded(&self, i: usize) {
        self.list[i].fails.set(0);
        self.list[i].down_until.set(None);
    }

    /// A request to upstream `i` failed (refused, timed out, cut off): after
    /// `max_fails` in a row it is skipped for `fail_timeout`.
    pub fn failed(&self, i: usize, now: Instant) {
        let u = &self.list[i];
        let fails = u.fails.get() + 1;
        u.fails.set(fails);
        if fails >= self.max_fails {
            if u.down_until.get().is_none() {
                log::warn!(
                    "proxy: upstream {} failed {fails} times in a row: skipped for {:?}",
                    u.addr,
                    self.fail_timeout
                );
            }
            u.down_until.set(Some(now + self.fail_timeout));
        }
    }

    /// How many upstreams are down now.
    #[cfg(test)]
    pub fn down(&self, now: Instant) -> usize {
        self.list
            .iter()
            .filter(|u| u.down_until.get().is_some_and(|t| t > now))
            .count()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_skips_an_upstream_that_keeps_failing_for_a_while() {
        let addrs: Vec<Target> = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
            .iter()
            .map(|a| a.parse::<SocketAddr>().unwrap().into())
            .collect();
        let u = Upstreams::new(&addrs, 2, Duration::from_secs(10));
        let t0 = Instant::now();
        let picks: Vec<usize> = (0..6).map(|_| u.pick(t0, None).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        u.failed(1, t0);
        assert_eq!(u.down(t0), 0, "one failure is not enough");
        u.failed(1, t0);
        assert_eq!(u.down(t0), 1);
        let picks: Vec<usize> = (0..4).map(|_| u.pick(t0, None).unwrap()).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        // After the timeout it gets one chance; a failure puts it straight back down.
        let later = t0 + Duration::from_secs(11);
        let picks: Vec<usize> = (0..3).map(|_| u.pick(later, None).unwrap()).collect();
        assert!(picks.contains(&1));
        u.failed(1, later);
        assert_eq!(u.down(later), 1);
        // A success clears it.
        u.succeeded(1);
        assert_eq!(u.down(later), 0);
        // Everything down: tried anyway, in turn.
        for i in 0..3 {
            u.failed(i, later);
            u.failed(i, later);
        }
        assert!(u.pick(later, None).is_some());
        // The one that just failed is not picked again for the same request.
        let one = Upstreams::new(&addrs[..1], 1, Duration::from_secs(1));
        assert_eq!(one.pick(t0, Some(0)), None);
    }
}
