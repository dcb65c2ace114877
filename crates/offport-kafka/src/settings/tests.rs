#![allow(clippy::unwrap_used)]
use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn stream_workers_come_from_the_environment_and_zero_means_one_per_core() {
    let s = Settings::load_from(None, env(&[])).unwrap();
    assert_eq!(s.stream.workers, 0);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(s.stream.worker_threads(), cores);
    let s = Settings::load_from(None, env(&[("OFFPORT__STREAM__WORKERS", "3")])).unwrap();
    assert_eq!(s.stream.worker_threads(), 3);
}

/// Every leaf key of a YAML value, dotted (maps and lists whose keys are free are leaves).
fn leaves(prefix: &str, value: &serde_yaml_ng::Value, out: &mut Vec<String>) {
    let mut values = Vec::new();
    leaf_values(prefix, value, &mut values);
    out.extend(values.into_iter().map(|(key, _)| key));
}

#[test]
fn the_configuration_reference_lists_every_setting_and_the_example_loads() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let mut settings = Vec::new();
    let yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&Settings::default().redacted_yaml()).unwrap();
    leaves("", &yaml, &mut settings);
    settings.sort();
    // The first column of the reference: `a.b.c` or `a.b.c` / `d` (a sibling of c).
    let reference = std::fs::read_to_string(format!("{root}/docs/configuration.md")).unwrap();
    let mut documented: Vec<String> = Vec::new();
    for line in reference.lines().filter(|l| l.starts_with("| `")) {
        let cell = line.split('|').nth(1).unwrap_or_default();
        let names: Vec<&str> = cell
            .split('/')
            .map(|n| n.trim().trim_matches('`'))
            .collect();
        let first = names[0].split(".<").next().unwrap_or_default().to_string();
        let parent = first.rsplit_once('.').map(|(p, _)| p.to_string());
        documented.push(first);
        for sibling in &names[1..] {
            documented.push(match &parent {
                Some(parent) => format!("{parent}.{sibling}"),
                None => sibling.to_string(),
            });
        }
    }
    documented.sort();
    documented.dedup();
    assert!(settings.len() > 40, "{settings:?}");
    let missing: Vec<&String> = settings
        .iter()
        .filter(|k| !documented.contains(k))
        .collect();
    let unknown: Vec<&String> = documented
        .iter()
        .filter(|k| !settings.contains(k))
        .collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/configuration.md: settings not documented {missing:?}; documented but not settings {unknown:?}"
    );
    // The example file loads and sets every section.
    let example = format!("{root}/docs/offport.example.yaml");
    // Its secret and CA files, as a deployment mounts them (read at load).
    let secret = std::env::temp_dir().join(format!("offport-example-{}", std::process::id()));
    std::fs::write(&secret, "s3cret\n").unwrap();
    let secret = secret.to_str().unwrap();
    let loaded = Settings::load_from(
        Some(std::path::Path::new(&example)),
        env(&[
            ("OFFPORT__KAFKA__SECURITY__SASL_PASSWORD_FILE", secret),
            ("OFFPORT__REGISTRY__PASSWORD_FILE", secret),
            ("OFFPORT__KAFKA__SECURITY__CA_LOCATION", secret),
        ]),
    );
    let _ = std::fs::remove_file(secret);
    assert!(loaded.is_ok(), "{example}: {loaded:?}");
    let text = std::fs::read_to_string(&example).unwrap();
    for section in [
        "kafka:",
        "registry:",
        "topics:",
        "log:",
        "pipeline:",
        "observability:",
        "normalize:",
        "stream:",
    ] {
        assert!(text.contains(section), "{example} has no {section}");
    }
}

#[test]
fn defaults_point_at_the_local_stack() {
    let s = Settings::load_from(None, env(&[])).unwrap();
    assert_eq!(s.kafka.bootstrap_servers, "127.0.0.1:9092");
    assert_eq!(s.registry.url, "http://127.0.0.1:8081/apis/ccompat/v7");
    assert_eq!(s.topics.prefix, "offport.");
}

