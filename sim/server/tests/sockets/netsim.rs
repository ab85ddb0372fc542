//! Real networks, small scale: bots through `tickcast-netsim` (loss, delay, a rate cap,
//! an MTU clamp) to a real server on 127.0.0.1. Seeded, bounded (a few seconds each),
//! and judged on counts, never on how long anything took.

use std::sync::Arc;
use std::time::Duration;

use tickcast_bots::report::{Gates, Report};
use tickcast_bots::swarm::{LiveCounters, SwarmConfig, TokenSource, run_swarm};
use tickcast_clients::track::{TickAssembler, View};
use tickcast_clients::{ClientError, EndpointOptions, client_endpoint_with, connect, mint_token};
use tickcast_net::NetCounters;
use tickcast_net::tls::{TOKEN_KEY_FILE, load_token_key};
use tickcast_netsim::{Proxy, ProxyConfig, ProxyReport};
use tickcast_server::{Server, ServerConfig};
use tickcast_shared::chunk::datagram_messages;
use tickcast_shared::msg::RejectReason;

use crate::common::{temp_data_dir, test_config};

/// Runs `clients` walking bots for `seconds` through a proxy doing `spec` in front of a
/// server started with `config`; returns the report, the proxy's counts and the
/// server's net counters.
fn through_netsim(
    name: &str,
    config: impl FnOnce(&mut ServerConfig),
    spec: &str,
    clients: usize,
    seconds: u64,
) -> (Report, ProxyReport, Arc<NetCounters>) {
    let data_dir = temp_data_dir(name);
    let mut server_config = test_config(&data_dir);
    config(&mut server_config);
    let server = Server::start(server_config).expect("server starts");
    let proxy = Proxy::start(ProxyConfig::new(
        server.local_addr(),
        spec.parse().expect("a valid spec"),
    ))
    .expect("proxy starts");
    let key = load_token_key(&data_dir.join(TOKEN_KEY_FILE)).unwrap();
    let duration = Duration::from_secs(seconds);
    let outcomes = run_swarm(
        SwarmConfig {
            server: proxy.local_addr(),
            fingerprint: server.fingerprint(),
            clients,
            duration,
            ramp: Duration::from_millis(200),
            ..SwarmConfig::default()
        },
        TokenSource::Mint {
            key,
            first_client_id: 7_000,
            ttl: Duration::from_secs(60),
        },
        Arc::new(LiveCounters::default()),
    )
    .expect("the swarm runs");
    let link = proxy.stop();
    let counters = server.net_counters().clone();
    server.stop();
    let _ = std::fs::remove_dir_all(&data_dir);
    (
        Report::new(&outcomes, duration, Gates::default()),
        link,
        counters,
    )
}

/// Chunks lost over chunks meant for the bots.
fn chunks_lost_ratio(report: &Report) -> f64 {
    let s = &report.overall;
    s.chunks_lost as f64 / (s.chunks_lost + s.chunks_received).max(1) as f64
}

