//! Protocol recognition: what application protocol a session speaks, independent of its port.
//!
//! Two sources, never the port: the sensor's own verdict ([`sensor_verdict`]: Zeek `service`,
//! Suricata `app_proto`, nDPI/PCAPdroid `Proto`) and the first bytes the client sent
//! ([`recognize`]): TLS ClientHello (version, SNI, ALPN, JA3, JA4) through `tls-parser`,
//! HTTP/1.x request line and headers through `httparse`, the HTTP/2 preface, DNS queries through
//! `simple-dns`, SSH identification strings, SMTP/IMAP/POP3 client commands, MQTT CONNECT, XMPP
//! stream headers, STUN, DTLS and QUIC long headers (QUIC Initial packets are encrypted, so only
//! the version is read). Every function here accepts any byte string without panicking; the
//! property tests at the bottom hold it to that.

use md5::{Digest as _, Md5};
use sha2::Sha256;
use tls_parser::{
    parse_tls_client_hello_extensions, parse_tls_plaintext, TlsExtension, TlsExtensionType,
    TlsMessage, TlsMessageHandshake,
};

use crate::model::{AppProtocol, DnsInfo, HttpInfo, TlsInfo, Transport};

/// What the client's first bytes revealed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recognized {
    /// The protocol; `None` when nothing matched.
    pub protocol: Option<AppProtocol>,
    /// ClientHello indicators.
    pub tls: Option<TlsInfo>,
    /// HTTP request indicators.
    pub http: Option<HttpInfo>,
    /// DNS query indicators.
    pub dns: Option<DnsInfo>,
    /// First line of a text protocol (SSH banner, SMTP/IMAP/POP3 command), at most 256 bytes.
    pub banner: Option<String>,
    /// QUIC version from a long header.
    pub quic_version: Option<u32>,
}

/// Longest banner kept.
pub const MAX_BANNER: usize = 256;

/// Maps a sensor's protocol label to an [`AppProtocol`]. Accepts Zeek `service` values
/// (`ssl`, `http`, `dns`, `ssh`, `smtp`, ..., comma-separated when several analyzers fired),
/// Suricata `app_proto` values (`tls`, `http`, `http2`, `dns`, `quic`, `mqtt`, ...) and nDPI
/// names as PCAPdroid exports them (`TLS`, `HTTP`, `DNS`, `QUIC`, possibly with an app suffix
/// such as `TLS.Google`). Returns `None` for labels that name no recognisable protocol
/// (`failed`, `unknown`, `-`, empty).
pub fn sensor_verdict(label: &str) -> Option<AppProtocol> {
    // The first label wins, except that WebSocket or HTTP/2 is more specific than a plain
    // HTTP or TLS label beside it.
    let specific = |p: &AppProtocol| matches!(p, AppProtocol::Websocket | AppProtocol::Http2);
    label
        .split([',', '/'])
        .filter_map(|part| single_verdict(part.trim()))
        .fold(None, |best, next| match best {
            Some(b) if specific(&b) || !specific(&next) => Some(b),
            _ => Some(next),
        })
}

fn single_verdict(label: &str) -> Option<AppProtocol> {
    let lower = label.to_ascii_lowercase();
    // nDPI: "TLS.Google" is TLS carrying Google's traffic; the master protocol comes first.
    let master = lower.split('.').next().unwrap_or("");
    Some(match master {
        "ssl" | "tls" | "https" => AppProtocol::Tls,
        "dtls" => AppProtocol::Dtls,
        "quic" | "gquic" => AppProtocol::Quic,
        "http" | "http_proxy" | "http_connect" => AppProtocol::Http,
        "http2" | "http/2" => AppProtocol::Http2,
        "websocket" | "websockets" => AppProtocol::Websocket,
        "dns" | "mdns" | "llmnr" | "doh_dot" => AppProtocol::Dns,
        "ssh" => AppProtocol::Ssh,
        "smtp" | "smtps" => AppProtocol::Smtp,
        "imap" | "imaps" => AppProtocol::Imap,
        "pop3" | "pops" | "pop" => AppProtocol::Pop3,
        "mqtt" => AppProtocol::Mqtt,
        "xmpp" | "jabber" => AppProtocol::Xmpp,
        "stun" | "turn" => AppProtocol::Stun,
        _ => return None,
    })
}

