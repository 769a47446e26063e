//! The execution tracker: which closed ledgers still have to run (in
//! order, once all their bodies are here), what each run produced, whether
//! the next ledger certified it, and which outputs may go to users.

use super::chain::Chain;
use super::{Action, Event, Job, Withheld};
use crate::contract::{runnable, ExecResult, RunOutcome, RunReport, RunResult};
use crate::crypto::Hash;
use crate::crypto::PubKey;
use crate::ledger::{Ledger, Verdict, MAX_VERDICTS};
use std::collections::{BTreeMap, BTreeSet};

/// Run results kept to vote on and to compare with what later ledgers
/// certify: twice the runs a ledger may carry verdicts on.
const KEPT_RESULTS: u64 = 2 * MAX_VERDICTS as u64;
// A node must still hold its result of every run that may be undecided,
// to report it: the backstop decides runs before they leave the window.
const _: () = assert!(super::tally::VERDICT_BACKSTOP < KEPT_RESULTS);

#[derive(Debug, Default)]
pub struct Execution {
    /// Appended ledgers not yet handed to the contract, in seq order.
    waiting: BTreeSet<u64>,
    /// Recent run results, by seq.
    results: BTreeMap<u64, ExecResult>,
    /// Outputs of runs whose certifying ledger has not closed here yet.
    undelivered: BTreeMap<u64, RunResult>,
    /// Runs up to here had their outputs delivered or withheld: a run done
    /// again (after a state install) never reaches users a second time.
    settled_through: u64,
}

impl Execution {
    /// Where the contract state is at start: what running ledger `ran`
    /// left. Ledgers after it, up to the lcl, run again. Outputs up to the
    /// lcl may have reached users before a restart (a ledger certifying
    /// the lcl can be delivered on, then rolled back), and whether they did
    /// is not on disk: at most once means never sending them again.
    pub fn restore(ran: u64, result: ExecResult, lcl: u64) -> Execution {
        let mut exec = Execution {
            settled_through: lcl,
            ..Execution::default()
        };
        exec.results.insert(ran, result);
        for seq in ran + 1..=lcl {
            exec.schedule(seq);
        }
        exec
    }

    /// Our result of running ledger `seq`, once it ran (or its state was
    /// installed).
    pub fn result(&self, seq: u64) -> Option<ExecResult> {
        self.results.get(&seq).copied()
    }

    /// The newest run we have a result of (ran, or installed as fetched).
    pub fn ran_through(&self) -> Option<u64> {
        self.results.last_key_value().map(|(&seq, _)| seq)
    }

    /// Whether our contract is past run `seq` but has no result of it to
    /// report: a restart keeps only the latest run's, a state install
    /// skips runs. Such a run will never be reported from here.
    pub fn lost(&self, seq: u64) -> bool {
        self.ran_through().is_some_and(|r| r > seq)
            && !self.results.contains_key(&seq)
            && !self.waiting.contains(&seq)
    }

    /// Our results of the runs from `from` to `to` that we have, to vote on.
    pub fn own_results(&self, from: u64, to: u64) -> Vec<Verdict> {
        let to = to.min(from + MAX_VERDICTS as u64 - 1);
        self.results
            .range(from..=to)
            .map(|(&seq, &r)| Verdict {
                seq,
                result: Some(r),
            })
            .collect()
    }

