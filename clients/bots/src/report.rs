//! Judging a swarm: what the bots saw ([`ClientOutcome`]) summed per behaviour and
//! overall ([`Summary`], [`Report`]), and the pass/fail gates ([`Gates`]). Pure code.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tickcast_clients::track::LatencyHistogram;
use tickcast_shared::Tick;

use crate::behaviour::Behaviour;
use crate::outcome::{ClientOutcome, DeliveryTotals};

/// Figures over a set of clients: the whole swarm, or one behaviour. Every field is in
/// `docs/CLIENTS.md`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Clients in the set.
    pub clients: usize,
    /// Clients admitted at least once.
    pub connected: usize,
    /// The `--duration` each client played.
    pub duration_s: f64,
    /// The server's tick rate.
    pub tick_rate: u16,
    /// Ticks expected, summed over clients.
    pub snapshots_expected: u64,
    /// Ticks received whole, summed over clients.
    pub snapshots_complete: u64,
    /// `snapshots_complete / snapshots_expected`.
    pub delivery_ratio: f64,
    /// The worst connected client's delivery.
    pub delivery_min: Option<f64>,
    /// The 1st percentile of connected clients' delivery (nearest rank).
    pub delivery_p1: Option<f64>,
    /// The median connected client's delivery.
    pub delivery_p50: Option<f64>,
    /// Chunks received.
    pub chunks_received: u64,
    /// Chunks of expected ticks that never arrived.
    pub chunks_lost: u64,
    /// Chunk latency, median over every chunk (ms).
    pub latency_ms_p50: Option<f64>,
    /// Chunk latency, 99th percentile over every chunk (ms).
    pub latency_ms_p99: Option<f64>,
    /// Chunk latency over the chunks that came 5 s or more into their session, the
    /// connect's transient left out: median (ms).
    pub settled_latency_ms_p50: Option<f64>,
    /// The same, 99th percentile (ms).
    pub settled_latency_ms_p99: Option<f64>,
    /// Age of a client's newest complete snapshot, median over per-tick samples (ms).
    pub snapshot_age_ms_p50: Option<f64>,
    /// Age of a client's newest complete snapshot, 99th percentile (ms).
    pub snapshot_age_ms_p99: Option<f64>,
    /// Staleness: the age of the newest state a client holds of each entity in its
    /// view, median over per-tick, per-entity samples (ms). What a player sees when
    /// some chunks are lost: those entities keep an older state.
    pub staleness_ms_p50: Option<f64>,
    /// Staleness, 99th percentile (ms).
    pub staleness_ms_p99: Option<f64>,
    /// QUIC RTT estimate, median over per-second samples (ms).
    pub rtt_ms_p50: Option<f64>,
    /// QUIC RTT estimate, 99th percentile (ms).
    pub rtt_ms_p99: Option<f64>,
    /// Connect to Welcome, median over connects (ms).
    pub connect_ms_p50: Option<f64>,
    /// Connect to Welcome, 99th percentile (ms).
    pub connect_ms_p99: Option<f64>,
    /// Datagram bytes read per connected second per client.
    pub bytes_in_per_client_per_s: f64,
    /// UDP bytes received (QUIC included) per connected second per client.
    pub udp_bytes_in_per_client_per_s: f64,
    /// UDP bytes sent (inputs, ACKs, QUIC) per connected second per client.
    pub udp_bytes_out_per_client_per_s: f64,
    /// UDP packets received per connected second per client.
    pub udp_packets_in_per_client_per_s: f64,
    /// UDP packets sent per connected second per client.
    pub udp_packets_out_per_client_per_s: f64,
    /// Entities in the newest complete tick any client of the set saw.
    pub entities_last_snapshot: usize,
    /// Clients whose connection the server side ended.
    pub disconnects: usize,
    /// Reconnects (churn).
    pub reconnects: u64,
    /// Errors by key, with counts.
    pub errors: BTreeMap<String, u64>,
}

/// The nearest-rank `q` quantile of sorted values.
fn nearest_rank(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn per_second(total: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        total as f64 / seconds
    } else {
        0.0
    }
}

