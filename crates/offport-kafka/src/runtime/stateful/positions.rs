//! Where the loop stands: upstream raw topics, lagging inputs, end of input, the offsets and
//! changelog records a batch commits, and the state gauges.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use offport_core::durable::{Durable, StateChange};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use crate::runtime::decisions::{input_lags, read_to_end};
use crate::runtime::{blocking, Outgoing, PipelineError};

use super::*;

impl<S: StatefulStage> Runner<'_, S> {
    /// Learns which upstream raw topics hold records: asked of the broker until all do, at
    /// most every [`UPSTREAM_CHECK`].
    pub(super) fn refresh_upstream(&mut self, now: Instant) {
        let upstream = &mut self.upstream;
        if upstream.with_records.len() == upstream.topics.len()
            || upstream
                .checked
                .is_some_and(|at| now.saturating_duration_since(at) < UPSTREAM_CHECK)
        {
            return;
        }
        upstream.checked = Some(now);
        let restorer = self.restorer;
        for topic in &upstream.topics {
            if upstream.with_records.contains(topic) {
                continue;
            }
            // An error is no answer: the topic may hold records, so it is waited for until a
            // check answers (taken for empty, a restarting broker's moment without leaders let
            // the watermark run ahead of records still to come from it).
            let answer: Result<bool, rdkafka::error::KafkaError> = blocking(|| {
                let timeout = Duration::from_secs(10);
                let metadata = restorer.fetch_metadata(Some(topic), timeout)?;
                let partitions: Vec<i32> = metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic)
                    .map_or_else(Vec::new, |t| {
                        t.partitions().iter().map(|p| p.id()).collect()
                    });
                for p in partitions {
                    let (low, high) = restorer.fetch_watermarks(topic, p, timeout)?;
                    if high > low {
                        return Ok(true);
                    }
                }
                Ok(false)
            });
            let has_records = match answer {
                Ok(has_records) => {
                    upstream.unanswered.retain(|t| t != topic);
                    has_records
                }
                Err(error) => {
                    if !upstream.unanswered.contains(topic) {
                        tracing::warn!(
                            stage = self.options.stage,
                            %topic,
                            %error,
                            "cannot tell whether an upstream topic holds records: waiting for its progress markers until the broker answers"
                        );
                        upstream.unanswered.push(topic.clone());
                    }
                    false
                }
            };
            if has_records {
                tracing::info!(
                    stage = self.options.stage,
                    %topic,
                    "upstream topic holds records: waiting for its progress markers"
                );
                upstream.with_records.push(topic.clone());
            }
        }
    }

    /// For every task, which inputs have records not read from the broker yet: the consumer's
    /// position (past transaction markers) against the partition's end in the consumer's last
    /// statistics (its last stable offset; every `statistics.interval.ms`, no broker round
    /// trip). An end not known yet counts as lagging. An input that has brought the task
    /// nothing for `stream.idle_timeout_ms` is not waited for (a producer's transaction left
    /// open, a partition the consumer is not fetching).
    pub(super) fn lagging_inputs(
        &self,
        now: Instant,
        idle_after: Duration,
    ) -> Result<BTreeMap<i32, Vec<bool>>, PipelineError> {
        let positions = self.consumer.position()?;
        let ends = self
            .consumer
            .context()
            .ends
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = BTreeMap::new();
        for (partition, slot) in &self.tasks {
            let flags = self
                .options
                .inputs
                .iter()
                .zip(&slot.input_records)
                .map(|(topic, read)| {
                    input_lags(
                        self.position(&positions, topic, *partition),
                        ends.get(&(topic.clone(), *partition)).copied(),
                        now.saturating_duration_since(*read),
                        idle_after,
                    )
                })
                .collect();
            out.insert(*partition, flags);
        }
        Ok(out)
    }

    /// The next offset of `topic`/`partition`: the consumer's position (`positions`, which
    /// passes transaction markers), else the loop's (the committed offset it rewound to, or
    /// past the last record it took), while the consumer has consumed nothing there.
    pub(super) fn position(
        &self,
        positions: &rdkafka::TopicPartitionList,
        topic: &str,
        partition: i32,
    ) -> Option<i64> {
        positions
            .find_partition(topic, partition)
            .and_then(|p| match p.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .or_else(|| self.positions.get(&(topic.to_string(), partition)).copied())
    }

    /// True when every assigned partition has been read to its end.
    pub(super) fn at_end(&self) -> Result<bool, PipelineError> {
        let assigned = self.consumer.assignment()?;
        if assigned.count() == 0 {
            return Ok(false);
        }
        let positions = self.consumer.position()?;
        let partitions: Vec<(String, i32)> = assigned
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        // One broker round trip per partition, all at once, through the restorer: on the
        // consumer's own connection each query would wait behind its pending long-poll fetch
        // (up to fetch.wait.max.ms). The restorer reads read_committed
        // too, so the end it sees is the last stable offset, as the consumer's.
        let consumer = self.restorer;
        let watermarks: Vec<Result<(i64, i64), KafkaError>> = blocking(|| {
            std::thread::scope(|scope| {
                let handles: Vec<_> = partitions
                    .iter()
                    .map(|(topic, partition)| {
                        scope.spawn(move || {
                            consumer.fetch_watermarks(topic, *partition, Duration::from_secs(10))
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or(Err(KafkaError::Global(
                            rdkafka::types::RDKafkaErrorCode::Fail,
                        )))
                    })
                    .collect()
            })
        });
        for ((topic, partition), found) in partitions.iter().zip(watermarks) {
            let (low, high) = found?;
            if !read_to_end(self.position(&positions, topic, *partition), low, high) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Adds the changelog records of the touched tasks to `outgoing` and returns their input
    /// offsets: with the outputs, what one transaction commits.
    pub(super) fn changelog_and_offsets(
        &mut self,
        outgoing: &mut Vec<Outgoing>,
        touched: &BTreeSet<i32>,
    ) -> Result<TopicPartitionList, PipelineError> {
        for partition in touched {
            let Some(slot) = self.tasks.get_mut(partition) else {
                continue;
            };
            for change in slot.task.drain_changes() {
                let (key, value) = match change {
                    StateChange::Put { key, value } => (key, Some(value)),
                    StateChange::Delete { key } => (key, None),
                };
                self.metrics.changelog_records.inc();
                self.metrics
                    .changelog_bytes
                    .inc_by((key.len() + value.as_ref().map_or(0, Vec::len)) as u64);
                outgoing.push(Outgoing {
                    topic: self.changelog.clone(),
                    partition: Some(*partition),
                    key: Some(key.into_bytes()),
                    value,
                    headers: vec![],
                });
            }
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in &self.positions {
            if touched.contains(partition) {
                offsets.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
            }
        }
        Ok(offsets)
    }

    /// State gauges, at most every 5 s (measuring walks the state).
    pub(super) fn update_gauges(&mut self, now: bool) {
        if !now && self.last_gauges.elapsed() < Duration::from_secs(5) {
            return;
        }
        self.last_gauges = Instant::now();
        let cap = usize::try_from(self.settings.stream.max_state_bytes).unwrap_or(usize::MAX);
        if cap > 0 && !self.tasks.is_empty() {
            let per_task = cap / self.tasks.len();
            let mut evicted = 0;
            for slot in self.tasks.values_mut() {
                evicted += self.stage.enforce_cap(&mut slot.task, per_task);
            }
            if evicted > 0 {
                self.metrics.evictions.inc_by(evicted as u64);
                tracing::warn!(
                    stage = self.options.stage,
                    evicted,
                    cap,
                    "state over stream.max_state_bytes: least recently active keys evicted"
                );
            }
        }
        for slot in self.tasks.values_mut() {
            let late = self.stage.late_records(&slot.task);
            self.metrics
                .late_records
                .inc_by(late.saturating_sub(slot.late_counted));
            slot.late_counted = late;
        }
        let (keys, bytes) = self
            .tasks
            .values()
            .map(|slot| self.stage.state_size(&slot.task))
            .fold((0, 0), |(k, b), (k2, b2)| (k + k2, b + b2));
        self.metrics
            .state_keys
            .set(i64::try_from(keys).unwrap_or(i64::MAX));
        self.metrics
            .state_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        let mut caches = self.stage.caches();
        caches.extend(self.codec.cache_stats());
        self.metrics.caches(&caches);
    }
}
