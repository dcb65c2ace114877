//! The as-of join: each [`NetworkSession`] enriched with the device and app state at its start
//! (and during its span) from the EDR, and the MDM context. This is the joiner's logic; the
//! joiner service only feeds it records and writes what it returns.
//!
//! # Event time, watermark, lateness
//!
//! Records arrive in any order. The watermark is the highest event time seen minus
//! [`JoinConfig::allowed_lateness_ms`]; it never goes back. A session is complete, and emitted,
//! once the watermark reaches its end (start plus duration): by then every EDR/MDM event up to
//! its end has arrived, provided no record is later than the allowed lateness. Within that
//! bound the output does not depend on arrival order (a property test holds it to that), and each
//! emitted record carries its end time as `watermark`, not the arrival-dependent one.
//!
//! # Late records (the documented rule)
//!
//! - An EDR or MDM event older than the watermark is still added to the state: it can change
//!   sessions not yet emitted and later ones. Sessions already emitted are not revised.
//!   [`JoinStats::late_events`] counts them.
//! - A session whose end is already behind the watermark when it arrives is enriched at once with
//!   the state that is left and emitted. [`JoinStats::late_sessions`] counts them.
//!
//! # Bounded state
//!
//! State older than the TimeWindow behind the watermark is dropped, except the last lock, app
//! lifecycle and MDM state before that point, which as-of answers still need. Every timeline is
//! also capped at [`JoinConfig::max_entries_per_timeline`] entries (oldest dropped first), so a
//! flood from one device cannot grow memory without bound. [`Joiner::state_bytes`] measures it.
//!
//! Timelines hold one 8-byte word per entry (time and a small payload packed together), app ids
//! are interned once per joiner, and a device's apps sit in a small vector: about 440 bytes per
//! active (device, app) key in the benchmark's dense mix. The packing clamps event times to
//! 1970..2527 and API call counts to 2^20 - 1 per record; the normalizers reject such times as
//! impossible before they get here.

use std::collections::BTreeMap;
#[cfg(test)]
use std::collections::HashMap;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use crate::durable::{self, Durable, RestoreError, StateChange};
use crate::progress::{Floor, Marker, Sources};

use crate::model::{
    AppRunState, BackgroundExecution, DeviceContext, DeviceEvent, DeviceEventKind, EnrichedSession,
    EpochMillis, LockState, ManagedApp, MdmContext, NetworkSession,
};

mod changelog;
mod device;
mod input;
mod names;
mod timeline;
mod watermark;

pub use input::{JoinerInput, PerInput};
pub use watermark::{MoveCause, WatermarkMove};

use changelog::*;
use device::*;
use names::*;
use timeline::*;

/// Sessions a joiner task may hold for a lagging input under a state cap of `max_state_bytes`
/// (0: no cap) for a topology of `partitions` partitions: half the cap spread over the
/// partitions (an instance may run them all), at a budget of 1 KiB each; at least 1,000; no
/// limit without a cap.
pub fn waiting_sessions_for(max_state_bytes: u64, partitions: i32) -> usize {
    if max_state_bytes == 0 {
        return usize::MAX;
    }
    let tasks = u64::try_from(partitions.max(1)).unwrap_or(1);
    usize::try_from(max_state_bytes / 2 / 1024 / tasks)
        .unwrap_or(usize::MAX)
        .max(1_000)
}

/// Tuning of the join.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinConfig {
    /// How late a record may arrive (behind the highest event time seen) and still be joined as
    /// if on time.
    pub allowed_lateness_ms: i64,
    /// TimeWindow: how far back state is kept and looked at.
    pub time_window_ms: i64,
    /// Cap on the entries of any one timeline.
    pub max_entries_per_timeline: usize,
    /// Sessions that may wait for lagging inputs ([`Joiner::set_lagging`]): with more waiting,
    /// the watermark follows the plain rule (an input far behind is not waited for), so memory
    /// stays bounded whatever the skew between the inputs.
    pub max_waiting_sessions: usize,
}

impl Default for JoinConfig {
    fn default() -> Self {
        Self {
            allowed_lateness_ms: 30_000,
            time_window_ms: 6 * 3_600_000,
            max_entries_per_timeline: 256,
            max_waiting_sessions: 100_000,
        }
    }
}

