//! The backtest report: what a replay raised, judged against the ground truth, and what two
//! baselines raise differently. A [`Report`] serializes to JSON for machines and renders to a
//! self-contained HTML page for people ([`html`]: inline SVG charts and a small inline script
//! for sorting and filtering; nothing fetched).
//!
//! **Matching rule.** A finding (its latest revision) is a true finding when it names the
//! device, the app and the destination port of a planted behaviour; a planted behaviour is
//! detected when at least one finding matches it. Every other finding is a false finding. The
//! false-finding rate is per 1,000 benign device-days (device-days of devices with nothing
//! planted), as the target states it; false findings on infected devices count too.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use offport_core::model::{Analytic, EpochMillis, Finding};
use serde::Serialize;

use crate::sim::{Behaviour, Planted, Truth};

mod html;

pub use html::utc_minutes;

/// A finding, shortened for a report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FindingSummary {
    /// Finding id.
    pub finding_id: String,
    /// Latest revision.
    pub revision: i32,
    /// Analytic (`NON_STANDARD_PORT_ANDROID`, ...).
    pub analytic: String,
    /// Device.
    pub device_id: String,
    /// App.
    pub app_id: Option<String>,
    /// Destination host or address.
    pub destination: String,
    /// Destination port.
    pub dst_port: i32,
    /// Protocol.
    pub protocol: String,
    /// Score 0-100.
    pub score: i32,
    /// Severity.
    pub severity: String,
    /// First session.
    pub first_seen: EpochMillis,
    /// Last session.
    pub last_seen: EpochMillis,
    /// Sessions counted.
    pub session_count: i64,
    /// Evidence kinds.
    pub evidence: Vec<String>,
    /// Each evidence item: kind, what was observed, and the baseline it was held against.
    pub evidence_detail: Vec<EvidenceLine>,
    /// The baseline versions the finding was scored under.
    pub baseline_version: String,
}

/// One evidence item of a finding, as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvidenceLine {
    /// Evidence kind (`PORT_NOT_IN_BASELINE`, ...).
    pub kind: String,
    /// What was observed.
    pub observed: String,
    /// The baseline value it was held against, when there is one.
    pub baseline: Option<String>,
}

/// Where a report's findings come from.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Provenance {
    /// The offport version that produced the report.
    pub offport_version: String,
    /// What was replayed (a fleet directory, the cluster's topics and range).
    pub input: String,
    /// The baseline versions in force (`scope@version from <time>`), the shipped defaults
    /// included.
    pub baselines: Vec<String>,
    /// The versions of the compared baseline, when two were compared.
    pub compared_baselines: Vec<String>,
}

fn name_of<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl From<&Finding> for FindingSummary {
    fn from(f: &Finding) -> Self {
        Self {
            finding_id: f.finding_id.clone(),
            revision: f.revision,
            analytic: name_of(&f.analytic),
            device_id: f.device_id.clone(),
            app_id: f.app_id.clone(),
            destination: f.dst_host.clone().unwrap_or_else(|| f.dst_ip.clone()),
            dst_port: f.dst_port,
            protocol: f.protocol.name().to_string(),
            score: f.score,
            severity: name_of(&f.severity),
            first_seen: f.first_seen,
            last_seen: f.last_seen,
            session_count: f.session_count,
            evidence: f.evidence.iter().map(|e| name_of(&e.kind)).collect(),
            evidence_detail: f
                .evidence
                .iter()
                .map(|e| EvidenceLine {
                    kind: name_of(&e.kind),
                    observed: e.observed.clone(),
                    baseline: e.baseline.clone(),
                })
                .collect(),
            baseline_version: f.baseline_version.clone(),
        }
    }
}

/// Recall per planted behaviour.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BehaviourRecall {
    /// Planted.
    pub planted: usize,
    /// Detected.
    pub detected: usize,
    /// Findings that match these plants.
    pub findings: usize,
    /// Plants that every analytic the behaviour calls for (see [`Behaviour::expects`]) raised.
    pub complete: usize,
}

