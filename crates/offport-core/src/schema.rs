//! The Avro contracts of `schemas/`, embedded at build time and resolved into self-contained
//! schemas for the registry.
//!
//! Each named type lives in its own `.avsc` file and refers to the others by full name (as
//! avro-tools "imports" do). A schema registry wants one self-contained document per subject, so
//! [`Contract::schema_json`] inlines every referenced named type at its first use. This module
//! does not talk to the registry; the Kafka shell does.

use std::collections::HashSet;

use apache_avro::Schema;
use serde_json::Value;

/// Namespace of every offport Avro type.
pub const NAMESPACE: &str = "dev.offport.v1";

/// Every `.avsc` file of `schemas/`, by type name.
const FILES: &[(&str, &str)] = &[
    ("Analytic", include_str!("../../../schemas/Analytic.avsc")),
    (
        "AppCategoryBehavior",
        include_str!("../../../schemas/AppCategoryBehavior.avsc"),
    ),
    (
        "AppProtocol",
        include_str!("../../../schemas/AppProtocol.avsc"),
    ),
    (
        "AppRunState",
        include_str!("../../../schemas/AppRunState.avsc"),
    ),
    (
        "AttributionSource",
        include_str!("../../../schemas/AttributionSource.avsc"),
    ),
    (
        "BackgroundExecution",
        include_str!("../../../schemas/BackgroundExecution.avsc"),
    ),
    ("Baseline", include_str!("../../../schemas/Baseline.avsc")),
    (
        "BaselineScope",
        include_str!("../../../schemas/BaselineScope.avsc"),
    ),
    (
        "BaselineThresholds",
        include_str!("../../../schemas/BaselineThresholds.avsc"),
    ),
    (
        "DeadLetter",
        include_str!("../../../schemas/DeadLetter.avsc"),
    ),
    (
        "DeadLetterReason",
        include_str!("../../../schemas/DeadLetterReason.avsc"),
    ),
    (
        "DeviceContext",
        include_str!("../../../schemas/DeviceContext.avsc"),
    ),
    (
        "DeviceEvent",
        include_str!("../../../schemas/DeviceEvent.avsc"),
    ),
    (
        "DeviceEventKind",
        include_str!("../../../schemas/DeviceEventKind.avsc"),
    ),
    ("DnsInfo", include_str!("../../../schemas/DnsInfo.avsc")),
    (
        "EnrichedSession",
        include_str!("../../../schemas/EnrichedSession.avsc"),
    ),
    (
        "EnterpriseException",
        include_str!("../../../schemas/EnterpriseException.avsc"),
    ),
    ("Evidence", include_str!("../../../schemas/Evidence.avsc")),
    (
        "EvidenceKind",
        include_str!("../../../schemas/EvidenceKind.avsc"),
    ),
    ("Finding", include_str!("../../../schemas/Finding.avsc")),
    (
        "FindingStatus",
        include_str!("../../../schemas/FindingStatus.avsc"),
    ),
    ("HttpInfo", include_str!("../../../schemas/HttpInfo.avsc")),
    ("LockState", include_str!("../../../schemas/LockState.avsc")),
    (
        "ManagedApp",
        include_str!("../../../schemas/ManagedApp.avsc"),
    ),
    (
        "MdmContext",
        include_str!("../../../schemas/MdmContext.avsc"),
    ),
    (
        "NetworkApiUsage",
        include_str!("../../../schemas/NetworkApiUsage.avsc"),
    ),
    (
        "NetworkSession",
        include_str!("../../../schemas/NetworkSession.avsc"),
    ),
    ("Platform", include_str!("../../../schemas/Platform.avsc")),
    ("PortRange", include_str!("../../../schemas/PortRange.avsc")),
    (
        "ProtocolEvidence",
        include_str!("../../../schemas/ProtocolEvidence.avsc"),
    ),
    (
        "ProtocolPortRule",
        include_str!("../../../schemas/ProtocolPortRule.avsc"),
    ),
    (
        "RecordHeader",
        include_str!("../../../schemas/RecordHeader.avsc"),
    ),
    ("ScopeKind", include_str!("../../../schemas/ScopeKind.avsc")),
    ("Severity", include_str!("../../../schemas/Severity.avsc")),
    (
        "SourceFormat",
        include_str!("../../../schemas/SourceFormat.avsc"),
    ),
    ("TlsInfo", include_str!("../../../schemas/TlsInfo.avsc")),
    ("Transport", include_str!("../../../schemas/Transport.avsc")),
];

