//! `cargo xtask chaos`: the fault suite. The five services, as built, on a private broker and
//! registry (`offport_devstack::faults`), run twice over the same raw input: once undisturbed
//! (the reference) and once with faults: random SIGKILLs and SIGTERMs of every service, the
//! broker killed and started again on its data, and the registry killed and started again on
//! its database. The input is a simulated fleet, the raw fixtures of `tests/fixtures/raw`
//! (PCAPdroid, Zeek, Suricata EVE, UsageStats, MicroMDM/NanoMDM and Android Management API
//! records as those tools write them, each sensor's on one partition) and the bad-record corpus
//! of `tests/fixtures/bad` (every raw topic's).
//!
//! Each run goes stage by stage: the three normalizers until their groups have committed every
//! raw record, then the joiner and then the scorer to the end of their input
//! (`stream.stop_at_end`). Staged, a run's answer does not depend on how fast one service is
//! against another, so the two runs must agree exactly:
//!
//! - the normalized topics hold the same records, each once (nothing lost, nothing doubled;
//!   records compared without their ingest time and source offset, which differ run to run);
//! - every bad record is dead-lettered exactly once, with the corpus's reason;
//! - the enriched sessions and the alerts are the same records;
//! - no service panicked or exited with an error; every SIGTERM ended its service cleanly.
//!
//! `--kills` sets how many service stops the faulty run makes (spread over the stages); CI
//! runs a reduced form.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use offport_backtest::sim::{simulate, FleetConfig, Stream};
use offport_core::model::{
    DeadLetter, DeviceContext, DeviceEvent, EnrichedSession, Finding, NetworkSession,
};
use offport_devstack::faults::FaultStack;
use offport_devstack::stack::StackOptions;
use offport_kafka::registry::RegistryCodec;
use offport_kafka::settings::{Settings, StreamSettings};
use offport_kafka::topics::{ensure_topics, TopicRole};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::Value;

mod answer;
mod input;

use answer::*;
use input::*;

/// How the fault suite runs.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ChaosArgs {
    /// Service stops (SIGKILL or SIGTERM, half each) in the faulty run.
    #[arg(long, default_value_t = 60)]
    kills: usize,
    /// Devices of the simulated fleet.
    #[arg(long, default_value_t = 150)]
    devices: usize,
    /// Hours of the simulated fleet.
    #[arg(long, default_value_t = 12)]
    hours: u32,
    /// Seed of the fleet and of the faults.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// The address map the bad-record corpus is written for (`tests/fixtures/bad/README.md`):
/// without it its Zeek and EVE records would name no device.
const SOURCES_YAML: &str = "normalize:\n  sources:\n    - {network: 10.8.0.12/32, device_id: android-7f3a, platform: android}\n    - {network: fd00:8::/64, device_id: android-7f3a, platform: android}\n    - {network: 10.8.0.13/32, device_id: ios-91c2, platform: ios}\n";

/// Which stage a service is.
const NORMALIZERS: [&str; 3] = ["normalize-proxy", "normalize-edr", "normalize-mdm"];

/// What the faulty run did.
#[derive(Debug, Default)]
struct Faults {
    kills: BTreeMap<&'static str, u32>,
    terms: BTreeMap<&'static str, u32>,
    /// Stops that hit a service while its group still had records to commit.
    during_work: u32,
    broker_restarts: u32,
    registry_outages: u32,
}

/// A service process of a run.
struct Service {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// One run's topics and how it starts services.
struct Run<'a> {
    settings: Settings,
    bin_dir: &'a Path,
    log_dir: PathBuf,
    /// The configuration file every service reads: the corpus's address map.
    config: PathBuf,
    starts: u32,
}

