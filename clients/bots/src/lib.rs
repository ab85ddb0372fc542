//! tickcast-bots: the load generator and judge (`tickcast-bots`) and the terminal viewer
//! (`tickcast-watch`), built on the `tickcast-clients` library.
//!
//! What lives here: what each bot does, as plain decisions tested without a socket
//! ([`behaviour::Bot`]); how many bots play each behaviour ([`mix::Mix`]); thousands of
//! bots in one process ([`swarm::run_swarm`]); what each bot saw
//! ([`outcome::ClientOutcome`]); the summaries and pass/fail gates ([`report::Report`]);
//! the flags both binaries share ([`cli::ServerArgs`]).
//!
//! What it never does: judge while the swarm runs (the swarm counts, the report judges),
//! or put a command-line, report or terminal crate into the client library.
//!
//! Entry points: [`swarm::run_swarm`], then [`report::Report::new`].

#![forbid(unsafe_code)]

pub mod behaviour;
pub mod cli;
pub mod mix;
pub mod outcome;
pub mod report;
pub mod swarm;
