//! The joiner and the scorer through the real broker and registry, each beside a plain rdkafka
//! pass-through copy of the same input topics, in one run on this machine; and the joiner's
//! state per active key.
//!
//! `cargo bench -p offport-tests --bench stateful` (starts the local stack when none is
//! configured). `OFFPORT_BENCH_DEVICES` (default 3000) and `OFFPORT_BENCH_SESSIONS` per device
//! (default 50) set the input: per session one WorkManager event, plus two lifecycle events and
//! one MDM record per device (the replay dataset of the tests). `OFFPORT_BENCH_BATCH` sets the
//! records per transaction (default: the services' default), `OFFPORT_BENCH_PARTITIONS` the
//! partitions of every topic (default 6, the services' default) and `OFFPORT_BENCH_WORKERS`
//! the stages' task threads (`stream.workers`; default 0: one per core);
//! `OFFPORT_BENCH_PROPERTIES=key=value,...` adds librdkafka properties to every client of the
//! run (as `kafka.properties`), for tuning experiments.
//!
//! - read only: one consumer (its own group) reads the stage's input topics, read_committed, and
//!   does nothing with them: what reading alone costs.
//! - pass-through: one consumer (its own group) reads the stage's input topics and one producer
//!   copies every record, unchanged, to a copy topic; timed from the first record consumed to the
//!   last delivery acknowledged.
//! - joiner / scorer: the service loop (`run_stateful`: read_committed consumer, Avro decode,
//!   the core, Avro encode, changelog, transactions with the input offsets), run to the end of
//!   its input (`stream.stop_at_end`); timed from the first record received to the loop's end
//!   (the last transaction committed).
//!
//! - work alone: the stage's own per-record work on one thread with Kafka out of the way (the
//!   input read into memory first; then decode, process, encode, changelog drains), and from it
//!   a ceiling: the machine's cores spent on nothing but reading the input, that work, and
//!   writing the stage's outputs and changelog at what a written record cost the copy.
//!
//! Each line also gives the machine's busy CPU time (all processes, broker and registry
//! included, from `/proc/stat`; 10 ms ticks) per record over the phase: with two cores a phase
//! cannot go faster than 2 s of CPU per second, so a stage whose CPU per record exceeds the
//! copy's by more than the copy's own rate allows cannot reach a given share of it on this
//! machine. A stage's phase includes its start (group join, restore), mostly waiting.
//!
//! Memory: the joiner's `state_bytes` over its devices at the end of input, before the flush
//! empties the pending sessions (the joiner keeps every device's timelines for TimeWindow).

// The allocator of the service binaries, so the stages run here as they do there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use offport_core::schema::Contract;
use offport_kafka::metrics::PipelineMetrics;
use offport_kafka::registry::RegistryCodec;
use offport_kafka::runtime::stateful::StatefulStage;
use offport_kafka::settings::Settings;
use offport_kafka::stages::{JoinerStage, ScorerStage};
use offport_kafka::topics::{ensure_topics, TopicRole, TopicSpec};
use offport_tests::scenario::replay_dataset;
use offport_tests::{enqueue, isolated_settings, produce_avro, unique, Background};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// Busy CPU time so far of the whole machine (every process, the broker's too; user, nice,
/// system, irq, softirq and steal ticks of `/proc/stat`) and of this process alone (its user
/// and system ticks in `/proc/self/stat`). `None` off Linux.
#[derive(Clone, Copy)]
struct Busy {
    machine: Duration,
    own: Duration,
}

fn machine_busy() -> Option<Busy> {
    Some(Busy {
        machine: offport_tests::cpu::machine_busy()?,
        own: offport_tests::cpu::process_cpu("self")?,
    })
}

/// Busy CPU microseconds per record between `before` and now: the machine's and this
/// process's (NaN off Linux).
fn cpu_per_record(before: Option<Busy>, records: usize) -> (f64, f64) {
    match (before, machine_busy()) {
        (Some(before), Some(after)) => {
            let per =
                |a: Duration, b: Duration| a.saturating_sub(b).as_secs_f64() * 1e6 / records as f64;
            (
                per(after.machine, before.machine),
                per(after.own, before.own),
            )
        }
        _ => (f64::NAN, f64::NAN),
    }
}

