//! Configuration of an offport service: a YAML/TOML file plus environment overrides, through
//! the `config` crate.
//!
//! Precedence, lowest first: built-in defaults, the file named by `--config` or
//! `OFFPORT_CONFIG`, then environment variables `OFFPORT__<SECTION>__<KEY>` (double underscore
//! between levels), e.g. `OFFPORT__KAFKA__BOOTSTRAP_SERVERS=broker:9092`. This module only
//! loads and validates; it does not connect to anything.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Errors loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file or an override could not be read or does not fit the expected shape.
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// A value is present but unusable.
    #[error("configuration: {key}: {why}")]
    Invalid {
        /// Dotted key at fault.
        key: String,
        /// What is wrong with it.
        why: String,
    },
}

/// Connection to the Kafka cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// Extra librdkafka properties passed verbatim (e.g. `security.protocol`), for settings the
    /// shell has no dedicated key for.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".to_string(),
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaSettings {
    /// A librdkafka client configuration with the bootstrap servers and extra properties set.
    pub fn client_config(&self) -> rdkafka::ClientConfig {
        let mut config = rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}

/// Connection to the Confluent-compatible schema registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrySettings {
    /// Base URL of the Confluent-compatible API, e.g. `http://127.0.0.1:8081/apis/ccompat/v7`
    /// for Apicurio Registry or `http://registry:8081` for Confluent Schema Registry.
    pub url: String,
    /// Request timeout in milliseconds.
    pub timeout_ms: u64,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8081/apis/ccompat/v7".to_string(),
            timeout_ms: 10_000,
        }
    }
}

/// Topic layout shared by all stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicSettings {
    /// Prefix of every topic name, e.g. `offport.` gives `offport.normalized.sessions`.
    pub prefix: String,
    /// Partition count of the device-keyed topics. The normalized topics must all have the same
    /// count (co-partitioning); see [`crate::topics`].
    pub partitions: i32,
    /// Replication factor for created topics.
    pub replication_factor: i32,
}

impl Default for TopicSettings {
    fn default() -> Self {
        Self {
            prefix: "offport.".to_string(),
            partitions: 6,
            replication_factor: 1,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `tracing` filter directive, e.g. `info,offport=debug`; `RUST_LOG` wins when set.
    pub filter: String,
    /// Emit one JSON object per line instead of human-readable text.
    pub json: bool,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            filter: "info".to_string(),
            json: false,
        }
    }
}

/// The consume-transform-produce loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineSettings {
    /// Records per transaction at most.
    pub batch_max_records: usize,
    /// How long a batch waits to fill, in milliseconds.
    pub batch_linger_ms: u64,
    /// Longest pause between retries of a transient failure, in milliseconds.
    pub max_backoff_ms: u64,
    /// Prefix of consumer group ids and transactional ids (`offport-` gives
    /// `offport-normalize-proxy`).
    pub group_prefix: String,
    /// This instance's id in its transactional id: unique per running instance and stable across
    /// its restarts. Defaults to `$HOSTNAME` (the pod name on Kubernetes), else `local`.
    pub instance_id: Option<String>,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            batch_max_records: 2_000,
            batch_linger_ms: 50,
            max_backoff_ms: 10_000,
            group_prefix: "offport-".to_string(),
            instance_id: None,
        }
    }
}

impl PipelineSettings {
    /// The instance id in force.
    pub fn instance_id(&self) -> String {
        self.instance_id
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|id| !id.trim().is_empty())
            .unwrap_or_else(|| "local".to_string())
    }
}

/// Metrics and health endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObservabilitySettings {
    /// Address of the HTTP endpoint serving `/metrics`, `/healthz` and `/readyz`.
    pub listen: String,
}

impl Default for ObservabilitySettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9464".to_string(),
        }
    }
}

