//! Learning a baseline from the fleet: what each app does on the network, across devices and
//! days, proposed as approvals and per-app behaviour with the support behind each.
//!
//! A [`Learner`] watches enriched sessions (and the findings raised on them) as a replay
//! produces them, and [`Learner::propose`] turns what it saw into a [`Proposal`]:
//!
//! - **Approvals**: a (protocol, transport, port) an app speaks off the baseline in force,
//!   proposed for the app's scope when its support passes every guard; for a wider scope (a
//!   device group, a platform) only when enough distinct apps qualify on their own and their
//!   devices span that scope (see [`LearnConfig`]).
//! - **Behaviour**: per app, the protocols, ports and destination domains it shows, as an
//!   AppNetworkBehaviorBaseline entry keyed by the app's id in the app's scope (the scorer judges
//!   an app against the entry of its id before that of its category); with its cadence, sizes,
//!   active hours and foreground share as the support a reviewer reads. A session unlike it
//!   (a port, protocol or domain the app never showed across the fleet) adds evidence to the
//!   analytics that fire on it.
//!
//! What it never learns from (the guards, each counted in [`LearnCounts`]):
//!
//! - a (device, app) that raised a finding of the application-layer C2 analytic in the window:
//!   all of that pair's traffic is left out, not only the sessions of the finding;
//! - an app the MDM does not report as managed on that device (unmanaged, or unknown): what only
//!   unmanaged apps show is never approved;
//! - a session without an app (device-level attribution) or without a recognised protocol;
//! - support below `min_devices` devices, `min_days` distinct UTC days, `min_sessions`
//!   sessions, or `min_device_share` of the devices the app was seen on (a behaviour of a few
//!   devices out of many running the app is not what the app does).
//!
//! [`draft`] writes the proposal as baseline documents with their support, merged into the
//! versions in force so that applying a draft document keeps what its scope approved before.

mod draft;
mod propose;
#[cfg(test)]
mod tests;

pub use draft::{draft, render_diff, render_yaml, Draft, DraftDocument, DraftOptions};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::baseline::{BaselineSet, ResolveCache, ScopeContext};
use crate::model::{
    Analytic, AppProtocol, AppRunState, BaselineScope, EnrichedSession, EpochMillis, Finding,
    Platform, ScopeKind, Transport,
};

const DAY_MS: i64 = 86_400_000;

/// The guards of learning: how much support a behaviour needs before it is proposed, and when
/// an approval may cover a scope wider than one app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LearnConfig {
    /// Distinct devices that must show it.
    pub min_devices: usize,
    /// Distinct UTC days on which it must be seen.
    pub min_days: usize,
    /// Sessions that must show it.
    pub min_sessions: u64,
    /// Share (0-1) of the devices the app was seen on (managed, not left out) that must show it.
    pub min_device_share: f64,
    /// Distinct apps a device group's devices must show a behaviour with before it is
    /// proposed for the group (the group's devices then stand for `min_devices` and
    /// `min_device_share`) rather than for each app.
    pub widen_min_apps: usize,
    /// Device groups of a platform that must each qualify, every group of the platform
    /// among them, before the approval covers the platform.
    pub widen_min_groups: usize,
}

impl Default for LearnConfig {
    fn default() -> Self {
        Self {
            min_devices: 5,
            min_days: 2,
            min_sessions: 20,
            min_device_share: 0.1,
            widen_min_apps: 5,
            widen_min_groups: 2,
        }
    }
}

/// How much of the fleet shows a behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Support {
    /// Distinct devices.
    pub devices: usize,
    /// Distinct UTC days.
    pub days: usize,
    /// Sessions.
    pub sessions: u64,
    /// Of those, sessions the baseline in force does not permit (each a finding candidate).
    pub off_baseline: u64,
    /// Share of the devices the app was seen on (1.0 for a scope wider than one app).
    pub device_share: f64,
    /// First session start.
    pub first_seen: EpochMillis,
    /// Last session start.
    pub last_seen: EpochMillis,
}

/// A proposed approval of a (protocol, transport, port) for a scope.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Approval {
    /// The scope it covers.
    pub scope: BaselineScope,
    /// Protocol.
    pub protocol: AppProtocol,
    /// Transport.
    pub transport: Transport,
    /// Destination port.
    pub port: i32,
    /// The apps whose traffic supports it.
    pub apps: Vec<String>,
    /// Its support, summed over those apps.
    pub support: Support,
    /// Why it qualifies, for the reviewer.
    pub reason: String,
}

/// What one app does on the network, as an app-scope AppNetworkBehaviorBaseline entry and the
/// figures a reviewer reads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppBehaviour {
    /// Platform.
    pub platform: Platform,
    /// App id.
    pub app_id: String,
    /// Protocols it speaks.
    pub protocols: Vec<AppProtocol>,
    /// (transport, port) it connects to.
    pub ports: Vec<(Transport, i32)>,
    /// Registrable domains (the last two labels of SNI or Host) on enough devices.
    pub domain_suffixes: Vec<String>,
    /// Median time between sessions of one device to one destination, when it recurs.
    pub median_interval_ms: Option<i64>,
    /// Median bytes out per session.
    pub median_bytes_out: i64,
    /// Median bytes in per session.
    pub median_bytes_in: i64,
    /// UTC hours holding at least 2 % of its sessions.
    pub active_hours_utc: Vec<u8>,
    /// Share of sessions begun with the app in the foreground.
    pub foreground_share: f64,
    /// Its support.
    pub support: Support,
}

