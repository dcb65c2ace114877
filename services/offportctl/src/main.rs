//! offportctl: the operator's command line for an offport deployment.
//!
//! - `topics list` prints the topic layout a configuration implies; `topics create` creates the
//!   missing topics and checks the co-partitioning of the existing ones (the docker-compose init
//!   container and the Helm topic Job run it).
//! - `baselines validate|diff|apply|delete|show` manage the baselines topic from YAML files: check
//!   documents, compare them with what the topic holds, publish them, withdraw a scope, and show
//!   the merged baseline in force for a device/app at a time.
//!
//! - `simulate` generates a fleet's raw proxy/VPN, EDR and MDM records with ground truth, to
//!   files and/or the raw topics; `replay` runs the pipeline over such files in this process or
//!   over the cluster's topics for a time range, and reports against the truth and between two
//!   baselines.
//!
//! It reads the same configuration as the services.

mod backtest;
mod dead_letters;
mod inventory;
mod learn;

// mimalloc, as in the stage binaries: `replay` runs the whole pipeline in this process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use offport_core::baseline::{parse_documents, parse_scope_label, scope_label, ScopeContext};
use offport_core::model::{Baseline, EpochMillis, Platform};
use offport_kafka::baselines::{publish, version_key, BaselineFeed};
use offport_kafka::compatibility::SubjectConfig;
use offport_kafka::registry::RegistryCodec;
use offport_kafka::settings::Settings;
use offport_kafka::topics::{ensure_topics, value_subjects, TopicOutcome, TopicRole};

#[derive(Parser)]
#[command(name = "offportctl", version, about = "Operate an offport deployment")]
struct Cli {
    /// Configuration file (YAML or TOML); `OFFPORT__*` environment variables override it.
    #[arg(long, env = "OFFPORT_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The topics of the topology.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Baseline documents and the baselines topic.
    Baselines {
        #[command(subcommand)]
        action: BaselinesAction,
    },
    /// The organisation's device inventory (device to group, role, owner) and its topic.
    Inventory {
        #[command(subcommand)]
        action: inventory::InventoryAction,
    },
    /// The dead-letter topic: list, show and re-produce the records the stages could not take.
    DeadLetters {
        #[command(subcommand)]
        action: dead_letters::DeadLettersAction,
    },
    /// Generate a simulated fleet's raw records with ground truth.
    Simulate(backtest::SimulateArgs),
    /// Backtest: run the pipeline over recorded or simulated data and report.
    Replay(backtest::ReplayArgs),
    /// The configuration in force.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Load and validate the configuration (file and `OFFPORT__*` environment) and print it as
    /// YAML, every secret shown as `***`.
    Show,
}

#[derive(Subcommand)]
enum TopicsAction {
    /// Print every topic with its partitions and settings.
    List,
    /// Create missing topics; fail when an existing one breaks co-partitioning.
    Create,
}

