//! A session enriched with its app's and device's state at the time.

use super::*;

/// Lifecycle state of an app at a point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "dev.offport.v1")]
#[allow(missing_docs)] // apache-avro-derive 0.22 rejects doc attributes on unit variants
pub enum AppRunState {
    // In the foreground.
    Foreground,
    // In the background.
    Background,
    // Not running.
    NotRunning,
    // Unknown.
    Unknown,
}

/// Lock state of a device at a point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "dev.offport.v1")]
#[allow(missing_docs)] // apache-avro-derive 0.22 rejects doc attributes on unit variants
pub enum LockState {
    // Locked.
    Locked,
    // Unlocked.
    Unlocked,
    // Unknown.
    Unknown,
}

/// A background-execution event that preceded a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct BackgroundExecution {
    /// Kind of background execution.
    pub kind: DeviceEventKind,
    /// When it happened.
    #[avro(with = timestamp_millis)]
    pub event_time: EpochMillis,
    /// Milliseconds between it and the session start.
    pub ms_before_session: i64,
}

/// MDM context of the device and app as of a session's start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct MdmContext {
    /// App managed; `None` when the inventory does not list it.
    pub managed: Option<bool>,
    /// App approved; `None` when unknown.
    pub approved: Option<bool>,
    /// Device supervised; `None` when unknown.
    pub supervised: Option<bool>,
    /// Device group.
    pub device_group: Option<String>,
    /// Device role.
    pub device_role: Option<String>,
    /// App category.
    pub app_category: Option<String>,
    /// App service class.
    pub service_class: Option<String>,
    /// Event time of the MDM record this came from.
    #[avro(with = timestamp_millis)]
    pub as_of: EpochMillis,
}

/// A [`NetworkSession`] joined, as of its start, with EDR state and MDM context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "dev.offport.v1")]
pub struct EnrichedSession {
    /// The session.
    pub session: NetworkSession,
    /// App state at session start.
    pub app_state: AppRunState,
    /// The app came to the foreground during the session.
    pub foreground_transition_during: bool,
    /// Lock state at session start.
    pub lock_state: LockState,
    /// The device stayed locked for the whole session.
    pub locked_throughout: bool,
    /// LastUserInteractionDelta in milliseconds; `None` when none is known within TimeWindow.
    pub last_user_interaction_ms_before: Option<i64>,
    /// The most recent background-execution event before the session.
    pub preceding_background_execution: Option<BackgroundExecution>,
    /// Networking-API calls within TimeWindow before the session.
    pub network_api_calls_before: i64,
    /// MDM context; `None` when no MDM record is known.
    pub mdm: Option<MdmContext>,
    /// Joiner watermark at emission.
    #[avro(with = timestamp_millis)]
    pub watermark: EpochMillis,
}
