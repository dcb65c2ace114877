//! A simulated fleet as the sensors write it, not as offport's session JSON.
//!
//! - **Android** devices run PCAPdroid: one CSV row per connection (its export layout,
//!   `IPProto,SrcIP,...,FirstSeen,LastSeen`), reported when the connection ends, from the VPN
//!   address PCAPdroid gives every device (`10.215.173.1`): the device comes from the record's
//!   key or `offport.device_id` header, never from the address.
//! - **iOS** devices send their traffic through a per-app VPN to a tunnel sensor: half of them
//!   (by device id) to Zeek (`conn.log` written at the connection's end; `ssl.log`, `http.log`,
//!   `dns.log` near its start, sharing its `uid`), the others to Suricata (an EVE `tls`,
//!   `http` or `dns` event near the start and the `flow` event at the end, sharing a
//!   `flow_id`). Each (device, app) has its own tunnel address; [`SensorFleet::sources`] is the
//!   address map a deployment configures as `normalize.sources`.
//! - EDR and MDM records are as the simulator writes them.
//!
//! What a sensor cannot see is lost, as in the field: the first client bytes themselves (what
//! the sensors' dissectors make of them stays: an HTTP request's Host, a WebSocket upgrade),
//! and on iOS nothing but the tunnel address names the app.

use offport_core::model::EpochMillis;
use offport_core::normalize::proxy::sources::SourceMapping;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::sim::{Fleet, RawLine, Stream};

/// Which sensor wrote a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Sensor {
    /// PCAPdroid on an Android device.
    Pcapdroid,
    /// Zeek on the tunnel.
    Zeek,
    /// Suricata on the tunnel.
    Suricata,
    /// The EDR or MDM feed, as simulated.
    Feed,
}

impl Sensor {
    /// The name a deployment would key the sensor's records by.
    pub fn name(self) -> &'static str {
        match self {
            Sensor::Pcapdroid => "pcapdroid",
            Sensor::Zeek => "zeek-tun0",
            Sensor::Suricata => "suricata-tun0",
            Sensor::Feed => "feed",
        }
    }
}

/// One record as its sensor wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorLine {
    /// The record; `device_id` is the device it is about (the usual key), `time` when the
    /// sensor wrote it.
    pub line: RawLine,
    /// The sensor.
    pub sensor: Sensor,
    /// The flow's id (Zeek `uid`, EVE `flow_id`) for a tunnel sensor's records.
    pub flow: Option<String>,
    /// Where the sensor writes it, relative to a fleet directory: `pcapdroid/<device>.csv`,
    /// `zeek/<log>.log`, `suricata/eve.json`, `edr.raw`, `mdm.raw` (the layout
    /// `offportctl replay --input` reads).
    pub file: String,
}

/// A fleet in the sensors' formats.
#[derive(Debug, Clone)]
pub struct SensorFleet {
    /// Every record, in the order the sensors wrote them (ties by stream, then device).
    pub records: Vec<SensorLine>,
    /// The tunnel sensors' address map (per-app VPN addresses of the iOS devices).
    pub sources: Vec<SourceMapping>,
}

impl SensorFleet {
    /// The address map as the `normalize.sources` section of a configuration file.
    pub fn sources_yaml(&self) -> String {
        let mut out = String::from("normalize:\n  sources:\n");
        for s in &self.sources {
            out.push_str(&format!(
                "    - {{network: {}, device_id: {}, platform: {}, app_id: {}}}\n",
                s.network,
                s.device_id,
                s.platform.as_deref().unwrap_or("ios"),
                s.app_id.as_deref().unwrap_or(""),
            ));
        }
        out
    }

    /// The address map as a `normalize.sources_file` in CSV: a header row, then one mapping a
    /// row (the form for large maps: only normalize-proxy reads it, as it streams in).
    pub fn sources_csv(&self) -> String {
        // RFC 4180: a field with a comma, a quote or a line break is quoted, quotes doubled.
        let field = |text: &str| {
            if text.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", text.replace('"', "\"\""))
            } else {
                text.to_string()
            }
        };
        let mut out = String::from("network,device_id,platform,app_id\n");
        for s in &self.sources {
            out.push_str(&format!(
                "{},{},{},{}\n",
                s.network,
                field(&s.device_id),
                field(s.platform.as_deref().unwrap_or("ios")),
                field(s.app_id.as_deref().unwrap_or("")),
            ));
        }
        out
    }
}

