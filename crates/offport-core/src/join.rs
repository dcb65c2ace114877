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
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use crate::durable::{self, Durable, RestoreError, StateChange};
use crate::progress::{Floor, Marker, Sources};

use crate::model::{
    AppRunState, BackgroundExecution, DeviceContext, DeviceEvent, DeviceEventKind, EnrichedSession,
    EpochMillis, LockState, ManagedApp, MdmContext, NetworkSession,
};

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
    /// Which input the record comes from: 0 sessions, 1 EDR events, 2 MDM contexts.
    pub fn input(&self) -> usize {
        match self {
            JoinInput::Session(_) => 0,
            JoinInput::Event(_) => 1,
            JoinInput::Context(_) => 2,
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

/// Bits of a timeline key below the time: the payload (a rank or a small value).
const PAYLOAD_BITS: u32 = 20;
const PAYLOAD_MAX: u64 = (1 << PAYLOAD_BITS) - 1;
/// Latest representable time: 2^44 ms after the epoch, the year 2527.
const TIME_MAX: EpochMillis = (1 << (64 - PAYLOAD_BITS)) - 1;

/// `time` (clamped to 1970..2527; the normalizers reject anything outside as impossible) and a
/// payload packed into one sortable word: entries order by time, then payload, whatever the
/// arrival order.
fn pack(time: EpochMillis, payload: u64) -> u64 {
    let time = u64::try_from(time.clamp(0, TIME_MAX)).unwrap_or(0);
    (time << PAYLOAD_BITS) | payload.min(PAYLOAD_MAX)
}

fn time_of(key: u64) -> EpochMillis {
    EpochMillis::try_from(key >> PAYLOAD_BITS).unwrap_or(TIME_MAX)
}

fn payload_of(key: u64) -> u64 {
    key & PAYLOAD_MAX
}

/// A sorted timeline of packed `(time, payload)` keys with an optional value each. Most
/// timelines carry everything in the payload (a state's rank, a call count) and have `T = ()`:
/// 8 bytes an entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
struct Timeline<T> {
    entries: Vec<(u64, T)>,
}

impl<T> Default for Timeline<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

/// A timeline entry seen from outside: its time and payload.
struct Entry {
    time: EpochMillis,
    payload: u64,
}

impl<T> Timeline<T> {
    fn entry(item: &(u64, T)) -> Entry {
        Entry {
            time: time_of(item.0),
            payload: payload_of(item.0),
        }
    }

    fn insert(&mut self, at: EpochMillis, payload: u64, value: T, cap: usize) -> bool {
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
    fn as_of(&self, at: EpochMillis) -> Option<Entry> {
        let limit = pack(at, PAYLOAD_MAX);
        let index = self.entries.partition_point(|(k, _)| *k <= limit);
        self.entries.get(index.checked_sub(1)?).map(Self::entry)
    }

    /// Entries with `from < time <= to`.
    fn between(&self, from: EpochMillis, to: EpochMillis) -> impl Iterator<Item = Entry> + '_ {
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
    fn prune(&mut self, cutoff: EpochMillis, keep_last: bool) {
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

    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Gives back capacity beyond a quarter more than the length.
    fn shrink(&mut self) {
        if self.entries.capacity() > self.entries.len() + self.entries.len() / 4 + 4 {
            self.entries.shrink_to_fit();
        }
    }

    fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<(u64, T)>()
    }
}

/// Payload of an app lifecycle entry; equal times order NotRunning, Background, Foreground.
fn lifecycle_rank(state: AppRunState) -> u64 {
    match state {
        AppRunState::NotRunning => 0,
        AppRunState::Background => 1,
        AppRunState::Foreground => 2,
        AppRunState::Unknown => 3,
    }
}

fn lifecycle_state(rank: u64) -> AppRunState {
    match rank {
        0 => AppRunState::NotRunning,
        1 => AppRunState::Background,
        2 => AppRunState::Foreground,
        _ => AppRunState::Unknown,
    }
}

/// Payload of a lock entry; an unlock sorts before a lock at the same instant.
fn lock_rank(state: LockState) -> u64 {
    u64::from(state == LockState::Locked)
}

fn lock_of(rank: u64) -> LockState {
    if rank == 1 {
        LockState::Locked
    } else {
        LockState::Unlocked
    }
}

/// An app's run state at `at`: its last lifecycle event, unless background work the system
/// started for it (a job, WorkManager, a foreground service, a background refresh, a
/// persistent service) came after that event and within `window`: then the app was running
/// without being in the foreground, so `Background`, unless its last lifecycle event put it in
/// the foreground (work while the user has the app open). Apps that only ever run in the
/// background report no lifecycle events at all; without this they stayed `Unknown`.
fn app_state_at(app: &AppState, at: EpochMillis, window: i64) -> AppRunState {
    let lifecycle = app.lifecycle.as_of(at);
    let work = app
        .background
        .as_of(at)
        .filter(|work| at - work.time <= window);
    match (lifecycle, work) {
        (Some(event), Some(work)) if work.time >= event.time => {
            match lifecycle_state(event.payload) {
                AppRunState::Foreground => AppRunState::Foreground,
                _ => AppRunState::Background,
            }
        }
        (None, Some(_)) => AppRunState::Background,
        (Some(event), _) => lifecycle_state(event.payload),
        (None, None) => AppRunState::Unknown,
    }
}

/// The background-execution kinds the join keeps, in their payload order.
const BACKGROUND_KINDS: [DeviceEventKind; 5] = [
    DeviceEventKind::BackgroundJob,
    DeviceEventKind::WorkManager,
    DeviceEventKind::ForegroundServiceStart,
    DeviceEventKind::BackgroundRefresh,
    DeviceEventKind::PersistentService,
];

fn background_rank(kind: DeviceEventKind) -> Option<u64> {
    BACKGROUND_KINDS
        .iter()
        .position(|k| *k == kind)
        .and_then(|i| u64::try_from(i).ok())
}

fn background_kind(rank: u64) -> DeviceEventKind {
    usize::try_from(rank)
        .ok()
        .and_then(|i| BACKGROUND_KINDS.get(i))
        .copied()
        .unwrap_or(DeviceEventKind::Unknown)
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AppState {
    /// Payload: [`lifecycle_rank`].
    lifecycle: Timeline<()>,
    /// Payload: [`background_rank`].
    background: Timeline<()>,
    /// Payload: networking-API calls (saturating at 2^20 - 1 per record).
    api_calls: Timeline<()>,
}

/// An app id interned by the joiner: devices key their app state by it.
type AppKey = u32;

#[derive(Debug, Clone, Default)]
struct DeviceState {
    /// Payload: [`lock_rank`].
    lock: Timeline<()>,
    interactions: Timeline<()>,
    /// Payload: 0 for a complete inventory, 1 for a partial update.
    mdm: Timeline<MdmRecord>,
    /// A device has few apps: a small vector beats a map in memory and speed.
    apps: Vec<(AppKey, AppState)>,
}

impl DeviceState {
    fn app(&self, key: AppKey) -> Option<&AppState> {
        self.apps.iter().find(|(k, _)| *k == key).map(|(_, a)| a)
    }

    fn app_mut(&mut self, key: AppKey) -> Option<&mut AppState> {
        if !self.apps.iter().any(|(k, _)| *k == key) {
            self.apps.push((key, AppState::default()));
        }
        self.apps
            .iter_mut()
            .find(|(k, _)| *k == key)
            .map(|(_, a)| a)
    }
}

/// Approximate heap bytes of one device's state, its key included.
fn device_bytes(id: &str, d: &DeviceState) -> usize {
    let apps: usize = d.apps.capacity() * std::mem::size_of::<(AppKey, AppState)>()
        + d.apps
            .iter()
            .map(|(_, a)| {
                a.lifecycle.heap_bytes() + a.background.heap_bytes() + a.api_calls.heap_bytes()
            })
            .sum::<usize>();
    let mdm: usize = d
        .mdm
        .entries
        .iter()
        .map(|(_, r)| {
            r.apps.capacity() * std::mem::size_of::<ManagedApp>()
                + r.apps
                    .iter()
                    .map(|a| a.app_id.capacity() + a.name.as_ref().map_or(0, String::capacity))
                    .sum::<usize>()
        })
        .sum();
    id.len()
        + std::mem::size_of::<(String, DeviceState)>()
        + d.lock.heap_bytes()
        + d.interactions.heap_bytes()
        + d.mdm.heap_bytes()
        + mdm
        + apps
}

/// The newest timeline entry of a device (a packed key: time, then payload), for eviction
/// order.
fn device_last_key(d: &DeviceState) -> u64 {
    let last = |entries: Option<u64>| entries.unwrap_or(0);
    let mut newest = last(d.lock.entries.last().map(|e| e.0))
        .max(last(d.interactions.entries.last().map(|e| e.0)))
        .max(last(d.mdm.entries.last().map(|e| e.0)));
    for (_, app) in &d.apps {
        newest = newest
            .max(last(app.lifecycle.entries.last().map(|e| e.0)))
            .max(last(app.background.entries.last().map(|e| e.0)))
            .max(last(app.api_calls.entries.last().map(|e| e.0)));
    }
    newest
}

/// The parts of a DeviceContext the join keeps.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct MdmRecord {
    supervised: Option<bool>,
    device_group: Option<String>,
    device_role: Option<String>,
    apps: Vec<ManagedApp>,
    complete: bool,
}

/// The joiner's state and logic.
#[derive(Debug, Default)]
pub struct Joiner {
    config: JoinConfig,
    devices: FxHashMap<String, DeviceState>,
    /// App ids seen, interned: one copy of each name however many devices run the app.
    app_keys: FxHashMap<Arc<str>, AppKey>,
    /// The interned app ids by key.
    app_names: Vec<Arc<str>>,
    /// Sessions waiting for the watermark, by (end time, session id). The id is moved into the
    /// key while the session waits and back when it is emitted.
    pending: BTreeMap<(EpochMillis, String), NetworkSession>,
    max_event_time: Option<EpochMillis>,
    /// Newest event time of each input ([`JoinInput::input`] order) since this joiner was built
    /// or restored; kept in memory only (a restored joiner waits for each lagging input's next
    /// record).
    input_max: [Option<EpochMillis>; 3],
    /// Inputs known to have records not read yet ([`Self::set_lagging`]).
    lagging: [bool; 3],
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
    /// What changed since the last drain, when journaling (see [`Durable`]).
    journal: Option<Journal>,
}

/// Keys changed since the last [`Durable::drain_changes`].
#[derive(Debug, Default)]
struct Journal {
    devices: FxHashSet<String>,
    /// Pending sessions added (`true`) or emitted (`false`) since the last drain; a session
    /// added and emitted between two drains leaves no trace.
    sessions: FxHashMap<(EpochMillis, String), bool>,
    meta: bool,
    sources: bool,
}

impl Journal {
    fn device(&mut self, id: &str) {
        if !self.devices.contains(id) {
            self.devices.insert(id.to_string());
        }
    }

    fn session_added(&mut self, key: &(EpochMillis, String)) {
        self.sessions.insert(key.clone(), true);
    }

    fn session_emitted(&mut self, key: (EpochMillis, String)) {
        if self.sessions.get(&key) == Some(&true) {
            self.sessions.remove(&key);
        } else {
            self.sessions.insert(key, false);
        }
    }
}

/// The changelog form of a device's state: app keys replaced by app ids.
#[derive(Debug, Deserialize)]
struct DeviceSnapshot {
    lock: Timeline<()>,
    interactions: Timeline<()>,
    mdm: Timeline<MdmRecord>,
    apps: Vec<(String, AppState)>,
}

/// [`DeviceSnapshot`] as written: the same fields, borrowed from the live state (no copy of
/// the timelines per write).
#[derive(Serialize)]
struct DeviceSnapshotRef<'a> {
    lock: &'a Timeline<()>,
    interactions: &'a Timeline<()>,
    mdm: &'a Timeline<MdmRecord>,
    apps: Vec<(&'a str, &'a AppState)>,
}

/// The changelog form of the join's clocks.
#[derive(Debug, Serialize, Deserialize)]
struct JoinMeta {
    max_event_time: Option<EpochMillis>,
    watermark: Option<EpochMillis>,
    pruned_at: Option<EpochMillis>,
    cutoff: Option<EpochMillis>,
}

const DEVICE_PREFIX: &str = "device/";
const SESSION_PREFIX: &str = "session/";
const META_KEY: &str = "meta";
const SOURCES_KEY: &str = "sources";

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
        let interned: usize = self
            .app_keys
            .keys()
            // The name with its Arc header, the map entry and the by-key slot.
            .map(|k| {
                k.len()
                    + 16
                    + std::mem::size_of::<(Arc<str>, AppKey)>()
                    + std::mem::size_of::<Arc<str>>()
            })
            .sum();
        devices + interned + self.pending.len() * (std::mem::size_of::<NetworkSession>() + 160)
    }

    /// Adds a record; returns the sessions it completed, in (end time, session id) order.
    pub fn push(&mut self, input: JoinInput) -> Vec<EnrichedSession> {
        let at = input.event_time();
        if let Some(newest) = self.input_max.get_mut(input.input()) {
            *newest = Some(newest.map_or(at, |m| m.max(at)));
        }
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
        let to = match self.source_limit() {
            Some(Floor::Hold) => return self.emit_ready(),
            Some(Floor::At(at)) => to.min(at.saturating_sub(self.config.allowed_lateness_ms)),
            _ => to,
        };
        if self.watermark.is_none_or(|w| to > w) {
            if let Some(journal) = &mut self.journal {
                journal.meta = true;
            }
            self.watermark = Some(to);
            self.prune();
        }
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

    fn advance(&mut self, at: EpochMillis) {
        let max = self.max_event_time.map_or(at, |m| m.max(at));
        self.max_event_time = Some(max);
        self.raise_watermark();
    }

    /// Raises the watermark to the newest event time minus the allowed lateness, but no
    /// further than the newest record of any lagging input allows: while an input has records
    /// not read yet, what it will bring is not behind the watermark yet. A lagging input with
    /// no record since this joiner was built or restored holds the watermark where it is.
    /// Past [`JoinConfig::max_waiting_sessions`] waiting sessions, lagging inputs are ignored.
    fn raise_watermark(&mut self) {
        let Some(max) = self.max_event_time else {
            return;
        };
        let mut limit = max;
        let waiting = self.pending.len() <= self.config.max_waiting_sessions;
        for (lagging, newest) in self.lagging.iter().zip(self.input_max) {
            if *lagging && waiting {
                match newest {
                    Some(newest) => limit = limit.min(newest),
                    None => return,
                }
            }
        }
        match self.source_limit() {
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
            self.prune();
        }
    }

    /// Which inputs ([`JoinInput::input`] order) have records not read yet. While one does,
    /// the watermark follows that input's newest record rather than the newest of all, so a
    /// session is emitted only once every input with more to read has passed its end (plus the
    /// allowed lateness): an input read behind the others (a slower fetch, a normalizer
    /// catching up) no longer makes its records late, and a replay's output no longer depends
    /// on how the inputs interleave. With no input lagging the rule is the plain one. Returns
    /// the sessions this completes.
    pub fn set_lagging(&mut self, lagging: [bool; 3]) -> Vec<EnrichedSession> {
        self.lagging = lagging;
        self.raise_watermark();
        self.emit_ready()
    }

    /// Takes a progress marker read on `input` ([`JoinInput::input`] order): the watermark
    /// never passes the slowest raw partition that is not idle (see [`crate::progress`]).
    /// Returns the sessions this completes.
    pub fn observe_progress(&mut self, input: usize, marker: &Marker) -> Vec<EnrichedSession> {
        let input = u8::try_from(input).unwrap_or(u8::MAX);
        if self.sources.observe(input, marker) {
            if let Some(journal) = &mut self.journal {
                journal.sources = true;
            }
            self.raise_watermark();
        }
        self.emit_ready()
    }

    /// Whether a raw topic with records has sent no marker yet (its normalizer has not
    /// started, or is catching up): the watermark then holds, up to
    /// [`JoinConfig::max_waiting_sessions`] waiting sessions. Returns the sessions releasing
    /// the hold completes.
    pub fn set_awaiting(&mut self, awaiting: bool) -> Vec<EnrichedSession> {
        self.awaiting = awaiting;
        self.raise_watermark();
        self.emit_ready()
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
        if let Some(key) = self.app_keys.get(app_id) {
            return *key;
        }
        let key = AppKey::try_from(self.app_keys.len()).unwrap_or(AppKey::MAX);
        let name: Arc<str> = Arc::from(app_id);
        self.app_keys.insert(Arc::clone(&name), key);
        self.app_names.push(name);
        key
    }

    fn apply_context(&mut self, context: DeviceContext) {
        let cap = self.config.max_entries_per_timeline;
        let device = self.devices.entry(context.device_id.clone()).or_default();
        let mut apps = context.apps;
        // A decoder grows the list as it reads (up to twice its length); it is kept for the
        // TimeWindow, so without the spare room.
        apps.shrink_to_fit();
        let record = MdmRecord {
            supervised: context.supervised,
            device_group: context.device_group,
            device_role: context.device_role,
            apps,
            complete: context.inventory_complete,
        };
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
            let key = self.app_keys.get(session.app_id.as_deref()?)?;
            d.app(*key)
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
        let mdm = device.and_then(|d| mdm_as_of(d, session.app_id.as_deref(), start));
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

/// Drops the MDM records older than `cutoff` but the last, folded into that one: a group an
/// old report (or an inventory entry) gave and later reports do not repeat stays known, and
/// [`mdm_as_of`] answers as it did for every time the kept records cover.
fn prune_mdm(mdm: &mut Timeline<MdmRecord>, cutoff: EpochMillis) {
    let before = mdm.entries.partition_point(|(k, _)| *k < pack(cutoff, 0));
    if before < 2 {
        return;
    }
    let mut merged = MdmRecord::default();
    for (_, record) in mdm.entries.drain(..before - 1) {
        fold_into(&mut merged, record);
    }
    if let Some((_, last)) = mdm.entries.first_mut() {
        let kept = std::mem::take(last);
        fold_into(&mut merged, kept);
        *last = merged;
    }
}

/// Folds `record` onto `into` as [`mdm_as_of`] reads them in order.
fn fold_into(into: &mut MdmRecord, record: MdmRecord) {
    into.supervised = record.supervised.or(into.supervised);
    into.device_group = record.device_group.or(into.device_group.take());
    into.device_role = record.device_role.or(into.device_role.take());
    if record.complete {
        into.complete = true;
        into.apps.clear();
    }
    for app in record.apps {
        let installed_only = app.status.as_deref() == Some(crate::model::INSTALLED_ONLY_STATUS);
        match into.apps.iter_mut().find(|a| a.app_id == app.app_id) {
            Some(_) if installed_only => {}
            Some(slot) => *slot = app,
            None => into.apps.push(app),
        }
    }
}

/// Folds the MDM records up to `at`: a complete inventory resets the app list, a partial one
/// updates the apps it lists; device fields take the latest non-null value.
fn mdm_as_of(device: &DeviceState, app_id: Option<&str>, at: EpochMillis) -> Option<MdmContext> {
    let index = device
        .mdm
        .entries
        .partition_point(|(k, _)| *k <= pack(at, PAYLOAD_MAX));
    let records = device.mdm.entries.get(..index)?;
    let as_of = time_of(records.last()?.0);
    let mut supervised = None;
    let mut group = None;
    let mut role = None;
    let mut app: Option<&ManagedApp> = None;
    for (_, record) in records {
        supervised = record.supervised.or(supervised);
        group = record.device_group.as_ref().or(group);
        role = record.device_role.as_ref().or(role);
        if record.complete {
            app = None;
        }
        if let Some(id) = app_id {
            if let Some(found) = record.apps.iter().find(|a| a.app_id == id) {
                // An installed-apps inventory says the app is there, not whether it is managed:
                // it does not replace an earlier management answer.
                let installed_only =
                    found.status.as_deref() == Some(crate::model::INSTALLED_ONLY_STATUS);
                if !(installed_only && app.is_some()) {
                    app = Some(found);
                }
            }
        }
    }
    Some(MdmContext {
        managed: app.map(|a| a.managed),
        approved: app.and_then(|a| a.approved),
        supervised,
        device_group: group.cloned(),
        device_role: role.cloned(),
        app_category: app.and_then(|a| a.category.clone()),
        service_class: app.and_then(|a| a.service_class.clone()),
        as_of,
    })
}

impl Durable for Joiner {
    fn journal_changes(&mut self) {
        self.journal.get_or_insert_with(Journal::default);
    }

    fn drain_changes(&mut self) -> Vec<StateChange> {
        let Some(journal) = self.journal.as_mut().map(std::mem::take) else {
            return vec![];
        };
        let mut changes = Vec::with_capacity(journal.devices.len() + journal.sessions.len() + 1);
        let mut devices: Vec<String> = journal.devices.into_iter().collect();
        // A stable order: the changelog of a replay is the same record for record.
        devices.sort_unstable();
        for id in devices {
            let key = format!("{DEVICE_PREFIX}{id}");
            match self.devices.get(&id) {
                Some(device) => changes.push(durable::put(key, &self.snapshot(device))),
                None => changes.push(StateChange::Delete { key }),
            }
        }
        let mut sessions: Vec<((EpochMillis, String), bool)> =
            journal.sessions.into_iter().collect();
        sessions.sort_unstable();
        for (pending_key, added) in sessions {
            let key = format!("{SESSION_PREFIX}{}", pending_key.1);
            match self.pending.get(&pending_key).filter(|_| added) {
                Some(session) => {
                    let mut session = session.clone();
                    session.session_id = pending_key.1;
                    changes.push(durable::put(key, &session));
                }
                None => changes.push(StateChange::Delete { key }),
            }
        }
        if journal.sources {
            changes.push(durable::put(SOURCES_KEY.to_string(), &self.sources));
        }
        if journal.meta {
            changes.push(durable::put(
                META_KEY.to_string(),
                &JoinMeta {
                    max_event_time: self.max_event_time,
                    watermark: self.watermark,
                    pruned_at: self.pruned_at,
                    cutoff: self.cutoff,
                },
            ));
        }
        changes
    }

    fn restore(&mut self, key: &str, value: &[u8]) -> Result<(), RestoreError> {
        if key == META_KEY {
            let meta: JoinMeta = durable::read(key, value)?;
            self.max_event_time = meta.max_event_time;
            self.watermark = meta.watermark;
            self.pruned_at = meta.pruned_at;
            self.cutoff = meta.cutoff;
        } else if key == SOURCES_KEY {
            self.sources = durable::read(key, value)?;
        } else if let Some(id) = key.strip_prefix(DEVICE_PREFIX) {
            let snapshot: DeviceSnapshot = durable::read(key, value)?;
            let apps = snapshot
                .apps
                .into_iter()
                .map(|(app, state)| (self.intern(&app), state))
                .collect();
            self.devices.insert(
                id.to_string(),
                DeviceState {
                    lock: snapshot.lock,
                    interactions: snapshot.interactions,
                    mdm: snapshot.mdm,
                    apps,
                },
            );
        } else if let Some(id) = key.strip_prefix(SESSION_PREFIX) {
            let mut session: NetworkSession = durable::read(key, value)?;
            if session.session_id != id {
                return Err(RestoreError::new(
                    key,
                    "the session id differs from the key",
                ));
            }
            let id = std::mem::take(&mut session.session_id);
            self.pending.insert((session_end(&session), id), session);
        } else {
            return Err(RestoreError::new(key, "not a key the joiner writes"));
        }
        Ok(())
    }

    fn restored(&mut self) {
        if let Some(cutoff) = self.cutoff {
            self.prune_devices(cutoff);
        }
        if let Some(journal) = &mut self.journal {
            // What was just read is what the changelog holds, apart from devices the prune
            // above emptied (their tombstones are due).
            journal.sessions.clear();
            journal.meta = false;
            journal.sources = false;
        }
    }
}

impl Joiner {
    fn snapshot<'a>(&'a self, device: &'a DeviceState) -> DeviceSnapshotRef<'a> {
        DeviceSnapshotRef {
            lock: &device.lock,
            interactions: &device.interactions,
            mdm: &device.mdm,
            apps: device
                .apps
                .iter()
                .map(|(key, state)| {
                    let name = usize::try_from(*key)
                        .ok()
                        .and_then(|k| self.app_names.get(k))
                        .map_or("", |n| &**n);
                    (name, state)
                })
                .collect(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::examples;
    use crate::model::{NetworkApiUsage, Platform, SourceFormat};
    use proptest::prelude::*;

    const T0: EpochMillis = 1_793_611_800_000;

    fn session(id: &str, app: Option<&str>, start: EpochMillis, duration: i64) -> NetworkSession {
        NetworkSession {
            session_id: id.to_string(),
            device_id: "dev-1".to_string(),
            app_id: app.map(str::to_string),
            start_time: start,
            duration_ms: Some(duration),
            ..examples::network_session()
        }
    }

    fn event(kind: DeviceEventKind, app: Option<&str>, at: EpochMillis) -> DeviceEvent {
        DeviceEvent {
            event_id: format!("{kind:?}-{at}"),
            device_id: "dev-1".to_string(),
            platform: Platform::Android,
            app_id: app.map(str::to_string),
            kind,
            network_api: (kind == DeviceEventKind::NetworkApiUsage).then(|| NetworkApiUsage {
                api: "OkHttp".to_string(),
                call_count: 40,
                window_ms: 60_000,
            }),
            detail: None,
            event_time: at,
            ingest_time: at,
            source_format: SourceFormat::OffportJson,
            source_ref: "t/0/0".to_string(),
        }
    }

    fn context(at: EpochMillis, complete: bool, apps: Vec<ManagedApp>) -> DeviceContext {
        DeviceContext {
            device_id: "dev-1".to_string(),
            apps,
            inventory_complete: complete,
            event_time: at,
            ..examples::device_context()
        }
    }

    #[test]
    fn pruning_mdm_records_folds_them_so_as_of_answers_do_not_change() {
        let record = |group: Option<&str>, complete: bool, apps: Vec<ManagedApp>| MdmRecord {
            supervised: None,
            device_group: group.map(str::to_string),
            device_role: None,
            apps,
            complete,
        };
        let installed = |app: &str| ManagedApp {
            status: Some(crate::model::INSTALLED_ONLY_STATUS.to_string()),
            ..managed(app, false)
        };
        let mut device = DeviceState::default();
        // An inventory entry gives the group; no later report repeats it.
        let records = [
            (T0, record(Some("engineering"), false, vec![])),
            (
                T0 + 1_000,
                record(None, true, vec![managed("a", true), managed("b", false)]),
            ),
            (
                T0 + 2_000,
                record(None, false, vec![installed("a"), installed("c")]),
            ),
            (T0 + 3_000, record(None, false, vec![managed("b", true)])),
            (T0 + 4_000, record(None, true, vec![managed("d", true)])),
            (
                T0 + 5_000,
                record(None, false, vec![installed("d"), managed("e", false)]),
            ),
        ];
        for (at, r) in records {
            device.mdm.insert(at, u64::from(!r.complete), r, usize::MAX);
        }
        let answers = |device: &DeviceState| -> Vec<String> {
            let mut out = Vec::new();
            for at in [T0 + 3_500, T0 + 4_000, T0 + 5_000, T0 + 9_000] {
                for app in ["a", "b", "c", "d", "e", "z"] {
                    out.push(format!("{at} {app} {:?}", mdm_as_of(device, Some(app), at)));
                }
            }
            out
        };
        let before = answers(&device);
        assert!(before[0].contains("engineering"), "{}", before[0]);
        prune_mdm(&mut device.mdm, T0 + 3_500);
        assert_eq!(
            device.mdm.len(),
            3,
            "the last before the cutoff and the two after"
        );
        assert_eq!(answers(&device), before);
        prune_mdm(&mut device.mdm, T0 + 9_000);
        assert_eq!(device.mdm.len(), 1);
        let last = mdm_as_of(&device, Some("e"), T0 + 9_000).unwrap();
        assert_eq!(last.device_group.as_deref(), Some("engineering"));
        assert_eq!(answers(&device)[18..], before[18..]);
    }

    #[test]
    fn the_memory_cap_evicts_the_least_recently_active_devices_but_not_those_with_waiting_sessions()
    {
        let mut joiner = Joiner::new(JoinConfig::default());
        joiner.journal_changes();
        // Device k last active at T0 + k seconds.
        for k in 0..20 {
            let mut e = event(DeviceEventKind::DeviceLocked, None, T0 + k * 1_000);
            e.device_id = format!("dev-{k:02}");
            joiner.push(JoinInput::Event(e));
        }
        // The oldest device has a session waiting for the watermark.
        let mut waiting = session("s-old", None, T0 + 30_000, 600_000);
        waiting.device_id = "dev-00".to_string();
        assert!(joiner.push(JoinInput::Session(waiting)).is_empty());
        joiner.drain_changes();
        let before = joiner.state_bytes();
        let per_device = before / 21;
        // Room for about half the devices.
        let cap = before - 10 * per_device;
        let evicted = joiner.evict_to(cap);
        assert!(evicted >= 9, "evicted {evicted}");
        assert!(
            joiner.state_bytes() <= cap,
            "{} > {cap}",
            joiner.state_bytes()
        );
        assert_eq!(joiner.stats().evicted, evicted as u64);
        assert!(
            joiner.devices.contains_key("dev-00"),
            "a device with a waiting session was evicted"
        );
        // The least recently active went first: dev-01.. in order, the newest stay.
        assert!(!joiner.devices.contains_key("dev-01"));
        assert!(joiner.devices.contains_key("dev-19"));
        // Evictions go to the changelog as deletes.
        let deletes: Vec<String> = joiner
            .drain_changes()
            .into_iter()
            .filter_map(|c| match c {
                StateChange::Delete { key } => Some(key),
                StateChange::Put { .. } => None,
            })
            .collect();
        assert_eq!(deletes.len(), evicted);
        assert!(deletes.contains(&format!("{DEVICE_PREFIX}dev-01")));
        // Under the cap nothing happens; the waiting session is still emitted.
        assert_eq!(joiner.evict_to(usize::MAX), 0);
        assert_eq!(joiner.flush().len(), 1);
    }

    fn managed(app: &str, managed: bool) -> ManagedApp {
        ManagedApp {
            app_id: app.to_string(),
            managed,
            ..examples::device_context().apps.remove(0)
        }
    }

    fn run(joiner: &mut Joiner, inputs: Vec<JoinInput>) -> Vec<EnrichedSession> {
        let mut out = Vec::new();
        for input in inputs {
            out.extend(joiner.push(input));
        }
        out
    }

    #[test]
    fn timeline_keys_order_by_time_then_payload_and_clamp_what_they_cannot_hold() {
        assert_eq!(time_of(pack(T0, 7)), T0);
        assert_eq!(payload_of(pack(T0, 7)), 7);
        assert!(pack(T0, 1) < pack(T0, 2) && pack(T0, PAYLOAD_MAX) < pack(T0 + 1, 0));
        // Before 1970 and after 2527 clamp; an oversized payload saturates.
        assert_eq!(time_of(pack(-5, 0)), 0);
        assert_eq!(time_of(pack(EpochMillis::MAX, 0)), TIME_MAX);
        assert_eq!(payload_of(pack(T0, u64::MAX)), PAYLOAD_MAX);

        let mut timeline = Timeline::<()>::default();
        for (at, payload) in [(T0 + 10, 2), (T0, 1), (T0 + 10, 0), (T0 + 20, 1)] {
            timeline.insert(at, payload, (), 16);
        }
        let seen: Vec<(EpochMillis, u64)> = timeline
            .between(T0 - 1, T0 + 20)
            .map(|e| (e.time, e.payload))
            .collect();
        assert_eq!(seen, [(T0, 1), (T0 + 10, 0), (T0 + 10, 2), (T0 + 20, 1)]);
        // As of an instant: the entry with the highest payload at that instant wins.
        let last = timeline.as_of(T0 + 10).map(|e| (e.time, e.payload));
        assert_eq!(last, Some((T0 + 10, 2)));
        assert!(timeline.as_of(T0 - 1).is_none());
    }

    #[test]
    fn a_background_session_on_a_locked_device_after_a_job() {
        let app = Some("com.x");
        let mut joiner = Joiner::new(JoinConfig::default());
        let out = run(
            &mut joiner,
            vec![
                JoinInput::Context(context(T0 - 600_000, true, vec![managed("com.x", false)])),
                JoinInput::Event(event(
                    DeviceEventKind::UserInteraction,
                    None,
                    T0 - 3_600_000,
                )),
                JoinInput::Event(event(DeviceEventKind::AppForeground, app, T0 - 3_500_000)),
                JoinInput::Event(event(DeviceEventKind::AppBackground, app, T0 - 3_400_000)),
                JoinInput::Event(event(DeviceEventKind::DeviceLocked, None, T0 - 3_000_000)),
                JoinInput::Event(event(DeviceEventKind::WorkManager, app, T0 - 2_000)),
                JoinInput::Event(event(DeviceEventKind::NetworkApiUsage, app, T0 - 1_000)),
                JoinInput::Session(session("s1", app, T0, 5_000)),
                JoinInput::Event(event(DeviceEventKind::UserInteraction, None, T0 + 100_000)),
            ],
        );
        assert_eq!(out.len(), 1);
        let e = &out[0];
        assert_eq!(e.app_state, AppRunState::Background);
        assert!(!e.foreground_transition_during);
        assert_eq!(e.lock_state, LockState::Locked);
        assert!(e.locked_throughout);
        assert_eq!(e.last_user_interaction_ms_before, Some(3_600_000));
        let bg = e.preceding_background_execution.as_ref().unwrap();
        assert_eq!(
            (bg.kind, bg.ms_before_session),
            (DeviceEventKind::WorkManager, 2_000)
        );
        assert_eq!(e.network_api_calls_before, 40);
        let mdm = e.mdm.as_ref().unwrap();
        assert_eq!((mdm.managed, mdm.supervised), (Some(false), Some(true)));
        assert_eq!(mdm.device_group.as_deref(), Some("sales-emea"));
        assert_eq!(e.watermark, T0 + 5_000);
    }

    #[test]
    fn foreground_transition_and_unlock_during_the_session_are_seen() {
        let app = Some("com.x");
        let mut joiner = Joiner::new(JoinConfig {
            allowed_lateness_ms: 0,
            ..JoinConfig::default()
        });
        let out = run(
            &mut joiner,
            vec![
                JoinInput::Event(event(DeviceEventKind::AppBackground, app, T0 - 10)),
                JoinInput::Event(event(DeviceEventKind::DeviceLocked, None, T0 - 10)),
                JoinInput::Session(session("s1", app, T0, 10_000)),
                JoinInput::Event(event(DeviceEventKind::DeviceUnlocked, None, T0 + 4_000)),
                JoinInput::Event(event(DeviceEventKind::AppForeground, app, T0 + 5_000)),
                JoinInput::Event(event(DeviceEventKind::ScreenOn, None, T0 + 10_000)),
            ],
        );
        assert_eq!(out.len(), 1);
        assert!(out[0].foreground_transition_during);
        assert_eq!(out[0].lock_state, LockState::Locked);
        assert!(!out[0].locked_throughout);
        // The session waited for the watermark to pass its end.
        assert_eq!(out[0].watermark, T0 + 10_000);
    }

    #[test]
    fn sessions_wait_for_the_watermark_and_flush_at_end_of_input() {
        let mut joiner = Joiner::new(JoinConfig::default());
        assert!(joiner
            .push(JoinInput::Session(session("s1", None, T0, 1_000)))
            .is_empty());
        assert!(joiner
            .push(JoinInput::Event(event(
                DeviceEventKind::ScreenOn,
                None,
                T0 + 20_000
            )))
            .is_empty());
        assert_eq!(joiner.pending_sessions(), 1);
        let out = joiner.push(JoinInput::Event(event(
            DeviceEventKind::ScreenOn,
            None,
            T0 + 31_000,
        )));
        assert_eq!(out.len(), 1, "watermark T0+1000 reached the session's end");
        joiner.push(JoinInput::Session(session("s2", None, T0 + 40_000, 0)));
        assert_eq!(joiner.flush().len(), 1);
        assert_eq!(joiner.pending_sessions(), 0);
        // Unattributed session: app state unknown, no MDM context.
        assert_eq!(out[0].app_state, AppRunState::Unknown);
        assert_eq!(out[0].mdm, None);
    }

    #[test]
    fn advancing_the_watermark_without_records_emits_a_quiet_partitions_sessions() {
        let mut joiner = Joiner::new(JoinConfig::default());
        assert!(joiner
            .push(JoinInput::Session(session("quiet", None, T0, 1_000)))
            .is_empty());
        assert!(
            joiner.advance_watermark(T0).is_empty(),
            "not yet past the session's end"
        );
        let out = joiner.advance_watermark(T0 + 1_000);
        assert_eq!(out.len(), 1);
        assert_eq!(joiner.watermark(), Some(T0 + 1_000));
        // The watermark never goes back.
        assert!(joiner.advance_watermark(T0).is_empty());
        assert_eq!(joiner.watermark(), Some(T0 + 1_000));
    }

    #[test]
    fn advancing_the_watermark_leaves_the_newest_record_time_alone() {
        let config = JoinConfig::default();
        let lateness = config.allowed_lateness_ms;
        let mut joiner = Joiner::new(config);
        joiner.push(JoinInput::Session(session(
            "quiet",
            Some("com.x"),
            T0,
            1_000,
        )));
        assert_eq!(joiner.max_event_time(), Some(T0));
        // The idle rule, every half second of a minute and a half of quiet, from the newest
        // record's time plus the quiet so far.
        for quiet in (500..=90_000).step_by(500) {
            let to = joiner.max_event_time().unwrap_or(T0) + quiet - lateness;
            joiner.advance_watermark(to);
        }
        assert_eq!(joiner.max_event_time(), Some(T0));
        assert_eq!(joiner.watermark(), Some(T0 + 90_000 - lateness));
        assert_eq!(joiner.pending_sessions(), 0, "the quiet session came out");
        // The next record, 90 s of event time after the last as 90 s passed on the clock, is
        // on time.
        joiner.push(JoinInput::Event(event(
            DeviceEventKind::DeviceLocked,
            None,
            T0 + 90_000,
        )));
        assert_eq!(joiner.stats().late_events, 0);
    }

    #[test]
    fn late_records_follow_the_documented_rule() {
        let app = Some("com.x");
        let mut joiner = Joiner::new(JoinConfig {
            allowed_lateness_ms: 1_000,
            ..JoinConfig::default()
        });
        joiner.push(JoinInput::Event(event(
            DeviceEventKind::ScreenOn,
            None,
            T0 + 60_000,
        )));
        // Late event: kept in state, counted.
        joiner.push(JoinInput::Event(event(
            DeviceEventKind::DeviceLocked,
            None,
            T0 - 5_000,
        )));
        // Late session: emitted at once with the state that is there.
        let out = joiner.push(JoinInput::Session(session("late", app, T0, 1_000)));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].lock_state, LockState::Locked);
        assert_eq!(joiner.stats().late_events, 1);
        assert_eq!(joiner.stats().late_sessions, 1);
    }

    #[test]
    fn a_lagging_input_holds_the_watermark_until_it_has_caught_up() {
        let app = Some("com.x");
        let mut joiner = Joiner::new(JoinConfig {
            allowed_lateness_ms: 0,
            ..JoinConfig::default()
        });
        // EDR has records not read yet, none read so far: nothing can be complete.
        assert!(joiner.set_lagging([false, true, false]).is_empty());
        assert!(joiner
            .push(JoinInput::Session(session("s1", app, T0, 1_000)))
            .is_empty());
        assert!(joiner
            .push(JoinInput::Session(session("s2", app, T0 + 60_000, 1_000)))
            .is_empty());
        assert_eq!(joiner.watermark(), None);
        // EDR up to T0-500: the watermark follows it, not the sessions' T0+60 s.
        let locked = joiner.push(JoinInput::Event(event(
            DeviceEventKind::DeviceLocked,
            None,
            T0 - 500,
        )));
        assert!(locked.is_empty());
        assert_eq!(joiner.watermark(), Some(T0 - 500));
        assert_eq!(joiner.stats().late_events, 0);
        let out = joiner.push(JoinInput::Event(event(
            DeviceEventKind::ScreenOn,
            None,
            T0 + 2_000,
        )));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].session.session_id, "s1");
        assert_eq!(
            out[0].lock_state,
            LockState::Locked,
            "the lock was read first"
        );
        // EDR caught up: the plain rule again.
        assert!(joiner.set_lagging([false; 3]).is_empty());
        assert_eq!(joiner.watermark(), Some(T0 + 60_000));
        let out = joiner.advance_watermark(T0 + 61_000);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_watermark_raised_by_an_input_catching_up_reaches_the_changelog() {
        let app = Some("com.x");
        let mut joiner = Joiner::new(JoinConfig {
            allowed_lateness_ms: 0,
            ..JoinConfig::default()
        });
        joiner.journal_changes();
        joiner.set_lagging([false, true, false]);
        joiner.push(JoinInput::Session(session("s1", app, T0, 1_000)));
        joiner.push(JoinInput::Session(session("s2", app, T0 + 60_000, 1_000)));
        joiner.drain_changes();
        // No record: EDR caught up, the watermark moves to the sessions' newest.
        assert_eq!(joiner.set_lagging([false; 3]).len(), 1);
        let changes = joiner.drain_changes();
        assert!(
            changes
                .iter()
                .any(|c| matches!(c, StateChange::Put { key, .. } if key == META_KEY)),
            "the new watermark is not journaled"
        );
        let changelog: BTreeMap<String, Vec<u8>> = changes
            .into_iter()
            .filter_map(|c| match c {
                StateChange::Put { key, value } => Some((key, value)),
                StateChange::Delete { .. } => None,
            })
            .collect();
        assert_eq!(
            restore_from(JoinConfig::default(), &changelog).watermark(),
            Some(T0 + 60_000)
        );
    }

    #[test]
    fn past_the_waiting_sessions_cap_a_lagging_input_is_not_waited_for() {
        let app = Some("com.x");
        let mut joiner = Joiner::new(JoinConfig {
            allowed_lateness_ms: 0,
            max_waiting_sessions: 3,
            ..JoinConfig::default()
        });
        joiner.set_lagging([false, true, false]);
        for i in 0..3 {
            let id = format!("s{i}");
            assert!(joiner
                .push(JoinInput::Session(session(
                    &id,
                    app,
                    T0 + i * 10_000,
                    1_000
                )))
                .is_empty());
        }
        assert_eq!(joiner.pending_sessions(), 3);
        assert_eq!(joiner.watermark(), None, "held while within the cap");
        // The fourth is past the cap: the plain rule emits the three that are complete.
        let out = joiner.push(JoinInput::Session(session("s3", app, T0 + 30_000, 1_000)));
        assert_eq!(out.len(), 3);
        assert_eq!(joiner.watermark(), Some(T0 + 30_000));
    }

    #[test]
    fn with_lagging_inputs_marked_the_output_does_not_depend_on_how_inputs_interleave() {
        let app = Some("com.x");
        let sessions: Vec<JoinInput> = (0..20)
            .map(|i| JoinInput::Session(session(&format!("s{i:02}"), app, T0 + i * 10_000, 2_000)))
            .collect();
        // The device locks and unlocks every 10 s, half-way between sessions.
        let events: Vec<JoinInput> = (0..20)
            .map(|i| {
                let kind = if i % 2 == 0 {
                    DeviceEventKind::DeviceLocked
                } else {
                    DeviceEventKind::DeviceUnlocked
                };
                JoinInput::Event(event(kind, None, T0 - 5_000 + i * 10_000))
            })
            .collect();
        let config = JoinConfig {
            allowed_lateness_ms: 1_000,
            ..JoinConfig::default()
        };
        let states = |out: Vec<EnrichedSession>| -> Vec<(String, LockState)> {
            out.into_iter()
                .map(|e| (e.session.session_id, e.lock_state))
                .collect()
        };
        // In time order.
        let mut merged: Vec<JoinInput> = sessions.iter().chain(&events).cloned().collect();
        merged.sort_by_key(JoinInput::event_time);
        let mut in_order = Joiner::new(config.clone());
        let mut expected = Vec::new();
        for input in merged {
            expected.extend(in_order.push(input));
        }
        expected.extend(in_order.flush());
        let expected = states(expected);
        assert_eq!(expected.len(), 20);
        // Every session read before any EDR event, as when the sessions topic is fetched
        // ahead: EDR is marked lagging until it has been read.
        let read_apart = |mark: bool| {
            let mut joiner = Joiner::new(config.clone());
            let mut out = joiner.set_lagging([false, mark, false]);
            for input in sessions.iter().chain(&events).cloned() {
                out.extend(joiner.push(input));
            }
            out.extend(joiner.set_lagging([false; 3]));
            out.extend(joiner.flush());
            (states(out), joiner.stats().late_events)
        };
        assert_eq!(read_apart(true), (expected.clone(), 0));
        // Unmarked, the sessions run ahead and the EDR events come late.
        let (unmarked, late) = read_apart(false);
        assert_ne!(unmarked, expected);
        assert_eq!(late, 20);
    }

    #[test]
    fn mdm_inventory_updates_fold_in_time_order() {
        let mut joiner = Joiner::new(JoinConfig {
            allowed_lateness_ms: 0,
            ..JoinConfig::default()
        });
        let out = run(
            &mut joiner,
            vec![
                JoinInput::Context(context(
                    T0 - 300,
                    true,
                    vec![managed("com.a", true), managed("com.b", true)],
                )),
                JoinInput::Context(context(T0 - 200, false, vec![managed("com.b", false)])),
                JoinInput::Context(context(T0 - 100, true, vec![managed("com.a", true)])),
                JoinInput::Session(session("a", Some("com.a"), T0, 0)),
                JoinInput::Session(session("b", Some("com.b"), T0, 0)),
                JoinInput::Session(session("b-before", Some("com.b"), T0 - 150, 0)),
                JoinInput::Event(event(DeviceEventKind::ScreenOn, None, T0 + 1)),
            ],
        );
        let by_id: HashMap<&str, &EnrichedSession> = out
            .iter()
            .map(|e| (e.session.session_id.as_str(), e))
            .collect();
        assert_eq!(by_id["a"].mdm.as_ref().unwrap().managed, Some(true));
        assert_eq!(
            by_id["b"].mdm.as_ref().unwrap().managed,
            None,
            "complete inventory at T0-100 dropped com.b"
        );
        assert_eq!(
            by_id["b-before"].mdm.as_ref().unwrap().managed,
            Some(false),
            "partial update at T0-200"
        );
    }

    #[test]
    fn an_installed_apps_list_never_replaces_a_management_answer() {
        let mut joiner = Joiner::new(JoinConfig {
            allowed_lateness_ms: 0,
            ..JoinConfig::default()
        });
        let installed = |app: &str| ManagedApp {
            status: Some(crate::model::INSTALLED_ONLY_STATUS.to_string()),
            ..managed(app, false)
        };
        let out = run(
            &mut joiner,
            vec![
                JoinInput::Context(context(T0 - 300, true, vec![managed("com.a", true)])),
                JoinInput::Context(context(
                    T0 - 200,
                    false,
                    vec![installed("com.a"), installed("com.z")],
                )),
                JoinInput::Session(session("a", Some("com.a"), T0, 0)),
                JoinInput::Session(session("z", Some("com.z"), T0, 0)),
                JoinInput::Event(event(DeviceEventKind::ScreenOn, None, T0 + 1)),
            ],
        );
        let by_id: HashMap<&str, &EnrichedSession> = out
            .iter()
            .map(|e| (e.session.session_id.as_str(), e))
            .collect();
        assert_eq!(by_id["a"].mdm.as_ref().unwrap().managed, Some(true));
        assert_eq!(
            by_id["z"].mdm.as_ref().unwrap().managed,
            Some(false),
            "known only as installed: unmanaged"
        );
    }

    #[test]
    fn background_work_puts_an_app_without_lifecycle_events_in_the_background() {
        let app = Some("com.x");
        let state = |events: Vec<JoinInput>| {
            let mut joiner = Joiner::new(JoinConfig {
                allowed_lateness_ms: 0,
                ..JoinConfig::default()
            });
            run(&mut joiner, events);
            let out = run(
                &mut joiner,
                vec![JoinInput::Session(session("s", app, T0, 0))],
            );
            out[0].app_state
        };
        // Only a background job: the app runs, not in the foreground.
        let job = |t| JoinInput::Event(event(DeviceEventKind::BackgroundJob, app, t));
        let refresh = |t| JoinInput::Event(event(DeviceEventKind::BackgroundRefresh, app, t));
        let fg = |t| JoinInput::Event(event(DeviceEventKind::AppForeground, app, t));
        let stopped = |t| JoinInput::Event(event(DeviceEventKind::AppStopped, app, t));
        assert_eq!(state(vec![job(T0 - 1_000)]), AppRunState::Background);
        assert_eq!(state(vec![refresh(T0 - 1_000)]), AppRunState::Background);
        // Work while the user has the app open stays foreground.
        assert_eq!(
            state(vec![fg(T0 - 2_000), job(T0 - 1_000)]),
            AppRunState::Foreground
        );
        // A stopped app woken by a job is in the background.
        assert_eq!(
            state(vec![stopped(T0 - 2_000), job(T0 - 1_000)]),
            AppRunState::Background
        );
        // The last lifecycle event after the work wins.
        assert_eq!(
            state(vec![job(T0 - 2_000), fg(T0 - 1_000)]),
            AppRunState::Foreground
        );
        // Arrival order does not matter.
        assert_eq!(
            state(vec![job(T0 - 1_000), fg(T0 - 2_000)]),
            AppRunState::Foreground
        );
        // Nothing known: unknown.
        assert_eq!(state(vec![]), AppRunState::Unknown);
    }

    #[test]
    fn state_older_than_the_time_window_is_dropped_but_as_of_state_kept() {
        let app = Some("com.x");
        let mut joiner = Joiner::new(JoinConfig {
            allowed_lateness_ms: 0,
            time_window_ms: 60_000,
            ..JoinConfig::default()
        });
        run(
            &mut joiner,
            vec![
                JoinInput::Event(event(DeviceEventKind::DeviceLocked, None, T0)),
                JoinInput::Event(event(DeviceEventKind::UserInteraction, None, T0)),
                JoinInput::Event(event(DeviceEventKind::BackgroundJob, app, T0)),
                JoinInput::Event(event(DeviceEventKind::AppBackground, app, T0)),
            ],
        );
        let out = run(
            &mut joiner,
            vec![
                JoinInput::Event(event(DeviceEventKind::ScreenOn, None, T0 + 600_000)),
                JoinInput::Session(session("s", app, T0 + 600_000, 0)),
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].lock_state, LockState::Locked, "last lock state kept");
        assert_eq!(
            out[0].app_state,
            AppRunState::Background,
            "last lifecycle state kept"
        );
        assert_eq!(
            out[0].last_user_interaction_ms_before, None,
            "interaction outside TimeWindow"
        );
        assert_eq!(out[0].preceding_background_execution, None);
    }

    #[test]
    fn timelines_are_capped() {
        let mut joiner = Joiner::new(JoinConfig {
            max_entries_per_timeline: 8,
            ..JoinConfig::default()
        });
        for i in 0..100 {
            joiner.push(JoinInput::Event(event(
                DeviceEventKind::UserInteraction,
                None,
                T0 + i,
            )));
        }
        assert_eq!(joiner.stats().capped, 92);
        assert!(joiner.state_bytes() < 2_000, "{}", joiner.state_bytes());
    }

    fn scenario() -> Vec<JoinInput> {
        let apps = [Some("com.a"), Some("com.b"), None];
        let mut inputs = vec![JoinInput::Context(context(
            T0 - 1_000_000,
            true,
            vec![managed("com.a", true)],
        ))];
        for i in 0..60i64 {
            let t = T0 + i * 7_000;
            let app = apps[(i % 3) as usize];
            let kind = match i % 7 {
                0 => DeviceEventKind::DeviceLocked,
                1 => DeviceEventKind::DeviceUnlocked,
                2 => DeviceEventKind::AppForeground,
                3 => DeviceEventKind::AppBackground,
                4 => DeviceEventKind::WorkManager,
                5 => DeviceEventKind::NetworkApiUsage,
                _ => DeviceEventKind::UserInteraction,
            };
            inputs.push(JoinInput::Event(event(kind, app.or(Some("com.a")), t)));
            if i % 2 == 0 {
                inputs.push(JoinInput::Session(session(
                    &format!("s{i}"),
                    app,
                    t + 1_500,
                    (i % 5) * 3_000,
                )));
            }
        }
        inputs
    }

    /// Applies drained changes to a changelog held as its compacted form (last value per key).
    fn compact(changelog: &mut BTreeMap<String, Vec<u8>>, changes: Vec<StateChange>) {
        for change in changes {
            match change {
                StateChange::Put { key, value } => {
                    changelog.insert(key, value);
                }
                StateChange::Delete { key } => {
                    changelog.remove(&key);
                }
            }
        }
    }

    fn restore_from(config: JoinConfig, changelog: &BTreeMap<String, Vec<u8>>) -> Joiner {
        let mut joiner = Joiner::new(config);
        joiner.journal_changes();
        for (key, value) in changelog {
            joiner.restore(key, value).unwrap();
        }
        joiner.restored();
        joiner
    }

    #[test]
    fn pruning_tombstones_emptied_devices_and_the_changelog_rejects_foreign_keys() {
        let config = JoinConfig {
            allowed_lateness_ms: 0,
            time_window_ms: 60_000,
            ..JoinConfig::default()
        };
        let mut joiner = Joiner::new(config.clone());
        joiner.journal_changes();
        let mut changelog = BTreeMap::new();
        joiner.push(JoinInput::Event(event(
            DeviceEventKind::UserInteraction,
            None,
            T0,
        )));
        compact(&mut changelog, joiner.drain_changes());
        assert!(changelog.contains_key("device/dev-1"), "{changelog:?}");
        let mut other = event(DeviceEventKind::UserInteraction, None, T0 + 10 * 60_000);
        other.device_id = "dev-2".to_string();
        joiner.push(JoinInput::Event(other));
        let changes = joiner.drain_changes();
        assert!(changes.contains(&StateChange::Delete {
            key: "device/dev-1".to_string()
        }));
        compact(&mut changelog, changes);
        assert_eq!(
            changelog.keys().collect::<Vec<_>>(),
            vec!["device/dev-2", "meta"]
        );
        let mut fresh = Joiner::new(config);
        let error = fresh.restore("bogus/1", b"{}").unwrap_err();
        assert!(error.to_string().contains("bogus/1"), "{error}");
        let error = fresh.restore("device/x", b"not json").unwrap_err();
        assert!(error.to_string().contains("device/x"), "{error}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// A joiner restored from its changelog at any batch boundary goes on exactly as the
        /// uninterrupted one: same outputs, same order, including pruning and late records.
        #[test]
        fn a_joiner_restored_from_its_changelog_continues_identically(
            batch in 1usize..12,
            stop in 0usize..140,
            window in prop_oneof![Just(30_000i64), Just(90_000), Just(6 * 3_600_000)],
        ) {
            let config = JoinConfig { allowed_lateness_ms: 5_000, time_window_ms: window, ..JoinConfig::default() };
            let inputs = scenario();
            let mut whole = Joiner::new(config.clone());
            whole.journal_changes();
            let mut expected = run(&mut whole, inputs.clone());
            expected.extend(whole.flush());

            let stop = (stop.min(inputs.len()) / batch) * batch;
            let mut first = Joiner::new(config.clone());
            first.journal_changes();
            let mut changelog = BTreeMap::new();
            let mut actual = Vec::new();
            for chunk in inputs.get(..stop).unwrap_or_default().chunks(batch) {
                actual.extend(run(&mut first, chunk.to_vec()));
                compact(&mut changelog, first.drain_changes());
            }
            let mut second = restore_from(config, &changelog);
            prop_assert_eq!(second.watermark(), first.watermark());
            prop_assert_eq!(second.pending_sessions(), first.pending_sessions());
            prop_assert_eq!(second.devices(), first.devices());
            actual.extend(run(&mut second, inputs.get(stop..).unwrap_or_default().to_vec()));
            actual.extend(second.flush());
            prop_assert_eq!(expected, actual);
        }
    }

    fn marker(source: &str, time: EpochMillis) -> Marker {
        Marker {
            source: source.to_string(),
            partition: 0,
            partitions: 1,
            time: Some(time),
            idle: false,
        }
    }

    /// Feeds records and markers: `Ok` a record, `Err((input, marker))` a marker.
    fn run_marked(
        joiner: &mut Joiner,
        items: Vec<Result<JoinInput, (usize, Marker)>>,
    ) -> Vec<EnrichedSession> {
        let mut out = Vec::new();
        for item in items {
            out.extend(match item {
                Ok(input) => joiner.push(input),
                Err((input, marker)) => joiner.observe_progress(input, &marker),
            });
        }
        out.extend(joiner.flush());
        out
    }

    #[test]
    fn a_raw_partition_behind_holds_the_watermark_however_far_the_others_are() {
        let mut joiner = Joiner::new(JoinConfig::default());
        // EDR's raw partition has reported, up to T0 - 1 s; the device locks at T0.
        joiner.observe_progress(1, &marker("raw.edr", T0 - 1_000));
        // Sessions run a day ahead; under the plain rule the lock at T0 would come too late.
        let mut out = Vec::new();
        out.extend(joiner.push(JoinInput::Session(session(
            "s",
            Some("com.a"),
            T0 + 1_000,
            500,
        ))));
        out.extend(joiner.observe_progress(0, &marker("raw.proxy", T0 + 1_000)));
        out.extend(joiner.push(JoinInput::Session(session(
            "later",
            None,
            T0 + 86_400_000,
            0,
        ))));
        out.extend(joiner.observe_progress(0, &marker("raw.proxy", T0 + 86_400_000)));
        assert!(
            out.is_empty(),
            "emitted before the EDR partition passed its end"
        );
        assert_eq!(joiner.watermark(), Some(T0 - 1_000 - 30_000));
        // A raw topic with records but no marker yet holds too.
        assert!(joiner.set_awaiting(true).is_empty());
        joiner.push(JoinInput::Event(event(
            DeviceEventKind::DeviceLocked,
            None,
            T0,
        )));
        assert!(joiner
            .observe_progress(1, &marker("raw.edr", T0 + 60_000))
            .is_empty());
        let out = joiner.set_awaiting(false);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].lock_state, LockState::Locked);
        // The idle rule cannot pass the slowest raw partition either.
        assert!(joiner.advance_watermark(T0 + 90_000_000).is_empty());
        assert_eq!(joiner.watermark(), Some(T0 + 60_000 - 30_000));
        // Once it is idle, nothing holds: the plain rule applies.
        let mut idle = marker("raw.edr", T0 + 60_000);
        idle.idle = true;
        assert!(joiner.observe_progress(1, &idle).is_empty());
        assert_eq!(joiner.watermark(), Some(T0 + 86_400_000 - 30_000));
        let mut idle = marker("raw.proxy", T0 + 86_400_000);
        idle.idle = true;
        joiner.observe_progress(0, &idle);
        let out = joiner.advance_watermark(T0 + 86_400_000);
        assert_eq!(
            out.len(),
            1,
            "all idle: the idle rule releases the day-ahead session"
        );
    }

    #[test]
    fn the_sources_survive_a_restore() {
        let mut joiner = Joiner::new(JoinConfig::default());
        joiner.journal_changes();
        joiner.observe_progress(1, &marker("raw.edr", T0));
        joiner.push(JoinInput::Session(session("s", None, T0 + 100_000, 0)));
        let mut changelog = BTreeMap::new();
        compact(&mut changelog, joiner.drain_changes());
        let mut restored = restore_from(JoinConfig::default(), &changelog);
        assert_eq!(restored.heard_from().collect::<Vec<_>>(), ["raw.edr"]);
        assert_eq!(restored.watermark(), Some(T0 - 30_000), "held by raw.edr");
        restored.observe_progress(1, &marker("raw.edr", T0 + 100_000));
        assert_eq!(
            restored.watermark(),
            Some(T0 + 70_000),
            "the restored floor moved on"
        );
    }

    #[test]
    fn a_session_longer_than_the_time_window_is_judged_over_its_last_window_however_late_it_comes()
    {
        let hour = 3_600_000;
        let config = JoinConfig {
            time_window_ms: 2 * hour,
            ..JoinConfig::default()
        };
        let events = [
            JoinInput::Event(event(DeviceEventKind::DeviceLocked, None, T0 - 1_000)),
            JoinInput::Event(event(DeviceEventKind::DeviceUnlocked, None, T0 + hour)),
            JoinInput::Event(event(DeviceEventKind::DeviceLocked, None, T0 + 3 * hour)),
            JoinInput::Event(event(DeviceEventKind::UserInteraction, None, T0 + 3 * hour)),
        ];
        // A ten-hour session, written (as a connection log is) at its end.
        let long = JoinInput::Session(session("long", None, T0, 10 * hour));
        let mut answers = Vec::new();
        for session_first in [true, false] {
            let mut joiner = Joiner::new(config.clone());
            let mut items: Vec<_> = events.iter().cloned().map(Ok).collect();
            // EDR progresses through the day in steps: pruning runs as it goes.
            for h in 0..12 {
                items.push(Err((1, marker("raw.edr", T0 + h * hour))));
            }
            let at = if session_first { 0 } else { 11 };
            items.insert(at, Ok(long.clone()));
            let out = run_marked(&mut joiner, items);
            assert_eq!(out.len(), 1);
            answers.push(out[0].clone());
        }
        assert_eq!(answers[0], answers[1]);
        // Judged from T0 + 8 h: locked since T0 + 3 h, the interaction 5 h before.
        assert_eq!(answers[0].lock_state, LockState::Locked);
        assert_eq!(
            answers[0].last_user_interaction_ms_before, None,
            "5 h > TimeWindow"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Shuffling records within the lateness bound changes nothing in the output.
        #[test]
        fn output_is_independent_of_arrival_order_within_lateness(keys in proptest::collection::vec(0i64..20_000, 91)) {
            let lateness = 20_000;
            let config = JoinConfig { allowed_lateness_ms: lateness, ..JoinConfig::default() };
            let inputs = scenario();
            let mut in_order = Joiner::new(config.clone());
            let mut expected = run(&mut in_order, inputs.clone());
            expected.extend(in_order.flush());

            // Arrival order: event time plus a random delay below the lateness bound.
            let mut shuffled: Vec<(i64, usize, JoinInput)> = inputs
                .into_iter()
                .enumerate()
                .map(|(i, input)| (input.event_time() + keys.get(i).copied().unwrap_or(0), i, input))
                .collect();
            shuffled.sort_by_key(|(arrival, i, _)| (*arrival, *i));
            let mut joiner = Joiner::new(config);
            let mut actual = run(&mut joiner, shuffled.into_iter().map(|(_, _, input)| input).collect());
            actual.extend(joiner.flush());

            let key = |e: &EnrichedSession| (e.watermark, e.session.session_id.clone());
            expected.sort_by_key(key);
            actual.sort_by_key(key);
            prop_assert_eq!(expected, actual);
        }

        /// With progress markers, any interleaving of the session and EDR streams (each in its
        /// own order, one arbitrarily far ahead of the other) gives the same output, with no
        /// lateness allowed at all.
        #[test]
        fn with_markers_the_output_does_not_depend_on_how_far_one_stream_runs_ahead(
            picks in proptest::collection::vec(any::<bool>(), 120)
        ) {
            let config = JoinConfig { allowed_lateness_ms: 0, ..JoinConfig::default() };
            let mut context = None;
            let mut sessions = std::collections::VecDeque::new();
            let mut events = std::collections::VecDeque::new();
            for input in scenario() {
                let time = input.event_time();
                match input {
                    JoinInput::Session(_) => {
                        sessions.push_back(vec![Ok(input), Err((0, marker("raw.proxy", time)))]);
                    }
                    JoinInput::Event(_) => {
                        events.push_back(vec![Ok(input), Err((1, marker("raw.edr", time)))]);
                    }
                    JoinInput::Context(_) => {
                        context = Some(vec![Ok(input), Err((2, marker("raw.mdm", time)))]);
                    }
                }
            }
            let head: Vec<_> = context.into_iter().flatten().collect();
            let mut reference = head.clone();
            reference.extend(events.iter().flatten().cloned());
            reference.extend(sessions.iter().flatten().cloned());
            let mut interleaved = head;
            let mut picks = picks.into_iter();
            while !sessions.is_empty() || !events.is_empty() {
                let from_sessions = events.is_empty() || (!sessions.is_empty() && picks.next().unwrap_or(true));
                let next = if from_sessions { sessions.pop_front() } else { events.pop_front() };
                interleaved.extend(next.into_iter().flatten());
            }
            let expected = run_marked(&mut Joiner::new(config.clone()), reference);
            let actual = run_marked(&mut Joiner::new(config), interleaved);
            let key = |e: &EnrichedSession| (e.watermark, e.session.session_id.clone());
            let (mut expected, mut actual) = (expected, actual);
            expected.sort_by_key(key);
            actual.sort_by_key(key);
            prop_assert_eq!(expected, actual);
        }
    }
}
