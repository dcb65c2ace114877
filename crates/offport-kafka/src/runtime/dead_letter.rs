//! Dead letters: a rejected record with why, in the `DeadLetter` envelope or Kafka Connect's
//! layout (`pipeline.dead_letter_format`).

use offport_core::model::{DeadLetter, EpochMillis, RecordHeader};
use offport_core::normalize::{RawRecord, Rejection};
use offport_core::schema::Contract;
use rdkafka::message::{Headers, Message};

use crate::metrics::PipelineMetrics;
use crate::registry::RegistryCodec;
use crate::shutdown::Shutdown;

use super::*;

/// Longest rejection message a log line carries (the dead letter keeps up to
/// [`offport_core::model::DEAD_LETTER_MESSAGE_BYTES`]).
pub(crate) const LOG_MESSAGE_BYTES: usize = 512;

/// Cuts a message quoting a bad value to a log line's length, at a character boundary.
pub(crate) fn cut_for_log(text: &mut String) {
    if text.len() > LOG_MESSAGE_BYTES {
        let mut end = LOG_MESSAGE_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(" [cut]");
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn dead_letter(
    codec: &RegistryCodec,
    topic: &str,
    raw: &RawRecord<'_>,
    rejection: &Rejection,
    options: &PipelineOptions,
    metrics: &PipelineMetrics,
    shutdown: &Shutdown,
    now: EpochMillis,
) -> Result<Outgoing, PipelineError> {
    let mut letter = DeadLetter {
        original_key: raw.key.map(<[u8]>::to_vec),
        original_value: raw.value.map(<[u8]>::to_vec),
        original_headers: raw
            .headers
            .iter()
            .map(|(key, value)| RecordHeader {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        source_topic: raw.topic.to_string(),
        source_partition: raw.partition,
        source_offset: raw.offset,
        source_timestamp: raw.timestamp,
        stage: options.stage.to_string(),
        reason: rejection.reason,
        message: rejection.message.clone(),
        failed_time: now,
        original_value_size: None,
        original_value_sha256: None,
        truncated: false,
    };
    let offport_headers = |message: &str| {
        vec![
            (
                "offport.errors.topic".to_string(),
                raw.topic.as_bytes().to_vec(),
            ),
            (
                "offport.errors.partition".to_string(),
                raw.partition.to_string().into_bytes(),
            ),
            (
                "offport.errors.offset".to_string(),
                raw.offset.to_string().into_bytes(),
            ),
            (
                "offport.errors.stage".to_string(),
                options.stage.as_bytes().to_vec(),
            ),
            (
                "offport.errors.reason".to_string(),
                rejection.reason.code().as_bytes().to_vec(),
            ),
            (
                "offport.errors.message".to_string(),
                message.as_bytes().to_vec(),
            ),
        ]
    };
    if options.dead_letter_format == crate::settings::DeadLetterFormat::Connect {
        // Kafka Connect's layout: the record as it was (a header without a value is written
        // with an empty one), then where it came from and why.
        let mut headers: Vec<(String, Vec<u8>)> = raw
            .headers
            .iter()
            .map(|(key, value)| (key.clone(), value.clone().unwrap_or_default()))
            .collect();
        headers.extend(connect_headers(raw, options.stage, rejection));
        headers.extend(offport_headers(&rejection.message));
        return Ok(Outgoing {
            topic: topic.to_string(),
            partition: None,
            key: raw.key.map(<[u8]>::to_vec),
            value: raw.value.map(<[u8]>::to_vec),
            headers,
        });
    }
    letter.fit_within(options.dead_letter_max_bytes);
    let value = retrying(options, metrics, shutdown, "dead-letter encode", || {
        codec.encode_value(topic, Contract::DeadLetter, &letter)
    })
    .await?;
    let headers = offport_headers(&letter.message);
    Ok(Outgoing {
        topic: topic.to_string(),
        partition: None,
        key: raw.key.map(<[u8]>::to_vec),
        value: Some(value),
        headers,
    })
}

/// Kafka Connect's error headers (`errors.deadletterqueue.context.headers.enable`) for a record
/// `stage` rejected: `__connect.errors.stage` is `VALUE_CONVERTER` for a value that could not
/// be read as its format, `TRANSFORMATION` for one read but refused; the exception class names
/// the rejection reason.
pub fn connect_headers(
    raw: &RawRecord<'_>,
    stage: &str,
    rejection: &Rejection,
) -> Vec<(String, Vec<u8>)> {
    use offport_core::model::DeadLetterReason;
    let connect_stage = match rejection.reason {
        DeadLetterReason::Unparseable | DeadLetterReason::UnknownFormat => "VALUE_CONVERTER",
        _ => "TRANSFORMATION",
    };
    let reason = rejection.reason.code();
    [
        ("__connect.errors.topic", raw.topic.to_string()),
        ("__connect.errors.partition", raw.partition.to_string()),
        ("__connect.errors.offset", raw.offset.to_string()),
        (
            "__connect.errors.connector.name",
            format!("offport-{stage}"),
        ),
        ("__connect.errors.task.id", raw.partition.to_string()),
        ("__connect.errors.stage", connect_stage.to_string()),
        ("__connect.errors.class.name", format!("offport.{stage}")),
        (
            "__connect.errors.exception.class.name",
            format!("offport.DeadLetterReason.{reason}"),
        ),
        (
            "__connect.errors.exception.message",
            rejection.message.clone(),
        ),
        (
            "__connect.errors.exception.stacktrace",
            format!("{reason}: {}", rejection.message),
        ),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value.into_bytes()))
    .collect()
}

/// A message's headers, owned (names as text, values as bytes), in order.
pub fn owned_headers(message: &impl Message) -> Vec<(String, Option<Vec<u8>>)> {
    message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default()
}

/// The [`RawRecord`] of a Kafka message whose headers `headers` holds ([`owned_headers`]): what
/// the normalizers read and a dead letter keeps.
pub fn raw_record<'m>(
    message: &'m impl Message,
    headers: &'m [(String, Option<Vec<u8>>)],
) -> RawRecord<'m> {
    RawRecord {
        topic: message.topic(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key(),
        value: message.payload(),
        headers,
        timestamp: message.timestamp().to_millis(),
    }
}
