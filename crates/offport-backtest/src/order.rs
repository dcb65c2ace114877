//! When each raw record was reported, in every input format: a replay of files orders their
//! records by it, as a live pipeline receives them.
//!
//! A sensor reports a connection when it ends and an application-layer record while the
//! connection runs, so a record's report time is: offport session JSON `end_time`, else
//! `start_time` + `duration_ms`; Zeek `ts` + `duration` (conn.log) or `ts`; Suricata EVE
//! `flow.end` (flow events) or `timestamp`; PCAPdroid `LastSeen`; EDR JSON and offport MDM JSON
//! `event_time`; UsageStats the second column; MicroMDM/NanoMDM webhooks `created_at`; Android
//! Management API devices `lastStatusReportTime` (else `lastPolicySyncTime`, `enrollmentTime`).
//! Only for ordering: the normalizers read each record properly and reject what is wrong.

use offport_core::model::EpochMillis;
use offport_core::normalize::{time_from_json, time_from_text};
use serde_json::Value;

/// Index of `LastSeen` in a PCAPdroid row without a header.
const PCAPDROID_LAST_SEEN: usize = 16;

/// The report time of one raw record (one JSON object or one CSV row, a PCAPdroid row possibly
/// after its header line); `None` when it names none.
pub fn report_time(record: &str) -> Option<EpochMillis> {
    let record = record.trim();
    if record.starts_with('{') {
        let value: Value = serde_json::from_str(record).ok()?;
        return json_time(&value);
    }
    csv_time(record)
}

fn field_time(value: &Value, field: &str) -> Option<EpochMillis> {
    value.get(field).and_then(time_from_json)
}

fn json_time(value: &Value) -> Option<EpochMillis> {
    // zeek-kafka's tagged form: {"conn": {...}}.
    if let Some(object) = value.as_object() {
        if object.len() == 1 {
            if let Some(inner) = object.values().next().filter(|v| v.get("uid").is_some()) {
                return json_time(inner);
            }
        }
    }
    if value.get("uid").is_some() || value.get("id.orig_h").is_some() {
        let ts = field_time(value, "ts")?;
        let duration = value.get("duration").and_then(Value::as_f64).unwrap_or(0.0);
        return Some(ts.saturating_add((duration * 1000.0).round() as i64));
    }
    if value.get("event_type").is_some() {
        if let Some(end) = value
            .get("flow")
            .and_then(|f| f.get("end"))
            .and_then(Value::as_str)
            .and_then(time_from_text)
        {
            return Some(end);
        }
        return field_time(value, "timestamp");
    }
    if value.get("acknowledge_event").is_some() || value.get("checkin_event").is_some() {
        return field_time(value, "created_at");
    }
    if value.get("managementMode").is_some() || value.get("applicationReports").is_some() {
        return [
            "lastStatusReportTime",
            "lastPolicySyncTime",
            "enrollmentTime",
        ]
        .into_iter()
        .find_map(|field| field_time(value, field));
    }
    if let Some(end) = field_time(value, "end_time") {
        return Some(end);
    }
    if let Some(start) = field_time(value, "start_time") {
        let duration = value
            .get("duration_ms")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        return Some(start.saturating_add(duration));
    }
    field_time(value, "event_time")
}

fn csv_time(record: &str) -> Option<EpochMillis> {
    let mut lines = record.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next()?;
    let (header, row) = if first.trim_start().starts_with("IPProto") {
        (Some(first), lines.next()?)
    } else {
        (None, first)
    };
    let cells: Vec<&str> = row.split(',').map(str::trim).collect();
    let pcapdroid = header.is_some() || cells.len() > PCAPDROID_LAST_SEEN;
    if pcapdroid {
        // An app name with a comma spills into extra cells: LastSeen is always the last.
        return cells.last().and_then(|t| time_from_text(t));
    }
    cells.get(1).and_then(|t| time_from_text(t))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn each_format_is_ordered_by_the_time_its_source_reports_it() {
        let cases = [
            (r#"{"device_id":"d","dst_ip":"1.2.3.4","dst_port":1,"start_time":1795168800000,"duration_ms":500}"#, 1_795_168_800_500),
            (r#"{"device_id":"d","start_time":1795168800000,"end_time":"2026-11-20T10:00:02Z"}"#, 1_795_168_802_000),
            (r#"{"ts":1795168805.1,"uid":"C1","id.orig_h":"10.8.0.12","duration":1.5}"#, 1_795_168_806_600),
            (r#"{"ts":1795168805.1,"uid":"C1","server_name":"a"}"#, 1_795_168_805_100),
            (r#"{"ssl":{"ts":1795168805.1,"uid":"C1"}}"#, 1_795_168_805_100),
            (r#"{"timestamp":"2026-11-20T10:00:04.870+0000","event_type":"tls","flow_id":1}"#, 1_795_168_804_870),
            (r#"{"timestamp":"2026-11-20T10:00:09+0000","event_type":"flow","flow_id":1,"flow":{"start":"2026-11-20T10:00:05.000+0000","end":"2026-11-20T10:00:06.944+0000"}}"#, 1_795_168_806_944),
            (r#"{"topic":"mdm.Connect","created_at":"2026-11-20T10:00:41Z","acknowledge_event":{}}"#, 1_795_168_841_000),
            (r#"{"name":"enterprises/e/devices/d","managementMode":"DEVICE_OWNER","lastStatusReportTime":"2026-11-20T10:05:12Z"}"#, 1_795_169_112_000),
            (r#"{"device_id":"d","kind":"APP_FOREGROUND","event_time":1795168800000}"#, 1_795_168_800_000),
            ("android-7f3a,1795168802118,15,android,", 1_795_168_802_118),
            ("6,10.8.0.12,50412,203.0.113.45,8443,10234,Weather,com.x,TLS,Closed,a.example,1,2,1,1,1795168805102,1795168806944", 1_795_168_806_944),
            ("6,10.8.0.12,50412,203.0.113.45,8443,10234,Memo, Pro,com.x,TLS,Closed,a.example,1,2,1,1,1795168805102,1795168806944", 1_795_168_806_944),
            ("IPProto,SrcIP,SrcPort,DstIp,DstPort,UID,App,PackageName,Proto,Status,Info,BytesSent,BytesRcvd,PktsSent,PktsRcvd,FirstSeen,LastSeen\n17,10.8.0.12,41532,10.8.0.1,53,10234,W,com.x,DNS,Closed,a,69,85,1,1,2026-11-20T11:00:04.870+01:00,2026-11-20T11:00:04.901+01:00", 1_795_168_804_901),
        ];
        for (record, expected) in cases {
            assert_eq!(report_time(record), Some(expected), "{record}");
        }
        assert_eq!(report_time("not a record"), None);
    }
}
