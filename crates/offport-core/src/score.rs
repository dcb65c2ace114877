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

/// One destination's recent sessions, with its three series (inter-arrival times, sizes out,
/// sizes in) kept sorted as the sessions come and go, so the robust statistics of every session
/// are exact and cost no sort: median and quartiles are lookups, the MAD a merge walk of half
/// the series. Two allocations a destination (a hash lookup and two cache-line runs per
/// session). The changelog holds only the samples; the sorted series are rebuilt on restore.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(from = "HistoryRecord", into = "HistoryRecord")]
struct History {
    /// In start order, oldest first.
    samples: VecDeque<Sample>,
    /// The three sorted series back to back: the gaps between consecutive samples in
    /// milliseconds (`len - 1` of them, saturating at u32::MAX, 49.7 days, far beyond any beacon
    /// interval), then the bytes out and the bytes in of the samples (`len` each).
    sorted: Vec<u32>,
    /// How many samples started an hour or more before the newest one (the rest make the
    /// last hour's count); kept as samples come and go.
    #[serde(skip)]
    hour_from: usize,
    /// The newest sample's start (the samples' last, inline for the expiry sweep).
    #[serde(skip)]
    newest: EpochMillis,
    /// What the destination's name looks like, worked out on its first session (the name is
    /// part of the history's key); not in the changelog, worked out again after a restore.
    #[serde(skip)]
    verdict: Option<HostVerdict>,
    /// The baseline in force for the last session, and where it holds; not in the changelog.
    #[serde(skip)]
    baseline: Option<BaselineMemo>,
}

/// A resolved baseline kept by a history, for the scope context hashed to `context`.
#[derive(Debug, Clone)]
struct BaselineMemo {
    context: u64,
    span: ResolvedSpan,
}

/// The parts of a scope context that a history's key does not fix.
fn context_hash(context: &ScopeContext<'_>) -> u64 {
    let mut hasher = FxHasher::default();
    (context.platform as u8).hash(&mut hasher);
    context.app_id.is_some().hash(&mut hasher);
    context.device_group.hash(&mut hasher);
    context.device_role.hash(&mut hasher);
    context.app_category.hash(&mut hasher);
    context.service_class.hash(&mut hasher);
    hasher.finish()
}

/// What a destination name looks like; see [`looks_algorithmic`] and [`is_ip_literal`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct HostVerdict {
    ip_literal: bool,
    algorithmic: bool,
}

impl HostVerdict {
    fn of(host: &str) -> Self {
        HostVerdict {
            ip_literal: is_ip_literal(host),
            algorithmic: looks_algorithmic(host),
        }
    }
}

/// The changelog form of a [`History`]: its samples.
#[derive(Serialize, Deserialize)]
struct HistoryRecord {
    samples: VecDeque<Sample>,
}

impl From<HistoryRecord> for History {
    fn from(record: HistoryRecord) -> Self {
        let mut samples = record.samples;
        samples.make_contiguous().sort_by_key(|s| s.start);
        let mut history = History {
            samples,
            ..History::default()
        };
        history.rebuild();
        history.newest = history.newest().unwrap_or(0);
        history.recount_hour();
        history
    }
}

impl From<History> for HistoryRecord {
    fn from(history: History) -> Self {
        HistoryRecord {
            samples: history.samples,
        }
    }
}

const HOUR_MS: i64 = 3_600_000;

/// The share of sessions whose sizes must lie near the median, each way, for uniform sizes.
const UNIFORM_SHARE: f64 = 0.75;

fn gap(earlier: &Sample, later: &Sample) -> u32 {
    u32::try_from(later.start.saturating_sub(earlier.start).max(0)).unwrap_or(u32::MAX)
}

/// The number of values under `value` in a sorted series, which is where `value` goes. A
/// counting scan rather than a binary search: the series are a few dozen values, the scan has no
/// branch to mispredict and compiles to vector compares.
fn rank(sorted: &[u32], value: u32) -> usize {
    sorted.iter().map(|v| usize::from(*v < value)).sum()
}

/// Inserts `value` into the sorted region `buffer[from..to]`.
fn sorted_insert(buffer: &mut Vec<u32>, from: usize, to: usize, value: u32) {
    let index = from + buffer.get(from..to).map_or(0, |region| rank(region, value));
    buffer.insert(index, value);
}

