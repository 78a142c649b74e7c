//! HdrHistogram's percentile distribution format (`.hgrm`), which its plotter reads.

use hdrhistogram::Histogram;
use std::fmt::Write;

/// The percentile distribution of `h` in HdrHistogram's `.hgrm` text format, values
/// divided by `scale` (1,000 for a histogram of microseconds shown in milliseconds, or
/// 1,000,000 for nanoseconds), five steps per halving of the distance to 100%.
///
/// ```
/// let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
/// for v in 1..=1000u64 { h.record(v * 1000).unwrap(); } // 1 to 1,000 us, in ns
/// let text = coreloop::metrics::hgrm(&h, 1_000_000.0); // in ms
/// assert!(text.starts_with("       Value   Percentile   TotalCount 1/(1-Percentile)"));
/// assert!(text.contains("#[Max     =        1.000, Total count    =         1000]"));
/// ```
pub fn hgrm(h: &Histogram<u64>, scale: f64) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "       Value   Percentile   TotalCount 1/(1-Percentile)\n"
    );
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let value = v.value_iterated_to() as f64 / scale;
        if q < 1.0 {
            let _ = writeln!(
                o,
                "{value:12.3} {q:12.6} {total:12} {:14.2}",
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(o, "{value:12.3} {q:12.6} {total:12}");
        }
    }
    let _ = writeln!(
        o,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / scale,
        h.stdev() / scale
    );
    let _ = writeln!(
        o,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / scale,
        h.len()
    );
    let buckets = h.buckets();
    let sub = h.distinct_values() as u64;
    let _ = writeln!(o, "#[Buckets = {buckets:12}, SubBuckets     = {sub:12}]");
    o
}
