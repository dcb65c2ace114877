//! A proposal as baseline documents: each scope's version in force with the learned approvals
//! and behaviour added, under a new version; the support of each addition as comments; and the
//! diff a reviewer reads.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::{platform_name, AppBehaviour, Approval, Proposal, Support};
use crate::baseline::{scope_label, validate, BaselineError, BaselineSet};
use crate::model::{
    format_rfc3339_millis, AppCategoryBehavior, Baseline, BaselineScope, BaselineThresholds,
    EpochMillis, PortRange, ProtocolPortRule, Transport,
};

/// How the draft's documents are versioned.
#[derive(Debug, Clone, PartialEq)]
pub struct DraftOptions {
    /// Version label of every document of the draft.
    pub version: String,
    /// Effective time; default the first session learned from, so that a backtest of the
    /// learned period runs under it. A document's time is always after the version of its scope
    /// it builds on (else that version would stay in force over it).
    pub effective_time: Option<EpochMillis>,
    /// What it was learned from, for the comments (`fleet directory ...`, `topics ...`).
    pub source: String,
    /// Also write each app's behaviour as an app-scope AppNetworkBehaviorBaseline entry.
    pub behaviours: bool,
}

/// One document of a draft.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DraftDocument {
    /// The document: the version in force of its scope with the additions.
    pub document: Baseline,
    /// The version it builds on, when its scope had one.
    pub builds_on: Option<String>,
    /// The approvals added.
    pub approvals: Vec<Approval>,
    /// The behaviour entry added or replaced.
    pub behaviour: Option<AppBehaviour>,
    /// The behaviour entry of the same category it replaces, when there was one.
    pub replaces_behaviour: bool,
}

/// A proposal as documents.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Draft {
    /// The proposal.
    pub proposal: Proposal,
    /// One document per scope with an addition.
    pub documents: Vec<DraftDocument>,
}

fn empty(scope: BaselineScope) -> Baseline {
    Baseline {
        scope,
        version: String::new(),
        effective_time: 0,
        description: None,
        allowed_protocol_ports: Vec::new(),
        allowed_apps: None,
        allowed_managed_apps: None,
        allowed_service_classes: None,
        enterprise_exceptions: Vec::new(),
        app_network_behavior: Vec::new(),
        thresholds: BaselineThresholds::default(),
    }
}

/// Port ranges sorted, overlapping and adjacent ones joined (ranges are never expanded into
/// their ports: a scope may approve 1024-65535).
pub(super) fn merge_ranges(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort_unstable_by_key(|r| (r.first, r.last));
    let mut out: Vec<PortRange> = Vec::new();
    for range in ranges {
        match out.last_mut() {
            Some(last) if range.first <= last.last.saturating_add(1) => {
                last.last = last.last.max(range.last);
            }
            _ => out.push(range),
        }
    }
    out
}

/// Single ports as ranges, adjacent ones joined.
fn ranges(ports: impl IntoIterator<Item = i32>) -> Vec<PortRange> {
    merge_ranges(
        ports
            .into_iter()
            .map(|port| PortRange {
                first: port,
                last: port,
            })
            .collect(),
    )
}

/// Adds `port` to the rule of (protocol, transport) in `rules`, or a new rule.
fn approve(rules: &mut Vec<ProtocolPortRule>, approval: &Approval) {
    let range = PortRange {
        first: approval.port,
        last: approval.port,
    };
    match rules
        .iter_mut()
        .find(|r| r.protocol == approval.protocol && r.transport == Some(approval.transport))
    {
        Some(rule) => {
            let mut ports = std::mem::take(&mut rule.ports);
            ports.push(range);
            rule.ports = merge_ranges(ports);
        }
        None => rules.push(ProtocolPortRule {
            protocol: approval.protocol,
            transport: Some(approval.transport),
            ports: vec![range],
        }),
    }
}

/// The document a draft starts from for `scope`: the scope's latest version (a draft replaces
/// it entirely, so it carries it) under the draft's version, or an empty one.
fn builds_on(
    current: &BaselineSet,
    scope: &BaselineScope,
    at: EpochMillis,
    options: &DraftOptions,
) -> DraftDocument {
    let base = current.in_force(scope, EpochMillis::MAX);
    let mut document = base.cloned().unwrap_or_else(|| empty(scope.clone()));
    document.effective_time = base.map_or(at, |b| at.max(b.effective_time + 1));
    document.version = options.version.clone();
    document.description = Some(match base {
        Some(b) => format!(
            "version {} with what offportctl baselines learn proposed from {}",
            b.version, options.source
        ),
        None => format!(
            "proposed by offportctl baselines learn from {}",
            options.source
        ),
    });
    DraftDocument {
        document,
        builds_on: base.map(|b| b.version.clone()),
        approvals: Vec::new(),
        behaviour: None,
        replaces_behaviour: false,
    }
}

