//! Control-stream messages and the client's input datagram.
//!
//! The control stream is the one bidirectional stream a client opens: it sends a
//! [`Hello`]; the server answers with a [`ServerMessage`] (Welcome or Reject). Each
//! message is a frame: a `u16` little-endian length and a body (see [`crate::wire`]).

use bincode::{Decode, Encode};

use crate::Tick;
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

/// Button bit: fire.
pub const BUTTON_FIRE: u8 = 0b0000_0001;

/// One tick's worth of player intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Encode, Decode)]
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

/// A client's input datagram: its newest inputs and the newest snapshot tick it received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Encode, Decode)]
pub struct InputDatagram {
    /// The newest snapshot tick the client has received any chunk of.
    pub ack_tick: Tick,
    /// How many of `cmds` are meaningful, newest first; at most [`MAX_INPUTS_PER_DATAGRAM`].
    pub count: u8,
    /// The inputs, newest first; entries at and after `count` are zero.
    pub cmds: [InputCmd; MAX_INPUTS_PER_DATAGRAM],
}

/// Encoded size of an input datagram, kind byte included.
pub const INPUT_DATAGRAM_LEN: usize = 1 + 4 + 1 + MAX_INPUTS_PER_DATAGRAM * 9;

impl InputDatagram {
    /// A datagram carrying one input (no redundancy), acknowledging `ack_tick`.
    pub fn single(cmd: InputCmd, ack_tick: Tick) -> Self {
        let mut cmds = [InputCmd::default(); MAX_INPUTS_PER_DATAGRAM];
        cmds[0] = cmd;
        Self {
            ack_tick,
            count: 1,
            cmds,
        }
    }

    /// The meaningful inputs, newest first.
    pub fn inputs(&self) -> &[InputCmd] {
        &self.cmds[..usize::from(self.count).min(MAX_INPUTS_PER_DATAGRAM)]
    }

    /// Encodes the datagram (kind byte first) into a fixed-size array.
    pub fn encode(&self) -> [u8; INPUT_DATAGRAM_LEN] {
        let mut out = [0u8; INPUT_DATAGRAM_LEN];
        out[0] = INPUT_DATAGRAM_KIND;
        // The array is exactly the encoded size of this fixed-layout struct.
        let written = wire::encode_into(self, &mut out[1..]).unwrap_or(0);
        debug_assert_eq!(written, INPUT_DATAGRAM_LEN - 1);
        out
    }

    /// Decodes an input datagram, checking its kind, length and count.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        match bytes.first() {
            Some(&INPUT_DATAGRAM_KIND) => {}
            Some(other) => {
                return Err(WireError::Decode(format!(
                    "unknown datagram kind {other:#04x}"
                )));
            }
            None => return Err(WireError::Decode("empty datagram".into())),
        }
        if bytes.len() != INPUT_DATAGRAM_LEN {
            return Err(WireError::Decode(format!(
                "input datagram is {} bytes, expected {INPUT_DATAGRAM_LEN}",
                bytes.len()
            )));
        }
        let datagram: InputDatagram = wire::decode_exact(&bytes[1..])?;
        if usize::from(datagram.count) > MAX_INPUTS_PER_DATAGRAM {
            return Err(WireError::Decode(format!(
                "input count {} exceeds {MAX_INPUTS_PER_DATAGRAM}",
                datagram.count
            )));
        }
        Ok(datagram)
    }
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
        let good = InputDatagram {
            ack_tick: Tick::new(3),
            count: 1,
            ..Default::default()
        }
        .encode();
        assert!(InputDatagram::decode(&good).is_ok());
        let mut wrong_kind = good;
        wrong_kind[0] = 0x7f;
        assert!(InputDatagram::decode(&wrong_kind).is_err());
        assert!(InputDatagram::decode(&good[..good.len() - 1]).is_err());
        assert!(InputDatagram::decode(&[]).is_err());
        let mut bad_count = good;
        bad_count[5] = 9;
        assert!(InputDatagram::decode(&bad_count).is_err());
    }

    /// The bytes of a Welcome and of an input datagram, pinned: the tick fields are
    /// plain little-endian `u32`s (docs/PROTOCOL.md), whatever type carries them.
    #[test]
    fn welcome_and_input_datagram_bytes_are_pinned() {
        let welcome = ServerMessage::Welcome(Welcome {
            protocol_version: 2,
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
                2, 0, // protocol_version
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
        expected.extend_from_slice(&[0; 27]);
        assert_eq!(datagram.encode()[..], expected[..]);
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
        fn input_datagram_round_trips(ack in any::<u32>(), count in 0u8..=4, cmds in proptest::array::uniform4(arb_cmd())) {
            let d = InputDatagram { ack_tick: Tick::new(ack), count, cmds };
            prop_assert_eq!(InputDatagram::decode(&d.encode()).unwrap(), d);
        }

        #[test]
        fn input_datagram_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(d) = InputDatagram::decode(&bytes) {
                prop_assert_eq!(&d.encode()[..], &bytes[..]);
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
