//! The harness of offport's end-to-end tests: where is the broker, where is the registry.
//!
//! In order: `OFFPORT_BOOTSTRAP_SERVERS` and `OFFPORT_REGISTRY_URL` when both are set (CI, a
//! shared cluster, `cargo xtask test`); else the local stack recorded by `cargo xtask stack up`
//! when it is healthy; else, built with the `testcontainers` feature and a Docker daemon
//! answering, a Kafka and an Apicurio Registry container ([`containers`]); else the local stack
//! is started here (Kafka and Apicurio Registry from Maven Central, see `offport-devstack`) and
//! left running for the next test binary.
//!
//! Every test gets its own topic and consumer-group names from [`unique`], so tests run in
//! parallel and repeatedly against one broker without seeing each other's records.

use anyhow::{Context, Result};
use offport_devstack::stack::{self, StackOptions};
use offport_kafka::settings::{KafkaSettings, RegistrySettings};
use tokio::sync::OnceCell;

#[cfg(feature = "testcontainers")]
pub mod containers;
pub mod cpu;
pub mod scenario;

/// A broker and registry to test against.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Kafka bootstrap servers.
    pub bootstrap_servers: String,
    /// Confluent-compatible registry API base URL.
    pub registry_url: String,
}

impl Endpoints {
    /// Kafka settings for these endpoints.
    pub fn kafka(&self) -> KafkaSettings {
        KafkaSettings {
            bootstrap_servers: self.bootstrap_servers.clone(),
            ..KafkaSettings::default()
        }
    }

    /// Registry settings for these endpoints.
    pub fn registry(&self) -> RegistrySettings {
        RegistrySettings {
            url: self.registry_url.clone(),
            ..RegistrySettings::default()
        }
    }
}

static ENDPOINTS: OnceCell<Endpoints> = OnceCell::const_new();

/// The endpoints for this test process, found (or started) once.
pub async fn endpoints() -> Result<Endpoints> {
    ENDPOINTS.get_or_try_init(find_or_start).await.cloned()
}

async fn find_or_start() -> Result<Endpoints> {
    let options = StackOptions::from_env()?;
    #[cfg(feature = "testcontainers")]
    if !stack::configured_or_running(&options) {
        match containers::start().await {
            Ok(endpoints) => {
                eprintln!("offport-tests: no broker configured; started Kafka and Apicurio Registry containers");
                return Ok(endpoints);
            }
            Err(error) => {
                eprintln!("offport-tests: no containers ({error:#}); using the local stack")
            }
        }
    }
    let found = stack::ensure(&options)
        .await
        .context("finding or starting a broker and registry for the integration tests")?;
    if found.started.is_some() {
        eprintln!("offport-tests: no broker configured; started the local stack");
    }
    Ok(Endpoints {
        bootstrap_servers: found.bootstrap_servers,
        registry_url: found.registry_url,
    })
}

/// A name no other test run uses: `<prefix>-<uuid>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Settings for one test alone: a unique topic prefix, consumer groups and instance id,
/// `partitions` per topic, at most `batch` records per transaction, and the topics of `roles`
/// created.
pub async fn isolated_settings(
    prefix: &str,
    partitions: i32,
    batch: usize,
    roles: &[offport_kafka::topics::TopicRole],
) -> Result<offport_kafka::settings::Settings> {
    use offport_kafka::settings::{Settings, TopicSettings};
    let endpoints = endpoints().await?;
    let mut settings = Settings {
        kafka: endpoints.kafka(),
        registry: endpoints.registry(),
        topics: TopicSettings {
            prefix: format!("{}.", unique(prefix)),
            partitions,
            replication_factor: 1,
        },
        ..Settings::default()
    };
    settings.pipeline.batch_max_records = batch;
    settings.pipeline.instance_id = Some(unique("instance"));
    // Consumer groups of this test alone. With the shared default (`offport-<stage>`), static
    // members of earlier tests stayed in the group until their session timeout, and each new
    // member's join waited for them: up to 45 s per stage start.
    settings.pipeline.group_prefix = format!("{}offport-", settings.topics.prefix);
    let specs: Vec<_> = roles.iter().map(|r| r.spec(&settings.topics)).collect();
    offport_kafka::topics::ensure_topics(&settings.kafka.client_config(), &specs).await?;
    Ok(settings)
}