/// Recognises the protocol from the first client payload bytes of a session.
pub fn recognize(bytes: &[u8], transport: Transport) -> Recognized {
    type Attempt = fn(&[u8]) -> Option<Recognized>;
    let attempts: &[Attempt] = match transport {
        Transport::Udp => &[quic, dtls, stun, dns_udp],
        _ => &[
            tls,
            http2_preface,
            http1,
            ssh,
            mqtt_connect,
            xmpp,
            mail,
            dns_tcp,
        ],
    };
    attempts
        .iter()
        .find_map(|attempt| attempt(bytes))
        .unwrap_or_default()
}

fn found(protocol: AppProtocol) -> Recognized {
    Recognized {
        protocol: Some(protocol),
        ..Recognized::default()
    }
}

fn is_grease(value: u16) -> bool {
    value & 0x0f0f == 0x0a0a && value >> 8 == value & 0xff
}

fn tls_version_name(version: u16) -> String {
    match version {
        0x0300 => "SSLv3".to_string(),
        0x0301 => "TLSv1.0".to_string(),
        0x0302 => "TLSv1.1".to_string(),
        0x0303 => "TLSv1.2".to_string(),
        0x0304 => "TLSv1.3".to_string(),
        0xfeff => "DTLSv1.0".to_string(),
        0xfefd => "DTLSv1.2".to_string(),
        0xfefc => "DTLSv1.3".to_string(),
        other => format!("0x{other:04x}"),
    }
}

fn ja4_version(version: u16) -> &'static str {
    match version {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    }
}

fn sha256_12(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(digest).chars().take(12).collect()
}

/// The parts of a ClientHello the fingerprints are computed from.
struct HelloParts {
    version: u16,
    ciphers: Vec<u16>,
    extensions: Vec<u16>,
    curves: Vec<u16>,
    point_formats: Vec<u8>,
    signature_algorithms: Vec<u16>,
    supported_versions: Vec<u16>,
    sni: Option<String>,
    alpn: Vec<String>,
}

impl HelloParts {
    /// The highest version offered: from supported_versions (TLS 1.3) when present, else the
    /// ClientHello's own version; GREASE values ignored.
    fn best_version(&self) -> u16 {
        self.supported_versions
            .iter()
            .copied()
            .filter(|v| !is_grease(*v))
            .max()
            .unwrap_or(self.version)
    }

    fn ja3(&self) -> String {
        let join = |values: &[u16]| {
            values
                .iter()
                .filter(|v| !is_grease(**v))
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join("-")
        };
        let formats = self
            .point_formats
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join("-");
        let text = format!(
            "{},{},{},{},{}",
            self.version,
            join(&self.ciphers),
            join(&self.extensions),
            join(&self.curves),
            formats
        );
        hex::encode(Md5::digest(text.as_bytes()))
    }

