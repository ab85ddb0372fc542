//! What the metrics endpoint exposes (design rule 6), in the Prometheus text format.
//!
//! Every value is read, at scrape time and on the metrics thread, from atomics the sim
//! and net threads bump anyway ([`NetCounters`], [`LoopProgress`], [`LoopMetrics`], the
//! recorder's counters) or from figures fixed at start ([`MemoryPlan`], the build). A
//! scrape takes no lock the sim or the net thread waits on, and allocates only on the
//! metrics thread. No series is labelled by client: labels come from small fixed sets
//! (reject reasons, close codes, input drop reasons), so the number of series does not
//! grow with clients.
//!
//! The exposition is built as `prometheus` (the `tikv/rust-prometheus` crate) metric
//! families and written by its `TextEncoder` (format 0.0.4, which Prometheus, the
//! Datadog Agent's OpenMetrics check and `promtool check metrics` all read).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, TextEncoder};
use tickcast_net::histogram::HistogramSnapshot;
use tickcast_net::{DisconnectReason, LatencyHistogram, MemoryPlan, NetCounters};
use tickcast_shared::msg::RejectReason;
use tickcast_sim::Sim;
use tickcast_sim::record::RecorderCounters;

use crate::LoopProgress;
use crate::agones::{AgonesStatus, GameServerState};

/// The content type of [`encode`]'s output: the text format 0.0.4
/// (`prometheus::TEXT_FORMAT`), in UTF-8.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The git commit this binary was built from (`build.rs`), or `unknown`.
pub const GIT_COMMIT: &str = env!("TICKCAST_GIT_COMMIT");

/// What the sim loop publishes for the metrics endpoint, each tick, with relaxed stores
/// and adds only: nothing here can make the loop wait or allocate.
#[derive(Debug, Default)]
pub struct LoopMetrics {
    /// Time from a tick's start to its snapshot published (and recorded).
    pub tick_duration: LatencyHistogram,
    /// Ticks that started more than a period late (`FixedStep::late_ticks`).
    pub late_ticks: AtomicU64,
    /// Entities in the last snapshot.
    pub entities: AtomicU64,
    /// `SimCounters::inputs_applied`.
    pub inputs_applied: AtomicU64,
    /// `SimCounters::inputs_unknown_client`.
    pub inputs_unknown_client: AtomicU64,
    /// `SimCounters::snapshot_buffers_detached`.
    pub snapshot_buffers_detached: AtomicU64,
    /// `SimCounters::snapshot_buffer_grows`.
    pub snapshot_buffer_grows: AtomicU64,
}

impl LoopMetrics {
    /// Copies the simulation's counters after a tick.
    pub fn publish(&self, sim: &Sim) {
        let counters = sim.counters();
        let store = |atomic: &AtomicU64, value: u64| atomic.store(value, Ordering::Relaxed);
        store(&self.entities, sim.snapshot_entities() as u64);
        store(&self.inputs_applied, counters.inputs_applied);
        store(&self.inputs_unknown_client, counters.inputs_unknown_client);
        store(
            &self.snapshot_buffers_detached,
            counters.snapshot_buffers_detached,
        );
        store(&self.snapshot_buffer_grows, counters.snapshot_buffer_grows);
    }
}

/// Everything a scrape reads: shared atomics and figures fixed at start.
#[derive(Debug, Clone)]
pub struct MetricSources {
    /// The network layer's counters.
    pub net: Arc<NetCounters>,
    /// The sim loop's tick count.
    pub progress: Arc<LoopProgress>,
    /// What the sim loop publishes each tick.
    pub sim: Arc<LoopMetrics>,
    /// The recorder's counters, when recording.
    pub recorder: Option<Arc<RecorderCounters>>,
    /// Set while the server drains (`Server::drain_flag`).
    pub draining: Arc<AtomicBool>,
    /// The memory budget's share-out, fixed at start.
    pub memory_plan: MemoryPlan,
    /// The configured client limit.
    pub max_clients: usize,
    /// Ticks per second.
    pub tick_rate: u16,
    /// The Agones GameServer's state and the SDK calls (state `Disabled` off Agones).
    pub agones: Arc<AgonesStatus>,
}

