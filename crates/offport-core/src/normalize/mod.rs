//! Normalization: raw records in the formats users have, turned into offport's contracts.
//!
//! Pure functions over bytes: the normalizer services feed each raw Kafka record in as a
//! [`RawRecord`] and produce what comes back. A record either becomes zero or more
//! [`Normalized`] records or is rejected with a [`Rejection`] (a machine-readable
//! [`DeadLetterReason`] and a message for a human), which the service writes to the dead-letter
//! topic with the original bytes. Nothing here panics on any input.
//!
//! - [`proxy`]: sessions from proxies, per-app VPNs and network sensors.
//! - [`edr`]: device and app activity from mobile EDR agents and Android UsageStats.
//! - [`mdm`]: supervision and app inventory from MicroMDM/NanoMDM, the Android Management API
//!   and offport's MDM JSON.
//!
//! Shared rules, documented once here and in docs/formats.md:
//!
//! - **Times** may be RFC 3339 text or numbers. A number below 10^11 is epoch seconds (fractions
//!   allowed), otherwise epoch milliseconds: 10^11 s is the year 5138 and 10^11 ms is 1973, so
//!   the two ranges cannot be confused for real traffic.
//! - **Impossible values** are rejected, not clamped: ports outside 0..=65535 (a destination port
//!   of 0), negative byte or packet counts, an end before the start, times before 2000 or more
//!   than a day after the record was normalized.
//! - **Oversize**: a record longer than [`Limits::max_record_bytes`] is rejected before parsing.

pub mod edr;
#[cfg(test)]
mod fixture_tests;
#[cfg(test)]
mod fuzz_tests;
pub mod mdm;
pub mod proxy;

use crate::model::{
    DeadLetterReason, DeviceContext, DeviceEvent, EpochMillis, NetworkSession, Platform,
};
use crate::schema::Contract;

/// Header that supplies the device id when a record does not carry one.
pub const DEVICE_HEADER: &str = "offport.device_id";

/// One raw record as the service consumed it.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// Source topic.
    pub topic: &'a str,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Key bytes.
    pub key: Option<&'a [u8]>,
    /// Value bytes.
    pub value: Option<&'a [u8]>,
    /// Headers, in order.
    pub headers: &'a [(String, Option<Vec<u8>>)],
    /// Kafka timestamp.
    pub timestamp: Option<EpochMillis>,
}

impl<'a> RawRecord<'a> {
    /// A record with only a value (no key, headers or timestamp).
    pub fn new(topic: &'a str, partition: i32, offset: i64, value: &'a [u8]) -> Self {
        Self {
            topic,
            partition,
            offset,
            key: None,
            value: Some(value),
            headers: &[],
            timestamp: None,
        }
    }

    /// The device id the record supplies outside its body: the [`DEVICE_HEADER`] header, else
    /// the key.
    pub fn outside_device(&self) -> Option<&'a str> {
        self.header(DEVICE_HEADER).or_else(|| self.key_text())
    }

    /// `topic/partition@offset`, the `source_ref` of what this record becomes.
    pub fn source_ref(&self) -> String {
        let mut numbers = itoa::Buffer::new();
        let mut text = String::with_capacity(self.topic.len() + 24);
        text.push_str(self.topic);
        text.push('/');
        text.push_str(numbers.format(self.partition));
        text.push('@');
        text.push_str(numbers.format(self.offset));
        text
    }

    /// The last header named `name`, as UTF-8 text.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| std::str::from_utf8(value.as_deref()?).ok())
    }

    /// The record key as UTF-8 text, when it is some.
    pub fn key_text(&self) -> Option<&'a str> {
        std::str::from_utf8(self.key?)
            .ok()
            .filter(|k| !k.is_empty())
    }
}

/// Why a record was not normalized.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// Machine-readable reason.
    pub reason: DeadLetterReason,
    /// What is wrong, for a human: the field, the value and why.
    pub message: String,
}

impl Rejection {
    /// A rejection for `reason` with `message`.
    pub fn new(reason: DeadLetterReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    /// The record could not be parsed.
    pub fn unparseable(message: impl Into<String>) -> Self {
        Self::new(DeadLetterReason::Unparseable, message)
    }

    /// A value is present but cannot be true.
    pub fn impossible(message: impl Into<String>) -> Self {
        Self::new(DeadLetterReason::ImpossibleValue, message)
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.reason, self.message)
    }
}

