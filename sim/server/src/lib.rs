//! tickcast-server: the simulation wired to the network layer, and the
//! `tickcast-server` binary.
//!
//! What it does: runs the fixed-step loop ([`tickcast_sim::FixedStep`]) on a thread of
//! its own against the real clock, drains the network's events, steps the [`Sim`],
//! publishes each snapshot into the latest-wins handoff, records, and reports status.
//!
//! What it never does: wait for the network, or hold game rules or network rules of its
//! own — those live in `tickcast-sim` and `tickcast-net`; this crate is glue.
//!
//! It also runs the server's life around the loop: the drain ([`drain`]: stop admitting,
//! let players finish, close with `drained`, exit) and, in a Fleet, the Agones SDK
//! ([`agones`]) on threads of their own. With `ServerConfig::metrics_listen` it serves
//! Prometheus metrics and health checks over HTTP from a thread of its own ([`http`],
//! [`metrics`], [`health`]).
//!
//! Entry type: [`Server`] (`start`, `status`, `run_until_stopped`, `stop`).

#![forbid(unsafe_code)]

pub mod agones;
pub mod allocations;
pub mod cli;
pub mod drain;
pub mod health;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod settings;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use tickcast_net::budget::TickBufferSize;
use tickcast_net::{DisconnectReason, MemoryPlan, NetConfig, NetCounters, NetHandle, budget};
use tickcast_shared::chunk::{CHUNK_HEADER_LEN, TICK_FRAME_PREFIX_LEN, directory_len};

use tickcast_shared::event::PeerEvent;
use tickcast_shared::schema::Schema;
use tickcast_sim::Game;
use tickcast_sim::arena::Arena;
use tickcast_sim::engine::RecordLayouts;
use tickcast_sim::engine::SimCounters;
use tickcast_sim::record::{Recorder, RecordingHeader};
use tickcast_sim::snapshot::Snapshot;
use tickcast_sim::snapshot::{records_per_chunk, tick_buffer_len};
use tickcast_sim::{FixedStep, Sim, SimConfig};

use crate::agones::{AgonesClient, AgonesConfig, AgonesStatus, GameServerState};
use crate::drain::{DrainConfig, DrainEnd, Lifecycle, LifecycleStep, StopCause, StopRequest};
use crate::http::MetricsEndpoint;
use crate::metrics::{LoopMetrics, MetricSources};

/// Everything the server needs to start.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// The network layer. Tick rate, arena and chunk size are taken from `sim`.
    pub net: NetConfig,
    /// The world.
    pub sim: SimConfig,
    /// Record every tick to this file (`docs/RECORDING.md`). Default: no recording.
    pub record: Option<RecordConfig>,
    /// How the server drains when asked to stop ([`Server::run_until_stopped`]).
    pub drain: DrainConfig,
    /// Talk to the Agones SDK sidecar. Default `None`: no Agones (the binary turns it on
    /// with `--agones` or when `AGONES_SDK_HTTP_PORT` is set).
    pub agones: Option<AgonesConfig>,
    /// Serve `GET /metrics`, `/healthz` and `/readyz` over HTTP on this TCP address
    /// (`docs/OPERATIONS.md`). Default `None`: no endpoint, no extra thread — a server
    /// is only observed when someone asks for it.
    pub metrics_listen: Option<SocketAddr>,
}

/// Where and how to record.
#[derive(Debug, Clone)]
pub struct RecordConfig {
    /// The recording file (created or truncated).
    pub path: std::path::PathBuf,
    /// A keyframe every this many ticks. Default 300: every 10 s at 30 Hz, a snapshot
    /// for `verify` to name differing entities by, at about 1 % of the file.
    pub keyframe_interval: u32,
}

impl RecordConfig {
    /// Recording to `path` with the default keyframe interval.
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        Self {
            path: path.into(),
            keyframe_interval: 300,
        }
    }
}

