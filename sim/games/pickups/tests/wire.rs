//! Pickups over a real socket, to a client that knows no game (protocol v3): the client
//! library reads pickups' schema after the Welcome, finds its runner in the snapshots
//! through it and steers it with inputs built from the schema's roles (`ByRoles`, what
//! the bots send). Nothing of this crate but the server's game is used by the client.

use std::collections::BTreeSet;
use std::time::Duration;

use tickcast_clients::track::{ChunkOutcome, TickAssembler, View};
use tickcast_clients::{ByRoles, InputHistory, Intent, client_endpoint, connect, mint_token};
use tickcast_net::NetConfig;
use tickcast_net::tls::{TOKEN_KEY_FILE, load_token_key};
use tickcast_pickups::Pickups;
use tickcast_server::{Server, ServerConfig};
use tickcast_shared::Tick;
use tickcast_shared::chunk::{VIEW_ALL, datagram_messages};
use tickcast_sim::SimConfig;

#[test]
fn a_client_that_knows_no_game_reads_pickups_and_steers_its_runner() {
    let data_dir = std::env::temp_dir().join(format!("pickups-wire-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let config = ServerConfig {
        net: NetConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.clone(),
            view_cells: VIEW_ALL,
            ..NetConfig::default()
        },
        sim: SimConfig {
            arena_width: 400,
            arena_height: 400,
            ..SimConfig::default()
        },
        record: None,
        ..ServerConfig::default()
    };
    let server = Server::start_with(config, Pickups::default()).expect("the server starts");
    let (addr, fingerprint) = (server.local_addr(), server.fingerprint());
    let key = load_token_key(&data_dir.join(TOKEN_KEY_FILE)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (game, positions, kinds, intent) = runtime.block_on(async {
        let endpoint = client_endpoint(addr, fingerprint).unwrap();
        let token = mint_token(&key, 9, Duration::from_secs(60)).unwrap();
        let session = connect(&endpoint, addr, token, Duration::from_secs(5))
            .await
            .expect("admitted, with the game's schema after the Welcome");
        let schema = session.schema().clone();
        let own = session.welcome().entity;
        let middle = f64::from(session.welcome().arena_width) / 2.0;
        let view = View::from_welcome(session.welcome());
        let mut assembler = TickAssembler::new(view, schema.clone(), true);
        let mut history = InputHistory::default();
        let mut intent = Intent::default();
        let (mut positions, mut kinds) = (Vec::new(), BTreeSet::new());
        let mut ticker = tokio::time::interval(Duration::from_millis(33));
        let end = tokio::time::Instant::now() + Duration::from_millis(2500);
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(end) => break,
                _ = ticker.tick() => {
                    let ack = assembler.delivery().last_tick.unwrap_or(Tick::ZERO);
                    let datagram = history.push_intent(&schema, &mut ByRoles, intent, ack);
                    session.send_input(&datagram).expect("input datagram sent");
                }
                datagram = session.next_datagram() => {
                    let bytes = datagram.expect("connection stays up");
                    for message in datagram_messages(&bytes) {
                        let message = message.expect("server datagrams parse");
                        if let ChunkOutcome::Completed { .. } = assembler.on_message(&message) {
                            let records = assembler.complete_records();
                            kinds.extend(records.iter().map(|r| r.kind));
                            let position = records
                                .iter()
                                .find(|r| r.net_id == own)
                                .and_then(|r| r.view(&schema))
                                .expect("a complete tick holds the own runner")
                                .position();
                            if positions.is_empty() {
                                intent.move_x = if position.0 < middle { 127 } else { -127 };
                            }
                            positions.push(position);
                        }
                    }
                }
            }
        }
        session.close();
        (schema.game().to_owned(), positions, kinds, intent)
    });
    server.stop();
    let _ = std::fs::remove_dir_all(&data_dir);

    assert_eq!(game, "pickups");
    assert!(
        positions.len() >= 30,
        "only {} complete ticks",
        positions.len()
    );
    assert!(kinds.len() >= 2, "kinds seen: {kinds:?}");
    let (first, last) = (positions[0], positions[positions.len() - 1]);
    let moved = (last.0 - first.0) * f64::from(intent.move_x.signum());
    assert!(
        moved > 5.0,
        "the runner moved {moved} world units the way it was steered, {first:?} → {last:?}"
    );
}