    /// The oldest ledger this tracker may still read from the chain: the
    /// first not run yet (waiting, or running now) and the first whose
    /// outputs wait for a verdict.
    pub fn oldest_needed(&self) -> u64 {
        let next_run = self.ran_through().map_or(0, |r| r + 1);
        let undelivered = self.undelivered.keys().next().copied();
        [self.first_waiting(), undelivered]
            .into_iter()
            .flatten()
            .fold(next_run, u64::min)
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

    /// A ledger was appended with its verdicts. Returns the first mismatch:
    /// a run of ours that differs from a certified result.
    pub fn on_append(&mut self, ledger: &Ledger) -> Option<Event> {
        ledger.verdicts.iter().find_map(|v| {
            let ours = self.results.get(&v.seq)?;
            mismatch(v.seq, ours, v.result)
        })
    }

    /// The contract finished ledger `seq`, whose hash was `hash`. Returns
    /// the mismatch, if the next ledger already certified another result.
    pub fn on_executed(
        &mut self,
        chain: &Chain,
        seq: u64,
        hash: Hash,
        report: RunReport,
    ) -> Option<Event> {
        // A run queued before its ledger was rolled back: the rollback
        // that follows it returns the contract state too.
        if chain.get(seq).is_none_or(|r| r.hash != hash) {
            return None;
        }
        let result = ExecResult {
            state: report.state,
            output: report.run.output_hash(),
        };
        if seq > self.settled_through {
            self.undelivered.insert(seq, report.run);
        }
        self.results.insert(seq, result);
        self.results = self.results.split_off(&seq.saturating_sub(KEPT_RESULTS));
        mismatch(seq, &result, chain.verdict(seq)?)
    }

    /// A fetched state, certified as ledger `seq`'s run, is installed.
    /// Results and outputs of runs after it went on the replaced state:
    /// they go, and those runs are done again.
    pub fn installed(&mut self, seq: u64, result: ExecResult) {
        self.results.retain(|s, _| *s < seq);
        self.results.insert(seq, result);
        self.undelivered.retain(|s, _| *s <= seq);
    }

    /// The lcl `seq` was dropped: its run and outputs go.
    pub fn on_rollback(&mut self, seq: u64) {
        self.results.remove(&seq);
        self.undelivered.retain(|s, _| *s < seq);
    }

    /// Settles every run the chain has a verdict on: outputs the UNL
    /// certified go to users; outputs nobody certified, or that differ from
    /// what was certified, are withheld (users are told), never delivered.
    /// `vouched`: `ConsensusConfig::vouched_inputs`.
    pub fn deliver_certified(&mut self, chain: &Chain, vouched: bool) -> Vec<Action> {
        let ready: Vec<(u64, Option<ExecResult>)> = self
            .undelivered
            .keys()
            .filter_map(|&s| Some((s, chain.verdict(s)?)))
            .collect();
        let mut out = Vec::new();
        for (seq, certified) in ready {
            let run = self.undelivered.remove(&seq).expect("key listed above");
            self.settled_through = self.settled_through.max(seq);
            let why = match certified {
                Some(c) if c.output == run.output_hash() => {
                    // The outcome is in the certified hash: a failed run is
                    // news to every user with an input in that ledger, and
                    // often the only news (a timed-out run has no outputs).
                    if run.outcome != RunOutcome::Exited(Some(0)) {
                        let users = input_users(chain, seq, vouched);
                        let outcome = run.outcome.clone();
                        out.push(Action::RunFailed {
                            seq,
                            users,
                            outcome,
                        });
                    }
                    // A verdict is on a ledger after `seq`: `seq` is held.
                    let ledger = chain.get(seq).map(|r| r.hash).unwrap_or_default();
                    out.push(Action::Deliver { seq, ledger, run });
                    continue;
                }
                Some(_) => Withheld::Differs,
                None => Withheld::NoAgreement,
            };
            out.push(Action::Notify(Event::OutputsWithheld { seq, why }));
            out.push(Action::Withhold { seq, run, why });
        }
        out
    }
}

/// The users with an input that ran in ledger `seq`, each once.
fn input_users(chain: &Chain, seq: u64, vouched: bool) -> Vec<PubKey> {
    let Some(record) = chain.get(seq) else {
        return vec![];
    };
    let users: BTreeSet<PubKey> = (record.ledger.inputs.iter())
        .filter_map(|h| runnable(record.bodies.get(h)?, seq, vouched))
        .map(|i| i.user)
        .collect();
    users.into_iter().collect()
}

/// How our run of `seq` differs from a verdict that certified a result:
/// in its state (the node must fetch the certified one) or only in its
/// outputs (withheld; the state is already right).
fn mismatch(seq: u64, ours: &ExecResult, verdict: Option<ExecResult>) -> Option<Event> {
    let c = verdict?;
    if c.state != ours.state {
        Some(Event::StateMismatch { seq })
    } else {
        (c.output != ours.output).then_some(Event::OutputMismatch { seq })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::pool::InputPool;
    use crate::contract::{RunOutcome, UserIo};
    use crate::crypto::PubKey;
    use crate::ledger::{LedgerId, LedgerRecord};

    fn run(out: &[u8]) -> RunReport {
        RunReport {
            state: Hash([1; 32]),
            run: RunResult {
                outcome: RunOutcome::Exited(Some(0)),
                outputs: BTreeMap::from([(PubKey([2; 32]), out.to_vec())]),
                io: UserIo::Raw,
            },
        }
    }

    /// Appends a ledger with a verdict on its predecessor's run: `None`
    /// for no verdict, `Some(None)` for "uncertified".
    fn append(
        chain: &mut Chain,
        certifies: Option<Option<ExecResult>>,
        inputs: Vec<Hash>,
    ) -> LedgerId {
        let lcl = chain.lcl();
        // Earlier runs without a verdict go uncertified first: verdicts
        // come in order.
        let verdicts = match certifies {
            None => vec![],
            Some(last) => (chain.undecided()..=lcl.seq)
                .map(|seq| Verdict {
                    seq,
                    result: if seq == lcl.seq { last } else { None },
                })
                .collect(),
        };
        let ledger = Ledger {
            seq: lcl.seq + 1,
            prev: lcl.hash,
            time: 0,
            inputs,
            verdicts,
            beacon: Default::default(),
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
    fn a_certified_run_that_failed_is_news_to_every_user_with_an_input() {
        let mut chain = Chain::restore(vec![], 0).unwrap();
        let mut exec = Execution::restore(
            0,
            ExecResult {
                state: Hash::ZERO,
                output: Hash::ZERO,
            },
            0,
        );
        let (a, b) = (PubKey([7; 32]), PubKey([8; 32]));
        let mut stamper = crate::contract::Stamper::default();
        let bodies: BTreeMap<Hash, Vec<u8>> = [(a, "x"), (b, "y"), (a, "z")]
            .into_iter()
            .map(|(u, p)| stamper.stamp(1, u, p.as_bytes().to_vec()))
            .map(|body| (crate::contract::input_hash(&body), body))
            .collect();
        let lcl = chain.lcl();
        let ledger = Ledger {
            seq: 1,
            prev: lcl.hash,
            time: 0,
            inputs: bodies.keys().copied().collect(),
            verdicts: vec![],
            beacon: Default::default(),
        };
        let rec = LedgerRecord {
            hash: ledger.hash(),
            ledger,
            proof: vec![],
            bodies,
        };
        let one = chain.append(rec, &mut InputPool::default()).id();
        // Timed out: no outputs at all, so only the notice tells them.
        let report = RunReport {
            state: Hash([1; 32]),
            run: RunResult {
                outcome: RunOutcome::TimedOut,
                outputs: BTreeMap::new(),
                io: UserIo::Raw,
            },
        };
        let result = ExecResult {
            state: report.state,
            output: report.run.output_hash(),
        };
        exec.on_executed(&chain, 1, one.hash, report);
        append(&mut chain, Some(Some(result)), vec![]);
        let out = exec.deliver_certified(&chain, true);
        let [Action::RunFailed {
            seq: 1,
            users,
            outcome: RunOutcome::TimedOut,
        }, Action::Deliver { seq: 1, .. }] = out.as_slice()
        else {
            panic!("expected the failure, then the (empty) outputs: {out:?}");
        };
        assert_eq!(users, &vec![a, b], "each user once");
        // A clean run says nothing of the kind (`outputs_go_out_once...`).
    }

    #[test]
    fn outputs_go_out_once_and_only_when_certified() {
        let mut chain = Chain::restore(vec![], 0).unwrap();
        let mut exec = Execution::restore(
            0,
            ExecResult {
                state: Hash::ZERO,
                output: Hash::ZERO,
            },
            0,
        );
        let one = append(&mut chain, None, vec![]);
        let mismatch = exec.on_executed(&chain, 1, one.hash, run(b"hi"));
        assert!(mismatch.is_none());
        assert!(exec.result(1).is_some());
        assert!(
            exec.deliver_certified(&chain, true).is_empty(),
            "not certified yet"
        );
        let report = run(b"hi");
        let result = ExecResult {
            state: report.state,
            output: report.run.output_hash(),
        };
        append(&mut chain, Some(Some(result)), vec![]);
        let out = exec.deliver_certified(&chain, true);
        assert!(matches!(out.as_slice(), [Action::Deliver { seq: 1, .. }]));
        assert!(
            exec.deliver_certified(&chain, true).is_empty(),
            "at most once"
        );
    }

    #[test]
    fn a_run_the_next_ledger_contradicts_is_reported_and_never_delivered() {
        let mut chain = Chain::restore(vec![], 0).unwrap();
        let mut exec = Execution::default();
        let one = append(&mut chain, None, vec![]);
        exec.on_executed(&chain, 1, one.hash, run(b"mine"));
        let other = ExecResult {
            state: Hash([9; 32]),
            output: Hash([9; 32]),
        };
        let two = append(&mut chain, Some(Some(other)), vec![]);
        let rec = chain.get(two.seq).unwrap().ledger.clone();
        assert_eq!(exec.on_append(&rec), Some(Event::StateMismatch { seq: 1 }));
        // The same state with other outputs needs no fetch.
        let ours = exec.result(1).unwrap();
        let same_state = Verdict {
            seq: 1,
            result: Some(ExecResult {
                state: ours.state,
                output: Hash([9; 32]),
            }),
        };
        let mut other_outputs = rec.clone();
        other_outputs.verdicts = vec![same_state];
        assert_eq!(
            exec.on_append(&other_outputs),
            Some(Event::OutputMismatch { seq: 1 })
        );
        let out = exec.deliver_certified(&chain, true);
        assert!(
            matches!(
                out.as_slice(),
                [
                    Action::Notify(Event::OutputsWithheld {
                        seq: 1,
                        why: Withheld::Differs
                    }),
                    Action::Withhold { seq: 1, .. }
                ]
            ),
            "{out:?}"
        );
        // A stale run of a ledger no longer in the chain is ignored.
        assert_eq!(exec.on_executed(&chain, 2, Hash([3; 32]), run(b"x")), None);
    }

    #[test]
    fn an_uncertified_run_is_withheld_and_a_run_done_again_is_not_delivered_twice() {
        let mut chain = Chain::restore(vec![], 0).unwrap();
        let mut exec = Execution::default();
        let one = append(&mut chain, None, vec![]);
        exec.on_executed(&chain, 1, one.hash, run(b"mine"));
        let two = append(&mut chain, None, vec![]);
        assert!(
            exec.deliver_certified(&chain, true).is_empty(),
            "no verdict yet"
        );
        let _ = two;
        // A later ledger decides run 1: uncertified.
        let three = append(&mut chain, Some(None), vec![]);
        let rec = chain.get(three.seq).unwrap().ledger.clone();
        assert_eq!(rec.verdicts.len(), 3, "runs 0 to 2");
        assert_eq!(exec.on_append(&rec), None, "uncertified: no mismatch");
        let out = exec.deliver_certified(&chain, true);
        assert!(matches!(
            out.as_slice(),
            [
                Action::Notify(Event::OutputsWithheld {
                    seq: 1,
                    why: Withheld::NoAgreement
                }),
                Action::Withhold { seq: 1, .. }
            ]
        ));
        // Ledger 1 runs again (after a state install): settled already.
        exec.on_executed(&chain, 1, one.hash, run(b"mine"));
        assert!(exec.deliver_certified(&chain, true).is_empty());
    }

    #[test]
    fn runs_wait_for_bodies_in_order() {
        let mut chain = Chain::restore(vec![], 0).unwrap();
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
