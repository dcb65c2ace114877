//! The joiner's output does not depend on how its input topics interleave when it reads them:
//! an input with records not read yet holds the watermark back, so its records are not late.
//!
//! A replay of complete topics on the real broker, read with a small fetch per partition so
//! that the sessions topic (few records, far apart in event time) races ahead of the EDR topic
//! (five lock changes per session gap, each record bulky): every session must come out enriched
//! exactly as the join does with all records in event-time order.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use offport_core::baseline::BaselineSet;
use offport_core::examples;
use offport_core::join::JoinInput;
use offport_core::model::{
    DeviceEvent, DeviceEventKind, EnrichedSession, LockState, NetworkSession,
};
use offport_core::schema::Contract;
use offport_kafka::registry::RegistryCodec;
use offport_kafka::runtime::stateful::StatefulStage;
use offport_kafka::stages::JoinerStage;
use offport_kafka::topics::TopicRole;
use offport_tests::{isolated_settings, produce_avro, read_committed, Background};

const DEVICES: usize = 6;
const SESSIONS: i64 = 30;

fn dataset(t0: i64) -> (Vec<NetworkSession>, Vec<DeviceEvent>) {
    let mut sessions = Vec::new();
    let mut events = Vec::new();
    for d in 0..DEVICES {
        let device = format!("interleave-{d}");
        for s in 0..SESSIONS {
            sessions.push(NetworkSession {
                session_id: format!("{device}-s{s:02}"),
                device_id: device.clone(),
                app_id: Some("com.example.app".to_string()),
                start_time: t0 + s * 10_000,
                duration_ms: Some(1_500),
                ..examples::network_session()
            });
        }
        // The lock changes every 2 s, so each session's lock state depends on the events
        // around it.
        for e in 0..SESSIONS * 5 {
            let at = t0 - 1_000 + e * 2_000 + (d as i64) * 300;
            let kind = if (e / 3) % 2 == 0 {
                DeviceEventKind::DeviceLocked
            } else {
                DeviceEventKind::DeviceUnlocked
            };
            events.push(DeviceEvent {
                event_id: format!("{device}-e{e:03}"),
                device_id: device.clone(),
                app_id: None,
                kind,
                network_api: None,
                // Bulky, so that a fetch holds one or two of them against several sessions.
                detail: Some("x".repeat(1_500)),
                event_time: at,
                ingest_time: at,
                ..examples::device_event()
            });
        }
    }
    (sessions, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_joiners_output_does_not_depend_on_how_its_inputs_interleave() -> Result<()> {
    let mut settings = isolated_settings("joiner-interleaving", 3, 50, &TopicRole::ALL).await?;
    settings.stream.stop_at_end = true;
    settings.stream.idle_timeout_ms = 3_600_000;
    // A few records per partition per fetch: the topics advance by bytes, not event time.
    settings
        .kafka
        .properties
        .insert("max.partition.fetch.bytes".into(), "1024".into());
    let codec = RegistryCodec::new(&settings.registry)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let t0 = i64::try_from(now.as_millis())? - 6 * 3_600_000;
    let (sessions, events) = dataset(t0);

    // One record per producer batch, so that a fetch can stop between any two.
    let mut producing = settings.kafka.clone();
    producing
        .properties
        .insert("batch.num.messages".into(), "1".into());
    let topic = |role: TopicRole| role.spec(&settings.topics).name;
    produce_avro(
        &producing,
        &codec,
        &topic(TopicRole::Sessions),
        Contract::NetworkSession,
        sessions.iter().map(|s| (s.device_id.as_str(), s)),
    )
    .await?;
    produce_avro(
        &producing,
        &codec,
        &topic(TopicRole::DeviceEvents),
        Contract::DeviceEvent,
        events.iter().map(|e| (e.device_id.as_str(), e)),
    )
    .await?;

    // What the join gives with every record in event-time order (the stage's own task
    // configuration, one task per device: devices do not share state).
    let stage = JoinerStage::new(&settings);
    let baselines = std::sync::Arc::new(BaselineSet::with_defaults()?);
    let mut merged: Vec<JoinInput> = sessions
        .iter()
        .cloned()
        .map(JoinInput::Session)
        .chain(events.iter().cloned().map(JoinInput::Event))
        .collect();
    merged.sort_by_key(|input| (input.event_time(), input.input()));
    let mut expected: BTreeMap<String, EnrichedSession> = BTreeMap::new();
    let mut tasks = BTreeMap::new();
    for input in merged {
        let device = input.device_id().to_string();
        let task = tasks
            .entry(device)
            .or_insert_with(|| stage.new_task(&baselines));
        for session in task.push(input) {
            expected.insert(session.session.session_id.clone(), session);
        }
    }
    for task in tasks.values_mut() {
        for session in task.flush() {
            expected.insert(session.session.session_id.clone(), session);
        }
    }
    assert_eq!(expected.len(), sessions.len());
    let locked = expected
        .values()
        .filter(|e| e.lock_state == LockState::Locked)
        .count();
    assert!(
        locked > 0 && locked < expected.len(),
        "the lock state varies ({locked} locked)"
    );

    let joiner = Background::stateful(&settings, JoinerStage::new(&settings))?;
    tokio::time::timeout(Duration::from_secs(180), joiner.task).await???;
    assert_eq!(
        joiner.metrics.records_in.get() as usize,
        sessions.len() + events.len()
    );
    let received = read_committed(
        &settings.kafka,
        &topic(TopicRole::EnrichedSessions),
        sessions.len(),
    )
    .await?;
    let mut got: BTreeMap<String, EnrichedSession> = BTreeMap::new();
    for (_, _, value, _) in received {
        let session: EnrichedSession = codec.decode(&value).await?;
        got.insert(session.session.session_id.clone(), session);
    }
    let differing: Vec<&String> = expected
        .iter()
        .filter(|(id, e)| got.get(*id) != Some(*e))
        .map(|(id, _)| id)
        .collect();
    assert!(
        differing.is_empty(),
        "{} of {} sessions enriched differently from the in-order join, e.g. {:?}: expected {:?}, got {:?}",
        differing.len(),
        expected.len(),
        differing.first(),
        differing.first().map(|id| expected[*id].lock_state),
        differing.first().and_then(|id| got.get(*id)).map(|e| e.lock_state),
    );
    Ok(())
}
