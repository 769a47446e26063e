//! The execution tracker: which closed ledgers still have to run (in
//! order, once all their bodies are here), what each run produced, whether
//! the next ledger certified it, and which outputs may go to users.

use super::chain::Chain;
use super::{Action, Event, Job};
use crate::contract::{ExecResult, RunReport, RunResult};
use crate::crypto::Hash;
use crate::ledger::Ledger;
use std::collections::{BTreeMap, BTreeSet};

/// Run results kept to compare with what later ledgers certify.
const KEPT_RESULTS: u64 = 8;

#[derive(Debug, Default)]
pub struct Execution {
    /// Appended ledgers not yet handed to the contract, in seq order.
    waiting: BTreeSet<u64>,
    /// Result of running the lcl; `None` while that run is pending.
    lcl_result: Option<ExecResult>,
    /// Recent run results, by seq.
    results: BTreeMap<u64, ExecResult>,
    /// Outputs of runs whose certifying ledger has not closed here yet.
    undelivered: BTreeMap<u64, RunResult>,
}

impl Execution {
    /// Where the contract state is at start: what running ledger `ran`
    /// left. Ledgers after it, up to the lcl, run again.
    pub fn restore(ran: u64, result: ExecResult, lcl: u64) -> Execution {
        let mut exec = Execution::default();
        exec.results.insert(ran, result);
        if ran == lcl {
            exec.lcl_result = Some(result);
        }
        for seq in ran + 1..=lcl {
            exec.schedule(seq);
        }
        exec
    }

    /// The lcl's run result, once it ran (or its state was installed).
    pub fn lcl_result(&self) -> Option<ExecResult> {
        self.lcl_result
    }

    /// Ledger `seq` (appended) runs once it and every ledger before it
    /// have all their bodies.
    pub fn schedule(&mut self, seq: u64) {
        self.waiting.insert(seq);
    }

    /// The first ledger still to run.
    pub fn first_waiting(&self) -> Option<u64> {
        self.waiting.first().copied()
    }

    /// The waiting ledger that names input `h`, if any.
    pub fn waiting_for(&self, chain: &Chain, h: &Hash) -> Option<u64> {
        self.waiting.iter().copied().find(|s| chain.names(*s, h))
    }

    /// After a rollback: ledgers above `seq` will never run.
    pub fn forget_above(&mut self, seq: u64) {
        self.waiting.retain(|s| *s <= seq);
    }

    /// Runs up to `seq` will not happen: a fetched state replaces them.
    pub fn forget_upto(&mut self, seq: u64) {
        self.waiting.retain(|s| *s > seq);
    }

    /// Hands out, in order, every waiting run whose ledger has all its
    /// bodies, stopping at the first that lacks some.
    pub fn ready_runs(&mut self, chain: &Chain) -> Vec<Action> {
        let mut out = Vec::new();
        while let Some(seq) = self.first_waiting() {
            if !chain.missing_bodies(seq).is_empty() {
                break;
            }
            self.waiting.pop_first();
            let record = chain.get(seq).expect("waiting ledgers are in the chain");
            out.push(Action::Contract(Job::Execute(Box::new(record.clone()))));
        }
        out
    }

    /// A ledger was appended: it certifies its predecessor's run, and the
    /// new lcl has not run yet. Returns the mismatch, if ours differs.
    pub fn on_append(&mut self, ledger: &Ledger) -> Option<Event> {
        self.lcl_result = None;
        let seq = ledger.seq - 1;
        let r = self.results.get(&seq)?;
        (r.state != ledger.state || r.output != ledger.output)
            .then_some(Event::StateMismatch { seq })
    }

    /// The contract finished ledger `seq`, whose hash was `hash`. Returns
    /// the events it causes and whether the lcl's result is now known.
    pub fn on_executed(
        &mut self,
        chain: &Chain,
        seq: u64,
        hash: Hash,
        report: RunReport,
    ) -> (Option<Event>, bool) {
        // A run queued before its ledger was rolled back: the rollback
        // that follows it returns the contract state too.
        if chain.get(seq).is_none_or(|r| r.hash != hash) {
            return (None, false);
        }
        let result = ExecResult {
            state: report.state,
            output: report.run.output_hash(),
        };
        // Outputs up to the restored lcl may have reached users before a
        // restart (a ledger certifying the lcl can be delivered on, then
        // rolled back), and whether they did is not on disk: at most once
        // means never sending them again.
        if seq > chain.restored_seq() {
            self.undelivered.insert(seq, report.run);
        }
        self.results.insert(seq, result);
        self.results = self.results.split_off(&seq.saturating_sub(KEPT_RESULTS));
        let mismatch = chain
            .get(seq + 1)
            .filter(|next| next.ledger.state != result.state || next.ledger.output != result.output)
            .map(|_| Event::StateMismatch { seq });
        let lcl = seq == chain.lcl().seq;
        if lcl {
            self.lcl_result = Some(result);
        }
        (mismatch, lcl)
    }

    /// A fetched state, certified as ledger `seq`'s run, is installed.
    /// Returns whether it is the lcl's.
    pub fn installed(&mut self, seq: u64, result: ExecResult, lcl: u64) -> bool {
        self.results.insert(seq, result);
        if seq == lcl {
            self.lcl_result = Some(result);
        }
        seq == lcl
    }