/// A normalized record, ready for its topic.
#[derive(Debug, Clone, PartialEq)]
// Records are produced straight away; boxing would only add an allocation per record.
#[allow(clippy::large_enum_variant)]
pub enum Normalized {
    /// For the normalized sessions topic.
    Session(NetworkSession),
    /// For the normalized device-events topic.
    Event(DeviceEvent),
    /// For the normalized device-context topic.
    Context(DeviceContext),
}

impl Normalized {
    /// The device id: the record key on Kafka.
    pub fn device_id(&self) -> &str {
        match self {
            Normalized::Session(s) => &s.device_id,
            Normalized::Event(e) => &e.device_id,
            Normalized::Context(c) => &c.device_id,
        }
    }

    /// The event time the joiner orders the record by: a session's start, an event's or
    /// report's time.
    pub fn event_time(&self) -> EpochMillis {
        match self {
            Normalized::Session(s) => s.start_time,
            Normalized::Event(e) => e.event_time,
            Normalized::Context(c) => c.event_time,
        }
    }

    /// The device id, to change.
    fn device_id_mut(&mut self) -> &mut String {
        match self {
            Normalized::Session(s) => &mut s.device_id,
            Normalized::Event(e) => &mut e.device_id,
            Normalized::Context(c) => &mut c.device_id,
        }
    }

    /// The Avro contract of the record.
    pub fn contract(&self) -> Contract {
        match self {
            Normalized::Session(_) => Contract::NetworkSession,
            Normalized::Event(_) => Contract::DeviceEvent,
            Normalized::Context(_) => Contract::DeviceContext,
        }
    }
}

/// Bounds on input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest raw record accepted.
    pub max_record_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_record_bytes: 256 * 1024,
        }
    }
}

/// A normalizer of one source: raw records in, normalized records or a rejection out.
pub trait Normalizer {
    /// Normalizes one record. `ingest_time` is the wall-clock time the service read it; it is
    /// the only clock the core sees.
    fn normalize(
        &mut self,
        record: &RawRecord<'_>,
        ingest_time: EpochMillis,
    ) -> Result<Vec<Normalized>, Rejection>;

    /// The smallest offset of `topic/partition` whose record the normalizer still holds (a
    /// stateful join waiting for the rest of a flow). The pipeline commits no further than it,
    /// so a restart reads the held records again. Stateless normalizers hold nothing.
    fn held_from(&self, _topic: &str, _partition: i32) -> Option<i64> {
        None
    }

    /// Drops whatever is held from `topic/partition`: the partition was revoked, or the
    /// pipeline rewinds it and will read those records again.
    fn forget(&mut self, _topic: &str, _partition: i32) {}
}

/// The records with their device ids in canonical form: ASCII lower case. Device ids are
/// compared case-insensitively, because the sources disagree on case for the same device (a
/// MicroMDM webhook carries an iOS UDID in upper case, EDR agents and inventories often in
/// lower case): every normalizer writes them in lower case, so one device's records meet in one
/// join task and one finding.
pub fn canonical_device_ids(
    records: Result<Vec<Normalized>, Rejection>,
) -> Result<Vec<Normalized>, Rejection> {
    let mut records = records?;
    for record in &mut records {
        let id = record.device_id_mut();
        if id.bytes().any(|b| b.is_ascii_uppercase()) {
            id.make_ascii_lowercase();
        }
    }
    Ok(records)
}

/// Text trimmed, or `None` when nothing is left.
pub fn trimmed(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// An id from the fields that identify a record (32 hex digits of SHA-256 over them): the same
/// in every replay, so a source without ids still gets stable ones.
pub fn derived_id(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0x1f]);
    }
    // The first 32 hex digits: the first 16 bytes of the digest.
    let digest = hasher.finalize();
    let mut text = [0_u8; 32];
    match hex::encode_to_slice(digest.get(..16).unwrap_or_default(), &mut text) {
        Ok(()) => String::from_utf8_lossy(&text).into_owned(),
        Err(_) => hex::encode(digest.get(..16).unwrap_or_default()),
    }
}

/// Earliest believable event time: 2000-01-01T00:00:00Z.
pub const EARLIEST_TIME: EpochMillis = 946_684_800_000;
/// How far past the ingest time an event time may be (clock skew of devices and sensors).
pub const MAX_FUTURE_MS: i64 = 24 * 3_600_000;

