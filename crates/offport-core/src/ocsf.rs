//! A [`Finding`] as an OCSF 1.4.0 Detection Finding (class_uid 2004) with the `host` profile,
//! the JSON that goes to the `alerts.ocsf` topic for SIEMs. Every record is valid against the
//! official JSON Schema of that class and profile (`schemas/ocsf/`, checked by the tests).
//! 1.4.0 is the first release with `is_alert` and with `device` on every finding; OCSF keeps a
//! major version's attributes in later minor versions, so SIEMs on later 1.x releases read it.
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
//! | `metadata` | OCSF version 1.4.0, profiles `host`, product offport, `uid` = `<finding id>:<revision>`, log name `alerts` |
//! | `status_id`, `status`, `status_code` | 1 New; `status_code` is offport's status (`NEW`, `UPDATED`) |
//! | `timezone_offset` | 0: every time is UTC epoch milliseconds |
//! | `device` | uid = device id, type Mobile (5), os Android (201) or iOS (301) |
//! | `resources` | the app (uid = package/bundle id, name, type `Mobile Application`) when attributed |
//! | `evidences` | the destination as `dst_endpoint` (ip, port, hostname), `connection_info` (tcp/udp, direction Outbound), and each evidence item with its observed and baseline values in `data` |
//! | `observables` | the device (Endpoint, 20), the destination address (IP Address, 2), host name (Hostname, 1) and port (Port, 11), the app (Resource UID, 10): the pivots a SIEM indexes |
//! | `unmapped.offport` | analytic, revision, session count, baseline version, protocol |

use serde_json::{json, Value};

use crate::model::{Analytic, Finding, Platform, Severity, Transport};

/// The OCSF schema version the mapping follows.
pub const OCSF_VERSION: &str = "1.4.0";
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
            "{} on non-standard port {} from {app} to {destination}",
            finding.protocol.name(),
            finding.dst_port
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
    // Every entity of the finding, as the pivots a SIEM indexes (name = the attribute's path).
    let mut observables = vec![
        json!({"name": "device", "type_id": 20, "type": "Endpoint", "value": finding.device_id}),
        json!({"name": "evidences[0].dst_endpoint.ip", "type_id": 2, "type": "IP Address", "value": finding.dst_ip}),
        json!({"name": "evidences[0].dst_endpoint.port", "type_id": 11, "type": "Port", "value": finding.dst_port.to_string()}),
    ];
    if let Some(host) = &finding.dst_host {
        observables.push(json!({"name": "evidences[0].dst_endpoint.hostname", "type_id": 1, "type": "Hostname", "value": host}));
    }
    if let Some(app) = &finding.app_id {
        observables.push(json!({"name": "resources[0].uid", "type_id": 10, "type": "Resource UID", "value": app}));
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
        "status_code": finding.status,
        "timezone_offset": 0,
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
            "profiles": ["host"],
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
            "connection_info": {
                "protocol_name": protocol_name,
                "protocol_num": protocol_num,
                "direction_id": 2,
                "direction": "Outbound",
            },
            "data": {"evidence": items},
        }],
        "observables": observables,
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

/// Every violation of the official OCSF 1.4.0 Detection Finding (host profile) JSON Schema
/// (`schemas/ocsf/`) in `event`, as `path: message`. The integration tests have their own
/// (`offport_tests::ocsf_violations`) for the records the services write.
#[cfg(test)]
fn schema_violations(event: &Value) -> Vec<String> {
    static SCHEMA: std::sync::OnceLock<Result<jsonschema::Validator, String>> =
        std::sync::OnceLock::new();
    let validator = SCHEMA.get_or_init(|| {
        let schema: Value = serde_json::from_str(include_str!(
            "../../../schemas/ocsf/detection_finding-1.4.0-host.schema.json"
        ))
        .map_err(|e| format!("the OCSF schema file is not JSON: {e}"))?;
        jsonschema::draft202012::new(&schema).map_err(|e| format!("the OCSF schema: {e}"))
    });
    match validator {
        Ok(validator) => validator
            .iter_errors(event)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect(),
        Err(error) => vec![error.clone()],
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;
    use crate::examples;

    fn violations(event: &Value) -> Vec<String> {
        schema_violations(event)
    }

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
    fn every_shape_of_finding_is_valid_against_the_official_schema() {
        use crate::model::{AppProtocol, EvidenceKind, FindingStatus};
        let mut checked = 0;
        for analytic in [
            Analytic::NonStandardPortAndroid,
            Analytic::NonStandardPortIos,
            Analytic::AppLayerC2,
        ] {
            for platform in [Platform::Android, Platform::Ios, Platform::Unknown] {
                for (transport, protocol) in [
                    (Transport::Tcp, AppProtocol::Tls),
                    (Transport::Udp, AppProtocol::Dns),
                    (Transport::Tcp, AppProtocol::Unknown),
                ] {
                    for attributed in [true, false] {
                        for revision in [0, 3] {
                            let mut f = examples::finding();
                            f.analytic = analytic;
                            f.platform = platform;
                            f.transport = transport;
                            f.protocol = protocol;
                            f.revision = revision;
                            f.status = if revision == 0 {
                                FindingStatus::New
                            } else {
                                FindingStatus::Updated
                            };
                            if !attributed {
                                f.app_id = None;
                                f.app_name = None;
                                f.dst_host = None;
                            }
                            f.evidence[0].kind = EvidenceKind::IpLiteralHost;
                            f.evidence[0].observed_number = None;
                            f.evidence[0].baseline = None;
                            let event = detection_finding(&f, "0.1.0");
                            let bad = violations(&event);
                            assert!(bad.is_empty(), "{bad:#?}\n{event:#}");
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 3 * 3 * 3 * 2 * 2);
        // The schema is not a formality: what 1.4.0 requires is refused when missing.
        let mut event = detection_finding(&examples::finding(), "0.1.0");
        event["evidences"][0]["connection_info"]
            .as_object_mut()
            .unwrap()
            .remove("direction_id");
        event["observables"][0]["type_id"] = json!(77);
        event["metadata"]["profiles"] = json!("host");
        let bad = violations(&event).join("\n");
        for path in [
            "/evidences/0/connection_info",
            "/observables/0/type_id",
            "/metadata/profiles",
        ] {
            assert!(bad.contains(path), "{path} not refused:\n{bad}");
        }
    }

    #[test]
    fn titles_name_protocols_as_analysts_read_them_and_observables_name_every_entity() {
        let mut finding = examples::finding();
        finding.analytic = Analytic::NonStandardPortAndroid;
        finding.protocol = crate::model::AppProtocol::Websocket;
        let event = detection_finding(&finding, "0.1.0");
        let title = event["finding_info"]["title"].as_str().unwrap();
        assert!(
            title.starts_with("WEBSOCKET on non-standard port"),
            "{title}"
        );
        let types: Vec<i64> = event["observables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["type_id"].as_i64().unwrap())
            .collect();
        let mut expected = vec![20, 2, 11];
        if finding.dst_host.is_some() {
            expected.push(1);
        }
        if finding.app_id.is_some() {
            expected.push(10);
        }
        assert_eq!(types, expected);
        assert_eq!(event["metadata"]["profiles"], json!(["host"]));
        assert_eq!(event["evidences"][0]["connection_info"]["direction_id"], 2);
        assert_eq!(event["timezone_offset"], 0);
        assert_eq!(event["status_code"], json!(finding.status));
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
