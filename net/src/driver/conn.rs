//! One connection as the driver keeps it: quinn-proto's state machine, where it is in
//! tickcast's handshake ([`Phase`]), its control stream and its place in the timer heap.
//! [`HelloFrame`] assembles the Hello from the control stream's bytes, a plain function
//! of what arrived.

use std::time::Instant;

use quinn_proto::StreamId;
use tickcast_shared::msg::{Hello, RejectReason};
use tickcast_shared::wire::{self, FRAME_PREFIX_LEN, MAX_MESSAGE_LEN};

use crate::admission::{HelloDeadline, InputAllowance};
use crate::fanout::PeerOutbox;

/// Where a connection is in tickcast's handshake, and what it holds: each phase but
/// `Joined` and `Closed` holds one `handshaking` count; `AwaitingJoin` also holds a place
/// in the peer table and the client's pending join.
#[derive(Debug)]
pub(super) enum Phase {
    /// Accepted; no Hello yet. Closed with `hello_timeout` at `deadline`: the
    /// handshake's bound until QUIC connects, then the Hello's (`bounds`).
    AwaitingHello {
        deadline: Instant,
        bounds: HelloDeadline,
    },
    /// The Hello passed; the sim is spawning the client's entity. Rejected with
    /// `unavailable` at `deadline` if it has not answered.
    AwaitingJoin { client_id: u64, deadline: Instant },
    /// A Reject was written; closed when the client has read it or at `until`.
    Rejecting {
        reason: RejectReason,
        until: Instant,
    },
    /// Welcomed and in the peer table with `generation`.
    Joined {
        client_id: u64,
        generation: u64,
        allowance: InputAllowance,
    },
    /// Closed (or closing) and holding nothing; waiting for quinn to drain it.
    Closed,
}

impl Phase {
    /// The phase's own deadline, besides quinn's timers.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self {
            Phase::AwaitingHello { deadline, .. } | Phase::AwaitingJoin { deadline, .. } => {
                Some(*deadline)
            }
            Phase::Rejecting { until, .. } => Some(*until),
            Phase::Joined { .. } | Phase::Closed => None,
        }
    }
}

/// A connection.
pub(super) struct Conn {
    pub(super) quic: quinn_proto::Connection,
    pub(super) phase: Phase,
    /// The control stream, once the client opened it.
    pub(super) control: Option<StreamId>,
    /// The Hello being read; dropped once it is complete.
    pub(super) hello: Option<Box<HelloFrame>>,
    /// The earliest deadline this connection has queued in the timer heap.
    pub(super) timer: Option<Instant>,
    /// Whether it is on the driver's list of connections to drive this turn.
    pub(super) touched: bool,
    /// The fan-out's tick held for it and its controller's room (`fanout::offer_tick`).
    pub(super) outbox: PeerOutbox,
}

impl Conn {
    pub(super) fn new(quic: quinn_proto::Connection, bounds: HelloDeadline) -> Self {
        Self {
            quic,
            phase: Phase::AwaitingHello {
                deadline: bounds.handshake_by(),
                bounds,
            },
            control: None,
            hello: Some(Box::new(HelloFrame::default())),
            timer: None,
            touched: false,
            outbox: PeerOutbox::default(),
        }
    }
}

/// The Hello's frame as it arrives: the length prefix, then that many bytes.
#[derive(Debug)]
pub(super) struct HelloFrame {
    bytes: [u8; FRAME_PREFIX_LEN + MAX_MESSAGE_LEN],
    filled: usize,
    /// The body's length, once the prefix is read.
    body_len: Option<usize>,
}

impl Default for HelloFrame {
    fn default() -> Self {
        Self {
            bytes: [0; FRAME_PREFIX_LEN + MAX_MESSAGE_LEN],
            filled: 0,
            body_len: None,
        }
    }
}

impl HelloFrame {
    /// How many more bytes the frame needs now: never more, so that anything the client
    /// sends after its Hello stays on the stream (and is a protocol error once it is
    /// read after the Welcome).
    pub(super) fn wanted(&self) -> usize {
        match self.body_len {
            None => FRAME_PREFIX_LEN - self.filled,
            Some(len) => FRAME_PREFIX_LEN + len - self.filled,
        }
    }

    /// Adds bytes (at most [`Self::wanted`]); the Hello once the frame is whole.
    pub(super) fn push(&mut self, bytes: &[u8]) -> Result<Option<Hello>, String> {
        let take = bytes.len().min(self.wanted());
        self.bytes[self.filled..self.filled + take].copy_from_slice(&bytes[..take]);
        self.filled += take;
        if self.body_len.is_none() && self.filled == FRAME_PREFIX_LEN {
            let prefix = [self.bytes[0], self.bytes[1]];
            self.body_len = Some(wire::frame_len(prefix).map_err(|e| e.to_string())?);
        }
        match self.body_len {
            Some(len) if self.filled == FRAME_PREFIX_LEN + len => {
                wire::decode_exact::<Hello>(&self.bytes[FRAME_PREFIX_LEN..self.filled])
                    .map(Some)
                    .map_err(|e| format!("bad Hello: {e}"))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use tickcast_shared::PROTOCOL_VERSION;
    use tickcast_shared::token::TokenKey;

    use super::*;

    fn hello_frame() -> Vec<u8> {
        let key = TokenKey::from_bytes(&[7; 32]);
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            token: key.mint(42, 1_000, [1; 16], 0),
        };
        let mut frame = [0u8; FRAME_PREFIX_LEN + MAX_MESSAGE_LEN];
        let len = wire::encode_frame(&hello, &mut frame).unwrap();
        frame[..len].to_vec()
    }

    #[test]
    fn a_hello_arriving_a_byte_at_a_time_is_read_and_nothing_after_it_is_asked_for() {
        let frame = hello_frame();
        let mut reader = HelloFrame::default();
        for (i, byte) in frame.iter().enumerate() {
            let expected = if i < FRAME_PREFIX_LEN {
                FRAME_PREFIX_LEN - i
            } else {
                frame.len() - i
            };
            assert_eq!(reader.wanted(), expected);
            let hello = reader.push(&[*byte]).unwrap();
            assert_eq!(hello.is_some(), i == frame.len() - 1);
            if let Some(hello) = hello {
                assert_eq!(hello.token.client_id, 42);
            }
        }
    }

    #[test]
    fn a_prefix_longer_than_a_message_is_an_error_before_its_body() {
        let mut reader = HelloFrame::default();
        let too_long = u16::try_from(MAX_MESSAGE_LEN + 1).unwrap().to_le_bytes();
        assert!(reader.push(&too_long).is_err());
    }

    #[test]
    fn garbage_of_the_announced_length_is_a_bad_hello() {
        let mut reader = HelloFrame::default();
        assert_eq!(reader.push(&3u16.to_le_bytes()).unwrap(), None);
        assert_eq!(reader.wanted(), 3);
        assert!(reader.push(&[0xff, 0xff, 0xff]).is_err());
    }
}
