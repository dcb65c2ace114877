//! Fully populated example records: every optional field set, every list non-empty.
//!
//! They document what a record looks like and give the drift tests and the end-to-end tests a
//! value that exercises every field of a contract. They are not defaults and carry no detection
//! meaning. [`join_mix`] is the benches' deterministic input mix.

use crate::join::JoinInput;
use crate::model::*;

/// 2026-11-02T09:30:00Z, the time every example is set at.
pub const EXAMPLE_TIME: EpochMillis = 1_793_611_800_000;

/// A TLS session from a background Android app to port 8443, as a per-app VPN reports it.
pub fn network_session() -> NetworkSession {
    NetworkSession {
        session_id: "pcapdroid-7f3a9c".to_string(),
        device_id: "android-0042".to_string(),
        platform: Platform::Android,
        app_id: Some("com.example.weather".to_string()),
        app_name: Some("Wetter ☀ Pro".to_string()),
        app_uid: Some(10_213),
        attribution: AttributionSource::VpnUid,
        attribution_confidence: 0.95,
        transport: Transport::Tcp,
        src_ip: Some("fd00::2".to_string()),
        src_port: Some(51_234),
        dst_ip: "2001:db8::8443".to_string(),
        dst_port: 8443,
        protocol: AppProtocol::Tls,
        protocol_evidence: ProtocolEvidence::SensorAndClientBytes,
        protocol_label: Some("TLS".to_string()),
        tls: Some(TlsInfo {
            version: Some("TLSv1.3".to_string()),
            sni: Some("cdn-update.example.net".to_string()),
            alpn: vec!["h2".to_string(), "http/1.1".to_string()],
            ja3: Some(
                "771,4865-4866-4867,0-23-65281-10-11-35-16-5-13-18-51-45-43-27,29-23-24,0"
                    .to_string(),
            ),
            ja4: Some("t13d1516h2_8daaf6152771_02713d6af862".to_string()),
        }),
        http: Some(HttpInfo {
            method: Some("GET".to_string()),
            host: Some("cdn-update.example.net".to_string()),
            path_class: Some("opaque".to_string()),
            user_agent: Some("okhttp/4.12.0".to_string()),
            upgrade: Some("websocket".to_string()),
            status_code: Some(101),
        }),
        dns: Some(DnsInfo {
            qname: "cdn-update.example.net".to_string(),
            qtype: "AAAA".to_string(),
            rcode: Some("NOERROR".to_string()),
        }),
        client_banner: Some("SSH-2.0-OpenSSH_9.6".to_string()),
        bytes_out: 517,
        bytes_in: 4_096,
        packets_out: 6,
        packets_in: 7,
        payload_entropy: Some(7.6),
        payload_sample_bytes: Some(517),
        start_time: EXAMPLE_TIME,
        duration_ms: Some(1_250),
        still_open: true,
        ingest_time: EXAMPLE_TIME + 2_000,
        source_format: SourceFormat::PcapdroidCsv,
        source_ref: "raw.proxy/0/42".to_string(),
    }
}

/// A WorkManager start on an Android device, with networking-API counts.
pub fn device_event() -> DeviceEvent {
    DeviceEvent {
        event_id: "edr-19".to_string(),
        device_id: "android-0042".to_string(),
        platform: Platform::Android,
        app_id: Some("com.example.weather".to_string()),
        kind: DeviceEventKind::WorkManager,
        network_api: Some(NetworkApiUsage {
            api: "OkHttp".to_string(),
            call_count: 12,
            window_ms: 60_000,
        }),
        detail: Some("androidx.work.impl.background.systemjob.SystemJobService".to_string()),
        event_time: EXAMPLE_TIME - 3_000,
        ingest_time: EXAMPLE_TIME,
        source_format: SourceFormat::OffportJson,
        source_ref: "raw.edr/1/7".to_string(),
    }
}

