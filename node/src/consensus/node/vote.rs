//! The node's votes: the peers' proposals it takes in, its status from the
//! last stage's lcl votes, the proposal it signs in each stage, and closing
//! a ledger at stage 0.

use super::Node;
use crate::consensus::book::Arrival;
use crate::consensus::message::PeerMessage;
use crate::consensus::tally;
use crate::consensus::timing::Slot;
use crate::consensus::{Action, CloseVia, Event, Proposal, SignedProposal, VoteStatus};
use crate::ledger::LedgerRecord;
use std::collections::BTreeMap;
use std::sync::Arc;

/// How far into stage 1 a node waits for its run of the lcl before it
/// proposes without that result. The run starts at stage 0; stage 1
/// carries each node's own result, the first rung of the ladder that
/// certifies it. Waiting longer gives slow contracts more time, but the
/// proposal must still reach the others before stage 2.
const RESULT_WAIT_PCT: u64 = 60;

impl Node {
    pub(super) fn update_status(&mut self, slot: Slot) {
        let lcl = self.chain.lcl();
        let votes = self.book.lcl_votes(slot.round, slot.stage - 1);
        tracing::trace!(round = slot.round, stage = slot.stage, ?votes, "lcl votes");
        let majority = self.cfg.needed(self.cfg.stage_thresholds_pct[0]);
        let close = self.cfg.needed(self.cfg.close_threshold_pct);
        let unl = self.cfg.unl.len();
        let (status, fork) = tally::status(&votes, lcl, majority, close, unl);
        if let Some(id) = fork {
            if self.forks_reported.insert(id.seq, id.hash) != Some(id.hash) {
                self.out.push(Action::Notify(Event::ForkSeen {
                    seq: id.seq,
                    ours: lcl.hash,
                    theirs: id.hash,
                }));
            }
            // The UNL built on another ledger at our seq: ours can never
            // become final. Step back (unless we voted on ours: the
            // rollback rule) and fetch theirs.
            self.rollback(false);
        }
        if status != self.status {
            self.status = status;
            self.out.push(Action::Notify(Event::Status(status)));
        }
    }

    /// Proposes in `slot` unless it did already, or (stage 1) waits a
    /// while for the lcl's run: see `RESULT_WAIT_PCT`.
    pub(super) fn propose(&mut self, slot: Slot, now: u64) {
        if !self.cfg.in_unl(&self.key.public()) || self.proposed == Some(slot) {
            return;
        }
        self.result_wait = None;
        let lcl = self.chain.lcl();
        let undecided = self.chain.undecided();
        if slot.stage == 1 && undecided <= lcl.seq && self.exec.result(lcl.seq).is_none() {
            let until = self.timing.slot_start(slot) + self.cfg.stage_ms() * RESULT_WAIT_PCT / 100;
            if now < until {
                self.result_wait = Some(until);
                return;
            }
        }
        if self.vote_from_round.is_none_or(|r| slot.round < r) {
            return; // the round this node (re)started in
        }
        if slot.stage > 0 && self.status == VoteStatus::Desync {
            return;
        }
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
        // Nothing else waits for the contract: a run not done by then is
        // voted on in a later round, and stages 2-3 follow the votes.
        let results = match slot.stage {
            0 | 1 => self.exec.own_results(undecided, lcl.seq),
            _ => tally::verdicts(
                &self.cfg,
                &self.book.slot(slot.round, slot.stage - 1),
                lcl,
                slot.stage,
                undecided,
                &self.key.public(),
                |seq| self.exec.lost(seq),
            ),
        };
        let proposal = Proposal {
            author: self.key.public(),
            round: slot.round,
            stage: slot.stage,
            time,
            lcl,
            inputs,
            results,
            beacon: self.beacon_vote(slot, lcl),
        };
        tracing::trace!(
            round = slot.round,
            stage = slot.stage,
            inputs = proposal.inputs.len(),
            "proposing"
        );
        let (signed, signing) = proposal.sign_keeping_bytes(&self.key);
        let bytes = PeerMessage::proposal_frame(&signing, &signed.sig);
        let signed = Arc::new(signed);
        if let Some(frames) = &self.frames {
            frames.sent(&signed, signing.into());
        }
        self.book.insert(signed);
        self.proposed = Some(slot);
        if slot.stage == 3 {
            self.chain.vote(lcl);
        }
        self.out.push(Action::Broadcast { bytes });
    }

    /// A peer's proposal; `signed` is its encoding when the frame came
    /// from the shared memory of sent frames.
    pub(super) fn on_proposal(&mut self, now: u64, sp: Arc<SignedProposal>, signed: Option<&[u8]>) {
        let round = self.slot.map_or(self.timing.slot(now).round, |s| s.round);
        let lcl = sp.proposal.lcl;
        let arrival = self.book.arrive(&self.cfg, &self.ring, round, sp, signed);
        if arrival.verified() {
            self.stats.signature_checks += 1;
        }
        let s = &mut self.stats;
        match arrival {
            Arrival::Accepted => {
                s.proposals_accepted += 1;
                if lcl != self.chain.lcl() {
                    s.foreign_lcl += 1;
                }
                if lcl.seq > self.chain.lcl().seq {
                    self.catchup_tick(now);
                }
            }
            Arrival::Duplicate => s.dropped_duplicate += 1,
            Arrival::Equivocation => s.equivocations += 1,
            Arrival::Stale => s.dropped_stale += 1,
            Arrival::BadSignature => s.dropped_bad_signature += 1,
            Arrival::Malformed => s.dropped_malformed += 1,
            Arrival::NotUnl => s.dropped_not_unl += 1,
        }
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
        let mut needed = self.cfg.needed(self.cfg.close_threshold_pct);
        if crate::consensus::planted!(self.cfg, CloseOnReceived) {
            needed = stage3.len() / 2 + 1;
        }
        let Some((hash, group)) = tally::closing(&stage3, lcl, needed) else {
            return;
        };
        // The hash does not cover the beacon's signatures: keep our own
        // copy, whose entries we checked as we voted, or else one whose
        // signatures hold, so the ledger's evidence convicts on its own.
        let me = self.key.public();
        let Some(chosen) = (group.iter().find(|sp| sp.proposal.author == me))
            .or_else(|| (group.iter()).find(|sp| sp.proposal.beacon.verify_evidence(&self.ring)))
        else {
            return;
        };
        let ledger = chosen.proposal.candidate();
        // The book's copies, shared (`group` is made of them).
        let proof = (group.iter())
            .map(|sp| (self.book.shared(sp).cloned()).unwrap_or_else(|| Arc::new((*sp).clone())))
            .collect();
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
        // The ledger alone for the event: the record (with its proof, a
        // threshold of whole proposals) is shared with the store, not
        // copied.
        let ledger = record.ledger.clone();
        self.out.push(Action::Persist(record));
        self.out.push(Action::Sync);
        self.out.push(Action::Notify(Event::LedgerClosed {
            ledger,
            hash,
            via: CloseVia::Consensus,
        }));
        self.exec.schedule(seq);
    }
}