/// The findings judged against the ground truth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// Planted behaviours.
    pub planted: usize,
    /// Planted behaviours with at least one matching finding.
    pub detected: usize,
    /// detected / planted (1 when nothing was planted).
    pub recall: f64,
    /// Findings that match a planted behaviour.
    pub true_findings: usize,
    /// Findings that match none.
    pub false_findings: usize,
    /// true / all findings (1 when there are none).
    pub precision: f64,
    /// Device-days of devices with nothing planted.
    pub benign_device_days: f64,
    /// False findings per 1,000 benign device-days.
    pub false_per_1000_benign_device_days: f64,
    /// Recall by behaviour.
    pub by_behaviour: BTreeMap<Behaviour, BehaviourRecall>,
    /// Planted behaviours no finding matched.
    pub missed: Vec<Planted>,
    /// Findings no planted behaviour explains.
    pub false_cases: Vec<FindingSummary>,
    /// False findings by the benign behaviour that made their sessions (the simulator's
    /// `app:port` attribution; `unattributed` when none did).
    pub false_by_behaviour: BTreeMap<String, usize>,
    /// False findings by analytic.
    pub false_by_rule: BTreeMap<String, usize>,
    /// False findings carrying each evidence kind.
    pub false_by_evidence: BTreeMap<String, usize>,
}

/// What two baselines raise differently over the same records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Label of the first baseline.
    pub a: String,
    /// Label of the second.
    pub b: String,
    /// Findings (by device, app, analytic, destination, port) only the first raises.
    pub only_a: Vec<FindingSummary>,
    /// Findings only the second raises.
    pub only_b: Vec<FindingSummary>,
    /// Raised by both.
    pub both: usize,
    /// Planted behaviours (ground truth) detected under the first and not under the second:
    /// what the second baseline would silence. Empty without ground truth.
    pub silenced_planted: Vec<Planted>,
    /// Planted behaviours detected under the second and not under the first.
    pub raised_planted: Vec<Planted>,
}

/// The backtest report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Title.
    pub title: String,
    /// Version, input and baselines.
    pub provenance: Provenance,
    /// Earliest first session of a finding.
    pub first_seen: Option<EpochMillis>,
    /// Latest last session of a finding.
    pub last_seen: Option<EpochMillis>,
    /// Findings (latest revisions).
    pub findings: usize,
    /// Finding records including updates.
    pub finding_records: usize,
    /// Findings by analytic.
    pub by_analytic: BTreeMap<String, usize>,
    /// Findings carrying each evidence kind.
    pub by_evidence: BTreeMap<String, usize>,
    /// Findings by app (`-` without one).
    pub by_app: BTreeMap<String, usize>,
    /// Findings by severity.
    pub by_severity: BTreeMap<String, usize>,
    /// Findings by the hour of their first session (epoch ms of the hour, count).
    pub over_time: Vec<(EpochMillis, usize)>,
    /// The same per analytic.
    pub over_time_by_analytic: BTreeMap<String, Vec<(EpochMillis, usize)>>,
    /// Findings per score decile (0-9, 10-19, ..., 90-100).
    pub score_histogram: [usize; 10],
    /// Against the ground truth, when there is one.
    pub evaluation: Option<Evaluation>,
    /// Against a second baseline, when there is one.
    pub comparison: Option<Comparison>,
    /// Every finding.
    pub list: Vec<FindingSummary>,
}

/// `scope@version from <UTC time>` for each version `set` holds (`deleted` for a deletion),
/// for [`Provenance::baselines`].
pub fn version_labels(set: &offport_core::baseline::BaselineSet) -> Vec<String> {
    set.versions_published()
        .into_iter()
        .map(|(scope, version, at)| {
            let from = if at <= 0 {
                "always".to_string()
            } else {
                format!("from {}", utc_minutes(at))
            };
            format!("{scope}@{} {from}", version.as_deref().unwrap_or("deleted"))
        })
        .collect()
}

/// Whether `finding` is explained by `planted`.
pub fn matches(finding: &Finding, planted: &Planted) -> bool {
    finding.device_id == planted.device_id
        && finding.app_id.as_deref() == Some(planted.app_id.as_str())
        && finding.dst_port == planted.dst_port
}

