//! The engine/game boundary: what a game provides ([`Game`]) and what the engine keeps.
//!
//! The engine owns the fixed-step loop and its order ([`TickSet`]), the join, leave and
//! input plumbing with its limits (one [`Controlled`] entity per client, input sequence
//! numbers, the per-tick allowance, range checks against the schema), stable
//! [`NetId`]s, the keyed random streams (`crate::rng`), the state hash, the snapshot
//! encoder with interest management, and recording. A game provides its components and
//! systems, its world setup, what a joining client controls, how one checked input
//! command acts on it, and its replication [`Schema`] with the code that writes each
//! record ([`Game::write_record`]). The arena (`crate::arena`) is the first game; the
//! pickups game (package `tickcast-pickups`) is the second, written only against this
//! module. `docs/GAME_API.md` is the tutorial.
//!
//! Records are written by the game's own code, monomorphised into the engine's encoder
//! (no per-field interpretation of the schema at run time); the engine checks that each
//! record is as long as the schema says its kind is, so a record writer that disagrees
//! with its schema is caught on the first tick (and by [`check_records`] in a test).

use std::collections::BTreeMap;

use bevy_ecs::prelude::*;
use bevy_ecs::query::{QueryItem, ReadOnlyQueryData};
use bevy_ecs::world::EntityWorldMut;
use tickcast_shared::Tick;
use tickcast_shared::schema::{FieldRole, MAX_FIELDS, RECORD_PREFIX_LEN, Schema, SchemaError};

use crate::config::SimConfig;

/// The order systems run in within a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, SystemSet)]
pub enum TickSet {
    /// Turn the inputs received for this tick into intents (the engine first resets each
    /// client's per-tick allowance).
    Input,
    /// Move and act: the game's rules.
    Simulate,
    /// Hash the state and encode the snapshot (the engine).
    Snapshot,
}

/// Stable network id, never reused within a run. The engine gives one to each client's
/// entity; a game gives one to every other entity it replicates ([`NetIds::allocate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Component)]
pub struct NetId(pub u32);

/// Hands out [`NetId`]s in order.
#[derive(Debug, Clone, Default, Resource)]
pub struct NetIds {
    next: u32,
}

impl NetIds {
    /// The next unused id.
    pub fn allocate(&mut self) -> NetId {
        let id = NetId(self.next);
        self.next = self.next.wrapping_add(1);
        id
    }
}

/// The world's settings, as a resource systems can read.
#[derive(Debug, Clone, Resource)]
pub struct Settings(pub SimConfig);

/// The tick being simulated: 0 during the first `step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Resource)]
pub struct CurrentTick(pub Tick);

/// Which entity each connected client controls. A `BTreeMap` so that any iteration is
/// in a fixed order: a game that visits players should visit them through this map.
#[derive(Debug, Clone, Default, Resource)]
pub struct Clients(pub BTreeMap<u64, Entity>);

/// The engine's part of a client's entity: who controls it and its input bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Component)]
pub struct Controlled {
    /// The client that controls it.
    pub client_id: u64,
    /// Newest input sequence applied; older and equal sequences are ignored.
    pub last_seq: Option<u32>,
    /// Input datagrams taken this tick (reset every tick).
    pub datagrams_this_tick: u8,
}

/// What the simulation counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Resource)]
pub struct SimCounters {
    /// Inputs that became a player's intent.
    pub inputs_applied: u64,
    /// Input commands with a value outside its schema range, clamped into it.
    pub inputs_clamped: u64,
    /// Inputs ignored because their sequence (or a newer one) was already applied: the
    /// redundant copies every input datagram carries.
    pub inputs_already_applied: u64,
    /// Input datagrams over the per-tick allowance, dropped.
    pub inputs_dropped_rate: u64,
    /// Input datagrams for a client with no entity (left, or never joined).
    pub inputs_unknown_client: u64,
    /// Pool buffers left to the peers still holding them (a stuck peer's queue) and
    /// replaced by a new allocation, so the broadcast never stops for everyone.
    pub snapshot_buffers_detached: u64,
    /// Times a pool buffer had to grow because the world outgrew it.
    pub snapshot_buffer_grows: u64,
    /// Records a game wrote at another length than its schema gives their kind, or of a
    /// kind its schema does not declare: left out of the snapshot (a bug in the game).
    pub records_malformed: u64,
}

