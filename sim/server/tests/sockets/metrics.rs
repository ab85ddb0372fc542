//! The metrics endpoint over a real socket: `/metrics` with real QUIC clients, `/healthz`
//! against a held loop, `/readyz` at the client limit, and bad requests.

use std::time::Duration;

use tickcast_clients::InputHistory;
use tickcast_net::NetConfig;
use tickcast_server::Server;
use tickcast_shared::Tick;
use tickcast_shared::msg::InputCmd;

use crate::common::{
    connect_clients, http_exchange, http_get, metrics_config, scrape_until, scrape_until_with,
    series_value, temp_data_dir,
};

/// The number of series (sample lines) in an exposition.
fn series_count(exposition: &str) -> usize {
    exposition
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .count()
}

/// Asks `path` until it answers `status` (bounded: 10 s); the body of that answer.
fn poll_until(addr: std::net::SocketAddr, path: &str, status: u16) -> String {
    let mut last = (0, String::new());
    for _ in 0..200 {
        last = http_get(addr, path);
        if last.0 == status {
            return last.1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{path} answered {last:?}, not {status}, for 10 s");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_series_do_not_grow_with_clients_and_leaves_count_by_close_code() {
    let data_dir = temp_data_dir("metrics-series");
    let server = Server::start(metrics_config(&data_dir)).expect("server starts");
    let addr = server.metrics_addr().expect("metrics endpoint");
    let runtime = runtime();

    let (endpoint, mut sessions) = runtime.block_on(connect_clients(&server, &data_dir, 1, 1));
    let with_one = scrape_until(addr, "tickcast_clients", 1.0);
    let (_endpoint, more) = runtime.block_on(connect_clients(&server, &data_dir, 100, 99));
    sessions.extend(more);
    let with_hundred = scrape_until(addr, "tickcast_clients", 100.0);

    assert_eq!(
        series_count(&with_one),
        series_count(&with_hundred),
        "the number of series moved with the clients:\n{with_one}\n---\n{with_hundred}"
    );
    assert!(series_count(&with_one) > 50, "{with_one}");
    assert_eq!(
        series_value(&with_hundred, "tickcast_admissions_total"),
        Some(100.0)
    );
    assert!(!with_hundred.contains("client_id"));

    // One input datagram, counted on arrival.
    let input = InputHistory::default().push(InputCmd::default(), Tick::ZERO);
    sessions[0].send_input(&input).expect("input sent");
    let after = scrape_until(addr, "tickcast_datagrams_received_total", 1.0);
    assert_eq!(
        series_value(&after, "tickcast_inputs_received_total"),
        Some(1.0)
    );

    // Everyone leaves with the normal close code: counted by code, and the gauge drops.
    for session in &sessions {
        session.close();
    }
    let after = scrape_until(addr, r#"tickcast_disconnects_total{code="normal"}"#, 100.0);
    assert_eq!(
        series_value(&after, r#"tickcast_disconnects_total{code="idle_timeout"}"#),
        Some(0.0)
    );
    scrape_until(addr, "tickcast_clients", 0.0);
    // The traffic the clients caused, from quinn's connection statistics (published
    // once a second): at least a handshake's packets each way per client.
    scrape_until_with(addr, "tickcast_udp_packets_received_total", |n| n >= 200.0);
    scrape_until_with(addr, "tickcast_udp_packets_sent_total", |n| n >= 200.0);
    drop(sessions);
    drop(endpoint);
    server.stop();
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[test]
fn healthz_fails_while_the_loop_is_held_and_recovers_when_released() {
    let data_dir = temp_data_dir("metrics-healthz");
    let server = Server::start(metrics_config(&data_dir)).expect("server starts");
    let addr = server.metrics_addr().expect("metrics endpoint");
    assert_eq!(poll_until(addr, "/healthz", 200), "ok\n");

    server.progress().hold(true);
    let body = poll_until(addr, "/healthz", 503);
    assert!(body.contains("not ticking"), "{body}");
    // A hung loop admits no one either.
    assert_eq!(http_get(addr, "/readyz").0, 503);

    server.progress().hold(false);
    poll_until(addr, "/healthz", 200);
    poll_until(addr, "/readyz", 200);
    // The hold ended in a stall the pacing counted.
    scrape_until(addr, "tickcast_late_ticks_total", 1.0);
    server.stop();
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[test]
fn readyz_fails_at_the_client_limit_and_while_draining_and_bad_requests_get_a_4xx() {
    let data_dir = temp_data_dir("metrics-readyz");
    let mut config = metrics_config(&data_dir);
    config.net = NetConfig {
        max_clients: 1,
        ..config.net
    };
    let server = Server::start(config).expect("server starts");
    let addr = server.metrics_addr().expect("metrics endpoint");
    assert_eq!(poll_until(addr, "/readyz", 200), "ready\n");

    let runtime = runtime();
    let (_endpoint, sessions) = runtime.block_on(connect_clients(&server, &data_dir, 7, 1));
    let body = poll_until(addr, "/readyz", 503);
    assert!(body.contains("client limit"), "{body}");
    // Full is not unhealthy.
    assert_eq!(http_get(addr, "/healthz").0, 200);
    sessions[0].close();
    poll_until(addr, "/readyz", 200);

    // What is not a GET of a known path is refused, and the endpoint goes on serving.
    assert_eq!(http_get(addr, "/nothing").0, 404);
    assert_eq!(
        http_exchange(addr, b"POST /metrics HTTP/1.1\r\n\r\n").0,
        405
    );
    assert_eq!(http_exchange(addr, b"\x16\x03\x01garbage\r\n\r\n").0, 400);
    let endless_head = vec![b'a'; 16 * 1024];
    assert_eq!(http_exchange(addr, &endless_head).0, 431);
    let head = http_exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(head, (200, String::new()));
    assert_eq!(http_get(addr, "/metrics").0, 200);

    // A draining server admits no one: not ready, and the gauge says why.
    scrape_until(addr, "tickcast_draining", 0.0);
    server.begin_drain();
    let body = poll_until(addr, "/readyz", 503);
    assert!(body.contains("draining"), "{body}");
    scrape_until(addr, "tickcast_draining", 1.0);
    assert_eq!(
        http_get(addr, "/healthz").0,
        200,
        "draining is not unhealthy"
    );
    server.stop();
    let _ = std::fs::remove_dir_all(&data_dir);
}
