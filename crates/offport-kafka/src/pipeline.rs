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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use offport_core::model::{DeadLetter, EpochMillis, RecordHeader};
use offport_core::normalize::{Normalized, Normalizer, RawRecord, Rejection};
use offport_core::schema::Contract;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::decisions::{after_batch, progress_from, Progress, PROCESSED_PREFIX};
use crate::metrics::PipelineMetrics;
use crate::progress::RawClocks;
use crate::registry::{CodecError, Registered, RegistryCodec};
use crate::settings::Settings;
use crate::shutdown::Shutdown;
use crate::topics::TopicRole;

/// Errors that stop the loop.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A Kafka client could not be created or a fatal error occurred (e.g. fenced).
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The start-up check failed: the broker rejected this client (credentials, TLS), or shutdown
    /// came while waiting for an unreachable cluster.
    #[error(transparent)]
    Connect(#[from] crate::connect::ConnectError),
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
    /// How long an empty batch waits for its first record before the loop looks around (idle
    /// and end-of-input rules, baselines updates).
    pub first_record_wait: Duration,
    /// Longest pause between retries of a transient failure.
    pub max_backoff: Duration,
    /// Consumer group id.
    pub group_id: String,
    /// Transactional id of this instance: unique per instance, stable across its restarts.
    pub transactional_id: String,
    /// Static group membership (`group.instance.id`, `pipeline.static_membership`): a restarted
    /// instance takes its partitions back at once instead of waiting for the group to expire
    /// its previous incarnation (session timeout).
    pub group_instance_id: Option<String>,
    /// Largest dead-letter record this stage writes: the producer's `message.max.bytes`, lowered
    /// at start to the dead-letter topic's `max.message.bytes` when that is smaller
    /// ([`PipelineOptions::fit_dead_letters_to_topic`]). Dead letters are cut to fit.
    pub dead_letter_max_bytes: usize,
    /// The dead letters' layout (`pipeline.dead_letter_format`).
    pub dead_letter_format: crate::settings::DeadLetterFormat,
    /// The normalized topics a normalizer's progress markers go to (see [`crate::progress`]):
    /// those it writes. All three unless the stage says otherwise.
    pub progress_topics: Vec<String>,
}

/// librdkafka's default `message.max.bytes`.
const PRODUCER_MESSAGE_MAX_BYTES: usize = 1_000_000;

impl PipelineOptions {
    /// Options for `stage` from the settings: group `offport-<stage>`, transactional id
    /// `offport-<stage>-<instance id>`.
    pub fn for_stage(stage: &'static str, inputs: Vec<String>, settings: &Settings) -> Self {
        let pipeline = &settings.pipeline;
        let instance = format!(
            "{}{stage}-{}",
            pipeline.group_prefix,
            pipeline.instance_id()
        );
        let static_membership = pipeline
            .static_membership
            .unwrap_or(pipeline.instance_id.is_some());
        Self {
            stage,
            inputs,
            batch_max: pipeline.batch_max_records.max(1),
            batch_linger: Duration::from_millis(pipeline.batch_linger_ms),
            first_record_wait: Duration::from_millis(500),
            max_backoff: Duration::from_millis(pipeline.max_backoff_ms.max(1)),
            group_id: format!("{}{stage}", pipeline.group_prefix),
            group_instance_id: static_membership.then(|| instance.clone()),
            transactional_id: instance,
            dead_letter_max_bytes: settings
                .kafka
                .properties
                .get("message.max.bytes")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(PRODUCER_MESSAGE_MAX_BYTES),
            dead_letter_format: pipeline.dead_letter_format,
            progress_topics: [
                TopicRole::Sessions,
                TopicRole::DeviceEvents,
                TopicRole::DeviceContexts,
            ]
            .map(|role| role.spec(&settings.topics).name)
            .to_vec(),
        }
    }