/// Epoch milliseconds from a JSON number: below 10^11 it is seconds, otherwise milliseconds.
pub fn time_from_number(value: f64) -> Option<EpochMillis> {
    if !value.is_finite() {
        return None;
    }
    let millis = if value.abs() < 1e11 {
        value * 1_000.0
    } else {
        value
    };
    // Within i64 range by the check; the cast then only drops sub-millisecond digits.
    (millis.abs() < 9.0e18).then(|| millis.round() as EpochMillis)
}

/// Epoch milliseconds from text: RFC 3339 (with or without `T`, any offset) or a number.
pub fn time_from_text(text: &str) -> Option<EpochMillis> {
    let text = text.trim();
    if let Ok(number) = text.parse::<f64>() {
        return time_from_number(number);
    }
    // A `+0000` offset is never RFC 3339 (its offsets have a colon): rewritten first, the text
    // is parsed once.
    let mut fixed = [0_u8; 64];
    match fix_offset(text, &mut fixed) {
        Some(fixed) => crate::model::parse_rfc3339_millis(fixed).ok(),
        None => crate::model::parse_rfc3339_millis(text).ok(),
    }
}

/// Rewrites a `+0000`-style offset (Suricata, strftime `%z`) as `+00:00`, in `buffer` (a time
/// is short; a text too long for it is not rewritten and fails to parse as it would anyway).
fn fix_offset<'b>(text: &str, buffer: &'b mut [u8; 64]) -> Option<&'b str> {
    let split = text.len().checked_sub(5)?;
    let (head, zone) = (text.get(..split)?, text.get(split..)?);
    let bytes = zone.as_bytes();
    let signed = matches!(bytes.first(), Some(b'+' | b'-'));
    let digits = bytes
        .get(1..)
        .is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if !(signed && digits) {
        return None;
    }
    let (hours, minutes) = (bytes.get(..3)?, bytes.get(3..)?);
    let length = text.len() + 1;
    let out = buffer.get_mut(..length)?;
    let (out_head, out_zone) = out.split_at_mut(split);
    out_head.copy_from_slice(head.as_bytes());
    let (out_hours, out_rest) = out_zone.split_at_mut(3);
    out_hours.copy_from_slice(hours);
    let (colon, out_minutes) = out_rest.split_at_mut(1);
    colon.copy_from_slice(b":");
    out_minutes.copy_from_slice(minutes);
    std::str::from_utf8(buffer.get(..length)?).ok()
}

/// A time field as a sensor's JSON writes it (epoch seconds or milliseconds as a number, or
/// text), read straight into epoch milliseconds: no JSON value in between, and no copy of a
/// text that needs no unescaping. `null` is no field (as an `Option`).
#[derive(Debug, Clone, PartialEq)]
pub enum JsonTime {
    /// The time.
    At(EpochMillis),
    /// Not a time: the field as JSON writes it, for the rejection.
    Invalid(String),
}

