//! The joiner and the scorer through the real broker and registry, each beside a plain rdkafka
//! pass-through copy of the same input topics, in one run on this machine; and the joiner's
//! state per active key.
//!
//! `cargo bench -p offport-tests --bench stateful` (starts the local stack when none is
//! configured). `OFFPORT_BENCH_DEVICES` (default 3000) and `OFFPORT_BENCH_SESSIONS` per device
//! (default 50) set the input: per session one WorkManager event, plus two lifecycle events and
//! one MDM record per device (the replay dataset of the tests). `OFFPORT_BENCH_BATCH` sets the
//! records per transaction (default: the services' default).
//!
//! - pass-through: one consumer (its own group) reads the stage's input topics and one producer
//!   copies every record, unchanged, to a copy topic; timed from the first record consumed to the
//!   last delivery acknowledged.
//! - joiner / scorer: the service loop (`run_stateful`: read_committed consumer, Avro decode,
//!   the core, Avro encode, changelog, transactions with the input offsets), run to the end of
//!   its input (`stream.stop_at_end`); timed from the first record received to the loop's end
//!   (the last transaction committed).
//!
//! Memory: the joiner's `state_bytes` over its devices at the end of input, before the flush
//! empties the pending sessions (the joiner keeps every device's timelines for TimeWindow).

// The allocator of the service binaries, so the stages run here as they do there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use offport_core::schema::Contract;
use offport_kafka::metrics::PipelineMetrics;
use offport_kafka::registry::RegistryCodec;
use offport_kafka::settings::Settings;
use offport_kafka::stages::{JoinerStage, ScorerStage};
use offport_kafka::stateful::StatefulStage;
use offport_kafka::topics::{ensure_topics, TopicRole, TopicSpec};
use offport_tests::scenario::replay_dataset;
use offport_tests::{enqueue, isolated_settings, produce, unique, Background, RawInput};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

