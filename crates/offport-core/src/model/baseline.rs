//! Baseline documents: scopes, approved ports, exceptions, behaviours, thresholds.

use super::*;

/// Scope a baseline document applies to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, AvroSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "dev.offport.v1")]
#[allow(missing_docs)] // apache-avro-derive 0.22 rejects doc attributes on unit variants
pub enum ScopeKind {
    // Everything.
    Global,
    // One platform.
    Platform,
    // One device group or role.
    DeviceGroup,
    // One app category or service class.
    AppCategory,
    // One app.
    App,
}

/// Scope of a baseline document; the key of the baselines topic.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, AvroSchema,
)]
#[avro(namespace = "dev.offport.v1")]
pub struct BaselineScope {
    /// Scope kind.
    pub kind: ScopeKind,
    /// Scope value; `None` for global.
    #[serde(default)]
    pub value: Option<String>,
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct PortRange {
    /// First port.
    pub first: i32,
    /// Last port.
    pub last: i32,
}

/// AllowedProtocolPortMappings entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct ProtocolPortRule {
    /// Protocol.
    pub protocol: AppProtocol,
    /// Transport limit; `None` for any.
    #[serde(default)]
    pub transport: Option<Transport>,
    /// Approved ports.
    pub ports: Vec<PortRange>,
}

/// EnterpriseExceptionList entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct EnterpriseException {
    /// Short name.
    pub name: String,
    /// Why it exists, with its source.
    pub reason: String,
    /// App ids; empty for any.
    #[serde(default)]
    pub apps: Vec<String>,
    /// Destination CIDRs; empty for any.
    #[serde(default)]
    pub cidrs: Vec<String>,
    /// Destination domain suffixes; empty for any.
    #[serde(default)]
    pub domain_suffixes: Vec<String>,
    /// Exact SNIs; empty for any.
    #[serde(default)]
    pub snis: Vec<String>,
    /// Destination ports; empty for any.
    #[serde(default)]
    pub ports: Vec<PortRange>,
    /// Transport limit; `None` for any.
    #[serde(default)]
    pub transport: Option<Transport>,
}

/// AppNetworkBehaviorBaseline entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct AppCategoryBehavior {
    /// App category or service class.
    pub category: String,
    /// Expected protocols.
    pub expected_protocols: Vec<AppProtocol>,
    /// Expected destination ports.
    #[serde(default)]
    pub expected_ports: Vec<PortRange>,
    /// Expected destination domain suffixes.
    #[serde(default)]
    pub expected_domain_suffixes: Vec<String>,
}

/// Tunable thresholds of the analytics; `None` inherits.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
#[serde(default)]
pub struct BaselineThresholds {
    /// TimeWindow, milliseconds.
    pub time_window_ms: Option<i64>,
    /// RecentUserInteractionWindow, milliseconds.
    pub recent_user_interaction_window_ms: Option<i64>,
    /// BeaconIntervalTolerance, fraction.
    pub beacon_interval_tolerance: Option<f64>,
    /// ForegroundStateRequired.
    pub foreground_state_required: Option<bool>,
    /// SupervisedRequired.
    pub supervised_required: Option<bool>,
    /// BeaconIntervalVarianceThreshold.
    pub beacon_interval_variance_threshold: Option<f64>,
    /// ConnectionFrequencyThreshold, sessions per hour.
    pub connection_frequency_threshold: Option<f64>,
    /// PayloadEntropyThreshold, bits per byte.
    pub payload_entropy_threshold: Option<f64>,
    /// CadenceAnomalyThreshold, 0-1.
    pub cadence_anomaly_threshold: Option<f64>,
    /// SessionPersistenceThreshold, milliseconds.
    pub session_persistence_threshold_ms: Option<i64>,
}

/// An approved-behaviour baseline document for one scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct Baseline {
    /// Scope.
    pub scope: BaselineScope,
    /// Version label.
    pub version: String,
    /// When it takes effect. In YAML/JSON documents also an RFC 3339 string.
    #[avro(with = timestamp_millis)]
    #[serde(deserialize_with = "epoch_millis_or_rfc3339")]
    pub effective_time: EpochMillis,
    /// What changed and why.
    #[serde(default)]
    pub description: Option<String>,
    /// AllowedProtocolPortMappings.
    #[serde(default)]
    pub allowed_protocol_ports: Vec<ProtocolPortRule>,
    /// AllowedAppList; `None` inherits.
    #[serde(default)]
    pub allowed_apps: Option<Vec<String>>,
    /// AllowedManagedApps; `None` inherits.
    #[serde(default)]
    pub allowed_managed_apps: Option<Vec<String>>,
    /// AllowedServiceClasses; `None` inherits.
    #[serde(default)]
    pub allowed_service_classes: Option<Vec<String>>,
    /// EnterpriseExceptionList.
    #[serde(default)]
    pub enterprise_exceptions: Vec<EnterpriseException>,
    /// AppNetworkBehaviorBaseline.
    #[serde(default)]
    pub app_network_behavior: Vec<AppCategoryBehavior>,
    /// Thresholds.
    #[serde(default)]
    pub thresholds: BaselineThresholds,
}
