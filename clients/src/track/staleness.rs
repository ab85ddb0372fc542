//! How old what a client knows of each entity in its view is.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};

use tickcast_shared::Tick;
use tickcast_shared::chunk::Chunk;
use tickcast_shared::schema::Schema;

use super::latency::{LatencyHistogram, age_us};

/// Hashing of `net_id`s: the id xor a per-map random key through two folded multiplies
/// (128-bit product, high half xor low half). SipHash, the standard map's default, was
/// 6 % of a bots process holding a thousand clients, for keys that are one `u32` each;
/// the random key keeps a server from choosing ids that collide, and the map's bound
/// caps what collisions could cost anyway.
#[derive(Debug, Clone)]
struct IdHashing {
    key: u64,
}

impl IdHashing {
    fn new() -> Self {
        // Drawn once per map from the standard library's random hash keys.
        Self {
            key: RandomState::new().hash_one(0x7469_636b_u64),
        }
    }
}

impl BuildHasher for IdHashing {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher {
            key: self.key,
            state: 0,
        }
    }
}

#[derive(Debug)]
struct IdHasher {
    key: u64,
    state: u64,
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only `u32` keys are hashed here; any other input still hashes, byte by byte.
        for &byte in bytes {
            self.write_u32(u32::from(byte));
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.state = (self.state.rotate_left(32) ^ u64::from(id)).wrapping_add(1);
    }

    fn finish(&self) -> u64 {
        // Two folded multiplies (as foldhash does): the first spreads the keyed id over
        // both halves, the second mixes them into every bit.
        let fold = |a: u64, b: u64| {
            let product = u128::from(a) * u128::from(b);
            (product as u64) ^ ((product >> 64) as u64)
        };
        let once = fold(self.state ^ self.key, 0x5851_f42d_4c95_7f2d);
        fold(once ^ self.key.rotate_left(29), 0x9e37_79b9_7f4a_7c15)
    }
}

/// How old what a client knows of each entity in its view is: for every entity, the
/// encode time of the newest chunk that carried it. When a chunk is lost, its entities
/// keep their older state: this is the age a player sees on screen, where delivery
/// ratios count whole ticks. An entity is forgotten when a tick completes without it
/// (it left the view, or the world). Bounded: at most `capacity` entities (more are
/// refused, counted), so a server inventing ids cannot grow a client.
#[derive(Debug, Clone)]
pub struct EntityStaleness {
    /// `net_id` → (tick, `server_time_us`) of the newest chunk that carried it.
    newest: HashMap<u32, (Tick, u32), IdHashing>,
    capacity: usize,
    refused: u64,
}

impl Default for EntityStaleness {
    fn default() -> Self {
        Self::with_capacity(crate::world::DEFAULT_WORLD_CAPACITY)
    }
}

