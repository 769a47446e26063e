//! Safety checkers, fed every event an honest node emits, and the liveness
//! expectations evaluated at the end of a run. They live only here: the
//! protocol just emits typed events.

use crate::beacon_check::BeaconChecker;
use crate::npl_check::NplChecker;
use crate::output_check::OutputChecker;
use crate::scenario::Expectation;
use crate::verdict_check::VerdictChecker;
use hotpocket_node::consensus::{CloseVia, Event};
use hotpocket_node::contract::RunResult;
use hotpocket_node::crypto::Hash;
use hotpocket_node::ledger::LedgerId;
use std::collections::BTreeMap;

/// Agreement is judged on *final* ledgers: a ledger is final at a node once
/// the node closes the next ledger on top of it, since that close carries a
/// threshold of stage-3 votes cast on it. A closed but unfinal ledger may
/// still be rolled back by a node that finds itself on a minority fork;
/// those are counted, and rolling back a final ledger is a violation.
#[derive(Default)]
pub struct Checker {
    /// First honest finalisation seen at each seq, and by whom.
    agreed: BTreeMap<u64, (Hash, usize)>,
    /// Highest final seq at each node.
    final_seq: BTreeMap<usize, u64>,
    /// Closes that a node later rolled back.
    pub rolled_back: u64,
    /// Each node's current lcl as its events describe it.
    pub lcl: BTreeMap<usize, LedgerId>,
    /// (time, seq) each time a node's lcl moved.
    pub progress: BTreeMap<usize, Vec<(u64, u64)>>,
    /// Inputs, outputs and what users received.
    pub outputs: OutputChecker,
    pub violations: Vec<String>,
    /// What closes certified each contract run as.
    verdicts: VerdictChecker,
    /// Per node: state syncs installed, and bytes they fetched.
    pub state_synced: BTreeMap<usize, (u64, u64)>,
    /// What contracts wrote and heard on the node party line.
    pub npl: NplChecker,
    /// Whether the contract's copies may diverge (they talk over the NPL):
    /// then a run that differs from the certified one is not a bug, but
    /// the node must take the certified state within `RECOVERY_LEDGERS`.
    pub may_diverge: bool,
    /// Per node: the first run it found diverged and has not yet replaced
    /// by a certified state, and its closes since.
    diverged: BTreeMap<usize, (u64, u64)>,
    /// Per node: runs found diverged, and runs whose outputs it withheld.
    pub divergences: BTreeMap<usize, u64>,
    pub withheld: BTreeMap<usize, u64>,
    /// The random beacon's outcomes.
    pub beacon: BeaconChecker,
}

/// The simulated time a safety violation names (`violate` writes them as
/// "t=Nms: ..."); liveness findings, judged at the end, carry none.
pub fn violation_time(violation: &str) -> Option<u64> {
    violation
        .strip_prefix("t=")?
        .split_once("ms: ")?
        .0
        .parse()
        .ok()
}

/// Ledgers a node with a diverged run may close by consensus (rounds it
/// takes part in) before it must have installed the certified state.
pub const RECOVERY_LEDGERS: u64 = 20;

impl Checker {
    /// Tracks every node's chain; only honest nodes' events can violate.
    pub fn on_event(&mut self, t: u64, node: usize, ev: &Event, honest: bool) {
        if honest {
            self.check(t, node, ev);
        }
        let mut found = Vec::new();
        match ev {
            Event::LedgerClosed { ledger, .. } => self.outputs.on_closed(node, ledger, &mut found),
            Event::Started { lcl } | Event::RolledBack { to: lcl, .. } => {
                self.outputs.truncate(node, lcl.seq)
            }
            _ => {}
        }
        if honest {
            for v in found {
                self.violate(t, v);
            }
        }
        let moved = match ev {
            Event::Started { lcl } => Some(*lcl),
            Event::LedgerClosed { ledger, hash, .. } => Some(LedgerId {
                seq: ledger.seq,
                hash: *hash,
            }),
            Event::RolledBack { to, .. } => Some(*to),
            _ => None,
        };
        if let Some(lcl) = moved {
            self.lcl.insert(node, lcl);
            if honest {
                self.progress.entry(node).or_default().push((t, lcl.seq));
            }
        }
    }

