//! Record a scripted match the way the server does, then verify, inspect and export it.

use std::path::{Path, PathBuf};

use tickcast_shared::Tick;
use tickcast_shared::event::PeerEvent;
use tickcast_shared::msg::{InputCmd, InputDatagram};
use tickcast_sim::arena::Arena;
use tickcast_sim::record::{Recorder, RecordingHeader, decode_recording};
use tickcast_sim::replay::{self, ExportFormat};
use tickcast_sim::{Sim, SimConfig};

const TICKS: u32 = 400;
/// Players stand still until this tick, then walk.
const WALK_FROM: u32 = 120;

fn temp_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tickcast-replay-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("match.tcrec")
}

fn config() -> SimConfig {
    SimConfig {
        seed: 7,
        npcs: 50,
        ..SimConfig::default()
    }
}

fn events(tick: u32) -> Vec<PeerEvent> {
    let mut events = Vec::new();
    for client in 0..4u64 {
        if tick == client as u32 {
            events.push(PeerEvent::Joined { client_id: client });
        }
        if tick > client as u32 {
            let walking = tick >= WALK_FROM;
            let cmd = InputCmd {
                seq: tick,
                move_x: if walking { 100 } else { 0 },
                move_y: if walking { -60 } else { 0 },
                ..Default::default()
            };
            events.push(PeerEvent::Input {
                client_id: client,
                datagram: InputDatagram::single(cmd, Tick::new(tick)),
            });
        }
    }
    events
}

/// Runs the match and records it exactly as the server loop does.
fn record_match(path: &Path) {
    record_match_as(path, tickcast_sim::arena::arena_schema().unwrap());
}

/// The same match, with `schema` in the header as the game that recorded it.
fn record_match_as(path: &Path, schema: tickcast_shared::schema::Schema) {
    let mut sim = Sim::new(config()).unwrap();
    let mut recorder = Recorder::start(
        path,
        RecordingHeader {
            protocol_version: tickcast_shared::PROTOCOL_VERSION,
            config: config(),
            build_id: "test".into(),
            keyframe_interval: 50,
            schema,
        },
    )
    .unwrap();
    for tick in 0..TICKS {
        let mut applied = recorder.event_buffer();
        for event in events(tick) {
            applied.push(event.clone());
            sim.handle(event);
        }
        sim.step(0);
        let snapshot = sim.take_snapshot();
        recorder.record_step(
            &sim,
            applied,
            snapshot.as_ref().map(|s| &s.bytes),
            100 + tick,
            u64::from(tick) * 10,
        );
    }
    recorder.finish();
}