/// PCAPdroid's CSV export header.
pub const PCAPDROID_HEADER: &str = "IPProto,SrcIP,SrcPort,DstIp,DstPort,UID,App,PackageName,Proto,Status,Info,BytesSent,BytesRcvd,PktsSent,PktsRcvd,FirstSeen,LastSeen";

impl SensorFleet {
    /// Writes the records under `dir` in the sensors' file layout (each PCAPdroid export with
    /// its header row) and the address map as `sources.yaml`, a configuration file for
    /// `offportctl replay --config` and the services. Returns how many files it wrote.
    pub fn write(&self, dir: &std::path::Path) -> std::io::Result<usize> {
        use std::io::Write;
        let mut files: std::collections::BTreeMap<&str, std::io::BufWriter<std::fs::File>> =
            std::collections::BTreeMap::new();
        for record in &self.records {
            if !files.contains_key(record.file.as_str()) {
                let path = dir.join(&record.file);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
                if record.sensor == Sensor::Pcapdroid {
                    writeln!(file, "{PCAPDROID_HEADER}")?;
                }
                files.insert(record.file.as_str(), file);
            }
            if let Some(file) = files.get_mut(record.file.as_str()) {
                writeln!(file, "{}", record.line.value)?;
            }
        }
        let count = files.len();
        for (_, mut file) in files {
            file.flush()?;
        }
        std::fs::write(dir.join("sources.yaml"), self.sources_yaml())?;
        Ok(count + 1)
    }

    /// The records as raw lines for the raw topics, keyed by device (PCAPdroid rows name
    /// their device by the key; Zeek and EVE by the address map).
    pub fn raw_lines(&self) -> Vec<RawLine> {
        self.records.iter().map(|r| r.line.clone()).collect()
    }
}

/// PCAPdroid's address for the device inside its VPN.
const PCAPDROID_ADDRESS: &str = "10.215.173.1";

/// A simulated session the sensor conversion cannot read (a simulator defect).
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    /// Not JSON.
    #[error("a simulated session that is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// A field the conversion needs is missing.
    #[error("a simulated session without {0}")]
    Missing(&'static str),
}

/// The fleet's proxy records rewritten as the sensors write them.
pub fn sensor_formats(fleet: &Fleet) -> Result<SensorFleet, SensorError> {
    let mut records = Vec::with_capacity(fleet.records.len() * 2);
    let mut sources: Vec<SourceMapping> = Vec::new();
    let mut addresses: std::collections::HashMap<(String, String), String> =
        std::collections::HashMap::new();
    for line in &fleet.records {
        if line.stream != Stream::Proxy {
            records.push(SensorLine {
                line: line.clone(),
                sensor: Sensor::Feed,
                flow: None,
                file: line.stream.file_name().to_string(),
            });
            continue;
        }
        let s: Value = serde_json::from_str(&line.value).map_err(SensorError::NotJson)?;
        let session = Session::of(&s)?;
        if session.platform == "ANDROID" {
            records.push(SensorLine {
                line: RawLine {
                    value: session.pcapdroid_row(),
                    ..line.clone()
                },
                sensor: Sensor::Pcapdroid,
                flow: None,
                file: format!("pcapdroid/{}.csv", session.device_id),
            });
            continue;
        }
        let key = (session.device_id.clone(), session.app_id.clone());
        let next = addresses.len();
        let address = addresses
            .entry(key)
            .or_insert_with(|| {
                let address = format!("10.8.{}.{}", next / 250, next % 250 + 2);
                sources.push(SourceMapping {
                    network: format!("{address}/32").parse().unwrap_or_default(),
                    device_id: session.device_id.clone(),
                    platform: Some("ios".to_string()),
                    app_id: Some(session.app_id.clone()),
                    from: None,
                    until: None,
                });
                address
            })
            .clone();
        let zeek = Sha256::digest(session.device_id.as_bytes())
            .first()
            .is_some_and(|b| b % 2 == 0);
        let (sensor, lines) = if zeek {
            (Sensor::Zeek, session.zeek(&address))
        } else {
            (Sensor::Suricata, session.eve(&address))
        };
        for (time, value, flow, file) in lines {
            records.push(SensorLine {
                file: file.to_string(),
                line: RawLine {
                    stream: Stream::Proxy,
                    device_id: session.device_id.clone(),
                    time,
                    value,
                },
                sensor,
                flow: Some(flow),
            });
        }
    }
    records.sort_by(|a, b| {
        (a.line.time, a.line.stream, &a.line.device_id).cmp(&(
            b.line.time,
            b.line.stream,
            &b.line.device_id,
        ))
    });
    Ok(SensorFleet { records, sources })
}

