//! Baselines: the organisation's approved behaviour, every mutable element of the seeds, per
//! scope and per version.
//!
//! A baseline document ([`Baseline`], written in YAML or JSON with the field names of
//! `schemas/Baseline.avsc`) applies to one scope: global, a platform, a device group or role, an
//! app category or service class, or one app. [`BaselineSet`] keeps every version of every scope
//! with its effective time, and [`BaselineSet::resolve`] merges the documents in force at an
//! event's time for the scopes that match the event, most specific last.
//!
//! # Versions
//!
//! A document is one version of its scope. A newer version (later `effective_time`) replaces the
//! previous version of the same scope entirely from its effective time on; a version with the
//! same effective time replaces it outright. So a new `GLOBAL` document replaces the shipped
//! default global document: keep its contents, or put an organisation's changes in a more
//! specific scope (a platform scope covers a whole platform).
//!
//! # Merge rule
//!
//! Scopes are applied from least to most specific: global, platform, device group/role, app
//! category/service class, app. When two scopes of the same level match (a device's group and
//! its role), they are applied in order of their value.
//!
//! - Thresholds (TimeWindow, RecentUserInteractionWindow, BeaconIntervalTolerance, ...): the most
//!   specific scope that sets a value wins; unset (`null`) inherits.
//! - AllowedAppList, AllowedManagedApps, AllowedServiceClasses: the most specific scope that sets
//!   the list wins, replacing the less specific list; `null` inherits, `[]` means "none".
//! - AllowedProtocolPortMappings and EnterpriseExceptionList accumulate: a more specific scope adds
//!   approved ports and exceptions to those it inherits. (Narrowing is done by not approving at
//!   the global scope.)
//! - AppNetworkBehaviorBaseline: entries accumulate by category; an entry for a category replaces
//!   the inherited entry for the same category.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::model::{
    AppCategoryBehavior, AppProtocol, Baseline, BaselineScope, BaselineThresholds,
    EnterpriseException, EpochMillis, Platform, PortRange, ProtocolPortRule, ScopeKind, Transport,
};

/// The shipped default baseline (see `baselines/default.yaml`).
pub const DEFAULT_BASELINE_YAML: &str = include_str!("../baselines/default.yaml");

/// One problem in a baseline document: where, what, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Path of the offending element, e.g. `allowed_protocol_ports[2].ports[0].last`.
    pub path: String,
    /// The offending value, as written.
    pub value: String,
    /// Why it is rejected.
    pub why: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} ({})", self.path, self.why, self.value)
    }
}

/// Errors reading or validating baseline documents.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// Not YAML/JSON, or not of the document's shape.
    #[error("baseline document does not parse: {0}")]
    Syntax(String),
    /// A field the document model does not have (a misspelling would drop what it holds).
    #[error("baseline document {document} has fields offport does not know: {} (misspelt?)", .fields.join(", "))]
    UnknownFields {
        /// 1-based position of the document in its file.
        document: usize,
        /// Each unknown field's path.
        fields: Vec<String>,
    },
    /// Two documents of one file for the same scope and effective time.
    #[error("documents {} (version {:?}) and {} (version {:?}) are both {scope} at effective time {effective_time}: one version per scope and effective time, or the second would replace the first", .first.0, .first.1, .second.0, .second.1)]
    SameVersionKey {
        /// The scope both name.
        scope: String,
        /// The effective time both name, epoch milliseconds.
        effective_time: EpochMillis,
        /// Position (1-based) and version of the first.
        first: (usize, String),
        /// Position (1-based) and version of the second.
        second: (usize, String),
    },
    /// Parsed, but one or more elements are invalid.
    #[error("baseline {scope} version {version:?} is invalid: {}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// Scope of the document.
        scope: String,
        /// Version of the document.
        version: String,
        /// Every problem found.
        problems: Vec<Invalid>,
    },
}

/// Human-readable scope name: `global`, `platform:IOS`, `app:com.example`.
pub fn scope_label(scope: &BaselineScope) -> String {
    let kind = match scope.kind {
        ScopeKind::Global => "global",
        ScopeKind::Platform => "platform",
        ScopeKind::DeviceGroup => "group",
        ScopeKind::AppCategory => "category",
        ScopeKind::App => "app",
    };
    match &scope.value {
        Some(value) => format!("{kind}:{value}"),
        None => kind.to_string(),
    }
}

/// The scope a [`scope_label`] names: `global`, `platform:IOS`, `group:x`, `category:x`,
/// `app:x`.
pub fn parse_scope_label(label: &str) -> Result<BaselineScope, String> {
    let (kind, value) = match label.split_once(':') {
        Some((kind, value)) => (kind, Some(value.to_string())),
        None => (label, None),
    };
    let kind = match kind {
        "global" => ScopeKind::Global,
        "platform" => ScopeKind::Platform,
        "group" => ScopeKind::DeviceGroup,
        "category" => ScopeKind::AppCategory,
        "app" => ScopeKind::App,
        other => {
            return Err(format!(
                "unknown scope kind {other:?} (global, platform, group, category or app)"
            ))
        }
    };
    match (kind, &value) {
        (ScopeKind::Global, Some(_)) => Err("the global scope takes no value".to_string()),
        (ScopeKind::Global, None) => Ok(BaselineScope { kind, value }),
        (_, Some(v)) if !v.is_empty() => Ok(BaselineScope { kind, value }),
        _ => Err(format!("scope {label:?} needs a value after ':'")),
    }
}

