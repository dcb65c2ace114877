//! Benchmark of client-address attribution (`normalize.sources`): lookups per second with a
//! one-entry map and with 100,000 leases (IPv4 /32s and IPv6 /128s inside their pools), and,
//! for comparison, the same lookups as a scan of the 100,000 entries, longest prefix first.
//! Prints numbers; asserts only that the map and the scan agree.
//!
//! Run: `cargo bench -p offport-core --bench sources`.
#![allow(clippy::expect_used)]

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::IpAddr;
use std::time::Instant;

use offport_core::normalize::proxy::sources::{SourceMap, SourceMapping};

fn mapping(network: String, device: String) -> SourceMapping {
    SourceMapping {
        network: network.parse().expect("network"),
        device_id: device,
        platform: None,
        app_id: None,
        from: None,
        until: None,
    }
}

fn leases(n: u32) -> Vec<SourceMapping> {
    let mut entries = vec![
        mapping("10.0.0.0/8".into(), "pool-v4".into()),
        mapping("fd00::/16".into(), "pool-v6".into()),
    ];
    for i in 0..n / 2 {
        entries.push(mapping(
            format!("10.{}.{}.{}/32", (i >> 16) & 255, (i >> 8) & 255, i & 255),
            format!("android-{i:06}"),
        ));
        entries.push(mapping(format!("fd00::{i:x}/128"), format!("ios-{i:06}")));
    }
    entries
}

fn main() {
    let lookups = 1_000_000_u32;
    let addresses: Vec<String> = (0..lookups)
        .map(|i| {
            let lease = (i * 7_919) % 60_000;
            if i % 2 == 0 {
                format!(
                    "10.{}.{}.{}",
                    (lease >> 16) & 255,
                    (lease >> 8) & 255,
                    lease & 255
                )
            } else {
                format!("fd00::{lease:x}")
            }
        })
        .collect();
    let one = SourceMap::new(vec![mapping("10.8.0.12/32".into(), "android-7f3a".into())]);
    let entries = leases(100_000);
    let large = SourceMap::new(entries.clone());
    for round in 1..=3 {
        for (name, map) in [("1 entry", &one), ("100,000 entries", &large)] {
            let started = Instant::now();
            let found = addresses
                .iter()
                .filter(|a| map.lookup(a, Some(1_795_168_800_000)).is_some())
                .count();
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "round {round}: {name:>16}: {lookups} lookups in {seconds:.3} s = {:.0} lookups/s ({found} attributed)",
                f64::from(lookups) / seconds
            );
        }
    }
    // The scan it replaces: every entry, most specific first, on a sample (it is slow).
    let mut sorted = entries.clone();
    sorted.sort_by_key(|e| std::cmp::Reverse(e.network.prefix_len()));
    let sample = addresses.get(..2_000).expect("2,000 addresses");
    let started = Instant::now();
    for address in sample {
        let ip: IpAddr = address.parse().expect("address");
        let scanned = sorted.iter().find(|e| e.network.contains(&ip));
        assert_eq!(
            scanned.map(|e| &e.device_id),
            large
                .lookup(address, Some(1_795_168_800_000))
                .map(|e| &e.device_id),
            "{address}"
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "scan of 100,000 entries (the replaced lookup): {} lookups in {seconds:.3} s = {:.0} lookups/s",
        sample.len(),
        sample.len() as f64 / seconds
    );
}
