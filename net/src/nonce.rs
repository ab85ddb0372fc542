//! Replay protection for connect tokens: a bounded memory of nonces already used.

use std::collections::{HashMap, VecDeque};

/// What the cache says of a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceVerdict {
    /// Not seen before; now remembered.
    Fresh,
    /// Fresh, but the cache was full and forgot its oldest nonce to remember this one.
    FreshEvictedOldest,
    /// Already used.
    Replayed,
}

/// Remembers nonces until their token expires, at most `capacity` of them. When full it
/// forgets the oldest-remembered nonce: a replay of that token would then be accepted,
/// which the `nonces_evicted` counter makes visible.
#[derive(Debug)]
pub struct NonceCache {
    seen: HashMap<[u8; 16], u64>,
    order: VecDeque<([u8; 16], u64)>,
    capacity: usize,
}

impl NonceCache {
    /// An empty cache holding at most `capacity` nonces (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: HashMap::new(),
            order: VecDeque::new(),
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
            if let Some((oldest, _)) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
            verdict = NonceVerdict::FreshEvictedOldest;
        }
        self.seen.insert(nonce, expires_at);
        self.order.push_back((nonce, expires_at));
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

    fn forget_expired(&mut self, now: u64) {
        // Tokens are minted with similar lifetimes, so insertion order is close to expiry
        // order; an entry that outlives its turn is dropped when it reaches the front.
        while let Some(&(nonce, expires_at)) = self.order.front() {
            if expires_at > now {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&nonce);
        }
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
}
