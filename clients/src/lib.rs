//! tickcast-clients: the native client library, and the `tickcast-bots` load generator
//! built on it.
//!
//! What it does: opens a QUIC connection that pins the server's certificate, performs
//! the Hello → Welcome handshake ([`connect`]), receives snapshot chunks, puts them back
//! together per tick and measures delivery, chunk loss, latency and snapshot age
//! ([`track::SnapshotReceiver`]), keeps a local view of the world ([`world::WorldView`]),
//! reads RTT and byte counts from QUIC ([`Session::rtt`], [`Session::stats`]), and sends
//! inputs with redundancy ([`InputHistory`]). [`swarm`] runs thousands of such clients
//! with a mix of behaviours and [`report`] judges what they saw.
//!
//! What it never does: trust bytes from the server — a malformed chunk is counted and
//! dropped, never a panic, and every per-client structure has a fixed bound.
//!
//! Entry points: [`client_endpoint`], [`connect`], [`Session`], [`swarm::run_swarm`].

#![forbid(unsafe_code)]

pub mod cli;
pub mod pace;
pub mod report;
pub mod swarm;
pub mod track;
pub mod world;

/// The QUIC stack this library is built on, for callers that name its types
/// ([`client_endpoint`] returns a `quinn::Endpoint`) or drive a connection by hand.
pub use quinn;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use quinn::{Connection, RecvStream, SendStream, VarInt};
use tickcast_net::tls;
use tickcast_shared::msg::{
    Hello, InputCmd, InputDatagram, MAX_INPUTS_PER_DATAGRAM, RejectReason, ServerMessage, Welcome,
};
use tickcast_shared::token::{ConnectToken, TOKEN_LEN, TokenKey};
use tickcast_shared::wire::{self, FRAME_PREFIX_LEN, MAX_MESSAGE_LEN};
use tickcast_shared::{PROTOCOL_VERSION, Tick, close, hex, unix_time};

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

/// Settings of a client endpoint that callers may change.
#[derive(Debug, Clone)]
pub struct EndpointOptions {
    /// Bytes of received datagrams quinn holds for each connection until the client
    /// reads them; when full it drops the oldest. Default 1 MiB: about a minute of a
    /// 200-NPC world, so a busy task that reads late loses nothing. A process with
    /// thousands of clients wants less (see `tickcast-bots`).
    pub datagram_receive_buffer: usize,
}

impl Default for EndpointOptions {
    fn default() -> Self {
        Self {
            datagram_receive_buffer: 1 << 20,
        }
    }
}

/// Client transport settings. The keep-alive keeps an idle-looking client (one that
/// sends no input) from timing out.
fn client_transport(options: &EndpointOptions) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport
        .datagram_receive_buffer_size(Some(options.datagram_receive_buffer))
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
    client_endpoint_with(server, fingerprint, &EndpointOptions::default())
}

/// [`client_endpoint`] with non-default [`EndpointOptions`].
pub fn client_endpoint_with(
    server: SocketAddr,
    fingerprint: [u8; 32],
    options: &EndpointOptions,
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
    config.transport_config(Arc::new(client_transport(options)));
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

    /// The current round-trip time estimate of the QUIC connection.
    pub fn rtt(&self) -> Duration {
        self.conn.rtt()
    }

    /// QUIC's counters for this connection (UDP bytes and datagrams each way, lost
    /// packets, congestion window).
    pub fn stats(&self) -> quinn::ConnectionStats {
        self.conn.stats()
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
    unix_time::seconds(SystemTime::now())
}

/// The wall clock in microseconds since the Unix epoch, modulo 2^32: the same clock the
/// server stamps chunk headers with.
pub fn now_us_wrapping() -> u32 {
    unix_time::micros_wrapping(SystemTime::now())
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

/// Why a token file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFileError {
    /// A line that is not one token in hex.
    #[error("line {line}: {problem}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        problem: String,
    },
    /// No token in the file.
    #[error("no token in the file (one hex token per line, as tickcast-token prints)")]
    Empty,
}

/// Parses a token file: one token per line in hex (the 69-byte encoding, 138 hex
/// digits, as `tickcast-token` prints it). Blank lines and lines starting with `#` are
/// skipped; anything else that is not exactly one token is an error naming its line.
pub fn parse_token_file(text: &str) -> Result<Vec<ConnectToken>, TokenFileError> {
    let mut tokens = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |problem: String| TokenFileError::BadLine {
            line: index + 1,
            problem,
        };
        let bytes: [u8; TOKEN_LEN] = hex::decode_array(line).map_err(|e| bad(e.to_string()))?;
        let token = ConnectToken::from_bytes(&bytes).map_err(|e| bad(e.to_string()))?;
        tokens.push(token);
    }
    if tokens.is_empty() {
        return Err(TokenFileError::Empty);
    }
    Ok(tokens)
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
    pub fn push(&mut self, mut cmd: InputCmd, ack_tick: Tick) -> InputDatagram {
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
        let first = history.push(cmd(1), Tick::ZERO);
        assert_eq!(first.inputs().len(), 1);
        for x in 2..=6 {
            history.push(cmd(x), Tick::ZERO);
        }
        let last = history.push(cmd(7), Tick::new(42));
        let seqs: Vec<u32> = last.inputs().iter().map(|c| c.seq).collect();
        assert_eq!(seqs, vec![6, 5, 4, 3]);
        assert_eq!(last.inputs()[0].move_x, 7);
        assert_eq!(last.ack_tick, Tick::new(42));
    }

    #[test]
    fn a_token_file_reads_one_token_per_line_as_tickcast_token_prints_them() {
        let key = TokenKey::from_bytes(&[7; 32]);
        let a = key.mint(1, 2_000_000_000, [1; 16], 0);
        let b = key.mint(2, 2_000_000_000, [2; 16], 3);
        let text = format!(
            "# minted for the load test\n{}\n\n  {}  \r\n",
            hex::encode(&a.to_bytes()),
            hex::encode(&b.to_bytes()).to_uppercase()
        );
        let tokens = parse_token_file(&text).unwrap();
        assert_eq!(tokens, vec![a, b]);
        assert!(key.verify(&tokens[1], 1_000).is_ok());
    }

    #[test]
    fn a_bad_token_file_names_the_line() {
        let key = TokenKey::from_bytes(&[7; 32]);
        let good = hex::encode(&key.mint(1, 2_000_000_000, [1; 16], 0).to_bytes());
        let short = format!("{good}\n{}\n", &good[..136]);
        assert_eq!(
            parse_token_file(&short),
            Err(TokenFileError::BadLine {
                line: 2,
                problem: "expected 138 hex digits, found 136 characters".into()
            })
        );
        let mut not_hex = good.clone();
        not_hex.replace_range(10..11, "g");
        assert_eq!(
            parse_token_file(&not_hex).unwrap_err().to_string(),
            "line 1: not a hex digit at column 11"
        );
        assert_eq!(
            parse_token_file("\n# nothing\n"),
            Err(TokenFileError::Empty)
        );
    }
}
