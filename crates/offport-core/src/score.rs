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
//! - **Application-layer C2** (seed 004; MITRE T1437), on any port. It fires when at least two
//!   distinct C2 indicators agree (beacon periodicity, uniform sizes, SNI/Host mismatch, IP-literal
//!   host, algorithmic host name, high payload entropy, persistent background session) and the
//!   score reaches [`ScoreConfig::c2_min_score`]. One indicator alone is common in benign traffic
//!   (a jittered background sync is periodic), two together rarely are.
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

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use rustc_hash::{FxHashMap, FxHashSet, FxHasher};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::baseline::{
    host_has_suffix, in_ranges, BaselineSet, Destination, EffectiveBaseline, ResolveCache,
    ScopeContext,
};
use crate::durable::{self, Durable, RestoreError, StateChange};
use crate::model::{
    Analytic, AppProtocol, AppRunState, AttributionSource, EnrichedSession, EpochMillis, Evidence,
    EvidenceKind, Finding, FindingStatus, LockState, Platform, ProtocolEvidence,
};
use crate::protocol::{shannon_entropy, shannon_entropy_of};

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

/// One session in a destination's history: 16 bytes, so a full history of 32 is 8 cache lines.
/// Sizes saturate at 4 GiB, which only matters to the size statistics of sessions that large.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Sample {
    start: EpochMillis,
    bytes_out: u32,
    bytes_in: u32,
}

