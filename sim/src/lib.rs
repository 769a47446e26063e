//! Deterministic simulator for Hot Pocket consensus.
//!
//! Many nodes run the unchanged protocol and driver from `hotpocket-node` on
//! one madsim runtime, through simulated clocks, links, stores and contract.
//! A seed fixes everything: task order, link fates, keys and fault draws, so
//! a run's trace hash is a fingerprint of the whole execution.

pub mod beacon_check;
pub mod beacon_stats;
pub mod bench;
pub mod byzantine;
pub mod campaign;
pub mod checker;
pub mod contract;
pub mod entropy;
pub mod env;
pub mod expectations;
pub mod fuzz;
pub mod latency;
pub mod links;
pub mod npl_check;
pub mod npl_host;
pub mod output_check;
pub mod picture;
pub mod runner;
pub mod scenario;
pub mod shrink;
pub mod swarm;
pub mod trace;
pub mod twins;
pub mod users;
pub mod verdict_check;
pub mod violation;
pub mod world;

pub use runner::{run, Report};
pub use scenario::Scenario;
