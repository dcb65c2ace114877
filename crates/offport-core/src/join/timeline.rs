//! A timeline: entries packed with their time and a 20-bit payload, sorted, bounded, pruned.

use super::*;

/// Bits of a timeline key below the time: the payload (a rank or a small value).
pub(crate) const PAYLOAD_BITS: u32 = 20;

pub(crate) const PAYLOAD_MAX: u64 = (1 << PAYLOAD_BITS) - 1;

/// Latest representable time: 2^44 ms after the epoch, the year 2527.
pub(crate) const TIME_MAX: EpochMillis = (1 << (64 - PAYLOAD_BITS)) - 1;

/// `time` (clamped to 1970..2527; the normalizers reject anything outside as impossible) and a
/// payload packed into one sortable word: entries order by time, then payload, whatever the
/// arrival order.
pub(crate) fn pack(time: EpochMillis, payload: u64) -> u64 {
    let time = u64::try_from(time.clamp(0, TIME_MAX)).unwrap_or(0);
    (time << PAYLOAD_BITS) | payload.min(PAYLOAD_MAX)
}

pub(crate) fn time_of(key: u64) -> EpochMillis {
    EpochMillis::try_from(key >> PAYLOAD_BITS).unwrap_or(TIME_MAX)
}

pub(crate) fn payload_of(key: u64) -> u64 {
    key & PAYLOAD_MAX
}

/// A sorted timeline of packed `(time, payload)` keys with an optional value each. Most
/// timelines carry everything in the payload (a state's rank, a call count) and have `T = ()`:
/// 8 bytes an entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Timeline<T> {
    pub(crate) entries: Vec<(u64, T)>,
}

impl<T> Default for Timeline<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

/// A timeline entry seen from outside: its time and payload.
pub(crate) struct Entry {
    pub(crate) time: EpochMillis,
    pub(crate) payload: u64,
}

impl<T> Timeline<T> {
    pub(crate) fn entry(item: &(u64, T)) -> Entry {
        Entry {
            time: time_of(item.0),
            payload: payload_of(item.0),
        }
    }

    pub(crate) fn insert(&mut self, at: EpochMillis, payload: u64, value: T, cap: usize) -> bool {
        let key = pack(at, payload);
        let index = self.entries.partition_point(|(k, _)| *k <= key);
        if self.entries.len() == self.entries.capacity() {
            // Grow by a quarter rather than doubling: the state is mostly timelines.
            let extra = (self.entries.len() / 4).max(4);
            self.entries.reserve_exact(extra);
        }
        self.entries.insert(index, (key, value));
        if self.entries.len() > cap {
            self.entries.remove(0);
            return true;
        }
        false
    }

    /// The last entry at or before `at`.
    pub(crate) fn as_of(&self, at: EpochMillis) -> Option<Entry> {
        let limit = pack(at, PAYLOAD_MAX);
        let index = self.entries.partition_point(|(k, _)| *k <= limit);
        self.entries.get(index.checked_sub(1)?).map(Self::entry)
    }

    /// Entries with `from < time <= to`.
    pub(crate) fn between(
        &self,
        from: EpochMillis,
        to: EpochMillis,
    ) -> impl Iterator<Item = Entry> + '_ {
        let start = self
            .entries
            .partition_point(|(k, _)| *k <= pack(from, PAYLOAD_MAX));
        let end = self
            .entries
            .partition_point(|(k, _)| *k <= pack(to, PAYLOAD_MAX));
        self.entries
            .get(start..end.max(start))
            .unwrap_or_default()
            .iter()
            .map(Self::entry)
    }

    /// Drops entries before `cutoff`, keeping the last one before it when `keep_last`.
    pub(crate) fn prune(&mut self, cutoff: EpochMillis, keep_last: bool) {
        let before = self.entries.partition_point(|(k, _)| *k < pack(cutoff, 0));
        let drop = if keep_last {
            before.saturating_sub(1)
        } else {
            before
        };
        if drop > 0 {
            self.entries.drain(..drop);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Gives back capacity beyond a quarter more than the length.
    pub(crate) fn shrink(&mut self) {
        if self.entries.capacity() > self.entries.len() + self.entries.len() / 4 + 4 {
            self.entries.shrink_to_fit();
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<(u64, T)>()
    }
}
