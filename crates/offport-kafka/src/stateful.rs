//! The exactly-once loop of the stateful stages (joiner, scorer), with state that survives
//! crashes, restarts and partition reassignment.
//!
//! # Tasks
//!
//! The inputs are co-partitioned by device id, so partition *p* of every input topic belongs to
//! one **task** *p*, which owns one instance of the stage's pure core (a `Joiner` or a
//! `Scorer`) and nothing else: a device's records all meet in one task. The group uses the
//! **range** assignor, which gives a member the same partition numbers of every topic with the
//! same partition count, so a task is never split between instances. (Cooperative-sticky, the
//! normalizers' assignor, balances topic partitions independently and can hand a device's
//! sessions to one instance and its EDR events to another; Kafka Streams avoids that with its own
//! assignor, which librdkafka cannot plug in.)
//!
//! # Task threads
//!
//! The tasks of a batch are processed side by side on the stage's `stream.workers` task threads
//! (a pool kept for the stage's life; one per core by default): a task's records are decoded,
//! processed and encoded in order on one thread, and the tasks' outputs are collected in
//! partition order before the transaction. Tasks share nothing but the read-only stage and
//! codec, so the output is what one thread produces. Records whose writer schema is not yet
//! known, outputs whose schema is not yet registered and dead letters go through the loop's
//! thread (they may call the registry).
//!
//! # Changelog (Kafka Streams' model)
//!
//! After each batch the keys the batch changed in each task (see
//! [`offport_core::durable`]) are written to partition *p* of the stage's compacted changelog
//! topic **in the same transaction** as the outputs and the input offsets (KIP-447: the offsets
//! go with the consumer's group metadata, so an instance of an older group generation is
//! fenced). A transaction commits all three or none.
//!
//! When a task is assigned (after start, a rebalance or an aborted transaction), it is rebuilt
//! from its changelog partition, read `read_committed` to its end, before any of its records is
//! processed. The committed offsets the consumer resumed from were read with KIP-447's
//! stable-offset fetch, so any transaction holding them has finished and its changelog records
//! are visible: the restored state is exactly the state after the last committed input record.
//!
//! # Rebalances and aborts
//!
//! A rebalance can only happen while the loop polls. If one happens while a batch is being
//! collected, the batch is dropped uncommitted, every task is dropped, and every partition still
//! assigned is rewound to its committed offset; tasks are restored again on their next record.
//! An aborted transaction is handled the same way. Output therefore only ever comes from state
//! that matches the committed offsets: nothing is lost or written twice.
//!
//! # Watermarks, idle partitions, end of input
//!
//! Each task has its own watermark (the joiner's: the highest event time of the task minus
//! `stream.allowed_lateness_ms`). **Idle rule**: when a task has had no record for
//! `stream.idle_timeout_ms` of wall time, the stage may move its event time on with the clock
//! (the joiner emits sessions that would be due if event time had advanced as much as wall time
//! since the last record). **Lagging inputs** (stages that ask,
//! [`StatefulStage::waits_for_lagging_inputs`]): per task and input, whether records are left
//! in the batch or on the broker; the joiner's watermark then waits for such an input, up to
//! `stream.idle_timeout_ms` without a record from it. **End-of-input rule** (`stream.stop_at_end`): once every assigned
//! partition is read to its end, every task flushes what it still holds, the flush is committed,
//! and the loop stops: a bounded replay finishes with all its output.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use offport_core::baseline::BaselineSet;
use offport_core::cache::CacheStats;
use offport_core::durable::{Durable, StateChange};
use offport_core::model::{DeadLetterReason, EpochMillis};
use offport_core::normalize::{RawRecord, Rejection};
use offport_core::progress::{Marker, HEADER as PROGRESS_HEADER};
use offport_core::schema::Contract;
use offport_core::score::WARM_GROUP;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::baselines::{BaselineFeed, FeedError, Rejected};
use crate::decisions::{input_lags, read_to_end};
use crate::metrics::PipelineMetrics;
use crate::pipeline::{
    blocking, collect_batch, cut_for_log, dead_letter, owned_headers, retrying, wall_clock_millis,
    Counted, InFlight, LagConsumer, Outgoing, Pending, PipelineError, PipelineOptions, ReadToEnd,
    Tally,
};
use crate::registry::{CodecError, RegistryCodec};
use crate::settings::Settings;
use crate::shutdown::Shutdown;
use crate::topics::TopicRole;

/// A record a stage emits.
#[derive(Debug, Clone)]
pub enum Emit<T> {
    /// `value` in Avro through the registry, as the contract's subject of `topic`.
    Avro {
        /// Output topic.
        topic: String,
        /// Record key (the device id).
        key: String,
        /// Contract of the value.
        contract: Contract,
        /// The value.
        value: T,
    },
    /// Bytes as they are (JSON for SIEMs).
    Bytes {
        /// Output topic.
        topic: String,
        /// Record key (the device id).
        key: String,
        /// The value.
        value: Vec<u8>,
    },
}

/// Why an input record could not be decoded: it goes to the dead-letter topic.
#[derive(Debug, thiserror::Error)]
#[error("the record does not fit {target}: {source}")]
pub struct DecodeError {
    /// The record type (`NetworkSession`, ...).
    pub target: &'static str,
    /// The codec's reason.
    #[source]
    pub source: crate::registry::CodecError,
}

/// What a stateful stage does with its records; [`run_stateful`] does the rest.
pub trait StatefulStage: Send + Sync {
    /// The pure core of one task.
    type Task: Durable + Send + Sync;
    /// A decoded input record.
    type Input: Send;
    /// An output value (Avro-encoded through the registry).
    type Output: Serialize + Send + Sync;
    /// The name of an input (the joiner's `JoinerInput`).
    type InputName: Copy + Send + Sync + 'static;

