//! The pipeline in one process: raw records through the normalizers, the as-of join and the
//! scorer of `offport-core`, the same code the Kafka services run, with no broker.
//!
//! Records are taken in the order given (a simulated fleet is in event-time order; files
//! written by `offportctl simulate` keep it). A record the normalizers reject is kept as a
//! [`DeadLetter`] with its reason, as the services would send it to the dead-letter topic. At
//! the end the joiner flushes every pending session (the end-of-input rule), so a bounded
//! replay emits everything.

use std::collections::BTreeMap;

use offport_core::baseline::BaselineSet;
use offport_core::join::{JoinConfig, JoinInput, JoinStats, Joiner};
use offport_core::learn::{LearnConfig, Learner, Proposal};
use offport_core::model::{DeadLetterReason, EnrichedSession, EpochMillis, Finding};
use offport_core::normalize::edr::EdrNormalizer;
use offport_core::normalize::mdm::MdmNormalizer;
use offport_core::normalize::proxy::{ProxyConfig, ProxyNormalizer};
use offport_core::normalize::{Normalized, Normalizer, RawRecord};
use offport_core::score::{ScoreConfig, ScoreStats, Scorer};
use serde::Serialize;

use crate::sim::Stream;

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The baselines (with their versions and effective times).
    pub baselines: BaselineSet,
    /// Join settings; its TimeWindow is raised to the baselines' longest.
    pub join: JoinConfig,
    /// Scoring settings.
    pub score: ScoreConfig,
    /// The time the records count as read (normalizers refuse event times more than a day
    /// after it).
    pub ingest_time: EpochMillis,
    /// The proxy normalizer's configuration, as the services take it from `normalize.*`:
    /// formats, the address map that attributes Zeek and EVE records to devices, the default
    /// device, the flow join's bounds, and the input bounds all three normalizers take.
    pub proxy: ProxyConfig,
    /// Learn what the fleet shows under these guards while replaying (`offportctl baselines
    /// learn`); the proposal is in [`ReplayOutcome::learned`].
    pub learn: Option<LearnConfig>,
}

impl ReplayOptions {
    /// The shipped default baseline plus the documents of `yaml` (an organisation baseline
    /// such as [`crate::sim::Fleet::baseline_yaml`]), default join and scoring settings.
    pub fn with_baseline_yaml(
        yaml: &str,
        ingest_time: EpochMillis,
    ) -> Result<Self, offport_core::baseline::BaselineError> {
        let mut baselines = BaselineSet::with_defaults()?;
        for document in offport_core::baseline::parse_documents(yaml)? {
            baselines.apply(document)?;
        }
        Ok(Self {
            baselines,
            join: JoinConfig::default(),
            score: ScoreConfig::default(),
            ingest_time,
            proxy: ProxyConfig::default(),
            learn: None,
        })
    }
}

/// A record the normalizers rejected.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// Stream of the record.
    pub stream: Stream,
    /// Its position in the stream (0-based).
    pub offset: i64,
    /// Why.
    pub reason: DeadLetterReason,
    /// What is wrong, for a human.
    pub message: String,
}

/// Counts of a replay.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReplayCounts {
    /// Raw records read, by stream.
    pub records: BTreeMap<Stream, u64>,
    /// Normalized sessions, events and contexts.
    pub normalized: u64,
    /// Enriched sessions out of the join.
    pub enriched: u64,
    /// Finding records out of the scorer (every revision).
    pub finding_records: u64,
    /// Records rejected.
    pub dead_letters: u64,
}

/// The pipeline in one process.
#[derive(Debug)]
pub struct Replay {
    proxy: ProxyNormalizer,
    edr: EdrNormalizer,
    mdm: MdmNormalizer,
    joiner: Joiner,
    scorer: Scorer,
    ingest_time: EpochMillis,
    offsets: BTreeMap<Stream, i64>,
    counts: ReplayCounts,
    findings: Vec<Finding>,
    dead_letters: Vec<DeadLetter>,
    learner: Option<Learner>,
}

