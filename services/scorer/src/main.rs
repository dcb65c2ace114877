//! offport-scorer: scores enriched sessions against the baselines in force and writes findings
//! to the alerts topic (Avro) and the OCSF topic (Detection Finding JSON). Stateful and
//! exactly-once: see `offport_kafka::runtime::stateful`.

// mimalloc: the stages allocate and free several small buffers per record (decoded values,
// encoded bytes, Kafka messages), which glibc's malloc serves slowly (docs/dependencies.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use offport_kafka::stage::run_stateful;
use offport_kafka::stages::ScorerStage;
use offport_kafka::topology;

#[tokio::main]
async fn main() -> ExitCode {
    run_stateful(topology::SCORER, ScorerStage::new).await
}
