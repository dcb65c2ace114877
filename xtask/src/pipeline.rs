//! `cargo xtask pipeline`: the five services as they run in production, fed at a steady rate.
//!
//! A simulated fleet in the sensors' formats (PCAPdroid, Zeek, Suricata EVE, with the EDR and
//! MDM records) is produced to the raw topics in report-time order at a fixed rate of raw
//! records per second, while the five release-built services run on the local stack. Per rate it
//! prints the rate reached, every alert's latency from the production of the raw record that
//! completed its session to the alert's arrival on the alerts topic (read_committed, so after
//! the scorer's commit), each service's CPU per raw record (from the feed's start to the last
//! alert) and peak resident memory, and whether the services kept up. Alerts whose raw record
//! left in the feed's last 15 s are reported apart: there the last sessions wait for the idle
//! rule (`stream.idle_timeout_ms`, 3 s here), as they would when a real stream pauses; the
//! steady-state percentiles leave them out, and the verdict is on those.
//!
//! The fleet's hours are fed in less wall time than they span (the rate sets how much less), so
//! event time runs faster than the clock: the allowed lateness, 30 s of event time, is a
//! fraction of a second of wall time here. The target (alert latency p99 within the allowed
//! lateness plus 2 s) is checked against that fraction plus 2 s, which is stricter than a fleet
//! fed in real time would face.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use offport_backtest::sensors::sensor_formats;
use offport_backtest::sim::{simulate, FleetConfig, RawLine, Stream, HOUR};
use offport_core::model::{EpochMillis, Finding};
use offport_devstack::stack::StackOptions;
use offport_kafka::registry::RegistryCodec;
use offport_kafka::settings::Settings;
use offport_kafka::topics::TopicRole;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;

use crate::demo::{prepare_family, start_services, Services, SERVICES};

/// `cargo xtask pipeline`.
#[derive(Args, Debug)]
pub(crate) struct PipelineArgs {
    /// Raw records per second to feed, one run each (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10000")]
    rates: Vec<u32>,
    /// Simulated devices.
    #[arg(long, default_value_t = 1_000)]
    devices: usize,
    /// Simulated hours (the fleet's last hours before now).
    #[arg(long, default_value_t = 6)]
    hours: u32,
    /// The services' `stream.idle_timeout_ms`.
    #[arg(long, default_value_t = 3_000)]
    idle_timeout_ms: u64,
    /// Build and run the services in the dev profile instead of release.
    #[arg(long)]
    debug: bool,
}

/// The allowed lateness the services run with (the default `stream.allowed_lateness_ms`).
const ALLOWED_LATENESS_MS: i64 = 30_000;
/// The end of the feed left out of the steady-state latencies.
const TAIL: Duration = Duration::from_secs(15);
/// How long the alerts topic may stay quiet after the feed before a run is over.
const QUIET_AFTER_FEED: Duration = Duration::from_secs(20);

