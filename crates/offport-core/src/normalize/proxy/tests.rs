use super::*;
use crate::model::{AppProtocol, NetworkSession, ProtocolEvidence, Transport};

#[test]
fn sensor_lines_are_told_by_their_keys_in_any_order_and_offport_json_never_is() {
    let names = offport_json::field_names();
    assert!(names.contains(&"session_id") && names.contains(&"still_open"));
    assert_eq!(names.len(), 34, "{names:?}");
    for (line, expected) in [
        (r#"{"ts":1.0,"uid":"C1"}"#, Some(SensorLine::Zeek)),
        (
            r#"{"conn_state":"SF","id.orig_h":"10.0.0.1","uid":"C1"}"#,
            Some(SensorLine::Zeek),
        ),
        (
            r#"{"timestamp":"x","event_type":"flow"}"#,
            Some(SensorLine::Eve),
        ),
        (
            r#"{"dest_ip":"1.2.3.4","event_type":"tls","flow_id":1}"#,
            Some(SensorLine::Eve),
        ),
        // offport JSON whose values happen to hold a sensor's key: the long way decides.
        (r#"{"session_id":"\"uid\"","sni":"event_type"}"#, None),
        (r#"{"weird":1}"#, None),
        ("IPProto,SrcIP", None),
    ] {
        assert_eq!(sensor_line(line.as_bytes()), expected, "{line}");
    }
}
use crate::model::DeadLetterReason;

const NOW: EpochMillis = 1_763_640_000_000;

fn record(value: &[u8]) -> RawRecord<'_> {
    RawRecord::new("offport.raw.proxy", 2, 41, value)
}

fn normalize(json: &str) -> Result<NetworkSession, Rejection> {
    let out = OffportJson::default().normalize(&record(json.as_bytes()), NOW)?;
    match out.into_iter().next() {
        Some(Normalized::Session(s)) => Ok(s),
        other => panic!("expected one session, got {other:?}"),
    }
}

#[test]
fn a_minimal_record_gets_defaults_and_a_stable_id() {
    let json = r#"{"device_id":"dev-1","dst_ip":"203.0.113.7","dst_port":8443,
        "start_time":"2025-11-20T10:00:00Z","sensor_protocol":"tls"}"#;
    let s = normalize(json).unwrap();
    assert_eq!(s.device_id, "dev-1");
    assert_eq!(s.transport, Transport::Tcp);
    assert_eq!(s.protocol, AppProtocol::Tls);
    assert_eq!(s.protocol_evidence, ProtocolEvidence::Sensor);
    assert_eq!(s.attribution, AttributionSource::DeviceOnly);
    assert_eq!(s.attribution_confidence, 0.5);
    assert_eq!(s.start_time, 1_763_632_800_000);
    assert_eq!(s.source_ref, "offport.raw.proxy/2@41");
    assert_eq!(s.session_id.len(), 32);
    assert_eq!(normalize(json).unwrap().session_id, s.session_id);
}

#[test]
fn client_bytes_are_recognised_and_win_over_a_wrong_label() {
    let hello = crate::protocol::tests::client_hello("c2.example.net", &["http/1.1"]);
    let json = format!(
        r#"{{"device_id":"dev-1","app_id":"com.x","dst_ip":"2001:db8::7","dst_port":8443,
        "start_time":1763632800,"duration_ms":1500,"sensor_protocol":"http",
        "client_bytes_hex":"{}","bytes_out":517,"bytes_in":4000}}"#,
        hex::encode(&hello)
    );
    let s = normalize(&json).unwrap();
    assert_eq!(s.protocol, AppProtocol::Tls);
    assert_eq!(s.protocol_evidence, ProtocolEvidence::ClientBytes);
    assert_eq!(s.protocol_label.as_deref(), Some("http"));
    let tls = s.tls.unwrap();
    assert_eq!(tls.sni.as_deref(), Some("c2.example.net"));
    assert!(tls.ja3.is_some() && tls.ja4.is_some());
    assert_eq!(s.dst_ip, "2001:db8::7");
    assert_eq!(s.start_time, 1_763_632_800_000, "epoch seconds");
    assert_eq!(s.payload_sample_bytes, i32::try_from(hello.len()).ok());
    assert_eq!(s.attribution, AttributionSource::PerAppVpn);
}

#[test]
fn the_device_id_may_come_from_a_header_or_the_key() {
    let json = br#"{"dst_ip":"198.51.100.1","dst_port":5300,"transport":"udp","start_time":1763632800000}"#;
    let headers = [(DEVICE_HEADER.to_string(), Some(b"dev-h".to_vec()))];
    let mut from_header = record(json);
    from_header.headers = &headers;
    let out = OffportJson::default().normalize(&from_header, NOW).unwrap();
    assert_eq!(out[0].device_id(), "dev-h");
    let mut from_key = record(json);
    from_key.key = Some(b"dev-k");
    let out = OffportJson::default().normalize(&from_key, NOW).unwrap();
    assert_eq!(out[0].device_id(), "dev-k");
    let err = OffportJson::default()
        .normalize(&record(json), NOW)
        .unwrap_err();
    assert_eq!(err.reason, DeadLetterReason::MissingDeviceId);
}

#[test]
fn bad_records_are_rejected_with_a_reason_and_the_field() {
    let cases = [
        (
            "{",
            DeadLetterReason::Unparseable,
            "not an offport session JSON",
        ),
        (
            r#"{"device_id":"d","dst_ip":"203.0.113.7","dst_port":70000,"start_time":1763632800}"#,
            DeadLetterReason::ImpossibleValue,
            "dst_port=70000",
        ),
        (
            r#"{"device_id":"d","dst_ip":"203.0.113.7","dst_port":443,"start_time":1763632800,"bytes_out":-5}"#,
            DeadLetterReason::ImpossibleValue,
            "bytes_out=-5 is negative",
        ),
        (
            r#"{"device_id":"d","dst_ip":"not-an-ip","dst_port":443,"start_time":1763632800}"#,
            DeadLetterReason::ImpossibleValue,
            "dst_ip=\"not-an-ip\"",
        ),
        (
            r#"{"device_id":"d","dst_ip":"203.0.113.7","dst_port":443,"start_time":"soon"}"#,
            DeadLetterReason::Unparseable,
            "start_time=\"soon\"",
        ),
        (
            r#"{"device_id":"d","dst_ip":"203.0.113.7","dst_port":443,"start_time":1763632800,"end_time":1763632700}"#,
            DeadLetterReason::ImpossibleValue,
            "before start time",
        ),
        (
            r#"{"device_id":"d","dst_ip":"203.0.113.7","dst_port":443,"start_time":1763632800,"colour":"red"}"#,
            DeadLetterReason::Unparseable,
            "unknown field `colour`",
        ),
    ];
    for (json, reason, words) in cases {
        let err = normalize(json).unwrap_err();
        assert_eq!(err.reason, reason, "{json}");
        assert!(err.message.contains(words), "{json}: {}", err.message);
    }
}

#[test]
fn oversize_and_tombstones_are_rejected_before_parsing() {
    let mut normalizer = OffportJson {
        limits: Limits {
            max_record_bytes: 10,
        },
    };
    let err = normalizer
        .normalize(&record(b"{\"device_id\":\"long\"}"), NOW)
        .unwrap_err();
    assert_eq!(err.reason, DeadLetterReason::Oversize);
    let mut tombstone = record(b"");
    tombstone.value = None;
    assert_eq!(
        normalizer.normalize(&tombstone, NOW).unwrap_err().reason,
        DeadLetterReason::Unparseable
    );
}
