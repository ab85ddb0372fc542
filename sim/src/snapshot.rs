//! The snapshot system: hash the world and encode it once per tick into a pooled buffer.
//!
//! Each tick the entities are sorted by (cell, net id), hashed, and written as chunks
//! into a buffer taken from a small fixed pool. The buffer is frozen into `Bytes` and
//! published; the network thread sends slices of it (refcount clones) to every peer.
//! When every peer's copy is gone the buffer is free again and is reused in place, so in
//! steady state a tick allocates nothing.

use std::sync::Arc;

use bevy_ecs::prelude::*;
use bytes::{Bytes, BytesMut};
use tickcast_shared::Tick;
use tickcast_shared::chunk::{
    CHUNK_HEADER_LEN, ChunkHeader, DirectoryHeader, TICK_FRAME_PREFIX_LEN, directory_len,
    write_directory, write_header,
};
use tickcast_shared::index::TickIndex;
use tickcast_shared::schema::RECORD_PREFIX_LEN;

use crate::config::SimConfig;
use crate::engine::{
    Controlled, CurrentTick, Game, NetId, RecordLayouts, RecordWriter, Settings, SimCounters,
};
use crate::rng::SimRng;

/// A fixed set of reusable tick buffers.
#[derive(Debug)]
pub struct SnapshotPool {
    slots: Vec<PoolSlot>,
    next: usize,
}

#[derive(Debug)]
struct PoolSlot {
    buffer: BytesMut,
    /// The capacity the slot's allocation has when it is reclaimed whole.
    capacity: usize,
}

/// What [`SnapshotPool::acquire`] found.
#[derive(Debug)]
pub enum Acquired<'a> {
    /// A free buffer, cleared, with room for the request.
    Free(&'a mut BytesMut),
    /// A free buffer that had to be replaced by a larger one (an allocation).
    Grown(&'a mut BytesMut),
    /// Every buffer was still held (a stuck peer's queue keeps slices of old ticks): the
    /// oldest was left to its holders and replaced by a new one (an allocation).
    Detached(&'a mut BytesMut),
}

impl SnapshotPool {
    /// A pool of `slots` buffers of `capacity` bytes each, allocated now.
    pub fn new(slots: usize, capacity: usize) -> Self {
        Self {
            slots: (0..slots)
                .map(|_| PoolSlot {
                    buffer: BytesMut::with_capacity(capacity),
                    capacity,
                })
                .collect(),
            next: 0,
        }
    }

    /// A cleared buffer with at least `needed` bytes of room whose previous contents
    /// nobody holds any more. Never blocks; grows a free buffer only if the world
    /// outgrew it.
    ///
    /// When every buffer is still held — a peer that stopped acknowledging keeps slices
    /// of the ticks in its send queue — the oldest is *detached*: the pool drops its own
    /// handle (the holders keep the memory alive until quinn drops their datagrams or the
    /// connection closes) and takes a new allocation in its place. A stuck peer thus costs
    /// the ticks in its own bounded queue, and never stops the broadcast for everyone.
    pub fn acquire(&mut self, needed: usize) -> Acquired<'_> {
        let count = self.slots.len();
        for offset in 0..count {
            let index = (self.next + offset) % count;
            let slot = &mut self.slots[index];
            // Reclaiming the whole allocation succeeds only when no published `Bytes`
            // still points into it; it never allocates.
            if !slot.buffer.try_reclaim(slot.capacity) {
                continue;
            }
            self.next = (index + 1) % count;
            slot.buffer.clear();
            if slot.capacity >= needed {
                return Acquired::Free(&mut self.slots[index].buffer);
            }
            // Grow with headroom so a slowly growing world does not grow every tick.
            let capacity = needed + needed / 4;
            *slot = PoolSlot {
                buffer: BytesMut::with_capacity(capacity),
                capacity,
            };
            return Acquired::Grown(&mut self.slots[index].buffer);
        }
        // Round-robin use makes `next` the slot published longest ago.
        let index = self.next;
        self.next = (index + 1) % count;
        let capacity = self.slots[index].capacity.max(needed);
        self.slots[index] = PoolSlot {
            buffer: BytesMut::with_capacity(capacity),
            capacity,
        };
        Acquired::Detached(&mut self.slots[index].buffer)
    }
}

/// A small ring of tick indexes, published beside the tick buffers. The net thread holds
/// an index only while it fans its tick out (the latest-wins slot keeps the newest one),
/// so by the time the ring comes round an index is free again and is refilled in place.
#[derive(Debug)]
pub struct IndexPool {
    slots: Vec<Arc<TickIndex>>,
    next: usize,
}

impl IndexPool {
    /// A ring of `slots` indexes (at least one).
    pub fn new(slots: usize) -> Self {
        Self {
            slots: (0..slots.max(1)).map(|_| Arc::default()).collect(),
            next: 0,
        }
    }

    /// The next index to fill, and whether it had to be replaced by a new allocation
    /// because someone still held it. Never blocks.
    pub fn acquire(&mut self) -> (&mut TickIndex, bool) {
        let index = self.next;
        self.next = (index + 1) % self.slots.len();
        let slot = &mut self.slots[index];
        let replaced = Arc::get_mut(slot).is_none();
        if replaced {
            *slot = Arc::default();
        }
        (Arc::make_mut(slot), replaced)
    }

    /// The index filled by the last [`Self::acquire`], to publish (a refcount clone).
    pub fn last(&self) -> Arc<TickIndex> {
        let last = (self.next + self.slots.len() - 1) % self.slots.len();
        self.slots[last].clone()
    }
}

/// A tick as the encoder publishes it: the bytes every peer is sent slices of, and the
/// index of where everything in them is.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The tick buffer (`tickcast_shared::chunk`).
    pub bytes: Bytes,
    /// Its frames, cells and player cells.
    pub index: Arc<TickIndex>,
}

