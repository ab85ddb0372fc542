//! Recordings: what the simulation applied, tick by tick, in an append-only file that
//! reads back after a crash up to its last complete frame. `docs/RECORDING.md` gives the
//! bytes.
//!
//! The framing ([`encode_frame`], [`decode_recording`]) is plain code over bytes. The
//! [`Recorder`] runs it on a thread of its own behind a bounded channel: when the disk
//! cannot keep up, the tick goes on, and the file says which ticks are missing.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use tickcast_shared::Tick;
use tickcast_shared::event::PeerEvent;
use tickcast_shared::msg::{INPUT_DATAGRAM_HEADER_LEN, InputDatagram};
use tickcast_shared::schema::{MAX_SCHEMA_LEN, Schema, SchemaError};

use crate::SimConfig;

/// First bytes of every recording.
pub const MAGIC: [u8; 8] = *b"TICKCAST";
/// Version of the recording format this code writes and reads. Version 2 added the
/// game's replication schema to the header; version 3 stores each input datagram as
/// protocol v3 sends it (`[cmd_len u8]` then the datagram, `6 + count × cmd_len`
/// bytes), so any game's inputs fit. Older recordings are refused: their fixed 42-byte
/// inputs are protocol v2's.
pub const FORMAT_VERSION: u16 = 3;
/// Bytes before the first frame: magic, format version, protocol version.
pub const PREAMBLE_LEN: usize = 12;
/// Bytes before a frame's kind: payload length and CRC.
pub const FRAME_PREFIX_LEN: usize = 8;
/// The largest frame a reader accepts (a keyframe of a very large world).
pub const MAX_FRAME_LEN: usize = 64 << 20;

const KIND_HEADER: u8 = 1;
const KIND_TICK: u8 = 2;
const KIND_GAP: u8 = 3;
const KIND_KEYFRAME: u8 = 4;
const KIND_INDEX: u8 = 5;
/// Set on the kind byte when the payload is lz4-compressed (size-prepended block).
const COMPRESSED: u8 = 0x80;

/// The recording's header: everything needed to rebuild the world it started from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingHeader {
    /// Wire protocol version of the server that recorded.
    pub protocol_version: u16,
    /// The world's configuration (seed, arena, rules).
    pub config: SimConfig,
    /// Which build recorded (`tickcast-sim <version>`).
    pub build_id: String,
    /// A keyframe (the tick's snapshot) is written every this many ticks; 0 = never.
    pub keyframe_interval: u32,
    /// The game's replication schema: which game and version recorded, and how its
    /// keyframes' records read without its code.
    pub schema: Schema,
}

/// One tick as the simulation applied it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TickRecord {
    /// The tick.
    pub tick: Tick,
    /// The state hash after the tick.
    pub state_hash: u64,
    /// How long the tick took on the server, microseconds.
    pub duration_us: u32,
    /// Snapshot bytes the network sent during the tick (all peers).
    pub bytes_out: u64,
    /// Clients connected at the end of the tick.
    pub clients: u32,
    /// The events applied before the tick was stepped, in order.
    pub events: Vec<PeerEvent>,
}

/// A frame of a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The first frame.
    Header(RecordingHeader),
    /// One tick.
    Tick(TickRecord),
    /// Ticks `first..=last` were not recorded (the recorder fell behind).
    Gap {
        /// First missing tick.
        first: Tick,
        /// Last missing tick.
        last: Tick,
    },
    /// The snapshot of a tick (its tick buffer, `tickcast_shared::chunk` layout).
    Keyframe {
        /// The tick.
        tick: Tick,
        /// The tick buffer.
        buffer: Vec<u8>,
    },
    /// Written on a clean close: every keyframe's tick and file offset.
    Index(Vec<(Tick, u64)>),
}

/// Why a recording could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordingError {
    /// The file does not start with the recording magic.
    #[error("not a tickcast recording (bad magic)")]
    BadMagic,
    /// A format version this build does not read.
    #[error("recording format version {0} is not supported (this build reads {FORMAT_VERSION})")]
    UnsupportedVersion(u16),
    /// The first frame is not a readable frame.
    #[error("the recording has no readable header: {0}")]
    NoHeader(FrameError),
    /// The first frame is readable but is not a header.
    #[error("the recording's first frame is not a header")]
    FirstFrameNotHeader,
    /// Nothing follows the preamble.
    #[error("the recording ends after the preamble")]
    NoFrames,
}