/// Reads every source and renders the exposition.
pub fn encode(sources: &MetricSources, resident_set_bytes: u64) -> String {
    let families = families(sources, resident_set_bytes);
    let mut out = Vec::with_capacity(16 * 1024);
    // The encoder fails only on a family without samples or without a name, which
    // `families` never builds; a failure leaves what was written so far.
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        tracing::error!("encoding the metrics: {e}");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Metric families under construction.
#[derive(Default)]
struct Families(Vec<MetricFamily>);

impl Families {
    fn family(&mut self, name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) {
        let mut family = MetricFamily::default();
        family.set_name(name.to_owned());
        family.set_help(help.to_owned());
        family.set_field_type(kind);
        family.set_metric(metrics);
        self.0.push(family);
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.counter_by(name, help, "", [("", value)]);
    }

    /// A counter with one label, one series per `(label value, count)`; no label when
    /// `label` is empty.
    fn counter_by<'a>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = (&'a str, u64)>,
    ) {
        let values = values
            .into_iter()
            .map(|(value, count)| (value, count as f64));
        self.family_by(name, help, MetricType::COUNTER, label, values);
    }

    /// A gauge with one label, one series per `(label value, value)`.
    fn gauge_by<'a>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = (&'a str, f64)>,
    ) {
        self.family_by(name, help, MetricType::GAUGE, label, values);
    }

    /// A counter or gauge family with one label, one series per `(label value, value)`.
    fn family_by<'a>(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        label: &str,
        values: impl IntoIterator<Item = (&'a str, f64)>,
    ) {
        let metrics = values
            .into_iter()
            .map(|(value, level)| {
                let mut metric = labelled(&[(label, value)]);
                if kind == MetricType::COUNTER {
                    let mut counter = Counter::default();
                    counter.set_value(level);
                    metric.set_counter(counter);
                } else {
                    let mut gauge = Gauge::default();
                    gauge.set_value(level);
                    metric.set_gauge(gauge);
                }
                metric
            })
            .collect();
        self.family(name, help, kind, metrics);
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.gauge_with(name, help, &[], value);
    }

    fn gauge_with(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let mut gauge = Gauge::default();
        gauge.set_value(value);
        let mut metric = labelled(labels);
        metric.set_gauge(gauge);
        self.family(name, help, MetricType::GAUGE, vec![metric]);
    }

    /// A duration histogram, in seconds.
    fn histogram(&mut self, name: &str, help: &str, snapshot: &HistogramSnapshot) {
        let buckets = snapshot
            .cumulative()
            .map(|(bound_us, count)| {
                let mut bucket = Bucket::default();
                bucket.set_upper_bound(bound_us as f64 / 1e6);
                bucket.set_cumulative_count(count);
                bucket
            })
            .collect();
        let mut histogram = Histogram::default();
        histogram.set_bucket(buckets);
        histogram.set_sample_count(snapshot.count());
        histogram.set_sample_sum(snapshot.sum_us as f64 / 1e6);
        let mut metric = Metric::default();
        metric.set_histogram(histogram);
        self.family(name, help, MetricType::HISTOGRAM, vec![metric]);
    }
}

/// A metric with these labels; pairs with an empty name are left out.
fn labelled(labels: &[(&str, &str)]) -> Metric {
    let pairs = labels
        .iter()
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name((*name).to_owned());
            pair.set_value((*value).to_owned());
            pair
        })
        .collect();
    let mut metric = Metric::default();
    metric.set_label(pairs);
    metric
}

