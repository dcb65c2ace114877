//! `cargo xtask precision`: recall and false findings of the five services on simulated fleets
//! in the sensors' formats, one fresh topic set per seed.
//!
//! Per seed: the fleet (the benign-behaviour library included) is simulated ending at the
//! current hour, written in the sensors' formats (PCAPdroid, Zeek, Suricata EVE), produced to
//! the raw topics of a fresh prefix (`precision-<time>-s<seed>.`) and worked by the five
//! services as processes. The run of a seed ends when every service has read its inputs to
//! the end and counted nothing new for 20 s (the joiner's idle rule has then released what it
//! held). The alerts topic is read to its end and judged against the ground truth.
//!
//! Prints, per seed, recall, the plants raised by every analytic their behaviour calls for,
//! false findings and their rate per 10,000 benign device-days; then false findings per benign
//! behaviour and per rule over all seeds. Exits non-zero when a seed's recall is under
//! `--min-recall`, a plant misses an analytic it calls for, or the false findings of a seed
//! exceed `--max-false-per-10k` benign device-days (rounded down to whole findings, so a small
//! fleet is allowed none).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use offport_backtest::replay::latest_revisions;
use offport_backtest::report::{Evaluation, Report};
use offport_backtest::sensors::sensor_formats;
use offport_backtest::sim::{simulate, FleetConfig, HOUR};
use offport_core::model::Finding;
use offport_devstack::stack::StackOptions;
use offport_kafka::registry::RegistryCodec;
use offport_kafka::settings::Settings;
use offport_kafka::topics::TopicRole;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;

use crate::demo::{prepare_family, start_services, wait_ready, Services};

/// `cargo xtask precision`.
#[derive(Args, Debug)]
pub struct PrecisionArgs {
    /// Seeds, comma-separated: one fleet and one run of the services each.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    seeds: Vec<u64>,
    /// Devices per fleet.
    #[arg(long, default_value_t = 1_000)]
    devices: usize,
    /// Hours simulated (ending at the current hour).
    #[arg(long, default_value_t = 24)]
    hours: u32,
    /// Share of devices with a planted behaviour.
    #[arg(long, default_value_t = 0.05)]
    infected_share: f64,
    /// Lowest recall accepted per seed.
    #[arg(long, default_value_t = 0.98)]
    min_recall: f64,
    /// Most false findings accepted per 10,000 benign device-days.
    #[arg(long, default_value_t = 1.0)]
    max_false_per_10k: f64,
    /// Longest wait for one seed's records to be worked, in seconds.
    #[arg(long, default_value_t = 3_600)]
    timeout: u64,
}

/// One seed's outcome.
struct Outcome {
    seed: u64,
    records: usize,
    seconds: f64,
    evaluation: Evaluation,
}

pub(crate) fn run(options: &StackOptions, args: &PrecisionArgs) -> Result<std::process::ExitCode> {
    if args.seeds.is_empty() {
        bail!("--seeds names no seed");
    }
    let (bootstrap, registry, _) = crate::ensure_stack(options)?;
    let bin_dir = crate::demo::build_services()?;
    let runtime = crate::runtime()?;
    let mut outcomes = Vec::new();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    for &seed in &args.seeds {
        let settings = crate::demo::local_settings(
            &bootstrap,
            &registry,
            &format!("precision-{stamp}-s{seed}."),
            options.partitions,
            crate::demo::DEMO_IDLE_TIMEOUT_MS,
        );
        let log_dir = options
            .run_dir
            .join("precision")
            .join(format!("seed-{seed}"));
        std::fs::create_dir_all(&log_dir)?;
        let outcome = runtime.block_on(one_seed(&bin_dir, &settings, &log_dir, seed, args))?;
        let e = &outcome.evaluation;
        println!(
            "seed {seed}: {} raw records worked in {:.0} s; recall {:.3} ({}/{}), {} plants raised by every analytic they call for; {} false findings, {:.2} per 10,000 benign device-days ({:.1} benign device-days)",
            outcome.records,
            outcome.seconds,
            e.recall,
            e.detected,
            e.planted,
            e.by_behaviour.values().map(|b| b.complete).sum::<usize>(),
            e.false_findings,
            per_10k(e),
            e.benign_device_days
        );
        outcomes.push(outcome);
    }
    Ok(print_summary(&outcomes, args))
}

