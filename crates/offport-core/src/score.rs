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
//! item appears; otherwise the session is counted and nothing is emitted. After the window a new
//! finding id opens.
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
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHasher};
use sha2::{Digest, Sha256};

use crate::baseline::{
    host_has_suffix, in_ranges, BaselineSet, Destination, EffectiveBaseline, ResolveCache,
    ScopeContext,
};
use crate::model::{
    Analytic, AppProtocol, AppRunState, AttributionSource, EnrichedSession, EpochMillis, Evidence,
    EvidenceKind, Finding, FindingStatus, LockState, Platform, ProtocolEvidence,
};
use crate::protocol::shannon_entropy;

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
            min_series: 6,
            preceding_execution_ms: 120_000,
            api_burst_calls: 30,
            uniform_size_dispersion: 0.05,
            c2_min_score: 40,
        }
    }
}

/// Counters of the scorer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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

#[derive(Debug, Clone, Default)]
struct History {
    starts: VecDeque<EpochMillis>,
    bytes_out: VecDeque<i64>,
    bytes_in: VecDeque<i64>,
    /// Series statistics, recomputed every [`RECOMPUTE_EVERY`] sessions (sorting the series
    /// on every session dominated the cost of scoring).
    cached: Option<CachedSeries>,
    pushes: u32,
}

#[derive(Debug, Clone, Copy)]
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
    fn push(&mut self, start: EpochMillis, out: i64, inn: i64, cap: usize, window: i64) {
        self.pushes = self.pushes.wrapping_add(1);
        // Keep time order even when sessions arrive slightly out of order.
        let index = self.starts.partition_point(|t| *t <= start);
        self.starts.insert(index, start);
        self.bytes_out.insert(index, out);
        self.bytes_in.insert(index, inn);
        let newest = self.starts.back().copied().unwrap_or(start);
        while self.starts.len() > cap || self.starts.front().is_some_and(|t| *t < newest - window) {
            self.starts.pop_front();
            self.bytes_out.pop_front();
            self.bytes_in.pop_front();
        }
    }
}

#[derive(Debug, Clone)]
struct OpenFinding {
    finding: Finding,
    window_start: EpochMillis,
}

