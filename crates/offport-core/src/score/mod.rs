//! Scoring: enriched sessions judged against the baseline in force, findings out.
//!
//! Two analytics:
//!
//! - **Non-standard port** (AN1827 on Android, AN1828 on iOS; MITRE DET0706, T1509). It fires when
//!   a recognised protocol uses a destination port outside the approved set for that protocol in
//!   the merged baseline of the device, app, role and service class, and no enterprise exception
//!   covers the destination. Evidence then raises the score: recurrence to the same destination,
//!   a stable interval within BeaconIntervalTolerance, one persistent connection, background
//!   without a foreground transition, a locked device, no recent user interaction, a background
//!   job or service start just before, an unmanaged or unapproved app, an unsupervised iOS device
//!   where SupervisedRequired. On iOS, where per-app attribution is weaker, the analytic anchors on
//!   the network mismatch plus MDM context; sessions without an app still score, at lower
//!   confidence.
//! - **Application-layer C2** (seed 004; MITRE T1437), on any port. It fires when two independent
//!   indicators agree, one of them about the session itself (SNI/Host mismatch, a destination
//!   known only by its address, an algorithmic name, high payload entropy, a persistent
//!   background session, a protocol off its approved ports); beacon periodicity and uniform sizes
//!   count as one together, since every machine-timed heartbeat shows both. The score must reach
//!   [`ScoreConfig::c2_min_score`].
//!
//! # Where things are
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the [`Scorer`]: a session in, the baseline in force, the rules, findings out (open, update, suppress) |
//! | `rules/mod.rs` | the rules' entry point and the context evidence both analytics add |
//! | `rules/non_standard_port.rs` | the non-standard port analytic |
//! | `rules/app_layer_c2.rs` | the application-layer C2 analytic and its indicators |
//! | `evidence.rs` | collected evidence, weights, words, score and severity |
//! | `history.rs` | a destination's recent sessions and their sorted series |
//! | `stats.rs` | robust series statistics and a destination's recurrence |
//! | `hosts.rs` | IP literals, algorithmic names, public addresses |
//! | `changelog.rs` | the scorer's state in its changelog |
//! | `tests.rs` | scenario tests, one or more per evidence item and baseline element |
//!
//! # Deduplication and suppression
//!
//! One open finding per (device, app, analytic, destination, port). Its id is a hash of those and
//! of the start of its suppression window, so it is the same in every replay. Within the window
//! ([`ScoreConfig::suppression_window_ms`] from the first session) later sessions update the
//! finding: a new revision with the same id is emitted only when the score rises or a new evidence
//! item appears; otherwise the session is counted and nothing is emitted. A session that arrives
//! out of order, up to one window before the finding's first session, also updates it (the id
//! stays that of the first session to arrive). After the window a new finding id opens.
//!
//! # Beacon statistics
//!
//! Per destination the scorer keeps the last [`ScoreConfig::history`] session starts and sizes
//! within TimeWindow. Periodicity follows RITA's beacon analysis: the Bowley (quartile) skew and
//! the median absolute deviation relative to the median, of the inter-arrival times and of the
//! sizes. A series is beacon-like when its dispersion (MAD/median) is at or under
//! BeaconIntervalVarianceThreshold, or its RITA-style score reaches CadenceAnomalyThreshold.
//! The series are kept sorted as sessions come and go, so every session is judged on exact
//! statistics of the history as it stands (inter-arrival times count in whole milliseconds up to
//! 49.7 days). The changelog holds each destination's samples; the series are rebuilt from them.

use std::cell::OnceCell;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet, FxHasher};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::baseline::{
    host_has_suffix, in_ranges, BaselineSet, Destination, EffectiveBaseline, ResolveCache,
    ResolvedSpan, ScopeContext,
};
use crate::durable::{self, Durable, RestoreError, StateChange};
use crate::model::{
    Analytic, AppProtocol, AppRunState, AttributionSource, EnrichedSession, EpochMillis, Evidence,
    EvidenceKind, Finding, FindingStatus, LockState, Platform, ProtocolEvidence, SourceFormat,
};
use crate::protocol::{shannon_entropy, shannon_entropy_of};