impl Run<'_> {
    fn spawn(&mut self, name: &'static str) -> Result<Service> {
        let binary = crate::demo::SERVICES
            .iter()
            .find(|(package, _)| *package == name)
            .map(|(_, binary)| self.bin_dir.join(binary))
            .context("unknown service")?;
        self.starts += 1;
        let log = self.log_dir.join(format!("{name}-{}.log", self.starts));
        let stateful = !NORMALIZERS.contains(&name);
        let child = Command::new(&binary)
            .env(
                "OFFPORT__KAFKA__BOOTSTRAP_SERVERS",
                &self.settings.kafka.bootstrap_servers,
            )
            .env("OFFPORT__REGISTRY__URL", &self.settings.registry.url)
            .env("OFFPORT__TOPICS__PREFIX", &self.settings.topics.prefix)
            .env(
                "OFFPORT__TOPICS__PARTITIONS",
                self.settings.topics.partitions.to_string(),
            )
            .env(
                "OFFPORT__PIPELINE__GROUP_PREFIX",
                format!("{}offport-", self.settings.topics.prefix),
            )
            .env("OFFPORT__PIPELINE__INSTANCE_ID", name)
            // Small transactions: a stop lands in the middle of the work, not after it.
            .env("OFFPORT__PIPELINE__BATCH_MAX_RECORDS", "500")
            .env("OFFPORT__OBSERVABILITY__LISTEN", "127.0.0.1:0")
            .env("OFFPORT__STREAM__STOP_AT_END", stateful.to_string())
            .env("OFFPORT__LOG__FILTER", "info")
            .env("OFFPORT_CONFIG", &self.config)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(log.with_extension("err.log"))?)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Service { name, child, log })
    }
}

/// Sends `signal` to a service and waits for it to end; a SIGTERM must end it cleanly within
/// 15 s.
fn stop(service: &mut Service, signal: nix::sys::signal::Signal) -> Result<()> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(service.child.id())?);
    let _ = nix::sys::signal::kill(pid, signal);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = service.child.try_wait()? {
            if signal == nix::sys::signal::Signal::SIGTERM && !status.success() {
                bail!(
                    "{} ended with {status} on SIGTERM; see {}",
                    service.name,
                    service.log.display()
                );
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = service.child.kill();
            let _ = service.child.wait();
            bail!("{} did not stop within 15 s of {signal}", service.name);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Records the input topics of a consumer group have left to commit (`None` when the broker
/// does not answer).
fn remaining(settings: &Settings, group: &str, topics: &[String]) -> Option<i64> {
    let consumer: BaseConsumer = settings
        .kafka
        .client_config()
        .set("group.id", group)
        .create()
        .ok()?;
    let mut list = rdkafka::TopicPartitionList::new();
    for topic in topics {
        for partition in 0..settings.topics.partitions {
            list.add_partition(topic, partition);
        }
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(5))
        .ok()?;
    let mut left = 0;
    for element in committed.elements() {
        let (_, high) = consumer
            .fetch_watermarks(element.topic(), element.partition(), Duration::from_secs(5))
            .ok()?;
        let at = match element.offset() {
            rdkafka::Offset::Offset(at) => at,
            _ => 0,
        };
        left += (high - at).max(0);
    }
    Some(left)
}

fn raw_topics(settings: &Settings) -> Vec<(String, &'static str)> {
    [
        (TopicRole::RawProxy, "normalize-proxy"),
        (TopicRole::RawEdr, "normalize-edr"),
        (TopicRole::RawMdm, "normalize-mdm"),
    ]
    .map(|(role, stage)| (role.spec(&settings.topics).name, stage))
    .to_vec()
}

/// Records each normalizer still has to commit, summed (`None` while the broker is away).
fn normalizers_left(settings: &Settings) -> Option<i64> {
    let mut left = 0;
    for (topic, stage) in raw_topics(settings) {
        left += remaining(
            settings,
            &format!("{}offport-{stage}", settings.topics.prefix),
            &[topic],
        )?;
    }
    Some(left)
}

/// The faults the faulty run injects into one stage: `kills` service stops, and in the
/// normalizer stage one broker restart and one registry outage.
struct Plan<'a> {
    kills: usize,
    rng: &'a mut ChaCha8Rng,
    stack: Option<&'a mut FaultStack>,
    faults: &'a mut Faults,
}

/// The plan of a stage: faults only in the faulty run.
fn plan<'a>(
    faulty: bool,
    kills: usize,
    rng: &'a mut ChaCha8Rng,
    stack: Option<&'a mut FaultStack>,
    faults: &'a mut Faults,
) -> Option<Plan<'a>> {
    faulty.then_some(Plan {
        kills,
        rng,
        stack,
        faults,
    })
}

