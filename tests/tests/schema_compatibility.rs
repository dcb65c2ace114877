//! Subjects get the configured compatibility level, the registry refuses an incompatible change
//! of an offport schema, and a stage's start-up check names the subject whose versions its
//! schema does not fit. Against the real registry.

use anyhow::{ensure, Context, Result};
use offport_core::examples;
use offport_core::schema::Contract;
use offport_kafka::compatibility::{Compatibility, CompatibilityError, SubjectConfig};
use offport_kafka::registry::RegistryCodec;
use offport_tests::{endpoints, unique};

/// POSTs `schema` as a new version of `subject`; the HTTP status and body.
fn register(
    registry_url: &str,
    subject: &str,
    schema: &serde_json::Value,
) -> Result<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(&format!("{registry_url}/subjects/{subject}/versions"))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .send_json(serde_json::json!({ "schema": schema.to_string() }))?;
    Ok((
        response.status().as_u16(),
        response.body_mut().read_to_string()?,
    ))
}

/// The contract's schema with one more field.
fn with_field(contract: Contract, field: serde_json::Value) -> Result<serde_json::Value> {
    let mut schema: serde_json::Value = serde_json::from_str(&contract.schema_json()?)?;
    schema
        .get_mut("fields")
        .and_then(serde_json::Value::as_array_mut)
        .context("a record schema")?
        .push(field);
    Ok(schema)
}

#[tokio::test]
async fn an_incompatible_change_of_a_subject_offport_writes_is_refused() -> Result<()> {
    let endpoints = endpoints().await?;
    let settings = endpoints.registry();
    assert_eq!(settings.compatibility, Compatibility::FullTransitive);
    let topic = unique("compat");
    let subject = format!("{topic}-value");
    let config = SubjectConfig::new(&settings)?;

    // Before the first version: the level is set, and there is nothing to be incompatible with.
    config.ensure(&subject, Contract::NetworkSession).await?;
    assert_eq!(config.level_of(&subject).await?, "FULL_TRANSITIVE");

    // The stage's first record registers its schema, which fits itself.
    let codec = RegistryCodec::new(&settings)?;
    codec
        .encode_value(
            &topic,
            Contract::NetworkSession,
            &examples::network_session(),
        )
        .await?;
    config.ensure(&subject, Contract::NetworkSession).await?;

    // A required field added: old records lack it (not backward), so the registry refuses it.
    let breaking = with_field(
        Contract::NetworkSession,
        serde_json::json!({"name": "tenant", "type": "string"}),
    )?;
    let (status, body) = register(&endpoints.registry_url, &subject, &breaking)?;
    ensure!(
        status == 409,
        "an incompatible version was answered {status}: {body}"
    );

    // An optional field with a default evolves both ways, and is taken.
    let evolving = with_field(
        Contract::NetworkSession,
        serde_json::json!({"name": "tenant", "type": ["null", "string"], "default": null}),
    )?;
    let (status, body) = register(&endpoints.registry_url, &subject, &evolving)?;
    ensure!(
        status == 200,
        "a compatible version was answered {status}: {body}"
    );
    config.ensure(&subject, Contract::NetworkSession).await?;
    Ok(())
}

#[tokio::test]
async fn a_stage_whose_schema_does_not_fit_the_subject_is_told_which_and_why() -> Result<()> {
    let endpoints = endpoints().await?;
    let settings = endpoints.registry();
    let subject = format!("{}-value", unique("compat"));
    // The subject holds another record under the registry's default level (NONE).
    let other = with_field(
        Contract::NetworkSession,
        serde_json::json!({"name": "tenant", "type": "string"}),
    )?;
    let (status, body) = register(&endpoints.registry_url, &subject, &other)?;
    ensure!(
        status == 200,
        "registering the first version: {status}: {body}"
    );

    let unmanaged = SubjectConfig::new(&offport_kafka::settings::RegistrySettings {
        compatibility: Compatibility::Unmanaged,
        ..settings.clone()
    })?;
    unmanaged.ensure(&subject, Contract::NetworkSession).await?;
    ensure!(
        unmanaged.level_of(&subject).await? != "FULL_TRANSITIVE",
        "UNMANAGED must leave the subject's level alone"
    );

    let error = SubjectConfig::new(&settings)?
        .ensure(&subject, Contract::NetworkSession)
        .await
        .err()
        .context("a schema that cannot read the subject's version passed the check")?;
    match &error {
        CompatibilityError::Incompatible {
            subject: named,
            level,
            ..
        } => {
            assert_eq!(named, &subject);
            assert_eq!(*level, "FULL_TRANSITIVE");
        }
        other => panic!("expected Incompatible, got {other}"),
    }
    let message = error.to_string();
    assert!(
        message.contains(&subject) && message.contains("docs/schemas.md"),
        "{message}"
    );
    Ok(())
}
