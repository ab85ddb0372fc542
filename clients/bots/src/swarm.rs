//! Many clients in one process, each playing one [`Behaviour`] from a [`Mix`]: the
//! engine of `tickcast-bots`, also run in-process by tests.
//!
//! Cost per client is kept small so one process carries thousands: bots share a few UDP
//! sockets (one per [`SwarmConfig::clients_per_endpoint`]) on a few shard threads; a
//! datagram is parsed in place and counted without allocating, and every histogram has
//! a fixed size. Two drivers ([`BotDriver`]): quinn's async endpoint with a tokio task
//! per bot (the default), or one sans-IO QUIC driver per shard
//! ([`tickcast_clients::driver::ClientDriver`]) with every bot a state machine on it —
//! no task, waker or channel per bot. What a bot does is decided by its
//! [`Bot`](crate::behaviour::Bot) (plain code); this module only moves datagrams, time
//! and counts between it and the connection. What the swarm never does: judge — that
//! is [`crate::report`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tickcast_clients::track::SnapshotReceiver;
use tickcast_clients::{ByRoles, ClientError, InputMapper, mint_token};
use tickcast_shared::token::{ConnectToken, TokenKey};

use crate::behaviour::Behaviour;
use crate::mix::Mix;
use crate::outcome::ClientOutcome;

mod driven;
mod quinn_endpoint;

/// What carries a shard's bots to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BotDriver {
    /// One thread, a few UDP sockets and a sans-IO `quinn_proto` endpoint for all its
    /// bots ([`tickcast_clients::driver::ClientDriver`]); each bot a state machine, no
    /// task per bot. The default (the `proto-driver` feature, on by default).
    Proto,
    /// quinn's async endpoint on a current-thread tokio runtime, one task per bot: the
    /// driver before issue #15, and the A/B's baseline (the default of a build without
    /// the `proto-driver` feature).
    QuinnEndpoint,
}

impl Default for BotDriver {
    fn default() -> Self {
        if cfg!(feature = "proto-driver") {
            BotDriver::Proto
        } else {
            BotDriver::QuinnEndpoint
        }
    }
}

impl BotDriver {
    /// The name used by `--driver` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            BotDriver::Proto => "proto",
            BotDriver::QuinnEndpoint => "quinn-endpoint",
        }
    }
}

impl std::str::FromStr for BotDriver {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "proto" => Ok(BotDriver::Proto),
            "quinn-endpoint" => Ok(BotDriver::QuinnEndpoint),
            other => Err(format!(
                "`{other}` is not a bot driver (proto or quinn-endpoint)"
            )),
        }
    }
}

/// How a `churn` bot ends each session before it connects again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChurnLeave {
    /// Closes with the normal code (the server frees the peer at once). The default.
    #[default]
    Close,
    /// Vanishes: its socket falls silent with no close ([`tickcast_clients::vanish`]),
    /// so the server must time the peer out (`idle_timeout`). It comes back as a new
    /// player (the next client id block, or the next listed token), as a device that
    /// died would not reconnect under the old connection: the ghost is the server's to
    /// clear.
    Vanish,
    /// Alternates: closes, vanishes, closes, …
    Alternate,
}

impl ChurnLeave {
    /// Whether session `session` (0 = the first) of a churn bot ends by vanishing.
    pub fn vanishes(self, session: u32) -> bool {
        match self {
            ChurnLeave::Close => false,
            ChurnLeave::Vanish => true,
            ChurnLeave::Alternate => session % 2 == 1,
        }
    }
}

impl std::str::FromStr for ChurnLeave {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "close" => Ok(ChurnLeave::Close),
            "vanish" => Ok(ChurnLeave::Vanish),
            "alternate" => Ok(ChurnLeave::Alternate),
            other => Err(format!(
                "`{other}` is not a way to leave (close, vanish or alternate)"
            )),
        }
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
    /// Tokens read from a file (see [`crate::cli::parse_token_file`]): bot `i` connects
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
    /// Bots per local UDP socket. Default 200: each socket has its own kernel receive
    /// buffer (4 MiB at most here), enough for a burst of 200 clients' snapshots, and
    /// few enough sockets that polling them stays a small part of the cost.
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
    /// How `churn` bots leave before reconnecting. Default [`ChurnLeave::Close`].
    pub churn_leave: ChurnLeave,
    /// Most time a connect may take. Default 10 s.
    pub connect_timeout: Duration,
    /// Threads the bots run on, each with its own driver (or runtime) and sockets.
    /// Default 2: this project's machines have two cores.
    pub threads: usize,
    /// What carries the bots. Default [`BotDriver::Proto`] ([`BotDriver::QuinnEndpoint`]
    /// in a build without the `proto-driver` feature).
    pub driver: BotDriver,
    /// How each bot turns its behaviour's intent into the game's input: the game's hook
    /// for smarter bots. Default [`Inputs::by_roles`], which drives any game through its
    /// schema's input roles.
    pub inputs: Inputs,
}

