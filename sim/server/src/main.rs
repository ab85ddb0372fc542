//! `tickcast-server`: runs the simulation and serves it over QUIC.
//!
//! Glue only: parse the flags, validate them into a config, start
//! [`tickcast_server::Server`], and stop it cleanly on Ctrl-C or SIGTERM.
//!
//! With the `count-allocs` feature it also installs a counting global allocator (module
//! `counting`) so the status line reports the whole process's heap allocations.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::Context;
use clap::Parser;
use tickcast_net::NetConfig;
use tickcast_net::tls::fingerprint_hex;
use tickcast_server::{RecordConfig, Server, ServerConfig};
use tickcast_sim::SimConfig;

/// Authoritative game-simulation server: a fixed-step world broadcast as QUIC datagrams.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// UDP address to listen on.
    #[arg(long, default_value = "127.0.0.1:4433")]
    listen: SocketAddr,
    /// Ticks (and snapshots) per second.
    #[arg(long, default_value_t = 30)]
    tick_rate: u16,
    /// Directory for the certificate and the token key (created on first run).
    #[arg(long, default_value = ".tickcast")]
    data_dir: PathBuf,
    /// Connect-token key file (default: <data-dir>/token.key, created on first run).
    #[arg(long)]
    token_key_file: Option<PathBuf>,
    /// PEM certificate chain, leaf first (default: a self-signed certificate in
    /// <data-dir>, which clients pin by its fingerprint). Needs --key.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key of --cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Memory the server may use, e.g. 512MiB or 2GiB (default: the container's cgroup
    /// limit, else the host's memory). Clients beyond what fits are refused with
    /// over_memory_budget.
    #[arg(long, value_parser = tickcast_net::budget::parse_bytes)]
    memory_budget: Option<u64>,
    /// NPCs in the world besides players.
    #[arg(long, default_value_t = 200)]
    npcs: u32,
    /// Seed of the world's RNG.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Most clients connected at once.
    #[arg(long, default_value_t = 2000)]
    max_clients: usize,
    /// Arena side in world units (1 to 1023).
    #[arg(long, default_value_t = 1000)]
    arena: u16,
    /// Side of a spatial cell in world units; snapshots are chunked by cell.
    #[arg(long, default_value_t = 64)]
    cell_size: u16,
    /// Interest management: each player is sent the cells within this many cells of its
    /// own, or `all` for the whole world.
    #[arg(long, default_value = "1", value_parser = parse_view_cells)]
    view_cells: u16,
    /// Record every tick to this file (read it with `tickcast-replay`).
    #[arg(long)]
    record: Option<PathBuf>,
    /// With --record: a keyframe (snapshot) every this many ticks.
    #[arg(long, default_value_t = 300)]
    keyframe_interval: u32,
}

impl Args {
    fn into_config(self) -> ServerConfig {
        ServerConfig {
            net: NetConfig {
                listen: self.listen,
                data_dir: self.data_dir,
                token_key_file: self.token_key_file,
                cert_file: self.cert,
                key_file: self.key,
                memory_budget: self.memory_budget,
                max_clients: self.max_clients,
                view_cells: self.view_cells,
                ..NetConfig::default()
            },
            sim: SimConfig {
                tick_rate: self.tick_rate,
                npcs: self.npcs,
                seed: self.seed,
                arena_width: self.arena,
                arena_height: self.arena,
                cell_size: self.cell_size,
                ..SimConfig::default()
            },
            record: self.record.map(|path| RecordConfig {
                path,
                keyframe_interval: self.keyframe_interval,
            }),
        }
    }
}

/// `all` or a radius in cells below 65,535.
fn parse_view_cells(text: &str) -> Result<u16, String> {
    if text == "all" {
        return Ok(tickcast_shared::chunk::VIEW_ALL);
    }
    match text.parse::<u16>() {
        Ok(cells) if cells != tickcast_shared::chunk::VIEW_ALL => Ok(cells),
        _ => Err(format!(
            "`{text}` is not a number of cells (0 to 65,534) or `all`"
        )),
    }
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
];

fn main() -> ExitCode {
    #[cfg(feature = "count-allocs")]
    tickcast_server::allocations::mark_counting();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stdout)
        .init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = args.into_config();
    let data_dir = config.net.data_dir.clone();
    for (feature, _) in BENCHMARK_FEATURES.iter().filter(|(_, on)| *on) {
        tracing::info!("built with feature {feature}");
    }
    let server = Server::start(config)?;
    tracing::info!(
        "tickcast-server listening on {} (data dir {})",
        server.local_addr(),
        data_dir.display()
    );
    tracing::info!(
        "certificate fingerprint (SHA-256): {}",
        fingerprint_hex(&server.fingerprint())
    );
    let stop = server.stop_flag();
    ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C/SIGTERM handler")?;
    server.wait();
    tracing::info!("stopped");
    Ok(())
}
