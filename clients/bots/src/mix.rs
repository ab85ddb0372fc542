//! [`Mix`]: how many bots play each [`Behaviour`], as `--mix` gives it
//! (`walk=80,idle=10,stall=5,slow=5`).

use std::fmt;
use std::str::FromStr;

use crate::behaviour::Behaviour;

/// Why a `--mix` did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MixError {
    /// Nothing given.
    #[error("the mix is empty (expected e.g. walk=80,idle=10,stall=5,slow=5)")]
    Empty,
    /// An entry without `=`.
    #[error("`{0}` is not name=weight (e.g. walk=80)")]
    NotNameWeight(String),
    /// A name that is not a behaviour.
    #[error("unknown behaviour `{0}` (known: walk, idle, stall, slow, churn)")]
    UnknownBehaviour(String),
    /// A weight that is not a whole number.
    #[error("weight of {name} is `{weight}`, not a whole number from 0 to 1000000")]
    BadWeight {
        /// The behaviour.
        name: String,
        /// What was given.
        weight: String,
    },
    /// A behaviour given twice.
    #[error("{0} is given twice")]
    Duplicate(String),
    /// Every weight is zero.
    #[error("every weight is 0: at least one behaviour needs a weight above 0")]
    AllZero,
}

/// Largest weight accepted, so sums cannot overflow.
const MAX_WEIGHT: u32 = 1_000_000;

/// How many clients play each behaviour, as weights (percentages or any integers;
/// only their ratios matter). Default: `walk=100`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 5],
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            weights: [1, 0, 0, 0, 0],
        }
    }
}

impl FromStr for Mix {
    type Err = MixError;

    /// Parses `name=weight[,name=weight…]`, e.g. `walk=80,idle=10,stall=5,slow=5`.
    /// Strict: every entry is a known behaviour with a whole-number weight, none twice,
    /// not all zero. Spaces around names and weights are allowed; empty entries are not.
    fn from_str(text: &str) -> Result<Self, MixError> {
        if text.trim().is_empty() {
            return Err(MixError::Empty);
        }
        let mut weights = [0u32; 5];
        let mut given = [false; 5];
        for entry in text.split(',') {
            let Some((name, weight)) = entry.split_once('=') else {
                return Err(MixError::NotNameWeight(entry.trim().to_string()));
            };
            let (name, weight) = (name.trim(), weight.trim());
            let behaviour = Behaviour::from_name(name)
                .ok_or_else(|| MixError::UnknownBehaviour(name.to_string()))?;
            let value = weight
                .parse::<u32>()
                .ok()
                .filter(|w| *w <= MAX_WEIGHT && weight.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| MixError::BadWeight {
                    name: name.to_string(),
                    weight: weight.to_string(),
                })?;
            if std::mem::replace(&mut given[behaviour.index()], true) {
                return Err(MixError::Duplicate(name.to_string()));
            }
            weights[behaviour.index()] = value;
        }
        if weights.iter().all(|w| *w == 0) {
            return Err(MixError::AllZero);
        }
        Ok(Self { weights })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for behaviour in Behaviour::ALL {
            let weight = self.weights[behaviour.index()];
            if weight > 0 {
                if !first {
                    f.write_str(",")?;
                }
                write!(f, "{}={weight}", behaviour.name())?;
                first = false;
            }
        }
        Ok(())
    }
}

impl Mix {
    /// The weight of one behaviour.
    pub fn weight(&self, behaviour: Behaviour) -> u32 {
        self.weights[behaviour.index()]
    }

    /// How many of `clients` play each behaviour (indexed like [`Behaviour::ALL`]):
    /// proportional to the weights, rounded by largest remainder (ties to the earlier
    /// behaviour), so the counts always add up to `clients`.
    pub fn counts(&self, clients: usize) -> [usize; 5] {
        let total: u64 = self.weights.iter().map(|w| u64::from(*w)).sum();
        let mut counts = [0usize; 5];
        let mut remainders = [(0u64, 0usize); 5];
        let mut assigned = 0;
        for (i, weight) in self.weights.iter().enumerate() {
            let exact = clients as u64 * u64::from(*weight);
            counts[i] = (exact / total) as usize;
            remainders[i] = (exact % total, i);
            assigned += counts[i];
        }
        // Largest remainder first; the stable sort keeps ties in behaviour order.
        remainders.sort_by_key(|r| std::cmp::Reverse(r.0));
        for (_, i) in remainders.iter().take(clients - assigned) {
            counts[*i] += 1;
        }
        counts
    }

