//! tickcast-sim: the authoritative simulation.
//!
//! What it does: a bevy_ecs world stepped at a fixed rate by a single-threaded schedule
//! in a fixed order ([`engine::TickSet`]); each tick it hashes the state and encodes one
//! snapshot into a pooled, reused buffer ([`snapshot`]). The rules are a game's: the
//! engine/game boundary is [`engine::Game`], and [`arena`] is the demo game on it.
//!
//! What it never does: touch a socket, or read a clock inside the simulation. The one
//! clock reading is [`FixedStep::sleep_until_next`], the pacing that the server
//! (`tickcast-server`, a package of its own that wires this crate to `tickcast-net`),
//! `tickcast-replay serve` and tests share.
//!
//! Entry type: [`Sim`] (`new` for the arena, `with_game`, `step`, `take_snapshot`,
//! `state_hash`).

#![forbid(unsafe_code)]

pub mod arena;
pub mod config;
pub mod determinism;
pub mod engine;
pub mod fixture;
mod pacing;
pub mod record;
pub mod replay;
pub mod rng;
mod sim;
pub mod snapshot;

pub use config::{ConfigError, SimConfig};
pub use engine::Game;
pub use pacing::{FixedStep, Pace};
pub use sim::Sim;