    /// Lowers [`PipelineOptions::dead_letter_max_bytes`] to what the dead-letter topic takes.
    /// When the topic's configuration cannot be read (no DescribeConfigs permission), the
    /// producer's limit stays and a warning says so.
    pub async fn fit_dead_letters_to_topic(&mut self, settings: &Settings) {
        let topic = TopicRole::DeadLetter.spec(&settings.topics).name;
        match crate::topics::max_message_bytes(&settings.kafka.client_config(), &topic).await {
            Ok(limit) => self.dead_letter_max_bytes = self.dead_letter_max_bytes.min(limit),
            Err(error) => tracing::warn!(
                %error,
                topic,
                limit = self.dead_letter_max_bytes,
                "cannot read the dead-letter topic's max.message.bytes; dead letters are cut to \
                 the producer's message.max.bytes"
            ),
        }
    }
}

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
}

impl LagContext {
    pub(crate) fn new(metrics: Arc<PipelineMetrics>) -> Self {
        Self {
            metrics,
            revoked: Mutex::new(Vec::new()),
            rebalances: std::sync::atomic::AtomicU64::new(0),
            ends: Mutex::new(HashMap::new()),
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

/// The context of a consumer that reads partitions to their end (changelog restores, the
/// baselines topic): the end of a partition is what it waits for, and librdkafka also reports it
/// as a global error (once per partition read), which rdkafka's default context logged at ERROR
/// level. Here it is a debug line; other errors are logged as the default context does.
pub(crate) struct ReadToEnd;

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

/// One encoded record ready to produce.
#[derive(Clone)]
pub(crate) struct Outgoing {
    pub(crate) topic: String,
    /// An explicit partition (changelogs); otherwise the murmur2 partitioner picks by key.
    pub(crate) partition: Option<i32>,
    pub(crate) key: Option<Vec<u8>>,
    /// `None` is a tombstone.
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
}

/// A record of a batch as the loop hands it to the transaction: encoded already, or a normalized
/// record whose schema is registered, encoded on the transaction's thread (the loop goes on to
/// the next batch meanwhile).
pub(crate) enum Pending {
    /// Encoded.
    Ready(Outgoing),
    /// To encode, then produce keyed by its device id.
    Encode {
        topic: String,
        registered: Arc<Registered>,
        record: Box<Normalized>,
    },
}

impl Pending {
    fn into_outgoing(self) -> Result<Outgoing, CodecError> {
        match self {
            Pending::Ready(outgoing) => Ok(outgoing),
            Pending::Encode {
                topic,
                registered,
                record,
            } => {
                let value = match &*record {
                    Normalized::Session(value) => registered.encode(value),
                    Normalized::Event(value) => registered.encode(value),
                    Normalized::Context(value) => registered.encode(value),
                }?;
                Ok(keyed(topic, &record, value))
            }
        }
    }
}

/// A normalized record's output: to `topic`, keyed by its device id (the murmur2 partitioner
/// picks the partition).
fn keyed(topic: String, record: &Normalized, value: Vec<u8>) -> Outgoing {
    Outgoing {
        key: Some(record.device_id().as_bytes().to_vec()),
        topic,
        partition: None,
        value: Some(value),
        headers: Vec::new(),
    }
}

/// Where a normalizer's records of one kind go: the topic, and its registered schema once
/// known (it does not change within a process, so the loop keeps it instead of looking it up
/// per record).
struct Output {
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

/// Why a transaction's thread gave up.
enum TxnFailure {
    /// The broker or client refused: abort, rewind, read again (unless fatal).
    Kafka(KafkaError),
    /// A record did not fit its own schema (a build defect): the stage stops.
    Encode(CodecError),
}

/// The consumer of a stage: its group (static membership when configured), offsets only
/// through transactions, read_committed, from the earliest offset of a new group.
pub(crate) fn stage_consumer(
    settings: &Settings,
    options: &PipelineOptions,
    assignment_strategy: &str,
    defaults: &[(&str, &str)],
    metrics: &Arc<PipelineMetrics>,
) -> Result<LagConsumer, KafkaError> {
    stage_consumer_config(settings, options, assignment_strategy, defaults)
        .create_with_context(LagContext::new(Arc::clone(metrics)))
}

fn stage_consumer_config(
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
    // 1 s by default: a stage that drains the queue in big batches then found it empty and
    // waited, 100-350 ms per gap in the normalize-proxy benchmark. A user's
    // kafka.properties value still wins.
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
        // retries after retry.backoff.ms, whose default of 100 ms stalled about one
        // transaction in eight. Backoff still grows exponentially to retry.backoff.max.ms.
        .set("retry.backoff.ms", "10")
        .create_with_context(HealthContext {
            metrics: Arc::clone(metrics),
        })
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
    if !crate::connect::connected_unless_shut_down(
        &settings.kafka,
        &settings.registry,
        options.max_backoff,
        &shutdown,
    )
    .await?
    {
        return Ok(());
    }
    let mut options = options;
    options.fit_dead_letters_to_topic(settings).await;
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
    producer: &StageProducer,
    options: &PipelineOptions,
    normalizer: &mut N,
    codec: &RegistryCodec,
    metrics: &PipelineMetrics,
    shutdown: &Shutdown,
    settings: &Settings,
) -> Result<(), PipelineError> {
    let dead_letter_topic = TopicRole::DeadLetter.spec(&settings.topics).name;
    let mut outputs = [
        TopicRole::Sessions,
        TopicRole::DeviceEvents,
        TopicRole::DeviceContexts,
    ]
    .map(|role| Output {
        topic: role.spec(&settings.topics).name,
        schema: None,
    });
    let shell = Shell {
        consumer,
        producer,
        options,
        metrics,
    };
    let mut progress: BTreeMap<(String, i32), Progress> = BTreeMap::new();
    // Per partition, the offset below which records were counted in the metrics: a batch read
    // again after an abort is processed again but not counted again.
    let mut counted = Counted::default();
    // The previous batch's transaction, committing while this batch is read and processed.
    let mut in_flight = None;
    let mut clocks = RawClocks::new(
        options.progress_topics.clone(),
        Duration::from_millis(settings.stream.idle_timeout_ms),
    );
    while !shutdown.is_triggered() {
        let revoked: Vec<(String, i32)> = consumer
            .context()
            .revoked
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        if !revoked.is_empty() {
            // Settle the open transaction before the bookkeeping of the partitions changes.
            settle(&mut in_flight, shell, normalizer, &mut progress).await?;
            let held = progress
                .keys()
                .any(|(topic, partition)| normalizer.held_from(topic, *partition).is_some());
            for (topic, partition) in &revoked {
                normalizer.forget(topic, *partition);
                clocks.forget(topic, *partition);
                progress.remove(&(topic.clone(), *partition));
            }
            // A held flow may mix partitions, and forgetting the revoked ones dropped whole
            // flows: rebuild what the remaining partitions held from their committed offsets.
            if held {
                restart_partitions(consumer, normalizer, &mut progress);
            }
        }
        let collecting = Instant::now();
        let batch = collect_batch(consumer, options, shutdown, metrics).await?;
        let t_collect = collecting.elapsed();
        if batch.is_empty() {
            if !settle(&mut in_flight, shell, normalizer, &mut progress).await? {
                clocks.rewound();
                continue;
            }
            // A quiet loop still tells the joiner when its partitions turn idle.
            let markers = clocks.markers(consumer, Instant::now(), |t, p| {
                normalizer.held_from(t, p).is_some()
            });
            if !markers.is_empty() {
                in_flight = Some(InFlight::spawn(
                    consumer,
                    producer,
                    markers.into_iter().map(Pending::Ready).collect(),
                    TopicPartitionList::new(),
                    progress.clone(),
                    Tally {
                        inputs: 0,
                        timestamps: Vec::new(),
                        started: Instant::now(),
                    },
                )?);
            }
            continue;
        }
        let started = Instant::now();
        let now = wall_clock_millis();
        let mut outgoing = Vec::with_capacity(batch.len());
        let mut fresh = 0_u64;
        let mut timestamps = Vec::with_capacity(batch.len());
        for message in &batch {
            let (topic, partition) = (message.topic(), message.partition());
            // A handful of partitions: a scan beats allocating a key per record.
            let known = progress
                .iter()
                .find(|((t, p), _)| *p == partition && t == topic)
                .map(|(_, at)| *at);
            let at = match known {
                Some(at) => at,
                None => {
                    let found = committed_progress(consumer, topic, partition, message.offset())?;
                    progress.insert((topic.to_string(), partition), found);
                    found
                }
            };
            let replaying = message.offset() < at.processed;
            let first_read = counted.first_read(topic, partition, message.offset());
            if !replaying {
                fresh += 1;
                timestamps.extend(message.timestamp().to_millis());
            }
            if first_read {
                metrics.records_in.inc();
            }
            let headers = owned_headers(message);
            let raw = RawRecord {
                topic,
                partition,
                offset: message.offset(),
                key: message.key(),
                value: message.payload(),
                headers: &headers,
                timestamp: message.timestamp().to_millis(),
            };
            let result = normalizer.normalize(&raw, now);
            if replaying {
                // Read again only to rebuild held state; its outputs are committed already.
                metrics.replayed.inc();
                clocks.record(topic, partition, started, None);
                continue;
            }
            let newest = result
                .as_ref()
                .ok()
                .and_then(|records| records.iter().map(Normalized::event_time).max());
            clocks.record(topic, partition, started, newest);
            match result {
                Ok(records) => {
                    for record in records {
                        let output = Output::of(&mut outputs, &record);
                        if output.schema.is_none() {
                            output.schema = codec.registered(&output.topic, record.contract());
                        }
                        // Once its schema is registered a record is encoded on the
                        // transaction's thread; the first of a topic registers it here.
                        match &output.schema {
                            Some(registered) => outgoing.push(Pending::Encode {
                                topic: output.topic.clone(),
                                registered: Arc::clone(registered),
                                record: Box::new(record),
                            }),
                            None => {
                                let value = encode_retrying(
                                    codec,
                                    &output.topic,
                                    &record,
                                    options,
                                    metrics,
                                    shutdown,
                                )
                                .await?;
                                outgoing.push(Pending::Ready(keyed(
                                    output.topic.clone(),
                                    &record,
                                    value,
                                )));
                            }
                        }
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
                    ));
                }
            }
        }
        let t_process = collecting.elapsed();
        // This batch's offsets build on the previous batch's: that transaction must be settled
        // first. When it failed, this batch's outputs are dropped with it and both are read
        // again from the committed offsets.
        if !settle(&mut in_flight, shell, normalizer, &mut progress).await? {
            clocks.rewound();
            continue;
        }
        let (offsets, after) = batch_offsets(&batch, &progress, normalizer)?;
        // After the batch's records, in its transaction: what they bring is covered.
        outgoing.extend(
            clocks
                .markers(consumer, Instant::now(), |t, p| {
                    normalizer.held_from(t, p).is_some()
                })
                .into_iter()
                .map(Pending::Ready),
        );
        tracing::debug!(
            records = batch.len(),
            collect_ms = t_collect.as_secs_f64() * 1e3,
            process_ms = (t_process - t_collect).as_secs_f64() * 1e3,
            settle_ms = (collecting.elapsed() - t_process).as_secs_f64() * 1e3,
            "batch"
        );
        let tally = Tally {
            inputs: fresh,
            timestamps,
            started,
        };
        in_flight = Some(InFlight::spawn(
            consumer, producer, outgoing, offsets, after, tally,
        )?);
    }
    settle(&mut in_flight, shell, normalizer, &mut progress).await?;
    tracing::info!(
        stage = options.stage,
        "stopping: leaving the consumer group"
    );
    consumer.unsubscribe();
    Ok(())
}

/// Per partition, the offset below which records were counted in the metrics. A handful of
/// partitions per instance: a scan beats hashing a key per record.
#[derive(Debug, Default, Clone)]
pub(crate) struct Counted(Vec<((String, i32), i64)>);

impl Counted {
    /// `true` when `offset` of the partition was read before.
    pub(crate) fn seen(&self, topic: &str, partition: i32, offset: i64) -> bool {
        self.0
            .iter()
            .any(|((t, p), below)| *p == partition && t == topic && offset < *below)
    }

    /// `true` the first time `offset` of the partition is read (reading it again after an
    /// abort or a rewind is not a new record); notes it as read.
    pub(crate) fn first_read(&mut self, topic: &str, partition: i32, offset: i64) -> bool {
        match self
            .0
            .iter_mut()
            .find(|((t, p), _)| *p == partition && t == topic)
        {
            Some((_, below)) if offset < *below => false,
            Some((_, below)) => {
                *below = offset + 1;
                true
            }
            None => {
                self.0.push(((topic.to_string(), partition), offset + 1));
                true
            }
        }
    }
}

/// Longest rejection message a log line carries (the dead letter keeps up to
/// [`offport_core::model::DEAD_LETTER_MESSAGE_BYTES`]).
const LOG_MESSAGE_BYTES: usize = 512;

/// Cuts a message quoting a bad value to a log line's length, at a character boundary.
pub(crate) fn cut_for_log(text: &mut String) {
    if text.len() > LOG_MESSAGE_BYTES {
        let mut end = LOG_MESSAGE_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(" [cut]");
    }
}

/// A batch's transaction running on a blocking thread while the loop reads and processes the
/// next batch (so the transaction's round trips to the broker do not stall the processing),
/// with what the loop keeps until it knows the outcome.
pub(crate) struct InFlight<T> {
    task: tokio::task::JoinHandle<Result<(), TxnFailure>>,
    /// What the loop needs once it knows the outcome (the normalizers: the progress after the
    /// batch; the stateful stages: the baseline dead letters it carries).
    kept: T,
    tally: Tally,
    /// The input partitions whose offsets the transaction commits, named when it keeps failing.
    partitions: Vec<(String, i32)>,
}

/// What a batch's metrics need once its transaction committed.
pub(crate) struct Tally {
    /// The batch's fresh input records (not read again to rebuild state).
    pub(crate) inputs: u64,
    /// Event times of the batch's fresh records, for the end-to-end latency.
    pub(crate) timestamps: Vec<i64>,
    /// When the batch started.
    pub(crate) started: Instant,
}

impl<T> InFlight<T> {
    /// Produces `outgoing` and the offsets in one transaction on a blocking thread. The
    /// producer runs one transaction at a time: the caller settles this one before starting
    /// another.
    pub(crate) fn spawn(
        consumer: &LagConsumer,
        producer: &StageProducer,
        outgoing: Vec<Pending>,
        offsets: TopicPartitionList,
        kept: T,
        tally: Tally,
    ) -> Result<Self, PipelineError> {
        let metadata = consumer
            .group_metadata()
            // Only a consumer without a group lacks metadata; the loops always have one.
            .ok_or(KafkaError::Global(rdkafka::types::RDKafkaErrorCode::State))?;
        let partitions = offsets
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let producer = producer.clone();
        let runtime = tokio::runtime::Handle::current();
        // A blocking thread of its own: a task spawned from the loop's worker would wait in
        // that worker's queue (tokio's LIFO slot is not stolen) until the loop's processing
        // yields.
        let task = tokio::task::spawn_blocking(move || {
            let outgoing = outgoing
                .into_iter()
                .map(Pending::into_outgoing)
                .collect::<Result<Vec<_>, _>>()
                .map_err(TxnFailure::Encode)?;
            transact_blocking(&metadata, &producer, &outgoing, &offsets, &runtime)
                .map_err(TxnFailure::Kafka)
        });
        Ok(Self {
            task,
            kept,
            tally,
            partitions,
        })
    }

    /// Waits for the transaction. Committed: its metrics recorded and `Ok(kept)`. Failed (not
    /// fatally): aborted and `Err(kept)`; the caller rewinds. A fatal error stops the loop.
    pub(crate) async fn outcome(
        self,
        producer: &StageProducer,
        options: &PipelineOptions,
        metrics: &PipelineMetrics,
    ) -> Result<Result<T, T>, PipelineError> {
        let result = match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(TxnFailure::Kafka(error))) => Err(error),
            // Encoded before the transaction began: nothing to abort.
            Ok(Err(TxnFailure::Encode(error))) => return Err(PipelineError::Codec(error)),
            Err(_) => Err(KafkaError::Canceled),
        };
        match &result {
            Ok(()) => metrics.health.progressed(),
            Err(error) => metrics.health.aborted(self.partitions, &error.to_string()),
        }
        if abort_unless_committed(result, producer, options, metrics).await? {
            metrics.committed(&self.tally.timestamps);
            metrics.records_committed.inc_by(self.tally.inputs);
            metrics
                .batch_seconds
                .observe(self.tally.started.elapsed().as_secs_f64());
            Ok(Ok(self.kept))
        } else {
            Ok(Err(self.kept))
        }
    }
}

/// The Kafka side of the normalizer loop, for the helpers that settle its transactions.
#[derive(Clone, Copy)]
struct Shell<'a> {
    consumer: &'a LagConsumer,
    producer: &'a StageProducer,
    options: &'a PipelineOptions,
    metrics: &'a PipelineMetrics,
}

