//! Joining a server: a client endpoint that pins the server's certificate, the Hello →
//! Welcome handshake, and the admitted [`Session`] with its datagrams, RTT and byte
//! counts. The only module of this crate that touches a socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::{Connection, RecvStream, SendStream, VarInt};
use tickcast_net::tls;
use tickcast_shared::msg::{Hello, InputDatagram, RejectReason, ServerMessage, Welcome};
use tickcast_shared::schema::Schema;
use tickcast_shared::token::{ConnectToken, TokenKey};
use tickcast_shared::wire::{self, FRAME_PREFIX_LEN, MAX_MESSAGE_LEN};
use tickcast_shared::{PROTOCOL_VERSION, close};

use crate::unix_now_s;

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
    /// Length of the connection IDs this endpoint issues, 0 to 20: the server puts one
    /// in every packet it sends, so longer IDs leave less room for a datagram in a
    /// packet (`docs/PROTOCOL.md` §1). Default 8, quinn's.
    pub connection_id_len: usize,
}

impl Default for EndpointOptions {
    fn default() -> Self {
        Self {
            datagram_receive_buffer: 1 << 20,
            connection_id_len: 8,
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
    let config = client_config(fingerprint, options)?;
    let socket = client_socket(server)?;
    let cid_len = options.connection_id_len;
    if cid_len > 20 {
        return Err(ClientError::Setup(format!(
            "connection IDs are at most 20 bytes, not {cid_len}"
        )));
    }
    let mut endpoint_config = quinn::EndpointConfig::default();
    endpoint_config
        .cid_generator(move || Box::new(quinn_proto::RandomConnectionIdGenerator::new(cid_len)));
    let mut endpoint =
        quinn::Endpoint::new(endpoint_config, None, socket, Arc::new(quinn::TokioRuntime))
            .map_err(|e| ClientError::Setup(e.to_string()))?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// The QUIC client configuration: the pinned certificate and [`client_transport`].
pub(crate) fn client_config(
    fingerprint: [u8; 32],
    options: &EndpointOptions,
) -> Result<quinn::ClientConfig, ClientError> {
    let crypto =
        tls::client_crypto_pinned(fingerprint).map_err(|e| ClientError::Setup(e.to_string()))?;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
        .map_err(|e| ClientError::Setup(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(client_transport(options)));
    Ok(config)
}

/// A UDP socket on an ephemeral port that can reach `server`: loopback for a loopback
/// server, the unspecified address otherwise.
pub(crate) fn client_socket(server: SocketAddr) -> Result<std::net::UdpSocket, ClientError> {
    let bind: SocketAddr = match (server.is_ipv6(), server.ip().is_loopback()) {
        (false, true) => (std::net::Ipv4Addr::LOCALHOST, 0).into(),
        (false, false) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        (true, true) => (std::net::Ipv6Addr::LOCALHOST, 0).into(),
        (true, false) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    tickcast_net::bind_udp(bind).map_err(|e| ClientError::Setup(e.to_string()))
}

/// An admitted client: the connection and what the server said in its Welcome.
pub struct Session {
    conn: Connection,
    welcome: Welcome,
    schema: Arc<Schema>,
    // Held so the control stream stays open for the life of the session.
    _control: (SendStream, RecvStream),
}

impl Session {
    /// The Welcome.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// The game's schema, sent right after the Welcome: how to read its records and
    /// build its inputs.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
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

    /// The next datagram from the server: one or more tick directories and snapshot
    /// chunks of one tick, each behind its length (`docs/PROTOCOL.md` §6); read it with
    /// [`crate::track::SnapshotReceiver::on_datagram`].
    pub async fn next_datagram(&self) -> Result<Bytes, quinn::ConnectionError> {
        self.conn.read_datagram().await
    }

    /// Sends an input datagram.
    pub fn send_input(&self, datagram: &InputDatagram) -> Result<(), quinn::SendDatagramError> {
        let (bytes, len) = datagram.encode();
        self.conn
            .send_datagram(Bytes::copy_from_slice(&bytes[..len]))
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

    let mut body = [0u8; MAX_MESSAGE_LEN];
    let body_len = match read_frame(&mut recv, &mut body).await {
        Ok(len) => len,
        Err(e) => {
            return Err(match conn.close_reason() {
                Some(reason) => ClientError::Connection(reason),
                None => ClientError::Protocol(format!("reading the server's answer: {e}")),
            });
        }
    };
    let bad = |conn: &Connection, error: String| {
        conn.close(
            VarInt::from_u32(close::PROTOCOL_ERROR),
            b"bad server message",
        );
        Err(ClientError::Protocol(error))
    };
    let welcome = match wire::decode_exact::<ServerMessage>(&body[..body_len]) {
        Ok(ServerMessage::Welcome(welcome)) => welcome,
        Ok(ServerMessage::Reject(reject)) => {
            conn.close(VarInt::from_u32(close::NORMAL), b"rejected");
            return Err(ClientError::Rejected {
                reason: reject.reason(),
                detail: reject.detail,
            });
        }
        Err(e) => return bad(&conn, e.to_string()),
    };
    if welcome.protocol_version != PROTOCOL_VERSION {
        return bad(
            &conn,
            format!(
                "the server speaks protocol {}, this client {PROTOCOL_VERSION}",
                welcome.protocol_version
            ),
        );
    }
    // Right after the Welcome: the game's schema (docs/PROTOCOL.md §3).
    let schema = match read_frame(&mut recv, &mut body).await {
        Ok(len) => Schema::decode(&body[..len]).map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match schema {
        Ok(schema) => Ok(Session {
            conn,
            welcome,
            schema: Arc::new(schema),
            _control: (send, recv),
        }),
        Err(e) => bad(&conn, format!("the game's schema after the Welcome: {e}")),
    }
}

/// Reads one control-stream frame into `body`; returns its length.
async fn read_frame(
    recv: &mut RecvStream,
    body: &mut [u8; MAX_MESSAGE_LEN],
) -> Result<usize, String> {
    let mut prefix = [0u8; FRAME_PREFIX_LEN];
    recv.read_exact(&mut prefix)
        .await
        .map_err(|e| e.to_string())?;
    let len = wire::frame_len(prefix).map_err(|e| e.to_string())?;
    recv.read_exact(&mut body[..len])
        .await
        .map_err(|e| e.to_string())?;
    Ok(len)
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
