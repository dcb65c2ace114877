//! The scripted scenario of the end-to-end tests: raw records with known truth.
//!
//! Five devices, event times starting three hours before the test runs (the normalizers refuse
//! times far from the clock):
//!
//! - `dev-push` (Android): Google Play services holding its FCM channel, TLS to
//!   `mtalk.google.com:5228` while locked. Benign: the default baseline's FCM exception.
//! - `dev-ios` (iOS): APNs, TLS to `courier.push.apple.com:5223` (17.0.0.0/8). Benign.
//! - `dev-beacon` (Android): `com.example.flashlight` in the background on a locked device,
//!   a WorkManager job 3 s before each session, TLS to `203.0.113.50:8443` every 5 minutes with
//!   the same sizes. Malicious: the non-standard-port finding with its evidence, and the
//!   application-layer C2 finding (periodic, uniform sizes, background, locked).
//! - `dev-http` (Android): the unmanaged app `com.shady.browser` (per MDM) doing HTTP to port
//!   8080 (irregular times and sizes, as browsing is), three sessions before and three after
//!   [`Scenario::mid`]. A baseline published mid-run
//!   approves HTTP on 8080 for that app from `mid` on: the first three raise a finding, the
//!   last three do not.
//! - `dev-dns` (Android): DNS over UDP to a resolver on port 5300. Malicious.

use offport_core::baseline::parse_documents;
use offport_core::model::{Baseline, EpochMillis};
use serde_json::json;

/// The device id of a raw JSON record (the key its producer would give it).
pub fn device_of(record: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(record).ok()?;
    Some(value.get("device_id")?.as_str()?.to_string())
}

/// The scenario's records.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// First event time.
    pub t0: EpochMillis,
    /// When the baseline update takes effect.
    pub mid: EpochMillis,
    /// Raw EDR JSON records.
    pub edr: Vec<String>,
    /// Raw MDM JSON records.
    pub mdm: Vec<String>,
    /// Raw session JSON records before `mid`.
    pub sessions_before: Vec<String>,
    /// Raw session JSON records after `mid`.
    pub sessions_after: Vec<String>,
}

const MINUTE: i64 = 60_000;

fn session(
    device: &str,
    platform: &str,
    app: &str,
    start: EpochMillis,
    extra: serde_json::Value,
) -> String {
    let mut record = json!({
        "device_id": device,
        "platform": platform,
        "app_id": app,
        "start_time": start,
        "duration_ms": 2_000,
        "bytes_out": 512,
        "bytes_in": 1_024,
        "src_ip": "10.8.0.2",
        "src_port": 40_000 + (start / 1000) % 20_000,
    });
    if let (Some(map), Some(extra)) = (record.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            map.insert(k.clone(), v.clone());
        }
    }
    record.to_string()
}

fn edr(device: &str, app: Option<&str>, kind: &str, at: EpochMillis) -> String {
    let mut record = json!({
        "device_id": device,
        "platform": "ANDROID",
        "kind": kind,
        "event_time": at,
        "event_id": format!("{device}-{kind}-{at}"),
    });
    if let (Some(app), Some(map)) = (app, record.as_object_mut()) {
        map.insert("app_id".to_string(), json!(app));
    }
    record.to_string()
}

impl Scenario {
    /// The scenario relative to `now` (epoch ms).
    pub fn new(now: EpochMillis) -> Self {
        let t0 = (now - 3 * 3_600_000) / MINUTE * MINUTE;
        let mid = t0 + 60 * MINUTE;
        let mut edr_records = Vec::new();
        let mut before = Vec::new();
        let mut after = Vec::new();

        edr_records.push(edr("dev-push", None, "DEVICE_LOCKED", t0));
        for i in 0..6 {
            before.push(session(
                "dev-push",
                "ANDROID",
                "com.google.android.gms",
                t0 + i * 10 * MINUTE + 5_000,
                json!({"dst_ip": "142.250.102.188", "dst_port": 5228, "sni": "mtalk.google.com", "sensor_protocol": "tls"}),
            ));
        }
        for i in 0..4 {
            before.push(session(
                "dev-ios",
                "IOS",
                "com.apple.apsd",
                t0 + i * 12 * MINUTE + 9_000,
                json!({"dst_ip": "17.57.146.10", "dst_port": 5223, "sni": "courier.push.apple.com", "sensor_protocol": "tls"}),
            ));
        }
        let beacon = "com.example.flashlight";
        edr_records.push(edr("dev-beacon", None, "DEVICE_LOCKED", t0));
        edr_records.push(edr(
            "dev-beacon",
            Some(beacon),
            "APP_BACKGROUND",
            t0 + 1_000,
        ));
        for i in 0..8 {
            let start = t0 + MINUTE + i * 5 * MINUTE;
            edr_records.push(edr(
                "dev-beacon",
                Some(beacon),
                "WORK_MANAGER",
                start - 3_000,
            ));
            before.push(session(
                "dev-beacon",
                "ANDROID",
                beacon,
                start,
                json!({"dst_ip": "203.0.113.50", "dst_port": 8443, "sni": "cdn-update.example.net", "sensor_protocol": "tls"}),
            ));
        }
        let shady = "com.shady.browser";
        edr_records.push(edr("dev-http", None, "DEVICE_UNLOCKED", t0));
        edr_records.push(edr("dev-http", Some(shady), "APP_FOREGROUND", t0 + 2_000));
        // Browsing: irregular times and sizes.
        let jitter = [0, 7 * MINUTE + 13_000, 11 * MINUTE + 41_000];
        let sizes = [(830, 14_200), (2_410, 96_000), (1_170, 5_300)];
        for (list, base) in [
            (&mut before, t0 + 10 * MINUTE),
            (&mut after, mid + 10 * MINUTE),
        ] {
            for (i, (jitter, (bytes_out, bytes_in))) in jitter.iter().zip(sizes).enumerate() {
                let start = base + i as i64 * 10 * MINUTE + jitter;
                edr_records.push(edr("dev-http", None, "USER_INTERACTION", start - 1_000));
                list.push(session(
                    "dev-http",
                    "ANDROID",
                    shady,
                    start,
                    json!({"dst_ip": "198.51.100.7", "dst_port": 8080, "http_host": "updates.shady.example", "http_method": "GET", "sensor_protocol": "http", "bytes_out": bytes_out, "bytes_in": bytes_in}),
                ));
            }
        }
        for i in 0..3 {
            before.push(session(
                "dev-dns",
                "ANDROID",
                "com.example.tunnel",
                t0 + 15 * MINUTE + i * 7 * MINUTE,
                json!({"dst_ip": "192.0.2.53", "dst_port": 5300, "transport": "UDP", "dns_qname": "exfil.example.org", "sensor_protocol": "dns"}),
            ));
        }
        let mdm = vec![json!({
            "device_id": "dev-http",
            "platform": "ANDROID",
            "supervised": false,
            "event_time": t0 - MINUTE,
            "inventory_complete": true,
            "apps": [{"app_id": shady, "managed": false}],
        })
        .to_string()];
        Self {
            t0,
            mid,
            edr: edr_records,
            mdm,
            sessions_before: before,
            sessions_after: after,
        }
    }