/// Removes one `value` from the sorted region `buffer[from..to]`.
fn sorted_remove(buffer: &mut Vec<u32>, from: usize, to: usize, value: u32) {
    let index = from + buffer.get(from..to).map_or(0, |region| rank(region, value));
    if index < to && buffer.get(index) == Some(&value) {
        buffer.remove(index);
    }
}

/// In the sorted `region`, replaces one `old` with `new`, moving only the values between the
/// two places; false when `old` is not there (which the history's invariants rule out).
fn sorted_replace(region: &mut [u32], old: u32, new: u32) -> bool {
    let from = rank(region, old);
    if region.get(from) != Some(&old) {
        return false;
    }
    let to = rank(region, new);
    if to > from {
        // `new` goes after `old`'s place: the values between move down one.
        region.copy_within(from + 1..to, from);
        if let Some(slot) = region.get_mut(to - 1) {
            *slot = new;
        }
    } else {
        region.copy_within(to..from, to + 1);
        if let Some(slot) = region.get_mut(to) {
            *slot = new;
        }
    }
    true
}

impl History {
    fn push(&mut self, sample: Sample, cap: usize, window: i64) {
        let in_order = self.samples.back().is_none_or(|s| s.start <= sample.start);
        // Samples that leave from the front (the oldest ones).
        let mut dropped = 0;
        if self.roll(sample, cap) {
            dropped += 1;
        } else {
            dropped += self.push_slow(sample, cap);
        }
        let newest = self.samples.back().map_or(sample.start, |s| s.start);
        self.newest = newest;
        while self.samples.len() > cap
            || self
                .samples
                .front()
                .is_some_and(|s| s.start < newest.saturating_sub(window))
        {
            self.pop_front();
            dropped += 1;
        }
        if in_order {
            // Only the oldest samples left and the newest joined at the back: the boundary of
            // the last hour only moves on.
            self.hour_from = self.hour_from.saturating_sub(dropped);
            let hour_ago = newest - HOUR_MS;
            while self
                .samples
                .get(self.hour_from)
                .is_some_and(|s| s.start <= hour_ago)
            {
                self.hour_from += 1;
            }
        } else {
            self.recount_hour();
        }
    }

    /// Finds the last hour's boundary anew.
    fn recount_hour(&mut self) {
        let hour_ago = self.newest().unwrap_or(0) - HOUR_MS;
        self.hour_from = self.samples.partition_point(|s| s.start <= hour_ago);
    }

    /// Samples that started within the hour before the newest one.
    fn last_hour(&self) -> usize {
        self.samples.len().saturating_sub(self.hour_from)
    }

    /// The common case of a full history and a session in order: the oldest sample makes way
    /// for the new one, and each series swaps one value in place. False when that is not the
    /// case (nothing changed then).
    fn roll(&mut self, sample: Sample, cap: usize) -> bool {
        let len = self.samples.len();
        let (Some(oldest), Some(next), Some(newest)) = (
            self.samples.front().copied(),
            self.samples.get(1).copied(),
            self.samples.back().copied(),
        ) else {
            return false;
        };
        if len < cap || newest.start > sample.start {
            return false;
        }
        let gaps = Self::gaps(len);
        let swapped = self.sorted.get_mut(..gaps).is_some_and(|region| {
            sorted_replace(region, gap(&oldest, &next), gap(&newest, &sample))
        }) && self
            .sorted
            .get_mut(gaps..gaps + len)
            .is_some_and(|region| sorted_replace(region, oldest.bytes_out, sample.bytes_out))
            && self
                .sorted
                .get_mut(gaps + len..)
                .is_some_and(|region| sorted_replace(region, oldest.bytes_in, sample.bytes_in));
        self.samples.pop_front();
        self.samples.push_back(sample);
        if !swapped {
            // Not reachable while the series match the samples; rebuilt from them if it were.
            self.rebuild();
        }
        true
    }

    /// Rebuilds the sorted series from the samples.
    fn rebuild(&mut self) {
        let samples = std::mem::take(&mut self.samples);
        self.sorted.clear();
        for sample in samples {
            self.insert(sample);
        }
    }

