//! `up`, `status` and `down` for the local stack, and the state file tests attach to.
//!
//! The stack is ephemeral on purpose: `up` formats fresh KRaft storage and the registry keeps its
//! schemas in memory, so schema ids and topic contents always agree. Both JVMs run in their own
//! process groups, detached from the command that started them, with their output in log files
//! under `<cache>/run/`. The state file `<cache>/run/stack.json` records where they listen and
//! their process ids; `down` stops exactly those processes and nothing else.

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use offport_kafka::settings::{KafkaSettings, RegistrySettings, TopicSettings};
use offport_kafka::topics::{ensure_topics, TopicOutcome, TopicRole};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::{Deserialize, Serialize};

use crate::{fetch, java};

mod commands;

use commands::write_kafka_config;
pub(crate) use commands::{
    format_storage, kafka_properties, registry_command, spawn_kafka, write_log4j, Listeners,
};

/// How to run the stack. Every field has an environment override, read by
/// [`StackOptions::from_env`].
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Cache directory for downloads and run state (`OFFPORT_CACHE_DIR`, default
    /// `$XDG_CACHE_HOME/offport` or `~/.cache/offport`).
    pub cache_dir: PathBuf,
    /// Directory for the state file, logs and broker data (`OFFPORT_RUN_DIR`, default
    /// `<cache_dir>/run`). Separate run directories allow separate stacks sharing one download
    /// cache.
    pub run_dir: PathBuf,
    /// Broker listener port (`OFFPORT_KAFKA_PORT`, default 9092).
    pub kafka_port: u16,
    /// KRaft controller port (`OFFPORT_CONTROLLER_PORT`, default 9093).
    pub controller_port: u16,
    /// Registry HTTP port (`OFFPORT_REGISTRY_PORT`, default 8081).
    pub registry_port: u16,
    /// Registry management (health, metrics) port (`OFFPORT_REGISTRY_MANAGEMENT_PORT`, default
    /// 8091). Quarkus fixes at build time that this interface exists, so it gets its own port.
    pub registry_management_port: u16,
    /// Partitions of the device-keyed topics (`OFFPORT_PARTITIONS`, default 6 like the services).
    pub partitions: i32,
    /// Kafka version (`OFFPORT_KAFKA_VERSION`).
    pub kafka_version: String,
    /// Apicurio Registry version (`OFFPORT_APICURIO_VERSION`).
    pub apicurio_version: String,
    /// How long to wait for each component to answer.
    pub start_timeout: Duration,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={text:?} is not a valid value")),
        Err(_) => Ok(default),
    }
}

impl StackOptions {
    /// Defaults with environment overrides applied.
    pub fn from_env() -> Result<Self> {
        let cache_dir = match std::env::var_os("OFFPORT_CACHE_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => match std::env::var_os("XDG_CACHE_HOME") {
                Some(dir) => PathBuf::from(dir).join("offport"),
                None => PathBuf::from(
                    std::env::var_os("HOME")
                        .context("neither OFFPORT_CACHE_DIR nor HOME is set")?,
                )
                .join(".cache/offport"),
            },
        };
        let run_dir = match std::env::var_os("OFFPORT_RUN_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => cache_dir.join("run"),
        };
        Ok(Self {
            cache_dir,
            run_dir,
            kafka_port: env_or("OFFPORT_KAFKA_PORT", 9092)?,
            controller_port: env_or("OFFPORT_CONTROLLER_PORT", 9093)?,
            registry_port: env_or("OFFPORT_REGISTRY_PORT", 8081)?,
            registry_management_port: env_or("OFFPORT_REGISTRY_MANAGEMENT_PORT", 8091)?,
            partitions: env_or("OFFPORT_PARTITIONS", TopicSettings::default().partitions)?,
            kafka_version: env_or("OFFPORT_KAFKA_VERSION", fetch::KAFKA_VERSION.to_string())?,
            apicurio_version: env_or(
                "OFFPORT_APICURIO_VERSION",
                fetch::APICURIO_VERSION.to_string(),
            )?,
            start_timeout: Duration::from_secs(env_or("OFFPORT_START_TIMEOUT_SECS", 180)?),
        })
    }

    fn run_dir(&self) -> PathBuf {
        self.run_dir.clone()
    }

    fn state_file(&self) -> PathBuf {
        self.run_dir().join("stack.json")
    }

    /// Topic layout the stack creates.
    pub fn topic_settings(&self) -> TopicSettings {
        TopicSettings {
            partitions: self.partitions,
            ..TopicSettings::default()
        }
    }
}

