//! tickcast-sim: the authoritative simulation.
//!
//! What it does: a bevy_ecs world stepped at a fixed rate by a single-threaded schedule
//! in a fixed order ([`game::TickSet`]); each tick it hashes the state and encodes one
//! snapshot into a pooled, reused buffer ([`snapshot`]).
//!
//! What it never does: touch a socket, or read a clock inside the simulation. The one
//! clock reading is [`FixedStep::sleep_until_next`], the pacing that the server
//! (`tickcast-server`, a package of its own that wires this crate to `tickcast-net`),
//! `tickcast-replay serve` and tests share.
//!
//! Entry type: [`Sim`] (`step`, `take_snapshot`, `state_hash`).

#![forbid(unsafe_code)]

pub mod config;
pub mod determinism;
pub mod game;
mod pacing;
pub mod record;
pub mod replay;
pub mod rng;
mod sim;
pub mod snapshot;

pub use config::{ConfigError, SimConfig};
pub use pacing::{FixedStep, Pace};
pub use sim::Sim;
