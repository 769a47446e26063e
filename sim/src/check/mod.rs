//! The checkers. `Checker` owns what the run's events showed (each honest
//! node's chain, what is final where, divergences, state syncs) and feeds
//! the part checkers below it (outputs, verdicts, beacon, NPL); the
//! scenario's expectations are judged at the end (`expectations`). They
//! live only here: the protocol just emits typed events, and a finding is
//! a typed `Violation`. This floor knows nothing of the world that feeds it.

pub mod beacon;
pub mod beacon_stats;
pub mod expectations;
pub mod npl;
pub mod outputs;
pub mod verdicts;
pub mod violation;
pub mod votes;

use crate::check::beacon::BeaconChecker;
use crate::check::npl::NplChecker;
use crate::check::outputs::OutputChecker;
use crate::check::verdicts::VerdictChecker;
use crate::check::violation::{Kind, Violation};
use crate::check::votes::VoteChecker;
use crate::scenario::{ContractKind, Scenario};
use hotpocket_node::consensus::{CloseVia, ConsensusConfig, Event, ProposalHead};
use hotpocket_node::contract::RunResult;
use hotpocket_node::crypto::{Hash, PubKey, Verified};
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
    pub violations: Vec<Violation>,
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
    /// Honest stage-3 votes across rounds.
    votes: VoteChecker,
}

/// Ledgers a node with a diverged run may close by consensus (rounds it
/// takes part in) before it must have installed the certified state.
pub const RECOVERY_LEDGERS: u64 = 20;

