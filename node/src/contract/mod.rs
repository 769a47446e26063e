//! The contract's side of the protocol: what a run is given, how its outcome
//! and its state are named by hashes.

mod input;
mod run;
mod state;

pub use input::{Stamper, UserInput};

pub use run::{describe, FdlistFormat, RunLimits, RunOutcome, RunReport, RunRequest, RunResult};
pub use state::{dir_hash, file_leaf, link_leaf, StateNode};
