//! normalize-proxy through the real broker and registry beside a plain rdkafka pass-through
//! copy of the same input topic, in one run on this machine.
//!
//! `cargo bench -p offport-tests --bench normalize_proxy` (starts the local stack when none is
//! configured). `OFFPORT_BENCH_RECORDS` sets the input size (default 200000).
//!
//! - pass-through: one consumer (its own group) reads the raw topic and one producer copies
//!   every record, unchanged and keyed as read, to a copy topic; timed from the first record
//!   consumed to the last delivery acknowledged.
//! - normalize-proxy: the service's loop (`run_normalizer`: read_committed consumer, parse and
//!   validate, Avro through the registry, transactions with the input offsets); timed from the
//!   first record consumed to the last output committed.
//! - the stage loop without parsing: the same loop with a normalizer that turns every record
//!   into a clone of one parsed session (its own group, the same topic): the cost of the
//!   exactly-once plumbing and the Avro encoding alone, which faster parsing cannot remove.
//!
//! - normalize-proxy on each sensor's format, the same number of records on topics of their
//!   own: a tunnel sensor's Zeek conn.log and Suricata EVE flow events (client addresses
//!   attributed through a `normalize.sources` map of `OFFPORT_BENCH_LEASES` /32 leases, default
//!   100,000) and PCAPdroid rows (keyed by device, with the map loaded too), each rate against
//!   offport JSON's.
//!
//! Both read the same topic from the start with the same client settings (librdkafka defaults
//! plus the stages' `fetch.queue.backoff.ms`); the ratio is what BENCHMARKS.md quotes.

// The allocator of the service binaries, so the stages run here as they do there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use offport_core::examples;
use offport_core::model::DeadLetterReason;
use offport_core::normalize::proxy::sources::{SourceMap, SourceMapping};
use offport_core::normalize::proxy::{ProxyConfig, ProxyFormat, ProxyNormalizer};
use offport_core::normalize::{Limits, Normalized, Normalizer, RawRecord, Rejection};
use offport_kafka::settings::Settings;
use offport_kafka::topics::{ensure_topics, TopicRole, TopicSpec};
use offport_tests::{enqueue, isolated_settings, produce, unique, Background, RawInput};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// CPU time (user + system) of this process so far.
fn own_cpu() -> Option<Duration> {
    offport_tests::cpu::process_cpu("self")
}

/// Microseconds of this process's CPU per record since `before`.
fn cpu_since(before: Option<Duration>, records: usize) -> f64 {
    match (before, own_cpu()) {
        (Some(before), Some(after)) => {
            after.saturating_sub(before).as_secs_f64() * 1e6 / records.max(1) as f64
        }
        _ => f64::NAN,
    }
}

/// The stage's own work on one thread, no Kafka: normalize each input and Avro-encode every
/// session (the binary codec of the schema the stage writes). Microseconds per record.
fn work_alone(mut normalizer: impl Normalizer, inputs: &[RawInput], topic: &str) -> Result<f64> {
    let codec = offport_core::schema::Contract::NetworkSession.binary()?;
    let mut bytes = Vec::with_capacity(1024);
    let started = Instant::now();
    for (offset, input) in inputs.iter().enumerate() {
        let raw = RawRecord {
            topic,
            partition: 0,
            offset: i64::try_from(offset)?,
            key: input.key.as_deref(),
            value: Some(&input.value),
            headers: &[],
            timestamp: None,
        };
        if let Ok(out) = normalizer.normalize(&raw, 1_795_168_800_000) {
            for normalized in out {
                if let Normalized::Session(session) = normalized {
                    bytes.clear();
                    codec.encode(&session, &mut bytes)?;
                }
            }
        }
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / inputs.len().max(1) as f64)
}

/// The target line: the stage's CPU per record in this process against 1.5 x (its work alone
/// plus the copy's CPU per record in this process).
fn cpu_target(stage: f64, work: f64, copy: f64) -> String {
    let bound = 1.5 * (work + copy);
    format!(
        "process CPU per record {stage:.1} us against 1.5 x (work alone {work:.1} + copy {copy:.1}) = {bound:.1} us: {}",
        if stage <= bound { "within" } else { "over" }
    )
}