impl ServerConfig {
    /// Makes the network settings agree with the world: the Welcome announces the sim's
    /// tick rate, arena and chunk size; each peer's datagram send buffer holds two of the
    /// largest ticks the world can produce; and the memory budget charges each client for
    /// the tick buffers of this world (see [`tick_buffer_size`]), whose records are at
    /// most `record_len` bytes (the game's longest kind).
    fn reconciled(mut self, record_len: usize) -> Self {
        self.net.tick_rate = self.sim.tick_rate;
        self.net.arena = (self.sim.arena_width, self.sim.arena_height);
        self.net.cell_size = self.sim.cell_size;
        self.net.chunk_payload = self.sim.chunk_payload;
        self.net.max_inputs_per_tick = u32::from(self.sim.max_inputs_per_tick);
        self.sim.max_players = u32::try_from(self.net.max_clients).unwrap_or(u32::MAX);
        // A peer is sent at most its whole view, and a view can be the whole world: under
        // `--view-cells all`, or when everyone crowds into one view. The buffer is only
        // quinn's cap (the fan-out keeps a queue to two of the peer's own ticks), so it is
        // sized for the worst world — every NPC, player and projectile in flight — at no
        // cost: a peer that could never fit one tick would never be sent one.
        let entities = self.sim.npcs as usize + self.net.max_clients + self.sim.max_projectiles();
        self.net.datagram_send_buffer =
            (2 * tick_buffer_len(entities, &self.sim, record_len)).max(4 * self.sim.chunk_payload);
        self.net.tick_buffer = tick_buffer_size(&self.sim, record_len);
        self
    }
}

/// How big the snapshot pool's tick buffers get in this world with a given number of
/// players: what the memory budget charges a stalled client for
/// ([`tickcast_net::budget::TickBufferSize`]). An upper bound of the pool's allocations:
/// [`tick_buffer_len`] with every cell occupied and each entity taking its share of a
/// full chunk's header, then the pool's growth of a buffer to 5/4 of the tick that
/// outgrew it; never below the pool's first buffers, sized for the NPCs and 256 players
/// (`SimConfig::expected_entities`).
///
/// The world's population is the arena's (NPCs, players, projectiles); another game's
/// is estimated with the same fields, at its own `record_len`.
pub fn tick_buffer_size(sim: &SimConfig, record_len: usize) -> TickBufferSize {
    let frame = (TICK_FRAME_PREFIX_LEN + CHUNK_HEADER_LEN) as u64;
    let records = records_per_chunk(sim.chunk_payload, record_len) as u64;
    let per_entity = record_len as u64 + frame.div_ceil(records);
    // The directory, a partly filled chunk in every cell, and one for the rounding up of
    // the full ones.
    let fixed = (TICK_FRAME_PREFIX_LEN + directory_len(sim.cells())) as u64
        + (sim.cells() as u64 + 1) * frame;
    let grown = |bytes: u64| bytes + bytes.div_ceil(4);
    let expected = if sim.expected_entities > 0 {
        sim.expected_entities
    } else {
        sim.npcs as usize + 256
    };
    TickBufferSize {
        without_players: grown(fixed + per_entity * u64::from(sim.npcs)),
        per_player: grown(per_entity),
        least: tick_buffer_len(expected, sim, record_len) as u64,
    }
}

/// A once-a-second view of the server, for the status line and for tests.
#[derive(Debug, Clone, Default)]
pub struct ServerStatus {
    /// Ticks run.
    pub tick: u32,
    /// Clients connected.
    pub clients: usize,
    /// Entities in the last snapshot.
    pub entities: usize,
    /// 99th percentile of tick time over the last interval, microseconds.
    pub tick_time_p99_us: u64,
    /// Snapshot payload bytes handed to quinn per second over the last interval.
    pub bytes_out_per_s: u64,
    /// Resident set size, bytes (0 where unknown).
    pub rss_bytes: u64,
    /// Ticks that started later than one period after their slot.
    pub late_ticks: u64,
    /// Mean fan-out spread over the interval, microseconds: a tick's publication to the
    /// last peer's datagrams handed to quinn.
    pub fanout_spread_mean_us: u64,
    /// Largest fan-out spread over the interval, microseconds.
    pub fanout_spread_max_us: u64,
    /// Heap allocations in the whole process over the last interval, when the binary
    /// counts them (`tickcast-server` built with the `count-allocs` feature); `None`
    /// otherwise.
    pub allocations: Option<u64>,
    /// Of those, the ones made inside the fan-out (indexing the tick, slicing it, quinn's
    /// `send_datagram`), when counted.
    pub fan_out_allocations: Option<u64>,
    /// The simulation's counters.
    pub sim: SimCounters,
}

