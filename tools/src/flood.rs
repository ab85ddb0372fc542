//! A handshake flood, for drills against a server of your own on the loopback interface:
//!
//! * [`send_initials`]: QUIC Initial packets from many source ports, each the first
//!   packet of a connection that will never go on. They are crafted with quinn-proto as
//!   a client (a real Initial: padded, encrypted, a ClientHello inside), sent once, and
//!   forgotten: nothing reads the answers. To the server each is a new client whose
//!   address may or may not be real.
//! * [`half_open`]: connections that complete the QUIC handshake from a real address
//!   and then never send a Hello, held open until the server closes them or the hold
//!   ends.
//!
//! Both are bounded in count and time and stop by themselves; both refuse any address
//! that is not loopback.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tickcast_net::tls;

/// Why a flood could not run.
#[derive(Debug, thiserror::Error)]
pub enum FloodError {
    /// The target is not on the loopback interface.
    #[error("{0} is not a loopback address: floods are for servers on this machine")]
    NotLoopback(SocketAddr),
    /// Setting up sockets or TLS failed.
    #[error("{0}")]
    Setup(String),
}

/// What [`send_initials`] sends.
#[derive(Debug, Clone)]
pub struct InitialFlood {
    /// The server.
    pub server: SocketAddr,
    /// Initial packets in all.
    pub initials: usize,
    /// Initials per second, at most.
    pub rate_per_s: u32,
    /// Local UDP sockets (source ports) the Initials are spread over, round robin.
    pub source_ports: usize,
}

/// What [`send_initials`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InitialsSent {
    /// Initials handed to the kernel.
    pub sent: usize,
    /// Sends that failed (a full socket buffer, say).
    pub send_errors: usize,
}

fn loopback_only(server: SocketAddr) -> Result<(), FloodError> {
    if server.ip().is_loopback() {
        Ok(())
    } else {
        Err(FloodError::NotLoopback(server))
    }
}

/// A quinn-proto client configuration: any will do, since the flood never reads the
/// server's answer (the certificate is never checked).
fn proto_client_config() -> Result<quinn_proto::ClientConfig, FloodError> {
    let crypto =
        tls::client_crypto_pinned([0; 32]).map_err(|e| FloodError::Setup(e.to_string()))?;
    let quic = quinn_proto::crypto::rustls::QuicClientConfig::try_from(crypto)
        .map_err(|e| FloodError::Setup(e.to_string()))?;
    Ok(quinn_proto::ClientConfig::new(Arc::new(quic)))
}

/// Sends `flood.initials` Initials at `flood.rate_per_s`, spread over
/// `flood.source_ports` sockets, and returns when the last one is sent. Blocks.
pub fn send_initials(flood: &InitialFlood) -> Result<InitialsSent, FloodError> {
    loopback_only(flood.server)?;
    let config = proto_client_config()?;
    let bind: SocketAddr = if flood.server.is_ipv6() {
        "[::1]:0"
            .parse()
            .map_err(|_| FloodError::Setup("::1".into()))?
    } else {
        "127.0.0.1:0"
            .parse()
            .map_err(|_| FloodError::Setup("127.0.0.1".into()))?
    };
    let sockets = (0..flood.source_ports.max(1))
        .map(|_| UdpSocket::bind(bind))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| FloodError::Setup(format!("binding a source port: {e}")))?;
    // Batches every 10 ms keep the rate even without a timer per packet.
    let batch_period = Duration::from_millis(10);
    let per_batch = (flood.rate_per_s as usize / 100).max(1);
    let start = Instant::now();
    let mut report = InitialsSent::default();
    let mut buf = Vec::with_capacity(1500);
    let mut batch = 0u32;
    while report.sent + report.send_errors < flood.initials {
        // A fresh endpoint per batch: its connection table would otherwise grow by one
        // entry per Initial, for connections that are never driven again.
        let mut endpoint = quinn_proto::Endpoint::new(
            Arc::new(quinn_proto::EndpointConfig::default()),
            None,
            false,
            None,
        );
        let now = Instant::now();
        let left = flood.initials - report.sent - report.send_errors;
        for _ in 0..per_batch.min(left) {
            let (_, mut connection) = endpoint
                .connect(now, config.clone(), flood.server, "localhost")
                .map_err(|e| FloodError::Setup(format!("crafting an Initial: {e}")))?;
            buf.clear();
            let Some(transmit) = connection.poll_transmit(now, 1, &mut buf) else {
                report.send_errors += 1;
                continue;
            };
            let socket = &sockets[(report.sent + report.send_errors) % sockets.len()];
            match socket.send_to(&buf[..transmit.size], transmit.destination) {
                Ok(_) => report.sent += 1,
                Err(_) => report.send_errors += 1,
            }
            // The connection is dropped here, never driven again: a half-open handshake.
        }
        batch += 1;
        if let Some(wait) = (start + batch_period * batch).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok(report)
}