/// Why a frame could not be read: the torn tail's reason, or a header's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes remain than a frame's prefix needs.
    #[error("{0} bytes, too short for a frame")]
    TooShort(usize),
    /// The length prefix is over the format's limit.
    #[error("frame length {0} exceeds {MAX_FRAME_LEN}")]
    TooLong(usize),
    /// The file ends inside the frame.
    #[error("frame of {0} bytes is cut off")]
    CutOff(usize),
    /// The frame's CRC does not match its bytes.
    #[error("CRC mismatch")]
    Crc,
    /// A compressed payload claims a decompressed size over the limit; it is refused
    /// before any memory is reserved for it.
    #[error("compressed payload claims {claimed} bytes, over the {MAX_FRAME_LEN}-byte limit")]
    DecompressedTooLarge {
        /// The size prefix.
        claimed: usize,
    },
    /// A compressed payload claims more bytes than an lz4 block of its length can
    /// produce (at most 255 per compressed byte); refused before anything is reserved.
    #[error("{compressed} compressed bytes cannot inflate to the {claimed} claimed")]
    InflatesTooFar {
        /// The size prefix.
        claimed: usize,
        /// Bytes of the compressed block.
        compressed: usize,
    },
    /// A compressed payload does not decompress to its stated size.
    #[error("compressed payload is corrupt")]
    Corrupt,
    /// A field runs past the end of the payload.
    #[error("truncated at byte {at} (wanted {wanted} more)")]
    Truncated {
        /// Where the field starts.
        at: usize,
        /// Bytes it needs.
        wanted: usize,
    },
    /// Bytes are left over after the last field.
    #[error("{0} unexpected trailing bytes")]
    TrailingBytes(usize),
    /// A count of items that the payload cannot hold (so no memory is reserved for it).
    #[error("{what} count {count} does not fit the frame")]
    CountTooLarge {
        /// What was counted.
        what: &'static str,
        /// The count read.
        count: usize,
    },
    /// A header field out of range for this platform.
    #[error("header field {0} is out of range")]
    OutOfRange(&'static str),
    /// An event tag this build does not know.
    #[error("unknown event tag {0}")]
    UnknownEventTag(u8),
    /// A recorded input datagram that does not decode.
    #[error("recorded input: {0}")]
    BadInput(#[source] tickcast_shared::wire::WireError),
    /// A frame kind this build does not know.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The header's replication schema does not decode.
    #[error("the game's schema: {0}")]
    Schema(#[source] SchemaError),
}

/// Where and why reading stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// Offset of the first byte that is not part of a complete, valid frame.
    pub offset: u64,
    /// Bytes from there to the end of the file.
    pub bytes: u64,
    /// What was wrong.
    pub reason: FrameError,
}

/// A recording as read: its header, its complete frames with their offsets, and the torn
/// tail if the file did not end cleanly.
#[derive(Debug, Clone)]
pub struct Recording {
    /// The header.
    pub header: RecordingHeader,
    /// Format version and protocol version from the preamble.
    pub format_version: u16,
    /// Every complete frame after the header, with the offset it starts at.
    pub frames: Vec<(u64, Frame)>,
    /// Set when the file ends in something other than a complete frame.
    pub torn: Option<TornTail>,
    /// Offset just past the last complete frame (where `repair` truncates).
    pub valid_len: u64,
}

impl Recording {
    /// The tick frames, in file order.
    pub fn ticks(&self) -> impl Iterator<Item = &TickRecord> {
        self.frames.iter().filter_map(|(_, frame)| match frame {
            Frame::Tick(tick) => Some(tick),
            _ => None,
        })
    }

    /// The gaps, in file order.
    pub fn gaps(&self) -> impl Iterator<Item = (Tick, Tick)> + '_ {
        self.frames.iter().filter_map(|(_, frame)| match frame {
            Frame::Gap { first, last } => Some((*first, *last)),
            _ => None,
        })
    }

    /// The keyframe for `tick`, if one was recorded.
    pub fn keyframe(&self, tick: Tick) -> Option<&[u8]> {
        self.frames.iter().find_map(|(_, frame)| match frame {
            Frame::Keyframe { tick: t, buffer } if *t == tick => Some(buffer.as_slice()),
            _ => None,
        })
    }
}

/// The file's first 12 bytes.
pub fn preamble(protocol_version: u16) -> [u8; PREAMBLE_LEN] {
    let mut out = [0u8; PREAMBLE_LEN];
    out[..8].copy_from_slice(&MAGIC);
    out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[10..12].copy_from_slice(&protocol_version.to_le_bytes());
    out
}

