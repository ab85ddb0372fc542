//! The memory budget (design rule 4): how many bytes this server may use, where that
//! figure came from, and how many clients fit in it.
//!
//! The budget is, in order: the configured value (`--memory-budget`), else the smallest
//! memory limit on this process's own cgroup and its ancestors (cgroup v2 `memory.max` and
//! `memory.high`, cgroup v1 `memory.limit_in_bytes`; see [`cgroup`]), else the host's
//! total memory — and never more than the host has. The server measures its own resident
//! set once at start (the world, the pools and the channels are allocated by then) and
//! plans for the most clients whose charges fit in `budget − baseline − headroom`
//! ([`MemoryPlan`]); at each admission it measures again ([`MeasuredBudget`]).
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

/// Server memory per connected client besides the tick buffers its send queue keeps
/// alive: the quinn connection (congestion and loss state, packet space, the rustls
/// session, its datagram queues' bookkeeping), the connection's tokio task, the peer-map
/// entry and the player's entity. Measured, not derived: a release `tickcast-server` (20
/// NPCs) went from 8.2 to 22.0 MiB of RSS with 300 connected `tickcast-bots` at 5 Hz
/// (tiny ticks, so the datagram queues stayed empty): 47 KiB a client; 100 bots at 30 Hz
/// gave 49 KiB. Rounded to 48 KiB.
pub const CONNECTION_OVERHEAD_BYTES: u64 = 48 * 1024;

/// Whole tick buffers one stalled peer can keep alive. A queued datagram is a slice of
/// the sim's tick buffer, and a slice keeps the *whole* buffer allocated, not just its
/// own bytes; the fan-out hands a peer a tick only into an empty queue and holds at most
/// the newest beside it ([`crate::fanout::offer_tick`]; the `quinn-endpoint` build: only
/// while nothing older than its last tick is queued, [`crate::fanout::decide_tick_for_peer`]),
/// so a peer that stops acknowledging holds at most two ticks. Peers that stall at the same moment
/// share those buffers; peers that stall at different moments each hold their own.
pub const TICKS_A_STALLED_PEER_PINS: u64 = 2;

/// Connections allowed in the handshake beyond the clients the budget admits, so a client
/// over the budget still completes TLS and reads an `over_memory_budget` Reject instead of
/// a bare refusal. More than that are refused before TLS. Their cost is in the headroom.
pub const HANDSHAKES_BEYOND_BUDGET: usize = 32;

/// Slack kept out of the clients' share for what grows without a client to pin it on:
/// allocator fragmentation, logging, rustls and tokio scratch.
pub const SLACK_BYTES: u64 = 8 * 1024 * 1024;

/// How long a measured resident set stands for the current one at admission: a connect
/// storm reads `/proc/self/status` at most ten times a second, and in 100 ms the server
/// admits few enough clients that the charge of those in flight covers them.
pub const RSS_SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Memory kept out of the clients' share under a budget from `source`:
/// * the server socket's kernel buffers (2 × [`SOCKET_BUFFER_BYTES`]), which are not in
///   the process's RSS. A cgroup v2 limit (and a configured budget, which may stand for
///   one) charges them to the group; cgroup v1 does not charge UDP socket memory (only
///   TCP's, and only once `memory.kmem.tcp.limit_in_bytes` is set — measured: 3.6 MB
///   queued on a UDP socket inside a v1 group left its `memory.usage_in_bytes`
///   unchanged), so under a v1 limit they are left out;
/// * [`SLACK_BYTES`];
/// * the connections in the handshake ([`HANDSHAKES_BEYOND_BUDGET`]).
pub fn headroom_bytes(source: &BudgetSource) -> u64 {
    let sockets = match source {
        BudgetSource::Cgroup(limit) if limit.version == CgroupVersion::V1 => 0,
        _ => 2 * SOCKET_BUFFER_BYTES as u64,
    };
    sockets + SLACK_BYTES + HANDSHAKES_BEYOND_BUDGET as u64 * CONNECTION_OVERHEAD_BYTES
}

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

