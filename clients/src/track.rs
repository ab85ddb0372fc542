//! Reassembling ticks from chunks and measuring delivery, loss, latency and snapshot
//! age. Pure code over bytes: no socket, no clock (times are passed in).
//!
//! A client is sent the tick's directory and the chunks of the cells in its view
//! (`docs/PROTOCOL.md` §6). A tick is *complete* when the directory, the client's own
//! entity (which says where its view is) and every chunk of every occupied cell in the
//! view have arrived; the directory and the per-cell chunk counts make that exact.

use tickcast_shared::Tick;
use tickcast_shared::chunk::{
    Chunk, ChunkError, Directory, EntityRecord, ServerDatagram, VIEW_ALL, ViewRect,
    datagram_messages,
};
use tickcast_shared::msg::Welcome;

use crate::world::WorldView;

/// How many ticks can be in flight at once before the oldest is judged. At 30 Hz that
/// is a quarter of a second of reordering tolerance.
pub const TICKS_IN_FLIGHT: usize = 8;

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

/// One cell's chunks of one tick.
#[derive(Debug, Clone, Copy)]
struct CellState {
    cell: u16,
    count: u16,
    received: u16,
}

#[derive(Debug, Clone, Default)]
struct Slot {
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
    records: Vec<EntityRecord>,
    entities: usize,
    server_time_us: u32,
}

