//! The memory budget (design rule 4): how many bytes this server may use, where that
//! figure came from, and how many clients fit in it.
//!
//! The budget is, in order: the configured value (`--memory-budget`), else the smallest
//! memory limit on this process's own cgroup and its ancestors (cgroup v2 `memory.max` and
//! `memory.high`, cgroup v1 `memory.limit_in_bytes`; see [`cgroup`]), else the host's
//! total memory — and never more than the host has. The server measures its own resident
//! set once at start (the world, the pools and the channels are allocated by then) and
//! admits `(budget − baseline − headroom) / per-client cost` clients.
//!
//! Everything that interprets a file is a pure function over its text, tested with the
//! text; [`detect_budget`] and [`resident_set_bytes`] are the only readers of the files.

pub mod cgroup;

use std::fmt;
use std::path::Path;

pub use cgroup::{CgroupLimit, CgroupVersion, find_cgroup_limit};

use crate::SOCKET_BUFFER_BYTES;

/// The host's memory (`MemTotal`).
pub const PROC_MEMINFO: &str = "/proc/meminfo";
/// This process's resident set (`VmRSS`).
pub const PROC_SELF_STATUS: &str = "/proc/self/status";

/// Server memory per connected client besides its datagram buffers: the quinn connection
/// (congestion and loss state, packet space, the rustls session), the connection's tokio
/// task, the peer-map entry and the player's entity. Measured, not derived: a release
/// `tickcast-server` (20 NPCs) went from 8.2 to 22.0 MiB of RSS with 300 connected
/// `tickcast-bots` at 5 Hz (tiny ticks, so the datagram queues stayed empty): 47 KiB a
/// client; 100 bots at 30 Hz gave 49 KiB. Rounded to 48 KiB.
pub const CONNECTION_OVERHEAD_BYTES: u64 = 48 * 1024;

/// Connections allowed in the handshake beyond the clients the budget admits, so a client
/// over the budget still completes TLS and reads an `over_memory_budget` Reject instead of
/// a bare refusal. More than that are refused before TLS. Their cost is in [`HEADROOM_BYTES`].
pub const HANDSHAKES_BEYOND_BUDGET: usize = 32;

/// Memory kept out of the clients' share:
/// * the server socket's kernel buffers (2 × [`SOCKET_BUFFER_BYTES`]): a memory cgroup
///   charges socket memory to the container, but it is not in the process's RSS;
/// * 8 MiB for what grows without a client to pin it on: allocator fragmentation, the
///   snapshot pool growing by 14 bytes a player, logging, rustls and tokio scratch;
/// * the connections in the handshake ([`HANDSHAKES_BEYOND_BUDGET`]).
pub const HEADROOM_BYTES: u64 = 2 * SOCKET_BUFFER_BYTES as u64
    + 8 * 1024 * 1024
    + HANDSHAKES_BEYOND_BUDGET as u64 * CONNECTION_OVERHEAD_BYTES;

/// What a limit file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// No limit is set at this level.
    Unlimited,
    /// At most this many bytes.
    Bytes(u64),
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
pub fn parse_meminfo_total(text: &str) -> Option<u64> {
    kib_field(text, "MemTotal:")
}

/// `VmRSS` from `/proc/<pid>/status`, in bytes.
pub fn parse_vm_rss(text: &str) -> Option<u64> {
    kib_field(text, "VmRSS:")
}

/// A `Name:   1234 kB` line of a procfs file, in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with(name))?;
    let mut words = line[name.len()..].split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => kib.checked_mul(1024),
        _ => None,
    }
}

/// A byte size the user wrote that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{text}' is not a byte size: {why} (write e.g. 512MiB, 2GiB or 1500000000; \
     KiB/MiB/GiB and k/m/g are powers of 1024, kB/MB/GB powers of 1000)"
)]
pub struct ByteSizeError {
    text: String,
    why: &'static str,
}

/// Parses a byte size: a whole number with an optional unit (`512MiB`, `2g`, `4096`).
/// `KiB`, `MiB`, `GiB`, `TiB` (also `Ki`…, and the bare `k`, `m`, `g`, `t` Docker and
/// cgroups use) are powers of 1024; `kB`, `MB`, `GB`, `TB` are powers of 1000. Units are
/// case-insensitive. Zero is refused: a server with no memory serves no one.
pub fn parse_bytes(text: &str) -> Result<u64, ByteSizeError> {
    let error = |why| ByteSizeError {
        text: text.to_owned(),
        why,
    };
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits_end);
    if number.is_empty() {
        return Err(error("it does not start with a whole number"));
    }
    let number: u64 = number
        .parse()
        .map_err(|_| error("the number is too large"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kib" => 1 << 10,
        "m" | "mi" | "mib" => 1 << 20,
        "g" | "gi" | "gib" => 1 << 30,
        "t" | "ti" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(error("unknown unit")),
    };
    let bytes = number
        .checked_mul(multiplier)
        .ok_or_else(|| error("the size is too large"))?;
    if bytes == 0 {
        return Err(error("the size must be more than zero"));
    }
    Ok(bytes)
}

