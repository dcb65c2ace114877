//! Configuration of an offport service: a YAML/TOML file plus environment overrides, through
//! the `config` crate.
//!
//! Precedence, lowest first: built-in defaults, the file named by `--config` or
//! `OFFPORT_CONFIG`, then environment variables `OFFPORT__<SECTION>__<KEY>` (double underscore
//! between levels), e.g. `OFFPORT__KAFKA__BOOTSTRAP_SERVERS=broker:9092`. This module only
//! loads and validates; it does not connect to anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file or an override could not be read or does not fit the expected shape.
    /// (Not a `#[source]`: its text is already in the message, and a reporter that prints the
    /// chain would print it twice.)
    #[error("configuration: {0}")]
    Load(config::ConfigError),
    /// A value is present but unusable.
    #[error("configuration: {key}: {why}")]
    Invalid {
        /// Dotted key at fault.
        key: String,
        /// What is wrong with it.
        why: String,
    },
}

impl From<config::ConfigError> for SettingsError {
    fn from(error: config::ConfigError) -> Self {
        Self::Load(error)
    }
}

/// A secret value (password, key passphrase): kept in memory as given, but never shown. Its
/// `Debug` and `Serialize` print `***`, so a logged or dumped configuration carries no secret.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for handing to the client that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// What a redacted secret shows.
pub const REDACTED: &str = "***";

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({REDACTED:?})")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// How the services reach the brokers: `security.protocol` and its companions in librdkafka's
/// terms, as named keys. Passwords may come from files (Kubernetes Secrets mounted as volumes)
/// or environment variables (`OFFPORT__KAFKA__SECURITY__SASL_PASSWORD`); a `*_file` is read
/// when the configuration is loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSecurity {
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub protocol: SecurityProtocol,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (SASL protocols only).
    pub sasl_mechanism: Option<SaslMechanism>,
    /// SASL user name.
    pub sasl_username: Option<String>,
    /// SASL password.
    pub sasl_password: Option<Secret>,
    /// File whose content (trailing newline trimmed) is the SASL password.
    pub sasl_password_file: Option<PathBuf>,
    /// PEM file of the certificate authorities to trust for the brokers' certificates; the
    /// system's trust store when unset.
    pub ca_location: Option<PathBuf>,
    /// PEM file of this client's certificate (mutual TLS).
    pub certificate_location: Option<PathBuf>,
    /// PEM file of this client's private key (mutual TLS).
    pub key_location: Option<PathBuf>,
    /// Passphrase of an encrypted private key.
    pub key_password: Option<Secret>,
    /// File whose content is that passphrase.
    pub key_password_file: Option<PathBuf>,
    /// Check that a broker's certificate names the host connected to (librdkafka's
    /// `ssl.endpoint.identification.algorithm=https`). Turn off only for test brokers.
    pub endpoint_identification: bool,
}

impl Default for KafkaSecurity {
    fn default() -> Self {
        Self {
            protocol: SecurityProtocol::Plaintext,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            sasl_password_file: None,
            ca_location: None,
            certificate_location: None,
            key_location: None,
            key_password: None,
            key_password_file: None,
            endpoint_identification: true,
        }
    }
}

/// librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No encryption, no authentication.
    Plaintext,
    /// TLS (with a client certificate: mutual TLS).
    Ssl,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// The name librdkafka (and this configuration) uses.
    pub fn rdkafka(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// librdkafka's `sasl.mechanism`, of those offport supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    /// User name and password in the clear (use over TLS only).
    #[serde(rename = "PLAIN")]
    Plain,
    /// Salted challenge-response with SHA-256 (RFC 7677).
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// Salted challenge-response with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The name librdkafka (and this configuration) uses.
    pub fn rdkafka(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Connection to the Kafka cluster. `Debug` and `Serialize` redact secret properties.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// Encryption and authentication.
    pub security: KafkaSecurity,
    /// Extra librdkafka properties passed verbatim, for settings the shell has no dedicated key
    /// for. They win over the named keys.
    #[serde(serialize_with = "redacted_properties")]
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".to_string(),
            security: KafkaSecurity::default(),
            properties: BTreeMap::new(),
        }
    }
}

impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("security", &self.security)
            .field("properties", &redacted(&self.properties))
            .finish()
    }
}

/// True for a librdkafka property whose value is a secret (`sasl.password`,
/// `ssl.key.password`, `ssl.key.pem`, `sasl.oauthbearer.client.secret`, ...).
pub fn is_secret_property(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "password",
        "secret",
        "ssl.key.pem",
        "sasl.oauthbearer.config",
        "keystore",
    ]
    .iter()
    .any(|needle| name.contains(needle))
}

/// The properties with every secret value replaced by `***`.
fn redacted(properties: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    properties
        .iter()
        .map(|(name, value)| {
            let shown = if is_secret_property(name) {
                REDACTED
            } else {
                value.as_str()
            };
            (name.as_str(), shown)
        })
        .collect()
}

fn redacted_properties<S: serde::Serializer>(
    properties: &BTreeMap<String, String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    redacted(properties).serialize(serializer)
}

impl KafkaSettings {
    /// A librdkafka client configuration with the bootstrap servers, the security settings and
    /// the extra properties set.
    pub fn client_config(&self) -> rdkafka::ClientConfig {
        let mut config = rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        let security = &self.security;
        config.set("security.protocol", security.protocol.rdkafka());
        if security.protocol.sasl() {
            if let Some(mechanism) = security.sasl_mechanism {
                config.set("sasl.mechanism", mechanism.rdkafka());
            }
            if let Some(username) = &security.sasl_username {
                config.set("sasl.username", username);
            }
            if let Some(password) = &security.sasl_password {
                config.set("sasl.password", password.expose());
            }
        }
        if security.protocol.tls() {
            let path = |p: &PathBuf| p.to_string_lossy().into_owned();
            if let Some(ca) = &security.ca_location {
                config.set("ssl.ca.location", path(ca));
            }
            if let Some(certificate) = &security.certificate_location {
                config.set("ssl.certificate.location", path(certificate));
            }
            if let Some(key) = &security.key_location {
                config.set("ssl.key.location", path(key));
            }
            if let Some(password) = &security.key_password {
                config.set("ssl.key.password", password.expose());
            }
            config.set(
                "ssl.endpoint.identification.algorithm",
                if security.endpoint_identification {
                    "https"
                } else {
                    "none"
                },
            );
        }
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
    /// User name for HTTP basic authentication (Confluent Cloud: the API key).
    pub username: Option<String>,
    /// Password for basic authentication (Confluent Cloud: the API secret).
    pub password: Option<Secret>,
    /// File whose content (trailing newline trimmed) is that password.
    pub password_file: Option<PathBuf>,
    /// PEM file of extra certificate authorities to trust for an `https://` registry.
    pub ca_location: Option<PathBuf>,
    /// PEM file of this client's certificate (mutual TLS).
    pub certificate_location: Option<PathBuf>,
    /// PEM file of this client's PKCS#8 private key (mutual TLS).
    pub key_location: Option<PathBuf>,
    /// Compatibility level each stage sets on the subjects it writes (and checks its schemas
    /// against) before it writes: `FULL_TRANSITIVE` (default: replays of retained topics read
    /// old data, consumers upgraded later read new data), `BACKWARD`, `FULL`, ... or
    /// `UNMANAGED` to leave the registry's level alone (credentials that may not change
    /// subject configuration).
    pub compatibility: crate::compatibility::Compatibility,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8081/apis/ccompat/v7".to_string(),
            timeout_ms: 10_000,
            username: None,
            password: None,
            password_file: None,
            ca_location: None,
            certificate_location: None,
            key_location: None,
            compatibility: crate::compatibility::Compatibility::FullTransitive,
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
    /// Static group membership (`group.instance.id` from the instance id): a restarted instance
    /// takes its partitions back at once, but a stopped one keeps them until the session
    /// timeout. Right for stable names (StatefulSet pods), wrong for Deployment pods, whose
    /// names change on every rollout. Default: on when `instance_id` is set explicitly.
    pub static_membership: Option<bool>,
    /// How dead letters are written: `envelope` (the `DeadLetter` Avro record with the original
    /// key, value and headers inside) or `connect` (Kafka Connect's layout: the original bytes
    /// and headers as they were, with `__connect.errors.*` headers saying where they came
    /// from and why).
    pub dead_letter_format: DeadLetterFormat,
}

/// The layout of the dead-letter topic's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeadLetterFormat {
    /// The `DeadLetter` Avro envelope, through the registry.
    #[default]
    Envelope,
    /// The original record with `__connect.errors.*` headers, as Kafka Connect writes it.
    Connect,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            batch_max_records: 10_000,
            batch_linger_ms: 50,
            max_backoff_ms: 10_000,
            group_prefix: "offport-".to_string(),
            instance_id: None,
            static_membership: None,
            dead_letter_format: DeadLetterFormat::Envelope,
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
    /// clock (the idle-partition rule), so its last sessions do not wait forever; also how long
    /// the joiner waits for an input that has records left to read but brings a task nothing.
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
    /// Threads that process a batch's tasks (partitions) side by side, each task on one thread
    /// at a time; 0: one per available core (the container's CPU limit).
    pub workers: usize,
}

