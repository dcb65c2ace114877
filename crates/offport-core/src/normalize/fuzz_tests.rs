//! Fuzz targets of every parser, as properties run by `cargo test` (proptest; 256 cases each by
//! default, `PROPTEST_CASES=100000` for a longer run): arbitrary bytes, and records of each
//! format as the tools write them (the raw fixtures) with bytes flipped, cut, or spliced with
//! tokens that break parsers (quotes, braces, huge numbers, NaN, NUL). Whatever comes in, a
//! normalizer must not panic, must give a rejection a reason and a message, and whatever it
//! accepts must hold the invariants every later stage relies on.

use proptest::prelude::*;

use super::edr::EdrNormalizer;
use super::mdm::MdmNormalizer;
use super::proxy::sources::{SourceMap, SourceMapping};
use super::proxy::{ProxyConfig, ProxyNormalizer};
use super::{Limits, Normalized, Normalizer, RawRecord};
use crate::model::EpochMillis;

const NOW: EpochMillis = 1_795_190_400_000;

/// Tokens that break parsers when spliced into a record.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\\",
    b"\0",
    b"\n",
    b"\r\n",
    b"-",
    b"99999999999999999999999",
    b"1e400",
    b"NaN",
    b"-0",
    b"null",
    b"true",
    b"\xff\xfe",
    b"\xc3",
    b"\"\":",
    b"0x",
    b"=",
    b"%%",
    b"::",
    b"65536",
    b"-1",
];

