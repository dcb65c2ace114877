//! The apps of the simulated fleet, their kinds and the hosts they talk to.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AppKind {
    Browser,
    Sync,
    Messaging,
    Mail,
    Zoom,
    Teams,
    Corp,
    Vpn,
    WhatsApp,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct AppSpec {
    pub(super) id: &'static str,
    pub(super) kind: AppKind,
    pub(super) hosts: &'static [&'static str],
}

pub(super) const fn app(
    id: &'static str,
    kind: AppKind,
    hosts: &'static [&'static str],
) -> AppSpec {
    AppSpec { id, kind, hosts }
}

pub(super) const ANDROID_APPS: &[AppSpec] = &[
    app(
        "com.android.chrome",
        AppKind::Browser,
        &[
            "www.google.com",
            "en.wikipedia.org",
            "www.bbc.co.uk",
            "news.ycombinator.com",
            "www.reddit.com",
        ],
    ),
    app(
        "com.google.android.gm",
        AppKind::Mail,
        &["gmail.googleapis.com", "mail.google.com"],
    ),
    app(
        "com.microsoft.office.outlook",
        AppKind::Mail,
        &["outlook.office365.com"],
    ),
    app(
        "com.microsoft.teams",
        AppKind::Teams,
        &["teams.microsoft.com"],
    ),
    app(
        "us.zoom.videomeetings",
        AppKind::Zoom,
        &["zoom.us", "us05web.zoom.us"],
    ),
    app("com.whatsapp", AppKind::WhatsApp, &["g.whatsapp.net"]),
    app(
        "org.telegram.messenger",
        AppKind::Messaging,
        &["venus.web.telegram.org"],
    ),
    app(
        "com.slack",
        AppKind::Messaging,
        &["wss-primary.slack.com", "edgeapi.slack.com"],
    ),
    app(
        "com.accuweather.android",
        AppKind::Sync,
        &["api.accuweather.com"],
    ),
    app(
        "com.google.android.apps.maps",
        AppKind::Sync,
        &["maps.googleapis.com"],
    ),
    app(
        "com.spotify.music",
        AppKind::Sync,
        &["spclient.wg.spotify.com"],
    ),
    app(
        "com.dropbox.android",
        AppKind::Sync,
        &["api.dropboxapi.com"],
    ),
    app(
        "com.corp.intranet",
        AppKind::Corp,
        &["intranet.corp.example"],
    ),
    app("com.paloaltonetworks.globalprotect", AppKind::Vpn, &[]),
];

pub(super) const IOS_APPS: &[AppSpec] = &[
    app(
        "com.apple.mobilesafari",
        AppKind::Browser,
        &[
            "www.apple.com",
            "en.wikipedia.org",
            "www.nytimes.com",
            "www.theguardian.com",
            "duckduckgo.com",
        ],
    ),
    app(
        "com.apple.mobilemail",
        AppKind::Mail,
        &["imap.mail.me.com", "p42-mail.icloud.com"],
    ),
    app(
        "com.microsoft.Office.Outlook",
        AppKind::Mail,
        &["outlook.office365.com"],
    ),
    app(
        "com.microsoft.skype.teams",
        AppKind::Teams,
        &["teams.microsoft.com"],
    ),
    app(
        "us.zoom.videomeetings",
        AppKind::Zoom,
        &["zoom.us", "us05web.zoom.us"],
    ),
    app(
        "net.whatsapp.WhatsApp",
        AppKind::WhatsApp,
        &["g.whatsapp.net"],
    ),
    app(
        "com.tinyspeck.chatlyio",
        AppKind::Messaging,
        &["wss-primary.slack.com", "edgeapi.slack.com"],
    ),
    app(
        "com.apple.weather",
        AppKind::Sync,
        &["weatherkit.apple.com"],
    ),
    app(
        "com.spotify.client",
        AppKind::Sync,
        &["spclient.wg.spotify.com"],
    ),
    app(
        "com.getdropbox.Dropbox",
        AppKind::Sync,
        &["api.dropboxapi.com"],
    ),
    app("com.google.Maps", AppKind::Sync, &["maps.googleapis.com"]),
    app(
        "com.corp.intranet",
        AppKind::Corp,
        &["intranet.corp.example"],
    ),
    app("com.paloaltonetworks.globalprotect", AppKind::Vpn, &[]),
];

/// A stable address for a host name, in its operator's real ranges where it matters (Apple
/// 17.0.0.0/8, Microsoft media 52.112.0.0/14, Google 142.250.0.0/15, Meta 157.240.0.0/16).
pub fn address_of(host: &str) -> String {
    let digest = Sha256::digest(host.as_bytes());
    let byte = |i: usize| digest.get(i).copied().unwrap_or(0);
    let (a, b) = if host.ends_with("apple.com")
        || host.ends_with("icloud.com")
        || host.ends_with("me.com")
    {
        (17, byte(0) % 200 + 20)
    } else if host.ends_with("microsoft.com") {
        (52, 112 + byte(0) % 4)
    } else if host.ends_with("google.com") || host.ends_with("googleapis.com") {
        (142, 250 + byte(0) % 2)
    } else if host.ends_with("whatsapp.net") {
        (157, 240)
    } else if host.ends_with("corp.example") {
        (10, 20)
    } else {
        (34 + byte(0) % 60, byte(1))
    };
    format!("{a}.{b}.{}.{}", byte(2), byte(3) % 250 + 2)
}

pub(super) fn platform_name(ios: bool) -> &'static str {
    if ios {
        "IOS"
    } else {
        "ANDROID"
    }
}