#[test]
fn environment_overrides_the_file() {
    let dir = std::env::temp_dir().join(format!("offport-settings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("offport.yaml");
    std::fs::write(
        &file,
        "kafka:\n  bootstrap_servers: file:9092\ntopics:\n  partitions: 12\n",
    )
    .unwrap();
    let s = Settings::load_from(
        Some(&file),
        env(&[("OFFPORT__KAFKA__BOOTSTRAP_SERVERS", "env:9092")]),
    )
    .unwrap();
    assert_eq!(s.kafka.bootstrap_servers, "env:9092");
    assert_eq!(s.topics.partitions, 12);
}

#[test]
fn invalid_values_name_the_key() {
    let err = Settings::load_from(None, env(&[("OFFPORT__TOPICS__PARTITIONS", "0")])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "configuration: topics.partitions: must be at least 1"
    );
    let err =
        Settings::load_from(None, env(&[("OFFPORT__REGISTRY__URL", "registry:8081")])).unwrap_err();
    assert!(err.to_string().contains("registry.url"), "{err}");
}

#[test]
fn unknown_keys_in_a_file_are_rejected() {
    let dir = std::env::temp_dir().join(format!("offport-settings-u-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("offport.yaml");
    std::fs::write(&file, "kafka:\n  bootstrap_server: typo:9092\n").unwrap();
    let err = Settings::load_from(Some(&file), env(&[])).unwrap_err();
    assert!(err.to_string().contains("bootstrap_server"), "{err}");
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("offport-settings-s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    file
}

fn sasl_env(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs = vec![
        ("OFFPORT__KAFKA__SECURITY__PROTOCOL", "sasl_ssl"),
        ("OFFPORT__KAFKA__SECURITY__SASL_MECHANISM", "SCRAM-SHA-512"),
        ("OFFPORT__KAFKA__SECURITY__SASL_USERNAME", "svc-offport"),
    ];
    pairs.extend_from_slice(extra);
    env(&pairs)
}

fn property(config: &rdkafka::ClientConfig, name: &str) -> Option<String> {
    config.get(name).map(str::to_string)
}

#[test]
fn sasl_ssl_from_the_environment_reaches_librdkafka() {
    let ca = temp_file("ca.pem", "-----BEGIN CERTIFICATE-----\n");
    let s = Settings::load_from(
        None,
        sasl_env(&[
            ("OFFPORT__KAFKA__SECURITY__SASL_PASSWORD", "s3cr3t-from-env"),
            (
                "OFFPORT__KAFKA__SECURITY__CA_LOCATION",
                ca.to_str().unwrap(),
            ),
        ]),
    )
    .unwrap();
    let config = s.kafka.client_config();
    assert_eq!(
        property(&config, "security.protocol").as_deref(),
        Some("sasl_ssl")
    );
    assert_eq!(
        property(&config, "sasl.mechanism").as_deref(),
        Some("SCRAM-SHA-512")
    );
    assert_eq!(
        property(&config, "sasl.username").as_deref(),
        Some("svc-offport")
    );
    assert_eq!(
        property(&config, "sasl.password").as_deref(),
        Some("s3cr3t-from-env")
    );
    assert_eq!(
        property(&config, "ssl.ca.location"),
        Some(ca.display().to_string())
    );
    assert_eq!(
        property(&config, "ssl.endpoint.identification.algorithm").as_deref(),
        Some("https")
    );
}

#[test]
fn a_password_file_is_read_and_trimmed() {
    let file = temp_file("sasl-password", "from-a-mounted-secret\n");
    let s = Settings::load_from(
        None,
        sasl_env(&[(
            "OFFPORT__KAFKA__SECURITY__SASL_PASSWORD_FILE",
            file.to_str().unwrap(),
        )]),
    )
    .unwrap();
    assert_eq!(
        s.kafka.security.sasl_password.as_ref().map(Secret::expose),
        Some("from-a-mounted-secret")
    );
    let missing = Settings::load_from(
        None,
        sasl_env(&[(
            "OFFPORT__KAFKA__SECURITY__SASL_PASSWORD_FILE",
            "/nonexistent/pw",
        )]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        missing.starts_with(
            "configuration: kafka.security.sasl_password_file: cannot read /nonexistent/pw"
        ),
        "{missing}"
    );
    let both = Settings::load_from(
        None,
        sasl_env(&[
            ("OFFPORT__KAFKA__SECURITY__SASL_PASSWORD", "x"),
            (
                "OFFPORT__KAFKA__SECURITY__SASL_PASSWORD_FILE",
                file.to_str().unwrap(),
            ),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        both.contains("set together with kafka.security.sasl_password"),
        "{both}"
    );
}

#[test]
fn inconsistent_security_settings_name_the_key() {
    let cases: [(Vec<(String, String)>, &str); 6] = [
        (
            sasl_env(&[]),
            "configuration: kafka.security.sasl_password: required with protocol sasl_ssl",
        ),
        (
            env(&[
                ("OFFPORT__KAFKA__SECURITY__PROTOCOL", "sasl_ssl"),
                ("OFFPORT__KAFKA__SECURITY__SASL_USERNAME", "u"),
            ]),
            "configuration: kafka.security.sasl_mechanism: required with protocol sasl_ssl",
        ),
        (
            env(&[("OFFPORT__KAFKA__SECURITY__SASL_USERNAME", "u")]),
            "configuration: kafka.security.protocol: is plaintext but SASL credentials are set",
        ),
        (
            env(&[("OFFPORT__KAFKA__SECURITY__CA_LOCATION", "/etc/ca.pem")]),
            "configuration: kafka.security.ca_location: is set but protocol is plaintext",
        ),
        (
            env(&[
                ("OFFPORT__KAFKA__SECURITY__PROTOCOL", "ssl"),
                (
                    "OFFPORT__KAFKA__SECURITY__CERTIFICATE_LOCATION",
                    "/etc/client.pem",
                ),
            ]),
            "configuration: kafka.security.key_location: a client certificate needs its key",
        ),
        (
            env(&[("OFFPORT__REGISTRY__PASSWORD", "p")]),
            "configuration: registry.username: required when a password is set",
        ),
    ];
    for (pairs, expected) in cases {
        let error = Settings::load_from(None, pairs).unwrap_err().to_string();
        assert!(
            error.starts_with(expected),
            "{error}\n  expected: {expected}"
        );
    }
    let error = Settings::load_from(
        None,
        env(&[("OFFPORT__KAFKA__SECURITY__PROTOCOL", "sasl_tls")]),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("sasl_tls"), "{error}");
    let error = Settings::load_from(
        None,
        env(&[
            ("OFFPORT__KAFKA__SECURITY__PROTOCOL", "ssl"),
            (
                "OFFPORT__KAFKA__SECURITY__CA_LOCATION",
                "/nonexistent/ca.pem",
            ),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.starts_with(
            "configuration: kafka.security.ca_location: cannot read /nonexistent/ca.pem"
        ),
        "{error}"
    );
}

#[test]
fn secrets_never_show_in_debug_or_the_dump() {
    let key_password = temp_file("key-password", "key-pass-value");
    let mut s = Settings::load_from(
        None,
        sasl_env(&[
            ("OFFPORT__KAFKA__SECURITY__SASL_PASSWORD", "sasl-pass-value"),
            ("OFFPORT__REGISTRY__URL", "https://registry.example.com"),
            ("OFFPORT__REGISTRY__USERNAME", "api-key"),
            ("OFFPORT__REGISTRY__PASSWORD", "registry-pass-value"),
        ]),
    )
    .unwrap();
    s.kafka.security.key_password_file = Some(key_password);
    s.resolve_secret_files().unwrap();
    s.kafka.properties.insert(
        "sasl.oauthbearer.client.secret".into(),
        "oauth-secret-value".into(),
    );
    s.kafka
        .properties
        .insert("socket.keepalive.enable".into(), "true".into());
    let debug = format!("{s:?}");
    let dump = s.redacted_yaml();
    for shown in [&debug, &dump] {
        for secret in [
            "sasl-pass-value",
            "registry-pass-value",
            "key-pass-value",
            "oauth-secret-value",
        ] {
            assert!(!shown.contains(secret), "{secret} shown in:\n{shown}");
        }
    }
    assert!(dump.contains("sasl_username: svc-offport"), "{dump}");
    assert!(dump.contains("sasl_password: '***'"), "{dump}");
    assert!(dump.contains("socket.keepalive.enable: 'true'"), "{dump}");
    assert!(
        dump.contains("sasl.oauthbearer.client.secret: '***'"),
        "{dump}"
    );
    // The secrets themselves are still there for the clients.
    assert_eq!(
        property(&s.kafka.client_config(), "ssl.key.password").as_deref(),
        Some("key-pass-value")
    );
}

/// Every leaf of a YAML value, dotted, with its value as YAML text (maps and lists whose keys
/// are free are leaves).
fn leaf_values(prefix: &str, value: &serde_yaml_ng::Value, out: &mut Vec<(String, String)>) {
    match value {
        serde_yaml_ng::Value::Mapping(map)
            if !matches!(prefix, "kafka.properties") && !map.is_empty() =>
        {
            for (key, value) in map {
                let key = key.as_str().unwrap_or_default();
                let path = if prefix.is_empty() {
                    key.to_string()
                } else {
                    format!("{prefix}.{key}")
                };
                leaf_values(&path, value, out);
            }
        }
        serde_yaml_ng::Value::String(text) => out.push((prefix.to_string(), text.clone())),
        other => out.push((
            prefix.to_string(),
            serde_yaml_ng::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_string(),
        )),
    }
}

#[test]
fn the_configuration_reference_gives_each_setting_its_default() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&Settings::default().redacted_yaml()).unwrap();
    let mut defaults = Vec::new();
    leaf_values("", &yaml, &mut defaults);
    let reference = std::fs::read_to_string(format!("{root}/docs/configuration.md")).unwrap();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for line in reference.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(name), Some(default)) = (cells.get(1), cells.get(3)) else {
            continue;
        };
        // Rows naming one setting with one literal default; a default in words (derived,
        // none, a list) is left to the reader.
        let name = name.trim_matches('`');
        if name.contains('/') || name.contains('<') {
            continue;
        }
        let Some(literal) = default
            .strip_prefix('`')
            .and_then(|d| d.strip_suffix('`'))
            .filter(|d| !d.contains('`'))
        else {
            continue;
        };
        let Some((_, actual)) = defaults.iter().find(|(key, _)| key == name) else {
            continue;
        };
        checked += 1;
        let literal = literal.trim_matches('"');
        if literal != actual {
            wrong.push(format!(
                "{name}: documented {literal:?}, default {actual:?}"
            ));
        }
    }
    assert!(checked > 25, "only {checked} defaults compared");
    assert!(
        wrong.is_empty(),
        "docs/configuration.md defaults out of step: {wrong:#?}"
    );
}

#[test]
fn a_sources_file_adds_to_the_inline_sources_in_yaml_or_csv() {
    let yaml = temp_file(
        "sources.yaml",
        "- {network: 10.8.0.2/32, device_id: ios-1, platform: ios, app_id: com.example.mail}\n\
         - {network: \"fd00:8::/64\", device_id: android-2, platform: android}\n",
    );
    let csv = temp_file(
        "sources.csv",
        "network,device_id,platform,app_id,from,until\n\
         10.9.0.7/32, android-3 ,android,,2026-11-20T00:00:00Z,1795168800000\n\
         10.9.1.0/24,ios-4,,,,\n",
    );
    let config = temp_file(
        "offport-sources.yaml",
        &format!(
            "normalize:\n  sources:\n    - {{network: 10.7.0.1/32, device_id: inline-0}}\n  sources_file: {}\n",
            yaml.display()
        ),
    );
    let settings = Settings::load_from(Some(&config), env(&[])).unwrap();
    let all = settings.normalize.all_sources().unwrap();
    let devices: Vec<&str> = all.iter().map(|s| s.device_id.as_str()).collect();
    assert_eq!(devices, vec!["inline-0", "ios-1", "android-2"]);
    assert_eq!(all[1].app_id.as_deref(), Some("com.example.mail"));
    let proxy = settings.normalize.proxy_config().unwrap();
    let found = proxy.sources.lookup("fd00:8::1", None).unwrap();
    assert_eq!(found.device_id, "android-2");

    // CSV, with the environment naming the file; cells trimmed, empty ones no value.
    let settings = Settings::load_from(
        None,
        env(&[("OFFPORT__NORMALIZE__SOURCES_FILE", csv.to_str().unwrap())]),
    )
    .unwrap();
    let all = settings.normalize.all_sources().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].device_id, "android-3");
    assert_eq!(all[0].app_id, None);
    assert_eq!(all[0].from, Some(1_795_132_800_000));
    assert_eq!(all[0].until, Some(1_795_168_800_000));
    assert_eq!(all[1].platform, None);
    let proxy = settings.normalize.proxy_config().unwrap();
    assert_eq!(
        proxy
            .sources
            .lookup("10.9.0.7", Some(1_795_140_000_000))
            .unwrap()
            .device_id,
        "android-3"
    );
    assert!(proxy
        .sources
        .lookup("10.9.0.7", Some(1_795_168_800_000))
        .is_none());
    assert_eq!(
        proxy.sources.lookup("10.9.1.200", None).unwrap().device_id,
        "ios-4"
    );
}

#[test]
fn a_bad_sources_file_is_named_with_what_is_wrong_where() {
    let with_file = |file: &std::path::Path| {
        Settings::load_from(
            None,
            env(&[("OFFPORT__NORMALIZE__SOURCES_FILE", file.to_str().unwrap())]),
        )
        .unwrap()
        .normalize
        .proxy_config()
        .unwrap_err()
        .to_string()
    };
    let missing = std::env::temp_dir().join("offport-no-such-sources.yaml");
    let err = with_file(&missing);
    assert!(
        err.starts_with("configuration: normalize.sources_file: ") && err.contains("cannot read"),
        "{err}"
    );
    let bad_row = temp_file(
        "bad-row.csv",
        "network,device_id\n10.0.0.1/32,a\nnot-a-network,b\n",
    );
    let err = with_file(&bad_row);
    assert!(err.contains("bad-row.csv: row 3"), "{err}");
    let unknown_column = temp_file("unknown.csv", "network,device_id,owner\n10.0.0.1/32,a,x\n");
    let err = with_file(&unknown_column);
    assert!(err.contains("owner"), "{err}");
    let empty_device = temp_file(
        "empty.yaml",
        "- {network: 10.0.0.1/32, device_id: a}\n- {network: 10.0.0.2/32, device_id: \" \"}\n",
    );
    let err = with_file(&empty_device);
    assert!(
        err.contains("empty.yaml: entry 2 (from 1): device_id must not be empty"),
        "{err}"
    );
    let not_a_list = temp_file("map.yaml", "network: 10.0.0.1/32\n");
    let err = with_file(&not_a_list);
    assert!(err.contains("map.yaml"), "{err}");
}

#[test]
fn a_json_sources_file_is_read_as_json() {
    // Named `.json`: read with the JSON reader, times as epoch milliseconds or text.
    let json = temp_file(
        "sources.json",
        r#"[{"network":"10.8.0.9/32","device_id":"android-9","platform":"android","from":1795132800000},
            {"network":"10.8.1.0/24","device_id":"ios-10","until":"2026-11-21T00:00:00Z"}]"#,
    );
    let settings = Settings::load_from(
        None,
        env(&[("OFFPORT__NORMALIZE__SOURCES_FILE", json.to_str().unwrap())]),
    )
    .unwrap();
    let all = settings.normalize.all_sources().unwrap();
    let devices: Vec<&str> = all.iter().map(|s| s.device_id.as_str()).collect();
    assert_eq!(devices, vec!["android-9", "ios-10"]);
    assert_eq!(all[0].from, Some(1_795_132_800_000));
    assert_eq!(all[1].until, Some(1_795_219_200_000));
    // Not JSON: the JSON reader's error, with the file named.
    let broken = temp_file("broken.json", "[{\"network\": ");
    let err = Settings::load_from(
        None,
        env(&[("OFFPORT__NORMALIZE__SOURCES_FILE", broken.to_str().unwrap())]),
    )
    .unwrap()
    .normalize
    .all_sources()
    .unwrap_err()
    .to_string();
    assert!(err.contains("broken.json") && err.contains("EOF"), "{err}");
}
