//! A process-wide count of heap allocations, for the status line.
//!
//! The library never counts anything itself: the `tickcast-server` binary built with
//! the `count-allocs` feature installs a counting global allocator that calls
//! [`note_allocation`] and, once installed, [`mark_counting`]. Without it [`total`] is
//! `None` and the status line leaves `allocs=` out, so a reader can tell "not counted"
//! from "none".
//!
//! Relaxed atomics only: the count is a statistic read once a second, and the allocator
//! must not allocate or block.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static FAN_OUT_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static COUNTING: AtomicBool = AtomicBool::new(false);

/// Counts one heap allocation (an `alloc`, `alloc_zeroed` or `realloc`). Called by a
/// global allocator; never allocates.
#[inline]
pub fn note_allocation() {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
}

/// Counts one heap allocation made inside the fan-out
/// (`tickcast_net::fanout::in_fan_out`), in addition to [`note_allocation`].
#[inline]
pub fn note_fan_out_allocation() {
    FAN_OUT_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
}

/// Says that a counting allocator is installed, so [`total`] is meaningful.
pub fn mark_counting() {
    COUNTING.store(true, Ordering::Relaxed);
}

/// Allocations counted since the process started, if a counting allocator is installed.
pub fn total() -> Option<u64> {
    COUNTING
        .load(Ordering::Relaxed)
        .then(|| ALLOCATIONS.load(Ordering::Relaxed))
}

/// Allocations made inside the fan-out since the process started, if counted.
pub fn fan_out_total() -> Option<u64> {
    COUNTING
        .load(Ordering::Relaxed)
        .then(|| FAN_OUT_ALLOCATIONS.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_once_marked() {
        // Unit tests share the process: COUNTING is only ever set by this test.
        assert_eq!(total(), None, "nothing installed: not counted");
        note_allocation();
        mark_counting();
        let before = total().unwrap();
        note_allocation();
        note_allocation();
        assert!(total().unwrap() >= before + 2);
        let fan_out = fan_out_total().unwrap();
        note_fan_out_allocation();
        assert_eq!(fan_out_total(), Some(fan_out + 1));
    }
}
