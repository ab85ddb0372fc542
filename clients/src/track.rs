//! Reassembling ticks from chunks and measuring delivery, loss, latency and snapshot
//! age. Pure code over bytes: no socket, no clock (times are passed in).

use tickcast_shared::chunk::{Chunk, ChunkError, EntityRecord, parse_chunk};

use crate::world::WorldView;

/// How many ticks can be in flight at once before the oldest is judged. At 30 Hz that
/// is a quarter of a second of reordering tolerance.
pub const TICKS_IN_FLIGHT: usize = 8;

#[derive(Debug, Clone, Default)]
struct Slot {
    tick: Option<u32>,
    chunk_count: u16,
    received: u16,
    seen: Vec<u64>,
    records: Vec<EntityRecord>,
    entities: usize,
    server_time_us: u32,
}

impl Slot {
    fn reset(&mut self, tick: u32, chunk_count: u16, server_time_us: u32) {
        self.tick = Some(tick);
        self.chunk_count = chunk_count;
        self.received = 0;
        self.seen.clear();
        self.seen.resize(usize::from(chunk_count).div_ceil(64), 0);
        self.records.clear();
        self.entities = 0;
        self.server_time_us = server_time_us;
    }
}

/// What a chunk meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// The chunk completed its tick; the tick had this many entities.
    Completed {
        /// The tick.
        tick: u32,
        /// Entities in it.
        entities: usize,
    },
    /// Part of a tick still missing chunks.
    Partial,
    /// A chunk already received (counted, ignored).
    Duplicate,
    /// A chunk of a tick too old to track any more (counted, ignored).
    Stale,
    /// A chunk whose count disagrees with the tick's other chunks (counted, ignored).
    Inconsistent,
}

/// Delivery figures of one client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// The first tick a chunk arrived for.
    pub first_tick: Option<u32>,
    /// The newest tick a chunk arrived for.
    pub last_tick: Option<u32>,
    /// Ticks received whole.
    pub complete: u64,
    /// Chunks received (duplicates and stale ones excluded).
    pub chunks_received: u64,
    /// Chunks of judged ticks that never arrived (whole missing ticks counted at the
    /// chunk count of the tick before them).
    pub chunks_lost: u64,
    /// Duplicate, stale or inconsistent chunks.
    pub chunks_ignored: u64,
    /// Entities in the newest complete tick.
    pub entities_last_snapshot: usize,
    /// The newest complete tick.
    pub last_complete_tick: Option<u32>,
    /// The server's encode time of the newest complete tick (µs, wrapping; the chunk
    /// header's `server_time_us`).
    pub last_complete_server_time_us: Option<u32>,
}

impl Delivery {
    /// Ticks the server published between the first and the last tick seen.
    pub fn expected(&self) -> u64 {
        match (self.first_tick, self.last_tick) {
            (Some(first), Some(last)) => u64::from(last.wrapping_sub(first)) + 1,
            _ => 0,
        }
    }

    /// Complete ticks over expected ticks (1.0 when nothing was expected).
    pub fn ratio(&self) -> f64 {
        let expected = self.expected();
        if expected == 0 {
            return 0.0;
        }
        self.complete as f64 / expected as f64
    }
}

/// Puts a client's chunks back together into ticks and keeps its delivery figures.
#[derive(Debug, Clone)]
pub struct TickAssembler {
    slots: Vec<Slot>,
    keep_records: bool,
    delivery: Delivery,
    last_chunk_count: u16,
    complete_records: Vec<EntityRecord>,
    ticks_seen: u64,
    judged_losses: u64,
}

impl TickAssembler {
    /// An assembler; with `keep_records` it keeps the newest complete tick's records.
    pub fn new(keep_records: bool) -> Self {
        Self {
            slots: vec![Slot::default(); TICKS_IN_FLIGHT],
            keep_records,
            delivery: Delivery::default(),
            last_chunk_count: 1,
            complete_records: Vec::new(),
            ticks_seen: 0,
            judged_losses: 0,
        }
    }

