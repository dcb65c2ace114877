//! The runtime every stage runs in: Kafka in, Kafka out, exactly once.
//!
//! - [`clients`]: the transactional producer and the group consumer of a stage;
//! - [`batch`]: a batch collected from the consumer;
//! - [`transaction`]: a batch's outputs and input offsets committed in one transaction;
//! - [`dead_letter`]: rejected records with why, in either layout;
//! - [`decisions`]: where a partition resumes, what a batch commits, whether an input lags,
//!   whether a partition is at its end, as pure functions;
//! - [`normalizer`]: the loop of the stateless stages (raw records in, normalized records out);
//! - [`stateful`]: the loop of the joiner and the scorer (tasks per partition, changelogs,
//!   restore).
//!
//! [`PipelineOptions`] says how a stage runs; [`PipelineError`] is what stops it.

use std::time::Duration;

use offport_core::model::EpochMillis;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;

use crate::metrics::PipelineMetrics;
use crate::registry::CodecError;
use crate::settings::Settings;
use crate::shutdown::Shutdown;
use crate::topics::TopicRole;

mod batch;
mod clients;
mod dead_letter;
pub mod decisions;
pub mod normalizer;
pub mod stateful;
mod transaction;

pub(crate) use batch::*;
pub(crate) use clients::*;
pub(crate) use dead_letter::*;
pub use dead_letter::{connect_headers, owned_headers, raw_record};
pub use normalizer::run_normalizer;
pub(crate) use transaction::*;

/// Errors that stop the loop.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A Kafka client could not be created or a fatal error occurred (e.g. fenced).
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The start-up check failed: the broker rejected this client (credentials, TLS), or shutdown
    /// came while waiting for an unreachable cluster.
    #[error(transparent)]
    Connect(#[from] crate::connect::ConnectError),
    /// A codec error that is not transient and not the record's fault (a build defect).
    #[error("encoding: {0}")]
    Codec(#[from] CodecError),
    /// Shutdown came while a transient failure was being retried; nothing of the batch was
    /// committed, so the group reads it again.
    #[error("shut down while retrying: {0}")]
    Interrupted(CodecError),
}

/// How a normalizer stage runs.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Stage name (`normalize-proxy`), for the group id, transactional id and dead letters.
    pub stage: &'static str,
    /// Topics to consume.
    pub inputs: Vec<String>,
    /// Records per transaction at most.
    pub batch_max: usize,
    /// How long a batch waits to fill.
    pub batch_linger: Duration,
    /// How long an empty batch waits for its first record before the loop looks around (idle
    /// and end-of-input rules, baselines updates).
    pub first_record_wait: Duration,
    /// Longest pause between retries of a transient failure.
    pub max_backoff: Duration,
    /// Consumer group id.
    pub group_id: String,
    /// Transactional id of this instance: unique per instance, stable across its restarts.
    pub transactional_id: String,
    /// Static group membership (`group.instance.id`, `pipeline.static_membership`): a restarted
    /// instance takes its partitions back at once instead of waiting for the group to expire
    /// its previous incarnation (session timeout).
    pub group_instance_id: Option<String>,
    /// Largest dead-letter record this stage writes: the producer's `message.max.bytes`, lowered
    /// at start to the dead-letter topic's `max.message.bytes` when that is smaller
    /// ([`PipelineOptions::fit_dead_letters_to_topic`]). Dead letters are cut to fit.
    pub dead_letter_max_bytes: usize,
    /// The dead letters' layout (`pipeline.dead_letter_format`).
    pub dead_letter_format: crate::settings::DeadLetterFormat,
    /// The normalized topics a normalizer's progress markers go to (see [`crate::progress`]):
    /// those the topology says it writes ([`crate::stage::Stage::progress_topics`]); none for
    /// a stage the topology does not declare.
    pub progress_topics: Vec<String>,
}

/// librdkafka's default `message.max.bytes`.
pub(crate) const PRODUCER_MESSAGE_MAX_BYTES: usize = 1_000_000;

