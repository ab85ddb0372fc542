//! [`SnapshotReceiver`]: everything a client does with the datagrams it reads — parse
//! them, hand their messages to the [`TickAssembler`], sample latency and snapshot age,
//! and keep an optional [`WorldView`] up to date.

use std::sync::Arc;

use tickcast_shared::chunk::{ChunkError, ServerDatagram, datagram_messages};
use tickcast_shared::schema::Schema;

use super::assemble::{ChunkOutcome, TickAssembler};
use super::completeness::View;
use super::delivery::Delivery;
use super::latency::{LatencyHistogram, age_us};
use super::staleness::EntityStaleness;
use crate::world::WorldView;

/// When a [`SnapshotReceiver`] updates its [`WorldView`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorldUpdate {
    /// Apply each chunk as it arrives (the freshest picture; during a tick it mixes
    /// entities of this tick and the last), and drop departed entities when a tick
    /// completes.
    PerChunk,
    /// Replace the view when a tick completes (a consistent picture of one tick;
    /// nothing changes while a tick misses a chunk).
    PerTick,
}

/// What one datagram from the server was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatagramOutcome {
    /// A datagram of valid chunks and directories, and what they meant for their ticks.
    Chunk(ChunkOutcome),
    /// A datagram with a message that is neither, or torn framing: counted and dropped.
    Malformed(ChunkError),
}

/// Everything a client does with the datagrams it reads: parse them (malformed ones
/// counted and dropped, never a panic), put ticks back together ([`TickAssembler`]),
/// measure chunk latency and snapshot age, and optionally keep a [`WorldView`]. Pure:
/// the caller passes the time in, so it is tested without a socket or a clock.
#[derive(Debug, Clone)]
pub struct SnapshotReceiver {
    assembler: TickAssembler,
    staleness: EntityStaleness,
    world: Option<WorldView>,
    world_update: WorldUpdate,
    latency: LatencyHistogram,
    /// Latency from [`SETTLED_AFTER_US`] after this session's first datagram on.
    settled_latency: LatencyHistogram,
    /// When this session's first datagram came, until [`SETTLED_AFTER_US`] has passed.
    first_datagram_us: Option<u32>,
    settled: bool,
    datagrams: u64,
    bytes: u64,
    malformed: u64,
}

/// How long after a session's first datagram its chunk latency counts as settled (see
/// [`SnapshotReceiver::settled_latency`]): 5 s, past a connect's transient (the
/// handshakes' own queue on a slow link, a congestion window finding its size).
pub const SETTLED_AFTER_US: u32 = 5_000_000;

impl SnapshotReceiver {
    /// A receiver that measures only (what a bot needs), for a client sent `view`
    /// ([`View::from_welcome`]) of a game laid out by `schema` (the one the server sent
    /// after its Welcome).
    pub fn new(view: View, schema: Arc<Schema>) -> Self {
        Self {
            assembler: TickAssembler::new(view, schema, false),
            staleness: EntityStaleness::default(),
            world: None,
            world_update: WorldUpdate::PerChunk,
            latency: LatencyHistogram::default(),
            settled_latency: LatencyHistogram::default(),
            first_datagram_us: None,
            settled: false,
            datagrams: 0,
            bytes: 0,
            malformed: 0,
        }
    }

    /// A receiver that also keeps a view of the world, updated as `update` says.
    pub fn with_world(
        view: View,
        schema: Arc<Schema>,
        world: WorldView,
        update: WorldUpdate,
    ) -> Self {
        Self {
            assembler: TickAssembler::new(view, schema.clone(), update == WorldUpdate::PerTick),
            world: Some(world),
            world_update: update,
            ..Self::new(view, schema)
        }
    }

    /// Starts over for a client sent `view` of a game laid out by `schema` (a new
    /// Welcome): the tick figures restart, the world view and the datagram counts are
    /// kept.
    pub fn set_view(&mut self, view: View, schema: Arc<Schema>) {
        let keep_records = self.world_update == WorldUpdate::PerTick && self.world.is_some();
        self.assembler = TickAssembler::new(view, schema, keep_records);
        // A new session's connect has its own transient.
        self.first_datagram_us = None;
        self.settled = false;
    }

    /// The schema the records are read with.
    pub fn schema(&self) -> &Arc<Schema> {
        self.assembler.schema()
    }

