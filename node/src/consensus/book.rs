//! The proposal book: at most one signed proposal per author and slot
//! (round, stage), what each arriving proposal is, and the latest lcl each
//! peer proposed on.

use super::tally::lcl_votes;
use super::{planted, ConsensusConfig, Proposal, SignedProposal};
use crate::crypto::{KeyRing, PubKey};
use crate::ledger::{LedgerId, MAX_VERDICTS};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What an arriving proposal turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// New, valid, stored.
    Accepted,
    /// A copy of the one stored for its author and slot.
    Duplicate,
    /// A second, validly signed, different proposal for a slot.
    Equivocation,
    /// Too many rounds away from ours.
    Stale,
    BadSignature,
    /// A stage past 3, too many inputs, inputs not sorted and distinct, or
    /// too many results, out of order or past its lcl.
    Malformed,
    /// Its author is not in the UNL.
    NotUnl,
}

impl Arrival {
    /// Whether telling it cost one signature verification.
    pub fn verified(self) -> bool {
        matches!(
            self,
            Arrival::Accepted | Arrival::Equivocation | Arrival::BadSignature
        )
    }
}

#[derive(Debug, Default)]
pub struct ProposalBook {
    /// Shared, not copied, with close proofs and (in the simulator) with
    /// the other nodes' books.
    slots: BTreeMap<(u64, u8), BTreeMap<PubKey, Arc<SignedProposal>>>,
    /// Latest lcl each peer proposed on, and in which round.
    peer_lcl: BTreeMap<PubKey, (LedgerId, u64)>,
}

impl ProposalBook {
    /// Checks and, if valid and new, stores a peer's proposal. `round` is
    /// the node's current round; `signed`, if known, is the proposal's
    /// encoding (see `SignedProposal::verify_encoded`).
    pub fn arrive(
        &mut self,
        cfg: &ConsensusConfig,
        ring: &KeyRing,
        round: u64,
        sp: Arc<SignedProposal>,
        signed: Option<&[u8]>,
    ) -> Arrival {
        let p = &sp.proposal;
        if !cfg.in_unl(&p.author) && !planted!(cfg, NoUnlCheck) {
            return Arrival::NotUnl;
        }
        let skew = cfg.max_round_skew;
        if p.round.saturating_add(skew) < round || p.round > round.saturating_add(skew) {
            return Arrival::Stale;
        }
        if p.stage > 3
            || p.inputs.len() > cfg.max_inputs_per_ledger
            || !p.inputs.windows(2).all(|w| w[0] < w[1])
            || p.results.len() > MAX_VERDICTS
            || !p.results.windows(2).all(|w| w[0].seq < w[1].seq)
            || p.results.last().is_some_and(|v| v.seq > p.lcl.seq)
            || !p.beacon.well_formed(p.lcl, cfg.unl.len())
        {
            return Arrival::Malformed;
        }
        if let Some(existing) = self.get(p.round, p.stage, &p.author) {
            // Identical copies are free to drop; a different one must carry a
            // valid signature before we call it equivocation.
            if Arc::ptr_eq(existing, &sp) || **existing == *sp {
                return Arrival::Duplicate;
            }
            return match sp.verify_encoded(ring, signed) {
                Ok(()) => Arrival::Equivocation,
                Err(_) => Arrival::BadSignature,
            };
        }
        if sp.verify_encoded(ring, signed).is_err() && !planted!(cfg, NoSignatureCheck) {
            return Arrival::BadSignature;
        }
        let (author, round, lcl) = (p.author, p.round, p.lcl);
        if self.peer_lcl.get(&author).is_none_or(|&(_, r)| r <= round) {
            self.peer_lcl.insert(author, (lcl, round));
        }
        self.insert(sp);
        Arrival::Accepted
    }

    /// Stores this node's own proposal.
    pub fn insert(&mut self, sp: Arc<SignedProposal>) {
        let p = &sp.proposal;
        self.slots
            .entry((p.round, p.stage))
            .or_default()
            .insert(p.author, sp);
    }

    fn get(&self, round: u64, stage: u8, author: &PubKey) -> Option<&Arc<SignedProposal>> {
        self.slots.get(&(round, stage))?.get(author)
    }

    /// The book's shared copy of `sp`, if it holds `sp`.
    pub fn shared(&self, sp: &SignedProposal) -> Option<&Arc<SignedProposal>> {
        let p = &sp.proposal;
        self.get(p.round, p.stage, &p.author)
            .filter(|held| std::ptr::eq(&***held, sp) || ***held == *sp)
    }

    /// The proposals of one slot, by author.
    pub fn slot(&self, round: u64, stage: u8) -> Vec<&SignedProposal> {
        self.slots
            .get(&(round, stage))
            .map(|m| m.values().map(|sp| &**sp).collect())
            .unwrap_or_default()
    }

