//! MDM reports into [`DeviceContext`]: supervision, group/role, device facts and app inventory.
//!
//! Formats, detected per record:
//!
//! - **MicroMDM / NanoMDM webhook** JSON (`topic`, `created_at`, `acknowledge_event` with
//!   `udid`, `status`, `command_uuid` and `raw_payload`, the base64 of the plist the device
//!   answered). Answers read: `InstalledApplicationList`, `ManagedApplicationList` and
//!   `DeviceInformation` (`QueryResponses`: `UDID`, `SerialNumber`, `IsSupervised`,
//!   `OSVersion`). Check-in events (`checkin_event`: Authenticate, TokenUpdate, CheckOut), `Idle`
//!   and `NotNow` acknowledgements and answers to other commands carry no context and produce
//!   nothing; an `Error` acknowledgement produces nothing either (the device refused the
//!   query). The device id is the UDID unless the record has an `offport.device_id` header or
//!   a key.
//! - **Android Management API** `Device` resource JSON (as `enterprises.devices.get` returns it
//!   and as a Pub/Sub `STATUS_REPORT` notification carries it, bare or in a Pub/Sub push
//!   envelope `{"message":{"data": base64}}`): `managementMode` `DEVICE_OWNER` means fully
//!   managed (supervised), `applicationReports` the apps in the managed scope. The device id is
//!   the header or key, else the last segment of `name`.
//! - **offport MDM JSON**, the documented reference format (docs/formats.md).
//! - **offport device inventory** entries (`"kind": "offport.inventory.v1"`: a device's group,
//!   role and owner as the organisation keeps them), which `offportctl inventory publish`
//!   writes to the compacted inventory topic: see [`InventoryEntry`]. They become contexts
//!   with only a group and role, in force from their `effective_time` (2000-01-01 when none
//!   is given, so that a replay of history sees them).
//!
//! Inventory rules: a `ManagedApplicationList` is the complete list of managed apps
//! (`inventory_complete`); an app is managed when its `Status` is `Managed` or an update of a
//! managed app is under way. An `InstalledApplicationList` says which apps are present, not
//! whether they are managed: its apps carry the status [`INSTALLED_ONLY`] and `managed=false`,
//! and the join never lets such an entry replace a management answer for the same app.

use base64::Engine;
use serde::Deserialize;

use super::{
    check_device_id, check_platform, check_time, time_from_text, trimmed, value_of, JsonTime,
    Limits, Normalized, Normalizer, RawRecord, Rejection,
};
use crate::model::{DeviceContext, EpochMillis, ManagedApp, Platform, SourceFormat};

/// Status of an app known only from an installed-apps inventory (not a management answer).
pub const INSTALLED_ONLY: &str = crate::model::INSTALLED_ONLY_STATUS;

// ---- offport MDM JSON -------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextJson {
    device_id: Option<String>,
    platform: Option<String>,
    supervised: Option<bool>,
    device_group: Option<String>,
    device_role: Option<String>,
    serial_number: Option<String>,
    udid: Option<String>,
    os_version: Option<String>,
    #[serde(default)]
    apps: Vec<AppJson>,
    #[serde(default)]
    inventory_complete: bool,
    event_time: Option<JsonTime>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppJson {
    app_id: Option<String>,
    name: Option<String>,
    version: Option<String>,
    managed: Option<bool>,
    approved: Option<bool>,
    status: Option<String>,
    management_flags: Option<i32>,
    category: Option<String>,
    service_class: Option<String>,
}

