//! Prometheus metrics and the health endpoints every service serves over HTTP.
//!
//! `GET /metrics` (OpenMetrics text, `prometheus-client`), `GET /healthz` (200 while the stage
//! makes progress; 503 naming the partitions and the error once its transactions fail
//! [`crate::health::STALL_AFTER_ABORTS`] times in a row) and `GET /readyz` (200 once the service has joined its group and
//! can process, 503 before and while shutting down). Served by `axum` on
//! `observability.listen` (default `0.0.0.0:9464`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use offport_core::cache::CacheStats;
use offport_core::model::DeadLetterReason;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::shutdown::Shutdown;

/// Dead-letter reason as a metric label: its Avro symbol (`UNPARSEABLE`), as in the
/// dead-letter record and its `offport.errors.reason` header.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub struct Reason(pub DeadLetterReason);

impl From<DeadLetterReason> for Reason {
    fn from(reason: DeadLetterReason) -> Self {
        Reason(reason)
    }
}

impl EncodeLabelValue for Reason {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(self.0.code())
    }
}

/// Labels of the dead-letter counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why the record was rejected.
    pub reason: Reason,
}

/// Labels of the cache metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// The cache ([`CacheStats::name`]).
    pub cache: String,
}

/// The metrics of a consume-transform-produce stage.
#[derive(Debug)]
pub struct PipelineMetrics {
    /// Raw records consumed (`offport_records_in_total`).
    pub records_in: Counter,
    /// Records produced to output topics (`offport_records_out_total`).
    pub records_out: Counter,
    /// Input records whose outputs and offsets were committed, the ones a restart does not
    /// read again (`offport_records_committed_total`).
    pub records_committed: Counter,
    /// Records sent to the dead-letter topic, by reason (`offport_dead_letters_total`).
    pub dead_letters: Family<ReasonLabels, Counter>,
    /// Committed transactions (`offport_transactions_total`).
    pub transactions: Counter,
    /// Aborted transactions (`offport_transaction_aborts_total`).
    pub aborts: Counter,
    /// Retries of transient failures (`offport_retries_total`).
    pub retries: Counter,
    /// Records read again only to rebuild held join state after a restart, rebalance or abort
    /// (`offport_records_replayed_total`).
    pub replayed: Counter,
    /// Time to process and commit one batch (`offport_batch_duration_seconds`).
    pub batch_seconds: Histogram,
    /// Seconds from a record's Kafka timestamp to the commit of the transaction that consumed
    /// it (`offport_end_to_end_latency_seconds`).
    pub end_to_end_seconds: Histogram,
    /// Records behind the end of the assigned partitions (`offport_consumer_lag_records`).
    pub lag: Gauge<i64, AtomicI64>,
    /// Records of the assigned partitions between the last stable offset and the high
    /// watermark: behind a transaction still open, unreadable to read_committed consumers
    /// (`offport_input_unstable_records`).
    pub unstable: Gauge<i64, AtomicI64>,
    /// Assigned partitions whose last stable offset has not moved for
    /// `pipeline.hanging_transaction_after_ms` with records behind it: a transaction the broker
    /// left hanging (`offport_input_hanging_partitions`; see docs/operations.md).
    pub hanging: Gauge<i64, AtomicI64>,
    /// Keys of a stateful stage's state (`offport_state_keys`): joiner devices, scorer
    /// destinations and open findings.
    pub state_keys: Gauge<i64, AtomicI64>,
    /// Approximate heap bytes of a stateful stage's state (`offport_state_bytes`).
    pub state_bytes: Gauge<i64, AtomicI64>,
    /// Keys evicted by the state memory cap (`offport_state_evictions_total`).
    pub evictions: Counter,
    /// Joiner: device-side records and sessions that arrived behind the watermark
    /// (`offport_late_records_total`).
    pub late_records: Counter,
    /// Tasks (partition numbers) a stateful stage owns now (`offport_tasks`).
    pub tasks: Gauge<i64, AtomicI64>,
    /// State tasks (partitions) restored from the changelog (`offport_state_restores_total`).
    pub restores: Counter,
    /// Changelog records read while restoring (`offport_state_restored_records_total`).
    pub restored_records: Counter,
    /// Batches whose tasks were processed on more than one thread
    /// (`offport_parallel_batches_total`; see `stream.workers`).
    pub parallel_batches: Counter,
    /// Changelog records written (`offport_changelog_records_total`).
    pub changelog_records: Counter,
    /// Bytes of the changelog records' keys and values written (`offport_changelog_bytes_total`).
    pub changelog_bytes: Counter,
    /// Baseline records rejected (`offport_baselines_rejected_total`).
    pub baselines_rejected: Counter,
    /// Baseline versions applied from the baselines topic (`offport_baselines_applied_total`).
    pub baselines_applied: Counter,
    /// Lookups answered by each bounded cache (`offport_cache_hits_total{cache}`).
    pub cache_hits: Family<CacheLabels, Counter>,
    /// Lookups each bounded cache had to compute or fetch (`offport_cache_misses_total{cache}`).
    pub cache_misses: Family<CacheLabels, Counter>,
    /// Entries each bounded cache holds (`offport_cache_entries{cache}`).
    pub cache_entries: Family<CacheLabels, Gauge<i64, AtomicI64>>,
    /// Most entries each bounded cache keeps (`offport_cache_capacity{cache}`).
    pub cache_capacity: Family<CacheLabels, Gauge<i64, AtomicI64>>,
    /// Stalled partitions and Kafka outages (`/healthz`).
    pub health: crate::health::Health,
    /// True once the stage processes records.
    pub ready: AtomicBool,
    /// When the stage's loop received its first input record (not exported; benchmarks time
    /// a stage from it, as they time a plain copy from its first record).
    pub first_read: std::sync::OnceLock<std::time::Instant>,
}

