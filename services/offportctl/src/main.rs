//! offportctl: the operator's command line for an offport deployment.
//!
//! `topics list` prints the topic layout a configuration implies; `topics create` creates the
//! missing topics and checks the co-partitioning of the existing ones (the docker-compose init
//! container and the Helm topic Job run it). It reads the same configuration as the services.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use offport_kafka::settings::Settings;
use offport_kafka::topics::{ensure_topics, TopicOutcome, TopicRole};

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
}

#[derive(Subcommand)]
enum TopicsAction {
    /// Print every topic with its partitions and settings.
    List,
    /// Create missing topics; fail when an existing one breaks co-partitioning.
    Create,
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

fn run(cli: Cli) -> Result<()> {
    let settings = Settings::load(cli.config.as_deref())?;
    let specs: Vec<_> = TopicRole::ALL
        .iter()
        .map(|role| role.spec(&settings.topics))
        .collect();
    match cli.command {
        Command::Topics {
            action: TopicsAction::List,
        } => {
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
        Command::Topics {
            action: TopicsAction::Create,
        } => {
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
            Ok(())
        }
    }
}