/// A running stack, as recorded in the state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackState {
    /// Kafka bootstrap servers.
    pub bootstrap_servers: String,
    /// Confluent-compatible registry API base URL.
    pub registry_url: String,
    /// Broker process id (also its process group id).
    pub kafka_pid: i32,
    /// Registry process id (also its process group id).
    pub registry_pid: i32,
    /// Kafka version.
    pub kafka_version: String,
    /// Apicurio Registry version.
    pub apicurio_version: String,
    /// Broker log file.
    pub kafka_log: PathBuf,
    /// Registry log file.
    pub registry_log: PathBuf,
    /// Seconds from `up` to both components answering and topics created.
    pub startup_seconds: f64,
}

impl StackState {
    /// Kafka settings pointing at this stack.
    pub fn kafka_settings(&self) -> KafkaSettings {
        KafkaSettings {
            bootstrap_servers: self.bootstrap_servers.clone(),
            ..KafkaSettings::default()
        }
    }

    /// Registry settings pointing at this stack.
    pub fn registry_settings(&self) -> RegistrySettings {
        RegistrySettings {
            url: self.registry_url.clone(),
            ..RegistrySettings::default()
        }
    }
}

/// Health of one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentHealth {
    /// Component name.
    pub name: &'static str,
    /// Its process is alive.
    pub process_alive: bool,
    /// It answers its protocol (Kafka metadata, registry subjects list).
    pub answering: bool,
    /// Human-readable detail.
    pub detail: String,
}

impl ComponentHealth {
    /// Alive and answering.
    pub fn healthy(&self) -> bool {
        self.process_alive && self.answering
    }
}

/// A broker and registry to use, and whether [`ensure`] started them.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoints {
    /// Kafka bootstrap servers.
    pub bootstrap_servers: String,
    /// Confluent-compatible registry API base URL.
    pub registry_url: String,
    /// The local stack this call started, when it started one.
    pub started: Option<StackState>,
}

/// True when [`ensure`] would use a broker and registry without starting any: both addresses
/// set in the environment, or a healthy local stack in the state file.
pub fn configured_or_running(options: &StackOptions) -> bool {
    (std::env::var_os("OFFPORT_BOOTSTRAP_SERVERS").is_some()
        && std::env::var_os("OFFPORT_REGISTRY_URL").is_some())
        || attach(options).is_some()
}

/// Where to find a broker and registry: `OFFPORT_BOOTSTRAP_SERVERS` and `OFFPORT_REGISTRY_URL`
/// when both are set, else the healthy local stack recorded in the state file, else a local
/// stack started here.
pub async fn ensure(options: &StackOptions) -> Result<Endpoints> {
    if let (Ok(bootstrap_servers), Ok(registry_url)) = (
        std::env::var("OFFPORT_BOOTSTRAP_SERVERS"),
        std::env::var("OFFPORT_REGISTRY_URL"),
    ) {
        return Ok(Endpoints {
            bootstrap_servers,
            registry_url,
            started: None,
        });
    }
    if let Some(state) = attach(options) {
        return Ok(Endpoints {
            bootstrap_servers: state.bootstrap_servers,
            registry_url: state.registry_url,
            started: None,
        });
    }
    let state = up(options).await?;
    Ok(Endpoints {
        bootstrap_servers: state.bootstrap_servers.clone(),
        registry_url: state.registry_url.clone(),
        started: Some(state),
    })
}

/// Takes the stack lock so that concurrent `up`/`down` calls (several test binaries, a user in
/// another terminal) serialize instead of racing.
fn lock(options: &StackOptions) -> Result<Flock<File>> {
    std::fs::create_dir_all(options.run_dir())?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(options.run_dir().join("stack.lock"))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| anyhow::anyhow!("locking the stack: {errno}"))
}

/// Reads the state file, if any.
pub fn read_state(options: &StackOptions) -> Option<StackState> {
    let text = std::fs::read_to_string(options.state_file()).ok()?;
    serde_json::from_str(&text).ok()
}

/// True when `pid` is a live (not zombie) process whose command line mentions `needle`.
pub(crate) fn process_matches(pid: i32, needle: &str) -> bool {
    process_alive(pid)
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(needle))
            .unwrap_or(false)
}

/// True when `pid` is a live (not zombie) process.
pub(crate) fn process_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state letter follows the parenthesised command name.
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X"))
}

pub(crate) fn kafka_answers(bootstrap: &str, timeout: Duration) -> Result<usize> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("log_level", "3")
        .create()?;
    let metadata = consumer.fetch_metadata(None, timeout)?;
    Ok(metadata.brokers().len())
}

fn registry_answers(url: &str) -> Result<()> {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(3)))
        .build()
        .new_agent();
    let response = agent.get(&format!("{url}/subjects")).call()?;
    if response.status() != 200 {
        bail!("GET {url}/subjects answered {}", response.status());
    }
    Ok(())
}

