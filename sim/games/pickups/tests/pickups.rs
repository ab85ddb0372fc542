//! The pickups game on the engine: it plays (gems spawn, vanish and are taken for team
//! points), it is deterministic under the engine's check, its records are what its
//! schema says, a program with only the schema's bytes reads its snapshots, and its
//! recordings verify with its rules and are refused by the arena's.

use std::path::PathBuf;

use tickcast_pickups::{
    BUTTON_DASH, Gem, KIND_GEM, KIND_RUNNER, KIND_SCOREBOARD, Pickups, Pos, Runner, Scoreboard,
    schema,
};
use tickcast_shared::Tick;
use tickcast_shared::chunk::{CHUNK_HEADER_LEN, SNAPSHOT_CHUNK_KIND, tick_frames};
use tickcast_shared::event::PeerEvent;
use tickcast_shared::msg::InputDatagram;
use tickcast_shared::schema::Schema;
use tickcast_sim::arena::Arena;
use tickcast_sim::determinism::assert_deterministic;
use tickcast_sim::engine::{NetId, check_records};
use tickcast_sim::record::{Recorder, RecordingHeader, decode_recording};
use tickcast_sim::replay::{self, VerifyError};
use tickcast_sim::snapshot::Snapshot;
use tickcast_sim::{Sim, SimConfig};

const CLIENTS: u64 = 6;

fn config() -> SimConfig {
    SimConfig {
        // A small map so runners meet gems often.
        arena_width: 120,
        arena_height: 120,
        seed: 7,
        ..SimConfig::default()
    }
}

fn world() -> Sim {
    Sim::with_game(config(), Pickups::default()).expect("a valid pickups world")
}

/// One input command built from the schema alone (stick x, stick y, buttons, aim), in a
/// datagram, with the stick's bytes then written raw as a client that ignores the ranges
/// would.
fn input(schema: &Schema, seq: u32, values: [i64; 4]) -> InputDatagram {
    let mut bytes = [0u8; 9];
    schema
        .write_input(seq, &values, &mut bytes)
        .expect("a pickups command is 9 bytes");
    bytes[4] = values[0] as i8 as u8;
    bytes[5] = values[1] as i8 as u8;
    InputDatagram::from_commands(Tick::new(seq), &[&bytes]).expect("one 9-byte command")
}

/// Runners join at staggered ticks, one leaves and comes back; each steers by a fixed
/// pattern that sweeps the map and dashes now and then.
fn script(schema: &Schema, tick: u32) -> Vec<PeerEvent> {
    let mut events = Vec::new();
    for client in 0..CLIENTS {
        let joins_at = client as u32 * 5;
        if tick == joins_at || (client == 3 && tick == 300) {
            events.push(PeerEvent::Joined { client_id: client });
        }
        if client == 3 && tick == 200 {
            events.push(PeerEvent::Left { client_id: client });
            continue;
        }
        if tick <= joins_at || (client == 3 && (200..=300).contains(&tick)) {
            continue;
        }
        let phase = (tick / 40 + client as u32) % 8;
        let (x, y) = [
            (100, 0),
            (70, 70),
            (0, 100),
            (-70, 70),
            (-100, 0),
            (-70, -70),
            (0, -100),
            (120, -120), // out of range: clamped and counted
        ][phase as usize];
        let dash = i64::from((tick + client as u32).is_multiple_of(45)) * i64::from(BUTTON_DASH);
        let aim = i64::from(phase * 8192);
        events.push(PeerEvent::Input {
            client_id: client,
            datagram: input(schema, tick, [x, y, dash, aim]),
        });
    }
    events
}

/// The world after `ticks` ticks of the script, and its last snapshot (which describes
/// the world as it is now).
fn run_with_snapshot(ticks: u32) -> (Sim, Option<Snapshot>) {
    let schema = schema().unwrap();
    let mut sim = world();
    let mut last = None;
    for tick in 0..ticks {
        for event in script(&schema, tick) {
            sim.handle(event);
        }
        sim.step(0);
        last = sim.take_snapshot();
    }
    (sim, last)
}

fn run(ticks: u32) -> Sim {
    run_with_snapshot(ticks).0
}

#[test]
fn gems_appear_vanish_and_are_taken_for_team_points() {
    let mut sim = run(900);
    let world = sim.world_mut();
    let points = world
        .query::<&Scoreboard>()
        .single(world)
        .expect("one scoreboard")
        .points;
    assert!(
        points[0] > 0 && points[1] > 0,
        "both teams scored: {points:?}"
    );
    let gems = world.query::<&Gem>().iter(world).count();
    assert!(gems > 0 && gems <= 40, "{gems} gems on the map");
    let teams: Vec<u8> = world
        .query::<&Runner>()
        .iter(world)
        .map(|r| r.team)
        .collect();
    assert_eq!(teams.len(), CLIENTS as usize);
    assert_eq!(
        teams.iter().filter(|&&t| t == 0).count(),
        3,
        "teams stay even: {teams:?}"
    );
    let ids: Vec<NetId> = world.query::<&NetId>().iter(world).copied().collect();
    // 900 ticks at 30 Hz spawn a gem every 15 ticks: 60 spawned, and many more ids were
    // handed out than are alive, so gems were both taken and left to vanish.
    let highest = ids.iter().map(|id| id.0).max().unwrap();
    assert!(highest >= 60, "{highest}");
    assert!(
        sim.counters().inputs_clamped > 0,
        "the out-of-range stick was clamped"
    );
    assert!(sim.counters().inputs_applied > 4000);
}