    /// The figures so far.
    pub fn delivery(&self) -> Delivery {
        let mut delivery = self.delivery;
        // Ticks no chunk arrived for count whole, at the chunk count last seen.
        let never_seen = delivery.expected().saturating_sub(self.ticks_seen);
        delivery.chunks_lost = self.judged_losses + never_seen * u64::from(self.last_chunk_count);
        delivery
    }

    /// Records of the newest complete tick (empty unless built with `keep_records`).
    pub fn complete_records(&self) -> &[EntityRecord] {
        &self.complete_records
    }

    /// Takes one parsed chunk.
    pub fn on_chunk(&mut self, chunk: &Chunk<'_>) -> ChunkOutcome {
        let header = chunk.header;
        let tick = header.tick;
        let newest = self.delivery.last_tick;
        if let Some(newest) = newest
            && newest.wrapping_sub(tick) < u32::MAX / 2
            && newest - tick >= TICKS_IN_FLIGHT as u32
        {
            self.delivery.chunks_ignored += 1;
            return ChunkOutcome::Stale;
        }
        // A reordered start can bring a tick older than the first one seen: the
        // expected range starts at the oldest, so delivery never exceeds 1.
        if self
            .delivery
            .first_tick
            .is_none_or(|first| first.wrapping_sub(tick) < u32::MAX / 2 && first != tick)
        {
            self.delivery.first_tick = Some(tick);
        }
        if newest.is_none_or(|n| tick.wrapping_sub(n) < u32::MAX / 2 && tick > n) {
            self.delivery.last_tick = Some(tick);
        }

        let index = tick as usize % TICKS_IN_FLIGHT;
        if self.slots[index].tick != Some(tick) {
            self.judge(index);
            self.slots[index].reset(tick, header.chunk_count, header.server_time_us);
            self.ticks_seen += 1;
        }
        let slot = &mut self.slots[index];
        if slot.chunk_count != header.chunk_count {
            self.delivery.chunks_ignored += 1;
            return ChunkOutcome::Inconsistent;
        }
        let (word, bit) = (
            usize::from(header.chunk_index) / 64,
            header.chunk_index % 64,
        );
        if slot.seen[word] & (1 << bit) != 0 {
            self.delivery.chunks_ignored += 1;
            return ChunkOutcome::Duplicate;
        }
        slot.seen[word] |= 1 << bit;
        slot.received += 1;
        slot.entities += usize::from(header.record_count);
        self.delivery.chunks_received += 1;
        self.last_chunk_count = header.chunk_count;
        if self.keep_records {
            slot.records.extend(chunk.records());
        }
        if slot.received < slot.chunk_count {
            return ChunkOutcome::Partial;
        }
        self.delivery.complete += 1;
        let entities = slot.entities;
        if self.delivery.last_complete_tick.is_none_or(|t| tick > t) {
            self.delivery.last_complete_tick = Some(tick);
            self.delivery.entities_last_snapshot = entities;
            self.delivery.last_complete_server_time_us = Some(slot.server_time_us);
            if self.keep_records {
                std::mem::swap(&mut self.complete_records, &mut slot.records);
            }
        }
        ChunkOutcome::Completed { tick, entities }
    }

    /// Judges every tick still in flight, except the newest `grace` ticks (which may
    /// still be arriving), then stops counting them: call once at the end of a run.
    pub fn finish(&mut self, grace: u32) -> Delivery {
        let Some(newest) = self.delivery.last_tick else {
            return self.delivery;
        };
        let cutoff = newest.saturating_sub(grace);
        for index in 0..self.slots.len() {
            match self.slots[index].tick {
                Some(tick) if tick <= cutoff => self.judge(index),
                Some(_) => {
                    // In flight: drop it from the figures entirely.
                    let slot = &self.slots[index];
                    if slot.received == slot.chunk_count {
                        self.delivery.complete -= 1;
                    }
                    self.delivery.chunks_received -= u64::from(slot.received);
                    self.ticks_seen -= 1;
                    self.slots[index].tick = None;
                }
                None => {}
            }
        }
        if let Some(first) = self.delivery.first_tick {
            self.delivery.last_tick = Some(cutoff.max(first));
        }
        self.delivery()
    }

