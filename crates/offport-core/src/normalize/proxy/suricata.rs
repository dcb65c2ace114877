//! Suricata EVE JSON: `flow` events joined with `tls`, `http`, `dns` (and `quic`) events by
//! `flow_id`.
//!
//! `app_proto` is Suricata's protocol detection, independent of the port: the sensor's verdict
//! (`failed` means detection ran and found nothing). The `flow` event (written when the flow
//! ends) completes a session with its byte and packet counts; `tls.sni`, `tls.version`,
//! `tls.ja3.hash`, `tls.ja4`, `http.hostname`, `http.http_method`, `http.http_user_agent` and
//! the DNS query name and type fill it in. DNS events come in two shapes: Suricata 7's version 2
//! (`dns.type: "query"`, `dns.rrname`, `dns.rrtype`) and Suricata 8's version 3
//! (`dns.queries: [{rrname, rrtype}]`); both are read. Other event types (alert, fileinfo,
//! anomaly, stats) carry no session and produce nothing. Device and app come from `src_ip`
//! through `normalize.sources`, as for Zeek.

use std::borrow::Cow;

use serde::Deserialize;

use super::SessionDraft;
use crate::model::{DnsInfo, EpochMillis, HttpInfo};
use crate::normalize::{time_from_text, JsonTime, LenientText, Rejection};

/// A parsed EVE line's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EveRole {
    /// `flow`: completes a session.
    Flow,
    /// An application-layer event of a flow.
    Companion,
}

/// A parsed EVE event: its role, flow id, event time and its part of the session.
#[derive(Debug)]
pub struct EveRecord {
    /// Role.
    pub role: EveRole,
    /// `flow_id` as text.
    pub flow_id: String,
    /// `timestamp` (for `flow`, `flow.start`).
    pub time: EpochMillis,
    /// What the event says of the session.
    pub draft: SessionDraft,
}

/// The fields offport reads from an event. Texts the parse only looks at are borrowed from the
/// line (when they need no unescaping), not copied.
#[derive(Debug, Deserialize)]
struct Eve<'a> {
    timestamp: Option<JsonTime>,
    flow_id: Option<LenientText>,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    src_ip: Option<String>,
    src_port: Option<i64>,
    dest_ip: Option<String>,
    dest_port: Option<i64>,
    proto: Option<LenientText>,
    app_proto: Option<String>,
    #[serde(borrow)]
    flow: Option<Flow<'a>>,
    tls: Option<Tls>,
    http: Option<Http>,
    dns: Option<Dns>,
    quic: Option<Quic>,
}

