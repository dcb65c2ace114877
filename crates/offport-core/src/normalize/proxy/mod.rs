//! Sessions from proxies, per-app VPNs and network sensors, into [`NetworkSession`].
//!
//! Every format fills a [`SessionDraft`]; [`SessionDraft::finish`] then does what all formats
//! share: it validates (device id, ports, counts, times), recognises the protocol from the
//! sensor's label and the first client bytes (see [`crate::protocol`]), merges the indicators a
//! format carries as fields (SNI, Host, DNS name, JA3/JA4) with those read from the bytes, and
//! derives a stable session id when the source has none.
//!
//! Formats: offport's own JSON session record ([`OffportJson`], the reference format, described
//! field by field in docs/formats.md), PCAPdroid's CSV export ([`pcapdroid`]), Zeek JSON logs
//! ([`zeek`]) and Suricata EVE JSON ([`suricata`]); the two sensors' records of one flow are
//! joined by [`flows`], and their client addresses mapped to devices by [`sources`].

pub mod flows;
mod offport_json;
pub mod pcapdroid;
pub mod sources;
pub mod suricata;
pub mod zeek;

pub use offport_json::OffportJson;

use serde::Deserialize;

use super::{
    check_count, check_device_id, check_platform, check_port, check_time, derived_id,
    platform_from, time_from_json, value_of, Limits, Normalized, Normalizer, RawRecord, Rejection,
};
use crate::model::{
    AppProtocol, AttributionSource, DnsInfo, EpochMillis, HttpInfo, NetworkSession, Platform,
    ProtocolEvidence, SourceFormat, TlsInfo, Transport,
};
use crate::protocol::{
    decode_base64_text, decode_hex_text, recognize, sensor_verdict, shannon_entropy,
};

pub use super::DEVICE_HEADER;

/// What a format knows of a session, before the shared rules run.
#[derive(Debug, Clone, Default)]
pub struct SessionDraft {
    /// Session id from the source, when it has one.
    pub session_id: Option<String>,
    /// Device id from the record itself.
    pub device_id: Option<String>,
    /// Platform.
    pub platform: Platform,
    /// App package name or bundle id.
    pub app_id: Option<String>,
    /// App display name.
    pub app_name: Option<String>,
    /// Linux UID of the app (Android VpnService).
    pub app_uid: Option<i64>,
    /// How the app was attributed; `None` picks a default from what is present.
    pub attribution: Option<AttributionSource>,
    /// Attribution confidence 0..1; `None` picks a default.
    pub attribution_confidence: Option<f64>,
    /// Transport.
    pub transport: Transport,
    /// Client address.
    pub src_ip: Option<String>,
    /// Client port.
    pub src_port: Option<i64>,
    /// Server address.
    pub dst_ip: Option<String>,
    /// Server port.
    pub dst_port: Option<i64>,
    /// The sensor's protocol label (Zeek `service`, Suricata `app_proto`, nDPI name).
    pub sensor_label: Option<String>,
    /// First client bytes of the flow.
    pub client_bytes: Option<Vec<u8>>,
    /// SNI reported as a field.
    pub sni: Option<String>,
    /// TLS version reported as a field.
    pub tls_version: Option<String>,
    /// JA3 reported by the sensor.
    pub ja3: Option<String>,
    /// JA4 reported by the sensor.
    pub ja4: Option<String>,
    /// HTTP fields reported by the sensor.
    pub http: Option<HttpInfo>,
    /// DNS query reported as a field.
    pub dns: Option<DnsInfo>,
    /// Bytes client to server.
    pub bytes_out: Option<i64>,
    /// Bytes server to client.
    pub bytes_in: Option<i64>,
    /// Packets client to server.
    pub packets_out: Option<i64>,
    /// Packets server to client.
    pub packets_in: Option<i64>,
    /// Entropy of the payload, when the source measured it.
    pub payload_entropy: Option<f64>,
    /// Start time.
    pub start_time: Option<EpochMillis>,
    /// End time.
    pub end_time: Option<EpochMillis>,
    /// Duration, when the source gives one instead of an end.
    pub duration_ms: Option<i64>,
    /// The session had not ended when reported.
    pub still_open: bool,
    /// Where the record came from, when it is not the record being normalized (a held flow).
    pub source_ref: Option<String>,
}

