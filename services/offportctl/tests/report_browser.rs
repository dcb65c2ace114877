//! The backtest report as an analyst opens it: rendered by headless Chromium (Debian's
//! `chromium`, which `.ci/run` installs), its DOM after the page's script ran checked for
//! UTC dates, the most severe findings first, filtering and sorting (also as set from the
//! address), provenance, a timeline per analytic, the drill-down per device and app, and the
//! baselines compared; a screenshot is kept in `target/ci-artifacts/report.png`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use offport_tests::unique;
use scraper::{ElementRef, Html, Selector};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Flags that keep Chromium from reaching for the network (the machine has none) and from
/// needing a sandbox, a GPU or a profile.
fn chromium(profile: &Path) -> Command {
    let mut command = Command::new(CHROMIUM);
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ]);
    command.arg(format!("--user-data-dir={}", profile.display()));
    command
}

/// The DOM of `page#fragment` after its script ran.
fn rendered(page: &Path, fragment: &str, profile: &Path) -> Result<Html> {
    let url = format!("file://{}{fragment}", page.display());
    let output = chromium(profile)
        .args(["--virtual-time-budget=3000", "--dump-dom"])
        .arg(&url)
        .output()
        .with_context(|| format!("running {CHROMIUM} (apt-get install chromium)"))?;
    if !output.status.success() || output.stdout.is_empty() {
        bail!(
            "chromium --dump-dom {url} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(Html::parse_document(&String::from_utf8(output.stdout)?))
}

fn select(selector: &str) -> Selector {
    Selector::parse(selector).unwrap()
}

/// The findings table's rows in page order, with whether each is shown.
fn rows(dom: &Html) -> Vec<(ElementRef<'_>, bool)> {
    dom.select(&select("#findings tbody tr"))
        .map(|row| (row, row.value().attr("hidden").is_none()))
        .collect()
}

fn cell<'a>(row: &ElementRef<'a>, key: &str) -> ElementRef<'a> {
    row.select(&select(&format!("td[data-k=\"{key}\"]")))
        .next()
        .unwrap()
}

fn number(row: &ElementRef<'_>, key: &str) -> i64 {
    cell(row, key)
        .value()
        .attr("data-n")
        .unwrap()
        .parse()
        .unwrap()
}

fn text(element: &ElementRef<'_>) -> String {
    element.text().collect()
}

/// `YYYY-MM-DD HH:MM:SS`.
fn is_utc_time(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b' ',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
}

