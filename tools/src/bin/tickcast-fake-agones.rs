//! `tickcast-fake-agones`: a fake Agones SDK sidecar on 127.0.0.1, for running tickcast
//! servers as if in a Fleet without Kubernetes (`scripts/fleet.py`, tests), and the
//! allocation step a matchmaker would make against it.
//!
//! * `serve --listen 127.0.0.1:9358 --game-port 4433`: answers Agones' REST SDK
//!   ([`tickcast_tools::fake_agones`]), optionally writing every call to a JSON-lines
//!   file; runs until killed.
//! * `allocate --sidecar ADDR …`: moves the first `Ready` GameServer among them to
//!   `Allocated` and prints what a matchmaker hands a client: address, port and the
//!   certificate fingerprint the server annotated itself with, as one JSON object.

#![allow(clippy::print_stdout)] // A command-line tool: its answers go to stdout.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::json;
use tickcast_tools::fake_agones::{FakeSidecar, GameServerModel, OnCall, RecordedCall, call};

/// A fake Agones SDK sidecar (REST), and an allocator for it.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Answer the Agones REST SDK until killed.
    Serve {
        /// Address to listen on (the server's AGONES_SDK_HTTP_PORT is its port).
        #[arg(long, default_value = "127.0.0.1:9358")]
        listen: SocketAddr,
        /// The GameServer's name.
        #[arg(long, default_value = "gameserver-0")]
        name: String,
        /// The address the GameServer reports (`status.address`).
        #[arg(long, default_value = "127.0.0.1")]
        address: String,
        /// The UDP port the GameServer reports (`status.ports[game]`).
        #[arg(long)]
        game_port: u16,
        /// Append every call to this file, one JSON object a line.
        #[arg(long)]
        calls: Option<PathBuf>,
    },
    /// Allocate the first Ready GameServer among these sidecars; print its address,
    /// port and fingerprint as JSON. Exit 1 if none is Ready.
    Allocate {
        /// A sidecar's address (repeat for each server).
        #[arg(long = "sidecar", required = true)]
        sidecars: Vec<SocketAddr>,
    },
}

const TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Serve {
            listen,
            name,
            address,
            game_port,
            calls,
        } => serve(
            listen,
            GameServerModel::new(&name, &address, game_port),
            calls,
        ),
        Command::Allocate { sidecars } => allocate(&sidecars),
    }
}

fn serve(
    listen: SocketAddr,
    game_server: GameServerModel,
    calls: Option<PathBuf>,
) -> anyhow::Result<()> {
    let log = match calls {
        Some(path) => Some(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?,
        )),
        None => None,
    };
    let started = std::time::Instant::now();
    let on_call: Option<OnCall> = log.map(|file| {
        Box::new(move |call: &RecordedCall| {
            let line = json!({
                "t_ms": call.at.saturating_duration_since(started).as_millis() as u64,
                "method": call.method,
                "path": call.path,
                "body": call.body,
            });
            if let Ok(mut file) = file.lock() {
                let _ = writeln!(file, "{line}");
            }
        }) as OnCall
    });
    let fake = FakeSidecar::start_with(listen, game_server, on_call)
        .with_context(|| format!("listening on {listen}"))?;
    println!("fake Agones sidecar listening on {}", fake.addr());
    std::io::stdout().flush()?;
    loop {
        std::thread::park();
    }
}

fn allocate(sidecars: &[SocketAddr]) -> anyhow::Result<()> {
    for &sidecar in sidecars {
        let Ok((200, game_server)) = call(sidecar, "GET", "/gameserver", None, TIMEOUT) else {
            continue;
        };
        if game_server["status"]["state"] != "Ready" {
            continue;
        }
        let (status, allocated) = call(sidecar, "POST", "/fake/allocate", None, TIMEOUT)
            .with_context(|| format!("allocating through {sidecar}"))?;
        if status != 200 {
            continue; // allocated by someone else in between
        }
        let port = allocated["status"]["ports"]
            .as_array()
            .and_then(|ports| ports.iter().find(|p| p["name"] == "game"))
            .and_then(|p| p["port"].as_u64())
            .context("the GameServer has no `game` port")?;
        let fingerprint =
            allocated["object_meta"]["annotations"]["agones.dev/sdk-tickcast-fingerprint"]
                .as_str()
                .context("the GameServer has no fingerprint annotation")?;
        let answer = json!({
            "name": allocated["object_meta"]["name"],
            "address": allocated["status"]["address"],
            "port": port,
            "fingerprint": fingerprint,
            "sidecar": sidecar.to_string(),
        });
        println!("{answer}");
        return Ok(());
    }
    bail!("no Ready GameServer among {} sidecars", sidecars.len())
}
