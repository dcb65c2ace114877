//! Baselines: the organisation's approved behaviour, every mutable element of the seeds, per
//! scope and per version.
//!
//! A baseline document ([`Baseline`], written in YAML or JSON with the field names of
//! `schemas/Baseline.avsc`) applies to one scope: global, a platform, a device group or role, an
//! app category or service class, or one app. [`BaselineSet`] keeps every version of every scope
//! with its effective time, and [`BaselineSet::resolve`] merges the documents in force at an
//! event's time for the scopes that match the event, most specific last.
//!
//! # Versions
//!
//! A document is one version of its scope. A newer version (later `effective_time`) replaces the
//! previous version of the same scope entirely from its effective time on; a version with the
//! same effective time replaces it outright. So a new `GLOBAL` document replaces the shipped
//! default global document: keep its contents, or put an organisation's changes in a more
//! specific scope (a platform scope covers a whole platform).
//!
//! # Merge rule
//!
//! Scopes are applied from least to most specific: global, platform, device group/role, app
//! category/service class, app. When two scopes of the same level match (a device's group and
//! its role), they are applied in order of their value.
//!
//! - Thresholds (TimeWindow, RecentUserInteractionWindow, BeaconIntervalTolerance, ...): the most
//!   specific scope that sets a value wins; unset (`null`) inherits.
//! - AllowedAppList, AllowedManagedApps, AllowedServiceClasses: the most specific scope that sets
//!   the list wins, replacing the less specific list; `null` inherits, `[]` means "none".
//! - AllowedProtocolPortMappings and EnterpriseExceptionList accumulate: a more specific scope adds
//!   approved ports and exceptions to those it inherits. (Narrowing is done by not approving at
//!   the global scope.)
//! - AppNetworkBehaviorBaseline: entries accumulate by category; an entry for a category replaces
//!   the inherited entry for the same category.

//!
//! # Layout
//!
//! Documents and their errors here; [`validate`] checks one document; `effective` holds what
//! one event resolves to ([`EffectiveBaseline`]); `resolve` keeps the versions and merges them
//! ([`BaselineSet`]).

mod effective;
mod resolve;
mod validate;

pub use effective::{
    host_has_suffix, in_ranges, Destination, EffectiveBaseline, ScopeContext, Thresholds,
};
pub use resolve::{BaselineSet, ResolveCache, ResolvedSpan};
pub use validate::validate;

use crate::model::{Baseline, BaselineScope, EpochMillis, ScopeKind};

/// The shipped default baseline (see `baselines/default.yaml`).
pub const DEFAULT_BASELINE_YAML: &str = include_str!("../../baselines/default.yaml");

/// One problem in a baseline document: where, what, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Path of the offending element, e.g. `allowed_protocol_ports[2].ports[0].last`.
    pub path: String,
    /// The offending value, as written.
    pub value: String,
    /// Why it is rejected.
    pub why: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} ({})", self.path, self.why, self.value)
    }
}

/// Errors reading or validating baseline documents.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// Not YAML/JSON, or not of the document's shape.
    #[error("baseline document does not parse: {0}")]
    Syntax(String),
    /// A field the document model does not have (a misspelling would drop what it holds).
    #[error("baseline document {document} has fields offport does not know: {} (misspelt?)", .fields.join(", "))]
    UnknownFields {
        /// 1-based position of the document in its file.
        document: usize,
        /// Each unknown field's path.
        fields: Vec<String>,
    },
    /// Two documents of one file for the same scope and effective time.
    #[error("documents {} (version {:?}) and {} (version {:?}) are both {scope} at effective time {effective_time}: one version per scope and effective time, or the second would replace the first", .first.0, .first.1, .second.0, .second.1)]
    SameVersionKey {
        /// The scope both name.
        scope: String,
        /// The effective time both name, epoch milliseconds.
        effective_time: EpochMillis,
        /// Position (1-based) and version of the first.
        first: (usize, String),
        /// Position (1-based) and version of the second.
        second: (usize, String),
    },
    /// Parsed, but one or more elements are invalid.
    #[error("baseline {scope} version {version:?} is invalid: {}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// Scope of the document.
        scope: String,
        /// Version of the document.
        version: String,
        /// Every problem found.
        problems: Vec<Invalid>,
    },
}

