//! The joiner's watermark: event time as the records, the lagging inputs, the raw partitions'
//! progress markers and the idle rule move it, and what last moved it.

use super::*;

/// The rule that moved the watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveCause {
    /// A record raised the newest event time.
    Record,
    /// An input stopped lagging ([`Joiner::set_lagging`]).
    Lagging,
    /// A progress marker ([`Joiner::observe_progress`]).
    Progress,
    /// A raw topic was heard from ([`Joiner::set_awaiting`]).
    Awaiting,
    /// The idle rule or an explicit advance ([`Joiner::advance_watermark`]).
    Idle,
}

/// What the watermark was moved to, by which rule, and what bounded it then: the explanation of
/// a session that arrives behind it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WatermarkMove {
    /// The rule.
    pub cause: MoveCause,
    /// The watermark it set.
    pub to: EpochMillis,
    /// The newest event time of any record then.
    pub max_event_time: Option<EpochMillis>,
    /// The newest event time per input then.
    pub input_max: PerInput<Option<EpochMillis>>,
    /// Which inputs were lagging then.
    pub lagging: PerInput<bool>,
    /// What the raw partitions' progress allowed then (`None`: past the waiting cap).
    pub floor: Option<Floor>,
    /// Sessions waiting then.
    pub pending: usize,
}

impl Joiner {
    /// Moves the watermark to at least `to` without a record: the idle-partition rule of the
    /// service calls this with wall-clock-derived time when a partition is quiet.
    ///
    /// [`Self::max_event_time`] stays the newest record's time: the idle rule derives `to` from
    /// it plus the wall time since that record, and raising it here fed each advance back into
    /// the next, so event time ran ahead of the clock (after 90 s of quiet the watermark stood
    /// an hour ahead and the next records were joined as late).
    ///
    /// The raw partitions' progress bounds it: while a raw partition that is not idle is
    /// behind, or a raw topic with records has not been heard from, wall time says nothing
    /// about what is still to come.
    pub fn advance_watermark(&mut self, to: EpochMillis) -> Vec<EnrichedSession> {
        let floor = self.source_limit();
        let to = match floor {
            Some(Floor::Hold) => return self.emit_ready(),
            Some(Floor::At(at)) => to.min(at.saturating_sub(self.config.allowed_lateness_ms)),
            _ => to,
        };
        if self.watermark.is_none_or(|w| to > w) {
            if let Some(journal) = &mut self.journal {
                journal.meta = true;
            }
            self.watermark = Some(to);
            self.record_move(MoveCause::Idle, to, floor);
            self.prune();
        }
        self.emit_ready()
    }

    /// What last moved the watermark, since this joiner was built or restored.
    pub fn last_move(&self) -> Option<WatermarkMove> {
        self.moved
    }

    fn record_move(&mut self, cause: MoveCause, to: EpochMillis, floor: Option<Floor>) {
        self.moved = Some(WatermarkMove {
            cause,
            to,
            max_event_time: self.max_event_time,
            input_max: self.input_max,
            lagging: self.lagging,
            floor,
            pending: self.pending.len(),
        });
    }

    pub(super) fn advance(&mut self, at: EpochMillis) {
        let max = self.max_event_time.map_or(at, |m| m.max(at));
        self.max_event_time = Some(max);
        self.raise_watermark(MoveCause::Record);
    }

    /// Raises the watermark to the newest event time minus the allowed lateness, but no
    /// further than the newest record of any lagging input allows: while an input has records
    /// not read yet, what it will bring is not behind the watermark yet. A lagging input with
    /// no record since this joiner was built or restored holds the watermark where it is.
    /// Past [`JoinConfig::max_waiting_sessions`] waiting sessions, lagging inputs are ignored.
    fn raise_watermark(&mut self, cause: MoveCause) {
        let Some(max) = self.max_event_time else {
            return;
        };
        let mut limit = max;
        let waiting = self.pending.len() <= self.config.max_waiting_sessions;
        for ((_, lagging), (_, newest)) in self.lagging.iter().zip(self.input_max.iter()) {
            if lagging && waiting {
                match newest {
                    Some(newest) => limit = limit.min(newest),
                    None => return,
                }
            }
        }
        let floor = self.source_limit();
        match floor {
            Some(Floor::Hold) => return,
            Some(Floor::At(at)) => limit = limit.min(at),
            _ => {}
        }
        let candidate = limit.saturating_sub(self.config.allowed_lateness_ms);
        if self.watermark.is_none_or(|w| candidate > w) {
            // Journaled here, not only by a record: a set_lagging without one moves it too.
            if let Some(journal) = &mut self.journal {
                journal.meta = true;
            }
            self.watermark = Some(candidate);
            self.record_move(cause, candidate, floor);
            self.prune();
        }
    }

