//! The input of both runs: a simulated fleet, the raw fixtures in the sensors' formats and
//! the bad-record corpus, produced to the raw topics.

use super::*;

/// The raw fixtures (`tests/fixtures/raw`: each tool's records as it writes them) as records:
/// topic, key, `offport.device_id` header, values. Each sensor's records share one key, so one
/// partition holds them in the order the sensor wrote them (Zeek and EVE application records
/// before their connection's record), whatever the partition count.
pub(super) fn sensor_records() -> Vec<(TopicRole, &'static str, Option<&'static str>, Vec<String>)>
{
    use offport_tests::{fixture_lines, raw_fixture};
    let zeek: Vec<String> = [
        "zeek/ssl.log",
        "zeek/http.log",
        "zeek/dns.log",
        "zeek/conn.log",
        "zeek/conn-iso8601.log",
    ]
    .into_iter()
    .flat_map(fixture_lines)
    .collect();
    let mdm: Vec<String> = [
        "mdm/micromdm-webhook.jsonl",
        "mdm/nanomdm-webhook.jsonl",
        "mdm/amapi-devices.jsonl",
    ]
    .into_iter()
    .flat_map(fixture_lines)
    .collect();
    vec![
        (
            TopicRole::RawProxy,
            "pcapdroid-android-7f3a",
            Some("android-7f3a"),
            vec![
                raw_fixture("pcapdroid.csv"),
                raw_fixture("pcapdroid-unquoted.csv"),
            ],
        ),
        (TopicRole::RawProxy, "zeek-tun0", None, zeek),
        (
            TopicRole::RawProxy,
            "suricata-tun0",
            None,
            fixture_lines("suricata/eve.json"),
        ),
        (
            TopicRole::RawEdr,
            "usagestats",
            None,
            vec![raw_fixture("edr/usagestats.csv")],
        ),
        (TopicRole::RawMdm, "mdm", None, mdm),
    ]
}

/// Which stream a corpus file belongs to.
pub(super) const CORPUS: [(&str, Stream); 3] = [
    ("proxy.jsonl", Stream::Proxy),
    ("edr.jsonl", Stream::Edr),
    ("mdm.jsonl", Stream::Mdm),
];

/// What a run pair reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Input {
    /// The simulated fleet with its baseline, and the bad-record corpus: all five services.
    Fleet,
    /// The raw fixtures in the sensors' own formats: the normalizers.
    Sensors,
}

/// Creates a run's topics and produces its input to them.
pub(super) async fn prepare(
    settings: &Settings,
    input: Input,
    fleet: &offport_backtest::sim::Fleet,
) -> Result<()> {
    let specs: Vec<_> = TopicRole::ALL
        .iter()
        .map(|role| role.spec(&settings.topics))
        .collect();
    ensure_topics(&settings.kafka.client_config(), &specs).await?;
    let producer: rdkafka::producer::FutureProducer = settings
        .kafka
        .client_config()
        .set("enable.idempotence", "true")
        .create()?;
    if input == Input::Sensors {
        for (role, key, header, records) in sensor_records() {
            let topic = role.spec(&settings.topics).name;
            for value in records {
                let mut headers = rdkafka::message::OwnedHeaders::new();
                if let Some(device) = header {
                    headers = headers.insert(rdkafka::message::Header {
                        key: offport_core::normalize::proxy::DEVICE_HEADER,
                        value: Some(device),
                    });
                }
                let out = rdkafka::producer::FutureRecord::<str, str>::to(&topic)
                    .key(key)
                    .payload(&value)
                    .headers(headers);
                producer
                    .send(out, Duration::from_secs(30))
                    .await
                    .map_err(|(e, _)| anyhow::anyhow!("{key}: {e}"))?;
            }
        }
        return Ok(());
    }
    let codec = RegistryCodec::new(&settings.registry)?;
    crate::demo::publish_baseline(settings, &codec, &fleet.baseline_yaml).await?;
    offport_replay::produce_raw(settings, &fleet.records, &mut |_| {}).await?;
    for (file, stream) in CORPUS {
        let role = match stream {
            Stream::Proxy => TopicRole::RawProxy,
            Stream::Edr => TopicRole::RawEdr,
            Stream::Mdm => TopicRole::RawMdm,
        };
        let topic = role.spec(&settings.topics).name;
        offport_tests::produce_bad_corpus(
            &settings.kafka,
            &topic,
            None,
            &offport_tests::bad_corpus(file)?,
        )
        .await?;
    }
    Ok(())
}
