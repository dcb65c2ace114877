//! What a run answered: the normalized, dead-letter, enriched and alert topics read back and
//! compared, and the services' logs checked for panics.

use super::*;

/// Every record of `topic` (read_committed), decoded and projected: ingest times and source
/// offsets (which differ run to run) removed; sorted.
pub(super) async fn projected<T>(
    settings: &Settings,
    codec: &RegistryCodec,
    topic: TopicRole,
) -> Result<Vec<String>>
where
    T: serde::de::DeserializeOwned + serde::Serialize + apache_avro::AvroSchema + 'static,
{
    let mut out = Vec::new();
    for value in read_all(settings, &topic.spec(&settings.topics).name).await? {
        let record: T = codec.decode(&value).await?;
        let mut json = serde_json::to_value(&record)?;
        strip(&mut json);
        out.push(json.to_string());
    }
    out.sort();
    Ok(out)
}

pub(super) fn strip(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("ingest_time");
            map.remove("source_ref");
            map.values_mut().for_each(strip);
        }
        Value::Array(items) => items.iter_mut().for_each(strip),
        _ => {}
    }
}

/// Every record value of `topic`, read_committed, until 3 s pass without one.
pub(super) async fn read_all(settings: &Settings, topic: &str) -> Result<Vec<Vec<u8>>> {
    // To the partitions' ends, not until a quiet spell: after a broker restart the first fetch
    // of a partition can take longer than any quiet bound, and the read stopped short.
    let received =
        offport_tests::read_to_end(&settings.kafka, topic, Duration::from_secs(300)).await?;
    Ok(received.into_iter().map(|(_, _, value, _)| value).collect())
}

/// What a run produced, projected for comparison.
#[derive(Debug, PartialEq)]
pub(super) struct Answer {
    pub(super) sessions: Vec<String>,
    pub(super) events: Vec<String>,
    pub(super) contexts: Vec<String>,
    pub(super) enriched: Vec<String>,
    pub(super) alerts: Vec<String>,
    /// (SHA-256 of the original value, or "null", reason), sorted.
    pub(super) dead_letters: Vec<(String, String)>,
    /// The enriched sessions' ids per partition in the order the scorer reads them: the scorer's
    /// answer depends on it.
    pub(super) enriched_order: BTreeMap<i32, Vec<String>>,
}

/// The session ids of the enriched sessions topic, per partition, in offset order.
async fn enriched_order(
    settings: &Settings,
    codec: &RegistryCodec,
) -> Result<BTreeMap<i32, Vec<String>>> {
    let topic = TopicRole::EnrichedSessions.spec(&settings.topics).name;
    let mut out: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for (_, partition, value, _) in
        offport_tests::read_to_end(&settings.kafka, &topic, Duration::from_secs(300)).await?
    {
        let enriched: EnrichedSession = codec.decode(&value).await?;
        out.entry(partition)
            .or_default()
            .push(enriched.session.session_id);
    }
    Ok(out)
}

/// Where the enriched sessions' per-partition order differs, when it does (the sets compared
/// equal): the first place of each partition.
pub(super) fn order_differences(
    reference: &BTreeMap<i32, Vec<String>>,
    faulty: &BTreeMap<i32, Vec<String>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (partition, expected) in reference {
        let actual = faulty.get(partition).cloned().unwrap_or_default();
        if let Some(at) = expected
            .iter()
            .zip(&actual)
            .position(|(a, b)| a != b)
            .or((expected.len() != actual.len()).then(|| expected.len().min(actual.len())))
        {
            let moved = expected.iter().zip(&actual).filter(|(a, b)| a != b).count();
            out.push(format!(
                "partition {partition}: from position {at} ({} / {}), {moved} positions differ",
                expected.get(at).map_or("end", String::as_str),
                actual.get(at).map_or("end", String::as_str)
            ));
        }
    }
    out
}

pub(super) async fn answer(settings: &Settings) -> Result<Answer> {
    use sha2::Digest;
    let codec = RegistryCodec::new(&settings.registry)?;
    let mut dead_letters = Vec::new();
    for value in read_all(settings, &TopicRole::DeadLetter.spec(&settings.topics).name).await? {
        let letter: DeadLetter = codec.decode(&value).await?;
        let hash = match (&letter.original_value_sha256, &letter.original_value) {
            (Some(hash), _) => hash.clone(),
            (None, Some(value)) => hex::encode(sha2::Sha256::digest(value)),
            (None, None) => "null".to_string(),
        };
        dead_letters.push((hash, letter.reason.code().to_string()));
    }
    dead_letters.sort();
    Ok(Answer {
        sessions: projected::<NetworkSession>(settings, &codec, TopicRole::Sessions).await?,
        events: projected::<DeviceEvent>(settings, &codec, TopicRole::DeviceEvents).await?,
        contexts: projected::<DeviceContext>(settings, &codec, TopicRole::DeviceContexts).await?,
        enriched: projected::<EnrichedSession>(settings, &codec, TopicRole::EnrichedSessions)
            .await?,
        alerts: projected::<Finding>(settings, &codec, TopicRole::Alerts).await?,
        dead_letters,
        enriched_order: enriched_order(settings, &codec).await?,
    })
}

/// The corpus's records as (hash of the value, reason), sorted: what the dead letters of each
/// run must hold, besides the fleet's own.
pub(super) fn expected_dead_letters() -> Result<Vec<(String, String)>> {
    use sha2::Digest;
    let mut out = Vec::new();
    for (file, _) in CORPUS {
        for bad in offport_tests::bad_corpus(file)? {
            let hash = bad.value()?.map_or_else(
                || "null".to_string(),
                |v| hex::encode(sha2::Sha256::digest(&v)),
            );
            out.push((hash, bad.reason.clone()));
        }
    }
    out.sort();
    Ok(out)
}

