//! The demo game's schema describes exactly what its code writes: a program holding only
//! the schema's bytes reads every record of a real tick, and every input command, to
//! the same values as the game's own types.

use tickcast_shared::Tick;
use tickcast_shared::chunk::{CHUNK_HEADER_LEN, ServerDatagram, parse_datagram, tick_frames};
use tickcast_shared::event::PeerEvent;
use tickcast_shared::msg::{BUTTON_FIRE, InputCmd, InputDatagram};
use tickcast_shared::schema::{MAX_FIELDS, Schema};
use tickcast_sim::arena::arena_schema;
use tickcast_sim::{Sim, SimConfig};

/// The schema as a client in another language would have it: decoded from its bytes.
fn schema_from_bytes() -> Schema {
    let bytes = arena_schema()
        .expect("the arena's schema is valid")
        .encode();
    Schema::decode(&bytes).expect("the arena's schema decodes")
}

/// A small arena with `npcs` NPCs and four players, where records of every kind meet.
fn busy_arena(npcs: u32) -> Sim {
    let mut sim = Sim::new(SimConfig {
        npcs,
        arena_width: 160,
        arena_height: 160,
        ..SimConfig::default()
    })
    .unwrap();
    for client in 0..4 {
        sim.handle(PeerEvent::Joined { client_id: client });
    }
    sim
}

/// The four players' inputs for `tick`: walking, turning and firing.
fn send_busy_inputs(sim: &mut Sim, tick: u32) {
    for client in 0..4u64 {
        let cmd = InputCmd {
            seq: tick,
            move_x: 90,
            move_y: -40,
            aim: (tick as u16).wrapping_mul(1500),
            buttons: BUTTON_FIRE,
        };
        sim.handle(PeerEvent::Input {
            client_id: client,
            datagram: InputDatagram::single(cmd, Tick::new(tick)),
        });
    }
}

#[test]
fn every_record_of_a_busy_tick_reads_the_same_through_the_schema_alone() {
    let schema = schema_from_bytes();
    let mut sim = busy_arena(150);
    let mut kinds_seen = [0usize; 4];
    for tick in 0..40u32 {
        send_busy_inputs(&mut sim, tick);
        sim.step(tick);
        let snapshot = sim.take_snapshot().expect("a snapshot every tick");
        for range in tick_frames(&snapshot.bytes) {
            let frame = &snapshot.bytes[range];
            let ServerDatagram::Chunk(chunk) = parse_datagram(frame).expect("a valid message")
            else {
                continue;
            };
            let generic: Vec<_> = schema
                .records(&frame[CHUNK_HEADER_LEN..])
                .collect::<Result<_, _>>()
                .expect("every record fits the schema");
            assert_eq!(generic.len(), chunk.records().len());
            for (view, record) in generic.iter().zip(chunk.records()) {
                assert_eq!(view.net_id(), record.net_id);
                assert_eq!(view.kind().kind, record.kind);
                let fields = [
                    i64::from(record.health),
                    i64::from(record.x),
                    i64::from(record.y),
                    i64::from(record.angle),
                    i64::from(record.aux),
                ];
                for (i, expected) in fields.into_iter().enumerate() {
                    assert_eq!(view.raw(i), expected, "field {i} of {record:?}");
                }
                assert_eq!(
                    view.position(),
                    (f64::from(record.x) / 64.0, f64::from(record.y) / 64.0)
                );
                kinds_seen[usize::from(record.kind)] += 1;
            }
        }
    }
    // Not vacuous: players, NPCs and projectiles were all read.
    assert!(kinds_seen[1..].iter().all(|&n| n > 0), "{kinds_seen:?}");
}

#[test]
fn every_input_command_reads_the_same_through_the_schema_alone() {
    let schema = schema_from_bytes();
    let cmds = [
        InputCmd {
            seq: 7,
            move_x: -127,
            move_y: 127,
            aim: 40_000,
            buttons: BUTTON_FIRE,
        },
        InputCmd {
            seq: u32::MAX,
            move_x: 0,
            move_y: -3,
            aim: 0,
            buttons: 0b1000_0000,
        },
    ];
    assert_eq!(schema.input_len(), 9);
    for cmd in cmds {
        let (bytes, len) = InputDatagram::single(cmd, Tick::new(1)).encode();
        assert_eq!(len, 6 + 9);
        // Kind byte, ack tick, count: the first command starts at byte 6.
        let mut values = [0i64; MAX_FIELDS];
        let (seq, clamped) = schema.read_input(&bytes[6..], &mut values).unwrap();
        assert_eq!((seq, clamped), (cmd.seq, 0));
        assert_eq!(
            &values[..4],
            &[
                i64::from(cmd.move_x),
                i64::from(cmd.move_y),
                i64::from(cmd.aim),
                i64::from(cmd.buttons)
            ]
        );
        let mut written = [0u8; 9];
        schema
            .write_input(cmd.seq, &values[..4], &mut written)
            .unwrap();
        assert_eq!(&written, &bytes[6..15]);
    }
    // The engine's own rule for -128 (read as -127) is the schema's declared range.
    let mut values = [0i64; MAX_FIELDS];
    let mut bytes = [0u8; 9];
    bytes[4] = 0x80;
    assert_eq!(schema.read_input(&bytes, &mut values), Ok((0, 1)));
    assert_eq!(values[0], -127);
}

#[test]
fn the_arena_schema_has_the_bytes_protocol_md_shows() {
    let bytes = arena_schema().unwrap().encode();
    assert_eq!(bytes.len(), 263);
    // docs/PROTOCOL.md §8: the preamble, the game, and the player kind up to its first field.
    let start = [
        0x54, 0x43, 0x53, 0x43, 0x01, 0x05, 0x61, 0x72, 0x65, 0x6e, 0x61, 0x01, 0x00, 0x03, 0x01,
        0x06, 0x70, 0x6c, 0x61, 0x79, 0x65, 0x72, 0x50, 0x05, 0x06, 0x68, 0x65, 0x61, 0x6c, 0x74,
        0x68, 0x01, 0x05, 0x01, 0x00, 0x00,
    ];
    assert_eq!(&bytes[..start.len()], &start);
    // ... and its last input field, the buttons with their one named bit.
    let buttons = [
        0x07, 0x62, 0x75, 0x74, 0x74, 0x6f, 0x6e, 0x73, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0xff,
        0x00, 0x00, 0x00, 0x01, 0x04, 0x66, 0x69, 0x72, 0x65,
    ];
    assert_eq!(&bytes[bytes.len() - buttons.len()..], &buttons);
}

#[test]
fn the_client_crates_fixture_is_this_games_tick() {
    let mut sim = busy_arena(60);
    let mut last = None;
    for tick in 0..40u32 {
        send_busy_inputs(&mut sim, tick);
        sim.step(0);
        last = sim.take_snapshot();
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../clients/tests/fixtures/arena.tick");
    tickcast_sim::fixture::assert_tick_fixture(
        &path,
        &arena_schema().unwrap(),
        &last.expect("a snapshot").bytes,
    );
}