/// The sim loop's progress, shared with the threads that judge whether the server is
/// alive (health endpoints, the Agones health ping): a tick count the loop bumps after
/// every tick, read with a relaxed load, never a lock.
#[derive(Debug, Default)]
pub struct LoopProgress {
    ticks: AtomicU64,
    held: AtomicBool,
}

impl LoopProgress {
    /// Ticks the loop has run since start.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// Holds the loop between ticks (`true`) or lets it go on (`false`): how tests and
    /// fault drills make a hung simulation without hanging the process. A held loop
    /// does not tick, so its health checks fail, exactly as for a real hang.
    pub fn hold(&self, held: bool) {
        self.held.store(held, Ordering::Relaxed);
    }

    fn tick_done(&self) {
        self.ticks.fetch_add(1, Ordering::Relaxed);
    }

    fn is_held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }
}

/// A running server.
pub struct Server {
    local_addr: SocketAddr,
    schema: Arc<Schema>,
    fingerprint: [u8; 32],
    memory_plan: MemoryPlan,
    stop: Arc<AtomicBool>,
    status: Arc<Mutex<ServerStatus>>,
    net_counters: Arc<NetCounters>,
    progress: Arc<LoopProgress>,
    draining: Arc<AtomicBool>,
    stop_request: Arc<StopRequest>,
    drain: DrainConfig,
    agones_status: Arc<AgonesStatus>,
    agones: Option<AgonesClient>,
    thread: Option<JoinHandle<()>>,
    /// Dropped after the loop's thread has ended, so health checks see the end.
    metrics: Option<MetricsEndpoint>,
}

/// How [`Server::run_until_stopped`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopReport {
    /// What asked the server to stop; `None` if the loop ended without a drain (its stop
    /// flag was set, or it panicked).
    pub cause: Option<StopCause>,
    /// How the drain ended, if there was one.
    pub end: Option<DrainEnd>,
}

impl Server {
    /// Binds the socket, builds the world and starts the loop. Fails with the reason if
    /// the address is taken or the configuration is invalid.
    pub fn start(config: ServerConfig) -> anyhow::Result<Self> {
        Self::start_with(config, Arena)
    }

