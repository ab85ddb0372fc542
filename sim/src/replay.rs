//! Reading recordings back: verify by re-simulating through the same [`Sim`] API the
//! server runs, inspect a tick, export per-tick stats. `tickcast-replay` (in
//! `tickcast-tools`) is the command line over these.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use crate::engine::Game;
use crate::record::{Frame, Recording};
use crate::{Sim, SimConfig};
use tickcast_shared::Tick;
use tickcast_shared::chunk::{CHUNK_HEADER_LEN, SNAPSHOT_CHUNK_KIND, tick_frames};
use tickcast_shared::schema::{Record, Schema};

/// Summary of a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Ticks recorded.
    pub ticks: u64,
    /// First and last recorded tick.
    pub span: Option<(Tick, Tick)>,
    /// Distinct client ids that joined.
    pub distinct_clients: usize,
    /// Most clients connected at once.
    pub peak_clients: u32,
    /// Gaps (missing tick ranges).
    pub gaps: Vec<(Tick, Tick)>,
    /// Ticks with a keyframe.
    pub keyframes: usize,
    /// Whether the file ended with the index a clean close writes.
    pub closed_cleanly: bool,
}

/// Summarizes `recording`.
pub fn info(recording: &Recording) -> Info {
    let mut ticks = 0;
    let mut span: Option<(Tick, Tick)> = None;
    let mut clients = BTreeSet::new();
    let mut peak = 0;
    let mut keyframes = 0;
    let mut closed_cleanly = false;
    for (_, frame) in &recording.frames {
        match frame {
            Frame::Tick(tick) => {
                ticks += 1;
                span = Some(span.map_or((tick.tick, tick.tick), |(a, _)| (a, tick.tick)));
                peak = peak.max(tick.clients);
                for event in &tick.events {
                    if let tickcast_shared::event::PeerEvent::Joined { client_id } = event {
                        clients.insert(*client_id);
                    }
                }
            }
            Frame::Keyframe { .. } => keyframes += 1,
            Frame::Index(_) => closed_cleanly = true,
            _ => {}
        }
    }
    Info {
        ticks,
        span,
        distinct_clients: clients.len(),
        peak_clients: peak,
        gaps: recording.gaps().collect(),
        keyframes,
        closed_cleanly,
    }
}

/// An entity that differs between the recording's keyframe and the re-simulation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityDifference {
    /// The entity.
    pub net_id: u32,
    /// As recorded (None: absent from the recording).
    pub recorded: Option<Record>,
    /// As re-simulated (None: absent from the re-simulation).
    pub replayed: Option<Record>,
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verification {
    /// Ticks re-simulated and compared.
    pub ticks_checked: u64,
    /// The first tick whose state hash differs.
    pub first_divergence: Option<Tick>,
    /// At the first keyframe at or after the divergence: the tick, and the entities whose
    /// recorded and re-simulated records differ.
    pub differing_entities: Option<(Tick, Vec<EntityDifference>)>,
    /// A gap verification could not cross.
    pub stopped_at_gap: Option<(Tick, Tick)>,
    /// A tick frame out of sequence (the recording is not from one continuous run).
    pub out_of_sequence: Option<(Tick, Tick)>,
}

impl Verification {
    /// Whether every recorded tick re-simulated to its recorded hash.
    pub fn passed(&self) -> bool {
        self.first_divergence.is_none()
            && self.stopped_at_gap.is_none()
            && self.out_of_sequence.is_none()
            && self.ticks_checked > 0
    }
}

/// Every record of a tick buffer, by net id, read with `schema`.
pub fn records_of(schema: &Schema, buffer: &[u8]) -> BTreeMap<u32, Record> {
    let mut out = BTreeMap::new();
    for range in tick_frames(buffer) {
        let frame = &buffer[range];
        if frame.first() != Some(&SNAPSHOT_CHUNK_KIND) || frame.len() < CHUNK_HEADER_LEN {
            continue;
        }
        for view in schema
            .records(&frame[CHUNK_HEADER_LEN..])
            .map_while(Result::ok)
        {
            out.insert(view.net_id(), Record::of(&view));
        }
    }
    out
}