mod changelog;
mod evidence;
mod history;
mod hosts;
mod rules;
mod stats;

use changelog::*;
use evidence::*;
use history::*;
use hosts::*;
use rules::*;
use stats::*;

pub use hosts::looks_algorithmic;
pub use stats::{series_stats, SeriesStats};

/// Tuning of the scorer that is not a baseline element.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreConfig {
    /// How long a finding id stays open for updates.
    pub suppression_window_ms: i64,
    /// Sessions kept per destination for recurrence statistics.
    pub history: usize,
    /// Sessions to one destination within TimeWindow that count as repeated.
    pub repeated_sessions: usize,
    /// Sessions needed before periodicity and size uniformity are judged.
    pub min_series: usize,
    /// A background-execution event this close before a session "immediately preceded" it.
    pub preceding_execution_ms: i64,
    /// Networking-API calls before a session that make a burst.
    pub api_burst_calls: i64,
    /// Size dispersion (MAD/median of bytes each way) at or under which sizes are uniform.
    pub uniform_size_dispersion: f64,
    /// Minimum score of an application-layer C2 finding.
    pub c2_min_score: i32,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        Self {
            suppression_window_ms: 24 * 3_600_000,
            history: 32,
            repeated_sessions: 3,
            min_series: 8,
            preceding_execution_ms: 120_000,
            api_burst_calls: 30,
            uniform_size_dispersion: 0.05,
            c2_min_score: 40,
        }
    }
}

/// Counters of the scorer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct ScoreStats {
    /// Sessions scored.
    pub sessions: u64,
    /// New findings emitted.
    pub new_findings: u64,
    /// Finding updates emitted.
    pub updates: u64,
    /// Sessions that matched an open finding without changing it.
    pub suppressed: u64,
    /// Sessions that would have raised a finding but an enterprise exception covered.
    pub excepted: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OpenFinding {
    finding: Finding,
    /// The evidence kinds the finding holds, as [`kind_bit`]s.
    kinds: u64,
    window_start: EpochMillis,
}

fn flow_hash(parts: &[&str], port: i32) -> u64 {
    // FxHash has no random key: the same in every run and process. 64 bits make collisions
    // between destinations of one fleet negligible.
    let mut hasher = FxHasher::default();
    for part in parts {
        part.hash(&mut hasher);
    }
    port.hash(&mut hasher);
    hasher.finish()
}

/// The scorer's state and logic.
#[derive(Debug, Default)]
pub struct Scorer {
    baselines: Arc<BaselineSet>,
    cache: ResolveCache,
    config: ScoreConfig,
    histories: FxHashMap<u64, History>,
    open: FxHashMap<u64, OpenFinding>,
    newest: EpochMillis,
    since_expiry: usize,
    stats: ScoreStats,
    /// Keys changed since the last drain, when journaling (see [`Durable`]).
    journal: Option<ScoreJournal>,
}

/// Sessions between two expiry sweeps at least; the sweep walks all state, so it also waits for
/// as many sessions as half the entries it would walk (constant work per session on average).
const EXPIRE_EVERY: usize = 4_096;

/// Sessions warmed together before they are scored ([`Scorer::score_all`]): enough loads in
/// flight to overlap their cache misses, few enough that what they touch stays in the L1/L2
/// caches until it is scored. 8, 16 and 32 all gained in the core bench; 16 is in the middle.
pub const WARM_GROUP: usize = 16;

impl Scorer {
    /// A scorer judging against `baselines` (a set, or a snapshot shared with other scorers),
    /// with a resolve cache of its own.
    pub fn new(baselines: impl Into<Arc<BaselineSet>>, config: ScoreConfig) -> Self {
        Self {
            baselines: baselines.into(),
            config,
            ..Self::default()
        }
    }

