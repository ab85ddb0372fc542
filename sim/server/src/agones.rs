//! Agones: the server as a GameServer in a Fleet, talking to the Agones SDK sidecar over
//! its REST API (`http://localhost:$AGONES_SDK_HTTP_PORT`, default 9358).
//!
//! What it does, from two threads of its own:
//! * `tickcast-agones` makes the SDK calls: annotates the GameServer with the
//!   certificate fingerprint (`PUT /metadata/annotation`, key
//!   `agones.dev/sdk-tickcast-fingerprint` once Agones adds its prefix: a SHA-256 in hex
//!   is 64 characters, one more than a label value may have), marks it Ready
//!   (`POST /ready`) once the QUIC endpoint listens and the first tick has run, pings
//!   `POST /health` every `health_interval` **only while the sim loop is ticking**, keeps
//!   the Counter `players` (`PATCH /v1beta1/counters/players`) at the connected players
//!   and the admission capacity, and finally sends `POST /shutdown`.
//! * `tickcast-agones-watch` follows `GET /watch/gameserver` (JSON lines
//!   `{"result":{GameServer}}`), reconnecting with backoff, and publishes the state
//!   (`Ready`, `Allocated`, …) as an atomic ([`AgonesStatus`]); a `Shutdown` asks the
//!   server to drain ([`crate::drain::StopRequest`]).
//!
//! What it never does: block the sim or the net thread (they only bump atomics this
//! module reads), or stop the server because the sidecar is down — every call has a
//! timeout and retries with backoff, and each failure is logged and counted.
//!
//! The decisions — which call is next, when health is due, how long to back off — are
//! [`SdkPlanner`], a plain state machine over what it observes and a clock passed in,
//! tested without sockets; [`AgonesClient`] is the glue that feeds it and moves bytes.

mod http;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tickcast_net::NetCounters;

use crate::LoopProgress;
use crate::drain::{StopCause, StopRequest};

pub use http::HttpError;

/// The sidecar's REST port when `AGONES_SDK_HTTP_PORT` is not set (Agones' default).
pub const DEFAULT_SDK_HTTP_PORT: u16 = 9358;

/// The environment variable Agones sets in the game server container.
pub const SDK_HTTP_PORT_ENV: &str = "AGONES_SDK_HTTP_PORT";

/// The Counter the server keeps at its connected players (declare it in the Fleet).
pub const PLAYERS_COUNTER: &str = "players";

/// The annotation key the fingerprint is set under; Agones stores it as
/// `agones.dev/sdk-tickcast-fingerprint`.
pub const FINGERPRINT_ANNOTATION: &str = "tickcast-fingerprint";

/// How the server talks to the sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgonesConfig {
    /// The sidecar's REST address. Default `127.0.0.1:9358`; the binary takes the port
    /// from `AGONES_SDK_HTTP_PORT`.
    pub sidecar: SocketAddr,
    /// Time between health pings while the loop ticks. Default 2 s: Agones' default
    /// `health.periodSeconds` is 5 s, so a ping lost to a slow sidecar still leaves one
    /// inside the period.
    pub health_interval: Duration,
    /// Each call's deadline (connect, send, whole answer). Default 1 s: the sidecar is on
    /// localhost and answers in a millisecond; a call that takes a second is a hung
    /// sidecar, and the next health ping must not wait behind it.
    pub call_timeout: Duration,
}

impl Default for AgonesConfig {
    fn default() -> Self {
        Self {
            sidecar: SocketAddr::from(([127, 0, 0, 1], DEFAULT_SDK_HTTP_PORT)),
            health_interval: Duration::from_secs(2),
            call_timeout: Duration::from_secs(1),
        }
    }
}

impl AgonesConfig {
    /// The default configuration with the sidecar on `127.0.0.1:port`.
    pub fn with_port(port: u16) -> Self {
        Self {
            sidecar: SocketAddr::from(([127, 0, 0, 1], port)),
            ..Self::default()
        }
    }

    /// Checks values that would make the integration misbehave.
    pub fn validate(&self) -> Result<(), String> {
        if self.health_interval.is_zero() {
            return Err("the Agones health interval must be more than zero".into());
        }
        if self.call_timeout.is_zero() {
            return Err("the Agones call timeout must be more than zero".into());
        }
        Ok(())
    }
}

