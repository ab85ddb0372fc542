//! The drain: in process (a stop request) and as the real binary (SIGTERM), with real
//! clients and the fake Agones sidecar. Order of events is asserted, never a duration.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tickcast_clients::quinn::{ConnectionError, Endpoint};
use tickcast_clients::{ClientError, Session, client_endpoint, connect, mint_token};
use tickcast_net::tls::{TOKEN_KEY_FILE, fingerprint_from_data_dir, load_token_key};
use tickcast_server::agones::AgonesConfig;
use tickcast_server::drain::{DrainEnd, StopCause};
use tickcast_server::{Server, StopReport};
use tickcast_shared::close;
use tickcast_shared::msg::RejectReason;
use tickcast_shared::token::TokenKey;
use tickcast_sim::record::decode_recording;
use tickcast_sim::replay;

use crate::agones::{fake_sidecar, wait_until};
use crate::common::{temp_data_dir, test_config};
use crate::recording::address_logged_after;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The application close code once `session`'s connection is closed, and when that was
/// seen.
async fn closed_with(session: &Session) -> (u64, Instant) {
    let error = loop {
        if let Err(e) = session.next_datagram().await {
            break e;
        }
    };
    let seen = Instant::now();
    match error {
        ConnectionError::ApplicationClosed(closed) => (closed.error_code.into_inner(), seen),
        other => panic!("closed without an application code: {other}"),
    }
}

/// Connects client `client_id` with a fresh token.
async fn hello(
    endpoint: &Endpoint,
    addr: std::net::SocketAddr,
    key: &TokenKey,
    client_id: u64,
) -> Result<Session, ClientError> {
    let token = mint_token(key, client_id, Duration::from_secs(60)).unwrap();
    connect(endpoint, addr, token, Duration::from_secs(5)).await
}

