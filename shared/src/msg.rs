//! Control-stream messages and the client's input datagram.
//!
//! The control stream is the one bidirectional stream a client opens: it sends a
//! [`Hello`]; the server answers with a [`ServerMessage`] (Welcome or Reject). Each
//! message is a frame: a `u16` little-endian length and a body (see [`crate::wire`]).

use bincode::{Decode, Encode};

use crate::Tick;
use crate::schema::{INPUT_PREFIX_LEN, MAX_INPUT_LEN, Schema, SchemaError};
use crate::token::ConnectToken;
use crate::wire::{self, WireError};

/// The first and only message a client sends on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Hello {
    /// Must equal [`crate::PROTOCOL_VERSION`].
    pub protocol_version: u16,
    /// The token that admits this client, minted by the game's backend.
    pub token: ConnectToken,
}

/// The server admitted the client.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Welcome {
    /// The server's protocol version.
    pub protocol_version: u16,
    /// The client id from the token.
    pub client_id: u64,
    /// The `net_id` of the entity this client controls.
    pub entity: u32,
    /// Snapshots per second the server publishes.
    pub tick_rate: u16,
    /// The largest chunk (datagram payload) the server sends, in bytes.
    pub chunk_payload: u16,
    /// Arena width in world units; chunk positions are in 1/64 units.
    pub arena_width: u16,
    /// Arena height in world units.
    pub arena_height: u16,
    /// Side of a spatial cell in world units; the grid has
    /// `ceil(arena_width / cell_size)` columns.
    pub cell_size: u16,
    /// The client is sent the cells within this many cells of its player's cell
    /// (Chebyshev distance); [`crate::chunk::VIEW_ALL`] for the whole world.
    pub view_cells: u16,
    /// The server's tick when the client was admitted.
    pub server_tick: Tick,
}

/// Why the server refused a client. The numeric code is part of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// The Hello's protocol version is not the server's.
    BadVersion,
    /// The token's MAC does not verify under the server's key, or its format is unknown.
    BadToken,
    /// The token's expiry is in the past.
    TokenExpired,
    /// The token's nonce was already used.
    TokenReplayed,
    /// The server is at its client limit.
    ServerFull,
    /// Admitting the client would exceed the server's memory budget.
    OverMemoryBudget,
    /// The server is shutting down or cannot take joins right now.
    Unavailable,
    /// The client's QUIC stack does not accept datagrams as large as a chunk.
    DatagramsUnsupported,
    /// The server is draining (SIGTERM, or its orchestrator shut it down): it lets its
    /// players finish and admits no one new. Try another server.
    Draining,
}

impl RejectReason {
    /// Every reason, in code order.
    pub const ALL: [RejectReason; 9] = [
        RejectReason::BadVersion,
        RejectReason::BadToken,
        RejectReason::TokenExpired,
        RejectReason::TokenReplayed,
        RejectReason::ServerFull,
        RejectReason::OverMemoryBudget,
        RejectReason::Unavailable,
        RejectReason::DatagramsUnsupported,
        RejectReason::Draining,
    ];

    /// The reason's wire code.
    pub fn code(self) -> u16 {
        match self {
            RejectReason::BadVersion => 0,
            RejectReason::BadToken => 1,
            RejectReason::TokenExpired => 2,
            RejectReason::TokenReplayed => 3,
            RejectReason::ServerFull => 4,
            RejectReason::OverMemoryBudget => 5,
            RejectReason::Unavailable => 6,
            RejectReason::DatagramsUnsupported => 7,
            RejectReason::Draining => 8,
        }
    }

    /// The reason for a wire code, if it is one this version knows.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }

    /// A short snake_case name, used in logs, counters and reports.
    pub fn name(self) -> &'static str {
        match self {
            RejectReason::BadVersion => "bad_version",
            RejectReason::BadToken => "bad_token",
            RejectReason::TokenExpired => "token_expired",
            RejectReason::TokenReplayed => "token_replayed",
            RejectReason::ServerFull => "server_full",
            RejectReason::OverMemoryBudget => "over_memory_budget",
            RejectReason::Unavailable => "unavailable",
            RejectReason::DatagramsUnsupported => "datagrams_unsupported",
            RejectReason::Draining => "draining",
        }
    }
}

/// The server refused the client; the connection is closed right after with close code
/// `0x10 + reason_code`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Reject {
    /// A [`RejectReason`] code. Kept as a number so a client can read codes newer than it.
    pub reason_code: u16,
    /// Human-readable detail, at most [`MAX_REJECT_DETAIL`] bytes of UTF-8.
    pub detail: String,
}

