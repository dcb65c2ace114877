//! `offportctl simulate` and `offportctl replay`: the fleet simulator and the backtest replay.

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use offport_backtest::order::report_time;
use offport_backtest::replay::{latest_revisions, Replay, ReplayOptions, ReplayOutcome};
use offport_backtest::report::{compare, utc_minutes, version_labels, Provenance, Report};
use offport_backtest::sim::{self, FleetConfig, Stream, Truth};
use offport_core::baseline::{parse_documents, BaselineSet};
use offport_core::model::EpochMillis;
use offport_kafka::registry::RegistryCodec;
use offport_kafka::settings::Settings;
use offport_replay::{produce_raw, replay_topics, KafkaReplay, ReplaySource};

mod files;
mod progress;

pub use files::write_fleet;
use files::*;
use progress::*;

/// `offportctl simulate`.
#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Devices in the fleet.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Days to simulate (fractions allowed); overrides --hours.
    #[arg(long)]
    days: Option<f64>,
    /// Hours to simulate.
    #[arg(long, default_value_t = 24)]
    hours: u32,
    /// Random seed: the same seed and settings give the same records.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Start (RFC 3339 or epoch ms); default: the period ends at the current hour.
    #[arg(long)]
    start: Option<String>,
    /// Share of iOS devices.
    #[arg(long, default_value_t = 0.4)]
    ios_share: f64,
    /// Share of supervised devices.
    #[arg(long, default_value_t = 0.8)]
    supervised_share: f64,
    /// Share of developer devices.
    #[arg(long, default_value_t = 0.03)]
    developer_share: f64,
    /// Share of devices with a planted malicious behaviour.
    #[arg(long, default_value_t = 0.02)]
    infected_share: f64,
    /// Apps per device besides the platform's own.
    #[arg(long, default_value_t = 8)]
    apps_per_device: usize,
    /// Directory to write proxy.raw, edr.raw, mdm.raw, truth.json and baseline.yaml to.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also produce the records to the raw topics (timestamps = event times).
    #[arg(long)]
    to_kafka: bool,
    /// How the proxy/VPN records are written: `offport` (offport session JSON) or `sensors`
    /// (PCAPdroid rows for Android; Zeek logs or Suricata EVE from a per-app tunnel for iOS,
    /// with its address map in `sources.yaml`, as `normalize.sources`).
    #[arg(long, value_enum, default_value_t = FormatsArg::Offport)]
    formats: FormatsArg,
}

/// The proxy/VPN formats `simulate` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatsArg {
    /// offport session JSON.
    Offport,
    /// The sensors' own formats.
    Sensors,
}

/// Which topics `replay --kafka` reads.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SourceArg {
    /// The raw topics (normalized on the way).
    Raw,
    /// The normalized topics.
    Normalized,
}

/// `offportctl replay`.
#[derive(Args, Debug)]
pub struct ReplayArgs {
    #[command(flatten)]
    inputs: InputArgs,
    /// Topic for the findings of a Kafka replay; default `<prefix>replay.findings`.
    #[arg(long)]
    output_topic: Option<String>,
    /// Replay again under these baseline files and report what each raises that the other
    /// does not.
    #[arg(long, alias = "baseline-b")]
    compare: Vec<PathBuf>,
    /// Ground truth (truth.json); default the input's truth.json when present.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Directory for report.json, report.html, findings.jsonl and findings.ocsf.jsonl.
    #[arg(long)]
    report: Option<PathBuf>,
}