    /// Takes one datagram that arrived at `now_us` (the [`crate::now_us_wrapping`] clock):
    /// every message in it, in order. The outcome is `Completed` if a message completed a
    /// tick, else the last message's; `Malformed` (counted once) if any message or the
    /// datagram's framing was bad, after the good messages before it were taken.
    pub fn on_datagram(&mut self, bytes: &[u8], now_us: u32) -> DatagramOutcome {
        self.datagrams += 1;
        self.bytes += bytes.len() as u64;
        if !self.settled {
            let first = *self.first_datagram_us.get_or_insert(now_us);
            // Once settled, settled for the session (the clock wraps every 71 minutes).
            self.settled = now_us.wrapping_sub(first) >= SETTLED_AFTER_US;
        }
        let mut outcome = None;
        let mut sampled = false;
        for message in datagram_messages(bytes) {
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    self.malformed += 1;
                    return DatagramOutcome::Malformed(e);
                }
            };
            if !sampled {
                // One latency sample per datagram: its messages left together.
                sampled = true;
                if let Some(age) = age_us(now_us, message.server_time_us()) {
                    self.latency.record(age);
                    if self.settled {
                        self.settled_latency.record(age);
                    }
                }
            }
            let this = self.on_message(&message);
            if !matches!(outcome, Some(ChunkOutcome::Completed { .. })) {
                outcome = Some(this);
            }
        }
        DatagramOutcome::Chunk(outcome.unwrap_or(ChunkOutcome::Partial))
    }

    fn on_message(&mut self, message: &ServerDatagram<'_>) -> ChunkOutcome {
        let outcome = self.assembler.on_message(message);
        match (message, outcome) {
            (_, ChunkOutcome::Stale | ChunkOutcome::Inconsistent | ChunkOutcome::Duplicate) => {}
            (ServerDatagram::Chunk(chunk), _) => {
                self.staleness.on_chunk(chunk, self.assembler.schema())
            }
            _ => {}
        }
        if let ChunkOutcome::Completed { tick, .. } = outcome
            && self.assembler.delivery().last_complete_tick == Some(tick)
        {
            self.staleness.on_complete_tick(tick);
        }
        let Some(world) = &mut self.world else {
            return outcome;
        };
        match (self.world_update, outcome) {
            (_, ChunkOutcome::Stale | ChunkOutcome::Inconsistent) => {}
            (WorldUpdate::PerChunk, _) => {
                if let ServerDatagram::Chunk(chunk) = message {
                    world.apply_chunk(chunk, self.assembler.schema());
                }
                if let ChunkOutcome::Completed { tick, .. } = outcome {
                    world.complete_tick(tick);
                }
            }
            // Only the newest complete tick's records are kept: a late older tick
            // completing changes nothing.
            (WorldUpdate::PerTick, ChunkOutcome::Completed { tick, .. })
                if self.assembler.delivery().last_complete_tick == Some(tick) =>
            {
                world.replace_with_tick(tick, self.assembler.complete_records());
            }
            (WorldUpdate::PerTick, _) => {}
        }
        outcome
    }

    /// Age of the newest complete snapshot at `now_us`: how old the client's picture of
    /// the world is. `None` before the first complete tick.
    pub fn snapshot_age_us(&self, now_us: u32) -> Option<u64> {
        let then = self.assembler.delivery().last_complete_server_time_us?;
        age_us(now_us, then)
    }

    /// How old the client's state of each entity in its view is ([`EntityStaleness`]).
    pub fn staleness(&self) -> &EntityStaleness {
        &self.staleness
    }

    /// The tick assembler (delivery figures).
    pub fn assembler(&self) -> &TickAssembler {
        &self.assembler
    }

    /// Judges the ticks still in flight (see [`TickAssembler::finish`]).
    pub fn finish(&mut self, grace: u32) -> Delivery {
        self.assembler.finish(grace)
    }

    /// The world view, if this receiver keeps one.
    pub fn world(&self) -> Option<&WorldView> {
        self.world.as_ref()
    }

    /// Chunk latency (server encode to this receiver) samples.
    pub fn latency(&self) -> &LatencyHistogram {
        &self.latency
    }

    /// The chunk latency samples taken [`SETTLED_AFTER_US`] or more after each session's
    /// first datagram: what a player sees once the connect's transient is over, beside
    /// [`Self::latency`], which keeps every sample.
    pub fn settled_latency(&self) -> &LatencyHistogram {
        &self.settled_latency
    }

    /// Datagrams taken, valid or not.
    pub fn datagrams(&self) -> u64 {
        self.datagrams
    }

    /// Bytes of the datagrams taken.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Datagrams that were neither snapshot chunks nor directories.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::test_bytes::{
        arena_schema, chunk, datagram, directory, run_start, server_datagrams, tick_of_run,
    };
    use proptest::prelude::*;
    use tickcast_shared::Tick;

    /// Feeds `datagrams` to a receiver (its settings drawn from `now`) and checks that
    /// every datagram is counted and the world view stays within its bound.
    fn receive_all(datagrams: &[Vec<u8>], now: u32) -> Result<SnapshotReceiver, TestCaseError> {
        let update = if now.is_multiple_of(2) {
            WorldUpdate::PerChunk
        } else {
            WorldUpdate::PerTick
        };
        let view = if now.is_multiple_of(3) {
            View::ALL
        } else {
            View {
                entity: Some(1),
                radius: 1,
            }
        };
        let mut r =
            SnapshotReceiver::with_world(view, arena_schema(), WorldView::with_capacity(8), update);
        let mut chunks = 0u64;
        for bytes in datagrams {
            if let DatagramOutcome::Chunk(_) = r.on_datagram(bytes, now) {
                chunks += 1;
            }
        }
        prop_assert_eq!(r.datagrams(), datagrams.len() as u64);
        prop_assert_eq!(r.malformed() + chunks, datagrams.len() as u64);
        prop_assert!(r.world().unwrap().len() <= 8);
        Ok(r)
    }

    proptest! {
        /// Whatever the server sends of a run of ticks — starting anywhere in the tick
        /// space, across the wrap, in any order — the receiver neither panics nor loses
        /// count, and never delivers more ticks than it expected.
        #[test]
        fn any_datagrams_are_counted_and_never_panic(
            datagrams in run_start().prop_flat_map(|start| server_datagrams(tick_of_run(start))),
            now in any::<u32>(),
        ) {
            let mut r = receive_all(&datagrams, now)?;
            let d = r.finish(0);
            prop_assert!(d.complete <= d.expected(), "{:?}", d);
        }

        /// A confused server whose ticks jump anywhere, half the tick space included:
        /// nothing can order such ticks, so the delivery figures mean nothing, but the
        /// receiver still never panics and keeps its bounds.
        #[test]
        fn ticks_from_anywhere_never_panic_the_receiver(
            datagrams in server_datagrams(any::<u32>()),
            now in any::<u32>(),
        ) {
            let mut r = receive_all(&datagrams, now)?;
            r.finish(2);
        }
    }

    /// `slot_for` checked the wrap and then compared `tick > newest`, so tick 0 after
    /// `u32::MAX` never became the newest: the run stopped growing at the wrap and the
    /// per-tick world view froze.
    #[test]
    fn the_newest_tick_advances_across_the_wrap() {
        let mut r = SnapshotReceiver::with_world(
            View::ALL,
            arena_schema(),
            WorldView::default(),
            WorldUpdate::PerTick,
        );
        for tick in (u32::MAX - 2..=u32::MAX).chain(0..=3) {
            r.on_datagram(&datagram(&[&directory(tick, 1, 1, &[0])]), 0);
            r.on_datagram(&datagram(&[&chunk(tick, 0, 0, 1, &[1])]), 0);
        }
        let delivery = r.assembler().delivery();
        assert_eq!(delivery.last_tick, Some(Tick::new(3)));
        assert_eq!(delivery.last_complete_tick, Some(Tick::new(3)));
        assert_eq!(
            r.world().unwrap().newest_complete_tick(),
            Some(Tick::new(3))
        );
        // x carries the tick's low 16 bits: the view shows tick 3, not u32::MAX.
        assert_eq!(
            r.world()
                .unwrap()
                .get(1)
                .and_then(|e| tickcast_shared::chunk::EntityRecord::from_bytes(e.bytes()))
                .map(|e| e.x),
            Some(3)
        );
        // Ten ticks before the newest, on the far side of the wrap: too old to track.
        assert_eq!(
            r.on_datagram(&datagram(&[&directory(u32::MAX - 6, 1, 1, &[])]), 0),
            DatagramOutcome::Chunk(ChunkOutcome::Stale)
        );
        let d = r.finish(2);
        assert_eq!(
            (d.first_tick, d.last_tick),
            (Some(Tick::new(u32::MAX - 2)), Some(Tick::new(1)))
        );
        assert_eq!((d.complete, d.expected(), d.chunks_lost), (5, 5, 0));
    }

    #[test]
    fn the_world_updates_per_chunk_or_per_complete_tick() {
        let mut per_chunk = SnapshotReceiver::with_world(
            View::ALL,
            arena_schema(),
            WorldView::default(),
            WorldUpdate::PerChunk,
        );
        let mut per_tick = SnapshotReceiver::with_world(
            View::ALL,
            arena_schema(),
            WorldView::default(),
            WorldUpdate::PerTick,
        );
        let x_of = |r: &SnapshotReceiver, id| {
            r.world()
                .unwrap()
                .get(id)
                .and_then(|e| tickcast_shared::chunk::EntityRecord::from_bytes(e.bytes()))
                .map(|e| e.x)
        };
        for r in [&mut per_chunk, &mut per_tick] {
            r.on_datagram(&datagram(&[&directory(1, 2, 1, &[0, 1])]), 0);
            r.on_datagram(&datagram(&[&chunk(1, 0, 0, 1, &[1])]), 0);
            r.on_datagram(&datagram(&[&chunk(1, 1, 0, 1, &[2])]), 0);
            // Half of tick 2: entity 1 moved, entity 2's chunk is missing.
            r.on_datagram(&datagram(&[&directory(2, 2, 1, &[0, 1])]), 0);
            r.on_datagram(&datagram(&[&chunk(2, 0, 0, 1, &[1])]), 0);
        }
        assert_eq!(x_of(&per_chunk, 1), Some(2));
        assert_eq!(x_of(&per_tick, 1), Some(1));
        assert_eq!(x_of(&per_tick, 2), Some(1));
        for r in [&mut per_chunk, &mut per_tick] {
            // Tick 3 whole, without entity 2; then tick 2's late half.
            r.on_datagram(&datagram(&[&directory(3, 2, 1, &[0])]), 0);
            r.on_datagram(&datagram(&[&chunk(3, 0, 0, 1, &[1])]), 0);
            r.on_datagram(&datagram(&[&chunk(2, 1, 0, 1, &[2])]), 0);
            assert_eq!(x_of(r, 1), Some(3));
            assert_eq!(x_of(r, 2), None);
            assert_eq!(
                r.world().unwrap().newest_complete_tick(),
                Some(Tick::new(3))
            );
        }
    }

    #[test]
    fn settled_latency_starts_five_seconds_into_each_session() {
        let mut r = SnapshotReceiver::new(View::ALL, arena_schema());
        let one = |tick| datagram(&[&directory(tick, 1, 1, &[0])]);
        let first = 1_250;
        r.on_datagram(&one(5), first);
        r.on_datagram(&one(6), first + SETTLED_AFTER_US - 1);
        assert_eq!((r.latency().count(), r.settled_latency().count()), (2, 0));
        r.on_datagram(&one(7), first + SETTLED_AFTER_US);
        r.on_datagram(&one(8), first + SETTLED_AFTER_US + 1_000);
        assert_eq!((r.latency().count(), r.settled_latency().count()), (4, 2));
        // A new session (a reconnect's Welcome) has a connect of its own.
        r.set_view(View::ALL, arena_schema());
        let again = first + 2 * SETTLED_AFTER_US;
        r.on_datagram(&one(9), again);
        assert_eq!((r.latency().count(), r.settled_latency().count()), (5, 2));
        r.on_datagram(&one(10), again + SETTLED_AFTER_US);
        assert_eq!((r.latency().count(), r.settled_latency().count()), (6, 3));
    }

    #[test]
    fn the_receiver_counts_malformed_datagrams_and_measures_age() {
        let mut r = SnapshotReceiver::new(View::ALL, arena_schema());
        assert!(matches!(
            r.on_datagram(&[0x01, 0, 1], 0),
            DatagramOutcome::Malformed(_)
        ));
        assert!(matches!(
            r.on_datagram(&[], 0),
            DatagramOutcome::Malformed(_)
        ));
        assert_eq!(r.snapshot_age_us(1_500), None);
        assert_eq!(
            r.on_datagram(&datagram(&[&directory(5, 1, 1, &[0])]), 1_250),
            DatagramOutcome::Chunk(ChunkOutcome::Partial)
        );
        assert_eq!(
            r.on_datagram(&datagram(&[&chunk(5, 0, 0, 1, &[])]), 1_250),
            DatagramOutcome::Chunk(ChunkOutcome::Completed {
                tick: Tick::new(5),
                entities: 0
            })
        );
        // Two messages in one datagram: the tick completes, one latency sample.
        let both = datagram(&[&directory(6, 1, 1, &[0]), &chunk(6, 0, 0, 1, &[])]);
        assert!(matches!(
            r.on_datagram(&both, 1_250),
            DatagramOutcome::Chunk(ChunkOutcome::Completed { tick, .. }) if tick == Tick::new(6)
        ));
        // A valid message followed by a torn frame: the first counts, the datagram is
        // malformed.
        let torn = &datagram(&[&directory(7, 1, 1, &[]), &chunk(7, 0, 0, 1, &[])])[..20];
        assert!(matches!(
            r.on_datagram(torn, 1_250),
            DatagramOutcome::Malformed(ChunkError::TornFrame { .. })
        ));
        assert_eq!(
            r.assembler().delivery().last_complete_tick,
            Some(Tick::new(7))
        );
        assert_eq!(r.malformed(), 3);
        assert_eq!(r.datagrams(), 6);
        assert_eq!(r.latency().count(), 4);
        assert_eq!(r.snapshot_age_us(1_500), Some(500));
        // A server clock ahead of ours gives no sample rather than a huge one.
        assert_eq!(r.snapshot_age_us(999), None);
    }
}
