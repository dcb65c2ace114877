//! Device and app activity into [`DeviceEvent`]: offport's EDR JSON event and Android
//! UsageStats event rows.
//!
//! **offport EDR JSON** ([`EdrJson`]): one JSON object per record, fields described in the
//! docs/formats.md. **Android UsageStats rows** ([`UsageStatsRows`]): CSV lines
//! `device_id,timestamp,event_type,package_name,class_name` as an agent exports
//! `UsageEvents.Event`s (a header line naming the columns may come first, in any order; several
//! rows may share one record). The event types the analytics use are mapped; the others are read
//! and produce nothing:
//!
//! | type | constant | becomes |
//! |---|---|---|
//! | 1 | `ACTIVITY_RESUMED` (was `MOVE_TO_FOREGROUND`) | `APP_FOREGROUND` |
//! | 2 | `ACTIVITY_PAUSED` (was `MOVE_TO_BACKGROUND`) | `APP_BACKGROUND` |
//! | 23 | `ACTIVITY_STOPPED` | `APP_BACKGROUND` (the activity is no longer visible; the process may live on) |
//! | 7 | `USER_INTERACTION` | `USER_INTERACTION` |
//! | 15 / 16 | `SCREEN_INTERACTIVE` / `SCREEN_NON_INTERACTIVE` | `SCREEN_ON` / `SCREEN_OFF` |
//! | 17 / 18 | `KEYGUARD_SHOWN` / `KEYGUARD_HIDDEN` | `DEVICE_LOCKED` / `DEVICE_UNLOCKED` |
//! | 19 / 20 | `FOREGROUND_SERVICE_START` / `_STOP` | `FOREGROUND_SERVICE_START` / `_STOP` |

use serde::Deserialize;

