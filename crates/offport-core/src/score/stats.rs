//! Robust series statistics (median, MAD, Bowley skew, RITA's regularity) and a destination's
//! recurrence: its counts, its series, the share of sizes near the median.

use super::*;

/// The share of sessions whose sizes must lie near the median, each way, for uniform sizes.
pub(crate) const UNIFORM_SHARE: f64 = 0.75;

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

pub(crate) fn quantile<T: Copy + Into<f64>>(sorted: &[T], q: f64) -> f64 {
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
pub(crate) fn median_and_skew<T: Copy + Into<f64>>(sorted: &[T]) -> (f64, f64) {
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
pub(crate) fn series_stats_in_place(values: &mut [f64]) -> Option<SeriesStats> {
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
pub(crate) fn sorted_stats(sorted: &[u32]) -> Option<SeriesStats> {
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

/// What the recurrence history says about one destination. The series statistics are worked
/// out when an analytic first asks for them (most sessions are settled without some of them).
pub(crate) struct Recurrence<'h> {
    /// The verdict on the destination name, when the destination is a name.
    pub(crate) verdict: Option<HostVerdict>,
    pub(crate) count: usize,
    pub(crate) last_hour: usize,
    /// The history, while statistics may still be needed from it.
    pub(crate) history: Option<&'h History>,
    pub(crate) repeated_sessions: usize,
    pub(crate) min_series: usize,
    pub(crate) tolerance: f64,
    /// Relative distance from the median within which a size counts as the same size.
    pub(crate) size_band: f64,
    pub(crate) intervals: OnceCell<(Option<SeriesStats>, f64)>,
    pub(crate) sizes_out: OnceCell<(Option<SeriesStats>, f64)>,
    pub(crate) sizes_in: OnceCell<(Option<SeriesStats>, f64)>,
}

impl Recurrence<'_> {
    /// Inter-arrival statistics, from [`ScoreConfig::repeated_sessions`] sessions on.
    pub(crate) fn intervals(&self) -> Option<SeriesStats> {
        self.interval_series().0
    }

    /// The share of inter-arrival times within BeaconIntervalTolerance of their median.
    pub(crate) fn stable_share(&self) -> f64 {
        self.interval_series().1
    }

    pub(crate) fn interval_series(&self) -> (Option<SeriesStats>, f64) {
        *self.intervals.get_or_init(|| match self.history {
            Some(history) if self.count >= self.repeated_sessions => {
                share_near_median(history.intervals(), self.tolerance)
            }
            _ => (None, 0.0),
        })
    }

    /// Statistics of the bytes out, from [`ScoreConfig::min_series`] sessions on, and the share
    /// of sessions within the size band of their median.
    pub(crate) fn sizes_out(&self) -> (Option<SeriesStats>, f64) {
        *self
            .sizes_out
            .get_or_init(|| self.size_series(self.history.map(History::sizes_out)))
    }

    /// [`Recurrence::sizes_out`] for the bytes in.
    pub(crate) fn sizes_in(&self) -> (Option<SeriesStats>, f64) {
        *self
            .sizes_in
            .get_or_init(|| self.size_series(self.history.map(History::sizes_in)))
    }

    pub(crate) fn size_series(&self, sorted: Option<&[u32]>) -> (Option<SeriesStats>, f64) {
        match sorted {
            Some(sorted) if self.count >= self.min_series => {
                share_near_median(sorted, self.size_band)
            }
            _ => (None, 0.0),
        }
    }

    /// Every statistic worked out, without the borrow of the history.
    pub(crate) fn settled(&self) -> Recurrence<'static> {
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

/// RITA's beacon score of a destination: the mean of the regularity of its inter-arrival times
/// and of its sizes out.
pub(crate) fn cadence(intervals: &SeriesStats, recurrence: &Recurrence<'_>) -> f64 {
    let sizes_regular = recurrence.sizes_out().0.map_or(0.0, |s| s.regularity());
    (intervals.regularity() + sizes_regular) / 2.0
}

/// Recurrence of one destination: its counts now, its series statistics when asked for.
pub(crate) fn recurrence<'h>(
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
pub(crate) fn share_near_median(sorted: &[u32], band: f64) -> (Option<SeriesStats>, f64) {
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
