//! offport-normalize-mdm: raw MDM reports (MicroMDM/NanoMDM webhook events, Android Management
//! API devices, offport MDM JSON) and the organisation's device inventory (the compacted
//! inventory topic) into `DeviceContext` Avro records keyed by device id, exactly once; bad
//! records to the dead-letter topic.
//!
//! Usage: `offport-normalize-mdm [--config <file>]` (or `OFFPORT_CONFIG`); every setting can be
//! overridden with `OFFPORT__<SECTION>__<KEY>`. See docs/configuration.md.

// mimalloc: the stages allocate and free several small buffers per record (decoded values,
// encoded bytes, Kafka messages), which glibc's malloc serves slowly (docs/dependencies.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use offport_core::normalize::mdm::MdmNormalizer;
use offport_core::normalize::Limits;
use offport_kafka::stage::run_normalizer;
use offport_kafka::topology;

#[tokio::main]
async fn main() -> ExitCode {
    run_normalizer(topology::NORMALIZE_MDM, |settings| {
        Ok(MdmNormalizer::new(Limits {
            max_record_bytes: settings.normalize.max_record_bytes,
        }))
    })
    .await
}
