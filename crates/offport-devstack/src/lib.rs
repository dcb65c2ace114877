//! The local development stack: a real Apache Kafka broker (KRaft, single node) and a real
//! Apicurio Registry, fetched from Maven Central with Maven and run as local processes on
//! 127.0.0.1. No Docker is needed.
//!
//! - [`java`]: finds a JDK new enough for each component.
//! - [`fetch`]: downloads the broker jars and the registry distribution into a cache directory
//!   outside the repository.
//! - [`stack`]: `up`, `status` and `down`, and the state file that tests attach to.
//!
//! This crate is developer tooling: the services never depend on it.

pub mod faults;
pub mod fetch;
pub mod java;
pub mod secure;
pub mod stack;

pub use stack::{StackOptions, StackState};
