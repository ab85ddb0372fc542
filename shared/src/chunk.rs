//! Snapshot chunks: one datagram each, self-contained.
//!
//! A tick's snapshot is cut into chunks. Each chunk carries the tick, the spatial cell its
//! entities are in, its index among that cell's chunks and the cell's chunk count, and
//! whole entity records, so a lost datagram loses only its own entities for that tick.
//!
//! Each tick also has one *directory* datagram: which cells have chunks this tick. A
//! client sees only the cells around its player (interest management, `view_cells` in
//! the Welcome); the directory and the per-cell counts tell it exactly which chunks were
//! meant for it, so it can tell a lost chunk from an empty cell.
//!
//! This module also defines the *tick buffer*: how the simulation lays a tick's chunks
//! out in one buffer for the network thread (`[u16 length][chunk]` repeated). The tick
//! buffer never goes on the wire; each chunk in it is sent as one datagram.

use bincode::{Decode, Encode};

use crate::Tick;
use crate::schema::{RECORD_PREFIX_LEN, Records, Schema, SchemaError};
use crate::wire::{self, WireError};

/// Datagram kind byte of a snapshot chunk.
pub const SNAPSHOT_CHUNK_KIND: u8 = 0x01;

/// Datagram kind byte of a tick directory (0x02 is the input datagram, client to server).
pub const DIRECTORY_KIND: u8 = 0x03;

/// Bytes of a directory before its cell bitmap: kind, flags and [`DirectoryHeader`].
pub const DIRECTORY_HEADER_LEN: usize = 14;

/// A Welcome's `view_cells` meaning "every cell": the client is sent the whole world.
pub const VIEW_ALL: u16 = u16::MAX;

/// Bytes before the first record: kind, flags and [`ChunkHeader`].
pub const CHUNK_HEADER_LEN: usize = 18;

/// Bytes of one [`EntityRecord`].
pub const ENTITY_RECORD_LEN: usize = 14;

/// Default largest chunk, in bytes: [`MAX_CHUNK_PAYLOAD`], 80 records a chunk.
pub const DEFAULT_CHUNK_PAYLOAD: usize = MAX_CHUNK_PAYLOAD;

/// The largest chunk payload, chosen so that every datagram the server sends fits every
/// QUIC path, whatever the client's connection IDs. A server datagram is at most a chunk
/// plus its 2-byte length prefix. quinn sends a datagram only if it fits one packet: a
/// 1-RTT packet on QUIC's minimum path of 1,200 bytes has room for `1200 − (1 flags +
/// the client's connection ID + 4 packet number + 16 AEAD tag) − 9` (the DATAGRAM
/// frame's type and length, as quinn bounds them) = `1170 − cid` bytes of datagram: 1,162
/// with quinn's 8-byte IDs, 1,150 with the longest (20 bytes, RFC 9000 §17.2). So
/// `1148 + 2 = 1150` always fits, and a larger path (after MTU discovery) only adds room.
pub const MAX_CHUNK_PAYLOAD: usize = 1148;

/// The smallest chunk payload that still holds a header and one record.
pub const MIN_CHUNK_PAYLOAD: usize = CHUNK_HEADER_LEN + ENTITY_RECORD_LEN;

/// World units are carried in 1/64ths: `x = world_x * 64`.
pub const POSITION_SCALE: u32 = 64;

/// Entity kind: a player-controlled entity.
pub const KIND_PLAYER: u8 = 1;
/// Entity kind: a server-controlled wanderer.
pub const KIND_NPC: u8 = 2;
/// Entity kind: a projectile.
pub const KIND_PROJECTILE: u8 = 3;

/// The part of a chunk header after the kind and flags bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Encode, Decode)]
pub struct ChunkHeader {
    /// The tick this chunk belongs to.
    pub tick: Tick,
    /// This chunk's index among its cell's chunks, `0..chunks_in_cell`.
    pub index_in_cell: u16,
    /// How many chunks this cell has this tick.
    pub chunks_in_cell: u16,
    /// The spatial cell of every record in this chunk (`row * columns + column`).
    pub cell: u16,
    /// How many records follow.
    pub record_count: u16,
    /// The server's wall clock when it encoded the tick: microseconds since the Unix
    /// epoch, modulo 2^32. Lets a client on the same clock measure delivery latency.
    pub server_time_us: u32,
}