/// Robust dispersion statistics of a series (RITA-style).
#[derive(Debug, Clone, Copy, PartialEq)]
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
    if values.len() < 2 {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    let median = quantile(&sorted, 0.5);
    let q1 = quantile(&sorted, 0.25);
    let q3 = quantile(&sorted, 0.75);
    let skew = if q3 - q1 > 0.0 {
        (q3 + q1 - 2.0 * median) / (q3 - q1)
    } else {
        0.0
    };
    // The median of the deviations reuses the buffer and a selection instead of a second sort.
    for value in sorted.iter_mut() {
        *value = (*value - median).abs();
    }
    let len = sorted.len();
    let mid = len / 2;
    let (lower, upper_median, _) = sorted.select_nth_unstable_by(mid, f64::total_cmp);
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
pub fn looks_algorithmic(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return false;
    }
    let labels: Vec<&str> = host.trim_end_matches('.').split('.').collect();
    // The registrable part and subdomains: drop the last label (TLD).
    let candidates = labels.len().saturating_sub(1);
    labels
        .iter()
        .take(candidates.max(1))
        .filter(|l| l.len() >= 10)
        .any(|label| {
            let lower = label.to_ascii_lowercase();
            let letters: Vec<char> = lower.chars().filter(char::is_ascii_alphabetic).collect();
            let digits = lower.chars().filter(char::is_ascii_digit).count();
            let vowels = letters.iter().filter(|c| "aeiou".contains(**c)).count();
            let mut run = 0;
            let mut longest_run = 0;
            for c in lower.chars() {
                if c.is_ascii_alphabetic() && !"aeiouy".contains(c) {
                    run += 1;
                    longest_run = longest_run.max(run);
                } else {
                    run = 0;
                }
            }
            let entropy = shannon_entropy(lower.as_bytes());
            let vowel_share = vowels as f64 / letters.len().max(1) as f64;
            let digit_share = digits as f64 / lower.len() as f64;
            entropy >= 3.3
                && (vowel_share < 0.25
                    || longest_run >= 5
                    || (digit_share > 0.2 && digit_share < 0.8))
        })
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

/// The evidence collected for one analytic on one session.
struct Collected {
    items: Vec<Evidence>,
}

impl Collected {
    fn new() -> Self {
        Self { items: Vec::new() }
    }

    fn add(
        &mut self,
        kind: EvidenceKind,
        weight: f64,
        description: impl Into<String>,
        observed: impl Into<String>,
        number: Option<f64>,
        baseline: Option<String>,
    ) {
        self.items.push(Evidence {
            kind,
            description: description.into(),
            observed: observed.into(),
            observed_number: number,
            baseline,
            weight,
        });
    }

    fn has(&self, kind: EvidenceKind) -> bool {
        self.items.iter().any(|e| e.kind == kind)
    }

    fn score(&self) -> i32 {
        (self.items.iter().map(|e| e.weight).sum::<f64>().round() as i32).clamp(0, 100)
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

/// The scorer's state and logic.
#[derive(Debug, Default)]
pub struct Scorer {
    baselines: BaselineSet,
    cache: ResolveCache,
    config: ScoreConfig,
    histories: FxHashMap<u64, History>,
    open: FxHashMap<u64, OpenFinding>,
    newest: EpochMillis,
    since_expiry: u32,
    stats: ScoreStats,
}

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
                    + h.starts.capacity() * 8
                    + h.bytes_out.capacity() * 8
                    + h.bytes_in.capacity() * 8
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
        let history = self.histories.entry(key).or_default();
        history.push(
            start,
            session.bytes_out,
            session.bytes_in,
            self.config.history,
            baseline.thresholds.time_window_ms,
        );
        let candidate = session.protocol != AppProtocol::Unknown
            && session.protocol_evidence != ProtocolEvidence::None
            && !baseline.permits(session.protocol, session.transport, session.dst_port);
        let recurrence = recurrence(&self.config, history, &baseline, candidate);

        self.since_expiry += 1;
        if self.since_expiry >= 4_096 {
            self.expire();
        }

        let port = candidate.then(|| self.non_standard_port(enriched, &baseline, &recurrence));
        let c2 = self.app_layer_c2(enriched, &baseline, &recurrence, host);
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
        if let Some(collected) = port {
            let analytic = if session.platform == Platform::Ios {
                Analytic::NonStandardPortIos
            } else {
                Analytic::NonStandardPortAndroid
            };
            findings.extend(self.emit(enriched, analytic, collected, &baseline, host));
        }
        if let Some(collected) = c2 {
            findings.extend(self.emit(enriched, Analytic::AppLayerC2, collected, &baseline, host));
        }
        findings
    }

    /// Drops recurrence history and open findings that can no longer matter.
    pub fn expire(&mut self) {
        self.since_expiry = 0;
        let newest = self.newest;
        let window = self.config.suppression_window_ms;
        self.open
            .retain(|_, open| open.window_start + window > newest);
        // The longest TimeWindow any scope could set is unknown here; the suppression window
        // bounds history too, which is at least as long as the default TimeWindow.
        let horizon = window.max(24 * 3_600_000);
        self.histories
            .retain(|_, h| h.starts.back().is_some_and(|t| *t + horizon > newest));
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
            collected.add(
                EvidenceKind::BackgroundNoForeground,
                weight,
                "App was in the background when the session began and did not come to the foreground",
                "app_state=BACKGROUND, no foreground transition",
                None,
                Some(note.to_string()),
            );
        } else if t.foreground_state_required && enriched.app_state == AppRunState::NotRunning {
            collected.add(
                EvidenceKind::BackgroundNoForeground,
                15.0,
                "App was not running in the foreground, which the baseline requires",
                "app_state=NOT_RUNNING",
                None,
                Some("ForegroundStateRequired=true".to_string()),
            );
        }
        if enriched.lock_state == LockState::Locked {
            collected.add(
                EvidenceKind::DeviceLocked,
                10.0,
                "Device was locked during the session",
                if enriched.locked_throughout {
                    "locked throughout"
                } else {
                    "locked at start"
                },
                None,
                None,
            );
        }
        let window = t.recent_user_interaction_window_ms;
        let edr_present =
            enriched.lock_state != LockState::Unknown || enriched.app_state != AppRunState::Unknown;
        match enriched.last_user_interaction_ms_before {
            Some(delta) if delta > window => collected.add(
                EvidenceKind::NoRecentUserInteraction,
                5.0,
                "Last user interaction was older than RecentUserInteractionWindow",
                format!("LastUserInteractionDelta={}s", delta / 1000),
                Some(delta as f64),
                Some(format!("RecentUserInteractionWindow={}s", window / 1000)),
            ),
            None if edr_present => collected.add(
                EvidenceKind::NoRecentUserInteraction,
                5.0,
                "No user interaction within TimeWindow before the session",
                format!("none within {}s", t.time_window_ms / 1000),
                None,
                Some(format!("RecentUserInteractionWindow={}s", window / 1000)),
            ),
            _ => {}
        }
        if let Some(bg) = &enriched.preceding_background_execution {
            if bg.ms_before_session <= self.config.preceding_execution_ms {
                collected.add(
                    EvidenceKind::PrecedingBackgroundExecution,
                    10.0,
                    "Background execution immediately preceded the session",
                    format!("{:?} {}s before", bg.kind, bg.ms_before_session / 1000),
                    Some(bg.ms_before_session as f64),
                    Some(format!(
                        "within {}s",
                        self.config.preceding_execution_ms / 1000
                    )),
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
    ) -> Collected {
        let session = &enriched.session;
        let t = &baseline.thresholds;
        let mut collected = Collected::new();
        collected.add(
            EvidenceKind::ProtocolPortMismatch,
            35.0,
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
            Some(f64::from(session.dst_port)),
            Some(baseline.describe_ports(session.protocol, session.transport)),
        );
        if recurrence.count >= self.config.repeated_sessions {
            collected.add(
                EvidenceKind::RepeatedSessions,
                10.0,
                "Repeated sessions to the same destination and port within TimeWindow",
                format!("{} sessions", recurrence.count),
                Some(recurrence.count as f64),
                Some(format!("TimeWindow={}s", t.time_window_ms / 1000)),
            );
        }
        if let Some(intervals) = recurrence.intervals {
            if recurrence.count > self.config.repeated_sessions && recurrence.stable_share >= 0.8 {
                collected.add(
                    EvidenceKind::StableInterval,
                    15.0,
                    "Sessions recur on a stable interval",
                    format!(
                        "interval {:.0}s, {:.0}% within tolerance",
                        intervals.median / 1000.0,
                        recurrence.stable_share * 100.0
                    ),
                    Some(intervals.median / 1000.0),
                    Some(format!(
                        "BeaconIntervalTolerance={}",
                        t.beacon_interval_tolerance
                    )),
                );
            }
        }
        let duration = session.duration_ms.unwrap_or(0);
        if duration >= t.session_persistence_threshold_ms {
            collected.add(
                EvidenceKind::PersistentConnection,
                10.0,
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
                Some(duration as f64 / 1000.0),
                Some(format!(
                    "SessionPersistenceThreshold={}s",
                    t.session_persistence_threshold_ms / 1000
                )),
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
                Some(Some(false)) => collected.add(
                    EvidenceKind::AppUnmanaged,
                    10.0,
                    "App is not managed by the MDM",
                    format!("{app}: managed=false"),
                    None,
                    None,
                ),
                Some(None) => collected.add(
                    EvidenceKind::AppUnmanaged,
                    10.0,
                    "App is not in the device's MDM inventory",
                    format!("{app}: not in inventory"),
                    None,
                    None,
                ),
                _ => {}
            }
            let outside = |list: &Option<Vec<String>>| {
                list.as_ref().is_some_and(|l| !l.iter().any(|a| a == app))
            };
            if outside(&baseline.allowed_apps) {
                collected.add(
                    EvidenceKind::AppNotAllowed,
                    10.0,
                    "App is outside AllowedAppList",
                    app.to_string(),
                    None,
                    Some("AllowedAppList".to_string()),
                );
            } else if outside(&baseline.allowed_managed_apps) {
                collected.add(
                    EvidenceKind::AppNotAllowed,
                    10.0,
                    "App is outside AllowedManagedApps",
                    app.to_string(),
                    None,
                    Some("AllowedManagedApps".to_string()),
                );
            } else if mdm.is_some_and(|m| m.approved == Some(false)) {
                collected.add(
                    EvidenceKind::AppNotAllowed,
                    10.0,
                    "App is not approved in the MDM",
                    format!("{app}: approved=false"),
                    None,
                    None,
                );
            }
            if let (Some(classes), Some(class)) = (
                &baseline.allowed_service_classes,
                mdm.and_then(|m| m.service_class.as_deref()),
            ) {
                if !classes.iter().any(|c| c == class) {
                    collected.add(
                        EvidenceKind::AppNotAllowed,
                        10.0,
                        "App's service class is outside AllowedServiceClasses",
                        class.to_string(),
                        None,
                        Some(format!("AllowedServiceClasses=[{}]", classes.join(","))),
                    );
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
                        "App's category is not permitted this destination port",
                        format!("{} on {}", session.protocol.name(), session.dst_port),
                        Some(f64::from(session.dst_port)),
                        Some(format!(
                            "AppNetworkBehaviorBaseline[{}].expected_ports",
                            behavior.category
                        )),
                    );
                }
            }
        }
        if session.platform == Platform::Ios
            && baseline.thresholds.supervised_required
            && mdm.is_some_and(|m| m.supervised == Some(false))
        {
            collected.add(
                EvidenceKind::DeviceUnsupervised,
                10.0,
                "Device is not supervised, which the baseline requires",
                "supervised=false",
                None,
                Some("SupervisedRequired=true".to_string()),
            );
        }
    }

    fn app_layer_c2(
        &self,
        enriched: &EnrichedSession,
        baseline: &EffectiveBaseline,
        recurrence: &Recurrence,
        host: Option<&str>,
    ) -> Option<Collected> {
        let session = &enriched.session;
        let t = &baseline.thresholds;
        let mut collected = Collected::new();
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
                    "Beacon-like periodicity to one destination",
                    format!(
                        "interval {:.0}s, MAD/median {:.3}, skew {:.2}, beacon score {:.2}",
                        intervals.median / 1000.0,
                        intervals.dispersion(),
                        intervals.skew,
                        cadence
                    ),
                    Some(intervals.dispersion()),
                    Some(format!(
                        "BeaconIntervalVarianceThreshold={}, CadenceAnomalyThreshold={}",
                        t.beacon_interval_variance_threshold, t.cadence_anomaly_threshold
                    )),
                );
            }
        }
        if recurrence.last_hour as f64 > t.connection_frequency_threshold {
            collected.add(
                EvidenceKind::ConnectionFrequency,
                10.0,
                "Connection rate to one destination over ConnectionFrequencyThreshold",
                format!("{} sessions in the last hour", recurrence.last_hour),
                Some(recurrence.last_hour as f64),
                Some(format!(
                    "ConnectionFrequencyThreshold={}/h",
                    t.connection_frequency_threshold
                )),
            );
        }
        let sni = session.tls.as_ref().and_then(|t| t.sni.as_deref());
        let http_host = session.http.as_ref().and_then(|h| h.host.as_deref());
        if let (Some(sni), Some(http_host)) = (sni, http_host) {
            if !sni.eq_ignore_ascii_case(http_host)
                && !host_has_suffix(sni, http_host)
                && !host_has_suffix(http_host, sni)
            {
                collected.add(
                    EvidenceKind::SniHostMismatch,
                    15.0,
                    "TLS SNI and HTTP Host disagree (domain fronting)",
                    format!("SNI {sni}, Host {http_host}"),
                    None,
                    None,
                );
            }
        }
        if let Some(literal) = [sni, http_host]
            .into_iter()
            .flatten()
            .find(|h| is_ip_literal(h))
        {
            collected.add(
                EvidenceKind::IpLiteralHost,
                10.0,
                "SNI or Host is an IP literal",
                literal.to_string(),
                None,
                None,
            );
        }
        if let Some(name) = all_hosts(enriched)
            .into_iter()
            .find(|h| looks_algorithmic(h))
        {
            collected.add(
                EvidenceKind::AlgorithmicHostname,
                15.0,
                "Destination name looks algorithmically generated",
                name.to_string(),
                Some(shannon_entropy(name.as_bytes())),
                None,
            );
        }
        if let (Some(out), Some(inn)) = (recurrence.sizes_out, recurrence.sizes_in) {
            if out.dispersion() <= self.config.uniform_size_dispersion
                && inn.dispersion() <= self.config.uniform_size_dispersion
            {
                collected.add(
                    EvidenceKind::UniformSizes,
                    15.0,
                    "Uniform request and response sizes across sessions",
                    format!("out ~{:.0} B, in ~{:.0} B", out.median, inn.median),
                    Some(out.dispersion().max(inn.dispersion())),
                    Some(format!(
                        "dispersion <= {}",
                        self.config.uniform_size_dispersion
                    )),
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
                    "High-entropy payload in a protocol that is normally plaintext",
                    format!("{entropy:.2} bits/byte"),
                    Some(entropy),
                    Some(format!(
                        "PayloadEntropyThreshold={}",
                        t.payload_entropy_threshold
                    )),
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
                "Session persisted in the background past SessionPersistenceThreshold",
                format!("{}s in background", duration / 1000),
                Some(duration as f64 / 1000.0),
                Some(format!(
                    "SessionPersistenceThreshold={}s",
                    t.session_persistence_threshold_ms / 1000
                )),
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
                "Networking-API burst without foreground or user interaction",
                format!("{} calls", enriched.network_api_calls_before),
                Some(enriched.network_api_calls_before as f64),
                Some(format!("burst >= {} calls", self.config.api_burst_calls)),
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
                    "Protocol not expected for the app's category",
                    format!("{} for {}", session.protocol.name(), behavior.category),
                    None,
                    Some(format!("AppNetworkBehaviorBaseline[{}]", behavior.category)),
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
                        "Destination never expected for the app's category",
                        host.to_string(),
                        None,
                        Some(format!(
                            "AppNetworkBehaviorBaseline[{}].expected_domain_suffixes",
                            behavior.category
                        )),
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

    fn emit(
        &mut self,
        enriched: &EnrichedSession,
        analytic: Analytic,
        collected: Collected,
        baseline: &Arc<EffectiveBaseline>,
        host: Option<&str>,
    ) -> Option<Finding> {
        let session = &enriched.session;
        let app = session.app_id.as_deref().unwrap_or("");
        let destination = host.unwrap_or(&session.dst_ip);
        let analytic_name = format!("{analytic:?}");
        let key = flow_hash(
            &[&session.device_id, app, &analytic_name, destination],
            session.dst_port,
        );
        let start = session.start_time;
        let score = collected.score();
        let confidence = confidence(enriched);

        if let Some(open) = self.open.get_mut(&key) {
            if start < open.window_start + self.config.suppression_window_ms
                && start >= open.window_start
            {
                let finding = &mut open.finding;
                finding.session_count += 1;
                finding.last_seen = finding.last_seen.max(start);
                finding.first_seen = finding.first_seen.min(start);
                let new_kind = collected
                    .items
                    .iter()
                    .any(|e| !finding.evidence.iter().any(|old| old.kind == e.kind));
                if score <= finding.score && !new_kind {
                    self.stats.suppressed += 1;
                    return None;
                }
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
                finding.baseline_version = baseline.version_label();
                self.stats.updates += 1;
                return Some(finding.clone());
            }
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
            session.device_id, app, analytic_name, destination, session.dst_port, start
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
            dst_host: host.map(str::to_string),
            transport: session.transport,
            protocol: session.protocol,
            first_seen: start,
            last_seen: start,
            session_count: 1,
            score,
            severity: severity(score),
            confidence,
            evidence: collected.items,
            baseline_version: baseline.version_label(),
            event_time: start,
        };
        self.open.insert(
            key,
            OpenFinding {
                finding: finding.clone(),
                window_start: start,
            },
        );
        self.stats.new_findings += 1;
        Some(finding)
    }
}

/// Recurrence of one destination. `exact` forces fresh statistics (the port analytic, which fires
/// rarely, always gets them); otherwise they may be up to [`RECOMPUTE_EVERY`] sessions old.
fn recurrence(
    config: &ScoreConfig,
    history: &mut History,
    baseline: &EffectiveBaseline,
    exact: bool,
) -> Recurrence {
    let count = history.starts.len();
    let newest = history.starts.back().copied().unwrap_or(0);
    let last_hour = history
        .starts
        .iter()
        .rev()
        .take_while(|t| **t > newest - 3_600_000)
        .count();
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
        let intervals: Vec<f64> = history
            .starts
            .iter()
            .zip(history.starts.iter().skip(1))
            .map(|(a, b)| (b - a) as f64)
            .collect();
        let interval_stats = series_stats(&intervals);
        let stable_share = interval_stats.map_or(0.0, |stats| {
            let band = tolerance * stats.median;
            let stable = intervals
                .iter()
                .filter(|i| (**i - stats.median).abs() <= band)
                .count();
            stable as f64 / intervals.len() as f64
        });
        let (sizes_out, sizes_in) = if count >= config.min_series {
            let out: Vec<f64> = history.bytes_out.iter().map(|b| *b as f64).collect();
            let inn: Vec<f64> = history.bytes_in.iter().map(|b| *b as f64).collect();
            (series_stats(&out), series_stats(&inn))
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

fn destination_host(enriched: &EnrichedSession) -> Option<&str> {
    let session = &enriched.session;
    session
        .tls
        .as_ref()
        .and_then(|t| t.sni.as_deref())
        .or_else(|| session.http.as_ref().and_then(|h| h.host.as_deref()))
        .or_else(|| session.dns.as_ref().map(|d| d.qname.as_str()))
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
