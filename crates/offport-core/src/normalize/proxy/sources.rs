//! Which device (and app) a client address belongs to, for sensors that see addresses only
//! (Zeek, Suricata): a VPN concentrator's address pool per device, or a per-app VPN's pool per
//! app. Configured as `normalize.sources`; the longest matching prefix wins.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// One mapping: client addresses in `network` are `device_id` (and `app_id`, for per-app VPN).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceMapping {
    /// Client address block, e.g. `10.8.0.12/32` or `fd00:8::/64`.
    pub network: IpNet,
    /// The device those addresses are.
    pub device_id: String,
    /// `android` or `ios`, when known.
    #[serde(default)]
    pub platform: Option<String>,
    /// The app, when the block is a per-app VPN's.
    #[serde(default)]
    pub app_id: Option<String>,
}

/// The configured mappings, most specific first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceMap {
    entries: Vec<SourceMapping>,
}

impl SourceMap {
    /// A map of `entries`.
    pub fn new(mut entries: Vec<SourceMapping>) -> Self {
        entries.sort_by_key(|e| std::cmp::Reverse(e.network.prefix_len()));
        Self { entries }
    }

    /// The mapping of a client address, when one covers it.
    pub fn lookup(&self, address: &str) -> Option<&SourceMapping> {
        let ip: IpAddr = address
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?;
        self.entries.iter().find(|e| e.network.contains(&ip))
    }

    /// No mappings configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_wins_for_v4_and_v6() {
        let map = SourceMap::new(vec![
            SourceMapping {
                network: "10.8.0.0/16".parse().unwrap(),
                device_id: "pool".into(),
                platform: None,
                app_id: None,
            },
            SourceMapping {
                network: "10.8.0.12/32".parse().unwrap(),
                device_id: "android-7f3a".into(),
                platform: Some("android".into()),
                app_id: None,
            },
            SourceMapping {
                network: "fd00:8::/64".parse().unwrap(),
                device_id: "android-7f3a".into(),
                platform: None,
                app_id: Some("com.example.weather".into()),
            },
        ]);
        assert_eq!(map.lookup("10.8.0.12").unwrap().device_id, "android-7f3a");
        assert_eq!(map.lookup("10.8.3.3").unwrap().device_id, "pool");
        let v6 = map.lookup("fd00:8::12").unwrap();
        assert_eq!(v6.app_id.as_deref(), Some("com.example.weather"));
        assert!(map.lookup("192.0.2.1").is_none());
        assert!(map.lookup("not an address").is_none());
    }
}
