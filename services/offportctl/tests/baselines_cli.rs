//! `offportctl baselines` as an operator runs it, against the real broker and registry (the
//! local stack, or the endpoints in `OFFPORT_BOOTSTRAP_SERVERS` / `OFFPORT_REGISTRY_URL`), on
//! topics of its own: validate, diff, apply, show and delete, with their output and exit codes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::Result;
use offport_kafka::settings::Settings;
use offport_kafka::topics::TopicRole;
use offport_tests::{isolated_settings, unique};

/// Runs the built `offportctl` with the settings' broker, registry and topic prefix.
fn offportctl(settings: &Settings, args: &[&str]) -> Result<Output> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_offportctl"))
        .args(args)
        .env(
            "OFFPORT__KAFKA__BOOTSTRAP_SERVERS",
            &settings.kafka.bootstrap_servers,
        )
        .env("OFFPORT__REGISTRY__URL", &settings.registry.url)
        .env("OFFPORT__TOPICS__PREFIX", &settings.topics.prefix)
        .output()?;
    Ok(output)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A baseline of the test app allowing MQTT on `port`, effective from 2026-01-01.
fn document(version: &str, port: u16) -> String {
    format!(
        "scope: {{kind: APP, value: com.example.vendor}}\nversion: {version}\neffective_time: 2026-01-01T00:00:00Z\nallowed_protocol_ports:\n  - {{protocol: MQTT, transport: TCP, ports: [{{first: {port}, last: {port}}}]}}\n"
    )
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

/// `baselines show` for the test app on Android at a time after the version's start: the
/// contributing sources and the MQTT ports approved.
fn show(settings: &Settings) -> Result<(Vec<String>, Vec<u64>)> {
    let output = offportctl(
        settings,
        &[
            "baselines",
            "show",
            "--platform",
            "android",
            "--app",
            "com.example.vendor",
            "--at",
            "2026-03-01T00:00:00Z",
        ],
    )?;
    assert!(output.status.success(), "{}", stderr(&output));
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let sources = shown["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let mqtt_ports = shown["allowed_protocol_ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|rule| rule["protocol"] == "MQTT")
        .flat_map(|rule| rule["ports"].as_array().unwrap().clone())
        .map(|range| range["first"].as_u64().unwrap())
        .collect();
    Ok((sources, mqtt_ports))
}

/// Runs `offportctl` and checks it succeeded and printed `expected`; returns its output.
fn succeeds(settings: &Settings, args: &[&str], expected: &str) -> Result<String> {
    let output = offportctl(settings, args)?;
    assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains(expected), "{args:?} printed:\n{text}");
    Ok(text)
}

/// Runs `offportctl` and checks it failed with exit code 1 and said each of `why` on stderr.
fn fails(settings: &Settings, args: &[&str], why: &[&str]) -> Result<()> {
    let output = offportctl(settings, args)?;
    assert_eq!(output.status.code(), Some(1), "{args:?}");
    let text = stderr(&output);
    assert!(
        why.iter().all(|w| text.contains(w)),
        "{args:?} said:\n{text}"
    );
    Ok(())
}

/// Checks `show` holds the built-in default alone: no version of an app scope, no 8884.
fn shows_only_the_default(settings: &Settings) -> Result<()> {
    let (sources, ports) = show(settings)?;
    assert!(!ports.contains(&8884), "{ports:?}");
    assert!(
        !sources.iter().any(|s| s.starts_with("app:")),
        "{sources:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baselines_are_validated_diffed_applied_shown_and_deleted() -> Result<()> {
    let settings =
        isolated_settings("offportctl-baselines", 1, 100, &[TopicRole::Baselines]).await?;
    let dir = std::env::temp_dir().join(unique("offportctl-baselines"));
    std::fs::create_dir_all(&dir)?;
    let v1 = write(&dir, "vendor.yaml", &document("v1", 8884))?;
    let invalid = write(
        &dir,
        "invalid.yaml",
        &document("v1", 8884).replace("first: 8884", "first: 9000"),
    )?;
    let v1_path = v1.to_str().unwrap();

    // validate: no broker needed; an invalid file fails with its path and why.
    succeeds(
        &settings,
        &["baselines", "validate", v1_path],
        "ok       app:com.example.vendor@1767225600000",
    )?;
    fails(
        &settings,
        &["baselines", "validate", invalid.to_str().unwrap()],
        &[
            "invalid.yaml is invalid",
            "allowed_protocol_ports[0].ports[0]",
            "first must not exceed last",
        ],
    )?;

    // A misspelt field would publish a version without its rules, withdrawing what the
    // previous version approved: validate and apply refuse it, naming the field.
    let misspelt = write(
        &dir,
        "misspelt.yaml",
        &document("v2", 8884).replace("allowed_protocol_ports:", "allowed_protocol_portz:"),
    )?;
    for command in ["validate", "apply"] {
        fails(
            &settings,
            &["baselines", command, misspelt.to_str().unwrap()],
            &["misspelt.yaml", "allowed_protocol_portz"],
        )?;
    }
    // Two documents of one scope and effective time: the second would replace the first.
    let twice = write(
        &dir,
        "twice.yaml",
        &format!(
            "- {}\n- {}\n",
            serde_json::to_string(&serde_yaml_ng::from_str::<serde_json::Value>(&document(
                "a", 8884
            ))?)?,
            serde_json::to_string(&serde_yaml_ng::from_str::<serde_json::Value>(&document(
                "b", 8885
            ))?)?,
        ),
    )?;
    for command in ["validate", "apply"] {
        fails(
            &settings,
            &["baselines", command, twice.to_str().unwrap()],
            &[
                "documents 1 (version \"a\") and 2 (version \"b\")",
                "app:com.example.vendor",
            ],
        )?;
    }

    // diff against an empty topic: new. show: the built-in default alone (neither refused
    // file published anything).
    succeeds(
        &settings,
        &["baselines", "diff", v1_path],
        "new       app:com.example.vendor@1767225600000",
    )?;
    shows_only_the_default(&settings)?;

    // apply, then diff: unchanged; show: the version contributes its port.
    succeeds(
        &settings,
        &["baselines", "apply", v1_path],
        "1 versions published to",
    )?;
    succeeds(
        &settings,
        &["baselines", "diff", v1_path],
        "unchanged app:com.example.vendor@1767225600000",
    )?;
    let (sources, ports) = show(&settings)?;
    assert!(ports.contains(&8884), "{ports:?}");
    assert!(
        sources.contains(&"app:com.example.vendor@v1".to_string()),
        "{sources:?}"
    );

    // The file edited: changed, with a unified diff of the document.
    write(&dir, "vendor.yaml", &document("v1", 8885))?;
    let text = succeeds(
        &settings,
        &["baselines", "diff", v1_path],
        "changed   app:com.example.vendor@1767225600000",
    )?;
    let changed_line = |sign: char, port: &str| {
        text.lines()
            .any(|line| line.starts_with(sign) && line.contains(port))
    };
    assert!(
        changed_line('-', "8884") && changed_line('+', "8885"),
        "{text}"
    );
    assert!(
        text.contains("1 of 1 documents differ from the topic"),
        "{text}"
    );

    // delete: every version of the scope withdrawn; show is back to the default.
    succeeds(
        &settings,
        &["baselines", "delete", "app:com.example.vendor"],
        "withdraw app:com.example.vendor@1767225600000",
    )?;
    shows_only_the_default(&settings)?;
    fails(
        &settings,
        &["baselines", "delete", "app:com.example.vendor"],
        &["no version of app:com.example.vendor is on the topic"],
    )?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