/// A GameServer's state as Agones reports it (`status.state`), plus `Disabled` for a
/// server that runs without Agones and `Unknown` before the first report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GameServerState {
    /// Not running under Agones.
    Disabled,
    /// Under Agones, no state seen yet (the sidecar has not answered).
    Unknown,
    /// `Scheduled`.
    Scheduled,
    /// `RequestReady`.
    RequestReady,
    /// `Ready`: in the pool, waiting to be allocated.
    Ready,
    /// `Reserved`.
    Reserved,
    /// `Allocated`: a matchmaker handed it out; players are coming.
    Allocated,
    /// `Shutdown`: Agones is deleting it.
    Shutdown,
    /// `Unhealthy`: health pings stopped arriving.
    Unhealthy,
    /// Any other state (`Creating`, `Starting`, `Error`, …).
    Other,
}

impl GameServerState {
    /// Every state, for exporting one gauge per state.
    pub const ALL: [GameServerState; 10] = [
        GameServerState::Disabled,
        GameServerState::Unknown,
        GameServerState::Scheduled,
        GameServerState::RequestReady,
        GameServerState::Ready,
        GameServerState::Reserved,
        GameServerState::Allocated,
        GameServerState::Shutdown,
        GameServerState::Unhealthy,
        GameServerState::Other,
    ];

    /// Agones' name for the state (`Disabled`, `Unknown` and `Other` are ours).
    pub fn name(self) -> &'static str {
        match self {
            GameServerState::Disabled => "Disabled",
            GameServerState::Unknown => "Unknown",
            GameServerState::Scheduled => "Scheduled",
            GameServerState::RequestReady => "RequestReady",
            GameServerState::Ready => "Ready",
            GameServerState::Reserved => "Reserved",
            GameServerState::Allocated => "Allocated",
            GameServerState::Shutdown => "Shutdown",
            GameServerState::Unhealthy => "Unhealthy",
            GameServerState::Other => "Other",
        }
    }

    /// The state Agones calls `name`.
    pub fn from_agones(name: &str) -> Self {
        Self::ALL
            .into_iter()
            .filter(|s| !matches!(s, GameServerState::Disabled | GameServerState::Unknown))
            .find(|s| s.name() == name)
            .unwrap_or(GameServerState::Other)
    }

    fn code(self) -> u8 {
        Self::ALL.iter().position(|s| *s == self).unwrap_or(0) as u8
    }

    fn from_code(code: u8) -> Self {
        Self::ALL
            .get(usize::from(code))
            .copied()
            .unwrap_or(GameServerState::Unknown)
    }
}

/// What the Agones threads publish for the status line, metrics and tests: the state as
/// an atomic (cheap to read from any thread), and counters of the calls.
#[derive(Debug)]
pub struct AgonesStatus {
    state: AtomicU8,
    /// SDK calls the sidecar answered with 2xx.
    pub calls_ok: AtomicU64,
    /// SDK calls that failed: not listening, timed out, or a non-2xx answer.
    pub calls_failed: AtomicU64,
    /// Health pings the sidecar accepted.
    pub health_pings: AtomicU64,
    /// Times the GameServer watch was (re)opened after it dropped or failed.
    pub watch_reconnects: AtomicU64,
}

impl AgonesStatus {
    /// A status for a server in `state`.
    pub fn new(state: GameServerState) -> Self {
        Self {
            state: AtomicU8::new(state.code()),
            calls_ok: AtomicU64::new(0),
            calls_failed: AtomicU64::new(0),
            health_pings: AtomicU64::new(0),
            watch_reconnects: AtomicU64::new(0),
        }
    }

    /// The GameServer's state as last seen.
    pub fn state(&self) -> GameServerState {
        GameServerState::from_code(self.state.load(Ordering::Relaxed))
    }

    fn set_state(&self, state: GameServerState) {
        self.state.store(state.code(), Ordering::Relaxed);
    }
}

impl Default for AgonesStatus {
    fn default() -> Self {
        Self::new(GameServerState::Disabled)
    }
}

/// One SDK call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkCall {
    /// `PUT /metadata/annotation` with the certificate fingerprint.
    AnnotateFingerprint,
    /// `POST /ready`.
    Ready,
    /// `POST /health`.
    Health,
    /// `PATCH /v1beta1/counters/players` to this count and capacity.
    SetPlayers {
        /// Connected players.
        count: u64,
        /// Players the server admits.
        capacity: u64,
    },
    /// `POST /shutdown`.
    Shutdown,
}

