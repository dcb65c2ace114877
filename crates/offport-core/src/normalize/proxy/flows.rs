//! Joining a sensor's records of one flow (Zeek `uid`, Suricata `flow_id`) into one session.
//!
//! Sensors write the application-layer records of a connection (Zeek ssl/http/dns.log,
//! Suricata tls/http/dns events) while it runs and the connection record (Zeek conn.log,
//! Suricata `flow`) when it ends. So the connection record completes a session, and only it:
//!
//! - a **companion** (application-layer record) is checked at once (a bad one is rejected on
//!   its own) and held, merged with other companions of its flow;
//! - the **connection record** takes what its flow's companions said, fills what it lacks from
//!   them (SNI, JA3/JA4, Host, DNS name, the protocol when it has no `service`) and is emitted:
//!   every flow becomes exactly one session;
//! - event time is kept **per source partition** (the latest record time read from it): how far
//!   one partition has been read says nothing of another, so a companion waits by the clock of
//!   the partition it came from, whatever the raw keying (per device, per flow, per sensor);
//! - a companion whose connection record has not come within the wait (`wait_ms` of its
//!   partition's event time) or that is pushed out by the cap on held flows stops being held:
//!   its offsets are released (so the pipeline can commit past it) and what it said is kept, up
//!   to `remember` flows, for a connection record that comes later (a push channel held open
//!   for a day still gets its SNI). It is never emitted as a session of its own; one whose
//!   connection never comes is counted ([`FlowJoinStats::orphans`]) when it is forgotten;
//! - a companion arriving after its flow was emitted (the last `remember` flows are
//!   remembered) is dropped and counted: its flow is already out.
//!
//! The pipeline commits the input offsets of held companions as not yet processed
//! ([`FlowJoin::held_from`]), so a restart reads them again and no companion within the wait
//! is lost in a crash. A companion past the wait lives only in memory: after a restart its
//! connection record comes without it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rustc_hash::{FxHashMap, FxHashSet};

use super::SessionDraft;
use crate::model::EpochMillis;

/// Where a held record came from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    topic: String,
    partition: i32,
    offset: i64,
}

#[derive(Debug, Clone)]
struct Held {
    draft: SessionDraft,
    time: EpochMillis,
    /// The source partition whose clock it waits by (its first record's).
    clock: (String, i32),
    origins: Vec<Origin>,
}

/// Bounds of the flow join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowJoinLimits {
    /// How long (event time of its partition) a companion is held for its connection record
    /// before its offsets are released.
    pub wait_ms: i64,
    /// Most flows held at once; beyond it the oldest is released.
    pub max_held: usize,
    /// How many emitted flows are remembered to drop late companions, and how many released
    /// companions are kept for a late connection record.
    pub remember: usize,
}

impl Default for FlowJoinLimits {
    fn default() -> Self {
        Self {
            wait_ms: 120_000,
            max_held: 100_000,
            remember: 200_000,
        }
    }
}

/// Counters of the flow join.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowJoinStats {
    /// Connection records that found companions (held or released).
    pub joined: u64,
    /// Companions released after the wait or by the cap and later taken by their connection.
    pub joined_late: u64,
    /// Companions forgotten without their connection record ever coming.
    pub orphans: u64,
    /// Companions dropped because their flow was emitted already.
    pub after_their_flow: u64,
}

/// The join state of one normalizer instance.
///
/// Indexes keep the per-record work logarithmic: held flows by partition and (time, id), for
/// expiry, and held offsets by partition, for [`FlowJoin::held_from`].
#[derive(Debug, Default)]
pub struct FlowJoin {
    limits: FlowJoinLimits,
    held: FxHashMap<String, Held>,
    by_age: BTreeMap<(String, i32), BTreeSet<(EpochMillis, String)>>,
    offsets: BTreeMap<(String, i32), BTreeSet<i64>>,
    /// Released companions waiting for a late connection record.
    released: FxHashMap<String, SessionDraft>,
    released_order: VecDeque<String>,
    emitted: FxHashSet<String>,
    emitted_order: VecDeque<String>,
    /// Latest event time read from each source partition.
    clocks: FxHashMap<(String, i32), EpochMillis>,
    stats: FlowJoinStats,
}

