//! offport's functional core: the domain model and the pure detection logic.
//!
//! Everything here is plain Rust over plain types: no Kafka, no async, no clock reads, no I/O.
//! Time enters as event timestamps passed in by the caller. The same code runs inside the Kafka
//! services, the in-process replay, the benchmarks and the tests, so a test of this crate is a
//! test of production behaviour.
//!
//! - [`model`]: the records that flow between stages (the Rust side of `schemas/*.avsc`).
//! - [`schema`]: the embedded Avro contracts, resolved for the schema registry.
//! - [`examples`]: fully populated example records, for documentation and tests.
//! - [`normalize`]: raw records in the formats users have, into the contracts.
//! - [`durable`]: the changelog form of the stateful cores (joiner, scorer).
//! - [`progress`]: event-time progress markers from the raw partitions to the joiner.

pub mod baseline;
pub mod cache;
pub mod durable;
pub mod examples;
pub mod join;
pub mod learn;
pub mod model;
pub mod normalize;
pub mod ocsf;
pub mod progress;
pub mod protocol;
pub mod schema;
pub mod score;
