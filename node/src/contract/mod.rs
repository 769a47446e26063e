//! The contract's side of the protocol: what a run is given, how its outcome
//! and its state are named by hashes.

mod run;
mod state;

pub use run::{describe, FdlistFormat, RunLimits, RunOutcome, RunRequest, RunResult};
pub use state::{file_leaf, StateNode};
