//! Judging one tick: which of its datagrams were meant for this client, which arrived,
//! and whether that is all of them.
//!
//! A client is sent the tick's directory and the chunks of the cells in its view
//! (`docs/PROTOCOL.md` §6). A tick is *complete* when the directory, the client's own
//! entity (which says where its view is) and every chunk of every occupied cell in the
//! view have arrived; the directory and the per-cell chunk counts make that exact, so
//! a lost chunk, a lost cell, a lost directory and a lost own entity are all visible.

use tickcast_shared::Tick;
use tickcast_shared::chunk::{Chunk, Directory, VIEW_ALL, ViewRect};
use tickcast_shared::msg::Welcome;
use tickcast_shared::schema::{Record, Schema};

/// What part of the world a client is sent, as its Welcome announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// The entity whose cell is the view's center; `None` for the whole world.
    pub entity: Option<u32>,
    /// Cells around the center (Chebyshev radius); [`VIEW_ALL`] for the whole world.
    pub radius: u16,
}

impl View {
    /// The whole world (a spectator, or a server that sends everyone everything).
    pub const ALL: View = View {
        entity: None,
        radius: VIEW_ALL,
    };

    /// The view a Welcome announces.
    pub fn from_welcome(welcome: &Welcome) -> Self {
        if welcome.view_cells == VIEW_ALL {
            Self::ALL
        } else {
            Self {
                entity: Some(welcome.entity),
                radius: welcome.view_cells,
            }
        }
    }

    fn limited_to(&self) -> Option<(u32, u16)> {
        match self.entity {
            Some(entity) if self.radius != VIEW_ALL => Some((entity, self.radius)),
            _ => None,
        }
    }
}

/// What taking one datagram into a tick did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Taken {
    /// New: counted.
    New,
    /// Already taken.
    Duplicate,
    /// A chunk whose cell count disagrees with the cell's other chunks, or whose
    /// records do not fit the game's schema.
    Inconsistent,
}

/// One cell's chunks of one tick.
#[derive(Debug, Clone, Copy)]
struct CellState {
    cell: u16,
    count: u16,
    received: u16,
}

/// What arrived of one tick, and whether that is all of it. Reused from tick to tick
/// (`reset`), so a steady stream of ticks allocates nothing once the vectors have grown.
#[derive(Debug, Clone, Default)]
pub(super) struct TickParts {
    tick: Option<Tick>,
    /// The directory's grid and bitmap, once it arrived.
    grid: Option<(u16, u16)>,
    occupied: Vec<u8>,
    /// The cell of the client's own entity this tick (the view's center).
    center: Option<u16>,
    /// Cells a chunk arrived for, sorted by cell.
    cells: Vec<CellState>,
    /// `cell << 16 | index` of every chunk received, sorted (duplicate detection).
    seen: Vec<u32>,
    /// Cells whose chunks have all arrived.
    full_cells: u32,
    /// Occupied cells in the view, once the directory (and the center) are known.
    expected_cells: Option<u32>,
    /// Datagrams of this tick taken (the directory and chunks).
    received: u32,
    complete: bool,
    records: Vec<Record>,
    entities: usize,
    server_time_us: u32,
}

impl TickParts {
    /// Starts over for `tick`, encoded by the server at `server_time_us`.
    pub(super) fn reset(&mut self, tick: Tick, server_time_us: u32) {
        self.tick = Some(tick);
        self.grid = None;
        self.occupied.clear();
        self.center = None;
        self.cells.clear();
        self.seen.clear();
        self.full_cells = 0;
        self.expected_cells = None;
        self.received = 0;
        self.complete = false;
        self.records.clear();
        self.entities = 0;
        self.server_time_us = server_time_us;
    }

    /// The tick held, if any.
    pub(super) fn tick(&self) -> Option<Tick> {
        self.tick
    }

    /// Forgets the tick (it was judged, or dropped from the figures).
    pub(super) fn clear(&mut self) -> Option<Tick> {
        self.tick.take()
    }

    /// Datagrams taken for this tick.
    pub(super) fn received(&self) -> u32 {
        self.received
    }

    /// Whether the tick was found complete.
    pub(super) fn is_complete(&self) -> bool {
        self.complete
    }

    /// Entities received for this tick.
    pub(super) fn entities(&self) -> usize {
        self.entities
    }

    /// The server's encode time of this tick.
    pub(super) fn server_time_us(&self) -> u32 {
        self.server_time_us
    }

