//! Checks on the random beacon, fed every ledger an honest node closes and
//! every fault the timeline applies:
//!
//! - a ledger's outcome is the one its parent's commits and frauds and its
//!   own reveals give (`beacon::decide`), so no node can put another value
//!   in, and with the ledger agreement checker every honest node has the
//!   same value for every final ledger, decided once;
//! - every fraud proof in a ledger verifies, against a UNL member;
//! - no honest node is ever convicted;
//! - an honest node is recorded absent only if it was down, paused, cut
//!   off or had its clock moved around the rounds its reveal was due in,
//!   or the run's links and clocks break the timing the protocol assumes.
//!
//! It also keeps the values of final ledgers, for the statistics.

use crate::check::violation::{Kind, Violation};
use hotpocket_node::beacon::{self, Beacon, FraudProof, Outcome};
use hotpocket_node::crypto::{Hash, KeyRing, PubKey, Verified};
use hotpocket_node::ledger::{Ledger, LedgerId};
use std::collections::BTreeMap;

/// Rounds after a fault ends during which the nodes it touched may still
/// be recorded absent: a restarted or healed node catches up first.
const GRACE_ROUNDS: u64 = 4;

struct Seen {
    seq: u64,
    prev: Hash,
    beacon: Beacon,
}

#[derive(Default)]
pub struct BeaconChecker {
    ring: Option<KeyRing>,
    unl: Vec<PubKey>,
    index: BTreeMap<PubKey, usize>,
    honest: Vec<bool>,
    roundtime_ms: u64,
    stage_ms: u64,
    /// Nodes that can close a ledger together: a partition group smaller
    /// than this cuts its members off.
    close_needed: usize,
    /// Set when links and clocks exceed the shortest stage
    /// (`latency::timing_spread_ms`): a reveal sent in time may then
    /// arrive late, and an absence is no violation.
    pub untimely: bool,
    /// When each honest node closed each ledger, by (hash, node).
    closed_at: BTreeMap<(Hash, usize), u64>,
    /// When an honest node first closed each ledger by consensus: the
    /// round rhythm reveals are timed against.
    voted_at: BTreeMap<Hash, u64>,
    /// Honest nodes recorded absent while away or behind: not violations.
    pub excused: u64,
    /// Honest nodes up and in time whose commit missed the next ledger.
    pub commits_missed: u64,
    keys: Vec<PubKey>,
    /// Every ledger an honest node closed, by hash.
    seen: BTreeMap<Hash, Seen>,
    /// Per node, the times it was away: (from, until; open while away).
    away: BTreeMap<usize, Vec<(u64, Option<u64>)>>,
    /// The value of each final ledger, `None` when no secret went in.
    pub values: BTreeMap<u64, Option<Hash>>,
    /// Per node: ledgers recording it absent, and convicting it.
    pub absent: BTreeMap<usize, u64>,
    pub fraud: BTreeMap<usize, u64>,
}

impl BeaconChecker {
    pub fn init(
        &mut self,
        unl: &[PubKey],
        keys: &[PubKey],
        honest: Vec<bool>,
        roundtime_ms: u64,
        stage_ms: u64,
        close_needed: usize,
    ) {
        self.stage_ms = stage_ms;
        self.close_needed = close_needed;
        self.ring = Some(KeyRing::new(unl));
        self.unl = unl.to_vec();
        self.index = keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
        self.keys = keys.to_vec();
        self.honest = honest;
        self.roundtime_ms = roundtime_ms;
    }

    /// Checks signatures through the world's memory of checks, which
    /// answers what a full check would for the same bytes.
    pub fn share(&mut self, verified: &Verified) {
        self.ring = self.ring.take().map(|r| r.sharing(Some(verified)));
    }

    /// `node` stops taking part normally from `t` (until `back`).
    pub fn away(&mut self, node: usize, t: u64) {
        let spans = self.away.entry(node).or_default();
        if spans.last().is_none_or(|(_, until)| until.is_some()) {
            spans.push((t, None));
        }
    }