#[derive(Subcommand)]
enum BaselinesAction {
    /// Check YAML/JSON baseline files (no broker needed); exit 1 on the first invalid one.
    Validate {
        /// Files, each one document or a list of documents.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Compare files with the versions on the topic: new, changed (with a diff) or unchanged.
    Diff {
        /// Files, each one document or a list of documents.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Validate the files and publish every document as a version on the topic.
    Apply {
        /// Files, each one document or a list of documents.
        #[arg(required_unless_present = "default")]
        files: Vec<PathBuf>,
        /// Also publish the default baseline built into offport (standard ports and the
        /// well-known mobile exceptions), before the files.
        #[arg(long)]
        default: bool,
        /// Only say what would be published.
        #[arg(long)]
        dry_run: bool,
    },
    /// Withdraw every version of a scope (`app:com.example`, `platform:IOS`, `global`, ...).
    Delete {
        /// The scope label.
        scope: String,
    },
    /// The merged baseline in force for a device/app at a time, as JSON.
    Show {
        /// Platform: android or ios.
        #[arg(long, default_value = "android")]
        platform: String,
        /// App id (package or bundle id).
        #[arg(long)]
        app: Option<String>,
        /// Device group (MDM).
        #[arg(long)]
        group: Option<String>,
        /// Device role (MDM).
        #[arg(long)]
        role: Option<String>,
        /// App category.
        #[arg(long)]
        category: Option<String>,
        /// App service class.
        #[arg(long)]
        service_class: Option<String>,
        /// RFC 3339 time or epoch milliseconds; default now.
        #[arg(long)]
        at: Option<String>,
    },
    /// Learn what the fleet does from a replay of its records (a directory or the cluster's
    /// topics over a time range): propose approvals and per-app behaviour with their support,
    /// as a baseline draft and a diff against the baselines in force.
    Learn(Box<learn::LearnArgs>),
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("offportctl: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn run(cli: Cli) -> Result<()> {
    if let Command::Inventory { action } = &cli.command {
        if let Some(done) = inventory::offline(action) {
            return done;
        }
    }
    if let Command::Baselines {
        action: BaselinesAction::Validate { files },
    } = &cli.command
    {
        // Validation needs no configuration or broker.
        for (file, document) in read_files(files)? {
            println!("ok       {}  ({})", version_key(&document), file.display());
        }
        return Ok(());
    }
    let settings = Settings::load(cli.config.as_deref())?;
    match cli.command {
        Command::Topics { action } => {
            if matches!(action, TopicsAction::Create) {
                reachable(&settings)?;
            }
            topics(&settings, action)
        }
        Command::Baselines {
            action: BaselinesAction::Learn(args),
        } => learn::learn(Some(&settings), *args),
        Command::Baselines { action } => {
            reachable(&settings)?;
            runtime()?.block_on(baselines(&settings, action))
        }
        Command::Inventory { action } => {
            reachable(&settings)?;
            runtime()?.block_on(inventory::run(&settings, action))
        }
        Command::DeadLetters { action } => {
            reachable(&settings)?;
            runtime()?.block_on(dead_letters::run(&settings, action))
        }
        Command::Simulate(args) => backtest::simulate(Some(&settings), args),
        Command::Replay(args) => backtest::replay(Some(&settings), args),
        Command::Config {
            action: ConfigAction::Show,
        } => {
            print!("{}", settings.redacted_yaml());
            Ok(())
        }
    }
}

/// How long a command waits for the cluster before it says it cannot reach it.
const REACH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Fails within [`REACH_TIMEOUT`] when no broker of the configured cluster answers, naming the
/// bootstrap servers and the security settings tried, instead of letting a command wait out
/// librdkafka's own timeouts (up to 300 s) with nothing said.
pub(crate) fn reachable(settings: &Settings) -> Result<()> {
    offport_kafka::connect::check(&settings.kafka, REACH_TIMEOUT)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{e} (tried for {} s)", REACH_TIMEOUT.as_secs()))
}

fn topics(settings: &Settings, action: TopicsAction) -> Result<()> {
    let specs: Vec<_> = TopicRole::ALL
        .iter()
        .map(|role| role.spec(&settings.topics))
        .collect();
    match action {
        TopicsAction::List => {
            for spec in &specs {
                let configs: Vec<String> = spec
                    .configs
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                println!(
                    "{:<40} partitions={:<3} replication={} {}",
                    spec.name,
                    spec.partitions,
                    spec.replication_factor,
                    configs.join(",")
                );
            }
            Ok(())
        }
        TopicsAction::Create => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let outcomes = runtime
                .block_on(ensure_topics(&settings.kafka.client_config(), &specs))
                .with_context(|| {
                    format!("creating topics on {}", settings.kafka.bootstrap_servers)
                })?;
            for (name, outcome) in outcomes {
                let what = match outcome {
                    TopicOutcome::Created => "created",
                    TopicOutcome::Existed => "exists",
                };
                println!("{what:<8} {name}");
            }
            let config = SubjectConfig::new(&settings.registry)?;
            for (subject, contract) in value_subjects(&TopicRole::ALL, settings) {
                let level = runtime.block_on(config.ensure(&subject, contract))?;
                println!("{:<8} {subject} ({level})", "checked");
            }
            Ok(())
        }
    }
}

/// Every document of `files`, validated; the error names the file.
fn read_files(files: &[PathBuf]) -> Result<Vec<(PathBuf, Baseline)>> {
    let mut out = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let documents =
            parse_documents(&text).with_context(|| format!("{} is invalid", file.display()))?;
        out.extend(documents.into_iter().map(|d| (file.clone(), d)));
    }
    Ok(out)
}

fn yaml(document: &Baseline) -> String {
    serde_yaml_ng::to_string(document).unwrap_or_else(|e| format!("<not printable: {e}>"))
}

fn parse_time(text: &str) -> Result<EpochMillis> {
    if let Ok(ms) = text.parse::<EpochMillis>() {
        return Ok(ms);
    }
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("{text:?} is neither RFC 3339 nor epoch milliseconds"))?;
    Ok(EpochMillis::try_from(
        parsed.unix_timestamp_nanos() / 1_000_000,
    )?)
}

async fn open_feed(settings: &Settings, codec: &RegistryCodec) -> Result<BaselineFeed> {
    let (feed, rejected) = BaselineFeed::open(settings, codec, std::time::Duration::from_secs(60))
        .await
        .context("reading the baselines topic")?;
    for rejection in rejected {
        eprintln!(
            "warning: topic record at offset {} is rejected by the services: {}",
            rejection.record_offset(),
            rejection.message
        );
    }
    Ok(feed)
}

