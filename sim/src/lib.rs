//! Deterministic simulator for Hot Pocket consensus.
//!
//! Many nodes run the unchanged protocol and driver from `hotpocket-node` on
//! one madsim runtime, through simulated clocks, links, stores and contract.
//! A seed fixes everything: task order, link fates, keys and fault draws, so
//! a run's trace hash is a fingerprint of the whole execution.

pub mod adversary;
pub mod bench;
pub mod campaign;
pub mod check;
pub mod env;
pub mod fuzz;
pub mod picture;
pub mod runner;
pub mod scenario;
pub mod shrink;
pub mod world;

pub use runner::{run, Report};
pub use scenario::Scenario;