    /// [`Server::start`] for `game`: the same server, running that game's rules and
    /// sending its schema.
    pub fn start_with<G: Game>(config: ServerConfig, game: G) -> anyhow::Result<Self> {
        let schema = game.schema().context("the game's schema")?;
        let config = config.reconciled(RecordLayouts::of(&schema).max_len);
        let sim = Sim::with_game(config.sim.clone(), game).context("building the world")?;
        let schema = sim.schema().clone();
        // The game's schema, sent to each client right after its Welcome.
        let net_config = NetConfig {
            schema: Some(schema.clone()),
            ..config.net.clone()
        };
        let net = tickcast_net::spawn(net_config).context("starting the network layer")?;
        let recorder = match &config.record {
            Some(record) => {
                let header = RecordingHeader {
                    protocol_version: tickcast_shared::PROTOCOL_VERSION,
                    config: sim.config().clone(),
                    build_id: concat!("tickcast-sim ", env!("CARGO_PKG_VERSION")).to_owned(),
                    keyframe_interval: record.keyframe_interval,
                    schema: (**sim.schema()).clone(),
                };
                let recorder = Recorder::start(&record.path, header)
                    .with_context(|| format!("creating the recording {}", record.path.display()))?;
                tracing::info!(path = %record.path.display(), "recording every tick");
                Some(recorder)
            }
            None => None,
        };
        let local_addr = net.local_addr();
        let fingerprint = net.fingerprint();
        let memory_plan = net.memory_plan();
        let net_counters = net.counters().clone();
        let draining = net.drain_flag();
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(Mutex::new(ServerStatus::default()));
        let progress = Arc::new(LoopProgress::default());
        let agones_status = Arc::new(AgonesStatus::default());
        let loop_metrics = Arc::new(LoopMetrics::default());
        let metrics = match config.metrics_listen {
            Some(addr) => Some(MetricsEndpoint::start(
                addr,
                MetricSources {
                    net: net_counters.clone(),
                    progress: progress.clone(),
                    sim: loop_metrics.clone(),
                    recorder: recorder.as_ref().map(|r| r.counters().clone()),
                    draining: draining.clone(),
                    memory_plan: memory_plan.clone(),
                    max_clients: config.net.max_clients,
                    tick_rate: config.sim.tick_rate,
                    agones: agones_status.clone(),
                },
            )?),
            None => None,
        };
        let thread = {
            let stop = stop.clone();
            let observed = Observed {
                status: status.clone(),
                progress: progress.clone(),
                metrics: loop_metrics,
            };
            let lifecycle = (agones_status.clone(), draining.clone());
            std::thread::Builder::new()
                .name("tickcast-sim".into())
                .spawn(move || {
                    run_loop(sim, net, recorder, &stop, &observed, &lifecycle);
                })
                .context("spawning the simulation thread")?
        };
        let mut server = Self {
            schema,
            local_addr,
            fingerprint,
            memory_plan,
            stop,
            status,
            net_counters,
            progress,
            draining,
            stop_request: Arc::new(StopRequest::default()),
            drain: config.drain.clone(),
            agones_status,
            agones: None,
            thread: Some(thread),
            metrics,
        };
        if let Some(agones) = config.agones.clone() {
            agones
                .validate()
                .map_err(anyhow::Error::msg)
                .context("the Agones settings")?;
            // The Counter's capacity: the clients this server admits, whichever of the
            // client limit and the memory budget is lower.
            let capacity = config.net.max_clients.min(server.memory_plan.clients) as u64;
            let inputs = agones::AgonesInputs {
                progress: server.progress.clone(),
                net_counters: server.net_counters.clone(),
                capacity,
                fingerprint_hex: tickcast_net::tls::fingerprint_hex(&fingerprint),
                stop_request: server.stop_request.clone(),
                status: server.agones_status.clone(),
            };
            server.agones =
                Some(AgonesClient::start(agones, inputs).context("starting the Agones threads")?);
        }
        Ok(server)
    }

    /// The game's replication schema (what the server sends each client after its
    /// Welcome, and writes in a recording's header).
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// SHA-256 of the certificate, for clients to pin.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// How the memory budget was shared out at start: the budget, the baseline RSS, the
    /// per-client cost and how many clients fit.
    pub fn memory_plan(&self) -> MemoryPlan {
        self.memory_plan.clone()
    }

    /// Setting this flag stops the server after the current tick.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// The latest status (updated once a second).
    pub fn status(&self) -> ServerStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The network counters, live.
    pub fn net_counters(&self) -> &Arc<NetCounters> {
        &self.net_counters
    }

    /// The sim loop's progress (ticks run; a hold for fault drills), live.
    pub fn progress(&self) -> &Arc<LoopProgress> {
        &self.progress
    }

