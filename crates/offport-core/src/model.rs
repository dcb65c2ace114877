//! The records that flow between offport's stages: the Rust side of the Avro contracts in
//! `schemas/`.
//!
//! Every type here derives [`AvroSchema`], and `schema::tests` holds each derived schema against
//! its `.avsc` file (Parsing Canonical Form) and round-trips a fully populated value through the
//! file's schema, so the two cannot drift apart silently. This module holds data only; the logic
//! that produces and consumes it lives in the other modules of this crate.
//!
//! Times are UTC milliseconds since the Unix epoch ([`EpochMillis`]), carried in Avro as
//! `timestamp-millis`.

use std::collections::HashSet;

use apache_avro::schema::{Name, NamespaceRef, UnionSchema};
use apache_avro::{AvroSchema, Schema};
use serde::{Deserialize, Serialize};

/// UTC milliseconds since the Unix epoch; Avro `timestamp-millis`.
pub type EpochMillis = i64;

/// Accepts epoch milliseconds or an RFC 3339 time (`2026-11-01T00:00:00Z`), for documents that
/// people write by hand.
fn epoch_millis_or_rfc3339<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<EpochMillis, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Time {
        Millis(i64),
        Text(String),
    }
    match Time::deserialize(deserializer)? {
        Time::Millis(millis) => Ok(millis),
        Time::Text(text) => parse_rfc3339_millis(&text).map_err(serde::de::Error::custom),
    }
}

/// Parses an RFC 3339 time into epoch milliseconds, honouring its offset. A space may stand for
/// the `T`, and a time without an offset is taken as UTC.
pub fn parse_rfc3339_millis(text: &str) -> Result<EpochMillis, TimeError> {
    use time::format_description::well_known::Rfc3339;
    let trimmed = text.trim();
    let mut normalized = trimmed.to_string();
    if normalized.as_bytes().get(10) == Some(&b' ') {
        normalized.replace_range(10..11, "T");
    }
    let parsed = time::OffsetDateTime::parse(&normalized, &Rfc3339)
        .or_else(|first| {
            time::OffsetDateTime::parse(&format!("{normalized}Z"), &Rfc3339).map_err(|_| first)
        })
        .map_err(|e| TimeError::NotRfc3339 {
            text: text.to_string(),
            source: e,
        })?;
    i64::try_from(parsed.unix_timestamp_nanos().div_euclid(1_000_000))
        .map_err(|_| TimeError::OutOfRange(text.to_string()))
}

/// Why a time was refused.
#[derive(Debug, thiserror::Error)]
pub enum TimeError {
    /// Not RFC 3339 (with or without an offset).
    #[error("{text:?} is not an RFC 3339 time: {source}")]
    NotRfc3339 {
        /// The text given.
        text: String,
        /// The parser's reason.
        source: time::error::Parse,
    },
    /// Outside what epoch milliseconds hold.
    #[error("{0:?} is out of range")]
    OutOfRange(String),
}

/// Avro schema of an [`EpochMillis`] field (`long` with logical type `timestamp-millis`).
fn timestamp_millis(_: &mut HashSet<Name>, _: NamespaceRef) -> Schema {
    Schema::TimestampMillis
}

/// Avro schema of an optional [`EpochMillis`] field (`["null", timestamp-millis]`).
fn optional_timestamp_millis(_: &mut HashSet<Name>, _: NamespaceRef) -> Schema {
    match UnionSchema::new(vec![Schema::Null, Schema::TimestampMillis]) {
        Ok(union) => Schema::Union(union),
        // A null/timestamp union is always valid; this arm exists only because the
        // constructor is fallible in general.
        Err(_) => Schema::Null,
    }
}

/// Mobile operating system family of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, AvroSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "dev.offport.v1")]
#[allow(missing_docs)] // apache-avro-derive 0.22 rejects doc attributes on unit variants
pub enum Platform {
    // Android.
    Android,
    // iOS / iPadOS.
    Ios,
    // The source did not say.
    #[default]
    Unknown,
}

