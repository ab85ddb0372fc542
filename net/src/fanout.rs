//! The fan-out's per-peer parts: which datagrams of a tick a peer is sent (interest
//! management over the tick's index, as the sim published it) and when it gets the tick
//! (backpressure, [`offer_tick`]). Planned once per peer per tick; nothing here parses
//! the tick buffer.
//!
//! **Latest wins.** A peer is handed a tick only when its quinn datagram queue is empty
//! and its congestion window has room for a packet now ([`SendRoom`]); otherwise the tick
//! waits in the peer's [`PeerOutbox`], a newer tick replacing it, until the driver finds
//! the queue empty and the window open ([`release_held`], when an ACK frees room). A tick
//! handed to quinn behind a closed window waits in quinn's queue, which can only be
//! appended to and drops nothing it holds, up to a round trip, and goes out that old; in
//! the outbox it is replaced by the next tick instead. Measured on the link model
//! (`link_model.rs`, the netsim table's capped row, 8 streams into a link half their
//! rate): the p99 age of a chunk on arrival from 342 to 159 ms and the median from 215 to
//! 94 ms against the rule before ([`SendRule::TwoTicks`]: a tick sent while at most the
//! peer's last tick was queued), for a few points fewer ticks through the link (48 % to
//! 38 % of chunks).

use std::cell::Cell;
use std::ops::Range;

use tickcast_shared::chunk::{TICK_FRAME_PREFIX_LEN, VIEW_ALL, ViewRect};
use tickcast_shared::index::TickIndex;

use crate::congestion::{SendRoom, room_is_live};

