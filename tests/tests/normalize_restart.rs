//! A normalizer killed with SIGKILL in the middle of its work and started again yields every
//! input record's output exactly once (read_committed): no duplicate, no gap.
//!
//! The normalizer runs in a child process so it can really be killed: this test binary runs
//! itself again with `OFFPORT_TEST_CHILD` set, and the `child_normalizer` entry below then runs
//! the pipeline until it is killed.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use offport_core::model::NetworkSession;
use offport_core::normalize::proxy::{ProxyFormat, ProxyNormalizer};
use offport_core::normalize::Limits;
use offport_kafka::metrics::PipelineMetrics;
use offport_kafka::registry::RegistryCodec;
use offport_kafka::runtime::{run_normalizer, PipelineOptions};
use offport_kafka::settings::Settings;
use offport_kafka::shutdown::Shutdown;
use offport_kafka::topics::TopicRole;
use offport_tests::{committed_consumer, isolated_settings};
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

const CHILD_ENV: &str = "OFFPORT_TEST_CHILD";
const RECORDS: usize = 3_000;

/// Not a test on its own: the child process's entry point (returns at once in a normal run).
#[test]
fn child_normalizer() {
    let Ok(settings_json) = std::env::var(CHILD_ENV) else {
        return;
    };
    let settings: Settings = serde_json::from_str(&settings_json).expect("settings from parent");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let codec = Arc::new(RegistryCodec::new(&settings.registry).expect("codec"));
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = PipelineMetrics::register(&mut registry);
        let raw = TopicRole::RawProxy.spec(&settings.topics).name;
        let options = PipelineOptions::for_stage("normalize-proxy", vec![raw], &settings);
        let normalizer = ProxyNormalizer::new(ProxyFormat::Auto, Limits::default());
        run_normalizer(
            &settings,
            options,
            normalizer,
            codec,
            metrics,
            Shutdown::new(),
        )
        .await
        .expect("pipeline");
    });
}

fn spawn_child(settings: &Settings) -> Result<Child> {
    Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "child_normalizer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, serde_json::to_string(settings)?)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the child normalizer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normalizer_killed_mid_run_and_restarted_loses_and_duplicates_nothing() -> Result<()> {
    if std::env::var(CHILD_ENV).is_ok() {
        return Ok(());
    }
    let roles = [
        TopicRole::RawProxy,
        TopicRole::Sessions,
        TopicRole::DeadLetter,
    ];
    let settings = isolated_settings("it-restart", 2, 50, &roles).await?;
    let raw_topic = TopicRole::RawProxy.spec(&settings.topics).name;
    let sessions_topic = TopicRole::Sessions.spec(&settings.topics).name;

    let producer: FutureProducer = settings.kafka.client_config().create()?;
    let mut expected = BTreeSet::new();
    for i in 0..RECORDS {
        let device = format!("device-{}", i % 37);
        let json = format!(
            r#"{{"device_id":"{device}","session_id":"s-{i}","dst_ip":"203.0.113.{}","dst_port":8443,"sensor_protocol":"tls","start_time":1795168800000}}"#,
            i % 250
        );
        producer
            .send(
                FutureRecord::to(&raw_topic)
                    .payload(json.as_bytes())
                    .key(device.as_bytes()),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
        expected.insert(format!("s-{i}"));
    }

    // First run: kill it once some output is committed but before it can be done.
    let started = std::time::Instant::now();
    let mut child = spawn_child(&settings)?;
    let reader = committed_consumer(&settings.kafka, &sessions_topic)?;
    let mut seen: Vec<String> = Vec::new();
    let codec = RegistryCodec::new(&settings.registry)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while seen.len() < 200 {
        read_some(&reader, &codec, &mut seen, deadline).await?;
    }
    child.kill().context("SIGKILL")?;
    child.wait()?;
    let at_kill = seen.len();
    eprintln!(
        "killed the normalizer after {at_kill} committed outputs of {RECORDS} ({:?})",
        started.elapsed()
    );
    if at_kill >= RECORDS {
        bail!("the first run finished before it could be killed; raise RECORDS");
    }

    // Second run: the same instance id (its restart), from the committed offsets.
    let mut child = spawn_child(&settings)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let outcome = async {
        while seen.len() < RECORDS {
            read_some(&reader, &codec, &mut seen, deadline).await?;
        }
        eprintln!(
            "all {RECORDS} outputs after the restart ({:?})",
            started.elapsed()
        );
        // Anything beyond RECORDS would be a duplicate; give it time to show.
        let quiet = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < quiet {
            if let Ok(Ok(extra)) =
                tokio::time::timeout(Duration::from_millis(500), reader.recv()).await
            {
                if offport_kafka::progress::is_marker(&extra) {
                    continue;
                }
                let session: NetworkSession =
                    codec.decode(extra.payload().unwrap_or_default()).await?;
                seen.push(session.session_id);
            }
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    child.kill().ok();
    child.wait().ok();
    outcome?;

    let unique_ids: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(
        seen.len(),
        RECORDS,
        "duplicates: {} outputs for {RECORDS} inputs",
        seen.len()
    );
    assert_eq!(unique_ids, expected, "gaps or strangers in the output");
    Ok(())
}

async fn read_some(
    reader: &StreamConsumer,
    codec: &RegistryCodec,
    seen: &mut Vec<String>,
    deadline: tokio::time::Instant,
) -> Result<()> {
    let message = match tokio::time::timeout_at(deadline, reader.recv()).await {
        Ok(message) => message?,
        Err(_) => bail!("timed out with {} outputs", seen.len()),
    };
    // The normalizer's progress markers for the joiner ride on its output topic.
    if offport_kafka::progress::is_marker(&message) {
        return Ok(());
    }
    let session: NetworkSession = codec.decode(message.payload().unwrap_or_default()).await?;
    seen.push(session.session_id);
    Ok(())
}
