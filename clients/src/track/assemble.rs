//! [`TickAssembler`]: puts a client's datagrams back together into ticks, several in
//! flight at once, and keeps its [`Delivery`] figures. Which datagrams a tick needs is
//! [`completeness`](super::completeness)'s judgement; this module decides which tick a
//! datagram belongs to, when a tick is too old to wait for, and what it all counts as.

use std::sync::Arc;
use tickcast_shared::Tick;

use tickcast_shared::chunk::{Chunk, Directory, ServerDatagram};
use tickcast_shared::schema::{Record, Schema};

use super::completeness::{Taken, TickParts, View};
use super::delivery::Delivery;

/// How many ticks can be in flight at once before the oldest is judged. At 30 Hz that
/// is a quarter of a second of reordering tolerance.
pub const TICKS_IN_FLIGHT: usize = 8;

/// What a datagram meant for its tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// The datagram completed its tick; the tick had this many entities.
    Completed {
        /// The tick.
        tick: Tick,
        /// Entities received for it.
        entities: usize,
    },
    /// Part of a tick still missing datagrams, or a chunk beyond the view of a tick
    /// already complete.
    Partial,
    /// A datagram already received (counted, ignored).
    Duplicate,
    /// A datagram of a tick too old to track any more (counted, ignored).
    Stale,
    /// A chunk whose cell count disagrees with the cell's other chunks (counted,
    /// ignored).
    Inconsistent,
}

/// Puts a client's datagrams back together into ticks and keeps its delivery figures.
#[derive(Debug, Clone)]
pub struct TickAssembler {
    /// The ticks in flight, tick `t` in slot `t % TICKS_IN_FLIGHT`.
    slots: Vec<TickParts>,
    view: View,
    schema: Arc<Schema>,
    keep_records: bool,
    delivery: Delivery,
    /// Datagrams the last judged or completed tick was expected to have.
    last_expected: u32,
    complete_records: Vec<Record>,
    ticks_seen: u64,
    judged_losses: u64,
}

impl TickAssembler {
    /// An assembler for a client sent `view` of a game laid out by `schema` (the one the
    /// server sent after its Welcome); with `keep_records` it keeps the newest complete
    /// tick's records.
    pub fn new(view: View, schema: Arc<Schema>, keep_records: bool) -> Self {
        Self {
            slots: vec![TickParts::default(); TICKS_IN_FLIGHT],
            view,
            schema,
            keep_records,
            delivery: Delivery::default(),
            last_expected: 1,
            complete_records: Vec::new(),
            ticks_seen: 0,
            judged_losses: 0,
        }
    }

    /// The schema the records are read with.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// The view this assembler judges completeness against.
    pub fn view(&self) -> View {
        self.view
    }

    /// The figures so far.
    pub fn delivery(&self) -> Delivery {
        let mut delivery = self.delivery;
        // Ticks no datagram arrived for count whole, at the last tick's expectation.
        let never_seen = delivery.expected().saturating_sub(self.ticks_seen);
        delivery.chunks_lost = self.judged_losses + never_seen * u64::from(self.last_expected);
        delivery
    }

    /// Records of the newest complete tick (empty unless built with `keep_records`).
    pub fn complete_records(&self) -> &[Record] {
        &self.complete_records
    }

    /// Takes one parsed message (a chunk or a directory).
    pub fn on_message(&mut self, datagram: &ServerDatagram<'_>) -> ChunkOutcome {
        match datagram {
            ServerDatagram::Chunk(chunk) => self.on_chunk(chunk),
            ServerDatagram::Directory(directory) => self.on_directory(directory),
        }
    }

    /// Takes one tick directory.
    pub fn on_directory(&mut self, directory: &Directory<'_>) -> ChunkOutcome {
        let header = directory.header;
        let index = match self.slot_for(header.tick, header.server_time_us) {
            Ok(index) => index,
            Err(outcome) => return outcome,
        };
        let taken = self.slots[index].take_directory(directory);
        self.count_taken(index, taken)
    }