    /// `node` stops taking part normally from `t` until `until` (a cut
    /// scoped to rounds lapses by itself).
    pub fn away_until(&mut self, node: usize, t: u64, until: u64) {
        let until = until.max(t);
        let spans = self.away.entry(node).or_default();
        // Before an open span, which `back` closes: it must stay last.
        let open = spans.last().is_some_and(|(_, until)| until.is_none());
        spans.insert(spans.len() - usize::from(open), (t, Some(until)));
    }

    /// `node` takes part normally again from `t`.
    pub fn back(&mut self, node: usize, t: u64) {
        if let Some((_, until)) = self.away.entry(node).or_default().last_mut() {
            if until.is_none() {
                *until = Some(t);
            }
        }
    }

    /// A partition into `groups`: members of a group too small to close a
    /// ledger are cut off; the others are not.
    pub fn partition(&mut self, groups: &[Vec<usize>], t: u64) {
        let needed = self.close_needed;
        for g in groups.iter().filter(|g| g.len() < needed) {
            g.iter().for_each(|&n| self.away(n, t));
        }
    }

    /// Back for every node away: a heal.
    pub fn all_back(&mut self, t: u64) {
        let nodes: Vec<usize> = self.away.keys().copied().collect();
        for n in nodes {
            self.back(n, t);
        }
    }

    /// Whether `node` was away at some time in `from..=to`, or within the
    /// grace after it came back.
    fn was_away(&self, node: usize, from: u64, to: u64) -> bool {
        let grace = GRACE_ROUNDS * self.roundtime_ms;
        self.away.get(&node).is_some_and(|spans| {
            spans
                .iter()
                .any(|(start, until)| *start <= to && until.is_none_or(|u| u + grace >= from))
        })
    }

    /// An honest node closed `ledger` (hash `hash`) at `t`, by consensus
    /// if `voted`, else adopted from history.
    pub fn on_closed(
        &mut self,
        t: u64,
        node: usize,
        ledger: &Ledger,
        hash: Hash,
        voted: bool,
        found: &mut Vec<String>,
    ) {
        let Some(ring) = &self.ring else { return };
        self.closed_at.entry((hash, node)).or_insert(t);
        if voted {
            self.voted_at.entry(hash).or_insert(t);
        }
        // The checks depend on the ledger alone: once per ledger.
        if self.seen.contains_key(&hash) {
            return;
        }
        let seq = ledger.seq;
        let b = &ledger.beacon;
        // The outcome follows from the parent's commits and these reveals.
        if let Some(parent) = self.seen.get(&ledger.prev) {
            let expected = parent.seq.checked_sub(1).map(|s| {
                let session = LedgerId {
                    seq: s,
                    hash: parent.prev,
                };
                let pb = &parent.beacon;
                beacon::decide(
                    ring,
                    &self.unl,
                    session,
                    &pb.commits,
                    &b.reveals,
                    &pb.frauds,
                )
            });
            // Which proof convicts a node may differ (it may have made
            // many); who is convicted may not.
            if expected.as_ref().map(content) != b.outcome.as_deref().map(content) {
                found.push(format!(
                    "node {node} closed ledger {seq} with beacon outcome {:?}; its commits and reveals give {expected:?}",
                    b.outcome
                ));
            }
            // Its reveal was due in the rounds after the parent closed. A
            // node that closed the parent over a stage after the first
            // honest node did by consensus was behind: its reveal could
            // come too late for the others' votes, like an input that
            // misses a ledger. Where no honest node closed the parent by
            // consensus (byzantine votes closed it, the honest adopted it
            // from history wherever in a round that left them), there is
            // no rhythm to be in time for: every absence is excused.
            let first = self.voted_at.get(&ledger.prev).copied();
            let due = first.map(|a| a.saturating_sub(self.roundtime_ms));
            let in_time: Vec<bool> = (0..self.honest.len())
                .map(|i| {
                    let closed = self.closed_at.get(&(ledger.prev, i));
                    match (first, closed, due) {
                        (Some(a), Some(&c), Some(due)) => {
                            c <= a + self.stage_ms && !self.was_away(i, due, t)
                        }
                        _ => false,
                    }
                })
                .collect();
            for k in b.outcome.iter().flat_map(|o| &o.absent) {
                let Some(&i) = self.index.get(k).filter(|&&i| self.honest[i]) else {
                    continue;
                };
                if self.untimely || !in_time[i] {
                    self.excused += 1;
                } else {
                    found.push(format!(
                        "honest node {i} recorded absent in ledger {seq}, though it was up, connected and in time"
                    ));
                }
            }
            // Commits climb the vote ladder like inputs, so a few lost
            // messages may drop an honest one: counted, not a violation.
            for i in (0..self.honest.len()).filter(|&i| self.honest[i]) {
                let key = self.keys[i];
                if in_time[i] && !b.commits.iter().any(|c| c.author == key) {
                    self.commits_missed += 1;
                }
            }
        }
        let proofs = b
            .frauds
            .iter()
            .chain(b.outcome.iter().flat_map(|o| &o.fraud));
        for p in proofs {
            self.check_proof(ring, seq, p, found);
        }
        self.seen.entry(hash).or_insert_with(|| Seen {
            seq,
            prev: ledger.prev,
            beacon: b.clone(),
        });
    }

