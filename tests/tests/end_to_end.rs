//! The whole topology on the real broker and registry: raw records of a scripted scenario in at
//! the raw topics, through the three normalizers, the joiner and the scorer, findings out on the
//! alerts topic (Avro) and the OCSF topic (JSON), and a baseline published mid-run that changes
//! the verdict for later events only.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use offport_core::model::{Analytic, EvidenceKind, Finding};
use offport_core::normalize::edr::EdrNormalizer;
use offport_core::normalize::mdm::MdmNormalizer;
use offport_core::normalize::proxy::{ProxyFormat, ProxyNormalizer};
use offport_core::normalize::Limits;
use offport_kafka::baselines::{publish, version_key};
use offport_kafka::registry::RegistryCodec;
use offport_kafka::settings::Settings;
use offport_kafka::stages::{JoinerStage, ScorerStage};
use offport_kafka::topics::TopicRole;
use offport_tests::scenario::{device_of, Scenario};
use offport_tests::{isolated_settings, produce, read_until_quiet, Background, RawInput};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn topic(settings: &Settings, role: TopicRole) -> String {
    role.spec(&settings.topics).name
}

async fn produce_lines(settings: &Settings, role: TopicRole, lines: &[String]) -> Result<()> {
    // Keyed by device, as a fleet's collectors produce them: one device's records stay in order.
    let inputs: Vec<RawInput> = lines
        .iter()
        .map(|l| RawInput {
            key: device_of(l).map(String::into_bytes),
            ..RawInput::value(l.clone())
        })
        .collect();
    produce(&settings.kafka, &topic(settings, role), &inputs).await?;
    Ok(())
}

/// Waits until `topic` holds at least `count` committed records.
async fn wait_for(settings: &Settings, role: TopicRole, count: usize) -> Result<()> {
    read_until_quiet(
        &settings.kafka,
        &topic(settings, role),
        count,
        Duration::from_millis(500),
        Duration::from_secs(90),
    )
    .await?;
    Ok(())
}

