//! Dead letters in Kafka Connect's layout, read by a plain consumer, and `offportctl
//! dead-letters list|show|replay` over both layouts, against the real broker and registry.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::process::Output;

use anyhow::Result;
use offport_core::normalize::mdm::MdmNormalizer;
use offport_core::normalize::Limits;
use offport_kafka::settings::{DeadLetterFormat, Settings};
use offport_kafka::topics::TopicRole;
use offport_tests::{isolated_settings, produce, read_committed, Background, RawInput};

fn offportctl(settings: &Settings, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_offportctl"))
        .args(args)
        .env(
            "OFFPORT__KAFKA__BOOTSTRAP_SERVERS",
            &settings.kafka.bootstrap_servers,
        )
        .env("OFFPORT__REGISTRY__URL", &settings.registry.url)
        .env("OFFPORT__TOPICS__PREFIX", &settings.topics.prefix)
        .env_remove("OFFPORT_CONFIG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_layout_letters_and_the_cli_over_both_layouts() -> Result<()> {
    let roles = [
        TopicRole::RawMdm,
        TopicRole::DeviceContexts,
        TopicRole::DeadLetter,
    ];
    let mut settings = isolated_settings("it-dlq", 1, 7, &roles).await?;
    let raw = TopicRole::RawMdm.spec(&settings.topics).name;
    let dlq = TopicRole::DeadLetter.spec(&settings.topics).name;
    let bad = |value: &str, trace: &str| {
        let mut input = RawInput::value(value.as_bytes().to_vec());
        input.key = Some(b"ios-91c2".to_vec());
        input
            .headers
            .push(("trace-id".to_string(), trace.as_bytes().to_vec()));
        input
    };

    // Connect layout: the original bytes and headers, and Connect's error headers.
    settings.pipeline.dead_letter_format = DeadLetterFormat::Connect;
    produce(
        &settings.kafka,
        &raw,
        &[bad("<plist>not json</plist>", "t1")],
    )
    .await?;
    let stage = Background::normalizer(
        &settings,
        "normalize-mdm",
        TopicRole::RawMdm,
        MdmNormalizer::new(Limits::default()),
    )?;
    let letters = read_committed(&settings.kafka, &dlq, 1).await?;
    stage.stop().await?;
    let (key, _, value, headers) = &letters[0];
    assert_eq!(key.as_deref(), Some(&b"ios-91c2"[..]));
    assert_eq!(text(value), "<plist>not json</plist>", "the original bytes");
    for (name, expected) in [
        ("trace-id", "t1"),
        ("__connect.errors.topic", raw.as_str()),
        ("__connect.errors.partition", "0"),
        ("__connect.errors.offset", "0"),
        ("__connect.errors.connector.name", "offport-normalize-mdm"),
        ("__connect.errors.stage", "VALUE_CONVERTER"),
        (
            "__connect.errors.exception.class.name",
            "offport.DeadLetterReason.UNKNOWN_FORMAT",
        ),
    ] {
        assert_eq!(
            headers.get(name).map(String::as_str),
            Some(expected),
            "{name}: {headers:?}"
        );
    }
    assert!(headers["__connect.errors.exception.message"].contains("not JSON"));

    // The envelope layout for the next one, from the same stage restarted.
    settings.pipeline.dead_letter_format = DeadLetterFormat::Envelope;
    produce(&settings.kafka, &raw, &[bad("also not json", "t2")]).await?;
    let stage = Background::normalizer(
        &settings,
        "normalize-mdm",
        TopicRole::RawMdm,
        MdmNormalizer::new(Limits::default()),
    )?;
    read_committed(&settings.kafka, &dlq, 2).await?;
    stage.stop().await?;

    // list: both letters, each in its layout, with the record's source.
    let listed = offportctl(&settings, &["dead-letters", "list"]);
    let out = text(&listed.stdout);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(out.contains("0:0  connect  normalize-mdm"), "{out}");
    assert!(out.contains("envelope normalize-mdm"), "{out}");
    assert!(out.contains(&format!("{raw}:0:1")), "{out}");
    assert!(out.contains("2 of 2 dead letters"), "{out}");
    // show: the original record in full.
    let shown = offportctl(&settings, &["dead-letters", "show", "0:0"]);
    let out = text(&shown.stdout);
    assert!(out.contains("value       <plist>not json</plist>"), "{out}");
    assert!(out.contains("header      trace-id=t1"), "{out}");
    assert!(
        !out.contains("__connect.errors"),
        "error headers are not the record's: {out}"
    );
    // replay: the originals, with their headers and without the error headers.
    let target = format!("{}replayed", settings.topics.prefix);
    let spec = offport_kafka::topics::TopicSpec {
        name: target.clone(),
        ..TopicRole::RawMdm.spec(&settings.topics)
    };
    offport_kafka::topics::ensure_topics(&settings.kafka.client_config(), &[spec]).await?;
    let replayed = offportctl(&settings, &["dead-letters", "replay", "--to", &target]);
    assert!(replayed.status.success(), "{}", text(&replayed.stderr));
    assert!(text(&replayed.stdout).contains("re-produced 2 of 2"));
    let back = read_committed(&settings.kafka, &target, 2).await?;
    let mut values: Vec<(String, String)> = back
        .iter()
        .map(|(_, _, value, headers)| (text(value), headers["trace-id"].clone()))
        .collect();
    values.sort();
    assert_eq!(
        values,
        [
            ("<plist>not json</plist>".to_string(), "t1".to_string()),
            ("also not json".to_string(), "t2".to_string()),
        ]
    );
    assert!(back.iter().all(
        |(key, _, _, headers)| key.as_deref() == Some(&b"ios-91c2"[..])
            && headers
                .keys()
                .all(|k| !k.starts_with("__connect") && !k.starts_with("offport.errors"))
    ));
    Ok(())
}
