//! The baselines topic: every version of every scope's baseline document, compacted.
//!
//! # Layout
//!
//! - **Key**: `<scope label>@<effective time in epoch ms>` as UTF-8, e.g.
//!   `app:com.example.chat@1767225600000`. Each *version* of a scope is its own key, so log
//!   compaction keeps the history a replay needs (with the bare scope as key, compaction would
//!   leave only the latest version and a backtest of last month would run against today's
//!   baseline). Publishing the same scope and effective time again replaces that version.
//! - **Value**: the `Baseline` document (the core's format) in Avro through the schema registry
//!   (subject `<topic>-value`).
//! - **Tombstone**: withdraws that version, as if never published. Deleting a scope is a
//!   tombstone for each of its versions (`offportctl baselines delete`).
//!
//! Every joiner and scorer instance starts from the shipped default baseline, reads the whole
//! topic before it processes any data ([`BaselineFeed::open`]), and then applies new records
//! between batches ([`BaselineFeed::poll`]). Versions take effect at their effective time, not
//! at arrival, so an event is judged by the version in force at its own time whatever the order
//! of publication.
//!
//! A record that cannot be used (a key that names no scope, a value that does not decode, a
//! document that fails validation, a key that disagrees with its document) is rejected: the
//! previous versions stay in force, a warning is logged and `offport_baselines_rejected_total`
//! counts it. A rejection that arrives while the stage runs is also written to the dead-letter
//! topic by the stage (in its next transaction); rejections met while catching up at start-up are
//! only logged, since they were dead-lettered when they arrived.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use offport_core::baseline::{
    parse_scope_label, scope_label, validate, BaselineSet, ScopeLabelError,
};
use offport_core::model::{Baseline, BaselineScope, DeadLetterReason, EpochMillis};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use crate::registry::{CodecError, RegistryCodec};
use crate::settings::Settings;
use crate::topics::TopicRole;

/// The key of one version of a scope's baseline.
pub fn version_key(document: &Baseline) -> String {
    format!(
        "{}@{}",
        scope_label(&document.scope),
        document.effective_time
    )
}

/// The scope and effective time a version key names.
pub fn parse_version_key(key: &str) -> Result<(BaselineScope, EpochMillis), VersionKeyError> {
    let (scope, at) = key
        .rsplit_once('@')
        .ok_or_else(|| VersionKeyError::Shape(key.to_string()))?;
    let at: EpochMillis = at.parse().map_err(|_| VersionKeyError::Time {
        key: key.to_string(),
        time: at.to_string(),
    })?;
    let scope = parse_scope_label(scope).map_err(|source| VersionKeyError::Scope {
        key: key.to_string(),
        source,
    })?;
    Ok((scope, at))
}

/// Why a baselines record's key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionKeyError {
    /// No `@`.
    #[error("key {0:?} is not <scope>@<effective time ms>")]
    Shape(String),
    /// The part after `@` is not a number.
    #[error("key {key:?}: {time:?} is not an epoch-millisecond time")]
    Time {
        /// The key.
        key: String,
        /// Its time part.
        time: String,
    },
    /// The part before `@` is not a scope label.
    #[error("key {key:?}: {source}")]
    Scope {
        /// The key.
        key: String,
        /// Why the scope is refused.
        source: ScopeLabelError,
    },
}

/// A baselines record that was not applied.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// The record as read.
    pub record: OwnedMessage,
    /// Why.
    pub reason: DeadLetterReason,
    /// For the operator.
    pub message: String,
}

impl Rejected {
    /// Offset of the rejected record.
    pub fn record_offset(&self) -> i64 {
        self.record.offset()
    }
}