/// A candidate the guards turned down, with why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejected {
    /// What it was, e.g. `app:com.example TLS/TCP 7443`.
    pub what: String,
    /// Its support.
    pub support: Support,
    /// The guard it failed.
    pub why: String,
}

/// Sessions seen and left out, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LearnCounts {
    /// Sessions seen.
    pub sessions: u64,
    /// Sessions learned from.
    pub learned_from: u64,
    /// Left out: no app attributed.
    pub no_app: u64,
    /// Left out: no recognised protocol.
    pub unknown_protocol: u64,
    /// Left out: the app is not reported managed on the device.
    pub not_managed: u64,
    /// Left out: the (device, app) raised an application-layer C2 finding.
    pub c2_pairs_sessions: u64,
    /// (device, app) pairs that raised an application-layer C2 finding.
    pub c2_pairs: usize,
}

/// What learning proposes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Proposal {
    /// The guards it was learned under.
    pub config: LearnConfig,
    /// Approvals, most specific scope last, then by scope, protocol and port.
    pub approvals: Vec<Approval>,
    /// Per-app behaviour.
    pub behaviours: Vec<AppBehaviour>,
    /// Candidates the guards turned down.
    pub rejected: Vec<Rejected>,
    /// (protocol, transport, port) of apps the baseline in force permits already: nothing to
    /// propose.
    pub already_permitted: usize,
    /// Sessions seen and left out.
    pub counts: LearnCounts,
    /// First and last session start learned from.
    pub span: Option<(EpochMillis, EpochMillis)>,
}

/// One device's part in a behaviour.
#[derive(Debug, Clone, Default)]
struct DeviceSupport {
    days: BTreeSet<i64>,
    sessions: u64,
    off_baseline: u64,
    first: EpochMillis,
    last: EpochMillis,
}

impl DeviceSupport {
    fn add(&mut self, start: EpochMillis, off_baseline: bool) {
        if self.sessions == 0 {
            self.first = start;
            self.last = start;
        }
        self.first = self.first.min(start);
        self.last = self.last.max(start);
        self.sessions += 1;
        self.off_baseline += u64::from(off_baseline);
        self.days.insert(start.div_euclid(DAY_MS));
    }
}

/// (platform, app).
type AppKey = (Platform, String);
/// (platform, app, protocol, transport, port).
type PortKey = (Platform, String, AppProtocol, Transport, i32);

/// One device's use of one app.
#[derive(Debug, Clone, Default)]
struct AppOnDevice {
    support: DeviceSupport,
    foreground: u64,
    hours: [u64; 24],
    bytes_out: Vec<i64>,
    bytes_in: Vec<i64>,
    intervals: Vec<i64>,
    last_start: HashMap<(String, i32), EpochMillis>,
    protocols: std::collections::HashSet<AppProtocol>,
    ports: BTreeSet<(u8, i32)>,
    domains: BTreeSet<String>,
}

/// Samples kept per (device, app) for the medians: enough for a median, bounded in memory.
const SAMPLES: usize = 64;

/// Watches sessions and findings; proposes what the fleet shows. See the module docs.
#[derive(Debug)]
pub struct Learner {
    config: LearnConfig,
    baselines: Arc<BaselineSet>,
    cache: ResolveCache,
    devices: HashMap<String, u32>,
    device_names: Vec<String>,
    /// Device group (else role) of each device, as the MDM last said.
    groups: HashMap<u32, String>,
    /// Platform of each device.
    platforms: HashMap<u32, Platform>,
    ports: HashMap<PortKey, BTreeMap<u32, DeviceSupport>>,
    apps: HashMap<AppKey, BTreeMap<u32, AppOnDevice>>,
    /// (device, app) pairs with a C2 finding; `None` app: every app of the device.
    c2: BTreeSet<(u32, Option<String>)>,
    counts: LearnCounts,
}

fn platform_name(platform: Platform) -> &'static str {
    match platform {
        Platform::Android => "ANDROID",
        Platform::Ios => "IOS",
        Platform::Unknown => "UNKNOWN",
    }
}

fn transport_rank(transport: Transport) -> u8 {
    match transport {
        Transport::Tcp => 0,
        Transport::Udp => 1,
        Transport::Other => 2,
    }
}

fn transport_of(rank: u8) -> Transport {
    match rank {
        0 => Transport::Tcp,
        1 => Transport::Udp,
        _ => Transport::Other,
    }
}

