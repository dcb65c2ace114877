//! The start-up checks of the Kafka and registry connections: before a stage creates its
//! consumer and transactional producer, it asks the cluster for its metadata with the
//! configured security settings, and the registry for its subjects. A broker that rejects the credentials or the TLS handshake stops the stage at once
//! with an error that says so (librdkafka on its own would retry such a connection forever and
//! the transactional producer would only time out); a cluster that is merely unreachable is
//! waited for with backoff, as a broker outage is later on. The registry likewise: refused
//! credentials (HTTP 401/403) or a failed TLS handshake stop the stage, an unreachable registry
//! is waited for.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::settings::{KafkaSettings, RegistrySettings, Secret};
use crate::shutdown::Shutdown;

/// Why the cluster could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The broker refused this client: wrong credentials, unknown mechanism, or a TLS handshake
    /// that failed (untrusted certificate, host name mismatch, client certificate refused).
    /// Retrying does not help.
    #[error("Kafka at {servers} rejected the connection ({security}): {detail}")]
    Rejected {
        /// Bootstrap servers.
        servers: String,
        /// The security settings in force, without secrets.
        security: String,
        /// librdkafka's reason.
        detail: String,
    },
    /// No broker answered in time; it may come up later.
    #[error("Kafka at {servers} did not answer ({security}): {detail}")]
    Unreachable {
        /// Bootstrap servers.
        servers: String,
        /// The security settings in force, without secrets.
        security: String,
        /// librdkafka's reason, or the timeout.
        detail: String,
    },
    /// The registry refused this client: credentials (HTTP 401/403) or TLS.
    #[error("schema registry at {url} rejected the connection{user}: {detail}")]
    RegistryRejected {
        /// Registry URL.
        url: String,
        /// ` as user "<name>"` when basic authentication is configured.
        user: String,
        /// What failed.
        detail: String,
    },
    /// The registry did not answer.
    #[error("schema registry at {url} did not answer: {detail}")]
    RegistryUnreachable {
        /// Registry URL.
        url: String,
        /// What failed.
        detail: String,
    },
}

impl ConnectError {
    /// True when waiting may help.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ConnectError::Unreachable { .. } | ConnectError::RegistryUnreachable { .. }
        )
    }
}

/// Collects the global errors librdkafka reports while connecting.
#[derive(Default)]
struct Recorder {
    errors: Mutex<Vec<(Option<RDKafkaErrorCode>, String)>>,
}

impl ClientContext for Recorder {
    fn error(&self, error: KafkaError, reason: &str) {
        if let Ok(mut errors) = self.errors.lock() {
            errors.push((error.rdkafka_error_code(), reason.to_string()));
        }
    }
}

impl ConsumerContext for Recorder {}

/// True for a failure that retrying cannot fix.
fn is_rejection(code: Option<RDKafkaErrorCode>, reason: &str) -> bool {
    matches!(
        code,
        Some(
            RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::SSL
                | RDKafkaErrorCode::UnsupportedSASLMechanism
                | RDKafkaErrorCode::IllegalSASLState
        )
    ) || [
        "SSL handshake failed",
        "certificate verify failed",
        // The broker's TLS alert: e.g. "bad certificate" when mutual TLS lacks a client
        // certificate or the broker does not trust it.
        "SSL alert number",
        "SASL authentication",
    ]
    .iter()
    .any(|needle| reason.contains(needle))
}

/// The security settings in force, for error messages: protocol, mechanism and user, never a
/// secret.
pub fn describe_security(settings: &KafkaSettings) -> String {
    let security = &settings.security;
    let mut text = format!("security protocol {}", security.protocol.rdkafka());
    if let Some(mechanism) = security.sasl_mechanism {
        text.push_str(&format!(", SASL {}", mechanism.rdkafka()));
    }
    if let Some(user) = &security.sasl_username {
        text.push_str(&format!(" as user {user:?}"));
    }
    if security.certificate_location.is_some() {
        text.push_str(", client certificate");
    }
    text
}

