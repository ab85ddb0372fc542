//! The bot swarm (`tickcast_bots::swarm`) against a real server (sim + net) on
//! 127.0.0.1: every behaviour of a mix plays, the report groups them, and the gates
//! give the exit codes `tickcast-bots` returns. Bounded: about 10 s in all.

use std::sync::Arc;
use std::time::Duration;

use tickcast_bots::report::{Gates, Report, Verdict};
use tickcast_bots::swarm::{LiveCounters, SwarmConfig, TokenSource, run_swarm};
use tickcast_clients::mint_token;
use tickcast_net::tls::{TOKEN_KEY_FILE, load_token_key};

use crate::common::{start_server, temp_data_dir};

#[test]
fn a_mixed_swarm_is_reported_per_behaviour_and_judged_on_walk_and_idle() {
    let _machine = crate::common::one_load_test_at_a_time();
    let data_dir = temp_data_dir("bots-mix");
    let server = start_server(&data_dir);
    let key = load_token_key(&data_dir.join(TOKEN_KEY_FILE)).unwrap();
    let config = SwarmConfig {
        server: server.local_addr(),
        fingerprint: server.fingerprint(),
        clients: 10,
        duration: Duration::from_secs(3),
        ramp: Duration::from_millis(300),
        mix: "walk=3,idle=3,stall=1,slow=1,churn=2".parse().unwrap(),
        stall_after: Duration::from_millis(300),
        slow_read_rate: 20,
        churn_every: Duration::from_secs(1),
        ..SwarmConfig::default()
    };
    let live = Arc::new(LiveCounters::default());
    let tokens = TokenSource::Mint {
        key,
        first_client_id: 9_000,
        ttl: Duration::from_secs(60),
    };
    let outcomes = run_swarm(config, tokens, live.clone()).expect("the swarm runs");
    assert_eq!(outcomes.len(), 10);

    let gates = Gates {
        min_delivery: Some(0.9),
        max_latency_p99_ms: None,
    };
    let report = Report::new(&outcomes, Duration::from_secs(3), gates);
    let groups: Vec<&str> = report.groups.keys().copied().collect();
    assert_eq!(groups, ["churn", "idle", "slow", "stall", "walk"]);
    assert_eq!(report.overall.connected, 10, "{:?}", report.overall.errors);
    assert_eq!(report.overall.disconnects, 0, "{:?}", report.overall.errors);
    assert_eq!(report.groups["walk"].clients, 3);
    assert_eq!(report.groups["churn"].clients, 2);
    // Every walk and idle client saw the world: 30 NPCs and the players.
    assert!(report.groups["walk"].entities_last_snapshot >= 30);
    assert!(report.groups["walk"].delivery_min.is_some());
    // A churning client reconnects with a fresh token each second.
    assert!(report.groups["churn"].reconnects >= 2, "{report:#?}");
    // A stalled client stopped reading after 0.3 s of 3 s: most ticks never reached it,
    // and its picture of the world aged while the others' stayed fresh.
    let stall = &report.groups["stall"];
    assert!(stall.delivery_ratio < 0.5, "{stall:#?}");
    assert!(stall.snapshot_age_ms_p99 > report.groups["walk"].snapshot_age_ms_p99);
    // A slow client reads 20 of the ~300 chunks a second it is sent.
    assert!(report.groups["slow"].delivery_ratio < 0.5);
    // The gate looks past them at walk and idle.
    assert_eq!(report.gates.judged_on, ["walk", "idle"]);
    assert_eq!(report.verdict(), Verdict::Pass, "{:#?}", report.gates);
    assert!(report.gates.delivery_ratio >= 0.9);
    assert!(report.overall.rtt_ms_p50.is_some());
    assert!(report.overall.udp_bytes_in_per_client_per_s > 0.0);
    assert_eq!(report.overall.errors.get("malformed_chunk"), None);

    // The same outcomes against a latency gate no network meets: exit code 1.
    let impossible = Gates {
        min_delivery: None,
        max_latency_p99_ms: Some(0.000_001),
    };
    let verdict = Report::new(&outcomes, Duration::from_secs(3), impossible).verdict();
    assert_eq!(verdict.exit_code(), 1, "{verdict:?}");

    // The live counters saw the same run.
    assert_eq!(live.finished.load(std::sync::atomic::Ordering::Relaxed), 10);
    assert_eq!(live.connected.load(std::sync::atomic::Ordering::Relaxed), 0);

    server.stop();
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[test]
fn bots_connect_with_listed_tokens_and_a_wrong_fingerprint_could_not_run() {
    let data_dir = temp_data_dir("bots-tokens");
    let server = start_server(&data_dir);
    let key = load_token_key(&data_dir.join(TOKEN_KEY_FILE)).unwrap();
    let tokens: Vec<_> = (0..3)
        .map(|i| mint_token(&key, 500 + i, Duration::from_secs(60)).unwrap())
        .collect();
    let config = SwarmConfig {
        server: server.local_addr(),
        fingerprint: server.fingerprint(),
        clients: 3,
        duration: Duration::from_secs(1),
        ramp: Duration::ZERO,
        ..SwarmConfig::default()
    };
    let outcomes = run_swarm(
        config.clone(),
        TokenSource::List(tokens.clone()),
        Arc::default(),
    )
    .expect("the swarm runs");
    let report = Report::new(&outcomes, config.duration, Gates::default());
    assert_eq!(report.overall.connected, 3, "{:?}", report.overall.errors);
    assert_eq!(report.verdict().exit_code(), 0);

    // The same tokens again: each nonce admits once, so the server refuses them all
    // and nothing could be judged.
    let outcomes = run_swarm(config.clone(), TokenSource::List(tokens), Arc::default())
        .expect("the swarm runs");
    let report = Report::new(&outcomes, config.duration, Gates::default());
    assert_eq!(report.overall.connected, 0);
    assert_eq!(
        report.overall.errors.get("connect:rejected:token_replayed"),
        Some(&3),
        "{:?}",
        report.overall.errors
    );
    assert_eq!(report.verdict().exit_code(), 2);

    // A certificate that is not the pinned one: refused in the handshake.
    let wrong = SwarmConfig {
        fingerprint: [0xab; 32],
        clients: 2,
        ..config
    };
    let tokens = TokenSource::Mint {
        key,
        first_client_id: 600,
        ttl: Duration::from_secs(60),
    };
    let outcomes = run_swarm(wrong, tokens, Arc::default()).expect("the swarm runs");
    let report = Report::new(&outcomes, Duration::from_secs(1), Gates::default());
    assert_eq!(report.overall.connected, 0);
    assert!(matches!(report.verdict(), Verdict::CouldNotRun(_)));

    server.stop();
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// A game's own input hook: counts the sessions it serves and the commands it builds,
/// and otherwise drives the game by its schema's roles.
#[derive(Debug)]
struct CountingMapper {
    commands: Arc<std::sync::atomic::AtomicUsize>,
}

impl tickcast_clients::InputMapper for CountingMapper {
    fn values(
        &mut self,
        schema: &tickcast_shared::schema::Schema,
        intent: tickcast_clients::Intent,
        values: &mut [i64],
    ) {
        self.commands
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tickcast_clients::ByRoles.values(schema, intent, values);
    }
}

#[test]
fn a_games_input_hook_builds_every_bots_commands() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let data_dir = temp_data_dir("bots-hook");
    let server = start_server(&data_dir);
    let key = load_token_key(&data_dir.join(TOKEN_KEY_FILE)).unwrap();
    let (sessions, commands) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let inputs = {
        let (sessions, commands) = (sessions.clone(), commands.clone());
        tickcast_bots::swarm::Inputs::new(move || {
            sessions.fetch_add(1, Ordering::Relaxed);
            Box::new(CountingMapper {
                commands: commands.clone(),
            })
        })
    };
    let config = SwarmConfig {
        server: server.local_addr(),
        fingerprint: server.fingerprint(),
        clients: 3,
        duration: Duration::from_secs(1),
        ramp: Duration::ZERO,
        inputs,
        ..SwarmConfig::default()
    };
    let tokens = TokenSource::Mint {
        key,
        first_client_id: 7_000,
        ttl: Duration::from_secs(60),
    };
    let outcomes = run_swarm(config, tokens, Arc::default()).expect("the swarm runs");
    assert!(outcomes.iter().all(|o| o.connected), "{outcomes:?}");
    assert_eq!(
        sessions.load(Ordering::Relaxed),
        3,
        "one mapper per session"
    );
    // About 30 inputs a second each for 1 s.
    assert!(commands.load(Ordering::Relaxed) >= 3 * 15, "{commands:?}");
    server.stop();
    let _ = std::fs::remove_dir_all(&data_dir);
}
