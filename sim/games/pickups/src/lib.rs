//! Pickups: the second tickcast game, and the worked example of `docs/GAME_API.md`.
//!
//! Two teams of runners race for gems. Gems appear at random places every half second
//! and vanish after ten seconds if nobody takes them; a runner that reaches one scores
//! its value for the runner's team. A runner moves with a stick and can **dash**: a
//! button that jumps it along its aim, then waits a second to recharge. One scoreboard
//! entity, at the middle of the map, carries both teams' scores to every client that
//! sees the middle.
//!
//! It differs from the arena in kind: entities that spawn and despawn on the game's own
//! schedule, a team score, records of three lengths (11, 10 and 13 bytes) with positions
//! in 1/16 units rather than 1/64, and an input whose fields are in another order with
//! narrower ranges. It is written only against `tickcast_sim::engine`: nothing in the
//! engine knows it exists.
//!
//! Every rule is integer arithmetic, draws come from keyed random streams, and every
//! choice among several entities goes by lowest [`NetId`], so the game passes the
//! engine's determinism check (`tests/pickups.rs`).

#![forbid(unsafe_code)]

use bevy_ecs::prelude::*;
use bevy_ecs::query::QueryItem;
use bevy_ecs::schedule::IntoScheduleConfigs;
use bevy_ecs::world::EntityWorldMut;
use tickcast_shared::schema::{
    EntityKind, Field, FieldRole, FieldType, InputField, InputRole, Schema, SchemaError,
};
use tickcast_sim::engine::{
    Clients, CurrentTick, Game, NetId, NetIds, Placed, RecordWriter, Settings, TickSet,
};
use tickcast_sim::rng::SimRng;
use tickcast_sim::{ConfigError, SimConfig};

/// The game's name in its schema.
pub const GAME: &str = "pickups";
/// The game's version: raised when its records, inputs or rules change.
pub const GAME_VERSION: u16 = 1;

/// Kind byte of a runner (a player).
pub const KIND_RUNNER: u8 = 1;
/// Kind byte of a gem.
pub const KIND_GEM: u8 = 2;
/// Kind byte of the scoreboard.
pub const KIND_SCOREBOARD: u8 = 3;

/// Positions are kept and sent in 1/16 world units.
pub const SCALE: i32 = 16;
/// Button bit: dash.
pub const BUTTON_DASH: u8 = 0b1;
/// Stick values run from -100 to 100 (the schema clamps anything beyond).
pub const STICK_MAX: i32 = 100;

/// The rules' numbers. [`Default`] is what `pickups-server` runs, and what a recording of
/// it is verified with; the world's size, tick rate, seed and runner speed
/// (`player_speed`) come from the engine's `SimConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pickups {
    /// Most gems on the map at once. Default 40.
    pub max_gems: u32,
    /// A gem appears every this many milliseconds while there is room. Default 500.
    pub spawn_every_ms: u32,
    /// A gem not taken vanishes after this many milliseconds. Default 10,000.
    pub gem_lifetime_ms: u32,
    /// A runner takes a gem within this many world units. Default 6.
    pub reach: u16,
    /// How far a dash jumps, in world units. Default 40.
    pub dash_distance: u16,
    /// Least time between two dashes, in milliseconds. Default 1,000.
    pub dash_recharge_ms: u32,
}

impl Default for Pickups {
    fn default() -> Self {
        Self {
            max_gems: 40,
            spawn_every_ms: 500,
            gem_lifetime_ms: 10_000,
            reach: 6,
            dash_distance: 40,
            dash_recharge_ms: 1_000,
        }
    }
}

