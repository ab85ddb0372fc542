//! When a client sends its input: between two snapshots, before the server's next tick.
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

use tickcast_shared::Tick;

/// Tracks when snapshots arrive and says when to send the next input.
#[derive(Debug, Clone)]
pub struct InputPacer {
    period: Duration,
    lead: Duration,
    newest: Option<(Tick, Instant)>,
}

impl InputPacer {
    /// A pacer for a server at `tick_rate` Hz: inputs go out half a period after each
    /// snapshot arrives, half a period before the next is due. That leaves each side's
    /// ACK the most room within quinn's 25 ms delay (8 ms each way at 30 Hz): the
    /// client's ACK of the snapshot waits half a period for the input, the server's ACK
    /// of the input waits half a period for the next snapshot.
    pub fn new(tick_rate: u16) -> Self {
        let period = Duration::from_secs(1) / u32::from(tick_rate.max(1));
        Self {
            period,
            lead: period / 2,
            newest: None,
        }
    }

    /// The tick period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Notes that a datagram of `tick` arrived at `at`; only the first arrival of each
    /// newer tick counts (the start of that tick's burst).
    pub fn on_datagram(&mut self, tick: Tick, at: Instant) {
        if self.newest.is_none_or(|(newest, _)| tick.is_after(newest)) {
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
    fn inputs_go_out_halfway_between_snapshots() {
        let mut pacer = InputPacer::new(30);
        let t0 = Instant::now();
        assert_eq!(pacer.next_send_after(t0), None);
        pacer.on_datagram(Tick::new(100), t0);
        // Later datagrams of the same tick, and older ticks, do not move the phase.
        pacer.on_datagram(Tick::new(100), t0 + Duration::from_millis(2));
        pacer.on_datagram(Tick::new(99), t0 + Duration::from_millis(3));
        let period = Duration::from_secs(1) / 30;
        let lead = period / 2;
        assert_eq!(pacer.next_send_after(t0), Some(t0 + period - lead));
        // Far later: still on the same phase, the next slot after now.
        let now = t0 + period * 10 + Duration::from_millis(1);
        assert_eq!(pacer.next_send_after(now), Some(t0 + period * 11 - lead));
        // A newer tick re-anchors the phase.
        let t1 = t0 + Duration::from_millis(500);
        pacer.on_datagram(Tick::new(115), t1);
        assert_eq!(pacer.next_send_after(t1), Some(t1 + period - lead));
    }

    #[test]
    fn tick_zero_after_the_wrap_is_a_newer_tick() {
        let mut pacer = InputPacer::new(30);
        let t0 = Instant::now();
        let period = Duration::from_secs(1) / 30;
        pacer.on_datagram(Tick::new(u32::MAX), t0);
        let t1 = t0 + Duration::from_millis(10);
        pacer.on_datagram(Tick::ZERO, t1);
        assert_eq!(pacer.next_send_after(t1), Some(t1 + period - period / 2));
    }
}