/// Transport-layer protocol of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, AvroSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "dev.offport.v1")]
#[allow(missing_docs)] // apache-avro-derive 0.22 rejects doc attributes on unit variants
pub enum Transport {
    // TCP, the default of offport's JSON formats.
    #[default]
    Tcp,
    // UDP.
    Udp,
    // Anything else (ICMP, SCTP, ...).
    Other,
}

/// Application-layer protocol recognised in a session, independent of the port it used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "dev.offport.v1")]
#[allow(missing_docs)] // apache-avro-derive 0.22 rejects doc attributes on unit variants
pub enum AppProtocol {
    // TLS over TCP.
    Tls,
    // DTLS over UDP.
    Dtls,
    // QUIC.
    Quic,
    // HTTP/1.x.
    Http,
    // HTTP/2 (cleartext preface or negotiated).
    Http2,
    // HTTP/1.1 upgraded to WebSocket.
    Websocket,
    // DNS.
    Dns,
    // SSH.
    Ssh,
    // SMTP.
    Smtp,
    // IMAP.
    Imap,
    // POP3.
    Pop3,
    // MQTT.
    Mqtt,
    // XMPP.
    Xmpp,
    // STUN / TURN.
    Stun,
    // Not recognised.
    Unknown,
}

impl AppProtocol {
    /// The Avro symbol, e.g. `TLS`.
    pub fn name(self) -> &'static str {
        match self {
            AppProtocol::Tls => "TLS",
            AppProtocol::Dtls => "DTLS",
            AppProtocol::Quic => "QUIC",
            AppProtocol::Http => "HTTP",
            AppProtocol::Http2 => "HTTP2",
            AppProtocol::Websocket => "WEBSOCKET",
            AppProtocol::Dns => "DNS",
            AppProtocol::Ssh => "SSH",
            AppProtocol::Smtp => "SMTP",
            AppProtocol::Imap => "IMAP",
            AppProtocol::Pop3 => "POP3",
            AppProtocol::Mqtt => "MQTT",
            AppProtocol::Xmpp => "XMPP",
            AppProtocol::Stun => "STUN",
            AppProtocol::Unknown => "UNKNOWN",
        }
    }
}

impl Transport {
    /// The Avro symbol, e.g. `TCP`.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
            Transport::Udp => "UDP",
            Transport::Other => "OTHER",
        }
    }
}

/// Input format a normalized record was produced from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "dev.offport.v1")]
#[allow(missing_docs)] // apache-avro-derive 0.22 rejects doc attributes on unit variants
pub enum SourceFormat {
    // offport's documented JSON records.
    OffportJson,
    // PCAPdroid CSV export.
    PcapdroidCsv,
    // Zeek JSON logs.
    ZeekJson,
    // Suricata EVE JSON.
    SuricataEve,
    // Android UsageStats event rows.
    AndroidUsageStats,
    // MicroMDM / NanoMDM webhook JSON.
    MicromdmWebhook,
    // Android Management API reports.
    AndroidManagementApi,
    // Not known.
    Unknown,
    // offport device inventory entries (device to group, role, owner), published by users.
    OffportInventory,
}

/// How a session was tied to the app that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "dev.offport.v1")]
#[allow(missing_docs)] // apache-avro-derive 0.22 rejects doc attributes on unit variants
pub enum AttributionSource {
    // A per-app VPN tunnel named the app.
    PerAppVpn,
    // A device VPN (Android VpnService) resolved the socket's Linux UID.
    VpnUid,
    // A mobile proxy attributed the request.
    Proxy,
    // A configured source-address mapping (network sensors such as Zeek or Suricata).
    SourceAddressMap,
    // The EDR agent attributed the socket.
    Edr,
    // Only the device is known.
    DeviceOnly,
    // Not known.
    Unknown,
}

/// What the protocol verdict of a session rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "dev.offport.v1")]
#[allow(missing_docs)] // apache-avro-derive 0.22 rejects doc attributes on unit variants
pub enum ProtocolEvidence {
    // The sensor's own verdict (Zeek service, Suricata app_proto, nDPI).
    Sensor,
    // offport recognised the first client bytes.
    ClientBytes,
    // Both agree.
    SensorAndClientBytes,
    // No protocol was recognised.
    None,
}

