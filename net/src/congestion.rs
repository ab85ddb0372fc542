//! The congestion policy of the server's connections: Cubic, with a floor under its
//! window.
//!
//! The server's stream to a player is fixed-rate and application-limited: one view per
//! tick, about a packet, 20–40 KB/s. Stock Cubic reads every lost packet as congestion
//! and halves its window; on a path with random loss (Wi-Fi, mobile) the window sinks to
//! its minimum of two packets, the datagrams of a tick wait behind it, the send queue
//! fills, and the fan-out skips whole ticks (measured through `tickcast-netsim`: 20 %
//! loss cost 35 % of chunks). A stream that never filled the link was throttled like a
//! bulk download. With the floor, losing a packet costs that packet.
//!
//! The floor is the initial window ([`FLOOR_DEFAULT`], 12,000 bytes: RFC 9002 §7.2's
//! ten 1,200-byte packets), the amount any new QUIC or TCP connection sends before it
//! has heard anything from the path: no more than a connection starting afresh every
//! round trip. And it holds only while the path shows **no queue**: a loss with the
//! round trip at its minimum is noise (a radio, a bit error); a loss while the smoothed
//! round trip stands well above its minimum ([`is_queueing`]) is a bottleneck filling,
//! and then Cubic alone decides, as it would for any flow. So many players behind one
//! slow link (each connection with its floor) cannot hold a standing queue at it: once
//! the queue's delay shows, their windows shrink, the send buffers fill and the fan-out
//! skips ticks (`docs/PERFORMANCE.md`, the netsim table's capped row). Above the floor
//! Cubic governs as usual, and quinn paces whatever window it uses. A spectator's
//! whole-world stream is far above the floor and backs off under loss as before.
//!
//! Why not quinn's BBR (`quinn::congestion::BbrConfig`)? It ignores random loss by
//! design, but quinn's maintainers call their implementation experimental and
//! unmaintained, behind the BBR spec and little tested (quinn issue #2156); a floor under
//! the well-tested Cubic changes one number, and only where it matters.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics, CubicConfig};
use quinn_proto::RttEstimator;

/// Queueing delay beyond which the path counts as congested: the smoothed round trip
/// more than a quarter above its minimum plus this much. 20 ms: above the jitter of a
/// busy Wi-Fi hop and quinn's delayed-ACK noise left in the samples, well below the
/// delay of a bottleneck queue worth the name (a 64 KiB queue at 256 kbit/s is 2 s).
pub const QUEUEING_SLACK: Duration = Duration::from_millis(20);

/// Whether a path whose smoothed round trip is `smoothed` and whose least is `min`
/// shows a queue: `smoothed > min × 5/4 + QUEUEING_SLACK`.
pub fn is_queueing(smoothed: Duration, min: Duration) -> bool {
    smoothed > min + min / 4 + QUEUEING_SLACK
}

/// The default floor: the initial window for 1,200-byte packets, `min(10 × 1200,
/// max(2 × 1200, 14720))` = 12,000 bytes (RFC 9002 §7.2; quinn's default too).
pub const FLOOR_DEFAULT: u64 = 12_000;

/// Builds a [`FlooredController`] around Cubic for each connection.
#[derive(Debug, Clone)]
pub struct FlooredCubic {
    cubic: Arc<CubicConfig>,
    floor: u64,
}

impl FlooredCubic {
    /// Cubic at its defaults, its window never below `floor` bytes.
    pub fn new(floor: u64) -> Self {
        Self {
            cubic: Arc::new(CubicConfig::default()),
            floor,
        }
    }
}

impl ControllerFactory for FlooredCubic {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(FlooredController::new(
            self.cubic.clone().build(now, current_mtu),
            self.floor,
        ))
    }
}

/// Another controller whose window does not fall below a floor while the path shows no
/// queue ([`is_queueing`]). Everything but the window is the inner controller's.
pub struct FlooredController {
    inner: Box<dyn Controller>,
    floor: u64,
    queueing: bool,
}