pub(crate) fn run(options: &StackOptions, args: &PipelineArgs) -> Result<std::process::ExitCode> {
    if args.rates.is_empty() || args.rates.contains(&0) {
        bail!("--rates: give one or more rates above 0");
    }
    let (bootstrap, registry, _) = crate::ensure_stack(options)?;
    let bin_dir = build(!args.debug)?;
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    let config = FleetConfig {
        devices: args.devices,
        hours: args.hours,
        start: now - now.rem_euclid(HOUR) - i64::from(args.hours) * HOUR,
        seed: 42,
        infected_share: 0.2,
        ..FleetConfig::default()
    };
    println!(
        "simulating {} devices x {} h in the sensors' formats...",
        config.devices, config.hours
    );
    let fleet = simulate(&config)?;
    let sensors = sensor_formats(&fleet)?;
    let mut lines = sensors.raw_lines();
    lines.sort_by_key(|l| l.time);
    let sessions = SessionEnds::of(&fleet.records);
    let span_ms = lines.last().map_or(0, |l| l.time) - lines.first().map_or(0, |l| l.time);
    println!(
        "{} raw records ({} sessions) over {:.1} h of event time",
        lines.len(),
        sessions.count,
        span_ms as f64 / 3_600_000.0
    );
    let runtime = crate::runtime()?;
    let mut outcomes = Vec::new();
    for &rate in &args.rates {
        let prefix = format!("pipeline-{}-{rate}.", now / 1000);
        let settings = crate::demo::local_settings(
            &bootstrap,
            &registry,
            &prefix,
            options.partitions,
            args.idle_timeout_ms,
        );
        let log_dir = options.run_dir.join("pipeline").join(rate.to_string());
        std::fs::create_dir_all(&log_dir)?;
        let config_file = crate::demo::sources_config(&log_dir, &sensors)?;
        let outcome = runtime.block_on(one_rate(
            &settings,
            &bin_dir,
            &config_file,
            &log_dir,
            &fleet.baseline_yaml,
            &lines,
            &sessions,
            rate,
        ))?;
        outcome.print(rate, span_ms, lines.len());
        outcomes.push((rate, outcome));
    }
    let kept_up: Vec<u32> = outcomes
        .iter()
        .filter(|(_, o)| o.kept_up(span_ms))
        .map(|(rate, _)| *rate)
        .collect();
    match kept_up.iter().max() {
        Some(best) => println!("\nhighest rate sustained of those tried: {best} raw records/s"),
        None => println!("\nnone of the rates tried was sustained"),
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Builds the five services; returns the directory of their binaries.
fn build(release: bool) -> Result<PathBuf> {
    if !release {
        return crate::demo::build_services();
    }
    println!("building the five services (release)...");
    let status = crate::cargo()
        .args(["build", "--quiet", "--release"])
        .args(SERVICES.iter().flat_map(|(package, _)| ["-p", package]))
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release of the services failed");
    }
    // xtask runs from <target>/debug; the release binaries are beside it.
    let exe = std::env::current_exe()?;
    let target = exe
        .parent()
        .and_then(|debug| debug.parent())
        .context("no target directory above the xtask binary")?;
    Ok(target.join("release"))
}

/// Each simulated session's end by (device, start), to find the raw record that completed a
/// finding's session.
struct SessionEnds {
    by_device: HashMap<String, Vec<(EpochMillis, EpochMillis)>>,
    count: usize,
}

impl SessionEnds {
    fn of(records: &[RawLine]) -> Self {
        let mut by_device: HashMap<String, Vec<(EpochMillis, EpochMillis)>> = HashMap::new();
        let mut count = 0;
        for record in records.iter().filter(|r| r.stream == Stream::Proxy) {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&record.value) else {
                continue;
            };
            let start = value.get("start_time").and_then(serde_json::Value::as_i64);
            let duration = value
                .get("duration_ms")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(0);
            if let Some(start) = start {
                by_device
                    .entry(record.device_id.clone())
                    .or_default()
                    .push((start, start + duration));
                count += 1;
            }
        }
        for list in by_device.values_mut() {
            list.sort_unstable();
        }
        Self { by_device, count }
    }

    /// The end of `device`'s session that started nearest `start` (within a second: the
    /// sensors write times to the second or the microsecond).
    fn end_of(&self, device: &str, start: EpochMillis) -> Option<EpochMillis> {
        let list = self.by_device.get(device)?;
        let at = list.partition_point(|(s, _)| *s < start);
        [at.checked_sub(1), Some(at)]
            .into_iter()
            .flatten()
            .filter_map(|i| list.get(i))
            .filter(|(s, _)| (s - start).abs() <= 1_000)
            .min_by_key(|(s, _)| (s - start).abs())
            .map(|(_, end)| *end)
    }
}

/// CPU seconds (user + system) and peak resident memory of a process, from /proc.
fn process_usage(pid: u32) -> Option<(f64, u64)> {
    let pid = pid.to_string();
    Some((
        offport_tests::cpu::process_cpu(&pid)?.as_secs_f64(),
        offport_tests::cpu::peak_rss(&pid)?,
    ))
}