/// The proposal as documents built on the versions of `current` (the set in force).
pub fn draft(
    proposal: Proposal,
    current: &BaselineSet,
    options: &DraftOptions,
) -> Result<Draft, BaselineError> {
    let at = options
        .effective_time
        .or(proposal.span.map(|(first, _)| first))
        .unwrap_or(0);
    let mut scopes: BTreeMap<BaselineScope, DraftDocument> = BTreeMap::new();
    let slot = |scopes: &mut BTreeMap<BaselineScope, DraftDocument>, scope: &BaselineScope| {
        if !scopes.contains_key(scope) {
            scopes.insert(scope.clone(), builds_on(current, scope, at, options));
        }
    };
    for approval in &proposal.approvals {
        slot(&mut scopes, &approval.scope);
        let Some(entry) = scopes.get_mut(&approval.scope) else {
            continue;
        };
        approve(&mut entry.document.allowed_protocol_ports, approval);
        entry.approvals.push(approval.clone());
    }
    if options.behaviours {
        for behaviour in &proposal.behaviours {
            let scope = BaselineScope {
                kind: crate::model::ScopeKind::App,
                value: Some(behaviour.app_id.clone()),
            };
            slot(&mut scopes, &scope);
            let Some(entry) = scopes.get_mut(&scope) else {
                continue;
            };
            let learned = AppCategoryBehavior {
                category: behaviour.app_id.clone(),
                expected_protocols: behaviour.protocols.clone(),
                expected_ports: ranges(behaviour.ports.iter().map(|(_, p)| *p)),
                expected_domain_suffixes: behaviour.domain_suffixes.clone(),
            };
            let behaviors = &mut entry.document.app_network_behavior;
            match behaviors
                .iter_mut()
                .find(|b| b.category == behaviour.app_id)
            {
                // The same app id on the other platform: one entry holds both.
                Some(existing) if entry.behaviour.is_some() => {
                    let mut ports = std::mem::take(&mut existing.expected_ports);
                    ports.extend(learned.expected_ports);
                    existing.expected_ports = merge_ranges(ports);
                    for protocol in learned.expected_protocols {
                        if !existing.expected_protocols.contains(&protocol) {
                            existing.expected_protocols.push(protocol);
                        }
                    }
                    existing
                        .expected_domain_suffixes
                        .extend(learned.expected_domain_suffixes);
                    existing.expected_domain_suffixes.sort();
                    existing.expected_domain_suffixes.dedup();
                }
                Some(existing) => {
                    *existing = learned;
                    entry.replaces_behaviour = true;
                }
                None => behaviors.push(learned),
            }
            entry.behaviour = Some(behaviour.clone());
        }
    }
    let documents: Vec<DraftDocument> = scopes.into_values().collect();
    for document in &documents {
        validate(&document.document)?;
    }
    Ok(Draft {
        proposal,
        documents,
    })
}

fn support_line(support: &Support) -> String {
    format!(
        "{} devices, {} days, {} sessions ({} off the baseline in force), {:.0}% of the devices of its app or group, {} to {}",
        support.devices,
        support.days,
        support.sessions,
        support.off_baseline,
        support.device_share * 100.0,
        format_rfc3339_millis(support.first_seen),
        format_rfc3339_millis(support.last_seen),
    )
}

fn transport_port(transport: Transport, port: i32) -> String {
    format!("{port}/{}", transport.name().to_ascii_lowercase())
}

