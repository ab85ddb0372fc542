//! The Agones SDK client against the fake sidecar (`tickcast_tools::fake_agones`, written
//! from Agones' REST reference), with a real server and real QUIC clients: the sequence
//! of calls, health that follows the loop, the players Counter following clients, and a
//! broken sidecar that costs the players nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tickcast_clients::track::{ChunkOutcome, TickAssembler, View};
use tickcast_clients::{Session, client_endpoint, connect, mint_token};
use tickcast_net::tls::{TOKEN_KEY_FILE, fingerprint_hex, load_token_key};
use tickcast_server::Server;
use tickcast_server::agones::{AgonesConfig, GameServerState};
use tickcast_shared::Tick;
use tickcast_shared::chunk::datagram_messages;
use tickcast_tools::fake_agones::{Behaviour, FakeSidecar, GameServerModel, RecordedCall};

use crate::common::{scrape_until, temp_data_dir, test_config};

/// A fake sidecar on a free port.
pub fn fake_sidecar() -> FakeSidecar {
    FakeSidecar::start(
        "127.0.0.1:0".parse().unwrap(),
        GameServerModel::new("gs-test", "127.0.0.1", 4433),
    )
    .expect("the fake sidecar starts")
}

/// A test server talking to `fake`, pinging health every 100 ms.
pub fn start_with_agones(name: &str, fake: &FakeSidecar) -> (Server, std::path::PathBuf) {
    let data_dir = temp_data_dir(name);
    let mut config = test_config(&data_dir);
    config.agones = Some(AgonesConfig {
        sidecar: fake.addr(),
        health_interval: Duration::from_millis(100),
        call_timeout: Duration::from_millis(300),
    });
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    (Server::start(config).expect("server starts"), data_dir)
}

/// Polls `what` every 10 ms for up to 10 s.
pub fn wait_until(description: &str, mut what: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !what() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {description}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn routes(calls: &[RecordedCall]) -> Vec<String> {
    calls.iter().map(RecordedCall::route).collect()
}

fn count_of(calls: &[RecordedCall], route: &str) -> usize {
    calls.iter().filter(|c| c.route() == route).count()
}

/// The count in the last Counter update the fake accepted.
fn last_players_count(fake: &FakeSidecar) -> Option<String> {
    fake.calls()
        .iter()
        .rev()
        .find(|c| c.route() == "PATCH /v1beta1/counters/players")
        .and_then(|c| c.json()["count"].as_str().map(str::to_owned))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_server_annotates_its_fingerprint_then_marks_ready_and_follows_allocation() {
    let fake = fake_sidecar();
    let (server, _dir) = start_with_agones("agones-ready", &fake);
    wait_until("the sidecar hears Ready", || {
        count_of(&fake.calls(), "POST /ready") == 1
    });
    assert!(server.progress().ticks() > 0, "Ready before the first tick");
    let calls = fake.calls();
    let lifecycle: Vec<String> = routes(&calls)
        .into_iter()
        .filter(|r| !r.starts_with("GET "))
        .collect();
    assert_eq!(
        &lifecycle[..2],
        ["PUT /metadata/annotation", "POST /ready"],
        "the fingerprint is on the GameServer before anyone can allocate it: {lifecycle:?}"
    );
    let game_server = fake.game_server();
    assert_eq!(
        game_server.annotations["agones.dev/sdk-tickcast-fingerprint"],
        fingerprint_hex(&server.fingerprint())
    );
    // The Counter's capacity is what the server admits.
    let capacity = server.memory_plan().clients.min(2000) as i64;
    wait_until("the Counter has its capacity", || {
        fake.game_server().counters["players"].capacity == capacity
    });
    // The watch follows the GameServer: Ready, then an allocation.
    wait_until("the server sees Ready", || {
        server.agones_status().state() == GameServerState::Ready
    });
    fake.set_state("Allocated");
    wait_until("the server sees the allocation", || {
        server.agones_status().state() == GameServerState::Allocated
    });
    // ... and so does a scrape: an alert needs no log line.
    let metrics = server.metrics_addr().expect("metrics endpoint");
    let text = scrape_until(metrics, r#"tickcast_agones_state{state="Allocated"}"#, 1.0);
    assert!(
        text.contains(r#"tickcast_agones_state{state="Ready"} 0"#),
        "{text}"
    );
    assert_eq!(
        count_of(&fake.calls(), "POST /ready"),
        1,
        "Ready is sent once"
    );
    server.stop();
}

#[test]
fn health_pings_stop_while_the_loop_is_held_and_resume_when_it_runs() {
    let fake = fake_sidecar();
    let (server, _dir) = start_with_agones("agones-health", &fake);
    let pings = || count_of(&fake.calls(), "POST /health");
    wait_until("three health pings", || pings() >= 3);

    server.progress().hold(true);
    // A ping may be in flight as the hold lands; after that none may come, for many
    // intervals of 100 ms.
    std::thread::sleep(Duration::from_millis(300));
    let held = pings();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(pings(), held, "a health ping while the loop was held");

    server.progress().hold(false);
    wait_until("pings resume", || pings() >= held + 2);
    server.stop();
}

#[test]
fn the_players_counter_follows_clients_joining_and_leaving() {
    let fake = fake_sidecar();
    let (server, data_dir) = start_with_agones("agones-counter", &fake);
    let key = load_token_key(&data_dir.join(TOKEN_KEY_FILE)).unwrap();
    let (addr, fingerprint) = (server.local_addr(), server.fingerprint());
    wait_until("the first Counter update", || {
        last_players_count(&fake).as_deref() == Some("0")
    });
    let runtime = runtime();
    let endpoint = runtime.block_on(async { client_endpoint(addr, fingerprint).unwrap() });
    let mut sessions: Vec<Session> = runtime.block_on(async {
        let mut sessions = Vec::new();
        for client_id in [11u64, 12, 13] {
            let token = mint_token(&key, client_id, Duration::from_secs(60)).unwrap();
            sessions.push(
                connect(&endpoint, addr, token, Duration::from_secs(5))
                    .await
                    .expect("admitted"),
            );
        }
        sessions
    });
    wait_until("the Counter says 3", || {
        last_players_count(&fake).as_deref() == Some("3")
    });
    for session in sessions.drain(1..) {
        session.close();
    }
    wait_until("the Counter says 1", || {
        last_players_count(&fake).as_deref() == Some("1")
    });
    sessions[0].close();
    wait_until("the Counter says 0", || {
        last_players_count(&fake).as_deref() == Some("0")
    });
    assert_eq!(fake.game_server().counters["players"].count, 0);
    drop(sessions);
    runtime.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    });
    server.stop();
}

/// Reads datagrams for `run_for`; returns the ticks completed, in order of completion.
async fn completed_ticks(session: Arc<Session>, run_for: Duration) -> Vec<Tick> {
    let mut assembler = TickAssembler::new(
        View::from_welcome(session.welcome()),
        session.schema().clone(),
        true,
    );
    let mut ticks = Vec::new();
    let end = tokio::time::Instant::now() + run_for;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(end) => return ticks,
            datagram = session.next_datagram() => {
                let bytes = datagram.expect("the connection stays up");
                for message in datagram_messages(&bytes) {
                    let message = message.expect("server datagrams parse");
                    if let ChunkOutcome::Completed { tick, .. } = assembler.on_message(&message) {
                        ticks.push(tick);
                    }
                }
            }
        }
    }
}