/// Parses one document, or a YAML list of documents, and validates each.
///
/// A field the document model does not have is an error, not ignored: a misspelt
/// `allowed_protocol_ports` would otherwise publish a version without its rules, silently
/// withdrawing what the previous version approved. Two documents of one scope and effective
/// time are refused too: they would be published under one key, the second replacing the
/// first. (Records on the baselines topic are Avro and resolved by their writer schema; this
/// strictness is for the documents people write.)
pub fn parse_documents(text: &str) -> Result<Vec<Baseline>, BaselineError> {
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| BaselineError::Syntax(e.to_string()))?;
    let values = match value {
        serde_yaml_ng::Value::Sequence(items) => items,
        single => vec![single],
    };
    let mut documents = Vec::with_capacity(values.len());
    for (index, value) in values.into_iter().enumerate() {
        let mut unknown = Vec::new();
        let document: Baseline = serde_ignored::deserialize(value, |path| {
            unknown.push(path.to_string());
        })
        .map_err(|e| BaselineError::Syntax(format!("document {}: {e}", index + 1)))?;
        if !unknown.is_empty() {
            return Err(BaselineError::UnknownFields {
                document: index + 1,
                fields: unknown,
            });
        }
        validate(&document)?;
        documents.push(document);
    }
    for (later, document) in documents.iter().enumerate() {
        let same = |other: &Baseline| {
            other.scope == document.scope && other.effective_time == document.effective_time
        };
        if let Some(earlier) = documents.iter().take(later).position(same) {
            return Err(BaselineError::SameVersionKey {
                scope: scope_label(&document.scope),
                effective_time: document.effective_time,
                first: (
                    earlier + 1,
                    documents
                        .get(earlier)
                        .map_or_else(String::new, |d| d.version.clone()),
                ),
                second: (later + 1, document.version.clone()),
            });
        }
    }
    Ok(documents)
}

/// The shipped default baseline, parsed.
pub fn default_documents() -> Result<Vec<Baseline>, BaselineError> {
    parse_documents(DEFAULT_BASELINE_YAML)
}

fn check_ports(path: &str, ranges: &[PortRange], out: &mut Vec<Invalid>) {
    for (i, range) in ranges.iter().enumerate() {
        let value = format!("{}-{}", range.first, range.last);
        if !(0..=65_535).contains(&range.first) || !(0..=65_535).contains(&range.last) {
            out.push(Invalid {
                path: format!("{path}[{i}]"),
                value,
                why: "ports are 0-65535".to_string(),
            });
        } else if range.first > range.last {
            out.push(Invalid {
                path: format!("{path}[{i}]"),
                value,
                why: "first must not exceed last".to_string(),
            });
        }
    }
}

fn check_range(path: &str, value: Option<f64>, low: f64, high: f64, out: &mut Vec<Invalid>) {
    if let Some(v) = value {
        if !(v.is_finite() && v >= low && v <= high) {
            out.push(Invalid {
                path: path.to_string(),
                value: v.to_string(),
                why: format!("must be between {low} and {high}"),
            });
        }
    }
}

fn check_positive(path: &str, value: Option<i64>, out: &mut Vec<Invalid>) {
    if let Some(v) = value {
        if v <= 0 {
            out.push(Invalid {
                path: path.to_string(),
                value: v.to_string(),
                why: "must be greater than 0".to_string(),
            });
        }
    }
}

