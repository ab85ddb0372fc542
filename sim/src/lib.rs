//! tickcast-sim: the authoritative simulation.
//!
//! What it does: a bevy_ecs world stepped at a fixed rate by a single-threaded schedule
//! in a fixed order ([`game::TickSet`]); each tick it hashes the state and encodes one
//! snapshot into a pooled, reused buffer ([`snapshot`]).
//!
//! What it never does: read a clock or touch a socket — except [`server`], the glue the
//! `tickcast-server` binary and the end-to-end tests share, which runs the fixed-step
//! loop against the real clock and connects it to `tickcast-net`.
//!
//! Entry type: [`Sim`] (`step`, `take_snapshot`, `state_hash`).

#![forbid(unsafe_code)]

pub mod allocations;
pub mod config;
pub mod game;
pub mod record;
pub mod replay;
pub mod rng;
pub mod server;
mod sim;
pub mod snapshot;

pub use config::{ConfigError, SimConfig};
pub use sim::Sim;