    /// JA4 (FoxIO), TLS over TCP (`t` prefix).
    fn ja4(&self) -> String {
        let version = self.best_version();
        let ciphers: Vec<u16> = self
            .ciphers
            .iter()
            .copied()
            .filter(|v| !is_grease(*v))
            .collect();
        let extensions: Vec<u16> = self
            .extensions
            .iter()
            .copied()
            .filter(|v| !is_grease(*v))
            .collect();
        let alpn = self
            .alpn
            .first()
            .map(|first| {
                let chars: Vec<char> = first.chars().filter(char::is_ascii_alphanumeric).collect();
                match (chars.first(), chars.last()) {
                    (Some(a), Some(b)) => format!("{a}{b}"),
                    _ => "00".to_string(),
                }
            })
            .unwrap_or_else(|| "00".to_string());
        let a = format!(
            "t{}{}{:02}{:02}{}",
            ja4_version(version),
            if self.sni.is_some() { 'd' } else { 'i' },
            ciphers.len().min(99),
            extensions.len().min(99),
            alpn
        );
        let hex_sorted = |values: &[u16]| {
            let mut hexes: Vec<String> = values.iter().map(|v| format!("{v:04x}")).collect();
            hexes.sort();
            hexes.join(",")
        };
        let b = if ciphers.is_empty() {
            "000000000000".to_string()
        } else {
            sha256_12(&hex_sorted(&ciphers))
        };
        // SNI (0x0000) and ALPN (0x0010) are left out of the hashed extension list.
        let hashed: Vec<u16> = extensions
            .iter()
            .copied()
            .filter(|e| *e != 0x0000 && *e != 0x0010)
            .collect();
        let c = if hashed.is_empty() {
            "000000000000".to_string()
        } else {
            let mut text = hex_sorted(&hashed);
            if !self.signature_algorithms.is_empty() {
                text.push('_');
                text.push_str(
                    &self
                        .signature_algorithms
                        .iter()
                        .map(|v| format!("{v:04x}"))
                        .collect::<Vec<_>>()
                        .join(","),
                );
            }
            sha256_12(&text)
        };
        format!("{a}_{b}_{c}")
    }
}

fn hello_parts(bytes: &[u8]) -> Option<HelloParts> {
    let (_, record) = parse_tls_plaintext(bytes).ok()?;
    let hello = record.msg.iter().find_map(|msg| match msg {
        TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)) => Some(hello),
        _ => None,
    })?;
    let mut parts = HelloParts {
        version: hello.version.0,
        ciphers: hello.ciphers.iter().map(|c| c.0).collect(),
        extensions: vec![],
        curves: vec![],
        point_formats: vec![],
        signature_algorithms: vec![],
        supported_versions: vec![],
        sni: None,
        alpn: vec![],
    };
    let extensions = hello
        .ext
        .and_then(|ext| parse_tls_client_hello_extensions(ext).ok())
        .map(|(_, list)| list)
        .unwrap_or_default();
    for extension in &extensions {
        parts.extensions.push(TlsExtensionType::from(extension).0);
        match extension {
            TlsExtension::SNI(names) => {
                parts.sni = names
                    .iter()
                    .find_map(|(_, name)| std::str::from_utf8(name).ok())
                    .map(|name| name.trim_end_matches('.').to_ascii_lowercase());
            }
            TlsExtension::ALPN(protocols) => {
                parts.alpn = protocols
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect();
            }
            TlsExtension::EllipticCurves(groups) => {
                parts.curves = groups.iter().map(|g| g.0).collect();
            }
            TlsExtension::EcPointFormats(formats) => parts.point_formats = formats.to_vec(),
            TlsExtension::SignatureAlgorithms(algorithms) => {
                parts.signature_algorithms = algorithms.clone();
            }
            TlsExtension::SupportedVersions(versions) => {
                parts.supported_versions = versions.iter().map(|v| v.0).collect();
            }
            _ => {}
        }
    }
    Some(parts)
}

fn tls(bytes: &[u8]) -> Option<Recognized> {
    // Record header: handshake (22), TLS major version 3, then a ClientHello (1).
    let header = bytes.get(..6)?;
    if header.first() != Some(&0x16) || header.get(1) != Some(&0x03) || header.get(5) != Some(&0x01)
    {
        return None;
    }
    let mut recognized = found(AppProtocol::Tls);
    // A ClientHello cut short by the capture is still TLS, only without details.
    if let Some(parts) = hello_parts(bytes) {
        recognized.tls = Some(TlsInfo {
            version: Some(tls_version_name(parts.best_version())),
            sni: parts.sni.clone(),
            alpn: parts.alpn.clone(),
            ja3: Some(parts.ja3()),
            ja4: Some(parts.ja4()),
        });
    }
    Some(recognized)
}

