//! Findings, their evidence and severity.

use super::*;

/// Detection analytic that raised a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "dev.offport.v1")]
#[allow(missing_docs)] // apache-avro-derive 0.22 rejects doc attributes on unit variants
pub enum Analytic {
    // AN1827: non-standard port, Android.
    NonStandardPortAndroid,
    // AN1828: non-standard port, iOS.
    NonStandardPortIos,
    // Application-layer command and control (seed 004).
    AppLayerC2,
}

/// Severity of a finding, derived from its score.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, AvroSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "dev.offport.v1")]
#[allow(missing_docs)] // apache-avro-derive 0.22 rejects doc attributes on unit variants
pub enum Severity {
    // Informational.
    Info,
    // Low.
    Low,
    // Medium.
    Medium,
    // High.
    High,
    // Critical.
    Critical,
}

/// One evidence item an analytic can fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "dev.offport.v1")]
#[allow(missing_docs)] // apache-avro-derive 0.22 rejects doc attributes on unit variants
pub enum EvidenceKind {
    // Recognised protocol on a port outside its approved set.
    ProtocolPortMismatch,
    // Repeated sessions to the same destination or service class.
    RepeatedSessions,
    // Stable recurrence interval within BeaconIntervalTolerance.
    StableInterval,
    // One persistent long-lived connection.
    PersistentConnection,
    // App in background, no foreground transition.
    BackgroundNoForeground,
    // Device locked during the session.
    DeviceLocked,
    // Last user interaction older than RecentUserInteractionWindow.
    NoRecentUserInteraction,
    // Background execution immediately before the session.
    PrecedingBackgroundExecution,
    // App not managed.
    AppUnmanaged,
    // App outside AllowedAppList / AllowedManagedApps.
    AppNotAllowed,
    // App not permitted this protocol on this port.
    ProtocolNotPermittedForApp,
    // Device not supervised where SupervisedRequired.
    DeviceUnsupervised,
    // Beacon-like periodicity.
    BeaconPeriodicity,
    // Connection rate over ConnectionFrequencyThreshold.
    ConnectionFrequency,
    // SNI and Host disagree.
    SniHostMismatch,
    // Host or SNI is an IP literal.
    IpLiteralHost,
    // Algorithmically generated-looking name.
    AlgorithmicHostname,
    // Destination never seen for the app category.
    UnseenDestinationForCategory,
    // Protocol not expected for the app category.
    UnexpectedProtocolForCategory,
    // Uniform request/response sizes.
    UniformSizes,
    // Payload entropy over PayloadEntropyThreshold.
    HighPayloadEntropy,
    // Background session past SessionPersistenceThreshold.
    BackgroundSessionPersistence,
    // Networking-API burst without foreground or user interaction.
    NetworkApiBurstWithoutUser,
    // Anything else.
    Other,
}

/// One evidence item that fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct Evidence {
    /// Which item fired.
    pub kind: EvidenceKind,
    /// One sentence for an analyst.
    pub description: String,
    /// Observed value, formatted.
    pub observed: String,
    /// Observed value as a number.
    pub observed_number: Option<f64>,
    /// Baseline element and value it was held against.
    pub baseline: Option<String>,
    /// Points it added to the score.
    pub weight: f64,
}

/// Lifecycle of a finding id within its suppression window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "dev.offport.v1")]
#[allow(missing_docs)] // apache-avro-derive 0.22 rejects doc attributes on unit variants
pub enum FindingStatus {
    // First emission.
    New,
    // An update of an earlier emission.
    Updated,
}

/// An explainable, scored detection. Keyed by `device_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct Finding {
    /// Deterministic id.
    pub finding_id: String,
    /// 0 for the first emission, incremented by each update.
    pub revision: i32,
    /// NEW or UPDATED.
    pub status: FindingStatus,
    /// Analytic.
    pub analytic: Analytic,
    /// MITRE analytic id.
    pub analytic_id: String,
    /// MITRE detection strategy id.
    pub detection_strategy: String,
    /// MITRE technique id.
    pub technique_id: String,
    /// MITRE technique name.
    pub technique_name: String,
    /// Platform.
    pub platform: Platform,
    /// Device.
    pub device_id: String,
    /// App, when attributed.
    pub app_id: Option<String>,
    /// App display name.
    pub app_name: Option<String>,
    /// Destination IP.
    pub dst_ip: String,
    /// Destination port.
    pub dst_port: i32,
    /// Destination host name.
    pub dst_host: Option<String>,
    /// Transport.
    pub transport: Transport,
    /// Protocol.
    pub protocol: AppProtocol,
    /// First contributing session start.
    #[avro(with = timestamp_millis)]
    pub first_seen: EpochMillis,
    /// Latest contributing session start.
    #[avro(with = timestamp_millis)]
    pub last_seen: EpochMillis,
    /// Contributing sessions so far.
    pub session_count: i64,
    /// Score, 0-100.
    pub score: i32,
    /// Severity.
    pub severity: Severity,
    /// Confidence, 0.0-1.0.
    pub confidence: f64,
    /// Evidence items that fired.
    pub evidence: Vec<Evidence>,
    /// Merged baseline version.
    pub baseline_version: String,
    /// Event time of the latest contributing session.
    #[avro(with = timestamp_millis)]
    pub event_time: EpochMillis,
}
