//! The ng reply cache: a command retransmitted with the same cookie from the same sender gets
//! the reply it got the first time instead of a second execution. Bounded in entries, bytes and
//! age (SPEC §9), expired oldest first, so neither a flood of cookies nor big replies grow it
//! without limit and no lookup scans it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a reply stays cached.
pub const REPLY_CACHE_FOR: Duration = Duration::from_secs(30);
/// Replies cached at most.
pub const MAX_CACHED_REPLIES: usize = 20_000;
/// Bytes of cached replies at most.
pub const MAX_CACHED_BYTES: usize = 32 << 20;

use zeroize::Zeroizing;

type Key = (SocketAddr, Vec<u8>);

/// Replies by sender and cookie.
#[derive(Default)]
pub struct ReplyCache {
    /// Replies hold the SDP handed out, with the relay's keys: wiped when they go (SPEC §9).
    replies: HashMap<Key, Zeroizing<Vec<u8>>>,
    /// Insertion order (which is also age order) for expiry.
    order: VecDeque<(Instant, Key)>,
    bytes: usize,
}

impl ReplyCache {
    /// The cached reply for `key`, if still fresh.
    pub fn get(&mut self, now: Instant, key: &Key) -> Option<&[u8]> {
        self.expire(now);
        self.replies.get(key).map(|r| r.as_slice())
    }

    /// Caches `reply`; the oldest entries go when a bound is reached.
    pub fn insert(&mut self, now: Instant, key: Key, reply: Vec<u8>) {
        self.expire(now);
        let size = reply.len() + key.1.len();
        if size > MAX_CACHED_BYTES {
            return;
        }
        while self.replies.len() >= MAX_CACHED_REPLIES || self.bytes + size > MAX_CACHED_BYTES {
            if !self.pop_oldest() {
                break;
            }
        }
        if let Some(old) = self.replies.insert(key.clone(), Zeroizing::new(reply)) {
            self.bytes -= old.len() + key.1.len();
            self.order.retain(|(_, k)| *k != key);
        }
        self.bytes += size;
        self.order.push_back((now, key));
    }

    /// Entries cached.
    pub fn len(&self) -> usize {
        self.replies.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= REPLY_CACHE_FOR)
        {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) -> bool {
        let Some((_, key)) = self.order.pop_front() else {
            return false;
        };
        if let Some(reply) = self.replies.remove(&key) {
            self.bytes -= reply.len() + key.1.len();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // the test's time origin
    fn bounded_in_entries_bytes_and_age() {
        let t0 = Instant::now();
        let peer: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let mut cache = ReplyCache::default();
        for i in 0..MAX_CACHED_REPLIES + 100 {
            cache.insert(t0, (peer, i.to_string().into_bytes()), vec![0; 10]);
        }
        assert_eq!(cache.len(), MAX_CACHED_REPLIES);
        assert!(
            cache.get(t0, &(peer, b"0".to_vec())).is_none(),
            "oldest went first"
        );
        assert!(cache.get(t0, &(peer, b"20099".to_vec())).is_some());
        // Big replies: the byte bound holds.
        let mut cache = ReplyCache::default();
        for i in 0..100 {
            cache.insert(t0, (peer, vec![i]), vec![0; 1 << 20]);
        }
        assert!(cache.bytes <= MAX_CACHED_BYTES && cache.len() < 100);
        // Age.
        assert!(cache.get(t0 + REPLY_CACHE_FOR, &(peer, vec![99])).is_none());
        assert!(cache.is_empty());
    }
}
