//! Many clients in one process, each playing one [`Behaviour`] from a [`Mix`]: the
//! engine of `tickcast-bots`, also run in-process by tests.
//!
//! Cost per client is kept small so one process on two cores carries thousands: clients
//! share a few UDP endpoints (one per [`SwarmConfig::clients_per_endpoint`]), each
//! client is one task, a datagram is parsed in place and counted without allocating,
//! and every histogram has a fixed size. What the swarm never does: judge — that is
//! [`crate::report`].

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use quinn::SendDatagramError;
use tickcast_shared::Tick;
use tickcast_shared::msg::InputCmd;
use tickcast_shared::token::{ConnectToken, TokenKey};
use tokio::time::{Instant, MissedTickBehavior};

use crate::pace::InputPacer;
use crate::report::ClientOutcome;
use crate::track::{SnapshotReceiver, View};
use crate::{
    ClientError, EndpointOptions, InputHistory, Session, client_endpoint_with, connect,
    connection_error_key, mint_token, now_us_wrapping,
};

/// What a bot does once connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Behaviour {
    /// Walks in a new random direction every second; reads every datagram.
    Walk,
    /// Stands still (inputs with no movement, still acking); reads every datagram.
    Idle,
    /// Reads for [`SwarmConfig::stall_after`], then never reads a datagram again while
    /// staying connected and sending still inputs. quinn keeps acknowledging the
    /// packets underneath, so the server sees a healthy QUIC peer: this loads the
    /// client's own buffer, not the server's backpressure. Its expected ticks run to
    /// the server's tick at the end (estimated from the Welcome and the clock).
    Stall,
    /// Walks, but reads at most [`SwarmConfig::slow_read_rate`] datagrams a second; the
    /// rest wait in quinn's datagram receive buffer, which drops the oldest when full.
    /// Its expected ticks run to the server's tick at the end, like `Stall`'s.
    Slow,
    /// Walks, and every [`SwarmConfig::churn_every`] (first period jittered per bot)
    /// closes its connection and connects again with a fresh token.
    Churn,
}

impl Behaviour {
    /// Every behaviour, in report order.
    pub const ALL: [Behaviour; 5] = [
        Behaviour::Walk,
        Behaviour::Idle,
        Behaviour::Stall,
        Behaviour::Slow,
        Behaviour::Churn,
    ];

    /// The name used in `--mix` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Behaviour::Walk => "walk",
            Behaviour::Idle => "idle",
            Behaviour::Stall => "stall",
            Behaviour::Slow => "slow",
            Behaviour::Churn => "churn",
        }
    }

    /// The behaviour with this name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Whether a client of this behaviour reads everything promptly and stays
    /// connected, so its delivery and latency judge the server (walk and idle).
    pub fn is_healthy(self) -> bool {
        matches!(self, Behaviour::Walk | Behaviour::Idle)
    }

    fn index(self) -> usize {
        self as usize
    }

    fn moves(self) -> bool {
        matches!(self, Behaviour::Walk | Behaviour::Slow | Behaviour::Churn)
    }
}

/// Why a `--mix` did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MixError {
    /// Nothing given.
    #[error("the mix is empty (expected e.g. walk=80,idle=10,stall=5,slow=5)")]
    Empty,
    /// An entry without `=`.
    #[error("`{0}` is not name=weight (e.g. walk=80)")]
    NotNameWeight(String),
    /// A name that is not a behaviour.
    #[error("unknown behaviour `{0}` (known: walk, idle, stall, slow, churn)")]
    UnknownBehaviour(String),
    /// A weight that is not a whole number.
    #[error("weight of {name} is `{weight}`, not a whole number from 0 to 1000000")]
    BadWeight {
        /// The behaviour.
        name: String,
        /// What was given.
        weight: String,
    },
    /// A behaviour given twice.
    #[error("{0} is given twice")]
    Duplicate(String),
    /// Every weight is zero.
    #[error("every weight is 0: at least one behaviour needs a weight above 0")]
    AllZero,
}

