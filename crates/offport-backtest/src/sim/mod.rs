//! The fleet simulator: raw records for a fleet of phones, with known truth.
//!
//! Each device is generated from its own random stream (the seed and the device number), so a
//! device's records do not depend on the fleet size and the same [`FleetConfig`] always gives
//! the same records, byte for byte.
//!
//! **Benign behaviour**, built to tempt false positives: a daily rhythm of use periods (unlock,
//! user interaction, an app in the foreground browsing or calling APIs on 443/80 with DNS on 53,
//! then lock); push channels held open for hours (FCM TLS 5228 to `mtalk.google.com`, APNs TLS
//! 5223 to 17.0.0.0/8) with push wake-ups of messaging and mail apps while locked; WhatsApp on
//! 5222; meetings (Zoom UDP 8801, Teams UDP 3478 to Microsoft's media ranges); background sync
//! with regular but jittered periods and varying sizes after a WorkManager job (Android) or a
//! background refresh (iOS); the enterprise proxy on 8080 and VPN relays on 8443 (exceptions in
//! the organisation baseline the simulator writes beside the records); developer devices running
//! tooling on odd ports (approved for their device group); app-store updates at night while
//! charging. A quarter of the Android devices report app lifecycle as Android UsageStats rows
//! instead of offport EDR JSON.
//!
//! **Malicious behaviour**, planted on a share of the non-developer devices, one
//! [`Behaviour`] each, at a random time of the run: see [`Behaviour`]. Each plant is one
//! [`Planted`] label of the ground truth.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use offport_core::model::EpochMillis;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

mod apps;
mod benign;
mod device;
mod library;
mod plants;

use apps::*;
use device::*;

pub use library::{BenignBehaviour, Flow, Rhythm, Seen, To, LIBRARY};

/// One minute in milliseconds.
pub const MINUTE: i64 = 60_000;
/// One hour in milliseconds.
pub const HOUR: i64 = 60 * MINUTE;
/// One day in milliseconds.
pub const DAY: i64 = 24 * HOUR;

/// What fleet to simulate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetConfig {
    /// Devices in the fleet.
    pub devices: usize,
    /// Length of the simulated period in hours.
    pub hours: u32,
    /// Start of the period (epoch ms; the simulated day starts at midnight UTC of it).
    pub start: EpochMillis,
    /// Random seed.
    pub seed: u64,
    /// Share of iOS devices (the rest are Android).
    pub ios_share: f64,
    /// Share of supervised (fully managed) devices.
    pub supervised_share: f64,
    /// Share of developer devices (device group `developers`, tooling on odd ports).
    pub developer_share: f64,
    /// Share of devices with one planted malicious behaviour.
    pub infected_share: f64,
    /// Apps installed per device, besides the platform's own services.
    pub apps_per_device: usize,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            devices: 100,
            hours: 24,
            start: 1_795_132_800_000, // 2026-11-20T00:00:00Z
            seed: 1,
            ios_share: 0.4,
            supervised_share: 0.8,
            developer_share: 0.03,
            infected_share: 0.02,
            apps_per_device: 8,
        }
    }
}

/// What is wrong with a fleet configuration, every problem at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", problems.join("; "))]
pub struct FleetError {
    /// One line per problem.
    pub problems: Vec<String>,
}

impl FleetConfig {
    /// Checks the configuration, naming what is wrong.
    pub fn validate(&self) -> Result<(), FleetError> {
        let mut problems = Vec::new();
        if self.devices == 0 {
            problems.push("devices must be at least 1".to_string());
        }
        if self.hours == 0 {
            problems.push("hours must be at least 1".to_string());
        }
        for (name, share) in [
            ("ios_share", self.ios_share),
            ("supervised_share", self.supervised_share),
            ("developer_share", self.developer_share),
            ("infected_share", self.infected_share),
        ] {
            if !(0.0..=1.0).contains(&share) {
                problems.push(format!("{name}={share} is not a share between 0 and 1"));
            }
        }
        if self.start < offport_core::normalize::EARLIEST_TIME {
            problems.push(format!("start={} is before 2000-01-01", self.start));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(FleetError { problems })
        }
    }

    /// End of the simulated period.
    pub fn end(&self) -> EpochMillis {
        self.start + i64::from(self.hours) * HOUR
    }
}

/// Which raw topic a record belongs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stream {
    /// The raw proxy/VPN topic (sessions).
    Proxy,
    /// The raw EDR topic.
    Edr,
    /// The raw MDM topic.
    Mdm,
}