    fn check_proof(&self, ring: &KeyRing, seq: u64, p: &FraudProof, found: &mut Vec<String>) {
        match p.verify(ring) {
            Err(e) => found.push(format!("a fraud proof in ledger {seq} does not hold: {e}")),
            Ok(k) if self.unl.binary_search(&k).is_err() => {
                found.push(format!("ledger {seq} convicts {k:?}, not in the UNL"))
            }
            Ok(k) => {
                if let Some(&i) = self.index.get(&k).filter(|&&i| self.honest[i]) {
                    found.push(format!(
                        "honest node {i} convicted of fraud in ledger {seq}"
                    ));
                }
            }
        }
    }

    /// Ledger `hash` became final (the first time for its seq): count it.
    pub fn on_final(&mut self, hash: &Hash) {
        let Some(seen) = self.seen.get(hash) else {
            return;
        };
        let Some(o) = seen.beacon.outcome.as_deref() else {
            return;
        };
        if self.values.contains_key(&seen.seq) {
            return; // the checker finalises each seq once; be sure
        }
        self.values
            .insert(seen.seq, o.is_random().then_some(o.value));
        for k in &o.absent {
            if let Some(&i) = self.index.get(k) {
                *self.absent.entry(i).or_default() += 1;
            }
        }
        for p in &o.fraud {
            if let Some(&i) = self.index.get(&p.accused()) {
                *self.fraud.entry(i).or_default() += 1;
            }
        }
    }

    /// The `beacon` expectation's findings.
    pub fn expect(
        &self,
        absent: &[usize],
        convicted: &[usize],
        min_random_pct: Option<u64>,
    ) -> Vec<Violation> {
        let mut found = Vec::new();
        for &n in absent {
            if !self.absent.contains_key(&n) {
                let what = format!("node {n} was never recorded absent by the beacon");
                found.push(Violation::at_end(Kind::Beacon, what).by(n));
            }
        }
        for &n in convicted {
            if !self.fraud.contains_key(&n) {
                let what = format!("node {n} was never convicted of beacon fraud");
                found.push(Violation::at_end(Kind::Beacon, what).by(n));
            }
        }
        let random = self.values.values().filter(|v| v.is_some()).count() as u64;
        let all = self.values.len() as u64;
        let short = |pct: u64| all == 0 || random * 100 < pct * all;
        if let Some(min_random_pct) = min_random_pct.filter(|&p| short(p)) {
            found.push(Violation::at_end(
                Kind::Liveness,
                format!("{random} of {all} final beacon outcomes are random, expected {min_random_pct}%"),
            ));
        }
        found
    }
}

