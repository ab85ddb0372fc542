//! Zero heap allocations per tick in steady state: applying inputs, simulating (movement,
//! NPCs, projectiles, collisions, respawns), hashing, sorting, encoding and chunking.
//!
//! Runs without the test harness (`harness = false`) and counts only this thread's
//! allocations, so nothing else can pollute the count.

#![allow(unsafe_code)] // A counting allocator is an `unsafe impl GlobalAlloc`.
#![allow(clippy::print_stdout)] // harness = false: this binary reports like a test runner.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use tickcast_shared::Tick;
use tickcast_shared::msg::{BUTTON_FIRE, InputCmd, InputDatagram};
use tickcast_sim::{Sim, SimConfig};

struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with`: the allocator can run while thread-locals are being torn down.
    let _ = COUNTING.try_with(|counting| {
        if counting.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counting only
// touches const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn count_allocations<T>(f: impl FnOnce() -> T) -> (T, u64) {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    let result = f();
    COUNTING.with(|c| c.set(false));
    (result, ALLOCATIONS.with(Cell::get))
}

const PLAYERS: u64 = 16;

fn input(tick: u32, client: u64) -> InputDatagram {
    let phase = tick
        .wrapping_mul(2_654_435_761)
        .wrapping_add(client as u32 * 977);
    let cmd = InputCmd {
        seq: tick,
        move_x: ((phase >> 8) % 255) as i8,
        move_y: ((phase >> 16) % 255) as i8,
        aim: (phase >> 3) as u16,
        buttons: BUTTON_FIRE,
    };
    InputDatagram::single(cmd, Tick::new(tick))
}

/// One server tick as the loop runs it, with the network's copy of the previous tick
/// released just before (as the net thread releases it after sending).
fn tick(sim: &mut Sim, held: &mut Option<tickcast_sim::snapshot::Snapshot>) {
    let tick = sim.tick().get();
    for client in 0..PLAYERS {
        sim.apply_input(client, &input(tick, client));
    }
    *held = None;
    sim.step(tick);
    *held = sim.take_snapshot();
}

fn steady_state_allocations(npcs: u32) -> (u64, u64, usize) {
    let mut sim = Sim::new(SimConfig {
        npcs,
        arena_width: 256,
        arena_height: 256,
        ..SimConfig::default()
    })
    .expect("valid config");
    for client in 0..PLAYERS {
        sim.join(client);
    }
    let mut held = None;
    // Warm-up: pools, scratch vectors, ECS tables and the projectile population reach
    // their steady size (projectiles live 45 ticks).
    for _ in 0..600 {
        tick(&mut sim, &mut held);
    }
    let before = sim.counters();
    let ((), allocations) = count_allocations(|| {
        for _ in 0..300 {
            tick(&mut sim, &mut held);
        }
    });
    let shots = sim.counters().inputs_applied - before.inputs_applied;
    (allocations, shots, sim.snapshot_entities())
}

fn main() {
    let mut failed = 0;
    for npcs in [1_000, 10_000] {
        let (allocations, inputs, entities) = steady_state_allocations(npcs);
        let ok = allocations == 0 && inputs > 0 && entities >= npcs as usize;
        println!(
            "test zero_allocations_per_tick_with_{npcs}_npcs ... {} ({allocations} allocations in 300 ticks, {entities} entities, {inputs} inputs applied)",
            if ok { "ok" } else { "FAILED" }
        );
        if !ok {
            failed += 1;
        }
    }
    println!("{} passed, {failed} failed", 2 - failed);
    if failed > 0 {
        std::process::exit(1);
    }
}
