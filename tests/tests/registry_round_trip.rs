//! A NetworkSession goes through the real schema registry and the real broker and comes back
//! equal: registration, Confluent wire format, consumer-group consumption, decoding.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use apache_avro::Schema;
use offport_core::examples;
use offport_core::model::NetworkSession;
use offport_core::schema::Contract;
use offport_kafka::registry::{schema_id, CodecError, RegistryCodec, WIRE_HEADER_LEN};
use offport_kafka::settings::{RegistrySettings, TopicSettings};
use offport_kafka::topics::{ensure_topics, TopicOutcome, TopicRole};
use offport_tests::{endpoints, unique};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

#[tokio::test]
async fn network_session_round_trips_through_registry_and_broker() -> Result<()> {
    let endpoints = endpoints().await?;
    let kafka = endpoints.kafka();

    // A topic of our own, created the way the product creates its topics.
    let topic_settings = TopicSettings {
        prefix: format!("{}.", unique("it")),
        partitions: 3,
        replication_factor: 1,
    };
    let spec = TopicRole::Sessions.spec(&topic_settings);
    let outcome = ensure_topics(&kafka.client_config(), std::slice::from_ref(&spec)).await?;
    assert_eq!(outcome, vec![(spec.name.clone(), TopicOutcome::Created)]);

    // Encode: registers the schema under <topic>-value and prefixes the Confluent header.
    let codec = RegistryCodec::new(&endpoints.registry())?;
    let session = examples::network_session();
    let payload = codec
        .encode_value(&spec.name, Contract::NetworkSession, &session)
        .await?;
    assert_eq!(payload.first(), Some(&0u8), "magic byte");
    assert!(payload.len() > WIRE_HEADER_LEN);
    let id = schema_id(&payload)?;

    // The id is the registry's: it resolves to the contract's schema, and the subject lists it.
    let registered: serde_json::Value =
        ureq::get(&format!("{}/schemas/ids/{id}", endpoints.registry_url))
            .call()?
            .body_mut()
            .read_json()?;
    let registered_schema = Schema::parse_str(
        registered["schema"]
            .as_str()
            .context("registry answer has no schema")?,
    )?;
    assert_eq!(
        registered_schema.canonical_form(),
        Contract::NetworkSession.schema()?.canonical_form()
    );
    let latest: serde_json::Value = ureq::get(&format!(
        "{}/subjects/{}-value/versions/latest",
        endpoints.registry_url, spec.name
    ))
    .call()?
    .body_mut()
    .read_json()?;
    assert_eq!(latest["id"].as_u64(), Some(u64::from(id)));

    // Produce keyed by device id.
    let producer: FutureProducer = kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .create()?;
    let delivery = producer
        .send(
            FutureRecord::to(&spec.name)
                .key(&session.device_id)
                .payload(&payload),
            Duration::from_secs(15),
        )
        .await
        .map_err(|(e, _)| e)?;

    // Consume in a consumer group, read_committed, and commit.
    let group = unique("it-group");
    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    consumer.subscribe(&[&spec.name])?;
    let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
        .await
        .context("no record within 60s")??;
    assert_eq!(message.partition(), delivery.partition);
    assert_eq!(message.offset(), delivery.offset);
    assert_eq!(message.key(), Some(session.device_id.as_bytes()));
    let received = message.payload().context("record has no value")?;
    assert_eq!(received, payload.as_slice(), "bytes changed in transit");

    // Decode through the registry (writer schema fetched by id) back to an equal value.
    let decoded: NetworkSession = codec.decode(received).await?;
    assert_eq!(decoded, session);

    consumer.commit_message(&message, CommitMode::Sync)?;
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(&spec.name, message.partition());
    let committed = consumer.committed_offsets(wanted, Duration::from_secs(10))?;
    let offset = committed
        .find_partition(&spec.name, message.partition())
        .map(|p| p.offset());
    ensure!(
        offset == Some(Offset::Offset(message.offset() + 1)),
        "group {group} committed {offset:?}"
    );
    Ok(())
}

#[tokio::test]
async fn decoding_rejects_bytes_that_are_not_wire_format() -> Result<()> {
    let endpoints = endpoints().await?;
    let codec = RegistryCodec::new(&endpoints.registry())?;
    let error = codec
        .decode::<NetworkSession>(b"{\"json\": true}")
        .await
        .err()
        .context("JSON bytes decoded as Avro")?;
    assert!(matches!(error, CodecError::WireFormat(_)), "{error}");
    assert!(
        !error.is_transient(),
        "a bad record must be dead-lettered, not retried"
    );
    Ok(())
}

#[tokio::test]
async fn an_unreachable_registry_is_a_transient_error() -> Result<()> {
    // A real fault: nothing listens on this loopback port, so the connection is refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    drop(listener);
    let codec = RegistryCodec::new(&RegistrySettings {
        url: format!("http://127.0.0.1:{port}"),
        timeout_ms: 2_000,
        ..RegistrySettings::default()
    })?;
    let error = codec
        .encode_value(
            "nowhere",
            Contract::NetworkSession,
            &examples::network_session(),
        )
        .await
        .err()
        .context("encoding succeeded without a registry")?;
    assert!(
        error.is_transient(),
        "must be retried, not dead-lettered: {error}"
    );
    Ok(())
}