/// Health of both components of the recorded stack.
pub fn status(options: &StackOptions) -> Vec<ComponentHealth> {
    let Some(state) = read_state(options) else {
        return vec![
            ComponentHealth {
                name: "kafka",
                process_alive: false,
                answering: false,
                detail: "not started (no state file)".to_string(),
            },
            ComponentHealth {
                name: "registry",
                process_alive: false,
                answering: false,
                detail: "not started (no state file)".to_string(),
            },
        ];
    };
    let cache = options.run_dir.to_string_lossy().to_string();
    let kafka_alive = process_matches(state.kafka_pid, &cache);
    let kafka = kafka_answers(&state.bootstrap_servers, Duration::from_secs(3));
    let registry_alive = process_matches(state.registry_pid, &cache);
    let registry = registry_answers(&state.registry_url);
    vec![
        ComponentHealth {
            name: "kafka",
            process_alive: kafka_alive,
            answering: kafka.is_ok(),
            detail: match kafka {
                Ok(brokers) => format!(
                    "Apache Kafka {} (KRaft) pid {} at {}, {brokers} broker(s)",
                    state.kafka_version, state.kafka_pid, state.bootstrap_servers
                ),
                Err(e) => format!(
                    "pid {} not answering at {}: {e}",
                    state.kafka_pid, state.bootstrap_servers
                ),
            },
        },
        ComponentHealth {
            name: "registry",
            process_alive: registry_alive,
            answering: registry.is_ok(),
            detail: match registry {
                Ok(()) => format!(
                    "Apicurio Registry {} pid {} at {}",
                    state.apicurio_version, state.registry_pid, state.registry_url
                ),
                Err(e) => format!(
                    "pid {} not answering at {}: {e}",
                    state.registry_pid, state.registry_url
                ),
            },
        },
    ]
}

/// The recorded stack when both components are healthy.
pub fn attach(options: &StackOptions) -> Option<StackState> {
    let state = read_state(options)?;
    status(options)
        .iter()
        .all(ComponentHealth::healthy)
        .then_some(state)
}

pub(crate) fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

pub(crate) fn spawn_logged(mut command: Command, log: &Path) -> Result<i32> {
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Own process group: survives the command that started it, and `down` can stop the
        // JVM with everything it spawned.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {:?}", command.get_program()))?;
    i32::try_from(child.id()).context("pid out of range")
}

pub(crate) fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .get(lines.len().saturating_sub(25)..)
        .unwrap_or_default()
        .join("\n")
}

