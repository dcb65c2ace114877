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

mod library;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AppKind {
    Browser,
    Sync,
    Messaging,
    Mail,
    Zoom,
    Teams,
    Corp,
    Vpn,
    WhatsApp,
}

#[derive(Debug, Clone, Copy)]
struct AppSpec {
    id: &'static str,
    kind: AppKind,
    hosts: &'static [&'static str],
}

const fn app(id: &'static str, kind: AppKind, hosts: &'static [&'static str]) -> AppSpec {
    AppSpec { id, kind, hosts }
}

const ANDROID_APPS: &[AppSpec] = &[
    app(
        "com.android.chrome",
        AppKind::Browser,
        &[
            "www.google.com",
            "en.wikipedia.org",
            "www.bbc.co.uk",
            "news.ycombinator.com",
            "www.reddit.com",
        ],
    ),
    app(
        "com.google.android.gm",
        AppKind::Mail,
        &["gmail.googleapis.com", "mail.google.com"],
    ),
    app(
        "com.microsoft.office.outlook",
        AppKind::Mail,
        &["outlook.office365.com"],
    ),
    app(
        "com.microsoft.teams",
        AppKind::Teams,
        &["teams.microsoft.com"],
    ),
    app(
        "us.zoom.videomeetings",
        AppKind::Zoom,
        &["zoom.us", "us05web.zoom.us"],
    ),
    app("com.whatsapp", AppKind::WhatsApp, &["g.whatsapp.net"]),
    app(
        "org.telegram.messenger",
        AppKind::Messaging,
        &["venus.web.telegram.org"],
    ),
    app(
        "com.slack",
        AppKind::Messaging,
        &["wss-primary.slack.com", "edgeapi.slack.com"],
    ),
    app(
        "com.accuweather.android",
        AppKind::Sync,
        &["api.accuweather.com"],
    ),
    app(
        "com.google.android.apps.maps",
        AppKind::Sync,
        &["maps.googleapis.com"],
    ),
    app(
        "com.spotify.music",
        AppKind::Sync,
        &["spclient.wg.spotify.com"],
    ),
    app(
        "com.dropbox.android",
        AppKind::Sync,
        &["api.dropboxapi.com"],
    ),
    app(
        "com.corp.intranet",
        AppKind::Corp,
        &["intranet.corp.example"],
    ),
    app("com.paloaltonetworks.globalprotect", AppKind::Vpn, &[]),
];

const IOS_APPS: &[AppSpec] = &[
    app(
        "com.apple.mobilesafari",
        AppKind::Browser,
        &[
            "www.apple.com",
            "en.wikipedia.org",
            "www.nytimes.com",
            "www.theguardian.com",
            "duckduckgo.com",
        ],
    ),
    app(
        "com.apple.mobilemail",
        AppKind::Mail,
        &["imap.mail.me.com", "p42-mail.icloud.com"],
    ),
    app(
        "com.microsoft.Office.Outlook",
        AppKind::Mail,
        &["outlook.office365.com"],
    ),
    app(
        "com.microsoft.skype.teams",
        AppKind::Teams,
        &["teams.microsoft.com"],
    ),
    app(
        "us.zoom.videomeetings",
        AppKind::Zoom,
        &["zoom.us", "us05web.zoom.us"],
    ),
    app(
        "net.whatsapp.WhatsApp",
        AppKind::WhatsApp,
        &["g.whatsapp.net"],
    ),
    app(
        "com.tinyspeck.chatlyio",
        AppKind::Messaging,
        &["wss-primary.slack.com", "edgeapi.slack.com"],
    ),
    app(
        "com.apple.weather",
        AppKind::Sync,
        &["weatherkit.apple.com"],
    ),
    app(
        "com.spotify.client",
        AppKind::Sync,
        &["spclient.wg.spotify.com"],
    ),
    app(
        "com.getdropbox.Dropbox",
        AppKind::Sync,
        &["api.dropboxapi.com"],
    ),
    app("com.google.Maps", AppKind::Sync, &["maps.googleapis.com"]),
    app(
        "com.corp.intranet",
        AppKind::Corp,
        &["intranet.corp.example"],
    ),
    app("com.paloaltonetworks.globalprotect", AppKind::Vpn, &[]),
];

/// A stable address for a host name, in its operator's real ranges where it matters (Apple
/// 17.0.0.0/8, Microsoft media 52.112.0.0/14, Google 142.250.0.0/15, Meta 157.240.0.0/16).
pub fn address_of(host: &str) -> String {
    let digest = Sha256::digest(host.as_bytes());
    let byte = |i: usize| digest.get(i).copied().unwrap_or(0);
    let (a, b) = if host.ends_with("apple.com")
        || host.ends_with("icloud.com")
        || host.ends_with("me.com")
    {
        (17, byte(0) % 200 + 20)
    } else if host.ends_with("microsoft.com") {
        (52, 112 + byte(0) % 4)
    } else if host.ends_with("google.com") || host.ends_with("googleapis.com") {
        (142, 250 + byte(0) % 2)
    } else if host.ends_with("whatsapp.net") {
        (157, 240)
    } else if host.ends_with("corp.example") {
        (10, 20)
    } else {
        (34 + byte(0) % 60, byte(1))
    };
    format!("{a}.{b}.{}.{}", byte(2), byte(3) % 250 + 2)
}

fn platform_name(ios: bool) -> &'static str {
    if ios {
        "IOS"
    } else {
        "ANDROID"
    }
}