/// Largest weight accepted, so sums cannot overflow.
const MAX_WEIGHT: u32 = 1_000_000;

/// How many clients play each behaviour, as weights (percentages or any integers;
/// only their ratios matter). Default: `walk=100`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 5],
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            weights: [1, 0, 0, 0, 0],
        }
    }
}

impl FromStr for Mix {
    type Err = MixError;

    /// Parses `name=weight[,name=weight…]`, e.g. `walk=80,idle=10,stall=5,slow=5`.
    /// Strict: every entry is a known behaviour with a whole-number weight, none twice,
    /// not all zero. Spaces around names and weights are allowed; empty entries are not.
    fn from_str(text: &str) -> Result<Self, MixError> {
        if text.trim().is_empty() {
            return Err(MixError::Empty);
        }
        let mut weights = [0u32; 5];
        let mut given = [false; 5];
        for entry in text.split(',') {
            let Some((name, weight)) = entry.split_once('=') else {
                return Err(MixError::NotNameWeight(entry.trim().to_string()));
            };
            let (name, weight) = (name.trim(), weight.trim());
            let behaviour = Behaviour::from_name(name)
                .ok_or_else(|| MixError::UnknownBehaviour(name.to_string()))?;
            let value = weight
                .parse::<u32>()
                .ok()
                .filter(|w| *w <= MAX_WEIGHT && weight.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| MixError::BadWeight {
                    name: name.to_string(),
                    weight: weight.to_string(),
                })?;
            if std::mem::replace(&mut given[behaviour.index()], true) {
                return Err(MixError::Duplicate(name.to_string()));
            }
            weights[behaviour.index()] = value;
        }
        if weights.iter().all(|w| *w == 0) {
            return Err(MixError::AllZero);
        }
        Ok(Self { weights })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for behaviour in Behaviour::ALL {
            let weight = self.weights[behaviour.index()];
            if weight > 0 {
                if !first {
                    f.write_str(",")?;
                }
                write!(f, "{}={weight}", behaviour.name())?;
                first = false;
            }
        }
        Ok(())
    }
}

impl Mix {
    /// The weight of one behaviour.
    pub fn weight(&self, behaviour: Behaviour) -> u32 {
        self.weights[behaviour.index()]
    }

    /// How many of `clients` play each behaviour (indexed like [`Behaviour::ALL`]):
    /// proportional to the weights, rounded by largest remainder (ties to the earlier
    /// behaviour), so the counts always add up to `clients`.
    pub fn counts(&self, clients: usize) -> [usize; 5] {
        let total: u64 = self.weights.iter().map(|w| u64::from(*w)).sum();
        let mut counts = [0usize; 5];
        let mut remainders = [(0u64, 0usize); 5];
        let mut assigned = 0;
        for (i, weight) in self.weights.iter().enumerate() {
            let exact = clients as u64 * u64::from(*weight);
            counts[i] = (exact / total) as usize;
            remainders[i] = (exact % total, i);
            assigned += counts[i];
        }
        // Largest remainder first; the stable sort keeps ties in behaviour order.
        remainders.sort_by_key(|r| std::cmp::Reverse(r.0));
        for (_, i) in remainders.iter().take(clients - assigned) {
            counts[*i] += 1;
        }
        counts
    }

    /// The behaviour of each of `clients` bots, interleaved (smooth weighted round
    /// robin over [`Mix::counts`]) so a ramp brings every behaviour in evenly.
    pub fn assign(&self, clients: usize) -> Vec<Behaviour> {
        let counts = self.counts(clients);
        let mut credit = [0i64; 5];
        let mut left = counts;
        let mut out = Vec::with_capacity(clients);
        for _ in 0..clients {
            for i in 0..5 {
                if left[i] > 0 {
                    credit[i] += counts[i] as i64;
                }
            }
            let pick = (0..5)
                .filter(|i| left[*i] > 0)
                .max_by_key(|i| (credit[*i], std::cmp::Reverse(*i)))
                .unwrap_or(0);
            credit[pick] -= clients as i64;
            left[pick] -= 1;
            out.push(Behaviour::ALL[pick]);
        }
        out
    }
}

