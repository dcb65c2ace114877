//! `offportctl replay --input` on the sensors' own formats, as an analyst runs it: PCAPdroid
//! exports per device, Zeek and Suricata logs from a tunnel sensor attributed through the
//! configuration's address map, MicroMDM webhooks and Android Management API devices, and
//! UsageStats rows (the raw fixtures of `tests/fixtures/raw`). No broker: the replay runs in
//! the process.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::path::Path;

use anyhow::Result;
use offport_core::model::Finding;
use offport_tests::{fixture_lines, raw_fixture, unique};

/// The address map of the fixtures' tunnel sensor (`tests/fixtures/raw/README.md`).
const CONFIG: &str = "normalize:\n  sources:\n    - {network: 10.8.0.12/32, device_id: android-7f3a, platform: android}\n    - {network: fd00:8::/64, device_id: android-7f3a, platform: android}\n    - {network: 10.8.0.13/32, device_id: ios-91c2, platform: ios}\n";

fn write_lines(path: &Path, lines: &[String]) -> Result<()> {
    std::fs::create_dir_all(path.parent().unwrap())?;
    std::fs::write(path, lines.join("\n") + "\n")?;
    Ok(())
}

/// Runs the replay; returns its stderr and every finding record it wrote.
fn replay(dir: &Path, config: Option<&Path>) -> Result<(String, Vec<Finding>)> {
    let report = dir.join("report");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_offportctl"));
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let output = command
        .args(["replay", "--quiet", "--input"])
        .arg(dir)
        .arg("--report")
        .arg(&report)
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    let findings: Vec<Finding> = std::fs::read_to_string(report.join("findings.jsonl"))?
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Beside them, the same finding records as the OCSF alerts topic carries them: one valid
    // Detection Finding per record, in the same order.
    let ocsf: Vec<serde_json::Value> = std::fs::read_to_string(report.join("findings.ocsf.jsonl"))?
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ocsf.len(), findings.len());
    for (detection, finding) in ocsf.iter().zip(&findings) {
        assert_eq!(
            detection["finding_info"]["uid"].as_str(),
            Some(finding.finding_id.as_str())
        );
        let invalid = offport_tests::ocsf_violations(detection);
        assert!(invalid.is_empty(), "{invalid:?}");
    }
    Ok((stderr, findings))
}

#[test]
fn the_sensors_formats_replay_attributed_and_in_report_time_order() -> Result<()> {
    let dir = std::env::temp_dir().join(unique("replay-sensors"));
    std::fs::create_dir_all(&dir)?;
    // One PCAPdroid export per Android device, named by its device id.
    std::fs::create_dir_all(dir.join("pcapdroid"))?;
    std::fs::write(
        dir.join("pcapdroid/android-7f3a.csv"),
        raw_fixture("pcapdroid.csv"),
    )?;
    // The tunnel sensor's logs, one file per log as Zeek writes them: conn.log sorts first,
    // so only report-time order puts each ssl/http/dns record before its connection.
    for log in ["conn", "ssl", "http", "dns"] {
        write_lines(
            &dir.join(format!("zeek/{log}.log")),
            &fixture_lines(&format!("zeek/{log}.log")),
        )?;
    }
    write_lines(
        &dir.join("suricata/eve.json"),
        &fixture_lines("suricata/eve.json"),
    )?;
    let mdm: Vec<String> = ["mdm/micromdm-webhook.jsonl", "mdm/amapi-devices.jsonl"]
        .into_iter()
        .flat_map(fixture_lines)
        .collect();
    write_lines(&dir.join("mdm.raw"), &mdm)?;
    let usage: Vec<String> = fixture_lines("edr/usagestats.csv")
        .into_iter()
        .skip(1)
        .collect();
    write_lines(&dir.join("edr.raw"), &usage)?;
    let config = dir.join("offport.yaml");
    std::fs::write(&config, CONFIG)?;

    let (said, findings) = replay(&dir, Some(&config))?;
    assert!(said.contains(", 0 dead letters"), "{said}");
    let devices: std::collections::BTreeSet<&str> =
        findings.iter().map(|f| f.device_id.as_str()).collect();
    assert!(devices.contains("android-7f3a"), "{devices:?}\n{said}");
    // The beacon to 203.0.113.45:8443 is named by its SNI: from PCAPdroid's Info column, and
    // from Zeek's ssl.log and Suricata's tls event, which must come before their connection.
    let beacon: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.dst_ip == "203.0.113.45" && f.dst_port == 8443)
        .collect();
    assert!(!beacon.is_empty(), "{said}");
    assert!(
        beacon
            .iter()
            .all(|f| f.dst_host.as_deref() == Some("beacon.wx-telemetry.net")),
        "{:?}",
        beacon.iter().map(|f| &f.dst_host).collect::<Vec<_>>()
    );

    // Without the address map the sensor's records name no device: dead letters, said so.
    let (said, _) = replay(&dir, None)?;
    assert!(!said.contains(", 0 dead letters"), "{said}");
    assert!(said.contains("MissingDeviceId"), "{said}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn without_a_terminal_progress_is_said_in_lines_unless_quiet() -> Result<()> {
    let dir = std::env::temp_dir().join(unique("replay-progress"));
    std::fs::create_dir_all(dir.join("pcapdroid"))?;
    std::fs::write(
        dir.join("pcapdroid/android-7f3a.csv"),
        raw_fixture("pcapdroid.csv"),
    )?;
    // `output()` pipes stderr: the replay sees no terminal, as in CI or a Kubernetes Job.
    let run = |quiet: bool| -> Result<String> {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_offportctl"));
        command.arg("replay");
        if quiet {
            command.arg("--quiet");
        }
        let output = command.arg("--input").arg(&dir).output()?;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        Ok(stderr)
    };
    let said = run(false)?;
    let line = said
        .lines()
        .find(|l| l.contains(" records/s, ETA "))
        .unwrap_or_else(|| panic!("no progress line:\n{said}"));
    assert!(line.contains(" records (100 %)"), "{line}");
    assert!(!said.contains('\r'), "a bar's redraws in a log:\n{said}");
    let quiet = run(true)?;
    assert!(!quiet.contains(" records/s, ETA "), "{quiet}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