/// A consumer of `topic` from its start, in a group of its own, reading only committed
/// records.
pub fn committed_consumer(
    kafka: &offport_kafka::settings::KafkaSettings,
    topic: &str,
) -> Result<rdkafka::consumer::StreamConsumer> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", unique("it-reader"))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()?;
    consumer.subscribe(&[topic])?;
    Ok(consumer)
}

/// A raw record to produce: key, value and headers.
#[derive(Debug, Clone, Default)]
pub struct RawInput {
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub value: Vec<u8>,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Partition, when the test places the record itself.
    pub partition: Option<i32>,
}

impl RawInput {
    /// A record with only a value.
    pub fn value(value: impl Into<Vec<u8>>) -> Self {
        Self {
            value: value.into(),
            ..Self::default()
        }
    }

    /// This record with a header.
    pub fn header(mut self, key: &str, value: &str) -> Self {
        self.headers
            .push((key.to_string(), value.as_bytes().to_vec()));
        self
    }

    /// This record in `partition`.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// Produces `inputs` to `topic` in order (all enqueued at once, then awaited); returns their
/// (partition, offset).
pub async fn produce(
    kafka: &offport_kafka::settings::KafkaSettings,
    topic: &str,
    inputs: &[RawInput],
) -> Result<Vec<(i32, i64)>> {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = kafka
        .client_config()
        .set("enable.idempotence", "true")
        .create()?;
    let mut deliveries = Vec::with_capacity(inputs.len());
    for input in inputs {
        let mut headers = OwnedHeaders::new();
        for (key, value) in &input.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut record = FutureRecord::to(topic)
            .payload(&input.value)
            .headers(headers);
        if let Some(key) = &input.key {
            record = record.key(key);
        }
        if let Some(partition) = input.partition {
            record = record.partition(partition);
        }
        deliveries.push(enqueue(&producer, record).await?);
    }
    let mut placed = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let delivered = delivery
            .await
            .context("delivery future dropped")?
            .map_err(|(e, _)| anyhow::anyhow!("delivery: {e}"))?;
        placed.push((delivered.partition, delivered.offset));
    }
    Ok(placed)
}

/// Enqueues `record`, waiting while librdkafka's queue is full (the producer's background
/// thread drains it); returns the delivery future.
pub async fn enqueue<K, P>(
    producer: &rdkafka::producer::FutureProducer,
    record: rdkafka::producer::FutureRecord<'_, K, P>,
) -> Result<rdkafka::producer::DeliveryFuture>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    offport_replay::enqueue(producer, record)
        .await
        .map_err(|e| anyhow::anyhow!("enqueue: {e}"))
}

/// A record read back: key, partition, value and headers (as text).
pub type Received = (
    Option<Vec<u8>>,
    i32,
    Vec<u8>,
    std::collections::BTreeMap<String, String>,
);

/// Encodes each value in Avro through the registry (`contract`, under `topic`'s subject) and
/// produces them to `topic` in order, each keyed by its key.
pub async fn produce_avro<'a, T: serde::Serialize + 'a>(
    kafka: &offport_kafka::settings::KafkaSettings,
    codec: &offport_kafka::registry::RegistryCodec,
    topic: &str,
    contract: offport_core::schema::Contract,
    records: impl IntoIterator<Item = (&'a str, &'a T)>,
) -> Result<()> {
    let mut inputs = Vec::new();
    for (key, value) in records {
        inputs.push(RawInput {
            key: Some(key.as_bytes().to_vec()),
            ..RawInput::value(codec.encode_value(topic, contract, value).await?)
        });
    }
    produce(kafka, topic, &inputs).await?;
    Ok(())
}