/// Where bots get their connect tokens.
#[derive(Debug)]
pub enum TokenSource {
    /// Mint a development token per connect, client ids `first_client_id + bot index`.
    Mint {
        /// The server's token key.
        key: TokenKey,
        /// Client id of bot 0.
        first_client_id: u64,
        /// Validity of each token.
        ttl: Duration,
    },
    /// Tokens read from a file (see [`crate::parse_token_file`]): bot `i` connects
    /// with token `i`; every reconnect (churn) takes the next unused one after the
    /// first `clients`. Each token admits once (its nonce is single-use).
    List(Vec<ConnectToken>),
}

/// Settings of a swarm. `Default` gives 10 walking clients for 10 s against
/// `127.0.0.1:4433` with an all-zero fingerprint (set one).
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// Server address.
    pub server: SocketAddr,
    /// SHA-256 of the server's certificate.
    pub fingerprint: [u8; 32],
    /// Number of bots.
    pub clients: usize,
    /// How long each bot plays from its first connect.
    pub duration: Duration,
    /// Connects are spread evenly over this long.
    pub ramp: Duration,
    /// Behaviours.
    pub mix: Mix,
    /// Bots per local UDP endpoint. Default 200: enough endpoints that the runtime's
    /// workers share the receive work, few enough that sockets and their drivers stay
    /// a small part of the cost.
    pub clients_per_endpoint: usize,
    /// Per connection, bytes of datagrams quinn holds unread (drop oldest). Default
    /// 256 KiB: eight ticks of a 2,000-player world, while a stalled bot holds at most
    /// this much (the library's 1 MiB would be 2 GiB over 2,000 bots).
    pub datagram_receive_buffer: usize,
    /// `slow` bots read at most this many datagrams per second. Default 100: about a
    /// quarter of a 200-NPC world's chunks at 30 Hz.
    pub slow_read_rate: u32,
    /// `stall` bots stop reading this long after connecting. Default 1 s.
    pub stall_after: Duration,
    /// `churn` bots reconnect this often. Default 3 s.
    pub churn_every: Duration,
    /// Most time a connect may take. Default 10 s.
    pub connect_timeout: Duration,
    /// Threads the bots run on, each with its own runtime and endpoints. Default 2:
    /// this project's machines have two cores.
    pub threads: usize,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        Self {
            server: ([127, 0, 0, 1], 4433).into(),
            fingerprint: [0; 32],
            clients: 10,
            duration: Duration::from_secs(10),
            ramp: Duration::from_secs(1),
            mix: Mix::default(),
            clients_per_endpoint: 200,
            datagram_receive_buffer: 256 << 10,
            slow_read_rate: 100,
            stall_after: Duration::from_secs(1),
            churn_every: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(10),
            threads: 2,
        }
    }
}

/// Why a swarm could not start.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    /// No clients asked for.
    #[error("at least one client is needed")]
    NoClients,
    /// A token list shorter than the swarm.
    #[error("{tokens} tokens for {clients} clients: the token file needs one per client")]
    NotEnoughTokens {
        /// Tokens given.
        tokens: usize,
        /// Clients asked for.
        clients: usize,
    },
    /// A local endpoint could not be made.
    #[error("creating a client endpoint: {0}")]
    Endpoint(#[from] ClientError),
    /// A bot thread could not start or died.
    #[error("bot thread: {0}")]
    Thread(String),
}