/// The pickups schema: runners, gems and the scoreboard; an input of a stick, a dash
/// button and an aim.
pub fn schema() -> Result<Schema, SchemaError> {
    let scale = SCALE as u16;
    let position = || {
        [
            Field::new("x", FieldType::U16)
                .role(FieldRole::PositionX)
                .scale(scale),
            Field::new("y", FieldType::U16)
                .role(FieldRole::PositionY)
                .scale(scale),
        ]
    };
    let with_position = |rest: Vec<Field>| position().into_iter().chain(rest).collect();
    Schema::new(
        GAME,
        GAME_VERSION,
        vec![
            EntityKind {
                kind: KIND_RUNNER,
                name: "runner".into(),
                glyph: b'R',
                fields: with_position(vec![
                    Field::new("team", FieldType::U8),
                    Field::new("state", FieldType::U8).flags(&["dashing", "recharging"]),
                ]),
            },
            EntityKind {
                kind: KIND_GEM,
                name: "gem".into(),
                glyph: b'o',
                fields: with_position(vec![Field::new("value", FieldType::U8)]),
            },
            EntityKind {
                kind: KIND_SCOREBOARD,
                name: "scoreboard".into(),
                glyph: b'#',
                fields: with_position(vec![
                    Field::new("red", FieldType::U16),
                    Field::new("blue", FieldType::U16),
                ]),
            },
        ],
        vec![
            InputField::new("stick_x", FieldType::I8, -STICK_MAX, STICK_MAX).role(InputRole::MoveX),
            InputField::new("stick_y", FieldType::I8, -STICK_MAX, STICK_MAX).role(InputRole::MoveY),
            InputField::new("buttons", FieldType::U8, 0, 1).buttons(&["dash"]),
            InputField::new("aim", FieldType::U16, 0, 65_535).role(InputRole::Aim),
        ],
    )
}

/// Where an entity is, in 1/16 world units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Component)]
pub struct Pos {
    /// X, 0 at the left edge.
    pub x: i32,
    /// Y, 0 at the top edge.
    pub y: i32,
}

/// What a runner's player wants: the newest input command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Intent {
    /// Stick, -100 to 100 on each axis.
    pub stick: (i8, i8),
    /// Dash held.
    pub dash: bool,
    /// Aim, a full turn in 65,536 steps, 0 = +x, counter-clockwise.
    pub aim: u16,
}

/// A player's runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Component)]
pub struct Runner {
    /// 0 (red) or 1 (blue).
    pub team: u8,
    /// What its player wants.
    pub intent: Intent,
    /// Ticks until it may dash again.
    pub recharge: u16,
    /// Whether it dashed this tick.
    pub dashed: bool,
}

/// A gem waiting to be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Component)]
pub struct Gem {
    /// Points it is worth, 1 to 3.
    pub value: u8,
    /// Ticks until it vanishes.
    pub ticks_left: u32,
}

/// The teams' scores, on the one scoreboard entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Component)]
pub struct Scoreboard {
    /// Red's and blue's points.
    pub points: [u16; 2],
}

/// The rules, as a resource the systems read.
#[derive(Debug, Clone, Copy, Resource)]
pub struct Rules(pub Pickups);

impl Game for Pickups {
    type Replicated = (
        &'static Pos,
        Option<&'static Runner>,
        Option<&'static Gem>,
        Option<&'static Scoreboard>,
    );

    fn schema(&self) -> Result<Schema, SchemaError> {
        schema()
    }

    fn validate(&self, config: &SimConfig) -> Result<(), ConfigError> {
        // Positions travel as u16 in 1/16 units: 4,095 world units fit.
        if self.max_gems == 0 || self.spawn_every_ms == 0 || self.reach == 0 {
            return Err(ConfigError {
                field: "pickups",
                reason: "max_gems, spawn_every_ms and reach must be at least 1".into(),
            });
        }
        if u32::from(config.arena_width.max(config.arena_height)) * SCALE as u32 > 65_535 {
            return Err(ConfigError {
                field: "arena_width",
                reason: "pickups positions travel in 1/16 units as u16".into(),
            });
        }
        Ok(())
    }

    fn setup(&self, world: &mut World) {
        world.insert_resource(Rules(*self));
        let (max_x, max_y) = max_position(&world.resource::<Settings>().0);
        let id = world.resource_mut::<NetIds>().allocate();
        world.spawn((
            id,
            Pos {
                x: max_x / 2,
                y: max_y / 2,
            },
            Scoreboard::default(),
        ));
    }

    fn add_systems(&self, schedule: &mut Schedule) {
        schedule.add_systems(
            (steer_runners, spawn_gems, age_gems, collect_gems)
                .chain()
                .in_set(TickSet::Simulate),
        );
    }

