//! tickcast-net: the QUIC layer, on a thread of its own.
//!
//! What it does: owns the QUIC endpoint and every peer, on one thread that drives
//! quinn-proto over a batched UDP socket ([`driver`]; the `quinn-endpoint` feature runs
//! quinn's own endpoint on tokio instead, as the baseline of the A/B); runs the handshake on the
//! control stream (Hello → Welcome/Reject, connect tokens, limits); turns peers' actions
//! into [`PeerEvent`]s on bounded channels; and fans each published tick out to every
//! peer as datagrams, the same bytes to all (a refcount clone per chunk, no copy, no
//! encode), skipping a tick for a peer whose send buffer cannot take all of it.
//!
//! What it never does: touch the simulation's world, encode a snapshot, queue without a
//! bound, or let bytes from a peer panic the thread.
//!
//! Entry point: [`spawn`] binds the socket and starts the thread; the returned
//! [`NetHandle`] publishes ticks ([`TickPublisher`]), drains events, answers joins and
//! shuts it down.

#![forbid(unsafe_code)]

pub mod admission;
pub mod budget;
pub mod congestion;
#[cfg(not(feature = "quinn-endpoint"))]
pub mod driver;
pub mod fanout;
pub mod histogram;
#[cfg(test)]
mod link_model;
mod nonce;
pub mod peer_params;
#[cfg(feature = "quinn-endpoint")]
mod server;
pub mod tls;
mod transport;

// The default build runs the sans-IO driver; `quinn-endpoint` the quinn + tokio baseline.
// Both offer the same `Endpoint::new`/`start`, `TickSlot` and `Controls`.
#[cfg(not(feature = "quinn-endpoint"))]
use driver as backend;
#[cfg(feature = "quinn-endpoint")]
use server as backend;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::Receiver;
use tickcast_shared::chunk::DEFAULT_CHUNK_PAYLOAD;
use tickcast_shared::event::{JoinAck, Membership, PeerEvent};
use tickcast_shared::index::TickIndex;
use tickcast_shared::msg::RejectReason;
use tickcast_shared::schema::Schema;
use tickcast_shared::{Tick, close};

pub use budget::{BudgetSource, MemoryPlan};
pub use fanout::{
    DatagramShape, PeerSendState, SendDecision, decide_tick_for_peer, plan_tick_for_peer,
};
pub use histogram::{HistogramSnapshot, LatencyHistogram};
pub use nonce::{NonceCache, NonceVerdict};

/// Errors starting or running the network layer.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A file or socket operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// TLS setup failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] NetConfigError),
    /// A key or certificate file holds something other than what it must.
    #[error("{0}")]
    BadFile(String),
}