/// Counters the bots update while they run (about once a second each), for a
/// progress line. Totals since the start.
#[derive(Debug, Default)]
pub struct LiveCounters {
    /// Sessions currently connected.
    pub connected: AtomicUsize,
    /// Connects that failed.
    pub connect_failures: AtomicU64,
    /// Bots that finished.
    pub finished: AtomicUsize,
    /// Datagrams read.
    pub datagrams: AtomicU64,
    /// Bytes of datagrams read.
    pub bytes: AtomicU64,
    /// Ticks received whole.
    pub ticks_complete: AtomicU64,
    /// Ticks expected.
    pub ticks_expected: AtomicU64,
}

struct Shared {
    config: SwarmConfig,
    tokens: TokenSource,
    next_spare_token: AtomicUsize,
    live: Arc<LiveCounters>,
}

impl Shared {
    fn token(&self, bot: usize, session: u32) -> Result<ConnectToken, String> {
        match &self.tokens {
            TokenSource::Mint {
                key,
                first_client_id,
                ttl,
            } => {
                mint_token(key, first_client_id.wrapping_add(bot as u64), *ttl).map_err(|e| e.key())
            }
            TokenSource::List(tokens) => {
                let index = if session == 0 {
                    bot
                } else {
                    self.config.clients + self.next_spare_token.fetch_add(1, Ordering::Relaxed)
                };
                tokens.get(index).copied().ok_or_else(|| "no_token".into())
            }
        }
    }
}

/// Runs every bot of `config` to the end and returns what each saw, in bot order.
/// `live` is updated as they run. Blocks: the bots run on [`SwarmConfig::threads`]
/// threads of their own, each a current-thread tokio runtime with its own endpoints,
/// so a datagram is received, decrypted and read on one thread with no work
/// stealing or cross-thread wake-ups.
pub fn run_swarm(
    config: SwarmConfig,
    tokens: TokenSource,
    live: Arc<LiveCounters>,
) -> Result<Vec<ClientOutcome>, SwarmError> {
    if config.clients == 0 {
        return Err(SwarmError::NoClients);
    }
    if let TokenSource::List(list) = &tokens
        && list.len() < config.clients
    {
        return Err(SwarmError::NotEnoughTokens {
            tokens: list.len(),
            clients: config.clients,
        });
    }
    let threads = config.threads.clamp(1, config.clients);
    let behaviours = config.mix.assign(config.clients);
    let shared = Arc::new(Shared {
        config,
        tokens,
        next_spare_token: AtomicUsize::new(0),
        live,
    });
    let start = std::time::Instant::now();
    let shards = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|shard| {
                // Bot i runs on shard i % threads, so a ramp loads every shard evenly.
                let bots: Vec<(usize, Behaviour)> = behaviours
                    .iter()
                    .copied()
                    .enumerate()
                    .skip(shard)
                    .step_by(threads)
                    .collect();
                let shared = &shared;
                std::thread::Builder::new()
                    .name(format!("bots-{shard}"))
                    .spawn_scoped(scope, move || run_shard(shared, bots, start))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| match handle {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|_| Err(SwarmError::Thread("a bot thread panicked".into()))),
                Err(e) => Err(SwarmError::Thread(e.to_string())),
            })
            .collect::<Vec<_>>()
    });
    let mut outcomes: Vec<Option<ClientOutcome>> = vec![None; behaviours.len()];
    for shard in shards {
        for (index, outcome) in shard? {
            outcomes[index] = Some(outcome);
        }
    }
    Ok(outcomes
        .into_iter()
        .zip(behaviours)
        .map(|(outcome, behaviour)| outcome.unwrap_or_else(|| ClientOutcome::new(behaviour)))
        .collect())
}