fn offport_json(
    record: &RawRecord<'_>,
    value: serde_json::Value,
    ingest_time: EpochMillis,
) -> Result<DeviceContext, Rejection> {
    let json: ContextJson = serde_json::from_value(value)
        .map_err(|e| Rejection::unparseable(format!("not an offport MDM context JSON: {e}")))?;
    let device_id = check_device_id(
        trimmed(json.device_id)
            .as_deref()
            .or(record.outside_device()),
    )?;
    let event_time = match json.event_time {
        Some(JsonTime::At(at)) => at,
        Some(JsonTime::Invalid(value)) => {
            return Err(Rejection::unparseable(format!(
                "event_time={value} is neither RFC 3339 text nor epoch seconds/milliseconds"
            )))
        }
        None => return Err(Rejection::unparseable("no event_time")),
    };
    check_time("event_time", event_time, ingest_time)?;
    let apps = json
        .apps
        .into_iter()
        .enumerate()
        .map(|(index, app)| {
            let app_id = trimmed(app.app_id)
                .ok_or_else(|| Rejection::unparseable(format!("apps[{index}] has no app_id")))?;
            let managed = app.managed.ok_or_else(|| {
                Rejection::unparseable(format!("apps[{index}] ({app_id}) has no managed flag"))
            })?;
            Ok(ManagedApp {
                app_id,
                name: trimmed(app.name),
                version: trimmed(app.version),
                managed,
                approved: app.approved,
                status: trimmed(app.status),
                management_flags: app.management_flags,
                category: trimmed(app.category),
                service_class: trimmed(app.service_class),
            })
        })
        .collect::<Result<Vec<_>, Rejection>>()?;
    Ok(DeviceContext {
        device_id,
        platform: check_platform(json.platform.as_deref())?,
        supervised: json.supervised,
        device_group: trimmed(json.device_group),
        device_role: trimmed(json.device_role),
        serial_number: trimmed(json.serial_number),
        udid: trimmed(json.udid),
        os_version: trimmed(json.os_version),
        apps,
        inventory_complete: json.inventory_complete,
        event_time,
        ingest_time,
        source_format: SourceFormat::OffportJson,
        source_ref: record.source_ref(),
    })
}

// ---- offport device inventory ----------------------------------------------------------

/// The `kind` of an inventory entry on the wire.
pub const INVENTORY_KIND: &str = "offport.inventory.v1";

/// One device of the organisation's inventory: what the MDM does not say (MicroMDM has no
/// groups; the Android Management API only a policy). A DEVICE_GROUP-scoped baseline matches
/// the device's `group` or its `role`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryEntry {
    /// Device id, as the other sources name the device (compared in lower case).
    pub device_id: String,
    /// Device group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Device role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Owner (kept on the topic for people; the analytics do not read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// From when the entry holds (epoch ms); `None`: from 2000-01-01.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_time: Option<EpochMillis>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InventoryWire {
    kind: String,
    device_id: Option<String>,
    group: Option<String>,
    role: Option<String>,
    owner: Option<String>,
    effective_time: Option<JsonTime>,
}

/// An inventory file's row before its time is read.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InventoryRow {
    device_id: Option<String>,
    group: Option<String>,
    role: Option<String>,
    owner: Option<String>,
    effective_time: Option<JsonTime>,
}

impl InventoryEntry {
    /// The entry as the raw record `offportctl inventory publish` writes (keyed by the
    /// device id).
    pub fn to_raw_json(&self) -> String {
        // Built as a JSON value, whose text cannot fail, with the optional fields left out
        // when absent as the file format has them.
        let mut map = serde_json::Map::new();
        map.insert("kind".into(), INVENTORY_KIND.into());
        map.insert("device_id".into(), self.device_id.clone().into());
        for (key, value) in [
            ("group", &self.group),
            ("role", &self.role),
            ("owner", &self.owner),
        ] {
            if let Some(value) = value {
                map.insert(key.into(), value.clone().into());
            }
        }
        if let Some(at) = self.effective_time {
            map.insert("effective_time".into(), at.into());
        }
        serde_json::Value::Object(map).to_string()
    }

    /// The id the topic is keyed by: the device id in lower case (see
    /// [`super::canonical_device_ids`]).
    pub fn key(&self) -> String {
        self.device_id.to_ascii_lowercase()
    }
}

/// A bad inventory file: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {why}")]
pub struct InventoryError {
    /// The header, row or entry at fault.
    pub place: String,
    /// What is wrong with it.
    pub why: String,
}

