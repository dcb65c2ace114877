//! A destination's history: its recent sessions and the three sorted series (inter-arrival
//! times, sizes out, sizes in) kept as they come and go, and what is kept of it in the changelog.

use super::*;

/// One session in a destination's history: 16 bytes, so a full history of 32 is 8 cache lines.
/// Sizes saturate at 4 GiB, which only matters to the size statistics of sessions that large.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Sample {
    pub(crate) start: EpochMillis,
    pub(crate) bytes_out: u32,
    pub(crate) bytes_in: u32,
}

pub(crate) fn saturating_u32(bytes: i64) -> u32 {
    u32::try_from(bytes.max(0)).unwrap_or(u32::MAX)
}

/// One destination's recent sessions, with its three series (inter-arrival times, sizes out,
/// sizes in) kept sorted as the sessions come and go, so the robust statistics of every session
/// are exact and cost no sort: median and quartiles are lookups, the MAD a merge walk of half
/// the series. Two allocations a destination (a hash lookup and two cache-line runs per
/// session). The changelog holds only the samples; the sorted series are rebuilt on restore.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(from = "HistoryRecord", into = "HistoryRecord")]
pub(crate) struct History {
    /// In start order, oldest first.
    pub(crate) samples: VecDeque<Sample>,
    /// The three sorted series back to back: the gaps between consecutive samples in
    /// milliseconds (`len - 1` of them, saturating at u32::MAX, 49.7 days, far beyond any beacon
    /// interval), then the bytes out and the bytes in of the samples (`len` each).
    pub(crate) sorted: Vec<u32>,
    /// How many samples started an hour or more before the newest one (the rest make the
    /// last hour's count); kept as samples come and go.
    #[serde(skip)]
    pub(crate) hour_from: usize,
    /// The newest sample's start (the samples' last, inline for the expiry sweep).
    #[serde(skip)]
    pub(crate) newest: EpochMillis,
    /// What the destination's name looks like, worked out on its first session (the name is
    /// part of the history's key); not in the changelog, worked out again after a restore.
    #[serde(skip)]
    pub(crate) verdict: Option<HostVerdict>,
    /// The baseline in force for the last session, and where it holds; not in the changelog.
    #[serde(skip)]
    pub(crate) baseline: Option<BaselineMemo>,
}

/// A resolved baseline kept by a history, for the scope context hashed to `context`.
#[derive(Debug, Clone)]
pub(crate) struct BaselineMemo {
    pub(crate) context: u64,
    pub(crate) span: ResolvedSpan,
}

/// The parts of a scope context that a history's key does not fix.
pub(crate) fn context_hash(context: &ScopeContext<'_>) -> u64 {
    let mut hasher = FxHasher::default();
    (context.platform as u8).hash(&mut hasher);
    context.app_id.is_some().hash(&mut hasher);
    context.device_group.hash(&mut hasher);
    context.device_role.hash(&mut hasher);
    context.app_category.hash(&mut hasher);
    context.service_class.hash(&mut hasher);
    hasher.finish()
}

/// The changelog form of a [`History`]: its samples.
#[derive(Serialize, Deserialize)]
pub(crate) struct HistoryRecord {
    pub(crate) samples: VecDeque<Sample>,
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

pub(crate) const HOUR_MS: i64 = 3_600_000;

pub(crate) fn gap(earlier: &Sample, later: &Sample) -> u32 {
    u32::try_from(later.start.saturating_sub(earlier.start).max(0)).unwrap_or(u32::MAX)
}

/// The number of values under `value` in a sorted series, which is where `value` goes. A
/// counting scan rather than a binary search: the series are a few dozen values, the scan has no
/// branch to mispredict and compiles to vector compares.
pub(crate) fn rank(sorted: &[u32], value: u32) -> usize {
    sorted.iter().map(|v| usize::from(*v < value)).sum()
}

/// Inserts `value` into the sorted region `buffer[from..to]`.
pub(crate) fn sorted_insert(buffer: &mut Vec<u32>, from: usize, to: usize, value: u32) {
    let index = from + buffer.get(from..to).map_or(0, |region| rank(region, value));
    buffer.insert(index, value);
}

/// Removes one `value` from the sorted region `buffer[from..to]`.
pub(crate) fn sorted_remove(buffer: &mut Vec<u32>, from: usize, to: usize, value: u32) {
    let index = from + buffer.get(from..to).map_or(0, |region| rank(region, value));
    if index < to && buffer.get(index) == Some(&value) {
        buffer.remove(index);
    }
}

/// In the sorted `region`, replaces one `old` with `new`, moving only the values between the
/// two places; false when `old` is not there (which the history's invariants rule out).
pub(crate) fn sorted_replace(region: &mut [u32], old: u32, new: u32) -> bool {
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
    pub(crate) fn push(&mut self, sample: Sample, cap: usize, window: i64) {
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
    pub(crate) fn recount_hour(&mut self) {
        let hour_ago = self.newest().unwrap_or(0) - HOUR_MS;
        self.hour_from = self.samples.partition_point(|s| s.start <= hour_ago);
    }

    /// Samples that started within the hour before the newest one.
    pub(crate) fn last_hour(&self) -> usize {
        self.samples.len().saturating_sub(self.hour_from)
    }

    /// The common case of a full history and a session in order: the oldest sample makes way
    /// for the new one, and each series swaps one value in place. False when that is not the
    /// case (nothing changed then).
    pub(crate) fn roll(&mut self, sample: Sample, cap: usize) -> bool {
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
    pub(crate) fn rebuild(&mut self) {
        let samples = std::mem::take(&mut self.samples);
        self.sorted.clear();
        for sample in samples {
            self.insert(sample);
        }
    }

    /// Adds a sample anywhere in the history; returns how many left the front to make room.
    pub(crate) fn push_slow(&mut self, sample: Sample, cap: usize) -> usize {
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
    pub(crate) fn gaps(len: usize) -> usize {
        len.saturating_sub(1)
    }

    /// Adds a sample in start order (sessions may arrive slightly out of order), with its
    /// sizes and the gaps it makes or splits.
    pub(crate) fn insert(&mut self, sample: Sample) {
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

    pub(crate) fn pop_front(&mut self) {
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
    pub(crate) fn intervals(&self) -> &[u32] {
        self.sorted
            .get(..Self::gaps(self.samples.len()))
            .unwrap_or_default()
    }

    /// The sorted bytes out.
    pub(crate) fn sizes_out(&self) -> &[u32] {
        let (len, gaps) = (self.samples.len(), Self::gaps(self.samples.len()));
        self.sorted.get(gaps..gaps + len).unwrap_or_default()
    }

    /// The sorted bytes in.
    pub(crate) fn sizes_in(&self) -> &[u32] {
        let (len, gaps) = (self.samples.len(), Self::gaps(self.samples.len()));
        self.sorted.get(gaps + len..).unwrap_or_default()
    }

    pub(crate) fn newest(&self) -> Option<EpochMillis> {
        self.samples.back().map(|s| s.start)
    }

    /// The verdict on `host`, the destination name of this history's key.
    pub(crate) fn verdict(&mut self, host: &str) -> HostVerdict {
        *self.verdict.get_or_insert_with(|| HostVerdict::of(host))
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.samples.capacity() * std::mem::size_of::<Sample>()
            + self.sorted.capacity() * std::mem::size_of::<u32>()
    }
}