/// Indicators from a TLS (or DTLS/QUIC) ClientHello.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct TlsInfo {
    /// Highest TLS version the client offered, e.g. `TLSv1.3`.
    pub version: Option<String>,
    /// Server Name Indication, lower-cased.
    pub sni: Option<String>,
    /// ALPN protocol identifiers offered, in order.
    pub alpn: Vec<String>,
    /// JA3 fingerprint (MD5 hex).
    pub ja3: Option<String>,
    /// JA4 fingerprint.
    pub ja4: Option<String>,
}

/// Indicators from an HTTP/1.x request line and headers, or an HTTP/2 request.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct HttpInfo {
    /// Request method.
    pub method: Option<String>,
    /// Host header or `:authority`, lower-cased, without port.
    pub host: Option<String>,
    /// Coarse class of the request path (`root`, `static`, `api`, `query`, `opaque`).
    pub path_class: Option<String>,
    /// User-Agent header.
    pub user_agent: Option<String>,
    /// Upgrade header, lower-cased.
    pub upgrade: Option<String>,
    /// Response status code, when seen.
    pub status_code: Option<i32>,
}

/// Indicators from a DNS query message.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct DnsInfo {
    /// Queried name, lower-cased, no trailing dot.
    pub qname: String,
    /// Query type mnemonic (`A`, `AAAA`, `TXT`, `TYPE<n>`).
    pub qtype: String,
    /// Response code mnemonic, when the response was seen.
    pub rcode: Option<String>,
}

/// One outbound network session reported by a per-app VPN, mobile proxy or network sensor,
/// normalized. Keyed by `device_id` on Kafka.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct NetworkSession {
    /// Stable identifier of the session, unique per source.
    pub session_id: String,
    /// Device that opened the session; the partitioning key.
    pub device_id: String,
    /// Platform of the device.
    pub platform: Platform,
    /// Package name or bundle id; `None` when only the device is known.
    pub app_id: Option<String>,
    /// Human-readable app name.
    pub app_name: Option<String>,
    /// Android Linux UID of the app.
    pub app_uid: Option<i32>,
    /// How the session was tied to `app_id`.
    pub attribution: AttributionSource,
    /// Confidence in the attribution, 0.0 to 1.0.
    pub attribution_confidence: f32,
    /// Transport protocol.
    pub transport: Transport,
    /// Source IP address.
    pub src_ip: Option<String>,
    /// Source port.
    pub src_port: Option<i32>,
    /// Destination IP address.
    pub dst_ip: String,
    /// Destination port.
    pub dst_port: i32,
    /// Recognised application protocol.
    pub protocol: AppProtocol,
    /// What the protocol verdict rests on.
    pub protocol_evidence: ProtocolEvidence,
    /// The sensor's own protocol label, verbatim.
    pub protocol_label: Option<String>,
    /// TLS ClientHello indicators.
    pub tls: Option<TlsInfo>,
    /// HTTP request indicators.
    pub http: Option<HttpInfo>,
    /// DNS query indicators.
    pub dns: Option<DnsInfo>,
    /// First line a text-protocol client sent, truncated to 256 bytes.
    pub client_banner: Option<String>,
    /// Bytes sent by the device.
    pub bytes_out: i64,
    /// Bytes received by the device.
    pub bytes_in: i64,
    /// Packets sent by the device (0 when not counted).
    pub packets_out: i64,
    /// Packets received by the device (0 when not counted).
    pub packets_in: i64,
    /// Shannon entropy of the first client payload bytes, bits per byte.
    pub payload_entropy: Option<f64>,
    /// Number of bytes `payload_entropy` was computed over.
    pub payload_sample_bytes: Option<i32>,
    /// Event time: session start.
    #[avro(with = timestamp_millis)]
    pub start_time: EpochMillis,
    /// Duration in milliseconds, when known.
    pub duration_ms: Option<i64>,
    /// Reported while still open (long-lived connection).
    pub still_open: bool,
    /// When offport normalized the record.
    #[avro(with = timestamp_millis)]
    pub ingest_time: EpochMillis,
    /// Input format.
    pub source_format: SourceFormat,
    /// Where the raw record came from.
    pub source_ref: String,
}