fn dtls(bytes: &[u8]) -> Option<Recognized> {
    // DTLS record: handshake (22), version 0xfeff / 0xfefd / 0xfefc.
    match bytes.get(..3)? {
        [0x16, 0xfe, 0xff | 0xfd | 0xfc] => Some(found(AppProtocol::Dtls)),
        _ => None,
    }
}

fn quic(bytes: &[u8]) -> Option<Recognized> {
    // Long header: form bit and fixed bit set, 4-byte version, then connection id lengths.
    let first = *bytes.first()?;
    if first & 0xc0 != 0xc0 || bytes.len() < 1200 {
        return None;
    }
    let version = u32::from_be_bytes(bytes.get(1..5)?.try_into().ok()?);
    let known = version == 0x0000_0001
        || version == 0x6b33_43cf
        || version & 0xffff_ff00 == 0xff00_0000
        || version & 0x0f0f_0f0f == 0x0a0a_0a0a;
    let dcid_len = usize::from(*bytes.get(5)?);
    if !known || dcid_len > 20 {
        return None;
    }
    Some(Recognized {
        quic_version: Some(version),
        ..found(AppProtocol::Quic)
    })
}

fn stun(bytes: &[u8]) -> Option<Recognized> {
    // RFC 5389: two zero bits, message length multiple of 4, magic cookie 0x2112A442.
    let header = bytes.get(..20)?;
    let cookie = header.get(4..8)?;
    let length = u16::from_be_bytes([*header.get(2)?, *header.get(3)?]);
    (header.first()? & 0xc0 == 0 && length % 4 == 0 && cookie == [0x21, 0x12, 0xa4, 0x42])
        .then(|| found(AppProtocol::Stun))
}

fn qtype_name(qtype: u16) -> String {
    match qtype {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        10 => "NULL",
        12 => "PTR",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        43 => "DS",
        46 => "RRSIG",
        48 => "DNSKEY",
        64 => "SVCB",
        65 => "HTTPS",
        255 => "ANY",
        257 => "CAA",
        other => return format!("TYPE{other}"),
    }
    .to_string()
}

fn dns_message(bytes: &[u8]) -> Option<Recognized> {
    let packet = simple_dns::Packet::parse(bytes).ok()?;
    // A client's first message is one standard query with no answers.
    if packet.has_flags(simple_dns::PacketFlag::RESPONSE)
        || packet.opcode() != simple_dns::OPCODE::StandardQuery
        || packet.questions.len() != 1
        || !packet.answers.is_empty()
    {
        return None;
    }
    let question = packet.questions.first()?;
    let qname = question
        .qname
        .to_string()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if qname.is_empty() || !qname.chars().all(|c| c.is_ascii_graphic()) {
        return None;
    }
    Some(Recognized {
        dns: Some(DnsInfo {
            qname,
            qtype: qtype_name(u16::from(question.qtype)),
            rcode: None,
        }),
        ..found(AppProtocol::Dns)
    })
}

fn dns_udp(bytes: &[u8]) -> Option<Recognized> {
    dns_message(bytes)
}

fn dns_tcp(bytes: &[u8]) -> Option<Recognized> {
    // DNS over TCP prefixes each message with its 2-byte length.
    let length = usize::from(u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]));
    let message = bytes.get(2..)?;
    if length < 12 || length > message.len() + 512 {
        return None;
    }
    dns_message(message.get(..length.min(message.len()))?)
}

const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn http2_preface(bytes: &[u8]) -> Option<Recognized> {
    bytes.starts_with(HTTP2_PREFACE).then(|| Recognized {
        http: Some(HttpInfo::default()),
        ..found(AppProtocol::Http2)
    })
}