impl SdkCall {
    /// Method, path and JSON body, from Agones' REST reference (sdk.swagger.json for the
    /// lifecycle and metadata calls, beta.swagger.json for Counters: int64 values are
    /// strings in proto3 JSON).
    pub fn http(&self, fingerprint_hex: &str) -> (&'static str, String, String) {
        match self {
            SdkCall::AnnotateFingerprint => (
                "PUT",
                "/metadata/annotation".into(),
                serde_json::json!({ "key": FINGERPRINT_ANNOTATION, "value": fingerprint_hex })
                    .to_string(),
            ),
            SdkCall::Ready => ("POST", "/ready".into(), "{}".into()),
            SdkCall::Health => ("POST", "/health".into(), "{}".into()),
            SdkCall::SetPlayers { count, capacity } => (
                "PATCH",
                format!("/v1beta1/counters/{PLAYERS_COUNTER}"),
                serde_json::json!({ "count": count.to_string(), "capacity": capacity.to_string() })
                    .to_string(),
            ),
            SdkCall::Shutdown => ("POST", "/shutdown".into(), "{}".into()),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            SdkCall::AnnotateFingerprint => "annotate",
            SdkCall::Ready => "ready",
            SdkCall::Health => "health",
            SdkCall::SetPlayers { .. } => "counter",
            SdkCall::Shutdown => "shutdown",
        }
    }
}

/// Exponential backoff: `base`, `2 × base`, … up to `max`. No jitter: one server talks to
/// its own sidecar, so there is no herd of clients to spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub base: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay after `failures` failures in a row (0 → no delay).
    pub fn delay(self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// Timings of [`SdkPlanner`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdkTiming {
    /// See [`AgonesConfig::health_interval`].
    pub health_interval: Duration,
    /// Backoff of a failed call other than health (health keeps its interval).
    pub retry: Backoff,
    /// At most one Counter update per this. Default 250 ms: players join in bursts, and
    /// the sidecar batches its writes to Kubernetes anyway; the newest count is what
    /// gets sent.
    pub counter_min_interval: Duration,
    /// `POST /shutdown` attempts before giving up (the pod is going away regardless).
    pub shutdown_attempts: u32,
}

impl SdkTiming {
    /// The timings the server uses with `health_interval`.
    pub fn new(health_interval: Duration) -> Self {
        Self {
            health_interval,
            retry: Backoff {
                base: Duration::from_millis(100),
                max: Duration::from_secs(5),
            },
            counter_min_interval: Duration::from_millis(250),
            shutdown_attempts: 3,
        }
    }
}

/// What the planner looks at each time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// Ticks the sim loop has run ([`LoopProgress::ticks`]).
    pub ticks: u64,
    /// Players connected now.
    pub players: u64,
    /// Players the server admits (the Counter's capacity).
    pub capacity: u64,
    /// The server is done: send `POST /shutdown`.
    pub shutdown: bool,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Make this call now, then report it with [`SdkPlanner::on_result`].
    Call(SdkCall),
    /// Nothing is due before this instant (or before the observation changes).
    WaitUntil(Instant),
    /// Nothing is due until the observation changes.
    Idle,
    /// Shutdown was sent (or given up on): the client's work is over.
    Done,
}

/// A call made until it succeeds, with backoff between failures.
#[derive(Debug, Clone, Copy, Default)]
struct Once {
    done: bool,
    failures: u32,
    not_before: Option<Instant>,
}

impl Once {
    fn due(&self, now: Instant) -> bool {
        !self.done && self.not_before.is_none_or(|t| now >= t)
    }

    fn record(&mut self, now: Instant, ok: bool, retry: Backoff) {
        if ok {
            self.done = true;
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.not_before = Some(now + retry.delay(self.failures));
        }
    }
}

/// Which SDK call to make next, as a state machine over [`Observation`]s and a clock
/// passed in. The rules, in priority order:
/// 1. Once the server is done (`shutdown`), only `POST /shutdown`, up to
///    `shutdown_attempts` times, then [`Next::Done`].
/// 2. Nothing before the first tick: a server that has not ticked is not ready and not
///    healthy.
/// 3. The fingerprint annotation, then Ready: an allocator may hand the server out the
///    moment it is Ready, and a client needs the fingerprint to pin. Each is retried
///    with backoff until it succeeds.
/// 4. Health, every `health_interval`, and only if the loop has ticked since the last
///    ping: a hung loop stops the pings, and Agones marks the GameServer Unhealthy.
///    A failed ping is not retried early; the next one is at the interval.
/// 5. The `players` Counter, whenever the count or capacity differs from what the
///    sidecar last accepted, at most once per `counter_min_interval`, backing off on
///    failure.
#[derive(Debug, Clone)]
pub struct SdkPlanner {
    timing: SdkTiming,
    annotate: Once,
    ready: Once,
    /// When the last ping was made and the tick count then.
    last_health: Option<(Instant, u64)>,
    /// The count and capacity the sidecar last accepted.
    counter_sent: Option<(u64, u64)>,
    counter_failures: u32,
    counter_not_before: Option<Instant>,
    shutdown_attempts: u32,
    shutdown_done: bool,
    shutdown_not_before: Option<Instant>,
}

