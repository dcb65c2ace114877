//! The consume-transform-produce loop of the normalizers, exactly once.
//!
//! Each batch of raw records is normalized by a pure [`Normalizer`], encoded through the schema
//! registry, and written in one Kafka transaction together with the consumer offsets of the
//! batch (`send_offsets_to_transaction` with the consumer's group metadata, KIP-447, so a
//! zombie instance of an old group generation is fenced). Downstream consumers that read
//! `read_committed` see every input record's outputs exactly once, or not at all.
//!
//! - A record the normalizer rejects becomes a `DeadLetter` record (original key, value and
//!   headers, source topic/partition/offset, reason, message) on the dead-letter topic, in the
//!   same transaction, with `offport.errors.*` headers in the manner of Kafka Connect's
//!   `__connect.errors.*`. Nothing after it is held up.
//! - A transient failure (registry unreachable, broker error) is retried with capped exponential
//!   backoff; no offset moves past a record whose outputs are not committed. When a
//!   transaction fails it is aborted and the consumer is rewound to the committed offset of
//!   each partition it still owns, so the batch is processed again.
//! - A stateful normalizer (the Zeek/Suricata flow join) may hold records until the rest of
//!   their flow arrives. The offset committed for a partition is then the first record still
//!   held, and the commit's metadata (`offport:processed=<next>`) says how far the partition was
//!   processed. After a restart, a rebalance or an aborted transaction the records between the
//!   two are read again only to rebuild the held state (their outputs were committed already
//!   and are dropped), so a held record is never lost and no output is written twice.
//! - One transaction is open at a time, and it commits on a blocking thread of its own while the
//!   loop reads and processes the next batch. That batch's transaction starts only after the previous one
//!   committed; if the previous one failed, the next batch's outputs are dropped unproduced and
//!   both batches are read again from the committed offsets.
//! - Normalized records are Avro-encoded on that thread too, before its transaction begins, once
//!   their topic's schema is registered (the first record of a topic registers it in the loop).
//!   A record that does not fit its own schema (a build defect) stops the loop, as it would in
//!   the loop itself.
//! - A fatal producer error (fenced by a newer instance) stops the loop with an error.
//! - On shutdown the open batch is finished (committed) or aborted, then the consumer leaves
//!   the group.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use offport_core::normalize::{Normalized, Normalizer};
use rdkafka::consumer::Consumer;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};

use crate::metrics::PipelineMetrics;
use crate::progress::RawClocks;
use crate::registry::{Registered, RegistryCodec};
use crate::runtime::decisions::{after_batch, progress_from, Progress, PROCESSED_PREFIX};
use crate::settings::Settings;
use crate::shutdown::Shutdown;
use crate::topics::TopicRole;

use super::*;

/// Where a normalizer's records of one kind go: the topic, and its registered schema once
/// known (it does not change within a process, so the loop keeps it instead of looking it up
/// per record).
pub(crate) struct Output {
    topic: String,
    schema: Option<Arc<Registered>>,
}

impl Output {
    /// The output of `record`'s kind among sessions, events, contexts.
    fn of<'o>(outputs: &'o mut [Output; 3], record: &Normalized) -> &'o mut Output {
        let [sessions, events, contexts] = outputs;
        match record {
            Normalized::Session(_) => sessions,
            Normalized::Event(_) => events,
            Normalized::Context(_) => contexts,
        }
    }
}

/// Runs a normalizer until shutdown. Creates its own consumer and transactional producer.
pub async fn run_normalizer<N: Normalizer>(
    settings: &Settings,
    options: PipelineOptions,
    mut normalizer: N,
    codec: Arc<RegistryCodec>,
    metrics: Arc<PipelineMetrics>,
    shutdown: Shutdown,
) -> Result<(), PipelineError> {
    let mut options = options;
    if !connect(settings, &mut options, &shutdown).await? {
        return Ok(());
    }
    let consumer = stage_consumer(settings, &options, "cooperative-sticky", &[], &metrics)?;
    let producer = transactional_producer(settings, &options.transactional_id, &metrics)?;
    let txn_timeout = Duration::from_secs(30);
    blocking(|| producer.init_transactions(txn_timeout))?;
    let inputs: Vec<&str> = options.inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&inputs)?;
    metrics
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        stage = options.stage,
        group = %options.group_id,
        transactional_id = %options.transactional_id,
        inputs = ?options.inputs,
        "consuming"
    );

    let result = process(
        &consumer,
        &producer,
        &options,
        &mut normalizer,
        &codec,
        &metrics,
        &shutdown,
        settings,
    )
    .await;
    leave_group(options.stage, &consumer, result)
}

