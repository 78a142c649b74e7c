//! The results, in wrk's layout (so scripts that parse wrk keep working), with wrk2's
//! full percentile spectrum, HdrHistogram's `.hgrm` format, or JSON.

use super::Config;
use hdrhistogram::Histogram;
use std::fmt::Write;
use std::time::Duration;

/// What was counted and recorded: by each thread, then merged over the threads.
pub struct Totals {
    /// Responses received whole (after the warm-up).
    pub requests: u64,
    /// Bytes of those responses.
    pub bytes: u64,
    /// Connections that could not be opened.
    pub connect_errors: u64,
    /// Connections that broke, or sent what is not HTTP, with requests in flight.
    pub read_errors: u64,
    /// Requests that could not be written.
    pub write_errors: u64,
    /// Responses slower than `--timeout`.
    pub timeouts: u64,
    /// Responses with a status outside 2xx and 3xx.
    pub non_2xx_3xx: u64,
    /// Requests sent again on a new connection because the server had closed the
    /// kept-alive one they went on (`--retry-closed`): not errors.
    pub retried: u64,
    /// Requests still unanswered when the run ended (sent before the end, their answers
    /// not in after the drain): not counted in `requests`, and not errors.
    pub unfinished: u64,
    /// Latency, microseconds.
    pub latency: Histogram<u64>,
    /// Requests per second per thread, sampled every 100 ms.
    pub req_per_sec: Histogram<u64>,
}

impl Totals {
    pub(crate) fn new() -> Totals {
        Totals {
            requests: 0,
            bytes: 0,
            connect_errors: 0,
            read_errors: 0,
            write_errors: 0,
            timeouts: 0,
            non_2xx_3xx: 0,
            unfinished: 0,
            retried: 0,
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds"),
            req_per_sec: Histogram::new_with_bounds(1, 100_000_000, 3).expect("histogram bounds"),
        }
    }

    fn add(&mut self, o: &Totals) {
        self.requests += o.requests;
        self.bytes += o.bytes;
        self.connect_errors += o.connect_errors;
        self.read_errors += o.read_errors;
        self.write_errors += o.write_errors;
        self.timeouts += o.timeouts;
        self.unfinished += o.unfinished;
        self.retried += o.retried;
        self.non_2xx_3xx += o.non_2xx_3xx;
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&o.latency);
        let _ = self.req_per_sec.add(&o.req_per_sec);
    }
}

/// Everything one run measured, merged over its threads.
pub struct Report {
    /// The counts and histograms of all threads.
    pub totals: Totals,
    /// Seconds measured (the test's duration).
    pub seconds: f64,
    target: String,
    threads: u64,
    connections: u64,
    /// The server's own request latency over the run (`--server-metrics`).
    pub server: Option<crate::server_metrics::Buckets>,
}

impl Report {
    pub(crate) fn merge(shards: Vec<Totals>, duration: Duration, cfg: &Config) -> Report {
        let mut totals = Totals::new();
        for s in &shards {
            totals.add(s);
        }
        Report {
            totals,
            seconds: duration.as_secs_f64(),
            target: cfg.url.clone(),
            threads: cfg.threads,
            connections: cfg.connections,
            server: None,
        }
    }

    /// The client's and the server's latency side by side (`--server-metrics`): what
    /// the server spent on the requests, and what the rest (queueing, the network, the
    /// client) added.
    pub fn server_text(&self) -> String {
        let Some(server) = &self.server else {
            return String::new();
        };
        let mut o = String::new();
        let _ = writeln!(
            o,
            "  Server-side latency ({} requests counted by the server; buckets interpolated):",
            server.count() as u64
        );
        let _ = writeln!(o, "     pct     client     server       rest");
        for (name, q) in [("50%", 0.5), ("90%", 0.9), ("99%", 0.99), ("99.9%", 0.999)] {
            let client = self.totals.latency.value_at_quantile(q) as f64;
            match server.quantile(q) {
                Some(s) => {
                    let s_us = s * 1e6;
                    let _ = writeln!(
                        o,
                        "  {name:>6} {:>10} {:>10} {:>10}",
                        fmt_us(client),
                        fmt_us(s_us),
                        fmt_us((client - s_us).max(0.0))
                    );
                }
                None => {
                    let _ = writeln!(o, "  {name:>6} {:>10} {:>10}", fmt_us(client), "-");
                }
            }
        }
        o
    }