/// The longest Reject detail a server sends.
pub const MAX_REJECT_DETAIL: usize = 200;

impl Reject {
    /// A Reject for `reason` with a detail cut to [`MAX_REJECT_DETAIL`] bytes.
    pub fn new(reason: RejectReason, detail: &str) -> Self {
        let mut end = detail.len().min(MAX_REJECT_DETAIL);
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            reason_code: reason.code(),
            detail: detail[..end].to_owned(),
        }
    }

    /// The reason, if this version knows its code.
    pub fn reason(&self) -> Option<RejectReason> {
        RejectReason::from_code(self.reason_code)
    }
}

/// What the server sends on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum ServerMessage {
    /// Admitted (tag 0).
    Welcome(Welcome),
    /// Refused (tag 1).
    Reject(Reject),
}

/// Datagram kind byte of a client's input datagram.
pub const INPUT_DATAGRAM_KIND: u8 = 0x02;

/// How many inputs one datagram carries at most: the newest and a few before it, so a
/// lost datagram costs nothing when the next one arrives.
pub const MAX_INPUTS_PER_DATAGRAM: usize = 4;

/// Bytes of an input datagram before its commands: kind, `ack_tick` (u32), count (u8).
pub const INPUT_DATAGRAM_HEADER_LEN: usize = 6;

/// The longest input datagram of any game: its header and four of the longest commands
/// a schema allows.
pub const MAX_INPUT_DATAGRAM_LEN: usize =
    INPUT_DATAGRAM_HEADER_LEN + MAX_INPUTS_PER_DATAGRAM * MAX_INPUT_LEN;

/// Button bit: fire.
pub const BUTTON_FIRE: u8 = 0b0000_0001;

/// Bytes of the arena's input command ([`InputCmd`]): `seq` and its four fields.
pub const INPUT_CMD_LEN: usize = 9;

/// One tick's worth of player intent in the demo arena: its input command, typed. Other
/// games' commands are bytes laid out by their schema
/// ([`crate::schema::Schema::write_input`]); this one is the same bytes as the arena's
/// schema lays out ([`InputCmd::to_bytes`], [`InputCmd::from_bytes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InputCmd {
    /// The client's input sequence number; the server applies each sequence at most once.
    pub seq: u32,
    /// Horizontal intent, -127 (left) to 127 (right); -128 is read as -127.
    pub move_x: i8,
    /// Vertical intent, -127 (up) to 127 (down); -128 is read as -127.
    pub move_y: i8,
    /// Aim angle, a full turn in 65,536 steps, 0 = +x, counter-clockwise.
    pub aim: u16,
    /// Button bits ([`BUTTON_FIRE`]); unknown bits are ignored.
    pub buttons: u8,
}

impl InputCmd {
    /// The command's bytes: `[seq u32][move_x i8][move_y i8][aim u16][buttons u8]`.
    pub fn to_bytes(&self) -> [u8; INPUT_CMD_LEN] {
        let mut out = [0u8; INPUT_CMD_LEN];
        out[..4].copy_from_slice(&self.seq.to_le_bytes());
        out[4] = self.move_x as u8;
        out[5] = self.move_y as u8;
        out[6..8].copy_from_slice(&self.aim.to_le_bytes());
        out[8] = self.buttons;
        out
    }

    /// Reads a command from exactly [`INPUT_CMD_LEN`] bytes; `None` for another length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; INPUT_CMD_LEN] = bytes.try_into().ok()?;
        Some(Self {
            seq: u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            move_x: bytes[4] as i8,
            move_y: bytes[5] as i8,
            aim: u16::from_le_bytes([bytes[6], bytes[7]]),
            buttons: bytes[8],
        })
    }
}

/// A client's input datagram (`docs/PROTOCOL.md` §5): the newest snapshot tick it
/// received and its newest input commands, each laid out by the game's schema (`[seq
/// u32]` and the input fields). On the wire: `[0x02][ack_tick u32][count u8][count ×
/// command]`, exactly `6 + count × command length` bytes. The commands live inline (no
/// heap), so a datagram moves through the sim's input channel as a plain value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct InputDatagram {
    ack_tick: Tick,
    count: u8,
    cmd_len: u8,
    commands: [u8; MAX_INPUTS_PER_DATAGRAM * MAX_INPUT_LEN],
}