impl Stream {
    /// Every stream, in file order.
    pub const ALL: [Stream; 3] = [Stream::Proxy, Stream::Edr, Stream::Mdm];

    /// The file name of the stream in a fleet directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Stream::Proxy => "proxy.raw",
            Stream::Edr => "edr.raw",
            Stream::Mdm => "mdm.raw",
        }
    }
}

/// One raw record: what a producer would write to the stream's topic, keyed by the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLine {
    /// Destination stream.
    pub stream: Stream,
    /// Device id (the record key).
    pub device_id: String,
    /// When the source reports it, for ordering: a session's end (sensors report sessions
    /// when they end; one still open at the end of the run is reported then, as
    /// `still_open`), an event's or context's time.
    pub time: EpochMillis,
    /// The record value: one line of JSON or one CSV row.
    pub value: String,
}

/// A malicious behaviour the simulator plants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Behaviour {
    /// TLS command and control to an uncommon port (8443, 9443, 7443) from a sideloaded app in
    /// the background while the device is locked, each beacon right after a background job,
    /// jittered 5-30 %.
    TlsC2UncommonPort,
    /// HTTP POST beacons to an IP literal on an uncommon port (8088, 8000, 8888) in the
    /// background, jittered 5-30 %.
    HttpC2UncommonPort,
    /// DNS queries (random-looking labels under one domain) to a resolver on a non-53 port.
    DnsNonStandardPort,
    /// WebSocket upgrade on 8081 from an app the MDM lists as unmanaged (recognised from the
    /// client's first bytes).
    WebsocketUnmanaged8081,
    /// One TLS session held open for hours on 4444 in the background.
    PersistentSession4444,
    /// Uniform-size polling over 443 to an algorithmically generated SNI, every one to two
    /// minutes, jittered 5-15 %.
    DgaUniformPolling443,
    /// A beacon hiding in a push-like channel: short TLS sessions to 5223 (the APNs and
    /// Samsung push port) on an address no push service uses, every 4-12 minutes, uniform
    /// sizes, from a sideloaded app in the background.
    PushLikeBeacon5223,
    /// DNS tunnelling on 5353 (the mDNS port) to a public resolver, not the mDNS group.
    DnsTunnel5353,
    /// Command and control over MQTT on its standard TLS port 8883: the app reconnects to its
    /// broker (by address, so no server name) every 3-10 minutes in the background, uniform
    /// sizes.
    MqttC2Over8883,
}

impl Behaviour {
    /// Every behaviour, in planting order.
    pub const ALL: [Behaviour; 9] = [
        Behaviour::TlsC2UncommonPort,
        Behaviour::HttpC2UncommonPort,
        Behaviour::DnsNonStandardPort,
        Behaviour::WebsocketUnmanaged8081,
        Behaviour::PersistentSession4444,
        Behaviour::DgaUniformPolling443,
        Behaviour::PushLikeBeacon5223,
        Behaviour::DnsTunnel5353,
        Behaviour::MqttC2Over8883,
    ];

    /// What a correct detector raises for it: the platform's port analytic (a recognisable
    /// protocol off its baseline ports), the application-layer C2 analytic, or both.
    pub fn expects(self) -> (bool, bool) {
        match self {
            // Off-baseline port and machine-timed, uniform beacons (or a persistent session).
            Behaviour::TlsC2UncommonPort
            | Behaviour::PushLikeBeacon5223
            | Behaviour::PersistentSession4444 => (true, true),
            // Off-baseline port, and an IP-literal Host on timed POSTs.
            Behaviour::HttpC2UncommonPort => (true, true),
            // Off-baseline port; each query a new name, so no series.
            Behaviour::DnsNonStandardPort | Behaviour::DnsTunnel5353 => (true, false),
            // Off-baseline port from an unmanaged app; a few sessions, no series.
            Behaviour::WebsocketUnmanaged8081 => (true, false),
            // Standard ports: only the C2 analytic can see them.
            Behaviour::DgaUniformPolling443 | Behaviour::MqttC2Over8883 => (false, true),
        }
    }
}

/// One planted malicious behaviour: a ground-truth label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Planted {
    /// Label id.
    pub id: String,
    /// What was planted.
    pub behaviour: Behaviour,
    /// Device.
    pub device_id: String,
    /// Platform (`ANDROID`, `IOS`).
    pub platform: String,
    /// App that carries it.
    pub app_id: String,
    /// Destination address.
    pub dst_ip: String,
    /// Destination port.
    pub dst_port: i32,
    /// First session start.
    pub first: EpochMillis,
    /// Last session start.
    pub last: EpochMillis,
    /// Sessions planted.
    pub sessions: usize,
    /// Beacon interval (0 when not periodic).
    pub interval_ms: i64,
    /// Jitter of the interval, as a share of it.
    pub jitter: f64,
}