impl SdkPlanner {
    /// A planner for a server that has made no call yet.
    pub fn new(timing: SdkTiming) -> Self {
        Self {
            timing,
            annotate: Once::default(),
            ready: Once::default(),
            last_health: None,
            counter_sent: None,
            counter_failures: 0,
            counter_not_before: None,
            shutdown_attempts: 0,
            shutdown_done: false,
            shutdown_not_before: None,
        }
    }

    /// The next thing to do at `now`, given what the server looks like.
    pub fn next(&self, now: Instant, seen: Observation) -> Next {
        if seen.shutdown {
            if self.shutdown_done || self.shutdown_attempts >= self.timing.shutdown_attempts {
                return Next::Done;
            }
            return match self.shutdown_not_before {
                Some(t) if now < t => Next::WaitUntil(t),
                _ => Next::Call(SdkCall::Shutdown),
            };
        }
        if seen.ticks == 0 {
            return Next::Idle;
        }
        if self.annotate.due(now) {
            return Next::Call(SdkCall::AnnotateFingerprint);
        }
        if self.annotate.done && self.ready.due(now) {
            return Next::Call(SdkCall::Ready);
        }
        let health_due_at = self.health_due_at(now, seen.ticks);
        if health_due_at.is_some_and(|t| now >= t) {
            return Next::Call(SdkCall::Health);
        }
        let wanted = (seen.players.min(seen.capacity), seen.capacity);
        let counter_due_at =
            (self.counter_sent != Some(wanted)).then(|| self.counter_not_before.unwrap_or(now));
        if counter_due_at.is_some_and(|t| now >= t) {
            return Next::Call(SdkCall::SetPlayers {
                count: wanted.0,
                capacity: wanted.1,
            });
        }
        [
            (!self.annotate.done)
                .then_some(self.annotate.not_before)
                .flatten(),
            (self.annotate.done && !self.ready.done)
                .then_some(self.ready.not_before)
                .flatten(),
            health_due_at,
            counter_due_at,
        ]
        .into_iter()
        .flatten()
        .min()
        .map_or(Next::Idle, Next::WaitUntil)
    }

    /// When the next health ping is due, if the loop has ticked since the last one;
    /// `None` while it has not (a stalled loop gets no ping, however long it stalls).
    fn health_due_at(&self, now: Instant, ticks: u64) -> Option<Instant> {
        match self.last_health {
            // The first ping is due at once: `next` only asks once the loop has ticked.
            None => Some(now),
            Some((at, ticks_then)) => {
                (ticks > ticks_then).then_some(at + self.timing.health_interval)
            }
        }
    }

    /// Reports how `call`, made at `now` when the loop had run `ticks`, went.
    pub fn on_result(&mut self, call: &SdkCall, now: Instant, ticks: u64, ok: bool) {
        let retry = self.timing.retry;
        match call {
            SdkCall::AnnotateFingerprint => self.annotate.record(now, ok, retry),
            SdkCall::Ready => self.ready.record(now, ok, retry),
            SdkCall::Health => self.last_health = Some((now, ticks)),
            SdkCall::SetPlayers { count, capacity } => {
                if ok {
                    self.counter_sent = Some((*count, *capacity));
                    self.counter_failures = 0;
                    self.counter_not_before = Some(now + self.timing.counter_min_interval);
                } else {
                    self.counter_failures = self.counter_failures.saturating_add(1);
                    self.counter_not_before = Some(
                        now + retry
                            .delay(self.counter_failures)
                            .max(self.timing.counter_min_interval),
                    );
                }
            }
            SdkCall::Shutdown => {
                self.shutdown_attempts += 1;
                self.shutdown_done = ok;
                self.shutdown_not_before = Some(now + retry.delay(self.shutdown_attempts));
            }
        }
    }
}

/// What the GameServer watch says, from one JSON line of `/watch/gameserver` (or the body
/// of `/gameserver`): the state, if the line carries one.
pub fn state_from_json(line: &[u8]) -> Option<GameServerState> {
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    // A stream line wraps the GameServer in `result`; `/gameserver` is the GameServer.
    let game_server = value.get("result").unwrap_or(&value);
    let state = game_server.get("status")?.get("state")?.as_str()?;
    Some(GameServerState::from_agones(state))
}