/// What a replay (or `baselines learn`) reads, and under which baselines.
#[derive(Args, Debug, Clone)]
pub struct InputArgs {
    /// A fleet directory (as `simulate --out` writes) replayed in this process, no broker.
    #[arg(long, conflicts_with = "kafka")]
    input: Option<PathBuf>,
    /// Replay the topics of the configured cluster instead.
    #[arg(long)]
    kafka: bool,
    /// Topics a Kafka replay reads.
    #[arg(long, value_enum, default_value = "raw")]
    source: SourceArg,
    /// Start of the range (RFC 3339 or epoch ms); default the beginning. From a directory, the
    /// proxy records before it are skipped; EDR and MDM records before it are still read, as the
    /// state the first sessions are joined with.
    #[arg(long)]
    from: Option<String>,
    /// End of the range (exclusive); default the end.
    #[arg(long)]
    to: Option<String>,
    /// Baseline files on top of the shipped default; default the input's baseline.yaml.
    #[arg(long)]
    baseline: Vec<PathBuf>,
    /// Use the baselines topic (every version, as the services do) instead of files.
    #[arg(long, conflicts_with = "baseline")]
    baselines_topic: bool,
    /// With --baselines-topic: only what was published by this time (RFC 3339 or epoch ms),
    /// the topic as it stood then.
    #[arg(long, requires = "baselines_topic")]
    baselines_as_of: Option<String>,
    /// A device inventory file (YAML or CSV, as `offportctl inventory publish` takes) replayed
    /// beside the MDM reports; default the input's inventory.yaml when present. A Kafka replay
    /// of the raw topics reads the inventory topic instead.
    #[arg(long, conflicts_with = "kafka")]
    inventory: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn now_millis() -> EpochMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| EpochMillis::try_from(d.as_millis()).unwrap_or(EpochMillis::MAX))
        .unwrap_or(0)
}

/// Runs `simulate`.
pub fn simulate(settings: Option<&Settings>, args: SimulateArgs) -> Result<()> {
    let hours = match args.days {
        Some(days) if days > 0.0 => (days * 24.0).round() as u32,
        Some(days) => bail!("--days {days}: must be more than 0"),
        None => args.hours,
    };
    let start = match &args.start {
        Some(text) => crate::parse_time(text)?,
        None => {
            let now = now_millis();
            now - now.rem_euclid(sim::HOUR) - i64::from(hours) * sim::HOUR
        }
    };
    let config = FleetConfig {
        devices: args.devices,
        hours,
        start,
        seed: args.seed,
        ios_share: args.ios_share,
        supervised_share: args.supervised_share,
        developer_share: args.developer_share,
        infected_share: args.infected_share,
        apps_per_device: args.apps_per_device,
    };
    if args.out.is_none() && !args.to_kafka {
        bail!("nowhere to write: give --out DIR and/or --to-kafka");
    }
    // Where the results go is checked before the work, not after it.
    if let Some(dir) = &args.out {
        writable_dir(dir, "--out")?;
    }
    if args.to_kafka {
        let settings = settings.context("--to-kafka needs a configuration")?;
        crate::reachable(settings)?;
    }
    let started = std::time::Instant::now();
    let fleet = sim::simulate(&config)?;
    eprintln!(
        "simulated {} devices x {} h (seed {}): {} raw records, {} planted behaviours, in {:.1} s",
        config.devices,
        config.hours,
        config.seed,
        fleet.records.len(),
        fleet.truth.planted.len(),
        started.elapsed().as_secs_f64()
    );
    let sensors = match args.formats {
        FormatsArg::Offport => None,
        FormatsArg::Sensors => Some(offport_backtest::sensors::sensor_formats(&fleet)?),
    };
    if let Some(dir) = &args.out {
        match &sensors {
            None => write_fleet(dir, &fleet)?,
            Some(sensors) => {
                write_truth(dir, &fleet)?;
                sensors
                    .write(dir)
                    .with_context(|| format!("writing {}", dir.display()))?;
            }
        }
        eprintln!("wrote {}", dir.display());
        if sensors.is_some() {
            eprintln!(
                "the tunnel sensors' address map is {}: give it to `offportctl replay --config` and to normalize-proxy",
                dir.join("sources.yaml").display()
            );
        }
    }
    if args.to_kafka {
        let settings = settings.context("--to-kafka needs a configuration")?;
        let records = match &sensors {
            None => fleet.records.clone(),
            Some(sensors) => sensors.raw_lines(),
        };
        let progress = bar(records.len() as u64, false, "producing");
        crate::runtime()?.block_on(produce_raw(settings, &records, &mut |n| {
            progress.set_position(n)
        }))?;
        progress.finish();
        eprintln!(
            "produced {} records to the raw topics ({}raw.*)",
            records.len(),
            settings.topics.prefix
        );
    }
    Ok(())
}

fn baseline_set(files: &[PathBuf]) -> Result<BaselineSet> {
    let mut set = BaselineSet::with_defaults()?;
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for document in
            parse_documents(&text).with_context(|| format!("{} is invalid", file.display()))?
        {
            set.apply(document)?;
        }
    }
    Ok(set)
}

