//! The Kafka service shell shared by every offport stage.
//!
//! Written once, used by every service: configuration ([`settings`]), the topic layout and its
//! creation ([`topics`]), Avro encoding and decoding through a Confluent-compatible schema
//! registry ([`registry`]), the exactly-once consume-transform-produce runtime ([`runtime`]), metrics
//! and health endpoints ([`metrics`]), graceful shutdown ([`shutdown`]) and logging ([`telemetry`]).
//! Detection logic does not live here; it lives in `offport-core`.

pub mod baselines;
pub mod compatibility;
pub mod connect;
pub mod health;
pub mod inventory;
pub mod metrics;
pub mod progress;
pub mod registry;
pub mod runtime;
pub mod settings;
pub mod shutdown;
pub mod stage;
pub mod stages;
pub mod telemetry;
pub mod topics;
pub mod topology;