/// A record for the join.
#[derive(Debug, Clone, PartialEq)]
// Records are moved straight into the join's state; boxing the large variant would only add an
// allocation per session.
#[allow(clippy::large_enum_variant)]
pub enum JoinInput {
    /// A normalized session.
    Session(NetworkSession),
    /// A normalized EDR event.
    Event(DeviceEvent),
    /// A normalized MDM record.
    Context(DeviceContext),
}

impl JoinInput {
    /// Which input the record comes from.
    pub fn input(&self) -> JoinerInput {
        match self {
            JoinInput::Session(_) => JoinerInput::Sessions,
            JoinInput::Event(_) => JoinerInput::DeviceEvents,
            JoinInput::Context(_) => JoinerInput::DeviceContexts,
        }
    }

    /// Event time of the record.
    pub fn event_time(&self) -> EpochMillis {
        match self {
            JoinInput::Session(s) => s.start_time,
            JoinInput::Event(e) => e.event_time,
            JoinInput::Context(c) => c.event_time,
        }
    }

    /// Device the record belongs to.
    pub fn device_id(&self) -> &str {
        match self {
            JoinInput::Session(s) => &s.device_id,
            JoinInput::Event(e) => &e.device_id,
            JoinInput::Context(c) => &c.device_id,
        }
    }
}

/// Counters of the join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct JoinStats {
    /// Sessions emitted.
    pub emitted: u64,
    /// EDR/MDM events that arrived behind the watermark.
    pub late_events: u64,
    /// Sessions that arrived with their end behind the watermark.
    pub late_sessions: u64,
    /// Timeline entries dropped by the per-timeline cap.
    pub capped: u64,
    /// Devices evicted whole by the memory cap ([`Joiner::evict_to`]).
    pub evicted: u64,
}

/// The joiner's state and logic.
#[derive(Debug, Default)]
pub struct Joiner {
    config: JoinConfig,
    devices: FxHashMap<String, DeviceState>,
    /// App ids and MDM labels seen, interned: one copy of each name however many devices
    /// name it.
    names: Interner,
    /// Sessions waiting for the watermark, by (end time, session id). The id is moved into the
    /// key while the session waits and back when it is emitted.
    pending: BTreeMap<(EpochMillis, String), NetworkSession>,
    max_event_time: Option<EpochMillis>,
    /// Newest event time of each input ([`JoinInput::input`] order) since this joiner was built
    /// or restored; kept in memory only (a restored joiner waits for each lagging input's next
    /// record).
    input_max: PerInput<Option<EpochMillis>>,
    /// Inputs known to have records not read yet ([`Self::set_lagging`]).
    lagging: PerInput<bool>,
    /// The raw partitions' progress, from the markers on the inputs ([`Self::observe_progress`]).
    sources: Sources,
    /// A raw topic with records has not been heard from ([`Self::set_awaiting`]).
    awaiting: bool,
    watermark: Option<EpochMillis>,
    /// Watermark at the last prune; pruning runs once per [`PRUNE_STEP_MS`] of event time.
    pruned_at: Option<EpochMillis>,
    /// The highest cutoff pruning has applied: a restore prunes to it again.
    cutoff: Option<EpochMillis>,
    stats: JoinStats,
    /// What last moved the watermark (in memory only): a late session is explained by it.
    moved: Option<WatermarkMove>,
    /// What changed since the last drain, when journaling (see [`Durable`]).
    journal: Option<Journal>,
}

/// Event time between two prunes: pruning walks every device, so it is amortised.
const PRUNE_STEP_MS: i64 = 60_000;

fn session_end(session: &NetworkSession) -> EpochMillis {
    session
        .start_time
        .saturating_add(session.duration_ms.unwrap_or(0).max(0))
}