/// One thread's bots, on a current-thread runtime with endpoints of its own.
fn run_shard(
    shared: &Arc<Shared>,
    bots: Vec<(usize, Behaviour)>,
    start: std::time::Instant,
) -> Result<Vec<(usize, ClientOutcome)>, SwarmError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SwarmError::Thread(format!("starting a runtime: {e}")))?;
    runtime.block_on(async {
        let config = &shared.config;
        let options = EndpointOptions {
            datagram_receive_buffer: config.datagram_receive_buffer,
        };
        let endpoint_count = bots.len().div_ceil(config.clients_per_endpoint.max(1));
        let endpoints = (0..endpoint_count)
            .map(|_| client_endpoint_with(config.server, config.fingerprint, &options))
            .collect::<Result<Vec<_>, _>>()?;
        let start = Instant::from_std(start);
        let tasks: Vec<_> = bots
            .iter()
            .enumerate()
            .map(|(i, &(index, behaviour))| {
                let endpoint = endpoints[i % endpoints.len()].clone();
                let shared = shared.clone();
                tokio::spawn(
                    async move { run_bot(&shared, &endpoint, index, behaviour, start).await },
                )
            })
            .collect();
        let mut outcomes = Vec::with_capacity(tasks.len());
        for (task, &(index, behaviour)) in tasks.into_iter().zip(&bots) {
            // A bot task only fails by panicking; report it as that bot's error.
            outcomes.push((
                index,
                task.await.unwrap_or_else(|e| {
                    let mut outcome = ClientOutcome::new(behaviour);
                    outcome.errors.push(format!("bot_panicked:{e}"));
                    outcome
                }),
            ));
        }
        for endpoint in &endpoints {
            let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        }
        Ok(outcomes)
    })
}

/// A deterministic walk: a new direction every `inputs_per_turn` inputs.
struct Walk {
    state: u64,
    direction: (i8, i8),
}

impl Walk {
    fn new(seed: u64) -> Self {
        let mut walk = Self {
            state: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            direction: (0, 0),
        };
        walk.turn();
        walk
    }

    fn turn(&mut self) {
        self.state = self
            .state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let dx = ((self.state >> 33) % 255) as i16 - 127;
        let dy = ((self.state >> 41) % 255) as i16 - 127;
        self.direction = (dx as i8, dy as i8);
    }
}

/// First churn period of bot `index`: between half and one and a half periods, spread
/// by the golden ratio so reconnects do not come in waves.
fn churn_period(every: Duration, index: usize, session: u32) -> Duration {
    if session > 0 {
        return every;
    }
    let spread = (index as f64 * 0.618_033_988_75).fract();
    every.mul_f64(0.5 + spread)
}

