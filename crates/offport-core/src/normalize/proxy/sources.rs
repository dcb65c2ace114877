//! Which device (and app) a client address belongs to, for sensors that see addresses only
//! (Zeek, Suricata): a VPN concentrator's address pool per device, or a per-app VPN's pool per
//! app. Configured as `normalize.sources`; the longest matching prefix in force at the
//! session's start wins. A mapping may hold for a time only (`from`, `until`): DHCP and VPN
//! leases change hands, and a replay of last month must attribute an address to whoever held
//! it then.
//!
//! Single addresses (`/32`, `/128`, a tunnel sensor's leases) are looked up in a hash map, and
//! wider blocks through a prefix trie per address family (`prefix-trie`), so a lookup's cost
//! does not grow with the number of mappings: a map of hundreds of thousands of leases costs
//! what a map of one does.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::model::EpochMillis;
use prefix_trie::PrefixMap;
use rustc_hash::FxHashMap;
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
    /// First instant the mapping holds (RFC 3339 or epoch ms); always when absent.
    #[serde(
        default,
        deserialize_with = "crate::model::optional_epoch_millis_or_rfc3339",
        skip_serializing_if = "Option::is_none"
    )]
    pub from: Option<EpochMillis>,
    /// First instant it no longer holds; for ever when absent.
    #[serde(
        default,
        deserialize_with = "crate::model::optional_epoch_millis_or_rfc3339",
        skip_serializing_if = "Option::is_none"
    )]
    pub until: Option<EpochMillis>,
}

impl SourceMapping {
    /// True when the mapping holds at `at` (a time-bounded mapping does not hold for a session
    /// of unknown time).
    pub fn holds_at(&self, at: Option<EpochMillis>) -> bool {
        match at {
            Some(at) => self.from.is_none_or(|f| f <= at) && self.until.is_none_or(|u| at < u),
            None => self.from.is_none() && self.until.is_none(),
        }
    }
}

/// The configured mappings, by network. Where two mappings name the same network, the first
/// configured wins.
#[derive(Clone, Default)]
pub struct SourceMap {
    /// As configured.
    entries: Vec<SourceMapping>,
    /// Indices into `entries` of single addresses (`/32`, `/128`: a tunnel sensor's leases),
    /// in configuration order. A host route is the longest prefix there is, so one in force
    /// answers a lookup without the trie.
    hosts: FxHashMap<IpAddr, Indices>,
    /// Indices into `entries` by IPv4 network (wider than one address), in configuration order.
    v4: PrefixMap<Ipv4Net, Indices>,
    /// Indices into `entries` by IPv6 network (wider than one address), in configuration order.
    v6: PrefixMap<Ipv6Net, Indices>,
}

/// The indices into `entries` of one network, in configuration order. Nearly always one: held
/// in place, a lookup reads the mapping without first following a vector to its one index.
#[derive(Clone, Debug)]
enum Indices {
    One(usize),
    Many(Vec<usize>),
}

impl Indices {
    fn as_slice(&self) -> &[usize] {
        match self {
            Indices::One(index) => std::slice::from_ref(index),
            Indices::Many(indices) => indices,
        }
    }

    fn push(&mut self, index: usize) {
        match self {
            Indices::One(first) => *self = Indices::Many(vec![*first, index]),
            Indices::Many(indices) => indices.push(index),
        }
    }
}

impl std::fmt::Debug for SourceMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceMap")
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

fn push<P: prefix_trie::Prefix>(map: &mut PrefixMap<P, Indices>, net: P, index: usize) {
    match map.get_mut(&net) {
        Some(indices) => indices.push(index),
        None => {
            map.insert(net, Indices::One(index));
        }
    }
}

impl PartialEq for SourceMap {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Eq for SourceMap {}

impl SourceMap {
    /// A map of `entries`.
    pub fn new(entries: Vec<SourceMapping>) -> Self {
        let mut hosts: FxHashMap<IpAddr, Indices> = FxHashMap::default();
        let mut v4 = PrefixMap::new();
        let mut v6 = PrefixMap::new();
        for (index, entry) in entries.iter().enumerate() {
            // Host bits set in a configured block (`10.8.0.12/16`) name the same block.
            let network = entry.network.trunc();
            if network.prefix_len() == network.max_prefix_len() {
                match hosts.get_mut(&network.addr()) {
                    Some(indices) => indices.push(index),
                    None => {
                        hosts.insert(network.addr(), Indices::One(index));
                    }
                }
                continue;
            }
            match network {
                IpNet::V4(net) => push(&mut v4, net, index),
                IpNet::V6(net) => push(&mut v6, net, index),
            }
        }
        Self {
            entries,
            hosts,
            v4,
            v6,
        }
    }

    /// The mapping of a client address for a session starting at `at`, when one covers it:
    /// the longest matching prefix with a mapping in force then (the first configured of that
    /// prefix's).
    pub fn lookup(&self, address: &str, at: Option<EpochMillis>) -> Option<&SourceMapping> {
        let ip: IpAddr = address
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?;
        let in_force = |indices: &Indices| {
            indices
                .as_slice()
                .iter()
                .filter_map(|i| self.entries.get(*i))
                .find(|e| e.holds_at(at))
        };
        if let Some(host) = self.hosts.get(&ip).and_then(in_force) {
            return Some(host);
        }
        // `cover` walks from the shortest prefix to the longest: the last one in force wins.
        match ip {
            IpAddr::V4(ip) => self
                .v4
                .cover(&Ipv4Net::from(ip))
                .filter_map(|(_, i)| in_force(i))
                .last(),
            IpAddr::V6(ip) => self
                .v6
                .cover(&Ipv6Net::from(ip))
                .filter_map(|(_, i)| in_force(i))
                .last(),
        }
    }