/// Replay options from the services' configuration: the same normalizer, join and scoring
/// settings (`normalize.*`, `stream.*`), so a replay attributes and joins as they do.
fn options(baselines: BaselineSet, settings: Option<&Settings>) -> Result<ReplayOptions> {
    let mut join = offport_core::join::JoinConfig::default();
    let mut score = offport_core::score::ScoreConfig::default();
    let mut proxy = offport_core::normalize::proxy::ProxyConfig::default();
    if let Some(settings) = settings {
        join.allowed_lateness_ms = settings.stream.allowed_lateness_ms;
        join.max_entries_per_timeline = settings.stream.max_timeline_entries;
        score.suppression_window_ms = settings.stream.suppression_window_ms;
        proxy = settings
            .normalize
            .proxy_config()
            .map_err(anyhow::Error::msg)
            .context("normalize settings")?;
    }
    Ok(ReplayOptions {
        baselines,
        join,
        score,
        ingest_time: now_millis(),
        proxy,
        learn: None,
    })
}

fn in_process(records: &[FileRecord], options: ReplayOptions, quiet: bool) -> ReplayOutcome {
    let progress = bar(records.len() as u64, quiet, "replaying");
    let mut replay = Replay::new(options);
    for (i, record) in records.iter().enumerate() {
        replay.push_with_headers(
            record.stream,
            record.key.as_deref(),
            &record.headers,
            record.value.as_bytes(),
        );
        if i % 10_000 == 0 {
            progress.set_position(i as u64);
        }
    }
    progress.finish();
    replay.finish()
}