/// What a replay produced.
#[derive(Debug, Clone)]
pub struct ReplayOutcome {
    /// Every finding record in emission order (new findings and their updates).
    pub findings: Vec<Finding>,
    /// Rejected records.
    pub dead_letters: Vec<DeadLetter>,
    /// Counts.
    pub counts: ReplayCounts,
    /// The join's counters.
    pub join: JoinStats,
    /// The scorer's counters.
    pub score: ScoreStats,
    /// What the fleet shows, when the replay learned ([`ReplayOptions::learn`]).
    pub learned: Option<Proposal>,
}

impl ReplayOutcome {
    /// The latest revision of each finding, ordered by first seen, then id.
    pub fn latest(&self) -> Vec<Finding> {
        latest_revisions(&self.findings)
    }
}

/// The latest revision of each finding id, ordered by first seen, then id.
pub fn latest_revisions(findings: &[Finding]) -> Vec<Finding> {
    let mut latest: BTreeMap<&str, &Finding> = BTreeMap::new();
    for finding in findings {
        let slot = latest.entry(&finding.finding_id).or_insert(finding);
        if finding.revision >= slot.revision {
            *slot = finding;
        }
    }
    let mut out: Vec<Finding> = latest.into_values().cloned().collect();
    out.sort_by(|a, b| (a.first_seen, &a.finding_id).cmp(&(b.first_seen, &b.finding_id)));
    out
}

impl Replay {
    /// A replay under `options`.
    pub fn new(options: ReplayOptions) -> Self {
        // One `normalize.max_record_bytes` for the three normalizers, as in the services.
        let limits = options.proxy.limits;
        let join = JoinConfig {
            time_window_ms: options
                .join
                .time_window_ms
                .max(options.baselines.longest_time_window()),
            ..options.join
        };
        let baselines = std::sync::Arc::new(options.baselines);
        let learner = options
            .learn
            .map(|config| Learner::new(config, std::sync::Arc::clone(&baselines)));
        Self {
            proxy: ProxyNormalizer::configured(options.proxy),
            edr: EdrNormalizer::new(limits),
            mdm: MdmNormalizer::new(limits),
            joiner: Joiner::new(join),
            scorer: Scorer::new(baselines, options.score),
            ingest_time: options.ingest_time,
            offsets: BTreeMap::new(),
            counts: ReplayCounts::default(),
            findings: Vec::new(),
            dead_letters: Vec::new(),
            learner,
        }
    }

    /// Feeds one raw record of `stream`, keyed by `key` (the device id a producer would give
    /// it, or none). Its offset is its position in the stream so far.
    pub fn push(&mut self, stream: Stream, key: Option<&str>, value: &[u8]) {
        self.push_with_headers(stream, key, &[], value);
    }

    /// [`Self::push`] with the record's headers (a PCAPdroid export's `offport.device_id`).
    pub fn push_with_headers(
        &mut self,
        stream: Stream,
        key: Option<&str>,
        headers: &[(String, Option<Vec<u8>>)],
        value: &[u8],
    ) {
        let offset = {
            let next = self.offsets.entry(stream).or_insert(0);
            let offset = *next;
            *next += 1;
            offset
        };
        let record = RawRecord {
            key: key.map(str::as_bytes),
            headers,
            ..RawRecord::new(stream.file_name(), 0, offset, value)
        };
        for normalized in self.normalize(stream, &record) {
            self.feed(normalized);
        }
    }

    /// Normalizes one raw record of `stream` (counted); a rejected one is kept as a dead
    /// letter and gives nothing. Split from [`Self::feed`] so a caller can order normalized
    /// records (a merge of Kafka partitions by event time) before they are joined.
    pub fn normalize(&mut self, stream: Stream, record: &RawRecord<'_>) -> Vec<Normalized> {
        *self.counts.records.entry(stream).or_default() += 1;
        let normalizer: &mut dyn Normalizer = match stream {
            Stream::Proxy => &mut self.proxy,
            Stream::Edr => &mut self.edr,
            Stream::Mdm => &mut self.mdm,
        };
        match normalizer.normalize(record, self.ingest_time) {
            Ok(records) => records,
            Err(rejection) => {
                self.reject(stream, record.offset, rejection.reason, rejection.message);
                vec![]
            }
        }
    }

