//! `tickcast-bots`: connects N native QUIC clients to a tickcast server, each playing a
//! behaviour from `--mix`, and reports what they received; `--min-delivery` and
//! `--max-latency-p99-ms` turn the report into a pass/fail verdict.
//!
//! Exit codes: 0 ran and every gate passed, 1 a gate failed (named on stderr), 2 could
//! not run (bad flags, no certificate or token key, no client connected).
//!
//! The work is `tickcast_bots::swarm`; this binary parses flags, shows progress on
//! stderr, prints the report (`tickcast_bots::report`) and maps it to an exit code.

#![allow(clippy::print_stdout)] // A command-line tool: its report goes to stdout.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tickcast_bots::behaviour::Behaviour;
use tickcast_bots::cli::{ServerArgs, random_u32};
use tickcast_bots::mix::Mix;
use tickcast_bots::report::{
    Gates, LinkFigures, NetsimFigures, ProcessFigures, Report, Summary, Verdict,
    cpu_seconds_from_proc_stat,
};
use tickcast_bots::swarm::{
    BotDriver, ChurnLeave, LiveCounters, SwarmConfig, TokenSource, run_swarm,
};
use tickcast_netsim::{NetsimSpec, Proxy, ProxyConfig};

/// mimalloc as the global allocator with the `mimalloc` feature (issue #15's allocator A/B,
/// docs/PERFORMANCE.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator and judge for a tickcast server.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    access: ServerArgs,
    /// Number of clients.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// How long each client plays, e.g. 10s, 2m, 500ms.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Spread the connects over this long, e.g. 1s.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    ramp: Duration,
    /// Behaviours as name=weight, e.g. walk=80,idle=10,stall=5,slow=5,churn=0 (weights
    /// or percentages; names: walk, idle, stall, slow, churn).
    #[arg(long, default_value = "walk=100")]
    mix: Mix,
    /// First client id when minting; bots use consecutive ids from here (default: random).
    #[arg(long, conflicts_with = "token_file")]
    client_id_base: Option<u64>,
    /// Clients per local UDP endpoint (each endpoint is one socket with a 4 MiB
    /// receive buffer).
    #[arg(long, default_value_t = 200)]
    clients_per_endpoint: usize,
    /// Threads the bots run on, each with its own driver and sockets.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// What carries the bots: proto (one sans-IO quinn-proto driver per thread; the
    /// default) or quinn-endpoint (quinn's async endpoint, a tokio task per bot; the
    /// default of a build without the `proto-driver` feature).
    #[arg(long, default_value_t = BotDriver::default().name().to_string())]
    driver: String,
    /// Datagrams per second a `slow` bot reads at most.
    #[arg(long, default_value_t = 100)]
    slow_read_rate: u32,
    /// How long after connecting a `stall` bot stops reading.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    stall_after: Duration,
    /// How often a `churn` bot reconnects.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    churn_every: Duration,
    /// Validity of each minted token, e.g. 30s (default: 5 minutes, or the whole run
    /// if longer). A token is minted per connect, so it only has to outlive its
    /// handshake; a short one lets the server forget its nonce soon after (the churn
    /// drill watches the replay cache empty).
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "token_file")]
    token_ttl: Option<Duration>,
    /// How a `churn` bot leaves before reconnecting: close (the normal close code),
    /// vanish (its socket falls silent, no close: the server times it out; it comes back
    /// as a new player) or alternate.
    #[arg(long, default_value = "close")]
    churn_leave: ChurnLeave,
    /// Gate: exit 1 unless the walk and idle clients all connected and their delivery
    /// ratio is at least this (0 to 1).
    #[arg(long)]
    min_delivery: Option<f64>,
    /// Gate: exit 1 unless the walk and idle clients' chunk latency p99 is at most this
    /// many milliseconds.
    #[arg(long)]
    max_latency_p99_ms: Option<f64>,
    /// Most time one connect (QUIC handshake, Hello, Welcome) may take, e.g. 30s. On a
    /// lossy link QUIC doubles its wait after each lost flight, so a handshake at 20 %
    /// loss and 200 ms round trip can take over 10 s and still succeed.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
    /// Run the bots through an in-process link conditioner in front of --server, e.g.
    /// "loss=5%,delay=40ms" or "down:loss=20%,delay=100ms,seed=7" (keys: loss, burst,
    /// delay, jitter, reorder, reorder-gap, dup, rate, queue, mtu, seed; docs/CLIENTS.md).
    #[arg(long, value_parser = valid_netsim)]
    netsim: Option<String>,
    /// Print one JSON object instead of a human summary.
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
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
        Ok(verdict) => {
            match &verdict {
                Verdict::Pass => {}
                Verdict::GateFailed(failures) => {
                    for failure in failures {
                        eprintln!("tickcast-bots: gate failed: {failure}");
                    }
                }
                Verdict::CouldNotRun(why) => eprintln!("tickcast-bots: could not run: {why}"),
            }
            ExitCode::from(verdict.exit_code())
        }
        Err(e) => {
            eprintln!("tickcast-bots: could not run: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Checks a `--netsim` spec when the flags are parsed, keeping its text for the report.
fn valid_netsim(text: &str) -> Result<String, tickcast_netsim::SpecError> {
    text.parse::<NetsimSpec>()?;
    Ok(text.to_string())
}

fn gates(args: &Args) -> anyhow::Result<Gates> {
    let gates = Gates {
        min_delivery: args.min_delivery,
        max_latency_p99_ms: args.max_latency_p99_ms,
    };
    if let Some(min) = gates.min_delivery
        && !(0.0..=1.0).contains(&min)
    {
        anyhow::bail!("--min-delivery must be between 0 and 1, not {min}");
    }
    if let Some(max) = gates.max_latency_p99_ms
        && !(max > 0.0 && max.is_finite())
    {
        anyhow::bail!("--max-latency-p99-ms must be a positive number, not {max}");
    }
    let counts = args.mix.counts(args.clients);
    let healthy: usize = Behaviour::ALL
        .iter()
        .zip(counts)
        .filter(|(b, _)| b.is_healthy())
        .map(|(_, n)| n)
        .sum();
    if gates.any() && healthy == 0 {
        anyhow::bail!(
            "the gates judge walk and idle clients, and --mix {} gives none of {} clients",
            args.mix,
            args.clients
        );
    }
    Ok(gates)
}

fn tokens(args: &Args) -> anyhow::Result<TokenSource> {
    if let Some(tokens) = args.access.listed_tokens()? {
        return Ok(TokenSource::List(tokens));
    }
    let key = args.access.token_key()?;
    let first_client_id = match args.client_id_base {
        Some(base) => base,
        None => u64::from(random_u32()?) << 16,
    };
    Ok(TokenSource::Mint {
        key,
        first_client_id,
        // Long enough for any run plus its ramp; tokens are per connect anyway.
        ttl: args
            .token_ttl
            .unwrap_or_else(|| Duration::from_secs(300).max(args.duration + args.ramp)),
    })
}

fn run(args: Args) -> anyhow::Result<Verdict> {
    if args.clients == 0 {
        anyhow::bail!("--clients must be at least 1");
    }
    if args.clients_per_endpoint == 0 {
        anyhow::bail!("--clients-per-endpoint must be at least 1");
    }
    if args.threads == 0 {
        anyhow::bail!("--threads must be at least 1");
    }
    let gates = gates(&args)?;
    let driver: BotDriver = args.driver.parse().map_err(anyhow::Error::msg)?;
    let fingerprint = args.access.pinned_fingerprint()?;
    let tokens = tokens(&args)?;
    // The proxy lives as long as the run; the bots connect to it instead of the server.
    let proxy = match &args.netsim {
        Some(text) => {
            let spec: NetsimSpec = text.parse()?;
            Some(
                Proxy::start(ProxyConfig::new(args.access.server, spec))
                    .context("starting the --netsim proxy")?,
            )
        }
        None => None,
    };
    let config = SwarmConfig {
        server: proxy.as_ref().map_or(args.access.server, Proxy::local_addr),
        fingerprint,
        clients: args.clients,
        duration: args.duration,
        ramp: args.ramp,
        mix: args.mix,
        clients_per_endpoint: args.clients_per_endpoint,
        slow_read_rate: args.slow_read_rate,
        stall_after: args.stall_after,
        churn_every: args.churn_every,
        churn_leave: args.churn_leave,
        threads: args.threads,
        connect_timeout: args.connect_timeout,
        driver,
        ..SwarmConfig::default()
    };
    let live = Arc::new(LiveCounters::default());
    let done = Arc::new(AtomicBool::new(false));
    let progress = (!args.quiet).then(|| {
        let (live, done, clients) = (live.clone(), done.clone(), args.clients);
        std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || show_progress(&live, &done, clients))
    });
    let (cpu_before, wall_before) = (process_cpu_seconds(), Instant::now());
    let outcomes = run_swarm(config, tokens, live);
    let (cpu_after, wall_s) = (process_cpu_seconds(), wall_before.elapsed().as_secs_f64());
    done.store(true, Ordering::Relaxed);
    if let Some(Ok(thread)) = progress {
        let _ = thread.join();
    }
    let outcomes = outcomes?;
    let mut report = Report::new(&outcomes, args.duration, gates);
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        report.bots_process = Some(ProcessFigures::new(
            driver.name(),
            args.threads,
            after - before,
            wall_s,
            &outcomes,
        ));
    }
    if let Some(proxy) = proxy {
        let link = proxy.stop();
        report.netsim = Some(NetsimFigures {
            spec: args.netsim.clone().unwrap_or_default(),
            up: LinkFigures::from(&link.up),
            down: LinkFigures::from(&link.down),
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    Ok(report.verdict())
}

/// This process's CPU seconds so far (Linux; `None` elsewhere).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    cpu_seconds_from_proc_stat(&stat)
}

/// Progress on stderr: on a terminal one line rewritten four times a second, otherwise
/// a plain line every five seconds. Rates and delivery are over about the last two
/// seconds (bots report about once a second each, so a shorter window would flicker).
fn show_progress(live: &LiveCounters, done: &AtomicBool, clients: usize) {
    let tty = std::io::stderr().is_terminal();
    let every = if tty {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(5)
    };
    let window = Duration::from_secs(2);
    let started = Instant::now();
    let mut last_line = Instant::now();
    // (when, datagrams, bytes, ticks complete, ticks expected)
    let mut samples: VecDeque<(Instant, [u64; 4])> = VecDeque::new();
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        let counters = [
            live.datagrams.load(Ordering::Relaxed),
            live.bytes.load(Ordering::Relaxed),
            live.ticks_complete.load(Ordering::Relaxed),
            live.ticks_expected.load(Ordering::Relaxed),
        ];
        samples.push_back((now, counters));
        while samples.len() > 2 && now - samples[1].0 >= window {
            samples.pop_front();
        }
        if now - last_line < every {
            continue;
        }
        last_line = now;
        let (then, old) = samples[0];
        let seconds = (now - then).as_secs_f64().max(1e-3);
        let delta = |i: usize| counters[i].saturating_sub(old[i]);
        let delivery = match delta(3) {
            0 => "-".to_string(),
            expected => format!("{:.4}", delta(2) as f64 / expected as f64),
        };
        let line = format!(
            "[{:6.1}s] connected {}/{} (connect failures {}, finished {}) | in {:.0} datagrams/s, {:.1} MB/s | delivery {}",
            started.elapsed().as_secs_f64(),
            live.connected.load(Ordering::Relaxed),
            clients,
            live.connect_failures.load(Ordering::Relaxed),
            live.finished.load(Ordering::Relaxed),
            delta(0) as f64 / seconds,
            delta(1) as f64 / seconds / 1e6,
            delivery,
        );
        let mut err = std::io::stderr().lock();
        let _ = if tty {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "tickcast-bots: {line}")
        };
        let _ = err.flush();
    }
    if tty {
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
}

fn ms(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |v| format!("{v:.2} ms"))
}