/// Kind of device or app activity reported by the mobile EDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "dev.offport.v1")]
#[allow(missing_docs)] // apache-avro-derive 0.22 rejects doc attributes on unit variants
pub enum DeviceEventKind {
    // App came to the foreground.
    AppForeground,
    // App went to the background.
    AppBackground,
    // App was stopped.
    AppStopped,
    // Device locked (keyguard shown).
    DeviceLocked,
    // Device unlocked (keyguard hidden).
    DeviceUnlocked,
    // Screen turned on.
    ScreenOn,
    // Screen turned off.
    ScreenOff,
    // The user touched or typed.
    UserInteraction,
    // JobScheduler job started.
    BackgroundJob,
    // WorkManager work started.
    WorkManager,
    // Foreground service started.
    ForegroundServiceStart,
    // Foreground service stopped.
    ForegroundServiceStop,
    // iOS background app refresh / BGTask.
    BackgroundRefresh,
    // A persistent service was activated.
    PersistentService,
    // Networking-API usage counts.
    NetworkApiUsage,
    // Anything else.
    Unknown,
}

/// Count of networking-framework calls an app made over a short window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct NetworkApiUsage {
    /// Framework or API observed.
    pub api: String,
    /// Number of calls in the window.
    pub call_count: i64,
    /// Window length in milliseconds, ending at the event time.
    pub window_ms: i64,
}

/// One device or app activity event from the mobile EDR, normalized. Keyed by `device_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct DeviceEvent {
    /// Stable identifier of the event.
    pub event_id: String,
    /// Device.
    pub device_id: String,
    /// Platform of the device.
    pub platform: Platform,
    /// App the event concerns; `None` for device-level events.
    pub app_id: Option<String>,
    /// What happened.
    pub kind: DeviceEventKind,
    /// Networking-API usage, for `NetworkApiUsage` events.
    pub network_api: Option<NetworkApiUsage>,
    /// Source-specific detail.
    pub detail: Option<String>,
    /// Event time.
    #[avro(with = timestamp_millis)]
    pub event_time: EpochMillis,
    /// When offport normalized the record.
    #[avro(with = timestamp_millis)]
    pub ingest_time: EpochMillis,
    /// Input format.
    pub source_format: SourceFormat,
    /// Where the raw record came from.
    pub source_ref: String,
}

/// One app in an MDM inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct ManagedApp {
    /// Package name or bundle id.
    pub app_id: String,
    /// Display name.
    pub name: Option<String>,
    /// Installed version.
    pub version: Option<String>,
    /// Managed by the MDM.
    pub managed: bool,
    /// Approved by the organisation; `None` when unknown.
    pub approved: Option<bool>,
    /// MDM status verbatim.
    pub status: Option<String>,
    /// Apple ManagementFlags.
    pub management_flags: Option<i32>,
    /// App category (AppNetworkBehaviorBaseline).
    pub category: Option<String>,
    /// Enterprise service class (AllowedServiceClasses).
    pub service_class: Option<String>,
}

/// [`ManagedApp::status`] of an app known only from an installed-apps inventory (iOS
/// `InstalledApplicationList`): present on the device, management unknown. Such an entry never
/// replaces a management answer for the same app (see the join).
pub const INSTALLED_ONLY_STATUS: &str = "InstalledApplicationList";

