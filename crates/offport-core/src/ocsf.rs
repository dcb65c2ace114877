//! A [`Finding`] as an OCSF 1.3 Detection Finding (class_uid 2004), the JSON that goes to the
//! `alerts.ocsf` topic for SIEMs.
//!
//! | OCSF attribute | From the finding |
//! |---|---|
//! | `activity_id` | 1 Create for revision 0, 2 Update for later revisions (same `finding_info.uid`) |
//! | `category_uid`, `class_uid`, `type_uid` | 2 Findings, 2004 Detection Finding, 2004 × 100 + activity_id |
//! | `severity_id` | Info 1, Low 2, Medium 3, High 4, Critical 5 |
//! | `time`, `start_time`, `end_time` | event time, first seen, last seen (epoch ms) |
//! | `confidence_id`, `confidence_score` | confidence under 0.5 Low, under 0.8 Medium, else High; the score 0-100 |
//! | `risk_score` | the score 0-100 |
//! | `finding_info` | uid = finding id, title, desc, analytic (MITRE analytic id, type Rule), attacks (technique, tactic TA0037/TA0011 Command and Control), first/last seen, types |
//! | `metadata` | OCSF version 1.3.0, product offport, `uid` = `<finding id>:<revision>`, log name `alerts` |
//! | `device` | uid = device id, type Mobile (5), os Android (201) or iOS (301) |
//! | `resources` | the app (uid = package/bundle id, name, type `Mobile Application`) when attributed |
//! | `evidences` | the destination as `dst_endpoint` (ip, port, hostname), `connection_info` (tcp/udp), and each evidence item with its observed and baseline values in `data` |
//! | `unmapped.offport` | analytic, revision, session count, baseline version, protocol |

use serde_json::{json, Value};

use crate::model::{Analytic, Finding, Platform, Severity, Transport};

/// The OCSF schema version the mapping follows.
pub const OCSF_VERSION: &str = "1.3.0";
/// OCSF class of a Detection Finding.
pub const DETECTION_FINDING: i64 = 2004;

fn severity_id(severity: Severity) -> (i64, &'static str) {
    match severity {
        Severity::Info => (1, "Informational"),
        Severity::Low => (2, "Low"),
        Severity::Medium => (3, "Medium"),
        Severity::High => (4, "High"),
        Severity::Critical => (5, "Critical"),
    }
}

fn confidence_id(confidence: f64) -> (i64, &'static str) {
    if confidence < 0.5 {
        (1, "Low")
    } else if confidence < 0.8 {
        (2, "Medium")
    } else {
        (3, "High")
    }
}

fn os(platform: Platform) -> Value {
    match platform {
        Platform::Android => json!({"name": "Android", "type_id": 201, "type": "Android"}),
        Platform::Ios => json!({"name": "iOS", "type_id": 301, "type": "iOS"}),
        _ => json!({"name": "Unknown", "type_id": 0, "type": "Unknown"}),
    }
}

fn title(finding: &Finding) -> String {
    let app = finding.app_id.as_deref().unwrap_or("an unattributed app");
    let destination = finding.dst_host.as_deref().unwrap_or(&finding.dst_ip);
    match finding.analytic {
        Analytic::NonStandardPortAndroid | Analytic::NonStandardPortIos => format!(
            "{:?} on non-standard port {} from {app} to {destination}",
            finding.protocol, finding.dst_port
        ),
        Analytic::AppLayerC2 => format!(
            "Application-layer C2 pattern from {app} to {destination}:{}",
            finding.dst_port
        ),
    }
}