/// Human-readable scope name: `global`, `platform:IOS`, `app:com.example`.
pub fn scope_label(scope: &BaselineScope) -> String {
    let kind = match scope.kind {
        ScopeKind::Global => "global",
        ScopeKind::Platform => "platform",
        ScopeKind::DeviceGroup => "group",
        ScopeKind::AppCategory => "category",
        ScopeKind::App => "app",
    };
    match &scope.value {
        Some(value) => format!("{kind}:{value}"),
        None => kind.to_string(),
    }
}

/// The scope a [`scope_label`] names: `global`, `platform:IOS`, `group:x`, `category:x`,
/// `app:x`.
pub fn parse_scope_label(label: &str) -> Result<BaselineScope, ScopeLabelError> {
    let (kind, value) = match label.split_once(':') {
        Some((kind, value)) => (kind, Some(value.to_string())),
        None => (label, None),
    };
    let kind = match kind {
        "global" => ScopeKind::Global,
        "platform" => ScopeKind::Platform,
        "group" => ScopeKind::DeviceGroup,
        "category" => ScopeKind::AppCategory,
        "app" => ScopeKind::App,
        other => return Err(ScopeLabelError::UnknownKind(other.to_string())),
    };
    match (kind, &value) {
        (ScopeKind::Global, Some(_)) => Err(ScopeLabelError::GlobalWithValue),
        (ScopeKind::Global, None) => Ok(BaselineScope { kind, value }),
        (_, Some(v)) if !v.is_empty() => Ok(BaselineScope { kind, value }),
        _ => Err(ScopeLabelError::MissingValue(label.to_string())),
    }
}

/// Why a scope label was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeLabelError {
    /// Not one of the five kinds.
    #[error("unknown scope kind {0:?} (global, platform, group, category or app)")]
    UnknownKind(String),
    /// `global:x`.
    #[error("the global scope takes no value")]
    GlobalWithValue,
    /// `app` or `app:` without the app.
    #[error("scope {0:?} needs a value after ':'")]
    MissingValue(String),
}

/// Parses one document, or a YAML list of documents, and validates each.
///
/// A field the document model does not have is an error, not ignored: a misspelt
/// `allowed_protocol_ports` would otherwise publish a version without its rules, silently
/// withdrawing what the previous version approved. Two documents of one scope and effective
/// time are refused too: they would be published under one key, the second replacing the
/// first. (Records on the baselines topic are Avro and resolved by their writer schema; this
/// strictness is for the documents people write.)
pub fn parse_documents(text: &str) -> Result<Vec<Baseline>, BaselineError> {
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| BaselineError::Syntax(e.to_string()))?;
    let values = match value {
        serde_yaml_ng::Value::Sequence(items) => items,
        single => vec![single],
    };
    let mut documents = Vec::with_capacity(values.len());
    for (index, value) in values.into_iter().enumerate() {
        let mut unknown = Vec::new();
        let document: Baseline = serde_ignored::deserialize(value, |path| {
            unknown.push(path.to_string());
        })
        .map_err(|e| BaselineError::Syntax(format!("document {}: {e}", index + 1)))?;
        if !unknown.is_empty() {
            return Err(BaselineError::UnknownFields {
                document: index + 1,
                fields: unknown,
            });
        }
        validate(&document)?;
        documents.push(document);
    }
    for (later, document) in documents.iter().enumerate() {
        let same = |other: &Baseline| {
            other.scope == document.scope && other.effective_time == document.effective_time
        };
        if let Some(earlier) = documents.iter().take(later).position(same) {
            return Err(BaselineError::SameVersionKey {
                scope: scope_label(&document.scope),
                effective_time: document.effective_time,
                first: (
                    earlier + 1,
                    documents
                        .get(earlier)
                        .map_or_else(String::new, |d| d.version.clone()),
                ),
                second: (later + 1, document.version.clone()),
            });
        }
    }
    Ok(documents)
}

/// The shipped default baseline, parsed.
pub fn default_documents() -> Result<Vec<Baseline>, BaselineError> {
    parse_documents(DEFAULT_BASELINE_YAML)
}

#[cfg(test)]
mod tests;