/// MDM context of a device: supervision, group/role and managed-app inventory. Keyed by
/// `device_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct DeviceContext {
    /// Device.
    pub device_id: String,
    /// Platform.
    pub platform: Platform,
    /// Supervised (iOS) or fully managed (Android); `None` when unknown.
    pub supervised: Option<bool>,
    /// Device group.
    pub device_group: Option<String>,
    /// Device role.
    pub device_role: Option<String>,
    /// Hardware serial number.
    pub serial_number: Option<String>,
    /// Apple UDID or Android enrollment id.
    pub udid: Option<String>,
    /// OS version.
    pub os_version: Option<String>,
    /// Apps reported by this record.
    pub apps: Vec<ManagedApp>,
    /// `apps` is the complete inventory and replaces the previous one.
    pub inventory_complete: bool,
    /// Event time.
    #[avro(with = timestamp_millis)]
    pub event_time: EpochMillis,
    /// When offport normalized the record.
    #[avro(with = timestamp_millis)]
    pub ingest_time: EpochMillis,
    /// Input format.
    pub source_format: SourceFormat,
    /// Where the raw record came from.
    pub source_ref: String,
}

/// Lifecycle state of an app at a point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "dev.offport.v1")]
#[allow(missing_docs)] // apache-avro-derive 0.22 rejects doc attributes on unit variants
pub enum AppRunState {
    // In the foreground.
    Foreground,
    // In the background.
    Background,
    // Not running.
    NotRunning,
    // Unknown.
    Unknown,
}

/// Lock state of a device at a point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "dev.offport.v1")]
#[allow(missing_docs)] // apache-avro-derive 0.22 rejects doc attributes on unit variants
pub enum LockState {
    // Locked.
    Locked,
    // Unlocked.
    Unlocked,
    // Unknown.
    Unknown,
}

/// A background-execution event that preceded a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct BackgroundExecution {
    /// Kind of background execution.
    pub kind: DeviceEventKind,
    /// When it happened.
    #[avro(with = timestamp_millis)]
    pub event_time: EpochMillis,
    /// Milliseconds between it and the session start.
    pub ms_before_session: i64,
}

/// MDM context of the device and app as of a session's start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct MdmContext {
    /// App managed; `None` when the inventory does not list it.
    pub managed: Option<bool>,
    /// App approved; `None` when unknown.
    pub approved: Option<bool>,
    /// Device supervised; `None` when unknown.
    pub supervised: Option<bool>,
    /// Device group.
    pub device_group: Option<String>,
    /// Device role.
    pub device_role: Option<String>,
    /// App category.
    pub app_category: Option<String>,
    /// App service class.
    pub service_class: Option<String>,
    /// Event time of the MDM record this came from.
    #[avro(with = timestamp_millis)]
    pub as_of: EpochMillis,
}

/// A [`NetworkSession`] joined, as of its start, with EDR state and MDM context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct EnrichedSession {
    /// The session.
    pub session: NetworkSession,
    /// App state at session start.
    pub app_state: AppRunState,
    /// The app came to the foreground during the session.
    pub foreground_transition_during: bool,
    /// Lock state at session start.
    pub lock_state: LockState,
    /// The device stayed locked for the whole session.
    pub locked_throughout: bool,
    /// LastUserInteractionDelta in milliseconds; `None` when none is known within TimeWindow.
    pub last_user_interaction_ms_before: Option<i64>,
    /// The most recent background-execution event before the session.
    pub preceding_background_execution: Option<BackgroundExecution>,
    /// Networking-API calls within TimeWindow before the session.
    pub network_api_calls_before: i64,
    /// MDM context; `None` when no MDM record is known.
    pub mdm: Option<MdmContext>,
    /// Joiner watermark at emission.
    #[avro(with = timestamp_millis)]
    pub watermark: EpochMillis,
}

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

/// Machine-readable reason a record was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "dev.offport.v1")]
#[allow(missing_docs)] // apache-avro-derive 0.22 rejects doc attributes on unit variants
pub enum DeadLetterReason {
    // Not parseable in the expected format.
    Unparseable,
    // No configured or detectable format.
    UnknownFormat,
    // No device id.
    MissingDeviceId,
    // A value out of its possible range.
    ImpossibleValue,
    // Larger than the configured limit.
    Oversize,
    // Does not match its Avro schema.
    SchemaMismatch,
    // A baseline document that failed validation.
    InvalidBaseline,
    // Anything else.
    Other,
}