    /// No mappings configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Mappings configured.
    pub fn len(&self) -> usize {
        self.entries.len()
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
                from: None,
                until: None,
            },
            SourceMapping {
                network: "10.8.0.12/32".parse().unwrap(),
                device_id: "android-7f3a".into(),
                platform: Some("android".into()),
                app_id: None,
                from: None,
                until: None,
            },
            SourceMapping {
                network: "fd00:8::/64".parse().unwrap(),
                device_id: "android-7f3a".into(),
                platform: None,
                app_id: Some("com.example.weather".into()),
                from: None,
                until: None,
            },
        ]);
        assert_eq!(
            map.lookup("10.8.0.12", None).unwrap().device_id,
            "android-7f3a"
        );
        assert_eq!(map.lookup("10.8.3.3", None).unwrap().device_id, "pool");
        let v6 = map.lookup("fd00:8::12", None).unwrap();
        assert_eq!(v6.app_id.as_deref(), Some("com.example.weather"));
        assert!(map.lookup("192.0.2.1", None).is_none());
        assert!(map.lookup("not an address", None).is_none());
        assert_eq!(
            map.lookup("[fd00:8::12]", None).unwrap().device_id,
            "android-7f3a"
        );
    }

    fn mapping(network: &str, device: &str) -> SourceMapping {
        SourceMapping {
            network: network.parse().unwrap(),
            device_id: device.into(),
            platform: None,
            app_id: None,
            from: None,
            until: None,
        }
    }

    #[test]
    fn a_lease_belongs_to_whoever_held_it_when_the_session_began() {
        let yaml = "- {network: 10.8.0.0/16, device_id: pool}\n\
                    - {network: 10.8.0.12/32, device_id: alice, until: '2026-11-20T12:00:00Z'}\n\
                    - {network: 10.8.0.12/32, device_id: bob, from: 1795176000000}\n";
        let map = SourceMap::new(serde_yaml_ng::from_str(yaml).unwrap());
        let noon = 1_795_176_000_000; // 2026-11-20T12:00:00Z
        let at = |t: i64| {
            map.lookup("10.8.0.12", Some(t))
                .map(|m| m.device_id.as_str())
        };
        assert_eq!(at(noon - 1), Some("alice"));
        assert_eq!(at(noon), Some("bob"));
        // Between leases (none in force for the /32) the pool answers; so it does for a
        // session of unknown time, which no time-bounded mapping claims.
        let gap = SourceMap::new(serde_yaml_ng::from_str(
            "- {network: 10.8.0.0/16, device_id: pool}\n- {network: 10.8.0.12/32, device_id: carol, from: 100, until: 200}\n",
        ).unwrap());
        assert_eq!(
            gap.lookup("10.8.0.12", Some(150)).unwrap().device_id,
            "carol"
        );
        assert_eq!(
            gap.lookup("10.8.0.12", Some(250)).unwrap().device_id,
            "pool"
        );
        assert_eq!(gap.lookup("10.8.0.12", None).unwrap().device_id, "pool");
        assert!(serde_yaml_ng::from_str::<Vec<SourceMapping>>(
            "- {network: 10.8.0.12/32, device_id: x, from: yesterday}"
        )
        .is_err());
    }

    #[test]
    fn the_first_configured_of_one_network_wins_and_host_bits_name_the_block() {
        let map = SourceMap::new(vec![
            mapping("10.9.0.7/16", "first"),
            mapping("10.9.0.0/16", "second"),
            mapping("10.9.0.7/32", "host"),
        ]);
        assert_eq!(map.lookup("10.9.200.1", None).unwrap().device_id, "first");
        assert_eq!(map.lookup("10.9.0.7", None).unwrap().device_id, "host");
        assert_eq!(map.len(), 3);
    }

    #[test]
    fn a_large_map_answers_as_a_scan_of_it_would() {
        // 20,000 leases of /32s inside two pools, and the pools themselves.
        let mut entries = vec![
            mapping("10.0.0.0/8", "pool-v4"),
            mapping("fd00::/16", "pool-v6"),
        ];
        for n in 0..20_000u32 {
            entries.push(mapping(
                &format!("10.{}.{}.{}/32", (n >> 16) & 255, (n >> 8) & 255, n & 255),
                &format!("d{n}"),
            ));
            entries.push(mapping(&format!("fd00::{n:x}/128"), &format!("v{n}")));
        }
        let map = SourceMap::new(entries.clone());
        let scan = |address: &str| -> Option<String> {
            let ip: IpAddr = address.parse().ok()?;
            entries
                .iter()
                .filter(|e| e.network.contains(&ip))
                .max_by_key(|e| e.network.prefix_len())
                .map(|e| e.device_id.clone())
        };
        for address in [
            "10.0.0.0",
            "10.0.78.31",
            "10.0.255.255",
            "10.1.0.0",
            "10.200.1.1",
            "11.0.0.1",
            "fd00::4e1f",
            "fd00::ffff",
            "fd00::1:0",
            "fe80::1",
        ] {
            assert_eq!(
                map.lookup(address, None).map(|m| m.device_id.clone()),
                scan(address),
                "{address}"
            );
        }
    }
}
