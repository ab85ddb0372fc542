//! `tickcast-bots`: connects N native QUIC clients to a tickcast server, plays, and
//! reports what they received.
//!
//! Every bot is a real client built on `tickcast_clients`: it pins the server's
//! certificate, mints a dev token from the key in the data directory, sends inputs at the
//! tick rate and judges every tick it receives.

#![allow(clippy::print_stdout)] // A command-line tool: its report goes to stdout.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use serde::Serialize;
use tickcast_clients::track::{LatencyHistogram, TickAssembler};
use tickcast_clients::{
    InputHistory, client_endpoint, connect, connection_error_key, mint_token, now_us_wrapping,
};
use tickcast_net::tls::{self, TOKEN_KEY_FILE};
use tickcast_shared::chunk::parse_chunk;
use tickcast_shared::msg::InputCmd;
use tickcast_shared::token::TokenKey;
use tokio::time::Instant;

/// Load generator and judge for a tickcast server.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:4433")]
    server: SocketAddr,
    /// Number of clients.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// How long each client plays, e.g. 10s, 2m, 500ms.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Spread the connects over this long, e.g. 1s.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    ramp: Duration,
    /// The server's data directory: its certificate is pinned and its token key used.
    #[arg(long, default_value = ".tickcast")]
    data_dir: PathBuf,
    /// Pin this SHA-256 fingerprint instead of reading the certificate from the data dir.
    #[arg(long)]
    fingerprint: Option<String>,
    /// Token key file (default: <data-dir>/token.key).
    #[arg(long)]
    token_key_file: Option<PathBuf>,
    /// First client id; bots use consecutive ids from here (default: random).
    #[arg(long)]
    client_id_base: Option<u64>,
    /// Clients per local UDP endpoint.
    #[arg(long, default_value_t = 250)]
    clients_per_endpoint: usize,
    /// Print one JSON object instead of a human summary.
    #[arg(long)]
    json: bool,
}

/// What one bot saw.
#[derive(Debug, Default)]
struct BotOutcome {
    connected: bool,
    tick_rate: u16,
    delivery: tickcast_clients::track::Delivery,
    latency: LatencyHistogram,
    bytes_in: u64,
    malformed_chunks: u64,
    disconnected: Option<String>,
    connect_error: Option<String>,
    played_for: Duration,
}

/// The JSON report; every field documented in the README.
#[derive(Debug, Serialize)]
struct Report {
    clients: usize,
    connected: usize,
    duration_s: f64,
    tick_rate: u16,
    snapshots_expected: u64,
    snapshots_complete: u64,
    delivery_ratio: f64,
    chunks_received: u64,
    chunks_lost: u64,
    latency_ms_p50: Option<f64>,
    latency_ms_p99: Option<f64>,
    bytes_in_per_client_per_s: f64,
    entities_last_snapshot: usize,
    disconnects: usize,
    errors: BTreeMap<String, u64>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tickcast-bots: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.clients == 0 {
        anyhow::bail!("--clients must be at least 1");
    }
    let fingerprint = match &args.fingerprint {
        Some(hex) => tls::parse_fingerprint(hex)?,
        None => tls::fingerprint_from_data_dir(&args.data_dir).with_context(|| {
            format!(
                "no certificate to pin in {} (run the server once, or pass --fingerprint)",
                args.data_dir.display()
            )
        })?,
    };
    let key_path = args
        .token_key_file
        .clone()
        .unwrap_or_else(|| args.data_dir.join(TOKEN_KEY_FILE));
    let key = Arc::new(tls::load_token_key(&key_path).context("loading the token key")?);
    let base = match args.client_id_base {
        Some(base) => base,
        None => {
            let mut bytes = [0u8; 4];
            tls::fill_random(&mut bytes)?;
            u64::from(u32::from_le_bytes(bytes)) << 16
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let outcomes = runtime.block_on(swarm(&args, fingerprint, key, base))?;
    let report = summarize(&args, &outcomes);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    Ok(())
}

async fn swarm(
    args: &Args,
    fingerprint: [u8; 32],
    key: Arc<TokenKey>,
    base: u64,
) -> anyhow::Result<Vec<BotOutcome>> {
    let endpoints = args.clients.div_ceil(args.clients_per_endpoint.max(1));
    let endpoints: Vec<quinn::Endpoint> = (0..endpoints)
        .map(|_| client_endpoint(args.server, fingerprint))
        .collect::<Result<_, _>>()
        .context("creating client endpoints")?;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let endpoint = endpoints[i % endpoints.len()].clone();
        let key = key.clone();
        let delay = args.ramp.mul_f64(i as f64 / args.clients as f64);
        let server = args.server;
        let duration = args.duration;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start + delay).await;
            bot(endpoint, server, &key, base + i as u64, duration, i as u64).await
        }));
    }
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(task.await.context("a bot task failed")?);
    }
    for endpoint in &endpoints {
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    }
    Ok(outcomes)
}

/// A small deterministic walk: a new direction every second or so.
fn next_direction(state: &mut u64) -> (i8, i8) {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let dx = ((*state >> 33) % 255) as i16 - 127;
    let dy = ((*state >> 41) % 255) as i16 - 127;
    (dx as i8, dy as i8)
}

