//! UNL consensus: four stages a round, 50/65/80% thresholds, close at 80%.
//!
//! Everything here is sans-IO. [`Node`] takes events (a tick, a peer message,
//! a user input, a finished contract run) with the node-local time and returns
//! [`Action`]s for its driver to carry out.

mod bodies;
mod catchup;
mod config;
mod message;
mod node;
mod state_sync;
mod timing;
mod votes;

pub use crate::contract::{input_hash, ExecResult};
pub use crate::ledger::{Proposal, SignedProposal};
pub use crate::wire::MAX_FRAME_BYTES;
pub use config::{threshold, ConfigError, ConsensusConfig};
pub use message::{PeerMessage, WireError};
pub use node::{Action, CloseVia, Event, Input, Node, NodeError, Stats, VoteStatus};
pub use timing::{Slot, Timing};
pub use votes::{agreed_time, best_candidate, inputs_with_votes, lcl_votes};
