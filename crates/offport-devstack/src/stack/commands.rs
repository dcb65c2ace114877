//! How the stack's two JVMs are configured and started: the broker's `server.properties`,
//! log4j and KRaft storage, and the registry's command line.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::{spawn_logged, StackOptions};

/// The listeners of a broker: `listeners`, `advertised.listeners`, the protocol map, and any
/// further properties (security).
pub(crate) struct Listeners {
    pub(crate) listeners: String,
    pub(crate) advertised: String,
    pub(crate) protocol_map: String,
    pub(crate) extra: String,
}

/// `server.properties` of a single-node KRaft broker+controller on loopback.
pub(crate) fn kafka_properties(
    controller: u16,
    listeners: &Listeners,
    data: &Path,
    partitions: i32,
) -> String {
    format!(
        "# Written by offport's devstack: single-node KRaft broker+controller on loopback.\n\
         process.roles=broker,controller\n\
         node.id=1\n\
         controller.quorum.voters=1@127.0.0.1:{controller}\n\
         listeners={listeners},CONTROLLER://127.0.0.1:{controller}\n\
         advertised.listeners={advertised}\n\
         controller.listener.names=CONTROLLER\n\
         listener.security.protocol.map={protocol_map},CONTROLLER:PLAINTEXT\n\
         inter.broker.listener.name=PLAINTEXT\n\
         log.dirs={data}\n\
         num.partitions={partitions}\n\
         auto.create.topics.enable=false\n\
         offsets.topic.replication.factor=1\n\
         offsets.topic.num.partitions=10\n\
         transaction.state.log.replication.factor=1\n\
         transaction.state.log.min.isr=1\n\
         transaction.state.log.num.partitions=10\n\
         share.coordinator.state.topic.replication.factor=1\n\
         share.coordinator.state.topic.min.isr=1\n\
         group.initial.rebalance.delay.ms=0\n\
         log.cleaner.backoff.ms=1000\n\
         {extra}",
        listeners = listeners.listeners,
        advertised = listeners.advertised,
        protocol_map = listeners.protocol_map,
        extra = listeners.extra,
        data = data.display(),
    )
}

/// Writes the broker's log4j configuration (console, INFO, the cleaner quieter) into `dir`.
pub(crate) fn write_log4j(dir: &Path) -> Result<PathBuf> {
    let log4j = dir.join("log4j2.properties");
    std::fs::write(
        &log4j,
        "status = warn\n\
         appender.out.type = Console\n\
         appender.out.name = OUT\n\
         appender.out.layout.type = PatternLayout\n\
         appender.out.layout.pattern = [%d] %p %m (%c)%n\n\
         rootLogger.level = INFO\n\
         rootLogger.appenderRef.out.ref = OUT\n\
         logger.cleaner.name = kafka.log.LogCleaner\n\
         logger.cleaner.level = WARN\n",
    )?;
    Ok(log4j)
}

pub(super) fn write_kafka_config(
    options: &StackOptions,
    dir: &Path,
    data: &Path,
) -> Result<(PathBuf, PathBuf)> {
    let properties = dir.join("server.properties");
    let broker = options.kafka_port;
    let listeners = Listeners {
        listeners: format!("PLAINTEXT://127.0.0.1:{broker}"),
        advertised: format!("PLAINTEXT://127.0.0.1:{broker}"),
        protocol_map: "PLAINTEXT:PLAINTEXT".to_string(),
        extra: String::new(),
    };
    std::fs::write(
        &properties,
        kafka_properties(
            options.controller_port,
            &listeners,
            data,
            options.partitions,
        ),
    )?;
    Ok((properties, write_log4j(dir)?))
}

/// The command that runs Apicurio Registry from `home` on loopback: in-memory H2 storage, HTTP
/// on `http_port`, health and metrics on `management_port`; `marker` goes on the command line
/// (`-Doffport.devstack=<marker>`) so the process can be told from a recycled pid; `extra`
/// system properties (TLS) come before the jar.
pub(crate) fn registry_command(
    java: &Path,
    home: &Path,
    http_port: u16,
    management_port: u16,
    marker: &str,
    extra: &[String],
) -> Command {
    let mut registry = Command::new(java);
    registry
        .args(["-Xms128m", "-Xmx512m", "-Dquarkus.http.host=127.0.0.1"])
        .arg(format!("-Dquarkus.http.port={http_port}"))
        // The management interface (health, metrics) would listen on 0.0.0.0:9000.
        .arg("-Dquarkus.management.host=127.0.0.1")
        .arg(format!("-Dquarkus.management.port={management_port}"))
        .arg("-Dapicurio.storage.kind=sql")
        .arg("-Dapicurio.storage.sql.kind=h2")
        .arg("-Dapicurio.ccompat.max-subjects=100000")
        .arg(format!("-Doffport.devstack={marker}"))
        .args(extra)
        .args(["-jar", "quarkus-run.jar"])
        .current_dir(home);
    registry
}

/// Formats fresh KRaft storage for the broker of `properties` (`extra` arguments such as
/// `--add-scram` go to Kafka's StorageTool).
pub(crate) fn format_storage(
    java: &Path,
    kafka_libs: &Path,
    log4j: &Path,
    properties: &Path,
    extra: &[String],
) -> Result<()> {
    let cluster_id = uuid::Uuid::new_v4();
    // Kafka cluster ids are a UUID in URL-safe base64 without padding (22 characters).
    let cluster_id = URL_SAFE_NO_PAD.encode(cluster_id.as_bytes());
    let format = Command::new(java)
        .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
        .arg("-cp")
        .arg(format!("{}/*", kafka_libs.display()))
        .args(["kafka.tools.StorageTool", "format"])
        // Joined to its flag: an id may begin with `-`, which the tool's parser would take
        // for an option of its own.
        .arg(format!("--cluster-id={cluster_id}"))
        .arg("-c")
        .arg(properties)
        .args(extra)
        .output()
        .context("formatting KRaft storage")?;
    if !format.status.success() {
        bail!(
            "formatting KRaft storage failed:\n{}{}",
            String::from_utf8_lossy(&format.stdout),
            String::from_utf8_lossy(&format.stderr)
        );
    }
    Ok(())
}

/// Starts the broker of `properties` in its own process group, output in `log`; returns its
/// pid.
pub(crate) fn spawn_kafka(
    java: &Path,
    kafka_libs: &Path,
    log4j: &Path,
    properties: &Path,
    run: &Path,
    log: &Path,
) -> Result<i32> {
    let mut kafka = Command::new(java);
    kafka
        .args([
            "-Xms256m",
            "-Xmx1g",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
        ])
        .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
        .arg("-cp")
        .arg(format!("{}/*", kafka_libs.display()))
        .arg("kafka.Kafka")
        .arg(properties)
        .current_dir(run);
    spawn_logged(kafka, log)
}