/// Errors resolving a contract's schema. They mean the embedded `.avsc` files are inconsistent,
/// which the tests of this module rule out for a released build.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// A `.avsc` file is not valid JSON.
    #[error("schemas/{file}.avsc is not valid JSON: {source}")]
    Json {
        /// File stem.
        file: String,
        /// Parser error.
        source: serde_json::Error,
    },
    /// The resolved document is not a valid Avro schema.
    #[error("schema {name} is not valid Avro: {source}")]
    Avro {
        /// Type name.
        name: String,
        /// Avro error.
        source: Box<apache_avro::Error>,
    },
    /// The schema document is not accepted by the fast binary codec.
    #[error("schema is not usable by the binary codec: {source}")]
    Fast {
        /// serde_avro_fast's error.
        source: Box<serde_avro_fast::schema::SchemaError>,
    },
}

/// A top-level record that travels on a Kafka topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Contract {
    /// `NetworkSession`: normalized proxy/VPN/sensor sessions.
    NetworkSession,
    /// `DeviceEvent`: normalized EDR events.
    DeviceEvent,
    /// `DeviceContext`: normalized MDM context.
    DeviceContext,
    /// `EnrichedSession`: joiner output.
    EnrichedSession,
    /// `Finding`: scorer output.
    Finding,
    /// `Baseline`: baseline documents on the config topic.
    Baseline,
    /// `BaselineScope`: the key of the baselines topic.
    BaselineScope,
    /// `DeadLetter`: rejected records.
    DeadLetter,
}

impl Contract {
    /// Every contract.
    pub const ALL: [Contract; 8] = [
        Contract::NetworkSession,
        Contract::DeviceEvent,
        Contract::DeviceContext,
        Contract::EnrichedSession,
        Contract::Finding,
        Contract::Baseline,
        Contract::BaselineScope,
        Contract::DeadLetter,
    ];

    /// Short type name, also the `.avsc` file stem.
    pub fn name(self) -> &'static str {
        match self {
            Contract::NetworkSession => "NetworkSession",
            Contract::DeviceEvent => "DeviceEvent",
            Contract::DeviceContext => "DeviceContext",
            Contract::EnrichedSession => "EnrichedSession",
            Contract::Finding => "Finding",
            Contract::Baseline => "Baseline",
            Contract::BaselineScope => "BaselineScope",
            Contract::DeadLetter => "DeadLetter",
        }
    }

    /// Fully qualified Avro name, e.g. `dev.offport.v1.NetworkSession`; the registry subject
    /// under the RecordNameStrategy.
    pub fn full_name(self) -> String {
        format!("{NAMESPACE}.{}", self.name())
    }

    /// The self-contained schema document (every referenced type inlined at first use).
    pub fn schema_json(self) -> Result<String, SchemaError> {
        resolved_json(self.name()).map(|v| v.to_string())
    }

    /// The parsed Avro schema.
    pub fn schema(self) -> Result<Schema, SchemaError> {
        let json = self.schema_json()?;
        Schema::parse_str(&json).map_err(|source| SchemaError::Avro {
            name: self.full_name(),
            source: Box::new(source),
        })
    }

    /// The contract's schema prepared for fast binary encoding and decoding.
    pub fn binary(self) -> Result<BinarySchema, SchemaError> {
        BinarySchema::parse(&self.schema_json()?)
    }
}

/// An Avro schema prepared for the hot path: Rust values written straight to Avro binary and
/// read straight back, with serde_avro_fast (fields matched in schema order, no per-field map
/// lookup and no intermediate value). It produces the same bytes as apache-avro (the tests of
/// this module compare them for every contract) and, given the schema a datum was written with,
/// reads it field by field into the Rust type; resolving between two different schemas is
/// apache-avro's job (the registry codec decides which to use).
pub struct BinarySchema {
    schema: serde_avro_fast::Schema,
}

