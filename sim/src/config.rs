//! The simulation's configuration.

use tickcast_shared::chunk::{
    DEFAULT_CHUNK_PAYLOAD, MAX_CHUNK_PAYLOAD, MIN_CHUNK_PAYLOAD, POSITION_SCALE, directory_len,
};

/// How the world is set up and how it runs. Every field has a default that says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Ticks per second. Default 30: the broadcast rate the seed's failing server ran at.
    pub tick_rate: u16,
    /// Arena width in world units, 1 to 1023 (positions travel as `u16` in 1/64 units).
    /// Default 1,000: room for a couple of thousand players, each seeing a few percent
    /// of it.
    pub arena_width: u16,
    /// Arena height in world units. Default 1,000.
    pub arena_height: u16,
    /// Side of a spatial cell in world units. Snapshot chunks group entities by cell, and
    /// a client is sent the cells around its player's (the net layer's `view_cells`).
    /// Default 64: a 16 × 16 grid on the default arena; a view of 3 × 3 cells is 192
    /// units wide, and at 1,600 entities holds about 60 of them, one packet's worth.
    pub cell_size: u16,
    /// NPCs spawned at start. Default 200: enough that a snapshot spans several chunks.
    pub npcs: u32,
    /// Seed of the world's RNG. Default 1; the same seed and inputs give the same world.
    pub seed: u64,
    /// Largest chunk in bytes. Default 1,150 (see `tickcast_shared::chunk`).
    pub chunk_payload: usize,
    /// Snapshot buffers in the pool. Default 4: one being written, one in the handoff,
    /// one being sent, one spare for a tick when sending runs late.
    pub snapshot_buffers: usize,
    /// Player speed in world units per second. Default 48.
    pub player_speed: u32,
    /// NPC speed in world units per second. Default 24.
    pub npc_speed: u32,
    /// Input datagrams applied per client per tick; the rest are dropped and counted.
    /// Default 4: a client sends one per tick, 4 absorbs bunching after a stall.
    pub max_inputs_per_tick: u8,
    /// Projectile speed in world units per second. Default 160: fast enough to hit a
    /// walking target, slow enough that it crosses several ticks.
    pub projectile_speed: u32,
    /// How long a projectile flies, in milliseconds. Default 1,500 (240 units of range).
    pub projectile_lifetime_ms: u32,
    /// Least time between two shots of one player, in milliseconds. Default 250.
    pub fire_interval_ms: u32,
    /// Health a hit takes. Default 25: four hits down a full-health target.
    pub hit_damage: u8,
    /// A projectile hits a target within this many world units. Default 8.
    pub hit_radius: u16,
    /// Players the world's storage is sized for at start (their projectiles too), so
    /// that a tick with a new record number of projectiles does not allocate. More
    /// players still work; their first volleys may grow storage once. Default 256; the
    /// server sets it to its client limit.
    pub max_players: u32,
    /// Entities the snapshot buffers are sized for at start; more grow them once.
    /// Default 0: derived from `npcs` plus room for 256 players.
    pub expected_entities: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            tick_rate: 30,
            arena_width: 1000,
            arena_height: 1000,
            cell_size: 64,
            npcs: 200,
            seed: 1,
            chunk_payload: DEFAULT_CHUNK_PAYLOAD,
            snapshot_buffers: 4,
            player_speed: 48,
            npc_speed: 24,
            max_inputs_per_tick: 4,
            projectile_speed: 160,
            projectile_lifetime_ms: 1500,
            fire_interval_ms: 250,
            hit_damage: 25,
            hit_radius: 8,
            max_players: 256,
            expected_entities: 0,
        }
    }
}

/// A configuration value the simulation cannot run with: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid simulation config: {reason}")]
pub struct ConfigError {
    /// The `SimConfig` field at fault (a front end maps it to its flag or key).
    pub field: &'static str,
    /// What is wrong with it, naming the value and the allowed range.
    pub reason: String,
}

impl SimConfig {
    /// Checks every field; returns the first problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, reason: String| Err(ConfigError { field, reason });
        if !(1..=240).contains(&self.tick_rate) {
            return bad(
                "tick_rate",
                format!("tick_rate {} must be 1 to 240", self.tick_rate),
            );
        }
        for (name, side) in [
            ("arena_width", self.arena_width),
            ("arena_height", self.arena_height),
        ] {
            if !(1..=1023).contains(&side) {
                return bad(name, format!("{name} {side} must be 1 to 1023 world units"));
            }
        }
        if self.cell_size == 0 {
            return bad("cell_size", "cell_size must be at least 1".into());
        }
        // quinn allows datagrams of 1,162 bytes on a fresh path (the 1,200-byte QUIC
        // minimum less its headers), and a datagram is a chunk plus a 2-byte prefix.
        if !(MIN_CHUNK_PAYLOAD..=MAX_CHUNK_PAYLOAD).contains(&self.chunk_payload) {
            return bad(
                "chunk_payload",
                format!(
                    "chunk_payload {} must be {MIN_CHUNK_PAYLOAD} to {MAX_CHUNK_PAYLOAD}",
                    self.chunk_payload
                ),
            );
        }
        // The tick directory has one bit per cell and is one datagram.
        if directory_len(self.cells()) > self.chunk_payload {
            return bad(
                "cell_size",
                format!(
                    "cell_size {} makes {} cells, too many for one tick directory of at most \
                 {} bytes; use larger cells",
                    self.cell_size,
                    self.cells(),
                    self.chunk_payload
                ),
            );
        }
        if self.snapshot_buffers < 2 {
            return bad(
                "snapshot_buffers",
                "snapshot_buffers must be at least 2".into(),
            );
        }
        if self.hit_radius == 0 || self.hit_radius > 64 {
            return bad(
                "hit_radius",
                format!("hit_radius {} must be 1 to 64 world units", self.hit_radius),
            );
        }
        if self.npcs > 1_000_000 {
            return bad("npcs", format!("npcs {} exceeds 1,000,000", self.npcs));
        }
        Ok(())
    }

    /// Columns of the cell grid.
    pub fn cell_columns(&self) -> usize {
        usize::from(self.arena_width).div_ceil(usize::from(self.cell_size))
    }

    /// Rows of the cell grid.
    pub fn cell_rows(&self) -> usize {
        usize::from(self.arena_height).div_ceil(usize::from(self.cell_size))
    }

    /// Number of cells in the grid.
    pub fn cells(&self) -> usize {
        self.cell_columns() * self.cell_rows()
    }

    /// Ticks a duration in milliseconds lasts at this tick rate (at least 1).
    pub fn ticks_for_ms(&self, ms: u32) -> u32 {
        (ms * u32::from(self.tick_rate) / 1000).max(1)
    }

    /// The most projectiles alive at once: one per fire interval per player.
    pub fn max_projectiles(&self) -> usize {
        let per_player = self.ticks_for_ms(self.projectile_lifetime_ms)
            / self.ticks_for_ms(self.fire_interval_ms)
            + 1;
        self.max_players as usize * per_player as usize
    }

    /// Largest position on each axis, in 1/64 units.
    pub fn max_position(&self) -> (i32, i32) {
        let scale = POSITION_SCALE as i32;
        (
            i32::from(self.arena_width) * scale - 1,
            i32::from(self.arena_height) * scale - 1,
        )
    }
}