/// Waits for the in-flight transaction, if any. None, or committed: the progress moves on and
/// `true`. Failed (not fatally): aborted, every tracked partition rewound to its committed
/// offset, and `false` (the caller drops whatever it processed since; it is read again).
async fn settle<N: Normalizer>(
    in_flight: &mut Option<InFlight<BTreeMap<(String, i32), Progress>>>,
    shell: Shell<'_>,
    normalizer: &mut N,
    progress: &mut BTreeMap<(String, i32), Progress>,
) -> Result<bool, PipelineError> {
    let Some(open) = in_flight.take() else {
        return Ok(true);
    };
    match open
        .outcome(shell.producer, shell.options, shell.metrics)
        .await?
    {
        Ok(after) => {
            progress.extend(after);
            Ok(true)
        }
        Err(_) => {
            restart_partitions(shell.consumer, normalizer, progress);
            Ok(false)
        }
    }
}

/// Waits for the first record (or shutdown), then takes what arrives within the linger time.
///
/// The records stay in librdkafka's buffers (no copy) until the batch is dropped; two timers
/// per batch, none per record.
pub(crate) async fn collect_batch<'c>(
    consumer: &'c LagConsumer,
    options: &PipelineOptions,
    shutdown: &Shutdown,
    metrics: &PipelineMetrics,
) -> Result<Vec<BorrowedMessage<'c>>, PipelineError> {
    let mut batch = Vec::new();
    let first = tokio::select! {
        _ = shutdown.cancelled() => return Ok(batch),
        _ = tokio::time::sleep(options.first_record_wait) => return Ok(batch),
        received = consumer.recv() => received,
    };
    match first {
        Ok(message) => {
            metrics.first_read.get_or_init(Instant::now);
            batch.push(message);
        }
        Err(error) => {
            // Consumer errors are reported by librdkafka and retried internally; an
            // unreachable cluster is logged once per outage.
            if !metrics.health.kafka_error(&error, "consumer") {
                tracing::warn!(%error, "consumer error");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            return Ok(batch);
        }
    }
    let linger = tokio::time::sleep(options.batch_linger);
    tokio::pin!(linger);
    while batch.len() < options.batch_max {
        tokio::select! {
            biased;
            received = consumer.recv() => match received {
                Ok(message) => batch.push(message),
                Err(error) => {
                    if !metrics.health.kafka_error(&error, "consumer") {
                        tracing::warn!(%error, "consumer error");
                    }
                    break;
                }
            },
            _ = &mut linger => break,
            _ = shutdown.cancelled() => break,
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
pub(crate) async fn retrying<T, F, Fut>(
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
pub(crate) async fn dead_letter(
    codec: &RegistryCodec,
    topic: &str,
    raw: &RawRecord<'_>,
    rejection: &Rejection,
    options: &PipelineOptions,
    metrics: &PipelineMetrics,
    shutdown: &Shutdown,
    now: EpochMillis,
) -> Result<Outgoing, PipelineError> {
    let mut letter = DeadLetter {
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
        original_value_size: None,
        original_value_sha256: None,
        truncated: false,
    };
    let offport_headers = |message: &str| {
        vec![
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
                rejection.reason.code().as_bytes().to_vec(),
            ),
            (
                "offport.errors.message".to_string(),
                message.as_bytes().to_vec(),
            ),
        ]
    };
    if options.dead_letter_format == crate::settings::DeadLetterFormat::Connect {
        // Kafka Connect's layout: the record as it was (a header without a value is written
        // with an empty one), then where it came from and why.
        let mut headers: Vec<(String, Vec<u8>)> = raw
            .headers
            .iter()
            .map(|(key, value)| (key.clone(), value.clone().unwrap_or_default()))
            .collect();
        headers.extend(connect_headers(raw, options.stage, rejection));
        headers.extend(offport_headers(&rejection.message));
        return Ok(Outgoing {
            topic: topic.to_string(),
            partition: None,
            key: raw.key.map(<[u8]>::to_vec),
            value: raw.value.map(<[u8]>::to_vec),
            headers,
        });
    }
    letter.fit_within(options.dead_letter_max_bytes);
    let value = retrying(options, metrics, shutdown, "dead-letter encode", || {
        codec.encode_value(topic, Contract::DeadLetter, &letter)
    })
    .await?;
    let headers = offport_headers(&letter.message);
    Ok(Outgoing {
        topic: topic.to_string(),
        partition: None,
        key: raw.key.map(<[u8]>::to_vec),
        value: Some(value),
        headers,
    })
}

/// Kafka Connect's error headers (`errors.deadletterqueue.context.headers.enable`) for a record
/// `stage` rejected: `__connect.errors.stage` is `VALUE_CONVERTER` for a value that could not
/// be read as its format, `TRANSFORMATION` for one read but refused; the exception class names
/// the rejection reason.
pub fn connect_headers(
    raw: &RawRecord<'_>,
    stage: &str,
    rejection: &Rejection,
) -> Vec<(String, Vec<u8>)> {
    use offport_core::model::DeadLetterReason;
    let connect_stage = match rejection.reason {
        DeadLetterReason::Unparseable | DeadLetterReason::UnknownFormat => "VALUE_CONVERTER",
        _ => "TRANSFORMATION",
    };
    let reason = rejection.reason.code();
    [
        ("__connect.errors.topic", raw.topic.to_string()),
        ("__connect.errors.partition", raw.partition.to_string()),
        ("__connect.errors.offset", raw.offset.to_string()),
        (
            "__connect.errors.connector.name",
            format!("offport-{stage}"),
        ),
        ("__connect.errors.task.id", raw.partition.to_string()),
        ("__connect.errors.stage", connect_stage.to_string()),
        ("__connect.errors.class.name", format!("offport.{stage}")),
        (
            "__connect.errors.exception.class.name",
            format!("offport.DeadLetterReason.{reason}"),
        ),
        (
            "__connect.errors.exception.message",
            rejection.message.clone(),
        ),
        (
            "__connect.errors.exception.stacktrace",
            format!("{reason}: {}", rejection.message),
        ),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value.into_bytes()))
    .collect()
}

/// The committed progress of a partition newly seen by this consumer.
fn committed_progress(
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
fn restart_partitions<N: Normalizer>(
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
fn batch_offsets<N: Normalizer>(
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

/// The outcome of a transaction: `true` when it committed; a fatal error (fenced) stops the
/// loop; any other error aborts the transaction and gives `false` (the caller rewinds).
pub(crate) async fn abort_unless_committed(
    result: Result<(), KafkaError>,
    producer: &StageProducer,
    options: &PipelineOptions,
    metrics: &PipelineMetrics,
) -> Result<bool, PipelineError> {
    match result {
        Ok(()) => {
            metrics.transactions.inc();
            Ok(true)
        }
        Err(error) if is_fatal(&error) => Err(error.into()),
        Err(error) => {
            metrics.aborts.inc();
            tracing::warn!(%error, stage = options.stage, "transaction failed; aborting and rewinding");
            // A timed-out abort goes on in the background; calling again resumes it (a new
            // transaction could not begin before it ends).
            for attempt in 1..=3 {
                match blocking(|| producer.abort_transaction(Duration::from_secs(30))) {
                    Ok(()) => break,
                    Err(abort) if is_fatal(&abort) => return Err(abort.into()),
                    Err(abort) if is_retriable(&abort) && attempt < 3 => {
                        tracing::warn!(error = %abort, attempt, "abort not finished; resuming it");
                    }
                    Err(abort) => {
                        tracing::warn!(error = %abort, "abort failed");
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(false)
        }
    }
}

/// Produces `outgoing` and commits `offsets` (with the consumer's group metadata, KIP-447) in one
/// transaction, synchronously, on a blocking thread; `runtime` waits for the delivery reports.
/// On error the caller aborts.
fn transact_blocking(
    metadata: &rdkafka::consumer::ConsumerGroupMetadata,
    producer: &StageProducer,
    outgoing: &[Outgoing],
    offsets: &TopicPartitionList,
    runtime: &tokio::runtime::Handle,
) -> Result<(), KafkaError> {
    let timeout = Duration::from_secs(30);
    let began = Instant::now();
    producer.begin_transaction()?;
    let mut deliveries = Vec::with_capacity(outgoing.len());
    for out in outgoing {
        let mut record: FutureRecord<'_, Vec<u8>, Vec<u8>> = FutureRecord::to(&out.topic);
        if !out.headers.is_empty() {
            // librdkafka allocates a header list even for none: only when there are some.
            let mut headers = OwnedHeaders::new_with_capacity(out.headers.len());
            for (key, value) in &out.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            record = record.headers(headers);
        }
        if let Some(value) = &out.value {
            record = record.payload(value);
        }
        if let Some(key) = &out.key {
            record = record.key(key);
        }
        if let Some(partition) = out.partition {
            record = record.partition(partition);
        }
        // A large batch (a flush at the end of input) can fill librdkafka's queue: wait for
        // deliveries to make room rather than fail the transaction.
        let waited = Instant::now();
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if waited.elapsed() < timeout =>
                {
                    record = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err((error, _)) => return Err(error),
            }
        }
    }
    let produced = began.elapsed();
    if offsets.count() > 0 {
        producer.send_offsets_to_transaction(offsets, metadata, timeout)?;
    }
    let offsets_sent = began.elapsed();
    // Wait for every delivery report before committing: a failed delivery aborts the
    // transaction here. rust-rdkafka's commit_transaction flushes first, and its flush polls the
    // producer's queue in 100 ms waits while the producer's own thread serves that queue: with
    // any message still counted it stalls. So the reports are awaited here, and then the count
    // left to drain (the futures resolve a moment before their reports are freed; without the
    // drain one commit in about twelve stalled 100 ms, per librdkafka's eos debug log).
    runtime.block_on(async {
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => return Err(error),
                Err(_) => return Err(KafkaError::Canceled),
            }
        }
        Ok(())
    })?;
    let draining = Instant::now();
    while producer.in_flight_count() > 0 && draining.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_micros(100));
    }
    let delivered = began.elapsed();
    producer.commit_transaction(timeout)?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    tracing::debug!(
        records = outgoing.len(),
        produce_ms = ms(produced),
        offsets_ms = ms(offsets_sent - produced),
        deliveries_ms = ms(delivered - offsets_sent),
        commit_ms = ms(began.elapsed() - delivered),
        "transaction"
    );
    Ok(())
}

/// A transaction call that timed out and may be called again to resume.
fn is_retriable(error: &KafkaError) -> bool {
    match error {
        KafkaError::Transaction(e) => e.is_retriable(),
        _ => false,
    }
}

pub(crate) fn is_fatal(error: &KafkaError) -> bool {
    match error {
        KafkaError::Transaction(e) => e.is_fatal(),
        _ => false,
    }
}

/// Runs a blocking librdkafka call (transaction API) without stalling the runtime.
pub(crate) fn blocking<T>(call: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(call)
}

/// A message's headers, owned (names as text, values as bytes), in order.
pub fn owned_headers(message: &impl Message) -> Vec<(String, Option<Vec<u8>>)> {
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

pub(crate) fn wall_clock_millis() -> EpochMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            EpochMillis::try_from(d.as_millis()).unwrap_or(EpochMillis::MAX)
        })
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
