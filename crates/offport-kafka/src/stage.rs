//! What each deployable stage reads and writes, and the common start-up of a stage binary.
//!
//! [`Stage`] is a stage's entry in the topology ([`crate::topology`] declares them all); the
//! service mains run them. Normalizer binaries run [`run_normalizer`]; the joiner and scorer run
//! [`run_stateful`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use offport_core::normalize::Normalizer;

use crate::compatibility::{CompatibilityError, SubjectConfig};
use crate::metrics::{self, PipelineMetrics};
use crate::registry::RegistryCodec;
use crate::runtime::stateful::{self, StatefulStage};
use crate::runtime::{self, PipelineError, PipelineOptions};
use crate::settings::{Settings, SettingsError};
use crate::shutdown::Shutdown;
use crate::telemetry;
use crate::topics::{value_subjects, TopicRole};

/// A deployable stage of the topology.
#[derive(Debug, Clone, Copy)]
pub struct Stage {
    /// Service name, e.g. `normalize-proxy`.
    pub name: &'static str,
    /// One line on what it does.
    pub purpose: &'static str,
    /// Topics it consumes.
    pub reads: &'static [TopicRole],
    /// Topics it produces.
    pub writes: &'static [TopicRole],
}

impl Stage {
    /// The normalized topics the stage writes: where its progress markers go (see
    /// [`offport_core::progress`]).
    pub fn progress_topics(&self, topics: &crate::settings::TopicSettings) -> Vec<String> {
        self.writes
            .iter()
            .filter(|role| {
                matches!(
                    role,
                    TopicRole::Sessions | TopicRole::DeviceEvents | TopicRole::DeviceContexts
                )
            })
            .map(|role| role.spec(topics).name)
            .collect()
    }
}