/// Connects new clients until one is refused with `draining` (a Hello that races the
/// signal may still get in; it is closed again); returns when that Reject came.
async fn hello_until_draining(
    endpoint: &Endpoint,
    addr: std::net::SocketAddr,
    key: &TokenKey,
) -> Instant {
    for client_id in 1000..1100u64 {
        match hello(endpoint, addr, key, client_id).await {
            Ok(session) => {
                session.close();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(ClientError::Rejected {
                reason: Some(RejectReason::Draining),
                ..
            }) => return Instant::now(),
            Err(e) => panic!("a Hello during the drain failed otherwise: {e}"),
        }
    }
    panic!("no Hello was refused with `draining`");
}

#[test]
fn a_drain_refuses_hellos_then_closes_players_with_drained_then_tells_agones() {
    let fake = fake_sidecar();
    let data_dir = temp_data_dir("drain-in-process");
    let mut config = test_config(&data_dir);
    config.drain.grace = Duration::from_secs(1);
    config.agones = Some(AgonesConfig {
        sidecar: fake.addr(),
        ..AgonesConfig::default()
    });
    let server = Server::start(config).expect("server starts");
    let key = load_token_key(&data_dir.join(TOKEN_KEY_FILE)).unwrap();
    let (addr, fingerprint) = (server.local_addr(), server.fingerprint());
    let drain_flag = server.drain_flag();
    let stop_request = server.stop_request().clone();
    wait_until("the server is Ready", || {
        fake.calls().iter().any(|c| c.route() == "POST /ready")
    });

    let runtime = runtime();
    let endpoint = runtime.block_on(async { client_endpoint(addr, fingerprint).unwrap() });
    let player = runtime
        .block_on(hello(&endpoint, addr, &key, 1))
        .expect("admitted");
    let serving = std::thread::spawn(move || server.run_until_stopped());

    assert!(!drain_flag.load(std::sync::atomic::Ordering::Relaxed));
    stop_request.request(StopCause::Signal);
    // Both at once, so each instant is when it happened, not when it was looked at.
    let (refused_at, (code, closed_at)) = runtime.block_on(async {
        tokio::join!(
            hello_until_draining(&endpoint, addr, &key),
            closed_with(&player)
        )
    });
    let report: StopReport = serving.join().unwrap();

    assert_eq!(
        code,
        u64::from(close::DRAINED),
        "the player is told: drained"
    );
    assert!(
        refused_at < closed_at,
        "Hellos are refused while the player still plays"
    );
    assert_eq!(report.cause, Some(StopCause::Signal));
    assert_eq!(
        report.end,
        Some(DrainEnd::GraceElapsed),
        "the player stayed, so the grace ended the drain"
    );
    let shutdown = fake
        .calls()
        .into_iter()
        .find(|c| c.route() == "POST /shutdown")
        .expect("Agones is told to shut the GameServer down");
    assert!(
        shutdown.at > closed_at,
        "Agones hears of the shutdown after the players were closed"
    );
}

/// Starts the binary on port 0 with `args`, recording to `dir/match.tcrec`, talking to
/// the sidecar on `sidecar_port` (through AGONES_SDK_HTTP_PORT, as in a pod); returns it
/// and the address it logged.
fn spawn_server(dir: &Path, sidecar_port: u16, args: &[&str]) -> (Child, std::net::SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tickcast-server"))
        .args(["--listen", "127.0.0.1:0", "--npcs", "20"])
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--record")
        .arg(dir.join("match.tcrec"))
        .env("AGONES_SDK_HTTP_PORT", sidecar_port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server binary starts");
    let log = child.stderr.take().expect("stderr is piped");
    let addr = address_logged_after(log, "listening on ");
    (child, addr)
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill(1) exists");
    assert!(status.success());
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = temp_data_dir(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn sigterm_drains_the_binary_and_it_exits_zero_after_closing_its_players() {
    let fake = fake_sidecar();
    let dir = scratch("drain-sigterm");
    let (mut child, addr) = spawn_server(&dir, fake.addr().port(), &["--drain-grace", "1s"]);
    wait_until("the binary is Ready", || {
        fake.calls().iter().any(|c| c.route() == "POST /ready")
    });
    let data = dir.join("data");
    let key = load_token_key(&data.join(TOKEN_KEY_FILE)).unwrap();
    let fingerprint = fingerprint_from_data_dir(&data).unwrap();
    let runtime = runtime();
    let endpoint = runtime.block_on(async { client_endpoint(addr, fingerprint).unwrap() });
    let player = runtime
        .block_on(hello(&endpoint, addr, &key, 1))
        .expect("admitted");

    signal(&child, "TERM");
    let (refused_at, (code, closed_at)) = runtime.block_on(async {
        tokio::join!(
            hello_until_draining(&endpoint, addr, &key),
            closed_with(&player)
        )
    });
    let status = child.wait().unwrap();
    let exited_at = Instant::now();

    assert_eq!(code, u64::from(close::DRAINED));
    assert!(refused_at < closed_at && closed_at < exited_at);
    assert!(status.success(), "a drain exits 0: {status:?}");
    let recording = decode_recording(&std::fs::read(dir.join("match.tcrec")).unwrap()).unwrap();
    assert!(
        replay::info(&recording).closed_cleanly,
        "the recording was flushed and closed"
    );
    // The watch's reads aside, the last call is the shutdown.
    let routes: Vec<String> = fake
        .calls()
        .iter()
        .map(|c| c.route())
        .filter(|r| !r.starts_with("GET "))
        .collect();
    assert_eq!(
        routes.last().map(String::as_str),
        Some("POST /shutdown"),
        "Agones is told last: {routes:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_second_sigterm_exits_at_once_without_waiting_for_the_grace() {
    let fake = fake_sidecar();
    let dir = scratch("drain-twice");
    // A grace far longer than the test: only the second signal can end it.
    let (mut child, addr) = spawn_server(&dir, fake.addr().port(), &["--drain-grace", "10m"]);
    wait_until("the binary is Ready", || {
        fake.calls().iter().any(|c| c.route() == "POST /ready")
    });
    let data = dir.join("data");
    let key = load_token_key(&data.join(TOKEN_KEY_FILE)).unwrap();
    let fingerprint = fingerprint_from_data_dir(&data).unwrap();
    let runtime = runtime();
    let endpoint = runtime.block_on(async { client_endpoint(addr, fingerprint).unwrap() });
    let player = runtime
        .block_on(hello(&endpoint, addr, &key, 1))
        .expect("admitted");

    signal(&child, "TERM");
    runtime.block_on(hello_until_draining(&endpoint, addr, &key));
    signal(&child, "TERM");
    let status = child.wait().unwrap();

    assert!(
        player.connection().close_reason().is_none(),
        "the player was never closed: the process did not wait for the grace"
    );
    assert_eq!(
        status.code(),
        Some(128 + 15),
        "a second SIGTERM exits at once with 128 + SIGTERM"
    );
    assert!(
        !fake.calls().iter().any(|c| c.route() == "POST /shutdown"),
        "no orderly shutdown after an abort"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
