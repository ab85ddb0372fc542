//! `tickcast-server --record`: the real binary, real clients, then SIGKILL or SIGTERM,
//! then the file is read back and re-simulated.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tickcast_clients::{InputHistory, client_endpoint, connect, mint_token};
use tickcast_net::tls::{TOKEN_KEY_FILE, fingerprint_from_data_dir, load_token_key};
use tickcast_shared::Tick;
use tickcast_shared::msg::{BUTTON_FIRE, InputCmd};
use tickcast_sim::record::{self, Frame, Repair, decode_recording};
use tickcast_sim::replay;
use tickcast_sim::rng::SimRng;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tickcast-rec-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts the server binary on port 0, recording to `dir/match.tcrec`; returns it and
/// the address it logged once it is listening (no port is found free and then reused).
fn start_server(dir: &Path) -> (Child, std::net::SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tickcast-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--npcs",
            "40",
            "--keyframe-interval",
            "30",
        ])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--record")
        .arg(dir.join("match.tcrec"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server binary starts");
    let log = child.stderr.take().expect("stderr is piped");
    let addr = address_logged_after(log, "listening on ");
    (child, addr)
}

/// Reads `log` until a line has `marker` followed by an address, and returns it; then
/// keeps draining the log on a thread so the child never blocks on a full pipe. Fails
/// if the log ends first, or after 20 s without it.
pub(crate) fn address_logged_after(
    log: impl std::io::Read + Send + 'static,
    marker: &'static str,
) -> std::net::SocketAddr {
    use std::io::BufRead;
    let (found, address) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(log).lines().map_while(Result::ok) {
            if let Some((_, rest)) = line.split_once(marker)
                && let Some(addr) = rest.split_whitespace().next().and_then(|a| a.parse().ok())
            {
                let _ = found.send(addr);
            }
        }
    });
    address
        .recv_timeout(Duration::from_secs(20))
        .expect("the process logged its address")
}

/// Two clients walk and fire for `play`, so the recording holds joins, inputs and leaves.
fn play(dir: &Path, addr: std::net::SocketAddr, play: Duration) {
    let data = dir.join("data");
    let key = load_token_key(&data.join(TOKEN_KEY_FILE)).unwrap();
    let fingerprint = fingerprint_from_data_dir(&data).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let endpoint = client_endpoint(addr, fingerprint).unwrap();
        let mut sessions = Vec::new();
        for client_id in [1u64, 2] {
            let token = mint_token(&key, client_id, Duration::from_secs(60)).unwrap();
            sessions.push(
                connect(&endpoint, addr, token, Duration::from_secs(10))
                    .await
                    .expect("admitted"),
            );
        }
        let mut histories = vec![InputHistory::default(); sessions.len()];
        let end = tokio::time::Instant::now() + play;
        let mut n = 0u32;
        while tokio::time::Instant::now() < end {
            for (i, (session, history)) in sessions.iter().zip(&mut histories).enumerate() {
                let cmd = InputCmd {
                    move_x: if i == 0 { 100 } else { -100 },
                    move_y: (n % 200) as i8 - 100,
                    aim: (n * 1000) as u16,
                    buttons: if n.is_multiple_of(4) { BUTTON_FIRE } else { 0 },
                    ..Default::default()
                };
                let _ = session.send_input(&history.push(cmd, Tick::new(n)));
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(33)).await;
        }
        for session in &sessions {
            session.close();
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    });
}

/// Clients seen joining in the recording so far (0 while it does not read).
fn recorded_clients(path: &Path) -> usize {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| decode_recording(&bytes).ok())
        .map_or(0, |r| replay::info(&r).distinct_clients)
}

fn recorded_ticks(path: &Path) -> usize {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| decode_recording(&bytes).ok())
        .map_or(0, |r| r.ticks().count())
}

