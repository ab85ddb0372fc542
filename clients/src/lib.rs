//! tickcast-clients: the native client library, and the `tickcast-bots` load generator
//! built on it.
//!
//! What it does: opens a QUIC connection that pins the server's certificate, performs
//! the Hello → Welcome handshake ([`connect`]), receives snapshot chunks, puts them back
//! together per tick and measures delivery and latency ([`track`]), and sends inputs
//! with redundancy ([`InputHistory`]).
//!
//! What it never does: trust bytes from the server — a malformed chunk is counted and
//! dropped, never a panic.
//!
//! Entry points: [`client_endpoint`], [`connect`], [`Session`].

#![forbid(unsafe_code)]

pub mod track;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use quinn::{Connection, RecvStream, SendStream, VarInt};
use tickcast_net::tls;
use tickcast_shared::msg::{
    Hello, InputCmd, InputDatagram, MAX_INPUTS_PER_DATAGRAM, RejectReason, ServerMessage, Welcome,
};
use tickcast_shared::token::{ConnectToken, TokenKey};
use tickcast_shared::wire::{self, FRAME_PREFIX_LEN, MAX_MESSAGE_LEN};
use tickcast_shared::{PROTOCOL_VERSION, close};

/// Why a client could not connect or lost its connection.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Local setup failed (socket, TLS config).
    #[error("client setup: {0}")]
    Setup(String),
    /// The QUIC connection could not be made or was lost.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// The server refused us.
    #[error("rejected ({}): {detail}", reason.map_or("unknown reason", RejectReason::name))]
    Rejected {
        /// The reason, if this version knows its code.
        reason: Option<RejectReason>,
        /// The server's words.
        detail: String,
    },
    /// The server sent something that is not the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No answer in time.
    #[error("timed out waiting for the server")]
    Timeout,
}

impl ClientError {
    /// A short key for counting errors by kind in reports (e.g. `rejected:server_full`).
    pub fn key(&self) -> String {
        match self {
            ClientError::Setup(_) => "setup".into(),
            ClientError::Connection(e) => connection_error_key(e),
            ClientError::Rejected { reason, .. } => {
                format!("rejected:{}", reason.map_or("unknown", RejectReason::name))
            }
            ClientError::Protocol(_) => "protocol_error".into(),
            ClientError::Timeout => "timeout".into(),
        }
    }
}

/// A short key for a connection error, naming tickcast close codes.
pub fn connection_error_key(error: &quinn::ConnectionError) -> String {
    match error {
        quinn::ConnectionError::ApplicationClosed(closed) => {
            format!("closed:{}", close::name(closed.error_code.into_inner()))
        }
        quinn::ConnectionError::TimedOut => "timed_out".into(),
        quinn::ConnectionError::ConnectionClosed(closed) => {
            format!("transport_closed:{}", closed.error_code)
        }
        quinn::ConnectionError::LocallyClosed => "locally_closed".into(),
        quinn::ConnectionError::Reset => "reset".into(),
        other => format!("connection:{other}"),
    }
}

/// Client transport settings. The receive buffer holds a few ticks of datagrams, so a
/// busy task that reads late loses nothing; the keep-alive keeps an idle-looking client
/// (one that sends no input) from timing out.
fn client_transport() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport
        .datagram_receive_buffer_size(Some(1 << 20))
        .keep_alive_interval(Some(Duration::from_secs(2)))
        .max_idle_timeout(Some(quinn::IdleTimeout::from(VarInt::from_u32(10_000))));
    transport
}