/// Where a written record sits: its kind byte and its position in the units of its
/// kind's position fields (the engine derives the cell from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// The record's kind byte, one the schema declares.
    pub kind: u8,
    /// Position X, in the units the schema's `PositionX` field carries.
    pub x: i32,
    /// Position Y, in the units the schema's `PositionY` field carries.
    pub y: i32,
}

/// Writes one record's fields, little-endian, after the prefix (`net_id`, kind) the
/// engine writes. Fields go in the order the schema lists them for the kind. It writes
/// into a fixed slot of the encoder's scratch space: plain stores, no growth; bytes past
/// the slot are not written but still counted, so the length check catches them.
#[derive(Debug)]
pub struct RecordWriter<'a> {
    slot: &'a mut [u8],
    len: usize,
}

impl<'a> RecordWriter<'a> {
    /// A writer into `slot`, after `prefix` bytes (the encoder makes these; benches and
    /// tests of a game's writer may too).
    #[inline]
    pub fn new(slot: &'a mut [u8], prefix: usize) -> Self {
        Self { slot, len: prefix }
    }

    /// Bytes written, prefix included.
    #[allow(clippy::len_without_is_empty)] // a record is never empty: it has a prefix
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn put<const N: usize>(&mut self, bytes: [u8; N]) -> &mut Self {
        if let Some(out) = self.slot.get_mut(self.len..self.len + N) {
            out.copy_from_slice(&bytes);
        }
        self.len += N;
        self
    }

    /// A `u8` field.
    #[inline]
    pub fn u8(&mut self, value: u8) -> &mut Self {
        self.put(value.to_le_bytes())
    }

    /// An `i8` field.
    #[inline]
    pub fn i8(&mut self, value: i8) -> &mut Self {
        self.put(value.to_le_bytes())
    }

    /// A `u16` field.
    #[inline]
    pub fn u16(&mut self, value: u16) -> &mut Self {
        self.put(value.to_le_bytes())
    }

    /// An `i16` field.
    #[inline]
    pub fn i16(&mut self, value: i16) -> &mut Self {
        self.put(value.to_le_bytes())
    }

    /// A `u32` field.
    #[inline]
    pub fn u32(&mut self, value: u32) -> &mut Self {
        self.put(value.to_le_bytes())
    }

    /// An `i32` field.
    #[inline]
    pub fn i32(&mut self, value: i32) -> &mut Self {
        self.put(value.to_le_bytes())
    }
}

/// A game the engine runs. See the module doc for the split, and `docs/GAME_API.md`.
///
/// Everything a game does to the world happens in [`Game::setup`], in its systems, and in
/// the three player hooks, all on the simulation thread in a fixed order: with integer
/// rules, keyed random streams (`crate::rng::SimRng::keyed`) and no iteration order that
/// reaches an outcome, the same inputs give the same world, and recordings verify.
/// [`crate::determinism::assert_deterministic`] checks a game in one line.
pub trait Game: Send + Sync + 'static {
    /// What the encoder reads from each replicated entity: a read-only bevy query. Every
    /// entity with a [`NetId`] that matches it is in the snapshot.
    type Replicated: ReadOnlyQueryData + 'static;

    /// The replication schema: the game's name and version, its kinds and their fields,
    /// and its input command. Called once, when the [`crate::Sim`] is built.
    fn schema(&self) -> Result<Schema, SchemaError>;

    /// Checks the configuration for what this game needs (the engine has checked its own
    /// fields already).
    fn validate(&self, _config: &SimConfig) -> Result<(), crate::ConfigError> {
        Ok(())
    }

    /// Sets up the world: the game's resources and its first entities. The engine's
    /// resources ([`Settings`], [`NetIds`], [`Clients`], [`CurrentTick`], the RNG) are
    /// already in it.
    fn setup(&self, world: &mut World);

    /// Adds the game's systems to the fixed-step schedule, each in [`TickSet::Input`] or
    /// [`TickSet::Simulate`] (chain them: one thread, and a fixed order).
    fn add_systems(&self, schedule: &mut Schedule);

    /// Spawns what a joining client controls, with the [`NetId`] the engine allocated
    /// for it, and returns the entity (the engine adds [`Controlled`] to it).
    fn spawn_player(&self, world: &mut World, client_id: u64, id: NetId) -> Entity;

    /// A client left: by default its entity is despawned.
    fn despawn_player(&self, world: &mut World, entity: Entity) {
        world.despawn(entity);
    }

    /// Applies one input command to the client's entity: `values` holds one value per
    /// input field of the schema, in its order, already clamped into each field's range.
    /// The engine calls it at most once per new sequence number, newest wins.
    fn apply_input(&self, player: EntityWorldMut<'_>, values: &[i64]);

    /// Writes one entity's record (its fields, in schema order, after the prefix the
    /// engine writes) and says its kind and position. Mark the implementation
    /// `#[inline]`: the encoder is instantiated in the crate that names the game, and a
    /// function is not inlined across crates without it (a call and the writer's checks
    /// per record, nearly twice the encoder's time).
    fn write_record(item: QueryItem<'_, '_, Self::Replicated>, out: &mut RecordWriter) -> Placed
    where
        Self: Sized;
}