fn families(sources: &MetricSources, resident_set_bytes: u64) -> Vec<MetricFamily> {
    let get = NetCounters::get;
    let net = &*sources.net;
    let sim = &*sources.sim;
    let mut f = Families::default();

    // The sim loop.
    f.counter(
        "tickcast_ticks_total",
        "Ticks the simulation loop has run.",
        sources.progress.ticks(),
    );
    f.counter(
        "tickcast_late_ticks_total",
        "Ticks that started more than one period after their slot (a stall).",
        get(&sim.late_ticks),
    );
    f.histogram(
        "tickcast_tick_duration_seconds",
        "Time from a tick's start to its snapshot published.",
        &sim.tick_duration.snapshot(),
    );
    f.gauge(
        "tickcast_tick_period_seconds",
        "The fixed step: one over the tick rate.",
        1.0 / f64::from(sources.tick_rate.max(1)),
    );
    f.gauge(
        "tickcast_entities",
        "Entities in the last snapshot.",
        get(&sim.entities) as f64,
    );
    f.counter(
        "tickcast_snapshot_buffers_detached_total",
        "Snapshot buffers left to stuck peers and replaced by a new allocation.",
        get(&sim.snapshot_buffers_detached),
    );
    f.counter(
        "tickcast_snapshot_buffer_grows_total",
        "Times a snapshot buffer grew because the world outgrew it.",
        get(&sim.snapshot_buffer_grows),
    );

    // Clients.
    f.gauge(
        "tickcast_clients",
        "Clients admitted and connected now.",
        get(&net.peers) as f64,
    );
    f.gauge(
        "tickcast_max_clients",
        "The configured limit of clients connected at once.",
        sources.max_clients as f64,
    );
    f.gauge(
        "tickcast_draining",
        "1 while the server drains (admitting no one, players finishing), else 0.",
        if sources.draining.load(Ordering::Relaxed) {
            1.0
        } else {
            0.0
        },
    );
    f.gauge(
        "tickcast_handshakes_in_progress",
        "Connections between accept and Welcome or Reject.",
        get(&net.handshaking) as f64,
    );
    f.gauge(
        "tickcast_handshakes_in_progress_peak",
        "The most connections ever between accept and Welcome or Reject at once.",
        get(&net.handshaking_peak) as f64,
    );
    f.counter(
        "tickcast_handshakes_retried_total",
        "Connection attempts from unvalidated addresses answered with a stateless QUIC \
         Retry (many handshakes in flight).",
        get(&net.handshakes_retried),
    );
    f.counter(
        "tickcast_admissions_total",
        "Clients admitted (sent a Welcome).",
        get(&net.admitted),
    );
    f.counter_by(
        "tickcast_refusals_total",
        "Clients refused, by reject reason (before TLS or with a Reject).",
        "reason",
        RejectReason::ALL.map(|reason| (reason.name(), net.rejects_for(reason))),
    );
    f.counter(
        "tickcast_refusals_before_handshake_total",
        "Of the refusals, the connections refused before TLS because the server was full.",
        get(&net.refused_before_handshake),
    );
    f.counter_by(
        "tickcast_disconnects_total",
        "Admitted clients' connections that ended, by close code (or idle_timeout, \
         connection_lost when the transport ended it).",
        "code",
        DisconnectReason::ALL.map(|reason| (reason.name(), net.disconnects_for(reason))),
    );
    f.counter(
        "tickcast_hello_timeouts_total",
        "Connections closed for sending no Hello in time.",
        get(&net.hello_timeouts),
    );
    f.counter(
        "tickcast_protocol_errors_total",
        "Connections closed for malformed bytes (in the handshake or after).",
        get(&net.protocol_errors),
    );

    // Fan-out.
    f.counter(
        "tickcast_ticks_fanned_out_total",
        "Ticks the fan-out took from the simulation.",
        get(&net.ticks_fanned_out),
    );
    f.counter(
        "tickcast_ticks_coalesced_total",
        "Ticks replaced in the handoff before the fan-out took them (net thread behind).",
        get(&net.ticks_coalesced),
    );
    f.histogram(
        "tickcast_fanout_spread_seconds",
        "Time from a tick's publication to the last peer's datagrams handed to QUIC.",
        &net.fanout_spread.snapshot(),
    );
    f.counter(
        "tickcast_peer_ticks_sent_total",
        "(peer, tick) pairs sent whole.",
        get(&net.peer_ticks_sent),
    );
    f.counter(
        "tickcast_peer_ticks_skipped_total",
        "(peer, tick) pairs never sent: held while the peer's congestion window or send queue had no room and replaced by a newer tick, or too large to hold (backpressure).",
        get(&net.peer_ticks_skipped_backpressure),
    );
    f.counter(
        "tickcast_peer_tick_send_errors_total",
        "(peer, tick) pairs cut short by a send error.",
        get(&net.peer_ticks_send_errors),
    );
    f.gauge(
        "tickcast_peer_send_queue_peak_bytes",
        "High-water mark of any peer's datagram send queue right after a tick.",
        get(&net.peer_send_queue_peak_bytes) as f64,
    );

    // Traffic.
    f.counter(
        "tickcast_datagrams_sent_total",
        "Snapshot datagrams handed to QUIC.",
        get(&net.datagrams_sent),
    );
    f.counter(
        "tickcast_datagram_sent_bytes_total",
        "Payload bytes of the snapshot datagrams handed to QUIC.",
        get(&net.bytes_out),
    );
    f.counter(
        "tickcast_datagrams_received_total",
        "Datagrams received from admitted clients.",
        get(&net.datagrams_received),
    );
    f.counter(
        "tickcast_datagram_received_bytes_total",
        "Payload bytes of the datagrams received from admitted clients.",
        get(&net.bytes_in),
    );
    f.counter(
        "tickcast_udp_packets_sent_total",
        "UDP packets sent on every connection (QUIC's count; updated once a second).",
        get(&net.udp.packets_sent),
    );
    f.counter(
        "tickcast_udp_sent_bytes_total",
        "UDP payload bytes sent on every connection (updated once a second).",
        get(&net.udp.bytes_sent),
    );
    f.counter(
        "tickcast_udp_packets_received_total",
        "UDP packets received on every connection (QUIC's count; updated once a second).",
        get(&net.udp.packets_received),
    );
    f.counter(
        "tickcast_udp_received_bytes_total",
        "UDP payload bytes received on every connection (updated once a second).",
        get(&net.udp.bytes_received),
    );

    // Inputs.
    f.counter(
        "tickcast_inputs_received_total",
        "Input datagrams passed to the simulation.",
        get(&net.inputs_received),
    );
    f.counter(
        "tickcast_inputs_applied_total",
        "Inputs that became a player's intent.",
        get(&sim.inputs_applied),
    );
    f.counter_by(
        "tickcast_inputs_dropped_total",
        "Input datagrams dropped: over the per-tick allowance (rate_limit), the \
         simulation's channel full (channel_full), or for a client with no entity \
         (unknown_client).",
        "reason",
        [
            ("rate_limit", get(&net.inputs_dropped_rate)),
            ("channel_full", get(&net.inputs_dropped_channel_full)),
            ("unknown_client", get(&sim.inputs_unknown_client)),
        ],
    );
    f.counter(
        "tickcast_nonces_evicted_total",
        "Connect-token nonces forgotten because the replay cache was full.",
        get(&net.nonces_evicted),
    );
    f.gauge(
        "tickcast_nonces_remembered",
        "Connect-token nonces remembered for replay protection (forgotten when their \
         tokens expire).",
        get(&net.nonces_remembered) as f64,
    );
    f.counter(
        "tickcast_membership_events_lost_total",
        "Join or leave events that could not be queued (should stay 0).",
        get(&net.membership_events_lost),
    );

    // The recorder: zeros when not recording, so the series are always there.
    let recorded = |counter: fn(&RecorderCounters) -> &AtomicU64| {
        sources.recorder.as_deref().map_or(0, |r| get(counter(r)))
    };
    f.gauge(
        "tickcast_recording",
        "1 when the server records every tick (--record), else 0.",
        if sources.recorder.is_some() { 1.0 } else { 0.0 },
    );
    f.counter(
        "tickcast_recorder_ticks_written_total",
        "Ticks written to the recording.",
        recorded(|r| &r.ticks_written),
    );
    f.counter(
        "tickcast_recorder_ticks_dropped_total",
        "Ticks not recorded because the recorder's queue was full.",
        recorded(|r| &r.ticks_dropped),
    );
    f.counter(
        "tickcast_recorder_gaps_total",
        "Gap frames written (runs of dropped ticks).",
        recorded(|r| &r.gaps),
    );
    f.counter(
        "tickcast_recorder_written_bytes_total",
        "Bytes written to the recording.",
        recorded(|r| &r.bytes_written),
    );
    f.counter(
        "tickcast_recorder_write_errors_total",
        "Write errors (the recorder stops after the first).",
        recorded(|r| &r.write_errors),
    );

    // Memory.
    let plan = &sources.memory_plan;
    f.gauge(
        "tickcast_resident_memory_bytes",
        "Resident set size of the process.",
        resident_set_bytes as f64,
    );
    f.gauge(
        "tickcast_memory_baseline_bytes",
        "Resident set measured at start, before any client.",
        plan.baseline_rss as f64,
    );
    if let Some(budget) = &plan.budget {
        f.gauge(
            "tickcast_memory_budget_bytes",
            "Bytes this server may use.",
            budget.bytes as f64,
        );
        f.gauge_with(
            "tickcast_memory_budget_info",
            "Where the memory budget came from (label source); always 1.",
            &[("source", budget.source.kind())],
            1.0,
        );
        f.gauge(
            "tickcast_memory_budget_clients",
            "Clients the memory budget admits.",
            plan.clients as f64,
        );
    }

    // Agones: one series per state, 1 for the state last seen (an alert can ask for
    // `tickcast_agones_state{state="Unhealthy"} == 1` without parsing a log line).
    let agones = &*sources.agones;
    let state = agones.state();
    f.gauge_by(
        "tickcast_agones_state",
        "The Agones GameServer state last seen (label state; Disabled off Agones): 1 for that state, 0 for the others.",
        "state",
        GameServerState::ALL
            .into_iter()
            .map(|s| (s.name(), if s == state { 1.0 } else { 0.0 })),
    );
    f.counter_by(
        "tickcast_agones_sdk_calls_total",
        "Agones SDK calls to the sidecar, by result: ok (a 2xx answer) or failed (not listening, timed out, or another status).",
        "result",
        [
            ("ok", get(&agones.calls_ok)),
            ("failed", get(&agones.calls_failed)),
        ],
    );
    f.counter(
        "tickcast_agones_health_pings_total",
        "Health pings the Agones sidecar accepted.",
        get(&agones.health_pings),
    );
    f.counter(
        "tickcast_agones_watch_reconnects_total",
        "Times the Agones GameServer watch was reopened after it dropped or failed.",
        get(&agones.watch_reconnects),
    );

    let protocol_version = tickcast_shared::PROTOCOL_VERSION.to_string();
    f.gauge_with(
        "tickcast_build_info",
        "The running build (labels version, protocol_version, git_commit); always 1.",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("protocol_version", &protocol_version),
            ("git_commit", GIT_COMMIT),
        ],
        1.0,
    );
    f.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickcast_net::budget::{BudgetSource, MemoryBudget, TickBufferSize};

    fn sources() -> MetricSources {
        MetricSources {
            net: Arc::default(),
            progress: Arc::default(),
            sim: Arc::default(),
            recorder: None,
            draining: Arc::default(),
            memory_plan: MemoryPlan::new(
                Some(MemoryBudget {
                    bytes: 512 << 20,
                    source: BudgetSource::Configured,
                }),
                20 << 20,
                TickBufferSize {
                    without_players: 4 << 10,
                    per_player: 16,
                    least: 8 << 10,
                },
                64 << 10,
                1 << 10,
                2000,
            ),
            max_clients: 2000,
            tick_rate: 30,
            agones: Arc::default(),
        }
    }

    /// The sample lines of an exposition: `name{labels} value`.
    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    fn value(text: &str, series: &str) -> f64 {
        let line = samples(text)
            .into_iter()
            .find(|l| l.rsplit_once(' ').is_some_and(|(s, _)| s == series))
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"));
        line.rsplit_once(' ').unwrap().1.parse().unwrap()
    }

    #[test]
    fn counters_and_gauges_read_the_atomics_the_threads_bump() {
        let sources = sources();
        sources.net.peers.store(7, Ordering::Relaxed);
        sources.net.rejects[usize::from(RejectReason::OverMemoryBudget.code())]
            .store(3, Ordering::Relaxed);
        sources
            .net
            .count_disconnects(DisconnectReason::IdleTimeout, 2);
        sources.sim.late_ticks.store(5, Ordering::Relaxed);
        let text = encode(&sources, 123 << 20);
        assert_eq!(value(&text, "tickcast_clients"), 7.0);
        assert_eq!(
            value(
                &text,
                r#"tickcast_refusals_total{reason="over_memory_budget"}"#
            ),
            3.0
        );
        assert_eq!(
            value(&text, r#"tickcast_refusals_total{reason="bad_token"}"#),
            0.0
        );
        assert_eq!(
            value(&text, r#"tickcast_disconnects_total{code="idle_timeout"}"#),
            2.0
        );
        assert_eq!(value(&text, "tickcast_late_ticks_total"), 5.0);
        assert_eq!(
            value(&text, "tickcast_resident_memory_bytes"),
            (123u64 << 20) as f64
        );
        assert_eq!(
            value(&text, r#"tickcast_memory_budget_info{source="configured"}"#),
            1.0
        );
        assert_eq!(
            value(&text, "tickcast_memory_budget_bytes"),
            (512u64 << 20) as f64
        );
        assert!(value(&text, "tickcast_memory_budget_clients") > 0.0);
    }

    #[test]
    fn the_agones_state_gauge_marks_the_state_last_seen_and_only_it() {
        let mut sources = sources();
        let text = encode(&sources, 0);
        assert_eq!(
            value(&text, r#"tickcast_agones_state{state="Disabled"}"#),
            1.0
        );
        let status = Arc::new(AgonesStatus::new(GameServerState::Allocated));
        status.calls_ok.store(4, Ordering::Relaxed);
        status.calls_failed.store(1, Ordering::Relaxed);
        sources.agones = status;
        let text = encode(&sources, 0);
        let lit: Vec<&str> = GameServerState::ALL
            .into_iter()
            .map(|s| s.name())
            .filter(|name| {
                value(
                    &text,
                    &format!(r#"tickcast_agones_state{{state="{name}"}}"#),
                ) == 1.0
            })
            .collect();
        assert_eq!(lit, ["Allocated"]);
        assert_eq!(
            value(&text, r#"tickcast_agones_sdk_calls_total{result="ok"}"#),
            4.0
        );
        assert_eq!(
            value(&text, r#"tickcast_agones_sdk_calls_total{result="failed"}"#),
            1.0
        );
    }

    #[test]
    fn a_duration_histogram_is_in_seconds_with_cumulative_buckets() {
        let sources = sources();
        sources.sim.tick_duration.record_us(150);
        sources.sim.tick_duration.record_us(4_000);
        sources.sim.tick_duration.record_us(900_000);
        let text = encode(&sources, 0);
        let bucket = |le: &str| {
            value(
                &text,
                &format!(r#"tickcast_tick_duration_seconds_bucket{{le="{le}"}}"#),
            )
        };
        assert_eq!(bucket("0.00005"), 0.0);
        assert_eq!(bucket("0.0002"), 1.0);
        assert_eq!(bucket("0.005"), 2.0);
        assert_eq!(bucket("0.05"), 2.0);
        assert_eq!(bucket("+Inf"), 3.0);
        assert_eq!(value(&text, "tickcast_tick_duration_seconds_count"), 3.0);
        assert!((value(&text, "tickcast_tick_duration_seconds_sum") - 0.90415).abs() < 1e-9);
    }

    #[test]
    fn every_name_follows_the_conventions_and_no_label_names_a_client() {
        let text = encode(&sources(), 0);
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let mut words = line.split(' ').skip(2);
            let (name, kind) = (words.next().unwrap(), words.next().unwrap());
            assert!(name.starts_with("tickcast_"), "{line}");
            match kind {
                "counter" => assert!(name.ends_with("_total"), "{line}"),
                "histogram" => assert!(name.ends_with("_seconds"), "{line}"),
                _ => assert!(!name.ends_with("_total"), "{line}"),
            }
        }
        for sample in samples(&text) {
            assert!(
                !sample.contains("client_id") && !sample.contains("addr"),
                "{sample}"
            );
        }
        let commit = format!(r#"git_commit="{GIT_COMMIT}""#);
        assert!(text.contains(&commit), "{text}");
    }

    #[test]
    fn the_content_type_is_the_encoders_format() {
        assert!(CONTENT_TYPE.starts_with(prometheus::TEXT_FORMAT));
    }

    #[test]
    fn the_recorder_series_are_there_without_a_recorder() {
        let text = encode(&sources(), 0);
        assert_eq!(value(&text, "tickcast_recording"), 0.0);
        assert_eq!(value(&text, "tickcast_recorder_ticks_written_total"), 0.0);
    }
}
