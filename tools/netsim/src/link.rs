//! One direction of the conditioned link as a pure state machine: each packet's fate is
//! a function of its size, the time passed in, the link's state and a seeded RNG. No
//! socket, no clock: the tests below step it on made-up times.
//!
//! A packet goes through, in order: the MTU clamp (too large: dropped), the rate cap's
//! FIFO queue (no room: dropped, drop-tail), the loss model (lost on the wire after the
//! queue, so a lost packet still used its share of the link), then delay and jitter
//! (FIFO: jitter never reorders), reordering (held back so later packets overtake it)
//! and duplication. Each random decision draws from its own seeded stream, so changing
//! one setting (say the delay) leaves the other decisions (which packets are lost) the
//! same.

use std::time::Duration;

use crate::spec::LinkSpec;

/// A small seeded PRNG (SplitMix64): fast, good enough for a link simulator, and the
/// same numbers on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Larger than the MTU clamp.
    Mtu,
    /// The rate cap's queue had no room (drop-tail).
    Queue,
    /// The loss model lost it.
    Loss,
}

/// What happens to one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Delivered at `at` (time since the link's start), once or twice.
    Deliver {
        /// When it leaves the link.
        at: Duration,
        /// 1, or 2 when duplicated (both copies at `at`).
        copies: u8,
    },
    /// Dropped.
    Drop(DropReason),
}

/// What a link did, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// Packets offered to the link.
    pub packets: u64,
    /// Bytes offered.
    pub bytes: u64,
    /// Packets delivered (duplicates not counted twice).
    pub delivered: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Packets held back for reordering.
    pub reordered: u64,
    /// Packets lost by the loss model.
    pub dropped_loss: u64,
    /// Packets dropped because the rate cap's queue was full.
    pub dropped_queue: u64,
    /// Packets dropped for exceeding the MTU clamp.
    pub dropped_mtu: u64,
    /// The most bytes the rate cap's queue held (this packet included).
    pub queue_peak_bytes: u64,
}

impl LinkCounters {
    /// Packets dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_loss + self.dropped_queue + self.dropped_mtu
    }

    /// Adds another link's counts (the peak is the larger one).
    pub fn add(&mut self, other: &LinkCounters) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.delivered += other.delivered;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.dropped_loss += other.dropped_loss;
        self.dropped_queue += other.dropped_queue;
        self.dropped_mtu += other.dropped_mtu;
        self.queue_peak_bytes = self.queue_peak_bytes.max(other.queue_peak_bytes);
    }
}

/// One direction of the link.
#[derive(Debug, Clone)]
pub struct Link {
    spec: LinkSpec,
    /// Gilbert–Elliott transition probabilities (enter the bad state, leave it), when
    /// losses come in bursts.
    bursts: Option<(f64, f64)>,
    in_bad_state: bool,
    loss_rng: Rng,
    jitter_rng: Rng,
    reorder_rng: Rng,
    dup_rng: Rng,
    /// When the rate cap's serializer is free again.
    busy_until: Duration,
    /// The latest delivery time given to an in-order packet (FIFO under jitter).
    last_in_order: Duration,
    counters: LinkCounters,
}

impl Link {
    /// A link doing `spec`, its random decisions drawn from streams derived from `seed`.
    pub fn new(spec: LinkSpec, seed: u64) -> Self {
        let mut seeds = Rng::new(seed);
        let bursts = spec.burst.map(|mean| {
            // Leave the bad state after `mean` packets on average; enter it so that the
            // long-run fraction of time in it (every packet lost) is `loss`.
            let leave = 1.0 / mean;
            let enter = if spec.loss >= 1.0 {
                1.0
            } else {
                (spec.loss * leave / (1.0 - spec.loss)).min(1.0)
            };
            (enter, leave)
        });
        Self {
            spec,
            bursts,
            in_bad_state: false,
            loss_rng: Rng::new(seeds.next_u64()),
            jitter_rng: Rng::new(seeds.next_u64()),
            reorder_rng: Rng::new(seeds.next_u64()),
            dup_rng: Rng::new(seeds.next_u64()),
            busy_until: Duration::ZERO,
            last_in_order: Duration::ZERO,
            counters: LinkCounters::default(),
        }
    }