/// One entity, ready to sort and encode: its sort key and where its record's bytes are.
#[derive(Debug, Clone, Copy, Default)]
struct Row {
    /// `cell << 32 | net_id`: the encoding order.
    key: u64,
    /// Offset of the record in the tick's record bytes.
    at: u32,
    /// Record length, prefix included.
    len: u8,
    /// Whether a client controls the entity (its cell goes in the tick index).
    controlled: bool,
}

impl Row {
    fn cell(&self) -> u16 {
        (self.key >> 32) as u16
    }

    fn net_id(&self) -> u32 {
        self.key as u32
    }
}

/// The snapshot system's state: pool, scratch space, and this tick's results.
#[derive(Debug, Resource)]
pub struct SnapshotState {
    pool: SnapshotPool,
    indexes: IndexPool,
    /// Rows in query order, then (in `sorted`) in encoding order.
    rows: Vec<Row>,
    sorted: Vec<Row>,
    /// The records' bytes, written by the game in query order, one slot of `slot` bytes
    /// per entity (the longest record rounded up to [`BLOCK`]).
    records: Vec<u8>,
    slot: usize,
    /// Per cell: rows in it, then (after the prefix sum) where its rows start.
    cell_starts: Vec<u32>,
    /// Per cell: its chunks this tick.
    chunks_in_cell: Vec<u16>,
    /// The server's clock for this tick's chunk headers, set by the loop before `step`.
    pub server_time_us: u32,
    /// The state hash of the last tick.
    pub hash: u64,
    /// The last tick's tick buffer and index, until taken.
    pub published: Option<Snapshot>,
    /// Entities in the last snapshot.
    pub entities: usize,
    /// Chunks in the last snapshot.
    pub chunks: usize,
}

impl SnapshotState {
    /// State sized for `config` and records of at most `record_len` bytes.
    pub fn new(config: &SimConfig, record_len: usize) -> Self {
        let expected = if config.expected_entities > 0 {
            config.expected_entities
        } else {
            config.npcs as usize + 256
        };
        Self {
            pool: SnapshotPool::new(
                config.snapshot_buffers,
                tick_buffer_len(expected, config, record_len),
            ),
            indexes: IndexPool::new(config.snapshot_buffers),
            rows: Vec::with_capacity(expected),
            sorted: Vec::with_capacity(expected),
            records: vec![0; expected * slot_len(record_len)],
            slot: slot_len(record_len),
            cell_starts: Vec::with_capacity(config.cells() + 1),
            chunks_in_cell: Vec::with_capacity(config.cells()),
            server_time_us: 0,
            hash: 0,
            published: None,
            entities: 0,
            chunks: 0,
        }
    }
}

