//! The exactly-once loops' decisions, as pure functions: where a partition resumes and how far
//! it is processed, which offsets a batch commits, whether a joiner input lags, and whether a
//! partition is read to its end. The loops ([`crate::runtime::normalizer`], [`crate::runtime::stateful`]) read
//! offsets from the broker and act on these answers; the answers themselves are tested here
//! without one.

use std::collections::BTreeMap;
use std::time::Duration;

/// How far a partition is committed and processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The committed offset: where a restart resumes reading.
    pub resume: i64,
    /// Records before this offset have their outputs committed.
    pub processed: i64,
}

/// The prefix of the committed offset's metadata that records the processed offset (records
/// between the committed offset and it are read again after a restart only to rebuild held
/// state).
pub const PROCESSED_PREFIX: &str = "offport:processed=";

/// Progress from a committed offset and its metadata; `first_seen` (the partition's first
/// record) when nothing is committed. A processed mark behind the committed offset (another
/// tool committed) or unreadable is not trusted.
pub fn progress_from(committed: Option<i64>, metadata: &str, first_seen: i64) -> Progress {
    let resume = committed.unwrap_or(first_seen);
    let processed = metadata
        .strip_prefix(PROCESSED_PREFIX)
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|p| *p >= resume)
        .unwrap_or(resume);
    Progress { resume, processed }
}

/// The progress of every partition after a batch: processed past the batch's last record of
/// each partition; committed (resumed from) at the earliest record the normalizer still holds
/// (`held_from`), so a restart reads held records again. Every tracked partition is in the
/// answer, with or without records in the batch: records of one partition may release those
/// held from another.
pub fn after_batch<'t>(
    progress: &BTreeMap<(String, i32), Progress>,
    batch: impl IntoIterator<Item = (&'t str, i32, i64)>,
    held_from: impl Fn(&str, i32) -> Option<i64>,
) -> BTreeMap<(String, i32), Progress> {
    let mut next: BTreeMap<(String, i32), i64> = progress
        .iter()
        .map(|(key, p)| (key.clone(), p.processed))
        .collect();
    for (topic, partition, offset) in batch {
        match next
            .iter_mut()
            .find(|((t, p), _)| *p == partition && t == topic)
        {
            Some((_, processed)) => *processed = (*processed).max(offset + 1),
            None => {
                next.insert((topic.to_string(), partition), offset + 1);
            }
        }
    }
    next.into_iter()
        .map(|((topic, partition), processed)| {
            let resume = held_from(&topic, partition).map_or(processed, |held| held.min(processed));
            ((topic, partition), Progress { resume, processed })
        })
        .collect()
}

/// Whether an input of a task lags: records are left to read on its partition (its `position`
/// is before its `end`; an unknown position or end counts as records left) and the input has
/// brought the task a record within `idle_after` (`since_last_record`). An input that has been
/// quiet longer is not waited for: a partition nobody writes to would hold the watermark for
/// ever.
pub fn input_lags(
    position: Option<i64>,
    end: Option<i64>,
    since_last_record: Duration,
    idle_after: Duration,
) -> bool {
    let unread = match (position, end) {
        (Some(position), Some(end)) => position < end,
        _ => true,
    };
    unread && since_last_record < idle_after
}

/// Whether a partition is read to its end: the consumer's position at or past the high
/// watermark (the last stable offset, read committed), or, with no position yet, an empty
/// partition.
pub fn read_to_end(position: Option<i64>, low: i64, high: i64) -> bool {
    match position {
        Some(position) => position >= high,
        None => high <= low,
    }
}

