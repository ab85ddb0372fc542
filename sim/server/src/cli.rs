//! A game's server binary: the flags, the config file, logging, signals, and the
//! `replay` subcommands, for any [`Game`]. `tickcast-server` is [`main`] with the arena;
//! another game's binary is the same one line with its own game
//! (`sim/games/pickups/src/main.rs`).
//!
//! Glue only: parse the flags, merge them over the config file and validate them into a
//! config ([`crate::settings`]), set up logging ([`crate::logging`]), start
//! [`crate::Server`], and count SIGTERM/SIGINT: the first drains ([`crate::drain`]), a
//! second exits at once. Exit code 0 after a clean stop (a drain), 1 when the server
//! fails, 2 for bad flags or a bad config file, 128 + the signal's number after a second
//! signal.

#![allow(clippy::print_stderr)] // Flag and config errors come before logging starts.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};
use tickcast_net::tls::fingerprint_hex;
use tickcast_sim::Game;

use crate::agones::{AgonesConfig, SDK_HTTP_PORT_ENV};
use crate::drain::{SignalAction, StopCause, StopRequest, signal_action};
use crate::settings::{self, Settings};
use crate::{Server, ServerConfig, logging};

/// The log target of the binary's own lines, whatever the game: `tickcast_server`, as
/// operators and tests filter and read them (`RUST_LOG=tickcast_server=info`).
const LOG_TARGET: &str = "tickcast_server";

/// Authoritative game-simulation server: a fixed-step world broadcast as QUIC datagrams.
/// Every flag below --print-config is also a key of the --config file (`tick-rate = 60`);
/// a flag given here wins over the file.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Read settings from this TOML file (every key: sim/server/tickcast.example.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the configuration this run would use, as a config file, and exit.
    #[arg(long)]
    print_config: bool,
    #[command(flatten)]
    settings: Settings,
}

/// Runs a game's server binary: `NAME [FLAGS]` serves `game`, `NAME replay SUBCOMMAND`
/// reads its recordings with its rules ([`tickcast_tools::replay_cli`]). `features` are
/// the binary's cargo features that change what a benchmark measures, for the log.
pub fn main<G: Game + Clone>(game: G, features: &[(&str, bool)]) -> ExitCode {
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    let name = argv
        .first()
        .and_then(|path| Path::new(path).file_name())
        .map_or_else(|| "server".to_owned(), |n| n.to_string_lossy().into_owned());
    if argv.get(1).is_some_and(|a| a == "replay") {
        argv.splice(0..2, [OsString::from(format!("{name} replay"))]);
        return tickcast_tools::replay_cli::main(game, argv);
    }
    let command = Args::command().bin_name(name).after_help(
        "Recordings: `replay --help` (verify, inspect, serve, ... with this game's rules).",
    );
    let matches = settings::with_defaults_in_help(command).get_matches_from(argv);
    let mut args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Settings errors come before logging starts (the log format is a setting): plain
    // text on stderr and exit code 2, as for a bad flag.
    let sidecar_port = match sidecar_port(std::env::var(SDK_HTTP_PORT_ENV).ok().as_deref()) {
        Ok(port) => port,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Agones sets AGONES_SDK_HTTP_PORT in a GameServer's pod: that alone turns Agones on,
    // unless the command line says `--agones=false`.
    if sidecar_port.is_some() && args.settings.agones.is_none() {
        args.settings.agones = Some(true);
    }
    let run = match settings::resolve(args.config.as_deref(), args.settings) {
        Ok(mut run) => {
            if let (Some(port), Some(agones)) = (sidecar_port, run.server.agones.as_mut()) {
                agones.sidecar = AgonesConfig::with_port(port).sidecar;
            }
            run
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        return match settings::to_toml(&run) {
            Ok(text) if std::io::stdout().write_all(text.as_bytes()).is_ok() => ExitCode::SUCCESS,
            Ok(_) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    logging::init(run.log_format);
    match run_server(run.server, game, features) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(target: LOG_TARGET, "{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_server<G: Game>(
    config: ServerConfig,
    game: G,
    features: &[(&str, bool)],
) -> anyhow::Result<()> {
    let data_dir = config.net.data_dir.clone();
    for (feature, _) in features.iter().filter(|(_, on)| *on) {
        tracing::info!(target: LOG_TARGET, "built with feature {feature}");
    }
    let server = Server::start_with(config, game)?;
    tracing::info!(target: LOG_TARGET,
        data_dir = %data_dir.display(),
        game = %server.schema(),
        "tickcast-server listening on {}",
        server.local_addr(),
    );
    // The fingerprint as a field of its own: `sha256=<64 hex digits>` in text, key
    // `sha256` in JSON; never coloured (only level and target are).
    tracing::info!(target: LOG_TARGET,
        sha256 = %fingerprint_hex(&server.fingerprint()),
        "certificate fingerprint"
    );
    install_signal_handler(server.stop_request().clone())?;
    let report = server.run_until_stopped();
    tracing::info!(target: LOG_TARGET,
        cause = report.cause.map_or("none", StopCause::name),
        "stopped"
    );
    Ok(())
}

/// The sidecar's port from `AGONES_SDK_HTTP_PORT`, if it is set.
fn sidecar_port(env: Option<&str>) -> anyhow::Result<Option<u16>> {
    env.map(|text| {
        text.trim()
            .parse::<u16>()
            .with_context(|| format!("{SDK_HTTP_PORT_ENV}={text:?} is not a port number"))
    })
    .transpose()
}

/// Counts SIGTERM and SIGINT on a thread of its own: the first asks the server to drain,
/// a second exits at once with 128 + the signal's number, as a shell reports a process
/// killed by it.
fn install_signal_handler(stop_request: Arc<StopRequest>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .context("installing the SIGTERM/SIGINT handler")?;
    std::thread::Builder::new()
        .name("tickcast-signals".into())
        .spawn(move || {
            let mut count = 0u32;
            for signal in signals.forever() {
                count += 1;
                let name = if signal == SIGTERM {
                    "SIGTERM"
                } else {
                    "SIGINT"
                };
                match signal_action(count) {
                    SignalAction::Drain => {
                        tracing::info!(target: LOG_TARGET, "{name}: draining (a second signal exits at once)");
                        stop_request.request(StopCause::Signal);
                    }
                    SignalAction::ExitNow => {
                        tracing::warn!(target: LOG_TARGET, "{name} again: exiting at once, without a drain");
                        std::process::exit(128 + signal);
                    }
                }
            }
        })
        .context("spawning the signal thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sidecar_port_comes_from_the_environment() {
        assert_eq!(sidecar_port(None).unwrap(), None);
        assert_eq!(sidecar_port(Some("59358")).unwrap(), Some(59358));
        assert!(sidecar_port(Some("not-a-port")).is_err());
    }
}
