//! The joiner and the scorer as [`StatefulStage`]s: the pure cores of `offport-core` wired to
//! their topics.

use std::sync::Arc;

use offport_core::baseline::{BaselineSet, ResolveCache};
use offport_core::cache::CacheStats;
use offport_core::join::{
    waiting_sessions_for, JoinConfig, JoinInput, Joiner, JoinerInput, PerInput,
};
use offport_core::model::{DeviceContext, DeviceEvent, EnrichedSession, Finding, NetworkSession};
use offport_core::ocsf;
use offport_core::progress::Marker;
use offport_core::schema::Contract;
use offport_core::score::{ScoreConfig, Scorer};
use serde::Serialize;

use crate::registry::RegistryCodec;
use crate::runtime::stateful::{DecodeError, Emit, StatefulStage};
use crate::settings::Settings;
use crate::topics::TopicRole;
pub use crate::topology::ScorerInput;

fn from_avro<T: serde::de::DeserializeOwned + apache_avro::AvroSchema + 'static>(
    payload: &[u8],
    codec: &RegistryCodec,
) -> Result<T, DecodeError> {
    codec
        .decode_known::<T>(payload)
        .map_err(|source| DecodeError {
            target: std::any::type_name::<T>()
                .rsplit("::")
                .next()
                .unwrap_or_default(),
            source,
        })
}

/// The as-of join: sessions, EDR events and MDM context in; enriched sessions out.
#[derive(Debug, Clone)]
pub struct JoinerStage {
    config: JoinConfig,
    enriched_topic: String,
}

impl JoinerStage {
    /// The joiner under `settings`.
    pub fn new(settings: &Settings) -> Self {
        Self {
            config: JoinConfig {
                allowed_lateness_ms: settings.stream.allowed_lateness_ms,
                max_entries_per_timeline: settings.stream.max_timeline_entries,
                max_waiting_sessions: waiting_sessions_for(
                    settings.stream.max_state_bytes,
                    settings.topics.partitions,
                ),
                ..JoinConfig::default()
            },
            enriched_topic: TopicRole::EnrichedSessions.spec(&settings.topics).name,
        }
    }

    fn emit(&self, sessions: Vec<EnrichedSession>) -> Vec<Emit<EnrichedSession>> {
        sessions
            .into_iter()
            .map(|value| Emit::Avro {
                topic: self.enriched_topic.clone(),
                key: value.session.device_id.clone(),
                contract: Contract::EnrichedSession,
                value,
            })
            .collect()
    }
}

impl StatefulStage for JoinerStage {
    type Task = Joiner;
    type Input = JoinInput;
    type Output = EnrichedSession;
    type InputName = JoinerInput;

    fn declaration(&self) -> &'static crate::stage::Stage {
        &crate::topology::JOINER
    }

    fn inputs(&self) -> &[(JoinerInput, TopicRole)] {
        &crate::topology::JOINER_INPUTS
    }

    fn new_task(&self, baselines: &Arc<BaselineSet>) -> Joiner {
        Joiner::new(JoinConfig {
            time_window_ms: baselines.longest_time_window(),
            ..self.config.clone()
        })
    }

    fn decode(
        &self,
        input: JoinerInput,
        payload: &[u8],
        codec: &RegistryCodec,
    ) -> Result<JoinInput, DecodeError> {
        match input {
            JoinerInput::Sessions => {
                from_avro::<NetworkSession>(payload, codec).map(JoinInput::Session)
            }
            JoinerInput::DeviceEvents => {
                from_avro::<DeviceEvent>(payload, codec).map(JoinInput::Event)
            }
            JoinerInput::DeviceContexts => {
                from_avro::<DeviceContext>(payload, codec).map(JoinInput::Context)
            }
        }
    }

    fn process(&self, task: &mut Joiner, input: JoinInput) -> Vec<Emit<EnrichedSession>> {
        let late_before = task.stats().late_sessions;
        let out = task.push(input);
        if task.stats().late_sessions > late_before {
            // A late session is joined with what is left and can differ between runs of one
            // input: say which rule had moved the watermark past it.
            if let Some(session) = out.first() {
                tracing::debug!(
                    session = %session.session.session_id,
                    device = %session.session.device_id,
                    start = session.session.start_time,
                    watermark = ?task.watermark(),
                    moved = ?task.last_move(),
                    "session behind the watermark: joined at once"
                );
            }
        }
        self.emit(out)
    }

    fn idle(&self, task: &mut Joiner, idle_ms: i64) -> Vec<Emit<EnrichedSession>> {
        self.emit(task.idle(idle_ms, crate::runtime::stateful::now_millis()))
    }

    fn flush(&self, task: &mut Joiner) -> Vec<Emit<EnrichedSession>> {
        self.emit(task.flush())
    }

    fn waits_for_lagging_inputs(&self) -> bool {
        true
    }

    fn inputs_lagging(
        &self,
        task: &mut Joiner,
        lagging: &[(JoinerInput, bool)],
    ) -> Vec<Emit<EnrichedSession>> {
        let flags = PerInput::from_fn(|input| lagging.contains(&(input, true)));
        self.emit(task.set_lagging(flags))
    }

    fn baselines_changed(&self, task: &mut Joiner, baselines: &Arc<BaselineSet>) {
        task.set_time_window(baselines.longest_time_window());
    }

    fn late_records(&self, task: &Joiner) -> u64 {
        let stats = task.stats();
        stats.late_events + stats.late_sessions
    }

    fn upstream(&self) -> &[TopicRole] {
        &[
            TopicRole::RawProxy,
            TopicRole::RawEdr,
            TopicRole::RawMdm,
            TopicRole::Inventory,
        ]
    }

    fn progress(
        &self,
        task: &mut Joiner,
        input: JoinerInput,
        marker: &Marker,
    ) -> Vec<Emit<EnrichedSession>> {
        self.emit(task.observe_progress(input, marker))
    }

    fn awaiting(&self, task: &mut Joiner, with_records: &[String]) -> Vec<Emit<EnrichedSession>> {
        let missing = with_records
            .iter()
            .any(|topic| !task.heard_from().any(|heard| heard == topic));
        self.emit(task.set_awaiting(missing))
    }

    fn state_size(&self, task: &Joiner) -> (usize, usize) {
        (task.devices() + task.pending_sessions(), task.state_bytes())
    }

    fn enforce_cap(&self, task: &mut Joiner, max_bytes: usize) -> usize {
        task.evict_to(max_bytes)
    }
}

