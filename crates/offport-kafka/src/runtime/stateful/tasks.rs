//! A task's work on a batch (decode, process, encode, in order, on a task thread) and the
//! task pool.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use offport_core::model::DeadLetterReason;
use offport_core::normalize::Rejection;
use offport_core::progress::{Marker, HEADER as PROGRESS_HEADER};
use offport_core::score::WARM_GROUP;
use rdkafka::message::{BorrowedMessage, Headers, Message};

use crate::metrics::PipelineMetrics;
use crate::registry::RegistryCodec;
use crate::runtime::Outgoing;

use super::*;

pub(super) struct Slot<T> {
    pub(super) task: T,
    pub(super) last_record: Instant,
    /// When each input last brought the task a record (or the task was set up): an input
    /// silent for `stream.idle_timeout_ms` is not waited for.
    pub(super) input_records: Vec<Instant>,
    /// Late records of the task already counted in the metric.
    pub(super) late_counted: u64,
}

impl<T> Slot<T> {
    pub(super) fn new(task: T, now: Instant, inputs: usize) -> Self {
        Self {
            task,
            last_record: now,
            input_records: vec![now; inputs],
            late_counted: 0,
        }
    }
}

/// Flags in [`StatefulStage::inputs`] order, with their inputs' names.
pub(super) fn named<S: StatefulStage>(stage: &S, flags: &[bool]) -> Vec<(S::InputName, bool)> {
    stage
        .inputs()
        .iter()
        .zip(flags)
        .map(|((name, _), flag)| (*name, *flag))
        .collect()
}

/// The task threads of a stage: `None` for one (the loop's own thread does the work), or when
/// the threads cannot be started (logged; the loop's thread does the work).
pub(super) fn task_pool(stage: &str, threads: usize) -> Option<rayon::ThreadPool> {
    if threads <= 1 {
        return None;
    }
    let stage = stage.to_string();
    match rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(move |i| format!("{stage}-task-{i}"))
        .build()
    {
        Ok(pool) => Some(pool),
        Err(error) => {
            tracing::warn!(%error, threads, "task threads not started; tasks run one after another");
            None
        }
    }
}

/// An output record keyed by its device id, to the partition its key hashes to.
pub(super) fn keyed(topic: String, key: String, value: Vec<u8>) -> Outgoing {
    Outgoing {
        topic,
        partition: None,
        key: Some(key.into_bytes()),
        value: Some(value),
        headers: vec![],
    }
}

/// The writer schemas a batch's records name: fetched (or known) ids, and why the others could
/// not be fetched.
#[derive(Default)]
pub(super) struct BatchSchemas {
    pub(super) known: Vec<u32>,
    pub(super) failed: HashMap<u32, String>,
}

/// What a task's records of a batch came to, in order.
pub(super) enum Produced<'m, 'b, T> {
    /// An output or record encoded on the task's thread.
    Encoded(Outgoing),
    /// An output whose schema is not registered yet: the loop registers it as it encodes it.
    Unencoded(Emit<T>),
    /// A record that is dead-lettered (by the loop: a dead letter may need its schema
    /// registered).
    Rejected(&'m BorrowedMessage<'b>, Rejection),
}

/// What the task threads of a batch share, read only.
pub(super) struct TaskWork<'a, S: StatefulStage> {
    pub(super) stage: &'a S,
    pub(super) codec: &'a RegistryCodec,
    pub(super) metrics: &'a PipelineMetrics,
    pub(super) inputs: &'a [String],
    pub(super) schemas: &'a BatchSchemas,
    pub(super) now: Instant,
}