/// Fetches the cluster's metadata once with the configured settings; returns the number of
/// brokers. Blocking: call from a blocking thread.
pub fn check(settings: &KafkaSettings, timeout: Duration) -> Result<usize, ConnectError> {
    let servers = settings.bootstrap_servers.clone();
    let security = describe_security(settings);
    let consumer: BaseConsumer<Recorder> = settings
        .client_config()
        .create_with_context(Recorder::default())
        .map_err(|error| ConnectError::Rejected {
            servers: servers.clone(),
            security: security.clone(),
            detail: format!("client configuration: {error}"),
        })?;
    // Short metadata requests with the queued error events served in between (polling hands
    // them to the context), so a rejection is seen at the first failed handshake rather than
    // at the end of `timeout`.
    let deadline = std::time::Instant::now() + timeout;
    let result = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let attempt = consumer.fetch_metadata(None, left.min(Duration::from_secs(1)));
        if attempt.is_ok() {
            break attempt;
        }
        for _ in 0..10 {
            if consumer.poll(Duration::from_millis(5)).is_none() {
                break;
            }
        }
        let rejected = consumer.context().errors.lock().is_ok_and(|errors| {
            errors
                .iter()
                .any(|(code, reason)| is_rejection(*code, reason))
        });
        if rejected || left.is_zero() {
            break attempt;
        }
    };
    let errors = consumer
        .context()
        .errors
        .lock()
        .map(|e| e.clone())
        .unwrap_or_default();
    match result {
        Ok(metadata) => Ok(metadata.brokers().len()),
        Err(error) => {
            if let Some((_, reason)) = errors
                .iter()
                .find(|(code, reason)| is_rejection(*code, reason))
            {
                return Err(ConnectError::Rejected {
                    servers,
                    security,
                    detail: reason.clone(),
                });
            }
            let mut reasons: Vec<&str> = Vec::new();
            for (_, reason) in &errors {
                if !reasons.contains(&reason.as_str()) {
                    reasons.push(reason);
                }
            }
            let detail = if reasons.is_empty() {
                error.to_string()
            } else {
                reasons.join("; ")
            };
            Err(ConnectError::Unreachable {
                servers,
                security,
                detail,
            })
        }
    }
}

/// Asks the registry for its subjects once with the configured authentication and TLS.
pub async fn check_registry(settings: &RegistrySettings) -> Result<(), ConnectError> {
    let url = settings.url.trim_end_matches('/').to_string();
    let user = settings
        .username
        .as_ref()
        .map(|u| format!(" as user {u:?}"))
        .unwrap_or_default();
    let rejected = |detail: String| ConnectError::RegistryRejected {
        url: url.clone(),
        user: user.clone(),
        detail,
    };
    let client = crate::registry::http_client(settings)
        .map_err(|e| rejected(e.to_string()))?
        .timeout(Duration::from_millis(settings.timeout_ms))
        .build()
        .map_err(|e| rejected(format!("HTTP client: {e}")))?;
    let mut request = client.get(format!("{url}/subjects"));
    if let Some(username) = &settings.username {
        request = request.basic_auth(username, settings.password.as_ref().map(Secret::expose));
    }
    match request.send().await {
        Ok(response) => match response.status().as_u16() {
            200..=299 => Ok(()),
            status @ (401 | 403) => Err(rejected(format!(
                "HTTP {status}: {}",
                if settings.username.is_some() {
                    "credentials refused (registry.username, registry.password)"
                } else {
                    "authentication required (set registry.username and registry.password)"
                }
            ))),
            // Anything else (a 5xx while the registry starts, a proxy's 404) may pass.
            status => Err(ConnectError::RegistryUnreachable {
                url: url.clone(),
                detail: format!("GET /subjects answered HTTP {status}"),
            }),
        },
        Err(error) => {
            let chain = error_chain(&error);
            if ["certificate", "SSL routines", "handshake"]
                .iter()
                .any(|needle| chain.contains(needle))
            {
                Err(rejected(chain))
            } else {
                Err(ConnectError::RegistryUnreachable {
                    url: url.clone(),
                    detail: chain,
                })
            }
        }
    }
}