/// The upstream topics a task waits for until it has their progress markers: those known to
/// hold records, and those the broker gave no answer about (unknown is not empty).
pub fn awaited_upstream(with_records: &[String], unanswered: &[String]) -> Vec<String> {
    let mut awaited = with_records.to_vec();
    awaited.extend(
        unanswered
            .iter()
            .filter(|t| !with_records.contains(t))
            .cloned(),
    );
    awaited
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;

    #[test]
    fn progress_reads_the_processed_mark_and_falls_back_to_the_committed_offset() {
        let at = |resume, processed| Progress { resume, processed };
        assert_eq!(
            progress_from(Some(40), "offport:processed=55", 0),
            at(40, 55)
        );
        assert_eq!(progress_from(Some(40), "", 0), at(40, 40));
        // A mark behind the committed offset (another tool committed) is not trusted.
        assert_eq!(
            progress_from(Some(40), "offport:processed=12", 0),
            at(40, 40)
        );
        assert_eq!(progress_from(None, "", 7), at(7, 7));
        assert_eq!(
            progress_from(Some(3), "offport:processed=lots", 0),
            at(3, 3)
        );
    }

    #[test]
    fn a_batch_commits_behind_held_records_and_moves_every_tracked_partition() {
        let mut progress = BTreeMap::new();
        progress.insert(
            ("raw".to_string(), 0),
            Progress {
                resume: 10,
                processed: 10,
            },
        );
        progress.insert(
            ("raw".to_string(), 1),
            Progress {
                resume: 5,
                processed: 8,
            },
        );
        // Records 10..=14 of partition 0 and 20 of a partition not tracked before; the
        // normalizer holds partition 0 from 12 (a flow waiting for its other half) and nothing
        // of partition 1 any more (released by partition 0's records).
        let batch = [("raw", 0, 10), ("raw", 0, 14), ("raw", 2, 20)];
        let held = |topic: &str, partition| (topic == "raw" && partition == 0).then_some(12);
        let after = after_batch(&progress, batch, held);
        assert_eq!(
            after[&("raw".to_string(), 0)],
            Progress {
                resume: 12,
                processed: 15
            }
        );
        assert_eq!(
            after[&("raw".to_string(), 1)],
            Progress {
                resume: 8,
                processed: 8
            }
        );
        assert_eq!(
            after[&("raw".to_string(), 2)],
            Progress {
                resume: 21,
                processed: 21
            }
        );
        // Held from before the batch's records: the commit never passes the processed mark
        // either way.
        let after = after_batch(&progress, [], |_, _| Some(99));
        assert_eq!(
            after[&("raw".to_string(), 0)],
            Progress {
                resume: 10,
                processed: 10
            }
        );
    }

    #[test]
    fn an_input_lags_while_records_are_left_unless_it_has_been_quiet() {
        let idle = Duration::from_secs(10);
        let recent = Duration::from_secs(1);
        assert!(input_lags(Some(5), Some(9), recent, idle));
        assert!(!input_lags(Some(9), Some(9), recent, idle));
        // Not known yet: taken to have records left.
        assert!(input_lags(None, Some(9), recent, idle));
        assert!(input_lags(Some(5), None, recent, idle));
        // Quiet longer than the idle timeout: not waited for.
        assert!(!input_lags(Some(5), Some(9), Duration::from_secs(11), idle));
    }

    #[test]
    fn a_partition_is_at_its_end_when_the_position_reaches_the_high_watermark() {
        assert!(read_to_end(Some(9), 0, 9));
        assert!(!read_to_end(Some(8), 0, 9));
        // Transaction markers move the end past the last record: the position passes them.
        assert!(read_to_end(Some(10), 0, 10));
        assert!(read_to_end(None, 4, 4), "empty, nothing consumed");
        assert!(!read_to_end(None, 0, 4), "records, nothing consumed yet");
    }

    #[test]
    fn an_upstream_topic_the_broker_did_not_answer_for_is_awaited_as_one_with_records() {
        let topics = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            awaited_upstream(&topics(&["raw.edr"]), &topics(&["raw.proxy"])),
            topics(&["raw.edr", "raw.proxy"])
        );
        // Once a check answers, the topic is either with records or not awaited.
        assert_eq!(
            awaited_upstream(&topics(&["raw.edr"]), &[]),
            topics(&["raw.edr"])
        );
        assert_eq!(
            awaited_upstream(&topics(&["raw.proxy"]), &topics(&["raw.proxy"])),
            topics(&["raw.proxy"]),
            "named once"
        );
    }
}