fn differences(schema: &Schema, recorded: &[u8], replayed: &[u8]) -> Vec<EntityDifference> {
    let recorded = records_of(schema, recorded);
    let replayed = records_of(schema, replayed);
    let ids: BTreeSet<u32> = recorded.keys().chain(replayed.keys()).copied().collect();
    ids.into_iter()
        .filter_map(|net_id| {
            let (a, b) = (
                recorded.get(&net_id).copied(),
                replayed.get(&net_id).copied(),
            );
            (a != b).then_some(EntityDifference {
                net_id,
                recorded: a,
                replayed: b,
            })
        })
        .collect()
}

/// A recording made by another game, or another version of this one: its rules are not
/// this build's, so re-simulating it would report a divergence that is no fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the recording is of {recorded_game} v{recorded_version}; this build re-simulates \
     {expected_game} v{expected_version} (use that game's own server binary's replay)"
)]
pub struct OtherGame {
    /// The game named in the recording's schema.
    pub recorded_game: String,
    /// Its version.
    pub recorded_version: u16,
    /// The game this build simulates.
    pub expected_game: String,
    /// Its version.
    pub expected_version: u16,
}

/// Checks that the game whose schema is `expected` recorded `recording`.
pub fn check_game(expected: &Schema, recording: &Recording) -> Result<(), OtherGame> {
    let schema = &recording.header.schema;
    if schema.game() == expected.game() && schema.game_version() == expected.game_version() {
        return Ok(());
    }
    Err(OtherGame {
        recorded_game: schema.game().to_owned(),
        recorded_version: schema.game_version(),
        expected_game: expected.game().to_owned(),
        expected_version: expected.game_version(),
    })
}

/// `game`'s world built from `config`, after checking that `game` recorded `recording`.
fn replay_world<G: Game>(
    game: G,
    recording: &Recording,
    config: SimConfig,
) -> Result<Sim, VerifyError> {
    let sim = Sim::with_game(config, game)?;
    check_game(sim.schema(), recording)?;
    Ok(sim)
}