    /// This scorer resolving through `cache`, shared with the other scorers of the same
    /// baseline snapshot (see [`ResolveCache`]).
    #[must_use]
    pub fn with_resolve_cache(mut self, cache: ResolveCache) -> Self {
        self.cache = cache;
        self
    }

    /// Judges against `baselines` from now on: a live update from the baselines topic, a
    /// snapshot every task of a stage shares.
    pub fn set_baselines(&mut self, baselines: Arc<BaselineSet>) {
        self.baselines = baselines;
    }

    /// The cache of merged baselines.
    pub fn resolve_cache(&self) -> &ResolveCache {
        &self.cache
    }

    /// The baselines.
    pub fn baselines(&self) -> &BaselineSet {
        &self.baselines
    }

    /// Counters so far.
    pub fn stats(&self) -> ScoreStats {
        self.stats
    }

    /// Destinations with recurrence history.
    pub fn tracked_destinations(&self) -> usize {
        self.histories.len()
    }

    /// Open findings.
    pub fn open_findings(&self) -> usize {
        self.open.len()
    }

    /// Approximate heap bytes of the scorer state.
    pub fn state_bytes(&self) -> usize {
        let histories: usize = self
            .histories
            .values()
            .map(|h| std::mem::size_of::<(u64, History)>() + h.heap_bytes())
            .sum();
        let open: usize = self
            .open
            .values()
            .map(|o| {
                std::mem::size_of::<(u64, OpenFinding)>() + o.finding.evidence.len() * 160 + 256
            })
            .sum();
        histories + open
    }

    /// Reads, without changing anything, the state that scoring `enriched` will read: the hash
    /// table slot of its destination's history, the history's oldest, newest and last-hour
    /// samples and every cache line of its sorted series. Called for a few upcoming sessions in a row, their cache misses
    /// (independent of one another) overlap, where inside [`Scorer::score`] each stalls in
    /// turn; the sessions are then scored from warm caches. [`Scorer::score_all`] does this for
    /// a batch; a caller that interleaves several scorers calls it itself. The result means
    /// nothing (it keeps the reads from being optimised away).
    pub fn warm(&self, enriched: &EnrichedSession) -> u64 {
        let (_, key) = history_key(enriched);
        match self.histories.get(&key) {
            Some(history) => {
                // The samples scoring reads (the oldest for the window, the newest, the last
                // hour's boundary) and every cache line of the sorted series (16 values each).
                let samples = &history.samples;
                let starts = [
                    samples.front(),
                    samples.back(),
                    samples.get(history.hour_from),
                ]
                .into_iter()
                .flatten()
                .fold(0, |acc, s| acc ^ s.start.unsigned_abs());
                let sorted = history
                    .sorted
                    .iter()
                    .step_by(16)
                    .fold(0, |acc, v| acc ^ u64::from(*v));
                starts ^ sorted
            }
            None => key,
        }
    }

    /// Scores `sessions` in order, exactly as [`Scorer::score`] one by one would, handing each
    /// session's findings to `each` with the session's index. Before each group of
    /// [`WARM_GROUP`] sessions is scored, the next group is warmed ([`Scorer::warm`]).
    pub fn score_all(
        &mut self,
        sessions: &[EnrichedSession],
        mut each: impl FnMut(usize, Vec<Finding>),
    ) {
        for (group, chunk) in sessions.chunks(WARM_GROUP).enumerate() {
            let start = group * WARM_GROUP;
            let next = sessions.get(start + WARM_GROUP..).unwrap_or_default();
            let touched = next
                .iter()
                .take(WARM_GROUP)
                .fold(0, |acc, e| acc ^ self.warm(e));
            std::hint::black_box(touched);
            for (offset, enriched) in chunk.iter().enumerate() {
                each(start + offset, self.score(enriched));
            }
        }
    }