    /// What the link did so far.
    pub fn counters(&self) -> LinkCounters {
        self.counters
    }

    /// Bytes waiting in the rate cap's queue at `now`.
    pub fn queued_bytes(&self, now: Duration) -> u64 {
        match self.spec.rate_bps {
            Some(rate) if self.busy_until > now => {
                ((self.busy_until - now).as_secs_f64() * rate as f64 / 8.0).ceil() as u64
            }
            _ => 0,
        }
    }

    /// Decides the fate of a `len`-byte packet offered at `now` (time since the link's
    /// start; calls come in time order).
    pub fn on_packet(&mut self, now: Duration, len: usize) -> Fate {
        self.counters.packets += 1;
        self.counters.bytes += len as u64;
        if self.spec.mtu.is_some_and(|mtu| len > mtu) {
            self.counters.dropped_mtu += 1;
            return Fate::Drop(DropReason::Mtu);
        }
        let sent_at = match self.spec.rate_bps {
            Some(rate) => {
                let backlog = self.queued_bytes(now) + len as u64;
                if backlog > self.spec.queue_bytes as u64 {
                    self.counters.dropped_queue += 1;
                    return Fate::Drop(DropReason::Queue);
                }
                self.counters.queue_peak_bytes = self.counters.queue_peak_bytes.max(backlog);
                let start = self.busy_until.max(now);
                self.busy_until = start + Duration::from_secs_f64(len as f64 * 8.0 / rate as f64);
                self.busy_until
            }
            None => now,
        };
        if self.lost() {
            self.counters.dropped_loss += 1;
            return Fate::Drop(DropReason::Loss);
        }
        let jitter = self.spec.jitter.as_secs_f64();
        let delay = if jitter > 0.0 {
            let offset = jitter * (2.0 * self.jitter_rng.unit() - 1.0);
            Duration::from_secs_f64((self.spec.delay.as_secs_f64() + offset).max(0.0))
        } else {
            self.spec.delay
        };
        let mut at = (sent_at + delay).max(self.last_in_order);
        if self.reorder_rng.chance(self.spec.reorder) {
            // Held back without moving the in-order mark: the next packets overtake it.
            self.counters.reordered += 1;
            at += self.spec.reorder_gap;
        } else {
            self.last_in_order = at;
        }
        let copies = if self.dup_rng.chance(self.spec.dup) {
            self.counters.duplicated += 1;
            2
        } else {
            1
        };
        self.counters.delivered += 1;
        Fate::Deliver { at, copies }
    }

