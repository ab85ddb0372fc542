//! The two wall-clock readings the protocol carries: Unix seconds (a token's expiry)
//! and Unix microseconds modulo 2^32 (a chunk's `server_time_us`). Pure conversions:
//! the caller reads the clock (`SystemTime::now()`) and passes it in, so this crate
//! still never reads one, and every binary computes the same numbers the same way.

use std::time::{SystemTime, UNIX_EPOCH};

/// Whole seconds since the Unix epoch at `at`; 0 for a time before the epoch.
pub fn seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Microseconds since the Unix epoch at `at`, modulo 2^32 (wraps every 71.6 minutes):
/// the clock chunk headers are stamped with. 0 for a time before the epoch.
pub fn micros_wrapping(at: SystemTime) -> u32 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn readings_count_from_the_epoch_and_microseconds_wrap() {
        let at = UNIX_EPOCH + Duration::from_micros(5_000_000_123);
        assert_eq!(seconds(at), 5_000);
        assert_eq!(micros_wrapping(at), (5_000_000_123u64 % (1 << 32)) as u32);
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!((seconds(before), micros_wrapping(before)), (0, 0));
    }
}
