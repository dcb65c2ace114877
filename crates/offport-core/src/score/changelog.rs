//! The scorer's state in the changelog: destinations' histories, open findings and the meta
//! record, as postcard values under `history/`, `finding/` and `meta`.

use super::*;

#[derive(Debug, Default)]
pub(crate) struct ScoreJournal {
    pub(crate) histories: FxHashSet<u64>,
    pub(crate) open: FxHashSet<u64>,
    pub(crate) meta: bool,
}

/// The changelog form of the scorer's clocks.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ScoreMeta {
    pub(crate) newest: EpochMillis,
    pub(crate) since_expiry: usize,
}

pub(crate) const HISTORY_PREFIX: &str = "history/";

pub(crate) const FINDING_PREFIX: &str = "finding/";

pub(crate) const SCORE_META_KEY: &str = "meta";

pub(crate) fn hex_key(prefix: &str, key: u64) -> String {
    format!("{prefix}{key:016x}")
}

pub(crate) fn parse_hex_key(key: &str, hex: &str) -> Result<u64, RestoreError> {
    u64::from_str_radix(hex, 16).map_err(|e| RestoreError::new(key, e))
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
