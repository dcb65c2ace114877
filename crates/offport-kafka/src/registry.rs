//! Avro encoding and decoding through a Confluent-compatible schema registry, in the Confluent
//! wire format: magic byte `0`, the 4-byte big-endian schema id, then the Avro binary datum.
//!
//! Schemas are registered under the TopicNameStrategy (`<topic>-value` / `<topic>-key`), the
//! default of Confluent's serializers, so Java and Python consumers of the same topics find them
//! without extra configuration. The schema text comes from `offport-core`'s embedded `schemas/`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::{from_value, AvroSchema};
use offport_core::cache::{Bounded, CacheStats};
use offport_core::schema::{BinaryError, BinarySchema, Contract, SchemaError};
use schema_registry_converter::async_impl::avro::AvroEncoder;
use schema_registry_converter::async_impl::schema_registry::{get_schema_by_id, SrSettings};
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
    /// The Avro datum does not fit the Rust type (read by the binary codec).
    #[error("decoded value does not fit {target}: {source}")]
    Binary {
        /// Rust type name.
        target: &'static str,
        /// The binary codec's error.
        source: Box<BinaryError>,
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

/// A schema registered for one subject, with its binary codec that serializes straight to
/// Avro binary (no intermediate `Value`).
pub(crate) struct Registered {
    id: u32,
    binary: BinarySchema,
}

impl Registered {
    /// `value` in the Confluent wire format under this registered schema: magic byte, schema
    /// id, Avro binary. Synchronous (no registry call): for encoding off the async loop.
    pub(crate) fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        let mut bytes = Vec::with_capacity(256);
        bytes.push(0);
        bytes.extend_from_slice(&self.id.to_be_bytes());
        self.binary.encode(value, &mut bytes).map_err(|e| {
            CodecError::Registry(SRCError::non_retryable_with_cause(
                e,
                "value does not fit its Avro schema",
            ))
        })?;
        Ok(bytes)
    }
}

/// A writer schema fetched from the registry.
struct WriterSchema {
    /// Parsed by apache-avro, for resolution against another reader schema.
    parsed: Arc<apache_avro::Schema>,
    /// The registry's text, for the binary codec when no resolution is needed.
    text: String,
}

/// Writer schemas kept (by id). Each is a few KiB; a registry serving offport's topics holds
/// a few versions of each of its contracts, far fewer than this.
pub const WRITER_SCHEMAS_KEPT: u64 = 1_024;

/// Readers kept (by writer schema id and Rust type).
pub const READERS_KEPT: u64 = 1_024;

/// The metric labels of the codec's caches: writer schemas, readers.
pub const CACHES: [&str; 2] = ["registry_writer_schemas", "registry_readers"];

/// The two schemas of a resolving read, owned beside the reader that borrows them.
struct ResolvingSchemas {
    writer: Arc<apache_avro::Schema>,
    own: apache_avro::Schema,
}

type DatumReader<'a> = GenericDatumReader<'a>;

self_cell::self_cell!(
    /// A reader that resolves one writer schema against a type's own, with both schemas.
    struct ResolvingReader {
        owner: ResolvingSchemas,
        #[covariant]
        dependent: DatumReader,
    }
);

/// Encoder and decoder for offport's contracts, sharing one registry connection and cache.
///
/// The first value of a (topic, contract) goes through schema_registry_converter, which
/// registers the schema and validates the value against it; later values are serialized
/// directly with apache-avro's schema-aware serializer under the id the registry gave, which is
/// several times faster. The parsed schema of each (topic, contract) is kept for the life of the
/// process (a handful per service).
pub struct RegistryCodec {
    encoder: AvroEncoder,
    sr: SrSettings,
    /// By topic, then contract (looked up by `&str`, no allocation per value). Not a cache:
    /// one entry per (output topic, contract) the service writes, all known from its
    /// configuration.
    registered: RwLock<HashMap<String, HashMap<Contract, Arc<Registered>>>>,
    /// Writer schemas by id, fetched once each while kept (ids come from input records).
    writers: Bounded<u32, Arc<WriterSchema>>,
    /// How to read each (writer schema id, Rust type).
    readers: Bounded<(u32, std::any::TypeId), Arc<Reader>>,
}

/// How values written with one schema are read into one Rust type.
enum Reader {
    /// The writer schema is the type's own: straight from Avro binary into the type (no
    /// intermediate `Value`), several times faster.
    Direct(BinarySchema),
    /// Another schema (an older or newer writer): decoded to a `Value`, resolved against the
    /// type's schema by Avro's rules, then mapped onto the type.
    Resolving(ResolvingReader),
}

impl RegistryCodec {
    /// A codec for the registry at `settings.url`.
    pub fn new(settings: &RegistrySettings) -> Result<Self, CodecError> {
        let sr = sr_settings(settings)?;
        Ok(Self {
            encoder: AvroEncoder::new(sr.clone()),
            sr,
            registered: RwLock::new(HashMap::new()),
            writers: Bounded::new(CACHES[0], WRITER_SCHEMAS_KEPT),
            readers: Bounded::new(CACHES[1], READERS_KEPT),
        })
    }

