//! The contract's work queue: runs, rollbacks and state jobs reach the
//! contract host one at a time, in the order the node asked for them.

use crate::crypto::PubKey;
use crate::ledger::{LedgerId, LedgerRecord};
use crate::sync::state_transfer::{StatePatch, StateRequest};
use std::collections::VecDeque;

/// One piece of work for the contract host (`Action::Contract`).
#[derive(Clone, Debug)]
pub enum Job {
    /// Run the contract for this ledger, then feed back `Input::Executed`.
    Execute(Box<LedgerRecord>),
    /// Return the contract state to what running `to` left (feed back
    /// `Input::RollbackFailed` if it cannot). The driver also drops every
    /// stored ledger after `to` at once, and runs of them still queued
    /// here are dropped. Only ever the unfinal lcl (see `Chain::roll_back`).
    Rollback { to: LedgerId },
    /// Once the jobs before it are done, feed back `Input::LocalState`.
    ReadState { id: u64 },
    /// Answer a peer's state request from the contract host, then feed
    /// back `Input::StateServed`.
    ServeState { to: PubKey, req: StateRequest },
    /// Swap the fetched state in, then feed back `Input::StateInstalled`.
    InstallState(Box<StatePatch>),
}

#[derive(Debug, Default)]
pub struct ContractJobs(VecDeque<Job>);

impl ContractJobs {
    pub fn push(&mut self, job: Job) {
        if let Job::Rollback { to } = &job {
            // Queued runs of the dropped ledgers would be wasted, and would
            // run on a state about to be rolled back.
            self.0
                .retain(|j| !matches!(j, Job::Execute(r) if r.ledger.seq > to.seq));
        }
        self.0.push_back(job);
    }

    /// A rollback failed: the queued runs would run on the wrong state.
    pub fn drop_runs(&mut self) {
        self.0.retain(|j| !matches!(j, Job::Execute(_)));
    }

    pub fn pop(&mut self) -> Option<Job> {
        self.0.pop_front()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Hash;

    fn run(seq: u64) -> Job {
        let mut r = LedgerRecord::genesis();
        r.ledger.seq = seq;
        Job::Execute(Box::new(r))
    }

    #[test]
    fn a_rollback_drops_the_queued_runs_it_undoes() {
        let mut jobs = ContractJobs::default();
        for seq in [4, 5, 6] {
            jobs.push(run(seq));
        }
        jobs.push(Job::ReadState { id: 1 });
        let to = LedgerId {
            seq: 4,
            hash: Hash::ZERO,
        };
        jobs.push(Job::Rollback { to });
        assert!(matches!(jobs.pop(), Some(Job::Execute(r)) if r.ledger.seq == 4));
        assert!(matches!(jobs.pop(), Some(Job::ReadState { id: 1 })));
        assert!(matches!(jobs.pop(), Some(Job::Rollback { .. })));
        assert!(jobs.is_empty());
        jobs.push(run(5));
        jobs.push(Job::ReadState { id: 2 });
        jobs.drop_runs();
        assert!(matches!(jobs.pop(), Some(Job::ReadState { id: 2 })));
        assert!(jobs.is_empty());
    }
}