/// An upper bound of the tick buffer for `entities` entities of at most `record_len`
/// bytes in `config`'s grid: the directory, then at most one partly filled chunk per
/// occupied cell plus the full ones.
pub fn tick_buffer_len(entities: usize, config: &SimConfig, record_len: usize) -> usize {
    let per_chunk = records_per_chunk(config.chunk_payload, record_len);
    let chunks = entities.div_ceil(per_chunk) + entities.min(config.cells());
    TICK_FRAME_PREFIX_LEN
        + directory_len(config.cells())
        + chunks * (TICK_FRAME_PREFIX_LEN + CHUNK_HEADER_LEN)
        + entities * record_len
}

/// Records are copied into the tick buffer in blocks of this many bytes (fixed-size
/// copies the compiler turns into single moves; the tail of the last block is
/// overwritten by whatever comes next, or cut off).
const BLOCK: usize = 16;

/// An entity's slot in the scratch space: its longest record rounded up to whole blocks.
fn slot_len(record_len: usize) -> usize {
    record_len.div_ceil(BLOCK).max(1) * BLOCK
}

/// Whole records of `record_len` bytes a chunk of at most `payload` bytes holds (at
/// least 1: the engine refuses a payload too small for its game's longest record).
pub fn records_per_chunk(payload: usize, record_len: usize) -> usize {
    (payload.saturating_sub(CHUNK_HEADER_LEN) / record_len.max(1)).max(1)
}

/// The state hash: the tick, the RNG and every record in encoding order, folded by
/// 64-bit multiply-xor mixing (fast, and any divergence in one byte changes the result).
/// The encoder feeds it as it writes each record, so the records are read once.
#[derive(Debug, Clone, Copy)]
struct StateHasher(u64);

impl StateHasher {
    fn new(tick: u32, rng: u64) -> Self {
        let mut hasher = Self(0xcbf2_9ce4_8422_2325);
        hasher.mix(u64::from(tick));
        hasher.mix(rng);
        hasher
    }

    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(0x0000_0100_0000_01b3);
        self.0 ^= self.0 >> 29;
    }

    /// One block of a record as two little-endian words, of which the first `valid`
    /// bytes are the record's (the rest of the slot is left from earlier ticks and is
    /// masked off).
    #[inline]
    fn block(&mut self, block: &[u8; BLOCK], valid: usize) {
        let word = |half: &[u8], valid: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(half);
            let word = u64::from_le_bytes(bytes);
            match valid {
                0 => 0,
                1..=7 => word & ((1u64 << (8 * valid)) - 1),
                _ => word,
            }
        };
        let (low, high) = block.split_at(8);
        self.mix(word(low, valid.min(8)));
        self.mix(word(high, valid.saturating_sub(8)));
    }
}

/// Sorts the world into rows, hashes it, and encodes the tick buffer: `G`'s record
/// writer, monomorphised, writes each entity's fields.
#[allow(clippy::too_many_arguments)]
pub fn build_snapshot<G: Game>(
    settings: Res<Settings>,
    layouts: Res<RecordLayouts>,
    tick: Res<CurrentTick>,
    rng: Res<SimRng>,
    mut counters: ResMut<SimCounters>,
    mut state: ResMut<SnapshotState>,
    entities: Query<(&NetId, Has<Controlled>, G::Replicated)>,
) {
    let config = &settings.0;
    let state = &mut *state;
    let columns = config.cell_columns() as u32;
    let (max_column, max_row) = (columns - 1, config.cell_rows() as u32 - 1);
    state.rows.clear();
    let slot = state.slot;
    let mut record_bytes = 0;
    for (id, controlled, item) in &entities {
        let at = state.rows.len() * slot;
        if state.records.len() < at + slot {
            // The world outgrew the scratch space: grow it (the only allocation here).
            let grown = (at + slot).max(state.records.len() * 2);
            state.records.resize(grown, 0);
        }
        let record = &mut state.records[at..at + slot];
        let mut writer = RecordWriter::new(record, RECORD_PREFIX_LEN);
        let placed = G::write_record(item, &mut writer);
        let len = writer.len();
        if len != layouts.len(placed.kind) {
            counters.records_malformed += 1;
            continue;
        }
        record[..4].copy_from_slice(&id.0.to_le_bytes());
        record[4] = placed.kind;
        let column = layouts.cell_of(placed.kind, placed.x).min(max_column);
        let row = layouts.cell_of(placed.kind, placed.y).min(max_row);
        let cell = u64::from(row * columns + column);
        record_bytes += len;
        state.rows.push(Row {
            key: cell << 32 | u64::from(id.0),
            at: at as u32,
            len: len as u8,
            controlled,
        });
    }
    sort_by_cell_then_id(
        &state.rows,
        &mut state.sorted,
        &mut state.cell_starts,
        config.cells(),
    );
    state.entities = state.sorted.len();

    let grid = Grid {
        columns: config.cell_columns() as u16,
        rows: config.cell_rows() as u16,
        payload: config.chunk_payload,
    };
    let chunk_count = count_chunks(
        &grid,
        &state.sorted,
        &state.cell_starts,
        &mut state.chunks_in_cell,
    );
    // Room for the last record's block to run past the end before the buffer is cut.
    let needed = encoded_len(&grid, chunk_count, record_bytes) + BLOCK;
    let buffer = match state.pool.acquire(needed) {
        Acquired::Free(buffer) => buffer,
        Acquired::Grown(buffer) => {
            counters.snapshot_buffer_grows += 1;
            buffer
        }
        Acquired::Detached(buffer) => {
            counters.snapshot_buffers_detached += 1;
            buffer
        }
    };
    let (index, replaced) = state.indexes.acquire();
    if replaced {
        counters.snapshot_buffers_detached += 1;
    }
    let tick_rows = TickRows {
        rows: &state.sorted,
        records: &state.records,
        cell_starts: &state.cell_starts,
        chunks_in_cell: &state.chunks_in_cell,
    };
    let mut hasher = StateHasher::new(tick.0.get(), rng.state());
    encode_tick(
        buffer,
        index,
        &grid,
        &tick_rows,
        chunk_count,
        record_bytes,
        tick.0,
        state.server_time_us,
        &mut hasher,
    );
    state.hash = hasher.0;
    state.chunks = chunk_count;
    state.published = Some(Snapshot {
        bytes: buffer.split().freeze(),
        index: state.indexes.last(),
    });
}