    /// Requests per second over the measured time.
    pub fn rps(&self) -> f64 {
        self.totals.requests as f64 / self.seconds.max(1e-9)
    }

    /// The latency at quantile `q` (0..=1), microseconds.
    pub fn latency_us(&self, q: f64) -> u64 {
        self.totals.latency.value_at_quantile(q)
    }

    /// wrk's output (with the distribution and the spectrum when `--latency`).
    pub fn wrk_text(&self, cfg: &Config) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "Running {} test @ {}",
            fmt_secs(self.seconds),
            self.target
        );
        let _ = writeln!(
            o,
            "  {} threads and {} connections",
            self.threads, self.connections
        );
        let _ = writeln!(o, "  Thread Stats   Avg      Stdev     Max   +/- Stdev");
        let l = &self.totals.latency;
        let _ = writeln!(
            o,
            "    Latency {:>9} {:>9} {:>9} {:>8.2}%",
            fmt_us(l.mean()),
            fmt_us(l.stdev()),
            fmt_us(l.max() as f64),
            within_stdev(l)
        );
        let q = &self.totals.req_per_sec;
        let _ = writeln!(
            o,
            "    Req/Sec {:>9} {:>9} {:>9} {:>8.2}%",
            fmt_count(q.mean()),
            fmt_count(q.stdev()),
            fmt_count(q.max() as f64),
            within_stdev(q)
        );
        if cfg.latency {
            let _ = writeln!(o, "  Latency Distribution");
            for p in [50.0, 75.0, 90.0, 99.0] {
                let _ = writeln!(
                    o,
                    "  {:>3}% {:>9}",
                    p as u32,
                    fmt_us(l.value_at_percentile(p) as f64)
                );
            }
            let _ = writeln!(o, "\n  Detailed Percentile spectrum:");
            o.push_str(&self.hgrm());
        }
        let _ = writeln!(
            o,
            "  {} requests in {}, {} read",
            self.totals.requests,
            fmt_secs(self.seconds),
            fmt_bytes(self.totals.bytes as f64)
        );
        if self.totals.connect_errors
            + self.totals.read_errors
            + self.totals.write_errors
            + self.totals.timeouts
            > 0
        {
            let _ = writeln!(
                o,
                "  Socket errors: connect {}, read {}, write {}, timeout {}",
                self.totals.connect_errors,
                self.totals.read_errors,
                self.totals.write_errors,
                self.totals.timeouts
            );
        }
        if self.totals.non_2xx_3xx > 0 {
            let _ = writeln!(o, "  Non-2xx or 3xx responses: {}", self.totals.non_2xx_3xx);
        }
        if self.totals.retried > 0 {
            let _ = writeln!(
                o,
                "  Sent again on a new connection (the server closed a kept-alive one): {}",
                self.totals.retried
            );
        }
        if self.totals.unfinished > 0 {
            let _ = writeln!(
                o,
                "  Unanswered at the end (not counted): {}",
                self.totals.unfinished
            );
        }
        o.push_str(&self.server_text());
        let _ = writeln!(o, "Requests/sec: {:>9.2}", self.rps());
        let _ = writeln!(
            o,
            "Transfer/sec: {:>9}",
            fmt_bytes(self.totals.bytes as f64 / self.seconds.max(1e-9))
        );
        o
    }

    /// The percentile distribution in milliseconds, as HdrHistogram prints it and its
    /// plotter reads it (`.hgrm`).
    pub fn hgrm(&self) -> String {
        coreloop::metrics::hgrm(&self.totals.latency, 1000.0)
    }

    /// Draws latency by percentile to an SVG file, the x axis a log scale of
    /// 1/(1-percentile) as HdrHistogram's plotter draws it, so the tail is as readable as
    /// the median.
    pub fn plot(&self, path: &std::path::Path) -> Result<(), String> {
        use plotters::prelude::*;
        let points: Vec<(f64, f64)> = self
            .totals
            .latency
            .iter_quantiles(5)
            .map(|v| {
                (
                    v.quantile_iterated_to(),
                    v.value_iterated_to() as f64 / 1000.0,
                )
            })
            .filter(|(q, _)| *q < 1.0)
            .map(|(q, ms)| (1.0 / (1.0 - q), ms))
            .collect();
        if points.is_empty() {
            return Err("no latencies recorded: nothing to plot".into());
        }
        let max_x = points.iter().map(|p| p.0).fold(10.0, f64::max) * 1.5;
        let max_y = points.iter().map(|p| p.1).fold(0.001, f64::max) * 1.1;
        let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| format!("plotting to {}: {e}", path.display());
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("Latency by percentile: {}", self.target),
                ("sans-serif", 18),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((1.0..max_x).log_scale(), 0.0..max_y)
            .map_err(|e| err(&e))?;
        let pct = |x: &f64| {
            let p = 100.0 * (1.0 - 1.0 / x);
            let digits = format!("{p:.4}");
            format!("{}%", digits.trim_end_matches('0').trim_end_matches('.'))
        };
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (ms)")
            .x_label_formatter(&pct)
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(LineSeries::new(points, &BLUE))
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))
    }

    /// A one-object JSON summary.
    pub fn json(&self) -> String {
        let l = &self.totals.latency;
        format!(
            concat!(
                "{{\"requests\":{},\"seconds\":{:.3},\"requests_per_sec\":{:.2},\"bytes\":{},",
                "\"errors\":{{\"connect\":{},\"read\":{},\"write\":{},\"timeout\":{},\"status\":{}}},\"retried\":{},",
                "\"latency_us\":{{\"mean\":{:.1},\"stdev\":{:.1},\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{}}}}}"
            ),
            self.totals.requests,
            self.seconds,
            self.rps(),
            self.totals.bytes,
            self.totals.connect_errors,
            self.totals.read_errors,
            self.totals.write_errors,
            self.totals.timeouts,
            self.totals.non_2xx_3xx,
            self.totals.retried,
            l.mean(),
            l.stdev(),
            l.value_at_quantile(0.5),
            l.value_at_quantile(0.9),
            l.value_at_quantile(0.99),
            l.value_at_quantile(0.999),
            l.max()
        )
    }
}

