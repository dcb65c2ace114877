//! The normalizers' side of progress markers (see [`offport_core::progress`]): per raw
//! partition, the newest event time of what it produced, written into every partition of the
//! normalized topics in the same transaction as the records it covers.
//!
//! A raw partition is **idle** once it is read to its end (checked against the broker, not
//! the last statistics, so a slow machine with records still unread never calls it idle), has
//! brought nothing for `stream.idle_timeout_ms`, and the normalizer holds none of its records
//! (a flow waiting for its connection record). An idle partition does not hold the joiner
//! back until it brings records again.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use offport_core::model::EpochMillis;
use offport_core::progress::{Marker, HEADER};
use rdkafka::consumer::Consumer;
use rdkafka::Offset;

use crate::runtime::{blocking, LagConsumer, Outgoing};

/// True for a progress marker: readers of the normalized topics other than the joiner skip it.
pub fn is_marker(message: &impl rdkafka::message::Message) -> bool {
    use rdkafka::message::Headers;
    message
        .headers()
        .is_some_and(|headers| headers.iter().any(|h| h.key == HEADER))
}

#[derive(Debug, Clone)]
struct Clock {
    time: Option<EpochMillis>,
    last_record: Instant,
    /// What the last marker said (`None`: none sent since the clock started or a rewind).
    sent: Option<(Option<EpochMillis>, bool)>,
    /// When the broker was last asked whether the partition is read to its end.
    checked: Option<Instant>,
}

impl Clock {
    /// A partition first seen `now`.
    fn new(now: Instant) -> Self {
        Self {
            time: None,
            last_record: now,
            sent: None,
            checked: None,
        }
    }
}

/// The clocks of the raw partitions a normalizer reads.
pub(crate) struct RawClocks {
    idle_after: Duration,
    /// The normalized topics the markers go to.
    topics: Vec<String>,
    partitions: HashMap<String, i32>,
    clocks: BTreeMap<(String, i32), Clock>,
    /// Markers stop (with a warning) if a topic's partition count cannot be read.
    failed: bool,
}

impl RawClocks {
    pub(crate) fn new(topics: Vec<String>, idle_after: Duration) -> Self {
        Self {
            idle_after,
            topics,
            partitions: HashMap::new(),
            clocks: BTreeMap::new(),
            failed: false,
        }
    }

    /// A record of `topic`/`partition` was read; `time` is the newest event time of what it
    /// produced (`None`: nothing, or read again only to rebuild held state).
    pub(crate) fn record(
        &mut self,
        topic: &str,
        partition: i32,
        now: Instant,
        time: Option<EpochMillis>,
    ) {
        let clock = match self
            .clocks
            .iter_mut()
            .find(|((t, p), _)| *p == partition && t == topic)
        {
            Some((_, clock)) => clock,
            None => self
                .clocks
                .entry((topic.to_string(), partition))
                .or_insert_with(|| Clock::new(now)),
        };
        clock.last_record = now;
        if let Some(time) = time {
            clock.time = Some(clock.time.map_or(time, |t| t.max(time)));
        }
    }

    /// The partition was revoked: its clock goes with it.
    pub(crate) fn forget(&mut self, topic: &str, partition: i32) {
        self.clocks.remove(&(topic.to_string(), partition));
    }

    /// The transaction carrying the last markers failed: they are sent again.
    pub(crate) fn rewound(&mut self) {
        for clock in self.clocks.values_mut() {
            clock.sent = None;
        }
    }

