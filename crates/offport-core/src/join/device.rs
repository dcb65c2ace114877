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

/// An app id interned by the joiner ([`Interner`]): devices key their app state by it.
pub(crate) type AppKey = NameKey;

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
            // One slot at a time: a device talks through a handful of apps, and a doubling
            // vector's spare slots (80 bytes each) would outweigh most of their timelines.
            self.apps.reserve_exact(1);
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
        .map(|(_, r)| r.apps.capacity() * std::mem::size_of::<KeptApp>())
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

/// The parts of a DeviceContext the join keeps, names interned ([`Interner`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct MdmRecord {
    pub(crate) supervised: Option<bool>,
    pub(crate) device_group: Option<NameKey>,
    pub(crate) device_role: Option<NameKey>,
    pub(crate) apps: Vec<KeptApp>,
    pub(crate) complete: bool,
}

/// What the join reads of an app an MDM record lists: [`mdm_as_of`]'s answer for it. Its
/// display name, version, verbatim status and management flags are not kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct KeptApp {
    pub(crate) app: AppKey,
    pub(crate) managed: bool,
    pub(crate) approved: Option<bool>,
    /// Listed by an installed-apps inventory only ([`crate::model::INSTALLED_ONLY_STATUS`]):
    /// present, management unknown.
    pub(crate) installed_only: bool,
    pub(crate) category: Option<NameKey>,
    pub(crate) service_class: Option<NameKey>,
}

impl KeptApp {
    pub(crate) fn kept(app: &ManagedApp, names: &mut Interner) -> Self {
        Self {
            app: names.intern(&app.app_id),
            managed: app.managed,
            approved: app.approved,
            installed_only: app.status.as_deref() == Some(crate::model::INSTALLED_ONLY_STATUS),
            category: app.category.as_deref().map(|c| names.intern(c)),
            service_class: app.service_class.as_deref().map(|c| names.intern(c)),
        }
    }
}

impl MdmRecord {
    /// What the join keeps of `context`.
    pub(crate) fn kept(context: &DeviceContext, names: &mut Interner) -> Self {
        Self::of_parts(
            MdmParts {
                supervised: context.supervised,
                device_group: context.device_group.as_deref(),
                device_role: context.device_role.as_deref(),
                apps: &context.apps,
                complete: context.inventory_complete,
            },
            names,
        )
    }

    /// What the join keeps of a record's parts, names interned.
    pub(crate) fn of_parts(parts: MdmParts<'_>, names: &mut Interner) -> Self {
        Self {
            supervised: parts.supervised,
            device_group: parts.device_group.map(|g| names.intern(g)),
            device_role: parts.device_role.map(|r| names.intern(r)),
            apps: parts
                .apps
                .iter()
                .map(|app| KeptApp::kept(app, names))
                .collect(),
            complete: parts.complete,
        }
    }
}

/// An MDM record's parts as a `DeviceContext` or the changelog gives them.
pub(crate) struct MdmParts<'a> {
    pub(crate) supervised: Option<bool>,
    pub(crate) device_group: Option<&'a str>,
    pub(crate) device_role: Option<&'a str>,
    pub(crate) apps: &'a [ManagedApp],
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
    into.device_group = record.device_group.or(into.device_group);
    into.device_role = record.device_role.or(into.device_role);
    if record.complete {
        into.complete = true;
        into.apps.clear();
    }
    for app in record.apps {
        match into.apps.iter_mut().find(|a| a.app == app.app) {
            Some(_) if app.installed_only => {}
            Some(slot) => *slot = app,
            None => into.apps.push(app),
        }
    }
}

/// Folds the MDM records up to `at`: a complete inventory resets the app list, a partial one
/// updates the apps it lists; device fields take the latest non-null value. `app` is the
/// session's app id interned (`None` when it has none, or no record ever named it).
pub(crate) fn mdm_as_of(
    device: &DeviceState,
    names: &Interner,
    app: Option<AppKey>,
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
    let mut found: Option<&KeptApp> = None;
    for (_, record) in records {
        supervised = record.supervised.or(supervised);
        group = record.device_group.or(group);
        role = record.device_role.or(role);
        if record.complete {
            found = None;
        }
        if let Some(key) = app {
            if let Some(listed) = record.apps.iter().find(|a| a.app == key) {
                // An installed-apps inventory says the app is there, not whether it is managed:
                // it does not replace an earlier management answer.
                if !(listed.installed_only && found.is_some()) {
                    found = Some(listed);
                }
            }
        }
    }
    let name = |key: Option<NameKey>| key.map(|k| names.name(k).to_string());
    Some(MdmContext {
        managed: found.map(|a| a.managed),
        approved: found.and_then(|a| a.approved),
        supervised,
        device_group: name(group),
        device_role: name(role),
        app_category: name(found.and_then(|a| a.category)),
        service_class: name(found.and_then(|a| a.service_class)),
        as_of,
    })
}