/// Appends one frame (`u32` length, `u32` CRC-32 of kind and payload, kind, payload) to
/// `out`. Keyframes are lz4-compressed.
pub fn encode_frame(frame: &Frame, out: &mut Vec<u8>) {
    match frame {
        Frame::Header(header) => framed(out, KIND_HEADER, |out| encode_header(header, out)),
        Frame::Tick(tick) => encode_tick_frame(tick, out),
        Frame::Gap { first, last } => framed(out, KIND_GAP, |out| {
            out.extend_from_slice(&first.get().to_le_bytes());
            out.extend_from_slice(&last.get().to_le_bytes());
        }),
        Frame::Keyframe { tick, buffer } => encode_keyframe(*tick, buffer, out),
        Frame::Index(entries) => framed(out, KIND_INDEX, |out| {
            out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
            for (tick, offset) in entries {
                out.extend_from_slice(&tick.get().to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
            }
        }),
    }
}

/// Appends a tick frame; the same bytes as `encode_frame(&Frame::Tick(..))` without
/// needing to own the record.
pub fn encode_tick_frame(tick: &TickRecord, out: &mut Vec<u8>) {
    framed(out, KIND_TICK, |out| encode_tick(tick, out));
}

/// Appends a keyframe frame for `buffer` (a tick buffer), lz4-compressed.
pub fn encode_keyframe(tick: Tick, buffer: &[u8], out: &mut Vec<u8>) {
    framed(out, KIND_KEYFRAME | COMPRESSED, |out| {
        let mut plain = Vec::with_capacity(4 + buffer.len());
        plain.extend_from_slice(&tick.get().to_le_bytes());
        plain.extend_from_slice(buffer);
        out.extend_from_slice(&lz4_flex::compress_prepend_size(&plain));
    });
}

fn framed(out: &mut Vec<u8>, kind: u8, payload: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_PREFIX_LEN]);
    let kind_at = out.len();
    out.push(kind);
    payload(out);
    let payload_len = (out.len() - kind_at - 1) as u32;
    let crc = crc32fast::hash(&out[kind_at..]);
    out[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn encode_header(header: &RecordingHeader, out: &mut Vec<u8>) {
    let c = &header.config;
    out.extend_from_slice(&header.protocol_version.to_le_bytes());
    out.extend_from_slice(&c.tick_rate.to_le_bytes());
    out.extend_from_slice(&c.seed.to_le_bytes());
    out.extend_from_slice(&c.arena_width.to_le_bytes());
    out.extend_from_slice(&c.arena_height.to_le_bytes());
    out.extend_from_slice(&c.cell_size.to_le_bytes());
    out.extend_from_slice(&c.npcs.to_le_bytes());
    out.extend_from_slice(&(c.chunk_payload as u32).to_le_bytes());
    out.extend_from_slice(&(c.snapshot_buffers as u32).to_le_bytes());
    out.extend_from_slice(&c.player_speed.to_le_bytes());
    out.extend_from_slice(&c.npc_speed.to_le_bytes());
    out.push(c.max_inputs_per_tick);
    out.extend_from_slice(&c.projectile_speed.to_le_bytes());
    out.extend_from_slice(&c.projectile_lifetime_ms.to_le_bytes());
    out.extend_from_slice(&c.fire_interval_ms.to_le_bytes());
    out.push(c.hit_damage);
    out.extend_from_slice(&c.hit_radius.to_le_bytes());
    out.extend_from_slice(&c.max_players.to_le_bytes());
    out.extend_from_slice(&(c.expected_entities as u64).to_le_bytes());
    out.extend_from_slice(&header.keyframe_interval.to_le_bytes());
    let build = header.build_id.as_bytes();
    let build = &build[..build.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(build.len() as u16).to_le_bytes());
    out.extend_from_slice(build);
    // A schema is at most MAX_SCHEMA_LEN bytes (checked when it was built).
    let schema = header.schema.encode();
    out.extend_from_slice(&(schema.len() as u16).to_le_bytes());
    out.extend_from_slice(&schema);
}

fn encode_tick(tick: &TickRecord, out: &mut Vec<u8>) {
    out.extend_from_slice(&tick.tick.get().to_le_bytes());
    out.extend_from_slice(&tick.state_hash.to_le_bytes());
    out.extend_from_slice(&tick.duration_us.to_le_bytes());
    out.extend_from_slice(&tick.bytes_out.to_le_bytes());
    out.extend_from_slice(&tick.clients.to_le_bytes());
    out.extend_from_slice(&(tick.events.len() as u32).to_le_bytes());
    for event in &tick.events {
        match event {
            PeerEvent::Joined { client_id } => {
                out.push(1);
                out.extend_from_slice(&client_id.to_le_bytes());
            }
            PeerEvent::Left { client_id } => {
                out.push(2);
                out.extend_from_slice(&client_id.to_le_bytes());
            }
            PeerEvent::Input {
                client_id,
                datagram,
            } => {
                out.push(3);
                out.extend_from_slice(&client_id.to_le_bytes());
                // A command is at most MAX_INPUT_LEN (32) bytes.
                out.push(datagram.cmd_len() as u8);
                let (bytes, len) = datagram.encode();
                out.extend_from_slice(&bytes[..len]);
            }
        }
    }
}

/// Reads a little-endian cursor; every read is checked, so no input can panic it.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len());
        let end = end.ok_or(FrameError::Truncated {
            at: self.at,
            wanted: n,
        })?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn finish(&self) -> Result<(), FrameError> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(FrameError::TrailingBytes(self.bytes.len() - self.at))
        }
    }
}

fn decode_header(payload: &[u8]) -> Result<RecordingHeader, FrameError> {
    let mut c = Cursor {
        bytes: payload,
        at: 0,
    };
    let protocol_version = c.u16()?;
    let config = SimConfig {
        tick_rate: c.u16()?,
        seed: c.u64()?,
        arena_width: c.u16()?,
        arena_height: c.u16()?,
        cell_size: c.u16()?,
        npcs: c.u32()?,
        chunk_payload: c.u32()? as usize,
        snapshot_buffers: c.u32()? as usize,
        player_speed: c.u32()?,
        npc_speed: c.u32()?,
        max_inputs_per_tick: c.u8()?,
        projectile_speed: c.u32()?,
        projectile_lifetime_ms: c.u32()?,
        fire_interval_ms: c.u32()?,
        hit_damage: c.u8()?,
        hit_radius: c.u16()?,
        max_players: c.u32()?,
        expected_entities: usize::try_from(c.u64()?)
            .map_err(|_| FrameError::OutOfRange("expected_entities"))?,
    };
    let keyframe_interval = c.u32()?;
    let build_len = usize::from(c.u16()?);
    let build_id = String::from_utf8_lossy(c.take(build_len)?).into_owned();
    let schema_len = usize::from(c.u16()?);
    if schema_len > MAX_SCHEMA_LEN {
        return Err(FrameError::Schema(SchemaError::TooLong(schema_len)));
    }
    let schema = Schema::decode(c.take(schema_len)?).map_err(FrameError::Schema)?;
    c.finish()?;
    Ok(RecordingHeader {
        protocol_version,
        config,
        build_id,
        keyframe_interval,
        schema,
    })
}