/// The findings judged against `truth`.
pub fn evaluate(latest: &[Finding], truth: &Truth) -> Evaluation {
    let mut by_behaviour: BTreeMap<Behaviour, BehaviourRecall> = BTreeMap::new();
    let mut missed = Vec::new();
    let mut detected = 0;
    for planted in &truth.planted {
        let hits: Vec<&Finding> = latest.iter().filter(|f| matches(f, planted)).collect();
        let port = hits.iter().any(|f| f.analytic != Analytic::AppLayerC2);
        let c2 = hits.iter().any(|f| f.analytic == Analytic::AppLayerC2);
        let (wants_port, wants_c2) = planted.behaviour.expects();
        let entry = by_behaviour.entry(planted.behaviour).or_default();
        entry.planted += 1;
        entry.findings += hits.len();
        if (port || !wants_port) && (c2 || !wants_c2) {
            entry.complete += 1;
        }
        let hits = hits.len();
        if hits > 0 {
            entry.detected += 1;
            detected += 1;
        } else {
            missed.push(planted.clone());
        }
    }
    let false_cases: Vec<FindingSummary> = latest
        .iter()
        .filter(|f| !truth.planted.iter().any(|p| matches(f, p)))
        .map(FindingSummary::from)
        .collect();
    let mut false_by_behaviour: BTreeMap<String, usize> = BTreeMap::new();
    let mut false_by_rule: BTreeMap<String, usize> = BTreeMap::new();
    let mut false_by_evidence: BTreeMap<String, usize> = BTreeMap::new();
    for f in &false_cases {
        let behaviour = truth.benign_behaviour(f.app_id.as_deref(), f.dst_port);
        *false_by_behaviour.entry(behaviour).or_default() += 1;
        *false_by_rule.entry(f.analytic.clone()).or_default() += 1;
        for kind in f.evidence.iter().collect::<BTreeSet<_>>() {
            *false_by_evidence.entry(kind.clone()).or_default() += 1;
        }
    }
    let false_findings = false_cases.len();
    let true_findings = latest.len() - false_findings;
    let ratio = |num: usize, den: usize| {
        if den == 0 {
            1.0
        } else {
            num as f64 / den as f64
        }
    };
    Evaluation {
        planted: truth.planted.len(),
        detected,
        recall: ratio(detected, truth.planted.len()),
        true_findings,
        false_findings,
        precision: ratio(true_findings, latest.len()),
        benign_device_days: truth.benign_device_days,
        false_per_1000_benign_device_days: if truth.benign_device_days > 0.0 {
            false_findings as f64 * 1_000.0 / truth.benign_device_days
        } else {
            0.0
        },
        by_behaviour,
        missed,
        false_cases,
        false_by_behaviour,
        false_by_rule,
        false_by_evidence,
    }
}

type FindingKey = (String, Option<String>, String, String, i32);

fn key_of(f: &Finding) -> FindingKey {
    (
        f.device_id.clone(),
        f.app_id.clone(),
        name_of(&f.analytic),
        f.dst_host.clone().unwrap_or_else(|| f.dst_ip.clone()),
        f.dst_port,
    )
}

/// What `a` raises that `b` does not and the reverse, keyed by device, app, analytic,
/// destination and port (finding ids differ between baselines only through their window).
pub fn compare(a_label: &str, a: &[Finding], b_label: &str, b: &[Finding]) -> Comparison {
    let keys_a: BTreeSet<FindingKey> = a.iter().map(key_of).collect();
    let keys_b: BTreeSet<FindingKey> = b.iter().map(key_of).collect();
    let only = |from: &[Finding], other: &BTreeSet<FindingKey>| {
        let mut seen = BTreeSet::new();
        from.iter()
            .filter(|f| !other.contains(&key_of(f)) && seen.insert(key_of(f)))
            .map(FindingSummary::from)
            .collect::<Vec<_>>()
    };
    Comparison {
        a: a_label.to_string(),
        b: b_label.to_string(),
        only_a: only(a, &keys_b),
        only_b: only(b, &keys_a),
        both: keys_a.intersection(&keys_b).count(),
        silenced_planted: Vec::new(),
        raised_planted: Vec::new(),
    }
}

impl Comparison {
    /// Fills in which planted behaviours of `truth` each side detects that the other does not.
    pub fn with_truth(mut self, a: &[Finding], b: &[Finding], truth: &Truth) -> Self {
        let detected =
            |findings: &[Finding], planted: &Planted| findings.iter().any(|f| matches(f, planted));
        for planted in &truth.planted {
            match (detected(a, planted), detected(b, planted)) {
                (true, false) => self.silenced_planted.push(planted.clone()),
                (false, true) => self.raised_planted.push(planted.clone()),
                _ => {}
            }
        }
        self
    }
}