fn saturating_u32(bytes: i64) -> u32 {
    u32::try_from(bytes.max(0)).unwrap_or(u32::MAX)
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct History {
    /// In start order, oldest first.
    samples: VecDeque<Sample>,
    /// Series statistics, recomputed every [`RECOMPUTE_EVERY`] sessions (sorting the series
    /// on every session dominated the cost of scoring).
    cached: Option<CachedSeries>,
    pushes: u32,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct CachedSeries {
    intervals: Option<SeriesStats>,
    sizes_out: Option<SeriesStats>,
    sizes_in: Option<SeriesStats>,
    stable_share: f64,
    tolerance: f64,
}

/// Sessions of one destination between two recomputations of its series statistics.
const RECOMPUTE_EVERY: u32 = 4;

impl History {
    fn push(&mut self, sample: Sample, cap: usize, window: i64) {
        self.pushes = self.pushes.wrapping_add(1);
        // Make room first so the buffer never grows past `cap` (a VecDeque doubles).
        if self.samples.len() >= cap.max(1)
            && self
                .samples
                .front()
                .is_some_and(|s| s.start <= sample.start)
        {
            self.samples.pop_front();
        }
        // Keep start order even when sessions arrive slightly out of order.
        if self.samples.back().is_none_or(|s| s.start <= sample.start) {
            self.samples.push_back(sample);
        } else {
            let index = self.samples.partition_point(|s| s.start <= sample.start);
            self.samples.insert(index, sample);
        }
        let newest = self.samples.back().map_or(sample.start, |s| s.start);
        while self.samples.len() > cap
            || self
                .samples
                .front()
                .is_some_and(|s| s.start < newest.saturating_sub(window))
        {
            self.samples.pop_front();
        }
    }

    fn newest(&self) -> Option<EpochMillis> {
        self.samples.back().map(|s| s.start)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OpenFinding {
    finding: Finding,
    /// The evidence kinds the finding holds, as [`kind_bit`]s.
    kinds: u64,
    window_start: EpochMillis,
}

/// Robust dispersion statistics of a series (RITA-style).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SeriesStats {
    /// Median.
    pub median: f64,
    /// Median absolute deviation.
    pub mad: f64,
    /// Bowley skew, -1..1 (0 when the quartiles coincide).
    pub skew: f64,
}

impl SeriesStats {
    /// MAD relative to the median (0 for a constant series); infinite for a zero median with
    /// spread.
    pub fn dispersion(&self) -> f64 {
        if self.mad == 0.0 {
            0.0
        } else if self.median == 0.0 {
            f64::INFINITY
        } else {
            self.mad / self.median
        }
    }

    /// RITA's score for the series, 0-1: high when symmetric and tight.
    pub fn regularity(&self) -> f64 {
        let skew_score = 1.0 - self.skew.abs();
        let mad_score = (1.0 - self.dispersion()).max(0.0);
        (skew_score + mad_score) / 2.0
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let position = q * (sorted.len() - 1) as f64;
    let low = position.floor() as usize;
    let high = position.ceil() as usize;
    let a = sorted.get(low).copied().unwrap_or(0.0);
    let b = sorted.get(high).copied().unwrap_or(a);
    a + (b - a) * (position - low as f64)
}

/// Median, MAD and Bowley skew of `values`; `None` for fewer than two values.
pub fn series_stats(values: &[f64]) -> Option<SeriesStats> {
    series_stats_in_place(&mut values.to_vec())
}

/// [`series_stats`] without allocating: `values` is sorted, then overwritten with the absolute
/// deviations from the median (in no particular order).
fn series_stats_in_place(values: &mut [f64]) -> Option<SeriesStats> {
    if values.len() < 2 {
        return None;
    }
    values.sort_unstable_by(f64::total_cmp);
    let median = quantile(values, 0.5);
    let q1 = quantile(values, 0.25);
    let q3 = quantile(values, 0.75);
    let skew = if q3 - q1 > 0.0 {
        (q3 + q1 - 2.0 * median) / (q3 - q1)
    } else {
        0.0
    };
    // The median of the deviations reuses the buffer and a selection instead of a second sort.
    for value in values.iter_mut() {
        *value = (*value - median).abs();
    }
    let len = values.len();
    let mid = len / 2;
    let (lower, upper_median, _) = values.select_nth_unstable_by(mid, f64::total_cmp);
    let upper_median = *upper_median;
    let mad = if len.is_multiple_of(2) {
        let lower_median = lower.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower_median + upper_median) / 2.0
    } else {
        upper_median
    };
    Some(SeriesStats { median, mad, skew })
}

/// True when `host` looks algorithmically generated: judged on its longest label (ignoring the
/// public suffix), by character entropy, digit share and consonant runs. A heuristic, tuned to
/// stay quiet on real CDN and API names; it is one evidence item, never a finding on its own.
/// Runs on every scored session, so it does not allocate.
pub fn looks_algorithmic(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return false;
    }
    let trimmed = host.trim_end_matches('.');
    // The registrable part and subdomains: drop the last label (the TLD) unless it is the only one.
    let labels = trimmed.split('.').count();
    trimmed
        .split('.')
        .take(labels.saturating_sub(1).max(1))
        .filter(|label| label.len() >= 10)
        .any(|label| label_looks_algorithmic(label.as_bytes()))
}

fn label_looks_algorithmic(label: &[u8]) -> bool {
    let mut letters = 0usize;
    let mut vowels = 0usize;
    let mut digits = 0usize;
    let mut run = 0usize;
    let mut longest_run = 0usize;
    for byte in label.iter().map(u8::to_ascii_lowercase) {
        if byte.is_ascii_alphabetic() {
            letters += 1;
            if b"aeiou".contains(&byte) {
                vowels += 1;
            }
        }
        if byte.is_ascii_digit() {
            digits += 1;
        }
        if byte.is_ascii_alphabetic() && !b"aeiouy".contains(&byte) {
            run += 1;
            longest_run = longest_run.max(run);
        } else {
            run = 0;
        }
    }
    let vowel_share = vowels as f64 / letters.max(1) as f64;
    let digit_share = digits as f64 / label.len().max(1) as f64;
    let shaped = vowel_share < 0.25 || longest_run >= 5 || (digit_share > 0.2 && digit_share < 0.8);
    if !shaped {
        return false;
    }
    shannon_entropy_of(label.iter().map(u8::to_ascii_lowercase)) >= 3.3
}

fn is_ip_literal(host: &str) -> bool {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok()
}

fn severity(score: i32) -> crate::model::Severity {
    use crate::model::Severity::*;
    match score {
        s if s >= 85 => Critical,
        s if s >= 70 => High,
        s if s >= 50 => Medium,
        s if s >= 25 => Low,
        _ => Info,
    }
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

/// The words of one evidence item, built only for findings that are emitted.
struct EvidenceText {
    description: String,
    observed: String,
    baseline: Option<String>,
}

fn text(
    description: impl Into<String>,
    observed: impl Into<String>,
    baseline: Option<String>,
) -> EvidenceText {
    EvidenceText {
        description: description.into(),
        observed: observed.into(),
        baseline,
    }
}

/// The evidence collected for one analytic on one session.
///
/// Collection runs twice when a finding is emitted: first without words (`full` false: kinds and
/// weights only, no allocation), which is all most sessions ever need to show that nothing fires
/// or that an open finding absorbs them, then once more with words for the finding written out.
/// One function per analytic serves both passes, so the two cannot disagree.
struct Collected {
    full: bool,
    kinds: u64,
    weight: f64,
    items: Vec<Evidence>,
}

fn kind_bit(kind: EvidenceKind) -> u64 {
    1u64 << (kind as u32 % 64)
}

impl Collected {
    fn new(full: bool) -> Self {
        Self {
            full,
            kinds: 0,
            weight: 0.0,
            items: Vec::new(),
        }
    }

    fn add(
        &mut self,
        kind: EvidenceKind,
        weight: f64,
        number: Option<f64>,
        words: impl FnOnce() -> EvidenceText,
    ) {
        self.kinds |= kind_bit(kind);
        self.weight += weight;
        if self.full {
            let words = words();
            self.items.push(Evidence {
                kind,
                description: words.description,
                observed: words.observed,
                observed_number: number,
                baseline: words.baseline,
                weight,
            });
        }
    }

    fn has(&self, kind: EvidenceKind) -> bool {
        self.kinds & kind_bit(kind) != 0
    }

    fn score(&self) -> i32 {
        (self.weight.round() as i32).clamp(0, 100)
    }
}

/// What the recurrence history says about one destination.
struct Recurrence {
    count: usize,
    last_hour: usize,
    intervals: Option<SeriesStats>,
    sizes_out: Option<SeriesStats>,
    sizes_in: Option<SeriesStats>,
    stable_share: f64,
}

/// A session with everything it is judged on.
struct Judged<'a> {
    enriched: &'a EnrichedSession,
    baseline: &'a EffectiveBaseline,
    recurrence: &'a Recurrence,
    host: Option<&'a str>,
}

/// The scorer's state and logic.
#[derive(Debug, Default)]
pub struct Scorer {
    baselines: BaselineSet,
    cache: ResolveCache,
    config: ScoreConfig,
    histories: FxHashMap<u64, History>,
    open: FxHashMap<u64, OpenFinding>,
    newest: EpochMillis,
    since_expiry: usize,
    /// Reused buffer for series statistics.
    scratch: Vec<f64>,
    stats: ScoreStats,
    /// Keys changed since the last drain, when journaling (see [`Durable`]).
    journal: Option<ScoreJournal>,
}

#[derive(Debug, Default)]
struct ScoreJournal {
    histories: FxHashSet<u64>,
    open: FxHashSet<u64>,
    meta: bool,
}

/// The changelog form of the scorer's clocks.
#[derive(Debug, Serialize, Deserialize)]
struct ScoreMeta {
    newest: EpochMillis,
    since_expiry: usize,
}

const HISTORY_PREFIX: &str = "history/";
const FINDING_PREFIX: &str = "finding/";
const SCORE_META_KEY: &str = "meta";

fn hex_key(prefix: &str, key: u64) -> String {
    format!("{prefix}{key:016x}")
}

fn parse_hex_key(key: &str, hex: &str) -> Result<u64, RestoreError> {
    u64::from_str_radix(hex, 16).map_err(|e| RestoreError::new(key, e))
}

/// Sessions between two expiry sweeps at least; the sweep walks all state, so it also waits for
/// as many sessions as half the entries it would walk (constant work per session on average).
const EXPIRE_EVERY: usize = 4_096;

impl Scorer {
    /// A scorer judging against `baselines`.
    pub fn new(baselines: BaselineSet, config: ScoreConfig) -> Self {
        Self {
            baselines,
            config,
            ..Self::default()
        }
    }

    /// The baselines, for live updates from the baselines topic.
    pub fn baselines_mut(&mut self) -> &mut BaselineSet {
        &mut self.baselines
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
            .map(|h| {
                std::mem::size_of::<(u64, History)>()
                    + h.samples.capacity() * std::mem::size_of::<Sample>()
            })
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

    /// Scores one enriched session; returns the new findings and finding updates it causes.
    pub fn score(&mut self, enriched: &EnrichedSession) -> Vec<Finding> {
        self.stats.sessions += 1;
        let session = &enriched.session;
        let start = session.start_time;
        self.newest = self.newest.max(start);
        let mdm = enriched.mdm.as_ref();
        let context = ScopeContext {
            platform: session.platform,
            device_group: mdm.and_then(|m| m.device_group.as_deref()),
            device_role: mdm.and_then(|m| m.device_role.as_deref()),
            app_category: mdm.and_then(|m| m.app_category.as_deref()),
            service_class: mdm.and_then(|m| m.service_class.as_deref()),
            app_id: session.app_id.as_deref(),
        };
        let baseline = self
            .baselines
            .resolve_cached(&mut self.cache, &context, start);

        let host = destination_host(enriched);
        let app = session.app_id.as_deref().unwrap_or("");
        let destination = host.unwrap_or(&session.dst_ip);
        let key = flow_hash(&[&session.device_id, app, destination], session.dst_port);
        if let Some(journal) = &mut self.journal {
            journal.histories.insert(key);
            journal.meta = true;
        }
        let history = self.histories.entry(key).or_default();
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
        let recurrence = recurrence(
            &self.config,
            history,
            &mut self.scratch,
            &baseline,
            candidate,
        );

        self.since_expiry += 1;
        if self.since_expiry >= EXPIRE_EVERY.max((self.histories.len() + self.open.len()) / 2) {
            self.expire();
        }

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
        };
        let port = candidate
            .then(|| self.collect(port_analytic, &judge, false))
            .flatten();
        let c2 = self.collect(Analytic::AppLayerC2, &judge, false);
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

        let mut findings = Vec::new();
        if let Some(dry) = port {
            findings.extend(self.emit(&judge, port_analytic, &dry));
        }
        if let Some(dry) = c2 {
            findings.extend(self.emit(&judge, Analytic::AppLayerC2, &dry));
        }
        findings
    }

    /// The evidence of `analytic` for a session, or `None` when the analytic does not fire.
    /// `full` adds the words (see [`Collected`]).
    fn collect(&self, analytic: Analytic, judged: &Judged<'_>, full: bool) -> Option<Collected> {
        match analytic {
            Analytic::NonStandardPortAndroid | Analytic::NonStandardPortIos => Some(
                self.non_standard_port(judged.enriched, judged.baseline, judged.recurrence, full),
            ),
            Analytic::AppLayerC2 => self.app_layer_c2(
                judged.enriched,
                judged.baseline,
                judged.recurrence,
                judged.host,
                full,
            ),
        }
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
            let keep = h.newest().is_some_and(|t| t + horizon > newest);
            if let (false, Some(journal)) = (keep, journal.as_mut()) {
                journal.histories.insert(*key);
            }
            keep
        });
    }

    fn context_evidence(
        &self,
        enriched: &EnrichedSession,
        baseline: &EffectiveBaseline,
        collected: &mut Collected,
    ) {
        let t = &baseline.thresholds;
        if enriched.app_state == AppRunState::Background && !enriched.foreground_transition_during {
            let (weight, note) = if t.foreground_state_required {
                (15.0, "ForegroundStateRequired=true")
            } else {
                (10.0, "ForegroundStateRequired=false")
            };
            collected.add(EvidenceKind::BackgroundNoForeground, weight, None, || text("App was in the background when the session began and did not come to the foreground", "app_state=BACKGROUND, no foreground transition", Some(note.to_string())));
        } else if t.foreground_state_required && enriched.app_state == AppRunState::NotRunning {
            collected.add(EvidenceKind::BackgroundNoForeground, 15.0, None, || {
                text(
                    "App was not running in the foreground, which the baseline requires",
                    "app_state=NOT_RUNNING",
                    Some("ForegroundStateRequired=true".to_string()),
                )
            });
        }
        if enriched.lock_state == LockState::Locked {
            collected.add(EvidenceKind::DeviceLocked, 10.0, None, || {
                text(
                    "Device was locked during the session",
                    if enriched.locked_throughout {
                        "locked throughout"
                    } else {
                        "locked at start"
                    },
                    None,
                )
            });
        }
        let window = t.recent_user_interaction_window_ms;
        let edr_present =
            enriched.lock_state != LockState::Unknown || enriched.app_state != AppRunState::Unknown;
        match enriched.last_user_interaction_ms_before {
            Some(delta) if delta > window => collected.add(
                EvidenceKind::NoRecentUserInteraction,
                5.0,
                Some(delta as f64),
                || {
                    text(
                        "Last user interaction was older than RecentUserInteractionWindow",
                        format!("LastUserInteractionDelta={}s", delta / 1000),
                        Some(format!("RecentUserInteractionWindow={}s", window / 1000)),
                    )
                },
            ),
            None if edr_present => {
                collected.add(EvidenceKind::NoRecentUserInteraction, 5.0, None, || {
                    text(
                        "No user interaction within TimeWindow before the session",
                        format!("none within {}s", t.time_window_ms / 1000),
                        Some(format!("RecentUserInteractionWindow={}s", window / 1000)),
                    )
                })
            }
            _ => {}
        }
        if let Some(bg) = &enriched.preceding_background_execution {
            if bg.ms_before_session <= self.config.preceding_execution_ms {
                collected.add(
                    EvidenceKind::PrecedingBackgroundExecution,
                    10.0,
                    Some(bg.ms_before_session as f64),
                    || {
                        text(
                            "Background execution immediately preceded the session",
                            format!("{:?} {}s before", bg.kind, bg.ms_before_session / 1000),
                            Some(format!(
                                "within {}s",
                                self.config.preceding_execution_ms / 1000
                            )),
                        )
                    },
                );
            }
        }
    }

    /// Evidence of the port analytic for a session already known to be a candidate: a
    /// recognised protocol on a port its baseline does not approve (decided once, in `score`).
    fn non_standard_port(
        &self,
        enriched: &EnrichedSession,
        baseline: &EffectiveBaseline,
        recurrence: &Recurrence,
        full: bool,
    ) -> Collected {
        let session = &enriched.session;
        let t = &baseline.thresholds;
        let mut collected = Collected::new(full);
        collected.add(
            EvidenceKind::ProtocolPortMismatch,
            35.0,
            Some(f64::from(session.dst_port)),
            || {
                text(
                    format!(
                        "{} on {}/{}, outside the approved ports for {}",
                        session.protocol.name(),
                        session.dst_port,
                        session.transport.name().to_ascii_lowercase(),
                        session.protocol.name()
                    ),
                    format!(
                        "{} on {}/{}",
                        session.protocol.name(),
                        session.dst_port,
                        session.transport.name().to_ascii_lowercase()
                    ),
                    Some(baseline.describe_ports(session.protocol, session.transport)),
                )
            },
        );
        if recurrence.count >= self.config.repeated_sessions {
            collected.add(
                EvidenceKind::RepeatedSessions,
                10.0,
                Some(recurrence.count as f64),
                || {
                    text(
                        "Repeated sessions to the same destination and port within TimeWindow",
                        format!("{} sessions", recurrence.count),
                        Some(format!("TimeWindow={}s", t.time_window_ms / 1000)),
                    )
                },
            );
        }
        if let Some(intervals) = recurrence.intervals {
            if recurrence.count > self.config.repeated_sessions && recurrence.stable_share >= 0.8 {
                collected.add(
                    EvidenceKind::StableInterval,
                    15.0,
                    Some(intervals.median / 1000.0),
                    || {
                        text(
                            "Sessions recur on a stable interval",
                            format!(
                                "interval {:.0}s, {:.0}% within tolerance",
                                intervals.median / 1000.0,
                                recurrence.stable_share * 100.0
                            ),
                            Some(format!(
                                "BeaconIntervalTolerance={}",
                                t.beacon_interval_tolerance
                            )),
                        )
                    },
                );
            }
        }
        let duration = session.duration_ms.unwrap_or(0);
        if duration >= t.session_persistence_threshold_ms {
            collected.add(
                EvidenceKind::PersistentConnection,
                10.0,
                Some(duration as f64 / 1000.0),
                || {
                    text(
                        "One persistent long-lived connection",
                        format!(
                            "duration {}s{}",
                            duration / 1000,
                            if session.still_open {
                                ", still open"
                            } else {
                                ""
                            }
                        ),
                        Some(format!(
                            "SessionPersistenceThreshold={}s",
                            t.session_persistence_threshold_ms / 1000
                        )),
                    )
                },
            );
        }
        self.context_evidence(enriched, baseline, &mut collected);
        self.app_permission_evidence(enriched, baseline, &mut collected);
        collected
    }

    fn app_permission_evidence(
        &self,
        enriched: &EnrichedSession,
        baseline: &EffectiveBaseline,
        collected: &mut Collected,
    ) {
        let session = &enriched.session;
        let mdm = enriched.mdm.as_ref();
        if let Some(app) = session.app_id.as_deref() {
            match mdm.map(|m| m.managed) {
                Some(Some(false)) => collected.add(EvidenceKind::AppUnmanaged, 10.0, None, || {
                    text(
                        "App is not managed by the MDM",
                        format!("{app}: managed=false"),
                        None,
                    )
                }),
                Some(None) => collected.add(EvidenceKind::AppUnmanaged, 10.0, None, || {
                    text(
                        "App is not in the device's MDM inventory",
                        format!("{app}: not in inventory"),
                        None,
                    )
                }),
                _ => {}
            }
            let outside = |list: &Option<Vec<String>>| {
                list.as_ref().is_some_and(|l| !l.iter().any(|a| a == app))
            };
            if outside(&baseline.allowed_apps) {
                collected.add(EvidenceKind::AppNotAllowed, 10.0, None, || {
                    text(
                        "App is outside AllowedAppList",
                        app.to_string(),
                        Some("AllowedAppList".to_string()),
                    )
                });
            } else if outside(&baseline.allowed_managed_apps) {
                collected.add(EvidenceKind::AppNotAllowed, 10.0, None, || {
                    text(
                        "App is outside AllowedManagedApps",
                        app.to_string(),
                        Some("AllowedManagedApps".to_string()),
                    )
                });
            } else if mdm.is_some_and(|m| m.approved == Some(false)) {
                collected.add(EvidenceKind::AppNotAllowed, 10.0, None, || {
                    text(
                        "App is not approved in the MDM",
                        format!("{app}: approved=false"),
                        None,
                    )
                });
            }
            if let (Some(classes), Some(class)) = (
                &baseline.allowed_service_classes,
                mdm.and_then(|m| m.service_class.as_deref()),
            ) {
                if !classes.iter().any(|c| c == class) {
                    collected.add(EvidenceKind::AppNotAllowed, 10.0, None, || {
                        text(
                            "App's service class is outside AllowedServiceClasses",
                            class.to_string(),
                            Some(format!("AllowedServiceClasses=[{}]", classes.join(","))),
                        )
                    });
                }
            }
            if let Some(behavior) = mdm
                .and_then(|m| m.app_category.as_deref().or(m.service_class.as_deref()))
                .and_then(|c| baseline.behaviors.get(c))
            {
                if !behavior.expected_ports.is_empty()
                    && !in_ranges(session.dst_port, &behavior.expected_ports)
                {
                    collected.add(
                        EvidenceKind::ProtocolNotPermittedForApp,
                        10.0,
                        Some(f64::from(session.dst_port)),
                        || {
                            text(
                                "App's category is not permitted this destination port",
                                format!("{} on {}", session.protocol.name(), session.dst_port),
                                Some(format!(
                                    "AppNetworkBehaviorBaseline[{}].expected_ports",
                                    behavior.category
                                )),
                            )
                        },
                    );
                }
            }
        }
        if session.platform == Platform::Ios
            && baseline.thresholds.supervised_required
            && mdm.is_some_and(|m| m.supervised == Some(false))
        {
            collected.add(EvidenceKind::DeviceUnsupervised, 10.0, None, || {
                text(
                    "Device is not supervised, which the baseline requires",
                    "supervised=false",
                    Some("SupervisedRequired=true".to_string()),
                )
            });
        }
    }

    fn app_layer_c2(
        &self,
        enriched: &EnrichedSession,
        baseline: &EffectiveBaseline,
        recurrence: &Recurrence,
        host: Option<&str>,
        full: bool,
    ) -> Option<Collected> {
        let session = &enriched.session;
        let t = &baseline.thresholds;
        let mut collected = Collected::new(full);
        if let Some(intervals) = recurrence
            .intervals
            .filter(|_| recurrence.count >= self.config.min_series)
        {
            let sizes_regular = recurrence.sizes_out.map_or(0.0, |s| s.regularity());
            let cadence = (intervals.regularity() + sizes_regular) / 2.0;
            let tight = intervals.dispersion() <= t.beacon_interval_variance_threshold;
            if tight || cadence >= t.cadence_anomaly_threshold {
                collected.add(
                    EvidenceKind::BeaconPeriodicity,
                    25.0,
                    Some(intervals.dispersion()),
                    || {
                        text(
                            "Beacon-like periodicity to one destination",
                            format!(
                                "interval {:.0}s, MAD/median {:.3}, skew {:.2}, beacon score {:.2}",
                                intervals.median / 1000.0,
                                intervals.dispersion(),
                                intervals.skew,
                                cadence
                            ),
                            Some(format!(
                                "BeaconIntervalVarianceThreshold={}, CadenceAnomalyThreshold={}",
                                t.beacon_interval_variance_threshold, t.cadence_anomaly_threshold
                            )),
                        )
                    },
                );
            }
        }
        if recurrence.last_hour as f64 > t.connection_frequency_threshold {
            collected.add(
                EvidenceKind::ConnectionFrequency,
                10.0,
                Some(recurrence.last_hour as f64),
                || {
                    text(
                        "Connection rate to one destination over ConnectionFrequencyThreshold",
                        format!("{} sessions in the last hour", recurrence.last_hour),
                        Some(format!(
                            "ConnectionFrequencyThreshold={}/h",
                            t.connection_frequency_threshold
                        )),
                    )
                },
            );
        }
        let sni = session.tls.as_ref().and_then(|t| t.sni.as_deref());
        let http_host = session.http.as_ref().and_then(|h| h.host.as_deref());
        if let (Some(sni), Some(http_host)) = (sni, http_host) {
            if !sni.eq_ignore_ascii_case(http_host)
                && !host_has_suffix(sni, http_host)
                && !host_has_suffix(http_host, sni)
            {
                collected.add(EvidenceKind::SniHostMismatch, 15.0, None, || {
                    text(
                        "TLS SNI and HTTP Host disagree (domain fronting)",
                        format!("SNI {sni}, Host {http_host}"),
                        None,
                    )
                });
            }
        }
        if let Some(literal) = [sni, http_host]
            .into_iter()
            .flatten()
            .find(|h| is_ip_literal(h))
        {
            collected.add(EvidenceKind::IpLiteralHost, 10.0, None, || {
                text("SNI or Host is an IP literal", literal.to_string(), None)
            });
        }
        if let Some(name) = all_hosts(enriched)
            .into_iter()
            .find(|h| looks_algorithmic(h))
        {
            collected.add(
                EvidenceKind::AlgorithmicHostname,
                15.0,
                Some(shannon_entropy(name.as_bytes())),
                || {
                    text(
                        "Destination name looks algorithmically generated",
                        name.to_string(),
                        None,
                    )
                },
            );
        }
        // Not for DNS: the series of one query name is the same lookup again, the same size
        // by nature (a tunnel's changing labels make a new name, and a new series, each time).
        let sized = session.protocol != AppProtocol::Dns;
        if let (Some(out), Some(inn), true) = (recurrence.sizes_out, recurrence.sizes_in, sized) {
            if out.dispersion() <= self.config.uniform_size_dispersion
                && inn.dispersion() <= self.config.uniform_size_dispersion
            {
                collected.add(
                    EvidenceKind::UniformSizes,
                    15.0,
                    Some(out.dispersion().max(inn.dispersion())),
                    || {
                        text(
                            "Uniform request and response sizes across sessions",
                            format!("out ~{:.0} B, in ~{:.0} B", out.median, inn.median),
                            Some(format!(
                                "dispersion <= {}",
                                self.config.uniform_size_dispersion
                            )),
                        )
                    },
                );
            }
        }
        let encrypted_by_design = matches!(
            session.protocol,
            AppProtocol::Tls | AppProtocol::Dtls | AppProtocol::Quic | AppProtocol::Ssh
        );
        if let Some(entropy) = session.payload_entropy {
            if !encrypted_by_design && entropy > t.payload_entropy_threshold {
                collected.add(
                    EvidenceKind::HighPayloadEntropy,
                    10.0,
                    Some(entropy),
                    || {
                        text(
                            "High-entropy payload in a protocol that is normally plaintext",
                            format!("{entropy:.2} bits/byte"),
                            Some(format!(
                                "PayloadEntropyThreshold={}",
                                t.payload_entropy_threshold
                            )),
                        )
                    },
                );
            }
        }
        let background =
            enriched.app_state == AppRunState::Background && !enriched.foreground_transition_during;
        let duration = session.duration_ms.unwrap_or(0);
        if background && duration > t.session_persistence_threshold_ms {
            collected.add(
                EvidenceKind::BackgroundSessionPersistence,
                15.0,
                Some(duration as f64 / 1000.0),
                || {
                    text(
                        "Session persisted in the background past SessionPersistenceThreshold",
                        format!("{}s in background", duration / 1000),
                        Some(format!(
                            "SessionPersistenceThreshold={}s",
                            t.session_persistence_threshold_ms / 1000
                        )),
                    )
                },
            );
        }
        let no_user = enriched
            .last_user_interaction_ms_before
            .is_none_or(|d| d > t.recent_user_interaction_window_ms);
        if enriched.network_api_calls_before >= self.config.api_burst_calls
            && enriched.app_state != AppRunState::Foreground
            && no_user
        {
            collected.add(
                EvidenceKind::NetworkApiBurstWithoutUser,
                10.0,
                Some(enriched.network_api_calls_before as f64),
                || {
                    text(
                        "Networking-API burst without foreground or user interaction",
                        format!("{} calls", enriched.network_api_calls_before),
                        Some(format!("burst >= {} calls", self.config.api_burst_calls)),
                    )
                },
            );
        }
        let category = enriched
            .mdm
            .as_ref()
            .and_then(|m| m.app_category.as_deref().or(m.service_class.as_deref()));
        if let Some(behavior) = category.and_then(|c| baseline.behaviors.get(c)) {
            if !behavior.expected_protocols.is_empty()
                && session.protocol != AppProtocol::Unknown
                && !behavior.expected_protocols.contains(&session.protocol)
            {
                collected.add(
                    EvidenceKind::UnexpectedProtocolForCategory,
                    10.0,
                    None,
                    || {
                        text(
                            "Protocol not expected for the app's category",
                            format!("{} for {}", session.protocol.name(), behavior.category),
                            Some(format!("AppNetworkBehaviorBaseline[{}]", behavior.category)),
                        )
                    },
                );
            }
            if let Some(host) = host {
                if !behavior.expected_domain_suffixes.is_empty()
                    && !behavior
                        .expected_domain_suffixes
                        .iter()
                        .any(|s| host_has_suffix(host, s))
                {
                    collected.add(
                        EvidenceKind::UnseenDestinationForCategory,
                        10.0,
                        None,
                        || {
                            text(
                                "Destination never expected for the app's category",
                                host.to_string(),
                                Some(format!(
                                    "AppNetworkBehaviorBaseline[{}].expected_domain_suffixes",
                                    behavior.category
                                )),
                            )
                        },
                    );
                }
            }
        }
        const CORE: [EvidenceKind; 7] = [
            EvidenceKind::BeaconPeriodicity,
            EvidenceKind::UniformSizes,
            EvidenceKind::SniHostMismatch,
            EvidenceKind::IpLiteralHost,
            EvidenceKind::AlgorithmicHostname,
            EvidenceKind::HighPayloadEntropy,
            EvidenceKind::BackgroundSessionPersistence,
        ];
        let indicators = CORE.iter().filter(|k| collected.has(**k)).count();
        if indicators < 2 {
            return None;
        }
        // Device and app state make C2 more likely but never raise a finding by themselves.
        self.context_evidence(enriched, baseline, &mut collected);
        (collected.score() >= self.config.c2_min_score).then_some(collected)
    }

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
        let collected = self.collect(analytic, judged, true)?;
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

impl Durable for Scorer {
    fn journal_changes(&mut self) {
        self.journal.get_or_insert_with(ScoreJournal::default);
    }

    fn drain_changes(&mut self) -> Vec<StateChange> {
        let Some(journal) = self.journal.as_mut().map(std::mem::take) else {
            return vec![];
        };
        let mut changes = Vec::with_capacity(journal.histories.len() + journal.open.len() + 1);
        let mut histories: Vec<u64> = journal.histories.into_iter().collect();
        histories.sort_unstable();
        for key in histories {
            let name = hex_key(HISTORY_PREFIX, key);
            changes.push(match self.histories.get(&key) {
                Some(history) => durable::put(name, history),
                None => StateChange::Delete { key: name },
            });
        }
        let mut open: Vec<u64> = journal.open.into_iter().collect();
        open.sort_unstable();
        for key in open {
            let name = hex_key(FINDING_PREFIX, key);
            changes.push(match self.open.get(&key) {
                Some(finding) => durable::put(name, finding),
                None => StateChange::Delete { key: name },
            });
        }
        if journal.meta {
            changes.push(durable::put(
                SCORE_META_KEY.to_string(),
                &ScoreMeta {
                    newest: self.newest,
                    since_expiry: self.since_expiry,
                },
            ));
        }
        changes
    }

    fn restore(&mut self, key: &str, value: &[u8]) -> Result<(), RestoreError> {
        if key == SCORE_META_KEY {
            let meta: ScoreMeta = durable::read(key, value)?;
            self.newest = meta.newest;
            self.since_expiry = meta.since_expiry;
        } else if let Some(hex) = key.strip_prefix(HISTORY_PREFIX) {
            let history: History = durable::read(key, value)?;
            self.histories.insert(parse_hex_key(key, hex)?, history);
        } else if let Some(hex) = key.strip_prefix(FINDING_PREFIX) {
            let open: OpenFinding = durable::read(key, value)?;
            self.open.insert(parse_hex_key(key, hex)?, open);
        } else {
            return Err(RestoreError::new(key, "not a key the scorer writes"));
        }
        Ok(())
    }

    fn restored(&mut self) {}
}

/// The analytic's name in finding ids (its Avro symbol), fixed so ids stay stable.
fn analytic_name(analytic: Analytic) -> &'static str {
    match analytic {
        Analytic::NonStandardPortAndroid => "NonStandardPortAndroid",
        Analytic::NonStandardPortIos => "NonStandardPortIos",
        Analytic::AppLayerC2 => "AppLayerC2",
    }
}