/// The registrable-looking domain of a host: its last two labels (three under a two-letter
/// second level such as `co.uk`); `None` for an IP literal.
pub fn domain_class(host: &str) -> Option<String> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.parse::<std::net::IpAddr>().is_ok() || !host.contains('.') {
        return None;
    }
    let labels: Vec<&str> = host.split('.').collect();
    let keep = match labels.as_slice() {
        [.., second, top] if top.len() == 2 && second.len() <= 3 && labels.len() >= 3 => 3,
        _ => 2,
    };
    let from = labels.len().saturating_sub(keep);
    Some(labels.get(from..).unwrap_or_default().join("."))
}

fn median(values: &mut [i64]) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    values.get(values.len() / 2).copied()
}

fn keep_sample(samples: &mut Vec<i64>, value: i64, seen: u64) {
    if samples.len() < SAMPLES {
        samples.push(value);
    } else if let Some(slot) = samples.get_mut((seen as usize) % SAMPLES) {
        // Overwrite in turn: the sample follows the whole window, not only its start.
        *slot = value;
    }
}

impl Learner {
    /// A learner judging "off the baseline" against `baselines` (the set in force).
    pub fn new(config: LearnConfig, baselines: Arc<BaselineSet>) -> Self {
        Self {
            config,
            baselines,
            cache: ResolveCache::default(),
            devices: HashMap::new(),
            device_names: Vec::new(),
            groups: HashMap::new(),
            platforms: HashMap::new(),
            ports: HashMap::new(),
            apps: HashMap::new(),
            c2: BTreeSet::new(),
            counts: LearnCounts::default(),
        }
    }

    fn device(&mut self, id: &str) -> u32 {
        if let Some(&index) = self.devices.get(id) {
            return index;
        }
        let index = u32::try_from(self.device_names.len()).unwrap_or(u32::MAX);
        self.devices.insert(id.to_string(), index);
        self.device_names.push(id.to_string());
        index
    }

    /// Notes one enriched session.
    pub fn observe(&mut self, enriched: &EnrichedSession) {
        self.counts.sessions += 1;
        let session = &enriched.session;
        let Some(app) = session.app_id.as_deref().filter(|a| !a.is_empty()) else {
            self.counts.no_app += 1;
            return;
        };
        if session.protocol == AppProtocol::Unknown {
            self.counts.unknown_protocol += 1;
            return;
        }
        let mdm = enriched.mdm.as_ref();
        if mdm.and_then(|m| m.managed) != Some(true) {
            self.counts.not_managed += 1;
            return;
        }
        let device = self.device(&session.device_id);
        self.platforms.insert(device, session.platform);
        if let Some(group) = mdm.and_then(|m| m.device_group.as_ref().or(m.device_role.as_ref())) {
            self.groups.insert(device, group.clone());
        }
        let context = ScopeContext::of(enriched);
        let start = session.start_time;
        let off_baseline = !self
            .baselines
            .resolve_cached(&self.cache, &context, start)
            .permits(session.protocol, session.transport, session.dst_port);
        let app_key: AppKey = (session.platform, app.to_string());
        self.ports
            .entry((
                session.platform,
                app.to_string(),
                session.protocol,
                session.transport,
                session.dst_port,
            ))
            .or_default()
            .entry(device)
            .or_default()
            .add(start, off_baseline);
        let on_device = self
            .apps
            .entry(app_key)
            .or_default()
            .entry(device)
            .or_default();
        on_device.support.add(start, off_baseline);
        let seen = on_device.support.sessions;
        if enriched.app_state == AppRunState::Foreground {
            on_device.foreground += 1;
        }
        let hour = usize::try_from(start.rem_euclid(DAY_MS) / 3_600_000).unwrap_or(0);
        if let Some(slot) = on_device.hours.get_mut(hour) {
            *slot += 1;
        }
        keep_sample(&mut on_device.bytes_out, session.bytes_out, seen);
        keep_sample(&mut on_device.bytes_in, session.bytes_in, seen);
        let host = session
            .tls
            .as_ref()
            .and_then(|t| t.sni.as_deref())
            .or_else(|| session.http.as_ref().and_then(|h| h.host.as_deref()));
        let destination = (
            host.map_or_else(|| session.dst_ip.clone(), str::to_string),
            session.dst_port,
        );
        if let Some(previous) = on_device.last_start.insert(destination, start) {
            if start > previous {
                keep_sample(&mut on_device.intervals, start - previous, seen);
            }
        }
        on_device.protocols.insert(session.protocol);
        on_device
            .ports
            .insert((transport_rank(session.transport), session.dst_port));
        if let Some(domain) = host.and_then(domain_class) {
            if on_device.domains.len() < 256 {
                on_device.domains.insert(domain);
            }
        }
        self.counts.learned_from += 1;
    }

    /// Notes a finding: an application-layer C2 finding leaves its (device, app) out.
    pub fn observe_finding(&mut self, finding: &Finding) {
        if finding.analytic == Analytic::AppLayerC2 {
            let device = self.device(&finding.device_id);
            self.c2.insert((device, finding.app_id.clone()));
        }
    }

    fn left_out(&self, device: u32, app: &str) -> bool {
        self.c2.contains(&(device, None)) || self.c2.contains(&(device, Some(app.to_string())))
    }
}
