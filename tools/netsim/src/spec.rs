//! The link spec: what each direction of the conditioned link does, parsed from one
//! string such as `loss=5%,delay=40ms,jitter=5ms,seed=7` or
//! `down:loss=20%,down:delay=100ms,up:delay=100ms`.
//!
//! Grammar: comma-separated `key=value` entries. A key applies to both directions
//! unless it starts with `up:` (client → server) or `down:` (server → client); a
//! prefixed entry wins over an unprefixed one whatever their order, and the same key
//! twice in the same scope is an error. `seed` has no direction.
//!
//! | key | value | default | meaning |
//! |---|---|---|---|
//! | `loss` | percentage, `0%`–`100%` | `0%` | long-run fraction of packets lost |
//! | `burst` | packets, ≥ 1 | none (uniform) | mean length of a loss burst: losses follow a Gilbert–Elliott chain (good state loses nothing, bad state loses everything) with the long-run loss rate `loss` |
//! | `delay` | duration (`40ms`, `1s`, `500us`) | `0` | one-way propagation delay |
//! | `jitter` | duration | `0` | each packet's delay is uniform in `delay ± jitter`; packets keep their order (a link is FIFO) |
//! | `reorder` | percentage | `0%` | packets held back by `reorder-gap` so later ones overtake them |
//! | `reorder-gap` | duration | `10ms` | how long a reordered packet is held back |
//! | `dup` | percentage | `0%` | packets delivered twice |
//! | `rate` | `256kbit`, `2mbit`, `1gbit`, `8000bit` (per second) | none | bandwidth cap: packets are serialized at this rate behind a FIFO queue |
//! | `queue` | bytes: `64KiB`, `1MiB`, `1500` | `64KiB` | the cap's queue; a packet that does not fit is dropped (drop-tail, counted) |
//! | `mtu` | bytes, ≥ 1 | none | packets larger than this are dropped (counted) |
//! | `seed` | integer | `1` | seeds every random decision of both directions |

use std::time::Duration;

/// Why a spec did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// An entry without `=`.
    #[error("`{0}` is not key=value (e.g. loss=5%)")]
    NotKeyValue(String),
    /// A key this tool does not know.
    #[error(
        "unknown key `{0}` (known: loss, burst, delay, jitter, reorder, reorder-gap, dup, rate, queue, mtu, seed; prefix up: or down: for one direction)"
    )]
    UnknownKey(String),
    /// A value that does not parse for its key.
    #[error("{key}: `{value}` is not {expected}")]
    BadValue {
        /// The key.
        key: String,
        /// What was given.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// The same key twice in one scope.
    #[error("`{0}` is given twice")]
    Duplicate(String),
    /// `seed` with a direction.
    #[error("seed applies to both directions: write seed=N without up: or down:")]
    DirectedSeed,
}

/// What one direction of the link does. `Default` is a perfect link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkSpec {
    /// Long-run fraction of packets lost, 0 to 1.
    pub loss: f64,
    /// Mean loss-burst length in packets (Gilbert–Elliott); `None`: independent losses.
    pub burst: Option<f64>,
    /// One-way delay.
    pub delay: Duration,
    /// Each packet's delay is uniform in `delay ± jitter` (never below zero).
    pub jitter: Duration,
    /// Fraction of packets held back by `reorder_gap`, 0 to 1.
    pub reorder: f64,
    /// How long a reordered packet is held back. Default 10 ms.
    pub reorder_gap: Duration,
    /// Fraction of packets delivered twice, 0 to 1.
    pub dup: f64,
    /// Bandwidth cap in bits per second; `None`: no cap.
    pub rate_bps: Option<u64>,
    /// Bytes the cap's queue holds before it drops (drop-tail). Default 64 KiB: a
    /// typical home router's buffer at these rates, a second or two of queueing.
    pub queue_bytes: usize,
    /// Packets larger than this are dropped; `None`: no clamp.
    pub mtu: Option<usize>,
}

impl Default for LinkSpec {
    fn default() -> Self {
        Self {
            loss: 0.0,
            burst: None,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder: 0.0,
            reorder_gap: Duration::from_millis(10),
            dup: 0.0,
            rate_bps: None,
            queue_bytes: 64 << 10,
            mtu: None,
        }
    }
}

/// Both directions and the seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetsimSpec {
    /// Client → server.
    pub up: LinkSpec,
    /// Server → client.
    pub down: LinkSpec,
    /// Seeds every random decision.
    pub seed: u64,
}

