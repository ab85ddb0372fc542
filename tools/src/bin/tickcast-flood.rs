//! `tickcast-flood`: a handshake flood against a tickcast server on this machine, for
//! drills (`scripts/faults.py flood`): QUIC Initials from many source ports that never
//! go on, and half-open connections that finish the QUIC handshake but send no Hello.
//! Loopback only; bounded in count and time; prints one JSON object with what it did.
//!
//! Exit codes: 0 done, 1 could not run.

#![allow(clippy::print_stdout)] // A command-line tool: its report goes to stdout.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tickcast_net::tls;
use tickcast_tools::flood::{InitialFlood, half_open, send_initials};

/// Send a handshake flood at a tickcast server on this machine.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The server (loopback only).
    #[arg(long, default_value = "127.0.0.1:4433")]
    server: SocketAddr,
    /// QUIC Initial packets to send in all.
    #[arg(long, default_value_t = 10_000)]
    initials: usize,
    /// Initials per second, at most.
    #[arg(long, default_value_t = 5_000)]
    rate: u32,
    /// Source ports the Initials are spread over.
    #[arg(long, default_value_t = 256)]
    source_ports: usize,
    /// Half-open connections (QUIC handshake done, no Hello), opened with the flood.
    #[arg(long, default_value_t = 0)]
    half_open: usize,
    /// How long half-open connections are held at most, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// The server's data directory, for its certificate (half-open connections pin it).
    #[arg(long, default_value = ".tickcast")]
    data_dir: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let flood = InitialFlood {
        server: args.server,
        initials: args.initials,
        rate_per_s: args.rate,
        source_ports: args.source_ports,
    };
    let fingerprint = if args.half_open > 0 {
        tls::fingerprint_from_data_dir(&args.data_dir)
            .with_context(|| format!("reading the certificate in {}", args.data_dir.display()))?
    } else {
        [0; 32]
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    let start = Instant::now();
    // Initials from a thread of their own (blocking sends, paced by sleeps), half-open
    // connections on the runtime here, at the same time.
    let initials = std::thread::spawn(move || send_initials(&flood));
    let half = runtime.block_on(half_open(
        args.server,
        fingerprint,
        args.half_open,
        args.hold,
    ))?;
    let sent = initials
        .join()
        .map_err(|_| anyhow::anyhow!("the flood thread panicked"))??;
    let initials_s = start.elapsed().as_secs_f64();
    let mut closes: Vec<(String, usize)> = Vec::new();
    for reason in &half.closed_by_server {
        match closes.iter_mut().find(|(r, _)| r == reason) {
            Some((_, n)) => *n += 1,
            None => closes.push((reason.clone(), 1)),
        }
    }
    let closes: Vec<String> = closes
        .iter()
        .map(|(reason, n)| format!("{:?}: {n}", reason))
        .collect();
    println!(
        "{{\"initials_sent\": {}, \"send_errors\": {}, \"seconds\": {:.3}, \
         \"half_open\": {}, \"half_open_established\": {}, \"half_open_failed\": {}, \
         \"half_open_held_to_the_end\": {}, \"half_open_closed_by_server\": {{{}}}}}",
        sent.sent,
        sent.send_errors,
        initials_s,
        args.half_open,
        half.established,
        half.failed.len(),
        half.held_to_the_end,
        closes.join(", ")
    );
    Ok(())
}
