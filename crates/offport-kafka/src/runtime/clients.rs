//! The Kafka clients of a stage: the transactional producer, the group consumer that reports
//! lag and rebalances, and the contexts that send their errors to the stage's health.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;

use crate::metrics::PipelineMetrics;
use crate::settings::Settings;

use super::*;

/// Producer context of the stages' transactional producers: their client errors go to the
/// stage's [`crate::health::Health`], so an outage is logged once, not once per retry.
pub(crate) struct HealthContext {
    pub(crate) metrics: Arc<PipelineMetrics>,
}

impl rdkafka::ClientContext for HealthContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if !self.metrics.health.kafka_error(&error, reason) {
            tracing::error!(%error, %reason, "librdkafka");
        }
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        self.metrics.health.librdkafka_log(level, facility, message);
    }
}

/// The transactional producer of a stage.
pub(crate) type StageProducer = FutureProducer<HealthContext>;

/// Consumer context: librdkafka's statistics into the lag gauge, revoked partitions noted for
/// the loop.
pub(crate) struct LagContext {
    pub(crate) metrics: Arc<PipelineMetrics>,
    pub(crate) revoked: Mutex<Vec<(String, i32)>>,
    /// Rebalances begun so far (each revocation or assignment counts).
    pub(crate) rebalances: std::sync::atomic::AtomicU64,
    /// The end of each partition as of the last statistics: the last stable offset (what a
    /// read_committed consumer can reach), else the high watermark.
    pub(crate) ends: Mutex<HashMap<(String, i32), i64>>,
    /// Partitions with records behind their last stable offset: that offset, since when it has
    /// not moved, and whether the hang was logged.
    pub(crate) unstable: Mutex<HashMap<(String, i32), Unstable>>,
    /// `pipeline.hanging_transaction_after_ms`.
    hanging_after: std::time::Duration,
}

/// A partition whose last stable offset stands behind its high watermark.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unstable {
    stable: i64,
    since: std::time::Instant,
    logged: bool,
}

impl LagContext {
    pub(crate) fn new(metrics: Arc<PipelineMetrics>, hanging_after: std::time::Duration) -> Self {
        Self {
            hanging_after,
            metrics,
            revoked: Mutex::new(Vec::new()),
            rebalances: std::sync::atomic::AtomicU64::new(0),
            ends: Mutex::new(HashMap::new()),
            unstable: Mutex::new(HashMap::new()),
        }
    }
}

impl rdkafka::ClientContext for LagContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if !self.metrics.health.kafka_error(&error, reason) {
            tracing::error!(%error, %reason, "librdkafka");
        }
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        self.metrics.health.librdkafka_log(level, facility, message);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        if statistics
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP")
        {
            self.metrics.health.reachable();
        }
        let lag: i64 = statistics
            .topics
            .values()
            .flat_map(|topic| topic.partitions.iter())
            // Partition -1 is librdkafka's internal unassigned queue; -1 lag means unknown.
            .filter(|(partition, p)| **partition >= 0 && p.consumer_lag >= 0)
            .map(|(_, p)| p.consumer_lag)
            .sum();
        self.metrics.lag.set(lag);
        self.watch_stability(&statistics);
        if let Ok(mut ends) = self.ends.lock() {
            for (topic, stats) in &statistics.topics {
                for (partition, p) in &stats.partitions {
                    let end = if p.ls_offset >= 0 {
                        p.ls_offset
                    } else {
                        p.hi_offset
                    };
                    if *partition >= 0 && end >= 0 {
                        ends.insert((topic.clone(), *partition), end);
                    }
                }
            }
        }
    }
}

impl LagContext {
    /// Follows each assigned partition's last stable offset: records behind it are counted, and
    /// one that has not moved for `pipeline.hanging_transaction_after_ms` with records behind it is a
    /// transaction the broker left hanging (a broker that restarts can skip writing a
    /// transaction's markers to partitions whose leader it does not know yet, KAFKA-5202's
    /// rule): read_committed consumers, this stage among them, wait at it for ever. Logged once
    /// per partition with how to find and end it.
    fn watch_stability(&self, statistics: &rdkafka::Statistics) {
        let Ok(mut unstable) = self.unstable.lock() else {
            return;
        };
        let now = std::time::Instant::now();
        let mut behind = 0;
        let mut seen = std::collections::HashSet::new();
        for (topic, stats) in &statistics.topics {
            for (&partition, p) in &stats.partitions {
                // Partition -1 is librdkafka's internal queue; a partition not fetched has no
                // offsets.
                if partition < 0 || p.ls_offset < 0 || p.hi_offset <= p.ls_offset {
                    continue;
                }
                behind += p.hi_offset - p.ls_offset;
                let key = (topic.clone(), partition);
                seen.insert(key.clone());
                let entry = unstable.entry(key).or_insert(Unstable {
                    stable: p.ls_offset,
                    since: now,
                    logged: false,
                });
                if entry.stable != p.ls_offset {
                    *entry = Unstable {
                        stable: p.ls_offset,
                        since: now,
                        logged: false,
                    };
                }
                if !entry.logged && now.duration_since(entry.since) >= self.hanging_after {
                    entry.logged = true;
                    tracing::error!(
                        topic = %topic,
                        partition,
                        last_stable_offset = p.ls_offset,
                        high_watermark = p.hi_offset,
                        "a transaction has been open on this input partition for {} s: \
                         read_committed consumers wait at its first offset. Find it with \
                         `kafka-transactions.sh --bootstrap-server ... find-hanging --broker-id N` \
                         and `describe-producers --topic {topic} --partition {partition}`; see \
                         docs/operations.md, 'A transaction left hanging'",
                        self.hanging_after.as_secs()
                    );
                }
            }
        }
        unstable.retain(|key, _| seen.contains(key));
        let hanging = unstable
            .values()
            .filter(|u| now.duration_since(u.since) >= self.hanging_after)
            .count();
        self.metrics.unstable.set(behind);
        self.metrics
            .hanging
            .set(i64::try_from(hanging).unwrap_or(i64::MAX));
    }
}

