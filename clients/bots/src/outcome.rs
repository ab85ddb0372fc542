//! What one bot saw over the whole run ([`ClientOutcome`]), its delivery summed over
//! its sessions ([`DeliveryTotals`]). The swarm fills these in; the report reads them.

use std::time::Duration;

use tickcast_clients::track::{Delivery, LatencyHistogram};
use tickcast_shared::Tick;

use crate::behaviour::Behaviour;

/// Delivery figures of one client summed over its sessions (a churning client has
/// several).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryTotals {
    /// Ticks expected: for each session, from its first to its last tick seen.
    pub expected: u64,
    /// Ticks received whole.
    pub complete: u64,
    /// Chunks received.
    pub chunks_received: u64,
    /// Chunks of expected ticks that never arrived.
    pub chunks_lost: u64,
    /// Entities in the newest complete tick.
    pub entities_last_snapshot: usize,
    /// The newest complete tick.
    pub last_complete_tick: Option<Tick>,
}

impl DeliveryTotals {
    /// Adds one session's figures.
    pub fn add(&mut self, delivery: &Delivery) {
        self.expected += delivery.expected();
        self.complete += delivery.complete;
        self.chunks_received += delivery.chunks_received;
        self.chunks_lost += delivery.chunks_lost;
        if delivery.last_complete_tick.is_some() {
            self.last_complete_tick = delivery.last_complete_tick;
            self.entities_last_snapshot = delivery.entities_last_snapshot;
        }
    }

    /// Counts the ticks after the session's last seen tick up to `server_tick` (the
    /// server's tick when the session ended) as expected and undelivered: for a client
    /// that stopped reading, whose last seen tick is not the server's.
    pub fn add_unseen_tail(&mut self, delivery: &Delivery, server_tick: Tick) {
        if let Some(tail) = delivery.last_tick.and_then(|last| server_tick.since(last)) {
            self.expected += u64::from(tail);
        }
    }

    /// Complete over expected ticks; 0 when nothing was expected.
    pub fn ratio(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.complete as f64 / self.expected as f64
        }
    }
}

/// What one bot saw over the whole run.
#[derive(Debug, Clone)]
pub struct ClientOutcome {
    /// Its behaviour.
    pub behaviour: Behaviour,
    /// Whether it was admitted at least once.
    pub connected: bool,
    /// The tick rate from its Welcome.
    pub tick_rate: u16,
    /// Delivery over its sessions.
    pub delivery: DeliveryTotals,
    /// Chunk latency: server encode to read by the bot, per chunk.
    pub latency: LatencyHistogram,
    /// The same from each session's 5th second on
    /// (`tickcast_clients::track::SETTLED_AFTER_US`).
    pub settled_latency: LatencyHistogram,
    /// Age of the newest complete snapshot, sampled once per tick.
    pub snapshot_age: LatencyHistogram,
    /// Age of the newest state of each entity in view, sampled once per tick per entity
    /// (`tickcast_clients::track::EntityStaleness`).
    pub staleness: LatencyHistogram,
    /// QUIC's RTT estimate, sampled once a second.
    pub rtt: LatencyHistogram,
    /// Time from starting a connect to the Welcome, per session.
    pub connect_time: LatencyHistogram,
    /// Bytes of datagrams read.
    pub bytes_in: u64,
    /// UDP bytes received, QUIC overhead included (quinn's stats).
    pub udp_bytes_in: u64,
    /// UDP bytes sent, QUIC overhead included.
    pub udp_bytes_out: u64,
    /// UDP packets received (a packet may carry several QUIC datagrams and ACKs).
    pub udp_packets_in: u64,
    /// UDP packets sent (inputs, ACKs, keep-alives).
    pub udp_packets_out: u64,
    /// Datagrams that were not valid chunks.
    pub malformed_chunks: u64,
    /// Why the server's side ended its connection, if it did.
    pub disconnected: Option<String>,
    /// Connect failures and other errors, as keys (`connect:rejected:server_full`).
    pub errors: Vec<String>,
    /// Time connected, over all sessions.
    pub played_for: Duration,
    /// Reconnects (churn).
    pub reconnects: u32,
}

impl ClientOutcome {
    /// An outcome with nothing seen yet.
    pub fn new(behaviour: Behaviour) -> Self {
        Self {
            behaviour,
            connected: false,
            tick_rate: 0,
            delivery: DeliveryTotals::default(),
            latency: LatencyHistogram::default(),
            settled_latency: LatencyHistogram::default(),
            snapshot_age: LatencyHistogram::default(),
            staleness: LatencyHistogram::default(),
            rtt: LatencyHistogram::default(),
            connect_time: LatencyHistogram::default(),
            bytes_in: 0,
            udp_bytes_in: 0,
            udp_bytes_out: 0,
            udp_packets_in: 0,
            udp_packets_out: 0,
            malformed_chunks: 0,
            disconnected: None,
            errors: Vec::new(),
            played_for: Duration::ZERO,
            reconnects: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_after_a_stalled_clients_last_one_are_undelivered() {
        let mut totals = DeliveryTotals::default();
        let delivery = Delivery {
            first_tick: Some(Tick::new(100)),
            last_tick: Some(Tick::new(129)),
            complete: 30,
            ..Delivery::default()
        };
        totals.add(&delivery);
        assert_eq!(totals.ratio(), 1.0);
        totals.add_unseen_tail(&delivery, Tick::new(399));
        assert_eq!(totals.expected, 300);
        assert_eq!(totals.ratio(), 0.1);
        // A server tick estimate behind the last tick seen adds nothing.
        totals.add_unseen_tail(&delivery, Tick::new(120));
        assert_eq!(totals.expected, 300);
    }
}