fn non_empty(text: Option<String>) -> Option<String> {
    text.map(|t| {
        // Most values need no trimming: keep their allocation.
        if t.trim().len() == t.len() {
            t
        } else {
            t.trim().to_string()
        }
    })
    .filter(|t| !t.is_empty() && t != "-")
}

/// The canonical text of an address (brackets dropped; Suricata writes IPv6 fully expanded), so
/// one address has one form; the text itself back when it is not an address.
fn canonical_ip(text: String) -> Result<String, String> {
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        // Rust's IPv4 parser takes only the dotted-decimal form it also prints: keep the text.
        Ok(std::net::IpAddr::V4(_)) if bare.len() == text.len() => Ok(text),
        Ok(ip) => Ok(ip.to_string()),
        Err(_) => Err(bare.to_string()),
    }
}

/// Longest host name a session may carry: a DNS name is at most 255 octets (RFC 1035 2.3.4),
/// and an SNI names a DNS host (RFC 6066 section 3); an HTTP Host may add `:port`.
const MAX_NAME_BYTES: usize = 255 + ":65535".len();

/// Rejects a name no resolver could have produced, so it is not carried into every session of
/// the flow and every finding about it.
fn check_name_length(field: &str, name: Option<&str>) -> Result<(), Rejection> {
    match name {
        Some(name) if name.len() > MAX_NAME_BYTES => Err(Rejection::impossible(format!(
            "{field} is {} bytes; a host name is at most 255",
            name.len()
        ))),
        _ => Ok(()),
    }
}

fn lower(text: Option<String>) -> Option<String> {
    non_empty(text).map(|t| t.trim_end_matches('.').to_ascii_lowercase())
}

impl SessionDraft {
    /// This draft with the fields it lacks taken from `other` (another record of the same flow).
    pub fn absorb(self, other: SessionDraft) -> SessionDraft {
        let http = match (self.http, other.http) {
            (Some(mut mine), Some(theirs)) => {
                mine.host = mine.host.or(theirs.host);
                mine.method = mine.method.or(theirs.method);
                mine.user_agent = mine.user_agent.or(theirs.user_agent);
                mine.path_class = mine.path_class.or(theirs.path_class);
                mine.status_code = mine.status_code.or(theirs.status_code);
                mine.upgrade = mine.upgrade.or(theirs.upgrade);
                Some(mine)
            }
            (mine, theirs) => mine.or(theirs),
        };
        SessionDraft {
            session_id: self.session_id.or(other.session_id),
            device_id: self.device_id.or(other.device_id),
            platform: if self.platform == Platform::Unknown {
                other.platform
            } else {
                self.platform
            },
            app_id: self.app_id.or(other.app_id),
            app_name: self.app_name.or(other.app_name),
            app_uid: self.app_uid.or(other.app_uid),
            attribution: self.attribution.or(other.attribution),
            attribution_confidence: self.attribution_confidence.or(other.attribution_confidence),
            transport: self.transport,
            src_ip: self.src_ip.or(other.src_ip),
            src_port: self.src_port.or(other.src_port),
            dst_ip: self.dst_ip.or(other.dst_ip),
            dst_port: self.dst_port.or(other.dst_port),
            sensor_label: self.sensor_label.or(other.sensor_label),
            client_bytes: self.client_bytes.or(other.client_bytes),
            sni: self.sni.or(other.sni),
            tls_version: self.tls_version.or(other.tls_version),
            ja3: self.ja3.or(other.ja3),
            ja4: self.ja4.or(other.ja4),
            http,
            dns: self.dns.or(other.dns),
            bytes_out: self.bytes_out.or(other.bytes_out),
            bytes_in: self.bytes_in.or(other.bytes_in),
            packets_out: self.packets_out.or(other.packets_out),
            packets_in: self.packets_in.or(other.packets_in),
            payload_entropy: self.payload_entropy.or(other.payload_entropy),
            start_time: match (self.start_time, other.start_time) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            end_time: self.end_time.or(other.end_time),
            duration_ms: self.duration_ms.or(other.duration_ms),
            still_open: self.still_open,
            source_ref: self.source_ref.or(other.source_ref),
        }
    }