fn ratio(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |v| format!("{v:.4}"))
}

fn print_summary(s: &Summary) {
    println!(
        "  delivery       {:.4} ({} of {} snapshots complete); per client min {}, p1 {}, p50 {}",
        s.delivery_ratio,
        s.snapshots_complete,
        s.snapshots_expected,
        ratio(s.delivery_min),
        ratio(s.delivery_p1),
        ratio(s.delivery_p50)
    );
    println!(
        "  chunks         {} received, {} lost",
        s.chunks_received, s.chunks_lost
    );
    println!(
        "  latency        p50 {}, p99 {}   snapshot age p50 {}, p99 {}",
        ms(s.latency_ms_p50),
        ms(s.latency_ms_p99),
        ms(s.snapshot_age_ms_p50),
        ms(s.snapshot_age_ms_p99)
    );
    println!(
        "  settled        latency p50 {}, p99 {}   (chunks 5 s or more into their session)",
        ms(s.settled_latency_ms_p50),
        ms(s.settled_latency_ms_p99)
    );
    println!(
        "  staleness      p50 {}, p99 {}   (age of the newest state of each entity in view)",
        ms(s.staleness_ms_p50),
        ms(s.staleness_ms_p99)
    );
    println!(
        "  rtt            p50 {}, p99 {}   connect p50 {}, p99 {}",
        ms(s.rtt_ms_p50),
        ms(s.rtt_ms_p99),
        ms(s.connect_ms_p50),
        ms(s.connect_ms_p99)
    );
    println!(
        "  bandwidth      {:.0} B/s datagrams in per client (UDP {:.0} in, {:.0} out)",
        s.bytes_in_per_client_per_s,
        s.udp_bytes_in_per_client_per_s,
        s.udp_bytes_out_per_client_per_s
    );
    println!(
        "  sessions       {} disconnects, {} reconnects",
        s.disconnects, s.reconnects
    );
    for (reason, count) in &s.errors {
        println!("  error          {reason}: {count}");
    }
}

