//! Configuration of an offport service: a YAML/TOML file plus environment overrides, through
//! the `config` crate.
//!
//! Precedence, lowest first: built-in defaults, the file named by `--config` or
//! `OFFPORT_CONFIG`, then environment variables `OFFPORT__<SECTION>__<KEY>` (double underscore
//! between levels), e.g. `OFFPORT__KAFKA__BOOTSTRAP_SERVERS=broker:9092`. This module only
//! loads and validates; it does not connect to anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod kafka;
mod secret;
mod sections;

pub use kafka::*;
pub use secret::*;
pub use sections::*;

/// Errors loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file or an override could not be read or does not fit the expected shape.
    /// (Not a `#[source]`: its text is already in the message, and a reporter that prints the
    /// chain would print it twice.)
    #[error("configuration: {0}")]
    Load(config::ConfigError),
    /// A value is present but unusable.
    #[error("configuration: {key}: {why}")]
    Invalid {
        /// Dotted key at fault.
        key: String,
        /// What is wrong with it.
        why: String,
    },
}

impl From<config::ConfigError> for SettingsError {
    fn from(error: config::ConfigError) -> Self {
        Self::Load(error)
    }
}

/// Settings every offport service shares.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Kafka connection.
    pub kafka: KafkaSettings,
    /// Schema registry connection.
    pub registry: RegistrySettings,
    /// Topic layout.
    pub topics: TopicSettings,
    /// Logging.
    pub log: LogSettings,
    /// The consume-transform-produce loop.
    pub pipeline: PipelineSettings,
    /// Metrics and health endpoints.
    pub observability: ObservabilitySettings,
    /// Input parsing of the normalizers.
    pub normalize: NormalizeSettings,
    /// The stateful stages.
    pub stream: StreamSettings,
}

impl Settings {
    /// Loads settings from defaults, an optional file, and `OFFPORT__*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_from(file, std::env::vars())
    }

    /// Like [`Settings::load`] with an explicit environment (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        let env: std::collections::HashMap<String, String> = env.into_iter().collect();
        builder = builder.add_source(
            config::Environment::with_prefix("OFFPORT")
                .prefix_separator("__")
                .separator("__")
                .source(Some(env)),
        );
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        settings.resolve_secret_files()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Reads each `*_password_file` into its secret. Setting both the secret and its file is an
    /// error: which one wins would be a guess.
    fn resolve_secret_files(&mut self) -> Result<(), SettingsError> {
        let security = &mut self.kafka.security;
        resolve_secret_file(
            "kafka.security.sasl_password",
            &mut security.sasl_password,
            security.sasl_password_file.as_deref(),
        )?;
        resolve_secret_file(
            "kafka.security.key_password",
            &mut security.key_password,
            security.key_password_file.as_deref(),
        )?;
        resolve_secret_file(
            "registry.password",
            &mut self.registry.password,
            self.registry.password_file.as_deref(),
        )
    }

    /// The configuration as YAML with every secret shown as `***` (`offportctl config show`).
    pub fn redacted_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).unwrap_or_else(|error| format!("# cannot show: {error}\n"))
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |key: &str, why: &str| SettingsError::Invalid {
            key: key.to_string(),
            why: why.to_string(),
        };
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(invalid("kafka.bootstrap_servers", "must not be empty"));
        }
        validate_kafka_security(&self.kafka.security)?;
        validate_registry_security(&self.registry)?;
        if !(self.registry.url.starts_with("http://") || self.registry.url.starts_with("https://"))
        {
            return Err(invalid(
                "registry.url",
                "must start with http:// or https://",
            ));
        }
        if self.topics.partitions < 1 {
            return Err(invalid("topics.partitions", "must be at least 1"));
        }
        if self.topics.replication_factor < 1 {
            return Err(invalid("topics.replication_factor", "must be at least 1"));
        }
        if self.pipeline.batch_max_records == 0 {
            return Err(invalid("pipeline.batch_max_records", "must be at least 1"));
        }
        if self
            .observability
            .listen
            .parse::<std::net::SocketAddr>()
            .is_err()
        {
            return Err(invalid(
                "observability.listen",
                "must be an address such as 0.0.0.0:9464",
            ));
        }
        if let Err(why) = self
            .normalize
            .proxy_format
            .parse::<offport_core::normalize::proxy::ProxyFormat>()
        {
            return Err(invalid("normalize.proxy_format", &why.to_string()));
        }
        if self.stream.allowed_lateness_ms < 0 {
            return Err(invalid(
                "stream.allowed_lateness_ms",
                "must not be negative",
            ));
        }
        if self.stream.max_timeline_entries == 0 {
            return Err(invalid("stream.max_timeline_entries", "must be at least 1"));
        }
        if self.stream.suppression_window_ms < 1 {
            return Err(invalid(
                "stream.suppression_window_ms",
                "must be at least 1",
            ));
        }
        if self.normalize.flow_wait_ms < 0 {
            return Err(invalid("normalize.flow_wait_ms", "must not be negative"));
        }
        if self.normalize.flow_max_held == 0 {
            return Err(invalid("normalize.flow_max_held", "must be at least 1"));
        }
        if let Some(empty) = self
            .normalize
            .sources
            .iter()
            .position(|s| s.device_id.trim().is_empty())
        {
            return Err(invalid(
                &format!("normalize.sources[{empty}].device_id"),
                "must not be empty",
            ));
        }
        Ok(())
    }
}