/// The stateful stages (joiner, scorer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamSettings {
    /// How late (behind the highest event time of its partition) a record may arrive and still
    /// be joined as if on time.
    pub allowed_lateness_ms: i64,
    /// Wall time without a record after which a quiet partition's watermark moves on with the
    /// clock (the idle-partition rule), so its last sessions do not wait forever.
    pub idle_timeout_ms: u64,
    /// End-of-input rule: stop once every assigned partition is read to its end, after emitting
    /// everything still pending (a bounded replay).
    pub stop_at_end: bool,
    /// Cap on the entries of any one joiner timeline (per device or app).
    pub max_timeline_entries: usize,
    /// How long restoring one partition's state from its changelog may take.
    pub restore_timeout_ms: u64,
    /// How long a finding id stays open for updates.
    pub suppression_window_ms: i64,
    /// Joiner: hard cap on the approximate heap bytes of one instance's join state, shared
    /// evenly by its tasks; least recently active devices are evicted above it (0: no cap).
    pub max_state_bytes: u64,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            allowed_lateness_ms: 30_000,
            idle_timeout_ms: 10_000,
            stop_at_end: false,
            max_timeline_entries: 256,
            restore_timeout_ms: 300_000,
            suppression_window_ms: 24 * 3_600_000,
            max_state_bytes: 1 << 30,
        }
    }
}

/// Settings every offport service shares.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Kafka connection.
    pub kafka: KafkaSettings,
    /// Schema registry connection.
    pub registry: RegistrySettings,
    /// Topic layout.
    pub topics: TopicSettings,
    /// Logging.
    pub log: LogSettings,
    /// The consume-transform-produce loop.
    pub pipeline: PipelineSettings,
    /// Metrics and health endpoints.
    pub observability: ObservabilitySettings,
    /// Input parsing of the normalizers.
    pub normalize: NormalizeSettings,
    /// The stateful stages.
    pub stream: StreamSettings,
}

/// How the normalizers read their raw topics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NormalizeSettings {
    /// Longest raw record accepted; longer ones are dead-lettered as OVERSIZE.
    pub max_record_bytes: usize,
    /// Input format of the raw proxy topic: `auto` (detected per record), `offport-json`,
    /// `pcapdroid-csv`, `zeek-json` or `suricata-eve`.
    pub proxy_format: String,
    /// Device id for proxy records that carry none and have no `offport.device_id` header, key
    /// or address mapping (one device's PCAPdroid export on its own topic).
    pub default_device_id: Option<String>,
    /// Client address blocks to device (and per-app VPN app) for Zeek and Suricata.
    pub sources: Vec<offport_core::normalize::proxy::sources::SourceMapping>,
    /// How long (event time, ms) a Zeek/Suricata application record waits for its connection
    /// record before it is emitted on its own.
    pub flow_wait_ms: i64,
    /// Most flows held by the Zeek/Suricata join at once.
    pub flow_max_held: usize,
}

impl Default for NormalizeSettings {
    fn default() -> Self {
        let flows = offport_core::normalize::proxy::flows::FlowJoinLimits::default();
        Self {
            max_record_bytes: 256 * 1024,
            proxy_format: "auto".to_string(),
            default_device_id: None,
            sources: Vec::new(),
            flow_wait_ms: flows.wait_ms,
            flow_max_held: flows.max_held,
        }
    }
}

impl NormalizeSettings {
    /// The proxy normalizer's configuration (call after [`Settings::validate`]).
    pub fn proxy_config(&self) -> Result<offport_core::normalize::proxy::ProxyConfig, String> {
        use offport_core::normalize::proxy::{flows::FlowJoinLimits, sources::SourceMap};
        Ok(offport_core::normalize::proxy::ProxyConfig {
            format: Some(self.proxy_format.parse()?),
            limits: offport_core::normalize::Limits {
                max_record_bytes: self.max_record_bytes,
            },
            default_device_id: self
                .default_device_id
                .clone()
                .filter(|d| !d.trim().is_empty()),
            sources: SourceMap::new(self.sources.clone()),
            flows: FlowJoinLimits {
                wait_ms: self.flow_wait_ms,
                max_held: self.flow_max_held,
                ..FlowJoinLimits::default()
            },
        })
    }
}

