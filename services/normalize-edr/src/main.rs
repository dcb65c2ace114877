//! offport-normalize-edr: turns raw mobile EDR telemetry into DeviceEvent Avro records keyed by device.
//!
//! Not built yet (issue #4). Until then this binary validates its configuration, logs the
//! topics it will read and write, and exits with status 2.

use std::process::ExitCode;

use offport_kafka::stage::{not_yet_built, Stage};
use offport_kafka::topics::TopicRole;

const STAGE: Stage = Stage {
    name: "normalize-edr",
    purpose: "raw EDR telemetry to DeviceEvent",
    reads: &[TopicRole::RawEdr],
    writes: &[TopicRole::DeviceEvents, TopicRole::DeadLetter],
};

fn main() -> ExitCode {
    not_yet_built(STAGE, 4)
}
