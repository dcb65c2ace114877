//! Every raw input format through its normalizer service loop on the real broker and registry:
//! the fixtures of `tests/fixtures/raw` (written from each tool's public documentation) go in at
//! the raw topic, Avro records come out (decoded through the registry) keyed by device and
//! partitioned as Java's client would; bad records go to the dead-letter topic and nothing after
//! them is lost. Also: the Zeek join's held records survive a restart (offset metadata), and
//! the metrics endpoint is scraped over HTTP.

// Test code over fixed fixtures: a malformed fixture should fail loudly.
#![allow(clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use offport_core::model::{
    AppProtocol, DeadLetter, DeadLetterReason, DeviceContext, DeviceEvent, EpochMillis,
    NetworkSession,
};
use offport_core::normalize::edr::EdrNormalizer;
use offport_core::normalize::mdm::MdmNormalizer;
use offport_core::normalize::proxy::sources::SourceMapping;
use offport_core::normalize::proxy::{ProxyNormalizer, DEVICE_HEADER};
use offport_core::normalize::{Limits, Normalizer, RawRecord};
use offport_kafka::metrics::PipelineMetrics;
use offport_kafka::registry::RegistryCodec;
use offport_kafka::runtime::{run_normalizer, PipelineError, PipelineOptions};
use offport_kafka::settings::Settings;
use offport_kafka::shutdown::Shutdown;
use offport_kafka::topics::TopicRole;
use offport_tests::{
    fixture_lines, isolated_settings, java_partition, produce, raw_fixture, read_committed,
    RawInput, Received,
};
use rdkafka::consumer::{Consumer, StreamConsumer};

const PARTITIONS: i32 = 3;

async fn settings(prefix: &str) -> Result<Settings> {
    let roles = [
        TopicRole::RawProxy,
        TopicRole::RawEdr,
        TopicRole::RawMdm,
        TopicRole::Sessions,
        TopicRole::DeviceEvents,
        TopicRole::DeviceContexts,
        TopicRole::DeadLetter,
    ];
    let mut settings = isolated_settings(prefix, PARTITIONS, 7, &roles).await?;
    let map = |network: &str, device: &str, platform: &str| SourceMapping {
        network: network.parse().expect("network"),
        device_id: device.to_string(),
        platform: Some(platform.to_string()),
        app_id: None,
        from: None,
        until: None,
    };
    settings.normalize.sources = vec![
        map("10.8.0.12/32", "android-7f3a", "android"),
        map("fd00:8::/64", "android-7f3a", "android"),
        map("10.8.0.13/32", "ios-91c2", "ios"),
    ];
    Ok(settings)
}

/// How many records the pure normalizer makes of `inputs`: what the service must write.
fn pure_outputs(normalizer: &mut impl Normalizer, inputs: &[RawInput]) -> usize {
    inputs
        .iter()
        .map(|input| {
            let record = RawRecord::new("t", 0, 0, &input.value);
            normalizer
                .normalize(&record, EpochMillis::MAX / 2)
                .map_or(0, |v| v.len())
        })
        .sum()
}

fn topic(settings: &Settings, role: TopicRole) -> String {
    role.spec(&settings.topics).name
}

/// A normalizer loop running in the background.
struct Running {
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<Result<(), PipelineError>>,
    metrics: Arc<PipelineMetrics>,
    registry: Option<prometheus_client::registry::Registry>,
}

impl Running {
    fn start<N: Normalizer + Send + Sync + 'static>(
        settings: &Settings,
        stage: &'static str,
        input: TopicRole,
        normalizer: N,
    ) -> Result<Self> {
        let codec = Arc::new(RegistryCodec::new(&settings.registry)?);
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = PipelineMetrics::register(&mut registry);
        let shutdown = Shutdown::new();
        let options = PipelineOptions::for_stage(stage, vec![topic(settings, input)], settings);
        let task = {
            let (settings, metrics, shutdown) =
                (settings.clone(), Arc::clone(&metrics), shutdown.clone());
            tokio::spawn(async move {
                run_normalizer(&settings, options, normalizer, codec, metrics, shutdown).await
            })
        };
        Ok(Self {
            shutdown,
            task,
            metrics,
            registry: Some(registry),
        })
    }

    async fn stop(self) -> Result<Arc<PipelineMetrics>> {
        self.shutdown.trigger();
        self.task.await.context("pipeline task")??;
        Ok(self.metrics)
    }
}

