//! What each deployable stage reads and writes, and the common start-up of a stage binary.
//!
//! [`Stage`] is the wiring table of the topology; the service mains and the README's topic table
//! agree with it. Normalizer binaries run [`run_normalizer`]; the joiner and scorer run
//! [`run_stateful`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use offport_core::normalize::Normalizer;

use crate::metrics::{self, PipelineMetrics};
use crate::pipeline::{self, PipelineError, PipelineOptions};
use crate::registry::RegistryCodec;
use crate::settings::Settings;
use crate::shutdown::Shutdown;
use crate::stateful::{self, StatefulStage};
use crate::telemetry;
use crate::topics::TopicRole;

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

/// The configuration file named by `--config <path>` or `OFFPORT_CONFIG`.
pub fn config_path() -> Result<Option<PathBuf>, String> {
    let mut args = std::env::args().skip(1);
    if let Some(arg) = args.next() {
        let path = match arg.as_str() {
            "--config" => args.next().ok_or("--config needs a path")?,
            other => match other.strip_prefix("--config=") {
                Some(path) => path.to_string(),
                None => {
                    return Err(format!(
                        "unknown argument {other:?}; usage: [--config <file>]"
                    ))
                }
            },
        };
        if let Some(extra) = args.next() {
            return Err(format!("unexpected argument {extra:?}"));
        }
        return Ok(Some(PathBuf::from(path)));
    }
    Ok(std::env::var_os("OFFPORT_CONFIG").map(PathBuf::from))
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
    let settings = match config_path()
        .and_then(|path| Settings::load(path.as_deref()).map_err(|e| e.to_string()))
    {
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
    F: FnOnce(&Settings) -> Result<N, String>,
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
    let mut options = PipelineOptions::for_stage(stage.name, inputs, settings);
    // Progress markers go where the stage writes records (see offport_core::progress).
    options.progress_topics = stage
        .writes
        .iter()
        .filter(|role| {
            matches!(
                role,
                TopicRole::Sessions | TopicRole::DeviceEvents | TopicRole::DeviceContexts
            )
        })
        .map(|role| role.spec(&settings.topics).name)
        .collect();
    let result = pipeline::run_normalizer(
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
