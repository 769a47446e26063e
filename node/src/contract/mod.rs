//! The contract's side of the protocol: what a run is given, how its outcome
//! and its state are named by hashes.

mod framing;
mod input;
mod output_tree;
mod run;
mod signed_input;
mod state_tree;

pub use framing::{UserIo, MAX_MESSAGES};
pub use input::{
    admissible, input_hash, last_ledger, runnable, signer, Signer, Stamper, UserInput,
};
pub use output_tree::{leaf, output_text, output_texts, OutputTree, B3};
pub use signed_input::{Container, SignedInput, SignedInputError};

pub use crate::ledger::ExecResult;
pub use run::{describe, FdlistFormat, RunLimits, RunOutcome, RunReport, RunRequest, RunResult};
pub use state_tree::{dir_hash, file_leaf, link_leaf, StateNode};
