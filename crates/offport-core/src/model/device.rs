//! EDR events and MDM context of devices.

use super::*;

/// Kind of device or app activity reported by the mobile EDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "dev.offport.v1")]
#[allow(missing_docs)] // apache-avro-derive 0.22 rejects doc attributes on unit variants
pub enum DeviceEventKind {
    // App came to the foreground.
    AppForeground,
    // App went to the background.
    AppBackground,
    // App was stopped.
    AppStopped,
    // Device locked (keyguard shown).
    DeviceLocked,
    // Device unlocked (keyguard hidden).
    DeviceUnlocked,
    // Screen turned on.
    ScreenOn,
    // Screen turned off.
    ScreenOff,
    // The user touched or typed.
    UserInteraction,
    // JobScheduler job started.
    BackgroundJob,
    // WorkManager work started.
    WorkManager,
    // Foreground service started.
    ForegroundServiceStart,
    // Foreground service stopped.
    ForegroundServiceStop,
    // iOS background app refresh / BGTask.
    BackgroundRefresh,
    // A persistent service was activated.
    PersistentService,
    // Networking-API usage counts.
    NetworkApiUsage,
    // Anything else.
    Unknown,
}

/// Count of networking-framework calls an app made over a short window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct NetworkApiUsage {
    /// Framework or API observed.
    pub api: String,
    /// Number of calls in the window.
    pub call_count: i64,
    /// Window length in milliseconds, ending at the event time.
    pub window_ms: i64,
}

/// One device or app activity event from the mobile EDR, normalized. Keyed by `device_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct DeviceEvent {
    /// Stable identifier of the event.
    pub event_id: String,
    /// Device.
    pub device_id: String,
    /// Platform of the device.
    pub platform: Platform,
    /// App the event concerns; `None` for device-level events.
    pub app_id: Option<String>,
    /// What happened.
    pub kind: DeviceEventKind,
    /// Networking-API usage, for `NetworkApiUsage` events.
    pub network_api: Option<NetworkApiUsage>,
    /// Source-specific detail.
    pub detail: Option<String>,
    /// Event time.
    #[avro(with = timestamp_millis)]
    pub event_time: EpochMillis,
    /// When offport normalized the record.
    #[avro(with = timestamp_millis)]
    pub ingest_time: EpochMillis,
    /// Input format.
    pub source_format: SourceFormat,
    /// Where the raw record came from.
    pub source_ref: String,
}

/// One app in an MDM inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct ManagedApp {
    /// Package name or bundle id.
    pub app_id: String,
    /// Display name.
    pub name: Option<String>,
    /// Installed version.
    pub version: Option<String>,
    /// Managed by the MDM.
    pub managed: bool,
    /// Approved by the organisation; `None` when unknown.
    pub approved: Option<bool>,
    /// MDM status verbatim.
    pub status: Option<String>,
    /// Apple ManagementFlags.
    pub management_flags: Option<i32>,
    /// App category (AppNetworkBehaviorBaseline).
    pub category: Option<String>,
    /// Enterprise service class (AllowedServiceClasses).
    pub service_class: Option<String>,
}

/// [`ManagedApp::status`] of an app known only from an installed-apps inventory (iOS
/// `InstalledApplicationList`): present on the device, management unknown. Such an entry never
/// replaces a management answer for the same app (see the join).
pub const INSTALLED_ONLY_STATUS: &str = "InstalledApplicationList";

/// MDM context of a device: supervision, group/role and managed-app inventory. Keyed by
/// `device_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct DeviceContext {
    /// Device.
    pub device_id: String,
    /// Platform.
    pub platform: Platform,
    /// Supervised (iOS) or fully managed (Android); `None` when unknown.
    pub supervised: Option<bool>,
    /// Device group.
    pub device_group: Option<String>,
    /// Device role.
    pub device_role: Option<String>,
    /// Hardware serial number.
    pub serial_number: Option<String>,
    /// Apple UDID or Android enrollment id.
    pub udid: Option<String>,
    /// OS version.
    pub os_version: Option<String>,
    /// Apps reported by this record.
    pub apps: Vec<ManagedApp>,
    /// `apps` is the complete inventory and replaces the previous one.
    pub inventory_complete: bool,
    /// Event time.
    #[avro(with = timestamp_millis)]
    pub event_time: EpochMillis,
    /// When offport normalized the record.
    #[avro(with = timestamp_millis)]
    pub ingest_time: EpochMillis,
    /// Input format.
    pub source_format: SourceFormat,
    /// Where the raw record came from.
    pub source_ref: String,
}
