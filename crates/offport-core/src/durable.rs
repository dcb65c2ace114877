//! State that survives a restart: what a stateful stage (the joiner, the scorer) writes to its
//! changelog topic and reads back.
//!
//! A stateful core keeps a journal of the keys its input changed. After each batch the service
//! drains it with [`Durable::drain_changes`] and writes the changes to the changelog in the same
//! Kafka transaction as its outputs and input offsets (Kafka Streams' model). To restore, the
//! service reads the changelog partition to its end, keeps the last value of each key (a
//! tombstone removes the key), hands every surviving value to [`Durable::restore`] and then
//! calls [`Durable::restored`]. A restored core continues exactly as the one that wrote the
//! changelog would have: the tests hold both cores to identical output.
//!
//! Values are JSON: a changelog stays readable with any Kafka console consumer, and the cores'
//! internal layouts can change without a registry round trip. Keys are `<kind>/<id>` strings
//! (`device/<device id>`, `session/<session id>`, `meta`, ...).

/// One changed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateChange {
    /// The key's new value.
    Put {
        /// Changelog key.
        key: String,
        /// Serialized value.
        value: Vec<u8>,
    },
    /// The key is gone (a tombstone).
    Delete {
        /// Changelog key.
        key: String,
    },
}

impl StateChange {
    /// The changelog key.
    pub fn key(&self) -> &str {
        match self {
            StateChange::Put { key, .. } | StateChange::Delete { key } => key,
        }
    }
}

/// A changelog record the core cannot read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("changelog key {key:?}: {why}")]
pub struct RestoreError {
    /// The key of the record.
    pub key: String,
    /// What is wrong with it.
    pub why: String,
}

impl RestoreError {
    pub(crate) fn new(key: &str, why: impl std::fmt::Display) -> Self {
        Self {
            key: key.to_string(),
            why: why.to_string(),
        }
    }
}

/// A core whose state can be written to a changelog and read back.
pub trait Durable {
    /// Starts journaling changes (off by default, so the pure uses pay nothing for it).
    fn journal_changes(&mut self);
    /// The changes since the last call, one per key.
    fn drain_changes(&mut self) -> Vec<StateChange>;
    /// Loads the latest value of one key during a restore (keys in any order).
    fn restore(&mut self, key: &str, value: &[u8]) -> Result<(), RestoreError>;
    /// Ends a restore.
    fn restored(&mut self);
}

pub(crate) fn put<T: serde::Serialize>(key: String, value: &T) -> StateChange {
    // The state types serialize infallibly (no maps with non-string keys, no custom errors).
    let value = serde_json::to_vec(value).unwrap_or_default();
    StateChange::Put { key, value }
}

pub(crate) fn read<T: serde::de::DeserializeOwned>(
    key: &str,
    value: &[u8],
) -> Result<T, RestoreError> {
    serde_json::from_slice(value).map_err(|e| RestoreError::new(key, e))
}
