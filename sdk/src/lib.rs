//! Hot Pocket contract SDK.
//!
//! Implement [`Contract`] once. As a real binary, `fn main() {
//! hotpocket_contract::main(MyContract) }` reads the run description from
//! stdin (JSON or the old text format), each user's inputs from their fds,
//! runs the contract with the working directory as its state, and writes each
//! user's output to their fd. In-process (the simulator), [`Run::in_memory`]
//! gives the same contract the same inputs over an in-memory state.
//!
//! A contract that talks to its copies on the other nodes during the run
//! implements [`NplContract`] instead and gets an [`Npl`] (the node party
//! line) beside the [`Run`]; `hotpocket_contract::main_npl(MyContract)`
//! runs it as a binary.

mod description;
mod error;
mod npl;
mod process;
mod run;
mod state;

pub use description::{parse_description, Description};
pub use error::{NplError, SdkError};
pub use npl::{
    encode_record, frame_message, FdTransport, MemTransport, Npl, NplTransport, NullTransport,
    RecvFuture, MAX_MESSAGE,
};
pub use process::{block_on, main, main_npl};
pub use run::{Contract, NplContract, Run};
pub use state::{Changes, DirState, MemState, Overlay, State};