    /// The metrics endpoint's bound address, when `metrics_listen` was set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsEndpoint::local_addr)
    }

    /// Whether the server is draining: it refuses Hellos with `draining`, and readiness
    /// checks should fail.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The drain flag itself, for a thread that reports readiness.
    pub fn drain_flag(&self) -> Arc<AtomicBool> {
        self.draining.clone()
    }

    /// Starts draining now: every later Hello is refused with `draining`; connected
    /// players stay. [`Server::run_until_stopped`] does this when a stop is requested.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Where a stop is requested (the signal handler, the Agones watcher, tests); read
    /// by [`Server::run_until_stopped`].
    pub fn stop_request(&self) -> &Arc<StopRequest> {
        &self.stop_request
    }

    /// The Agones state and call counters (`GameServerState::Disabled` without Agones).
    pub fn agones_status(&self) -> &Arc<AgonesStatus> {
        &self.agones_status
    }

    /// Serves until a stop is requested (or the server decides it is done, see
    /// [`DrainConfig::shutdown_when_empty`]), drains, closes every connection with
    /// `close::DRAINED`, flushes the recording, and, under Agones, sends
    /// `POST /shutdown` last — after the flush, because Agones answers it by deleting the
    /// pod, and the SIGTERM that brings must find nothing left to lose.
    pub fn run_until_stopped(mut self) -> StopReport {
        let mut lifecycle = Lifecycle::new(self.drain.clone());
        let mut report = StopReport {
            cause: None,
            end: None,
        };
        loop {
            if self.thread.as_ref().is_none_or(JoinHandle::is_finished) {
                tracing::warn!("the simulation loop ended before a drain");
                break;
            }
            let players = NetCounters::get(&self.net_counters.peers);
            match lifecycle.step(Instant::now(), players, self.stop_request.cause()) {
                LifecycleStep::Serve => std::thread::sleep(Duration::from_millis(20)),
                LifecycleStep::BeginDrain(cause) => {
                    self.begin_drain();
                    report.cause = Some(cause);
                    tracing::info!(
                        cause = cause.name(),
                        players,
                        grace = ?self.drain.grace,
                        "draining: admitting no one, players may stay for the grace"
                    );
                }
                LifecycleStep::Finish(end) => {
                    report.end = Some(end);
                    tracing::info!(
                        players,
                        "drain over ({}): closing every connection with `drained`",
                        match end {
                            DrainEnd::Empty => "no players left",
                            DrainEnd::GraceElapsed => "the grace ran out",
                        }
                    );
                    break;
                }
            }
        }
        let agones = self.agones.take();
        self.stop.store(true, Ordering::Relaxed);
        self.join();
        if let Some(agones) = agones {
            agones.shutdown();
        }
        report
    }

    /// Runs until the stop flag is set, then shuts down cleanly.
    pub fn wait(mut self) {
        self.join();
    }

    /// Stops the loop, closes every connection with "server shutting down", and waits.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.join();
    }

    fn join(&mut self) {
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the simulation thread panicked");
        }
        // Without `POST /shutdown`: a server stopped this way (tests, errors) leaves the
        // decision to whoever stopped it.
        drop(self.agones.take());
        self.metrics.take();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.join();
    }
}

/// Tick durations of the current status interval, kept without allocating per tick.
struct TickTimes {
    samples: Vec<u64>,
    scratch: Vec<u64>,
}

impl TickTimes {
    fn new(capacity: usize) -> Self {
        Self {
            samples: Vec::with_capacity(capacity),
            scratch: Vec::with_capacity(capacity),
        }
    }

    fn record(&mut self, micros: u64) {
        if self.samples.len() < self.samples.capacity() {
            self.samples.push(micros);
        }
    }

    fn p99_and_reset(&mut self) -> u64 {
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.samples);
        self.samples.clear();
        if self.scratch.is_empty() {
            return 0;
        }
        let index = (self.scratch.len() * 99).div_ceil(100).saturating_sub(1);
        *self.scratch.select_nth_unstable(index).1
    }
}

/// The status of one window (about a second): the tick times seen in it and the
/// counters' values when it opened, so that closing it reports rates and maxima over the
/// window. Kept without allocating per tick.
struct StatusWindow {
    times: TickTimes,
    opened: Instant,
    bytes_out: u64,
    /// Fan-out spread total and samples when the window opened.
    spread: (u64, u64),
    allocations: Option<u64>,
    fan_out_allocations: Option<u64>,
}

/// The fan-out spread's sum (µs) and count so far.
fn spread_of(counters: &NetCounters) -> (u64, u64) {
    let spread = counters.fanout_spread.snapshot();
    (spread.sum_us, spread.count())
}