async fn pass_through(
    settings: &Settings,
    input: &str,
    output: &str,
    records: usize,
) -> Result<f64> {
    let consumer: StreamConsumer = settings
        .kafka
        .client_config()
        .set("group.id", unique("bench-copy"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
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
    consumer.subscribe(&[input])?;
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

/// The stage's loop with the parsing taken out: every input record becomes a clone of one
/// session (as the real normalizer would make of the first). What is left is the loop, the Avro
/// encoding and the transactions: the part of the stage that parsing faster cannot shorten.
struct Unparsed(offport_core::model::NetworkSession);

impl Normalizer for Unparsed {
    fn normalize(
        &mut self,
        _record: &RawRecord<'_>,
        _ingest_time: offport_core::model::EpochMillis,
    ) -> Result<Vec<Normalized>, Rejection> {
        Ok(vec![Normalized::Session(self.0.clone())])
    }
}

async fn normalize<N: Normalizer + Send + Sync + 'static>(
    settings: &Settings,
    records: usize,
    normalizer: N,
) -> Result<f64> {
    let stage =
        Background::normalizer(settings, "normalize-proxy", TopicRole::RawProxy, normalizer)?;
    // Timed from the first record received to the last output committed.
    while (stage.metrics.records_committed.get() as usize) < records {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = stage
        .metrics
        .since_first_read()
        .context("no record")?
        .as_secs_f64();
    let metrics = stage.stop().await?;
    // Every record a session: a rate of dead letters would measure nothing.
    let refused: u64 = DeadLetterReason::ALL
        .into_iter()
        .map(|reason| {
            metrics
                .dead_letters
                .get_or_create(&offport_kafka::metrics::ReasonLabels {
                    reason: reason.into(),
                })
                .get()
        })
        .sum();
    anyhow::ensure!(
        refused == 0,
        "{refused} records dead-lettered: the bench's input is wrong"
    );
    Ok(records as f64 / elapsed)
}

fn main() -> Result<()> {
    let records: usize = std::env::var("OFFPORT_BENCH_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    // The stage's logs only when asked for (RUST_LOG=offport_kafka=debug shows each batch's
    // collect/process/settle times).
    if std::env::var_os("RUST_LOG").is_some() {
        offport_kafka::telemetry::init(&Settings::default().log);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let batch = std::env::var("OFFPORT_BENCH_BATCH")
            .ok()
            .and_then(|b| b.parse().ok())
            .unwrap_or(Settings::default().pipeline.batch_max_records);
        println!("normalize-proxy batch: up to {batch} records per transaction");
        let roles = [TopicRole::RawProxy, TopicRole::Sessions, TopicRole::DeadLetter];
        let settings = isolated_settings("bench", 3, batch, &roles).await?;
        let input = TopicRole::RawProxy.spec(&settings.topics).name;
        let copy = format!("{}copy", settings.topics.prefix);
        let copy_spec = TopicSpec {
            name: copy.clone(),
            ..TopicRole::Sessions.spec(&settings.topics)
        };
        ensure_topics(&settings.kafka.client_config(), &[copy_spec]).await?;
        let inputs: Vec<RawInput> = (0..records)
            .map(|i| {
                let mut input = RawInput::value(examples::session_json(i));
                input.key = Some(format!("device-{:04}", i % 1000).into_bytes());
                input
            })
            .collect();
        let bytes: usize = inputs.iter().map(|i| i.value.len()).sum();
        let loading = Instant::now();
        produce(&settings.kafka, &input, &inputs).await?;
        println!(
            "input: {records} offport JSON session records ({:.1} MB) on 3 partitions, loaded in {:.1} s",
            bytes as f64 / 1e6,
            loading.elapsed().as_secs_f64()
        );
        let cpu = own_cpu();
        let copy_rate = pass_through(&settings, &input, &copy, records).await?;
        let copy_cpu = cpu_since(cpu, records);
        println!("pass-through copy (rdkafka consume + produce):   {copy_rate:>10.0} records/s, {copy_cpu:.1} us CPU/record in this process");
        let work = work_alone(
            ProxyNormalizer::new(ProxyFormat::Auto, Limits::default()),
            &inputs,
            &input,
        )?;
        let normalizer = ProxyNormalizer::new(ProxyFormat::Auto, Limits::default());
        let cpu = own_cpu();
        let normalize_rate = normalize(&settings, records, normalizer).await?;
        let stage_cpu = cpu_since(cpu, records);
        println!("normalize-proxy (parse, Avro, transactions):     {normalize_rate:>10.0} records/s, {stage_cpu:.1} us CPU/record in this process");
        println!("normalize-proxy {}", cpu_target(stage_cpu, work, copy_cpu));
        println!(
            "normalize-proxy / pass-through: {:.0} % (target >= 70 %)",
            100.0 * normalize_rate / copy_rate
        );
        // The same loop without parsing, under its own group (reads the topic from the start).
        let mut unparsed = settings.clone();
        unparsed.pipeline.group_prefix = format!("{}unparsed-", settings.pipeline.group_prefix);
        let mut first = ProxyNormalizer::new(ProxyFormat::Auto, Limits::default());
        let sample = examples::session_json(0);
        let raw = RawRecord {
            topic: &input,
            partition: 0,
            offset: 0,
            key: None,
            value: Some(sample.as_bytes()),
            headers: &[],
            timestamp: None,
        };
        let Some(Normalized::Session(session)) = first
            .normalize(&raw, 1_795_168_800_000)
            .map_err(|r| anyhow::anyhow!("{}", r.message))?
            .pop()
        else {
            anyhow::bail!("the sample record is not a session");
        };
        let loop_rate = normalize(&unparsed, records, Unparsed(session)).await?;
        println!("stage loop without parsing (Avro, transactions): {loop_rate:>10.0} records/s ({:.0} % of pass-through)", 100.0 * loop_rate / copy_rate);

        // A tunnel sensor's conn.log, attributed through a large lease map.
        let leases: u32 = std::env::var("OFFPORT_BENCH_LEASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(100_000);
        let address = |n: u32| format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255);
        let sources = (0..leases)
            .map(|n| -> Result<SourceMapping> {
                Ok(SourceMapping {
                network: format!("{}/32", address(n)).parse()?,
                device_id: format!("android-{n:06}"),
                platform: Some("android".into()),
                app_id: None,
                from: None,
                until: None,
            })
            })
            .collect::<Result<Vec<_>>>()?;
        // Each sensor's lines, `records` of them, on topics of their own; Zeek and EVE from a
        // tunnel sensor (addresses through the lease map), PCAPdroid rows keyed by device.
        let time = |i: usize| {
            let seconds = 1_795_168_800 + i / 100;
            (seconds, i % 1_000_000)
        };
        let zeek_line = |i: usize| {
            let n = u32::try_from(i).unwrap_or(0) * 7_919 % leases.max(1);
            let (seconds, micros) = time(i);
            RawInput::value(format!(
                "{{\"ts\":{seconds}.{micros:06},\"uid\":\"C{i:017}\",\"id.orig_h\":\"{}\",\"id.orig_p\":{},\"id.resp_h\":\"203.0.113.{}\",\"id.resp_p\":443,\"proto\":\"tcp\",\"service\":\"ssl\",\"duration\":1.842219,\"orig_bytes\":1012,\"resp_bytes\":2874,\"conn_state\":\"SF\",\"local_orig\":true,\"local_resp\":false,\"missed_bytes\":0,\"history\":\"ShADadFf\",\"orig_pkts\":10,\"orig_ip_bytes\":1532,\"resp_pkts\":8,\"resp_ip_bytes\":3290}}",
                address(n),
                40_000 + i % 20_000,
                i % 250
            ))
        };
        // Suricata's EVE flow event as it writes one (`timestamp` first, the flow's times in
        // its own format).
        let eve_line = |i: usize| {
            let n = u32::try_from(i).unwrap_or(0) * 7_919 % leases.max(1);
            let (seconds, micros) = time(i);
            let clock = |s: usize| {
                let day = s % 86_400;
                format!("2026-11-20T{:02}:{:02}:{:02}.{micros:06}+0000", day / 3600, day / 60 % 60, day % 60)
            };
            RawInput::value(format!(
                "{{\"timestamp\":\"{}\",\"flow_id\":{},\"in_iface\":\"tun0\",\"event_type\":\"flow\",\"src_ip\":\"{}\",\"src_port\":{},\"dest_ip\":\"203.0.113.{}\",\"dest_port\":443,\"proto\":\"TCP\",\"app_proto\":\"tls\",\"flow\":{{\"pkts_toserver\":10,\"pkts_toclient\":8,\"bytes_toserver\":1532,\"bytes_toclient\":3290,\"start\":\"{}\",\"end\":\"{}\",\"age\":2,\"state\":\"closed\",\"reason\":\"timeout\",\"alerted\":false}}}}",
                clock(seconds + 2),
                1_000_000_000_000 + i,
                address(n),
                40_000 + i % 20_000,
                i % 250,
                clock(seconds),
                clock(seconds + 2),
            ))
        };
        // A PCAPdroid export's row with the export's header, keyed by its device.
        let pcapdroid_line = |i: usize| {
            let (seconds, micros) = time(i);
            let clock = |s: usize| {
                let day = s % 86_400;
                format!("2026-11-20T{:02}:{:02}:{:02}.{:03}+00:00", day / 3600, day / 60 % 60, day % 60, micros / 1000)
            };
            RawInput {
                key: Some(format!("android-{:06}", i % 1_000).into_bytes()),
                ..RawInput::value(format!(
                    "IPProto,SrcIP,SrcPort,DstIp,DstPort,UID,App,PackageName,Proto,Status,Info,BytesSent,BytesRcvd,PktsSent,PktsRcvd,FirstSeen,LastSeen\n6,10.215.173.1,{},203.0.113.{},443,10123,chrome,com.android.chrome,TLS,Closed,www.example{}.com,1532,3290,10,8,{},{}",
                    40_000 + i % 20_000,
                    i % 250,
                    i % 500,
                    clock(seconds),
                    clock(seconds + 2),
                ))
            }
        };
        let formats: [(&str, &dyn Fn(usize) -> RawInput); 3] = [
            ("Zeek conn.log", &zeek_line),
            ("Suricata EVE flow", &eve_line),
            ("PCAPdroid CSV", &pcapdroid_line),
        ];
        for (index, (name, line)) in formats.iter().enumerate() {
            let mut sensor = settings.clone();
            sensor.topics.prefix = format!("{}sensor{index}.", settings.topics.prefix);
            sensor.pipeline.group_prefix =
                format!("{}sensor{index}-", settings.pipeline.group_prefix);
            for spec in roles.map(|role| role.spec(&sensor.topics)) {
                ensure_topics(&sensor.kafka.client_config(), &[spec]).await?;
            }
            let input = TopicRole::RawProxy.spec(&sensor.topics).name;
            let lines: Vec<RawInput> = (0..records).map(line).collect();
            produce(&sensor.kafka, &input, &lines).await?;
            // The copy of this input, as the bound asks: a sensor's records are not offport
            // JSON's size, and reading and writing them costs what their bytes do.
            let cpu = own_cpu();
            let sensor_copy_rate = pass_through(&sensor, &input, &copy, records).await?;
            let sensor_copy_cpu = cpu_since(cpu, records);
            let normalizer = ProxyNormalizer::configured(ProxyConfig {
                format: Some(ProxyFormat::Auto),
                sources: SourceMap::new(sources.clone()),
                ..ProxyConfig::default()
            });
            let configured = || {
                ProxyNormalizer::configured(ProxyConfig {
                    format: Some(ProxyFormat::Auto),
                    sources: SourceMap::new(sources.clone()),
                    ..ProxyConfig::default()
                })
            };
            let work = work_alone(configured(), &lines, &input)?;
            let cpu = own_cpu();
            let rate = normalize(&sensor, records, normalizer).await?;
            let stage_cpu = cpu_since(cpu, records);
            println!(
                "normalize-proxy on {name:<18}, {leases} leases: {rate:>10.0} records/s ({:.2}x offport JSON with no map; target >= 0.9x)",
                rate / normalize_rate
            );
            println!(
                "  input {:.1} MB ({:.0} bytes a record); its pass-through copy {sensor_copy_rate:.0} records/s, {sensor_copy_cpu:.1} us CPU/record in this process",
                lines.iter().map(|l| l.value.len()).sum::<usize>() as f64 / 1e6,
                lines.iter().map(|l| l.value.len()).sum::<usize>() as f64 / records.max(1) as f64,
            );
            println!("  {}", cpu_target(stage_cpu, work, sensor_copy_cpu));
        }
        Ok(())
    })
}
