//! The ng reply cache: a command retransmitted with the same cookie from the same sender gets
//! the reply it got the first time instead of a second execution. Bounded in entries, bytes and
//! age (docs/behaviour.md §9), expired oldest first, so neither a flood of cookies nor big replies
//! grow it
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

/// A cached reply: when it was cached, the call it was for, and the framed reply.
struct Cached {
    at: Instant,
    call_id: String,
    /// Replies hold the SDP handed out, with the relay's keys: wiped when they go
    /// (docs/behaviour.md §9).
    reply: Zeroizing<Vec<u8>>,
}

/// Replies by sender and cookie.
#[derive(Default)]
pub struct ReplyCache {
    replies: HashMap<Key, Cached>,
    /// Commands being executed: a retransmission of one of them waits for its reply.
    in_flight: std::collections::HashSet<Key>,
    /// The keys of each call's cached replies, so that a deleted call's go at once.
    by_call: HashMap<String, Vec<Key>>,
    /// Insertion order (which is also age order) for expiry; an entry whose reply was replaced
    /// or purged since is skipped.
    order: VecDeque<(Instant, Key)>,
    bytes: usize,
}

impl ReplyCache {
    /// The cached reply for `key`, if still fresh.
    pub fn get(&mut self, now: Instant, key: &Key) -> Option<&[u8]> {
        self.expire(now);
        self.replies.get(key).map(|c| c.reply.as_slice())
    }

    /// Notes that the command under `key` starts; false when it is running already (a
    /// retransmission that arrived before the reply).
    pub fn start(&mut self, key: &Key) -> bool {
        self.in_flight.len() < MAX_CACHED_REPLIES && self.in_flight.insert(key.clone())
    }

    /// Notes that the command under `key` is done.
    pub fn finish(&mut self, key: &Key) {
        self.in_flight.remove(key);
    }

    /// Caches `reply` to a command about `call_id` (empty for none); the oldest entries go when
    /// a bound is reached.
    pub fn insert(&mut self, now: Instant, key: Key, reply: Vec<u8>, call_id: &str) {
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
        self.remove(&key);
        self.replies.insert(
            key.clone(),
            Cached {
                at: now,
                call_id: call_id.to_owned(),
                reply: Zeroizing::new(reply),
            },
        );
        self.by_call
            .entry(call_id.to_owned())
            .or_default()
            .push(key.clone());
        self.bytes += size;
        self.order.push_back((now, key));
    }

    /// Drops (and wipes) every cached reply about `call_id`: a deleted call's SDP, and the keys
    /// in it, do not outlive it in the cache.
    pub fn purge_call(&mut self, call_id: &str) {
        for key in self.by_call.remove(call_id).unwrap_or_default() {
            if let Some(c) = self.replies.remove(&key) {
                self.bytes -= c.reply.len() + key.1.len();
            }
        }
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

    fn remove(&mut self, key: &Key) {
        let Some(c) = self.replies.remove(key) else {
            return;
        };
        self.bytes -= c.reply.len() + key.1.len();
        if let Some(keys) = self.by_call.get_mut(&c.call_id) {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.by_call.remove(&c.call_id);
            }
        }
    }

    fn pop_oldest(&mut self) -> bool {
        let Some((at, key)) = self.order.pop_front() else {
            return false;
        };
        // Only the entry this record was made for (not one cached again under the key since).
        if self.replies.get(&key).is_some_and(|c| c.at == at) {
            self.remove(&key);
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
            cache.insert(t0, (peer, i.to_string().into_bytes()), vec![0; 10], "c");
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
            cache.insert(t0, (peer, vec![i]), vec![0; 1 << 20], "c");
        }
        assert!(cache.bytes <= MAX_CACHED_BYTES && cache.len() < 100);
        // Age.
        assert!(cache.get(t0 + REPLY_CACHE_FOR, &(peer, vec![99])).is_none());
        assert!(cache.is_empty());
        // A deleted call's replies go at once; other calls' stay.
        let mut cache = ReplyCache::default();
        cache.insert(t0, (peer, b"a".to_vec()), vec![1; 10], "gone");
        cache.insert(t0, (peer, b"b".to_vec()), vec![2; 10], "kept");
        cache.insert(t0, (peer, b"c".to_vec()), vec![3; 10], "gone");
        cache.purge_call("gone");
        assert_eq!(cache.len(), 1);
        assert!(cache.get(t0, &(peer, b"b".to_vec())).is_some());
        assert_eq!(cache.bytes, 11);
        // A command in flight: its retransmission is not executed a second time.
        let key = (peer, b"slow".to_vec());
        assert!(cache.start(&key));
        assert!(!cache.start(&key), "a retransmission while it runs");
        cache.finish(&key);
        assert!(
            cache.start(&key),
            "done: the next command under the cookie runs"
        );
        cache.finish(&key);
        // The same cookie cached again after a purge is not expired by the old record early.
        cache.insert(
            t0 + REPLY_CACHE_FOR / 2,
            (peer, b"a".to_vec()),
            vec![4; 10],
            "new",
        );
        assert!(
            cache
                .get(t0 + REPLY_CACHE_FOR, &(peer, b"a".to_vec()))
                .is_some()
        );
    }
}
