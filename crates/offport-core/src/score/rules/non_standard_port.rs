//! The non-standard port analytic (AN1827 on Android, AN1828 on iOS): a recognised protocol off
//! its approved ports, and what raises the score.

use super::*;

impl Rules<'_> {
    /// Evidence of the port analytic for a session already known to be a candidate: a
    /// recognised protocol on a port its baseline does not approve (decided once, in `score`).
    pub(crate) fn non_standard_port(
        &self,
        enriched: &EnrichedSession,
        baseline: &EffectiveBaseline,
        recurrence: &Recurrence<'_>,
        full: bool,
    ) -> Collected {
        let session = &enriched.session;
        let t = &baseline.thresholds;
        let mut collected = Collected::new(full);
        collected.add(
            EvidenceKind::ProtocolPortMismatch,
            35.0,
            Some(f64::from(session.dst_port)),
            || {
                text(
                    format!(
                        "{} on {}/{}, outside the approved ports for {}",
                        session.protocol.name(),
                        session.dst_port,
                        session.transport.name().to_ascii_lowercase(),
                        session.protocol.name()
                    ),
                    format!(
                        "{} on {}/{}",
                        session.protocol.name(),
                        session.dst_port,
                        session.transport.name().to_ascii_lowercase()
                    ),
                    Some(baseline.describe_ports(session.protocol, session.transport)),
                )
            },
        );
        if recurrence.count >= self.config.repeated_sessions {
            collected.add(
                EvidenceKind::RepeatedSessions,
                10.0,
                Some(recurrence.count as f64),
                || {
                    text(
                        "Repeated sessions to the same destination and port within TimeWindow",
                        format!("{} sessions", recurrence.count),
                        Some(format!("TimeWindow={}s", t.time_window_ms / 1000)),
                    )
                },
            );
        }
        if let Some(intervals) = recurrence.intervals() {
            if recurrence.count > self.config.repeated_sessions && recurrence.stable_share() >= 0.8
            {
                collected.add(
                    EvidenceKind::StableInterval,
                    15.0,
                    Some(intervals.median / 1000.0),
                    || {
                        text(
                            "Sessions recur on a stable interval",
                            format!(
                                "interval {:.0}s, {:.0}% within tolerance",
                                intervals.median / 1000.0,
                                recurrence.stable_share() * 100.0
                            ),
                            Some(format!(
                                "BeaconIntervalTolerance={}",
                                t.beacon_interval_tolerance
                            )),
                        )
                    },
                );
            }
        }
        let duration = session.duration_ms.unwrap_or(0);
        if duration >= t.session_persistence_threshold_ms {
            collected.add(
                EvidenceKind::PersistentConnection,
                10.0,
                Some(duration as f64 / 1000.0),
                || {
                    text(
                        "One persistent long-lived connection",
                        format!(
                            "duration {}s{}",
                            duration / 1000,
                            if session.still_open {
                                ", still open"
                            } else {
                                ""
                            }
                        ),
                        Some(format!(
                            "SessionPersistenceThreshold={}s",
                            t.session_persistence_threshold_ms / 1000
                        )),
                    )
                },
            );
        }
        self.context_evidence(enriched, baseline, &mut collected);
        self.app_permission_evidence(enriched, baseline, &mut collected);
        collected
    }

    pub(crate) fn app_permission_evidence(
        &self,
        enriched: &EnrichedSession,
        baseline: &EffectiveBaseline,
        collected: &mut Collected,
    ) {
        let session = &enriched.session;
        let mdm = enriched.mdm.as_ref();
        if let Some(app) = session.app_id.as_deref() {
            match mdm.map(|m| m.managed) {
                Some(Some(false)) => collected.add(EvidenceKind::AppUnmanaged, 10.0, None, || {
                    text(
                        "App is not managed by the MDM",
                        format!("{app}: managed=false"),
                        None,
                    )
                }),
                Some(None) => collected.add(EvidenceKind::AppUnmanaged, 10.0, None, || {
                    text(
                        "App is not in the device's MDM inventory",
                        format!("{app}: not in inventory"),
                        None,
                    )
                }),
                _ => {}
            }
            let outside = |list: &Option<Vec<String>>| {
                list.as_ref().is_some_and(|l| !l.iter().any(|a| a == app))
            };
            if outside(&baseline.allowed_apps) {
                collected.add(EvidenceKind::AppNotAllowed, 10.0, None, || {
                    text(
                        "App is outside AllowedAppList",
                        app.to_string(),
                        Some("AllowedAppList".to_string()),
                    )
                });
            } else if outside(&baseline.allowed_managed_apps) {
                collected.add(EvidenceKind::AppNotAllowed, 10.0, None, || {
                    text(
                        "App is outside AllowedManagedApps",
                        app.to_string(),
                        Some("AllowedManagedApps".to_string()),
                    )
                });
            } else if mdm.is_some_and(|m| m.approved == Some(false)) {
                collected.add(EvidenceKind::AppNotAllowed, 10.0, None, || {
                    text(
                        "App is not approved in the MDM",
                        format!("{app}: approved=false"),
                        None,
                    )
                });
            }
            if let (Some(classes), Some(class)) = (
                &baseline.allowed_service_classes,
                mdm.and_then(|m| m.service_class.as_deref()),
            ) {
                if !classes.iter().any(|c| c == class) {
                    collected.add(EvidenceKind::AppNotAllowed, 10.0, None, || {
                        text(
                            "App's service class is outside AllowedServiceClasses",
                            class.to_string(),
                            Some(format!("AllowedServiceClasses=[{}]", classes.join(","))),
                        )
                    });
                }
            }
            if let Some(behavior) = baseline.behavior_for(session.app_id.as_deref(), mdm) {
                if !behavior.expected_ports.is_empty()
                    && !in_ranges(session.dst_port, &behavior.expected_ports)
                {
                    collected.add(
                        EvidenceKind::ProtocolNotPermittedForApp,
                        10.0,
                        Some(f64::from(session.dst_port)),
                        || {
                            text(
                                "App (or its category) is not expected on this destination port",
                                format!("{} on {}", session.protocol.name(), session.dst_port),
                                Some(format!(
                                    "AppNetworkBehaviorBaseline[{}].expected_ports",
                                    behavior.category
                                )),
                            )
                        },
                    );
                }
            }
        }
        if session.platform == Platform::Ios
            && baseline.thresholds.supervised_required
            && mdm.is_some_and(|m| m.supervised == Some(false))
        {
            collected.add(EvidenceKind::DeviceUnsupervised, 10.0, None, || {
                text(
                    "Device is not supervised, which the baseline requires",
                    "supervised=false",
                    Some("SupervisedRequired=true".to_string()),
                )
            });
        }
    }
}