impl Joiner {
    /// An empty joiner.
    pub fn new(config: JoinConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Changes the TimeWindow (when the baseline in force changes).
    pub fn set_time_window(&mut self, time_window_ms: i64) {
        self.config.time_window_ms = time_window_ms.max(1);
    }

    /// The current watermark, once any record has been seen.
    pub fn watermark(&self) -> Option<EpochMillis> {
        self.watermark
    }

    /// Counters so far.
    pub fn stats(&self) -> JoinStats {
        self.stats
    }

    /// Sessions waiting for the watermark.
    pub fn pending_sessions(&self) -> usize {
        self.pending.len()
    }

    /// Devices with state.
    pub fn devices(&self) -> usize {
        self.devices.len()
    }

    /// Active (device, app) keys.
    pub fn app_keys(&self) -> usize {
        self.devices.values().map(|d| d.apps.len().max(1)).sum()
    }

    /// Approximate heap bytes of the join state (timelines, keys, interned app ids, pending
    /// sessions).
    pub fn state_bytes(&self) -> usize {
        let devices: usize = self.devices.iter().map(|(id, d)| device_bytes(id, d)).sum();
        let interned = self.names.heap_bytes();
        devices + interned + self.pending.len() * (std::mem::size_of::<NetworkSession>() + 160)
    }

    /// Adds a record; returns the sessions it completed, in (end time, session id) order.
    pub fn push(&mut self, input: JoinInput) -> Vec<EnrichedSession> {
        let at = input.event_time();
        let newest = &mut self.input_max[input.input()];
        *newest = Some(newest.map_or(at, |m| m.max(at)));
        let late = self.watermark.is_some_and(|w| at < w);
        if let Some(journal) = &mut self.journal {
            journal.device(input.device_id());
            journal.meta = true;
        }
        match input {
            JoinInput::Session(session) => {
                let end = session_end(&session);
                if !self.devices.contains_key(&session.device_id) {
                    self.devices
                        .insert(session.device_id.clone(), DeviceState::default());
                }
                if self.watermark.is_some_and(|w| end <= w) {
                    self.stats.late_sessions += 1;
                    let enriched = self.enrich(session, end);
                    self.stats.emitted += 1;
                    self.advance(at);
                    let mut out = vec![enriched];
                    out.extend(self.emit_ready());
                    return out;
                }
                let mut session = session;
                let id = std::mem::take(&mut session.session_id);
                let key = (end, id);
                if let Some(journal) = &mut self.journal {
                    journal.session_added(&key);
                }
                self.pending.insert(key, session);
            }
            JoinInput::Event(event) => {
                if late {
                    self.stats.late_events += 1;
                }
                self.apply_event(event);
            }
            JoinInput::Context(context) => {
                if late {
                    self.stats.late_events += 1;
                }
                self.apply_context(context);
            }
        }
        self.advance(at);
        self.emit_ready()
    }

    /// Emits every pending session (end of a bounded input: a replay's range is done).
    pub fn flush(&mut self) -> Vec<EnrichedSession> {
        let pending = std::mem::take(&mut self.pending);
        pending
            .into_iter()
            .map(|((end, id), mut session)| {
                if let Some(journal) = &mut self.journal {
                    journal.session_emitted((end, id.clone()));
                }
                self.stats.emitted += 1;
                session.session_id = id;
                self.enrich(session, end)
            })
            .collect()
    }

    fn emit_ready(&mut self) -> Vec<EnrichedSession> {
        let Some(watermark) = self.watermark else {
            return vec![];
        };
        let mut out = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 > watermark {
                break;
            }
            let ((end, id), mut session) = entry.remove_entry();
            if let Some(journal) = &mut self.journal {
                journal.session_emitted((end, id.clone()));
            }
            self.stats.emitted += 1;
            session.session_id = id;
            out.push(self.enrich(session, end));
        }
        out
    }

    fn prune(&mut self) {
        let Some(watermark) = self.watermark else {
            return;
        };
        if self
            .pruned_at
            .is_some_and(|p| watermark < p + PRUNE_STEP_MS)
        {
            return;
        }
        self.pruned_at = Some(watermark);
        // Sessions still pending may start before the cutoff; keep what they need.
        let oldest_pending = self.pending.values().map(|s| s.start_time).min();
        let cutoff = watermark.saturating_sub(self.config.time_window_ms).min(
            oldest_pending.map_or(EpochMillis::MAX, |s| {
                s.saturating_sub(self.config.time_window_ms)
            }),
        );
        self.cutoff = Some(self.cutoff.map_or(cutoff, |c| c.max(cutoff)));
        self.prune_devices(cutoff);
    }

