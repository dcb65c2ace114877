//! offport-joiner: joins sessions, as of their start time, with EDR state and MDM context, and
//! writes enriched sessions. Stateful and exactly-once: see `offport_kafka::stateful`.

use std::process::ExitCode;

use offport_kafka::stage::{run_stateful, Stage};
use offport_kafka::stages::JoinerStage;
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
    writes: &[
        TopicRole::EnrichedSessions,
        TopicRole::JoinerChangelog,
        TopicRole::DeadLetter,
    ],
};

#[tokio::main]
async fn main() -> ExitCode {
    run_stateful(STAGE, JoinerStage::new).await
}