impl Checker {
    /// A checker for runs of `s`: what it tolerates follows from the
    /// scenario (a contract whose copies may diverge, byzantine nodes that
    /// may take inputs in no one's name) and the beacon's from the UNL.
    pub fn new(
        s: &Scenario,
        unl: &[PubKey],
        keys: &[PubKey],
        cfg: &ConsensusConfig,
        verified: &Verified,
    ) -> Checker {
        let mut c = Checker {
            may_diverge: s.contract.kind == ContractKind::Multisig,
            ..Checker::default()
        };
        c.outputs.kind = s.contract.kind;
        // Without vouched inputs no node can get one agreed that no user
        // signed: then every input in a ledger must come from a session.
        c.outputs.unsourced_ok = s.honest().len() < s.nodes && s.consensus.prototype_users;
        let honest: Vec<bool> = (0..s.nodes).map(|i| s.honest().contains(&i)).collect();
        let close = cfg.needed(cfg.close_threshold_pct);
        let honest_key = |k: &PubKey| (keys.iter().zip(&honest)).any(|(h, &ok)| ok && h == k);
        c.votes = VoteChecker::new(close, unl.iter().filter(|k| !honest_key(k)).count());
        let b = &mut c.beacon;
        b.init(
            unl,
            &keys[..s.nodes],
            honest,
            cfg.roundtime_ms,
            cfg.stage_ms(),
            close,
        );
        b.share(verified);
        b.untimely = !crate::scenario::latency::timely(s);
        c
    }

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
            self.violate_all(t, Kind::Outputs, node, found);
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
                        self.violate(Violation::at(
                            t,
                            Kind::Divergence,
                            format!("node {node}'s run of ledger {from} diverged and it has not installed the certified state {RECOVERY_LEDGERS} ledgers later"),
                        ).by(node));
                    }
                }
                let actual = ledger.hash();
                if actual != *hash {
                    self.violate(
                        Violation::at(
                            t,
                            Kind::Chain,
                            format!(
                                "node {node} closed seq {} as {hash:?} but it hashes to {actual:?}",
                                ledger.seq
                            ),
                        )
                        .by(node),
                    );
                }
                match self.lcl.get(&node) {
                    Some(prev) if ledger.seq != prev.seq + 1 || ledger.prev != prev.hash => self.violate(Violation::at(
                        t,
                        Kind::Chain,
                        format!(
                            "node {node} chain broken: closed seq {} (prev {:?}) on top of seq {} ({:?}) via {via:?}",
                            ledger.seq, ledger.prev, prev.seq, prev.hash
                        ),
                    ).by(node)),
                    None => self.violate(Violation::at(t, Kind::Chain, format!("node {node} closed a ledger before starting")).by(node)),
                    _ => {}
                }
                let mut found = Vec::new();
                self.beacon
                    .on_closed(t, node, ledger, *hash, voted, &mut found);
                self.violate_all(t, Kind::Beacon, node, found);
                let mut found = Vec::new();
                self.verdicts.on_closed(node, ledger, *hash, &mut found);
                self.violate_all(t, Kind::Verdict, node, found);
                // This close finalises its parent.
                let fin = ledger.seq - 1;
                match self.agreed.get(&fin) {
                    Some((h, first)) if *h != ledger.prev => self.violate(Violation::at(
                        t,
                        Kind::Fork,
                        format!(
                            "fork at seq {fin}: node {first} finalised {h:?}, node {node} finalised {:?}",
                            ledger.prev
                        ),
                    ).by(node)),
                    Some(_) => {}
                    None => {
                        self.agreed.insert(fin, (ledger.prev, node));
                        self.beacon.on_final(&ledger.prev);
                    }
                }
                self.final_seq.insert(node, fin);
            }
            Event::RolledBack { from, to, proven } => {
                self.rolled_back += 1;
                let mut found = Vec::new();
                found.extend(self.votes.rolled_back(node, *from, *proven));
                // Final here (it closed on top of it), or anywhere.
                let final_here = from.seq <= self.final_seq.get(&node).copied().unwrap_or(0);
                let agreed = self.agreed.get(&from.seq);
                if let Some((_, first)) = agreed.filter(|(h, _)| *h == from.hash) {
                    found.push(format!(
                        "node {node} rolled back {from:?}, which node {first} had finalised"
                    ));
                } else if final_here || to.seq + 1 != from.seq {
                    found.push(format!(
                        "node {node} rolled back {from:?} to {to:?}, past a final ledger"
                    ));
                }
                if self.lcl.get(&node) != Some(from) {
                    found.push(format!(
                        "node {node} rolled back {from:?}, which was not its lcl"
                    ));
                }
                self.violate_all(t, Kind::Rollback, node, found);
            }
            Event::ForkSeen { .. } | Event::Intake { .. } => {}
            Event::StateMismatch { seq } | Event::OutputMismatch { seq } => {
                *self.divergences.entry(node).or_default() += 1;
                if !self.may_diverge {
                    self.violate(
                        Violation::at(
                            t,
                            Kind::Divergence,
                            format!(
                            "node {node}: its run of ledger {seq} differs from the certified one"
                        ),
                        )
                        .by(node),
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
                self.violate_all(t, Kind::Verdict, node, found);
            }
            Event::Started { .. } => {
                // A restart replays its runs; a divergence found then counts
                // afresh.
                self.diverged.remove(&node);
            }
            // `World::notify` counts `Reached` and never passes it here.
            Event::Status(_)
            | Event::Reached(_)
            | Event::HistoryRejected { .. }
            | Event::StateSyncStarted { .. }
            | Event::StateSyncAbandoned { .. } => {}
        }
    }

    /// Honest `node` signed and sent a stage-3 proposal.
    pub fn on_vote(&mut self, t: u64, node: usize, head: &ProposalHead) {
        if let Some(v) = self.votes.voted(node, head) {
            self.violate(Violation::at(t, Kind::Vote, v).by(node));
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
            self.violate_all(t, Kind::Outputs, node, found);
        }
    }

    pub fn violate(&mut self, v: Violation) {
        // Bound the report: the first violations are the useful ones.
        if self.violations.len() < 50 {
            self.violations.push(v);
        }
    }

    /// What one sub-checker found at `t` about `node`.
    pub fn violate_all(&mut self, t: u64, kind: Kind, node: usize, found: Vec<String>) {
        for v in found {
            self.violate(Violation::at(t, kind, v).by(node));
        }
    }

    /// Highest seq `node` had reached by time `t`.
    pub(crate) fn seq_at(&self, node: usize, t: u64) -> u64 {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::expectations::Judged;
    use crate::scenario::{Expectation, Fault, Scenario, TimelineEvent};
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
    fn diverge(may_diverge: bool, closes: u64, synced: Option<u64>) -> Vec<Violation> {
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
        let v = &diverge(false, 0, None)[0];
        assert_eq!(
            (v.kind, v.node, v.at_ms),
            (Kind::Divergence, Some(0), Some(0))
        );
        assert!(v.detail.contains("differs from the certified one"));
        // One that talks over the NPL may, if it then takes the state.
        assert!(diverge(true, RECOVERY_LEDGERS, None).is_empty());
        assert!(diverge(true, 50, Some(1)).is_empty());
        let v = diverge(true, RECOVERY_LEDGERS + 1, None);
        assert!(
            v[0].detail
                .contains("has not installed the certified state"),
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
        assert_eq!(c.violations[0].kind, Kind::Fork);
        assert!(c.violations[0].detail.contains("fork at seq 1"));
        // Node 0 skips a seq.
        let skip = LedgerId {
            seq: 5,
            hash: Hash::ZERO,
        };
        let (_, s) = closed(&skip, 3000);
        c.on_event(5, 0, &s, true);
        assert!(
            c.violations[1].kind == Kind::Chain && c.violations[1].detail.contains("chain broken"),
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
                proven: None,
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
                proven: None,
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
                proven: None,
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
            &judged(vec![]),
        );
        assert_eq!(c.violations.len(), 1, "{:?}", c.violations);
        assert_eq!(c.violations[0].kind, Kind::Liveness);
        assert!(c.violations[0].detail.contains("reached seq 1 by 4000ms"));
        // With node 0 down from 3000ms on, no protocol could have it reach
        // seq 2 by 4000ms: that is not judged. By 2000ms it could.
        let mut c = Checker::default();
        c.on_event(0, 0, &Event::Started { lcl: g }, true);
        let crash = (3000, Fault::Crash { node: 0 });
        let reach = |by_ms| Expectation::ReachSeq {
            seq: 1,
            by_ms,
            nodes: vec![],
        };
        c.check_expectations(&[reach(4000)], &judged(vec![crash.clone()]));
        assert!(c.violations.is_empty(), "{:?}", c.violations);
        c.check_expectations(&[reach(2000)], &judged(vec![crash]));
        assert_eq!(c.violations.len(), 1, "{:?}", c.violations);
    }

    /// One honest node, whose timeline is `faults`, judged at 10 s.
    fn judged(faults: Vec<(u64, Fault)>) -> Judged {
        let mut s: Scenario =
            toml::from_str("name = \"t\"\nnodes = 1\nduration_ms = 10000").unwrap();
        s.timeline = (faults.into_iter())
            .map(|(at_ms, fault)| TimelineEvent { at_ms, fault })
            .collect();
        Judged {
            honest: vec![0],
            steady: vec![0],
            uptime: s.uptime(),
            end_ms: 10_000,
        }
    }
}