/// The parts of a simulated session a sensor sees.
struct Session {
    id: String,
    device_id: String,
    platform: String,
    app_id: String,
    start: EpochMillis,
    duration: i64,
    dst_ip: String,
    dst_port: i64,
    udp: bool,
    src_port: i64,
    bytes_out: i64,
    bytes_in: i64,
    label: String,
    sni: Option<String>,
    host: Option<String>,
    method: Option<String>,
    qname: Option<String>,
    qtype: Option<String>,
    open: bool,
}

impl Session {
    fn of(s: &Value) -> Result<Self, SensorError> {
        let text = |k: &str| s.get(k).and_then(Value::as_str).map(str::to_string);
        // What the sensors' own dissectors make of the first client bytes: an HTTP request
        // (nDPI, Zeek and Suricata read its Host), a WebSocket upgrade (nDPI's `WebSocket`,
        // Zeek's `websocket` service, Suricata's `websocket` app-layer).
        let request = text("client_bytes_hex")
            .and_then(|h| hex::decode(h).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .filter(|r| r.contains(" HTTP/1."));
        let header = |name: &str| {
            request.as_deref().and_then(|r| {
                r.lines().find_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    key.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| value.trim().to_string())
                })
            })
        };
        let upgrade = header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
        let seen_label = match (&request, upgrade) {
            (Some(_), true) => Some("websocket".to_string()),
            (Some(_), false) => Some("http".to_string()),
            (None, _) => None,
        };
        let seen_host = header("host");
        let seen_method = request
            .as_deref()
            .and_then(|r| r.split_whitespace().next().map(str::to_string));
        let number = |k: &str| s.get(k).and_then(Value::as_i64);
        let required = |k: &'static str| text(k).ok_or(SensorError::Missing(k));
        Ok(Self {
            id: required("session_id")?,
            device_id: required("device_id")?,
            platform: required("platform")?,
            app_id: required("app_id")?,
            start: number("start_time").ok_or(SensorError::Missing("start_time"))?,
            duration: number("duration_ms").unwrap_or(0).max(0),
            dst_ip: required("dst_ip")?,
            dst_port: number("dst_port").unwrap_or(0),
            udp: text("transport").as_deref() == Some("UDP"),
            src_port: number("src_port").unwrap_or(40_000),
            bytes_out: number("bytes_out").unwrap_or(0),
            bytes_in: number("bytes_in").unwrap_or(0),
            label: text("sensor_protocol")
                .filter(|l| !l.is_empty())
                .or(seen_label)
                .unwrap_or_default(),
            sni: text("sni"),
            // A host header may carry the port; the sensors report the name.
            host: text("http_host")
                .or(seen_host)
                .map(|h| match h.rsplit_once(':') {
                    Some((name, port)) if port.parse::<u16>().is_ok() => name.to_string(),
                    _ => h,
                }),
            method: text("http_method").or(seen_method),
            qname: text("dns_qname"),
            qtype: text("dns_qtype"),
            open: s.get("still_open").and_then(Value::as_bool) == Some(true),
        })
    }

    fn end(&self) -> EpochMillis {
        self.start + self.duration
    }

    fn digest(&self) -> [u8; 32] {
        Sha256::digest(format!("{}/{}", self.device_id, self.id).as_bytes()).into()
    }

    fn packets(bytes: i64) -> i64 {
        bytes / 600 + 1
    }

    /// The application record's time: just after the start, within the session.
    fn app_time(&self) -> EpochMillis {
        self.start + self.duration.min(40)
    }

    /// The name of what the app-layer record saw (SNI, Host, query).
    fn info(&self) -> Option<&str> {
        self.sni
            .as_deref()
            .or(self.host.as_deref())
            .or(self.qname.as_deref())
    }

    fn pcapdroid_row(&self) -> String {
        let proto = sensor_names(&self.label).0;
        let digest = self.digest();
        let uid = 10_000 + u32::from(digest[0]) * 4 + u32::from(digest[1] % 4);
        let app = self.app_id.rsplit('.').next().unwrap_or(&self.app_id);
        format!(
            "{},{PCAPDROID_ADDRESS},{},{},{},{uid},{app},{},{proto},{},{},{},{},{},{},{},{}",
            if self.udp { 17 } else { 6 },
            self.src_port,
            self.dst_ip,
            self.dst_port,
            self.app_id,
            if self.open { "Open" } else { "Closed" },
            self.info().unwrap_or(""),
            self.bytes_out,
            self.bytes_in,
            Self::packets(self.bytes_out),
            Self::packets(self.bytes_in),
            rfc3339(self.start),
            rfc3339(self.end()),
        )
    }

    /// `(time written, line, uid)` of the Zeek logs: the app-layer log near the start, conn.log
    /// at the end.
    fn zeek(&self, address: &str) -> Vec<(EpochMillis, String, String, &'static str)> {
        let uid = format!("C{}", &hex::encode(self.digest())[..17]);
        let ids = |mut v: Value| {
            if let Some(map) = v.as_object_mut() {
                map.insert("uid".into(), json!(uid));
                map.insert("id.orig_h".into(), json!(address));
                map.insert("id.orig_p".into(), json!(self.src_port));
                map.insert("id.resp_h".into(), json!(self.dst_ip));
                map.insert("id.resp_p".into(), json!(self.dst_port));
            }
            v
        };
        let mut out = Vec::new();
        let service = sensor_names(&self.label).1;
        let app = match (service, &self.sni, &self.host, &self.qname) {
            // ssl.log has a line for every handshake; server_name only when the client sent one.
            (Some("ssl"), sni, _, _) => Some((
                "zeek/ssl.log",
                match sni {
                    Some(sni) => {
                        json!({"ts": seconds(self.app_time()), "version": "TLSv13", "server_name": sni, "established": true})
                    }
                    None => {
                        json!({"ts": seconds(self.app_time()), "version": "TLSv13", "established": true})
                    }
                },
            )),
            (Some("http" | "http,websocket"), _, Some(host), _) => Some((
                "zeek/http.log",
                json!({"ts": seconds(self.app_time()), "trans_depth": 1, "method": self.method.as_deref().unwrap_or("GET"), "host": host, "uri": "/", "version": "1.1"}),
            )),
            (Some("dns"), _, _, Some(q)) => Some((
                "zeek/dns.log",
                json!({"ts": seconds(self.app_time()), "proto": "udp", "query": q, "qtype_name": self.qtype.as_deref().unwrap_or("A"), "rcode_name": "NOERROR"}),
            )),
            _ => None,
        };
        if let Some((file, app)) = app {
            out.push((self.app_time(), ids(app).to_string(), uid.clone(), file));
        }
        let mut conn = json!({
            "ts": seconds(self.start),
            "proto": if self.udp { "udp" } else { "tcp" },
            "duration": self.duration as f64 / 1000.0,
            "orig_bytes": self.bytes_out,
            "resp_bytes": self.bytes_in,
            "conn_state": if self.open { "S1" } else { "SF" },
            "orig_pkts": Self::packets(self.bytes_out),
            "resp_pkts": Self::packets(self.bytes_in),
        });
        if let (Some(service), Some(map)) = (service, conn.as_object_mut()) {
            map.insert("service".into(), json!(service));
        }
        out.push((self.end(), ids(conn).to_string(), uid, "zeek/conn.log"));
        out
    }

    /// `(time written, event, flow id)` of Suricata's EVE: the app-layer event near the start,
    /// the flow event at the end.
    fn eve(&self, address: &str) -> Vec<(EpochMillis, String, String, &'static str)> {
        let digest = self.digest();
        let flow_id = u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8])) >> 12;
        let base = |time: EpochMillis, kind: &str| {
            json!({
                "timestamp": eve_time(time),
                "flow_id": flow_id,
                "in_iface": "tun0",
                "event_type": kind,
                "src_ip": address,
                "src_port": self.src_port,
                "dest_ip": self.dst_ip,
                "dest_port": self.dst_port,
                "proto": if self.udp { "UDP" } else { "TCP" },
            })
        };
        let mut out = Vec::new();
        let app_proto = sensor_names(&self.label).2;
        let app = match (app_proto, &self.sni, &self.host, &self.qname) {
            ("tls", Some(sni), _, _) => Some(("tls", json!({"sni": sni, "version": "TLS 1.3"}))),
            ("tls", None, _, _) => Some(("tls", json!({"version": "TLS 1.3"}))),
            ("http" | "websocket", _, Some(host), _) => Some((
                "http",
                json!({"hostname": host, "url": "/", "http_method": self.method.as_deref().unwrap_or("GET"), "protocol": "HTTP/1.1"}),
            )),
            ("dns", _, _, Some(q)) => Some((
                "dns",
                json!({"type": "query", "rrname": q, "rrtype": self.qtype.as_deref().unwrap_or("A")}),
            )),
            _ => None,
        };
        if let Some((kind, object)) = app {
            let mut event = base(self.app_time(), kind);
            if let Some(map) = event.as_object_mut() {
                map.insert(kind.into(), object);
            }
            out.push((
                self.app_time(),
                event.to_string(),
                flow_id.to_string(),
                "suricata/eve.json",
            ));
        }
        let mut flow = base(self.end(), "flow");
        if let Some(map) = flow.as_object_mut() {
            map.insert("app_proto".into(), json!(app_proto));
            map.insert(
                "flow".into(),
                json!({
                    "pkts_toserver": Self::packets(self.bytes_out),
                    "pkts_toclient": Self::packets(self.bytes_in),
                    "bytes_toserver": self.bytes_out,
                    "bytes_toclient": self.bytes_in,
                    "start": eve_time(self.start),
                    "end": eve_time(self.end()),
                    "age": self.duration / 1000,
                    "state": if self.open { "established" } else { "closed" },
                    "reason": if self.open { "shutdown" } else { "timeout" },
                    "alerted": false,
                }),
            );
        }
        out.push((
            self.end(),
            flow.to_string(),
            flow_id.to_string(),
            "suricata/eve.json",
        ));
        out
    }
}