#[test]
fn a_recording_of_another_game_or_version_is_refused_by_name() {
    let arena = tickcast_sim::arena::arena_schema().unwrap();
    let other = |game: &str, version: u16| {
        tickcast_shared::schema::Schema::new(
            game,
            version,
            arena.kinds().to_vec(),
            arena.input().to_vec(),
        )
        .unwrap()
    };
    for (game, version) in [("pickups", 1), ("arena", 2)] {
        let path = temp_file(&format!("other-{game}-{version}"));
        record_match_as(&path, other(game, version));
        let recording = decode_recording(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(recording.header.schema.game(), game);
        let refused = replay::verify(Arena, &recording, None, |_, _| {}).unwrap_err();
        assert!(matches!(refused, replay::VerifyError::OtherGame(_)));
        assert_eq!(
            refused.to_string(),
            format!(
                "the recording is of {game} v{version}; this build re-simulates arena v1 (use \
                 that game's own server binary's replay)"
            )
        );
        assert!(matches!(
            replay::entities_at(Arena, &recording, Tick::new(10)),
            Err(replay::EntitiesAtError::OtherGame(_))
        ));
    }
}

#[test]
fn a_recording_verifies_and_a_rule_change_diverges_where_players_first_move() {
    let path = temp_file("verify");
    record_match(&path);
    let recording = decode_recording(&std::fs::read(&path).unwrap()).unwrap();
    assert!(recording.torn.is_none());

    let ok = replay::verify(Arena, &recording, None, |_, _| {}).unwrap();
    assert!(ok.passed(), "{ok:?}");
    assert_eq!(ok.ticks_checked, u64::from(TICKS));

    let faster = SimConfig {
        player_speed: config().player_speed + 10,
        ..config()
    };
    let changed = replay::verify(Arena, &recording, Some(faster), |_, _| {}).unwrap();
    assert!(!changed.passed());
    assert_eq!(changed.first_divergence, Some(Tick::new(WALK_FROM)));
    let (at, entities) = changed
        .differing_entities
        .expect("a keyframe follows the divergence");
    assert_eq!(
        at,
        Tick::new(150),
        "the first keyframe at or after tick {WALK_FROM}"
    );
    let players = replay::entities_at(Arena, &recording, at)
        .unwrap()
        .into_values()
        .filter(|r| r.kind == tickcast_shared::chunk::KIND_PLAYER)
        .count();
    assert_eq!(
        entities.len(),
        players,
        "exactly the walking players differ: {entities:?}"
    );
}

#[test]
fn info_inspect_and_export_read_what_was_recorded() {
    let path = temp_file("info");
    record_match(&path);
    let recording = decode_recording(&std::fs::read(&path).unwrap()).unwrap();
    let info = replay::info(&recording);
    assert_eq!(info.ticks, u64::from(TICKS));
    assert_eq!(info.span, Some((Tick::ZERO, Tick::new(TICKS - 1))));
    assert_eq!(info.distinct_clients, 4);
    assert_eq!(info.peak_clients, 4);
    assert_eq!(info.keyframes, 8);
    assert!(info.closed_cleanly);

    let entities = replay::entities_at(Arena, &recording, Tick::new(10)).unwrap();
    assert_eq!(entities.len(), 50 + 4);
    // Inspecting a keyframe tick by re-simulation gives the recorded snapshot.
    let keyframe = recording.keyframe(Tick::new(100)).unwrap();
    let recorded: Vec<_> = tickcast_shared::chunk::tick_frames(keyframe)
        .skip(1) // the tick directory
        .flat_map(|r| {
            tickcast_shared::chunk::parse_chunk(&keyframe[r])
                .unwrap()
                .records()
                .collect::<Vec<_>>()
        })
        .collect();
    let inspected = replay::entities_at(Arena, &recording, Tick::new(100)).unwrap();
    assert_eq!(recorded.len(), inspected.len());
    for record in recorded {
        let raw = &inspected[&record.net_id];
        assert_eq!(raw.kind, record.kind);
        let mut bytes = [0u8; tickcast_shared::chunk::ENTITY_RECORD_LEN];
        tickcast_shared::chunk::write_record(&record, &mut bytes);
        assert_eq!(raw.bytes(), bytes);
    }

    let mut csv = Vec::new();
    replay::export(&recording, ExportFormat::Csv, &mut csv).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), TICKS as usize + 1);
    assert_eq!(
        lines[0],
        "tick,state_hash,duration_us,bytes_out,clients,events"
    );
    assert!(lines[11].starts_with("10,"), "{}", lines[11]);
    assert!(lines[11].ends_with(",110,100,4,4"), "{}", lines[11]);
    let mut jsonl = Vec::new();
    replay::export(&recording, ExportFormat::Jsonl, &mut jsonl).unwrap();
    let first: serde_json::Value =
        serde_json::from_str(String::from_utf8(jsonl).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first["tick"], 0);
}

#[test]
fn a_torn_recording_verifies_up_to_its_last_whole_tick() {
    let path = temp_file("torn");
    record_match(&path);
    let mut bytes = std::fs::read(&path).unwrap();
    // Cut into the middle of the last tick frames (as a SIGKILL mid-write would).
    bytes.truncate(bytes.len() * 2 / 3);
    let recording = decode_recording(&bytes).unwrap();
    let torn = recording.torn.clone().expect("the cut is reported");
    assert!(torn.bytes > 0);
    let result = replay::verify(Arena, &recording, None, |_, _| {}).unwrap();
    assert!(result.passed());
    assert_eq!(result.ticks_checked, recording.ticks().count() as u64);
    assert!(result.ticks_checked < u64::from(TICKS));
}