/// A finding on its way out: Avro to the alerts topic, OCSF JSON to the SIEM topic.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct FindingOut(pub Finding);

/// The scorer: enriched sessions in, findings out on both alert topics.
#[derive(Debug, Clone)]
pub struct ScorerStage {
    config: ScoreConfig,
    /// One cache of merged baselines for every task: they share the feed's snapshot.
    resolve_cache: ResolveCache,
    alerts_topic: String,
    ocsf_topic: String,
}

impl ScorerStage {
    /// The scorer under `settings`.
    pub fn new(settings: &Settings) -> Self {
        Self {
            config: ScoreConfig {
                suppression_window_ms: settings.stream.suppression_window_ms,
                ..ScoreConfig::default()
            },
            resolve_cache: ResolveCache::default(),
            alerts_topic: TopicRole::Alerts.spec(&settings.topics).name,
            ocsf_topic: TopicRole::AlertsOcsf.spec(&settings.topics).name,
        }
    }
}

impl StatefulStage for ScorerStage {
    type Task = Scorer;
    type Input = EnrichedSession;
    type Output = Finding;
    type InputName = ScorerInput;

    fn declaration(&self) -> &'static crate::stage::Stage {
        &crate::topology::SCORER
    }

    fn inputs(&self) -> &[(ScorerInput, TopicRole)] {
        &crate::topology::SCORER_INPUTS
    }

    fn new_task(&self, baselines: &Arc<BaselineSet>) -> Scorer {
        Scorer::new(Arc::clone(baselines), self.config.clone())
            .with_resolve_cache(self.resolve_cache.clone())
    }

    fn decode(
        &self,
        _input: ScorerInput,
        payload: &[u8],
        codec: &RegistryCodec,
    ) -> Result<EnrichedSession, DecodeError> {
        from_avro::<EnrichedSession>(payload, codec)
    }

    fn process(&self, task: &mut Scorer, input: EnrichedSession) -> Vec<Emit<Finding>> {
        let mut out = Vec::new();
        for finding in task.score(&input) {
            let detection = ocsf::detection_finding(&finding, env!("CARGO_PKG_VERSION"));
            out.push(Emit::Bytes {
                topic: self.ocsf_topic.clone(),
                key: finding.device_id.clone(),
                value: detection.to_string().into_bytes(),
            });
            out.push(Emit::Avro {
                topic: self.alerts_topic.clone(),
                key: finding.device_id.clone(),
                contract: Contract::Finding,
                value: finding,
            });
        }
        out
    }

    fn warm(&self, task: &Scorer, input: &EnrichedSession) -> u64 {
        task.warm(input)
    }

    fn idle(&self, _task: &mut Scorer, _idle_ms: i64) -> Vec<Emit<Finding>> {
        vec![]
    }

    fn flush(&self, _task: &mut Scorer) -> Vec<Emit<Finding>> {
        vec![]
    }

    fn baselines_changed(&self, task: &mut Scorer, baselines: &Arc<BaselineSet>) {
        task.set_baselines(Arc::clone(baselines));
    }

    fn caches(&self) -> Vec<CacheStats> {
        vec![self.resolve_cache.stats()]
    }

    fn state_size(&self, task: &Scorer) -> (usize, usize) {
        (
            task.tracked_destinations() + task.open_findings(),
            task.state_bytes(),
        )
    }
}