    /// The lcl `seq` was dropped: its run and outputs go, and the new lcl's
    /// result is the one kept, if any (after a restart, none: the node then
    /// waits for the next ledger's run before proposing).
    pub fn on_rollback(&mut self, seq: u64) {
        self.results.remove(&seq);
        self.undelivered.retain(|s, _| *s < seq);
        self.lcl_result = seq
            .checked_sub(1)
            .and_then(|s| self.results.get(&s).copied());
    }

    /// The outputs of every run the next ledger has certified, to hand to
    /// users. Outputs nobody certified are dropped, never delivered (the
    /// mismatch was reported when it was found).
    pub fn deliver_certified(&mut self, chain: &Chain) -> Vec<Action> {
        let len = chain.records().len() as u64;
        let ready: Vec<u64> = self
            .undelivered
            .keys()
            .copied()
            .filter(|s| len > s + 1)
            .collect();
        let mut out = Vec::new();
        for seq in ready {
            let run = self.undelivered.remove(&seq).expect("key listed above");
            if chain
                .get(seq + 1)
                .is_some_and(|n| n.ledger.output == run.output_hash())
            {
                out.push(Action::Deliver { seq, run });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::pool::InputPool;
    use crate::contract::RunOutcome;
    use crate::crypto::PubKey;
    use crate::ledger::{LedgerId, LedgerRecord};

    fn run(out: &[u8]) -> RunReport {
        RunReport {
            state: Hash([1; 32]),
            run: RunResult {
                outcome: RunOutcome::Exited(Some(0)),
                outputs: BTreeMap::from([(PubKey([2; 32]), out.to_vec())]),
            },
        }
    }

    fn append(chain: &mut Chain, certifies: Option<ExecResult>, inputs: Vec<Hash>) -> LedgerId {
        let lcl = chain.lcl();
        let r = certifies.unwrap_or(ExecResult {
            state: Hash::ZERO,
            output: Hash::ZERO,
        });
        let ledger = Ledger {
            seq: lcl.seq + 1,
            prev: lcl.hash,
            time: 0,
            inputs,
            state: r.state,
            output: r.output,
        };
        let rec = LedgerRecord {
            hash: ledger.hash(),
            ledger,
            proof: vec![],
            bodies: BTreeMap::new(),
        };
        chain.append(rec, &mut InputPool::default()).id()
    }

    #[test]
    fn outputs_go_out_once_and_only_when_certified() {
        let mut chain = Chain::restore(vec![]).unwrap();
        let mut exec = Execution::restore(
            0,
            ExecResult {
                state: Hash::ZERO,
                output: Hash::ZERO,
            },
            0,
        );
        let one = append(&mut chain, None, vec![]);
        let (mismatch, lcl) = exec.on_executed(&chain, 1, one.hash, run(b"hi"));
        assert!(mismatch.is_none() && lcl);
        assert!(
            exec.deliver_certified(&chain).is_empty(),
            "not certified yet"
        );
        let report = run(b"hi");
        let result = ExecResult {
            state: report.state,
            output: report.run.output_hash(),
        };
        append(&mut chain, Some(result), vec![]);
        let out = exec.deliver_certified(&chain);
        assert!(matches!(out.as_slice(), [Action::Deliver { seq: 1, .. }]));
        assert!(exec.deliver_certified(&chain).is_empty(), "at most once");
    }

    #[test]
    fn a_run_the_next_ledger_contradicts_is_reported_and_never_delivered() {
        let mut chain = Chain::restore(vec![]).unwrap();
        let mut exec = Execution::default();
        let one = append(&mut chain, None, vec![]);
        exec.on_executed(&chain, 1, one.hash, run(b"mine"));
        let other = ExecResult {
            state: Hash([9; 32]),
            output: Hash([9; 32]),
        };
        let two = append(&mut chain, Some(other), vec![]);
        let rec = chain.get(two.seq).unwrap().ledger.clone();
        assert_eq!(exec.on_append(&rec), Some(Event::StateMismatch { seq: 1 }));
        assert!(exec.deliver_certified(&chain).is_empty());
        // A stale run of a ledger no longer in the chain is ignored.
        assert_eq!(
            exec.on_executed(&chain, 2, Hash([3; 32]), run(b"x")),
            (None, false)
        );
    }

    #[test]
    fn runs_wait_for_bodies_in_order() {
        let mut chain = Chain::restore(vec![]).unwrap();
        let mut exec = Execution::default();
        append(&mut chain, None, vec![Hash([5; 32])]);
        append(&mut chain, None, vec![]);
        exec.schedule(1);
        exec.schedule(2);
        assert!(exec.ready_runs(&chain).is_empty(), "ledger 1 lacks a body");
        assert_eq!(exec.waiting_for(&chain, &Hash([5; 32])), Some(1));
        chain.add_body(1, Hash([5; 32]), b"b".to_vec());
        assert_eq!(exec.ready_runs(&chain).len(), 2);
        assert_eq!(exec.first_waiting(), None);
    }
}
