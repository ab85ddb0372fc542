//! End to end: a real server (sim + net) on 127.0.0.1, real QUIC clients.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tickcast_clients::track::{ChunkOutcome, TickAssembler, View};
use tickcast_clients::{InputHistory, Session, client_endpoint, connect, mint_token};
use tickcast_net::tls::{TOKEN_KEY_FILE, load_token_key};
use tickcast_shared::Tick;
use tickcast_shared::chunk::{KIND_PLAYER, datagram_messages};
use tickcast_shared::msg::InputCmd;

use crate::common::{start_server, temp_data_dir, test_config};
use tickcast_server::Server;

/// One complete tick as a client saw it: the players and their x positions.
#[derive(Debug, Clone)]
struct SeenTick {
    tick: Tick,
    players: BTreeMap<u32, u16>,
}

/// Reads chunks for `run_for`, sending an input every tick. A walking client picks its
/// direction once, from its first snapshot: toward the middle of the arena, so a wall
/// cannot stop it.
async fn run_client(session: Arc<Session>, walks: bool, run_for: Duration) -> Vec<SeenTick> {
    let own = session.welcome().entity;
    let middle = u16::try_from(u32::from(session.welcome().arena_width) * 64 / 2).unwrap();
    let mut move_x: i8 = 0;
    let mut assembler = TickAssembler::new(
        View::from_welcome(session.welcome()),
        session.schema().clone(),
        true,
    );
    let mut seen = Vec::new();
    let mut history = InputHistory::default();
    let mut ticker = tokio::time::interval(Duration::from_millis(33));
    let end = tokio::time::Instant::now() + run_for;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(end) => break,
            _ = ticker.tick() => {
                if walks && move_x == 0 && let Some(x) = seen.last().and_then(|t: &SeenTick| t.players.get(&own)) {
                    move_x = if *x < middle { 127 } else { -127 };
                }
                let cmd = InputCmd { move_x, ..Default::default() };
                let ack = assembler.delivery().last_tick.unwrap_or(Tick::ZERO);
                session.send_input(&history.push(cmd, ack)).expect("input datagram sent");
            }
            datagram = session.next_datagram() => {
                let bytes = datagram.expect("connection stays up");
                if let Some(tick) = completed_tick(&mut assembler, &bytes) {
                    let players = assembler
                        .complete_records()
                        .iter()
                        .filter(|r| r.kind == KIND_PLAYER)
                        .map(|r| (r.net_id, arena(r).x))
                        .collect();
                    seen.push(SeenTick { tick, players });
                }
            }
        }
    }
    seen
}

/// A kept record read as the arena's (these tests run the arena).
fn arena(record: &tickcast_shared::schema::Record) -> tickcast_shared::chunk::EntityRecord {
    tickcast_shared::chunk::EntityRecord::from_bytes(record.bytes()).expect("an arena record")
}

/// Feeds every message of one server datagram to `assembler`; the tick it completed.
fn completed_tick(assembler: &mut TickAssembler, bytes: &[u8]) -> Option<Tick> {
    let mut completed = None;
    for message in datagram_messages(bytes) {
        let message = message.expect("server datagrams parse");
        if let ChunkOutcome::Completed { tick, .. } = assembler.on_message(&message) {
            completed = Some(tick);
        }
    }
    completed
}

/// The clients' runtime: two workers, like the bots.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn longest_consecutive_run(ticks: &[Tick]) -> usize {
    let mut best = 0;
    let mut run = 0;
    for (i, tick) in ticks.iter().enumerate() {
        run = if i > 0 && *tick == ticks[i - 1].next() {
            run + 1
        } else {
            1
        };
        best = best.max(run);
    }
    best
}

