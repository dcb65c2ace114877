//! Every version of every scope, and the merge of those in force for an event.

use std::sync::Arc;

use crate::cache::{Bounded, CacheStats};

use crate::model::{Baseline, BaselineScope, EpochMillis, Platform, ScopeKind};

use super::effective::parse_network;
use super::validate::validate;
use super::{
    default_documents, scope_label, BaselineError, EffectiveBaseline, ScopeContext, Thresholds,
};

type Versions = Vec<(EpochMillis, Option<Arc<Baseline>>)>;

/// All versions of one scope.
#[derive(Debug, Clone, Default)]
struct ScopeVersions {
    /// Stable id of the scope within the set, for resolve-cache keys.
    id: u32,
    /// (effective time, document or `None` for a deletion), sorted by time.
    versions: Versions,
}

fn kind_index(kind: ScopeKind) -> usize {
    match kind {
        ScopeKind::Global => 0,
        ScopeKind::Platform => 1,
        ScopeKind::DeviceGroup => 2,
        ScopeKind::AppCategory => 3,
        ScopeKind::App => 4,
    }
}

const KINDS: [ScopeKind; 5] = [
    ScopeKind::Global,
    ScopeKind::Platform,
    ScopeKind::DeviceGroup,
    ScopeKind::AppCategory,
    ScopeKind::App,
];

/// Which version of which scope contributed: the key of [`ResolveCache`].
type Fingerprint = [(u32, u32); 7];

/// Merged baselines by the versions that contributed and the set's generation: bounded, and
/// shared by its clones, so every task of a stage that resolves against the same (shared)
/// [`BaselineSet`] shares one cache. A cache serves one set and the sets it becomes by changes
/// (its generations); give a set built apart its own cache.
#[derive(Debug, Clone)]
pub struct ResolveCache {
    merged: Bounded<(u64, Fingerprint), Arc<EffectiveBaseline>>,
}

impl ResolveCache {
    /// Merged baselines kept by default: every combination of scope versions a fleet's
    /// events match, many times over (a merged baseline is a few KiB).
    pub const DEFAULT_CAPACITY: u64 = 4_096;

    /// The cache's metric label.
    pub const NAME: &'static str = "baseline_resolution";

    /// An empty cache keeping at most `capacity` merged baselines.
    pub fn with_capacity(capacity: u64) -> Self {
        Self {
            merged: Bounded::new(Self::NAME, capacity),
        }
    }

    /// Merged baselines held.
    pub fn len(&self) -> u64 {
        self.merged.stats().entries
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hits, misses and entries.
    pub fn stats(&self) -> CacheStats {
        self.merged.stats()
    }
}

impl Default for ResolveCache {
    fn default() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }
}

/// Every version of every scope, and the merged view at any time.
#[derive(Debug, Clone, Default)]
pub struct BaselineSet {
    /// Per scope kind (in merge order), per scope value (`""` for global).
    kinds: [rustc_hash::FxHashMap<String, ScopeVersions>; 5],
    next_id: u32,
    /// Bumped by every change; lets callers cache resolved baselines.
    generation: u64,
}

impl BaselineSet {
    /// An empty set: resolving gives built-in thresholds and no approved ports.
    pub fn new() -> Self {
        Self::default()
    }

    /// The shipped default baseline.
    pub fn with_defaults() -> Result<Self, BaselineError> {
        let mut set = Self::new();
        for document in default_documents()? {
            set.apply(document)?;
        }
        Ok(set)
    }

    /// Adds a version of a scope, validated first. A version with the same effective time as an
    /// existing one replaces it (re-publishing a document is idempotent).
    pub fn apply(&mut self, document: Baseline) -> Result<(), BaselineError> {
        validate(&document)?;
        let at = document.effective_time;
        let scope = document.scope.clone();
        self.insert(&scope, at, Some(Arc::new(document)));
        Ok(())
    }

    /// Deletes a scope from time `at` on (a tombstone on the baselines topic).
    pub fn delete(&mut self, scope: &BaselineScope, at: EpochMillis) {
        self.insert(scope, at, None);
    }

    /// Withdraws the version of `scope` that took effect at `at`, as if it had never been
    /// published (a tombstone of that version's key on the baselines topic). Returns whether
    /// there was one.
    pub fn withdraw(&mut self, scope: &BaselineScope, at: EpochMillis) -> bool {
        let value = scope.value.as_deref().unwrap_or("");
        let Some(slot) = self
            .kinds
            .get_mut(kind_index(scope.kind))
            .and_then(|kind| kind.get_mut(value))
        else {
            return false;
        };
        match slot.versions.binary_search_by_key(&at, |(t, _)| *t) {
            Ok(index) => {
                slot.versions.remove(index);
                self.generation += 1;
                true
            }
            Err(_) => false,
        }
    }

