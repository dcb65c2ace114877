//! Sessions as the normalizers write them: where they came from, how the app was attributed,
//! what protocol they speak.

use super::*;

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

impl SourceFormat {
    /// The variant's name, as `{:?}` writes it (derived session ids hash it).
    pub fn name(self) -> &'static str {
        match self {
            SourceFormat::OffportJson => "OffportJson",
            SourceFormat::PcapdroidCsv => "PcapdroidCsv",
            SourceFormat::ZeekJson => "ZeekJson",
            SourceFormat::SuricataEve => "SuricataEve",
            SourceFormat::AndroidUsageStats => "AndroidUsageStats",
            SourceFormat::MicromdmWebhook => "MicromdmWebhook",
            SourceFormat::AndroidManagementApi => "AndroidManagementApi",
            SourceFormat::Unknown => "Unknown",
            SourceFormat::OffportInventory => "OffportInventory",
        }
    }
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
