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
//!   transaction fails it is aborted and the consumer is rewound to the first record of the
//!   batch on each partition it still owns, so the batch is processed again.
//! - A fatal producer error (fenced by a newer instance) stops the loop with an error.
//! - On shutdown the open batch is finished (committed) or aborted, then the consumer leaves
//!   the group.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use offport_core::model::{DeadLetter, EpochMillis, RecordHeader};
use offport_core::normalize::{Normalized, Normalizer, RawRecord, Rejection};
use offport_core::schema::Contract;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::metrics::PipelineMetrics;
use crate::registry::{CodecError, RegistryCodec};
use crate::settings::Settings;
use crate::shutdown::Shutdown;
use crate::topics::TopicRole;

/// Errors that stop the loop.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A Kafka client could not be created or a fatal error occurred (e.g. fenced).
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A codec error that is not transient and not the record's fault (a build defect).
    #[error("encoding: {0}")]
    Codec(#[from] CodecError),
    /// Shutdown came while a transient failure was being retried; nothing of the batch was
    /// committed, so the group reads it again.
    #[error("shut down while retrying: {0}")]
    Interrupted(CodecError),
}

/// How a normalizer stage runs.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Stage name (`normalize-proxy`), for the group id, transactional id and dead letters.
    pub stage: &'static str,
    /// Topics to consume.
    pub inputs: Vec<String>,
    /// Records per transaction at most.
    pub batch_max: usize,
    /// How long a batch waits to fill.
    pub batch_linger: Duration,
    /// Longest pause between retries of a transient failure.
    pub max_backoff: Duration,
    /// Consumer group id.
    pub group_id: String,
    /// Transactional id of this instance: unique per instance, stable across its restarts.
    pub transactional_id: String,
    /// Static group membership (`group.instance.id`) when the instance id is configured: a
    /// restarted instance takes its partitions back at once instead of waiting for the group
    /// to expire its previous incarnation (session timeout).
    pub group_instance_id: Option<String>,
}

impl PipelineOptions {
    /// Options for `stage` from the settings: group `offport-<stage>`, transactional id
    /// `offport-<stage>-<instance id>`.
    pub fn for_stage(stage: &'static str, inputs: Vec<String>, settings: &Settings) -> Self {
        let pipeline = &settings.pipeline;
        Self {
            stage,
            inputs,
            batch_max: pipeline.batch_max_records.max(1),
            batch_linger: Duration::from_millis(pipeline.batch_linger_ms),
            max_backoff: Duration::from_millis(pipeline.max_backoff_ms.max(1)),
            group_id: format!("{}{stage}", pipeline.group_prefix),
            transactional_id: format!(
                "{}{stage}-{}",
                pipeline.group_prefix,
                pipeline.instance_id()
            ),
            group_instance_id: pipeline
                .instance_id
                .as_ref()
                .map(|id| format!("{}{stage}-{id}", pipeline.group_prefix)),
        }
    }
}

/// Consumer context that turns librdkafka's statistics into the lag gauge.
struct LagContext {
    metrics: Arc<PipelineMetrics>,
}

impl rdkafka::ClientContext for LagContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let lag: i64 = statistics
            .topics
            .values()
            .flat_map(|topic| topic.partitions.iter())
            // Partition -1 is librdkafka's internal unassigned queue; -1 lag means unknown.
            .filter(|(partition, p)| **partition >= 0 && p.consumer_lag >= 0)
            .map(|(_, p)| p.consumer_lag)
            .sum();
        self.metrics.lag.set(lag);
    }
}

impl rdkafka::consumer::ConsumerContext for LagContext {}

type LagConsumer = StreamConsumer<LagContext>;

