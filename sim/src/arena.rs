//! The arena, the demo game, on the engine's [`Game`] interface: players moved by their
//! inputs under server rules, NPCs that wander, projectiles, health and score.
//!
//! Positions are integers in 1/64 world units, and every rule is integer arithmetic, so
//! the same inputs give the same world on every machine.

use bevy_ecs::prelude::*;
use bevy_ecs::query::QueryItem;
use bevy_ecs::schedule::IntoScheduleConfigs;
use bevy_ecs::world::EntityWorldMut;
use tickcast_shared::chunk::{KIND_NPC, KIND_PLAYER, KIND_PROJECTILE, POSITION_SCALE};
use tickcast_shared::msg::{BUTTON_FIRE, InputCmd};
use tickcast_shared::schema::{
    EntityKind, Field, FieldRole, FieldType, InputField, InputRole, Schema, SchemaError,
};

use crate::config::SimConfig;
use crate::engine::{
    Clients, CurrentTick, Game, NetId, NetIds, Placed, RecordWriter, Settings, TickSet,
};
use crate::rng::SimRng;

/// The demo game's name in its [`arena_schema`].
pub const ARENA_GAME: &str = "arena";
/// The demo game's version in its [`arena_schema`]: raised when its records, inputs or
/// rules change, so a recording of another version is refused rather than misread.
pub const ARENA_GAME_VERSION: u16 = 1;

/// What the demo game's snapshot records and inputs hold, as a
/// [`tickcast_shared::schema::Schema`]: a program with only this schema reads the same
/// values as one compiled against `tickcast_shared::chunk::EntityRecord` and
/// `tickcast_shared::msg::InputCmd` (a test in `sim/tests/schema.rs` holds the two equal
/// on a real tick). Every kind shares one 14-byte layout, the last field named for what
/// it carries in that kind.
pub fn arena_schema() -> Result<Schema, SchemaError> {
    let scale = POSITION_SCALE as u16;
    let kind = |kind: u8, name: &str, glyph: u8, aux: &str| EntityKind {
        kind,
        name: name.into(),
        glyph,
        fields: vec![
            Field::new("health", FieldType::U8).role(FieldRole::Health),
            Field::new("x", FieldType::U16)
                .role(FieldRole::PositionX)
                .scale(scale),
            Field::new("y", FieldType::U16)
                .role(FieldRole::PositionY)
                .scale(scale),
            Field::new("angle", FieldType::U16).role(FieldRole::Angle),
            Field::new(aux, FieldType::U16),
        ],
    };
    Schema::new(
        ARENA_GAME,
        ARENA_GAME_VERSION,
        vec![
            kind(KIND_PLAYER, "player", b'P', "score"),
            kind(KIND_NPC, "npc", b'n', "aux"),
            kind(KIND_PROJECTILE, "projectile", b'*', "owner"),
        ],
        vec![
            InputField::new("move_x", FieldType::I8, -127, 127).role(InputRole::MoveX),
            InputField::new("move_y", FieldType::I8, -127, 127).role(InputRole::MoveY),
            InputField::new("aim", FieldType::U16, 0, 65_535).role(InputRole::Aim),
            InputField::new("buttons", FieldType::U8, 0, 255).buttons(&["fire"]),
        ],
    )
}

/// What an entity is, as the snapshot names it (`tickcast_shared::chunk::KIND_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Component)]
pub struct Kind(pub u8);

/// Position in 1/64 world units, within the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Component)]
pub struct Position {
    /// X, 0 at the left edge.
    pub x: i32,
    /// Y, 0 at the top edge.
    pub y: i32,
}

/// Heading, a full turn in 65,536 steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Component)]
pub struct Heading(pub u16);

/// Health, 0 to 255.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Component)]
pub struct Health(pub u8);

/// A player-controlled entity (the engine's `Controlled` says by whom).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Component)]
pub struct Player {
    /// The newest input: what the player wants this tick (its `seq` is not used).
    pub intent: InputCmd,
    /// Ticks until this player may fire again.
    pub cooldown: u16,
    /// Score.
    pub score: u16,
}

/// A wandering NPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Component)]
pub struct Npc {
    /// Index into [`COMPASS`].
    pub direction: u8,
    /// Ticks until it picks a new direction.
    pub ticks_left: u16,
}

