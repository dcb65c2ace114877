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

mod draft;
pub mod flows;
mod offport_json;
pub mod pcapdroid;
pub mod sources;
pub mod suricata;
pub mod zeek;

use draft::{lower, non_empty};
pub use draft::{transport_from, SessionDraft};
pub use offport_json::OffportJson;

use serde::Deserialize;

use super::{
    check_platform, derived_id, platform_from, time_from_json, value_of, Limits, Normalized,
    Normalizer, RawRecord, Rejection,
};
use crate::model::{AttributionSource, DnsInfo, EpochMillis, HttpInfo, SourceFormat};
use crate::protocol::{decode_base64_text, decode_hex_text};

pub use super::DEVICE_HEADER;

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
            let mut port = itoa::Buffer::new();
            draft.session_id = Some(derived_id(&[
                format.name(),
                &id,
                draft.src_ip.as_deref().unwrap_or(""),
                draft.dst_ip.as_deref().unwrap_or(""),
                draft.dst_port.map_or("", |p| port.format(p)),
            ]));
        }
        if completes && !self.join.has_companions(&id) {
            // Nothing to merge: the connection record is the session as it stands, finished
            // once, and rejected before the join counts its flow as emitted.
            let session = draft.finish(record, format, None, ingest_time)?;
            self.join.connection(
                id,
                SessionDraft::default(),
                time,
                record.topic,
                record.partition,
            );
            return Ok(vec![Normalized::Session(session)]);
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