/// What the Agones threads read from the server.
pub(crate) struct AgonesInputs {
    pub progress: Arc<LoopProgress>,
    pub net_counters: Arc<NetCounters>,
    pub capacity: u64,
    pub fingerprint_hex: String,
    pub stop_request: Arc<StopRequest>,
    pub status: Arc<AgonesStatus>,
}

/// Logs a failed call once per run of failures at warn, then at debug, so a sidecar that
/// is down fills no disk; says when it answers again.
#[derive(Default)]
struct FailureLog {
    failing: bool,
}

impl FailureLog {
    fn failed(&mut self, what: &str, error: &dyn std::fmt::Display) {
        if self.failing {
            tracing::debug!("Agones sidecar: {what} failed again: {error}");
        } else {
            tracing::warn!(
                "Agones sidecar: {what} failed: {error} (counted; retrying with backoff, \
                 the game goes on)"
            );
            self.failing = true;
        }
    }

    fn succeeded(&mut self) {
        if self.failing {
            tracing::info!("Agones sidecar answers again");
            self.failing = false;
        }
    }
}

/// The running Agones integration: the call thread and the watch thread.
pub struct AgonesClient {
    stop: Arc<AtomicBool>,
    shutdown: Arc<AtomicBool>,
    calls: Option<JoinHandle<()>>,
    watch: Option<JoinHandle<()>>,
    status: Arc<AgonesStatus>,
}

impl AgonesClient {
    /// Starts both threads. Fails only if a thread cannot be spawned.
    pub(crate) fn start(config: AgonesConfig, inputs: AgonesInputs) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let shutdown = Arc::new(AtomicBool::new(false));
        let status = inputs.status.clone();
        status.set_state(GameServerState::Unknown);
        tracing::info!(sidecar = %config.sidecar, "Agones SDK (REST) enabled");
        let watch = {
            let stop = stop.clone();
            let status = status.clone();
            let stop_request = inputs.stop_request.clone();
            let config = config.clone();
            std::thread::Builder::new()
                .name("tickcast-agones-watch".into())
                .spawn(move || watch_game_server(&config, &status, &stop_request, &stop))?
        };
        let calls = {
            let stop = stop.clone();
            let shutdown = shutdown.clone();
            std::thread::Builder::new()
                .name("tickcast-agones".into())
                .spawn(move || make_calls(&config, &inputs, &shutdown, &stop))?
        };
        Ok(Self {
            stop,
            shutdown,
            calls: Some(calls),
            watch: Some(watch),
            status,
        })
    }

    /// What the threads publish.
    pub fn status(&self) -> &Arc<AgonesStatus> {
        &self.status
    }

    /// Sends `POST /shutdown` (retried a few times, each within the call timeout), then
    /// stops both threads. Returns when done; never fails.
    pub fn shutdown(mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        if let Some(calls) = self.calls.take() {
            let _ = calls.join();
        }
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in [self.calls.take(), self.watch.take()].into_iter().flatten() {
            if thread.join().is_err() {
                tracing::error!("an Agones thread panicked");
            }
        }
    }
}

impl Drop for AgonesClient {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// How often the call thread looks at the server when nothing is due: joins and leaves
/// reach the Counter within this plus `counter_min_interval`.
const POLL: Duration = Duration::from_millis(50);

fn make_calls(
    config: &AgonesConfig,
    inputs: &AgonesInputs,
    shutdown: &AtomicBool,
    stop: &AtomicBool,
) {
    let mut planner = SdkPlanner::new(SdkTiming::new(config.health_interval));
    let mut log = FailureLog::default();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let seen = Observation {
            ticks: inputs.progress.ticks(),
            players: NetCounters::get(&inputs.net_counters.peers),
            capacity: inputs.capacity,
            shutdown: shutdown.load(Ordering::Relaxed),
        };
        let call = match planner.next(now, seen) {
            Next::Call(call) => call,
            Next::Done => return,
            Next::WaitUntil(t) => {
                std::thread::sleep(t.saturating_duration_since(now).min(POLL));
                continue;
            }
            Next::Idle => {
                std::thread::sleep(POLL);
                continue;
            }
        };
        let (method, path, body) = call.http(&inputs.fingerprint_hex);
        let result = http::request(
            config.sidecar,
            method,
            &path,
            Some(body.as_bytes()),
            config.call_timeout,
        );
        let ok = match result {
            Ok(response) if response.is_success() => {
                inputs.status.calls_ok.fetch_add(1, Ordering::Relaxed);
                if call == SdkCall::Health {
                    inputs.status.health_pings.fetch_add(1, Ordering::Relaxed);
                }
                log.succeeded();
                match &call {
                    SdkCall::Ready => tracing::info!("Agones: marked Ready"),
                    SdkCall::Shutdown => tracing::info!("Agones: asked for shutdown"),
                    _ => tracing::trace!("Agones: {} ok", call.name()),
                }
                true
            }
            Ok(response) => {
                inputs.status.calls_failed.fetch_add(1, Ordering::Relaxed);
                log.failed(
                    call.name(),
                    &format!(
                        "HTTP {} {}",
                        response.status,
                        String::from_utf8_lossy(&response.body[..response.body.len().min(200)])
                    ),
                );
                false
            }
            Err(e) => {
                inputs.status.calls_failed.fetch_add(1, Ordering::Relaxed);
                log.failed(call.name(), &e);
                false
            }
        };
        planner.on_result(&call, Instant::now(), seen.ticks, ok);
    }
}