    /// Applies the shared rules. `fallback_device` is the device id from the record key, a
    /// header or the source's mapping, used when the record has none.
    pub fn finish(
        self,
        record: &RawRecord<'_>,
        format: SourceFormat,
        fallback_device: Option<&str>,
        ingest_time: EpochMillis,
    ) -> Result<NetworkSession, Rejection> {
        let device_id = check_device_id(
            non_empty(self.device_id)
                .as_deref()
                .or(fallback_device)
                .or_else(|| record.outside_device()),
        )?;
        let dst_ip = non_empty(self.dst_ip)
            .ok_or_else(|| Rejection::unparseable("no destination address (dst_ip)"))?;
        let dst_ip = canonical_ip(dst_ip).map_err(|dst_ip| {
            Rejection::impossible(format!("dst_ip={dst_ip:?} is not an IP address"))
        })?;
        let dst_port = check_port(
            "dst_port",
            self.dst_port
                .ok_or_else(|| Rejection::unparseable("no destination port (dst_port)"))?,
        )?;
        if dst_port == 0 {
            return Err(Rejection::impossible(
                "dst_port=0 is not a destination port",
            ));
        }
        let src_port = self
            .src_port
            .map(|p| check_port("src_port", p))
            .transpose()?;
        let start_time = self
            .start_time
            .ok_or_else(|| Rejection::unparseable("no start time"))?;
        check_time("start_time", start_time, ingest_time)?;
        let duration_ms = match (self.duration_ms, self.end_time) {
            (Some(duration), _) => Some(check_count("duration_ms", duration)?),
            (None, Some(end)) if end < start_time => {
                return Err(Rejection::impossible(format!(
                    "end time {end} is before start time {start_time}"
                )))
            }
            (None, Some(end)) => Some(end - start_time),
            (None, None) => None,
        };
        let count = |field: &str, value: Option<i64>| check_count(field, value.unwrap_or(0));
        let bytes_out = count("bytes_out", self.bytes_out)?;
        let bytes_in = count("bytes_in", self.bytes_in)?;
        let packets_out = count("packets_out", self.packets_out)?;
        let packets_in = count("packets_in", self.packets_in)?;
        if let Some(entropy) = self.payload_entropy {
            if !(0.0..=8.0).contains(&entropy) {
                return Err(Rejection::impossible(format!(
                    "payload_entropy={entropy} is outside 0-8 bits per byte"
                )));
            }
        }
        let app_uid = self
            .app_uid
            .map(|uid| {
                i32::try_from(uid)
                    .ok()
                    .filter(|u| *u >= -1)
                    .ok_or_else(|| Rejection::impossible(format!("app_uid={uid} is not a UID")))
            })
            .transpose()?;

        // Protocol: client bytes are direct evidence and win over a disagreeing label.
        let transport = self.transport;
        let label = non_empty(self.sensor_label);
        let sensor = label.as_deref().and_then(sensor_verdict);
        let recognized = self
            .client_bytes
            .as_deref()
            .map(|bytes| recognize(bytes, transport))
            .unwrap_or_default();
        let (protocol, protocol_evidence) = match (recognized.protocol, sensor) {
            (Some(seen), Some(said)) if seen == said => {
                (seen, ProtocolEvidence::SensorAndClientBytes)
            }
            (Some(seen), _) => (seen, ProtocolEvidence::ClientBytes),
            (None, Some(said)) => (said, ProtocolEvidence::Sensor),
            (None, None) => (AppProtocol::Unknown, ProtocolEvidence::None),
        };

        let mut tls = recognized.tls;
        let (sni, version, ja3, ja4) = (
            lower(self.sni),
            non_empty(self.tls_version),
            lower(self.ja3),
            non_empty(self.ja4),
        );
        if sni.is_some() || version.is_some() || ja3.is_some() || ja4.is_some() {
            let info = tls.get_or_insert_with(TlsInfo::default);
            info.sni = info.sni.take().or(sni);
            info.version = info.version.take().or(version);
            info.ja3 = info.ja3.take().or(ja3);
            info.ja4 = info.ja4.take().or(ja4);
        }
        let http = match (recognized.http, self.http) {
            (Some(mut seen), Some(said)) => {
                seen.host = seen.host.or(said.host);
                seen.method = seen.method.or(said.method);
                seen.user_agent = seen.user_agent.or(said.user_agent);
                seen.path_class = seen.path_class.or(said.path_class);
                seen.status_code = seen.status_code.or(said.status_code);
                seen.upgrade = seen.upgrade.or(said.upgrade);
                Some(seen)
            }
            (seen, said) => seen.or(said),
        };
        let dns = recognized.dns.or(self.dns);
        check_name_length("tls.sni", tls.as_ref().and_then(|t| t.sni.as_deref()))?;
        check_name_length("http.host", http.as_ref().and_then(|h| h.host.as_deref()))?;
        check_name_length("dns.qname", dns.as_ref().map(|d| d.qname.as_str()))?;
        let (payload_entropy, payload_sample_bytes) =
            match (&self.client_bytes, self.payload_entropy) {
                (_, Some(entropy)) => (Some(entropy), None),
                (Some(bytes), None) if !bytes.is_empty() => (
                    Some(shannon_entropy(bytes)),
                    i32::try_from(bytes.len()).ok(),
                ),
                _ => (None, None),
            };

        let app_id = non_empty(self.app_id);
        let attribution = self.attribution.unwrap_or(if app_id.is_some() {
            AttributionSource::PerAppVpn
        } else {
            AttributionSource::DeviceOnly
        });
        let attribution_confidence =
            self.attribution_confidence
                .unwrap_or(if app_id.is_some() { 1.0 } else { 0.5 });
        if !(0.0..=1.0).contains(&attribution_confidence) {
            return Err(Rejection::impossible(format!(
                "attribution_confidence={attribution_confidence} is outside 0-1"
            )));
        }
        let src_ip = non_empty(self.src_ip).map(|ip| canonical_ip(ip).unwrap_or_else(|ip| ip));
        let session_id = non_empty(self.session_id).unwrap_or_else(|| {
            derived_id(&[
                &device_id,
                src_ip.as_deref().unwrap_or(""),
                &src_port.map_or(String::new(), |p| p.to_string()),
                &dst_ip,
                &dst_port.to_string(),
                transport.name(),
                &start_time.to_string(),
            ])
        });

        Ok(NetworkSession {
            session_id,
            device_id,
            platform: self.platform,
            app_id,
            app_name: non_empty(self.app_name),
            app_uid,
            attribution,
            attribution_confidence: attribution_confidence as f32,
            transport,
            src_ip,
            src_port,
            dst_ip,
            dst_port,
            protocol,
            protocol_evidence,
            protocol_label: label,
            tls,
            http,
            dns,
            client_banner: recognized.banner,
            bytes_out,
            bytes_in,
            packets_out,
            packets_in,
            payload_entropy,
            payload_sample_bytes,
            start_time,
            duration_ms,
            still_open: self.still_open,
            ingest_time,
            source_format: format,
            source_ref: self.source_ref.unwrap_or_else(|| record.source_ref()),
        })
    }
}

