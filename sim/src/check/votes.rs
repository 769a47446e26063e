//! Honest stage-3 votes, tracked across rounds. A stage-3 proposal on top
//! of ledger L is a vote towards closing L's child, and so towards making
//! L final. Two rules follow, both judged from what honest nodes sent:
//! - a node drops an lcl it voted on only with a proof of another, final
//!   ledger at its seq (the rollback rule: without it, its votes could help close
//!   children of two ledgers at one seq);
//! - at no seq may two ledgers each have enough votes on top of them, from
//!   honest nodes plus every byzantine node, to close a child: that is a
//!   fork made possible, reported at the vote that opens it, before any
//!   close shows it.

use hotpocket_node::consensus::ProposalHead;
use hotpocket_node::crypto::Hash;
use hotpocket_node::ledger::LedgerId;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Default)]
pub struct VoteChecker {
    /// The close threshold, in UNL members.
    close: usize,
    /// UNL members that are not honest: each may vote on top of anything.
    byzantine: usize,
    /// Per seq, per ledger at that seq: the honest nodes that voted on top
    /// of it at stage 3, and the first round each did.
    on_top: BTreeMap<u64, BTreeMap<Hash, BTreeMap<usize, u64>>>,
    /// Seqs already reported, so a fork made possible is told once.
    reported: BTreeSet<u64>,
}

impl VoteChecker {
    /// For a UNL whose close threshold is `close` members, `byzantine` of
    /// them not honest.
    pub fn new(close: usize, byzantine: usize) -> VoteChecker {
        VoteChecker {
            close,
            byzantine,
            ..VoteChecker::default()
        }
    }

    /// Honest `node` sent a stage-3 proposal; what it made possible, if
    /// that is two ledgers at one seq with a close threshold each.
    pub fn voted(&mut self, node: usize, head: &ProposalHead) -> Option<String> {
        let seq = head.lcl.seq;
        let at_seq = self.on_top.entry(seq).or_default();
        let voters = at_seq.entry(head.lcl.hash).or_default();
        voters.entry(node).or_insert(head.round);
        let could_close = |n: usize| n + self.byzantine >= self.close;
        let able: Vec<(&Hash, &BTreeMap<usize, u64>)> = (at_seq.iter())
            .filter(|(_, v)| could_close(v.len()))
            .collect();
        if able.len() < 2 || !self.reported.insert(seq) {
            return None;
        }
        let shown: Vec<String> = (able.iter())
            .map(|(h, v)| format!("{h:?} by nodes {:?}", v.keys().collect::<Vec<_>>()))
            .collect();
        Some(format!(
            "honest stage-3 votes on top of {} ledgers at seq {seq} ({}) each reach the close threshold of {} with the {} byzantine: children of both could close",
            able.len(),
            shown.join("; "),
            self.close,
            self.byzantine
        ))
    }

    /// Honest `node` rolled back `from`; `proven` is the other ledger at
    /// its seq that a verified proof showed final, if any. What is wrong
    /// with that.
    pub fn rolled_back(
        &self,
        node: usize,
        from: LedgerId,
        proven: Option<LedgerId>,
    ) -> Option<String> {
        let voters = |l: LedgerId| {
            let at = self.on_top.get(&l.seq);
            at.and_then(|at| at.get(&l.hash))
        };
        let round = voters(from).and_then(|v| v.get(&node));
        // The proof of a final ledger is its child's close proof: a
        // threshold of stage-3 votes on top of it, honest ones among them
        // unless every byzantine node signed.
        let on_top_of = |p: LedgerId| voters(p).map_or(0, |v| v.len());
        match (round, proven) {
            (Some(r), None) => Some(format!(
                "node {node} rolled back {from:?}, on top of which it voted at stage 3 in round {r}, without a proof of another final ledger at seq {}",
                from.seq
            )),
            (_, Some(p)) if p.seq != from.seq || p.hash == from.hash => Some(format!(
                "node {node} rolled back {from:?} for a proof of {p:?}, which is not another ledger at its seq"
            )),
            (Some(r), Some(p)) if on_top_of(p) + self.byzantine < self.close => Some(format!(
                "node {node} rolled back {from:?}, on top of which it voted at stage 3 in round {r}, for {p:?}, on top of which {} honest nodes voted: with the {} byzantine, short of the close threshold of {}, so no proof of its finality can exist",
                on_top_of(p),
                self.byzantine,
                self.close
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seq: u64, h: u8) -> LedgerId {
        LedgerId {
            seq,
            hash: Hash([h; 32]),
        }
    }

    fn vote(round: u64, lcl: LedgerId) -> ProposalHead {
        ProposalHead {
            round,
            stage: 3,
            lcl,
        }
    }

    #[test]
    fn a_voted_lcl_goes_only_for_a_proof_of_another_ledger() {
        let mut c = VoteChecker::new(4, 0);
        assert_eq!(c.voted(0, &vote(11, at(10, 1))), None);
        // Not voted on by node 1: it may drop it without proof.
        assert_eq!(c.rolled_back(1, at(10, 1), None), None);
        let v = c.rolled_back(0, at(10, 1), None).unwrap();
        assert!(v.contains("voted at stage 3 in round 11"), "{v}");
        // A proof of a ledger nobody voted on top of proves nothing.
        let v = c.rolled_back(0, at(10, 1), Some(at(10, 2))).unwrap();
        assert!(v.contains("on top of which 0 honest nodes voted"), "{v}");
        for n in 1..=4 {
            c.voted(n, &vote(12, at(10, 2)));
        }
        assert_eq!(c.rolled_back(0, at(10, 1), Some(at(10, 2))), None);
        assert!(c.rolled_back(0, at(10, 1), Some(at(10, 1))).is_some());
        assert!(c.rolled_back(0, at(10, 1), Some(at(9, 2))).is_some());
    }

    #[test]
    fn two_ledgers_each_within_reach_of_a_close_are_reported_once() {
        // Five nodes, close at 4, one byzantine: three honest votes on top
        // of a ledger let it close a child.
        let mut c = VoteChecker::new(4, 1);
        for n in 0..3 {
            assert_eq!(c.voted(n, &vote(5, at(4, 1))), None);
        }
        // The lone closer of another ledger votes on it: no threat.
        assert_eq!(c.voted(3, &vote(5, at(4, 2))), None);
        assert_eq!(c.voted(0, &vote(6, at(4, 2))), None);
        // A third voter on top of it: both could close a child now.
        let v = c.voted(1, &vote(6, at(4, 2))).unwrap();
        assert!(v.contains("2 ledgers at seq 4"), "{v}");
        assert_eq!(c.voted(2, &vote(6, at(4, 2))), None, "told once");
        // Votes again in later rounds count once per node.
        let mut c = VoteChecker::new(4, 1);
        for r in 0..5 {
            c.voted(0, &vote(r, at(4, 1)));
            assert_eq!(c.voted(0, &vote(r, at(4, 2))), None);
        }
    }
}