struct Device<'a> {
    config: &'a FleetConfig,
    index: usize,
    id: String,
    ios: bool,
    supervised: bool,
    developer: bool,
    usage_stats: bool,
    infection: Option<Behaviour>,
    apps: Vec<AppSpec>,
    rng: std::cell::RefCell<ChaCha8Rng>,
    out: Vec<RawLine>,
    sessions: u64,
    planted: Option<Planted>,
    /// Uses of the device (unlocked, an app in the foreground), so that no two overlap.
    busy: Vec<(EpochMillis, EpochMillis)>,
    /// The benign behaviour whose sessions are being written (`planted` for a plant).
    doing: &'static str,
    /// `app:port` of every session written, with the behaviour that wrote it.
    made: BTreeSet<(String, &'static str)>,
}

impl<'a> Device<'a> {
    fn new(config: &'a FleetConfig, index: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(
            config
                .seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(index as u64),
        );
        let ios = rng.random_bool(config.ios_share);
        let supervised = rng.random_bool(config.supervised_share);
        let developer = rng.random_bool(config.developer_share);
        let infected = !developer && rng.random_bool(config.infected_share);
        let usage_stats = !ios && rng.random_bool(0.25);
        let catalog = if ios { IOS_APPS } else { ANDROID_APPS };
        // Every device has a browser and a mail app; the rest at random.
        let mut apps: Vec<AppSpec> = catalog
            .iter()
            .filter(|a| matches!(a.kind, AppKind::Browser))
            .take(1)
            .copied()
            .collect();
        let mut others: Vec<AppSpec> = catalog
            .iter()
            .filter(|a| !matches!(a.kind, AppKind::Browser))
            .copied()
            .collect();
        while apps.len() < config.apps_per_device.max(1) && !others.is_empty() {
            let pick = rng.random_range(0..others.len());
            apps.push(others.remove(pick));
        }
        let id = format!("sim-{}-{index:05}", if ios { "ios" } else { "android" });
        Self {
            config,
            index,
            id,
            ios,
            supervised,
            developer,
            usage_stats,
            infection: None,
            apps,
            rng: std::cell::RefCell::new(rng),
            out: Vec::new(),
            sessions: 0,
            planted: None,
            busy: Vec::new(),
            doing: "unattributed",
            made: BTreeSet::new(),
        }
        .infected(infected)
    }

    /// A number from `range` (the generator is borrowed only inside, so calls nest freely).
    fn range<T, R>(&self, range: R) -> T
    where
        T: rand::distr::uniform::SampleUniform,
        R: rand::distr::uniform::SampleRange<T>,
    {
        self.rng.borrow_mut().random_range(range)
    }

    /// True with probability `p`.
    fn chance(&self, p: f64) -> bool {
        self.rng.borrow_mut().random_bool(p)
    }

    fn infected(mut self, infected: bool) -> Self {
        if infected {
            // Behaviours in turn over the device numbers, so every one is planted evenly.
            let turn =
                (self.index as u64).wrapping_add(self.config.seed) % Behaviour::ALL.len() as u64;
            self.infection = Behaviour::ALL.get(turn as usize).copied();
        }
        self
    }

    fn platform(&self) -> &'static str {
        platform_name(self.ios)
    }

    fn push(&mut self, stream: Stream, time: EpochMillis, value: String) {
        self.out.push(RawLine {
            stream,
            device_id: self.id.clone(),
            time,
            value,
        });
    }

    /// An EDR event: offport EDR JSON, or a UsageStats row where the device reports that way
    /// and the kind has a UsageEvents code.
    fn edr(&mut self, kind: &str, app: Option<&str>, at: EpochMillis) {
        if self.usage_stats {
            let code = match kind {
                "APP_FOREGROUND" => Some(1),
                "APP_BACKGROUND" => Some(2),
                "USER_INTERACTION" => Some(7),
                "DEVICE_LOCKED" => Some(17),
                "DEVICE_UNLOCKED" => Some(18),
                "FOREGROUND_SERVICE_START" => Some(19),
                "FOREGROUND_SERVICE_STOP" => Some(20),
                _ => None,
            };
            if let Some(code) = code {
                let package = app.unwrap_or("android");
                let class = app.map(|a| format!("{a}.MainActivity")).unwrap_or_default();
                let row = format!("{},{at},{code},{package},{class}", self.id);
                self.push(Stream::Edr, at, row);
                return;
            }
        }
        let mut record = json!({
            "device_id": self.id,
            "platform": self.platform(),
            "kind": kind,
            "event_time": at,
            "event_id": format!("{}-e{}", self.id, self.out.len()),
        });
        if let (Some(app), Some(map)) = (app, record.as_object_mut()) {
            map.insert("app_id".into(), json!(app));
        }
        self.push(Stream::Edr, at, record.to_string());
    }

    fn background_execution(&mut self, app: &str, at: EpochMillis) {
        let kind = if self.ios {
            "BACKGROUND_REFRESH"
        } else {
            "WORK_MANAGER"
        };
        self.edr(kind, Some(app), at);
    }

    /// A session record in offport session JSON.
    #[allow(clippy::too_many_arguments, reason = "a session has that many parts")]
    fn session(
        &mut self,
        app: &str,
        at: EpochMillis,
        duration_ms: i64,
        dst_ip: &str,
        dst_port: i32,
        label: &str,
        bytes: (i64, i64),
        extra: Value,
    ) {
        let run_end = self.config.end();
        if at >= run_end {
            return;
        }
        // A session still open when the run ends is reported then, as open.
        let still_open = at + duration_ms > run_end;
        let duration_ms = duration_ms.min(run_end - at);
        self.sessions += 1;
        if self.doing != "planted" {
            self.made.insert((format!("{app}:{dst_port}"), self.doing));
        }
        let transport = if matches!(label, "dns" | "Zoom" | "stun" | "quic") {
            "UDP"
        } else {
            "TCP"
        };
        let mut record = json!({
            "session_id": format!("{}-s{}", self.id, self.sessions),
            "device_id": self.id,
            "platform": self.platform(),
            "app_id": app,
            "start_time": at,
            "duration_ms": duration_ms,
            "dst_ip": dst_ip,
            "dst_port": dst_port,
            "transport": transport,
            "src_ip": format!("10.{}.{}.{}", 100 + self.index / 65_000, (self.index / 250) % 250, self.index % 250 + 2),
            "src_port": 32_768 + (self.sessions * 7_919 % 28_000) as i64,
            "bytes_out": bytes.0.max(0),
            "bytes_in": bytes.1.max(0),
        });
        if let Some(map) = record.as_object_mut() {
            if !label.is_empty() {
                map.insert("sensor_protocol".into(), json!(label));
            }
            if let Value::Object(extra) = extra {
                map.extend(extra);
            }
            if still_open {
                map.insert("still_open".into(), json!(true));
            }
        }
        // A sensor reports a session when it ends.
        self.push(Stream::Proxy, at + duration_ms, record.to_string());
    }

    fn vary(&self, base: f64, relative: f64) -> i64 {
        let factor = 1.0 + self.range(-relative..=relative);
        (base * factor).round() as i64
    }

    fn pick_host(&self, spec: &AppSpec) -> &'static str {
        let i = self.range(0..spec.hosts.len().max(1));
        spec.hosts.get(i).copied().unwrap_or("cdn.example.com")
    }

    fn tls(
        &mut self,
        app: &str,
        at: EpochMillis,
        duration_ms: i64,
        host: &str,
        port: i32,
        bytes: (i64, i64),
    ) {
        let ip = address_of(host);
        self.session(
            app,
            at,
            duration_ms,
            &ip,
            port,
            "tls",
            bytes,
            json!({"sni": host}),
        );
    }

    /// TLS to `host` at an address of the caller's choosing.
    #[allow(clippy::too_many_arguments, reason = "a session has that many parts")]
    fn tls_to(
        &mut self,
        app: &str,
        at: EpochMillis,
        duration_ms: i64,
        ip: &str,
        host: &str,
        port: i32,
        bytes: (i64, i64),
    ) {
        self.session(
            app,
            at,
            duration_ms,
            ip,
            port,
            "tls",
            bytes,
            json!({"sni": host}),
        );
    }

    fn dns(&mut self, app: &str, at: EpochMillis, qname: &str) {
        let out = 30 + qname.len() as i64 + self.range(0..12);
        let answer = self.range(40..420);
        self.session(
            app,
            at,
            self.range(8..90),
            "10.8.0.1",
            53,
            "dns",
            (out, out + answer),
            json!({"dns_qname": qname, "dns_qtype": if self.chance(0.7) { "A" } else { "AAAA" }}),
        );
    }

    fn generate(&mut self) {
        let start = self.config.start;
        let end = self.config.end();
        // The MDM inventory, before anything else.
        let infected_app = self.infection.map(|b| self.malicious_app(b));
        // The library draws from a stream of its own, so the rest of the device is as it
        // would be without it.
        let own = self.rng.replace(ChaCha8Rng::seed_from_u64(
            self.config
                .seed
                .wrapping_mul(0xD1B5_4A32_D192_ED03)
                .wrapping_add(self.index as u64),
        ));
        let library = self.library_picks();
        let library_rng = self.rng.replace(own);
        let mut inventory: Vec<Value> = self
            .apps
            .iter()
            .map(|a| a.id)
            .chain(library.iter().map(|(_, app)| *app))
            .collect::<BTreeSet<&str>>()
            .into_iter()
            .map(|app| json!({"app_id": app, "managed": true}))
            .collect();
        inventory.push(json!({"app_id": if self.ios { "com.apple.apsd" } else { "com.google.android.gms" }, "managed": true}));
        if let Some(app) = &infected_app {
            // Only the WebSocket case's app is known to the MDM (as unmanaged); the others are
            // sideloaded and absent from the inventory.
            if self.infection == Some(Behaviour::WebsocketUnmanaged8081) {
                inventory.push(json!({"app_id": app, "managed": false}));
            }
        }
        let mdm = json!({
            "device_id": self.id,
            "platform": self.platform(),
            "supervised": self.supervised,
            "device_group": if self.developer { "developers" } else { "staff" },
            "serial_number": format!("SIM{:08}", self.index),
            "event_time": start - 10 * MINUTE,
            "inventory_complete": true,
            "apps": inventory,
        });
        self.push(Stream::Mdm, start - 10 * MINUTE, mdm.to_string());
        self.edr("DEVICE_LOCKED", None, start - 5 * MINUTE);

        self.use_periods(start, end);
        self.push_channel(start, end);
        let apps = self.apps.clone();
        for spec in &apps {
            match spec.kind {
                AppKind::Sync | AppKind::Mail => self.background_sync(spec, start, end),
                AppKind::WhatsApp => self.persistent(spec.id, "g.whatsapp.net", 5222, start, end),
                AppKind::Vpn => {
                    let relay = format!("198.18.{}.{}", self.index % 200, 10 + self.index % 3);
                    self.vpn(spec.id, &relay, start, end);
                }
                _ => {}
            }
        }
        self.night_updates(start, end);
        let own = self.rng.replace(library_rng);
        for (behaviour, app) in library {
            self.doing = behaviour.name;
            self.library(behaviour, app, start, end);
        }
        self.rng.replace(own);
        if let (Some(behaviour), Some(app)) = (self.infection, infected_app) {
            self.plant(behaviour, &app, start, end);
        }
    }

    fn malicious_app(&mut self, behaviour: Behaviour) -> String {
        const NAMES: [&str; 6] = [
            "flashlight.pro",
            "battery.saver",
            "qr.scanner.free",
            "wallpaper.hd",
            "vpn.unlimited",
            "cleaner.boost",
        ];
        let name = NAMES
            .get(self.range(0..NAMES.len()))
            .copied()
            .unwrap_or("tool");
        match behaviour {
            Behaviour::WebsocketUnmanaged8081 => format!("com.sideload.{name}"),
            _ => format!("com.freeapps.{name}"),
        }
    }

    /// Unlock, interact, use one or two foreground apps, lock; about every other waking hour.
    fn use_periods(&mut self, start: EpochMillis, end: EpochMillis) {
        let foreground: Vec<AppSpec> = self
            .apps
            .iter()
            .filter(|a| {
                matches!(
                    a.kind,
                    AppKind::Browser
                        | AppKind::Messaging
                        | AppKind::Mail
                        | AppKind::Corp
                        | AppKind::WhatsApp
                )
            })
            .copied()
            .collect();
        let mut hour_start = start - start.rem_euclid(HOUR);
        let mut meeting_done_on = -1;
        while hour_start < end {
            let hour_of_day = (hour_start.rem_euclid(DAY)) / HOUR;
            let day = hour_start.div_euclid(DAY);
            let waking = (7..23).contains(&hour_of_day);
            if waking && hour_start >= start {
                let meeting_app = self
                    .apps
                    .iter()
                    .find(|a| matches!(a.kind, AppKind::Zoom | AppKind::Teams))
                    .copied();
                if let Some(spec) = meeting_app
                    .filter(|_| meeting_done_on != day && (10..16).contains(&hour_of_day))
                {
                    if self.chance(0.3) || hour_of_day == 15 {
                        meeting_done_on = day;
                        self.meeting(&spec, hour_start + self.range(0..10) * MINUTE);
                        hour_start += HOUR;
                        continue;
                    }
                }
                if self.chance(0.6) && !foreground.is_empty() {
                    let at = hour_start + self.range(0..40) * MINUTE + self.range(0..60_000);
                    let length = self.range(3..20) * MINUTE;
                    let pick = self.range(0..foreground.len());
                    if let Some(spec) = foreground.get(pick).copied() {
                        self.use_period(&spec, at, (at + length).min(end));
                    }
                }
            }
            hour_start += HOUR;
        }
    }

    fn use_period(&mut self, spec: &AppSpec, from: EpochMillis, to: EpochMillis) {
        self.busy.push((from, to));
        let doing = match spec.kind {
            AppKind::Browser => "web-browsing",
            AppKind::Mail => "mail-sync",
            AppKind::Corp => "corp-proxy",
            _ => "messaging",
        };
        self.edr("DEVICE_UNLOCKED", None, from);
        self.edr("USER_INTERACTION", None, from + 800);
        self.edr("APP_FOREGROUND", Some(spec.id), from + 1_500);
        let mut t = from + 3_000;
        while t < to - 5_000 {
            self.edr("USER_INTERACTION", None, t);
            let host = if self.developer && self.chance(0.15) {
                "dev-tools"
            } else {
                self.pick_host(spec)
            };
            self.doing = if host == "dev-tools" {
                "developer-tooling"
            } else {
                doing
            };
            match (spec.kind, host) {
                (_, "dev-tools") => {
                    // Local tooling: a dev server, a debugger's WebSocket, SSH to a build box.
                    let port = [3000, 8000, 8081, 9229]
                        .get(self.range(0..4))
                        .copied()
                        .unwrap_or(3000);
                    let server = format!("10.50.{}.{}", self.index % 200, 20 + port % 7);
                    let label = if port == 9229 { "websocket" } else { "http" };
                    let bytes = (self.vary(900.0, 0.5), self.vary(40_000.0, 0.8));
                    self.session(
                        spec.id,
                        t + 400,
                        self.range(200..30_000),
                        &server,
                        port,
                        label,
                        bytes,
                        json!({"http_host": format!("{server}:{port}"), "http_method": "GET"}),
                    );
                    if self.chance(0.3) {
                        let bytes = (self.vary(4_000.0, 0.5), self.vary(9_000.0, 0.5));
                        self.session(
                            spec.id,
                            t + 900,
                            self.range(60_000..900_000),
                            &server,
                            2222,
                            "ssh",
                            bytes,
                            json!({}),
                        );
                    }
                }
                (AppKind::Corp, _) => {
                    // Intranet through the explicit enterprise proxy.
                    let bytes = (self.vary(700.0, 0.4), self.vary(30_000.0, 0.9));
                    self.session(
                        spec.id,
                        t + 400,
                        self.range(150..4_000),
                        "10.20.0.10",
                        8080,
                        "http",
                        bytes,
                        json!({"http_host": host, "http_method": "GET"}),
                    );
                }
                (AppKind::Browser, _) => {
                    self.dns(spec.id, t + 100, host);
                    if self.chance(0.1) {
                        let bytes = (self.vary(500.0, 0.3), self.vary(15_000.0, 0.9));
                        let ip = address_of(host);
                        self.session(
                            spec.id,
                            t + 300,
                            self.range(100..2_000),
                            &ip,
                            80,
                            "http",
                            bytes,
                            json!({"http_host": host, "http_method": "GET"}),
                        );
                    } else if self.chance(0.3) {
                        let bytes = (self.vary(2_500.0, 0.5), self.vary(120_000.0, 0.9));
                        let ip = address_of(host);
                        self.session(
                            spec.id,
                            t + 300,
                            self.range(1_000..60_000),
                            &ip,
                            443,
                            "quic",
                            bytes,
                            json!({"sni": host}),
                        );
                    } else {
                        let bytes = (self.vary(1_800.0, 0.6), self.vary(80_000.0, 0.95));
                        let duration = self.range(300..45_000);
                        self.tls(spec.id, t + 300, duration, host, 443, bytes);
                    }
                }
                _ => {
                    let bytes = (self.vary(1_200.0, 0.6), self.vary(9_000.0, 0.9));
                    let duration = self.range(200..20_000);
                    self.tls(spec.id, t + 300, duration, host, 443, bytes);
                }
            }
            t += self.range(20_000..120_000);
        }
        self.edr("APP_BACKGROUND", Some(spec.id), to - 2_000);
        self.edr("DEVICE_LOCKED", None, to);
    }

    /// A meeting: foreground, interacting, media over UDP for its whole length.
    fn meeting(&mut self, spec: &AppSpec, from: EpochMillis) {
        let length = self.range(25..60) * MINUTE;
        self.busy.push((from, from + length + 30_000));
        self.doing = if spec.kind == AppKind::Zoom {
            "zoom-meeting"
        } else {
            "teams-meeting"
        };
        self.edr("DEVICE_UNLOCKED", None, from);
        self.edr("APP_FOREGROUND", Some(spec.id), from + 1_000);
        let host = self.pick_host(spec);
        let bytes = (self.vary(3_000.0, 0.4), self.vary(12_000.0, 0.4));
        self.tls(spec.id, from + 2_000, length, host, 443, bytes);
        let media = (self.vary(25_000_000.0, 0.3), self.vary(60_000_000.0, 0.3));
        if spec.kind == AppKind::Zoom {
            let ip = format!("144.195.{}.{}", self.index % 250, 10 + self.index % 40);
            self.session(
                spec.id,
                from + 4_000,
                length - 10_000,
                &ip,
                8801,
                "Zoom",
                media,
                json!({}),
            );
        } else {
            let ip = format!("52.113.{}.{}", self.index % 250, 20 + self.index % 30);
            self.session(
                spec.id,
                from + 4_000,
                length - 10_000,
                &ip,
                3478,
                "stun",
                media,
                json!({}),
            );
        }
        let mut t = from + 30_000;
        while t < from + length {
            self.edr("USER_INTERACTION", None, t);
            t += self.range(60_000..240_000);
        }
        self.edr("APP_BACKGROUND", Some(spec.id), from + length);
        self.edr("DEVICE_LOCKED", None, from + length + 30_000);
    }

    /// The platform push channel held open for hours, with push wake-ups of messaging and mail
    /// apps (a background job, then a short fetch on 443).
    fn push_channel(&mut self, start: EpochMillis, end: EpochMillis) {
        let (app, host, port) = if self.ios {
            ("com.apple.apsd", "courier.push.apple.com", 5223)
        } else {
            ("com.google.android.gms", "mtalk.google.com", 5228)
        };
        self.doing = if self.ios { "apns-push" } else { "fcm-push" };
        let mut t = start + self.range(0..10 * MINUTE);
        while t < end {
            let length = self.range(60..240) * MINUTE;
            let bytes = (self.vary(40_000.0, 0.5), self.vary(90_000.0, 0.6));
            self.tls(app, t, length, host, port, bytes);
            t += length + self.range(1_000..30_000);
        }
        let receivers: Vec<AppSpec> = self
            .apps
            .iter()
            .filter(|a| matches!(a.kind, AppKind::Messaging | AppKind::Mail))
            .copied()
            .collect();
        if receivers.is_empty() {
            return;
        }
        self.doing = "push-wakeup";
        let mut t = start + self.range(5..60) * MINUTE;
        while t < end {
            let pick = self.range(0..receivers.len());
            if let Some(spec) = receivers.get(pick).copied() {
                self.background_execution(spec.id, t);
                let host = self.pick_host(&spec);
                let bytes = (self.vary(900.0, 0.5), self.vary(6_000.0, 0.9));
                self.tls(
                    spec.id,
                    t + self.range(300..2_500),
                    self.range(300..5_000),
                    host,
                    443,
                    bytes,
                );
            }
            t += self.range(20..90) * MINUTE;
        }
    }

    /// Regular but jittered background sync with varying sizes.
    fn background_sync(&mut self, spec: &AppSpec, start: EpochMillis, end: EpochMillis) {
        self.doing = if spec.kind == AppKind::Mail {
            "mail-sync"
        } else {
            "background-sync"
        };
        let period = [15, 30, 60].get(self.range(0..3)).copied().unwrap_or(30) * MINUTE;
        let jitter = self.range(0.10..0.25);
        let mut t = start + self.range(0..period);
        let base_out = self.range(300.0..2_000.0);
        let base_in = self.range(2_000.0..60_000.0);
        while t < end {
            self.background_execution(spec.id, t);
            let host = self.pick_host(spec);
            if self.chance(0.3) {
                self.dns(spec.id, t + 200, host);
            }
            let bytes = (self.vary(base_out, 0.4), self.vary(base_in, 0.8));
            let duration = self.range(200..8_000);
            self.tls(
                spec.id,
                t + self.range(500..3_000),
                duration,
                host,
                443,
                bytes,
            );
            let step = period as f64 * (1.0 + self.range(-jitter..=jitter));
            t += step as i64;
        }
    }

    /// Long-lived sessions to one host (WhatsApp's chat channel).
    fn persistent(
        &mut self,
        app: &str,
        host: &str,
        port: i32,
        start: EpochMillis,
        end: EpochMillis,
    ) {
        self.doing = "whatsapp-chat";
        let mut t = start + self.range(0..30) * MINUTE;
        while t < end {
            let length = self.range(60..360) * MINUTE;
            let bytes = (self.vary(60_000.0, 0.6), self.vary(150_000.0, 0.7));
            self.tls(app, t, length, host, port, bytes);
            t += length + self.range(5_000..600_000);
        }
    }

    /// The corporate VPN's relay: long TLS sessions on 8443.
    fn vpn(&mut self, app: &str, relay: &str, start: EpochMillis, end: EpochMillis) {
        self.doing = "corp-vpn";
        let mut t = start + self.range(0..60) * MINUTE;
        while t < end {
            let length = self.range(120..480) * MINUTE;
            let bytes = (self.vary(2_000_000.0, 0.7), self.vary(9_000_000.0, 0.7));
            self.session(
                app,
                t,
                length,
                relay,
                8443,
                "tls",
                bytes,
                json!({"sni": "vpn.corp.example"}),
            );
            t += length + self.range(10_000..1_800_000);
        }
    }

    /// App-store updates while charging at night.
    fn night_updates(&mut self, start: EpochMillis, end: EpochMillis) {
        let (store, host) = if self.ios {
            ("com.apple.appstored", "iosapps.itunes.apple.com")
        } else {
            ("com.android.vending", "play.googleapis.com")
        };
        self.doing = "store-updates";
        let mut day = start - start.rem_euclid(DAY);
        while day < end {
            let at = day + 2 * HOUR + self.range(0..120) * MINUTE;
            if at >= start && at < end && self.chance(0.5) {
                self.edr("FOREGROUND_SERVICE_START", Some(store), at);
                let mut t = at + 2_000;
                for _ in 0..self.range(1..6) {
                    let bytes = (self.vary(20_000.0, 0.5), self.vary(40_000_000.0, 0.9));
                    let duration = self.range(20_000..300_000);
                    self.tls(store, t, duration, host, 443, bytes);
                    t += duration + self.range(1_000..20_000);
                }
                self.edr("FOREGROUND_SERVICE_STOP", Some(store), t);
            }
            day += DAY;
        }
    }

    /// Plants `behaviour` on this device for `app`.
    fn plant(&mut self, behaviour: Behaviour, app: &str, start: EpochMillis, end: EpochMillis) {
        self.doing = "planted";
        let span = end - start;
        // A start that leaves room for the behaviour within the run.
        let room = (span - 2 * HOUR).max(HOUR);
        let first = start + self.range(0..room) + 10 * MINUTE;
        let budget = (end - first).max(10 * MINUTE);
        self.edr("APP_BACKGROUND", Some(app), first - 60_000);
        let ip = format!("203.0.113.{}", 10 + self.index % 200);
        let mut starts = Vec::new();
        let (dst_ip, port, interval, jitter) = match behaviour {
            Behaviour::TlsC2UncommonPort => {
                let port = [8443, 9443, 7443]
                    .get(self.range(0..3))
                    .copied()
                    .unwrap_or(8443);
                let interval = self.range(5..16) * MINUTE;
                let jitter = self.range(0.05..0.30);
                let sni = format!("cdn-sync{}.example.net", self.index % 7);
                // Locked through the beacons: the device was locked and stays so.
                self.edr("DEVICE_LOCKED", None, first - 30_000);
                let mut t = first;
                while t < end && starts.len() < 24 {
                    self.background_execution(app, t - self.range(1_000..5_000));
                    let bytes = (self.vary(512.0, 0.02), self.vary(1_024.0, 0.02));
                    let duration = self.range(800..2_500);
                    self.tls_to(app, t, duration, &ip, &sni, port, bytes);
                    starts.push(t);
                    t += (interval as f64 * (1.0 + self.range(-jitter..=jitter))) as i64;
                }
                (ip.clone(), port, interval, jitter)
            }
            Behaviour::HttpC2UncommonPort => {
                let port = [8088, 8000, 8888]
                    .get(self.range(0..3))
                    .copied()
                    .unwrap_or(8088);
                let interval = self.range(3..11) * MINUTE;
                let jitter = self.range(0.05..0.30);
                let ip = format!("198.51.100.{}", 10 + self.index % 200);
                let mut t = first;
                while t < end && starts.len() < 24 {
                    let bytes = (self.vary(340.0, 0.1), self.vary(220.0, 0.1));
                    self.session(app, t, self.range(300..1_500), &ip, port, "http", bytes, json!({"http_host": ip, "http_method": "POST", "http_user_agent": "okhttp/4.9.0"}));
                    starts.push(t);
                    t += (interval as f64 * (1.0 + self.range(-jitter..=jitter))) as i64;
                }
                (ip, port, interval, jitter)
            }
            Behaviour::DnsNonStandardPort => {
                let port = [5300, 5533, 1053]
                    .get(self.range(0..3))
                    .copied()
                    .unwrap_or(5300);
                let ip = format!("192.0.2.{}", 10 + self.index % 200);
                let mut t = first;
                while t < end && starts.len() < 30 {
                    let mut label = String::new();
                    for _ in 0..16 {
                        let _ = write!(label, "{:x}", self.range(0..16));
                    }
                    let qname = format!("{label}.t.exfil-{}.example.org", self.index % 5);
                    let bytes = (
                        40 + qname.len() as i64,
                        60 + qname.len() as i64 + self.range(0..40),
                    );
                    self.session(
                        app,
                        t,
                        self.range(20..200),
                        &ip,
                        port,
                        "dns",
                        bytes,
                        json!({"dns_qname": qname, "dns_qtype": "TXT"}),
                    );
                    starts.push(t);
                    t += self.range(60_000..180_000);
                }
                (ip, port, 0, 0.0)
            }
            Behaviour::WebsocketUnmanaged8081 => {
                let ip = format!("198.51.100.{}", 10 + self.index % 200);
                let host = format!("relay{}.example.com", self.index % 9);
                let request = format!(
                    "GET /socket HTTP/1.1\r\nHost: {host}:8081\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                );
                let hex = hex::encode(request.as_bytes());
                let mut t = first;
                while t < end && starts.len() < 4 {
                    let length = self.range(10..30) * MINUTE;
                    let bytes = (self.vary(40_000.0, 0.5), self.vary(25_000.0, 0.5));
                    self.session(
                        app,
                        t,
                        length,
                        &ip,
                        8081,
                        "",
                        bytes,
                        json!({"client_bytes_hex": hex}),
                    );
                    starts.push(t);
                    t += length + self.range(20..60) * MINUTE;
                }
                (ip, 8081, 0, 0.0)
            }
            Behaviour::PersistentSession4444 => {
                let length = (budget - 10 * MINUTE)
                    .max(MINUTE)
                    .min(self.range(2..5) * HOUR);
                let bytes = (self.vary(300_000.0, 0.5), self.vary(80_000.0, 0.5));
                self.session(app, first, length, &ip, 4444, "tls", bytes, json!({}));
                starts.push(first);
                (ip.clone(), 4444, 0, 0.0)
            }
            Behaviour::DgaUniformPolling443 => {
                let mut sni = String::new();
                const CONSONANTS: &[u8] = b"bcdfghjklmnpqrstvwxz";
                for _ in 0..14 {
                    let i = self.range(0..CONSONANTS.len());
                    sni.push(char::from(CONSONANTS.get(i).copied().unwrap_or(b'x')));
                }
                sni.push_str(if self.index.is_multiple_of(2) {
                    ".top"
                } else {
                    ".xyz"
                });
                let interval = self.range(60_000..120_000);
                let jitter = self.range(0.05..0.15);
                let ip = address_of(&sni);
                let mut t = first;
                while t < end && starts.len() < 40 {
                    self.tls(app, t, self.range(400..900), &sni, 443, (620, 1_380));
                    starts.push(t);
                    t += (interval as f64 * (1.0 + self.range(-jitter..=jitter))) as i64;
                }
                (ip, 443, interval, jitter)
            }
            Behaviour::PushLikeBeacon5223 => {
                let interval = self.range(4..13) * MINUTE;
                let jitter = self.range(0.05..0.25);
                let ip = format!("198.51.100.{}", 10 + self.index % 200);
                let sni = format!("push{}.notify-gateway.net", self.index % 5);
                self.edr("DEVICE_LOCKED", None, first - 30_000);
                let mut t = first;
                while t < end && starts.len() < 30 {
                    let bytes = (self.vary(700.0, 0.02), self.vary(1_900.0, 0.02));
                    let duration = self.range(1_000..4_000);
                    self.tls_to(app, t, duration, &ip, &sni, 5223, bytes);
                    starts.push(t);
                    t += (interval as f64 * (1.0 + self.range(-jitter..=jitter))) as i64;
                }
                (ip, 5223, interval, jitter)
            }
            Behaviour::DnsTunnel5353 => {
                let ip = format!("203.0.113.{}", 10 + self.index % 200);
                let mut t = first;
                while t < end && starts.len() < 30 {
                    let mut label = String::new();
                    for _ in 0..24 {
                        let _ = write!(label, "{:x}", self.range(0..16));
                    }
                    let qname = format!("{label}.d.cdn-metrics{}.com", self.index % 5);
                    let bytes = (
                        40 + qname.len() as i64,
                        90 + qname.len() as i64 + self.range(0..120),
                    );
                    self.session(
                        app,
                        t,
                        self.range(20..200),
                        &ip,
                        5353,
                        "dns",
                        bytes,
                        json!({"dns_qname": qname, "dns_qtype": "TXT"}),
                    );
                    starts.push(t);
                    t += self.range(30_000..240_000);
                }
                (ip, 5353, 0, 0.0)
            }
            Behaviour::MqttC2Over8883 => {
                let interval = self.range(3..11) * MINUTE;
                let jitter = self.range(0.05..0.25);
                let ip = format!("192.0.2.{}", 10 + self.index % 200);
                self.edr("DEVICE_LOCKED", None, first - 30_000);
                let mut t = first;
                while t < end && starts.len() < 30 {
                    self.background_execution(app, t - self.range(1_000..5_000));
                    let bytes = (self.vary(410.0, 0.02), self.vary(260.0, 0.02));
                    let duration = self.range(1_500..6_000);
                    // The broker by address: TLS sends no server name for an IP (RFC 6066).
                    self.session(app, t, duration, &ip, 8883, "tls", bytes, json!({}));
                    starts.push(t);
                    t += (interval as f64 * (1.0 + self.range(-jitter..=jitter))) as i64;
                }
                (ip, 8883, interval, jitter)
            }
        };
        self.planted = Some(Planted {
            id: format!("{}-{behaviour:?}", self.id),
            behaviour,
            device_id: self.id.clone(),
            platform: self.platform().to_string(),
            app_id: app.to_string(),
            dst_ip,
            dst_port: port,
            first: starts.first().copied().unwrap_or(first),
            last: starts.last().copied().unwrap_or(first),
            sessions: starts.len(),
            interval_ms: interval,
            jitter,
        });
    }
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