/// Eight directions as (dx, dy) intents, 0 = +x, counter-clockwise with y down.
pub const COMPASS: [(i8, i8); 8] = [
    (127, 0),
    (90, -90),
    (0, -127),
    (-90, -90),
    (-127, 0),
    (-90, 90),
    (0, 127),
    (90, 90),
];

/// How far an entity moves in one tick at `speed` world units per second, in 1/64 units.
pub fn step_per_tick(speed: u32, tick_rate: u16) -> i32 {
    (speed * POSITION_SCALE / u32::from(tick_rate.max(1))) as i32
}

/// Moves `(x, y)` by an intent of up to 127 on each axis, scaled so the length of the
/// move never exceeds `step` (diagonals are not faster), and clamps it to the arena.
pub fn move_by_intent(pos: &mut Position, intent: (i8, i8), step: i32, max: (i32, i32)) {
    let dx = i32::from(intent.0.max(-127));
    let dy = i32::from(intent.1.max(-127));
    let length = isqrt((dx * dx + dy * dy) as u32) as i32;
    if length == 0 {
        return;
    }
    let denominator = length.max(127);
    pos.x = (pos.x + dx * step / denominator).clamp(0, max.0);
    pos.y = (pos.y + dy * step / denominator).clamp(0, max.1);
}

/// Integer square root (floor).
fn isqrt(n: u32) -> u32 {
    if n < 2 {
        return n;
    }
    let mut x = n;
    let mut y = x.div_ceil(2);
    while y < x {
        x = y;
        y = (x + n / x) / 2;
    }
    x
}

/// A random position inside the arena.
pub fn random_position(rng: &mut SimRng, config: &SimConfig) -> Position {
    let (max_x, max_y) = config.max_position();
    Position {
        x: rng.below(max_x as u32 + 1) as i32,
        y: rng.below(max_y as u32 + 1) as i32,
    }
}

/// Spawns one NPC.
pub fn spawn_npc(world: &mut World) -> NetId {
    let config = world.resource::<Settings>().0.clone();
    let (position, npc) = {
        let mut rng = world.resource_mut::<SimRng>();
        let position = random_position(&mut rng, &config);
        let npc = Npc {
            direction: rng.below(8) as u8,
            ticks_left: 15 + rng.below(60) as u16,
        };
        (position, npc)
    };
    let id = world.resource_mut::<NetIds>().allocate();
    world.spawn((
        id,
        Kind(KIND_NPC),
        position,
        Heading(u16::from(npc.direction) * 8192),
        Health(100),
        npc,
    ));
    id
}

/// The arena as a [`Game`]: what the engine calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct Arena;

impl Game for Arena {
    type Replicated = (
        &'static Kind,
        &'static Position,
        &'static Heading,
        &'static Health,
        Option<&'static Player>,
        Option<&'static Projectile>,
    );

    fn schema(&self) -> Result<Schema, SchemaError> {
        arena_schema()
    }

    fn setup(&self, world: &mut World) {
        world.insert_resource(CollisionGrid::default());
        let npcs = world.resource::<Settings>().0.npcs;
        for _ in 0..npcs {
            spawn_npc(world);
        }
        reserve_projectile_storage(world);
    }

    fn add_systems(&self, schedule: &mut Schedule) {
        schedule.add_systems((
            apply_inputs.in_set(TickSet::Input),
            (
                move_players,
                wander_npcs,
                fire_projectiles,
                move_projectiles,
                resolve_hits,
                respawn_fallen,
            )
                .chain()
                .in_set(TickSet::Simulate),
        ));
    }

    fn spawn_player(&self, world: &mut World, _client_id: u64, id: NetId) -> Entity {
        let config = world.resource::<Settings>().0.clone();
        let position = random_position(&mut world.resource_mut::<SimRng>(), &config);
        world
            .spawn((
                id,
                Kind(KIND_PLAYER),
                position,
                Heading(0),
                Health(100),
                Player::default(),
            ))
            .id()
    }

    fn apply_input(&self, mut player: EntityWorldMut<'_>, values: &[i64]) {
        // The schema's ranges hold every value in its field's type: the casts are exact.
        if let (Some(mut player), [move_x, move_y, aim, buttons]) =
            (player.get_mut::<Player>(), values)
        {
            player.intent.move_x = *move_x as i8;
            player.intent.move_y = *move_y as i8;
            player.intent.aim = *aim as u16;
            player.intent.buttons = *buttons as u8;
        }
    }