/// Checks a document; returns every problem, not just the first.
pub fn validate(document: &Baseline) -> Result<(), BaselineError> {
    let mut out = Vec::new();
    let scope = &document.scope;
    match (scope.kind, scope.value.as_deref()) {
        (ScopeKind::Global, Some(v)) => out.push(Invalid {
            path: "scope.value".to_string(),
            value: v.to_string(),
            why: "the global scope takes no value".to_string(),
        }),
        (ScopeKind::Global, None) => {}
        (_, None) | (_, Some("")) => out.push(Invalid {
            path: "scope.value".to_string(),
            value: String::new(),
            why: "this scope kind needs a value".to_string(),
        }),
        (ScopeKind::Platform, Some(v)) if v != "ANDROID" && v != "IOS" => out.push(Invalid {
            path: "scope.value".to_string(),
            value: v.to_string(),
            why: "a platform scope is ANDROID or IOS".to_string(),
        }),
        _ => {}
    }
    if document.version.trim().is_empty() {
        out.push(Invalid {
            path: "version".to_string(),
            value: document.version.clone(),
            why: "must not be empty".to_string(),
        });
    }
    for (i, rule) in document.allowed_protocol_ports.iter().enumerate() {
        let path = format!("allowed_protocol_ports[{i}]");
        if rule.protocol == AppProtocol::Unknown {
            out.push(Invalid {
                path: format!("{path}.protocol"),
                value: "UNKNOWN".to_string(),
                why: "approve a recognisable protocol".to_string(),
            });
        }
        if rule.ports.is_empty() {
            out.push(Invalid {
                path: format!("{path}.ports"),
                value: "[]".to_string(),
                why: "a rule needs at least one port range".to_string(),
            });
        }
        check_ports(&format!("{path}.ports"), &rule.ports, &mut out);
    }
    for (i, exception) in document.enterprise_exceptions.iter().enumerate() {
        let path = format!("enterprise_exceptions[{i}]");
        if exception.name.trim().is_empty() {
            out.push(Invalid {
                path: format!("{path}.name"),
                value: String::new(),
                why: "must not be empty".to_string(),
            });
        }
        if exception.reason.trim().is_empty() {
            out.push(Invalid {
                path: format!("{path}.reason"),
                value: String::new(),
                why: "say why the exception exists".to_string(),
            });
        }
        for (j, cidr) in exception.cidrs.iter().enumerate() {
            if parse_network(cidr).is_none() {
                out.push(Invalid {
                    path: format!("{path}.cidrs[{j}]"),
                    value: cidr.clone(),
                    why: "not a CIDR block or IP address".to_string(),
                });
            }
        }
        check_ports(&format!("{path}.ports"), &exception.ports, &mut out);
        if exception.apps.is_empty()
            && exception.cidrs.is_empty()
            && exception.domain_suffixes.is_empty()
            && exception.snis.is_empty()
            && exception.ports.is_empty()
        {
            out.push(Invalid {
                path: path.clone(),
                value: exception.name.clone(),
                why: "an exception with no apps, cidrs, domains, SNIs or ports would silence every finding".to_string(),
            });
        }
    }
    let mut categories = std::collections::HashSet::new();
    for (i, behavior) in document.app_network_behavior.iter().enumerate() {
        let path = format!("app_network_behavior[{i}]");
        if behavior.category.trim().is_empty() {
            out.push(Invalid {
                path: format!("{path}.category"),
                value: String::new(),
                why: "must not be empty".to_string(),
            });
        } else if !categories.insert(behavior.category.as_str()) {
            out.push(Invalid {
                path: format!("{path}.category"),
                value: behavior.category.clone(),
                why: "category listed twice in one document".to_string(),
            });
        }
        check_ports(
            &format!("{path}.expected_ports"),
            &behavior.expected_ports,
            &mut out,
        );
    }
    let t = &document.thresholds;
    check_positive("thresholds.time_window_ms", t.time_window_ms, &mut out);
    check_positive(
        "thresholds.recent_user_interaction_window_ms",
        t.recent_user_interaction_window_ms,
        &mut out,
    );
    check_positive(
        "thresholds.session_persistence_threshold_ms",
        t.session_persistence_threshold_ms,
        &mut out,
    );
    check_range(
        "thresholds.beacon_interval_tolerance",
        t.beacon_interval_tolerance,
        0.0,
        1.0,
        &mut out,
    );
    check_range(
        "thresholds.beacon_interval_variance_threshold",
        t.beacon_interval_variance_threshold,
        0.0,
        10.0,
        &mut out,
    );
    check_range(
        "thresholds.connection_frequency_threshold",
        t.connection_frequency_threshold,
        0.0,
        1_000_000.0,
        &mut out,
    );
    check_range(
        "thresholds.payload_entropy_threshold",
        t.payload_entropy_threshold,
        0.0,
        8.0,
        &mut out,
    );
    check_range(
        "thresholds.cadence_anomaly_threshold",
        t.cadence_anomaly_threshold,
        0.0,
        1.0,
        &mut out,
    );
    if out.is_empty() {
        Ok(())
    } else {
        Err(BaselineError::Invalid {
            scope: scope_label(scope),
            version: document.version.clone(),
            problems: out,
        })
    }
}

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
    fn overlay(&mut self, t: &BaselineThresholds) {
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
    exception_networks: Vec<Vec<IpNet>>,
    /// AppNetworkBehaviorBaseline by category.
    pub behaviors: BTreeMap<String, AppCategoryBehavior>,
    /// Thresholds.
    pub thresholds: Thresholds,
}

