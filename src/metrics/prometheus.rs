//! Prometheus's text exposition format: counters, gauges, and histograms as cumulative
//! buckets with `_sum` and `_count`.

use hdrhistogram::Histogram;
use std::fmt::Write;

/// Bucket bounds of every exported latency histogram, in seconds: from 5 microseconds to
/// 10 seconds, 1-2.5-5 per decade (21 buckets and `+Inf`, few enough for Prometheus to
/// hold per series).
pub const LATENCY_BUCKETS: [f64; 21] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Writes metric families: each metric's `# HELP` and `# TYPE` once, then its samples.
#[derive(Default)]
pub(crate) struct Exposition {
    out: String,
}

/// Label pairs with owned values (as an exporter builds them for each series), borrowed
/// as [`labels`] and [`Exposition::histogram`] take them.
pub(crate) fn borrowed<'a>(pairs: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A label set: `name="value"` pairs, values escaped as the format requires.
pub(crate) fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let mut s = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(s, "{k}=\"{v}\"");
    }
    s.push('}');
    s
}

impl Exposition {
    /// Starts a family.
    pub(crate) fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample of a counter or gauge.
    pub(crate) fn sample(&mut self, name: &str, labels: &str, value: f64) {
        let _ = writeln!(self.out, "{name}{labels} {}", fmt_value(value));
    }

    /// One histogram series (of nanoseconds, exported in seconds): cumulative buckets,
    /// `_sum` (from the histogram's mean, within its 1% precision) and `_count`.
    pub(crate) fn histogram(&mut self, name: &str, pairs: &[(&str, &str)], h: &Histogram<u64>) {
        for le in LATENCY_BUCKETS {
            let bound_ns = (le * 1e9) as u64;
            let count = if h.is_empty() {
                0
            } else {
                h.count_between(0, bound_ns)
            };
            let mut p = pairs.to_vec();
            let le_s = fmt_value(le);
            p.push(("le", &le_s));
            let _ = writeln!(self.out, "{name}_bucket{} {count}", labels(&p));
        }
        let mut p = pairs.to_vec();
        p.push(("le", "+Inf"));
        let _ = writeln!(self.out, "{name}_bucket{} {}", labels(&p), h.len());
        let sum = h.mean() * h.len() as f64 / 1e9;
        let l = labels(pairs);
        let _ = writeln!(self.out, "{name}_sum{l} {}", fmt_value(sum));
        let _ = writeln!(self.out, "{name}_count{l} {}", h.len());
    }

    pub(crate) fn finish(self) -> String {
        self.out
    }
}

/// A float as the format writes it (integers without a fraction).
fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_with_the_count() {
        let mut h = crate::reactor::new_histogram();
        for us in [3u64, 30, 300, 3000, 30_000] {
            h.record(us * 1000).unwrap();
        }
        let mut e = Exposition::default();
        e.family("x_seconds", "histogram", "test");
        e.histogram("x_seconds", &[("shard", "0")], &h);
        let text = e.finish();
        let count_at = |le: &str| -> u64 {
            let key = format!("x_seconds_bucket{{shard=\"0\",le=\"{le}\"}} ");
            let line = text.lines().find(|l| l.starts_with(&key)).expect(le);
            line[key.len()..].parse().unwrap()
        };
        assert_eq!(count_at("0.000005"), 1);
        assert_eq!(count_at("0.00005"), 2);
        assert_eq!(count_at("0.0005"), 3);
        assert_eq!(count_at("0.005"), 4);
        assert_eq!(count_at("0.05"), 5);
        assert_eq!(count_at("+Inf"), 5);
        assert!(text.contains("x_seconds_count{shard=\"0\"} 5"));
        assert_eq!(labels(&[("route", "a\"b\\c")]), r#"{route="a\"b\\c"}"#);
    }
}