impl Default for NetsimSpec {
    fn default() -> Self {
        Self {
            up: LinkSpec::default(),
            down: LinkSpec::default(),
            seed: 1,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Both,
    Up,
    Down,
}

const KEYS: [&str; 10] = [
    "loss",
    "burst",
    "delay",
    "jitter",
    "reorder",
    "reorder-gap",
    "dup",
    "rate",
    "queue",
    "mtu",
];

impl std::str::FromStr for NetsimSpec {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, SpecError> {
        let mut spec = NetsimSpec::default();
        // (scope, key) pairs seen, to refuse duplicates and let prefixed entries win.
        let mut seen: Vec<(Scope, &str)> = Vec::new();
        let mut directed: Vec<(Scope, &str, &str)> = Vec::new();
        let mut seed_given = false;
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((key, value)) = entry.split_once('=') else {
                return Err(SpecError::NotKeyValue(entry.to_string()));
            };
            let (key, value) = (key.trim(), value.trim());
            let (scope, bare) = if let Some(rest) = key.strip_prefix("up:") {
                (Scope::Up, rest)
            } else if let Some(rest) = key.strip_prefix("down:") {
                (Scope::Down, rest)
            } else {
                (Scope::Both, key)
            };
            if bare == "seed" {
                if scope != Scope::Both {
                    return Err(SpecError::DirectedSeed);
                }
                if std::mem::replace(&mut seed_given, true) {
                    return Err(SpecError::Duplicate(key.to_string()));
                }
                spec.seed = value.parse().map_err(|_| SpecError::BadValue {
                    key: key.to_string(),
                    value: value.to_string(),
                    expected: "a whole number",
                })?;
                continue;
            }
            let Some(&bare) = KEYS.iter().find(|k| **k == bare) else {
                return Err(SpecError::UnknownKey(key.to_string()));
            };
            if seen.contains(&(scope, bare)) {
                return Err(SpecError::Duplicate(key.to_string()));
            }
            seen.push((scope, bare));
            directed.push((scope, bare, value));
        }
        // Unprefixed first, so that up:/down: entries override them whatever the order.
        directed.sort_by_key(|(scope, _, _)| *scope != Scope::Both);
        for (scope, key, value) in directed {
            if scope != Scope::Down {
                apply(&mut spec.up, key, value)?;
            }
            if scope != Scope::Up {
                apply(&mut spec.down, key, value)?;
            }
        }
        Ok(spec)
    }
}

fn apply(link: &mut LinkSpec, key: &str, value: &str) -> Result<(), SpecError> {
    let bad = |expected: &'static str| SpecError::BadValue {
        key: key.to_string(),
        value: value.to_string(),
        expected,
    };
    match key {
        "loss" => link.loss = parse_percent(value).ok_or_else(|| bad(PERCENT))?,
        "reorder" => link.reorder = parse_percent(value).ok_or_else(|| bad(PERCENT))?,
        "dup" => link.dup = parse_percent(value).ok_or_else(|| bad(PERCENT))?,
        "burst" => {
            let packets: f64 = value
                .parse()
                .ok()
                .filter(|b: &f64| b.is_finite() && *b >= 1.0)
                .ok_or_else(|| bad("a mean burst length in packets, at least 1"))?;
            link.burst = Some(packets);
        }
        "delay" => link.delay = parse_duration(value).ok_or_else(|| bad(DURATION))?,
        "jitter" => link.jitter = parse_duration(value).ok_or_else(|| bad(DURATION))?,
        "reorder-gap" => link.reorder_gap = parse_duration(value).ok_or_else(|| bad(DURATION))?,
        "rate" => {
            link.rate_bps = Some(
                parse_rate(value).ok_or_else(|| bad("a rate such as 256kbit, 2mbit or 8000bit"))?,
            );
        }
        "queue" => {
            link.queue_bytes =
                parse_bytes(value).ok_or_else(|| bad("a size such as 64KiB, 1MiB or 1500"))?;
        }
        "mtu" => {
            link.mtu = Some(
                value
                    .parse()
                    .ok()
                    .filter(|m| *m >= 1)
                    .ok_or_else(|| bad("a size in bytes, at least 1"))?,
            );
        }
        _ => return Err(SpecError::UnknownKey(key.to_string())),
    }
    Ok(())
}

const PERCENT: &str = "a percentage from 0% to 100% (e.g. 5% or 0.5%)";
const DURATION: &str = "a duration such as 40ms, 1s or 500us";

fn parse_percent(value: &str) -> Option<f64> {
    let number: f64 = value.strip_suffix('%')?.trim().parse().ok()?;
    (number.is_finite() && (0.0..=100.0).contains(&number)).then_some(number / 100.0)
}