#[derive(Debug, Deserialize)]
struct Flow<'a> {
    pkts_toserver: Option<i64>,
    pkts_toclient: Option<i64>,
    bytes_toserver: Option<i64>,
    bytes_toclient: Option<i64>,
    #[serde(borrow)]
    start: Option<Cow<'a, str>>,
    #[serde(borrow)]
    end: Option<Cow<'a, str>>,
    #[serde(borrow)]
    state: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct Ja3 {
    hash: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Tls {
    sni: Option<String>,
    version: Option<String>,
    ja3: Option<Ja3>,
    ja4: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Http {
    hostname: Option<String>,
    http_method: Option<String>,
    http_user_agent: Option<String>,
    status: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct DnsQuery {
    rrname: Option<String>,
    rrtype: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Dns {
    #[serde(rename = "type")]
    kind: Option<String>,
    rrname: Option<String>,
    rrtype: Option<String>,
    rcode: Option<String>,
    queries: Option<Vec<DnsQuery>>,
}

#[derive(Debug, Deserialize)]
struct Quic {
    sni: Option<String>,
    version: Option<String>,
    ja4: Option<String>,
}

/// `true` when a JSON object looks like an EVE event.
pub fn looks_like(value: &serde_json::Value) -> bool {
    value.get("event_type").is_some_and(|t| t.is_string())
        && (value.get("flow_id").is_some() || value.get("timestamp").is_some())
}

/// A flow id as text: Suricata writes a number; a text one is taken trimmed.
fn flow_id(value: String) -> Option<String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        None
    } else if trimmed.len() == value.len() {
        Some(value)
    } else {
        Some(trimmed.to_string())
    }
}

/// Parses one EVE line. `Ok(None)` for event types that carry no session.
pub fn parse(value: serde_json::Value) -> Result<Option<EveRecord>, Rejection> {
    let eve = Eve::deserialize(&value)
        .map_err(|e| Rejection::unparseable(format!("not a Suricata EVE event: {e}")))?;
    from_eve(eve)
}

/// Parses one EVE line straight from its bytes, without a JSON tree first. An error does not
/// mean the line is not EVE: a caller that is not sure tries [`parse`] on its JSON value.
pub fn parse_bytes(bytes: &[u8]) -> Result<Option<EveRecord>, Rejection> {
    let eve: Eve = serde_json::from_slice(bytes)
        .map_err(|e| Rejection::unparseable(format!("not a Suricata EVE event: {e}")))?;
    from_eve(eve)
}

fn from_eve(eve: Eve<'_>) -> Result<Option<EveRecord>, Rejection> {
    let role = match eve.event_type.as_ref() {
        "flow" => EveRole::Flow,
        "tls" | "http" | "dns" | "quic" => EveRole::Companion,
        _ => return Ok(None),
    };
    let flow_id = eve
        .flow_id
        .and_then(|id| id.0)
        .and_then(flow_id)
        .ok_or_else(|| Rejection::unparseable("EVE event without a flow_id"))?;
    let text_time = |field: &str, text: &str| {
        time_from_text(text).ok_or_else(|| {
            Rejection::unparseable(format!("{field}={text:?} is not an EVE timestamp"))
        })
    };
    let timestamp = match eve.timestamp {
        Some(JsonTime::At(at)) => Some(at),
        Some(JsonTime::Invalid(value)) => {
            return Err(Rejection::unparseable(format!(
                "timestamp={value} is not an EVE timestamp"
            )))
        }
        None => None,
    };
    let proto = eve.proto.and_then(|p| p.0);
    // Suricata writes IANA numbers zero-padded ("006", "017") for some protocols.
    let proto = proto.map(|p| {
        let trimmed = p.trim_start_matches('0');
        if trimmed.is_empty() || trimmed.len() == p.len() {
            p
        } else {
            trimmed.to_string()
        }
    });
    let transport = super::transport_from(proto.as_deref())?;
    // Version 3 DNS responses (Suricata 8) are logged in the reply's direction: the resolver
    // is `src_ip`. Turn them round so the client is the source. (Version 2 `answer` events
    // keep the flow's direction.)
    let reply = eve
        .dns
        .as_ref()
        .and_then(|d| d.kind.as_deref())
        .is_some_and(|k| k == "response");
    let (src_ip, src_port, dest_ip, dest_port) = if reply {
        (eve.dest_ip, eve.dest_port, eve.src_ip, eve.src_port)
    } else {
        (eve.src_ip, eve.src_port, eve.dest_ip, eve.dest_port)
    };
    let label = eve
        .app_proto
        .filter(|p| !matches!(p.as_str(), "failed" | "unknown"));
    let mut draft = SessionDraft {
        transport,
        src_ip,
        src_port,
        dst_ip: dest_ip,
        dst_port: dest_port,
        sensor_label: label,
        ..SessionDraft::default()
    };
    let mut time = timestamp;
    match role {
        EveRole::Flow => {
            let flow = eve
                .flow
                .ok_or_else(|| Rejection::unparseable("flow event without its flow object"))?;
            let start = flow
                .start
                .as_deref()
                .map(|s| text_time("flow.start", s))
                .transpose()?;
            let end = flow
                .end
                .as_deref()
                .map(|s| text_time("flow.end", s))
                .transpose()?;
            time = start.or(time);
            draft.end_time = end;
            draft.bytes_out = flow.bytes_toserver;
            draft.bytes_in = flow.bytes_toclient;
            draft.packets_out = flow.pkts_toserver;
            draft.packets_in = flow.pkts_toclient;
            draft.still_open = flow.state.as_deref() == Some("established") && end.is_none();
        }
        EveRole::Companion => {
            // An app-layer event without its own object says nothing of the flow: held, it
            // would wait for a flow that it cannot complete.
            let has_object = match eve.event_type.as_ref() {
                "tls" => eve.tls.is_some(),
                "http" => eve.http.is_some(),
                "dns" => eve.dns.is_some(),
                _ => eve.quic.is_some(),
            };
            if !has_object {
                return Err(Rejection::unparseable(format!(
                    "{0} event without its {0} object",
                    eve.event_type
                )));
            }
            if let Some(tls) = eve.tls {
                draft.sensor_label.get_or_insert_with(|| "tls".to_string());
                draft.sni = tls.sni;
                draft.tls_version = tls.version;
                draft.ja3 = tls.ja3.and_then(|j| j.hash);
                draft.ja4 = tls.ja4;
            }
            if let Some(quic) = eve.quic {
                draft.sensor_label.get_or_insert_with(|| "quic".to_string());
                draft.sni = quic.sni;
                draft.tls_version = quic.version;
                draft.ja4 = quic.ja4;
            }
            if let Some(http) = eve.http {
                draft.sensor_label.get_or_insert_with(|| "http".to_string());
                draft.http = Some(HttpInfo {
                    host: http.hostname.map(|h| h.to_ascii_lowercase()),
                    method: http.http_method,
                    user_agent: http.http_user_agent,
                    status_code: http.status.and_then(|c| i32::try_from(c).ok()),
                    ..HttpInfo::default()
                });
            }
            if let Some(dns) = eve.dns {
                draft.sensor_label.get_or_insert_with(|| "dns".to_string());
                let first = dns.queries.and_then(|q| q.into_iter().next());
                let (name, kind) = match first {
                    Some(q) => (q.rrname, q.rrtype),
                    // Version 2: answers carry the query name too; either will do.
                    None if dns.kind.is_some() => (dns.rrname, dns.rrtype),
                    None => (None, None),
                };
                draft.dns = name.map(|n| DnsInfo {
                    qname: n.trim_end_matches('.').to_ascii_lowercase(),
                    qtype: kind.unwrap_or_else(|| "A".to_string()),
                    rcode: dns.rcode,
                });
            }
        }
    }
    let time = time.ok_or_else(|| Rejection::unparseable("EVE event without a timestamp"))?;
    draft.start_time = Some(time);
    Ok(Some(EveRecord {
        role,
        flow_id,
        time,
        draft,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Option<EveRecord> {
        parse(serde_json::from_str(text).unwrap()).unwrap()
    }

    #[test]
    fn flow_and_companion_events_are_read() {
        let flow = r#"{"timestamp":"2025-11-20T10:05:00.000000+0000","flow_id":1234567890123456,
            "event_type":"flow","src_ip":"10.8.0.12","src_port":51234,"dest_ip":"203.0.113.9",
            "dest_port":8443,"proto":"TCP","app_proto":"tls","flow":{"pkts_toserver":12,
            "pkts_toclient":10,"bytes_toserver":1500,"bytes_toclient":6000,
            "start":"2025-11-20T10:00:00.000000+0000","end":"2025-11-20T10:04:00.000000+0000",
            "age":240,"state":"closed","reason":"timeout","alerted":false}}"#;
        let r = parse_text(flow).unwrap();
        assert_eq!(r.role, EveRole::Flow);
        assert_eq!(r.flow_id, "1234567890123456");
        assert_eq!(r.time, 1_763_632_800_000);
        assert_eq!(r.draft.end_time, Some(1_763_633_040_000));
        assert_eq!(r.draft.bytes_out, Some(1500));
        let tls = r#"{"timestamp":"2025-11-20T10:00:00.120000+0000","flow_id":1234567890123456,
            "event_type":"tls","src_ip":"10.8.0.12","src_port":51234,"dest_ip":"203.0.113.9",
            "dest_port":8443,"proto":"TCP","tls":{"sni":"c2.example.net","version":"TLS 1.3",
            "ja3":{"hash":"e7d705a3286e19ea42f587b344ee6865","string":"771,..."},"ja4":"t13d1516h2_8daaf6152771_02713d6af862"}}"#;
        let r = parse_text(tls).unwrap();
        assert_eq!(r.role, EveRole::Companion);
        assert_eq!(r.draft.sensor_label.as_deref(), Some("tls"));
        assert_eq!(
            r.draft.ja3.as_deref(),
            Some("e7d705a3286e19ea42f587b344ee6865")
        );
    }

    #[test]
    fn dns_version_2_and_3_give_the_same_query() {
        let v2 = r#"{"timestamp":"2025-11-20T10:00:00.000000+0000","flow_id":7,"event_type":"dns",
            "src_ip":"10.8.0.12","src_port":40000,"dest_ip":"198.51.100.53","dest_port":5353,
            "proto":"UDP","dns":{"type":"query","id":1,"rrname":"t.example.org","rrtype":"TXT","tx_id":0}}"#;
        let v3 = r#"{"timestamp":"2025-11-20T10:00:00.000000+0000","flow_id":7,"event_type":"dns",
            "src_ip":"10.8.0.12","src_port":40000,"dest_ip":"198.51.100.53","dest_port":5353,
            "proto":"017","dns":{"version":3,"type":"request","id":1,"queries":[{"rrname":"t.example.org","rrtype":"TXT"}]}}"#;
        for text in [v2, v3] {
            let r = parse_text(text).unwrap();
            let dns = r.draft.dns.unwrap();
            assert_eq!(
                (dns.qname.as_str(), dns.qtype.as_str()),
                ("t.example.org", "TXT")
            );
            assert_eq!(r.draft.transport, crate::model::Transport::Udp);
        }
        let alert =
            r#"{"timestamp":"2025-11-20T10:00:00.000000+0000","flow_id":7,"event_type":"alert"}"#;
        assert!(parse_text(alert).is_none());
    }
}
