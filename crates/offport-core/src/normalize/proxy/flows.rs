//! Joining a sensor's records of one flow (Zeek `uid`, Suricata `flow_id`) into one session.
//!
//! Sensors write the application-layer records of a connection (Zeek ssl/http/dns.log,
//! Suricata tls/http/dns events) while it runs and the connection record (Zeek conn.log,
//! Suricata `flow`) when it ends. So the connection record completes a session:
//!
//! - a **companion** (application-layer record) is checked at once (a bad one is rejected on
//!   its own) and held, merged with other companions of its flow;
//! - the **connection record** takes the held companions of its flow, fills what it lacks from
//!   them (SNI, JA3/JA4, Host, DNS name, the protocol when it has no `service`) and is emitted;
//! - a companion whose connection record has not come within the wait (`wait_ms` of event time
//!   past it, measured by the latest event time seen) or that is pushed out by the cap on held
//!   flows is emitted as a session of its own, from its own addresses and time, so nothing is
//!   lost;
//! - a companion arriving after its flow was emitted (the last `remember` flows are
//!   remembered) is dropped: its flow is already out, and a second session would double it;
//! - a connection record whose companions already left on their own (a connection longer than
//!   the wait) is still emitted, with the same session id: the later record is the complete
//!   one, and consumers keep it in place of the earlier.
//!
//! The pipeline commits the input offsets of held companions as not yet processed
//! ([`FlowJoin::held_from`]), so a restart reads them again and no companion is lost in a crash.

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
    origins: Vec<Origin>,
}

/// Bounds of the flow join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowJoinLimits {
    /// How long (event time) a companion waits for its connection record.
    pub wait_ms: i64,
    /// Most flows held at once; beyond it the oldest is emitted on its own.
    pub max_held: usize,
    /// How many emitted flows are remembered to drop late companions.
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

/// The join state of one normalizer instance.
///
/// Two indexes keep the per-record work logarithmic: held flows by (time, id), for expiry, and
/// held offsets by partition, for [`FlowJoin::held_from`].
#[derive(Debug, Default)]
pub struct FlowJoin {
    limits: FlowJoinLimits,
    held: FxHashMap<String, Held>,
    by_age: BTreeSet<(EpochMillis, String)>,
    offsets: BTreeMap<(String, i32), BTreeSet<i64>>,
    emitted: FxHashSet<String>,
    emitted_order: VecDeque<String>,
    latest: EpochMillis,
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

    /// Holds a companion of flow `id` (event time `time`) read at `topic/partition@offset`.
    /// Returns the drafts that leave the join because of it (expired or pushed out).
    pub fn companion(
        &mut self,
        id: String,
        draft: SessionDraft,
        time: EpochMillis,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Vec<SessionDraft> {
        self.latest = self.latest.max(time);
        if self.emitted.contains(&id) {
            return self.expire();
        }
        self.offsets
            .entry((topic.to_string(), partition))
            .or_default()
            .insert(offset);
        let origin = Origin {
            topic: topic.to_string(),
            partition,
            offset,
        };
        let held = match self.held.remove(&id) {
            Some(mut held) => {
                self.by_age.remove(&(held.time, id.clone()));
                held.draft = std::mem::take(&mut held.draft).absorb(draft);
                held.time = held.time.min(time);
                held.origins.push(origin);
                held
            }
            None => Held {
                draft,
                time,
                origins: vec![origin],
            },
        };
        self.by_age.insert((held.time, id.clone()));
        self.held.insert(id, held);
        self.expire()
    }

    /// The connection record of flow `id`: returns it completed with its held companions,
    /// followed by whatever expired.
    pub fn connection(
        &mut self,
        id: String,
        draft: SessionDraft,
        time: EpochMillis,
    ) -> Vec<SessionDraft> {
        self.latest = self.latest.max(time);
        let completed = match self.release(&id) {
            Some(held) => draft.absorb(held.draft),
            None => draft,
        };
        self.remember(id);
        let mut out = vec![completed];
        out.extend(self.expire());
        out
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
    }

    /// Takes flow `id` out of the join and its indexes.
    fn release(&mut self, id: &str) -> Option<Held> {
        let held = self.held.remove(id)?;
        self.by_age.remove(&(held.time, id.to_string()));
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

    /// Emits companions past the wait, then the oldest beyond the cap; oldest first, ties by id,
    /// so the order is the same in every replay.
    fn expire(&mut self) -> Vec<SessionDraft> {
        let horizon = self.latest.saturating_sub(self.limits.wait_ms);
        let mut out = Vec::new();
        while let Some((time, id)) = self.by_age.first().cloned() {
            if time >= horizon && self.held.len() <= self.limits.max_held {
                break;
            }
            if let Some(held) = self.release(&id) {
                out.push(held.draft);
            }
            self.remember(id);
        }
        out
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
        let out = join.companion(
            "C1".into(),
            draft(Some("c2.example"), None),
            1_000,
            "t",
            0,
            7,
        );
        assert!(out.is_empty());
        assert_eq!(join.held_from("t", 0), Some(7));
        assert_eq!(join.held_from("t", 1), None);
        let out = join.connection("C1".into(), draft(None, Some(900)), 2_000);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].sni.as_deref(), Some("c2.example"));
        assert_eq!(out[0].bytes_out, Some(900));
        assert_eq!(join.held_from("t", 0), None);
        // A late companion of an emitted flow is dropped, not emitted twice.
        let out = join.companion("C1".into(), draft(Some("late"), None), 2_100, "t", 0, 9);
        assert!(out.is_empty());
        assert_eq!(join.held(), 0);
    }

    #[test]
    fn companions_without_a_connection_leave_after_the_wait_or_the_cap() {
        let limits = FlowJoinLimits {
            wait_ms: 1_000,
            max_held: 2,
            remember: 10,
        };
        let mut join = FlowJoin::new(limits);
        assert!(join
            .companion("A".into(), draft(Some("a"), None), 10_000, "t", 0, 1)
            .is_empty());
        assert!(join
            .companion("B".into(), draft(Some("b"), None), 10_500, "t", 0, 2)
            .is_empty());
        // C pushes the oldest (A) out by the cap.
        let out = join.companion("C".into(), draft(Some("c"), None), 10_600, "t", 0, 3);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].sni.as_deref(), Some("a"));
        assert_eq!(join.held_from("t", 0), Some(2));
        // Event time moves past B's and C's wait.
        let out = join.connection("D".into(), draft(None, Some(1)), 11_601);
        let snis: Vec<_> = out.iter().map(|d| d.sni.clone()).collect();
        assert_eq!(snis, [None, Some("b".to_string()), Some("c".to_string())]);
        assert_eq!(join.held(), 0);
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
