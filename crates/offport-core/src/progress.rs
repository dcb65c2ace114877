//! Progress markers: event-time progress that flows with the data from the raw partitions to
//! the joiner, as stream processors carry watermarks.
//!
//! A normalizer knows how far each raw partition it reads has got in event time; the joiner,
//! two topics downstream, does not. Without that knowledge the joiner could only guess from what
//! reached it (the newest record it saw, the wall time since) and its answers depended on
//! partitioning, machine speed and which service ran first. So each normalizer writes, in the
//! same transaction as the records, a [`Marker`] per raw partition into every partition of the
//! normalized topics it writes: "the records of raw partition *p* with an event time up to
//! `time` are all before this marker". The joiner keeps, per input and raw partition, the
//! newest marker it has read ([`Sources`]), and its watermark never passes the slowest raw
//! partition that is not idle, whatever order the normalized partitions are read in.
//!
//! A marker is a record without a value and with the header [`HEADER`] (JSON). Consumers of
//! the normalized topics other than the joiner skip records without a value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::EpochMillis;

/// The header that makes a record a progress marker.
pub const HEADER: &str = "offport.progress";

/// One raw partition's progress, as a normalizer wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The raw topic.
    pub source: String,
    /// The raw partition.
    pub partition: i32,
    /// How many partitions the raw topic has: the joiner waits until it has heard of each.
    pub partitions: i32,
    /// The newest event time of the records this raw partition has produced so far (`None`
    /// before the first).
    pub time: Option<EpochMillis>,
    /// The raw partition is read to its end, has brought nothing for the idle timeout, and
    /// the normalizer holds nothing from it: it does not hold anyone back until it has
    /// records again.
    pub idle: bool,
}

impl Marker {
    /// The header value.
    pub fn to_header(&self) -> Vec<u8> {
        // Built as a JSON value, whose text cannot fail (no empty header on an error path).
        serde_json::json!({
            "source": self.source,
            "partition": self.partition,
            "partitions": self.partitions,
            "time": self.time,
            "idle": self.idle,
        })
        .to_string()
        .into_bytes()
    }

    /// A marker from its header value.
    pub fn from_header(value: &[u8]) -> Result<Self, MarkerError> {
        let marker: Marker = serde_json::from_slice(value).map_err(MarkerError::NotJson)?;
        if marker.partitions < 1 || marker.partition < 0 || marker.partition >= marker.partitions {
            return Err(MarkerError::NoSuchPartition {
                partition: marker.partition,
                partitions: marker.partitions,
                source_topic: marker.source,
            });
        }
        Ok(marker)
    }
}

/// Why a progress marker header was refused.
#[derive(Debug, thiserror::Error)]
pub enum MarkerError {
    /// The header is not a marker's JSON.
    #[error("a progress marker ({HEADER} header) that is not one: {0}")]
    NotJson(#[source] serde_json::Error),
    /// The marker names a partition its topic does not have.
    #[error(
        "a progress marker for partition {partition} of {partitions} partitions of {source_topic}"
    )]
    NoSuchPartition {
        /// The partition named.
        partition: i32,
        /// The partition count named.
        partitions: i32,
        /// The raw topic.
        source_topic: String,
    },
}

/// How far the sources allow event time to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Floor {
    /// No marker read: the sources say nothing (records produced without normalizers).
    Unknown,
    /// A raw partition not heard from yet, or heard from before its first record: hold.
    Hold,
    /// Every raw partition heard from that is not idle has produced up to this time; nothing
    /// later from them is expected below it (within the allowed lateness).
    At(EpochMillis),
    /// Every raw partition heard from is idle.
    Open,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
struct Clock {
    time: Option<EpochMillis>,
    idle: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
struct Source {
    partitions: i32,
    clocks: BTreeMap<i32, Clock>,
}

/// The newest marker of every raw partition, per input of the reader. Kept per input because
/// a marker vouches only for the records before it on the same partition: the same raw
/// partition's marker read on another input says nothing about records not read yet here.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Sources {
    by_input: BTreeMap<(u8, String), Source>,
}