/// Bytes as B, KiB, MiB or GiB with one decimal, for logs and status lines.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

/// Where the budget came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BudgetSource {
    /// `--memory-budget` / `NetConfig::memory_budget`.
    Configured,
    /// The smallest limit on this process's cgroup and its ancestors: which file of which
    /// group.
    Cgroup(CgroupLimit),
    /// The host's total memory (no cgroup limit, or one above what the host has).
    HostMemory,
}

impl BudgetSource {
    /// A short stable name for a metrics label: `configured`, `cgroup_v1`, `cgroup_v2` or
    /// `host`.
    pub fn kind(&self) -> &'static str {
        match self {
            BudgetSource::Configured => "configured",
            BudgetSource::Cgroup(limit) => match limit.version {
                CgroupVersion::V1 => "cgroup_v1",
                CgroupVersion::V2 => "cgroup_v2",
            },
            BudgetSource::HostMemory => "host",
        }
    }

    /// The cgroup limit, when the budget is one.
    pub fn cgroup(&self) -> Option<&CgroupLimit> {
        match self {
            BudgetSource::Cgroup(limit) => Some(limit),
            _ => None,
        }
    }
}

impl fmt::Display for BudgetSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BudgetSource::Configured => f.write_str("configured"),
            BudgetSource::Cgroup(limit) => limit.fmt(f),
            BudgetSource::HostMemory => f.write_str("host MemTotal: no cgroup limits this process"),
        }
    }
}

/// The memory this server may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryBudget {
    /// Bytes.
    pub bytes: u64,
    /// Where the figure came from.
    pub source: BudgetSource,
}

/// The budget from the configured value or this machine's files; `None` when nothing says
/// (not Linux, no `/proc`): then only the client limit bounds admission.
pub fn detect_budget(configured: Option<u64>) -> Option<MemoryBudget> {
    detect_budget_with(configured, |path| std::fs::read_to_string(path).ok())
}

/// [`detect_budget`] over any file reader (`path → contents`), so it can be tested with
/// the contents of other machines' files.
pub fn detect_budget_with(
    configured: Option<u64>,
    read: impl Fn(&Path) -> Option<String>,
) -> Option<MemoryBudget> {
    let container = find_cgroup_limit(&read).map(|limit| MemoryBudget {
        bytes: limit.bytes,
        source: BudgetSource::Cgroup(limit),
    });
    let host = read(Path::new(PROC_MEMINFO))
        .as_deref()
        .and_then(parse_meminfo_total)
        .map(|bytes| MemoryBudget {
            bytes,
            source: BudgetSource::HostMemory,
        });
    // A cgroup limit above the host's memory cannot be reached: the host is the limit.
    let detected = match (container, host) {
        (Some(container), Some(host)) if host.bytes < container.bytes => Some(host),
        (Some(container), _) => Some(container),
        (None, host) => host,
    };
    match (configured, detected) {
        (Some(bytes), detected) => {
            if let Some(detected) = detected
                && bytes > detected.bytes
            {
                tracing::warn!(
                    "the configured memory budget {} is above the {} of {}; the kernel will \
                     enforce the smaller one",
                    format_bytes(bytes),
                    detected.source,
                    format_bytes(detected.bytes)
                );
            }
            Some(MemoryBudget {
                bytes,
                source: BudgetSource::Configured,
            })
        }
        (None, detected) => detected,
    }
}

/// This process's resident set size in bytes; 0 where `/proc` is not available.
pub fn resident_set_bytes() -> u64 {
    std::fs::read_to_string(PROC_SELF_STATUS)
        .ok()
        .as_deref()
        .and_then(parse_vm_rss)
        .unwrap_or(0)
}

