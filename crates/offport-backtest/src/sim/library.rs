//! The benign-behaviour library: common mobile behaviours that legitimately use non-standard
//! ports or machine-timed traffic, each with the source that says it is normal. The simulator
//! gives every device a share of them, written (through [`crate::sensors`]) in the sensors'
//! formats, so that a backtest measures precision on traffic built to tempt the rules.
//!
//! Each entry names its apps per platform, the flow (destination, port, transport, what the
//! sensor's dissector calls it, what name it sees), the rhythm (a channel held open, timed
//! background work, use in the foreground, night transfers, now-and-then checks) and where the
//! numbers come from. A false finding is attributed to a behaviour by its app and port
//! ([`crate::sim::Truth::benign`]), so a report can say which behaviour tempted which rule.
//!
//! Sensor labels are nDPI's protocol names as PCAPdroid exports them (`TLS`, `MQTT`, `NTP`,
//! `SIP`, `WireGuard`, ...); [`crate::sensors`] turns them into Zeek `service` and Suricata
//! `app_proto` values where those sensors have an analyzer, and into nothing where they do not.

use serde_json::json;

use super::{address_of, Device, DAY, HOUR, MINUTE};
use offport_core::model::EpochMillis;

/// Where a flow goes.
#[derive(Debug, Clone, Copy)]
pub enum To {
    /// The address of [`Flow::host`] (see [`address_of`]).
    Host,
    /// A host in an operator's range: the prefix's first three octets and a per-device fourth.
    Range(&'static str),
    /// A device on the home or office LAN, 192.168.x.`n`.
    Lan(u8),
    /// A fixed address (a multicast group, a public resolver).
    Fixed(&'static str),
}

/// What name of the destination the sensor sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The TLS/QUIC server name.
    Sni,
    /// The HTTP Host.
    Host,
    /// A DNS query name.
    Query,
    /// Nothing.
    Nothing,
}

/// One flow of a behaviour.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    /// What the sensor's dissector calls it (nDPI name; empty when nothing is recognised).
    pub label: &'static str,
    /// UDP (else TCP).
    pub udp: bool,
    /// Destination port; with `port_span` > 0, a port in `port..port + port_span` per session.
    pub port: i32,
    /// Width of the destination port range (0: `port` only).
    pub port_span: i32,
    /// The destination's name.
    pub host: &'static str,
    /// Its address.
    pub to: To,
    /// What the sensor sees of the name.
    pub seen: Seen,
    /// Typical bytes out and in per session.
    pub bytes: (f64, f64),
    /// Relative spread of the sizes (0.02: nearly fixed, 0.9: anything).
    pub spread: f64,
    /// Session duration range in seconds.
    pub seconds: (i64, i64),
}

/// When a behaviour's sessions happen.
#[derive(Debug, Clone, Copy)]
pub enum Rhythm {
    /// Sessions held open back to back all day in the background, each `minutes` long.
    Channel {
        /// Session length range in minutes.
        minutes: (i64, i64),
    },
    /// Machine-timed background work every `period` seconds (one of them, per device),
    /// jittered by up to `jitter` of it; `wake` when a background job or refresh runs first.
    Periodic {
        /// Periods to choose from, in seconds.
        period: &'static [i64],
        /// Jitter as a share of the period.
        jitter: f64,
        /// A WorkManager job (Android) or background refresh (iOS) right before each session.
        wake: bool,
    },
    /// The user opens the app `per_day` times for `minutes`, sessions every `every` seconds
    /// while it is in the foreground with interaction.
    InUse {
        /// Uses per day.
        per_day: (u32, u32),
        /// Length of a use in minutes.
        minutes: (i64, i64),
        /// Seconds between sessions during use.
        every: (i64, i64),
    },
    /// Media playing with the screen locked (an Android media foreground service, iOS
    /// background audio): `per_day` sessions of listening for `minutes`, a segment fetch every
    /// `every` seconds, machine-timed by the player's buffer.
    Playback {
        /// Listening sessions per day.
        per_day: (u32, u32),
        /// Length of one in minutes.
        minutes: (i64, i64),
        /// Seconds between segment fetches.
        every: (i64, i64),
    },
    /// A few transfers between 01:00 and 05:00 while charging (a foreground service).
    Nightly {
        /// Transfers per night.
        transfers: (u32, u32),
    },
    /// Checks at random times (network changes, app launches), in the background.
    Now {
        /// Checks per day.
        per_day: (u32, u32),
    },
}

/// A benign behaviour of the library.
#[derive(Debug, Clone, Copy)]
pub struct BenignBehaviour {
    /// Short name (the report's key).
    pub name: &'static str,
    /// What it is.
    pub what: &'static str,
    /// Where its ports, destinations and timing come from.
    pub source: &'static str,
    /// The app on Android, when the behaviour exists there.
    pub android: Option<&'static str>,
    /// The app on iOS, when the behaviour exists there.
    pub ios: Option<&'static str>,
    /// Share of the platform's devices that show it.
    pub share: f64,
    /// The flow.
    pub flow: Flow,
    /// Its rhythm.
    pub rhythm: Rhythm,
}

