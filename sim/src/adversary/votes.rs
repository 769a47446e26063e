//! Adversaries that probe one check each on a peer's stage-3 vote, timed to
//! matter: with its own stage-2 proposal, the node sends its victim (the
//! lowest-numbered other node) a stage-3 vote from every other UNL member
//! for a candidate the rest never see, so they arrive before the real ones.
//! Each vote is right in everything but the one thing the probed check
//! looks at: a `vote_forger` signs them with its own key under the others'
//! names (the signature check), a `sybil` signs them validly with keys
//! outside the UNL (the membership check). With the check in place every
//! one is dropped; without it the victim closes a ledger nobody else has
//! and, fed again on its own lcl the next round, makes it final: a fork.

use super::Byzantine;
use crate::scenario::Role;
use hotpocket_node::consensus::PeerMessage;
use hotpocket_node::crypto::{Keypair, PubKey};
use hotpocket_node::ledger::{Beacon, LedgerId, Proposal};

/// What the adversary knows of its victim.
#[derive(Default)]
pub struct Victim {
    /// The victim's lcl: from its latest stage-0 proposal, or predicted.
    lcl: Option<(u64, LedgerId)>,
    /// The ledger the victim closes if it takes the votes fed to it.
    next: Option<LedgerId>,
    /// (round, stage) of the own proposal last fed with.
    fed: Option<(u64, u8)>,
}

impl Byzantine {
    fn victim(&self) -> Option<(usize, PubKey)> {
        let me = self.key.public();
        let i = self.peers.iter().position(|k| *k != me)?;
        Some((i, self.peers[i]))
    }

    pub(super) fn watch_victim(&mut self, frame: &[u8]) {
        let Ok(PeerMessage::Proposal(sp)) = PeerMessage::decode(frame) else {
            return;
        };
        let p = &sp.proposal;
        if Some(p.author) == self.victim().map(|v| v.1)
            && p.stage == 0
            && self.victim.lcl.is_none_or(|(r, _)| r <= p.round)
        {
            self.victim.lcl = Some((p.round, p.lcl));
        }
    }

    /// The frames to send with `bytes` to peer `to`: with each own
    /// proposal to the victim, the next stage's votes from every author
    /// (sent a stage early, so they are the ones the victim keeps).
    pub(super) fn forge_votes(&mut self, to: usize, bytes: Vec<u8>) -> Vec<(usize, Vec<u8>)> {
        let mut out = vec![];
        if let (Ok(PeerMessage::Proposal(sp)), Some((victim, victim_key))) =
            (PeerMessage::decode(&bytes), self.victim())
        {
            let p = &sp.proposal;
            if to == victim && self.victim.fed != Some((p.round, p.stage)) {
                self.victim.fed = Some((p.round, p.stage));
                if let Some(vote) = self.forged(p) {
                    out = self.signed_by_everyone(&vote, victim_key, to);
                }
            }
        }
        out.insert(0, (to, bytes));
        out
    }

    /// What to feed the victim with own proposal `p`. On the shared lcl:
    /// at stage 2, stage-3 votes for this round's ledger without its
    /// inputs. Once the victim is on a ledger of its own: every stage of
    /// every round, on that ledger, so no majority elsewhere turns it back.
    fn forged(&mut self, p: &Proposal) -> Option<Proposal> {
        let mut known = self.victim.lcl.map_or(p.lcl, |(_, l)| l);
        if p.stage == 0 {
            if let Some(next) = self.victim.next.take() {
                known = next;
                self.victim.lcl = Some((p.round, next));
            }
        }
        let target = match (p.stage, self.victim.next) {
            (3, Some(next)) => next,
            _ => known,
        };
        let mut v = p.clone();
        v.author = self.key.public();
        if target == p.lcl {
            if p.stage != 2 {
                return None;
            }
            v.stage = 3;
            v.inputs.clear();
            v.time = p.time.saturating_sub(1);
        } else {
            (v.round, v.stage) = if p.stage == 3 {
                (p.round + 1, 0)
            } else {
                (p.round, p.stage + 1)
            };
            if p.stage == 3 {
                v.time = p.time + self.roundtime_ms;
            }
            v.lcl = target;
            v.inputs.clear();
            v.results.clear();
            v.beacon = Beacon::default();
        }
        if v.stage == 3 {
            let c = v.candidate();
            self.victim.next = Some(LedgerId {
                seq: c.seq,
                hash: c.hash(),
            });
        }
        Some(v)
    }

    /// `vote` from every author the role can muster, for peer `to`.
    fn signed_by_everyone(
        &self,
        vote: &Proposal,
        victim: PubKey,
        to: usize,
    ) -> Vec<(usize, Vec<u8>)> {
        let authors: Vec<(PubKey, Keypair)> = match self.role {
            Role::Sybil => (0..self.unl.len() as u64)
                .map(|k| {
                    let key = sybil_key(self.plan, k);
                    (key.public(), key)
                })
                .collect(),
            _ => (self.unl.iter())
                .filter(|k| **k != victim)
                .map(|k| (*k, self.key.clone()))
                .collect(),
        };
        authors
            .into_iter()
            .map(|(author, key)| {
                let forged = Proposal {
                    author,
                    ..vote.clone()
                };
                (
                    to,
                    PeerMessage::Proposal(Box::new(forged.sign(&key))).encode(),
                )
            })
            .collect()
    }
}

fn sybil_key(plan: u64, k: u64) -> Keypair {
    let mut seed = [0x5b; 32];
    seed[..8].copy_from_slice(&plan.to_le_bytes());
    seed[8..16].copy_from_slice(&k.to_le_bytes());
    Keypair::from_seed(seed)
}