    /// The behaviour of each of `clients` bots, interleaved (smooth weighted round
    /// robin over [`Mix::counts`]) so a ramp brings every behaviour in evenly.
    pub fn assign(&self, clients: usize) -> Vec<Behaviour> {
        let counts = self.counts(clients);
        let mut credit = [0i64; 5];
        let mut left = counts;
        let mut out = Vec::with_capacity(clients);
        for _ in 0..clients {
            for i in 0..5 {
                if left[i] > 0 {
                    credit[i] += counts[i] as i64;
                }
            }
            let pick = (0..5)
                .filter(|i| left[*i] > 0)
                .max_by_key(|i| (credit[*i], std::cmp::Reverse(*i)))
                .unwrap_or(0);
            credit[pick] -= clients as i64;
            left[pick] -= 1;
            out.push(Behaviour::ALL[pick]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(text: &str) -> Result<Mix, MixError> {
        text.parse()
    }

    #[test]
    fn a_mix_parses_weights_and_prints_back() {
        let m = mix("walk=80,idle=10,stall=5,slow=5,churn=0").unwrap();
        assert_eq!(m.weight(Behaviour::Walk), 80);
        assert_eq!(m.weight(Behaviour::Churn), 0);
        assert_eq!(m.to_string(), "walk=80,idle=10,stall=5,slow=5");
        assert_eq!(
            mix(" idle = 3 , walk=1 ").unwrap().to_string(),
            "walk=1,idle=3"
        );
        assert_eq!(Mix::default().to_string(), "walk=1");
    }

    #[test]
    fn a_bad_mix_says_what_is_wrong() {
        assert_eq!(mix(""), Err(MixError::Empty));
        assert_eq!(mix("walk"), Err(MixError::NotNameWeight("walk".into())));
        assert_eq!(mix("walk=1,"), Err(MixError::NotNameWeight("".into())));
        assert_eq!(
            mix("walk=1,run=2"),
            Err(MixError::UnknownBehaviour("run".into()))
        );
        for weight in ["-1", "+1", "1.5", "", "x", "1000001", "99999999999"] {
            assert_eq!(
                mix(&format!("walk={weight}")),
                Err(MixError::BadWeight {
                    name: "walk".into(),
                    weight: weight.into()
                }),
                "{weight}"
            );
        }
        assert_eq!(
            mix("walk=1,walk=2"),
            Err(MixError::Duplicate("walk".into()))
        );
        assert_eq!(mix("walk=0,idle=0"), Err(MixError::AllZero));
        assert_eq!(
            mix("Walk=1").unwrap_err().to_string(),
            "unknown behaviour `Walk` (known: walk, idle, stall, slow, churn)"
        );
    }

    #[test]
    fn counts_follow_the_weights_and_add_up() {
        let m = mix("walk=80,idle=10,stall=5,slow=5").unwrap();
        assert_eq!(m.counts(100), [80, 10, 5, 5, 0]);
        assert_eq!(m.counts(2000), [1600, 200, 100, 100, 0]);
        // 10 clients: 8, 1, then 0.5 each for stall and slow; the tie goes to stall.
        assert_eq!(m.counts(10), [8, 1, 1, 0, 0]);
        assert_eq!(m.counts(1), [1, 0, 0, 0, 0]);
        let thirds = mix("walk=1,idle=1,churn=1").unwrap();
        for clients in 0..50 {
            assert_eq!(thirds.counts(clients).iter().sum::<usize>(), clients);
        }
        assert_eq!(thirds.counts(4), [2, 1, 0, 0, 1]);
    }

    #[test]
    fn behaviours_are_interleaved_in_their_counts() {
        let m = mix("walk=50,stall=25,churn=25").unwrap();
        let assigned = m.assign(8);
        let count = |b| assigned.iter().filter(|x| **x == b).count();
        assert_eq!(count(Behaviour::Walk), 4);
        assert_eq!(count(Behaviour::Stall), 2);
        assert_eq!(count(Behaviour::Churn), 2);
        // Interleaved: the first half already has every behaviour.
        for b in [Behaviour::Walk, Behaviour::Stall, Behaviour::Churn] {
            assert!(assigned[..4].contains(&b), "{assigned:?}");
        }
    }
}
