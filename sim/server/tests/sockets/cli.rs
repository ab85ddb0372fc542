//! The `tickcast-server` binary as an operator runs it: a config file (a bad one exits 2
//! naming the key and line), `--print-config`, and its logs in both formats.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tickcast-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn server(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tickcast-server"));
    command.current_dir(dir).env_remove("RUST_LOG");
    command
}

fn run(dir: &Path, args: &[&str]) -> Output {
    server(dir).args(args).output().expect("the binary runs")
}

#[test]
fn a_bad_config_file_exits_2_naming_the_key_and_its_line() {
    let dir = scratch("bad");
    std::fs::write(
        dir.join("tickcast.toml"),
        "# a comment\nnpcs = 10\n\narena = 5000\n",
    )
    .unwrap();
    let out = run(&dir, &["--config", "tickcast.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("tickcast.toml:4: arena: must be 1 to 1023 (got 5000)"),
        "{stderr}"
    );

    std::fs::write(dir.join("typo.toml"), "npcs = 10\ntick_rate = 60\n").unwrap();
    let out = run(&dir, &["--config", "typo.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("typo.toml:2: tick_rate: unknown field `tick_rate`"),
        "{stderr}"
    );

    // The same range from a flag: the same message, the same exit code.
    let out = run(&dir, &["--arena", "5000"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--arena: must be 1 to 1023 (got 5000)"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn print_config_prints_a_file_that_loads_back_to_itself_with_flags_over_the_file() {
    let dir = scratch("print");
    std::fs::write(dir.join("base.toml"), "npcs = 10\ntick-rate = 60\n").unwrap();
    let out = run(
        &dir,
        &[
            "--config",
            "base.toml",
            "--tick-rate",
            "20",
            "--print-config",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed.contains("tick-rate = 20\n"),
        "the flag wins: {printed}"
    );
    assert!(
        printed.contains("npcs = 10\n"),
        "the file fills the rest: {printed}"
    );
    assert!(
        printed.contains("max-clients = 2000\n"),
        "then the defaults: {printed}"
    );
    std::fs::write(dir.join("printed.toml"), &printed).unwrap();
    let again = run(&dir, &["--config", "printed.toml", "--print-config"]);
    assert_eq!(String::from_utf8(again.stdout).unwrap(), printed);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs the server on a free port until its first status line, stops it with SIGTERM,
/// and returns its exit code and every line it wrote to stderr. Also checks it wrote
/// nothing to stdout.
fn run_until_a_status_line(name: &str, log_format: &str) -> (Option<i32>, Vec<String>) {
    let dir = scratch(name);
    let mut child = server(&dir)
        .args(["--listen", "127.0.0.1:0", "--npcs", "20"])
        .args(["--log-format", log_format])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let (send, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.iter().any(|l: &String| l.contains("tickcast::status")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("no status line in 30 s: {seen:#?}");
            }
        }
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill(1) exists");
    assert!(killed.success());
    let stdout = child.stdout.take().unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    seen.extend(lines.try_iter());
    let stdout = std::io::read_to_string(stdout).unwrap();
    assert_eq!(stdout, "", "logs go to stderr; stdout stays empty");
    let _ = std::fs::remove_dir_all(&dir);
    (status.code(), seen)
}

#[test]
fn json_logs_are_one_object_a_line_with_the_status_as_numeric_fields() {
    let (code, lines) = run_until_a_status_line("json", "json");
    assert_eq!(code, Some(0), "{lines:#?}");
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let status = events
        .iter()
        .find(|e| e["target"] == "tickcast::status")
        .expect("a status line");
    assert!(status["clients"].is_u64(), "{status}");
    for field in [
        "tick",
        "entities",
        "tick_p99_us",
        "fanout_mean_us",
        "fanout_max_us",
        "out_bytes_per_s",
        "rss_bytes",
        "skipped_peer_ticks",
        "late_ticks",
    ] {
        assert!(status[field].is_u64(), "{field} in {status}");
    }
    assert!(status["rss_bytes"].as_u64() > Some(0));
    // Allocations are reported only by a build that counts them.
    let counted = cfg!(feature = "count-allocs");
    assert_eq!(status["allocs"].is_u64(), counted, "{status}");
    assert_eq!(status["fanout_allocs"].is_u64(), counted, "{status}");
    let fingerprint = events
        .iter()
        .find(|e| e["message"] == "certificate fingerprint")
        .expect("the fingerprint line");
    let hex = fingerprint["sha256"].as_str().unwrap();
    assert!(hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(events.last().unwrap()["message"], "stopped");
}

#[test]
fn text_logs_into_a_pipe_have_no_colour_and_the_status_line_reads_as_documented() {
    let (code, lines) = run_until_a_status_line("text", "text");
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(
        lines.iter().all(|line| !line.contains('\x1b')),
        "no ANSI codes when stderr is not a terminal: {lines:#?}"
    );
    let status = lines
        .iter()
        .find(|line| line.contains(" INFO tickcast::status: "))
        .expect("a status line");
    // The shape scripts/bench.py's parser reads.
    let fields: Vec<&str> = status
        .split(": ")
        .nth(1)
        .unwrap()
        .split(' ')
        .map(|field| field.split('=').next().unwrap())
        .collect();
    assert_eq!(
        fields[..10],
        [
            "clients",
            "tick",
            "entities",
            "tick_p99_us",
            "fanout_mean_us",
            "fanout_max_us",
            "out_bytes_per_s",
            "rss_bytes",
            "skipped_peer_ticks",
            "late_ticks"
        ]
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("tickcast-server listening on 127.0.0.1:"))
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("INFO tickcast_server: certificate fingerprint sha256=")),
        "{lines:#?}"
    );
}