use super::{
    check_count, check_device_id, check_platform, check_time, derived_id, time_from_text, trimmed,
    value_of, JsonTime, Limits, Normalized, Normalizer, RawRecord, Rejection,
};
use crate::model::{
    DeviceEvent, DeviceEventKind, EpochMillis, NetworkApiUsage, Platform, SourceFormat,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventJson {
    event_id: Option<String>,
    device_id: Option<String>,
    platform: Option<String>,
    app_id: Option<String>,
    app_name: Option<String>,
    kind: Option<String>,
    event_time: Option<JsonTime>,
    network_api: Option<ApiJson>,
    detail: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiJson {
    api: Option<String>,
    call_count: i64,
    window_ms: Option<i64>,
}

/// The kind from its documented name (`APP_FOREGROUND`, any case, `-` or `_`).
pub fn kind_from(name: &str) -> Option<DeviceEventKind> {
    use DeviceEventKind::*;
    let normalized = name.trim().to_ascii_uppercase().replace('-', "_");
    Some(match normalized.as_str() {
        "APP_FOREGROUND" => AppForeground,
        "APP_BACKGROUND" => AppBackground,
        "APP_STOPPED" => AppStopped,
        "DEVICE_LOCKED" => DeviceLocked,
        "DEVICE_UNLOCKED" => DeviceUnlocked,
        "SCREEN_ON" => ScreenOn,
        "SCREEN_OFF" => ScreenOff,
        "USER_INTERACTION" => UserInteraction,
        "BACKGROUND_JOB" => BackgroundJob,
        "WORK_MANAGER" => WorkManager,
        "FOREGROUND_SERVICE_START" => ForegroundServiceStart,
        "FOREGROUND_SERVICE_STOP" => ForegroundServiceStop,
        "BACKGROUND_REFRESH" => BackgroundRefresh,
        "PERSISTENT_SERVICE" => PersistentService,
        "NETWORK_API_USAGE" => NetworkApiUsage,
        _ => return None,
    })
}

/// Normalizer of offport's EDR JSON events.
#[derive(Debug, Clone, Default)]
pub struct EdrJson {
    /// Input bounds.
    pub limits: Limits,
}

impl EdrJson {
    fn event(
        record: &RawRecord<'_>,
        bytes: &[u8],
        ingest_time: EpochMillis,
    ) -> Result<DeviceEvent, Rejection> {
        let json: EventJson = serde_json::from_slice(bytes)
            .map_err(|e| Rejection::unparseable(format!("not an offport EDR event JSON: {e}")))?;
        let device_id = check_device_id(
            trimmed(json.device_id)
                .as_deref()
                .or(record.outside_device()),
        )?;
        let kind_name = trimmed(json.kind).ok_or_else(|| Rejection::unparseable("no kind"))?;
        let kind = kind_from(&kind_name).ok_or_else(|| {
            Rejection::unparseable(format!(
                "kind={kind_name:?} is not an event kind offport knows (see docs/formats.md)"
            ))
        })?;
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
        let network_api = match (kind, json.network_api) {
            (DeviceEventKind::NetworkApiUsage, None) => {
                return Err(Rejection::unparseable(
                    "a NETWORK_API_USAGE event needs network_api {api, call_count, window_ms}",
                ))
            }
            (_, Some(api)) => Some(NetworkApiUsage {
                api: trimmed(api.api).unwrap_or_else(|| "unspecified".to_string()),
                call_count: check_count("network_api.call_count", api.call_count)?,
                window_ms: check_count("network_api.window_ms", api.window_ms.unwrap_or(60_000))?,
            }),
            (_, None) => None,
        };
        let app_id = trimmed(json.app_id);
        // A lifecycle event says what one app did: without the app it would be joined to no
        // app's timeline (UsageStats rows need their package for the same reason).
        if app_id.is_none()
            && matches!(
                kind,
                DeviceEventKind::AppForeground
                    | DeviceEventKind::AppBackground
                    | DeviceEventKind::AppStopped
            )
        {
            return Err(Rejection::unparseable(format!(
                "a {kind_name} event needs an app_id"
            )));
        }
        let event_id = trimmed(json.event_id).unwrap_or_else(|| {
            derived_id(&[
                &device_id,
                app_id.as_deref().unwrap_or(""),
                &kind_name,
                &event_time.to_string(),
            ])
        });
        let detail =
            trimmed(json.detail).or(trimmed(json.app_name).map(|n| format!("app_name={n}")));
        Ok(DeviceEvent {
            event_id,
            device_id,
            platform: check_platform(json.platform.as_deref())?,
            app_id,
            kind,
            network_api,
            detail,
            event_time,
            ingest_time,
            source_format: SourceFormat::OffportJson,
            source_ref: record.source_ref(),
        })
    }
}

impl Normalizer for EdrJson {
    fn normalize(
        &mut self,
        record: &RawRecord<'_>,
        ingest_time: EpochMillis,
    ) -> Result<Vec<Normalized>, Rejection> {
        let bytes = value_of(record, &self.limits)?;
        Ok(vec![Normalized::Event(Self::event(
            record,
            bytes,
            ingest_time,
        )?)])
    }
}

/// The `DeviceEventKind` of a `UsageEvents.Event` type; `None` for types the analytics do not
/// use.
pub fn usage_event_kind(event_type: i64) -> Option<DeviceEventKind> {
    use DeviceEventKind::*;
    Some(match event_type {
        1 => AppForeground,
        2 | 23 => AppBackground,
        7 => UserInteraction,
        15 => ScreenOn,
        16 => ScreenOff,
        17 => DeviceLocked,
        18 => DeviceUnlocked,
        19 => ForegroundServiceStart,
        20 => ForegroundServiceStop,
        _ => return None,
    })
}

/// Column positions of a UsageStats row.
#[derive(Debug, Clone, Copy)]
struct Columns {
    device_id: usize,
    timestamp: usize,
    event_type: usize,
    package_name: usize,
    class_name: Option<usize>,
}

const DEFAULT_COLUMNS: Columns = Columns {
    device_id: 0,
    timestamp: 1,
    event_type: 2,
    package_name: 3,
    class_name: Some(4),
};

/// Columns of the headerless layout ([`DEFAULT_COLUMNS`]).
const DEFAULT_WIDTH: usize = 5;

/// Normalizer of Android UsageStats event rows (CSV).
#[derive(Debug, Clone, Default)]
pub struct UsageStatsRows {
    /// Input bounds.
    pub limits: Limits,
}

impl UsageStatsRows {
    fn header(row: &csv::StringRecord) -> Option<Columns> {
        let find = |name: &str| row.iter().position(|c| c.trim().eq_ignore_ascii_case(name));
        Some(Columns {
            device_id: find("device_id")?,
            timestamp: find("timestamp")?,
            event_type: find("event_type")?,
            package_name: find("package_name")?,
            class_name: find("class_name"),
        })
    }

    fn row(
        record: &RawRecord<'_>,
        row: &csv::StringRecord,
        columns: Columns,
        line: u64,
        ingest_time: EpochMillis,
    ) -> Result<Option<DeviceEvent>, Rejection> {
        let field = |index: usize, name: &str| {
            row.get(index)
                .map(str::trim)
                .ok_or_else(|| Rejection::unparseable(format!("line {line}: no {name} column")))
        };
        let event_type_text = field(columns.event_type, "event_type")?;
        let event_type: i64 = event_type_text.parse().map_err(|_| {
            Rejection::unparseable(format!(
                "line {line}: event_type={event_type_text:?} is not an integer"
            ))
        })?;
        let Some(kind) = usage_event_kind(event_type) else {
            return Ok(None);
        };
        let device_id = field(columns.device_id, "device_id")?;
        let device_id = check_device_id(
            Some(device_id)
                .filter(|d| !d.is_empty())
                .or(record.outside_device()),
        )
        .map_err(|r| Rejection::new(r.reason, format!("line {line}: {}", r.message)))?;
        let time_text = field(columns.timestamp, "timestamp")?;
        let event_time = time_from_text(time_text).ok_or_else(|| {
            Rejection::unparseable(format!(
                "line {line}: timestamp={time_text:?} is neither RFC 3339 nor epoch seconds/milliseconds"
            ))
        })?;
        check_time("timestamp", event_time, ingest_time)
            .map_err(|r| Rejection::new(r.reason, format!("line {line}: {}", r.message)))?;
        let package = field(columns.package_name, "package_name")?;
        let device_level = matches!(
            kind,
            DeviceEventKind::ScreenOn
                | DeviceEventKind::ScreenOff
                | DeviceEventKind::DeviceLocked
                | DeviceEventKind::DeviceUnlocked
        );
        let app_id = (!device_level && !package.is_empty()).then(|| package.to_string());
        if app_id.is_none() && !device_level {
            return Err(Rejection::unparseable(format!(
                "line {line}: event type {event_type} needs a package_name"
            )));
        }
        let class_name = columns
            .class_name
            .and_then(|i| row.get(i))
            .map(str::trim)
            .filter(|c| !c.is_empty());
        Ok(Some(DeviceEvent {
            event_id: derived_id(&[
                &device_id,
                package,
                &event_type.to_string(),
                &event_time.to_string(),
                class_name.unwrap_or(""),
            ]),
            device_id,
            platform: Platform::Android,
            app_id,
            kind,
            network_api: None,
            detail: Some(match class_name {
                Some(class) => format!("UsageEvents type {event_type} {class}"),
                None => format!("UsageEvents type {event_type}"),
            }),
            event_time,
            ingest_time,
            source_format: SourceFormat::AndroidUsageStats,
            source_ref: record.source_ref(),
        }))
    }
}

impl Normalizer for UsageStatsRows {
    fn normalize(
        &mut self,
        record: &RawRecord<'_>,
        ingest_time: EpochMillis,
    ) -> Result<Vec<Normalized>, Rejection> {
        let bytes = value_of(record, &self.limits)?;
        let mut columns = DEFAULT_COLUMNS;
        let mut width = DEFAULT_WIDTH;
        let mut rows = 0_usize;
        let mut out = Vec::new();
        for (index, row) in super::csv_rows(bytes)?.into_iter().enumerate() {
            let line = index as u64 + 1;
            if index == 0 {
                if let Some(header) = Self::header(&row) {
                    columns = header;
                    width = row.len();
                    continue;
                }
            }
            if row.iter().all(str::is_empty) {
                continue;
            }
            // A row wider than its layout has shifted or foreign columns: reading it by
            // position would take the wrong values.
            if row.len() > width {
                return Err(Rejection::unparseable(format!(
                    "line {line}: {} columns where the layout has {width} \
                     (device_id,timestamp,event_type,package_name,class_name or the header's)",
                    row.len()
                )));
            }
            rows += 1;
            if let Some(event) = Self::row(record, &row, columns, line, ingest_time)? {
                out.push(Normalized::Event(event));
            }
        }
        if rows == 0 {
            return Err(Rejection::unparseable(
                "UsageStats CSV with a header and no event rows",
            ));
        }
        Ok(out)
    }
}

/// The normalizer of the raw EDR topic: JSON objects are offport EDR events, anything else is
/// taken as UsageStats CSV rows.
#[derive(Debug, Clone, Default)]
pub struct EdrNormalizer {
    json: EdrJson,
    usage: UsageStatsRows,
}

impl EdrNormalizer {
    /// A normalizer within `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            json: EdrJson { limits },
            usage: UsageStatsRows { limits },
        }
    }
}

