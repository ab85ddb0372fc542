//! The same seed and the same inputs give the same world, tick for tick.

use bevy_ecs::prelude::{Query, With};
use tickcast_shared::Tick;
use tickcast_shared::event::PeerEvent;
use tickcast_shared::msg::{BUTTON_FIRE, InputCmd, InputDatagram};
use tickcast_sim::arena::{Health, Player};
use tickcast_sim::determinism::{assert_deterministic, check_determinism};
use tickcast_sim::engine::NetId;
use tickcast_sim::{Sim, SimConfig};

const TICKS: u32 = 1_000;
const CLIENTS: u64 = 6;

fn config(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        npcs: 300,
        // A small arena so players, NPCs and projectiles meet often.
        arena_width: 160,
        arena_height: 160,
        ..SimConfig::default()
    }
}

/// A scripted game: clients join at staggered ticks, walk, aim and fire by a fixed
/// pattern, one leaves and comes back. `tweak` may change one input.
fn script(tick: u32, tweak: Option<(u32, u64)>) -> Vec<PeerEvent> {
    let mut events = Vec::new();
    for client in 0..CLIENTS {
        let joins_at = client as u32 * 7;
        if tick == joins_at || (client == 2 && tick == 600) {
            events.push(PeerEvent::Joined { client_id: client });
        }
        if client == 2 && tick == 400 {
            events.push(PeerEvent::Left { client_id: client });
            continue;
        }
        if tick <= joins_at || (client == 2 && (400..=600).contains(&tick)) {
            continue;
        }
        let phase = tick
            .wrapping_mul(2_654_435_761)
            .wrapping_add(client as u32 * 97);
        let mut cmd = InputCmd {
            seq: tick,
            move_x: ((phase >> 8) % 255) as i8,
            move_y: ((phase >> 16) % 255) as i8,
            aim: (phase >> 3) as u16,
            buttons: if (tick / 10 + client as u32).is_multiple_of(3) {
                BUTTON_FIRE
            } else {
                0
            },
        };
        if tweak == Some((tick, client)) {
            cmd.move_x = cmd.move_x.wrapping_add(64);
        }
        events.push(PeerEvent::Input {
            client_id: client,
            datagram: InputDatagram::single(cmd, Tick::new(tick)),
        });
    }
    events
}

fn run(seed: u64, tweak: Option<(u32, u64)>) -> (Vec<u64>, Sim) {
    let mut sim = Sim::new(config(seed)).unwrap();
    let mut hashes = Vec::with_capacity(TICKS as usize);
    for tick in 0..TICKS {
        for event in script(tick, tweak) {
            sim.handle(event);
        }
        // The clock stamped into chunk headers must not affect the state.
        sim.step(tick.wrapping_mul(33_333) ^ seed as u32);
        sim.take_snapshot();
        hashes.push(sim.state_hash());
    }
    (hashes, sim)
}

fn total_score(sim: &mut Sim) -> u32 {
    let world = sim.world_mut();
    let mut query = world.query::<&tickcast_sim::arena::Player>();
    query.iter(world).map(|p| u32::from(p.score)).sum()
}

#[test]
fn same_seed_and_inputs_give_identical_hashes_for_1000_ticks() {
    let (a, mut sim) = run(42, None);
    let (b, _) = run(42, None);
    assert_eq!(a.len(), TICKS as usize);
    let first_difference = a.iter().zip(&b).position(|(x, y)| x != y);
    assert_eq!(first_difference, None, "runs diverged");
    // Not vacuous: the state changes every tick and the game was really played.
    assert!(
        a.windows(2).all(|w| w[0] != w[1]),
        "the hash must move every tick"
    );
    assert!(total_score(&mut sim) > 0, "the script should lead to kills");
    assert!(sim.counters().inputs_applied > 1000);
}

#[test]
fn one_different_input_diverges_from_that_tick_on() {
    let (a, _) = run(42, None);
    let (b, _) = run(42, Some((300, 1)));
    let first_difference = a.iter().zip(&b).position(|(x, y)| x != y);
    // Inputs delivered before step 300 take effect in tick 300.
    assert_eq!(first_difference, Some(300));
}

#[test]
fn a_different_seed_gives_a_different_world() {
    let (a, _) = run(42, None);
    let (b, _) = run(43, None);
    assert_ne!(a[0], b[0]);
}

#[test]
fn the_arena_passes_the_engines_determinism_check_with_its_storage_reordered() {
    let agreement = assert_deterministic(
        || Sim::new(config(42)).unwrap(),
        400,
        |tick| script(tick.get(), None),
    );
    assert_eq!(agreement.ticks, 400);
}

/// A rule written wrong: the first player a query yields gains health each tick.
/// Query order is storage order, which the rules never chose.
fn heal_the_first_player_found(mut players: Query<&mut Health, With<Player>>) {
    if let Some(mut health) = players.iter_mut().next() {
        health.0 = health.0.wrapping_add(1);
    }
}

/// The same rule written right: the player with the lowest net id.
fn heal_the_lowest_id_player(mut players: Query<(&NetId, &mut Health), With<Player>>) {
    if let Some((_, mut health)) = players.iter_mut().min_by_key(|(id, _)| **id) {
        health.0 = health.0.wrapping_add(1);
    }
}

#[test]
fn a_rule_that_depends_on_query_order_is_caught_and_its_sorted_twin_passes() {
    let with = |order_dependent: bool| {
        move || {
            let mut sim = Sim::new(config(42)).unwrap();
            match order_dependent {
                true => sim.add_game_systems(heal_the_first_player_found),
                false => sim.add_game_systems(heal_the_lowest_id_player),
            }
            sim
        }
    };
    let caught = check_determinism(with(true), 400, |tick| script(tick.get(), None))
        .expect_err("storage order reached the world");
    // Players join from tick 0; with two of them the first found is storage's choice.
    assert!(caught.tick.get() < 50, "{caught}");
    assert!(caught.to_string().starts_with("not deterministic: at tick"));
    let passed = check_determinism(with(false), 400, |tick| script(tick.get(), None))
        .expect("sorting by net id is deterministic");
    assert!(passed.distinct_hashes > 1);
}
