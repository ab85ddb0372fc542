//! Tick cost at 1k, 10k and 100k entities: `cargo bench -p tickcast-sim`.
//!
//! * `whole_tick`: apply 16 players' inputs, simulate (movement, NPCs, projectiles,
//!   collisions), hash, snapshot, chunk — what the server loop does each tick.
//! * `whole_tick_recorded`: the same with `--record` on: the applied events and hash
//!   handed to the recorder thread (which writes to a temporary file), keyframes every
//!   300 ticks — the sim thread's share of recording.
//! * `snapshot_only`: the snapshot system alone (sort by cell, hash, encode, chunk), to
//!   read the per-entity encode cost.

#![allow(missing_docs)]

use bevy_ecs::prelude::*;
use bevy_ecs::schedule::SingleThreadedExecutor;
use divan::Bencher;
use tickcast_shared::Tick;
use tickcast_shared::event::PeerEvent;
use tickcast_shared::msg::{BUTTON_FIRE, InputCmd, InputDatagram};
use tickcast_sim::record::{Recorder, RecordingHeader};
use tickcast_sim::snapshot::{SnapshotState, build_snapshot};
use tickcast_sim::{Sim, SimConfig};

const ENTITIES: [u32; 3] = [1_000, 10_000, 100_000];
const PLAYERS: u64 = 16;

fn main() {
    divan::main();
}

fn world(npcs: u32) -> Sim {
    let mut sim = Sim::new(SimConfig {
        npcs,
        arena_width: 1023,
        arena_height: 1023,
        expected_entities: npcs as usize + 512,
        ..SimConfig::default()
    })
    .expect("valid config");
    for client in 0..PLAYERS {
        sim.join(client);
    }
    // Warm up: pools, tables and the projectile population reach their steady size.
    for _ in 0..120 {
        step(&mut sim);
    }
    sim
}

fn step(sim: &mut Sim) {
    step_recorded(sim, None);
}

fn step_recorded(sim: &mut Sim, recorder: Option<&mut Recorder>) {
    let tick = sim.tick().get();
    let mut applied = recorder.as_ref().map(|r| r.event_buffer());
    for client in 0..PLAYERS {
        let cmd = InputCmd {
            seq: tick,
            move_x: ((tick as u64 * 7 + client * 13) % 255) as i8,
            move_y: ((tick as u64 * 11 + client * 5) % 255) as i8,
            aim: (tick as u16).wrapping_mul(977),
            buttons: BUTTON_FIRE,
        };
        let event = PeerEvent::Input {
            client_id: client,
            datagram: InputDatagram::single(cmd, Tick::new(tick)),
        };
        if let Some(applied) = applied.as_mut() {
            applied.push(event.clone());
        }
        sim.handle(event);
    }
    sim.step(tick);
    let snapshot = sim.take_snapshot();
    if let (Some(recorder), Some(events)) = (recorder, applied) {
        recorder.record_step(sim, events, snapshot.as_ref().map(|s| &s.bytes), 0, 0);
    }
    divan::black_box(snapshot);
}

#[divan::bench(args = ENTITIES, sample_count = 30)]
fn whole_tick(bencher: Bencher, npcs: u32) {
    let mut sim = world(npcs);
    bencher
        .counter(divan::counter::ItemsCount::new(sim.snapshot_entities()))
        .bench_local(|| step(&mut sim));
}

#[divan::bench(args = ENTITIES, sample_count = 30)]
fn whole_tick_recorded(bencher: Bencher, npcs: u32) {
    let mut sim = world(npcs);
    let path = std::env::temp_dir().join(format!(
        "tickcast-bench-{}-{npcs}.tcrec",
        std::process::id()
    ));
    let mut recorder = Recorder::start(
        &path,
        RecordingHeader {
            protocol_version: tickcast_shared::PROTOCOL_VERSION,
            config: sim.config().clone(),
            build_id: "bench".into(),
            keyframe_interval: 300,
            schema: tickcast_sim::arena::arena_schema().unwrap(),
        },
    )
    .expect("temporary recording");
    bencher
        .counter(divan::counter::ItemsCount::new(sim.snapshot_entities()))
        .bench_local(|| step_recorded(&mut sim, Some(&mut recorder)));
    recorder.finish();
    let _ = std::fs::remove_file(&path);
}

#[divan::bench(args = ENTITIES, sample_count = 30)]
fn snapshot_only(bencher: Bencher, npcs: u32) {
    let mut sim = world(npcs);
    let entities = sim.snapshot_entities();
    let mut schedule = Schedule::default();
    schedule.set_executor(SingleThreadedExecutor::new());
    schedule.add_systems(build_snapshot::<tickcast_sim::arena::Arena>);
    let world = sim.world_mut();
    bencher
        .counter(divan::counter::ItemsCount::new(entities))
        .bench_local(|| {
            schedule.run(world);
            divan::black_box(world.resource_mut::<SnapshotState>().published.take());
        });
}
