//! What one event resolves to: the merged thresholds, approvals, exceptions and behaviours.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{
    AppCategoryBehavior, AppProtocol, BaselineThresholds, EnterpriseException, Platform, PortRange,
    ProtocolPortRule, Transport,
};

/// Thresholds with every value resolved.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Thresholds {
    /// TimeWindow, ms.
    pub time_window_ms: i64,
    /// RecentUserInteractionWindow, ms.
    pub recent_user_interaction_window_ms: i64,
    /// BeaconIntervalTolerance, fraction.
    pub beacon_interval_tolerance: f64,
    /// ForegroundStateRequired.
    pub foreground_state_required: bool,
    /// SupervisedRequired.
    pub supervised_required: bool,
    /// BeaconIntervalVarianceThreshold.
    pub beacon_interval_variance_threshold: f64,
    /// ConnectionFrequencyThreshold, sessions/hour.
    pub connection_frequency_threshold: f64,
    /// PayloadEntropyThreshold, bits/byte.
    pub payload_entropy_threshold: f64,
    /// CadenceAnomalyThreshold, 0-1.
    pub cadence_anomaly_threshold: f64,
    /// SessionPersistenceThreshold, ms.
    pub session_persistence_threshold_ms: i64,
}

impl Default for Thresholds {
    /// Used only for elements no document sets; the shipped default baseline sets them all.
    fn default() -> Self {
        Self {
            time_window_ms: 6 * 3_600_000,
            recent_user_interaction_window_ms: 600_000,
            beacon_interval_tolerance: 0.15,
            foreground_state_required: false,
            supervised_required: false,
            beacon_interval_variance_threshold: 0.2,
            connection_frequency_threshold: 120.0,
            payload_entropy_threshold: 7.2,
            cadence_anomaly_threshold: 0.8,
            session_persistence_threshold_ms: 3_600_000,
        }
    }
}

impl Thresholds {
    pub(super) fn overlay(&mut self, t: &BaselineThresholds) {
        macro_rules! take {
            ($($field:ident),*) => { $( if let Some(v) = t.$field { self.$field = v; } )* };
        }
        take!(
            time_window_ms,
            recent_user_interaction_window_ms,
            beacon_interval_tolerance,
            foreground_state_required,
            supervised_required,
            beacon_interval_variance_threshold,
            connection_frequency_threshold,
            payload_entropy_threshold,
            cadence_anomaly_threshold,
            session_persistence_threshold_ms
        );
    }
}

/// What the scopes of an event are matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScopeContext<'a> {
    /// Device platform.
    pub platform: Platform,
    /// Device group (MDM).
    pub device_group: Option<&'a str>,
    /// Device role (MDM).
    pub device_role: Option<&'a str>,
    /// App category.
    pub app_category: Option<&'a str>,
    /// App service class.
    pub service_class: Option<&'a str>,
    /// App id.
    pub app_id: Option<&'a str>,
}

impl<'a> ScopeContext<'a> {
    /// The scopes an enriched session matches: its platform and app, and its device's group,
    /// role, app category and service class as its MDM context says.
    pub fn of(enriched: &'a crate::model::EnrichedSession) -> Self {
        let mdm = enriched.mdm.as_ref();
        Self {
            platform: enriched.session.platform,
            device_group: mdm.and_then(|m| m.device_group.as_deref()),
            device_role: mdm.and_then(|m| m.device_role.as_deref()),
            app_category: mdm.and_then(|m| m.app_category.as_deref()),
            service_class: mdm.and_then(|m| m.service_class.as_deref()),
            app_id: enriched.session.app_id.as_deref(),
        }
    }
}

/// The baseline in force for one event: every matching scope merged by the merge rule.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EffectiveBaseline {
    /// `scope@version` of every contributing document, least specific first.
    pub sources: Vec<String>,
    /// Accumulated AllowedProtocolPortMappings.
    pub protocol_ports: Vec<ProtocolPortRule>,
    /// AllowedAppList, when any scope sets it.
    pub allowed_apps: Option<Vec<String>>,
    /// AllowedManagedApps, when any scope sets it.
    pub allowed_managed_apps: Option<Vec<String>>,
    /// AllowedServiceClasses, when any scope sets it.
    pub allowed_service_classes: Option<Vec<String>>,
    /// Accumulated EnterpriseExceptionList.
    pub exceptions: Vec<EnterpriseException>,
    /// The `cidrs` of each exception, parsed once when the baseline is merged (a bare address
    /// becomes a host network). Same order as `exceptions`.
    pub(super) exception_networks: Vec<Vec<IpNet>>,
    /// AppNetworkBehaviorBaseline by category.
    pub behaviors: BTreeMap<String, AppCategoryBehavior>,
    /// Thresholds.
    pub thresholds: Thresholds,
}

