//! Reassembling ticks from the server's datagrams and measuring delivery, loss, latency
//! and snapshot age. Pure code over bytes: no socket, no clock (times are passed in).
//!
//! One concern per module: [`completeness`] judges one tick (which datagrams were meant
//! for this client, and whether all arrived); `assemble` keeps several ticks in flight
//! and decides what each datagram counts as ([`TickAssembler`]); `delivery` holds the
//! figures ([`Delivery`]); `latency` the histograms ([`LatencyHistogram`]); `staleness`
//! the age of each entity's newest state ([`EntityStaleness`]); `receive` ties them
//! together for a client that reads datagrams ([`SnapshotReceiver`]).

mod assemble;
pub mod completeness;
mod delivery;
mod latency;
mod receive;
mod staleness;
#[cfg(test)]
mod test_bytes;
#[cfg(test)]
pub(crate) use test_bytes::arena_schema as arena_schema_for_tests;

pub use assemble::{ChunkOutcome, TICKS_IN_FLIGHT, TickAssembler};
pub use completeness::View;
pub use delivery::Delivery;
pub use latency::{LatencyHistogram, age_us};
pub use receive::{DatagramOutcome, SETTLED_AFTER_US, SnapshotReceiver, WorldUpdate};
pub use staleness::EntityStaleness;