/// The Detection Finding for one emission (revision) of a finding.
pub fn detection_finding(finding: &Finding, product_version: &str) -> Value {
    let activity_id: i64 = if finding.revision == 0 { 1 } else { 2 };
    let (severity_id, severity) = severity_id(finding.severity);
    let (confidence_id, confidence) = confidence_id(finding.confidence);
    let (protocol_name, protocol_num) = match finding.transport {
        Transport::Udp => ("udp", 17),
        _ => ("tcp", 6),
    };
    let tactic = match finding.platform {
        // Enterprise and mobile ATT&CK number Command and Control differently.
        Platform::Android | Platform::Ios => {
            json!({"uid": "TA0037", "name": "Command and Control"})
        }
        _ => json!({"uid": "TA0011", "name": "Command and Control"}),
    };
    let items: Vec<Value> = finding
        .evidence
        .iter()
        .map(|e| {
            json!({
                "kind": e.kind,
                "description": e.description,
                "observed": e.observed,
                "observed_number": e.observed_number,
                "baseline": e.baseline,
                "weight": e.weight,
            })
        })
        .collect();
    let mut endpoint = json!({"ip": finding.dst_ip, "port": finding.dst_port});
    if let (Some(host), Some(map)) = (&finding.dst_host, endpoint.as_object_mut()) {
        map.insert("hostname".to_string(), json!(host));
    }
    let mut event = json!({
        "activity_id": activity_id,
        "activity_name": if activity_id == 1 { "Create" } else { "Update" },
        "category_uid": 2,
        "category_name": "Findings",
        "class_uid": DETECTION_FINDING,
        "class_name": "Detection Finding",
        "type_uid": DETECTION_FINDING * 100 + activity_id,
        "type_name": format!("Detection Finding: {}", if activity_id == 1 { "Create" } else { "Update" }),
        "severity_id": severity_id,
        "severity": severity,
        "status_id": 1,
        "status": "New",
        "time": finding.event_time,
        "start_time": finding.first_seen,
        "end_time": finding.last_seen,
        "count": finding.session_count,
        "confidence_id": confidence_id,
        "confidence": confidence,
        "confidence_score": (finding.confidence * 100.0).round() as i64,
        "risk_score": finding.score,
        "is_alert": true,
        "message": title(finding),
        "finding_info": {
            "uid": finding.finding_id,
            "title": title(finding),
            "desc": format!("{} ({}), MITRE {} {}", finding.analytic_id, finding.detection_strategy, finding.technique_id, finding.technique_name),
            "types": [finding.analytic_id],
            "first_seen_time": finding.first_seen,
            "last_seen_time": finding.last_seen,
            "modified_time": finding.event_time,
            "analytic": {
                "uid": finding.analytic_id,
                "name": finding.analytic_id,
                "type_id": 1,
                "type": "Rule",
            },
            "attacks": [{
                "technique": {"uid": finding.technique_id, "name": finding.technique_name},
                "tactic": tactic,
                "version": "17",
            }],
        },
        "metadata": {
            "version": OCSF_VERSION,
            "uid": format!("{}:{}", finding.finding_id, finding.revision),
            "log_name": "alerts",
            "product": {"name": "offport", "vendor_name": "offport", "version": product_version},
        },
        "device": {
            "uid": finding.device_id,
            "type_id": 5,
            "type": "Mobile",
            "os": os(finding.platform),
        },
        "evidences": [{
            "dst_endpoint": endpoint,
            "connection_info": {"protocol_name": protocol_name, "protocol_num": protocol_num},
            "data": {"evidence": items},
        }],
        "unmapped": {
            "offport": {
                "analytic": finding.analytic,
                "revision": finding.revision,
                "session_count": finding.session_count,
                "baseline_version": finding.baseline_version,
                "protocol": finding.protocol,
                "status": finding.status,
            }
        },
    });
    if let (Some(app), Some(map)) = (&finding.app_id, event.as_object_mut()) {
        map.insert(
            "resources".to_string(),
            json!([{
                "uid": app,
                "name": finding.app_name.as_deref().unwrap_or(app),
                "type": "Mobile Application",
            }]),
        );
    }
    event
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;
    use crate::examples;

    #[test]
    fn a_finding_maps_to_a_detection_finding_with_every_required_attribute() {
        let mut finding = examples::finding();
        finding.revision = 0;
        let event = detection_finding(&finding, "0.1.0");
        assert_eq!(event["class_uid"], 2004);
        assert_eq!(event["category_uid"], 2);
        assert_eq!(event["activity_id"], 1);
        assert_eq!(event["type_uid"], 200401);
        assert!(event["time"].as_i64().unwrap() > 0);
        assert!((1..=5).contains(&event["severity_id"].as_i64().unwrap()));
        assert_eq!(event["finding_info"]["uid"], finding.finding_id.as_str());
        assert_eq!(event["metadata"]["version"], OCSF_VERSION);
        assert_eq!(event["metadata"]["product"]["name"], "offport");
        assert_eq!(event["device"]["uid"], finding.device_id.as_str());
        assert_eq!(event["device"]["type_id"], 5);
        assert_eq!(
            event["evidences"][0]["dst_endpoint"]["port"],
            finding.dst_port
        );
        assert_eq!(
            event["evidences"][0]["data"]["evidence"]
                .as_array()
                .unwrap()
                .len(),
            finding.evidence.len()
        );
        assert_eq!(
            event["finding_info"]["attacks"][0]["technique"]["uid"],
            finding.technique_id.as_str()
        );
        if let Some(app) = &finding.app_id {
            assert_eq!(event["resources"][0]["uid"], app.as_str());
        }
    }

    #[test]
    fn a_later_revision_is_an_update_of_the_same_finding() {
        let mut finding = examples::finding();
        finding.revision = 2;
        let event = detection_finding(&finding, "0.1.0");
        assert_eq!(event["activity_id"], 2);
        assert_eq!(event["type_uid"], 200402);
        assert_eq!(event["finding_info"]["uid"], finding.finding_id.as_str());
        assert_eq!(
            event["metadata"]["uid"],
            format!("{}:2", finding.finding_id)
        );
    }
}