    /// Scores one enriched session; returns the new findings and finding updates it causes.
    pub fn score(&mut self, enriched: &EnrichedSession) -> Vec<Finding> {
        self.stats.sessions += 1;
        let session = &enriched.session;
        let start = session.start_time;
        self.newest = self.newest.max(start);
        self.since_expiry += 1;
        if self.since_expiry >= EXPIRE_EVERY.max((self.histories.len() + self.open.len()) / 2) {
            self.expire();
        }
        let context = ScopeContext::of(enriched);
        let (host, key) = history_key(enriched);
        if let Some(journal) = &mut self.journal {
            journal.histories.insert(key);
            journal.meta = true;
        }
        let history = self.histories.entry(key).or_default();
        // The baseline in force: the history's memo while it holds (same set, same scope
        // context, within the span of the versions it was resolved from), else resolved anew.
        // Device, app and destination are the history's key; the rest of the context is checked.
        let context_key = context_hash(&context);
        let generation = self.baselines.generation();
        let baseline = match &history.baseline {
            Some(memo) if memo.context == context_key && memo.span.holds(generation, start) => {
                Arc::clone(&memo.span.baseline)
            }
            _ => {
                let span = self.baselines.resolve_span(&self.cache, &context, start);
                let baseline = Arc::clone(&span.baseline);
                history.baseline = Some(BaselineMemo {
                    context: context_key,
                    span,
                });
                baseline
            }
        };
        history.push(
            Sample {
                start,
                bytes_out: saturating_u32(session.bytes_out),
                bytes_in: saturating_u32(session.bytes_in),
            },
            self.config.history,
            baseline.thresholds.time_window_ms,
        );
        let candidate = session.protocol != AppProtocol::Unknown
            && session.protocol_evidence != ProtocolEvidence::None
            && !baseline.permits(session.protocol, session.transport, session.dst_port);
        if let Some(host) = host {
            history.verdict(host);
        }
        let history: &History = history;
        let recurrence = recurrence(&self.config, history, &baseline, host);

        // First pass without words: most sessions end here, or in an open finding that
        // absorbs them.
        let port_analytic = if session.platform == Platform::Ios {
            Analytic::NonStandardPortIos
        } else {
            Analytic::NonStandardPortAndroid
        };
        let judge = Judged {
            enriched,
            baseline: &baseline,
            recurrence: &recurrence,
            host,
            off_baseline: candidate,
        };
        let rules = Rules {
            config: &self.config,
        };
        let port = candidate
            .then(|| rules.collect(port_analytic, &judge, false))
            .flatten();
        let c2 = rules.collect(Analytic::AppLayerC2, &judge, false);
        if port.is_none() && c2.is_none() {
            return vec![];
        }
        // Exceptions are consulted only when a finding would be raised: most sessions never
        // get this far, and the check walks every exception of the merged baseline.
        let mut host_buffer = [""; 3];
        let mut host_count = 0;
        for (slot, h) in host_buffer.iter_mut().zip(all_hosts(enriched)) {
            *slot = h;
            host_count += 1;
        }
        let hosts = host_buffer.get(..host_count).unwrap_or_default();
        let excused = baseline
            .exception_for(&Destination {
                app_id: session.app_id.as_deref(),
                ip: session.dst_ip.parse().ok(),
                hosts,
                sni: session.tls.as_ref().and_then(|t| t.sni.as_deref()),
                port: session.dst_port,
                transport: session.transport,
            })
            .is_some();
        if excused {
            self.stats.excepted += 1;
            return vec![];
        }

        // Emitting needs the scorer mutably: the statistics are settled off the history first.
        let settled = recurrence.settled();
        let judge = Judged {
            enriched,
            baseline: &baseline,
            recurrence: &settled,
            host,
            off_baseline: candidate,
        };
        let mut findings = Vec::new();
        if let Some(dry) = port {
            findings.extend(self.emit(&judge, port_analytic, &dry));
        }
        if let Some(dry) = c2 {
            findings.extend(self.emit(&judge, Analytic::AppLayerC2, &dry));
        }
        findings
    }