    /// The proposals of rounds `from..=to`, all stages, without collecting
    /// them: the beacon's reveals look through every one on each proposal.
    pub fn rounds(&self, from: u64, to: u64) -> impl Iterator<Item = &SignedProposal> {
        self.slots
            .range((from, 0)..)
            .take_while(move |((round, _), _)| *round <= to)
            .flat_map(|(_, by_author)| by_author.values().map(|sp| &**sp))
    }

    /// How many of one slot's proposals name each lcl.
    pub fn lcl_votes(&self, round: u64, stage: u8) -> BTreeMap<LedgerId, usize> {
        let props: Vec<&Proposal> = self
            .slot(round, stage)
            .into_iter()
            .map(|sp| &sp.proposal)
            .collect();
        lcl_votes(&props)
    }

    /// Forgets slots of rounds before `oldest`.
    pub fn prune(&mut self, oldest: u64) {
        self.slots = self.slots.split_off(&(oldest, 0));
    }

    /// Peers other than `me` that proposed on a ledger past `seq` in the
    /// last `skew` rounds before `round`: they have history to give.
    pub fn peers_ahead(&self, me: &PubKey, seq: u64, round: u64, skew: u64) -> Vec<PubKey> {
        (self.recent(me, round, skew))
            .filter(|(_, id)| id.seq > seq)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Peers other than `me` and the lcl each proposed on, if that was in
    /// the last `skew` rounds before `round`.
    fn recent<'a>(
        &'a self,
        me: &'a PubKey,
        round: u64,
        skew: u64,
    ) -> impl Iterator<Item = (&'a PubKey, &'a LedgerId)> {
        (self.peer_lcl.iter())
            .filter(move |(k, (_, r))| *k != me && r.saturating_add(skew) >= round)
            .map(|(k, (id, _))| (k, id))
    }

    /// Whether more peers lately proposed on another ledger at `tip`'s seq
    /// than on `tip` or past its seq. Catch-up then leaves an unfinal tip
    /// alone: a node adopting the minority's ledger and voting on top of
    /// it splits the honest nodes for good, since none may drop a voted
    /// lcl without a proof. Peers past the tip's seq count for it (they
    /// may be on its child). Byzantine peers can make a tip look outvoted
    /// by outnumbering its holders: that costs a lagging node time, never
    /// safety, as it still takes the answer's final part, and once a child
    /// closes on the tip, the tip comes final with it. Their claims can
    /// also cancel as many of the other ledger's holders
    /// (docs/limitations.md).
    pub fn outvoted(&self, me: &PubKey, tip: LedgerId, round: u64, skew: u64) -> bool {
        let mut for_tip = 0;
        let mut others: BTreeMap<LedgerId, usize> = BTreeMap::new();
        for (_, id) in self.recent(me, round, skew) {
            if *id == tip || id.seq > tip.seq {
                for_tip += 1;
            } else if id.seq == tip.seq {
                *others.entry(*id).or_default() += 1;
            }
        }
        others.values().any(|&n| n > for_tip)
    }