/// Transport from `TCP`/`tcp`/`6` or `UDP`/`udp`/`17`.
pub fn transport_from(text: Option<&str>) -> Result<Transport, Rejection> {
    match text.map(|t| t.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("tcp") | Some("6") => Ok(Transport::Tcp),
        Some("udp") | Some("17") => Ok(Transport::Udp),
        Some(other) => Err(Rejection::impossible(format!(
            "transport {other:?} is neither TCP nor UDP"
        ))),
    }
}

/// The input format of a raw proxy topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyFormat {
    /// Detected per record: a Zeek line, an EVE event, an offport session JSON, or PCAPdroid
    /// CSV (a header row, or a first column of `TCP`/`UDP`/`ICMP`).
    Auto,
    /// offport's session JSON only.
    OffportJson,
    /// PCAPdroid CSV export rows only.
    PcapdroidCsv,
    /// Zeek JSON log lines only.
    ZeekJson,
    /// Suricata EVE JSON events only.
    SuricataEve,
}

impl ProxyFormat {
    /// Every format by its configuration name.
    pub const NAMES: [(&'static str, ProxyFormat); 5] = [
        ("auto", ProxyFormat::Auto),
        ("offport-json", ProxyFormat::OffportJson),
        ("pcapdroid-csv", ProxyFormat::PcapdroidCsv),
        ("zeek-json", ProxyFormat::ZeekJson),
        ("suricata-eve", ProxyFormat::SuricataEve),
    ];
}

/// A proxy format name offport does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown proxy format {name:?}; known: {}", ProxyFormat::NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "))]
pub struct UnknownFormat {
    /// The name given.
    pub name: String,
}

impl std::str::FromStr for ProxyFormat {
    type Err = UnknownFormat;