    /// Hits, misses and entries of the codec's caches (writer schemas, readers).
    pub fn cache_stats(&self) -> [CacheStats; 2] {
        [self.writers.stats(), self.readers.stats()]
    }

    /// The contract's schema as registered for `topic`'s values, once a value was encoded
    /// there (by [`RegistryCodec::encode_value`], which registers it).
    pub(crate) fn registered(&self, topic: &str, contract: Contract) -> Option<Arc<Registered>> {
        self.registered
            .read()
            .ok()
            .and_then(|cache| cache.get(topic)?.get(&contract).cloned())
    }

    /// `value` encoded as the record value of `topic` without awaiting, when the contract's
    /// schema is already registered there; `None` when it is not (see [`Self::encode_value`]).
    pub(crate) fn encode_registered<T: Serialize>(
        &self,
        topic: &str,
        contract: Contract,
        value: &T,
    ) -> Option<Result<Vec<u8>, CodecError>> {
        self.registered(topic, contract)
            .map(|registered| registered.encode(value))
    }

    /// Encodes `value` as the record value of `topic`, registering the contract's schema under
    /// `<topic>-value` on first use.
    pub async fn encode_value<T: Serialize>(
        &self,
        topic: &str,
        contract: Contract,
        value: &T,
    ) -> Result<Vec<u8>, CodecError> {
        if let Some(encoded) = self.encode_registered(topic, contract, value) {
            return encoded;
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
        let binary = contract.binary()?;
        if let Ok(mut cache) = self.registered.write() {
            cache
                .entry(topic.to_string())
                .or_default()
                .entry(contract)
                .or_insert_with(|| Arc::new(Registered { id, binary }));
        }
        Ok(bytes)
    }

    /// Decodes a Confluent wire-format payload into `T`, fetching the writer schema by id the
    /// first time it is seen.
    pub async fn decode<T: DeserializeOwned + AvroSchema + 'static>(
        &self,
        payload: &[u8],
    ) -> Result<T, CodecError> {
        self.fetch_writer(schema_id(payload)?).await?;
        self.decode_known(payload)
    }

    /// True when the writer schema of `id` is at hand, so [`Self::decode_known`] needs no
    /// registry call.
    pub fn knows(&self, id: u32) -> bool {
        self.writers.contains(&id)
    }

    /// Fetches and keeps the writer schema of `id` unless it is already known.
    pub async fn fetch_writer(&self, id: u32) -> Result<(), CodecError> {
        if self.writers.get(&id).is_some() {
            return Ok(());
        }
        let registered = get_schema_by_id(id, &self.sr).await?;
        let schema = apache_avro::Schema::parse_str(&registered.schema).map_err(|e| {
            CodecError::Registry(SRCError::non_retryable_with_cause(
                e,
                &format!("schema {id} from the registry is not valid Avro"),
            ))
        })?;
        self.writers.insert(
            id,
            Arc::new(WriterSchema {
                parsed: Arc::new(schema),
                text: registered.schema,
            }),
        );
        Ok(())
    }

