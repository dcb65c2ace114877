//! Zeek JSON logs (`LogAscii::use_json=T`, or the zeek-kafka plugin): conn.log joined with
//! ssl.log, http.log and dns.log by `uid`.
//!
//! Which log a line is: the zeek-kafka tag (`{"conn": {...}}` with `tag_json`), else a `_path`
//! field, else its fields (`conn_state`/`history`/`duration` for conn, `server_name`/`cipher`/
//! `established` for ssl, `method`/`uri`/`status_code` for http, `query`/`qtype`/`rcode` for
//! dns). Other logs (files, x509, notice, weird) carry no session and produce nothing.
//!
//! conn.log's `service` is Zeek's dynamic protocol detection, independent of the port: it is the
//! sensor's verdict. `ts` is epoch seconds (float) or ISO 8601 (`JSON::TS_ISO8601`). Device and
//! app come from the client address (`id.orig_h`) through `normalize.sources`, else the record's
//! header or key, else `normalize.default_device_id`. The JA3 and JA4 fields are those of the
//! `ja3` and FoxIO `ja4` packages (`ja3`, `ja4` in ssl.log).

use serde::Deserialize;

use super::SessionDraft;
use crate::model::{DnsInfo, EpochMillis, HttpInfo};
use crate::normalize::{JsonTime, Rejection};

/// Which Zeek log a line belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeekLog {
    /// conn.log: completes a session.
    Conn,
    /// ssl.log.
    Ssl,
    /// http.log.
    Http,
    /// dns.log.
    Dns,
    /// Any other log: nothing to do.
    Other,
}

/// The fields offport reads from the four logs (Zeek omits unset fields in JSON).
#[derive(Debug, Default, Deserialize)]
struct Line {
    ts: Option<JsonTime>,
    uid: Option<String>,
    #[serde(rename = "_path")]
    path: Option<String>,
    #[serde(rename = "id.orig_h")]
    orig_h: Option<String>,
    #[serde(rename = "id.orig_p")]
    orig_p: Option<i64>,
    #[serde(rename = "id.resp_h")]
    resp_h: Option<String>,
    #[serde(rename = "id.resp_p")]
    resp_p: Option<i64>,
    proto: Option<String>,
    // conn.log
    service: Option<String>,
    duration: Option<f64>,
    orig_bytes: Option<i64>,
    resp_bytes: Option<i64>,
    orig_pkts: Option<i64>,
    resp_pkts: Option<i64>,
    conn_state: Option<Present>,
    history: Option<Present>,
    // ssl.log
    version: Option<String>,
    cipher: Option<Present>,
    server_name: Option<String>,
    established: Option<bool>,
    ja3: Option<String>,
    ja4: Option<String>,
    // http.log
    method: Option<String>,
    host: Option<String>,
    uri: Option<Present>,
    user_agent: Option<String>,
    status_code: Option<i64>,
    // dns.log
    query: Option<String>,
    qtype_name: Option<String>,
    qtype: Option<i64>,
    rcode_name: Option<String>,
    rcode: Option<i64>,
}

