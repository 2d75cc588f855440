//! A bounded, least-recently-used cache of aggregates, keyed by stream, each with the stream
//! version it includes. Bounded by an estimate of the memory its states hold: each entry weighs
//! what its state serializes to (times an overhead factor), so a few huge aggregates cannot hold
//! more memory than many small ones.
//!
//! A cached state is a hint, never the truth: the command path decides on it and the append's
//! expected version rejects a decision made on a stale state; readers read the stream's tail
//! after the cached version before answering.

use lru::LruCache;
use std::any::Any;
use std::sync::{Arc, Mutex, PoisonError};

/// Estimated bytes of memory per byte of a state's JSON form (strings, maps and vectors of the
/// Rust state, the key, the map's own node), and a fixed cost per entry.
const WEIGHT_FACTOR: usize = 3;
const ENTRY_OVERHEAD: usize = 256;

struct Entry {
    version: i64,
    weight: usize,
    state: Arc<dyn Any + Send + Sync>,
}

struct Inner {
    entries: LruCache<String, Entry>,
    weight: usize,
}

/// The cache. Cloning shares it.
#[derive(Clone)]
pub struct AggregateCache {
    inner: Arc<Mutex<Inner>>,
    capacity: usize,
}

impl AggregateCache {
    /// A cache holding at most about `capacity_bytes` of states (0: caches nothing).
    pub fn new(capacity_bytes: usize) -> AggregateCache {
        AggregateCache {
            inner: Arc::new(Mutex::new(Inner {
                entries: LruCache::unbounded(),
                weight: 0,
            })),
            capacity: capacity_bytes,
        }
    }

    /// The weight an entry of a state of `serialized_len` JSON bytes is charged.
    pub fn weight_of(serialized_len: usize) -> usize {
        serialized_len * WEIGHT_FACTOR + ENTRY_OVERHEAD
    }

    /// The cached state of a stream and its version, if any (and of type `T`).
    pub fn get<T: Send + Sync + 'static>(&self, stream_id: &str) -> Option<(Arc<T>, i64)> {
        let mut inner = self.lock();
        let entry = inner.entries.get(stream_id)?;
        let version = entry.version;
        let state = entry.state.clone().downcast::<T>().ok()?;
        Some((state, version))
    }

    /// Caches a stream's state at `version`, unless a newer one is cached already.
    pub fn put<T: Send + Sync + 'static>(
        &self,
        stream_id: &str,
        state: Arc<T>,
        version: i64,
        weight: usize,
    ) {
        if weight > self.capacity / 4 {
            // One entry may not take a quarter of the cache: a huge aggregate would evict
            // everything else. It is loaded from its snapshot instead.
            self.remove(stream_id);
            return;
        }
        let mut inner = self.lock();
        if let Some(old) = inner.entries.peek(stream_id) {
            if old.version > version {
                return;
            }
        }
        let entry = Entry {
            version,
            weight,
            state,
        };
        if let Some(old) = inner.entries.put(stream_id.to_string(), entry) {
            inner.weight -= old.weight;
        }
        inner.weight += weight;
        while inner.weight > self.capacity {
            match inner.entries.pop_lru() {
                Some((_, old)) => inner.weight -= old.weight,
                None => break,
            }
        }
    }

    /// Forgets a stream's state.
    pub fn remove(&self, stream_id: &str) {
        let mut inner = self.lock();
        if let Some(old) = inner.entries.pop(stream_id) {
            inner.weight -= old.weight;
        }
    }

    /// (entries, total weight): for metrics and tests.
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.entries.len(), inner.weight)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used_beyond_the_bound() {
        let cache = AggregateCache::new(1000);
        cache.put("a", Arc::new(1u32), 1, 200);
        cache.put("b", Arc::new(2u32), 1, 200);
        cache.put("c", Arc::new(3u32), 1, 200);
        assert!(cache.get::<u32>("a").is_some()); // a is now the most recent
        cache.put("d", Arc::new(4u32), 1, 200);
        cache.put("e", Arc::new(5u32), 1, 250);
        assert_eq!(cache.usage(), (4, 850));
        assert!(
            cache.get::<u32>("b").is_none(),
            "b was the least recently used"
        );
        assert_eq!(cache.get::<u32>("a").map(|(s, v)| (*s, v)), Some((1, 1)));
    }

    #[test]
    fn keeps_the_newer_version_and_refuses_giants() {
        let cache = AggregateCache::new(1000);
        cache.put("a", Arc::new(2u32), 5, 100);
        cache.put("a", Arc::new(1u32), 4, 100);
        assert_eq!(cache.get::<u32>("a").map(|(s, v)| (*s, v)), Some((2, 5)));
        cache.put("a", Arc::new(3u32), 6, 300);
        assert!(
            cache.get::<u32>("a").is_none(),
            "over a quarter of the cache"
        );
        assert_eq!(cache.usage(), (0, 0));
        assert!(cache.get::<String>("a").is_none());
    }

    #[test]
    fn a_state_of_another_type_is_a_miss() {
        let cache = AggregateCache::new(1000);
        cache.put("a", Arc::new(1u32), 1, 10);
        assert!(cache.get::<u64>("a").is_none());
    }
}