/// The command line of a stage binary.
#[derive(Debug, clap::Parser)]
struct StageArgs {
    /// Configuration file (YAML); every setting can be overridden with
    /// `OFFPORT__<SECTION>__<KEY>` (docs/configuration.md).
    #[arg(long, env = "OFFPORT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

/// The configuration file named by `--config <path>` or `OFFPORT_CONFIG`. `--help` and
/// `--version` print and exit; a bad argument prints clap's error and usage and exits 2.
pub fn config_path(stage: &Stage) -> Option<PathBuf> {
    use clap::{CommandFactory, FromArgMatches};
    let topics = |roles: &[TopicRole]| {
        roles
            .iter()
            .map(|r| r.suffix())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let command = StageArgs::command()
        .name(format!("offport-{}", stage.name))
        .version(env!("CARGO_PKG_VERSION"))
        .about(format!("offport {}: {}", stage.name, stage.purpose))
        .after_help(format!(
            "Reads {}; writes {}. Serves /metrics, /healthz and /readyz on observability.listen.",
            topics(stage.reads),
            topics(stage.writes)
        ));
    let matches = command.get_matches();
    match StageArgs::from_arg_matches(&matches) {
        Ok(args) => args.config,
        Err(error) => error.exit(),
    }
}

/// What every stage binary sets up before its loop: settings, logging, the registry codec,
/// shutdown on SIGTERM/Ctrl-C, and the metrics/health endpoint.
struct Started {
    settings: Settings,
    codec: Arc<RegistryCodec>,
    shutdown: Shutdown,
    metrics: Arc<PipelineMetrics>,
}

async fn start(stage: Stage) -> Result<Started, ExitCode> {
    let path = config_path(&stage);
    let settings = match Settings::load(path.as_deref()).map_err(|e| e.to_string()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("offport-{}: {error}", stage.name);
            return Err(ExitCode::FAILURE);
        }
    };
    telemetry::init(&settings.log);
    let codec = match RegistryCodec::new(&settings.registry) {
        Ok(codec) => Arc::new(codec),
        Err(error) => {
            tracing::error!(stage = stage.name, %error, "schema registry client");
            return Err(ExitCode::FAILURE);
        }
    };
    let shutdown = Shutdown::new();
    shutdown.listen();
    if let Err(error) = ensure_compatibility(&stage, &settings, &shutdown).await {
        tracing::error!(stage = stage.name, %error, "schema compatibility");
        return Err(ExitCode::FAILURE);
    }
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = PipelineMetrics::register(&mut registry);
    metrics::register_process(&mut registry, stage.name);
    let listen = match settings.observability.listen.parse() {
        Ok(listen) => listen,
        Err(error) => {
            tracing::error!(%error, "observability.listen");
            return Err(ExitCode::FAILURE);
        }
    };
    match metrics::serve(listen, registry, Arc::clone(&metrics), shutdown.clone()).await {
        Ok((bound, _)) => tracing::info!(%bound, "serving /metrics, /healthz, /readyz"),
        Err(error) => {
            tracing::error!(%error, listen = %settings.observability.listen, "cannot serve metrics");
            return Err(ExitCode::FAILURE);
        }
    }
    Ok(Started {
        settings,
        codec,
        shutdown,
        metrics,
    })
}

/// Sets and checks the compatibility level of the subjects the stage writes (see
/// [`crate::compatibility`]). An unreachable registry is tried again every few seconds until
/// it answers or the stage is told to stop: the stage could write nothing without it anyway.
async fn ensure_compatibility(
    stage: &Stage,
    settings: &Settings,
    shutdown: &Shutdown,
) -> Result<(), CompatibilityError> {
    let subjects = value_subjects(stage.writes, settings);
    if subjects.is_empty() {
        return Ok(());
    }
    let config = SubjectConfig::new(&settings.registry)?;
    for (subject, contract) in subjects {
        let mut wait = std::time::Duration::from_secs(1);
        let level = loop {
            match config.ensure(&subject, contract).await {
                Ok(level) => break level,
                Err(error) if error.is_transient() && !shutdown.is_triggered() => {
                    tracing::warn!(stage = stage.name, %subject, %error, "schema registry not answering; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(10));
                }
                Err(error) => return Err(error),
            }
        };
        tracing::info!(
            stage = stage.name,
            %subject,
            level,
            "schema compatible with the subject's versions"
        );
    }
    Ok(())
}

fn finish(stage: Stage, shutdown: &Shutdown, result: Result<(), PipelineError>) -> ExitCode {
    shutdown.trigger();
    match result {
        Ok(()) => {
            tracing::info!(stage = stage.name, "stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(stage = stage.name, %error, "stopped on a fatal error");
            ExitCode::FAILURE
        }
    }
}

/// Entry point of a normalizer stage: loads the configuration, starts the metrics and health
/// endpoint, and runs the exactly-once loop with the normalizer `make` builds from the
/// settings, until SIGTERM or Ctrl-C. Exit status 0 after a clean shutdown, 1 on a
/// configuration or fatal error.
pub async fn run_normalizer<N, F>(stage: Stage, make: F) -> ExitCode
where
    N: Normalizer,
    F: FnOnce(&Settings) -> Result<N, SettingsError>,
{
    let started = match start(stage).await {
        Ok(started) => started,
        Err(code) => return code,
    };
    let settings = &started.settings;
    let normalizer = match make(settings) {
        Ok(normalizer) => normalizer,
        Err(error) => {
            tracing::error!(stage = stage.name, %error, "configuration");
            return ExitCode::FAILURE;
        }
    };
    let inputs = stage
        .reads
        .iter()
        .map(|role| role.spec(&settings.topics).name)
        .collect();
    let options = PipelineOptions::for_stage(stage.name, inputs, settings);
    let result = runtime::run_normalizer(
        settings,
        options,
        normalizer,
        Arc::clone(&started.codec),
        Arc::clone(&started.metrics),
        started.shutdown.clone(),
    )
    .await;
    finish(stage, &started.shutdown, result)
}

/// Entry point of a stateful stage (joiner, scorer): as [`run_normalizer`], with the stage
/// `make` builds from the settings run by [`stateful::run_stateful`].
pub async fn run_stateful<S, F>(stage: Stage, make: F) -> ExitCode
where
    S: StatefulStage,
    F: FnOnce(&Settings) -> S,
{
    let started = match start(stage).await {
        Ok(started) => started,
        Err(code) => return code,
    };
    let logic = make(&started.settings);
    let result = stateful::run_stateful(
        &started.settings,
        logic,
        Arc::clone(&started.codec),
        Arc::clone(&started.metrics),
        started.shutdown.clone(),
    )
    .await;
    finish(stage, &started.shutdown, result)
}