    /// Adds a sample anywhere in the history; returns how many left the front to make room.
    fn push_slow(&mut self, sample: Sample, cap: usize) -> usize {
        // Make room first so the buffer never grows past `cap` (a VecDeque doubles).
        let full = self.samples.len() >= cap.max(1)
            && self
                .samples
                .front()
                .is_some_and(|s| s.start <= sample.start);
        if full {
            self.pop_front();
        }
        self.insert(sample);
        usize::from(full)
    }

    /// Gaps held for `len` samples.
    fn gaps(len: usize) -> usize {
        len.saturating_sub(1)
    }

    /// Adds a sample in start order (sessions may arrive slightly out of order), with its
    /// sizes and the gaps it makes or splits.
    fn insert(&mut self, sample: Sample) {
        let len = self.samples.len();
        let gaps = Self::gaps(len);
        // Last region first, so the offsets of the earlier ones hold.
        sorted_insert(
            &mut self.sorted,
            gaps + len,
            gaps + 2 * len,
            sample.bytes_in,
        );
        sorted_insert(&mut self.sorted, gaps, gaps + len, sample.bytes_out);
        let index = if self.samples.back().is_none_or(|s| s.start <= sample.start) {
            len
        } else {
            self.samples.partition_point(|s| s.start <= sample.start)
        };
        let before = index
            .checked_sub(1)
            .and_then(|i| self.samples.get(i))
            .copied();
        let after = self.samples.get(index).copied();
        let mut gaps = gaps;
        if let (Some(before), Some(after)) = (before, after) {
            sorted_remove(&mut self.sorted, 0, gaps, gap(&before, &after));
            gaps -= 1;
        }
        if let Some(before) = before {
            sorted_insert(&mut self.sorted, 0, gaps, gap(&before, &sample));
            gaps += 1;
        }
        if let Some(after) = after {
            sorted_insert(&mut self.sorted, 0, gaps, gap(&sample, &after));
        }
        self.samples.insert(index, sample);
    }

    fn pop_front(&mut self) {
        let len = self.samples.len();
        let gaps = Self::gaps(len);
        let Some(oldest) = self.samples.pop_front() else {
            return;
        };
        sorted_remove(
            &mut self.sorted,
            gaps + len,
            gaps + 2 * len,
            oldest.bytes_in,
        );
        sorted_remove(&mut self.sorted, gaps, gaps + len, oldest.bytes_out);
        if let Some(next) = self.samples.front() {
            sorted_remove(&mut self.sorted, 0, gaps, gap(&oldest, next));
        }
    }

    /// The sorted gaps between consecutive samples.
    fn intervals(&self) -> &[u32] {
        self.sorted
            .get(..Self::gaps(self.samples.len()))
            .unwrap_or_default()
    }

    /// The sorted bytes out.
    fn sizes_out(&self) -> &[u32] {
        let (len, gaps) = (self.samples.len(), Self::gaps(self.samples.len()));
        self.sorted.get(gaps..gaps + len).unwrap_or_default()
    }

    /// The sorted bytes in.
    fn sizes_in(&self) -> &[u32] {
        let (len, gaps) = (self.samples.len(), Self::gaps(self.samples.len()));
        self.sorted.get(gaps + len..).unwrap_or_default()
    }

    fn newest(&self) -> Option<EpochMillis> {
        self.samples.back().map(|s| s.start)
    }

    /// The verdict on `host`, the destination name of this history's key.
    fn verdict(&mut self, host: &str) -> HostVerdict {
        *self.verdict.get_or_insert_with(|| HostVerdict::of(host))
    }

