//! [`Sim`]: the world and its schedule behind a small API that needs no thread, socket
//! or clock. The server loop and the replay tools drive this same API.

use bevy_ecs::prelude::*;
use bevy_ecs::schedule::{IntoScheduleConfigs, SingleThreadedExecutor};
use bevy_ecs::system::ScheduleSystem;
use tickcast_shared::Tick;
use tickcast_shared::event::{JoinAck, PeerEvent};
use tickcast_shared::msg::InputDatagram;

use crate::config::{ConfigError, SimConfig};
use crate::game::{self, Clients, CurrentTick, NetIds, Player, Settings, SimCounters, TickSet};
use crate::rng::SimRng;
use crate::snapshot::{Snapshot, SnapshotState, build_snapshot};

/// The simulation: a bevy_ecs `World` and the `Schedule` that advances it one tick.
pub struct Sim {
    world: World,
    schedule: Schedule,
}

impl Sim {
    /// A world set up from `config`: NPCs spawned, tick 0 next.
    pub fn new(config: SimConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut world = World::new();
        world.insert_resource(SimRng::new(config.seed));
        world.insert_resource(SnapshotState::new(&config));
        world.insert_resource(Settings(config.clone()));
        world.insert_resource(CurrentTick(Tick::ZERO));
        world.insert_resource(NetIds::default());
        world.insert_resource(Clients::default());
        world.insert_resource(SimCounters::default());
        world.insert_resource(game::CollisionGrid::default());
        for _ in 0..config.npcs {
            game::spawn_npc(&mut world);
        }
        game::reserve_projectile_storage(&mut world);

        let mut schedule = Schedule::default();
        // One thread and a fixed order: the same inputs give the same world.
        schedule.set_executor(SingleThreadedExecutor::new());
        schedule.configure_sets((TickSet::Input, TickSet::Simulate, TickSet::Snapshot).chain());
        schedule.add_systems((
            game::apply_inputs.in_set(TickSet::Input),
            (
                game::move_players,
                game::wander_npcs,
                game::fire_projectiles,
                game::move_projectiles,
                game::resolve_hits,
                game::respawn_fallen,
            )
                .chain()
                .in_set(TickSet::Simulate),
            build_snapshot.in_set(TickSet::Snapshot),
        ));
        Ok(Self { world, schedule })
    }

    /// Adds systems to the fixed-step schedule: in the `Simulate` set, after the demo
    /// game's own systems, one after another in the order given (one thread, a fixed
    /// order: the same inputs still give the same world). The seam a game's rules plug
    /// into; [`crate::determinism::assert_deterministic`] checks what they do.
    pub fn add_game_systems<M>(&mut self, systems: impl IntoScheduleConfigs<ScheduleSystem, M>) {
        self.schedule.add_systems(
            systems
                .chain()
                .in_set(TickSet::Simulate)
                .after(game::respawn_fallen),
        );
    }

    /// The configuration the world runs with.
    pub fn config(&self) -> &SimConfig {
        &self.world.resource::<Settings>().0
    }

    /// The tick the next [`Sim::step`] simulates (also how many steps have run).
    pub fn tick(&self) -> Tick {
        self.world.resource::<CurrentTick>().0
    }

    /// Spawns `client_id`'s player (replacing one it had); returns its net id.
    pub fn join(&mut self, client_id: u64) -> u32 {
        game::spawn_player(&mut self.world, client_id).0
    }

    /// Despawns `client_id`'s player; false if it had none.
    pub fn leave(&mut self, client_id: u64) -> bool {
        game::despawn_player(&mut self.world, client_id)
    }

    /// Takes a client's input datagram for the coming tick.
    pub fn apply_input(&mut self, client_id: u64, datagram: &InputDatagram) {
        let max = self.config().max_inputs_per_tick;
        let entity = self.world.resource::<Clients>().0.get(&client_id).copied();
        let mut counters = *self.world.resource::<SimCounters>();
        match entity.and_then(|e| self.world.get_mut::<Player>(e)) {
            Some(mut player) => {
                game::take_inputs(&mut player, datagram.inputs(), max, &mut counters)
            }
            None => counters.inputs_unknown_client += 1,
        }
        *self.world.resource_mut::<SimCounters>() = counters;
    }

    /// Applies one event from the network; a join answers with the entity it got.
    pub fn handle(&mut self, event: PeerEvent) -> Option<JoinAck> {
        match event {
            PeerEvent::Joined { client_id } => Some(JoinAck {
                client_id,
                entity: self.join(client_id),
                tick: self.tick(),
            }),
            PeerEvent::Left { client_id } => {
                self.leave(client_id);
                None
            }
            PeerEvent::Input {
                client_id,
                datagram,
            } => {
                self.apply_input(client_id, &datagram);
                None
            }
        }
    }

    /// Runs one tick. `server_time_us` is stamped into the snapshot's chunk headers (the
    /// caller's clock; the sim never reads one) and does not affect the state.
    pub fn step(&mut self, server_time_us: u32) {
        self.world.resource_mut::<SnapshotState>().server_time_us = server_time_us;
        self.schedule.run(&mut self.world);
        // Despawns leave "removed component" messages in the world; without this they
        // would pile up for the life of the server (a leak found by the zero-allocation
        // test). Clearing swaps their double buffer, reusing its capacity.
        self.world.clear_trackers();
        let tick = &mut self.world.resource_mut::<CurrentTick>().0;
        *tick = tick.next();
    }

    /// The last tick's tick buffer (see `tickcast_shared::chunk`) and its index, once;
    /// `None` if it was already taken.
    pub fn take_snapshot(&mut self) -> Option<Snapshot> {
        self.world.resource_mut::<SnapshotState>().published.take()
    }

    /// The state hash after the last tick.
    pub fn state_hash(&self) -> u64 {
        self.world.resource::<SnapshotState>().hash
    }

    /// Entities in the last snapshot.
    pub fn snapshot_entities(&self) -> usize {
        self.world.resource::<SnapshotState>().entities
    }

    /// Players connected now.
    pub fn players(&self) -> usize {
        self.world.resource::<Clients>().0.len()
    }

    /// What the simulation counted.
    pub fn counters(&self) -> SimCounters {
        *self.world.resource::<SimCounters>()
    }

    /// The world, for tests and tools that look inside.
    pub fn world(&self) -> &World {
        &self.world
    }

    /// The world, mutably, for tests and tools that set up scenarios.
    pub fn world_mut(&mut self) -> &mut World {
        &mut self.world
    }
}
