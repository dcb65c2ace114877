//! The evidence a rule collects: items with their weights and, for emitted findings, their words;
//! the score and its severity.

use super::*;

pub(crate) fn severity(score: i32) -> crate::model::Severity {
    use crate::model::Severity::*;
    match score {
        s if s >= 85 => Critical,
        s if s >= 70 => High,
        s if s >= 50 => Medium,
        s if s >= 25 => Low,
        _ => Info,
    }
}

/// The words of one evidence item, built only for findings that are emitted.
pub(crate) struct EvidenceText {
    pub(crate) description: String,
    pub(crate) observed: String,
    pub(crate) baseline: Option<String>,
}

pub(crate) fn text(
    description: impl Into<String>,
    observed: impl Into<String>,
    baseline: Option<String>,
) -> EvidenceText {
    EvidenceText {
        description: description.into(),
        observed: observed.into(),
        baseline,
    }
}

/// The evidence collected for one analytic on one session.
///
/// Collection runs twice when a finding is emitted: first without words (`full` false: kinds and
/// weights only, no allocation), which is all most sessions ever need to show that nothing fires
/// or that an open finding absorbs them, then once more with words for the finding written out.
/// One function per analytic serves both passes, so the two cannot disagree.
pub(crate) struct Collected {
    pub(crate) full: bool,
    pub(crate) kinds: u64,
    pub(crate) weight: f64,
    pub(crate) items: Vec<Evidence>,
}

pub(crate) fn kind_bit(kind: EvidenceKind) -> u64 {
    1u64 << (kind as u32 % 64)
}

impl Collected {
    pub(crate) fn new(full: bool) -> Self {
        Self {
            full,
            kinds: 0,
            weight: 0.0,
            items: Vec::new(),
        }
    }

    pub(crate) fn add(
        &mut self,
        kind: EvidenceKind,
        weight: f64,
        number: Option<f64>,
        words: impl FnOnce() -> EvidenceText,
    ) {
        self.kinds |= kind_bit(kind);
        self.weight += weight;
        if self.full {
            let words = words();
            self.items.push(Evidence {
                kind,
                description: words.description,
                observed: words.observed,
                observed_number: number,
                baseline: words.baseline,
                weight,
            });
        }
    }

    pub(crate) fn score(&self) -> i32 {
        (self.weight.round() as i32).clamp(0, 100)
    }
}