/// Reads exactly `count` dead letters (read_committed, as [`read_committed`]) from the settings'
/// dead-letter topic, decoded, in the order of their source offsets.
pub async fn dead_letters(
    settings: &offport_kafka::settings::Settings,
    codec: &offport_kafka::registry::RegistryCodec,
    count: usize,
) -> Result<Vec<offport_core::model::DeadLetter>> {
    let topic = offport_kafka::topics::TopicRole::DeadLetter
        .spec(&settings.topics)
        .name;
    let mut letters = Vec::new();
    for (_, _, value, _) in read_committed(&settings.kafka, &topic, count).await? {
        letters.push(
            codec
                .decode::<offport_core::model::DeadLetter>(&value)
                .await?,
        );
    }
    letters.sort_by_key(|letter| letter.source_offset);
    Ok(letters)
}

/// Reads exactly `count` records from `topic` with read_committed (failing after 60 s, or if
/// one more arrives within 2 s).
pub async fn read_committed(
    kafka: &offport_kafka::settings::KafkaSettings,
    topic: &str,
    count: usize,
) -> Result<Vec<Received>> {
    use rdkafka::message::{Headers, Message};
    use std::time::Duration;
    let consumer = committed_consumer(kafka, topic)?;
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while out.len() < count {
        let message = match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(message) => message?,
            Err(_) => anyhow::bail!("only {} of {count} records arrived on {topic}", out.len()),
        };
        // Progress markers of the normalizers are for the joiner.
        if offport_kafka::progress::is_marker(&message) {
            continue;
        }
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push((
            message.key().map(<[u8]>::to_vec),
            message.partition(),
            message.payload().unwrap_or_default().to_vec(),
            headers,
        ));
    }
    let quiet_until = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Ok(extra)) = tokio::time::timeout_at(quiet_until, consumer.recv()).await {
        if !offport_kafka::progress::is_marker(&extra) {
            anyhow::bail!(
                "unexpected extra record at offset {} on {topic}",
                extra.offset()
            );
        }
    }
    Ok(out)
}

