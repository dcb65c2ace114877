//! Checks one baseline document: ports, ranges, positive durations, every problem at once.

use super::effective::parse_network;
use crate::model::{AppProtocol, Baseline, PortRange, ScopeKind};

use super::{scope_label, BaselineError, Invalid};

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