    #[inline]
    fn write_record(
        (kind, position, heading, health, player, projectile): QueryItem<'_, '_, Self::Replicated>,
        out: &mut RecordWriter,
    ) -> Placed {
        // Positions are kept in 1/64 units and the arena is under 1024 units, so the
        // `u16` is exact, not a rounding.
        let x = position.x.clamp(0, i32::from(u16::MAX));
        let y = position.y.clamp(0, i32::from(u16::MAX));
        let aux = match (player, projectile) {
            (Some(player), _) => player.score,
            // The low 16 bits of the shooter's id: enough for a client to tell its own.
            (None, Some(projectile)) => projectile.owner.0 as u16,
            (None, None) => 0,
        };
        out.u8(health.0)
            .u16(x as u16)
            .u16(y as u16)
            .u16(heading.0)
            .u16(aux);
        Placed { kind: kind.0, x, y }
    }
}

/// Each player's heading follows its aim.
pub fn apply_inputs(mut players: Query<(&Player, &mut Heading)>) {
    for (player, mut heading) in &mut players {
        heading.0 = player.intent.aim;
    }
}

/// Moves players by their intent at no more than the player speed.
pub fn move_players(settings: Res<Settings>, mut players: Query<(&Player, &mut Position)>) {
    let config = &settings.0;
    let step = step_per_tick(config.player_speed, config.tick_rate);
    let max = config.max_position();
    for (player, mut position) in &mut players {
        let intent = (player.intent.move_x, player.intent.move_y);
        move_by_intent(&mut position, intent, step, max);
    }
}

/// NPCs walk in one of eight directions and pick a new one now and then, or at a wall.
/// Each NPC draws from its own keyed random stream (its net id and the tick), so the
/// result does not depend on the order the ECS iterates them in.
pub fn wander_npcs(
    settings: Res<Settings>,
    rng: Res<SimRng>,
    tick: Res<CurrentTick>,
    mut npcs: Query<(&NetId, &mut Npc, &mut Position, &mut Heading)>,
) {
    let config = &settings.0;
    let step = step_per_tick(config.npc_speed, config.tick_rate);
    let max = config.max_position();
    for (id, mut npc, mut position, mut heading) in &mut npcs {
        if npc.ticks_left == 0 {
            let draw = rng.keyed(u64::from(id.0), u64::from(tick.0.get()));
            npc.direction = (draw % 8) as u8;
            npc.ticks_left = 15 + ((draw >> 8) % 60) as u16;
        }
        npc.ticks_left -= 1;
        let intent = COMPASS[usize::from(npc.direction)];
        let before = *position;
        move_by_intent(&mut position, intent, step, max);
        let blocked =
            (position.x == before.x && intent.0 != 0) || (position.y == before.y && intent.1 != 0);
        if blocked {
            npc.ticks_left = 0;
        }
        heading.0 = u16::from(npc.direction) * 8192;
    }
}

/// Query filter: what projectiles can hit (players and NPCs).
pub type IsTarget = Or<(With<Player>, With<Npc>)>;

/// A projectile in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Component)]
pub struct Projectile {
    /// Who fired it.
    pub owner: NetId,
    /// Movement per tick in 1/64 units.
    pub velocity: (i32, i32),
    /// Ticks until it falls.
    pub ticks_left: u32,
}

/// Sine of a quarter turn in 64 steps, scaled to 32,767. A table rather than `f64::sin`
/// so that every platform and libm computes the same directions.
const QUARTER_SINE: [i32; 65] = [
    0, 804, 1608, 2410, 3212, 4011, 4808, 5602, 6393, 7179, 7962, 8739, 9512, 10278, 11039, 11793,
    12539, 13279, 14010, 14732, 15446, 16151, 16846, 17530, 18204, 18868, 19519, 20159, 20787,
    21403, 22005, 22594, 23170, 23731, 24279, 24811, 25329, 25832, 26319, 26790, 27245, 27683,
    28105, 28510, 28898, 29268, 29621, 29956, 30273, 30571, 30852, 31113, 31356, 31580, 31785,
    31971, 32137, 32285, 32412, 32521, 32609, 32678, 32728, 32757, 32767,
];

