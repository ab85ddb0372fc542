//! The fan-out's pure parts: which datagrams of a tick a peer is sent (interest
//! management over the tick buffer's cell order) and whether it gets the tick at all
//! (backpressure).

use std::collections::HashMap;
use std::ops::Range;

use tickcast_shared::chunk::{
    KIND_PLAYER, ServerDatagram, VIEW_ALL, ViewRect, parse_datagram, tick_frames,
};

/// One published tick buffer, indexed for per-peer selection. Built once per tick and
/// reused: after the first ticks it allocates nothing.
///
/// The sim lays a tick out as the directory frame followed by chunk frames in cell order,
/// so the chunks of one row of a peer's view are one contiguous run of frames; a peer's
/// selection is the directory plus one run per row of its view.
#[derive(Debug, Default)]
pub struct TickLayout {
    /// Byte range of every frame in the buffer (the directory first).
    pub frames: Vec<Range<usize>>,
    /// `cost_prefix[i]`: queue cost (payload plus quinn's per-datagram bookkeeping) of
    /// `frames[..i]`.
    cost_prefix: Vec<usize>,
    /// `cell_first[c]`: index of the first frame whose cell is `>= c` (`cells + 1`
    /// entries); empty when the buffer has no directory.
    cell_first: Vec<u32>,
    columns: u16,
    rows: u16,
    /// Every player entity's cell this tick.
    players: HashMap<u32, u16>,
}

impl TickLayout {
    /// Indexes `buffer`; `entry_cost` is what quinn charges per queued datagram.
    pub fn load(&mut self, buffer: &[u8], entry_cost: usize) {
        self.frames.clear();
        self.frames.extend(tick_frames(buffer));
        self.cost_prefix.clear();
        self.cost_prefix.push(0);
        let mut total = 0;
        for range in &self.frames {
            total += range.len() + entry_cost;
            self.cost_prefix.push(total);
        }
        self.cell_first.clear();
        self.players.clear();
        let Some(Ok(ServerDatagram::Directory(directory))) = self
            .frames
            .first()
            .map(|range| parse_datagram(&buffer[range.clone()]))
        else {
            return;
        };
        self.columns = directory.header.columns;
        self.rows = directory.header.rows;
        let cells = directory.cells();
        let mut next_cell = 0usize;
        for (index, range) in self.frames.iter().enumerate().skip(1) {
            let Ok(ServerDatagram::Chunk(chunk)) = parse_datagram(&buffer[range.clone()]) else {
                continue;
            };
            let cell = usize::from(chunk.header.cell).min(cells);
            while next_cell <= cell {
                self.cell_first.push(index as u32);
                next_cell += 1;
            }
            for record in chunk.records().filter(|r| r.kind == KIND_PLAYER) {
                self.players.insert(record.net_id, chunk.header.cell);
            }
        }
        while next_cell <= cells {
            self.cell_first.push(self.frames.len() as u32);
            next_cell += 1;
        }
    }

    /// The cell of player entity `entity` this tick.
    pub fn player_cell(&self, entity: u32) -> Option<u16> {
        self.players.get(&entity).copied()
    }

    /// Calls `each` with the frame ranges (indices into [`Self::frames`]) a peer gets:
    /// with `center` and a radius other than [`VIEW_ALL`], the directory and the cells of
    /// its view; otherwise (a spectator, a player not in this tick, a buffer without a
    /// directory) every frame. Returns the selection's queue cost.
    pub fn select(
        &self,
        center: Option<u16>,
        view_cells: u16,
        mut each: impl FnMut(Range<usize>),
    ) -> usize {
        let everything = 0..self.frames.len();
        match center {
            Some(center) if view_cells != VIEW_ALL && self.cell_first.len() > self.cells() => {
                let mut cost = self.cost(0..1);
                each(0..1);
                let view = ViewRect::around(center, self.columns, self.rows, view_cells);
                for (first, last) in view.row_runs(self.columns) {
                    let start = self.cell_first[usize::from(first)] as usize;
                    let end = self.cell_first[usize::from(last) + 1] as usize;
                    if start < end {
                        cost += self.cost(start..end);
                        each(start..end);
                    }
                }
                cost
            }
            _ => {
                each(everything.clone());
                self.cost(everything)
            }
        }
    }

