//! In-process replay of a simulated fleet: simulation time, replay throughput (raw records/s
//! through normalize, join and score) and the result against the ground truth.
//!
//! `cargo bench -p offport-backtest --bench replay` (defaults: 1,000 devices, 24 h, seed 1);
//! `OFFPORT_BENCH_DEVICES`, `OFFPORT_BENCH_HOURS` and `OFFPORT_BENCH_SEED` override.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark")]

// The allocator of the service binaries, so the code runs here as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use offport_backtest::replay::{Replay, ReplayOptions};
use offport_backtest::report::Report;
use offport_backtest::sim::{simulate, FleetConfig};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let config = FleetConfig {
        devices: env("OFFPORT_BENCH_DEVICES", 1_000),
        hours: env("OFFPORT_BENCH_HOURS", 24),
        seed: env("OFFPORT_BENCH_SEED", 1),
        ..FleetConfig::default()
    };
    let started = Instant::now();
    let fleet = simulate(&config).unwrap();
    let simulated = started.elapsed();
    let options =
        ReplayOptions::with_baseline_yaml(&fleet.baseline_yaml, config.end() + 3_600_000).unwrap();
    let started = Instant::now();
    let mut replay = Replay::new(options);
    for record in &fleet.records {
        replay.push(
            record.stream,
            Some(&record.device_id),
            record.value.as_bytes(),
        );
    }
    let outcome = replay.finish();
    let replayed = started.elapsed();
    let records = fleet.records.len();
    println!(
        "fleet: {} devices x {} h (seed {}): {} raw records ({} sessions) simulated in {:.2} s",
        config.devices,
        config.hours,
        config.seed,
        records,
        outcome.counts.enriched,
        simulated.as_secs_f64()
    );
    println!(
        "replay in-process: {:.2} s, {:.0} raw records/s ({} dead letters)",
        replayed.as_secs_f64(),
        records as f64 / replayed.as_secs_f64(),
        outcome.dead_letters.len()
    );
    let latest = outcome.latest();
    let report = Report::new("bench", &latest, outcome.findings.len(), Some(&fleet.truth));
    print!("{}", report.summary());
}