const HTTP_METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];

fn http1(bytes: &[u8]) -> Option<Recognized> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    // A partial request still fills the request line and the headers parsed so far.
    let status = request.parse(bytes);
    let complete_line = match status {
        Ok(_) => request.method.is_some() && request.path.is_some(),
        Err(httparse::Error::TooManyHeaders) => request.method.is_some(),
        Err(_) => false,
    };
    let method = request.method.filter(|m| HTTP_METHODS.contains(m))?;
    if !complete_line {
        return None;
    }
    let header = |name: &str| {
        request
            .headers
            .iter()
            .filter(|h| !h.name.is_empty())
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
            .map(str::to_string)
    };
    let host = header("host").map(|h| strip_port(&h).to_ascii_lowercase());
    let upgrade = header("upgrade").map(|u| u.to_ascii_lowercase());
    let protocol = if upgrade.as_deref() == Some("websocket") {
        AppProtocol::Websocket
    } else if upgrade.as_deref() == Some("h2c") {
        AppProtocol::Http2
    } else {
        AppProtocol::Http
    };
    Some(Recognized {
        http: Some(HttpInfo {
            method: Some(method.to_string()),
            host,
            path_class: request.path.map(path_class),
            user_agent: header("user-agent"),
            upgrade,
            status_code: None,
        }),
        ..found(protocol)
    })
}

