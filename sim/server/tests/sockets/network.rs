//! The network's defences, end to end: a real server on 127.0.0.1 (port 0), real QUIC
//! clients, and raw quinn where a test needs to send what no well-behaved client would.
//!
//! Every wait is bounded by a tokio timeout, so a server that fails to act makes a test
//! fail rather than hang; nothing asserts how long anything took.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tickcast_clients::quinn::{self, ConnectionError, VarInt};
use tickcast_clients::track::{TickAssembler, View};
use tickcast_clients::{ClientError, Session, client_endpoint, connect, mint_token, unix_now_s};
use tickcast_net::tls::{TOKEN_KEY_FILE, load_token_key};
use tickcast_net::{NetConfig, NetCounters};
use tickcast_server::{Server, ServerConfig};
use tickcast_shared::chunk::{VIEW_ALL, datagram_messages};
use tickcast_shared::close;
use tickcast_shared::msg::{Hello, RejectReason, ServerMessage};
use tickcast_shared::token::{ConnectToken, TokenKey};
use tickcast_shared::wire::{self, FRAME_PREFIX_LEN, MAX_MESSAGE_LEN};
use tickcast_shared::{PROTOCOL_VERSION, Tick};
use tickcast_sim::SimConfig;

/// The longest any single wait in these tests may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// A server in its own data directory, removed when the test ends.
struct TestServer {
    server: Option<Server>,
    data_dir: PathBuf,
    key: TokenKey,
}

impl TestServer {
    fn start(name: &str, net: NetConfig) -> Self {
        let data_dir =
            std::env::temp_dir().join(format!("tickcast-net-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        let server = Server::start(ServerConfig {
            net: NetConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                data_dir: data_dir.clone(),
                ..net
            },
            sim: SimConfig {
                npcs: 20,
                ..SimConfig::default()
            },
            record: None,
            ..ServerConfig::default()
        })
        .expect("server starts");
        let key = load_token_key(&data_dir.join(TOKEN_KEY_FILE)).unwrap();
        Self {
            server: Some(server),
            data_dir,
            key,
        }
    }

    fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    fn counters(&self) -> &NetCounters {
        self.server().net_counters()
    }

    fn endpoint(&self) -> quinn::Endpoint {
        client_endpoint(self.server().local_addr(), self.server().fingerprint()).unwrap()
    }

    fn token(&self, client_id: u64) -> ConnectToken {
        mint_token(&self.key, client_id, Duration::from_secs(60)).unwrap()
    }

    async fn join(&self, endpoint: &quinn::Endpoint, client_id: u64) -> Session {
        self.connect(endpoint, self.token(client_id))
            .await
            .expect("admitted")
    }

    async fn connect(
        &self,
        endpoint: &quinn::Endpoint,
        token: ConnectToken,
    ) -> Result<Session, ClientError> {
        connect(endpoint, self.server().local_addr(), token, PATIENCE).await
    }

    /// A QUIC connection with the TLS handshake done and nothing else.
    async fn raw_connection(&self, endpoint: &quinn::Endpoint) -> quinn::Connection {
        endpoint
            .connect(self.server().local_addr(), "localhost")
            .unwrap()
            .await
            .expect("QUIC handshake")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// The application close code the server closed `conn` with.
async fn close_code(conn: &quinn::Connection) -> u64 {
    match within("the server closing the connection", conn.closed()).await {
        ConnectionError::ApplicationClosed(closed) => closed.error_code.into_inner(),
        other => panic!("expected an application close, got {other}"),
    }
}

/// Sends a Hello frame with any version and reads the server's answer, as a client in
/// another language would.
async fn raw_hello(
    conn: &quinn::Connection,
    protocol_version: u16,
    token: ConnectToken,
) -> (quinn::SendStream, quinn::RecvStream, ServerMessage) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut frame = [0u8; FRAME_PREFIX_LEN + MAX_MESSAGE_LEN];
    let hello = Hello {
        protocol_version,
        token,
    };
    let len = wire::encode_frame(&hello, &mut frame).unwrap();
    send.write_all(&frame[..len]).await.unwrap();
    let mut prefix = [0u8; FRAME_PREFIX_LEN];
    within("the server's answer", recv.read_exact(&mut prefix))
        .await
        .unwrap();
    let mut body = vec![0u8; wire::frame_len(prefix).unwrap()];
    recv.read_exact(&mut body).await.unwrap();
    (send, recv, wire::decode_exact(&body).unwrap())
}