const fn tcp(label: &'static str, port: i32, host: &'static str, to: To, seen: Seen) -> Flow {
    Flow {
        label,
        udp: false,
        port,
        port_span: 0,
        host,
        to,
        seen,
        bytes: (1_500.0, 20_000.0),
        spread: 0.6,
        seconds: (1, 20),
    }
}

const fn udp(label: &'static str, port: i32, host: &'static str, to: To, seen: Seen) -> Flow {
    Flow {
        udp: true,
        ..tcp(label, port, host, to, seen)
    }
}

impl Flow {
    const fn sizes(self, out: f64, inn: f64, spread: f64) -> Self {
        Self {
            bytes: (out, inn),
            spread,
            ..self
        }
    }

    const fn lasting(self, first: i64, last: i64) -> Self {
        Self {
            seconds: (first, last),
            ..self
        }
    }

    const fn ports(self, span: i32) -> Self {
        Self {
            port_span: span,
            ..self
        }
    }
}

#[allow(clippy::too_many_arguments, reason = "one line per library entry")]
const fn behaviour(
    name: &'static str,
    what: &'static str,
    source: &'static str,
    android: Option<&'static str>,
    ios: Option<&'static str>,
    share: f64,
    flow: Flow,
    rhythm: Rhythm,
) -> BenignBehaviour {
    BenignBehaviour {
        name,
        what,
        source,
        android,
        ios,
        share,
        flow,
        rhythm,
    }
}

const fn periodic(period: &'static [i64], jitter: f64, wake: bool) -> Rhythm {
    Rhythm::Periodic {
        period,
        jitter,
        wake,
    }
}

const fn in_use(per_day: (u32, u32), minutes: (i64, i64), every: (i64, i64)) -> Rhythm {
    Rhythm::InUse {
        per_day,
        minutes,
        every,
    }
}

use Seen::{Host as H, Nothing as N, Query as Q, Sni as S};