async fn baselines(settings: &Settings, action: BaselinesAction) -> Result<()> {
    let codec = RegistryCodec::new(&settings.registry)?;
    match action {
        BaselinesAction::Validate { .. } => Ok(()),
        BaselinesAction::Learn(_) => bail!("baselines learn runs outside the async commands"),
        BaselinesAction::Diff { files } => {
            let documents = read_files(&files)?;
            let feed = open_feed(settings, &codec).await?;
            let mut changed = 0;
            for (file, document) in &documents {
                let key = version_key(document);
                let on_topic = feed
                    .topic_keys()
                    .contains(&key)
                    .then(|| {
                        feed.set()
                            .in_force(&document.scope, document.effective_time)
                    })
                    .flatten();
                match on_topic {
                    None => {
                        changed += 1;
                        println!("new       {key}  ({})", file.display());
                    }
                    Some(current) if current == document => println!("unchanged {key}"),
                    Some(current) => {
                        changed += 1;
                        println!("changed   {key}  ({})", file.display());
                        let (old, new) = (yaml(current), yaml(document));
                        let diff = similar::TextDiff::from_lines(&old, &new);
                        print!(
                            "{}",
                            diff.unified_diff()
                                .context_radius(2)
                                .header("topic", &file.display().to_string())
                        );
                    }
                }
            }
            let in_files: std::collections::BTreeSet<String> =
                documents.iter().map(|(_, d)| version_key(d)).collect();
            for key in feed.topic_keys().difference(&in_files) {
                println!("topic-only {key}");
            }
            println!(
                "{changed} of {} documents differ from the topic",
                documents.len()
            );
            Ok(())
        }
        BaselinesAction::Apply {
            files,
            default,
            dry_run,
        } => {
            let mut documents = Vec::new();
            if default {
                let built_in = offport_core::baseline::parse_documents(
                    offport_core::baseline::DEFAULT_BASELINE_YAML,
                )
                .context("the built-in default baseline is invalid")?;
                documents.extend(
                    built_in
                        .into_iter()
                        .map(|d| (PathBuf::from("(default)"), d)),
                );
            }
            documents.extend(read_files(&files)?);
            let changes: Vec<(String, Option<Baseline>)> = documents
                .into_iter()
                .map(|(_, d)| (version_key(&d), Some(d)))
                .collect();
            for (key, _) in &changes {
                println!(
                    "{} {key}",
                    if dry_run { "would publish" } else { "publish" }
                );
            }
            if !dry_run {
                publish(settings, &codec, &changes).await?;
                println!(
                    "{} versions published to {}",
                    changes.len(),
                    TopicRole::Baselines.spec(&settings.topics).name
                );
            }
            Ok(())
        }
        BaselinesAction::Delete { scope } => {
            let scope = parse_scope_label(&scope).map_err(anyhow::Error::msg)?;
            let label = scope_label(&scope);
            let feed = open_feed(settings, &codec).await?;
            let prefix = format!("{label}@");
            let keys: Vec<(String, Option<Baseline>)> = feed
                .topic_keys()
                .iter()
                .filter(|k| k.starts_with(&prefix))
                .map(|k| (k.clone(), None))
                .collect();
            if keys.is_empty() {
                bail!("no version of {label} is on the topic");
            }
            for (key, _) in &keys {
                println!("withdraw {key}");
            }
            publish(settings, &codec, &keys).await?;
            Ok(())
        }
        BaselinesAction::Show {
            platform,
            app,
            group,
            role,
            category,
            service_class,
            at,
        } => {
            let platform = match platform.to_ascii_lowercase().as_str() {
                "android" => Platform::Android,
                "ios" => Platform::Ios,
                other => bail!("--platform {other:?}: android or ios"),
            };
            let at = match at {
                Some(text) => parse_time(&text)?,
                None => EpochMillis::try_from(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)?
                        .as_millis(),
                )?,
            };
            let feed = open_feed(settings, &codec).await?;
            let context = ScopeContext {
                platform,
                device_group: group.as_deref(),
                device_role: role.as_deref(),
                app_category: category.as_deref(),
                service_class: service_class.as_deref(),
                app_id: app.as_deref(),
            };
            let merged = feed.set().resolve(&context, at);
            let shown = serde_json::json!({
                "at": at,
                "sources": merged.sources,
                "allowed_protocol_ports": merged.protocol_ports,
                "allowed_apps": merged.allowed_apps,
                "allowed_managed_apps": merged.allowed_managed_apps,
                "allowed_service_classes": merged.allowed_service_classes,
                "enterprise_exceptions": merged.exceptions,
                "app_network_behavior": merged.behaviors,
                "thresholds": merged.thresholds,
            });
            println!("{}", serde_json::to_string_pretty(&shown)?);
            Ok(())
        }
    }
}
