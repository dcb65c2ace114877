//! The joiner and the scorer killed with SIGKILL (or stopped with SIGTERM, which must end them
//! cleanly within 15 s) in the middle of a scripted replay and started
//! again produce exactly what an uninterrupted run produces, record for record (read_committed):
//! their state comes back from the changelog, and nothing is lost or written twice.
//!
//! The same dataset goes to two isolated topic sets. On the first, the joiner and then the
//! scorer run once to the end of their input (`stream.stop_at_end`). On the second, each runs in
//! a child process (this test binary run again with `OFFPORT_TEST_STATEFUL_CHILD` set) that is
//! killed several times while it works, then left to finish. The enriched sessions and the
//! alerts of the two must be identical, partition by partition, in order.
//!
//! Each topic is produced in event-time order and the joiner runs with the default allowed
//! lateness: it emits sessions all through the replay, so the kills land in transactions that
//! carry its output as well as its changelog. Its output does not depend on how the three input
//! topics interleave (which differs run to run and across a restart), since an input with
//! records left to read holds the watermark back.
//!
//! Also here (it shares the dataset): a stage processing a batch's tasks side by side on three
//! threads (`stream.workers`) produces exactly what one thread does.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use offport_core::model::{EnrichedSession, Finding};
use offport_core::schema::Contract;
use offport_kafka::metrics::PipelineMetrics;
use offport_kafka::registry::RegistryCodec;
use offport_kafka::runtime::stateful::run_stateful;
use offport_kafka::settings::Settings;
use offport_kafka::shutdown::Shutdown;
use offport_kafka::stages::{JoinerStage, ScorerStage};
use offport_kafka::topics::TopicRole;
use offport_tests::scenario::replay_dataset;
use offport_tests::{isolated_settings, produce_avro, read_until_quiet, Background};
use serde::{Deserialize, Serialize};

const CHILD_ENV: &str = "OFFPORT_TEST_STATEFUL_CHILD";

/// The kill and SIGTERM tests run one after the other: each times its signals against child
/// processes, and two at once on a 2-core machine skew those timings.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Serialize, Deserialize)]
struct ChildSpec {
    stage: String,
    settings: Settings,
}

/// Not a test on its own: the child process's entry point (returns at once in a normal run).
#[test]
fn child_stage() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let spec: ChildSpec = serde_json::from_str(&spec).expect("spec from parent");
    offport_kafka::telemetry::init(&spec.settings.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let codec = Arc::new(RegistryCodec::new(&spec.settings.registry).expect("codec"));
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = PipelineMetrics::register(&mut registry);
        let shutdown = Shutdown::new();
        // SIGTERM (and Ctrl-C) stop the stage gracefully, as in the service binaries.
        shutdown.listen();
        match spec.stage.as_str() {
            "joiner" => run_stateful(
                &spec.settings,
                JoinerStage::new(&spec.settings),
                codec,
                metrics,
                shutdown,
            )
            .await
            .expect("joiner"),
            _ => run_stateful(
                &spec.settings,
                ScorerStage::new(&spec.settings),
                codec,
                metrics,
                shutdown,
            )
            .await
            .expect("scorer"),
        }
    });
}

fn spawn_child(stage: &str, settings: &Settings) -> Result<Child> {
    let spec = ChildSpec {
        stage: stage.to_string(),
        settings: settings.clone(),
    };
    Command::new(std::env::current_exe()?)
        .args(["--exact", "child_stage", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, serde_json::to_string(&spec)?)
        // The restore lines show what each restarted child took back from the changelog.
        .env(
            "RUST_LOG",
            "warn,offport_kafka::runtime::stateful=info,offport_kafka::shutdown=info",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the child stage")
}

/// How a child is stopped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stop {
    /// SIGKILL: no shutdown path runs.
    Kill,
    /// SIGTERM: the graceful shutdown (finish or abort the open transaction, leave the group)
    /// must end the process, successfully, within 15 s.
    Term,
}

/// When a child is stopped.
#[derive(Clone, Copy, Debug)]
enum At {
    /// This long after its start: during start-up and restore.
    Millis(u64),
    /// Once the stage's group has committed this fraction of its input and the child has
    /// committed something itself: while it works, whatever the machine's speed.
    Progress(f64),
}

/// Watches how much of its input the consumer group of a stage has committed.
struct Progress {
    /// Same group id, never subscribed: reads the group's offsets without joining it.
    observer: rdkafka::consumer::BaseConsumer,
    partitions: rdkafka::TopicPartitionList,
    /// Records in the inputs (produced before the stage runs).
    total: i64,
}

impl Progress {
    fn new(settings: &Settings, stage: &str) -> Result<Self> {
        use rdkafka::consumer::Consumer;
        let roles: &[TopicRole] = if stage == "joiner" {
            &[
                TopicRole::Sessions,
                TopicRole::DeviceEvents,
                TopicRole::DeviceContexts,
            ]
        } else {
            &[TopicRole::EnrichedSessions]
        };
        let observer: rdkafka::consumer::BaseConsumer = settings
            .kafka
            .client_config()
            .set(
                "group.id",
                format!("{}{stage}", settings.pipeline.group_prefix),
            )
            // Offsets as last committed, now: a read_committed client asks for stable offsets
            // and waits while a transaction holds newer ones, which is nearly always.
            .set("isolation.level", "read_uncommitted")
            .create()?;
        let mut partitions = rdkafka::TopicPartitionList::new();
        let mut total = 0;
        for role in roles {
            let topic = role.spec(&settings.topics).name;
            for partition in 0..3 {
                partitions.add_partition(&topic, partition);
                let (low, high) =
                    observer.fetch_watermarks(&topic, partition, Duration::from_secs(10))?;
                total += high - low;
            }
        }
        Ok(Self {
            observer,
            partitions,
            total,
        })
    }

    /// Input records committed so far.
    fn committed(&self) -> Result<i64> {
        use rdkafka::consumer::Consumer;
        let committed = self
            .observer
            .committed_offsets(self.partitions.clone(), Duration::from_secs(10))?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                rdkafka::Offset::Offset(o) => Some(o),
                _ => None,
            })
            .sum())
    }
}

