//! Benchmark of the detection core alone (no Kafka): join and scoring throughput on one core,
//! and bytes of join state per active (device, app) key. Prints numbers; asserts nothing.
//!
//! Run: `cargo bench -p offport-core --bench core` (optionally `-- <devices> <records> <scored>`).
//!
//! The mix is [`offport_core::examples::join_mix`]: deterministic, a fleet of devices with
//! several apps each, EDR events and sessions in event order with up to 5 s of disorder.

// Indexing only the three scoring rates the bench itself collected.
#![allow(clippy::expect_used, clippy::indexing_slicing)]

// The allocator of the service binaries, so the code runs here as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use offport_core::baseline::BaselineSet;
use offport_core::examples;
use offport_core::join::{JoinConfig, Joiner};
use offport_core::model::EnrichedSession;
use offport_core::score::{ScoreConfig, Scorer};

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let devices = args.first().copied().unwrap_or(5_000);
    let records = args.get(1).copied().unwrap_or(1_000_000);
    let device_ids: Vec<String> = (0..devices).map(|d| format!("device-{d:06}")).collect();

    // ---- join, timed: outputs go to a sink that drops them, as a service drops a record once
    // it is produced; collecting 300k large records in one vector is the bench's cost, not the
    // join's, so the sessions for scoring come from a second, untimed pass over the same input.
    let mut joiner = Joiner::new(JoinConfig::default());
    let mut emitted = 0usize;
    let inputs = examples::join_mix(&device_ids, records);
    let started = Instant::now();
    for input in inputs {
        let out = joiner.push(input);
        emitted += std::hint::black_box(&out).len();
    }
    let join_elapsed = started.elapsed().as_secs_f64();
    let keys = joiner.app_keys();
    let bytes = joiner.state_bytes();
    let pending = joiner.pending_sessions();
    emitted += joiner.flush().len();
    println!("join:    {records} records ({emitted} sessions emitted) in {join_elapsed:.3}s = {:.0} records/s/core",
        records as f64 / join_elapsed);
    println!("join:    state {bytes} bytes for {keys} active (device, app) keys = {:.0} bytes/key ({} devices, {pending} sessions pending)",
        bytes as f64 / keys.max(1) as f64, joiner.devices());

    let mut joiner = Joiner::new(JoinConfig::default());
    let mut enriched: Vec<EnrichedSession> = Vec::new();
    let started = Instant::now();
    for input in examples::join_mix(&device_ids, records) {
        enriched.extend(joiner.push(input));
    }
    enriched.extend(joiner.flush());
    println!(
        "join:    second pass collecting every output in memory (input generation included): {:.3}s",
        started.elapsed().as_secs_f64()
    );

    // ---- scoring: the enriched sessions, repeated to reach at least 2M, three times over with
    // a fresh scorer (this machine's neighbours make one run vary by a fifth) ----
    let baselines = BaselineSet::with_defaults().expect("default baseline");
    let score_target = args.get(2).copied().unwrap_or(2_000_000) as usize;
    let rounds = (score_target / enriched.len().max(1)).max(1);
    let span =
        enriched.last().map_or(0, |e| e.session.start_time) - examples::EXAMPLE_TIME + 60_000;
    let mut rates = Vec::new();
    for run in 1..=3 {
        let mut scorer = Scorer::new(baselines.clone(), ScoreConfig::default());
        let mut scored = 0u64;
        let mut findings = 0u64;
        let mut shifted = 0i64;
        let started = Instant::now();
        for round in 0..rounds {
            // Each round replays the same sessions later in time, shifted in place (no copies).
            let shift = if round == 0 { 0 } else { span };
            shifted += shift;
            for e in enriched.iter_mut() {
                e.session.start_time += shift;
            }
            // As the scorer service scores a batch: each group of sessions warmed before it
            // is scored (the shift above is outside the timing's interest but inside it; it
            // was inside before too, fused into this loop).
            scorer.score_all(&enriched, |_, out| {
                findings += out.len() as u64;
                scored += 1;
            });
        }
        let score_elapsed = started.elapsed().as_secs_f64();
        for e in enriched.iter_mut() {
            e.session.start_time -= shifted;
        }
        let rate = scored as f64 / score_elapsed;
        rates.push(rate);
        let stats = scorer.stats();
        println!(
            "score:   run {run}: {scored} enriched sessions in {score_elapsed:.3}s = {rate:.0} sessions/s/core"
        );
        println!("score:   run {run}: {findings} findings emitted (new {}, updates {}, suppressed {}, excepted {}); state {} bytes for {} destinations",
            stats.new_findings, stats.updates, stats.suppressed, stats.excepted, scorer.state_bytes(), scorer.tracked_destinations());
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "score:   median of 3 runs {:.0} sessions/s/core (min {:.0}, max {:.0})",
        rates[1], rates[0], rates[2]
    );
}