/// A string field offport reads only for being there (which log a line is): checked to be a
/// string, as the field's type says, and not kept.
#[derive(Debug, Clone, Copy)]
struct Present;

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Present;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Present, E> {
                Ok(Present)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

impl Line {
    fn log(&self) -> ZeekLog {
        if let Some(path) = self.path.as_deref() {
            return match path {
                "conn" => ZeekLog::Conn,
                "ssl" => ZeekLog::Ssl,
                "http" => ZeekLog::Http,
                "dns" => ZeekLog::Dns,
                _ => ZeekLog::Other,
            };
        }
        let conn_fields =
            self.service.is_some() || self.duration.is_some() || self.orig_bytes.is_some();
        if self.conn_state.is_some() || self.history.is_some() {
            ZeekLog::Conn
        } else if self.server_name.is_some() || self.cipher.is_some() || self.established.is_some()
        {
            ZeekLog::Ssl
        } else if self.method.is_some() || self.uri.is_some() || self.status_code.is_some() {
            ZeekLog::Http
        } else if self.query.is_some() || self.qtype.is_some() || self.rcode.is_some() {
            ZeekLog::Dns
        } else if conn_fields && self.resp_p.is_some() {
            ZeekLog::Conn
        } else {
            ZeekLog::Other
        }
    }
}

/// A parsed Zeek line: its log, its `uid`, its event time and its part of the session.
#[derive(Debug)]
pub struct ZeekRecord {
    /// The log.
    pub log: ZeekLog,
    /// The connection uid.
    pub uid: String,
    /// `ts`.
    pub time: EpochMillis,
    /// What the line says of the session.
    pub draft: SessionDraft,
}

/// `true` when a JSON object looks like a Zeek line (dotted `id.*` keys or a zeek-kafka tag).
pub fn looks_like(value: &serde_json::Value) -> bool {
    let Some(object) = value.as_object() else {
        return false;
    };
    // A line with a connection 4-tuple or a log path is Zeek's even without its uid, so that
    // it is rejected for the missing uid rather than read as offport JSON.
    object.contains_key("uid") && object.contains_key("ts")
        || object.contains_key("id.orig_h")
        || object.contains_key("id.resp_h")
        || object.contains_key("_path")
        || untag(value).is_some()
}

/// The inner object and log name of a zeek-kafka tagged line (`{"conn": {...}}`).
fn untag(value: &serde_json::Value) -> Option<(&str, &serde_json::Value)> {
    let object = value.as_object()?;
    if object.len() != 1 {
        return None;
    }
    let (name, inner) = object.iter().next()?;
    (inner.is_object() && inner.get("uid").is_some()).then_some((name.as_str(), inner))
}

/// Parses one Zeek line. `Ok(None)` for logs that carry no session.
pub fn parse(value: serde_json::Value) -> Result<Option<ZeekRecord>, Rejection> {
    let (tag, inner) = match untag(&value) {
        Some((tag, inner)) => (Some(tag.to_string()), inner.clone()),
        None => (None, value),
    };
    let mut line: Line = serde_json::from_value(inner)
        .map_err(|e| Rejection::unparseable(format!("not a Zeek JSON log line: {e}")))?;
    if line.path.is_none() {
        line.path = tag;
    }
    from_line(line)
}

/// Parses one untagged Zeek line straight from its bytes, without a JSON tree first (the
/// common case of a tunnel sensor's logs). An error does not mean the line is not Zeek's: a
/// caller that is not sure tries [`parse`] on its JSON value.
pub fn parse_bytes(bytes: &[u8]) -> Result<Option<ZeekRecord>, Rejection> {
    let line: Line = serde_json::from_slice(bytes)
        .map_err(|e| Rejection::unparseable(format!("not a Zeek JSON log line: {e}")))?;
    from_line(line)
}

fn from_line(line: Line) -> Result<Option<ZeekRecord>, Rejection> {
    let log = line.log();
    if log == ZeekLog::Other {
        return Ok(None);
    }
    let uid = line
        .uid
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| Rejection::unparseable("Zeek line without a uid"))?;
    let time = match line.ts {
        Some(JsonTime::At(at)) => at,
        Some(JsonTime::Invalid(ts)) => {
            return Err(Rejection::unparseable(format!(
                "ts={ts} is neither epoch seconds nor ISO 8601"
            )))
        }
        None => return Err(Rejection::unparseable("Zeek line without ts")),
    };
    let transport = super::transport_from(line.proto.as_deref())?;
    let mut draft = SessionDraft {
        transport,
        src_ip: line.orig_h,
        src_port: line.orig_p,
        dst_ip: line.resp_h,
        dst_port: line.resp_p,
        start_time: Some(time),
        ..SessionDraft::default()
    };
    match log {
        ZeekLog::Conn => {
            draft.sensor_label = line.service;
            draft.duration_ms = line
                .duration
                .filter(|d| d.is_finite())
                .map(|d| (d * 1000.0).round() as i64);
            draft.bytes_out = line.orig_bytes;
            draft.bytes_in = line.resp_bytes;
            draft.packets_out = line.orig_pkts;
            draft.packets_in = line.resp_pkts;
        }
        ZeekLog::Ssl => {
            draft.sensor_label = Some("ssl".to_string());
            draft.sni = line.server_name;
            draft.tls_version = line.version;
            draft.ja3 = line.ja3;
            draft.ja4 = line.ja4;
        }
        ZeekLog::Http => {
            draft.sensor_label = Some("http".to_string());
            draft.http = Some(HttpInfo {
                // http.log keeps the port in `host` (`example.com:8080`); the name is wanted.
                host: line.host.map(|h| strip_port(&h).to_ascii_lowercase()),
                method: line.method,
                user_agent: line.user_agent,
                status_code: line.status_code.and_then(|c| i32::try_from(c).ok()),
                ..HttpInfo::default()
            });
        }
        ZeekLog::Dns => {
            draft.sensor_label = Some("dns".to_string());
            draft.dns = line.query.map(|q| DnsInfo {
                qname: q.trim_end_matches('.').to_ascii_lowercase(),
                qtype: line
                    .qtype_name
                    .or(line.qtype.map(|t| t.to_string()))
                    .unwrap_or_else(|| "A".to_string()),
                rcode: line.rcode_name,
            });
        }
        ZeekLog::Other => {}
    }
    Ok(Some(ZeekRecord {
        log,
        uid,
        time,
        draft,
    }))
}