/// A supervised iPhone's managed-app inventory.
pub fn device_context() -> DeviceContext {
    DeviceContext {
        device_id: "ios-0007".to_string(),
        platform: Platform::Ios,
        supervised: Some(true),
        device_group: Some("sales-emea".to_string()),
        device_role: Some("field-sales".to_string()),
        serial_number: Some("F2LXK0AAHG7F".to_string()),
        udid: Some("00008110-001A2B3C4D5E801E".to_string()),
        os_version: Some("18.6.2".to_string()),
        apps: vec![ManagedApp {
            app_id: "com.microsoft.teams2".to_string(),
            name: Some("Microsoft Teams".to_string()),
            version: Some("7.12.1".to_string()),
            managed: true,
            approved: Some(true),
            status: Some("Managed".to_string()),
            management_flags: Some(1),
            category: Some("conferencing".to_string()),
            service_class: Some("collaboration".to_string()),
        }],
        inventory_complete: true,
        event_time: EXAMPLE_TIME - 60_000,
        ingest_time: EXAMPLE_TIME,
        source_format: SourceFormat::MicromdmWebhook,
        source_ref: "raw.mdm/2/3".to_string(),
    }
}

/// The example session enriched with a locked device and a preceding WorkManager start.
pub fn enriched_session() -> EnrichedSession {
    EnrichedSession {
        session: network_session(),
        app_state: AppRunState::Background,
        foreground_transition_during: false,
        lock_state: LockState::Locked,
        locked_throughout: true,
        last_user_interaction_ms_before: Some(5_400_000),
        preceding_background_execution: Some(BackgroundExecution {
            kind: DeviceEventKind::WorkManager,
            event_time: EXAMPLE_TIME - 3_000,
            ms_before_session: 3_000,
        }),
        network_api_calls_before: 12,
        mdm: Some(MdmContext {
            managed: Some(false),
            approved: Some(false),
            supervised: Some(true),
            device_group: Some("sales-emea".to_string()),
            device_role: Some("field-sales".to_string()),
            app_category: Some("weather".to_string()),
            service_class: Some("consumer".to_string()),
            as_of: EXAMPLE_TIME - 60_000,
        }),
        watermark: EXAMPLE_TIME + 30_000,
    }
}

/// A non-standard-port finding with one evidence item.
pub fn finding() -> Finding {
    Finding {
        finding_id: "f-3b1c2d".to_string(),
        revision: 1,
        status: FindingStatus::Updated,
        analytic: Analytic::NonStandardPortAndroid,
        analytic_id: "AN1827".to_string(),
        detection_strategy: "DET0706".to_string(),
        technique_id: "T1509".to_string(),
        technique_name: "Non-Standard Port".to_string(),
        platform: Platform::Android,
        device_id: "android-0042".to_string(),
        app_id: Some("com.example.weather".to_string()),
        app_name: Some("Wetter ☀ Pro".to_string()),
        dst_ip: "2001:db8::8443".to_string(),
        dst_port: 8443,
        dst_host: Some("cdn-update.example.net".to_string()),
        transport: Transport::Tcp,
        protocol: AppProtocol::Tls,
        first_seen: EXAMPLE_TIME - 3_600_000,
        last_seen: EXAMPLE_TIME,
        session_count: 12,
        score: 87,
        severity: Severity::High,
        confidence: 0.95,
        evidence: vec![Evidence {
            kind: EvidenceKind::ProtocolPortMismatch,
            description: "TLS on 8443/tcp, outside the approved ports for TLS".to_string(),
            observed: "TLS on 8443/tcp".to_string(),
            observed_number: Some(8443.0),
            baseline: Some("AllowedProtocolPortMappings TLS=[443]".to_string()),
            weight: 40.0,
        }],
        baseline_version: "global@2026-11-01".to_string(),
        event_time: EXAMPLE_TIME,
    }
}