impl rdkafka::consumer::ConsumerContext for LagContext {
    fn pre_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        _rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        self.rebalances
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn post_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if let rdkafka::consumer::Rebalance::Revoke(list) = rebalance {
            if let Ok(mut revoked) = self.revoked.lock() {
                revoked.extend(
                    list.elements()
                        .iter()
                        .map(|e| (e.topic().to_string(), e.partition())),
                );
            }
        }
    }
}

impl rdkafka::ClientContext for ReadToEnd {
    fn error(&self, error: KafkaError, reason: &str) {
        match error {
            KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
            | KafkaError::PartitionEOF(_) => {
                tracing::debug!(%reason, "partition read to its end");
            }
            error => tracing::error!(%error, %reason, "librdkafka"),
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ReadToEnd {}

pub(crate) type LagConsumer = StreamConsumer<LagContext>;

/// The consumer of a stage: its group (static membership when configured), offsets only
/// through transactions, read_committed, from the earliest offset of a new group.
pub(crate) fn stage_consumer(
    settings: &Settings,
    options: &PipelineOptions,
    assignment_strategy: &str,
    defaults: &[(&str, &str)],
    metrics: &Arc<PipelineMetrics>,
) -> Result<LagConsumer, KafkaError> {
    stage_consumer_config(settings, options, assignment_strategy, defaults).create_with_context(
        LagContext::new(
            Arc::clone(metrics),
            std::time::Duration::from_millis(settings.pipeline.hanging_transaction_after_ms),
        ),
    )
}

pub(crate) fn stage_consumer_config(
    settings: &Settings,
    options: &PipelineOptions,
    assignment_strategy: &str,
    defaults: &[(&str, &str)],
) -> rdkafka::ClientConfig {
    let mut config = settings.kafka.client_config();
    if let Some(instance) = &options.group_instance_id {
        config.set("group.instance.id", instance);
    }
    config
        .set("statistics.interval.ms", "5000")
        .set("group.id", &options.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("partition.assignment.strategy", assignment_strategy);
    // When the prefetch queue is full librdkafka pauses fetching for fetch.queue.backoff.ms,
    // 1 s by default: a stage that drains the queue in big batches would then find it empty
    // and wait. A user's kafka.properties value still wins.
    if !settings
        .kafka
        .properties
        .contains_key("fetch.queue.backoff.ms")
    {
        config.set("fetch.queue.backoff.ms", "10");
    }
    // The stage's own defaults; a user's kafka.properties value wins here too.
    for (key, value) in defaults {
        if !settings.kafka.properties.contains_key(*key) {
            config.set(*key, *value);
        }
    }
    config
}

/// The transactional producer of a stage: murmur2 partitioning (as Java clients), lz4.
pub(crate) fn transactional_producer(
    settings: &Settings,
    transactional_id: &str,
    metrics: &Arc<PipelineMetrics>,
) -> Result<StageProducer, KafkaError> {
    settings
        .kafka
        .client_config()
        .set("transactional.id", transactional_id)
        .set("partitioner", "murmur2_random")
        // A batch is produced at once and then awaited: waiting to fill more buys nothing.
        .set("linger.ms", "1")
        .set("compression.type", "lz4")
        // The first AddPartitionsToTxn after a commit is often refused with
        // CONCURRENT_TRANSACTIONS while the broker writes the previous markers; librdkafka
        // retries after retry.backoff.ms, and its default of 100 ms would stall the
        // transaction that long. Backoff still grows exponentially to retry.backoff.max.ms.
        .set("retry.backoff.ms", "10")
        .create_with_context(HealthContext {
            metrics: Arc::clone(metrics),
        })
}

/// The context of a consumer that reads partitions to their end (changelog restores, the
/// baselines topic): the end of a partition is what it waits for, and librdkafka also reports it
/// as a global error (once per partition read), which rdkafka's default context logged at ERROR
/// level. Here it is a debug line; other errors are logged as the default context does.
pub(crate) struct ReadToEnd;