/// The stage's CPU per record in this process against its work alone on one thread plus what
/// the copy cost per record in this process: the target is at most 1.5 times that sum.
fn cpu_target(stage: (f64, f64), work: f64, copy: (f64, f64)) -> String {
    let bound = 1.5 * (work + copy.1);
    format!(
        "process CPU per record {:.1} us against 1.5 x (work alone {work:.1} + copy {:.1}) = {bound:.1} us: {}",
        stage.1,
        copy.1,
        if stage.1 <= bound { "within" } else { "over" }
    )
}

/// `cpu_per_record` as printed: "M us machine CPU/record (P in this process)".
fn cpu_line((machine, own): (f64, f64)) -> String {
    format!("{machine:5.1} us machine CPU/record ({own:.1} in this process)")
}

/// A consumer of `inputs` from their start, read_committed, in a group of its own.
fn reader(settings: &Settings, group: &str, inputs: &[String]) -> Result<StreamConsumer> {
    let consumer: StreamConsumer = settings
        .kafka
        .client_config()
        .set("group.id", unique(group))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("isolation.level", "read_committed")
        // The stages' fetch tuning (see `stage_consumer`): with librdkafka's default of 1 s
        // the copy stalls whenever its prefetch queue fills.
        .set("fetch.queue.backoff.ms", "10")
        .create()?;
    let topics: Vec<&str> = inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

/// Reads `inputs` (read_committed) and, when `output` is given, copies every record to it;
/// returns records/s.
async fn pass_through(
    settings: &Settings,
    inputs: &[String],
    output: Option<&str>,
    records: usize,
) -> Result<f64> {
    let consumer = reader(settings, "bench-copy", inputs)?;
    let producer: FutureProducer = settings
        .kafka
        .client_config()
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create()?;
    let mut deliveries = Vec::with_capacity(records);
    let mut started = None;
    let mut read = 0;
    while read < records {
        let message = consumer.recv().await?;
        started.get_or_insert_with(Instant::now);
        read += 1;
        let Some(output) = output else {
            std::hint::black_box(message.payload());
            continue;
        };
        let mut record = FutureRecord::to(output).payload(message.payload().unwrap_or_default());
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        deliveries.push(enqueue(&producer, record).await?);
    }
    for delivery in deliveries {
        delivery
            .await
            .context("delivery dropped")?
            .map_err(|(e, _)| e)?;
    }
    let elapsed = started.context("no record")?.elapsed().as_secs_f64();
    Ok(records as f64 / elapsed)
}

/// The stage's own per-record work on one thread, with Kafka out of the way: every record of
/// `inputs` is read into memory first, then timed: decoded, processed by its partition's task,
/// its outputs encoded, and the changelog drained every `batch` records, as the service loop
/// does. Returns microseconds per input record.
async fn work_alone<S: StatefulStage>(
    settings: &Settings,
    stage: &S,
    inputs: &[String],
    records: usize,
    batch: usize,
) -> Result<(f64, (usize, usize))> {
    use offport_core::durable::Durable;
    use offport_kafka::runtime::stateful::Emit;
    let consumer = reader(settings, "bench-work", inputs)?;
    let codec = RegistryCodec::new(&settings.registry)?;
    let mut held = Vec::with_capacity(records);
    while held.len() < records {
        let message = consumer.recv().await?;
        let input = inputs
            .iter()
            .position(|t| t == message.topic())
            .and_then(|i| stage.inputs().get(i))
            .map(|(name, _)| *name)
            .context("record of another topic")?;
        let payload = message.payload().context("no value")?.to_vec();
        codec
            .fetch_writer(offport_kafka::registry::schema_id(&payload)?)
            .await?;
        held.push((input, message.partition(), payload));
    }
    // What a service holds with an empty baselines topic: the shipped defaults.
    let baselines = std::sync::Arc::new(offport_core::baseline::BaselineSet::with_defaults()?);
    let mut tasks = std::collections::BTreeMap::new();
    let started = Instant::now();
    let mut bytes = 0_usize;
    for (n, (input, partition, payload)) in held.iter().enumerate() {
        let task = tasks.entry(*partition).or_insert_with(|| {
            let mut task = stage.new_task(&baselines);
            task.journal_changes();
            task
        });
        let decoded = stage.decode(*input, payload, &codec)?;
        for emit in stage.process(task, decoded) {
            bytes += match emit {
                Emit::Avro {
                    topic,
                    contract,
                    value,
                    ..
                } => codec.encode_value(&topic, contract, &value).await?.len(),
                Emit::Bytes { value, .. } => value.len(),
            };
        }
        if (n + 1) % batch == 0 || n + 1 == held.len() {
            for task in tasks.values_mut() {
                bytes += task.drain_changes().len();
            }
        }
    }
    let elapsed = started.elapsed();
    std::hint::black_box(bytes);
    // The same measure of state as the service reports, summed over this pass's tasks, once
    // the sessions still waiting for the watermark are out (the service's end of input
    // releases them too): what is left is the devices' timelines.
    for task in tasks.values_mut() {
        std::hint::black_box(stage.flush(task));
    }
    let state = tasks.values().fold((0, 0), |(keys, bytes), task| {
        let (k, b) = stage.state_size(task);
        (keys + k, bytes + b)
    });
    Ok((elapsed.as_secs_f64() * 1e6 / records as f64, state))
}

/// The best a stage could do if all it cost were reading its input (`read`, CPU per record
/// read), its own work (`work`, per record) and writing its `written` records (outputs and
/// changelog, per input record) at what a written record cost the copy (`copy - read`: the
/// client's produce and the broker's append): no transactions, no restore, no waiting, no
/// slower work for sharing the cores. Machine CPU over all cores; when pinned, this process's
/// CPU over the cores left to it (the broker has a core of its own).
fn ceiling(
    read: (f64, f64),
    work: f64,
    written: f64,
    copy: (f64, f64),
    copy_rate: f64,
    pinned: Option<&Pinned>,
) -> String {
    let (cores, read, copy, what) = match pinned {
        Some(pinned) => (pinned.client_cores as f64, read.1, copy.1, "client "),
        None => (
            std::thread::available_parallelism().map_or(1, usize::from) as f64,
            read.0,
            copy.0,
            "",
        ),
    };
    let write = (copy - read).max(0.0);
    let rate = cores * 1e6 / (read + work + written * write);
    format!(
        "ceiling on {cores} {what}cores ({read:.1} us reading + {work:.1} us work + {written:.2} records written x {write:.1} us per record): {rate:>8.0} records/s = {:.0} % of the copy",
        100.0 * rate / copy_rate
    )
}

/// The local stack's broker and registry pinned to the machine's last core and this process
/// to the others (`OFFPORT_BENCH_PIN=1`), so the clients measured do not share cores with the
/// broker (as where the broker runs on machines of its own). Every thread of the two JVMs gets
/// the affinity; dropping this gives them all cores back.
struct Pinned {
    /// Broker and registry process ids.
    pids: Vec<i32>,
    /// Cores left to this process.
    client_cores: usize,
}

/// Sets the affinity of every thread of `pid` (threads it starts later inherit it).
fn pin_process(pid: i32, cpus: &nix::sched::CpuSet) -> Result<()> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let tid: i32 = task?.file_name().to_string_lossy().parse()?;
        // A thread may end between listing and pinning.
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(tid), cpus);
    }
    Ok(())
}