/// Reads an inventory file: a YAML list of entries, or CSV with a header naming the columns
/// (`device_id` required; `group`, `role`, `owner`, `effective_time` optional; times RFC 3339
/// or epoch seconds/milliseconds). Names every bad row; a device listed twice is refused.
pub fn parse_inventory(text: &str) -> Result<Vec<InventoryEntry>, InventoryError> {
    let at = |place: &str, why: String| InventoryError {
        place: place.to_string(),
        why,
    };
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_default();
    let rows: Vec<(String, InventoryRow)> = if first.starts_with("device_id") && first.contains(',')
    {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .comment(Some(b'#'))
            .from_reader(text.as_bytes());
        let headers = reader
            .headers()
            .map_err(|e| at("CSV header", e.to_string()))?
            .clone();
        let mut rows = Vec::new();
        for (index, row) in reader.records().enumerate() {
            let row = row.map_err(|e| at(&format!("CSV row {}", index + 2), e.to_string()))?;
            let mut map = serde_json::Map::new();
            for (name, field) in headers.iter().zip(row.iter()) {
                if !field.is_empty() {
                    map.insert(name.to_string(), serde_json::json!(field));
                }
            }
            let parsed: InventoryRow = serde_json::from_value(serde_json::Value::Object(map))
                .map_err(|e| at(&format!("CSV row {}", index + 2), e.to_string()))?;
            rows.push((format!("CSV row {}", index + 2), parsed));
        }
        rows
    } else {
        let list: Vec<InventoryRow> =
            serde_yaml_ng::from_str(text).map_err(|e| at("YAML", e.to_string()))?;
        list.into_iter()
            .enumerate()
            .map(|(i, row)| (format!("entry {}", i + 1), row))
            .collect()
    };
    let mut seen = std::collections::BTreeMap::new();
    let mut entries = Vec::with_capacity(rows.len());
    for (place, row) in rows {
        let device_id =
            trimmed(row.device_id).ok_or_else(|| at(&place, "no device_id".to_string()))?;
        let effective_time = match row.effective_time {
            Some(JsonTime::At(time)) => Some(time),
            Some(JsonTime::Invalid(value)) => {
                return Err(at(
                    &format!("{place} ({device_id})"),
                    format!("effective_time={value} is neither RFC 3339 text nor epoch seconds/milliseconds"),
                ))
            }
            None => None,
        };
        if let Some(earlier) = seen.insert(
            (device_id.to_ascii_lowercase(), effective_time),
            place.clone(),
        ) {
            return Err(at(
                &place,
                format!("{device_id} is listed twice for the same effective_time (also {earlier})"),
            ));
        }
        entries.push(InventoryEntry {
            device_id,
            group: trimmed(row.group),
            role: trimmed(row.role),
            owner: trimmed(row.owner),
            effective_time,
        });
    }
    Ok(entries)
}

fn inventory(
    record: &RawRecord<'_>,
    value: serde_json::Value,
    ingest_time: EpochMillis,
) -> Result<DeviceContext, Rejection> {
    let wire: InventoryWire = serde_json::from_value(value)
        .map_err(|e| Rejection::unparseable(format!("not an offport inventory entry: {e}")))?;
    if wire.kind != INVENTORY_KIND {
        return Err(Rejection::unparseable(format!(
            "kind={:?} is not {INVENTORY_KIND}",
            wire.kind
        )));
    }
    let device_id = check_device_id(
        trimmed(wire.device_id)
            .as_deref()
            .or(record.outside_device()),
    )?;
    let event_time = match wire.effective_time {
        Some(JsonTime::At(at)) => at,
        Some(JsonTime::Invalid(value)) => {
            return Err(Rejection::unparseable(format!(
                "effective_time={value} is neither RFC 3339 text nor epoch seconds/milliseconds"
            )))
        }
        None => super::EARLIEST_TIME,
    };
    check_time("effective_time", event_time, ingest_time)?;
    // The owner stays on the topic: nothing downstream reads it.
    let _ = wire.owner;
    Ok(DeviceContext {
        device_id,
        platform: Platform::Unknown,
        supervised: None,
        device_group: trimmed(wire.group),
        device_role: trimmed(wire.role),
        serial_number: None,
        udid: None,
        os_version: None,
        apps: Vec::new(),
        inventory_complete: false,
        event_time,
        ingest_time,
        source_format: SourceFormat::OffportInventory,
        source_ref: record.source_ref(),
    })
}

// ---- MicroMDM / NanoMDM webhook --------------------------------------------------------

#[derive(Debug, Deserialize)]
struct Webhook {
    topic: Option<String>,
    created_at: Option<String>,
    acknowledge_event: Option<Acknowledge>,
    /// Read only to check its shape: check-ins carry no context.
    #[allow(dead_code)]
    checkin_event: Option<Checkin>,
}