/// Why [`verify`] could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The recording's configuration does not build a world.
    #[error("the recording's configuration: {0}")]
    Config(#[from] crate::ConfigError),
    /// Another game, or another version, recorded it.
    #[error(transparent)]
    OtherGame(#[from] OtherGame),
}

/// Re-simulates the recording with `game`'s rules from its header (or from `config`, to
/// test a rule change against it) through the same `Sim` API the server runs, comparing
/// every tick's state hash. `progress` is called with (ticks done, ticks total).
pub fn verify<G: Game>(
    game: G,
    recording: &Recording,
    config: Option<SimConfig>,
    mut progress: impl FnMut(u64, u64),
) -> Result<Verification, VerifyError> {
    let config = config.unwrap_or_else(|| recording.header.config.clone());
    let mut sim = replay_world(game, recording, config)?;
    let schema = sim.schema().clone();
    let total = recording.ticks().count() as u64;
    let mut result = Verification::default();
    let mut last_snapshot: Option<(Tick, bytes::Bytes)> = None;
    for (_, frame) in &recording.frames {
        match frame {
            Frame::Gap { first, last } => {
                result.stopped_at_gap = Some((*first, *last));
                break;
            }
            Frame::Tick(tick) => {
                if tick.tick != sim.tick() {
                    result.out_of_sequence = Some((sim.tick(), tick.tick));
                    break;
                }
                for event in &tick.events {
                    sim.handle(event.clone());
                }
                sim.step(0);
                last_snapshot = sim.take_snapshot().map(|s| (tick.tick, s.bytes));
                result.ticks_checked += 1;
                if result.first_divergence.is_none() && sim.state_hash() != tick.state_hash {
                    result.first_divergence = Some(tick.tick);
                }
                progress(result.ticks_checked, total);
            }
            Frame::Keyframe { tick, buffer } => {
                let diverged = result
                    .first_divergence
                    .is_some_and(|first| tick.is_at_or_after(first));
                if diverged
                    && result.differing_entities.is_none()
                    && let Some((snapshot_tick, replayed)) = &last_snapshot
                    && snapshot_tick == tick
                {
                    result.differing_entities =
                        Some((*tick, differences(&schema, buffer, replayed)));
                }
            }
            Frame::Header(_) | Frame::Index(_) => {}
        }
        if result.differing_entities.is_some() {
            break;
        }
    }
    Ok(result)
}

/// Why [`entities_at`] could not rebuild a tick.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntitiesAtError {
    /// The recording's configuration does not build a world.
    #[error("the recording's configuration: {0}")]
    Config(#[from] crate::ConfigError),
    /// Another game, or another version, recorded it.
    #[error(transparent)]
    OtherGame(#[from] OtherGame),
    /// The recording skips ticks before the one asked for.
    #[error("tick {tick} is not reachable: the recording jumps from {from} to {to}")]
    Unreachable {
        /// The tick asked for.
        tick: Tick,
        /// The last tick re-simulated.
        from: Tick,
        /// The next tick recorded.
        to: Tick,
    },
    /// The sim published no snapshot for the tick.
    #[error("no snapshot for tick {0}")]
    NoSnapshot(Tick),
    /// The recording ends before the tick.
    #[error("tick {0} is not in the recording")]
    NotRecorded(Tick),
}

/// Re-simulates up to and including `tick` with `game`'s rules; returns the world's
/// entities then, by id.
pub fn entities_at<G: Game>(
    game: G,
    recording: &Recording,
    tick: Tick,
) -> Result<BTreeMap<u32, Record>, EntitiesAtError> {
    let mut sim =
        replay_world(game, recording, recording.header.config.clone()).map_err(|e| match e {
            VerifyError::Config(e) => EntitiesAtError::Config(e),
            VerifyError::OtherGame(e) => EntitiesAtError::OtherGame(e),
        })?;
    for frame in recording.ticks() {
        if frame.tick != sim.tick() {
            return Err(EntitiesAtError::Unreachable {
                tick,
                from: sim.tick(),
                to: frame.tick,
            });
        }
        for event in &frame.events {
            sim.handle(event.clone());
        }
        sim.step(0);
        if frame.tick == tick {
            return sim
                .take_snapshot()
                .map(|snapshot| records_of(sim.schema(), &snapshot.bytes))
                .ok_or(EntitiesAtError::NoSnapshot(tick));
        }
    }
    Err(EntitiesAtError::NotRecorded(tick))
}

/// Output format of [`export`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// Comma-separated, with a header line.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// Writes one line of per-tick stats for every recorded tick.
pub fn export(
    recording: &Recording,
    format: ExportFormat,
    out: &mut impl Write,
) -> std::io::Result<()> {
    if format == ExportFormat::Csv {
        writeln!(out, "tick,state_hash,duration_us,bytes_out,clients,events")?;
    }
    for tick in recording.ticks() {
        match format {
            ExportFormat::Csv => writeln!(
                out,
                "{},{:016x},{},{},{},{}",
                tick.tick,
                tick.state_hash,
                tick.duration_us,
                tick.bytes_out,
                tick.clients,
                tick.events.len()
            )?,
            ExportFormat::Jsonl => writeln!(
                out,
                "{{\"tick\":{},\"state_hash\":\"{:016x}\",\"duration_us\":{},\"bytes_out\":{},\"clients\":{},\"events\":{}}}",
                tick.tick,
                tick.state_hash,
                tick.duration_us,
                tick.bytes_out,
                tick.clients,
                tick.events.len()
            )?,
        }
    }
    Ok(())
}
