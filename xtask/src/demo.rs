//! `cargo xtask demo`: the main job, end to end, on the local stack.
//!
//! 1. Brings the local broker and registry up when none answers.
//! 2. Builds the five services and starts them as processes on a fresh topic prefix
//!    (`demo-<time>.`), after publishing the simulated organisation's baseline to its
//!    baselines topic. Topics of earlier demo runs are deleted first.
//! 3. Simulates a small fleet (60 devices, the last 6 hours, every fifth device with one planted
//!    malicious behaviour) and produces its raw records to the raw topics in the sensors' own
//!    formats (PCAPdroid rows from the Android devices, Zeek logs and Suricata EVE from the
//!    iOS devices' per-app tunnel, attributed through its address map, EDR and MDM feeds).
//! 4. Prints each finding as it arrives on the alerts topic, with its evidence.
//! 5. Ends with a summary against the simulator's ground truth, beside an in-process replay of
//!    the same records, scrapes every service's `/metrics` for the documented series, and stops
//!    the services (SIGTERM). Exits non-zero when recall is below 0.95 or a series is missing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use offport_backtest::replay::{latest_revisions, Replay, ReplayOptions};
use offport_backtest::report::{matches, Report};
use offport_backtest::sensors::sensor_formats;
use offport_backtest::sim::{simulate, FleetConfig, HOUR};
use offport_core::baseline::parse_documents;
use offport_core::model::Finding;
use offport_devstack::stack::StackOptions;
use offport_kafka::baselines::{publish, version_key};
use offport_kafka::registry::RegistryCodec;
use offport_kafka::settings::{
    KafkaSettings, RegistrySettings, Settings, StreamSettings, TopicSettings,
};
use offport_kafka::topics::{ensure_topics, TopicRole};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;

pub(crate) const SERVICES: [(&str, &str); 5] = [
    ("normalize-proxy", "offport-normalize-proxy"),
    ("normalize-edr", "offport-normalize-edr"),
    ("normalize-mdm", "offport-normalize-mdm"),
    ("joiner", "offport-joiner"),
    ("scorer", "offport-scorer"),
];
const FIRST_PORT: u16 = 19_464;
/// The services' idle timeout in the demo and the precision runs: a bounded fleet's last
/// sessions come out 3 s after its end instead of 10.
pub(crate) const DEMO_IDLE_TIMEOUT_MS: u64 = 3_000;

/// Settings for the services on the local stack: its broker and registry, topics under
/// `prefix` with `partitions` partitions (replication 1), and the idle timeout given.
pub(crate) fn local_settings(
    bootstrap: &str,
    registry: &str,
    prefix: &str,
    partitions: i32,
    idle_timeout_ms: u64,
) -> Settings {
    Settings {
        kafka: KafkaSettings {
            bootstrap_servers: bootstrap.to_string(),
            ..KafkaSettings::default()
        },
        registry: RegistrySettings {
            url: registry.to_string(),
            ..RegistrySettings::default()
        },
        topics: TopicSettings {
            prefix: prefix.to_string(),
            partitions,
            replication_factor: 1,
        },
        stream: StreamSettings {
            idle_timeout_ms,
            ..StreamSettings::default()
        },
        ..Settings::default()
    }
}

/// Publishes every document of a baseline file to the baselines topic, each under its version
/// key; returns how many.
pub(crate) async fn publish_baseline(
    settings: &Settings,
    codec: &RegistryCodec,
    yaml: &str,
) -> Result<usize> {
    let versions: Vec<(String, Option<_>)> = parse_documents(yaml)?
        .into_iter()
        .map(|d| (version_key(&d), Some(d)))
        .collect();
    publish(settings, codec, &versions).await?;
    Ok(versions.len())
}

/// Builds the five services; returns the directory of their binaries.
pub(crate) fn build_services() -> Result<PathBuf> {
    println!("building the five services...");
    let status = crate::cargo()
        .args(["build", "--quiet"])
        .args(SERVICES.iter().flat_map(|(package, _)| ["-p", package]))
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build of the services failed");
    }
    std::env::current_exe()?
        .parent()
        .map(PathBuf::from)
        .context("no directory of the xtask binary")
}

