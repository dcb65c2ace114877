//! Every OCSF record a simulated fleet's findings make, checked against the official OCSF
//! 1.4.0 Detection Finding JSON Schema (host profile): the planted behaviours of every kind on
//! both platforms, new findings and their updates, with and without an attributed app. The
//! end-to-end test checks the records the scorer service writes the same way.

use offport_backtest::replay::{Replay, ReplayOptions};
use offport_backtest::sensors::sensor_formats;
use offport_backtest::sim::{simulate, FleetConfig};
use offport_core::ocsf::detection_finding;

#[test]
fn every_record_of_a_simulated_fleet_is_valid_ocsf() -> anyhow::Result<()> {
    let config = FleetConfig {
        devices: 80,
        hours: 6,
        infected_share: 0.5,
        ..FleetConfig::default()
    };
    let fleet = simulate(&config).map_err(anyhow::Error::msg)?;
    let sensors = sensor_formats(&fleet).map_err(anyhow::Error::msg)?;
    let mut options = ReplayOptions::with_baseline_yaml(&fleet.baseline_yaml, config.start)?;
    options.proxy.sources =
        offport_core::normalize::proxy::sources::SourceMap::new(sensors.sources.clone());
    let mut replay = Replay::new(options);
    for record in sensors.raw_lines() {
        replay.push(
            record.stream,
            Some(&record.device_id),
            record.value.as_bytes(),
        );
    }
    let outcome = replay.finish();
    let findings = outcome.findings;
    let analytics: std::collections::BTreeSet<String> = findings
        .iter()
        .map(|f| format!("{:?}", f.analytic))
        .collect();
    assert_eq!(analytics.len(), 3, "every analytic raised: {analytics:?}");
    assert!(
        findings.iter().any(|f| f.revision > 0),
        "no update among them"
    );
    for finding in &findings {
        let event = detection_finding(finding, "0.1.0");
        let invalid = offport_tests::ocsf_violations(&event);
        assert!(
            invalid.is_empty(),
            "{}:{}: {invalid:#?}",
            finding.finding_id,
            finding.revision
        );
    }
    println!("{} OCSF records valid", findings.len());
    Ok(())
}