    /// Judges an honest node's event against its chain before the event.
    fn check(&mut self, t: u64, node: usize, ev: &Event) {
        match ev {
            Event::LedgerClosed { ledger, hash, via } => {
                // Closes by consensus only: ledgers adopted by history
                // while catching up come many to a round.
                let voted = *via == CloseVia::Consensus;
                if let Some((from, closes)) = self.diverged.get_mut(&node).filter(|_| voted) {
                    *closes += 1;
                    if *closes == RECOVERY_LEDGERS + 1 {
                        let from = *from;
                        self.violate(
                            t,
                            format!("node {node}'s run of ledger {from} diverged and it has not installed the certified state {RECOVERY_LEDGERS} ledgers later"),
                        );
                    }
                }
                let actual = ledger.hash();
                if actual != *hash {
                    self.violate(
                        t,
                        format!(
                            "node {node} closed seq {} as {hash:?} but it hashes to {actual:?}",
                            ledger.seq
                        ),
                    );
                }
                match self.lcl.get(&node) {
                    Some(prev) if ledger.seq != prev.seq + 1 || ledger.prev != prev.hash => self.violate(
                        t,
                        format!(
                            "node {node} chain broken: closed seq {} (prev {:?}) on top of seq {} ({:?}) via {via:?}",
                            ledger.seq, ledger.prev, prev.seq, prev.hash
                        ),
                    ),
                    None => self.violate(t, format!("node {node} closed a ledger before starting")),
                    _ => {}
                }
                let mut found = Vec::new();
                self.beacon
                    .on_closed(t, node, ledger, *hash, voted, &mut found);
                self.verdicts.on_closed(node, ledger, *hash, &mut found);
                for v in found {
                    self.violate(t, v);
                }
                // This close finalises its parent.
                let fin = ledger.seq - 1;
                match self.agreed.get(&fin) {
                    Some((h, first)) if *h != ledger.prev => self.violate(
                        t,
                        format!(
                            "fork at seq {fin}: node {first} finalised {h:?}, node {node} finalised {:?}",
                            ledger.prev
                        ),
                    ),
                    Some(_) => {}
                    None => {
                        self.agreed.insert(fin, (ledger.prev, node));
                        self.beacon.on_final(&ledger.prev);
                    }
                }
                self.final_seq.insert(node, fin);
            }
            Event::RolledBack { from, to } => {
                self.rolled_back += 1;
                if from.seq <= self.final_seq.get(&node).copied().unwrap_or(0)
                    || to.seq + 1 != from.seq
                {
                    self.violate(
                        t,
                        format!("node {node} rolled back {from:?} to {to:?}, past a final ledger"),
                    );
                }
                if self.lcl.get(&node) != Some(from) {
                    self.violate(
                        t,
                        format!("node {node} rolled back {from:?}, which was not its lcl"),
                    );
                }
            }
            Event::ForkSeen { .. } | Event::Intake { .. } => {}
            Event::StateMismatch { seq } | Event::OutputMismatch { seq } => {
                *self.divergences.entry(node).or_default() += 1;
                if !self.may_diverge {
                    self.violate(
                        t,
                        format!(
                            "node {node}: its run of ledger {seq} differs from the certified one"
                        ),
                    );
                }
                if matches!(ev, Event::StateMismatch { .. }) {
                    self.diverged.entry(node).or_insert((*seq, 0));
                }
            }
            Event::OutputsWithheld { .. } => *self.withheld.entry(node).or_default() += 1,
            Event::StateSynced {
                seq,
                state,
                fetched,
            } => {
                let s = self.state_synced.entry(node).or_default();
                s.0 += 1;
                s.1 += fetched.bytes;
                if self
                    .diverged
                    .get(&node)
                    .is_some_and(|(from, _)| from <= seq)
                {
                    self.diverged.remove(&node);
                }
                let mut found = Vec::new();
                self.verdicts.on_installed(node, *seq, *state, &mut found);
                for v in found {
                    self.violate(t, v);
                }
            }
            Event::Started { .. } => {
                // A restart replays its runs; a divergence found then counts
                // afresh.
                self.diverged.remove(&node);
            }
            Event::Status(_)
            | Event::HistoryRejected { .. }
            | Event::StateSyncStarted { .. }
            | Event::StateSyncAbandoned { .. } => {}
        }
    }

