//! Transactions the real broker refuses: the sessions topic's `max.message.bytes` is set below the
//! size of one record, so every produced batch is refused (MESSAGE_TOO_LARGE) and each
//! transaction fails and is aborted, while the loop has already read and processed the next
//! batch (it overlaps a batch's transaction with the next batch). Once the limit is raised, every
//! session comes out exactly once and in input order (read_committed): nothing of the aborted
//! transactions is visible, nothing processed during them was produced, nothing is lost.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use offport_core::examples;
use offport_core::model::NetworkSession;
use offport_core::normalize::proxy::{ProxyFormat, ProxyNormalizer};
use offport_core::normalize::Limits;
use offport_kafka::registry::RegistryCodec;
use offport_kafka::topics::TopicRole;
use offport_tests::{isolated_settings, produce, read_committed, Background, RawInput};
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

async fn set_max_message_bytes(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    bytes: usize,
) -> Result<()> {
    let value = bytes.to_string();
    let change = AlterConfig::new(ResourceSpecifier::Topic(topic)).set("max.message.bytes", &value);
    let results = admin.alter_configs(&[change], &AdminOptions::new()).await?;
    for result in results {
        if let Err((resource, code)) = result {
            anyhow::bail!("altering {resource:?}: {code}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_transactions_are_aborted_and_nothing_is_lost_or_duplicated() -> Result<()> {
    let roles = [
        TopicRole::RawProxy,
        TopicRole::Sessions,
        TopicRole::DeadLetter,
    ];
    // One partition each, so the output order can be held against the input order.
    let settings = isolated_settings("it-abort", 1, 50, &roles).await?;
    let raw_topic = TopicRole::RawProxy.spec(&settings.topics).name;
    let sessions_topic = TopicRole::Sessions.spec(&settings.topics).name;
    let admin: AdminClient<DefaultClientContext> = settings.kafka.client_config().create()?;
    set_max_message_bytes(&admin, &sessions_topic, 100).await?;

    let count = 500;
    let inputs: Vec<RawInput> = (0..count)
        .map(|i| RawInput::value(examples::session_json(i)))
        .collect();
    produce(&settings.kafka, &raw_topic, &inputs).await?;

    let stage = Background::normalizer(
        &settings,
        "normalize-proxy",
        TopicRole::RawProxy,
        ProxyNormalizer::new(ProxyFormat::Auto, Limits::default()),
    )?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while stage.metrics.aborts.get() < 3 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the broker refused no transaction ({} aborts, {} commits)",
            stage.metrics.aborts.get(),
            stage.metrics.transactions.get()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let aborts = stage.metrics.aborts.get();
    ensure!(
        stage.metrics.transactions.get() == 0 && stage.metrics.records_committed.get() == 0,
        "a transaction committed while the topic refused every record"
    );

    set_max_message_bytes(&admin, &sessions_topic, 1_048_588).await?;
    let received = read_committed(&settings.kafka, &sessions_topic, count).await?;
    let metrics = stage.stop().await?;
    println!(
        "aborted transactions while refused: {aborts}; after: {} aborts, {} commits",
        metrics.aborts.get(),
        metrics.transactions.get()
    );

    let codec = Arc::new(RegistryCodec::new(&settings.registry)?);
    let mut starts = Vec::with_capacity(count);
    for (_, _, value, _) in &received {
        let session: NetworkSession = codec.decode(value).await?;
        starts.push(session.start_time);
    }
    // examples::session_json(i) starts 37 ms after record i - 1: one of each, in order.
    let expected: Vec<i64> = (0..count)
        .map(|i| 1_795_168_800_000 + i as i64 * 37)
        .collect();
    assert_eq!(
        starts, expected,
        "sessions lost, duplicated or out of order"
    );
    // Read more than once (every abort rewinds), counted and committed once each.
    assert!(metrics.aborts.get() > 0);
    assert_eq!(metrics.records_committed.get(), count as u64);
    assert_eq!(metrics.records_in.get(), count as u64);
    Ok(())
}