/// Busy CPU seconds of the whole machine.
fn machine_busy() -> Option<f64> {
    offport_tests::cpu::machine_busy().map(|busy| busy.as_secs_f64())
}

struct Outcome {
    /// CPU seconds of the whole machine and of this process (the feed and the alert reader)
    /// over the same span as the services'.
    machine_cpu: f64,
    feeder_cpu: f64,
    /// Raw records per second reached by the feed.
    reached: f64,
    /// Seconds the feed took.
    fed_s: f64,
    /// Alert latencies in seconds, sorted.
    latencies: Vec<f64>,
    /// The latencies of alerts whose raw record left more than [`TAIL`] before the feed
    /// ended, sorted: the steady state, without the end of the feed, where the last sessions
    /// wait for the idle rule as they would when a real stream pauses.
    steady: Vec<f64>,
    /// Alerts whose session was not found in the fleet (timed from their start instead).
    unmatched: usize,
    /// Seconds from the end of the feed to the last alert.
    last_alert_after_feed_s: f64,
    /// Per service: CPU seconds over the run and peak resident bytes.
    services: Vec<(&'static str, f64, u64)>,
}

/// The `p` quantile of sorted `values` (nearest rank).
fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values.get(rank - 1).copied().unwrap_or(f64::NAN)
}

impl Outcome {
    fn percentile(&self, p: f64) -> f64 {
        percentile(&self.latencies, p)
    }

    /// The allowed lateness in wall seconds at this feed's compression of event time.
    fn lateness_wall_s(&self, span_ms: i64) -> f64 {
        ALLOWED_LATENESS_MS as f64 / 1_000.0 * self.fed_s / (span_ms.max(1) as f64 / 1_000.0)
    }

    /// Kept up: the steady-state alert latency p99 is within the allowed lateness (in wall
    /// time) plus 2 s.
    fn kept_up(&self, span_ms: i64) -> bool {
        !self.steady.is_empty()
            && self.reached > 0.0
            && percentile(&self.steady, 0.99) <= self.lateness_wall_s(span_ms) + 2.0
    }

    fn print(&self, rate: u32, span_ms: i64, records: usize) {
        let lateness = self.lateness_wall_s(span_ms);
        println!(
            "\nrate {rate}/s: fed {records} raw records in {:.1} s ({:.0}/s reached; event time {:.0}x the clock, so 30 s of lateness is {:.2} s of wall time)",
            self.fed_s,
            self.reached,
            span_ms as f64 / 1_000.0 / self.fed_s.max(1e-9),
            lateness
        );
        println!(
            "  alerts: {}; latency p50 {:.2} s, p90 {:.2} s, p99 {:.2} s, max {:.2} s (target p99 <= {:.2} s); {} timed from their session's start; last alert {:.1} s after the feed",
            self.latencies.len(),
            self.percentile(0.5),
            self.percentile(0.9),
            self.percentile(0.99),
            self.latencies.last().copied().unwrap_or(f64::NAN),
            lateness + 2.0,
            self.unmatched,
            self.last_alert_after_feed_s
        );
        println!(
            "  steady state ({} alerts, all but the feed's last {} s): p50 {:.2} s, p90 {:.2} s, p99 {:.2} s, max {:.2} s",
            self.steady.len(),
            TAIL.as_secs(),
            percentile(&self.steady, 0.5),
            percentile(&self.steady, 0.9),
            percentile(&self.steady, 0.99),
            self.steady.last().copied().unwrap_or(f64::NAN),
        );
        for (name, cpu, peak) in &self.services {
            println!(
                "  {name:<16} {:>6.2} us CPU per raw record, peak RSS {:>6.1} MiB",
                cpu * 1e6 / records.max(1) as f64,
                *peak as f64 / 1_048_576.0
            );
        }
        let total: f64 = self.services.iter().map(|(_, cpu, _)| cpu).sum();
        let per = |cpu: f64| cpu * 1e6 / records.max(1) as f64;
        println!(
            "  machine        {:>6.2} us CPU per raw record: the five {:.2}, the feed and reader (this process) {:.2}, the broker, registry and the rest {:.2}",
            per(self.machine_cpu),
            per(total),
            per(self.feeder_cpu),
            per(self.machine_cpu - total - self.feeder_cpu)
        );
        println!(
            "  all five        {:>6.2} us CPU per raw record; {}",
            total * 1e6 / records.max(1) as f64,
            if self.kept_up(span_ms) {
                "kept up"
            } else {
                "did not keep up"
            }
        );
    }
}