/// An app-scoped baseline with every element set.
pub fn baseline() -> Baseline {
    Baseline {
        scope: BaselineScope {
            kind: ScopeKind::App,
            value: Some("com.example.weather".to_string()),
        },
        version: "2026-11-01.1".to_string(),
        effective_time: EXAMPLE_TIME - 86_400_000,
        description: Some("Weather app may use its vendor's MQTT broker".to_string()),
        allowed_protocol_ports: vec![ProtocolPortRule {
            protocol: AppProtocol::Mqtt,
            transport: Some(Transport::Tcp),
            ports: vec![PortRange {
                first: 8883,
                last: 8883,
            }],
        }],
        allowed_apps: Some(vec!["com.example.weather".to_string()]),
        allowed_managed_apps: Some(vec!["com.microsoft.teams2".to_string()]),
        allowed_service_classes: Some(vec!["collaboration".to_string()]),
        enterprise_exceptions: vec![EnterpriseException {
            name: "corp-proxy".to_string(),
            reason: "Enterprise web proxy on 8080".to_string(),
            apps: vec!["com.android.chrome".to_string()],
            cidrs: vec!["10.20.0.0/16".to_string()],
            domain_suffixes: vec!["proxy.corp.example".to_string()],
            snis: vec!["proxy.corp.example".to_string()],
            ports: vec![PortRange {
                first: 8080,
                last: 8080,
            }],
            transport: Some(Transport::Tcp),
        }],
        app_network_behavior: vec![AppCategoryBehavior {
            category: "weather".to_string(),
            expected_protocols: vec![AppProtocol::Tls, AppProtocol::Dns],
            expected_ports: vec![PortRange {
                first: 443,
                last: 443,
            }],
            expected_domain_suffixes: vec!["example.com".to_string()],
        }],
        thresholds: BaselineThresholds {
            time_window_ms: Some(86_400_000),
            recent_user_interaction_window_ms: Some(600_000),
            beacon_interval_tolerance: Some(0.1),
            foreground_state_required: Some(false),
            supervised_required: Some(true),
            beacon_interval_variance_threshold: Some(0.15),
            connection_frequency_threshold: Some(60.0),
            payload_entropy_threshold: Some(7.2),
            cadence_anomaly_threshold: Some(0.8),
            session_persistence_threshold_ms: Some(3_600_000),
        },
    }
}

/// A record a normalizer could not parse.
pub fn dead_letter() -> DeadLetter {
    DeadLetter {
        original_key: Some(b"android-0042".to_vec()),
        original_value: Some(b"{not json".to_vec()),
        original_headers: vec![RecordHeader {
            key: "offport.device_id".to_string(),
            value: Some(b"android-0042".to_vec()),
        }],
        source_topic: "offport.raw.proxy".to_string(),
        source_partition: 0,
        source_offset: 42,
        source_timestamp: Some(EXAMPLE_TIME),
        stage: "normalize-proxy".to_string(),
        reason: DeadLetterReason::Unparseable,
        message: "line 1 column 2: key must be a string".to_string(),
        failed_time: EXAMPLE_TIME + 1,
        original_value_size: Some(9),
        original_value_sha256: None,
        truncated: false,
    }
}

/// The `i`-th of a deterministic stream of offport session JSON records (the reference raw
/// format), as the normalization benchmarks feed them: 1,000 devices, three apps, ports 443,
/// 8443, 5228 and 8080, varied addresses, sizes and times.
pub fn session_json(i: usize) -> String {
    const APPS: [&str; 3] = [
        "com.example.weather",
        "com.example.mail",
        "com.google.android.gms",
    ];
    const PORTS: [u16; 4] = [443, 8443, 5228, 8080];
    let device = format!("device-{:04}", i % 1000);
    let app = APPS.get(i % APPS.len()).copied().unwrap_or_default();
    let port = PORTS.get(i % PORTS.len()).copied().unwrap_or_default();
    format!(
        r#"{{"device_id":"{device}","platform":"ANDROID","app_id":"{app}","transport":"TCP","src_ip":"10.8.{}.{}","src_port":{},"dst_ip":"203.0.113.{}","dst_port":{port},"sensor_protocol":"tls","sni":"api{}.example.com","ja3":"e7d705a3286e19ea42f587b344ee6865","bytes_out":{},"bytes_in":{},"packets_out":12,"packets_in":10,"start_time":{},"duration_ms":{}}}"#,
        (i / 250) % 250,
        i % 250,
        30_000 + i % 30_000,
        i % 250,
        i % 97,
        400 + i % 1500,
        2_000 + i % 60_000,
        1_795_168_800_000_i64 + i as i64 * 37,
        100 + i % 5_000
    )
}

