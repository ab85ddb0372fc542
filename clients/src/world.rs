//! A client's local view of the world: `net_id` → newest record, updated per chunk or
//! per complete tick. Records are kept as bytes ([`Record`]) and read through the game's
//! schema, so the view holds any game without its types. Pure code; bounded (an id beyond the capacity is refused and
//! counted, so a server that invents ids cannot grow a client without limit).

use std::collections::HashMap;

use tickcast_shared::Tick;
use tickcast_shared::chunk::Chunk;
use tickcast_shared::schema::{Record, Schema};

/// Default capacity: far above any world the server admits today (2,000 players plus
/// NPCs and projectiles), small enough that a hostile server costs at most ~2 MB.
pub const DEFAULT_WORLD_CAPACITY: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Seen {
    record: Record,
    tick: Tick,
}

/// The newest known record of every entity.
///
/// Two ways to feed it: [`WorldView::apply_chunk`] as chunks arrive, then
/// [`WorldView::complete_tick`] when a tick is whole (entities not in it are gone); or
/// [`WorldView::replace_with_tick`] with a whole tick's records at once.
#[derive(Debug, Clone)]
pub struct WorldView {
    entities: HashMap<u32, Seen>,
    capacity: usize,
    refused: u64,
    newest_complete: Option<Tick>,
}

impl Default for WorldView {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_WORLD_CAPACITY)
    }
}