/// One entity as a snapshot carries it, quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Encode, Decode)]
pub struct EntityRecord {
    /// Stable id, never reused within a server run.
    pub net_id: u32,
    /// [`KIND_PLAYER`], [`KIND_NPC`] or [`KIND_PROJECTILE`].
    pub kind: u8,
    /// Health, 0 to 255.
    pub health: u8,
    /// X position in 1/64 world units.
    pub x: u16,
    /// Y position in 1/64 world units.
    pub y: u16,
    /// Heading, a full turn in 65,536 steps.
    pub angle: u16,
    /// Kind-specific: a player's score, a projectile's owner (low 16 bits of its net id).
    pub aux: u16,
}

/// Why bytes are not a valid snapshot chunk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// Too short to hold a header.
    #[error("chunk of {0} bytes is shorter than its header")]
    TooShort(usize),
    /// The first byte is not [`SNAPSHOT_CHUNK_KIND`].
    #[error("datagram kind {0:#04x} is not a snapshot chunk")]
    WrongKind(u8),
    /// The body is too short for the record count (each record is at least 5 bytes).
    #[error("chunk says {records} records but has {body} body bytes")]
    LengthMismatch {
        /// Records announced.
        records: usize,
        /// Bytes after the header.
        body: usize,
    },
    /// `index_in_cell >= chunks_in_cell`.
    #[error("chunk index {index} is not below the cell's chunk count {count}")]
    BadIndex {
        /// The index.
        index: u16,
        /// The count.
        count: u16,
    },
    /// A directory whose length does not match its grid.
    #[error("directory for a {columns} x {rows} grid has {len} bytes, expected {expected}")]
    DirectoryLength {
        /// Columns announced.
        columns: u16,
        /// Rows announced.
        rows: u16,
        /// Bytes received.
        len: usize,
        /// Bytes a directory of that grid has.
        expected: usize,
    },
    /// A datagram's frame runs past its end.
    #[error("the frame at byte {at} of a {len}-byte datagram runs past its end")]
    TornFrame {
        /// Offset of the frame's length prefix.
        at: usize,
        /// Length of the datagram.
        len: usize,
    },
    /// The header did not decode.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// A parsed chunk borrowing the datagram's bytes.
///
/// Its records are laid out by the game's schema (`docs/PROTOCOL.md` §4): read them with
/// [`Chunk::records_with`], which also checks that `record_count` records fill the body
/// exactly. [`parse_chunk`] checks only what holds for every game.
#[derive(Debug, Clone, Copy)]
pub struct Chunk<'a> {
    /// The header.
    pub header: ChunkHeader,
    records: &'a [u8],
}

impl<'a> Chunk<'a> {
    /// The bytes after the header: `record_count` records, as the schema lays them out.
    pub fn body(&self) -> &'a [u8] {
        self.records
    }

    /// The records read with the game's `schema`, after checking that `record_count`
    /// of them fill the body exactly (so the iterator yields only `Ok`s).
    pub fn records_with<'s>(&self, schema: &'s Schema) -> Result<Records<'s>, SchemaError>
    where
        'a: 's,
    {
        schema.check_records(self.records, usize::from(self.header.record_count))?;
        Ok(schema.records(self.records))
    }

    /// The records read as the demo arena's [`EntityRecord`]s (14 bytes each): for
    /// arena-only code. A body that is not `record_count` of those yields what whole
    /// 14-byte slices it holds.
    pub fn records(&self) -> impl ExactSizeIterator<Item = EntityRecord> + 'a {
        self.records
            .chunks_exact(ENTITY_RECORD_LEN)
            .map(|raw| EntityRecord::from_bytes(raw).unwrap_or_default())
    }

    /// Each record's `net_id` and `kind` read as the arena lays them out (14-byte
    /// records): for arena-only code; a generic reader walks [`Chunk::records_with`].
    pub fn ids_and_kinds(&self) -> impl ExactSizeIterator<Item = (u32, u8)> + 'a {
        self.records
            .chunks_exact(ENTITY_RECORD_LEN)
            .map(|raw| (u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]), raw[4]))
    }
}

