//! PCAPdroid's CSV export of connections (Android; per-app attribution from the VpnService UID).
//!
//! Header: `IPProto,SrcIP,SrcPort,DstIp,DstPort,UID,App,PackageName,Proto,Status,Info,
//! BytesSent,BytesRcvd,PktsSent,PktsRcvd,FirstSeen,LastSeen`. A Kafka record holds one or more
//! rows; a header row, when present, names the columns (any order, unknown columns ignored),
//! otherwise the columns are taken in the order above. `Proto` is nDPI's protocol name
//! (`TLS`, `TLS.Google`, `QUIC`, `DNS`, `HTTP`), the sensor's verdict. `Info` is what nDPI read
//! from the flow: the SNI for TLS and QUIC, the query name for DNS, the Host for HTTP.
//! `IPProto` is the IANA protocol number (6 TCP, 17 UDP). `FirstSeen`/`LastSeen` are ISO 8601
//! with the phone's offset since PCAPdroid 1.7.0 and epoch milliseconds before it; both are
//! read. PCAPdroid does not quote fields: an app name with a comma spills into extra fields,
//! which are joined back into `App`; quoted fields (other exporters) are read as CSV.
//!
//! PCAPdroid exports carry no device id: it comes from the record (an `offport.device_id`
//! header or the key) or from `normalize.default_device_id`. ICMP rows have no ports and are
//! skipped. A record with one bad row is dead-lettered whole, with the line named.

use super::{transport_from, SessionDraft};
use crate::model::{
    AttributionSource, DnsInfo, EpochMillis, HttpInfo, NetworkSession, Platform, SourceFormat,
};
use crate::normalize::{time_from_text, RawRecord, Rejection};
use crate::protocol::sensor_verdict;

/// The export's column names, in PCAPdroid's order.
pub const COLUMNS: [&str; 17] = [
    "IPProto",
    "SrcIP",
    "SrcPort",
    "DstIp",
    "DstPort",
    "UID",
    "App",
    "PackageName",
    "Proto",
    "Status",
    "Info",
    "BytesSent",
    "BytesRcvd",
    "PktsSent",
    "PktsRcvd",
    "FirstSeen",
    "LastSeen",
];

/// Column index of each known field, by the positions of [`COLUMNS`], and the row width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Columns([Option<usize>; 17], usize);

const DEFAULT_COLUMNS: Columns = Columns(
    [
        Some(0),
        Some(1),
        Some(2),
        Some(3),
        Some(4),
        Some(5),
        Some(6),
        Some(7),
        Some(8),
        Some(9),
        Some(10),
        Some(11),
        Some(12),
        Some(13),
        Some(14),
        Some(15),
        Some(16),
    ],
    17,
);

impl Columns {
    /// The columns a header row names, when `row` is a header (it names `IPProto` and `DstIp`).
    fn from_header(row: &csv::StringRecord) -> Option<Self> {
        let mut found = [None; 17];
        for (index, name) in row.iter().enumerate() {
            if let Some(known) = COLUMNS.iter().position(|c| c.eq_ignore_ascii_case(name)) {
                if let Some(slot) = found.get_mut(known) {
                    *slot = Some(index);
                }
            }
        }
        (found[0].is_some() && found[3].is_some()).then_some(Self(found, row.len()))
    }

    /// PCAPdroid writes fields unquoted, so an app name with a comma spills into extra
    /// fields: they are joined back into `App` (the only free-text column).
    fn mend(&self, row: csv::StringRecord) -> csv::StringRecord {
        let (Some(app), true) = (self.0[6], row.len() > self.1) else {
            return row;
        };
        let extra = row.len() - self.1;
        let mut fields: Vec<&str> = row.iter().collect();
        let Some(spilled) = fields.get(app..=app + extra) else {
            return row;
        };
        let joined = spilled.join(",");
        fields.splice(app..=app + extra, [joined.as_str()]);
        csv::StringRecord::from(fields)
    }

    fn get<'r>(&self, row: &'r csv::StringRecord, field: usize) -> Option<&'r str> {
        let index = (*self.0.get(field)?)?;
        row.get(index).map(str::trim).filter(|v| !v.is_empty())
    }
}