/// Errors reading the baselines topic.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The consumer failed.
    #[error("baselines topic: {0}")]
    Kafka(#[from] KafkaError),
    /// The registry was unreachable (transient; the caller retries).
    #[error("baselines topic: {0}")]
    Codec(#[from] CodecError),
    /// The topic could not be read to its end in time.
    #[error("baselines topic {topic}: not read to its end within {seconds} s")]
    Timeout {
        /// Topic name.
        topic: String,
        /// How long it waited.
        seconds: u64,
    },
    /// The shipped default baseline does not parse (a build defect).
    #[error("default baseline: {0}")]
    Defaults(String),
}

/// How long a baseline record that met an unreachable registry waits before it is tried again.
pub const UNREACHABLE_RETRY: Duration = Duration::from_secs(1);

/// A record that could not be applied because the registry could not be reached, handed
/// back with why.
struct Unreachable {
    record: OwnedMessage,
    error: FeedError,
}

/// The baselines in force, fed from the topic.
pub struct BaselineFeed {
    consumer: BaseConsumer<crate::runtime::ReadToEnd>,
    topic: String,
    /// Shared with the tasks: a change copies it once (when tasks still hold the old one),
    /// not once per task.
    set: Arc<BaselineSet>,
    applied: u64,
    /// Version keys live on the topic (applied and not withdrawn).
    topic_keys: BTreeSet<String>,
    /// A record read but not applied because the registry could not be reached, and when to
    /// try it again: applied first by a later [`Self::poll`], before anything newer, so no
    /// version is skipped.
    unapplied: Option<(OwnedMessage, Instant)>,
}

impl std::fmt::Debug for BaselineFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BaselineFeed")
            .field("topic", &self.topic)
            .field("applied", &self.applied)
            .finish()
    }
}

impl BaselineFeed {
    /// The default baseline plus every version on the topic, read to its end. Returns the
    /// feed and the records it rejected.
    pub async fn open(
        settings: &Settings,
        codec: &RegistryCodec,
        timeout: Duration,
    ) -> Result<(Self, Vec<Rejected>), FeedError> {
        Self::open_as_of(settings, codec, timeout, None).await
    }