    /// Which inputs have records not read yet. While one does, the watermark follows that
    /// input's newest record rather than the newest of all, so a session is emitted only once
    /// every input with more to read has passed its end (plus the allowed lateness): an input
    /// read behind the others (a slower fetch, a normalizer catching up) does not make its
    /// records late, and a replay's output does not depend on how the inputs interleave. With no input lagging the rule is the plain one. Returns
    /// the sessions this completes.
    pub fn set_lagging(&mut self, lagging: PerInput<bool>) -> Vec<EnrichedSession> {
        self.lagging = lagging;
        self.raise_watermark(MoveCause::Lagging);
        self.emit_ready()
    }

    /// Takes a progress marker read on `input`: the watermark never passes the slowest raw
    /// partition that is not idle (see [`crate::progress`]). Returns the sessions this
    /// completes.
    pub fn observe_progress(
        &mut self,
        input: JoinerInput,
        marker: &Marker,
    ) -> Vec<EnrichedSession> {
        let input = u8::try_from(input.index()).unwrap_or(u8::MAX);
        if self.sources.observe(input, marker) {
            if let Some(journal) = &mut self.journal {
                journal.sources = true;
            }
            self.raise_watermark(MoveCause::Progress);
        }
        self.emit_ready()
    }

    /// Whether a raw topic with records has sent no marker yet (its normalizer has not
    /// started, or is catching up): the watermark then holds, up to
    /// [`JoinConfig::max_waiting_sessions`] waiting sessions. Returns the sessions releasing
    /// the hold completes.
    pub fn set_awaiting(&mut self, awaiting: bool) -> Vec<EnrichedSession> {
        self.awaiting = awaiting;
        self.raise_watermark(MoveCause::Awaiting);
        self.emit_ready()
    }

    /// The idle rule: the task has had no record for `idle_ms` of wall time (`now` is the wall
    /// clock), so event time is taken to have moved on as much, and the sessions due by then
    /// are emitted. When every raw partition upstream is read to its end and quiet, whatever
    /// comes later is late anyway, so event time may stand at the wall clock: a session still
    /// open at the end of a sensor's log is emitted now, not after as much wall time as its
    /// tail.
    pub fn idle(&mut self, idle_ms: i64, now: EpochMillis) -> Vec<EnrichedSession> {
        let (Some(max), Some(due)) = (self.max_event_time(), self.next_due()) else {
            return vec![];
        };
        let lateness = self.allowed_lateness_ms();
        let mut to = max.saturating_add(idle_ms).saturating_sub(lateness);
        if self.upstream_idle() {
            to = to.max(now.saturating_sub(lateness));
        }
        if due > to {
            return vec![];
        }
        self.advance_watermark(to)
    }

    /// True when progress markers say every raw partition upstream is read to its end and
    /// quiet (and no raw topic with records is unheard of): nothing more is on its way.
    pub fn upstream_idle(&self) -> bool {
        !self.awaiting && self.sources.floor() == Floor::Open
    }

    /// The raw topics this joiner has had progress markers from.
    pub fn heard_from(&self) -> impl Iterator<Item = &str> {
        self.sources.heard_from()
    }

    /// What the raw partitions' progress allows, unless the waiting sessions are past their
    /// cap (then only the plain rule holds, so memory stays bounded).
    fn source_limit(&self) -> Option<Floor> {
        if self.pending.len() > self.config.max_waiting_sessions {
            return None;
        }
        if self.awaiting {
            return Some(Floor::Hold);
        }
        Some(self.sources.floor())
    }

    /// The highest event time seen, once any record has been seen.
    pub fn max_event_time(&self) -> Option<EpochMillis> {
        self.max_event_time
    }

    /// The end time of the next pending session to be emitted.
    pub fn next_due(&self) -> Option<EpochMillis> {
        self.pending.keys().next().map(|(end, _)| *end)
    }

    /// The allowed lateness in force.
    pub fn allowed_lateness_ms(&self) -> i64 {
        self.config.allowed_lateness_ms
    }
}