    /// Heap bytes held.
    fn heap_bytes(&self) -> usize {
        self.samples.capacity() * std::mem::size_of::<Sample>()
            + self.sorted.capacity() * std::mem::size_of::<u32>()
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

fn quantile<T: Copy + Into<f64>>(sorted: &[T], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let position = q * (sorted.len() - 1) as f64;
    let low = position.floor() as usize;
    let high = position.ceil() as usize;
    let a = sorted.get(low).copied().map_or(0.0, Into::into);
    let b = sorted.get(high).copied().map_or(a, Into::into);
    a + (b - a) * (position - low as f64)
}

/// The median and the Bowley (quartile) skew of a sorted series.
fn median_and_skew<T: Copy + Into<f64>>(sorted: &[T]) -> (f64, f64) {
    let median = quantile(sorted, 0.5);
    let q1 = quantile(sorted, 0.25);
    let q3 = quantile(sorted, 0.75);
    let skew = if q3 - q1 > 0.0 {
        (q3 + q1 - 2.0 * median) / (q3 - q1)
    } else {
        0.0
    };
    (median, skew)
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
    let (median, skew) = median_and_skew(values);
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

/// [`series_stats`] of an already sorted series, without copying or sorting it: quartiles are
/// lookups, and the deviations from the median, smallest first, come from walking outwards
/// from the median (the left side's deviations grow leftwards, the right side's rightwards).
fn sorted_stats(sorted: &[u32]) -> Option<SeriesStats> {
    let len = sorted.len();
    if len < 2 {
        return None;
    }
    let (median, skew) = median_and_skew(sorted);
    // The (len / 2)-th smallest deviation and the one before it (for an even length). The
    // median of integers is a whole or a half, so twice the deviations are exact integers and
    // the walk compares integers without branches (a missing side counts as infinitely far).
    let twice_median = (median * 2.0) as i64;
    let twice_deviation = |v: u32| (2 * i64::from(v) - twice_median).unsigned_abs();
    let mut left = rank(sorted, (median.ceil()) as u32);
    let mut right = left;
    let (mut previous, mut current) = (0u64, 0u64);
    for _ in 0..=len / 2 {
        let below = left
            .checked_sub(1)
            .and_then(|i| sorted.get(i))
            .map_or(u64::MAX, |v| twice_deviation(*v));
        let above = sorted.get(right).map_or(u64::MAX, |v| twice_deviation(*v));
        let take_below = below <= above;
        left -= usize::from(take_below);
        right += usize::from(!take_below);
        previous = current;
        current = below.min(above);
    }
    let mad = if len.is_multiple_of(2) {
        (previous + current) as f64 / 4.0
    } else {
        current as f64 / 2.0
    };
    Some(SeriesStats { median, mad, skew })
}

/// True when `host` looks algorithmically generated: judged on the label its owner registered
/// (the one left of the public suffix, from the Public Suffix List: `googlevideo` in
/// `rr4---sn-5hne6nzk.googlevideo.com`, `psqdlcmzsstkkp` in `psqdlcmzsstkkp.top`), by character
/// entropy, digit share and consonant runs. A DGA makes names to register; the labels below a
/// registered name are its owner's choice (CDN node names, tenant ids) and say nothing of it.
/// Where the suffix is not on the list, every label but the last is judged. A heuristic, tuned
/// to stay quiet on real CDN and API names; it is one evidence item, never a finding on its
/// own. Runs on every scored session, so it does not allocate.
pub fn looks_algorithmic(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return false;
    }
    let trimmed = host.trim_end_matches('.');
    if let Some(registered) = registered_label(trimmed) {
        return registered.len() >= 10 && label_looks_algorithmic(registered.as_bytes());
    }
    let labels = trimmed.split('.').count();
    trimmed
        .split('.')
        .take(labels.saturating_sub(1).max(1))
        .filter(|label| label.len() >= 10)
        .any(|label| label_looks_algorithmic(label.as_bytes()))
}

/// The label left of `host`'s ICANN public suffix, when the suffix is a known one. A private
/// suffix (`cloudfront.net`, `github.io`) is a provider's namespace whose labels the provider
/// generates for every customer: the label judged is the provider's own.
fn registered_label(host: &str) -> Option<&str> {
    let mut tail = host;
    loop {
        let suffix = psl::suffix(tail.as_bytes()).filter(|s| s.is_known())?;
        let bytes = suffix.as_bytes();
        if suffix.typ() == Some(psl::Type::Icann) {
            let rest = host.get(..host.len().checked_sub(bytes.len() + 1)?)?;
            return rest.rsplit('.').next().filter(|label| !label.is_empty());
        }
        // Its ICANN part is a shorter suffix of the same name.
        let text = host.get(host.len().checked_sub(bytes.len())?..)?;
        tail = text.split_once('.')?.1;
    }
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
    // A label with almost no vowels or a run of six consonants is no word or brand in any
    // language; a short one cannot reach a long one's entropy (14 random consonants carry
    // 2.9-3.6 bits), so it needs only varied characters: at least half of them distinct (a
    // repeated pattern such as `xxxxxxxxxx` is not a generated name). Other shaped labels need
    // 3.3 bits.
    if vowel_share < 0.1 || longest_run >= 6 {
        let mut seen = [false; 256];
        let mut distinct = 0usize;
        for byte in label.iter().map(u8::to_ascii_lowercase) {
            if let Some(slot) = seen.get_mut(usize::from(byte)) {
                if !*slot {
                    *slot = true;
                    distinct += 1;
                }
            }
        }
        return distinct * 2 >= label.len() && distinct >= 6;
    }
    shannon_entropy_of(label.iter().map(u8::to_ascii_lowercase)) >= 3.3
}

/// An address on the internet: not private, loopback, link-local, multicast, shared (CGNAT)
/// or unspecified.
fn is_public_address(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || (a == 100 && (64..128).contains(&b)))
        }
        std::net::IpAddr::V6(v6) => {
            let first = v6.segments().first().copied().unwrap_or(0);
            !(v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
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

    fn score(&self) -> i32 {
        (self.weight.round() as i32).clamp(0, 100)
    }
}

/// What the recurrence history says about one destination. The series statistics are worked
/// out when an analytic first asks for them (most sessions are settled without some of them).
struct Recurrence<'h> {
    /// The verdict on the destination name, when the destination is a name.
    verdict: Option<HostVerdict>,
    count: usize,
    last_hour: usize,
    /// The history, while statistics may still be needed from it.
    history: Option<&'h History>,
    repeated_sessions: usize,
    min_series: usize,
    tolerance: f64,
    /// Relative distance from the median within which a size counts as the same size.
    size_band: f64,
    intervals: OnceCell<(Option<SeriesStats>, f64)>,
    sizes_out: OnceCell<(Option<SeriesStats>, f64)>,
    sizes_in: OnceCell<(Option<SeriesStats>, f64)>,
}

impl Recurrence<'_> {
    /// Inter-arrival statistics, from [`ScoreConfig::repeated_sessions`] sessions on.
    fn intervals(&self) -> Option<SeriesStats> {
        self.interval_series().0
    }

