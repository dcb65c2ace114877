//! What a stateful stage is: its inputs, outputs, changelog and the calls the loop makes.

use std::sync::Arc;

use offport_core::baseline::BaselineSet;
use offport_core::cache::CacheStats;
use offport_core::durable::Durable;
use offport_core::progress::Marker;
use offport_core::schema::Contract;
use serde::Serialize;

use crate::registry::RegistryCodec;
use crate::topics::TopicRole;

/// A record a stage emits.
#[derive(Debug, Clone)]
pub enum Emit<T> {
    /// `value` in Avro through the registry, as the contract's subject of `topic`.
    Avro {
        /// Output topic.
        topic: String,
        /// Record key (the device id).
        key: String,
        /// Contract of the value.
        contract: Contract,
        /// The value.
        value: T,
    },
    /// Bytes as they are (JSON for SIEMs).
    Bytes {
        /// Output topic.
        topic: String,
        /// Record key (the device id).
        key: String,
        /// The value.
        value: Vec<u8>,
    },
}

/// Why an input record could not be decoded: it goes to the dead-letter topic.
#[derive(Debug, thiserror::Error)]
#[error("the record does not fit {target}: {source}")]
pub struct DecodeError {
    /// The record type (`NetworkSession`, ...).
    pub target: &'static str,
    /// The codec's reason.
    #[source]
    pub source: crate::registry::CodecError,
}

/// What a stateful stage does with its records; [`run_stateful`] does the rest.
pub trait StatefulStage: Send + Sync {
    /// The pure core of one task.
    type Task: Durable + Send + Sync;
    /// A decoded input record.
    type Input: Send;
    /// An output value (Avro-encoded through the registry).
    type Output: Serialize + Send + Sync;
    /// The name of an input (the joiner's `JoinerInput`).
    type InputName: Copy + Send + Sync + 'static;

    /// The stage as the topology declares it ([`crate::topology`]).
    fn declaration(&self) -> &'static crate::stage::Stage;
    /// Stage name (`joiner`), for the group id, transactional id and dead letters.
    fn name(&self) -> &'static str {
        self.declaration().name
    }
    /// The topics consumed, co-partitioned, each with its input's name (the declared reads
    /// but the baselines topic, which every stateful stage follows on its own).
    fn inputs(&self) -> &[(Self::InputName, TopicRole)];
    /// The stage's changelog topic: the changelog among its declared writes.
    fn changelog(&self) -> TopicRole {
        self.declaration()
            .writes
            .iter()
            .copied()
            .find(|role| role.is_changelog())
            .unwrap_or(TopicRole::JoinerChangelog)
    }
    /// A fresh task judging against `baselines`.
    fn new_task(&self, baselines: &Arc<BaselineSet>) -> Self::Task;
    /// The typed record of input `input` from its Confluent wire-format payload, whose writer
    /// schema `codec` already holds ([`RegistryCodec::decode_known`]); why not, for the dead
    /// letter.
    fn decode(
        &self,
        input: Self::InputName,
        payload: &[u8],
        codec: &RegistryCodec,
    ) -> Result<Self::Input, DecodeError>;
    /// Processes one record.
    fn process(&self, task: &mut Self::Task, input: Self::Input) -> Vec<Emit<Self::Output>>;
    /// Reads, without changing it, the state that processing `input` will read first, so that
    /// the cache misses of a group of upcoming records overlap instead of stalling one by one
    /// ([`offport_core::score::Scorer::warm`]). The loop calls it for each group of
    /// [`offport_core::score::WARM_GROUP`] records before it processes the group before them.
    /// The result means nothing. Stages without such state do nothing.
    fn warm(&self, _task: &Self::Task, _input: &Self::Input) -> u64 {
        0
    }
    /// The task has had no record for `idle_ms` of wall time.
    fn idle(&self, task: &mut Self::Task, idle_ms: i64) -> Vec<Emit<Self::Output>>;
    /// End of input: emit everything still held.
    fn flush(&self, task: &mut Self::Task) -> Vec<Emit<Self::Output>>;
    /// The baselines changed.
    fn baselines_changed(&self, task: &mut Self::Task, baselines: &Arc<BaselineSet>);
    /// Keys and approximate heap bytes of a task's state.
    fn state_size(&self, task: &Self::Task) -> (usize, usize);

    /// True for a stage that waits for inputs read behind the others (the joiner's
    /// watermark): the loop then works out, for every task, which of [`Self::inputs`] have
    /// records not processed yet and tells it through [`Self::inputs_lagging`].
    fn waits_for_lagging_inputs(&self) -> bool {
        false
    }
    /// Which of [`Self::inputs`] have records not processed yet (in the batch at hand or not
    /// read from the broker); returns what that completes. Called before a task's records of a
    /// batch and again as each input's last record in the batch is processed.
    fn inputs_lagging(
        &self,
        _task: &mut Self::Task,
        _lagging: &[(Self::InputName, bool)],
    ) -> Vec<Emit<Self::Output>> {
        vec![]
    }

    /// Raw topics whose progress markers ([`offport_core::progress`]) the stage waits for
    /// while they hold records: the joiner's. Others ignore markers.
    fn upstream(&self) -> &[TopicRole] {
        &[]
    }
    /// A progress marker read on input `input`; returns what that completes.
    fn progress(
        &self,
        _task: &mut Self::Task,
        _input: Self::InputName,
        _marker: &Marker,
    ) -> Vec<Emit<Self::Output>> {
        vec![]
    }
    /// Which of [`Self::upstream`] hold records (the task waits for any it has no marker
    /// from); returns what that completes. Called before each batch's records.
    fn awaiting(
        &self,
        _task: &mut Self::Task,
        _with_records: &[String],
    ) -> Vec<Emit<Self::Output>> {
        vec![]
    }

    /// Records the task took after its watermark had passed them, since it was built or
    /// restored (the joiner's late-data rule); 0 for stages without one.
    fn late_records(&self, _task: &Self::Task) -> u64 {
        0
    }

    /// Holds a task's state to at most `max_bytes`, evicting what matters least; returns how
    /// many keys were evicted. Stages without a cap keep everything.
    fn enforce_cap(&self, _task: &mut Self::Task, _max_bytes: usize) -> usize {
        0
    }

    /// The stage's own bounded caches (those its tasks share), for the cache metrics.
    fn caches(&self) -> Vec<CacheStats> {
        Vec::new()
    }
}