/// The library. The behaviours the simulator's own generator writes (browsing, push channels
/// and wake-ups, WhatsApp chat, Zoom and Teams meetings, background sync, the corporate proxy
/// and VPN relay, developer tooling, store updates) are in [`super::CORE_BEHAVIOURS`].
pub const LIBRARY: &[BenignBehaviour] = &[
    // --- Time, name resolution, connectivity ---
    behaviour("ntp-time-sync", "clock synchronisation, 48-byte NTP requests at a fixed poll interval",
        "RFC 5905 (poll 2^6-2^10 s); IANA ntp 123/udp; time.android.com, time.apple.com",
        Some("android"), Some("com.apple.timed"), 0.9,
        udp("NTP", 123, "time.android.com", To::Host, N).sizes(48.0, 48.0, 0.0).lasting(0, 1),
        periodic(&[1_024, 2_048], 0.02, false)),
    behaviour("private-dns-dot", "Android Private DNS: DNS over TLS to the configured resolver",
        "RFC 7858 (domain-s 853/tcp); Android 9+ Private DNS (developer.android.com, 'DNS over TLS')",
        Some("com.android.networkstack"), None, 0.3,
        tcp("DoH_DoT", 853, "dns.google", To::Fixed("8.8.4.4"), S).sizes(600.0, 1_400.0, 0.4).lasting(30, 600),
        Rhythm::Channel { minutes: (5, 30) }),
    behaviour("doh-browser", "a browser resolving through DNS over HTTPS while in use",
        "RFC 8484; Mozilla Trusted Recursive Resolver (mozilla.cloudflare-dns.com:443)",
        Some("org.mozilla.firefox"), Some("org.mozilla.ios.Firefox"), 0.15,
        tcp("TLS", 443, "mozilla.cloudflare-dns.com", To::Host, S).sizes(400.0, 900.0, 0.2).lasting(1, 60),
        in_use((2, 6), (3, 15), (10, 60))),
    behaviour("captive-portal-check", "connectivity checks on every network change (HTTP 204)",
        "AOSP NetworkMonitor (connectivitycheck.gstatic.com/generate_204); Apple captive.apple.com",
        Some("com.google.android.networkstack"), Some("com.apple.captiveagent"), 0.95,
        tcp("HTTP", 80, "connectivitycheck.gstatic.com", To::Host, H).sizes(180.0, 120.0, 0.02).lasting(0, 1),
        Rhythm::Now { per_day: (4, 20) }),
    // --- Local discovery and casting ---
    behaviour("mdns-discovery", "Bonjour / Cast discovery queries to the mDNS group",
        "RFC 6762; IANA mdns 5353/udp to 224.0.0.251",
        Some("com.google.android.apps.chromecast.app"), Some("com.apple.mDNSResponder"), 0.5,
        udp("MDNS", 5353, "_googlecast._tcp.local", To::Fixed("224.0.0.251"), Q).sizes(80.0, 0.0, 0.2).lasting(0, 1),
        periodic(&[120, 300], 0.3, false)),
    behaviour("ssdp-discovery", "UPnP device discovery (M-SEARCH) to the SSDP group",
        "UPnP Device Architecture 2.0 (239.255.255.250:1900/udp)",
        Some("com.sonos.acr2"), Some("com.sonos.SonosController"), 0.2,
        udp("SSDP", 1900, "", To::Fixed("239.255.255.250"), N).sizes(140.0, 0.0, 0.1).lasting(0, 3),
        in_use((1, 4), (2, 10), (30, 120))),
    behaviour("google-cast", "casting to a Chromecast on the LAN (CastV2 over TLS)",
        "Google Cast: TCP 8008-8009 to the receiver on the local network (support.google.com/chromecast/answer/6279377)",
        Some("com.google.android.youtube"), Some("com.google.ios.youtube"), 0.15,
        tcp("TLS", 8009, "", To::Lan(40), N).sizes(9_000.0, 7_000.0, 0.5).lasting(300, 3_000),
        in_use((1, 2), (10, 50), (600, 1_200))),
    behaviour("airplay", "AirPlay to an Apple TV on the LAN",
        "Apple 'TCP and UDP ports used by Apple software products' (support.apple.com/en-us/103229): AirPlay 7000",
        None, Some("com.apple.mediaremoted"), 0.15,
        tcp("HTTP", 7000, "", To::Lan(41), N).sizes(20_000.0, 4_000.0, 0.5).lasting(300, 3_000),
        in_use((1, 2), (10, 50), (600, 1_200))),
    behaviour("sonos-control", "a speaker app controlling players over their local HTTP API",
        "Sonos 'Configure your firewall to work with Sonos': TCP 1400 and 1443 on the LAN",
        Some("com.sonos.acr2"), Some("com.sonos.SonosController"), 0.2,
        tcp("HTTP", 1400, "", To::Lan(42), N).sizes(700.0, 3_000.0, 0.5).lasting(0, 3),
        in_use((1, 4), (2, 10), (5, 40))),
    // --- IoT ---
    behaviour("mqtt-iot-tls", "a smart-home app's MQTT channel over TLS to its cloud broker",
        "IANA secure-mqtt 8883/tcp; AWS IoT Core 'Protocols, port mappings, and authentication' (MQTT 8883)",
        Some("com.tuya.smart"), Some("com.tuya.smartiot"), 0.15,
        tcp("TLS", 8883, "a1x2y3z4-ats.iot.eu-west-1.amazonaws.com", To::Host, S).sizes(8_000.0, 12_000.0, 0.5),
        Rhythm::Channel { minutes: (30, 180) }),
    behaviour("mqtt-home-lan", "Home Assistant's companion app to the home MQTT broker",
        "IANA mqtt 1883/tcp; Home Assistant MQTT integration (broker on the LAN)",
        Some("io.homeassistant.companion.android"), Some("io.robbie.HomeAssistant"), 0.05,
        tcp("MQTT", 1883, "", To::Lan(10), N).sizes(3_000.0, 9_000.0, 0.5),
        Rhythm::Channel { minutes: (20, 120) }),
    // --- Mail, calendar, contacts ---
    behaviour("imaps-idle", "a mail client holding IMAP IDLE over TLS, renewed before 29 minutes",
        "RFC 2177 (IDLE, re-issue within 29 min); IANA imaps 993/tcp",
        Some("com.fsck.k9"), Some("com.readdle.smartemail"), 0.1,
        tcp("IMAPS", 993, "imap.gmail.com", To::Host, S).sizes(2_500.0, 4_000.0, 0.3).lasting(1_500, 1_740),
        Rhythm::Channel { minutes: (25, 29) }),
    behaviour("smtp-submission", "sending mail through message submission with STARTTLS",
        "RFC 6409 (submission 587/tcp); RFC 8314",
        Some("com.fsck.k9"), Some("com.readdle.smartemail"), 0.1,
        tcp("SMTP", 587, "smtp.gmail.com", To::Host, N).sizes(30_000.0, 2_000.0, 0.9).lasting(1, 10),
        in_use((1, 5), (2, 10), (60, 300))),
    behaviour("exchange-activesync", "ActiveSync Ping long-polls: each request hangs for the heartbeat interval",
        "[MS-ASCMD] Ping command, HeartbeatInterval 60-3540 s (learn.microsoft.com)",
        Some("com.samsung.android.email.provider"), Some("com.apple.dataaccess.dataaccessd"), 0.2,
        tcp("TLS", 443, "outlook.office365.com", To::Host, S).sizes(1_100.0, 600.0, 0.03).lasting(900, 900),
        periodic(&[900], 0.01, false)),
    behaviour("caldav-sync", "calendar sync (CalDAV PROPFIND) on the sync adapter's schedule",
        "RFC 4791; DAVx5 periodic sync (WorkManager, 15 min minimum); iOS fetch schedule 15/30/60 min",
        Some("at.bitfire.davdroid"), Some("com.apple.CalendarAgent"), 0.15,
        tcp("TLS", 443, "caldav.fastmail.com", To::Host, S).sizes(1_400.0, 2_600.0, 0.04).lasting(1, 3),
        periodic(&[900, 1_800], 0.1, true)),
    behaviour("contacts-sync", "Google contacts sync adapter",
        "Android SyncAdapter periodic sync (developer.android.com, 'Run a sync adapter')",
        Some("com.google.android.syncadapters.contacts"), None, 0.6,
        tcp("TLS", 443, "people-pa.googleapis.com", To::Host, S).sizes(2_000.0, 5_000.0, 0.3).lasting(1, 5),
        periodic(&[3_600], 0.15, true)),
    // --- Device management and platform services ---
    behaviour("mdm-checkin", "the MDM agent's scheduled check-in",
        "Intune 'devices check in about every 8 hours' plus app-protection every 30 min (learn.microsoft.com)",
        Some("com.microsoft.windowsintune.companyportal"), Some("com.microsoft.CompanyPortal"), 0.5,
        tcp("TLS", 443, "fef.msub05.manage.microsoft.com", To::Host, S).sizes(3_200.0, 5_600.0, 0.05).lasting(1, 4),
        periodic(&[1_800], 0.05, true)),
    behaviour("play-services-checkin", "Google Play services check-in and SafetyNet/Play Integrity calls",
        "Google Play services (android.clients.google.com checkin, www.googleapis.com)",
        Some("com.google.android.gms"), None, 0.95,
        tcp("TLS", 443, "android.clients.google.com", To::Host, S).sizes(4_000.0, 2_500.0, 0.4).lasting(1, 4),
        periodic(&[3_600, 7_200], 0.2, false)),
    behaviour("os-update-check", "the OS update client's check and night download",
        "Apple software update (mesu.apple.com, updates.cdn-apple.com); Android OTA (android.googleapis.com)",
        Some("com.google.android.gms.update"), Some("com.apple.softwareupdateservicesd"), 0.4,
        tcp("TLS", 443, "mesu.apple.com", To::Host, S).sizes(6_000.0, 300_000_000.0, 0.9).lasting(60, 1_200),
        Rhythm::Nightly { transfers: (1, 2) }),
    behaviour("samsung-push", "Samsung Push Service channel",
        "Samsung Push Service: TCP 5223 to *.push.samsungosp.com (Samsung Knox network requirements)",
        Some("com.sec.spp.push"), None, 0.25,
        tcp("TLS", 5223, "apn.push.samsungosp.com", To::Host, S).sizes(20_000.0, 40_000.0, 0.5),
        Rhythm::Channel { minutes: (60, 240) }),
    behaviour("huawei-push", "Huawei Push Kit channel",
        "HUAWEI Push Kit: TCP 5223 and 443 to *.push.dbankcloud.com (developer.huawei.com, Push Kit FAQ)",
        Some("com.huawei.hwid"), None, 0.05,
        tcp("TLS", 5223, "grs.push.dbankcloud.com", To::Host, S).sizes(20_000.0, 40_000.0, 0.5),
        Rhythm::Channel { minutes: (60, 240) }),
    // --- Analytics and SDK heartbeats ---
    behaviour("analytics-batch", "an analytics SDK's hourly batch upload from a game",
        "Firebase Analytics: events batched and uploaded about once an hour (firebase.google.com/docs/analytics)",
        Some("com.king.candycrushsaga"), Some("com.midasplayer.apps.candycrushsaga"), 0.3,
        tcp("TLS", 443, "app-measurement.com", To::Host, S).sizes(2_200.0, 400.0, 0.35).lasting(0, 2),
        periodic(&[3_600], 0.1, true)),
    behaviour("sdk-config-poll", "a remote-config / feature-flag SDK polling while the app lives",
        "Firebase Remote Config fetch interval (default 12 h, apps set minutes); LaunchDarkly polling mode",
        Some("com.duolingo"), Some("com.duolingo.DuolingoMobile"), 0.3,
        tcp("TLS", 443, "firebaseremoteconfig.googleapis.com", To::Host, S).sizes(1_300.0, 3_800.0, 0.03).lasting(0, 2),
        periodic(&[900, 1_800], 0.05, true)),
    behaviour("fitness-sync", "a wearable's companion app syncing in the background",
        "Garmin Connect (connectapi.garmin.com) background sync; Android WorkManager periodic work",
        Some("com.garmin.android.apps.connectmobile"), Some("com.garmin.connect.mobile"), 0.15,
        tcp("TLS", 443, "connectapi.garmin.com", To::Host, S).sizes(9_000.0, 4_000.0, 0.7).lasting(1, 20),
        periodic(&[900, 1_800], 0.25, true)),
    // --- Messaging, voice and conferencing ---
    behaviour("telegram-mtproto", "Telegram's MTProto connection on an alternative port",
        "Telegram: MTProto over TCP 443, 80 and 5222 to 149.154.160.0/20 (core.telegram.org/mtproto)",
        Some("org.thunderdog.challegram"), Some("ph.telegra.Telegraph"), 0.1,
        tcp("Telegram", 5222, "", To::Range("149.154.167"), N).sizes(30_000.0, 90_000.0, 0.6),
        Rhythm::Channel { minutes: (30, 240) }),
    behaviour("signal-chat", "Signal's authenticated WebSocket to its chat service",
        "Signal (chat.signal.org:443)",
        Some("org.thoughtcrime.securesms"), Some("org.whispersystems.signal"), 0.1,
        tcp("TLS", 443, "chat.signal.org", To::Host, S).sizes(6_000.0, 12_000.0, 0.6),
        Rhythm::Channel { minutes: (20, 120) }),
    behaviour("whatsapp-call", "a WhatsApp voice call relayed over STUN/TURN",
        "nDPI WhatsAppCall; IANA stun 3478/udp; Meta 157.240.0.0/16",
        Some("com.whatsapp"), Some("net.whatsapp.WhatsApp"), 0.3,
        udp("STUN", 3478, "", To::Range("157.240.22"), N).sizes(1_500_000.0, 1_500_000.0, 0.6).lasting(60, 1_200),
        in_use((0, 2), (2, 20), (3_000, 3_000))),
    behaviour("google-meet-media", "Google Meet media to Google's STUN/media ports",
        "Google Meet 'Prepare your network': UDP 19302-19309 to 74.125.250.0/24 and 142.250.82.0/24",
        Some("com.google.android.apps.tachyon"), Some("com.google.meetings"), 0.15,
        udp("STUN", 19305, "", To::Range("74.125.250"), N).ports(5).sizes(20_000_000.0, 40_000_000.0, 0.4).lasting(900, 3_000),
        in_use((0, 1), (20, 55), (4_000, 4_000))),
    behaviour("webex-media", "Webex meeting media over its media port",
        "Cisco 'Network Requirements for Webex Services': UDP 9000 (media), 5004",
        Some("com.cisco.webex.meetings"), Some("com.webex.meeting"), 0.1,
        udp("RTP", 9000, "", To::Range("170.72.0"), N).sizes(20_000_000.0, 40_000_000.0, 0.4).lasting(900, 3_000),
        in_use((0, 1), (20, 55), (4_000, 4_000))),
    behaviour("facetime-call", "a FaceTime call's media",
        "Apple 'Use Apple products on enterprise networks' (support.apple.com/en-us/101555): UDP 16393-16402 to 17.0.0.0/8",
        None, Some("com.apple.facetime"), 0.3,
        udp("RTP", 16393, "", To::Range("17.252.0"), N).ports(9).sizes(8_000_000.0, 8_000_000.0, 0.5).lasting(60, 1_800),
        in_use((0, 2), (2, 30), (3_000, 3_000))),
    behaviour("sip-register", "a softphone's SIP registration refresh over UDP",
        "RFC 3261 (REGISTER refresh before Expires; softphones use 60-600 s); IANA sip 5060/udp",
        Some("org.linphone"), Some("com.zoiper.zoiperiphone"), 0.05,
        udp("SIP", 5060, "", To::Range("185.45.152"), N).sizes(650.0, 480.0, 0.01).lasting(0, 1),
        periodic(&[600], 0.0, false)),
    behaviour("sip-tls-softphone", "a softphone's signalling over SIP/TLS",
        "RFC 3261 / RFC 5630 (sips 5061/tcp)",
        Some("com.bria.voip"), Some("com.counterpath.bria"), 0.05,
        tcp("TLS", 5061, "sip.provider.example", To::Host, S).sizes(5_000.0, 5_000.0, 0.5),
        Rhythm::Channel { minutes: (60, 240) }),
    behaviour("discord-voice", "Discord voice over its RTC port range",
        "Discord 'Voice connection issues': UDP 50000-65535 to its media servers",
        Some("com.discord"), Some("com.hammerandchisel.discord"), 0.1,
        udp("Discord", 50_001, "", To::Range("66.22.196"), N).ports(14_000).sizes(5_000_000.0, 9_000_000.0, 0.5).lasting(300, 3_000),
        in_use((0, 1), (10, 60), (4_000, 4_000))),
    // --- Music, video, games ---
    behaviour("spotify-ap", "Spotify's access-point connection while music plays",
        "Spotify access points on TCP 4070, 443 and 80 (ap.spotify.com resolver; nDPI Spotify)",
        Some("com.spotify.music"), Some("com.spotify.client"), 0.3,
        tcp("Spotify", 4070, "", To::Range("35.186.224"), N).sizes(4_000.0, 3_500_000.0, 0.3).lasting(60, 240),
        in_use((1, 3), (20, 60), (150, 260))),
    behaviour("music-locked-playback", "music playing on a locked phone: audio segments fetched on the player's buffer clock, same size each",
        "YouTube Music audio from rrN---sn-XXXX.googlevideo.com (QUIC 443); Android media playback foreground service (developer.android.com, 'Background playback with a MediaSessionService')",
        Some("com.google.android.apps.youtube.music"), Some("com.google.ios.youtubemusic"), 0.25,
        udp("QUIC", 443, "rr2---sn-4g5ednsl.googlevideo.com", To::Host, S).sizes(1_200.0, 480_000.0, 0.03).lasting(1, 4),
        Rhythm::Playback { per_day: (1, 3), minutes: (20, 90), every: (28, 32) }),
    behaviour("youtube-video", "video segments over QUIC from Google's CDN with generated-looking names",
        "YouTube media from rrN---sn-XXXX.googlevideo.com (QUIC, 443/udp)",
        Some("com.google.android.youtube"), Some("com.google.ios.youtube"), 0.6,
        udp("QUIC", 443, "rr4---sn-5hne6nzk.googlevideo.com", To::Host, S).sizes(3_000.0, 2_500_000.0, 0.5).lasting(5, 30),
        in_use((1, 3), (5, 40), (8, 30))),
    behaviour("netflix-video", "video from Netflix Open Connect appliances",
        "Netflix Open Connect (ipv4-cXXX-<site>-ix.1.oca.nflxvideo.net, TLS 443)",
        Some("com.netflix.mediaclient"), Some("com.netflix.Netflix"), 0.2,
        tcp("TLS", 443, "ipv4-c071-fra002-ix.1.oca.nflxvideo.net", To::Host, S).sizes(4_000.0, 8_000_000.0, 0.5).lasting(30, 240),
        in_use((0, 2), (20, 90), (40, 200))),
    behaviour("game-supercell", "a Supercell game's session on its game port",
        "Supercell support: games connect on TCP 9339 (game.clashofclans.com)",
        Some("com.supercell.clashofclans"), Some("com.supercell.magic"), 0.1,
        tcp("", 9339, "", To::Range("3.121.6"), N).sizes(40_000.0, 200_000.0, 0.6).lasting(120, 1_800),
        in_use((1, 4), (5, 30), (1_800, 1_800))),
    behaviour("game-photon", "a multiplayer game on Photon's UDP ports",
        "Photon Engine 'TCP and UDP port numbers': UDP 5055-5058",
        Some("com.innersloth.spacemafia"), Some("com.innersloth.amongus"), 0.1,
        udp("", 5056, "", To::Range("5.188.124"), N).sizes(300_000.0, 600_000.0, 0.6).lasting(300, 1_500),
        in_use((0, 2), (10, 40), (2_000, 2_000))),
    // --- VPN and remote access ---
    behaviour("wireguard-vpn", "a WireGuard tunnel with persistent keepalives",
        "WireGuard (wireguard.com/quickstart: ListenPort 51820, PersistentKeepalive 25)",
        Some("com.wireguard.android"), Some("com.wireguard.ios"), 0.05,
        udp("WireGuard", 51_820, "", To::Range("185.213.154"), N).sizes(5_000_000.0, 30_000_000.0, 0.7),
        Rhythm::Channel { minutes: (120, 480) }),
    behaviour("openvpn", "an OpenVPN client's tunnel",
        "IANA openvpn 1194/udp",
        Some("net.openvpn.openvpn"), Some("net.openvpn.connect.app"), 0.05,
        udp("OpenVPN", 1194, "", To::Range("193.138.218"), N).sizes(5_000_000.0, 30_000_000.0, 0.7),
        Rhythm::Channel { minutes: (120, 480) }),
    behaviour("ipsec-ikev2", "an always-on IKEv2 VPN (NAT traversal)",
        "RFC 7296 / RFC 3948; IANA ipsec-nat-t 4500/udp",
        Some("org.strongswan.android"), Some("com.apple.NEIKEv2Provider"), 0.05,
        udp("IPSec", 4500, "", To::Range("198.19.0"), N).sizes(5_000_000.0, 30_000_000.0, 0.7),
        Rhythm::Channel { minutes: (120, 480) }),
    behaviour("rdp-client", "remote desktop to an office PC",
        "IANA ms-wbt-server 3389/tcp; Microsoft Remote Desktop client",
        Some("com.microsoft.rdc.androidx"), Some("com.microsoft.rdc.ios"), 0.05,
        tcp("RDP", 3389, "", To::Range("10.30.4"), N).sizes(200_000.0, 4_000_000.0, 0.6).lasting(300, 3_000),
        in_use((0, 2), (10, 60), (4_000, 4_000))),
    behaviour("ssh-client", "an SSH client to servers",
        "IANA ssh 22/tcp (Termius)",
        Some("com.server.auditor.ssh.client"), Some("com.termius.ios"), 0.05,
        tcp("SSH", 22, "", To::Range("10.30.8"), N).sizes(20_000.0, 80_000.0, 0.8).lasting(60, 1_800),
        in_use((0, 3), (5, 40), (4_000, 4_000))),
    // --- Backups ---
    behaviour("photo-backup", "photo library backup at night on charge",
        "Google Photos backup (photos.googleapis.com); iCloud Photos",
        Some("com.google.android.apps.photos"), Some("com.apple.cloudphotod"), 0.5,
        tcp("TLS", 443, "photos.googleapis.com", To::Host, S).sizes(80_000_000.0, 200_000.0, 0.8).lasting(60, 1_800),
        Rhythm::Nightly { transfers: (1, 4) }),
];