    fn insert(&mut self, scope: &BaselineScope, at: EpochMillis, entry: Option<Arc<Baseline>>) {
        let value = scope.value.clone().unwrap_or_default();
        let next_id = &mut self.next_id;
        let Some(kind) = self.kinds.get_mut(kind_index(scope.kind)) else {
            return;
        };
        let slot = kind.entry(value).or_insert_with(|| {
            *next_id += 1;
            ScopeVersions {
                id: *next_id,
                versions: Vec::new(),
            }
        });
        match slot.versions.binary_search_by_key(&at, |(t, _)| *t) {
            Ok(index) => {
                if let Some(version) = slot.versions.get_mut(index) {
                    version.1 = entry;
                }
            }
            Err(index) => slot.versions.insert(index, (at, entry)),
        }
        self.generation += 1;
    }

    /// Changes applied so far.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn versions(&self, kind: ScopeKind, value: &str) -> Option<&ScopeVersions> {
        self.kinds.get(kind_index(kind))?.get(value)
    }

    fn version_index(versions: &Versions, at: EpochMillis) -> Option<usize> {
        versions.partition_point(|(t, _)| *t <= at).checked_sub(1)
    }

    /// The document of `scope` in force at `at`.
    pub fn in_force(&self, scope: &BaselineScope, at: EpochMillis) -> Option<&Baseline> {
        let versions = &self
            .versions(scope.kind, scope.value.as_deref().unwrap_or(""))?
            .versions;
        versions
            .get(Self::version_index(versions, at)?)?
            .1
            .as_deref()
    }

    /// Every scope that has a version, in merge order.
    pub fn scopes(&self) -> Vec<BaselineScope> {
        let mut out = Vec::new();
        for kind in KINDS {
            let mut values: Vec<&String> = self
                .kinds
                .get(kind_index(kind))
                .map(|m| m.keys().collect())
                .unwrap_or_default();
            values.sort();
            out.extend(values.into_iter().map(|v| BaselineScope {
                kind,
                value: (kind != ScopeKind::Global).then(|| v.clone()),
            }));
        }
        out
    }

    /// Every version of every scope, in merge order, oldest first within a scope: (scope label,
    /// version name or `None` for a deletion, effective time).
    pub fn versions_published(&self) -> Vec<(String, Option<String>, EpochMillis)> {
        let mut out = Vec::new();
        for scope in self.scopes() {
            let Some(slot) = self.versions(scope.kind, scope.value.as_deref().unwrap_or("")) else {
                continue;
            };
            for (at, document) in &slot.versions {
                out.push((
                    scope_label(&scope),
                    document.as_ref().map(|d| d.version.clone()),
                    *at,
                ));
            }
        }
        out
    }

    /// The longest TimeWindow any scope's latest version sets (or the built-in one): a joiner
    /// keeps state that long so no scope loses what it needs.
    pub fn longest_time_window(&self) -> i64 {
        self.scopes()
            .iter()
            .filter_map(|scope| self.in_force(scope, i64::MAX))
            .filter_map(|document| document.thresholds.time_window_ms)
            .fold(Thresholds::default().time_window_ms, i64::max)
    }

    /// The (kind, value) candidates an event matches, in merge order.
    fn candidates<'c>(context: &ScopeContext<'c>) -> [(ScopeKind, Option<&'c str>); 7] {
        let platform = match context.platform {
            Platform::Android => Some("ANDROID"),
            Platform::Ios => Some("IOS"),
            Platform::Unknown => None,
        };
        let ordered = |a: Option<&'c str>, b: Option<&'c str>| match (a, b) {
            (Some(x), Some(y)) if x == y => (Some(x), None),
            (Some(x), Some(y)) if y < x => (Some(y), Some(x)),
            other => other,
        };
        let (group_a, group_b) = ordered(context.device_group, context.device_role);
        let (category_a, category_b) = ordered(context.app_category, context.service_class);
        [
            (ScopeKind::Global, Some("")),
            (ScopeKind::Platform, platform),
            (ScopeKind::DeviceGroup, group_a),
            (ScopeKind::DeviceGroup, group_b),
            (ScopeKind::AppCategory, category_a),
            (ScopeKind::AppCategory, category_b),
            (ScopeKind::App, context.app_id),
        ]
    }

    /// The documents in force at `at` that match `context`, least specific first.
    pub fn matching(&self, context: &ScopeContext<'_>, at: EpochMillis) -> Vec<&Baseline> {
        Self::candidates(context)
            .iter()
            .filter_map(|(kind, value)| {
                let versions = &self.versions(*kind, (*value)?)?.versions;
                versions
                    .get(Self::version_index(versions, at)?)?
                    .1
                    .as_deref()
            })
            .collect()
    }

    /// The merged baseline for an event with `context` at time `at`.
    pub fn resolve(&self, context: &ScopeContext<'_>, at: EpochMillis) -> EffectiveBaseline {
        let mut merged = EffectiveBaseline::default();
        for document in self.matching(context, at) {
            merged.sources.push(format!(
                "{}@{}",
                scope_label(&document.scope),
                document.version
            ));
            merged
                .protocol_ports
                .extend(document.allowed_protocol_ports.iter().cloned());
            if document.allowed_apps.is_some() {
                merged.allowed_apps.clone_from(&document.allowed_apps);
            }
            if document.allowed_managed_apps.is_some() {
                merged
                    .allowed_managed_apps
                    .clone_from(&document.allowed_managed_apps);
            }
            if document.allowed_service_classes.is_some() {
                merged
                    .allowed_service_classes
                    .clone_from(&document.allowed_service_classes);
            }
            for exception in &document.enterprise_exceptions {
                merged.exception_networks.push(
                    exception
                        .cidrs
                        .iter()
                        .filter_map(|c| parse_network(c))
                        .collect(),
                );
                merged.exceptions.push(exception.clone());
            }
            for behavior in &document.app_network_behavior {
                merged
                    .behaviors
                    .insert(behavior.category.clone(), behavior.clone());
            }
            merged.thresholds.overlay(&document.thresholds);
        }
        merged
    }

    /// [`BaselineSet::resolve`], memoised: events that match the same versions of the same
    /// scopes share one merged baseline.
    pub fn resolve_cached(
        &self,
        cache: &ResolveCache,
        context: &ScopeContext<'_>,
        at: EpochMillis,
    ) -> Arc<EffectiveBaseline> {
        self.resolve_span(cache, context, at).baseline
    }

    /// [`BaselineSet::resolve_cached`], with the span of time around `at` in which the same
    /// context resolves to the same merged baseline (while the set does not change), so a
    /// caller can keep the answer for later events of the same context.
    pub fn resolve_span(
        &self,
        cache: &ResolveCache,
        context: &ScopeContext<'_>,
        at: EpochMillis,
    ) -> ResolvedSpan {
        let mut fingerprint: Fingerprint = [(0, 0); 7];
        let (mut from, mut until) = (EpochMillis::MIN, EpochMillis::MAX);
        for (slot, (kind, value)) in fingerprint.iter_mut().zip(Self::candidates(context)) {
            let Some(scope) = value.and_then(|v| self.versions(kind, v)) else {
                continue;
            };
            let next = scope.versions.partition_point(|(t, _)| *t <= at);
            if let Some((t, _)) = scope.versions.get(next) {
                until = until.min(*t);
            }
            if let Some(index) = next.checked_sub(1) {
                if let Some((t, _)) = scope.versions.get(index) {
                    from = from.max(*t);
                }
                *slot = (scope.id, u32::try_from(index).unwrap_or(u32::MAX));
            }
        }
        let baseline = cache
            .merged
            .get_or_insert_with((self.generation, fingerprint), || {
                Arc::new(self.resolve(context, at))
            });
        ResolvedSpan {
            baseline,
            generation: self.generation,
            from,
            until,
        }
    }
}

/// A merged baseline and where it holds: from `from` (inclusive) to `until` (exclusive), for
/// the context it was resolved for, while the set is at `generation`.
#[derive(Debug, Clone)]
pub struct ResolvedSpan {
    /// The merged baseline.
    pub baseline: Arc<EffectiveBaseline>,
    /// [`BaselineSet::generation`] it was resolved at.
    pub generation: u64,
    /// First instant it holds.
    pub from: EpochMillis,
    /// First instant it no longer holds.
    pub until: EpochMillis,
}

impl ResolvedSpan {
    /// True when the span answers for an event at `at` against a set at `generation`.
    pub fn holds(&self, generation: u64, at: EpochMillis) -> bool {
        self.generation == generation && self.from <= at && at < self.until
    }
}