impl PipelineMetrics {
    /// Time since the stage's loop received its first input record; `None` before it has.
    pub fn since_first_read(&self) -> Option<std::time::Duration> {
        self.first_read.get().map(std::time::Instant::elapsed)
    }

    /// Metrics registered in `registry` under the `offport` prefix.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Self {
            records_in: Counter::default(),
            records_out: Counter::default(),
            records_committed: Counter::default(),
            dead_letters: Family::default(),
            transactions: Counter::default(),
            aborts: Counter::default(),
            retries: Counter::default(),
            replayed: Counter::default(),
            batch_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            // 5 ms to about 45 minutes.
            end_to_end_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 20)),
            lag: Gauge::default(),
            unstable: Gauge::default(),
            hanging: Gauge::default(),
            state_keys: Gauge::default(),
            state_bytes: Gauge::default(),
            evictions: Counter::default(),
            late_records: Counter::default(),
            tasks: Gauge::default(),
            restores: Counter::default(),
            restored_records: Counter::default(),
            parallel_batches: Counter::default(),
            changelog_records: Counter::default(),
            changelog_bytes: Counter::default(),
            baselines_rejected: Counter::default(),
            baselines_applied: Counter::default(),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            cache_entries: Family::default(),
            cache_capacity: Family::default(),
            health: crate::health::Health::default(),
            ready: AtomicBool::new(false),
            first_read: std::sync::OnceLock::new(),
        };
        let offport = registry.sub_registry_with_prefix("offport");
        offport.register(
            "records_in",
            "Raw records consumed",
            metrics.records_in.clone(),
        );
        offport.register(
            "records_out",
            "Records produced to output topics",
            metrics.records_out.clone(),
        );
        offport.register(
            "records_committed",
            "Input records whose outputs and offsets were committed",
            metrics.records_committed.clone(),
        );
        offport.register(
            "dead_letters",
            "Records sent to the dead-letter topic, by reason",
            metrics.dead_letters.clone(),
        );
        offport.register(
            "transactions",
            "Committed Kafka transactions",
            metrics.transactions.clone(),
        );
        offport.register(
            "transaction_aborts",
            "Aborted Kafka transactions",
            metrics.aborts.clone(),
        );
        offport.register(
            "retries",
            "Retries of transient failures (registry, broker)",
            metrics.retries.clone(),
        );
        offport.register(
            "records_replayed",
            "Records read again only to rebuild held join state (restart, rebalance, abort)",
            metrics.replayed.clone(),
        );
        offport.register_with_unit(
            "batch_duration",
            "Time to process and commit one batch",
            prometheus_client::registry::Unit::Seconds,
            metrics.batch_seconds.clone(),
        );
        offport.register_with_unit(
            "end_to_end_latency",
            "Time from a record's Kafka timestamp to the commit of the transaction that consumed it",
            prometheus_client::registry::Unit::Seconds,
            metrics.end_to_end_seconds.clone(),
        );
        offport.register(
            "consumer_lag_records",
            "Records behind the end of the assigned partitions",
            metrics.lag.clone(),
        );
        offport.register(
            "input_unstable_records",
            "Records of the assigned partitions behind a transaction still open (high watermark minus last stable offset)",
            metrics.unstable.clone(),
        );
        offport.register(
            "input_hanging_partitions",
            "Assigned partitions whose last stable offset has not moved for pipeline.hanging_transaction_after_ms with records behind it (a hanging transaction)",
            metrics.hanging.clone(),
        );
        offport.register(
            "state_keys",
            "Keys of a stateful stage's state (joiner devices, scorer destinations and open findings)",
            metrics.state_keys.clone(),
        );
        offport.register_with_unit(
            "state",
            "Approximate heap size of a stateful stage's state",
            prometheus_client::registry::Unit::Bytes,
            metrics.state_bytes.clone(),
        );
        offport.register(
            "state_evictions",
            "Keys evicted by the state memory cap (stream.max_state_bytes)",
            metrics.evictions.clone(),
        );
        offport.register(
            "late_records",
            "Joiner: EDR/MDM records and sessions that arrived behind the watermark (joined with the state left; sessions emitted already are not revised)",
            metrics.late_records.clone(),
        );
        offport.register(
            "tasks",
            "Stateful tasks (partition numbers) this instance owns",
            metrics.tasks.clone(),
        );
        offport.register(
            "state_restores",
            "State tasks (partitions) restored from the changelog",
            metrics.restores.clone(),
        );
        offport.register(
            "state_restored_records",
            "Changelog records read while restoring state",
            metrics.restored_records.clone(),
        );
        offport.register(
            "parallel_batches",
            "Batches whose tasks were processed on more than one thread (stream.workers)",
            metrics.parallel_batches.clone(),
        );
        offport.register(
            "changelog_records",
            "Changelog records written",
            metrics.changelog_records.clone(),
        );
        offport.register(
            "changelog_bytes",
            "Bytes of changelog keys and values written",
            metrics.changelog_bytes.clone(),
        );
        offport.register(
            "baselines_rejected",
            "Baseline records rejected (invalid key, value or document)",
            metrics.baselines_rejected.clone(),
        );
        offport.register(
            "baselines_applied",
            "Baseline versions and withdrawals applied from the baselines topic",
            metrics.baselines_applied.clone(),
        );
        offport.register(
            "cache_hits",
            "Lookups answered by a bounded cache (baseline_resolution, registry_writer_schemas, registry_readers)",
            metrics.cache_hits.clone(),
        );
        offport.register(
            "cache_misses",
            "Lookups a bounded cache had to compute or fetch",
            metrics.cache_misses.clone(),
        );
        offport.register(
            "cache_entries",
            "Entries a bounded cache holds",
            metrics.cache_entries.clone(),
        );
        offport.register(
            "cache_capacity",
            "Most entries a bounded cache keeps",
            metrics.cache_capacity.clone(),
        );
        offport.register(
            "consecutive_aborts",
            "Transactions failed in a row (0 while the stage commits)",
            metrics.health.consecutive_aborts.clone(),
        );
        offport.register(
            "stalled_partitions",
            "Partitions of a batch that failed its transaction 5 times in a row (0 while the stage moves)",
            metrics.health.stalled_partitions.clone(),
        );
        offport.register(
            "kafka_errors",
            "librdkafka errors saying the cluster is unreachable",
            metrics.health.kafka_errors.clone(),
        );
        offport.register(
            "kafka_outages",
            "Kafka outages begun (every broker unreachable), each logged once at its start and end",
            metrics.health.kafka_outages.clone(),
        );
        // Every reason's series exists from the start at 0, so dashboards and alerts on a
        // rate see it before the first dead letter.
        for reason in DeadLetterReason::ALL {
            let _ = metrics.dead_letters.get_or_create(&ReasonLabels {
                reason: reason.into(),
            });
        }
        for cache in crate::registry::CACHES
            .iter()
            .chain([&offport_core::baseline::ResolveCache::NAME])
        {
            let labels = CacheLabels {
                cache: (*cache).to_string(),
            };
            let _ = metrics.cache_hits.get_or_create(&labels);
            let _ = metrics.cache_misses.get_or_create(&labels);
            let _ = metrics.cache_entries.get_or_create(&labels);
            let _ = metrics.cache_capacity.get_or_create(&labels);
        }
        Arc::new(metrics)
    }

    /// Records the end-to-end latency of records with these Kafka timestamps (epoch
    /// milliseconds), committed just now. Records without a timestamp are skipped.
    pub fn committed(&self, timestamps: &[i64]) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        for &timestamp in timestamps {
            if timestamp > 0 {
                // Milliseconds as f64: exact far beyond any real latency.
                #[allow(clippy::cast_precision_loss)]
                let seconds = now.saturating_sub(timestamp).max(0) as f64 / 1_000.0;
                self.end_to_end_seconds.observe(seconds);
            }
        }
    }

    /// Publishes the counts of bounded caches (each cache's counts are cumulative, so the
    /// counters are set to them, not added to).
    pub fn caches(&self, caches: &[CacheStats]) {
        for stats in caches {
            let labels = CacheLabels {
                cache: stats.name.to_string(),
            };
            self.cache_hits
                .get_or_create(&labels)
                .inner()
                .store(stats.hits, Ordering::Relaxed);
            self.cache_misses
                .get_or_create(&labels)
                .inner()
                .store(stats.misses, Ordering::Relaxed);
            self.cache_entries
                .get_or_create(&labels)
                .set(i64::try_from(stats.entries).unwrap_or(i64::MAX));
            self.cache_capacity
                .get_or_create(&labels)
                .set(i64::try_from(stats.capacity).unwrap_or(i64::MAX));
        }
    }

    /// Counts a dead-lettered record.
    pub fn dead_letter(&self, reason: DeadLetterReason) {
        self.dead_letters
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }
}