/// How the budget is shared out: fixed at start, logged, and checked at every admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPlan {
    /// The budget, if one is known.
    pub budget: Option<MemoryBudget>,
    /// Resident set measured when the network layer started, before any client.
    pub baseline_rss: u64,
    /// Kept out of the clients' share ([`HEADROOM_BYTES`]).
    pub headroom: u64,
    /// The most a peer's datagram send queue holds (`NetConfig::datagram_send_buffer`).
    /// A stuck peer can also keep alive the rest of one partly sent tick, which is never
    /// larger than the buffer (the fan-out hands a peer only ticks that fit), so a client
    /// is charged twice this.
    pub datagram_send_buffer: u64,
    /// The most a peer's datagram receive queue holds.
    pub datagram_receive_buffer: u64,
    /// Everything else a client costs ([`CONNECTION_OVERHEAD_BYTES`]).
    pub connection_overhead: u64,
    /// Clients the budget admits; `usize::MAX` without a budget.
    pub clients: usize,
}

impl MemoryPlan {
    /// Shares `budget` out: `(budget − baseline − headroom) / per-client cost` clients, 0
    /// if the baseline and headroom already exceed it.
    pub fn new(
        budget: Option<MemoryBudget>,
        baseline_rss: u64,
        datagram_send_buffer: u64,
        datagram_receive_buffer: u64,
    ) -> Self {
        let mut plan = Self {
            budget,
            baseline_rss,
            headroom: HEADROOM_BYTES,
            datagram_send_buffer,
            datagram_receive_buffer,
            connection_overhead: CONNECTION_OVERHEAD_BYTES,
            clients: usize::MAX,
        };
        if let Some(budget) = &plan.budget {
            let room = budget
                .bytes
                .saturating_sub(baseline_rss)
                .saturating_sub(plan.headroom);
            plan.clients = usize::try_from(room / plan.per_client().max(1)).unwrap_or(usize::MAX);
        }
        plan
    }

    /// What one more client may cost at most.
    pub fn per_client(&self) -> u64 {
        self.datagram_send_buffer
            .saturating_mul(2)
            .saturating_add(self.datagram_receive_buffer)
            .saturating_add(self.connection_overhead)
    }

    /// Connections (admitted or in the handshake) beyond which new ones are refused before
    /// TLS.
    pub fn connection_limit(&self) -> usize {
        self.clients.saturating_add(HANDSHAKES_BEYOND_BUDGET)
    }
}

