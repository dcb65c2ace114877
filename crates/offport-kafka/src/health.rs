//! What a stage knows about its own progress and its broker, for `/healthz`, the metrics and
//! the log: partitions whose transactions keep failing, and Kafka outages.
//!
//! A stage whose transactions fail [`STALL_AFTER_ABORTS`] times in a row is *stalled*: it
//! rewinds and retries, but its partitions do not move. `/healthz` then answers 503 naming the
//! partitions and the last error, and `offport_stalled_partitions` counts them, so a liveness
//! probe or an alert sees what the log alone would bury. An outage of the cluster (every
//! broker unreachable) is logged once when it begins and once when it ends, with the number of
//! client errors in between; the errors themselves are counted, not logged one by one, and so
//! are librdkafka's connection-failure log lines while it lasts.
//!
//! Not here: the retry policy (the loops) and the HTTP server (`metrics.rs`).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// Failed transactions in a row after which a stage reports itself stalled. Transient
/// failures (a leader moving, a coordinator loading) clear within one or two retries.
pub const STALL_AFTER_ABORTS: i64 = 5;

/// A stage's progress and broker reachability.
#[derive(Debug, Default)]
pub struct Health {
    /// Transactions failed in a row (`offport_consecutive_aborts`).
    pub consecutive_aborts: Gauge<i64, AtomicI64>,
    /// Partitions of the failing transaction once stalled, else 0
    /// (`offport_stalled_partitions`).
    pub stalled_partitions: Gauge<i64, AtomicI64>,
    /// librdkafka errors reporting an unreachable cluster (`offport_kafka_errors_total`).
    pub kafka_errors: Counter,
    /// Outages begun: every broker unreachable (`offport_kafka_outages_total`).
    pub kafka_outages: Counter,
    /// What the stage failed on last, while it fails.
    stall: Mutex<Option<Stall>>,
    /// Whether an outage is open (a cheap check on the hot path).
    unreachable: AtomicBool,
    outage: Mutex<Option<Outage>>,
}

#[derive(Debug, Clone)]
struct Stall {
    partitions: Vec<(String, i32)>,
    error: String,
    since: Instant,
}

#[derive(Debug)]
struct Outage {
    since: Instant,
    errors: u64,
    first: String,
}

impl Health {
    /// A transaction committed: the stage moves.
    pub fn progressed(&self) {
        if self.consecutive_aborts.get() > 0 {
            let stalled = self.stalled_partitions.get() > 0;
            self.consecutive_aborts.set(0);
            self.stalled_partitions.set(0);
            let was = self.stall.lock().ok().and_then(|mut s| s.take());
            if let (true, Some(was)) = (stalled, was) {
                tracing::info!(
                    partitions = ?was.partitions,
                    stalled_for_s = was.since.elapsed().as_secs(),
                    "transactions commit again: the stage moves"
                );
            }
        }
        self.reachable();
    }

    /// A transaction over `partitions` failed with `error` and was aborted.
    pub fn aborted(&self, partitions: Vec<(String, i32)>, error: &str) {
        self.consecutive_aborts.inc();
        let count = self.consecutive_aborts.get();
        let Ok(mut stall) = self.stall.lock() else {
            return;
        };
        let since = stall.as_ref().map_or_else(Instant::now, |s| s.since);
        let now_stalled = count >= STALL_AFTER_ABORTS;
        if now_stalled {
            self.stalled_partitions
                .set(i64::try_from(partitions.len()).unwrap_or(i64::MAX).max(1));
            if count == STALL_AFTER_ABORTS {
                tracing::error!(
                    ?partitions,
                    attempts = count,
                    %error,
                    "stalled: the same batch fails every time; these partitions make no progress"
                );
            }
        }
        *stall = Some(Stall {
            partitions,
            error: error.to_string(),
            since,
        });
    }

    /// `None` while the stage makes progress, else what `/healthz` says about the stall.
    pub fn stalled(&self) -> Option<String> {
        if self.consecutive_aborts.get() < STALL_AFTER_ABORTS {
            return None;
        }
        let stall = self.stall.lock().ok()?.clone()?;
        let partitions: Vec<String> = stall
            .partitions
            .iter()
            .map(|(topic, partition)| format!("{topic}/{partition}"))
            .collect();
        Some(format!(
            "stalled: {} transactions in a row failed over {} s; partitions {} make no \
             progress; last error: {}\n",
            self.consecutive_aborts.get(),
            stall.since.elapsed().as_secs(),
            partitions.join(", "),
            stall.error
        ))
    }

    /// Takes a librdkafka client error. An error saying the cluster is unreachable opens an
    /// outage (logged once) or counts towards the open one, and `true` comes back; any other
    /// error is left to the caller to log (`false`).
    pub fn kafka_error(&self, error: &KafkaError, reason: &str) -> bool {
        if !unreachable(error) {
            return false;
        }
        self.kafka_errors.inc();
        let Ok(mut outage) = self.outage.lock() else {
            return true;
        };
        match outage.as_mut() {
            Some(open) => {
                open.errors += 1;
                tracing::debug!(%error, %reason, "kafka still unreachable");
            }
            None => {
                self.kafka_outages.inc();
                tracing::error!(
                    %error,
                    %reason,
                    "kafka unreachable; retrying (logged again when it is reachable)"
                );
                *outage = Some(Outage {
                    since: Instant::now(),
                    errors: 1,
                    first: error.to_string(),
                });
                self.unreachable.store(true, Ordering::Release);
            }
        }
        true
    }