impl StreamSettings {
    /// The number of task threads `workers` comes to on this machine.
    pub fn worker_threads(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }
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
            workers: 0,
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
    /// How long (event time of its raw partition, ms) a Zeek/Suricata application record is
    /// held, its offset uncommitted, for its connection record; past it, it is kept in memory
    /// only.
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
    pub fn proxy_config(
        &self,
    ) -> Result<offport_core::normalize::proxy::ProxyConfig, SettingsError> {
        use offport_core::normalize::proxy::{flows::FlowJoinLimits, sources::SourceMap};
        let format = self.proxy_format.parse().map_err(
            |e: offport_core::normalize::proxy::UnknownFormat| SettingsError::Invalid {
                key: "normalize.proxy_format".to_string(),
                why: e.to_string(),
            },
        )?;
        Ok(offport_core::normalize::proxy::ProxyConfig {
            format: Some(format),
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
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        settings.resolve_secret_files()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Reads each `*_password_file` into its secret. Setting both the secret and its file is an
    /// error: which one wins would be a guess.
    fn resolve_secret_files(&mut self) -> Result<(), SettingsError> {
        let security = &mut self.kafka.security;
        resolve_secret_file(
            "kafka.security.sasl_password",
            &mut security.sasl_password,
            security.sasl_password_file.as_deref(),
        )?;
        resolve_secret_file(
            "kafka.security.key_password",
            &mut security.key_password,
            security.key_password_file.as_deref(),
        )?;
        resolve_secret_file(
            "registry.password",
            &mut self.registry.password,
            self.registry.password_file.as_deref(),
        )
    }

    /// The configuration as YAML with every secret shown as `***` (`offportctl config show`).
    pub fn redacted_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).unwrap_or_else(|error| format!("# cannot show: {error}\n"))
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |key: &str, why: &str| SettingsError::Invalid {
            key: key.to_string(),
            why: why.to_string(),
        };
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(invalid("kafka.bootstrap_servers", "must not be empty"));
        }
        validate_kafka_security(&self.kafka.security)?;
        validate_registry_security(&self.registry)?;
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
            return Err(invalid("normalize.proxy_format", &why.to_string()));
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

fn resolve_secret_file(
    key: &str,
    secret: &mut Option<Secret>,
    file: Option<&Path>,
) -> Result<(), SettingsError> {
    let Some(file) = file else {
        return Ok(());
    };
    if secret.is_some() {
        return Err(SettingsError::Invalid {
            key: format!("{key}_file"),
            why: format!("set together with {key}; set one of them"),
        });
    }
    let text = std::fs::read_to_string(file).map_err(|error| SettingsError::Invalid {
        key: format!("{key}_file"),
        why: format!("cannot read {}: {error}", file.display()),
    })?;
    *secret = Some(Secret::new(text.trim_end_matches(['\r', '\n'])));
    Ok(())
}

/// A PEM file named by a setting must be readable now, not at the first TLS handshake.
fn check_readable(key: &str, file: Option<&Path>) -> Result<(), SettingsError> {
    match file {
        Some(file) => std::fs::File::open(file)
            .map(drop)
            .map_err(|error| SettingsError::Invalid {
                key: key.to_string(),
                why: format!("cannot read {}: {error}", file.display()),
            }),
        None => Ok(()),
    }
}

fn validate_kafka_security(security: &KafkaSecurity) -> Result<(), SettingsError> {
    let invalid = |key: &str, why: String| SettingsError::Invalid {
        key: format!("kafka.security.{key}"),
        why,
    };
    let protocol = security.protocol;
    if protocol.sasl() {
        if security.sasl_mechanism.is_none() {
            return Err(invalid(
                "sasl_mechanism",
                format!(
                    "required with protocol {}: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                    protocol.rdkafka()
                ),
            ));
        }
        if security
            .sasl_username
            .as_deref()
            .is_none_or(|u| u.trim().is_empty())
        {
            return Err(invalid(
                "sasl_username",
                format!("required with protocol {}", protocol.rdkafka()),
            ));
        }
        if security.sasl_password.is_none() {
            return Err(invalid(
                "sasl_password",
                format!(
                    "required with protocol {} (or sasl_password_file, or the environment variable OFFPORT__KAFKA__SECURITY__SASL_PASSWORD)",
                    protocol.rdkafka()
                ),
            ));
        }
    } else if security.sasl_mechanism.is_some()
        || security.sasl_username.is_some()
        || security.sasl_password.is_some()
    {
        return Err(invalid(
            "protocol",
            format!(
                "is {} but SASL credentials are set; use sasl_ssl (or sasl_plaintext)",
                protocol.rdkafka()
            ),
        ));
    }
    validate_tls_files(
        "kafka.security",
        [
            security.ca_location.as_deref(),
            security.certificate_location.as_deref(),
            security.key_location.as_deref(),
        ],
        (!protocol.tls()).then(|| {
            format!(
                "is set but protocol is {}; TLS files need ssl or sasl_ssl",
                protocol.rdkafka()
            )
        }),
    )
}

/// The PEM files of one connection (`<section>.ca_location`, `.certificate_location`,
/// `.key_location`): none while TLS is not in use (`not_tls` says why), a certificate only with
/// its key, and each readable now rather than at the first handshake.
fn validate_tls_files(
    section: &str,
    [ca, certificate, key]: [Option<&Path>; 3],
    not_tls: Option<String>,
) -> Result<(), SettingsError> {
    let files = [
        ("ca_location", ca),
        ("certificate_location", certificate),
        ("key_location", key),
    ];
    if let Some(why) = not_tls {
        if let Some((name, _)) = files.iter().find(|(_, file)| file.is_some()) {
            return Err(SettingsError::Invalid {
                key: format!("{section}.{name}"),
                why,
            });
        }
    }
    if certificate.is_some() != key.is_some() {
        return Err(SettingsError::Invalid {
            key: format!("{section}.key_location"),
            why: "a client certificate needs its key and a key its certificate (set both for mutual TLS)".to_string(),
        });
    }
    for (name, file) in files {
        check_readable(&format!("{section}.{name}"), file)?;
    }
    Ok(())
}

fn validate_registry_security(registry: &RegistrySettings) -> Result<(), SettingsError> {
    let invalid = |key: &str, why: &str| SettingsError::Invalid {
        key: format!("registry.{key}"),
        why: why.to_string(),
    };
    if registry.password.is_some() && registry.username.is_none() {
        return Err(invalid("username", "required when a password is set"));
    }
    validate_tls_files(
        "registry",
        [
            registry.ca_location.as_deref(),
            registry.certificate_location.as_deref(),
            registry.key_location.as_deref(),
        ],
        (!registry.url.starts_with("https://"))
            .then(|| "is set but registry.url is not https://".to_string()),
    )
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
    fn stream_workers_come_from_the_environment_and_zero_means_one_per_core() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.stream.workers, 0);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(s.stream.worker_threads(), cores);
        let s = Settings::load_from(None, env(&[("OFFPORT__STREAM__WORKERS", "3")])).unwrap();
        assert_eq!(s.stream.worker_threads(), 3);
    }

