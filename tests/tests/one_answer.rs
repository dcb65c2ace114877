//! One input, one answer: a simulated fleet in the sensors' own formats (PCAPdroid rows, Zeek
//! logs and Suricata EVE from a per-app tunnel with its address map, EDR and MDM feeds) gives
//! the same alerts, revision for revision and evidence item for evidence item, from the
//! in-process replay and from the five services on the real broker, however the run goes:
//!
//! - 6 partitions keyed by device, idle timeout 1 s, a busy thread loading the other core;
//! - 1 partition keyed by sensor (every Zeek line on one key, every EVE event on another),
//!   idle timeout 10 s, the busy thread again;
//! - 6 partitions keyed by flow, the joiner and scorer started first and the normalizers one
//!   after another, and the joiner stopped (SIGTERM's path) and restarted mid-run.
//!
//! What makes it hold: the normalizers' progress markers (the joiner waits for the slowest
//! busy raw partition and for raw topics it has not heard from, whatever the wall clock says),
//! the flow join per raw partition, and the TimeWindow measured from a session's end.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use offport_backtest::replay::{Replay, ReplayOptions};
use offport_backtest::sensors::{sensor_formats, Sensor, SensorFleet};
use offport_backtest::sim::{simulate, FleetConfig, Stream, HOUR};
use offport_core::baseline::parse_documents;
use offport_core::model::Finding;
use offport_core::normalize::edr::EdrNormalizer;
use offport_core::normalize::mdm::MdmNormalizer;
use offport_core::normalize::proxy::ProxyNormalizer;
use offport_core::normalize::Limits;
use offport_kafka::baselines::{publish, version_key};
use offport_kafka::registry::RegistryCodec;
use offport_kafka::settings::Settings;
use offport_kafka::stages::{JoinerStage, ScorerStage};
use offport_kafka::topics::TopicRole;
use offport_tests::{
    isolated_settings, produce, read_to_end, read_until_quiet, Background, RawInput,
};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[derive(Debug, Clone, Copy)]
enum Keying {
    Device,
    Sensor,
    Flow,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    partitions: i32,
    keying: Keying,
    idle_timeout_ms: u64,
    busy_core: bool,
    staggered_and_restarted: bool,
}

fn fleet() -> (FleetConfig, String, SensorFleet) {
    let now = now_ms();
    let config = FleetConfig {
        devices: 30,
        hours: 5,
        start: now - now.rem_euclid(HOUR) - 6 * HOUR,
        infected_share: 0.35,
        seed: 23,
        ..FleetConfig::default()
    };
    let fleet = simulate(&config).unwrap();
    let sensors = sensor_formats(&fleet).unwrap();
    (config, fleet.baseline_yaml, sensors)
}

fn headers(record: &offport_backtest::sensors::SensorLine) -> Vec<(String, Option<Vec<u8>>)> {
    if record.sensor == Sensor::Pcapdroid {
        vec![(
            "offport.device_id".to_string(),
            Some(record.line.device_id.clone().into_bytes()),
        )]
    } else {
        vec![]
    }
}

/// The in-process replay of the records in the order the sensors wrote them.
fn reference(baseline_yaml: &str, fleet: &SensorFleet) -> (Vec<Finding>, u64) {
    let mut options = ReplayOptions::with_baseline_yaml(baseline_yaml, now_ms()).unwrap();
    options.proxy.sources =
        offport_core::normalize::proxy::sources::SourceMap::new(fleet.sources.clone());
    let mut replay = Replay::new(options);
    for record in &fleet.records {
        replay.push_with_headers(
            record.line.stream,
            Some(&record.line.device_id),
            &headers(record),
            record.line.value.as_bytes(),
        );
    }
    let outcome = replay.finish();
    assert_eq!(outcome.counts.dead_letters, 0, "{:?}", outcome.dead_letters);
    println!(
        "in process: {} late events, {} late sessions",
        outcome.join.late_events, outcome.join.late_sessions
    );
    let mut findings = outcome.findings;
    sort(&mut findings);
    (findings, outcome.counts.enriched)
}

fn sort(findings: &mut [Finding]) {
    findings.sort_by(|a, b| (&a.finding_id, a.revision).cmp(&(&b.finding_id, b.revision)));
}

fn proxy_normalizer(settings: &Settings) -> ProxyNormalizer {
    ProxyNormalizer::configured(settings.normalize.proxy_config().unwrap())
}