impl std::fmt::Debug for InputDatagram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputDatagram")
            .field("ack_tick", &self.ack_tick)
            .field("cmd_len", &self.cmd_len)
            .field("commands", &self.commands().collect::<Vec<_>>())
            .finish()
    }
}

fn bad(text: String) -> WireError {
    WireError::Decode(text)
}

impl InputDatagram {
    /// An empty datagram (no command) for commands of `cmd_len` bytes, acknowledging
    /// `ack_tick`. Fails if `cmd_len` is not a command length a schema allows
    /// (`4..=`[`MAX_INPUT_LEN`]).
    pub fn new(ack_tick: Tick, cmd_len: usize) -> Result<Self, WireError> {
        if !(INPUT_PREFIX_LEN..=MAX_INPUT_LEN).contains(&cmd_len) {
            return Err(bad(format!(
                "an input command of {cmd_len} bytes (a schema allows {INPUT_PREFIX_LEN} to {MAX_INPUT_LEN})"
            )));
        }
        Ok(Self {
            ack_tick,
            count: 0,
            cmd_len: cmd_len as u8,
            commands: [0; MAX_INPUTS_PER_DATAGRAM * MAX_INPUT_LEN],
        })
    }

    /// A datagram of `commands` (newest first, each the same length), acknowledging
    /// `ack_tick`.
    pub fn from_commands(ack_tick: Tick, commands: &[&[u8]]) -> Result<Self, WireError> {
        let cmd_len = commands.first().map_or(INPUT_PREFIX_LEN, |c| c.len());
        let mut datagram = Self::new(ack_tick, cmd_len)?;
        for command in commands {
            datagram.push(command)?;
        }
        Ok(datagram)
    }

    /// A datagram carrying one arena command (no redundancy), acknowledging `ack_tick`.
    pub fn single(cmd: InputCmd, ack_tick: Tick) -> Self {
        let mut datagram = Self {
            ack_tick,
            count: 1,
            cmd_len: INPUT_CMD_LEN as u8,
            commands: [0; MAX_INPUTS_PER_DATAGRAM * MAX_INPUT_LEN],
        };
        datagram.commands[..INPUT_CMD_LEN].copy_from_slice(&cmd.to_bytes());
        datagram
    }

    /// Appends a command older than those already in the datagram. Fails when the
    /// datagram is full or the command is not the datagram's command length.
    pub fn push(&mut self, command: &[u8]) -> Result<(), WireError> {
        let len = usize::from(self.cmd_len);
        if command.len() != len {
            return Err(bad(format!(
                "an input command of {} bytes in a datagram of {len}-byte commands",
                command.len()
            )));
        }
        let at = usize::from(self.count) * len;
        if usize::from(self.count) >= MAX_INPUTS_PER_DATAGRAM {
            return Err(bad(format!(
                "more than {MAX_INPUTS_PER_DATAGRAM} inputs in a datagram"
            )));
        }
        self.commands[at..at + len].copy_from_slice(command);
        self.count += 1;
        Ok(())
    }

    /// The newest snapshot tick the client has received any chunk of.
    pub fn ack_tick(&self) -> Tick {
        self.ack_tick
    }

    /// How many commands the datagram carries (0 to [`MAX_INPUTS_PER_DATAGRAM`]).
    pub fn count(&self) -> usize {
        usize::from(self.count)
    }

    /// The length of each command, `seq` included.
    pub fn cmd_len(&self) -> usize {
        usize::from(self.cmd_len)
    }

    /// Each command's bytes, newest first.
    pub fn commands(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.commands[..self.count() * self.cmd_len()].chunks_exact(self.cmd_len())
    }

