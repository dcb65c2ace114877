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
//! # One batch, in phases
//!
//! Each turn of the loop (`run_batches`), as Kafka Streams' `StreamThread.runOnce`:
//! `follow_baselines` (the baselines topic); collect a batch
//! (`collect_batch`), settling the open transaction on a rebalance; restore the tasks assigned
//! and not yet built; the lagging inputs and the upstream topics awaited; process each task's
//! records on the task threads; punctuate: the `idle_rule` and, at the end
//! of a bounded input, `flush_all`; and
//! `begin_transaction`, the outputs, changelog and offsets of the
//! batch in one transaction left in flight while the next batch is collected. The loop's
//! decisions are pure functions in [`crate::runtime::decisions`].
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use offport_core::model::EpochMillis;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::Producer;
use rdkafka::Offset;

use crate::baselines::{BaselineFeed, FeedError};
use crate::metrics::PipelineMetrics;
use crate::registry::{CodecError, RegistryCodec};
use crate::runtime::{
    blocking, collect_batch, wall_clock_millis, Counted, InFlight, LagConsumer, Outgoing, Pending,
    PipelineError, PipelineOptions, ReadToEnd, Tally,
};
use crate::settings::Settings;
use crate::shutdown::Shutdown;
use crate::topics::TopicRole;

mod io;
mod positions;
mod restore;
mod stage;
mod tasks;

pub use stage::{DecodeError, Emit, StatefulStage};
use tasks::*;

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
    if !crate::runtime::connect(settings, &mut options, &shutdown).await? {
        return Ok(());
    }
    let mut feed = open_feed(settings, &codec, &options, &metrics, &shutdown).await?;
    let consumer: LagConsumer =
        crate::runtime::stage_consumer(settings, &options, "range", &STAGE_FETCH, &metrics)?;
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
        crate::runtime::transactional_producer(settings, &options.transactional_id, &metrics)?;
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
            unanswered: Vec::new(),
            checked: None,
        },
    };
    let result = runner.run(&mut feed).await;
    crate::runtime::leave_group(options.stage, &consumer, result)
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
    producer: &'a crate::runtime::StageProducer,
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
    /// Topics the broker could not say anything about at the last check (unreachable, no
    /// leader): waited for as if they held records until a check answers.
    unanswered: Vec<String>,
    checked: Option<Instant>,
}

impl Upstream {
    /// The topics a task waits for until it has their markers: those with records, and those
    /// the broker has not answered for.
    fn awaited(&self) -> Vec<String> {
        crate::runtime::decisions::awaited_upstream(&self.with_records, &self.unanswered)
    }
}

/// When a batch's phases ended, for its debug line.
struct BatchTiming {
    started: Instant,
    collected: Instant,
    prepared: Instant,
    processed: Instant,
    largest_task: usize,
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
            applied = self.follow_baselines(feed, applied).await?;

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
            let awaited = self.upstream.awaited();
            for (partition, slot) in &mut self.tasks {
                let emitted = self.stage.awaiting(&mut slot.task, &awaited);
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

            for emit in self.idle_rule(now, idle_after, &mut touched) {
                outgoing.push(self.encode(emit).await?);
            }
            let finishing =
                self.settings.stream.stop_at_end && batch.is_empty() && self.at_end()?;
            if finishing {
                for emit in self.flush_all(&mut touched) {
                    outgoing.push(self.encode(emit).await?);
                }
            }

            let timing = BatchTiming {
                started,
                collected: now,
                prepared,
                processed,
                largest_task,
            };
            if !self
                .begin_transaction(in_flight, outgoing, &touched, fresh, timestamps, timing)
                .await?
            {
                continue;
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

    /// Phase: the batch's transaction. Its outputs, the touched tasks' changelog and the
    /// input offsets go out in one transaction, left in flight while the next batch is
    /// collected. It builds on the open transaction's, which must have committed: if that one
    /// failed, the state was reset and this batch is dropped unproduced (both are read again),
    /// and this returns false.
    async fn begin_transaction(
        &mut self,
        in_flight: &mut Option<StatefulInFlight>,
        mut outgoing: Vec<Outgoing>,
        touched: &BTreeSet<i32>,
        fresh: u64,
        timestamps: Vec<i64>,
        timing: BatchTiming,
    ) -> Result<bool, PipelineError> {
        if outgoing.is_empty() && touched.is_empty() && self.carried.is_empty() {
            return Ok(true);
        }
        let settling = Instant::now();
        if !self.settle(in_flight).await? {
            return Ok(false);
        }
        let settled = Instant::now();
        // Dead letters of rejected baselines ride with the next transaction; they come back to
        // `carried` if it fails.
        let carried = std::mem::take(&mut self.carried);
        outgoing.extend(carried.iter().cloned());
        let offsets = self.changelog_and_offsets(&mut outgoing, touched)?;
        let ms = |from: Instant, to: Instant| (to - from).as_secs_f64() * 1e3;
        tracing::debug!(
            stage = self.options.stage,
            records = fresh,
            tasks = touched.len(),
            largest_task = timing.largest_task,
            collect_ms = ms(timing.started, timing.collected),
            prepare_ms = ms(timing.collected, timing.prepared),
            process_ms = ms(timing.prepared, timing.processed),
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
                started: timing.started,
            },
        )?);
        Ok(true)
    }

    /// Phase: the baselines topic. Versions read since the last batch are applied to every
    /// task; rejected ones become dead letters that ride with the next transaction. Returns
    /// the feed's applied count for the next call.
    async fn follow_baselines(
        &mut self,
        feed: &mut BaselineFeed,
        applied: u64,
    ) -> Result<u64, PipelineError> {
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
        Ok(feed.applied())
    }

    /// Phase: the idle-partition rule. A task without a record for `idle_after` of wall time
    /// is told how long it has been quiet; what that completes is returned, and the task is
    /// marked `touched` (its changelog and offsets go with the next transaction).
    fn idle_rule(
        &mut self,
        now: Instant,
        idle_after: Duration,
        touched: &mut BTreeSet<i32>,
    ) -> Vec<Emit<S::Output>> {
        let mut emits = Vec::new();
        for (partition, slot) in &mut self.tasks {
            let quiet = now.saturating_duration_since(slot.last_record);
            if quiet >= idle_after {
                let idle_ms = i64::try_from(quiet.as_millis()).unwrap_or(i64::MAX);
                let emitted = self.stage.idle(&mut slot.task, idle_ms);
                if !emitted.is_empty() {
                    touched.insert(*partition);
                    emits.extend(emitted);
                }
            }
        }
        emits
    }

    /// Phase: the end-of-input rule. Every task emits what it still holds.
    fn flush_all(&mut self, touched: &mut BTreeSet<i32>) -> Vec<Emit<S::Output>> {
        let mut flushed = Vec::new();
        for (partition, slot) in &mut self.tasks {
            touched.insert(*partition);
            flushed.extend(self.stage.flush(&mut slot.task));
        }
        flushed
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
}

/// Wall-clock now in epoch milliseconds (for stages' idle rules).
pub fn now_millis() -> EpochMillis {
    wall_clock_millis()
}
