//! Bounded caches that count their hits and misses.
//!
//! Every cache in offport whose keys come from input (merged baselines per scope context,
//! registry schemas per id) is a [`Bounded`]: a `moka` cache with a maximum entry count, so
//! input cannot grow it without limit, and hit/miss counters that the services export as
//! `offport_cache_hits_total`, `offport_cache_misses_total` and `offport_cache_entries`
//! labelled by [`CacheStats::name`].

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What a cache holds and how well it serves, at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// The cache's metric label (`baseline_resolution`, `registry_writer_schemas`, ...).
    pub name: &'static str,
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to compute or fetch the value.
    pub misses: u64,
    /// Entries held (moka's count, which settles shortly after inserts and evictions).
    pub entries: u64,
    /// Most entries the cache keeps.
    pub capacity: u64,
}

/// A size-bounded cache, cheap to clone (clones share entries and counters) and safe to use
/// from several threads.
pub struct Bounded<K, V> {
    name: &'static str,
    capacity: u64,
    entries: moka::sync::Cache<K, V, rustc_hash::FxBuildHasher>,
    hits: Arc<AtomicU64>,
    misses: Arc<AtomicU64>,
}

impl<K, V> Clone for Bounded<K, V> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            capacity: self.capacity,
            entries: self.entries.clone(),
            hits: Arc::clone(&self.hits),
            misses: Arc::clone(&self.misses),
        }
    }
}

impl<K, V> std::fmt::Debug for Bounded<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bounded")
            .field("name", &self.name)
            .field("capacity", &self.capacity)
            .field("entries", &self.entries.entry_count())
            .finish_non_exhaustive()
    }
}

impl<K, V> Bounded<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// An empty cache named `name` (its metric label) keeping at most `capacity` entries.
    pub fn new(name: &'static str, capacity: u64) -> Self {
        Self {
            name,
            capacity,
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .build_with_hasher(rustc_hash::FxBuildHasher),
            hits: Arc::new(AtomicU64::new(0)),
            misses: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The value of `key`, counted as a hit or a miss.
    pub fn get(&self, key: &K) -> Option<V> {
        let found = self.entries.get(key);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// The value of `key`, computed by `make` (and kept) on a miss.
    pub fn get_or_insert_with(&self, key: K, make: impl FnOnce() -> V) -> V {
        match self.try_get_or_insert_with(key, || Ok::<V, std::convert::Infallible>(make())) {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }

    /// The value of `key`, or the error of `make`, which nothing keeps (a failed fetch is
    /// tried again on the next lookup).
    pub fn try_get_or_insert_with<E>(
        &self,
        key: K,
        make: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E> {
        if let Some(found) = self.get(&key) {
            return Ok(found);
        }
        let value = make()?;
        self.entries.insert(key, value.clone());
        Ok(value)
    }

    /// Keeps `value` for `key` (no lookup counted).
    pub fn insert(&self, key: K, value: V) {
        self.entries.insert(key, value);
    }

    /// The value of `key`, no lookup counted (for a lookup that serves another one, which
    /// counts).
    pub fn peek(&self, key: &K) -> Option<V> {
        self.entries.get(key)
    }

    /// Every value held, in no order.
    pub fn values(&self) -> Vec<V> {
        self.entries.iter().map(|(_, value)| value).collect()
    }

    /// True when `key` is held (no lookup counted).
    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// Hits, misses and entries so far. Pending evictions are applied first, so `entries`
    /// never reads above the capacity.
    pub fn stats(&self) -> CacheStats {
        self.entries.run_pending_tasks();
        CacheStats {
            name: self.name,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.entries.entry_count(),
            capacity: self.capacity,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn counts_hits_and_misses_and_keeps_within_its_capacity() {
        let cache: Bounded<u32, u32> = Bounded::new("test", 100);
        assert_eq!(cache.get_or_insert_with(1, || 10), 10);
        assert_eq!(
            cache.get_or_insert_with(1, || 99),
            10,
            "a hit keeps the value"
        );
        assert_eq!(cache.get(&2), None);
        for key in 0..10_000 {
            cache.insert(key, key);
        }
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (1, 2));
        assert!(
            stats.entries <= 100,
            "{} entries over a capacity of 100",
            stats.entries
        );
        assert_eq!(stats.capacity, 100);
    }

    #[test]
    fn a_failed_computation_is_not_kept_and_clones_share_everything() {
        let cache: Bounded<u32, u32> = Bounded::new("test", 10);
        let shared = cache.clone();
        assert_eq!(cache.try_get_or_insert_with(7, || Err("down")), Err("down"));
        assert!(!cache.contains(&7));
        assert_eq!(shared.try_get_or_insert_with(7, || Ok::<_, ()>(70)), Ok(70));
        assert_eq!(cache.get(&7), Some(70));
        assert_eq!(cache.stats().hits, 1);
        assert_eq!(shared.stats().misses, 2);
    }
}