    /// The commands read as the arena's [`InputCmd`], newest first (`None` for a
    /// command of another length: another game's).
    pub fn arena_commands(&self) -> impl Iterator<Item = Option<InputCmd>> + '_ {
        self.commands().map(InputCmd::from_bytes)
    }

    /// Bytes of the encoded datagram, kind byte included: `6 + count × cmd_len`.
    pub fn encoded_len(&self) -> usize {
        INPUT_DATAGRAM_HEADER_LEN + self.count() * self.cmd_len()
    }

    /// Encodes the datagram (kind byte first) into the start of `out`; returns the bytes
    /// written, or an error if `out` is shorter than [`Self::encoded_len`].
    pub fn encode_into(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let len = self.encoded_len();
        let Some(out) = out.get_mut(..len) else {
            return Err(WireError::Encode(format!(
                "an input datagram of {len} bytes does not fit {} bytes",
                out.len()
            )));
        };
        out[0] = INPUT_DATAGRAM_KIND;
        out[1..5].copy_from_slice(&self.ack_tick.get().to_le_bytes());
        out[5] = self.count;
        out[INPUT_DATAGRAM_HEADER_LEN..]
            .copy_from_slice(&self.commands[..len - INPUT_DATAGRAM_HEADER_LEN]);
        Ok(len)
    }

    /// The encoded datagram in a fixed array and its length.
    pub fn encode(&self) -> ([u8; MAX_INPUT_DATAGRAM_LEN], usize) {
        let mut out = [0u8; MAX_INPUT_DATAGRAM_LEN];
        // The array holds the longest datagram.
        let len = self.encode_into(&mut out).unwrap_or(0);
        (out, len)
    }

    /// Decodes an input datagram whose commands are `cmd_len` bytes (the game's
    /// `Schema::input_len`), checking its kind, count and exact length.
    pub fn decode(bytes: &[u8], cmd_len: usize) -> Result<Self, WireError> {
        match bytes.first() {
            Some(&INPUT_DATAGRAM_KIND) => {}
            Some(other) => return Err(bad(format!("unknown datagram kind {other:#04x}"))),
            None => return Err(bad("empty datagram".into())),
        }
        let mut datagram = Self::new(Tick::ZERO, cmd_len)?;
        if bytes.len() < INPUT_DATAGRAM_HEADER_LEN {
            return Err(bad(format!(
                "input datagram of {} bytes is shorter than its header",
                bytes.len()
            )));
        }
        datagram.ack_tick = Tick::new(u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]));
        let count = usize::from(bytes[5]);
        if count > MAX_INPUTS_PER_DATAGRAM {
            return Err(bad(format!(
                "input count {count} exceeds {MAX_INPUTS_PER_DATAGRAM}"
            )));
        }
        let expected = INPUT_DATAGRAM_HEADER_LEN + count * cmd_len;
        if bytes.len() != expected {
            return Err(bad(format!(
                "input datagram of {count} commands is {} bytes, expected {expected}",
                bytes.len()
            )));
        }
        datagram.count = count as u8;
        datagram.commands[..expected - INPUT_DATAGRAM_HEADER_LEN]
            .copy_from_slice(&bytes[INPUT_DATAGRAM_HEADER_LEN..]);
        Ok(datagram)
    }
}