/// How big the sim's tick buffers get, as a function of the players in the world: the
/// unit of memory a stalled peer keeps alive ([`TICKS_A_STALLED_PEER_PINS`] of them).
/// An upper bound the server derives from its simulation's config (cells, chunk size,
/// NPCs, the snapshot pool's growth); the network layer only evaluates it.
///
/// Projectiles are not in it: a player can have several in flight (7 at the default
/// fire rate and range), and a world where every player fires without pause makes
/// ticks several times larger than this. Charging every client for that would refuse
/// most of the clients that fit in every other world; the measured check at admission
/// ([`MeasuredBudget::admits`]) sees such a world's memory instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickBufferSize {
    /// Bytes of a tick buffer in a world without players.
    pub without_players: u64,
    /// Bytes each player adds.
    pub per_player: u64,
    /// The smallest buffer the pool holds, whatever the world (it starts sized for more
    /// players than a small world has).
    pub least: u64,
}

impl TickBufferSize {
    /// The largest tick buffer of a world with `players` players.
    pub fn with_players(&self, players: usize) -> u64 {
        self.per_player
            .saturating_mul(players as u64)
            .saturating_add(self.without_players)
            .max(self.least)
    }
}

/// The measured part of admission: this process's resident set, read at most once per
/// [`RSS_SAMPLE_INTERVAL`]. The clock and the reader are passed in.
#[derive(Debug, Clone, Copy, Default)]
pub struct RssSample {
    last: Option<(std::time::Instant, u64)>,
}

impl RssSample {
    /// The resident set as of `now`: the last reading if it is recent enough, else
    /// `read()`.
    pub fn bytes(&mut self, now: std::time::Instant, read: impl FnOnce() -> u64) -> u64 {
        match self.last {
            Some((at, bytes)) if now.saturating_duration_since(at) < RSS_SAMPLE_INTERVAL => bytes,
            _ => {
                let bytes = read();
                self.last = Some((now, bytes));
                bytes
            }
        }
    }
}

/// The measured check's refusal: the resident set, the headroom and the charge of the
/// clients joining, this one included, would pass the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    /// The resident set read.
    pub rss: u64,
    /// Clients being admitted besides this one.
    pub in_flight: usize,
}

impl fmt::Display for OverBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server's memory is {} and {} clients are joining: one more would pass its \
             memory budget",
            format_bytes(self.rss),
            self.in_flight
        )
    }
}

/// How the budget is shared out: fixed at start, logged, and checked at every admission.
///
/// A client is charged what it can keep allocated at worst: its connection
/// ([`CONNECTION_OVERHEAD_BYTES`]), its datagram receive buffer, and the
/// [`TICKS_A_STALLED_PEER_PINS`] whole tick buffers its send queue keeps alive when it
/// stops acknowledging, sized for the world with as many players as the plan admits. The
/// plan admits the most clients whose charges fit in `budget − baseline RSS − headroom`.
/// At each admission the resident set is also measured ([`MeasuredBudget::admits`]), so a
/// server that costs more than planned stops admitting before it passes the budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPlan {
    /// The budget, if one is known.
    pub budget: Option<MemoryBudget>,
    /// Resident set measured when the network layer started, before any client.
    pub baseline_rss: u64,
    /// Kept out of the clients' share ([`headroom_bytes`]).
    pub headroom: u64,
    /// The tick buffer model the charge is sized with.
    pub tick_buffer: TickBufferSize,
    /// quinn's cap on a peer's datagram send queue (`NetConfig::datagram_send_buffer`).
    /// Not charged: the fan-out keeps a queue to two of the peer's ticks, whose bytes are
    /// inside the tick buffers already charged; the cap only has to hold them.
    pub datagram_send_buffer: u64,
    /// The most a peer's datagram receive queue holds.
    pub datagram_receive_buffer: u64,
    /// Everything else a client costs ([`CONNECTION_OVERHEAD_BYTES`]).
    pub connection_overhead: u64,
    /// Clients the budget admits (the client limit may admit fewer); `usize::MAX`
    /// without a budget.
    pub clients: usize,
    /// Players the charge's world is sized for: the budget's clients, at most the client
    /// limit; 0 without a budget.
    pub world_players: usize,
}

