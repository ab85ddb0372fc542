//! `tickcast-server`: runs the simulation and serves it over QUIC.
//!
//! Glue only: parse the flags, merge them over the config file and validate them into a
//! config ([`tickcast_server::settings`]), set up logging ([`tickcast_server::logging`]),
//! start [`tickcast_server::Server`], and count SIGTERM/SIGINT: the first drains
//! ([`tickcast_server::drain`]), a second exits at once. Exit code 0 after a clean stop
//! (a drain), 1 when the server fails, 2 for bad flags or a bad config file, 128 + the
//! signal's number after a second signal.
//!
//! With the `count-allocs` feature it also installs a counting global allocator (module
//! `counting`) so the status line reports the whole process's heap allocations.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};
use tickcast_net::tls::fingerprint_hex;
use tickcast_server::agones::{AgonesConfig, SDK_HTTP_PORT_ENV};
use tickcast_server::drain::{SignalAction, StopCause, StopRequest, signal_action};
use tickcast_server::settings::{self, Settings};
use tickcast_server::{Server, ServerConfig, logging};

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

/// The `count-allocs` build's global allocator: `std::alloc::System` plus a relaxed
/// atomic count of every allocation, read by the status line
/// (`tickcast_server::allocations`). Same approach as `sim/tests/zero_alloc.rs`, but
/// process-wide: the benchmark wants every thread's allocations, the network thread's
/// above all.
#[cfg(feature = "count-allocs")]
// A global allocator is an `unsafe impl GlobalAlloc`; the workspace denies unsafe code
// and every library forbids it, so the one impl lives here in the binary, scoped to
// this module. It forwards every call unchanged.
#[allow(unsafe_code)]
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};

    use tickcast_net::fanout::in_fan_out;
    use tickcast_server::allocations::{note_allocation, note_fan_out_allocation};

    pub struct CountingAllocator;

    /// Every allocation, and separately the fan-out's own (a const thread-local flag
    /// read: no allocation, no lock).
    #[inline]
    fn count() {
        note_allocation();
        if in_fan_out() {
            note_fan_out_allocation();
        }
    }

    // SAFETY: every call is forwarded unchanged to the system allocator; counting is
    // one relaxed atomic add on a static, which neither allocates nor blocks.
    unsafe impl GlobalAlloc for CountingAllocator {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count();
            // SAFETY: same contract as the caller's.
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            count();
            // SAFETY: same contract as the caller's.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count();
            // SAFETY: same contract as the caller's.
            unsafe { System.realloc(ptr, layout, new_size) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: same contract as the caller's.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: CountingAllocator = CountingAllocator;
}

/// The cargo features this binary was built with that change what it measures, for the
/// start-up log (a benchmark checks it is running the build it asked for).
const BENCHMARK_FEATURES: &[(&str, bool)] = &[
    ("count-allocs", cfg!(feature = "count-allocs")),
    ("per-client-encode", cfg!(feature = "per-client-encode")),
    ("quinn-endpoint", cfg!(feature = "quinn-endpoint")),
];

fn main() -> ExitCode {
    #[cfg(feature = "count-allocs")]
    tickcast_server::allocations::mark_counting();
    let matches = settings::with_defaults_in_help(Args::command()).get_matches();
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
    match run_server(run.server) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_server(config: ServerConfig) -> anyhow::Result<()> {
    let data_dir = config.net.data_dir.clone();
    for (feature, _) in BENCHMARK_FEATURES.iter().filter(|(_, on)| *on) {
        tracing::info!("built with feature {feature}");
    }
    let server = Server::start(config)?;
    tracing::info!(
        data_dir = %data_dir.display(),
        "tickcast-server listening on {}",
        server.local_addr(),
    );
    // The fingerprint as a field of its own: `sha256=<64 hex digits>` in text, key
    // `sha256` in JSON; never coloured (only level and target are).
    tracing::info!(
        sha256 = %fingerprint_hex(&server.fingerprint()),
        "certificate fingerprint"
    );
    install_signal_handler(server.stop_request().clone())?;
    let report = server.run_until_stopped();
    tracing::info!(
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
                        tracing::info!("{name}: draining (a second signal exits at once)");
                        stop_request.request(StopCause::Signal);
                    }
                    SignalAction::ExitNow => {
                        tracing::warn!("{name} again: exiting at once, without a drain");
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
