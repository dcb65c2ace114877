//! Kafka security by configuration, on a real broker: a throwaway Kafka with a SASL_SSL
//! listener (SCRAM-SHA-256/512 and PLAIN) and a mutual-TLS listener, its certificates signed by
//! a CA generated here. normalize-proxy runs through SASL_SCRAM over TLS and then through mutual
//! TLS, and its output arrives exactly once; wrong credentials, an untrusted broker certificate
//! and a missing client certificate stop it with an error that says so, and never show the
//! password. The schema registry is the local stack's (plain HTTP: Apicurio's own
//! authentication needs an OpenID Connect server, which this test does not run).
//!
//! One test function: the broker is started once and stopped when the test ends.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use offport_core::model::NetworkSession;
use offport_core::normalize::proxy::{ProxyFormat, ProxyNormalizer};
use offport_core::normalize::Limits;
use offport_core::schema::Contract;
use offport_devstack::secure::{
    SecureBroker, SecureBrokerSpec, SecureRegistry, SecureRegistrySpec,
};
use offport_devstack::StackOptions;
use offport_kafka::connect::{check, check_registry, ConnectError};
use offport_kafka::registry::RegistryCodec;
use offport_kafka::settings::{
    KafkaSecurity, KafkaSettings, RegistrySettings, SaslMechanism, Secret, SecurityProtocol,
    Settings, TopicSettings,
};
use offport_kafka::topics::TopicRole;
use offport_tests::{endpoints, produce, read_committed, unique, Background, RawInput};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// PEM files of a test PKI.
struct Pki {
    ca: PathBuf,
    broker_keystore: PathBuf,
    /// The broker's certificate and key apart, for the registry.
    server_certificate: PathBuf,
    server_key: PathBuf,
    client_certificate: PathBuf,
    client_key: PathBuf,
    /// A CA that signed nothing the broker presents.
    stranger_ca: PathBuf,
}

fn ca(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

fn pki(dir: &Path) -> Result<Pki> {
    std::fs::create_dir_all(dir)?;
    let authority = ca("offport test CA")?;
    // The broker answers on 127.0.0.1: the address is in its certificate, so librdkafka's host
    // name check (ssl.endpoint.identification.algorithm=https) passes.
    let mut broker =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    broker
        .distinguished_name
        .push(DnType::CommonName, "offport test broker");
    let broker_key = KeyPair::generate()?;
    let broker_cert = broker.signed_by(&broker_key, &authority)?;
    let mut client = CertificateParams::new(Vec::<String>::new())?;
    client
        .distinguished_name
        .push(DnType::CommonName, "offport-normalize-proxy");
    let client_key = KeyPair::generate()?;
    let client_cert = client.signed_by(&client_key, &authority)?;

    let write = |name: &str, text: String| -> Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    };
    Ok(Pki {
        ca: write("ca.pem", authority.pem())?,
        broker_keystore: write(
            "broker-keystore.pem",
            format!(
                "{}{}{}",
                broker_key.serialize_pem(),
                broker_cert.pem(),
                authority.pem()
            ),
        )?,
        server_certificate: write("server.pem", broker_cert.pem())?,
        server_key: write("server-key.pem", broker_key.serialize_pem())?,
        client_certificate: write("client.pem", client_cert.pem())?,
        client_key: write("client-key.pem", client_key.serialize_pem())?,
        stranger_ca: write("stranger-ca.pem", ca("someone else's CA")?.pem())?,
    })
}

/// Ends a test on a throwaway server: its log's tail shown on failure, the server stopped (on
/// drop), and its directory removed on success (kept to look at on failure).
fn conclude<S>(result: Result<()>, log_tail: String, server: S, dir: &Path) -> Result<()> {
    if result.is_err() {
        eprintln!("server log (tail):\n{log_tail}");
    }
    drop(server);
    if result.is_ok() {
        std::fs::remove_dir_all(dir).ok();
    }
    result
}

fn session_json(device: &str, n: usize) -> String {
    format!(
        r#"{{"device_id":"{device}","platform":"ANDROID","app_id":"com.example.app","transport":"TCP","dst_ip":"203.0.113.10","dst_port":8443,"sensor_protocol":"tls","sni":"api.example.com","bytes_out":{},"bytes_in":4000,"start_time":"2026-11-20T10:00:00Z","duration_ms":1200}}"#,
        500 + n
    )
}

