//! The harness of offport's end-to-end tests: where is the broker, where is the registry.
//!
//! In order: `OFFPORT_BOOTSTRAP_SERVERS` and `OFFPORT_REGISTRY_URL` when both are set (CI, a
//! shared cluster, `cargo xtask test`); else the local stack recorded by `cargo xtask stack up`
//! when it is healthy; else the local stack is started here (Kafka and Apicurio Registry from
//! Maven Central, see `offport-devstack`) and left running for the next test binary.
//!
//! Every test gets its own topic and consumer-group names from [`unique`], so tests run in
//! parallel and repeatedly against one broker without seeing each other's records.

use anyhow::{Context, Result};
use offport_devstack::stack::{self, StackOptions};
use offport_kafka::settings::{KafkaSettings, RegistrySettings};
use tokio::sync::OnceCell;

/// A broker and registry to test against.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Kafka bootstrap servers.
    pub bootstrap_servers: String,
    /// Confluent-compatible registry API base URL.
    pub registry_url: String,
}

impl Endpoints {
    /// Kafka settings for these endpoints.
    pub fn kafka(&self) -> KafkaSettings {
        KafkaSettings {
            bootstrap_servers: self.bootstrap_servers.clone(),
            ..KafkaSettings::default()
        }
    }

    /// Registry settings for these endpoints.
    pub fn registry(&self) -> RegistrySettings {
        RegistrySettings {
            url: self.registry_url.clone(),
            ..RegistrySettings::default()
        }
    }
}

static ENDPOINTS: OnceCell<Endpoints> = OnceCell::const_new();

/// The endpoints for this test process, found (or started) once.
pub async fn endpoints() -> Result<Endpoints> {
    ENDPOINTS.get_or_try_init(find_or_start).await.cloned()
}

async fn find_or_start() -> Result<Endpoints> {
    let options = StackOptions::from_env()?;
    let found = stack::ensure(&options)
        .await
        .context("finding or starting a broker and registry for the integration tests")?;
    if found.started.is_some() {
        eprintln!("offport-tests: no broker configured; started the local stack");
    }
    Ok(Endpoints {
        bootstrap_servers: found.bootstrap_servers,
        registry_url: found.registry_url,
    })
}

/// A name no other test run uses: `<prefix>-<uuid>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}