    /// The records kept for this tick (with `keep_records`).
    pub(super) fn records_mut(&mut self) -> &mut Vec<Record> {
        &mut self.records
    }

    /// Takes the tick's directory.
    pub(super) fn take_directory(&mut self, directory: &Directory<'_>) -> Taken {
        if self.grid.is_some() {
            return Taken::Duplicate;
        }
        let header = directory.header;
        self.grid = Some((header.columns, header.rows));
        self.occupied.clear();
        self.occupied.extend_from_slice(directory.bitmap());
        self.received += 1;
        Taken::New
    }

    /// Takes one chunk of the tick, its records read with the game's `schema`; with
    /// `keep_records` its records are kept.
    pub(super) fn take_chunk(
        &mut self,
        chunk: &Chunk<'_>,
        schema: &Schema,
        view: View,
        keep_records: bool,
    ) -> Taken {
        let header = chunk.header;
        let Ok(records) = chunk.records_with(schema) else {
            return Taken::Inconsistent;
        };
        let key = u32::from(header.cell) << 16 | u32::from(header.index_in_cell);
        let Err(seen_at) = self.seen.binary_search(&key) else {
            return Taken::Duplicate;
        };
        let cell_at = match self.cells.binary_search_by_key(&header.cell, |c| c.cell) {
            Ok(at) if self.cells[at].count != header.chunks_in_cell => return Taken::Inconsistent,
            Ok(at) => at,
            Err(at) => {
                let state = CellState {
                    cell: header.cell,
                    count: header.chunks_in_cell,
                    received: 0,
                };
                self.cells.insert(at, state);
                at
            }
        };
        self.seen.insert(seen_at, key);
        let cell = &mut self.cells[cell_at];
        cell.received += 1;
        if cell.received == cell.count {
            self.full_cells += 1;
        }
        if let Some((entity, _)) = view.limited_to()
            && self.center.is_none()
            && records.clone().flatten().any(|r| r.net_id() == entity)
        {
            self.center = Some(header.cell);
        }
        self.received += 1;
        self.entities += usize::from(header.record_count);
        if keep_records {
            self.records
                .extend(records.flatten().map(|record| Record::of(&record)));
        }
        Taken::New
    }

    /// Judges the tick after a datagram was taken: true exactly once, when everything
    /// meant for a client sent `view` has arrived.
    pub(super) fn settle(&mut self, view: View) -> bool {
        self.update_expected(view);
        if self.complete || !self.has_everything(view) {
            return false;
        }
        self.complete = true;
        true
    }

    fn is_occupied(&self, cell: u16) -> bool {
        let cell = usize::from(cell);
        self.occupied
            .get(cell / 8)
            .is_some_and(|byte| byte & (1 << (cell % 8)) != 0)
    }

    /// Calls `each` for every occupied cell in the view; false if the directory or the
    /// view's center is not known yet.
    fn for_each_expected_cell(&self, view: View, mut each: impl FnMut(u16)) -> bool {
        let Some((columns, rows)) = self.grid else {
            return false;
        };
        let rect = match view.limited_to() {
            Some((_, radius)) => match self.center {
                Some(center) => ViewRect::around(center, columns, rows, radius),
                None => return false,
            },
            None => ViewRect::around(0, columns, rows, VIEW_ALL),
        };
        for (first, last) in rect.row_runs(columns) {
            for cell in (first..=last).filter(|&c| self.is_occupied(c)) {
                each(cell);
            }
        }
        true
    }

    fn cell(&self, cell: u16) -> Option<&CellState> {
        self.cells
            .binary_search_by_key(&cell, |c| c.cell)
            .ok()
            .map(|i| &self.cells[i])
    }

    /// Counts the expected cells once the directory and the center are known.
    fn update_expected(&mut self, view: View) {
        if self.expected_cells.is_some() {
            return;
        }
        let mut count = 0u32;
        if self.for_each_expected_cell(view, |_| count += 1) {
            self.expected_cells = Some(count);
        }
    }

    fn has_everything(&self, view: View) -> bool {
        let Some(expected) = self.expected_cells else {
            return false;
        };
        if self.full_cells < expected {
            return false;
        }
        let mut whole = true;
        self.for_each_expected_cell(view, |cell| {
            whole &= self.cell(cell).is_some_and(|c| c.received == c.count);
        });
        whole
    }