/// The unit vector of a heading (256 directions), scaled to 32,767, in screen
/// coordinates: angle 0 is +x and angles turn counter-clockwise, so y = -sin.
pub fn direction_of(angle: u16) -> (i32, i32) {
    let step = ((u32::from(angle) + 128) >> 8) & 255;
    let (quadrant, i) = ((step / 64) as usize, (step % 64) as usize);
    let (sin, cos) = match quadrant {
        0 => (QUARTER_SINE[i], QUARTER_SINE[64 - i]),
        1 => (QUARTER_SINE[64 - i], -QUARTER_SINE[i]),
        2 => (-QUARTER_SINE[i], -QUARTER_SINE[64 - i]),
        _ => (-QUARTER_SINE[64 - i], QUARTER_SINE[i]),
    };
    (cos, -sin)
}

/// Players holding fire shoot along their aim, at most once per fire interval.
///
/// Players are visited in client-id order (the [`Clients`] map), not query order: each
/// shot takes the next [`NetId`], and query order is storage order, which no rule
/// chose (the engine's determinism check, reordering storage, caught the first version
/// of this system handing out ids in query order).
pub fn fire_projectiles(
    mut commands: Commands,
    settings: Res<Settings>,
    mut ids: ResMut<NetIds>,
    clients: Res<Clients>,
    mut players: Query<(&NetId, &Position, &mut Player)>,
) {
    let config = &settings.0;
    let speed = step_per_tick(config.projectile_speed, config.tick_rate);
    let lifetime = config.ticks_for_ms(config.projectile_lifetime_ms);
    let interval = config.ticks_for_ms(config.fire_interval_ms) as u16;
    for &entity in clients.0.values() {
        let Ok((id, position, mut player)) = players.get_mut(entity) else {
            continue;
        };
        if player.cooldown > 0 {
            player.cooldown -= 1;
            continue;
        }
        if player.intent.buttons & BUTTON_FIRE == 0 {
            continue;
        }
        player.cooldown = interval.saturating_sub(1);
        let (dx, dy) = direction_of(player.intent.aim);
        commands.spawn((
            ids.allocate(),
            Kind(KIND_PROJECTILE),
            *position,
            Heading(player.intent.aim),
            Health(1),
            Projectile {
                owner: *id,
                velocity: (dx * speed / 32_767, dy * speed / 32_767),
                ticks_left: lifetime,
            },
        ));
    }
}

/// Grows the projectile storage to hold the most projectiles that can be alive at once,
/// by spawning and despawning that many placeholders: ECS tables keep their capacity, so
/// later volleys never allocate.
pub fn reserve_projectile_storage(world: &mut World) {
    let count = world.resource::<Settings>().0.max_projectiles();
    let placeholder = (
        NetId(u32::MAX),
        Kind(KIND_PROJECTILE),
        Position { x: 0, y: 0 },
        Heading(0),
        Health(1),
        Projectile {
            owner: NetId(u32::MAX),
            velocity: (0, 0),
            ticks_left: 0,
        },
    );
    let entities: Vec<Entity> = (0..count).map(|_| world.spawn(placeholder).id()).collect();
    for entity in entities {
        world.despawn(entity);
    }
    world.clear_trackers();
}

/// Projectiles fly straight and fall at the end of their range or at a wall.
pub fn move_projectiles(
    mut commands: Commands,
    settings: Res<Settings>,
    mut projectiles: Query<(Entity, &mut Projectile, &mut Position)>,
) {
    let (max_x, max_y) = settings.0.max_position();
    for (entity, mut projectile, mut position) in &mut projectiles {
        position.x += projectile.velocity.0;
        position.y += projectile.velocity.1;
        projectile.ticks_left = projectile.ticks_left.saturating_sub(1);
        let outside = !(0..=max_x).contains(&position.x) || !(0..=max_y).contains(&position.y);
        if outside || projectile.ticks_left == 0 {
            commands.entity(entity).despawn();
        }
    }
}

/// Side of a collision-grid cell in world units: at least the largest hit radius, so a
/// hit is always within the 3 × 3 cells around a projectile.
pub const COLLISION_CELL: i32 = 64;

