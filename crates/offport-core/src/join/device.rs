//! A device's state: its lock and interaction timelines, its MDM records and its apps'
//! lifecycle, background work and API calls; and the as-of answers the join reads from them.

use super::*;

/// Payload of an app lifecycle entry; equal times order NotRunning, Background, Foreground.
pub(crate) fn lifecycle_rank(state: AppRunState) -> u64 {
    match state {
        AppRunState::NotRunning => 0,
        AppRunState::Background => 1,
        AppRunState::Foreground => 2,
        AppRunState::Unknown => 3,
    }
}

pub(crate) fn lifecycle_state(rank: u64) -> AppRunState {
    match rank {
        0 => AppRunState::NotRunning,
        1 => AppRunState::Background,
        2 => AppRunState::Foreground,
        _ => AppRunState::Unknown,
    }
}

/// Payload of a lock entry; an unlock sorts before a lock at the same instant.
pub(crate) fn lock_rank(state: LockState) -> u64 {
    u64::from(state == LockState::Locked)
}

pub(crate) fn lock_of(rank: u64) -> LockState {
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
pub(crate) fn app_state_at(app: &AppState, at: EpochMillis, window: i64) -> AppRunState {
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
pub(crate) const BACKGROUND_KINDS: [DeviceEventKind; 5] = [
    DeviceEventKind::BackgroundJob,
    DeviceEventKind::WorkManager,
    DeviceEventKind::ForegroundServiceStart,
    DeviceEventKind::BackgroundRefresh,
    DeviceEventKind::PersistentService,
];

pub(crate) fn background_rank(kind: DeviceEventKind) -> Option<u64> {
    BACKGROUND_KINDS
        .iter()
        .position(|k| *k == kind)
        .and_then(|i| u64::try_from(i).ok())
}

pub(crate) fn background_kind(rank: u64) -> DeviceEventKind {
    usize::try_from(rank)
        .ok()
        .and_then(|i| BACKGROUND_KINDS.get(i))
        .copied()
        .unwrap_or(DeviceEventKind::Unknown)
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct AppState {
    /// Payload: [`lifecycle_rank`].
    pub(crate) lifecycle: Timeline<()>,
    /// Payload: [`background_rank`].
    pub(crate) background: Timeline<()>,
    /// Payload: networking-API calls (saturating at 2^20 - 1 per record).
    pub(crate) api_calls: Timeline<()>,
}

/// An app id interned by the joiner: devices key their app state by it.
pub(crate) type AppKey = u32;

#[derive(Debug, Clone, Default)]
pub(crate) struct DeviceState {
    /// Payload: [`lock_rank`].
    pub(crate) lock: Timeline<()>,
    pub(crate) interactions: Timeline<()>,
    /// Payload: 0 for a complete inventory, 1 for a partial update.
    pub(crate) mdm: Timeline<MdmRecord>,
    /// A device has few apps: a small vector beats a map in memory and speed.
    pub(crate) apps: Vec<(AppKey, AppState)>,
}

impl DeviceState {
    pub(crate) fn app(&self, key: AppKey) -> Option<&AppState> {
        self.apps.iter().find(|(k, _)| *k == key).map(|(_, a)| a)
    }

    pub(crate) fn app_mut(&mut self, key: AppKey) -> Option<&mut AppState> {
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
pub(crate) fn device_bytes(id: &str, d: &DeviceState) -> usize {
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
pub(crate) fn device_last_key(d: &DeviceState) -> u64 {
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
pub(crate) struct MdmRecord {
    pub(crate) supervised: Option<bool>,
    pub(crate) device_group: Option<String>,
    pub(crate) device_role: Option<String>,
    pub(crate) apps: Vec<ManagedApp>,
    pub(crate) complete: bool,
}

/// Drops the MDM records older than `cutoff` but the last, folded into that one: a group an
/// old report (or an inventory entry) gave and later reports do not repeat stays known, and
/// [`mdm_as_of`] answers as it did for every time the kept records cover.
pub(crate) fn prune_mdm(mdm: &mut Timeline<MdmRecord>, cutoff: EpochMillis) {
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
pub(crate) fn fold_into(into: &mut MdmRecord, record: MdmRecord) {
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
pub(crate) fn mdm_as_of(
    device: &DeviceState,
    app_id: Option<&str>,
    at: EpochMillis,
) -> Option<MdmContext> {
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
