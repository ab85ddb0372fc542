//! A handshake flood while players play: thousands of QUIC Initials from many source
//! ports that never go on, plus connections that finish the QUIC handshake and never
//! send a Hello. The players keep their snapshots; the server answers the flood with
//! stateless Retries once handshakes pile up, so the state it holds stays bounded; and
//! when the flood is over every handshake is gone. `scripts/faults.py flood` runs the
//! large version against a release server.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tickcast_bots::report::{Gates, Report};
use tickcast_bots::swarm::{SwarmConfig, TokenSource, run_swarm};
use tickcast_net::tls::{TOKEN_KEY_FILE, load_token_key};
use tickcast_server::Server;
use tickcast_tools::flood::{InitialFlood, half_open, send_initials};

use crate::common::{temp_data_dir, test_config};

const PLAYERS: usize = 4;
// Small for a debug build sharing 2 cores with the other tests: 1,000 Initials at 1,000
// a second still far outnumber the Retry threshold (16); `scripts/faults.py flood`
// sends 100,000 at 5,000 a second to a release server.
const INITIALS: usize = 1_000;
const HALF_OPEN: usize = 20;

#[test]
fn players_keep_their_snapshots_through_a_handshake_flood_and_its_state_stays_bounded() {
    let _machine = crate::common::one_load_test_at_a_time();
    let data_dir = temp_data_dir("flood");
    let mut config = test_config(&data_dir);
    // Half-open connections are closed a second after their handshake; handshakes that
    // never finish (the flood's Initials that got one) two seconds after their first packet.
    config.net.hello_timeout = Duration::from_secs(1);
    config.net.handshake_timeout = Duration::from_secs(2);
    let retry_from = config.net.retry_from_handshakes;
    let server = Server::start(config).expect("server starts");
    let (addr, fingerprint) = (server.local_addr(), server.fingerprint());
    let key = load_token_key(&data_dir.join(TOKEN_KEY_FILE)).unwrap();

    let players = std::thread::spawn(move || {
        let config = SwarmConfig {
            server: addr,
            fingerprint,
            clients: PLAYERS,
            duration: Duration::from_secs(4),
            ramp: Duration::ZERO,
            ..SwarmConfig::default()
        };
        let tokens = TokenSource::Mint {
            key,
            first_client_id: 1,
            ttl: Duration::from_secs(60),
        };
        run_swarm(config, tokens, Arc::default()).expect("the swarm runs")
    });
    // The flood starts once the players are in, and is over well before they leave.
    std::thread::sleep(Duration::from_millis(700));
    let initials = std::thread::spawn(move || {
        send_initials(&InitialFlood {
            server: addr,
            initials: INITIALS,
            rate_per_s: 1_000,
            source_ports: 64,
        })
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let half = runtime
        .block_on(half_open(
            addr,
            fingerprint,
            HALF_OPEN,
            Duration::from_secs(3),
        ))
        .expect("half-open connections");
    let sent = initials.join().unwrap().expect("the flood runs");
    assert_eq!(sent.sent, INITIALS);

    let outcomes = players.join().unwrap();
    // 0.95, not the drill's 0.99: four players over four seconds are ~470 ticks, and on
    // a loaded 2-core machine a debug build loses a handful to the scheduler with or
    // without a flood (seen: 0.983 once in three runs beside a fuzzing job). The release
    // drill, `scripts/faults.py flood`, holds 200 players to 0.99.
    let gates = Gates {
        min_delivery: Some(0.95),
        max_latency_p99_ms: None,
    };
    let report = Report::new(&outcomes, Duration::from_secs(4), gates);
    assert_eq!(
        report.overall.connected, PLAYERS,
        "{:?}",
        report.overall.errors
    );
    assert!(
        report.gates.passed,
        "delivery {} through the flood: {:?}",
        report.gates.delivery_ratio, report.gates.failures
    );

    let counters = server.net_counters().clone();
    let get = |pick: fn(&tickcast_net::NetCounters) -> &std::sync::atomic::AtomicU64| {
        pick(&counters).load(Ordering::Relaxed)
    };
    // Every half-open connection finished its QUIC handshake (after a Retry, its
    // address was real) and was closed for sending no Hello.
    assert_eq!(half.established, HALF_OPEN, "{half:?}");
    assert!(get(|c| &c.hello_timeouts) >= HALF_OPEN as u64);
    // Most Initials got a stateless Retry, never a handshake.
    assert!(
        get(|c| &c.handshakes_retried) > (INITIALS / 2) as u64,
        "{} retried",
        get(|c| &c.handshakes_retried)
    );
    // The state held at once: at most `retry_from` handshakes from addresses never
    // validated, plus the ones that proved their address (half-open and players).
    let peak = get(|c| &c.handshaking_peak) as usize;
    assert!(
        peak <= retry_from + HALF_OPEN + PLAYERS,
        "{peak} handshakes at once"
    );
    // And when it is over, none is left.
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(|c| &c.handshaking) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(|c| &c.handshaking), 0);
    server.stop();
    let _ = std::fs::remove_dir_all(&data_dir);
}