impl EntityRecord {
    /// Reads an arena record from exactly [`ENTITY_RECORD_LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != ENTITY_RECORD_LEN {
            return None;
        }
        wire::decode_exact(bytes).ok()
    }
}

/// The fixed header fields of a message of `kind` whose header (kind and flags bytes
/// included) is `header_len` bytes: the bytes after the kind and flags, before the body.
fn header_fields(bytes: &[u8], kind: u8, header_len: usize) -> Result<&[u8], ChunkError> {
    if bytes.len() < header_len {
        return Err(ChunkError::TooShort(bytes.len()));
    }
    if bytes[0] != kind {
        return Err(ChunkError::WrongKind(bytes[0]));
    }
    // bytes[1] is the flags byte: reserved, ignored by version 2 readers.
    Ok(&bytes[2..header_len])
}

/// Parses and validates one snapshot chunk.
pub fn parse_chunk(bytes: &[u8]) -> Result<Chunk<'_>, ChunkError> {
    let header: ChunkHeader =
        wire::decode_exact(header_fields(bytes, SNAPSHOT_CHUNK_KIND, CHUNK_HEADER_LEN)?)?;
    if header.index_in_cell >= header.chunks_in_cell {
        return Err(ChunkError::BadIndex {
            index: header.index_in_cell,
            count: header.chunks_in_cell,
        });
    }
    let body = &bytes[CHUNK_HEADER_LEN..];
    // Every record is at least its net id and kind; its full length is the schema's.
    if body.len() < usize::from(header.record_count) * RECORD_PREFIX_LEN {
        return Err(ChunkError::LengthMismatch {
            records: usize::from(header.record_count),
            body: body.len(),
        });
    }
    Ok(Chunk {
        header,
        records: body,
    })
}

/// Writes a chunk header (kind, flags, header) into the first [`CHUNK_HEADER_LEN`] bytes
/// of `out`.
pub fn write_header(header: &ChunkHeader, out: &mut [u8; CHUNK_HEADER_LEN]) {
    out[0] = SNAPSHOT_CHUNK_KIND;
    out[1] = 0;
    // 16 bytes of fixed-width fields always fit the 16 bytes left.
    let written = wire::encode_into(header, &mut out[2..]).unwrap_or(0);
    debug_assert_eq!(written, CHUNK_HEADER_LEN - 2);
}

/// Writes one record into `out`.
pub fn write_record(record: &EntityRecord, out: &mut [u8; ENTITY_RECORD_LEN]) {
    let written = wire::encode_into(record, out).unwrap_or(0);
    debug_assert_eq!(written, ENTITY_RECORD_LEN);
}

/// How many records fit in a chunk of at most `payload` bytes.
pub fn records_per_chunk(payload: usize) -> usize {
    payload.saturating_sub(CHUNK_HEADER_LEN) / ENTITY_RECORD_LEN
}

/// The part of a directory after the kind and flags bytes, before the bitmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Encode, Decode)]
pub struct DirectoryHeader {
    /// The tick this directory describes.
    pub tick: Tick,
    /// The server's clock when it encoded the tick, as in [`ChunkHeader`].
    pub server_time_us: u32,
    /// Columns of the cell grid.
    pub columns: u16,
    /// Rows of the cell grid.
    pub rows: u16,
}

/// A parsed tick directory: which cells have at least one chunk this tick.
#[derive(Debug, Clone, Copy)]
pub struct Directory<'a> {
    /// The header.
    pub header: DirectoryHeader,
    bitmap: &'a [u8],
}

impl Directory<'_> {
    /// Whether `cell` has chunks this tick (false for a cell outside the grid).
    pub fn occupied(&self, cell: u16) -> bool {
        let cell = usize::from(cell);
        cell < self.cells() && self.bitmap[cell / 8] & (1 << (cell % 8)) != 0
    }

    /// Cells in the grid.
    pub fn cells(&self) -> usize {
        usize::from(self.header.columns) * usize::from(self.header.rows)
    }

    /// The bitmap: bit `cell % 8` of byte `cell / 8` is set for an occupied cell.
    pub fn bitmap(&self) -> &[u8] {
        self.bitmap
    }
}

/// Bytes of the directory of a grid of `cells` cells.
pub fn directory_len(cells: usize) -> usize {
    DIRECTORY_HEADER_LEN + cells.div_ceil(8)
}