#[test]
fn twenty_percent_loss_costs_about_twenty_percent_of_chunks_and_no_connection() {
    let _machine = crate::common::one_load_test_at_a_time();
    let (report, link, counters) =
        through_netsim("netsim-loss", |_| {}, "loss=20%,delay=30ms,seed=7", 6, 8);
    let s = &report.overall;
    // At 20 % loss each way a handshake can lose flight after flight (each retry waits
    // twice as long) and miss the run's start: with 4 bots, 4 s and 3 required, 1 run in
    // 6 fell short. Half of 6 is the bar; a bot admitted is never dropped.
    assert!(s.connected >= 3, "{:?}", s.errors);
    assert_eq!(s.disconnects, 0, "{:?}", s.errors);
    // The loss the link really dealt the server's packets, and what it cost the bots.
    let dealt = link.down.dropped_loss as f64 / link.down.packets as f64;
    let lost = chunks_lost_ratio(&report);
    eprintln!(
        "netsim 20 %: {} of 6 bots in ({:?}); link lost {dealt:.3} of packets down; bots lost \
         {lost:.3} of chunks; delivery {:.3}; server skipped {} of {} peer-ticks; staleness \
         p50 {:?} p99 {:?}",
        s.connected,
        s.errors,
        s.delivery_ratio,
        NetCounters::get(&counters.peer_ticks_skipped_backpressure),
        NetCounters::get(&counters.peer_ticks_sent),
        s.staleness_ms_p50,
        s.staleness_ms_p99,
    );
    assert!(
        (0.15..0.25).contains(&dealt),
        "the seeded link dealt {dealt}"
    );
    // Loss costs the loss, not a throttled stream: before the congestion floor, 20 %
    // loss cost about 35 % of chunks (docs/PERFORMANCE.md's netsim table, 50 bots for
    // 20 s, is where the +2 points target is measured). Alone on the machine this test
    // loses 0-1 point more than the link; inside the whole workspace's run, with other
    // socket tests starving the debug server and bots of CPU, one run in six lost 7.8
    // points more and skipped 119 of 1,138 peer-ticks (scheduling delay is real queueing
    // to the delay window). The bars leave room for that, not for a collapsed window.
    assert!(
        lost <= dealt + 0.10,
        "bots lost {lost} of chunks at {dealt} loss"
    );
    // Stock Cubic skips 4-21 % of peer-ticks in runs this size (measured with
    // `congestion_window_floor = 0`: 49 of 577, 15 of 367, 105 of 499 in 4 s runs); the
    // shipped controller 0-2 % in most runs, and in about one 4 s run in ten one peer
    // stalls for a second or so (50 of 528 skipped: its window, cut to a few packets,
    // waits out a probe timeout when a run of losses takes every acknowledgement; fixed
    // since by `QueueDelayWindow::corroborate`). The bar is one in eight (see above).
    let skipped = NetCounters::get(&counters.peer_ticks_skipped_backpressure);
    let sent = NetCounters::get(&counters.peer_ticks_sent);
    assert!(
        skipped <= sent / 8,
        "the server skipped {skipped} peer-ticks for loss, against {sent} sent"
    );
    assert!(s.staleness_ms_p99.is_some());
}

#[test]
fn a_link_capped_below_the_stream_gets_skipped_ticks_a_bounded_queue_and_stays_connected() {
    let _machine = crate::common::one_load_test_at_a_time();
    // Six players behind one 256 kbit/s (32 KB/s) link, each sent the whole 30-NPC world
    // (~15 KB/s): about three times what the link carries. Six congestion-window floors
    // (72 KB) are more than the link's queue (32 KiB): only because the windows shrink
    // once the queue shows in the round trip do they not hold it full.
    let (report, link, counters) = through_netsim(
        "netsim-cap",
        |_| {},
        "down:rate=256kbit,down:queue=32KiB,delay=20ms,seed=3",
        6,
        4,
    );
    let s = &report.overall;
    assert_eq!(s.connected, 6, "{:?}", s.errors);
    assert_eq!(s.disconnects, 0, "{:?}", s.errors);
    let skipped = NetCounters::get(&counters.peer_ticks_skipped_backpressure);
    let sent = NetCounters::get(&counters.peer_ticks_sent);
    eprintln!(
        "netsim cap: server sent {sent} and skipped {skipped} peer-ticks; link queue peak {} B, \
         {} of {} packets queue-dropped; delivery {:.3}; server send queue peak {} B; \
         latency p50 {:?} p99 {:?} ms",
        link.down.queue_peak_bytes,
        link.down.dropped_queue,
        link.down.packets,
        s.delivery_ratio,
        NetCounters::get(&counters.peer_send_queue_peak_bytes),
        s.latency_ms_p50,
        s.latency_ms_p99,
    );
    // The server notices the link cannot take the stream and skips ticks...
    assert!(skipped > sent / 4, "sent {sent}, skipped {skipped}");
    // ...instead of flooding it: the congestion windows, not the link's drop-tail,
    // bound what is in flight. Sent blind at its own rate the stream would lose two
    // packets in three at the bottleneck; with stock Cubic (a floor of 0) six
    // connections starting at once overfill it with their initial windows, and in a
    // run this short about a third meet a full queue (measured 34 %, 101 of 293). The
    // delay window shrinks as soon as the queue shows in the round trip: measured 0 of
    // 133 dropped (queue peak 27.7 of its 32 KiB). (The bots' latency is not asserted:
    // in four seconds it is the connect-time queue draining, p99 2.1–2.2 s either way; the
    // steady state is `congestion`'s shared-bottleneck test and the netsim table.)
    assert!(
        link.down.dropped_queue * 10 <= link.down.packets,
        "{} of {} packets dropped at the bottleneck",
        link.down.dropped_queue,
        link.down.packets
    );
    // Its own queue for the peer stays within the send buffer, and whole ticks arrive.
    assert!(NetCounters::get(&counters.peer_send_queue_peak_bytes) <= 64 * 1024);
    assert!(s.snapshots_complete > 0);
}