fn parse_duration(value: &str) -> Option<Duration> {
    if value == "0" {
        return Some(Duration::ZERO);
    }
    let (number, unit) = split_unit(value);
    let number: f64 = number
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    let seconds = match unit {
        "s" => number,
        "ms" => number / 1e3,
        "us" | "µs" => number / 1e6,
        _ => return None,
    };
    // An hour of one-way delay is no network; refuse it rather than hold packets for it.
    (seconds <= 3600.0).then(|| Duration::from_secs_f64(seconds))
}

fn parse_rate(value: &str) -> Option<u64> {
    let (number, unit) = split_unit(value);
    let number: f64 = number
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n > 0.0)?;
    let scale = match unit.to_ascii_lowercase().as_str() {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        _ => return None,
    };
    let bps = number * scale;
    (1.0..=1e12).contains(&bps).then_some(bps as u64)
}

fn parse_bytes(value: &str) -> Option<usize> {
    let (number, unit) = split_unit(value);
    let number: u64 = number.parse().ok()?;
    let scale: u64 = match unit {
        "" | "B" => 1,
        "KB" => 1000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        _ => return None,
    };
    let bytes = number.checked_mul(scale)?;
    // A queue beyond a gigabyte holds no game traffic; it only hides a mistake.
    (bytes <= 1 << 30).then_some(bytes as usize)
}

/// `"40ms"` → `("40", "ms")`.
fn split_unit(value: &str) -> (&str, &str) {
    let at = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    (&value[..at], value[at..].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Result<NetsimSpec, SpecError> {
        text.parse()
    }

    #[test]
    fn the_example_spec_sets_both_directions() {
        let s = spec(
            "loss=5%,delay=40ms,jitter=5ms,burst=3,rate=256kbit,queue=64KiB,mtu=1200,dup=1%,reorder=1%,seed=7",
        )
        .unwrap();
        assert_eq!(s.seed, 7);
        assert_eq!(s.up, s.down);
        let link = s.down;
        assert!((link.loss - 0.05).abs() < 1e-12);
        assert_eq!(link.burst, Some(3.0));
        assert_eq!(link.delay, Duration::from_millis(40));
        assert_eq!(link.jitter, Duration::from_millis(5));
        assert_eq!(link.rate_bps, Some(256_000));
        assert_eq!(link.queue_bytes, 65_536);
        assert_eq!(link.mtu, Some(1200));
        assert!((link.dup - 0.01).abs() < 1e-12);
        assert!((link.reorder - 0.01).abs() < 1e-12);
        assert_eq!(link.reorder_gap, Duration::from_millis(10));
    }

    #[test]
    fn a_prefixed_entry_wins_over_a_plain_one_in_any_order() {
        let s = spec("down:loss=20%,loss=1%,up:delay=5ms,delay=100ms").unwrap();
        assert!((s.down.loss - 0.2).abs() < 1e-12);
        assert!((s.up.loss - 0.01).abs() < 1e-12);
        assert_eq!(s.up.delay, Duration::from_millis(5));
        assert_eq!(s.down.delay, Duration::from_millis(100));
        assert_eq!(spec("").unwrap(), NetsimSpec::default());
        assert_eq!(
            spec(" rate = 2mbit , queue=1500 ").unwrap().up.rate_bps,
            Some(2_000_000)
        );
        assert_eq!(spec("delay=0").unwrap().up.delay, Duration::ZERO);
        assert_eq!(
            spec("delay=500us").unwrap().up.delay,
            Duration::from_micros(500)
        );
    }

    #[test]
    fn a_bad_spec_says_what_is_wrong() {
        assert_eq!(spec("loss"), Err(SpecError::NotKeyValue("loss".into())));
        assert_eq!(spec("lose=5%"), Err(SpecError::UnknownKey("lose".into())));
        assert_eq!(
            spec("sideways:loss=5%"),
            Err(SpecError::UnknownKey("sideways:loss".into()))
        );
        assert_eq!(
            spec("loss=5%,loss=6%"),
            Err(SpecError::Duplicate("loss".into()))
        );
        assert_eq!(spec("up:seed=3"), Err(SpecError::DirectedSeed));
        for bad in [
            "loss=5",
            "loss=101%",
            "loss=-1%",
            "delay=40",
            "delay=2h",
            "rate=256k",
            "rate=0bit",
            "queue=64kb",
            "mtu=0",
            "burst=0.5",
            "seed=x",
        ] {
            assert!(
                matches!(spec(bad), Err(SpecError::BadValue { .. })),
                "{bad}: {:?}",
                spec(bad)
            );
        }
        assert_eq!(
            spec("loss=5").unwrap_err().to_string(),
            "loss: `5` is not a percentage from 0% to 100% (e.g. 5% or 0.5%)"
        );
    }
}
