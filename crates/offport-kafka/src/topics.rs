//! The topic layout of the offport topology, and its creation.
//!
//! [`TopicRole`] names every topic a stage reads or writes; [`TopicRole::spec`] gives its name
//! and settings under a [`TopicSettings`]. The normalized and enriched topics and the changelogs
//! are keyed by device id (or task) and must be co-partitioned (same partition count, murmur2
//! partitioner; the alert topics are keyed by device id too but no stage joins on them), so
//! [`ensure_topics`] refuses an existing topic whose partition count differs instead of silently
//! accepting a layout the joiner cannot use.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use offport_core::schema::Contract;

use crate::settings::{DeadLetterFormat, Settings, TopicSettings};

/// Every topic of the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicRole {
    /// Raw proxy/VPN/sensor session records (JSON, CSV, Zeek, Suricata), as users produce them.
    RawProxy,
    /// Raw EDR events.
    RawEdr,
    /// Raw MDM records.
    RawMdm,
    /// The organisation's device inventory (device to group, role, owner), keyed by device id;
    /// compacted, a raw input of normalize-mdm that `offportctl inventory publish` writes.
    Inventory,
    /// `NetworkSession` (Avro), keyed by device id.
    Sessions,
    /// `DeviceEvent` (Avro), keyed by device id.
    DeviceEvents,
    /// `DeviceContext` (Avro), keyed by device id.
    DeviceContexts,
    /// `EnrichedSession` (Avro), keyed by device id.
    EnrichedSessions,
    /// `Finding` (Avro), keyed by device id.
    Alerts,
    /// The same findings as OCSF 1.x Detection Finding JSON, for SIEMs.
    AlertsOcsf,
    /// `Baseline` documents keyed by `<scope>@<effective time ms>`, one key per version;
    /// compacted, a tombstone withdraws that version.
    Baselines,
    /// `DeadLetter` records from every stage.
    DeadLetter,
    /// The joiner's state changelog (postcard, compacted), one partition per task.
    JoinerChangelog,
    /// The scorer's state changelog (postcard, compacted), one partition per task.
    ScorerChangelog,
}

impl TopicRole {
    /// Every topic.
    pub const ALL: [TopicRole; 14] = [
        TopicRole::RawProxy,
        TopicRole::RawEdr,
        TopicRole::RawMdm,
        TopicRole::Inventory,
        TopicRole::Sessions,
        TopicRole::DeviceEvents,
        TopicRole::DeviceContexts,
        TopicRole::EnrichedSessions,
        TopicRole::Alerts,
        TopicRole::AlertsOcsf,
        TopicRole::Baselines,
        TopicRole::DeadLetter,
        TopicRole::JoinerChangelog,
        TopicRole::ScorerChangelog,
    ];