/// Decodes received records, checking each is keyed by its device and sits in the partition
/// Java's partitioner picks for that key.
async fn decode<T: serde::de::DeserializeOwned + apache_avro::AvroSchema + 'static>(
    settings: &Settings,
    received: &[Received],
    device_of: impl Fn(&T) -> &str,
) -> Result<Vec<T>> {
    let codec = RegistryCodec::new(&settings.registry)?;
    let mut out = Vec::new();
    for (key, partition, value, _) in received {
        let record: T = codec.decode(value).await?;
        let key = key.clone().context("record without key")?;
        assert_eq!(key, device_of(&record).as_bytes(), "keyed by device");
        assert_eq!(
            *partition,
            java_partition(&key, PARTITIONS),
            "Java murmur2 partition"
        );
        out.push(record);
    }
    Ok(out)
}

async fn dead_letters(
    settings: &Settings,
    count: usize,
) -> Result<Vec<(DeadLetter, BTreeMap<String, String>)>> {
    let received = read_committed(
        &settings.kafka,
        &topic(settings, TopicRole::DeadLetter),
        count,
    )
    .await?;
    let codec = RegistryCodec::new(&settings.registry)?;
    let mut out = Vec::new();
    for (_, _, value, headers) in received {
        out.push((codec.decode::<DeadLetter>(&value).await?, headers));
    }
    out.sort_by_key(|(letter, _)| letter.source_offset);
    Ok(out)
}