/// Parses and validates a tick directory.
pub fn parse_directory(bytes: &[u8]) -> Result<Directory<'_>, ChunkError> {
    let header: DirectoryHeader =
        wire::decode_exact(header_fields(bytes, DIRECTORY_KIND, DIRECTORY_HEADER_LEN)?)?;
    let cells = usize::from(header.columns) * usize::from(header.rows);
    let expected = directory_len(cells);
    if bytes.len() != expected {
        return Err(ChunkError::DirectoryLength {
            columns: header.columns,
            rows: header.rows,
            len: bytes.len(),
            expected,
        });
    }
    Ok(Directory {
        header,
        bitmap: &bytes[DIRECTORY_HEADER_LEN..],
    })
}

/// Writes a directory into `out`, which must be [`directory_len`] of the grid's cells
/// long; `occupied(cell)` says whether a cell has chunks.
pub fn write_directory(header: &DirectoryHeader, occupied: impl Fn(usize) -> bool, out: &mut [u8]) {
    let cells = usize::from(header.columns) * usize::from(header.rows);
    debug_assert_eq!(out.len(), directory_len(cells));
    out[0] = DIRECTORY_KIND;
    out[1] = 0;
    let written = wire::encode_into(header, &mut out[2..DIRECTORY_HEADER_LEN]).unwrap_or(0);
    debug_assert_eq!(written, DIRECTORY_HEADER_LEN - 2);
    let bitmap = &mut out[DIRECTORY_HEADER_LEN..];
    bitmap.fill(0);
    for cell in (0..cells).filter(|&cell| occupied(cell)) {
        bitmap[cell / 8] |= 1 << (cell % 8);
    }
}

/// One message of a server datagram: a chunk or a directory.
#[derive(Debug, Clone, Copy)]
pub enum ServerDatagram<'a> {
    /// A snapshot chunk.
    Chunk(Chunk<'a>),
    /// A tick directory.
    Directory(Directory<'a>),
}

impl ServerDatagram<'_> {
    /// The server's clock when it encoded the message's tick.
    pub fn server_time_us(&self) -> u32 {
        match self {
            ServerDatagram::Chunk(chunk) => chunk.header.server_time_us,
            ServerDatagram::Directory(directory) => directory.header.server_time_us,
        }
    }

    /// The tick the message belongs to.
    pub fn tick(&self) -> Tick {
        match self {
            ServerDatagram::Chunk(chunk) => chunk.header.tick,
            ServerDatagram::Directory(directory) => directory.header.tick,
        }
    }
}

/// Parses one message (the bytes after its length prefix) by its kind byte.
pub fn parse_datagram(bytes: &[u8]) -> Result<ServerDatagram<'_>, ChunkError> {
    match bytes.first() {
        Some(&DIRECTORY_KIND) => parse_directory(bytes).map(ServerDatagram::Directory),
        _ => parse_chunk(bytes).map(ServerDatagram::Chunk),
    }
}

/// The messages of one datagram from the server, in order. A server datagram is one or
/// more `[u16 length][message]` frames (the tick buffer's own framing: the server sends a
/// run of consecutive frames as one datagram, uncopied). Yields each message parsed, and
/// one `Err` for a datagram that is empty or whose last frame is torn.
pub fn datagram_messages(bytes: &[u8]) -> DatagramMessages<'_> {
    DatagramMessages {
        bytes,
        offset: 0,
        done: false,
    }
}

/// Iterator returned by [`datagram_messages`].
#[derive(Debug, Clone)]
pub struct DatagramMessages<'a> {
    bytes: &'a [u8],
    offset: usize,
    done: bool,
}

impl<'a> Iterator for DatagramMessages<'a> {
    type Item = Result<ServerDatagram<'a>, ChunkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = &self.bytes[self.offset..];
        if rest.is_empty() {
            self.done = true;
            return (self.offset == 0).then_some(Err(ChunkError::TooShort(0)));
        }
        let len = match rest {
            [low, high, ..] => usize::from(u16::from_le_bytes([*low, *high])),
            _ => usize::MAX,
        };
        let Some(body) = rest.get(TICK_FRAME_PREFIX_LEN..).and_then(|b| b.get(..len)) else {
            self.done = true;
            return Some(Err(ChunkError::TornFrame {
                at: self.offset,
                len: self.bytes.len(),
            }));
        };
        self.offset += TICK_FRAME_PREFIX_LEN + len;
        Some(parse_datagram(body))
    }
}