impl MemoryPlan {
    /// Shares `budget` out: the most clients whose charges fit in `budget − baseline −
    /// headroom`, each charged for a world of that many players (never more than
    /// `max_clients`, the most the world can have); 0 if the baseline and headroom already
    /// exceed the budget. The count may pass `max_clients`: it says what the memory holds,
    /// and the client limit is checked on its own.
    pub fn new(
        budget: Option<MemoryBudget>,
        baseline_rss: u64,
        tick_buffer: TickBufferSize,
        datagram_send_buffer: u64,
        datagram_receive_buffer: u64,
        max_clients: usize,
    ) -> Self {
        let headroom = budget
            .as_ref()
            .map_or(0, |budget| headroom_bytes(&budget.source));
        let mut plan = Self {
            budget,
            baseline_rss,
            headroom,
            tick_buffer,
            datagram_send_buffer,
            datagram_receive_buffer,
            connection_overhead: CONNECTION_OVERHEAD_BYTES,
            clients: usize::MAX,
            world_players: 0,
        };
        if let Some(room) = plan.room_for_clients() {
            // The charge grows with the players (bigger ticks), so the clients that fit
            // are the largest n with n × charge(n) ≤ room: a binary search, as
            // n × charge(n) only grows with n, and the answer is at most room ÷ the
            // smallest charge.
            let charge = |n: usize| plan.per_client_at(n.min(max_clients));
            let fits = |n: usize| (n as u64).saturating_mul(charge(n)) <= room;
            let (mut low, mut high) = (
                0usize,
                usize::try_from(room / charge(0).max(1)).unwrap_or(usize::MAX),
            );
            while low < high {
                let mid = low + (high - low).div_ceil(2);
                if fits(mid) {
                    low = mid;
                } else {
                    high = mid - 1;
                }
            }
            plan.clients = low;
            plan.world_players = low.min(max_clients);
        }
        plan
    }

    /// `budget − baseline − headroom`, if there is a budget.
    fn room_for_clients(&self) -> Option<u64> {
        let budget = self.budget.as_ref()?;
        Some(
            budget
                .bytes
                .saturating_sub(self.baseline_rss)
                .saturating_sub(self.headroom),
        )
    }

    /// The budget in bytes, if one is known.
    pub fn budget_bytes(&self) -> Option<u64> {
        self.budget.as_ref().map(|budget| budget.bytes)
    }

    /// Where the budget came from, if one is known.
    pub fn source(&self) -> Option<&BudgetSource> {
        self.budget.as_ref().map(|budget| &budget.source)
    }

    /// What a stalled client can keep alive of the tick buffers in a world of `players`
    /// players.
    pub fn stalled_peer_pin_at(&self, players: usize) -> u64 {
        self.tick_buffer
            .with_players(players)
            .saturating_mul(TICKS_A_STALLED_PEER_PINS)
    }

    /// A client's charge in a world of `players` players.
    pub fn per_client_at(&self, players: usize) -> u64 {
        self.stalled_peer_pin_at(players)
            .saturating_add(self.datagram_receive_buffer)
            .saturating_add(self.connection_overhead)
    }

    /// A client's charge in the largest world the plan admits ([`Self::world_players`]):
    /// the most one more client may cost.
    pub fn per_client(&self) -> u64 {
        self.per_client_at(self.world_players)
    }

    /// Connections (admitted or in the handshake) beyond which new ones are refused before
    /// TLS.
    pub fn connection_limit(&self) -> usize {
        self.clients.saturating_add(HANDSHAKES_BEYOND_BUDGET)
    }

    /// The measured half of admission as plain numbers, for the Hello checks
    /// (`admission::Limits`); `None` without a budget.
    pub fn measured(&self) -> Option<MeasuredBudget> {
        Some(MeasuredBudget {
            budget: self.budget_bytes()?,
            headroom: self.headroom,
            per_client: self.per_client(),
        })
    }
}

/// The measured check at admission: the budget, the headroom and a client's charge
/// ([`MemoryPlan::measured`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeasuredBudget {
    /// The budget in bytes.
    pub budget: u64,
    /// Kept out of the clients' share.
    pub headroom: u64,
    /// A client's charge ([`MemoryPlan::per_client`]).
    pub per_client: u64,
}