/// Asserts `result` is a Reject for `reason` and that the server counted exactly one.
fn assert_rejected(test: &TestServer, result: Result<Session, ClientError>, reason: RejectReason) {
    match result {
        Err(ClientError::Rejected {
            reason: Some(got), ..
        }) => assert_eq!(got, reason),
        Err(other) => panic!("expected a {} Reject, got {other}", reason.name()),
        Ok(_) => panic!("expected a {} Reject, got a Welcome", reason.name()),
    }
    assert_eq!(test.counters().rejects_for(reason), 1, "{}", reason.name());
}

/// Waits until `observer` receives a chunk of a tick after `after`: the server is still
/// ticking and still sending to the clients that behave.
async fn assert_still_served(observer: &Session, after: Tick) {
    within("a newer tick for a well-behaved client", async {
        loop {
            let bytes = observer
                .next_datagram()
                .await
                .expect("the well-behaved client stays connected");
            if first_tick(&bytes).is_after(after.plus(5)) {
                break;
            }
        }
    })
    .await;
}

/// The tick of a server datagram's first message.
fn first_tick(bytes: &[u8]) -> Tick {
    datagram_messages(bytes).next().unwrap().unwrap().tick()
}

/// The newest tick `session` has a chunk of now (reads until one arrives).
async fn newest_tick(session: &Session) -> Tick {
    let bytes = within("a chunk", session.next_datagram()).await.unwrap();
    first_tick(&bytes)
}

#[test]
fn a_token_signed_with_another_key_is_rejected_as_bad_token() {
    let test = TestServer::start("bad-mac", NetConfig::default());
    runtime().block_on(async {
        let endpoint = test.endpoint();
        let forged = TokenKey::from_bytes(&[7; 32]);
        let token = mint_token(&forged, 1, Duration::from_secs(60)).unwrap();
        assert_rejected(
            &test,
            test.connect(&endpoint, token).await,
            RejectReason::BadToken,
        );
        // A token of the right key whose MAC was tampered with, likewise.
        let mut tampered = test.token(2);
        tampered.client_id = 3;
        assert!(matches!(
            test.connect(&endpoint, tampered).await,
            Err(ClientError::Rejected {
                reason: Some(RejectReason::BadToken),
                ..
            })
        ));
        assert_eq!(test.counters().rejects_for(RejectReason::BadToken), 2);
    });
}

#[test]
fn an_expired_token_is_rejected_as_token_expired() {
    let test = TestServer::start("expired", NetConfig::default());
    runtime().block_on(async {
        let endpoint = test.endpoint();
        let token = test.key.mint(1, unix_now_s() - 1, [9; 16], 0);
        assert_rejected(
            &test,
            test.connect(&endpoint, token).await,
            RejectReason::TokenExpired,
        );
    });
}

#[test]
fn a_token_used_twice_is_rejected_as_token_replayed() {
    let test = TestServer::start("replayed", NetConfig::default());
    runtime().block_on(async {
        let endpoint = test.endpoint();
        let token = test.token(1);
        let first = test.connect(&endpoint, token).await.expect("first use");
        assert_rejected(
            &test,
            test.connect(&endpoint, token).await,
            RejectReason::TokenReplayed,
        );
        // The replay did not take over the first connection.
        assert!(first.connection().close_reason().is_none());
        assert_eq!(NetCounters::get(&test.counters().replaced), 0);
    });
}

#[test]
fn a_hello_of_another_protocol_version_is_rejected_and_closed_with_its_reject_code() {
    let test = TestServer::start("version", NetConfig::default());
    runtime().block_on(async {
        let endpoint = test.endpoint();
        let conn = test.raw_connection(&endpoint).await;
        let (_send, _recv, answer) = raw_hello(&conn, PROTOCOL_VERSION + 1, test.token(1)).await;
        let ServerMessage::Reject(reject) = answer else {
            panic!("expected a Reject, got {answer:?}");
        };
        assert_eq!(reject.reason(), Some(RejectReason::BadVersion));
        assert_eq!(
            close_code(&conn).await,
            u64::from(close::for_reject(RejectReason::BadVersion))
        );
        assert_eq!(test.counters().rejects_for(RejectReason::BadVersion), 1);
    });
}

