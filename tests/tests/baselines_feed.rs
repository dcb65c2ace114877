//! The baselines topic as the stateful stages read it, on the real broker and registry:
//!
//! - a record the feed meets while the registry cannot be reached is kept and applied once the
//!   registry answers, before anything newer (it was consumed and lost before);
//! - invalid baseline records published while a stage runs are dead-lettered by the stage with
//!   reason, message and original bytes, the previous version stays in force, and a valid
//!   version published after them is still applied live.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::time::{Duration, Instant};

use anyhow::Result;
use offport_core::baseline::parse_documents;
use offport_core::examples;
use offport_core::model::{Baseline, BaselineScope, DeadLetterReason, ScopeKind};
use offport_core::schema::Contract;
use offport_kafka::baselines::{publish, version_key, BaselineFeed, UNREACHABLE_RETRY};
use offport_kafka::registry::RegistryCodec;
use offport_kafka::stages::ScorerStage;
use offport_kafka::topics::TopicRole;
use offport_tests::{dead_letters, isolated_settings, produce, Background, RawInput};

const APP: &str = "com.example.vendor";

/// A version of the test app's baseline allowing MQTT on `port`.
fn version(version: &str, effective: &str, port: u16) -> Baseline {
    parse_documents(&format!(
        "scope: {{kind: APP, value: {APP}}}\nversion: {version}\neffective_time: {effective}\nallowed_protocol_ports:\n  - {{protocol: MQTT, transport: TCP, ports: [{{first: {port}, last: {port}}}]}}\n"
    ))
    .unwrap()
    .remove(0)
}

fn scope() -> BaselineScope {
    BaselineScope {
        kind: ScopeKind::App,
        value: Some(APP.into()),
    }
}

