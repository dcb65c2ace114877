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
//! Values are postcard (a compact serde binary format: varint integers, no field names) after a
//! one-byte format mark, so a device's whole timeline costs a few bytes an entry: JSON values made
//! a joiner's changelog several times larger than its output (1.5 KB a device snapshot, rewritten
//! on every batch that touches the device) and their serialization about a third of its work.
//! Values written by earlier versions, JSON objects, are still read. The cores' internal layouts
//! can change without a registry round trip: a changelog is read back only by the version that
//! wrote it or, after an upgrade, restored once and rewritten. Keys are `<kind>/<id>` strings
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

/// The first byte of a postcard value (JSON values start with `{`).
const POSTCARD: u8 = 0x01;

pub(crate) fn put<T: serde::Serialize>(key: String, value: &T) -> StateChange {
    // The state types serialize infallibly (sequences of known length, no custom errors).
    let value = postcard::to_extend(value, vec![POSTCARD]).unwrap_or_default();
    StateChange::Put { key, value }
}

pub(crate) fn read<T: serde::de::DeserializeOwned>(
    key: &str,
    value: &[u8],
) -> Result<T, RestoreError> {
    match value.split_first() {
        Some((&POSTCARD, rest)) => {
            postcard::from_bytes(rest).map_err(|e| RestoreError::new(key, e))
        }
        // Written by a version that kept JSON values.
        Some((b'{', _)) => serde_json::from_slice(value).map_err(|e| RestoreError::new(key, e)),
        _ => Err(RestoreError::new(
            key,
            "neither a postcard nor a JSON value",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct State {
        at: i64,
        name: String,
        entries: Vec<(u64, Option<u32>)>,
    }

    fn state() -> State {
        State {
            at: 1_795_168_800_000,
            name: "device-0001".into(),
            entries: vec![(1, None), (u64::MAX, Some(7))],
        }
    }

    #[test]
    fn values_round_trip_in_postcard_and_earlier_json_values_still_read() {
        let StateChange::Put { value, .. } = put("k".into(), &state()) else {
            panic!("a put");
        };
        assert_eq!(value.first(), Some(&POSTCARD));
        assert!(value.len() < serde_json::to_vec(&state()).unwrap().len() / 2);
        assert_eq!(read::<State>("k", &value).unwrap(), state());
        let json = serde_json::to_vec(&state()).unwrap();
        assert_eq!(read::<State>("k", &json).unwrap(), state());
    }

    #[test]
    fn unreadable_values_name_their_key() {
        for bad in [&b""[..], b"\x02abc", b"\x01\xff", b"{not json"] {
            let error = read::<State>("device/x", bad).unwrap_err();
            assert_eq!(error.key, "device/x", "{bad:?}");
        }
    }
}
