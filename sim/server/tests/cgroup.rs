//! The memory budget inside a real memory cgroup (issue #12): the `tickcast-server`
//! binary, started in a child group whose parent is limited to 96 MiB (the child itself
//! to 256 MiB), must budget the parent's 96 MiB — read from the parent's
//! `memory.limit_in_bytes`, not the unlimited mount root, not the host's memory — and say
//! how many clients fit in it.
//!
//! Needs root and the cgroup v1 memory controller (this project's CI machine). The groups
//! are made inside this test process's own memory group and removed afterwards. Where
//! the controller is missing or not writable the test fails and says why; set
//! `TICKCAST_SKIP_CGROUP_TEST=1` to skip it on purpose.
//!
//! A test binary of its own: it starts a process and waits for its log, and it is the
//! only test that needs root.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tickcast_net::NetConfig;
use tickcast_net::budget::cgroup::{
    CgroupVersion, PROC_SELF_CGROUP, PROC_SELF_MOUNTINFO, parse_mountinfo_cgroups,
    parse_proc_self_cgroup,
};
use tickcast_net::budget::{BudgetSource, CgroupLimit, MemoryBudget, MemoryPlan};
use tickcast_server::tick_buffer_size;
use tickcast_sim::SimConfig;

const MIB: u64 = 1 << 20;
const PARENT_LIMIT: u64 = 96 * MIB;
const CHILD_LIMIT: u64 = 256 * MIB;
const NPCS: u32 = 20;
const SKIP_VARIABLE: &str = "TICKCAST_SKIP_CGROUP_TEST";
const PATIENCE: Duration = Duration::from_secs(60);

/// This process's own cgroup v1 memory group: its directory and its path in the
/// hierarchy, or why it cannot be used.
fn own_memory_group() -> Result<(PathBuf, String), String> {
    let read =
        |path: &str| std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"));
    let group = parse_proc_self_cgroup(&read(PROC_SELF_CGROUP)?)
        .into_iter()
        .find(|m| m.version == CgroupVersion::V1)
        .ok_or("no cgroup v1 memory controller in /proc/self/cgroup (a cgroup v2-only machine?)")?
        .group;
    let mount = parse_mountinfo_cgroups(&read(PROC_SELF_MOUNTINFO)?)
        .into_iter()
        .find(|m| m.version == CgroupVersion::V1)
        .ok_or("the cgroup v1 memory controller is not mounted (no such line in mountinfo)")?;
    let relative = group
        .strip_prefix(mount.root.trim_end_matches('/'))
        .ok_or_else(|| format!("group {group} is not under the mount's root {}", mount.root))?;
    Ok((
        mount.mount_point.join(relative.trim_start_matches('/')),
        group,
    ))
}

/// The two groups and the server in them; on drop, the server is killed and reaped and
/// the groups removed (a group can be removed only once no process is left in it).
struct TestGroups {
    parent: PathBuf,
    child: PathBuf,
    server: Option<Child>,
}

impl TestGroups {
    fn create(base: &Path, name: &str) -> Result<Self, String> {
        let parent = base.join(name);
        std::fs::create_dir(&parent).map_err(|e| {
            format!(
                "cannot create the memory cgroup {} ({e}): the test needs root and a \
                 writable cgroup v1 memory controller",
                parent.display()
            )
        })?;
        let groups = Self {
            child: parent.join("server"),
            parent,
            server: None,
        };
        write(&groups.parent.join("memory.limit_in_bytes"), PARENT_LIMIT)?;
        std::fs::create_dir(&groups.child)
            .map_err(|e| format!("cannot create {}: {e}", groups.child.display()))?;
        write(&groups.child.join("memory.limit_in_bytes"), CHILD_LIMIT)?;
        Ok(groups)
    }
}

fn write(path: &Path, value: u64) -> Result<(), String> {
    std::fs::write(path, value.to_string())
        .map_err(|e| format!("cannot write {value} to {}: {e}", path.display()))
}

impl Drop for TestGroups {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
        for group in [&self.child, &self.parent] {
            // The kernel may take a moment to let go of a group whose last process just
            // exited.
            for _ in 0..50 {
                if std::fs::remove_dir(group).is_ok() || !group.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if group.exists() {
                eprintln!("could not remove the test cgroup {}", group.display());
            }
        }
    }
}

/// `name=value` from a log line (the server's tracing fields), without quotes.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    let value = line[start..].split_whitespace().next()?;
    Some(value.trim_matches('"'))
}