    /// The share of inter-arrival times within BeaconIntervalTolerance of their median.
    fn stable_share(&self) -> f64 {
        self.interval_series().1
    }

    fn interval_series(&self) -> (Option<SeriesStats>, f64) {
        *self.intervals.get_or_init(|| match self.history {
            Some(history) if self.count >= self.repeated_sessions => {
                share_near_median(history.intervals(), self.tolerance)
            }
            _ => (None, 0.0),
        })
    }

    /// Statistics of the bytes out, from [`ScoreConfig::min_series`] sessions on, and the share
    /// of sessions within the size band of their median.
    fn sizes_out(&self) -> (Option<SeriesStats>, f64) {
        *self
            .sizes_out
            .get_or_init(|| self.size_series(self.history.map(History::sizes_out)))
    }

    /// [`Recurrence::sizes_out`] for the bytes in.
    fn sizes_in(&self) -> (Option<SeriesStats>, f64) {
        *self
            .sizes_in
            .get_or_init(|| self.size_series(self.history.map(History::sizes_in)))
    }

    fn size_series(&self, sorted: Option<&[u32]>) -> (Option<SeriesStats>, f64) {
        match sorted {
            Some(sorted) if self.count >= self.min_series => {
                share_near_median(sorted, self.size_band)
            }
            _ => (None, 0.0),
        }
    }

    /// Every statistic worked out, without the borrow of the history.
    fn settled(&self) -> Recurrence<'static> {
        let settled = Recurrence {
            verdict: self.verdict,
            count: self.count,
            last_hour: self.last_hour,
            history: None,
            repeated_sessions: self.repeated_sessions,
            min_series: self.min_series,
            tolerance: self.tolerance,
            size_band: self.size_band,
            intervals: OnceCell::new(),
            sizes_out: OnceCell::new(),
            sizes_in: OnceCell::new(),
        };
        let _ = settled.intervals.set(self.interval_series());
        let _ = settled.sizes_out.set(self.sizes_out());
        let _ = settled.sizes_in.set(self.sizes_in());
        settled
    }
}