impl EffectiveBaseline {
    /// The AppNetworkBehaviorBaseline entry an app is judged against: the entry keyed by its
    /// app id (what `offportctl baselines learn` writes into the app's scope), else the entry of
    /// its category or service class as the MDM reports them.
    pub fn behavior_for(
        &self,
        app_id: Option<&str>,
        mdm: Option<&crate::model::MdmContext>,
    ) -> Option<&AppCategoryBehavior> {
        app_id.and_then(|app| self.behaviors.get(app)).or_else(|| {
            mdm.and_then(|m| m.app_category.as_deref().or(m.service_class.as_deref()))
                .and_then(|category| self.behaviors.get(category))
        })
    }
}

/// Parses an exception's `cidrs` entry: a CIDR block, or a bare address as a host network.
/// Validation has already rejected anything else.
pub(super) fn parse_network(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// True when `port` lies in one of `ranges`.
pub fn in_ranges(port: i32, ranges: &[PortRange]) -> bool {
    ranges.iter().any(|r| r.first <= port && port <= r.last)
}

fn format_ranges(ranges: &[PortRange]) -> String {
    ranges
        .iter()
        .map(|r| {
            if r.first == r.last {
                r.first.to_string()
            } else {
                format!("{}-{}", r.first, r.last)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// True when `host` is `suffix` or a subdomain of it (label boundary).
pub fn host_has_suffix(host: &str, suffix: &str) -> bool {
    let host = host.trim_end_matches('.');
    let suffix = suffix.trim_start_matches('.').trim_end_matches('.');
    host.eq_ignore_ascii_case(suffix)
        || (host.len() > suffix.len()
            && host
                .get(host.len() - suffix.len()..)
                .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
            && host.as_bytes().get(host.len() - suffix.len() - 1) == Some(&b'.'))
}

/// A destination as the exception list sees it.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    /// App id, when attributed.
    pub app_id: Option<&'a str>,
    /// Destination address.
    pub ip: Option<IpAddr>,
    /// Host names seen for the destination (SNI, HTTP Host, DNS qname).
    pub hosts: &'a [&'a str],
    /// The TLS SNI, when any.
    pub sni: Option<&'a str>,
    /// Destination port.
    pub port: i32,
    /// Transport.
    pub transport: Transport,
}

impl EffectiveBaseline {
    /// `sources` joined: the version label findings carry.
    pub fn version_label(&self) -> String {
        self.sources.join("+")
    }

    /// Ports approved for `protocol` over `transport`; empty when none are.
    pub fn approved_ports(&self, protocol: AppProtocol, transport: Transport) -> Vec<PortRange> {
        self.protocol_ports
            .iter()
            .filter(|r| r.protocol == protocol && r.transport.is_none_or(|t| t == transport))
            .flat_map(|r| r.ports.iter().copied())
            .collect()
    }

    /// True when `port` is approved for `protocol` over `transport`.
    pub fn permits(&self, protocol: AppProtocol, transport: Transport, port: i32) -> bool {
        self.protocol_ports.iter().any(|r| {
            r.protocol == protocol
                && r.transport.is_none_or(|t| t == transport)
                && in_ranges(port, &r.ports)
        })
    }

    /// The approved set for display, e.g. `TLS/TCP=[443,465,993-995]`.
    pub fn describe_ports(&self, protocol: AppProtocol, transport: Transport) -> String {
        format!(
            "AllowedProtocolPortMappings {}/{}=[{}]",
            protocol.name(),
            transport.name(),
            format_ranges(&self.approved_ports(protocol, transport))
        )
    }

    /// The first enterprise exception that covers `destination`.
    pub fn exception_for(&self, destination: &Destination<'_>) -> Option<&EnterpriseException> {
        self.exceptions
            .iter()
            .zip(&self.exception_networks)
            .find_map(|(e, networks)| {
                let covered = (e.apps.is_empty()
                    || destination
                        .app_id
                        .is_some_and(|a| e.apps.iter().any(|x| x == a)))
                    && (e.cidrs.is_empty()
                        || destination
                            .ip
                            .is_some_and(|ip| networks.iter().any(|net| net.contains(&ip))))
                    && (e.domain_suffixes.is_empty()
                        || destination
                            .hosts
                            .iter()
                            .any(|h| e.domain_suffixes.iter().any(|s| host_has_suffix(h, s))))
                    && (e.snis.is_empty()
                        || destination
                            .sni
                            .is_some_and(|sni| e.snis.iter().any(|s| s.eq_ignore_ascii_case(sni))))
                    && (e.ports.is_empty() || in_ranges(destination.port, &e.ports))
                    && e.transport.is_none_or(|t| t == destination.transport);
                covered.then_some(e)
            })
    }
}