/// Orders `rows` by (cell, net id) into `sorted`: a counting sort by cell (linear), then
/// a sort by id within each cell. Query order is mostly id order already (NPCs never
/// leave their table), so the per-cell sorts see nearly sorted runs. Leaves each cell's
/// start offset in `cell_starts` (`cells + 1` entries).
fn sort_by_cell_then_id(
    rows: &[Row],
    sorted: &mut Vec<Row>,
    cell_starts: &mut Vec<u32>,
    cells: usize,
) {
    cell_starts.clear();
    cell_starts.resize(cells + 1, 0);
    for row in rows {
        cell_starts[usize::from(row.cell()) + 1] += 1;
    }
    for cell in 0..cells {
        cell_starts[cell + 1] += cell_starts[cell];
    }
    sorted.clear();
    sorted.resize(rows.len(), Row::default());
    // cell_starts[c] is now where cell c starts; use it as c's write cursor.
    for row in rows {
        let cell = usize::from(row.cell());
        let at = cell_starts[cell] as usize;
        sorted[at] = *row;
        cell_starts[cell] += 1;
    }
    // Each cursor now sits at the end of its cell, which is the next cell's start:
    // shift them back by one cell.
    for cell in (1..=cells).rev() {
        cell_starts[cell] = cell_starts[cell - 1];
    }
    cell_starts[0] = 0;
    for cell in 0..cells {
        let range = cell_starts[cell] as usize..cell_starts[cell + 1] as usize;
        sorted[range].sort_unstable_by_key(|row| row.key);
    }
}

/// The grid's shape and the chunk limit, as the encoder needs them.
#[derive(Debug, Clone, Copy)]
struct Grid {
    columns: u16,
    rows: u16,
    /// The largest chunk, header included.
    payload: usize,
}

impl Grid {
    fn cells(&self) -> usize {
        usize::from(self.columns) * usize::from(self.rows)
    }
}

/// A tick's rows in encoding order, their record bytes, each cell's start and its
/// chunk count.
#[derive(Debug, Clone, Copy)]
struct TickRows<'a> {
    rows: &'a [Row],
    records: &'a [u8],
    cell_starts: &'a [u32],
    chunks_in_cell: &'a [u16],
}

impl TickRows<'_> {
    fn cell(&self, cell: usize) -> &[Row] {
        &self.rows[self.cell_starts[cell] as usize..self.cell_starts[cell + 1] as usize]
    }
}