/// What each sensor calls the protocol of a simulated session's label: nDPI's name as
/// PCAPdroid exports it, Zeek's `service` (none where Zeek has no analyzer for it) and
/// Suricata's `app_proto` (`failed` where it has no parser).
fn sensor_names(label: &str) -> (String, Option<&'static str>, &'static str) {
    let (ndpi, zeek, suricata) = match label.to_ascii_lowercase().as_str() {
        "" => ("Unknown", None, "failed"),
        "tls" => ("TLS", Some("ssl"), "tls"),
        // nDPI names TLS on a mail or DNS port by the service; Zeek and Suricata see TLS.
        "imaps" => ("IMAPS", Some("ssl"), "tls"),
        "pop3s" => ("POP3S", Some("ssl"), "tls"),
        "smtps" => ("SMTPS", Some("ssl"), "tls"),
        "doh_dot" => ("DoH_DoT", Some("ssl"), "tls"),
        "http" => ("HTTP", Some("http"), "http"),
        "websocket" => ("WebSocket", Some("http,websocket"), "websocket"),
        "dns" => ("DNS", Some("dns"), "dns"),
        "mdns" => ("MDNS", Some("dns"), "dns"),
        "quic" => ("QUIC", Some("quic"), "quic"),
        "mqtt" => ("MQTT", Some("mqtt"), "mqtt"),
        "ssh" => ("SSH", Some("ssh"), "ssh"),
        "smtp" => ("SMTP", Some("smtp"), "smtp"),
        "ntp" => ("NTP", Some("ntp"), "ntp"),
        "sip" => ("SIP", Some("sip"), "sip"),
        "rdp" => ("RDP", Some("rdp"), "rdp"),
        "ipsec" => ("IPSec", None, "ike"),
        "stun" => ("STUN", None, "failed"),
        // Application names nDPI knows and the others do not (Zoom, Spotify, Telegram, ...).
        _ => return (label.to_string(), None, "failed"),
    };
    (ndpi.to_string(), zeek, suricata)
}

