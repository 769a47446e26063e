//! Hot Pocket contract SDK.
//!
//! Implement [`Contract`] once. As a real binary, `fn main() {
//! hotpocket_contract::main(MyContract) }` reads the run description from
//! stdin (JSON or the old text format), each user's inputs from their fds,
//! runs the contract with the working directory as its state, and writes each
//! user's output to their fd. In-process (the simulator), [`Run::in_memory`]
//! gives the same contract the same inputs over an in-memory state.

mod description;
mod error;
mod process;
mod run;
mod state;

pub use description::{parse_description, Description};
pub use error::SdkError;
pub use process::main;
pub use run::{Contract, Run};
pub use state::{DirState, MemState, State};
