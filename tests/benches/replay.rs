//! Backtest replay throughput, in one run: a simulated fleet replayed in-process and through
//! the real broker (raw topics, normalized on the way, merged by report time), in raw records
//! per second; and the time to produce the fleet to the raw topics.
//!
//! `cargo bench -p offport-tests --bench replay` (starts the local stack when none is
//! configured). `OFFPORT_BENCH_DEVICES` (default 300) and `OFFPORT_BENCH_HOURS` (default 24)
//! size the fleet.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark")]

// The allocator of the service binaries, so the code runs here as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use anyhow::Result;
use offport_backtest::replay::{Replay, ReplayOptions};
use offport_backtest::sim::{simulate, FleetConfig, HOUR};
use offport_kafka::registry::RegistryCodec;
use offport_kafka::topics::TopicRole;
use offport_replay::{produce_raw, replay_topics, KafkaReplay, ReplaySource};
use offport_tests::isolated_settings;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn options(yaml: &str, now: i64) -> ReplayOptions {
    ReplayOptions::with_baseline_yaml(yaml, now).unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let hours = env("OFFPORT_BENCH_HOURS", 24) as u32;
    let config = FleetConfig {
        devices: env("OFFPORT_BENCH_DEVICES", 300) as usize,
        hours,
        start: now - now.rem_euclid(HOUR) - i64::from(hours) * HOUR,
        ..FleetConfig::default()
    };
    let fleet = simulate(&config).map_err(anyhow::Error::msg)?;
    let records = fleet.records.len() as f64;
    println!(
        "fleet: {} devices x {} h, {} raw records",
        config.devices,
        config.hours,
        fleet.records.len()
    );

    let started = Instant::now();
    let mut replay = Replay::new(options(&fleet.baseline_yaml, now));
    for r in &fleet.records {
        replay.push(r.stream, Some(&r.device_id), r.value.as_bytes());
    }
    let local = replay.finish();
    let local_secs = started.elapsed().as_secs_f64();
    println!(
        "in-process replay: {:.2} s, {:.0} raw records/s, {} finding records",
        local_secs,
        records / local_secs,
        local.findings.len()
    );

    let settings = isolated_settings("bench-replay", 3, 2_000, &TopicRole::ALL).await?;
    let codec = RegistryCodec::new(&settings.registry)?;
    let started = Instant::now();
    produce_raw(&settings, &fleet.records, &mut |_| {}).await?;
    let produce_secs = started.elapsed().as_secs_f64();
    println!(
        "produce to the raw topics: {:.2} s, {:.0} records/s",
        produce_secs,
        records / produce_secs
    );
    let started = Instant::now();
    let kafka = replay_topics(
        &settings,
        &codec,
        options(&fleet.baseline_yaml, now),
        &KafkaReplay {
            source: ReplaySource::Raw,
            from: None,
            to: None,
            output_topic: None,
        },
        &mut |_, _| {},
    )
    .await?;
    let kafka_secs = started.elapsed().as_secs_f64();
    println!(
        "Kafka replay (raw topics, 3 partitions each): {:.2} s, {:.0} raw records/s, {} finding records ({})",
        kafka_secs,
        records / kafka_secs,
        kafka.findings.len(),
        if kafka.findings == local.findings {
            "identical to in-process"
        } else {
            "DIFFERENT from in-process"
        }
    );
    Ok(())
}