/// Sums a set of outcomes.
pub fn summarize<'a>(
    outcomes: impl IntoIterator<Item = &'a ClientOutcome>,
    duration: Duration,
) -> Summary {
    let mut latency = LatencyHistogram::default();
    let mut settled_latency = LatencyHistogram::default();
    let mut age = LatencyHistogram::default();
    let mut staleness = LatencyHistogram::default();
    let mut rtt = LatencyHistogram::default();
    let mut connect = LatencyHistogram::default();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut totals = DeliveryTotals::default();
    let mut ratios = Vec::new();
    let (mut clients, mut connected, mut disconnects, mut reconnects) = (0, 0, 0, 0);
    let (mut bytes_in, mut udp_in, mut udp_out) = (0, 0, 0);
    let (mut packets_in, mut packets_out) = (0, 0);
    let mut tick_rate = 0;
    let mut newest: Option<(Tick, usize)> = None;
    let mut client_seconds = 0.0;
    for outcome in outcomes {
        clients += 1;
        for key in &outcome.errors {
            *errors.entry(key.clone()).or_default() += 1;
        }
        if let Some(key) = &outcome.disconnected {
            *errors.entry(format!("disconnect:{key}")).or_default() += 1;
            disconnects += 1;
        }
        if outcome.malformed_chunks > 0 {
            *errors.entry("malformed_chunk".into()).or_default() += outcome.malformed_chunks;
        }
        reconnects += u64::from(outcome.reconnects);
        connect.merge(&outcome.connect_time);
        if !outcome.connected {
            continue;
        }
        connected += 1;
        if tick_rate == 0 {
            tick_rate = outcome.tick_rate;
        }
        let d = &outcome.delivery;
        ratios.push(d.ratio());
        totals.expected += d.expected;
        totals.complete += d.complete;
        totals.chunks_received += d.chunks_received;
        totals.chunks_lost += d.chunks_lost;
        bytes_in += outcome.bytes_in;
        udp_in += outcome.udp_bytes_in;
        udp_out += outcome.udp_bytes_out;
        packets_in += outcome.udp_packets_in;
        packets_out += outcome.udp_packets_out;
        latency.merge(&outcome.latency);
        settled_latency.merge(&outcome.settled_latency);
        age.merge(&outcome.snapshot_age);
        staleness.merge(&outcome.staleness);
        rtt.merge(&outcome.rtt);
        client_seconds += outcome.played_for.as_secs_f64();
        if let Some(tick) = d.last_complete_tick
            && newest.is_none_or(|(t, _)| tick.is_after(t))
        {
            newest = Some((tick, d.entities_last_snapshot));
        }
    }
    ratios.sort_by(f64::total_cmp);
    Summary {
        clients,
        connected,
        duration_s: duration.as_secs_f64(),
        tick_rate,
        snapshots_expected: totals.expected,
        snapshots_complete: totals.complete,
        delivery_ratio: totals.ratio(),
        delivery_min: ratios.first().copied(),
        delivery_p1: nearest_rank(&ratios, 0.01),
        delivery_p50: nearest_rank(&ratios, 0.50),
        chunks_received: totals.chunks_received,
        chunks_lost: totals.chunks_lost,
        latency_ms_p50: latency.quantile_ms(0.50),
        latency_ms_p99: latency.quantile_ms(0.99),
        settled_latency_ms_p50: settled_latency.quantile_ms(0.50),
        settled_latency_ms_p99: settled_latency.quantile_ms(0.99),
        snapshot_age_ms_p50: age.quantile_ms(0.50),
        snapshot_age_ms_p99: age.quantile_ms(0.99),
        staleness_ms_p50: staleness.quantile_ms(0.50),
        staleness_ms_p99: staleness.quantile_ms(0.99),
        rtt_ms_p50: rtt.quantile_ms(0.50),
        rtt_ms_p99: rtt.quantile_ms(0.99),
        connect_ms_p50: connect.quantile_ms(0.50),
        connect_ms_p99: connect.quantile_ms(0.99),
        bytes_in_per_client_per_s: per_second(bytes_in, client_seconds),
        udp_bytes_in_per_client_per_s: per_second(udp_in, client_seconds),
        udp_bytes_out_per_client_per_s: per_second(udp_out, client_seconds),
        udp_packets_in_per_client_per_s: per_second(packets_in, client_seconds),
        udp_packets_out_per_client_per_s: per_second(packets_out, client_seconds),
        entities_last_snapshot: newest.map_or(0, |(_, n)| n),
        disconnects,
        reconnects,
        errors,
    }
}