/// Runs `stage` in a child process, stopping it at each of `stops`, then lets a last one run to
/// the end of input. Returns how many stops hit a running child.
async fn run_with_stops(
    stage: &str,
    settings: &Settings,
    stops: &[At],
    stop: Stop,
) -> Result<usize> {
    let mut hits = 0;
    let progress = Progress::new(settings, stage)?;
    for at in stops {
        let done_before = progress.committed()?;
        let mut child = spawn_child(stage, settings)?;
        let started = tokio::time::Instant::now();
        let due = loop {
            if child.try_wait()?.is_some() {
                break false;
            }
            let due = match *at {
                At::Millis(ms) => started.elapsed() >= Duration::from_millis(ms),
                At::Progress(fraction) => {
                    // Only once this child committed something: it is working (and handles
                    // SIGTERM). A child with nothing left to do just ends.
                    let done = progress.committed()?;
                    done > done_before && done as f64 >= fraction * progress.total as f64
                }
            };
            if due {
                break true;
            }
            if started.elapsed() > Duration::from_secs(120) {
                child.kill()?;
                bail!("{stage} made no progress to {at:?} in 120 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        if due && child.try_wait()?.is_none() {
            hits += 1;
            match stop {
                Stop::Kill => {
                    child.kill()?;
                    child.wait()?;
                }
                Stop::Term => {
                    let sent = Command::new("kill")
                        .args(["-TERM", &child.id().to_string()])
                        .status()?;
                    assert!(sent.success(), "kill -TERM failed");
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
                    let status = loop {
                        if let Some(status) = child.try_wait()? {
                            break status;
                        }
                        if tokio::time::Instant::now() > deadline {
                            child.kill()?;
                            bail!("{stage} did not stop within 15 s of SIGTERM");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    };
                    assert!(status.success(), "{stage} exited with {status} on SIGTERM");
                }
            }
        } else {
            child.wait()?;
        }
    }
    run_to_end(stage, settings, "last", Duration::from_secs(240)).await?;
    // Once more with nothing left after the committed offsets: a bounded replay must see its
    // end at once (the consumer's own position stays unknown while nothing is read), and write
    // nothing (the caller compares the outputs with the reference).
    run_to_end(stage, settings, "extra", Duration::from_secs(60)).await?;
    Ok(hits)
}

/// Runs `stage` in a child until it exits by the end-of-input rule, failing after `limit`.
async fn run_to_end(stage: &str, settings: &Settings, which: &str, limit: Duration) -> Result<()> {
    let mut child = spawn_child(stage, settings)?;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("the {which} {stage} run failed: {status}");
            }
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            child.kill()?;
            bail!("the {which} {stage} run did not reach the end of its input");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn replay_settings(prefix: &str) -> Result<Settings> {
    let mut settings = isolated_settings(prefix, 3, 25, &TopicRole::ALL).await?;
    settings.stream.stop_at_end = true;
    settings.stream.idle_timeout_ms = 3_600_000;
    Ok(settings)
}

async fn produce_dataset(settings: &Settings, codec: &RegistryCodec, t0: i64) -> Result<usize> {
    let (mut sessions, mut events, mut contexts) = replay_dataset(t0, 40, 16);
    // In event-time order, as a fleet's collectors write them (the dataset is device by
    // device): a partition's records are then late only if the reader makes them so.
    sessions.sort_by_key(|s| s.start_time);
    events.sort_by_key(|e| e.event_time);
    contexts.sort_by_key(|c| c.event_time);
    // Partitioned as the normalizers do (murmur2 of the device id, as Java clients), so a
    // device's records, its enriched sessions and its alerts share a partition number: each
    // output partition is then written by one task, in that task's order (with librdkafka's
    // default partitioner two tasks wrote into one output partition, interleaved by timing).
    let mut kafka = settings.kafka.clone();
    kafka
        .properties
        .insert("partitioner".into(), "murmur2_random".into());
    let topic = |role: TopicRole| role.spec(&settings.topics).name;
    produce_avro(
        &kafka,
        codec,
        &topic(TopicRole::DeviceContexts),
        Contract::DeviceContext,
        contexts.iter().map(|c| (c.device_id.as_str(), c)),
    )
    .await?;
    produce_avro(
        &kafka,
        codec,
        &topic(TopicRole::DeviceEvents),
        Contract::DeviceEvent,
        events.iter().map(|e| (e.device_id.as_str(), e)),
    )
    .await?;
    produce_avro(
        &kafka,
        codec,
        &topic(TopicRole::Sessions),
        Contract::NetworkSession,
        sessions.iter().map(|s| (s.device_id.as_str(), s)),
    )
    .await?;
    Ok(sessions.len())
}

/// Every record of `role`, decoded, by partition in offset order.
async fn by_partition<T: serde::de::DeserializeOwned + apache_avro::AvroSchema + 'static>(
    settings: &Settings,
    codec: &RegistryCodec,
    role: TopicRole,
    min: usize,
) -> Result<BTreeMap<i32, Vec<T>>> {
    let received = read_until_quiet(
        &settings.kafka,
        &role.spec(&settings.topics).name,
        min,
        Duration::from_secs(3),
        Duration::from_secs(90),
    )
    .await?;
    let mut out: BTreeMap<i32, Vec<T>> = BTreeMap::new();
    for (_, partition, value, _) in received {
        out.entry(partition)
            .or_default()
            .push(codec.decode(&value).await?);
    }
    Ok(out)
}

/// What one stop test saw: the reference run's and the stopped run's outputs.
struct Compared {
    joiner_hits: usize,
    scorer_hits: usize,
    sessions: usize,
    enriched: (
        BTreeMap<i32, Vec<EnrichedSession>>,
        BTreeMap<i32, Vec<EnrichedSession>>,
    ),
    alerts: (BTreeMap<i32, Vec<Finding>>, BTreeMap<i32, Vec<Finding>>),
}

/// The dataset on two isolated topic sets: on the first the joiner and then the scorer run
/// uninterrupted to the end of their input; on the second each runs in child processes stopped
/// with `stop` at each of its stops, then left to finish.
async fn reference_and_stopped(
    name: &str,
    stop: Stop,
    joiner_stops: &[At],
    scorer_stops: &[At],
) -> Result<Compared> {
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64
        - 4 * 3_600_000;
    let reference = replay_settings(&format!("ref-{name}")).await?;
    let stopped = replay_settings(name).await?;
    let codec = RegistryCodec::new(&reference.registry)?;
    let sessions = produce_dataset(&reference, &codec, t0).await?;
    produce_dataset(&stopped, &codec, t0).await?;

    let joiner = Background::stateful(&reference, JoinerStage::new(&reference))?;
    tokio::time::timeout(Duration::from_secs(180), joiner.task).await???;
    let scorer = Background::stateful(&reference, ScorerStage::new(&reference))?;
    tokio::time::timeout(Duration::from_secs(180), scorer.task).await???;

    let joiner_hits = run_with_stops("joiner", &stopped, joiner_stops, stop).await?;
    let scorer_hits = run_with_stops("scorer", &stopped, scorer_stops, stop).await?;
    let enriched = (
        by_partition(&reference, &codec, TopicRole::EnrichedSessions, sessions).await?,
        by_partition(&stopped, &codec, TopicRole::EnrichedSessions, sessions).await?,
    );
    let alerts = (
        by_partition(&reference, &codec, TopicRole::Alerts, 1).await?,
        by_partition(&stopped, &codec, TopicRole::Alerts, 1).await?,
    );
    Ok(Compared {
        joiner_hits,
        scorer_hits,
        sessions,
        enriched,
        alerts,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiner_and_scorer_killed_mid_replay_produce_what_an_uninterrupted_run_does() -> Result<()>
{
    if std::env::var(CHILD_ENV).is_ok() {
        return Ok(());
    }
    let _serial = SERIAL.lock().await;
    // Killed several times while working (a transaction is open whenever it works), then
    // left to finish.
    let working = [At::Progress(0.25), At::Progress(0.5), At::Progress(0.75)];
    let run = reference_and_stopped("crash", Stop::Kill, &working, &working).await?;
    println!(
        "kills that hit a running joiner: {}, scorer: {}",
        run.joiner_hits, run.scorer_hits
    );
    assert!(
        run.joiner_hits >= 2 && run.scorer_hits >= 2,
        "the kills came too late to test anything"
    );
    let (expected, actual) = &run.enriched;
    assert_eq!(
        expected.values().map(Vec::len).sum::<usize>(),
        run.sessions,
        "the reference run lost sessions"
    );
    assert_eq!(expected, actual, "enriched sessions differ after the kills");
    let (expected, actual) = &run.alerts;
    let count: usize = expected.values().map(Vec::len).sum();
    println!("findings (all revisions): {count}");
    assert!(count >= 10, "the dataset should raise findings: {count}");
    assert_eq!(expected, actual, "alerts differ after the kills");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiner_and_scorer_stopped_with_sigterm_mid_replay_lose_and_duplicate_nothing() -> Result<()>
{
    if std::env::var(CHILD_ENV).is_ok() {
        return Ok(());
    }
    let _serial = SERIAL.lock().await;
    // Signals while processing, then one early in a run (at start-up and restore, after the
    // child installed its handler: a SIGTERM before that ends a process by default, as for
    // any program); that run may find little left to do and end first.
    let stops = [At::Progress(0.3), At::Progress(0.7), At::Millis(1_500)];
    let run = reference_and_stopped("term", Stop::Term, &stops, &stops).await?;
    println!(
        "SIGTERMs that hit a running joiner: {}, scorer: {}",
        run.joiner_hits, run.scorer_hits
    );
    assert!(
        run.joiner_hits >= 2 && run.scorer_hits >= 2,
        "the signals came too late to test anything"
    );
    assert_eq!(
        run.enriched.0, run.enriched.1,
        "enriched sessions differ after SIGTERM"
    );
    assert_eq!(run.alerts.0, run.alerts.1, "alerts differ after SIGTERM");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_processed_side_by_side_produce_what_one_thread_does() -> Result<()> {
    if std::env::var(CHILD_ENV).is_ok() {
        return Ok(());
    }
    let _serial = SERIAL.lock().await;
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64
        - 4 * 3_600_000;
    let mut one = replay_settings("one-thread").await?;
    let mut three = replay_settings("three-threads").await?;
    for (settings, workers) in [(&mut one, 1), (&mut three, 3)] {
        settings.stream.workers = workers;
        // Batches larger than a partition's share of the dataset, so that they hold records
        // of several tasks.
        settings.pipeline.batch_max_records = 500;
    }
    let codec = RegistryCodec::new(&one.registry)?;
    let sessions = produce_dataset(&one, &codec, t0).await?;
    produce_dataset(&three, &codec, t0).await?;
    let mut parallel = Vec::new();
    for settings in [&one, &three] {
        let joiner = Background::stateful(settings, JoinerStage::new(settings))?;
        tokio::time::timeout(Duration::from_secs(180), joiner.task).await???;
        let scorer = Background::stateful(settings, ScorerStage::new(settings))?;
        tokio::time::timeout(Duration::from_secs(180), scorer.task).await???;
        parallel.push((
            joiner.metrics.parallel_batches.get(),
            scorer.metrics.parallel_batches.get(),
        ));
    }
    println!(
        "batches on several threads (joiner, scorer): one worker {:?}, three workers {:?}",
        parallel[0], parallel[1]
    );
    assert_eq!(parallel[0], (0, 0), "one worker ran tasks side by side");
    assert!(
        parallel[1].0 > 0 && parallel[1].1 > 0,
        "no batch ran its tasks side by side: the test shows nothing"
    );
    let enriched: Vec<BTreeMap<i32, Vec<EnrichedSession>>> = vec![
        by_partition(&one, &codec, TopicRole::EnrichedSessions, sessions).await?,
        by_partition(&three, &codec, TopicRole::EnrichedSessions, sessions).await?,
    ];
    assert_eq!(
        enriched[0].values().map(Vec::len).sum::<usize>(),
        sessions,
        "the one-thread run lost sessions"
    );
    assert_eq!(enriched[0], enriched[1], "enriched sessions differ");
    let alerts: Vec<BTreeMap<i32, Vec<Finding>>> = vec![
        by_partition(&one, &codec, TopicRole::Alerts, 1).await?,
        by_partition(&three, &codec, TopicRole::Alerts, 1).await?,
    ];
    let count: usize = alerts[0].values().map(Vec::len).sum();
    assert!(count >= 10, "the dataset should raise findings: {count}");
    assert_eq!(alerts[0], alerts[1], "alerts differ");
    Ok(())
}