/// The loop proper: batches until shutdown or a fatal error. Each turn, in phases:
/// `drop_revoked` (partitions taken away by a rebalance), collect a batch, then either
/// `quiet_turn` (no records: settle, and tell the joiner which partitions turned idle) or
/// `normalize_batch` and `begin_transaction` (the batch's outputs and offsets in one
/// transaction, left in flight while the next batch is collected).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn process<N: Normalizer>(
    consumer: &LagConsumer,
    producer: &StageProducer,
    options: &PipelineOptions,
    normalizer: &mut N,
    codec: &RegistryCodec,
    metrics: &PipelineMetrics,
    shutdown: &Shutdown,
    settings: &Settings,
) -> Result<(), PipelineError> {
    let mut turns = Turns {
        shell: Shell {
            consumer,
            producer,
            options,
            metrics,
        },
        codec,
        shutdown,
        normalizer,
        outputs: [
            TopicRole::Sessions,
            TopicRole::DeviceEvents,
            TopicRole::DeviceContexts,
        ]
        .map(|role| Output {
            topic: role.spec(&settings.topics).name,
            schema: None,
        }),
        dead_letter_topic: TopicRole::DeadLetter.spec(&settings.topics).name,
        progress: BTreeMap::new(),
        counted: Counted::default(),
        clocks: RawClocks::new(
            options.progress_topics.clone(),
            Duration::from_millis(settings.stream.idle_timeout_ms),
        ),
    };
    turns.clocks.learn_partitions(consumer, &options.inputs);
    // The previous batch's transaction, committing while this batch is read and processed.
    let mut in_flight = None;
    while !shutdown.is_triggered() {
        turns.drop_revoked(&mut in_flight).await?;
        let collecting = Instant::now();
        let batch = collect_batch(consumer, options, shutdown, metrics).await?;
        let t_collect = collecting.elapsed();
        if batch.is_empty() {
            turns.quiet_turn(&mut in_flight).await?;
            continue;
        }
        let started = Instant::now();
        let (outgoing, tally) = turns.normalize_batch(&batch, started).await?;
        let t_process = collecting.elapsed();
        // This batch's offsets build on the previous batch's: that transaction must be settled
        // first. When it failed, this batch's outputs are dropped with it and both are read
        // again from the committed offsets.
        if !turns.settle(&mut in_flight).await? {
            continue;
        }
        tracing::debug!(
            records = batch.len(),
            collect_ms = t_collect.as_secs_f64() * 1e3,
            process_ms = (t_process - t_collect).as_secs_f64() * 1e3,
            settle_ms = (collecting.elapsed() - t_process).as_secs_f64() * 1e3,
            "batch"
        );
        in_flight = Some(turns.begin_transaction(&batch, outgoing, tally)?);
    }
    turns.settle(&mut in_flight).await?;
    tracing::info!(
        stage = options.stage,
        "stopping: leaving the consumer group"
    );
    consumer.unsubscribe();
    Ok(())
}

/// The Kafka side of the normalizer loop, for the helpers that settle its transactions.
#[derive(Clone, Copy)]
pub(crate) struct Shell<'a> {
    consumer: &'a LagConsumer,
    producer: &'a StageProducer,
    options: &'a PipelineOptions,
    metrics: &'a PipelineMetrics,
}

/// A normalizer's transaction in flight, carrying the partitions' progress it commits.
type NormalizerInFlight = InFlight<BTreeMap<(String, i32), Progress>>;