    /// The baseline published mid-run: HTTP on 8080 approved for `com.shady.browser` from
    /// [`Self::mid`] on.
    pub fn baseline_update(&self) -> Baseline {
        let yaml = format!(
            "scope: {{kind: APP, value: com.shady.browser}}\nversion: shady-8080\neffective_time: {}\ndescription: approve the vendor's update channel\nallowed_protocol_ports:\n  - {{protocol: HTTP, transport: TCP, ports: [{{first: 8080, last: 8080}}]}}\n",
            self.mid
        );
        // The document is written here; a parse failure is a defect of this file.
        parse_documents(&yaml)
            .ok()
            .and_then(|mut d| d.pop())
            .unwrap_or_else(|| panic!("scenario baseline does not parse: {yaml}"))
    }
}

/// A fleet's normalized records for the replay tests: every device has a lock/background
/// timeline, a WorkManager job before each session, and sessions every 5 minutes (with a few
/// seconds of jitter); every third device beacons TLS to port 8443 while locked, the others
/// talk TLS on 443. Deterministic for `devices` and `sessions`.
pub fn replay_dataset(
    t0: EpochMillis,
    devices: usize,
    sessions: usize,
) -> (
    Vec<offport_core::model::NetworkSession>,
    Vec<offport_core::model::DeviceEvent>,
    Vec<offport_core::model::DeviceContext>,
) {
    use offport_core::examples;
    use offport_core::model::{DeviceEventKind, ManagedApp, Platform};
    let mut out_sessions = Vec::new();
    let mut events = Vec::new();
    let mut contexts = Vec::new();
    for d in 0..devices {
        let device = format!("replay-{d:03}");
        let app = format!("com.example.app{}", d % 7);
        let beacon = d % 3 == 0;
        let event = |kind: DeviceEventKind, at: EpochMillis, app: Option<&str>| {
            offport_core::model::DeviceEvent {
                event_id: format!("{device}-{kind:?}-{at}"),
                device_id: device.clone(),
                platform: Platform::Android,
                app_id: app.map(str::to_string),
                kind,
                network_api: None,
                detail: None,
                event_time: at,
                ingest_time: at,
                ..examples::device_event()
            }
        };
        events.push(event(
            if beacon {
                DeviceEventKind::DeviceLocked
            } else {
                DeviceEventKind::DeviceUnlocked
            },
            t0,
            None,
        ));
        events.push(event(
            if beacon {
                DeviceEventKind::AppBackground
            } else {
                DeviceEventKind::AppForeground
            },
            t0 + 500,
            Some(&app),
        ));
        contexts.push(offport_core::model::DeviceContext {
            device_id: device.clone(),
            platform: Platform::Android,
            supervised: Some(false),
            apps: vec![ManagedApp {
                app_id: app.clone(),
                managed: !beacon,
                ..examples::device_context().apps.remove(0)
            }],
            inventory_complete: true,
            event_time: t0 - MINUTE,
            ..examples::device_context()
        });
        for s in 0..sessions {
            let s = s as i64;
            let jitter = ((d as i64 * 7_919 + s * 104_729) % 9) * 1_000;
            let start = t0 + MINUTE + s * 5 * MINUTE + jitter;
            events.push(event(
                DeviceEventKind::WorkManager,
                start - 3_000,
                Some(&app),
            ));
            let mut session = examples::network_session();
            session.session_id = format!("{device}-s{s}");
            session.device_id = device.clone();
            session.app_id = Some(app.clone());
            session.start_time = start;
            session.duration_ms = Some(1_500 + (s % 3) * 700);
            session.dst_ip = if beacon {
                "203.0.113.50"
            } else {
                "198.51.100.20"
            }
            .to_string();
            session.dst_port = if beacon { 8443 } else { 443 };
            session.bytes_out = if beacon { 512 } else { 900 + s * 37 };
            session.bytes_in = if beacon { 1_024 } else { 20_000 + s * 311 };
            session.http = None;
            out_sessions.push(session);
        }
    }
    (out_sessions, events, contexts)
}