fn normalizer(settings: &Settings, which: Stream) -> Result<Background> {
    let limits = Limits::default();
    match which {
        Stream::Proxy => Background::normalizer(
            settings,
            "normalize-proxy",
            TopicRole::RawProxy,
            proxy_normalizer(settings),
        ),
        Stream::Edr => Background::normalizer(
            settings,
            "normalize-edr",
            TopicRole::RawEdr,
            EdrNormalizer::new(limits),
        ),
        Stream::Mdm => Background::normalizer(
            settings,
            "normalize-mdm",
            TopicRole::RawMdm,
            MdmNormalizer::new(limits),
        ),
    }
}

/// The fleet's address map written as a `normalize.sources_file` CSV.
fn sources_file(fleet: &SensorFleet) -> Result<std::path::PathBuf> {
    let file = std::env::temp_dir().join(format!(
        "offport-one-answer-sources-{}.csv",
        std::process::id()
    ));
    std::fs::write(&file, fleet.sources_csv())?;
    Ok(file)
}

#[test]
fn the_fleets_sources_file_reads_back_as_its_mappings() -> Result<()> {
    let (_, _, fleet) = fleet();
    assert!(!fleet.sources.is_empty());
    let mut settings = Settings::default();
    settings.normalize.sources_file = Some(sources_file(&fleet)?);
    let read = settings.normalize.all_sources()?;
    // The CSV names every platform (the sensors' map defaults an unnamed one to iOS).
    let expected: Vec<_> = fleet
        .sources
        .iter()
        .cloned()
        .map(|mut s| {
            s.platform.get_or_insert_with(|| "ios".to_string());
            s.app_id = s.app_id.filter(|a| !a.is_empty());
            s
        })
        .collect();
    assert_eq!(read, expected);
    Ok(())
}