    /// Stage name (`joiner`), for the group id, transactional id and dead letters.
    fn name(&self) -> &'static str;
    /// The topics consumed, co-partitioned, each with its input's name.
    fn inputs(&self) -> &[(Self::InputName, TopicRole)];
    /// The stage's changelog topic.
    fn changelog(&self) -> TopicRole;
    /// A fresh task judging against `baselines`.
    fn new_task(&self, baselines: &Arc<BaselineSet>) -> Self::Task;
    /// The typed record of input `input` from its Confluent wire-format payload, whose writer
    /// schema `codec` already holds ([`RegistryCodec::decode_known`]); why not, for the dead
    /// letter.
    fn decode(
        &self,
        input: Self::InputName,
        payload: &[u8],
        codec: &RegistryCodec,
    ) -> Result<Self::Input, DecodeError>;
    /// Processes one record.
    fn process(&self, task: &mut Self::Task, input: Self::Input) -> Vec<Emit<Self::Output>>;
    /// Reads, without changing it, the state that processing `input` will read first, so that
    /// the cache misses of a group of upcoming records overlap instead of stalling one by one
    /// ([`offport_core::score::Scorer::warm`]). The loop calls it for each group of
    /// [`offport_core::score::WARM_GROUP`] records before it processes the group before them.
    /// The result means nothing. Stages without such state do nothing.
    fn warm(&self, _task: &Self::Task, _input: &Self::Input) -> u64 {
        0
    }
    /// The task has had no record for `idle_ms` of wall time.
    fn idle(&self, task: &mut Self::Task, idle_ms: i64) -> Vec<Emit<Self::Output>>;
    /// End of input: emit everything still held.
    fn flush(&self, task: &mut Self::Task) -> Vec<Emit<Self::Output>>;
    /// The baselines changed.
    fn baselines_changed(&self, task: &mut Self::Task, baselines: &Arc<BaselineSet>);
    /// Keys and approximate heap bytes of a task's state.
    fn state_size(&self, task: &Self::Task) -> (usize, usize);

    /// True for a stage that waits for inputs read behind the others (the joiner's
    /// watermark): the loop then works out, for every task, which of [`Self::inputs`] have
    /// records not processed yet and tells it through [`Self::inputs_lagging`].
    fn waits_for_lagging_inputs(&self) -> bool {
        false
    }
    /// Which of [`Self::inputs`] have records not processed yet (in the batch at hand or not
    /// read from the broker); returns what that completes. Called before a task's records of a
    /// batch and again as each input's last record in the batch is processed.
    fn inputs_lagging(
        &self,
        _task: &mut Self::Task,
        _lagging: &[(Self::InputName, bool)],
    ) -> Vec<Emit<Self::Output>> {
        vec![]
    }

    /// Raw topics whose progress markers ([`offport_core::progress`]) the stage waits for
    /// while they hold records: the joiner's. Others ignore markers.
    fn upstream(&self) -> &[TopicRole] {
        &[]
    }
    /// A progress marker read on input `input`; returns what that completes.
    fn progress(
        &self,
        _task: &mut Self::Task,
        _input: Self::InputName,
        _marker: &Marker,
    ) -> Vec<Emit<Self::Output>> {
        vec![]
    }
    /// Which of [`Self::upstream`] hold records (the task waits for any it has no marker
    /// from); returns what that completes. Called before each batch's records.
    fn awaiting(
        &self,
        _task: &mut Self::Task,
        _with_records: &[String],
    ) -> Vec<Emit<Self::Output>> {
        vec![]
    }

    /// Records the task took after its watermark had passed them, since it was built or
    /// restored (the joiner's late-data rule); 0 for stages without one.
    fn late_records(&self, _task: &Self::Task) -> u64 {
        0
    }

    /// Holds a task's state to at most `max_bytes`, evicting what matters least; returns how
    /// many keys were evicted. Stages without a cap keep everything.
    fn enforce_cap(&self, _task: &mut Self::Task, _max_bytes: usize) -> usize {
        0
    }

    /// The stage's own bounded caches (those its tasks share), for the cache metrics.
    fn caches(&self) -> Vec<CacheStats> {
        Vec::new()
    }
}

/// The stateful stages' consumer defaults (a user's `kafka.properties` wins). A fetch returns
/// up to `max.partition.fetch.bytes` of each partition and the consumer hands them on partition
/// by partition: with librdkafka's 1 MiB a batch of 10,000 records in the stateful benchmark
/// held one or two of its six partitions (tasks), leaving task threads idle; at 256 KiB it held
/// three to five.
///
/// Statistics every second (not the normalizers' 5 s): the joiner learns from them where each
/// input partition ends, to tell an input with records left to read (see
/// [`StatefulStage::waits_for_lagging_inputs`]).
const STAGE_FETCH: [(&str, &str); 2] = [
    ("max.partition.fetch.bytes", "262144"),
    ("statistics.interval.ms", "1000"),
];

/// A batch's transaction, keeping the baseline dead letters it carries.
type StatefulInFlight = InFlight<Vec<Outgoing>>;

struct Slot<T> {
    task: T,
    last_record: Instant,
    /// When each input last brought the task a record (or the task was set up): an input
    /// silent for `stream.idle_timeout_ms` is not waited for.
    input_records: Vec<Instant>,
    /// Late records of the task already counted in the metric.
    late_counted: u64,
}

impl<T> Slot<T> {
    fn new(task: T, now: Instant, inputs: usize) -> Self {
        Self {
            task,
            last_record: now,
            input_records: vec![now; inputs],
            late_counted: 0,
        }
    }
}

