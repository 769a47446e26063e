//! The lcl liar: a coalition that, after an honest node closed a ledger
//! alone, tells some honest nodes it is past that ledger, and answers
//! their history requests with it, whole and with its real proof. The
//! ledger is genuine; what it lacks is a child: no ledger was ever closed
//! on top of it. A node must take a proof of another
//! ledger's child, never of the ledger alone, before it drops an lcl it
//! voted on (with that check off, `planted_bug = "sibling_as_proof"`, a
//! victim drops its voted lcl for the liars' ledger, and the vote checker
//! reports the rollback). Honest code skips a ledger at or below its lcl,
//! so the lie costs a victim at the sibling's seq one wasted request. A
//! victim still below it is handed the real chain ending in the sibling,
//! with the liars' claims past it counting for it, and may adopt it and
//! vote on it: a lone closer's partner until a proof of the other
//! ledger's child comes (`rollback-proven`).
//!
//! The liars learn the ledger from the lone closer itself: a proposal on
//! another ledger at their own lcl's seq makes them ask its author for it.
//! They lie for two ledgers after it, to the same victims (chosen from the
//! coalition's plan), and tell the others the truth, so the chain still
//! closes in the others' view and the victims catch up from them.

use super::collude::mix;
use super::Byzantine;
use hotpocket_node::consensus::PeerMessage;
use hotpocket_node::crypto::{Hash, PubKey};
use hotpocket_node::ledger::{Beacon, LedgerId, LedgerRecord};
use std::collections::BTreeSet;

#[derive(Default)]
pub(super) struct Lie {
    /// The liar's real lcl, from its own proposals.
    own: Option<LedgerId>,
    /// Another proven ledger at a seq the liar was at.
    sibling: Option<LedgerRecord>,
    /// Ledgers asked for, so each is asked once.
    asked: BTreeSet<LedgerId>,
}

impl Lie {
    /// The sibling, while the liar's own lcl is at most a ledger past it.
    fn told(&self) -> Option<&LedgerRecord> {
        let own = self.own?.seq;
        self.sibling
            .as_ref()
            .filter(|s| own >= s.ledger.seq && own <= s.ledger.seq + 1)
    }
}

impl Byzantine {
    /// Whether node `to` is lied to about the ledger at `seq`: half the
    /// nodes outside the coalition, rounded down, the same for every liar.
    fn lied_to(&self, seq: u64, to: usize) -> bool {
        let ours: BTreeSet<PubKey> = self.coalition.iter().map(|k| k.public()).collect();
        let mut others: Vec<usize> = (0..self.peers.len())
            .filter(|&i| !ours.contains(&self.peers[i]))
            .collect();
        others.sort_by_key(|&i| mix(self.plan ^ mix(seq) ^ i as u64));
        others[..others.len() / 2].contains(&to)
    }

    /// Watches for another ledger at the liar's seq, fetches it, and
    /// answers the victims' requests the honest code has nothing for.
    pub(super) fn lcl_observe(&mut self, from: &PubKey, frame: &[u8]) -> Vec<(usize, Vec<u8>)> {
        let Some(sender) = self.peers.iter().position(|k| k == from) else {
            return vec![];
        };
        let Some(own) = self.lie.own else {
            return vec![];
        };
        match PeerMessage::decode(frame) {
            Ok(PeerMessage::Proposal(sp)) => {
                let lcl = sp.proposal.lcl;
                let new = lcl.seq == own.seq && lcl != own && self.lie.asked.insert(lcl);
                if !new {
                    return vec![];
                }
                let ask = PeerMessage::HistoryRequest {
                    from_seq: lcl.seq,
                    count: 1,
                };
                vec![(sender, ask.encode())]
            }
            Ok(PeerMessage::HistoryResponse(records)) => {
                let other = records
                    .into_iter()
                    .find(|r| r.ledger.seq == own.seq && r.hash != own.hash);
                if let Some(r) = other {
                    self.lie.sibling = Some(r);
                }
                vec![]
            }
            Ok(PeerMessage::HistoryRequest { from_seq, .. }) => {
                let Some(s) = self.lie.told() else {
                    return vec![];
                };
                let seq = s.ledger.seq;
                if from_seq <= own.seq || from_seq > seq + 2 || !self.lied_to(seq, sender) {
                    return vec![]; // the honest code answers, rewritten below
                }
                let answer = PeerMessage::HistoryResponse(vec![s.clone()]);
                vec![(sender, answer.encode())]
            }
            _ => vec![],
        }
    }

    /// To a victim: proposals on a ledger past the real lcl, and history
    /// that ends with the sibling. To the rest: the truth.
    pub(super) fn lie_about_lcl(&mut self, to: usize, bytes: Vec<u8>) -> Vec<u8> {
        let msg = PeerMessage::decode(&bytes);
        if let Ok(PeerMessage::Proposal(sp)) = &msg {
            if sp.proposal.author == self.key.public() {
                let own = sp.proposal.lcl;
                self.lie.own = Some(own);
                self.lie.asked.retain(|l| l.seq + 2 >= own.seq);
            }
        }
        let Some(s) = self.lie.told() else {
            return bytes;
        };
        let (seq, hash) = (s.ledger.seq, s.hash);
        if !self.lied_to(seq, to) {
            return bytes;
        }
        match msg {
            Ok(PeerMessage::Proposal(sp)) => {
                let mut p = sp.proposal;
                // A child of the sibling nobody closed; its beacon entries
                // would name the real lcl, so none are sent.
                p.lcl = LedgerId {
                    seq: p.lcl.seq + 1,
                    hash: Hash::of("lcl-liar", &[&hash.0, &p.lcl.seq.to_le_bytes()]),
                };
                p.beacon = Beacon::default();
                PeerMessage::Proposal(Box::new(p.sign(&self.key))).encode()
            }
            Ok(PeerMessage::HistoryResponse(mut records)) => {
                records.retain(|r| r.ledger.seq < seq);
                records.push(s.clone());
                PeerMessage::HistoryResponse(records).encode()
            }
            _ => bytes,
        }
    }
}