/// Lines of the logs that say a service panicked.
pub(super) fn panics(logs: &[PathBuf]) -> Vec<String> {
    logs.iter()
        .flat_map(|log| [log.clone(), log.with_extension("err.log")])
        .filter_map(|path| std::fs::read_to_string(&path).ok().map(|text| (path, text)))
        .flat_map(|(path, text)| {
            text.lines()
                .filter(|l| l.contains("panicked"))
                .map(|l| format!("{}: {l}", path.display()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Compares two sorted lists as multisets, printing the first differences; `true` when equal.
pub(super) fn same(what: &str, reference: &[String], faulty: &[String]) -> bool {
    if reference == faulty {
        println!("  {what:<18} identical ({} records)", reference.len());
        return true;
    }
    let count = |list: &[String]| {
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for item in list {
            *counts.entry(item.clone()).or_default() += 1;
        }
        counts
    };
    let (a, b) = (count(reference), count(faulty));
    let mut lost = Vec::new();
    let mut extra = Vec::new();
    for item in a.keys().chain(b.keys()) {
        let diff = b.get(item).copied().unwrap_or(0) - a.get(item).copied().unwrap_or(0);
        if diff < 0 && !lost.contains(item) {
            lost.push(item.clone());
        } else if diff > 0 && !extra.contains(item) {
            extra.push(item.clone());
        }
    }
    println!(
        "  {what:<18} DIFFER: {} against {} records; {} missing or fewer in the faulty run, {} new or more often",
        reference.len(),
        faulty.len(),
        lost.len(),
        extra.len()
    );
    for item in lost.iter().take(3) {
        println!(
            "    missing: {}",
            item.chars().take(300).collect::<String>()
        );
    }
    for item in extra.iter().take(3) {
        println!(
            "    extra:   {}",
            item.chars().take(300).collect::<String>()
        );
    }
    // What differs inside records that are the same record otherwise (the same finding id, the
    // same session id): field by field.
    let parse = |items: &[String]| -> Vec<Value> {
        items
            .iter()
            .filter_map(|i| serde_json::from_str(i).ok())
            .collect()
    };
    let (lost, extra) = (parse(&lost), parse(&extra));
    for missing in lost.iter().take(5) {
        let id = |v: &Value| {
            ["finding_id", "session_id"]
                .iter()
                .find_map(|k| v.get(*k).cloned())
                .or_else(|| v.get("session").and_then(|s| s.get("session_id")).cloned())
        };
        let Some(other) = extra
            .iter()
            .find(|e| id(e).is_some() && id(e) == id(missing))
        else {
            continue;
        };
        if let (Some(a), Some(b)) = (missing.as_object(), other.as_object()) {
            let fields: Vec<String> = a
                .iter()
                .filter(|(k, v)| b.get(*k) != Some(*v))
                .map(|(k, v)| {
                    let cut = |x: &Value| x.to_string().chars().take(400).collect::<String>();
                    format!(
                        "{k}: reference {} / faulty {}",
                        cut(v),
                        b.get(k).map_or("absent".to_string(), cut)
                    )
                })
                .collect();
            println!("    {:?} differs in {}", id(missing), fields.join("; "));
        }
    }
    false
}

/// Where the raw records whose value hashes to one of `hashes` sit in the run of `settings`
/// (topic, partition, offset), with the offset their normalizer's group has committed there:
/// for a dead letter that is missing, whether its record was committed past.
pub(super) fn locate_raw(settings: &Settings, hashes: &[String]) -> Result<Vec<String>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use sha2::Digest;
    let mut out = Vec::new();
    for (topic, stage) in super::raw_topics(settings) {
        let reader: BaseConsumer = settings
            .kafka
            .client_config()
            .set("group.id", offport_tests::unique("chaos-locate"))
            .set("enable.auto.commit", "false")
            .create()?;
        let mut list = rdkafka::TopicPartitionList::new();
        let mut ends = std::collections::BTreeMap::new();
        for partition in 0..settings.topics.partitions {
            let (_, high) = reader.fetch_watermarks(&topic, partition, Duration::from_secs(10))?;
            ends.insert(partition, high);
            list.add_partition_offset(&topic, partition, rdkafka::Offset::Beginning)?;
        }
        reader.assign(&list)?;
        let group: BaseConsumer = settings
            .kafka
            .client_config()
            .set(
                "group.id",
                format!("{}{stage}", settings.pipeline.group_prefix),
            )
            .create()?;
        let committed = group.committed_offsets(list.clone(), Duration::from_secs(10))?;
        let mut left: usize = ends
            .values()
            .map(|e| usize::try_from(*e).unwrap_or(0))
            .sum();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while left > 0 && std::time::Instant::now() < deadline {
            let Some(Ok(message)) = reader.poll(Duration::from_millis(500)) else {
                continue;
            };
            left = left.saturating_sub(1);
            let hash = message.payload().map_or_else(
                || "null".to_string(),
                |v| hex::encode(sha2::Sha256::digest(v)),
            );
            if hashes.contains(&hash) {
                let at = committed
                    .find_partition(&topic, message.partition())
                    .map(|p| format!("{:?}", p.offset()))
                    .unwrap_or_default();
                out.push(format!(
                    "{} {topic}/{} offset {} (group {stage} committed {at}, end {})",
                    hash.get(..12).unwrap_or(&hash),
                    message.partition(),
                    message.offset(),
                    ends.get(&message.partition()).copied().unwrap_or(-1)
                ));
            }
        }
    }
    Ok(out)
}