/// Pass/fail thresholds, judged on the healthy clients only (behaviours `walk` and
/// `idle`, [`Behaviour::is_healthy`]): stalled, slow and churning clients lose ticks
/// and read late by design.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Gates {
    /// Fail unless the healthy clients' `delivery_ratio` is at least this, and every
    /// healthy client connected.
    pub min_delivery: Option<f64>,
    /// Fail unless the healthy clients' `latency_ms_p99` is at most this.
    pub max_latency_p99_ms: Option<f64>,
}

impl Gates {
    /// Whether any gate is set.
    pub fn any(&self) -> bool {
        self.min_delivery.is_some() || self.max_latency_p99_ms.is_some()
    }
}

/// How the gates came out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateReport {
    /// The behaviours the gates judge.
    pub judged_on: Vec<&'static str>,
    /// Healthy clients.
    pub clients: usize,
    /// Healthy clients admitted.
    pub connected: usize,
    /// The healthy clients' delivery ratio (complete ÷ expected ticks, summed).
    pub delivery_ratio: f64,
    /// The healthy clients' chunk latency p99 (ms).
    pub latency_ms_p99: Option<f64>,
    /// The `--min-delivery` gate, if set.
    pub min_delivery: Option<f64>,
    /// The `--max-latency-p99-ms` gate, if set.
    pub max_latency_p99_ms: Option<f64>,
    /// One line per failed gate.
    pub failures: Vec<String>,
    /// No gate failed (true when no gate is set).
    pub passed: bool,
}

/// What one direction of a `--netsim` link did (`tickcast_netsim::LinkCounters`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkFigures {
    /// Packets offered to the link.
    pub packets: u64,
    /// Packets delivered (a duplicate counted once).
    pub delivered: u64,
    /// Lost by the loss model.
    pub lost: u64,
    /// Dropped by the rate cap's full queue.
    pub queue_dropped: u64,
    /// Dropped by the MTU clamp.
    pub mtu_dropped: u64,
    /// Delivered twice.
    pub duplicated: u64,
    /// Held back so later packets overtook them.
    pub reordered: u64,
    /// The most bytes the rate cap's queue held.
    pub queue_peak_bytes: u64,
}

impl From<&tickcast_netsim::LinkCounters> for LinkFigures {
    fn from(c: &tickcast_netsim::LinkCounters) -> Self {
        Self {
            packets: c.packets,
            delivered: c.delivered,
            lost: c.dropped_loss,
            queue_dropped: c.dropped_queue,
            mtu_dropped: c.dropped_mtu,
            duplicated: c.duplicated,
            reordered: c.reordered,
            queue_peak_bytes: c.queue_peak_bytes,
        }
    }
}

/// The conditioned link of a `--netsim` run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetsimFigures {
    /// The spec, as given.
    pub spec: String,
    /// Client → server.
    pub up: LinkFigures,
    /// Server → client.
    pub down: LinkFigures,
}

/// The whole report: the overall summary's fields at the top level, a summary per
/// behaviour under `groups`, and the gates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Every client.
    #[serde(flatten)]
    pub overall: Summary,
    /// Per behaviour present in the mix, keyed by its name.
    pub groups: BTreeMap<&'static str, Summary>,
    /// The gates and their verdict.
    pub gates: GateReport,
    /// The conditioned link, when the bots ran through `--netsim`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netsim: Option<NetsimFigures>,
    /// What the bots process itself cost, when the caller measured it (`tickcast-bots`
    /// does; a swarm run inside a test does not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bots_process: Option<ProcessFigures>,
}

/// The CPU the bots process used, per client-tick it played: the bots' side of the
/// server's `us_per_client_tick`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessFigures {
    /// Which driver carried the bots (`proto` or `quinn-endpoint`).
    pub driver: &'static str,
    /// Threads the bots ran on.
    pub threads: usize,
    /// CPU seconds (user + system) of the whole process over the swarm's run.
    pub cpu_s: f64,
    /// Wall-clock seconds of the swarm's run.
    pub wall_s: f64,
    /// `cpu_s / wall_s`.
    pub cores: f64,
    /// Connected client-seconds times the tick rate, summed over clients.
    pub client_ticks: f64,
    /// `cpu_s` per client-tick, in microseconds; none when no client played.
    pub cpu_us_per_client_tick: Option<f64>,
}

