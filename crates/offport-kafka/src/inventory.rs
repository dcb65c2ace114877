//! The device inventory topic: the organisation's device to group, role and owner, which
//! `offportctl inventory publish` writes and normalize-mdm reads as one more MDM source (see
//! [`offport_core::normalize::mdm::InventoryEntry`]).
//!
//! The topic is compacted and keyed by the device id in lower case, so the latest entry of
//! each device is what it keeps. Values are the entries' JSON (`"kind":
//! "offport.inventory.v1"`), raw records like the other sources, so that a user can also
//! produce them with any client.

use std::collections::BTreeMap;
use std::time::Duration;

use offport_core::normalize::mdm::InventoryEntry;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::settings::Settings;
use crate::topics::{ensure_topics, TopicRole};

/// What went wrong with the inventory topic.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The broker refused or could not be reached.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The topic could not be created.
    #[error("{0}")]
    Topic(#[from] crate::topics::TopicError),
    /// A record on the topic is not an inventory entry.
    #[error("{topic} partition {partition} offset {offset}: {why}")]
    Record {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
        /// Why.
        why: String,
    },
}

/// Publishes `entries` (creating the topic when missing), waiting for every acknowledgement.
/// Returns the topic's name.
pub async fn publish(
    settings: &Settings,
    entries: &[InventoryEntry],
) -> Result<String, InventoryError> {
    let spec = TopicRole::Inventory.spec(&settings.topics);
    ensure_topics(&settings.kafka.client_config(), std::slice::from_ref(&spec)).await?;
    let producer: FutureProducer = settings
        .kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?;
    for entry in entries {
        let key = entry.key();
        let value = entry.to_raw_json();
        producer
            .send(
                FutureRecord::to(&spec.name).key(&key).payload(&value),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(error, _)| error)?;
    }
    Ok(spec.name)
}

/// The latest entry of every device on the topic (empty when the topic does not exist).
pub fn read(settings: &Settings) -> Result<BTreeMap<String, InventoryEntry>, InventoryError> {
    let topic = TopicRole::Inventory.spec(&settings.topics).name;
    let consumer: BaseConsumer = settings
        .kafka
        .client_config()
        .set("group.id", "offportctl-inventory")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len());
    let mut ends = BTreeMap::new();
    let mut list = TopicPartitionList::new();
    for partition in 0..i32::try_from(partitions).unwrap_or(0) {
        let (low, high) = consumer.fetch_watermarks(&topic, partition, timeout)?;
        if high > low {
            ends.insert(partition, high);
            list.add_partition_offset(&topic, partition, Offset::Offset(low))?;
        }
    }
    let mut latest = BTreeMap::new();
    if ends.is_empty() {
        return Ok(latest);
    }
    consumer.assign(&list)?;
    let mut idle = 0;
    while !ends.is_empty() {
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            // Transaction markers and compacted gaps end a partition without a record.
            idle += 1;
            if idle > 20 {
                break;
            }
            let positions = consumer.position()?;
            for element in positions.elements() {
                if let Offset::Offset(next) = element.offset() {
                    if ends
                        .get(&element.partition())
                        .is_some_and(|end| next >= *end)
                    {
                        ends.remove(&element.partition());
                    }
                }
            }
            continue;
        };
        idle = 0;
        let message = message?;
        let (partition, offset) = (message.partition(), message.offset());
        if ends.get(&partition).is_some_and(|end| offset + 1 >= *end) {
            ends.remove(&partition);
        }
        let Some(key) = message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
        else {
            continue;
        };
        match message.payload() {
            None => {
                latest.remove(&key);
            }
            Some(bytes) => {
                let record = |why: String| InventoryError::Record {
                    topic: topic.clone(),
                    partition,
                    offset,
                    why,
                };
                let mut value: serde_json::Value =
                    serde_json::from_slice(bytes).map_err(|e| record(e.to_string()))?;
                if let Some(map) = value.as_object_mut() {
                    map.remove("kind");
                }
                let entry: InventoryEntry =
                    serde_json::from_value(value).map_err(|e| record(e.to_string()))?;
                latest.insert(key, entry);
            }
        }
    }
    Ok(latest)
}