/// How the half-open connections of [`half_open`] ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HalfOpenReport {
    /// Connections whose QUIC handshake completed.
    pub established: usize,
    /// Connections that did not get that far (refused, timed out), by reason.
    pub failed: Vec<String>,
    /// Established connections the server closed before the hold ended, by reason.
    pub closed_by_server: Vec<String>,
    /// Established connections still open when the hold ended (closed by us then).
    pub held_to_the_end: usize,
}

/// Opens `count` connections to `server` that complete the QUIC handshake (pinning
/// `fingerprint`) and never send a Hello; holds each until the server closes it or
/// `hold` has passed since the start. Call inside a tokio runtime.
pub async fn half_open(
    server: SocketAddr,
    fingerprint: [u8; 32],
    count: usize,
    hold: Duration,
) -> Result<HalfOpenReport, FloodError> {
    loopback_only(server)?;
    let crypto =
        tls::client_crypto_pinned(fingerprint).map_err(|e| FloodError::Setup(e.to_string()))?;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
        .map_err(|e| FloodError::Setup(e.to_string()))?;
    let bind = if server.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let bind: SocketAddr = bind.parse().map_err(|_| FloodError::Setup(bind.into()))?;
    let mut endpoint =
        quinn::Endpoint::client(bind).map_err(|e| FloodError::Setup(e.to_string()))?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let until = tokio::time::Instant::now() + hold;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..count {
        let connecting = endpoint
            .connect(server, "localhost")
            .map_err(|e| FloodError::Setup(e.to_string()))?;
        tasks.spawn(async move {
            let connection = match tokio::time::timeout_at(until, connecting).await {
                Ok(Ok(connection)) => connection,
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("handshake timed out".to_string()),
            };
            match tokio::time::timeout_at(until, connection.closed()).await {
                Ok(reason) => Ok(Some(reason.to_string())),
                Err(_) => {
                    connection.close(0u32.into(), b"hold over");
                    Ok(None)
                }
            }
        });
    }
    let mut report = HalfOpenReport::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(Some(reason))) => {
                report.established += 1;
                report.closed_by_server.push(reason);
            }
            Ok(Ok(None)) => {
                report.established += 1;
                report.held_to_the_end += 1;
            }
            Ok(Err(reason)) => report.failed.push(reason),
            Err(e) => report.failed.push(format!("task: {e}")),
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_refuses_an_address_off_this_machine() {
        let flood = InitialFlood {
            server: "192.0.2.1:4433".parse().unwrap(),
            initials: 1,
            rate_per_s: 1,
            source_ports: 1,
        };
        assert!(matches!(
            send_initials(&flood),
            Err(FloodError::NotLoopback(_))
        ));
    }

    #[test]
    fn initials_go_out_at_their_count_from_their_ports() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let flood = InitialFlood {
            server: server.local_addr().unwrap(),
            initials: 12,
            rate_per_s: 10_000,
            source_ports: 4,
        };
        let sent = send_initials(&flood).unwrap();
        assert_eq!(
            sent,
            InitialsSent {
                sent: 12,
                send_errors: 0
            }
        );
        let mut ports = std::collections::BTreeSet::new();
        let mut buf = [0u8; 2048];
        for _ in 0..12 {
            let (len, from) = server.recv_from(&mut buf).unwrap();
            // A client Initial: a long header, type Initial, padded to at least 1,200.
            assert!(len >= 1200, "{len}");
            assert_eq!(buf[0] & 0b1111_0000, 0b1100_0000);
            ports.insert(from.port());
        }
        assert_eq!(ports.len(), 4);
    }
}