impl DeadLetterReason {
    /// The reason as its Avro symbol (`UNPARSEABLE`): the `offport.errors.reason` header and the
    /// `reason` label of the dead-letter metric.
    pub fn code(self) -> &'static str {
        match self {
            DeadLetterReason::Unparseable => "UNPARSEABLE",
            DeadLetterReason::UnknownFormat => "UNKNOWN_FORMAT",
            DeadLetterReason::MissingDeviceId => "MISSING_DEVICE_ID",
            DeadLetterReason::ImpossibleValue => "IMPOSSIBLE_VALUE",
            DeadLetterReason::Oversize => "OVERSIZE",
            DeadLetterReason::SchemaMismatch => "SCHEMA_MISMATCH",
            DeadLetterReason::InvalidBaseline => "INVALID_BASELINE",
            DeadLetterReason::Other => "OTHER",
        }
    }
}

/// A Kafka record header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct RecordHeader {
    /// Header key.
    pub key: String,
    /// Header value; `None` for a null header.
    #[serde(with = "apache_avro::serde::bytes_opt")]
    #[avro(with)]
    pub value: Option<Vec<u8>>,
}

/// A record a stage could not process, kept whole with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct DeadLetter {
    /// Key bytes of the original record.
    #[serde(with = "apache_avro::serde::bytes_opt")]
    #[avro(with)]
    pub original_key: Option<Vec<u8>>,
    /// Value bytes of the original record.
    #[serde(with = "apache_avro::serde::bytes_opt")]
    #[avro(with)]
    pub original_value: Option<Vec<u8>>,
    /// Headers of the original record.
    pub original_headers: Vec<RecordHeader>,
    /// Source topic.
    pub source_topic: String,
    /// Source partition.
    pub source_partition: i32,
    /// Source offset.
    pub source_offset: i64,
    /// Kafka timestamp of the original record.
    #[avro(with = optional_timestamp_millis)]
    pub source_timestamp: Option<EpochMillis>,
    /// Stage that rejected it.
    pub stage: String,
    /// Machine-readable reason.
    pub reason: DeadLetterReason,
    /// Human-readable explanation.
    pub message: String,
    /// When it was rejected.
    #[avro(with = timestamp_millis)]
    pub failed_time: EpochMillis,
    /// Size in bytes of the whole original value, also when `original_value` was cut.
    #[serde(default)]
    pub original_value_size: Option<i64>,
    /// SHA-256 of the whole original value, lower-case hex, to match a cut value with its source.
    #[serde(default)]
    pub original_value_sha256: Option<String>,
    /// `true` when the key, value, a header value or the message was cut to fit the
    /// dead-letter topic's largest record.
    #[serde(default)]
    pub truncated: bool,
}

/// What a dead letter's Avro record and Kafka headers take beside the original bytes (field
/// names, topic, stage, offsets, times, the `offport.errors.*` headers and the record batch's
/// own framing), with room to spare.
pub const DEAD_LETTER_OVERHEAD_BYTES: usize = 16 * 1024;

/// Longest `message` a dead letter keeps: a message may quote the bad value.
pub const DEAD_LETTER_MESSAGE_BYTES: usize = 4 * 1024;

impl DeadLetter {
    /// Records the size and hash of the original value, then cuts what it carries so that the
    /// whole dead letter stays within `max_record_bytes` (the smaller of the dead-letter
    /// topic's `max.message.bytes` and the producer's `message.max.bytes`). A record the broker
    /// took can make a dead letter larger than the broker takes (the envelope adds to it); one
    /// that does not fit would fail its transaction on every retry and stop the partition.
    ///
    /// The message is cut first, then the key and header values to a quarter of what is left
    /// each, then the value to the rest.
    pub fn fit_within(&mut self, max_record_bytes: usize) {
        use sha2::Digest;
        if let Some(value) = &self.original_value {
            self.original_value_size = i64::try_from(value.len()).ok();
            self.original_value_sha256 = Some(hex::encode(sha2::Sha256::digest(value)));
        }
        if cut_text(&mut self.message, DEAD_LETTER_MESSAGE_BYTES) {
            self.truncated = true;
        }
        let fixed = DEAD_LETTER_OVERHEAD_BYTES
            + 2 * self.message.len()
            + self.source_topic.len()
            + self.stage.len();
        let mut left = max_record_bytes.saturating_sub(fixed);
        let quarter = left / 4;
        if let Some(key) = &mut self.original_key {
            self.truncated |= cut_bytes(key, quarter);
            left -= key.len();
        }
        let mut header_room = quarter;
        for header in &mut self.original_headers {
            self.truncated |= cut_str(&mut header.key, header_room);
            header_room -= header.key.len();
            left -= header.key.len();
            if let Some(value) = &mut header.value {
                self.truncated |= cut_bytes(value, header_room);
                header_room -= value.len();
                left -= value.len();
            }
        }
        if let Some(value) = &mut self.original_value {
            self.truncated |= cut_bytes(value, left);
        }
    }
}