    /// Every leaf key of a YAML value, dotted (maps and lists whose keys are free are leaves).
    fn leaves(prefix: &str, value: &serde_yaml_ng::Value, out: &mut Vec<String>) {
        match value {
            serde_yaml_ng::Value::Mapping(map)
                if !matches!(prefix, "kafka.properties") && !map.is_empty() =>
            {
                for (key, value) in map {
                    let key = key.as_str().unwrap_or_default();
                    let path = if prefix.is_empty() {
                        key.to_string()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    leaves(&path, value, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }

    #[test]
    fn the_configuration_reference_lists_every_setting_and_the_example_loads() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        let mut settings = Vec::new();
        let yaml: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&Settings::default().redacted_yaml()).unwrap();
        leaves("", &yaml, &mut settings);
        settings.sort();
        // The first column of the reference: `a.b.c` or `a.b.c` / `d` (a sibling of c).
        let reference = std::fs::read_to_string(format!("{root}/docs/configuration.md")).unwrap();
        let mut documented: Vec<String> = Vec::new();
        for line in reference.lines().filter(|l| l.starts_with("| `")) {
            let cell = line.split('|').nth(1).unwrap_or_default();
            let names: Vec<&str> = cell
                .split('/')
                .map(|n| n.trim().trim_matches('`'))
                .collect();
            let first = names[0].split(".<").next().unwrap_or_default().to_string();
            let parent = first.rsplit_once('.').map(|(p, _)| p.to_string());
            documented.push(first);
            for sibling in &names[1..] {
                documented.push(match &parent {
                    Some(parent) => format!("{parent}.{sibling}"),
                    None => sibling.to_string(),
                });
            }
        }
        documented.sort();
        documented.dedup();
        assert!(settings.len() > 40, "{settings:?}");
        let missing: Vec<&String> = settings
            .iter()
            .filter(|k| !documented.contains(k))
            .collect();
        let unknown: Vec<&String> = documented
            .iter()
            .filter(|k| !settings.contains(k))
            .collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "docs/configuration.md: settings not documented {missing:?}; documented but not settings {unknown:?}"
        );
        // The example file loads and sets every section.
        let example = format!("{root}/docs/offport.example.yaml");
        // Its secret and CA files, as a deployment mounts them (read at load).
        let secret = std::env::temp_dir().join(format!("offport-example-{}", std::process::id()));
        std::fs::write(&secret, "s3cret\n").unwrap();
        let secret = secret.to_str().unwrap();
        let loaded = Settings::load_from(
            Some(std::path::Path::new(&example)),
            env(&[
                ("OFFPORT__KAFKA__SECURITY__SASL_PASSWORD_FILE", secret),
                ("OFFPORT__REGISTRY__PASSWORD_FILE", secret),
                ("OFFPORT__KAFKA__SECURITY__CA_LOCATION", secret),
            ]),
        );
        let _ = std::fs::remove_file(secret);
        assert!(loaded.is_ok(), "{example}: {loaded:?}");
        let text = std::fs::read_to_string(&example).unwrap();
        for section in [
            "kafka:",
            "registry:",
            "topics:",
            "log:",
            "pipeline:",
            "observability:",
            "normalize:",
            "stream:",
        ] {
            assert!(text.contains(section), "{example} has no {section}");
        }
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

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("offport-settings-s-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        file
    }

    fn sasl_env(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut pairs = vec![
            ("OFFPORT__KAFKA__SECURITY__PROTOCOL", "sasl_ssl"),
            ("OFFPORT__KAFKA__SECURITY__SASL_MECHANISM", "SCRAM-SHA-512"),
            ("OFFPORT__KAFKA__SECURITY__SASL_USERNAME", "svc-offport"),
        ];
        pairs.extend_from_slice(extra);
        env(&pairs)
    }

    fn property(config: &rdkafka::ClientConfig, name: &str) -> Option<String> {
        config.get(name).map(str::to_string)
    }

    #[test]
    fn sasl_ssl_from_the_environment_reaches_librdkafka() {
        let ca = temp_file("ca.pem", "-----BEGIN CERTIFICATE-----\n");
        let s = Settings::load_from(
            None,
            sasl_env(&[
                ("OFFPORT__KAFKA__SECURITY__SASL_PASSWORD", "s3cr3t-from-env"),
                (
                    "OFFPORT__KAFKA__SECURITY__CA_LOCATION",
                    ca.to_str().unwrap(),
                ),
            ]),
        )
        .unwrap();
        let config = s.kafka.client_config();
        assert_eq!(
            property(&config, "security.protocol").as_deref(),
            Some("sasl_ssl")
        );
        assert_eq!(
            property(&config, "sasl.mechanism").as_deref(),
            Some("SCRAM-SHA-512")
        );
        assert_eq!(
            property(&config, "sasl.username").as_deref(),
            Some("svc-offport")
        );
        assert_eq!(
            property(&config, "sasl.password").as_deref(),
            Some("s3cr3t-from-env")
        );
        assert_eq!(
            property(&config, "ssl.ca.location"),
            Some(ca.display().to_string())
        );
        assert_eq!(
            property(&config, "ssl.endpoint.identification.algorithm").as_deref(),
            Some("https")
        );
    }

    #[test]
    fn a_password_file_is_read_and_trimmed() {
        let file = temp_file("sasl-password", "from-a-mounted-secret\n");
        let s = Settings::load_from(
            None,
            sasl_env(&[(
                "OFFPORT__KAFKA__SECURITY__SASL_PASSWORD_FILE",
                file.to_str().unwrap(),
            )]),
        )
        .unwrap();
        assert_eq!(
            s.kafka.security.sasl_password.as_ref().map(Secret::expose),
            Some("from-a-mounted-secret")
        );
        let missing = Settings::load_from(
            None,
            sasl_env(&[(
                "OFFPORT__KAFKA__SECURITY__SASL_PASSWORD_FILE",
                "/nonexistent/pw",
            )]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            missing.starts_with(
                "configuration: kafka.security.sasl_password_file: cannot read /nonexistent/pw"
            ),
            "{missing}"
        );
        let both = Settings::load_from(
            None,
            sasl_env(&[
                ("OFFPORT__KAFKA__SECURITY__SASL_PASSWORD", "x"),
                (
                    "OFFPORT__KAFKA__SECURITY__SASL_PASSWORD_FILE",
                    file.to_str().unwrap(),
                ),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            both.contains("set together with kafka.security.sasl_password"),
            "{both}"
        );
    }

    #[test]
    fn inconsistent_security_settings_name_the_key() {
        let cases: [(Vec<(String, String)>, &str); 6] = [
            (
                sasl_env(&[]),
                "configuration: kafka.security.sasl_password: required with protocol sasl_ssl",
            ),
            (
                env(&[
                    ("OFFPORT__KAFKA__SECURITY__PROTOCOL", "sasl_ssl"),
                    ("OFFPORT__KAFKA__SECURITY__SASL_USERNAME", "u"),
                ]),
                "configuration: kafka.security.sasl_mechanism: required with protocol sasl_ssl",
            ),
            (
                env(&[("OFFPORT__KAFKA__SECURITY__SASL_USERNAME", "u")]),
                "configuration: kafka.security.protocol: is plaintext but SASL credentials are set",
            ),
            (
                env(&[("OFFPORT__KAFKA__SECURITY__CA_LOCATION", "/etc/ca.pem")]),
                "configuration: kafka.security.ca_location: is set but protocol is plaintext",
            ),
            (
                env(&[
                    ("OFFPORT__KAFKA__SECURITY__PROTOCOL", "ssl"),
                    (
                        "OFFPORT__KAFKA__SECURITY__CERTIFICATE_LOCATION",
                        "/etc/client.pem",
                    ),
                ]),
                "configuration: kafka.security.key_location: a client certificate needs its key",
            ),
            (
                env(&[("OFFPORT__REGISTRY__PASSWORD", "p")]),
                "configuration: registry.username: required when a password is set",
            ),
        ];
        for (pairs, expected) in cases {
            let error = Settings::load_from(None, pairs).unwrap_err().to_string();
            assert!(
                error.starts_with(expected),
                "{error}\n  expected: {expected}"
            );
        }
        let error = Settings::load_from(
            None,
            env(&[("OFFPORT__KAFKA__SECURITY__PROTOCOL", "sasl_tls")]),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("sasl_tls"), "{error}");
        let error = Settings::load_from(
            None,
            env(&[
                ("OFFPORT__KAFKA__SECURITY__PROTOCOL", "ssl"),
                (
                    "OFFPORT__KAFKA__SECURITY__CA_LOCATION",
                    "/nonexistent/ca.pem",
                ),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with(
                "configuration: kafka.security.ca_location: cannot read /nonexistent/ca.pem"
            ),
            "{error}"
        );
    }

    #[test]
    fn secrets_never_show_in_debug_or_the_dump() {
        let key_password = temp_file("key-password", "key-pass-value");
        let mut s = Settings::load_from(
            None,
            sasl_env(&[
                ("OFFPORT__KAFKA__SECURITY__SASL_PASSWORD", "sasl-pass-value"),
                ("OFFPORT__REGISTRY__URL", "https://registry.example.com"),
                ("OFFPORT__REGISTRY__USERNAME", "api-key"),
                ("OFFPORT__REGISTRY__PASSWORD", "registry-pass-value"),
            ]),
        )
        .unwrap();
        s.kafka.security.key_password_file = Some(key_password);
        s.resolve_secret_files().unwrap();
        s.kafka.properties.insert(
            "sasl.oauthbearer.client.secret".into(),
            "oauth-secret-value".into(),
        );
        s.kafka
            .properties
            .insert("socket.keepalive.enable".into(), "true".into());
        let debug = format!("{s:?}");
        let dump = s.redacted_yaml();
        for shown in [&debug, &dump] {
            for secret in [
                "sasl-pass-value",
                "registry-pass-value",
                "key-pass-value",
                "oauth-secret-value",
            ] {
                assert!(!shown.contains(secret), "{secret} shown in:\n{shown}");
            }
        }
        assert!(dump.contains("sasl_username: svc-offport"), "{dump}");
        assert!(dump.contains("sasl_password: '***'"), "{dump}");
        assert!(dump.contains("socket.keepalive.enable: 'true'"), "{dump}");
        assert!(
            dump.contains("sasl.oauthbearer.client.secret: '***'"),
            "{dump}"
        );
        // The secrets themselves are still there for the clients.
        assert_eq!(
            property(&s.kafka.client_config(), "ssl.key.password").as_deref(),
            Some("key-pass-value")
        );
    }
}