#[test]
fn a_connection_without_a_hello_is_closed_with_hello_timeout() {
    let test = TestServer::start(
        "hello-timeout",
        NetConfig {
            hello_timeout: Duration::from_secs(1),
            ..NetConfig::default()
        },
    );
    runtime().block_on(async {
        let endpoint = test.endpoint();
        // One opens no stream at all; one opens the control stream and sends half a Hello.
        let silent = test.raw_connection(&endpoint).await;
        let halfway = test.raw_connection(&endpoint).await;
        let (mut send, _recv) = halfway.open_bi().await.unwrap();
        let mut frame = [0u8; FRAME_PREFIX_LEN + MAX_MESSAGE_LEN];
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            token: test.token(1),
        };
        let len = wire::encode_frame(&hello, &mut frame).unwrap();
        send.write_all(&frame[..len / 2]).await.unwrap();

        let hello_timeout = u64::from(close::HELLO_TIMEOUT);
        assert_eq!(close_code(&silent).await, hello_timeout);
        assert_eq!(close_code(&halfway).await, hello_timeout);
        assert_eq!(NetCounters::get(&test.counters().hello_timeouts), 2);
        assert_eq!(NetCounters::get(&test.counters().handshaking), 0);
    });
}

#[test]
fn a_control_frame_longer_than_1024_bytes_closes_with_protocol_error() {
    let test = TestServer::start("long-frame", NetConfig::default());
    runtime().block_on(async {
        let endpoint = test.endpoint();
        let observer = test.join(&endpoint, 1).await;
        let conn = test.raw_connection(&endpoint).await;
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        let too_long = u16::try_from(MAX_MESSAGE_LEN + 1).unwrap();
        send.write_all(&too_long.to_le_bytes()).await.unwrap();
        assert_eq!(close_code(&conn).await, u64::from(close::PROTOCOL_ERROR));
        assert_eq!(NetCounters::get(&test.counters().protocol_errors), 1);
        assert_still_served(&observer, newest_tick(&observer).await).await;
    });
}

#[test]
fn bytes_on_the_control_stream_after_the_welcome_close_with_protocol_error() {
    let test = TestServer::start("after-hello", NetConfig::default());
    runtime().block_on(async {
        let endpoint = test.endpoint();
        let observer = test.join(&endpoint, 1).await;
        let conn = test.raw_connection(&endpoint).await;
        let (mut send, _recv, answer) = raw_hello(&conn, PROTOCOL_VERSION, test.token(2)).await;
        assert!(
            matches!(answer, ServerMessage::Welcome(_)),
            "welcomed first: {answer:?}"
        );
        send.write_all(b"one more thing").await.unwrap();
        assert_eq!(close_code(&conn).await, u64::from(close::PROTOCOL_ERROR));
        assert_eq!(NetCounters::get(&test.counters().protocol_errors), 1);
        assert_still_served(&observer, newest_tick(&observer).await).await;
    });
}

#[test]
fn a_malformed_input_datagram_closes_its_sender_with_protocol_error() {
    let test = TestServer::start("bad-datagram", NetConfig::default());
    runtime().block_on(async {
        let endpoint = test.endpoint();
        let observer = test.join(&endpoint, 1).await;
        let sender = test.join(&endpoint, 2).await;
        sender
            .connection()
            .send_datagram(vec![0x02, 0xff, 0xff].into())
            .unwrap();
        assert_eq!(
            close_code(sender.connection()).await,
            u64::from(close::PROTOCOL_ERROR)
        );
        assert_eq!(NetCounters::get(&test.counters().protocol_errors), 1);
        assert_still_served(&observer, newest_tick(&observer).await).await;
    });
}

#[test]
fn a_third_client_is_refused_when_max_clients_is_two() {
    let test = TestServer::start(
        "full",
        NetConfig {
            max_clients: 2,
            ..NetConfig::default()
        },
    );
    runtime().block_on(async {
        let endpoint = test.endpoint();
        let _first = test.join(&endpoint, 1).await;
        let _second = test.join(&endpoint, 2).await;
        match test.connect(&endpoint, test.token(3)).await {
            // Refused before TLS: connected plus handshaking clients are at the limit.
            Err(ClientError::Connection(ConnectionError::ConnectionClosed(closed))) => {
                assert_eq!(
                    closed.error_code,
                    quinn::TransportErrorCode::CONNECTION_REFUSED
                );
            }
            Err(ClientError::Rejected {
                reason: Some(RejectReason::ServerFull),
                ..
            }) => {}
            Err(other) => panic!("expected a refusal, got {other}"),
            Ok(_) => panic!("a third client was welcomed with max_clients = 2"),
        }
        assert!(test.counters().rejects_for(RejectReason::ServerFull) >= 1);
        assert_eq!(NetCounters::get(&test.counters().peers), 2);
    });
}

/// How long the stalled client goes without reading.
const STALL: Duration = Duration::from_secs(10);
/// When the frozen client stops processing packets, and for how long. Well under the
/// 10 s idle timeout, so it stays connected.
const FREEZE_AFTER: Duration = Duration::from_secs(2);
const FREEZE: Duration = Duration::from_secs(5);