thread_local! {
    static IN_FAN_OUT: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling thread is inside the fan-out (indexing a tick and sending it to
/// every peer). For a counting global allocator: the allocations made while this is
/// true are the fan-out's own, quinn's `send_datagram` included (the `count-allocs`
/// server build reports them as `fanout_allocs`). Never allocates.
pub fn in_fan_out() -> bool {
    IN_FAN_OUT.try_with(Cell::get).unwrap_or(false)
}

/// Marks the calling thread as inside the fan-out until dropped.
pub(crate) struct FanOutScope(());

impl FanOutScope {
    pub(crate) fn enter() -> Self {
        IN_FAN_OUT.set(true);
        Self(())
    }
}

impl Drop for FanOutScope {
    fn drop(&mut self) {
        IN_FAN_OUT.set(false);
    }
}

/// The shape of a peer's datagrams: what quinn charges per queued datagram, and the
/// largest datagram built from consecutive frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatagramShape {
    /// What quinn charges a peer's send buffer per queued datagram on top of its payload.
    pub entry_cost: usize,
    /// The largest datagram to build from several frames (a larger frame goes alone).
    pub bundle_limit: usize,
}

impl DatagramShape {
    /// This shape on a path that carries datagrams of at most `room` bytes now (quinn's
    /// `max_datagram_size`, which follows the path MTU): bundles no larger than that, so
    /// a run of frames is split into smaller datagrams rather than refused. A single
    /// frame always fits any QUIC path (`tickcast_shared::chunk::MAX_CHUNK_PAYLOAD`
    /// explains the arithmetic); `None` (datagrams refused) leaves every frame alone.
    pub fn within(self, room: Option<usize>) -> Self {
        Self {
            bundle_limit: self.bundle_limit.min(room.unwrap_or(0)),
            ..self
        }
    }
}

/// Which datagrams of a tick a peer is sent, and what they cost in its send buffer: the
/// directory and one run of frames per row of its view, or — a spectator, a player not
/// in this tick, `view_cells` = [`VIEW_ALL`], a buffer without a directory — every frame.
///
/// The sim lays a tick out as the directory frame followed by chunk frames in cell order,
/// so the chunks of one row of a view are one contiguous run of frames. Consecutive
/// frames go together as one datagram, up to `shape.bundle_limit` bytes: a server
/// datagram is the tick buffer's own `[u16 length][message]` framing, so a run of frames
/// is a slice of the buffer, never a copy. `datagrams` is cleared and filled with byte
/// ranges of the buffer (length prefixes included); reused from peer to peer, it stops
/// allocating once it has grown to the largest view.
pub fn select_view(
    index: &TickIndex,
    center: Option<u16>,
    view_cells: u16,
    shape: DatagramShape,
    datagrams: &mut Vec<Range<usize>>,
) -> usize {
    datagrams.clear();
    let frames = index.frames();
    let mut cost = 0;
    match center {
        Some(center) if view_cells != VIEW_ALL && index.has_cells() => {
            cost += bundle(&frames[0..1], shape, datagrams);
            let (columns, rows) = index.grid();
            let view = ViewRect::around(center, columns, rows, view_cells);
            for (first, last) in view.row_runs(columns) {
                cost += bundle(
                    &frames[index.frames_of_cells(first, last)],
                    shape,
                    datagrams,
                );
            }
        }
        _ => cost += bundle(frames, shape, datagrams),
    }
    cost
}

/// Plans one tick for one peer, once: selects its view ([`select_view`]) and decides
/// with [`decide_tick_for_peer`] whether it gets it. On [`SendDecision::Send`],
/// `datagrams` holds the byte ranges to send.
#[allow(clippy::too_many_arguments)]
pub fn plan_tick_for_peer(
    index: &TickIndex,
    entity: u32,
    view_cells: u16,
    shape: DatagramShape,
    state: &mut PeerSendState,
    buffer_space: usize,
    queued: usize,
    datagrams: &mut Vec<Range<usize>>,
) -> (SendDecision, usize) {
    let center = index.player_cell(entity);
    let cost = select_view(index, center, view_cells, shape, datagrams);
    (
        decide_tick_for_peer(state, buffer_space, queued, cost),
        cost,
    )
}

/// Appends consecutive frames as datagrams of at most `shape.bundle_limit` bytes;
/// returns their cost.
fn bundle(frames: &[Range<usize>], shape: DatagramShape, out: &mut Vec<Range<usize>>) -> usize {
    let mut cost = 0;
    let mut current: Option<Range<usize>> = None;
    for frame in frames {
        let whole = frame.start - TICK_FRAME_PREFIX_LEN..frame.end;
        current = match current {
            Some(run) if whole.end - run.start <= shape.bundle_limit => Some(run.start..whole.end),
            Some(run) => {
                cost += run.len() + shape.entry_cost;
                out.push(run);
                Some(whole)
            }
            None => Some(whole),
        };
    }
    if let Some(run) = current {
        cost += run.len() + shape.entry_cost;
        out.push(run);
    }
    cost
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
    /// What the last tick sent cost in the peer's send buffer.
    pub last_tick_bytes: usize,
}

/// Decides whether a peer gets its part of a tick, `tick_bytes` long, and updates its
/// state. `queued` bytes are still waiting in its send queue and `buffer_space` more fit.
///
/// A peer is sent a tick only while everything still queued belongs to the last tick it
/// was sent, and that is no more than one tick of the new tick's size; so its queue holds
/// at most two of its own ticks. The send buffer is sized for the largest tick (the whole
/// world), but under interest management a peer's tick is its view, often a few percent
/// of that: the buffer alone would let a congested peer queue dozens of stale ticks.
///
/// Two ticks is also a memory bound. A queued datagram is a slice of the sim's tick
/// buffer and keeps that whole buffer allocated, so what a stalled peer costs is the
/// number of *distinct* ticks in its queue, not its bytes: the queue is first in, first
/// out, so `queued <= last_tick_bytes` means no byte of an older tick is left, and after
/// this send the queue touches two ticks at most. (Without it, a peer whose view grows
/// from one tick to the next could hold the tail of a third.) The memory budget charges
/// each client for two tick buffers (`budget::TICKS_A_STALLED_PEER_PINS`).
pub fn decide_tick_for_peer(
    state: &mut PeerSendState,
    buffer_space: usize,
    queued: usize,
    tick_bytes: usize,
) -> SendDecision {
    let only_the_last_tick_queued = queued <= state.last_tick_bytes;
    if buffer_space >= tick_bytes && queued <= tick_bytes && only_the_last_tick_queued {
        state.ticks_sent += 1;
        state.consecutive_skips = 0;
        state.last_tick_bytes = tick_bytes;
        SendDecision::Send
    } else {
        state.ticks_skipped += 1;
        state.consecutive_skips = state.consecutive_skips.saturating_add(1);
        SendDecision::Skip
    }
}

/// Which rule [`offer_tick_by`] follows: the shipped one ([`SEND_RULE`]) and the one
/// before, kept for the link model's A/B (`link_model.rs`) and as the rule of the
/// `quinn-endpoint` build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendRule {
    /// Send while at most the peer's last tick is queued (two ticks queued at most).
    TwoTicks,
    /// Hand a tick over only into an empty queue with the window open; otherwise hold
    /// it, the newest replacing an older one held, until both hold.
    LatestWins,
}

