//! A fixed-bucket histogram of durations that a hot path fills with two relaxed atomic
//! adds and another thread reads without a lock: how the tick time and the fan-out
//! spread reach the metrics endpoint (design rule 6) without the sim or the net thread
//! ever waiting for a scrape or allocating for one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds: 1-2-5 steps from 50 µs to 50 ms. A
/// tick at 30 Hz has 33 ms; the server's tick takes a few hundred µs to a few ms and its
/// fan-out a few ms at 1,000 clients, so the interesting range is resolved to a factor
/// of 2–2.5, and anything over 50 ms (more than a whole period) lands in `+Inf`.
pub const BUCKET_BOUNDS_US: [u64; 10] = [
    50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000,
];

/// Buckets: one per bound plus the overflow (`+Inf`).
const BUCKETS: usize = BUCKET_BOUNDS_US.len() + 1;

/// Durations counted into [`BUCKET_BOUNDS_US`]. Each bucket counts only its own samples
/// (not cumulative), so recording is one add; the reader accumulates.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
}

/// What a [`LatencyHistogram`] held when read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistogramSnapshot {
    /// Samples per bucket (not cumulative); the last is `+Inf`.
    pub buckets: [u64; BUCKETS],
    /// Sum of every sample, microseconds.
    pub sum_us: u64,
}

impl LatencyHistogram {
    /// Counts one sample of `micros` microseconds: one add to its bucket, one to the sum.
    pub fn record_us(&self, micros: u64) {
        let bucket = BUCKET_BOUNDS_US
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(BUCKET_BOUNDS_US.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    /// Counts one sample.
    pub fn record(&self, duration: Duration) {
        self.record_us(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX));
    }

    /// Reads every bucket. Each value is read on its own, so a sample recorded during the
    /// read may be in the sum and not yet in its bucket: the skew is one sample at most
    /// per concurrent recording, which a rate over a scrape interval cannot see.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

impl HistogramSnapshot {
    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// `(upper bound in µs, samples at or below it)` for each finite bound, cumulative,
    /// as Prometheus' `le` buckets want them; the `+Inf` bucket is [`Self::count`].
    pub fn cumulative(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        BUCKET_BOUNDS_US
            .iter()
            .zip(&self.buckets)
            .scan(0u64, |total, (&bound, &n)| {
                *total += n;
                Some((bound, *total))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_on_a_bound_counts_in_that_bucket_and_beyond_the_last_in_inf() {
        let histogram = LatencyHistogram::default();
        for micros in [0, 50, 51, 1_000, 50_000, 50_001, u64::MAX / 4] {
            histogram.record_us(micros);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count(), 7);
        assert_eq!(snapshot.buckets[0], 2, "0 and 50 µs are ≤ 50 µs");
        assert_eq!(snapshot.buckets[1], 1, "51 µs is ≤ 100 µs");
        assert_eq!(snapshot.buckets[4], 1, "1 ms");
        assert_eq!(snapshot.buckets[9], 1, "50 ms");
        assert_eq!(snapshot.buckets[10], 2, "over 50 ms is +Inf");
    }

    #[test]
    fn cumulative_buckets_grow_to_the_count_and_the_sum_adds_up() {
        let histogram = LatencyHistogram::default();
        histogram.record(Duration::from_micros(150));
        histogram.record(Duration::from_micros(150));
        histogram.record(Duration::from_millis(3));
        histogram.record(Duration::from_secs(1));
        let snapshot = histogram.snapshot();
        let cumulative: Vec<(u64, u64)> = snapshot.cumulative().collect();
        assert_eq!(cumulative.len(), BUCKET_BOUNDS_US.len());
        assert_eq!(cumulative[0], (50, 0));
        assert_eq!(cumulative[2], (200, 2));
        assert_eq!(cumulative[6], (5_000, 3));
        assert_eq!(cumulative[9], (50_000, 3), "the 1 s sample is only in +Inf");
        assert_eq!(snapshot.count(), 4);
        assert_eq!(snapshot.sum_us, 150 + 150 + 3_000 + 1_000_000);
    }
}