async fn pass_through(
    settings: &Settings,
    inputs: &[String],
    output: &str,
    records: usize,
) -> Result<f64> {
    let consumer: StreamConsumer = settings
        .kafka
        .client_config()
        .set("group.id", unique("bench-copy"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("isolation.level", "read_committed")
        // The stages' fetch tuning (see `stage_consumer`): with librdkafka's default of 1 s
        // the copy stalls whenever its prefetch queue fills.
        .set("fetch.queue.backoff.ms", "10")
        .create()?;
    let producer: FutureProducer = settings
        .kafka
        .client_config()
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create()?;
    let topics: Vec<&str> = inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let mut deliveries = Vec::with_capacity(records);
    let mut started = None;
    while deliveries.len() < records {
        let message = consumer.recv().await?;
        started.get_or_insert_with(Instant::now);
        let mut record = FutureRecord::to(output).payload(message.payload().unwrap_or_default());
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        deliveries.push(enqueue(&producer, record).await?);
    }
    for delivery in deliveries {
        delivery
            .await
            .context("delivery dropped")?
            .map_err(|(e, _)| e)?;
    }
    let elapsed = started.context("no record")?.elapsed().as_secs_f64();
    Ok(records as f64 / elapsed)
}

/// Runs `stage` to the end of its input; returns records/s and its metrics.
async fn run_stage<S: StatefulStage + 'static>(
    settings: &Settings,
    stage: S,
    records: usize,
) -> Result<(f64, Arc<PipelineMetrics>)> {
    let Background { task, metrics, .. } = Background::stateful(settings, stage)?;
    while !task.is_finished() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    task.await??;
    // From the stage's first record received, as the copy from its first record.
    let elapsed = metrics
        .since_first_read()
        .context("no record")?
        .as_secs_f64();
    anyhow::ensure!(
        metrics.records_in.get() as usize == records,
        "read {} of {records}",
        metrics.records_in.get()
    );
    Ok((records as f64 / elapsed, metrics))
}

async fn produce_encoded<T: serde::Serialize>(
    settings: &Settings,
    codec: &RegistryCodec,
    role: TopicRole,
    contract: Contract,
    records: &[(String, T)],
) -> Result<()> {
    let topic = role.spec(&settings.topics).name;
    let mut inputs = Vec::with_capacity(records.len());
    for (device, record) in records {
        inputs.push(RawInput {
            key: Some(device.clone().into_bytes()),
            ..RawInput::value(codec.encode_value(&topic, contract, record).await?)
        });
    }
    produce(&settings.kafka, &topic, &inputs).await?;
    Ok(())
}

fn main() -> Result<()> {
    let devices = env("OFFPORT_BENCH_DEVICES", 3_000);
    let per_device = env("OFFPORT_BENCH_SESSIONS", 50);
    // The stages' logs only when asked for (RUST_LOG=offport_kafka=debug shows each
    // transaction's phases).
    if std::env::var_os("RUST_LOG").is_some() {
        offport_kafka::telemetry::init(&Settings::default().log);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let batch = env(
            "OFFPORT_BENCH_BATCH",
            offport_kafka::settings::Settings::default()
                .pipeline
                .batch_max_records,
        );
        let mut settings = isolated_settings("bench-stateful", 3, batch, &TopicRole::ALL).await?;
        settings.stream.stop_at_end = true;
        let copy = format!("{}copy", settings.topics.prefix);
        let copy_spec = TopicSpec {
            name: copy.clone(),
            ..TopicRole::Sessions.spec(&settings.topics)
        };
        ensure_topics(&settings.kafka.client_config(), &[copy_spec]).await?;
        let t0 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64
            - 6 * 3_600_000;
        let (sessions, events, contexts) = replay_dataset(t0, devices, per_device);
        let codec = RegistryCodec::new(&settings.registry)?;
        let loading = Instant::now();
        produce_encoded(&settings, &codec, TopicRole::DeviceContexts, Contract::DeviceContext,
            &contexts.iter().map(|c| (c.device_id.clone(), c.clone())).collect::<Vec<_>>()).await?;
        produce_encoded(&settings, &codec, TopicRole::DeviceEvents, Contract::DeviceEvent,
            &events.iter().map(|e| (e.device_id.clone(), e.clone())).collect::<Vec<_>>()).await?;
        produce_encoded(&settings, &codec, TopicRole::Sessions, Contract::NetworkSession,
            &sessions.iter().map(|s| (s.device_id.clone(), s.clone())).collect::<Vec<_>>()).await?;
        let joiner_in = sessions.len() + events.len() + contexts.len();
        println!(
            "input: {devices} devices, {} sessions, {} EDR events, {} MDM records on 3 partitions, loaded in {:.1} s; batch {batch}",
            sessions.len(),
            events.len(),
            contexts.len(),
            loading.elapsed().as_secs_f64()
        );
        let topic = |role: TopicRole| role.spec(&settings.topics).name;
        let joiner_topics = vec![
            topic(TopicRole::Sessions),
            topic(TopicRole::DeviceEvents),
            topic(TopicRole::DeviceContexts),
        ];
        let copy_rate = pass_through(&settings, &joiner_topics, &copy, joiner_in).await?;
        println!("pass-through copy of the joiner's inputs:   {copy_rate:>10.0} records/s");
        let (join_rate, metrics) = run_stage(&settings, JoinerStage::new(&settings), joiner_in).await?;
        println!("joiner (decode, join, encode, changelog):   {join_rate:>10.0} records/s");
        println!(
            "joiner / pass-through: {:.0} % (target >= 70 %); {} changelog records, {} transactions",
            100.0 * join_rate / copy_rate,
            metrics.changelog_records.get(),
            metrics.transactions.get()
        );
        let keys = metrics.state_keys.get().max(1);
        println!(
            "joiner state at end of input: {} keys (devices; one app each), {} bytes, {:.0} bytes per active key",
            keys,
            metrics.state_bytes.get(),
            metrics.state_bytes.get() as f64 / keys as f64
        );

        let scorer_in = sessions.len();
        let copy_rate = pass_through(&settings, &[topic(TopicRole::EnrichedSessions)], &copy, scorer_in).await?;
        println!("pass-through copy of the scorer's input:    {copy_rate:>10.0} records/s");
        let (score_rate, metrics) = run_stage(&settings, ScorerStage::new(&settings), scorer_in).await?;
        println!("scorer (decode, score, Avro + OCSF out):    {score_rate:>10.0} records/s");
        println!(
            "scorer / pass-through: {:.0} % (target >= 70 %); {} findings out (Avro + OCSF records), {} changelog records",
            100.0 * score_rate / copy_rate,
            metrics.records_out.get(),
            metrics.changelog_records.get()
        );
        Ok(())
    })
}