/// Registers the series of the process itself (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`,
/// `process_max_fds`, `process_start_time_seconds`, the names every Prometheus client library
/// uses, read from `/proc/self` at each scrape; absent where there is no `/proc`) and
/// `offport_build_info{stage, version}`.
pub fn register_process(registry: &mut Registry, stage: &str) {
    registry.register_collector(Box::new(ProcessCollector));
    registry.register(
        "offport_build",
        "the stage and the offport version it was built from (always 1)",
        prometheus_client::metrics::info::Info::new(vec![
            ("stage".to_string(), stage.to_string()),
            ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ]),
    );
}

/// The process series, from `/proc/self` at scrape time.
#[derive(Debug)]
struct ProcessCollector;

/// What `/proc` says of this process.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: i64,
    virtual_bytes: i64,
    start_time_seconds: f64,
    open_fds: i64,
    max_fds: Option<i64>,
}

impl ProcessStats {
    /// `stat` is `/proc/self/stat`, `boot_time` the `btime` of `/proc/stat`.
    fn parse(stat: &str, boot_time: i64, ticks_per_second: f64, page_bytes: i64) -> Option<Self> {
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
        // Field n of proc(5) (1-based) is fields[n - 3] here.
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<i64>().ok());
        let ticks = |n: usize| field(n).map(|t| t as f64 / ticks_per_second);
        Some(Self {
            cpu_seconds: ticks(14)? + ticks(15)?,
            start_time_seconds: boot_time as f64 + ticks(22)?,
            virtual_bytes: field(23)?,
            resident_bytes: field(24)? * page_bytes,
            open_fds: 0,
            max_fds: None,
        })
    }

    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100);
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096);
        let mut stats = Self::parse(&stat, boot_time, ticks as f64, page)?;
        stats.open_fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as i64)
            .unwrap_or(0);
        stats.max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|limits| {
                limits.lines().find_map(|l| {
                    l.strip_prefix("Max open files")?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                })
            });
        Some(stats)
    }
}

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::registry::Unit;
        let Some(p) = ProcessStats::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(p.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "user and system CPU time spent",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let mut gauge = |name: &str, help: &str, unit: Option<&Unit>, value: f64| {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, unit, gauge.metric_type())?)
        };
        gauge(
            "process_resident_memory",
            "resident memory size",
            Some(&Unit::Bytes),
            p.resident_bytes as f64,
        )?;
        gauge(
            "process_virtual_memory",
            "virtual memory size",
            Some(&Unit::Bytes),
            p.virtual_bytes as f64,
        )?;
        gauge(
            "process_start_time",
            "start time of the process since the Unix epoch",
            Some(&Unit::Seconds),
            p.start_time_seconds,
        )?;
        gauge(
            "process_open_fds",
            "open file descriptors",
            None,
            p.open_fds as f64,
        )?;
        if let Some(max) = p.max_fds {
            gauge(
                "process_max_fds",
                "maximum number of open file descriptors",
                None,
                max as f64,
            )?;
        }
        Ok(())
    }
}