impl std::fmt::Debug for BinarySchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinarySchema").finish_non_exhaustive()
    }
}

/// A value that does not fit its schema, or a datum that cannot be read with it.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    /// Writing a value that does not fit the schema.
    #[error("value does not fit its Avro schema: {0}")]
    Encode(#[from] serde_avro_fast::ser::SerError),
    /// Reading a datum that is not valid under the schema, or does not fit the Rust type.
    #[error("Avro datum does not fit its schema or type: {0}")]
    Decode(#[from] serde_avro_fast::de::DeError),
}

impl BinarySchema {
    /// Parses a self-contained schema document (a contract's, or one from the registry).
    pub fn parse(json: &str) -> Result<Self, SchemaError> {
        let schema =
            json.parse::<serde_avro_fast::Schema>()
                .map_err(|source| SchemaError::Fast {
                    source: Box::new(source),
                })?;
        Ok(Self { schema })
    }

    /// Appends the Avro binary datum of `value` to `out`.
    pub fn encode<T: serde::Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), BinaryError> {
        let mut config = serde_avro_fast::ser::SerializerConfig::new(&self.schema);
        serde_avro_fast::to_datum(value, out, &mut config)?;
        Ok(())
    }

    /// Reads one Avro binary datum written with this schema into `T`.
    pub fn decode<'a, T: serde::Deserialize<'a>>(&self, datum: &'a [u8]) -> Result<T, BinaryError> {
        Ok(serde_avro_fast::from_datum_slice(datum, &self.schema)?)
    }
}

/// The raw text of a `.avsc` file by type name.
pub fn file_text(name: &str) -> Option<&'static str> {
    FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

/// Names of every embedded `.avsc` file.
pub fn file_names() -> impl Iterator<Item = &'static str> {
    FILES.iter().map(|(n, _)| *n)
}

fn parse_file(name: &str) -> Result<Option<Value>, SchemaError> {
    match file_text(name) {
        None => Ok(None),
        Some(text) => serde_json::from_str(text)
            .map(Some)
            .map_err(|source| SchemaError::Json {
                file: name.to_string(),
                source,
            }),
    }
}

/// The self-contained schema document of any embedded named type, by short name.
pub fn resolved_json(name: &str) -> Result<Value, SchemaError> {
    let mut defined = HashSet::new();
    let root = parse_file(name)?.unwrap_or(Value::String(format!("{NAMESPACE}.{name}")));
    inline(root, &mut defined)
}

/// Walks a schema depth-first in Avro's definition order and replaces the first reference to
/// each named type of another file with that file's definition.
fn inline(schema: Value, defined: &mut HashSet<String>) -> Result<Value, SchemaError> {
    match schema {
        Value::String(reference) => {
            let short = reference
                .strip_prefix(NAMESPACE)
                .and_then(|rest| rest.strip_prefix('.'))
                .unwrap_or(&reference)
                .to_string();
            if defined.contains(&short) {
                return Ok(Value::String(reference));
            }
            match parse_file(&short)? {
                Some(definition) => inline(definition, defined),
                None => Ok(Value::String(reference)),
            }
        }
        Value::Array(branches) => branches
            .into_iter()
            .map(|branch| inline(branch, defined))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Value::Object(mut object) => {
            if let Some(Value::String(name)) = object.get("name") {
                if matches!(object.get("type"), Some(Value::String(t)) if t == "record" || t == "enum" || t == "fixed")
                {
                    defined.insert(name.clone());
                }
            }
            for key in ["type", "items", "values"] {
                if let Some(child) = object.remove(key) {
                    object.insert(key.to_string(), inline(child, defined)?);
                }
            }
            if let Some(Value::Array(fields)) = object.remove("fields") {
                let mut resolved = Vec::with_capacity(fields.len());
                for field in fields {
                    resolved.push(inline_field(field, defined)?);
                }
                object.insert("fields".to_string(), Value::Array(resolved));
            }
            Ok(Value::Object(object))
        }
        other => Ok(other),
    }
}

