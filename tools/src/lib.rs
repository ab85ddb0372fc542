//! tickcast-tools: operator tools around a tickcast server.
//!
//! * `tickcast-token` mints connect tokens with the server's key, the way a game
//!   backend would.
//! * `tickcast-replay` reads recordings (`tickcast_sim::replay`): info, verify
//!   (re-simulate and compare every tick's hash), inspect, export, plot ([`plot`]),
//!   serve, repair: [`replay_cli`], which every game's server binary also runs as
//!   `GAME-server replay ...` with its own rules.
//! * `tickcast-fake-agones` is a fake Agones SDK sidecar ([`fake_agones`]) that records
//!   every call, for tests and `scripts/fleet.py`, and the allocation step against it.
//! * `tickcast-flood` sends a handshake flood (QUIC Initials from many ports, half-open
//!   connections) at a server on this machine, for drills ([`flood`]).
//! * `tickcast-chart` draws columns of a CSV time series as a PNG ([`chart`]), for
//!   `scripts/bench.py`.
//!
//! What it never does: change a server's files other than the ones it is asked to write.

#![forbid(unsafe_code)]

pub mod chart;
pub mod fake_agones;
pub mod flood;
pub mod plot;
pub mod replay_cli;
