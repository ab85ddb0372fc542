//! `tickcast-token`: mints a connect token with a server's token key and prints it as
//! hex (the 69-byte encoding of `docs/PROTOCOL.md`), the way a game backend would.

#![allow(clippy::print_stdout)] // A command-line tool: the token goes to stdout.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Parser;
use tickcast_net::tls::{self, TOKEN_KEY_FILE};
use tickcast_shared::{hex, unix_time};

/// Mint a tickcast connect token.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The server's data directory (its token key is `<data-dir>/token.key`).
    #[arg(long, default_value = ".tickcast")]
    data_dir: PathBuf,
    /// Token key file (overrides --data-dir).
    #[arg(long)]
    token_key_file: Option<PathBuf>,
    /// The player's client id.
    #[arg(long)]
    client_id: u64,
    /// How long the token is valid, e.g. 90s, 10m, 1h.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// The room the token admits to (0: any).
    #[arg(long, default_value_t = 0)]
    room: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let path = args
        .token_key_file
        .unwrap_or_else(|| args.data_dir.join(TOKEN_KEY_FILE));
    let key = tls::load_token_key(&path)
        .with_context(|| format!("loading the token key from {}", path.display()))?;
    let mut nonce = [0u8; 16];
    tls::fill_random(&mut nonce)?;
    let now = unix_time::seconds(SystemTime::now());
    let token = key.mint(
        args.client_id,
        now + args.ttl.as_secs().max(1),
        nonce,
        args.room,
    );
    println!("{}", hex::encode(&token.to_bytes()));
    Ok(())
}