impl ProcessFigures {
    /// The figures of a run of `outcomes` that took `cpu_s` CPU seconds over `wall_s`.
    pub fn new(
        driver: &'static str,
        threads: usize,
        cpu_s: f64,
        wall_s: f64,
        outcomes: &[ClientOutcome],
    ) -> Self {
        let client_ticks: f64 = outcomes
            .iter()
            .map(|o| o.played_for.as_secs_f64() * f64::from(o.tick_rate))
            .sum();
        Self {
            driver,
            threads,
            cpu_s,
            wall_s,
            cores: if wall_s > 0.0 { cpu_s / wall_s } else { 0.0 },
            client_ticks,
            cpu_us_per_client_tick: (client_ticks > 0.0).then(|| cpu_s * 1e6 / client_ticks),
        }
    }
}

/// User plus system CPU seconds from the text of `/proc/<pid>/stat` (fields 14 and 15,
/// in clock ticks of `USER_HZ`, which Linux fixes at 100 on every architecture it
/// exports to user space). `None` if the text is not that file's.
pub fn cpu_seconds_from_proc_stat(stat: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces: count fields
    // from the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// What the run means for the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Ran, and every gate passed: exit 0.
    Pass,
    /// Ran, and these gates failed: exit 1.
    GateFailed(Vec<String>),
    /// Nothing to judge (no client connected): exit 2.
    CouldNotRun(String),
}

impl Verdict {
    /// The process exit code: 0 pass, 1 a gate failed, 2 could not run.
    pub fn exit_code(&self) -> u8 {
        match self {
            Verdict::Pass => 0,
            Verdict::GateFailed(_) => 1,
            Verdict::CouldNotRun(_) => 2,
        }
    }
}

impl Report {
    /// Sums the outcomes per behaviour and overall and judges the gates.
    pub fn new(outcomes: &[ClientOutcome], duration: Duration, gates: Gates) -> Self {
        let overall = summarize(outcomes, duration);
        let mut groups = BTreeMap::new();
        for behaviour in Behaviour::ALL {
            if outcomes.iter().any(|o| o.behaviour == behaviour) {
                let group = summarize(
                    outcomes.iter().filter(|o| o.behaviour == behaviour),
                    duration,
                );
                groups.insert(behaviour.name(), group);
            }
        }
        let healthy = summarize(
            outcomes.iter().filter(|o| o.behaviour.is_healthy()),
            duration,
        );
        let mut failures = Vec::new();
        if let Some(min) = gates.min_delivery {
            if healthy.clients == 0 {
                failures.push("min-delivery: no walk or idle client to judge".to_string());
            } else if healthy.connected < healthy.clients {
                failures.push(format!(
                    "min-delivery: only {} of {} walk/idle clients connected",
                    healthy.connected, healthy.clients
                ));
            } else if healthy.delivery_ratio < min {
                failures.push(format!(
                    "min-delivery: walk/idle delivery {:.4} < {min}",
                    healthy.delivery_ratio
                ));
            }
        }
        if let Some(max) = gates.max_latency_p99_ms {
            match healthy.latency_ms_p99 {
                None => failures
                    .push("max-latency-p99-ms: no chunk reached a walk or idle client".to_string()),
                Some(p99) if p99 > max => failures.push(format!(
                    "max-latency-p99-ms: walk/idle latency p99 {p99} ms > {max} ms"
                )),
                Some(_) => {}
            }
        }
        let gates = GateReport {
            judged_on: Behaviour::ALL
                .into_iter()
                .filter(|b| b.is_healthy())
                .map(Behaviour::name)
                .collect(),
            clients: healthy.clients,
            connected: healthy.connected,
            delivery_ratio: healthy.delivery_ratio,
            latency_ms_p99: healthy.latency_ms_p99,
            min_delivery: gates.min_delivery,
            max_latency_p99_ms: gates.max_latency_p99_ms,
            passed: failures.is_empty(),
            failures,
        };
        Self {
            overall,
            groups,
            gates,
            netsim: None,
            bots_process: None,
        }
    }

