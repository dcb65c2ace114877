//! offport-joiner: joins sessions, as of their start time, with EDR state and MDM context, and
//! writes enriched sessions. Stateful and exactly-once: see `offport_kafka::runtime::stateful`.

// mimalloc: the stages allocate and free several small buffers per record (decoded values,
// encoded bytes, Kafka messages), which glibc's malloc serves slowly (docs/dependencies.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use offport_kafka::stage::run_stateful;
use offport_kafka::stages::JoinerStage;
use offport_kafka::topology;

#[tokio::main]
async fn main() -> ExitCode {
    run_stateful(topology::JOINER, JoinerStage::new).await
}