    fn judge(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        if slot.tick.take().is_some() {
            self.judged_losses += u64::from(slot.chunk_count - slot.received);
        }
    }
}

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
    /// A valid snapshot chunk, and what it meant for its tick.
    Chunk(ChunkOutcome),
    /// Bytes that are not a snapshot chunk: counted and dropped.
    Malformed(ChunkError),
}

/// Everything a client does with the datagrams it reads: parse them (malformed ones
/// counted and dropped, never a panic), put ticks back together ([`TickAssembler`]),
/// measure chunk latency and snapshot age, and optionally keep a [`WorldView`]. Pure:
/// the caller passes the time in, so it is tested without a socket or a clock.
#[derive(Debug, Clone)]
pub struct SnapshotReceiver {
    assembler: TickAssembler,
    world: Option<WorldView>,
    world_update: WorldUpdate,
    latency: LatencyHistogram,
    datagrams: u64,
    bytes: u64,
    malformed: u64,
}

impl SnapshotReceiver {
    /// A receiver that measures only (what a bot needs).
    pub fn new() -> Self {
        Self {
            assembler: TickAssembler::new(false),
            world: None,
            world_update: WorldUpdate::PerChunk,
            latency: LatencyHistogram::default(),
            datagrams: 0,
            bytes: 0,
            malformed: 0,
        }
    }

    /// A receiver that also keeps a view of the world, updated as `update` says.
    pub fn with_world(world: WorldView, update: WorldUpdate) -> Self {
        Self {
            assembler: TickAssembler::new(update == WorldUpdate::PerTick),
            world: Some(world),
            world_update: update,
            ..Self::new()
        }
    }