/// Removes a `:port` suffix from a Host value, IPv6 literals included (`[::1]:8080`).
pub fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// Coarse class of a request path, kept instead of the path itself: `root`, `static` (a file
/// with a common web extension), `query` (has a query string), `opaque` (a long segment that
/// looks random, typical of tasking URLs), or `api`.
pub fn path_class(path: &str) -> String {
    let (path_only, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    if path_only == "/" || path_only.is_empty() {
        return if query.is_some() { "query" } else { "root" }.to_string();
    }
    let last = path_only.rsplit('/').find(|s| !s.is_empty()).unwrap_or("");
    const STATIC: &[&str] = &[
        ".js", ".css", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".ico", ".woff", ".woff2", ".html",
        ".webp", ".mp4", ".json",
    ];
    if STATIC
        .iter()
        .any(|ext| last.to_ascii_lowercase().ends_with(ext))
    {
        return "static".to_string();
    }
    let opaque = path_only
        .split('/')
        .any(|segment| segment.len() >= 16 && shannon_entropy(segment.as_bytes()) >= 3.5);
    if opaque {
        "opaque".to_string()
    } else if query.is_some() {
        "query".to_string()
    } else {
        "api".to_string()
    }
}

fn first_line(bytes: &[u8]) -> Option<String> {
    let end = bytes
        .iter()
        .position(|b| *b == b'\r' || *b == b'\n')
        .unwrap_or(bytes.len())
        .min(MAX_BANNER);
    let line = std::str::from_utf8(bytes.get(..end)?).ok()?;
    (!line.is_empty() && line.chars().all(|c| !c.is_control())).then(|| line.to_string())
}

fn ssh(bytes: &[u8]) -> Option<Recognized> {
    if !(bytes.starts_with(b"SSH-2.0-") || bytes.starts_with(b"SSH-1.99-")) {
        return None;
    }
    Some(Recognized {
        banner: first_line(bytes),
        ..found(AppProtocol::Ssh)
    })
}

fn mqtt_connect(bytes: &[u8]) -> Option<Recognized> {
    // CONNECT packet type 1, flags 0; variable-length remaining length (1-4 bytes); then the
    // protocol name "MQTT" (3.1.1, 5) or "MQIsdp" (3.1) with its 2-byte length.
    if *bytes.first()? != 0x10 {
        return None;
    }
    let mut index = 1;
    for _ in 0..4 {
        let byte = *bytes.get(index)?;
        index += 1;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let rest = bytes.get(index..)?;
    (rest.starts_with(b"\x00\x04MQTT") || rest.starts_with(b"\x00\x06MQIsdp"))
        .then(|| found(AppProtocol::Mqtt))
}

fn xmpp(bytes: &[u8]) -> Option<Recognized> {
    let head = std::str::from_utf8(bytes.get(..bytes.len().min(512))?).ok()?;
    let head = head.trim_start();
    ((head.starts_with("<?xml") || head.starts_with("<stream:stream"))
        && head.contains("stream:stream")
        && head.contains("jabber:client"))
    .then(|| found(AppProtocol::Xmpp))
}

fn mail(bytes: &[u8]) -> Option<Recognized> {
    let line = first_line(bytes)?;
    let upper = line.to_ascii_uppercase();
    let word = |w: &str| upper == w || upper.starts_with(&format!("{w} "));
    let protocol = if word("EHLO") || word("HELO") {
        AppProtocol::Smtp
    } else if word("CAPA") || word("USER") || word("APOP") || word("STLS") {
        AppProtocol::Pop3
    } else {
        // IMAP: "<tag> <command>", tag alphanumeric.
        let mut parts = upper.splitn(3, ' ');
        let tag = parts.next().unwrap_or("");
        let command = parts.next().unwrap_or("");
        let tag_ok =
            !tag.is_empty() && tag.len() <= 16 && tag.chars().all(|c| c.is_ascii_alphanumeric());
        let imap = matches!(
            command,
            "CAPABILITY" | "LOGIN" | "AUTHENTICATE" | "STARTTLS" | "ID" | "NOOP" | "SELECT"
        );
        if tag_ok && imap {
            AppProtocol::Imap
        } else {
            return None;
        }
    };
    Some(Recognized {
        banner: Some(line),
        ..found(protocol)
    })
}

/// Shannon entropy of `bytes` in bits per byte (0 for an empty slice, at most 8).
pub fn shannon_entropy(bytes: &[u8]) -> f64 {
    shannon_entropy_of(bytes.iter().copied())
}

/// [`shannon_entropy`] of a byte sequence given as an iterator (for example case-folded on the
/// fly), without collecting it.
pub fn shannon_entropy_of(bytes: impl Iterator<Item = u8>) -> f64 {
    let mut counts = [0u32; 256];
    let mut total = 0u32;
    for byte in bytes {
        if let Some(count) = counts.get_mut(usize::from(byte)) {
            *count = count.saturating_add(1);
        }
        total = total.saturating_add(1);
    }
    if total == 0 {
        return 0.0;
    }
    let total = f64::from(total);
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / total;
            -p * p.log2()
        })
        .sum()
}

/// Decodes client payload bytes carried as text: hex (`16030100...`, optional `0x` prefix, spaces
/// or colons allowed) or standard/URL-safe base64. Returns `None` when the text is neither.
pub fn decode_payload_text(text: &str) -> Option<Vec<u8>> {
    decode_hex_text(text).or_else(|| decode_base64_text(text))
}

/// Decodes hex text (`16030100...`, optional `0x` prefix, spaces or colons allowed); `None`
/// when it is not an even number of hex digits.
pub fn decode_hex_text(text: &str) -> Option<Vec<u8>> {
    let trimmed = text.trim();
    let hexish: String = trimmed
        .strip_prefix("0x")
        .unwrap_or(trimmed)
        .chars()
        .filter(|c| !matches!(c, ' ' | ':'))
        .collect();
    if !hexish.is_empty()
        && hexish.len().is_multiple_of(2)
        && hexish.chars().all(|c| c.is_ascii_hexdigit())
    {
        return hex::decode(hexish).ok();
    }
    None
}

/// Decodes standard, URL-safe or unpadded base64; `None` when it is none of them.
pub fn decode_base64_text(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let trimmed = text.trim();
    base64::engine::general_purpose::STANDARD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(trimmed))
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
        .ok()
}

#[cfg(test)]
pub(crate) mod tests;