/// The version of the test app's scope in force now, if any.
fn in_force(feed: &BaselineFeed) -> Option<String> {
    feed.set()
        .in_force(&scope(), i64::MAX)
        .map(|b| b.version.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_baseline_met_while_the_registry_is_unreachable_is_applied_once_it_answers() -> Result<()>
{
    let settings =
        isolated_settings("baselines-unreachable", 1, 100, &[TopicRole::Baselines]).await?;
    let codec = RegistryCodec::new(&settings.registry)?;
    let (mut feed, _) = BaselineFeed::open(&settings, &codec, Duration::from_secs(30)).await?;
    assert_eq!(in_force(&feed), None);

    let v1 = version("v1", "2026-01-01T00:00:00Z", 8884);
    publish(&settings, &codec, &[(version_key(&v1), Some(v1))]).await?;

    // A codec of its own, that has not seen the document's writer schema, pointed at a port
    // nothing listens on: fetching the schema fails as when the registry is down.
    let mut unreachable = settings.registry.clone();
    unreachable.url = "http://127.0.0.1:1/apis/ccompat/v7".to_string();
    unreachable.timeout_ms = 2_000;
    let unreachable = RegistryCodec::new(&unreachable)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !feed.has_unapplied() {
        anyhow::ensure!(Instant::now() < deadline, "the version never arrived");
        let (changed, rejected) = feed.poll(&unreachable).await;
        assert!(!changed && rejected.is_empty());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        in_force(&feed),
        None,
        "not applied while the registry is down"
    );
    // Before the retry delay the record waits, even with the registry back.
    let (changed, _) = feed.poll(&codec).await;
    assert!(!changed && feed.has_unapplied());
    tokio::time::sleep(UNREACHABLE_RETRY).await;
    let (changed, rejected) = feed.poll(&codec).await;
    assert!(changed, "applied once the registry answers");
    assert!(rejected.is_empty());
    assert!(!feed.has_unapplied());
    assert_eq!(in_force(&feed).as_deref(), Some("v1"));
    assert_eq!(feed.applied(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_baselines_published_while_a_stage_runs_are_dead_lettered_and_change_nothing(
) -> Result<()> {
    let settings = isolated_settings("baselines-invalid", 1, 100, &TopicRole::ALL).await?;
    let codec = RegistryCodec::new(&settings.registry)?;
    let baselines = TopicRole::Baselines.spec(&settings.topics).name;
    let v1 = version("v1", "2026-01-01T00:00:00Z", 8884);
    publish(&settings, &codec, &[(version_key(&v1), Some(v1.clone()))]).await?;

    let scorer = Background::stateful(&settings, ScorerStage::new(&settings))?;
    // The stage is past its start-up read of the baselines topic once it has taken a record
    // (rejections met while catching up at start-up are only logged).
    let input = TopicRole::EnrichedSessions.spec(&settings.topics).name;
    let session = examples::enriched_session();
    let value = codec
        .encode_value(&input, Contract::EnrichedSession, &session)
        .await?;
    produce(
        &settings.kafka,
        &input,
        &[RawInput {
            key: Some(session.session.device_id.clone().into_bytes()),
            ..RawInput::value(value)
        }],
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while scorer.metrics.records_in.get() < 1 {
        anyhow::ensure!(Instant::now() < deadline, "the scorer took no record");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A version whose key names another effective time than its document, and a value that is
    // not a registry-encoded document; then a valid v2.
    let v2 = version("v2", "2026-02-01T00:00:00Z", 8885);
    let mismatched_key = format!("{}@1", version_key(&v2).split('@').next().unwrap());
    let mismatched = codec
        .encode_value(&baselines, Contract::Baseline, &v2)
        .await?;
    let not_avro = b"scope: {kind: APP}".to_vec();
    produce(
        &settings.kafka,
        &baselines,
        &[
            RawInput {
                key: Some(mismatched_key.clone().into_bytes()),
                ..RawInput::value(mismatched.clone())
            },
            RawInput {
                key: Some(version_key(&v2).into_bytes()),
                ..RawInput::value(not_avro.clone())
            },
        ],
    )
    .await?;
    let v2_from = v2.effective_time;
    publish(&settings, &codec, &[(version_key(&v2), Some(v2))]).await?;

    let letters = dead_letters(&settings, &codec, 2).await?;
    let (key_letter, value_letter) = (&letters[0], &letters[1]);
    assert_eq!(key_letter.source_offset, 1);
    assert_eq!(key_letter.reason, DeadLetterReason::InvalidBaseline);
    assert!(
        key_letter
            .message
            .contains("the key must be <scope>@<effective time ms> of its document"),
        "{}",
        key_letter.message
    );
    assert_eq!(
        key_letter.original_key.as_deref(),
        Some(mismatched_key.as_bytes())
    );
    assert_eq!(key_letter.original_value.as_deref(), Some(&mismatched[..]));
    assert_eq!(value_letter.source_offset, 2);
    assert_eq!(value_letter.reason, DeadLetterReason::SchemaMismatch);
    assert!(
        value_letter.message.contains("not a Baseline document"),
        "{}",
        value_letter.message
    );
    assert_eq!(value_letter.original_value.as_deref(), Some(&not_avro[..]));
    assert!(letters
        .iter()
        .all(|l| l.stage == "scorer" && l.source_topic == baselines));

    // The valid version after them is applied live (the counter also holds v1, applied at
    // start-up).
    let deadline = Instant::now() + Duration::from_secs(30);
    while scorer.metrics.baselines_applied.get() < 2 {
        anyhow::ensure!(Instant::now() < deadline, "v2 never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = scorer.stop().await?;
    assert_eq!(metrics.baselines_rejected.get(), 2);
    assert_eq!(metrics.baselines_applied.get(), 2);

    // What any reader of the topic holds: v1 from its effective time, v2 from its own; the
    // rejected records changed nothing (the mismatched key's time, 1 ms after the epoch, has
    // no version in force).
    let (feed, rejected) = BaselineFeed::open(&settings, &codec, Duration::from_secs(30)).await?;
    assert_eq!(rejected.len(), 2);
    let version_at = |t: i64| feed.set().in_force(&scope(), t).map(|b| b.version.clone());
    assert_eq!(version_at(1), None);
    assert_eq!(version_at(v1.effective_time).as_deref(), Some("v1"));
    assert_eq!(version_at(v2_from - 1).as_deref(), Some("v1"));
    assert_eq!(version_at(v2_from).as_deref(), Some("v2"));
    Ok(())
}