impl Report {
    /// The report of `latest` (latest revisions) out of `records` finding records.
    pub fn new(title: &str, latest: &[Finding], records: usize, truth: Option<&Truth>) -> Self {
        let mut by_analytic = BTreeMap::new();
        let mut by_evidence = BTreeMap::new();
        let mut by_app = BTreeMap::new();
        let mut by_severity = BTreeMap::new();
        let mut hours: BTreeMap<EpochMillis, usize> = BTreeMap::new();
        let mut analytic_hours: BTreeMap<String, BTreeMap<EpochMillis, usize>> = BTreeMap::new();
        let mut score_histogram = [0usize; 10];
        for f in latest {
            *by_analytic.entry(name_of(&f.analytic)).or_default() += 1;
            let kinds: BTreeSet<String> = f.evidence.iter().map(|e| name_of(&e.kind)).collect();
            for kind in kinds {
                *by_evidence.entry(kind).or_default() += 1;
            }
            *by_app
                .entry(f.app_id.clone().unwrap_or_else(|| "-".to_string()))
                .or_default() += 1;
            *by_severity.entry(name_of(&f.severity)).or_default() += 1;
            let hour = f.first_seen - f.first_seen.rem_euclid(3_600_000);
            *hours.entry(hour).or_default() += 1;
            *analytic_hours
                .entry(name_of(&f.analytic))
                .or_default()
                .entry(hour)
                .or_default() += 1;
            let decile = usize::try_from(f.score.clamp(0, 99) / 10).unwrap_or(0);
            if let Some(slot) = score_histogram.get_mut(decile) {
                *slot += 1;
            }
        }
        let mut list: Vec<FindingSummary> = latest.iter().map(FindingSummary::from).collect();
        list.sort_by(html::most_severe_first);
        Self {
            title: title.to_string(),
            provenance: Provenance {
                offport_version: env!("CARGO_PKG_VERSION").to_string(),
                ..Provenance::default()
            },
            first_seen: latest.iter().map(|f| f.first_seen).min(),
            last_seen: latest.iter().map(|f| f.last_seen).max(),
            findings: latest.len(),
            finding_records: records,
            by_analytic,
            by_evidence,
            by_app,
            by_severity,
            over_time: hours.into_iter().collect(),
            over_time_by_analytic: analytic_hours
                .into_iter()
                .map(|(analytic, hours)| (analytic, hours.into_iter().collect()))
                .collect(),
            score_histogram,
            evaluation: truth.map(|t| evaluate(latest, t)),
            comparison: None,
            list,
        }
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// A short text summary for a terminal.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} findings ({} records with updates)",
            self.findings, self.finding_records
        );
        for (analytic, n) in &self.by_analytic {
            let _ = writeln!(out, "  {analytic:<28} {n}");
        }
        if let Some(e) = &self.evaluation {
            let _ = writeln!(
                out,
                "ground truth: {}/{} planted behaviours detected (recall {:.3}); precision {:.3} ({} true, {} false); {:.2} false findings per 1,000 benign device-days ({:.1} benign device-days)",
                e.detected,
                e.planted,
                e.recall,
                e.precision,
                e.true_findings,
                e.false_findings,
                e.false_per_1000_benign_device_days,
                e.benign_device_days
            );
            for (behaviour, r) in &e.by_behaviour {
                let _ = writeln!(
                    out,
                    "  {:<28} {}/{} detected, {} with every analytic it calls for, {} findings",
                    format!("{behaviour:?}"),
                    r.detected,
                    r.planted,
                    r.complete,
                    r.findings
                );
            }
            for (title, map) in [
                ("false findings by benign behaviour", &e.false_by_behaviour),
                ("false findings by rule", &e.false_by_rule),
                ("false findings by evidence item", &e.false_by_evidence),
            ] {
                if !map.is_empty() {
                    let _ = writeln!(out, "{title}:");
                    let mut rows: Vec<_> = map.iter().collect();
                    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                    for (k, n) in rows {
                        let _ = writeln!(out, "  {k:<40} {n}");
                    }
                }
            }
            for m in &e.missed {
                let _ = writeln!(
                    out,
                    "  missed: {:?} on {} ({} -> {}:{}, {} sessions)",
                    m.behaviour, m.device_id, m.app_id, m.dst_ip, m.dst_port, m.sessions
                );
            }
            for f in &e.false_cases {
                let _ = writeln!(
                    out,
                    "  false: {} {} {} -> {}:{} score {} [{}]",
                    f.analytic,
                    f.device_id,
                    f.app_id.as_deref().unwrap_or("-"),
                    f.destination,
                    f.dst_port,
                    f.score,
                    f.evidence.join(", ")
                );
            }
        }
        if let Some(c) = &self.comparison {
            let _ = writeln!(
                out,
                "baselines: {} raised by both, {} only under {}, {} only under {}",
                c.both,
                c.only_a.len(),
                c.a,
                c.only_b.len(),
                c.b
            );
            for (what, label, list) in [
                ("SILENCED", &c.b, &c.silenced_planted),
                ("raised only", &c.b, &c.raised_planted),
            ] {
                for p in list {
                    let _ = writeln!(
                        out,
                        "  {what} under {label}: planted {:?} on {} ({} -> {}:{})",
                        p.behaviour, p.device_id, p.app_id, p.dst_ip, p.dst_port
                    );
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;
    use crate::sim::FleetConfig;
    use offport_core::examples;
    use offport_core::model::Analytic;

    fn finding(id: &str, device: &str, app: &str, port: i32, score: i32) -> Finding {
        let mut f = examples::finding();
        f.finding_id = id.to_string();
        f.device_id = device.to_string();
        f.app_id = Some(app.to_string());
        f.dst_port = port;
        f.score = score;
        f
    }

    fn planted(device: &str, app: &str, port: i32, behaviour: Behaviour) -> Planted {
        Planted {
            id: format!("{device}-{behaviour:?}"),
            behaviour,
            device_id: device.to_string(),
            platform: "ANDROID".into(),
            app_id: app.to_string(),
            dst_ip: "203.0.113.1".into(),
            dst_port: port,
            first: 0,
            last: 0,
            sessions: 3,
            interval_ms: 0,
            jitter: 0.0,
        }
    }

    /// A hand-checked case: 4 planted, 3 detected (one by two findings), 2 false findings on
    /// 10 devices over one day (2 infected... so 8 benign device-days... see the numbers).
    #[test]
    fn the_numbers_of_a_hand_checked_case() {
        let truth = Truth {
            config: FleetConfig {
                devices: 10,
                ..FleetConfig::default()
            },
            device_days: 10.0,
            benign_device_days: 6.0,
            planted: vec![
                planted("d1", "evil", 8443, Behaviour::TlsC2UncommonPort),
                planted("d2", "evil", 5300, Behaviour::DnsNonStandardPort),
                planted("d3", "evil", 4444, Behaviour::PersistentSession4444),
                planted("d4", "evil", 8081, Behaviour::WebsocketUnmanaged8081),
            ],
            benign: [(
                "chrome:443".to_string(),
                ["web-browsing".to_string()].into_iter().collect(),
            )]
            .into_iter()
            .collect(),
        };
        let mut c2 = finding("f2", "d1", "evil", 8443, 80);
        c2.analytic = Analytic::AppLayerC2;
        let latest = vec![
            finding("f1", "d1", "evil", 8443, 55),  // true (d1)
            c2,                                     // true (d1 again)
            finding("f3", "d2", "evil", 5300, 45),  // true (d2)
            finding("f4", "d3", "evil", 4444, 91),  // true (d3)
            finding("f5", "d4", "good", 8081, 35),  // false: other app on d4 (d4 missed)
            finding("f6", "d9", "chrome", 443, 12), // false
        ];
        let report = Report::new("t", &latest, 9, Some(&truth));
        let e = report.evaluation.as_ref().unwrap();
        assert_eq!((e.planted, e.detected), (4, 3));
        assert!((e.recall - 0.75).abs() < 1e-12);
        assert_eq!((e.true_findings, e.false_findings), (4, 2));
        assert!((e.precision - 4.0 / 6.0).abs() < 1e-12);
        assert!((e.false_per_1000_benign_device_days - 2.0 * 1000.0 / 6.0).abs() < 1e-9);
        assert_eq!(e.missed.len(), 1);
        assert_eq!(e.missed[0].device_id, "d4");
        assert_eq!(
            e.false_cases
                .iter()
                .map(|f| f.finding_id.as_str())
                .collect::<Vec<_>>(),
            ["f5", "f6"]
        );
        assert_eq!(e.by_behaviour[&Behaviour::TlsC2UncommonPort].detected, 1);
        // d1 raised both analytics its behaviour calls for; d3's persistent session only the
        // port analytic, not C2; d2's DNS calls for the port analytic alone.
        let complete = |b: Behaviour| e.by_behaviour[&b].complete;
        assert_eq!(complete(Behaviour::TlsC2UncommonPort), 1);
        assert_eq!(complete(Behaviour::DnsNonStandardPort), 1);
        assert_eq!(complete(Behaviour::PersistentSession4444), 0);
        // The false findings by the benign behaviour that made them, and by rule.
        assert_eq!(
            e.false_by_behaviour.iter().collect::<Vec<_>>(),
            [
                (&"unattributed".to_string(), &1),
                (&"web-browsing".to_string(), &1)
            ]
        );
        assert_eq!(e.false_by_rule.values().sum::<usize>(), 2);
        assert_eq!(
            e.by_behaviour[&Behaviour::WebsocketUnmanaged8081].detected,
            0
        );
        assert_eq!(report.findings, 6);
        assert_eq!(report.finding_records, 9);
        assert_eq!(report.by_analytic["APP_LAYER_C2"], 1);
        // Scores 55, 80, 45, 91, 35, 12 by decile.
        assert_eq!(report.score_histogram, [0, 1, 0, 1, 1, 1, 0, 0, 1, 1]);
        assert_eq!(report.by_app["evil"], 4);
        let html = report.to_html();
        assert!(html.contains("<svg"));
        assert!(html.contains("0.750 (3/4)"));
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["evaluation"]["detected"], 3);
    }

    #[test]
    fn two_baselines_are_compared_by_what_they_raise() {
        let a = vec![
            finding("a1", "d1", "x", 8080, 50),
            finding("a2", "d2", "y", 8443, 50),
        ];
        let b = vec![
            finding("b1", "d2", "y", 8443, 60),
            finding("b2", "d3", "z", 4444, 60),
        ];
        let c = compare("old", &a, "new", &b);
        assert_eq!(c.both, 1);
        assert_eq!(c.only_a.len(), 1);
        assert_eq!(c.only_a[0].device_id, "d1");
        assert_eq!(c.only_b.len(), 1);
        assert_eq!(c.only_b[0].device_id, "d3");
    }

    #[test]
    fn the_comparison_names_the_planted_behaviours_each_side_alone_raises() {
        let truth = Truth {
            config: FleetConfig::default(),
            device_days: 3.0,
            benign_device_days: 1.0,
            planted: vec![
                planted("d1", "evil", 8443, Behaviour::TlsC2UncommonPort),
                planted("d2", "evil", 5300, Behaviour::DnsNonStandardPort),
                planted("d3", "evil", 4444, Behaviour::PersistentSession4444),
            ],
            benign: BTreeMap::new(),
        };
        // d1 raised by both; d2 only by the first; d3 only by the second.
        let a = vec![
            finding("a1", "d1", "evil", 8443, 50),
            finding("a2", "d2", "evil", 5300, 50),
        ];
        let b = vec![
            finding("b1", "d1", "evil", 8443, 50),
            finding("b3", "d3", "evil", 4444, 50),
        ];
        let c = compare("old", &a, "new", &b).with_truth(&a, &b, &truth);
        let ids = |list: &[Planted]| list.iter().map(|p| p.device_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&c.silenced_planted), vec!["d2"]);
        assert_eq!(ids(&c.raised_planted), vec!["d3"]);
        let mut report = Report::new("x", &a, 2, Some(&truth));
        report.comparison = Some(c);
        assert!(report
            .summary()
            .contains("SILENCED under new: planted DnsNonStandardPort on d2"));
        let html = report.to_html();
        assert!(
            html.contains("<div class=\"silenced\"><h3>Planted behaviours new would silence</h3>")
        );
        assert!(html.contains("DnsNonStandardPort on d2"));
    }

    #[test]
    fn html_escapes_what_it_shows() {
        let f = finding("f", "<script>alert(1)</script>", "a&b", 1, 1);
        let html = Report::new("x", &[f], 1, None).to_html();
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("&lt;script&gt;alert(1)"));
        assert_eq!(
            html.matches("<script>").count(),
            1,
            "the page's own script only"
        );
    }
}