impl FlooredController {
    /// `inner`, floored at `floor` bytes.
    pub fn new(inner: Box<dyn Controller>, floor: u64) -> Self {
        Self {
            inner,
            floor,
            queueing: false,
        }
    }

    /// Takes the path's round trip, smoothed and least, as each acknowledgement brings
    /// it: the floor holds only while they show no queue.
    pub fn on_rtt(&mut self, smoothed: Duration, min: Duration) {
        self.queueing = is_queueing(smoothed, min);
    }
}

impl Controller for FlooredController {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        self.on_rtt(rtt.get(), rtt.min());
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.inner
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        if self.queueing {
            self.inner.window()
        } else {
            self.inner.window().max(self.floor)
        }
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut metrics = self.inner.metrics();
        metrics.congestion_window = self.window();
        metrics
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(Self {
            inner: self.inner.clone_box(),
            floor: self.floor,
            queueing: self.queueing,
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window().max(self.floor)
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loses a packet every round trip for `rounds` round trips.
    fn lose_every_round(controller: &mut dyn Controller, start: Instant, rounds: u32) {
        for round in 1..=rounds {
            let now = start + Duration::from_millis(200) * round;
            controller.on_congestion_event(now, now - Duration::from_millis(100), false, 1200);
        }
    }

    #[test]
    fn random_loss_sinks_cubic_to_two_packets_but_not_below_the_floor() {
        let start = Instant::now();
        let mut cubic = Arc::new(CubicConfig::default()).build(start, 1200);
        lose_every_round(cubic.as_mut(), start, 20);
        assert_eq!(cubic.window(), 2 * 1200, "stock Cubic collapses");

        let mut floored = Arc::new(FlooredCubic::new(FLOOR_DEFAULT)).build(start, 1200);
        assert_eq!(floored.initial_window(), 12_000);
        lose_every_round(floored.as_mut(), start, 20);
        assert_eq!(floored.window(), FLOOR_DEFAULT);
        assert_eq!(floored.metrics().congestion_window, FLOOR_DEFAULT);
        assert_eq!(floored.clone_box().window(), FLOOR_DEFAULT);
    }

    #[test]
    fn a_path_with_a_standing_queue_gets_no_floor() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut floored = FlooredController::new(
            Arc::new(CubicConfig::default()).build(start, 1200),
            FLOOR_DEFAULT,
        );
        lose_every_round(&mut floored, start, 20);
        // 100 ms each way, a little jitter: loss without a queue keeps the floor.
        floored.on_rtt(ms(215), ms(200));
        assert_eq!(floored.window(), FLOOR_DEFAULT);
        // The same path behind a filling bottleneck: Cubic alone, two packets.
        floored.on_rtt(ms(400), ms(200));
        assert_eq!(floored.window(), 2_400);
        // The queue drains: the floor is back.
        floored.on_rtt(ms(230), ms(200));
        assert_eq!(floored.window(), FLOOR_DEFAULT);
        // On loopback the slack dominates: 20 ms of queue is congestion, 5 ms is not.
        assert!(!is_queueing(ms(5), Duration::from_micros(100)));
        assert!(is_queueing(ms(21), Duration::from_micros(100)));
    }

    #[test]
    fn above_the_floor_the_inner_controller_governs() {
        let start = Instant::now();
        let inner = Arc::new(CubicConfig::default()).build(start, 1200);
        let mut floored = FlooredController::new(inner, 2_400);
        assert_eq!(
            floored.window(),
            12_000,
            "Cubic's initial window is above the floor"
        );
        // One loss halves Cubic's window (×0.7): still above a 2,400-byte floor.
        lose_every_round(&mut floored, start, 1);
        assert_eq!(floored.window(), 8_400);
        // A floor of zero is stock Cubic.
        let mut zero =
            FlooredController::new(Arc::new(CubicConfig::default()).build(start, 1200), 0);
        lose_every_round(&mut zero, start, 20);
        assert_eq!(zero.window(), 2_400);
    }
}