/// Zeek's `ts`: epoch seconds with a fraction.
fn seconds(ms: EpochMillis) -> f64 {
    ms as f64 / 1000.0
}

fn datetime(ms: EpochMillis) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// A UTC time as `YYYY-MM-DDTHH:MM:SS.<fraction><offset>`, the fraction in milliseconds or
/// microseconds.
fn stamp(ms: EpochMillis, micros: bool, offset: &str) -> String {
    let t = datetime(ms);
    let fraction = if micros {
        format!("{:06}", t.microsecond())
    } else {
        format!("{:03}", t.millisecond())
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{fraction}{offset}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
    )
}

/// PCAPdroid's times: RFC 3339 with milliseconds.
fn rfc3339(ms: EpochMillis) -> String {
    stamp(ms, false, "+00:00")
}

/// EVE's times: microseconds and a `+0000` offset.
fn eve_time(ms: EpochMillis) -> String {
    stamp(ms, true, "+0000")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;
    use crate::sim::{simulate, FleetConfig};
    use offport_core::normalize::proxy::{ProxyConfig, ProxyNormalizer};
    use offport_core::normalize::{Normalized, Normalizer, RawRecord};

    #[test]
    fn every_session_comes_back_once_from_the_sensors_records_with_what_they_saw() {
        let fleet = simulate(&FleetConfig {
            devices: 24,
            hours: 3,
            ..FleetConfig::default()
        })
        .unwrap();
        let sensors = sensor_formats(&fleet).unwrap();
        let sessions = fleet.stream(Stream::Proxy).count();
        let mut normalizer = ProxyNormalizer::configured(ProxyConfig {
            sources: offport_core::normalize::proxy::sources::SourceMap::new(
                sensors.sources.clone(),
            ),
            ..ProxyConfig::default()
        });
        let mut out = Vec::new();
        let mut by_sensor = std::collections::BTreeMap::new();
        for (offset, record) in sensors.records.iter().enumerate() {
            if record.line.stream != Stream::Proxy {
                continue;
            }
            *by_sensor.entry(record.sensor).or_insert(0) += 1;
            let headers = vec![(
                "offport.device_id".to_string(),
                Some(record.line.device_id.clone().into_bytes()),
            )];
            let raw = RawRecord {
                key: Some(record.line.device_id.as_bytes()),
                headers: &headers,
                ..RawRecord::new("raw", 0, offset as i64, record.line.value.as_bytes())
            };
            let normalized = normalizer
                .normalize(&raw, record.line.time)
                .unwrap_or_else(|e| panic!("{e:?}: {}", record.line.value));
            out.extend(normalized);
        }
        assert!(by_sensor.len() == 3, "{by_sensor:?}");
        assert_eq!(out.len(), sessions, "one session per simulated session");
        let with_names = out
            .iter()
            .filter(|n| match n {
                Normalized::Session(s) => {
                    s.tls.as_ref().is_some_and(|t| t.sni.is_some())
                        || s.http.as_ref().is_some_and(|h| h.host.is_some())
                        || s.dns.is_some()
                }
                _ => false,
            })
            .count();
        let named = fleet
            .stream(Stream::Proxy)
            .filter(|r| {
                r.value.contains("\"sni\"")
                    || r.value.contains("\"http_host\"")
                    || r.value.contains("\"dns_qname\"")
            })
            .count();
        assert_eq!(
            with_names, named,
            "no session lost the name its app-layer record carried"
        );
        for n in &out {
            let Normalized::Session(s) = n else { panic!() };
            assert!(s.app_id.is_some(), "{s:?}");
        }
    }
}