fn decode_tick(payload: &[u8]) -> Result<TickRecord, FrameError> {
    let mut c = Cursor {
        bytes: payload,
        at: 0,
    };
    let tick = Tick::new(c.u32()?);
    let state_hash = c.u64()?;
    let duration_us = c.u32()?;
    let bytes_out = c.u64()?;
    let clients = c.u32()?;
    let count = c.u32()? as usize;
    // Each event is at least 9 bytes: a count the payload cannot hold is a lie, and must
    // not make us reserve memory for it.
    if count > payload.len() / 9 {
        return Err(FrameError::CountTooLarge {
            what: "event",
            count,
        });
    }
    let mut events = Vec::with_capacity(count);
    for _ in 0..count {
        let event = match c.u8()? {
            1 => PeerEvent::Joined {
                client_id: c.u64()?,
            },
            2 => PeerEvent::Left {
                client_id: c.u64()?,
            },
            3 => {
                let client_id = c.u64()?;
                let cmd_len = usize::from(c.u8()?);
                // The count byte (the last of the datagram's header) sizes the rest.
                let count = c
                    .bytes
                    .get(c.at + INPUT_DATAGRAM_HEADER_LEN - 1)
                    .map_or(0, |count| usize::from(*count));
                let len = INPUT_DATAGRAM_HEADER_LEN + count.min(8) * cmd_len;
                let datagram =
                    InputDatagram::decode(c.take(len)?, cmd_len).map_err(FrameError::BadInput)?;
                PeerEvent::Input {
                    client_id,
                    datagram,
                }
            }
            other => return Err(FrameError::UnknownEventTag(other)),
        };
        events.push(event);
    }
    c.finish()?;
    Ok(TickRecord {
        tick,
        state_hash,
        duration_us,
        bytes_out,
        clients,
        events,
    })
}

/// The most bytes an lz4 block can inflate to per compressed byte. A sequence is a
/// token, literals (one output byte per input byte), a 2-byte offset and a match of
/// `19 + 255·k` bytes for `k` length bytes: at most `255 × (3 + k)`.
const LZ4_MAX_RATIO: usize = 255;

/// Decompresses a size-prepended lz4 block, refusing a stated size over
/// [`MAX_FRAME_LEN`], or over what the block's length can produce, before reserving
/// anything: the prefix is data from a file, and lz4 reserves whatever it claims.
fn decompress_bounded(payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut c = Cursor {
        bytes: payload,
        at: 0,
    };
    let claimed = c.u32()? as usize;
    if claimed > MAX_FRAME_LEN {
        return Err(FrameError::DecompressedTooLarge { claimed });
    }
    let block = &payload[4..];
    if claimed > block.len().saturating_mul(LZ4_MAX_RATIO) {
        return Err(FrameError::InflatesTooFar {
            claimed,
            compressed: block.len(),
        });
    }
    let plain = lz4_flex::block::decompress(block, claimed).map_err(|_| FrameError::Corrupt)?;
    if plain.len() == claimed {
        Ok(plain)
    } else {
        Err(FrameError::Corrupt)
    }
}

fn decode_frame(kind: u8, payload: &[u8]) -> Result<Frame, FrameError> {
    let plain;
    let payload = if kind & COMPRESSED != 0 {
        plain = decompress_bounded(payload)?;
        if kind & !COMPRESSED == KIND_KEYFRAME {
            // The keyframe keeps the decompressed block itself: no second copy of it.
            return keyframe_from(plain);
        }
        plain.as_slice()
    } else {
        payload
    };
    match kind & !COMPRESSED {
        KIND_HEADER => decode_header(payload).map(Frame::Header),
        KIND_TICK => decode_tick(payload).map(Frame::Tick),
        KIND_GAP => {
            let mut c = Cursor {
                bytes: payload,
                at: 0,
            };
            let frame = Frame::Gap {
                first: Tick::new(c.u32()?),
                last: Tick::new(c.u32()?),
            };
            c.finish()?;
            Ok(frame)
        }
        KIND_KEYFRAME => keyframe_from(payload.to_vec()),
        KIND_INDEX => {
            let mut c = Cursor {
                bytes: payload,
                at: 0,
            };
            let count = c.u32()? as usize;
            if count > payload.len() / 12 {
                return Err(FrameError::CountTooLarge {
                    what: "index entry",
                    count,
                });
            }
            let mut entries = Vec::with_capacity(count);
            for _ in 0..count {
                entries.push((Tick::new(c.u32()?), c.u64()?));
            }
            c.finish()?;
            Ok(Frame::Index(entries))
        }
        other => Err(FrameError::UnknownKind(other)),
    }
}

