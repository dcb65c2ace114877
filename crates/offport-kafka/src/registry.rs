//! Avro encoding and decoding through a Confluent-compatible schema registry, in the Confluent
//! wire format: magic byte `0`, the 4-byte big-endian schema id, then the Avro binary datum.
//!
//! Schemas are registered under the TopicNameStrategy (`<topic>-value` / `<topic>-key`), the
//! default of Confluent's serializers, so Java and Python consumers of the same topics find them
//! without extra configuration. The schema text comes from `offport-core`'s embedded `schemas/`.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use apache_avro::from_value;
use offport_core::schema::{Contract, SchemaError};
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::settings::RegistrySettings;

/// Length of the Confluent wire-format header (magic byte + schema id).
pub const WIRE_HEADER_LEN: usize = 5;

/// Errors encoding or decoding through the registry.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The embedded schema could not be resolved (a build defect, caught by tests).
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The registry refused or could not be reached, or the value does not fit the schema.
    #[error("schema registry: {0}")]
    Registry(#[from] SRCError),
    /// The decoded Avro value does not map onto the Rust type.
    #[error("decoded value does not fit {target}: {source}")]
    Shape {
        /// Rust type name.
        target: &'static str,
        /// Avro error.
        source: Box<apache_avro::Error>,
    },
    /// The bytes are not in the Confluent wire format.
    #[error("not Confluent wire format: {0}")]
    WireFormat(&'static str),
}

impl CodecError {
    /// True when retrying later may succeed (registry unreachable or overloaded), false when
    /// the record itself is at fault and belongs in the dead-letter topic.
    pub fn is_transient(&self) -> bool {
        match self {
            CodecError::Registry(e) => e.retriable,
            _ => false,
        }
    }
}

/// The schema id of a Confluent wire-format payload.
pub fn schema_id(payload: &[u8]) -> Result<u32, CodecError> {
    match payload {
        [0, a, b, c, d, ..] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        [_, _, _, _, _, ..] => Err(CodecError::WireFormat("magic byte is not 0")),
        _ => Err(CodecError::WireFormat("shorter than the 5-byte header")),
    }
}

/// A schema registered for one subject, with a writer that serializes straight to Avro
/// binary (no intermediate `Value`).
struct Registered {
    id: u32,
    writer: apache_avro::writer::datum::GenericDatumWriter<'static>,
}

/// Encoder and decoder for offport's contracts, sharing one registry connection and cache.
///
/// The first value of a (topic, contract) goes through schema_registry_converter, which
/// registers the schema and validates the value against it; later values are serialized
/// directly with apache-avro's schema-aware serializer under the id the registry gave, which is
/// several times faster. The parsed schema of each (topic, contract) is kept for the life of the
/// process (a handful per service).
pub struct RegistryCodec {
    encoder: AvroEncoder,
    decoder: AvroDecoder,
    /// By topic, then contract (looked up by `&str`, no allocation per value).
    registered: RwLock<HashMap<String, HashMap<Contract, std::sync::Arc<Registered>>>>,
}

impl RegistryCodec {
    /// A codec for the registry at `settings.url`.
    pub fn new(settings: &RegistrySettings) -> Result<Self, CodecError> {
        let sr = sr_settings(settings)?;
        Ok(Self {
            encoder: AvroEncoder::new(sr.clone()),
            decoder: AvroDecoder::new(sr),
            registered: RwLock::new(HashMap::new()),
        })
    }

    /// Encodes `value` as the record value of `topic`, registering the contract's schema under
    /// `<topic>-value` on first use.
    pub async fn encode_value<T: Serialize>(
        &self,
        topic: &str,
        contract: Contract,
        value: &T,
    ) -> Result<Vec<u8>, CodecError> {
        let found = self
            .registered
            .read()
            .ok()
            .and_then(|cache| cache.get(topic)?.get(&contract).cloned());
        if let Some(registered) = found {
            let mut bytes = Vec::with_capacity(256);
            bytes.push(0);
            bytes.extend_from_slice(&registered.id.to_be_bytes());
            registered
                .writer
                .write_ser(&mut bytes, value)
                .map_err(|e| {
                    CodecError::Registry(SRCError::non_retryable_with_cause(
                        e,
                        "value does not fit its Avro schema",
                    ))
                })?;
            return Ok(bytes);
        }
        // Only the first value of a subject comes here, so the strategy is not cached.
        let supplied = SuppliedSchema::new(
            Some(contract.full_name()),
            SchemaType::Avro,
            contract.schema_json()?,
        );
        let strategy =
            SubjectNameStrategy::TopicNameStrategyWithSchema(topic.to_string(), false, supplied);
        let bytes = self.encoder.encode_struct(value, &strategy).await?;
        let id = schema_id(&bytes)?;
        // Leaked once per (topic, contract): the writer borrows its schema for 'static.
        let schema: &'static apache_avro::Schema = Box::leak(Box::new(contract.schema()?));
        let writer = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
            .build()
            .map_err(|e| {
                CodecError::Registry(SRCError::non_retryable_with_cause(
                    e,
                    "could not build an Avro writer",
                ))
            })?;
        if let Ok(mut cache) = self.registered.write() {
            cache
                .entry(topic.to_string())
                .or_default()
                .entry(contract)
                .or_insert_with(|| std::sync::Arc::new(Registered { id, writer }));
        }
        Ok(bytes)
    }

    /// Decodes a Confluent wire-format payload to an Avro value, fetching the writer schema by
    /// id.
    pub async fn decode_value(
        &self,
        payload: &[u8],
    ) -> Result<apache_avro::types::Value, CodecError> {
        schema_id(payload)?;
        Ok(self.decoder.decode(Some(payload)).await?.value)
    }

    /// Decodes a Confluent wire-format payload, fetching the writer schema by id.
    pub async fn decode<T: DeserializeOwned>(&self, payload: &[u8]) -> Result<T, CodecError> {
        schema_id(payload)?;
        let decoded = self.decoder.decode(Some(payload)).await?;
        from_value::<T>(&decoded.value).map_err(|source| CodecError::Shape {
            target: std::any::type_name::<T>(),
            source: Box::new(source),
        })
    }
}

/// Registry client settings: timeout, basic authentication, and the HTTP client's TLS (extra
/// trusted authorities, a client certificate for mutual TLS).
fn sr_settings(settings: &RegistrySettings) -> Result<SrSettings, CodecError> {
    let mut builder = SrSettings::new_builder(settings.url.trim_end_matches('/').to_string());
    builder.set_timeout(Duration::from_millis(settings.timeout_ms));
    if let Some(username) = &settings.username {
        builder.set_basic_authorization(username, settings.password.as_ref().map(|p| p.expose()));
    }
    Ok(builder.build_with(http_client(settings)?)?)
}

/// The HTTP client of the registry settings: extra trusted authorities and a client
/// certificate for mutual TLS.
pub(crate) fn http_client(
    settings: &RegistrySettings,
) -> Result<reqwest::ClientBuilder, CodecError> {
    let mut client = reqwest::Client::builder();
    let read = |what: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            CodecError::Registry(SRCError::non_retryable_with_cause(
                e,
                &format!("registry.{what}: cannot read {}", path.display()),
            ))
        })
    };
    let tls_error = |what: &str, e: reqwest::Error| {
        CodecError::Registry(SRCError::non_retryable_with_cause(
            e,
            &format!("registry.{what}: not usable PEM"),
        ))
    };
    if let Some(ca) = &settings.ca_location {
        let pem = read("ca_location", ca)?;
        for certificate in
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| tls_error("ca_location", e))?
        {
            client = client.add_root_certificate(certificate);
        }
    }
    if let (Some(certificate), Some(key)) = (&settings.certificate_location, &settings.key_location)
    {
        let identity = reqwest::Identity::from_pkcs8_pem(
            &read("certificate_location", certificate)?,
            &read("key_location", key)?,
        )
        .map_err(|e| tls_error("certificate_location", e))?;
        client = client.identity(identity);
    }
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_id_reads_the_big_endian_id_after_magic_zero() {
        assert_eq!(schema_id(&[0, 0, 0, 1, 2, 99]).ok(), Some(258));
        assert!(matches!(
            schema_id(&[1, 0, 0, 0, 1]),
            Err(CodecError::WireFormat(_))
        ));
        assert!(matches!(
            schema_id(&[0, 0, 0]),
            Err(CodecError::WireFormat(_))
        ));
        assert!(matches!(schema_id(&[]), Err(CodecError::WireFormat(_))));
    }
}