    fn spawn_player(&self, world: &mut World, client_id: u64, id: NetId) -> Entity {
        // The smaller team; on a tie, by the client id's parity.
        let mut sizes = [0u32; 2];
        for runner in world.query::<&Runner>().iter(world) {
            sizes[usize::from(runner.team)] += 1;
        }
        let team = match sizes[0].cmp(&sizes[1]) {
            std::cmp::Ordering::Less => 0,
            std::cmp::Ordering::Greater => 1,
            std::cmp::Ordering::Equal => (client_id % 2) as u8,
        };
        let config = world.resource::<Settings>().0.clone();
        let (max_x, max_y) = max_position(&config);
        // Red starts on the left edge, blue on the right, at a height keyed by its id.
        let draw = world.resource::<SimRng>().keyed(u64::from(id.0), 0);
        let y = (draw % (max_y as u64 + 1)) as i32;
        let x = if team == 0 { 0 } else { max_x };
        world
            .spawn((
                id,
                Pos { x, y },
                Runner {
                    team,
                    intent: Intent::default(),
                    recharge: 0,
                    dashed: false,
                },
            ))
            .id()
    }

    fn apply_input(&self, mut player: EntityWorldMut<'_>, values: &[i64]) {
        // The schema's ranges bound every value: the casts are exact.
        if let (Some(mut runner), [x, y, buttons, aim]) = (player.get_mut::<Runner>(), values) {
            runner.intent = Intent {
                stick: (*x as i8, *y as i8),
                dash: *buttons as u8 & BUTTON_DASH != 0,
                aim: *aim as u16,
            };
        }
    }

    #[inline]
    fn write_record(
        (pos, runner, gem, scoreboard): QueryItem<'_, '_, Self::Replicated>,
        out: &mut RecordWriter,
    ) -> Placed {
        let (x, y) = (pos.x.clamp(0, 65_535), pos.y.clamp(0, 65_535));
        out.u16(x as u16).u16(y as u16);
        let kind = match (runner, gem, scoreboard) {
            (Some(runner), _, _) => {
                let state = u8::from(runner.dashed) | u8::from(runner.recharge > 0) << 1;
                out.u8(runner.team).u8(state);
                KIND_RUNNER
            }
            (None, Some(gem), _) => {
                out.u8(gem.value);
                KIND_GEM
            }
            (None, None, scoreboard) => {
                let points = scoreboard.map_or([0; 2], |s| s.points);
                out.u16(points[0]).u16(points[1]);
                KIND_SCOREBOARD
            }
        };
        Placed { kind, x, y }
    }
}

/// The largest position on each axis, in 1/16 units.
pub fn max_position(config: &SimConfig) -> (i32, i32) {
    (
        i32::from(config.arena_width) * SCALE - 1,
        i32::from(config.arena_height) * SCALE - 1,
    )
}

/// Ticks a duration lasts at the world's tick rate (at least 1).
fn ticks(config: &SimConfig, ms: u32) -> u32 {
    config.ticks_for_ms(ms)
}

/// Eight directions (x, y) scaled to 100, counter-clockwise from +x, y down: a dash goes
/// along the one nearest the aim.
const EIGHT_WAYS: [(i32, i32); 8] = [
    (100, 0),
    (71, -71),
    (0, -100),
    (-71, -71),
    (-100, 0),
    (-71, 71),
    (0, 100),
    (71, 71),
];

/// Runners move by their stick (at most `player_speed` world units a second, diagonals
/// no faster) and dash along their aim when the button is held and the dash is charged.
pub fn steer_runners(
    settings: Res<Settings>,
    rules: Res<Rules>,
    mut runners: Query<(&mut Runner, &mut Pos)>,
) {
    let config = &settings.0;
    let step = (config.player_speed as i32 * SCALE) / i32::from(config.tick_rate.max(1));
    let dash = i32::from(rules.0.dash_distance) * SCALE;
    let recharge = ticks(config, rules.0.dash_recharge_ms) as u16;
    let (max_x, max_y) = max_position(config);
    for (mut runner, mut pos) in &mut runners {
        let (sx, sy) = (
            i32::from(runner.intent.stick.0),
            i32::from(runner.intent.stick.1),
        );
        // Scale so the stick's length never exceeds STICK_MAX (a square stick's corner
        // is no faster than its edge).
        let length = (sx * sx + sy * sy).max(1);
        let cap = STICK_MAX * STICK_MAX;
        let (dx, dy) = if length > cap {
            let root = isqrt(length as u32) as i32;
            (sx * step / root, sy * step / root)
        } else {
            (sx * step / STICK_MAX, sy * step / STICK_MAX)
        };
        pos.x = (pos.x + dx).clamp(0, max_x);
        pos.y = (pos.y + dy).clamp(0, max_y);
        runner.dashed = false;
        if runner.recharge > 0 {
            runner.recharge -= 1;
        } else if runner.intent.dash {
            let way = EIGHT_WAYS[usize::from(runner.intent.aim.wrapping_add(4096) / 8192) % 8];
            pos.x = (pos.x + way.0 * dash / 100).clamp(0, max_x);
            pos.y = (pos.y + way.1 * dash / 100).clamp(0, max_y);
            runner.recharge = recharge;
            runner.dashed = true;
        }
    }
}