impl FlowJoin {
    /// An empty join within `limits`.
    pub fn new(limits: FlowJoinLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Flows held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The join's counters.
    pub fn stats(&self) -> FlowJoinStats {
        self.stats
    }

    /// Moves the clock of the source partition `key` (built once per record by the caller,
    /// as every index here is keyed by it).
    fn tick(&mut self, key: &(String, i32), time: EpochMillis) {
        match self.clocks.get_mut(key) {
            Some(clock) => *clock = (*clock).max(time),
            None => {
                self.clocks.insert(key.clone(), time);
            }
        }
    }

    /// Holds a companion of flow `id` (event time `time`) read at `topic/partition@offset`.
    pub fn companion(
        &mut self,
        id: String,
        draft: SessionDraft,
        time: EpochMillis,
        topic: &str,
        partition: i32,
        offset: i64,
    ) {
        let source = (topic.to_string(), partition);
        self.tick(&source, time);
        if self.emitted.contains(&id) {
            self.stats.after_their_flow += 1;
            self.expire(&source);
            return;
        }
        self.offsets
            .entry(source.clone())
            .or_default()
            .insert(offset);
        let origin = Origin {
            topic: topic.to_string(),
            partition,
            offset,
        };
        let held = match self.held.remove(&id) {
            Some(mut held) => {
                self.unindex(&held, &id);
                held.draft = std::mem::take(&mut held.draft).absorb(draft);
                held.time = held.time.min(time);
                held.origins.push(origin);
                held
            }
            None => Held {
                draft,
                time,
                clock: source.clone(),
                origins: vec![origin],
            },
        };
        self.by_age
            .entry(held.clock.clone())
            .or_default()
            .insert((held.time, id.clone()));
        self.held.insert(id, held);
        self.expire(&source);
    }

    /// True when flow `id` has companions, held or released, for its connection record to take.
    pub fn has_companions(&self, id: &str) -> bool {
        self.held.contains_key(id) || self.released.contains_key(id)
    }

    /// The connection record of flow `id`, read from `topic/partition`: returns it completed
    /// with what its companions said. Its flow is then emitted: later companions are dropped.
    pub fn connection(
        &mut self,
        id: String,
        draft: SessionDraft,
        time: EpochMillis,
        topic: &str,
        partition: i32,
    ) -> SessionDraft {
        let source = (topic.to_string(), partition);
        self.tick(&source, time);
        let mut completed = draft;
        if let Some(held) = self.release(&id) {
            completed = completed.absorb(held.draft);
            self.stats.joined += 1;
        }
        if let Some(released) = self.released.remove(&id) {
            completed = completed.absorb(released);
            self.stats.joined_late += 1;
        }
        self.remember(id);
        self.expire(&source);
        completed
    }

    /// The smallest offset of `topic/partition` still held: the pipeline must not commit past
    /// it.
    pub fn held_from(&self, topic: &str, partition: i32) -> Option<i64> {
        self.offsets
            .get(&(topic.to_string(), partition))
            .and_then(|offsets| offsets.first().copied())
    }

    /// Forgets the held flows read from `topic/partition` (the partition was revoked, or the
    /// pipeline rewinds it and will read them again).
    pub fn forget(&mut self, topic: &str, partition: i32) {
        let ids: Vec<String> = self
            .held
            .iter()
            .filter(|(_, held)| {
                held.origins
                    .iter()
                    .any(|o| o.partition == partition && o.topic == topic)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.release(&id);
        }
        self.clocks.remove(&(topic.to_string(), partition));
    }

    fn unindex(&mut self, held: &Held, id: &str) {
        if let Some(ages) = self.by_age.get_mut(&held.clock) {
            ages.remove(&(held.time, id.to_string()));
            if ages.is_empty() {
                self.by_age.remove(&held.clock);
            }
        }
    }

    /// Takes flow `id` out of the join and its indexes.
    fn release(&mut self, id: &str) -> Option<Held> {
        let held = self.held.remove(id)?;
        self.unindex(&held, id);
        for origin in &held.origins {
            let key = (origin.topic.clone(), origin.partition);
            if let Some(offsets) = self.offsets.get_mut(&key) {
                offsets.remove(&origin.offset);
                if offsets.is_empty() {
                    self.offsets.remove(&key);
                }
            }
        }
        Some(held)
    }

    fn remember(&mut self, id: String) {
        if self.limits.remember == 0 {
            return;
        }
        if self.emitted.insert(id.clone()) {
            self.emitted_order.push_back(id);
        }
        while self.emitted_order.len() > self.limits.remember {
            if let Some(old) = self.emitted_order.pop_front() {
                self.emitted.remove(&old);
            }
        }
    }

    /// Keeps what a released companion said for a late connection record; the oldest beyond
    /// `remember` are forgotten and counted.
    fn keep_released(&mut self, id: String, draft: SessionDraft) {
        if self.limits.remember == 0 {
            self.stats.orphans += 1;
            return;
        }
        match self.released.get_mut(&id) {
            Some(kept) => *kept = std::mem::take(kept).absorb(draft),
            None => {
                self.released.insert(id.clone(), draft);
                self.released_order.push_back(id);
            }
        }
        while self.released_order.len() > self.limits.remember {
            if let Some(old) = self.released_order.pop_front() {
                if self.released.remove(&old).is_some() {
                    self.stats.orphans += 1;
                }
            }
        }
    }

    /// Releases the companions of `topic/partition` past the wait by that partition's clock,
    /// then the oldest beyond the cap; oldest first, ties by id, so the order is the same in
    /// every replay.
    fn expire(&mut self, key: &(String, i32)) {
        let horizon = self
            .clocks
            .get(key)
            .copied()
            .unwrap_or(EpochMillis::MIN)
            .saturating_sub(self.limits.wait_ms);
        while let Some((time, id)) = self.by_age.get(key).and_then(|ages| ages.first().cloned()) {
            if time >= horizon {
                break;
            }
            if let Some(held) = self.release(&id) {
                self.keep_released(id, held.draft);
            }
        }
        while self.held.len() > self.limits.max_held {
            let Some((_, id)) = self
                .by_age
                .values()
                .filter_map(|ages| ages.first())
                .min()
                .cloned()
            else {
                break;
            };
            if let Some(held) = self.release(&id) {
                self.keep_released(id, held.draft);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(sni: Option<&str>, bytes: Option<i64>) -> SessionDraft {
        SessionDraft {
            sni: sni.map(str::to_string),
            bytes_out: bytes,
            dst_ip: Some("203.0.113.9".to_string()),
            dst_port: Some(8443),
            ..SessionDraft::default()
        }
    }

    #[test]
    fn a_connection_takes_its_companions_and_releases_their_offsets() {
        let mut join = FlowJoin::new(FlowJoinLimits::default());
        join.companion(
            "C1".into(),
            draft(Some("c2.example"), None),
            1_000,
            "t",
            0,
            7,
        );
        assert_eq!(join.held_from("t", 0), Some(7));
        assert_eq!(join.held_from("t", 1), None);
        let out = join.connection("C1".into(), draft(None, Some(900)), 2_000, "t", 0);
        assert_eq!(out.sni.as_deref(), Some("c2.example"));
        assert_eq!(out.bytes_out, Some(900));
        assert_eq!(join.held_from("t", 0), None);
        // A late companion of an emitted flow is dropped and counted.
        join.companion("C1".into(), draft(Some("late"), None), 2_100, "t", 0, 9);
        assert_eq!(join.held(), 0);
        assert_eq!(join.stats().after_their_flow, 1);
    }

    #[test]
    fn a_companion_past_the_wait_is_released_but_its_late_connection_still_takes_it() {
        let limits = FlowJoinLimits {
            wait_ms: 1_000,
            max_held: 2,
            remember: 10,
        };
        let mut join = FlowJoin::new(limits);
        join.companion("A".into(), draft(Some("a"), None), 10_000, "t", 0, 1);
        join.companion("B".into(), draft(Some("b"), None), 10_500, "t", 0, 2);
        // C pushes the oldest (A) out of the held set by the cap: its offset is released.
        join.companion("C".into(), draft(Some("c"), None), 10_600, "t", 0, 3);
        assert_eq!(join.held(), 2);
        assert_eq!(join.held_from("t", 0), Some(2));
        // Event time of partition 0 moves past B's and C's wait: released, nothing emitted.
        let d = join.connection("D".into(), draft(None, Some(1)), 11_601, "t", 0);
        assert_eq!(d.sni, None);
        assert_eq!(join.held(), 0);
        assert_eq!(join.held_from("t", 0), None);
        // A's connection record comes a day later (a push channel): it gets A's SNI, once.
        let a = join.connection("A".into(), draft(None, Some(5)), 86_400_000, "t", 0);
        assert_eq!(a.sni.as_deref(), Some("a"));
        assert_eq!(join.stats().joined_late, 1);
    }

    #[test]
    fn each_partition_waits_by_its_own_clock() {
        let limits = FlowJoinLimits {
            wait_ms: 1_000,
            ..FlowJoinLimits::default()
        };
        let mut join = FlowJoin::new(limits);
        // Partition 1 is read while partition 0 is hours ahead: its companion is not released
        // by partition 0's clock.
        join.connection("X".into(), draft(None, Some(1)), 7_200_000, "t", 0);
        join.companion("Y".into(), draft(Some("y"), None), 1_000, "t", 1, 4);
        join.connection("Z".into(), draft(None, Some(1)), 7_300_000, "t", 0);
        assert_eq!(join.held(), 1);
        assert_eq!(join.held_from("t", 1), Some(4));
        let y = join.connection("Y".into(), draft(None, Some(700)), 1_500, "t", 1);
        assert_eq!((y.sni.as_deref(), y.bytes_out), (Some("y"), Some(700)));
        assert_eq!(join.held(), 0);
    }

    #[test]
    fn released_companions_beyond_the_memory_are_counted_as_orphans() {
        let limits = FlowJoinLimits {
            wait_ms: 10,
            max_held: 100,
            remember: 2,
        };
        let mut join = FlowJoin::new(limits);
        for (i, id) in ["A", "B", "C"].into_iter().enumerate() {
            join.companion(
                id.into(),
                draft(Some(id), None),
                i as i64 * 100,
                "t",
                0,
                i as i64,
            );
        }
        join.connection("Z".into(), draft(None, Some(1)), 1_000, "t", 0);
        assert_eq!(join.stats().orphans, 1, "A forgotten, B and C kept");
        let c = join.connection("C".into(), draft(None, Some(1)), 2_000, "t", 0);
        assert_eq!(c.sni.as_deref(), Some("C"));
    }

    #[test]
    fn forgetting_a_partition_drops_only_its_flows() {
        let mut join = FlowJoin::new(FlowJoinLimits::default());
        join.companion("A".into(), draft(Some("a"), None), 1, "t", 0, 1);
        join.companion("B".into(), draft(Some("b"), None), 1, "t", 1, 5);
        join.forget("t", 0);
        assert_eq!(join.held(), 1);
        assert_eq!(join.held_from("t", 1), Some(5));
    }
}