    /// The cluster answered (a record read, a transaction committed, a broker up in the
    /// statistics): closes an open outage, logging how long it lasted.
    pub fn reachable(&self) {
        if !self.unreachable.load(Ordering::Acquire) {
            return;
        }
        let closed = self.outage.lock().ok().and_then(|mut o| o.take());
        self.unreachable.store(false, Ordering::Release);
        if let Some(outage) = closed {
            tracing::info!(
                lasted_s = duration_s(outage.since.elapsed()),
                errors = outage.errors,
                first_error = %outage.first,
                "kafka reachable again"
            );
        }
    }

    /// Takes one of librdkafka's log lines. A broker connection failure (`FAIL`) is a warning,
    /// and only a debug line while an outage is open (it is counted in the outage's errors):
    /// during an outage librdkafka writes one per connection attempt to every broker and
    /// coordinator. Everything else goes out at its level.
    pub fn librdkafka_log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        use RDKafkaLogLevel::*;
        if facility == "FAIL" {
            if self.is_unreachable() {
                self.kafka_errors.inc();
                if let Ok(mut outage) = self.outage.lock() {
                    if let Some(open) = outage.as_mut() {
                        open.errors += 1;
                    }
                }
                tracing::debug!(target: "librdkafka", "{facility} {message}");
            } else {
                tracing::warn!(target: "librdkafka", "{facility} {message}");
            }
            return;
        }
        match level {
            Emerg | Alert | Critical | Error => {
                tracing::error!(target: "librdkafka", "{facility} {message}")
            }
            Warning => tracing::warn!(target: "librdkafka", "{facility} {message}"),
            Notice | Info => tracing::info!(target: "librdkafka", "{facility} {message}"),
            Debug => tracing::debug!(target: "librdkafka", "{facility} {message}"),
        }
    }

    /// Whether an outage is open.
    pub fn is_unreachable(&self) -> bool {
        self.unreachable.load(Ordering::Acquire)
    }
}

fn duration_s(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 10.0).round() / 10.0
}

/// Errors by which librdkafka says it cannot reach the cluster (it retries them itself).
fn unreachable(error: &KafkaError) -> bool {
    let code = match error {
        KafkaError::Global(code) | KafkaError::MessageConsumption(code) => *code,
        _ => return false,
    };
    matches!(
        code,
        RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::Resolve
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_stage_is_stalled_after_the_set_number_of_aborts_in_a_row_and_moves_again_on_commit() {
        let health = Health::default();
        let partitions = vec![("offport.raw.proxy".to_string(), 3)];
        for _ in 0..STALL_AFTER_ABORTS - 1 {
            health.aborted(partitions.clone(), "MessageSizeTooLarge");
        }
        assert_eq!(health.stalled(), None, "a few aborts are transient");
        assert_eq!(health.stalled_partitions.get(), 0);
        health.aborted(partitions.clone(), "MessageSizeTooLarge");
        let said = health.stalled().unwrap();
        assert!(said.contains("offport.raw.proxy/3"), "{said}");
        assert!(said.contains("MessageSizeTooLarge"), "{said}");
        assert_eq!(health.stalled_partitions.get(), 1);
        health.progressed();
        assert_eq!(health.stalled(), None);
        assert_eq!(health.consecutive_aborts.get(), 0);
        assert_eq!(health.stalled_partitions.get(), 0);
    }

    #[test]
    fn an_outage_is_opened_once_counted_and_closed_when_kafka_answers() {
        let health = Health::default();
        let down = KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure);
        for _ in 0..100 {
            assert!(health.kafka_error(&down, "localhost:9092/1: Connection refused"));
        }
        assert!(health.kafka_error(
            &KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down"
        ));
        assert!(health.is_unreachable());
        assert_eq!(health.kafka_outages.get(), 1);
        assert_eq!(health.kafka_errors.get(), 101);
        health.reachable();
        assert!(!health.is_unreachable());
        assert!(health.kafka_error(&down, "again"));
        assert_eq!(
            health.kafka_outages.get(),
            2,
            "a new outage after the end of the first"
        );
        // Other errors are not outages.
        assert!(!health.kafka_error(
            &KafkaError::Global(RDKafkaErrorCode::InvalidArgument),
            "bad property"
        ));
        assert_eq!(health.kafka_errors.get(), 102);
    }

    #[test]
    fn connection_failures_during_an_outage_are_counted_not_logged_one_by_one() {
        let health = Health::default();
        // Before an outage a failed connection is a warning, not counted.
        health.librdkafka_log(RDKafkaLogLevel::Error, "FAIL", "Connection refused");
        assert_eq!(health.kafka_errors.get(), 0);
        health.kafka_error(
            &KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        for _ in 0..50 {
            health.librdkafka_log(RDKafkaLogLevel::Error, "FAIL", "Connection refused");
        }
        assert_eq!(health.kafka_errors.get(), 51);
        assert_eq!(health.kafka_outages.get(), 1);
    }
}
