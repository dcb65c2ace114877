//! Two joiners in one consumer group; one leaves in the middle of the input. The enriched
//! output is still complete and unique: every session exactly once (read_committed), whichever
//! instance emitted it, the survivor taking over the leaver's tasks from their changelogs.

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
use offport_kafka::settings::Settings;
use offport_kafka::stages::JoinerStage;
use offport_kafka::topics::TopicRole;
use offport_tests::scenario::replay_dataset;
use offport_tests::{isolated_settings, produce, read_until_quiet, unique, Background, RawInput};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_joiners_one_leaving_mid_run_emit_every_session_exactly_once() -> Result<()> {
    let mut settings = isolated_settings("rebalance", 6, 40, &TopicRole::ALL).await?;
    settings.stream.allowed_lateness_ms = 5_000;
    settings.stream.idle_timeout_ms = 1_000;
    // Static members do not leave the group on close; a short session timeout hands the
    // leaver's partitions over in seconds (6 s is the broker's minimum).
    settings
        .kafka
        .properties
        .insert("session.timeout.ms".to_string(), "6000".to_string());
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64
        - 4 * 3_600_000;
    let (sessions, events, contexts) = replay_dataset(t0, 60, 30);
    let codec = RegistryCodec::new(&settings.registry)?;
    let keyed = |device: &str| device.to_string();
    produce_encoded(
        &settings,
        &codec,
        TopicRole::DeviceContexts,
        Contract::DeviceContext,
        &contexts
            .iter()
            .map(|c| (keyed(&c.device_id), c.clone()))
            .collect::<Vec<_>>(),
    )
    .await?;
    produce_encoded(
        &settings,
        &codec,
        TopicRole::DeviceEvents,
        Contract::DeviceEvent,
        &events
            .iter()
            .map(|e| (keyed(&e.device_id), e.clone()))
            .collect::<Vec<_>>(),
    )
    .await?;

    let first = {
        let mut own = settings.clone();
        own.pipeline.instance_id = Some(unique("joiner-a"));
        Background::stateful(&own, JoinerStage::new(&own))?
    };
    let second = {
        let mut own = settings.clone();
        own.pipeline.instance_id = Some(unique("joiner-b"));
        Background::stateful(&own, JoinerStage::new(&own))?
    };
    // Both must own tasks before the sessions come. (Not "both consumed something": the first
    // may have read every event before the second joined, leaving it nothing to read.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while first.metrics.tasks.get() == 0 || second.metrics.tasks.get() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "both joiners should get partitions"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let enriched = TopicRole::EnrichedSessions.spec(&settings.topics).name;
    let (half, rest) = sessions.split_at(sessions.len() / 2);
    produce_encoded(
        &settings,
        &codec,
        TopicRole::Sessions,
        Contract::NetworkSession,
        &half
            .iter()
            .map(|s| (keyed(&s.device_id), s.clone()))
            .collect::<Vec<_>>(),
    )
    .await?;
    // Let both emit some, then one leaves while the rest arrives.
    let reader = offport_tests::committed_consumer(&settings.kafka, &enriched)?;
    let mut seen = 0;
    while seen < half.len() / 3 {
        tokio::time::timeout(Duration::from_secs(60), reader.recv()).await??;
        seen += 1;
    }
    drop(reader);
    let leaver_out = first.metrics.records_out.get();
    produce_encoded(
        &settings,
        &codec,
        TopicRole::Sessions,
        Contract::NetworkSession,
        &rest
            .iter()
            .map(|s| (keyed(&s.device_id), s.clone()))
            .collect::<Vec<_>>(),
    )
    .await?;
    // Tasks the survivor restored before the other left: its own, at its start.
    let restored_before = second.metrics.restores.get();
    let first_metrics = first.stop().await?;
    println!(
        "the leaver emitted {} sessions ({} when it was asked to leave); the survivor so far {}",
        first_metrics.records_out.get(),
        leaver_out,
        second.metrics.records_out.get()
    );

    let received = read_until_quiet(
        &settings.kafka,
        &enriched,
        sessions.len(),
        Duration::from_secs(8),
        Duration::from_secs(180),
    )
    .await?;
    let survivor = second.stop().await?;
    println!(
        "survivor: {} sessions out, {} tasks restored from the changelog",
        survivor.records_out.get(),
        survivor.restores.get()
    );
    assert!(
        first_metrics.records_out.get() > 0,
        "the leaver emitted nothing"
    );
    assert!(
        survivor.restores.get() > restored_before,
        "the survivor restored no task after the other left ({restored_before} before)"
    );

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (key, _, value, _) in &received {
        let session: EnrichedSession = codec.decode(value).await?;
        assert_eq!(key.as_deref(), Some(session.session.device_id.as_bytes()));
        *counts.entry(session.session.session_id).or_default() += 1;
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "duplicated sessions: {duplicated:?}");
    let missing: Vec<_> = sessions
        .iter()
        .filter(|s| !counts.contains_key(&s.session_id))
        .map(|s| s.session_id.clone())
        .collect();
    assert!(missing.is_empty(), "missing sessions: {missing:?}");
    assert_eq!(counts.len(), sessions.len());
    Ok(())
}
