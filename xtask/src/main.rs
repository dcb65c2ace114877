//! `cargo xtask`: the developer entry point.
//!
//! - `setup`: checks Java and Maven, fetches Kafka and Apicurio Registry from Maven Central,
//!   builds the workspace.
//! - `stack up | down | status | logs`: the local stack (real broker and registry, no Docker).
//! - `test`: runs every test against the local stack (or the one named by
//!   `OFFPORT_BOOTSTRAP_SERVERS` / `OFFPORT_REGISTRY_URL`).
//! - `demo`: the main job end to end: the five services on a simulated fleet (see `demo.rs`).
//! - `pipeline`: the five services at steady input rates: alert latency, CPU per record and
//!   memory per service (see `pipeline.rs`).
//! - `precision`: recall and false findings of the five services on simulated fleets in the
//!   sensors' formats, per seed, benign behaviour and rule (see `precision.rs`).
//!
//! It is tooling, not product: the services never depend on it.

mod chaos;
mod demo;
mod pipeline;
mod precision;

use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use offport_devstack::stack::{self, StackOptions, StackState};
use offport_devstack::{fetch, java};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "offport developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Check Java and Maven, fetch Kafka and Apicurio Registry, build the workspace.
    Setup,
    /// Manage the local stack (Kafka KRaft broker + Apicurio Registry).
    Stack {
        #[command(subcommand)]
        action: StackAction,
    },
    /// Run every test (unit, contract and integration) against a real broker and registry.
    Test {
        /// Extra arguments passed to `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the main job end to end, as far as it exists.
    Demo,
    /// The fault suite: the five services killed and stopped at random, the broker and the
    /// registry restarted, on a private stack; the answer must be the undisturbed run's.
    Chaos(chaos::ChaosArgs),
    /// Recall and false findings of the five services on simulated fleets in the sensors'
    /// formats: per seed, per benign behaviour and per rule.
    Precision(precision::PrecisionArgs),
    /// The five services (release builds) fed a simulated fleet in the sensors' formats at
    /// steady rates: alert latency, CPU per raw record and peak memory per service.
    Pipeline(pipeline::PipelineArgs),
}

#[derive(Subcommand)]
enum StackAction {
    /// Fetch what is missing, start the broker and registry, create the topics.
    Up,
    /// Stop the broker and registry started by `up`.
    Down,
    /// Show whether each component is alive and answering; exit 1 when not healthy.
    Status,
    /// Print the paths of the log files.
    Logs,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run(task: Task) -> Result<ExitCode> {
    let options = StackOptions::from_env()?;
    match task {
        Task::Setup => setup(&options),
        Task::Stack { action } => match action {
            StackAction::Up => {
                let state = runtime()?.block_on(stack::up(&options))?;
                print_state(&state);
                Ok(ExitCode::SUCCESS)
            }
            StackAction::Down => {
                let stopped = stack::down(&options)?;
                if stopped.is_empty() {
                    println!("no stack was running");
                } else {
                    println!("stopped: {}", stopped.join(", "));
                }
                Ok(ExitCode::SUCCESS)
            }
            StackAction::Status => {
                let health = stack::status(&options);
                for component in &health {
                    println!(
                        "{:<9} {:<9} {}",
                        component.name,
                        if component.healthy() {
                            "healthy"
                        } else {
                            "DOWN"
                        },
                        component.detail
                    );
                }
                Ok(if health.iter().all(|c| c.healthy()) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
            StackAction::Logs => {
                match stack::read_state(&options) {
                    Some(state) => {
                        println!("kafka:    {}", state.kafka_log.display());
                        println!("registry: {}", state.registry_log.display());
                    }
                    None => println!("no stack recorded in {}", options.cache_dir.display()),
                }
                Ok(ExitCode::SUCCESS)
            }
        },
        Task::Test { args } => test(&options, &args),
        Task::Demo => demo::run(&options),
        Task::Chaos(args) => chaos::run(&options, &args),
        Task::Precision(args) => precision::run(&options, &args),
        Task::Pipeline(args) => pipeline::run(&options, &args),
    }
}

fn print_state(state: &StackState) {
    println!(
        "kafka     {} (Apache Kafka {}, KRaft)",
        state.bootstrap_servers, state.kafka_version
    );
    println!(
        "registry  {} (Apicurio Registry {})",
        state.registry_url, state.apicurio_version
    );
    println!(
        "logs      {} {}",
        state.kafka_log.display(),
        state.registry_log.display()
    );
    if state.startup_seconds > 0.0 {
        println!("started in {:.1}s", state.startup_seconds);
    }
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn setup(options: &StackOptions) -> Result<ExitCode> {
    let kafka_java = java::find(17, "Apache Kafka 4")?;
    println!(
        "java for kafka:    {} (Java {})",
        kafka_java.path.display(),
        kafka_java.major
    );
    let registry_java = java::find(21, "Apicurio Registry 3")?;
    println!(
        "java for registry: {} (Java {})",
        registry_java.path.display(),
        registry_java.major
    );
    let artifacts = fetch::all(
        &options.cache_dir,
        &options.kafka_version,
        &options.apicurio_version,
    )?;
    println!(
        "kafka {} jars:     {}",
        options.kafka_version,
        artifacts.kafka_libs.display()
    );
    println!(
        "apicurio {}:       {}",
        options.apicurio_version,
        artifacts.apicurio_home.display()
    );
    let status = cargo()
        .args(["build", "--workspace", "--all-targets"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed");
    }
    println!("setup complete: next, `cargo xtask demo` or `cargo xtask test`");
    Ok(ExitCode::SUCCESS)
}

/// The broker and registry to use (see [`stack::ensure`]); prints the stack when it starts one.
/// Returns the endpoints and whether this call started the stack.
pub(crate) fn ensure_stack(options: &StackOptions) -> Result<(String, String, bool)> {
    let endpoints = runtime()?.block_on(stack::ensure(options))?;
    if let Some(state) = &endpoints.started {
        print_state(state);
    }
    Ok((
        endpoints.bootstrap_servers,
        endpoints.registry_url,
        endpoints.started.is_some(),
    ))
}

fn test(options: &StackOptions, args: &[String]) -> Result<ExitCode> {
    let (bootstrap, registry, started) = ensure_stack(options)?;
    let status = cargo()
        .args(["test", "--workspace"])
        .args(args)
        .env("OFFPORT_BOOTSTRAP_SERVERS", &bootstrap)
        .env("OFFPORT_REGISTRY_URL", &registry)
        .status()
        .context("running cargo test");
    if started {
        println!("stopping the local stack this run started...");
        stack::down(options)?;
    }
    let status = status?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
