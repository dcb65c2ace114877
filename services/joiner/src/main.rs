//! offport-joiner: joins sessions, as of their start time, with EDR state and MDM context.
//!
//! Not built yet (issue #5). Until then this binary validates its configuration, logs the
//! topics it will read and write, and exits with status 2.

use std::process::ExitCode;

use offport_kafka::stage::{not_yet_built, Stage};
use offport_kafka::topics::TopicRole;

const STAGE: Stage = Stage {
    name: "joiner",
    purpose: "as-of join of sessions with device/app state",
    reads: &[
        TopicRole::Sessions,
        TopicRole::DeviceEvents,
        TopicRole::DeviceContexts,
        TopicRole::Baselines,
    ],
    writes: &[TopicRole::EnrichedSessions, TopicRole::DeadLetter],
};

fn main() -> ExitCode {
    not_yet_built(STAGE, 5)
}