/// Parses an exception's `cidrs` entry: a CIDR block, or a bare address as a host network.
/// Validation has already rejected anything else.
fn parse_network(text: &str) -> Option<IpNet> {
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

type Versions = Vec<(EpochMillis, Option<Arc<Baseline>>)>;

/// All versions of one scope.
#[derive(Debug, Clone, Default)]
struct ScopeVersions {
    /// Stable id of the scope within the set, for resolve-cache keys.
    id: u32,
    /// (effective time, document or `None` for a deletion), sorted by time.
    versions: Versions,
}

fn kind_index(kind: ScopeKind) -> usize {
    match kind {
        ScopeKind::Global => 0,
        ScopeKind::Platform => 1,
        ScopeKind::DeviceGroup => 2,
        ScopeKind::AppCategory => 3,
        ScopeKind::App => 4,
    }
}

const KINDS: [ScopeKind; 5] = [
    ScopeKind::Global,
    ScopeKind::Platform,
    ScopeKind::DeviceGroup,
    ScopeKind::AppCategory,
    ScopeKind::App,
];

/// Which version of which scope contributed: the key of [`ResolveCache`].
type Fingerprint = [(u32, u32); 7];

/// Memo of merged baselines, valid for one [`BaselineSet::generation`].
#[derive(Debug, Default)]
pub struct ResolveCache {
    generation: u64,
    merged: rustc_hash::FxHashMap<Fingerprint, Arc<EffectiveBaseline>>,
}

impl ResolveCache {
    /// Merged baselines held.
    pub fn len(&self) -> usize {
        self.merged.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.merged.is_empty()
    }
}

/// Every version of every scope, and the merged view at any time.
#[derive(Debug, Clone, Default)]
pub struct BaselineSet {
    /// Per scope kind (in merge order), per scope value (`""` for global).
    kinds: [rustc_hash::FxHashMap<String, ScopeVersions>; 5],
    next_id: u32,
    /// Bumped by every change; lets callers cache resolved baselines.
    generation: u64,
}

impl BaselineSet {
    /// An empty set: resolving gives built-in thresholds and no approved ports.
    pub fn new() -> Self {
        Self::default()
    }

    /// The shipped default baseline.
    pub fn with_defaults() -> Result<Self, BaselineError> {
        let mut set = Self::new();
        for document in default_documents()? {
            set.apply(document)?;
        }
        Ok(set)
    }

    /// Adds a version of a scope, validated first. A version with the same effective time as an
    /// existing one replaces it (re-publishing a document is idempotent).
    pub fn apply(&mut self, document: Baseline) -> Result<(), BaselineError> {
        validate(&document)?;
        let at = document.effective_time;
        let scope = document.scope.clone();
        self.insert(&scope, at, Some(Arc::new(document)));
        Ok(())
    }

    /// Deletes a scope from time `at` on (a tombstone on the baselines topic).
    pub fn delete(&mut self, scope: &BaselineScope, at: EpochMillis) {
        self.insert(scope, at, None);
    }

    /// Withdraws the version of `scope` that took effect at `at`, as if it had never been
    /// published (a tombstone of that version's key on the baselines topic). Returns whether
    /// there was one.
    pub fn withdraw(&mut self, scope: &BaselineScope, at: EpochMillis) -> bool {
        let value = scope.value.as_deref().unwrap_or("");
        let Some(slot) = self
            .kinds
            .get_mut(kind_index(scope.kind))
            .and_then(|kind| kind.get_mut(value))
        else {
            return false;
        };
        match slot.versions.binary_search_by_key(&at, |(t, _)| *t) {
            Ok(index) => {
                slot.versions.remove(index);
                self.generation += 1;
                true
            }
            Err(_) => false,
        }
    }

    fn insert(&mut self, scope: &BaselineScope, at: EpochMillis, entry: Option<Arc<Baseline>>) {
        let value = scope.value.clone().unwrap_or_default();
        let next_id = &mut self.next_id;
        let Some(kind) = self.kinds.get_mut(kind_index(scope.kind)) else {
            return;
        };
        let slot = kind.entry(value).or_insert_with(|| {
            *next_id += 1;
            ScopeVersions {
                id: *next_id,
                versions: Vec::new(),
            }
        });
        match slot.versions.binary_search_by_key(&at, |(t, _)| *t) {
            Ok(index) => {
                if let Some(version) = slot.versions.get_mut(index) {
                    version.1 = entry;
                }
            }
            Err(index) => slot.versions.insert(index, (at, entry)),
        }
        self.generation += 1;
    }

    /// Changes applied so far.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn versions(&self, kind: ScopeKind, value: &str) -> Option<&ScopeVersions> {
        self.kinds.get(kind_index(kind))?.get(value)
    }

    fn version_index(versions: &Versions, at: EpochMillis) -> Option<usize> {
        versions.partition_point(|(t, _)| *t <= at).checked_sub(1)
    }

    /// The document of `scope` in force at `at`.
    pub fn in_force(&self, scope: &BaselineScope, at: EpochMillis) -> Option<&Baseline> {
        let versions = &self
            .versions(scope.kind, scope.value.as_deref().unwrap_or(""))?
            .versions;
        versions
            .get(Self::version_index(versions, at)?)?
            .1
            .as_deref()
    }

    /// Every scope that has a version, in merge order.
    pub fn scopes(&self) -> Vec<BaselineScope> {
        let mut out = Vec::new();
        for kind in KINDS {
            let mut values: Vec<&String> = self
                .kinds
                .get(kind_index(kind))
                .map(|m| m.keys().collect())
                .unwrap_or_default();
            values.sort();
            out.extend(values.into_iter().map(|v| BaselineScope {
                kind,
                value: (kind != ScopeKind::Global).then(|| v.clone()),
            }));
        }
        out
    }

    /// The longest TimeWindow any scope's latest version sets (or the built-in one): a joiner
    /// keeps state that long so no scope loses what it needs.
    pub fn longest_time_window(&self) -> i64 {
        self.scopes()
            .iter()
            .filter_map(|scope| self.in_force(scope, i64::MAX))
            .filter_map(|document| document.thresholds.time_window_ms)
            .fold(Thresholds::default().time_window_ms, i64::max)
    }

    /// The (kind, value) candidates an event matches, in merge order.
    fn candidates<'c>(context: &ScopeContext<'c>) -> [(ScopeKind, Option<&'c str>); 7] {
        let platform = match context.platform {
            Platform::Android => Some("ANDROID"),
            Platform::Ios => Some("IOS"),
            Platform::Unknown => None,
        };
        let ordered = |a: Option<&'c str>, b: Option<&'c str>| match (a, b) {
            (Some(x), Some(y)) if x == y => (Some(x), None),
            (Some(x), Some(y)) if y < x => (Some(y), Some(x)),
            other => other,
        };
        let (group_a, group_b) = ordered(context.device_group, context.device_role);
        let (category_a, category_b) = ordered(context.app_category, context.service_class);
        [
            (ScopeKind::Global, Some("")),
            (ScopeKind::Platform, platform),
            (ScopeKind::DeviceGroup, group_a),
            (ScopeKind::DeviceGroup, group_b),
            (ScopeKind::AppCategory, category_a),
            (ScopeKind::AppCategory, category_b),
            (ScopeKind::App, context.app_id),
        ]
    }

    /// The documents in force at `at` that match `context`, least specific first.
    pub fn matching(&self, context: &ScopeContext<'_>, at: EpochMillis) -> Vec<&Baseline> {
        Self::candidates(context)
            .iter()
            .filter_map(|(kind, value)| {
                let versions = &self.versions(*kind, (*value)?)?.versions;
                versions
                    .get(Self::version_index(versions, at)?)?
                    .1
                    .as_deref()
            })
            .collect()
    }

    /// The merged baseline for an event with `context` at time `at`.
    pub fn resolve(&self, context: &ScopeContext<'_>, at: EpochMillis) -> EffectiveBaseline {
        let mut merged = EffectiveBaseline::default();
        for document in self.matching(context, at) {
            merged.sources.push(format!(
                "{}@{}",
                scope_label(&document.scope),
                document.version
            ));
            merged
                .protocol_ports
                .extend(document.allowed_protocol_ports.iter().cloned());
            if document.allowed_apps.is_some() {
                merged.allowed_apps.clone_from(&document.allowed_apps);
            }
            if document.allowed_managed_apps.is_some() {
                merged
                    .allowed_managed_apps
                    .clone_from(&document.allowed_managed_apps);
            }
            if document.allowed_service_classes.is_some() {
                merged
                    .allowed_service_classes
                    .clone_from(&document.allowed_service_classes);
            }
            for exception in &document.enterprise_exceptions {
                merged.exception_networks.push(
                    exception
                        .cidrs
                        .iter()
                        .filter_map(|c| parse_network(c))
                        .collect(),
                );
                merged.exceptions.push(exception.clone());
            }
            for behavior in &document.app_network_behavior {
                merged
                    .behaviors
                    .insert(behavior.category.clone(), behavior.clone());
            }
            merged.thresholds.overlay(&document.thresholds);
        }
        merged
    }

    /// [`BaselineSet::resolve`], memoised: events that match the same versions of the same
    /// scopes share one merged baseline.
    pub fn resolve_cached(
        &self,
        cache: &mut ResolveCache,
        context: &ScopeContext<'_>,
        at: EpochMillis,
    ) -> Arc<EffectiveBaseline> {
        self.resolve_span(cache, context, at).baseline
    }

    /// [`BaselineSet::resolve_cached`], with the span of time around `at` in which the same
    /// context resolves to the same merged baseline (while the set does not change), so a
    /// caller can keep the answer for later events of the same context.
    pub fn resolve_span(
        &self,
        cache: &mut ResolveCache,
        context: &ScopeContext<'_>,
        at: EpochMillis,
    ) -> ResolvedSpan {
        if cache.generation != self.generation {
            cache.merged.clear();
            cache.generation = self.generation;
        }
        let mut fingerprint: Fingerprint = [(0, 0); 7];
        let (mut from, mut until) = (EpochMillis::MIN, EpochMillis::MAX);
        for (slot, (kind, value)) in fingerprint.iter_mut().zip(Self::candidates(context)) {
            let Some(scope) = value.and_then(|v| self.versions(kind, v)) else {
                continue;
            };
            let next = scope.versions.partition_point(|(t, _)| *t <= at);
            if let Some((t, _)) = scope.versions.get(next) {
                until = until.min(*t);
            }
            if let Some(index) = next.checked_sub(1) {
                if let Some((t, _)) = scope.versions.get(index) {
                    from = from.max(*t);
                }
                *slot = (scope.id, u32::try_from(index).unwrap_or(u32::MAX));
            }
        }
        let baseline = match cache.merged.get(&fingerprint) {
            Some(hit) => Arc::clone(hit),
            None => {
                let merged = Arc::new(self.resolve(context, at));
                cache.merged.insert(fingerprint, Arc::clone(&merged));
                merged
            }
        };
        ResolvedSpan {
            baseline,
            generation: self.generation,
            from,
            until,
        }
    }
}