#[test]
fn three_clients_receive_every_player_and_see_each_others_moves() {
    let data_dir = temp_data_dir("e2e");
    let server = start_server(&data_dir);
    let addr = server.local_addr();
    let fingerprint = server.fingerprint();
    let key = load_token_key(&data_dir.join(TOKEN_KEY_FILE)).unwrap();
    let runtime = runtime();

    let (views, entities, last_welcome_tick) = runtime.block_on(async {
        let endpoint = client_endpoint(addr, fingerprint).unwrap();
        let mut sessions = Vec::new();
        for client_id in [101, 102, 103] {
            let token = mint_token(&key, client_id, Duration::from_secs(60)).unwrap();
            let session = connect(&endpoint, addr, token, Duration::from_secs(5))
                .await
                .expect("admitted");
            assert_eq!(session.welcome().client_id, client_id);
            sessions.push(Arc::new(session));
        }
        let entities: Vec<u32> = sessions.iter().map(|s| s.welcome().entity).collect();
        let last_welcome_tick = sessions
            .iter()
            .map(|s| s.welcome().server_tick)
            .reduce(Tick::latest)
            .unwrap();

        // Client A walks; B and C stand still.
        let mut tasks = Vec::new();
        for (i, session) in sessions.iter().enumerate() {
            tasks.push(tokio::spawn(run_client(
                session.clone(),
                i == 0,
                Duration::from_secs(3),
            )));
        }
        let mut views = Vec::new();
        for task in tasks {
            views.push(task.await.unwrap());
        }
        for session in &sessions {
            session.close();
        }
        endpoint.wait_idle().await;
        (views, entities, last_welcome_tick)
    });

    for (client, view) in views.iter().enumerate() {
        let ticks: Vec<Tick> = view.iter().map(|t| t.tick).collect();
        assert!(
            ticks.windows(2).all(|w| w[1].is_after(w[0])),
            "client {client}: ticks in order"
        );
        assert!(
            longest_consecutive_run(&ticks) >= 45,
            "client {client} received too few consecutive ticks: {ticks:?}"
        );
        for seen in view.iter().filter(|t| t.tick.is_after(last_welcome_tick)) {
            for entity in &entities {
                assert!(
                    seen.players.contains_key(entity),
                    "client {client}, tick {}: player {entity} missing from {:?}",
                    seen.tick,
                    seen.players
                );
            }
        }
    }

    // Client B watches A's entity move the way A asked.
    let a = entities[0];
    let b_view = &views[1];
    let first_x = i32::from(
        b_view
            .iter()
            .find(|t| t.tick.is_after(last_welcome_tick))
            .unwrap()
            .players[&a],
    );
    let last_x = i32::from(b_view.last().unwrap().players[&a]);
    let moved = last_x - first_x;
    // 3 s at 48 units/s is 144 units (9,216 in 1/64 units); ask for a quarter of it.
    assert!(
        moved.abs() >= 2_500,
        "B saw A move {moved} (1/64 units) from {first_x} to {last_x}"
    );
    // The other players stood still.
    let c = entities[2];
    let c_first = b_view
        .iter()
        .find(|t| t.tick.is_after(last_welcome_tick))
        .unwrap()
        .players[&c];
    assert_eq!(
        b_view.last().unwrap().players[&c],
        c_first,
        "C did not move"
    );

    server.stop();
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// What a client saw of one complete tick under interest management.
#[derive(Debug)]
struct ViewedTick {
    /// Entities received.
    entities: usize,
    /// The largest distance, in cells, of any received entity's cell from the own one.
    farthest_cell: u16,
}

#[test]
fn each_client_is_sent_the_cells_around_its_own_player_and_nothing_else() {
    let data_dir = temp_data_dir("e2e-view");
    let mut config = test_config(&data_dir);
    config.net.view_cells = 1;
    config.sim.npcs = 600;
    let cell_side = u32::from(config.sim.cell_size) * 64;
    let server = Server::start(config).expect("server starts");
    let addr = server.local_addr();
    let key = load_token_key(&data_dir.join(TOKEN_KEY_FILE)).unwrap();
    let runtime = runtime();
    let views = runtime.block_on(async {
        let endpoint = client_endpoint(addr, server.fingerprint()).unwrap();
        let mut tasks = Vec::new();
        for client_id in 1..=4u64 {
            let token = mint_token(&key, client_id, Duration::from_secs(60)).unwrap();
            let session = connect(&endpoint, addr, token, Duration::from_secs(5))
                .await
                .expect("admitted");
            tasks.push(tokio::spawn(async move {
                let view = View::from_welcome(session.welcome());
                assert_eq!(view.radius, 1, "the Welcome announces the view");
                let own = session.welcome().entity;
                let mut assembler = TickAssembler::new(view, session.schema().clone(), true);
                let mut seen = Vec::new();
                let end = tokio::time::Instant::now() + Duration::from_secs(2);
                while let Ok(datagram) = tokio::time::timeout_at(end, session.next_datagram()).await
                {
                    let bytes = datagram.expect("connection stays up");
                    if let Some(tick) = completed_tick(&mut assembler, &bytes) {
                        let records = assembler.complete_records();
                        let cell_of = |x: u16, y: u16| {
                            let (column, row) =
                                (u32::from(x) / cell_side, u32::from(y) / cell_side);
                            (column as i64, row as i64)
                        };
                        let own = arena(
                            records
                                .iter()
                                .find(|r| r.net_id == own)
                                .expect("a complete tick holds the own player"),
                        );
                        let (own_column, own_row) = cell_of(own.x, own.y);
                        let farthest_cell = records
                            .iter()
                            .map(|r| {
                                let r = arena(r);
                                let (column, row) = cell_of(r.x, r.y);
                                (column - own_column).abs().max((row - own_row).abs()) as u16
                            })
                            .max()
                            .unwrap_or(0);
                        seen.push((
                            tick,
                            ViewedTick {
                                entities: records.len(),
                                farthest_cell,
                            },
                        ));
                    }
                }
                session.close();
                (seen, assembler.finish(2))
            }));
        }
        let mut views = Vec::new();
        for task in tasks {
            views.push(task.await.unwrap());
        }
        endpoint.wait_idle().await;
        views
    });
    let world = 600 + 4;
    for (client, (seen, delivery)) in views.iter().enumerate() {
        let ticks: Vec<Tick> = seen.iter().map(|(tick, _)| *tick).collect();
        assert!(
            longest_consecutive_run(&ticks) >= 30,
            "client {client}: too few consecutive complete ticks: {delivery:?}"
        );
        for (tick, viewed) in seen {
            assert!(
                viewed.farthest_cell <= 1,
                "client {client}, tick {tick}: an entity {} cells away was sent",
                viewed.farthest_cell
            );
            // A 3 × 3 view of a 16 × 16 grid holds a few percent of a uniform world.
            assert!(
                viewed.entities < world / 4,
                "client {client}, tick {tick}: {} of {world} entities sent",
                viewed.entities
            );
        }
        assert!(
            seen.iter().any(|(_, v)| v.entities > 1),
            "client {client} saw no one but itself"
        );
    }
    server.stop();
    let _ = std::fs::remove_dir_all(&data_dir);
}
