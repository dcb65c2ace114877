//! The loop's own registry work: writer schemas fetched, outputs encoded, dead letters made.

use offport_core::normalize::Rejection;
use rdkafka::message::{BorrowedMessage, Message};

use crate::baselines::Rejected;
use crate::runtime::{
    cut_for_log, dead_letter, owned_headers, raw_record, retrying, wall_clock_millis, Outgoing,
    PipelineError,
};

use super::*;

impl<S: StatefulStage> Runner<'_, S> {
    /// Fetches the writer schema of `message` unless the batch has seen its id; a schema that
    /// cannot be fetched is kept with why, for the dead letters of its records. Transient
    /// registry failures are retried; only shutdown interrupts them.
    pub(super) async fn fetch_schema(
        &self,
        message: &BorrowedMessage<'_>,
        schemas: &mut BatchSchemas,
    ) -> Result<(), PipelineError> {
        // A record without a value or the wire format's header is dead-lettered when decoded.
        let Some(Ok(id)) = message.payload().map(crate::registry::schema_id) else {
            return Ok(());
        };
        if schemas.known.contains(&id) || schemas.failed.contains_key(&id) {
            return Ok(());
        }
        if !self.codec.knows(id) {
            let fetched = retrying(
                self.options,
                self.metrics,
                self.shutdown,
                "fetch schema",
                || async {
                    match self.codec.fetch_writer(id).await {
                        Ok(()) => Ok(Ok(())),
                        Err(error) if error.is_transient() => Err(error),
                        Err(error) => Ok(Err(error)),
                    }
                },
            )
            .await?;
            if let Err(error) = fetched {
                schemas.failed.insert(id, error.to_string());
                return Ok(());
            }
        }
        schemas.known.push(id);
        Ok(())
    }

    pub(super) async fn encode(&self, emit: Emit<S::Output>) -> Result<Outgoing, PipelineError> {
        let record = match emit {
            Emit::Avro {
                topic,
                key,
                contract,
                value,
            } => {
                let bytes = retrying(self.options, self.metrics, self.shutdown, "encode", || {
                    self.codec.encode_value(&topic, contract, &value)
                })
                .await?;
                keyed(topic, key, bytes)
            }
            Emit::Bytes { topic, key, value } => keyed(topic, key, value),
        };
        self.metrics.records_out.inc();
        Ok(record)
    }

    pub(super) async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        rejection: &Rejection,
        first_read: bool,
    ) -> Result<Outgoing, PipelineError> {
        if first_read {
            let mut text = rejection.message.clone();
            cut_for_log(&mut text);
            tracing::warn!(
                topic = message.topic(),
                partition = message.partition(),
                offset = message.offset(),
                reason = ?rejection.reason,
                message = %text,
                "record dead-lettered"
            );
            self.metrics.dead_letter(rejection.reason);
        }
        let headers = owned_headers(message);
        let raw = raw_record(message, &headers);
        dead_letter(
            self.codec,
            &self.dead_letter_topic,
            &raw,
            rejection,
            self.options,
            self.metrics,
            self.shutdown,
            wall_clock_millis(),
        )
        .await
    }

    pub(super) async fn baseline_dead_letter(
        &self,
        rejected: &Rejected,
    ) -> Result<Outgoing, PipelineError> {
        self.metrics.dead_letter(rejected.reason);
        let rejection = Rejection::new(rejected.reason, rejected.message.clone());
        let headers = owned_headers(&rejected.record);
        let raw = raw_record(&rejected.record, &headers);
        dead_letter(
            self.codec,
            &self.dead_letter_topic,
            &raw,
            &rejection,
            self.options,
            self.metrics,
            self.shutdown,
            wall_clock_millis(),
        )
        .await
    }
}
