//! A throwaway broker with TLS and SASL listeners, for the security tests. It runs beside the
//! local stack (same Kafka jars, own ports, own data directory) and stops when dropped.
//!
//! Listeners, all on loopback:
//! - `PLAINTEXT`: inter-broker and set-up only;
//! - `SASL_SSL`: SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN over TLS;
//! - `SSL`: mutual TLS (`ssl.client.auth=required`), client certificates signed by the CA.
//!
//! The caller supplies the certificates (PEM): the broker's private key followed by its
//! certificate chain, and the CA that signs broker and client certificates.
//!
//! [`SecureRegistry`] is the same for Apicurio Registry: HTTPS only (Quarkus' TLS registry,
//! `quarkus.tls.*`) and HTTP basic authentication against users embedded in its configuration
//! (Quarkus' properties-file security, which Apicurio's distribution carries). Client
//! certificates cannot be required: `quarkus.http.ssl.client-auth` is fixed when Apicurio is
//! built.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::stack::{
    format_storage, kafka_answers, kafka_properties, registry_command, spawn_kafka, spawn_logged,
    stop_group, wait_until, write_log4j, Listeners, StackOptions,
};
use crate::{fetch, java};

/// What the secure broker needs.
#[derive(Debug, Clone)]
pub struct SecureBrokerSpec {
    /// Directory for its configuration, data and log (created; emptied first).
    pub dir: PathBuf,
    /// PEM: the broker's PKCS#8 private key (unencrypted) followed by its certificate chain.
    pub keystore_pem: PathBuf,
    /// PEM: the CA certificate trusted for client certificates on the `SSL` listener.
    pub ca_pem: PathBuf,
    /// SCRAM users (name, password; letters, digits and dashes), created for SCRAM-SHA-256 and
    /// SCRAM-SHA-512.
    pub scram_users: Vec<(String, String)>,
    /// PLAIN users (name, password).
    pub plain_users: Vec<(String, String)>,
}

/// A running secure broker; stopped on drop.
#[derive(Debug)]
pub struct SecureBroker {
    /// `127.0.0.1:<port>` of the PLAINTEXT listener.
    pub plaintext: String,
    /// `127.0.0.1:<port>` of the SASL_SSL listener.
    pub sasl_ssl: String,
    /// `127.0.0.1:<port>` of the mutual-TLS listener.
    pub ssl: String,
    /// The broker's log file.
    pub log: PathBuf,
    pid: i32,
    needle: String,
}

/// A port the system has free on loopback now.
pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A JAAS option value in double quotes (Kafka's JAAS parser takes `\"` and `\\`).
fn jaas_quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

impl SecureBroker {
    /// Formats storage with the SCRAM users and starts the broker; returns once its PLAINTEXT
    /// listener answers.
    pub fn start(options: &StackOptions, spec: &SecureBrokerSpec) -> Result<Self> {
        let libs = fetch::kafka(&options.cache_dir, &options.kafka_version)?;
        let java = java::find(17, "Apache Kafka 4")?;
        if spec.dir.exists() {
            std::fs::remove_dir_all(&spec.dir)
                .with_context(|| format!("clearing {}", spec.dir.display()))?;
        }
        let data = spec.dir.join("data");
        std::fs::create_dir_all(&data)?;
        let (plain, sasl, mtls, controller) =
            (free_port()?, free_port()?, free_port()?, free_port()?);
        let plain_users: String = spec
            .plain_users
            .iter()
            .map(|(user, password)| format!(" user_{user}={}", jaas_quote(password)))
            .collect();
        let extra = format!(
            "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN\n\
             listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
             listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
             listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required{plain_users};\n\
             ssl.keystore.type=PEM\n\
             ssl.keystore.location={keystore}\n\
             ssl.truststore.type=PEM\n\
             ssl.truststore.location={ca}\n\
             listener.name.ssl.ssl.client.auth=required\n",
            keystore = spec.keystore_pem.display(),
            ca = spec.ca_pem.display(),
        );
        let listeners = Listeners {
            listeners: format!(
                "PLAINTEXT://127.0.0.1:{plain},SASL_SSL://127.0.0.1:{sasl},SSL://127.0.0.1:{mtls}"
            ),
            advertised: format!(
                "PLAINTEXT://127.0.0.1:{plain},SASL_SSL://127.0.0.1:{sasl},SSL://127.0.0.1:{mtls}"
            ),
            protocol_map: "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL".to_string(),
            extra,
        };
        let properties = spec.dir.join("server.properties");
        std::fs::write(
            &properties,
            kafka_properties(controller, &listeners, &data, 3),
        )?;
        let log4j = write_log4j(&spec.dir)?;
        let mut scram = Vec::new();
        for (user, password) in &spec.scram_users {
            for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
                scram.push("--add-scram".to_string());
                scram.push(format!("{mechanism}=[name={user},password={password}]"));
            }
        }
        format_storage(&java.path, &libs, &log4j, &properties, &scram)?;
        let log = spec.dir.join("kafka.log");
        let pid = spawn_kafka(&java.path, &libs, &log4j, &properties, &spec.dir, &log)?;
        let broker = Self {
            plaintext: format!("127.0.0.1:{plain}"),
            sasl_ssl: format!("127.0.0.1:{sasl}"),
            ssl: format!("127.0.0.1:{mtls}"),
            log,
            pid,
            // The properties path is on the JVM's command line.
            needle: properties.to_string_lossy().into_owned(),
        };
        wait_until(
            "the secure Kafka broker",
            Instant::now() + options.start_timeout,
            broker.pid,
            &broker.log,
            || kafka_answers(&broker.plaintext, Duration::from_secs(2)).map(|_| ()),
        )?;
        Ok(broker)
    }

    /// The last lines of the broker's log, for a failing test's message.
    pub fn log_tail(&self) -> String {
        crate::stack::log_tail(&self.log)
    }
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        if let Err(error) = stop_group(self.pid, &self.needle, Duration::from_secs(10)) {
            eprintln!("stopping the secure broker (pid {}): {error}", self.pid);
        }
    }
}