/// Makes `dir` (the value of `option`) a directory this process can write to, or says why not.
pub(crate) fn writable_dir(dir: &Path, option: &str) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!(
            "{option} {}: a file is there, not a directory",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{option} {}: cannot create the directory", dir.display()))?;
    let probe = dir.join(".offportctl-write-test");
    std::fs::write(&probe, b"")
        .with_context(|| format!("{option} {}: cannot write there", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Where a replay reads: the records of a directory (read once), or a range of the cluster's
/// topics (read again by each run).
enum Source<'a> {
    Files(Vec<FileRecord>),
    Kafka(Box<KafkaSource<'a>>),
}

/// A range of the cluster's topics, with the clients that read it.
struct KafkaSource<'a> {
    settings: &'a Settings,
    runtime: tokio::runtime::Runtime,
    codec: RegistryCodec,
    range: KafkaReplay,
}

/// A replay's input with its baselines, ready to run (under them or other baselines).
pub(crate) struct Prepared<'a> {
    source: Source<'a>,
    settings: Option<&'a Settings>,
    args: InputArgs,
    /// The baseline files in force (the input's baseline.yaml by default).
    pub(crate) baseline_files: Vec<PathBuf>,
    /// What was read, for the report and the draft.
    pub(crate) input: String,
}

impl<'a> Prepared<'a> {
    /// Checks and reads the input of `args`: a directory's records, or the cluster's reach.
    pub(crate) fn new(
        settings: Option<&'a Settings>,
        args: &InputArgs,
        output_topic: Option<String>,
    ) -> Result<Self> {
        let from = args.from.as_deref().map(crate::parse_time).transpose()?;
        let to = args.to.as_deref().map(crate::parse_time).transpose()?;
        let mut baseline_files = args.baseline.clone();
        if baseline_files.is_empty() && !args.baselines_topic {
            if let Some(default) = args
                .input
                .as_ref()
                .map(|d| d.join("baseline.yaml"))
                .filter(|p| p.exists())
            {
                baseline_files.push(default);
            }
        }
        let range_text = format!(
            "{} to {}",
            from.map_or("the start".to_string(), utc_minutes),
            to.map_or("the end".to_string(), utc_minutes),
        );
        let (source, input) = if let Some(dir) = &args.input {
            let inventory_path = args
                .inventory
                .clone()
                .or_else(|| Some(dir.join("inventory.yaml")).filter(|p| p.exists()));
            let inventory = match &inventory_path {
                Some(path) => crate::inventory::read_file(path)?,
                None => Vec::new(),
            };
            let mut records: Vec<FileRecord> = inventory
                .iter()
                .map(|entry| FileRecord {
                    stream: Stream::Mdm,
                    key: Some(entry.key()),
                    headers: Vec::new(),
                    value: entry.to_raw_json(),
                    time: entry
                        .effective_time
                        .unwrap_or(offport_core::normalize::EARLIEST_TIME),
                })
                .collect();
            records.extend(read_fleet(dir)?);
            // The inventory's entries hold from their effective time: they go in among the
            // reports by it.
            records.sort_by_key(|r| r.time);
            records.retain(|r| {
                to.is_none_or(|to| r.time < to)
                    && (r.stream != Stream::Proxy || from.is_none_or(|from| r.time >= from))
            });
            let input = if from.is_some() || to.is_some() {
                format!("fleet directory {}, {range_text}", dir.display())
            } else {
                format!("fleet directory {}", dir.display())
            };
            (Source::Files(records), input)
        } else if args.kafka {
            let settings = settings.context("--kafka needs a configuration")?;
            crate::reachable(settings)?;
            let range = KafkaReplay {
                source: match args.source {
                    SourceArg::Raw => ReplaySource::Raw,
                    SourceArg::Normalized => ReplaySource::Normalized,
                },
                from,
                to,
                output_topic,
            };
            let input = format!(
                "{} topics of {} on {}, {range_text}",
                match range.source {
                    ReplaySource::Raw => "raw",
                    ReplaySource::Normalized => "normalized",
                },
                settings.topics.prefix,
                settings.kafka.bootstrap_servers,
            );
            let source = Source::Kafka(Box::new(KafkaSource {
                settings,
                runtime: crate::runtime()?,
                codec: RegistryCodec::new(&settings.registry)?,
                range,
            }));
            (source, input)
        } else {
            bail!("nothing to read: give --input DIR or --kafka");
        };
        Ok(Self {
            source,
            settings,
            args: args.clone(),
            baseline_files,
            input,
        })
    }

    /// The baselines in force: the files on top of the shipped default, or the baselines
    /// topic (as it stood at --baselines-as-of).
    pub(crate) fn baselines(&self) -> Result<BaselineSet> {
        match &self.source {
            Source::Kafka(kafka) if self.args.baselines_topic => {
                let KafkaSource {
                    settings,
                    runtime,
                    codec,
                    ..
                } = kafka.as_ref();
                let as_of = self
                    .args
                    .baselines_as_of
                    .as_deref()
                    .map(crate::parse_time)
                    .transpose()?;
                let (feed, rejected) = runtime
                    .block_on(offport_kafka::baselines::BaselineFeed::open_as_of(
                        settings,
                        codec,
                        std::time::Duration::from_secs(60),
                        as_of,
                    ))
                    .context("reading the baselines topic")?;
                for rejection in rejected {
                    eprintln!(
                        "warning: baselines record at offset {} rejected: {}",
                        rejection.record_offset(),
                        rejection.message
                    );
                }
                Ok(BaselineSet::clone(feed.set()))
            }
            _ if self.args.baselines_topic => {
                bail!("--baselines-topic reads the cluster's topic: give --kafka")
            }
            _ => baseline_set(&self.baseline_files),
        }
    }

    /// Replays the input under `baselines`, learning under `learn` when given; `output` writes
    /// a Kafka replay's findings to its output topic.
    pub(crate) fn run(
        &self,
        baselines: BaselineSet,
        learn: Option<offport_core::learn::LearnConfig>,
        output: bool,
    ) -> Result<ReplayOutcome> {
        let mut options = options(baselines, self.settings)?;
        options.learn = learn;
        match &self.source {
            Source::Files(records) => Ok(in_process(records, options, self.args.quiet)),
            Source::Kafka(kafka) => {
                let KafkaSource {
                    settings,
                    runtime,
                    codec,
                    range,
                } = kafka.as_ref();
                let range = KafkaReplay {
                    output_topic: range.output_topic.clone().filter(|_| output),
                    ..range.clone()
                };
                let progress = bar(0, self.args.quiet, "replaying");
                let outcome = runtime.block_on(replay_topics(
                    settings,
                    codec,
                    options,
                    &range,
                    &mut |done, total| {
                        progress.set_length(total);
                        progress.set_position(done);
                    },
                ))?;
                progress.finish();
                if let Some(topic) = &range.output_topic {
                    eprintln!("findings written to {topic}");
                }
                Ok(outcome)
            }
        }
    }

    /// Raw records a run read.
    fn records(&self, outcome: &ReplayOutcome) -> usize {
        match &self.source {
            Source::Files(records) => records.len(),
            Source::Kafka(_) => outcome.counts.records.values().sum::<u64>() as usize,
        }
    }
}

/// Runs `replay`.
pub fn replay(settings: Option<&Settings>, args: ReplayArgs) -> Result<()> {
    if let Some(dir) = &args.report {
        writable_dir(dir, "--report")?;
    }
    let output_topic = settings.map(|settings| {
        args.output_topic
            .clone()
            .unwrap_or_else(|| format!("{}replay.findings", settings.topics.prefix))
    });
    let prepared = Prepared::new(settings, &args.inputs, output_topic)?;
    let truth_path = args.truth.clone().or_else(|| {
        args.inputs
            .input
            .as_ref()
            .map(|d| d.join("truth.json"))
            .filter(|p| p.exists())
    });
    let truth: Option<Truth> = match &truth_path {
        Some(path) => Some(
            serde_json::from_str(
                &std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
            )
            .with_context(|| format!("{} is not a truth file", path.display()))?,
        ),
        None => None,
    };
    let started = std::time::Instant::now();
    let mut provenance = Provenance::default();
    let baselines = prepared.baselines()?;
    provenance.baselines = version_labels(&baselines);
    provenance.input = prepared.input.clone();
    let outcome = prepared.run(baselines, None, true)?;
    let compared = if args.compare.is_empty() {
        None
    } else {
        let set = baseline_set(&args.compare)?;
        provenance.compared_baselines = version_labels(&set);
        Some(prepared.run(set, None, false)?)
    };
    let records = prepared.records(&outcome);
    let baseline_files = prepared.baseline_files.clone();
    let elapsed = started.elapsed().as_secs_f64();
    let latest = outcome.latest();
    let mut report = Report::new(
        "offport backtest",
        &latest,
        outcome.findings.len(),
        truth.as_ref(),
    );
    provenance.offport_version = report.provenance.offport_version.clone();
    report.provenance = provenance;
    if let Some(other) = &compared {
        let label_a = if baseline_files.is_empty() {
            "default".to_string()
        } else {
            names(&baseline_files)
        };
        let other_latest = latest_revisions(&other.findings);
        let comparison = compare(&label_a, &latest, &names(&args.compare), &other_latest);
        report.comparison = Some(match &truth {
            Some(truth) => comparison.with_truth(&latest, &other_latest, truth),
            None => comparison,
        });
    }
    eprintln!(
        "replayed {records} records in {elapsed:.1} s ({:.0} records/s): {} sessions joined, {} dead letters",
        records as f64 / elapsed.max(1e-9),
        outcome.counts.enriched,
        outcome.dead_letters.len()
    );
    for letter in outcome.dead_letters.iter().take(5) {
        eprintln!(
            "  dead letter: {:?} @{} {:?}: {}",
            letter.stream, letter.offset, letter.reason, letter.message
        );
    }
    print!("{}", report.summary());
    if let Some(dir) = &args.report {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), report.to_json())?;
        std::fs::write(dir.join("report.html"), report.to_html())?;
        let mut findings = BufWriter::new(std::fs::File::create(dir.join("findings.jsonl"))?);
        for finding in &outcome.findings {
            serde_json::to_writer(&mut findings, finding)?;
            findings.write_all(b"\n")?;
        }
        findings.flush()?;
        // What the scorer writes to the OCSF alerts topic for the same findings: what a SIEM
        // fed from it would have received.
        let mut ocsf = BufWriter::new(std::fs::File::create(dir.join("findings.ocsf.jsonl"))?);
        for finding in &outcome.findings {
            let detection =
                offport_core::ocsf::detection_finding(finding, env!("CARGO_PKG_VERSION"));
            serde_json::to_writer(&mut ocsf, &detection)?;
            ocsf.write_all(b"\n")?;
        }
        ocsf.flush()?;
        eprintln!(
            "report: {} and {}; every finding record in {} (OCSF Detection Findings in {})",
            dir.join("report.html").display(),
            dir.join("report.json").display(),
            dir.join("findings.jsonl").display(),
            dir.join("findings.ocsf.jsonl").display()
        );
    }
    Ok(())
}

fn names(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(" + ")
}

#[cfg(test)]
mod tests;
