//! tickcast-netsim: a UDP link conditioner for testing tickcast on bad networks without
//! leaving the machine.
//!
//! What it does: sits between clients and a server on loopback ([`Proxy`]) and does to
//! each direction what a real network would — loss (independent or in Gilbert–Elliott
//! bursts), delay, jitter, reordering, duplication, a bandwidth cap with a bounded
//! drop-tail queue, an MTU clamp — as a [`NetsimSpec`] says (`loss=5%,delay=40ms,...`,
//! grammar in [`spec`]). Every decision is made by [`Link`], a pure state machine of a
//! seeded RNG and a clock passed in, tested without sockets; the proxy only moves bytes
//! and time into it. Everything it did is counted ([`LinkCounters`], [`ProxyReport`]).
//!
//! What it never does: listen on or send to anything but loopback, queue without a
//! bound, or run forever unless asked to by a caller holding its handle.
//!
//! Entry points: [`Proxy::start`] (in-process, as `tickcast-bots --netsim` and the
//! tests use it) and the `tickcast-netsim` binary.

#![forbid(unsafe_code)]

pub mod link;
pub mod proxy;
pub mod spec;

pub use link::{DropReason, Fate, Link, LinkCounters, Rng};
pub use proxy::{Proxy, ProxyConfig, ProxyError, ProxyReport};
pub use spec::{LinkSpec, NetsimSpec, SpecError};
