//! The topology, declared once: each deployable stage with the topics it reads and writes.
//!
//! The service mains run these declarations; the normalizers consume their `reads`, every
//! stage sets the compatibility of the subjects of its `writes` at start
//! ([`crate::compatibility`]), `--help` prints both, and the stateful stages take their name,
//! changelog and typed inputs from here ([`crate::runtime::stateful::StatefulStage`]): a stateful
//! stage's declared reads are built from its typed input table. The tests below check that
//! every topic `offportctl topics create` makes has a stage that reads or writes it.

use offport_core::join::JoinerInput;

use crate::stage::Stage;
use crate::topics::TopicRole;

/// Raw proxy/VPN/sensor records to `NetworkSession`.
pub const NORMALIZE_PROXY: Stage = Stage {
    name: "normalize-proxy",
    purpose: "raw proxy/VPN/sensor records to NetworkSession",
    reads: &[TopicRole::RawProxy],
    writes: &[TopicRole::Sessions, TopicRole::DeadLetter],
};

/// Raw EDR events to `DeviceEvent`.
pub const NORMALIZE_EDR: Stage = Stage {
    name: "normalize-edr",
    purpose: "raw EDR events to DeviceEvent",
    reads: &[TopicRole::RawEdr],
    writes: &[TopicRole::DeviceEvents, TopicRole::DeadLetter],
};

/// Raw MDM reports and the device inventory to `DeviceContext`.
pub const NORMALIZE_MDM: Stage = Stage {
    name: "normalize-mdm",
    purpose: "raw MDM reports to DeviceContext",
    reads: &[TopicRole::RawMdm, TopicRole::Inventory],
    writes: &[TopicRole::DeviceContexts, TopicRole::DeadLetter],
};

/// The joiner's inputs by name, with their topics: the joiner's stage reads them as typed
/// records ([`crate::stages::JoinerStage`]), and [`JOINER`]'s reads are these and the baselines.
pub const JOINER_INPUTS: [(JoinerInput, TopicRole); 3] = [
    (JoinerInput::Sessions, TopicRole::Sessions),
    (JoinerInput::DeviceEvents, TopicRole::DeviceEvents),
    (JoinerInput::DeviceContexts, TopicRole::DeviceContexts),
];

/// The scorer's one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScorerInput {
    /// Enriched sessions (`EnrichedSession`).
    EnrichedSessions,
}

/// The scorer's input with its topic, as [`JOINER_INPUTS`].
pub const SCORER_INPUTS: [(ScorerInput, TopicRole); 1] =
    [(ScorerInput::EnrichedSessions, TopicRole::EnrichedSessions)];

/// The as-of join of sessions with EDR state and MDM context.
pub const JOINER: Stage = Stage {
    name: "joiner",
    purpose: "as-of join of sessions with device/app state",
    reads: &[
        JOINER_INPUTS[0].1,
        JOINER_INPUTS[1].1,
        JOINER_INPUTS[2].1,
        TopicRole::Baselines,
    ],
    writes: &[
        TopicRole::EnrichedSessions,
        TopicRole::JoinerChangelog,
        TopicRole::DeadLetter,
    ],
};

/// The scorer: enriched sessions to findings on both alert topics.
pub const SCORER: Stage = Stage {
    name: "scorer",
    purpose: "score enriched sessions, emit findings",
    reads: &[SCORER_INPUTS[0].1, TopicRole::Baselines],
    writes: &[
        TopicRole::Alerts,
        TopicRole::AlertsOcsf,
        TopicRole::ScorerChangelog,
        TopicRole::DeadLetter,
    ],
};

/// Every stage, upstream first.
pub const STAGES: [Stage; 5] = [
    NORMALIZE_PROXY,
    NORMALIZE_EDR,
    NORMALIZE_MDM,
    JOINER,
    SCORER,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::stateful::StatefulStage;
    use crate::settings::Settings;
    use crate::stages::{JoinerStage, ScorerStage};

    /// The declared reads are the stage's inputs and the baselines topic; the declared writes
    /// hold its changelog.
    fn agrees<S: StatefulStage>(declared: &Stage, stage: &S) {
        let mut inputs: Vec<TopicRole> = stage.inputs().iter().map(|(_, role)| *role).collect();
        inputs.push(TopicRole::Baselines);
        assert_eq!(declared.reads, inputs.as_slice(), "{}", declared.name);
        assert_eq!(
            declared.writes.iter().filter(|r| r.is_changelog()).count(),
            1,
            "{}: one changelog",
            declared.name
        );
        assert!(
            declared.writes.contains(&stage.changelog()),
            "{}",
            declared.name
        );
        assert_eq!(declared.name, stage.name());
    }

    #[test]
    fn the_stateful_stages_read_and_write_what_the_topology_declares() {
        let settings = Settings::default();
        agrees(&JOINER, &JoinerStage::new(&settings));
        agrees(&SCORER, &ScorerStage::new(&settings));
    }

    /// A normalizer's progress markers go to the normalized topics it writes, whoever builds
    /// its options (the service, the test harness, a bench); a stateful stage sends none.
    #[test]
    fn progress_markers_go_where_the_topology_says_a_stage_writes() {
        use crate::runtime::PipelineOptions;
        let settings = Settings::default();
        let topic = |role: TopicRole| role.spec(&settings.topics).name;
        for (stage, expected) in [
            ("normalize-proxy", vec![topic(TopicRole::Sessions)]),
            ("normalize-edr", vec![topic(TopicRole::DeviceEvents)]),
            ("normalize-mdm", vec![topic(TopicRole::DeviceContexts)]),
            ("joiner", vec![]),
            ("scorer", vec![]),
        ] {
            let options = PipelineOptions::for_stage(stage, vec![], &settings);
            assert_eq!(options.progress_topics, expected, "{stage}");
        }
    }

    #[test]
    fn every_topic_created_has_a_stage_that_reads_or_writes_it() {
        for role in TopicRole::ALL {
            assert!(
                STAGES
                    .iter()
                    .any(|s| s.reads.contains(&role) || s.writes.contains(&role)),
                "{role:?} is created but no stage reads or writes it"
            );
        }
        let names: std::collections::BTreeSet<&str> = STAGES.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), STAGES.len());
    }
}
