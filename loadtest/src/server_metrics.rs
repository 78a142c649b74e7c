//! `--server-metrics URL`: the server's own request-latency histogram, read from its
//! Prometheus endpoint (coreloop's `/metrics`) before and after the run, so that the
//! report shows how much of the latency the client saw was the server's work and how
//! much was queueing and the network.
//!
//! The histogram is `coreloop_http_request_duration_seconds` (cumulative buckets); the
//! series of the server under test are those whose `server` label ends with the target's
//! port (all series if none does), added up. Percentiles are interpolated within a
//! bucket, as Prometheus's `histogram_quantile` does.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

const FAMILY: &str = "coreloop_http_request_duration_seconds_bucket";

/// Cumulative counts by upper bound (seconds), `+Inf` last.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Buckets(pub Vec<(f64, f64)>);

impl Buckets {
    /// The requests counted.
    pub fn count(&self) -> f64 {
        self.0.last().map_or(0.0, |b| b.1)
    }

    /// What was recorded between `before` and these.
    pub fn since(&self, before: &Buckets) -> Buckets {
        Buckets(
            self.0
                .iter()
                .map(|&(le, n)| {
                    let was = before.0.iter().find(|(l, _)| *l == le).map_or(0.0, |b| b.1);
                    (le, (n - was).max(0.0))
                })
                .collect(),
        )
    }

    /// The `q` quantile in seconds, interpolated within its bucket; `None` if empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut prev = (0.0, 0.0);
        for &(le, n) in &self.0 {
            if n >= rank {
                if le.is_infinite() {
                    return Some(prev.0); // past the last finite bound: its bound
                }
                let in_bucket = n - prev.1;
                let frac = if in_bucket > 0.0 {
                    (rank - prev.1) / in_bucket
                } else {
                    1.0
                };
                return Some(prev.0 + (le - prev.0) * frac);
            }
            prev = (le, n);
        }
        None
    }
}

/// Parses an exposition: the request-latency buckets of the series whose `server` label
/// ends with `:port` (or of every series, if none does), added up by bound.
pub fn parse(text: &str, port: Option<u16>) -> Buckets {
    let mut all: Vec<(String, f64, f64)> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(FAMILY) else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(&format!("{name}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(str::to_string)
        };
        let Some(le) = label("le") else { continue };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            match le.parse() {
                Ok(v) => v,
                Err(_) => continue,
            }
        };
        all.push((label("server").unwrap_or_default(), le, value));
    }
    let suffix = port.map(|p| format!(":{p}"));
    let ours = suffix.as_ref().is_some_and(|s| {
        all.iter()
            .any(|(server, _, _)| server.ends_with(s.as_str()))
    });
    let mut sum: Vec<(f64, f64)> = Vec::new();
    for (server, le, n) in all {
        if ours
            && !suffix
                .as_ref()
                .is_some_and(|s| server.ends_with(s.as_str()))
        {
            continue;
        }
        match sum.iter_mut().find(|(l, _)| *l == le) {
            Some((_, m)) => *m += n,
            None => sum.push((le, n)),
        }
    }
    sum.sort_by(|a, b| a.0.total_cmp(&b.0));
    Buckets(sum)
}

/// Fetches `url` (http://host:port/path) with a plain HTTP/1.0 GET; the body.
pub fn fetch(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--server-metrics takes an http:// URL, not {url:?}"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| format!("{hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hostport}: no address"))?;
    let timeout = Duration::from_secs(5);
    let mut c = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{url}: {e}"))?;
    c.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(c, "GET {path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut all = Vec::new();
    c.read_to_end(&mut all).map_err(|e| format!("{url}: {e}"))?;
    let text = String::from_utf8_lossy(&all);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{url}: not an HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        let status = head.lines().next().unwrap_or("");
        return Err(format!("{url}: {status}"));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE coreloop_http_request_duration_seconds histogram
coreloop_http_request_duration_seconds_bucket{server=\"0.0.0.0:8888\",route=\"/\",class=\"2xx\",le=\"0.001\"} 50
coreloop_http_request_duration_seconds_bucket{server=\"0.0.0.0:8888\",route=\"/\",class=\"2xx\",le=\"0.01\"} 90
coreloop_http_request_duration_seconds_bucket{server=\"0.0.0.0:8888\",route=\"/\",class=\"2xx\",le=\"+Inf\"} 100
coreloop_http_request_duration_seconds_bucket{server=\"0.0.0.0:9999\",route=\"/\",class=\"2xx\",le=\"0.001\"} 7
coreloop_http_request_duration_seconds_bucket{server=\"0.0.0.0:9999\",route=\"/\",class=\"2xx\",le=\"+Inf\"} 7
";

    #[test]
    fn the_target_servers_series_are_summed_and_interpolated() {
        let b = parse(TEXT, Some(8888));
        assert_eq!(b.count(), 100.0);
        assert_eq!(b.quantile(0.5), Some(0.001));
        let p75 = b.quantile(0.75).unwrap();
        assert!((p75 - (0.001 + 0.009 * 25.0 / 40.0)).abs() < 1e-9, "{p75}");
        assert_eq!(
            parse(TEXT, Some(1)).count(),
            107.0,
            "no match: every series"
        );
        let before = parse(TEXT, Some(9999));
        assert_eq!(
            b.since(&Buckets(vec![(0.001, 10.0), (f64::INFINITY, 20.0)]))
                .count(),
            80.0
        );
        assert_eq!(before.count(), 7.0);
        assert_eq!(Buckets::default().quantile(0.5), None);
    }
}