fn sasl(
    broker: &SecureBroker,
    pki: &Pki,
    mechanism: SaslMechanism,
    user: &str,
    password: &str,
) -> KafkaSettings {
    KafkaSettings {
        bootstrap_servers: broker.sasl_ssl.clone(),
        security: KafkaSecurity {
            protocol: SecurityProtocol::SaslSsl,
            sasl_mechanism: Some(mechanism),
            sasl_username: Some(user.to_string()),
            sasl_password: Some(Secret::new(password)),
            ca_location: Some(pki.ca.clone()),
            ..KafkaSecurity::default()
        },
        ..KafkaSettings::default()
    }
}

fn mutual_tls(broker: &SecureBroker, pki: &Pki, with_certificate: bool) -> KafkaSettings {
    KafkaSettings {
        bootstrap_servers: broker.ssl.clone(),
        security: KafkaSecurity {
            protocol: SecurityProtocol::Ssl,
            ca_location: Some(pki.ca.clone()),
            certificate_location: with_certificate.then(|| pki.client_certificate.clone()),
            key_location: with_certificate.then(|| pki.client_key.clone()),
            ..KafkaSecurity::default()
        },
        ..KafkaSettings::default()
    }
}

/// Runs normalize-proxy with `kafka` until `total` sessions are on the output topic, then
/// stops it; returns the decoded sessions.
async fn normalize_through(
    settings: &Settings,
    kafka: &KafkaSettings,
    total: usize,
) -> Result<Vec<NetworkSession>> {
    let settings = Settings {
        kafka: kafka.clone(),
        ..settings.clone()
    };
    let stage = Background::normalizer(
        &settings,
        "normalize-proxy",
        TopicRole::RawProxy,
        ProxyNormalizer::new(ProxyFormat::Auto, Limits::default()),
    )?;
    let sessions_topic = TopicRole::Sessions.spec(&settings.topics).name;
    let received = read_committed(kafka, &sessions_topic, total).await;
    stage.stop().await?;
    let codec = RegistryCodec::new(&settings.registry)?;
    let mut sessions = Vec::new();
    for (_, _, payload, _) in received? {
        sessions.push(codec.decode::<NetworkSession>(&payload).await?);
    }
    Ok(sessions)
}

/// The sessions' `bytes_out`, sorted: each raw record's number is in it (500 + n).
fn sizes_out(sessions: &[NetworkSession]) -> Vec<i64> {
    let mut sizes: Vec<i64> = sessions.iter().map(|s| s.bytes_out).collect();
    sizes.sort_unstable();
    sizes
}