/// The ground truth of a simulated fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    /// The configuration that made the fleet.
    pub config: FleetConfig,
    /// Device-days simulated (devices x hours / 24).
    pub device_days: f64,
    /// Device-days of devices with nothing planted.
    pub benign_device_days: f64,
    /// Every planted behaviour.
    pub planted: Vec<Planted>,
    /// Which benign behaviours made the sessions of each `app:port` (see
    /// [`Truth::benign_behaviour`]).
    #[serde(default)]
    pub benign: BTreeMap<String, BTreeSet<String>>,
}

impl Truth {
    /// The benign behaviours that made sessions of `app` to `port`, joined by `+`
    /// (`unattributed` when none did).
    pub fn benign_behaviour(&self, app: Option<&str>, port: i32) -> String {
        app.and_then(|a| self.benign.get(&format!("{a}:{port}")))
            .map(|names| names.iter().cloned().collect::<Vec<_>>().join("+"))
            .unwrap_or_else(|| "unattributed".to_string())
    }
}

/// The benign behaviours the simulator's own generator writes, beside the [`LIBRARY`]:
/// `(name, what, source)`.
pub const CORE_BEHAVIOURS: &[(&str, &str, &str)] = &[
    (
        "web-browsing",
        "a browser in use: DNS on 53, TLS/QUIC on 443, some HTTP on 80",
        "IANA domain 53, https 443, http 80",
    ),
    (
        "messaging",
        "a messaging app in use on 443",
        "IANA https 443",
    ),
    (
        "mail-sync",
        "mail apps fetching in the background and in use",
        "IANA https 443",
    ),
    (
        "background-sync",
        "weather, maps, music and storage apps syncing on jittered periods",
        "Android WorkManager / iOS background app refresh",
    ),
    (
        "fcm-push",
        "the FCM channel held open for hours",
        "firebase.google.com/docs/cloud-messaging (TCP 5228-5230)",
    ),
    (
        "apns-push",
        "the APNs channel held open for hours",
        "support.apple.com/en-us/102266 (TCP 5223 to 17.0.0.0/8)",
    ),
    (
        "push-wakeup",
        "messaging and mail apps woken by a push, then fetching on 443",
        "FCM high-priority messages; APNs background pushes",
    ),
    (
        "whatsapp-chat",
        "WhatsApp's chat channel on 5222",
        "WhatsApp FAQ 'Connecting on a network with a firewall'",
    ),
    (
        "zoom-meeting",
        "Zoom meeting media on UDP 8801",
        "support.zoom.com 'Zoom network firewall or proxy server settings'",
    ),
    (
        "teams-meeting",
        "Teams meeting media on UDP 3478 to Microsoft's media ranges",
        "Microsoft 365 URLs and IP address ranges, ID 11",
    ),
    (
        "corp-proxy",
        "the intranet through the explicit enterprise proxy on 8080",
        "the simulated organisation's baseline exception",
    ),
    (
        "corp-vpn",
        "the corporate VPN relay on 8443",
        "the simulated organisation's baseline exception",
    ),
    (
        "developer-tooling",
        "dev servers, a debugger's WebSocket and SSH on developer devices",
        "the developers group's baseline",
    ),
    (
        "store-updates",
        "app-store updates at night while charging",
        "IANA https 443",
    ),
];

/// A simulated fleet: raw records in event-time order, the organisation baseline, the truth.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// Raw records of every stream, ordered by report time (a session's end, an event's
    /// time; ties by stream, device, generation order).
    pub records: Vec<RawLine>,
    /// The organisation's baseline (YAML): the enterprise proxy and VPN relay exceptions and
    /// the developer device group's tooling ports, on top of the shipped default.
    pub baseline_yaml: String,
    /// The ground truth.
    pub truth: Truth,
}

impl Fleet {
    /// Records of one stream, in order.
    pub fn stream(&self, stream: Stream) -> impl Iterator<Item = &RawLine> {
        self.records.iter().filter(move |r| r.stream == stream)
    }
}