/// What the normalizer loop keeps from one turn to the next.
struct Turns<'a, N> {
    shell: Shell<'a>,
    codec: &'a RegistryCodec,
    shutdown: &'a Shutdown,
    normalizer: &'a mut N,
    /// Sessions, events, contexts.
    outputs: [Output; 3],
    dead_letter_topic: String,
    /// Per partition, where it resumes and how far it was processed (committed).
    progress: BTreeMap<(String, i32), Progress>,
    /// Per partition, the offset below which records were counted in the metrics: a batch read
    /// again after an abort is processed again but not counted again.
    counted: Counted,
    clocks: RawClocks,
}

impl<N: Normalizer> Turns<'_, N> {
    /// Phase: partitions a rebalance took away. The open transaction is settled before the
    /// bookkeeping of the partitions changes; their held state and clocks are dropped.
    async fn drop_revoked(
        &mut self,
        in_flight: &mut Option<NormalizerInFlight>,
    ) -> Result<(), PipelineError> {
        let revoked: Vec<(String, i32)> = self
            .shell
            .consumer
            .context()
            .revoked
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        if revoked.is_empty() {
            return Ok(());
        }
        self.settle(in_flight).await?;
        let held = self
            .progress
            .keys()
            .any(|(topic, partition)| self.normalizer.held_from(topic, *partition).is_some());
        for (topic, partition) in &revoked {
            self.normalizer.forget(topic, *partition);
            self.clocks.forget(topic, *partition);
            self.progress.remove(&(topic.clone(), *partition));
        }
        // A held flow may mix partitions, and forgetting the revoked ones dropped whole
        // flows: rebuild what the remaining partitions held from their committed offsets.
        if held {
            restart_partitions(self.shell.consumer, self.normalizer, &mut self.progress);
        }
        Ok(())
    }

    /// Phase: a turn without records. The open transaction is settled, and a quiet loop still
    /// tells the joiner when its partitions turn idle (markers in a transaction of their own).
    async fn quiet_turn(
        &mut self,
        in_flight: &mut Option<NormalizerInFlight>,
    ) -> Result<(), PipelineError> {
        if !self.settle(in_flight).await? {
            return Ok(());
        }
        let markers = self.markers();
        if !markers.is_empty() {
            *in_flight = Some(InFlight::spawn(
                self.shell.consumer,
                self.shell.producer,
                markers,
                TopicPartitionList::new(),
                self.progress.clone(),
                Tally {
                    inputs: 0,
                    timestamps: Vec::new(),
                    started: Instant::now(),
                },
            )?);
        }
        Ok(())
    }

    /// The progress markers due now, for the raw partitions' downstream.
    fn markers(&mut self) -> Vec<Pending> {
        let normalizer = &*self.normalizer;
        self.clocks
            .markers(self.shell.consumer, Instant::now(), |t, p| {
                normalizer.held_from(t, p).is_some()
            })
            .into_iter()
            .map(Pending::Ready)
            .collect()
    }

    /// Phase: each record of the batch through the normalizer. Records read again only to
    /// rebuild held state produce nothing; the others produce their normalized records (encoded
    /// on the transaction's thread once their topic's schema is registered) or a dead letter.
    async fn normalize_batch(
        &mut self,
        batch: &[BorrowedMessage<'_>],
        started: Instant,
    ) -> Result<(Vec<Pending>, Tally), PipelineError> {
        let Shell {
            consumer,
            options,
            metrics,
            ..
        } = self.shell;
        let now = wall_clock_millis();
        let mut outgoing = Vec::with_capacity(batch.len());
        let mut fresh = 0_u64;
        let mut timestamps = Vec::with_capacity(batch.len());
        for message in batch {
            let (topic, partition) = (message.topic(), message.partition());
            // A handful of partitions: a scan beats allocating a key per record.
            let known = self
                .progress
                .iter()
                .find(|((t, p), _)| *p == partition && t == topic)
                .map(|(_, at)| *at);
            let at = match known {
                Some(at) => at,
                None => {
                    let found = committed_progress(consumer, topic, partition, message.offset())?;
                    self.progress.insert((topic.to_string(), partition), found);
                    found
                }
            };
            let replaying = message.offset() < at.processed;
            let first_read = self.counted.first_read(topic, partition, message.offset());
            if !replaying {
                fresh += 1;
                timestamps.extend(message.timestamp().to_millis());
            }
            if first_read {
                metrics.records_in.inc();
            }
            let headers = owned_headers(message);
            let raw = raw_record(message, &headers);
            let result = self.normalizer.normalize(&raw, now);
            if replaying {
                // Read again only to rebuild held state; its outputs are committed already.
                metrics.replayed.inc();
                self.clocks.record(topic, partition, started, None);
                continue;
            }
            let newest = result
                .as_ref()
                .ok()
                .and_then(|records| records.iter().map(Normalized::event_time).max());
            self.clocks.record(topic, partition, started, newest);
            match result {
                Ok(records) => {
                    for record in records {
                        outgoing.push(self.output(record).await?);
                        if first_read {
                            metrics.records_out.inc();
                        }
                    }
                }
                Err(rejection) => {
                    if first_read {
                        let mut text = rejection.message.clone();
                        cut_for_log(&mut text);
                        tracing::warn!(
                            topic = raw.topic,
                            partition = raw.partition,
                            offset = raw.offset,
                            reason = ?rejection.reason,
                            message = %text,
                            "record dead-lettered"
                        );
                        metrics.dead_letter(rejection.reason);
                    }
                    outgoing.push(Pending::Ready(
                        dead_letter(
                            self.codec,
                            &self.dead_letter_topic,
                            &raw,
                            &rejection,
                            options,
                            metrics,
                            self.shutdown,
                            now,
                        )
                        .await?,
                    ));
                }
            }
        }
        let tally = Tally {
            inputs: fresh,
            timestamps,
            started,
        };
        Ok((outgoing, tally))
    }

    /// A normalized record on its way out. Once its topic's schema is registered it is encoded
    /// on the transaction's thread; the first of a topic registers it here.
    async fn output(&mut self, record: Normalized) -> Result<Pending, PipelineError> {
        let output = Output::of(&mut self.outputs, &record);
        if output.schema.is_none() {
            output.schema = self.codec.registered(&output.topic, record.contract());
        }
        Ok(match &output.schema {
            Some(registered) => Pending::Encode {
                topic: output.topic.clone(),
                registered: Arc::clone(registered),
                record: Box::new(record),
            },
            None => {
                let value = encode_retrying(
                    self.codec,
                    &output.topic,
                    &record,
                    self.shell.options,
                    self.shell.metrics,
                    self.shutdown,
                )
                .await?;
                Pending::Ready(keyed(output.topic.clone(), &record, value))
            }
        })
    }

    /// Phase: the batch's transaction. Its outputs, the progress markers its records bring
    /// and the input offsets (the first record still held, with how far each partition was
    /// processed) go out in one transaction, left in flight. The open one must be settled.
    fn begin_transaction(
        &mut self,
        batch: &[BorrowedMessage<'_>],
        mut outgoing: Vec<Pending>,
        tally: Tally,
    ) -> Result<NormalizerInFlight, PipelineError> {
        let (offsets, after) = batch_offsets(batch, &self.progress, &*self.normalizer)?;
        // After the batch's records, in its transaction: what they bring is covered.
        outgoing.extend(self.markers());
        InFlight::spawn(
            self.shell.consumer,
            self.shell.producer,
            outgoing,
            offsets,
            after,
            tally,
        )
    }

    /// Waits for the in-flight transaction, if any. None, or committed: the progress moves on
    /// and `true`. Failed (not fatally): aborted, every tracked partition rewound to its
    /// committed offset, the raw clocks told, and `false` (the caller drops whatever it
    /// processed since; it is read again).
    async fn settle(
        &mut self,
        in_flight: &mut Option<NormalizerInFlight>,
    ) -> Result<bool, PipelineError> {
        let Some(open) = in_flight.take() else {
            return Ok(true);
        };
        let shell = self.shell;
        match open
            .outcome(shell.producer, shell.options, shell.metrics)
            .await?
        {
            Ok(after) => {
                self.progress.extend(after);
                Ok(true)
            }
            Err(_) => {
                restart_partitions(shell.consumer, self.normalizer, &mut self.progress);
                self.clocks.rewound();
                Ok(false)
            }
        }
    }
}

pub(crate) async fn encode_retrying(
    codec: &RegistryCodec,
    topic: &str,
    record: &Normalized,
    options: &PipelineOptions,
    metrics: &PipelineMetrics,
    shutdown: &Shutdown,
) -> Result<Vec<u8>, PipelineError> {
    let contract = record.contract();
    retrying(options, metrics, shutdown, "encode", || async {
        match record {
            Normalized::Session(value) => codec.encode_value(topic, contract, value).await,
            Normalized::Event(value) => codec.encode_value(topic, contract, value).await,
            Normalized::Context(value) => codec.encode_value(topic, contract, value).await,
        }
    })
    .await
}

/// The committed progress of a partition newly seen by this consumer.
pub(crate) fn committed_progress(
    consumer: &LagConsumer,
    topic: &str,
    partition: i32,
    first_seen: i64,
) -> Result<Progress, PipelineError> {
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, partition);
    let committed = blocking(|| consumer.committed_offsets(list, Duration::from_secs(30)))?;
    let found = committed.find_partition(topic, partition);
    let offset = found.as_ref().and_then(|p| match p.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    });
    let metadata = found
        .as_ref()
        .map(|p| p.metadata().to_string())
        .unwrap_or_default();
    let progress = progress_from(offset, &metadata, first_seen);
    if progress.processed > progress.resume {
        tracing::info!(
            topic,
            partition,
            from = progress.resume,
            to = progress.processed,
            "reading held records again to rebuild the join state"
        );
    }
    Ok(progress)
}