#[test]
fn a_sidecar_that_answers_500_or_hangs_costs_the_players_nothing() {
    for behaviour in [Behaviour::Fail500, Behaviour::Hang] {
        let fake = fake_sidecar();
        fake.set_behaviour(behaviour);
        let (server, data_dir) = start_with_agones("agones-broken", &fake);
        let key = load_token_key(&data_dir.join(TOKEN_KEY_FILE)).unwrap();
        let (addr, fingerprint) = (server.local_addr(), server.fingerprint());
        let runtime = runtime();
        let seen = runtime.block_on(async {
            let endpoint = client_endpoint(addr, fingerprint).unwrap();
            let mut tasks = Vec::new();
            for client_id in [21u64, 22] {
                let token = mint_token(&key, client_id, Duration::from_secs(60)).unwrap();
                let session = connect(&endpoint, addr, token, Duration::from_secs(5))
                    .await
                    .expect("admitted while the sidecar misbehaves");
                tasks.push(tokio::spawn(completed_ticks(
                    Arc::new(session),
                    Duration::from_secs(2),
                )));
            }
            let mut seen = Vec::new();
            for task in tasks {
                seen.push(task.await.unwrap());
            }
            endpoint.close(0u32.into(), b"done");
            seen
        });
        for (client, ticks) in seen.iter().enumerate() {
            let (first, last) = (ticks[0], *ticks.last().unwrap());
            let span = last.wrapping_since(first) as usize + 1;
            assert!(
                ticks.len() * 100 >= span * 95,
                "{behaviour:?}, client {client}: {} of {span} ticks complete",
                ticks.len()
            );
            assert!(span >= 30, "{behaviour:?}: only {span} ticks in 2 s");
        }
        let failed = server
            .agones_status()
            .calls_failed
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(failed > 0, "{behaviour:?}: the failures are counted");
        assert!(
            !fake.calls().is_empty(),
            "{behaviour:?}: the server did call the sidecar"
        );
        assert_ne!(
            server.agones_status().state(),
            GameServerState::Ready,
            "{behaviour:?}: no Ready came back"
        );
        server.stop();
    }
}