    /// Name without the configured prefix.
    pub fn suffix(self) -> &'static str {
        match self {
            TopicRole::RawProxy => "raw.proxy",
            TopicRole::RawEdr => "raw.edr",
            TopicRole::RawMdm => "raw.mdm",
            TopicRole::Inventory => "inventory",
            TopicRole::Sessions => "normalized.sessions",
            TopicRole::DeviceEvents => "normalized.device-events",
            TopicRole::DeviceContexts => "normalized.device-context",
            TopicRole::EnrichedSessions => "enriched.sessions",
            TopicRole::Alerts => "alerts",
            TopicRole::AlertsOcsf => "alerts.ocsf",
            TopicRole::Baselines => "baselines",
            TopicRole::DeadLetter => "dead-letter",
            TopicRole::JoinerChangelog => "joiner.changelog",
            TopicRole::ScorerChangelog => "scorer.changelog",
        }
    }

    /// The Avro contract of this topic's values, registered under `<topic>-value`; `None` for
    /// topics whose values are not registry-encoded (raw input, OCSF JSON, changelogs). The
    /// dead-letter topic holds `DeadLetter` records when `pipeline.dead_letter_format` is
    /// `envelope`.
    pub fn contract(self) -> Option<Contract> {
        match self {
            TopicRole::Sessions => Some(Contract::NetworkSession),
            TopicRole::DeviceEvents => Some(Contract::DeviceEvent),
            TopicRole::DeviceContexts => Some(Contract::DeviceContext),
            TopicRole::EnrichedSessions => Some(Contract::EnrichedSession),
            TopicRole::Alerts => Some(Contract::Finding),
            TopicRole::Baselines => Some(Contract::Baseline),
            TopicRole::DeadLetter => Some(Contract::DeadLetter),
            TopicRole::RawProxy
            | TopicRole::RawEdr
            | TopicRole::RawMdm
            | TopicRole::Inventory
            | TopicRole::AlertsOcsf
            | TopicRole::JoinerChangelog
            | TopicRole::ScorerChangelog => None,
        }
    }

    /// True for a stateful stage's changelog.
    pub fn is_changelog(self) -> bool {
        matches!(
            self,
            TopicRole::JoinerChangelog | TopicRole::ScorerChangelog
        )
    }

    /// True for the device-keyed topics that must share one partition count.
    pub fn co_partitioned(self) -> bool {
        matches!(
            self,
            TopicRole::Sessions
                | TopicRole::DeviceEvents
                | TopicRole::DeviceContexts
                | TopicRole::EnrichedSessions
                | TopicRole::JoinerChangelog
                | TopicRole::ScorerChangelog
        )
    }

    /// Name and settings of this topic under `settings`.
    pub fn spec(self, settings: &TopicSettings) -> TopicSpec {
        let mut configs = vec![];
        let partitions = match self {
            // One partition keeps every instance's view of the baselines totally ordered.
            TopicRole::Baselines => {
                configs.push(("cleanup.policy", "compact"));
                configs.push(("min.cleanable.dirty.ratio", "0.1"));
                1
            }
            // The latest entry of each device is all that counts.
            TopicRole::Inventory => {
                configs.push(("cleanup.policy", "compact"));
                settings.partitions
            }
            // A task's state lives in the changelog partition of the task's number.
            TopicRole::JoinerChangelog | TopicRole::ScorerChangelog => {
                configs.push(("cleanup.policy", "compact"));
                settings.partitions
            }
            _ => settings.partitions,
        };
        TopicSpec {
            role: self,
            name: format!("{}{}", settings.prefix, self.suffix()),
            partitions,
            replication_factor: settings.replication_factor,
            configs,
        }
    }
}

/// The registry subjects (`<topic>-value`) and contracts of `roles` under `settings`: those
/// whose values are Avro, the dead-letter topic only in the envelope format.
pub fn value_subjects(roles: &[TopicRole], settings: &Settings) -> Vec<(String, Contract)> {
    roles
        .iter()
        .filter(|role| {
            **role != TopicRole::DeadLetter
                || settings.pipeline.dead_letter_format == DeadLetterFormat::Envelope
        })
        .filter_map(|role| {
            let contract = role.contract()?;
            Some((
                format!("{}-value", role.spec(&settings.topics).name),
                contract,
            ))
        })
        .collect()
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Role in the topology.
    pub role: TopicRole,
    /// Full name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// Replication factor.
    pub replication_factor: i32,
    /// Topic-level configs.
    pub configs: Vec<(&'static str, &'static str)>,
}

/// What [`ensure_topics`] did for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    /// Created now.
    Created,
    /// Already there with a compatible layout.
    Existed,
}

/// Errors creating topics.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The admin client failed.
    #[error("kafka admin: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The broker refused to create a topic.
    #[error("creating topic {topic}: {code}")]
    Create {
        /// Topic.
        topic: String,
        /// Broker error.
        code: RDKafkaErrorCode,
    },
    /// An existing topic has a layout the topology cannot use.
    #[error("topic {topic} exists with {actual} partitions, expected {expected}: {why}")]
    Layout {
        /// Topic.
        topic: String,
        /// Found.
        actual: usize,
        /// Wanted.
        expected: i32,
        /// Consequence.
        why: &'static str,
    },
    /// The broker's answer about a topic's configuration had no `max.message.bytes`.
    #[error("topic {topic}: no max.message.bytes in its configuration")]
    Describe {
        /// Topic.
        topic: String,
    },
}