#[derive(Clone)]
struct Shared {
    registry: Arc<Registry>,
    metrics: Arc<PipelineMetrics>,
    shutdown: Shutdown,
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listen` until shutdown. Returns the bound
/// address (useful with port 0).
pub async fn serve(
    listen: SocketAddr,
    registry: Registry,
    metrics: Arc<PipelineMetrics>,
    shutdown: Shutdown,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let shared = Shared {
        registry: Arc::new(registry),
        metrics,
        shutdown: shutdown.clone(),
    };
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        .with_state(shared);
    let handle = tokio::spawn(async move {
        let stop = async move { shutdown.cancelled().await };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(%error, "metrics endpoint stopped");
        }
    });
    Ok((bound, handle))
}

async fn metrics_text(State(shared): State<Shared>) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &shared.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("encoding metrics failed: {error}\n"),
        ),
    }
}

async fn health(State(shared): State<Shared>) -> impl IntoResponse {
    match shared.metrics.health.stalled() {
        None => (StatusCode::OK, "ok\n".to_string()),
        Some(stalled) => (StatusCode::SERVICE_UNAVAILABLE, stalled),
    }
}

async fn ready(State(shared): State<Shared>) -> impl IntoResponse {
    if shared.metrics.ready.load(Ordering::Relaxed) && !shared.shutdown.is_triggered() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The `offport_*` series named in the first column of the metrics table in docs/operations.md.
    fn documented() -> Vec<String> {
        let readme = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/operations.md"
        ))
        .unwrap();
        readme
            .lines()
            .filter_map(|line| line.strip_prefix("| `offport_"))
            .map(|rest| {
                let name = rest.split(['`', '{']).next().unwrap_or_default();
                format!("offport_{name}")
            })
            .collect()
    }

    #[test]
    fn the_process_line_of_proc_parses_whatever_the_command_name() {
        let stat = "4242 (offport (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 9 0 12345 123456789 2500 18446744073709551615";
        let p = ProcessStats::parse(stat, 1_700_000_000, 100.0, 4096).unwrap();
        assert!((p.cpu_seconds - 3.0).abs() < 1e-9, "{p:?}");
        assert!(
            (p.start_time_seconds - 1_700_000_123.45).abs() < 1e-6,
            "{p:?}"
        );
        assert_eq!(
            (p.virtual_bytes, p.resident_bytes),
            (123_456_789, 2_500 * 4096)
        );
        assert_eq!(ProcessStats::parse("garbage", 0, 100.0, 4096), None);
        // This process, as a scrape shows it.
        let live = ProcessStats::read().unwrap();
        assert!(live.resident_bytes > 0 && live.open_fds > 0 && live.start_time_seconds > 1e9);
    }

    #[test]
    fn the_scrape_shows_exactly_the_series_the_readme_documents() {
        let mut registry = Registry::default();
        let metrics = PipelineMetrics::register(&mut registry);
        register_process(&mut registry, "scorer");
        metrics.committed(&[1]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let documented = documented();
        assert!(
            documented.len() >= 15,
            "metrics table of docs/operations.md not found: {documented:?}"
        );
        for series in &documented {
            // A histogram shows as _bucket/_sum/_count lines, a counter with _total.
            let shown = text.lines().any(|line| {
                line.strip_prefix(series.as_str())
                    .is_some_and(|rest| rest.starts_with([' ', '{', '_']))
            });
            assert!(shown, "{series} is documented but not exposed:\n{text}");
        }
        for series in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(series)),
                "{series} missing:\n{text}"
            );
        }
        assert!(
            text.contains(&format!(
                "offport_build_info{{stage=\"scorer\",version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        for line in text
            .lines()
            .filter(|l| l.starts_with("# TYPE ") && !l.starts_with("# TYPE process_"))
        {
            let name = line.split_whitespace().nth(2).unwrap();
            assert!(
                documented.iter().any(|d| d.starts_with(name)),
                "{name} is exposed but not in the table of docs/operations.md"
            );
        }
    }

    #[test]
    fn end_to_end_latency_counts_records_with_a_timestamp() {
        let mut registry = Registry::default();
        let metrics = PipelineMetrics::register(&mut registry);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let two_seconds_ago = i64::try_from(now).unwrap() - 2_000;
        metrics.committed(&[two_seconds_ago, -1, two_seconds_ago]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("offport_end_to_end_latency_seconds_count 2"),
            "{text}"
        );
        let sum: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("offport_end_to_end_latency_seconds_sum "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((4.0..5.0).contains(&sum), "{sum}");
    }
}
