//! The determinism check every game can run in one line: [`assert_deterministic`].
//!
//! A recording verifies only if the same inputs give the same world. The arena is
//! deterministic by construction (keyed random streams, integer rules, sorted output),
//! but a game is easy to get wrong in ways one run cannot show: iterating a query and
//! letting the first match win, where query order is only storage order; iterating a
//! `HashMap`, whose order differs between two maps in one process. This check runs the
//! same script on two worlds built the same way and compares their state hashes tick by
//! tick:
//! * the first world is stored as the game built it;
//! * the second has its entities **reordered in storage before every tick** (each is
//!   moved out of its table and back, in a seeded order, which appends it at the end):
//!   the same entities, ids and components, in another iteration order.
//!
//! A game whose outcome depends on storage order diverges, and the check names the
//! first tick where it did. It cannot see state the hash does not cover until that state
//! shows in the replicated world (which is what a player and a recording see).

use bevy_ecs::prelude::*;
use bevy_ecs::resource::IsResource;
use tickcast_shared::Tick;
use tickcast_shared::event::PeerEvent;

use crate::Sim;

/// A zero-sized component inserted and removed at once: the move it causes is the point.
#[derive(Component)]
struct StorageShuffle;

/// Reorders every non-resource entity of `world` in storage, in an order drawn from
/// `seed`, without changing any entity, id or component.
pub fn shuffle_storage(world: &mut World, seed: u64) {
    let mut entities: Vec<Entity> = world
        .query_filtered::<Entity, Without<IsResource>>()
        .iter(world)
        .collect();
    entities.sort_by_key(|entity| mix(entity.to_bits() ^ seed));
    for entity in entities {
        let mut moved = world.entity_mut(entity);
        moved.insert(StorageShuffle);
        moved.remove::<StorageShuffle>();
    }
}

/// A 64-bit mixer (splitmix64's finalizer): a seeded order with no RNG state.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Where two runs of one script parted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not deterministic: at tick {tick} the world as built hashes to {built:016x} and the \
     same world stored in another order to {shuffled:016x} (iteration order reached the \
     game's outcome: sort, or draw from keyed random streams, instead)"
)]
pub struct Divergence {
    /// The first tick whose hashes differ.
    pub tick: Tick,
    /// The hash of the world as built.
    pub built: u64,
    /// The hash of the reordered world.
    pub shuffled: u64,
}

/// What a check that passed saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    /// Ticks compared.
    pub ticks: u32,
    /// Distinct state hashes seen: a world that never changed would make the check
    /// vacuous, and the caller can say so.
    pub distinct_hashes: usize,
}

/// Runs `ticks` ticks of two worlds from `build`, the second reordered in storage before
/// every tick, applying `script(tick)`'s events to both, and compares their state hashes
/// after every tick.
pub fn check_determinism(
    build: impl Fn() -> Sim,
    ticks: u32,
    mut script: impl FnMut(Tick) -> Vec<PeerEvent>,
) -> Result<Agreement, Divergence> {
    let (mut built, mut shuffled) = (build(), build());
    let mut hashes = std::collections::BTreeSet::new();
    for n in 0..ticks {
        let tick = built.tick();
        for event in script(tick) {
            built.handle(event.clone());
            shuffled.handle(event);
        }
        shuffle_storage(shuffled.world_mut(), u64::from(n));
        built.step(n);
        shuffled.step(n);
        built.take_snapshot();
        shuffled.take_snapshot();
        if built.state_hash() != shuffled.state_hash() {
            return Err(Divergence {
                tick,
                built: built.state_hash(),
                shuffled: shuffled.state_hash(),
            });
        }
        hashes.insert(built.state_hash());
    }
    Ok(Agreement {
        ticks,
        distinct_hashes: hashes.len(),
    })
}

/// [`check_determinism`] as a test assertion: panics with the [`Divergence`], or if the
/// world's hash never changed (the check would prove nothing).
#[track_caller]
pub fn assert_deterministic(
    build: impl Fn() -> Sim,
    ticks: u32,
    script: impl FnMut(Tick) -> Vec<PeerEvent>,
) -> Agreement {
    match check_determinism(build, ticks, script) {
        Ok(agreement) if agreement.distinct_hashes > 1 => agreement,
        Ok(agreement) => panic!("the world never changed in {agreement:?}: nothing was checked"),
        Err(divergence) => panic!("{divergence}"),
    }
}
