//! normalize-proxy on the real broker and registry: raw offport JSON session records in, Avro
//! `NetworkSession` records out (decoded through the registry), keyed and partitioned by device
//! as a Java client would; bad records in the dead-letter topic with their reason, original bytes
//! and source position, and nothing after them lost.

// Fixed-size test data: indices are in range by construction.
#![allow(clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use offport_core::model::{AppProtocol, DeadLetter, DeadLetterReason, NetworkSession};
use offport_core::normalize::proxy::{ProxyFormat, ProxyNormalizer};
use offport_core::normalize::Limits;
use offport_kafka::metrics::PipelineMetrics;
use offport_kafka::registry::RegistryCodec;
use offport_kafka::runtime::{run_normalizer, PipelineOptions};
use offport_kafka::shutdown::Shutdown;
use offport_kafka::topics::TopicRole;
use offport_tests::{isolated_settings, java_partition, read_committed};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

fn session_json(device: &str, port: u16, ip: &str) -> String {
    format!(
        r#"{{"device_id":"{device}","platform":"ANDROID","app_id":"com.example.app","transport":"TCP",
        "dst_ip":"{ip}","dst_port":{port},"sensor_protocol":"tls","sni":"api.example.com",
        "bytes_out":500,"bytes_in":4000,"start_time":"2026-11-20T10:00:00Z","duration_ms":1200}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_json_sessions_come_out_as_avro_keyed_by_device_and_bad_ones_are_dead_lettered(
) -> Result<()> {
    let test_started = std::time::Instant::now();
    let partitions = 3;
    let roles = [
        TopicRole::RawProxy,
        TopicRole::Sessions,
        TopicRole::DeadLetter,
    ];
    let settings = isolated_settings("it-normproxy", partitions, 3, &roles).await?;
    let raw_topic = TopicRole::RawProxy.spec(&settings.topics).name;
    let sessions_topic = TopicRole::Sessions.spec(&settings.topics).name;
    let dead_topic = TopicRole::DeadLetter.spec(&settings.topics).name;

    // Everything goes to raw partition 0, in this order: good, good, bad, good (key gives the
    // device), impossible, good.
    let raw: Vec<(Option<&str>, String)> = vec![
        (None, session_json("device-a", 8443, "203.0.113.10")),
        (None, session_json("device-b", 443, "2001:db8::1")),
        (None, "this is not json {".to_string()),
        (
            Some("device-c"),
            r#"{"dst_ip":"198.51.100.53","dst_port":5300,"transport":"UDP","sensor_protocol":"dns","dns_qname":"example.org","start_time":1795168800}"#
                .to_string(),
        ),
        (None, session_json("device-a", 0, "203.0.113.10").replace("\"dst_port\":0", "\"dst_port\":70000")),
        (None, session_json("device-d", 5228, "142.250.1.188")),
    ];
    let producer: FutureProducer = settings.kafka.client_config().create()?;
    for (key, value) in &raw {
        let mut record = FutureRecord::to(&raw_topic)
            .payload(value.as_bytes())
            .partition(0);
        if let Some(key) = key {
            record = record.key(key.as_bytes());
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)?;
    }

    let codec = Arc::new(RegistryCodec::new(&settings.registry)?);
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = PipelineMetrics::register(&mut registry);
    let shutdown = Shutdown::new();
    let options = PipelineOptions::for_stage("normalize-proxy", vec![raw_topic.clone()], &settings);
    let group = options.group_id.clone();
    let task = {
        let (settings, codec, metrics, shutdown) = (
            settings.clone(),
            Arc::clone(&codec),
            Arc::clone(&metrics),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            let normalizer = ProxyNormalizer::new(ProxyFormat::Auto, Limits::default());
            run_normalizer(&settings, options, normalizer, codec, metrics, shutdown).await
        })
    };

    let sessions = read_committed(&settings.kafka, &sessions_topic, 4).await?;
    let letters = read_committed(&settings.kafka, &dead_topic, 2).await?;
    shutdown.trigger();
    task.await.context("pipeline task")??;

    // Sessions: decoded through the registry, keyed by device, partitioned like Java's client.
    let mut by_device = BTreeMap::new();
    for (key, partition, value, _) in &sessions {
        let session: NetworkSession = codec.decode(value).await?;
        let key = key.clone().context("session without key")?;
        assert_eq!(key, session.device_id.as_bytes());
        assert_eq!(
            *partition,
            java_partition(&key, partitions),
            "{}",
            session.device_id
        );
        by_device.insert(session.device_id.clone(), session);
    }
    assert_eq!(
        by_device.keys().map(String::as_str).collect::<Vec<_>>(),
        ["device-a", "device-b", "device-c", "device-d"]
    );
    assert_eq!(by_device["device-a"].dst_port, 8443);
    assert_eq!(by_device["device-a"].protocol, AppProtocol::Tls);
    assert_eq!(by_device["device-b"].dst_ip, "2001:db8::1");
    assert_eq!(by_device["device-c"].protocol, AppProtocol::Dns);
    assert_eq!(
        by_device["device-c"].start_time, 1_795_168_800_000,
        "epoch seconds"
    );
    assert_eq!(by_device["device-a"].source_ref, format!("{raw_topic}/0@0"));

    // Dead letters: reason, message, original bytes, source position, Connect-style headers.
    let mut decoded = Vec::new();
    for (_, _, value, headers) in &letters {
        let letter: DeadLetter = codec.decode(value).await?;
        assert_eq!(
            headers.get("offport.errors.offset").map(String::as_str),
            Some(letter.source_offset.to_string().as_str())
        );
        assert_eq!(
            headers.get("offport.errors.stage").map(String::as_str),
            Some("normalize-proxy")
        );
        decoded.push(letter);
    }
    decoded.sort_by_key(|l| l.source_offset);
    assert_eq!(decoded[0].source_offset, 2);
    assert_eq!(decoded[0].reason, DeadLetterReason::UnknownFormat);
    assert_eq!(
        decoded[0].original_value.as_deref(),
        Some(raw[2].1.as_bytes())
    );
    assert_eq!(decoded[0].source_topic, raw_topic);
    assert_eq!(decoded[1].source_offset, 4);
    assert_eq!(decoded[1].reason, DeadLetterReason::ImpossibleValue);
    assert!(
        decoded[1].message.contains("dst_port=70000"),
        "{}",
        decoded[1].message
    );

    // The group's committed offset covers every raw record.
    let check: StreamConsumer = settings
        .kafka
        .client_config()
        .set("group.id", &group)
        .create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(&raw_topic, 0);
    let committed = check.committed_offsets(tpl, Duration::from_secs(10))?;
    let offset = committed.find_partition(&raw_topic, 0).map(|p| p.offset());
    assert_eq!(offset, Some(rdkafka::Offset::Offset(raw.len() as i64)));

    // Metrics counted what happened.
    assert_eq!(metrics.records_in.get(), raw.len() as u64);
    assert_eq!(metrics.records_out.get(), 4);
    assert_eq!(metrics.records_committed.get(), raw.len() as u64);
    // The loop noted when its first record came (the benches time a stage from it).
    let since = metrics.since_first_read().expect("first record noted");
    assert!(since <= test_started.elapsed(), "{since:?}");
    Ok(())
}