    /// Takes one parsed chunk.
    pub fn on_chunk(&mut self, chunk: &Chunk<'_>) -> ChunkOutcome {
        let header = chunk.header;
        let index = match self.slot_for(header.tick, header.server_time_us) {
            Ok(index) => index,
            Err(outcome) => return outcome,
        };
        let taken = self.slots[index].take_chunk(chunk, &self.schema, self.view, self.keep_records);
        self.count_taken(index, taken)
    }

    fn count_taken(&mut self, index: usize, taken: Taken) -> ChunkOutcome {
        match taken {
            Taken::New => {
                self.delivery.chunks_received += 1;
                self.settle(index)
            }
            Taken::Duplicate => {
                self.delivery.chunks_ignored += 1;
                ChunkOutcome::Duplicate
            }
            Taken::Inconsistent => {
                self.delivery.chunks_ignored += 1;
                ChunkOutcome::Inconsistent
            }
        }
    }

    /// The slot of `tick`, started if new; `Err(Stale)` for a tick too old to track.
    fn slot_for(&mut self, tick: Tick, server_time_us: u32) -> Result<usize, ChunkOutcome> {
        let newest = self.delivery.last_tick;
        // Taken: a tick after the newest, or one of the newest TICKS_IN_FLIGHT. Anything
        // else is older, or (from a confused server) half the tick space away and so
        // neither older nor newer: it would share a slot with a tick in flight.
        if let Some(newest) = newest
            && !tick.is_after(newest)
            && newest
                .since(tick)
                .is_none_or(|age| age >= TICKS_IN_FLIGHT as u32)
        {
            self.delivery.chunks_ignored += 1;
            return Err(ChunkOutcome::Stale);
        }
        // A reordered start can bring a tick older than the first one seen: the
        // expected range starts at the oldest, so delivery never exceeds 1.
        if self
            .delivery
            .first_tick
            .is_none_or(|first| tick.is_before(first))
        {
            self.delivery.first_tick = Some(tick);
        }
        if newest.is_none_or(|newest| tick.is_after(newest)) {
            self.delivery.last_tick = Some(tick);
        }
        // 2^32 is a multiple of TICKS_IN_FLIGHT, so consecutive ticks take consecutive
        // slots across the wrap too.
        let index = tick.get() as usize % TICKS_IN_FLIGHT;
        if self.slots[index].tick() != Some(tick) {
            self.judge(index);
            self.slots[index].reset(tick, server_time_us);
            self.ticks_seen += 1;
        }
        Ok(index)
    }