    /// Holds the state to at most `max_bytes` (see [`Self::state_bytes`]): evicts whole
    /// devices, the least recently active first (by their newest timeline entry; ties by id),
    /// until it fits. Devices with a session waiting for the watermark are kept, since the
    /// session still needs them; so a cap smaller than the pending sessions' own state is
    /// exceeded rather than loses output. Returns the devices evicted; evictions are journaled
    /// as deletes like any other change. A session of an evicted device that comes later is
    /// joined with what is left (no lock state, no app history), as a late session is.
    pub fn evict_to(&mut self, max_bytes: usize) -> usize {
        let total = self.state_bytes();
        if total <= max_bytes {
            return 0;
        }
        let waiting: FxHashSet<&str> = self
            .pending
            .values()
            .map(|s| s.device_id.as_str())
            .collect();
        let mut candidates: Vec<(u64, &String, usize)> = self
            .devices
            .iter()
            .filter(|(id, _)| !waiting.contains(id.as_str()))
            .map(|(id, d)| (device_last_key(d), id, device_bytes(id, d)))
            .collect();
        candidates.sort_unstable();
        let mut excess = total - max_bytes;
        let mut evict = Vec::new();
        for (_, id, bytes) in candidates {
            if excess == 0 {
                break;
            }
            excess = excess.saturating_sub(bytes);
            evict.push(id.clone());
        }
        for id in &evict {
            self.devices.remove(id);
            if let Some(journal) = &mut self.journal {
                journal.device(id);
            }
        }
        self.stats.evicted += evict.len() as u64;
        evict.len()
    }

    /// Drops state older than `cutoff` (keeping the last state before it that as-of answers
    /// need) and devices left empty. Pruning twice is pruning once at the higher cutoff, so a
    /// restore that prunes to the highest cutoff applied rebuilds the pruned state exactly.
    fn prune_devices(&mut self, cutoff: EpochMillis) {
        let journal = &mut self.journal;
        self.devices.retain(|id, device| {
            device.lock.prune(cutoff, true);
            device.interactions.prune(cutoff, false);
            prune_mdm(&mut device.mdm, cutoff);
            device.apps.retain_mut(|(_, app)| {
                app.lifecycle.prune(cutoff, true);
                app.background.prune(cutoff, false);
                app.api_calls.prune(cutoff, false);
                app.lifecycle.shrink();
                app.background.shrink();
                app.api_calls.shrink();
                app.lifecycle.len() + app.background.len() + app.api_calls.len() > 0
            });
            device.lock.shrink();
            device.interactions.shrink();
            let keep = device.lock.len()
                + device.interactions.len()
                + device.mdm.len()
                + device.apps.len()
                > 0;
            if !keep {
                if let Some(journal) = journal {
                    journal.device(id);
                }
            }
            keep
        });
    }

    fn apply_event(&mut self, event: DeviceEvent) {
        let cap = self.config.max_entries_per_timeline;
        let app_key = event.app_id.as_deref().map(|id| self.intern(id));
        let device = match self.devices.get_mut(&event.device_id) {
            Some(device) => device,
            None => self.devices.entry(event.device_id.clone()).or_default(),
        };
        let at = event.event_time;
        let mut capped = false;
        let kind = event.kind;
        match kind {
            DeviceEventKind::DeviceLocked | DeviceEventKind::DeviceUnlocked => {
                let state = if kind == DeviceEventKind::DeviceLocked {
                    LockState::Locked
                } else {
                    // Unlocking is a user interaction.
                    capped |= device.interactions.insert(at, 0, (), cap);
                    LockState::Unlocked
                };
                capped |= device.lock.insert(at, lock_rank(state), (), cap);
            }
            DeviceEventKind::UserInteraction => {
                capped |= device.interactions.insert(at, 0, (), cap)
            }
            DeviceEventKind::AppForeground
            | DeviceEventKind::AppBackground
            | DeviceEventKind::AppStopped => {
                let state = match kind {
                    DeviceEventKind::AppForeground => AppRunState::Foreground,
                    DeviceEventKind::AppBackground => AppRunState::Background,
                    _ => AppRunState::NotRunning,
                };
                if let Some(app) = app_key.and_then(|k| device.app_mut(k)) {
                    capped |= app.lifecycle.insert(at, lifecycle_rank(state), (), cap);
                }
            }
            DeviceEventKind::BackgroundJob
            | DeviceEventKind::WorkManager
            | DeviceEventKind::ForegroundServiceStart
            | DeviceEventKind::BackgroundRefresh
            | DeviceEventKind::PersistentService => {
                if let (Some(app), Some(rank)) = (
                    app_key.and_then(|k| device.app_mut(k)),
                    background_rank(kind),
                ) {
                    capped |= app.background.insert(at, rank, (), cap);
                }
            }
            DeviceEventKind::NetworkApiUsage => {
                let calls = event
                    .network_api
                    .as_ref()
                    .map_or(0, |u| u64::try_from(u.call_count).unwrap_or(0));
                if let Some(app) = app_key.and_then(|k| device.app_mut(k)) {
                    capped |= app.api_calls.insert(at, calls, (), cap);
                }
            }
            // Screen state, service stops and unknown kinds carry nothing the analytics use.
            DeviceEventKind::ScreenOn
            | DeviceEventKind::ScreenOff
            | DeviceEventKind::ForegroundServiceStop
            | DeviceEventKind::Unknown => {}
        }
        if capped {
            self.stats.capped += 1;
        }
    }