/// The organisation baseline the simulated fleet runs under, effective from `start`.
pub fn organisation_baseline(start: EpochMillis) -> String {
    format!(
        "# The simulated organisation's baseline, on top of offport's shipped default.\n\
- scope: {{kind: PLATFORM, value: ANDROID}}\n  version: sim-org-1\n  effective_time: {start}\n  description: corporate proxy and VPN relays (Android)\n{exceptions}\
- scope: {{kind: PLATFORM, value: IOS}}\n  version: sim-org-1\n  effective_time: {start}\n  description: corporate proxy and VPN relays (iOS); iOS devices are expected to be supervised\n  thresholds: {{supervised_required: true}}\n{exceptions}\
- scope: {{kind: DEVICE_GROUP, value: developers}}\n  version: sim-dev-1\n  effective_time: {start}\n  description: developer tooling on local servers\n  allowed_protocol_ports:\n    - {{protocol: HTTP, transport: TCP, ports: [{{first: 3000, last: 9999}}]}}\n    - {{protocol: WEBSOCKET, transport: TCP, ports: [{{first: 3000, last: 9999}}]}}\n    - {{protocol: SSH, transport: TCP, ports: [{{first: 2222, last: 2222}}]}}\n",
        exceptions = "  enterprise_exceptions:\n    - {name: corp-proxy, reason: explicit enterprise web proxy, cidrs: [10.20.0.0/16], ports: [{first: 8080, last: 8080}], transport: TCP}\n    - {name: vpn-relays, reason: corporate VPN relays, cidrs: [198.18.0.0/15], ports: [{first: 8443, last: 8443}], transport: TCP}\n"
    )
}

/// Simulates the fleet of `config`.
pub fn simulate(config: &FleetConfig) -> Result<Fleet, FleetError> {
    config.validate()?;
    let mut records = Vec::new();
    let mut planted = Vec::new();
    let mut infected = 0usize;
    let mut benign: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for index in 0..config.devices {
        let mut device = Device::new(config, index);
        device.generate();
        for (key, name) in std::mem::take(&mut device.made) {
            benign.entry(key).or_default().insert(name.to_string());
        }
        if let Some(label) = device.planted.take() {
            infected += 1;
            planted.push(label);
        }
        records.append(&mut device.out);
    }
    // Nothing is reported after the run ends.
    let end = config.end();
    records.retain(|r| r.time <= end);
    // Stable: ties keep generation order within a device.
    records.sort_by(|a, b| (a.time, a.stream, &a.device_id).cmp(&(b.time, b.stream, &b.device_id)));
    let days = f64::from(config.hours) / 24.0;
    let truth = Truth {
        config: config.clone(),
        device_days: config.devices as f64 * days,
        benign_device_days: (config.devices - infected) as f64 * days,
        planted,
        benign,
    };
    Ok(Fleet {
        records,
        baseline_yaml: organisation_baseline(config.start),
        truth,
    })
}

/// Writes `records` as lines to `writer`, one raw record per line.
pub fn write_lines<'r, W: std::io::Write>(
    writer: &mut W,
    records: impl Iterator<Item = &'r RawLine>,
) -> std::io::Result<usize> {
    let mut count = 0;
    for record in records {
        writer.write_all(record.value.as_bytes())?;
        writer.write_all(b"\n")?;
        count += 1;
    }
    Ok(count)
}