/// The object-safe part of a [`Game`] the engine calls outside its schedule.
pub(crate) trait PlayerHooks: Send + Sync {
    fn spawn_player(&self, world: &mut World, client_id: u64, id: NetId) -> Entity;
    fn despawn_player(&self, world: &mut World, entity: Entity);
    fn apply_input(&self, player: EntityWorldMut<'_>, values: &[i64]);
}

impl<G: Game> PlayerHooks for G {
    fn spawn_player(&self, world: &mut World, client_id: u64, id: NetId) -> Entity {
        Game::spawn_player(self, world, client_id, id)
    }

    fn despawn_player(&self, world: &mut World, entity: Entity) {
        Game::despawn_player(self, world, entity)
    }

    fn apply_input(&self, player: EntityWorldMut<'_>, values: &[i64]) {
        Game::apply_input(self, player, values)
    }
}

/// Per kind byte, what the encoder needs from the schema: the record's length (0 for an
/// undeclared kind) and the scale of its position (world units to the position's units).
#[derive(Debug, Clone, Resource)]
pub struct RecordLayouts {
    lens: [u8; 256],
    scales: [u16; 256],
    /// Per kind, `cell_size × scale` (the side of a cell in the kind's position units)
    /// as a multiplier that divides by it exactly ([`CellDivisor`]).
    cell_divisors: [CellDivisor; 256],
    /// The longest record of any kind, prefix included.
    pub max_len: usize,
}

impl RecordLayouts {
    /// The layouts of `schema`'s kinds.
    pub fn of(schema: &Schema) -> Self {
        let mut lens = [0u8; 256];
        let mut scales = [1u16; 256];
        for kind in schema.kinds() {
            let len = schema.record_len(kind.kind).unwrap_or(0);
            lens[usize::from(kind.kind)] = len as u8;
            scales[usize::from(kind.kind)] = kind
                .fields
                .iter()
                .find(|f| f.role == FieldRole::PositionX)
                .map_or(1, |f| f.scale.max(1));
        }
        let max_len = lens.iter().copied().max().map_or(0, usize::from);
        Self {
            lens,
            scales,
            cell_divisors: [CellDivisor::new(1); 256],
            max_len,
        }
    }

    /// Sets the side of a cell in world units, for [`RecordLayouts::cell_of`].
    pub fn with_cell_size(mut self, cell_size: u16) -> Self {
        for (divisor, scale) in self.cell_divisors.iter_mut().zip(self.scales) {
            *divisor = CellDivisor::new(u32::from(cell_size.max(1)) * u32::from(scale));
        }
        self
    }

    /// The cell column (or row) of a position of `kind`: `position / (cell_size ×
    /// scale)`, negative positions in the first.
    #[inline]
    pub fn cell_of(&self, kind: u8, position: i32) -> u32 {
        self.cell_divisors[usize::from(kind)].divide(position.max(0) as u32)
    }

    /// Bytes a record of `kind` takes, prefix included; 0 for a kind the schema lacks.
    #[inline]
    pub fn len(&self, kind: u8) -> usize {
        usize::from(self.lens[usize::from(kind)])
    }

    /// The scale of `kind`'s position: position units per world unit.
    #[inline]
    pub fn scale(&self, kind: u8) -> i32 {
        i32::from(self.scales[usize::from(kind)])
    }
}

/// Division by a number fixed for the life of the world, as a multiply: the encoder cuts
/// every entity's position into its cell, and a hardware division per axis and entity
/// cost more than the rest of the record (Lemire, Kaser and Kurz, "Faster remainder by
/// direct computation", 2019: for 32-bit `n` and `d`, `n / d = (m × n) >> 64` with
/// `m = ⌊(2^64 − 1) / d⌋ + 1`).
#[derive(Debug, Clone, Copy)]
struct CellDivisor {
    /// `m`, or 0 when `d` is 1 (where `m` would be 2^64).
    magic: u64,
}

impl CellDivisor {
    fn new(divisor: u32) -> Self {
        let magic = match divisor {
            0 | 1 => 0,
            d => u64::MAX / u64::from(d) + 1,
        };
        Self { magic }
    }