    /// Keeps a dead letter for a record of `stream` at `offset`.
    pub fn reject(
        &mut self,
        stream: Stream,
        offset: i64,
        reason: DeadLetterReason,
        message: String,
    ) {
        self.counts.dead_letters += 1;
        self.dead_letters.push(DeadLetter {
            stream,
            offset,
            reason,
            message,
        });
    }

    /// Joins and scores one normalized record.
    pub fn feed(&mut self, normalized: Normalized) {
        self.counts.normalized += 1;
        let input = match normalized {
            Normalized::Session(s) => JoinInput::Session(s),
            Normalized::Event(e) => JoinInput::Event(e),
            Normalized::Context(c) => JoinInput::Context(c),
        };
        let enriched = self.joiner.push(input);
        self.score(enriched);
    }

    /// Counts a record of `stream` that arrives already normalized (it is then [`Self::feed`]).
    pub fn count(&mut self, stream: Stream) {
        *self.counts.records.entry(stream).or_default() += 1;
    }

    fn score(&mut self, enriched: Vec<EnrichedSession>) {
        for session in enriched {
            self.counts.enriched += 1;
            let findings = self.scorer.score(&session);
            if let Some(learner) = &mut self.learner {
                learner.observe(&session);
                for finding in &findings {
                    learner.observe_finding(finding);
                }
            }
            self.counts.finding_records += findings.len() as u64;
            self.findings.extend(findings);
        }
    }

    /// Findings so far (every revision).
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// Counts so far.
    pub fn counts(&self) -> &ReplayCounts {
        &self.counts
    }