/// Three clients read every chunk for [`STALL`] while:
/// * one client's application never reads a datagram for all of it. Its QUIC stack keeps
///   running and acknowledging, so to the server it is a healthy peer: the server sends
///   it every tick and forgets each datagram once it is in a packet; what piles up is in
///   the client's own receive buffer, which the client bounds (1 MiB, drop oldest);
/// * one client's whole process freezes for [`FREEZE`] (its endpoint driver is blocked,
///   so nothing is acknowledged): the server's congestion window fills, the peer's
///   datagram send queue fills up to its configured buffer and stays there, and every
///   further tick is skipped for that peer instead of queued.
#[test]
fn a_stalled_client_holds_at_most_its_send_buffer_and_the_others_keep_every_tick() {
    let test = TestServer::start(
        "stall",
        NetConfig {
            // Small, so the per-peer send buffer (two ticks of the largest world this
            // server admits) is a handful of this world's ticks.
            max_clients: 8,
            // Every peer is sent the whole world, so the frozen peer's congestion window
            // holds a few ticks rather than dozens of small views.
            view_cells: VIEW_ALL,
            ..NetConfig::default()
        },
    );
    let send_buffer = test.server().memory_plan().datagram_send_buffer;
    let live_tick = Arc::new(AtomicU32::new(0));

    // The frozen client runs on a runtime of its own, so blocking that runtime's thread
    // stops its endpoint (no reads, no acknowledgements) and nothing else.
    let frozen = {
        let addr = test.server().local_addr();
        let fingerprint = test.server().fingerprint();
        let token = test.token(100);
        let live_tick = live_tick.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let endpoint = client_endpoint(addr, fingerprint).unwrap();
                let session = connect(&endpoint, addr, token, PATIENCE).await.unwrap();
                let read_for = |duration: Duration| {
                    let session = &session;
                    async move {
                        let mut ticks = Vec::new();
                        let end = tokio::time::Instant::now() + duration;
                        while let Ok(datagram) =
                            tokio::time::timeout_at(end, session.next_datagram()).await
                        {
                            let bytes = datagram.expect("the frozen client stays connected");
                            ticks.push(first_tick(&bytes));
                        }
                        ticks
                    }
                };
                read_for(FREEZE_AFTER).await;
                let frozen_at = Tick::new(live_tick.load(Ordering::Relaxed));
                // Deliberately blocking: the whole client stops, like a suspended process.
                std::thread::sleep(FREEZE);
                let resumed_at = Tick::new(live_tick.load(Ordering::Relaxed));
                let after = read_for(STALL - FREEZE_AFTER - FREEZE).await;
                let connected = session.connection().close_reason().is_none();
                session.close();
                (frozen_at, resumed_at, after, connected)
            })
        })
    };

    let runtime = runtime();
    let (readers, stalled_delivery, stalled_connected) = runtime.block_on(async {
        let endpoint = test.endpoint();
        let stalled = test.join(&endpoint, 99).await;
        let mut readers = Vec::new();
        for client_id in 1..=3 {
            let session = test.join(&endpoint, client_id).await;
            let live_tick = live_tick.clone();
            readers.push(tokio::spawn(async move {
                let mut assembler = TickAssembler::new(
                    View::from_welcome(session.welcome()),
                    session.schema().clone(),
                    false,
                );
                let end = tokio::time::Instant::now() + STALL;
                while let Ok(datagram) = tokio::time::timeout_at(end, session.next_datagram()).await
                {
                    let bytes = datagram.expect("readers stay connected");
                    for message in datagram_messages(&bytes) {
                        let message = message.unwrap();
                        // A plain maximum: the server starts at tick 0 and runs seconds.
                        live_tick.fetch_max(message.tick().get(), Ordering::Relaxed);
                        assembler.on_message(&message);
                    }
                }
                session.close();
                assembler.finish(2)
            }));
        }
        let mut deliveries = Vec::new();
        for reader in readers {
            deliveries.push(reader.await.unwrap());
        }

        // The stalled client, still connected, finally reads what its own buffer kept,
        // up to where the readers stopped (the server is still sending it new ticks).
        let stalled_connected = stalled.connection().close_reason().is_none();
        let readers_stopped_at = Tick::new(live_tick.load(Ordering::Relaxed));
        let mut assembler = TickAssembler::new(
            View::from_welcome(stalled.welcome()),
            stalled.schema().clone(),
            false,
        );
        within("the stalled client reading its backlog", async {
            loop {
                let bytes = stalled.next_datagram().await.expect("still connected");
                if first_tick(&bytes).is_after(readers_stopped_at) {
                    break;
                }
                for message in datagram_messages(&bytes) {
                    assembler.on_message(&message.unwrap());
                }
            }
        })
        .await;
        stalled.close();
        (deliveries, assembler.finish(2), stalled_connected)
    });
    let (frozen_at, resumed_at, frozen_after, frozen_connected) = frozen.join().unwrap();

    // A stalled peer must not stop the broadcast for everyone: the readers' delivery
    // below shows every tick was still published. (A frozen peer pins the pool buffers
    // its queued slices point into — at most about two of its ticks — and when every
    // buffer is pinned the pool detaches one rather than skip a tick.)
    let detached = test.server().status().sim.snapshot_buffers_detached;

    for (i, delivery) in readers.iter().enumerate() {
        assert!(
            delivery.ratio() >= 0.99,
            "reader {i} got {} of {} ticks: {delivery:?}",
            delivery.complete,
            delivery.expected()
        );
        assert!(delivery.expected() >= 150, "reader {i}: {delivery:?}");
    }

    assert!(
        stalled_connected,
        "a client that stops reading stays connected"
    );
    assert!(
        stalled_delivery.ratio() >= 0.99 && stalled_delivery.expected() >= 150,
        "the server sent the stalled-but-acknowledging client every tick: {stalled_delivery:?}"
    );

    let counters = test.counters();
    let skipped = NetCounters::get(&counters.peer_ticks_skipped_backpressure);
    let sent = NetCounters::get(&counters.peer_ticks_sent);
    let errors = NetCounters::get(&counters.peer_ticks_send_errors);
    let fanned_out = NetCounters::get(&counters.ticks_fanned_out);
    let queue_peak = NetCounters::get(&counters.peer_send_queue_peak_bytes);
    let frozen_ticks = resumed_at.wrapping_since(frozen_at);
    assert!(frozen_connected, "the frozen client survives a 5 s freeze");
    assert!(
        frozen_ticks >= 60,
        "the freeze spanned {frozen_ticks} ticks"
    );
    // The frozen peer was skipped for most of its freeze instead of queueing...
    assert!(
        skipped >= u64::from(frozen_ticks) / 3,
        "{skipped} ticks skipped over a {frozen_ticks}-tick freeze"
    );
    // ...and its queue never held more than the configured buffer, while it did fill up.
    assert!(
        queue_peak > 0 && queue_peak <= send_buffer,
        "peak queued {queue_peak} bytes, send buffer {send_buffer}"
    );
    // Every (peer, tick) decision is one of sent, skipped, cut short; five peers at most.
    assert!(sent + skipped + errors <= 5 * fanned_out);
    assert!(sent >= 4 * 150, "sent {sent}");

    // When it wakes, the frozen client gets what was in flight and what its queue held
    // (the oldest ticks of the freeze), then live ticks: never the whole freeze's backlog.
    let stale: std::collections::BTreeSet<u32> = frozen_after
        .iter()
        .filter(|tick| tick.is_before(resumed_at))
        .map(|tick| tick.get())
        .collect();
    eprintln!(
        "stall: frozen {frozen_ticks} ticks, {skipped} skipped, {} stale after, queue peak \
         {queue_peak} of {send_buffer} bytes; sent {sent}, fanned out {fanned_out}; readers \
         {:?}; stalled {}; pool buffers detached {detached}",
        stale.len(),
        readers.iter().map(|d| d.ratio()).collect::<Vec<_>>(),
        stalled_delivery.ratio()
    );
    assert!(
        stale.len() <= frozen_ticks as usize / 2,
        "after a {frozen_ticks}-tick freeze it received {} stale ticks: {stale:?}",
        stale.len()
    );
    assert!(
        frozen_after
            .iter()
            .any(|tick| tick.is_after(resumed_at.plus(5))),
        "live ticks again after the freeze"
    );
}

#[test]
fn a_closed_connection_frees_its_place() {
    let test = TestServer::start(
        "frees",
        NetConfig {
            max_clients: 1,
            ..NetConfig::default()
        },
    );
    runtime().block_on(async {
        let endpoint = test.endpoint();
        let first = test.join(&endpoint, 1).await;
        first.close();
        within("the server noticing the close", async {
            while NetCounters::get(&test.counters().peers) != 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let second = test.join(&endpoint, 2).await;
        assert_eq!(second.welcome().client_id, 2);
        second
            .connection()
            .close(VarInt::from_u32(close::NORMAL), b"done");
    });
}