/// A merged baseline and where it holds: from `from` (inclusive) to `until` (exclusive), for
/// the context it was resolved for, while the set is at `generation`.
#[derive(Debug, Clone)]
pub struct ResolvedSpan {
    /// The merged baseline.
    pub baseline: Arc<EffectiveBaseline>,
    /// [`BaselineSet::generation`] it was resolved at.
    pub generation: u64,
    /// First instant it holds.
    pub from: EpochMillis,
    /// First instant it no longer holds.
    pub until: EpochMillis,
}

impl ResolvedSpan {
    /// True when the span answers for an event at `at` against a set at `generation`.
    pub fn holds(&self, generation: u64, at: EpochMillis) -> bool {
        self.generation == generation && self.from <= at && at < self.until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_labels_round_trip_and_bad_ones_say_why() {
        for label in [
            "global",
            "platform:IOS",
            "group:sales",
            "category:messaging",
            "app:com.x",
        ] {
            assert_eq!(scope_label(&parse_scope_label(label).unwrap()), label);
        }
        assert!(parse_scope_label("galaxy:x")
            .unwrap_err()
            .contains("unknown scope kind"));
        assert!(parse_scope_label("app:")
            .unwrap_err()
            .contains("needs a value"));
        assert!(parse_scope_label("app")
            .unwrap_err()
            .contains("needs a value"));
        assert!(parse_scope_label("global:x")
            .unwrap_err()
            .contains("no value"));
    }

    #[test]
    fn a_withdrawn_version_gives_way_to_the_one_before() {
        let mut set = BaselineSet::new();
        let first = doc("scope: {kind: APP, value: com.x}\nversion: a\neffective_time: 1000\n");
        let second = doc("scope: {kind: APP, value: com.x}\nversion: b\neffective_time: 2000\n");
        let scope = first.scope.clone();
        set.apply(first).unwrap();
        set.apply(second).unwrap();
        assert_eq!(set.in_force(&scope, 2500).unwrap().version, "b");
        assert!(set.withdraw(&scope, 2000));
        assert_eq!(set.in_force(&scope, 2500).unwrap().version, "a");
        assert!(!set.withdraw(&scope, 2000));
        assert!(set.withdraw(&scope, 1000));
        assert!(set.in_force(&scope, 2500).is_none());
    }

    #[test]
    fn a_misspelt_field_is_refused_with_its_path_not_ignored() {
        let yaml = "scope: {kind: GLOBAL}\nversion: v2\neffective_time: 1000\n\
                    allowed_protocol_portz:\n  - {protocol: TLS, ports: [{first: 9443, last: 9443}]}\n";
        match parse_documents(yaml) {
            Err(BaselineError::UnknownFields { document, fields }) => {
                assert_eq!(document, 1);
                assert_eq!(fields, vec!["allowed_protocol_portz".to_string()]);
            }
            other => panic!("expected UnknownFields, got {other:?}"),
        }
        // Nested too: a misspelt threshold in the second document of a list.
        let list = "- {scope: {kind: GLOBAL}, version: a, effective_time: 1}\n\
                    - {scope: {kind: GLOBAL}, version: b, effective_time: 2, thresholds: {beacon_interval_tolerence: 0.2}}\n";
        let error = parse_documents(list).unwrap_err();
        assert!(
            matches!(&error, BaselineError::UnknownFields { document: 2, fields } if fields == &["thresholds.beacon_interval_tolerence".to_string()]),
            "{error}"
        );
        // The correctly spelt document parses.
        let good = yaml.replace("portz", "ports");
        assert_eq!(
            parse_documents(&good).unwrap()[0]
                .allowed_protocol_ports
                .len(),
            1
        );
    }

    #[test]
    fn two_documents_for_one_scope_and_time_are_refused_naming_both() {
        let yaml = "- {scope: {kind: APP, value: com.x}, version: first, effective_time: 1000}\n\
                    - {scope: {kind: APP, value: com.y}, version: other, effective_time: 1000}\n\
                    - {scope: {kind: APP, value: com.x}, version: second, effective_time: 1000}\n";
        let error = parse_documents(yaml).unwrap_err();
        let text = error.to_string();
        assert!(
            matches!(&error, BaselineError::SameVersionKey { first, second, .. }
                if first == &(1, "first".to_string()) && second == &(3, "second".to_string())),
            "{text}"
        );
        assert!(text.contains("app:com.x"), "{text}");
        // Different effective times of one scope are versions, not a clash.
        let versions = yaml.replace(
            "second, effective_time: 1000",
            "second, effective_time: 2000",
        );
        assert_eq!(parse_documents(&versions).unwrap().len(), 3);
    }

    fn doc(yaml: &str) -> Baseline {
        parse_documents(yaml).unwrap().remove(0)
    }

    fn android_app(app: &str) -> ScopeContext<'_> {
        ScopeContext {
            platform: Platform::Android,
            device_group: Some("sales"),
            device_role: Some("developer"),
            app_category: Some("weather"),
            service_class: None,
            app_id: Some(app),
        }
    }