/// Makes each bot's [`InputMapper`] (one per session, so a mapper may keep state). A
/// game's own bots binary sets [`SwarmConfig::inputs`] to its mapper; the stock
/// `tickcast-bots` uses [`ByRoles`] for every game.
#[derive(Clone)]
pub struct Inputs(Arc<dyn Fn() -> Box<dyn InputMapper> + Send + Sync>);

impl Inputs {
    /// [`ByRoles`]: movement, aim and buttons onto the schema's input roles.
    pub fn by_roles() -> Self {
        Self::new(|| Box::new(ByRoles))
    }

    /// Each session's mapper from `make`.
    pub fn new(make: impl Fn() -> Box<dyn InputMapper> + Send + Sync + 'static) -> Self {
        Self(Arc::new(make))
    }

    /// A new mapper for one session.
    pub fn mapper(&self) -> Box<dyn InputMapper> {
        (self.0)()
    }
}

impl std::fmt::Debug for Inputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inputs(..)")
    }
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
            churn_leave: ChurnLeave::Close,
            connect_timeout: Duration::from_secs(10),
            threads: 2,
            driver: BotDriver::default(),
            inputs: Inputs::by_roles(),
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
    /// The token for session `session` of bot `bot`, playing as player `player`: 0 at
    /// first, and after a vanished session a new one (the session's number), whose
    /// minted client id is `bot + player × clients` after the first.
    fn token(&self, bot: usize, session: u32, player: u32) -> Result<ConnectToken, String> {
        match &self.tokens {
            TokenSource::Mint {
                key,
                first_client_id,
                ttl,
            } => {
                let id = first_client_id
                    .wrapping_add(bot as u64)
                    .wrapping_add(u64::from(player).wrapping_mul(self.config.clients as u64));
                mint_token(key, id, *ttl).map_err(|e| e.key())
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
/// threads of their own, each with its own driver and sockets ([`BotDriver`]), so a
/// datagram is received, decrypted and read on one thread with no cross-thread
/// wake-ups.
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
                    .spawn_scoped(scope, move || match shared.config.driver {
                        BotDriver::Proto => driven::run_shard(shared, bots, start),
                        BotDriver::QuinnEndpoint => quinn_endpoint::run_shard(shared, bots, start),
                    })
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(shared.token(2, 0, 0), Ok(tokens[2]));
        assert_eq!(shared.token(0, 0, 0), Ok(tokens[0]));
        // Reconnects take the spares after the first `clients`, whoever asks.
        assert_eq!(shared.token(1, 1, 1), Ok(tokens[3]));
        assert_eq!(shared.token(0, 4, 0), Ok(tokens[4]));
        assert_eq!(shared.token(2, 1, 0), Err("no_token".to_string()));
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
        let first = shared.token(7, 0, 0).unwrap();
        let again = shared.token(7, 1, 0).unwrap();
        assert_eq!(first.client_id, 107);
        assert_eq!(again.client_id, 107);
        assert_ne!(first.nonce, again.nonce);
        // After a vanished session the bot comes back as a player of its own: the
        // default swarm has 10 clients, so player 2's id is 20 on, and its polite
        // reconnects keep that id.
        assert_eq!(shared.token(7, 2, 2).unwrap().client_id, 127);
        assert_eq!(shared.token(7, 3, 2).unwrap().client_id, 127);
    }

    #[test]
    fn churn_leaves_close_vanish_or_alternate() {
        assert_eq!("close".parse(), Ok(ChurnLeave::Close));
        assert_eq!("alternate".parse(), Ok(ChurnLeave::Alternate));
        assert!("Vanish".parse::<ChurnLeave>().is_err());
        let pattern: Vec<bool> = (0..4).map(|s| ChurnLeave::Alternate.vanishes(s)).collect();
        assert_eq!(pattern, [false, true, false, true]);
        assert!(ChurnLeave::Vanish.vanishes(0) && !ChurnLeave::Close.vanishes(1));
    }
}