impl MeasuredBudget {
    /// Refuses when `rss + headroom + (in_flight + 1) × charge` would pass the budget:
    /// the clients still joining (`in_flight`) and this one are charged on top of the
    /// resident set measured now, which does not hold their memory yet. The margin that
    /// catches a server costing more than its plan assumed.
    pub fn admits(&self, in_flight: usize, rss: u64) -> Result<(), OverBudget> {
        let joining = (in_flight as u64).saturating_add(1);
        let projected = rss
            .saturating_add(self.headroom)
            .saturating_add(joining.saturating_mul(self.per_client));
        if projected > self.budget {
            return Err(OverBudget { rss, in_flight });
        }
        Ok(())
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
             ({} × tick buffer {} a stalled client can keep alive + receive buffer {} + \
             connection {}): room for {} clients",
            format_bytes(budget.bytes),
            budget.source,
            format_bytes(self.baseline_rss),
            format_bytes(self.headroom),
            format_bytes(self.per_client()),
            TICKS_A_STALLED_PEER_PINS,
            format_bytes(self.tick_buffer.with_players(self.world_players)),
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

    const TICKS: TickBufferSize = TickBufferSize {
        without_players: 10_000,
        per_player: 100,
        least: 12_000,
    };

    fn configured(bytes: u64) -> Option<MemoryBudget> {
        Some(MemoryBudget {
            bytes,
            source: BudgetSource::Configured,
        })
    }

    #[test]
    fn the_tick_buffer_grows_with_the_players_above_the_pools_least() {
        assert_eq!(TICKS.with_players(0), 12_000, "the pool's least");
        assert_eq!(TICKS.with_players(20), 12_000);
        assert_eq!(TICKS.with_players(100), 20_000);
        assert_eq!(TICKS.with_players(usize::MAX), u64::MAX, "saturates");
    }

    #[test]
    fn the_plan_admits_the_most_clients_whose_charges_fit() {
        let receive = 1024;
        let baseline = 30 * MIB;
        let headroom = headroom_bytes(&BudgetSource::Configured);
        // A client's charge: connection, receive buffer, two whole tick buffers of the
        // world with that many players.
        let charge =
            |n: u64| CONNECTION_OVERHEAD_BYTES + receive + 2 * (10_000 + 100 * n).max(12_000);
        assert_eq!(charge(3), 49 * 1024 + 24_000);

        let plan = MemoryPlan::new(
            configured(baseline + headroom + 3 * charge(3) + charge(3) / 2),
            baseline,
            TICKS,
            64 * 1024,
            receive,
            2000,
        );
        assert_eq!(plan.headroom, headroom);
        assert_eq!(plan.clients, 3);
        assert_eq!(plan.per_client(), charge(3));
        assert_eq!(plan.per_client_at(200), charge(200));
        assert_eq!(plan.connection_limit(), 3 + HANDSHAKES_BEYOND_BUDGET);
        assert!(plan.to_string().contains("room for 3 clients"), "{plan}");

        // Bigger: the charge grows with the players, so the answer is the fixed point
        // n × charge(n) ≤ room < (n + 1) × charge(n + 1), not room ÷ charge(0).
        let room = 96 * MIB;
        let plan = MemoryPlan::new(
            configured(baseline + headroom + room),
            baseline,
            TICKS,
            64 * 1024,
            receive,
            100_000,
        );
        let n = plan.clients as u64;
        assert!(
            n * charge(n) <= room && (n + 1) * charge(n + 1) > room,
            "{n}"
        );
        assert!(n < room / charge(0));
        // With a client limit below that, the world never has more players than the
        // limit: each client is charged for that world, and more fit.
        let limited = MemoryPlan::new(
            configured(baseline + headroom + room),
            baseline,
            TICKS,
            64 * 1024,
            receive,
            100,
        );
        assert_eq!(limited.world_players, 100);
        assert_eq!(limited.per_client(), charge(100));
        assert_eq!(limited.clients as u64, room / charge(100));
        assert!(limited.clients > plan.clients);

        // Baseline and headroom alone over the budget: nobody fits, nothing underflows.
        assert_eq!(
            MemoryPlan::new(configured(MIB), baseline, TICKS, 64 * 1024, receive, 2000).clients,
            0
        );
        // No budget known: the client limit alone decides.
        let unbudgeted = MemoryPlan::new(None, baseline, TICKS, 64 * 1024, receive, 2000);
        assert_eq!(unbudgeted.clients, usize::MAX);
        assert_eq!(unbudgeted.measured(), None, "nothing to measure against");
    }

    #[test]
    fn a_v1_limit_leaves_the_socket_buffers_out_of_the_headroom() {
        let v1 = BudgetSource::Cgroup(CgroupLimit {
            bytes: 128 * MIB,
            version: CgroupVersion::V1,
            process_group: "/a".into(),
            limiting_group: "/a".into(),
            file: "/sys/fs/cgroup/memory/a/memory.limit_in_bytes".into(),
        });
        let v2 = BudgetSource::Cgroup(CgroupLimit {
            version: CgroupVersion::V2,
            file: "/sys/fs/cgroup/a/memory.max".into(),
            ..v1.cgroup().unwrap().clone()
        });
        let handshakes = HANDSHAKES_BEYOND_BUDGET as u64 * CONNECTION_OVERHEAD_BYTES;
        assert_eq!(headroom_bytes(&v1), SLACK_BYTES + handshakes);
        for charged in [v2, BudgetSource::Configured, BudgetSource::HostMemory] {
            assert_eq!(
                headroom_bytes(&charged),
                2 * SOCKET_BUFFER_BYTES as u64 + SLACK_BYTES + handshakes,
                "{charged}"
            );
        }
    }

    #[test]
    fn the_measured_check_refuses_when_rss_and_the_clients_joining_leave_no_room() {
        let baseline = 20 * MIB;
        let budget = 64 * MIB;
        let plan = MemoryPlan::new(configured(budget), baseline, TICKS, 64 * 1024, 1024, 2000);
        let measured = plan.measured().expect("a budget");
        let charge = plan.per_client();
        assert_eq!(
            measured,
            MeasuredBudget {
                budget,
                headroom: plan.headroom,
                per_client: charge
            }
        );

        // As planned: RSS at the baseline plus what admitted clients really cost (~45
        // KiB each, under the charge): the measured check never refuses within the plan.
        for admitted in [0, 10, plan.clients - 1] {
            assert_eq!(
                measured.admits(0, baseline + admitted as u64 * 45 * 1024),
                Ok(()),
                "{admitted}"
            );
        }

        // The server costs more than planned (a world full of projectiles, stalled
        // clients pinning ticks): the resident set leaves room for exactly one more.
        let room_for_one = budget - plan.headroom - charge;
        assert_eq!(measured.admits(0, room_for_one), Ok(()));
        assert_eq!(
            measured.admits(0, room_for_one + 1),
            Err(OverBudget {
                rss: room_for_one + 1,
                in_flight: 0
            })
        );
        // Clients still joining are charged too: their memory is not all in RSS yet.
        assert!(measured.admits(3, room_for_one - 2 * charge).is_err());
        assert_eq!(measured.admits(3, room_for_one - 3 * charge), Ok(()));
        assert!(
            OverBudget {
                rss: 60 * MIB,
                in_flight: 2
            }
            .to_string()
            .contains("60.0MiB")
        );
    }

    #[test]
    fn the_resident_set_is_read_at_most_once_per_interval() {
        let start = std::time::Instant::now();
        let mut sample = RssSample::default();
        let reads = std::cell::Cell::new(0);
        let read = |bytes| {
            let reads = &reads;
            move || {
                reads.set(reads.get() + 1);
                bytes
            }
        };
        assert_eq!(sample.bytes(start, read(100)), 100);
        assert_eq!(
            sample.bytes(start + RSS_SAMPLE_INTERVAL / 2, read(200)),
            100
        );
        assert_eq!(reads.get(), 1);
        assert_eq!(sample.bytes(start + RSS_SAMPLE_INTERVAL, read(300)), 300);
        assert_eq!(reads.get(), 2);
    }

    #[test]
    fn format_bytes_picks_a_unit() {
        assert_eq!(format_bytes(512), "512B");
        assert_eq!(format_bytes(1536), "1.5KiB");
        assert_eq!(format_bytes(3 * MIB), "3.0MiB");
    }
}
