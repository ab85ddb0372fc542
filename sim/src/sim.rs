//! [`Sim`]: the world and its schedule behind a small API that needs no thread, socket
//! or clock. The server loop and the replay tools drive this same API.

use std::sync::Arc;

use bevy_ecs::prelude::*;
use bevy_ecs::schedule::{IntoScheduleConfigs, SingleThreadedExecutor};
use bevy_ecs::system::ScheduleSystem;
use tickcast_shared::Tick;
use tickcast_shared::event::{JoinAck, PeerEvent};
use tickcast_shared::msg::InputDatagram;
use tickcast_shared::schema::{RECORD_PREFIX_LEN, Schema};

use crate::arena::Arena;
use crate::config::{ConfigError, SimConfig};
use crate::engine::{
    self, Clients, Controlled, CurrentTick, Game, GameSchema, NetIds, PlayerHooks, RecordLayouts,
    Settings, SimCounters, TickSet,
};
use crate::rng::SimRng;
use crate::snapshot::{Snapshot, SnapshotState, build_snapshot};

/// The simulation: a bevy_ecs `World`, the `Schedule` that advances it one tick, and the
/// game it runs.
pub struct Sim {
    world: World,
    schedule: Schedule,
    game: Box<dyn PlayerHooks>,
    schema: Arc<Schema>,
}

impl Sim {
    /// The arena (the demo game) set up from `config`: NPCs spawned, tick 0 next.
    pub fn new(config: SimConfig) -> Result<Self, ConfigError> {
        Self::with_game(config, Arena)
    }

    /// `game` set up from `config`, tick 0 next: the engine's resources, then the game's
    /// [`Game::setup`]; the schedule runs the engine's input step, the game's systems, and
    /// the snapshot encoder with `G`'s record writer.
    pub fn with_game<G: Game>(config: SimConfig, game: G) -> Result<Self, ConfigError> {
        config.validate()?;
        game.validate(&config)?;
        let schema = game.schema().map_err(|e| ConfigError {
            field: "schema",
            reason: format!("the game's schema is invalid: {e}"),
        })?;
        let layouts = RecordLayouts::of(&schema).with_cell_size(config.cell_size);
        if tickcast_shared::chunk::CHUNK_HEADER_LEN + layouts.max_len > config.chunk_payload {
            return Err(ConfigError {
                field: "chunk_payload",
                reason: format!(
                    "chunk_payload {} cannot hold one {}-byte record of {}",
                    config.chunk_payload,
                    layouts.max_len,
                    schema.game()
                ),
            });
        }
        let schema = Arc::new(schema);
        let mut world = World::new();
        world.insert_resource(SimRng::new(config.seed));
        world.insert_resource(SnapshotState::new(
            &config,
            layouts.max_len.max(RECORD_PREFIX_LEN),
        ));
        world.insert_resource(layouts);
        world.insert_resource(GameSchema(schema.clone()));
        world.insert_resource(Settings(config));
        world.insert_resource(CurrentTick(Tick::ZERO));
        world.insert_resource(NetIds::default());
        world.insert_resource(Clients::default());
        world.insert_resource(SimCounters::default());
        game.setup(&mut world);

        let mut schedule = Schedule::default();
        // One thread and a fixed order: the same inputs give the same world.
        schedule.set_executor(SingleThreadedExecutor::new());
        schedule.configure_sets(
            (
                EngineInput,
                TickSet::Input,
                TickSet::Simulate,
                AddedLater,
                TickSet::Snapshot,
            )
                .chain(),
        );
        schedule.add_systems((
            engine::reset_input_allowance.in_set(EngineInput),
            build_snapshot::<G>.in_set(TickSet::Snapshot),
        ));
        game.add_systems(&mut schedule);
        Ok(Self {
            world,
            schedule,
            game: Box::new(game),
            schema,
        })
    }

    /// Adds systems to the fixed-step schedule: after the game's `Simulate` systems and
    /// before the snapshot, one after another in the order given (one thread, a fixed
    /// order: the same inputs still give the same world). For tests and tools that add a
    /// rule to a game; [`crate::determinism::assert_deterministic`] checks what they do.
    pub fn add_game_systems<M>(&mut self, systems: impl IntoScheduleConfigs<ScheduleSystem, M>) {
        self.schedule
            .add_systems(systems.chain().in_set(AddedLater));
    }

    /// The game's replication schema.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// The configuration the world runs with.
    pub fn config(&self) -> &SimConfig {
        &self.world.resource::<Settings>().0
    }

    /// The tick the next [`Sim::step`] simulates (also how many steps have run).
    pub fn tick(&self) -> Tick {
        self.world.resource::<CurrentTick>().0
    }

    /// Spawns `client_id`'s entity (replacing one it had) through the game; returns its
    /// net id.
    pub fn join(&mut self, client_id: u64) -> u32 {
        self.leave(client_id);
        let id = self.world.resource_mut::<NetIds>().allocate();
        let entity = self.game.spawn_player(&mut self.world, client_id, id);
        let mut spawned = self.world.entity_mut(entity);
        spawned.insert((
            id,
            Controlled {
                client_id,
                last_seq: None,
                datagrams_this_tick: 0,
            },
        ));
        self.world
            .resource_mut::<Clients>()
            .0
            .insert(client_id, entity);
        id.0
    }

    /// Despawns `client_id`'s entity through the game; false if it had none.
    pub fn leave(&mut self, client_id: u64) -> bool {
        match self.world.resource_mut::<Clients>().0.remove(&client_id) {
            Some(entity) if self.world.get_entity(entity).is_ok() => {
                self.game.despawn_player(&mut self.world, entity);
                true
            }
            _ => false,
        }
    }

    /// Takes a client's input datagram for the coming tick: the engine applies the
    /// per-tick allowance and the sequence rule, reads each new command with the schema
    /// (clamping values into their ranges), and hands it to the game.
    pub fn apply_input(&mut self, client_id: u64, datagram: &InputDatagram) {
        let max = self.config().max_inputs_per_tick;
        let Some(entity) = self.world.resource::<Clients>().0.get(&client_id).copied() else {
            self.world
                .resource_mut::<SimCounters>()
                .inputs_unknown_client += 1;
            return;
        };
        let Some(mut controlled) = self.world.get::<Controlled>(entity).copied() else {
            self.world
                .resource_mut::<SimCounters>()
                .inputs_unknown_client += 1;
            return;
        };
        let mut counters = *self.world.resource::<SimCounters>();
        let (world, game, schema) = (&mut self.world, &self.game, &self.schema);
        engine::take_commands(
            schema,
            &mut controlled,
            datagram.commands(),
            max,
            &mut counters,
            |values| game.apply_input(world.entity_mut(entity), values),
        );
        *self.world.resource_mut::<SimCounters>() = counters;
        if let Some(mut stored) = self.world.get_mut::<Controlled>(entity) {
            *stored = controlled;
        }
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

/// The engine's step before the game's inputs: each client's per-tick allowance resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, bevy_ecs::schedule::SystemSet)]
struct EngineInput;

/// The set of systems added with [`Sim::add_game_systems`]: after the game's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, bevy_ecs::schedule::SystemSet)]
struct AddedLater;
