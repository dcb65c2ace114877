//! offport-normalize-mdm: turns raw MDM reports into DeviceContext Avro records keyed by device.
//!
//! Not built yet (issue #4). Until then this binary validates its configuration, logs the
//! topics it will read and write, and exits with status 2.

use std::process::ExitCode;

use offport_kafka::stage::{not_yet_built, Stage};
use offport_kafka::topics::TopicRole;

const STAGE: Stage = Stage {
    name: "normalize-mdm",
    purpose: "raw MDM reports to DeviceContext",
    reads: &[TopicRole::RawMdm],
    writes: &[TopicRole::DeviceContexts, TopicRole::DeadLetter],
};

fn main() -> ExitCode {
    not_yet_built(STAGE, 4)
}