/// The share of recorded values within one standard deviation of the mean, percent.
fn within_stdev(h: &Histogram<u64>) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    let (mean, sd) = (h.mean(), h.stdev());
    let lo = (mean - sd).max(0.0) as u64;
    let hi = (mean + sd) as u64;
    let inside: u64 = h
        .iter_recorded()
        .filter(|v| (lo..=hi).contains(&v.value_iterated_to()))
        .map(|v| v.count_at_value())
        .sum();
    100.0 * inside as f64 / h.len() as f64
}

fn fmt_us(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.2}s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{us:.2}us")
    }
}

fn fmt_count(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.2}k", n / 1e3)
    } else {
        format!("{n:.2}")
    }
}

fn fmt_bytes(b: f64) -> String {
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}GB", b / 1024.0 / 1024.0 / 1024.0)
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.2}MB", b / 1024.0 / 1024.0)
    } else if b >= 1024.0 {
        format!("{:.2}KB", b / 1024.0)
    } else {
        format!("{b:.2}B")
    }
}

fn fmt_secs(s: f64) -> String {
    format!("{s:.2}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_as_wrk_prints_them() {
        assert_eq!(fmt_us(635.91), "635.91us");
        assert_eq!(fmt_us(6320.0), "6.32ms");
        assert_eq!(fmt_us(1_500_000.0), "1.50s");
        assert_eq!(fmt_bytes(15.21 * 1024.0 * 1024.0), "15.21MB");
        assert_eq!(fmt_count(12_340.0), "12.34k");
    }

    #[test]
    fn within_one_stdev_of_a_uniform_spread() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 1000, 3).unwrap();
        for v in 1..=100 {
            h.record(v).unwrap();
        }
        let w = within_stdev(&h);
        assert!((55.0..=60.0).contains(&w), "{w}");
    }
}
