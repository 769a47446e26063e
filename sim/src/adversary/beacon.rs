//! Byzantine play on the random beacon. Each role rewrites the beacon part
//! of the proposals its honest node signs, and signs them again with its
//! own key, so they pass every signature check.

use super::Byzantine;
use crate::check::beacon_stats::liked;
use crate::scenario::Role;
use hotpocket_node::beacon::{self, FraudProof, SignedCommit, SignedReveal};
use hotpocket_node::consensus::{PeerMessage, Proposal};
use hotpocket_node::crypto::{Hash, PubKey};
use hotpocket_node::ledger::LedgerId;
use rand_core::RngCore;
use std::collections::BTreeMap;

/// What a withholder knows about one session.
#[derive(Default)]
pub struct Withholding {
    /// The session its held proposals reveal for, and the lcl they are on.
    session: Option<(LedgerId, LedgerId)>,
    /// Stage-0 proposals held back until it has seen the others' reveals.
    held: Vec<(usize, Proposal)>,
    /// Secrets the others revealed for the session, by author.
    seen: BTreeMap<PubKey, [u8; 32]>,
    /// Per session: whether it reveals.
    decided: BTreeMap<LedgerId, bool>,
}

impl Withholding {
    /// Starts following `session` (revealed on `lcl`), unless it does.
    fn begin(&mut self, session: LedgerId, lcl: LedgerId) {
        if self.session != Some((session, lcl)) {
            self.session = Some((session, lcl));
            self.held.clear();
            self.seen.clear();
        }
    }
}

impl Byzantine {
    /// What leaves for peer `to` when a beacon role sends `bytes`.
    pub(super) fn beacon_outgoing(&mut self, to: usize, bytes: Vec<u8>) -> Vec<(usize, Vec<u8>)> {
        let Ok(PeerMessage::Proposal(sp)) = PeerMessage::decode(&bytes) else {
            return vec![(to, bytes)];
        };
        let mut p = sp.proposal;
        let me = self.key.public();
        match self.role {
            Role::BeaconEquivocator if p.stage == 0 && to % 2 == 1 => {
                // Another commitment for odd peers, the same one each time
                // for a session: a second commit, not a stream of them.
                for c in p.beacon.commits.iter_mut().filter(|c| c.author == me) {
                    let other = Hash::of("equivocate", &[&c.commitment.0]);
                    *c = SignedCommit::sign(&self.key, c.lcl, other);
                }
                p.beacon.commits.sort_by_key(|c| (c.author, c.commitment));
            }
            Role::BeaconLiar => {
                for r in p.beacon.reveals.iter_mut().filter(|r| r.author == me) {
                    let mut lie = r.secret;
                    lie[0] ^= 1;
                    *r = SignedReveal::sign(&self.key, r.lcl, lie);
                }
                p.beacon.reveals.sort_by_key(|r| (r.author, r.secret));
            }
            Role::BeaconWithholder => return self.withhold(to, p),
            Role::BeaconForger => self.forge_beacon(to, &mut p),
            _ => return vec![(to, bytes)],
        }
        vec![(
            to,
            PeerMessage::Proposal(Box::new(p.sign(&self.key))).encode(),
        )]
    }

    /// One of the attacks a second reader found, at random, each to all
    /// peers or to the odd ones only: forged copies of the others' reveals
    /// and commits (a zero signature sorts first), two commitments of its
    /// own for each peer, and another proof of its own double commit.
    fn forge_beacon(&mut self, to: usize, p: &mut Proposal) {
        let me = self.key.public();
        let subset = self.coin(50) || to % 2 == 1;
        if !subset {
            return;
        }
        match self.rng.next_u64() % 3 {
            0 => {
                for r in p.beacon.reveals.iter_mut().filter(|r| r.author != me) {
                    r.sig.0 = [0; 64];
                }
                for c in p.beacon.commits.iter_mut().filter(|c| c.author != me) {
                    c.sig.0 = [0; 64];
                }
            }
            1 if p.stage == 0 => {
                let lcl = p.lcl;
                p.beacon.commits.retain(|c| c.author != me);
                // Two each (the most a proposal may carry), other ones for
                // each peer: honest stage-2 votes then carry up to four.
                for i in 0..2u8 {
                    let fake = Hash::of("flood", &[&[i, to as u8], &lcl.hash.0]);
                    p.beacon
                        .commits
                        .push(SignedCommit::sign(&self.key, lcl, fake));
                }
                p.beacon.commits.sort_by_key(|c| (c.author, c.commitment));
            }
            _ => {
                let lcl = p.lcl;
                let (a, b) = (self.rng.next_u64(), self.rng.next_u64());
                let proof = FraudProof::double_commit(
                    SignedCommit::sign(&self.key, lcl, Hash::of("a", &[&a.to_le_bytes()])),
                    SignedCommit::sign(&self.key, lcl, Hash::of("b", &[&b.to_le_bytes()])),
                );
                p.beacon.frauds.retain(|f| f.accused() != me);
                p.beacon.frauds.push(proof);
                p.beacon.frauds.sort_by_key(|f| f.accused());
            }
        }
    }

