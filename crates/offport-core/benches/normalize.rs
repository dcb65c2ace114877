//! Benchmark of normalization alone (no Kafka): offport session JSON records through
//! `ProxyNormalizer` and the Avro encoding of the result (apache-avro's schema-aware serializer
//! and the binary codec), on one core; then Zeek conn.log lines (as a tunnel sensor writes them,
//! every field Zeek writes) through the same normalizer in `auto` format, against offport JSON
//! in the same round, and PCAPdroid rows and Suricata EVE flow events likewise. Prints numbers;
//! asserts only that both encodings have the same length and that every sensor line makes a
//! session.
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
    zeek_against_offport(&inputs);
}

/// A conn.log line of a TLS connection, with every field Zeek's JSON writer puts in one.
fn zeek_conn(i: usize) -> String {
    format!(
        concat!(
            r#"{{"ts":{}.{:03},"uid":"C{:016x}","id.orig_h":"10.8.{}.{}","id.orig_p":{},"#,
            r#""id.resp_h":"93.184.{}.{}","id.resp_p":443,"proto":"tcp","service":"ssl","#,
            r#""duration":1.25{},"orig_bytes":517,"resp_bytes":{},"conn_state":"SF","#,
            r#""local_orig":true,"local_resp":false,"missed_bytes":0,"history":"ShADadFf","#,
            r#""orig_pkts":6,"orig_ip_bytes":829,"resp_pkts":7,"resp_ip_bytes":4460,"#,
            r#""community_id":"1:LQU9qZlK+B5F3KDmev6m5PMibrg="}}"#
        ),
        1_795_168_800 + i / 10,
        i % 1000,
        i,
        (i / 250) % 250,
        i % 250,
        40_000 + i % 20_000,
        (i / 7) % 250,
        i % 250,
        i % 10,
        4_096 + i % 512,
    )
}

/// A Suricata EVE flow event as Suricata writes one (`timestamp` first, the flow's times in
/// its own `+0000` format), from a tunnel sensor.
fn eve_flow(i: usize) -> String {
    let seconds = 36_000 + i / 100;
    let clock = |s: usize| {
        format!(
            "2026-11-20T{:02}:{:02}:{:02}.{:06}+0000",
            s / 3600,
            (s / 60) % 60,
            s % 60,
            (i * 7_919) % 1_000_000
        )
    };
    format!(
        concat!(
            r#"{{"timestamp":"{}","flow_id":{},"in_iface":"tun0","event_type":"flow","#,
            r#""src_ip":"10.8.{}.{}","src_port":{},"dest_ip":"93.184.{}.{}","dest_port":443,"#,
            r#""proto":"TCP","app_proto":"tls","flow":{{"pkts_toserver":10,"pkts_toclient":8,"#,
            r#""bytes_toserver":1532,"bytes_toclient":{},"start":"{}","end":"{}","age":2,"#,
            r#""state":"closed","reason":"timeout","alerted":false}},"community_id":"1:LQU9qZlK+B5F3KDmev6m5PMibrg="}}"#
        ),
        clock(seconds + 2),
        1_000_000_000_000 + i,
        (i / 250) % 250,
        i % 250,
        40_000 + i % 20_000,
        (i / 7) % 250,
        i % 250,
        4_096 + i % 512,
        clock(seconds),
        clock(seconds + 2),
    )
}

/// A PCAPdroid export's row with the export's header, as a record of the raw topic holds it.
fn pcapdroid_row(i: usize) -> String {
    format!(
        "IPProto,SrcIP,SrcPort,DstIp,DstPort,UID,App,PackageName,Proto,Status,Info,BytesSent,BytesRcvd,PktsSent,PktsRcvd,FirstSeen,LastSeen\n6,10.215.173.1,{},203.0.113.{},443,10123,chrome,com.android.chrome,TLS,Closed,www.example{}.com,1532,3290,10,8,2026-11-20T10:{:02}:{:02}.{:03}+00:00,2026-11-20T10:{:02}:{:02}.999+00:00",
        40_000 + i % 20_000,
        i % 250,
        i % 500,
        (i / 60) % 60,
        i % 60,
        i % 999,
        (i / 60) % 60,
        i % 60,
    )
}

/// Zeek conn.log and offport JSON through the `auto` normalizer, interleaved rounds.
fn zeek_against_offport(offport: &[String]) {
    let n = offport.len();
    let zeek: Vec<String> = (0..n).map(zeek_conn).collect();
    // The same lines with their keys sorted, as a writer that does not keep Zeek's order does.
    let sorted: Vec<String> = zeek
        .iter()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .expect("json")
                .to_string()
        })
        .collect();
    let pcapdroid: Vec<String> = (0..n).map(pcapdroid_row).collect();
    let eve: Vec<String> = (0..n).map(eve_flow).collect();
    let headers = Vec::new();
    let run = |inputs: &[String]| {
        let mut normalizer = ProxyNormalizer::new(ProxyFormat::Auto, Limits::default());
        let started = Instant::now();
        let mut sessions = 0;
        for (i, value) in inputs.iter().enumerate() {
            let raw = RawRecord {
                topic: "offport.raw.proxy",
                partition: 0,
                offset: i as i64,
                key: Some(b"ios-0042"),
                value: Some(value.as_bytes()),
                headers: &headers,
                timestamp: None,
            };
            sessions += normalizer
                .normalize(&raw, 1_795_268_800_000)
                .expect("valid")
                .len();
        }
        (started.elapsed().as_secs_f64() * 1e6 / n as f64, sessions)
    };
    for round in 0..3 {
        let (own, _) = run(offport);
        let (conn, sessions) = run(&zeek);
        assert_eq!(sessions, n, "every conn line makes a session");
        let (keys_sorted, sessions) = run(&sorted);
        assert_eq!(sessions, n, "every conn line makes a session");
        let (rows, sessions) = run(&pcapdroid);
        assert_eq!(sessions, n, "every PCAPdroid row makes a session");
        let (flows, sessions) = run(&eve);
        assert_eq!(sessions, n, "every EVE flow event makes a session");
        println!(
            "round {round}: auto format, offport JSON {own:.2} us/record, Zeek conn.log {conn:.2} us/record ({:.2}x offport JSON's rate), keys sorted {keys_sorted:.2} us/record ({:.2}x), PCAPdroid {rows:.2} us/record ({:.2}x), Suricata EVE flow {flows:.2} us/record ({:.2}x)",
            own / conn,
            own / keys_sorted,
            own / rows,
            own / flows
        );
    }
}
