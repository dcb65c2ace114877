//! Bad input at its worst, on the real broker with its default limits: a raw record as large
//! as a raw topic takes, followed by good records, through each normalizer; blank EDR values.
//! Each must become exactly one dead letter that fits the dead-letter topic, the records behind
//! it must be processed, and the metrics must count records, not attempts.

#![allow(clippy::expect_used, clippy::indexing_slicing, reason = "tests")]

use anyhow::Result;
use offport_core::model::DeadLetterReason;
use offport_core::normalize::edr::EdrNormalizer;
use offport_core::normalize::mdm::MdmNormalizer;
use offport_core::normalize::proxy::ProxyNormalizer;
use offport_core::normalize::{Limits, Normalizer, RawRecord};
use offport_kafka::registry::RegistryCodec;
use offport_kafka::settings::Settings;
use offport_kafka::topics::TopicRole;
use offport_tests::{
    dead_letters, fixture_lines, isolated_settings, produce, read_committed, Background, RawInput,
};
use sha2::Digest;

/// A value of this size fits a topic created with the broker's default `message.max.bytes`
/// (1,048,588 bytes per batch), but its dead letter (the value, wrapped) would not fit the
/// stage producer's 1,000,000 bytes unless cut.
const POISON_BYTES: usize = 1_048_300;

/// Raw topics larger than the normalizer's limit take: the oversize record reaches the stage.
const LIMITS: Limits = Limits {
    max_record_bytes: 256 * 1024,
};

async fn settings(prefix: &str, raw: TopicRole, output: TopicRole) -> Result<Settings> {
    isolated_settings(prefix, 1, 100, &[raw, output, TopicRole::DeadLetter]).await
}

/// The good records' outputs by the pure normalizer: what the stage must write.
fn expected_outputs(normalizer: &mut impl Normalizer, good: &[String]) -> usize {
    good.iter()
        .map(|line| {
            let record = RawRecord::new("t", 0, 0, line.as_bytes());
            normalizer
                .normalize(&record, i64::MAX / 2)
                .expect("a good record")
                .len()
        })
        .sum()
}