/// A parsed PCAPdroid export record: the sessions of its rows.
pub fn sessions(
    bytes: &[u8],
    record: &RawRecord<'_>,
    fallback_device: Option<&str>,
    ingest_time: EpochMillis,
) -> Result<Vec<NetworkSession>, Rejection> {
    let mut columns = DEFAULT_COLUMNS;
    let mut rows = 0_usize;
    let mut out = Vec::new();
    for (index, row) in crate::normalize::csv_rows(bytes)?.into_iter().enumerate() {
        let line = index + 1;
        let at_line =
            |r: Rejection| Rejection::new(r.reason, format!("line {line}: {}", r.message));
        if index == 0 {
            if let Some(header) = Columns::from_header(&row) {
                columns = header;
                continue;
            }
        }
        if row.iter().all(str::is_empty) {
            continue;
        }
        rows += 1;
        let row = columns.mend(row);
        let Some(draft) = draft(&row, &columns).map_err(at_line)? else {
            continue;
        };
        out.push(
            draft
                .finish(
                    record,
                    SourceFormat::PcapdroidCsv,
                    fallback_device,
                    ingest_time,
                )
                .map_err(at_line)?,
        );
    }
    if rows == 0 {
        return Err(Rejection::unparseable(
            "PCAPdroid CSV with a header and no rows",
        ));
    }
    Ok(out)
}

/// `true` when the record's first line is a PCAPdroid header.
pub fn looks_like(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    bytes
        .get(start..)
        .is_some_and(|rest| rest.starts_with(b"IPProto,") || rest.starts_with(b"\"IPProto\","))
}

fn number(field: &str, text: Option<&str>) -> Result<Option<i64>, Rejection> {
    text.map(|t| {
        t.parse::<i64>()
            .map_err(|_| Rejection::unparseable(format!("{field}={t:?} is not a whole number")))
    })
    .transpose()
}

/// The draft of one data row, or `None` for a row that is not a port session (ICMP).
fn draft(row: &csv::StringRecord, c: &Columns) -> Result<Option<SessionDraft>, Rejection> {
    let proto = c.get(row, 0);
    if proto.is_some_and(|p| p.eq_ignore_ascii_case("icmp") || p.eq_ignore_ascii_case("icmpv6")) {
        return Ok(None);
    }
    let transport = transport_from(proto)?;
    let time = |field: usize| -> Result<Option<EpochMillis>, Rejection> {
        c.get(row, field)
            .map(|t| {
                time_from_text(t).ok_or_else(|| {
                    Rejection::unparseable(format!(
                        "{}={t:?} is neither epoch milliseconds/seconds nor RFC 3339",
                        COLUMNS.get(field).copied().unwrap_or("time")
                    ))
                })
            })
            .transpose()
    };
    let uid = number("UID", c.get(row, 5))?;
    let package = c
        .get(row, 7)
        .filter(|p| !matches!(*p, "unknown" | "-" | "null"));
    let label = c.get(row, 8).map(str::to_string);
    let info = c.get(row, 10).map(str::to_string);
    let verdict = label.as_deref().and_then(sensor_verdict);
    let (mut sni, mut dns, mut http) = (None, None, None);
    if let Some(info) = info {
        match verdict {
            Some(crate::model::AppProtocol::Dns) => {
                dns = Some(DnsInfo {
                    qname: info.trim_end_matches('.').to_ascii_lowercase(),
                    qtype: "A".to_string(),
                    rcode: None,
                })
            }
            Some(crate::model::AppProtocol::Http | crate::model::AppProtocol::Websocket) => {
                // nDPI's Info for HTTP is the Host header, port included when the request
                // named one (`198.51.100.138:8080`); the host alone is what the Host
                // indicators (an IP literal, the name's shape) judge, as for Zeek's host.
                http = Some(HttpInfo {
                    host: Some(crate::protocol::strip_port(&info).to_ascii_lowercase()),
                    ..HttpInfo::default()
                })
            }
            // TLS, QUIC and nDPI's application labels (`Google`, `WhatsApp`): a server name.
            _ => sni = Some(info),
        }
    }
    let attributed = package.is_some() && uid.is_some_and(|u| u >= 0);
    Ok(Some(SessionDraft {
        platform: Platform::Android,
        app_id: package.filter(|_| attributed).map(str::to_string),
        app_name: c.get(row, 6).map(str::to_string),
        app_uid: uid,
        attribution: Some(if attributed {
            AttributionSource::VpnUid
        } else {
            AttributionSource::DeviceOnly
        }),
        transport,
        src_ip: c.get(row, 1).map(str::to_string),
        src_port: number("SrcPort", c.get(row, 2))?,
        dst_ip: c.get(row, 3).map(str::to_string),
        dst_port: number("DstPort", c.get(row, 4))?,
        sensor_label: label,
        sni,
        http,
        dns,
        bytes_out: number("BytesSent", c.get(row, 11))?,
        bytes_in: number("BytesRcvd", c.get(row, 12))?,
        packets_out: number("PktsSent", c.get(row, 13))?,
        packets_in: number("PktsRcvd", c.get(row, 14))?,
        start_time: time(15)?,
        end_time: time(16)?,
        still_open: c
            .get(row, 9)
            .is_some_and(|s| s.eq_ignore_ascii_case("open") || s.eq_ignore_ascii_case("active")),
        ..SessionDraft::default()
    }))
}
