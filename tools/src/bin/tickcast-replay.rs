//! `tickcast-replay`: read a recording of the arena made with `tickcast-server --record
//! FILE` (the same as `tickcast-server replay ...`). Another game's recordings are read
//! by that game's server binary: `GAME-server replay ...` (`tickcast_tools::replay_cli`).

use std::process::ExitCode;

fn main() -> ExitCode {
    tickcast_tools::replay_cli::main(tickcast_sim::arena::Arena, std::env::args_os())
}