    /// Drops recurrence history and open findings that can no longer matter.
    pub fn expire(&mut self) {
        self.since_expiry = 0;
        let newest = self.newest;
        let window = self.config.suppression_window_ms;
        let journal = &mut self.journal;
        self.open.retain(|key, open| {
            let keep = open.window_start + window > newest;
            if let (false, Some(journal)) = (keep, journal.as_mut()) {
                journal.open.insert(*key);
            }
            keep
        });
        // The longest TimeWindow any scope could set is unknown here; the suppression window
        // bounds history too, which is at least as long as the default TimeWindow.
        let horizon = window.max(24 * 3_600_000);
        self.histories.retain(|key, h| {
            let keep = !h.samples.is_empty() && h.newest + horizon > newest;
            if let (false, Some(journal)) = (keep, journal.as_mut()) {
                journal.histories.insert(*key);
            }
            keep
        });
    }
}

impl Scorer {
    /// Opens, updates or suppresses the finding of `analytic` for a session whose first pass
    /// (`dry`, without words) says it fires.
    fn emit(
        &mut self,
        judged: &Judged<'_>,
        analytic: Analytic,
        dry: &Collected,
    ) -> Option<Finding> {
        let enriched = judged.enriched;
        let session = &enriched.session;
        let app = session.app_id.as_deref().unwrap_or("");
        let destination = judged.host.unwrap_or(&session.dst_ip);
        let key = flow_hash(
            &[
                &session.device_id,
                app,
                analytic_name(analytic),
                destination,
            ],
            session.dst_port,
        );
        let start = session.start_time;
        let score = dry.score();
        let confidence = confidence(enriched);
        let window = self.config.suppression_window_ms;
        if let Some(journal) = &mut self.journal {
            journal.open.insert(key);
        }

        let update = match self.open.get_mut(&key) {
            // A session up to one window before the first (it arrived late, or the sessions of
            // a device came out of order) belongs to the open finding too: a late arrival must
            // not replace the finding with a new id.
            Some(open)
                if start > open.window_start.saturating_sub(window)
                    && start < open.window_start + window =>
            {
                let finding = &mut open.finding;
                finding.session_count += 1;
                finding.last_seen = finding.last_seen.max(start);
                finding.first_seen = finding.first_seen.min(start);
                if score <= finding.score && dry.kinds & !open.kinds == 0 {
                    self.stats.suppressed += 1;
                    return None;
                }
                true
            }
            _ => false,
        };
        // Second pass, with words, only for what is written out.
        let collected = Rules {
            config: &self.config,
        }
        .collect(analytic, judged, true)?;
        let baseline_version = judged.baseline.version_label();

        if update {
            let open = self.open.get_mut(&key)?;
            open.kinds |= collected.kinds;
            let finding = &mut open.finding;
            for item in collected.items {
                match finding
                    .evidence
                    .iter_mut()
                    .find(|old| old.kind == item.kind)
                {
                    Some(old) => *old = item,
                    None => finding.evidence.push(item),
                }
            }
            finding.score = score.max(finding.score);
            finding.severity = severity(finding.score);
            finding.confidence = finding.confidence.max(confidence);
            finding.revision += 1;
            finding.status = FindingStatus::Updated;
            finding.event_time = start;
            finding.dst_ip.clone_from(&session.dst_ip);
            finding.baseline_version = baseline_version;
            self.stats.updates += 1;
            return Some(finding.clone());
        }

        let (analytic_id, strategy, technique_id, technique_name) = match analytic {
            Analytic::NonStandardPortAndroid => ("AN1827", "DET0706", "T1509", "Non-Standard Port"),
            Analytic::NonStandardPortIos => ("AN1828", "DET0706", "T1509", "Non-Standard Port"),
            // Seed 004 names no MITRE ids for its strategy; the technique is Mobile T1437.
            Analytic::AppLayerC2 => (
                "offport:app-layer-c2",
                "offport:app-layer-c2",
                "T1437",
                "Application Layer Protocol",
            ),
        };
        let id_text = format!(
            "{}|{}|{}|{}|{}|{}",
            session.device_id,
            app,
            analytic_name(analytic),
            destination,
            session.dst_port,
            start
        );
        let finding_id = hex::encode(Sha256::digest(id_text.as_bytes()))
            .chars()
            .take(32)
            .collect();
        let finding = Finding {
            finding_id,
            revision: 0,
            status: FindingStatus::New,
            analytic,
            analytic_id: analytic_id.to_string(),
            detection_strategy: strategy.to_string(),
            technique_id: technique_id.to_string(),
            technique_name: technique_name.to_string(),
            platform: session.platform,
            device_id: session.device_id.clone(),
            app_id: session.app_id.clone(),
            app_name: session.app_name.clone(),
            dst_ip: session.dst_ip.clone(),
            dst_port: session.dst_port,
            dst_host: judged.host.map(str::to_string),
            transport: session.transport,
            protocol: session.protocol,
            first_seen: start,
            last_seen: start,
            session_count: 1,
            score,
            severity: severity(score),
            confidence,
            evidence: collected.items,
            baseline_version,
            event_time: start,
        };
        self.open.insert(
            key,
            OpenFinding {
                finding: finding.clone(),
                kinds: collected.kinds,
                window_start: start,
            },
        );
        self.stats.new_findings += 1;
        Some(finding)
    }
}