#[test]
fn plot_draws_each_series_in_its_panel_and_writes_a_png() {
    let path = temp_file("plot");
    record_match(&path);
    let recording = decode_recording(&std::fs::read(&path).unwrap()).unwrap();
    let canvas = tickcast_tools::plot::render(&recording);
    let (width, height) = canvas.size();
    let coloured = |panel: usize, colour: [u8; 3]| {
        let top = panel * tickcast_tools::plot::PANEL_HEIGHT;
        (top..top + tickcast_tools::plot::PANEL_HEIGHT)
            .flat_map(|y| (0..width).map(move |x| (x, y)))
            .filter(|&(x, y)| canvas.pixel(x, y) == colour)
            .count()
    };
    // Each panel holds a line as wide as the plot in its own colour, and no other's.
    assert!(coloured(0, [200, 40, 40]) > 800);
    assert!(coloured(1, [40, 90, 200]) > 800);
    assert!(coloured(2, [30, 150, 60]) > 800);
    assert_eq!(coloured(0, [30, 150, 60]), 0);
    let mut png = Vec::new();
    canvas.write_png(&mut png).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    assert_eq!(height, 3 * tickcast_tools::plot::PANEL_HEIGHT);
}

/// Reads `out` until a line has `marker` followed by an address, and returns it; then
/// keeps draining it on a thread. Fails if the output ends first, or after 20 s.
fn address_printed(
    out: impl std::io::Read + Send + 'static,
    marker: &'static str,
) -> std::net::SocketAddr {
    use std::io::BufRead;
    let (found, address) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Some((_, rest)) = line.split_once(marker)
                && let Some(addr) = rest.split_whitespace().next().and_then(|a| a.parse().ok())
            {
                let _ = found.send(addr);
            }
        }
    });
    address
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("serve printed its address")
}

#[test]
fn serve_plays_the_recording_to_real_clients_as_spectators() {
    use tickcast_clients::track::{ChunkOutcome, TickAssembler, View};
    use tickcast_net::tls::{TOKEN_KEY_FILE, fingerprint_from_data_dir, load_token_key};

    let path = temp_file("serve");
    record_match(&path);
    let data_dir = path.with_file_name("data");
    let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_tickcast-replay"))
        .arg("serve")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0", "--speed", "2"])
        .arg("--data-dir")
        .arg(&data_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Port 0, and the address `serve` prints once it is listening: no port found free
    // and then reused, no sleep.
    let addr = address_printed(serve.stdout.take().unwrap(), "ticks on ");
    let key = load_token_key(&data_dir.join(TOKEN_KEY_FILE)).unwrap();
    let fingerprint = fingerprint_from_data_dir(&data_dir).unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let views = runtime.block_on(async {
        let endpoint = tickcast_clients::client_endpoint(addr, fingerprint).unwrap();
        let mut views = Vec::new();
        for client_id in [10u64, 11] {
            let token =
                tickcast_clients::mint_token(&key, client_id, std::time::Duration::from_secs(60))
                    .unwrap();
            let session = tickcast_clients::connect(
                &endpoint,
                addr,
                token,
                std::time::Duration::from_secs(10),
            )
            .await
            .expect("serve admits clients");
            assert_eq!(
                session.welcome().entity,
                u32::MAX,
                "a spectator controls nothing"
            );
            assert_eq!(View::from_welcome(session.welcome()), View::ALL);
            let mut assembler = TickAssembler::new(View::ALL, session.schema().clone(), true);
            let mut ticks = Vec::new();
            let end = tokio::time::Instant::now() + std::time::Duration::from_millis(1500);
            while let Ok(Ok(bytes)) = tokio::time::timeout_at(end, session.next_datagram()).await {
                for message in tickcast_shared::chunk::datagram_messages(&bytes) {
                    if let ChunkOutcome::Completed { tick, entities } =
                        assembler.on_message(&message.unwrap())
                    {
                        ticks.push((tick, entities));
                    }
                }
            }
            session.close();
            views.push(ticks);
        }
        views
    });
    serve.kill().unwrap();
    serve.wait().unwrap();

    for ticks in views {
        // 1.5 s at 2 × 30 Hz is about 90 ticks.
        assert!(ticks.len() >= 30, "only {} complete ticks", ticks.len());
        assert!(
            ticks.windows(2).all(|w| w[1].0.is_after(w[0].0)),
            "ticks in order"
        );
        let recording = decode_recording(&std::fs::read(&path).unwrap()).unwrap();
        for &(tick, entities) in ticks.iter().step_by(10) {
            let recorded = replay::entities_at(Arena, &recording, tick).unwrap();
            assert_eq!(
                entities,
                recorded.len(),
                "tick {tick} carries the recorded world"
            );
        }
    }
}
