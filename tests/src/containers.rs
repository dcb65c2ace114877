//! The broker and the registry as containers, for machines with a Docker daemon (the
//! `testcontainers` feature): the Apache Kafka image (KRaft, one node) and the Apicurio Registry
//! image, the versions `docker-compose.yml` and the local stack run. Each test binary starts its
//! own pair; Ryuk, testcontainers' reaper, removes them when the binary exits.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result};
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use testcontainers_modules::kafka::apache::{Kafka, KAFKA_PORT};

use crate::Endpoints;

/// The Kafka image's tag: the broker version of the local stack.
pub const KAFKA_TAG: &str = offport_devstack::fetch::KAFKA_VERSION;
/// The Apicurio Registry image and tag.
pub const APICURIO_IMAGE: (&str, &str) = (
    "quay.io/apicurio/apicurio-registry",
    offport_devstack::fetch::APICURIO_VERSION,
);

/// Kept for the life of the test binary: dropping them would stop the containers.
static RUNNING: OnceLock<(ContainerAsync<Kafka>, ContainerAsync<GenericImage>)> = OnceLock::new();

/// Starts the pair, or says why it could not (no daemon answering, an image not pulled).
pub async fn start() -> Result<Endpoints> {
    let kafka = Kafka::default()
        .with_jvm_image()
        .with_tag(KAFKA_TAG)
        // Transactions (every stage is exactly-once) need their state log on the one broker.
        .with_env_var("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env_var("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env_var("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        .with_env_var("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
        .with_startup_timeout(Duration::from_secs(180))
        .start()
        .await
        .context("starting the Kafka container")?;
    let registry = GenericImage::new(APICURIO_IMAGE.0, APICURIO_IMAGE.1)
        .with_exposed_port(8080.tcp())
        .with_wait_for(WaitFor::message_on_stdout("Installed features"))
        .with_env_var("APICURIO_CCOMPAT_MAX_SUBJECTS", "100000")
        .with_startup_timeout(Duration::from_secs(180))
        .start()
        .await
        .context("starting the Apicurio Registry container")?;
    let host = kafka.get_host().await?;
    let endpoints = Endpoints {
        bootstrap_servers: format!("{host}:{}", kafka.get_host_port_ipv4(KAFKA_PORT).await?),
        registry_url: format!(
            "http://{}:{}/apis/ccompat/v7",
            registry.get_host().await?,
            registry.get_host_port_ipv4(8080).await?
        ),
    };
    // A second start in one binary cannot happen (the harness starts once); keep the first.
    let _ = RUNNING.set((kafka, registry));
    Ok(endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_a_daemon_the_start_fails_with_a_reason_instead_of_waiting() {
        // A socket nobody listens on: what a machine without Docker looks like to the client.
        std::env::set_var("DOCKER_HOST", "unix:///nonexistent/offport-docker.sock");
        let started = tokio::time::timeout(Duration::from_secs(60), start()).await;
        let error = match started {
            Ok(Err(error)) => error,
            Ok(Ok(endpoints)) => panic!("started containers without a daemon: {endpoints:?}"),
            Err(_) => panic!("no answer within 60 s from a daemon that is not there"),
        };
        let message = format!("{error:#}");
        assert!(
            message.contains("Kafka container") && message.contains("offport-docker.sock"),
            "the error should name what was tried: {message}"
        );
    }
}