/// `host` without a `:port` suffix (IPv6 literals in brackets keep their colons).
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Option<ZeekRecord> {
        parse(serde_json::from_str(text).unwrap()).unwrap()
    }

    #[test]
    fn logs_are_told_apart_by_path_tag_or_fields() {
        let conn = r#"{"ts":1763632800.25,"uid":"CAbc1","id.orig_h":"10.8.0.12","id.orig_p":51234,
            "id.resp_h":"203.0.113.9","id.resp_p":8443,"proto":"tcp","service":"ssl",
            "duration":12.5,"orig_bytes":900,"resp_bytes":4000,"conn_state":"SF"}"#;
        let z = parse_text(conn).unwrap();
        assert_eq!(z.log, ZeekLog::Conn);
        assert_eq!(z.time, 1_763_632_800_250);
        assert_eq!(z.draft.duration_ms, Some(12_500));
        assert_eq!(z.draft.sensor_label.as_deref(), Some("ssl"));
        let ssl = r#"{"ssl":{"ts":"2025-11-20T10:00:00.300Z","uid":"CAbc1","id.orig_h":"10.8.0.12",
            "id.orig_p":51234,"id.resp_h":"203.0.113.9","id.resp_p":8443,"version":"TLSv13",
            "server_name":"c2.example.net","ja4":"t13d1516h2_8daaf6152771_02713d6af862"}}"#;
        let z = parse_text(ssl).unwrap();
        assert_eq!(z.log, ZeekLog::Ssl);
        assert_eq!(z.draft.sni.as_deref(), Some("c2.example.net"));
        let dns = r#"{"_path":"dns","ts":1763632800,"uid":"CDns9","id.orig_h":"10.8.0.12",
            "id.orig_p":40000,"id.resp_h":"198.51.100.53","id.resp_p":5353,"proto":"udp",
            "query":"Example.ORG.","qtype_name":"TXT"}"#;
        let z = parse_text(dns).unwrap();
        assert_eq!(z.draft.dns.as_ref().unwrap().qname, "example.org");
        assert_eq!(z.draft.dns.as_ref().unwrap().qtype, "TXT");
        let files = r#"{"ts":1763632800,"fuid":"F1","uid":"CX","mime_type":"text/plain"}"#;
        assert!(parse_text(files).is_none());
    }

    #[test]
    fn a_line_without_a_usable_ts_is_rejected() {
        let bad = r#"{"ts":"noon","uid":"C1","conn_state":"SF"}"#;
        let err = parse(serde_json::from_str(bad).unwrap()).unwrap_err();
        assert!(err.message.contains("ts=\"noon\""), "{}", err.message);
    }
}