/// One encoded record ready to produce.
struct Outgoing {
    topic: String,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
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
    let mut consumer_config = settings.kafka.client_config();
    if let Some(instance) = &options.group_instance_id {
        consumer_config.set("group.instance.id", instance);
    }
    let consumer: LagConsumer = consumer_config
        .set("statistics.interval.ms", "5000")
        .set("group.id", &options.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .create_with_context(LagContext {
            metrics: Arc::clone(&metrics),
        })?;
    let producer: FutureProducer = settings
        .kafka
        .client_config()
        .set("transactional.id", &options.transactional_id)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create()?;
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
    tracing::info!(
        stage = options.stage,
        "stopping: leaving the consumer group"
    );
    consumer.unsubscribe();
    match result {
        Err(PipelineError::Interrupted(error)) => {
            tracing::warn!(%error, "shut down during a retry; the uncommitted batch will be read again");
            Ok(())
        }
        other => other,
    }
}

/// The loop proper: batches until shutdown or a fatal error.
#[allow(clippy::too_many_arguments)]
async fn process<N: Normalizer>(
    consumer: &LagConsumer,
    producer: &FutureProducer,
    options: &PipelineOptions,
    normalizer: &mut N,
    codec: &RegistryCodec,
    metrics: &PipelineMetrics,
    shutdown: &Shutdown,
    settings: &Settings,
) -> Result<(), PipelineError> {
    let dead_letter_topic = TopicRole::DeadLetter.spec(&settings.topics).name;
    let topic_of = |normalized: &Normalized| {
        let role = match normalized {
            Normalized::Session(_) => TopicRole::Sessions,
            Normalized::Event(_) => TopicRole::DeviceEvents,
            Normalized::Context(_) => TopicRole::DeviceContexts,
        };
        role.spec(&settings.topics).name
    };
    while !shutdown.is_triggered() {
        let batch = collect_batch(consumer, options, shutdown).await?;
        if batch.is_empty() {
            continue;
        }
        let started = Instant::now();
        metrics.records_in.inc_by(batch.len() as u64);
        let now = wall_clock_millis();
        let mut outgoing = Vec::with_capacity(batch.len());
        for message in &batch {
            let headers = owned_headers(message);
            let raw = RawRecord {
                topic: message.topic(),
                partition: message.partition(),
                offset: message.offset(),
                key: message.key(),
                value: message.payload(),
                headers: &headers,
                timestamp: message.timestamp().to_millis(),
            };
            match normalizer.normalize(&raw, now) {
                Ok(records) => {
                    for record in records {
                        let topic = topic_of(&record);
                        let value =
                            encode_retrying(codec, &topic, &record, options, metrics, shutdown)
                                .await?;
                        outgoing.push(Outgoing {
                            key: Some(record.device_id().as_bytes().to_vec()),
                            topic,
                            value,
                            headers: Vec::new(),
                        });
                        metrics.records_out.inc();
                    }
                }
                Err(rejection) => {
                    tracing::warn!(
                        topic = raw.topic,
                        partition = raw.partition,
                        offset = raw.offset,
                        reason = ?rejection.reason,
                        message = %rejection.message,
                        "record dead-lettered"
                    );
                    metrics.dead_letter(rejection.reason);
                    outgoing.push(
                        dead_letter(
                            codec,
                            &dead_letter_topic,
                            &raw,
                            &rejection,
                            options,
                            metrics,
                            shutdown,
                            now,
                        )
                        .await?,
                    );
                }
            }
        }
        commit_batch(consumer, producer, &batch, outgoing, options, metrics).await?;
        metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
    }
    tracing::info!(
        stage = options.stage,
        "stopping: leaving the consumer group"
    );
    consumer.unsubscribe();
    Ok(())
}

/// Waits for the first record (or shutdown), then takes what arrives within the linger time.
async fn collect_batch(
    consumer: &LagConsumer,
    options: &PipelineOptions,
    shutdown: &Shutdown,
) -> Result<Vec<OwnedMessage>, PipelineError> {
    let mut batch = Vec::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    while batch.len() < options.batch_max {
        let wait = match deadline {
            None => Duration::from_millis(500),
            Some(at) => {
                let left = at.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                left
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            received = tokio::time::timeout(wait, consumer.recv()) => match received {
                Err(_) if deadline.is_none() => return Ok(batch),
                Err(_) => break,
                Ok(Ok(message)) => {
                    batch.push(message.detach());
                    deadline.get_or_insert_with(|| tokio::time::Instant::now() + options.batch_linger);
                }
                Ok(Err(error)) => {
                    // Consumer errors are reported by librdkafka and retried internally.
                    tracing::warn!(%error, "consumer error");
                    if batch.is_empty() {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        return Ok(batch);
                    }
                    break;
                }
            }
        }
    }
    Ok(batch)
}

async fn encode_retrying(
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

/// Retries `attempt` while its error is transient, with capped exponential backoff; gives up
/// only on a permanent error or shutdown (returning the last error).
async fn retrying<T, F, Fut>(
    options: &PipelineOptions,
    metrics: &PipelineMetrics,
    shutdown: &Shutdown,
    what: &str,
    mut attempt: F,
) -> Result<T, PipelineError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CodecError>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if error.is_transient() && shutdown.is_triggered() => {
                return Err(PipelineError::Interrupted(error))
            }
            Err(error) if error.is_transient() => {
                metrics.retries.inc();
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "{what} failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(PipelineError::Interrupted(error)),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(options.max_backoff);
            }
            Err(error) => return Err(error.into()),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn dead_letter(
    codec: &RegistryCodec,
    topic: &str,
    raw: &RawRecord<'_>,
    rejection: &Rejection,
    options: &PipelineOptions,
    metrics: &PipelineMetrics,
    shutdown: &Shutdown,
    now: EpochMillis,
) -> Result<Outgoing, PipelineError> {
    let letter = DeadLetter {
        original_key: raw.key.map(<[u8]>::to_vec),
        original_value: raw.value.map(<[u8]>::to_vec),
        original_headers: raw
            .headers
            .iter()
            .map(|(key, value)| RecordHeader {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        source_topic: raw.topic.to_string(),
        source_partition: raw.partition,
        source_offset: raw.offset,
        source_timestamp: raw.timestamp,
        stage: options.stage.to_string(),
        reason: rejection.reason,
        message: rejection.message.clone(),
        failed_time: now,
    };
    let value = retrying(options, metrics, shutdown, "dead-letter encode", || {
        codec.encode_value(topic, Contract::DeadLetter, &letter)
    })
    .await?;
    let headers = vec![
        (
            "offport.errors.topic".to_string(),
            raw.topic.as_bytes().to_vec(),
        ),
        (
            "offport.errors.partition".to_string(),
            raw.partition.to_string().into_bytes(),
        ),
        (
            "offport.errors.offset".to_string(),
            raw.offset.to_string().into_bytes(),
        ),
        (
            "offport.errors.stage".to_string(),
            options.stage.as_bytes().to_vec(),
        ),
        (
            "offport.errors.reason".to_string(),
            format!("{:?}", rejection.reason).into_bytes(),
        ),
        (
            "offport.errors.message".to_string(),
            rejection.message.as_bytes().to_vec(),
        ),
    ];
    Ok(Outgoing {
        topic: topic.to_string(),
        key: raw.key.map(<[u8]>::to_vec),
        value,
        headers,
    })
}

/// Produces `outgoing` and the batch's offsets in one transaction; on a failed transaction
/// aborts, rewinds the consumer to the batch and returns so the caller reads it again.
async fn commit_batch(
    consumer: &LagConsumer,
    producer: &FutureProducer,
    batch: &[OwnedMessage],
    outgoing: Vec<Outgoing>,
    options: &PipelineOptions,
    metrics: &PipelineMetrics,
) -> Result<(), PipelineError> {
    let timeout = Duration::from_secs(30);
    // Per partition: the first offset of the batch (to rewind to) and the next to consume.
    let mut span: BTreeMap<(String, i32), (i64, i64)> = BTreeMap::new();
    for message in batch {
        let entry = span
            .entry((message.topic().to_string(), message.partition()))
            .or_insert((message.offset(), message.offset()));
        entry.0 = entry.0.min(message.offset());
        entry.1 = entry.1.max(message.offset() + 1);
    }
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), (_, next)) in &span {
        offsets.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
    }
    let attempt = async {
        blocking(|| producer.begin_transaction())?;
        let mut deliveries = Vec::with_capacity(outgoing.len());
        for out in &outgoing {
            let mut headers = OwnedHeaders::new_with_capacity(out.headers.len());
            for (key, value) in &out.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            let mut record = FutureRecord::to(&out.topic)
                .payload(&out.value)
                .headers(headers);
            if let Some(key) = &out.key {
                record = record.key(key);
            }
            match producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((error, _)) => return Err(error),
            }
        }
        let metadata = consumer
            .group_metadata()
            // Only a consumer without a group lacks metadata; the loop always has one.
            .ok_or(KafkaError::Global(rdkafka::types::RDKafkaErrorCode::State))?;
        blocking(|| producer.send_offsets_to_transaction(&offsets, &metadata, timeout))?;
        blocking(|| producer.commit_transaction(timeout))?;
        for delivery in deliveries {
            if let Ok(Err((error, _))) = delivery.await {
                // Committed transactions have delivered everything; this is only logged.
                tracing::warn!(%error, "delivery report after commit");
            }
        }
        Ok::<(), KafkaError>(())
    };
    match attempt.await {
        Ok(()) => {
            metrics.transactions.inc();
            Ok(())
        }
        Err(error) if is_fatal(&error) => Err(error.into()),
        Err(error) => {
            metrics.aborts.inc();
            tracing::warn!(%error, stage = options.stage, "transaction failed; aborting and rewinding the batch");
            if let Err(abort) = blocking(|| producer.abort_transaction(timeout)) {
                if is_fatal(&abort) {
                    return Err(abort.into());
                }
                tracing::warn!(error = %abort, "abort failed");
            }
            rewind(consumer, &span);
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(())
        }
    }
}

/// Seeks each partition of the batch that is still assigned back to its first record.
fn rewind(consumer: &LagConsumer, span: &BTreeMap<(String, i32), (i64, i64)>) {
    let assigned = consumer.assignment().unwrap_or_default();
    for ((topic, partition), (first, _)) in span {
        if assigned.find_partition(topic, *partition).is_none() {
            continue;
        }
        if let Err(error) = consumer.seek(
            topic,
            *partition,
            Offset::Offset(*first),
            Duration::from_secs(10),
        ) {
            tracing::warn!(%error, topic, partition, "rewind failed; the group's committed offset still holds the batch");
        }
    }
}

fn is_fatal(error: &KafkaError) -> bool {
    match error {
        KafkaError::Transaction(e) => e.is_fatal(),
        _ => false,
    }
}

/// Runs a blocking librdkafka call (transaction API) without stalling the runtime.
fn blocking<T>(call: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(call)
}

fn owned_headers(message: &OwnedMessage) -> Vec<(String, Option<Vec<u8>>)> {
    message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default()
}

fn wall_clock_millis() -> EpochMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            EpochMillis::try_from(d.as_millis()).unwrap_or(EpochMillis::MAX)
        })
}
