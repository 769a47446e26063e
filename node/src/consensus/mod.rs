//! UNL consensus: four stages a round, 50/65/80% thresholds, close at 80%.
//!
//! Everything here is sans-IO. [`Node`] takes events (a tick, a peer message,
//! a user input, a finished contract run) with the node-local time and returns
//! [`Action`]s for its driver to carry out. It owns its parts, each in its
//! own file with its own state: the input pool, the proposal book, the chain,
//! the execution tracker, the voter, and the catch-up, body fetch and state
//! sync sub-machines; vote counting is pure functions in `tally`.

mod backlog;
mod bodies;
mod book;
mod catchup;
mod chain;
mod config;
mod exec;
mod frames;
mod interface;
mod jobs;
mod message;
mod node;
mod nonces;
mod output_sigs;
mod pool;
mod reached;
mod served;
mod state_sync;
mod tally;
mod timing;

pub use crate::contract::{input_hash, ExecResult};
pub use crate::ledger::{Proposal, SignedProposal};
pub use crate::wire::MAX_FRAME_BYTES;
pub use backlog::{PAUSE_BEHIND, RESUME_BEHIND};
pub(crate) use config::planted;
#[cfg(feature = "planted")]
pub use config::PlantedBug;
pub use config::{threshold, ConfigError, ConsensusConfig};
pub use frames::{FrameStats, SentProposals};
pub use interface::{
    Action, BeaconStats, CloseVia, Event, Input, NodeError, Stats, Wanted, Withheld,
};
pub use jobs::Job;
pub use message::{PeerMessage, ProposalHead, WireError};
pub use node::Node;
pub use output_sigs::{signers_needed, OutputSig};
pub use pool::INPUT_TTL_ROUNDS;
pub use reached::{Kept, RarePath};
pub use tally::{agreed_time, best_candidate, inputs_with_votes, lcl_votes, VoteStatus};
pub use timing::{Slot, Timing};
