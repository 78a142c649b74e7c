//! Histograms the hot paths record into in a few instructions: an array of counts
//! with HdrHistogram's own buckets (for values of 1 ns to a minute with two significant
//! digits), turned into an HdrHistogram only when someone asks for a copy. Recording
//! into an HdrHistogram directly keeps its minimum, maximum and total up to date on
//! every call, which cost as much as the rest of a keep-alive request's bookkeeping.
//!
//! The buckets are HdrHistogram's (`new_with_bounds(1, 60 s, 2)`: 256 values of width
//! one, then for each power of two 128 of width 2^k), and a bucket's count is handed to
//! it at the bucket's lowest value, so the copy reports exactly what recording into it
//! directly would have (counts, quantiles, minimum, maximum, mean).

use hdrhistogram::Histogram;

/// The first value not recorded, ns: HdrHistogram's buckets for values up to a minute
/// end at 2^36 (68.7 s), and it refuses values past them; so are they dropped here.
const LIMIT: u64 = 1 << 36;

/// Values per power of two past the first 256.
const HALF: u64 = 128;

/// The bucket of `v` (under [`LIMIT`]).
fn index(v: u64) -> usize {
    if v < 2 * HALF {
        return v as usize;
    }
    let k = 63 - u64::from(v.leading_zeros()) - 7; // v >> k is in [128, 256)
    (k * HALF + (v >> k)) as usize
}

/// The lowest value of bucket `i`.
fn lowest(i: usize) -> u64 {
    let i = i as u64;
    if i < 2 * HALF {
        return i;
    }
    let k = i / HALF - 1;
    (i - k * HALF) << k
}

/// Buckets for values under [`LIMIT`]: 256, then 128 per power of two up to 2^36.
const BUCKETS: usize = (2 + (36 - 8)) * HALF as usize;

/// Counts by bucket; see the module docs.
#[derive(Clone)]
pub(crate) struct LogHistogram {
    counts: Box<[u64]>,
    /// Values recorded (for a quick "nothing yet").
    total: u64,
}

impl Default for LogHistogram {
    fn default() -> Self {
        LogHistogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
        }
    }
}

impl LogHistogram {
    /// Records `n` values of `v`.
    #[inline]
    pub(crate) fn record_n(&mut self, v: u64, n: u64) {
        if v >= LIMIT {
            return;
        }
        if let Some(c) = self.counts.get_mut(index(v)) {
            *c = c.saturating_add(n);
            self.total = self.total.saturating_add(n);
        }
    }

    /// Records one value.
    #[inline]
    pub(crate) fn record(&mut self, v: u64) {
        self.record_n(v, 1);
    }

    /// The same counts as an HdrHistogram (see the module docs).
    pub(crate) fn to_hdr(&self) -> Histogram<u64> {
        let mut h = super::new_histogram();
        if self.total > 0 {
            for (i, &c) in self.counts.iter().enumerate() {
                if c > 0 {
                    let _ = h.record_n(lowest(i), c);
                }
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recording here and copying gives what recording into an HdrHistogram gives.
    #[test]
    fn the_copy_is_what_hdrhistogram_would_have() {
        let mut ours = LogHistogram::default();
        let mut theirs = crate::reactor::new_histogram();
        let mut v: u64 = 1;
        let mut values = vec![0, 1, 2, 255, 256, 257, 511, 512, 1000, 999_999, LIMIT - 1];
        while v < LIMIT / 2 {
            values.push(v);
            values.push(v + v / 3);
            v = v * 7 / 5 + 1;
        }
        for (i, &v) in values.iter().enumerate() {
            let n = 1 + (i as u64 % 3);
            ours.record_n(v, n);
            theirs.record_n(v, n).unwrap();
        }
        ours.record(LIMIT); // dropped, as by HdrHistogram
        assert!(theirs.record(LIMIT).is_err());
        let copy = ours.to_hdr();
        assert_eq!(copy.len(), theirs.len());
        assert_eq!((copy.min(), copy.max()), (theirs.min(), theirs.max()));
        assert_eq!(copy.mean(), theirs.mean());
        for q in [0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                copy.value_at_quantile(q),
                theirs.value_at_quantile(q),
                "{q}"
            );
        }
        for (a, b) in copy.iter_recorded().zip(theirs.iter_recorded()) {
            assert_eq!(
                (a.value_iterated_to(), a.count_at_value()),
                (b.value_iterated_to(), b.count_at_value())
            );
        }
    }

    #[test]
    fn buckets_are_contiguous_and_lowest_is_their_start() {
        let mut last = 0;
        for v in 0..100_000u64 {
            let i = index(v);
            assert!(i == last || i == last + 1, "{v}");
            if i == last + 1 {
                assert_eq!(lowest(i), v);
            }
            last = i;
        }
        assert_eq!(index(LIMIT - 1), BUCKETS - 1);
    }
}
