//! The contract's side of the protocol: what a run is given, how its outcome
//! and its state are named by hashes.

mod input;
mod run;
mod state_tree;

pub use input::{input_hash, Stamper, UserInput};

pub use crate::ledger::ExecResult;
pub use run::{describe, FdlistFormat, RunLimits, RunOutcome, RunReport, RunRequest, RunResult};
pub use state_tree::{dir_hash, file_leaf, link_leaf, StateNode};