fn print_human(report: &Report) {
    let all = &report.overall;
    println!(
        "tickcast-bots: {} of {} clients connected for {:.1} s at {} Hz; {} entities in the last snapshot",
        all.connected, all.clients, all.duration_s, all.tick_rate, all.entities_last_snapshot
    );
    print_summary(all);
    if report.groups.len() > 1 {
        for (name, group) in &report.groups {
            println!(
                "{name} ({} of {} connected)",
                group.connected, group.clients
            );
            print_summary(group);
        }
    }
    if let Some(netsim) = &report.netsim {
        println!("netsim {}", netsim.spec);
        for (name, link) in [("up  ", &netsim.up), ("down", &netsim.down)] {
            println!(
                "  {name}           {} packets: {} delivered, {} lost, {} queue-dropped, {} mtu-dropped, {} duplicated, {} reordered; queue peak {} B",
                link.packets,
                link.delivered,
                link.lost,
                link.queue_dropped,
                link.mtu_dropped,
                link.duplicated,
                link.reordered,
                link.queue_peak_bytes
            );
        }
    }
    if let Some(process) = &report.bots_process {
        println!(
            "bots process   {:.2} cores ({:.1} CPU s over {:.1} s, {} driver, {} threads); {} per client-tick",
            process.cores,
            process.cpu_s,
            process.wall_s,
            process.driver,
            process.threads,
            process
                .cpu_us_per_client_tick
                .map_or("-".to_string(), |us| format!("{us:.2} µs"))
        );
    }
    let gates = &report.gates;
    if gates.min_delivery.is_some() || gates.max_latency_p99_ms.is_some() {
        println!(
            "gates on {}: delivery {:.4}, latency p99 {}: {}",
            gates.judged_on.join("+"),
            gates.delivery_ratio,
            ms(gates.latency_ms_p99),
            if gates.passed { "passed" } else { "FAILED" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(flags: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("tickcast-bots").chain(flags.iter().copied()))
    }

    #[test]
    fn a_bad_mix_is_refused_with_its_reason() {
        let error = args(&["--mix", "walk=80,jog=20"]).unwrap_err().to_string();
        assert!(error.contains("unknown behaviour `jog`"), "{error}");
        let error = args(&["--mix", "walk=80,idle=ten"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("weight of idle is `ten`"), "{error}");
    }

    #[test]
    fn gates_need_sane_thresholds_and_a_healthy_client() {
        let ok = args(&["--min-delivery", "0.99", "--max-latency-p99-ms", "20"]).unwrap();
        assert_eq!(
            gates(&ok).unwrap(),
            Gates {
                min_delivery: Some(0.99),
                max_latency_p99_ms: Some(20.0)
            }
        );
        for bad in [
            &["--min-delivery", "1.5"][..],
            &["--max-latency-p99-ms", "0"],
            &["--max-latency-p99-ms", "NaN"],
            &["--mix", "stall=1,slow=1", "--min-delivery", "0.9"],
        ] {
            assert!(gates(&args(bad).unwrap()).is_err(), "{bad:?}");
        }
        // No gate: any mix runs.
        assert!(gates(&args(&["--mix", "stall=1"]).unwrap()).is_ok());
    }

    #[test]
    fn a_bad_netsim_spec_is_refused_with_its_reason() {
        let error = args(&["--netsim", "loss=5"]).unwrap_err().to_string();
        assert!(error.contains("loss: `5` is not a percentage"), "{error}");
        let ok = args(&["--netsim", "loss=5%,delay=40ms"]).unwrap();
        assert_eq!(ok.netsim.as_deref(), Some("loss=5%,delay=40ms"));
    }

    #[test]
    fn a_token_file_excludes_minting_flags() {
        assert!(args(&["--token-file", "t.txt", "--client-id-base", "5"]).is_err());
        assert!(args(&["--token-file", "t.txt"]).is_ok());
    }
}
