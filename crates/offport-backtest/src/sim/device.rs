//! One simulated device: its random stream, its records, and the day it lives.

use super::*;

pub(super) struct Device<'a> {
    pub(super) config: &'a FleetConfig,
    pub(super) index: usize,
    pub(super) id: String,
    pub(super) ios: bool,
    pub(super) supervised: bool,
    pub(super) developer: bool,
    pub(super) usage_stats: bool,
    pub(super) infection: Option<Behaviour>,
    pub(super) apps: Vec<AppSpec>,
    pub(super) rng: std::cell::RefCell<ChaCha8Rng>,
    pub(super) out: Vec<RawLine>,
    pub(super) sessions: u64,
    pub(super) planted: Option<Planted>,
    /// Uses of the device (unlocked, an app in the foreground), so that no two overlap.
    pub(super) busy: Vec<(EpochMillis, EpochMillis)>,
    /// The benign behaviour whose sessions are being written (`planted` for a plant).
    pub(super) doing: &'static str,
    /// `app:port` of every session written, with the behaviour that wrote it.
    pub(super) made: BTreeSet<(String, &'static str)>,
}

impl<'a> Device<'a> {
    pub(super) fn new(config: &'a FleetConfig, index: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(
            config
                .seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(index as u64),
        );
        let ios = rng.random_bool(config.ios_share);
        let supervised = rng.random_bool(config.supervised_share);
        let developer = rng.random_bool(config.developer_share);
        let infected = !developer && rng.random_bool(config.infected_share);
        let usage_stats = !ios && rng.random_bool(0.25);
        let catalog = if ios { IOS_APPS } else { ANDROID_APPS };
        // Every device has a browser and a mail app; the rest at random.
        let mut apps: Vec<AppSpec> = catalog
            .iter()
            .filter(|a| matches!(a.kind, AppKind::Browser))
            .take(1)
            .copied()
            .collect();
        let mut others: Vec<AppSpec> = catalog
            .iter()
            .filter(|a| !matches!(a.kind, AppKind::Browser))
            .copied()
            .collect();
        while apps.len() < config.apps_per_device.max(1) && !others.is_empty() {
            let pick = rng.random_range(0..others.len());
            apps.push(others.remove(pick));
        }
        let id = format!("sim-{}-{index:05}", if ios { "ios" } else { "android" });
        Self {
            config,
            index,
            id,
            ios,
            supervised,
            developer,
            usage_stats,
            infection: None,
            apps,
            rng: std::cell::RefCell::new(rng),
            out: Vec::new(),
            sessions: 0,
            planted: None,
            busy: Vec::new(),
            doing: "unattributed",
            made: BTreeSet::new(),
        }
        .infected(infected)
    }

    /// A number from `range` (the generator is borrowed only inside, so calls nest freely).
    pub(super) fn range<T, R>(&self, range: R) -> T
    where
        T: rand::distr::uniform::SampleUniform,
        R: rand::distr::uniform::SampleRange<T>,
    {
        self.rng.borrow_mut().random_range(range)
    }

    /// True with probability `p`.
    pub(super) fn chance(&self, p: f64) -> bool {
        self.rng.borrow_mut().random_bool(p)
    }

    pub(super) fn infected(mut self, infected: bool) -> Self {
        if infected {
            // Behaviours in turn over the device numbers, so every one is planted evenly.
            let turn =
                (self.index as u64).wrapping_add(self.config.seed) % Behaviour::ALL.len() as u64;
            self.infection = Behaviour::ALL.get(turn as usize).copied();
        }
        self
    }

    pub(super) fn platform(&self) -> &'static str {
        platform_name(self.ios)
    }

    pub(super) fn push(&mut self, stream: Stream, time: EpochMillis, value: String) {
        self.out.push(RawLine {
            stream,
            device_id: self.id.clone(),
            time,
            value,
        });
    }

    /// An EDR event: offport EDR JSON, or a UsageStats row where the device reports that way
    /// and the kind has a UsageEvents code.
    pub(super) fn edr(&mut self, kind: &str, app: Option<&str>, at: EpochMillis) {
        if self.usage_stats {
            let code = match kind {
                "APP_FOREGROUND" => Some(1),
                "APP_BACKGROUND" => Some(2),
                "USER_INTERACTION" => Some(7),
                "DEVICE_LOCKED" => Some(17),
                "DEVICE_UNLOCKED" => Some(18),
                "FOREGROUND_SERVICE_START" => Some(19),
                "FOREGROUND_SERVICE_STOP" => Some(20),
                _ => None,
            };
            if let Some(code) = code {
                let package = app.unwrap_or("android");
                let class = app.map(|a| format!("{a}.MainActivity")).unwrap_or_default();
                let row = format!("{},{at},{code},{package},{class}", self.id);
                self.push(Stream::Edr, at, row);
                return;
            }
        }
        let mut record = json!({
            "device_id": self.id,
            "platform": self.platform(),
            "kind": kind,
            "event_time": at,
            "event_id": format!("{}-e{}", self.id, self.out.len()),
        });
        if let (Some(app), Some(map)) = (app, record.as_object_mut()) {
            map.insert("app_id".into(), json!(app));
        }
        self.push(Stream::Edr, at, record.to_string());
    }

    pub(super) fn background_execution(&mut self, app: &str, at: EpochMillis) {
        let kind = if self.ios {
            "BACKGROUND_REFRESH"
        } else {
            "WORK_MANAGER"
        };
        self.edr(kind, Some(app), at);
    }

    /// A session record in offport session JSON.
    #[allow(clippy::too_many_arguments, reason = "a session has that many parts")]
    pub(super) fn session(
        &mut self,
        app: &str,
        at: EpochMillis,
        duration_ms: i64,
        dst_ip: &str,
        dst_port: i32,
        label: &str,
        bytes: (i64, i64),
        extra: Value,
    ) {
        let run_end = self.config.end();
        if at >= run_end {
            return;
        }
        // A session still open when the run ends is reported then, as open.
        let still_open = at + duration_ms > run_end;
        let duration_ms = duration_ms.min(run_end - at);
        self.sessions += 1;
        if self.doing != "planted" {
            self.made.insert((format!("{app}:{dst_port}"), self.doing));
        }
        let transport = if matches!(label, "dns" | "Zoom" | "stun" | "quic") {
            "UDP"
        } else {
            "TCP"
        };
        let mut record = json!({
            "session_id": format!("{}-s{}", self.id, self.sessions),
            "device_id": self.id,
            "platform": self.platform(),
            "app_id": app,
            "start_time": at,
            "duration_ms": duration_ms,
            "dst_ip": dst_ip,
            "dst_port": dst_port,
            "transport": transport,
            "src_ip": format!("10.{}.{}.{}", 100 + self.index / 65_000, (self.index / 250) % 250, self.index % 250 + 2),
            "src_port": 32_768 + (self.sessions * 7_919 % 28_000) as i64,
            "bytes_out": bytes.0.max(0),
            "bytes_in": bytes.1.max(0),
        });
        if let Some(map) = record.as_object_mut() {
            if !label.is_empty() {
                map.insert("sensor_protocol".into(), json!(label));
            }
            if let Value::Object(extra) = extra {
                map.extend(extra);
            }
            if still_open {
                map.insert("still_open".into(), json!(true));
            }
        }
        // A sensor reports a session when it ends.
        self.push(Stream::Proxy, at + duration_ms, record.to_string());
    }

    pub(super) fn vary(&self, base: f64, relative: f64) -> i64 {
        let factor = 1.0 + self.range(-relative..=relative);
        (base * factor).round() as i64
    }

    pub(super) fn pick_host(&self, spec: &AppSpec) -> &'static str {
        let i = self.range(0..spec.hosts.len().max(1));
        spec.hosts.get(i).copied().unwrap_or("cdn.example.com")
    }

    pub(super) fn tls(
        &mut self,
        app: &str,
        at: EpochMillis,
        duration_ms: i64,
        host: &str,
        port: i32,
        bytes: (i64, i64),
    ) {
        let ip = address_of(host);
        self.session(
            app,
            at,
            duration_ms,
            &ip,
            port,
            "tls",
            bytes,
            json!({"sni": host}),
        );
    }

    /// TLS to `host` at an address of the caller's choosing.
    #[allow(clippy::too_many_arguments, reason = "a session has that many parts")]
    pub(super) fn tls_to(
        &mut self,
        app: &str,
        at: EpochMillis,
        duration_ms: i64,
        ip: &str,
        host: &str,
        port: i32,
        bytes: (i64, i64),
    ) {
        self.session(
            app,
            at,
            duration_ms,
            ip,
            port,
            "tls",
            bytes,
            json!({"sni": host}),
        );
    }

    pub(super) fn dns(&mut self, app: &str, at: EpochMillis, qname: &str) {
        let out = 30 + qname.len() as i64 + self.range(0..12);
        let answer = self.range(40..420);
        self.session(
            app,
            at,
            self.range(8..90),
            "10.8.0.1",
            53,
            "dns",
            (out, out + answer),
            json!({"dns_qname": qname, "dns_qtype": if self.chance(0.7) { "A" } else { "AAAA" }}),
        );
    }

    pub(super) fn generate(&mut self) {
        let start = self.config.start;
        let end = self.config.end();
        // The MDM inventory, before anything else.
        let infected_app = self.infection.map(|b| self.malicious_app(b));
        // The library draws from a stream of its own, so the rest of the device is as it
        // would be without it.
        let own = self.rng.replace(ChaCha8Rng::seed_from_u64(
            self.config
                .seed
                .wrapping_mul(0xD1B5_4A32_D192_ED03)
                .wrapping_add(self.index as u64),
        ));
        let library = self.library_picks();
        let library_rng = self.rng.replace(own);
        let mut inventory: Vec<Value> = self
            .apps
            .iter()
            .map(|a| a.id)
            .chain(library.iter().map(|(_, app)| *app))
            .collect::<BTreeSet<&str>>()
            .into_iter()
            .map(|app| json!({"app_id": app, "managed": true}))
            .collect();
        inventory.push(json!({"app_id": if self.ios { "com.apple.apsd" } else { "com.google.android.gms" }, "managed": true}));
        if let Some(app) = &infected_app {
            // Only the WebSocket case's app is known to the MDM (as unmanaged); the others are
            // sideloaded and absent from the inventory.
            if self.infection == Some(Behaviour::WebsocketUnmanaged8081) {
                inventory.push(json!({"app_id": app, "managed": false}));
            }
        }
        let mdm = json!({
            "device_id": self.id,
            "platform": self.platform(),
            "supervised": self.supervised,
            "device_group": if self.developer { "developers" } else { "staff" },
            "serial_number": format!("SIM{:08}", self.index),
            "event_time": start - 10 * MINUTE,
            "inventory_complete": true,
            "apps": inventory,
        });
        self.push(Stream::Mdm, start - 10 * MINUTE, mdm.to_string());
        self.edr("DEVICE_LOCKED", None, start - 5 * MINUTE);

        self.use_periods(start, end);
        self.push_channel(start, end);
        let apps = self.apps.clone();
        for spec in &apps {
            match spec.kind {
                AppKind::Sync | AppKind::Mail => self.background_sync(spec, start, end),
                AppKind::WhatsApp => self.persistent(spec.id, "g.whatsapp.net", 5222, start, end),
                AppKind::Vpn => {
                    let relay = format!("198.18.{}.{}", self.index % 200, 10 + self.index % 3);
                    self.vpn(spec.id, &relay, start, end);
                }
                _ => {}
            }
        }
        self.night_updates(start, end);
        let own = self.rng.replace(library_rng);
        for (behaviour, app) in library {
            self.doing = behaviour.name;
            self.library(behaviour, app, start, end);
        }
        self.rng.replace(own);
        if let (Some(behaviour), Some(app)) = (self.infection, infected_app) {
            self.plant(behaviour, &app, start, end);
        }
    }
}