    /// `node` handed ledger `seq`'s outputs to its users `to`.
    pub fn on_delivered(
        &mut self,
        t: u64,
        node: usize,
        seq: u64,
        run: &RunResult,
        to: &[(usize, Vec<u8>)],
        honest: bool,
    ) {
        let mut found = Vec::new();
        self.outputs.on_delivered(node, seq, run, to, &mut found);
        if honest {
            for v in found {
                self.violate(t, v);
            }
        }
    }

    pub(crate) fn violate(&mut self, t: u64, what: String) {
        // Bound the report: the first violations are the useful ones.
        if self.violations.len() < 50 {
            self.violations.push(format!("t={t}ms: {what}"));
        }
    }

    /// Highest seq `node` had reached by time `t`.
    fn seq_at(&self, node: usize, t: u64) -> u64 {
        self.progress
            .get(&node)
            .map(|p| {
                p.iter()
                    .filter(|(at, _)| *at <= t)
                    .map(|(_, s)| *s)
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    }

    /// `steady`: honest nodes that never crashed, whose users' inputs must
    /// all be answered when a scenario expects it.
    pub fn check_expectations(
        &mut self,
        expectations: &[Expectation],
        honest: &[usize],
        steady: &[usize],
    ) {
        for e in expectations {
            match e {
                Expectation::AllAnswered {
                    sent_by_ms,
                    sent_from_ms,
                } => {
                    let mut found = Vec::new();
                    let window = *sent_from_ms..=*sent_by_ms;
                    self.outputs.check_all_answered(steady, window, &mut found);
                    self.violations
                        .extend(found.into_iter().map(|v| format!("liveness: {v}")));
                }
                Expectation::Signatures { min } => match self.outputs.fewest_signatures {
                    None => self
                        .violations
                        .push("liveness: no multisig output was delivered".into()),
                    Some(n) if n < *min => self.violations.push(format!(
                        "a delivered multisig output had {n} signatures, expected at least {min}"
                    )),
                    Some(_) => {}
                },
                Expectation::NoneWithheld => {
                    for n in honest {
                        if let Some(w) = self.withheld.get(n) {
                            self.violations.push(format!(
                                "node {n} withheld the outputs of {w} runs: its copy was not certified"
                            ));
                        }
                    }
                }
                Expectation::Diverged => {
                    if !honest.iter().any(|n| self.withheld.contains_key(n)) {
                        self.violations.push(
                            "expected an honest copy to diverge and withhold its outputs; none did"
                                .into(),
                        );
                    }
                }
                Expectation::StateSynced { node, max_bytes } => {
                    match self.state_synced.get(node) {
                        None => self.violations.push(format!(
                            "liveness: node {node} never installed a fetched state"
                        )),
                        Some((n, bytes)) if bytes > max_bytes => self.violations.push(format!(
                            "node {node} fetched {bytes} bytes of state in {n} syncs, more than {max_bytes}"
                        )),
                        Some(_) => {}
                    }
                }
                Expectation::ReachSeq { seq, by_ms, nodes } => {
                    let nodes = if nodes.is_empty() { honest } else { nodes };
                    for &n in nodes {
                        let got = self.seq_at(n, *by_ms);
                        if got < *seq {
                            self.violations.push(format!(
                                "liveness: node {n} reached seq {got} by {by_ms}ms, expected {seq}"
                            ));
                        }
                    }
                }
                Expectation::Progress { from_ms, ledgers } => {
                    for &n in honest {
                        let (from, to) = (self.seq_at(n, *from_ms), self.seq_at(n, u64::MAX));
                        if to < from + ledgers {
                            self.violations.push(format!(
                                "liveness: node {n} went from seq {from} at {from_ms}ms to {to}, expected {ledgers} more"
                            ));
                        }
                    }
                }
                Expectation::NoProgress { from_ms, to_ms } => {
                    for &n in honest {
                        let closes = self.progress.get(&n).map_or(0, |p| {
                            p.windows(2)
                                .filter(|w| {
                                    w[1].0 > *from_ms && w[1].0 <= *to_ms && w[1].1 > w[0].1
                                })
                                .count()
                        });
                        if closes > 0 {
                            self.violations.push(format!(
                                "expected no progress in {from_ms}..{to_ms}ms, node {n} closed {closes} ledgers"
                            ));
                        }
                    }
                }
                Expectation::Beacon {
                    absent,
                    convicted,
                    min_random_pct,
                } => {
                    let found = self.beacon.expect(absent, convicted, *min_random_pct);
                    self.violations.extend(found);
                }
                Expectation::MaxLag { ledgers } => {
                    let seqs: Vec<u64> = honest
                        .iter()
                        .map(|n| self.lcl.get(n).map_or(0, |l| l.seq))
                        .collect();
                    let (lo, hi) = (seqs.iter().min(), seqs.iter().max());
                    if let (Some(lo), Some(hi)) = (lo, hi) {
                        if hi - lo > *ledgers {
                            self.violations
                                .push(format!("at the end honest nodes span seqs {lo}..{hi}, more than {ledgers} apart"));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotpocket_node::ledger::{Ledger, LedgerRecord};

    fn closed(prev: &LedgerId, time: u64) -> (Ledger, Event) {
        let ledger = Ledger {
            seq: prev.seq + 1,
            prev: prev.hash,
            time,
            inputs: vec![],
            verdicts: vec![],
            beacon: Default::default(),
        };
        let ev = Event::LedgerClosed {
            hash: ledger.hash(),
            ledger: ledger.clone(),
            via: CloseVia::Consensus,
        };
        (ledger, ev)
    }

    fn id(l: &Ledger) -> LedgerId {
        LedgerId {
            seq: l.seq,
            hash: l.hash(),
        }
    }

    /// Node 0 finds run 1 diverged, then closes `closes` ledgers, and
    /// installs the certified state of run `synced` if given.
    fn diverge(may_diverge: bool, closes: u64, synced: Option<u64>) -> Vec<String> {
        let mut c = Checker {
            may_diverge,
            ..Checker::default()
        };
        let mut lcl = LedgerRecord::genesis().id();
        c.on_event(0, 0, &Event::Started { lcl }, true);
        c.on_event(0, 0, &Event::StateMismatch { seq: 1 }, true);
        if let Some(seq) = synced {
            let fetched = Default::default();
            let ev = Event::StateSynced {
                seq,
                state: Hash::ZERO,
                fetched,
            };
            c.on_event(0, 0, &ev, true);
        }
        for t in 0..closes {
            let (l, ev) = closed(&lcl, t);
            c.on_event(t, 0, &ev, true);
            lcl = id(&l);
        }
        c.violations
    }

    #[test]
    fn a_diverged_run_must_be_replaced_by_the_certified_state() {
        // A deterministic contract never diverges.
        assert!(diverge(false, 0, None)[0].contains("differs from the certified one"));
        // One that talks over the NPL may, if it then takes the state.
        assert!(diverge(true, RECOVERY_LEDGERS, None).is_empty());
        assert!(diverge(true, 50, Some(1)).is_empty());
        let v = diverge(true, RECOVERY_LEDGERS + 1, None);
        assert!(
            v[0].contains("has not installed the certified state"),
            "{v:?}"
        );
        // A state older than the diverged run does not count.
        assert_eq!(diverge(true, 50, Some(0)).len(), 1);
    }

    #[test]
    fn detects_a_fork_of_final_ledgers_and_a_broken_chain() {
        let g = LedgerRecord::genesis().id();
        let mut c = Checker::default();
        c.on_event(0, 0, &Event::Started { lcl: g }, true);
        c.on_event(0, 1, &Event::Started { lcl: g }, true);
        let (la, a) = closed(&g, 1000);
        let (lb, b) = closed(&g, 2000);
        c.on_event(1, 0, &a, true);
        c.on_event(2, 1, &b, true);
        // Two different closes at seq 1 are not yet a fork: neither is final.
        assert!(c.violations.is_empty());
        let (_, a2) = closed(&id(&la), 3000);
        let (_, b2) = closed(&id(&lb), 3000);
        c.on_event(3, 0, &a2, true);
        assert!(c.violations.is_empty());
        c.on_event(4, 1, &b2, true);
        assert_eq!(c.violations.len(), 1, "{:?}", c.violations);
        assert!(c.violations[0].contains("fork at seq 1"));
        // Node 0 skips a seq.
        let skip = LedgerId {
            seq: 5,
            hash: Hash::ZERO,
        };
        let (_, s) = closed(&skip, 3000);
        c.on_event(5, 0, &s, true);
        assert!(
            c.violations[1].contains("chain broken"),
            "{:?}",
            c.violations
        );
    }

    #[test]
    fn rollback_of_an_unfinal_ledger_is_counted_of_a_final_one_is_a_violation() {
        let g = LedgerRecord::genesis().id();
        let mut c = Checker::default();
        c.on_event(0, 0, &Event::Started { lcl: g }, true);
        let (l1, e1) = closed(&g, 1000);
        c.on_event(1, 0, &e1, true);
        c.on_event(
            2,
            0,
            &Event::RolledBack {
                from: id(&l1),
                to: g,
            },
            true,
        );
        assert!(c.violations.is_empty(), "{:?}", c.violations);
        assert_eq!(c.rolled_back, 1);
        c.on_event(3, 0, &e1, true);
        let (l2, e2) = closed(&id(&l1), 2000);
        c.on_event(4, 0, &e2, true);
        // Ledger 1 is final now: rolling back 2 is fine, 1 is not.
        c.on_event(
            5,
            0,
            &Event::RolledBack {
                from: id(&l2),
                to: id(&l1),
            },
            true,
        );
        assert!(c.violations.is_empty(), "{:?}", c.violations);
        c.on_event(
            6,
            0,
            &Event::RolledBack {
                from: id(&l1),
                to: g,
            },
            true,
        );
        assert_eq!(c.violations.len(), 1, "{:?}", c.violations);
    }

    #[test]
    fn liveness_expectations() {
        let g = LedgerRecord::genesis().id();
        let mut c = Checker::default();
        c.on_event(0, 0, &Event::Started { lcl: g }, true);
        let (l1, e1) = closed(&g, 1000);
        c.on_event(1000, 0, &e1, true);
        let id1 = LedgerId {
            seq: 1,
            hash: l1.hash(),
        };
        let (_, e2) = closed(&id1, 2000);
        c.on_event(5000, 0, &e2, true);
        c.check_expectations(
            &[
                Expectation::ReachSeq {
                    seq: 2,
                    by_ms: 4000,
                    nodes: vec![],
                },
                Expectation::NoProgress {
                    from_ms: 1500,
                    to_ms: 4500,
                },
                Expectation::ReachSeq {
                    seq: 2,
                    by_ms: 6000,
                    nodes: vec![],
                },
            ],
            &[0],
            &[0],
        );
        assert_eq!(c.violations.len(), 1, "{:?}", c.violations);
        assert!(c.violations[0].contains("reached seq 1 by 4000ms"));
    }
}