    fn from_str(text: &str) -> Result<Self, UnknownFormat> {
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, format)| *format)
            .ok_or_else(|| UnknownFormat {
                name: text.to_string(),
            })
    }
}

/// How the proxy normalizer reads its topic.
#[derive(Debug, Clone, Default)]
pub struct ProxyConfig {
    /// Input format.
    pub format: Option<ProxyFormat>,
    /// Input bounds.
    pub limits: Limits,
    /// Device id for records that name none and have no header, key or address mapping (one
    /// device's PCAPdroid export on its own topic).
    pub default_device_id: Option<String>,
    /// Client address to device/app mapping for network sensors.
    pub sources: sources::SourceMap,
    /// Bounds of the Zeek/Suricata flow join.
    pub flows: flows::FlowJoinLimits,
}

/// The normalizer of the raw proxy topic: picks the format by configuration or per record.
#[derive(Debug)]
pub struct ProxyNormalizer {
    config: ProxyConfig,
    join: flows::FlowJoin,
}

impl ProxyNormalizer {
    /// A normalizer for `format` within `limits`, with no device defaults or mappings.
    pub fn new(format: ProxyFormat, limits: Limits) -> Self {
        Self::configured(ProxyConfig {
            format: Some(format),
            limits,
            ..ProxyConfig::default()
        })
    }

    /// A normalizer of `config`.
    pub fn configured(config: ProxyConfig) -> Self {
        Self {
            join: flows::FlowJoin::new(config.flows),
            config,
        }
    }

    /// Flows held by the Zeek/Suricata join.
    pub fn held_flows(&self) -> usize {
        self.join.held()
    }

    /// Sets the device (and app, platform) of a sensor's draft from the address mapping, the
    /// configured default, the record's header or its key.
    fn locate(&self, draft: &mut SessionDraft, record: &RawRecord<'_>) {
        if let Some(mapping) = draft
            .src_ip
            .as_deref()
            .and_then(|ip| self.config.sources.lookup(ip, draft.start_time))
        {
            draft.device_id = Some(mapping.device_id.clone());
            draft.platform = platform_from(mapping.platform.as_deref());
            if let Some(app) = &mapping.app_id {
                draft.app_id = Some(app.clone());
                draft.attribution = Some(AttributionSource::SourceAddressMap);
                draft.attribution_confidence = Some(0.9);
            }
            return;
        }
        draft.device_id = self
            .config
            .default_device_id
            .clone()
            .or_else(|| record.outside_device().map(str::to_string));
    }

    fn offport(
        &self,
        bytes: &[u8],
        record: &RawRecord<'_>,
        ingest_time: EpochMillis,
    ) -> Result<Vec<Normalized>, Rejection> {
        let session = OffportJson::draft(bytes)?.finish(
            record,
            SourceFormat::OffportJson,
            self.config.default_device_id.as_deref(),
            ingest_time,
        )?;
        Ok(vec![Normalized::Session(session)])
    }

    fn pcapdroid(
        &self,
        bytes: &[u8],
        record: &RawRecord<'_>,
        ingest_time: EpochMillis,
    ) -> Result<Vec<Normalized>, Rejection> {
        let fallback = self.config.default_device_id.as_deref();
        Ok(pcapdroid::sessions(bytes, record, fallback, ingest_time)?
            .into_iter()
            .map(Normalized::Session)
            .collect())
    }