/// Kafka's Java `Utils.murmur2`, to check that partitions match what Java clients compute.
pub fn murmur2(data: &[u8]) -> i32 {
    let seed: u32 = 0x9747_b28c;
    let m: u32 = 0x5bd1_e995;
    let r = 24;
    let length = data.len() as u32;
    let mut h = seed ^ length;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut word = [0_u8; 4];
        word.copy_from_slice(chunk);
        let mut k = u32::from_le_bytes(word);
        k = k.wrapping_mul(m);
        k ^= k >> r;
        k = k.wrapping_mul(m);
        h = h.wrapping_mul(m);
        h ^= k;
    }
    match *tail {
        [a, b, c] => {
            h ^= u32::from(c) << 16;
            h ^= u32::from(b) << 8;
            h ^= u32::from(a);
            h = h.wrapping_mul(m);
        }
        [a, b] => {
            h ^= u32::from(b) << 8;
            h ^= u32::from(a);
            h = h.wrapping_mul(m);
        }
        [a] => {
            h ^= u32::from(a);
            h = h.wrapping_mul(m);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(m);
    h ^= h >> 15;
    h as i32
}

/// The partition Java's default partitioner picks for `key`.
pub fn java_partition(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// A fixture file of `tests/fixtures/raw` as text.
pub fn raw_fixture(path: &str) -> String {
    let full = format!("{}/fixtures/raw/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// The non-empty lines of a fixture.
pub fn fixture_lines(path: &str) -> Vec<String> {
    raw_fixture(path)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// A stage loop running in the background of a test.
pub struct Background {
    /// Triggers the stage's graceful shutdown.
    pub shutdown: offport_kafka::shutdown::Shutdown,
    /// The loop.
    pub task: tokio::task::JoinHandle<Result<(), offport_kafka::runtime::PipelineError>>,
    /// Its metrics.
    pub metrics: std::sync::Arc<offport_kafka::metrics::PipelineMetrics>,
}

impl Background {
    /// A normalizer reading `input`.
    pub fn normalizer<N>(
        settings: &offport_kafka::settings::Settings,
        stage: &'static str,
        input: offport_kafka::topics::TopicRole,
        normalizer: N,
    ) -> Result<Self>
    where
        N: offport_core::normalize::Normalizer + Send + Sync + 'static,
    {
        use offport_kafka::runtime::{run_normalizer, PipelineOptions};
        let codec = std::sync::Arc::new(offport_kafka::registry::RegistryCodec::new(
            &settings.registry,
        )?);
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = offport_kafka::metrics::PipelineMetrics::register(&mut registry);
        let shutdown = offport_kafka::shutdown::Shutdown::new();
        let options =
            PipelineOptions::for_stage(stage, vec![input.spec(&settings.topics).name], settings);
        let (settings, task_metrics, task_shutdown) = (
            settings.clone(),
            std::sync::Arc::clone(&metrics),
            shutdown.clone(),
        );
        let task = tokio::spawn(async move {
            run_normalizer(
                &settings,
                options,
                normalizer,
                codec,
                task_metrics,
                task_shutdown,
            )
            .await
        });
        Ok(Self {
            shutdown,
            task,
            metrics,
        })
    }

    /// A stateful stage (joiner, scorer).
    pub fn stateful<S>(settings: &offport_kafka::settings::Settings, stage: S) -> Result<Self>
    where
        S: offport_kafka::runtime::stateful::StatefulStage + 'static,
    {
        let codec = std::sync::Arc::new(offport_kafka::registry::RegistryCodec::new(
            &settings.registry,
        )?);
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = offport_kafka::metrics::PipelineMetrics::register(&mut registry);
        let shutdown = offport_kafka::shutdown::Shutdown::new();
        let (settings, task_metrics, task_shutdown) = (
            settings.clone(),
            std::sync::Arc::clone(&metrics),
            shutdown.clone(),
        );
        let task = tokio::spawn(async move {
            offport_kafka::runtime::stateful::run_stateful(
                &settings,
                stage,
                codec,
                task_metrics,
                task_shutdown,
            )
            .await
        });
        Ok(Self {
            shutdown,
            task,
            metrics,
        })
    }

    /// Stops the loop gracefully and returns its metrics.
    pub async fn stop(self) -> Result<std::sync::Arc<offport_kafka::metrics::PipelineMetrics>> {
        self.shutdown.trigger();
        self.task.await.context("stage task")??;
        Ok(self.metrics)
    }
}

/// A record read back, without its headers; `None` for a progress marker (the normalizers'
/// markers are for the joiner).
fn received(message: &impl rdkafka::message::Message) -> Option<Received> {
    (!offport_kafka::progress::is_marker(message)).then(|| {
        (
            message.key().map(<[u8]>::to_vec),
            message.partition(),
            message.payload().unwrap_or_default().to_vec(),
            Default::default(),
        )
    })
}

/// Reads `topic` (read_committed, from the start) to the end its partitions have now: every
/// record committed before the call, however slowly the broker serves them (a quiet spell does
/// not end the read); fails after `limit`. Progress markers are skipped.
pub async fn read_to_end(
    kafka: &offport_kafka::settings::KafkaSettings,
    topic: &str,
    limit: std::time::Duration,
) -> Result<Vec<Received>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use std::time::Duration;
    // The ends are the high watermarks, read uncommitted: a read-committed probe answers the
    // last stable offset, which stops short of every record after a transaction still open
    // (one a stage left open when the broker went away stays so until it times out), and the
    // read would end there with committed records unread. The read-committed consumer below
    // passes the high watermark once every transaction before it has ended.
    let probe: BaseConsumer = kafka
        .client_config()
        .set("group.id", unique("it-probe"))
        .set("isolation.level", "read_uncommitted")
        .create()?;
    let ends: Vec<(i32, i64)> = tokio::task::block_in_place(|| -> Result<Vec<(i32, i64)>> {
        let metadata = probe.fetch_metadata(Some(topic), Duration::from_secs(30))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len());
        (0..partitions)
            .map(|p| {
                let p = i32::try_from(p)?;
                let (_, high) = probe.fetch_watermarks(topic, p, Duration::from_secs(30))?;
                Ok((p, high))
            })
            .collect()
    })?;
    let consumer = committed_consumer(kafka, topic)?;
    let mut out: Vec<Received> = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let positions = consumer.position()?;
        let done = ends.iter().all(|(p, high)| {
            *high == 0
                || positions
                    .find_partition(topic, *p)
                    .and_then(|e| match e.offset() {
                        rdkafka::Offset::Offset(o) => Some(o),
                        _ => None,
                    })
                    .is_some_and(|o| o >= *high)
        });
        if done {
            return Ok(out);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "{} records of {topic} read in {limit:?}, not yet to its end ({})",
                out.len(),
                stuck_partitions(kafka, topic, &ends, &positions)
            );
        }
        if let Ok(message) = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
        {
            out.extend(received(&message?));
        }
    }
}

/// Where a read that did not reach its end stands, per partition: the consumer's position, the
/// last stable offset (where a transaction still open holds read-committed readers) and the
/// high watermark, e.g. `p2 at 40, stable 40, high 57`.
fn stuck_partitions(
    kafka: &offport_kafka::settings::KafkaSettings,
    topic: &str,
    ends: &[(i32, i64)],
    positions: &rdkafka::TopicPartitionList,
) -> String {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let probe: Option<BaseConsumer> = kafka
        .client_config()
        .set("group.id", unique("it-probe"))
        .set("isolation.level", "read_committed")
        .create()
        .ok();
    let mut parts = Vec::new();
    for (partition, high) in ends {
        let at = positions
            .find_partition(topic, *partition)
            .map(|e| e.offset());
        if at == Some(rdkafka::Offset::Offset(*high)) {
            continue;
        }
        let at = at.map_or_else(|| "unassigned".to_string(), |o| format!("{o:?}"));
        let stable = probe
            .as_ref()
            .and_then(|p| {
                tokio::task::block_in_place(|| {
                    p.fetch_watermarks(topic, *partition, std::time::Duration::from_secs(10))
                })
                .ok()
            })
            .map_or_else(|| "unknown".to_string(), |(_, stable)| stable.to_string());
        parts.push(format!(
            "p{partition} at {at}, stable {stable}, high {high}"
        ));
    }
    parts.join("; ")
}

/// Reads `topic` (read_committed, from the start) until no record has arrived for `quiet`,
/// at least `min` records have, or `limit` has passed (then fails).
pub async fn read_until_quiet(
    kafka: &offport_kafka::settings::KafkaSettings,
    topic: &str,
    min: usize,
    quiet: std::time::Duration,
    limit: std::time::Duration,
) -> Result<Vec<Received>> {
    let consumer = committed_consumer(kafka, topic)?;
    let mut out: Vec<Received> = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout(quiet, consumer.recv()).await {
            Ok(message) => out.extend(received(&message?)),
            Err(_) if out.len() >= min => return Ok(out),
            Err(_) => {}
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "{} of at least {min} records on {topic} in {limit:?}",
                out.len()
            );
        }
    }
}