/// A uniform grid of targets (players and NPCs), rebuilt every tick in place: bucket
/// heads per cell and a next-link per target, so rebuilding allocates nothing once the
/// vectors have grown to the world's size.
#[derive(Debug, Default, Resource)]
pub struct CollisionGrid {
    columns: i32,
    rows: i32,
    heads: Vec<u32>,
    next: Vec<u32>,
    targets: Vec<(NetId, Entity, Position)>,
    projectiles: Vec<(NetId, Entity)>,
}

const NO_TARGET: u32 = u32::MAX;

impl CollisionGrid {
    fn cell_of(&self, position: Position) -> (i32, i32) {
        let side = COLLISION_CELL * POSITION_SCALE as i32;
        (
            (position.x / side).clamp(0, self.columns - 1),
            (position.y / side).clamp(0, self.rows - 1),
        )
    }

    fn rebuild(
        &mut self,
        config: &SimConfig,
        targets: impl Iterator<Item = (NetId, Entity, Position)>,
    ) {
        self.columns = i32::from(config.arena_width.div_ceil(COLLISION_CELL as u16));
        self.rows = i32::from(config.arena_height.div_ceil(COLLISION_CELL as u16));
        self.heads.clear();
        self.heads
            .resize((self.columns * self.rows) as usize, NO_TARGET);
        self.targets.clear();
        self.next.clear();
        for target in targets {
            let (cx, cy) = self.cell_of(target.2);
            let cell = (cy * self.columns + cx) as usize;
            self.next.push(self.heads[cell]);
            self.heads[cell] = self.targets.len() as u32;
            self.targets.push(target);
        }
    }

    /// The lowest-id target within `radius` (1/64 units) of `at`, other than `except`.
    fn nearest_hit(&self, at: Position, radius: i32, except: NetId) -> Option<(NetId, Entity)> {
        let (cx, cy) = self.cell_of(at);
        let mut best: Option<(NetId, Entity)> = None;
        for y in (cy - 1).max(0)..=(cy + 1).min(self.rows - 1) {
            for x in (cx - 1).max(0)..=(cx + 1).min(self.columns - 1) {
                let mut index = self.heads[(y * self.columns + x) as usize];
                while index != NO_TARGET {
                    let (id, entity, position) = self.targets[index as usize];
                    let (dx, dy) = (i64::from(position.x - at.x), i64::from(position.y - at.y));
                    let close = dx * dx + dy * dy <= i64::from(radius) * i64::from(radius);
                    if close && id != except && best.is_none_or(|(b, _)| id < b) {
                        best = Some((id, entity));
                    }
                    index = self.next[index as usize];
                }
            }
        }
        best
    }
}

/// Projectiles that reach a target hurt it and fall; a target brought to zero health
/// scores a point for the shooter. Projectiles are resolved in `NetId` order and each hits
/// the lowest-id target in reach, so the outcome does not depend on storage order.
#[allow(clippy::too_many_arguments)]
pub fn resolve_hits(
    mut commands: Commands,
    settings: Res<Settings>,
    mut grid: ResMut<CollisionGrid>,
    targets: Query<(&NetId, Entity, &Position), IsTarget>,
    projectiles: Query<(&NetId, Entity, &Position, &Projectile)>,
    mut health: Query<&mut Health, Without<Projectile>>,
    mut scorers: Query<(&NetId, &mut Player)>,
    clients: Res<Clients>,
) {
    let config = &settings.0;
    let grid = &mut *grid;
    grid.rebuild(config, targets.iter().map(|(id, e, p)| (*id, e, *p)));
    grid.projectiles.clear();
    // At most one projectile per fire interval per player is alive: reserve for that so a
    // new record volley does not allocate mid-game.
    let per_player = config.ticks_for_ms(config.projectile_lifetime_ms)
        / config.ticks_for_ms(config.fire_interval_ms)
        + 1;
    grid.projectiles
        .reserve(clients.0.len() * per_player as usize);
    grid.projectiles
        .extend(projectiles.iter().map(|(id, e, _, _)| (*id, e)));
    grid.projectiles.sort_unstable_by_key(|(id, _)| *id);
    let radius = i32::from(config.hit_radius) * POSITION_SCALE as i32;
    for index in 0..grid.projectiles.len() {
        let (_, entity) = grid.projectiles[index];
        let Ok((_, _, position, projectile)) = projectiles.get(entity) else {
            continue;
        };
        let Some((_, target)) = grid.nearest_hit(*position, radius, projectile.owner) else {
            continue;
        };
        let Ok(mut target_health) = health.get_mut(target) else {
            continue;
        };
        if target_health.0 == 0 {
            continue;
        }
        commands.entity(entity).despawn();
        target_health.0 = target_health.0.saturating_sub(config.hit_damage);
        if target_health.0 == 0 {
            credit_kill(projectile.owner, &clients, &mut scorers);
        }
    }
}

