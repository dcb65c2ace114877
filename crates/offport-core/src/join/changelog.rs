//! The joiner's state in its changelog: devices, pending sessions, the progress of the raw
//! sources and the meta record.

use super::*;

/// Keys changed since the last [`Durable::drain_changes`].
#[derive(Debug, Default)]
pub(crate) struct Journal {
    pub(crate) devices: FxHashSet<String>,
    /// Pending sessions added (`true`) or emitted (`false`) since the last drain; a session
    /// added and emitted between two drains leaves no trace.
    pub(crate) sessions: FxHashMap<(EpochMillis, String), bool>,
    pub(crate) meta: bool,
    pub(crate) sources: bool,
}

impl Journal {
    pub(crate) fn device(&mut self, id: &str) {
        if !self.devices.contains(id) {
            self.devices.insert(id.to_string());
        }
    }

    pub(crate) fn session_added(&mut self, key: &(EpochMillis, String)) {
        self.sessions.insert(key.clone(), true);
    }

    pub(crate) fn session_emitted(&mut self, key: (EpochMillis, String)) {
        if self.sessions.get(&key) == Some(&true) {
            self.sessions.remove(&key);
        } else {
            self.sessions.insert(key, false);
        }
    }
}

/// The changelog form of a device's state: interned keys replaced by the names.
#[derive(Debug, Deserialize)]
pub(crate) struct DeviceSnapshot {
    pub(crate) lock: Timeline<()>,
    pub(crate) interactions: Timeline<()>,
    pub(crate) mdm: Vec<(u64, MdmRecordWire)>,
    pub(crate) apps: Vec<(String, AppState)>,
}

/// [`DeviceSnapshot`] as written: the same fields, borrowed from the live state (no copy of
/// the timelines per write).
#[derive(Serialize)]
pub(crate) struct DeviceSnapshotRef<'a> {
    pub(crate) lock: &'a Timeline<()>,
    pub(crate) interactions: &'a Timeline<()>,
    pub(crate) mdm: Vec<(u64, MdmRecordWireRef<'a>)>,
    pub(crate) apps: Vec<(&'a str, &'a AppState)>,
}

/// An MDM record as the changelog holds it: a `DeviceContext`'s fields with its apps as
/// [`ManagedApp`]s, names as text. A changelog written when the join kept whole records reads
/// the same; what the join does not keep is dropped on restore.
#[derive(Debug, Deserialize)]
pub(crate) struct MdmRecordWire {
    supervised: Option<bool>,
    device_group: Option<String>,
    device_role: Option<String>,
    apps: Vec<ManagedApp>,
    complete: bool,
}

/// [`MdmRecordWire`] as written, from a kept [`MdmRecord`]: the fields the join does not keep
/// are empty, and an installed-only app has its status.
#[derive(Serialize)]
pub(crate) struct MdmRecordWireRef<'a> {
    supervised: Option<bool>,
    device_group: Option<&'a str>,
    device_role: Option<&'a str>,
    apps: Vec<ManagedAppRef<'a>>,
    complete: bool,
}

/// [`ManagedApp`]'s layout, borrowed.
#[derive(Serialize)]
struct ManagedAppRef<'a> {
    app_id: &'a str,
    name: Option<&'a str>,
    version: Option<&'a str>,
    managed: bool,
    approved: Option<bool>,
    status: Option<&'a str>,
    management_flags: Option<i32>,
    category: Option<&'a str>,
    service_class: Option<&'a str>,
}

impl MdmRecordWire {
    /// The record as the join keeps it.
    fn kept(self, names: &mut Interner) -> MdmRecord {
        MdmRecord::of_parts(
            MdmParts {
                supervised: self.supervised,
                device_group: self.device_group.as_deref(),
                device_role: self.device_role.as_deref(),
                apps: &self.apps,
                complete: self.complete,
            },
            names,
        )
    }
}

impl<'a> MdmRecordWireRef<'a> {
    fn of(record: &MdmRecord, names: &'a Interner) -> Self {
        let name = |key: Option<NameKey>| key.map(|k| names.name(k));
        MdmRecordWireRef {
            supervised: record.supervised,
            device_group: name(record.device_group),
            device_role: name(record.device_role),
            apps: record
                .apps
                .iter()
                .map(|app| ManagedAppRef {
                    app_id: names.name(app.app),
                    name: None,
                    version: None,
                    managed: app.managed,
                    approved: app.approved,
                    status: app
                        .installed_only
                        .then_some(crate::model::INSTALLED_ONLY_STATUS),
                    management_flags: None,
                    category: name(app.category),
                    service_class: name(app.service_class),
                })
                .collect(),
            complete: record.complete,
        }
    }
}

/// The changelog form of the join's clocks.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct JoinMeta {
    pub(crate) max_event_time: Option<EpochMillis>,
    pub(crate) watermark: Option<EpochMillis>,
    pub(crate) pruned_at: Option<EpochMillis>,
    pub(crate) cutoff: Option<EpochMillis>,
}

pub(crate) const DEVICE_PREFIX: &str = "device/";

pub(crate) const SESSION_PREFIX: &str = "session/";

pub(crate) const META_KEY: &str = "meta";

pub(crate) const SOURCES_KEY: &str = "sources";

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
            match self.pending.get_mut(&pending_key).filter(|_| added) {
                Some(session) => {
                    // The id goes back into the waiting session while it is written, rather
                    // than the session being copied whole.
                    session.session_id = pending_key.1;
                    changes.push(durable::put(key, &*session));
                    session.session_id = String::new();
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
            let mdm = Timeline {
                entries: snapshot
                    .mdm
                    .into_iter()
                    .map(|(at, record)| (at, record.kept(&mut self.names)))
                    .collect(),
            };
            self.devices.insert(
                id.to_string(),
                DeviceState {
                    lock: snapshot.lock,
                    interactions: snapshot.interactions,
                    mdm,
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
    /// A device's state as the changelog writes it, app ids by name.
    fn snapshot<'a>(&'a self, device: &'a DeviceState) -> DeviceSnapshotRef<'a> {
        DeviceSnapshotRef {
            lock: &device.lock,
            interactions: &device.interactions,
            mdm: device
                .mdm
                .entries
                .iter()
                .map(|(at, record)| (*at, MdmRecordWireRef::of(record, &self.names)))
                .collect(),
            apps: device
                .apps
                .iter()
                .map(|(key, state)| (self.names.name(*key), state))
                .collect(),
        }
    }
}