    /// The interned key of an app id.
    fn intern(&mut self, app_id: &str) -> AppKey {
        self.names.intern(app_id)
    }

    fn apply_context(&mut self, context: DeviceContext) {
        let cap = self.config.max_entries_per_timeline;
        let record = MdmRecord::kept(&context, &mut self.names);
        let device = self.devices.entry(context.device_id).or_default();
        // A device reports to its MDM a few times within TimeWindow: room for one more record
        // at a time rather than the timelines' four (an MDM record is 56 bytes).
        device.mdm.entries.reserve_exact(1);
        // Complete inventories sort before partial updates at the same instant.
        let rank = u64::from(!record.complete);
        if device.mdm.insert(context.event_time, rank, record, cap) {
            self.stats.capped += 1;
        }
    }

    fn enrich(&self, session: NetworkSession, end: EpochMillis) -> EnrichedSession {
        let window = self.config.time_window_ms;
        // A session longer than TimeWindow is judged over its last TimeWindow: the state
        // before that may be pruned by the time it arrives (a connection log is written at the
        // connection's end), and how much of it was left would depend on arrival timing.
        let start = session.start_time.max(end.saturating_sub(window));
        let device = self.devices.get(&session.device_id);
        let app = device.and_then(|d| {
            let key = self.names.get(session.app_id.as_deref()?)?;
            d.app(key)
        });

        let app_state = app.map_or(AppRunState::Unknown, |a| app_state_at(a, start, window));
        let foreground_transition_during = app.is_some_and(|a| {
            a.lifecycle
                .between(start, end)
                .any(|e| lifecycle_state(e.payload) == AppRunState::Foreground)
        });
        let lock_state = device
            .and_then(|d| d.lock.as_of(start))
            .map_or(LockState::Unknown, |e| lock_of(e.payload));
        let locked_throughout = lock_state == LockState::Locked
            && !device.is_some_and(|d| {
                d.lock
                    .between(start, end)
                    .any(|e| lock_of(e.payload) == LockState::Unlocked)
            });
        let last_user_interaction_ms_before = device
            .and_then(|d| d.interactions.as_of(start))
            .map(|e| start - e.time)
            .filter(|delta| *delta <= window);
        let preceding_background_execution = app
            .and_then(|a| a.background.as_of(start))
            .filter(|e| start - e.time <= window)
            .map(|e| BackgroundExecution {
                kind: background_kind(e.payload),
                event_time: e.time,
                ms_before_session: start - e.time,
            });
        // No further back than TimeWindow before the end, for the same reason.
        let network_api_calls_before = app.map_or(0, |a| {
            a.api_calls
                .between(
                    start.saturating_sub(window).max(end.saturating_sub(window)),
                    start,
                )
                .map(|e| i64::try_from(e.payload).unwrap_or(0))
                .sum()
        });
        let app_key = session.app_id.as_deref().and_then(|id| self.names.get(id));
        let mdm = device.and_then(|d| mdm_as_of(d, &self.names, app_key, start));
        EnrichedSession {
            session,
            app_state,
            foreground_transition_during,
            lock_state,
            locked_throughout,
            last_user_interaction_ms_before,
            preceding_background_execution,
            network_api_calls_before,
            mdm,
            watermark: end,
        }
    }
}

#[cfg(test)]
mod tests;
