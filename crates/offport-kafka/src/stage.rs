//! What each deployable stage reads and writes, and the common start-up of a stage binary.
//!
//! [`Stage`] is the wiring table of the topology; the service mains and the README's topic list
//! agree with it. Until a stage's processing exists, its binary runs [`not_yet_built`]: it loads
//! and validates the configuration a deployment would give it, says what it will do, and exits
//! with status 2, rather than idle and look healthy.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::settings::Settings;
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
