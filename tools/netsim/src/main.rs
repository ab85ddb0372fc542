//! `tickcast-netsim`: a UDP link conditioner on loopback, in front of a tickcast server.
//! Clients connect to `--listen` instead of the server; each direction is conditioned
//! as `--spec` says (see `tickcast_netsim::spec`). Stops after `--for`, or on Ctrl-C,
//! and prints what it did to stderr.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tickcast_netsim::{LinkCounters, NetsimSpec, Proxy, ProxyConfig};

/// Condition a UDP link on loopback: loss, bursts, delay, jitter, reordering,
/// duplication, a rate cap with a bounded queue, an MTU clamp.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where clients send (loopback only).
    #[arg(long, default_value = "127.0.0.1:4434")]
    listen: SocketAddr,
    /// The server (loopback only).
    #[arg(long, default_value = "127.0.0.1:4433")]
    upstream: SocketAddr,
    /// What the link does, e.g. "loss=5%,delay=40ms,jitter=5ms,seed=7"; prefix a key
    /// with up: (client to server) or down: (server to client) for one direction.
    #[arg(long, default_value = "")]
    spec: NetsimSpec,
    /// Stop after this long (the proxy never runs unbounded).
    #[arg(long = "for", default_value = "10m", value_parser = humantime::parse_duration)]
    run_for: Duration,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    let proxy = Proxy::start(ProxyConfig {
        listen: args.listen,
        lifetime: Some(args.run_for),
        ..ProxyConfig::new(args.upstream, args.spec)
    })
    .context("starting the proxy")?;
    eprintln!(
        "tickcast-netsim: {} -> {} for {}",
        proxy.local_addr(),
        args.upstream,
        humantime::format_duration(args.run_for)
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("installing the SIGINT/SIGTERM handler")?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let _ = tx.send(());
        }
    });
    let _ = rx.recv_timeout(args.run_for);
    let report = proxy.stop();
    eprintln!("tickcast-netsim: {} client addresses", report.clients);
    line("up  ", &report.up);
    line("down", &report.down);
    eprintln!(
        "tickcast-netsim: dropped beyond limits: {} (too many clients), {} (too many pending), {} (send failed)",
        report.dropped_too_many_clients, report.dropped_pending_full, report.dropped_send_failed
    );
    Ok(())
}

fn line(name: &str, c: &LinkCounters) {
    eprintln!(
        "tickcast-netsim: {name} {} packets ({} bytes): {} delivered, lost {}, queue-dropped {}, mtu-dropped {}, duplicated {}, reordered {}, queue peak {} bytes",
        c.packets,
        c.bytes,
        c.delivered,
        c.dropped_loss,
        c.dropped_queue,
        c.dropped_mtu,
        c.duplicated,
        c.reordered,
        c.queue_peak_bytes
    );
}