    #[test]
    fn the_default_baseline_parses_and_covers_the_standard_ports() {
        let set = BaselineSet::with_defaults().unwrap();
        let b = set.resolve(&android_app("com.x"), 0);
        assert!(b.permits(AppProtocol::Tls, Transport::Tcp, 443));
        assert!(!b.permits(AppProtocol::Tls, Transport::Tcp, 8443));
        assert!(b.permits(AppProtocol::Http, Transport::Tcp, 80));
        assert!(!b.permits(AppProtocol::Http, Transport::Tcp, 8080));
        assert!(b.permits(AppProtocol::Dns, Transport::Udp, 53));
        assert!(b.permits(AppProtocol::Dns, Transport::Tcp, 53));
        assert!(!b.permits(AppProtocol::Dns, Transport::Udp, 5300));
        // TLS-wrapped variants on their IANA ports, under the protocol a sensor names.
        assert!(b.permits(AppProtocol::Mqtt, Transport::Tcp, 8883));
        assert!(b.permits(AppProtocol::Imap, Transport::Tcp, 993));
        assert!(b.permits(AppProtocol::Pop3, Transport::Tcp, 995));
        assert!(b.permits(AppProtocol::Smtp, Transport::Tcp, 465));
        assert!(b.permits(AppProtocol::Xmpp, Transport::Tcp, 5223));
        assert!(b.permits(AppProtocol::Dns, Transport::Tcp, 853));
        // mDNS is not a resolver port: 5353 is an exception towards its group address only.
        assert!(!b.permits(AppProtocol::Dns, Transport::Udp, 5353));
        assert!(b.permits(AppProtocol::Quic, Transport::Udp, 443));
        assert!(
            !b.permits(AppProtocol::Quic, Transport::Tcp, 443),
            "transport matters"
        );
        assert_eq!(b.thresholds, Thresholds::default());
        assert_eq!(b.version_label(), "global@default-1");
    }