/// Runs the three normalizers until every raw record is committed, with the plan's faults.
fn normalize(run: &mut Run<'_>, mut plan: Option<Plan<'_>>) -> Result<Vec<PathBuf>> {
    let mut services: Vec<Service> = NORMALIZERS
        .iter()
        .map(|n| run.spawn(n))
        .collect::<Result<_>>()?;
    let mut logs: Vec<PathBuf> = services.iter().map(|s| s.log.clone()).collect();
    if let Some(plan) = plan.as_mut() {
        let kills = plan.kills;
        for round in 0..kills {
            std::thread::sleep(Duration::from_millis(plan.rng.random_range(200..1_500)));
            let index = plan.rng.random_range(0..services.len());
            let working = normalizers_left(&run.settings).is_some_and(|left| left > 0);
            let signal = if plan.rng.random_bool(0.5) {
                nix::sys::signal::Signal::SIGKILL
            } else {
                nix::sys::signal::Signal::SIGTERM
            };
            let service = services.get_mut(index).context("service")?;
            stop(service, signal)?;
            record(plan.faults, service.name, signal, working);
            let name = service.name;
            *service = run.spawn(name)?;
            logs.push(service.log.clone());
            if let Some(stack) = plan.stack.as_deref_mut() {
                if round == kills / 3 {
                    println!("  broker killed; started again on its data in 5 s");
                    stack.kill_broker()?;
                    std::thread::sleep(Duration::from_secs(5));
                    stack.start_broker()?;
                    plan.faults.broker_restarts += 1;
                }
                if round == 2 * kills / 3 {
                    println!("  registry killed; started again on its database in 8 s");
                    stack.kill_registry()?;
                    std::thread::sleep(Duration::from_secs(8));
                    stack.start_registry()?;
                    plan.faults.registry_outages += 1;
                }
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while normalizers_left(&run.settings) != Some(0) {
        for service in &mut services {
            if let Some(status) = service.child.try_wait()? {
                bail!(
                    "{} exited on its own ({status}); see {}",
                    service.name,
                    service.log.display()
                );
            }
        }
        if Instant::now() > deadline {
            bail!("the normalizers did not commit their input within 600 s");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for service in &mut services {
        stop(service, nix::sys::signal::Signal::SIGTERM)?;
    }
    Ok(logs)
}

fn record(
    faults: &mut Faults,
    name: &'static str,
    signal: nix::sys::signal::Signal,
    working: bool,
) {
    let counts = if signal == nix::sys::signal::Signal::SIGKILL {
        &mut faults.kills
    } else {
        &mut faults.terms
    };
    *counts.entry(name).or_default() += 1;
    if working {
        faults.during_work += 1;
    }
}

/// Runs a stateful stage to the end of its input (it exits 0 then), with the plan's stops.
fn to_the_end(
    run: &mut Run<'_>,
    name: &'static str,
    mut plan: Option<Plan<'_>>,
) -> Result<Vec<PathBuf>> {
    let mut service = run.spawn(name)?;
    let mut logs = vec![service.log.clone()];
    let mut left = plan.as_ref().map_or(0, |p| p.kills);
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        if let Some(status) = service.child.try_wait()? {
            if status.success() {
                return Ok(logs);
            }
            bail!("{name} exited with {status}; see {}", service.log.display());
        }
        if Instant::now() > deadline {
            bail!("{name} did not reach the end of its input within 900 s");
        }
        match plan.as_mut() {
            Some(plan) if left > 0 => {
                std::thread::sleep(Duration::from_millis(plan.rng.random_range(200..1_500)));
                if service.child.try_wait()?.is_some() {
                    continue;
                }
                let signal = if plan.rng.random_bool(0.5) {
                    nix::sys::signal::Signal::SIGKILL
                } else {
                    nix::sys::signal::Signal::SIGTERM
                };
                stop(&mut service, signal)?;
                record(plan.faults, name, signal, true);
                left -= 1;
                service = run.spawn(name)?;
                logs.push(service.log.clone());
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

pub(crate) fn run(options: &StackOptions, args: &ChaosArgs) -> Result<ExitCode> {
    let bin_dir = crate::demo::build_services()?;
    let dir = options.run_dir.join("chaos");
    println!(
        "starting a private broker and registry in {}...",
        dir.display()
    );
    let mut stack = FaultStack::start(options, &dir)?;
    // The fleet's last hours, as the demo's: records within the broker's usual retention.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let hour = offport_backtest::sim::HOUR;
    let config = FleetConfig {
        devices: args.devices,
        hours: args.hours,
        start: now - now.rem_euclid(hour) - i64::from(args.hours) * hour,
        seed: args.seed,
        infected_share: 0.1,
        ..FleetConfig::default()
    };
    let fleet = simulate(&config)?;
    let (bootstrap, registry_url) = (stack.bootstrap.clone(), stack.registry_url.clone());
    let settings_for = |prefix: &str| {
        crate::demo::local_settings(
            &bootstrap,
            &registry_url,
            prefix,
            options.partitions,
            StreamSettings::default().idle_timeout_ms,
        )
    };
    let (reference, faulty) = (settings_for("chaos-ref."), settings_for("chaos-run."));
    let (sensors_reference, sensors_faulty) = (
        settings_for("chaos-sensors-ref."),
        settings_for("chaos-sensors-run."),
    );
    let corpus = expected_dead_letters()?;
    println!(
        "input: {} devices x {} h, {} raw records, {} planted behaviours, and {} bad records; the sensors' fixtures on topics of their own",
        config.devices,
        config.hours,
        fleet.records.len(),
        fleet.truth.planted.len(),
        corpus.len()
    );
    let runtime = crate::runtime()?;
    let mut logs = Vec::new();
    let mut faults = Faults::default();
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    // A sixth of the stops for the sensors' normalizers; of the rest a third each for the
    // fleet's normalizers, joiner and scorer.
    let sensor_share = args.kills / 6;
    let share = (args.kills - sensor_share) / 3;
    let mut runs: std::collections::VecDeque<(String, Settings, bool, Input)> = [
        ("reference", reference.clone(), false, Input::Fleet),
        ("faulty", faulty.clone(), true, Input::Fleet),
        (
            "sensors-reference",
            sensors_reference.clone(),
            false,
            Input::Sensors,
        ),
        (
            "sensors-faulty",
            sensors_faulty.clone(),
            true,
            Input::Sensors,
        ),
    ]
    .map(|(label, settings, faulty, input)| (label.to_string(), settings, faulty, input))
    .into();
    let mut faulty = faulty;
    let mut attempts = 1;
    while let Some((label, settings, faulty_run, input)) = runs.pop_front() {
        let settings = &settings;
        println!("{label} run: topics {}*", settings.topics.prefix);
        runtime.block_on(prepare(settings, input, &fleet))?;
        let log_dir = dir.join(label);
        std::fs::create_dir_all(&log_dir)?;
        let config = log_dir.join("offport.yaml");
        std::fs::write(&config, SOURCES_YAML)?;
        let mut run = Run {
            settings: settings.clone(),
            bin_dir: &bin_dir,
            log_dir,
            config,
            starts: 0,
        };
        let started = Instant::now();
        // Markers the broker skipped before this run: a later count says whether it skipped
        // any during it.
        let skipped_before = skipped_markers(stack.dir());
        if input == Input::Sensors {
            logs.extend(normalize(
                &mut run,
                plan(faulty_run, sensor_share, &mut rng, None, &mut faults),
            )?);
            println!(
                "  normalizers done ({:.0} s)",
                started.elapsed().as_secs_f64()
            );
            continue;
        }
        logs.extend(normalize(
            &mut run,
            plan(
                faulty_run,
                args.kills - sensor_share - 2 * share,
                &mut rng,
                Some(&mut stack),
                &mut faults,
            ),
        )?);
        println!(
            "  normalizers done ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
        logs.extend(to_the_end(
            &mut run,
            "joiner",
            plan(faulty_run, share, &mut rng, None, &mut faults),
        )?);
        println!("  joiner done ({:.0} s)", started.elapsed().as_secs_f64());
        logs.extend(to_the_end(
            &mut run,
            "scorer",
            plan(faulty_run, share, &mut rng, None, &mut faults),
        )?);
        println!("  scorer done ({:.0} s)", started.elapsed().as_secs_f64());
        if faulty_run {
            let hanging = runtime.block_on(hanging_partitions(settings))?;
            if !hanging.is_empty() {
                let skipped = skipped_markers(stack.dir()).saturating_sub(skipped_before);
                println!(
                    "  the broker left transactions hanging on {} partitions: {}",
                    hanging.len(),
                    hanging.join("; ")
                );
                if skipped == 0 || attempts >= FAULTY_ATTEMPTS {
                    println!("chaos: FAILED ({})", keep_logs(options, &dir));
                    bail!(
                        "read_committed readers cannot reach the end of the faulty run's topics{}",
                        if skipped == 0 {
                            " and the broker's log does not say it skipped markers: offport's own doing until shown otherwise"
                        } else {
                            ", in every attempt"
                        }
                    );
                }
                // Kafka's defect, not offport's (docs/operations.md, 'A transaction left
                // hanging'): the answer cannot be read back, so the faulty run is repeated.
                println!(
                    "  its log says it skipped the markers of {skipped} transactions for partitions whose leader it did not know yet while it restarted (Kafka's rule for deleted topics); the faulty run is repeated on new topics"
                );
                attempts += 1;
                let again = settings_for(&format!("chaos-run{attempts}."));
                faulty = again.clone();
                runs.push_front((format!("faulty-{attempts}"), again, true, Input::Fleet));
            }
        }
    }
    let expected = runtime.block_on(answer(&reference))?;
    let actual = match runtime.block_on(answer(&faulty)) {
        Ok(actual) => actual,
        Err(error) => {
            hold(&stack);
            anyhow::bail!("{error:#} ({})", keep_logs(options, &dir));
        }
    };
    println!(
        "faults: SIGKILL {:?}, SIGTERM {:?} ({} in all, {} while the stage had records left), broker restarts {}, registry outages {}",
        faults.kills,
        faults.terms,
        faults.kills.values().chain(faults.terms.values()).sum::<u32>(),
        faults.during_work,
        faults.broker_restarts,
        faults.registry_outages
    );
    let mut good = true;
    good &= same("sessions", &expected.sessions, &actual.sessions);
    good &= same("device events", &expected.events, &actual.events);
    good &= same("device contexts", &expected.contexts, &actual.contexts);
    good &= same("enriched sessions", &expected.enriched, &actual.enriched);
    let alerts_same = same("alerts", &expected.alerts, &actual.alerts);
    good &= alerts_same;
    if !alerts_same {
        // The scorer reads each partition in order; a different order is a different input.
        let moved = order_differences(&expected.enriched_order, &actual.enriched_order);
        if moved.is_empty() {
            println!("    the enriched sessions came in the same order per partition: the scorer answered differently to the same input");
        }
        for line in moved {
            println!("    enriched sessions in another order: {line}");
        }
    }
    let letters = |list: &[(String, String)]| {
        list.iter()
            .map(|(h, r)| format!("{h} {r}"))
            .collect::<Vec<_>>()
    };
    let letters_same = same(
        "dead letters",
        &letters(&expected.dead_letters),
        &letters(&actual.dead_letters),
    );
    if !letters_same {
        // Where each missing letter's record sits, and whether its group committed past it.
        let missing: Vec<String> = expected
            .dead_letters
            .iter()
            .filter(|letter| !actual.dead_letters.contains(letter))
            .map(|(hash, _)| hash.clone())
            .collect();
        match locate_raw(&faulty, &missing) {
            Ok(found) => {
                for line in found {
                    println!("    missing letter's record: {line}");
                }
            }
            Err(error) => {
                println!("    (could not locate the missing letters' records: {error:#})")
            }
        }
    }
    good &= letters_same;
    // Every corpus record dead-lettered exactly once with its reason (the fleet adds none).
    good &= same(
        "corpus letters",
        &letters(&corpus),
        &letters(&actual.dead_letters),
    );
    let sensors_expected = runtime.block_on(answer(&sensors_reference))?;
    let sensors_actual = runtime.block_on(answer(&sensors_faulty))?;
    for (what, expected, actual) in [
        (
            "sensor sessions",
            &sensors_expected.sessions,
            &sensors_actual.sessions,
        ),
        (
            "sensor events",
            &sensors_expected.events,
            &sensors_actual.events,
        ),
        (
            "sensor contexts",
            &sensors_expected.contexts,
            &sensors_actual.contexts,
        ),
        (
            "sensor letters",
            &letters(&sensors_expected.dead_letters),
            &letters(&sensors_actual.dead_letters),
        ),
    ] {
        good &= same(what, expected, actual);
    }
    if sensors_expected.sessions.is_empty() {
        println!("  the sensors' fixtures made no session: nothing to compare");
        good = false;
    }
    if expected.alerts.is_empty() {
        println!("  the reference raised no alert: nothing to compare");
        good = false;
    }
    let panicked = panics(&logs);
    if panicked.is_empty() {
        println!("  no panic in {} service logs", logs.len());
    } else {
        good = false;
        for line in panicked.iter().take(10) {
            println!("  PANIC {line}");
        }
    }
    if !good {
        hold(&stack);
    }
    drop(stack);
    Ok(if good {
        println!("chaos: the faulty run's answer is the reference's");
        ExitCode::SUCCESS
    } else {
        println!("chaos: FAILED ({})", keep_logs(options, &dir));
        ExitCode::FAILURE
    })
}

/// Faulty runs tried when the broker leaves a transaction hanging.
const FAULTY_ATTEMPTS: u32 = 5;

/// Partitions of a run's topics whose last stable offset stays behind the high watermark for
/// 90 s (longer than the stages' 60 s transaction timeout, after which the coordinator aborts
/// any transaction it knows): `topic/p stable S high H` each.
async fn hanging_partitions(settings: &Settings) -> Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let probe = |isolation: &str| -> Result<BaseConsumer> {
        Ok(settings
            .kafka
            .client_config()
            .set("group.id", "offport-chaos-probe")
            .set("isolation.level", isolation)
            .create()?)
    };
    let (stable, high) = (probe("read_committed")?, probe("read_uncommitted")?);
    loop {
        let mut hanging = Vec::new();
        for role in TopicRole::ALL {
            let topic = role.spec(&settings.topics).name;
            let metadata = stable.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
            let partitions = metadata
                .topics()
                .first()
                .map_or(0, |t| t.partitions().len());
            for partition in 0..i32::try_from(partitions)? {
                let (_, last_stable) =
                    stable.fetch_watermarks(&topic, partition, Duration::from_secs(10))?;
                let (_, end) = high.fetch_watermarks(&topic, partition, Duration::from_secs(10))?;
                if last_stable < end {
                    hanging.push(format!(
                        "{topic}/{partition} stable {last_stable} high {end}"
                    ));
                }
            }
        }
        if hanging.is_empty() || Instant::now() >= deadline {
            return Ok(hanging);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Transactions whose markers the broker skipped, by its logs in `dir`: it writes one line per
/// transaction when it finds no leader for a partition it should mark.
fn skipped_markers(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("kafka-") && name.ends_with(".log")
        })
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|text| {
            text.lines()
                .filter(|l| l.contains("likely deleted already and hence can be skipped"))
                .count()
        })
        .sum()
}

/// Keeps the private stack up for `OFFPORT_CHAOS_HOLD_SECS` to look at what differs.
fn hold(stack: &FaultStack) {
    if let Ok(seconds) = std::env::var("OFFPORT_CHAOS_HOLD_SECS") {
        println!(
            "holding the private stack for {seconds} s: bootstrap {} registry {}",
            stack.bootstrap, stack.registry_url
        );
        std::thread::sleep(Duration::from_secs(seconds.parse().unwrap_or(600)));
    }
}

/// Copies a failed run's service and broker logs out of `dir` (which the next run empties);
/// says where they are.
fn keep_logs(options: &StackOptions, dir: &Path) -> String {
    let kept = options.run_dir.join(format!(
        "chaos-failed-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    ));
    let copy = |from: &Path, to: &Path| -> std::io::Result<()> {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            let name = entry.file_name();
            let is_log = name.to_string_lossy().ends_with(".log");
            if entry.file_type()?.is_file() && (is_log || from != dir) {
                std::fs::copy(entry.path(), to.join(name))?;
            }
        }
        Ok(())
    };
    let copied = copy(dir, &kept).and_then(|()| {
        // Each run's service logs (kafka-data holds the broker's partitions, not logs).
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() && entry.file_name() != "kafka-data" {
                copy(&entry.path(), &kept.join(entry.file_name()))?;
            }
        }
        Ok(())
    });
    match copied {
        Ok(()) => format!("service and broker logs kept in {}", kept.display()),
        Err(error) => format!("logs in {}; keeping a copy failed: {error}", dir.display()),
    }
}
