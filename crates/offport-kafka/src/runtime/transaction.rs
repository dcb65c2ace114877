//! One batch's transaction: its records produced and its input offsets committed together
//! (KIP-447), on a blocking thread while the loop reads on; aborted on failure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use offport_core::normalize::Normalized;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::TopicPartitionList;

use crate::metrics::PipelineMetrics;
use crate::registry::{CodecError, Registered};

use super::*;

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

/// Why a transaction's thread gave up.
pub(crate) enum TxnFailure {
    /// The broker or client refused: abort, rewind, read again (unless fatal).
    Kafka(KafkaError),
    /// A record did not fit its own schema (a build defect): the stage stops.
    Encode(CodecError),
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
            let encoding = Instant::now();
            // Counted only for the debug line: the batch is not walked twice otherwise.
            let encodes = if tracing::enabled!(tracing::Level::DEBUG) {
                outgoing
                    .iter()
                    .filter(|p| matches!(p, Pending::Encode { .. }))
                    .count()
            } else {
                0
            };
            let outgoing = outgoing
                .into_iter()
                .map(Pending::into_outgoing)
                .collect::<Result<Vec<_>, _>>()
                .map_err(TxnFailure::Encode)?;
            if encodes > 0 {
                tracing::debug!(
                    records = encodes,
                    encode_ms = encoding.elapsed().as_secs_f64() * 1e3,
                    "encoded on the transaction's thread"
                );
            }
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
pub(crate) fn transact_blocking(
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
    // left to drain (the futures resolve a moment before their reports are freed, and a report
    // still counted makes the flush wait its 100 ms).
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
pub(crate) fn is_retriable(error: &KafkaError) -> bool {
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
pub(crate) fn keyed(topic: String, record: &Normalized, value: Vec<u8>) -> Outgoing {
    Outgoing {
        key: Some(record.device_id().as_bytes().to_vec()),
        topic,
        partition: None,
        value: Some(value),
        headers: Vec::new(),
    }
}