pub(crate) fn wait_until<F: FnMut() -> Result<()>>(
    what: &str,
    deadline: Instant,
    pid: i32,
    log: &Path,
    mut check: F,
) -> Result<()> {
    loop {
        match check() {
            Ok(()) => return Ok(()),
            Err(error) => {
                // Our own child, just spawned: until it has exec'd, its command line is still
                // the parent's, so only a dead process counts as exited here (a check against
                // `needle` failed a start once, with an empty log, while the registry came up).
                if !process_alive(pid) {
                    bail!(
                        "{what} exited during startup. Last lines of {}:\n{}",
                        log.display(),
                        log_tail(log)
                    );
                }
                if Instant::now() > deadline {
                    bail!(
                        "{what} did not answer in time ({error}). Last lines of {}:\n{}",
                        log.display(),
                        log_tail(log)
                    );
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
}

/// Starts the stack (fetching its pieces first when needed) unless a healthy one is already
/// recorded, and creates the topology's topics. Returns the running stack.
pub async fn up(options: &StackOptions) -> Result<StackState> {
    let _lock = lock(options)?;
    if let Some(state) = attach(options) {
        tracing::info!("stack already running");
        return Ok(state);
    }
    // A stale state file (crash, reboot) names processes that are gone or unhealthy.
    stop_recorded(options)?;

    let started = Instant::now();
    let artifacts = fetch::all(
        &options.cache_dir,
        &options.kafka_version,
        &options.apicurio_version,
    )?;
    let kafka_java = java::find(17, "Apache Kafka 4")?;
    let registry_java = java::find(21, "Apicurio Registry 3")?;

    for (port, what, var) in [
        (options.kafka_port, "Kafka", "OFFPORT_KAFKA_PORT"),
        (
            options.controller_port,
            "the KRaft controller",
            "OFFPORT_CONTROLLER_PORT",
        ),
        (
            options.registry_port,
            "the registry",
            "OFFPORT_REGISTRY_PORT",
        ),
        (
            options.registry_management_port,
            "the registry's management interface",
            "OFFPORT_REGISTRY_MANAGEMENT_PORT",
        ),
    ] {
        if !port_free(port) {
            bail!(
                "port {port} for {what} is already in use by another process; stop it or set {var}"
            );
        }
    }

    let run = options.run_dir();
    let data = run.join("kafka-data");
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    std::fs::create_dir_all(&data)?;
    let (properties, log4j) = write_kafka_config(options, &run, &data)?;
    format_storage(
        &kafka_java.path,
        &artifacts.kafka_libs,
        &log4j,
        &properties,
        &[],
    )?;
    let kafka_log = run.join("kafka.log");
    let kafka_pid = spawn_kafka(
        &kafka_java.path,
        &artifacts.kafka_libs,
        &log4j,
        &properties,
        &run,
        &kafka_log,
    )?;

    let registry_log = run.join("registry.log");
    let registry = registry_command(
        &registry_java.path,
        &artifacts.apicurio_home,
        options.registry_port,
        options.registry_management_port,
        // Marks the process so status/down can tell it from a recycled pid.
        &options.run_dir.to_string_lossy(),
        &[],
    );
    let registry_pid = spawn_logged(registry, &registry_log)?;

    let state = StackState {
        bootstrap_servers: format!("127.0.0.1:{}", options.kafka_port),
        registry_url: format!("http://127.0.0.1:{}/apis/ccompat/v7", options.registry_port),
        kafka_pid,
        registry_pid,
        kafka_version: options.kafka_version.clone(),
        apicurio_version: options.apicurio_version.clone(),
        kafka_log: kafka_log.clone(),
        registry_log: registry_log.clone(),
        startup_seconds: 0.0,
    };
    // Recorded before waiting, so that `down` can stop a stack whose startup failed.
    write_state(options, &state)?;

    // Whatever fails from here on, nothing this call started is left running.
    if let Err(error) = wait_and_create_topics(options, &state).await {
        if let Err(stop_error) = stop_recorded(options) {
            tracing::warn!(%stop_error, "stopping the half-started stack");
        }
        return Err(error);
    }

    let state = StackState {
        startup_seconds: started.elapsed().as_secs_f64(),
        ..state
    };
    write_state(options, &state)?;
    Ok(state)
}

async fn wait_and_create_topics(options: &StackOptions, state: &StackState) -> Result<()> {
    let deadline = Instant::now() + options.start_timeout;
    wait_until("Kafka", deadline, state.kafka_pid, &state.kafka_log, || {
        kafka_answers(&state.bootstrap_servers, Duration::from_secs(2)).map(|_| ())
    })?;
    wait_until(
        "Apicurio Registry",
        deadline,
        state.registry_pid,
        &state.registry_log,
        || registry_answers(&state.registry_url),
    )?;

    let specs: Vec<_> = TopicRole::ALL
        .iter()
        .map(|role| role.spec(&options.topic_settings()))
        .collect();
    let outcomes = ensure_topics(&state.kafka_settings().client_config(), &specs).await?;
    let created = outcomes
        .iter()
        .filter(|(_, o)| *o == TopicOutcome::Created)
        .count();
    tracing::info!(created, total = outcomes.len(), "topics ready");

    Ok(())
}

fn write_state(options: &StackOptions, state: &StackState) -> Result<()> {
    let text = serde_json::to_string_pretty(state)?;
    let tmp = options.state_file().with_extension("json.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, options.state_file())?;
    Ok(())
}

/// Stops one process group: SIGTERM, then SIGKILL after `grace`. Returns true when it was
/// running.
pub(crate) fn stop_group(pid: i32, needle: &str, grace: Duration) -> Result<bool> {
    if !process_matches(pid, needle) {
        return Ok(false);
    }
    let group = Pid::from_raw(pid);
    match killpg(group, Signal::SIGTERM) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => bail!("stopping pid {pid}: {e}"),
    }
    let deadline = Instant::now() + grace;
    while process_matches(pid, needle) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if process_matches(pid, needle) {
        tracing::warn!(pid, "did not stop on SIGTERM; sending SIGKILL");
        match killpg(group, Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => bail!("killing pid {pid}: {e}"),
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while process_matches(pid, needle) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if process_matches(pid, needle) {
            bail!("pid {pid} survived SIGKILL");
        }
    }
    Ok(true)
}

fn stop_recorded(options: &StackOptions) -> Result<Vec<&'static str>> {
    let Some(state) = read_state(options) else {
        return Ok(vec![]);
    };
    let needle = options.run_dir.to_string_lossy().to_string();
    let mut stopped = vec![];
    // The registry first: it holds no data worth a clean shutdown, the broker does.
    if stop_group(state.registry_pid, &needle, Duration::from_secs(15))? {
        stopped.push("registry");
    }
    if stop_group(state.kafka_pid, &needle, Duration::from_secs(30))? {
        stopped.push("kafka");
    }
    std::fs::remove_file(options.state_file()).ok();
    Ok(stopped)
}

/// Stops the recorded stack. Returns the components that were running.
pub fn down(options: &StackOptions) -> Result<Vec<&'static str>> {
    let _lock = lock(options)?;
    stop_recorded(options)
}

#[cfg(test)]
mod tests;
