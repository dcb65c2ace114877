//! The joiner's hard memory cap on the real broker: with `stream.max_state_bytes` far below
//! what the devices' timelines take, the joiner evicts devices (counted in
//! `offport_state_evictions_total`, state back under the cap) and still emits every session
//! exactly once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use offport_core::model::EnrichedSession;
use offport_core::schema::Contract;
use offport_kafka::registry::RegistryCodec;
use offport_kafka::stages::JoinerStage;
use offport_kafka::topics::TopicRole;
use offport_tests::scenario::replay_dataset;
use offport_tests::{isolated_settings, produce, read_until_quiet, Background, RawInput};

async fn produce_all<T: serde::Serialize>(
    settings: &offport_kafka::settings::Settings,
    codec: &RegistryCodec,
    role: TopicRole,
    contract: Contract,
    records: Vec<(String, T)>,
) -> Result<()> {
    let topic = role.spec(&settings.topics).name;
    let mut inputs = Vec::new();
    for (device, record) in records {
        inputs.push(RawInput {
            key: Some(device.into_bytes()),
            ..RawInput::value(codec.encode_value(&topic, contract, &record).await?)
        });
    }
    produce(&settings.kafka, &topic, &inputs).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_cap_devices_are_evicted_and_no_session_is_lost() -> Result<()> {
    let mut settings = isolated_settings("memory-cap", 2, 200, &TopicRole::ALL).await?;
    settings.stream.idle_timeout_ms = 1_000;
    settings.stream.allowed_lateness_ms = 5_000;
    let cap = 10_000;
    settings.stream.max_state_bytes = cap;
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64
        - 3 * 3_600_000;
    let (sessions, events, contexts) = replay_dataset(t0, 60, 6);
    let codec = RegistryCodec::new(&settings.registry)?;
    produce_all(
        &settings,
        &codec,
        TopicRole::DeviceContexts,
        Contract::DeviceContext,
        contexts
            .into_iter()
            .map(|c| (c.device_id.clone(), c))
            .collect(),
    )
    .await?;
    produce_all(
        &settings,
        &codec,
        TopicRole::DeviceEvents,
        Contract::DeviceEvent,
        events
            .into_iter()
            .map(|e| (e.device_id.clone(), e))
            .collect(),
    )
    .await?;
    let joiner = Background::stateful(&settings, JoinerStage::new(&settings))?;
    // The cap is checked with the state gauges, every 5 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while joiner.metrics.evictions.get() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing evicted; state {} bytes",
            joiner.metrics.state_bytes.get()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        joiner.metrics.state_bytes.get() <= cap as i64,
        "state {} bytes over the cap {cap}",
        joiner.metrics.state_bytes.get()
    );
    produce_all(
        &settings,
        &codec,
        TopicRole::Sessions,
        Contract::NetworkSession,
        sessions
            .iter()
            .map(|s| (s.device_id.clone(), s.clone()))
            .collect(),
    )
    .await?;
    let received = read_until_quiet(
        &settings.kafka,
        &TopicRole::EnrichedSessions.spec(&settings.topics).name,
        sessions.len(),
        Duration::from_secs(5),
        Duration::from_secs(120),
    )
    .await?;
    let metrics = joiner.stop().await?;
    println!(
        "evicted {} devices; {} sessions out",
        metrics.evictions.get(),
        received.len()
    );
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, value, _) in &received {
        let enriched: EnrichedSession = codec.decode(value).await?;
        *counts.entry(enriched.session.session_id).or_default() += 1;
    }
    assert_eq!(counts.len(), sessions.len());
    assert!(counts.values().all(|n| *n == 1), "duplicates");
    Ok(())
}