    /// Datagrams meant for this client this tick: the directory and every chunk of
    /// every expected cell (a cell no chunk arrived for counts one). `None` while the
    /// directory or the center is unknown.
    pub(super) fn expected_datagrams(&self, view: View) -> Option<u32> {
        let mut total = 1u32;
        self.for_each_expected_cell(view, |cell| {
            total += self.cell(cell).map_or(1, |c| u32::from(c.count));
        })
        .then_some(total)
    }

    /// Datagrams meant for this client that did not arrive; `fallback` is the
    /// expectation when this tick's own is unknown.
    pub(super) fn missing(&self, view: View, fallback: u32) -> u32 {
        let mut relevant = u32::from(self.grid.is_some());
        self.for_each_expected_cell(view, |cell| {
            relevant += self.cell(cell).map_or(0, |c| u32::from(c.received));
        });
        match self.expected_datagrams(view) {
            Some(expected) => expected - relevant,
            None => fallback.saturating_sub(self.received).max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::test_bytes::{arena_schema, chunk, directory};
    use tickcast_shared::chunk::{parse_chunk, parse_directory};

    fn take_chunk(parts: &mut TickParts, bytes: &[u8], view: View) -> Taken {
        parts.take_chunk(&parse_chunk(bytes).unwrap(), &arena_schema(), view, false)
    }

    #[test]
    fn a_whole_world_tick_needs_every_chunk_of_every_occupied_cell() {
        let mut parts = TickParts::default();
        parts.reset(Tick::new(3), 0);
        let occupied = directory(3, 2, 2, &[0, 3]);
        assert_eq!(
            parts.take_directory(&parse_directory(&occupied).unwrap()),
            Taken::New
        );
        assert!(!parts.settle(View::ALL));
        assert_eq!(parts.expected_datagrams(View::ALL), Some(3));
        assert_eq!(
            take_chunk(&mut parts, &chunk(3, 0, 0, 1, &[1]), View::ALL),
            Taken::New
        );
        assert!(!parts.settle(View::ALL), "cell 3 is still missing");
        assert_eq!(parts.missing(View::ALL, 9), 1);
        take_chunk(&mut parts, &chunk(3, 3, 0, 1, &[2]), View::ALL);
        assert!(parts.settle(View::ALL));
        assert!(!parts.settle(View::ALL), "complete once");
        assert_eq!(parts.missing(View::ALL, 9), 0);
    }

    #[test]
    fn repeated_and_contradicting_parts_are_told_apart() {
        let mut parts = TickParts::default();
        parts.reset(Tick::new(1), 0);
        let dir = directory(1, 1, 1, &[0]);
        let dir = parse_directory(&dir).unwrap();
        assert_eq!(parts.take_directory(&dir), Taken::New);
        assert_eq!(parts.take_directory(&dir), Taken::Duplicate);
        let first = chunk(1, 0, 0, 2, &[1]);
        assert_eq!(take_chunk(&mut parts, &first, View::ALL), Taken::New);
        assert_eq!(take_chunk(&mut parts, &first, View::ALL), Taken::Duplicate);
        // The cell's second chunk claims the cell has three.
        assert_eq!(
            take_chunk(&mut parts, &chunk(1, 0, 1, 3, &[2]), View::ALL),
            Taken::Inconsistent
        );
        assert_eq!(parts.received(), 2);
    }

    #[test]
    fn a_limited_view_is_unknown_until_the_own_entity_arrives() {
        // 3 × 1 grid, own entity 7, radius 0: only its own cell counts.
        let view = View {
            entity: Some(7),
            radius: 0,
        };
        let mut parts = TickParts::default();
        parts.reset(Tick::new(1), 0);
        let dir = directory(1, 3, 1, &[0, 2]);
        parts.take_directory(&parse_directory(&dir).unwrap());
        take_chunk(&mut parts, &chunk(1, 0, 0, 1, &[5]), view);
        assert!(!parts.settle(view));
        assert_eq!(parts.expected_datagrams(view), None, "where is the view?");
        // Nothing says which cells were meant: the fallback, at least one.
        assert_eq!(parts.missing(view, 4), 2);
        take_chunk(&mut parts, &chunk(1, 2, 0, 1, &[7]), view);
        assert!(parts.settle(view), "cell 0 is outside the view");
        assert_eq!(parts.expected_datagrams(view), Some(2));
    }
}