/// The device id a raw record names: the `device_id` of a JSON object or the first column of a
/// UsageStats row. Used to key records read back from files.
pub fn device_of_line(line: &str) -> Option<String> {
    let line = line.trim();
    if line.starts_with('{') {
        let value: Value = serde_json::from_str(line).ok()?;
        return Some(value.get("device_id")?.as_str()?.to_string());
    }
    line.split(',')
        .next()
        .map(str::to_string)
        .filter(|d| !d.is_empty())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;

    fn small() -> FleetConfig {
        FleetConfig {
            devices: 60,
            hours: 6,
            infected_share: 0.5,
            ..FleetConfig::default()
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_fleet_and_another_seed_another() {
        let a = simulate(&small()).unwrap();
        let b = simulate(&small()).unwrap();
        assert_eq!(a.records, b.records);
        assert_eq!(a.truth, b.truth);
        let c = simulate(&FleetConfig { seed: 2, ..small() }).unwrap();
        assert_ne!(a.records, c.records);
    }

    #[test]
    fn a_device_does_not_depend_on_the_fleet_size() {
        let small_fleet = simulate(&small()).unwrap();
        let big = simulate(&FleetConfig {
            devices: 60,
            ..small()
        })
        .unwrap();
        let of = |fleet: &Fleet, device: &str| -> Vec<RawLine> {
            fleet
                .records
                .iter()
                .filter(|r| r.device_id == device)
                .cloned()
                .collect()
        };
        let device = &small_fleet.records[0].device_id;
        assert_eq!(of(&small_fleet, device), of(&big, device));
    }

    #[test]
    fn records_are_in_event_time_order_and_parse_as_their_formats() {
        let fleet = simulate(&small()).unwrap();
        assert!(fleet.records.windows(2).all(|w| w[0].time <= w[1].time));
        let mut csv_rows = 0;
        for record in &fleet.records {
            if record.value.starts_with('{') {
                let value: Value = serde_json::from_str(&record.value).unwrap();
                assert_eq!(value["device_id"], json!(record.device_id));
            } else {
                assert_eq!(record.stream, Stream::Edr);
                assert_eq!(device_of_line(&record.value).unwrap(), record.device_id);
                csv_rows += 1;
            }
        }
        assert!(csv_rows > 0, "no UsageStats rows");
        for stream in Stream::ALL {
            assert!(fleet.stream(stream).count() > 0, "{stream:?} is empty");
        }
    }

    #[test]
    fn every_behaviour_is_planted_in_a_large_enough_fleet_with_its_label() {
        let fleet = simulate(&small()).unwrap();
        let planted = &fleet.truth.planted;
        for behaviour in Behaviour::ALL {
            assert!(
                planted.iter().any(|p| p.behaviour == behaviour),
                "{behaviour:?} not planted in {} labels",
                planted.len()
            );
        }
        for label in planted {
            assert!(label.sessions > 0);
            assert!(label.first >= fleet.truth.config.start);
            assert!(label.last < fleet.truth.config.end());
            let sessions = fleet
                .stream(Stream::Proxy)
                .filter(|r| r.device_id == label.device_id)
                .filter(|r| {
                    r.value
                        .contains(&format!("\"app_id\":\"{}\"", label.app_id))
                })
                .count();
            assert_eq!(sessions, label.sessions, "{label:?}");
        }
        let infected = planted.len() as f64;
        assert!(
            (fleet.truth.device_days - fleet.truth.benign_device_days - infected * 0.25).abs()
                < 1e-9
        );
    }

    #[test]
    fn the_benign_library_has_forty_sourced_behaviours_and_the_fleet_shows_them_attributed() {
        let names: BTreeSet<&str> = LIBRARY
            .iter()
            .map(|b| b.name)
            .chain(CORE_BEHAVIOURS.iter().map(|(name, _, _)| *name))
            .collect();
        assert!(names.len() >= 40, "{} behaviours", names.len());
        assert_eq!(
            names.len(),
            LIBRARY.len() + CORE_BEHAVIOURS.len(),
            "a name used twice"
        );
        for b in LIBRARY {
            assert!(!b.source.is_empty() && !b.what.is_empty(), "{}", b.name);
            assert!(b.android.is_some() || b.ios.is_some(), "{}", b.name);
        }
        let fleet = simulate(&FleetConfig {
            devices: 200,
            hours: 24,
            ..FleetConfig::default()
        })
        .unwrap();
        let shown: BTreeSet<&str> = fleet
            .truth
            .benign
            .values()
            .flatten()
            .map(String::as_str)
            .collect();
        for b in LIBRARY {
            assert!(
                shown.contains(b.name),
                "{} never shown in 200 devices",
                b.name
            );
        }
        // A session of a library behaviour is attributed to it by app and port.
        let ntp = fleet
            .stream(Stream::Proxy)
            .find(|r| r.value.contains("\"dst_port\":123,"))
            .unwrap();
        let value: Value = serde_json::from_str(&ntp.value).unwrap();
        assert_eq!(
            fleet.truth.benign_behaviour(value["app_id"].as_str(), 123),
            "ntp-time-sync"
        );
        assert_eq!(value["transport"], "UDP");
        assert_eq!(
            fleet.truth.benign_behaviour(Some("com.nobody"), 1),
            "unattributed"
        );
    }

    #[test]
    fn the_organisation_baseline_parses_and_validates() {
        let docs = offport_core::baseline::parse_documents(&organisation_baseline(
            FleetConfig::default().start,
        ))
        .unwrap();
        assert_eq!(docs.len(), 3);
        let mut set = offport_core::baseline::BaselineSet::with_defaults().unwrap();
        for doc in docs {
            set.apply(doc).unwrap();
        }
    }

    #[test]
    fn bad_configurations_are_named() {
        let err = simulate(&FleetConfig {
            devices: 0,
            ios_share: 1.5,
            ..FleetConfig::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("devices must be at least 1"), "{err}");
        assert!(err.contains("ios_share=1.5"), "{err}");
    }
}