/// The mix generator's random numbers: a fixed-seed LCG, the same on every machine.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const MIX_APPS: [&str; 6] = [
    "com.android.chrome",
    "com.whatsapp",
    "com.example.weather",
    "com.microsoft.teams",
    "com.spotify.music",
    "com.example.bank",
];
const MIX_HOSTS: [&str; 6] = [
    "www.google.com",
    "graph.facebook.com",
    "api.weather.example.com",
    "teams.microsoft.com",
    "spclient.wg.spotify.com",
    "api.bank.example",
];

fn mix_session(rng: &mut Lcg, device: &str, t: i64, id: u64) -> NetworkSession {
    let app = rng.below(MIX_APPS.len() as u64) as usize;
    let mut s = network_session();
    s.session_id = format!("s{id}");
    s.device_id = device.to_string();
    s.app_id = MIX_APPS.get(app).map(|a| a.to_string());
    s.start_time = t;
    s.duration_ms = Some(200 + rng.below(3_000) as i64);
    s.http = None;
    s.dns = None;
    s.payload_entropy = None;
    s.bytes_out = 300 + rng.below(2_000) as i64;
    s.bytes_in = 1_000 + rng.below(50_000) as i64;
    let roll = rng.below(100);
    let (port, host) = match roll {
        0..=89 => (443, MIX_HOSTS.get(app).copied().unwrap_or_default()),
        90..=91 => (5228, "mtalk.google.com"),
        92..=93 => (5223, "courier.push.apple.com"),
        94..=96 => (8443, "cdn-update.example.net"),
        _ => {
            s.bytes_out = 620;
            s.bytes_in = 1_180;
            (443, "xkq9vz3tplm2wr.com")
        }
    };
    s.dst_port = port;
    s.tls = Some(TlsInfo {
        sni: Some(host.to_string()),
        ..TlsInfo::default()
    });
    s.protocol = AppProtocol::Tls;
    s
}

fn mix_event(rng: &mut Lcg, device: &str, t: i64) -> DeviceEvent {
    let kinds = [
        DeviceEventKind::AppForeground,
        DeviceEventKind::AppBackground,
        DeviceEventKind::DeviceLocked,
        DeviceEventKind::DeviceUnlocked,
        DeviceEventKind::UserInteraction,
        DeviceEventKind::WorkManager,
        DeviceEventKind::NetworkApiUsage,
    ];
    let kind = kinds
        .get(rng.below(kinds.len() as u64) as usize)
        .copied()
        .unwrap_or(DeviceEventKind::AppForeground);
    let mut e = device_event();
    e.device_id = device.to_string();
    e.app_id = MIX_APPS
        .get(rng.below(MIX_APPS.len() as u64) as usize)
        .map(|a| a.to_string());
    e.kind = kind;
    e.network_api = (kind == DeviceEventKind::NetworkApiUsage).then(|| NetworkApiUsage {
        api: "OkHttp".to_string(),
        call_count: rng.below(50) as i64,
        window_ms: 60_000,
    });
    e.event_time = t;
    e
}

/// The benches' input mix (`cargo bench -p offport-core`): EDR events and sessions for
/// `device_ids` (6 apps each); sessions are 90% TLS/443 to common hosts, 4% push on 5228/5223,
/// 3% TLS on a non-standard port, 3% uniform-size polling. The same records on every run.
///
/// EDR events and sessions, 30% sessions, in event order with up to 5 s of
/// disorder, ~200 records per second of event time across the fleet.
pub fn join_mix(device_ids: &[String], records: u64) -> Vec<JoinInput> {
    let devices = device_ids.len() as u64;
    let mut rng = Lcg(42);
    let t0 = EXAMPLE_TIME;
    let mut inputs = Vec::with_capacity(records as usize);
    for i in 0..records {
        let Some(device) = device_ids.get(rng.below(devices) as usize) else {
            break;
        };
        let t = t0 + (i as i64) * 5 + rng.below(5_000) as i64;
        if rng.below(10) < 3 {
            inputs.push(JoinInput::Session(mix_session(&mut rng, device, t, i)));
        } else {
            inputs.push(JoinInput::Event(mix_event(&mut rng, device, t)));
        }
    }
    inputs
}
