//! What a benign device does: use periods, meetings, push channels, background sync,
//! persistent sessions, VPNs and night updates.

use super::*;

impl Device<'_> {
    /// Unlock, interact, use one or two foreground apps, lock; about every other waking hour.
    pub(super) fn use_periods(&mut self, start: EpochMillis, end: EpochMillis) {
        let foreground: Vec<AppSpec> = self
            .apps
            .iter()
            .filter(|a| {
                matches!(
                    a.kind,
                    AppKind::Browser
                        | AppKind::Messaging
                        | AppKind::Mail
                        | AppKind::Corp
                        | AppKind::WhatsApp
                )
            })
            .copied()
            .collect();
        let mut hour_start = start - start.rem_euclid(HOUR);
        let mut meeting_done_on = -1;
        while hour_start < end {
            let hour_of_day = (hour_start.rem_euclid(DAY)) / HOUR;
            let day = hour_start.div_euclid(DAY);
            let waking = (7..23).contains(&hour_of_day);
            if waking && hour_start >= start {
                let meeting_app = self
                    .apps
                    .iter()
                    .find(|a| matches!(a.kind, AppKind::Zoom | AppKind::Teams))
                    .copied();
                if let Some(spec) = meeting_app
                    .filter(|_| meeting_done_on != day && (10..16).contains(&hour_of_day))
                {
                    if self.chance(0.3) || hour_of_day == 15 {
                        meeting_done_on = day;
                        self.meeting(&spec, hour_start + self.range(0..10) * MINUTE);
                        hour_start += HOUR;
                        continue;
                    }
                }
                if self.chance(0.6) && !foreground.is_empty() {
                    let at = hour_start + self.range(0..40) * MINUTE + self.range(0..60_000);
                    let length = self.range(3..20) * MINUTE;
                    let pick = self.range(0..foreground.len());
                    if let Some(spec) = foreground.get(pick).copied() {
                        self.use_period(&spec, at, (at + length).min(end));
                    }
                }
            }
            hour_start += HOUR;
        }
    }

    pub(super) fn use_period(&mut self, spec: &AppSpec, from: EpochMillis, to: EpochMillis) {
        self.busy.push((from, to));
        let doing = match spec.kind {
            AppKind::Browser => "web-browsing",
            AppKind::Mail => "mail-sync",
            AppKind::Corp => "corp-proxy",
            _ => "messaging",
        };
        self.edr("DEVICE_UNLOCKED", None, from);
        self.edr("USER_INTERACTION", None, from + 800);
        self.edr("APP_FOREGROUND", Some(spec.id), from + 1_500);
        let mut t = from + 3_000;
        while t < to - 5_000 {
            self.edr("USER_INTERACTION", None, t);
            let host = if self.developer && self.chance(0.15) {
                "dev-tools"
            } else {
                self.pick_host(spec)
            };
            self.doing = if host == "dev-tools" {
                "developer-tooling"
            } else {
                doing
            };
            match (spec.kind, host) {
                (_, "dev-tools") => {
                    // Local tooling: a dev server, a debugger's WebSocket, SSH to a build box.
                    let port = [3000, 8000, 8081, 9229]
                        .get(self.range(0..4))
                        .copied()
                        .unwrap_or(3000);
                    let server = format!("10.50.{}.{}", self.index % 200, 20 + port % 7);
                    let label = if port == 9229 { "websocket" } else { "http" };
                    let bytes = (self.vary(900.0, 0.5), self.vary(40_000.0, 0.8));
                    self.session(
                        spec.id,
                        t + 400,
                        self.range(200..30_000),
                        &server,
                        port,
                        label,
                        bytes,
                        json!({"http_host": format!("{server}:{port}"), "http_method": "GET"}),
                    );
                    if self.chance(0.3) {
                        let bytes = (self.vary(4_000.0, 0.5), self.vary(9_000.0, 0.5));
                        self.session(
                            spec.id,
                            t + 900,
                            self.range(60_000..900_000),
                            &server,
                            2222,
                            "ssh",
                            bytes,
                            json!({}),
                        );
                    }
                }
                (AppKind::Corp, _) => {
                    // Intranet through the explicit enterprise proxy.
                    let bytes = (self.vary(700.0, 0.4), self.vary(30_000.0, 0.9));
                    self.session(
                        spec.id,
                        t + 400,
                        self.range(150..4_000),
                        "10.20.0.10",
                        8080,
                        "http",
                        bytes,
                        json!({"http_host": host, "http_method": "GET"}),
                    );
                }
                (AppKind::Browser, _) => {
                    self.dns(spec.id, t + 100, host);
                    if self.chance(0.1) {
                        let bytes = (self.vary(500.0, 0.3), self.vary(15_000.0, 0.9));
                        let ip = address_of(host);
                        self.session(
                            spec.id,
                            t + 300,
                            self.range(100..2_000),
                            &ip,
                            80,
                            "http",
                            bytes,
                            json!({"http_host": host, "http_method": "GET"}),
                        );
                    } else if self.chance(0.3) {
                        let bytes = (self.vary(2_500.0, 0.5), self.vary(120_000.0, 0.9));
                        let ip = address_of(host);
                        self.session(
                            spec.id,
                            t + 300,
                            self.range(1_000..60_000),
                            &ip,
                            443,
                            "quic",
                            bytes,
                            json!({"sni": host}),
                        );
                    } else {
                        let bytes = (self.vary(1_800.0, 0.6), self.vary(80_000.0, 0.95));
                        let duration = self.range(300..45_000);
                        self.tls(spec.id, t + 300, duration, host, 443, bytes);
                    }
                }
                _ => {
                    let bytes = (self.vary(1_200.0, 0.6), self.vary(9_000.0, 0.9));
                    let duration = self.range(200..20_000);
                    self.tls(spec.id, t + 300, duration, host, 443, bytes);
                }
            }
            t += self.range(20_000..120_000);
        }
        self.edr("APP_BACKGROUND", Some(spec.id), to - 2_000);
        self.edr("DEVICE_LOCKED", None, to);
    }

    /// A meeting: foreground, interacting, media over UDP for its whole length.
    pub(super) fn meeting(&mut self, spec: &AppSpec, from: EpochMillis) {
        let length = self.range(25..60) * MINUTE;
        self.busy.push((from, from + length + 30_000));
        self.doing = if spec.kind == AppKind::Zoom {
            "zoom-meeting"
        } else {
            "teams-meeting"
        };
        self.edr("DEVICE_UNLOCKED", None, from);
        self.edr("APP_FOREGROUND", Some(spec.id), from + 1_000);
        let host = self.pick_host(spec);
        let bytes = (self.vary(3_000.0, 0.4), self.vary(12_000.0, 0.4));
        self.tls(spec.id, from + 2_000, length, host, 443, bytes);
        let media = (self.vary(25_000_000.0, 0.3), self.vary(60_000_000.0, 0.3));
        if spec.kind == AppKind::Zoom {
            let ip = format!("144.195.{}.{}", self.index % 250, 10 + self.index % 40);
            self.session(
                spec.id,
                from + 4_000,
                length - 10_000,
                &ip,
                8801,
                "Zoom",
                media,
                json!({}),
            );
        } else {
            let ip = format!("52.113.{}.{}", self.index % 250, 20 + self.index % 30);
            self.session(
                spec.id,
                from + 4_000,
                length - 10_000,
                &ip,
                3478,
                "stun",
                media,
                json!({}),
            );
        }
        let mut t = from + 30_000;
        while t < from + length {
            self.edr("USER_INTERACTION", None, t);
            t += self.range(60_000..240_000);
        }
        self.edr("APP_BACKGROUND", Some(spec.id), from + length);
        self.edr("DEVICE_LOCKED", None, from + length + 30_000);
    }

    /// The platform push channel held open for hours, with push wake-ups of messaging and mail
    /// apps (a background job, then a short fetch on 443).
    pub(super) fn push_channel(&mut self, start: EpochMillis, end: EpochMillis) {
        let (app, host, port) = if self.ios {
            ("com.apple.apsd", "courier.push.apple.com", 5223)
        } else {
            ("com.google.android.gms", "mtalk.google.com", 5228)
        };
        self.doing = if self.ios { "apns-push" } else { "fcm-push" };
        let mut t = start + self.range(0..10 * MINUTE);
        while t < end {
            let length = self.range(60..240) * MINUTE;
            let bytes = (self.vary(40_000.0, 0.5), self.vary(90_000.0, 0.6));
            self.tls(app, t, length, host, port, bytes);
            t += length + self.range(1_000..30_000);
        }
        let receivers: Vec<AppSpec> = self
            .apps
            .iter()
            .filter(|a| matches!(a.kind, AppKind::Messaging | AppKind::Mail))
            .copied()
            .collect();
        if receivers.is_empty() {
            return;
        }
        self.doing = "push-wakeup";
        let mut t = start + self.range(5..60) * MINUTE;
        while t < end {
            let pick = self.range(0..receivers.len());
            if let Some(spec) = receivers.get(pick).copied() {
                self.background_execution(spec.id, t);
                let host = self.pick_host(&spec);
                let bytes = (self.vary(900.0, 0.5), self.vary(6_000.0, 0.9));
                self.tls(
                    spec.id,
                    t + self.range(300..2_500),
                    self.range(300..5_000),
                    host,
                    443,
                    bytes,
                );
            }
            t += self.range(20..90) * MINUTE;
        }
    }

    /// Regular but jittered background sync with varying sizes.
    pub(super) fn background_sync(&mut self, spec: &AppSpec, start: EpochMillis, end: EpochMillis) {
        self.doing = if spec.kind == AppKind::Mail {
            "mail-sync"
        } else {
            "background-sync"
        };
        let period = [15, 30, 60].get(self.range(0..3)).copied().unwrap_or(30) * MINUTE;
        let jitter = self.range(0.10..0.25);
        let mut t = start + self.range(0..period);
        let base_out = self.range(300.0..2_000.0);
        let base_in = self.range(2_000.0..60_000.0);
        while t < end {
            self.background_execution(spec.id, t);
            let host = self.pick_host(spec);
            if self.chance(0.3) {
                self.dns(spec.id, t + 200, host);
            }
            let bytes = (self.vary(base_out, 0.4), self.vary(base_in, 0.8));
            let duration = self.range(200..8_000);
            self.tls(
                spec.id,
                t + self.range(500..3_000),
                duration,
                host,
                443,
                bytes,
            );
            let step = period as f64 * (1.0 + self.range(-jitter..=jitter));
            t += step as i64;
        }
    }

    /// Long-lived sessions to one host (WhatsApp's chat channel).
    pub(super) fn persistent(
        &mut self,
        app: &str,
        host: &str,
        port: i32,
        start: EpochMillis,
        end: EpochMillis,
    ) {
        self.doing = "whatsapp-chat";
        let mut t = start + self.range(0..30) * MINUTE;
        while t < end {
            let length = self.range(60..360) * MINUTE;
            let bytes = (self.vary(60_000.0, 0.6), self.vary(150_000.0, 0.7));
            self.tls(app, t, length, host, port, bytes);
            t += length + self.range(5_000..600_000);
        }
    }

    /// The corporate VPN's relay: long TLS sessions on 8443.
    pub(super) fn vpn(&mut self, app: &str, relay: &str, start: EpochMillis, end: EpochMillis) {
        self.doing = "corp-vpn";
        let mut t = start + self.range(0..60) * MINUTE;
        while t < end {
            let length = self.range(120..480) * MINUTE;
            let bytes = (self.vary(2_000_000.0, 0.7), self.vary(9_000_000.0, 0.7));
            self.session(
                app,
                t,
                length,
                relay,
                8443,
                "tls",
                bytes,
                json!({"sni": "vpn.corp.example"}),
            );
            t += length + self.range(10_000..1_800_000);
        }
    }

    /// App-store updates while charging at night.
    pub(super) fn night_updates(&mut self, start: EpochMillis, end: EpochMillis) {
        let (store, host) = if self.ios {
            ("com.apple.appstored", "iosapps.itunes.apple.com")
        } else {
            ("com.android.vending", "play.googleapis.com")
        };
        self.doing = "store-updates";
        let mut day = start - start.rem_euclid(DAY);
        while day < end {
            let at = day + 2 * HOUR + self.range(0..120) * MINUTE;
            if at >= start && at < end && self.chance(0.5) {
                self.edr("FOREGROUND_SERVICE_START", Some(store), at);
                let mut t = at + 2_000;
                for _ in 0..self.range(1..6) {
                    let bytes = (self.vary(20_000.0, 0.5), self.vary(40_000_000.0, 0.9));
                    let duration = self.range(20_000..300_000);
                    self.tls(store, t, duration, host, 443, bytes);
                    t += duration + self.range(1_000..20_000);
                }
                self.edr("FOREGROUND_SERVICE_STOP", Some(store), t);
            }
            day += DAY;
        }
    }
}
