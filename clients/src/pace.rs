//! When a client sends its input: a little before the server's next tick.
//!
//! The server applies the inputs it holds at the start of each tick, and publishes that
//! tick's snapshot at its end. An input sent right after a snapshot arrives waits most
//! of a tick in the server before it counts; one sent shortly before the next tick is
//! applied as soon as possible. Timing matters for the network too: QUIC delays an ACK
//! by at most 25 ms (quinn, on a low-RTT path) hoping to bundle it with a packet it
//! sends anyway. Sent shortly before the tick, the input reaches the server within that
//! window before the next snapshot leaves, so the server's ACK rides on the snapshot and
//! the client's ACK of the snapshot rides on the input: one packet each way per tick.
//! Sent right after a snapshot, the server's ACK waited 30 ms for nothing and went out
//! alone: measured, two packets per client per tick from the server instead of one.

use std::time::{Duration, Instant};

/// Tracks when snapshots arrive and says when to send the next input.
#[derive(Debug, Clone)]
pub struct InputPacer {
    period: Duration,
    lead: Duration,
    newest: Option<(u32, Instant)>,
}

impl InputPacer {
    /// A pacer for a server at `tick_rate` Hz: inputs go out `min(10 ms, period / 3)`
    /// before the next snapshot is due.
    pub fn new(tick_rate: u16) -> Self {
        let period = Duration::from_secs(1) / u32::from(tick_rate.max(1));
        Self {
            period,
            lead: (period / 3).min(Duration::from_millis(10)),
            newest: None,
        }
    }

    /// The tick period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Notes that a datagram of `tick` arrived at `at`; only the first arrival of each
    /// newer tick counts (the start of that tick's burst).
    pub fn on_datagram(&mut self, tick: u32, at: Instant) {
        if self
            .newest
            .is_none_or(|(newest, _)| tick.wrapping_sub(newest).wrapping_sub(1) < u32::MAX / 2)
        {
            self.newest = Some((tick, at));
        }
    }

    /// The first send time after `now`: `lead` before a snapshot is due, counting whole
    /// periods from the newest tick's arrival. `None` before any snapshot arrived.
    pub fn next_send_after(&self, now: Instant) -> Option<Instant> {
        let (_, arrival) = self.newest?;
        let first = arrival + self.period - self.lead;
        if first > now {
            return Some(first);
        }
        let behind = now.duration_since(first).as_nanos() / self.period.as_nanos();
        Some(first + self.period * (behind as u32 + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_go_out_ten_ms_before_the_next_snapshot_is_due() {
        let mut pacer = InputPacer::new(30);
        let t0 = Instant::now();
        assert_eq!(pacer.next_send_after(t0), None);
        pacer.on_datagram(100, t0);
        // Later datagrams of the same tick, and older ticks, do not move the phase.
        pacer.on_datagram(100, t0 + Duration::from_millis(2));
        pacer.on_datagram(99, t0 + Duration::from_millis(3));
        let period = Duration::from_secs(1) / 30;
        let lead = Duration::from_millis(10);
        assert_eq!(pacer.next_send_after(t0), Some(t0 + period - lead));
        // Far later: still on the same phase, the next slot after now.
        let now = t0 + period * 10 + Duration::from_millis(1);
        assert_eq!(pacer.next_send_after(now), Some(t0 + period * 11 - lead));
        // A newer tick re-anchors the phase.
        let t1 = t0 + Duration::from_millis(500);
        pacer.on_datagram(115, t1);
        assert_eq!(pacer.next_send_after(t1), Some(t1 + period - lead));
    }

    #[test]
    fn at_a_high_tick_rate_the_lead_is_a_third_of_a_period() {
        let pacer = InputPacer::new(120);
        assert_eq!(pacer.lead, Duration::from_secs(1) / 120 / 3);
    }
}
