//! offport's own session JSON (one object per line), the simulator's and the reference
//! format: read straight into a session draft.

use super::*;

/// offport's own session record: one JSON object per Kafka record. The reference format; every
/// field is described in docs/formats.md.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionJson {
    session_id: Option<String>,
    device_id: Option<String>,
    platform: Option<String>,
    app_id: Option<String>,
    app_name: Option<String>,
    app_uid: Option<i64>,
    attribution: Option<AttributionSource>,
    attribution_confidence: Option<f64>,
    transport: Option<String>,
    src_ip: Option<String>,
    src_port: Option<i64>,
    dst_ip: Option<String>,
    dst_port: Option<i64>,
    sensor_protocol: Option<String>,
    client_bytes_hex: Option<String>,
    client_bytes_b64: Option<String>,
    sni: Option<String>,
    tls_version: Option<String>,
    ja3: Option<String>,
    ja4: Option<String>,
    http_host: Option<String>,
    http_method: Option<String>,
    http_user_agent: Option<String>,
    dns_qname: Option<String>,
    dns_qtype: Option<String>,
    bytes_out: Option<i64>,
    bytes_in: Option<i64>,
    packets_out: Option<i64>,
    packets_in: Option<i64>,
    payload_entropy: Option<f64>,
    start_time: Option<serde_json::Value>,
    end_time: Option<serde_json::Value>,
    duration_ms: Option<i64>,
    #[serde(default)]
    still_open: bool,
}

/// The field names of offport's session JSON, as its derived deserializer asks for them (so
/// they cannot drift from the struct).
pub(super) fn field_names() -> &'static [&'static str] {
    static NAMES: std::sync::OnceLock<&'static [&'static str]> = std::sync::OnceLock::new();
    NAMES.get_or_init(serde_aux::serde_introspection::serde_introspect::<SessionJson>)
}

/// Normalizer of offport's JSON session records.
#[derive(Debug, Clone, Default)]
pub struct OffportJson {
    /// Input bounds.
    pub limits: Limits,
}

impl OffportJson {
    /// Parses one record into a draft.
    pub fn draft(bytes: &[u8]) -> Result<SessionDraft, Rejection> {
        let json: SessionJson = serde_json::from_slice(bytes)
            .map_err(|e| Rejection::unparseable(format!("not an offport session JSON: {e}")))?;
        let time = |field: &str, value: Option<serde_json::Value>| {
            value
                .filter(|v| !v.is_null())
                .map(|v| {
                    time_from_json(&v).ok_or_else(|| {
                        Rejection::unparseable(format!(
                            "{field}={v} is neither RFC 3339 text nor epoch seconds/milliseconds"
                        ))
                    })
                })
                .transpose()
        };
        // Each field in its own encoding: "abc" would decode as base64 too.
        let client_bytes = match (json.client_bytes_hex, json.client_bytes_b64) {
            (Some(text), _) => Some(decode_hex_text(&text).ok_or_else(|| {
                Rejection::unparseable("client_bytes_hex is not an even number of hex digits")
            })?),
            (None, Some(text)) => Some(
                decode_base64_text(&text)
                    .ok_or_else(|| Rejection::unparseable("client_bytes_b64 is not base64"))?,
            ),
            (None, None) => None,
        };
        let http = (json.http_host.is_some()
            || json.http_method.is_some()
            || json.http_user_agent.is_some())
        .then(|| HttpInfo {
            host: lower(json.http_host),
            method: non_empty(json.http_method),
            user_agent: non_empty(json.http_user_agent),
            ..HttpInfo::default()
        });
        let dns = lower(json.dns_qname).map(|qname| DnsInfo {
            qname,
            qtype: non_empty(json.dns_qtype).unwrap_or_else(|| "A".to_string()),
            rcode: None,
        });
        Ok(SessionDraft {
            session_id: json.session_id,
            device_id: json.device_id,
            platform: check_platform(json.platform.as_deref())?,
            app_id: json.app_id,
            app_name: json.app_name,
            app_uid: json.app_uid,
            attribution: json.attribution,
            attribution_confidence: json.attribution_confidence,
            transport: transport_from(json.transport.as_deref())?,
            src_ip: json.src_ip,
            src_port: json.src_port,
            dst_ip: json.dst_ip,
            dst_port: json.dst_port,
            sensor_label: json.sensor_protocol,
            client_bytes,
            sni: json.sni,
            tls_version: json.tls_version,
            ja3: json.ja3,
            ja4: json.ja4,
            http,
            dns,
            bytes_out: json.bytes_out,
            bytes_in: json.bytes_in,
            packets_out: json.packets_out,
            packets_in: json.packets_in,
            payload_entropy: json.payload_entropy,
            start_time: time("start_time", json.start_time)?,
            end_time: time("end_time", json.end_time)?,
            duration_ms: json.duration_ms,
            still_open: json.still_open,
            source_ref: None,
        })
    }
}

impl Normalizer for OffportJson {
    fn normalize(
        &mut self,
        record: &RawRecord<'_>,
        ingest_time: EpochMillis,
    ) -> Result<Vec<Normalized>, Rejection> {
        let bytes = value_of(record, &self.limits)?;
        let session =
            Self::draft(bytes)?.finish(record, SourceFormat::OffportJson, None, ingest_time)?;
        Ok(vec![Normalized::Session(session)])
    }
}