impl Normalizer for EdrNormalizer {
    fn normalize(
        &mut self,
        record: &RawRecord<'_>,
        ingest_time: EpochMillis,
    ) -> Result<Vec<Normalized>, Rejection> {
        let bytes = value_of(record, &self.json.limits)?;
        super::canonical_device_ids(match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => self.json.normalize(record, ingest_time),
            _ => self.usage.normalize(record, ingest_time),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DeadLetterReason;

    const NOW: EpochMillis = 1_795_300_000_000;

    fn record(value: &[u8]) -> RawRecord<'_> {
        RawRecord::new("offport.raw.edr", 0, 7, value)
    }

    fn events(value: &str) -> Result<Vec<DeviceEvent>, Rejection> {
        let out = EdrNormalizer::default().normalize(&record(value.as_bytes()), NOW)?;
        Ok(out
            .into_iter()
            .filter_map(|n| match n {
                Normalized::Event(e) => Some(e),
                _ => None,
            })
            .collect())
    }

    #[test]
    fn json_events_map_every_documented_kind() {
        let kinds = [
            "APP_FOREGROUND",
            "APP_BACKGROUND",
            "APP_STOPPED",
            "DEVICE_LOCKED",
            "DEVICE_UNLOCKED",
            "SCREEN_ON",
            "SCREEN_OFF",
            "USER_INTERACTION",
            "BACKGROUND_JOB",
            "WORK_MANAGER",
            "FOREGROUND_SERVICE_START",
            "FOREGROUND_SERVICE_STOP",
            "BACKGROUND_REFRESH",
            "PERSISTENT_SERVICE",
        ];
        for kind in kinds {
            let json = format!(
                r#"{{"device_id":"d1","platform":"ios","app_id":"com.x","kind":"{kind}","event_time":"2026-11-20T10:00:00Z"}}"#
            );
            let event = events(&json).unwrap().remove(0);
            assert_eq!(Some(event.kind), kind_from(kind), "{kind}");
            assert_eq!(event.platform, Platform::Ios);
            assert_eq!(event.event_time, 1_795_168_800_000);
            assert_eq!(event.event_id.len(), 32);
        }
        assert!(
            kind_from("work-manager").is_some(),
            "dashes and case are forgiven"
        );
    }

    #[test]
    fn network_api_usage_needs_its_counts() {
        let ok = r#"{"device_id":"d1","app_id":"com.x","kind":"NETWORK_API_USAGE","event_time":1795168800,
            "network_api":{"api":"OkHttp","call_count":42,"window_ms":30000}}"#;
        let event = events(ok).unwrap().remove(0);
        let usage = event.network_api.unwrap();
        assert_eq!(
            (usage.api.as_str(), usage.call_count, usage.window_ms),
            ("OkHttp", 42, 30_000)
        );
        let missing = r#"{"device_id":"d1","kind":"NETWORK_API_USAGE","event_time":1795168800}"#;
        assert_eq!(
            events(missing).unwrap_err().reason,
            DeadLetterReason::Unparseable
        );
        let negative = r#"{"device_id":"d1","kind":"NETWORK_API_USAGE","event_time":1795168800,"network_api":{"call_count":-1}}"#;
        assert_eq!(
            events(negative).unwrap_err().reason,
            DeadLetterReason::ImpossibleValue
        );
    }