/// A `NetConfig` value the network layer cannot run with: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct NetConfigError {
    /// The `NetConfig` field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// How the network layer runs. Every field has a default that says why it is that value.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Address to listen on. Default `127.0.0.1:4433`: loopback until someone decides to
    /// expose the server.
    pub listen: SocketAddr,
    /// Where the self-signed certificate and the token key live. Default `.tickcast`.
    pub data_dir: PathBuf,
    /// The connect-token key file. Default `None`: `<data_dir>/token.key`, created on
    /// first run.
    pub token_key_file: Option<PathBuf>,
    /// A PEM certificate chain (leaf first) to serve instead of the self-signed one; needs
    /// `key_file`. Default `None`: the self-signed certificate in `data_dir`, which
    /// clients pin by fingerprint.
    pub cert_file: Option<PathBuf>,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert_file`. Default `None`.
    pub key_file: Option<PathBuf>,
    /// Bytes this server may use (design rule 4). Default `None`: the smallest memory
    /// limit on this process's own cgroup and its ancestors (v2 `memory.max` and
    /// `memory.high`, v1 `memory.limit_in_bytes`), else the host's memory — see
    /// [`budget`]. Clients beyond what fits are refused with `over_memory_budget`.
    pub memory_budget: Option<u64>,
    /// Most clients admitted at once. Default 2,000: above the ~1,400 one core can serve
    /// at 30 Hz with stock quinn, so the memory budget, not this, is usually the limit.
    pub max_clients: usize,
    /// A connection that has finished the QUIC handshake but sent no valid Hello this
    /// long after is closed (`admission::HelloDeadline`). Default 10 s, the idle
    /// timeout: after a handshake that lost flight after flight, the client's QUIC
    /// retransmits its Hello on a timer that has doubled each time (at 20 % loss each
    /// way and a 200 ms round trip, 5 s was not enough for 1 player in 50), and a slot
    /// held that long by a silent client costs nothing the handshake limit does not
    /// already bound.
    pub hello_timeout: Duration,
    /// A connection whose QUIC handshake has not finished this long after its first
    /// packet is closed (counted with the Hello timeouts). Default 20 s: on the same
    /// link the 99th percentile of connects that succeeded was near 10 s (QUIC doubles
    /// its wait after each lost flight: 1, 2, 4, 8 s), and with a 10 s bound 1 to 2
    /// players in 50 were still cut off mid-handshake; a handshake that hears nothing for the idle
    /// timeout (10 s) is dropped by quinn sooner, so this bounds only one still making
    /// progress. Stateless Retry keeps a flood of Initials from holding handshakes.
    pub handshake_timeout: Duration,
    /// A silent peer is dropped after this. Default 10 s: long enough for a stalled
    /// client to come back, short enough that a vanished one frees its slot.
    pub idle_timeout: Duration,
    /// Largest chunk the server sends. Default 1,150 bytes (see `tickcast_shared::chunk`).
    pub chunk_payload: usize,
    /// Per-peer datagram send buffer in bytes: quinn's cap on the peer's queue, which must
    /// hold two of the largest ticks a peer can be sent (the fan-out keeps the queue to two
    /// of the peer's own ticks, so the cap is not what bounds its memory). Default 64 KiB;
    /// the server binary sizes it to two ticks of its largest world. quinn's own default
    /// is 1 MiB.
    pub datagram_send_buffer: usize,
    /// How big the sim's tick buffers get with a given number of players: what the memory
    /// budget charges each client for, as the whole tick buffers a stalled client's queue
    /// keeps alive (see [`budget::TickBufferSize`]). Default: the default world's (200
    /// NPCs, 16 × 16 cells, 1,150-byte chunks, the snapshot pool's 5/4 growth); the server
    /// binary derives it from its simulation's config.
    pub tick_buffer: budget::TickBufferSize,
    /// Per-peer buffer for received input datagrams. Default 1 KiB: about 20 inputs; the
    /// sim applies a few per tick, so more would only be older inputs.
    pub datagram_receive_buffer: usize,
    /// Input datagrams accepted per peer per tick; the rest are dropped and counted.
    /// Default 4: a client sends one per tick; 4 absorbs bunching after a stall. The
    /// server sets it to the sim's `max_inputs_per_tick`, the one knob: the net thread
    /// drops early what the sim would not apply anyway.
    pub max_inputs_per_tick: u32,
    /// Capacity of the input channel to the sim. Default 16,384: several ticks of
    /// inputs from a full server; when full, inputs are dropped and counted.
    pub input_channel_capacity: usize,
    /// Tick rate announced in the Welcome. Default 30.
    pub tick_rate: u16,
    /// Arena size announced in the Welcome, in world units. Default 1,000 × 1,000.
    pub arena: (u16, u16),
    /// Cell side announced in the Welcome, in world units. Default 64. The server binary
    /// takes it from the simulation's config.
    pub cell_size: u16,
    /// Interest management: each player is sent the cells within this many cells of its
    /// own (a square of `2 × view_cells + 1` cells a side), plus the tick directory.
    /// [`tickcast_shared::chunk::VIEW_ALL`] sends everyone the whole world. Default 1:
    /// 3 × 3 cells, which keeps a player's share of a tick to about one packet at the
    /// default arena and cell size with ~1,500 entities. Spectators (no entity of their
    /// own) always get the whole world.
    pub view_cells: u16,
    /// The least congestion window of a client's connection, in bytes: while the path
    /// shows no queue, the server's Cubic never shrinks below it, so random loss costs
    /// only the packets lost instead of throttling the stream (`congestion`). Default
    /// 12,000: the initial window, what any new connection sends before it has heard
    /// from the path. 0: stock Cubic.
    pub congestion_window_floor: u64,
    /// Nonces remembered for replay protection. Default 100,000: tokens live minutes,
    /// and more than that many joins within a token's lifetime is not a game server's
    /// load. When full, the oldest is forgotten (counted).
    pub nonce_capacity: usize,
    /// From this many connections in the handshake on, a connection attempt from an
    /// address QUIC has not validated gets a stateless Retry (one more round trip for
    /// that client) instead of a handshake (`admission::needs_address_validation`).
    /// Default 16: a handful of joins at a time never pays the round trip, while a flood
    /// of Initials from spoofed or abandoned addresses holds at most 16 handshakes, half
    /// the 32 the memory budget allows beyond its clients. 0 retries every unvalidated
    /// address; `usize::MAX` never retries.
    pub retry_from_handshakes: usize,
    /// The game's replication schema, sent to every client right after its Welcome
    /// (`docs/PROTOCOL.md` §3) and giving the length of its input commands. Default
    /// `None`, which [`spawn`] refuses: the network layer knows no game; the server fills
    /// it from its simulation (a configuration is validated before that, so
    /// [`NetConfig::validate`] does not ask for it).
    pub schema: Option<Arc<Schema>>,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4433)),
            data_dir: PathBuf::from(".tickcast"),
            token_key_file: None,
            cert_file: None,
            key_file: None,
            memory_budget: None,
            max_clients: 2000,
            hello_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(10),
            chunk_payload: DEFAULT_CHUNK_PAYLOAD,
            datagram_send_buffer: 64 * 1024,
            tick_buffer: budget::TickBufferSize {
                without_players: 10_235,
                per_player: 19,
                least: 11_672,
            },
            datagram_receive_buffer: 1024,
            max_inputs_per_tick: 4,
            input_channel_capacity: 16_384,
            tick_rate: 30,
            arena: (1000, 1000),
            cell_size: 64,
            view_cells: 1,
            nonce_capacity: 100_000,
            congestion_window_floor: congestion::FLOOR_DEFAULT,
            retry_from_handshakes: 16,
            schema: None,
        }
    }
}

impl NetConfig {
    /// Bytes of one input command of the game's schema, what every input datagram is
    /// decoded with. [`spawn`] refuses a configuration without a schema, so the arena's
    /// length stands in only for a config that never serves.
    pub fn input_cmd_len(&self) -> usize {
        self.schema
            .as_deref()
            .map_or(tickcast_shared::msg::INPUT_CMD_LEN, Schema::input_len)
    }

    /// Checks values that would make the server misbehave.
    pub fn validate(&self) -> Result<(), NetError> {
        let bad = |field: &'static str, reason: String| {
            Err(NetError::Config(NetConfigError { field, reason }))
        };
        if self.max_clients == 0 {
            return bad("max_clients", "must be at least 1".into());
        }
        use tickcast_shared::chunk::{MAX_CHUNK_PAYLOAD, MIN_CHUNK_PAYLOAD};
        if !(MIN_CHUNK_PAYLOAD..=MAX_CHUNK_PAYLOAD).contains(&self.chunk_payload) {
            return bad(
                "chunk_payload",
                format!(
                    "{} must be between {MIN_CHUNK_PAYLOAD} and {MAX_CHUNK_PAYLOAD}",
                    self.chunk_payload
                ),
            );
        }
        if self.datagram_send_buffer < self.chunk_payload {
            return bad(
                "datagram_send_buffer",
                "must hold at least one chunk".into(),
            );
        }
        if self.tick_rate == 0 {
            return bad("tick_rate", "must be at least 1".into());
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return bad(
                "cert_file",
                "cert_file and key_file go together: give both or neither".into(),
            );
        }
        if self.memory_budget == Some(0) {
            return bad("memory_budget", "must be more than zero".into());
        }
        Ok(())
    }

    fn token_key_path(&self) -> PathBuf {
        self.token_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(tls::TOKEN_KEY_FILE))
    }
}

/// Counters the status line, the metrics endpoint and tests read: atomics, so a reader on
/// another thread never takes a lock the net thread waits on. All monotonic except
/// `peers`/`handshaking` and the high-water marks.
#[derive(Debug, Default)]
pub struct NetCounters {
    /// Clients admitted and connected now.
    pub peers: AtomicU64,
    /// Connections between accept and Welcome/Reject now.
    pub handshaking: AtomicU64,
    /// Clients admitted (sent a Welcome), counting a reconnect that replaced its own
    /// older connection.
    pub admitted: AtomicU64,
    /// Ticks the fan-out received from the sim.
    pub ticks_fanned_out: AtomicU64,
    /// Ticks overwritten in the handoff before the fan-out took them (net thread behind).
    pub ticks_coalesced: AtomicU64,
    /// (peer, tick) pairs sent in full.
    pub peer_ticks_sent: AtomicU64,
    /// (peer, tick) pairs never sent: the peer's window or send queue had no room and a
    /// newer tick replaced this one in its outbox (`fanout::offer_tick`).
    pub peer_ticks_skipped_backpressure: AtomicU64,
    /// (peer, tick) pairs cut short by a send error (peer gone, datagram too large).
    pub peer_ticks_send_errors: AtomicU64,
    /// Datagrams handed to quinn.
    pub datagrams_sent: AtomicU64,
    /// Payload bytes handed to quinn.
    pub bytes_out: AtomicU64,
    /// Datagrams received from admitted clients (well-formed or not).
    pub datagrams_received: AtomicU64,
    /// Payload bytes of those datagrams.
    pub bytes_in: AtomicU64,
    /// UDP packets and bytes every connection sent and received, as quinn counts them
    /// (QUIC headers, acknowledgements, handshakes and retransmissions included). The
    /// net thread publishes them once a second and when a connection ends, so they lag
    /// by up to a second.
    pub udp: UdpCounters,
    /// Input datagrams accepted and passed to the sim.
    pub inputs_received: AtomicU64,
    /// Input datagrams over a peer's per-tick allowance, dropped.
    pub inputs_dropped_rate: AtomicU64,
    /// Input datagrams dropped because the sim's input channel was full.
    pub inputs_dropped_channel_full: AtomicU64,
    /// Connections closed for malformed bytes.
    pub protocol_errors: AtomicU64,
    /// Connections closed for sending no Hello in time.
    pub hello_timeouts: AtomicU64,
    /// Connections refused before TLS because the server was full.
    pub refused_before_handshake: AtomicU64,
    /// Connections replaced by a newer one with the same client id.
    pub replaced: AtomicU64,
    /// The most bytes any peer's datagram send queue held right after a tick was handed
    /// to it (payload plus quinn's per-datagram bookkeeping, as quinn counts it against
    /// `NetConfig::datagram_send_buffer`). A gauge of the high-water mark, not a count.
    pub peer_send_queue_peak_bytes: AtomicU64,
    /// Fan-out spread: from a tick's publication to the last peer's datagrams handed to
    /// quinn, one sample per tick fanned out. Its sum and count give the mean.
    pub fanout_spread: LatencyHistogram,
    /// The largest spread since the status line last read it (the reader resets it).
    pub fanout_spread_us_max: AtomicU64,
    /// Nonces forgotten because the replay cache was full.
    pub nonces_evicted: AtomicU64,
    /// Nonces remembered now for replay protection (a gauge): it returns to zero once
    /// the tokens seen have expired.
    pub nonces_remembered: AtomicU64,
    /// Connection attempts answered with a stateless Retry (address not validated, many
    /// handshakes in flight).
    pub handshakes_retried: AtomicU64,
    /// The most connections ever in the handshake at once (a gauge of the high-water
    /// mark of `handshaking`).
    pub handshaking_peak: AtomicU64,
    /// Membership events that could not be queued (should stay 0).
    pub membership_events_lost: AtomicU64,
    /// Rejects by reason, indexed by [`RejectReason::code`].
    pub rejects: [AtomicU64; RejectReason::ALL.len()],
    /// Admitted clients' connections that ended, by [`DisconnectReason`] (indexed by
    /// its position in [`DisconnectReason::ALL`]).
    pub disconnects: [AtomicU64; DisconnectReason::ALL.len()],
}

/// UDP traffic of every connection, from quinn's per-connection statistics.
#[derive(Debug, Default)]
pub struct UdpCounters {
    /// UDP packets sent.
    pub packets_sent: AtomicU64,
    /// Bytes of UDP payload sent (QUIC packets).
    pub bytes_sent: AtomicU64,
    /// UDP packets received.
    pub packets_received: AtomicU64,
    /// Bytes of UDP payload received.
    pub bytes_received: AtomicU64,
}

/// Why an admitted client's connection ended: its QUIC application close code
/// (`tickcast_shared::close`) when there was one, else what the transport saw. A small
/// fixed set, so that a metric labelled by it has a fixed number of series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// Closed with `normal` (the client left).
    Normal,
    /// Closed with `server_shutdown`.
    ServerShutdown,
    /// Closed with `drained`: the server finished draining and stopped.
    Drained,
    /// Closed with `protocol_error` (by us for bad bytes, or by the peer).
    ProtocolError,
    /// Closed with `replaced`: the same client id connected again.
    Replaced,
    /// Nothing heard for the idle timeout (no close code).
    IdleTimeout,
    /// The transport failed: reset, a QUIC transport error, an aborted connection.
    ConnectionLost,
    /// An application code tickcast does not define.
    OtherCode,
}

impl DisconnectReason {
    /// Every reason, in the order of [`NetCounters::disconnects`].
    pub const ALL: [DisconnectReason; 8] = [
        DisconnectReason::Normal,
        DisconnectReason::ServerShutdown,
        DisconnectReason::Drained,
        DisconnectReason::ProtocolError,
        DisconnectReason::Replaced,
        DisconnectReason::IdleTimeout,
        DisconnectReason::ConnectionLost,
        DisconnectReason::OtherCode,
    ];

    /// A short name, for metric labels: the close code's name where there is one.
    pub fn name(self) -> &'static str {
        match self {
            DisconnectReason::Normal => close_name(close::NORMAL),
            DisconnectReason::ServerShutdown => close_name(close::SERVER_SHUTDOWN),
            DisconnectReason::Drained => close_name(close::DRAINED),
            DisconnectReason::ProtocolError => close_name(close::PROTOCOL_ERROR),
            DisconnectReason::Replaced => close_name(close::REPLACED),
            DisconnectReason::IdleTimeout => "idle_timeout",
            DisconnectReason::ConnectionLost => "connection_lost",
            DisconnectReason::OtherCode => "other_code",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The reason for a connection that ended with `error`, or `None` when this server
    /// closed it: each local close is counted where it is made, with its code, since
    /// quinn reports every local close alike (`LocallyClosed`).
    pub fn from_connection_error(error: &quinn::ConnectionError) -> Option<Self> {
        use quinn::ConnectionError as E;
        match error {
            E::LocallyClosed => None,
            E::ApplicationClosed(close) => {
                Some(match u32::try_from(close.error_code.into_inner()) {
                    Ok(close::NORMAL) => DisconnectReason::Normal,
                    Ok(close::SERVER_SHUTDOWN) => DisconnectReason::ServerShutdown,
                    Ok(close::DRAINED) => DisconnectReason::Drained,
                    Ok(close::PROTOCOL_ERROR) => DisconnectReason::ProtocolError,
                    Ok(close::REPLACED) => DisconnectReason::Replaced,
                    _ => DisconnectReason::OtherCode,
                })
            }
            E::TimedOut => Some(DisconnectReason::IdleTimeout),
            E::VersionMismatch
            | E::TransportError(_)
            | E::ConnectionClosed(_)
            | E::Reset
            | E::CidsExhausted => Some(DisconnectReason::ConnectionLost),
        }
    }
}

fn close_name(code: u32) -> &'static str {
    close::name(u64::from(code))
}

impl NetCounters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Rejects so far for `reason`.
    pub fn rejects_for(&self, reason: RejectReason) -> u64 {
        self.rejects[usize::from(reason.code())].load(Ordering::Relaxed)
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Disconnects so far for `reason`.
    pub fn disconnects_for(&self, reason: DisconnectReason) -> u64 {
        self.disconnects[reason.index()].load(Ordering::Relaxed)
    }

    /// Counts `n` disconnects for `reason`.
    pub fn count_disconnects(&self, reason: DisconnectReason, n: u64) {
        Self::add(&self.disconnects[reason.index()], n);
    }
}

/// One published tick: its number and its tick buffer (see `tickcast_shared::chunk`).
#[derive(Debug, Clone)]
pub struct PublishedTick {
    /// The tick.
    pub tick: Tick,
    /// The tick buffer: `[u16 length][chunk]` repeated.
    pub buffer: Bytes,
    /// Where the buffer's frames, cells and players are, as the encoder wrote them.
    pub index: Arc<TickIndex>,
    /// When it was published, for the fan-out spread.
    pub published_at: std::time::Instant,
}

/// The sim's end of the latest-wins handoff. Publishing never blocks and never queues:
/// a tick the net thread has not taken yet is replaced by the newer one.
#[derive(Debug, Clone)]
pub struct TickPublisher {
    slot: backend::TickSlot,
    counters: Arc<NetCounters>,
}

impl TickPublisher {
    /// Hands the tick and its index to the net thread, replacing any tick it has not
    /// taken yet.
    pub fn publish(&self, tick: Tick, buffer: Bytes, index: Arc<TickIndex>) {
        // The replaced tick (if the net thread never took it) is dropped here; the net
        // thread counts the gap as coalesced.
        self.slot.publish(PublishedTick {
            tick,
            buffer,
            index,
            published_at: std::time::Instant::now(),
        });
    }

    /// Counters shared with the net thread.
    pub fn counters(&self) -> &Arc<NetCounters> {
        &self.counters
    }
}

/// The running network layer.
pub struct NetHandle {
    local_addr: SocketAddr,
    fingerprint: [u8; 32],
    memory_plan: MemoryPlan,
    counters: Arc<NetCounters>,
    publisher: TickPublisher,
    membership: Receiver<Membership>,
    inputs: Receiver<PeerEvent>,
    controls: backend::Controls,
    draining: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NetHandle {
    /// The address the endpoint is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// SHA-256 of the server certificate, for clients to pin.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// The counters.
    pub fn counters(&self) -> &Arc<NetCounters> {
        &self.counters
    }

    /// How the memory budget was shared out at start.
    pub fn memory_plan(&self) -> MemoryPlan {
        self.memory_plan.clone()
    }

    /// The drain flag: once set, every Hello is refused with `draining`, and the close at
    /// shutdown carries `close::DRAINED` instead of `close::SERVER_SHUTDOWN`. Read at
    /// Hello time with a relaxed load; connected peers are not touched.
    pub fn drain_flag(&self) -> Arc<AtomicBool> {
        self.draining.clone()
    }

    /// The handoff the sim publishes ticks into.
    pub fn publisher(&self) -> TickPublisher {
        self.publisher.clone()
    }

    /// Calls `f` for every pending event: joins and leaves first, then inputs. Bounded by
    /// the channels' capacities, so a flood cannot hold the caller for long.
    pub fn drain_events(&self, mut f: impl FnMut(PeerEvent)) {
        for event in self.membership.try_iter() {
            f(event.into());
        }
        for event in self
            .inputs
            .try_iter()
            .take(self.inputs.capacity().unwrap_or(0))
        {
            f(event);
        }
    }

    /// Tells the net thread which entity a joined client got. The channel is sized to the
    /// client limit; when full the ack is lost and that client's join times out.
    pub fn acknowledge_join(&self, ack: JoinAck) {
        if !self.controls.acknowledge_join(ack) {
            NetCounters::add(&self.counters.membership_events_lost, 1);
        }
    }

    /// Closes every connection with the shutdown code and stops the thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.controls.shutdown();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the net thread panicked");
        }
    }
}

impl Drop for NetHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Socket buffer size asked of the kernel for each direction. A tick reaches the socket
/// as a burst (every chunk for every peer within a millisecond or two), and the default
/// ~200 KiB overflows at a few dozen peers; Linux caps the request at
/// `net.core.rmem_max`/`wmem_max`.
pub const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Binds a UDP socket with [`SOCKET_BUFFER_BYTES`] buffers, for servers and clients.
pub fn bind_udp(addr: SocketAddr) -> Result<std::net::UdpSocket, NetError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let io = |what: String| move |source| NetError::Io { what, source };
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(io(format!("creating a UDP socket for {addr}")))?;
    // Best effort: a smaller buffer than asked is not an error, only less headroom.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket
        .bind(&addr.into())
        .map_err(io(format!("binding UDP {addr}")))?;
    Ok(socket.into())
}

/// What the net thread is started with, whichever driver runs it.
pub(crate) struct NetParts {
    pub(crate) config: NetConfig,
    pub(crate) memory_plan: MemoryPlan,
    pub(crate) token_key: tickcast_shared::token::TokenKey,
    pub(crate) counters: Arc<NetCounters>,
    pub(crate) membership: crossbeam_channel::Sender<Membership>,
    pub(crate) inputs: crossbeam_channel::Sender<PeerEvent>,
    pub(crate) draining: Arc<AtomicBool>,
}

/// Binds the UDP socket, loads or creates the TLS identity and token key, and starts the
/// net thread. Fails early, with the reason, if the address is taken.
pub fn spawn(config: NetConfig) -> Result<NetHandle, NetError> {
    config.validate()?;
    if config.schema.is_none() {
        return Err(NetError::Config(NetConfigError {
            field: "schema",
            reason: "the game's replication schema is required: clients read it after the \
                     Welcome"
                .into(),
        }));
    }
    let identity = match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => tls::load_pem_identity(cert, key)?,
        _ => tls::load_or_create_identity(&config.data_dir)?,
    };
    let fingerprint = identity.fingerprint();
    let token_key = tls::load_or_create_token_key(&config.token_key_path())?;
    let socket = bind_udp(config.listen)?;
    let local_addr = socket.local_addr().map_err(|source| NetError::Io {
        what: "reading the bound address".into(),
        source,
    })?;
    let server_config = transport::quinn_server_config(&config, identity)?;

    let counters = Arc::new(NetCounters::default());
    // Each connection contributes at most one Joined and one Left in flight; four per
    // client leaves room for replacements.
    let membership_capacity = config.max_clients.saturating_mul(4).max(64);
    let (membership_tx, membership_rx) = crossbeam_channel::bounded(membership_capacity);
    let (inputs_tx, inputs_rx) = crossbeam_channel::bounded(config.input_channel_capacity);
    let draining = Arc::new(AtomicBool::new(false));
    let endpoint = backend::Endpoint::new(socket, server_config)?;
    // Measured last, with the world, the pools, the channels and the endpoint allocated:
    // what the server costs before its first client.
    let memory_plan = MemoryPlan::new(
        budget::detect_budget(config.memory_budget),
        budget::resident_set_bytes(),
        config.tick_buffer,
        config.datagram_send_buffer as u64,
        config.datagram_receive_buffer as u64,
        config.max_clients,
    );
    tracing::info!(
        budget_bytes = memory_plan.budget_bytes(),
        budget_source = memory_plan.source().map(BudgetSource::kind),
        baseline_rss_bytes = memory_plan.baseline_rss,
        per_client_bytes = memory_plan.per_client(),
        clients = memory_plan.clients,
        "{memory_plan}"
    );
    if memory_plan.clients == 0 {
        tracing::warn!(
            "the memory budget leaves no room for a single client: every client will be \
             refused with over_memory_budget"
        );
    } else if memory_plan.clients < config.max_clients {
        tracing::info!(
            "the memory budget, not max_clients ({}), limits admission to {} clients",
            config.max_clients,
            memory_plan.clients
        );
    }
    let parts = NetParts {
        config,
        memory_plan: memory_plan.clone(),
        token_key,
        counters: counters.clone(),
        membership: membership_tx,
        inputs: inputs_tx,
        draining: draining.clone(),
    };
    let (thread, slot, controls) = endpoint.start(parts, membership_capacity)?;
    tracing::info!(%local_addr, "listening (QUIC)");
    Ok(NetHandle {
        local_addr,
        fingerprint,
        memory_plan,
        counters: counters.clone(),
        publisher: TickPublisher { slot, counters },
        membership: membership_rx,
        inputs: inputs_rx,
        controls,
        draining,
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed_by_peer(code: u32) -> quinn::ConnectionError {
        quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: quinn::VarInt::from_u32(code),
            reason: Bytes::new(),
        })
    }

    #[test]
    fn a_peers_close_code_names_its_disconnect_and_a_local_close_is_left_to_its_site() {
        let reason = |e: quinn::ConnectionError| DisconnectReason::from_connection_error(&e);
        assert_eq!(
            reason(closed_by_peer(close::NORMAL)),
            Some(DisconnectReason::Normal)
        );
        assert_eq!(
            reason(closed_by_peer(close::PROTOCOL_ERROR)),
            Some(DisconnectReason::ProtocolError)
        );
        assert_eq!(
            reason(closed_by_peer(0x99)),
            Some(DisconnectReason::OtherCode)
        );
        assert_eq!(
            reason(quinn::ConnectionError::TimedOut),
            Some(DisconnectReason::IdleTimeout)
        );
        assert_eq!(
            reason(quinn::ConnectionError::Reset),
            Some(DisconnectReason::ConnectionLost)
        );
        assert_eq!(reason(quinn::ConnectionError::LocallyClosed), None);
    }

    #[test]
    fn disconnect_names_are_the_close_codes_names_and_each_reason_has_its_slot() {
        let names: Vec<&str> = DisconnectReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(
            names,
            [
                "normal",
                "server_shutdown",
                "drained",
                "protocol_error",
                "replaced",
                "idle_timeout",
                "connection_lost",
                "other_code"
            ]
        );
        let counters = NetCounters::default();
        for (i, reason) in DisconnectReason::ALL.into_iter().enumerate() {
            counters.count_disconnects(reason, i as u64 + 1);
        }
        for (i, reason) in DisconnectReason::ALL.into_iter().enumerate() {
            assert_eq!(counters.disconnects_for(reason), i as u64 + 1);
        }
    }
}