/// Settings for a streaming test: 3 partitions, short lateness and idle timeout.
pub async fn stream_settings(prefix: &str) -> Result<Settings> {
    let mut settings = isolated_settings(prefix, 3, 500, &TopicRole::ALL).await?;
    settings.stream.allowed_lateness_ms = 5_000;
    settings.stream.idle_timeout_ms = 1_000;
    // Shorter than the gap between the scenario's two phases: were the update ignored, the
    // later sessions would open a finding of their own instead of being suppressed silently.
    settings.stream.suppression_window_ms = 45 * 60_000;
    Ok(settings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scripted_scenario_raises_exactly_the_expected_findings_on_both_alert_topics(
) -> Result<()> {
    let settings = stream_settings("e2e").await?;
    let scenario = Scenario::new(now_ms());
    let limits = Limits::default();
    let stages = vec![
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
        Background::stateful(&settings, JoinerStage::new(&settings))?,
        Background::stateful(&settings, ScorerStage::new(&settings))?,
    ];

    // Context first, so the join sees it before the sessions it explains.
    produce_lines(&settings, TopicRole::RawMdm, &scenario.mdm).await?;
    produce_lines(&settings, TopicRole::RawEdr, &scenario.edr).await?;
    wait_for(&settings, TopicRole::DeviceEvents, scenario.edr.len()).await?;
    wait_for(&settings, TopicRole::DeviceContexts, scenario.mdm.len()).await?;
    produce_lines(&settings, TopicRole::RawProxy, &scenario.sessions_before).await?;
    wait_for(
        &settings,
        TopicRole::EnrichedSessions,
        scenario.sessions_before.len(),
    )
    .await?;

    // Mid-run: HTTP on 8080 approved for the shady app from `mid` on.
    let codec = RegistryCodec::new(&settings.registry)?;
    let update = scenario.baseline_update();
    publish(&settings, &codec, &[(version_key(&update), Some(update))]).await?;
    let scorer_metrics = std::sync::Arc::clone(&stages[4].metrics);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while scorer_metrics.baselines_applied.get() < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the scorer never applied the update"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    produce_lines(&settings, TopicRole::RawProxy, &scenario.sessions_after).await?;
    let all_sessions = scenario.sessions_before.len() + scenario.sessions_after.len();
    wait_for(&settings, TopicRole::EnrichedSessions, all_sessions).await?;

    let alerts = read_until_quiet(
        &settings.kafka,
        &topic(&settings, TopicRole::Alerts),
        1,
        Duration::from_secs(4),
        Duration::from_secs(60),
    )
    .await?;
    let ocsf = read_until_quiet(
        &settings.kafka,
        &topic(&settings, TopicRole::AlertsOcsf),
        alerts.len(),
        Duration::from_secs(2),
        Duration::from_secs(30),
    )
    .await?;
    for stage in stages {
        stage.stop().await?;
    }

    let mut findings: Vec<Finding> = Vec::new();
    for (key, _, value, _) in &alerts {
        let finding: Finding = codec.decode(value).await?;
        assert_eq!(key.as_deref(), Some(finding.device_id.as_bytes()));
        findings.push(finding);
    }
    let mut latest: BTreeMap<String, Finding> = BTreeMap::new();
    for finding in &findings {
        latest.insert(finding.finding_id.clone(), finding.clone());
    }
    let mut raised: Vec<(Analytic, String, i32)> = latest
        .values()
        .map(|f| (f.analytic, f.device_id.clone(), f.dst_port))
        .collect();
    raised.sort_by_key(|(a, d, p)| (format!("{a:?}"), d.clone(), *p));
    println!("findings: {raised:?}");
    for finding in latest.values() {
        println!(
            "{} {:?} {} {} score {} sessions {} evidence {:?}",
            finding.finding_id,
            finding.analytic,
            finding.device_id,
            finding.dst_port,
            finding.score,
            finding.session_count,
            finding.evidence.iter().map(|e| e.kind).collect::<Vec<_>>()
        );
    }
    let expected = vec![
        (Analytic::AppLayerC2, "dev-beacon".to_string(), 8443),
        (
            Analytic::NonStandardPortAndroid,
            "dev-beacon".to_string(),
            8443,
        ),
        (
            Analytic::NonStandardPortAndroid,
            "dev-dns".to_string(),
            5300,
        ),
        (
            Analytic::NonStandardPortAndroid,
            "dev-http".to_string(),
            8080,
        ),
    ];
    assert_eq!(raised, expected);

    let by_device = |device: &str| {
        latest
            .values()
            .find(|f| f.device_id == device && f.analytic != Analytic::AppLayerC2)
            .unwrap()
    };
    let c2 = latest
        .values()
        .find(|f| f.analytic == Analytic::AppLayerC2)
        .unwrap();
    let c2_kinds: Vec<EvidenceKind> = c2.evidence.iter().map(|e| e.kind).collect();
    assert!(
        c2_kinds.contains(&EvidenceKind::BeaconPeriodicity),
        "{c2_kinds:?}"
    );
    assert!(
        c2_kinds.contains(&EvidenceKind::UniformSizes),
        "{c2_kinds:?}"
    );
    let beacon = by_device("dev-beacon");
    let kinds: Vec<EvidenceKind> = beacon.evidence.iter().map(|e| e.kind).collect();
    for kind in [
        EvidenceKind::ProtocolPortMismatch,
        EvidenceKind::DeviceLocked,
        EvidenceKind::BackgroundNoForeground,
        EvidenceKind::PrecedingBackgroundExecution,
        EvidenceKind::RepeatedSessions,
    ] {
        assert!(
            kinds.contains(&kind),
            "beacon evidence {kinds:?} lacks {kind:?}"
        );
    }
    // Revisions are emitted when the score rises or evidence is added; the rest are counted
    // silently, so the last revision has seen at least the sessions that raised the score.
    assert!(beacon.session_count >= 4, "{beacon:?}");
    let mismatch = beacon
        .evidence
        .iter()
        .find(|e| e.kind == EvidenceKind::ProtocolPortMismatch)
        .unwrap();
    assert!(mismatch.observed.contains("8443"), "{mismatch:?}");
    assert!(
        mismatch.baseline.as_deref().unwrap_or("").contains("443"),
        "{mismatch:?}"
    );

    // The update changed the verdict for later sessions only.
    let http = by_device("dev-http");
    assert_eq!(http.session_count, 3, "{http:?}");
    assert!(http.last_seen < scenario.mid);
    assert!(http
        .evidence
        .iter()
        .any(|e| e.kind == EvidenceKind::AppUnmanaged));

    // The same findings, revision for revision, on the OCSF topic: each Detection Finding keyed
    // by its device and carrying the Avro revision's device, app, destination and evidence.
    assert_eq!(ocsf.len(), alerts.len());
    let by_uid: BTreeMap<String, &Finding> = findings
        .iter()
        .map(|f| (format!("{}:{}", f.finding_id, f.revision), f))
        .collect();
    assert_eq!(by_uid.len(), findings.len(), "revisions are unique");
    let mut ocsf_ids: Vec<String> = Vec::new();
    for (key, _, value, _) in &ocsf {
        let event: serde_json::Value = serde_json::from_slice(value)?;
        assert_eq!(event["class_uid"], 2004);
        let uid = event["metadata"]["uid"].as_str().unwrap().to_string();
        let invalid = offport_tests::ocsf_violations(&event);
        assert!(
            invalid.is_empty(),
            "OCSF {uid} against the official schema: {invalid:#?}"
        );
        let finding = by_uid
            .get(&uid)
            .unwrap_or_else(|| panic!("OCSF {uid} has no Avro revision"));
        assert_eq!(key.as_deref(), Some(finding.device_id.as_bytes()), "{uid}");
        assert_eq!(event["finding_info"]["uid"], finding.finding_id.as_str());
        assert_eq!(
            event["activity_id"],
            if finding.revision == 0 { 1 } else { 2 }
        );
        assert_eq!(event["device"]["uid"], finding.device_id.as_str());
        match &finding.app_id {
            Some(app) => assert_eq!(event["resources"][0]["uid"], app.as_str(), "{uid}"),
            None => assert!(event.get("resources").is_none(), "{uid}"),
        }
        let evidence = &event["evidences"][0];
        assert_eq!(evidence["dst_endpoint"]["ip"], finding.dst_ip.as_str());
        assert_eq!(evidence["dst_endpoint"]["port"], finding.dst_port);
        assert_eq!(
            evidence["data"]["evidence"].as_array().map(Vec::len),
            Some(finding.evidence.len()),
            "{uid}: {evidence}"
        );
        ocsf_ids.push(uid);
    }
    let mut avro_ids: Vec<String> = by_uid.into_keys().collect();
    ocsf_ids.sort();
    avro_ids.sort();
    assert_eq!(ocsf_ids, avro_ids);
    Ok(())
}