/// Produces the poison pill then `good` on one partition, runs the stage, and checks the dead
/// letter, the outputs behind it and the counters.
async fn poison_then_good<N>(
    name: &str,
    stage: &'static str,
    raw: TopicRole,
    output: TopicRole,
    make: impl Fn() -> N,
    good: Vec<String>,
) -> Result<()>
where
    N: Normalizer + Send + Sync + 'static,
{
    let settings = settings(&format!("it-poison-{name}"), raw, output).await?;
    let expected = expected_outputs(&mut make(), &good);
    assert!(
        expected >= 3,
        "{name}: the test needs good records behind the pill"
    );
    let poison = vec![b'{'; POISON_BYTES];
    let mut inputs = vec![RawInput::value(poison.clone()).partition(0)];
    inputs.extend(good.iter().map(|l| RawInput::value(l.clone()).partition(0)));
    // Only the test's producer may send a record this large; the stage keeps librdkafka's
    // defaults.
    let mut big = settings.kafka.clone();
    big.properties
        .insert("message.max.bytes".into(), "2000000".into());
    produce(&big, &raw.spec(&settings.topics).name, &inputs).await?;

    let running = Background::normalizer(&settings, stage, raw, make())?;
    let output_topic = output.spec(&settings.topics).name;
    let outputs = read_committed(&settings.kafka, &output_topic, expected);
    let codec = RegistryCodec::new(&settings.registry)?;
    let letters = dead_letters(&settings, &codec, 1);
    let (outputs, letters) = tokio::try_join!(outputs, letters)?;
    let metrics = running.stop().await?;

    assert_eq!(
        outputs.len(),
        expected,
        "{name}: every record behind the pill"
    );
    let letter = &letters[0];
    assert_eq!(letter.reason, DeadLetterReason::Oversize, "{name}");
    assert_eq!(letter.source_offset, 0);
    assert!(letter.truncated, "{name}");
    assert_eq!(letter.original_value_size, Some(POISON_BYTES as i64));
    assert_eq!(
        letter.original_value_sha256.as_deref(),
        Some(hex::encode(sha2::Sha256::digest(&poison)).as_str())
    );
    let kept = letter.original_value.as_deref().unwrap_or_default();
    assert!(
        kept.len() > 900_000 && poison.starts_with(kept),
        "{name}: a prefix of the value is kept ({} bytes)",
        kept.len()
    );
    // Counted once each, and no failed transaction.
    assert_eq!(metrics.records_in.get(), inputs.len() as u64, "{name}");
    let oversize = metrics
        .dead_letters
        .get_or_create(&offport_kafka::metrics::ReasonLabels {
            reason: DeadLetterReason::Oversize.into(),
        })
        .get();
    assert_eq!(oversize, 1, "{name}");
    assert_eq!(metrics.aborts.get(), 0, "{name}");
    assert_eq!(metrics.health.stalled(), None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_as_large_as_the_broker_takes_is_dead_lettered_and_its_partition_moves_on(
) -> Result<()> {
    let session = |i: usize| {
        format!(
            r#"{{"device_id":"dev-{i}","dst_ip":"203.0.113.7","dst_port":8443,"start_time":"2026-11-20T10:00:0{i}Z","sensor_protocol":"tls"}}"#
        )
    };
    poison_then_good(
        "proxy",
        "normalize-proxy",
        TopicRole::RawProxy,
        TopicRole::Sessions,
        || ProxyNormalizer::new(offport_core::normalize::proxy::ProxyFormat::Auto, LIMITS),
        (1..=3).map(session).collect(),
    )
    .await?;
    let event = |i: usize| {
        format!(
            r#"{{"device_id":"d{i}","platform":"ios","app_id":"com.x","kind":"APP_FOREGROUND","event_time":"2026-11-20T10:00:0{i}Z"}}"#
        )
    };
    poison_then_good(
        "edr",
        "normalize-edr",
        TopicRole::RawEdr,
        TopicRole::DeviceEvents,
        || EdrNormalizer::new(LIMITS),
        (1..=3).map(event).collect(),
    )
    .await?;
    poison_then_good(
        "mdm",
        "normalize-mdm",
        TopicRole::RawMdm,
        TopicRole::DeviceContexts,
        || MdmNormalizer::new(LIMITS),
        fixture_lines("mdm/amapi-devices.jsonl"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blank_edr_values_are_dead_lettered_not_dropped() -> Result<()> {
    let settings = settings("it-blank-edr", TopicRole::RawEdr, TopicRole::DeviceEvents).await?;
    let good = r#"{"device_id":"d1","platform":"android","app_id":"com.x","kind":"APP_BACKGROUND","event_time":"2026-11-20T10:00:00Z"}"#;
    let inputs = [
        RawInput::value("").partition(0),
        RawInput::value("  \n\t ").partition(0),
        RawInput::value(good).partition(0),
    ];
    produce(
        &settings.kafka,
        &TopicRole::RawEdr.spec(&settings.topics).name,
        &inputs,
    )
    .await?;
    let running = Background::normalizer(
        &settings,
        "normalize-edr",
        TopicRole::RawEdr,
        EdrNormalizer::new(Limits::default()),
    )?;
    let codec = RegistryCodec::new(&settings.registry)?;
    let events_topic = TopicRole::DeviceEvents.spec(&settings.topics).name;
    let (events, letters) = tokio::try_join!(
        read_committed(&settings.kafka, &events_topic, 1),
        dead_letters(&settings, &codec, 2)
    )?;
    let metrics = running.stop().await?;
    assert_eq!(events.len(), 1);
    assert_eq!(
        letters
            .iter()
            .map(|l| (l.source_offset, l.reason))
            .collect::<Vec<_>>(),
        [
            (0, DeadLetterReason::Unparseable),
            (1, DeadLetterReason::Unparseable)
        ]
    );
    assert!(
        letters[0].message.contains("empty"),
        "{}",
        letters[0].message
    );
    assert!(
        letters[1].message.contains("whitespace"),
        "{}",
        letters[1].message
    );
    // records in = outputs' records + dead letters: nothing unaccounted.
    assert_eq!(metrics.records_in.get(), 3);
    assert_eq!(metrics.records_out.get(), 1);
    Ok(())
}

/// A fault the broker itself shows: the output topic refuses the stage's records (its
/// `max.message.bytes` above a transaction marker but below any session record). The stage cannot make progress; it must
/// say so in `/healthz` and its metrics, and count its input once, not once per retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_whose_transactions_keep_failing_reports_its_stalled_partition() -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    let settings = settings("it-stall", TopicRole::RawProxy, TopicRole::Sessions).await?;
    let sessions = TopicRole::Sessions.spec(&settings.topics).name;
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        settings.kafka.client_config().create()?;
    let refused =
        AlterConfig::new(ResourceSpecifier::Topic(&sessions)).set("max.message.bytes", "120");
    for result in admin
        .alter_configs([&refused], &AdminOptions::new())
        .await?
    {
        result.map_err(|(_, code)| anyhow::anyhow!("alter {sessions}: {code}"))?;
    }
    let session = r#"{"device_id":"dev-1","dst_ip":"203.0.113.7","dst_port":8443,"start_time":"2026-11-20T10:00:00Z","sensor_protocol":"tls"}"#;
    let raw = TopicRole::RawProxy.spec(&settings.topics).name;
    produce(
        &settings.kafka,
        &raw,
        &[RawInput::value(session).partition(0)],
    )
    .await?;
    let running = Background::normalizer(
        &settings,
        "normalize-proxy",
        TopicRole::RawProxy,
        ProxyNormalizer::new(offport_core::normalize::proxy::ProxyFormat::Auto, LIMITS),
    )?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let said = loop {
        if let Some(said) = running.metrics.health.stalled() {
            break said;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no stall reported after {} aborts",
            running.metrics.aborts.get()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(said.contains(&format!("{raw}/0")), "{said}");
    assert_eq!(running.metrics.health.stalled_partitions.get(), 1);
    assert!(running.metrics.aborts.get() >= 5);
    assert_eq!(
        running.metrics.records_in.get(),
        1,
        "one record, however often retried"
    );
    assert_eq!(running.metrics.records_out.get(), 1);
    running.stop().await?;
    Ok(())
}

/// The dead-letter topic's own `max.message.bytes`, read at start, bounds the dead letters
/// when it is below the producer's limit: a record under the producer's limit but over the
/// topic's still becomes one dead letter, cut to fit, and the record behind it is processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_fit_a_dead_letter_topic_smaller_than_the_producers_limit() -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    let settings = settings("it-small-dlq", TopicRole::RawProxy, TopicRole::Sessions).await?;
    let letters_topic = TopicRole::DeadLetter.spec(&settings.topics).name;
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        settings.kafka.client_config().create()?;
    let small = AlterConfig::new(ResourceSpecifier::Topic(&letters_topic))
        .set("max.message.bytes", "200000");
    for result in admin.alter_configs([&small], &AdminOptions::new()).await? {
        result.map_err(|(_, code)| anyhow::anyhow!("alter {letters_topic}: {code}"))?;
    }
    let oversize = vec![b'{'; 300_000];
    let session = r#"{"device_id":"dev-1","dst_ip":"203.0.113.7","dst_port":8443,"start_time":"2026-11-20T10:00:00Z","sensor_protocol":"tls"}"#;
    let raw = TopicRole::RawProxy.spec(&settings.topics).name;
    produce(
        &settings.kafka,
        &raw,
        &[
            RawInput::value(oversize.clone()).partition(0),
            RawInput::value(session).partition(0),
        ],
    )
    .await?;
    let running = Background::normalizer(
        &settings,
        "normalize-proxy",
        TopicRole::RawProxy,
        ProxyNormalizer::new(offport_core::normalize::proxy::ProxyFormat::Auto, LIMITS),
    )?;
    let sessions = TopicRole::Sessions.spec(&settings.topics).name;
    let codec = RegistryCodec::new(&settings.registry)?;
    let (outputs, letters) = tokio::try_join!(
        read_committed(&settings.kafka, &sessions, 1),
        dead_letters(&settings, &codec, 1)
    )?;
    let metrics = running.stop().await?;
    assert_eq!(outputs.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.reason, DeadLetterReason::Oversize);
    assert!(letter.truncated);
    assert_eq!(letter.original_value_size, Some(300_000));
    let kept = letter.original_value.as_deref().unwrap_or_default().len();
    assert!(kept < 200_000 && kept > 100_000, "{kept} bytes kept");
    assert_eq!(metrics.aborts.get(), 0);
    Ok(())
}