impl Settings {
    /// Loads settings from defaults, an optional file, and `OFFPORT__*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_from(file, std::env::vars())
    }

    /// Like [`Settings::load`] with an explicit environment (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        let env: std::collections::HashMap<String, String> = env.into_iter().collect();
        builder = builder.add_source(
            config::Environment::with_prefix("OFFPORT")
                .prefix_separator("__")
                .separator("__")
                .source(Some(env)),
        );
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |key: &str, why: &str| SettingsError::Invalid {
            key: key.to_string(),
            why: why.to_string(),
        };
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(invalid("kafka.bootstrap_servers", "must not be empty"));
        }
        if !(self.registry.url.starts_with("http://") || self.registry.url.starts_with("https://"))
        {
            return Err(invalid(
                "registry.url",
                "must start with http:// or https://",
            ));
        }
        if self.topics.partitions < 1 {
            return Err(invalid("topics.partitions", "must be at least 1"));
        }
        if self.topics.replication_factor < 1 {
            return Err(invalid("topics.replication_factor", "must be at least 1"));
        }
        if self.pipeline.batch_max_records == 0 {
            return Err(invalid("pipeline.batch_max_records", "must be at least 1"));
        }
        if self
            .observability
            .listen
            .parse::<std::net::SocketAddr>()
            .is_err()
        {
            return Err(invalid(
                "observability.listen",
                "must be an address such as 0.0.0.0:9464",
            ));
        }
        if let Err(why) = self
            .normalize
            .proxy_format
            .parse::<offport_core::normalize::proxy::ProxyFormat>()
        {
            return Err(invalid("normalize.proxy_format", &why));
        }
        if self.stream.allowed_lateness_ms < 0 {
            return Err(invalid(
                "stream.allowed_lateness_ms",
                "must not be negative",
            ));
        }
        if self.stream.max_timeline_entries == 0 {
            return Err(invalid("stream.max_timeline_entries", "must be at least 1"));
        }
        if self.stream.suppression_window_ms < 1 {
            return Err(invalid(
                "stream.suppression_window_ms",
                "must be at least 1",
            ));
        }
        if self.normalize.flow_wait_ms < 0 {
            return Err(invalid("normalize.flow_wait_ms", "must not be negative"));
        }
        if self.normalize.flow_max_held == 0 {
            return Err(invalid("normalize.flow_max_held", "must be at least 1"));
        }
        if let Some(empty) = self
            .normalize
            .sources
            .iter()
            .position(|s| s.device_id.trim().is_empty())
        {
            return Err(invalid(
                &format!("normalize.sources[{empty}].device_id"),
                "must not be empty",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_point_at_the_local_stack() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.kafka.bootstrap_servers, "127.0.0.1:9092");
        assert_eq!(s.registry.url, "http://127.0.0.1:8081/apis/ccompat/v7");
        assert_eq!(s.topics.prefix, "offport.");
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = std::env::temp_dir().join(format!("offport-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("offport.yaml");
        std::fs::write(
            &file,
            "kafka:\n  bootstrap_servers: file:9092\ntopics:\n  partitions: 12\n",
        )
        .unwrap();
        let s = Settings::load_from(
            Some(&file),
            env(&[("OFFPORT__KAFKA__BOOTSTRAP_SERVERS", "env:9092")]),
        )
        .unwrap();
        assert_eq!(s.kafka.bootstrap_servers, "env:9092");
        assert_eq!(s.topics.partitions, 12);
    }

    #[test]
    fn invalid_values_name_the_key() {
        let err =
            Settings::load_from(None, env(&[("OFFPORT__TOPICS__PARTITIONS", "0")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration: topics.partitions: must be at least 1"
        );
        let err = Settings::load_from(None, env(&[("OFFPORT__REGISTRY__URL", "registry:8081")]))
            .unwrap_err();
        assert!(err.to_string().contains("registry.url"), "{err}");
    }

    #[test]
    fn unknown_keys_in_a_file_are_rejected() {
        let dir = std::env::temp_dir().join(format!("offport-settings-u-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("offport.yaml");
        std::fs::write(&file, "kafka:\n  bootstrap_server: typo:9092\n").unwrap();
        let err = Settings::load_from(Some(&file), env(&[])).unwrap_err();
        assert!(err.to_string().contains("bootstrap_server"), "{err}");
    }
}
