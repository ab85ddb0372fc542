//! `pickups-server`: the pickups game on the tickcast engine, with every flag of
//! `tickcast-server` (`--help`), and `pickups-server replay ...` for its recordings.

use std::process::ExitCode;

fn main() -> ExitCode {
    tickcast_server::cli::main(tickcast_pickups::Pickups::default(), &[])
}