pub(crate) fn run(options: &StackOptions) -> Result<ExitCode> {
    let (bootstrap, registry, _) = crate::ensure_stack(options)?;
    let bin_dir = build_services()?;
    let prefix = format!(
        "demo-{}.",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    );
    let settings = crate::demo::local_settings(
        &bootstrap,
        &registry,
        &prefix,
        options.partitions,
        DEMO_IDLE_TIMEOUT_MS,
    );
    let runtime = crate::runtime()?;
    let log_dir = options.run_dir.join("demo");
    std::fs::create_dir_all(&log_dir)?;
    let mut services = Services(Vec::new());
    let result = runtime.block_on(async {
        prepare(&settings).await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        let config = FleetConfig {
            devices: 60,
            hours: 6,
            start: now - now.rem_euclid(HOUR) - 6 * HOUR,
            seed: 42,
            infected_share: 0.2,
            ..FleetConfig::default()
        };
        let fleet = simulate(&config)?;
        let sensors = sensor_formats(&fleet)?;
        // The tunnel sensors' address map, as a deployment configures it.
        let config_file = sources_config(&log_dir, &sensors)?;
        let records = sensors.raw_lines();
        let codec = RegistryCodec::new(&settings.registry)?;
        let versions = publish_baseline(&settings, &codec, &fleet.baseline_yaml).await?;
        println!(
            "published the simulated organisation's baseline ({versions} versions: corporate proxy and VPN relay exceptions, developer tooling ports)"
        );

        services = start_services(&bin_dir, &settings, &config_file, &log_dir)?;
        wait_ready(&mut services).await?;
        println!(
            "five services running on topics {prefix}* (logs in {}; metrics on 127.0.0.1:{FIRST_PORT}-{})",
            log_dir.display(),
            FIRST_PORT + 4
        );

        // Read the alerts topic from its start before anything is produced.
        let alerts_topic = TopicRole::Alerts.spec(&settings.topics).name;
        let consumer: StreamConsumer = settings
            .kafka
            .client_config()
            .set("group.id", format!("{prefix}demo-reader"))
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .create()?;
        consumer.subscribe(&[&alerts_topic])?;

        println!(
            "simulated fleet: {} devices over the last {} h, {} raw records in the sensors' formats (PCAPdroid, Zeek, Suricata EVE; tunnel address map in {}), {} planted malicious behaviours; producing to the raw topics...",
            config.devices,
            config.hours,
            records.len(),
            config_file.display(),
            fleet.truth.planted.len()
        );
        offport_replay::produce_raw(&settings, &records, &mut |_| {}).await?;
        println!("produced; findings as they arrive on {alerts_topic}:\n");

        let started = Instant::now();
        let mut findings: Vec<Finding> = Vec::new();
        let mut last = Instant::now();
        loop {
            let detected = fleet
                .truth
                .planted
                .iter()
                .filter(|p| findings.iter().any(|f| matches(f, p)))
                .count();
            let quiet_for = if detected == fleet.truth.planted.len() {
                Duration::from_secs(8)
            } else {
                Duration::from_secs(25)
            };
            if last.elapsed() > quiet_for || started.elapsed() > Duration::from_secs(300) {
                break;
            }
            let message = match tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
                Ok(message) => message?,
                Err(_) => continue,
            };
            last = Instant::now();
            let Some(payload) = message.payload() else {
                continue;
            };
            let finding: Finding = codec.decode(payload).await?;
            print_finding(&finding, fleet.truth.planted.iter().any(|p| matches(&finding, p)));
            findings.push(finding);
        }

        // The same records in this process, for comparison.
        let mut options = ReplayOptions::with_baseline_yaml(&fleet.baseline_yaml, now)?;
        options.proxy.sources =
            offport_core::normalize::proxy::sources::SourceMap::new(sensors.sources.clone());
        let mut replay = Replay::new(options);
        for record in &records {
            replay.push(record.stream, Some(&record.device_id), record.value.as_bytes());
        }
        let local = replay.finish().latest();
        let latest = latest_revisions(&findings);
        let report = Report::new("demo", &latest, findings.len(), Some(&fleet.truth));
        println!("\nSummary against the simulator's ground truth:");
        print!("{}", report.summary());
        let ids = |list: &[Finding]| -> std::collections::BTreeSet<String> {
            list.iter().map(|f| f.finding_id.clone()).collect()
        };
        let (topic_ids, local_ids) = (ids(&latest), ids(&local));
        println!(
            "the same records replayed in-process (`offportctl replay`): {} findings, {} of them with the same ids as the services'",
            local.len(),
            topic_ids.intersection(&local_ids).count()
        );
        let scraped = scrape_metrics(&services)?;
        let evaluation = report.evaluation.as_ref();
        anyhow::Ok(scraped && evaluation.is_some_and(|e| e.recall >= 0.95))
    });
    services.stop();
    let good = result?;
    println!(
        "\nservices stopped; the stack is left running (`cargo xtask stack down` stops it). Next: `offportctl simulate --out DIR` and `offportctl replay --input DIR --report DIR` for a larger fleet."
    );
    Ok(if good {
        ExitCode::SUCCESS
    } else {
        println!(
            "demo failed: recall below 0.95 or a metrics series missing (see above); service logs in {}",
            log_dir.display()
        );
        ExitCode::FAILURE
    })
}