/// Integer square root (floor), by Newton's method: no floating point in a rule.
fn isqrt(n: u32) -> u32 {
    if n < 2 {
        return n;
    }
    let (mut x, mut y) = (n, n.div_ceil(2));
    while y < x {
        x = y;
        y = (x + n / x) / 2;
    }
    x
}

/// Every `spawn_every_ms` a gem appears while there are fewer than `max_gems`: its place
/// and value drawn from the gem stream keyed by the tick.
pub fn spawn_gems(
    mut commands: Commands,
    settings: Res<Settings>,
    rules: Res<Rules>,
    rng: Res<SimRng>,
    tick: Res<CurrentTick>,
    mut ids: ResMut<NetIds>,
    gems: Query<(), With<Gem>>,
) {
    let config = &settings.0;
    let now = tick.0.get();
    if !now.is_multiple_of(ticks(config, rules.0.spawn_every_ms))
        || gems.iter().count() as u32 >= rules.0.max_gems
    {
        return;
    }
    const GEM_STREAM: u64 = 0x6765_6d73; // "gems"
    let draw = rng.keyed(GEM_STREAM, u64::from(now));
    let (max_x, max_y) = max_position(config);
    let x = (draw % (max_x as u64 + 1)) as i32;
    let y = ((draw >> 24) % (max_y as u64 + 1)) as i32;
    let value = 1 + ((draw >> 56) % 3) as u8;
    commands.spawn((
        ids.allocate(),
        Pos { x, y },
        Gem {
            value,
            ticks_left: ticks(config, rules.0.gem_lifetime_ms),
        },
    ));
}

/// Gems age and vanish at the end of their life.
pub fn age_gems(mut commands: Commands, mut gems: Query<(Entity, &mut Gem)>) {
    for (entity, mut gem) in &mut gems {
        gem.ticks_left = gem.ticks_left.saturating_sub(1);
        if gem.ticks_left == 0 {
            commands.entity(entity).despawn();
        }
    }
}

/// A runner within reach of a gem takes it for its team. Gems go in net id order, each
/// to the lowest-id runner in reach, so the outcome does not depend on storage order.
#[allow(clippy::type_complexity)]
pub fn collect_gems(
    mut commands: Commands,
    rules: Res<Rules>,
    clients: Res<Clients>,
    mut order: Local<Vec<(NetId, Entity)>>,
    gems: Query<(&NetId, Entity, &Pos, &Gem)>,
    runners: Query<(&NetId, &Pos, &Runner)>,
    mut scoreboard: Query<&mut Scoreboard>,
) {
    let reach = i64::from(rules.0.reach) * i64::from(SCALE);
    order.clear();
    order.extend(gems.iter().map(|(id, entity, _, _)| (*id, entity)));
    order.sort_unstable_by_key(|(id, _)| *id);
    let mut points = [0u16; 2];
    for &(_, gem_entity) in order.iter() {
        let Ok((_, _, gem_pos, gem)) = gems.get(gem_entity) else {
            continue;
        };
        // Runners through the client map: a fixed order, and the lowest id wins.
        let taker = clients
            .0
            .values()
            .filter_map(|&entity| runners.get(entity).ok())
            .filter(|(_, pos, _)| {
                let (dx, dy) = (i64::from(pos.x - gem_pos.x), i64::from(pos.y - gem_pos.y));
                dx * dx + dy * dy <= reach * reach
            })
            .min_by_key(|(id, _, _)| **id);
        if let Some((_, _, runner)) = taker {
            let team = usize::from(runner.team.min(1));
            points[team] = points[team].saturating_add(u16::from(gem.value));
            commands.entity(gem_entity).despawn();
        }
    }
    for mut board in &mut scoreboard {
        for (total, gained) in board.points.iter_mut().zip(points) {
            *total = total.saturating_add(gained);
        }
    }
}
