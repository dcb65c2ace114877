use super::*;
use proptest::prelude::*;

/// A real Firefox-like TLS 1.3 ClientHello for `example.com` with ALPN h2/http1.1, built
/// by hand from RFC 8446 structures so the expected fields are known.
pub(crate) fn client_hello(sni: &str, alpn: &[&str]) -> Vec<u8> {
    let mut ext = Vec::new();
    let push_ext = |ext: &mut Vec<u8>, kind: u16, body: &[u8]| {
        ext.extend_from_slice(&kind.to_be_bytes());
        ext.extend_from_slice(&(body.len() as u16).to_be_bytes());
        ext.extend_from_slice(body);
    };
    // GREASE extension first, as Chrome sends it.
    push_ext(&mut ext, 0x1a1a, &[]);
    let mut sni_body = Vec::new();
    let name = sni.as_bytes();
    sni_body.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sni_body.push(0);
    sni_body.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni_body.extend_from_slice(name);
    push_ext(&mut ext, 0x0000, &sni_body);
    push_ext(&mut ext, 0x000a, &[0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]);
    push_ext(&mut ext, 0x000b, &[0x01, 0x00]);
    push_ext(&mut ext, 0x000d, &[0x00, 0x04, 0x04, 0x03, 0x08, 0x04]);
    if !alpn.is_empty() {
        let mut list = Vec::new();
        for a in alpn {
            list.push(a.len() as u8);
            list.extend_from_slice(a.as_bytes());
        }
        let mut body = (list.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(&list);
        push_ext(&mut ext, 0x0010, &body);
    }
    push_ext(&mut ext, 0x002b, &[0x04, 0x03, 0x04, 0x03, 0x03]);
    let mut hello = Vec::new();
    hello.extend_from_slice(&[0x03, 0x03]);
    hello.extend_from_slice(&[7u8; 32]);
    hello.push(0);
    let ciphers: [u16; 4] = [0x2a2a, 0x1301, 0x1302, 0xc02f];
    hello.extend_from_slice(&((ciphers.len() * 2) as u16).to_be_bytes());
    for c in ciphers {
        hello.extend_from_slice(&c.to_be_bytes());
    }
    hello.extend_from_slice(&[0x01, 0x00]);
    hello.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    hello.extend_from_slice(&ext);
    let mut handshake = vec![0x01];
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[test]
fn tls_client_hello_gives_version_sni_alpn_and_fingerprints() {
    let bytes = client_hello("Example.COM", &["h2", "http/1.1"]);
    let r = recognize(&bytes, Transport::Tcp);
    assert_eq!(r.protocol, Some(AppProtocol::Tls));
    let tls = r.tls.unwrap();
    assert_eq!(tls.version.as_deref(), Some("TLSv1.3"));
    assert_eq!(tls.sni.as_deref(), Some("example.com"));
    assert_eq!(tls.alpn, vec!["h2", "http/1.1"]);
    // JA3 string: version 771, ciphers without GREASE, extensions without GREASE,
    // curves 29-23, point formats 0.
    let expected_ja3 = hex::encode(Md5::digest(b"771,4865-4866-49199,0-10-11-13-16-43,29-23,0"));
    assert_eq!(tls.ja3.as_deref(), Some(expected_ja3.as_str()));
    let ja4 = tls.ja4.unwrap();
    assert!(ja4.starts_with("t13d0306h2_"), "{ja4}");
    let expected_b = sha256_12("1301,1302,c02f");
    let expected_c = sha256_12("000a,000b,000d,002b_0403,0804");
    assert_eq!(ja4, format!("t13d0306h2_{expected_b}_{expected_c}"));
}

#[test]
fn a_truncated_client_hello_is_still_tls() {
    let bytes = client_hello("example.com", &[]);
    let r = recognize(bytes.get(..40).unwrap(), Transport::Tcp);
    assert_eq!(r.protocol, Some(AppProtocol::Tls));
    assert_eq!(r.tls, None);
}

#[test]
fn http_request_line_and_headers() {
    let r = recognize(
        b"GET /api/v2/poll?id=3 HTTP/1.1\r\nHost: C2.Example.net:8080\r\nUser-Agent: okhttp/4.9\r\n\r\n",
        Transport::Tcp,
    );
    assert_eq!(r.protocol, Some(AppProtocol::Http));
    let http = r.http.unwrap();
    assert_eq!(http.method.as_deref(), Some("GET"));
    assert_eq!(http.host.as_deref(), Some("c2.example.net"));
    assert_eq!(http.path_class.as_deref(), Some("query"));
    assert_eq!(http.user_agent.as_deref(), Some("okhttp/4.9"));
}

#[test]
fn websocket_upgrade_and_http2() {
    let ws = recognize(
        b"GET /ws HTTP/1.1\r\nHost: a.b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        Transport::Tcp,
    );
    assert_eq!(ws.protocol, Some(AppProtocol::Websocket));
    assert_eq!(ws.http.unwrap().upgrade.as_deref(), Some("websocket"));
    let h2 = recognize(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00", Transport::Tcp);
    assert_eq!(h2.protocol, Some(AppProtocol::Http2));
}

fn dns_query(name: &str, qtype: u16) -> Vec<u8> {
    let mut bytes = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        bytes.push(label.len() as u8);
        bytes.extend_from_slice(label.as_bytes());
    }
    bytes.push(0);
    bytes.extend_from_slice(&qtype.to_be_bytes());
    bytes.extend_from_slice(&[0, 1]);
    bytes
}

#[test]
fn dns_queries_over_udp_and_tcp() {
    let query = dns_query("xj4k2q9z.example.org", 16);
    let udp = recognize(&query, Transport::Udp);
    assert_eq!(udp.protocol, Some(AppProtocol::Dns));
    let dns = udp.dns.unwrap();
    assert_eq!(
        (dns.qname.as_str(), dns.qtype.as_str()),
        ("xj4k2q9z.example.org", "TXT")
    );
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    assert_eq!(
        recognize(&framed, Transport::Tcp).protocol,
        Some(AppProtocol::Dns)
    );
}

#[test]
fn text_protocols_and_mqtt() {
    let ssh = recognize(b"SSH-2.0-OpenSSH_9.6\r\n", Transport::Tcp);
    assert_eq!(ssh.protocol, Some(AppProtocol::Ssh));
    assert_eq!(ssh.banner.as_deref(), Some("SSH-2.0-OpenSSH_9.6"));
    assert_eq!(
        recognize(b"EHLO phone.local\r\n", Transport::Tcp).protocol,
        Some(AppProtocol::Smtp)
    );
    assert_eq!(
        recognize(b"a001 CAPABILITY\r\n", Transport::Tcp).protocol,
        Some(AppProtocol::Imap)
    );
    assert_eq!(
        recognize(b"CAPA\r\n", Transport::Tcp).protocol,
        Some(AppProtocol::Pop3)
    );
    let mqtt = b"\x10\x1a\x00\x04MQTT\x04\x02\x00\x3c\x00\x0eclient-12345";
    assert_eq!(
        recognize(mqtt, Transport::Tcp).protocol,
        Some(AppProtocol::Mqtt)
    );
    let xmpp = b"<?xml version='1.0'?><stream:stream to='chat.example' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
    assert_eq!(
        recognize(xmpp, Transport::Tcp).protocol,
        Some(AppProtocol::Xmpp)
    );
}

#[test]
fn udp_protocols() {
    let mut quic = vec![0xc3, 0x00, 0x00, 0x00, 0x01, 0x08];
    quic.resize(1200, 0);
    let r = recognize(&quic, Transport::Udp);
    assert_eq!(
        (r.protocol, r.quic_version),
        (Some(AppProtocol::Quic), Some(1))
    );
    let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    stun.extend_from_slice(&[9; 12]);
    assert_eq!(
        recognize(&stun, Transport::Udp).protocol,
        Some(AppProtocol::Stun)
    );
    assert_eq!(
        recognize(&[0x16, 0xfe, 0xfd, 0, 0], Transport::Udp).protocol,
        Some(AppProtocol::Dtls)
    );
}

#[test]
fn unrecognisable_bytes_give_nothing() {
    assert_eq!(
        recognize(b"\x00\x01\x02 hello", Transport::Tcp).protocol,
        None
    );
    assert_eq!(recognize(b"", Transport::Udp).protocol, None);
    assert_eq!(
        recognize(b"FOO / HTTP/1.1\r\n\r\n", Transport::Tcp).protocol,
        None
    );
}

#[test]
fn sensor_labels_from_zeek_suricata_and_ndpi() {
    assert_eq!(sensor_verdict("ssl"), Some(AppProtocol::Tls));
    assert_eq!(sensor_verdict("ssl,http"), Some(AppProtocol::Tls));
    assert_eq!(
        sensor_verdict("http,websocket"),
        Some(AppProtocol::Websocket)
    );
    assert_eq!(sensor_verdict("tls"), Some(AppProtocol::Tls));
    assert_eq!(sensor_verdict("TLS.Google"), Some(AppProtocol::Tls));
    assert_eq!(sensor_verdict("DNS"), Some(AppProtocol::Dns));
    assert_eq!(sensor_verdict("failed"), None);
    assert_eq!(sensor_verdict("-"), None);
    assert_eq!(sensor_verdict(""), None);
}

#[test]
fn path_classes_and_hosts() {
    assert_eq!(path_class("/"), "root");
    assert_eq!(path_class("/static/app.js"), "static");
    assert_eq!(path_class("/v1/users"), "api");
    assert_eq!(path_class("/search?q=x"), "query");
    assert_eq!(path_class("/t/aZ3kQ9xP2mL7vR4sT8wB"), "opaque");
    assert_eq!(strip_port("example.com:8080"), "example.com");
    assert_eq!(strip_port("[2001:db8::1]:443"), "2001:db8::1");
    assert_eq!(strip_port("2001:db8::1"), "2001:db8::1");
}

#[test]
fn entropy_and_payload_text() {
    assert_eq!(shannon_entropy(b""), 0.0);
    assert_eq!(shannon_entropy(b"aaaa"), 0.0);
    let all: Vec<u8> = (0..=255).collect();
    assert!((shannon_entropy(&all) - 8.0).abs() < 1e-9);
    assert_eq!(
        decode_payload_text("0x1603 01"),
        Some(vec![0x16, 0x03, 0x01])
    );
    assert_eq!(decode_payload_text("FgMB"), Some(vec![0x16, 0x03, 0x01]));
    assert_eq!(decode_payload_text("not payload!"), None);
}

proptest! {
    #[test]
    fn recognize_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048), udp in any::<bool>()) {
        let transport = if udp { Transport::Udp } else { Transport::Tcp };
        let _ = recognize(&bytes, transport);
    }

    #[test]
    fn recognize_never_panics_on_mutated_client_hellos(flips in proptest::collection::vec((0usize..200, any::<u8>()), 1..8), cut in 0usize..220) {
        let mut bytes = client_hello("example.com", &["h2"]);
        for (index, value) in flips {
            if let Some(b) = bytes.get_mut(index) { *b = value; }
        }
        bytes.truncate(cut);
        let _ = recognize(&bytes, Transport::Tcp);
    }

    #[test]
    fn text_helpers_never_panic(text in ".{0,300}") {
        let _ = sensor_verdict(&text);
        let _ = path_class(&text);
        let _ = strip_port(&text);
        let _ = decode_payload_text(&text);
    }
}