/// Starts the five services on `settings`' stack and topics, with `config_file` as their
/// `OFFPORT_CONFIG` and their logs in `log_dir`; metrics on consecutive ports from
/// 127.0.0.1:19464.
pub(crate) fn start_services(
    bin_dir: &std::path::Path,
    settings: &Settings,
    config_file: &std::path::Path,
    log_dir: &std::path::Path,
) -> Result<Services> {
    let prefix = &settings.topics.prefix;
    let mut services = Services(Vec::new());
    for (i, (package, binary)) in SERVICES.iter().enumerate() {
        let port = FIRST_PORT + u16::try_from(i)?;
        let log = log_dir.join(format!("{package}.log"));
        let child = Command::new(bin_dir.join(binary))
            .env(
                "OFFPORT__KAFKA__BOOTSTRAP_SERVERS",
                &settings.kafka.bootstrap_servers,
            )
            .env("OFFPORT__REGISTRY__URL", &settings.registry.url)
            .env("OFFPORT__TOPICS__PREFIX", prefix)
            // The run's own consumer groups: none of a test's or an earlier run's members to
            // wait for.
            .env(
                "OFFPORT__PIPELINE__GROUP_PREFIX",
                format!("{prefix}offport-"),
            )
            .env(
                "OFFPORT__TOPICS__PARTITIONS",
                settings.topics.partitions.to_string(),
            )
            .env(
                "OFFPORT__OBSERVABILITY__LISTEN",
                format!("127.0.0.1:{port}"),
            )
            .env(
                "OFFPORT__STREAM__IDLE_TIMEOUT_MS",
                settings.stream.idle_timeout_ms.to_string(),
            )
            .env("OFFPORT__LOG__FILTER", "info")
            .env("OFFPORT_CONFIG", config_file)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(log.with_extension("err.log"))?)
            .spawn()
            .with_context(|| format!("starting {}", bin_dir.join(binary).display()))?;
        services.0.push((package, port, child));
    }
    Ok(services)
}

/// Deletes the topics of earlier demo runs and creates this run's.
async fn prepare(settings: &Settings) -> Result<()> {
    prepare_family(settings, "demo-").await
}

/// Deletes the topics of earlier runs named `family*` (other than this run's) and creates
/// this run's.
pub(crate) async fn prepare_family(settings: &Settings, family: &str) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = settings.kafka.client_config().create()?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(30))
        .context("listing topics")?;
    let old: Vec<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|name| name.starts_with(family) && !name.starts_with(&settings.topics.prefix))
        .collect();
    if !old.is_empty() {
        let refs: Vec<&str> = old.iter().map(String::as_str).collect();
        admin
            .delete_topics(&refs, &AdminOptions::new())
            .await
            .context("deleting topics of earlier demo runs")?;
        println!("deleted {} topics of earlier {family}* runs", old.len());
    }
    let specs: Vec<_> = TopicRole::ALL
        .iter()
        .map(|role| role.spec(&settings.topics))
        .collect();
    ensure_topics(&settings.kafka.client_config(), &specs).await?;
    Ok(())
}