    /// Takes one datagram that arrived at `now_us` (the [`crate::now_us_wrapping`] clock).
    pub fn on_datagram(&mut self, bytes: &[u8], now_us: u32) -> DatagramOutcome {
        self.datagrams += 1;
        self.bytes += bytes.len() as u64;
        let chunk = match parse_chunk(bytes) {
            Ok(chunk) => chunk,
            Err(e) => {
                self.malformed += 1;
                return DatagramOutcome::Malformed(e);
            }
        };
        if let Some(age) = age_us(now_us, chunk.header.server_time_us) {
            self.latency.record(age);
        }
        let outcome = self.assembler.on_chunk(&chunk);
        let Some(world) = &mut self.world else {
            return DatagramOutcome::Chunk(outcome);
        };
        match (self.world_update, outcome) {
            (_, ChunkOutcome::Stale | ChunkOutcome::Inconsistent) => {}
            (WorldUpdate::PerChunk, _) => {
                world.apply_chunk(&chunk);
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
        DatagramOutcome::Chunk(outcome)
    }

    /// Age of the newest complete snapshot at `now_us`: how old the client's picture of
    /// the world is. `None` before the first complete tick.
    pub fn snapshot_age_us(&self, now_us: u32) -> Option<u64> {
        let then = self.assembler.delivery().last_complete_server_time_us?;
        age_us(now_us, then)
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

    /// Datagrams taken, valid or not.
    pub fn datagrams(&self) -> u64 {
        self.datagrams
    }

    /// Bytes of the datagrams taken.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Datagrams that were not valid snapshot chunks.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }
}

impl Default for SnapshotReceiver {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickcast_shared::chunk::{
        CHUNK_HEADER_LEN, ChunkHeader, ENTITY_RECORD_LEN, parse_chunk, write_header, write_record,
    };

    fn chunk_bytes(tick: u32, index: u16, count: u16) -> Vec<u8> {
        let mut bytes = vec![0u8; CHUNK_HEADER_LEN];
        let header = ChunkHeader {
            tick,
            chunk_index: index,
            chunk_count: count,
            ..Default::default()
        };
        write_header(&header, (&mut bytes[..]).try_into().unwrap());
        bytes
    }

    fn feed(assembler: &mut TickAssembler, tick: u32, index: u16, count: u16) -> ChunkOutcome {
        let bytes = chunk_bytes(tick, index, count);
        assembler.on_chunk(&parse_chunk(&bytes).unwrap())
    }

    #[test]
    fn whole_ticks_complete_and_missing_chunks_count_as_lost() {
        let mut a = TickAssembler::new(false);
        assert_eq!(feed(&mut a, 10, 0, 2), ChunkOutcome::Partial);
        assert!(matches!(
            feed(&mut a, 10, 1, 2),
            ChunkOutcome::Completed { tick: 10, .. }
        ));
        assert_eq!(feed(&mut a, 10, 1, 2), ChunkOutcome::Duplicate);
        feed(&mut a, 11, 0, 2); // tick 11 loses chunk 1
        for tick in 12..30 {
            feed(&mut a, tick, 0, 2);
            feed(&mut a, tick, 1, 2);
        }
        let d = a.finish(0);
        assert_eq!(d.expected(), 20);
        assert_eq!(d.complete, 19);
        assert_eq!(d.chunks_lost, 1);
        assert_eq!(d.chunks_ignored, 1);
    }

    #[test]
    fn a_gap_of_whole_ticks_is_undelivered_and_lost() {
        let mut a = TickAssembler::new(false);
        feed(&mut a, 1, 0, 1);
        feed(&mut a, 50, 0, 1);
        let d = a.finish(0);
        assert_eq!(d.expected(), 50);
        assert_eq!(d.complete, 2);
        assert_eq!(d.chunks_lost, 48);
        assert_eq!(feed(&mut a, 2, 0, 1), ChunkOutcome::Stale);
    }

    #[test]
    fn a_reordered_start_never_delivers_more_than_expected() {
        let mut a = TickAssembler::new(false);
        feed(&mut a, 10, 0, 1);
        feed(&mut a, 8, 0, 1); // older than the first tick seen, still in flight
        feed(&mut a, 9, 0, 1);
        let d = a.finish(0);
        assert_eq!((d.complete, d.expected()), (3, 3));
    }

    #[test]
    fn finish_leaves_the_newest_ticks_out() {
        let mut a = TickAssembler::new(false);
        for tick in 0..10 {
            feed(&mut a, tick, 0, 1);
        }
        feed(&mut a, 10, 0, 2); // in flight when the run ends
        let d = a.finish(1);
        assert_eq!(d.expected(), 10);
        assert_eq!(d.complete, 10);
        assert_eq!(d.chunks_lost, 0);
    }

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

    fn valid_chunk() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        (
            0u32..40,
            1u16..6,
            0u16..6,
            proptest::collection::vec(any::<[u8; 14]>(), 0..4),
        )
            .prop_map(|(tick, count, index, records)| {
                let mut bytes = vec![0u8; CHUNK_HEADER_LEN];
                let header = ChunkHeader {
                    tick,
                    chunk_index: index % count,
                    chunk_count: count,
                    record_count: records.len() as u16,
                    ..Default::default()
                };
                write_header(&header, (&mut bytes[..]).try_into().unwrap());
                bytes.extend(records.iter().flatten());
                bytes
            })
    }

    proptest::proptest! {
        /// Whatever the server sends, in whatever order, the receiver neither panics
        /// nor loses count: every datagram is a chunk or counted as malformed, and the
        /// world view stays within its bound.
        #[test]
        fn any_datagrams_are_counted_and_never_panic(
            datagrams in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
                    valid_chunk(),
                ],
                0..60,
            ),
            now in proptest::prelude::any::<u32>(),
        ) {
            let update = if now % 2 == 0 { WorldUpdate::PerChunk } else { WorldUpdate::PerTick };
            let mut r = SnapshotReceiver::with_world(WorldView::with_capacity(8), update);
            let mut chunks = 0u64;
            for bytes in &datagrams {
                if let DatagramOutcome::Chunk(_) = r.on_datagram(bytes, now) {
                    chunks += 1;
                }
            }
            proptest::prop_assert_eq!(r.datagrams(), datagrams.len() as u64);
            proptest::prop_assert_eq!(r.malformed() + chunks, datagrams.len() as u64);
            proptest::prop_assert!(r.world().unwrap().len() <= 8);
            let d = r.finish(0);
            proptest::prop_assert!(d.complete <= d.expected(), "{:?}", d);
        }
    }