    /// Completes the tick in `index` if everything meant for this client has arrived.
    fn settle(&mut self, index: usize) -> ChunkOutcome {
        let view = self.view;
        let slot = &mut self.slots[index];
        if !slot.settle(view) {
            return ChunkOutcome::Partial;
        }
        self.last_expected = slot.expected_datagrams(view).unwrap_or(self.last_expected);
        self.delivery.complete += 1;
        let (tick, entities) = (slot.tick().unwrap_or_default(), slot.entities());
        if self
            .delivery
            .last_complete_tick
            .is_none_or(|newest| tick.is_after(newest))
        {
            self.delivery.last_complete_tick = Some(tick);
            self.delivery.entities_last_snapshot = entities;
            self.delivery.last_complete_server_time_us = Some(slot.server_time_us());
            if self.keep_records {
                std::mem::swap(&mut self.complete_records, slot.records_mut());
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
        let cutoff = newest.minus(grace);
        for index in 0..self.slots.len() {
            match self.slots[index].tick() {
                Some(tick) if newest.since(tick).is_none_or(|age| age >= grace) => {
                    self.judge(index)
                }
                Some(_) => {
                    // In flight: drop it from the figures entirely.
                    let slot = &mut self.slots[index];
                    if slot.is_complete() {
                        self.delivery.complete -= 1;
                    }
                    self.delivery.chunks_received -= u64::from(slot.received());
                    self.ticks_seen -= 1;
                    slot.clear();
                }
                None => {}
            }
        }
        if let Some(first) = self.delivery.first_tick {
            self.delivery.last_tick = Some(first.latest(cutoff));
        }
        self.delivery()
    }

    fn judge(&mut self, index: usize) {
        let view = self.view;
        let slot = &mut self.slots[index];
        if slot.clear().is_some() && !slot.is_complete() {
            let missing = slot.missing(view, self.last_expected);
            if let Some(expected) = slot.expected_datagrams(view) {
                self.last_expected = expected;
            }
            self.judged_losses += u64::from(missing);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::test_bytes::{arena_schema, chunk, directory, feed, run_start, whole_tick};
    use proptest::prelude::*;

    #[test]
    fn whole_ticks_complete_and_missing_chunks_count_as_lost() {
        let mut a = TickAssembler::new(View::ALL, arena_schema(), false);
        let [dir, c0, c1, c2] = whole_tick(10);
        assert_eq!(feed(&mut a, &c0), ChunkOutcome::Partial);
        assert_eq!(feed(&mut a, &c2), ChunkOutcome::Partial);
        assert_eq!(
            feed(&mut a, &dir),
            ChunkOutcome::Partial,
            "cell 0 is half there"
        );
        assert_eq!(
            feed(&mut a, &c1),
            ChunkOutcome::Completed {
                tick: Tick::new(10),
                entities: 3
            }
        );
        assert_eq!(feed(&mut a, &c1), ChunkOutcome::Duplicate);
        assert_eq!(feed(&mut a, &dir), ChunkOutcome::Duplicate);
        // Tick 11 loses the second chunk of cell 0.
        let [dir, c0, _, c2] = whole_tick(11);
        for bytes in [dir, c0, c2] {
            feed(&mut a, &bytes);
        }
        for tick in 12..30 {
            for bytes in whole_tick(tick) {
                feed(&mut a, &bytes);
            }
        }
        let d = a.finish(0);
        assert_eq!(d.expected(), 20);
        assert_eq!(d.complete, 19);
        assert_eq!(d.chunks_lost, 1);
        assert_eq!(d.chunks_ignored, 2);
        assert_eq!(d.chunks_received, 4 * 19 + 3);
    }

    #[test]
    fn an_occupied_cell_with_no_chunk_and_a_lost_directory_are_losses() {
        let mut a = TickAssembler::new(View::ALL, arena_schema(), false);
        // Tick 1 whole; tick 2 loses all of cell 1; tick 3 loses its directory.
        for bytes in whole_tick(1) {
            feed(&mut a, &bytes);
        }
        let [dir, c0, c1, _] = whole_tick(2);
        for bytes in [dir, c0, c1] {
            feed(&mut a, &bytes);
        }
        let [_, c0, c1, c2] = whole_tick(3);
        for bytes in [c0, c1, c2] {
            feed(&mut a, &bytes);
        }
        for bytes in whole_tick(4) {
            feed(&mut a, &bytes);
        }
        let d = a.finish(0);
        assert_eq!((d.complete, d.expected()), (2, 4));
        assert_eq!(d.chunks_lost, 2);
    }

    #[test]
    fn a_limited_view_needs_only_the_occupied_cells_around_its_own_entity() {
        // Grid:  0  1  2  3
        //        4  5  6  7
        //        8  9 10 11      own entity 7 in cell 5, radius 1: cells 0-2, 4-6, 8-10.
        let view = View {
            entity: Some(7),
            radius: 1,
        };
        let mut a = TickAssembler::new(view, arena_schema(), false);
        let occupied = [0, 3, 5];
        assert_eq!(
            feed(&mut a, &directory(1, 4, 3, &occupied)),
            ChunkOutcome::Partial
        );
        assert_eq!(
            feed(&mut a, &chunk(1, 0, 0, 1, &[20])),
            ChunkOutcome::Partial,
            "where the view is is not known before the own entity arrives"
        );
        assert_eq!(
            feed(&mut a, &chunk(1, 5, 0, 1, &[7, 21])),
            ChunkOutcome::Completed {
                tick: Tick::new(1),
                entities: 3
            },
            "cell 3 is outside the view"
        );
        // Tick 2 loses cell 0's chunk: the view is known, so exactly one is missing.
        feed(&mut a, &directory(2, 4, 3, &occupied));
        feed(&mut a, &chunk(2, 5, 0, 1, &[7]));
        // Tick 3 loses the own entity's chunk: nothing says where the view is.
        feed(&mut a, &directory(3, 4, 3, &occupied));
        feed(&mut a, &chunk(3, 0, 0, 1, &[20]));
        // Tick 4: the entity moved to cell 10; cell 0 is out of view, 11 is in.
        let occupied = [0, 10, 11];
        feed(&mut a, &directory(4, 4, 3, &occupied));
        feed(&mut a, &chunk(4, 10, 0, 1, &[7]));
        assert!(matches!(
            feed(&mut a, &chunk(4, 11, 0, 1, &[22])),
            ChunkOutcome::Completed { tick, .. } if tick == Tick::new(4)
        ));
        let d = a.finish(0);
        assert_eq!((d.complete, d.expected()), (2, 4));
        assert_eq!(d.chunks_lost, 2);
    }

    #[test]
    fn a_gap_of_whole_ticks_is_undelivered_and_lost() {
        let mut a = TickAssembler::new(View::ALL, arena_schema(), false);
        feed(&mut a, &directory(1, 1, 1, &[]));
        feed(&mut a, &directory(50, 1, 1, &[]));
        let d = a.finish(0);
        assert_eq!(d.expected(), 50);
        assert_eq!(d.complete, 2);
        assert_eq!(d.chunks_lost, 48);
        assert_eq!(feed(&mut a, &directory(2, 1, 1, &[])), ChunkOutcome::Stale);
    }

    #[test]
    fn a_reordered_start_never_delivers_more_than_expected() {
        let mut a = TickAssembler::new(View::ALL, arena_schema(), false);
        for tick in [10, 8, 9] {
            // 8 is older than the first tick seen, still in flight.
            feed(&mut a, &directory(tick, 1, 1, &[]));
        }
        let d = a.finish(0);
        assert_eq!((d.complete, d.expected()), (3, 3));
    }

    #[test]
    fn finish_leaves_the_newest_ticks_out() {
        let mut a = TickAssembler::new(View::ALL, arena_schema(), false);
        for tick in 0..10 {
            feed(&mut a, &directory(tick, 1, 1, &[]));
        }
        // In flight when the run ends.
        feed(&mut a, &directory(10, 1, 1, &[0]));
        let d = a.finish(1);
        assert_eq!(d.expected(), 10);
        assert_eq!(d.complete, 10);
        assert_eq!(d.chunks_lost, 0);
    }

    proptest! {
        /// Whole ticks in order from any start, across the wrap: every one is expected
        /// and delivered, and the newest is the last one sent.
        #[test]
        fn consecutive_ticks_from_any_start_are_all_delivered(start in run_start(), count in 1u32..40) {
            let mut a = TickAssembler::new(View::ALL, arena_schema(), false);
            for offset in 0..count {
                for bytes in whole_tick(start.wrapping_add(offset)) {
                    feed(&mut a, &bytes);
                }
            }
            let newest = Tick::new(start).plus(count - 1);
            prop_assert_eq!(a.delivery().last_tick, Some(newest));
            prop_assert_eq!(a.delivery().last_complete_tick, Some(newest));
            let d = a.finish(0);
            prop_assert_eq!((d.complete, d.expected(), d.chunks_lost), (u64::from(count), u64::from(count), 0));
        }
    }

    /// `slot_for` computed `newest - tick` after a wrapping check, so a tick just before
    /// the wrap arriving after tick 0 overflowed (a debug build panicked).
    #[test]
    fn tick_zero_then_u32_max_does_not_panic() {
        let mut a = TickAssembler::new(View::ALL, arena_schema(), false);
        assert!(matches!(
            feed(&mut a, &directory(0, 1, 1, &[])),
            ChunkOutcome::Completed { .. }
        ));
        assert!(matches!(
            feed(&mut a, &directory(u32::MAX, 1, 1, &[])),
            ChunkOutcome::Completed { tick, .. } if tick == Tick::new(u32::MAX)
        ));
        let d = a.finish(0);
        assert_eq!(d.first_tick, Some(Tick::new(u32::MAX)));
        assert_eq!(d.last_tick, Some(Tick::ZERO));
        assert_eq!((d.complete, d.expected()), (2, 2));
    }
}