/// A session with everything it is judged on.
struct Judged<'a> {
    enriched: &'a EnrichedSession,
    baseline: &'a EffectiveBaseline,
    recurrence: &'a Recurrence<'a>,
    host: Option<&'a str>,
    /// A recognised protocol on a port its baseline does not approve.
    off_baseline: bool,
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

/// Sessions warmed together before they are scored ([`Scorer::score_all`]): enough loads in
/// flight to overlap their cache misses, few enough that what they touch stays in the L1/L2
/// caches until it is scored. 8, 16 and 32 all gained in the core bench; 16 is in the middle.
pub const WARM_GROUP: usize = 16;

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
        let mdm = enriched.mdm.as_ref();
        let context = ScopeContext {
            platform: session.platform,
            device_group: mdm.and_then(|m| m.device_group.as_deref()),
            device_role: mdm.and_then(|m| m.device_role.as_deref()),
            app_category: mdm.and_then(|m| m.app_category.as_deref()),
            service_class: mdm.and_then(|m| m.service_class.as_deref()),
            app_id: session.app_id.as_deref(),
        };
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
                let span = self
                    .baselines
                    .resolve_span(&mut self.cache, &context, start);
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

/// The analytics' rules: what a session's evidence is, with the scorer's tuning.
struct Rules<'c> {
    config: &'c ScoreConfig,
}

