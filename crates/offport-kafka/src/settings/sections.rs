//! The registry, topics, log, pipeline, observability, stream and normalize sections.

use super::*;

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
    /// How long an input partition's last stable offset may stand still with records behind it
    /// before the stage reports a hanging transaction (`offport_input_hanging_partitions`, one
    /// ERROR log line), in milliseconds; keep it well above every producer's transaction
    /// timeout.
    pub hanging_transaction_after_ms: u64,
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
            hanging_transaction_after_ms: 300_000,
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

/// Address mappings from CSV with a header row: columns by name (`network`, `device_id`, and
/// optionally `platform`, `app_id`, `from`, `until`; an empty cell is no value).
fn read_sources_csv(
    reader: impl std::io::Read,
) -> Result<Vec<offport_core::normalize::proxy::sources::SourceMapping>, String> {
    let mut csv = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(reader);
    let mut out = Vec::new();
    for (row, record) in csv.deserialize().enumerate() {
        // Row numbers as a spreadsheet shows them: the header is row 1.
        out.push(record.map_err(|e: csv::Error| format!("row {}: {e}", row + 2))?);
    }
    Ok(out)
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
    /// A file of more such blocks, read by the proxy normalizer alone when it starts: a list
    /// shaped as `sources` in YAML or JSON (`.json`), or CSV (`.csv`) with a header row naming
    /// the same fields. Large maps belong here, in CSV or JSON: every service reads the
    /// configuration file, and its loader holds about 3.5 KB per inline entry while it starts.
    pub sources_file: Option<std::path::PathBuf>,
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
            sources_file: None,
            flow_wait_ms: flows.wait_ms,
            flow_max_held: flows.max_held,
        }
    }
}

impl NormalizeSettings {
    /// The inline `sources` followed by those of `sources_file`.
    pub fn all_sources(
        &self,
    ) -> Result<Vec<offport_core::normalize::proxy::sources::SourceMapping>, SettingsError> {
        let mut all = self.sources.clone();
        if let Some(file) = &self.sources_file {
            let invalid = |why: String| SettingsError::Invalid {
                key: "normalize.sources_file".to_string(),
                why: format!("{}: {why}", file.display()),
            };
            let reader = std::fs::File::open(file)
                .map(std::io::BufReader::new)
                .map_err(|e| invalid(format!("cannot read: {e}")))?;
            let extension = file
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase());
            // CSV and JSON are read as they stream in; YAML's reader holds every event of the
            // document first (about 20 bytes of memory per byte of file).
            let read = match extension.as_deref() {
                Some("csv") => read_sources_csv(reader),
                Some("json") => serde_json::from_reader(reader).map_err(|e| e.to_string()),
                _ => serde_yaml_ng::from_reader(reader).map_err(|e| e.to_string()),
            };
            let read = read.map_err(invalid)?;
            if let Some(empty) = read.iter().position(|s| s.device_id.trim().is_empty()) {
                return Err(invalid(format!(
                    "entry {} (from 1): device_id must not be empty",
                    empty + 1
                )));
            }
            all.extend(read);
        }
        Ok(all)
    }

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
            sources: SourceMap::new(self.all_sources()?),
            flows: FlowJoinLimits {
                wait_ms: self.flow_wait_ms,
                max_held: self.flow_max_held,
                ..FlowJoinLimits::default()
            },
        })
    }
}
