//! The device inventory on the real broker: `offportctl inventory publish` (the library call
//! behind it) writes the compacted topic keyed by the device id in lower case, `list` reads the
//! latest entry of each device back, and normalize-mdm reads the topic beside the raw MDM
//! reports, turning each entry into a `DeviceContext` with the group and role.

#![allow(clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use anyhow::Result;
use offport_core::model::{DeviceContext, SourceFormat};
use offport_core::normalize::mdm::{parse_inventory, MdmNormalizer};
use offport_core::normalize::Limits;
use offport_kafka::metrics::PipelineMetrics;
use offport_kafka::registry::RegistryCodec;
use offport_kafka::runtime::{run_normalizer, PipelineOptions};
use offport_kafka::shutdown::Shutdown;
use offport_kafka::topics::TopicRole;
use offport_tests::{isolated_settings, produce, read_committed, RawInput};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_entries_are_listed_and_become_device_contexts() -> Result<()> {
    let roles = [
        TopicRole::RawMdm,
        TopicRole::Inventory,
        TopicRole::DeviceContexts,
        TopicRole::DeadLetter,
    ];
    let settings = isolated_settings("it-inventory", 3, 7, &roles).await?;
    let first = parse_inventory(
        "device_id,group,role,owner\n00008110-001A2C3E0E01801E,engineering,developer,alice@example.com\nandroid-7f3a,sales,,bob@example.com\n",
    )
    .map_err(anyhow::Error::msg)?;
    let topic = offport_kafka::inventory::publish(&settings, &first).await?;
    assert_eq!(topic, TopicRole::Inventory.spec(&settings.topics).name);
    // A later entry for a device replaces the first one in the listing.
    let moved = parse_inventory("- {device_id: android-7f3a, group: field-sales}\n")
        .map_err(anyhow::Error::msg)?;
    offport_kafka::inventory::publish(&settings, &moved).await?;
    let listed = {
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || offport_kafka::inventory::read(&settings)).await??
    };
    assert_eq!(
        listed.keys().cloned().collect::<Vec<_>>(),
        ["00008110-001a2c3e0e01801e", "android-7f3a"]
    );
    assert_eq!(listed["android-7f3a"].group.as_deref(), Some("field-sales"));
    assert_eq!(listed["android-7f3a"].owner, None);
    assert_eq!(
        listed["00008110-001a2c3e0e01801e"].owner.as_deref(),
        Some("alice@example.com")
    );

    // normalize-mdm reads the inventory topic beside the raw MDM topic.
    let mdm_topic = TopicRole::RawMdm.spec(&settings.topics).name;
    produce(
        &settings.kafka,
        &mdm_topic,
        &[RawInput::value(
            r#"{"device_id":"ios-91c2","platform":"ios","supervised":true,"event_time":1795168800,"inventory_complete":true,"apps":[]}"#,
        )],
    )
    .await?;
    let codec = Arc::new(RegistryCodec::new(&settings.registry)?);
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = PipelineMetrics::register(&mut registry);
    let shutdown = Shutdown::new();
    let options = PipelineOptions::for_stage("normalize-mdm", vec![mdm_topic, topic], &settings);
    let task = {
        let (settings, metrics, shutdown) =
            (settings.clone(), Arc::clone(&metrics), shutdown.clone());
        tokio::spawn(async move {
            run_normalizer(
                &settings,
                options,
                MdmNormalizer::new(Limits::default()),
                codec,
                metrics,
                shutdown,
            )
            .await
        })
    };
    let output = TopicRole::DeviceContexts.spec(&settings.topics).name;
    let received = read_committed(&settings.kafka, &output, 4).await?;
    shutdown.trigger();
    task.await??;
    let codec = RegistryCodec::new(&settings.registry)?;
    let mut contexts: Vec<DeviceContext> = Vec::new();
    for (_, _, value, _) in &received {
        contexts.push(codec.decode(value).await?);
    }
    let inventory: Vec<(&str, Option<&str>, Option<&str>)> = {
        let mut v: Vec<_> = contexts
            .iter()
            .filter(|c| c.source_format == SourceFormat::OffportInventory)
            .map(|c| {
                (
                    c.device_id.as_str(),
                    c.device_group.as_deref(),
                    c.device_role.as_deref(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        inventory,
        [
            (
                "00008110-001a2c3e0e01801e",
                Some("engineering"),
                Some("developer")
            ),
            ("android-7f3a", Some("field-sales"), None),
            ("android-7f3a", Some("sales"), None),
        ]
    );
    assert!(contexts
        .iter()
        .any(|c| c.device_id == "ios-91c2" && c.source_format == SourceFormat::OffportJson));
    Ok(())
}
