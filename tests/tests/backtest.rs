//! Backtest replay against the real broker and registry: a simulated fleet produced to the raw
//! topics, replayed from Kafka, gives exactly the findings of the in-process replay of the same
//! records; twice the same; a time range reads only its records; and the normalized topics
//! (filled by the real normalizers) replay to the same findings as the raw ones.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::time::Duration;

use anyhow::Result;
use offport_backtest::replay::{Replay, ReplayOptions};
use offport_backtest::report::Report;
use offport_backtest::sim::{simulate, FleetConfig, Stream, HOUR};
use offport_core::baseline::parse_documents;
use offport_core::model::Finding;
use offport_core::normalize::edr::EdrNormalizer;
use offport_core::normalize::mdm::MdmNormalizer;
use offport_core::normalize::proxy::{ProxyFormat, ProxyNormalizer};
use offport_core::normalize::Limits;
use offport_kafka::registry::RegistryCodec;
use offport_kafka::topics::TopicRole;
use offport_replay::{produce_raw, replay_topics, KafkaReplay, ReplaySource};
use offport_tests::{isolated_settings, read_until_quiet, Background};

fn options(baseline_yaml: &str) -> ReplayOptions {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    ReplayOptions::with_baseline_yaml(baseline_yaml, now).unwrap()
}