    /// Pass, a gate failed, or nothing could be judged.
    pub fn verdict(&self) -> Verdict {
        if self.overall.connected == 0 {
            let why = match self.overall.errors.iter().max_by_key(|(_, n)| **n) {
                Some((key, n)) => format!("no client connected (most common error: {key} × {n})"),
                None => "no client connected".to_string(),
            };
            return Verdict::CouldNotRun(why);
        }
        if self.gates.failures.is_empty() {
            Verdict::Pass
        } else {
            Verdict::GateFailed(self.gates.failures.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_cpu_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat =
            "4242 (tickcast (bots) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(cpu_seconds_from_proc_stat(stat), Some(3.25));
        assert_eq!(cpu_seconds_from_proc_stat("no parenthesis here"), None);
        assert_eq!(cpu_seconds_from_proc_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn bots_cpu_is_divided_by_the_client_ticks_played() {
        let mut a = ClientOutcome::new(Behaviour::Walk);
        a.tick_rate = 30;
        a.played_for = Duration::from_secs(10);
        let mut b = a.clone();
        b.played_for = Duration::from_secs(5);
        let never = ClientOutcome::new(Behaviour::Walk);
        let figures = ProcessFigures::new("proto", 1, 0.9, 10.0, &[a, b, never]);
        assert_eq!(figures.client_ticks, 450.0);
        assert_eq!(figures.cpu_us_per_client_tick, Some(2000.0));
        assert!((figures.cores - 0.09).abs() < 1e-12);
        assert_eq!(
            ProcessFigures::new("proto", 1, 1.0, 1.0, &[]).cpu_us_per_client_tick,
            None
        );
    }

    fn client(
        behaviour: Behaviour,
        complete: u64,
        expected: u64,
        latency_us: u64,
    ) -> ClientOutcome {
        let mut o = ClientOutcome::new(behaviour);
        o.connected = true;
        o.tick_rate = 30;
        o.delivery = DeliveryTotals {
            expected,
            complete,
            chunks_received: complete * 2,
            chunks_lost: (expected - complete) * 2,
            entities_last_snapshot: 10,
            last_complete_tick: Some(Tick::new(expected as u32)),
        };
        for _ in 0..complete {
            o.latency.record(latency_us);
        }
        o.bytes_in = 1_000;
        o.played_for = Duration::from_secs(10);
        o
    }

    const TEN_S: Duration = Duration::from_secs(10);

    #[test]
    fn percentiles_over_clients_use_the_nearest_rank() {
        let sorted: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(nearest_rank(&sorted, 0.0), Some(1.0));
        assert_eq!(nearest_rank(&sorted, 0.01), Some(2.0));
        assert_eq!(nearest_rank(&sorted, 0.5), Some(100.0));
        assert_eq!(nearest_rank(&sorted, 1.0), Some(200.0));
        assert_eq!(nearest_rank(&sorted[..3], 0.01), Some(1.0));
        assert_eq!(nearest_rank(&[], 0.5), None);
    }

    #[test]
    fn a_summary_adds_clients_up_and_ranks_their_delivery() {
        let mut outcomes: Vec<ClientOutcome> = (0..99)
            .map(|_| client(Behaviour::Walk, 300, 300, 1_000))
            .collect();
        outcomes.push(client(Behaviour::Walk, 150, 300, 1_000));
        let mut refused = ClientOutcome::new(Behaviour::Walk);
        refused.errors.push("connect:rejected:server_full".into());
        outcomes.push(refused);
        let s = summarize(&outcomes, TEN_S);
        assert_eq!(s.clients, 101);
        assert_eq!(s.connected, 100);
        assert_eq!(s.snapshots_expected, 30_000);
        assert_eq!(s.snapshots_complete, 29_850);
        assert_eq!(s.delivery_ratio, 0.995);
        assert_eq!(s.delivery_min, Some(0.5));
        assert_eq!(s.delivery_p1, Some(0.5));
        assert_eq!(s.delivery_p50, Some(1.0));
        assert_eq!(s.chunks_lost, 300);
        assert_eq!(s.latency_ms_p99, Some(1.024));
        assert_eq!(s.bytes_in_per_client_per_s, 100.0);
        assert_eq!(s.errors["connect:rejected:server_full"], 1);
        assert_eq!(s.entities_last_snapshot, 10);
    }

    #[test]
    fn groups_keep_every_field_and_the_top_level_keeps_the_old_ones() {
        let outcomes = vec![
            client(Behaviour::Walk, 300, 300, 1_000),
            client(Behaviour::Stall, 30, 300, 900_000),
        ];
        let report = Report::new(&outcomes, TEN_S, Gates::default());
        let json = serde_json::to_value(&report).unwrap();
        for field in [
            "clients",
            "connected",
            "duration_s",
            "tick_rate",
            "snapshots_expected",
            "snapshots_complete",
            "delivery_ratio",
            "chunks_received",
            "chunks_lost",
            "latency_ms_p50",
            "latency_ms_p99",
            "settled_latency_ms_p50",
            "settled_latency_ms_p99",
            "bytes_in_per_client_per_s",
            "entities_last_snapshot",
            "disconnects",
            "errors",
            "delivery_min",
            "delivery_p1",
            "delivery_p50",
        ] {
            assert!(json.get(field).is_some(), "top level lacks {field}");
            assert!(
                json["groups"]["walk"].get(field).is_some(),
                "group lacks {field}"
            );
        }
        assert_eq!(json["groups"].as_object().unwrap().len(), 2);
        assert_eq!(json["groups"]["stall"]["delivery_ratio"], 0.1);
        assert_eq!(json["delivery_min"], 0.1);
        assert_eq!(json["gates"]["passed"], true);
    }

    #[test]
    fn gates_judge_walk_and_idle_only() {
        let outcomes = vec![
            client(Behaviour::Walk, 300, 300, 2_000),
            client(Behaviour::Idle, 299, 300, 2_000),
            client(Behaviour::Stall, 10, 300, 5_000_000),
            client(Behaviour::Slow, 100, 300, 800_000),
        ];
        let gates = Gates {
            min_delivery: Some(0.99),
            max_latency_p99_ms: Some(5.0),
        };
        let report = Report::new(&outcomes, TEN_S, gates);
        assert_eq!(report.gates.judged_on, vec!["walk", "idle"]);
        assert_eq!(report.verdict(), Verdict::Pass);
        assert_eq!(report.verdict().exit_code(), 0);
        assert!(report.overall.delivery_ratio < 0.99);
    }

    #[test]
    fn a_failed_gate_exits_1_and_says_which() {
        let outcomes = vec![
            client(Behaviour::Walk, 290, 300, 2_000),
            client(Behaviour::Idle, 300, 300, 50_000),
        ];
        let strict = Gates {
            min_delivery: Some(0.99),
            max_latency_p99_ms: Some(10.0),
        };
        let verdict = Report::new(&outcomes, TEN_S, strict).verdict();
        assert_eq!(verdict.exit_code(), 1);
        let Verdict::GateFailed(failures) = verdict else {
            panic!("{verdict:?}")
        };
        assert_eq!(failures.len(), 2);
        assert!(failures[0].starts_with("min-delivery: walk/idle delivery 0.9833"));
        assert!(
            failures[1].starts_with("max-latency-p99-ms"),
            "{failures:?}"
        );

        // Only the latency gate set: delivery is not judged.
        let latency_only = Gates {
            max_latency_p99_ms: Some(100.0),
            ..Gates::default()
        };
        assert_eq!(
            Report::new(&outcomes, TEN_S, latency_only).verdict(),
            Verdict::Pass
        );
    }

    #[test]
    fn a_healthy_client_that_never_connected_fails_the_delivery_gate() {
        let outcomes = vec![
            client(Behaviour::Walk, 300, 300, 1_000),
            ClientOutcome::new(Behaviour::Idle),
        ];
        let gates = Gates {
            min_delivery: Some(0.5),
            ..Gates::default()
        };
        assert_eq!(
            Report::new(&outcomes, TEN_S, gates).verdict(),
            Verdict::GateFailed(vec![
                "min-delivery: only 1 of 2 walk/idle clients connected".into()
            ])
        );
    }

    #[test]
    fn no_connected_client_could_not_run_whatever_the_gates() {
        let mut refused = ClientOutcome::new(Behaviour::Walk);
        refused.errors.push("connect:timeout".into());
        let report = Report::new(&[refused], TEN_S, Gates::default());
        let verdict = report.verdict();
        assert_eq!(verdict.exit_code(), 2);
        assert_eq!(
            verdict,
            Verdict::CouldNotRun(
                "no client connected (most common error: connect:timeout × 1)".into()
            )
        );
    }
}
