//! `offportctl dead-letters`: the dead-letter topic as an operator reads it, in either layout
//! (`pipeline.dead_letter_format`): the `DeadLetter` Avro envelope, or Kafka Connect's (the
//! original record with `__connect.errors.*` headers). `replay` re-produces the original
//! records, after a fix, to the topics they came from (or `--to`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use offport_core::model::DeadLetter;
use offport_kafka::registry::RegistryCodec;
use offport_kafka::settings::Settings;
use offport_kafka::topics::TopicRole;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// Which letters an action takes.
#[derive(Args, Debug, Clone, Default)]
pub struct Filter {
    /// Only letters of this reason (`UNPARSEABLE`, `OVERSIZE`, ...).
    #[arg(long)]
    reason: Option<String>,
    /// Only letters of this stage (`normalize-proxy`, ...).
    #[arg(long)]
    stage: Option<String>,
    /// Only letters of records read from this topic.
    #[arg(long)]
    source_topic: Option<String>,
}

/// `offportctl dead-letters` actions.
#[derive(Subcommand, Debug)]
pub enum DeadLettersAction {
    /// One line per letter: where it is, the stage, the reason, where the record came from, why.
    List {
        #[command(flatten)]
        filter: Filter,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One letter in full: headers, key and value (text where it is text, else hex).
    Show {
        /// `<partition>:<offset>` on the dead-letter topic.
        at: String,
    },
    /// Re-produce the original records (key, value, headers without the error headers).
    Replay {
        #[command(flatten)]
        filter: Filter,
        /// Produce to this topic instead of each record's source topic.
        #[arg(long)]
        to: Option<String>,
        /// Only say what would be produced.
        #[arg(long)]
        dry_run: bool,
    },
}

/// A dead letter, from either layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Letter {
    /// Partition on the dead-letter topic.
    pub partition: i32,
    /// Offset there.
    pub offset: i64,
    /// `envelope` or `connect`.
    pub layout: &'static str,
    /// Topic, partition and offset of the original record.
    pub source: (String, i32, i64),
    /// Stage that rejected it.
    pub stage: String,
    /// Reason code.
    pub reason: String,
    /// Why.
    pub message: String,
    /// The original key, value and headers.
    pub key: Option<Vec<u8>>,
    /// Original value.
    pub value: Option<Vec<u8>>,
    /// Original headers (the error headers taken off).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

fn header_text(headers: &[(String, Option<Vec<u8>>)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.as_ref())
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn is_error_header(name: &str) -> bool {
    name.starts_with("__connect.errors.") || name.starts_with("offport.errors.")
}

impl Letter {
    async fn read(message: &impl Message, codec: &RegistryCodec) -> Result<Self> {
        let headers: Vec<(String, Option<Vec<u8>>)> = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        let at = (message.partition(), message.offset());
        if let Some(topic) = header_text(&headers, "__connect.errors.topic") {
            let number = |name: &str| {
                header_text(&headers, name)
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(-1)
            };
            return Ok(Self {
                partition: at.0,
                offset: at.1,
                layout: "connect",
                source: (
                    topic,
                    i32::try_from(number("__connect.errors.partition")).unwrap_or(-1),
                    number("__connect.errors.offset"),
                ),
                stage: header_text(&headers, "offport.errors.stage").unwrap_or_default(),
                reason: header_text(&headers, "offport.errors.reason").unwrap_or_default(),
                message: header_text(&headers, "__connect.errors.exception.message")
                    .unwrap_or_default(),
                key: message.key().map(<[u8]>::to_vec),
                value: message.payload().map(<[u8]>::to_vec),
                headers: headers
                    .into_iter()
                    .filter(|(k, _)| !is_error_header(k))
                    .collect(),
            });
        }
        let payload = message
            .payload()
            .context("a dead letter without a value and without Connect headers")?;
        let letter: DeadLetter = codec
            .decode(payload)
            .await
            .with_context(|| format!("dead letter {}:{} is not a DeadLetter", at.0, at.1))?;
        Ok(Self {
            partition: at.0,
            offset: at.1,
            layout: "envelope",
            source: (
                letter.source_topic,
                letter.source_partition,
                letter.source_offset,
            ),
            stage: letter.stage,
            reason: letter.reason.code().to_string(),
            message: letter.message,
            key: letter.original_key,
            value: letter.original_value,
            headers: letter
                .original_headers
                .into_iter()
                .map(|h| (h.key, h.value))
                .collect(),
        })
    }

    fn matches(&self, filter: &Filter) -> bool {
        let same = |want: &Option<String>, have: &str| {
            want.as_deref().is_none_or(|w| w.eq_ignore_ascii_case(have))
        };
        same(&filter.reason, &self.reason)
            && same(&filter.stage, &self.stage)
            && same(&filter.source_topic, &self.source.0)
    }
}

/// Every letter on the dead-letter topic, in partition and offset order.
pub async fn read_all(settings: &Settings, codec: &RegistryCodec) -> Result<Vec<Letter>> {
    let topic = TopicRole::DeadLetter.spec(&settings.topics).name;
    let consumer: BaseConsumer = settings
        .kafka
        .client_config()
        .set("group.id", "offportctl-dead-letters")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len());
    if partitions == 0 {
        bail!("topic {topic} does not exist");
    }
    let mut ends = BTreeMap::new();
    let mut list = TopicPartitionList::new();
    for partition in 0..i32::try_from(partitions)? {
        let (low, high) = consumer.fetch_watermarks(&topic, partition, timeout)?;
        if high > low {
            ends.insert(partition, high);
            list.add_partition_offset(&topic, partition, Offset::Offset(low))?;
        }
    }
    let mut letters = Vec::new();
    if ends.is_empty() {
        return Ok(letters);
    }
    consumer.assign(&list)?;
    let mut idle = 0;
    while !ends.is_empty() {
        let Some(message) =
            tokio::task::block_in_place(|| consumer.poll(Duration::from_millis(500)))
        else {
            // Transaction markers end a partition without a record.
            idle += 1;
            if idle > 20 {
                break;
            }
            for element in consumer.position()?.elements() {
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
        if ends
            .get(&message.partition())
            .is_some_and(|end| message.offset() + 1 >= *end)
        {
            ends.remove(&message.partition());
        }
        letters.push(Letter::read(&message, codec).await?);
    }
    letters.sort_by_key(|l| (l.partition, l.offset));
    Ok(letters)
}

fn shown(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => format!("hex:{}", hex::encode(bytes)),
    }
}

/// Runs an action.
pub async fn run(settings: &Settings, action: DeadLettersAction) -> Result<()> {
    let codec = RegistryCodec::new(&settings.registry)?;
    let letters = read_all(settings, &codec).await?;
    match action {
        DeadLettersAction::List { filter, limit } => {
            let chosen: Vec<&Letter> = letters.iter().filter(|l| l.matches(&filter)).collect();
            for l in chosen.iter().take(limit) {
                let mut why = l.message.clone();
                if why.chars().count() > 100 {
                    why = why.chars().take(100).collect::<String>() + "...";
                }
                println!(
                    "{}:{}  {:<8} {:<16} {:<14} {}:{}:{}  {why}",
                    l.partition,
                    l.offset,
                    l.layout,
                    l.stage,
                    l.reason,
                    l.source.0,
                    l.source.1,
                    l.source.2
                );
            }
            println!(
                "{} of {} dead letters{}",
                chosen.len().min(limit),
                letters.len(),
                if chosen.len() > limit {
                    format!(" ({} more match; --limit)", chosen.len() - limit)
                } else {
                    String::new()
                }
            );
            Ok(())
        }
        DeadLettersAction::Show { at } => {
            let (partition, offset) = at
                .split_once(':')
                .and_then(|(p, o)| Some((p.parse::<i32>().ok()?, o.parse::<i64>().ok()?)))
                .with_context(|| format!("{at:?} is not <partition>:<offset>"))?;
            let l = letters
                .iter()
                .find(|l| (l.partition, l.offset) == (partition, offset))
                .with_context(|| format!("no dead letter at {at}"))?;
            println!(
                "letter      {}:{} ({} layout)",
                l.partition, l.offset, l.layout
            );
            println!(
                "source      {} partition {} offset {}",
                l.source.0, l.source.1, l.source.2
            );
            println!("stage       {}", l.stage);
            println!("reason      {}", l.reason);
            println!("message     {}", l.message);
            for (k, v) in &l.headers {
                println!(
                    "header      {k}={}",
                    v.as_deref().map(shown).unwrap_or_default()
                );
            }
            println!(
                "key         {}",
                l.key.as_deref().map(shown).unwrap_or_default()
            );
            println!(
                "value       {}",
                l.value.as_deref().map(shown).unwrap_or_default()
            );
            Ok(())
        }
        DeadLettersAction::Replay {
            filter,
            to,
            dry_run,
        } => {
            let chosen: Vec<&Letter> = letters.iter().filter(|l| l.matches(&filter)).collect();
            let producer: FutureProducer = settings
                .kafka
                .client_config()
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .create()?;
            for l in &chosen {
                let topic = to.clone().unwrap_or_else(|| l.source.0.clone());
                if dry_run {
                    println!("would produce {}:{} to {topic}", l.partition, l.offset);
                    continue;
                }
                let mut headers = OwnedHeaders::new();
                for (key, value) in &l.headers {
                    headers = headers.insert(Header {
                        key,
                        value: value.as_deref(),
                    });
                }
                let mut record: FutureRecord<'_, [u8], [u8]> =
                    FutureRecord::to(&topic).headers(headers);
                if let Some(key) = &l.key {
                    record = record.key(key.as_slice());
                }
                if let Some(value) = &l.value {
                    record = record.payload(value.as_slice());
                }
                producer
                    .send(record, Duration::from_secs(30))
                    .await
                    .map_err(|(error, _)| error)
                    .with_context(|| {
                        format!("producing {}:{} to {topic}", l.partition, l.offset)
                    })?;
            }
            println!(
                "{} {} of {} dead letters",
                if dry_run {
                    "would re-produce"
                } else {
                    "re-produced"
                },
                chosen.len(),
                letters.len()
            );
            Ok(())
        }
    }
}