/// Runs a stateful stage until shutdown (or, with `stream.stop_at_end`, the end of its input).
pub async fn run_stateful<S: StatefulStage>(
    settings: &Settings,
    stage: S,
    codec: Arc<RegistryCodec>,
    metrics: Arc<PipelineMetrics>,
    shutdown: Shutdown,
) -> Result<(), PipelineError> {
    let inputs: Vec<String> = stage
        .inputs()
        .iter()
        .map(|(_, role)| role.spec(&settings.topics).name)
        .collect();
    let mut options = PipelineOptions::for_stage(stage.name(), inputs, settings);
    if settings.stream.stop_at_end {
        // A bounded replay looks for its end as soon as records stop coming.
        options.first_record_wait = options.batch_linger.max(Duration::from_millis(10));
    }
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
    options.fit_dead_letters_to_topic(settings).await;
    let mut feed = open_feed(settings, &codec, &options, &metrics, &shutdown).await?;
    let consumer: LagConsumer =
        crate::pipeline::stage_consumer(settings, &options, "range", &STAGE_FETCH, &metrics)?;
    let restorer: BaseConsumer<ReadToEnd> = settings
        .kafka
        .client_config()
        .set("group.id", format!("{}-restore", options.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        // The end of a changelog partition is what a restore waits for: do not let the broker
        // hold an empty fetch for the default 500 ms.
        .set("fetch.wait.max.ms", "10")
        .set("isolation.level", "read_committed")
        .create_with_context(ReadToEnd)?;
    let producer =
        crate::pipeline::transactional_producer(settings, &options.transactional_id, &metrics)?;
    blocking(|| producer.init_transactions(Duration::from_secs(30)))?;
    // The restorer learns the changelog's partition leaders now: otherwise the first restore
    // waited for them, 0.5-1 s, before its first fetch.
    let changelog = stage.changelog().spec(&settings.topics).name;
    if let Err(error) =
        blocking(|| restorer.fetch_metadata(Some(&changelog), Duration::from_secs(10)))
    {
        tracing::warn!(%error, topic = %changelog, "changelog metadata not fetched ahead of the first restore");
    }
    let topics: Vec<&str> = options.inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    metrics.ready.store(true, Ordering::Relaxed);
    tracing::info!(
        stage = options.stage,
        group = %options.group_id,
        transactional_id = %options.transactional_id,
        inputs = ?options.inputs,
        "consuming"
    );
    let mut runner = Runner {
        settings,
        stage: &stage,
        options: &options,
        codec: &codec,
        metrics: &metrics,
        shutdown: &shutdown,
        consumer: &consumer,
        producer: &producer,
        restorer: &restorer,
        changelog,
        dead_letter_topic: TopicRole::DeadLetter.spec(&settings.topics).name,
        tasks: BTreeMap::new(),
        positions: BTreeMap::new(),
        counted: Counted::default(),
        rebalances: 0,
        last_gauges: Instant::now(),
        pool: task_pool(stage.name(), settings.stream.worker_threads()),
        carried: Vec::new(),
        upstream: Upstream {
            topics: stage
                .upstream()
                .iter()
                .map(|role| role.spec(&settings.topics).name)
                .collect(),
            with_records: Vec::new(),
            checked: None,
        },
    };
    let result = runner.run(&mut feed).await;
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

/// Reads the baselines topic to its end, retrying while the broker or registry is unreachable.
async fn open_feed(
    settings: &Settings,
    codec: &RegistryCodec,
    options: &PipelineOptions,
    metrics: &PipelineMetrics,
    shutdown: &Shutdown,
) -> Result<BaselineFeed, PipelineError> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match BaselineFeed::open(settings, codec, Duration::from_secs(60)).await {
            Ok((feed, rejected)) => {
                metrics.baselines_applied.inc_by(feed.applied());
                metrics.baselines_rejected.inc_by(rejected.len() as u64);
                return Ok(feed);
            }
            Err(FeedError::Codec(error)) if error.is_transient() && !shutdown.is_triggered() => {
                tracing::warn!(%error, "reading the baselines; retrying");
            }
            Err(FeedError::Timeout { topic, seconds }) if !shutdown.is_triggered() => {
                tracing::warn!(%topic, seconds, "baselines topic not read to its end; retrying");
            }
            Err(FeedError::Codec(error)) => return Err(error.into()),
            Err(FeedError::Kafka(error)) => return Err(error.into()),
            Err(error) => {
                return Err(PipelineError::Codec(CodecError::Registry(
                    schema_registry_converter::error::SRCError::non_retryable_with_cause(
                        error,
                        "baselines",
                    ),
                )))
            }
        }
        metrics.retries.inc();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(options.max_backoff);
    }
}

struct Runner<'a, S: StatefulStage> {
    settings: &'a Settings,
    stage: &'a S,
    options: &'a PipelineOptions,
    codec: &'a RegistryCodec,
    metrics: &'a PipelineMetrics,
    shutdown: &'a Shutdown,
    consumer: &'a LagConsumer,
    producer: &'a crate::pipeline::StageProducer,
    restorer: &'a BaseConsumer<ReadToEnd>,
    changelog: String,
    dead_letter_topic: String,
    tasks: BTreeMap<i32, Slot<S::Task>>,
    /// Next offset of every input partition read since its task was restored.
    positions: BTreeMap<(String, i32), i64>,
    /// What the metrics counted: a batch read again after an abort is not counted again.
    counted: Counted,
    rebalances: u64,
    last_gauges: Instant,
    /// The task threads (`stream.workers`), when there are more than one.
    pool: Option<rayon::ThreadPool>,
    /// Records not tied to an input batch (dead letters of rejected baselines), kept until a
    /// transaction carrying them commits.
    carried: Vec<Outgoing>,
    upstream: Upstream,
}

/// The raw topics upstream of a stage that waits for their progress markers, and which of them
/// hold records (a topic that never had any is not waited for).
struct Upstream {
    topics: Vec<String>,
    with_records: Vec<String>,
    checked: Option<Instant>,
}

/// How often the broker is asked whether an upstream topic without records has some now.
const UPSTREAM_CHECK: Duration = Duration::from_secs(2);