pub(crate) struct Services(pub(crate) Vec<(&'static str, u16, Child)>);

impl Services {
    pub(crate) fn stop(&mut self) {
        for (_, _, child) in &mut self.0 {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for (name, _, child) in &mut self.0 {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(100))
                    }
                    _ => {
                        eprintln!("{name} did not stop on SIGTERM; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        self.0.clear();
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Series every service must expose (docs/operations.md, "Operating a service"), and those of the two
/// stateful ones.
const SERIES: [&str; 8] = [
    "offport_records_in_total",
    "offport_records_out_total",
    "offport_dead_letters_total",
    "offport_transactions_total",
    "offport_transaction_aborts_total",
    "offport_batch_duration_seconds_bucket",
    "offport_end_to_end_latency_seconds_bucket",
    "offport_consumer_lag_records",
];
const STATEFUL_SERIES: [&str; 9] = [
    "offport_cache_hits_total",
    "offport_cache_misses_total",
    "offport_cache_entries",
    "offport_state_keys",
    "offport_state_bytes",
    "offport_tasks",
    "offport_state_restores_total",
    "offport_changelog_records_total",
    "offport_state_evictions_total",
];

/// Scrapes every service's `/metrics` and checks the documented series are there and that it
/// counted records. Prints one line per service; false when one falls short.
fn scrape_metrics(services: &Services) -> Result<bool> {
    let agent = ureq::Agent::new_with_defaults();
    let mut good = true;
    println!();
    for (name, port, _) in &services.0 {
        let url = format!("http://127.0.0.1:{port}/metrics");
        let text = agent
            .get(&url)
            .call()
            .with_context(|| format!("scraping {url}"))?
            .body_mut()
            .read_to_string()?;
        let stateful = matches!(*name, "joiner" | "scorer");
        let missing: Vec<&str> = SERIES
            .iter()
            .chain(if stateful {
                STATEFUL_SERIES.iter()
            } else {
                [].iter()
            })
            .filter(|series| !text.lines().any(|l| l.starts_with(*series)))
            .copied()
            .collect();
        let records_in = text
            .lines()
            .find_map(|l| l.strip_prefix("offport_records_in_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        // The caches the stage reads through answered lookups: every Avro input record asks
        // the registry readers, and the scorer resolves baselines.
        let mut caches: Vec<&str> = vec![];
        if stateful {
            caches.push("registry_readers");
        }
        if *name == "scorer" {
            caches.push("baseline_resolution");
        }
        let idle_caches: Vec<&str> = caches
            .into_iter()
            .filter(|cache| {
                let lookups = |series: &str| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(&format!("{series}{{cache=\"{cache}\"}} ")))
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .unwrap_or(0.0)
                };
                lookups("offport_cache_hits_total") + lookups("offport_cache_misses_total") <= 0.0
            })
            .collect();
        if !idle_caches.is_empty() {
            good = false;
            println!("metrics {name:<16} {url}: no lookups counted by caches {idle_caches:?}");
        }
        if missing.is_empty() && records_in > 0.0 {
            println!(
                "metrics {name:<16} {url}: {} series, {records_in} records in",
                text.lines().filter(|l| !l.starts_with('#')).count()
            );
        } else {
            good = false;
            println!("metrics {name:<16} {url}: MISSING {missing:?}, {records_in} records in");
        }
    }
    Ok(good)
}

pub(crate) async fn wait_ready(services: &mut Services) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let agent = ureq::Agent::new_with_defaults();
    for (name, port, child) in &mut services.0 {
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("{name} exited at start ({status}); see its log");
            }
            let url = format!("http://127.0.0.1:{port}/readyz");
            if agent.get(&url).call().is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("{name} not ready within 120 s ({url})");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

fn print_finding(f: &Finding, planted: bool) {
    let kind = if f.revision == 0 { "NEW   " } else { "UPDATE" };
    println!(
        "{kind} {:<9} {:>3}  {:<26} {} {} -> {}:{} {} ({} sessions){}",
        format!("{:?}", f.severity),
        f.score,
        format!("{:?}", f.analytic),
        f.device_id,
        f.app_id.as_deref().unwrap_or("-"),
        f.dst_host.as_deref().unwrap_or(&f.dst_ip),
        f.dst_port,
        f.protocol.name(),
        f.session_count,
        if planted { "" } else { "  [not planted]" }
    );
    if f.revision == 0 {
        let mut shown = BTreeMap::new();
        for e in &f.evidence {
            shown.entry(format!("{:?}", e.kind)).or_insert_with(|| {
                format!(
                    "{}{}",
                    e.observed,
                    e.baseline
                        .as_ref()
                        .map(|b| format!("  [{b}]"))
                        .unwrap_or_default()
                )
            });
        }
        for (kind, text) in shown {
            println!("         {kind:<32} {text}");
        }
    }
}

/// The services' configuration file in `dir` for a fleet: the tunnel sensors' address map in a
/// CSV `normalize.sources_file` beside it, which normalize-proxy alone reads (inline, every
/// service's configuration loader would hold it, about 3.5 KB an entry).
pub(crate) fn sources_config(
    dir: &std::path::Path,
    sensors: &offport_backtest::sensors::SensorFleet,
) -> anyhow::Result<std::path::PathBuf> {
    let sources = std::path::absolute(dir.join("sources.csv"))?;
    std::fs::write(&sources, sensors.sources_csv())?;
    let config = dir.join("offport.yaml");
    let path = sources.to_string_lossy().replace('\'', "''");
    std::fs::write(&config, format!("normalize:\n  sources_file: '{path}'\n"))?;
    Ok(config)
}
