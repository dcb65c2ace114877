//! `cargo xtask demo`: the main job, as far as it exists today.
//!
//! Today that is the data plane's foundation: the local stack comes up, one example record of
//! each normalized contract goes through the real schema registry onto its device-keyed topic,
//! and a consumer group reads them back and decodes them. The normalizers, joiner and scorer
//! are not built yet, so the demo says so and produces no findings rather than pretend.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use offport_core::examples;
use offport_core::model::{DeviceContext, DeviceEvent, NetworkSession};
use offport_core::schema::Contract;
use offport_devstack::stack::StackOptions;
use offport_kafka::registry::{schema_id, RegistryCodec};
use offport_kafka::settings::{KafkaSettings, RegistrySettings, TopicSettings};
use offport_kafka::topics::TopicRole;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

pub(crate) fn run(options: &StackOptions) -> Result<ExitCode> {
    let (bootstrap, registry, _) = crate::ensure_stack(options)?;
    crate::runtime()?.block_on(contracts_round_trip(options, bootstrap, registry))?;
    println!();
    println!("Not built yet: the normalizers (raw formats -> Avro), the joiner and the scorer.");
    println!("Until they land this demo stops here and raises no findings.");
    println!("The stack is left running; `cargo xtask stack down` stops it.");
    Ok(ExitCode::SUCCESS)
}

async fn contracts_round_trip(
    options: &StackOptions,
    bootstrap: String,
    registry: String,
) -> Result<()> {
    let kafka = KafkaSettings {
        bootstrap_servers: bootstrap,
        ..KafkaSettings::default()
    };
    let codec = RegistryCodec::new(&RegistrySettings {
        url: registry,
        ..RegistrySettings::default()
    })?;
    let topics = TopicSettings {
        partitions: options.partitions,
        ..TopicSettings::default()
    };
    let producer: FutureProducer = kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .create()?;

    let session = examples::network_session();
    let event = examples::device_event();
    let context = examples::device_context();
    let sends = [
        (
            TopicRole::Sessions,
            Contract::NetworkSession,
            session.device_id.clone(),
            codec
                .encode_value(
                    &TopicRole::Sessions.spec(&topics).name,
                    Contract::NetworkSession,
                    &session,
                )
                .await?,
        ),
        (
            TopicRole::DeviceEvents,
            Contract::DeviceEvent,
            event.device_id.clone(),
            codec
                .encode_value(
                    &TopicRole::DeviceEvents.spec(&topics).name,
                    Contract::DeviceEvent,
                    &event,
                )
                .await?,
        ),
        (
            TopicRole::DeviceContexts,
            Contract::DeviceContext,
            context.device_id.clone(),
            codec
                .encode_value(
                    &TopicRole::DeviceContexts.spec(&topics).name,
                    Contract::DeviceContext,
                    &context,
                )
                .await?,
        ),
    ];
    let mut produced = Vec::new();
    for (role, contract, key, payload) in &sends {
        let topic = role.spec(&topics).name;
        let id = schema_id(payload)?;
        let delivery = producer
            .send(
                FutureRecord::to(&topic).key(key).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("producing to {topic}"))?;
        println!(
            "produced {:<15} key {:<13} -> {topic} [{}] @{}, schema id {id}, {} bytes",
            contract.name(),
            key,
            delivery.partition,
            delivery.offset,
            payload.len()
        );
        produced.push((topic, delivery.partition, delivery.offset));
    }
    // A fresh consumer group reads from the beginning and picks out the offsets just produced,
    // so earlier demo runs on the same stack do not confuse it.
    let group = format!("offport-demo-{}", uuid::Uuid::new_v4());
    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()?;
    let names: Vec<String> = sends
        .iter()
        .map(|(role, ..)| role.spec(&topics).name)
        .collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    consumer.subscribe(&name_refs)?;
    let mut pending = produced;
    while !pending.is_empty() {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .with_context(|| {
                format!("{} record(s) did not come back within 30s", pending.len())
            })??;
        let here = (
            message.topic().to_string(),
            message.partition(),
            message.offset(),
        );
        if !pending.contains(&here) {
            continue;
        }
        pending.retain(|p| *p != here);
        let payload = message.payload().context("record without a value")?;
        let topic = message.topic();
        let summary = if topic == TopicRole::Sessions.spec(&topics).name {
            let s: NetworkSession = codec.decode(payload).await?;
            format!(
                "{} {}/{:?} -> {}:{} {:?}",
                s.device_id,
                s.app_id.unwrap_or_default(),
                s.transport,
                s.dst_ip,
                s.dst_port,
                s.protocol
            )
        } else if topic == TopicRole::DeviceEvents.spec(&topics).name {
            let e: DeviceEvent = codec.decode(payload).await?;
            format!(
                "{} {} {:?}",
                e.device_id,
                e.app_id.unwrap_or_default(),
                e.kind
            )
        } else {
            let c: DeviceContext = codec.decode(payload).await?;
            format!(
                "{} supervised={:?} apps={}",
                c.device_id,
                c.supervised,
                c.apps.len()
            )
        };
        println!(
            "consumed {topic} [{}] @{}: {summary}",
            message.partition(),
            message.offset()
        );
    }
    Ok(())
}