fn cpu_set(cpus: impl Iterator<Item = usize>) -> Result<nix::sched::CpuSet> {
    let mut set = nix::sched::CpuSet::new();
    for cpu in cpus {
        set.set(cpu)?;
    }
    Ok(set)
}

impl Pinned {
    /// Pins when `OFFPORT_BENCH_PIN` is set, the machine has two cores or more and the local
    /// stack (`cargo xtask stack up`) is running; else says why not and returns `None`.
    fn from_env() -> Result<Option<Self>> {
        if std::env::var("OFFPORT_BENCH_PIN").map_or(true, |v| v.is_empty() || v == "0") {
            return Ok(None);
        }
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let stack =
            offport_devstack::stack::read_state(&offport_devstack::StackOptions::from_env()?);
        let Some(stack) = stack.filter(|_| cores >= 2) else {
            println!("OFFPORT_BENCH_PIN: not pinned (needs two cores and the local stack; {cores} cores here)");
            return Ok(None);
        };
        let pids = vec![stack.kafka_pid, stack.registry_pid];
        let stack_cpus = cpu_set(std::iter::once(cores - 1))?;
        for pid in &pids {
            pin_process(*pid, &stack_cpus)?;
        }
        // Before the runtime starts: its threads and librdkafka's inherit this.
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpu_set(0..cores - 1)?)?;
        println!(
            "pinned: broker and registry on core {}, this process on cores 0-{}",
            cores - 1,
            cores - 2
        );
        Ok(Some(Self {
            pids,
            client_cores: cores - 1,
        }))
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let cores = self.client_cores + 1;
        if let Ok(all) = cpu_set(0..cores) {
            for pid in &self.pids {
                let _ = pin_process(*pid, &all);
            }
        }
    }
}