/// The rule the fan-out follows.
pub const SEND_RULE: SendRule = SendRule::LatestWins;

/// What the fan-out keeps per peer beside its [`PeerSendState`]: the tick held back
/// for it (the tick's buffer and the byte ranges of the peer's datagrams in it) and what
/// its congestion controller says of its room ([`SendRoom`]; `None` for stock Cubic).
#[derive(Debug, Default)]
pub struct PeerOutbox {
    tick: Option<bytes::Bytes>,
    datagrams: Vec<Range<usize>>,
    cost: usize,
    room: Option<std::sync::Arc<SendRoom>>,
}

impl PeerOutbox {
    /// An empty outbox for a connection whose controller publishes into `room`.
    pub fn new(room: Option<std::sync::Arc<SendRoom>>) -> Self {
        Self {
            room,
            ..Self::default()
        }
    }

    /// Whether a tick is held.
    pub fn is_held(&self) -> bool {
        self.tick.is_some()
    }

    /// Whether quinn would send a packet now, as far as the controller said; true
    /// without a live room (stock Cubic, or a controller quinn replaced).
    fn window_open(&self) -> bool {
        self.room
            .as_ref()
            .is_none_or(|room| !room_is_live(room) || room.open())
    }
}

/// What one offer or release did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offered {
    /// Ticks that will never be sent: skipped, or replaced while held.
    pub dropped_ticks: u32,
    /// Datagrams handed to quinn, and their bytes.
    pub datagrams: u64,
    /// Bytes handed to quinn.
    pub bytes: u64,
    /// Whether a tick was handed to quinn whole.
    pub sent_whole: bool,
    /// Whether a tick was cut short (quinn refused a datagram of it).
    pub cut: bool,
    /// The peer's queue after the offer, as charged (for the peak gauge).
    pub queue_after: usize,
}

/// The room in a connection's datagram send queue and what is queued in it, as the
/// fan-out charges them. quinn's space keeps one entry back for the next datagram;
/// without it, an empty queue would read as one entry queued.
pub fn send_queue(conn: &mut quinn_proto::Connection, send_buffer: usize) -> (usize, usize) {
    let space = conn.datagrams().send_buffer_space();
    let queued = send_buffer
        .saturating_sub(space)
        .saturating_sub(crate::transport::DATAGRAM_QUEUE_ENTRY_BYTES);
    (space, queued)
}

/// Offers one peer its part of a tick: `datagrams` are byte ranges of `tick` costing
/// `cost` in its send buffer. Follows [`SEND_RULE`] (the module doc): hands it to quinn
/// now, or holds it in `outbox` in place of any tick held there, or (a tick larger than
/// half the send buffer that cannot go now) skips it. A tick replaced in the outbox counts
/// in [`Offered::dropped_ticks`].
#[allow(clippy::too_many_arguments)]
pub fn offer_tick(
    conn: &mut quinn_proto::Connection,
    send_buffer: usize,
    state: &mut PeerSendState,
    outbox: &mut PeerOutbox,
    tick: &bytes::Bytes,
    datagrams: &[Range<usize>],
    cost: usize,
) -> Offered {
    offer_tick_by(
        SEND_RULE,
        conn,
        send_buffer,
        state,
        outbox,
        tick,
        datagrams,
        cost,
    )
}