/// Creates every topic in `specs` that does not exist, and checks the partition count of those
/// that do.
pub async fn ensure_topics(
    client_config: &ClientConfig,
    specs: &[TopicSpec],
) -> Result<Vec<(String, TopicOutcome)>, TopicError> {
    let admin: AdminClient<DefaultClientContext> = client_config.create()?;
    let new_topics: Vec<NewTopic> = specs
        .iter()
        .map(|spec| {
            spec.configs.iter().fold(
                NewTopic::new(
                    &spec.name,
                    spec.partitions,
                    TopicReplication::Fixed(spec.replication_factor),
                ),
                |topic, (key, value)| topic.set(key, value),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(new_topics.iter(), &options).await?;

    let mut outcomes = Vec::with_capacity(specs.len());
    for result in results {
        match result {
            Ok(name) => outcomes.push((name, TopicOutcome::Created)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                outcomes.push((name, TopicOutcome::Existed))
            }
            Err((topic, code)) => return Err(TopicError::Create { topic, code }),
        }
    }

    for spec in specs {
        let actual = partition_count(&admin, &spec.name).await?;
        let expected = usize::try_from(spec.partitions).unwrap_or(0);
        if actual != expected && (spec.role.co_partitioned() || spec.role == TopicRole::Baselines) {
            return Err(TopicError::Layout {
                topic: spec.name.clone(),
                actual,
                expected: spec.partitions,
                why: if spec.role == TopicRole::Baselines {
                    "the baselines topic must have exactly one partition to stay totally ordered"
                } else {
                    "device-keyed topics must be co-partitioned for the joiner"
                },
            });
        }
    }
    Ok(outcomes)
}

/// The `max.message.bytes` of `topic`: the largest record batch the broker accepts for it
/// (the topic's own setting, else the broker's `message.max.bytes`).
pub async fn max_message_bytes(
    client_config: &ClientConfig,
    topic: &str,
) -> Result<usize, TopicError> {
    let admin: AdminClient<DefaultClientContext> = client_config.create()?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
        .await?;
    let limit = results.into_iter().flatten().find_map(|resource| {
        resource
            .get("max.message.bytes")
            .and_then(|entry| entry.value.as_deref())
            .and_then(|v| v.parse().ok())
    });
    limit.ok_or_else(|| TopicError::Describe {
        topic: topic.to_string(),
    })
}

/// Partition count of `topic` once the broker's metadata shows it. A topic created a moment
/// ago can briefly appear with no partitions, so this polls for up to ten seconds.
async fn partition_count(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
) -> Result<usize, TopicError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metadata = admin
            .inner()
            .fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let count = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        if count > 0 || tokio::time::Instant::now() > deadline {
            return Ok(count);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix_and_baselines_are_compacted_single_partition() {
        let settings = TopicSettings {
            prefix: "acme.".to_string(),
            partitions: 12,
            replication_factor: 3,
        };
        let baselines = TopicRole::Baselines.spec(&settings);
        assert_eq!(baselines.name, "acme.baselines");
        assert_eq!(baselines.partitions, 1);
        assert!(baselines.configs.contains(&("cleanup.policy", "compact")));
        let sessions = TopicRole::Sessions.spec(&settings);
        assert_eq!(sessions.name, "acme.normalized.sessions");
        assert_eq!((sessions.partitions, sessions.replication_factor), (12, 3));
        assert!(sessions.configs.is_empty());
    }

    #[test]
    fn topic_names_are_unique() {
        let settings = TopicSettings::default();
        let mut names: Vec<String> = TopicRole::ALL
            .iter()
            .map(|r| r.spec(&settings).name)
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), TopicRole::ALL.len());
    }
}
