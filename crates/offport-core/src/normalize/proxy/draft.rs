//! [`SessionDraft`]: what a format knows of a session, and the rules every format shares
//! when it becomes a [`NetworkSession`].

use super::super::{
    check_count, check_device_id, check_port, check_time, derived_id, RawRecord, Rejection,
};
use crate::model::{
    AppProtocol, AttributionSource, DnsInfo, EpochMillis, HttpInfo, NetworkSession, Platform,
    ProtocolEvidence, SourceFormat, TlsInfo, Transport,
};
use crate::protocol::{recognize, sensor_verdict, shannon_entropy};

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

pub(super) fn non_empty(text: Option<String>) -> Option<String> {
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

pub(super) fn lower(text: Option<String>) -> Option<String> {
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