    /// As [`Self::open`], but with only the records published at or before `as_of` (their
    /// Kafka timestamps): the topic as it stood then, for a backtest of what was in force.
    /// `None` reads everything.
    pub async fn open_as_of(
        settings: &Settings,
        codec: &RegistryCodec,
        timeout: Duration,
        as_of: Option<i64>,
    ) -> Result<(Self, Vec<Rejected>), FeedError> {
        let topic = TopicRole::Baselines.spec(&settings.topics).name;
        let consumer: BaseConsumer<crate::runtime::ReadToEnd> = settings
            .kafka
            .client_config()
            .set(
                "group.id",
                format!("{}baselines-reader", settings.pipeline.group_prefix),
            )
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", "10")
            .set("isolation.level", "read_committed")
            .create_with_context(crate::runtime::ReadToEnd)?;
        let metadata = tokio::task::block_in_place(|| {
            consumer.fetch_metadata(Some(&topic), Duration::from_secs(30))
        })?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        let mut list = TopicPartitionList::new();
        for partition in &partitions {
            list.add_partition_offset(&topic, *partition, Offset::Beginning)?;
        }
        consumer.assign(&list)?;
        let set =
            Arc::new(BaselineSet::with_defaults().map_err(|e| FeedError::Defaults(e.to_string()))?);
        let mut feed = Self {
            consumer,
            topic: topic.clone(),
            set,
            applied: 0,
            topic_keys: BTreeSet::new(),
            unapplied: None,
        };
        let mut at_end: BTreeSet<i32> = BTreeSet::new();
        let mut rejected = Vec::new();
        let deadline = Instant::now() + timeout;
        while at_end.len() < partitions.len() {
            if Instant::now() > deadline {
                return Err(FeedError::Timeout {
                    topic,
                    seconds: timeout.as_secs(),
                });
            }
            match feed.next(Duration::from_millis(200)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    at_end.insert(partition);
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, topic = %feed.topic, "baselines consumer")
                }
                Some(Ok(record)) => {
                    let later = as_of.is_some_and(|cutoff| {
                        record.timestamp().to_millis().is_some_and(|t| t > cutoff)
                    });
                    if later {
                        continue;
                    }
                    if let Some(rejection) = feed.apply(codec, record).await.map_err(|u| u.error)? {
                        rejected.push(rejection);
                    }
                }
            }
        }
        tracing::info!(
            topic = %feed.topic,
            versions = feed.applied,
            rejected = rejected.len(),
            "baselines read"
        );
        Ok((feed, rejected))
    }

    fn next(&self, wait: Duration) -> Option<Result<OwnedMessage, KafkaError>> {
        tokio::task::block_in_place(|| self.consumer.poll(wait).map(|r| r.map(|m| m.detach())))
    }

    /// Applies the records that arrived since the last call, without waiting. Returns whether
    /// anything changed and the records rejected. When the registry cannot be reached the
    /// record at hand is kept and the call ends there (with a log line): the first call after
    /// [`UNREACHABLE_RETRY`] starts with it (calls before then do nothing), so no version is
    /// skipped and the order stays the topic's.
    pub async fn poll(&mut self, codec: &RegistryCodec) -> (bool, Vec<Rejected>) {
        let before = self.set.generation();
        let mut rejected = Vec::new();
        loop {
            let record = match self.unapplied.take() {
                Some((record, retry_at)) if Instant::now() < retry_at => {
                    self.unapplied = Some((record, retry_at));
                    break;
                }
                Some((record, _)) => record,
                None => match self.next(Duration::ZERO) {
                    Some(Ok(record)) => record,
                    Some(Err(KafkaError::PartitionEOF(_))) | None => break,
                    Some(Err(error)) => {
                        tracing::warn!(%error, topic = %self.topic, "baselines consumer");
                        break;
                    }
                },
            };
            match self.apply(codec, record).await {
                Ok(Some(rejection)) => rejected.push(rejection),
                Ok(None) => {}
                Err(unreachable) => {
                    let Unreachable { record, error } = *unreachable;
                    tracing::warn!(
                        offset = record.offset(),
                        %error,
                        topic = %self.topic,
                        "baseline record not applied yet (registry unreachable); retried in a second"
                    );
                    self.unapplied = Some((record, Instant::now() + UNREACHABLE_RETRY));
                    break;
                }
            }
        }
        (self.set.generation() != before, rejected)
    }

    /// True while a record waits for the registry (see [`Self::poll`]).
    pub fn has_unapplied(&self) -> bool {
        self.unapplied.is_some()
    }

    /// The baselines in force: one snapshot the tasks share.
    pub fn set(&self) -> &Arc<BaselineSet> {
        &self.set
    }

    /// The version keys live on the topic (the shipped defaults are not among them).
    pub fn topic_keys(&self) -> &BTreeSet<String> {
        &self.topic_keys
    }

    /// Versions applied from the topic so far.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Applies one record: `Ok(None)` applied (or a tombstone taken), `Ok(Some)` rejected for
    /// the dead-letter topic, `Err` the registry could not be reached (the record handed back).
    async fn apply(
        &mut self,
        codec: &RegistryCodec,
        record: OwnedMessage,
    ) -> Result<Option<Rejected>, Box<Unreachable>> {
        let reject = |record: OwnedMessage, reason, message: String| {
            tracing::warn!(
                offset = record.offset(),
                %message,
                "baseline record rejected; the previous versions stay in force"
            );
            Ok(Some(Rejected {
                record,
                reason,
                message,
            }))
        };
        let key = match record.key().map(std::str::from_utf8) {
            Some(Ok(key)) => key.to_string(),
            _ => {
                return reject(
                    record,
                    DeadLetterReason::InvalidBaseline,
                    "the key is missing or not UTF-8".to_string(),
                )
            }
        };
        let (scope, at) = match parse_version_key(&key) {
            Ok(parsed) => parsed,
            Err(error) => {
                return reject(record, DeadLetterReason::InvalidBaseline, error.to_string())
            }
        };
        let Some(payload) = record.payload() else {
            if !Arc::make_mut(&mut self.set).withdraw(&scope, at) {
                tracing::info!(%key, "tombstone for a version not in force; nothing to withdraw");
            }
            self.topic_keys.remove(&key);
            self.applied += 1;
            return Ok(None);
        };
        let document: Baseline = match codec.decode(payload).await {
            Ok(document) => document,
            Err(error) if error.is_transient() => {
                return Err(Box::new(Unreachable {
                    record,
                    error: error.into(),
                }))
            }
            Err(error) => {
                return reject(
                    record,
                    DeadLetterReason::SchemaMismatch,
                    format!("{key}: not a Baseline document: {error}"),
                )
            }
        };
        if document.scope != scope || document.effective_time != at {
            let message = format!(
                "{key}: the document is {} (the key must be <scope>@<effective time ms> of its document)",
                version_key(&document)
            );
            return reject(record, DeadLetterReason::InvalidBaseline, message);
        }
        if let Err(error) = validate(&document) {
            return reject(
                record,
                DeadLetterReason::InvalidBaseline,
                format!("{key}: {error}"),
            );
        }
        match Arc::make_mut(&mut self.set).apply(document) {
            Ok(()) => {
                self.applied += 1;
                self.topic_keys.insert(key.clone());
                tracing::info!(%key, "baseline version applied");
                Ok(None)
            }
            Err(error) => reject(
                record,
                DeadLetterReason::InvalidBaseline,
                format!("{key}: {error}"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use offport_core::model::ScopeKind;

    #[test]
    fn version_keys_name_scope_and_effective_time() {
        let (scope, at) = parse_version_key("app:com.x@1767225600000").unwrap();
        assert_eq!(scope.kind, ScopeKind::App);
        assert_eq!(scope.value.as_deref(), Some("com.x"));
        assert_eq!(at, 1_767_225_600_000);
        let (global, _) = parse_version_key("global@0").unwrap();
        assert_eq!(global.kind, ScopeKind::Global);
        // An app id may itself contain '@': the time is after the last one.
        let (odd, _) = parse_version_key("app:we@ird@5").unwrap();
        assert_eq!(odd.value.as_deref(), Some("we@ird"));
        assert!(parse_version_key("app:com.x")
            .unwrap_err()
            .to_string()
            .contains("<scope>@"));
        assert!(parse_version_key("app:com.x@soon")
            .unwrap_err()
            .to_string()
            .contains("epoch"));
        assert!(parse_version_key("planet:x@5")
            .unwrap_err()
            .to_string()
            .contains("unknown scope kind"));
    }
}

/// Errors publishing baselines.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The producer failed.
    #[error("baselines topic: {0}")]
    Kafka(#[from] KafkaError),
    /// The registry refused or was unreachable.
    #[error("baselines topic: {0}")]
    Codec(#[from] CodecError),
    /// A document failed validation; nothing was published.
    #[error("{key}: {why}")]
    Invalid {
        /// Version key of the document.
        key: String,
        /// Why.
        why: String,
    },
}

/// Publishes baseline versions (`Some`) and withdrawals (`None`, a tombstone of the version
/// key) to the baselines topic, in order, waiting for every acknowledgement. Every document is
/// validated before anything is sent.
pub async fn publish(
    settings: &Settings,
    codec: &RegistryCodec,
    changes: &[(String, Option<Baseline>)],
) -> Result<(), PublishError> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    for (key, document) in changes {
        if let Some(document) = document {
            validate(document).map_err(|e| PublishError::Invalid {
                key: key.clone(),
                why: e.to_string(),
            })?;
        }
    }
    let topic = TopicRole::Baselines.spec(&settings.topics).name;
    let producer: FutureProducer = settings
        .kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?;
    for (key, document) in changes {
        let value = match document {
            Some(document) => Some(
                codec
                    .encode_value(&topic, offport_core::schema::Contract::Baseline, document)
                    .await?,
            ),
            None => None,
        };
        let mut record: FutureRecord<'_, String, Vec<u8>> = FutureRecord::to(&topic).key(key);
        if let Some(value) = &value {
            record = record.payload(value);
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(error, _)| error)?;
    }
    Ok(())
}
