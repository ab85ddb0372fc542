//! tickcast-clients: the native client library a game developer imports.
//!
//! What it does: opens a QUIC connection that pins the server's certificate and performs
//! the Hello → Welcome handshake ([`connect`], [`Session`]); puts the server's datagrams
//! back together per tick and measures delivery, chunk loss, latency and snapshot age
//! ([`track::SnapshotReceiver`]); keeps a local view of the world ([`world::WorldView`]);
//! sends inputs with redundancy ([`InputHistory`]) at the moment that costs the fewest
//! packets ([`pace::InputPacer`]).
//!
//! What it never does: trust bytes from the server — a malformed datagram is counted and
//! dropped, never a panic, and every per-client structure has a fixed bound; parse
//! command lines, print reports or draw. The load generator and the viewer built on this
//! library live in the `tickcast-bots` package (`clients/bots`).
//!
//! Only [`session`](Session) touches a socket; tick assembly, the world view, the input
//! history and the pacer are plain code with the time passed in.
//!
//! Entry points: [`client_endpoint`], [`connect`], [`Session`],
//! [`track::SnapshotReceiver`].

#![forbid(unsafe_code)]

pub mod driver;
mod input;
pub mod pace;
mod session;
pub mod track;
pub mod vanish;
pub mod world;

/// The QUIC stack this library is built on, for callers that name its types
/// ([`client_endpoint`] returns a `quinn::Endpoint`) or drive a connection by hand.
pub use quinn;

pub use input::{ByRoles, InputHistory, InputMapper, Intent};
pub use session::{
    ClientError, EndpointOptions, Session, client_endpoint, client_endpoint_with, connect,
    connection_error_key, mint_token,
};

use std::time::SystemTime;

use tickcast_shared::unix_time;

/// Seconds since the Unix epoch.
pub fn unix_now_s() -> u64 {
    unix_time::seconds(SystemTime::now())
}

/// The wall clock in microseconds since the Unix epoch, modulo 2^32: the same clock the
/// server stamps chunk headers with.
pub fn now_us_wrapping() -> u32 {
    unix_time::micros_wrapping(SystemTime::now())
}
