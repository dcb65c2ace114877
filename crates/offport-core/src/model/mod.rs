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

/// [`epoch_millis_or_rfc3339`] for an optional field (absent or `null`: `None`).
pub(crate) fn optional_epoch_millis_or_rfc3339<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<EpochMillis>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "epoch_millis_or_rfc3339")] EpochMillis);
    Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(at)| at))
}

/// Parses an RFC 3339 time into epoch milliseconds, honouring its offset. A space may stand for
/// the `T`, and a time without an offset is taken as UTC.
pub fn parse_rfc3339_millis(text: &str) -> Result<EpochMillis, TimeError> {
    use time::format_description::well_known::Rfc3339;
    let trimmed = text.trim();
    let normalized = if trimmed.as_bytes().get(10) == Some(&b' ') {
        let mut spaced = trimmed.to_string();
        spaced.replace_range(10..11, "T");
        std::borrow::Cow::Owned(spaced)
    } else {
        std::borrow::Cow::Borrowed(trimmed)
    };
    let parsed = time::OffsetDateTime::parse(&normalized, &Rfc3339)
        .or_else(|first| {
            time::OffsetDateTime::parse(&format!("{normalized}Z"), &Rfc3339).map_err(|_| first)
        })
        .map_err(|e| TimeError::NotRfc3339 {
            text: text.to_string(),
            source: e,
        })?;
    // Whole seconds (floored) and the milliseconds within them: the milliseconds floored,
    // without the 128-bit division of the nanoseconds.
    parsed
        .unix_timestamp()
        .checked_mul(1_000)
        .and_then(|ms| ms.checked_add(i64::from(parsed.millisecond())))
        .ok_or_else(|| TimeError::OutOfRange(text.to_string()))
}

/// `2026-12-07T03:00:00Z`: epoch milliseconds as RFC 3339 in UTC (seconds; milliseconds when
/// not whole); the number itself when out of range.
pub fn format_rfc3339_millis(at: EpochMillis) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| at.to_string())
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

mod baseline;
mod dead_letter;
mod device;
mod enriched;
mod finding;
mod session;

pub use baseline::*;
pub use dead_letter::*;
pub use device::*;
pub use enriched::*;
pub use finding::*;
pub use session::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Contract;

    #[test]
    fn all_dead_letter_reasons_are_in_declaration_order() {
        for (index, reason) in DeadLetterReason::ALL.into_iter().enumerate() {
            // ALL in declaration order, each reason once.
            let expected = match reason {
                DeadLetterReason::Unparseable => 0,
                DeadLetterReason::UnknownFormat => 1,
                DeadLetterReason::MissingDeviceId => 2,
                DeadLetterReason::ImpossibleValue => 3,
                DeadLetterReason::Oversize => 4,
                DeadLetterReason::SchemaMismatch => 5,
                DeadLetterReason::InvalidBaseline => 6,
                DeadLetterReason::Other => 7,
            };
            assert_eq!(index, expected, "{reason:?}");
        }
    }

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
