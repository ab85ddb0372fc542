//! A client with no game code decodes two different games' ticks with their schemas
//! alone. This crate cannot link a game (`scripts/crate-graph.sh` refuses
//! `tickcast-sim` here), so the fixtures are bytes: each file is one real tick as the
//! server sends it, written by the game's own tests (`sim/tests/schema.rs` for the arena,
//! `sim/games/pickups/tests/pickups.rs` for pickups), which also fail if the game's
//! encoder would now write other bytes (`TICKCAST_UPDATE_FIXTURES=1` rewrites them).
//!
//! File layout: `[u16 LE schema length][schema, docs/PROTOCOL.md §8][tick buffer: frames
//! of u16 LE length + datagram, the tick directory first]`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tickcast_clients::track::{ChunkOutcome, TickAssembler, View};
use tickcast_shared::chunk::{parse_datagram, tick_frames};
use tickcast_shared::schema::Schema;

/// The fixture's schema and the tick buffer after it.
fn fixture(name: &str) -> (Arc<Schema>, Vec<u8>) {
    let path = format!("{}/tests/fixtures/{name}.tick", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let len = usize::from(u16::from_le_bytes([bytes[0], bytes[1]]));
    let schema = Schema::decode(&bytes[2..2 + len]).expect("the fixture's schema decodes");
    (Arc::new(schema), bytes[2 + len..].to_vec())
}

/// Per kind name: how many records, and the lengths they came in.
type Kinds = BTreeMap<String, (usize, BTreeSet<usize>)>;

/// Feeds every datagram of the tick to the client library's assembler, as a spectator,
/// and returns the tick's records (from the assembler) grouped by kind name, with each
/// kind's record lengths and positions.
fn assemble(name: &str) -> (Arc<Schema>, Kinds) {
    let (schema, buffer) = fixture(name);
    let mut assembler = TickAssembler::new(View::ALL, schema.clone(), true);
    let mut completed = None;
    for range in tick_frames(&buffer) {
        let datagram = parse_datagram(&buffer[range]).expect("every frame parses");
        if let ChunkOutcome::Completed { entities, .. } = assembler.on_message(&datagram) {
            completed = Some(entities);
        }
    }
    let entities = completed.expect("the tick completes from its own datagrams");
    let records = assembler.complete_records();
    assert_eq!(records.len(), entities);
    let (width, height) = (1024.0, 1024.0);
    let mut kinds = Kinds::new();
    for record in records {
        let view = record
            .view(&schema)
            .expect("the schema lays every record out");
        let (x, y) = view.position();
        assert!(
            (0.0..width).contains(&x) && (0.0..height).contains(&y),
            "{name}: {x}, {y}"
        );
        let entry = kinds.entry(view.kind().name.clone()).or_default();
        entry.0 += 1;
        entry.1.insert(record.bytes().len());
    }
    (schema, kinds)
}

#[test]
fn the_arenas_tick_decodes_with_its_schema_alone() {
    let (schema, kinds) = assemble("arena");
    assert_eq!(schema.game(), "arena");
    assert_eq!(kinds["player"].0, 4, "{kinds:?}");
    assert!(kinds["npc"].0 >= 50, "{kinds:?}");
    assert!(
        kinds.contains_key("projectile"),
        "the fixture's players fire"
    );
    for (_, lengths) in kinds.values() {
        assert_eq!(lengths.iter().copied().collect::<Vec<_>>(), vec![14]);
    }
}

#[test]
fn the_pickups_tick_decodes_with_its_schema_alone() {
    let (schema, kinds) = assemble("pickups");
    assert_eq!(schema.game(), "pickups");
    assert_eq!(kinds["runner"].0, 6, "{kinds:?}");
    assert_eq!(kinds["scoreboard"].0, 1);
    assert!(kinds["gem"].0 > 0);
    let lengths: Vec<usize> = ["runner", "gem", "scoreboard"]
        .iter()
        .flat_map(|k| kinds[*k].1.iter().copied())
        .collect();
    assert_eq!(lengths, vec![11, 10, 13], "three kinds, three lengths");
}