/// One record of the bad-record corpus (`tests/fixtures/bad`, see its README).
#[derive(Debug, serde::Deserialize)]
pub struct BadRecord {
    /// What is wrong with it.
    pub case: String,
    /// The dead-letter reason offport must give it (its Avro symbol).
    pub reason: String,
    value: Option<String>,
    value_base64: Option<String>,
    #[serde(default)]
    repeats: Vec<Repeat>,
    /// Its headers.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, serde::Deserialize)]
struct Repeat {
    unit: String,
    times: usize,
}

impl BadRecord {
    /// The record's value, its long runs expanded; `None` for a tombstone.
    pub fn value(&self) -> Result<Option<Vec<u8>>> {
        use base64::Engine;
        if let Some(encoded) = &self.value_base64 {
            return Ok(Some(
                base64::engine::general_purpose::STANDARD.decode(encoded)?,
            ));
        }
        let Some(mut text) = self.value.clone() else {
            return Ok(None);
        };
        for (index, repeat) in self.repeats.iter().enumerate() {
            text = text.replacen(
                &format!("\u{1}{index}\u{1}"),
                &repeat.unit.repeat(repeat.times),
                1,
            );
        }
        Ok(Some(text.into_bytes()))
    }

    /// The headers as a [`offport_core::normalize::RawRecord`] takes them.
    pub fn raw_headers(&self) -> Vec<(String, Option<Vec<u8>>)> {
        self.headers
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone().into_bytes())))
            .collect()
    }
}