impl Sources {
    /// Takes a marker read on `input`. Times only move forward (a normalizer restarted or
    /// rebalanced starts its clocks again from the records it reads). Returns `true` when the
    /// floor may have changed.
    pub fn observe(&mut self, input: u8, marker: &Marker) -> bool {
        let source = self
            .by_input
            .entry((input, marker.source.clone()))
            .or_default();
        let mut changed = false;
        if marker.partitions > source.partitions {
            source.partitions = marker.partitions;
            changed = true;
        }
        let clock = source.clocks.entry(marker.partition).or_default();
        let time = match (clock.time, marker.time) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if time != clock.time || marker.idle != clock.idle {
            clock.time = time;
            clock.idle = marker.idle;
            changed = true;
        }
        changed
    }

    /// The raw topics heard from, on any input.
    pub fn heard_from(&self) -> impl Iterator<Item = &str> {
        self.by_input.keys().map(|(_, source)| source.as_str())
    }

    /// How far the sources allow event time to go: the slowest raw partition that is not idle.
    pub fn floor(&self) -> Floor {
        if self.by_input.is_empty() {
            return Floor::Unknown;
        }
        let mut floor = Floor::Open;
        for source in self.by_input.values() {
            let heard = i32::try_from(source.clocks.len()).unwrap_or(i32::MAX);
            if heard < source.partitions {
                return Floor::Hold;
            }
            for clock in source.clocks.values().filter(|c| !c.idle) {
                let Some(time) = clock.time else {
                    return Floor::Hold;
                };
                floor = match floor {
                    Floor::At(at) => Floor::At(at.min(time)),
                    _ => Floor::At(time),
                };
            }
        }
        floor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(source: &str, partition: i32, time: Option<i64>, idle: bool) -> Marker {
        Marker {
            source: source.into(),
            partition,
            partitions: 2,
            time,
            idle,
        }
    }

    #[test]
    fn the_floor_is_the_slowest_busy_partition_once_every_partition_is_heard_from() {
        let mut sources = Sources::default();
        assert_eq!(sources.floor(), Floor::Unknown);
        assert!(sources.observe(0, &marker("raw.proxy", 0, Some(5_000), false)));
        assert_eq!(sources.floor(), Floor::Hold, "partition 1 not heard from");
        sources.observe(0, &marker("raw.proxy", 1, Some(2_000), false));
        assert_eq!(sources.floor(), Floor::At(2_000));
        // Another input's source: its own clocks, and the slowest of all counts.
        sources.observe(1, &marker("raw.edr", 0, None, false));
        sources.observe(1, &marker("raw.edr", 1, Some(9_000), true));
        assert_eq!(
            sources.floor(),
            Floor::Hold,
            "a busy partition without records yet"
        );
        sources.observe(1, &marker("raw.edr", 0, Some(1_000), false));
        assert_eq!(sources.floor(), Floor::At(1_000));
        // Idle partitions do not hold anyone back; all idle opens the floor.
        sources.observe(1, &marker("raw.edr", 0, Some(1_000), true));
        assert_eq!(sources.floor(), Floor::At(2_000));
        sources.observe(0, &marker("raw.proxy", 0, Some(5_000), true));
        sources.observe(0, &marker("raw.proxy", 1, Some(2_000), true));
        assert_eq!(sources.floor(), Floor::Open);
        // Times never go back; an old marker changes nothing.
        assert!(!sources.observe(0, &marker("raw.proxy", 1, Some(1_500), true)));
        assert_eq!(
            sources.heard_from().collect::<Vec<_>>(),
            ["raw.proxy", "raw.edr"]
        );
    }

    #[test]
    fn markers_round_trip_and_bad_ones_are_named() {
        let m = marker("raw.mdm", 1, Some(7), false);
        assert_eq!(Marker::from_header(&m.to_header()).ok(), Some(m));
        let bad = Marker::from_header(b"{\"source\":\"x\"}")
            .unwrap_err()
            .to_string();
        assert!(bad.contains("offport.progress"), "{bad}");
        let mut out_of_range = marker("raw.mdm", 3, None, false);
        out_of_range.partitions = 2;
        let bad = Marker::from_header(&out_of_range.to_header())
            .unwrap_err()
            .to_string();
        assert!(bad.contains("partition 3 of 2"), "{bad}");
    }
}