/// [`offer_tick`] by a given rule.
#[allow(clippy::too_many_arguments)]
pub fn offer_tick_by(
    rule: SendRule,
    conn: &mut quinn_proto::Connection,
    send_buffer: usize,
    state: &mut PeerSendState,
    outbox: &mut PeerOutbox,
    tick: &bytes::Bytes,
    datagrams: &[Range<usize>],
    cost: usize,
) -> Offered {
    let (space, queued) = send_queue(conn, send_buffer);
    let mut offered = Offered::default();
    match rule {
        SendRule::TwoTicks => match decide_tick_for_peer(state, space, queued, cost) {
            SendDecision::Send => hand_over(conn, tick, datagrams, &mut offered),
            SendDecision::Skip => offered.dropped_ticks = 1,
        },
        SendRule::LatestWins => {
            if outbox.tick.take().is_some() {
                offered.dropped_ticks += 1;
                state.ticks_skipped += 1;
            }
            if queued == 0 && space >= cost && outbox.window_open() {
                state.ticks_sent += 1;
                state.consecutive_skips = 0;
                state.last_tick_bytes = cost;
                hand_over(conn, tick, datagrams, &mut offered);
            } else if cost <= send_buffer / 2 {
                outbox.tick = Some(tick.clone());
                outbox.datagrams.clear();
                outbox.datagrams.extend_from_slice(datagrams);
                outbox.cost = cost;
            } else {
                offered.dropped_ticks += 1;
                state.ticks_skipped += 1;
                state.consecutive_skips = state.consecutive_skips.saturating_add(1);
            }
        }
    }
    offered.queue_after = send_queue(conn, send_buffer).1;
    offered
}

/// Hands the tick held in `outbox` to quinn if the peer's queue is empty and its window
/// has room: the driver calls it each time it drives the connection, after its events
/// (an ACK among them) and before its transmits.
pub fn release_held(
    conn: &mut quinn_proto::Connection,
    send_buffer: usize,
    outbox: &mut PeerOutbox,
) -> Offered {
    let mut offered = Offered::default();
    if !outbox.is_held() {
        return offered;
    }
    let (space, queued) = send_queue(conn, send_buffer);
    if queued == 0
        && space >= outbox.cost
        && outbox.window_open()
        && let Some(tick) = outbox.tick.take()
    {
        hand_over(conn, &tick, &outbox.datagrams, &mut offered);
    }
    offered
}