/// A client endpoint on an ephemeral local port (call it inside a tokio runtime), trusting only the certificate with
/// `fingerprint`. One endpoint can carry many connections.
pub fn client_endpoint(
    server: SocketAddr,
    fingerprint: [u8; 32],
) -> Result<quinn::Endpoint, ClientError> {
    let bind: SocketAddr = match (server.is_ipv6(), server.ip().is_loopback()) {
        (false, true) => (std::net::Ipv4Addr::LOCALHOST, 0).into(),
        (false, false) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        (true, true) => (std::net::Ipv6Addr::LOCALHOST, 0).into(),
        (true, false) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let crypto =
        tls::client_crypto_pinned(fingerprint).map_err(|e| ClientError::Setup(e.to_string()))?;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
        .map_err(|e| ClientError::Setup(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(client_transport()));
    let socket = tickcast_net::bind_udp(bind).map_err(|e| ClientError::Setup(e.to_string()))?;
    let mut endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| ClientError::Setup(e.to_string()))?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// An admitted client: the connection and what the server said in its Welcome.
pub struct Session {
    conn: Connection,
    welcome: Welcome,
    // Held so the control stream stays open for the life of the session.
    _control: (SendStream, RecvStream),
}

impl Session {
    /// The Welcome.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// The QUIC connection (for stats such as RTT).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The next datagram from the server (a snapshot chunk in protocol version 1).
    pub async fn next_datagram(&self) -> Result<Bytes, quinn::ConnectionError> {
        self.conn.read_datagram().await
    }

    /// Sends an input datagram.
    pub fn send_input(&self, datagram: &InputDatagram) -> Result<(), quinn::SendDatagramError> {
        self.conn
            .send_datagram(Bytes::copy_from_slice(&datagram.encode()))
    }

    /// Leaves with the normal close code.
    pub fn close(&self) {
        self.conn.close(VarInt::from_u32(close::NORMAL), b"bye");
    }
}

/// Connects, sends the Hello and waits for the Welcome, all within `deadline`.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    server: SocketAddr,
    token: ConnectToken,
    deadline: Duration,
) -> Result<Session, ClientError> {
    tokio::time::timeout(deadline, handshake(endpoint, server, token))
        .await
        .map_err(|_| ClientError::Timeout)?
}

async fn handshake(
    endpoint: &quinn::Endpoint,
    server: SocketAddr,
    token: ConnectToken,
) -> Result<Session, ClientError> {
    let connecting = endpoint
        .connect(server, "localhost")
        .map_err(|e| ClientError::Setup(e.to_string()))?;
    let conn = connecting.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        token,
    };
    let mut frame = [0u8; FRAME_PREFIX_LEN + MAX_MESSAGE_LEN];
    let len =
        wire::encode_frame(&hello, &mut frame).map_err(|e| ClientError::Protocol(e.to_string()))?;
    send.write_all(&frame[..len])
        .await
        .map_err(|e| ClientError::Protocol(format!("sending the Hello: {e}")))?;

    let mut prefix = [0u8; FRAME_PREFIX_LEN];
    if let Err(e) = recv.read_exact(&mut prefix).await {
        return Err(match conn.close_reason() {
            Some(reason) => ClientError::Connection(reason),
            None => ClientError::Protocol(format!("reading the server's answer: {e}")),
        });
    }
    let body_len = wire::frame_len(prefix).map_err(|e| ClientError::Protocol(e.to_string()))?;
    let mut body = [0u8; MAX_MESSAGE_LEN];
    recv.read_exact(&mut body[..body_len])
        .await
        .map_err(|e| ClientError::Protocol(format!("reading the server's answer: {e}")))?;
    match wire::decode_exact::<ServerMessage>(&body[..body_len]) {
        Ok(ServerMessage::Welcome(welcome)) => Ok(Session {
            conn,
            welcome,
            _control: (send, recv),
        }),
        Ok(ServerMessage::Reject(reject)) => {
            conn.close(VarInt::from_u32(close::NORMAL), b"rejected");
            Err(ClientError::Rejected {
                reason: reject.reason(),
                detail: reject.detail,
            })
        }
        Err(e) => {
            conn.close(
                VarInt::from_u32(close::PROTOCOL_ERROR),
                b"bad server message",
            );
            Err(ClientError::Protocol(e.to_string()))
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The wall clock in microseconds since the Unix epoch, modulo 2^32: the same clock the
/// server stamps chunk headers with.
pub fn now_us_wrapping() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u32)
        .unwrap_or(0)
}

/// Mints a development token valid for `ttl` with a random nonce.
pub fn mint_token(
    key: &TokenKey,
    client_id: u64,
    ttl: Duration,
) -> Result<ConnectToken, ClientError> {
    let mut nonce = [0u8; 16];
    tls::fill_random(&mut nonce).map_err(|e| ClientError::Setup(e.to_string()))?;
    Ok(key.mint(client_id, unix_now_s() + ttl.as_secs().max(1), nonce, 0))
}

/// The last few inputs, so each datagram carries them all and one lost datagram costs
/// nothing when the next arrives.
#[derive(Debug, Clone, Default)]
pub struct InputHistory {
    recent: [InputCmd; MAX_INPUTS_PER_DATAGRAM],
    len: usize,
    next_seq: u32,
}

impl InputHistory {
    /// Records a new input (its sequence number is assigned here) and returns the
    /// datagram to send, acknowledging `ack_tick`.
    pub fn push(&mut self, mut cmd: InputCmd, ack_tick: u32) -> InputDatagram {
        cmd.seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.recent.rotate_right(1);
        self.recent[0] = cmd;
        self.len = (self.len + 1).min(MAX_INPUTS_PER_DATAGRAM);
        let mut cmds = [InputCmd::default(); MAX_INPUTS_PER_DATAGRAM];
        cmds[..self.len].copy_from_slice(&self.recent[..self.len]);
        InputDatagram {
            ack_tick,
            count: self.len as u8,
            cmds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_history_sends_the_newest_first_with_redundancy() {
        let mut history = InputHistory::default();
        let cmd = |move_x| InputCmd {
            move_x,
            ..Default::default()
        };
        let first = history.push(cmd(1), 0);
        assert_eq!(first.inputs().len(), 1);
        for x in 2..=6 {
            history.push(cmd(x), 0);
        }
        let last = history.push(cmd(7), 42);
        let seqs: Vec<u32> = last.inputs().iter().map(|c| c.seq).collect();
        assert_eq!(seqs, vec![6, 5, 4, 3]);
        assert_eq!(last.inputs()[0].move_x, 7);
        assert_eq!(last.ack_tick, 42);
    }
}
