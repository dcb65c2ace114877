//! offport-normalize-proxy: raw proxy/VPN/sensor session records into `NetworkSession` Avro
//! records keyed by device id, exactly once; bad records to the dead-letter topic.
//!
//! Usage: `offport-normalize-proxy [--config <file>]` (or `OFFPORT_CONFIG`); every setting can be
//! overridden with `OFFPORT__<SECTION>__<KEY>`. See docs/configuration.md.

// mimalloc: the stages allocate and free several small buffers per record (decoded values,
// encoded bytes, Kafka messages), which glibc's malloc serves slowly (docs/dependencies.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use offport_core::normalize::proxy::ProxyNormalizer;
use offport_kafka::stage::run_normalizer;
use offport_kafka::topology;

#[tokio::main]
async fn main() -> ExitCode {
    run_normalizer(topology::NORMALIZE_PROXY, |settings| {
        let config = settings.normalize.proxy_config()?;
        Ok(ProxyNormalizer::configured(config))
    })
    .await
}