    /// A sensor's record of a flow: validated on its own, then joined.
    #[allow(clippy::too_many_arguments)]
    fn sensor(
        &mut self,
        id: String,
        completes: bool,
        time: EpochMillis,
        mut draft: SessionDraft,
        format: SourceFormat,
        record: &RawRecord<'_>,
        ingest_time: EpochMillis,
    ) -> Result<Vec<Normalized>, Rejection> {
        self.locate(&mut draft, record);
        draft.source_ref = Some(record.source_ref());
        if draft.session_id.is_none() {
            // The flow id with the addresses: sensors restart and reuse ids, flows do not.
            draft.session_id = Some(derived_id(&[
                &format!("{format:?}"),
                &id,
                draft.src_ip.as_deref().unwrap_or(""),
                draft.dst_ip.as_deref().unwrap_or(""),
                &draft.dst_port.map_or(String::new(), |p| p.to_string()),
            ]));
        }
        // A bad record is rejected now, on its own, rather than when its flow leaves the join.
        draft.clone().finish(record, format, None, ingest_time)?;
        if !completes {
            self.join.companion(
                id,
                draft,
                time,
                record.topic,
                record.partition,
                record.offset,
            );
            return Ok(Vec::new());
        }
        let completed = self
            .join
            .connection(id, draft, time, record.topic, record.partition);
        Ok(vec![Normalized::Session(completed.finish(
            record,
            format,
            None,
            ingest_time,
        )?)])
    }

    fn zeek(
        &mut self,
        line: Option<zeek::ZeekRecord>,
        record: &RawRecord<'_>,
        ingest_time: EpochMillis,
    ) -> Result<Vec<Normalized>, Rejection> {
        let Some(line) = line else {
            return Ok(Vec::new());
        };
        let completes = line.log == zeek::ZeekLog::Conn;
        self.sensor(
            line.uid,
            completes,
            line.time,
            line.draft,
            SourceFormat::ZeekJson,
            record,
            ingest_time,
        )
    }

    fn suricata(
        &mut self,
        event: Option<suricata::EveRecord>,
        record: &RawRecord<'_>,
        ingest_time: EpochMillis,
    ) -> Result<Vec<Normalized>, Rejection> {
        let Some(event) = event else {
            return Ok(Vec::new());
        };
        let completes = event.role == suricata::EveRole::Flow;
        self.sensor(
            event.flow_id,
            completes,
            event.time,
            event.draft,
            SourceFormat::SuricataEve,
            record,
            ingest_time,
        )
    }

    fn json_value(bytes: &[u8], what: &str) -> Result<serde_json::Value, Rejection> {
        serde_json::from_slice(bytes)
            .map_err(|e| Rejection::unparseable(format!("not {what}: {e}")))
    }
}

/// A sensor's JSON line, told by its first key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SensorLine {
    Zeek,
    Eve,
}

/// Which sensor's line a JSON object is, when that is quick to tell and certain not to be offport
/// JSON's (whose records refuse unknown fields, so nothing it would take goes elsewhere): by its
/// first key when that is one of Zeek's (`ts`, `uid`, `_path`, `id.orig_h`, as Zeek writes them
/// first) or EVE's (`timestamp`, `flow_id`, `event_type`); else, when the first key is not one of
/// offport JSON's, by a key only that sensor writes (`"id.orig_h"`, `"uid"`; `"event_type"`)
/// anywhere in the line. `None`: the long way decides.
fn sensor_line(bytes: &[u8]) -> Option<SensorLine> {
    let rest = bytes
        .trim_ascii_start()
        .strip_prefix(b"{")?
        .trim_ascii_start();
    let rest = rest.strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    let first = rest.get(..end)?;
    match first {
        b"ts" | b"uid" | b"_path" | b"id.orig_h" => return Some(SensorLine::Zeek),
        b"timestamp" | b"flow_id" | b"event_type" => return Some(SensorLine::Eve),
        _ => {}
    }
    if offport_json::field_names()
        .iter()
        .any(|name| name.as_bytes() == first)
    {
        return None;
    }
    if memchr::memmem::find(bytes, b"\"id.orig_h\"").is_some()
        || memchr::memmem::find(bytes, b"\"uid\"").is_some()
    {
        Some(SensorLine::Zeek)
    } else if memchr::memmem::find(bytes, b"\"event_type\"").is_some() {
        Some(SensorLine::Eve)
    } else {
        None
    }
}