    fn chunk_with(tick: u32, index: u16, count: u16, net_ids: &[u32]) -> Vec<u8> {
        let mut bytes = vec![0u8; CHUNK_HEADER_LEN + net_ids.len() * ENTITY_RECORD_LEN];
        let header = ChunkHeader {
            tick,
            chunk_index: index,
            chunk_count: count,
            record_count: net_ids.len() as u16,
            ..Default::default()
        };
        let (head, body) = bytes.split_at_mut(CHUNK_HEADER_LEN);
        write_header(&header, head.try_into().unwrap());
        for (id, slot) in net_ids.iter().zip(body.chunks_exact_mut(ENTITY_RECORD_LEN)) {
            let record = EntityRecord {
                net_id: *id,
                x: tick as u16,
                ..Default::default()
            };
            write_record(&record, slot.try_into().unwrap());
        }
        bytes
    }

    #[test]
    fn the_world_updates_per_chunk_or_per_complete_tick() {
        let mut per_chunk =
            SnapshotReceiver::with_world(WorldView::default(), WorldUpdate::PerChunk);
        let mut per_tick = SnapshotReceiver::with_world(WorldView::default(), WorldUpdate::PerTick);
        let x_of = |r: &SnapshotReceiver, id| r.world().unwrap().get(id).map(|e| e.x);
        for r in [&mut per_chunk, &mut per_tick] {
            r.on_datagram(&chunk_with(1, 0, 2, &[1]), 0);
            r.on_datagram(&chunk_with(1, 1, 2, &[2]), 0);
            // Half of tick 2: entity 1 moved, entity 2's chunk is missing.
            r.on_datagram(&chunk_with(2, 0, 2, &[1]), 0);
        }
        assert_eq!(x_of(&per_chunk, 1), Some(2));
        assert_eq!(x_of(&per_tick, 1), Some(1));
        assert_eq!(x_of(&per_tick, 2), Some(1));
        for r in [&mut per_chunk, &mut per_tick] {
            // Tick 3 whole, without entity 2; then tick 2's late half.
            r.on_datagram(&chunk_with(3, 0, 1, &[1]), 0);
            r.on_datagram(&chunk_with(2, 1, 2, &[2]), 0);
            assert_eq!(x_of(r, 1), Some(3));
            assert_eq!(x_of(r, 2), None);
            assert_eq!(r.world().unwrap().newest_complete_tick(), Some(3));
        }
    }

    #[test]
    fn the_receiver_counts_malformed_datagrams_and_measures_age() {
        let mut r = SnapshotReceiver::new();
        assert!(matches!(
            r.on_datagram(&[0x01, 0, 1], 0),
            DatagramOutcome::Malformed(_)
        ));
        assert!(matches!(
            r.on_datagram(&[], 0),
            DatagramOutcome::Malformed(_)
        ));
        let mut bytes = vec![0u8; CHUNK_HEADER_LEN];
        let header = ChunkHeader {
            tick: 5,
            chunk_index: 0,
            chunk_count: 1,
            server_time_us: 1_000,
            ..Default::default()
        };
        write_header(&header, (&mut bytes[..]).try_into().unwrap());
        assert_eq!(r.snapshot_age_us(1_500), None);
        assert_eq!(
            r.on_datagram(&bytes, 1_250),
            DatagramOutcome::Chunk(ChunkOutcome::Completed {
                tick: 5,
                entities: 0
            })
        );
        assert_eq!(r.malformed(), 2);
        assert_eq!(r.datagrams(), 3);
        assert_eq!(r.latency().count(), 1);
        assert_eq!(r.snapshot_age_us(1_500), Some(500));
        // A server clock ahead of ours gives no sample rather than a huge one.
        assert_eq!(r.snapshot_age_us(999), None);
    }
}
