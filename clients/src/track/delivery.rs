//! [`Delivery`]: what one client's run of ticks came to — ticks expected and complete,
//! datagrams received, lost and ignored, and the newest complete tick.

use tickcast_shared::Tick;

/// Delivery figures of one client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// The first tick a datagram arrived for.
    pub first_tick: Option<Tick>,
    /// The newest tick a datagram arrived for.
    pub last_tick: Option<Tick>,
    /// Ticks received whole.
    pub complete: u64,
    /// Datagrams received, directories included (duplicates and stale ones excluded).
    pub chunks_received: u64,
    /// Datagrams of judged ticks that were meant for this client and never arrived
    /// (whole missing ticks counted at the expectation of the last judged tick).
    pub chunks_lost: u64,
    /// Duplicate, stale or inconsistent datagrams.
    pub chunks_ignored: u64,
    /// Entities in the newest complete tick.
    pub entities_last_snapshot: usize,
    /// The newest complete tick.
    pub last_complete_tick: Option<Tick>,
    /// The server's encode time of the newest complete tick (µs, wrapping; the chunk
    /// header's `server_time_us`).
    pub last_complete_server_time_us: Option<u32>,
}

impl Delivery {
    /// Ticks the server published between the first and the last tick seen, both
    /// included, counted across the wrap.
    pub fn expected(&self) -> u64 {
        match (self.first_tick, self.last_tick) {
            (Some(first), Some(last)) => u64::from(last.wrapping_since(first)) + 1,
            _ => 0,
        }
    }

    /// Complete ticks over expected ticks; 0.0 when nothing was expected. A client that
    /// saw no tick has delivered nothing it can vouch for: 1.0 would let a client that
    /// never received a datagram pass a delivery gate, and `DeliveryTotals::ratio` in
    /// the bots' report says 0 for the same case.
    pub fn ratio(&self) -> f64 {
        let expected = self.expected();
        if expected == 0 {
            return 0.0;
        }
        self.complete as f64 / expected as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_expected_is_no_delivery() {
        let nothing = Delivery::default();
        assert_eq!((nothing.expected(), nothing.ratio()), (0, 0.0));
    }

    #[test]
    fn the_expected_range_counts_across_the_wrap() {
        let delivery = Delivery {
            first_tick: Some(Tick::new(u32::MAX - 1)),
            last_tick: Some(Tick::new(2)),
            complete: 4,
            ..Delivery::default()
        };
        assert_eq!(delivery.expected(), 5);
        assert_eq!(delivery.ratio(), 0.8);
    }
}