impl<S: StatefulStage> Runner<'_, S> {
    async fn run(&mut self, feed: &mut BaselineFeed) -> Result<(), PipelineError> {
        let mut in_flight = None;
        let result = self.run_batches(feed, &mut in_flight).await;
        // The last batch's transaction completes (or aborts) before the loop stops.
        let settled = self.settle(&mut in_flight).await;
        result?;
        settled.map(|_| ())
    }

    async fn run_batches(
        &mut self,
        feed: &mut BaselineFeed,
        in_flight: &mut Option<StatefulInFlight>,
    ) -> Result<(), PipelineError> {
        let idle_after = Duration::from_millis(self.settings.stream.idle_timeout_ms);
        let waits = self.stage.waits_for_lagging_inputs();
        let mut applied = feed.applied();
        while !self.shutdown.is_triggered() {
            let mut outgoing = Vec::new();
            let (changed, rejected) = feed.poll(self.codec).await;
            if changed {
                for slot in self.tasks.values_mut() {
                    self.stage.baselines_changed(&mut slot.task, feed.set());
                }
            }
            for rejection in rejected {
                self.metrics.baselines_rejected.inc();
                let letter = self.baseline_dead_letter(&rejection).await?;
                self.carried.push(letter);
            }
            self.metrics
                .baselines_applied
                .inc_by(feed.applied().saturating_sub(applied));
            applied = feed.applied();

            let started = Instant::now();
            let batch =
                collect_batch(self.consumer, self.options, self.shutdown, self.metrics).await?;
            // Nothing came: the open transaction is settled now (its metrics, and on failure
            // the reset) rather than when records come again.
            if batch.is_empty() && !self.settle(in_flight).await? {
                continue;
            }
            if self.rebalanced() {
                // The open transaction's fate first: its offsets were taken before the
                // rebalance and commit (or abort) as they are.
                self.settle(in_flight).await?;
                tracing::info!(
                    stage = self.options.stage,
                    dropped = batch.len(),
                    "rebalance: state dropped, partitions rewound to their committed offsets"
                );
                self.reset();
                continue;
            }
            let now = Instant::now();
            // A restore reads the changelog as committed: the open transaction goes first.
            let assigned = self.assigned_partitions()?;
            let restoring = assigned.iter().any(|p| !self.tasks.contains_key(p))
                || batch
                    .iter()
                    .any(|m| !self.tasks.contains_key(&m.partition()));
            if restoring && !self.settle(in_flight).await? {
                continue;
            }
            // Every assigned task is restored at once, not only when a record comes: a task
            // taken over from another instance may hold sessions that only the idle or
            // end-of-input rule will release.
            for partition in assigned {
                if !self.tasks.contains_key(&partition) {
                    let task = self.restore(partition, feed.set()).await?;
                    self.tasks
                        .insert(partition, Slot::new(task, now, self.options.inputs.len()));
                }
            }
            self.metrics
                .tasks
                .set(i64::try_from(self.tasks.len()).unwrap_or(i64::MAX));
            let mut fresh = 0_u64;
            let mut timestamps = Vec::with_capacity(batch.len());
            // Each task's records, in order. The batch's writer schemas are fetched here, so
            // that the tasks decode without awaiting.
            let mut by_task: BTreeMap<i32, Vec<&BorrowedMessage<'_>>> = BTreeMap::new();
            let mut next_offsets: HashMap<(&str, i32), i64> = HashMap::new();
            let mut schemas = BatchSchemas::default();
            let counted_before = self.counted.clone();
            let mut first_reads = 0_u64;
            for message in &batch {
                if self
                    .counted
                    .first_read(message.topic(), message.partition(), message.offset())
                {
                    first_reads += 1;
                }
                let partition = message.partition();
                if !self.tasks.contains_key(&partition) {
                    let task = self.restore(partition, feed.set()).await?;
                    self.tasks
                        .insert(partition, Slot::new(task, now, self.options.inputs.len()));
                }
                fresh += 1;
                if waits {
                    let input = self
                        .options
                        .inputs
                        .iter()
                        .position(|t| t == message.topic());
                    if let (Some(input), Some(slot)) = (input, self.tasks.get_mut(&partition)) {
                        if let Some(at) = slot.input_records.get_mut(input) {
                            *at = now;
                        }
                    }
                }
                timestamps.extend(message.timestamp().to_millis());
                next_offsets.insert((message.topic(), partition), message.offset() + 1);
                self.fetch_schema(message, &mut schemas).await?;
                by_task.entry(partition).or_default().push(message);
            }
            for ((topic, partition), next) in next_offsets {
                self.positions.insert((topic.to_string(), partition), next);
            }
            let lagging = if waits {
                self.lagging_inputs(now, idle_after)?
            } else {
                BTreeMap::new()
            };
            let mut touched: BTreeSet<i32> = by_task.keys().copied().collect();
            let prepared = Instant::now();
            let largest_task = by_task.values().map(Vec::len).max().unwrap_or(0);
            // Tasks without records in the batch learn what lags here; the others as their
            // records are processed.
            let mut caught_up = Vec::new();
            let mut lag_emits = Vec::new();
            for (partition, flags) in &lagging {
                if let (false, Some(slot)) =
                    (touched.contains(partition), self.tasks.get_mut(partition))
                {
                    let emitted = self
                        .stage
                        .inputs_lagging(&mut slot.task, &named(self.stage, flags));
                    if !emitted.is_empty() {
                        caught_up.push(*partition);
                        lag_emits.extend(emitted);
                    }
                }
            }
            // Raw topics with records not heard from yet hold the watermark (a normalizer not
            // started yet, or behind).
            self.refresh_upstream(now);
            for (partition, slot) in &mut self.tasks {
                let emitted = self
                    .stage
                    .awaiting(&mut slot.task, &self.upstream.with_records);
                if !emitted.is_empty() {
                    caught_up.push(*partition);
                    lag_emits.extend(emitted);
                }
            }
            touched.extend(caught_up);
            let produced = self.process_tasks(by_task, &schemas, &lagging, now);
            let processed = Instant::now();
            for produced in produced {
                outgoing.push(match produced {
                    Produced::Encoded(record) => record,
                    Produced::Unencoded(emit) => self.encode(emit).await?,
                    Produced::Rejected(message, rejection) => {
                        let first_read = !counted_before.seen(
                            message.topic(),
                            message.partition(),
                            message.offset(),
                        );
                        self.dead_letter(message, &rejection, first_read).await?
                    }
                });
            }
            for emit in lag_emits {
                outgoing.push(self.encode(emit).await?);
            }
            self.metrics.records_in.inc_by(first_reads);

            // The idle-partition rule.
            let mut idle_emits = Vec::new();
            for (partition, slot) in &mut self.tasks {
                let quiet = now.saturating_duration_since(slot.last_record);
                if quiet >= idle_after {
                    let idle_ms = i64::try_from(quiet.as_millis()).unwrap_or(i64::MAX);
                    let emitted = self.stage.idle(&mut slot.task, idle_ms);
                    if !emitted.is_empty() {
                        touched.insert(*partition);
                        idle_emits.extend(emitted);
                    }
                }
            }
            for emit in idle_emits {
                outgoing.push(self.encode(emit).await?);
            }

            // The end-of-input rule.
            let finishing =
                self.settings.stream.stop_at_end && batch.is_empty() && self.at_end()?;
            if finishing {
                let mut flushed = Vec::new();
                for (partition, slot) in &mut self.tasks {
                    touched.insert(*partition);
                    flushed.extend(self.stage.flush(&mut slot.task));
                }
                for emit in flushed {
                    outgoing.push(self.encode(emit).await?);
                }
            }

            if !outgoing.is_empty() || !touched.is_empty() || !self.carried.is_empty() {
                // This batch's changelog and offsets build on the open transaction's: it must
                // have committed. If it failed, the state was reset and this batch is dropped
                // unproduced; both are read again.
                let settling = Instant::now();
                if !self.settle(in_flight).await? {
                    continue;
                }
                let settled = Instant::now();
                // Dead letters of rejected baselines ride with the next transaction; they
                // come back to `carried` if it fails.
                let carried = std::mem::take(&mut self.carried);
                outgoing.extend(carried.iter().cloned());
                let offsets = self.changelog_and_offsets(&mut outgoing, &touched)?;
                let ms = |from: Instant, to: Instant| (to - from).as_secs_f64() * 1e3;
                tracing::debug!(
                    stage = self.options.stage,
                    records = fresh,
                    tasks = touched.len(),
                    largest_task,
                    collect_ms = ms(started, now),
                    prepare_ms = ms(now, prepared),
                    process_ms = ms(prepared, processed),
                    wait_ms = ms(settling, settled),
                    changelog_ms = ms(settled, Instant::now()),
                    "batch"
                );
                *in_flight = Some(InFlight::spawn(
                    self.consumer,
                    self.producer,
                    outgoing.into_iter().map(Pending::Ready).collect(),
                    offsets,
                    carried,
                    Tally {
                        inputs: fresh,
                        timestamps,
                        started,
                    },
                )?);
            }
            if finishing && !self.settle(in_flight).await? {
                continue;
            }
            self.update_gauges(false);
            if finishing {
                tracing::info!(
                    stage = self.options.stage,
                    "end of input: everything emitted"
                );
                self.update_gauges(true);
                return Ok(());
            }
        }
        Ok(())
    }

    /// Learns which upstream raw topics hold records: asked of the broker until all do, at
    /// most every [`UPSTREAM_CHECK`].
    fn refresh_upstream(&mut self, now: Instant) {
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
            let has_records = blocking(|| {
                let timeout = Duration::from_secs(10);
                let Ok(metadata) = restorer.fetch_metadata(Some(topic), timeout) else {
                    return false;
                };
                let partitions = metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic)
                    .map_or(0, |t| t.partitions().len());
                (0..partitions).any(|p| {
                    i32::try_from(p).is_ok_and(|p| {
                        restorer
                            .fetch_watermarks(topic, p, timeout)
                            .is_ok_and(|(low, high)| high > low)
                    })
                })
            });
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

    /// The partition numbers (tasks) assigned to this instance.
    fn assigned_partitions(&self) -> Result<BTreeSet<i32>, PipelineError> {
        Ok(self
            .consumer
            .assignment()?
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect())
    }

    fn rebalanced(&mut self) -> bool {
        let now = self.consumer.context().rebalances.load(Ordering::SeqCst);
        let changed = now != self.rebalances;
        self.rebalances = now;
        changed
    }

    /// Drops all state and rewinds every assigned partition to its committed offset: what
    /// follows is processed from state that matches the committed offsets.
    fn reset(&mut self) {
        self.tasks.clear();
        self.positions.clear();
        let assigned = self.consumer.assignment().unwrap_or_default();
        if assigned.count() == 0 {
            return;
        }
        let committed = match blocking(|| {
            self.consumer
                .committed_offsets(assigned.clone(), Duration::from_secs(30))
        }) {
            Ok(committed) => committed,
            Err(error) => {
                tracing::warn!(%error, "committed offsets unavailable; rewinding to the start");
                assigned
            }
        };
        for element in committed.elements() {
            let offset = match element.offset() {
                Offset::Offset(offset) => {
                    // The next record to process, until one is read. The consumer's own
                    // position stays unknown while nothing is consumed, so without this a
                    // restarted bounded replay with nothing left to read never saw its end.
                    self.positions
                        .insert((element.topic().to_string(), element.partition()), offset);
                    Offset::Offset(offset)
                }
                _ => Offset::Beginning,
            };
            if let Err(error) = self.consumer.seek(
                element.topic(),
                element.partition(),
                offset,
                Duration::from_secs(10),
            ) {
                tracing::warn!(%error, topic = element.topic(), partition = element.partition(), "rewind failed");
            }
        }
    }

    /// Rebuilds task `partition` from its changelog partition, read to its end.
    async fn restore(
        &mut self,
        partition: i32,
        baselines: &Arc<BaselineSet>,
    ) -> Result<S::Task, PipelineError> {
        let started = Instant::now();
        let mut task = self.stage.new_task(baselines);
        task.journal_changes();
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&self.changelog, partition, Offset::Beginning)?;
        self.restorer.assign(&list)?;
        let timeout = Duration::from_millis(self.settings.stream.restore_timeout_ms);
        let deadline = Instant::now() + timeout;
        let mut latest: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        let mut read = 0_u64;
        loop {
            if Instant::now() > deadline {
                self.restorer.unassign()?;
                return Err(PipelineError::Kafka(KafkaError::Global(
                    rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
                )));
            }
            let polled = blocking(|| {
                self.restorer
                    .poll(Duration::from_millis(200))
                    .map(|r| r.map(|m| m.detach()))
            });
            match polled {
                None => {}
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(error)) => {
                    tracing::warn!(%error, topic = %self.changelog, partition, "changelog read");
                }
                Some(Ok(record)) => {
                    read += 1;
                    let key = record
                        .key()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .unwrap_or_default();
                    latest.insert(key, record.payload().map(<[u8]>::to_vec));
                }
            }
        }
        self.restorer.unassign()?;
        let mut keys = 0_usize;
        for (key, value) in &latest {
            if let Some(value) = value {
                keys += 1;
                if let Err(error) = task.restore(key, value) {
                    // Not expected: the changelog is written by this code. The key's state is
                    // lost, which is logged loudly rather than stopping the stage for good.
                    tracing::error!(%error, topic = %self.changelog, partition, "changelog record not restored");
                }
            }
        }
        task.restored();
        self.metrics.restores.inc();
        self.metrics.restored_records.inc_by(read);
        tracing::info!(
            stage = self.options.stage,
            partition,
            records = read,
            keys,
            millis = started.elapsed().as_millis() as u64,
            "task state restored from the changelog"
        );
        Ok(task)
    }

    /// Processes each task's records of a batch, tasks side by side on the stage's task
    /// threads (when it has more than one), a task's records in order on one thread. What the
    /// tasks produced comes back task by task, in partition order.
    fn process_tasks<'m, 'b>(
        &mut self,
        mut by_task: BTreeMap<i32, Vec<&'m BorrowedMessage<'b>>>,
        schemas: &BatchSchemas,
        lagging: &BTreeMap<i32, Vec<bool>>,
        now: Instant,
    ) -> Vec<Produced<'m, 'b, S::Output>> {
        let work = TaskWork {
            stage: self.stage,
            codec: self.codec,
            metrics: self.metrics,
            inputs: &self.options.inputs,
            schemas,
            now,
        };
        let jobs: Vec<_> = self
            .tasks
            .iter_mut()
            .filter_map(|(partition, slot)| {
                let messages = by_task.remove(partition)?;
                Some((slot, (messages, lagging.get(partition).map(Vec::as_slice))))
            })
            .collect();
        let pool = match &self.pool {
            Some(pool) if jobs.len() > 1 => pool,
            _ => {
                return jobs
                    .into_iter()
                    .flat_map(|(slot, (messages, lagging))| work.run(slot, messages, lagging))
                    .collect()
            }
        };
        self.metrics.parallel_batches.inc();
        let mut done: Vec<Vec<Produced<'m, 'b, S::Output>>> = Vec::new();
        done.resize_with(jobs.len(), Vec::new);
        let work = &work;
        // A panic in a stage propagates from the scope, as it would on the loop's thread.
        pool.scope(|scope| {
            for ((slot, (messages, lagging)), produced) in jobs.into_iter().zip(done.iter_mut()) {
                scope.spawn(move |_| *produced = work.run(slot, messages, lagging));
            }
        });
        done.into_iter().flatten().collect()
    }

    /// Fetches the writer schema of `message` unless the batch has seen its id; a schema that
    /// cannot be fetched is kept with why, for the dead letters of its records. Transient
    /// registry failures are retried; only shutdown interrupts them.
    async fn fetch_schema(
        &self,
        message: &BorrowedMessage<'_>,
        schemas: &mut BatchSchemas,
    ) -> Result<(), PipelineError> {
        // A record without a value or the wire format's header is dead-lettered when decoded.
        let Some(Ok(id)) = message.payload().map(crate::registry::schema_id) else {
            return Ok(());
        };
        if schemas.known.contains(&id) || schemas.failed.contains_key(&id) {
            return Ok(());
        }
        if !self.codec.knows(id) {
            let fetched = retrying(
                self.options,
                self.metrics,
                self.shutdown,
                "fetch schema",
                || async {
                    match self.codec.fetch_writer(id).await {
                        Ok(()) => Ok(Ok(())),
                        Err(error) if error.is_transient() => Err(error),
                        Err(error) => Ok(Err(error)),
                    }
                },
            )
            .await?;
            if let Err(error) = fetched {
                schemas.failed.insert(id, error.to_string());
                return Ok(());
            }
        }
        schemas.known.push(id);
        Ok(())
    }

    async fn encode(&self, emit: Emit<S::Output>) -> Result<Outgoing, PipelineError> {
        let record = match emit {
            Emit::Avro {
                topic,
                key,
                contract,
                value,
            } => {
                let bytes = retrying(self.options, self.metrics, self.shutdown, "encode", || {
                    self.codec.encode_value(&topic, contract, &value)
                })
                .await?;
                keyed(topic, key, bytes)
            }
            Emit::Bytes { topic, key, value } => keyed(topic, key, value),
        };
        self.metrics.records_out.inc();
        Ok(record)
    }

    async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        rejection: &Rejection,
        first_read: bool,
    ) -> Result<Outgoing, PipelineError> {
        if first_read {
            let mut text = rejection.message.clone();
            cut_for_log(&mut text);
            tracing::warn!(
                topic = message.topic(),
                partition = message.partition(),
                offset = message.offset(),
                reason = ?rejection.reason,
                message = %text,
                "record dead-lettered"
            );
            self.metrics.dead_letter(rejection.reason);
        }
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
        dead_letter(
            self.codec,
            &self.dead_letter_topic,
            &raw,
            rejection,
            self.options,
            self.metrics,
            self.shutdown,
            wall_clock_millis(),
        )
        .await
    }

    async fn baseline_dead_letter(&self, rejected: &Rejected) -> Result<Outgoing, PipelineError> {
        self.metrics.dead_letter(rejected.reason);
        let rejection = Rejection::new(rejected.reason, rejected.message.clone());
        let headers = owned_headers(&rejected.record);
        let record = &rejected.record;
        let raw = RawRecord {
            topic: record.topic(),
            partition: record.partition(),
            offset: record.offset(),
            key: record.key(),
            value: record.payload(),
            headers: &headers,
            timestamp: record.timestamp().to_millis(),
        };
        dead_letter(
            self.codec,
            &self.dead_letter_topic,
            &raw,
            &rejection,
            self.options,
            self.metrics,
            self.shutdown,
            wall_clock_millis(),
        )
        .await
    }

    /// For every task, which inputs have records not read from the broker yet: the consumer's
    /// position (past transaction markers) against the partition's end in the consumer's last
    /// statistics (its last stable offset; every `statistics.interval.ms`, no broker round
    /// trip). An end not known yet counts as lagging. An input that has brought the task
    /// nothing for `stream.idle_timeout_ms` is not waited for (a producer's transaction left
    /// open, a partition the consumer is not fetching).
    fn lagging_inputs(
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
    fn position(
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
    fn at_end(&self) -> Result<bool, PipelineError> {
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
        // consumer's own connection each query waited behind its pending long-poll fetch
        // (up to fetch.wait.max.ms, 350-470 ms per check). The restorer reads read_committed
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
    fn changelog_and_offsets(
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

    /// Waits for the open transaction, if any. None, or committed: `true`. Failed (not
    /// fatally): aborted, the state dropped and every partition rewound (see [`Self::reset`]),
    /// the baseline dead letters it carried kept for the next one, and `false`.
    async fn settle(
        &mut self,
        in_flight: &mut Option<StatefulInFlight>,
    ) -> Result<bool, PipelineError> {
        let Some(open) = in_flight.take() else {
            return Ok(true);
        };
        match open
            .outcome(self.producer, self.options, self.metrics)
            .await?
        {
            Ok(_) => Ok(true),
            Err(mut carried) => {
                tracing::warn!(
                    stage = self.options.stage,
                    "state dropped, partitions rewound to their committed offsets"
                );
                carried.append(&mut self.carried);
                self.carried = carried;
                self.reset();
                Ok(false)
            }
        }
    }

    /// State gauges, at most every 5 s (measuring walks the state).
    fn update_gauges(&mut self, now: bool) {
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

/// Flags in [`StatefulStage::inputs`] order, with their inputs' names.
fn named<S: StatefulStage>(stage: &S, flags: &[bool]) -> Vec<(S::InputName, bool)> {
    stage
        .inputs()
        .iter()
        .zip(flags)
        .map(|((name, _), flag)| (*name, *flag))
        .collect()
}

/// The task threads of a stage: `None` for one (the loop's own thread does the work), or when
/// the threads cannot be started (logged; the loop's thread does the work).
fn task_pool(stage: &str, threads: usize) -> Option<rayon::ThreadPool> {
    if threads <= 1 {
        return None;
    }
    let stage = stage.to_string();
    match rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(move |i| format!("{stage}-task-{i}"))
        .build()
    {
        Ok(pool) => Some(pool),
        Err(error) => {
            tracing::warn!(%error, threads, "task threads not started; tasks run one after another");
            None
        }
    }
}

/// An output record keyed by its device id, to the partition its key hashes to.
fn keyed(topic: String, key: String, value: Vec<u8>) -> Outgoing {
    Outgoing {
        topic,
        partition: None,
        key: Some(key.into_bytes()),
        value: Some(value),
        headers: vec![],
    }
}

/// The writer schemas a batch's records name: fetched (or known) ids, and why the others could
/// not be fetched.
#[derive(Default)]
struct BatchSchemas {
    known: Vec<u32>,
    failed: HashMap<u32, String>,
}

/// What a task's records of a batch came to, in order.
enum Produced<'m, 'b, T> {
    /// An output or record encoded on the task's thread.
    Encoded(Outgoing),
    /// An output whose schema is not registered yet: the loop registers it as it encodes it.
    Unencoded(Emit<T>),
    /// A record that is dead-lettered (by the loop: a dead letter may need its schema
    /// registered).
    Rejected(&'m BorrowedMessage<'b>, Rejection),
}

/// What the task threads of a batch share, read only.
struct TaskWork<'a, S: StatefulStage> {
    stage: &'a S,
    codec: &'a RegistryCodec,
    metrics: &'a PipelineMetrics,
    inputs: &'a [String],
    schemas: &'a BatchSchemas,
    now: Instant,
}

impl<S: StatefulStage> TaskWork<'_, S> {
    /// Decodes, processes and encodes one task's records of a batch, in order. All are decoded
    /// first and processed after, so that each group of [`WARM_GROUP`] records is warmed (see
    /// [`StatefulStage::warm`]) while the group ahead of it is processed.
    ///
    /// `lagging` (for a stage that waits for lagging inputs): which inputs have records not
    /// read from the broker after this batch. An input also lags while its records in the
    /// batch are not all processed; the task is told as each input's last one is.
    fn run<'m, 'b>(
        &self,
        slot: &mut Slot<S::Task>,
        messages: Vec<&'m BorrowedMessage<'b>>,
        lagging: Option<&[bool]>,
    ) -> Vec<Produced<'m, 'b, S::Output>> {
        let mut produced = Vec::with_capacity(messages.len());
        let input_of =
            |message: &BorrowedMessage<'_>| self.inputs.iter().position(|t| t == message.topic());
        // Records left in the batch per input: an input lags while it has some, or more unread.
        let mut left = vec![0_usize; self.inputs.len()];
        let lags = |left: &[usize], unread: &[bool]| -> Vec<bool> {
            unread.iter().zip(left).map(|(u, l)| *u || *l > 0).collect()
        };
        if let Some(unread) = lagging {
            for message in &messages {
                if let Some(count) = input_of(message).and_then(|i| left.get_mut(i)) {
                    *count += 1;
                }
            }
            for emit in self
                .stage
                .inputs_lagging(&mut slot.task, &named(self.stage, &lags(&left, unread)))
            {
                produced.push(self.encode(emit));
            }
        }
        let mut decoded: VecDeque<_> = messages
            .into_iter()
            .map(|message| (message, self.item(message)))
            .collect();
        while !decoded.is_empty() {
            let group = WARM_GROUP.min(decoded.len());
            let warmed = decoded
                .range(group..)
                .take(WARM_GROUP)
                .filter_map(|(_, item)| match item {
                    Item::Record(Ok(input)) => Some(self.stage.warm(&slot.task, input)),
                    _ => None,
                })
                .fold(0, |acc, touched| acc ^ touched);
            std::hint::black_box(warmed);
            for (message, item) in decoded.drain(..group) {
                match item {
                    Item::Record(Ok(input)) => {
                        slot.last_record = self.now;
                        for emit in self.stage.process(&mut slot.task, input) {
                            produced.push(self.encode(emit));
                        }
                    }
                    Item::Progress(input, marker) => {
                        slot.last_record = self.now;
                        for emit in self.stage.progress(&mut slot.task, input, &marker) {
                            produced.push(self.encode(emit));
                        }
                    }
                    Item::Record(Err(rejection)) => {
                        produced.push(Produced::Rejected(message, rejection));
                    }
                }
                // After an input's last record in the batch it lags only if more is unread.
                let (Some(unread), Some(i)) = (lagging, input_of(message)) else {
                    continue;
                };
                if let Some(count) = left.get_mut(i) {
                    *count = count.saturating_sub(1);
                    if *count == 0 && unread.get(i) == Some(&false) {
                        for emit in self.stage.inputs_lagging(
                            &mut slot.task,
                            &named(self.stage, &lags(&left, unread)),
                        ) {
                            produced.push(self.encode(emit));
                        }
                    }
                }
            }
        }
        produced
    }

    /// A progress marker (a record with the marker header), or a record to decode.
    fn item(&self, message: &BorrowedMessage<'_>) -> Item<S::Input, S::InputName> {
        let marker = message.headers().and_then(|headers| {
            (0..headers.count())
                .map(|i| headers.get(i))
                .find(|h| h.key == PROGRESS_HEADER)
                .map(|h| h.value.unwrap_or_default())
        });
        let Some(value) = marker else {
            return Item::Record(self.decode(message));
        };
        let input = self
            .inputs
            .iter()
            .position(|t| t == message.topic())
            .and_then(|i| self.stage.inputs().get(i))
            .map(|(name, _)| *name);
        match (input, Marker::from_header(value)) {
            (Some(input), Ok(marker)) => Item::Progress(input, marker),
            (_, Err(why)) => Item::Record(Err(Rejection::new(
                DeadLetterReason::Unparseable,
                why.to_string(),
            ))),
            (None, Ok(_)) => Item::Record(self.decode(message)),
        }
    }

    /// The typed input, or why the record is dead-lettered.
    fn decode(&self, message: &BorrowedMessage<'_>) -> Result<S::Input, Rejection> {
        let input = self
            .inputs
            .iter()
            .position(|t| t == message.topic())
            .and_then(|i| self.stage.inputs().get(i));
        let Some((input, _)) = input else {
            return Err(Rejection::new(
                DeadLetterReason::Other,
                format!("topic {} is not an input of this stage", message.topic()),
            ));
        };
        let Some(payload) = message.payload() else {
            return Err(Rejection::new(
                DeadLetterReason::Unparseable,
                "the record has no value",
            ));
        };
        let id = crate::registry::schema_id(payload).map_err(|error| {
            Rejection::new(
                DeadLetterReason::SchemaMismatch,
                format!("not a registry-encoded Avro record: {error}"),
            )
        })?;
        if let Some(error) = self.schemas.failed.get(&id) {
            return Err(Rejection::new(
                DeadLetterReason::SchemaMismatch,
                format!("writer schema {id}: {error}"),
            ));
        }
        self.stage
            .decode(*input, payload, self.codec)
            .map_err(|why| Rejection::new(DeadLetterReason::SchemaMismatch, why.to_string()))
    }

    /// `emit` encoded here when its schema is registered; else handed back for the loop to
    /// register and encode.
    fn encode<'m, 'b>(&self, emit: Emit<S::Output>) -> Produced<'m, 'b, S::Output> {
        let record = match emit {
            Emit::Bytes { topic, key, value } => keyed(topic, key, value),
            Emit::Avro {
                topic,
                key,
                contract,
                value,
            } => match self.codec.encode_registered(&topic, contract, &value) {
                Some(Ok(bytes)) => keyed(topic, key, bytes),
                // Not registered, or the value does not fit: the loop's encoding registers
                // it, or reports why it does not fit.
                _ => {
                    return Produced::Unencoded(Emit::Avro {
                        topic,
                        key,
                        contract,
                        value,
                    })
                }
            },
        };
        self.metrics.records_out.inc();
        Produced::Encoded(record)
    }
}

/// A record of a task's batch: a record of an input, decoded (or why not), or a progress marker
/// on input `.0`.
enum Item<I, N> {
    Record(Result<I, Rejection>),
    Progress(N, Marker),
}

/// Wall-clock now in epoch milliseconds (for stages' idle rules).
pub fn now_millis() -> EpochMillis {
    wall_clock_millis()
}
