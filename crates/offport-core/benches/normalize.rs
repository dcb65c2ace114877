//! Benchmark of normalization alone (no Kafka): offport session JSON records through
//! `ProxyNormalizer` and the Avro encoding of the result, on one core. Prints numbers.
#![allow(clippy::indexing_slicing, clippy::expect_used)]

// The allocator of the service binaries, so the code runs here as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use offport_core::normalize::proxy::{ProxyFormat, ProxyNormalizer};
use offport_core::normalize::{Limits, Normalized, Normalizer, RawRecord};
use offport_core::schema::Contract;

fn session(i: usize) -> String {
    let device = format!("device-{:04}", i % 1000);
    let apps = [
        "com.example.weather",
        "com.example.mail",
        "com.google.android.gms",
    ];
    let app = apps[i % apps.len()];
    let port = [443, 8443, 5228, 8080][i % 4];
    format!(
        r#"{{"device_id":"{device}","platform":"ANDROID","app_id":"{app}","transport":"TCP","src_ip":"10.8.{}.{}","src_port":{},"dst_ip":"203.0.113.{}","dst_port":{port},"sensor_protocol":"tls","sni":"api{}.example.com","ja3":"e7d705a3286e19ea42f587b344ee6865","bytes_out":{},"bytes_in":{},"packets_out":12,"packets_in":10,"start_time":{},"duration_ms":{}}}"#,
        (i / 250) % 250,
        i % 250,
        30_000 + i % 30_000,
        i % 250,
        i % 97,
        400 + i % 1500,
        2_000 + i % 60_000,
        1_795_168_800_000_i64 + i as i64 * 37,
        100 + i % 5_000
    )
}

fn main() {
    let n = 200_000;
    let inputs: Vec<String> = (0..n).map(session).collect();
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
        let started = Instant::now();
        let mut bytes_total = 0;
        for record in &sessions {
            let Normalized::Session(s) = record else {
                continue;
            };
            let mut bytes = Vec::with_capacity(256);
            bytes.extend_from_slice(&[0, 0, 0, 0, 1]);
            writer.write_ser(&mut bytes, s).expect("encode");
            bytes_total += bytes.len();
        }
        let encoded = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let mut fast_total = 0;
        for record in &sessions {
            let Normalized::Session(s) = record else {
                continue;
            };
            let mut bytes = Vec::with_capacity(256);
            bytes.extend_from_slice(&[0, 0, 0, 0, 1]);
            binary.encode(s, &mut bytes).expect("encode");
            fast_total += bytes.len();
        }
        assert_eq!(fast_total, bytes_total);
        let fast = started.elapsed().as_secs_f64();
        println!(
            "  binary codec encode {:.2} us/record",
            fast * 1e6 / n as f64
        );
        println!(
            "round {round}: normalize {:.2} us/record ({:.0}/s), avro encode {:.2} us/record ({:.0}/s), {} B/record",
            normalized * 1e6 / n as f64,
            n as f64 / normalized,
            encoded * 1e6 / n as f64,
            n as f64 / encoded,
            bytes_total / n
        );
    }
}
