//! tickcast-shared: the wire protocol every other tickcast crate speaks.
//!
//! What lives here: the protocol version and ALPN, the control-stream messages
//! ([`msg::Hello`], [`msg::Welcome`], [`msg::Reject`]), the input datagram
//! ([`msg::InputDatagram`]), the snapshot chunk format ([`chunk`]), the connect-token
//! format ([`token`]), the close codes ([`close`]) and [`Tick`], the tick number with
//! its wrap-around arithmetic. Small helpers every binary shares: [`hex`] for tokens and
//! fingerprints, [`unix_time`] for the clock readings the protocol carries.
//! `docs/PROTOCOL.md` describes the same bytes for people writing a client in another
//! language.
//!
//! What it never does: open a socket, read a clock, spawn a thread or depend on another
//! tickcast crate. bincode is an implementation detail of [`wire`]; no other module or
//! crate names it.
//!
//! Entry points: [`wire::encode_into`] / [`wire::decode_exact`] for messages,
//! [`chunk::parse_chunk`] for snapshot chunks, [`token::TokenKey`] for tokens.

#![forbid(unsafe_code)]

pub mod chunk;
pub mod close;
pub mod event;
pub mod hex;
pub mod index;
pub mod msg;
pub mod schema;
pub mod tick;
pub mod token;
pub mod unix_time;
pub mod wire;

pub use tick::Tick;

/// Version of the wire protocol described in `docs/PROTOCOL.md`. A Hello carrying another
/// version is rejected with [`msg::RejectReason::BadVersion`].
pub const PROTOCOL_VERSION: u16 = 3;

/// The TLS ALPN protocol id both sides must offer.
pub const ALPN: &[u8] = b"tickcast/1";
