//! What each deployable stage reads and writes, and the common start-up of a stage binary.
//!
//! [`Stage`] is the wiring table of the topology; the service mains and the README's topic list
//! agree with it. Normalizer binaries run [`run_normalizer`]. Until a stage's processing exists,
//! its binary runs [`not_yet_built`]: it loads and validates the configuration a deployment would
//! give it, says what it will do, and exits with status 2, rather than idle and look healthy.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use offport_core::normalize::Normalizer;

use crate::metrics::{self, PipelineMetrics};
use crate::pipeline::{self, PipelineOptions};
use crate::registry::RegistryCodec;
use crate::settings::Settings;
use crate::shutdown::Shutdown;
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

/// Entry point of a normalizer stage: loads the configuration, starts the metrics and health
/// endpoint, and runs the exactly-once loop with the normalizer `make` builds from the
/// settings, until SIGTERM or Ctrl-C. Exit status 0 after a clean shutdown, 1 on a
/// configuration or fatal error.
pub async fn run_normalizer<N, F>(stage: Stage, make: F) -> ExitCode
where
    N: Normalizer,
    F: FnOnce(&Settings) -> Result<N, String>,
{
    let settings = match config_path()
        .and_then(|path| Settings::load(path.as_deref()).map_err(|e| e.to_string()))
    {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("offport-{}: {error}", stage.name);
            return ExitCode::FAILURE;
        }
    };
    telemetry::init(&settings.log);
    let normalizer = match make(&settings) {
        Ok(normalizer) => normalizer,
        Err(error) => {
            tracing::error!(stage = stage.name, %error, "configuration");
            return ExitCode::FAILURE;
        }
    };
    let codec = match RegistryCodec::new(&settings.registry) {
        Ok(codec) => Arc::new(codec),
        Err(error) => {
            tracing::error!(stage = stage.name, %error, "schema registry client");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = Shutdown::new();
    shutdown.listen();
    let mut registry = prometheus_client::registry::Registry::default();
    let pipeline_metrics = PipelineMetrics::register(&mut registry);
    let listen = match settings.observability.listen.parse() {
        Ok(listen) => listen,
        Err(error) => {
            tracing::error!(%error, "observability.listen");
            return ExitCode::FAILURE;
        }
    };
    match metrics::serve(
        listen,
        registry,
        Arc::clone(&pipeline_metrics),
        shutdown.clone(),
    )
    .await
    {
        Ok((bound, _)) => tracing::info!(%bound, "serving /metrics, /healthz, /readyz"),
        Err(error) => {
            tracing::error!(%error, listen = %settings.observability.listen, "cannot serve metrics");
            return ExitCode::FAILURE;
        }
    }
    let inputs = stage
        .reads
        .iter()
        .map(|role| role.spec(&settings.topics).name)
        .collect();
    let options = PipelineOptions::for_stage(stage.name, inputs, &settings);
    let result = pipeline::run_normalizer(
        &settings,
        options,
        normalizer,
        codec,
        pipeline_metrics,
        shutdown.clone(),
    )
    .await;
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

/// Entry point of a stage whose processing is not built yet.
pub fn not_yet_built(stage: Stage, issue: u32) -> ExitCode {
    let settings = match config_path()
        .and_then(|path| Settings::load(path.as_deref()).map_err(|e| e.to_string()))
    {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("offport-{}: {error}", stage.name);
            return ExitCode::FAILURE;
        }
    };
    telemetry::init(&settings.log);
    let names = |roles: &[TopicRole]| -> Vec<String> {
        roles
            .iter()
            .map(|r| r.spec(&settings.topics).name)
            .collect()
    };
    tracing::info!(
        stage = stage.name,
        purpose = stage.purpose,
        reads = ?names(stage.reads),
        writes = ?names(stage.writes),
        bootstrap = %settings.kafka.bootstrap_servers,
        "configuration valid"
    );
    tracing::error!(
        stage = stage.name,
        "processing is not implemented yet (tracked in issue #{issue}); exiting"
    );
    ExitCode::from(2)
}
