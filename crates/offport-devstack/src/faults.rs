//! A private broker and registry for the fault suite: the same jars as the local stack, their
//! own ports and directory, and both can be killed and started again **on their data**: the
//! broker on its KRaft log directory, the registry on an H2 database file (Apicurio's SQL
//! storage), so schema ids survive its outage as they would with a production store.
//!
//! Not for the tests that share the local stack: restarting its broker would fail them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::secure::free_port;
use crate::stack::{
    format_storage, kafka_answers, kafka_properties, process_alive, registry_command, spawn_kafka,
    spawn_logged, stop_group, wait_until, write_log4j, Listeners, StackOptions,
};
use crate::{fetch, java};

/// The private broker and registry of a fault run; both stopped on drop.
#[derive(Debug)]
pub struct FaultStack {
    /// `127.0.0.1:<port>` of the broker.
    pub bootstrap: String,
    /// `http://127.0.0.1:<port>/apis/ccompat/v7`.
    pub registry_url: String,
    dir: PathBuf,
    kafka_java: PathBuf,
    kafka_libs: PathBuf,
    log4j: PathBuf,
    properties: PathBuf,
    broker_pid: Option<i32>,
    registry_java: PathBuf,
    registry_home: PathBuf,
    registry_ports: (u16, u16),
    registry_pid: Option<i32>,
    start_timeout: Duration,
    restarts: u32,
}

/// SIGKILL to a process group, as a crash; waits until it is gone.
fn kill_group(pid: i32) -> Result<()> {
    match killpg(Pid::from_raw(pid), Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => anyhow::bail!("killing pid {pid}: {e}"),
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

impl FaultStack {
    /// Formats fresh storage in `dir` (emptied first) and starts the broker and the registry;
    /// returns once both answer.
    pub fn start(options: &StackOptions, dir: &Path) -> Result<Self> {
        let kafka_libs = fetch::kafka(&options.cache_dir, &options.kafka_version)?;
        let registry_home = fetch::apicurio(&options.cache_dir, &options.apicurio_version)?;
        let kafka_java = java::find(17, "Apache Kafka 4")?.path;
        let registry_java = java::find(21, "Apicurio Registry 3")?.path;
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        let data = dir.join("kafka-data");
        std::fs::create_dir_all(&data)?;
        let (broker, controller) = (free_port()?, free_port()?);
        let listeners = Listeners {
            listeners: format!("PLAINTEXT://127.0.0.1:{broker}"),
            advertised: format!("PLAINTEXT://127.0.0.1:{broker}"),
            protocol_map: "PLAINTEXT:PLAINTEXT".to_string(),
            extra: broker_extra(),
        };
        let properties = dir.join("server.properties");
        std::fs::write(
            &properties,
            kafka_properties(controller, &listeners, &data, options.partitions),
        )?;
        let log4j = write_log4j(dir)?;
        format_storage(&kafka_java, &kafka_libs, &log4j, &properties, &[])?;
        let registry_ports = (free_port()?, free_port()?);
        let mut stack = Self {
            bootstrap: format!("127.0.0.1:{broker}"),
            registry_url: format!("http://127.0.0.1:{}/apis/ccompat/v7", registry_ports.0),
            dir: dir.to_path_buf(),
            kafka_java,
            kafka_libs,
            log4j,
            properties,
            broker_pid: None,
            registry_java,
            registry_home,
            registry_ports,
            registry_pid: None,
            start_timeout: options.start_timeout,
            restarts: 0,
        };
        stack.start_broker()?;
        stack.start_registry()?;
        Ok(stack)
    }

    /// Starts the broker on its data; returns once it answers.
    pub fn start_broker(&mut self) -> Result<()> {
        let log = self.dir.join(format!("kafka-{}.log", self.restarts));
        let pid = spawn_kafka(
            &self.kafka_java,
            &self.kafka_libs,
            &self.log4j,
            &self.properties,
            &self.dir,
            &log,
        )?;
        self.broker_pid = Some(pid);
        let bootstrap = self.bootstrap.clone();
        wait_until(
            "the fault suite's Kafka broker",
            Instant::now() + self.start_timeout,
            pid,
            &log,
            || kafka_answers(&bootstrap, Duration::from_secs(2)).map(|_| ()),
        )
    }

    /// Kills the broker (SIGKILL: no clean shutdown, as in a crash) and leaves it down.
    pub fn kill_broker(&mut self) -> Result<()> {
        if let Some(pid) = self.broker_pid.take() {
            kill_group(pid)?;
        }
        self.restarts += 1;
        Ok(())
    }

    /// Starts the registry on its database file; returns once its API answers.
    pub fn start_registry(&mut self) -> Result<()> {
        let (http, management) = self.registry_ports;
        let needle = self.dir.to_string_lossy().into_owned();
        let db = self.dir.join("registry-db");
        let extra = vec![format!(
            "-Dapicurio.datasource.url=jdbc:h2:file:{};DB_CLOSE_ON_EXIT=FALSE",
            db.display()
        )];
        let command = registry_command(
            &self.registry_java,
            &self.registry_home,
            http,
            management,
            &needle,
            &extra,
        );
        let log = self.dir.join(format!("registry-{}.log", self.restarts));
        let pid = spawn_logged(command, &log)?;
        self.registry_pid = Some(pid);
        let url = format!("{}/subjects", self.registry_url);
        wait_until(
            "the fault suite's Apicurio Registry",
            Instant::now() + self.start_timeout,
            pid,
            &log,
            || {
                ureq::get(&url)
                    .call()
                    .map(drop)
                    .context("registry API not answering")
            },
        )
    }

    /// Kills the registry (SIGKILL) and leaves it down.
    pub fn kill_registry(&mut self) -> Result<()> {
        if let Some(pid) = self.registry_pid.take() {
            kill_group(pid)?;
        }
        self.restarts += 1;
        Ok(())
    }

    /// The directory with the broker's and registry's logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for FaultStack {
    fn drop(&mut self) {
        let needle = self.dir.to_string_lossy().into_owned();
        for pid in [self.registry_pid.take(), self.broker_pid.take()]
            .into_iter()
            .flatten()
        {
            if let Err(error) = stop_group(pid, &needle, Duration::from_secs(10)) {
                eprintln!("stopping pid {pid} of the fault stack: {error}");
            }
        }
    }
}

/// The fault broker's extra properties: every record kept, plus any the developer names in
/// `OFFPORT_CHAOS_BROKER_PROPERTIES` (`key=value` pairs separated by commas or newlines), to
/// try the suite against another broker setting without a rebuild.
fn broker_extra() -> String {
    // Keep every record: a fault run replays simulated days whose Kafka timestamps may be older
    // than the default 7-day retention, which would delete them mid-run (the broker restart
    // brings the retention check forward).
    let mut extra = "log.retention.ms=-1\n".to_string();
    if let Ok(more) = std::env::var("OFFPORT_CHAOS_BROKER_PROPERTIES") {
        for pair in more
            .split([',', '\n'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            extra.push_str(pair);
            extra.push('\n');
        }
    }
    extra
}