impl Rules<'_> {
    /// The evidence of `analytic` for a session, or `None` when the analytic does not fire.
    /// `full` adds the words (see [`Collected`]).
    fn collect(&self, analytic: Analytic, judged: &Judged<'_>, full: bool) -> Option<Collected> {
        match analytic {
            Analytic::NonStandardPortAndroid | Analytic::NonStandardPortIos => Some(
                self.non_standard_port(judged.enriched, judged.baseline, judged.recurrence, full),
            ),
            Analytic::AppLayerC2 => self.app_layer_c2(judged, full),
        }
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
        recurrence: &Recurrence<'_>,
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
        if let Some(intervals) = recurrence.intervals() {
            if recurrence.count > self.config.repeated_sessions && recurrence.stable_share() >= 0.8
            {
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
                                recurrence.stable_share() * 100.0
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

    fn app_layer_c2(&self, judged: &Judged<'_>, full: bool) -> Option<Collected> {
        let Judged {
            enriched,
            baseline,
            recurrence,
            host,
            off_baseline,
        } = *judged;
        let session = &enriched.session;
        let t = &baseline.thresholds;
        // C2 needs two independent core indicators, at least one of them about the session
        // itself: SNI/Host mismatch, a destination known only by its address, an algorithmic
        // name, high payload entropy, background persistence, a protocol off its approved
        // ports. Periodicity and uniform sizes are one more, together: they are what every
        // machine-timed heartbeat shows (NTP polls, MDM check-ins, ActiveSync pings, config
        // polls), so timing alone never makes a finding. The session's indicators come first;
        // the series' statistics are computed only for a session that has one.
        let sni = session.tls.as_ref().and_then(|t| t.sni.as_deref());
        let http_host = session.http.as_ref().and_then(|h| h.host.as_deref());
        let mismatch = match (sni, http_host) {
            (Some(sni), Some(http_host))
                if !sni.eq_ignore_ascii_case(http_host)
                    && !host_has_suffix(sni, http_host)
                    && !host_has_suffix(http_host, sni) =>
            {
                Some((sni, http_host))
            }
            _ => None,
        };
        // The destination name's verdict is the history's; other names are judged here.
        let kept = |name: &str| recurrence.verdict.filter(|_| host == Some(name));
        let literal = [sni, http_host]
            .into_iter()
            .flatten()
            .find(|h| kept(h).map_or_else(|| is_ip_literal(h), |v| v.ip_literal));
        // A TLS handshake the sensor read, with no server name, to a public address: a client
        // that connects by name sends it (RFC 6066 forbids an address there), so the
        // destination is an address the app carries, as with an IP-literal Host. The sensor
        // must have read the ClientHello: a handshake record (Zeek ssl.log, an EVE tls event,
        // the client's bytes), or nDPI's TLS verdict in a PCAPdroid row, which comes from the
        // ClientHello and would carry its name. A session with no handshake record (a QUIC
        // flow, a conn.log whose ssl.log never came) says nothing of the name.
        let handshake_read = session.tls.is_some()
            || (session.source_format == SourceFormat::PcapdroidCsv
                && session.protocol == AppProtocol::Tls);
        let nameless = (literal.is_none()
            && handshake_read
            && matches!(session.protocol, AppProtocol::Tls | AppProtocol::Quic)
            && sni.is_none()
            && http_host.is_none()
            && session
                .dst_ip
                .parse::<std::net::IpAddr>()
                .is_ok_and(is_public_address))
        .then_some(session.dst_ip.as_str());
        let algorithmic = all_hosts(enriched)
            .find(|h| kept(h).map_or_else(|| looks_algorithmic(h), |v| v.algorithmic));
        let encrypted_by_design = matches!(
            session.protocol,
            AppProtocol::Tls | AppProtocol::Dtls | AppProtocol::Quic | AppProtocol::Ssh
        );
        let entropy = session
            .payload_entropy
            .filter(|e| !encrypted_by_design && *e > t.payload_entropy_threshold);
        let background =
            enriched.app_state == AppRunState::Background && !enriched.foreground_transition_during;
        let duration = session.duration_ms.unwrap_or(0);
        let persistent = background && duration > t.session_persistence_threshold_ms;
        let cheap = [
            mismatch.is_some(),
            literal.is_some() || nameless.is_some(),
            algorithmic.is_some(),
            entropy.is_some(),
            persistent,
            off_baseline,
        ]
        .into_iter()
        .filter(|x| *x)
        .count();
        if cheap == 0 {
            return None;
        }

        // Beacons are machine-timed: a series is judged only while nobody attends the app. A
        // session of an app in the foreground on an unlocked device with a recent interaction
        // follows its user's rhythm (a player fetching the next track, a feed refreshing as it
        // is scrolled), however regular that looks.
        let attended = (enriched.app_state == AppRunState::Foreground
            || enriched.foreground_transition_during)
            && enriched.lock_state != LockState::Locked
            && enriched
                .last_user_interaction_ms_before
                .is_some_and(|d| d <= t.recent_user_interaction_window_ms);
        // Periodicity: the intervals' MAD/median within BeaconIntervalVarianceThreshold.
        let beacon = (!attended && recurrence.count >= self.config.min_series)
            .then(|| recurrence.intervals())
            .flatten()
            .filter(|intervals| intervals.dispersion() <= t.beacon_interval_variance_threshold);
        if cheap < 2 && beacon.is_none() && recurrence.count < self.config.min_series {
            return None;
        }
        // Not for DNS: the series of one query name is the same lookup again, the same size
        // by nature (a tunnel's changing labels make a new name, and a new series, each time).
        let sized = session.protocol != AppProtocol::Dns;
        // Uniform: a tight MAD each way, and most sessions near the median each way (a MAD
        // alone is met by chance when half of a few varying sizes happen to agree).
        let uniform_series = |(stats, share): (Option<SeriesStats>, f64)| {
            stats.filter(|s| {
                s.dispersion() <= self.config.uniform_size_dispersion && share >= UNIFORM_SHARE
            })
        };
        let uniform = (sized && !attended)
            .then(|| uniform_series(recurrence.sizes_out()))
            .flatten()
            .and_then(|out| uniform_series(recurrence.sizes_in()).map(|inn| (out, inn)));
        if cheap + usize::from(beacon.is_some() || uniform.is_some()) < 2 {
            return None;
        }

        let mut collected = Collected::new(full);
        if let Some(intervals) = beacon {
            // A regular series whose sizes are regular too (RITA's beacon score over
            // CadenceAnomalyThreshold) is a strong indicator; a regular series alone, a weak one.
            let cadence = cadence(&intervals, recurrence);
            let weight = if cadence >= t.cadence_anomaly_threshold {
                25.0
            } else {
                15.0
            };
            collected.add(
                EvidenceKind::BeaconPeriodicity,
                weight,
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
        if let Some((sni, http_host)) = mismatch {
            collected.add(EvidenceKind::SniHostMismatch, 15.0, None, || {
                text(
                    "TLS SNI and HTTP Host disagree (domain fronting)",
                    format!("SNI {sni}, Host {http_host}"),
                    None,
                )
            });
        }
        if let Some(literal) = literal {
            collected.add(EvidenceKind::IpLiteralHost, 10.0, None, || {
                text("SNI or Host is an IP literal", literal.to_string(), None)
            });
        } else if let Some(address) = nameless {
            collected.add(EvidenceKind::IpLiteralHost, 10.0, None, || {
                text(
                    "TLS without a server name: the destination is known only by its address",
                    format!("{} to {address}, no SNI", session.protocol.name()),
                    None,
                )
            });
        }
        if off_baseline {
            collected.add(
                EvidenceKind::ProtocolPortMismatch,
                10.0,
                Some(f64::from(session.dst_port)),
                || {
                    text(
                        format!(
                            "{} on {}/{}, outside its approved ports",
                            session.protocol.name(),
                            session.dst_port,
                            session.transport.name().to_ascii_lowercase()
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
        }
        if let Some(name) = algorithmic {
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
        if let Some((out, inn)) = uniform {
            collected.add(
                EvidenceKind::UniformSizes,
                15.0,
                Some(out.dispersion().max(inn.dispersion())),
                || {
                    text(
                        "Uniform request and response sizes across sessions",
                        format!(
                            "out ~{:.0} B, in ~{:.0} B; {:.0}% and {:.0}% of sessions within {:.0}% of them",
                            out.median,
                            inn.median,
                            recurrence.sizes_out().1 * 100.0,
                            recurrence.sizes_in().1 * 100.0,
                            recurrence.size_band * 100.0
                        ),
                        Some(format!(
                            "dispersion <= {}, at least {:.0}% of sessions within {:.0}%",
                            self.config.uniform_size_dispersion,
                            UNIFORM_SHARE * 100.0,
                            recurrence.size_band * 100.0
                        )),
                    )
                },
            );
        }
        if let Some(entropy) = entropy {
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
        if persistent {
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
        // Device and app state make C2 more likely but never raise a finding by themselves
        // (the two core indicators were checked above, before any words).
        self.context_evidence(enriched, baseline, &mut collected);
        (collected.score() >= self.config.c2_min_score).then_some(collected)
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

/// RITA's beacon score of a destination: the mean of the regularity of its inter-arrival times
/// and of its sizes out.
fn cadence(intervals: &SeriesStats, recurrence: &Recurrence<'_>) -> f64 {
    let sizes_regular = recurrence.sizes_out().0.map_or(0.0, |s| s.regularity());
    (intervals.regularity() + sizes_regular) / 2.0
}

/// Recurrence of one destination: its counts now, its series statistics when asked for.
fn recurrence<'h>(
    config: &ScoreConfig,
    history: &'h History,
    baseline: &EffectiveBaseline,
    host: Option<&str>,
) -> Recurrence<'h> {
    Recurrence {
        verdict: host.and(history.verdict),
        count: history.samples.len(),
        last_hour: history.last_hour(),
        history: Some(history),
        repeated_sessions: config.repeated_sessions,
        min_series: config.min_series,
        tolerance: baseline.thresholds.beacon_interval_tolerance,
        size_band: 2.0 * config.uniform_size_dispersion,
        intervals: OnceCell::new(),
        sizes_out: OnceCell::new(),
        sizes_in: OnceCell::new(),
    }
}

/// Statistics of a sorted series, and the share of its values within `band` (relative) of its
/// median.
fn share_near_median(sorted: &[u32], band: f64) -> (Option<SeriesStats>, f64) {
    let stats = sorted_stats(sorted);
    let share = stats.map_or(0.0, |stats| {
        let band = band * stats.median;
        // The values within the band are a run of the sorted series: two binary searches.
        // (`value - median` is exact for these integers and halves, so the bounds are the
        // same comparisons as `|value - median| <= band`.)
        let offset = |value: &u32| f64::from(*value) - stats.median;
        let below = sorted.partition_point(|value| offset(value) < -band);
        let through = sorted.partition_point(|value| offset(value) <= band);
        let near = through.saturating_sub(below);
        near as f64 / sorted.len() as f64
    });
    (stats, share)
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
#[path = "score_tests.rs"]
mod tests;
