//! Churn: clients join and leave over and over, half of them politely (a close) and half
//! by vanishing (their socket falls silent, so the server has to time them out). When
//! the churn is over the server holds nothing for them: no peer, no handshake, no
//! player in the world, and, once their tokens have expired, no remembered nonce.
//! `scripts/faults.py churn` runs 2,000 cycles against a release server and watches
//! its RSS.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tickcast_clients::vanish::silenceable_endpoint;
use tickcast_clients::{EndpointOptions, Session, client_endpoint, connect, mint_token};
use tickcast_net::tls::{TOKEN_KEY_FILE, load_token_key};
use tickcast_net::{DisconnectReason, NetCounters};
use tickcast_server::{Server, ServerConfig};
use tickcast_shared::token::ConnectToken;

use crate::common::{temp_data_dir, test_config};

const CYCLES: usize = 100;
/// Clients connected at once: each wave is half polite, half vanishing.
const WAVE: usize = 10;
/// Tokens live this long, so their nonces expire within the test.
const TOKEN_TTL: Duration = Duration::from_secs(2);

/// A server that times out a silent peer after a second (instead of 10 s), so the
/// vanished clients are gone within the test.
fn churn_config(data_dir: &Path) -> ServerConfig {
    let mut config = test_config(data_dir);
    config.net.idle_timeout = Duration::from_secs(1);
    config
}

/// Waits for the session's first datagrams: the server has joined it and is sending.
async fn receive_a_few(session: &Session) {
    for _ in 0..3 {
        session
            .next_datagram()
            .await
            .expect("a joined client receives snapshots");
    }
}

async fn polite_cycle(
    endpoint: tickcast_clients::quinn::Endpoint,
    server: SocketAddr,
    token: ConnectToken,
) {
    let session = connect(&endpoint, server, token, Duration::from_secs(10))
        .await
        .expect("admitted");
    receive_a_few(&session).await;
    session.close();
}

async fn vanishing_cycle(server: SocketAddr, fingerprint: [u8; 32], token: ConnectToken) {
    let (endpoint, silencer) =
        silenceable_endpoint(server, fingerprint, &EndpointOptions::default()).unwrap();
    let session = connect(&endpoint, server, token, Duration::from_secs(10))
        .await
        .expect("admitted");
    receive_a_few(&session).await;
    // Gone without a word: the close quinn sends on drop never leaves the socket.
    silencer.silence();
    drop(session);
    drop(endpoint);
}

/// Polls `done` every 50 ms for at most `limit`; true if it came true.
fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

#[test]
fn after_100_joins_and_leaves_half_of_them_vanishing_the_server_holds_nothing_for_them() {
    let _machine = crate::common::one_load_test_at_a_time();
    let data_dir = temp_data_dir("churn");
    let server = Server::start(churn_config(&data_dir)).expect("server starts");
    let key = load_token_key(&data_dir.join(TOKEN_KEY_FILE)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let endpoint = client_endpoint(server.local_addr(), server.fingerprint()).unwrap();
        let (addr, fingerprint) = (server.local_addr(), server.fingerprint());
        for wave in 0..CYCLES / WAVE {
            let mut cycles = tokio::task::JoinSet::new();
            for i in 0..WAVE {
                // Polite clients' ids come back wave after wave (reconnects of the same
                // players); a vanished id never does, so it is timed out rather than
                // replaced by its own reconnect.
                let cycle = (wave * WAVE + i) as u64;
                let id = if i % 2 == 0 {
                    cycle % 25
                } else {
                    1_000 + cycle
                };
                let token = mint_token(&key, id, TOKEN_TTL).unwrap();
                if i % 2 == 0 {
                    cycles.spawn(polite_cycle(endpoint.clone(), addr, token));
                } else {
                    cycles.spawn(vanishing_cycle(addr, fingerprint, token));
                }
            }
            while let Some(cycle) = cycles.join_next().await {
                cycle.expect("a cycle completes");
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    });

    let counters = server.net_counters().clone();
    let get = |pick: fn(&NetCounters) -> &std::sync::atomic::AtomicU64| {
        pick(&counters).load(Ordering::Relaxed)
    };
    // Every vanished client is timed out (a second of silence), every polite one leaves.
    let settled = eventually(Duration::from_secs(20), || {
        get(|c| &c.peers) == 0 && get(|c| &c.handshaking) == 0 && server.status().clients == 0
    });
    assert!(
        settled,
        "peers {}, handshaking {}, players {}",
        get(|c| &c.peers),
        get(|c| &c.handshaking),
        server.status().clients
    );
    assert_eq!(
        counters.disconnects_for(DisconnectReason::IdleTimeout),
        (CYCLES / 2) as u64,
        "each vanished client was timed out, no polite one"
    );
    assert_eq!(get(|c| &c.membership_events_lost), 0);
    assert_eq!(get(|c| &c.protocol_errors), 0);
    // Every token expires within TOKEN_TTL of its mint: the sweep forgets its nonce.
    let forgotten = eventually(Duration::from_secs(10), || {
        get(|c| &c.nonces_remembered) == 0
    });
    assert!(
        forgotten,
        "{} nonces remembered",
        get(|c| &c.nonces_remembered)
    );

    // And the server is none the worse: a new client joins and is served.
    runtime.block_on(async {
        let endpoint = client_endpoint(server.local_addr(), server.fingerprint()).unwrap();
        let token = mint_token(&key, 7_777, TOKEN_TTL).unwrap();
        polite_cycle(endpoint.clone(), server.local_addr(), token).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    });
    server.stop();
    let _ = std::fs::remove_dir_all(&data_dir);
}