    /// Holds stage-0 proposals that reveal until it has seen the others'
    /// reveals, then sends them with its reveal or without, whichever
    /// gives a value it likes; later proposals follow the choice.
    fn withhold(&mut self, to: usize, mut p: Proposal) -> Vec<(usize, Vec<u8>)> {
        let me = self.key.public();
        let Some(mine) = p.beacon.reveals.iter().find(|r| r.author == me) else {
            return vec![(
                to,
                PeerMessage::Proposal(Box::new(p.sign(&self.key))).encode(),
            )];
        };
        let session = mine.lcl;
        match self.withholding.decided.get(&session) {
            Some(true) => {}
            Some(false) => p.beacon.reveals.retain(|r| r.author != me),
            None if p.stage == 0 => {
                self.withholding.begin(session, p.lcl);
                self.withholding.held.push((to, p));
                return vec![];
            }
            // Later stages before it decided: decide on what it has.
            None => {
                self.withholding.begin(session, p.lcl);
                self.decide_withholding();
                // The held stage-0 proposals go too, now it has decided.
                let mut out: Vec<(usize, Vec<u8>)> = std::mem::take(&mut self.withholding.held)
                    .into_iter()
                    .flat_map(|(to, p)| self.withhold(to, p))
                    .collect();
                out.extend(self.withhold(to, p));
                return out;
            }
        }
        vec![(
            to,
            PeerMessage::Proposal(Box::new(p.sign(&self.key))).encode(),
        )]
    }

    /// Notes the others' reveals; once all have been seen, or the others
    /// moved past stage 0, decides and lets the held proposals go.
    pub(super) fn beacon_observe(&mut self, frame: &[u8]) -> Vec<(usize, Vec<u8>)> {
        let Some((session, lcl)) = self.withholding.session else {
            return vec![];
        };
        if self.withholding.decided.contains_key(&session) {
            return vec![];
        }
        let Ok(PeerMessage::Proposal(sp)) = PeerMessage::decode(frame) else {
            return vec![];
        };
        let p = &sp.proposal;
        if p.lcl != lcl || sp.verify().is_err() {
            return vec![];
        }
        for r in p.beacon.reveals.iter().filter(|r| r.lcl == session) {
            self.withholding.seen.insert(r.author, r.secret);
        }
        // It waits for every node outside the coalition.
        let others = self.unl.len() - self.coalition.len().max(1);
        let members: Vec<PubKey> = self.coalition.iter().map(|k| k.public()).collect();
        let outside = (self.withholding.seen.keys())
            .filter(|k| **k != self.key.public() && !members.contains(k))
            .count();
        if p.stage == 0 && outside < others {
            return vec![];
        }
        self.decide_withholding();
        let held = std::mem::take(&mut self.withholding.held);
        held.into_iter()
            .flat_map(|(to, p)| self.withhold(to, p))
            .collect()
    }

    /// Decides for the coalition (every withholder of the run, sharing
    /// keys): of the subsets of its members that could reveal, the largest
    /// that gives a value it likes, else all; this member reveals if it is
    /// in it. Alone, that is "reveal if it gives a liked value or hiding
    /// does not"; k colluders choose among 2^k values.
    fn decide_withholding(&mut self) {
        let Some((session, _)) = self.withholding.session else {
            return;
        };
        let me = self.key.public();
        let mut members: Vec<(PubKey, [u8; 32])> = self
            .coalition
            .iter()
            .map(|k| (k.public(), beacon::secret_for(k, &session)))
            .collect();
        if members.is_empty() {
            members.push((me, beacon::secret_for(&self.key, &session)));
        }
        members.sort();
        members.truncate(8);
        let others: Vec<(PubKey, [u8; 32])> = (self.withholding.seen.iter())
            .filter(|(k, _)| members.iter().all(|m| m.0 != **k))
            .map(|(k, s)| (*k, *s))
            .collect();
        let value_with = |mask: usize| {
            let mut v = others.clone();
            v.extend(
                (members.iter().enumerate())
                    .filter(|(i, _)| mask >> i & 1 == 1)
                    .map(|(_, m)| *m),
            );
            v.sort();
            beacon::value(&session, &v)
        };
        let all = (1usize << members.len()) - 1;
        let chosen = (0..=all)
            .rev()
            .find(|&m| liked(&value_with(m)))
            .unwrap_or(all);
        let reveal = members
            .iter()
            .position(|m| m.0 == me)
            .is_none_or(|i| chosen >> i & 1 == 1);
        self.withholding.decided.insert(session, reveal);
        // Sessions are one per ledger; old choices are of no more use.
        while self.withholding.decided.len() > 8 {
            self.withholding.decided.pop_first();
        }
    }
}
