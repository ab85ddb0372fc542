//! The replay command line, for any game: `tickcast-replay` is it for the arena, and
//! each game's server binary runs it as `GAME-server replay SUBCOMMAND` ([`main`]), so
//! `verify`, `inspect` and `serve` re-simulate with that game's rules.
//!
//! Subcommands: `info`, `verify`, `inspect`, `export`, `plot`, `serve`, `repair`.
//! `docs/RECORDING.md` describes the file; exit codes are 0 (done / verified),
//! 1 (verification failed) and 2 (could not run).

#![allow(clippy::print_stdout)] // A command-line tool: its results go to stdout.
#![allow(clippy::print_stderr)] // Its warnings and errors go to stderr.

/// `println!` that ends the program quietly when stdout is closed (`| head`), instead of
/// panicking on the broken pipe.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use tickcast_net::NetConfig;
use tickcast_shared::event::{JoinAck, PeerEvent};
use tickcast_sim::record::{Frame, Recording, Repair, decode_recording};
use tickcast_sim::replay::{self, ExportFormat};
use tickcast_sim::{FixedStep, Game, Sim, SimConfig};

/// Inspect, verify and replay tickcast recordings.
#[derive(Debug, Parser)]
#[command(version, name = "tickcast-replay")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Header, ticks, duration, clients, size, gaps and whether the file is whole.
    Info {
        /// The recording.
        file: PathBuf,
    },
    /// Re-simulate from the header and the recorded inputs; compare every tick's hash.
    Verify {
        /// The recording.
        file: PathBuf,
        /// Replay with this player speed instead of the recorded one (to see a rule
        /// change caught).
        #[arg(long)]
        player_speed: Option<u32>,
    },
    /// The entities at one tick (re-simulated exactly).
    Inspect {
        /// The recording.
        file: PathBuf,
        /// The tick.
        #[arg(long)]
        tick: u32,
    },
    /// Per-tick stats: tick, state hash, tick time, bytes out, clients, events.
    Export {
        /// The recording.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
    },
    /// A PNG of tick time, bytes out per client and clients over time.
    Plot {
        /// The recording.
        file: PathBuf,
        /// Where to write the PNG.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Play the recording to clients over the normal protocol (bots and viewers connect
    /// as to a live server; every client is a spectator).
    Serve {
        /// The recording.
        file: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:4433")]
        listen: SocketAddr,
        /// Certificate and token key directory (as for the server).
        #[arg(long, default_value = ".tickcast")]
        data_dir: PathBuf,
        /// Playback speed, × real time.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
    },
    /// Truncate a torn tail (after a crash) so the file ends at its last whole frame.
    Repair {
        /// The recording.
        file: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Csv,
    Jsonl,
}

/// Runs the replay command line with `game`'s rules: `args` are the program name (as
/// usage shows it) and the subcommand with its arguments.
pub fn main<G: Game + Clone>(game: G, args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let args = match Args::try_parse_from(args) {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(game, args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("replay: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn read(path: &Path) -> anyhow::Result<Recording> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let recording =
        decode_recording(&bytes).with_context(|| format!("reading {}", path.display()))?;
    if let Some(torn) = &recording.torn {
        eprintln!(
            "warning: {} ends in {} bytes that are not a whole frame (at offset {}: {}); \
             everything before is intact. `tickcast-replay repair` truncates them.",
            path.display(),
            torn.bytes,
            torn.offset,
            torn.reason
        );
    }
    Ok(recording)
}

/// A one-line progress bar on stderr, only when stderr is a terminal.
struct Progress {
    enabled: bool,
    last: Instant,
}

impl Progress {
    fn new() -> Self {
        Self {
            enabled: std::io::stderr().is_terminal(),
            last: Instant::now(),
        }
    }

    fn update(&mut self, done: u64, total: u64) {
        if !self.enabled || (self.last.elapsed() < Duration::from_millis(100) && done < total) {
            return;
        }
        self.last = Instant::now();
        let width = 40;
        let filled = (done * width / total.max(1)) as usize;
        eprint!(
            "\r[{}{}] {done}/{total} ticks",
            "#".repeat(filled),
            " ".repeat(width as usize - filled)
        );
        if done >= total {
            eprintln!();
        }
    }
}

fn run<G: Game + Clone>(game: G, args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Info { file } => {
            let recording = read(&file)?;
            let size = std::fs::metadata(&file)?.len();
            let info = replay::info(&recording);
            let h = &recording.header;
            let rate = f64::from(h.config.tick_rate.max(1));
            outln!("file            {} ({size} bytes)", file.display());
            outln!(
                "format          v{} (protocol v{})",
                recording.format_version,
                h.protocol_version
            );
            outln!("build           {}", h.build_id);
            outln!("game            {}", h.schema);
            outln!("tick rate       {} Hz", h.config.tick_rate);
            outln!("seed            {}", h.config.seed);
            outln!(
                "world           {}x{} units, {} NPCs, cell {}",
                h.config.arena_width,
                h.config.arena_height,
                h.config.npcs,
                h.config.cell_size
            );
            match info.span {
                Some((first, last)) => outln!(
                    "ticks           {} ({first}..={last}, {:.1} s)",
                    info.ticks,
                    info.ticks as f64 / rate
                ),
                None => outln!("ticks           0"),
            }
            outln!(
                "clients         {} distinct, {} at most at once",
                info.distinct_clients,
                info.peak_clients
            );
            outln!(
                "keyframes       {} (every {} ticks)",
                info.keyframes,
                h.keyframe_interval
            );
            for (first, last) in &info.gaps {
                outln!("gap             ticks {first}..={last} not recorded");
            }
            outln!(
                "ending          {}",
                if recording.torn.is_some() {
                    "torn (see warning)"
                } else if info.closed_cleanly {
                    "clean (index written)"
                } else {
                    "no index (the server did not close it: killed or still running)"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { file, player_speed } => {
            let recording = read(&file)?;
            let config = player_speed.map(|speed| SimConfig {
                player_speed: speed,
                ..recording.header.config.clone()
            });
            let mut progress = Progress::new();
            let schema = recording.header.schema.clone();
            let result = replay::verify(game, &recording, config, |done, total| {
                progress.update(done, total)
            })?;
            if let Some((first, last)) = result.stopped_at_gap {
                outln!(
                    "stopped: ticks {first}..={last} were not recorded, so nothing after them can be re-simulated"
                );
            }
            if let Some((expected, found)) = result.out_of_sequence {
                outln!("stopped: expected tick {expected}, the recording has tick {found}");
            }
            match result.first_divergence {
                None if result.passed() => {
                    outln!(
                        "verified: {} ticks re-simulated to their recorded state hashes",
                        result.ticks_checked
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                None => outln!(
                    "not verified: {} ticks matched before stopping",
                    result.ticks_checked
                ),
                Some(tick) => {
                    outln!("DIVERGED at tick {tick} (state hash differs from the recording)");
                    match &result.differing_entities {
                        Some((at, entities)) => {
                            outln!("at keyframe tick {at}, {} entities differ:", entities.len());
                            for d in entities.iter().take(20) {
                                let describe = |r: &Option<tickcast_shared::schema::Record>| {
                                    r.as_ref()
                                        .map_or("absent".to_owned(), |r| r.describe(&schema))
                                };
                                outln!(
                                    "  net_id {:>8}: recorded {}; replayed {}",
                                    d.net_id,
                                    describe(&d.recorded),
                                    describe(&d.replayed)
                                );
                            }
                            if entities.len() > 20 {
                                outln!("  … and {} more", entities.len() - 20);
                            }
                        }
                        None => {
                            outln!("(no keyframe after the divergence to compare entities with)")
                        }
                    }
                }
            }
            Ok(ExitCode::from(1))
        }
        Command::Inspect { file, tick } => {
            let recording = read(&file)?;
            let entities = replay::entities_at(game, &recording, tickcast_shared::Tick::new(tick))?;
            outln!("tick {tick}: {} entities", entities.len());
            let schema = &recording.header.schema;
            for r in entities.values() {
                outln!("{:>8} {}", r.net_id, r.describe(schema));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Export { file, format } => {
            let recording = read(&file)?;
            let format = match format {
                Format::Csv => ExportFormat::Csv,
                Format::Jsonl => ExportFormat::Jsonl,
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            match replay::export(&recording, format, &mut out).and_then(|()| out.flush()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(ExitCode::SUCCESS),
            }
        }
        Command::Plot { file, output } => {
            let recording = read(&file)?;
            let canvas = crate::plot::render(&recording);
            let out = std::fs::File::create(&output)
                .with_context(|| format!("creating {}", output.display()))?;
            canvas.write_png(std::io::BufWriter::new(out))?;
            let (w, h) = canvas.size();
            outln!("wrote {} ({w}x{h})", output.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            file,
            listen,
            data_dir,
            speed,
        } => {
            if !(speed > 0.0 && speed.is_finite()) {
                bail!("--speed must be a positive number");
            }
            let recording = read(&file)?;
            // Serving re-simulates the recording with this build's rules.
            serve(game, &recording, listen, data_dir, speed)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Repair { file } => {
            let repair = tickcast_sim::record::repair(&file)
                .with_context(|| format!("repairing {}", file.display()))?;
            match repair {
                Repair::Whole => outln!("{} is whole; nothing to repair", file.display()),
                Repair::Truncated { valid_len, removed } => outln!(
                    "truncated {} to {valid_len} bytes (removed {removed} torn bytes)",
                    file.display(),
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The Welcome's entity for a spectator: a client of `serve` controls nothing.
const SPECTATOR: u32 = u32::MAX;

fn serve<G: Game>(
    game: G,
    recording: &Recording,
    listen: SocketAddr,
    data_dir: PathBuf,
    speed: f64,
) -> anyhow::Result<()> {
    let config = recording.header.config.clone();
    let net = tickcast_net::spawn(NetConfig {
        listen,
        data_dir,
        tick_rate: config.tick_rate,
        arena: (config.arena_width, config.arena_height),
        cell_size: config.cell_size,
        // Every client of a replay is a spectator: it sees the whole world.
        view_cells: tickcast_shared::chunk::VIEW_ALL,
        chunk_payload: config.chunk_payload,
        // The recorded game's schema: clients decode its records with it.
        schema: Some(std::sync::Arc::new(recording.header.schema.clone())),
        ..NetConfig::default()
    })?;
    outln!(
        "serving {} ticks on {} at {speed}x",
        recording.ticks().count(),
        net.local_addr()
    );
    outln!(
        "certificate fingerprint (SHA-256): {}",
        tickcast_net::tls::fingerprint_hex(&net.fingerprint())
    );
    let publisher = net.publisher();
    let mut sim = Sim::with_game(config.clone(), game)?;
    replay::check_game(sim.schema(), recording)?;
    let mut pacing = FixedStep::per_second(f64::from(config.tick_rate) * speed, Instant::now());
    let total = recording.ticks().count() as u64;
    let mut progress = Progress::new();
    let mut played = 0u64;
    for (_, frame) in &recording.frames {
        match frame {
            Frame::Tick(tick) if tick.tick == sim.tick() => {
                net.drain_events(|event| {
                    if let PeerEvent::Joined { client_id } = event {
                        net.acknowledge_join(JoinAck {
                            client_id,
                            entity: SPECTATOR,
                            tick: tick.tick,
                        });
                    }
                });
                for event in &tick.events {
                    sim.handle(event.clone());
                }
                let now_us = tickcast_shared::unix_time::micros_wrapping(SystemTime::now());
                sim.step(now_us);
                if let Some(snapshot) = sim.take_snapshot() {
                    publisher.publish(tick.tick, snapshot.bytes, snapshot.index);
                }
                played += 1;
                progress.update(played, total);
                pacing.sleep_until_next();
            }
            Frame::Tick(tick) => {
                eprintln!(
                    "stopping at tick {}: the recording jumps from tick {}",
                    tick.tick,
                    sim.tick()
                );
                break;
            }
            Frame::Gap { first, last } => {
                eprintln!("stopping: ticks {first}..={last} were not recorded");
                break;
            }
            _ => {}
        }
    }
    outln!("played {played} ticks");
    net.shutdown();
    Ok(())
}