/// A check-in event's envelope (Authenticate, TokenUpdate, CheckOut).
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Checkin {
    udid: Option<String>,
    enrollment_id: Option<String>,
    raw_payload: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Acknowledge {
    udid: Option<String>,
    /// NanoMDM's user-channel events name the enrollment instead of the device.
    enrollment_id: Option<String>,
    status: Option<String>,
    raw_payload: Option<String>,
}

/// The plist answer, with the keys offport reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    #[serde(rename = "UDID")]
    udid: Option<String>,
    installed_application_list: Option<Vec<InstalledApp>>,
    managed_application_list: Option<std::collections::BTreeMap<String, ManagedEntry>>,
    query_responses: Option<QueryResponses>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InstalledApp {
    identifier: Option<String>,
    name: Option<String>,
    short_version: Option<String>,
    version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManagedEntry {
    status: Option<String>,
    management_flags: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct QueryResponses {
    #[serde(rename = "UDID")]
    udid: Option<String>,
    serial_number: Option<String>,
    is_supervised: Option<bool>,
    #[serde(rename = "OSVersion")]
    os_version: Option<String>,
}

/// `ManagedApplicationList` statuses of an app under management (installed, or a managed
/// update under way).
const MANAGED_STATUSES: [&str; 6] = [
    "Managed",
    "PromptingForUpdate",
    "PromptingForUpdateLogin",
    "ValidatingUpdate",
    "Updating",
    "PromptingForManagementChange",
];

fn webhook(
    record: &RawRecord<'_>,
    value: serde_json::Value,
    ingest_time: EpochMillis,
) -> Result<Option<DeviceContext>, Rejection> {
    let hook: Webhook = serde_json::from_value(value)
        .map_err(|e| Rejection::unparseable(format!("not a MicroMDM webhook event: {e}")))?;
    let Some(ack) = hook.acknowledge_event else {
        // Check-ins (and topics offport does not read) carry no context.
        return Ok(None);
    };
    let topic = hook.topic.unwrap_or_default();
    let created = trimmed(hook.created_at)
        .ok_or_else(|| Rejection::unparseable(format!("{topic} event without created_at")))?;
    let event_time = time_from_text(&created)
        .ok_or_else(|| Rejection::unparseable(format!("created_at={created:?} is not RFC 3339")))?;
    check_time("created_at", event_time, ingest_time)?;
    if ack.status.as_deref() != Some("Acknowledged") {
        return Ok(None);
    }
    let Some(payload) = trimmed(ack.raw_payload) else {
        return Ok(None);
    };
    let plist_bytes = base64::engine::general_purpose::STANDARD
        .decode(payload.as_bytes())
        .map_err(|e| Rejection::unparseable(format!("raw_payload is not base64: {e}")))?;
    let answer: Answer = plist::from_bytes(&plist_bytes)
        .map_err(|e| Rejection::unparseable(format!("raw_payload is not a plist answer: {e}")))?;
    let udid = trimmed(ack.udid).or(trimmed(answer.udid.clone()));
    let enrollment = trimmed(ack.enrollment_id);
    let device_id = check_device_id(
        record
            .outside_device()
            .or(udid.as_deref())
            .or(enrollment.as_deref()),
    )?;
    let mut context = DeviceContext {
        device_id,
        platform: Platform::Ios,
        supervised: None,
        device_group: None,
        device_role: None,
        serial_number: None,
        udid,
        os_version: None,
        apps: Vec::new(),
        inventory_complete: false,
        event_time,
        ingest_time,
        source_format: SourceFormat::MicromdmWebhook,
        source_ref: record.source_ref(),
    };
    if let Some(list) = answer.managed_application_list {
        context.inventory_complete = true;
        context.apps = list
            .into_iter()
            .map(|(app_id, entry)| {
                let managed = entry
                    .status
                    .as_deref()
                    .is_some_and(|s| MANAGED_STATUSES.contains(&s));
                ManagedApp {
                    app_id,
                    name: None,
                    version: None,
                    managed,
                    approved: None,
                    status: entry.status,
                    management_flags: entry.management_flags.and_then(|f| i32::try_from(f).ok()),
                    category: None,
                    service_class: None,
                }
            })
            .collect();
    } else if let Some(list) = answer.installed_application_list {
        context.apps = list
            .into_iter()
            .filter_map(|app| {
                Some(ManagedApp {
                    app_id: trimmed(app.identifier)?,
                    name: trimmed(app.name),
                    version: trimmed(app.short_version).or(trimmed(app.version)),
                    managed: false,
                    approved: None,
                    status: Some(INSTALLED_ONLY.to_string()),
                    management_flags: None,
                    category: None,
                    service_class: None,
                })
            })
            .collect();
    } else if let Some(info) = answer.query_responses {
        context.supervised = info.is_supervised;
        context.serial_number = trimmed(info.serial_number);
        context.os_version = trimmed(info.os_version);
        context.udid = context.udid.or(trimmed(info.udid));
    } else {
        // An answer to a command offport does not read.
        return Ok(None);
    }
    Ok(Some(context))
}

// ---- Android Management API ------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmapiDevice {
    name: Option<String>,
    management_mode: Option<String>,
    policy_name: Option<String>,
    applied_policy_name: Option<String>,
    last_status_report_time: Option<String>,
    last_policy_sync_time: Option<String>,
    enrollment_time: Option<String>,
    hardware_info: Option<HardwareInfo>,
    software_info: Option<SoftwareInfo>,
    #[serde(default)]
    application_reports: Vec<ApplicationReport>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HardwareInfo {
    serial_number: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SoftwareInfo {
    android_version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApplicationReport {
    package_name: Option<String>,
    display_name: Option<String>,
    version_name: Option<String>,
    state: Option<String>,
    application_source: Option<String>,
    installer_package_name: Option<String>,
}

/// The package of the Google Play Store, the installer of managed Play apps.
const PLAY_STORE: &str = "com.android.vending";

/// Whether an Android Management API application report describes a managed app: one from
/// (managed) Google Play or the system image. `APPLICATION_SOURCE_UNSPECIFIED` is the API's
/// word for "sideloaded from an unspecified source": not managed. Without a source, the
/// installer decides (the Play Store, or none for a system app, is managed; any other
/// installer is a sideload); with neither, the report's scope (the work profile or the fully
/// managed device) stands for it: managed.
fn amapi_managed(report: &ApplicationReport) -> bool {
    match report.application_source.as_deref() {
        Some(
            "INSTALLED_FROM_PLAY_STORE"
            | "SYSTEM_APP_FACTORY_VERSION"
            | "SYSTEM_APP_UPDATED_VERSION",
        ) => true,
        Some(_) => false,
        None => report
            .installer_package_name
            .as_deref()
            .is_none_or(|installer| installer == PLAY_STORE),
    }
}

/// An Android device's group: the id of the policy applied to it (`appliedPolicyName`, else
/// `policyName`: `enterprises/{enterprise}/policies/{policy}`). Organisations give each group of
/// devices its policy, so the policy id is the group a DEVICE_GROUP baseline names
/// (`fleet-default`, `developers`).
fn amapi_group(policy: Option<&str>) -> Option<String> {
    let id = policy?.trim().rsplit_once("/policies/")?.1.trim();
    (!id.is_empty() && !id.contains('/')).then(|| id.to_string())
}

/// The Device JSON inside a Pub/Sub push envelope, or the value itself.
fn unwrap_pubsub(value: serde_json::Value) -> Result<serde_json::Value, Rejection> {
    let Some(data) = value
        .get("message")
        .and_then(|m| m.get("data"))
        .and_then(|d| d.as_str())
    else {
        return Ok(value);
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.as_bytes())
        .map_err(|e| Rejection::unparseable(format!("Pub/Sub message.data is not base64: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Rejection::unparseable(format!("Pub/Sub message.data is not a Device JSON: {e}"))
    })
}

fn amapi(
    record: &RawRecord<'_>,
    value: serde_json::Value,
    ingest_time: EpochMillis,
) -> Result<DeviceContext, Rejection> {
    let device: AmapiDevice = serde_json::from_value(unwrap_pubsub(value)?).map_err(|e| {
        Rejection::unparseable(format!("not an Android Management API Device: {e}"))
    })?;
    let enrollment = match device.name.as_deref().map(str::trim) {
        None => None,
        Some(name) => match name.split('/').collect::<Vec<_>>()[..] {
            ["enterprises", enterprise, "devices", id]
                if !enterprise.is_empty() && !id.is_empty() =>
            {
                Some(id)
            }
            _ => {
                return Err(Rejection::new(
                    crate::model::DeadLetterReason::MissingDeviceId,
                    format!("name={name:?} is not enterprises/{{enterprise}}/devices/{{device}}"),
                ))
            }
        },
    };
    let device_id = check_device_id(record.outside_device().or(enrollment))?;
    let time_text = trimmed(device.last_status_report_time)
        .or(trimmed(device.last_policy_sync_time))
        .or(trimmed(device.enrollment_time))
        .ok_or_else(|| {
            Rejection::unparseable(
                "Device without lastStatusReportTime, lastPolicySyncTime or enrollmentTime",
            )
        })?;
    let event_time = time_from_text(&time_text)
        .ok_or_else(|| Rejection::unparseable(format!("{time_text:?} is not an RFC 3339 time")))?;
    check_time("lastStatusReportTime", event_time, ingest_time)?;
    let apps = device
        .application_reports
        .into_iter()
        .enumerate()
        .filter(|(_, r)| r.state.as_deref() != Some("REMOVED"))
        .map(|(index, report)| {
            let managed = amapi_managed(&report);
            let status = [
                report.state.as_deref(),
                report.application_source.as_deref(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
            Ok(ManagedApp {
                app_id: trimmed(report.package_name).ok_or_else(|| {
                    Rejection::unparseable(format!(
                        "applicationReports[{index}] has no packageName"
                    ))
                })?,
                name: trimmed(report.display_name),
                version: trimmed(report.version_name),
                managed,
                approved: None,
                status: (!status.is_empty()).then_some(status),
                management_flags: None,
                category: None,
                service_class: None,
            })
        })
        .collect::<Result<Vec<_>, Rejection>>()?;
    Ok(DeviceContext {
        device_id,
        platform: Platform::Android,
        supervised: device
            .management_mode
            .as_deref()
            .map(|mode| mode == "DEVICE_OWNER"),
        device_group: amapi_group(
            device
                .applied_policy_name
                .as_deref()
                .or(device.policy_name.as_deref()),
        ),
        device_role: None,
        serial_number: device.hardware_info.and_then(|h| trimmed(h.serial_number)),
        udid: enrollment.map(str::to_string),
        os_version: device
            .software_info
            .and_then(|s| trimmed(s.android_version)),
        apps,
        // Reports list every app in scope; apps missing from one are gone.
        inventory_complete: true,
        event_time,
        ingest_time,
        source_format: SourceFormat::AndroidManagementApi,
        source_ref: record.source_ref(),
    })
}

/// The normalizer of the raw MDM topic.
#[derive(Debug, Clone, Default)]
pub struct MdmNormalizer {
    /// Input bounds.
    pub limits: Limits,
}

impl MdmNormalizer {
    /// A normalizer within `limits`.
    pub fn new(limits: Limits) -> Self {
        Self { limits }
    }
}

impl Normalizer for MdmNormalizer {
    fn normalize(
        &mut self,
        record: &RawRecord<'_>,
        ingest_time: EpochMillis,
    ) -> Result<Vec<Normalized>, Rejection> {
        let bytes = value_of(record, &self.limits)?;
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            Rejection::new(
                crate::model::DeadLetterReason::UnknownFormat,
                format!("not JSON (MDM reports are MicroMDM webhook, Android Management API or offport JSON): {e}"),
            )
        })?;
        let is = |key: &str| value.get(key).is_some();
        let context = if value
            .get("kind")
            .and_then(|k| k.as_str())
            .is_some_and(|k| k.starts_with("offport.inventory"))
        {
            Some(inventory(record, value, ingest_time)?)
        } else if is("acknowledge_event") || is("checkin_event") {
            webhook(record, value, ingest_time)?
        } else if is("managementMode")
            || is("applicationReports")
            || value
                .get("name")
                .and_then(|n| n.as_str())
                .is_some_and(|n| n.starts_with("enterprises/"))
            || value.get("message").and_then(|m| m.get("data")).is_some()
        {
            Some(amapi(record, value, ingest_time)?)
        } else if value.is_object() {
            Some(offport_json(record, value, ingest_time)?)
        } else {
            return Err(Rejection::new(
                crate::model::DeadLetterReason::UnknownFormat,
                "not a JSON object",
            ));
        };
        super::canonical_device_ids(Ok(context.map(Normalized::Context).into_iter().collect()))
    }
}

#[cfg(test)]
mod tests;
