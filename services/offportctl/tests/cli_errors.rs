//! `offportctl` when something is wrong: an unreachable broker fails in seconds naming the
//! address; outputs are checked before the work; a configuration error is printed once. No
//! broker is needed (the unreachable one is a closed local port).

#![allow(clippy::unwrap_used, reason = "tests")]

use std::process::Output;
use std::time::{Duration, Instant};

fn offportctl(args: &[&str], env: &[(&str, &str)]) -> (Output, Duration) {
    let started = Instant::now();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_offportctl"))
        .args(args)
        .env_remove("OFFPORT_CONFIG")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (output, started.elapsed())
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn an_unreachable_broker_fails_in_seconds_naming_the_address() {
    let nowhere = [("OFFPORT__KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")];
    let commands = [
        vec!["topics", "create"],
        vec!["simulate", "--devices", "2", "--hours", "1", "--to-kafka"],
        vec!["replay", "--kafka"],
        vec!["baselines", "diff", "/dev/null"],
        vec!["inventory", "list"],
    ];
    // All at once: each waits out its 10 s.
    let results: Vec<(Vec<&str>, (Output, Duration))> = std::thread::scope(|scope| {
        let running: Vec<_> = commands
            .iter()
            .map(|args| (args.clone(), scope.spawn(|| offportctl(args, &nowhere))))
            .collect();
        running
            .into_iter()
            .map(|(args, handle)| (args, handle.join().unwrap()))
            .collect()
    });
    for (args, (output, took)) in results {
        let err = stderr(&output);
        assert!(!output.status.success(), "{args:?}");
        assert!(took < Duration::from_secs(20), "{args:?} took {took:?}");
        assert!(
            err.contains("Kafka at 127.0.0.1:1 did not answer"),
            "{args:?}: {err}"
        );
        assert!(err.contains("tried for 10 s"), "{args:?}: {err}");
        assert_eq!(err.matches("offportctl:").count(), 1, "{args:?}: {err}");
        // Nothing was simulated before the broker was asked.
        assert!(!err.contains("simulated"), "{args:?}: {err}");
    }
}

#[test]
fn outputs_are_checked_before_the_work() {
    let dir = std::env::temp_dir().join(format!("offportctl-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let file = file.to_str().unwrap();
    let (output, _) = offportctl(&["simulate", "--devices", "50", "--out", file], &[]);
    let err = stderr(&output);
    assert!(!output.status.success());
    assert!(
        err.contains(&format!("--out {file}: a file is there")),
        "{err}"
    );
    assert!(
        !err.contains("simulated"),
        "simulated before checking: {err}"
    );
    // A report directory under a file cannot be made: said before any replay.
    let fleet = dir.join("fleet");
    let (made, _) = offportctl(
        &[
            "simulate",
            "--devices",
            "3",
            "--hours",
            "1",
            "--out",
            fleet.to_str().unwrap(),
        ],
        &[],
    );
    assert!(made.status.success(), "{}", stderr(&made));
    let report = format!("{file}/report");
    let (output, _) = offportctl(
        &[
            "replay",
            "--input",
            fleet.to_str().unwrap(),
            "--report",
            &report,
            "--quiet",
        ],
        &[],
    );
    let err = stderr(&output);
    assert!(!output.status.success());
    assert!(err.contains(&format!("--report {report}")), "{err}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("replayed"),
        "replayed before checking"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_configuration_error_is_printed_once() {
    let dir = std::env::temp_dir().join(format!("offportctl-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("bad.yaml");
    std::fs::write(&config, "kafka: {bootstrap_servers: x}\nfoo: 1\n").unwrap();
    let (output, _) = offportctl(
        &["--config", config.to_str().unwrap(), "config", "show"],
        &[],
    );
    let err = stderr(&output);
    assert!(!output.status.success());
    assert_eq!(err.matches("unknown field `foo`").count(), 1, "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_and_version_name_the_tool_and_its_commands() {
    let (help, _) = offportctl(&["--help"], &[]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{help:?}");
    for command in [
        "topics",
        "baselines",
        "inventory",
        "simulate",
        "replay",
        "dead-letters",
        "--config <CONFIG>",
        "OFFPORT_CONFIG",
    ] {
        assert!(text.contains(command), "--help lacks {command:?}:\n{text}");
    }
    let (version, _) = offportctl(&["--version"], &[]);
    assert!(version.status.success(), "{version:?}");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("offportctl {}", env!("CARGO_PKG_VERSION"))
    );
    let (bad, _) = offportctl(&["--frobnicate"], &[]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert_eq!(
        stderr(&bad).matches("--frobnicate").count(),
        1,
        "{}",
        stderr(&bad)
    );
}