    fn cells(&self) -> usize {
        usize::from(self.columns) * usize::from(self.rows)
    }

    fn cost(&self, frames: Range<usize>) -> usize {
        self.cost_prefix[frames.end] - self.cost_prefix[frames.start]
    }
}

/// What to do with one tick for one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendDecision {
    /// Send every datagram of the peer's part of the tick.
    Send,
    /// The peer is behind: more than a tick is still queued for it, or its send buffer
    /// cannot take the whole tick. Skip it. Sending part of it would make quinn evict
    /// older queued datagrams, and half a tick is worth less than the next whole one.
    Skip,
}

/// Per-peer bookkeeping for the fan-out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerSendState {
    /// Ticks sent in full.
    pub ticks_sent: u64,
    /// Ticks skipped for lack of room.
    pub ticks_skipped: u64,
    /// Ticks skipped in a row, reset by a send.
    pub consecutive_skips: u32,
}

/// Decides whether a peer gets its part of a tick, `tick_bytes` long, and updates its
/// state. `queued` bytes are still waiting in its send queue and `buffer_space` more fit.
///
/// A peer is sent a tick only while at most one tick of its own size is still queued, so
/// its queue holds about two of its ticks at most. The send buffer is sized for the
/// largest tick (the whole world), but under interest management a peer's tick is its
/// view, often a few percent of that: the buffer alone would let a congested peer queue
/// dozens of stale ticks.
pub fn decide_tick_for_peer(
    state: &mut PeerSendState,
    buffer_space: usize,
    queued: usize,
    tick_bytes: usize,
) -> SendDecision {
    if buffer_space >= tick_bytes && queued <= tick_bytes {
        state.ticks_sent += 1;
        state.consecutive_skips = 0;
        SendDecision::Send
    } else {
        state.ticks_skipped += 1;
        state.consecutive_skips = state.consecutive_skips.saturating_add(1);
        SendDecision::Skip
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickcast_shared::chunk::{
        CHUNK_HEADER_LEN, ChunkHeader, DirectoryHeader, ENTITY_RECORD_LEN, EntityRecord, KIND_NPC,
        directory_len, write_directory, write_header, write_record,
    };

    /// A tick buffer on a 4 × 3 grid with one chunk per listed (cell, net id, kind).
    fn tick_buffer(chunks: &[(u16, u32, u8)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut directory = vec![0u8; directory_len(12)];
        let header = DirectoryHeader {
            tick: 5,
            server_time_us: 0,
            columns: 4,
            rows: 3,
        };
        write_directory(
            &header,
            |cell| chunks.iter().any(|c| usize::from(c.0) == cell),
            &mut directory,
        );
        out.extend_from_slice(&(directory.len() as u16).to_le_bytes());
        out.extend_from_slice(&directory);
        for &(cell, net_id, kind) in chunks {
            let mut chunk = [0u8; CHUNK_HEADER_LEN + ENTITY_RECORD_LEN];
            let (head, body) = chunk.split_at_mut(CHUNK_HEADER_LEN);
            let header = ChunkHeader {
                tick: 5,
                index_in_cell: 0,
                chunks_in_cell: 1,
                cell,
                record_count: 1,
                server_time_us: 0,
            };
            write_header(&header, head.try_into().unwrap());
            let record = EntityRecord {
                net_id,
                kind,
                ..EntityRecord::default()
            };
            write_record(&record, body.try_into().unwrap());
            out.extend_from_slice(&(chunk.len() as u16).to_le_bytes());
            out.extend_from_slice(&chunk);
        }
        out
    }

    fn selected(layout: &TickLayout, center: Option<u16>, view: u16) -> (Vec<usize>, usize) {
        let mut frames = Vec::new();
        let cost = layout.select(center, view, |range| frames.extend(range));
        (frames, cost)
    }

    #[test]
    fn a_peer_gets_the_directory_and_the_cells_around_its_player() {
        // Grid (cell numbers):  0  1  2  3
        //                       4  5  6  7
        //                       8  9 10 11
        let buffer = tick_buffer(&[
            (0, 10, KIND_NPC),
            (3, 11, KIND_NPC),
            (5, 12, KIND_PLAYER),
            (6, 13, KIND_NPC),
            (10, 14, KIND_PLAYER),
            (11, 15, KIND_NPC),
        ]);
        let mut layout = TickLayout::default();
        layout.load(&buffer, 32);
        assert_eq!(layout.frames.len(), 7);
        assert_eq!(layout.player_cell(12), Some(5));
        assert_eq!(layout.player_cell(14), Some(10));
        assert_eq!(layout.player_cell(10), None, "NPCs are not indexed");

        // Player 12 in cell 5 sees cells 0-2, 4-6, 8-10: frames of cells 0, 5, 6, 10.
        let (frames, cost) = selected(&layout, Some(5), 1);
        assert_eq!(frames, vec![0, 1, 3, 4, 5]);
        let chunk = CHUNK_HEADER_LEN + ENTITY_RECORD_LEN + 32;
        assert_eq!(cost, directory_len(12) + 32 + 4 * chunk);
        // Player 14 in cell 10 sees cells 5-7, 9-11: frames of cells 5, 6, 10, 11.
        assert_eq!(selected(&layout, Some(10), 1).0, vec![0, 3, 4, 5, 6]);
        // Radius 0: its own cell only.
        assert_eq!(selected(&layout, Some(10), 0).0, vec![0, 5]);
        // A spectator, an unknown player or VIEW_ALL: everything.
        let all: Vec<usize> = (0..7).collect();
        assert_eq!(selected(&layout, None, 1).0, all);
        assert_eq!(selected(&layout, Some(5), VIEW_ALL).0, all);
        assert_eq!(selected(&layout, Some(5), 100).0, all);
    }

    #[test]
    fn a_buffer_without_a_directory_goes_to_everyone_whole() {
        let buffer = tick_buffer(&[(1, 1, KIND_PLAYER)]);
        // Drop the directory frame.
        let without = buffer[2 + directory_len(12)..].to_vec();
        let mut layout = TickLayout::default();
        layout.load(&without, 0);
        assert_eq!(selected(&layout, Some(1), 1).0, vec![0]);
    }

    #[test]
    fn a_peer_without_room_for_the_whole_tick_skips_it() {
        let mut state = PeerSendState::default();
        assert_eq!(
            decide_tick_for_peer(&mut state, 1000, 0, 1000),
            SendDecision::Send
        );
        assert_eq!(
            decide_tick_for_peer(&mut state, 999, 0, 1000),
            SendDecision::Skip
        );
        assert_eq!(
            decide_tick_for_peer(&mut state, 0, 0, 1000),
            SendDecision::Skip
        );
        assert_eq!(state.consecutive_skips, 2);
        assert_eq!(
            decide_tick_for_peer(&mut state, 5000, 1000, 1000),
            SendDecision::Send,
            "one tick queued: room for one more"
        );
        assert_eq!(
            state,
            PeerSendState {
                ticks_sent: 2,
                ticks_skipped: 2,
                consecutive_skips: 0
            }
        );
    }

    #[test]
    fn a_peer_with_more_than_a_tick_queued_skips_even_with_buffer_room() {
        let mut state = PeerSendState::default();
        assert_eq!(
            decide_tick_for_peer(&mut state, 60_000, 1_001, 1_000),
            SendDecision::Skip
        );
        assert_eq!(state.ticks_skipped, 1);
    }
}
