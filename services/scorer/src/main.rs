//! offport-scorer: scores enriched sessions against the baselines and emits findings.
//!
//! Not built yet (issue #5). Until then this binary validates its configuration, logs the
//! topics it will read and write, and exits with status 2.

use std::process::ExitCode;

use offport_kafka::stage::{not_yet_built, Stage};
use offport_kafka::topics::TopicRole;

const STAGE: Stage = Stage {
    name: "scorer",
    purpose: "score enriched sessions, emit findings",
    reads: &[TopicRole::EnrichedSessions, TopicRole::Baselines],
    writes: &[
        TopicRole::Alerts,
        TopicRole::AlertsOcsf,
        TopicRole::DeadLetter,
    ],
};

fn main() -> ExitCode {
    not_yet_built(STAGE, 5)
}
