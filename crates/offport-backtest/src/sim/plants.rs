//! The behaviours planted on infected devices, each the way its class of malware behaves.

use super::*;

impl Device<'_> {
    pub(super) fn malicious_app(&mut self, behaviour: Behaviour) -> String {
        const NAMES: [&str; 6] = [
            "flashlight.pro",
            "battery.saver",
            "qr.scanner.free",
            "wallpaper.hd",
            "vpn.unlimited",
            "cleaner.boost",
        ];
        let name = NAMES
            .get(self.range(0..NAMES.len()))
            .copied()
            .unwrap_or("tool");
        match behaviour {
            Behaviour::WebsocketUnmanaged8081 => format!("com.sideload.{name}"),
            _ => format!("com.freeapps.{name}"),
        }
    }

    /// Plants `behaviour` on this device for `app`.
    pub(super) fn plant(
        &mut self,
        behaviour: Behaviour,
        app: &str,
        start: EpochMillis,
        end: EpochMillis,
    ) {
        self.doing = "planted";
        let span = end - start;
        // A start that leaves room for the behaviour within the run.
        let room = (span - 2 * HOUR).max(HOUR);
        let first = start + self.range(0..room) + 10 * MINUTE;
        let budget = (end - first).max(10 * MINUTE);
        self.edr("APP_BACKGROUND", Some(app), first - 60_000);
        let ip = format!("203.0.113.{}", 10 + self.index % 200);
        let mut starts = Vec::new();
        let (dst_ip, port, interval, jitter) = match behaviour {
            Behaviour::TlsC2UncommonPort => {
                let port = [8443, 9443, 7443]
                    .get(self.range(0..3))
                    .copied()
                    .unwrap_or(8443);
                let interval = self.range(5..16) * MINUTE;
                let jitter = self.range(0.05..0.30);
                let sni = format!("cdn-sync{}.example.net", self.index % 7);
                // Locked through the beacons: the device was locked and stays so.
                self.edr("DEVICE_LOCKED", None, first - 30_000);
                let mut t = first;
                while t < end && starts.len() < 24 {
                    self.background_execution(app, t - self.range(1_000..5_000));
                    let bytes = (self.vary(512.0, 0.02), self.vary(1_024.0, 0.02));
                    let duration = self.range(800..2_500);
                    self.tls_to(app, t, duration, &ip, &sni, port, bytes);
                    starts.push(t);
                    t += (interval as f64 * (1.0 + self.range(-jitter..=jitter))) as i64;
                }
                (ip.clone(), port, interval, jitter)
            }
            Behaviour::HttpC2UncommonPort => {
                let port = [8088, 8000, 8888]
                    .get(self.range(0..3))
                    .copied()
                    .unwrap_or(8088);
                let interval = self.range(3..11) * MINUTE;
                let jitter = self.range(0.05..0.30);
                let ip = format!("198.51.100.{}", 10 + self.index % 200);
                let mut t = first;
                while t < end && starts.len() < 24 {
                    let bytes = (self.vary(340.0, 0.1), self.vary(220.0, 0.1));
                    self.session(app, t, self.range(300..1_500), &ip, port, "http", bytes, json!({"http_host": ip, "http_method": "POST", "http_user_agent": "okhttp/4.9.0"}));
                    starts.push(t);
                    t += (interval as f64 * (1.0 + self.range(-jitter..=jitter))) as i64;
                }
                (ip, port, interval, jitter)
            }
            Behaviour::DnsNonStandardPort => {
                let port = [5300, 5533, 1053]
                    .get(self.range(0..3))
                    .copied()
                    .unwrap_or(5300);
                let ip = format!("192.0.2.{}", 10 + self.index % 200);
                let mut t = first;
                while t < end && starts.len() < 30 {
                    let mut label = String::new();
                    for _ in 0..16 {
                        let _ = write!(label, "{:x}", self.range(0..16));
                    }
                    let qname = format!("{label}.t.exfil-{}.example.org", self.index % 5);
                    let bytes = (
                        40 + qname.len() as i64,
                        60 + qname.len() as i64 + self.range(0..40),
                    );
                    self.session(
                        app,
                        t,
                        self.range(20..200),
                        &ip,
                        port,
                        "dns",
                        bytes,
                        json!({"dns_qname": qname, "dns_qtype": "TXT"}),
                    );
                    starts.push(t);
                    t += self.range(60_000..180_000);
                }
                (ip, port, 0, 0.0)
            }
            Behaviour::WebsocketUnmanaged8081 => {
                let ip = format!("198.51.100.{}", 10 + self.index % 200);
                let host = format!("relay{}.example.com", self.index % 9);
                let request = format!(
                    "GET /socket HTTP/1.1\r\nHost: {host}:8081\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                );
                let hex = hex::encode(request.as_bytes());
                let mut t = first;
                while t < end && starts.len() < 4 {
                    let length = self.range(10..30) * MINUTE;
                    let bytes = (self.vary(40_000.0, 0.5), self.vary(25_000.0, 0.5));
                    self.session(
                        app,
                        t,
                        length,
                        &ip,
                        8081,
                        "",
                        bytes,
                        json!({"client_bytes_hex": hex}),
                    );
                    starts.push(t);
                    t += length + self.range(20..60) * MINUTE;
                }
                (ip, 8081, 0, 0.0)
            }
            Behaviour::PersistentSession4444 => {
                let length = (budget - 10 * MINUTE)
                    .max(MINUTE)
                    .min(self.range(2..5) * HOUR);
                let bytes = (self.vary(300_000.0, 0.5), self.vary(80_000.0, 0.5));
                self.session(app, first, length, &ip, 4444, "tls", bytes, json!({}));
                starts.push(first);
                (ip.clone(), 4444, 0, 0.0)
            }
            Behaviour::DgaUniformPolling443 => {
                let mut sni = String::new();
                const CONSONANTS: &[u8] = b"bcdfghjklmnpqrstvwxz";
                for _ in 0..14 {
                    let i = self.range(0..CONSONANTS.len());
                    sni.push(char::from(CONSONANTS.get(i).copied().unwrap_or(b'x')));
                }
                sni.push_str(if self.index.is_multiple_of(2) {
                    ".top"
                } else {
                    ".xyz"
                });
                let interval = self.range(60_000..120_000);
                let jitter = self.range(0.05..0.15);
                let ip = address_of(&sni);
                let mut t = first;
                while t < end && starts.len() < 40 {
                    self.tls(app, t, self.range(400..900), &sni, 443, (620, 1_380));
                    starts.push(t);
                    t += (interval as f64 * (1.0 + self.range(-jitter..=jitter))) as i64;
                }
                (ip, 443, interval, jitter)
            }
            Behaviour::PushLikeBeacon5223 => {
                let interval = self.range(4..13) * MINUTE;
                let jitter = self.range(0.05..0.25);
                let ip = format!("198.51.100.{}", 10 + self.index % 200);
                let sni = format!("push{}.notify-gateway.net", self.index % 5);
                self.edr("DEVICE_LOCKED", None, first - 30_000);
                let mut t = first;
                while t < end && starts.len() < 30 {
                    let bytes = (self.vary(700.0, 0.02), self.vary(1_900.0, 0.02));
                    let duration = self.range(1_000..4_000);
                    self.tls_to(app, t, duration, &ip, &sni, 5223, bytes);
                    starts.push(t);
                    t += (interval as f64 * (1.0 + self.range(-jitter..=jitter))) as i64;
                }
                (ip, 5223, interval, jitter)
            }
            Behaviour::DnsTunnel5353 => {
                let ip = format!("203.0.113.{}", 10 + self.index % 200);
                let mut t = first;
                while t < end && starts.len() < 30 {
                    let mut label = String::new();
                    for _ in 0..24 {
                        let _ = write!(label, "{:x}", self.range(0..16));
                    }
                    let qname = format!("{label}.d.cdn-metrics{}.com", self.index % 5);
                    let bytes = (
                        40 + qname.len() as i64,
                        90 + qname.len() as i64 + self.range(0..120),
                    );
                    self.session(
                        app,
                        t,
                        self.range(20..200),
                        &ip,
                        5353,
                        "dns",
                        bytes,
                        json!({"dns_qname": qname, "dns_qtype": "TXT"}),
                    );
                    starts.push(t);
                    t += self.range(30_000..240_000);
                }
                (ip, 5353, 0, 0.0)
            }
            Behaviour::MqttC2Over8883 => {
                let interval = self.range(3..11) * MINUTE;
                let jitter = self.range(0.05..0.25);
                let ip = format!("192.0.2.{}", 10 + self.index % 200);
                self.edr("DEVICE_LOCKED", None, first - 30_000);
                let mut t = first;
                while t < end && starts.len() < 30 {
                    self.background_execution(app, t - self.range(1_000..5_000));
                    let bytes = (self.vary(410.0, 0.02), self.vary(260.0, 0.02));
                    let duration = self.range(1_500..6_000);
                    // The broker by address: TLS sends no server name for an IP (RFC 6066).
                    self.session(app, t, duration, &ip, 8883, "tls", bytes, json!({}));
                    starts.push(t);
                    t += (interval as f64 * (1.0 + self.range(-jitter..=jitter))) as i64;
                }
                (ip, 8883, interval, jitter)
            }
        };
        self.planted = Some(Planted {
            id: format!("{}-{behaviour:?}", self.id),
            behaviour,
            device_id: self.id.clone(),
            platform: self.platform().to_string(),
            app_id: app.to_string(),
            dst_ip,
            dst_port: port,
            first: starts.first().copied().unwrap_or(first),
            last: starts.last().copied().unwrap_or(first),
            sessions: starts.len(),
            interval_ms: interval,
            jitter,
        });
    }
}