    /// Decodes a payload whose writer schema is known ([`Self::fetch_writer`]), without
    /// awaiting: straight into `T` when the writer schema is `T`'s own, else through a `Value`
    /// resolved against `T`'s schema.
    pub fn decode_known<T: DeserializeOwned + AvroSchema + 'static>(
        &self,
        payload: &[u8],
    ) -> Result<T, CodecError> {
        let id = schema_id(payload)?;
        let mut datum = payload.get(WIRE_HEADER_LEN..).unwrap_or_default();
        let reader = self.reader::<T>(id)?;
        let shape = |source: apache_avro::Error| CodecError::Shape {
            target: std::any::type_name::<T>(),
            source: Box::new(source),
        };
        match reader.as_ref() {
            Reader::Direct(binary) => binary.decode::<T>(datum).map_err(|e| CodecError::Binary {
                target: std::any::type_name::<T>(),
                source: Box::new(e),
            }),
            Reader::Resolving(reader) => {
                let value = reader
                    .borrow_dependent()
                    .read_value(&mut datum)
                    .map_err(shape)?;
                from_value::<T>(&value).map_err(shape)
            }
        }
    }

    fn reader<T: AvroSchema + 'static>(&self, id: u32) -> Result<Arc<Reader>, CodecError> {
        self.readers
            .try_get_or_insert_with((id, std::any::TypeId::of::<T>()), || {
                self.build_reader::<T>(id).map(Arc::new)
            })
    }

    fn build_reader<T: AvroSchema + 'static>(&self, id: u32) -> Result<Reader, CodecError> {
        // Not `get`: the lookup that counts is the reader's.
        let writer = self.writers.peek(&id).ok_or(CodecError::WireFormat(
            "writer schema not fetched, or evicted before use (call fetch_writer first)",
        ))?;
        let own = T::get_schema();
        if writer.parsed.canonical_form() == own.canonical_form() {
            return Ok(Reader::Direct(BinarySchema::parse(&writer.text)?));
        }
        let schemas = ResolvingSchemas {
            writer: Arc::clone(&writer.parsed),
            own,
        };
        let reader = ResolvingReader::try_new(schemas, |schemas| {
            GenericDatumReader::builder(&schemas.writer)
                .reader_schema(&schemas.own)
                .build()
        })
        .map_err(|e| CodecError::Shape {
            target: std::any::type_name::<T>(),
            source: Box::new(e),
        })?;
        Ok(Reader::Resolving(reader))
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
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use offport_core::examples;
    use offport_core::model::{
        Baseline, DeadLetter, DeviceContext, DeviceEvent, EnrichedSession, Finding, NetworkSession,
    };

    /// A codec that knows writer schema `id` without asking a registry (none runs here).
    fn codec_knowing(id: u32, text: String) -> RegistryCodec {
        let codec = RegistryCodec::new(&RegistrySettings::default()).unwrap();
        let parsed = Arc::new(apache_avro::Schema::parse_str(&text).unwrap());
        codec
            .writers
            .insert(id, Arc::new(WriterSchema { parsed, text }));
        codec
    }

    /// The one reader a codec built in a test.
    fn only_reader(codec: &RegistryCodec) -> Arc<Reader> {
        let readers = codec.readers.values();
        assert_eq!(readers.len(), 1);
        readers.into_iter().next().unwrap()
    }

    fn wire<T: Serialize>(id: u32, schema: &apache_avro::Schema, value: &T) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&id.to_be_bytes());
        apache_avro::writer::datum::GenericDatumWriter::builder(schema)
            .build()
            .unwrap()
            .write_ser(&mut bytes, value)
            .unwrap();
        bytes
    }

    fn round_trip<T>(contract: Contract, example: T)
    where
        T: Serialize + DeserializeOwned + AvroSchema + PartialEq + std::fmt::Debug + 'static,
    {
        let schema = contract.schema().unwrap();
        let codec = codec_knowing(7, contract.schema_json().unwrap());
        let payload = wire(7, &schema, &example);
        let decoded: T = codec.decode_known(&payload).unwrap();
        assert_eq!(decoded, example, "{contract:?}");
        assert!(
            matches!(only_reader(&codec).as_ref(), Reader::Direct(_)),
            "{contract:?}: the writer schema is the type's own, so it is read directly"
        );
    }

    #[test]
    fn every_contract_reads_back_directly_what_was_written() {
        round_trip::<NetworkSession>(Contract::NetworkSession, examples::network_session());
        round_trip::<DeviceEvent>(Contract::DeviceEvent, examples::device_event());
        round_trip::<DeviceContext>(Contract::DeviceContext, examples::device_context());
        round_trip::<EnrichedSession>(Contract::EnrichedSession, examples::enriched_session());
        round_trip::<Finding>(Contract::Finding, examples::finding());
        round_trip::<Baseline>(Contract::Baseline, examples::baseline());
        round_trip::<DeadLetter>(Contract::DeadLetter, examples::dead_letter());
    }

    #[test]
    fn another_writer_schema_is_resolved_by_avro_rules() {
        // An older writer without the optional `app_name` field: the reader fills its default.
        let mut json: serde_json::Value =
            serde_json::from_str(&Contract::NetworkSession.schema_json().unwrap()).unwrap();
        let fields = json["fields"].as_array_mut().unwrap();
        fields.retain(|f| f["name"] != "app_name");
        let older = apache_avro::Schema::parse_str(&json.to_string()).unwrap();
        let mut value = apache_avro::to_value(examples::network_session()).unwrap();
        if let apache_avro::types::Value::Record(fields) = &mut value {
            fields.retain(|(name, _)| name != "app_name");
        }
        let mut payload = vec![0, 0, 0, 0, 9];
        apache_avro::writer::datum::GenericDatumWriter::builder(&older)
            .build()
            .unwrap()
            .write_value(&mut payload, value)
            .unwrap();
        let codec = codec_knowing(9, json.to_string());
        let decoded: NetworkSession = codec.decode_known(&payload).unwrap();
        let mut expected = examples::network_session();
        expected.app_name = None;
        assert_eq!(decoded, expected);
        assert!(matches!(only_reader(&codec).as_ref(), Reader::Resolving(_)));
    }

    #[test]
    fn an_unknown_writer_schema_is_an_error_not_a_panic() {
        let codec = RegistryCodec::new(&RegistrySettings::default()).unwrap();
        let error = codec
            .decode_known::<NetworkSession>(&[0, 0, 0, 0, 1, 2])
            .unwrap_err();
        assert!(matches!(error, CodecError::WireFormat(_)), "{error}");
    }

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
