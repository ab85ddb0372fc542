//! Replay protection for connect tokens: a bounded memory of nonces already used.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// What the cache says of a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceVerdict {
    /// Not seen before; now remembered.
    Fresh,
    /// Fresh, but the cache was full and forgot the nonce nearest its expiry (the oldest,
    /// when tokens share a lifetime) to remember this one.
    FreshEvictedOldest,
    /// Already used.
    Replayed,
}

/// Remembers nonces until their token expires, at most `capacity` of them. When full it
/// forgets the nonce whose token expires first: a replay of that token would then be
/// accepted until it expires, which the `nonces_evicted` counter makes visible.
///
/// Nonces are kept in expiry order, not arrival order, so every expired one is
/// forgotten on time whatever lifetimes the backend gives its tokens: after a burst of
/// joins the cache returns to empty once their tokens expire.
#[derive(Debug)]
pub struct NonceCache {
    seen: HashMap<[u8; 16], u64>,
    by_expiry: BinaryHeap<Reverse<(u64, [u8; 16])>>,
    capacity: usize,
}

impl NonceCache {
    /// An empty cache holding at most `capacity` nonces (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: HashMap::new(),
            by_expiry: BinaryHeap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Checks `nonce` (whose token expires at `expires_at`) at time `now`, remembering it.
    pub fn check_and_remember(
        &mut self,
        nonce: [u8; 16],
        expires_at: u64,
        now: u64,
    ) -> NonceVerdict {
        self.forget_expired(now);
        if self.seen.contains_key(&nonce) {
            return NonceVerdict::Replayed;
        }
        let mut verdict = NonceVerdict::Fresh;
        if self.seen.len() >= self.capacity {
            if let Some(Reverse((_, soonest))) = self.by_expiry.pop() {
                self.seen.remove(&soonest);
            }
            verdict = NonceVerdict::FreshEvictedOldest;
        }
        self.seen.insert(nonce, expires_at);
        self.by_expiry.push(Reverse((expires_at, nonce)));
        verdict
    }

    /// How many nonces are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Forgets every nonce whose token has expired at `now` (a token is refused from its
    /// expiry second on, so its nonce can no longer be replayed); returns how many.
    pub fn forget_expired(&mut self, now: u64) -> usize {
        let mut forgotten = 0;
        while let Some(&Reverse((expires_at, nonce))) = self.by_expiry.peek() {
            if expires_at > now {
                break;
            }
            self.by_expiry.pop();
            self.seen.remove(&nonce);
            forgotten += 1;
        }
        forgotten
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_accepted_once_until_it_expires() {
        let mut cache = NonceCache::new(10);
        assert_eq!(
            cache.check_and_remember([1; 16], 100, 0),
            NonceVerdict::Fresh
        );
        assert_eq!(
            cache.check_and_remember([1; 16], 100, 50),
            NonceVerdict::Replayed
        );
        // After expiry the token itself is refused as expired; the cache may forget it.
        assert_eq!(
            cache.check_and_remember([2; 16], 200, 100),
            NonceVerdict::Fresh
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_full_cache_forgets_the_oldest_and_says_so() {
        let mut cache = NonceCache::new(2);
        cache.check_and_remember([1; 16], 100, 0);
        cache.check_and_remember([2; 16], 100, 0);
        assert_eq!(
            cache.check_and_remember([3; 16], 100, 0),
            NonceVerdict::FreshEvictedOldest
        );
        assert_eq!(cache.len(), 2);
        assert_eq!(
            cache.check_and_remember([2; 16], 100, 0),
            NonceVerdict::Replayed
        );
    }

    /// Regression: expiry was checked from the front of arrival order only, so one
    /// long-lived token arriving first kept every later, shorter-lived nonce remembered
    /// past its expiry (the cache did not return to empty after a burst of joins).
    #[test]
    fn every_expired_nonce_is_forgotten_whatever_order_tokens_arrived_in() {
        let mut cache = NonceCache::new(10);
        cache.check_and_remember([1; 16], 1_000, 0);
        for nonce in 2..=5 {
            cache.check_and_remember([nonce; 16], 10, 0);
        }
        assert_eq!(cache.len(), 5);
        assert_eq!(cache.forget_expired(10), 4);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.forget_expired(999), 0);
        assert_eq!(cache.forget_expired(1_000), 1);
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_forgets_the_nonce_nearest_its_expiry() {
        let mut cache = NonceCache::new(2);
        cache.check_and_remember([1; 16], 500, 0);
        cache.check_and_remember([2; 16], 100, 0);
        assert_eq!(
            cache.check_and_remember([3; 16], 300, 0),
            NonceVerdict::FreshEvictedOldest
        );
        assert_eq!(
            cache.check_and_remember([1; 16], 500, 0),
            NonceVerdict::Replayed,
            "the later-expiring nonce is kept"
        );
        assert_eq!(
            cache.check_and_remember([3; 16], 300, 0),
            NonceVerdict::Replayed
        );
    }
}