/// The bad-record corpus of one raw topic (`proxy.jsonl`, `edr.jsonl`, `mdm.jsonl`).
pub fn bad_corpus(file: &str) -> Result<Vec<BadRecord>> {
    let path = format!("{}/fixtures/bad/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .with_context(|| path.clone())?
        .lines()
        .map(|line| serde_json::from_str(line).with_context(|| path.clone()))
        .collect()
}

/// Produces `corpus` to `topic` in order (on `partition`, else where the partitioner puts a
/// record without key), each with its headers; a tombstone as a record without a value.
pub async fn produce_bad_corpus(
    kafka: &offport_kafka::settings::KafkaSettings,
    topic: &str,
    partition: Option<i32>,
    corpus: &[BadRecord],
) -> Result<()> {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = kafka
        .client_config()
        .set("enable.idempotence", "true")
        .create()?;
    for bad in corpus {
        let value = bad.value()?;
        let mut headers = OwnedHeaders::new();
        for (key, value) in &bad.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        if let Some(value) = &value {
            record = record.payload(value);
        }
        producer
            .send(record, std::time::Duration::from_secs(30))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("{}: {e}", bad.case))?;
    }
    Ok(())
}

/// Every violation of the official OCSF 1.4.0 Detection Finding (host profile) JSON Schema
/// (`schemas/ocsf/`, see its README) in `event`, as `path: message`.
pub fn ocsf_violations(event: &serde_json::Value) -> Vec<String> {
    static SCHEMA: std::sync::OnceLock<Result<jsonschema::Validator, String>> =
        std::sync::OnceLock::new();
    let validator = SCHEMA.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../schemas/ocsf/detection_finding-1.4.0-host.schema.json"
        );
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        let schema: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
        jsonschema::draft202012::new(&schema).map_err(|e| format!("{path}: {e}"))
    });
    match validator {
        Ok(validator) => validator
            .iter_errors(event)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect(),
        Err(error) => vec![error.clone()],
    }
}

/// Checks a stage binary's command line: `--help` names the stage, its purpose and
/// `--config`, `--version` prints the version, and an unknown argument exits 2 with clap's
/// error and usage, printed once.
pub fn check_stage_cli(binary: &str, stage: &str) {
    use std::process::Command;
    let run = |args: &[&str]| {
        Command::new(binary)
            .args(args)
            .env_remove("OFFPORT_CONFIG")
            .output()
            .unwrap_or_else(|e| panic!("running {binary}: {e}"))
    };
    let help = run(&["--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{binary} --help: {help:?}");
    for part in [
        format!("offport {stage}:"),
        "--config <FILE>".to_string(),
        "OFFPORT_CONFIG".to_string(),
        "Reads ".to_string(),
    ] {
        assert!(
            text.contains(&part),
            "{binary} --help lacks {part:?}:\n{text}"
        );
    }
    let version = run(&["--version"]);
    assert!(version.status.success(), "{binary} --version: {version:?}");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("offport-{stage} {}", env!("CARGO_PKG_VERSION"))
    );
    let bad = run(&["--frobnicate"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{binary} --frobnicate: {bad:?}");
    assert_eq!(err.matches("--frobnicate").count(), 1, "{err}");
    assert!(err.contains("Usage:"), "{err}");
}
