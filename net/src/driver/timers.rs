//! One timer structure for every connection: a min-heap of (deadline, slot) with lazy
//! invalidation. Each connection remembers the earliest deadline it has queued; an entry
//! that is not that deadline any more is stale and skipped when it comes up. A connection
//! only queues a deadline earlier than the one it has queued, so a timer that moves later
//! (quinn re-arms its loss and idle timers on every packet) costs no push at all: the
//! earlier entry fires, finds nothing due, and the connection queues its real deadline.
//!
//! Granularity: the loop sleeps in `epoll_wait`, whose timeout is whole milliseconds
//! rounded up (mio), and fires every entry due when it wakes, so timers are coalesced to
//! about a millisecond without any rounding here.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// The heap. Stale entries are bounded by [`Timers::compact`], which the driver calls
/// when the heap outgrows its connections.
#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
}

impl Timers {
    /// Queues `slot`'s deadline `at`.
    pub(super) fn push(&mut self, at: Instant, slot: usize) {
        self.heap.push(Reverse((at, slot)));
    }

    /// The earliest deadline queued, stale or not.
    pub(super) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the earliest entry if it is due at `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Instant, usize)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(entry)| entry),
            _ => None,
        }
    }

    /// Entries queued, stale ones included.
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops every entry `live` says is stale.
    pub(super) fn compact(&mut self, mut live: impl FnMut(Instant, usize) -> bool) {
        self.heap.retain(|Reverse((at, slot))| live(*at, *slot));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn entries_come_out_in_deadline_order_and_only_when_due() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut timers = Timers::default();
        timers.push(t0 + ms(5), 1);
        timers.push(t0 + ms(2), 2);
        timers.push(t0 + ms(9), 3);
        assert_eq!(timers.next(), Some(t0 + ms(2)));
        assert_eq!(timers.pop_due(t0 + ms(1)), None);
        assert_eq!(timers.pop_due(t0 + ms(6)), Some((t0 + ms(2), 2)));
        assert_eq!(timers.pop_due(t0 + ms(6)), Some((t0 + ms(5), 1)));
        assert_eq!(timers.pop_due(t0 + ms(6)), None);
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn compaction_keeps_only_what_is_live() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        for slot in 0..10 {
            timers.push(t0 + Duration::from_millis(slot as u64), slot);
        }
        timers.compact(|_, slot| slot % 2 == 0);
        assert_eq!(timers.len(), 5);
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(1)), Some((t0, 0)));
    }
}