/// A keyframe from its payload (`u32 tick`, then the tick buffer), kept in place.
fn keyframe_from(mut payload: Vec<u8>) -> Result<Frame, FrameError> {
    let tick = Tick::new(
        Cursor {
            bytes: &payload,
            at: 0,
        }
        .u32()?,
    );
    payload.drain(..4);
    Ok(Frame::Keyframe {
        tick,
        buffer: payload,
    })
}

/// Reads a whole recording. Never panics: a bad preamble or header is an error; anything
/// wrong after the header ends the frames there and is reported as the torn tail.
pub fn decode_recording(bytes: &[u8]) -> Result<Recording, RecordingError> {
    if bytes.len() < PREAMBLE_LEN || bytes[..8] != MAGIC {
        return Err(RecordingError::BadMagic);
    }
    let format_version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if format_version != FORMAT_VERSION {
        return Err(RecordingError::UnsupportedVersion(format_version));
    }
    let mut at = PREAMBLE_LEN;
    let mut frames = Vec::new();
    let mut header = None;
    let mut torn = None;
    while at < bytes.len() {
        match next_frame(bytes, at) {
            Ok((frame, next)) => {
                match (header.is_none(), frame) {
                    (true, Frame::Header(h)) => header = Some(h),
                    (true, _) => return Err(RecordingError::FirstFrameNotHeader),
                    (false, frame) => frames.push((at as u64, frame)),
                }
                at = next;
            }
            Err(reason) => {
                if header.is_none() {
                    return Err(RecordingError::NoHeader(reason));
                }
                torn = Some(TornTail {
                    offset: at as u64,
                    bytes: (bytes.len() - at) as u64,
                    reason,
                });
                break;
            }
        }
    }
    let header = header.ok_or(RecordingError::NoFrames)?;
    Ok(Recording {
        header,
        format_version,
        frames,
        valid_len: torn.as_ref().map_or(bytes.len() as u64, |t| t.offset),
        torn,
    })
}

fn next_frame(bytes: &[u8], at: usize) -> Result<(Frame, usize), FrameError> {
    let prefix = bytes
        .get(at..at + FRAME_PREFIX_LEN + 1)
        .ok_or(FrameError::TooShort(bytes.len() - at))?;
    let payload_len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    let crc = u32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
    if payload_len > MAX_FRAME_LEN {
        return Err(FrameError::TooLong(payload_len));
    }
    let body_start = at + FRAME_PREFIX_LEN;
    let end = body_start + 1 + payload_len;
    let body = bytes
        .get(body_start..end)
        .ok_or(FrameError::CutOff(payload_len))?;
    if crc32fast::hash(body) != crc {
        return Err(FrameError::Crc);
    }
    Ok((decode_frame(body[0], &body[1..])?, end))
}

/// What [`repair`] did to a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// The file ended in a whole frame: left as it was.
    Whole,
    /// The torn tail was cut off; the file now ends at its last whole frame.
    Truncated {
        /// The file's length now.
        valid_len: u64,
        /// Bytes removed.
        removed: u64,
    },
}

/// Why a recording could not be repaired.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// Reading or truncating the file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not even the start of the file reads (bad preamble or header): there is nothing
    /// whole to keep.
    #[error("{0}")]
    Unreadable(#[from] RecordingError),
}

/// Truncates a recording's torn tail (after a crash), so the file ends at its last whole
/// frame and every reader sees it whole. Everything before the tail is kept as it was.
pub fn repair(path: &Path) -> Result<Repair, RepairError> {
    let recording = decode_recording(&std::fs::read(path)?)?;
    let Some(torn) = recording.torn else {
        return Ok(Repair::Whole);
    };
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_len(recording.valid_len)?;
    file.sync_all()?;
    Ok(Repair::Truncated {
        valid_len: recording.valid_len,
        removed: torn.bytes,
    })
}

/// Counters of a running recorder.
#[derive(Debug, Default)]
pub struct RecorderCounters {
    /// Ticks written.
    pub ticks_written: AtomicU64,
    /// Ticks not recorded because the recorder's channel was full.
    pub ticks_dropped: AtomicU64,
    /// Gap frames written.
    pub gaps: AtomicU64,
    /// Bytes written to the file.
    pub bytes_written: AtomicU64,
    /// Write errors (the recorder stops writing after the first).
    pub write_errors: AtomicU64,
}

enum RecorderMessage {
    Tick {
        record: TickRecord,
        missing_before: Option<(Tick, Tick)>,
        keyframe: Option<Bytes>,
    },
}

