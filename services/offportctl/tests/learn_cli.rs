//! `offportctl baselines learn` on a simulated fleet directory in the sensors' formats: the
//! diff names what it proposes with its support, the draft is a baseline `baselines validate`
//! and `replay --compare` take, and the replay of it reports what it silences; bad arguments
//! fail before any work. No broker is needed.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

use std::path::Path;
use std::process::Output;

fn offportctl(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_offportctl"))
        .args(args)
        .env_remove("OFFPORT_CONFIG")
        .output()
        .unwrap()
}

/// A fresh directory under the system's temporary one, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn simulate(dir: &Path) {
    let out = offportctl(&[
        "simulate",
        "--devices",
        "60",
        "--hours",
        "30",
        "--seed",
        "4",
        "--start",
        "2026-11-02T00:00:00Z",
        "--formats",
        "sensors",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn learn_proposes_a_draft_that_validates_and_replays() {
    let dir = Scratch::new("offportctl-learn");
    let fleet = dir.path().join("fleet");
    simulate(&fleet);
    let config = fleet.join("sources.yaml");
    let draft = dir.path().join("draft.yaml");
    let json = dir.path().join("proposal.json");
    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "[]\n").unwrap();
    // Learn the first day under the shipped default alone.
    let out = offportctl(&[
        "--config",
        config.to_str().unwrap(),
        "baselines",
        "learn",
        "--input",
        fleet.to_str().unwrap(),
        "--to",
        "2026-11-03T00:00:00Z",
        "--baseline",
        empty.to_str().unwrap(),
        "--min-days",
        "1",
        "--min-devices",
        "3",
        "--out",
        draft.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--quiet",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("+ approve "), "{stdout}");
    assert!(
        stdout.contains("approvals and 0 behaviours proposed"),
        "{stdout}"
    );
    assert!(stderr.contains("2026-11-03 00:00 UTC"), "{stderr}");
    // The push channels a default install flags: learned for their apps.
    assert!(stdout.contains("app:com.google.android.gms"), "{stdout}");
    let yaml = std::fs::read_to_string(&draft).unwrap();
    assert!(yaml.contains("#   approve TLS on 5228/tcp: "), "{yaml}");
    let proposal: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(!proposal["documents"].as_array().unwrap().is_empty());

    let validate = offportctl(&["baselines", "validate", draft.to_str().unwrap()]);
    assert!(validate.status.success(), "{}", text(&validate.stderr));

    // The second day, under the default and under the draft: fewer findings, none planted
    // silenced (the fleet has plants; the report says so when there are).
    let report = dir.path().join("report");
    let replay = offportctl(&[
        "--config",
        config.to_str().unwrap(),
        "replay",
        "--input",
        fleet.to_str().unwrap(),
        "--from",
        "2026-11-03T00:00:00Z",
        "--baseline",
        empty.to_str().unwrap(),
        "--compare",
        empty.to_str().unwrap(),
        "--compare",
        draft.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        "--quiet",
    ]);
    let replayed = text(&replay.stdout);
    assert!(replay.status.success(), "{}", text(&replay.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap())
            .unwrap();
    let comparison = &report["comparison"];
    let (only_default, only_draft) = (
        comparison["only_a"].as_array().unwrap().len(),
        comparison["only_b"].as_array().unwrap().len(),
    );
    assert!(
        only_default > 0 && only_draft == 0,
        "{only_default} silenced, {only_draft} new: {replayed}"
    );
    assert!(!replayed.contains("SILENCED"), "{replayed}");
    assert_eq!(comparison["silenced_planted"].as_array().unwrap().len(), 0);
}

#[test]
fn learn_refuses_bad_arguments_before_any_work() {
    let dir = Scratch::new("offportctl-learn-args");
    let nowhere = dir.path().join("no-such-fleet");
    for (args, says) in [
        (
            vec!["--out", dir.path().to_str().unwrap()],
            "a directory is there, not a file",
        ),
        (vec!["--min-devices", "0"], "must be at least 1"),
        (
            vec!["--min-device-share", "1.5"],
            "is not a share between 0 and 1",
        ),
    ] {
        let mut all = vec!["baselines", "learn", "--input", nowhere.to_str().unwrap()];
        all.extend(args.iter().copied());
        let out = offportctl(&all);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{all:?}");
        assert!(stderr.contains(says), "{all:?}: {stderr}");
        assert_eq!(stderr.matches("offportctl:").count(), 1, "{stderr}");
    }
    // With good arguments, the missing directory is what it names.
    let out = offportctl(&["baselines", "learn", "--input", nowhere.to_str().unwrap()]);
    assert!(
        text(&out.stderr).contains("no-such-fleet"),
        "{}",
        text(&out.stderr)
    );
    let out = offportctl(&["baselines", "learn"]);
    assert!(text(&out.stderr).contains("give --input DIR or --kafka"));
}