/// A client whose connection IDs are 20 bytes (the most QUIC allows) on a path held at
/// QUIC's minimum of 1,200 bytes: every packet from the server carries 12 bytes more
/// header than with quinn's 8-byte IDs, and path MTU discovery never grows the room.
/// It sends its Hello right after the handshake, is admitted, and every datagram of a
/// 200-NPC world (several near-full datagrams a tick) reaches it.
#[test]
fn a_client_with_20_byte_connection_ids_on_a_1200_byte_path_is_admitted_and_gets_whole_ticks() {
    let _machine = crate::common::one_load_test_at_a_time();
    let data_dir = temp_data_dir("netsim-cid");
    let mut config = test_config(&data_dir);
    config.sim.npcs = 200;
    let server = Server::start(config).expect("server starts");
    let proxy = Proxy::start(ProxyConfig::new(
        server.local_addr(),
        "mtu=1200".parse().unwrap(),
    ))
    .unwrap();
    let key = load_token_key(&data_dir.join(TOKEN_KEY_FILE)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let complete = runtime.block_on(async {
        let options = EndpointOptions {
            connection_id_len: 20,
            ..EndpointOptions::default()
        };
        let endpoint =
            client_endpoint_with(proxy.local_addr(), server.fingerprint(), &options).unwrap();
        let token = mint_token(&key, 42, Duration::from_secs(60)).unwrap();
        let session = connect(
            &endpoint,
            proxy.local_addr(),
            token,
            Duration::from_secs(10),
        )
        .await
        .expect("admitted");
        let mut assembler = TickAssembler::new(
            View::from_welcome(session.welcome()),
            session.schema().clone(),
            false,
        );
        let mut largest = 0;
        let mut complete = 0;
        // Read until 30 ticks arrived whole, or give up after 10 s (a failure).
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            while complete < 30 {
                let bytes = session.next_datagram().await.expect("stays connected");
                largest = largest.max(bytes.len());
                for message in datagram_messages(&bytes) {
                    if let tickcast_clients::track::ChunkOutcome::Completed { .. } =
                        assembler.on_message(&message.expect("well-formed"))
                    {
                        complete += 1;
                    }
                }
            }
        })
        .await;
        assert!(read.is_ok(), "only {complete} whole ticks arrived");
        assert!(
            largest > 1_100,
            "the ticks filled datagrams ({largest} bytes)"
        );
        session.close();
        complete
    });
    assert_eq!(complete, 30);
    let report = proxy.stop();
    assert!(
        report.up.dropped_mtu > 0,
        "path MTU discovery probes were clamped"
    );
    assert_eq!(
        NetCounters::get(&server.net_counters().peer_ticks_send_errors),
        0,
        "every datagram fit the path"
    );
    server.stop();
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// Admission reads the client's advertised `max_datagram_frame_size` itself: a client
/// advertising one byte too few is refused, and the refusal quotes what it advertised.
#[test]
fn a_client_advertising_one_byte_too_small_a_datagram_is_refused_quoting_its_advertisement() {
    let data_dir = temp_data_dir("netsim-advertised");
    let server = Server::start(test_config(&data_dir)).expect("server starts");
    let key = load_token_key(&data_dir.join(TOKEN_KEY_FILE)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // quinn advertises its datagram receive buffer as max_datagram_frame_size.
        let needed = tickcast_shared::chunk::DEFAULT_CHUNK_PAYLOAD + 2 + 9;
        for (advertised, admitted) in [(needed - 1, false), (needed, true)] {
            let options = EndpointOptions {
                datagram_receive_buffer: advertised,
                ..EndpointOptions::default()
            };
            let endpoint =
                client_endpoint_with(server.local_addr(), server.fingerprint(), &options).unwrap();
            let token = mint_token(&key, advertised as u64, Duration::from_secs(60)).unwrap();
            let result = connect(
                &endpoint,
                server.local_addr(),
                token,
                Duration::from_secs(10),
            )
            .await;
            match (result, admitted) {
                (Ok(session), true) => session.close(),
                (
                    Err(ClientError::Rejected {
                        reason: Some(RejectReason::DatagramsUnsupported),
                        detail,
                    }),
                    false,
                ) => assert!(
                    detail.contains(&format!("advertised max_datagram_frame_size {advertised}")),
                    "{detail}"
                ),
                (Ok(_), false) => panic!("{advertised} admitted"),
                (Err(e), _) => panic!("{advertised}: {e}"),
            }
        }
    });
    server.stop();
    let _ = std::fs::remove_dir_all(&data_dir);
}