/// The simulation's handle to the recorder thread.
pub struct Recorder {
    tx: Option<Sender<RecorderMessage>>,
    spare_events: Receiver<Vec<PeerEvent>>,
    counters: Arc<RecorderCounters>,
    missing: Option<(Tick, Tick)>,
    keyframe_interval: u32,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

/// Ticks the recorder's channel holds. At 30 Hz that is about 8 s of disk stall before a
/// gap is recorded.
pub const RECORDER_CAPACITY: usize = 256;

impl Recorder {
    /// Creates (truncates) `path`, writes the preamble and header, and starts the thread.
    pub fn start(path: &Path, header: RecordingHeader) -> std::io::Result<Self> {
        let file = File::create(path)?;
        let mut out = BufWriter::new(file);
        let mut bytes = preamble(header.protocol_version).to_vec();
        encode_frame(&Frame::Header(header.clone()), &mut bytes);
        out.write_all(&bytes)?;
        out.flush()?;
        let counters = Arc::new(RecorderCounters::default());
        counters
            .bytes_written
            .store(bytes.len() as u64, Ordering::Relaxed);
        let (tx, rx) = crossbeam_channel::bounded(RECORDER_CAPACITY);
        let (spare_tx, spare_rx) = crossbeam_channel::bounded(RECORDER_CAPACITY + 8);
        let thread = {
            let counters = counters.clone();
            let offset = bytes.len() as u64;
            std::thread::Builder::new()
                .name("tickcast-recorder".into())
                .spawn(move || write_loop(out, offset, &rx, &spare_tx, &counters))?
        };
        Ok(Self {
            tx: Some(tx),
            spare_events: spare_rx,
            counters,
            missing: None,
            keyframe_interval: header.keyframe_interval,
            thread: Some(thread),
            path: path.to_path_buf(),
        })
    }

    /// An empty event list to fill for the next tick, reused from an earlier tick when
    /// one has come back from the writer (so steady-state recording does not allocate).
    pub fn event_buffer(&self) -> Vec<PeerEvent> {
        self.spare_events.try_recv().unwrap_or_default()
    }

    /// Whether `tick` gets a keyframe.
    pub fn wants_keyframe(&self, tick: Tick) -> bool {
        self.keyframe_interval > 0 && tick.get().is_multiple_of(self.keyframe_interval)
    }

    /// Hands a tick to the writer. Never blocks: if the writer is behind, the tick is
    /// dropped, counted, and written later as part of a gap.
    pub fn submit(&mut self, record: TickRecord, keyframe: Option<Bytes>) {
        let Some(tx) = &self.tx else { return };
        let tick = record.tick;
        let message = RecorderMessage::Tick {
            record,
            missing_before: self.missing,
            keyframe,
        };
        match tx.try_send(message) {
            Ok(()) => self.missing = None,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.ticks_dropped.fetch_add(1, Ordering::Relaxed);
                self.missing = Some(match self.missing {
                    Some((first, _)) => (first, tick),
                    None => (tick, tick),
                });
            }
        }
    }

    /// Records the tick `sim` just stepped: the events it applied before the step (in
    /// order), its state hash and players, how long the tick took, the bytes the network
    /// sent meanwhile, and `snapshot` as the keyframe when one is due. Never blocks.
    pub fn record_step(
        &mut self,
        sim: &crate::Sim,
        events: Vec<PeerEvent>,
        snapshot: Option<&Bytes>,
        duration_us: u32,
        bytes_out: u64,
    ) {
        let tick = sim.tick().prev();
        let keyframe = if self.wants_keyframe(tick) {
            snapshot.cloned()
        } else {
            None
        };
        self.submit(
            TickRecord {
                tick,
                state_hash: sim.state_hash(),
                duration_us,
                bytes_out,
                clients: sim.players() as u32,
                events,
            },
            keyframe,
        );
    }

