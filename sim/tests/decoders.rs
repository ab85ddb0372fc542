//! Every decoder of bytes that come from outside the process, fed arbitrary bytes and
//! mutations of valid encodings: none may panic, none may hold more memory at once than
//! its stated bound, and what decodes must re-encode (or re-decode) to the same value.
//!
//! | decoder | function | bound on heap bytes held at once, `n` input bytes |
//! |---|---|---|
//! | `hello_frame` | `wire::frame_len` + `wire::decode_exact::<Hello>` (server, control stream) | 256: an error's text |
//! | `server_message` | `wire::frame_len` + `wire::decode_exact::<ServerMessage>` (client) | 1,024 + 256: a Reject's detail (bincode's limit) and an error's text |
//! | `input_datagram` | `InputDatagram::decode` (server, datagrams), with the arena's 9-byte commands and with the command length the bytes would fit | 256: an error's text |
//! | `schema_frame` | `wire::frame_len` + `Schema::decode` of the frame after the Welcome (client) | 32 KiB, as `schema` |
//! | `connect_token` | `ConnectToken::from_bytes` (token files, Hellos) | 256: an error's text |
//! | `chunk` | `chunk::parse_chunk`, then `Chunk::records_with` the arena's schema | 0: it borrows |
//! | `directory` | `chunk::parse_directory` | 0 |
//! | `datagram` | `chunk::parse_datagram` | 0 |
//! | `datagram_messages` | `chunk::datagram_messages` (client, every datagram) | 0 |
//! | `tick_frames` | `chunk::tick_frames` | 0 |
//! | `tick_index` | `TickIndex::of_buffer` | 80·n + 1 KiB: frame ranges (16 B per 2 input bytes) and cell starts (4 B per cell, 8 cells per directory byte), each vector at most twice its length |
//! | `schema` | `schema::Schema::decode` (clients, recordings) | 32 KiB: at most 146 fields in 1,024 bytes (7 bytes each at least), each with its name, bit names and offset, and the re-encoding `Schema::new` measures |
//! | `schema_records` | `Schema::records` over a chunk body, with the arena's schema | 0: it borrows |
//! | `recording` | `record::decode_recording` (`tickcast-replay`) | 272·n + 64 KiB: an input byte inside a compressed keyframe inflates to at most 255 (lz4's limit; the reader refuses a claim beyond it and keeps the block it decompressed, no copy), one elsewhere costs at most 17 B of frames and events |
//!
//! Runs without the test harness (`harness = false`): a counting global allocator
//! tracks this thread's live heap bytes, and the peak over each decode is checked
//! against the decoder's bound.
//!
//! * `cargo test -p tickcast-sim --test decoders`: 3,000 inputs per decoder from a
//!   fixed seed, the same every run.
//! * `FUZZ_SECS=600`: each decoder for that many seconds from a fresh seed (printed).
//!   `FUZZ_DECODER=name[,name…]` picks decoders, `FUZZ_SEED=n` repeats a run.
//!
//! Failing inputs are written to `<target>/tmp/fuzz-findings/<decoder>-<hash>.bin`.
//!
//! There is no coverage feedback (that would need cargo-fuzz and a nightly toolchain):
//! inputs are seeded mutations of real encodings — a tick buffer the simulation wrote,
//! a recording the recorder's framing wrote — plus fully random bytes. A mutated
//! recording gets its frames' CRCs fixed most of the time, so the mutation reaches the
//! frame decoders behind the checksum.

#![allow(unsafe_code)] // A counting allocator is an `unsafe impl GlobalAlloc`.
#![allow(clippy::print_stdout)] // harness = false: this binary reports like a test runner.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use tickcast_shared::Tick;
use tickcast_shared::chunk::{
    self, CHUNK_HEADER_LEN, ChunkError, DIRECTORY_KIND, ENTITY_RECORD_LEN, SNAPSHOT_CHUNK_KIND,
    ServerDatagram, directory_len, parse_chunk, parse_datagram, parse_directory, tick_frames,
};
use tickcast_shared::event::PeerEvent;
use tickcast_shared::index::TickIndex;
use tickcast_shared::msg::{
    self, Hello, InputCmd, InputDatagram, Reject, RejectReason, ServerMessage, Welcome,
};
use tickcast_shared::schema::Schema;
use tickcast_shared::token::{ConnectToken, TokenKey};
use tickcast_shared::wire::{self, FRAME_PREFIX_LEN, MAX_MESSAGE_LEN};
use tickcast_sim::record::{
    self, FRAME_PREFIX_LEN as RECORD_FRAME_PREFIX_LEN, Frame, PREAMBLE_LEN, RecordingHeader,
    TickRecord,
};
use tickcast_sim::rng::SimRng;
use tickcast_sim::{Sim, SimConfig};

// ---------------------------------------------------------------------------------------
// The counting allocator: live and peak heap bytes of this thread while counting.

struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    // `try_with`: the allocator can run while thread-locals are being torn down.
    let _ = COUNTING.try_with(|counting| {
        if counting.get() {
            let _ = LIVE.try_with(|live| {
                let now = live.get() + delta;
                live.set(now);
                let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
            });
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counting only
// touches const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size as isize - layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize));
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

thread_local! {
    /// The largest peak of any [`measured`] call since the driver last reset it.
    static INPUT_PEAK: Cell<usize> = const { Cell::new(0) };
    /// The message of the last panic, from the panic hook.
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `decode` and notes the most heap bytes it held at once, its result included
/// (the result is still alive when counting stops).
fn measured<T>(decode: impl FnOnce() -> T) -> T {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    COUNTING.with(|c| c.set(true));
    let value = decode();
    COUNTING.with(|c| c.set(false));
    let peak = PEAK.with(Cell::get).max(0) as usize;
    INPUT_PEAK.with(|p| p.set(p.get().max(peak)));
    value
}

// ---------------------------------------------------------------------------------------
// Decoders and their oracles. Each `check` decodes inside `measured` and then checks
// what it got; `Err` is an oracle failure.

/// `Ok(true)`: decoded; `Ok(false)`: refused with an error; `Err`: the oracle failed.
type Check = fn(&[u8]) -> Result<bool, String>;

struct Decoder {
    name: &'static str,
    /// Heap bytes the decoder may hold at once for an input of `n` bytes.
    bound: fn(usize) -> usize,
    check: Check,
    /// Applied after mutation (a recording's CRCs), with the RNG deciding how often.
    fix_up: Option<fn(&mut [u8], &mut SimRng)>,
    seeds: Vec<Vec<u8>>,
}

/// What an error's text may cost: bincode's messages and our own `format!`s are short.
const ERROR_TEXT: usize = 256;

fn framed_body(bytes: &[u8]) -> Result<&[u8], wire::WireError> {
    let prefix = bytes
        .get(..FRAME_PREFIX_LEN)
        .ok_or_else(|| wire::WireError::Decode("no prefix".into()))?;
    let len = wire::frame_len([prefix[0], prefix[1]])?;
    bytes
        .get(FRAME_PREFIX_LEN..FRAME_PREFIX_LEN + len)
        .ok_or_else(|| wire::WireError::Decode("cut off".into()))
}

/// Decodes a control-stream frame of `T` the way the server (Hello) and the client
/// (ServerMessage) read one; what decodes must encode to the same bytes.
fn check_frame<T>(bytes: &[u8]) -> Result<bool, String>
where
    T: wire::Decode<()> + wire::Encode + PartialEq + std::fmt::Debug,
{
    let decoded = measured(|| framed_body(bytes).and_then(wire::decode_exact::<T>));
    let Ok(value) = decoded else {
        return Ok(false);
    };
    let mut again = vec![0u8; FRAME_PREFIX_LEN + MAX_MESSAGE_LEN];
    let len = wire::encode_frame(&value, &mut again).map_err(|e| e.to_string())?;
    if again[..len] != bytes[..len.min(bytes.len())] {
        return Err(format!("{value:?} does not re-encode to its bytes"));
    }
    Ok(true)
}

fn check_input_datagram(bytes: &[u8]) -> Result<bool, String> {
    // The arena's command length, and the one these bytes would fit (any game's).
    let count = usize::from(bytes.get(5).copied().unwrap_or(1).max(1));
    let fitting = bytes.len().saturating_sub(6) / count;
    let mut any = false;
    for cmd_len in [msg::INPUT_CMD_LEN, fitting] {
        let Ok(datagram) = measured(|| InputDatagram::decode(bytes, cmd_len)) else {
            continue;
        };
        any = true;
        let (again, len) = datagram.encode();
        if again[..len] != *bytes {
            return Err(format!("{datagram:?} does not re-encode to its bytes"));
        }
        if datagram.commands().len() != datagram.count()
            || datagram.commands().any(|c| c.len() != cmd_len)
        {
            return Err("commands() disagrees with count or the command length".into());
        }
    }
    Ok(any)
}

/// The frame a client reads after the Welcome: a length prefix within the frame limit,
/// then a schema that re-encodes to its bytes.
fn check_schema_frame(bytes: &[u8]) -> Result<bool, String> {
    let Some(prefix) = bytes.first_chunk::<FRAME_PREFIX_LEN>() else {
        return Ok(false);
    };
    let Ok(len) = wire::frame_len(*prefix) else {
        return Ok(false);
    };
    let Some(body) = bytes.get(FRAME_PREFIX_LEN..FRAME_PREFIX_LEN + len) else {
        return Ok(false);
    };
    let Ok(schema) = measured(|| msg::decode_schema_frame(body)) else {
        return Ok(false);
    };
    if msg::schema_frame(&schema) != bytes[..FRAME_PREFIX_LEN + len] {
        return Err(format!("{schema} does not re-encode to its frame"));
    }
    Ok(true)
}

/// What decodes must encode to the same bytes.
fn check_schema(bytes: &[u8]) -> Result<bool, String> {
    let Ok(schema) = measured(|| Schema::decode(bytes)) else {
        return Ok(false);
    };
    if schema.encode() != bytes {
        return Err(format!("{schema} does not re-encode to its bytes"));
    }
    Ok(true)
}

fn arena_schema() -> &'static Schema {
    static ARENA: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
    ARENA.get_or_init(|| tickcast_sim::arena::arena_schema().expect("the arena's schema is valid"))
}

/// A chunk body walked with the arena's schema: the records it yields lie within the
/// bytes, and a walk that never fails covers them exactly.
fn check_schema_records(bytes: &[u8]) -> Result<bool, String> {
    let schema = arena_schema();
    let (used, whole) = measured(|| {
        let mut used = 0;
        for record in schema.records(bytes) {
            match record {
                Ok(view) => {
                    used += view.bytes().len();
                    let _ = (view.net_id(), view.position(), view.raw(4), view.value(9));
                }
                Err(_) => return (used, false),
            }
        }
        (used, true)
    });
    if used > bytes.len() || (whole && used != bytes.len()) {
        return Err(format!("records cover {used} of {} bytes", bytes.len()));
    }
    Ok(whole)
}

fn check_token(bytes: &[u8]) -> Result<bool, String> {
    let Ok(token) = measured(|| ConnectToken::from_bytes(bytes)) else {
        return Ok(false);
    };
    if token.to_bytes()[..] != *bytes {
        return Err(format!("{token:?} does not re-encode to its bytes"));
    }
    Ok(true)
}

/// A chunk's bytes from its parts, flags byte included.
fn encode_chunk(chunk: &chunk::Chunk<'_>, flags: u8) -> Vec<u8> {
    let records: Vec<_> = chunk.records().collect();
    let mut out = vec![0u8; CHUNK_HEADER_LEN + records.len() * ENTITY_RECORD_LEN];
    let (head, body) = out.split_at_mut(CHUNK_HEADER_LEN);
    chunk::write_header(&chunk.header, head.try_into().expect("header length"));
    for (record, slot) in records.iter().zip(body.chunks_exact_mut(ENTITY_RECORD_LEN)) {
        chunk::write_record(record, slot.try_into().expect("record length"));
    }
    out[1] = flags;
    out
}

fn check_chunk(bytes: &[u8]) -> Result<bool, String> {
    let Ok(parsed) = measured(|| parse_chunk(bytes)) else {
        return Ok(false);
    };
    let count = usize::from(parsed.header.record_count);
    if parsed.body().len() < count * 5 {
        return Err("a parsed chunk's body is shorter than its records' prefixes".into());
    }
    // Read with the game's schema: all of the body in exactly `count` records, or an
    // error.
    if let Ok(records) = measured(|| parsed.records_with(arena_schema())) {
        let mut used = 0;
        let mut walked = 0;
        for record in records {
            used += record.map_err(|e| e.to_string())?.bytes().len();
            walked += 1;
        }
        if (walked, used) != (count, parsed.body().len()) {
            return Err(format!(
                "records_with walked {walked} records over {used} bytes of a {count}-record chunk"
            ));
        }
        // The arena's records are all 14 bytes: those re-encode to the same bytes.
        if encode_chunk(&parsed, bytes[1]) != bytes {
            return Err("a parsed chunk does not re-encode to its bytes".into());
        }
    }
    Ok(true)
}

fn check_directory_of(bytes: &[u8], directory: &chunk::Directory<'_>) -> Result<bool, String> {
    let cells = directory.cells();
    if bytes.len() != directory_len(cells) || bytes[0] != DIRECTORY_KIND {
        return Err(format!("a {cells}-cell directory of {} bytes", bytes.len()));
    }
    for cell in 0..=cells.min(usize::from(u16::MAX)) {
        let bit = cells > cell && bytes[14 + cell / 8] & (1 << (cell % 8)) != 0;
        if directory.occupied(cell as u16) != bit {
            return Err(format!("occupied({cell}) disagrees with the bitmap"));
        }
    }
    Ok(true)
}

fn check_directory(bytes: &[u8]) -> Result<bool, String> {
    match measured(|| parse_directory(bytes)) {
        Ok(directory) => check_directory_of(bytes, &directory),
        Err(_) => Ok(false),
    }
}

fn check_datagram(bytes: &[u8]) -> Result<bool, String> {
    match measured(|| parse_datagram(bytes)) {
        Ok(ServerDatagram::Directory(directory)) => check_directory_of(bytes, &directory),
        Ok(ServerDatagram::Chunk(_)) if bytes[0] != SNAPSHOT_CHUNK_KIND => {
            Err(format!("kind {:#04x} parsed as a chunk", bytes[0]))
        }
        Ok(_) => Ok(true),
        Err(_) => Ok(false),
    }
}

fn check_datagram_messages(bytes: &[u8]) -> Result<bool, String> {
    let (messages, errors) = measured(|| {
        let mut messages = 0usize;
        let mut errors = 0usize;
        for message in chunk::datagram_messages(bytes) {
            match message {
                Ok(message) => {
                    let _ = (message.tick(), message.server_time_us());
                    messages += 1;
                }
                Err(_) => errors += 1,
            }
        }
        (messages, errors)
    });
    // Each message costs at least its 2-byte prefix; a torn frame ends the datagram.
    if messages + errors > bytes.len() / 2 + 1 {
        return Err(format!(
            "{messages} messages and {errors} errors from {} bytes",
            bytes.len()
        ));
    }
    let ends: Vec<bool> = chunk::datagram_messages(bytes)
        .map(|m| matches!(m, Err(ChunkError::TornFrame { .. })))
        .collect();
    if ends.iter().rev().skip(1).any(|end| *end) {
        return Err("a message after the datagram's end".into());
    }
    Ok(errors == 0)
}

fn check_tick_frames(bytes: &[u8]) -> Result<bool, String> {
    let (frames, ok, end) = measured(|| {
        let mut frames = 0usize;
        let mut at = 0usize;
        let mut ok = true;
        for range in tick_frames(bytes) {
            // Each frame follows the last, right after its own 2-byte length.
            ok &= range.start == at + 2 && range.end <= bytes.len();
            ok &= usize::from(u16::from_le_bytes([bytes[at], bytes[at + 1]])) == range.len();
            at = range.end;
            frames += 1;
        }
        (frames, ok, at)
    });
    if !ok || frames > bytes.len() / 2 {
        return Err(format!("{frames} frames, laid out wrong: {ok}"));
    }
    // Accepted whole: the frames cover the buffer; otherwise it stopped at a torn one.
    Ok(end == bytes.len())
}

fn check_tick_index(bytes: &[u8]) -> Result<bool, String> {
    let index = measured(|| TickIndex::of_buffer(bytes));
    let frames: Vec<_> = tick_frames(bytes).collect();
    if index.frames() != frames.as_slice() {
        return Err("the index's frames are not the buffer's".into());
    }
    if !index.has_cells() {
        return Ok(false);
    }
    let (columns, rows) = index.grid();
    let cells = usize::from(columns) * usize::from(rows);
    // The fan-out asks for runs of cells on the grid; each must be in the frames.
    for cell in 0..cells.min(usize::from(u16::MAX) + 1) {
        let run = index.frames_of_cells(cell as u16, cell as u16);
        if run.start > run.end || run.end > frames.len() {
            return Err(format!("cell {cell}: frames {run:?} of {}", frames.len()));
        }
    }
    // When the chunks are in cell order (as the format requires), each chunk on the grid
    // is among its own cell's frames.
    let chunk_cells: Vec<(usize, u16)> = frames
        .iter()
        .enumerate()
        .skip(1)
        .filter_map(|(at, range)| Some((at, parse_chunk(&bytes[range.clone()]).ok()?.header.cell)))
        .collect();
    if chunk_cells.windows(2).all(|w| w[0].1 <= w[1].1) {
        for &(at, cell) in chunk_cells
            .iter()
            .filter(|(_, cell)| usize::from(*cell) < cells)
        {
            if !index.frames_of_cells(cell, cell).contains(&at) {
                return Err(format!(
                    "the chunk at frame {at} is not among cell {cell}'s frames"
                ));
            }
        }
    }
    Ok(true)
}

fn check_recording(bytes: &[u8]) -> Result<bool, String> {
    let Ok(recording) = measured(|| record::decode_recording(bytes)) else {
        return Ok(false);
    };
    if recording.valid_len as usize > bytes.len() {
        return Err("valid_len past the end".into());
    }
    // Decode, re-encode, decode: the same header and frames (a keyframe may compress to
    // other bytes, and an invalid build id reads as its lossy text, so bytes may differ).
    let protocol = u16::from_le_bytes([bytes[10], bytes[11]]);
    let mut again = record::preamble(protocol).to_vec();
    record::encode_frame(&Frame::Header(recording.header.clone()), &mut again);
    for (_, frame) in &recording.frames {
        record::encode_frame(frame, &mut again);
    }
    let reread = record::decode_recording(&again).map_err(|e| format!("re-read: {e}"))?;
    let frames = |r: &record::Recording| r.frames.iter().map(|(_, f)| f.clone()).collect();
    let (a, b): (Vec<Frame>, Vec<Frame>) = (frames(&recording), frames(&reread));
    if reread.header != recording.header || a != b || reread.torn.is_some() {
        return Err("a recording does not survive re-encoding".into());
    }
    Ok(true)
}

/// Recomputes the CRC of every whole frame after the preamble, so a mutation inside a
/// frame reaches its decoder instead of stopping at the checksum.
fn fix_recording_crcs(bytes: &mut [u8], rng: &mut SimRng) {
    if rng.below(4) == 0 {
        return; // A quarter of the inputs keep their CRCs as mutated.
    }
    let mut at = PREAMBLE_LEN;
    while let Some(prefix) = bytes.get(at..at + RECORD_FRAME_PREFIX_LEN) {
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let body = at + RECORD_FRAME_PREFIX_LEN;
        let Some(end) = body.checked_add(len + 1).filter(|end| *end <= bytes.len()) else {
            break;
        };
        let crc = crc32fast::hash(&bytes[body..end]);
        bytes[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        at = end;
    }
}

// ---------------------------------------------------------------------------------------
// Seeds: valid encodings, from the real encoders.

fn token() -> ConnectToken {
    TokenKey::from_bytes(&[7; 32]).mint(42, 1_900_000_000, [3; 16], 9)
}

fn frame_of<T: wire::Encode>(value: &T) -> Vec<u8> {
    let mut out = vec![0u8; FRAME_PREFIX_LEN + MAX_MESSAGE_LEN];
    let len = wire::encode_frame(value, &mut out).expect("a message fits its frame");
    out.truncate(len);
    out
}

fn input(seq: u32) -> InputDatagram {
    let cmd = |seq: u32| InputCmd {
        seq,
        move_x: (seq % 255) as i8,
        move_y: -((seq % 127) as i8),
        aim: (seq * 977) as u16,
        buttons: (seq % 2) as u8,
    };
    let commands = [cmd(seq), cmd(seq + 1), cmd(seq + 2), cmd(seq + 3)].map(|c| c.to_bytes());
    let commands = commands.each_ref().map(|c| &c[..]);
    InputDatagram::from_commands(Tick::new(seq * 3), &commands[..(seq % 5) as usize])
        .expect("arena commands")
}

/// An input datagram of another game's 13-byte commands, three of them.
fn another_games_input() -> Vec<u8> {
    let command: Vec<u8> = (0..13).collect();
    let datagram =
        InputDatagram::from_commands(Tick::new(77), &[&command[..], &command[..], &command[..]])
            .expect("13-byte commands");
    let (bytes, len) = datagram.encode();
    bytes[..len].to_vec()
}

/// A few tick buffers as the simulation writes them: a small grid with players, NPCs
/// and projectiles in flight.
fn tick_buffers() -> Vec<Vec<u8>> {
    let mut sim = Sim::new(SimConfig {
        npcs: 120,
        arena_width: 320,
        arena_height: 256,
        cell_size: 64,
        ..SimConfig::default()
    })
    .expect("a valid world");
    for client in 0..6 {
        sim.join(client);
    }
    let mut buffers = Vec::new();
    for tick in 0..40u32 {
        for client in 0..6 {
            sim.apply_input(
                client,
                &InputDatagram::single(
                    input(tick)
                        .arena_commands()
                        .flatten()
                        .next()
                        .unwrap_or_default(),
                    Tick::new(tick),
                ),
            );
        }
        sim.step(tick * 33_000);
        if let Some(snapshot) = sim.take_snapshot()
            && tick % 13 == 0
        {
            buffers.push(snapshot.bytes.to_vec());
        }
    }
    buffers
}

/// Every frame of the buffers, and runs of consecutive frames as the fan-out sends them.
fn frames_and_datagrams(buffers: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut messages = Vec::new();
    let mut datagrams = Vec::new();
    for buffer in buffers {
        let ranges: Vec<_> = tick_frames(buffer).collect();
        for range in &ranges {
            messages.push(buffer[range.clone()].to_vec());
        }
        for window in ranges.windows(3).step_by(3) {
            datagrams.push(buffer[window[0].start - 2..window[2].end].to_vec());
        }
        if let Some(first) = ranges.first() {
            datagrams.push(buffer[first.start - 2..first.end].to_vec());
        }
    }
    (messages, datagrams)
}

/// A tick buffer on a grid larger than cell numbers can name (256 × 300 cells: no
/// server makes one, a file or a peer can), with chunks in cell order up to the last
/// nameable cell.
fn oversized_grid_buffer() -> Vec<u8> {
    let header = chunk::DirectoryHeader {
        tick: Tick::new(5),
        server_time_us: 0,
        columns: 256,
        rows: 300,
    };
    let cells = 256 * 300;
    let mut directory = vec![0u8; directory_len(cells)];
    let occupied = [0usize, 300, 65_535];
    chunk::write_directory(&header, |cell| occupied.contains(&cell), &mut directory);
    let mut buffer = Vec::new();
    buffer.extend_from_slice(&(directory.len() as u16).to_le_bytes());
    buffer.extend_from_slice(&directory);
    for cell in occupied {
        let mut message = vec![0u8; CHUNK_HEADER_LEN + ENTITY_RECORD_LEN];
        let (head, body) = message.split_at_mut(CHUNK_HEADER_LEN);
        let chunk_header = chunk::ChunkHeader {
            tick: Tick::new(5),
            index_in_cell: 0,
            chunks_in_cell: 1,
            cell: cell as u16,
            record_count: 1,
            server_time_us: 0,
        };
        chunk::write_header(&chunk_header, head.try_into().expect("header length"));
        let record = chunk::EntityRecord {
            net_id: cell as u32 + 1,
            kind: chunk::KIND_PLAYER,
            ..Default::default()
        };
        chunk::write_record(&record, body.try_into().expect("record length"));
        buffer.extend_from_slice(&(message.len() as u16).to_le_bytes());
        buffer.extend_from_slice(&message);
    }
    buffer
}

fn recordings(buffers: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let header = RecordingHeader {
        protocol_version: tickcast_shared::PROTOCOL_VERSION,
        config: SimConfig {
            npcs: 120,
            ..SimConfig::default()
        },
        build_id: "tickcast-sim fuzz".into(),
        keyframe_interval: 10,
        schema: tickcast_sim::arena::arena_schema().unwrap(),
    };
    let tick = |tick: u32, events: Vec<PeerEvent>| {
        Frame::Tick(TickRecord {
            tick: Tick::new(tick),
            state_hash: u64::from(tick) * 0x9e37_79b9,
            duration_us: 250 + tick,
            bytes_out: u64::from(tick) * 1000,
            clients: 2,
            events,
        })
    };
    let events = |t: u32| {
        vec![
            PeerEvent::Joined { client_id: 5 },
            PeerEvent::Input {
                client_id: 5,
                datagram: input(t),
            },
            PeerEvent::Left { client_id: 6 },
        ]
    };
    let small = buffers.first().cloned().unwrap_or_default();
    let frame_sets = [
        vec![tick(0, events(0)), tick(1, vec![])],
        vec![
            tick(0, events(1)),
            Frame::Keyframe {
                tick: Tick::new(0),
                buffer: small[..small.len().min(600)].to_vec(),
            },
            Frame::Gap {
                first: Tick::new(1),
                last: Tick::new(3),
            },
            tick(4, events(4)),
            Frame::Index(vec![(Tick::new(0), 200)]),
        ],
        vec![
            Frame::Keyframe {
                tick: Tick::new(7),
                buffer: small.clone(),
            },
            tick(7, events(7)),
        ],
        // A keyframe lz4 shrinks close to its limit (255:1): the worst case of the bound.
        vec![Frame::Keyframe {
            tick: Tick::new(8),
            buffer: vec![0; 64 << 10],
        }],
    ];
    frame_sets
        .iter()
        .map(|frames| {
            let mut bytes = record::preamble(tickcast_shared::PROTOCOL_VERSION).to_vec();
            record::encode_frame(&Frame::Header(header.clone()), &mut bytes);
            for frame in frames {
                record::encode_frame(frame, &mut bytes);
            }
            bytes
        })
        .collect()
}

fn decoders() -> Vec<Decoder> {
    let buffers = tick_buffers();
    let (messages, datagrams) = frames_and_datagrams(&buffers);
    let welcome = Welcome {
        protocol_version: tickcast_shared::PROTOCOL_VERSION,
        client_id: 42,
        entity: 7,
        tick_rate: 30,
        chunk_payload: 1150,
        arena_width: 1000,
        arena_height: 1000,
        cell_size: 64,
        view_cells: 1,
        server_tick: Tick::new(99),
    };
    let hello = Hello {
        protocol_version: tickcast_shared::PROTOCOL_VERSION,
        token: token(),
    };
    vec![
        Decoder {
            name: "hello_frame",
            bound: |_| ERROR_TEXT,
            check: check_frame::<Hello>,
            fix_up: None,
            seeds: vec![frame_of(&hello)],
        },
        Decoder {
            name: "server_message",
            bound: |_| MAX_MESSAGE_LEN + ERROR_TEXT,
            check: check_frame::<ServerMessage>,
            fix_up: None,
            seeds: vec![
                frame_of(&ServerMessage::Welcome(welcome)),
                frame_of(&ServerMessage::Reject(Reject::new(
                    RejectReason::ServerFull,
                    "the server is at its limit of 2000 clients",
                ))),
                frame_of(&ServerMessage::Reject(Reject::new(
                    RejectReason::BadToken,
                    "é",
                ))),
            ],
        },
        Decoder {
            name: "input_datagram",
            bound: |_| ERROR_TEXT,
            check: check_input_datagram,
            fix_up: None,
            seeds: (0..5)
                .map(|seq| {
                    let (bytes, len) = input(seq).encode();
                    bytes[..len].to_vec()
                })
                .chain([another_games_input()])
                .collect(),
        },
        Decoder {
            name: "schema_frame",
            bound: |_| 32 << 10,
            check: check_schema_frame,
            fix_up: None,
            seeds: vec![msg::schema_frame(arena_schema())],
        },
        Decoder {
            name: "connect_token",
            bound: |_| ERROR_TEXT,
            check: check_token,
            fix_up: None,
            seeds: vec![token().to_bytes().to_vec()],
        },
        Decoder {
            name: "chunk",
            bound: |_| 0,
            check: check_chunk,
            fix_up: None,
            seeds: messages
                .iter()
                .filter(|m| m.first() == Some(&SNAPSHOT_CHUNK_KIND))
                .take(16)
                .cloned()
                .collect(),
        },
        Decoder {
            name: "directory",
            bound: |_| 0,
            check: check_directory,
            fix_up: None,
            seeds: messages
                .iter()
                .filter(|m| m.first() == Some(&DIRECTORY_KIND))
                .cloned()
                .collect(),
        },
        Decoder {
            name: "datagram",
            bound: |_| 0,
            check: check_datagram,
            fix_up: None,
            seeds: messages.iter().take(16).cloned().collect(),
        },
        Decoder {
            name: "datagram_messages",
            bound: |_| 0,
            check: check_datagram_messages,
            fix_up: None,
            seeds: datagrams.clone(),
        },
        Decoder {
            name: "tick_frames",
            bound: |_| 0,
            check: check_tick_frames,
            fix_up: None,
            seeds: buffers.clone(),
        },
        Decoder {
            name: "tick_index",
            bound: |n| 80 * n + 1024,
            check: check_tick_index,
            fix_up: None,
            seeds: buffers
                .iter()
                .cloned()
                .chain([oversized_grid_buffer()])
                .collect(),
        },
        Decoder {
            name: "schema",
            bound: |_| 32 << 10,
            check: check_schema,
            fix_up: None,
            seeds: vec![arena_schema().encode()],
        },
        Decoder {
            name: "schema_records",
            bound: |_| 0,
            check: check_schema_records,
            fix_up: None,
            seeds: messages
                .iter()
                .filter(|m| m.first() == Some(&SNAPSHOT_CHUNK_KIND))
                .take(16)
                .map(|m| m[CHUNK_HEADER_LEN..].to_vec())
                .collect(),
        },
        Decoder {
            name: "recording",
            bound: |n| 272 * n + (64 << 10),
            check: check_recording,
            fix_up: Some(fix_recording_crcs),
            seeds: recordings(&buffers),
        },
    ]
}

// ---------------------------------------------------------------------------------------
// Mutation.

const INTERESTING_U8: [u8; 8] = [0, 1, 2, 0x7f, 0x80, 0xfe, 0xff, 0x10];
const INTERESTING_U16: [u16; 8] = [0, 1, 0xff, 0x100, 0x7fff, 0x8000, 0xfffe, 0xffff];
const INTERESTING_U32: [u32; 9] = [
    0,
    1,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    64 << 20,
    (64 << 20) + 1,
];

fn pick<T: Copy>(rng: &mut SimRng, items: &[T]) -> T {
    items[rng.below(items.len() as u32) as usize]
}

/// One input: a seed mutated 1–8 times, or (one time in ten) random bytes.
fn next_input(rng: &mut SimRng, seeds: &[Vec<u8>], out: &mut Vec<u8>) {
    out.clear();
    let longest = seeds.iter().map(Vec::len).max().unwrap_or(64);
    let cap = 2 * longest + 1024;
    if seeds.is_empty() || rng.below(10) == 0 {
        let len = rng.below(longest as u32 + 64) as usize;
        out.extend((0..len).map(|_| rng.next_u64() as u8));
        return;
    }
    out.extend_from_slice(&seeds[rng.below(seeds.len() as u32) as usize]);
    for _ in 0..=rng.below(8) {
        mutate(rng, seeds, out);
        out.truncate(cap);
    }
}

fn mutate(rng: &mut SimRng, seeds: &[Vec<u8>], out: &mut Vec<u8>) {
    let at = |rng: &mut SimRng, len: usize| rng.below(len.max(1) as u32) as usize;
    let len = out.len();
    match rng.below(11) {
        0 if len > 0 => {
            let i = at(rng, len);
            out[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = at(rng, len);
            out[i] = rng.next_u64() as u8;
        }
        2 if len > 0 => {
            let i = at(rng, len);
            out[i] = pick(rng, &INTERESTING_U8);
        }
        3 if len >= 2 => {
            let i = at(rng, len - 1);
            let value = match rng.below(3) {
                0 => pick(rng, &INTERESTING_U16),
                1 => rng.next_u64() as u16,
                // A length near the real one: off by a little either way.
                _ => (len as u16)
                    .wrapping_add(rng.below(9) as u16)
                    .wrapping_sub(4),
            };
            out[i..i + 2].copy_from_slice(&value.to_le_bytes());
        }
        4 if len >= 4 => {
            let i = at(rng, len - 3);
            let value = match rng.below(3) {
                0 => pick(rng, &INTERESTING_U32),
                1 => rng.next_u64() as u32,
                _ => (len as u32).wrapping_add(rng.below(17)).wrapping_sub(8),
            };
            out[i..i + 4].copy_from_slice(&value.to_le_bytes());
        }
        5 => {
            let i = at(rng, len + 1);
            let n = 1 + rng.below(16) as usize;
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            out.splice(i..i, bytes);
        }
        6 if len > 0 => {
            let i = at(rng, len);
            let n = 1 + at(rng, (len - i).min(64));
            out.drain(i..(i + n).min(len));
        }
        7 if len > 1 => {
            let from = at(rng, len);
            let n = 1 + at(rng, (len - from).min(256));
            let piece = out[from..(from + n).min(len)].to_vec();
            let to = at(rng, len + 1);
            out.splice(to..to, piece);
        }
        8 => out.truncate(at(rng, len + 1)),
        9 => {
            // Splice: this input's head, another seed's tail.
            let other = &seeds[rng.below(seeds.len() as u32) as usize];
            let cut = at(rng, len + 1);
            let from = at(rng, other.len() + 1);
            out.truncate(cut);
            out.extend_from_slice(&other[from..]);
        }
        _ => {
            let n = 1 + rng.below(32) as usize;
            out.extend((0..n).map(|_| rng.next_u64() as u8));
        }
    }
}

// ---------------------------------------------------------------------------------------
// The driver.

/// How long to run each decoder: a fixed count of inputs, or a time budget.
#[derive(Clone, Copy)]
enum Budget {
    Inputs(u64),
    Time(Duration),
}

#[derive(Default)]
struct Outcome {
    inputs: u64,
    accepted: u64,
    refused: u64,
    panics: u64,
    over_bound: u64,
    oracle_failures: u64,
    /// The largest (peak bytes, input length) seen, and the largest peak per input byte.
    max_peak: (usize, usize),
    max_per_byte: f64,
    findings: Vec<String>,
}

fn findings_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-findings")
}

fn save_finding(decoder: &str, what: &str, input: &[u8], outcome: &mut Outcome) {
    if outcome.findings.len() >= 20 {
        return; // Enough to go on; the counts say how many more there were.
    }
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    let dir = findings_dir();
    let path = dir.join(format!("{decoder}-{hash:016x}.bin"));
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(&path, input);
    let head: String = input.iter().take(48).map(|b| format!("{b:02x}")).collect();
    outcome.findings.push(format!(
        "{what}: {} ({} bytes: {head}{})",
        path.display(),
        input.len(),
        if input.len() > 48 { "…" } else { "" }
    ));
}

fn run(decoder: &Decoder, budget: Budget, seed: u64) -> Outcome {
    let mut rng = SimRng::new(seed ^ decoder.name.len() as u64 ^ hash_name(decoder.name));
    let mut outcome = Outcome::default();
    let mut input = Vec::new();
    let started = Instant::now();
    loop {
        match budget {
            Budget::Inputs(n) if outcome.inputs >= n => break,
            // Reading the clock every input costs little next to a decode.
            Budget::Time(limit) if started.elapsed() >= limit => break,
            _ => {}
        }
        next_input(&mut rng, &decoder.seeds, &mut input);
        if let Some(fix_up) = decoder.fix_up {
            fix_up(&mut input, &mut rng);
        }
        outcome.inputs += 1;
        INPUT_PEAK.with(|p| p.set(0));
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| (decoder.check)(&input)));
        COUNTING.with(|c| c.set(false));
        let peak = INPUT_PEAK.with(Cell::get);
        match result {
            Err(_) => {
                outcome.panics += 1;
                let message = PANIC.with(|p| p.borrow_mut().take()).unwrap_or_default();
                save_finding(
                    decoder.name,
                    &format!("panic ({message})"),
                    &input,
                    &mut outcome,
                );
                continue;
            }
            Ok(Err(why)) => {
                outcome.oracle_failures += 1;
                save_finding(decoder.name, &why, &input, &mut outcome);
            }
            Ok(Ok(true)) => outcome.accepted += 1,
            Ok(Ok(false)) => outcome.refused += 1,
        }
        if peak > outcome.max_peak.0 {
            outcome.max_peak = (peak, input.len());
        }
        if !input.is_empty() {
            outcome.max_per_byte = outcome.max_per_byte.max(peak as f64 / input.len() as f64);
        }
        let bound = (decoder.bound)(input.len());
        if peak > bound {
            outcome.over_bound += 1;
            let what = format!("held {peak} heap bytes, over its bound of {bound}");
            save_finding(decoder.name, &what, &input, &mut outcome);
        }
    }
    outcome
}

fn hash_name(name: &str) -> u64 {
    name.bytes()
        .fold(0, |h: u64, b| h.rotate_left(7) ^ u64::from(b))
}

fn main() {
    // Panics are expected to be caught and reported as findings: keep the message, not
    // the default hook's stderr noise.
    std::panic::set_hook(Box::new(|info| {
        let message = match (
            info.payload().downcast_ref::<&str>(),
            info.payload().downcast_ref::<String>(),
        ) {
            (Some(s), _) => (*s).to_owned(),
            (_, Some(s)) => s.clone(),
            _ => "?".to_owned(),
        };
        let at = info
            .location()
            .map(|l| format!(" at {l}"))
            .unwrap_or_default();
        let _ = PANIC.try_with(|p| *p.borrow_mut() = Some(format!("{message}{at}")));
    }));
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let budget = match env("FUZZ_SECS").map(|s| s.parse::<u64>()) {
        Some(Ok(secs)) => Budget::Time(Duration::from_secs(secs)),
        Some(Err(_)) => {
            println!("FUZZ_SECS must be a whole number of seconds");
            std::process::exit(2);
        }
        None => Budget::Inputs(3_000),
    };
    let seed = match (env("FUZZ_SEED"), budget) {
        (Some(seed), _) => seed.parse().unwrap_or_else(|_| {
            println!("FUZZ_SEED must be a number");
            std::process::exit(2);
        }),
        (None, Budget::Time(_)) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        (None, Budget::Inputs(_)) => 0x7c1c_ca57,
    };
    let picked: Option<Vec<String>> =
        env("FUZZ_DECODER").map(|names| names.split(',').map(str::to_owned).collect());
    let all = decoders();
    if let Some(picked) = &picked
        && let Some(unknown) = picked.iter().find(|p| !all.iter().any(|d| d.name == *p))
    {
        let names: Vec<_> = all.iter().map(|d| d.name).collect();
        println!("unknown decoder `{unknown}` (known: {})", names.join(", "));
        std::process::exit(2);
    }
    println!("decoder fuzzing, seed {seed}");
    let mut failed = 0;
    let mut passed = 0;
    for decoder in &all {
        if picked
            .as_ref()
            .is_some_and(|p| !p.iter().any(|n| n == decoder.name))
        {
            continue;
        }
        let outcome = run(decoder, budget, seed);
        let ok = outcome.panics == 0 && outcome.over_bound == 0 && outcome.oracle_failures == 0;
        let heap = match outcome.max_peak {
            (0, _) => "no heap allocation".to_owned(),
            (peak, len) => format!(
                "most heap held {peak} B (for a {len} B input), at most {:.1} B per input byte",
                outcome.max_per_byte
            ),
        };
        println!(
            "test {} ... {} ({} inputs: {} accepted, {} refused, {} panics, {} over the \
             allocation bound, {} oracle failures; {heap})",
            decoder.name,
            if ok { "ok" } else { "FAILED" },
            outcome.inputs,
            outcome.accepted,
            outcome.refused,
            outcome.panics,
            outcome.over_bound,
            outcome.oracle_failures,
        );
        for finding in &outcome.findings {
            println!("    {finding}");
        }
        if ok {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
