//! [`Tick`]: a simulation tick number, and the one place its wrap-around is written.
//!
//! A tick is a `u32` that counts up by one per step and wraps from `u32::MAX` to 0
//! (at 60 Hz after about 2.3 years, sooner for a server started at a high tick or a
//! client fed hostile bytes). Ticks are compared as *serial numbers* (RFC 1982 with 32
//! bits): `a` is after `b` when going forward from `b` reaches `a` in fewer than 2^31
//! steps. So 0 is after `u32::MAX`, and the order holds across the wrap for any two
//! ticks less than 2^31 apart — 2.3 years at 30 Hz, far beyond any window a client or
//! server keeps. Two ticks exactly 2^31 apart are neither before nor after each other.
//!
//! Serial order is not transitive over the whole range, so `Tick` deliberately has no
//! `Ord`: `<` and `>` on raw tick numbers are the bug this type exists to prevent.
//!
//! On the wire a `Tick` is its `u32`, little endian: the bincode encoding of this
//! newtype is byte-identical to the bare `u32` it replaced.

use std::fmt;

use bincode::{Decode, Encode};

/// Half the tick space: ticks this far apart or more have no order.
const HALF: u32 = 1 << 31;

/// A simulation tick number. Tick 0 is the first tick a server runs. See the module
/// doc for how ticks compare across the wrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Encode, Decode)]
pub struct Tick(u32);

impl Tick {
    /// Tick 0, the first tick a server runs.
    pub const ZERO: Tick = Tick(0);

    /// The tick numbered `n`.
    pub const fn new(n: u32) -> Self {
        Self(n)
    }

    /// The tick's number, as the wire carries it.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The tick after this one (`u32::MAX` is followed by 0).
    #[must_use]
    pub const fn next(self) -> Tick {
        Tick(self.0.wrapping_add(1))
    }

    /// The tick before this one (0 is preceded by `u32::MAX`).
    #[must_use]
    pub const fn prev(self) -> Tick {
        Tick(self.0.wrapping_sub(1))
    }

    /// The tick `n` steps after this one, wrapping.
    #[must_use]
    pub const fn plus(self, n: u32) -> Tick {
        Tick(self.0.wrapping_add(n))
    }

    /// The tick `n` steps before this one, wrapping.
    #[must_use]
    pub const fn minus(self, n: u32) -> Tick {
        Tick(self.0.wrapping_sub(n))
    }

    /// Steps forward from `earlier` to `self`, modulo 2^32: the distance when the
    /// caller already knows `earlier` is not after `self` (e.g. the first and the last
    /// tick of a run). Use [`Tick::since`] when the order is not known.
    pub const fn wrapping_since(self, earlier: Tick) -> u32 {
        self.0.wrapping_sub(earlier.0)
    }

    /// How many ticks `self` is after `earlier`: `Some(0)` for the same tick, `None`
    /// when `self` is before `earlier` (or exactly half the tick space away).
    pub const fn since(self, earlier: Tick) -> Option<u32> {
        let steps = self.wrapping_since(earlier);
        if steps < HALF { Some(steps) } else { None }
    }

    /// Whether `self` comes after `other` in serial order (never for the same tick).
    pub const fn is_after(self, other: Tick) -> bool {
        let steps = self.wrapping_since(other);
        steps != 0 && steps < HALF
    }

    /// Whether `self` is `other` or comes after it.
    pub const fn is_at_or_after(self, other: Tick) -> bool {
        self.since(other).is_some()
    }

    /// Whether `self` comes before `other` in serial order.
    pub const fn is_before(self, other: Tick) -> bool {
        other.is_after(self)
    }

    /// The later of two ticks in serial order (`self` when neither is after the other).
    #[must_use]
    pub const fn latest(self, other: Tick) -> Tick {
        if other.is_after(self) { other } else { self }
    }
}

