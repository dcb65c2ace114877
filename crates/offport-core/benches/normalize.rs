//! Benchmark of normalization alone (no Kafka): offport session JSON records through
//! `ProxyNormalizer` and the Avro encoding of the result (apache-avro's schema-aware serializer
//! and the binary codec), on one core. Prints numbers; asserts only that both encodings have
//! the same length.
//!
//! Run: `cargo bench -p offport-core --bench normalize`.
#![allow(clippy::expect_used)]

// The allocator of the service binaries, so the code runs here as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use offport_core::examples;
use offport_core::model::NetworkSession;
use offport_core::normalize::proxy::{ProxyFormat, ProxyNormalizer};
use offport_core::normalize::{Limits, Normalized, Normalizer, RawRecord};
use offport_core::schema::Contract;

fn main() {
    let n = 200_000;
    let inputs: Vec<String> = (0..n).map(examples::session_json).collect();
    let headers = Vec::new();
    let mut normalizer = ProxyNormalizer::new(ProxyFormat::Auto, Limits::default());
    let schema = Contract::NetworkSession.schema().expect("schema");
    let binary = Contract::NetworkSession.binary().expect("binary");
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
        .build()
        .expect("writer");
    for round in 0..3 {
        let started = Instant::now();
        let mut sessions = Vec::with_capacity(n);
        for (i, value) in inputs.iter().enumerate() {
            let raw = RawRecord {
                topic: "offport.raw.proxy",
                partition: 0,
                offset: i as i64,
                key: None,
                value: Some(value.as_bytes()),
                headers: &headers,
                timestamp: None,
            };
            let out = normalizer
                .normalize(&raw, 1_795_168_800_000)
                .expect("valid");
            sessions.extend(out);
        }
        let normalized = started.elapsed().as_secs_f64();
        let sessions: Vec<_> = sessions
            .into_iter()
            .filter_map(|record| match record {
                Normalized::Session(s) => Some(s),
                _ => None,
            })
            .collect();
        // Each encoding as the registry codec writes it: the 5-byte wire header, then the datum.
        let time_encoding = |encode: &dyn Fn(&NetworkSession, &mut Vec<u8>)| {
            let started = Instant::now();
            let mut total = 0;
            for session in &sessions {
                let mut bytes = Vec::with_capacity(256);
                bytes.extend_from_slice(&[0, 0, 0, 0, 1]);
                encode(session, &mut bytes);
                total += bytes.len();
            }
            (started.elapsed().as_secs_f64(), total)
        };
        let (apache, apache_bytes) = time_encoding(&|s, out| {
            writer.write_ser(out, s).expect("encode");
        });
        let (fast, fast_bytes) = time_encoding(&|s, out| binary.encode(s, out).expect("encode"));
        assert_eq!(fast_bytes, apache_bytes);
        let per_record = |seconds: f64| seconds * 1e6 / n as f64;
        println!(
            "round {round}: normalize {:.2} us/record ({:.0}/s); Avro encode: apache-avro {:.2} us/record, binary codec {:.2} us/record; {} B/record",
            per_record(normalized),
            n as f64 / normalized,
            per_record(apache),
            per_record(fast),
            fast_bytes / n
        );
    }
}