impl WorldView {
    /// A view holding at most `capacity` entities.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entities: HashMap::new(),
            capacity,
            refused: 0,
            newest_complete: None,
        }
    }

    /// Applies a chunk's records, read with the game's `schema`, each only if it is at
    /// least as new as what the view holds (chunks may arrive out of order). A chunk
    /// whose records do not fit the schema changes nothing.
    pub fn apply_chunk(&mut self, chunk: &Chunk<'_>, schema: &Schema) {
        let tick = chunk.header.tick;
        if self
            .newest_complete
            .is_some_and(|done| tick.is_before(done))
        {
            // Older than a tick the view already holds whole.
            return;
        }
        let Ok(records) = chunk.records_with(schema) else {
            return;
        };
        for record in records.flatten() {
            self.upsert(Record::of(&record), tick);
        }
    }

    fn upsert(&mut self, record: Record, tick: Tick) {
        let full = self.entities.len() >= self.capacity;
        match self.entities.get_mut(&record.net_id) {
            Some(seen) => {
                if tick.is_at_or_after(seen.tick) {
                    *seen = Seen { record, tick };
                }
            }
            None if full => self.refused += 1,
            None => {
                self.entities.insert(record.net_id, Seen { record, tick });
            }
        }
    }

    /// Marks `tick` complete: every chunk of it was applied, so an entity last seen
    /// before it is no longer in the world.
    pub fn complete_tick(&mut self, tick: Tick) {
        if self
            .newest_complete
            .is_some_and(|done| tick.is_before(done))
        {
            return;
        }
        self.newest_complete = Some(tick);
        self.entities
            .retain(|_, seen| seen.tick.is_at_or_after(tick));
    }

    /// Replaces the view with one complete tick's records.
    pub fn replace_with_tick(&mut self, tick: Tick, records: &[Record]) {
        self.entities.clear();
        self.newest_complete = None;
        for record in records {
            self.upsert(*record, tick);
        }
        self.newest_complete = Some(tick);
    }

    /// The record of one entity.
    pub fn get(&self, net_id: u32) -> Option<&Record> {
        self.entities.get(&net_id).map(|seen| &seen.record)
    }

    /// Every entity's newest record, in no particular order.
    pub fn records(&self) -> impl Iterator<Item = &Record> + '_ {
        self.entities.values().map(|seen| &seen.record)
    }

    /// Entities held.
    pub fn len(&self) -> usize {
        self.entities.len()
    }

    /// Whether the view holds no entity.
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    /// The newest tick applied whole.
    pub fn newest_complete_tick(&self) -> Option<Tick> {
        self.newest_complete
    }

    /// New entities refused because the view was at capacity.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::arena_schema_for_tests as arena_schema;
    use tickcast_shared::chunk::{
        CHUNK_HEADER_LEN, ChunkHeader, ENTITY_RECORD_LEN, EntityRecord, parse_chunk, write_header,
        write_record,
    };

    fn record(net_id: u32, x: u16) -> EntityRecord {
        EntityRecord {
            net_id,
            kind: 2,
            x,
            ..Default::default()
        }
    }

    /// The view's record of `net_id`, read as the arena's.
    fn x_of(view: &WorldView, net_id: u32) -> Option<u16> {
        view.get(net_id)
            .and_then(|r| EntityRecord::from_bytes(r.bytes()))
            .map(|r| r.x)
    }

    /// Records as a tick's kept records are.
    fn kept(records: &[EntityRecord]) -> Vec<Record> {
        let schema = arena_schema();
        let bytes = chunk_bytes(0, 0, 1, records);
        let chunk = parse_chunk(&bytes).unwrap();
        chunk
            .records_with(&schema)
            .unwrap()
            .map(|r| Record::of(&r.unwrap()))
            .collect()
    }

    fn chunk_bytes(tick: u32, index: u16, count: u16, records: &[EntityRecord]) -> Vec<u8> {
        let mut out = vec![0u8; CHUNK_HEADER_LEN + records.len() * ENTITY_RECORD_LEN];
        let (head, body) = out.split_at_mut(CHUNK_HEADER_LEN);
        let header = ChunkHeader {
            tick: Tick::new(tick),
            index_in_cell: index,
            chunks_in_cell: count,
            record_count: records.len() as u16,
            ..Default::default()
        };
        write_header(&header, head.try_into().unwrap());
        for (r, slot) in records.iter().zip(body.chunks_exact_mut(ENTITY_RECORD_LEN)) {
            write_record(r, slot.try_into().unwrap());
        }
        out
    }

    fn apply(view: &mut WorldView, bytes: &[u8]) {
        view.apply_chunk(&parse_chunk(bytes).unwrap(), &arena_schema());
    }

    #[test]
    fn chunks_update_entities_and_a_complete_tick_drops_the_departed() {
        let mut view = WorldView::default();
        apply(
            &mut view,
            &chunk_bytes(1, 0, 2, &[record(1, 10), record(2, 20)]),
        );
        apply(&mut view, &chunk_bytes(1, 1, 2, &[record(3, 30)]));
        view.complete_tick(Tick::new(1));
        assert_eq!(view.len(), 3);
        // Tick 2: entity 2 is gone, entity 1 moved; chunk 1 arrives before chunk 0.
        apply(&mut view, &chunk_bytes(2, 1, 2, &[record(3, 31)]));
        assert_eq!(x_of(&view, 3).unwrap(), 31);
        apply(&mut view, &chunk_bytes(2, 0, 2, &[record(1, 11)]));
        view.complete_tick(Tick::new(2));
        assert_eq!(view.len(), 2);
        assert_eq!(x_of(&view, 1).unwrap(), 11);
        assert!(view.get(2).is_none());
        assert_eq!(view.newest_complete_tick(), Some(Tick::new(2)));
    }

    #[test]
    fn a_late_chunk_never_overwrites_a_newer_record() {
        let mut view = WorldView::default();
        apply(&mut view, &chunk_bytes(5, 0, 2, &[record(1, 50)]));
        apply(&mut view, &chunk_bytes(4, 0, 2, &[record(1, 40)]));
        assert_eq!(x_of(&view, 1).unwrap(), 50);
        view.complete_tick(Tick::new(5));
        // Older than the newest complete tick: ignored whole.
        apply(&mut view, &chunk_bytes(3, 0, 1, &[record(9, 1)]));
        assert!(view.get(9).is_none());
        // Completing an older tick changes nothing.
        view.complete_tick(Tick::new(4));
        assert_eq!(view.newest_complete_tick(), Some(Tick::new(5)));
    }

    #[test]
    fn the_view_is_bounded_and_counts_what_it_refuses() {
        let mut view = WorldView::with_capacity(2);
        let records: Vec<EntityRecord> = (0..5).map(|id| record(id, 0)).collect();
        apply(&mut view, &chunk_bytes(1, 0, 1, &records));
        assert_eq!(view.len(), 2);
        assert_eq!(view.refused(), 3);
        // Known ids still update when full.
        view.replace_with_tick(
            Tick::new(2),
            &kept(&[record(0, 7), record(1, 8), record(4, 9)]),
        );
        assert_eq!(view.len(), 2);
        assert_eq!(x_of(&view, 0).unwrap(), 7);
        assert_eq!(view.refused(), 4);
    }

    #[test]
    fn ticks_wrap_around() {
        let mut view = WorldView::default();
        apply(&mut view, &chunk_bytes(u32::MAX, 0, 1, &[record(1, 1)]));
        view.complete_tick(Tick::new(u32::MAX));
        apply(&mut view, &chunk_bytes(0, 0, 1, &[record(1, 2)]));
        view.complete_tick(Tick::ZERO);
        assert_eq!(x_of(&view, 1).unwrap(), 2);
        assert_eq!(view.newest_complete_tick(), Some(Tick::ZERO));
    }
}
