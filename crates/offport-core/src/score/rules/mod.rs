//! The analytics' rules: what a session's evidence is. The context evidence both analytics add is
//! here; each analytic has its own file.

use super::*;

mod app_layer_c2;
mod non_standard_port;

/// A session with everything it is judged on.
pub(crate) struct Judged<'a> {
    pub(crate) enriched: &'a EnrichedSession,
    pub(crate) baseline: &'a EffectiveBaseline,
    pub(crate) recurrence: &'a Recurrence<'a>,
    pub(crate) host: Option<&'a str>,
    /// A recognised protocol on a port its baseline does not approve.
    pub(crate) off_baseline: bool,
}

/// The analytics' rules: what a session's evidence is, with the scorer's tuning.
pub(crate) struct Rules<'c> {
    pub(crate) config: &'c ScoreConfig,
}

impl Rules<'_> {
    /// The evidence of `analytic` for a session, or `None` when the analytic does not fire.
    /// `full` adds the words (see [`Collected`]).
    pub(crate) fn collect(
        &self,
        analytic: Analytic,
        judged: &Judged<'_>,
        full: bool,
    ) -> Option<Collected> {
        match analytic {
            Analytic::NonStandardPortAndroid | Analytic::NonStandardPortIos => Some(
                self.non_standard_port(judged.enriched, judged.baseline, judged.recurrence, full),
            ),
            Analytic::AppLayerC2 => self.app_layer_c2(judged, full),
        }
    }

    pub(crate) fn context_evidence(
        &self,
        enriched: &EnrichedSession,
        baseline: &EffectiveBaseline,
        collected: &mut Collected,
    ) {
        let t = &baseline.thresholds;
        if enriched.app_state == AppRunState::Background && !enriched.foreground_transition_during {
            let (weight, note) = if t.foreground_state_required {
                (15.0, "ForegroundStateRequired=true")
            } else {
                (10.0, "ForegroundStateRequired=false")
            };
            collected.add(EvidenceKind::BackgroundNoForeground, weight, None, || text("App was in the background when the session began and did not come to the foreground", "app_state=BACKGROUND, no foreground transition", Some(note.to_string())));
        } else if t.foreground_state_required && enriched.app_state == AppRunState::NotRunning {
            collected.add(EvidenceKind::BackgroundNoForeground, 15.0, None, || {
                text(
                    "App was not running in the foreground, which the baseline requires",
                    "app_state=NOT_RUNNING",
                    Some("ForegroundStateRequired=true".to_string()),
                )
            });
        }
        if enriched.lock_state == LockState::Locked {
            collected.add(EvidenceKind::DeviceLocked, 10.0, None, || {
                text(
                    "Device was locked during the session",
                    if enriched.locked_throughout {
                        "locked throughout"
                    } else {
                        "locked at start"
                    },
                    None,
                )
            });
        }
        let window = t.recent_user_interaction_window_ms;
        let edr_present =
            enriched.lock_state != LockState::Unknown || enriched.app_state != AppRunState::Unknown;
        match enriched.last_user_interaction_ms_before {
            Some(delta) if delta > window => collected.add(
                EvidenceKind::NoRecentUserInteraction,
                5.0,
                Some(delta as f64),
                || {
                    text(
                        "Last user interaction was older than RecentUserInteractionWindow",
                        format!("LastUserInteractionDelta={}s", delta / 1000),
                        Some(format!("RecentUserInteractionWindow={}s", window / 1000)),
                    )
                },
            ),
            None if edr_present => {
                collected.add(EvidenceKind::NoRecentUserInteraction, 5.0, None, || {
                    text(
                        "No user interaction within TimeWindow before the session",
                        format!("none within {}s", t.time_window_ms / 1000),
                        Some(format!("RecentUserInteractionWindow={}s", window / 1000)),
                    )
                })
            }
            _ => {}
        }
        if let Some(bg) = &enriched.preceding_background_execution {
            if bg.ms_before_session <= self.config.preceding_execution_ms {
                collected.add(
                    EvidenceKind::PrecedingBackgroundExecution,
                    10.0,
                    Some(bg.ms_before_session as f64),
                    || {
                        text(
                            "Background execution immediately preceded the session",
                            format!("{:?} {}s before", bg.kind, bg.ms_before_session / 1000),
                            Some(format!(
                                "within {}s",
                                self.config.preceding_execution_ms / 1000
                            )),
                        )
                    },
                );
            }
        }
    }
}
