//! The index of a tick buffer: where each frame starts, where each cell's frames start,
//! and which cell each player entity is in.
//!
//! The snapshot encoder writes it while it lays the buffer out (it knows all of this at
//! that moment) and publishes it beside the bytes, so the fan-out selects each peer's
//! part of a tick without parsing what the sim just wrote. [`TickIndex::of_buffer`]
//! builds the same index by parsing a buffer, for tools and for the property test that
//! holds the encoder to it.

use std::ops::Range;

use crate::chunk::{Chunk, KIND_PLAYER, ServerDatagram, parse_datagram, tick_frames};
use crate::schema::Schema;

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
    /// of them); frames that are not chunks are skipped for cells and players. Records
    /// are read as the demo arena lays them out (14 bytes, players of kind
    /// [`KIND_PLAYER`]); another game's buffer is indexed with [`Self::of_buffer_with`].
    pub fn of_buffer(buffer: &[u8]) -> Self {
        Self::of_buffer_by(buffer, |chunk, players| {
            for (entity, _) in chunk.ids_and_kinds().filter(|(_, k)| *k == KIND_PLAYER) {
                players.push((entity, chunk.header.cell));
            }
        })
    }

    /// [`Self::of_buffer`] for any game: records are walked with its `schema`, and the
    /// entities of the kinds in `player_kinds` are its players. A chunk whose records do
    /// not fit the schema adds no player.
    pub fn of_buffer_with(buffer: &[u8], schema: &Schema, player_kinds: &[u8]) -> Self {
        Self::of_buffer_by(buffer, |chunk, players| {
            let Ok(records) = chunk.records_with(schema) else {
                return;
            };
            for record in records.flatten() {
                if player_kinds.contains(&record.kind().kind) {
                    players.push((record.net_id(), chunk.header.cell));
                }
            }
        })
    }

    fn of_buffer_by(
        buffer: &[u8],
        mut players_of: impl FnMut(&Chunk<'_>, &mut Vec<(u32, u16)>),
    ) -> Self {
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
            // In usize: a grid may have more cells than a u16 counts, and a cell past
            // the grid belongs after its last cell.
            let cell = usize::from(chunk.header.cell).min(cells);
            while index.cell_first.len() <= cell {
                index.cell_first.push(position as u32);
            }
            players_of(&chunk, &mut index.players);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tick;
    use crate::chunk::{
        CHUNK_HEADER_LEN, ChunkHeader, DirectoryHeader, ENTITY_RECORD_LEN, EntityRecord,
        directory_len, write_directory, write_header, write_record,
    };

    fn frame(buffer: &mut Vec<u8>, message: &[u8]) {
        buffer.extend_from_slice(&(message.len() as u16).to_le_bytes());
        buffer.extend_from_slice(message);
    }

    /// Regression (found by `sim/tests/decoders.rs`): `of_buffer` clamped a chunk's cell
    /// to the grid's cell count cast to `u16`, so on a grid of more than 65,536 cells
    /// (256 × 300 here: 76,800, which wraps to 11,264) a chunk in cell 65,535 was
    /// indexed under cell 11,264.
    #[test]
    fn a_cell_count_beyond_u16_no_longer_wraps_when_chunks_are_indexed() {
        let (columns, rows) = (256u16, 300u16);
        let cells = usize::from(columns) * usize::from(rows);
        let mut directory = vec![0u8; directory_len(cells)];
        let header = DirectoryHeader {
            tick: Tick::new(1),
            server_time_us: 0,
            columns,
            rows,
        };
        write_directory(&header, |cell| cell == 65_535, &mut directory);
        let mut chunk = [0u8; CHUNK_HEADER_LEN + ENTITY_RECORD_LEN];
        let (head, body) = chunk.split_at_mut(CHUNK_HEADER_LEN);
        let chunk_header = ChunkHeader {
            tick: Tick::new(1),
            chunks_in_cell: 1,
            cell: 65_535,
            record_count: 1,
            ..ChunkHeader::default()
        };
        write_header(&chunk_header, head.try_into().unwrap());
        let player = EntityRecord {
            net_id: 9,
            kind: KIND_PLAYER,
            ..EntityRecord::default()
        };
        write_record(&player, body.try_into().unwrap());
        let mut buffer = Vec::new();
        frame(&mut buffer, &directory);
        frame(&mut buffer, &chunk);

        let index = TickIndex::of_buffer(&buffer);
        assert!(index.has_cells());
        assert_eq!(index.frames_of_cells(65_535, 65_535), 1..2);
        assert_eq!(index.frames_of_cells(11_264, 11_264), 1..1);
        assert_eq!(index.player_cell(9), Some(65_535));
    }
}
