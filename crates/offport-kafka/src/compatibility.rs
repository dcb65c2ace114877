//! The compatibility level of the schema subjects offport writes, set and checked.
//!
//! A registry's default level (Apicurio: `NONE`) lets any change of a schema through, so a
//! breaking change would reach consumers as records they cannot read. Every stage sets its
//! output subjects' level (`registry.compatibility`, default `FULL_TRANSITIVE`) before it
//! writes, and checks that the schema it carries is compatible with every version the subject
//! holds; `offportctl topics create` does the same for every subject of the topology. An
//! incompatible schema stops the stage at start with the registry's answer, instead of
//! failing at the first record. docs/schemas.md says how a schema evolves.

use std::time::Duration;

use offport_core::schema::Contract;
use serde::{Deserialize, Serialize};

use crate::registry::http_client;
use crate::settings::RegistrySettings;

/// A subject's compatibility level, as the Confluent API names it, or `UNMANAGED` to leave the
/// registry's setting alone (when offport's credentials may not change subject configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    /// A new schema reads data written with the previous one.
    Backward,
    /// A new schema reads data written with every earlier one.
    BackwardTransitive,
    /// Data written with a new schema is read by the previous one.
    Forward,
    /// Data written with a new schema is read by every earlier one.
    ForwardTransitive,
    /// Backward and forward against the previous schema.
    Full,
    /// Backward and forward against every earlier schema: what analysts replaying retained
    /// topics (new readers, old data) and consumers upgraded later than offport (old readers,
    /// new data) both need.
    FullTransitive,
    /// No check.
    None,
    /// Leave the subject's level as the registry has it.
    Unmanaged,
}

impl Compatibility {
    /// The level's name in the Confluent API.
    pub fn as_str(self) -> &'static str {
        match self {
            Compatibility::Backward => "BACKWARD",
            Compatibility::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Compatibility::Forward => "FORWARD",
            Compatibility::ForwardTransitive => "FORWARD_TRANSITIVE",
            Compatibility::Full => "FULL",
            Compatibility::FullTransitive => "FULL_TRANSITIVE",
            Compatibility::None => "NONE",
            Compatibility::Unmanaged => "UNMANAGED",
        }
    }
}

/// Why a subject's level could not be set or its schema is refused.
#[derive(Debug, thiserror::Error)]
pub enum CompatibilityError {
    /// The registry could not be reached or answered 5xx: worth trying again.
    #[error("schema registry {url}: {message}")]
    Unreachable {
        /// The request's URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The registry refused the request (authentication, permissions, a bad subject).
    #[error("schema registry {url} answered {status}: {body}")]
    Refused {
        /// The request's URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The registry's answer.
        body: String,
    },
    /// The schema offport carries is not compatible with the versions the subject holds.
    #[error(
        "the {contract} schema of this offport is not {level} compatible with the versions subject \
         {subject} holds ({detail}); a consumer of that subject could not read what this stage \
         writes, or this stage what is there. See docs/schemas.md, \"Evolving a schema\""
    )]
    Incompatible {
        /// The subject, `<topic>-value`.
        subject: String,
        /// The contract's name.
        contract: String,
        /// The level in force.
        level: &'static str,
        /// The registry's explanation, when it gave one.
        detail: String,
    },
    /// A registry client setting is unusable (TLS files).
    #[error("schema registry client: {0}")]
    Client(String),
    /// The embedded schema could not be resolved (a build defect, caught by tests).
    #[error(transparent)]
    Schema(#[from] offport_core::schema::SchemaError),
}

impl CompatibilityError {
    /// True when trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, CompatibilityError::Unreachable { .. })
    }
}

/// Sets and checks compatibility levels through the Confluent-compatible API.
pub struct SubjectConfig {
    client: reqwest::Client,
    base: String,
    username: Option<String>,
    password: Option<String>,
    level: Compatibility,
}

impl SubjectConfig {
    /// A client of the registry of `settings`, managing subjects at `settings.compatibility`.
    pub fn new(settings: &RegistrySettings) -> Result<Self, CompatibilityError> {
        let client = http_client(settings)
            .map_err(|e| CompatibilityError::Client(e.to_string()))?
            .timeout(Duration::from_millis(settings.timeout_ms))
            .build()
            .map_err(|e| CompatibilityError::Client(e.to_string()))?;
        Ok(Self {
            client,
            base: settings.url.trim_end_matches('/').to_string(),
            username: settings.username.clone(),
            password: settings.password.as_ref().map(|p| p.expose().to_string()),
            level: settings.compatibility,
        })
    }