/// Cuts `bytes` to at most `max`; `true` when it did.
fn cut_bytes(bytes: &mut Vec<u8>, max: usize) -> bool {
    let cut = bytes.len() > max;
    bytes.truncate(max);
    cut
}

/// Cuts `text` to at most `max` bytes at a character boundary, marking the cut; `true` when
/// it did.
fn cut_text(text: &mut String, max: usize) -> bool {
    const MARK: &str = " [cut]";
    if text.len() <= max {
        return false;
    }
    cut_str(text, max.saturating_sub(MARK.len()));
    text.push_str(MARK);
    true
}

/// Cuts `text` to at most `max` bytes at a character boundary; `true` when it did.
fn cut_str(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Contract;

    fn encoded_len(letter: &DeadLetter) -> usize {
        let schema = Contract::DeadLetter.binary().unwrap();
        let mut out = Vec::new();
        schema.encode(letter, &mut out).unwrap();
        out.len()
    }

    #[test]
    fn a_dead_letter_of_a_record_at_the_brokers_limit_is_cut_to_fit_with_its_size_and_hash() {
        use sha2::Digest;
        let value = vec![b'x'; 1_048_300];
        let mut letter = crate::examples::dead_letter();
        letter.original_value = Some(value.clone());
        letter.message = "é".repeat(10_000);
        letter.fit_within(1_000_000);
        let kept = letter.original_value.as_ref().unwrap();
        assert!(letter.truncated);
        assert!(
            kept.len() > 900_000,
            "most of the value is kept: {}",
            kept.len()
        );
        assert_eq!(kept[..], value[..kept.len()]);
        assert_eq!(letter.original_value_size, Some(1_048_300));
        assert_eq!(
            letter.original_value_sha256.as_deref(),
            Some(hex::encode(sha2::Sha256::digest(&value)).as_str())
        );
        assert!(letter.message.len() <= DEAD_LETTER_MESSAGE_BYTES);
        assert!(letter.message.ends_with(" [cut]"));
        // The Avro record and the message header fit, with the overhead's margin left.
        let headers: usize = 200 + letter.message.len();
        assert!(encoded_len(&letter) + headers <= 1_000_000 - 8 * 1024);
    }

    #[test]
    fn a_huge_key_and_headers_are_cut_too_and_a_small_letter_is_kept_whole() {
        let mut letter = crate::examples::dead_letter();
        letter.original_key = Some(vec![b'k'; 2_000_000]);
        letter.original_headers = (0..50)
            .map(|i| RecordHeader {
                key: format!("h{i}"),
                value: Some(vec![b'v'; 100_000]),
            })
            .collect();
        letter.fit_within(1_000_000);
        assert!(letter.truncated);
        assert!(encoded_len(&letter) + letter.message.len() + 200 <= 1_000_000);

        let mut small = crate::examples::dead_letter();
        let before = small.clone();
        small.fit_within(1_000_000);
        assert!(!small.truncated);
        assert_eq!(small.original_key, before.original_key);
        assert_eq!(small.original_value, before.original_value);
        assert_eq!(small.original_headers, before.original_headers);
        assert_eq!(small.original_value_size, Some(9));
        assert_eq!(small.message, before.message);
    }
}
