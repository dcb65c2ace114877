//! offport-replay: backtesting against Kafka. A simulated fleet produced to the raw topics, and a
//! replay of the raw or normalized topics for a time range through the same core as the
//! services, with its own consumer group and its own output topic, so production is untouched.
//! `offportctl`, the developer tasks and the tests use it; the services do not link it (nor,
//! through it, the fleet simulator and the report).
//!
//! The replay assigns every partition of the source topics from the first offset at or after
//! `from` (`offsets_for_times`) up to the first at or after `to` (or the end), normalizes (raw)
//! or decodes (normalized) each record, and merges the partitions by report time (a session's
//! end, an event's time; ties by stream and device, then by partition order) before the join: the order an in-process replay of the
//! same records in event-time order sees, so both give the same findings. It ends at the end of
//! the range, flushes the join and writes every finding record to the output topic (Avro through
//! the registry, keyed by device) in one transaction-free idempotent batch.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use offport_backtest::replay::{Replay, ReplayOptions, ReplayOutcome};
use offport_backtest::sim::{RawLine, Stream};
use offport_core::model::{DeviceContext, DeviceEvent, EpochMillis, NetworkSession};
use offport_core::normalize::Normalized;
use offport_core::schema::Contract;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use offport_kafka::registry::RegistryCodec;
use offport_kafka::settings::Settings;
use offport_kafka::topics::{ensure_topics, TopicRole};

/// Errors of a Kafka backtest.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The broker refused or failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The registry failed.
    #[error("registry: {0}")]
    Registry(#[from] offport_kafka::registry::CodecError),
    /// Topic creation failed.
    #[error("topics: {0}")]
    Topics(#[from] offport_kafka::topics::TopicError),
    /// Something else, described.
    #[error("{0}")]
    Other(String),
}

/// Which topics a replay reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplaySource {
    /// The raw proxy, EDR and MDM topics, normalized on the way.
    Raw,
    /// The normalized sessions, device-events and device-contexts topics.
    Normalized,
}

/// The range and outputs of a Kafka replay.
#[derive(Debug, Clone)]
pub struct KafkaReplay {
    /// Which topics.
    pub source: ReplaySource,
    /// First record time (Kafka timestamp) to read; `None` from the beginning.
    pub from: Option<EpochMillis>,
    /// Records at or after this time are not read; `None` to the current end.
    pub to: Option<EpochMillis>,
    /// Topic the findings go to; `None` writes none.
    pub output_topic: Option<String>,
}

fn role_of(stream: Stream, source: ReplaySource) -> TopicRole {
    match (source, stream) {
        (ReplaySource::Raw, Stream::Proxy) => TopicRole::RawProxy,
        (ReplaySource::Raw, Stream::Edr) => TopicRole::RawEdr,
        (ReplaySource::Raw, Stream::Mdm) => TopicRole::RawMdm,
        (ReplaySource::Normalized, Stream::Proxy) => TopicRole::Sessions,
        (ReplaySource::Normalized, Stream::Edr) => TopicRole::DeviceEvents,
        (ReplaySource::Normalized, Stream::Mdm) => TopicRole::DeviceContexts,
    }
}

/// Hands one raw line to `producer` for `topic`, keyed by its device id with its report time
/// as the Kafka timestamp, waiting while the producer's queue is full; returns its delivery.
pub async fn enqueue_raw(
    producer: &FutureProducer,
    topic: &str,
    line: &RawLine,
) -> Result<rdkafka::producer::DeliveryFuture, rdkafka::error::KafkaError> {
    let record = FutureRecord::to(topic)
        .key(line.device_id.as_bytes())
        .payload(line.value.as_bytes())
        .timestamp(line.time);
    enqueue(producer, record).await
}

/// Hands `record` to `producer`, waiting while librdkafka's queue is full (the producer's
/// background thread drains it); returns its delivery.
pub async fn enqueue<K, P>(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, K, P>,
) -> Result<rdkafka::producer::DeliveryFuture, rdkafka::error::KafkaError>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                back,
            )) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err((error, _)) => return Err(error),
        }
    }
}

/// Produces raw records to the raw topics, keyed by device id (murmur2, as Java clients
/// partition) with the record's report time as the Kafka timestamp, so a replay can select a
/// time range. `progress` is told how many are delivered.
pub async fn produce_raw(
    settings: &Settings,
    records: &[RawLine],
    progress: &mut dyn FnMut(u64),
) -> Result<(), BacktestError> {
    let producer: FutureProducer = settings
        .kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .create()?;
    let names: BTreeMap<Stream, String> = Stream::ALL
        .iter()
        .map(|s| {
            (
                *s,
                role_of(*s, ReplaySource::Raw).spec(&settings.topics).name,
            )
        })
        .collect();
    let mut delivered = 0u64;
    for chunk in records.chunks(20_000) {
        let mut pending = Vec::with_capacity(chunk.len());
        for record in chunk {
            let topic = names.get(&record.stream).map(String::as_str).unwrap_or("");
            pending.push(enqueue_raw(&producer, topic, record).await?);
        }
        for delivery in pending {
            match delivery.await {
                Ok(Ok(_)) => delivered += 1,
                Ok(Err((error, _))) => return Err(error.into()),
                Err(_) => return Err(BacktestError::Other("delivery cancelled".into())),
            }
        }
        progress(delivered);
    }
    Ok(())
}