impl fmt::Display for Tick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;
    use proptest::prelude::*;

    #[test]
    fn zero_comes_after_the_largest_tick() {
        let max = Tick::new(u32::MAX);
        assert_eq!(max.next(), Tick::ZERO);
        assert_eq!(Tick::ZERO.prev(), max);
        assert!(Tick::ZERO.is_after(max));
        assert!(max.is_before(Tick::ZERO));
        assert_eq!(Tick::ZERO.since(max), Some(1));
        assert_eq!(max.since(Tick::ZERO), None);
        assert_eq!(Tick::new(3).wrapping_since(max), 4);
        assert_eq!(max.latest(Tick::new(5)), Tick::new(5));
    }

    #[test]
    fn ticks_half_the_space_apart_have_no_order() {
        let a = Tick::new(7);
        let b = a.plus(HALF);
        assert!(!a.is_after(b) && !b.is_after(a));
        assert_eq!(a.since(b), None);
        assert_eq!(b.since(a), None);
        // One step less and the order is back.
        assert!(a.plus(HALF - 1).is_after(a));
    }

    #[test]
    fn a_tick_encodes_as_its_u32() {
        let mut tick_bytes = [0u8; 8];
        let mut raw_bytes = [0u8; 8];
        let n = wire::encode_into(&Tick::new(0x0403_0201), &mut tick_bytes).unwrap();
        let m = wire::encode_into(&0x0403_0201u32, &mut raw_bytes).unwrap();
        assert_eq!(tick_bytes[..n], [1, 2, 3, 4]);
        assert_eq!(tick_bytes[..n], raw_bytes[..m]);
        assert_eq!(
            wire::decode_exact::<Tick>(&[1, 2, 3, 4]),
            Ok(Tick::new(0x0403_0201))
        );
        assert_eq!(Tick::new(42).to_string(), "42");
    }

    proptest! {
        /// Any tick and any step of less than half the space: the later tick is after
        /// the earlier one, by exactly that step, wherever the wrap falls.
        #[test]
        fn order_and_distance_hold_across_the_wrap(start in any::<u32>(), step in 1u32..HALF) {
            let a = Tick::new(start);
            let b = a.plus(step);
            prop_assert!(b.is_after(a));
            prop_assert!(!a.is_after(b));
            prop_assert!(a.is_before(b));
            prop_assert!(b.is_at_or_after(a) && !a.is_at_or_after(b));
            prop_assert_eq!(b.since(a), Some(step));
            prop_assert_eq!(a.since(b), None);
            prop_assert_eq!(b.wrapping_since(a), step);
            prop_assert_eq!(b.minus(step), a);
            prop_assert_eq!(a.latest(b), b);
            prop_assert_eq!(b.latest(a), b);
        }

        /// Near the wrap in particular: every pair within a few thousand ticks of it.
        #[test]
        fn ticks_around_the_wrap_keep_their_order(before in 0u32..4096, after in 0u32..4096) {
            let a = Tick::new(u32::MAX - before);
            let b = Tick::new(after);
            prop_assert!(b.is_after(a));
            prop_assert_eq!(b.since(a), Some(before + after + 1));
        }

        #[test]
        fn next_and_prev_are_one_step(n in any::<u32>()) {
            let t = Tick::new(n);
            prop_assert_eq!(t.next().prev(), t);
            prop_assert_eq!(t.next(), t.plus(1));
            prop_assert_eq!(t.prev(), t.minus(1));
            prop_assert!(t.next().is_after(t));
            prop_assert_eq!(t.since(t), Some(0));
            prop_assert!(!t.is_after(t));
            prop_assert!(t.is_at_or_after(t));
        }

        /// `is_after` is antisymmetric over the whole range: at most one of two
        /// different ticks is after the other, and exactly one unless they are half
        /// the space apart.
        #[test]
        fn at_most_one_of_two_ticks_is_after_the_other(a in any::<u32>(), b in any::<u32>()) {
            let (a, b) = (Tick::new(a), Tick::new(b));
            let after = [a.is_after(b), b.is_after(a)];
            if a == b || b.wrapping_since(a) == HALF {
                prop_assert_eq!(after, [false, false]);
            } else {
                prop_assert!(after[0] != after[1]);
            }
        }
    }
}