impl<'de> serde::Deserialize<'de> for JsonTime {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = JsonTime;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a time")
            }
            fn visit_f64<E>(self, v: f64) -> Result<JsonTime, E> {
                Ok(time_from_number(v).map_or_else(
                    || JsonTime::Invalid(serde_json::Value::from(v).to_string()),
                    JsonTime::At,
                ))
            }
            fn visit_i64<E>(self, v: i64) -> Result<JsonTime, E> {
                Ok(time_from_number(v as f64)
                    .map_or_else(|| JsonTime::Invalid(v.to_string()), JsonTime::At))
            }
            fn visit_u64<E>(self, v: u64) -> Result<JsonTime, E> {
                Ok(time_from_number(v as f64)
                    .map_or_else(|| JsonTime::Invalid(v.to_string()), JsonTime::At))
            }
            fn visit_str<E>(self, v: &str) -> Result<JsonTime, E> {
                Ok(time_from_text(v).map_or_else(
                    || JsonTime::Invalid(serde_json::Value::from(v).to_string()),
                    JsonTime::At,
                ))
            }
            fn visit_bool<E>(self, v: bool) -> Result<JsonTime, E> {
                Ok(JsonTime::Invalid(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<JsonTime, A::Error> {
                let value = <serde_json::Value as serde::Deserialize>::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(JsonTime::Invalid(value.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<JsonTime, A::Error> {
                let value = <serde_json::Value as serde::Deserialize>::deserialize(
                    serde::de::value::SeqAccessDeserializer::new(seq),
                )?;
                Ok(JsonTime::Invalid(value.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A JSON field read as text whatever its JSON type: a string as it is, a number as JSON writes
/// it, anything else (`true`, an object) as none. For fields sensors write either way (a flow id,
/// a protocol name or number), without a JSON value in between.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LenientText(pub Option<String>);

impl<'de> serde::Deserialize<'de> for LenientText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = LenientText;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a text or a number")
            }
            fn visit_str<E>(self, v: &str) -> Result<LenientText, E> {
                Ok(LenientText(Some(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<LenientText, E> {
                Ok(LenientText(Some(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<LenientText, E> {
                Ok(LenientText(Some(itoa::Buffer::new().format(v).to_string())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<LenientText, E> {
                Ok(LenientText(Some(itoa::Buffer::new().format(v).to_string())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<LenientText, E> {
                Ok(LenientText(Some(serde_json::Value::from(v).to_string())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<LenientText, E> {
                Ok(LenientText(None))
            }
            fn visit_unit<E>(self) -> Result<LenientText, E> {
                Ok(LenientText(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<LenientText, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(LenientText(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<LenientText, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(LenientText(None))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Epoch milliseconds from a JSON value (number or text).
pub fn time_from_json(value: &serde_json::Value) -> Option<EpochMillis> {
    match value {
        serde_json::Value::Number(n) => n.as_f64().and_then(time_from_number),
        serde_json::Value::String(s) => time_from_text(s),
        _ => None,
    }
}

/// Checks an event time against [`EARLIEST_TIME`] and [`MAX_FUTURE_MS`].
pub fn check_time(
    field: &str,
    time: EpochMillis,
    ingest_time: EpochMillis,
) -> Result<(), Rejection> {
    if time < EARLIEST_TIME {
        return Err(Rejection::impossible(format!(
            "{field}={time} is before 2000-01-01"
        )));
    }
    if time > ingest_time.saturating_add(MAX_FUTURE_MS) {
        return Err(Rejection::impossible(format!(
            "{field}={time} is more than a day after the record was read ({ingest_time})"
        )));
    }
    Ok(())
}

/// A port number, 0..=65535.
pub fn check_port(field: &str, port: i64) -> Result<i32, Rejection> {
    u16::try_from(port)
        .map(i32::from)
        .map_err(|_| Rejection::impossible(format!("{field}={port} is not a port (0-65535)")))
}

/// A count that cannot be negative.
pub fn check_count(field: &str, count: i64) -> Result<i64, Rejection> {
    if count < 0 {
        return Err(Rejection::impossible(format!(
            "{field}={count} is negative"
        )));
    }
    Ok(count)
}

/// A device id: present, not blank, at most 256 bytes.
pub fn check_device_id(device_id: Option<&str>) -> Result<String, Rejection> {
    let id = device_id.map(str::trim).unwrap_or_default();
    if id.is_empty() {
        return Err(Rejection::new(
            DeadLetterReason::MissingDeviceId,
            "no device id: not in the record, its key, an `offport.device_id` header or the \
             source's device mapping",
        ));
    }
    if id.len() > 256 {
        return Err(Rejection::impossible(format!(
            "device id of {} bytes is longer than 256",
            id.len()
        )));
    }
    Ok(id.to_string())
}

/// Platform from the usual spellings (`ANDROID`, `android`, `iOS`, `ios`, `iPadOS`).
pub fn platform_from(text: Option<&str>) -> Platform {
    match text.map(|t| t.trim().to_ascii_lowercase()).as_deref() {
        Some("android") => Platform::Android,
        Some("ios" | "ipados") => Platform::Ios,
        _ => Platform::Unknown,
    }
}

/// The platform a record names: absent or `unknown` is [`Platform::Unknown`]; any other
/// spelling than those of [`platform_from`] is rejected, since a device of another platform
/// (`WINDOWS`) is outside what the analytics judge and would otherwise pass as unknown.
pub fn check_platform(text: Option<&str>) -> Result<Platform, Rejection> {
    match text.map(str::trim) {
        None | Some("") => Ok(Platform::Unknown),
        Some(t) if t.eq_ignore_ascii_case("unknown") => Ok(Platform::Unknown),
        Some(t) => match platform_from(Some(t)) {
            Platform::Unknown => Err(Rejection::impossible(format!(
                "platform={t:?} is not android, ios or ipados"
            ))),
            known => Ok(known),
        },
    }
}

/// The record's value, checked against the size limit, present and not blank.
pub fn value_of<'a>(record: &RawRecord<'a>, limits: &Limits) -> Result<&'a [u8], Rejection> {
    let value = record
        .value
        .ok_or_else(|| Rejection::unparseable("the record has no value (a tombstone)"))?;
    if value.iter().all(u8::is_ascii_whitespace) {
        return Err(Rejection::unparseable(if value.is_empty() {
            "the record's value is empty".to_string()
        } else {
            format!("the record's value is {} bytes of whitespace", value.len())
        }));
    }
    if value.len() > limits.max_record_bytes {
        return Err(Rejection::new(
            DeadLetterReason::Oversize,
            format!(
                "{} bytes is over the {}-byte limit (normalize.max_record_bytes)",
                value.len(),
                limits.max_record_bytes
            ),
        ));
    }
    Ok(value)
}

thread_local! {
    /// csv-core's reader: its state machine takes longer to build than a row takes to parse,
    /// so it is built once per thread and reset for each record.
    static CSV: std::cell::RefCell<csv_core::Reader> =
        std::cell::RefCell::new(csv_core::ReaderBuilder::new().build());
}

/// The CSV rows of one record, each field trimmed (a row's fields in any count); an error
/// names its line.
pub(crate) fn csv_rows(bytes: &[u8]) -> Result<Vec<csv::StringRecord>, Rejection> {
    use csv_core::ReadRecordResult;
    CSV.with(|cell| {
        let mut reader = cell.borrow_mut();
        reader.reset();
        let mut rows = Vec::new();
        // Unquoting only shrinks a field: the input's size always holds a record's output.
        let mut output = vec![0_u8; bytes.len() + 1];
        let mut ends = vec![0_usize; 32];
        let (mut input, mut written, mut fields) = (bytes, 0, 0);
        loop {
            let (result, read, wrote, ended) = reader.read_record(
                input,
                output.get_mut(written..).unwrap_or_default(),
                ends.get_mut(fields..).unwrap_or_default(),
            );
            input = input.get(read..).unwrap_or_default();
            written += wrote;
            fields += ended;
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => output.resize(output.len() * 2 + 16, 0),
                ReadRecordResult::OutputEndsFull => ends.resize(ends.len() * 2, 0),
                ReadRecordResult::Record => {
                    let line = rows.len() + 1;
                    let record = output.get(..written).unwrap_or_default();
                    let mut start = 0;
                    let mut row = csv::StringRecord::with_capacity(written, fields);
                    for &end in ends.get(..fields).unwrap_or_default() {
                        let field = std::str::from_utf8(record.get(start..end).unwrap_or_default())
                            .map_err(|e| {
                                Rejection::unparseable(format!("line {line}: not CSV: {e}"))
                            })?;
                        row.push_field(field.trim());
                        start = end;
                    }
                    rows.push(row);
                    (written, fields) = (0, 0);
                }
                ReadRecordResult::End => return Ok(rows),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_the_first_32_hex_digits_of_sha256_over_the_parts() {
        // echo -n $'dev-1\x1f10.0.0.1\x1f' | sha256sum: ids from earlier releases stay valid.
        assert_eq!(
            derived_id(&["dev-1", "10.0.0.1"]),
            "ffd81a6d4a3bd3c41021eb8d107ed0a9"
        );
    }

    #[test]
    fn numbers_below_ten_to_the_eleven_are_seconds() {
        assert_eq!(time_from_number(1_763_632_800.5), Some(1_763_632_800_500));
        assert_eq!(
            time_from_number(1_763_632_800_500.0),
            Some(1_763_632_800_500)
        );
        assert_eq!(time_from_number(f64::NAN), None);
        assert_eq!(time_from_number(1e300), None);
    }

    #[test]
    fn text_times_accept_rfc3339_suricata_offsets_and_numbers() {
        let expected = Some(1_763_632_800_123);
        assert_eq!(time_from_text("2025-11-20T10:00:00.123Z"), expected);
        assert_eq!(time_from_text("2025-11-20T10:00:00.123+00:00"), expected);
        assert_eq!(time_from_text("2025-11-20T11:00:00.123+01:00"), expected);
        assert_eq!(time_from_text("2025-11-20T10:00:00.123456+0000"), expected);
        assert_eq!(time_from_text("1763632800.123"), expected);
        assert_eq!(time_from_text("yesterday"), None);
        assert_eq!(time_from_text(""), None);
        // Offsets other than zero, both signs, rewritten in place.
        assert_eq!(time_from_text("2025-11-20T11:30:00.123+0130"), expected);
        assert_eq!(time_from_text("2025-11-20T05:00:00.123-0500"), expected);
        assert_eq!(
            time_from_text(" 2025-11-20T10:00:00.123456+0000 "),
            expected
        );
        // Longer than any time: not rewritten, and not a time.
        let long = format!("2025-11-20T10:00:00.{}+0000", "1".repeat(60));
        assert_eq!(time_from_text(&long), None);
    }

    #[test]
    fn json_times_and_lenient_texts_read_without_a_json_value() {
        let time = |json: &str| serde_json::from_str::<Option<JsonTime>>(json).unwrap();
        let expected = Some(JsonTime::At(1_763_632_800_123));
        assert_eq!(time("1763632800.123"), expected);
        assert_eq!(time("1763632800123"), expected);
        assert_eq!(time("\"2025-11-20T10:00:00.123456+0000\""), expected);
        assert_eq!(time("null"), None);
        // What is not a time keeps its JSON text for the rejection, as a JSON value prints it.
        for json in [
            "\"yesterday\"",
            "true",
            "{\"a\":1}",
            "[1,2]",
            "1e300",
            "\"a\\\"b\"",
        ] {
            let value: serde_json::Value = serde_json::from_str(json).unwrap();
            assert_eq!(
                time(json),
                Some(JsonTime::Invalid(value.to_string())),
                "{json}"
            );
            // The same from a JSON value (the path of a line that was parsed as a value first).
            let from_value: Option<JsonTime> = serde_json::from_value(value.clone()).unwrap();
            assert_eq!(
                from_value,
                Some(JsonTime::Invalid(value.to_string())),
                "{json}"
            );
        }

        let text = |json: &str| serde_json::from_str::<Option<LenientText>>(json).unwrap();
        assert_eq!(text("\" 17 \""), Some(LenientText(Some(" 17 ".into()))));
        assert_eq!(
            text("1000000000001"),
            Some(LenientText(Some("1000000000001".into())))
        );
        assert_eq!(text("-6"), Some(LenientText(Some("-6".into()))));
        assert_eq!(text("1.5"), Some(LenientText(Some("1.5".into()))));
        assert_eq!(text("null"), None);
        for json in ["true", "{\"a\":[1]}", "[{}]"] {
            assert_eq!(text(json), Some(LenientText(None)), "{json}");
        }
        // Inside a record, an ignored object is read past.
        #[derive(serde::Deserialize)]
        struct Record {
            id: Option<LenientText>,
            next: i64,
        }
        let record: Record = serde_json::from_str("{\"id\":{\"x\":[1,{}]},\"next\":7}").unwrap();
        assert_eq!((record.id, record.next), (Some(LenientText(None)), 7));
    }

    #[test]
    fn source_format_names_are_their_debug_names() {
        use crate::model::SourceFormat::*;
        for format in [
            OffportJson,
            PcapdroidCsv,
            ZeekJson,
            SuricataEve,
            AndroidUsageStats,
            MicromdmWebhook,
            AndroidManagementApi,
            Unknown,
            OffportInventory,
        ] {
            assert_eq!(format.name(), format!("{format:?}"));
        }
    }

    #[test]
    fn source_refs_are_topic_partition_and_offset() {
        let record = RawRecord::new("offport.raw.proxy", 2, 9_007_199_254_740_993, b"{}");
        assert_eq!(record.source_ref(), "offport.raw.proxy/2@9007199254740993");
        let record = RawRecord::new("t", -1, -1, b"{}");
        assert_eq!(record.source_ref(), "t/-1@-1");
    }

    #[test]
    fn impossible_values_are_named() {
        assert_eq!(check_port("dst_port", 443), Ok(443));
        let err = check_port("dst_port", 70_000).unwrap_err();
        assert_eq!(err.reason, DeadLetterReason::ImpossibleValue);
        assert_eq!(err.message, "dst_port=70000 is not a port (0-65535)");
        assert!(check_count("bytes_out", -1).is_err());
        assert!(check_time("start_time", 5, EARLIEST_TIME * 2).is_err());
        let now = 1_763_632_800_000;
        assert!(check_time("start_time", now + MAX_FUTURE_MS + 1, now).is_err());
        assert!(check_time("start_time", now, now).is_ok());
        assert_eq!(
            check_device_id(Some("  ")).unwrap_err().reason,
            DeadLetterReason::MissingDeviceId
        );
        assert_eq!(check_device_id(Some(" dev-1 ")).unwrap(), "dev-1");
    }
}

#[cfg(test)]
mod device_id_tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;

    fn first(normalizer: &mut dyn Normalizer, value: &str) -> Normalized {
        let record = RawRecord::new("t", 0, 0, value.as_bytes());
        normalizer
            .normalize(&record, 1_795_168_900_000)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn every_normalizer_writes_device_ids_in_lower_case_so_one_device_meets_itself() {
        let limits = Limits::default();
        let session = first(
            &mut proxy::ProxyNormalizer::new(proxy::ProxyFormat::Auto, limits),
            r#"{"session_id":"s1","device_id":"iPhone-ABC","platform":"IOS","start_time":1795168800000,"dst_ip":"203.0.113.5","dst_port":8443,"transport":"TCP"}"#,
        );
        let event = first(
            &mut edr::EdrNormalizer::new(limits),
            r#"{"device_id":"IPHONE-abc","platform":"IOS","kind":"DEVICE_LOCKED","event_time":1795168800000}"#,
        );
        let context = first(
            &mut mdm::MdmNormalizer::new(limits),
            r#"{"device_id":"iphone-ABC","platform":"IOS","event_time":1795168800000,"apps":[]}"#,
        );
        for record in [&session, &event, &context] {
            assert_eq!(record.device_id(), "iphone-abc", "{record:?}");
        }
    }

    #[test]
    fn a_time_that_is_not_one_is_rejected_naming_its_field_and_value() {
        let limits = Limits::default();
        let proxy = || proxy::ProxyNormalizer::new(proxy::ProxyFormat::Auto, limits);
        let cases: Vec<(Box<dyn Normalizer>, &str, &str)> = vec![
            (
                Box::new(proxy()),
                r#"{"timestamp":"yesterday","flow_id":7,"event_type":"flow","src_ip":"10.8.0.2","src_port":5000,"dest_ip":"203.0.113.5","dest_port":443,"proto":"TCP","flow":{"start":"2026-11-20T10:00:00.000000+0000","end":"2026-11-20T10:00:02.000000+0000","bytes_toserver":1,"bytes_toclient":1}}"#,
                r#"timestamp="yesterday" is not an EVE timestamp"#,
            ),
            (
                Box::new(proxy()),
                r#"{"ts":{"s":1},"uid":"C1","id.orig_h":"10.8.0.2","id.orig_p":5000,"id.resp_h":"203.0.113.5","id.resp_p":443,"proto":"tcp","conn_state":"SF"}"#,
                r#"ts={"s":1} is neither epoch seconds nor ISO 8601"#,
            ),
            (
                Box::new(edr::EdrNormalizer::new(limits)),
                r#"{"device_id":"d1","platform":"IOS","kind":"DEVICE_LOCKED","event_time":true}"#,
                "event_time=true is neither RFC 3339 text nor epoch seconds/milliseconds",
            ),
            (
                Box::new(mdm::MdmNormalizer::new(limits)),
                r#"{"device_id":"d1","platform":"IOS","event_time":"soon","apps":[]}"#,
                r#"event_time="soon" is neither RFC 3339 text nor epoch seconds/milliseconds"#,
            ),
        ];
        for (mut normalizer, value, message) in cases {
            let record = RawRecord::new("t", 0, 0, value.as_bytes());
            let rejection = normalizer
                .normalize(&record, 1_795_168_900_000)
                .unwrap_err();
            assert_eq!(rejection.reason, DeadLetterReason::Unparseable, "{value}");
            assert_eq!(rejection.message, message, "{value}");
        }
    }
}