/// Runs `stage` to the end of its input; returns records/s and its metrics.
async fn run_stage<S: StatefulStage + 'static>(
    settings: &Settings,
    stage: S,
    records: usize,
) -> Result<(f64, Arc<PipelineMetrics>)> {
    let Background { task, metrics, .. } = Background::stateful(settings, stage)?;
    while !task.is_finished() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    task.await??;
    // From the stage's first record received, as the copy from its first record.
    let elapsed = metrics
        .since_first_read()
        .context("no record")?
        .as_secs_f64();
    anyhow::ensure!(
        metrics.records_in.get() as usize == records,
        "read {} of {records}",
        metrics.records_in.get()
    );
    Ok((records as f64 / elapsed, metrics))
}

fn main() -> Result<()> {
    let devices = env("OFFPORT_BENCH_DEVICES", 3_000);
    let per_device = env("OFFPORT_BENCH_SESSIONS", 50);
    // The stages' logs only when asked for (RUST_LOG=offport_kafka=debug shows each
    // transaction's phases).
    if std::env::var_os("RUST_LOG").is_some() {
        offport_kafka::telemetry::init(&Settings::default().log);
    }
    let pinned = Pinned::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let batch = env(
            "OFFPORT_BENCH_BATCH",
            offport_kafka::settings::Settings::default()
                .pipeline
                .batch_max_records,
        );
        // The services' default partition count: a stage processes its tasks (partitions) side
        // by side on `stream.workers` threads, so fewer partitions than cores leave cores idle.
        let partitions = env("OFFPORT_BENCH_PARTITIONS", 6);
        let mut settings = isolated_settings(
            "bench-stateful",
            i32::try_from(partitions)?,
            batch,
            &TopicRole::ALL,
        )
        .await?;
        settings.stream.stop_at_end = true;
        // Extra librdkafka properties for every client of the run, stages and copy alike, as
        // kafka.properties: `OFFPORT_BENCH_PROPERTIES=key=value,key=value`.
        for pair in std::env::var("OFFPORT_BENCH_PROPERTIES").unwrap_or_default().split(',') {
            if let Some((key, value)) = pair.split_once('=') {
                settings.kafka.properties.insert(key.trim().to_string(), value.trim().to_string());
            }
        }
        settings.stream.workers = env("OFFPORT_BENCH_WORKERS", 0);
        let copy = format!("{}copy", settings.topics.prefix);
        let copy_spec = TopicSpec {
            name: copy.clone(),
            ..TopicRole::Sessions.spec(&settings.topics)
        };
        ensure_topics(&settings.kafka.client_config(), &[copy_spec]).await?;
        let t0 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64
            - 6 * 3_600_000;
        let (sessions, events, contexts) = replay_dataset(t0, devices, per_device);
        let codec = RegistryCodec::new(&settings.registry)?;
        let loading = Instant::now();
        let topic = |role: TopicRole| role.spec(&settings.topics).name;
        produce_avro(&settings.kafka, &codec, &topic(TopicRole::DeviceContexts), Contract::DeviceContext,
            contexts.iter().map(|c| (c.device_id.as_str(), c))).await?;
        produce_avro(&settings.kafka, &codec, &topic(TopicRole::DeviceEvents), Contract::DeviceEvent,
            events.iter().map(|e| (e.device_id.as_str(), e))).await?;
        produce_avro(&settings.kafka, &codec, &topic(TopicRole::Sessions), Contract::NetworkSession,
            sessions.iter().map(|s| (s.device_id.as_str(), s))).await?;
        let joiner_in = sessions.len() + events.len() + contexts.len();
        println!(
            "input: {devices} devices, {} sessions, {} EDR events, {} MDM records on {partitions} partitions, loaded in {:.1} s; batch {batch}; {} task threads",
            sessions.len(),
            events.len(),
            contexts.len(),
            loading.elapsed().as_secs_f64(),
            settings.stream.worker_threads()
        );
        let joiner_topics = vec![
            topic(TopicRole::Sessions),
            topic(TopicRole::DeviceEvents),
            topic(TopicRole::DeviceContexts),
        ];
        let busy = machine_busy();
        let read_rate = pass_through(&settings, &joiner_topics, None, joiner_in).await?;
        let read_cpu = cpu_per_record(busy, joiner_in);
        println!("read only, the joiner's inputs:             {read_rate:>10.0} records/s, {}", cpu_line(read_cpu));
        let busy = machine_busy();
        let copy_rate = pass_through(&settings, &joiner_topics, Some(&copy), joiner_in).await?;
        let copy_cpu = cpu_per_record(busy, joiner_in);
        println!("pass-through copy of the joiner's inputs:   {copy_rate:>10.0} records/s, {}", cpu_line(copy_cpu));
        let (work, (core_keys, core_bytes)) =
            work_alone(&settings, &JoinerStage::new(&settings), &joiner_topics, joiner_in, batch).await?;
        println!("joiner work alone, one thread: {work:.1} us/record");
        let busy = machine_busy();
        let (join_rate, metrics) = run_stage(&settings, JoinerStage::new(&settings), joiner_in).await?;
        let join_cpu = cpu_per_record(busy, joiner_in);
        println!("joiner (decode, join, encode, changelog):   {join_rate:>10.0} records/s, {}", cpu_line(join_cpu));
        println!("joiner {}", cpu_target(join_cpu, work, copy_cpu));
        println!(
            "joiner / pass-through: {:.0} % (target >= 70 %); {} enriched sessions out, {} changelog records ({:.1} MB), {} transactions",
            100.0 * join_rate / copy_rate,
            metrics.records_out.get(),
            metrics.changelog_records.get(),
            metrics.changelog_bytes.get() as f64 / 1e6,
            metrics.transactions.get()
        );
        let written = (metrics.records_out.get() + metrics.changelog_records.get()) as f64 / joiner_in as f64;
        println!("joiner {}", ceiling(read_cpu, work, written, copy_cpu, copy_rate, pinned.as_ref()));
        let keys = metrics.state_keys.get().max(1);
        println!(
            "joiner state at end of input: {} keys (devices; one app each), {} bytes, {:.0} bytes per active key",
            keys,
            metrics.state_bytes.get(),
            metrics.state_bytes.get() as f64 / keys as f64
        );
        println!(
            "joiner state of the work-alone pass (the core on the same input, no Kafka), its waiting sessions released: {} keys, {} bytes, {:.0} bytes per active key",
            core_keys,
            core_bytes,
            core_bytes as f64 / core_keys.max(1) as f64
        );

        let scorer_in = sessions.len();
        let scorer_topics = [topic(TopicRole::EnrichedSessions)];
        let busy = machine_busy();
        let read_rate = pass_through(&settings, &scorer_topics, None, scorer_in).await?;
        let read_cpu = cpu_per_record(busy, scorer_in);
        println!("read only, the scorer's input:              {read_rate:>10.0} records/s, {}", cpu_line(read_cpu));
        let busy = machine_busy();
        let copy_rate = pass_through(&settings, &scorer_topics, Some(&copy), scorer_in).await?;
        let copy_cpu = cpu_per_record(busy, scorer_in);
        println!("pass-through copy of the scorer's input:    {copy_rate:>10.0} records/s, {}", cpu_line(copy_cpu));
        let (work, _) = work_alone(&settings, &ScorerStage::new(&settings), &scorer_topics, scorer_in, batch).await?;
        println!("scorer work alone, one thread: {work:.1} us/record");
        let busy = machine_busy();
        let (score_rate, metrics) = run_stage(&settings, ScorerStage::new(&settings), scorer_in).await?;
        let score_cpu = cpu_per_record(busy, scorer_in);
        println!("scorer (decode, score, Avro + OCSF out):    {score_rate:>10.0} records/s, {}", cpu_line(score_cpu));
        println!("scorer {}", cpu_target(score_cpu, work, copy_cpu));
        println!(
            "scorer / pass-through: {:.0} % (target >= 70 %); {} findings out (Avro + OCSF records), {} changelog records",
            100.0 * score_rate / copy_rate,
            metrics.records_out.get(),
            metrics.changelog_records.get()
        );
        let written = (metrics.records_out.get() + metrics.changelog_records.get()) as f64 / scorer_in as f64;
        println!("scorer {}", ceiling(read_cpu, work, written, copy_cpu, copy_rate, pinned.as_ref()));
        Ok(())
    })
}