#[test]
fn after_sigkill_the_recording_reads_back_and_verifies_to_its_last_whole_tick() {
    let dir = scratch("kill");
    let (mut server, addr) = start_server(&dir);
    play(&dir, addr, Duration::from_secs(2));
    // Keep recording a little after the clients leave, then kill without warning.
    let path = dir.join("match.tcrec");
    let deadline = Instant::now() + Duration::from_secs(20);
    while recorded_ticks(&path) < 90 {
        assert!(Instant::now() < deadline, "the recording did not grow");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();

    let recording = decode_recording(&std::fs::read(&path).unwrap()).unwrap();
    assert!(
        !recording
            .frames
            .iter()
            .any(|(_, f)| matches!(f, Frame::Index(_))),
        "a killed server cannot have written the closing index"
    );
    let info = replay::info(&recording);
    assert_eq!(info.distinct_clients, 2, "the joins were recorded");
    assert!(info.ticks >= 90);
    let verified = replay::verify(tickcast_sim::arena::Arena, &recording, None, |_, _| {}).unwrap();
    assert!(verified.passed(), "{verified:?}");
    assert_eq!(verified.ticks_checked, info.ticks);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_clean_stop_closes_the_recording_with_its_index() {
    let dir = scratch("term");
    let (server, addr) = start_server(&dir);
    play(&dir, addr, Duration::from_secs(1));
    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .expect("kill(1) exists");
    assert!(status.success());
    let output = server.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "SIGTERM is a clean stop: {:?}",
        output.status
    );

    let recording = decode_recording(&std::fs::read(dir.join("match.tcrec")).unwrap()).unwrap();
    assert!(recording.torn.is_none());
    assert!(replay::info(&recording).closed_cleanly);
    assert!(
        replay::verify(tickcast_sim::arena::Arena, &recording, None, |_, _| {})
            .unwrap()
            .passed()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The small version of `scripts/faults.py crash` (20 kills): three servers recording
/// under two playing clients, each SIGKILLed at a seeded random moment. Each file reads
/// up to its torn tail, `record::repair` (what `tickcast-replay repair` runs) leaves it
/// whole with the same frames, and it verifies to its last tick; and so does a copy cut
/// at a seeded point, as a power loss could leave it.
#[test]
fn three_sigkills_at_seeded_moments_each_leave_a_recording_that_repairs_and_verifies() {
    // Three servers, debug re-simulations: it loads the machine like the drills do.
    let _machine = crate::common::one_load_test_at_a_time();
    let mut rng = SimRng::new(0x5eed_c4a5);
    for round in 0..3 {
        let dir = scratch(&format!("kill-{round}"));
        let (mut server, addr) = start_server(&dir);
        let path = dir.join("match.tcrec");
        let stop = Arc::new(AtomicBool::new(false));
        let clients = {
            let (dir, stop) = (dir.clone(), stop.clone());
            std::thread::spawn(move || play_until_stopped(&dir, addr, &stop))
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while recorded_clients(&path) < 2 {
            assert!(
                Instant::now() < deadline,
                "the clients were not recorded joining"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Somewhere in the next 1.5 s of play: in a tick frame, a keyframe (one a
        // second) or between two.
        let moment = Duration::from_millis(u64::from(rng.below(1_500)));
        std::thread::sleep(moment);
        server.kill().unwrap(); // SIGKILL
        server.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        clients.join().unwrap();

        let read = decode_recording(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("round {round} ({moment:?}): {e}"));
        let ticks = replay::info(&read).ticks;
        assert!(ticks > 0, "round {round}");
        let repaired = record::repair(&path).unwrap();
        let whole = decode_recording(&std::fs::read(&path).unwrap()).unwrap();
        assert!(whole.torn.is_none(), "round {round}: {repaired:?}");
        assert_eq!(whole.frames, read.frames, "repair keeps every whole frame");
        match (repaired, &read.torn) {
            (Repair::Whole, None) => {}
            (Repair::Truncated { valid_len, removed }, Some(torn)) => {
                assert_eq!((valid_len, removed), (torn.offset, torn.bytes));
            }
            other => panic!("round {round}: {other:?}"),
        }
        let verified = replay::verify(tickcast_sim::arena::Arena, &whole, None, |_, _| {}).unwrap();
        assert!(verified.passed(), "round {round}: {verified:?}");
        assert_eq!(verified.ticks_checked, ticks);

        // SIGKILL cannot tear a frame (each tick is one write, which the kernel
        // finishes); a power loss can. A copy cut a seeded number of bytes short of its
        // end repairs to its whole frames and verifies too.
        let bytes = std::fs::read(&path).unwrap();
        let header_end = whole
            .frames
            .first()
            .map_or(bytes.len(), |(at, _)| *at as usize);
        let cut_at = bytes.len() - 1 - rng.below((bytes.len() - header_end - 1) as u32) as usize;
        let cut = dir.join("cut.tcrec");
        std::fs::write(&cut, &bytes[..cut_at]).unwrap();
        let torn = decode_recording(&bytes[..cut_at]).unwrap();
        let kept = torn.frames.len();
        assert!(kept < whole.frames.len(), "round {round}: cut at {cut_at}");
        assert_eq!(
            whole.frames[..kept],
            torn.frames[..],
            "every whole frame before the cut"
        );
        let repaired = record::repair(&cut).unwrap();
        assert_eq!(
            repaired == Repair::Whole,
            torn.torn.is_none(),
            "round {round}: {repaired:?}"
        );
        let after = decode_recording(&std::fs::read(&cut).unwrap()).unwrap();
        assert!(after.torn.is_none());
        assert_eq!(after.frames, torn.frames);
        let verified = replay::verify(tickcast_sim::arena::Arena, &after, None, |_, _| {}).unwrap();
        assert!(verified.passed(), "round {round}, cut: {verified:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Two clients walk and fire until `stop` is set (at most 20 s).
fn play_until_stopped(dir: &Path, addr: std::net::SocketAddr, stop: &AtomicBool) {
    let data = dir.join("data");
    let key = load_token_key(&data.join(TOKEN_KEY_FILE)).unwrap();
    let fingerprint = fingerprint_from_data_dir(&data).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let endpoint = client_endpoint(addr, fingerprint).unwrap();
        let mut sessions = Vec::new();
        for client_id in [1u64, 2] {
            let token = mint_token(&key, client_id, Duration::from_secs(60)).unwrap();
            if let Ok(session) = connect(&endpoint, addr, token, Duration::from_secs(10)).await {
                sessions.push(session);
            }
        }
        let mut history = InputHistory::default();
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut n = 0u32;
        while tokio::time::Instant::now() < end && !stop.load(Ordering::Relaxed) {
            for session in &sessions {
                let cmd = InputCmd {
                    move_x: 100,
                    aim: (n * 1000) as u16,
                    buttons: if n.is_multiple_of(3) { BUTTON_FIRE } else { 0 },
                    ..Default::default()
                };
                let _ = session.send_input(&history.push(cmd, Tick::new(n)));
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(33)).await;
        }
    });
}