impl StatusWindow {
    const LENGTH: Duration = Duration::from_secs(1);

    fn open(tick_rate: u32, counters: &NetCounters, now: Instant) -> Self {
        Self {
            times: TickTimes::new(tick_rate as usize * 2),
            opened: now,
            bytes_out: NetCounters::get(&counters.bytes_out),
            spread: spread_of(counters),
            allocations: crate::allocations::total(),
            fan_out_allocations: crate::allocations::fan_out_total(),
        }
    }

    fn record_tick(&mut self, duration: Duration) {
        self.times.record(duration.as_micros() as u64);
    }

    fn is_due(&self, now: Instant) -> bool {
        now.duration_since(self.opened) >= Self::LENGTH
    }

    /// The window's status; the next window opens at `now`.
    fn close(
        &mut self,
        sim: &Sim,
        counters: &NetCounters,
        late_ticks: u64,
        now: Instant,
    ) -> ServerStatus {
        let elapsed = now.duration_since(self.opened).as_secs_f64();
        let bytes_out = NetCounters::get(&counters.bytes_out);
        let spread = spread_of(counters);
        let allocations = crate::allocations::total();
        let fan_out_allocations = crate::allocations::fan_out_total();
        let since = |now: Option<u64>, then: Option<u64>| now.zip(then).map(|(n, t)| n - t);
        let status = ServerStatus {
            allocations: since(allocations, self.allocations),
            fan_out_allocations: since(fan_out_allocations, self.fan_out_allocations),
            fanout_spread_mean_us: (spread.0 - self.spread.0)
                .checked_div(spread.1 - self.spread.1)
                .unwrap_or(0),
            fanout_spread_max_us: counters.fanout_spread_us_max.swap(0, Ordering::Relaxed),
            tick: sim.tick().get(),
            clients: sim.players(),
            entities: sim.snapshot_entities(),
            tick_time_p99_us: self.times.p99_and_reset(),
            bytes_out_per_s: ((bytes_out - self.bytes_out) as f64 / elapsed) as u64,
            rss_bytes: resident_set_bytes(),
            late_ticks,
            sim: sim.counters(),
        };
        self.opened = now;
        self.bytes_out = bytes_out;
        self.spread = spread;
        self.allocations = allocations;
        self.fan_out_allocations = fan_out_allocations;
        status
    }
}

/// The status line, once a window. `agones` is the GameServer's state (the field is
/// left out without Agones); `draining` appears, as `true`, only while draining.
fn log_status(
    status: &ServerStatus,
    counters: &NetCounters,
    agones: GameServerState,
    draining: bool,
) {
    // One event, its numbers as fields: in JSON each is a key; in text the line reads
    // `clients=3 tick=90 … late_ticks=0` (scripts/bench.py parses it, docs/OPERATIONS.md
    // lists the fields). `allocs` and `fanout_allocs` are left out when not counted.
    tracing::info!(
        target: "tickcast::status",
        clients = status.clients,
        tick = status.tick,
        entities = status.entities,
        tick_p99_us = status.tick_time_p99_us,
        fanout_mean_us = status.fanout_spread_mean_us,
        fanout_max_us = status.fanout_spread_max_us,
        out_bytes_per_s = status.bytes_out_per_s,
        rss_bytes = status.rss_bytes,
        skipped_peer_ticks = NetCounters::get(&counters.peer_ticks_skipped_backpressure),
        late_ticks = status.late_ticks,
        allocs = status.allocations,
        fanout_allocs = status.fan_out_allocations,
        // After late_ticks and the allocations, which scripts/bench.py reads in a row.
        handshaking = NetCounters::get(&counters.handshaking),
        nonces = NetCounters::get(&counters.nonces_remembered),
        timed_out = counters.disconnects_for(DisconnectReason::IdleTimeout),
        retries = NetCounters::get(&counters.handshakes_retried),
        agones = (agones != GameServerState::Disabled).then(|| tracing::field::display(agones.name())),
        draining = draining.then_some(true),
    );
}

