//! A client that knows no game (protocol v3): it takes the schema the server sends
//! after the Welcome, finds its own entity in the snapshots and reads its position
//! through the schema alone, and moves it with inputs built from the schema's input
//! roles. No game type (no `EntityRecord`, no `InputCmd`, no kind constant) is named
//! here.

use std::collections::BTreeSet;
use std::time::Duration;

use tickcast_clients::track::{ChunkOutcome, TickAssembler, View};
use tickcast_clients::{ByRoles, InputHistory, Intent, client_endpoint, connect, mint_token};
use tickcast_net::tls::{TOKEN_KEY_FILE, load_token_key};
use tickcast_shared::Tick;
use tickcast_shared::chunk::datagram_messages;

use crate::common::{start_server, temp_data_dir};

#[test]
fn a_client_with_only_the_schema_decodes_ticks_and_moves_its_entity() {
    let data_dir = temp_data_dir("schema-only");
    let server = start_server(&data_dir);
    let (addr, fingerprint) = (server.local_addr(), server.fingerprint());
    let key = load_token_key(&data_dir.join(TOKEN_KEY_FILE)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (positions, kinds, intent) = runtime.block_on(async {
        let endpoint = client_endpoint(addr, fingerprint).unwrap();
        let token = mint_token(&key, 7, Duration::from_secs(60)).unwrap();
        let session = connect(&endpoint, addr, token, Duration::from_secs(5))
            .await
            .expect("admitted, with a schema after the Welcome");
        let schema = session.schema().clone();
        let own = session.welcome().entity;
        let middle = f64::from(session.welcome().arena_width) / 2.0;
        let view = View::from_welcome(session.welcome());
        let mut assembler = TickAssembler::new(view, schema.clone(), true);
        let mut history = InputHistory::default();
        let mut intent = Intent::default();
        let mut positions = Vec::new();
        let mut kinds = BTreeSet::new();
        let mut ticker = tokio::time::interval(Duration::from_millis(33));
        let end = tokio::time::Instant::now() + Duration::from_millis(2500);
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(end) => break,
                _ = ticker.tick() => {
                    let ack = assembler.delivery().last_tick.unwrap_or(Tick::ZERO);
                    let datagram = history.push_intent(&schema, &mut ByRoles, intent, ack);
                    assert_eq!(datagram.cmd_len(), schema.input_len());
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
                                .expect("a complete tick holds the own entity, laid out by the schema")
                                .position();
                            if positions.is_empty() {
                                // Walk toward the middle, so no wall stops it.
                                intent.move_x = if position.0 < middle { 127 } else { -127 };
                            }
                            positions.push(position);
                        }
                    }
                }
            }
        }
        session.close();
        (positions, kinds, intent)
    });
    server.stop();
    let _ = std::fs::remove_dir_all(&data_dir);

    assert!(
        positions.len() >= 30,
        "only {} complete ticks",
        positions.len()
    );
    // More than the player kind was decoded: the schema covers every kind it sends.
    assert!(kinds.len() >= 2, "kinds seen: {kinds:?}");
    let (first, last) = (positions[0], positions[positions.len() - 1]);
    let moved = (last.0 - first.0) * f64::from(intent.move_x.signum());
    assert!(
        moved > 5.0,
        "the entity moved {moved} world units the way it was sent, from {first:?} to {last:?}"
    );
}
