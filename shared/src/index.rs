//! The index of a tick buffer: where each frame starts, where each cell's frames start,
//! and which cell each player entity is in.
//!
//! The snapshot encoder writes it while it lays the buffer out (it knows all of this at
//! that moment) and publishes it beside the bytes, so the fan-out selects each peer's
//! part of a tick without parsing what the sim just wrote. [`TickIndex::of_buffer`]
//! builds the same index by parsing a buffer, for tools and for the property test that
//! holds the encoder to it.

use std::ops::Range;

use crate::chunk::{KIND_PLAYER, ServerDatagram, parse_datagram, tick_frames};

/// Where everything is in one tick buffer (`[u16 length][message]` frames, the directory
/// first, then chunks in cell order). Cleared and refilled in place: once its vectors
/// have grown to the world's size, indexing a tick allocates nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickIndex {
    /// Byte range of every frame's message (without its length prefix), in order.
    frames: Vec<Range<usize>>,
    /// `cell_first[c]`: index of the first frame whose cell is `>= c`; `cells + 1`
    /// entries, or none when the buffer has no directory.
    cell_first: Vec<u32>,
    columns: u16,
    rows: u16,
    /// `(entity, cell)` of every player entity, sorted by entity.
    players: Vec<(u32, u16)>,
}

impl TickIndex {
    /// Empties the index for a buffer on a `columns × rows` grid, keeping its memory.
    pub fn clear(&mut self, columns: u16, rows: u16) {
        self.frames.clear();
        self.cell_first.clear();
        self.players.clear();
        self.columns = columns;
        self.rows = rows;
    }

    /// Appends a frame whose message occupies `message` in the buffer. Chunk frames must
    /// come in cell order, each announced with [`Self::begin_cell`] first.
    pub fn push_frame(&mut self, message: Range<usize>) {
        self.frames.push(message);
    }

    /// The frames pushed from now on belong to `cell` or a later one.
    pub fn begin_cell(&mut self, cell: u16) {
        let frame = self.frames.len() as u32;
        while self.cell_first.len() <= usize::from(cell) {
            self.cell_first.push(frame);
        }
    }

    /// Player entity `entity` is in `cell` this tick.
    pub fn push_player(&mut self, entity: u32, cell: u16) {
        self.players.push((entity, cell));
    }

    /// Closes the index once every frame is pushed: the cells after the last occupied one
    /// start at the end, and players are sorted for lookup. Sorting in place does not
    /// allocate.
    pub fn finish(&mut self) {
        let end = self.frames.len() as u32;
        while self.cell_first.len() <= self.cells() {
            self.cell_first.push(end);
        }
        self.players.sort_unstable();
    }

    /// Builds the index of `buffer` by parsing it: what the encoder writes directly. A
    /// buffer without a directory indexes its frames only (every peer is then sent all
    /// of them); frames that are not chunks are skipped for cells and players.
    pub fn of_buffer(buffer: &[u8]) -> Self {
        let mut index = Self::default();
        index.frames.extend(tick_frames(buffer));
        let Some(Ok(ServerDatagram::Directory(directory))) = index
            .frames
            .first()
            .map(|range| parse_datagram(&buffer[range.clone()]))
        else {
            return index;
        };
        index.columns = directory.header.columns;
        index.rows = directory.header.rows;
        let cells = index.cells();
        for position in 1..index.frames.len() {
            let range = index.frames[position].clone();
            let Ok(ServerDatagram::Chunk(chunk)) = parse_datagram(&buffer[range]) else {
                continue;
            };
            let cell = chunk.header.cell.min(cells as u16);
            while index.cell_first.len() <= usize::from(cell) {
                index.cell_first.push(position as u32);
            }
            for (entity, _) in chunk.ids_and_kinds().filter(|(_, k)| *k == KIND_PLAYER) {
                index.players.push((entity, chunk.header.cell));
            }
        }
        index.finish();
        index.players.dedup_by_key(|(entity, _)| *entity);
        index
    }

    /// Every frame's message range, the directory first.
    pub fn frames(&self) -> &[Range<usize>] {
        &self.frames
    }

    /// The grid: columns and rows.
    pub fn grid(&self) -> (u16, u16) {
        (self.columns, self.rows)
    }

    /// Whether the buffer has a directory, so that peers can be sent their view only.
    pub fn has_cells(&self) -> bool {
        self.cell_first.len() > self.cells()
    }

    /// The frames of cells `first..=last`, as a range of frame positions.
    ///
    /// # Panics
    /// If the index has no cells ([`Self::has_cells`]) or `last` is off the grid.
    pub fn frames_of_cells(&self, first: u16, last: u16) -> Range<usize> {
        self.cell_first[usize::from(first)] as usize
            ..self.cell_first[usize::from(last) + 1] as usize
    }

    /// The cell of player entity `entity` this tick.
    pub fn player_cell(&self, entity: u32) -> Option<u16> {
        self.players
            .binary_search_by_key(&entity, |(id, _)| *id)
            .ok()
            .map(|at| self.players[at].1)
    }

    fn cells(&self) -> usize {
        usize::from(self.columns) * usize::from(self.rows)
    }
}