/// An error and its sources, `: `-separated (reqwest keeps the TLS reason in a source).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Layers often repeat their source's message.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Checks both connections until they work, one rejects this client, or shutdown. An
/// unreachable cluster or registry is retried with backoff up to `max_backoff` between
/// attempts.
pub async fn wait_for_connections(
    kafka: &KafkaSettings,
    registry: &RegistrySettings,
    max_backoff: Duration,
    shutdown: &Shutdown,
) -> Result<(), ConnectError> {
    let mut backoff = Duration::from_millis(500);
    loop {
        let attempt = kafka.clone();
        let outcome = tokio::task::spawn_blocking(move || check(&attempt, Duration::from_secs(10)))
            .await
            .unwrap_or_else(|join| {
                Err(ConnectError::Unreachable {
                    servers: kafka.bootstrap_servers.clone(),
                    security: describe_security(kafka),
                    detail: format!("connection check did not finish: {join}"),
                })
            });
        let outcome = match outcome {
            Ok(brokers) => check_registry(registry).await.map(|()| brokers),
            Err(error) => Err(error),
        };
        match outcome {
            Ok(brokers) => {
                tracing::info!(
                    brokers,
                    security = %describe_security(kafka),
                    registry = %registry.url,
                    "connected to Kafka and the schema registry"
                );
                return Ok(());
            }
            Err(error) if error.is_transient() && !shutdown.is_triggered() => {
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "waiting for Kafka and the registry");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return Err(error),
                }
                backoff = (backoff * 2).min(max_backoff);
            }
            Err(error) => return Err(error),
        }
    }
}

/// [`wait_for_connections`] for a stage's start: `Ok(false)` when shutdown came while the
/// cluster or the registry was still unreachable (nothing was read, so stopping is clean, not
/// an error), `Ok(true)` once both answer.
pub async fn connected_unless_shut_down(
    kafka: &KafkaSettings,
    registry: &RegistrySettings,
    max_backoff: Duration,
    shutdown: &Shutdown,
) -> Result<bool, ConnectError> {
    match wait_for_connections(kafka, registry, max_backoff, shutdown).await {
        Ok(()) => Ok(true),
        Err(error) if error.is_transient() && shutdown.is_triggered() => {
            tracing::info!(%error, "shut down before Kafka and the registry answered");
            Ok(false)
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_handshakes_are_rejections_timeouts_are_not() {
        assert!(is_rejection(
            Some(RDKafkaErrorCode::Authentication),
            "SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-256"
        ));
        assert!(is_rejection(
            Some(RDKafkaErrorCode::BrokerTransportFailure),
            "ssl://127.0.0.1:9094/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed"
        ));
        assert!(is_rejection(
            Some(RDKafkaErrorCode::BrokerTransportFailure),
            "ssl://127.0.0.1:45615/bootstrap: Receive failed: error:0A000412:SSL routines::sslv3 alert bad certificate: SSL alert number 42 (after 1ms in state APIVERSION_QUERY)"
        ));
        assert!(!is_rejection(
            Some(RDKafkaErrorCode::BrokerTransportFailure),
            "127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused"
        ));
        assert!(!is_rejection(
            Some(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down"
        ));
    }

    #[test]
    fn the_description_names_user_and_mechanism_but_no_password() {
        use crate::settings::{SaslMechanism, Secret, SecurityProtocol};
        let mut settings = KafkaSettings::default();
        settings.security.protocol = SecurityProtocol::SaslSsl;
        settings.security.sasl_mechanism = Some(SaslMechanism::ScramSha256);
        settings.security.sasl_username = Some("svc-offport".into());
        settings.security.sasl_password = Some(Secret::new("hunter2"));
        let text = describe_security(&settings);
        assert_eq!(
            text,
            "security protocol sasl_ssl, SASL SCRAM-SHA-256 as user \"svc-offport\""
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_not_rejected() {
        let settings = KafkaSettings {
            // Port 9 (discard) is closed on loopback.
            bootstrap_servers: "127.0.0.1:9".into(),
            ..KafkaSettings::default()
        };
        let error = tokio::task::spawn_blocking(move || {
            check(&settings, Duration::from_millis(1_500)).map(|_| ())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
        let Err(text) = error else {
            panic!("a closed port answered");
        };
        assert!(
            text.starts_with("Kafka at 127.0.0.1:9 did not answer"),
            "{text}"
        );
    }
}