/// Runs normalize-proxy with `kafka` and expects it to stop on its own with the start-up
/// check's error, within `limit`.
async fn normalizer_refused(
    settings: &Settings,
    kafka: &KafkaSettings,
    limit: Duration,
) -> Result<String> {
    let settings = Settings {
        kafka: kafka.clone(),
        ..settings.clone()
    };
    let started = Instant::now();
    let stage = Background::normalizer(
        &settings,
        "normalize-proxy",
        TopicRole::RawProxy,
        ProxyNormalizer::new(ProxyFormat::Auto, Limits::default()),
    )?;
    let outcome = tokio::time::timeout(limit, stage.task).await;
    let Ok(joined) = outcome else {
        bail!("the normalizer was still running after {limit:?} with bad security settings");
    };
    match joined.context("normalizer task")? {
        Ok(()) => bail!("the normalizer ended without error"),
        Err(error) => {
            eprintln!("refused after {:?}: {error}", started.elapsed());
            Ok(error.to_string())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normalizer_works_through_sasl_ssl_and_mutual_tls_and_says_why_when_refused() -> Result<()>
{
    let options = StackOptions::from_env()?;
    let dir = options.run_dir.join(unique("secure-broker"));
    let pki = pki(&dir.join("pki"))?;
    let password = unique("pw").replace('-', "");
    let broker = tokio::task::spawn_blocking({
        let (options, spec) = (
            options.clone(),
            SecureBrokerSpec {
                dir: dir.join("broker"),
                keystore_pem: pki.broker_keystore.clone(),
                ca_pem: pki.ca.clone(),
                scram_users: vec![("offport".to_string(), password.clone())],
                plain_users: vec![("offport-plain".to_string(), password.clone())],
            },
        );
        move || SecureBroker::start(&options, &spec)
    })
    .await??;
    let result = exercise(&broker, &pki, &password).await;
    conclude(result, broker.log_tail(), broker, &dir)
}

async fn exercise(broker: &SecureBroker, pki: &Pki, password: &str) -> Result<()> {
    let scram = sasl(broker, pki, SaslMechanism::ScramSha256, "offport", password);
    let settings = Settings {
        kafka: scram.clone(),
        registry: endpoints().await?.registry(),
        topics: TopicSettings {
            prefix: format!("{}.", unique("it-secure")),
            partitions: 3,
            replication_factor: 1,
        },
        ..Settings::default()
    };
    let mut settings = settings;
    settings.pipeline.instance_id = Some(unique("instance"));
    settings.pipeline.group_prefix = format!("{}offport-", settings.topics.prefix);
    settings.pipeline.batch_max_records = 4;

    // Every mechanism the SASL_SSL listener offers, and mutual TLS, pass the start-up check.
    for (what, kafka) in [
        ("SCRAM-SHA-256", scram.clone()),
        (
            "SCRAM-SHA-512",
            sasl(broker, pki, SaslMechanism::ScramSha512, "offport", password),
        ),
        (
            "PLAIN",
            sasl(broker, pki, SaslMechanism::Plain, "offport-plain", password),
        ),
        ("mutual TLS", mutual_tls(broker, pki, true)),
    ] {
        let brokers = tokio::task::spawn_blocking(move || check(&kafka, Duration::from_secs(15)))
            .await?
            .with_context(|| format!("{what} start-up check"))?;
        ensure!(brokers == 1, "{what}: {brokers} brokers in the metadata");
    }

    // Topics created and raw records produced over SASL_SSL.
    let roles = [
        TopicRole::RawProxy,
        TopicRole::Sessions,
        TopicRole::DeadLetter,
    ];
    let specs: Vec<_> = roles.iter().map(|r| r.spec(&settings.topics)).collect();
    offport_kafka::topics::ensure_topics(&scram.client_config(), &specs).await?;
    let raw_topic = TopicRole::RawProxy.spec(&settings.topics).name;
    let first: Vec<RawInput> = (0..6)
        .map(|n| RawInput::value(session_json(&format!("device-{}", n % 3), n)))
        .collect();
    produce(&scram, &raw_topic, &first).await?;

    // normalize-proxy through SCRAM over TLS.
    let sizes = sizes_out(&normalize_through(&settings, &scram, 6).await?);
    ensure!(
        sizes == (500..506).collect::<Vec<_>>(),
        "SASL_SSL run: {sizes:?}"
    );

    // More records, then the same consumer group through mutual TLS: it carries on from the
    // offsets committed over SASL_SSL, so the topic ends with every record exactly once.
    let second: Vec<RawInput> = (6..10)
        .map(|n| RawInput::value(session_json("device-9", n)))
        .collect();
    let mtls = mutual_tls(broker, pki, true);
    produce(&mtls, &raw_topic, &second).await?;
    let sizes = sizes_out(&normalize_through(&settings, &mtls, 10).await?);
    ensure!(
        sizes == (500..510).collect::<Vec<_>>(),
        "after the mutual-TLS run: {sizes:?}"
    );

    // Refusals: each stops the normalizer with a reason, fast, and shows no password.
    let wrong = format!("{password}-wrong");
    let error = normalizer_refused(
        &settings,
        &sasl(broker, pki, SaslMechanism::ScramSha256, "offport", &wrong),
        Duration::from_secs(30),
    )
    .await?;
    ensure!(
        error.contains("rejected the connection")
            && error.contains("SCRAM-SHA-256 as user \"offport\"")
            && error.contains("Authentication failed"),
        "wrong password: {error}"
    );
    ensure!(
        !error.contains(&wrong) && !error.contains(password),
        "a password in: {error}"
    );

    let mut untrusted = scram.clone();
    untrusted.security.ca_location = Some(pki.stranger_ca.clone());
    let error = normalizer_refused(&settings, &untrusted, Duration::from_secs(30)).await?;
    ensure!(
        error.contains("rejected the connection") && error.contains("certificate verify failed"),
        "untrusted broker certificate: {error}"
    );

    let no_certificate = mutual_tls(broker, pki, false);
    let outcome =
        tokio::task::spawn_blocking(move || check(&no_certificate, Duration::from_secs(15)))
            .await?;
    match outcome {
        Err(ConnectError::Rejected { detail, .. }) => eprintln!("no client certificate: {detail}"),
        other => bail!("mutual TLS without a client certificate: {other:?}"),
    }
    Ok(())
}

/// The registry over HTTPS with basic authentication: the codec registers and reads back a
/// schema when it trusts the CA and names a user, and fails otherwise. (Mutual TLS to the
/// registry is configured the same way but not shown here: Apicurio's build fixes that client
/// certificates are not requested.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_codec_works_over_tls_with_basic_authentication() -> Result<()> {
    let options = StackOptions::from_env()?;
    let dir = options.run_dir.join(unique("secure-registry"));
    let pki = pki(&dir.join("pki"))?;
    let registry = tokio::task::spawn_blocking({
        let (options, spec) = (
            options.clone(),
            SecureRegistrySpec {
                dir: dir.join("registry"),
                certificate_pem: pki.server_certificate.clone(),
                key_pem: pki.server_key.clone(),
                users: vec![("offport".to_string(), "registry-pw-1".to_string())],
            },
        );
        move || SecureRegistry::start(&options, &spec)
    })
    .await??;
    let result = registry_exercise(&registry, &pki).await;
    conclude(result, registry.log_tail(), registry, &dir)
}

async fn registry_exercise(registry: &SecureRegistry, pki: &Pki) -> Result<()> {
    let trusted = RegistrySettings {
        url: registry.url.clone(),
        timeout_ms: 5_000,
        username: Some("offport".to_string()),
        password: Some(Secret::new("registry-pw-1")),
        ca_location: Some(pki.ca.clone()),
        // Offered; the registry does not ask for it.
        certificate_location: Some(pki.client_certificate.clone()),
        key_location: Some(pki.client_key.clone()),
        ..RegistrySettings::default()
    };
    let topic = unique("it-registry-tls");
    let session = offport_core::examples::network_session();
    // Quarkus may open its port a moment before the API answers: a few tries.
    let codec = RegistryCodec::new(&trusted)?;
    let mut encoded = None;
    for _ in 0..20 {
        match codec
            .encode_value(&topic, Contract::NetworkSession, &session)
            .await
        {
            Ok(bytes) => {
                encoded = Some(bytes);
                break;
            }
            Err(error) => {
                eprintln!("registry not ready yet: {error}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    let encoded = encoded.context("encoding through the HTTPS registry never succeeded")?;
    // A second codec (no cache) reads the schema back by id.
    let decoded: NetworkSession = RegistryCodec::new(&trusted)?.decode(&encoded).await?;
    ensure!(decoded == session, "round trip changed the session");

    for (what, username, password) in [
        ("no credentials", None, None),
        ("a wrong password", Some("offport"), Some("registry-pw-2")),
    ] {
        let settings = RegistrySettings {
            username: username.map(str::to_string),
            password: password.map(Secret::new),
            ..trusted.clone()
        };
        let error = RegistryCodec::new(&settings)?
            .encode_value(
                &unique("it-registry-tls"),
                Contract::NetworkSession,
                &session,
            )
            .await
            .err()
            .with_context(|| format!("the registry accepted {what}"))?;
        let text = error.to_string();
        eprintln!("with {what}: {text}");
        ensure!(text.contains("401"), "with {what}: {text}");
        // The services' start-up check says so before the first record.
        match check_registry(&settings).await {
            Err(ConnectError::RegistryRejected { detail, .. }) if detail.contains("HTTP 401") => {}
            other => bail!("start-up check with {what}: {other:?}"),
        }
    }
    check_registry(&trusted)
        .await
        .context("start-up check, trusted")?;

    let untrusting = RegistrySettings {
        ca_location: Some(pki.stranger_ca.clone()),
        ..trusted
    };
    let error = RegistryCodec::new(&untrusting)?
        .encode_value(
            &unique("it-registry-tls"),
            Contract::NetworkSession,
            &session,
        )
        .await
        .err()
        .context("the codec trusted a certificate signed by a CA it was not given")?;
    let text = format!("{error:?}");
    ensure!(text.contains("certificate"), "with a stranger's CA: {text}");
    match check_registry(&untrusting).await {
        Err(error @ ConnectError::RegistryRejected { .. }) => {
            let text = error.to_string();
            eprintln!("start-up check with a stranger's CA: {text}");
            ensure!(text.contains("certificate verify failed"), "{text}");
        }
        other => bail!("start-up check with a stranger's CA: {other:?}"),
    }
    Ok(())
}