/// Drops all held state and seeks every tracked partition still assigned back to its committed
/// offset; records up to its processed offset are then read again only to rebuild the state.
pub(crate) fn restart_partitions<N: Normalizer>(
    consumer: &LagConsumer,
    normalizer: &mut N,
    progress: &mut BTreeMap<(String, i32), Progress>,
) {
    let assigned = consumer.assignment().unwrap_or_default();
    progress.retain(|(topic, partition), _| assigned.find_partition(topic, *partition).is_some());
    for ((topic, partition), at) in progress.iter() {
        normalizer.forget(topic, *partition);
        if let Err(error) = consumer.seek(
            topic,
            *partition,
            Offset::Offset(at.resume),
            Duration::from_secs(10),
        ) {
            tracing::warn!(%error, topic, partition, "rewind failed; the group's committed offset still holds the batch");
        }
    }
}

/// The offsets a batch commits and the progress of every tracked partition after it.
#[allow(clippy::type_complexity)]
pub(crate) fn batch_offsets<N: Normalizer>(
    batch: &[BorrowedMessage<'_>],
    progress: &BTreeMap<(String, i32), Progress>,
    normalizer: &N,
) -> Result<(TopicPartitionList, BTreeMap<(String, i32), Progress>), PipelineError> {
    let after = after_batch(
        progress,
        batch.iter().map(|m| (m.topic(), m.partition(), m.offset())),
        |topic, partition| normalizer.held_from(topic, partition),
    );
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), at) in &after {
        offsets.add_partition_offset(topic, *partition, Offset::Offset(at.resume))?;
        if let Some(mut element) = offsets.find_partition(topic, *partition) {
            element.set_metadata(format!("{PROCESSED_PREFIX}{}", at.processed));
        }
    }
    Ok((offsets, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_consumer_defaults_yield_to_the_users_kafka_properties() {
        let mut settings = Settings::default();
        let options = PipelineOptions::for_stage("normalize-proxy", vec![], &settings);
        let defaults = [("max.partition.fetch.bytes", "262144")];
        let config = stage_consumer_config(&settings, &options, "range", &defaults);
        assert_eq!(config.get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(config.get("isolation.level"), Some("read_committed"));
        assert_eq!(config.get("max.partition.fetch.bytes"), Some("262144"));
        for (key, value) in [
            ("fetch.queue.backoff.ms", "250"),
            ("max.partition.fetch.bytes", "1048576"),
        ] {
            settings
                .kafka
                .properties
                .insert(key.to_string(), value.to_string());
        }
        let config = stage_consumer_config(&settings, &options, "range", &defaults);
        assert_eq!(config.get("fetch.queue.backoff.ms"), Some("250"));
        assert_eq!(config.get("max.partition.fetch.bytes"), Some("1048576"));
    }
}
