//! The per-record work of the joiner and scorer stages without Kafka, on one core: what each
//! stage's loop does for a batch besides reading and producing it. Prints microseconds per record;
//! asserts nothing.
//!
//! - joiner: decode each input record (Avro, the binary codec), join it, encode every enriched
//!   session emitted, and after each batch of 10,000 records drain the changelog (JSON values).
//! - scorer: decode each enriched session, score it, encode every finding in Avro and as OCSF
//!   JSON, and drain the changelog after each batch.
//!
//! Run: `cargo bench -p offport-core --bench stages` (optionally `-- <devices> <records>`).
//! The input is [`offport_core::examples::join_mix`], as in the `core` bench.
#![allow(clippy::expect_used)]

// The allocator of the service binaries, so the code runs here as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use offport_core::baseline::BaselineSet;
use offport_core::durable::{Durable, StateChange};
use offport_core::examples;
use offport_core::join::{JoinConfig, JoinInput, Joiner};
use offport_core::model::{DeviceEvent, EnrichedSession, NetworkSession};
use offport_core::ocsf;
use offport_core::schema::Contract;
use offport_core::score::{ScoreConfig, Scorer};

const BATCH: usize = 10_000;

/// What a stage's changelog drains came to.
#[derive(Default)]
struct Changelog {
    records: usize,
    bytes: usize,
    seconds: f64,
}

impl Changelog {
    /// Drains `core`'s changes, as a stage does after each batch, and counts them.
    fn drain(&mut self, core: &mut impl Durable) {
        let started = Instant::now();
        let changes = core.drain_changes();
        self.seconds += started.elapsed().as_secs_f64();
        self.records += changes.len();
        self.bytes += changes
            .iter()
            .map(|c| match c {
                StateChange::Put { key, value } => key.len() + value.len(),
                StateChange::Delete { key } => key.len(),
            })
            .sum::<usize>();
    }

    fn bytes_each(&self) -> usize {
        self.bytes / self.records.max(1)
    }
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let devices = args.first().copied().unwrap_or(3_000);
    let records = args.get(1).copied().unwrap_or(300_000);
    let device_ids: Vec<String> = (0..devices).map(|d| format!("device-{d:06}")).collect();
    let session_codec = Contract::NetworkSession.binary().expect("schema");
    let event_codec = Contract::DeviceEvent.binary().expect("schema");
    let enriched_codec = Contract::EnrichedSession.binary().expect("schema");
    let finding_codec = Contract::Finding.binary().expect("schema");

    // The joiner's input as it arrives: Avro datums, tagged by topic.
    let inputs: Vec<(bool, Vec<u8>)> = examples::join_mix(&device_ids, records)
        .into_iter()
        .filter_map(|input| {
            let mut bytes = Vec::new();
            match input {
                JoinInput::Session(s) => {
                    session_codec.encode(&s, &mut bytes).expect("encode");
                    Some((true, bytes))
                }
                JoinInput::Event(e) => {
                    event_codec.encode(&e, &mut bytes).expect("encode");
                    Some((false, bytes))
                }
                JoinInput::Context(_) => None,
            }
        })
        .collect();

    for round in 1..=3 {
        // ---- joiner ----
        let mut joiner = Joiner::new(JoinConfig::default());
        joiner.journal_changes();
        let mut enriched_out: Vec<Vec<u8>> = Vec::new();
        let (mut emitted, mut out_bytes) = (0, 0);
        let mut changelog = Changelog::default();
        let started = Instant::now();
        for batch in inputs.chunks(BATCH) {
            for (is_session, bytes) in batch {
                let input = if *is_session {
                    JoinInput::Session(
                        session_codec
                            .decode::<NetworkSession>(bytes)
                            .expect("decode"),
                    )
                } else {
                    JoinInput::Event(event_codec.decode::<DeviceEvent>(bytes).expect("decode"))
                };
                for session in joiner.push(input) {
                    let mut datum = Vec::with_capacity(512);
                    enriched_codec.encode(&session, &mut datum).expect("encode");
                    out_bytes += datum.len();
                    emitted += 1;
                    // Kept for the scorer below (a move into a vector, inside the timing).
                    enriched_out.push(datum);
                }
            }
            changelog.drain(&mut joiner);
        }
        let join_seconds = started.elapsed().as_secs_f64();
        println!(
            "round {round}: joiner {:.2} us/record ({:.0} records/s; changelog drains {:.2} us/record): {} records, {emitted} enriched sessions ({} B each), {} changelog records ({} B each)",
            join_seconds * 1e6 / inputs.len() as f64,
            inputs.len() as f64 / join_seconds,
            changelog.seconds * 1e6 / inputs.len() as f64,
            inputs.len(),
            out_bytes / emitted.max(1),
            changelog.records,
            changelog.bytes_each(),
        );

        // ---- scorer ----
        let mut scorer = Scorer::new(
            BaselineSet::with_defaults().expect("default baseline"),
            ScoreConfig::default(),
        );
        scorer.journal_changes();
        let mut findings = 0;
        let mut changelog = Changelog::default();
        let started = Instant::now();
        for batch in enriched_out.chunks(BATCH) {
            // As the scorer stage does: the batch decoded, then scored group by group with
            // each next group warmed first.
            let sessions: Vec<EnrichedSession> = batch
                .iter()
                .map(|bytes| enriched_codec.decode(bytes).expect("decode"))
                .collect();
            scorer.score_all(&sessions, |_, out| {
                for finding in out {
                    let mut datum = Vec::with_capacity(1024);
                    finding_codec.encode(&finding, &mut datum).expect("encode");
                    let json = serde_json::to_vec(&ocsf::detection_finding(&finding, "bench"))
                        .expect("json");
                    std::hint::black_box((datum, json));
                    findings += 1;
                }
            });
            changelog.drain(&mut scorer);
        }
        let score_seconds = started.elapsed().as_secs_f64();
        println!(
            "round {round}: scorer {:.2} us/record ({:.0} records/s; changelog drains {:.2} us/record): {} enriched sessions, {findings} findings, {} changelog records ({} B each)",
            score_seconds * 1e6 / enriched_out.len().max(1) as f64,
            enriched_out.len() as f64 / score_seconds,
            changelog.seconds * 1e6 / enriched_out.len().max(1) as f64,
            enriched_out.len(),
            changelog.records,
            changelog.bytes_each(),
        );
    }
}