    /// The markers due: for every assigned raw partition whose time or idleness changed since
    /// its last marker, one per partition of every normalized topic. `held` says whether the
    /// normalizer holds records of a partition.
    pub(crate) fn markers(
        &mut self,
        consumer: &LagConsumer,
        now: Instant,
        held: impl Fn(&str, i32) -> bool,
    ) -> Vec<Outgoing> {
        if self.failed || self.topics.is_empty() {
            return vec![];
        }
        let Ok(assigned) = consumer.assignment() else {
            return vec![];
        };
        let mut due = Vec::new();
        for element in assigned.elements() {
            let (topic, partition) = (element.topic(), element.partition());
            let clock = self
                .clocks
                .entry((topic.to_string(), partition))
                .or_insert_with(|| Clock::new(now));
            let quiet = now.saturating_duration_since(clock.last_record) >= self.idle_after;
            let was_idle = clock.sent.is_some_and(|(_, idle)| idle);
            // The broker is asked only when the partition may have turned idle, and at most
            // once per idle timeout.
            let ask = !was_idle
                && clock
                    .checked
                    .is_none_or(|at| now.saturating_duration_since(at) >= self.idle_after);
            let idle = quiet
                && !held(topic, partition)
                && (was_idle || (ask && read_to_end(consumer, topic, partition)));
            if ask && quiet {
                clock.checked = Some(now);
            }
            if clock.sent != Some((clock.time, idle)) {
                due.push((topic.to_string(), partition, clock.time, idle));
                clock.sent = Some((clock.time, idle));
            }
        }
        if due.is_empty() {
            return vec![];
        }
        let Some(outputs) = self
            .topics
            .clone()
            .into_iter()
            .map(|t| self.partition_count(consumer, &t).map(|n| (t, n)))
            .collect::<Option<Vec<_>>>()
        else {
            return vec![];
        };
        let mut out = Vec::new();
        for (source, partition, time, idle) in due {
            let Some(partitions) = self.partition_count(consumer, &source) else {
                return vec![];
            };
            let header = Marker {
                source,
                partition,
                partitions,
                time,
                idle,
            }
            .to_header();
            for (topic, count) in &outputs {
                for output in 0..*count {
                    out.push(Outgoing {
                        topic: topic.clone(),
                        partition: Some(output),
                        key: None,
                        value: None,
                        headers: vec![(HEADER.to_string(), header.clone())],
                    });
                }
            }
        }
        out
    }

    /// Learns the partition counts of the normalized topics and of `sources` (the raw topics)
    /// before the first batch: a client's first metadata request for a topic can take a second
    /// (a topic created just before the stage started), and the first batch's markers would
    /// wait for it. A topic not answered for now is asked again when its markers are first due.
    pub(crate) fn learn_partitions(&mut self, consumer: &LagConsumer, sources: &[String]) {
        if self.topics.is_empty() {
            return;
        }
        for topic in self.topics.clone().iter().chain(sources) {
            if let Some(count) = fetch_partition_count(consumer, topic) {
                self.partitions.insert(topic.clone(), count);
            }
        }
    }

    fn partition_count(&mut self, consumer: &LagConsumer, topic: &str) -> Option<i32> {
        if let Some(count) = self.partitions.get(topic) {
            return Some(*count);
        }
        let found = fetch_partition_count(consumer, topic);
        match found {
            Some(count) => {
                self.partitions.insert(topic.to_string(), count);
            }
            None => {
                tracing::warn!(
                    topic,
                    "cannot read the topic's partition count: no progress markers from this \
                     instance; the joiner falls back to its own clocks"
                );
                self.failed = true;
            }
        }
        found
    }
}

/// How many partitions `topic` has, as the broker says now; `None` when it does not answer or
/// the topic has none.
fn fetch_partition_count(consumer: &LagConsumer, topic: &str) -> Option<i32> {
    blocking(|| consumer.fetch_metadata(Some(topic), Duration::from_secs(10)))
        .ok()
        .and_then(|m| {
            m.topics()
                .iter()
                .find(|t| t.name() == topic)
                .map(|t| i32::try_from(t.partitions().len()).unwrap_or(i32::MAX))
        })
        .filter(|n| *n > 0)
}

/// True when the consumer has nothing left to read in the partition: its position (or, before
/// it consumed anything there, the group's committed offset) is at the partition's end as the
/// broker says now.
fn read_to_end(consumer: &LagConsumer, topic: &str, partition: i32) -> bool {
    let Ok((low, high)) =
        blocking(|| consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)))
    else {
        return false;
    };
    let position = consumer.position().ok().and_then(|list| {
        match list.find_partition(topic, partition)?.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        }
    });
    let position = position.or_else(|| {
        let mut list = rdkafka::TopicPartitionList::new();
        list.add_partition(topic, partition);
        let committed =
            blocking(|| consumer.committed_offsets(list, Duration::from_secs(10))).ok()?;
        let offset = committed.find_partition(topic, partition)?.offset();
        match offset {
            Offset::Offset(o) => Some(o),
            // Nothing committed: the group starts at the earliest record.
            _ => Some(low),
        }
    });
    position.is_some_and(|p| p >= high)
}
