//! Latency: a fixed-size log-linear histogram of microsecond durations (chunk latency,
//! snapshot age, RTT, connect time) and the wrapping microsecond clock difference the
//! chunk headers' `server_time_us` needs.

/// A histogram of durations in microseconds, log-linear: exact below 16 µs, then 16
/// buckets per power of two (each at most 6.25 % wide) up to 2^26 µs (67 s), then one
/// overflow bucket. 369 `u32` counters (1.5 KB), fixed whatever the run length, so a
/// bot can keep several and thousands of bots can run in one process.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    buckets: Box<[u32; HISTOGRAM_BUCKETS]>,
    count: u64,
}

/// Sub-buckets per power of two, as a power of two (16).
const SUB_BITS: u32 = 4;
const SUB_BUCKETS: usize = 1 << SUB_BITS;
/// The largest power of two tracked before the overflow bucket (2^26 µs = 67 s).
const TOP_EXPONENT: u32 = 26;
const HISTOGRAM_BUCKETS: usize = SUB_BUCKETS * (TOP_EXPONENT - SUB_BITS + 1) as usize + 1;

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: Box::new([0; HISTOGRAM_BUCKETS]),
            count: 0,
        }
    }
}

fn bucket_of(micros: u64) -> usize {
    if micros < SUB_BUCKETS as u64 {
        return micros as usize;
    }
    let exponent = 63 - micros.leading_zeros(); // >= SUB_BITS
    if exponent >= TOP_EXPONENT {
        return HISTOGRAM_BUCKETS - 1;
    }
    let sub = (micros >> (exponent - SUB_BITS)) as usize & (SUB_BUCKETS - 1);
    SUB_BUCKETS * (exponent - SUB_BITS + 1) as usize + sub
}

/// The exclusive upper edge of a bucket, in microseconds.
fn bucket_upper_us(index: usize) -> u64 {
    if index < SUB_BUCKETS {
        return index as u64 + 1;
    }
    if index >= HISTOGRAM_BUCKETS - 1 {
        return 1 << TOP_EXPONENT;
    }
    let octave = (index / SUB_BUCKETS) as u32 - 1; // 0 for [16, 32)
    let sub = (index % SUB_BUCKETS) as u64;
    (SUB_BUCKETS as u64 + sub + 1) << octave
}

impl LatencyHistogram {
    /// Records one sample in microseconds.
    pub fn record(&mut self, micros: u64) {
        let index = bucket_of(micros);
        self.buckets[index] = self.buckets[index].saturating_add(1);
        self.count += 1;
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a = a.saturating_add(*b);
        }
        self.count += other.count;
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q` quantile (0..=1) in milliseconds, as the upper edge of its bucket (so at
    /// most 6.25 % above the true value; 67,108.864 ms means "at least that"); `None`
    /// with no samples.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (index, &n) in self.buckets.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                return Some(bucket_upper_us(index) as f64 / 1000.0);
            }
        }
        None
    }
}

/// Wrapping microsecond clock difference `now - then`, or `None` when `then` is ahead
/// of `now` (a clock step, or a server on another clock).
pub fn age_us(now_us: u32, then_us: u32) -> Option<u64> {
    let age = now_us.wrapping_sub(then_us);
    (age < u32::MAX / 2).then_some(u64::from(age))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_land_in_the_right_bucket() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile_ms(0.5), None);
        for micros in [100, 200, 300, 400, 25_000] {
            h.record(micros);
        }
        // 300 µs is in [288, 304): 16 buckets per power of two.
        assert_eq!(h.quantile_ms(0.5), Some(0.304));
        // 25,000 µs is in [24,576, 25,600).
        assert_eq!(h.quantile_ms(1.0), Some(25.6));
        h.record(u64::MAX);
        assert_eq!(h.count(), 6);
        assert_eq!(h.quantile_ms(1.0), Some(67_108.864));
    }

    #[test]
    fn every_histogram_bucket_is_at_most_one_sixteenth_wide() {
        let mut previous_upper = 0;
        for index in 0..HISTOGRAM_BUCKETS - 1 {
            let upper = bucket_upper_us(index);
            assert!(upper > previous_upper);
            assert_eq!(bucket_of(upper - 1), index, "bucket {index}");
            assert!(
                (upper - previous_upper) * 16 <= upper.max(16),
                "bucket {index}"
            );
            previous_upper = upper;
        }
        assert_eq!(bucket_of(1 << TOP_EXPONENT), HISTOGRAM_BUCKETS - 1);
    }

    #[test]
    fn an_age_across_the_clocks_wrap_is_small_and_a_clock_ahead_is_none() {
        assert_eq!(age_us(5, u32::MAX - 4), Some(10));
        assert_eq!(age_us(1_000, 1_500), None);
    }
}
