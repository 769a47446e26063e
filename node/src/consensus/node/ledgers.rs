//! Ledgers joining and leaving the node's chain: closed by the UNL's
//! votes, adopted from a peer's history, or rolled back. Each touches
//! several parts (the chain, the runs, the pool, the state sync, the
//! store), so this is the node's own code, beside `mod.rs`.

use super::{beacon, Node};
use crate::consensus::catchup::{check_answer, Answer};
use crate::consensus::state_sync::Forced;
use crate::consensus::{Action, CloseVia, Event, Job, RarePath};
use crate::crypto::PubKey;
use crate::ledger::{LedgerId, LedgerRecord};
use crate::sync::SyncError;
use std::sync::Arc;

impl Node {
    /// At stage 0: closes round `round`'s ledger if the voter finds one.
    pub(super) fn try_close(&mut self, round: u64) {
        let Some(record) = self.vote(|voter, v| voter.close(v, round)) else {
            return;
        };
        let record = self.append(record).clone();
        let (seq, hash) = (record.ledger.seq, record.hash);
        self.rare.closed_here = Some(record.id());
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

    pub(super) fn on_history(&mut self, now: u64, from: PubKey, records: Vec<LedgerRecord>) {
        if !self.catchup.answered(&from) {
            self.stats.dropped_duplicate += 1; // unsolicited
            return;
        }
        match check_answer(&self.cfg, &self.ring, self.chain.lcl(), records) {
            Answer::OtherParent {
                parent,
                signers,
                refused,
            } => {
                if self.rollback(Some(parent)) {
                    // Ask again from the seq we now lack.
                    self.stats.signature_checks += signers as u64;
                } else {
                    self.refuse_history(from, refused);
                    self.catchup.failed();
                }
            }
            Answer::Extends {
                mut ledgers,
                refused,
            } => {
                let outvoted = ledgers.last().is_some_and(|tip| {
                    let (me, round) = (self.key.public(), self.round());
                    let skew = self.cfg.max_round_skew;
                    self.book.outvoted(&me, tip.id(), round, skew)
                        && !crate::consensus::planted!(self.cfg, AdoptOutvotedTip)
                });
                if outvoted {
                    // Its final part is still ours; the tip we ask another
                    // peer for.
                    ledgers.pop();
                    self.reached(RarePath::HistoryTipOutvoted);
                }
                let mut adopted = Vec::new();
                for rec in ledgers {
                    self.stats.signature_checks += rec.proof.len() as u64;
                    adopted.push(self.append(rec).clone());
                }
                if let Some(e) = refused {
                    self.refuse_history(from, e);
                }
                if outvoted || adopted.is_empty() {
                    self.catchup.failed();
                }
                if !adopted.is_empty() {
                    self.adopted(adopted);
                }
            }
        }
        self.catchup_tick(now);
    }

    fn refuse_history(&mut self, from: PubKey, e: SyncError) {
        self.reached(RarePath::HistoryRefused(e.kind()));
        self.stats.history_rejected += 1;
        self.catchup.failed();
        tracing::warn!(peer = ?from, error = %e, "rejecting history");
        self.out.push(Action::Notify(Event::HistoryRejected {
            peer: from,
            reason: e.to_string(),
        }));
    }

    /// Ledgers verified and appended from history: made durable, announced,
    /// and queued to run.
    fn adopted(&mut self, records: Vec<Arc<LedgerRecord>>) {
        self.reached(RarePath::HistoryAdopted);
        for r in &records {
            let dropped = self.rare.switching_from;
            if dropped.is_some_and(|d| d.seq == r.ledger.seq && d.hash != r.hash) {
                self.rare.switching_from = None;
                self.reached(RarePath::SwitchedToProven);
            }
            let outcome = r.ledger.beacon.outcome.as_ref();
            if outcome.is_some_and(|o| !o.fraud.is_empty()) {
                self.reached(RarePath::HistoryAcrossFraud);
            }
        }
        self.stats.history_adopted += records.len() as u64;
        for r in &records {
            self.out.push(Action::Persist(r.clone()));
        }
        self.out.push(Action::Sync);
        for r in &records {
            self.out.push(Action::Notify(Event::LedgerClosed {
                ledger: r.ledger.clone(),
                hash: r.hash,
                via: CloseVia::History,
            }));
        }
        for r in records {
            self.exec.schedule(r.ledger.seq);
        }
    }

    /// Adds a verified ledger to the chain. It certifies its predecessor's
    /// run: a run of ours that differs is reported.
    fn append(&mut self, record: LedgerRecord) -> &Arc<LedgerRecord> {
        let mismatch = self.exec.on_append(&record.ledger);
        let appended = self.chain.append(record, &mut self.pool).ledger.seq;
        self.mismatch(mismatch);
        beacon::note(&mut self.absences, &self.chain, appended);
        self.chain.shared(appended).expect("just appended")
    }

    /// Our run differs from what the UNL certified: copies may diverge
    /// (what a contract heard on the party line is not agreed). With
    /// another state, the node takes the certified one before its next
    /// run; with only other outputs, withholding them is all there is.
    pub(super) fn mismatch(&mut self, event: Option<Event>) {
        if let Some(e) = event {
            tracing::warn!(?e, "our run differs from the certified one");
            if matches!(e, Event::StateMismatch { .. }) {
                self.state.force(Forced::Mismatch);
            }
            self.out.push(Action::Notify(e));
        }
    }

    /// Drops the lcl if the chain's rollback rule allows it; returns
    /// whether it did. `proven` is another ledger at the lcl's seq whose
    /// proof was verified, if there is one. The lcl's inputs go back to the
    /// pool, its run and outputs are forgotten, and the contract state
    /// steps back too.
    pub(super) fn rollback(&mut self, proven: Option<LedgerId>) -> bool {
        let proven_elsewhere =
            proven.is_some() || crate::consensus::planted!(self.cfg, RollBackVoted);
        let lcl = self.chain.lcl();
        if self.rare.closed_here == Some(lcl) {
            self.rare.closed_here = None;
            self.reached(RarePath::LoneClose);
        }
        let mut dropped = match self.chain.roll_back(proven_elsewhere) {
            Ok(d) => d,
            Err(kept) => {
                // Asked again at every stage while the fork lasts: told once.
                if self.rare.kept.replace((lcl, kept)) != Some((lcl, kept)) {
                    self.reached(RarePath::RollbackRefused(kept));
                }
                return false;
            }
        };
        let from = dropped.id();
        self.reached(match proven.is_some() {
            true => RarePath::RollbackProven,
            false => RarePath::RollbackUnproven,
        });
        if proven.is_some() {
            self.rare.switching_from = Some(from);
        }
        let round = self.round();
        for h in &dropped.ledger.inputs {
            if let Some(body) = dropped.bodies.remove(h) {
                self.pool.put_back(&self.cfg, *h, body, round);
            }
        }
        self.exec.on_rollback(from.seq);
        let to = self.chain.lcl();
        self.stats.rollbacks += 1;
        tracing::warn!(
            ?from,
            ?to,
            "rolling back an unfinal ledger the UNL did not build on"
        );
        self.exec.forget_above(to.seq);
        let mut fx = Vec::new();
        self.state.abort_above(&self.chain, &mut fx);
        self.apply(fx);
        // The ledgers go at once (durable at the `Sync` that follows); the
        // contract state when its turn in the host's queue comes.
        self.out.push(Action::Truncate {
            keep_through: to.seq,
        });
        self.out.push(Action::Contract(Job::Rollback { to }));
        self.out.push(Action::Sync);
        self.out
            .push(Action::Notify(Event::RolledBack { from, to, proven }));
        true
    }

    /// Reports a rare path taken (`RarePath`): campaigns count them to
    /// show the rules that run least were exercised.
    pub(super) fn reached(&mut self, path: RarePath) {
        self.out.push(Action::Notify(Event::Reached(path)));
    }
}

/// What the rare-path reports remember between steps.
#[derive(Default)]
pub(super) struct RareMarks {
    /// The last ledger this node closed by the UNL's votes.
    pub closed_here: Option<LedgerId>,
    /// The lcl dropped for a proof of another ledger at its seq.
    pub switching_from: Option<LedgerId>,
    /// The last refusal reported, so a fork asked about at every stage is
    /// told once.
    pub kept: Option<(LedgerId, crate::consensus::Kept)>,
}
