//! What both network drivers share: the QUIC server and transport configuration (one
//! `TransportConfig` for either, with the congestion controller from [`crate::congestion`]),
//! the timing constants of the control stream, the UDP tally, and how a peer's datagram
//! is cut from the tick buffer. The default driver ([`crate::driver`]) and the
//! `quinn-endpoint` baseline (`server.rs`) read them from here so they cannot drift apart.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use quinn::VarInt;
#[cfg(feature = "per-client-encode")]
use tickcast_shared::chunk::TICK_FRAME_PREFIX_LEN;
use tickcast_shared::unix_time;

use crate::congestion::FlooredCubic;
use crate::peer_params::AdvertisedLimits;
use crate::{NetConfig, NetError, tls};

/// How long a joining client waits for the sim to spawn its entity. A healthy sim answers
/// within a tick; this only bounds a stuck one.
pub(crate) const JOIN_ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the server lingers after a Reject so the client can read it before the close.
pub(crate) const REJECT_LINGER: Duration = Duration::from_millis(500);

/// How long shutdown waits for peers to acknowledge the close.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// How often the net thread publishes the connections' UDP totals (`NetCounters::udp`).
pub(crate) const UDP_STATS_INTERVAL: Duration = Duration::from_secs(1);

/// How often expired nonces are forgotten. A token is refused from its expiry second
/// on, so forgetting its nonce up to a second late changes nothing but the gauge.
pub(crate) const NONCE_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// What quinn charges a peer's datagram send buffer per queued datagram on top of its
/// payload: the `Bytes` handle it keeps (`quinn_proto::Datagram` wraps exactly one).
pub(crate) const DATAGRAM_QUEUE_ENTRY_BYTES: usize = std::mem::size_of::<Bytes>();

/// quinn's path MTU search stops once the next step is smaller than this; from 1,200,
/// with its ceiling 1,452 (252 above), a step of 250 probes the ceiling at once and
/// stops (after it, or at 1,200 if it is lost).
const MTU_PROBE_STEP: u16 = 250;

/// The server's QUIC configuration, the same for both drivers: TLS (wrapped so that
/// admission reads what each client advertised) and one transport config.
pub(crate) fn quinn_server_config(
    config: &NetConfig,
    identity: tls::Identity,
) -> Result<quinn::ServerConfig, NetError> {
    let crypto = tls::server_crypto(identity)?;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)
        .map_err(|e| NetError::Tls(e.to_string()))?;
    // Wrapped so admission can read what each client advertised (`peer_params`).
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(AdvertisedLimits::new(quic)));
    let idle = quinn::IdleTimeout::try_from(config.idle_timeout).map_err(|_| {
        NetError::Config(crate::NetConfigError {
            field: "idle_timeout",
            reason: "is too large for QUIC".into(),
        })
    })?;
    let mut transport = quinn::TransportConfig::default();
    transport
        // One control stream, nothing else: a peer cannot make us hold stream state.
        .max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        // The control stream carries one Hello; flow control bounds what a peer can push.
        .stream_receive_window(VarInt::from_u32(4096))
        .receive_window(VarInt::from_u32(8192))
        .datagram_receive_buffer_size(Some(config.datagram_receive_buffer))
        .datagram_send_buffer_size(config.datagram_send_buffer)
        .max_idle_timeout(Some(idle))
        // Path MTU discovery in one probe, straight to quinn's 1,452-byte ceiling, not its
        // binary search (1,326, 1,389, 1,420, 1,452: four probes a connection). quinn sends
        // the probes whenever it has nothing else to send, outside the congestion window:
        // eight players connecting behind a 256 kbit/s link put 44.7 KB of them on it,
        // 1.4 s of the link (the link model's capped row: queue peak 831 ms with four
        // probes, 736 ms with one). Without discovery (1,200-byte packets) quinn packs
        // fewer of a tick's datagrams into a packet, and the 20 %-loss socket test lost
        // more ticks (2 runs in 11 over its bars, against none in 9).
        .mtu_discovery_config(Some({
            let mut mtud = quinn::MtuDiscoveryConfig::default();
            mtud.minimum_change(MTU_PROBE_STEP);
            mtud
        }))
        // Loss costs only the loss: Cubic, its window never below the initial window
        // (`congestion`).
        .congestion_controller_factory(Arc::new(FlooredCubic::new(config.congestion_window_floor)));
    server.transport_config(Arc::new(transport));
    Ok(server)
}

/// UDP packets and bytes each way, from quinn's connection statistics.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct UdpTally {
    pub(crate) packets_sent: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) packets_received: u64,
    pub(crate) bytes_received: u64,
}

impl UdpTally {
    pub(crate) fn add(&mut self, stats: &quinn::ConnectionStats) {
        self.packets_sent += stats.udp_tx.datagrams;
        self.bytes_sent += stats.udp_tx.bytes;
        self.packets_received += stats.udp_rx.datagrams;
        self.bytes_received += stats.udp_rx.bytes;
    }

    /// Publishes the totals into `NetCounters::udp`; `fetch_max`, so that a connection
    /// between the live set and the ended tally for a moment cannot make them go back.
    pub(crate) fn publish(&self, udp: &crate::UdpCounters) {
        use std::sync::atomic::Ordering::Relaxed;
        udp.packets_sent.fetch_max(self.packets_sent, Relaxed);
        udp.bytes_sent.fetch_max(self.bytes_sent, Relaxed);
        udp.packets_received
            .fetch_max(self.packets_received, Relaxed);
        udp.bytes_received.fetch_max(self.bytes_received, Relaxed);
    }
}

/// One datagram of the tick for one peer: a refcounted slice of the shared buffer.
#[cfg(not(feature = "per-client-encode"))]
pub(crate) fn datagram_for_peer(tick: &Bytes, range: Range<usize>) -> Bytes {
    tick.slice(range)
}

/// The per-client mode of the A/B benchmark (`docs/PERFORMANCE.md`), never a shipped
/// build: every peer's datagram is serialized anew into a fresh allocation, the way a
/// server that builds a message per client per tick works. Chunks are decoded and
/// re-encoded record by record; the directory is copied.
#[cfg(feature = "per-client-encode")]
pub(crate) fn datagram_for_peer(tick: &Bytes, range: Range<usize>) -> Bytes {
    use tickcast_shared::chunk::{
        CHUNK_HEADER_LEN, ENTITY_RECORD_LEN, parse_chunk, tick_frames, write_header, write_record,
    };
    let bytes = &tick[range];
    let mut out = vec![0u8; bytes.len()];
    for frame in tick_frames(bytes) {
        let prefix = frame.start - TICK_FRAME_PREFIX_LEN;
        out[prefix..frame.start].copy_from_slice(&bytes[prefix..frame.start]);
        let message = &bytes[frame.clone()];
        let Ok(chunk) = parse_chunk(message) else {
            out[frame].copy_from_slice(message);
            continue;
        };
        let (head, body) = out[frame].split_at_mut(CHUNK_HEADER_LEN);
        if let Ok(head) = head.try_into() {
            write_header(&chunk.header, head);
        }
        for (record, slot) in chunk
            .records()
            .zip(body.chunks_exact_mut(ENTITY_RECORD_LEN))
        {
            if let Ok(slot) = slot.try_into() {
                write_record(&record, slot);
            }
        }
    }
    Bytes::from(out)
}

/// Now, in Unix seconds: what tokens and nonces are checked against.
pub(crate) fn unix_now_s() -> u64 {
    unix_time::seconds(SystemTime::now())
}