    /// The counters.
    pub fn counters(&self) -> &Arc<RecorderCounters> {
        &self.counters
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes what is queued, the index and a final flush, then stops the thread.
    pub fn finish(mut self) {
        self.close();
    }

    fn close(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the recorder thread panicked");
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.close();
    }
}

fn write_loop(
    mut out: BufWriter<File>,
    mut offset: u64,
    rx: &Receiver<RecorderMessage>,
    spare: &Sender<Vec<PeerEvent>>,
    counters: &RecorderCounters,
) {
    let mut bytes = Vec::with_capacity(64 * 1024);
    let mut index = Vec::new();
    let mut failed = false;
    for message in rx.iter() {
        let RecorderMessage::Tick {
            mut record,
            missing_before,
            keyframe,
        } = message;
        bytes.clear();
        if let Some((first, last)) = missing_before {
            encode_frame(&Frame::Gap { first, last }, &mut bytes);
            counters.gaps.fetch_add(1, Ordering::Relaxed);
        }
        let tick = record.tick;
        encode_tick_frame(&record, &mut bytes);
        if let Some(buffer) = keyframe {
            index.push((tick, offset + bytes.len() as u64));
            encode_keyframe(tick, &buffer, &mut bytes);
        }
        // The event list goes back to the sim for reuse; if the sim has enough, it is
        // dropped here.
        record.events.clear();
        let _ = spare.try_send(record.events);
        if !failed {
            // One write and flush per tick: after a crash the file holds every tick
            // up to the last flush, and nothing half-written but the very last frame.
            if let Err(e) = out.write_all(&bytes).and_then(|()| out.flush()) {
                tracing::error!("recording stopped: {e}");
                counters.write_errors.fetch_add(1, Ordering::Relaxed);
                failed = true;
            } else {
                offset += bytes.len() as u64;
                counters.ticks_written.fetch_add(1, Ordering::Relaxed);
                counters
                    .bytes_written
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
        }
    }
    if !failed {
        bytes.clear();
        encode_frame(&Frame::Index(index), &mut bytes);
        let _ = out
            .write_all(&bytes)
            .and_then(|()| out.flush())
            .and_then(|()| out.get_ref().sync_all());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tickcast_shared::msg::InputCmd;

    fn header() -> RecordingHeader {
        RecordingHeader {
            protocol_version: 1,
            config: SimConfig {
                seed: 99,
                npcs: 7,
                ..SimConfig::default()
            },
            build_id: "tickcast-sim test".into(),
            keyframe_interval: 10,
            schema: crate::arena::arena_schema().unwrap(),
        }
    }

    fn arb_event() -> impl Strategy<Value = PeerEvent> {
        prop_oneof![
            any::<u64>().prop_map(|client_id| PeerEvent::Joined { client_id }),
            any::<u64>().prop_map(|client_id| PeerEvent::Left { client_id }),
            (
                any::<u64>(),
                any::<u32>(),
                0u8..=4,
                any::<i8>(),
                any::<u16>()
            )
                .prop_map(|(client_id, ack_tick, count, move_x, aim)| {
                    PeerEvent::Input {
                        client_id,
                        datagram: {
                            let cmd = InputCmd {
                                seq: ack_tick,
                                move_x,
                                aim,
                                ..Default::default()
                            }
                            .to_bytes();
                            let commands = [&cmd[..]; 4];
                            InputDatagram::from_commands(
                                Tick::new(ack_tick),
                                &commands[..usize::from(count)],
                            )
                            .unwrap()
                        },
                    }
                }),
        ]
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (
                any::<u32>(),
                any::<u64>(),
                any::<u32>(),
                any::<u64>(),
                any::<u32>(),
                proptest::collection::vec(arb_event(), 0..20)
            )
                .prop_map(
                    |(tick, state_hash, duration_us, bytes_out, clients, events)| {
                        Frame::Tick(TickRecord {
                            tick: Tick::new(tick),
                            state_hash,
                            duration_us,
                            bytes_out,
                            clients,
                            events,
                        })
                    }
                ),
            (any::<u32>(), any::<u32>()).prop_map(|(first, last)| Frame::Gap {
                first: Tick::new(first),
                last: Tick::new(last),
            }),
            (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..500)).prop_map(
                |(tick, buffer)| Frame::Keyframe {
                    tick: Tick::new(tick),
                    buffer
                }
            ),
            proptest::collection::vec((any::<u32>(), any::<u64>()), 0..20).prop_map(|entries| {
                Frame::Index(
                    entries
                        .into_iter()
                        .map(|(t, o)| (Tick::new(t), o))
                        .collect(),
                )
            }),
        ]
    }

    fn file(frames: &[Frame]) -> Vec<u8> {
        let mut bytes = preamble(1).to_vec();
        encode_frame(&Frame::Header(header()), &mut bytes);
        for frame in frames {
            encode_frame(frame, &mut bytes);
        }
        bytes
    }

    proptest! {
        #[test]
        fn recordings_round_trip(frames in proptest::collection::vec(arb_frame(), 0..12)) {
            let bytes = file(&frames);
            let recording = decode_recording(&bytes).unwrap();
            prop_assert_eq!(recording.header, header());
            prop_assert!(recording.torn.is_none());
            let read: Vec<Frame> = recording.frames.into_iter().map(|(_, f)| f).collect();
            prop_assert_eq!(read, frames);
        }

        #[test]
        fn a_truncated_recording_keeps_every_whole_frame(frames in proptest::collection::vec(arb_frame(), 1..8), cut in any::<prop::sample::Index>()) {
            let bytes = file(&frames);
            let whole = decode_recording(&bytes).unwrap();
            let header_end = whole.frames.first().map_or(bytes.len() as u64, |(o, _)| *o) as usize;
            let cut = header_end + cut.index(bytes.len() - header_end);
            let read = decode_recording(&bytes[..cut]).unwrap();
            let complete = whole.frames.iter().filter(|(offset, frame)| {
                let mut one = Vec::new();
                encode_frame(frame, &mut one);
                *offset as usize + one.len() <= cut
            }).count();
            prop_assert_eq!(read.frames.len(), complete);
            prop_assert_eq!(read.torn.is_some(), read.valid_len as usize != cut);
            prop_assert_eq!(&read.frames[..], &whole.frames[..complete]);
        }

        #[test]
        fn a_flipped_bit_never_panics_and_never_passes_unnoticed(frames in proptest::collection::vec(arb_frame(), 1..6), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = file(&frames);
            let at = at.index(bytes.len());
            bytes[at] ^= 1 << bit;
            match decode_recording(&bytes) {
                Err(_) => {}
                Ok(read) => {
                    let read_frames: Vec<Frame> = read.frames.into_iter().map(|(_, f)| f).collect();
                    // Either the damage is reported as a torn tail or (never, with a CRC)
                    // the frames are exactly the originals.
                    prop_assert!(read.torn.is_some() || read_frames == frames || read.header != header());
                }
            }
        }

        #[test]
        fn random_bytes_are_an_error_or_a_recording_never_a_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..400), with_magic in any::<bool>()) {
            if with_magic && bytes.len() >= PREAMBLE_LEN {
                bytes[..PREAMBLE_LEN].copy_from_slice(&preamble(1));
            }
            let _ = decode_recording(&bytes);
        }
    }

    /// Regression: the reader trusted lz4's size prefix and reserved whatever it
    /// claimed. A 4 GiB claim in a 40-byte frame is now refused before any allocation.
    #[test]
    fn a_compressed_frame_claiming_a_huge_size_is_refused_unallocated() {
        let mut payload = Vec::new();
        payload.extend_from_slice(&u32::MAX.to_le_bytes());
        payload.extend_from_slice(&[0u8; 32]);
        assert_eq!(
            decode_frame(KIND_KEYFRAME | COMPRESSED, &payload).unwrap_err(),
            FrameError::DecompressedTooLarge {
                claimed: u32::MAX as usize
            }
        );
        // A claim within the limit that the block does not fill is corrupt, not a panic.
        let mut short = Vec::new();
        short.extend_from_slice(&100u32.to_le_bytes());
        short.extend_from_slice(&lz4_flex::block::compress(b"tick"));
        assert_eq!(
            decode_frame(KIND_KEYFRAME | COMPRESSED, &short).unwrap_err(),
            FrameError::Corrupt
        );
        // And a genuine compressed keyframe still reads.
        let mut out = Vec::new();
        encode_keyframe(Tick::new(7), b"a tick buffer", &mut out);
        let (frame, _) = next_frame(&out, 0).unwrap();
        assert_eq!(
            frame,
            Frame::Keyframe {
                tick: Tick::new(7),
                buffer: b"a tick buffer".to_vec()
            }
        );
    }

    /// Regression (found by `sim/tests/decoders.rs`): a compressed frame of a few dozen
    /// bytes claiming 40 MB, within the 64 MiB frame limit, made the reader reserve the
    /// 40 MB before lz4 found the block short. A claim beyond 255 bytes per compressed
    /// byte is now refused first.
    #[test]
    fn a_small_compressed_frame_claiming_more_than_lz4_can_inflate_is_refused_unallocated() {
        let mut payload = Vec::new();
        payload.extend_from_slice(&40_000_000u32.to_le_bytes());
        payload.extend_from_slice(&[0u8; 24]);
        assert_eq!(
            decode_frame(KIND_KEYFRAME | COMPRESSED, &payload).unwrap_err(),
            FrameError::InflatesTooFar {
                claimed: 40_000_000,
                compressed: 24
            }
        );
        // lz4 at its best ratio is not refused: a long run of one byte inflates close to
        // 255 times and reads back.
        let run = vec![7u8; 1 << 20];
        let mut out = Vec::new();
        encode_keyframe(Tick::new(3), &run, &mut out);
        let (frame, _) = next_frame(&out, 0).unwrap();
        assert_eq!(
            frame,
            Frame::Keyframe {
                tick: Tick::new(3),
                buffer: run
            }
        );
    }

    #[test]
    fn bad_magic_and_versions_are_refused() {
        assert_eq!(
            decode_recording(b"nope").unwrap_err(),
            RecordingError::BadMagic
        );
        let mut bytes = file(&[]);
        bytes[8] = 9;
        assert_eq!(
            decode_recording(&bytes).unwrap_err(),
            RecordingError::UnsupportedVersion(9)
        );
    }

    #[test]
    fn the_recorder_writes_ticks_keyframes_gaps_and_an_index() {
        let dir = std::env::temp_dir().join(format!("tickcast-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("unit.tcrec");
        let mut recorder = Recorder::start(&path, header()).unwrap();
        for n in 0..25u32 {
            let tick = Tick::new(n);
            let mut events = recorder.event_buffer();
            events.push(PeerEvent::Joined {
                client_id: u64::from(n),
            });
            let keyframe = recorder
                .wants_keyframe(tick)
                .then(|| Bytes::from(vec![n as u8; 8]));
            recorder.submit(
                TickRecord {
                    tick,
                    state_hash: u64::from(n) * 3,
                    events,
                    ..Default::default()
                },
                keyframe,
            );
        }
        // Pretend the writer fell behind for ticks 25..=27: they are dropped and the next
        // submitted tick carries the gap.
        recorder.missing = Some((Tick::new(25), Tick::new(27)));
        recorder.submit(
            TickRecord {
                tick: Tick::new(28),
                ..Default::default()
            },
            None,
        );
        recorder.finish();
        let recording = decode_recording(&std::fs::read(&path).unwrap()).unwrap();
        assert!(recording.torn.is_none());
        let ticks: Vec<u32> = recording.ticks().map(|t| t.tick.get()).collect();
        assert_eq!(ticks, (0..25).chain([28]).collect::<Vec<_>>());
        assert_eq!(
            recording.gaps().collect::<Vec<_>>(),
            vec![(Tick::new(25), Tick::new(27))]
        );
        assert_eq!(recording.keyframe(Tick::new(20)), Some(&[20u8; 8][..]));
        let index = recording
            .frames
            .iter()
            .find_map(|(_, f)| match f {
                Frame::Index(i) => Some(i.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            index.iter().map(|(t, _)| t.get()).collect::<Vec<_>>(),
            vec![0, 10, 20]
        );
        for (tick, offset) in index {
            let at = recording
                .frames
                .iter()
                .find(|(o, _)| *o == offset)
                .map(|(_, f)| f.clone());
            assert!(matches!(at, Some(Frame::Keyframe { tick: t, .. }) if t == tick));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