    /// One draw of the loss model.
    fn lost(&mut self) -> bool {
        match self.bursts {
            None => self.loss_rng.chance(self.spec.loss),
            Some((enter, leave)) => {
                let flip = if self.in_bad_state { leave } else { enter };
                if self.loss_rng.chance(flip) {
                    self.in_bad_state = !self.in_bad_state;
                }
                self.in_bad_state
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn link(text: &str) -> Link {
        let spec: crate::NetsimSpec = text.parse().unwrap();
        Link::new(spec.down, spec.seed)
    }

    /// Offers `n` packets of `len` bytes, one every `every`, and returns their fates.
    fn offer(link: &mut Link, n: u64, len: usize, every: Duration) -> Vec<Fate> {
        (0..n)
            .map(|i| link.on_packet(every * i as u32, len))
            .collect()
    }

    #[test]
    fn a_perfect_link_delivers_everything_at_once() {
        let mut l = link("");
        for fate in offer(&mut l, 100, 1200, ms(1)) {
            assert!(matches!(fate, Fate::Deliver { copies: 1, .. }));
        }
        assert_eq!(
            l.on_packet(ms(500), 10),
            Fate::Deliver {
                at: ms(500),
                copies: 1
            }
        );
        assert_eq!(l.counters().delivered, 101);
        assert_eq!(l.counters().dropped(), 0);
    }

    #[test]
    fn uniform_loss_hits_its_rate_and_the_same_seed_gives_the_same_losses() {
        let mut a = link("loss=20%,seed=7");
        let fates = offer(&mut a, 20_000, 100, ms(1));
        let lost = a.counters().dropped_loss as f64 / 20_000.0;
        assert!((lost - 0.20).abs() < 0.01, "{lost}");
        // Same seed, same decisions; another seed, others.
        let mut b = link("loss=20%,seed=7");
        assert_eq!(offer(&mut b, 20_000, 100, ms(1)), fates);
        let mut c = link("loss=20%,seed=8");
        assert_ne!(offer(&mut c, 20_000, 100, ms(1)), fates);
        // The loss stream is its own: adding delay and jitter loses the same packets.
        let mut d = link("loss=20%,delay=40ms,jitter=5ms,seed=7");
        let dropped = |fates: &[Fate]| {
            fates
                .iter()
                .map(|f| matches!(f, Fate::Drop(_)))
                .collect::<Vec<_>>()
        };
        assert_eq!(dropped(&offer(&mut d, 20_000, 100, ms(1))), dropped(&fates));
    }

    #[test]
    fn bursty_loss_keeps_its_rate_and_comes_in_runs_of_the_mean_length() {
        let mut l = link("loss=2%,burst=4,seed=3");
        let fates = offer(&mut l, 200_000, 100, ms(1));
        let lost = l.counters().dropped_loss as f64 / 200_000.0;
        assert!((lost - 0.02).abs() < 0.004, "{lost}");
        let mut runs = Vec::new();
        let mut run = 0;
        for fate in &fates {
            if matches!(fate, Fate::Drop(DropReason::Loss)) {
                run += 1;
            } else if run > 0 {
                runs.push(run);
                run = 0;
            }
        }
        let mean = runs.iter().sum::<u32>() as f64 / runs.len() as f64;
        assert!((mean - 4.0).abs() < 0.4, "mean burst {mean}");
        // Uniform loss at the same rate: runs of about one.
        let mut u = link("loss=2%,seed=3");
        let fates = offer(&mut u, 200_000, 100, ms(1));
        let pairs = fates
            .windows(2)
            .filter(|w| w.iter().all(|f| matches!(f, Fate::Drop(_))))
            .count();
        assert!(pairs < 200, "{pairs} back-to-back losses");
    }

    #[test]
    fn delay_and_jitter_never_reorder_and_stay_in_their_band() {
        let mut l = link("delay=40ms,jitter=5ms,seed=1");
        let mut last = Duration::ZERO;
        let mut earliest = Duration::MAX;
        let mut latest = Duration::ZERO;
        // 20 ms apart, wider than the band: FIFO never holds one behind another.
        for i in 0..2_000u32 {
            let now = ms(20) * i;
            let Fate::Deliver { at, copies: 1 } = l.on_packet(now, 100) else {
                panic!("a lossless link drops nothing")
            };
            assert!(at >= last, "packet {i} overtook the one before it");
            last = at;
            earliest = earliest.min(at - now);
            latest = latest.max(at - now);
        }
        assert!(earliest >= ms(35), "{earliest:?}");
        assert!(latest <= ms(45), "{latest:?}");
        assert!(latest > ms(44) && earliest < ms(36), "the band is used");
        // Packets closer together than the band: still never reordered.
        let mut dense = link("delay=40ms,jitter=5ms,seed=1");
        let mut last = Duration::ZERO;
        for i in 0..10_000u32 {
            let Fate::Deliver { at, .. } =
                dense.on_packet(Duration::from_micros(u64::from(i) * 300), 100)
            else {
                panic!("a lossless link drops nothing")
            };
            assert!(at >= last, "packet {i} overtook the one before it");
            last = at;
        }
    }

    #[test]
    fn reordered_packets_are_overtaken_and_counted() {
        let mut l = link("delay=10ms,reorder=10%,reorder-gap=5ms,seed=2");
        let fates = offer(&mut l, 1_000, 100, ms(1));
        let times: Vec<Duration> = fates
            .iter()
            .map(|f| match f {
                Fate::Deliver { at, .. } => *at,
                Fate::Drop(_) => panic!("nothing is lost"),
            })
            .collect();
        let overtaken = times.windows(2).filter(|w| w[1] < w[0]).count() as u64;
        let reordered = l.counters().reordered;
        assert!((60..=140).contains(&reordered), "{reordered}");
        // Each held-back packet (5 ms) is overtaken by the packets of the next 5 ms.
        assert!(
            overtaken >= reordered * 9 / 10,
            "{overtaken} of {reordered}"
        );
    }

    #[test]
    fn duplicates_and_the_mtu_clamp_are_counted() {
        let mut l = link("dup=50%,mtu=1200,seed=4");
        let fates = offer(&mut l, 1_000, 1200, ms(1));
        let twice = fates
            .iter()
            .filter(|f| matches!(f, Fate::Deliver { copies: 2, .. }))
            .count() as u64;
        assert_eq!(twice, l.counters().duplicated);
        assert!((400..=600).contains(&twice), "{twice}");
        assert_eq!(l.on_packet(ms(2_000), 1201), Fate::Drop(DropReason::Mtu));
        assert_eq!(l.counters().dropped_mtu, 1);
    }

    #[test]
    fn a_rate_cap_serializes_packets_and_drops_the_tail_of_a_full_queue() {
        // 80 kbit/s: a 1,000-byte packet takes 100 ms on the wire. Queue: 3,000 bytes.
        let mut l = link("rate=80kbit,queue=3000B,delay=10ms");
        assert_eq!(
            l.on_packet(ms(0), 1000),
            Fate::Deliver {
                at: ms(110),
                copies: 1
            }
        );
        assert_eq!(
            l.on_packet(ms(0), 1000),
            Fate::Deliver {
                at: ms(210),
                copies: 1
            }
        );
        assert_eq!(l.queued_bytes(ms(0)), 2000);
        assert_eq!(
            l.on_packet(ms(0), 1000),
            Fate::Deliver {
                at: ms(310),
                copies: 1
            }
        );
        // Three packets queued: the fourth does not fit.
        assert_eq!(l.on_packet(ms(0), 1000), Fate::Drop(DropReason::Queue));
        // 150 ms later one and a half packets have left: room again.
        assert_eq!(l.queued_bytes(ms(150)), 1500);
        assert_eq!(
            l.on_packet(ms(150), 1000),
            Fate::Deliver {
                at: ms(410),
                copies: 1
            }
        );
        let c = l.counters();
        assert_eq!(
            (c.delivered, c.dropped_queue, c.queue_peak_bytes),
            (4, 1, 3000)
        );
        // An idle link starts afresh.
        assert_eq!(l.queued_bytes(ms(1_000)), 0);
        assert_eq!(
            l.on_packet(ms(1_000), 1000),
            Fate::Deliver {
                at: ms(1_110),
                copies: 1
            }
        );
    }

    #[test]
    fn a_capped_link_offered_twice_its_rate_delivers_its_rate_and_a_bounded_queue() {
        // 256 kbit/s = 32,000 B/s offered 64,000 B/s for 10 s.
        let mut l = link("rate=256kbit,queue=64KiB");
        let fates = offer(&mut l, 10_000, 64, ms(1));
        let delivered = fates
            .iter()
            .filter(|f| matches!(f, Fate::Deliver { .. }))
            .count() as f64
            * 64.0;
        let rate = delivered / 10.0;
        // The rate plus the queue it filled, spread over the run.
        assert!(
            (31_900.0..=32_000.0 + 65_536.0 / 10.0 + 64.0).contains(&rate),
            "{rate}"
        );
        assert!(l.counters().queue_peak_bytes <= 65_536);
        assert!(l.counters().dropped_queue > 3_900, "{:?}", l.counters());
    }
}
