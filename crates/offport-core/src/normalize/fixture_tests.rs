//! Every raw fixture of `tests/fixtures/raw` (written from each tool's public documentation and
//! source, see its README) through the normalizers, with the values a user would see.

use super::edr::EdrNormalizer;
use super::mdm::MdmNormalizer;
use super::proxy::flows::FlowJoinLimits;
use super::proxy::sources::{SourceMap, SourceMapping};
use super::proxy::{ProxyConfig, ProxyFormat, ProxyNormalizer};
use super::{Limits, Normalized, Normalizer, RawRecord, Rejection};
use crate::model::{
    AppProtocol, AttributionSource, DeviceContext, DeviceEvent, DeviceEventKind, EpochMillis,
    NetworkSession, Platform, ProtocolEvidence, Transport,
};

const NOW: EpochMillis = 1_795_190_400_000; // 2026-11-20T16:00Z

fn fixture(path: &str) -> String {
    let full = format!(
        "{}/../../tests/fixtures/raw/{path}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

fn run(
    normalizer: &mut impl Normalizer,
    topic: &str,
    lines: &[String],
    headers: &[(String, Option<Vec<u8>>)],
) -> Vec<Result<Vec<Normalized>, Rejection>> {
    lines
        .iter()
        .enumerate()
        .map(|(offset, line)| {
            let record = RawRecord {
                topic,
                partition: 0,
                offset: offset as i64,
                key: None,
                value: Some(line.as_bytes()),
                headers,
                timestamp: None,
            };
            normalizer.normalize(&record, NOW)
        })
        .collect()
}

fn sessions(results: Vec<Result<Vec<Normalized>, Rejection>>) -> Vec<NetworkSession> {
    results
        .into_iter()
        .flat_map(|r| r.unwrap_or_else(|e| panic!("rejected: {e}")))
        .map(|n| match n {
            Normalized::Session(s) => s,
            other => panic!("not a session: {other:?}"),
        })
        .collect()
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

fn fleet_sources() -> SourceMap {
    let map = |network: &str, device: &str, platform: &str| SourceMapping {
        network: network.parse().unwrap(),
        device_id: device.to_string(),
        platform: Some(platform.to_string()),
        app_id: None,
        from: None,
        until: None,
    };
    SourceMap::new(vec![
        map("10.8.0.12/32", "android-7f3a", "android"),
        map("fd00:8::/64", "android-7f3a", "android"),
        map("10.8.0.13/32", "ios-91c2", "ios"),
    ])
}

fn device_header() -> Vec<(String, Option<Vec<u8>>)> {
    vec![(
        super::proxy::DEVICE_HEADER.to_string(),
        Some(b"android-7f3a".to_vec()),
    )]
}

#[test]
fn pcapdroid_exports_quoted_and_as_pcapdroid_writes_them() {
    for file in ["pcapdroid.csv", "pcapdroid-unquoted.csv"] {
        // The whole export in one record, and row by row (headerless, auto-detected).
        let whole = vec![fixture(file)];
        let mut normalizer = ProxyNormalizer::new(ProxyFormat::Auto, Limits::default());
        let all = sessions(run(&mut normalizer, "raw", &whole, &device_header()));
        let rows: Vec<String> = lines(&fixture(file)).into_iter().skip(1).collect();
        let one_by_one = sessions(run(&mut normalizer, "raw", &rows, &device_header()));
        assert_eq!(all.len(), 11, "{file}");
        assert_eq!(one_by_one.len(), 11, "{file}");
        for (a, b) in all.iter().zip(&one_by_one) {
            assert_eq!((&a.session_id, &a.app_name), (&b.session_id, &b.app_name));
        }

        let dns = &all[0];
        assert_eq!(dns.device_id, "android-7f3a");
        assert_eq!(dns.platform, Platform::Android);
        assert_eq!(dns.transport, Transport::Udp);
        assert_eq!(dns.protocol, AppProtocol::Dns);
        assert_eq!(dns.dns.as_ref().unwrap().qname, "beacon.wx-telemetry.net");
        assert_eq!(dns.app_name.as_deref(), Some("Ökotest Wetter ☀"));
        assert_eq!(
            dns.start_time, 1_795_168_804_870,
            "+01:00 local time read as UTC"
        );
        assert_eq!(dns.duration_ms, Some(31));

        let beacon = &all[1];
        assert_eq!((beacon.dst_port, beacon.protocol), (8443, AppProtocol::Tls));
        assert_eq!(beacon.protocol_evidence, ProtocolEvidence::Sensor);
        assert_eq!(beacon.app_id.as_deref(), Some("com.example.weather"));
        assert_eq!(beacon.app_uid, Some(10234));
        assert_eq!(beacon.attribution, AttributionSource::VpnUid);
        assert_eq!(
            beacon.tls.as_ref().unwrap().sni.as_deref(),
            Some("beacon.wx-telemetry.net")
        );
        assert_eq!((beacon.bytes_out, beacon.bytes_in), (1532, 3290));

        let push = &all[2];
        assert_eq!(push.dst_port, 5228);
        assert!(push.still_open);
        assert_eq!(push.http, None);
        let http = &all[3];
        assert_eq!(http.protocol, AppProtocol::Http);
        assert_eq!(
            http.http.as_ref().unwrap().host.as_deref(),
            Some("updates.wx-telemetry.net")
        );
        assert_eq!(all[4].protocol, AppProtocol::Quic);
        assert_eq!(all[5].src_ip.as_deref(), Some("fd00:8::12"));
        assert_eq!(all[5].dst_ip, "2a00:1450:4001:82b::200a");
        assert_eq!(all[5].protocol, AppProtocol::Tls, "nDPI HTTPS is TLS");
        assert!(
            all[6].app_name.as_deref().unwrap().starts_with("Memo,"),
            "{file}"
        );
        assert_eq!(
            all[6].app_id.as_deref(),
            Some("com.memopro.android"),
            "{file}"
        );
        let unknown = &all[7];
        assert_eq!((unknown.dst_port, unknown.app_id.as_deref()), (4444, None));
        assert_eq!(unknown.attribution, AttributionSource::DeviceOnly);
        assert_eq!(unknown.protocol, AppProtocol::Unknown);
        assert_eq!(all[8].protocol, AppProtocol::Dns, "nDPI MDNS on 5353");
        assert_eq!(all[10].protocol, AppProtocol::Stun);
        assert_eq!(all[10].app_id, None);
    }
    // The quoted export keeps the name exactly.
    let mut normalizer = ProxyNormalizer::new(ProxyFormat::PcapdroidCsv, Limits::default());
    let all = sessions(run(
        &mut normalizer,
        "raw",
        &[fixture("pcapdroid.csv")],
        &device_header(),
    ));
    assert_eq!(all[6].app_name.as_deref(), Some("Memo, \"Pro\""));
}

#[test]
fn a_pcapdroid_export_without_a_device_id_is_rejected_whole_and_says_why() {
    let mut normalizer = ProxyNormalizer::new(ProxyFormat::Auto, Limits::default());
    let results = run(&mut normalizer, "raw", &[fixture("pcapdroid.csv")], &[]);
    let err = results.into_iter().next().unwrap().unwrap_err();
    assert_eq!(err.reason, crate::model::DeadLetterReason::MissingDeviceId);
    assert!(err.message.starts_with("line 2:"), "{}", err.message);
    // A configured default device id fills the gap.
    let mut normalizer = ProxyNormalizer::configured(ProxyConfig {
        default_device_id: Some("android-7f3a".into()),
        ..ProxyConfig::default()
    });
    let all = sessions(run(
        &mut normalizer,
        "raw",
        &[fixture("pcapdroid.csv")],
        &[],
    ));
    assert_eq!(all.len(), 11);
}

fn zeek_input() -> Vec<String> {
    // A live stream carries each line when Zeek writes it: application logs while the
    // connection runs (at their `ts`), conn.log when it ends (`ts` is its start, so it is
    // written at `ts + duration`).
    let mut input: Vec<(EpochMillis, String)> = Vec::new();
    for file in [
        "zeek/ssl.log",
        "zeek/http.log",
        "zeek/dns.log",
        "zeek/conn.log",
        "zeek/conn-iso8601.log",
    ] {
        for line in lines(&fixture(file)) {
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            let ts = super::time_from_json(&value["ts"]).unwrap();
            let duration = value
                .get("duration")
                .and_then(|d| d.as_f64())
                .unwrap_or(0.0);
            let written =
                ts + (duration * 1000.0) as EpochMillis + i64::from(file.contains("conn"));
            input.push((written, line));
        }
    }
    input.sort_by_key(|(written, _)| *written);
    input.into_iter().map(|(_, line)| line).collect()
}

#[test]
fn zeek_conn_logs_take_their_ssl_http_and_dns_companions_by_uid() {
    let mut normalizer = ProxyNormalizer::configured(ProxyConfig {
        sources: fleet_sources(),
        ..ProxyConfig::default()
    });
    let all = sessions(run(&mut normalizer, "raw.zeek", &zeek_input(), &[]));
    assert_eq!(all.len(), 12, "one session per conn.log line");
    assert_eq!(
        normalizer.held_flows(),
        0,
        "every companion found its connection"
    );
    let by_port = |port: i32, ip: &str| {
        all.iter()
            .find(|s| s.dst_port == port && s.dst_ip == ip)
            .unwrap_or_else(|| panic!("no session to {ip}:{port}"))
    };
    let beacon = by_port(8443, "203.0.113.45");
    assert_eq!(beacon.device_id, "android-7f3a");
    assert_eq!(beacon.platform, Platform::Android);
    assert_eq!(beacon.protocol, AppProtocol::Tls);
    assert_eq!(beacon.protocol_label.as_deref(), Some("ssl"));
    let tls = beacon.tls.as_ref().unwrap();
    assert_eq!(tls.sni.as_deref(), Some("beacon.wx-telemetry.net"));
    assert_eq!(tls.ja3.as_deref(), Some("9f94c4ee15798cf17477425c56fd55e8"));
    assert_eq!(
        tls.ja4.as_deref(),
        Some("t12d120700_d34a8e72043a_0f3b2bcde21d")
    );
    assert_eq!(beacon.duration_ms, Some(1842));
    assert_eq!((beacon.bytes_out, beacon.bytes_in), (1012, 2874));
    assert!(beacon.source_ref.starts_with("raw.zeek/0@"));
    let conn_offset: usize = beacon
        .source_ref
        .rsplit('@')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        zeek_input()[conn_offset].contains("conn_state"),
        "the conn.log record"
    );
    let http = by_port(8080, "198.51.100.23");
    assert_eq!(
        http.http.as_ref().unwrap().host.as_deref(),
        Some("updates.wx-telemetry.net"),
        "port stripped from http.log host"
    );
    let dns = by_port(5353, "10.8.0.1");
    assert_eq!(dns.protocol, AppProtocol::Dns);
    assert_eq!(dns.dns.as_ref().unwrap().qname, "c2.wx-telemetry.net");
    let quic = by_port(443, "142.250.185.110");
    assert_eq!(quic.protocol, AppProtocol::Quic);
    let v6 = by_port(443, "2a00:1450:4001:82b::200a");
    assert_eq!(v6.device_id, "android-7f3a");
    let unknown = by_port(4444, "192.0.2.77");
    assert_eq!(unknown.protocol, AppProtocol::Unknown);
    let iphone = by_port(443, "198.51.100.10");
    assert_eq!(iphone.device_id, "ios-91c2");
    assert_eq!(iphone.platform, Platform::Ios);
    assert_eq!(iphone.start_time, 1_795_168_919_871, "ISO 8601 ts");
    assert_eq!(
        iphone.tls.as_ref().unwrap().sni.as_deref(),
        Some("mdm.corp.example")
    );
    let resolver = by_port(53, "10.8.0.1");
    assert!(resolver.dns.is_some());
}

#[test]
fn zeek_companions_without_a_connection_are_released_after_the_wait_and_never_emitted_alone() {
    let mut normalizer = ProxyNormalizer::configured(ProxyConfig {
        sources: fleet_sources(),
        flows: FlowJoinLimits {
            wait_ms: 1_800_000,
            ..FlowJoinLimits::default()
        },
        ..ProxyConfig::default()
    });
    let ssl = lines(&fixture("zeek/ssl.log"));
    let out = sessions(run(&mut normalizer, "raw.zeek", &ssl, &[]));
    assert!(out.is_empty());
    assert_eq!(normalizer.held_flows(), 4);
    assert_eq!(normalizer.held_from("raw.zeek", 0), Some(0));
    // Much later traffic moves event time on: the four are released (their offsets may be
    // committed) but not emitted: a flow is one session, made by its connection record.
    let conns = lines(&fixture("zeek/conn.log"));
    let mut later: serde_json::Value = serde_json::from_str(conns.last().unwrap()).unwrap();
    later["ts"] = serde_json::json!(1_795_176_000.0); // 12:00Z, past every wait
    later["uid"] = serde_json::json!("CLater");
    let out = sessions(run(&mut normalizer, "raw.zeek", &[later.to_string()], &[]));
    assert_eq!(out.len(), 1);
    assert!(out[0].tls.is_none());
    assert_eq!(normalizer.held_flows(), 0);
    assert_eq!(normalizer.held_from("raw.zeek", 0), None);
    // Their connection records, even hours late, still take their SNIs.
    let conns: Vec<String> = conns
        .into_iter()
        .chain(lines(&fixture("zeek/conn-iso8601.log")))
        .collect();
    let out = sessions(run(&mut normalizer, "raw.zeek", &conns, &[]));
    let with_sni = out
        .iter()
        .filter(|s| s.tls.as_ref().and_then(|t| t.sni.as_ref()).is_some())
        .count();
    assert_eq!(with_sni, 4, "{out:?}");
}

#[test]
fn suricata_flows_take_their_tls_http_and_dns_events_by_flow_id() {
    let mut normalizer = ProxyNormalizer::configured(ProxyConfig {
        sources: fleet_sources(),
        ..ProxyConfig::default()
    });
    let events = lines(&fixture("suricata/eve.json"));
    let all = sessions(run(&mut normalizer, "raw.eve", &events, &[]));
    // Five flow events, five sessions. The two DNS flows without a flow event are released
    // once later traffic moves event time past their wait, and not emitted on their own.
    assert_eq!(all.len(), 5);
    assert_eq!(normalizer.held_flows(), 0);
    let beacon = all
        .iter()
        .find(|s| s.dst_port == 8443 && s.protocol == AppProtocol::Tls)
        .unwrap();
    assert_eq!(beacon.device_id, "android-7f3a");
    assert_eq!(
        beacon.tls.as_ref().unwrap().sni.as_deref(),
        Some("beacon.wx-telemetry.net")
    );
    let http = all.iter().find(|s| s.dst_port == 8080).unwrap();
    assert_eq!(
        http.http.as_ref().unwrap().host.as_deref(),
        Some("updates.wx-telemetry.net")
    );
    let v6 = all.iter().find(|s| s.dst_ip.contains(':')).unwrap();
    assert_eq!(v6.dst_ip, "2a00:1450:4001:82b::200a", "canonical IPv6 text");
    assert_eq!(v6.src_ip.as_deref(), Some("fd00:8::12"));
    assert_eq!(v6.device_id, "android-7f3a");
    let failed = all.iter().find(|s| s.dst_port == 4444).unwrap();
    assert_eq!(failed.protocol, AppProtocol::Unknown);
    assert_eq!(
        failed.protocol_label, None,
        "app_proto failed is no verdict"
    );
    // The Suricata 8 DNS response names the resolver as its source; the held flow is the
    // iPhone's, not the resolver's.
    let mut normalizer = ProxyNormalizer::configured(ProxyConfig {
        sources: fleet_sources(),
        flows: FlowJoinLimits {
            wait_ms: 0,
            ..FlowJoinLimits::default()
        },
        ..ProxyConfig::default()
    });
    let mut v3: Vec<String> = events.get(4..6).unwrap().to_vec();
    // The flow's own record, as Suricata writes it when the flow times out.
    v3.push(r#"{"timestamp":"2026-11-20T10:03:00.000000+0000","flow_id":2048163305519872,"event_type":"flow","src_ip":"10.8.0.13","src_port":61044,"dest_ip":"10.8.0.1","dest_port":53,"proto":"UDP","app_proto":"dns","flow":{"pkts_toserver":1,"pkts_toclient":1,"bytes_toserver":76,"bytes_toclient":92,"start":"2026-11-20T10:01:59.812004+0000","end":"2026-11-20T10:01:59.838771+0000","state":"established"}}"#.to_string());
    let out = sessions(run(&mut normalizer, "raw.eve", &v3, &[]));
    assert_eq!(out.len(), 1, "one flow, one session");
    let dns = &out[0];
    assert_eq!(dns.device_id, "ios-91c2");
    assert_eq!(dns.dst_port, 53);
    assert_eq!(dns.dns.as_ref().unwrap().qname, "mdm.corp.example");
}

fn events(results: Vec<Result<Vec<Normalized>, Rejection>>) -> Vec<DeviceEvent> {
    results
        .into_iter()
        .flat_map(|r| r.unwrap_or_else(|e| panic!("rejected: {e}")))
        .map(|n| match n {
            Normalized::Event(e) => e,
            other => panic!("not an event: {other:?}"),
        })
        .collect()
}

#[test]
fn usage_stats_rows_of_the_fixture() {
    let mut normalizer = EdrNormalizer::new(Limits::default());
    let all = events(run(
        &mut normalizer,
        "raw.edr",
        &[fixture("edr/usagestats.csv")],
        &[],
    ));
    assert!(!all.is_empty());
    assert!(all.iter().all(|e| e.device_id == "android-7f3a"));
    assert!(all.iter().any(|e| e.kind == DeviceEventKind::DeviceLocked));
    assert!(all.iter().any(|e| e.kind == DeviceEventKind::AppForeground));
    assert!(all
        .iter()
        .any(|e| e.kind == DeviceEventKind::ForegroundServiceStart));
    let rows = lines(&fixture("edr/usagestats.csv")).len() - 1;
    assert!(all.len() < rows, "the unknown event code produces nothing");
}

fn contexts(results: Vec<Result<Vec<Normalized>, Rejection>>) -> Vec<DeviceContext> {
    results
        .into_iter()
        .flat_map(|r| r.unwrap_or_else(|e| panic!("rejected: {e}")))
        .map(|n| match n {
            Normalized::Context(c) => c,
            other => panic!("not a context: {other:?}"),
        })
        .collect()
}

#[test]
fn micromdm_and_nanomdm_webhooks_of_the_fixture() {
    let mut normalizer = MdmNormalizer::new(Limits::default());
    let micro = contexts(run(
        &mut normalizer,
        "raw.mdm",
        &lines(&fixture("mdm/micromdm-webhook.jsonl")),
        &[],
    ));
    // TokenUpdate and Idle produce nothing; DeviceInformation, Installed and Managed lists do.
    assert_eq!(micro.len(), 3);
    assert!(micro
        .iter()
        .all(|c| c.udid.as_deref() == Some("00008110-001A2C3E0E01801E")));
    assert!(micro.iter().all(|c| c.platform == Platform::Ios));
    let info = &micro[0];
    assert_eq!(info.supervised, Some(true));
    assert_eq!(info.serial_number.as_deref(), Some("F2LXK0QJN72Q"));
    let installed = &micro[1];
    assert!(!installed.inventory_complete);
    assert!(installed
        .apps
        .iter()
        .any(|a| a.name.as_deref() == Some("Memo, \"Pro\"")));
    let managed = &micro[2];
    assert!(managed.inventory_complete);
    assert!(managed
        .apps
        .iter()
        .any(|a| a.managed && a.status.as_deref() == Some("Managed")));
    assert!(managed
        .apps
        .iter()
        .any(|a| !a.managed && a.status.as_deref() == Some("ManagedButUninstalled")));
    let nano = contexts(run(
        &mut normalizer,
        "raw.mdm",
        &lines(&fixture("mdm/nanomdm-webhook.jsonl")),
        &[],
    ));
    assert!(!nano.is_empty());
    assert!(nano
        .iter()
        .all(|c| c.source_format == crate::model::SourceFormat::MicromdmWebhook));
}

#[test]
fn android_management_api_devices_of_the_fixture() {
    let mut normalizer = MdmNormalizer::new(Limits::default());
    let all = contexts(run(
        &mut normalizer,
        "raw.mdm",
        &lines(&fixture("mdm/amapi-devices.jsonl")),
        &[],
    ));
    assert_eq!(all.len(), 3);
    assert!(all
        .iter()
        .all(|c| c.platform == Platform::Android && c.inventory_complete));
    assert!(
        all.iter().any(|c| c.supervised == Some(true)),
        "a fully managed device"
    );
    assert!(
        all.iter().any(|c| c.supervised == Some(false)),
        "a work profile"
    );
    assert!(all.iter().all(|c| !c.apps.is_empty()));
    // The sideloaded weather app (APPLICATION_SOURCE_UNSPECIFIED) is not managed; apps from
    // Play and the system image are.
    let first = &all[0];
    let managed = |id: &str| {
        first
            .apps
            .iter()
            .find(|a| a.app_id == id)
            .map(|a| a.managed)
    };
    assert_eq!(managed("com.example.weather"), Some(false));
    assert!(first
        .apps
        .iter()
        .filter(|a| a.app_id != "com.example.weather")
        .all(|a| a.managed));
}

#[test]
fn sensor_records_missing_their_core_are_rejected_with_the_missing_part_named() {
    let mut normalizer = ProxyNormalizer::configured(ProxyConfig {
        sources: fleet_sources(),
        ..ProxyConfig::default()
    });
    let eve_tls = r#"{"timestamp":"2026-11-20T10:00:04.870112+0000","flow_id":7,"event_type":"tls","src_ip":"10.8.0.12","src_port":41532,"dest_ip":"203.0.113.9","dest_port":8443,"proto":"TCP"}"#;
    let zeek_no_uid = r#"{"ts":1795168800.5,"id.orig_h":"10.8.0.12","id.orig_p":51234,"id.resp_h":"203.0.113.9","id.resp_p":8443,"proto":"tcp","conn_state":"SF"}"#;
    let long_sni = format!(
        r#"{{"ts":1795168800.5,"uid":"CLong1","id.orig_h":"10.8.0.12","id.orig_p":51234,"id.resp_h":"203.0.113.9","id.resp_p":8443,"server_name":"{}.example"}}"#,
        "a".repeat(200_000)
    );
    let long_conn = r#"{"ts":1795168800.5,"uid":"CLong1","id.orig_h":"10.8.0.12","id.orig_p":51234,"id.resp_h":"203.0.113.9","id.resp_p":8443,"proto":"tcp","duration":1.5,"orig_bytes":10,"resp_bytes":20,"conn_state":"SF"}"#;
    let results = run(
        &mut normalizer,
        "raw",
        &[
            eve_tls.to_string(),
            zeek_no_uid.to_string(),
            long_sni,
            long_conn.to_string(),
        ],
        &[],
    );
    let messages: Vec<String> = results
        .iter()
        .map(|r| match r {
            Err(e) => format!("{:?}: {}", e.reason, e.message),
            Ok(out) => format!("ok: {} records", out.len()),
        })
        .collect();
    assert_eq!(messages[0], "Unparseable: tls event without its tls object");
    assert_eq!(messages[1], "Unparseable: Zeek line without a uid");
    // An ssl line with an SNI no resolver could have produced is rejected itself; its
    // connection still makes a session, without the SNI.
    assert_eq!(
        messages[2],
        "ImpossibleValue: tls.sni is 200008 bytes; a host name is at most 255"
    );
    assert_eq!(messages[3], "ok: 1 records");
    assert_eq!(normalizer.held_flows(), 0);
}

/// Sessions of a Zeek stream keyed per flow (`uid`) over `partitions` partitions and read one
/// partition after the other (the worst order a consumer can give): (session id, SNI), sorted.
fn zeek_by_flow(partitions: i32) -> Vec<(String, Option<String>)> {
    let mut normalizer = ProxyNormalizer::configured(ProxyConfig {
        sources: fleet_sources(),
        flows: FlowJoinLimits {
            wait_ms: 60_000,
            ..FlowJoinLimits::default()
        },
        ..ProxyConfig::default()
    });
    let mut by_partition: Vec<Vec<String>> = vec![Vec::new(); partitions as usize];
    for line in zeek_input() {
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let uid = value["uid"].as_str().unwrap_or_default();
        let partition = uid.bytes().map(i32::from).sum::<i32>() % partitions;
        by_partition[partition as usize].push(line);
    }
    let mut out = Vec::new();
    for (partition, lines) in by_partition.iter().enumerate() {
        for (offset, line) in lines.iter().enumerate() {
            let record =
                RawRecord::new("raw.zeek", partition as i32, offset as i64, line.as_bytes());
            for n in normalizer.normalize(&record, NOW).unwrap() {
                if let Normalized::Session(s) = n {
                    out.push((s.session_id, s.tls.and_then(|t| t.sni)));
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn zeek_flows_keyed_per_flow_on_many_partitions_come_out_once_each_with_their_sni() {
    // One clock across partitions released a partition's companions by another partition's
    // (hours later) time: flows came out twice, or without their SNI.
    let one = zeek_by_flow(1);
    let six = zeek_by_flow(6);
    assert_eq!(one.len(), 12);
    assert_eq!(six, one);
    let ids: std::collections::BTreeSet<_> = six.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), six.len(), "a flow emitted twice");
    assert_eq!(six.iter().filter(|(_, sni)| sni.is_some()).count(), 4);
}

#[test]
fn a_pcapdroid_http_host_with_a_port_keeps_the_host_alone() {
    let mut normalizer = ProxyNormalizer::new(ProxyFormat::PcapdroidCsv, Limits::default());
    let row = "6,10.8.0.12,51200,198.51.100.138,8080,10234,Weather,com.example.weather,HTTP,Closed,198.51.100.138:8080,412,811,8,6,1795169002500,1795169003112".to_string();
    let named = "6,10.8.0.12,51201,198.51.100.23,8080,10234,Weather,com.example.weather,HTTP,Closed,updates.wx-telemetry.net:8080,412,811,8,6,1795169002500,1795169003112".to_string();
    let all = sessions(run(&mut normalizer, "raw", &[row, named], &device_header()));
    let hosts: Vec<_> = all
        .iter()
        .map(|s| s.http.as_ref().and_then(|h| h.host.clone()))
        .collect();
    // The IP literal is what the Host indicators judge; with `:8080` it was not an address.
    assert_eq!(
        hosts,
        [
            Some("198.51.100.138".to_string()),
            Some("updates.wx-telemetry.net".to_string())
        ]
    );
}