async fn run_bot(
    shared: &Shared,
    endpoint: &quinn::Endpoint,
    index: usize,
    behaviour: Behaviour,
    start: Instant,
) -> ClientOutcome {
    let config = &shared.config;
    let mut outcome = ClientOutcome::new(behaviour);
    let delay = config
        .ramp
        .mul_f64(index as f64 / config.clients.max(1) as f64);
    tokio::time::sleep_until(start + delay).await;
    let end = Instant::now() + config.duration;
    let mut walk = Walk::new(index as u64);
    let mut session_index = 0u32;
    while Instant::now() < end {
        let token = match shared.token(index, session_index) {
            Ok(token) => token,
            Err(key) => {
                outcome.errors.push(format!("connect:{key}"));
                break;
            }
        };
        let connecting = Instant::now();
        let attempt = tokio::time::timeout_at(
            end,
            connect(endpoint, config.server, token, config.connect_timeout),
        )
        .await;
        let session = match attempt {
            Err(_) => break, // the run ended while connecting
            Ok(Err(e)) => {
                tracing::debug!(index, "connect failed: {e}");
                outcome.errors.push(format!("connect:{}", e.key()));
                shared.live.connect_failures.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Ok(Ok(session)) => session,
        };
        outcome
            .connect_time
            .record(connecting.elapsed().as_micros() as u64);
        outcome.connected = true;
        outcome.tick_rate = session.welcome().tick_rate;
        shared.live.connected.fetch_add(1, Ordering::Relaxed);
        let until = match behaviour {
            Behaviour::Churn => {
                end.min(Instant::now() + churn_period(config.churn_every, index, session_index))
            }
            _ => end,
        };
        let began = Instant::now();
        let lost = play(shared, &session, behaviour, until, &mut walk, &mut outcome).await;
        outcome.played_for += began.elapsed();
        let stats = session.stats();
        outcome.udp_bytes_in += stats.udp_rx.bytes;
        outcome.udp_bytes_out += stats.udp_tx.bytes;
        outcome.udp_packets_in += stats.udp_rx.datagrams;
        outcome.udp_packets_out += stats.udp_tx.datagrams;
        session.close();
        shared.live.connected.fetch_sub(1, Ordering::Relaxed);
        if let Some(key) = lost {
            outcome.disconnected = Some(key);
            break;
        }
        if behaviour != Behaviour::Churn || Instant::now() >= end {
            break;
        }
        outcome.reconnects += 1;
        session_index += 1;
    }
    shared.live.finished.fetch_add(1, Ordering::Relaxed);
    outcome
}

/// What a bot has already added to the live counters.
#[derive(Default)]
struct Flushed {
    datagrams: u64,
    bytes: u64,
    complete: u64,
    expected: u64,
}

fn flush_live(live: &LiveCounters, receiver: &SnapshotReceiver, flushed: &mut Flushed) {
    let delivery = receiver.assembler().delivery();
    let now = Flushed {
        datagrams: receiver.datagrams(),
        bytes: receiver.bytes(),
        complete: delivery.complete,
        expected: delivery.expected(),
    };
    let add = |counter: &AtomicU64, new: u64, old: u64| {
        counter.fetch_add(new.saturating_sub(old), Ordering::Relaxed);
    };
    add(&live.datagrams, now.datagrams, flushed.datagrams);
    add(&live.bytes, now.bytes, flushed.bytes);
    add(&live.ticks_complete, now.complete, flushed.complete);
    add(&live.ticks_expected, now.expected, flushed.expected);
    *flushed = now;
}

/// Plays one session until `until`; returns the reason if the connection was lost.
async fn play(
    shared: &Shared,
    session: &Session,
    behaviour: Behaviour,
    until: Instant,
    walk: &mut Walk,
    outcome: &mut ClientOutcome,
) -> Option<String> {
    let config = &shared.config;
    let welcomed = Instant::now();
    let tick_rate = u32::from(session.welcome().tick_rate.max(1));
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / tick_rate);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut pacer = InputPacer::new(session.welcome().tick_rate);
    let mut receiver = SnapshotReceiver::new(View::from_welcome(session.welcome()));
    let mut history = InputHistory::default();
    let mut flushed = Flushed::default();
    let stall_at = (behaviour == Behaviour::Stall).then(|| Instant::now() + config.stall_after);
    let mut stalled = false;
    // Slow bots: a token bucket refilled each tick, banking at most two ticks' worth.
    let refill = f64::from(config.slow_read_rate) / f64::from(tick_rate);
    let bank = (2.0 * refill).max(1.0);
    let mut budget = if behaviour == Behaviour::Slow {
        refill
    } else {
        f64::INFINITY
    };
    let mut inputs = 0u64;
    let lost = loop {
        let reading = !stalled && budget >= 1.0;
        tokio::select! {
            biased;
            now = ticker.tick() => {
                // Checked here rather than as a timer of its own: one timer fewer to poll
                // on every wake-up of thousands of bots; the end is at most a tick late.
                if now >= until {
                    break None;
                }
                inputs += 1;
                if inputs.is_multiple_of(u64::from(tick_rate)) {
                    // Once a second, put the inputs back just before the server's tick.
                    if let Some(at) = pacer.next_send_after(std::time::Instant::now()) {
                        ticker.reset_at(tokio::time::Instant::from_std(at));
                    }
                    walk.turn();
                    outcome.rtt.record(session.rtt().as_micros() as u64);
                    flush_live(&shared.live, &receiver, &mut flushed);
                }
                if let Some(age) = receiver.snapshot_age_us(now_us_wrapping()) {
                    outcome.snapshot_age.record(age);
                }
                if stall_at.is_some_and(|at| now >= at) {
                    stalled = true;
                }
                if behaviour == Behaviour::Slow {
                    budget = (budget + refill).min(bank);
                }
                let (move_x, move_y) = if behaviour.moves() { walk.direction } else { (0, 0) };
                let cmd = InputCmd { move_x, move_y, ..Default::default() };
                let ack = receiver.assembler().delivery().last_tick.unwrap_or(Tick::ZERO);
                match session.send_input(&history.push(cmd, ack)) {
                    Ok(()) => {}
                    Err(SendDatagramError::ConnectionLost(e)) => break Some(connection_error_key(&e)),
                    Err(e) => tracing::debug!("input not sent: {e}"),
                }
            }
            datagram = session.next_datagram(), if reading => match datagram {
                Ok(bytes) => {
                    budget -= 1.0;
                    receiver.on_datagram(&bytes, now_us_wrapping());
                    if let Some(tick) = receiver.assembler().delivery().last_tick {
                        pacer.on_datagram(tick, std::time::Instant::now());
                    }
                }
                Err(e) => break Some(connection_error_key(&e)),
            },
        }
    };
    flush_live(&shared.live, &receiver, &mut flushed);
    // The last two ticks may still be in flight when the session ends: leave them out.
    let delivery = receiver.finish(2);
    outcome.delivery.add(&delivery);
    if matches!(behaviour, Behaviour::Stall | Behaviour::Slow) {
        // These bots stop reading or read behind, so the newest tick they saw is not
        // the server's: count the ticks published since as undelivered too.
        let elapsed = welcomed.elapsed().as_secs_f64();
        let server_tick = session
            .welcome()
            .server_tick
            .plus((elapsed * f64::from(tick_rate)) as u32)
            .minus(2);
        outcome.delivery.add_unseen_tail(&delivery, server_tick);
    }
    outcome.latency.merge(receiver.latency());
    outcome.bytes_in += receiver.bytes();
    outcome.malformed_chunks += receiver.malformed();
    lost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(text: &str) -> Result<Mix, MixError> {
        text.parse()
    }

    #[test]
    fn a_mix_parses_weights_and_prints_back() {
        let m = mix("walk=80,idle=10,stall=5,slow=5,churn=0").unwrap();
        assert_eq!(m.weight(Behaviour::Walk), 80);
        assert_eq!(m.weight(Behaviour::Churn), 0);
        assert_eq!(m.to_string(), "walk=80,idle=10,stall=5,slow=5");
        assert_eq!(
            mix(" idle = 3 , walk=1 ").unwrap().to_string(),
            "walk=1,idle=3"
        );
        assert_eq!(Mix::default().to_string(), "walk=1");
    }

    #[test]
    fn a_bad_mix_says_what_is_wrong() {
        assert_eq!(mix(""), Err(MixError::Empty));
        assert_eq!(mix("walk"), Err(MixError::NotNameWeight("walk".into())));
        assert_eq!(mix("walk=1,"), Err(MixError::NotNameWeight("".into())));
        assert_eq!(
            mix("walk=1,run=2"),
            Err(MixError::UnknownBehaviour("run".into()))
        );
        for weight in ["-1", "+1", "1.5", "", "x", "1000001", "99999999999"] {
            assert_eq!(
                mix(&format!("walk={weight}")),
                Err(MixError::BadWeight {
                    name: "walk".into(),
                    weight: weight.into()
                }),
                "{weight}"
            );
        }
        assert_eq!(
            mix("walk=1,walk=2"),
            Err(MixError::Duplicate("walk".into()))
        );
        assert_eq!(mix("walk=0,idle=0"), Err(MixError::AllZero));
        assert_eq!(
            mix("Walk=1").unwrap_err().to_string(),
            "unknown behaviour `Walk` (known: walk, idle, stall, slow, churn)"
        );
    }

    #[test]
    fn counts_follow_the_weights_and_add_up() {
        let m = mix("walk=80,idle=10,stall=5,slow=5").unwrap();
        assert_eq!(m.counts(100), [80, 10, 5, 5, 0]);
        assert_eq!(m.counts(2000), [1600, 200, 100, 100, 0]);
        // 10 clients: 8, 1, then 0.5 each for stall and slow; the tie goes to stall.
        assert_eq!(m.counts(10), [8, 1, 1, 0, 0]);
        assert_eq!(m.counts(1), [1, 0, 0, 0, 0]);
        let thirds = mix("walk=1,idle=1,churn=1").unwrap();
        for clients in 0..50 {
            assert_eq!(thirds.counts(clients).iter().sum::<usize>(), clients);
        }
        assert_eq!(thirds.counts(4), [2, 1, 0, 0, 1]);
    }

    #[test]
    fn behaviours_are_interleaved_in_their_counts() {
        let m = mix("walk=50,stall=25,churn=25").unwrap();
        let assigned = m.assign(8);
        let count = |b| assigned.iter().filter(|x| **x == b).count();
        assert_eq!(count(Behaviour::Walk), 4);
        assert_eq!(count(Behaviour::Stall), 2);
        assert_eq!(count(Behaviour::Churn), 2);
        // Interleaved: the first half already has every behaviour.
        for b in [Behaviour::Walk, Behaviour::Stall, Behaviour::Churn] {
            assert!(assigned[..4].contains(&b), "{assigned:?}");
        }
    }

    #[test]
    fn listed_tokens_go_one_per_bot_then_one_per_reconnect_until_they_run_out() {
        let key = TokenKey::from_bytes(&[3; 32]);
        let tokens: Vec<ConnectToken> = (0..5)
            .map(|id| key.mint(id, 2_000_000_000, [id as u8; 16], 0))
            .collect();
        let shared = Shared {
            config: SwarmConfig {
                clients: 3,
                ..SwarmConfig::default()
            },
            tokens: TokenSource::List(tokens.clone()),
            next_spare_token: AtomicUsize::new(0),
            live: Arc::default(),
        };
        assert_eq!(shared.token(2, 0), Ok(tokens[2]));
        assert_eq!(shared.token(0, 0), Ok(tokens[0]));
        // Reconnects take the spares after the first `clients`, whoever asks.
        assert_eq!(shared.token(1, 1), Ok(tokens[3]));
        assert_eq!(shared.token(0, 4), Ok(tokens[4]));
        assert_eq!(shared.token(2, 1), Err("no_token".to_string()));
    }

    #[test]
    fn minted_tokens_carry_consecutive_client_ids_and_fresh_nonces() {
        let shared = Shared {
            config: SwarmConfig::default(),
            tokens: TokenSource::Mint {
                key: TokenKey::from_bytes(&[3; 32]),
                first_client_id: 100,
                ttl: Duration::from_secs(60),
            },
            next_spare_token: AtomicUsize::new(0),
            live: Arc::default(),
        };
        let first = shared.token(7, 0).unwrap();
        let again = shared.token(7, 1).unwrap();
        assert_eq!(first.client_id, 107);
        assert_eq!(again.client_id, 107);
        assert_ne!(first.nonce, again.nonce);
    }

    #[test]
    fn churn_periods_are_spread_and_then_regular() {
        let every = Duration::from_secs(2);
        for index in 0..100 {
            let first = churn_period(every, index, 0);
            assert!(first >= Duration::from_secs(1) && first < Duration::from_secs(3));
        }
        assert_ne!(churn_period(every, 1, 0), churn_period(every, 2, 0));
        assert_eq!(churn_period(every, 7, 3), every);
    }
}
