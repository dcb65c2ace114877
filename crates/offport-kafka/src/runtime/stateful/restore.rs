//! Restoring a task from its changelog partition before any of its records is processed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use offport_core::baseline::BaselineSet;
use offport_core::durable::Durable;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::runtime::{blocking, PipelineError};

use super::*;

impl<S: StatefulStage> Runner<'_, S> {
    /// Rebuilds task `partition` from its changelog partition, read to its end.
    pub(super) async fn restore(
        &mut self,
        partition: i32,
        baselines: &Arc<BaselineSet>,
    ) -> Result<S::Task, PipelineError> {
        let started = Instant::now();
        let mut task = self.stage.new_task(baselines);
        task.journal_changes();
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&self.changelog, partition, Offset::Beginning)?;
        self.restorer.assign(&list)?;
        let timeout = Duration::from_millis(self.settings.stream.restore_timeout_ms);
        let deadline = Instant::now() + timeout;
        let mut latest: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        let mut read = 0_u64;
        loop {
            if Instant::now() > deadline {
                self.restorer.unassign()?;
                return Err(PipelineError::Kafka(KafkaError::Global(
                    rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
                )));
            }
            let polled = blocking(|| {
                self.restorer
                    .poll(Duration::from_millis(200))
                    .map(|r| r.map(|m| m.detach()))
            });
            match polled {
                None => {}
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(error)) => {
                    tracing::warn!(%error, topic = %self.changelog, partition, "changelog read");
                }
                Some(Ok(record)) => {
                    read += 1;
                    let key = record
                        .key()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .unwrap_or_default();
                    latest.insert(key, record.payload().map(<[u8]>::to_vec));
                }
            }
        }
        self.restorer.unassign()?;
        let mut keys = 0_usize;
        for (key, value) in &latest {
            if let Some(value) = value {
                keys += 1;
                if let Err(error) = task.restore(key, value) {
                    // Not expected: the changelog is written by this code. The key's state is
                    // lost, which is logged loudly rather than stopping the stage for good.
                    tracing::error!(%error, topic = %self.changelog, partition, "changelog record not restored");
                }
            }
        }
        task.restored();
        self.metrics.restores.inc();
        self.metrics.restored_records.inc_by(read);
        tracing::info!(
            stage = self.options.stage,
            partition,
            records = read,
            keys,
            millis = started.elapsed().as_millis() as u64,
            "task state restored from the changelog"
        );
        Ok(task)
    }
}