/// Zeek lines in the order a live stream carries them: application logs at their `ts`,
/// conn.log when the connection ends (`ts + duration`).
fn zeek_stream() -> Vec<String> {
    let mut lines: Vec<(f64, String)> = Vec::new();
    for file in [
        "zeek/ssl.log",
        "zeek/http.log",
        "zeek/dns.log",
        "zeek/conn.log",
        "zeek/conn-iso8601.log",
    ] {
        for line in fixture_lines(file) {
            let value: serde_json::Value = serde_json::from_str(&line).expect("fixture JSON");
            let ts = offport_core::normalize::time_from_json(&value["ts"]).expect("ts") as f64;
            let duration = value
                .get("duration")
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0);
            let conn = if file.contains("conn") { 1.0 } else { 0.0 };
            lines.push((ts + duration * 1000.0 + conn, line));
        }
    }
    lines.sort_by(|a, b| a.0.total_cmp(&b.0));
    lines.into_iter().map(|(_, line)| line).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcapdroid_zeek_and_suricata_records_become_sessions_keyed_by_device() -> Result<()> {
    // One topic per format, as a deployment would configure them; formats detected per record.
    // The three run side by side.
    let mut cases = tokio::task::JoinSet::new();
    for (name, inputs, expected, bad) in [
        (
            "pcapdroid",
            vec![
                RawInput::value(raw_fixture("pcapdroid-unquoted.csv"))
                    .header(DEVICE_HEADER, "android-7f3a")
                    .partition(0),
                RawInput::value("6,10.8.0.12,1,203.0.113.9,70000,1,App,com.a,TLS,Closed,,1,1,1,1,1795168800000,1795168801000")
                    .header(DEVICE_HEADER, "android-7f3a")
                    .partition(0),
                RawInput::value(raw_fixture("pcapdroid.csv"))
                    .header(DEVICE_HEADER, "android-7f3a")
                    .partition(0),
            ],
            22,
            1,
        ),
        ("zeek", zeek_stream().into_iter().map(|l| RawInput::value(l).partition(0)).collect(), 12, 0),
        (
            "suricata",
            fixture_lines("suricata/eve.json")
                .into_iter()
                .map(|l| RawInput::value(l).partition(0))
                .chain([RawInput::value(r#"{"event_type":"flow","flow_id":1}"#).partition(0)])
                .collect(),
            // One session per flow event; the two DNS flows without one make none.
            5,
            1,
        ),
    ] {
        cases.spawn(proxy_case(name, inputs, expected, bad));
    }
    while let Some(case) = cases.join_next().await {
        case??;
    }
    Ok(())
}

async fn proxy_case(
    name: &'static str,
    inputs: Vec<RawInput>,
    expected: usize,
    bad: usize,
) -> Result<()> {
    {
        let settings = settings(&format!("it-fmt-{name}")).await?;
        produce(
            &settings.kafka,
            &topic(&settings, TopicRole::RawProxy),
            &inputs,
        )
        .await?;
        let config = settings
            .normalize
            .proxy_config()
            .map_err(anyhow::Error::msg)?;
        let running = Running::start(
            &settings,
            "normalize-proxy",
            TopicRole::RawProxy,
            ProxyNormalizer::configured(config),
        )?;
        let sessions_topic = topic(&settings, TopicRole::Sessions);
        let (received, letters) = tokio::try_join!(
            read_committed(&settings.kafka, &sessions_topic, expected),
            dead_letters(&settings, bad)
        )?;
        let metrics = running.stop().await?;
        let sessions: Vec<NetworkSession> =
            decode(&settings, &received, |s: &NetworkSession| &s.device_id).await?;
        assert_eq!(metrics.records_in.get(), inputs.len() as u64, "{name}");
        assert_eq!(metrics.records_out.get(), expected as u64, "{name}");
        match name {
            "pcapdroid" => {
                assert!(sessions.iter().all(|s| s.device_id == "android-7f3a"));
                let beacons = sessions
                    .iter()
                    .filter(|s| s.dst_port == 8443 && s.protocol == AppProtocol::Tls)
                    .count();
                assert_eq!(beacons, 2, "one per export");
                assert_eq!(letters[0].0.reason, DeadLetterReason::ImpossibleValue);
                assert!(
                    letters[0].0.message.contains("DstPort")
                        || letters[0].0.message.contains("dst_port=70000"),
                    "{}",
                    letters[0].0.message
                );
                assert_eq!(letters[0].0.source_offset, 1);
                // The export after the bad record is all there.
                let after: Vec<_> = sessions
                    .iter()
                    .filter(|s| s.source_ref.ends_with("@2"))
                    .collect();
                assert_eq!(after.len(), 11);
            }
            "zeek" => {
                let devices: std::collections::BTreeSet<_> =
                    sessions.iter().map(|s| s.device_id.as_str()).collect();
                assert_eq!(
                    devices.into_iter().collect::<Vec<_>>(),
                    ["android-7f3a", "ios-91c2"]
                );
                let beacon = sessions
                    .iter()
                    .find(|s| s.dst_port == 8443 && s.tls.is_some())
                    .context("zeek beacon")?;
                assert_eq!(
                    beacon.tls.as_ref().and_then(|t| t.sni.as_deref()),
                    Some("beacon.wx-telemetry.net")
                );
                assert_eq!(
                    beacon.tls.as_ref().and_then(|t| t.ja3.as_deref()),
                    Some("9f94c4ee15798cf17477425c56fd55e8")
                );
            }
            _ => {
                let v6 = sessions
                    .iter()
                    .find(|s| s.dst_ip.contains(':'))
                    .context("suricata v6")?;
                assert_eq!(v6.dst_ip, "2a00:1450:4001:82b::200a");
                assert_eq!(letters[0].0.reason, DeadLetterReason::Unparseable);
                assert!(
                    letters[0]
                        .0
                        .message
                        .contains("flow event without its flow object"),
                    "{}",
                    letters[0].0.message
                );
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edr_records_become_device_events_and_the_metrics_endpoint_counts_dead_letters(
) -> Result<()> {
    let settings = settings("it-fmt-edr").await?;
    let inputs = vec![
        RawInput::value(raw_fixture("edr/usagestats.csv")).partition(0),
        RawInput::value(r#"{"device_id":"ios-91c2","platform":"ios","app_id":"com.example.mail","kind":"BACKGROUND_REFRESH","event_time":"2026-11-20T10:00:00Z"}"#).partition(0),
        RawInput::value(r#"{"device_id":"ios-91c2","kind":"TELEPORTED","event_time":"2026-11-20T10:00:00Z"}"#).partition(0),
        RawInput::value(r#"{"device_id":"ios-91c2","kind":"DEVICE_LOCKED","event_time":"2026-11-20T10:05:00Z"}"#).partition(0),
    ];
    produce(
        &settings.kafka,
        &topic(&settings, TopicRole::RawEdr),
        &inputs,
    )
    .await?;
    let mut running = Running::start(
        &settings,
        "normalize-edr",
        TopicRole::RawEdr,
        EdrNormalizer::new(Limits::default()),
    )?;
    let registry = running.registry.take().context("registry")?;
    let (bound, server) = offport_kafka::metrics::serve(
        "127.0.0.1:0".parse()?,
        registry,
        Arc::clone(&running.metrics),
        running.shutdown.clone(),
    )
    .await?;

    let usage_rows = pure_outputs(&mut EdrNormalizer::new(Limits::default()), &inputs[..1]);
    let expected = usage_rows + 2;
    let output = topic(&settings, TopicRole::DeviceEvents);
    let (received, letters) = tokio::try_join!(
        read_committed(&settings.kafka, &output, expected),
        dead_letters(&settings, 1)
    )?;
    let events: Vec<DeviceEvent> =
        decode(&settings, &received, |e: &DeviceEvent| &e.device_id).await?;
    assert!(events.iter().any(|e| e.device_id == "android-7f3a"));
    assert_eq!(
        events.iter().filter(|e| e.device_id == "ios-91c2").count(),
        2
    );
    assert_eq!(letters[0].0.source_offset, 2);
    assert_eq!(
        letters[0]
            .1
            .get("offport.errors.reason")
            .map(String::as_str),
        Some("UNPARSEABLE"),
        "the header carries the Avro symbol"
    );
    assert!(
        letters[0].0.message.contains("TELEPORTED"),
        "{}",
        letters[0].0.message
    );

    let scrape = tokio::task::spawn_blocking(move || {
        ureq::get(&format!("http://{bound}/metrics"))
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
    })
    .await??;
    assert!(scrape.contains("offport_records_in_total 4"), "{scrape}");
    assert!(
        scrape.contains(&format!("offport_records_out_total {expected}")),
        "{scrape}"
    );
    assert!(
        scrape.contains("offport_dead_letters_total{reason=\"UNPARSEABLE\"} 1"),
        "{scrape}"
    );
    assert!(scrape.contains("offport_transactions_total"), "{scrape}");
    // Every consumed record's latency, the dead-lettered one too.
    assert!(
        scrape.contains("offport_end_to_end_latency_seconds_count 4"),
        "{scrape}"
    );
    running.stop().await?;
    server.await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mdm_reports_become_device_contexts() -> Result<()> {
    let settings = settings("it-fmt-mdm").await?;
    let mut inputs: Vec<RawInput> = Vec::new();
    for file in [
        "mdm/micromdm-webhook.jsonl",
        "mdm/nanomdm-webhook.jsonl",
        "mdm/amapi-devices.jsonl",
    ] {
        inputs.extend(
            fixture_lines(file)
                .into_iter()
                .map(|l| RawInput::value(l).partition(0)),
        );
    }
    inputs.push(RawInput::value("<plist>not json</plist>").partition(0));
    let bad_offset = inputs.len() as i64 - 1;
    inputs.push(
        RawInput::value(r#"{"device_id":"ios-91c2","platform":"ios","supervised":true,"event_time":1795168800,"inventory_complete":true,"apps":[{"app_id":"com.example.mail","managed":true}]}"#)
            .partition(0),
    );
    produce(
        &settings.kafka,
        &topic(&settings, TopicRole::RawMdm),
        &inputs,
    )
    .await?;
    // What the pure normalizer makes of the same records is what must arrive.
    let expected = pure_outputs(&mut MdmNormalizer::new(Limits::default()), &inputs);
    assert_eq!(expected, 3 + 2 + 3 + 1, "micromdm, nanomdm, amapi, offport");
    let running = Running::start(
        &settings,
        "normalize-mdm",
        TopicRole::RawMdm,
        MdmNormalizer::new(Limits::default()),
    )?;
    let output = topic(&settings, TopicRole::DeviceContexts);
    let (received, letters) = tokio::try_join!(
        read_committed(&settings.kafka, &output, expected),
        dead_letters(&settings, 1)
    )?;
    running.stop().await?;
    let contexts: Vec<DeviceContext> =
        decode(&settings, &received, |c: &DeviceContext| &c.device_id).await?;
    assert!(contexts
        .iter()
        .any(|c| c.udid.as_deref() == Some("00008110-001A2C3E0E01801E")
            && c.supervised == Some(true)));
    assert!(contexts.iter().any(
        |c| c.platform == offport_core::model::Platform::Android && c.supervised == Some(true)
    ));
    assert!(contexts
        .iter()
        .any(|c| c.device_id == "ios-91c2" && c.apps.len() == 1));
    assert_eq!(letters[0].0.source_offset, bad_offset);
    assert_eq!(letters[0].0.reason, DeadLetterReason::UnknownFormat);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_zeek_companions_survive_a_restart_through_the_committed_offsets() -> Result<()> {
    let settings = settings("it-fmt-held").await?;
    let raw = topic(&settings, TopicRole::RawProxy);
    let ssl = fixture_lines("zeek/ssl.log");
    let conn = fixture_lines("zeek/conn.log");
    let beacon_conn = conn
        .iter()
        .find(|l| l.contains("C7bX0aN4HqT2mYd9s"))
        .context("beacon conn")?
        .clone();
    // First run: the beacon's ssl.log line (held, waiting for its conn) and an unrelated conn.
    let first = vec![
        RawInput::value(ssl[0].clone()).partition(0),
        RawInput::value(conn[0].clone()).partition(0),
    ];
    produce(&settings.kafka, &raw, &first).await?;
    let config = settings
        .normalize
        .proxy_config()
        .map_err(anyhow::Error::msg)?;
    let running = Running::start(
        &settings,
        "normalize-proxy",
        TopicRole::RawProxy,
        ProxyNormalizer::configured(config.clone()),
    )?;
    let received =
        read_committed(&settings.kafka, &topic(&settings, TopicRole::Sessions), 1).await?;
    running.stop().await?;
    assert_eq!(received.len(), 1);

    // The group's committed offset stops at the held record; its metadata says how far the
    // partition was processed.
    let group =
        PipelineOptions::for_stage("normalize-proxy", vec![raw.clone()], &settings).group_id;
    let check: StreamConsumer = settings
        .kafka
        .client_config()
        .set("group.id", &group)
        .create()?;
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition(&raw, 0);
    let committed = check.committed_offsets(list, std::time::Duration::from_secs(10))?;
    let element = committed.find_partition(&raw, 0).context("partition 0")?;
    assert_eq!(
        element.offset(),
        rdkafka::Offset::Offset(0),
        "held ssl.log line not committed"
    );
    assert_eq!(element.metadata(), "offport:processed=2");

    // Second run after the restart: the conn arrives and finds its companion again.
    produce(
        &settings.kafka,
        &raw,
        &[RawInput::value(beacon_conn).partition(0)],
    )
    .await?;
    let running = Running::start(
        &settings,
        "normalize-proxy",
        TopicRole::RawProxy,
        ProxyNormalizer::configured(config),
    )?;
    let received =
        read_committed(&settings.kafka, &topic(&settings, TopicRole::Sessions), 2).await?;
    let metrics = running.stop().await?;
    let sessions: Vec<NetworkSession> =
        decode(&settings, &received, |s: &NetworkSession| &s.device_id).await?;
    let beacon = sessions
        .iter()
        .find(|s| s.dst_port == 8443)
        .context("beacon session")?;
    assert_eq!(
        beacon.tls.as_ref().and_then(|t| t.sni.as_deref()),
        Some("beacon.wx-telemetry.net")
    );
    assert_eq!(
        metrics.replayed.get(),
        2,
        "offsets 0-1 read again only to rebuild state"
    );
    assert_eq!(metrics.records_out.get(), 1, "nothing written twice");
    Ok(())
}