    #[inline]
    fn divide(self, n: u32) -> u32 {
        if self.magic == 0 {
            return n;
        }
        ((u128::from(self.magic) * u128::from(n)) >> 64) as u32
    }
}

/// The game's schema, as a resource (for tools that look inside a world).
#[derive(Debug, Clone, Resource)]
pub struct GameSchema(pub std::sync::Arc<Schema>);

/// Takes one input datagram's commands (`seq` and the raw command bytes, newest first)
/// for `player`, within the per-tick allowance: each command newer than the last applied
/// is read with the schema (values clamped into range and counted) and handed to
/// `apply`. Returns nothing; the counters say what happened.
pub(crate) fn take_commands<'c>(
    schema: &Schema,
    player: &mut Controlled,
    commands: impl Iterator<Item = &'c [u8]>,
    max_per_tick: u8,
    counters: &mut SimCounters,
    mut apply: impl FnMut(&[i64]),
) {
    if player.datagrams_this_tick >= max_per_tick {
        counters.inputs_dropped_rate += 1;
        return;
    }
    player.datagrams_this_tick += 1;
    let mut values = [0i64; MAX_FIELDS];
    for bytes in commands {
        let Ok((seq, clamped)) = schema.read_input(bytes, &mut values) else {
            // The net layer sized every command from this schema; a short one is a bug
            // upstream, and applying nothing is the safe answer.
            continue;
        };
        if player.last_seq.is_none_or(|last| seq > last) {
            counters.inputs_clamped += u64::from(clamped > 0);
            apply(&values[..schema.input().len()]);
            player.last_seq = Some(seq);
            counters.inputs_applied += 1;
        } else {
            counters.inputs_already_applied += 1;
        }
    }
}

/// Resets every client's per-tick input allowance (first in [`TickSet::Input`]).
pub fn reset_input_allowance(mut players: Query<&mut Controlled>) {
    for mut player in &mut players {
        player.datagrams_this_tick = 0;
    }
}

/// Why a game's records disagree with its schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordCheckError {
    /// A record of a kind the schema does not declare.
    #[error("entity {net_id} was written as kind {kind}, which the schema does not declare")]
    UnknownKind {
        /// The entity.
        net_id: u32,
        /// The kind byte written.
        kind: u8,
    },
    /// A record longer or shorter than its kind's layout.
    #[error(
        "entity {net_id} of kind {kind} was written in {written} bytes; its schema says {declared}"
    )]
    WrongLength {
        /// The entity.
        net_id: u32,
        /// Its kind byte.
        kind: u8,
        /// Bytes written, prefix included.
        written: usize,
        /// Bytes the schema gives the kind, prefix included.
        declared: usize,
    },
}

/// Writes every replicated entity of `world` with `G`'s writer and checks each record
/// against `schema`: the test a game runs to know its writer and its schema agree
/// (the encoder also drops and counts a record that disagrees, in `records_malformed`).
/// Returns how many records were checked.
pub fn check_records<G: Game>(
    world: &mut World,
    schema: &Schema,
) -> Result<usize, RecordCheckError> {
    let layouts = RecordLayouts::of(schema);
    let mut query = world.query::<(&NetId, G::Replicated)>();
    let mut slot = [0u8; tickcast_shared::schema::MAX_RECORD_LEN];
    let mut checked = 0;
    for (id, item) in query.iter(world) {
        let mut writer = RecordWriter::new(&mut slot, RECORD_PREFIX_LEN);
        let placed = G::write_record(item, &mut writer);
        let written = writer.len();
        let declared = layouts.len(placed.kind);
        if declared == 0 {
            return Err(RecordCheckError::UnknownKind {
                net_id: id.0,
                kind: placed.kind,
            });
        }
        if written != declared {
            return Err(RecordCheckError::WrongLength {
                net_id: id.0,
                kind: placed.kind,
                written,
                declared,
            });
        }
        checked += 1;
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cell_divisor_divides_exactly() {
        for d in [1u32, 2, 3, 7, 64, 1000, 4096, 65_535, 1 << 20, u32::MAX] {
            let divisor = CellDivisor::new(d);
            for n in (0..200_000u32).chain([u32::MAX - 1, u32::MAX, d - 1, d, d.saturating_add(1)])
            {
                assert_eq!(divisor.divide(n), n / d, "{n} / {d}");
            }
        }
    }
}