fn behaviour_lines(behaviour: &AppBehaviour) -> Vec<String> {
    let protocols: Vec<&str> = behaviour.protocols.iter().map(|p| p.name()).collect();
    let ports: Vec<String> = behaviour
        .ports
        .iter()
        .map(|(t, p)| transport_port(*t, *p))
        .collect();
    let hours = if behaviour.active_hours_utc.is_empty() {
        "none above 2%".to_string()
    } else {
        behaviour
            .active_hours_utc
            .iter()
            .map(|h| format!("{h:02}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    vec![
        format!(
            "behaviour of {} ({}): {}",
            behaviour.app_id,
            platform_name(behaviour.platform),
            support_line(&behaviour.support)
        ),
        format!(
            "  protocols {}; ports {}; {} domains",
            protocols.join(", "),
            ports.join(", "),
            behaviour.domain_suffixes.len()
        ),
        format!(
            "  median interval {}, median {} B out / {} B in, active hours (UTC) {hours}, {:.0}% foreground",
            behaviour
                .median_interval_ms
                .map_or("none (no repeats)".to_string(), |ms| format!("{} s", ms / 1000)),
            behaviour.median_bytes_out,
            behaviour.median_bytes_in,
            behaviour.foreground_share * 100.0
        ),
    ]
}

/// The draft as a YAML list of documents, each preceded by comments giving the support of what
/// was added; `offportctl baselines validate|diff|apply` and `replay --baseline` read it.
pub fn render_yaml(draft: &Draft) -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    let proposal = &draft.proposal;
    let config = &proposal.config;
    let _ = writeln!(
        out,
        "# A baseline draft proposed by `offportctl baselines learn`: review every addition before\n\
         # you apply it (`offportctl baselines apply`). Each document is the latest version of its\n\
         # scope with the additions, under a new version: applying it keeps what the scope had.\n\
         #\n\
         # Guards: min_devices {}, min_days {}, min_sessions {}, min_device_share {:.0}%,\n\
         # widen_min_apps {}, widen_min_groups {}. Never learned from: (device, app) pairs with an\n\
         # application-layer C2 finding, apps not reported managed, sessions without an app or a\n\
         # recognised protocol.",
        config.min_devices,
        config.min_days,
        config.min_sessions,
        config.min_device_share * 100.0,
        config.widen_min_apps,
        config.widen_min_groups
    );
    if draft.documents.is_empty() {
        out.push_str("#\n# Nothing to propose.\n[]\n");
        return Ok(out);
    }
    for document in &draft.documents {
        out.push('\n');
        let label = scope_label(&document.document.scope);
        let _ = writeln!(
            out,
            "# {label}: {}",
            match &document.builds_on {
                Some(version) => format!("builds on version {version}"),
                None => "a new scope".to_string(),
            }
        );
        for approval in &document.approvals {
            let _ = writeln!(
                out,
                "#   approve {} on {}: {}",
                approval.protocol.name(),
                transport_port(approval.transport, approval.port),
                support_line(&approval.support)
            );
            let _ = writeln!(
                out,
                "#     {}; apps: {}",
                approval.reason,
                approval.apps.join(", ")
            );
        }
        if let Some(behaviour) = &document.behaviour {
            for line in behaviour_lines(behaviour) {
                let _ = writeln!(out, "#   {line}");
            }
            if document.replaces_behaviour {
                let _ = writeln!(out, "#   (replaces the scope's entry for the app)");
            }
        }
        let text = serde_yaml_ng::to_string(&document.document)?;
        for (index, line) in text.lines().enumerate() {
            out.push_str(if index == 0 { "- " } else { "  " });
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

/// What the draft changes against the baselines in force, and what the guards turned down.
pub fn render_diff(draft: &Draft) -> String {
    let mut out = String::new();
    let proposal = &draft.proposal;
    let counts = &proposal.counts;
    let _ = writeln!(
        out,
        "learned from {} of {} sessions; left out: {} without an app, {} without a recognised protocol, {} of apps not reported managed, {} of {} (device, app) pairs with an application-layer C2 finding",
        counts.learned_from,
        counts.sessions,
        counts.no_app,
        counts.unknown_protocol,
        counts.not_managed,
        counts.c2_pairs_sessions,
        counts.c2_pairs
    );
    if let Some((first, last)) = proposal.span {
        let _ = writeln!(
            out,
            "sessions from {} to {}",
            format_rfc3339_millis(first),
            format_rfc3339_millis(last)
        );
    }
    for document in &draft.documents {
        let label = scope_label(&document.document.scope);
        let _ = writeln!(
            out,
            "{label} -> version {} ({})",
            document.document.version,
            match &document.builds_on {
                Some(version) => format!("on top of {version}"),
                None => "new scope".to_string(),
            }
        );
        for approval in &document.approvals {
            let _ = writeln!(
                out,
                "  + approve {} on {}: {}",
                approval.protocol.name(),
                transport_port(approval.transport, approval.port),
                support_line(&approval.support)
            );
        }
        if let Some(behaviour) = &document.behaviour {
            let _ = writeln!(
                out,
                "  {} behaviour: {} protocols, {} ports, {} domains",
                if document.replaces_behaviour {
                    "~"
                } else {
                    "+"
                },
                behaviour.protocols.len(),
                behaviour.ports.len(),
                behaviour.domain_suffixes.len()
            );
        }
    }
    let _ = writeln!(
        out,
        "{} approvals and {} behaviours proposed; {} (app, protocol, port) the baselines in force permit already",
        proposal.approvals.len(),
        draft.documents.iter().filter(|d| d.behaviour.is_some()).count(),
        proposal.already_permitted
    );
    if !proposal.rejected.is_empty() {
        let _ = writeln!(
            out,
            "turned down by the guards ({}):",
            proposal.rejected.len()
        );
        // The largest first: a behaviour close to the guards is the one a reviewer weighs.
        let mut rejected: Vec<_> = proposal.rejected.iter().collect();
        rejected.sort_by_key(|r| std::cmp::Reverse(r.support.sessions));
        for rejected in rejected.iter().take(REJECTED_LISTED) {
            let _ = writeln!(
                out,
                "  - {}: {} ({} devices, {} days, {} sessions)",
                rejected.what,
                rejected.why,
                rejected.support.devices,
                rejected.support.days,
                rejected.support.sessions
            );
        }
        if rejected.len() > REJECTED_LISTED {
            let _ = writeln!(
                out,
                "  ... and {} more with less support",
                rejected.len() - REJECTED_LISTED
            );
        }
    }
    out
}

/// Candidates the diff lists of those the guards turned down.
const REJECTED_LISTED: usize = 25;