fn offportctl(args: &[&str], dir: &Path) -> Result<()> {
    let output = Command::new(env!("CARGO_BIN_EXE_offportctl"))
        .args(args)
        .current_dir(dir)
        .output()?;
    if !output.status.success() {
        bail!(
            "offportctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

#[test]
fn the_report_renders_sorts_filters_and_drills_down_in_a_browser() -> Result<()> {
    if !Path::new(CHROMIUM).exists() {
        bail!("{CHROMIUM} is missing: apt-get install chromium (.ci/run installs it)");
    }
    let dir = std::env::temp_dir().join(unique("report-browser"));
    std::fs::create_dir_all(&dir)?;
    offportctl(
        &[
            "simulate",
            "--out",
            "fleet",
            "--devices",
            "40",
            "--hours",
            "24",
            "--seed",
            "5",
            "--infected-share",
            "0.3",
        ],
        &dir,
    )?;
    // A second baseline that approves TLS on every port for Android: it silences findings the
    // shipped one raises, so the comparison has something to show.
    std::fs::write(
        dir.join("wide.yaml"),
        "scope: {kind: PLATFORM, value: ANDROID}\nversion: tls-anywhere\neffective_time: 0\n\
allowed_protocol_ports:\n  - {protocol: TLS, transport: TCP, ports: [{first: 1, last: 65535}]}\n",
    )?;
    offportctl(
        &[
            "replay",
            "--quiet",
            "--input",
            "fleet",
            "--report",
            "report",
            "--compare",
            "wide.yaml",
        ],
        &dir,
    )?;
    let page = dir.join("report/report.html");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report/report.json"))?)?;
    let total = report["list"].as_array().unwrap().len();
    assert!(total >= 10, "too few findings to judge the table: {total}");
    let profile = dir.join("chromium-profile");

    // As opened: every finding shown, most severe first, times as UTC dates.
    let dom = rendered(&page, "", &profile)?;
    let all = rows(&dom);
    assert_eq!(all.len(), total);
    assert!(all.iter().all(|(_, shown)| *shown));
    let shown = text(&dom.select(&select("#shown")).next().unwrap());
    assert_eq!(shown, total.to_string());
    let ranks: Vec<i64> = all.iter().map(|(r, _)| number(r, "severity")).collect();
    assert!(
        ranks.windows(2).all(|w| w[0] >= w[1]),
        "not most severe first: {ranks:?}"
    );
    for (row, _) in &all {
        for key in ["first", "last"] {
            let when = text(&cell(row, key));
            assert!(is_utc_time(&when), "{key} seen is not a UTC time: {when:?}");
        }
        // The evidence column is whole, not cut: every kind the JSON lists is in the cell.
        let id = cell(row, "id").value().attr("title").unwrap().to_string();
        let finding = report["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["finding_id"] == id.as_str())
            .unwrap();
        let evidence = text(&cell(row, "evidence"));
        for kind in finding["evidence"].as_array().unwrap() {
            assert!(evidence.contains(kind.as_str().unwrap()), "{evidence}");
        }
    }
    let ticks: Vec<String> = dom
        .select(&select("svg text.tick"))
        .map(|t| text(&t))
        .collect();
    assert!(!ticks.is_empty());
    assert!(
        ticks
            .iter()
            .all(|t| t.len() == 10 && t.as_bytes()[4] == b'-'),
        "timeline labels are not dates: {ticks:?}"
    );
    // Provenance, a timeline per analytic, the baselines compared, the drill-down.
    let provenance = text(&dom.select(&select("#provenance")).next().unwrap());
    assert!(
        provenance.contains(env!("CARGO_PKG_VERSION")),
        "{provenance}"
    );
    assert!(provenance.contains("fleet directory"), "{provenance}");
    assert!(
        provenance.contains("platform:ANDROID@tls-anywhere"),
        "{provenance}"
    );
    let analytics = report["by_analytic"].as_object().unwrap().len();
    assert_eq!(dom.select(&select("h3.timeline")).count(), analytics);
    let diff: Vec<String> = dom
        .select(&select("ul.baseline-diff li"))
        .map(|li| text(&li))
        .collect();
    assert!(
        diff.iter().any(|v| v.contains("tls-anywhere")),
        "the compared baseline's own version is not listed: {diff:?}"
    );
    let only_default = report["comparison"]["only_a"].as_array().unwrap().len();
    assert!(only_default > 0, "the wide baseline silenced nothing");
    let devices: Vec<ElementRef<'_>> = dom.select(&select("#devices ~ details.drill")).collect();
    let distinct_devices: std::collections::BTreeSet<&str> = report["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["device_id"].as_str().unwrap())
        .collect();
    assert!(devices.len() >= distinct_devices.len());
    let first_device = devices[0];
    assert!(
        first_device
            .select(&select("table.evidence-items tr"))
            .count()
            > 1
    );
    // The device link of the first row leads to that device's drill-down.
    let link = all[0]
        .0
        .select(&select("td[data-k=\"device\"] a"))
        .next()
        .unwrap()
        .value()
        .attr("href")
        .unwrap()
        .trim_start_matches('#')
        .to_string();
    assert!(dom
        .select(&select(&format!("details[id=\"{link}\"]")))
        .next()
        .is_some());

    // At least HIGH, as the address asks: only those shown, and counted.
    let dom = rendered(&page, "#severity=HIGH", &profile)?;
    let high = rows(&dom);
    let visible: Vec<i64> = high
        .iter()
        .filter(|(_, shown)| *shown)
        .map(|(r, _)| number(r, "severity"))
        .collect();
    let expected = ranks.iter().filter(|r| **r >= 3).count();
    assert_eq!(visible.len(), expected);
    assert!(visible.iter().all(|r| *r >= 3));
    assert_eq!(
        text(&dom.select(&select("#shown")).next().unwrap()),
        expected.to_string()
    );

    // Sorted by score, lowest first, and filtered by one device's id.
    let device = report["list"][0]["device_id"].as_str().unwrap().to_string();
    let dom = rendered(&page, &format!("#q={device}&sort=score&dir=asc"), &profile)?;
    let sorted = rows(&dom);
    let visible: Vec<&ElementRef<'_>> = sorted
        .iter()
        .filter(|(_, shown)| *shown)
        .map(|(r, _)| r)
        .collect();
    assert!(!visible.is_empty());
    assert!(visible.iter().all(|r| text(r).contains(&device)));
    let scores: Vec<i64> = visible.iter().map(|r| number(r, "score")).collect();
    assert!(scores.windows(2).all(|w| w[0] <= w[1]), "{scores:?}");
    let head = dom
        .select(&select("#findings th[data-k=\"score\"]"))
        .next()
        .unwrap();
    assert_eq!(head.value().attr("aria-sort"), Some("ascending"));
    assert_eq!(
        visible.len(),
        report["list"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| serde_json::to_string(f).unwrap().contains(&device))
            .count()
    );

    // A screenshot for the CI artefacts.
    let artefacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/ci-artifacts");
    std::fs::create_dir_all(&artefacts)?;
    let shot = artefacts.join("report.png");
    let _ = std::fs::remove_file(&shot);
    let status = chromium(&profile)
        .args(["--window-size=1400,2400", "--virtual-time-budget=3000"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .output()?;
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let png = std::fs::read(&shot)?;
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