/// An outcome as the ledger hash names it: the convicted, not the proofs.
fn content(o: &Outcome) -> (Hash, &[PubKey], &[PubKey], Vec<PubKey>) {
    let convicted = o.fraud.iter().map(FraudProof::accused).collect();
    (o.value, &o.revealed, &o.absent, convicted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotpocket_node::beacon::{SignedCommit, SignedReveal};
    use hotpocket_node::crypto::Keypair;
    use hotpocket_node::ledger::Beacon;

    /// Three nodes, all honest; node 2 commits and never reveals.
    struct Fixture {
        keys: Vec<Keypair>,
        checker: BeaconChecker,
        parent: Ledger,
        child: Ledger,
    }

    fn fixture() -> Fixture {
        let keys: Vec<Keypair> = (1..=3).map(|i| Keypair::from_seed([i; 32])).collect();
        let pubs: Vec<PubKey> = keys.iter().map(|k| k.public()).collect();
        let mut unl = pubs.clone();
        unl.sort();
        let mut checker = BeaconChecker::default();
        checker.init(&unl, &pubs, vec![true; 3], 1000, 250, 3);
        let session = LedgerId {
            seq: 4,
            hash: Hash([4; 32]),
        };
        let mut commits: Vec<SignedCommit> =
            keys.iter().map(|k| SignedCommit::new(k, session)).collect();
        commits.sort_by_key(|c| (c.author, c.commitment));
        let parent = Ledger {
            seq: 5,
            prev: session.hash,
            time: 0,
            inputs: vec![],
            verdicts: vec![],
            beacon: Beacon {
                commits,
                ..Beacon::default()
            },
        };
        let mut reveals: Vec<SignedReveal> = keys[..2]
            .iter()
            .map(|k| SignedReveal::new(k, session))
            .collect();
        reveals.sort_by_key(|r| (r.author, r.secret));
        let mut child = Ledger {
            seq: 6,
            prev: parent.hash(),
            beacon: Beacon {
                reveals,
                ..Beacon::default()
            },
            ..parent.clone()
        };
        let pb = &parent.beacon;
        let outcome = beacon::decide(
            &KeyRing::new(&unl),
            &unl,
            session,
            &pb.commits,
            &child.beacon.reveals,
            &pb.frauds,
        );
        child.beacon.outcome = Some(Box::new(outcome));
        Fixture {
            keys,
            checker,
            parent,
            child,
        }
    }

    /// Closes the parent at 10 s and then `child` at 11 s (the child by
    /// node 0); returns what the checker found.
    fn close(f: &mut Fixture, child: &Ledger) -> Vec<String> {
        let mut found = Vec::new();
        for node in 0..3 {
            let h = f.parent.hash();
            f.checker
                .on_closed(10_000, node, &f.parent, h, true, &mut found);
        }
        f.checker
            .on_closed(11_000, 0, child, child.hash(), true, &mut found);
        found
    }

    #[test]
    fn an_absent_node_that_was_up_is_a_violation_unless_away() {
        let mut f = fixture();
        let child = f.child.clone();
        let found = close(&mut f, &child);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("honest node 2 recorded absent"),
            "{found:?}"
        );
        // Crashed at 10.5 s, back at 14 s: excused.
        let mut f = fixture();
        f.checker.away(2, 10_500);
        f.checker.back(2, 14_000);
        assert!(close(&mut f, &child).is_empty());
        assert_eq!(f.checker.excused, 1);
        // Back long before the parent closed: no excuse.
        let mut f = fixture();
        f.checker.away(2, 100);
        f.checker.back(2, 200);
        assert_eq!(close(&mut f, &child).len(), 1);
        // Closed the parent a second after the others: behind, excused.
        let mut f = fixture();
        let mut found = Vec::new();
        let h = f.parent.hash();
        for (node, t) in [(0, 10_000), (1, 10_000), (2, 11_000)] {
            f.checker.on_closed(t, node, &f.parent, h, true, &mut found);
        }
        f.checker
            .on_closed(11_000, 0, &child, child.hash(), true, &mut found);
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(f.checker.excused, 1);
        // Adopted from history at the same instant as the others closed
        // by consensus: in time, no excuse.
        let mut f = fixture();
        let mut found = Vec::new();
        for (node, voted) in [(0, true), (1, true), (2, false)] {
            f.checker
                .on_closed(10_000, node, &f.parent, h, voted, &mut found);
        }
        f.checker
            .on_closed(11_000, 0, &child, child.hash(), true, &mut found);
        assert_eq!(found.len(), 1, "{found:?}");
        // No honest node closed the parent by consensus (swarm seed 634:
        // byzantine votes closed it, the honest adopted it from history
        // late in the round that decided the child): no rhythm, excused.
        let mut f = fixture();
        let mut found = Vec::new();
        for node in 0..3 {
            f.checker
                .on_closed(10_000, node, &f.parent, h, false, &mut found);
        }
        f.checker
            .on_closed(11_000, 0, &child, child.hash(), true, &mut found);
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(f.checker.excused, 1);
        // Links or clocks wider than a stage: excused.
        let mut f = fixture();
        f.checker.untimely = true;
        assert!(close(&mut f, &child).is_empty());
        assert_eq!(f.checker.excused, 1);
    }

    #[test]
    fn an_outcome_that_does_not_follow_is_a_violation() {
        let mut f = fixture();
        f.checker.away(2, 0); // keep the absence out of it
        let mut child = f.child.clone();
        if let Some(o) = child.beacon.outcome.as_mut() {
            o.value.0[0] ^= 1;
        }
        let found = close(&mut f, &child);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("give"), "{found:?}");
        // Dropping a reveal without changing the outcome: caught too.
        let mut f = fixture();
        f.checker.away(2, 0);
        let mut child = f.child.clone();
        child.beacon.reveals.pop();
        assert_eq!(close(&mut f, &child).len(), 1);
    }

    #[test]
    fn convicting_an_honest_node_or_a_false_proof_is_a_violation() {
        let mut f = fixture();
        f.checker.away(2, 0);
        let session = f.parent.beacon.commits[0].lcl;
        let k = &f.keys[1];
        let a = SignedCommit::new(k, session);
        let b = SignedCommit::sign(k, session, Hash([9; 32]));
        let mut child = f.child.clone();
        child.beacon.frauds = vec![FraudProof::double_commit(a.clone(), b)];
        let found = close(&mut f, &child);
        assert!(
            found.iter().any(|v| v.contains("honest node 1 convicted")),
            "{found:?}"
        );
        // A "proof" of two equal commitments proves nothing.
        let mut f = fixture();
        f.checker.away(2, 0);
        let mut child = f.child.clone();
        child.beacon.frauds = vec![FraudProof::DoubleCommit(a.clone(), a)];
        let found = close(&mut f, &child);
        assert!(
            found.iter().any(|v| v.contains("does not hold")),
            "{found:?}"
        );
    }

    #[test]
    fn final_ledgers_are_counted_once() {
        let mut f = fixture();
        f.checker.away(2, 0);
        let child = f.child.clone();
        assert!(close(&mut f, &child).is_empty());
        f.checker.on_final(&child.hash());
        f.checker.on_final(&child.hash());
        assert_eq!(f.checker.values.len(), 1);
        assert_eq!(f.checker.absent, BTreeMap::from([(2, 1)]));
        assert!(f.checker.expect(&[2], &[], Some(100)).is_empty());
        assert_eq!(f.checker.expect(&[1], &[2], Some(100)).len(), 2);
    }
}