fn number(line: &str, name: &str) -> u64 {
    field(line, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {name}= in the plan line: {line}"))
}

/// Removes ANSI colour codes, in case the subscriber writes them into the pipe.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn a_server_in_a_nested_memory_cgroup_budgets_its_parents_limit() {
    if std::env::var(SKIP_VARIABLE).is_ok_and(|v| v == "1") {
        eprintln!("{SKIP_VARIABLE}=1: the cgroup test is skipped");
        return;
    }
    let how_to_skip = format!("(set {SKIP_VARIABLE}=1 to skip this test on purpose)");
    let (base, own_group) = own_memory_group()
        .unwrap_or_else(|why| panic!("no memory cgroup to test in: {why} {how_to_skip}"));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!("tickcast-cgroup-test-{}-{nanos}", std::process::id());
    let mut groups =
        TestGroups::create(&base, &name).unwrap_or_else(|why| panic!("{why} {how_to_skip}"));
    let parent_group = format!("{}/{name}", own_group.trim_end_matches('/'));
    let child_group = format!("{parent_group}/server");

    let data_dir = std::env::temp_dir().join(format!("tickcast-cgroup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    // The shell moves itself into the child group, then becomes the server: the server
    // starts inside the group, as a container's process does.
    let mut server = Command::new("sh")
        .args(["-c", r#"echo $$ > "$1" && shift && exec "$@""#, "sh"])
        .arg(groups.child.join("cgroup.procs"))
        .arg(env!("CARGO_BIN_EXE_tickcast-server"))
        .args(["--listen", "127.0.0.1:0", "--npcs", &NPCS.to_string()])
        .arg("--data-dir")
        .arg(&data_dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting sh");
    // The server logs to stderr.
    let log_pipe = server.stderr.take().expect("piped stderr");
    let pid = server.id();
    groups.server = Some(server);
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(log_pipe).lines().map_while(Result::ok) {
            if lines_tx.send(plain(&line)).is_err() {
                break;
            }
        }
    });

    let mut log = Vec::new();
    let mut plan_line = None;
    while plan_line.is_none() || !log.iter().any(|l: &String| l.contains("listening on")) {
        match lines.recv_timeout(PATIENCE) {
            Ok(line) => {
                if line.contains("memory budget") && line.contains("room for") {
                    plan_line = Some(line.clone());
                }
                log.push(line);
            }
            Err(_) => panic!(
                "the server did not log its memory plan and start listening within {PATIENCE:?}; \
                 its log:\n{}",
                log.join("\n")
            ),
        }
    }
    let plan_line = plan_line.expect("seen");
    eprintln!("the plan the server logged: {plan_line}");

    // It runs in the child group.
    let procs = std::fs::read_to_string(groups.child.join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|p| p.trim() == pid.to_string()),
        "server {pid} is not in {}: {procs}",
        groups.child.display()
    );

    // The budget is the parent's limit, named by its file and group.
    let parent_file = groups.parent.join("memory.limit_in_bytes");
    assert_eq!(
        number(&plan_line, "budget_bytes"),
        PARENT_LIMIT,
        "{plan_line}"
    );
    assert_eq!(
        field(&plan_line, "budget_source"),
        Some("cgroup_v1"),
        "{plan_line}"
    );
    assert!(
        plan_line.contains("memory budget 96.0MiB (cgroup v1"),
        "{plan_line}"
    );
    assert!(
        plan_line.contains(&format!(
            "{} of group {parent_group}, an ancestor of this process's group {child_group}",
            parent_file.display()
        )),
        "{plan_line}"
    );

    // The clients it says fit are the plan for 96 MiB, its baseline and its world.
    let baseline = number(&plan_line, "baseline_rss_bytes");
    let clients = number(&plan_line, "clients");
    let net = NetConfig::default();
    let expected = MemoryPlan::new(
        Some(MemoryBudget {
            bytes: PARENT_LIMIT,
            source: BudgetSource::Cgroup(CgroupLimit {
                bytes: PARENT_LIMIT,
                version: CgroupVersion::V1,
                process_group: child_group.clone(),
                limiting_group: parent_group.clone(),
                file: parent_file.clone(),
            }),
        }),
        baseline,
        tick_buffer_size(
            &SimConfig {
                npcs: NPCS,
                ..SimConfig::default()
            },
            tickcast_shared::chunk::ENTITY_RECORD_LEN,
        ),
        net.datagram_send_buffer as u64,
        net.datagram_receive_buffer as u64,
        net.max_clients,
    );
    assert_eq!(
        clients, expected.clients as u64,
        "{plan_line}\nexpected {expected}"
    );
    assert_eq!(
        number(&plan_line, "per_client_bytes"),
        expected.per_client()
    );
    assert!(
        plan_line.contains(&format!("room for {clients} clients")),
        "{plan_line}"
    );
    // Sanity: a debug server's baseline is tens of MiB, so 96 MiB holds hundreds of
    // clients, not the host's tens of thousands.
    assert!(
        (100..2000).contains(&clients),
        "{clients} clients in 96 MiB: {plan_line}"
    );

    drop(groups);
    let _ = std::fs::remove_dir_all(&data_dir);
}