    #[test]
    fn bad_json_events_are_rejected_with_the_field() {
        let cases = [
            (
                r#"{"kind":"APP_FOREGROUND","event_time":1795168800}"#,
                DeadLetterReason::MissingDeviceId,
                "no device id",
            ),
            (
                r#"{"device_id":"d","kind":"TELEPORTED","event_time":1795168800}"#,
                DeadLetterReason::Unparseable,
                "TELEPORTED",
            ),
            (
                r#"{"device_id":"d","kind":"SCREEN_ON"}"#,
                DeadLetterReason::Unparseable,
                "no event_time",
            ),
            (
                r#"{"device_id":"d","kind":"SCREEN_ON","event_time":12}"#,
                DeadLetterReason::ImpossibleValue,
                "before 2000",
            ),
            (
                r#"{"device_id":"d","kind":"SCREEN_ON","event_time":1795168800,"mood":"good"}"#,
                DeadLetterReason::Unparseable,
                "unknown field",
            ),
        ];
        for (json, reason, words) in cases {
            let err = events(json).unwrap_err();
            assert_eq!(err.reason, reason, "{json}");
            assert!(err.message.contains(words), "{json}: {}", err.message);
        }
    }

    #[test]
    fn usage_stats_rows_map_the_event_types_and_skip_the_rest() {
        let rows = "device_id,timestamp,event_type,package_name,class_name\n\
            pixel-7,1795168800000,1,com.example.weather,com.example.weather.MainActivity\n\
            pixel-7,1795168801000,2,com.example.weather,com.example.weather.MainActivity\n\
            pixel-7,1795168802000,17,android,\n\
            pixel-7,1795168803000,5,android,\n\
            pixel-7,1795168804000,19,com.example.weather,com.example.weather.SyncService\n\
            pixel-7,1795168805000,23,com.example.weather,\"com.example.weather.Main,Activity\"\n";
        let out = events(rows).unwrap();
        let kinds: Vec<_> = out.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                DeviceEventKind::AppForeground,
                DeviceEventKind::AppBackground,
                DeviceEventKind::DeviceLocked,
                DeviceEventKind::ForegroundServiceStart,
                DeviceEventKind::AppBackground,
            ],
            "type 5 (CONFIGURATION_CHANGE) produces nothing"
        );
        assert_eq!(out[2].app_id, None, "the keyguard is device-level");
        assert_eq!(out[0].app_id.as_deref(), Some("com.example.weather"));
        assert!(
            out[4].detail.as_deref().unwrap().ends_with("Main,Activity"),
            "quoted comma"
        );
        assert!(out
            .iter()
            .all(|e| e.source_format == SourceFormat::AndroidUsageStats));
    }

    #[test]
    fn usage_stats_rows_without_a_header_use_the_documented_order_and_the_key_for_devices() {
        let mut raw = record(b",1795168800,7,com.x,");
        raw.key = Some(b"pixel-8");
        let out = EdrNormalizer::default().normalize(&raw, NOW).unwrap();
        match &out[..] {
            [Normalized::Event(e)] => {
                assert_eq!(e.device_id, "pixel-8");
                assert_eq!(e.kind, DeviceEventKind::UserInteraction);
                assert_eq!(e.event_time, 1_795_168_800_000, "epoch seconds");
            }
            other => panic!("{other:?}"),
        }
        let err = events("pixel-8,1795168800,banana,com.x,").unwrap_err();
        assert!(
            err.message.contains("event_type=\"banana\""),
            "{}",
            err.message
        );
        let err = events("pixel-8,1795168800,1,,").unwrap_err();
        assert!(
            err.message.contains("needs a package_name"),
            "{}",
            err.message
        );
    }
    #[test]
    fn empty_whitespace_header_only_and_over_wide_values_are_dead_lettered_not_dropped() {
        for blank in ["", "   ", "\n\r\n\t"] {
            let err = events(blank).unwrap_err();
            assert_eq!(err.reason, DeadLetterReason::Unparseable, "{blank:?}");
            assert!(err.message.contains("value is"), "{}", err.message);
        }
        let err = events("device_id,timestamp,event_type,package_name\n").unwrap_err();
        assert!(err.message.contains("no event rows"), "{}", err.message);
        let err = events("pixel-8,1795168800,1,com.x,Main,extra,columns").unwrap_err();
        assert!(
            err.message.contains("7 columns where the layout has 5"),
            "{}",
            err.message
        );
        let header = "device_id,timestamp,event_type,package_name\npixel-8,1795168800,1,com.x,Main";
        let err = events(header).unwrap_err();
        assert!(
            err.message.contains("5 columns where the layout has 4"),
            "{}",
            err.message
        );
        // Rows of the layout's width, and rows of event types offport does not use, still pass.
        assert_eq!(events("pixel-8,1795168800,1,com.x,Main").unwrap().len(), 1);
        assert!(events("pixel-8,1795168800,5,com.x,").unwrap().is_empty());
    }

    #[test]
    fn a_platform_outside_android_and_ios_is_rejected_not_taken_as_unknown() {
        let json = |platform: &str| {
            format!(
                r#"{{"device_id":"d1","platform":"{platform}","app_id":"com.x","kind":"APP_FOREGROUND","event_time":"2026-11-20T10:00:00Z"}}"#
            )
        };
        let err = events(&json("WINDOWS")).unwrap_err();
        assert_eq!(err.reason, DeadLetterReason::ImpossibleValue);
        assert!(err.message.contains("WINDOWS"), "{}", err.message);
        assert_eq!(events(&json("iPadOS")).unwrap()[0].platform, Platform::Ios);
        assert_eq!(
            events(&json("unknown")).unwrap()[0].platform,
            Platform::Unknown
        );
    }
}