fn inline_field(field: Value, defined: &mut HashSet<String>) -> Result<Value, SchemaError> {
    match field {
        Value::Object(mut object) => {
            if let Some(child) = object.remove("type") {
                object.insert("type".to_string(), inline(child, defined)?);
            }
            Ok(Value::Object(object))
        }
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    //! The contract tests: `.avsc` files and Rust types must not drift apart.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;
    use crate::examples;
    use crate::model::*;
    use apache_avro::reader::datum::GenericDatumReader;
    use apache_avro::writer::datum::GenericDatumWriter;
    use apache_avro::{from_value, to_value, AvroSchema};
    use serde::{de::DeserializeOwned, Serialize};

    fn schema_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
    }

    #[test]
    fn every_file_in_schemas_dir_is_embedded_and_vice_versa() {
        let mut on_disk: Vec<String> = std::fs::read_dir(schema_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                name.strip_suffix(".avsc").map(str::to_string)
            })
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = file_names().map(str::to_string).collect();
        embedded.sort();
        assert_eq!(
            on_disk, embedded,
            "add new .avsc files to FILES in schema.rs"
        );
        for name in &embedded {
            let text = std::fs::read_to_string(schema_dir().join(format!("{name}.avsc"))).unwrap();
            assert_eq!(
                Some(text.as_str()),
                file_text(name),
                "{name}.avsc embedded copy is stale"
            );
        }
    }

    /// Walks a file's JSON and returns the problems a reader of the contract would hit.
    fn documentation_problems(file: &str, value: &Value, out: &mut Vec<String>) {
        if let Value::Object(object) = value {
            let kind = object.get("type").and_then(Value::as_str);
            if matches!(kind, Some("record" | "enum")) {
                let name = object.get("name").and_then(Value::as_str).unwrap_or("?");
                if name != file {
                    out.push(format!(
                        "{file}.avsc defines {name}; one named type per file"
                    ));
                }
                if object.get("namespace").and_then(Value::as_str) != Some(NAMESPACE) {
                    out.push(format!("{file}: namespace must be {NAMESPACE}"));
                }
                if object
                    .get("doc")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    out.push(format!("{file}: type has no doc"));
                }
            }
            if let Some(Value::Array(fields)) = object.get("fields") {
                for field in fields {
                    let name = field.get("name").and_then(Value::as_str).unwrap_or("?");
                    if field
                        .get("doc")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                    {
                        out.push(format!("{file}.{name}: field has no doc"));
                    }
                    if let Some(Value::Object(inner)) = field.get("type") {
                        if inner.contains_key("name") {
                            out.push(format!("{file}.{name}: named type defined inline"));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_type_and_field_is_documented_and_namespaced() {
        let mut problems = Vec::new();
        for name in file_names() {
            let value: Value = serde_json::from_str(file_text(name).unwrap()).unwrap();
            documentation_problems(name, &value, &mut problems);
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn every_file_resolves_to_a_valid_self_contained_schema() {
        for name in file_names() {
            let json = resolved_json(name).unwrap().to_string();
            Schema::parse_str(&json).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        for contract in Contract::ALL {
            let schema = contract.schema().unwrap();
            assert_eq!(schema.name().unwrap().fullname(None), contract.full_name());
        }
    }

    fn assert_same_structure<T: AvroSchema>(file: &str) {
        let from_file = Schema::parse_str(&resolved_json(file).unwrap().to_string()).unwrap();
        let from_rust = T::get_schema();
        assert_eq!(
            from_rust.canonical_form(),
            from_file.canonical_form(),
            "Rust type and schemas/{file}.avsc differ"
        );
    }

    #[test]
    fn rust_types_match_avsc_files() {
        assert_same_structure::<Platform>("Platform");
        assert_same_structure::<Transport>("Transport");
        assert_same_structure::<AppProtocol>("AppProtocol");
        assert_same_structure::<SourceFormat>("SourceFormat");
        assert_same_structure::<AttributionSource>("AttributionSource");
        assert_same_structure::<ProtocolEvidence>("ProtocolEvidence");
        assert_same_structure::<TlsInfo>("TlsInfo");
        assert_same_structure::<HttpInfo>("HttpInfo");
        assert_same_structure::<DnsInfo>("DnsInfo");
        assert_same_structure::<NetworkSession>("NetworkSession");
        assert_same_structure::<DeviceEventKind>("DeviceEventKind");
        assert_same_structure::<NetworkApiUsage>("NetworkApiUsage");
        assert_same_structure::<DeviceEvent>("DeviceEvent");
        assert_same_structure::<ManagedApp>("ManagedApp");
        assert_same_structure::<DeviceContext>("DeviceContext");
        assert_same_structure::<AppRunState>("AppRunState");
        assert_same_structure::<LockState>("LockState");
        assert_same_structure::<BackgroundExecution>("BackgroundExecution");
        assert_same_structure::<MdmContext>("MdmContext");
        assert_same_structure::<EnrichedSession>("EnrichedSession");
        assert_same_structure::<Analytic>("Analytic");
        assert_same_structure::<Severity>("Severity");
        assert_same_structure::<EvidenceKind>("EvidenceKind");
        assert_same_structure::<Evidence>("Evidence");
        assert_same_structure::<FindingStatus>("FindingStatus");
        assert_same_structure::<Finding>("Finding");
        assert_same_structure::<ScopeKind>("ScopeKind");
        assert_same_structure::<BaselineScope>("BaselineScope");
        assert_same_structure::<PortRange>("PortRange");
        assert_same_structure::<ProtocolPortRule>("ProtocolPortRule");
        assert_same_structure::<EnterpriseException>("EnterpriseException");
        assert_same_structure::<AppCategoryBehavior>("AppCategoryBehavior");
        assert_same_structure::<BaselineThresholds>("BaselineThresholds");
        assert_same_structure::<Baseline>("Baseline");
        assert_same_structure::<DeadLetterReason>("DeadLetterReason");
        assert_same_structure::<RecordHeader>("RecordHeader");
        assert_same_structure::<DeadLetter>("DeadLetter");
        // Every embedded file must be listed above.
        assert_eq!(
            file_names().count(),
            37,
            "a new .avsc needs its Rust type checked here"
        );
    }

    /// Encodes `value` with the contract's schema from the `.avsc` file, decodes it back and
    /// checks it is unchanged: catches field names that serde spells differently and logical
    /// types that do not survive.
    fn assert_round_trip<T>(contract: Contract, value: &T)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let schema = contract.schema().unwrap();
        let avro = to_value(value).unwrap().resolve(&schema).unwrap();
        let bytes = GenericDatumWriter::builder(&schema)
            .build()
            .unwrap()
            .write_value_to_vec(avro)
            .unwrap();
        let decoded = GenericDatumReader::builder(&schema)
            .build()
            .unwrap()
            .read_value(&mut bytes.as_slice())
            .unwrap();
        let back: T = from_value(&decoded).unwrap();
        assert_eq!(&back, value, "{contract:?} did not survive the round trip");
    }

    #[test]
    fn fully_populated_records_round_trip_through_the_avsc_schemas() {
        assert_round_trip(Contract::NetworkSession, &examples::network_session());
        assert_round_trip(Contract::DeviceEvent, &examples::device_event());
        assert_round_trip(Contract::DeviceContext, &examples::device_context());
        assert_round_trip(Contract::EnrichedSession, &examples::enriched_session());
        assert_round_trip(Contract::Finding, &examples::finding());
        assert_round_trip(Contract::Baseline, &examples::baseline());
        assert_round_trip(Contract::BaselineScope, &examples::baseline().scope);
        assert_round_trip(Contract::DeadLetter, &examples::dead_letter());
    }

    /// The fast binary codec writes exactly apache-avro's bytes and reads them back unchanged.
    fn assert_binary_matches_apache_avro<T>(contract: Contract, value: &T)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let schema = contract.schema().unwrap();
        let reference = GenericDatumWriter::builder(&schema)
            .build()
            .unwrap()
            .write_value_to_vec(to_value(value).unwrap().resolve(&schema).unwrap())
            .unwrap();
        let binary = contract.binary().unwrap();
        let mut fast = vec![9];
        binary.encode(value, &mut fast).unwrap();
        assert_eq!(fast.first(), Some(&9), "encode appends");
        assert_eq!(
            &fast[1..],
            reference.as_slice(),
            "{contract:?}: bytes differ"
        );
        let back: T = binary.decode(&reference).unwrap();
        assert_eq!(&back, value, "{contract:?}: decoded value differs");
    }

    #[test]
    fn the_binary_codec_writes_and_reads_apache_avros_bytes() {
        assert_binary_matches_apache_avro(Contract::NetworkSession, &examples::network_session());
        assert_binary_matches_apache_avro(Contract::DeviceEvent, &examples::device_event());
        assert_binary_matches_apache_avro(Contract::DeviceContext, &examples::device_context());
        assert_binary_matches_apache_avro(Contract::EnrichedSession, &examples::enriched_session());
        assert_binary_matches_apache_avro(Contract::Finding, &examples::finding());
        assert_binary_matches_apache_avro(Contract::Baseline, &examples::baseline());
        assert_binary_matches_apache_avro(Contract::BaselineScope, &examples::baseline().scope);
        assert_binary_matches_apache_avro(Contract::DeadLetter, &examples::dead_letter());
        // The other branch of every optional union, and empty collections.
        let mut sparse = examples::network_session();
        sparse.app_id = None;
        sparse.tls = None;
        sparse.http = None;
        sparse.dns = None;
        sparse.client_banner = None;
        assert_binary_matches_apache_avro(Contract::NetworkSession, &sparse);
        let mut letter = examples::dead_letter();
        letter.original_key = None;
        letter.original_value = None;
        letter.original_headers.clear();
        assert_binary_matches_apache_avro(Contract::DeadLetter, &letter);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Any bytes on an input topic reach the binary decoder: it answers with an error (the
        /// record is dead-lettered), never a panic or an unbounded allocation.
        #[test]
        fn the_binary_decoder_never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)
        ) {
            let _ = Contract::NetworkSession.binary().unwrap().decode::<NetworkSession>(&bytes);
            let _ = Contract::DeviceEvent.binary().unwrap().decode::<DeviceEvent>(&bytes);
            let _ = Contract::DeviceContext.binary().unwrap().decode::<DeviceContext>(&bytes);
            let _ = Contract::EnrichedSession.binary().unwrap().decode::<EnrichedSession>(&bytes);
        }

        /// A valid record with one byte changed (lengths and union branches that lie).
        #[test]
        fn the_binary_decoder_never_panics_on_a_corrupted_record(
            at in 0usize..1024, byte in proptest::prelude::any::<u8>()
        ) {
            let binary = Contract::EnrichedSession.binary().unwrap();
            let mut bytes = Vec::new();
            binary.encode(&examples::enriched_session(), &mut bytes).unwrap();
            let at = at % bytes.len();
            bytes[at] = byte;
            let _ = binary.decode::<EnrichedSession>(&bytes);
        }
    }

    #[test]
    fn the_binary_codec_refuses_values_and_data_that_do_not_fit() {
        let binary = Contract::DeviceEvent.binary().unwrap();
        let mut out = Vec::new();
        let error = binary
            .encode(&examples::network_session(), &mut out)
            .unwrap_err();
        assert!(matches!(error, BinaryError::Encode(_)), "{error}");
        let mut bytes = Vec::new();
        binary
            .encode(&examples::device_event(), &mut bytes)
            .unwrap();
        bytes.truncate(bytes.len() / 2);
        let error = binary.decode::<DeviceEvent>(&bytes).unwrap_err();
        assert!(matches!(error, BinaryError::Decode(_)), "{error}");
    }

    #[test]
    fn timestamps_carry_the_timestamp_millis_logical_type() {
        let schema = Contract::NetworkSession.schema().unwrap();
        let json = serde_json::to_value(&schema).unwrap();
        let start = json["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "start_time")
            .unwrap();
        assert_eq!(start["type"]["logicalType"], "timestamp-millis");
    }

    #[test]
    fn a_field_renamed_in_rust_only_is_caught() {
        // Guard for the guard: the structural comparison must see a one-field difference.
        #[derive(apache_avro::AvroSchema)]
        #[avro(namespace = "dev.offport.v1")]
        #[allow(dead_code)]
        struct PortRange {
            first: i32,
            end: i32,
        }
        let from_file =
            Schema::parse_str(&resolved_json("PortRange").unwrap().to_string()).unwrap();
        assert_ne!(
            PortRange::get_schema().canonical_form(),
            from_file.canonical_form()
        );
    }
}
