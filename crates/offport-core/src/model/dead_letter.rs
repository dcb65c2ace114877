//! Dead letters: a rejected record with where it came from and why, cut to fit.

use super::*;

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
    /// Every reason, in declaration order.
    pub const ALL: [DeadLetterReason; 8] = [
        DeadLetterReason::Unparseable,
        DeadLetterReason::UnknownFormat,
        DeadLetterReason::MissingDeviceId,
        DeadLetterReason::ImpossibleValue,
        DeadLetterReason::Oversize,
        DeadLetterReason::SchemaMismatch,
        DeadLetterReason::InvalidBaseline,
        DeadLetterReason::Other,
    ];

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