fn resolve_secret_file(
    key: &str,
    secret: &mut Option<Secret>,
    file: Option<&Path>,
) -> Result<(), SettingsError> {
    let Some(file) = file else {
        return Ok(());
    };
    if secret.is_some() {
        return Err(SettingsError::Invalid {
            key: format!("{key}_file"),
            why: format!("set together with {key}; set one of them"),
        });
    }
    let text = std::fs::read_to_string(file).map_err(|error| SettingsError::Invalid {
        key: format!("{key}_file"),
        why: format!("cannot read {}: {error}", file.display()),
    })?;
    *secret = Some(Secret::new(text.trim_end_matches(['\r', '\n'])));
    Ok(())
}

/// A PEM file named by a setting must be readable now, not at the first TLS handshake.
fn check_readable(key: &str, file: Option<&Path>) -> Result<(), SettingsError> {
    match file {
        Some(file) => std::fs::File::open(file)
            .map(drop)
            .map_err(|error| SettingsError::Invalid {
                key: key.to_string(),
                why: format!("cannot read {}: {error}", file.display()),
            }),
        None => Ok(()),
    }
}

fn validate_kafka_security(security: &KafkaSecurity) -> Result<(), SettingsError> {
    let invalid = |key: &str, why: String| SettingsError::Invalid {
        key: format!("kafka.security.{key}"),
        why,
    };
    let protocol = security.protocol;
    if protocol.sasl() {
        if security.sasl_mechanism.is_none() {
            return Err(invalid(
                "sasl_mechanism",
                format!(
                    "required with protocol {}: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                    protocol.rdkafka()
                ),
            ));
        }
        if security
            .sasl_username
            .as_deref()
            .is_none_or(|u| u.trim().is_empty())
        {
            return Err(invalid(
                "sasl_username",
                format!("required with protocol {}", protocol.rdkafka()),
            ));
        }
        if security.sasl_password.is_none() {
            return Err(invalid(
                "sasl_password",
                format!(
                    "required with protocol {} (or sasl_password_file, or the environment variable OFFPORT__KAFKA__SECURITY__SASL_PASSWORD)",
                    protocol.rdkafka()
                ),
            ));
        }
    } else if security.sasl_mechanism.is_some()
        || security.sasl_username.is_some()
        || security.sasl_password.is_some()
    {
        return Err(invalid(
            "protocol",
            format!(
                "is {} but SASL credentials are set; use sasl_ssl (or sasl_plaintext)",
                protocol.rdkafka()
            ),
        ));
    }
    validate_tls_files(
        "kafka.security",
        [
            security.ca_location.as_deref(),
            security.certificate_location.as_deref(),
            security.key_location.as_deref(),
        ],
        (!protocol.tls()).then(|| {
            format!(
                "is set but protocol is {}; TLS files need ssl or sasl_ssl",
                protocol.rdkafka()
            )
        }),
    )
}

/// The PEM files of one connection (`<section>.ca_location`, `.certificate_location`,
/// `.key_location`): none while TLS is not in use (`not_tls` says why), a certificate only with
/// its key, and each readable now rather than at the first handshake.
fn validate_tls_files(
    section: &str,
    [ca, certificate, key]: [Option<&Path>; 3],
    not_tls: Option<String>,
) -> Result<(), SettingsError> {
    let files = [
        ("ca_location", ca),
        ("certificate_location", certificate),
        ("key_location", key),
    ];
    if let Some(why) = not_tls {
        if let Some((name, _)) = files.iter().find(|(_, file)| file.is_some()) {
            return Err(SettingsError::Invalid {
                key: format!("{section}.{name}"),
                why,
            });
        }
    }
    if certificate.is_some() != key.is_some() {
        return Err(SettingsError::Invalid {
            key: format!("{section}.key_location"),
            why: "a client certificate needs its key and a key its certificate (set both for mutual TLS)".to_string(),
        });
    }
    for (name, file) in files {
        check_readable(&format!("{section}.{name}"), file)?;
    }
    Ok(())
}

fn validate_registry_security(registry: &RegistrySettings) -> Result<(), SettingsError> {
    let invalid = |key: &str, why: &str| SettingsError::Invalid {
        key: format!("registry.{key}"),
        why: why.to_string(),
    };
    if registry.password.is_some() && registry.username.is_none() {
        return Err(invalid("username", "required when a password is set"));
    }
    validate_tls_files(
        "registry",
        [
            registry.ca_location.as_deref(),
            registry.certificate_location.as_deref(),
            registry.key_location.as_deref(),
        ],
        (!registry.url.starts_with("https://"))
            .then(|| "is set but registry.url is not https://".to_string()),
    )
}

#[cfg(test)]
mod tests;