fn credit_kill(owner: NetId, clients: &Clients, scorers: &mut Query<(&NetId, &mut Player)>) {
    // Find the owner among connected players (it may have left since it fired).
    for entity in clients.0.values() {
        if let Ok((id, mut player)) = scorers.get_mut(*entity)
            && *id == owner
        {
            player.score = player.score.saturating_add(1);
            return;
        }
    }
}

/// Targets at zero health come back at a random place with full health, in `NetId` order
/// so the RNG is drawn from in the same order every run.
pub fn respawn_fallen(
    settings: Res<Settings>,
    mut rng: ResMut<SimRng>,
    mut fallen: Local<Vec<(NetId, Entity)>>,
    mut targets: Query<(&NetId, Entity, &mut Position, &mut Health), IsTarget>,
    clients: Res<Clients>,
) {
    // Room for every target to fall at once, reserved up front: growing to each new
    // record number of simultaneous deaths would allocate mid-game.
    let most = settings.0.npcs as usize + clients.0.len();
    fallen.clear();
    fallen.reserve(most);
    fallen.extend(
        targets
            .iter()
            .filter(|(_, _, _, health)| health.0 == 0)
            .map(|(id, entity, _, _)| (*id, entity)),
    );
    fallen.sort_unstable_by_key(|(id, _)| *id);
    for &(_, entity) in fallen.iter() {
        if let Ok((_, _, mut position, mut health)) = targets.get_mut(entity) {
            *position = random_position(&mut rng, &settings.0);
            health.0 = 100;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagonal_moves_are_no_faster_than_straight_ones() {
        let max = (1 << 20, 1 << 20);
        let step = 100;
        let mut straight = Position { x: 1000, y: 1000 };
        move_by_intent(&mut straight, (127, 0), step, max);
        assert_eq!(straight, Position { x: 1100, y: 1000 });
        let mut diagonal = Position { x: 1000, y: 1000 };
        move_by_intent(&mut diagonal, (127, 127), step, max);
        let (dx, dy) = (diagonal.x - 1000, diagonal.y - 1000);
        assert!(dx * dx + dy * dy <= step * step, "moved ({dx}, {dy})");
        let mut extreme = Position { x: 1000, y: 1000 };
        move_by_intent(&mut extreme, (-128, -128), step, max);
        assert!((extreme.x - 1000).pow(2) + (extreme.y - 1000).pow(2) <= step * step);
    }

    #[test]
    fn moves_stop_at_the_arena_edge() {
        let mut pos = Position { x: 5, y: 5 };
        move_by_intent(&mut pos, (-127, -127), 100, (1000, 1000));
        assert_eq!(pos, Position { x: 0, y: 0 });
        let mut pos = Position { x: 995, y: 995 };
        move_by_intent(&mut pos, (127, 127), 100, (1000, 1000));
        assert_eq!(pos, Position { x: 1000, y: 1000 });
    }

    #[test]
    fn directions_are_unit_vectors_in_screen_coordinates() {
        assert_eq!(direction_of(0), (32_767, 0));
        assert_eq!(
            direction_of(16_384),
            (0, -32_767),
            "a quarter turn points up"
        );
        assert_eq!(direction_of(32_768), (-32_767, 0));
        assert_eq!(direction_of(49_152), (0, 32_767));
        for angle in (0..=u16::MAX).step_by(97) {
            let (x, y) = direction_of(angle);
            let length2 = i64::from(x) * i64::from(x) + i64::from(y) * i64::from(y);
            assert!(
                (length2 - 32_767i64 * 32_767).abs() < 32_767 * 100,
                "{angle}"
            );
        }
    }

    #[test]
    fn isqrt_is_the_floor() {
        for n in 0..20_000u32 {
            let r = isqrt(n);
            assert!(r * r <= n && (r + 1) * (r + 1) > n, "{n}");
        }
    }
}