/// Splits one cell's rows into chunks: each chunk takes records in order while the
/// header and its records fit `payload` (always at least one record). Calls `chunk`
/// with each chunk's rows; returns how many chunks there were.
fn split_cell(rows: &[Row], payload: usize, mut chunk: impl FnMut(&[Row])) -> usize {
    let (mut start, mut bytes, mut count) = (0, CHUNK_HEADER_LEN, 0);
    for (i, row) in rows.iter().enumerate() {
        let len = usize::from(row.len);
        if i > start && bytes + len > payload {
            chunk(&rows[start..i]);
            count += 1;
            (start, bytes) = (i, CHUNK_HEADER_LEN);
        }
        bytes += len;
    }
    if start < rows.len() {
        chunk(&rows[start..]);
        count += 1;
    }
    count
}

/// Chunks needed: each non-empty cell takes the chunks [`split_cell`] cuts (kept per
/// cell in `per_cell` for the encoder); an empty cell takes none (the directory says it
/// is empty).
fn count_chunks(grid: &Grid, rows: &[Row], cell_starts: &[u32], per_cell: &mut Vec<u16>) -> usize {
    per_cell.clear();
    per_cell.extend(
        cell_starts
            .windows(2)
            .map(|w| split_cell(&rows[w[0] as usize..w[1] as usize], grid.payload, |_| {}) as u16),
    );
    per_cell.iter().map(|&n| usize::from(n)).sum()
}

/// Bytes of a tick buffer: the directory frame, then the chunk frames.
fn encoded_len(grid: &Grid, chunk_count: usize, record_bytes: usize) -> usize {
    TICK_FRAME_PREFIX_LEN
        + directory_len(grid.cells())
        + chunk_count * (TICK_FRAME_PREFIX_LEN + CHUNK_HEADER_LEN)
        + record_bytes
}