fn ids(findings: &[Finding]) -> Vec<(String, i32)> {
    findings
        .iter()
        .map(|f| (f.finding_id.clone(), f.revision))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_replay_equals_in_process_replay_and_is_deterministic() -> Result<()> {
    let settings = isolated_settings("backtest", 3, 500, &TopicRole::ALL).await?;
    let codec = RegistryCodec::new(&settings.registry)?;
    let now = options("[]").ingest_time;
    let config = FleetConfig {
        devices: 24,
        hours: 4,
        start: now - now.rem_euclid(HOUR) - 5 * HOUR,
        infected_share: 0.4,
        seed: 7,
        ..FleetConfig::default()
    };
    let fleet = simulate(&config).unwrap();
    assert!(!fleet.truth.planted.is_empty());
    produce_raw(&settings, &fleet.records, &mut |_| {}).await?;

    let mut local = Replay::new(options(&fleet.baseline_yaml));
    for record in &fleet.records {
        local.push(
            record.stream,
            Some(&record.device_id),
            record.value.as_bytes(),
        );
    }
    let local = local.finish();
    assert!(!local.findings.is_empty(), "the fleet raised nothing");
    let report = Report::new(
        "t",
        &local.latest(),
        local.findings.len(),
        Some(&fleet.truth),
    );
    println!("in-process: {}", report.summary());

    let output = format!("{}replay.findings", settings.topics.prefix);
    let range = KafkaReplay {
        source: ReplaySource::Raw,
        from: None,
        to: None,
        output_topic: Some(output.clone()),
    };
    let mut last = (0, 0);
    let first = replay_topics(
        &settings,
        &codec,
        options(&fleet.baseline_yaml),
        &range,
        &mut |done, total| last = (done, total),
    )
    .await?;
    assert_eq!(
        last,
        (fleet.records.len() as u64, fleet.records.len() as u64)
    );
    assert_eq!(first.counts.records, local.counts.records);
    assert_eq!(first.counts.enriched, local.counts.enriched);
    assert_eq!(ids(&first.findings), ids(&local.findings));
    assert_eq!(first.findings, local.findings, "findings differ in content");

    // The findings are on the replay's own output topic, decodable through the registry.
    let written = read_until_quiet(
        &settings.kafka,
        &output,
        first.findings.len(),
        Duration::from_secs(3),
        Duration::from_secs(60),
    )
    .await?;
    assert_eq!(written.len(), first.findings.len());
    let mut decoded = Vec::new();
    for (key, _, value, _) in &written {
        let finding: Finding = codec.decode(value).await?;
        assert_eq!(key.as_deref(), Some(finding.device_id.as_bytes()));
        decoded.push(finding);
    }
    decoded.sort_by(|a, b| (&a.finding_id, a.revision).cmp(&(&b.finding_id, b.revision)));
    let mut expected = first.findings.clone();
    expected.sort_by(|a, b| (&a.finding_id, a.revision).cmp(&(&b.finding_id, b.revision)));
    assert_eq!(decoded, expected);

    // Again: the same findings, byte for byte in JSON.
    let second = replay_topics(
        &settings,
        &codec,
        options(&fleet.baseline_yaml),
        &KafkaReplay {
            output_topic: None,
            ..range.clone()
        },
        &mut |_, _| {},
    )
    .await?;
    assert_eq!(
        serde_json::to_string(&second.findings)?,
        serde_json::to_string(&first.findings)?
    );

    // A time range reads only the records stamped inside it.
    let from = config.start + 2 * HOUR;
    let to = config.start + 3 * HOUR;
    let ranged = replay_topics(
        &settings,
        &codec,
        options(&fleet.baseline_yaml),
        &KafkaReplay {
            from: Some(from),
            to: Some(to),
            output_topic: None,
            ..range.clone()
        },
        &mut |_, _| {},
    )
    .await?;
    let inside = fleet
        .records
        .iter()
        .filter(|r| r.time >= from && r.time < to)
        .count() as u64;
    assert_eq!(ranged.counts.records.values().sum::<u64>(), inside);
    // Every finding of the range comes from a session reported inside it.
    for f in &ranged.findings {
        assert!(f.first_seen < to, "{f:?}");
        let port = format!("\"dst_port\":{},", f.dst_port);
        assert!(
            fleet.stream(Stream::Proxy).any(|r| r.time >= from
                && r.time < to
                && r.device_id == f.device_id
                && r.value.contains(&port)),
            "{f:?} has no session in the range"
        );
    }
    assert!(ranged.findings.len() < first.findings.len());

    // The normalized topics, filled by the real normalizers, replay to the same findings.
    let limits = Limits::default();
    let normalizers = vec![
        Background::normalizer(
            &settings,
            "normalize-proxy",
            TopicRole::RawProxy,
            ProxyNormalizer::new(ProxyFormat::Auto, limits),
        )?,
        Background::normalizer(
            &settings,
            "normalize-edr",
            TopicRole::RawEdr,
            EdrNormalizer::new(limits),
        )?,
        Background::normalizer(
            &settings,
            "normalize-mdm",
            TopicRole::RawMdm,
            MdmNormalizer::new(limits),
        )?,
    ];
    let total = fleet.records.len() as u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let (read, out) = normalizers.iter().fold((0, 0), |(r, o), b| {
            (
                r + b.metrics.records_in.get(),
                o + b.metrics.records_out.get(),
            )
        });
        if read >= total && out >= local.counts.normalized {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "normalizers read {read} of {total}, wrote {out} of {}",
            local.counts.normalized
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for normalizer in normalizers {
        normalizer.stop().await?;
    }
    let normalized = replay_topics(
        &settings,
        &codec,
        options(&fleet.baseline_yaml),
        &KafkaReplay {
            source: ReplaySource::Normalized,
            output_topic: None,
            ..range.clone()
        },
        &mut |_, _| {},
    )
    .await?;
    assert_eq!(normalized.counts.enriched, local.counts.enriched);
    assert_eq!(
        normalized.counts.records.get(&Stream::Proxy),
        Some(&(fleet.stream(Stream::Proxy).count() as u64))
    );
    assert_eq!(ids(&normalized.findings), ids(&local.findings));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_baselines_topic_as_of_a_time_holds_only_what_was_published_by_then() -> Result<()> {
    use offport_core::model::{BaselineScope, ScopeKind};
    use offport_kafka::baselines::{publish, version_key, BaselineFeed};
    let settings = isolated_settings("baselines-as-of", 1, 100, &[TopicRole::Baselines]).await?;
    let codec = RegistryCodec::new(&settings.registry)?;
    let doc = |version: &str| {
        parse_documents(&format!(
            "scope: {{kind: APP, value: com.example.vendor}}\nversion: {version}\neffective_time: 2026-01-01T00:00:00Z\nallowed_protocol_ports:\n  - {{protocol: MQTT, transport: TCP, ports: [{{first: 8884, last: 8884}}]}}\n"
        ))
        .unwrap()
        .remove(0)
    };
    let first = doc("v1");
    publish(&settings, &codec, &[(version_key(&first), Some(first))]).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let cutoff = options("[]").ingest_time;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Published later: a withdrawal of the scope's only version.
    let withdrawn = doc("v1");
    publish(&settings, &codec, &[(version_key(&withdrawn), None)]).await?;

    let scope = BaselineScope {
        kind: ScopeKind::App,
        value: Some("com.example.vendor".into()),
    };
    let timeout = Duration::from_secs(30);
    let (then, _) = BaselineFeed::open_as_of(&settings, &codec, timeout, Some(cutoff)).await?;
    assert_eq!(
        then.set()
            .in_force(&scope, i64::MAX)
            .map(|b| b.version.as_str()),
        Some("v1"),
        "as of the cutoff the version was in force"
    );
    let (now, _) = BaselineFeed::open(&settings, &codec, timeout).await?;
    assert!(
        now.set().in_force(&scope, i64::MAX).is_none(),
        "now it is withdrawn"
    );
    Ok(())
}