/// The five services on the broker under `run`: the alerts topic's findings, sorted.
async fn services(
    run: Run,
    baseline_yaml: &str,
    fleet: &SensorFleet,
    sessions: u64,
) -> Result<Vec<Finding>> {
    let mut settings =
        isolated_settings("one-answer", run.partitions, 500, &TopicRole::ALL).await?;
    // The address map as a large deployment supplies it: a CSV file that normalize-proxy
    // reads, answering as the reference's map built from the same mappings.
    settings.normalize.sources_file = Some(sources_file(fleet)?);
    settings.stream.idle_timeout_ms = run.idle_timeout_ms;
    let codec = RegistryCodec::new(&settings.registry)?;
    let documents: Vec<_> = parse_documents(baseline_yaml)?
        .into_iter()
        .map(|d| (version_key(&d), Some(d)))
        .collect();
    publish(&settings, &codec, &documents).await?;

    for stream in Stream::ALL {
        let role = match stream {
            Stream::Proxy => TopicRole::RawProxy,
            Stream::Edr => TopicRole::RawEdr,
            Stream::Mdm => TopicRole::RawMdm,
        };
        let inputs: Vec<RawInput> = fleet
            .records
            .iter()
            .filter(|r| r.line.stream == stream)
            .map(|r| {
                let key = match (run.keying, r.sensor, &r.flow) {
                    (Keying::Sensor, Sensor::Zeek | Sensor::Suricata, _) => r.sensor.name(),
                    (Keying::Flow, _, Some(flow)) => flow.as_str(),
                    _ => r.line.device_id.as_str(),
                };
                let mut input = RawInput {
                    key: Some(key.as_bytes().to_vec()),
                    ..RawInput::value(r.line.value.clone())
                };
                for (name, value) in headers(r) {
                    input.headers.push((name, value.unwrap_or_default()));
                }
                input
            })
            .collect();
        produce(&settings.kafka, &role.spec(&settings.topics).name, &inputs).await?;
    }

    let busy = Arc::new(AtomicBool::new(run.busy_core));
    let spinner = {
        let busy = Arc::clone(&busy);
        std::thread::spawn(move || {
            let mut x = 0_u64;
            while busy.load(Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
            }
        })
    };

    let mut joiner = Background::stateful(&settings, JoinerStage::new(&settings))?;
    let scorer = Background::stateful(&settings, ScorerStage::new(&settings))?;
    let mut normalizers = Vec::new();
    for stream in [Stream::Proxy, Stream::Edr, Stream::Mdm] {
        normalizers.push(normalizer(&settings, stream)?);
        if run.staggered_and_restarted && stream == Stream::Proxy {
            // The device-side normalizers start only once the joiner has read sessions: the
            // raw topics it has not heard from hold it, not the wall clock.
            let waiting = tokio::time::Instant::now() + Duration::from_secs(60);
            while joiner.metrics.records_in.get() < sessions / 2 {
                assert!(
                    tokio::time::Instant::now() < waiting,
                    "no sessions reached the joiner"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    let mut restarted = !run.staggered_and_restarted;
    loop {
        let emitted = joiner.metrics.records_out.get();
        if !restarted && emitted >= sessions / 3 {
            joiner.stop().await?;
            joiner = Background::stateful(&settings, JoinerStage::new(&settings))?;
            restarted = true;
        }
        if scorer.metrics.records_committed.get() >= sessions && restarted {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let count = |role: TopicRole| {
                let topic = role.spec(&settings.topics).name;
                let kafka = settings.kafka.clone();
                async move {
                    read_until_quiet(
                        &kafka,
                        &topic,
                        0,
                        Duration::from_secs(2),
                        Duration::from_secs(60),
                    )
                    .await
                    .map(|r| r.len())
                }
            };
            anyhow::bail!(
                "{run:?}: the scorer read {} of {sessions} enriched sessions; normalized sessions {:?}, dead letters {:?}",
                scorer.metrics.records_committed.get(),
                count(TopicRole::Sessions).await,
                count(TopicRole::DeadLetter).await,
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    busy.store(false, Ordering::Relaxed);
    spinner.join().unwrap();
    // The services are done: their topics are read to the end they have.
    let read = |role: TopicRole| {
        let topic = role.spec(&settings.topics).name;
        let kafka = &settings.kafka;
        async move { read_to_end(kafka, &topic, Duration::from_secs(60)).await }
    };
    let enriched = read(TopicRole::EnrichedSessions).await?;
    assert_eq!(
        enriched.len() as u64,
        sessions,
        "{run:?}: enriched sessions"
    );
    let alerts = read(TopicRole::Alerts).await?;
    println!(
        "{run:?}: the joiner counted {} late records",
        joiner.metrics.late_records.get()
    );
    for stage in normalizers.into_iter().chain([joiner, scorer]) {
        stage.stop().await?;
    }
    let mut findings = Vec::new();
    for (_, _, value, _) in &alerts {
        findings.push(codec.decode::<Finding>(value).await?);
    }
    sort(&mut findings);
    Ok(findings)
}

/// Names the first difference, rather than printing two long lists.
fn assert_same(run: &str, expected: &[Finding], actual: &[Finding]) {
    let key = |f: &Finding| (f.finding_id.clone(), f.revision);
    for (e, a) in expected.iter().zip(actual) {
        assert_eq!(key(e), key(a), "{run}: finding ids differ");
        assert_eq!(
            e, a,
            "{run}: finding {} revision {} differs",
            e.finding_id, e.revision
        );
    }
    assert_eq!(
        expected.iter().map(key).collect::<Vec<_>>(),
        actual.iter().map(key).collect::<Vec<_>>(),
        "{run}: findings differ"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sensors_formats_give_one_answer_however_the_services_run() -> Result<()> {
    let (_, baseline_yaml, fleet) = fleet();
    let (expected, sessions) = reference(&baseline_yaml, &fleet);
    assert!(
        expected.len() >= 5,
        "the fleet raised only {} finding records",
        expected.len()
    );
    println!(
        "{} sensor records, {sessions} sessions, {} finding records in process",
        fleet.records.len(),
        expected.len()
    );
    let runs = [
        Run {
            partitions: 6,
            keying: Keying::Device,
            idle_timeout_ms: 1_000,
            busy_core: true,
            staggered_and_restarted: false,
        },
        Run {
            partitions: 1,
            keying: Keying::Sensor,
            idle_timeout_ms: 10_000,
            busy_core: true,
            staggered_and_restarted: false,
        },
        Run {
            partitions: 6,
            keying: Keying::Flow,
            idle_timeout_ms: 1_000,
            busy_core: false,
            staggered_and_restarted: true,
        },
    ];
    for run in runs {
        let started = std::time::Instant::now();
        let actual = services(run, &baseline_yaml, &fleet, sessions).await?;
        println!(
            "{run:?}: {} finding records in {:?}",
            actual.len(),
            started.elapsed()
        );
        assert_same(&format!("{run:?}"), &expected, &actual);
    }
    Ok(())
}