/// Writes the tick buffer: the directory, then each occupied cell's chunks in cell order;
/// and its index, as the bytes are laid out.
#[allow(clippy::too_many_arguments)]
fn encode_tick(
    buffer: &mut BytesMut,
    index: &mut TickIndex,
    grid: &Grid,
    tick_rows: &TickRows<'_>,
    chunk_count: usize,
    record_bytes: usize,
    tick: Tick,
    server_time_us: u32,
    hasher: &mut StateHasher,
) {
    let total = encoded_len(grid, chunk_count, record_bytes);
    // The pool guaranteed the capacity (and a block more, for the last record's block);
    // resizing only writes zeros, it never allocates.
    buffer.resize(total + BLOCK, 0);
    let out = &mut buffer[..];
    index.clear(grid.columns, grid.rows);
    let cell_starts = tick_rows.cell_starts;
    let occupied = |cell: usize| cell_starts[cell + 1] > cell_starts[cell];
    let directory = directory_len(grid.cells());
    out[..TICK_FRAME_PREFIX_LEN].copy_from_slice(&(directory as u16).to_le_bytes());
    let mut at = TICK_FRAME_PREFIX_LEN;
    index.push_frame(at..at + directory);
    write_directory(
        &DirectoryHeader {
            tick,
            server_time_us,
            columns: grid.columns,
            rows: grid.rows,
        },
        occupied,
        &mut out[at..at + directory],
    );
    at += directory;
    for cell in (0..grid.cells()).filter(|&cell| occupied(cell)) {
        let cell_rows = tick_rows.cell(cell);
        let chunks_in_cell = tick_rows.chunks_in_cell[cell];
        index.begin_cell(cell as u16);
        let mut position = 0u16;
        split_cell(cell_rows, grid.payload, |chunk_rows| {
            let body: usize = chunk_rows.iter().map(|row| usize::from(row.len)).sum();
            let len = CHUNK_HEADER_LEN + body;
            out[at..at + TICK_FRAME_PREFIX_LEN].copy_from_slice(&(len as u16).to_le_bytes());
            at += TICK_FRAME_PREFIX_LEN;
            index.push_frame(at..at + len);
            let header = ChunkHeader {
                tick,
                index_in_cell: position,
                chunks_in_cell,
                cell: cell as u16,
                record_count: chunk_rows.len() as u16,
                server_time_us,
            };
            if let Some(slot) = out
                .get_mut(at..at + CHUNK_HEADER_LEN)
                .and_then(|s| s.try_into().ok())
            {
                write_header(&header, slot);
            }
            at += CHUNK_HEADER_LEN;
            for row in chunk_rows {
                if row.controlled {
                    index.push_player(row.net_id(), cell as u16);
                }
                // Whole blocks: fixed-size moves; the bytes past `len` are overwritten by
                // what follows (writes only go forward) or cut off at the end.
                let (from, len) = (row.at as usize, usize::from(row.len));
                for block in 0..len.div_ceil(BLOCK) {
                    let (to, from) = (at + block * BLOCK, from + block * BLOCK);
                    let Some(bytes) = tick_rows
                        .records
                        .get(from..from + BLOCK)
                        .and_then(|b| <&[u8; BLOCK]>::try_from(b).ok())
                    else {
                        continue;
                    };
                    out[to..to + BLOCK].copy_from_slice(bytes);
                    if block == 0 {
                        hasher.mix(row.key);
                    }
                    hasher.block(bytes, len - block * BLOCK);
                }
                at += len;
            }
            position += 1;
        });
    }
    index.finish();
    buffer.truncate(at);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickcast_shared::chunk::{KIND_PLAYER, parse_chunk, parse_directory, tick_frames};

    /// Rows of 14-byte records (net id, kind 1 for every third entity and 2 otherwise,
    /// then zeros), and their bytes.
    fn rows(cells_and_ids: &[(u16, u32)]) -> (Vec<Row>, Vec<u8>) {
        let mut records = Vec::new();
        let rows = cells_and_ids
            .iter()
            .map(|&(cell, id)| {
                // One 16-byte slot per entity, as build_snapshot lays them out.
                let at = records.len() as u32;
                records.extend_from_slice(&id.to_le_bytes());
                // Every third entity a player, for the index's player cells.
                records.push(if id % 3 == 0 { KIND_PLAYER } else { 2 });
                records.extend_from_slice(&[0; 9]);
                records.extend_from_slice(&[0xEE; 2]); // past the record: never sent
                Row {
                    key: u64::from(cell) << 32 | u64::from(id),
                    at,
                    len: 14,
                    controlled: id % 3 == 0,
                }
            })
            .collect();
        (rows, records)
    }

    /// Encodes `rows` (already in cell order) on a `columns × rows` grid and returns the
    /// directory's occupied cells and each chunk as (cell, index, count, ids).
    #[allow(clippy::type_complexity)]
    fn encode(
        cells_and_ids: &[(u16, u32)],
        grid: Grid,
    ) -> (Vec<u16>, Vec<(u16, u16, u16, Vec<u32>)>) {
        let (rows, records) = rows(cells_and_ids);
        let mut sorted = Vec::new();
        let mut starts = Vec::new();
        sort_by_cell_then_id(&rows, &mut sorted, &mut starts, grid.cells());
        let mut per_cell = Vec::new();
        let count = count_chunks(&grid, &sorted, &starts, &mut per_cell);
        let record_bytes = sorted.len() * 14;
        let mut buffer = BytesMut::with_capacity(4096);
        let mut index = TickIndex::default();
        let tick_rows = TickRows {
            rows: &sorted,
            records: &records,
            cell_starts: &starts,
            chunks_in_cell: &per_cell,
        };
        encode_tick(
            &mut buffer,
            &mut index,
            &grid,
            &tick_rows,
            count,
            record_bytes,
            Tick::new(9),
            77,
            &mut StateHasher::new(9, 0),
        );
        assert_eq!(buffer.len(), encoded_len(&grid, count, record_bytes));
        let bytes = buffer.freeze();
        // The index the encoder wrote is the one a parser finds: the fan-out may trust it.
        assert_eq!(index, TickIndex::of_buffer(&bytes));
        for &(cell, id) in cells_and_ids.iter().filter(|(_, id)| id % 3 == 0) {
            assert_eq!(index.player_cell(id), Some(cell));
        }
        let mut frames = tick_frames(&bytes);
        let directory = parse_directory(&bytes[frames.next().unwrap()]).unwrap();
        assert_eq!(directory.header.tick, Tick::new(9));
        let occupied = (0..grid.cells() as u16)
            .filter(|&c| directory.occupied(c))
            .collect();
        let chunks = frames
            .map(|r| {
                let chunk = parse_chunk(&bytes[r]).unwrap();
                let ids: Vec<u32> = chunk.records().map(|r| r.net_id).collect();
                let h = chunk.header;
                assert_eq!((h.tick, h.server_time_us), (Tick::new(9), 77));
                (h.cell, h.index_in_cell, h.chunks_in_cell, ids)
            })
            .collect();
        (occupied, chunks)
    }

    /// A grid whose chunks hold `per_chunk` 14-byte records.
    fn grid(columns: u16, rows: u16, per_chunk: usize) -> Grid {
        Grid {
            columns,
            rows,
            payload: CHUNK_HEADER_LEN + per_chunk * 14,
        }
    }

    proptest::proptest! {
        /// Whatever the world, the index the encoder publishes is the one a parser of its
        /// bytes finds (`encode` asserts it), so the fan-out can trust it unparsed.
        #[test]
        fn the_published_index_matches_the_bytes(
            entities in proptest::collection::btree_set(0u32..5_000, 0..200),
            cells in proptest::collection::vec(0u16..12, 200),
            per_chunk in 1usize..6,
        ) {
            let grid = grid(4, 3, per_chunk);
            let mut rows: Vec<(u16, u32)> =
                entities.iter().zip(&cells).map(|(&id, &cell)| (cell, id)).collect();
            rows.sort_unstable();
            encode(&rows, grid);
        }
    }

    #[test]
    fn chunks_split_at_cells_and_at_the_record_limit() {
        let grid = grid(2, 2, 2);
        let (occupied, chunks) = encode(&[(0, 1), (0, 2), (0, 3), (1, 4), (3, 5), (3, 6)], grid);
        assert_eq!(occupied, vec![0, 1, 3], "cell 2 is empty");
        assert_eq!(
            chunks,
            vec![
                (0, 0, 2, vec![1, 2]),
                (0, 1, 2, vec![3]),
                (1, 0, 1, vec![4]),
                (3, 0, 1, vec![5, 6])
            ]
        );
    }

    #[test]
    fn an_empty_world_is_a_directory_alone() {
        let grid = grid(3, 3, 80);
        let (occupied, chunks) = encode(&[], grid);
        assert!(occupied.is_empty() && chunks.is_empty());
    }

    #[test]
    fn rows_sort_by_cell_then_id_whatever_their_order() {
        let (unordered, _) = rows(&[(2, 9), (0, 5), (1, 4), (0, 1), (2, 3), (0, 2)]);
        let mut sorted = Vec::new();
        let mut starts = Vec::new();
        sort_by_cell_then_id(&unordered, &mut sorted, &mut starts, 4);
        let keys: Vec<(u16, u32)> = sorted.iter().map(|r| (r.cell(), r.net_id())).collect();
        assert_eq!(keys, vec![(0, 1), (0, 2), (0, 5), (1, 4), (2, 3), (2, 9)]);
        assert_eq!(starts, vec![0, 3, 4, 6, 6]);
    }

    fn publish(pool: &mut SnapshotPool, text: &[u8]) -> (&'static str, Bytes) {
        let (how, buffer) = match pool.acquire(64) {
            Acquired::Free(buffer) => ("free", buffer),
            Acquired::Grown(buffer) => ("grown", buffer),
            Acquired::Detached(buffer) => ("detached", buffer),
        };
        buffer.extend_from_slice(text);
        (how, buffer.split().freeze())
    }

    #[test]
    fn held_buffers_are_never_reused_released_ones_are_and_a_full_pool_detaches() {
        let mut pool = SnapshotPool::new(2, 128);
        let (how, one) = publish(&mut pool, b"one");
        assert_eq!(how, "free");
        let (how, two) = publish(&mut pool, b"two");
        assert_eq!(how, "free");
        let slice_of_one = one.slice(0..2);
        drop(one);
        drop(two);
        // Tick two's buffer is free again; tick one's is still held through a slice.
        let (how, three) = publish(&mut pool, b"three");
        assert_eq!(how, "free");
        // Both buffers held: the oldest is left to its holders, a new one takes its place.
        let (how, four) = publish(&mut pool, b"four");
        assert_eq!(how, "detached");
        assert_eq!(
            &slice_of_one[..],
            b"on",
            "a detached buffer's holders keep their bytes"
        );
        assert_eq!(&three[..], b"three", "published bytes never change");
        drop(three);
        let (how, five) = publish(&mut pool, b"five");
        assert_eq!(how, "free");
        assert_eq!((&four[..], &five[..]), (&b"four"[..], &b"five"[..]));
    }

    #[test]
    fn a_free_buffer_grows_when_the_world_outgrows_it() {
        let mut pool = SnapshotPool::new(2, 16);
        assert!(matches!(pool.acquire(1000), Acquired::Grown(b) if b.capacity() >= 1000));
    }
}