#[test]
fn pickups_passes_the_engines_determinism_check_with_its_storage_reordered() {
    let schema = schema().unwrap();
    let agreement = assert_deterministic(world, 600, |tick| script(&schema, tick.get()));
    assert_eq!(agreement.ticks, 600);
}

#[test]
fn its_record_writer_agrees_with_its_schema() {
    let mut sim = run(300);
    let schema = schema().unwrap();
    let checked = check_records::<Pickups>(sim.world_mut(), &schema).unwrap();
    assert!(checked > CLIENTS as usize + 1, "{checked} records");
    assert_eq!(sim.counters().records_malformed, 0);
}

#[test]
fn a_program_with_only_the_schema_bytes_reads_every_record() {
    let bytes = schema().unwrap().encode();
    let schema = Schema::decode(&bytes).expect("the schema decodes");
    let (mut sim, snapshot) = run_with_snapshot(320);
    let snapshot = snapshot.expect("a snapshot");
    let mut live = sim
        .world_mut()
        .query::<(&NetId, &Pos, Option<&Runner>, Option<&Gem>)>();
    let expected: std::collections::BTreeMap<u32, (i32, i32, Option<u8>, Option<u8>)> = live
        .iter(sim.world())
        .map(|(id, pos, runner, gem)| {
            (
                id.0,
                (pos.x, pos.y, runner.map(|r| r.team), gem.map(|g| g.value)),
            )
        })
        .collect();
    let mut seen = [0usize; 4];
    let mut lengths = std::collections::BTreeSet::new();
    for range in tick_frames(&snapshot.bytes) {
        let frame = &snapshot.bytes[range];
        // Read as docs/PROTOCOL.md lays a chunk out: kind 0x01, the record count at
        // offset 12, the records after the 18-byte header.
        if frame[0] != SNAPSHOT_CHUNK_KIND {
            continue;
        }
        let record_count = usize::from(u16::from_le_bytes([frame[12], frame[13]]));
        let mut count = 0;
        for record in schema.records(&frame[CHUNK_HEADER_LEN..]) {
            let record = record.expect("every record reads");
            count += 1;
            let kind = record.kind().kind;
            seen[usize::from(kind)] += 1;
            lengths.insert(record.bytes().len());
            let (x, y) = record.position();
            assert!((0.0..120.0).contains(&x) && (0.0..120.0).contains(&y));
            let (ex, ey, team, value) = expected[&record.net_id()];
            assert_eq!(
                (record.raw(0), record.raw(1)),
                (i64::from(ex), i64::from(ey)),
                "the position read is the world's, in 1/16 units"
            );
            if kind == KIND_GEM {
                assert_eq!(record.value_of("value"), value.map(f64::from));
            }
            if kind == KIND_RUNNER {
                assert_eq!(record.value_of("team"), team.map(f64::from));
            }
        }
        assert_eq!(count, record_count);
    }
    assert_eq!(seen[usize::from(KIND_RUNNER)], CLIENTS as usize);
    assert_eq!(seen[usize::from(KIND_SCOREBOARD)], 1);
    assert!(seen[usize::from(KIND_GEM)] > 0);
    assert_eq!(
        lengths.into_iter().collect::<Vec<_>>(),
        vec![10, 11, 13],
        "three kinds, three record lengths"
    );
}

fn temp_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "tickcast-pickups-{}-{name}.tcrec",
        std::process::id()
    ))
}

#[test]
fn a_recording_verifies_with_its_rules_and_the_arena_refuses_it() {
    let path = temp_file("verify");
    let schema = schema().unwrap();
    let mut sim = world();
    let mut recorder = Recorder::start(
        &path,
        RecordingHeader {
            protocol_version: tickcast_shared::PROTOCOL_VERSION,
            config: config(),
            build_id: "test".into(),
            keyframe_interval: 100,
            schema: (**sim.schema()).clone(),
        },
    )
    .unwrap();
    for tick in 0..400 {
        let mut applied = recorder.event_buffer();
        for event in script(&schema, tick) {
            applied.push(event.clone());
            sim.handle(event);
        }
        sim.step(0);
        let snapshot = sim.take_snapshot();
        recorder.record_step(&sim, applied, snapshot.as_ref().map(|s| &s.bytes), 0, 0);
    }
    recorder.finish();
    let recording = decode_recording(&std::fs::read(&path).unwrap()).unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(recording.header.schema.game(), "pickups");

    let verified = replay::verify(Pickups::default(), &recording, None, |_, _| {}).unwrap();
    assert!(verified.passed(), "{verified:?}");
    assert_eq!(verified.ticks_checked, 400);

    // Other rules diverge, and name the entities that differ.
    let faster = SimConfig {
        player_speed: config().player_speed * 2,
        ..config()
    };
    let changed = replay::verify(Pickups::default(), &recording, Some(faster), |_, _| {}).unwrap();
    assert!(!changed.passed());
    let (_, differing) = changed.differing_entities.expect("a keyframe after it");
    assert!(!differing.is_empty());

    let refused = replay::verify(Arena, &recording, None, |_, _| {}).unwrap_err();
    assert!(matches!(refused, VerifyError::OtherGame(_)), "{refused}");
    assert_eq!(
        refused.to_string(),
        "the recording is of pickups v1; this build re-simulates arena v1 (use that game's \
         own server binary's replay)"
    );
}

#[test]
fn the_client_crates_fixture_is_this_games_tick() {
    let (_, snapshot) = run_with_snapshot(320);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../clients/tests/fixtures/pickups.tick");
    tickcast_sim::fixture::assert_tick_fixture(
        &path,
        &schema().unwrap(),
        &snapshot.expect("a snapshot").bytes,
    );
}