fn per_10k(e: &Evaluation) -> f64 {
    if e.benign_device_days > 0.0 {
        e.false_findings as f64 * 10_000.0 / e.benign_device_days
    } else {
        0.0
    }
}

async fn one_seed(
    bin_dir: &std::path::Path,
    settings: &Settings,
    log_dir: &std::path::Path,
    seed: u64,
    args: &PrecisionArgs,
) -> Result<Outcome> {
    prepare_family(settings, "precision-").await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let config = FleetConfig {
        devices: args.devices,
        hours: args.hours,
        start: now - now.rem_euclid(HOUR) - i64::from(args.hours) * HOUR,
        seed,
        infected_share: args.infected_share,
        ..FleetConfig::default()
    };
    let fleet = simulate(&config)?;
    let sensors = sensor_formats(&fleet)?;
    let config_file = crate::demo::sources_config(log_dir, &sensors)?;
    let records = sensors.raw_lines();
    let codec = RegistryCodec::new(&settings.registry)?;
    crate::demo::publish_baseline(settings, &codec, &fleet.baseline_yaml).await?;

    let mut services = start_services(bin_dir, settings, &config_file, log_dir)?;
    wait_ready(&mut services).await?;
    let alerts_topic = TopicRole::Alerts.spec(&settings.topics).name;
    let consumer: StreamConsumer = settings
        .kafka
        .client_config()
        .set("group.id", format!("{}reader", settings.topics.prefix))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()?;
    consumer.subscribe(&[&alerts_topic])?;
    println!(
        "seed {seed}: {} devices x {} h, {} raw records in the sensors' formats, {} planted; producing to {}*",
        config.devices,
        config.hours,
        records.len(),
        fleet.truth.planted.len(),
        settings.topics.prefix
    );
    let started = Instant::now();
    offport_replay::produce_raw(settings, &records, &mut |_| {}).await?;

    let mut findings: Vec<Finding> = Vec::new();
    let mut settled_since: Option<Instant> = None;
    let mut last_counts = (f64::NAN, f64::NAN);
    let mut next_scrape = Instant::now();
    let mut next_report = Instant::now() + Duration::from_secs(30);
    loop {
        if started.elapsed() > Duration::from_secs(args.timeout) {
            services.stop();
            bail!(
                "seed {seed}: not worked within {} s; service logs in {}",
                args.timeout,
                log_dir.display()
            );
        }
        if Instant::now() >= next_scrape {
            next_scrape = Instant::now() + Duration::from_secs(2);
            let counts = progress(&mut services)?;
            let settled = counts.0 == 0.0 && counts.1 == last_counts.1;
            last_counts = counts;
            settled_since = match (settled, settled_since) {
                (true, Some(since)) => Some(since),
                (true, None) => Some(Instant::now()),
                (false, _) => None,
            };
            if settled_since.is_some_and(|s| s.elapsed() >= Duration::from_secs(20)) {
                break;
            }
            if Instant::now() >= next_report {
                next_report = Instant::now() + Duration::from_secs(30);
                println!(
                    "seed {seed}: {:.0} s, {} records in across the services, lag {}, {} finding records",
                    started.elapsed().as_secs_f64(),
                    counts.1,
                    counts.0,
                    findings.len()
                );
            }
        }
        match tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await {
            Ok(message) => {
                let message = message?;
                if let Some(payload) = message.payload() {
                    findings.push(codec.decode(payload).await?);
                }
            }
            Err(_) => continue,
        }
    }
    // What the scorer committed last: read until the reader is quiet.
    while let Ok(message) = tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await {
        if let Some(payload) = message?.payload() {
            findings.push(codec.decode(payload).await?);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    services.stop();
    let latest = latest_revisions(&findings);
    let report = Report::new(
        &format!("precision seed {seed}"),
        &latest,
        findings.len(),
        Some(&fleet.truth),
    );
    std::fs::write(log_dir.join("report.json"), report.to_json())?;
    std::fs::write(log_dir.join("report.html"), report.to_html())?;
    let evaluation = report
        .evaluation
        .context("a report with a ground truth has an evaluation")?;
    Ok(Outcome {
        seed,
        records: records.len(),
        seconds,
        evaluation,
    })
}

/// The services' total consumer lag and records read, from their `/metrics`.
fn progress(services: &mut Services) -> Result<(f64, f64)> {
    let agent = ureq::Agent::new_with_defaults();
    let (mut lag, mut records_in) = (0.0, 0.0);
    for (name, port, child) in &mut services.0 {
        if let Some(status) = child.try_wait()? {
            bail!("{name} exited ({status}); see its log");
        }
        let url = format!("http://127.0.0.1:{port}/metrics");
        let text = agent
            .get(&url)
            .call()
            .with_context(|| format!("scraping {url}"))?
            .body_mut()
            .read_to_string()?;
        lag += sum_of(&text, "offport_consumer_lag_records");
        records_in += sum_of(&text, "offport_records_in_total");
    }
    Ok((lag, records_in))
}

/// The sum of every sample of `series` in a Prometheus text exposition.
fn sum_of(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(series)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn print_summary(outcomes: &[Outcome], args: &PrecisionArgs) -> std::process::ExitCode {
    println!("\nseed  records  recall  complete  false  per 10k benign device-days");
    let mut failed = Vec::new();
    let mut by_behaviour: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_rule: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_plant: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    for o in outcomes {
        let e = &o.evaluation;
        let complete: usize = e.by_behaviour.values().map(|b| b.complete).sum();
        println!(
            "{:>4}  {:>7}  {:>6.3}  {:>4}/{:<4} {:>5}  {:>8.2}",
            o.seed,
            o.records,
            e.recall,
            complete,
            e.planted,
            e.false_findings,
            per_10k(e)
        );
        let allowed = (args.max_false_per_10k * e.benign_device_days / 10_000.0).floor() as usize;
        if e.recall < args.min_recall {
            failed.push(format!(
                "seed {}: recall {:.3} < {}",
                o.seed, e.recall, args.min_recall
            ));
        }
        if complete < e.planted {
            failed.push(format!(
                "seed {}: {} of {} plants miss an analytic they call for",
                o.seed,
                e.planted - complete,
                e.planted
            ));
        }
        if e.false_findings > allowed {
            failed.push(format!(
                "seed {}: {} false findings, at most {allowed} allowed ({} per 10,000 of {:.1} benign device-days)",
                o.seed, e.false_findings, args.max_false_per_10k, e.benign_device_days
            ));
        }
        for (k, n) in &e.false_by_behaviour {
            *by_behaviour.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &e.false_by_rule {
            *by_rule.entry(k.clone()).or_default() += n;
        }
        for (b, r) in &e.by_behaviour {
            let entry = by_plant.entry(format!("{b:?}")).or_default();
            entry.0 += r.planted;
            entry.1 += r.detected;
            entry.2 += r.complete;
        }
    }
    println!("\nplanted behaviour              planted  detected  by every analytic it calls for");
    for (b, (planted, detected, complete)) in &by_plant {
        println!("{b:<30} {planted:>7}  {detected:>8}  {complete:>8}");
    }
    for (title, map) in [
        ("false findings per benign behaviour", &by_behaviour),
        ("false findings per rule", &by_rule),
    ] {
        println!("\n{title} (all seeds):");
        if map.is_empty() {
            println!("  none");
        }
        let mut rows: Vec<_> = map.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (k, n) in rows {
            println!("  {k:<40} {n}");
        }
    }
    if failed.is_empty() {
        println!("\nprecision: every seed within its bounds");
        std::process::ExitCode::SUCCESS
    } else {
        for f in &failed {
            println!("precision: {f}");
        }
        std::process::ExitCode::FAILURE
    }
}