    /// Ends the replay: the joiner flushes what it holds, everything is scored.
    pub fn finish(mut self) -> ReplayOutcome {
        let rest = self.joiner.flush();
        self.score(rest);
        ReplayOutcome {
            findings: self.findings,
            dead_letters: self.dead_letters,
            counts: self.counts,
            join: self.joiner.stats(),
            score: self.scorer.stats(),
            learned: self.learner.map(|learner| learner.propose()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;
    use crate::sim::{simulate, FleetConfig};

    fn options(org: &str) -> ReplayOptions {
        ReplayOptions::with_baseline_yaml(org, 1_900_000_000_000).unwrap()
    }

    fn run(config: &FleetConfig) -> ReplayOutcome {
        let fleet = simulate(config).unwrap();
        let mut replay = Replay::new(options(&fleet.baseline_yaml));
        for record in &fleet.records {
            replay.push(
                record.stream,
                Some(&record.device_id),
                record.value.as_bytes(),
            );
        }
        replay.finish()
    }

    #[test]
    fn a_replay_twice_gives_identical_findings() {
        let config = FleetConfig {
            devices: 30,
            hours: 6,
            infected_share: 0.3,
            ..FleetConfig::default()
        };
        let a = run(&config);
        let b = run(&config);
        assert!(!a.findings.is_empty());
        assert_eq!(a.findings, b.findings);
        assert_eq!(a.counts, b.counts);
    }

    #[test]
    fn simulated_records_all_normalize_and_every_session_is_enriched() {
        let config = FleetConfig {
            devices: 20,
            hours: 4,
            ..FleetConfig::default()
        };
        let fleet = simulate(&config).unwrap();
        let sessions = fleet.stream(Stream::Proxy).count() as u64;
        let outcome = run(&config);
        assert!(
            outcome.dead_letters.is_empty(),
            "{:?}",
            &outcome.dead_letters[..outcome.dead_letters.len().min(5)]
        );
        assert_eq!(outcome.counts.enriched, sessions);
    }

    #[test]
    fn a_bad_record_becomes_a_dead_letter_and_the_rest_goes_on() {
        let config = FleetConfig {
            devices: 2,
            hours: 2,
            ..FleetConfig::default()
        };
        let fleet = simulate(&config).unwrap();
        let mut replay = Replay::new(options(&fleet.baseline_yaml));
        replay.push(Stream::Proxy, None, b"{\"dst_port\": 99999");
        for record in &fleet.records {
            replay.push(
                record.stream,
                Some(&record.device_id),
                record.value.as_bytes(),
            );
        }
        let outcome = replay.finish();
        assert_eq!(outcome.dead_letters.len(), 1);
        assert_eq!(
            outcome.dead_letters[0].reason,
            DeadLetterReason::Unparseable
        );
        assert_eq!(outcome.dead_letters[0].offset, 0);
        assert_eq!(
            outcome.counts.enriched,
            fleet.stream(Stream::Proxy).count() as u64
        );
    }

    /// A device known only through the Android Management API gets the group its policy names,
    /// so the `developers` group's tooling exception applies to it.
    #[test]
    fn an_amapi_devices_policy_is_its_group_for_device_group_baselines() {
        let start = 1_795_132_800_000;
        let org = crate::sim::organisation_baseline(start);
        let findings = |policy: &str| {
            let mut replay = Replay::new(options(&org));
            let device = format!(
                r#"{{"name":"enterprises/LC01/devices/dev1","managementMode":"DEVICE_OWNER","policyName":"enterprises/LC01/policies/{policy}","lastStatusReportTime":"2026-11-20T00:10:00Z","applicationReports":[{{"packageName":"com.example.devtool","applicationSource":"INSTALLED_FROM_PLAY_STORE","state":"INSTALLED"}}]}}"#
            );
            replay.push(Stream::Mdm, None, device.as_bytes());
            for i in 0..3_i64 {
                let session = format!(
                    r#"{{"session_id":"s{i}","device_id":"dev1","platform":"ANDROID","app_id":"com.example.devtool","start_time":{},"duration_ms":2000,"dst_ip":"10.1.2.3","dst_port":3000,"transport":"TCP","sensor_protocol":"http","http_host":"10.1.2.3"}}"#,
                    start + 3_600_000 + i * 60_000
                );
                replay.push(Stream::Proxy, None, session.as_bytes());
            }
            let outcome = replay.finish();
            assert!(
                outcome.dead_letters.is_empty(),
                "{:?}",
                outcome.dead_letters
            );
            outcome.latest()
        };
        assert_eq!(
            findings("developers"),
            vec![],
            "the developers group allows HTTP on 3000"
        );
        let staff = findings("fleet-default");
        assert!(
            staff
                .iter()
                .any(|f| f.analytic == offport_core::model::Analytic::NonStandardPortAndroid),
            "{staff:?}"
        );
    }

    /// An iOS device known to its MDM only by its UDID (MicroMDM gives no group) gets its group
    /// from the inventory, whatever the UDID's case, and the group's baseline applies.
    #[test]
    fn the_inventory_gives_a_device_its_group_for_device_group_baselines() {
        use offport_core::normalize::mdm::InventoryEntry;
        let start = 1_795_132_800_000;
        let org = crate::sim::organisation_baseline(start);
        let udid = "00008110-001A2C3E0E01801E";
        let findings = |group: Option<&str>| {
            let mut replay = Replay::new(options(&org));
            if let Some(group) = group {
                let entry = InventoryEntry {
                    device_id: udid.to_string(),
                    group: Some(group.to_string()),
                    role: Some("engineer".to_string()),
                    owner: Some("alice@example.com".to_string()),
                    effective_time: None,
                };
                replay.push(
                    Stream::Mdm,
                    Some(&entry.key()),
                    entry.to_raw_json().as_bytes(),
                );
            }
            for i in 0..3_i64 {
                let session = format!(
                    r#"{{"session_id":"s{i}","device_id":"{}","platform":"IOS","app_id":"com.example.devtool","start_time":{},"duration_ms":2000,"dst_ip":"10.1.2.3","dst_port":3000,"transport":"TCP","sensor_protocol":"http","http_host":"10.1.2.3"}}"#,
                    udid.to_ascii_lowercase(),
                    start + 3_600_000 + i * 60_000
                );
                replay.push(Stream::Proxy, None, session.as_bytes());
            }
            let outcome = replay.finish();
            assert!(
                outcome.dead_letters.is_empty(),
                "{:?}",
                outcome.dead_letters
            );
            outcome.latest()
        };
        assert_eq!(
            findings(Some("developers")),
            vec![],
            "developers allow HTTP on 3000"
        );
        let without = findings(None);
        assert!(
            without
                .iter()
                .any(|f| f.analytic == offport_core::model::Analytic::NonStandardPortIos),
            "{without:?}"
        );
        assert!(!findings(Some("sales")).is_empty());
    }
}