    #[test]
    fn the_default_exceptions_cover_push_messaging_and_conferencing() {
        let set = BaselineSet::with_defaults().unwrap();
        let b = set.resolve(&android_app("com.google.android.gms"), 0);
        use Transport::{Tcp, Udp};
        // (app, destination ip, host names, port, transport, exception expected)
        type Case<'a> = (
            Option<&'a str>,
            &'a str,
            &'a [&'a str],
            i32,
            Transport,
            Option<&'a str>,
        );
        let cases: &[Case<'_>] = &[
            (
                None,
                "142.250.1.188",
                &["mtalk.google.com"],
                5228,
                Tcp,
                Some("fcm"),
            ),
            (
                None,
                "142.250.1.188",
                &["alt3-mtalk.google.com"],
                5230,
                Tcp,
                Some("fcm"),
            ),
            (
                None,
                "142.250.1.188",
                &["mtalk.google.com.evil.io"],
                5228,
                Tcp,
                None,
            ),
            (None, "17.57.144.20", &[], 5223, Tcp, Some("apns")),
            (None, "224.0.0.251", &[], 5353, Udp, Some("mdns")),
            (None, "ff02::fb", &[], 5353, Udp, Some("mdns")),
            (None, "8.8.8.8", &[], 5353, Udp, None),
            (None, "224.0.0.252", &[], 5355, Udp, Some("llmnr")),
            (None, "18.57.144.20", &[], 5223, Tcp, None),
            (
                None,
                "157.240.1.53",
                &["g.whatsapp.net"],
                5222,
                Tcp,
                Some("whatsapp"),
            ),
            (
                Some("com.whatsapp"),
                "157.240.1.53",
                &[],
                5222,
                Tcp,
                Some("whatsapp-app"),
            ),
            (
                Some("us.zoom.videomeetings"),
                "170.114.1.1",
                &[],
                8801,
                Udp,
                Some("zoom-media"),
            ),
            (None, "52.113.10.1", &[], 3479, Udp, Some("teams-media")),
            // A gap between FaceTime's ranges.
            (None, "17.1.2.3", &[], 16390, Udp, None),
            (None, "17.1.2.3", &[], 16400, Udp, Some("facetime")),
            (None, "203.0.113.9", &["update.example"], 8443, Tcp, None),
        ];
        for (app, ip, hosts, port, transport, expected) in cases {
            let destination = Destination {
                app_id: *app,
                ip: ip.parse().ok(),
                hosts,
                sni: hosts.first().copied(),
                port: *port,
                transport: *transport,
            };
            let found = b.exception_for(&destination).map(|e| e.name.as_str());
            assert_eq!(found, *expected, "{ip} {hosts:?} {port}/{transport:?}");
        }
    }

    #[test]
    fn most_specific_scope_wins_for_thresholds_and_app_lists_lists_accumulate() {
        let mut set = BaselineSet::with_defaults().unwrap();
        set.apply(doc("
scope: {kind: PLATFORM, value: ANDROID}
version: a1
effective_time: 0
allowed_apps: [com.a, com.b]
thresholds: {recent_user_interaction_window_ms: 300000, beacon_interval_tolerance: 0.2}
"))
            .unwrap();
        set.apply(doc("
scope: {kind: DEVICE_GROUP, value: developer}
version: d1
effective_time: 0
allowed_protocol_ports: [{protocol: HTTP, transport: TCP, ports: [{first: 8080, last: 8080}]}]
thresholds: {beacon_interval_tolerance: 0.3}
"))
            .unwrap();
        set.apply(doc("
scope: {kind: APP, value: com.b}
version: b1
effective_time: 0
allowed_apps: []
allowed_protocol_ports: [{protocol: MQTT, ports: [{first: 8884, last: 8884}]}]
"))
            .unwrap();
        let b = set.resolve(&android_app("com.b"), 10);
        assert_eq!(
            b.sources,
            vec![
                "global@default-1",
                "platform:ANDROID@a1",
                "group:developer@d1",
                "app:com.b@b1"
            ]
        );
        assert_eq!(b.thresholds.recent_user_interaction_window_ms, 300_000);
        assert_eq!(
            b.thresholds.beacon_interval_tolerance, 0.3,
            "group overrides platform"
        );
        assert_eq!(b.allowed_apps, Some(vec![]), "app scope replaces the list");
        assert!(
            b.permits(AppProtocol::Http, Transport::Tcp, 8080),
            "group adds a port"
        );
        assert!(
            b.permits(AppProtocol::Http, Transport::Tcp, 80),
            "and keeps the global ones"
        );
        assert!(b.permits(AppProtocol::Mqtt, Transport::Tcp, 8884));
        let other = set.resolve(&android_app("com.a"), 10);
        assert_eq!(
            other.allowed_apps,
            Some(vec!["com.a".to_string(), "com.b".to_string()])
        );
        assert!(!other.permits(AppProtocol::Mqtt, Transport::Tcp, 8884));
        let ios = set.resolve(
            &ScopeContext {
                platform: Platform::Ios,
                ..android_app("com.a")
            },
            10,
        );
        assert!(ios.thresholds.supervised_required, "default iOS scope");
        assert_eq!(ios.allowed_apps, None);
    }

    #[test]
    fn the_resolve_cache_is_shared_and_invalidated_by_changes() {
        let mut set = BaselineSet::with_defaults().unwrap();
        let mut cache = ResolveCache::default();
        let a = set.resolve_cached(&mut cache, &android_app("com.a"), 10);
        let b = set.resolve_cached(&mut cache, &android_app("com.b"), 20);
        assert!(
            Arc::ptr_eq(&a, &b),
            "same scopes and versions share one merged baseline"
        );
        assert_eq!(cache.len(), 1);
        // Replacing the global version at the same effective time leaves the cache key as it
        // was: only the invalidation makes the change visible.
        set.apply(doc("{scope: {kind: GLOBAL}, version: g2, effective_time: 0, thresholds: {time_window_ms: 5000}}"))
            .unwrap();
        let a = set.resolve_cached(&mut cache, &android_app("com.a"), 10);
        assert_eq!(
            a.thresholds.time_window_ms, 5000,
            "a change is seen at once"
        );
        assert_eq!(*a, set.resolve(&android_app("com.a"), 10));
    }

    #[test]
    fn a_resolved_span_holds_between_the_versions_around_it_and_until_the_set_changes() {
        let mut set = BaselineSet::new();
        set.apply(doc("{scope: {kind: APP, value: com.a}, version: v1, effective_time: 1000, thresholds: {time_window_ms: 1000}}")).unwrap();
        set.apply(doc("{scope: {kind: PLATFORM, value: ANDROID}, version: p1, effective_time: 3000, thresholds: {time_window_ms: 3000}}")).unwrap();
        let mut cache = ResolveCache::default();
        let context = android_app("com.a");
        let span = |set: &BaselineSet, cache: &mut ResolveCache, at| {
            let s = set.resolve_span(cache, &context, at);
            (s.from, s.until, s.baseline.thresholds.time_window_ms)
        };
        // Before any version, between them, after both: each bounded by the nearest versions
        // of every scope that matches.
        assert_eq!(
            span(&set, &mut cache, 500),
            (EpochMillis::MIN, 1000, 6 * 3_600_000)
        );
        assert_eq!(span(&set, &mut cache, 2000), (1000, 3000, 1000));
        assert_eq!(span(&set, &mut cache, 4000), (3000, EpochMillis::MAX, 1000));
        let held = set.resolve_span(&mut cache, &context, 2000);
        assert!(held.holds(set.generation(), 1000) && held.holds(set.generation(), 2999));
        assert!(!held.holds(set.generation(), 999) && !held.holds(set.generation(), 3000));
        set.apply(doc(
            "{scope: {kind: APP, value: com.b}, version: v1, effective_time: 0}",
        ))
        .unwrap();
        assert!(
            !held.holds(set.generation(), 2000),
            "any change to the set ends it"
        );
    }

    #[test]
    fn versions_apply_from_their_effective_time_and_tombstones_delete() {
        let mut set = BaselineSet::new();
        let v1 = doc("{scope: {kind: APP, value: com.x}, version: v1, effective_time: '2026-11-01T00:00:00Z', thresholds: {time_window_ms: 1000}}");
        let v2 = doc("{scope: {kind: APP, value: com.x}, version: v2, effective_time: '2026-11-02T00:00:00Z', thresholds: {time_window_ms: 2000}}");
        let t1 = v1.effective_time;
        let t2 = v2.effective_time;
        assert_eq!(t2 - t1, 86_400_000);
        set.apply(v2).unwrap();
        set.apply(v1).unwrap();
        let scope = BaselineScope {
            kind: ScopeKind::App,
            value: Some("com.x".to_string()),
        };
        assert!(set.in_force(&scope, t1 - 1).is_none());
        assert_eq!(
            set.in_force(&scope, t1).map(|b| b.version.as_str()),
            Some("v1")
        );
        assert_eq!(
            set.in_force(&scope, t2 - 1).map(|b| b.version.as_str()),
            Some("v1")
        );
        assert_eq!(
            set.in_force(&scope, t2).map(|b| b.version.as_str()),
            Some("v2")
        );
        set.delete(&scope, t2 + 10);
        assert!(set.in_force(&scope, t2 + 10).is_none());
        assert_eq!(
            set.in_force(&scope, t2 + 9).map(|b| b.version.as_str()),
            Some("v2")
        );
        assert_eq!(
            set.resolve(&android_app("com.x"), t2 + 5)
                .thresholds
                .time_window_ms,
            2000
        );
    }

    #[test]
    fn invalid_documents_name_every_problem_with_path_and_value() {
        let err = parse_documents(
            "
scope: {kind: GLOBAL, value: x}
version: ''
effective_time: 0
allowed_protocol_ports:
  - {protocol: TLS, ports: [{first: 443, last: 443}, {first: 9000, last: 70000}]}
  - {protocol: HTTP, ports: []}
enterprise_exceptions:
  - {name: open, reason: everything}
  - {name: bad-cidr, reason: typo, cidrs: [10.0.0.0/33]}
thresholds: {beacon_interval_tolerance: 1.5, time_window_ms: 0, payload_entropy_threshold: 9}
",
        )
        .unwrap_err();
        let BaselineError::Invalid { problems, .. } = &err else {
            panic!("{err}")
        };
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "scope.value",
                "version",
                "allowed_protocol_ports[0].ports[1]",
                "allowed_protocol_ports[1].ports",
                "enterprise_exceptions[0]",
                "enterprise_exceptions[1].cidrs[0]",
                "thresholds.time_window_ms",
                "thresholds.beacon_interval_tolerance",
                "thresholds.payload_entropy_threshold",
            ]
        );
        let message = err.to_string();
        assert!(
            message.contains("allowed_protocol_ports[0].ports[1]: ports are 0-65535 (9000-70000)"),
            "{message}"
        );
        assert!(
            message.contains("thresholds.beacon_interval_tolerance: must be between 0 and 1 (1.5)"),
            "{message}"
        );
    }

    #[test]
    fn syntax_errors_are_reported_not_panicked() {
        assert!(matches!(
            parse_documents("scope: [unclosed"),
            Err(BaselineError::Syntax(_))
        ));
        assert!(matches!(
            parse_documents("{scope: {kind: NOPE}, version: v, effective_time: 0}"),
            Err(BaselineError::Syntax(_))
        ));
        assert!(matches!(
            parse_documents("{scope: {kind: GLOBAL}, version: v, effective_time: 'yesterday'}"),
            Err(BaselineError::Syntax(_))
        ));
        // JSON is YAML.
        assert!(parse_documents(
            r#"{"scope": {"kind": "GLOBAL"}, "version": "j", "effective_time": 5}"#
        )
        .is_ok());
    }

    #[test]
    fn suffixes_respect_label_boundaries() {
        assert!(host_has_suffix("mtalk.google.com", "google.com"));
        assert!(host_has_suffix("google.com", "google.com"));
        assert!(host_has_suffix("a.Google.COM.", ".google.com"));
        assert!(!host_has_suffix("evilgoogle.com", "google.com"));
        assert!(!host_has_suffix("com", "google.com"));
    }
}
