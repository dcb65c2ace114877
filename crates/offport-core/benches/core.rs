//! Benchmark of the detection core alone (no Kafka): join and scoring throughput on one core,
//! and bytes of join state per active (device, app) key. Prints numbers; asserts nothing.
//!
//! Run: `cargo bench -p offport-core --bench core` (optionally `-- <devices> <records> <scored>`).
//!
//! The mix is deterministic (a fixed-seed LCG): a fleet of devices with several apps each,
//! EDR events (lifecycle, lock, interaction, background work, API counts) and sessions in event
//! order with up to 5 s of disorder; sessions are 90% TLS/443 to common hosts, 4% push on
//! 5228/5223, 3% TLS on a non-standard port, 3% uniform-size polling.

// Indices into the bench's own constant tables, always in range; no outside input here.
#![allow(clippy::indexing_slicing, clippy::expect_used)]

// The allocator of the service binaries, so the code runs here as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use offport_core::baseline::BaselineSet;
use offport_core::examples;
use offport_core::join::{JoinConfig, JoinInput, Joiner};
use offport_core::model::{
    AppProtocol, DeviceEvent, DeviceEventKind, EnrichedSession, NetworkApiUsage, NetworkSession,
    TlsInfo,
};
use offport_core::score::{ScoreConfig, Scorer};

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const APPS: [&str; 6] = [
    "com.android.chrome",
    "com.whatsapp",
    "com.example.weather",
    "com.microsoft.teams",
    "com.spotify.music",
    "com.example.bank",
];
const HOSTS: [&str; 6] = [
    "www.google.com",
    "graph.facebook.com",
    "api.weather.example.com",
    "teams.microsoft.com",
    "spclient.wg.spotify.com",
    "api.bank.example",
];

fn session(rng: &mut Lcg, device: &str, t: i64, id: u64) -> NetworkSession {
    let app = rng.below(APPS.len() as u64) as usize;
    let mut s = examples::network_session();
    s.session_id = format!("s{id}");
    s.device_id = device.to_string();
    s.app_id = Some(APPS[app].to_string());
    s.start_time = t;
    s.duration_ms = Some(200 + rng.below(3_000) as i64);
    s.http = None;
    s.dns = None;
    s.payload_entropy = None;
    s.bytes_out = 300 + rng.below(2_000) as i64;
    s.bytes_in = 1_000 + rng.below(50_000) as i64;
    let roll = rng.below(100);
    let (port, host) = match roll {
        0..=89 => (443, HOSTS[app]),
        90..=91 => (5228, "mtalk.google.com"),
        92..=93 => (5223, "courier.push.apple.com"),
        94..=96 => (8443, "cdn-update.example.net"),
        _ => {
            s.bytes_out = 620;
            s.bytes_in = 1_180;
            (443, "xkq9vz3tplm2wr.com")
        }
    };
    s.dst_port = port;
    s.tls = Some(TlsInfo {
        sni: Some(host.to_string()),
        ..TlsInfo::default()
    });
    s.protocol = AppProtocol::Tls;
    s
}

fn event(rng: &mut Lcg, device: &str, t: i64) -> DeviceEvent {
    let kinds = [
        DeviceEventKind::AppForeground,
        DeviceEventKind::AppBackground,
        DeviceEventKind::DeviceLocked,
        DeviceEventKind::DeviceUnlocked,
        DeviceEventKind::UserInteraction,
        DeviceEventKind::WorkManager,
        DeviceEventKind::NetworkApiUsage,
    ];
    let kind = kinds[rng.below(kinds.len() as u64) as usize];
    let mut e = examples::device_event();
    e.device_id = device.to_string();
    e.app_id = Some(APPS[rng.below(APPS.len() as u64) as usize].to_string());
    e.kind = kind;
    e.network_api = (kind == DeviceEventKind::NetworkApiUsage).then(|| NetworkApiUsage {
        api: "OkHttp".to_string(),
        call_count: rng.below(50) as i64,
        window_ms: 60_000,
    });
    e.event_time = t;
    e
}

/// The input mix: EDR events and sessions, 30% sessions, in event order with up to 5 s of
/// disorder, ~200 records per second of event time across the fleet.
fn generate(device_ids: &[String], records: u64) -> Vec<JoinInput> {
    let devices = device_ids.len() as u64;
    let mut rng = Lcg(42);
    let t0 = examples::EXAMPLE_TIME;
    let mut inputs = Vec::with_capacity(records as usize);
    for i in 0..records {
        let device = &device_ids[rng.below(devices) as usize];
        let t = t0 + (i as i64) * 5 + rng.below(5_000) as i64;
        if rng.below(10) < 3 {
            inputs.push(JoinInput::Session(session(&mut rng, device, t, i)));
        } else {
            inputs.push(JoinInput::Event(event(&mut rng, device, t)));
        }
    }
    inputs
}

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
    let inputs = generate(&device_ids, records);
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
    for input in generate(&device_ids, records) {
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
                findings += scorer.score(e).len() as u64;
                scored += 1;
            }
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
