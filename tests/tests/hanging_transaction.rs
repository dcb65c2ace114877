//! A transaction left open on an input partition, on the real broker: another producer writes a
//! record in a transaction and neither commits nor aborts it. The normalizer reading the
//! partition waits at its last stable offset, as every read_committed consumer must; it counts the
//! records behind it and, once the offset has stood still for
//! `pipeline.hanging_transaction_after_ms`, reports the partition as hanging. When the
//! transaction commits, the stage reads on and the gauges go back to 0.
//!
//! The broker's own way of leaving a transaction hanging (a restart that skips markers) cannot
//! be provoked on demand; an open transaction is the same state as its readers see it.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::time::Duration;

use anyhow::{ensure, Result};
use offport_core::examples;
use offport_core::normalize::proxy::{ProxyFormat, ProxyNormalizer};
use offport_core::normalize::Limits;
use offport_kafka::topics::TopicRole;
use offport_tests::{isolated_settings, produce, unique, Background, RawInput};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

async fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    while !ok() {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{what} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_on_an_input_partition_is_reported_as_hanging() -> Result<()> {
    let roles = [
        TopicRole::RawProxy,
        TopicRole::Sessions,
        TopicRole::DeadLetter,
    ];
    let mut settings = isolated_settings("it-hanging", 1, 50, &roles).await?;
    settings.pipeline.hanging_transaction_after_ms = 3_000;
    let raw_topic = TopicRole::RawProxy.spec(&settings.topics).name;

    // Two records read at once; then one inside a transaction left open, and one after it.
    let before: Vec<RawInput> = (0..2)
        .map(|i| RawInput::value(examples::session_json(i)))
        .collect();
    produce(&settings.kafka, &raw_topic, &before).await?;
    let open: ThreadedProducer<DefaultProducerContext> = settings
        .kafka
        .client_config()
        .set("transactional.id", unique("it-hanging-open"))
        .set("transaction.timeout.ms", "120000")
        .create()?;
    tokio::task::block_in_place(|| -> Result<()> {
        open.init_transactions(Duration::from_secs(30))?;
        open.begin_transaction()?;
        let value = examples::session_json(2);
        open.send(BaseRecord::<(), _>::to(&raw_topic).payload(&value))
            .map_err(|(e, _)| e)?;
        open.flush(Duration::from_secs(30))?;
        Ok(())
    })?;
    produce(
        &settings.kafka,
        &raw_topic,
        &[RawInput::value(examples::session_json(3))],
    )
    .await?;

    let stage = Background::normalizer(
        &settings,
        "normalize-proxy",
        TopicRole::RawProxy,
        ProxyNormalizer::new(ProxyFormat::Auto, Limits::default()),
    )?;
    let metrics = &stage.metrics;
    wait_for(
        "the two records before the transaction committed",
        Duration::from_secs(60),
        || metrics.records_committed.get() >= 2,
    )
    .await?;
    // The open transaction's record and the one after it: behind the last stable offset.
    wait_for(
        "records counted behind the last stable offset",
        Duration::from_secs(30),
        || metrics.unstable.get() == 2,
    )
    .await?;
    ensure!(
        metrics.hanging.get() == 0,
        "reported hanging before pipeline.hanging_transaction_after_ms"
    );
    wait_for(
        "the partition reported hanging",
        Duration::from_secs(30),
        || metrics.hanging.get() == 1,
    )
    .await?;
    ensure!(
        metrics.records_committed.get() == 2,
        "read past a transaction still open"
    );

    tokio::task::block_in_place(|| open.commit_transaction(Duration::from_secs(30)))?;
    wait_for(
        "the rest read once the transaction committed",
        Duration::from_secs(60),
        || metrics.records_committed.get() == 4,
    )
    .await?;
    wait_for("the gauges back at 0", Duration::from_secs(30), || {
        metrics.hanging.get() == 0 && metrics.unstable.get() == 0
    })
    .await?;
    stage.shutdown.trigger();
    stage.task.await??;
    Ok(())
}