impl fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(budget) = &self.budget else {
            return write!(
                f,
                "no memory budget known (no cgroup limit, no /proc/meminfo); baseline RSS {}, \
                 {} per client",
                format_bytes(self.baseline_rss),
                format_bytes(self.per_client())
            );
        };
        write!(
            f,
            "memory budget {} ({}): baseline RSS {}, headroom {}, {} per client \
             (2 × send buffer {} + receive buffer {} + connection {}): room for {} clients",
            format_bytes(budget.bytes),
            budget.source,
            format_bytes(self.baseline_rss),
            format_bytes(self.headroom),
            format_bytes(self.per_client()),
            format_bytes(self.datagram_send_buffer),
            format_bytes(self.datagram_receive_buffer),
            format_bytes(self.connection_overhead),
            self.clients
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn procfs_kib_fields_parse_to_bytes() {
        let meminfo = "MemTotal:       24684092 kB\nMemFree:        20189272 kB\n";
        assert_eq!(parse_meminfo_total(meminfo), Some(24_684_092 * 1024));
        let status = "Name:\ttickcast-server\nVmPeak:\t  100 kB\nVmRSS:\t    8152 kB\n";
        assert_eq!(parse_vm_rss(status), Some(8152 * 1024));
        assert_eq!(parse_vm_rss("VmRSS: 12 MB\n"), None, "only kB is defined");
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn byte_sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 * MIB));
        assert_eq!(parse_bytes("512 mib"), Ok(512 * MIB));
        assert_eq!(parse_bytes("512m"), Ok(512 * MIB));
        assert_eq!(parse_bytes("2Gi"), Ok(2048 * MIB));
        assert_eq!(parse_bytes("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("64kB"), Ok(64_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("1TiB"), Ok(1 << 40));
        for bad in [
            "",
            "MiB",
            "0",
            "0MiB",
            "1.5GiB",
            "12 parsecs",
            "-1",
            "99999999999TiB",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} parsed");
        }
    }

    const HOST_24_GIB: &str = "MemTotal:       25165824 kB\n";

    /// This machine's layout (cgroup v1, a v2 tree without controllers) with the process
    /// in `/job/child` and `limits` as (group directory below the memory mount, value).
    fn v1_machine(limits: &[(&'static str, &'static str)]) -> Vec<(String, String)> {
        let mut entries = vec![
            (
                cgroup::PROC_SELF_CGROUP.to_owned(),
                "4:memory:/job/child\n1:cpu:/\n0::/\n".to_owned(),
            ),
            (
                cgroup::PROC_SELF_MOUNTINFO.to_owned(),
                "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                 41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
                    .to_owned(),
            ),
            (PROC_MEMINFO.to_owned(), HOST_24_GIB.to_owned()),
        ];
        for (group, value) in limits {
            entries.push((
                format!("/sys/fs/cgroup/memory{group}/memory.limit_in_bytes"),
                (*value).to_owned(),
            ));
        }
        entries
    }

    fn reader(entries: Vec<(String, String)>) -> impl Fn(&Path) -> Option<String> {
        let map: HashMap<String, String> = entries.into_iter().collect();
        move |path| map.get(path.to_str()?).cloned()
    }

    #[test]
    fn the_budget_is_config_then_the_smallest_cgroup_limit_then_the_host() {
        const UNLIMITED: &str = "9223372036854771712\n";
        let gib = 1024 * MIB;
        let nested = || {
            reader(v1_machine(&[
                ("", UNLIMITED),
                ("/job", "100663296\n"),
                ("/job/child", UNLIMITED),
            ]))
        };

        let configured = detect_budget_with(Some(512 * MIB), nested()).unwrap();
        assert_eq!(
            configured,
            MemoryBudget {
                bytes: 512 * MIB,
                source: BudgetSource::Configured
            }
        );
        let detected = detect_budget_with(None, nested()).unwrap();
        assert_eq!(detected.bytes, 96 * MIB);
        let limit = detected.source.cgroup().expect("from the cgroup");
        assert_eq!(detected.source.kind(), "cgroup_v1");
        assert_eq!(limit.process_group, "/job/child");
        assert_eq!(limit.limiting_group, "/job");
        assert_eq!(
            limit.file,
            Path::new("/sys/fs/cgroup/memory/job/memory.limit_in_bytes")
        );

        // This machine with no limit anywhere: the host.
        let host = detect_budget_with(
            None,
            reader(v1_machine(&[
                ("", UNLIMITED),
                ("/job", UNLIMITED),
                ("/job/child", UNLIMITED),
            ])),
        )
        .unwrap();
        assert_eq!(
            host,
            MemoryBudget {
                bytes: 24 * gib,
                source: BudgetSource::HostMemory
            }
        );
        assert_eq!(host.source.kind(), "host");

        // A cgroup limit above the host's memory is the host's memory.
        assert_eq!(
            detect_budget_with(None, reader(v1_machine(&[("/job", "107374182400")])))
                .unwrap()
                .source,
            BudgetSource::HostMemory
        );
        // Unreadable limit files are skipped, not fatal.
        assert_eq!(
            detect_budget_with(None, reader(v1_machine(&[("/job/child", "garbage")])))
                .unwrap()
                .source,
            BudgetSource::HostMemory
        );
        assert_eq!(detect_budget_with(None, reader(Vec::new())), None);
        assert_eq!(
            detect_budget_with(Some(gib), reader(Vec::new())).unwrap(),
            MemoryBudget {
                bytes: gib,
                source: BudgetSource::Configured
            }
        );
    }

    #[test]
    fn the_plan_admits_what_fits_after_baseline_and_headroom() {
        let budget = |bytes| {
            Some(MemoryBudget {
                bytes,
                source: BudgetSource::Configured,
            })
        };
        let send = 64 * 1024;
        let receive = 1024;
        let per_client = 2 * send + receive + CONNECTION_OVERHEAD_BYTES;
        let baseline = 30 * MIB;

        let plan = MemoryPlan::new(
            budget(baseline + HEADROOM_BYTES + 3 * per_client + per_client / 2),
            baseline,
            send,
            receive,
        );
        assert_eq!(plan.per_client(), per_client);
        assert_eq!(plan.clients, 3);
        assert_eq!(plan.connection_limit(), 3 + HANDSHAKES_BEYOND_BUDGET);

        // Baseline and headroom alone over the budget: nobody fits, nothing underflows.
        assert_eq!(
            MemoryPlan::new(budget(MIB), baseline, send, receive).clients,
            0
        );
        // No budget known: the client limit alone decides.
        assert_eq!(
            MemoryPlan::new(None, baseline, send, receive).clients,
            usize::MAX
        );
        assert!(plan.to_string().contains("room for 3 clients"), "{plan}");
    }

    #[test]
    fn format_bytes_picks_a_unit() {
        assert_eq!(format_bytes(512), "512B");
        assert_eq!(format_bytes(1536), "1.5KiB");
        assert_eq!(format_bytes(3 * MIB), "3.0MiB");
    }
}
