//! The bad-record corpus (`tests/fixtures/bad`: at least 100 records per raw topic, each with
//! the reason offport must give it): through the pure normalizers, and through the three
//! normalizer services on the real broker and registry, where every record must come out as
//! exactly one dead letter with its reason, its exact bytes and its source offset, and nothing
//! else may come out.

#![allow(clippy::expect_used, clippy::indexing_slicing, reason = "tests")]

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use offport_core::model::DeadLetter;
use offport_core::normalize::edr::EdrNormalizer;
use offport_core::normalize::mdm::MdmNormalizer;
use offport_core::normalize::proxy::sources::{SourceMap, SourceMapping};
use offport_core::normalize::proxy::{ProxyConfig, ProxyNormalizer};
use offport_core::normalize::{Limits, Normalizer, RawRecord};
use offport_kafka::registry::RegistryCodec;
use offport_kafka::settings::Settings;
use offport_kafka::topics::TopicRole;
use offport_tests::{
    bad_corpus, dead_letters, isolated_settings, produce_bad_corpus, read_until_quiet, Background,
};

/// When the records are checked (after every time in the corpus that is meant to be valid).
const NOW: i64 = 1_795_190_400_000; // 2026-11-20T16:00Z

fn mappings() -> Vec<SourceMapping> {
    let map = |network: &str, device: &str, platform: &str| SourceMapping {
        network: network.parse().expect("network"),
        device_id: device.to_string(),
        platform: Some(platform.to_string()),
        app_id: None,
        from: None,
        until: None,
    };
    vec![
        map("10.8.0.12/32", "android-7f3a", "android"),
        map("fd00:8::/64", "android-7f3a", "android"),
        map("10.8.0.13/32", "ios-91c2", "ios"),
    ]
}

fn proxy() -> ProxyNormalizer {
    ProxyNormalizer::configured(ProxyConfig {
        sources: SourceMap::new(mappings()),
        ..ProxyConfig::default()
    })
}

/// Every record of `file` through a fresh normalizer: each must be rejected on its own with
/// the corpus's reason. Every mismatch is listed, not just the first.
fn check_pure<N: Normalizer>(file: &str, make: impl Fn() -> N) -> Result<()> {
    let corpus = bad_corpus(file)?;
    assert!(corpus.len() >= 100, "{file}: {} records", corpus.len());
    let mut wrong = Vec::new();
    for (offset, bad) in corpus.iter().enumerate() {
        let value = bad.value()?;
        let headers = bad.raw_headers();
        let record = RawRecord {
            topic: "raw",
            partition: 0,
            offset: offset as i64,
            key: None,
            value: value.as_deref(),
            headers: &headers,
            timestamp: None,
        };
        match make().normalize(&record, NOW) {
            Err(rejection) if rejection.reason.code() == bad.reason => {
                assert!(!rejection.message.is_empty(), "{}", bad.case);
            }
            Err(rejection) => wrong.push(format!(
                "{}: {} ({}), expected {}",
                bad.case,
                rejection.reason.code(),
                rejection.message.chars().take(160).collect::<String>(),
                bad.reason
            )),
            Ok(out) => wrong.push(format!(
                "{}: accepted ({} records), expected {}",
                bad.case,
                out.len(),
                bad.reason
            )),
        }
    }
    assert!(wrong.is_empty(), "{file}:\n{}", wrong.join("\n"));
    Ok(())
}

#[test]
fn every_bad_record_is_rejected_with_its_reason_by_the_pure_normalizers() -> Result<()> {
    check_pure("proxy.jsonl", proxy)?;
    check_pure("edr.jsonl", || EdrNormalizer::new(Limits::default()))?;
    check_pure("mdm.jsonl", || MdmNormalizer::new(Limits::default()))
}

/// Runs one normalizer service over its corpus and checks the dead letters one by one.
async fn through_the_service<N>(
    settings: &Settings,
    file: &str,
    stage: &'static str,
    raw: TopicRole,
    output: TopicRole,
    normalizer: N,
) -> Result<()>
where
    N: Normalizer + Send + Sync + 'static,
{
    let corpus = bad_corpus(file)?;
    produce_bad_corpus(
        &settings.kafka,
        &raw.spec(&settings.topics).name,
        Some(0),
        &corpus,
    )
    .await?;
    let running = Background::normalizer(settings, stage, raw, normalizer)?;
    let codec = RegistryCodec::new(&settings.registry)?;
    let letters: Vec<DeadLetter> = dead_letters(settings, &codec, corpus.len())
        .await?
        .into_iter()
        .filter(|l| l.stage == stage)
        .collect();
    let metrics = running.stop().await?;
    let by_offset: BTreeMap<i64, &DeadLetter> =
        letters.iter().map(|l| (l.source_offset, l)).collect();
    assert_eq!(
        by_offset.len(),
        corpus.len(),
        "{file}: one dead letter per record"
    );
    for (offset, bad) in corpus.iter().enumerate() {
        let letter = by_offset
            .get(&(offset as i64))
            .with_context(|| format!("{file}: no dead letter for {}", bad.case))?;
        assert_eq!(letter.reason.code(), bad.reason, "{file}: {}", bad.case);
        assert_eq!(letter.source_topic, raw.spec(&settings.topics).name);
        let value = bad.value()?;
        if letter.truncated {
            assert_eq!(
                letter.original_value_size,
                value.as_ref().map(|v| v.len() as i64),
                "{}",
                bad.case
            );
        } else {
            assert_eq!(
                letter.original_value, value,
                "{file}: {} bytes kept",
                bad.case
            );
        }
    }
    // Nothing but dead letters came out, and each record was counted once.
    let outputs = read_until_quiet(
        &settings.kafka,
        &output.spec(&settings.topics).name,
        0,
        std::time::Duration::from_secs(2),
        std::time::Duration::from_secs(10),
    )
    .await?;
    assert!(outputs.is_empty(), "{file}: {} outputs", outputs.len());
    assert_eq!(metrics.records_in.get(), corpus.len() as u64, "{file}");
    assert_eq!(metrics.records_out.get(), 0, "{file}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_record_becomes_exactly_one_dead_letter_through_the_services() -> Result<()> {
    for (file, stage, raw, output) in [
        (
            "proxy.jsonl",
            "normalize-proxy",
            TopicRole::RawProxy,
            TopicRole::Sessions,
        ),
        (
            "edr.jsonl",
            "normalize-edr",
            TopicRole::RawEdr,
            TopicRole::DeviceEvents,
        ),
        (
            "mdm.jsonl",
            "normalize-mdm",
            TopicRole::RawMdm,
            TopicRole::DeviceContexts,
        ),
    ] {
        // A topic set per file: the dead-letter topic is shared by the three stages.
        let settings = isolated_settings(
            &format!("it-corpus-{stage}"),
            1,
            50,
            &[raw, output, TopicRole::DeadLetter],
        )
        .await?;
        match stage {
            "normalize-proxy" => {
                through_the_service(&settings, file, stage, raw, output, proxy()).await?
            }
            "normalize-edr" => {
                let edr = EdrNormalizer::new(Limits::default());
                through_the_service(&settings, file, stage, raw, output, edr).await?
            }
            _ => {
                let mdm = MdmNormalizer::new(Limits::default());
                through_the_service(&settings, file, stage, raw, output, mdm).await?
            }
        }
    }
    Ok(())
}