/// `true` when the record is a headerless PCAPdroid row: an `IPProto` value (6, 17, 1, 58 or a
/// name) and then an IP address.
fn pcapdroid_row(bytes: &[u8]) -> bool {
    let head = String::from_utf8_lossy(bytes.get(..64).unwrap_or(bytes)).to_ascii_uppercase();
    let mut fields = head
        .trim_start()
        .split(',')
        .map(|f| f.trim().trim_matches('"'));
    let proto = fields.next().unwrap_or("");
    let address = fields.next().unwrap_or("");
    matches!(
        proto,
        "6" | "17" | "1" | "58" | "TCP" | "UDP" | "ICMP" | "ICMPV6"
    ) && address.parse::<std::net::IpAddr>().is_ok()
}

impl Normalizer for ProxyNormalizer {
    fn normalize(
        &mut self,
        record: &RawRecord<'_>,
        ingest_time: EpochMillis,
    ) -> Result<Vec<Normalized>, Rejection> {
        super::canonical_device_ids(self.any_format(record, ingest_time))
    }

    fn held_from(&self, topic: &str, partition: i32) -> Option<i64> {
        self.join.held_from(topic, partition)
    }

    fn forget(&mut self, topic: &str, partition: i32) {
        self.join.forget(topic, partition);
    }
}

impl ProxyNormalizer {
    /// A record in whichever format it is, device ids as the record gives them.
    fn any_format(
        &mut self,
        record: &RawRecord<'_>,
        ingest_time: EpochMillis,
    ) -> Result<Vec<Normalized>, Rejection> {
        let bytes = value_of(record, &self.config.limits)?;
        match self.config.format.unwrap_or(ProxyFormat::Auto) {
            ProxyFormat::OffportJson => self.offport(bytes, record, ingest_time),
            ProxyFormat::PcapdroidCsv => self.pcapdroid(bytes, record, ingest_time),
            ProxyFormat::ZeekJson => {
                let line = match zeek::parse_bytes(bytes) {
                    Ok(line) => line,
                    // A zeek-kafka tagged line, or the error the JSON tree's parse names.
                    Err(_) => zeek::parse(Self::json_value(bytes, "a Zeek JSON log line")?)?,
                };
                self.zeek(line, record, ingest_time)
            }
            ProxyFormat::SuricataEve => {
                let event = match suricata::parse_bytes(bytes) {
                    Ok(event) => event,
                    Err(_) => suricata::parse(Self::json_value(bytes, "a Suricata EVE event")?)?,
                };
                self.suricata(event, record, ingest_time)
            }
            ProxyFormat::Auto => {
                let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
                // A sensor's line whose first key offport JSON never has goes straight to its
                // parser, once; anything it cannot take goes the long way below, which decides.
                match sensor_line(bytes) {
                    Some(SensorLine::Zeek) => {
                        if let Ok(line) = zeek::parse_bytes(bytes) {
                            return self.zeek(line, record, ingest_time);
                        }
                    }
                    Some(SensorLine::Eve) => {
                        if let Ok(event) = suricata::parse_bytes(bytes) {
                            return self.suricata(event, record, ingest_time);
                        }
                    }
                    None => {}
                }
                if first == Some(&b'{') {
                    // offport's own records are the common case and parse straight into their
                    // struct; only a record that is not one is looked at as Zeek or EVE.
                    let own = self.offport(bytes, record, ingest_time);
                    let Err(rejection) = own else {
                        return own;
                    };
                    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
                        return Err(rejection);
                    };
                    if zeek::looks_like(&value) {
                        let line = zeek::parse(value)?;
                        self.zeek(line, record, ingest_time)
                    } else if suricata::looks_like(&value) {
                        let event = suricata::parse(value)?;
                        self.suricata(event, record, ingest_time)
                    } else {
                        Err(rejection)
                    }
                } else if pcapdroid::looks_like(bytes) || pcapdroid_row(bytes) {
                    self.pcapdroid(bytes, record, ingest_time)
                } else {
                    Err(Rejection::new(
                        crate::model::DeadLetterReason::UnknownFormat,
                        "not a format the proxy normalizer knows (a JSON object: offport \
                         session, Zeek or Suricata EVE; or PCAPdroid CSV)",
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
