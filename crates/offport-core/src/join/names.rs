//! Names the join keeps many times over, once: app ids, and the MDM's groups, roles,
//! categories and service classes. A fleet runs a few hundred apps and has a few dozen groups,
//! while every device's timelines and MDM records name them.

use std::sync::Arc;

use rustc_hash::FxHashMap;

/// An interned name: devices key their app state, and MDM records their labels, by it.
pub(crate) type NameKey = u32;

/// The interned names, by text and by key. Names are never forgotten: their number is bounded
/// by what the fleet's apps and MDM labels are, not by the traffic.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    keys: FxHashMap<Arc<str>, NameKey>,
    names: Vec<Arc<str>>,
}

impl Interner {
    /// The key of `name`, interning it when new.
    pub(crate) fn intern(&mut self, name: &str) -> NameKey {
        if let Some(key) = self.keys.get(name) {
            return *key;
        }
        let key = NameKey::try_from(self.names.len()).unwrap_or(NameKey::MAX);
        let name: Arc<str> = Arc::from(name);
        self.keys.insert(Arc::clone(&name), key);
        self.names.push(name);
        key
    }

    /// The key of `name`, when it was interned.
    pub(crate) fn get(&self, name: &str) -> Option<NameKey> {
        self.keys.get(name).copied()
    }

    /// The name of `key` (empty for a key this interner did not give).
    pub(crate) fn name(&self, key: NameKey) -> &str {
        usize::try_from(key)
            .ok()
            .and_then(|k| self.names.get(k))
            .map_or("", |n| n)
    }

    /// Approximate heap bytes: each name with its `Arc` header, its map entry and its slot.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.keys
            .keys()
            .map(|k| {
                k.len()
                    + 16
                    + std::mem::size_of::<(Arc<str>, NameKey)>()
                    + std::mem::size_of::<Arc<str>>()
            })
            .sum()
    }
}
