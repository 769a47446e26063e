//! The work the node asks of the contract host: runs, rollbacks and state
//! jobs, which reach it one at a time, in the order the node asked for them
//! (the driver's contract slot keeps the queue).

use crate::crypto::PubKey;
use crate::ledger::{LedgerId, LedgerRecord};
use crate::sync::state_transfer::{StatePatch, StateRequest};

/// One piece of work for the contract host (`Action::Contract`).
#[derive(Clone, Debug)]
pub enum Job {
    /// Run the contract for this ledger, then feed back `Input::Executed`.
    Execute(Box<LedgerRecord>),
    /// Return the contract state to what running `to` left (feed back
    /// `Input::RollbackFailed` if it cannot). Runs of the ledgers after
    /// `to` still queued are dropped; the node truncates the store first
    /// (`Action::Truncate`). Only ever the unfinal lcl (see
    /// `Chain::roll_back`).
    Rollback { to: LedgerId },
    /// Once the jobs before it are done, feed back `Input::LocalState`.
    ReadState { id: u64 },
    /// Answer a peer's state request from the contract host, then feed
    /// back `Input::StateServed`.
    ServeState { to: PubKey, req: StateRequest },
    /// Swap the fetched state in, then feed back `Input::StateInstalled`.
    InstallState(Box<StatePatch>),
}