/// What the secure registry needs.
#[derive(Debug, Clone)]
pub struct SecureRegistrySpec {
    /// Directory for its log (created).
    pub dir: PathBuf,
    /// PEM certificate (chain) of the registry.
    pub certificate_pem: PathBuf,
    /// PEM PKCS#8 private key of that certificate.
    pub key_pem: PathBuf,
    /// Basic-authentication users (name, password); every API request must name one.
    pub users: Vec<(String, String)>,
}

/// A running Apicurio Registry on HTTPS with basic authentication; stopped on drop.
#[derive(Debug)]
pub struct SecureRegistry {
    /// `https://127.0.0.1:<port>/apis/ccompat/v7`.
    pub url: String,
    /// The registry's log file.
    pub log: PathBuf,
    pid: i32,
    needle: String,
}

impl SecureRegistry {
    /// Starts the registry; returns once its HTTPS port accepts connections (Quarkus opens its
    /// ports when start-up is complete).
    pub fn start(options: &StackOptions, spec: &SecureRegistrySpec) -> Result<Self> {
        let home = fetch::apicurio(&options.cache_dir, &options.apicurio_version)?;
        let java = java::find(21, "Apicurio Registry 3")?;
        std::fs::create_dir_all(&spec.dir)?;
        let (http, https, management) = (free_port()?, free_port()?, free_port()?);
        let needle = spec.dir.to_string_lossy().into_owned();
        let mut extra = vec![
            format!("-Dquarkus.http.ssl-port={https}"),
            "-Dquarkus.http.insecure-requests=disabled".to_string(),
            format!(
                "-Dquarkus.tls.key-store.pem.0.cert={}",
                spec.certificate_pem.display()
            ),
            format!(
                "-Dquarkus.tls.key-store.pem.0.key={}",
                spec.key_pem.display()
            ),
            "-Dquarkus.security.users.embedded.enabled=true".to_string(),
            "-Dquarkus.security.users.embedded.plain-text=true".to_string(),
            "-Dquarkus.http.auth.basic=true".to_string(),
            "-Dquarkus.http.auth.permission.api.paths=/apis/*".to_string(),
            "-Dquarkus.http.auth.permission.api.policy=authenticated".to_string(),
        ];
        for (user, password) in &spec.users {
            extra.push(format!(
                "-Dquarkus.security.users.embedded.users.{user}={password}"
            ));
        }
        let command = registry_command(&java.path, &home, http, management, &needle, &extra);
        let log = spec.dir.join("registry.log");
        let pid = spawn_logged(command, &log)?;
        let registry = Self {
            url: format!("https://127.0.0.1:{https}/apis/ccompat/v7"),
            log,
            pid,
            needle,
        };
        wait_until(
            "the secure Apicurio Registry",
            Instant::now() + options.start_timeout,
            registry.pid,
            &registry.log,
            || {
                std::net::TcpStream::connect(("127.0.0.1", https))
                    .map(drop)
                    .context("HTTPS port closed")
            },
        )?;
        Ok(registry)
    }

    /// The last lines of the registry's log.
    pub fn log_tail(&self) -> String {
        crate::stack::log_tail(&self.log)
    }
}

impl Drop for SecureRegistry {
    fn drop(&mut self) {
        if let Err(error) = stop_group(self.pid, &self.needle, Duration::from_secs(10)) {
            eprintln!("stopping the secure registry (pid {}): {error}", self.pid);
        }
    }
}