fn fixture(path: &str) -> Vec<Vec<u8>> {
    let full = format!(
        "{}/../../tests/fixtures/raw/{path}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&full).unwrap_or_default();
    if path.ends_with(".csv") {
        return vec![text.into_bytes()];
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.as_bytes().to_vec())
        .collect()
}

/// The seeds of each parser: its fixtures, or one record where there is no fixture file.
fn seeds(parser: Parser) -> Vec<Vec<u8>> {
    let seeds = match parser {
        Parser::OffportSession => vec![br#"{"device_id":"dev-1","app_id":"com.x","dst_ip":"203.0.113.7","dst_port":8443,"start_time":"2026-11-20T10:00:00Z","duration_ms":1500,"bytes_out":10,"bytes_in":20,"sensor_protocol":"tls","sni":"a.example","client_bytes_hex":"160301"}"#.to_vec()],
        Parser::Pcapdroid => fixture("pcapdroid.csv"),
        Parser::Zeek => ["zeek/conn.log", "zeek/ssl.log", "zeek/http.log", "zeek/dns.log"]
            .into_iter()
            .flat_map(fixture)
            .collect(),
        Parser::Suricata => fixture("suricata/eve.json"),
        Parser::EdrJson => vec![br#"{"device_id":"d1","platform":"android","app_id":"com.x","kind":"NETWORK_API_USAGE","network_api":{"api":"okhttp","call_count":4,"window_ms":1000},"event_time":"2026-11-20T10:00:00Z"}"#.to_vec()],
        Parser::UsageStats => fixture("edr/usagestats.csv"),
        Parser::MicroMdm => ["mdm/micromdm-webhook.jsonl", "mdm/nanomdm-webhook.jsonl"]
            .into_iter()
            .flat_map(fixture)
            .collect(),
        Parser::Amapi => fixture("mdm/amapi-devices.jsonl"),
        Parser::OffportContext => vec![br#"{"device_id":"ios-1","platform":"ios","supervised":true,"event_time":"2026-11-20T10:00:00Z","apps":[{"app_id":"com.x","managed":true}]}"#.to_vec()],
    };
    assert!(!seeds.is_empty(), "{parser:?} has seeds");
    seeds
}

#[derive(Debug, Clone, Copy)]
enum Parser {
    OffportSession,
    Pcapdroid,
    Zeek,
    Suricata,
    EdrJson,
    UsageStats,
    MicroMdm,
    Amapi,
    OffportContext,
}

/// One mutation of a seed.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Cut(usize),
    Splice(usize, usize),
    Drop(usize, usize),
}

fn apply(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for edit in edits {
        let len = bytes.len().max(1);
        match *edit {
            Edit::Flip(at, value) => {
                if let Some(b) = bytes.get_mut(at % len) {
                    *b = value;
                }
            }
            Edit::Cut(at) => bytes.truncate(at % len),
            Edit::Splice(at, token) => {
                let at = (at % len).min(bytes.len());
                let token = TOKENS
                    .get(token % TOKENS.len())
                    .copied()
                    .unwrap_or_default();
                bytes.splice(at..at, token.iter().copied());
            }
            Edit::Drop(at, n) => {
                let at = (at % len).min(bytes.len());
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
        }
    }
    bytes
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    proptest::collection::vec(
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(a, v)| Edit::Flip(a, v)),
            any::<usize>().prop_map(Edit::Cut),
            (any::<usize>(), any::<usize>()).prop_map(|(a, t)| Edit::Splice(a, t)),
            (any::<usize>(), 1usize..16).prop_map(|(a, n)| Edit::Drop(a, n)),
        ],
        1..6,
    )
}

/// Runs `parser`'s normalizer on `value` and checks what must hold whatever the input; `true`
/// when the value was accepted.
fn check(parser: Parser, value: &[u8]) -> Result<bool, TestCaseError> {
    let sources = SourceMap::new(vec![SourceMapping {
        network: "10.8.0.0/16"
            .parse()
            .map_err(|_| TestCaseError::fail("net"))?,
        device_id: "android-7f3a".to_string(),
        platform: Some("android".to_string()),
        app_id: None,
        from: None,
        until: None,
    }]);
    let headers = vec![(
        "offport.device_id".to_string(),
        Some(b"android-7f3a".to_vec()),
    )];
    let record = RawRecord {
        topic: "raw",
        partition: 0,
        offset: 0,
        key: None,
        value: Some(value),
        headers: &headers,
        timestamp: None,
    };
    let result = match parser {
        Parser::OffportSession | Parser::Pcapdroid | Parser::Zeek | Parser::Suricata => {
            ProxyNormalizer::configured(ProxyConfig {
                sources,
                ..ProxyConfig::default()
            })
            .normalize(&record, NOW)
        }
        Parser::EdrJson | Parser::UsageStats => {
            EdrNormalizer::new(Limits::default()).normalize(&record, NOW)
        }
        Parser::MicroMdm | Parser::Amapi | Parser::OffportContext => {
            MdmNormalizer::new(Limits::default()).normalize(&record, NOW)
        }
    };
    match result {
        Err(rejection) => {
            prop_assert!(!rejection.message.is_empty(), "{parser:?}");
            Ok(false)
        }
        Ok(records) => {
            for record in records {
                invariants(&record)?;
            }
            Ok(true)
        }
    }
}

/// What every accepted record holds (the joiner, scorer and Avro contracts rely on it).
fn invariants(record: &Normalized) -> Result<(), TestCaseError> {
    let device_ok = |id: &str| !id.trim().is_empty() && id.len() <= 256;
    match record {
        Normalized::Session(s) => {
            prop_assert!(device_ok(&s.device_id), "{:?}", s.device_id);
            prop_assert!((1..=65_535).contains(&s.dst_port), "{}", s.dst_port);
            prop_assert!(s.src_port.is_none_or(|p| (0..=65_535).contains(&p)));
            prop_assert!(s.dst_ip.parse::<std::net::IpAddr>().is_ok(), "{}", s.dst_ip);
            prop_assert!(s.bytes_out >= 0 && s.bytes_in >= 0);
            prop_assert!(s.duration_ms.is_none_or(|d| d >= 0));
            prop_assert!(s.start_time > 0 && s.start_time <= NOW + 86_400_000);
            prop_assert!((0.0..=1.0).contains(&s.attribution_confidence));
            prop_assert!(s
                .tls
                .as_ref()
                .and_then(|t| t.sni.as_ref())
                .is_none_or(|sni| sni.len() <= 261));
            prop_assert!(s.payload_entropy.is_none_or(|e| (0.0..=8.0).contains(&e)));
        }
        Normalized::Event(e) => {
            prop_assert!(device_ok(&e.device_id), "{:?}", e.device_id);
            prop_assert!(e.event_time > 0 && e.event_time <= NOW + 86_400_000);
        }
        Normalized::Context(c) => {
            prop_assert!(device_ok(&c.device_id), "{:?}", c.device_id);
            prop_assert!(c.event_time > 0 && c.event_time <= NOW + 86_400_000);
            prop_assert!(c.apps.iter().all(|a| !a.app_id.trim().is_empty()));
        }
    }
    Ok(())
}

const PARSERS: [Parser; 9] = [
    Parser::OffportSession,
    Parser::Pcapdroid,
    Parser::Zeek,
    Parser::Suricata,
    Parser::EdrJson,
    Parser::UsageStats,
    Parser::MicroMdm,
    Parser::Amapi,
    Parser::OffportContext,
];

proptest! {
    #[test]
    fn every_parser_survives_arbitrary_bytes(
        parser in 0usize..PARSERS.len(),
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        check(PARSERS[parser % PARSERS.len()], &bytes)?;
    }

    #[test]
    fn every_parser_survives_its_own_records_mutated(
        parser in 0usize..PARSERS.len(),
        seed in any::<usize>(),
        edits in edits(),
    ) {
        let parser = PARSERS[parser % PARSERS.len()];
        let seeds = seeds(parser);
        let seed = &seeds[seed % seeds.len()];
        check(parser, &apply(seed, &edits))?;
    }
}

#[test]
fn every_seed_is_accepted_unmutated() {
    // The mutations start from records the parsers take: a seed that is rejected as it is
    // would only test the rejection path.
    for parser in PARSERS {
        for seed in seeds(parser) {
            let accepted = check(parser, &seed).unwrap_or_else(|e| panic!("{parser:?}: {e}"));
            assert!(accepted, "{parser:?}: {}", String::from_utf8_lossy(&seed));
        }
    }
}
