//! A stateful stage (here the scorer) that reads records it cannot decode dead-letters each with
//! its reason and original bytes, scores the rest and carries on: a payload that is not in the
//! registry's wire format, and one naming a writer schema the registry does not have (fetched
//! before the batch's tasks run, its failure kept for their dead letters).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::time::Duration;

use anyhow::Result;
use offport_core::examples;
use offport_core::model::DeadLetterReason;
use offport_core::schema::Contract;
use offport_kafka::registry::RegistryCodec;
use offport_kafka::stages::ScorerStage;
use offport_kafka::topics::TopicRole;
use offport_tests::{dead_letters, isolated_settings, produce, Background, RawInput};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_records_of_a_stateful_stage_are_dead_lettered_and_the_rest_processed(
) -> Result<()> {
    let mut settings = isolated_settings("stateful-dead-letters", 1, 100, &TopicRole::ALL).await?;
    settings.stream.stop_at_end = true;
    let codec = RegistryCodec::new(&settings.registry)?;
    let input = TopicRole::EnrichedSessions.spec(&settings.topics).name;
    let session = examples::enriched_session();
    let key = session.session.device_id.clone().into_bytes();
    let good = codec
        .encode_value(&input, Contract::EnrichedSession, &session)
        .await?;
    // Magic byte, then a schema id no registry here has issued, then a body.
    let mut unknown_schema = vec![0, 0x3b, 0x9a, 0xc9, 0xff];
    unknown_schema.extend_from_slice(&good[5..]);
    let records = vec![
        RawInput::value(good.clone()),
        RawInput::value(b"{\"not\": \"avro\"}".to_vec()),
        RawInput::value(good.clone()),
        RawInput::value(unknown_schema.clone()),
        RawInput::value(good),
    ];
    let records: Vec<RawInput> = records
        .into_iter()
        .map(|r| RawInput {
            key: Some(key.clone()),
            ..r
        })
        .collect();
    produce(&settings.kafka, &input, &records).await?;

    let scorer = Background::stateful(&settings, ScorerStage::new(&settings))?;
    tokio::time::timeout(Duration::from_secs(120), scorer.task).await???;
    assert_eq!(scorer.metrics.records_in.get(), 5);

    let letters = dead_letters(&settings, &codec, 2).await?;
    assert_eq!(letters.len(), 2, "{letters:?}");
    let (not_avro, unknown) = (&letters[0], &letters[1]);
    assert_eq!(not_avro.source_offset, 1);
    assert_eq!(not_avro.reason, DeadLetterReason::SchemaMismatch);
    assert!(
        not_avro
            .message
            .contains("not a registry-encoded Avro record"),
        "{}",
        not_avro.message
    );
    assert_eq!(
        not_avro.original_value.as_deref(),
        Some(&b"{\"not\": \"avro\"}"[..])
    );
    assert_eq!(unknown.source_offset, 3);
    assert_eq!(unknown.reason, DeadLetterReason::SchemaMismatch);
    assert!(
        unknown.message.contains("writer schema 999999999"),
        "{}",
        unknown.message
    );
    assert_eq!(unknown.original_value.as_deref(), Some(&unknown_schema[..]));
    assert!(letters
        .iter()
        .all(|l| l.stage == "scorer" && l.source_topic == input));
    Ok(())
}
