//! What the driver did over its life, logged once when it stops: how often the loop
//! turned and why connections were driven, and what quinn-proto sent and received for
//! them (packets, send calls, ACK frames). The benchmark reads the line to tell what an
//! ACK policy or a batching change moved (docs/PERFORMANCE.md, issue #15); nothing reads
//! it at run time. Plain counters: no allocation, no atomics (the net thread owns it).

use quinn_proto::ConnectionStats;

/// The loop's own counts.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct LoopTally {
    /// Turns of the loop (one `epoll_wait` each).
    pub(super) turns: u64,
    /// Timer-heap entries that were a connection's queued deadline when they came up.
    pub(super) timer_pops: u64,
    /// Of those, the ones where nothing was due (quinn had moved the timer later, e.g. a
    /// delayed ACK that left in a snapshot): re-queued without driving the connection.
    pub(super) timer_pops_idle: u64,
    /// Connections driven (events, application events, transmits).
    pub(super) drives: u64,
    /// Transmits handed to the socket (one `sendmsg` each, GSO batches included).
    pub(super) sends: u64,
}

/// quinn-proto's per-connection counts, summed.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct FrameTally {
    packets_sent: u64,
    send_calls: u64,
    packets_received: u64,
    acks_sent: u64,
    acks_received: u64,
    datagrams_sent: u64,
    datagrams_received: u64,
    pings_sent: u64,
    immediate_acks_sent: u64,
    ack_frequency_sent: u64,
}

impl FrameTally {
    pub(super) fn add(&mut self, stats: &ConnectionStats) {
        self.packets_sent += stats.udp_tx.datagrams;
        self.send_calls += stats.udp_tx.ios;
        self.packets_received += stats.udp_rx.datagrams;
        self.acks_sent += stats.frame_tx.acks;
        self.acks_received += stats.frame_rx.acks;
        self.datagrams_sent += stats.frame_tx.datagram;
        self.datagrams_received += stats.frame_rx.datagram;
        self.pings_sent += stats.frame_tx.ping;
        self.immediate_acks_sent += stats.frame_tx.immediate_ack;
        self.ack_frequency_sent += stats.frame_tx.ack_frequency;
    }

    /// Logs the totals, one line.
    pub(super) fn log(&self, loop_tally: &LoopTally) {
        tracing::info!(
            turns = loop_tally.turns,
            timer_pops = loop_tally.timer_pops,
            timer_pops_idle = loop_tally.timer_pops_idle,
            drives = loop_tally.drives,
            sends = loop_tally.sends,
            packets_sent = self.packets_sent,
            send_calls = self.send_calls,
            packets_received = self.packets_received,
            acks_sent = self.acks_sent,
            acks_received = self.acks_received,
            datagrams_sent = self.datagrams_sent,
            datagrams_received = self.datagrams_received,
            pings_sent = self.pings_sent,
            immediate_acks_sent = self.immediate_acks_sent,
            ack_frequency_sent = self.ack_frequency_sent,
            "net driver totals"
        );
    }
}