/// One record waiting in the merge.
struct Pending {
    time: EpochMillis,
    stream: Stream,
    device: String,
    record: Normalized,
}

struct Lane {
    stream: Stream,
    topic: String,
    partition: i32,
    end: i64,
    position: i64,
    queue: VecDeque<Pending>,
    paused: bool,
}

impl Lane {
    fn done(&self) -> bool {
        self.position >= self.end
    }
}

const LANE_HIGH: usize = 20_000;

/// When a source reports a record: a session's end (start plus duration), an event's or
/// context's time. The merge orders by it, as the simulator and `offportctl replay` order
/// files.
fn record_time(record: &Normalized) -> EpochMillis {
    match record {
        Normalized::Session(s) => s.start_time.saturating_add(s.duration_ms.unwrap_or(0)),
        Normalized::Event(e) => e.event_time,
        Normalized::Context(c) => c.event_time,
    }
}

/// Replays the source topics for the range through the core (see the module docs).
/// `progress(done, total)` is told about records read.
pub async fn replay_topics(
    settings: &Settings,
    codec: &RegistryCodec,
    options: ReplayOptions,
    range: &KafkaReplay,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ReplayOutcome, BacktestError> {
    let group = format!("offport-replay-{}", uuid_like());
    let consumer: BaseConsumer = settings
        .kafka
        .client_config()
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let timeout = Duration::from_secs(30);
    let mut lanes: Vec<Lane> = Vec::new();
    let mut assignment = TopicPartitionList::new();
    // From the raw topics, the device inventory is read whole beside the MDM reports: its
    // entries hold from their effective time, whenever they were published.
    let mut sources: Vec<(Stream, String, bool)> = Stream::ALL
        .iter()
        .map(|&stream| {
            let topic = role_of(stream, range.source).spec(&settings.topics).name;
            (stream, topic, true)
        })
        .collect();
    if matches!(range.source, ReplaySource::Raw) {
        sources.push((
            Stream::Mdm,
            TopicRole::Inventory.spec(&settings.topics).name,
            false,
        ));
    }
    for (stream, topic, required) in sources {
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        let partitions = metadata
            .topics()
            .first()
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        if partitions == 0 && !required {
            continue;
        }
        if partitions == 0 {
            return Err(BacktestError::Other(format!(
                "topic {topic} does not exist or has no partitions"
            )));
        }
        for partition in 0..partitions as i32 {
            let (low, high) = consumer.fetch_watermarks(&topic, partition, timeout)?;
            let at = |time: Option<EpochMillis>, default: i64| -> Result<i64, BacktestError> {
                let Some(time) = time else {
                    return Ok(default);
                };
                let mut query = TopicPartitionList::new();
                query.add_partition_offset(&topic, partition, Offset::Offset(time))?;
                let found = consumer.offsets_for_times(query, timeout)?;
                Ok(found
                    .elements()
                    .first()
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    })
                    .unwrap_or(high))
            };
            let (start, end) = if required {
                (at(range.from, low)?.max(low), at(range.to, high)?.min(high))
            } else {
                (low, high)
            };
            assignment.add_partition_offset(&topic, partition, Offset::Offset(start))?;
            lanes.push(Lane {
                stream,
                topic: topic.clone(),
                partition,
                end,
                position: start,
                queue: VecDeque::new(),
                paused: false,
            });
        }
    }
    let total: u64 = lanes
        .iter()
        .map(|l| u64::try_from(l.end - l.position).unwrap_or(0))
        .sum();
    consumer.assign(&assignment)?;
    let mut replay = Replay::new(options);
    let mut read = 0u64;
    let mut last_report = 0u64;
    let index: BTreeMap<(String, i32), usize> = lanes
        .iter()
        .enumerate()
        .map(|(i, l)| ((l.topic.clone(), l.partition), i))
        .collect();
    loop {
        // Feed while every unfinished lane has something: the smallest head is then the
        // smallest record still to come.
        loop {
            let ready = lanes.iter().all(|l| l.done() || !l.queue.is_empty());
            if !ready {
                break;
            }
            let next = lanes
                .iter()
                .enumerate()
                .filter_map(|(i, l)| l.queue.front().map(|p| (i, p)))
                .min_by(|(ia, a), (ib, b)| {
                    (a.time, a.stream, &a.device, ia).cmp(&(b.time, b.stream, &b.device, ib))
                })
                .map(|(i, _)| i);
            let Some(i) = next else { break };
            if let Some(pending) = lanes.get_mut(i).and_then(|l| l.queue.pop_front()) {
                replay.feed(pending.record);
            }
        }
        if lanes.iter().all(|l| l.done() && l.queue.is_empty()) {
            break;
        }
        // Back-pressure: a lane far ahead waits for the others.
        for lane in &mut lanes {
            let want_pause = lane.queue.len() >= LANE_HIGH && !lane.done();
            if want_pause != lane.paused {
                let mut list = TopicPartitionList::new();
                list.add_partition(&lane.topic, lane.partition);
                if want_pause {
                    consumer.pause(&list)?;
                } else {
                    consumer.resume(&list)?;
                }
                lane.paused = want_pause;
            }
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            // Nothing came: the consumer's position may have moved past records a
            // read_committed reader never sees (transaction markers, aborted records).
            let positions = consumer.position()?;
            for element in positions.elements() {
                if let (Offset::Offset(next), Some(lane)) = (
                    element.offset(),
                    index
                        .get(&(element.topic().to_string(), element.partition()))
                        .and_then(|&i| lanes.get_mut(i)),
                ) {
                    lane.position = lane.position.max(next);
                }
            }
            continue;
        };
        let message = message?;
        let Some(&i) = index.get(&(message.topic().to_string(), message.partition())) else {
            continue;
        };
        let Some(lane) = lanes.get_mut(i) else {
            continue;
        };
        if message.offset() < lane.position || lane.done() {
            continue;
        }
        lane.position = message.offset() + 1;
        if message.offset() >= lane.end || offport_kafka::progress::is_marker(&message) {
            continue;
        }
        read += 1;
        let stream = lane.stream;
        let key = message.key().and_then(|k| std::str::from_utf8(k).ok());
        let normalized: Vec<Normalized> = match range.source {
            ReplaySource::Raw => {
                // The services read the headers too: a PCAPdroid export names its device there.
                let headers = offport_kafka::runtime::owned_headers(&message);
                let record = offport_kafka::runtime::raw_record(&message, &headers);
                if message.payload().is_none() {
                    replay.count(stream);
                    replay.reject(
                        stream,
                        message.offset(),
                        offport_core::model::DeadLetterReason::Unparseable,
                        "tombstone".into(),
                    );
                    vec![]
                } else {
                    replay.normalize(stream, &record)
                }
            }
            ReplaySource::Normalized => {
                replay.count(stream);
                let payload = message.payload().unwrap_or_default();
                let decoded = match stream {
                    Stream::Proxy => codec
                        .decode::<NetworkSession>(payload)
                        .await
                        .map(Normalized::Session),
                    Stream::Edr => codec
                        .decode::<DeviceEvent>(payload)
                        .await
                        .map(Normalized::Event),
                    Stream::Mdm => codec
                        .decode::<DeviceContext>(payload)
                        .await
                        .map(Normalized::Context),
                };
                match decoded {
                    Ok(record) => vec![record],
                    Err(error) => {
                        replay.reject(
                            stream,
                            message.offset(),
                            offport_core::model::DeadLetterReason::SchemaMismatch,
                            error.to_string(),
                        );
                        vec![]
                    }
                }
            }
        };
        if let Some(lane) = lanes.get_mut(i) {
            for record in normalized {
                lane.queue.push_back(Pending {
                    time: record_time(&record),
                    stream,
                    device: key
                        .map(str::to_string)
                        .unwrap_or_else(|| record.device_id().to_string()),
                    record,
                });
            }
        }
        if read - last_report >= 5_000 || read == total {
            progress(read, total);
            last_report = read;
        }
    }
    progress(read, total);
    let outcome = replay.finish();
    if let Some(topic) = &range.output_topic {
        write_findings(settings, codec, topic, &outcome).await?;
    }
    Ok(outcome)
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos:x}-{}", std::process::id())
}

/// Writes every finding record of `outcome` to `topic` (created when missing, partitioned as
/// the alerts topic).
async fn write_findings(
    settings: &Settings,
    codec: &RegistryCodec,
    topic: &str,
    outcome: &ReplayOutcome,
) -> Result<(), BacktestError> {
    let mut spec = TopicRole::Alerts.spec(&settings.topics);
    spec.name = topic.to_string();
    ensure_topics(&settings.kafka.client_config(), &[spec]).await?;
    let producer: FutureProducer = settings
        .kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .create()?;
    for finding in &outcome.findings {
        let payload = codec
            .encode_value(topic, Contract::Finding, finding)
            .await?;
        producer
            .send(
                FutureRecord::to(topic)
                    .key(finding.device_id.as_bytes())
                    .payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    Ok(())
}