    /// Sets `subject`'s level (unless unmanaged), then checks `contract`'s schema against
    /// every version the subject holds at the level in force; returns that level.
    pub async fn ensure(
        &self,
        subject: &str,
        contract: Contract,
    ) -> Result<&'static str, CompatibilityError> {
        if self.level != Compatibility::Unmanaged {
            self.set_level(subject).await?;
        }
        let level = self.level_of(subject).await?;
        let schema = serde_json::json!({ "schema": contract.schema_json()?, "schemaType": "AVRO" });
        // `verbose` asks for the reasons; registries that do not know it ignore it.
        let path = format!("compatibility/subjects/{subject}/versions?verbose=true");
        let answer = match self.call(reqwest::Method::POST, &path, &schema).await {
            Ok(answer) => answer,
            // No version yet (Confluent: 40401; Apicurio: 404): nothing to be compatible with.
            Err(CompatibilityError::Refused { status: 404, .. }) => return Ok(level),
            Err(error) => return Err(error),
        };
        if answer
            .get("is_compatible")
            .and_then(serde_json::Value::as_bool)
            == Some(false)
        {
            let detail = answer
                .get("messages")
                .and_then(serde_json::Value::as_array)
                .map(|m| {
                    m.iter()
                        .filter_map(serde_json::Value::as_str)
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| "the registry gave no reason".to_string());
            return Err(CompatibilityError::Incompatible {
                subject: subject.to_string(),
                contract: contract.name().to_string(),
                level,
                detail,
            });
        }
        Ok(level)
    }

    /// Sets the subject's level. Stages start together and share the dead-letter subject:
    /// Apicurio answers 409 to the second of two concurrent first settings, after which the
    /// level is there (checked) or is set again.
    async fn set_level(&self, subject: &str) -> Result<(), CompatibilityError> {
        let body = serde_json::json!({ "compatibility": self.level.as_str() });
        let path = format!("config/{subject}");
        match self.call(reqwest::Method::PUT, &path, &body).await {
            Err(CompatibilityError::Refused { status: 409, .. }) => {
                if self.level_of(subject).await? == self.level.as_str() {
                    return Ok(());
                }
                self.call(reqwest::Method::PUT, &path, &body)
                    .await
                    .map(drop)
            }
            other => other.map(drop),
        }
    }

    /// The level in force for `subject`: its own, else the registry's global one.
    pub async fn level_of(&self, subject: &str) -> Result<&'static str, CompatibilityError> {
        let answer = match self
            .call(
                reqwest::Method::GET,
                &format!("config/{subject}"),
                &serde_json::Value::Null,
            )
            .await
        {
            Ok(answer) => answer,
            Err(CompatibilityError::Refused { status: 404, .. }) => {
                self.call(reqwest::Method::GET, "config", &serde_json::Value::Null)
                    .await?
            }
            Err(error) => return Err(error),
        };
        let named = answer
            .get("compatibilityLevel")
            .or_else(|| answer.get("compatibility"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("NONE");
        Ok(LEVELS
            .iter()
            .find(|level| level.as_str() == named)
            .map_or("NONE", |level| level.as_str()))
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, CompatibilityError> {
        let url = format!("{}/{path}", self.base);
        let mut request = self.client.request(method, &url).header(
            reqwest::header::ACCEPT,
            "application/vnd.schemaregistry.v1+json",
        );
        if !body.is_null() {
            request = request
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/vnd.schemaregistry.v1+json",
                )
                .body(body.to_string());
        }
        if let Some(username) = &self.username {
            request = request.basic_auth(username, self.password.as_deref());
        }
        let unreachable = |e: reqwest::Error| CompatibilityError::Unreachable {
            url: url.clone(),
            message: e.to_string(),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        if status.is_server_error() {
            return Err(CompatibilityError::Unreachable {
                url,
                message: format!("{status}: {text}"),
            });
        }
        if !status.is_success() {
            return Err(CompatibilityError::Refused {
                url,
                status: status.as_u16(),
                body: text,
            });
        }
        serde_json::from_str(&text).map_err(|e| CompatibilityError::Refused {
            url,
            status: status.as_u16(),
            body: format!("not JSON ({e}): {text}"),
        })
    }
}

const LEVELS: [Compatibility; 7] = [
    Compatibility::Backward,
    Compatibility::BackwardTransitive,
    Compatibility::Forward,
    Compatibility::ForwardTransitive,
    Compatibility::Full,
    Compatibility::FullTransitive,
    Compatibility::None,
];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn levels_read_and_print_as_the_confluent_api_names_them() {
        for level in LEVELS.iter().chain([&Compatibility::Unmanaged]) {
            let parsed: Compatibility = serde_yaml_ng::from_str(level.as_str()).unwrap();
            assert_eq!(parsed, *level);
        }
        assert!(serde_yaml_ng::from_str::<Compatibility>("full").is_err());
    }
}