impl PipelineOptions {
    /// Options for `stage` from the settings: group `offport-<stage>`, transactional id
    /// `offport-<stage>-<instance id>`.
    pub fn for_stage(stage: &'static str, inputs: Vec<String>, settings: &Settings) -> Self {
        let pipeline = &settings.pipeline;
        let instance = format!(
            "{}{stage}-{}",
            pipeline.group_prefix,
            pipeline.instance_id()
        );
        let static_membership = pipeline
            .static_membership
            .unwrap_or(pipeline.instance_id.is_some());
        Self {
            stage,
            inputs,
            batch_max: pipeline.batch_max_records.max(1),
            batch_linger: Duration::from_millis(pipeline.batch_linger_ms),
            first_record_wait: Duration::from_millis(500),
            max_backoff: Duration::from_millis(pipeline.max_backoff_ms.max(1)),
            group_id: format!("{}{stage}", pipeline.group_prefix),
            group_instance_id: static_membership.then(|| instance.clone()),
            transactional_id: instance,
            dead_letter_max_bytes: settings
                .kafka
                .properties
                .get("message.max.bytes")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(PRODUCER_MESSAGE_MAX_BYTES),
            dead_letter_format: pipeline.dead_letter_format,
            progress_topics: crate::topology::STAGES
                .iter()
                .find(|s| s.name == stage)
                .map(|declared| declared.progress_topics(&settings.topics))
                .unwrap_or_default(),
        }
    }

    /// Lowers [`PipelineOptions::dead_letter_max_bytes`] to what the dead-letter topic takes.
    /// When the topic's configuration cannot be read (no DescribeConfigs permission), the
    /// producer's limit stays and a warning says so.
    pub async fn fit_dead_letters_to_topic(&mut self, settings: &Settings) {
        let topic = TopicRole::DeadLetter.spec(&settings.topics).name;
        match crate::topics::max_message_bytes(&settings.kafka.client_config(), &topic).await {
            Ok(limit) => self.dead_letter_max_bytes = self.dead_letter_max_bytes.min(limit),
            Err(error) => tracing::warn!(
                %error,
                topic,
                limit = self.dead_letter_max_bytes,
                "cannot read the dead-letter topic's max.message.bytes; dead letters are cut to \
                 the producer's message.max.bytes"
            ),
        }
    }
}

/// Retries `attempt` while its error is transient, with capped exponential backoff; gives up
/// only on a permanent error or shutdown (returning the last error).
pub(crate) async fn retrying<T, F, Fut>(
    options: &PipelineOptions,
    metrics: &PipelineMetrics,
    shutdown: &Shutdown,
    what: &str,
    mut attempt: F,
) -> Result<T, PipelineError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CodecError>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if error.is_transient() && shutdown.is_triggered() => {
                return Err(PipelineError::Interrupted(error))
            }
            Err(error) if error.is_transient() => {
                metrics.retries.inc();
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "{what} failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(PipelineError::Interrupted(error)),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(options.max_backoff);
            }
            Err(error) => return Err(error.into()),
        }
    }
}

pub(crate) fn wall_clock_millis() -> EpochMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            EpochMillis::try_from(d.as_millis()).unwrap_or(EpochMillis::MAX)
        })
}

/// The end of a loop: the consumer leaves its group (its partitions go to the other instances
/// at once), and a shutdown that came during a retry is a clean stop (nothing of the batch was
/// committed, so the group reads it again).
pub(crate) fn leave_group<
    C: rdkafka::consumer::Consumer<X>,
    X: rdkafka::consumer::ConsumerContext,
>(
    stage: &str,
    consumer: &C,
    result: Result<(), PipelineError>,
) -> Result<(), PipelineError> {
    tracing::info!(stage, "stopping: leaving the consumer group");
    consumer.unsubscribe();
    match result {
        Err(PipelineError::Interrupted(error)) => {
            tracing::warn!(%error, "shut down during a retry; the uncommitted batch will be read again");
            Ok(())
        }
        other => other,
    }
}

/// The start of a loop: waits until the cluster and the registry answer (false when shutdown
/// comes first), then fits the dead letters to the dead-letter topic's size limit.
pub(crate) async fn connect(
    settings: &Settings,
    options: &mut PipelineOptions,
    shutdown: &Shutdown,
) -> Result<bool, PipelineError> {
    if !crate::connect::connected_unless_shut_down(
        &settings.kafka,
        &settings.registry,
        options.max_backoff,
        shutdown,
    )
    .await?
    {
        return Ok(false);
    }
    options.fit_dead_letters_to_topic(settings).await;
    Ok(true)
}
