//! The Kafka client section: bootstrap servers, security, librdkafka properties.

use super::*;

/// How the services reach the brokers: `security.protocol` and its companions in librdkafka's
/// terms, as named keys. Passwords may come from files (Kubernetes Secrets mounted as volumes)
/// or environment variables (`OFFPORT__KAFKA__SECURITY__SASL_PASSWORD`); a `*_file` is read
/// when the configuration is loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSecurity {
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub protocol: SecurityProtocol,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (SASL protocols only).
    pub sasl_mechanism: Option<SaslMechanism>,
    /// SASL user name.
    pub sasl_username: Option<String>,
    /// SASL password.
    pub sasl_password: Option<Secret>,
    /// File whose content (trailing newline trimmed) is the SASL password.
    pub sasl_password_file: Option<PathBuf>,
    /// PEM file of the certificate authorities to trust for the brokers' certificates; the
    /// system's trust store when unset.
    pub ca_location: Option<PathBuf>,
    /// PEM file of this client's certificate (mutual TLS).
    pub certificate_location: Option<PathBuf>,
    /// PEM file of this client's private key (mutual TLS).
    pub key_location: Option<PathBuf>,
    /// Passphrase of an encrypted private key.
    pub key_password: Option<Secret>,
    /// File whose content is that passphrase.
    pub key_password_file: Option<PathBuf>,
    /// Check that a broker's certificate names the host connected to (librdkafka's
    /// `ssl.endpoint.identification.algorithm=https`). Turn off only for test brokers.
    pub endpoint_identification: bool,
}

impl Default for KafkaSecurity {
    fn default() -> Self {
        Self {
            protocol: SecurityProtocol::Plaintext,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            sasl_password_file: None,
            ca_location: None,
            certificate_location: None,
            key_location: None,
            key_password: None,
            key_password_file: None,
            endpoint_identification: true,
        }
    }
}

/// librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No encryption, no authentication.
    Plaintext,
    /// TLS (with a client certificate: mutual TLS).
    Ssl,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// The name librdkafka (and this configuration) uses.
    pub fn rdkafka(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    pub(super) fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    pub(super) fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// librdkafka's `sasl.mechanism`, of those offport supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    /// User name and password in the clear (use over TLS only).
    #[serde(rename = "PLAIN")]
    Plain,
    /// Salted challenge-response with SHA-256 (RFC 7677).
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// Salted challenge-response with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The name librdkafka (and this configuration) uses.
    pub fn rdkafka(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Connection to the Kafka cluster. `Debug` and `Serialize` redact secret properties.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// Encryption and authentication.
    pub security: KafkaSecurity,
    /// Extra librdkafka properties passed verbatim, for settings the shell has no dedicated key
    /// for. They win over the named keys.
    #[serde(serialize_with = "redacted_properties")]
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".to_string(),
            security: KafkaSecurity::default(),
            properties: BTreeMap::new(),
        }
    }
}

impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("security", &self.security)
            .field("properties", &redacted(&self.properties))
            .finish()
    }
}

/// True for a librdkafka property whose value is a secret (`sasl.password`,
/// `ssl.key.password`, `ssl.key.pem`, `sasl.oauthbearer.client.secret`, ...).
pub fn is_secret_property(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "password",
        "secret",
        "ssl.key.pem",
        "sasl.oauthbearer.config",
        "keystore",
    ]
    .iter()
    .any(|needle| name.contains(needle))
}

/// The properties with every secret value replaced by `***`.
fn redacted(properties: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    properties
        .iter()
        .map(|(name, value)| {
            let shown = if is_secret_property(name) {
                REDACTED
            } else {
                value.as_str()
            };
            (name.as_str(), shown)
        })
        .collect()
}

fn redacted_properties<S: serde::Serializer>(
    properties: &BTreeMap<String, String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    redacted(properties).serialize(serializer)
}

impl KafkaSettings {
    /// A librdkafka client configuration with the bootstrap servers, the security settings and
    /// the extra properties set.
    pub fn client_config(&self) -> rdkafka::ClientConfig {
        let mut config = rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        let security = &self.security;
        config.set("security.protocol", security.protocol.rdkafka());
        if security.protocol.sasl() {
            if let Some(mechanism) = security.sasl_mechanism {
                config.set("sasl.mechanism", mechanism.rdkafka());
            }
            if let Some(username) = &security.sasl_username {
                config.set("sasl.username", username);
            }
            if let Some(password) = &security.sasl_password {
                config.set("sasl.password", password.expose());
            }
        }
        if security.protocol.tls() {
            let path = |p: &PathBuf| p.to_string_lossy().into_owned();
            if let Some(ca) = &security.ca_location {
                config.set("ssl.ca.location", path(ca));
            }
            if let Some(certificate) = &security.certificate_location {
                config.set("ssl.certificate.location", path(certificate));
            }
            if let Some(key) = &security.key_location {
                config.set("ssl.key.location", path(key));
            }
            if let Some(password) = &security.key_password {
                config.set("ssl.key.password", password.expose());
            }
            config.set(
                "ssl.endpoint.identification.algorithm",
                if security.endpoint_identification {
                    "https"
                } else {
                    "none"
                },
            );
        }
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}