#[allow(clippy::too_many_arguments)]
async fn one_rate(
    settings: &Settings,
    bin_dir: &std::path::Path,
    config_file: &std::path::Path,
    log_dir: &std::path::Path,
    baseline_yaml: &str,
    lines: &[RawLine],
    sessions: &SessionEnds,
    rate: u32,
) -> Result<Outcome> {
    prepare_family(settings, "pipeline-").await?;
    let codec = RegistryCodec::new(&settings.registry)?;
    crate::demo::publish_baseline(settings, &codec, baseline_yaml).await?;
    let mut services: Services = start_services(bin_dir, settings, config_file, log_dir)?;
    crate::demo::wait_ready(&mut services).await?;

    let alerts_topic = TopicRole::Alerts.spec(&settings.topics).name;
    let consumer: StreamConsumer = settings
        .kafka
        .client_config()
        .set(
            "group.id",
            format!("{}bench-reader", settings.topics.prefix),
        )
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()?;
    consumer.subscribe(&[&alerts_topic])?;
    // Joined before the feed starts, so the first alerts are not read late.
    let joined = Instant::now();
    while consumer.assignment()?.count() == 0 && joined.elapsed() < Duration::from_secs(30) {
        let _ = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await;
    }

    let machine_before = machine_busy();
    let feeder_before = process_usage(std::process::id());
    let usage_before: Vec<Option<(f64, u64)>> = services
        .0
        .iter()
        .map(|(_, _, child)| process_usage(child.id()))
        .collect();
    let producer: FutureProducer = settings
        .kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create()?;
    let topics: HashMap<Stream, String> = Stream::ALL
        .iter()
        .map(|s| {
            let role = match s {
                Stream::Proxy => TopicRole::RawProxy,
                Stream::Edr => TopicRole::RawEdr,
                Stream::Mdm => TopicRole::RawMdm,
            };
            (*s, role.spec(&settings.topics).name)
        })
        .collect();

    // The alerts, read while the feed runs.
    let reader_codec = RegistryCodec::new(&settings.registry)?;
    // Set when the feed has been delivered: the reader may stop at the next quiet spell.
    let feed_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = tokio::spawn({
        let codec = reader_codec;
        let feed_done = std::sync::Arc::clone(&feed_done);
        async move {
            let mut seen: Vec<(Instant, Finding)> = Vec::new();
            let mut last = Instant::now();
            loop {
                match tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await {
                    Ok(Ok(message)) => {
                        let at = Instant::now();
                        last = at;
                        if let Some(payload) = message.payload() {
                            let finding: Finding = codec.decode(payload).await?;
                            seen.push((at, finding));
                        }
                    }
                    Ok(Err(error)) => return Err(anyhow::Error::from(error)),
                    Err(_) => {}
                }
                if feed_done.load(std::sync::atomic::Ordering::Relaxed)
                    && last.elapsed() > QUIET_AFTER_FEED
                {
                    return anyhow::Ok(seen);
                }
            }
        }
    });

    let started = Instant::now();
    let mut sent_at: Vec<Instant> = Vec::with_capacity(lines.len());
    let mut deliveries = Vec::with_capacity(lines.len());
    let per_ms = f64::from(rate) / 1_000.0;
    for line in lines {
        // Steady: the n-th record goes no earlier than n / rate seconds after the start.
        let due = Duration::from_secs_f64(sent_at.len() as f64 / per_ms / 1_000.0);
        let elapsed = started.elapsed();
        if due > elapsed + Duration::from_millis(2) {
            tokio::time::sleep(due - elapsed).await;
        }
        let topic = topics.get(&line.stream).map(String::as_str).unwrap_or("");
        deliveries.push(offport_replay::enqueue_raw(&producer, topic, line).await?);
        sent_at.push(Instant::now());
    }
    let fed = started.elapsed();
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((error, _))) => return Err(error.into()),
            Err(_) => bail!("a raw record's delivery was cancelled"),
        }
    }
    let feed_end = Instant::now();
    feed_done.store(true, std::sync::atomic::Ordering::Relaxed);
    // The services' usage, sampled while the reader waits for the alerts topic to go quiet:
    // the sample just after the last alert counts, not the idle wait after it.
    let usage = |services: &Services| -> Vec<Option<(f64, u64)>> {
        services
            .0
            .iter()
            .map(|(_, _, child)| process_usage(child.id()))
            .collect()
    };
    let sample = |services: &Services| {
        (
            Instant::now(),
            usage(services),
            machine_busy(),
            process_usage(std::process::id()),
        )
    };
    let mut samples = vec![sample(&services)];
    while !reader.is_finished() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        samples.push(sample(&services));
    }
    let alerts = reader.await.context("the alert reader")??;
    let last_alert = alerts.iter().map(|(at, _)| *at).max();
    let chosen = samples
        .iter()
        .find(|(at, ..)| last_alert.is_none_or(|last| *at >= last))
        .or(samples.last());
    let usage_after = chosen
        .map(|(_, usage, ..)| usage.clone())
        .unwrap_or_default();
    let machine_cpu = match (machine_before, chosen.and_then(|(_, _, m, _)| *m)) {
        (Some(before), Some(after)) => after - before,
        _ => f64::NAN,
    };
    let feeder_cpu = match (feeder_before, chosen.and_then(|(_, _, _, f)| *f)) {
        (Some((before, _)), Some((after, _))) => after - before,
        _ => f64::NAN,
    };
    let service_usage = services
        .0
        .iter()
        .zip(usage_before.iter().zip(&usage_after))
        .map(|((name, _, _), (before, after))| {
            let cpu = match (before, after) {
                (Some((b, _)), Some((a, _))) => a - b,
                _ => f64::NAN,
            };
            (*name, cpu, after.map_or(0, |(_, peak)| peak))
        })
        .collect();
    services.stop();

    // A finding's session was completed by the raw record reporting its end; lines went out in
    // report-time order, so that record left when the first line reporting at or after that
    // end did.
    let times: Vec<EpochMillis> = lines.iter().map(|l| l.time).collect();
    let left_at = |time: EpochMillis| {
        let i = times
            .partition_point(|t| *t < time)
            .min(sent_at.len().saturating_sub(1));
        sent_at.get(i).copied()
    };
    let mut unmatched = 0;
    let timed: Vec<(Instant, f64)> = alerts
        .iter()
        .filter_map(|(at, finding)| {
            let end = sessions
                .end_of(&finding.device_id, finding.event_time)
                .unwrap_or_else(|| {
                    unmatched += 1;
                    finding.event_time
                });
            left_at(end).map(|left| (left, at.saturating_duration_since(left).as_secs_f64()))
        })
        .collect();
    let tail_from = started + fed.saturating_sub(TAIL);
    let mut latencies: Vec<f64> = timed.iter().map(|(_, l)| *l).collect();
    latencies.sort_by(f64::total_cmp);
    let mut steady: Vec<f64> = timed
        .iter()
        .filter(|(left, _)| *left < tail_from)
        .map(|(_, l)| *l)
        .collect();
    steady.sort_by(f64::total_cmp);
    Ok(Outcome {
        machine_cpu,
        feeder_cpu,
        reached: lines.len() as f64 / fed.as_secs_f64().max(1e-9),
        fed_s: fed.as_secs_f64(),
        latencies,
        steady,
        unmatched,
        last_alert_after_feed_s: last_alert.map_or(f64::NAN, |at| {
            if at > feed_end {
                at.duration_since(feed_end).as_secs_f64()
            } else {
                -feed_end.duration_since(at).as_secs_f64()
            }
        }),
        services: service_usage,
    })
}
