//! The topology's topics exist on the broker with the settings the stages rely on.

use std::time::Duration;

use anyhow::{Context, Result};
use offport_kafka::settings::TopicSettings;
use offport_kafka::topics::{ensure_topics, TopicError, TopicOutcome, TopicRole};
use offport_tests::{endpoints, unique};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

#[tokio::test]
async fn ensure_topics_creates_compacted_baselines_and_co_partitioned_device_topics() -> Result<()>
{
    let endpoints = endpoints().await?;
    let config = endpoints.kafka().client_config();
    let settings = TopicSettings {
        prefix: format!("{}.", unique("it-layout")),
        partitions: 4,
        replication_factor: 1,
    };
    let specs: Vec<_> = TopicRole::ALL.iter().map(|r| r.spec(&settings)).collect();
    let first = ensure_topics(&config, &specs).await?;
    assert!(
        first.iter().all(|(_, o)| *o == TopicOutcome::Created),
        "{first:?}"
    );
    // Idempotent: a second run finds everything in place.
    let second = ensure_topics(&config, &specs).await?;
    assert!(
        second.iter().all(|(_, o)| *o == TopicOutcome::Existed),
        "{second:?}"
    );

    let admin: AdminClient<DefaultClientContext> = config.create()?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))?;
    let partitions = |name: &str| {
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .map(|t| t.partitions().len())
    };
    for role in TopicRole::ALL.iter().filter(|r| r.co_partitioned()) {
        assert_eq!(partitions(&role.spec(&settings).name), Some(4), "{role:?}");
    }
    let baselines = TopicRole::Baselines.spec(&settings).name;
    assert_eq!(partitions(&baselines), Some(1));
    assert_eq!(
        partitions(&TopicRole::DeadLetter.spec(&settings).name),
        Some(4)
    );

    let described = admin
        .describe_configs(
            [&ResourceSpecifier::Topic(&baselines)],
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    let resource = described
        .into_iter()
        .next()
        .context("no describe result")??;
    let policy = resource
        .get("cleanup.policy")
        .and_then(|e| e.value.clone())
        .context("cleanup.policy not described")?;
    assert_eq!(policy, "compact");
    Ok(())
}

#[tokio::test]
async fn a_device_topic_with_the_wrong_partition_count_is_refused() -> Result<()> {
    let endpoints = endpoints().await?;
    let config = endpoints.kafka().client_config();
    let prefix = format!("{}.", unique("it-mismatch"));
    let two = TopicSettings {
        prefix: prefix.clone(),
        partitions: 2,
        replication_factor: 1,
    };
    ensure_topics(&config, &[TopicRole::DeviceEvents.spec(&two)]).await?;
    let three = TopicSettings {
        partitions: 3,
        ..two
    };
    let error = ensure_topics(&config, &[TopicRole::DeviceEvents.spec(&three)])
        .await
        .err()
        .context("a 2-partition device topic was accepted as 3")?;
    assert!(
        matches!(
            error,
            TopicError::Layout {
                actual: 2,
                expected: 3,
                ..
            }
        ),
        "{error}"
    );
    Ok(())
}