impl Slot {
    fn reset(&mut self, tick: Tick, server_time_us: u32) {
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

    fn is_complete(&self, view: View) -> bool {
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
    fn expected_datagrams(&self, view: View) -> Option<u32> {
        let mut total = 1u32;
        self.for_each_expected_cell(view, |cell| {
            total += self.cell(cell).map_or(1, |c| u32::from(c.count));
        })
        .then_some(total)
    }

    /// Datagrams meant for this client that did not arrive; `fallback` is the
    /// expectation when this tick's own is unknown.
    fn missing(&self, view: View, fallback: u32) -> u32 {
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

/// Delivery figures of one client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// The first tick a datagram arrived for.
    pub first_tick: Option<Tick>,
    /// The newest tick a datagram arrived for.
    pub last_tick: Option<Tick>,
    /// Ticks received whole.
    pub complete: u64,
    /// Datagrams received, directories included (duplicates and stale ones excluded).
    pub chunks_received: u64,
    /// Datagrams of judged ticks that were meant for this client and never arrived
    /// (whole missing ticks counted at the expectation of the last judged tick).
    pub chunks_lost: u64,
    /// Duplicate, stale or inconsistent datagrams.
    pub chunks_ignored: u64,
    /// Entities in the newest complete tick.
    pub entities_last_snapshot: usize,
    /// The newest complete tick.
    pub last_complete_tick: Option<Tick>,
    /// The server's encode time of the newest complete tick (µs, wrapping; the chunk
    /// header's `server_time_us`).
    pub last_complete_server_time_us: Option<u32>,
}

impl Delivery {
    /// Ticks the server published between the first and the last tick seen.
    pub fn expected(&self) -> u64 {
        match (self.first_tick, self.last_tick) {
            (Some(first), Some(last)) => u64::from(last.wrapping_since(first)) + 1,
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

/// Puts a client's datagrams back together into ticks and keeps its delivery figures.
#[derive(Debug, Clone)]
pub struct TickAssembler {
    slots: Vec<Slot>,
    view: View,
    keep_records: bool,
    delivery: Delivery,
    /// Datagrams the last judged or completed tick was expected to have.
    last_expected: u32,
    complete_records: Vec<EntityRecord>,
    ticks_seen: u64,
    judged_losses: u64,
}

impl TickAssembler {
    /// An assembler for a client sent `view`; with `keep_records` it keeps the newest
    /// complete tick's records.
    pub fn new(view: View, keep_records: bool) -> Self {
        Self {
            slots: vec![Slot::default(); TICKS_IN_FLIGHT],
            view,
            keep_records,
            delivery: Delivery::default(),
            last_expected: 1,
            complete_records: Vec::new(),
            ticks_seen: 0,
            judged_losses: 0,
        }
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
    pub fn complete_records(&self) -> &[EntityRecord] {
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
        let slot = &mut self.slots[index];
        if slot.grid.is_some() {
            self.delivery.chunks_ignored += 1;
            return ChunkOutcome::Duplicate;
        }
        slot.grid = Some((header.columns, header.rows));
        slot.occupied.clear();
        slot.occupied.extend_from_slice(directory.bitmap());
        slot.received += 1;
        self.delivery.chunks_received += 1;
        self.settle(index)
    }

    /// Takes one parsed chunk.
    pub fn on_chunk(&mut self, chunk: &Chunk<'_>) -> ChunkOutcome {
        let header = chunk.header;
        let index = match self.slot_for(header.tick, header.server_time_us) {
            Ok(index) => index,
            Err(outcome) => return outcome,
        };
        let slot = &mut self.slots[index];
        let key = u32::from(header.cell) << 16 | u32::from(header.index_in_cell);
        let Err(seen_at) = slot.seen.binary_search(&key) else {
            self.delivery.chunks_ignored += 1;
            return ChunkOutcome::Duplicate;
        };
        let cell_at = match slot.cells.binary_search_by_key(&header.cell, |c| c.cell) {
            Ok(at) if slot.cells[at].count != header.chunks_in_cell => {
                self.delivery.chunks_ignored += 1;
                return ChunkOutcome::Inconsistent;
            }
            Ok(at) => at,
            Err(at) => {
                let state = CellState {
                    cell: header.cell,
                    count: header.chunks_in_cell,
                    received: 0,
                };
                slot.cells.insert(at, state);
                at
            }
        };
        slot.seen.insert(seen_at, key);
        let cell = &mut slot.cells[cell_at];
        cell.received += 1;
        if cell.received == cell.count {
            slot.full_cells += 1;
        }
        if let Some((entity, _)) = self.view.limited_to()
            && slot.center.is_none()
            && chunk.ids_and_kinds().any(|(id, _)| id == entity)
        {
            slot.center = Some(header.cell);
        }
        slot.received += 1;
        slot.entities += usize::from(header.record_count);
        self.delivery.chunks_received += 1;
        if self.keep_records {
            slot.records.extend(chunk.records());
        }
        self.settle(index)
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
        if self.slots[index].tick != Some(tick) {
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
        slot.update_expected(view);
        if slot.complete || !slot.is_complete(view) {
            return ChunkOutcome::Partial;
        }
        slot.complete = true;
        self.last_expected = slot.expected_datagrams(view).unwrap_or(self.last_expected);
        self.delivery.complete += 1;
        let (tick, entities) = (slot.tick.unwrap_or_default(), slot.entities);
        if self
            .delivery
            .last_complete_tick
            .is_none_or(|newest| tick.is_after(newest))
        {
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
        let cutoff = newest.minus(grace);
        for index in 0..self.slots.len() {
            match self.slots[index].tick {
                Some(tick) if newest.since(tick).is_none_or(|age| age >= grace) => {
                    self.judge(index)
                }
                Some(_) => {
                    // In flight: drop it from the figures entirely.
                    let slot = &self.slots[index];
                    if slot.complete {
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
            self.delivery.last_tick = Some(first.latest(cutoff));
        }
        self.delivery()
    }

    fn judge(&mut self, index: usize) {
        let view = self.view;
        let slot = &mut self.slots[index];
        if slot.tick.take().is_some() && !slot.complete {
            let missing = slot.missing(view, self.last_expected);
            if let Some(expected) = slot.expected_datagrams(view) {
                self.last_expected = expected;
            }
            self.judged_losses += u64::from(missing);
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
    world: Option<WorldView>,
    world_update: WorldUpdate,
    latency: LatencyHistogram,
    datagrams: u64,
    bytes: u64,
    malformed: u64,
}

impl SnapshotReceiver {
    /// A receiver that measures only (what a bot needs), for a client sent `view`
    /// ([`View::from_welcome`]).
    pub fn new(view: View) -> Self {
        Self {
            assembler: TickAssembler::new(view, false),
            world: None,
            world_update: WorldUpdate::PerChunk,
            latency: LatencyHistogram::default(),
            datagrams: 0,
            bytes: 0,
            malformed: 0,
        }
    }

    /// A receiver that also keeps a view of the world, updated as `update` says.
    pub fn with_world(view: View, world: WorldView, update: WorldUpdate) -> Self {
        Self {
            assembler: TickAssembler::new(view, update == WorldUpdate::PerTick),
            world: Some(world),
            world_update: update,
            ..Self::new(view)
        }
    }

    /// Starts over for a client sent `view` (a new Welcome): the tick figures restart,
    /// the world view and the datagram counts are kept.
    pub fn set_view(&mut self, view: View) {
        let keep_records = self.world_update == WorldUpdate::PerTick && self.world.is_some();
        self.assembler = TickAssembler::new(view, keep_records);
    }

    /// Takes one datagram that arrived at `now_us` (the [`crate::now_us_wrapping`] clock):
    /// every message in it, in order. The outcome is `Completed` if a message completed a
    /// tick, else the last message's; `Malformed` (counted once) if any message or the
    /// datagram's framing was bad, after the good messages before it were taken.
    pub fn on_datagram(&mut self, bytes: &[u8], now_us: u32) -> DatagramOutcome {
        self.datagrams += 1;
        self.bytes += bytes.len() as u64;
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
        let Some(world) = &mut self.world else {
            return outcome;
        };
        match (self.world_update, outcome) {
            (_, ChunkOutcome::Stale | ChunkOutcome::Inconsistent) => {}
            (WorldUpdate::PerChunk, _) => {
                if let ServerDatagram::Chunk(chunk) = message {
                    world.apply_chunk(chunk);
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

    /// Datagrams that were neither snapshot chunks nor directories.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tickcast_shared::chunk::{
        CHUNK_HEADER_LEN, ChunkHeader, DirectoryHeader, ENTITY_RECORD_LEN, directory_len,
        write_directory, write_header, write_record,
    };

    /// A directory of a `columns × rows` grid with `occupied` cells.
    fn directory(tick: u32, columns: u16, rows: u16, occupied: &[u16]) -> Vec<u8> {
        let mut bytes = vec![0u8; directory_len(usize::from(columns) * usize::from(rows))];
        let header = DirectoryHeader {
            tick: Tick::new(tick),
            server_time_us: 1_000,
            columns,
            rows,
        };
        write_directory(&header, |c| occupied.contains(&(c as u16)), &mut bytes);
        bytes
    }

    /// Chunk `index` of `count` of `cell`, holding entities `net_ids` (x = tick).
    fn chunk(tick: u32, cell: u16, index: u16, count: u16, net_ids: &[u32]) -> Vec<u8> {
        let mut bytes = vec![0u8; CHUNK_HEADER_LEN + net_ids.len() * ENTITY_RECORD_LEN];
        let header = ChunkHeader {
            tick: Tick::new(tick),
            index_in_cell: index,
            chunks_in_cell: count,
            cell,
            record_count: net_ids.len() as u16,
            server_time_us: 1_000,
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

    fn feed(assembler: &mut TickAssembler, bytes: &[u8]) -> ChunkOutcome {
        assembler.on_message(&tickcast_shared::chunk::parse_datagram(bytes).unwrap())
    }

    /// A datagram carrying `messages`, each behind its length.
    fn datagram(messages: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for message in messages {
            out.extend_from_slice(&(message.len() as u16).to_le_bytes());
            out.extend_from_slice(message);
        }
        out
    }

    /// A whole tick on a 2 × 1 grid: cell 0 in two chunks, cell 1 in one.
    fn whole_tick(tick: u32) -> [Vec<u8>; 4] {
        [
            directory(tick, 2, 1, &[0, 1]),
            chunk(tick, 0, 0, 2, &[1]),
            chunk(tick, 0, 1, 2, &[2]),
            chunk(tick, 1, 0, 1, &[3]),
        ]
    }

    #[test]
    fn whole_ticks_complete_and_missing_chunks_count_as_lost() {
        let mut a = TickAssembler::new(View::ALL, false);
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
        let mut a = TickAssembler::new(View::ALL, false);
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
        let mut a = TickAssembler::new(view, false);
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
        let mut a = TickAssembler::new(View::ALL, false);
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
        let mut a = TickAssembler::new(View::ALL, false);
        for tick in [10, 8, 9] {
            // 8 is older than the first tick seen, still in flight.
            feed(&mut a, &directory(tick, 1, 1, &[]));
        }
        let d = a.finish(0);
        assert_eq!((d.complete, d.expected()), (3, 3));
    }

    #[test]
    fn finish_leaves_the_newest_ticks_out() {
        let mut a = TickAssembler::new(View::ALL, false);
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

    /// Where a run's ticks start: anywhere in the tick space, and often just before the
    /// wrap so that a run of 40 ticks crosses it.
    fn run_start() -> impl Strategy<Value = u32> {
        prop_oneof![any::<u32>(), (u32::MAX - 40)..=u32::MAX, Just(0)]
    }

    /// A tick of the run starting at `start`: within 40 ticks of it, in any order.
    fn tick_of_run(start: u32) -> impl Strategy<Value = u32> + Clone {
        (0u32..40).prop_map(move |offset| start.wrapping_add(offset))
    }

    fn valid_chunk(ticks: impl Strategy<Value = u32>) -> impl Strategy<Value = Vec<u8>> {
        (
            ticks,
            1u16..6,
            0u16..6,
            proptest::collection::vec(any::<[u8; 14]>(), 0..4),
        )
            .prop_map(|(tick, count, index, records)| {
                let mut bytes = vec![0u8; CHUNK_HEADER_LEN];
                let header = ChunkHeader {
                    tick: Tick::new(tick),
                    index_in_cell: index % count,
                    chunks_in_cell: count,
                    cell: index % 3,
                    record_count: records.len() as u16,
                    ..Default::default()
                };
                write_header(&header, (&mut bytes[..]).try_into().unwrap());
                bytes.extend(records.iter().flatten());
                bytes
            })
    }

    /// Up to 60 server datagrams whose messages carry ticks drawn from `ticks`: garbage,
    /// one or two chunks, or a directory of a 3 × 1 grid.
    fn server_datagrams(
        ticks: impl Strategy<Value = u32> + Clone,
    ) -> impl Strategy<Value = Vec<Vec<u8>>> {
        let one = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..80),
            valid_chunk(ticks.clone()).prop_map(|c| datagram(&[&c])),
            (valid_chunk(ticks.clone()), valid_chunk(ticks.clone()))
                .prop_map(|(a, b)| datagram(&[&a, &b])),
            (ticks, 0u8..8).prop_map(|(tick, bits)| {
                let occupied: Vec<u16> = (0..3).filter(|c| bits & (1 << c) != 0).collect();
                datagram(&[&directory(tick, 3, 1, &occupied)])
            }),
        ];
        proptest::collection::vec(one, 0..60)
    }

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
        let mut r = SnapshotReceiver::with_world(view, WorldView::with_capacity(8), update);
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

        /// Whole ticks in order from any start, across the wrap: every one is expected
        /// and delivered, and the newest is the last one sent.
        #[test]
        fn consecutive_ticks_from_any_start_are_all_delivered(start in run_start(), count in 1u32..40) {
            let mut a = TickAssembler::new(View::ALL, false);
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
        let mut a = TickAssembler::new(View::ALL, false);
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

    /// `slot_for` checked the wrap and then compared `tick > newest`, so tick 0 after
    /// `u32::MAX` never became the newest: the run stopped growing at the wrap and the
    /// per-tick world view froze.
    #[test]
    fn the_newest_tick_advances_across_the_wrap() {
        let mut r =
            SnapshotReceiver::with_world(View::ALL, WorldView::default(), WorldUpdate::PerTick);
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
        assert_eq!(r.world().unwrap().get(1).map(|e| e.x), Some(3));
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
        let mut per_chunk =
            SnapshotReceiver::with_world(View::ALL, WorldView::default(), WorldUpdate::PerChunk);
        let mut per_tick =
            SnapshotReceiver::with_world(View::ALL, WorldView::default(), WorldUpdate::PerTick);
        let x_of = |r: &SnapshotReceiver, id| r.world().unwrap().get(id).map(|e| e.x);
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
    fn the_receiver_counts_malformed_datagrams_and_measures_age() {
        let mut r = SnapshotReceiver::new(View::ALL);
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
