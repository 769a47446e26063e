//! The node's votes: its status from the last stage's lcl votes, the
//! proposal it signs in each stage, and closing a ledger at stage 0.

use super::Node;
use crate::consensus::message::PeerMessage;
use crate::consensus::tally;
use crate::consensus::timing::Slot;
use crate::consensus::{Action, CloseVia, Event, Proposal, VoteStatus};
use crate::contract::ExecResult;
use crate::crypto::Hash;
use crate::ledger::LedgerRecord;
use std::collections::BTreeMap;

impl Node {
    pub(super) fn update_status(&mut self, slot: Slot) {
        let lcl = self.chain.lcl();
        let votes = self.book.lcl_votes(slot.round, slot.stage - 1);
        tracing::trace!(round = slot.round, stage = slot.stage, ?votes, "lcl votes");
        let majority = self.cfg.needed(self.cfg.stage_thresholds_pct[0]);
        let close = self.cfg.needed(self.cfg.close_threshold_pct);
        let (status, fork) = tally::status(&votes, lcl, majority, close);
        if let Some(id) = fork {
            if self.forks_reported.insert(id.seq, id.hash) != Some(id.hash) {
                self.out.push(Action::Notify(Event::ForkSeen {
                    seq: id.seq,
                    ours: lcl.hash,
                    theirs: id.hash,
                }));
            }
            // The UNL built on another ledger at our seq: ours can never
            // become final. Step back and fetch theirs.
            self.rollback(false);
        }
        if status != self.status {
            self.status = status;
            self.out.push(Action::Notify(Event::Status(status)));
        }
    }

    /// The lcl's result just became known: the stage-3 proposal that
    /// waited for it goes out now.
    pub(super) fn propose_again(&mut self) {
        if let Some(slot) = self.slot {
            self.propose(slot);
        }
    }

    pub(super) fn propose(&mut self, slot: Slot) {
        if !self.cfg.in_unl(&self.key.public()) || self.proposed == Some(slot) {
            return;
        }
        if self.vote_from_round.is_none_or(|r| slot.round < r) {
            return; // the round this node (re)started in
        }
        if slot.stage > 0 && self.status == VoteStatus::Desync {
            return;
        }
        // Only the stage-3 proposal is a candidate, so only it must carry
        // the lcl's run. Earlier stages go out while the contract still
        // runs: input agreement does not wait for it, and a run may take
        // most of a round.
        let exec = match self.exec.lcl_result() {
            Some(e) => e,
            None if slot.stage < 3 => ExecResult {
                state: Hash::ZERO,
                output: Hash::ZERO,
            },
            None => return, // proposed once the run finishes
        };
        let lcl = self.chain.lcl();
        if slot.stage == 3 && self.majority_elsewhere(slot) {
            // Ahead of a majority: keep announcing our lcl in stages 0-2 so
            // they fetch it, but do not vote on top of it until they are
            // here. A vote would forbid rolling it back if they never come.
            return;
        }
        let chain = &self.chain;
        let (inputs, time) = match slot.stage {
            0 => (
                self.pool.proposable(&self.cfg, |h| chain.includes(h)),
                self.timing.round_start(slot.round),
            ),
            _ => tally::follow(
                &self.cfg,
                &self.book.slot(slot.round, slot.stage - 1),
                lcl,
                slot.stage,
                self.timing.round_start(slot.round),
            ),
        };
        let proposal = Proposal {
            author: self.key.public(),
            round: slot.round,
            stage: slot.stage,
            time,
            lcl,
            inputs,
            state: exec.state,
            output: exec.output,
        };
        tracing::trace!(
            round = slot.round,
            stage = slot.stage,
            inputs = proposal.inputs.len(),
            "proposing"
        );
        let signed = proposal.sign(&self.key);
        let bytes = PeerMessage::Proposal(Box::new(signed.clone())).encode();
        self.book.insert(signed);
        self.proposed = Some(slot);
        if slot.stage == 3 {
            self.chain.vote(lcl);
        }
        self.out.push(Action::Broadcast { bytes });
    }

    /// Whether a majority of the previous stage proposed on another lcl.
    pub(super) fn majority_elsewhere(&self, slot: Slot) -> bool {
        let lcl = self.chain.lcl();
        let majority = self.cfg.needed(self.cfg.stage_thresholds_pct[0]);
        self.book
            .lcl_votes(slot.round, slot.stage - 1)
            .iter()
            .any(|(id, &n)| *id != lcl && n >= majority)
    }

    /// At stage 0: close round `round`'s ledger if the close threshold of the
    /// UNL proposed one identical stage-3 candidate on our lcl.
    pub(super) fn try_close(&mut self, round: u64) {
        let lcl = self.chain.lcl();
        let stage3 = self.book.slot(round, 3);
        let needed = self.cfg.needed(self.cfg.close_threshold_pct);
        let Some((ledger, hash, proof)) = tally::closing(&stage3, lcl, needed) else {
            return;
        };
        let record = self
            .append(LedgerRecord {
                ledger,
                hash,
                proof,
                bodies: BTreeMap::new(),
            })
            .clone();
        let seq = record.ledger.seq;
        tracing::debug!(
            seq,
            inputs = record.ledger.inputs.len(),
            pool = self.pool.len(),
            "closing"
        );
        self.out.push(Action::Persist(Box::new(record.clone())));
        self.out.push(Action::Sync);
        self.out.push(Action::Notify(Event::LedgerClosed {
            ledger: record.ledger,
            hash,
            via: CloseVia::Consensus,
        }));
        self.exec.schedule(seq);
    }
}
