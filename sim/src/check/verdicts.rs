//! Execution certification: what honest closes say each contract run's
//! result was.
//!
//! Outputs go to users when the ledger carrying their verdict closes, before
//! that ledger is final, so two closes that certify *different states* for
//! one run are a violation even if one of them is later rolled back. A
//! verdict of "no agreement" binds only once its ledger is final: a close on
//! a minority fork may certify a run that the final chain, short of matching
//! results in time, leaves uncertified (swarm seed 4378: a forger's lone
//! close, served as history, certified runs that the honest chain withheld).
//! Nothing conflicting reached a user there: the outputs that fork delivered
//! are the ones every honest copy computed.

use hotpocket_node::crypto::Hash;
use hotpocket_node::ledger::Ledger;
use std::collections::BTreeMap;

/// A run's verdict: the certified state, or `None` for "no agreement".
type Verdict = (u64, Option<Hash>);

#[derive(Default)]
pub struct VerdictChecker {
    /// The state any honest close certified, or a node installed, per run.
    claimed: BTreeMap<u64, Hash>,
    /// Each run's verdict as the final chain gives it.
    settled: BTreeMap<u64, Option<Hash>>,
    /// Verdicts of every honest close, by ledger hash, read again when a
    /// close on top finalises the ledger. A run closes a few hundred.
    closed: BTreeMap<Hash, Vec<Verdict>>,
}

impl VerdictChecker {
    /// Honest `node` closed `ledger`, whose hash is `hash`; the close
    /// finalises the ledger's parent.
    pub fn on_closed(&mut self, node: usize, ledger: &Ledger, hash: Hash, out: &mut Vec<String>) {
        let verdicts: Vec<Verdict> = ledger
            .verdicts
            .iter()
            .map(|v| (v.seq, v.result.map(|c| c.state)))
            .collect();
        for &(run, state) in &verdicts {
            if let Some(state) = state {
                self.claim(run, state, out, || {
                    format!("node {node} closed seq {} certifying", ledger.seq)
                });
            }
        }
        for &(run, state) in self.closed.get(&ledger.prev).into_iter().flatten() {
            match self.settled.get(&run) {
                Some(s) if *s != state => out.push(format!(
                    "node {node} finalised seq {} certifying state {state:?} for {run}; another final ledger certified {s:?}",
                    ledger.seq - 1
                )),
                Some(_) => {}
                None => {
                    self.settled.insert(run, state);
                }
            }
        }
        self.closed.insert(hash, verdicts);
    }

    /// Honest `node` installed `state` as run `seq`'s certified state.
    pub fn on_installed(&mut self, node: usize, seq: u64, state: Hash, out: &mut Vec<String>) {
        self.claim(seq, state, out, || format!("node {node} installed"));
    }

    fn claim(
        &mut self,
        run: u64,
        state: Hash,
        out: &mut Vec<String>,
        who: impl FnOnce() -> String,
    ) {
        match self.claimed.get(&run) {
            Some(c) if *c != state => out.push(format!(
                "{} state {state:?} for {run}; another ledger certified {c:?}",
                who()
            )),
            Some(_) => {}
            None => {
                self.claimed.insert(run, state);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotpocket_node::ledger::{ExecResult, Verdict as LedgerVerdict};

    fn h(b: u8) -> Hash {
        Hash([b; 32])
    }

    /// Ledger `seq` on `prev` carrying one verdict on run 1.
    fn ledger(seq: u64, prev: Hash, state: Option<u8>) -> Ledger {
        let mut l = Ledger::genesis();
        l.seq = seq;
        l.prev = prev;
        l.verdicts = vec![LedgerVerdict {
            seq: 1,
            result: state.map(|s| ExecResult {
                state: h(s),
                output: h(0),
            }),
        }];
        l
    }

    #[test]
    fn no_agreement_on_a_fork_that_rolls_back_is_not_a_conflict() {
        let mut c = VerdictChecker::default();
        let mut out = Vec::new();
        // Node 4 closes the fork's ledger 2 certifying run 1...
        c.on_closed(4, &ledger(2, h(1), Some(7)), h(20), &mut out);
        // ...the others close another ledger 2 with no agreement on it,
        // and finalise it.
        c.on_closed(0, &ledger(2, h(1), None), h(21), &mut out);
        let mut next = ledger(3, h(21), None);
        next.verdicts.clear();
        c.on_closed(0, &next, h(30), &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn different_states_conflict_even_unfinal_and_final_verdicts_must_agree() {
        let mut c = VerdictChecker::default();
        let mut out = Vec::new();
        c.on_closed(4, &ledger(2, h(1), Some(7)), h(20), &mut out);
        c.on_closed(0, &ledger(2, h(1), Some(8)), h(21), &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].contains("certifying state"), "{out:?}");
        c.on_installed(1, 1, h(9), &mut out);
        assert!(out[1].contains("node 1 installed state"), "{out:?}");

        // Two final ledgers (a fork the fork checker also reports) that
        // disagree on whether run 1 was certified.
        let mut c = VerdictChecker::default();
        let mut out = Vec::new();
        c.on_closed(0, &ledger(2, h(1), None), h(20), &mut out);
        c.on_closed(0, &ledger(3, h(20), None), h(30), &mut out);
        c.on_closed(1, &ledger(2, h(1), Some(7)), h(21), &mut out);
        c.on_closed(1, &ledger(3, h(21), None), h(31), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].contains("another final ledger"), "{out:?}");
    }
}