/// The cells a client sees: a rectangle of the grid, clipped to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewRect {
    /// First column.
    pub column_start: u16,
    /// Last column (inclusive).
    pub column_end: u16,
    /// First row.
    pub row_start: u16,
    /// Last row (inclusive).
    pub row_end: u16,
}

impl ViewRect {
    /// The cells within `radius` cells (Chebyshev distance) of `center`, on a grid of
    /// `columns × rows`; [`VIEW_ALL`] (or any radius covering the grid) is the whole grid.
    pub fn around(center: u16, columns: u16, rows: u16, radius: u16) -> Self {
        let columns = columns.max(1);
        let (row, column) = (center / columns, center % columns);
        Self {
            column_start: column.saturating_sub(radius),
            column_end: column.saturating_add(radius).min(columns - 1),
            row_start: row.saturating_sub(radius).min(rows.saturating_sub(1)),
            row_end: row.saturating_add(radius).min(rows.saturating_sub(1)),
        }
    }

    /// Whether `cell` lies in the rectangle.
    pub fn contains(&self, cell: u16, columns: u16) -> bool {
        let columns = columns.max(1);
        let (row, column) = (cell / columns, cell % columns);
        (self.row_start..=self.row_end).contains(&row)
            && (self.column_start..=self.column_end).contains(&column)
    }

    /// The cells of each row of the rectangle, as inclusive ranges of cell numbers: cells
    /// are numbered row by row, so each row of the view is one contiguous run.
    pub fn row_runs(&self, columns: u16) -> impl Iterator<Item = (u16, u16)> + '_ {
        (self.row_start..=self.row_end).map(move |row| {
            let base = u32::from(row) * u32::from(columns);
            (
                (base + u32::from(self.column_start)) as u16,
                (base + u32::from(self.column_end)) as u16,
            )
        })
    }
}

/// Bytes of the length prefix before each chunk in a tick buffer.
pub const TICK_FRAME_PREFIX_LEN: usize = 2;

/// Iterates over the datagrams laid out in a tick buffer (the directory first, then the
/// chunks in cell order), yielding each one's byte range.
/// Stops at the first frame that does not fit (a truncated buffer yields what is whole).
pub fn tick_frames(buffer: &[u8]) -> TickFrames<'_> {
    TickFrames { buffer, offset: 0 }
}

/// Iterator returned by [`tick_frames`].
#[derive(Debug, Clone)]
pub struct TickFrames<'a> {
    buffer: &'a [u8],
    offset: usize,
}