/// Recurrence of one destination. `exact` forces fresh statistics (the port analytic, which fires
/// rarely, always gets them); otherwise they may be up to [`RECOMPUTE_EVERY`] sessions old.
fn recurrence(
    config: &ScoreConfig,
    history: &mut History,
    scratch: &mut Vec<f64>,
    baseline: &EffectiveBaseline,
    exact: bool,
) -> Recurrence {
    let samples = &history.samples;
    let count = samples.len();
    let newest = history.newest().unwrap_or(0);
    let last_hour = count - samples.partition_point(|s| s.start <= newest - 3_600_000);
    let mut recurrence = Recurrence {
        count,
        last_hour,
        intervals: None,
        sizes_out: None,
        sizes_in: None,
        stable_share: 0.0,
    };
    if count < config.repeated_sessions {
        return recurrence;
    }
    let tolerance = baseline.thresholds.beacon_interval_tolerance;
    let fresh = !exact
        && history.cached.is_some_and(|c| c.tolerance == tolerance)
        && !history.pushes.is_multiple_of(RECOMPUTE_EVERY)
        && count != config.min_series
        && count != config.repeated_sessions;
    if !fresh {
        scratch.clear();
        scratch.extend(
            samples
                .iter()
                .zip(samples.iter().skip(1))
                .map(|(a, b)| (b.start - a.start) as f64),
        );
        let intervals = scratch.len();
        let interval_stats = series_stats_in_place(scratch);
        // The buffer now holds each interval's distance from the median.
        let stable_share = interval_stats.map_or(0.0, |stats| {
            let band = tolerance * stats.median;
            let stable = scratch.iter().filter(|d| **d <= band).count();
            stable as f64 / intervals as f64
        });
        let (sizes_out, sizes_in) = if count >= config.min_series {
            scratch.clear();
            scratch.extend(samples.iter().map(|s| f64::from(s.bytes_out)));
            let out = series_stats_in_place(scratch);
            scratch.clear();
            scratch.extend(samples.iter().map(|s| f64::from(s.bytes_in)));
            (out, series_stats_in_place(scratch))
        } else {
            (None, None)
        };
        history.cached = Some(CachedSeries {
            intervals: interval_stats,
            sizes_out,
            sizes_in,
            stable_share,
            tolerance,
        });
    }
    if let Some(cached) = history.cached {
        recurrence.intervals = cached.intervals;
        recurrence.sizes_out = cached.sizes_out;
        recurrence.sizes_in = cached.sizes_in;
        recurrence.stable_share = cached.stable_share;
    }
    recurrence
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
#[path = "score_tests.rs"]
mod tests;
