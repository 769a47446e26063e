//! Check-probers on history: every history answer is a chain of its own,
//! linked to the asker's lcl and right in every respect but one. The
//! history forger proves each ledger by its own stage-3 vote alone,
//! validly signed: it fails the proof's threshold check and nothing else
//! (with that check off, `planted_bug = "weak_history_proof"`, a node
//! catching up adopts the forged chain and finalises ledgers nobody else
//! has: a fork). The proof forger proves each by as many votes as the real
//! proof, in the real voters' names, each carrying the real vote's
//! signature, now over other bytes: it fails the signature check and
//! nothing else (`planted_bug = "no_proof_signature_check"`).

use super::Byzantine;
use hotpocket_node::consensus::PeerMessage;
use hotpocket_node::ledger::{Beacon, LedgerId, SignedProposal};
use std::sync::Arc;

impl Byzantine {
    /// `in_their_names`: the proof forger's proofs, else the history
    /// forger's.
    pub(super) fn forge_history(&mut self, bytes: Vec<u8>, in_their_names: bool) -> Vec<u8> {
        let Ok(PeerMessage::HistoryResponse(mut records)) = PeerMessage::decode(&bytes) else {
            return bytes;
        };
        let Some(first) = records.first() else {
            return bytes;
        };
        let mut prev = first.ledger.prev;
        for r in records.iter_mut() {
            // Another ledger: no inputs, no beacon entries (whose sessions
            // name the real parents), linked to the forged one before.
            r.ledger.prev = prev;
            r.ledger.inputs.clear();
            r.ledger.beacon = Beacon::default();
            r.bodies.clear();
            r.hash = r.ledger.hash();
            let lcl = LedgerId {
                seq: r.ledger.seq - 1,
                hash: prev,
            };
            // The same vote on the forged ledger: every real voter agreed
            // on one candidate, so each changed alike names the forged one.
            let forged = |vote: &SignedProposal| {
                let mut p = vote.proposal.clone();
                p.lcl = lcl;
                p.inputs.clear();
                p.beacon = Beacon::default();
                p
            };
            r.proof = match in_their_names {
                true => (r.proof.iter())
                    .map(|vote| {
                        Arc::new(SignedProposal {
                            proposal: forged(vote),
                            sig: vote.sig,
                        })
                    })
                    .collect(),
                false => match r.proof.first() {
                    Some(vote) => {
                        let mut p = forged(vote);
                        p.author = self.key.public();
                        vec![Arc::new(p.sign(&self.key))]
                    }
                    None => continue,
                },
            };
            debug_assert!(r
                .proof
                .iter()
                .all(|v| v.proposal.candidate().hash() == r.hash));
            prev = r.hash;
        }
        PeerMessage::HistoryResponse(records).encode()
    }
}

impl Byzantine {
    /// A check-prober on bodies: the real ledgers with their real proofs,
    /// each body moved to the next input of the answer, so every one is a
    /// genuine signed input, under another input's hash. It fails the body
    /// check and nothing else. With that check off (`planted_bug =
    /// "unchecked_bodies"`) a node catching up runs other inputs than the
    /// ledger's, and its state leaves the certified one.
    pub(super) fn swap_bodies(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        let Ok(PeerMessage::HistoryResponse(mut records)) = PeerMessage::decode(&bytes) else {
            return bytes;
        };
        let mut bodies: Vec<Vec<u8>> = records
            .iter()
            .flat_map(|r| r.bodies.values().cloned())
            .collect();
        if bodies.len() < 2 {
            return bytes;
        }
        bodies.rotate_left(1);
        let mut next = bodies.into_iter();
        for r in records.iter_mut() {
            for body in r.bodies.values_mut() {
                *body = next.next().expect("as many as taken");
            }
        }
        PeerMessage::HistoryResponse(records).encode()
    }
}

impl Byzantine {
    /// A check-prober on links: the real ledgers with their real proofs,
    /// the second of the answer left out, so the third names a parent the
    /// asker does not have at the seq before it. It fails the link check
    /// and nothing else. With that check off (`planted_bug =
    /// "no_link_check"`) a node catching up skips a ledger: its chain jumps
    /// a seq, and it never runs that ledger's inputs.
    pub(super) fn skip_history(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        match PeerMessage::decode(&bytes) {
            Ok(PeerMessage::HistoryResponse(mut records)) if records.len() >= 3 => {
                records.remove(1);
                PeerMessage::HistoryResponse(records).encode()
            }
            _ => bytes,
        }
    }
}