async fn bot(
    endpoint: quinn::Endpoint,
    server: SocketAddr,
    key: &TokenKey,
    client_id: u64,
    duration: Duration,
    seed: u64,
) -> BotOutcome {
    let mut outcome = BotOutcome::default();
    let token = match mint_token(key, client_id, Duration::from_secs(300)) {
        Ok(token) => token,
        Err(e) => {
            outcome.connect_error = Some(e.key());
            return outcome;
        }
    };
    let session = match connect(&endpoint, server, token, Duration::from_secs(10)).await {
        Ok(session) => session,
        Err(e) => {
            tracing::debug!(client_id, "connect failed: {e}");
            outcome.connect_error = Some(e.key());
            return outcome;
        }
    };
    outcome.connected = true;
    outcome.tick_rate = session.welcome().tick_rate;
    let period = Duration::from_secs(1) / u32::from(session.welcome().tick_rate.max(1));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut assembler = TickAssembler::new(false);
    let mut history = InputHistory::default();
    let mut walk_state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut direction = next_direction(&mut walk_state);
    let mut inputs_sent = 0u64;
    let began = Instant::now();
    let end = began + duration;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(end) => break,
            _ = ticker.tick() => {
                inputs_sent += 1;
                if inputs_sent.is_multiple_of(30) {
                    direction = next_direction(&mut walk_state);
                }
                let cmd = InputCmd { move_x: direction.0, move_y: direction.1, ..Default::default() };
                let ack = assembler.delivery().last_tick.unwrap_or(0);
                if let Err(e) = session.send_input(&history.push(cmd, ack)) {
                    tracing::debug!(client_id, "input not sent: {e}");
                }
            }
            datagram = session.next_datagram() => match datagram {
                Ok(bytes) => {
                    outcome.bytes_in += bytes.len() as u64;
                    match parse_chunk(&bytes) {
                        Ok(chunk) => {
                            let age = now_us_wrapping().wrapping_sub(chunk.header.server_time_us) as i32;
                            outcome.latency.record(age.max(0) as u64);
                            assembler.on_chunk(&chunk);
                        }
                        Err(e) => {
                            tracing::debug!(client_id, "malformed chunk: {e}");
                            outcome.malformed_chunks += 1;
                        }
                    }
                }
                Err(e) => {
                    outcome.disconnected = Some(connection_error_key(&e));
                    break;
                }
            },
        }
    }
    outcome.played_for = began.elapsed();
    // The last two ticks may still be in flight when the run ends: leave them out.
    outcome.delivery = assembler.finish(2);
    session.close();
    outcome
}

fn summarize(args: &Args, outcomes: &[BotOutcome]) -> Report {
    let connected: Vec<&BotOutcome> = outcomes.iter().filter(|o| o.connected).collect();
    let mut latency = LatencyHistogram::default();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut expected = 0;
    let mut complete = 0;
    let mut chunks_received = 0;
    let mut chunks_lost = 0;
    let mut bytes_in = 0;
    let mut newest: Option<(u32, usize)> = None;
    let mut client_seconds = 0.0;
    for outcome in outcomes {
        if let Some(key) = &outcome.connect_error {
            *errors.entry(format!("connect:{key}")).or_default() += 1;
        }
        if let Some(key) = &outcome.disconnected {
            *errors.entry(format!("disconnect:{key}")).or_default() += 1;
        }
        if outcome.malformed_chunks > 0 {
            *errors.entry("malformed_chunk".into()).or_default() += outcome.malformed_chunks;
        }
        let d = &outcome.delivery;
        expected += d.expected();
        complete += d.complete;
        chunks_received += d.chunks_received;
        chunks_lost += d.chunks_lost;
        bytes_in += outcome.bytes_in;
        latency.merge(&outcome.latency);
        client_seconds += outcome.played_for.as_secs_f64();
        if let Some(tick) = d.last_complete_tick
            && newest.is_none_or(|(t, _)| tick > t)
        {
            newest = Some((tick, d.entities_last_snapshot));
        }
    }
    Report {
        clients: args.clients,
        connected: connected.len(),
        duration_s: args.duration.as_secs_f64(),
        tick_rate: connected.first().map_or(0, |o| o.tick_rate),
        snapshots_expected: expected,
        snapshots_complete: complete,
        delivery_ratio: if expected == 0 {
            0.0
        } else {
            complete as f64 / expected as f64
        },
        chunks_received,
        chunks_lost,
        latency_ms_p50: latency.quantile_ms(0.50),
        latency_ms_p99: latency.quantile_ms(0.99),
        bytes_in_per_client_per_s: if client_seconds > 0.0 {
            bytes_in as f64 / client_seconds
        } else {
            0.0
        },
        entities_last_snapshot: newest.map_or(0, |(_, n)| n),
        disconnects: outcomes.iter().filter(|o| o.disconnected.is_some()).count(),
        errors,
    }
}

fn print_human(report: &Report) {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} ms"));
    println!(
        "tickcast-bots: {} of {} clients connected for {:.1} s at {} Hz",
        report.connected, report.clients, report.duration_s, report.tick_rate
    );
    println!(
        "  delivery       {:.4} ({} of {} snapshots complete)",
        report.delivery_ratio, report.snapshots_complete, report.snapshots_expected
    );
    println!(
        "  chunks         {} received, {} lost",
        report.chunks_received, report.chunks_lost
    );
    println!(
        "  latency        p50 {}, p99 {}",
        ms(report.latency_ms_p50),
        ms(report.latency_ms_p99)
    );
    println!(
        "  bandwidth in   {:.0} B/s per client",
        report.bytes_in_per_client_per_s
    );
    println!(
        "  world          {} entities in the last snapshot",
        report.entities_last_snapshot
    );
    println!("  disconnects    {}", report.disconnects);
    for (reason, count) in &report.errors {
        println!("  error          {reason}: {count}");
    }
}