/// The recorder, and the bytes-out counter at the last recorded tick (each tick's
/// record carries the bytes sent since the one before).
struct TickRecording {
    recorder: Recorder,
    bytes_out_recorded: u64,
}

impl TickRecording {
    /// Records the tick the sim just ran: the events it applied, its snapshot (kept as a
    /// keyframe when one is due) and how long it took.
    fn record(
        &mut self,
        sim: &Sim,
        applied: Vec<PeerEvent>,
        snapshot: Option<&Snapshot>,
        duration: Duration,
        counters: &NetCounters,
    ) {
        let bytes_out = NetCounters::get(&counters.bytes_out);
        self.recorder.record_step(
            sim,
            applied,
            snapshot.map(|s| &s.bytes),
            duration.as_micros() as u32,
            bytes_out - self.bytes_out_recorded,
        );
        self.bytes_out_recorded = bytes_out;
    }

    /// Flushes and closes the file, and logs what was written.
    fn finish(self) {
        let counters = self.recorder.counters().clone();
        self.recorder.finish();
        tracing::info!(
            ticks = NetCounters::get(&counters.ticks_written),
            dropped = NetCounters::get(&counters.ticks_dropped),
            bytes = NetCounters::get(&counters.bytes_written),
            "recording closed"
        );
    }
}

/// The fixed-step loop: each tick drains the network's events, steps the sim, records,
/// publishes, and once a second reports; then waits for the next slot ([`FixedStep`]).
/// What the loop publishes for others to watch: the status line's snapshot (once a
/// second), the tick count, and the metrics (atomics, every tick).
struct Observed {
    status: Arc<Mutex<ServerStatus>>,
    progress: Arc<LoopProgress>,
    metrics: Arc<LoopMetrics>,
}