impl Device<'_> {
    /// The library behaviours this device shows, with their app.
    pub(super) fn library_picks(&self) -> Vec<(&'static BenignBehaviour, &'static str)> {
        LIBRARY
            .iter()
            .filter_map(|b| {
                let app = if self.ios { b.ios } else { b.android }?;
                self.chance(b.share).then_some((b, app))
            })
            .collect()
    }

    /// Writes the sessions of `behaviour` for `app` between `start` and `end`.
    pub(super) fn library(
        &mut self,
        behaviour: &BenignBehaviour,
        app: &str,
        start: EpochMillis,
        end: EpochMillis,
    ) {
        match behaviour.rhythm {
            Rhythm::Channel { minutes } => {
                let mut t = start + self.range(0..30) * MINUTE;
                while t < end {
                    let length = self.range(minutes.0..=minutes.1) * MINUTE;
                    self.library_session(&behaviour.flow, app, t, length);
                    t += length + self.range(1_000..60_000);
                }
            }
            Rhythm::Periodic {
                period,
                jitter,
                wake,
            } => {
                let period = period
                    .get(self.range(0..period.len()))
                    .copied()
                    .unwrap_or(900)
                    * 1_000;
                let mut t = start + self.range(0..period);
                while t < end {
                    let at = if wake {
                        self.background_execution(app, t);
                        t + self.range(300..2_500)
                    } else {
                        t
                    };
                    let duration = self.own_duration(&behaviour.flow);
                    self.library_session(&behaviour.flow, app, at, duration);
                    let step = if jitter > 0.0 {
                        period as f64 * (1.0 + self.range(-jitter..=jitter))
                    } else {
                        period as f64
                    };
                    t += step as i64;
                }
            }
            Rhythm::InUse {
                per_day,
                minutes,
                every,
            } => {
                let days = ((end - start) as f64 / DAY as f64).max(1.0 / 24.0);
                let uses = (f64::from(self.range(per_day.0..=per_day.1)) * days).round() as u32;
                for _ in 0..uses {
                    let length = self.range(minutes.0..=minutes.1) * MINUTE;
                    let Some(from) = self.free_slot(start, end, length) else {
                        continue;
                    };
                    self.edr("DEVICE_UNLOCKED", None, from);
                    self.edr("USER_INTERACTION", None, from + 700);
                    self.edr("APP_FOREGROUND", Some(app), from + 1_200);
                    let mut t = from + 2_000;
                    while t < from + length - 3_000 {
                        self.edr("USER_INTERACTION", None, t);
                        let left = from + length - 3_000 - t;
                        let duration = self.own_duration(&behaviour.flow).min(left);
                        self.library_session(&behaviour.flow, app, t + 300, duration);
                        t += self.range(every.0..=every.1) * 1_000;
                    }
                    self.edr("APP_BACKGROUND", Some(app), from + length - 2_000);
                    self.edr("DEVICE_LOCKED", None, from + length);
                }
            }
            Rhythm::Playback {
                per_day,
                minutes,
                every,
            } => {
                let days = ((end - start) as f64 / DAY as f64).max(1.0 / 24.0);
                let plays = (f64::from(self.range(per_day.0..=per_day.1)) * days).round() as u32;
                for _ in 0..plays {
                    let length = self.range(minutes.0..=minutes.1) * MINUTE;
                    let Some(from) = self.free_slot(start, end, length) else {
                        continue;
                    };
                    // Started in the app, then the screen goes off and the music goes on.
                    self.edr("DEVICE_UNLOCKED", None, from);
                    self.edr("USER_INTERACTION", None, from + 600);
                    self.edr("APP_FOREGROUND", Some(app), from + 1_000);
                    self.edr("FOREGROUND_SERVICE_START", Some(app), from + 4_000);
                    self.edr("APP_BACKGROUND", Some(app), from + 8_000);
                    self.edr("DEVICE_LOCKED", None, from + 10_000);
                    let mut t = from + 5_000;
                    while t < from + length {
                        let duration = self.own_duration(&behaviour.flow);
                        self.library_session(&behaviour.flow, app, t, duration);
                        t += self.range(every.0..=every.1) * 1_000;
                    }
                    self.edr("FOREGROUND_SERVICE_STOP", Some(app), from + length);
                }
            }
            Rhythm::Nightly { transfers } => {
                let mut day = start - start.rem_euclid(DAY);
                while day < end {
                    let at = day + HOUR + self.range(0..4 * HOUR);
                    if at >= start && at < end {
                        self.edr("FOREGROUND_SERVICE_START", Some(app), at);
                        let mut t = at + 2_000;
                        for _ in 0..self.range(transfers.0..=transfers.1) {
                            let length = self.own_duration(&behaviour.flow);
                            self.library_session(&behaviour.flow, app, t, length);
                            t += length + self.range(1_000..20_000);
                        }
                        self.edr("FOREGROUND_SERVICE_STOP", Some(app), t);
                    }
                    day += DAY;
                }
            }
            Rhythm::Now { per_day } => {
                let days = ((end - start) as f64 / DAY as f64).max(1.0 / 24.0);
                let checks = (f64::from(self.range(per_day.0..=per_day.1)) * days).round() as u32;
                let mut times: Vec<EpochMillis> = (0..checks)
                    .map(|_| start + self.range(0..end - start))
                    .collect();
                times.sort_unstable();
                for at in times {
                    let duration = self.own_duration(&behaviour.flow);
                    self.library_session(&behaviour.flow, app, at, duration);
                }
            }
        }
    }

    /// A start for a use of `length` that overlaps no other use of the device, in waking hours.
    fn free_slot(
        &mut self,
        start: EpochMillis,
        end: EpochMillis,
        length: i64,
    ) -> Option<EpochMillis> {
        for _ in 0..12 {
            let from = start + self.range(0..(end - start - length).max(1));
            let hour = from.rem_euclid(DAY) / HOUR;
            // A minute of margin either side: the lock of one use is not inside another.
            let clear = self
                .busy
                .iter()
                .all(|&(a, b)| from + length + MINUTE <= a || b + MINUTE <= from);
            if (7..23).contains(&hour) && clear {
                self.busy.push((from, from + length));
                return Some(from);
            }
        }
        None
    }

    /// How long one session of `flow` lasts when nothing else bounds it.
    fn own_duration(&self, flow: &Flow) -> i64 {
        self.range(flow.seconds.0..=flow.seconds.1) * 1_000 + self.range(0..1_000)
    }

    /// One session of `flow` at `at`, `duration` long.
    fn library_session(&mut self, flow: &Flow, app: &str, at: EpochMillis, duration: i64) {
        let ip = match flow.to {
            To::Host => address_of(flow.host),
            To::Range(prefix) => format!("{prefix}.{}", 10 + self.index % 200),
            To::Lan(n) => format!("192.168.{}.{n}", self.index % 200),
            To::Fixed(ip) => ip.to_string(),
        };
        let port = if flow.port_span > 0 {
            flow.port + self.range(0..flow.port_span)
        } else {
            flow.port
        };
        let bytes = if flow.spread > 0.0 {
            (
                self.vary(flow.bytes.0, flow.spread),
                self.vary(flow.bytes.1, flow.spread),
            )
        } else {
            (flow.bytes.0 as i64, flow.bytes.1 as i64)
        };
        let mut extra = json!({"transport": if flow.udp { "UDP" } else { "TCP" }});
        if let Some(map) = extra.as_object_mut() {
            match flow.seen {
                Seen::Sni if !flow.host.is_empty() => {
                    map.insert("sni".into(), json!(flow.host));
                }
                Seen::Host if !flow.host.is_empty() => {
                    map.insert("http_host".into(), json!(flow.host));
                    map.insert("http_method".into(), json!("GET"));
                }
                Seen::Query if !flow.host.is_empty() => {
                    map.insert("dns_qname".into(), json!(flow.host));
                    map.insert("dns_qtype".into(), json!("PTR"));
                }
                _ => {}
            }
        }
        self.session(app, at, duration, &ip, port, flow.label, bytes, extra);
    }
}