fn hand_over(
    conn: &mut quinn_proto::Connection,
    tick: &bytes::Bytes,
    datagrams: &[Range<usize>],
    offered: &mut Offered,
) {
    let mut out = conn.datagrams();
    for range in datagrams {
        let len = range.len() as u64;
        match out.send(
            crate::transport::datagram_for_peer(tick, range.clone()),
            false,
        ) {
            Ok(()) => {
                offered.datagrams += 1;
                offered.bytes += len;
            }
            Err(e) => {
                tracing::trace!("send_datagram: {e}");
                offered.cut = true;
                return;
            }
        }
    }
    offered.sent_whole = true;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fan_out_scope_marks_only_its_own_thread_and_only_while_it_lives() {
        assert!(!in_fan_out());
        let scope = FanOutScope::enter();
        assert!(in_fan_out());
        assert!(!std::thread::spawn(in_fan_out).join().unwrap());
        drop(scope);
        assert!(!in_fan_out());
    }
    use tickcast_shared::Tick;
    use tickcast_shared::chunk::{
        CHUNK_HEADER_LEN, ChunkHeader, DirectoryHeader, ENTITY_RECORD_LEN, EntityRecord, KIND_NPC,
        KIND_PLAYER, directory_len, write_directory, write_header, write_record,
    };

    /// A tick buffer on a 4 × 3 grid with one chunk per listed (cell, net id, kind).
    fn tick_buffer(chunks: &[(u16, u32, u8)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut directory = vec![0u8; directory_len(12)];
        let header = DirectoryHeader {
            tick: Tick::new(5),
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
                tick: Tick::new(5),
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

    /// The frames selected (by index) and the cost.
    /// A tick buffer's index and the datagram shape to select with.
    struct Layout {
        index: TickIndex,
        shape: DatagramShape,
    }

    fn layout(buffer: &[u8], entry_cost: usize, bundle_limit: usize) -> Layout {
        Layout {
            index: TickIndex::of_buffer(buffer),
            shape: DatagramShape {
                entry_cost,
                bundle_limit,
            },
        }
    }

    fn selected(layout: &Layout, center: Option<u16>, view: u16) -> (Vec<usize>, usize) {
        let (datagrams, cost) = datagrams(layout, center, view);
        (datagrams.concat(), cost)
    }

    /// The datagrams selected, each as the frame indices it carries, and the cost.
    fn datagrams(layout: &Layout, center: Option<u16>, view: u16) -> (Vec<Vec<usize>>, usize) {
        let mut datagrams = Vec::new();
        let mut ranges = Vec::new();
        let cost = select_view(&layout.index, center, view, layout.shape, &mut ranges);
        let all = layout.index.frames();
        for bytes in ranges {
            let frames = (0..all.len())
                .filter(|&i| bytes.contains(&all[i].start))
                .collect::<Vec<_>>();
            let first = frames[0];
            let last = frames[frames.len() - 1];
            assert_eq!(bytes.start, all[first].start - 2, "starts at a prefix");
            assert_eq!(bytes.end, all[last].end, "ends with a frame");
            datagrams.push(frames);
        }
        (datagrams, cost)
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
        let layout = layout(&buffer, 32, 1152);
        assert_eq!(layout.index.frames().len(), 7);
        assert_eq!(layout.index.player_cell(12), Some(5));
        assert_eq!(layout.index.player_cell(14), Some(10));
        assert_eq!(layout.index.player_cell(10), None, "NPCs are not indexed");

        // Player 12 in cell 5 sees cells 0-2, 4-6, 8-10: frames of cells 0, 5, 6, 10, in
        // one datagram per view row (cells 5 and 6 are next to each other).
        let (datagrams, cost) = datagrams(&layout, Some(5), 1);
        assert_eq!(datagrams, vec![vec![0], vec![1], vec![3, 4], vec![5]]);
        let chunk = 2 + CHUNK_HEADER_LEN + ENTITY_RECORD_LEN;
        assert_eq!(cost, 2 + directory_len(12) + 4 * chunk + 4 * 32);
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

    proptest::proptest! {
        /// A peer's datagrams are exactly the directory and the frames of the cells in
        /// its view, in buffer order, each datagram a run of whole frames no larger than
        /// the bundle limit (or one frame); the cost is their bytes plus one entry each.
        #[test]
        fn a_view_is_the_directory_and_exactly_the_cells_in_it(
            occupied in proptest::collection::btree_set(0u16..12, 0..12),
            center in 0u16..12,
            radius in 0u16..3,
            bundle_chunks in 1usize..4,
        ) {
            let chunks: Vec<(u16, u32, u8)> =
                occupied.iter().map(|&cell| (cell, u32::from(cell) + 100, KIND_NPC)).collect();
            let buffer = tick_buffer(&chunks);
            let chunk = 2 + CHUNK_HEADER_LEN + ENTITY_RECORD_LEN;
            let layout = layout(&buffer, 16, bundle_chunks * chunk);
            let (datagrams, cost) = datagrams(&layout, Some(center), radius);
            let view = ViewRect::around(center, 4, 3, radius);
            let mut expected = vec![0];
            expected.extend(
                (1..=chunks.len()).filter(|&frame| view.contains(chunks[frame - 1].0, 4)),
            );
            proptest::prop_assert_eq!(datagrams.concat(), expected);
            let frames = layout.index.frames();
            let mut bytes = 0;
            for datagram in &datagrams {
                let len = frames[datagram[datagram.len() - 1]].end - (frames[datagram[0]].start - 2);
                proptest::prop_assert!(datagram.len() == 1 || len <= bundle_chunks * chunk);
                bytes += len + 16;
            }
            proptest::prop_assert_eq!(cost, bytes);
        }
    }

    #[test]
    fn a_buffer_without_a_directory_goes_to_everyone_whole() {
        let buffer = tick_buffer(&[(1, 1, KIND_PLAYER)]);
        // Drop the directory frame.
        let without = buffer[2 + directory_len(12)..].to_vec();
        let layout = layout(&without, 0, 1152);
        assert_eq!(selected(&layout, Some(1), 1).0, vec![0]);
    }

    #[test]
    fn consecutive_frames_share_a_datagram_up_to_the_limit() {
        let buffer = tick_buffer(&[
            (0, 1, KIND_NPC),
            (1, 2, KIND_NPC),
            (2, 3, KIND_NPC),
            (3, 4, KIND_NPC),
        ]);
        let chunk = 2 + CHUNK_HEADER_LEN + ENTITY_RECORD_LEN;
        // Room for two chunks per datagram; the 18-byte directory frame is smaller than a
        // chunk's, so it shares the first datagram with one chunk.
        let layout = layout(&buffer, 0, 2 * chunk);
        let (datagrams, cost) = datagrams(&layout, None, VIEW_ALL);
        assert_eq!(datagrams, vec![vec![0, 1], vec![2, 3], vec![4]]);
        assert_eq!(cost, buffer.len());
    }

    #[test]
    fn a_path_with_less_room_than_a_bundle_gets_smaller_datagrams() {
        let buffer = tick_buffer(&[
            (0, 1, KIND_NPC),
            (1, 2, KIND_NPC),
            (2, 3, KIND_NPC),
            (3, 4, KIND_NPC),
        ]);
        let chunk = 2 + CHUNK_HEADER_LEN + ENTITY_RECORD_LEN;
        let shape = DatagramShape {
            entry_cost: 0,
            bundle_limit: 4 * chunk,
        };
        let on = |room| Layout {
            index: TickIndex::of_buffer(&buffer),
            shape: shape.within(room),
        };
        // A roomy path: one datagram of the directory and three chunks, then the fourth.
        assert_eq!(
            datagrams(&on(Some(1_500)), None, VIEW_ALL).0,
            vec![vec![0, 1, 2, 3], vec![4]]
        );
        // Room for two chunks: the same frames in more, smaller datagrams, same bytes.
        let (split, cost) = datagrams(&on(Some(2 * chunk)), None, VIEW_ALL);
        assert_eq!(split, vec![vec![0, 1], vec![2, 3], vec![4]]);
        assert_eq!(cost, buffer.len());
        // No room at all (datagrams refused): every frame alone.
        assert_eq!(datagrams(&on(None), None, VIEW_ALL).0.len(), 5);
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
                consecutive_skips: 0,
                last_tick_bytes: 1000,
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

    #[test]
    fn a_peer_still_holding_an_older_tick_skips_so_its_queue_touches_two_ticks_at_most() {
        let mut state = PeerSendState::default();
        assert_eq!(
            decide_tick_for_peer(&mut state, 60_000, 0, 400),
            SendDecision::Send
        );
        // 300 of that 400-byte tick still queued: the queue holds only the last tick.
        assert_eq!(
            decide_tick_for_peer(&mut state, 60_000, 300, 400),
            SendDecision::Send
        );
        // 500 queued, the last tick was 400: 100 bytes of the tick before are still there.
        // The new tick is larger (the view grew), so "at most one tick queued" alone would
        // send it, and the queue would touch three ticks.
        assert_eq!(
            decide_tick_for_peer(&mut state, 60_000, 500, 1000),
            SendDecision::Skip
        );
        // Once the older tick has left the queue, the peer is sent again.
        assert_eq!(
            decide_tick_for_peer(&mut state, 60_000, 400, 1000),
            SendDecision::Send
        );
        assert_eq!(state.last_tick_bytes, 1000);
    }
}