/// The analytic's name in finding ids (its Avro symbol), fixed so ids stay stable.
fn analytic_name(analytic: Analytic) -> &'static str {
    match analytic {
        Analytic::NonStandardPortAndroid => "NonStandardPortAndroid",
        Analytic::NonStandardPortIos => "NonStandardPortIos",
        Analytic::AppLayerC2 => "AppLayerC2",
    }
}

/// The destination's name (SNI, else HTTP Host) and the key of the session's history: device,
/// app, the name (else the address) and port.
fn history_key(enriched: &EnrichedSession) -> (Option<&str>, u64) {
    let session = &enriched.session;
    let host = destination_host(enriched);
    let app = session.app_id.as_deref().unwrap_or("");
    let destination = host.unwrap_or(&session.dst_ip);
    let key = flow_hash(&[&session.device_id, app, destination], session.dst_port);
    (host, key)
}

/// The name of the destination: SNI, else HTTP Host. A DNS session's destination is its
/// resolver's address, not the query name: the name is what it asks, and a tunnel asks a new
/// name every time (one finding per name would bury the analyst).
fn destination_host(enriched: &EnrichedSession) -> Option<&str> {
    let session = &enriched.session;
    session
        .tls
        .as_ref()
        .and_then(|t| t.sni.as_deref())
        .or_else(|| session.http.as_ref().and_then(|h| h.host.as_deref()))
}

fn all_hosts(enriched: &EnrichedSession) -> impl Iterator<Item = &str> {
    let session = &enriched.session;
    [
        session.tls.as_ref().and_then(|t| t.sni.as_deref()),
        session.http.as_ref().and_then(|h| h.host.as_deref()),
        session.dns.as_ref().map(|d| d.qname.as_str()),
    ]
    .into_iter()
    .flatten()
}

/// Confidence of a finding from a session: attribution confidence times the strength of the
/// protocol verdict; sessions without app attribution are capped at 0.5.
fn confidence(enriched: &EnrichedSession) -> f64 {
    let session = &enriched.session;
    let protocol = match session.protocol_evidence {
        ProtocolEvidence::SensorAndClientBytes => 1.0,
        ProtocolEvidence::ClientBytes | ProtocolEvidence::Sensor => 0.9,
        ProtocolEvidence::None => 0.5,
    };
    let attribution = f64::from(session.attribution_confidence).clamp(0.0, 1.0);
    let attribution =
        if session.app_id.is_none() || session.attribution == AttributionSource::DeviceOnly {
            attribution.min(0.5)
        } else {
            attribution
        };
    ((attribution * protocol) * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests;