/// How long the watch waits for bytes before it looks at the stop flag again.
const WATCH_POLL: Duration = Duration::from_millis(200);

fn watch_game_server(
    config: &AgonesConfig,
    status: &AgonesStatus,
    stop_request: &StopRequest,
    stop: &AtomicBool,
) {
    let backoff = Backoff {
        base: Duration::from_millis(200),
        max: Duration::from_secs(5),
    };
    let mut failures = 0u32;
    let mut log = FailureLog::default();
    let publish = |state: GameServerState| {
        let before = status.state();
        if before != state {
            tracing::info!("Agones: GameServer {} -> {}", before.name(), state.name());
            status.set_state(state);
        }
        if state == GameServerState::Shutdown {
            stop_request.request(StopCause::Orchestrator);
        }
    };
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        if !first {
            status.watch_reconnects.fetch_add(1, Ordering::Relaxed);
            // Sleep the backoff in short steps so a stop is not held up by it.
            let until = Instant::now() + backoff.delay(failures.max(1));
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(WATCH_POLL.min(until.saturating_duration_since(Instant::now())));
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
        }
        first = false;
        // The current state first: the stream reports changes.
        match http::request(
            config.sidecar,
            "GET",
            "/gameserver",
            None,
            config.call_timeout,
        ) {
            Ok(response) if response.is_success() => {
                if let Some(state) = state_from_json(&response.body) {
                    publish(state);
                }
            }
            Ok(response) => {
                failures = failures.saturating_add(1);
                log.failed("GET /gameserver", &format!("HTTP {}", response.status));
                continue;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                log.failed("GET /gameserver", &e);
                continue;
            }
        }
        let mut stream =
            match http::WatchStream::open(config.sidecar, "/watch/gameserver", config.call_timeout)
            {
                Ok(stream) => stream,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    log.failed("watch", &e);
                    continue;
                }
            };
        log.succeeded();
        failures = 0;
        while !stop.load(Ordering::Relaxed) {
            match stream.next_line(WATCH_POLL) {
                Ok(http::WatchRead::Line(line)) => {
                    if let Some(state) = state_from_json(&line) {
                        publish(state);
                    }
                }
                Ok(http::WatchRead::Idle) => {}
                Ok(http::WatchRead::Ended) => {
                    tracing::debug!("Agones: the GameServer watch ended; reopening");
                    break;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    log.failed("watch", &e);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn seen(ticks: u64, players: u64) -> Observation {
        Observation {
            ticks,
            players,
            capacity: 100,
            shutdown: false,
        }
    }

    /// Runs the planner's calls at `now`, all succeeding, until it has nothing due;
    /// returns them.
    fn drain_calls(planner: &mut SdkPlanner, now: Instant, observed: Observation) -> Vec<SdkCall> {
        let mut calls = Vec::new();
        while let Next::Call(call) = planner.next(now, observed) {
            planner.on_result(&call, now, observed.ticks, true);
            calls.push(call);
            assert!(calls.len() < 10, "the planner loops: {calls:?}");
        }
        calls
    }

    #[test]
    fn nothing_before_the_first_tick_then_annotation_ready_health_and_counter() {
        let t0 = Instant::now();
        let mut planner = SdkPlanner::new(SdkTiming::new(ms(2000)));
        assert_eq!(planner.next(t0, seen(0, 0)), Next::Idle);
        assert_eq!(
            drain_calls(&mut planner, t0, seen(1, 0)),
            vec![
                SdkCall::AnnotateFingerprint,
                SdkCall::Ready,
                SdkCall::Health,
                SdkCall::SetPlayers {
                    count: 0,
                    capacity: 100
                },
            ]
        );
        assert_eq!(
            planner.next(t0, seen(1, 0)),
            Next::Idle,
            "the loop has not ticked since the ping: no ping is due, however long"
        );
        assert_eq!(
            planner.next(t0 + ms(40), seen(2, 0)),
            Next::WaitUntil(t0 + ms(2000)),
            "it ticked: the next ping is at the interval"
        );
    }

    #[test]
    fn ready_waits_for_the_fingerprint_annotation_which_backs_off() {
        let t0 = Instant::now();
        let mut planner = SdkPlanner::new(SdkTiming::new(ms(2000)));
        assert_eq!(
            planner.next(t0, seen(1, 0)),
            Next::Call(SdkCall::AnnotateFingerprint)
        );
        planner.on_result(&SdkCall::AnnotateFingerprint, t0, 1, false);
        // Health and the Counter go on meanwhile; Ready does not.
        let calls = drain_calls(&mut planner, t0, seen(1, 0));
        assert!(!calls.contains(&SdkCall::Ready), "{calls:?}");
        assert!(calls.contains(&SdkCall::Health), "{calls:?}");
        assert_eq!(planner.next(t0, seen(1, 0)), Next::WaitUntil(t0 + ms(100)));
        planner.on_result(&SdkCall::AnnotateFingerprint, t0 + ms(100), 2, false);
        assert_eq!(
            planner.next(t0 + ms(100), seen(2, 0)),
            Next::WaitUntil(t0 + ms(300)),
            "the second failure waits twice as long"
        );
        planner.on_result(&SdkCall::AnnotateFingerprint, t0 + ms(300), 3, true);
        assert_eq!(
            planner.next(t0 + ms(300), seen(3, 0)),
            Next::Call(SdkCall::Ready)
        );
    }

    #[test]
    fn health_is_sent_at_the_interval_only_while_the_loop_ticks() {
        let t0 = Instant::now();
        let mut planner = SdkPlanner::new(SdkTiming::new(ms(2000)));
        drain_calls(&mut planner, t0, seen(10, 0));
        // Before the interval: nothing.
        assert!(drain_calls(&mut planner, t0 + ms(1999), seen(70, 0)).is_empty());
        assert_eq!(
            drain_calls(&mut planner, t0 + ms(2000), seen(70, 0)),
            vec![SdkCall::Health]
        );
        // The loop hangs at tick 70: no ping, however long.
        for later in [4000, 6000, 60_000] {
            assert!(
                drain_calls(&mut planner, t0 + ms(later), seen(70, 0)).is_empty(),
                "a ping at {later} ms with the loop stalled"
            );
        }
        assert_eq!(planner.next(t0 + ms(60_000), seen(70, 0)), Next::Idle);
        // It ticks again: the ping is overdue, so it goes at once.
        assert_eq!(
            drain_calls(&mut planner, t0 + ms(60_001), seen(71, 0)),
            vec![SdkCall::Health]
        );
    }

    #[test]
    fn a_failed_ping_waits_for_the_next_interval() {
        let t0 = Instant::now();
        let mut planner = SdkPlanner::new(SdkTiming::new(ms(2000)));
        drain_calls(&mut planner, t0, seen(1, 0));
        assert_eq!(
            planner.next(t0 + ms(2000), seen(60, 0)),
            Next::Call(SdkCall::Health)
        );
        planner.on_result(&SdkCall::Health, t0 + ms(2000), 60, false);
        assert_eq!(
            planner.next(t0 + ms(2001), seen(61, 0)),
            Next::WaitUntil(t0 + ms(4000))
        );
    }

    #[test]
    fn the_counter_follows_players_coalesced_and_backs_off_on_failure() {
        let t0 = Instant::now();
        let timing = SdkTiming::new(ms(2000));
        let mut planner = SdkPlanner::new(timing);
        drain_calls(&mut planner, t0, seen(1, 0));
        // Three joins within the minimum interval: one update, with the newest count.
        assert_eq!(
            planner.next(t0 + ms(100), seen(2, 3)),
            Next::WaitUntil(t0 + ms(250))
        );
        assert_eq!(
            planner.next(t0 + ms(250), seen(3, 3)),
            Next::Call(SdkCall::SetPlayers {
                count: 3,
                capacity: 100
            })
        );
        planner.on_result(
            &SdkCall::SetPlayers {
                count: 3,
                capacity: 100,
            },
            t0 + ms(250),
            3,
            false,
        );
        // A failure waits at least the minimum interval, then retries the newest value.
        assert_eq!(
            planner.next(t0 + ms(260), seen(4, 2)),
            Next::WaitUntil(t0 + ms(500))
        );
        assert_eq!(
            planner.next(t0 + ms(500), seen(5, 2)),
            Next::Call(SdkCall::SetPlayers {
                count: 2,
                capacity: 100
            })
        );
        // Unchanged and accepted: nothing more to send.
        planner.on_result(
            &SdkCall::SetPlayers {
                count: 2,
                capacity: 100,
            },
            t0 + ms(500),
            5,
            true,
        );
        assert_eq!(
            planner.next(t0 + ms(900), seen(6, 2)),
            Next::WaitUntil(t0 + ms(2000))
        );
        // A count above the capacity (a replacement in flight) is clamped: Agones
        // refuses a count out of [0, capacity].
        let over = Observation {
            players: 150,
            ..seen(7, 0)
        };
        assert_eq!(
            planner.next(t0 + ms(900), over),
            Next::Call(SdkCall::SetPlayers {
                count: 100,
                capacity: 100
            })
        );
    }

    #[test]
    fn shutdown_preempts_everything_and_gives_up_after_its_attempts() {
        let t0 = Instant::now();
        let mut planner = SdkPlanner::new(SdkTiming::new(ms(2000)));
        let done = Observation {
            shutdown: true,
            ..seen(5, 3)
        };
        for attempt in 0..3u64 {
            let at = t0 + ms(1000 * attempt);
            assert_eq!(planner.next(at, done), Next::Call(SdkCall::Shutdown));
            planner.on_result(&SdkCall::Shutdown, at, 5, false);
        }
        assert_eq!(planner.next(t0 + ms(10_000), done), Next::Done);

        let mut planner = SdkPlanner::new(SdkTiming::new(ms(2000)));
        planner.on_result(&SdkCall::Shutdown, t0, 5, true);
        assert_eq!(planner.next(t0, done), Next::Done);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let backoff = Backoff {
            base: ms(100),
            max: ms(1000),
        };
        let delays: Vec<u64> = (0..7)
            .map(|n| backoff.delay(n).as_millis() as u64)
            .collect();
        assert_eq!(delays, [0, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.delay(u32::MAX), ms(1000));
    }

    #[test]
    fn calls_have_the_documented_paths_and_bodies() {
        let (method, path, body) = SdkCall::SetPlayers {
            count: 3,
            capacity: 250,
        }
        .http("ab");
        assert_eq!(
            (method, path.as_str()),
            ("PATCH", "/v1beta1/counters/players")
        );
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body, serde_json::json!({"count": "3", "capacity": "250"}));
        let (method, path, body) = SdkCall::AnnotateFingerprint.http("00ff");
        assert_eq!((method, path.as_str()), ("PUT", "/metadata/annotation"));
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"key": "tickcast-fingerprint", "value": "00ff"})
        );
        assert_eq!(SdkCall::Ready.http("").1, "/ready");
        assert_eq!(SdkCall::Health.http("").1, "/health");
        assert_eq!(SdkCall::Shutdown.http("").1, "/shutdown");
    }

    #[test]
    fn the_state_is_read_from_a_watch_line_or_a_game_server() {
        let line = br#"{"result":{"object_meta":{"name":"gs-1"},"status":{"state":"Allocated","address":"10.0.0.1","ports":[{"name":"game","port":7001}]}}}"#;
        assert_eq!(state_from_json(line), Some(GameServerState::Allocated));
        assert_eq!(
            state_from_json(br#"{"status":{"state":"Ready"}}"#),
            Some(GameServerState::Ready)
        );
        assert_eq!(
            state_from_json(br#"{"status":{"state":"Creating"}}"#),
            Some(GameServerState::Other)
        );
        assert_eq!(state_from_json(br#"{"error":{"message":"x"}}"#), None);
        assert_eq!(state_from_json(b"not json"), None);
    }

    #[test]
    fn the_state_round_trips_through_its_atomic() {
        let status = AgonesStatus::default();
        assert_eq!(status.state(), GameServerState::Disabled);
        for state in GameServerState::ALL {
            status.set_state(state);
            assert_eq!(status.state(), state);
        }
    }
}
