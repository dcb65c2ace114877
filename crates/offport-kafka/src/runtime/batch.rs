//! Collecting a batch of records from the consumer, and counting a batch's records per
//! partition.

use std::time::{Duration, Instant};

use rdkafka::message::BorrowedMessage;

use crate::metrics::PipelineMetrics;
use crate::shutdown::Shutdown;

use super::*;

/// Per partition, the offset below which records were counted in the metrics. A handful of
/// partitions per instance: a scan beats hashing a key per record.
#[derive(Debug, Default, Clone)]
pub(crate) struct Counted(Vec<((String, i32), i64)>);

impl Counted {
    /// `true` when `offset` of the partition was read before.
    pub(crate) fn seen(&self, topic: &str, partition: i32, offset: i64) -> bool {
        self.0
            .iter()
            .any(|((t, p), below)| *p == partition && t == topic && offset < *below)
    }

    /// `true` the first time `offset` of the partition is read (reading it again after an
    /// abort or a rewind is not a new record); notes it as read.
    pub(crate) fn first_read(&mut self, topic: &str, partition: i32, offset: i64) -> bool {
        match self
            .0
            .iter_mut()
            .find(|((t, p), _)| *p == partition && t == topic)
        {
            Some((_, below)) if offset < *below => false,
            Some((_, below)) => {
                *below = offset + 1;
                true
            }
            None => {
                self.0.push(((topic.to_string(), partition), offset + 1));
                true
            }
        }
    }
}

/// Waits for the first record (or shutdown), then takes what arrives within the linger time.
///
/// The records stay in librdkafka's buffers (no copy) until the batch is dropped; two timers
/// per batch, none per record.
pub(crate) async fn collect_batch<'c>(
    consumer: &'c LagConsumer,
    options: &PipelineOptions,
    shutdown: &Shutdown,
    metrics: &PipelineMetrics,
) -> Result<Vec<BorrowedMessage<'c>>, PipelineError> {
    let mut batch = Vec::new();
    let first = tokio::select! {
        _ = shutdown.cancelled() => return Ok(batch),
        _ = tokio::time::sleep(options.first_record_wait) => return Ok(batch),
        received = consumer.recv() => received,
    };
    match first {
        Ok(message) => {
            metrics.first_read.get_or_init(Instant::now);
            batch.push(message);
        }
        Err(error) => {
            // Consumer errors are reported by librdkafka and retried internally; an
            // unreachable cluster is logged once per outage.
            if !metrics.health.kafka_error(&error, "consumer") {
                tracing::warn!(%error, "consumer error");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            return Ok(batch);
        }
    }
    let linger = tokio::time::sleep(options.batch_linger);
    tokio::pin!(linger);
    while batch.len() < options.batch_max {
        tokio::select! {
            biased;
            received = consumer.recv() => match received {
                Ok(message) => batch.push(message),
                Err(error) => {
                    if !metrics.health.kafka_error(&error, "consumer") {
                        tracing::warn!(%error, "consumer error");
                    }
                    break;
                }
            },
            _ = &mut linger => break,
            _ = shutdown.cancelled() => break,
        }
    }
    Ok(batch)
}