/// The frame the server writes on the control stream right after the Welcome: the
/// game's schema (`docs/PROTOCOL.md` §8), as `[u16 length][schema bytes]`. The bytes
/// are at most [`crate::schema::MAX_SCHEMA_LEN`], which is the frame limit.
pub fn schema_frame(schema: &Schema) -> Vec<u8> {
    let body = schema.encode();
    let mut frame = Vec::with_capacity(wire::FRAME_PREFIX_LEN + body.len());
    // A checked schema encodes to at most MAX_SCHEMA_LEN (1,024) bytes.
    frame.extend_from_slice(&(body.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Reads the schema frame's body (the bytes after its length prefix), naming what is
/// wrong for a client's error.
pub fn decode_schema_frame(body: &[u8]) -> Result<Schema, SchemaError> {
    Schema::decode(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{ConnectToken, TOKEN_VERSION};
    use proptest::prelude::*;

    fn token(client_id: u64) -> ConnectToken {
        ConnectToken {
            version: TOKEN_VERSION,
            client_id,
            expires_at_unix_s: 1_900_000_000,
            nonce: [7; 16],
            room: 0,
            mac: [9; 32],
        }
    }

    fn frame_round_trip<T: Encode + Decode<()> + PartialEq + std::fmt::Debug>(value: &T) {
        let mut buf = [0u8; 2048];
        let len = wire::encode_frame(value, &mut buf).unwrap();
        let body_len = wire::frame_len([buf[0], buf[1]]).unwrap();
        assert_eq!(body_len + 2, len);
        let back: T = wire::decode_exact(&buf[2..len]).unwrap();
        assert_eq!(&back, value);
    }

    #[test]
    fn hello_has_the_documented_size() {
        let hello = Hello {
            protocol_version: 1,
            token: token(5),
        };
        let mut buf = [0u8; 256];
        // 2 (version) + 69 (token): docs/PROTOCOL.md.
        assert_eq!(wire::encode_into(&hello, &mut buf).unwrap(), 71);
    }

    #[test]
    fn reject_detail_is_cut_on_a_char_boundary() {
        let long = "é".repeat(150);
        let reject = Reject::new(RejectReason::ServerFull, &long);
        assert!(reject.detail.len() <= MAX_REJECT_DETAIL);
        assert_eq!(reject.reason(), Some(RejectReason::ServerFull));
        frame_round_trip(&ServerMessage::Reject(reject));
    }

    #[test]
    fn reject_codes_are_stable_and_draining_is_the_newest() {
        // The codes are protocol: a new reason takes the next number, never an old one.
        let codes = RejectReason::ALL.map(RejectReason::code);
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(RejectReason::from_code(8), Some(RejectReason::Draining));
        assert_eq!(RejectReason::Draining.name(), "draining");
    }

    #[test]
    fn reject_codes_round_trip() {
        for reason in RejectReason::ALL {
            assert_eq!(RejectReason::from_code(reason.code()), Some(reason));
        }
        assert_eq!(RejectReason::from_code(999), None);
    }

    #[test]
    fn a_length_prefix_over_the_limit_is_refused() {
        assert!(matches!(
            wire::frame_len(u16::MAX.to_le_bytes()),
            Err(WireError::TooLong { .. })
        ));
    }

    #[test]
    fn a_string_length_beyond_the_input_does_not_allocate_it() {
        // Reject with a detail that claims 2^60 bytes: must fail, not allocate.
        let mut bytes = vec![0u8; 4 + 2];
        bytes[0] = 1; // tag Reject
        bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(wire::decode_exact::<ServerMessage>(&bytes).is_err());
    }

    #[test]
    fn input_datagram_rejects_wrong_kind_length_and_count() {
        let (good, len) = InputDatagram::single(InputCmd::default(), Tick::new(3)).encode();
        let good = &good[..len];
        assert_eq!(len, 6 + INPUT_CMD_LEN);
        assert!(InputDatagram::decode(good, INPUT_CMD_LEN).is_ok());
        // The same bytes read with another game's command length do not fit.
        assert!(InputDatagram::decode(good, 10).is_err());
        assert!(InputDatagram::decode(good, 2).is_err());
        let mut wrong_kind = good.to_vec();
        wrong_kind[0] = 0x7f;
        assert!(InputDatagram::decode(&wrong_kind, INPUT_CMD_LEN).is_err());
        assert!(InputDatagram::decode(&good[..good.len() - 1], INPUT_CMD_LEN).is_err());
        assert!(InputDatagram::decode(&[], INPUT_CMD_LEN).is_err());
        let mut bad_count = good.to_vec();
        bad_count[5] = 9;
        assert!(InputDatagram::decode(&bad_count, INPUT_CMD_LEN).is_err());
        // Zero commands: just the header.
        let empty = [INPUT_DATAGRAM_KIND, 1, 0, 0, 0, 0];
        let decoded = InputDatagram::decode(&empty, 12).unwrap();
        assert_eq!((decoded.count(), decoded.ack_tick()), (0, Tick::new(1)));
    }

    #[test]
    fn a_datagram_of_another_games_commands_round_trips_newest_first() {
        let newest = [1u8, 0, 0, 0, 7, 7, 7, 7, 7, 7, 7, 7];
        let older = [0u8, 0, 0, 0, 5, 5, 5, 5, 5, 5, 5, 5];
        let datagram = InputDatagram::from_commands(Tick::new(9), &[&newest, &older]).unwrap();
        let (bytes, len) = datagram.encode();
        assert_eq!(len, 6 + 2 * 12);
        let back = InputDatagram::decode(&bytes[..len], 12).unwrap();
        assert_eq!(back, datagram);
        assert_eq!(
            back.commands().collect::<Vec<_>>(),
            [&newest[..], &older[..]]
        );
        let mut full = back;
        full.push(&older).unwrap();
        full.push(&older).unwrap();
        assert!(full.push(&older).is_err(), "a fifth command does not fit");
        assert!(InputDatagram::new(Tick::ZERO, 65).is_err());
        let mut small = [0u8; 10];
        assert!(datagram.encode_into(&mut small).is_err());
    }

    /// The bytes of a Welcome and of an input datagram, pinned: the tick fields are
    /// plain little-endian `u32`s (docs/PROTOCOL.md), whatever type carries them.
    #[test]
    fn welcome_and_input_datagram_bytes_are_pinned() {
        let welcome = ServerMessage::Welcome(Welcome {
            protocol_version: 3,
            client_id: 0x0807_0605_0403_0201,
            entity: 0x0c0b_0a09,
            tick_rate: 30,
            chunk_payload: 1150,
            arena_width: 512,
            arena_height: 256,
            cell_size: 64,
            view_cells: 1,
            server_tick: Tick::new(0x1413_1211),
        });
        let mut buf = [0u8; 64];
        let n = wire::encode_into(&welcome, &mut buf).unwrap();
        assert_eq!(
            buf[..n],
            [
                0, 0, 0, 0, // variant: Welcome
                3, 0, // protocol_version
                1, 2, 3, 4, 5, 6, 7, 8, // client_id
                9, 10, 11, 12, // entity
                30, 0, // tick_rate
                0x7e, 0x04, // chunk_payload
                0, 2, // arena_width
                0, 1, // arena_height
                64, 0, // cell_size
                1, 0, // view_cells
                0x11, 0x12, 0x13, 0x14, // server_tick
            ]
        );
        let cmd = InputCmd {
            seq: 0x2423_2221,
            move_x: -1,
            move_y: 2,
            aim: 0x2625,
            buttons: BUTTON_FIRE,
        };
        let datagram = InputDatagram::single(cmd, Tick::new(0xfffe_fdfc));
        let mut expected = vec![INPUT_DATAGRAM_KIND, 0xfc, 0xfd, 0xfe, 0xff, 1];
        expected.extend_from_slice(&[0x21, 0x22, 0x23, 0x24, 0xff, 2, 0x25, 0x26, 1]);
        let (bytes, len) = datagram.encode();
        assert_eq!(bytes[..len], expected[..]);
        assert_eq!(InputCmd::from_bytes(&cmd.to_bytes()), Some(cmd));
    }

    fn arb_cmd() -> impl Strategy<Value = InputCmd> {
        (
            any::<u32>(),
            any::<i8>(),
            any::<i8>(),
            any::<u16>(),
            any::<u8>(),
        )
            .prop_map(|(seq, move_x, move_y, aim, buttons)| InputCmd {
                seq,
                move_x,
                move_y,
                aim,
                buttons,
            })
    }

    proptest! {
        #[test]
        fn input_datagram_round_trips(ack in any::<u32>(), count in 0usize..=4, cmds in proptest::array::uniform4(arb_cmd())) {
            let bytes: Vec<[u8; INPUT_CMD_LEN]> = cmds[..count].iter().map(InputCmd::to_bytes).collect();
            let slices: Vec<&[u8]> = bytes.iter().map(|b| &b[..]).collect();
            let mut d = InputDatagram::new(Tick::new(ack), INPUT_CMD_LEN).unwrap();
            for slice in &slices {
                d.push(slice).unwrap();
            }
            let (encoded, len) = d.encode();
            let back = InputDatagram::decode(&encoded[..len], INPUT_CMD_LEN).unwrap();
            prop_assert_eq!(back, d);
            let typed: Vec<InputCmd> = back.arena_commands().map(Option::unwrap).collect();
            prop_assert_eq!(&typed[..], &cmds[..count]);
        }

        #[test]
        fn input_datagram_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), cmd_len in 0usize..80) {
            if let Ok(d) = InputDatagram::decode(&bytes, cmd_len) {
                let (encoded, len) = d.encode();
                prop_assert_eq!(&encoded[..len], &bytes[..]);
            }
        }

        #[test]
        fn server_message_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(msg) = wire::decode_exact::<ServerMessage>(&bytes) {
                let mut buf = [0u8; 2048];
                let n = wire::encode_into(&msg, &mut buf).unwrap();
                prop_assert_eq!(&buf[..n], &bytes[..]);
            }
        }

        #[test]
        fn hello_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            if let Ok(hello) = wire::decode_exact::<Hello>(&bytes) {
                let mut buf = [0u8; 256];
                let n = wire::encode_into(&hello, &mut buf).unwrap();
                prop_assert_eq!(&buf[..n], &bytes[..]);
            }
        }

        #[test]
        fn welcome_round_trips(client_id in any::<u64>(), entity in any::<u32>(), tick in any::<u32>()) {
            let w = ServerMessage::Welcome(Welcome { protocol_version: 1, client_id, entity, tick_rate: 30,
                chunk_payload: 1150, arena_width: 512, arena_height: 512, cell_size: 64, view_cells: 1,
                server_tick: Tick::new(tick) });
            frame_round_trip(&w);
        }
    }
}