fn run_loop(
    mut sim: Sim,
    net: NetHandle,
    recorder: Option<Recorder>,
    stop: &AtomicBool,
    observed: &Observed,
    (agones, draining): &(Arc<AgonesStatus>, Arc<AtomicBool>),
) {
    let (status, progress, metrics) = (&observed.status, &observed.progress, &observed.metrics);
    let tick_rate = u32::from(sim.config().tick_rate);
    let mut pacing = FixedStep::new(Duration::from_secs(1) / tick_rate, Instant::now());
    let publisher = net.publisher();
    let counters = net.counters().clone();
    let mut window = StatusWindow::open(tick_rate, &counters, Instant::now());
    let mut recording = recorder.map(|recorder| TickRecording {
        recorder,
        bytes_out_recorded: 0,
    });

    while !stop.load(Ordering::Relaxed) {
        if progress.is_held() {
            // A drill's hang: no tick, no publication; the pacing re-bases afterwards
            // and counts one late tick, as after a real stall.
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let began = Instant::now();
        // The events this tick applies, in order, for the recording (a list reused from
        // earlier ticks, so recording does not allocate in steady state).
        let mut applied = recording.as_ref().map(|r| r.recorder.event_buffer());
        net.drain_events(|event| {
            if let Some(applied) = applied.as_mut() {
                applied.push(event.clone());
            }
            if let Some(ack) = sim.handle(event) {
                net.acknowledge_join(ack);
            }
        });
        sim.step(server_time_us());
        let tick = sim.tick().prev();
        let snapshot = sim.take_snapshot();
        if let (Some(recording), Some(applied)) = (recording.as_mut(), applied) {
            recording.record(&sim, applied, snapshot.as_ref(), began.elapsed(), &counters);
        }
        if let Some(snapshot) = snapshot {
            publisher.publish(tick, snapshot.bytes, snapshot.index);
        }
        let took = began.elapsed();
        window.record_tick(took);
        metrics.tick_duration.record(took);
        metrics.publish(&sim);
        progress.tick_done();

        let now = Instant::now();
        if window.is_due(now) {
            let latest = window.close(&sim, &counters, pacing.late_ticks(), now);
            log_status(
                &latest,
                &counters,
                agones.state(),
                draining.load(Ordering::Relaxed),
            );
            if let Ok(mut shared) = status.lock() {
                *shared = latest;
            }
        }
        // More than a tick behind (a stall, a suspended process) re-bases the schedule
        // rather than running a burst of catch-up ticks; `FixedStep` counts it as late.
        pacing.sleep_until_next();
        metrics
            .late_ticks
            .store(pacing.late_ticks(), Ordering::Relaxed);
    }
    tracing::info!(tick = sim.tick().get(), "stopping");
    if let Some(recording) = recording {
        recording.finish();
    }
    net.shutdown();
}

/// The wall clock in microseconds since the Unix epoch, modulo 2^32, for chunk headers.
fn server_time_us() -> u32 {
    tickcast_shared::unix_time::micros_wrapping(SystemTime::now())
}

/// This process's resident set size from `/proc/self/status` (Linux); 0 elsewhere.
pub fn resident_set_bytes() -> u64 {
    budget::resident_set_bytes()
}

/// Bytes as B, KiB, MiB or GiB with one decimal.
pub fn human_bytes(bytes: u64) -> String {
    budget::format_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickcast_shared::chunk::ENTITY_RECORD_LEN;

    #[test]
    fn p99_of_a_hundred_samples_is_the_99th() {
        let mut times = TickTimes::new(200);
        for micros in 1..=100 {
            times.record(micros);
        }
        assert_eq!(times.p99_and_reset(), 99);
        assert_eq!(times.p99_and_reset(), 0, "reset after reading");
    }

    #[test]
    fn the_net_drops_inputs_at_the_limit_the_sim_applies() {
        let mut config = ServerConfig::default();
        config.sim.max_inputs_per_tick = 2;
        config.net.max_inputs_per_tick = 9;
        let config = config.reconciled(ENTITY_RECORD_LEN);
        assert_eq!(config.net.max_inputs_per_tick, 2);
        assert!(config.net.validate().is_ok());
    }

    #[test]
    fn the_default_net_config_charges_for_the_default_world() {
        assert_eq!(
            tick_buffer_size(&SimConfig::default(), ENTITY_RECORD_LEN),
            NetConfig::default().tick_buffer
        );
    }

    #[test]
    fn the_tick_buffer_model_bounds_the_pools_buffers_closely() {
        for sim in [
            SimConfig::default(),
            SimConfig {
                npcs: 10_000,
                cell_size: 16,
                chunk_payload: 200,
                ..SimConfig::default()
            },
            SimConfig {
                npcs: 0,
                arena_width: 100,
                arena_height: 100,
                ..SimConfig::default()
            },
        ] {
            let model = tick_buffer_size(&sim, ENTITY_RECORD_LEN);
            for players in [0usize, 1, 100, 256, 1000, 5000] {
                let entities = sim.npcs as usize + players;
                // What the pool allocates at most: 5/4 of the tick that outgrew a buffer.
                let pool =
                    (tick_buffer_len(entities, &sim, ENTITY_RECORD_LEN) as u64 * 5).div_ceil(4);
                let bound = model.with_players(players);
                assert!(bound >= pool, "{players} players: {bound} < {pool}");
                // And not much more once the world fills its cells (and outgrows the
                // pool's first buffers).
                if entities >= sim.cells() * 4 && bound > model.least {
                    assert!(
                        bound <= pool + pool / 10,
                        "{players} players: {bound} vs {pool}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_send_buffer_holds_two_of_the_largest_ticks_even_with_every_projectile() {
        let config = ServerConfig::default().reconciled(ENTITY_RECORD_LEN);
        let largest =
            config.sim.npcs as usize + config.net.max_clients + config.sim.max_projectiles();
        assert!(
            config.net.datagram_send_buffer
                >= 2 * tick_buffer_len(largest, &config.sim, ENTITY_RECORD_LEN)
        );
    }

    #[test]
    fn human_bytes_picks_a_unit() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(1536), "1.5KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0MiB");
    }
}