impl<S: StatefulStage> TaskWork<'_, S> {
    /// Decodes, processes and encodes one task's records of a batch, in order. All are decoded
    /// first and processed after, so that each group of [`WARM_GROUP`] records is warmed (see
    /// [`StatefulStage::warm`]) while the group ahead of it is processed.
    ///
    /// `lagging` (for a stage that waits for lagging inputs): which inputs have records not
    /// read from the broker after this batch. An input also lags while its records in the
    /// batch are not all processed; the task is told as each input's last one is.
    pub(super) fn run<'m, 'b>(
        &self,
        slot: &mut Slot<S::Task>,
        messages: Vec<&'m BorrowedMessage<'b>>,
        lagging: Option<&[bool]>,
    ) -> Vec<Produced<'m, 'b, S::Output>> {
        let mut produced = Vec::with_capacity(messages.len());
        let input_of =
            |message: &BorrowedMessage<'_>| self.inputs.iter().position(|t| t == message.topic());
        // Records left in the batch per input: an input lags while it has some, or more unread.
        let mut left = vec![0_usize; self.inputs.len()];
        let lags = |left: &[usize], unread: &[bool]| -> Vec<bool> {
            unread.iter().zip(left).map(|(u, l)| *u || *l > 0).collect()
        };
        if let Some(unread) = lagging {
            for message in &messages {
                if let Some(count) = input_of(message).and_then(|i| left.get_mut(i)) {
                    *count += 1;
                }
            }
            for emit in self
                .stage
                .inputs_lagging(&mut slot.task, &named(self.stage, &lags(&left, unread)))
            {
                produced.push(self.encode(emit));
            }
        }
        let mut decoded: VecDeque<_> = messages
            .into_iter()
            .map(|message| (message, self.item(message)))
            .collect();
        while !decoded.is_empty() {
            let group = WARM_GROUP.min(decoded.len());
            let warmed = decoded
                .range(group..)
                .take(WARM_GROUP)
                .filter_map(|(_, item)| match item {
                    Item::Record(Ok(input)) => Some(self.stage.warm(&slot.task, input)),
                    _ => None,
                })
                .fold(0, |acc, touched| acc ^ touched);
            std::hint::black_box(warmed);
            for (message, item) in decoded.drain(..group) {
                match item {
                    Item::Record(Ok(input)) => {
                        slot.last_record = self.now;
                        for emit in self.stage.process(&mut slot.task, input) {
                            produced.push(self.encode(emit));
                        }
                    }
                    Item::Progress(input, marker) => {
                        slot.last_record = self.now;
                        for emit in self.stage.progress(&mut slot.task, input, &marker) {
                            produced.push(self.encode(emit));
                        }
                    }
                    Item::Record(Err(rejection)) => {
                        produced.push(Produced::Rejected(message, rejection));
                    }
                }
                // After an input's last record in the batch it lags only if more is unread.
                let (Some(unread), Some(i)) = (lagging, input_of(message)) else {
                    continue;
                };
                if let Some(count) = left.get_mut(i) {
                    *count = count.saturating_sub(1);
                    if *count == 0 && unread.get(i) == Some(&false) {
                        for emit in self.stage.inputs_lagging(
                            &mut slot.task,
                            &named(self.stage, &lags(&left, unread)),
                        ) {
                            produced.push(self.encode(emit));
                        }
                    }
                }
            }
        }
        produced
    }

    /// A progress marker (a record with the marker header), or a record to decode.
    pub(super) fn item(&self, message: &BorrowedMessage<'_>) -> Item<S::Input, S::InputName> {
        let marker = message.headers().and_then(|headers| {
            (0..headers.count())
                .map(|i| headers.get(i))
                .find(|h| h.key == PROGRESS_HEADER)
                .map(|h| h.value.unwrap_or_default())
        });
        let Some(value) = marker else {
            return Item::Record(self.decode(message));
        };
        let input = self
            .inputs
            .iter()
            .position(|t| t == message.topic())
            .and_then(|i| self.stage.inputs().get(i))
            .map(|(name, _)| *name);
        match (input, Marker::from_header(value)) {
            (Some(input), Ok(marker)) => Item::Progress(input, marker),
            (_, Err(why)) => Item::Record(Err(Rejection::new(
                DeadLetterReason::Unparseable,
                why.to_string(),
            ))),
            (None, Ok(_)) => Item::Record(self.decode(message)),
        }
    }

    /// The typed input, or why the record is dead-lettered.
    pub(super) fn decode(&self, message: &BorrowedMessage<'_>) -> Result<S::Input, Rejection> {
        let input = self
            .inputs
            .iter()
            .position(|t| t == message.topic())
            .and_then(|i| self.stage.inputs().get(i));
        let Some((input, _)) = input else {
            return Err(Rejection::new(
                DeadLetterReason::Other,
                format!("topic {} is not an input of this stage", message.topic()),
            ));
        };
        let Some(payload) = message.payload() else {
            return Err(Rejection::new(
                DeadLetterReason::Unparseable,
                "the record has no value",
            ));
        };
        let id = crate::registry::schema_id(payload).map_err(|error| {
            Rejection::new(
                DeadLetterReason::SchemaMismatch,
                format!("not a registry-encoded Avro record: {error}"),
            )
        })?;
        if let Some(error) = self.schemas.failed.get(&id) {
            return Err(Rejection::new(
                DeadLetterReason::SchemaMismatch,
                format!("writer schema {id}: {error}"),
            ));
        }
        self.stage
            .decode(*input, payload, self.codec)
            .map_err(|why| Rejection::new(DeadLetterReason::SchemaMismatch, why.to_string()))
    }

    /// `emit` encoded here when its schema is registered; else handed back for the loop to
    /// register and encode.
    pub(super) fn encode<'m, 'b>(&self, emit: Emit<S::Output>) -> Produced<'m, 'b, S::Output> {
        let record = match emit {
            Emit::Bytes { topic, key, value } => keyed(topic, key, value),
            Emit::Avro {
                topic,
                key,
                contract,
                value,
            } => match self.codec.encode_registered(&topic, contract, &value) {
                Some(Ok(bytes)) => keyed(topic, key, bytes),
                // Not registered, or the value does not fit: the loop's encoding registers
                // it, or reports why it does not fit.
                _ => {
                    return Produced::Unencoded(Emit::Avro {
                        topic,
                        key,
                        contract,
                        value,
                    })
                }
            },
        };
        self.metrics.records_out.inc();
        Produced::Encoded(record)
    }
}

/// A record of a task's batch: a record of an input, decoded (or why not), or a progress marker
/// on input `.0`.
pub(super) enum Item<I, N> {
    Record(Result<I, Rejection>),
    Progress(N, Marker),
}