    /// Whether `peer` was last seen on a ledger past `seq`.
    pub fn seen_past(&self, peer: &PubKey, seq: u64) -> bool {
        self.peer_lcl.get(peer).is_some_and(|(id, _)| id.seq > seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Keypair;
    use crate::ledger::LedgerRecord;

    fn setup() -> (ConsensusConfig, KeyRing, Vec<Keypair>) {
        let keys: Vec<Keypair> = (1..=4).map(|i| Keypair::from_seed([i; 32])).collect();
        let cfg = ConsensusConfig::new(keys.iter().map(|k| k.public()).collect());
        let ring = KeyRing::new(&cfg.unl);
        (cfg, ring, keys)
    }

    fn proposal(k: &Keypair, round: u64, stage: u8, time: u64) -> SignedProposal {
        Proposal {
            author: k.public(),
            round,
            stage,
            time,
            lcl: LedgerRecord::genesis().id(),
            inputs: vec![],
            results: vec![],
            beacon: Default::default(),
        }
        .sign(k)
    }

    #[test]
    fn tells_each_kind_of_arrival() {
        let (cfg, ring, keys) = setup();
        let mut book = ProposalBook::default();
        let p = proposal(&keys[0], 10, 1, 5);
        assert_eq!(
            book.arrive(&cfg, &ring, 10, Arc::new(p.clone()), None),
            Arrival::Accepted
        );
        assert_eq!(
            book.arrive(&cfg, &ring, 10, Arc::new(p.clone()), None),
            Arrival::Duplicate
        );
        let other = proposal(&keys[0], 10, 1, 6);
        assert_eq!(
            book.arrive(&cfg, &ring, 10, Arc::new(other.clone()), None),
            Arrival::Equivocation
        );
        let mut forged = other;
        forged.proposal.time = 7;
        assert_eq!(
            book.arrive(&cfg, &ring, 10, Arc::new(forged), None),
            Arrival::BadSignature
        );
        let mut bad_new = proposal(&keys[1], 10, 1, 5);
        bad_new.proposal.time = 9;
        assert_eq!(
            book.arrive(&cfg, &ring, 10, Arc::new(bad_new), None),
            Arrival::BadSignature
        );
        let far = proposal(&keys[1], 10 + cfg.max_round_skew + 1, 1, 5);
        assert_eq!(
            book.arrive(&cfg, &ring, 10, Arc::new(far), None),
            Arrival::Stale
        );
        let stage9 = proposal(&keys[1], 10, 9, 5);
        assert_eq!(
            book.arrive(&cfg, &ring, 10, Arc::new(stage9), None),
            Arrival::Malformed
        );
        let outsider = proposal(&Keypair::from_seed([99; 32]), 10, 1, 5);
        assert_eq!(
            book.arrive(&cfg, &ring, 10, Arc::new(outsider), None),
            Arrival::NotUnl
        );
        // Only the first stays in the book.
        assert_eq!(book.slot(10, 1), vec![&p]);
    }

    #[test]
    fn remembers_where_peers_are_and_prunes_old_rounds() {
        let (cfg, ring, keys) = setup();
        let mut book = ProposalBook::default();
        let mut p = proposal(&keys[1], 10, 0, 5).proposal;
        p.lcl.seq = 7;
        book.arrive(&cfg, &ring, 10, Arc::new(p.sign(&keys[1])), None);
        let me = keys[0].public();
        assert_eq!(book.peers_ahead(&me, 6, 10, 3), vec![keys[1].public()]);
        assert!(book.peers_ahead(&me, 7, 10, 3).is_empty());
        assert!(
            book.peers_ahead(&me, 6, 14, 3).is_empty(),
            "seen too long ago"
        );
        assert!(book.seen_past(&keys[1].public(), 6));
        book.prune(11);
        assert!(book.slot(10, 0).is_empty());
    }

    #[test]
    fn a_tip_is_outvoted_only_by_more_recent_peers_on_another_ledger() {
        let (cfg, ring, keys) = setup();
        let mut book = ProposalBook::default();
        let on = |book: &mut ProposalBook, k: &Keypair, lcl: LedgerId, round| {
            let mut p = proposal(k, round, 0, 5).proposal;
            p.lcl = lcl;
            book.arrive(&cfg, &ring, round, Arc::new(p.sign(k)), None);
        };
        let at = |seq, byte| LedgerId {
            seq,
            hash: crate::crypto::Hash([byte; 32]),
        };
        let (a, b) = (at(10, 1), at(10, 2));
        let me = keys[0].public();
        on(&mut book, &keys[3], a, 10);
        on(&mut book, &keys[1], b, 10);
        assert!(!book.outvoted(&me, a, 10, 3), "one each: a tie");
        on(&mut book, &keys[2], b, 10);
        assert!(book.outvoted(&me, a, 10, 3));
        assert!(!book.outvoted(&me, b, 10, 3));
        assert!(!book.outvoted(&me, a, 14, 3), "b's votes are too old");
        assert!(!book.outvoted(&keys[1].public(), a, 10, 3), "our own vote");
        // A peer past the tip's seq may be on the tip's child.
        on(&mut book, &keys[2], at(11, 3), 11);
        assert!(!book.outvoted(&me, a, 11, 3), "a and past it: two, b one");
        // Past the seq counts for the tip, behind it for nothing: a has
        // one holder and one past it, b two, so a is not outvoted.
        let keys: Vec<Keypair> = (1..=6).map(|i| Keypair::from_seed([i; 32])).collect();
        let cfg = ConsensusConfig::new(keys.iter().map(|k| k.public()).collect());
        let ring = KeyRing::new(&cfg.unl);
        let mut book = ProposalBook::default();
        let me = keys[0].public();
        for (k, lcl) in [(1, a), (2, b), (3, b), (4, at(11, 3)), (5, at(9, 4))] {
            let mut p = proposal(&keys[k], 10, 0, 5).proposal;
            p.lcl = lcl;
            let sp = Arc::new(p.sign(&keys[k]));
            assert_eq!(book.arrive(&cfg, &ring, 10, sp, None), Arrival::Accepted);
            let outvoted = book.outvoted(&me, a, 10, 3);
            assert_eq!(outvoted, k == 3, "after peer {k}");
        }
        assert!(!book.outvoted(&me, a, u64::MAX, u64::MAX), "no overflow");
    }

    #[test]
    fn rounds_lists_every_stage_of_the_rounds_asked_for() {
        let (_, _, keys) = setup();
        let mut book = ProposalBook::default();
        for (round, stage) in [(9, 3), (10, 0), (10, 3), (11, 1), (12, 0)] {
            book.insert(Arc::new(proposal(&keys[0], round, stage, 5)));
            book.insert(Arc::new(proposal(&keys[1], round, stage, 5)));
        }
        let got: Vec<(u64, u8)> = (book.rounds(10, 11))
            .map(|sp| (sp.proposal.round, sp.proposal.stage))
            .collect();
        assert_eq!(got, [(10, 0), (10, 0), (10, 3), (10, 3), (11, 1), (11, 1)]);
        assert_eq!(book.rounds(12, 11).count(), 0);
        assert_eq!(book.rounds(0, u64::MAX).count(), 10);
    }
}