impl Iterator for TickFrames<'_> {
    type Item = std::ops::Range<usize>;

    fn next(&mut self) -> Option<Self::Item> {
        let prefix_end = self.offset.checked_add(TICK_FRAME_PREFIX_LEN)?;
        let prefix = self.buffer.get(self.offset..prefix_end)?;
        let len = usize::from(u16::from_le_bytes([prefix[0], prefix[1]]));
        let end = prefix_end.checked_add(len)?;
        if end > self.buffer.len() {
            return None;
        }
        self.offset = end;
        Some(prefix_end..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode_chunk(header: ChunkHeader, records: &[EntityRecord]) -> Vec<u8> {
        let mut out = vec![0u8; CHUNK_HEADER_LEN + records.len() * ENTITY_RECORD_LEN];
        let (head, body) = out.split_at_mut(CHUNK_HEADER_LEN);
        write_header(&header, head.try_into().unwrap());
        for (record, slot) in records.iter().zip(body.chunks_exact_mut(ENTITY_RECORD_LEN)) {
            write_record(record, slot.try_into().unwrap());
        }
        out
    }

    fn arb_record() -> impl Strategy<Value = EntityRecord> {
        (
            any::<u32>(),
            any::<u8>(),
            any::<u8>(),
            any::<u16>(),
            any::<u16>(),
            any::<u16>(),
            any::<u16>(),
        )
            .prop_map(|(net_id, kind, health, x, y, angle, aux)| EntityRecord {
                net_id,
                kind,
                health,
                x,
                y,
                angle,
                aux,
            })
    }

    #[test]
    fn the_layout_matches_the_protocol_doc() {
        let header = ChunkHeader {
            tick: Tick::new(0x0403_0201),
            index_in_cell: 1,
            chunks_in_cell: 2,
            cell: 0x0605,
            record_count: 1,
            server_time_us: 0x0a09_0807,
        };
        let record = EntityRecord {
            net_id: 0x1413_1211,
            kind: KIND_PLAYER,
            health: 100,
            x: 0x1615,
            y: 0x1817,
            angle: 0x1a19,
            aux: 0x1c1b,
        };
        let bytes = encode_chunk(header, &[record]);
        assert_eq!(
            bytes,
            [
                0x01, 0x00, 0x01, 0x02, 0x03, 0x04, 0x01, 0x00, 0x02, 0x00, 0x05, 0x06, 0x01, 0x00,
                0x07, 0x08, 0x09, 0x0a, 0x11, 0x12, 0x13, 0x14, 0x01, 100, 0x15, 0x16, 0x17, 0x18,
                0x19, 0x1a, 0x1b, 0x1c
            ]
        );
    }

    #[test]
    fn records_per_chunk_at_the_default_payload() {
        assert_eq!(records_per_chunk(DEFAULT_CHUNK_PAYLOAD), 80);
        assert_eq!(records_per_chunk(MIN_CHUNK_PAYLOAD), 1);
    }

    #[test]
    fn tick_frames_stop_at_a_torn_frame() {
        let mut buf = vec![];
        for chunk in [&b"abc"[..], b"", b"hello"] {
            buf.extend_from_slice(&(chunk.len() as u16).to_le_bytes());
            buf.extend_from_slice(chunk);
        }
        let whole: Vec<_> = tick_frames(&buf).map(|r| buf[r].to_vec()).collect();
        assert_eq!(whole, vec![b"abc".to_vec(), vec![], b"hello".to_vec()]);
        assert_eq!(tick_frames(&buf[..buf.len() - 1]).count(), 2);
    }

    #[test]
    fn a_directory_round_trips_and_its_layout_matches_the_protocol_doc() {
        let header = DirectoryHeader {
            tick: Tick::new(0x0403_0201),
            server_time_us: 0x0807_0605,
            columns: 3,
            rows: 4,
        };
        let mut out = vec![0u8; directory_len(12)];
        write_directory(
            &header,
            |cell| cell == 0 || cell == 9 || cell == 11,
            &mut out,
        );
        assert_eq!(
            out,
            [
                0x03,
                0x00,
                0x01,
                0x02,
                0x03,
                0x04,
                0x05,
                0x06,
                0x07,
                0x08,
                0x03,
                0x00,
                0x04,
                0x00,
                0b0000_0001,
                0b0000_1010
            ]
        );
        let parsed = parse_directory(&out).unwrap();
        assert_eq!(parsed.header, header);
        let occupied: Vec<u16> = (0..14).filter(|&c| parsed.occupied(c)).collect();
        assert_eq!(occupied, vec![0, 9, 11]);
        assert!(matches!(
            parse_directory(&out[..15]),
            Err(ChunkError::DirectoryLength { expected: 16, .. })
        ));
        assert!(matches!(
            parse_datagram(&out),
            Ok(ServerDatagram::Directory(_))
        ));
    }

    #[test]
    fn a_datagram_carries_consecutive_frames_and_a_torn_one_is_an_error() {
        let header = DirectoryHeader {
            tick: Tick::new(1),
            server_time_us: 0,
            columns: 1,
            rows: 1,
        };
        let mut directory = vec![0u8; directory_len(1)];
        write_directory(&header, |_| true, &mut directory);
        let chunk = encode_chunk(
            ChunkHeader {
                tick: Tick::new(1),
                chunks_in_cell: 1,
                record_count: 1,
                ..ChunkHeader::default()
            },
            &[EntityRecord::default()],
        );
        let mut datagram = Vec::new();
        for message in [&directory, &chunk] {
            datagram.extend_from_slice(&(message.len() as u16).to_le_bytes());
            datagram.extend_from_slice(message);
        }
        let kinds: Vec<_> = datagram_messages(&datagram)
            .map(|m| match m.unwrap() {
                ServerDatagram::Directory(_) => "directory",
                ServerDatagram::Chunk(_) => "chunk",
            })
            .collect();
        assert_eq!(kinds, vec!["directory", "chunk"]);
        let torn: Vec<_> = datagram_messages(&datagram[..datagram.len() - 1]).collect();
        assert!(torn[0].is_ok());
        assert!(matches!(torn[1], Err(ChunkError::TornFrame { .. })));
        assert_eq!(torn.len(), 2);
        assert!(matches!(
            datagram_messages(&[]).collect::<Vec<_>>()[..],
            [Err(ChunkError::TooShort(0))]
        ));
    }

    #[test]
    fn a_view_is_the_clipped_square_around_its_center() {
        // 5 × 4 grid; center (row 1, column 0), radius 1.
        let view = ViewRect::around(5, 5, 4, 1);
        assert_eq!(
            view,
            ViewRect {
                column_start: 0,
                column_end: 1,
                row_start: 0,
                row_end: 2
            }
        );
        assert_eq!(
            view.row_runs(5).collect::<Vec<_>>(),
            vec![(0, 1), (5, 6), (10, 11)]
        );
        assert!(view.contains(11, 5) && !view.contains(12, 5) && !view.contains(15, 5));
        let all = ViewRect::around(7, 5, 4, VIEW_ALL);
        assert_eq!(
            all.row_runs(5).collect::<Vec<_>>(),
            vec![(0, 4), (5, 9), (10, 14), (15, 19)]
        );
    }

    proptest! {
        #[test]
        fn directories_round_trip(columns in 1u16..100, rows in 1u16..90, tick in any::<u32>(),
                                  seed in any::<u64>()) {
            let cells = usize::from(columns) * usize::from(rows);
            let occupied = |cell: usize| (seed.rotate_left(cell as u32 % 64) ^ cell as u64) & 1 == 1;
            let header = DirectoryHeader { tick: Tick::new(tick), server_time_us: 7, columns, rows };
            let mut out = vec![0u8; directory_len(cells)];
            write_directory(&header, occupied, &mut out);
            let parsed = parse_directory(&out).unwrap();
            prop_assert_eq!(parsed.header, header);
            for cell in 0..cells {
                prop_assert_eq!(parsed.occupied(cell as u16), occupied(cell));
            }
        }

        #[test]
        fn parse_datagram_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(ServerDatagram::Directory(d)) = parse_datagram(&bytes) {
                prop_assert_eq!(bytes.len(), directory_len(d.cells()));
            }
            // Any bytes as a datagram: a bounded number of results, never a panic.
            prop_assert!(datagram_messages(&bytes).count() <= bytes.len() / 2 + 1);
        }

        #[test]
        fn chunks_round_trip(tick in any::<u32>(), count in 1u16..500, cell in any::<u16>(), t in any::<u32>(),
                             records in proptest::collection::vec(arb_record(), 0..80)) {
            let header = ChunkHeader { tick: Tick::new(tick), index_in_cell: count - 1, chunks_in_cell: count, cell,
                record_count: records.len() as u16, server_time_us: t };
            let bytes = encode_chunk(header, &records);
            let chunk = parse_chunk(&bytes).unwrap();
            prop_assert_eq!(chunk.header, header);
            prop_assert_eq!(chunk.ids_and_kinds().collect::<Vec<_>>(),
                records.iter().map(|r| (r.net_id, r.kind)).collect::<Vec<_>>());
            prop_assert_eq!(chunk.records().collect::<Vec<_>>(), records);
        }

        #[test]
        fn parse_chunk_never_panics_and_what_parses_re_encodes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(chunk) = parse_chunk(&bytes) {
                let count = usize::from(chunk.header.record_count);
                prop_assert!(chunk.body().len() >= count * RECORD_PREFIX_LEN);
                // Bodies of arena records re-encode to themselves.
                if chunk.body().len() == count * ENTITY_RECORD_LEN {
                    let records: Vec<_> = chunk.records().collect();
                    let mut again = encode_chunk(chunk.header, &records);
                    again[1] = bytes[1]; // the reserved flags byte is not interpreted
                    prop_assert_eq!(again, bytes);
                }
            }
        }
    }
}