impl EntityStaleness {
    /// A tracker of at most `capacity` entities.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            newest: HashMap::with_hasher(IdHashing::new()),
            capacity,
            refused: 0,
        }
    }

    /// Notes every entity of a chunk, its records read with the game's `schema` (a chunk
    /// they do not fit notes nothing).
    pub fn on_chunk(&mut self, chunk: &Chunk<'_>, schema: &Schema) {
        let (tick, at) = (chunk.header.tick, chunk.header.server_time_us);
        let Ok(records) = chunk.records_with(schema) else {
            return;
        };
        for net_id in records.flatten().map(|r| r.net_id()) {
            let full = self.newest.len() >= self.capacity;
            match self.newest.get_mut(&net_id) {
                Some(seen) => {
                    if tick.is_after(seen.0) {
                        *seen = (tick, at);
                    }
                }
                None if full => self.refused += 1,
                None => {
                    self.newest.insert(net_id, (tick, at));
                }
            }
        }
    }

    /// `tick` is complete and the newest complete tick: every entity in the view came
    /// with it, so one last seen before it is gone.
    pub fn on_complete_tick(&mut self, tick: Tick) {
        self.newest.retain(|_, seen| !tick.is_after(seen.0));
    }

    /// Records the age at `now_us` of every entity held, one sample each.
    pub fn sample(&self, now_us: u32, into: &mut LatencyHistogram) {
        for &(_, at) in self.newest.values() {
            if let Some(age) = age_us(now_us, at) {
                into.record(age);
            }
        }
    }

    /// Entities held.
    pub fn len(&self) -> usize {
        self.newest.len()
    }

    /// Whether no entity is held.
    pub fn is_empty(&self) -> bool {
        self.newest.is_empty()
    }

    /// Entities refused because the tracker was full.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_bytes::{arena_schema, chunk, datagram, directory};
    use super::super::{SnapshotReceiver, View};
    use super::*;

    #[test]
    fn consecutive_ids_spread_over_the_low_and_the_high_bits_of_their_hashes() {
        // hashbrown picks the bucket with the low bits and tags it with the top 7.
        let hashing = IdHashing::new();
        let hashes: Vec<u64> = (0..64u32).map(|id| hashing.hash_one(id)).collect();
        let low: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 63).collect();
        let high: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(
            low.len() >= 24 && high.len() >= 24,
            "{} {}",
            low.len(),
            high.len()
        );
    }
    use tickcast_shared::chunk::ServerDatagram;

    /// `message` with its `server_time_us` (bytes 6..10 of a directory, 14..18 of a
    /// chunk) set to `at`.
    fn stamped(mut message: Vec<u8>, at: u32) -> Vec<u8> {
        let offset = if message[0] == 0x03 { 6 } else { 14 };
        message[offset..offset + 4].copy_from_slice(&at.to_le_bytes());
        message
    }

    #[test]
    fn staleness_is_the_age_of_each_entitys_newest_chunk_and_forgets_who_left() {
        let mut r = SnapshotReceiver::new(View::ALL, arena_schema());
        // Tick 1, whole: entity 1 in cell 0, entity 2 in cell 1, encoded at 1,000 µs.
        for message in [
            directory(1, 2, 1, &[0, 1]),
            chunk(1, 0, 0, 1, &[1]),
            chunk(1, 1, 0, 1, &[2]),
        ] {
            r.on_datagram(&datagram(&[&stamped(message, 1_000)]), 1_100);
        }
        assert_eq!(r.assembler().delivery().complete, 1);
        // Tick 2 at 2,000 µs: cell 1's chunk is lost, so entity 2 is still tick 1's.
        for message in [directory(2, 2, 1, &[0, 1]), chunk(2, 0, 0, 1, &[1])] {
            r.on_datagram(&datagram(&[&stamped(message, 2_000)]), 2_100);
        }
        let mut ages = LatencyHistogram::default();
        r.staleness().sample(2_500, &mut ages);
        assert_eq!(ages.count(), 2);
        // 500 µs and 1,500 µs (each as its bucket's upper edge).
        assert_eq!(ages.quantile_ms(0.5), Some(0.512));
        assert_eq!(ages.quantile_ms(1.0), Some(1.536));
        // A late copy of tick 1 does not make entity 1 older again.
        r.on_datagram(
            &datagram(&[&stamped(chunk(1, 0, 0, 1, &[1]), 1_000)]),
            2_600,
        );
        let mut again = LatencyHistogram::default();
        r.staleness().sample(2_500, &mut again);
        assert_eq!(again.quantile_ms(0.5), Some(0.512));
        // Tick 3 is whole without entity 2: it left the view, and is forgotten.
        for message in [directory(3, 2, 1, &[0]), chunk(3, 0, 0, 1, &[1])] {
            r.on_datagram(&datagram(&[&stamped(message, 3_000)]), 3_100);
        }
        assert_eq!(
            r.assembler().delivery().last_complete_tick,
            Some(Tick::new(3))
        );
        assert_eq!(r.staleness().len(), 1);
    }

    #[test]
    fn a_staleness_tracker_holds_at_most_its_capacity() {
        let mut tracker = EntityStaleness::with_capacity(2);
        let bytes = chunk(1, 0, 0, 1, &[1, 2, 3]);
        let ServerDatagram::Chunk(parsed) = tickcast_shared::chunk::parse_datagram(&bytes).unwrap()
        else {
            panic!("a chunk")
        };
        tracker.on_chunk(&parsed, &arena_schema());
        assert_eq!((tracker.len(), tracker.refused()), (2, 1));
    }
}
