//! Pure counting over beacon entries carried in proposals: what the stage
//! ladder keeps, and the double commits among everything seen. Mirrors
//! `consensus::tally::inputs_with_votes` for inputs.

use super::{FraudProof, SignedCommit, SignedReveal};
use crate::crypto::{CryptoError, Hash, KeyRing, PubKey};
use crate::ledger_id::LedgerId;
use std::collections::{BTreeMap, BTreeSet};

/// What votes count: an entry's author and what it said.
type Said = (PubKey, [u8; 32]);

/// A signed beacon message that proposals carry and votes count.
pub trait Entry: Clone + Ord {
    fn author(&self) -> PubKey;
    /// The session it belongs to.
    fn lcl(&self) -> LedgerId;
    /// What the author said: its commitment, or its secret. Votes count
    /// `(author, said)`, so copies that differ only in their signature (an
    /// author may sign one message twice) are one entry.
    fn said(&self) -> [u8; 32];
    fn verify_with(&self, ring: &KeyRing) -> Result<(), CryptoError>;
}

impl Entry for SignedCommit {
    fn author(&self) -> PubKey {
        self.author
    }
    fn lcl(&self) -> LedgerId {
        self.lcl
    }
    fn said(&self) -> [u8; 32] {
        self.commitment.0
    }
    fn verify_with(&self, ring: &KeyRing) -> Result<(), CryptoError> {
        SignedCommit::verify_with(self, ring)
    }
}

impl Entry for SignedReveal {
    fn author(&self) -> PubKey {
        self.author
    }
    fn lcl(&self) -> LedgerId {
        self.lcl
    }
    fn said(&self) -> [u8; 32] {
        self.secret
    }
    fn verify_with(&self, ring: &KeyRing) -> Result<(), CryptoError> {
        SignedReveal::verify_with(self, ring)
    }
}

/// The entries for the session on `lcl` that at least `needed` of `votes`
/// carry (each vote is what one proposal of the previous stage carried),
/// one per `(author, said)`, sorted by it.
///
/// A vote counts once per entry however many copies it carries. Of the
/// copies, the least one with a valid signature is kept, so a vote that
/// carries a copy with a broken signature cannot push out the author's
/// real one: only entries its author signed come out. At most one copy
/// per vote is checked, and only for entries that reach `needed`.
pub fn carried_by<T: Entry>(
    ring: &KeyRing,
    lcl: LedgerId,
    votes: &[&[T]],
    needed: usize,
) -> Vec<T> {
    // Most votes carry the very same list (every node voted for what the
    // threshold kept): count each distinct list once, times its votes.
    let mut lists: Vec<(&[T], usize)> = Vec::new();
    for vote in votes {
        match lists.iter_mut().find(|(l, _)| l == vote) {
            Some((_, n)) => *n += 1,
            None => lists.push((vote, 1)),
        }
    }
    // Per entry: how many votes carry it, and each vote's least copy.
    let mut tally: BTreeMap<Said, (usize, BTreeSet<&T>)> = BTreeMap::new();
    for (vote, times) in lists {
        let mut least: BTreeMap<Said, &T> = BTreeMap::new();
        for e in vote.iter().filter(|e| e.lcl() == lcl) {
            let kept = least.entry((e.author(), e.said())).or_insert(e);
            if e < *kept {
                *kept = e;
            }
        }
        for (key, e) in least {
            let slot = tally.entry(key).or_default();
            slot.0 += times;
            slot.1.insert(e);
        }
    }
    tally
        .into_values()
        .filter(|(n, _)| *n >= needed)
        .filter_map(|(_, copies)| copies.into_iter().find(|c| c.verify_with(ring).is_ok()))
        .cloned()
        .collect()
}

/// Proofs against every node that signed two different commitments for one
/// session among `seen` (whatever a node has seen: carried in proposals or
/// in a ledger), made of its two least commitments with a valid signature.
/// One per node and session, sorted by node then session. Signatures are
/// checked only where commitments conflict.
pub fn double_commits<'a>(
    ring: &KeyRing,
    seen: impl IntoIterator<Item = &'a SignedCommit>,
) -> Vec<FraudProof> {
    let mut by_session: BTreeMap<(PubKey, LedgerId), BTreeMap<Hash, BTreeSet<&SignedCommit>>> =
        BTreeMap::new();
    for c in seen {
        by_session
            .entry((c.author, c.lcl))
            .or_default()
            .entry(c.commitment)
            .or_default()
            .insert(c);
    }
    let mut proofs = Vec::new();
    for commitments in by_session.into_values().filter(|cs| cs.len() > 1) {
        let mut valid = commitments
            .into_values()
            .filter_map(|copies| copies.into_iter().find(|c| c.verify_with(ring).is_ok()));
        if let (Some(a), Some(b)) = (valid.next(), valid.next()) {
            proofs.push(FraudProof::double_commit(a.clone(), b.clone()));
        }
    }
    proofs
}

/// The fraud proofs a stage's proposals vote for in the session on `lcl`:
/// a node is convicted when at least `needed` of `votes` accuse it, by the
/// least of their proofs that holds. Counted by the accused rather than by
/// the proof, since honest nodes that saw different pairs of one node's
/// commits hold different proofs of the same fraud. Sorted by accused.
pub fn convicted(
    ring: &KeyRing,
    lcl: LedgerId,
    votes: &[&[FraudProof]],
    needed: usize,
) -> Vec<FraudProof> {
    let mut tally: BTreeMap<PubKey, (usize, BTreeSet<&FraudProof>)> = BTreeMap::new();
    for vote in votes {
        let mut accused: BTreeMap<PubKey, BTreeSet<&FraudProof>> = BTreeMap::new();
        for p in vote.iter().filter(|p| p.lcl() == lcl) {
            accused.entry(p.accused()).or_default().insert(p);
        }
        for (node, proofs) in accused {
            let slot = tally.entry(node).or_default();
            slot.0 += 1;
            slot.1.extend(proofs);
        }
    }
    tally
        .into_values()
        .filter(|(n, _)| *n >= needed)
        .filter_map(|(_, proofs)| proofs.into_iter().find(|p| p.verify(ring).is_ok()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beacon::testkit::{keys, lcl, unl};
    use crate::crypto::Keypair;

    fn commits(ks: &[Keypair], session: u64) -> Vec<SignedCommit> {
        let mut v: Vec<SignedCommit> = ks
            .iter()
            .map(|k| SignedCommit::new(k, lcl(session)))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn keeps_what_enough_votes_carry() {
        let ks = keys(5);
        let ring = KeyRing::new(&unl(&ks));
        let c = commits(&ks, 4);
        // Five votes: entry i is carried by 5 - i of them.
        let votes: Vec<Vec<SignedCommit>> = (0..5).map(|v| c[..5 - v].to_vec()).collect();
        let refs: Vec<&[SignedCommit]> = votes.iter().map(|v| v.as_slice()).collect();
        for needed in 0..=6 {
            let kept = carried_by(&ring, lcl(4), &refs, needed);
            let want: Vec<SignedCommit> = c[..(6 - needed).min(5)].to_vec();
            assert_eq!(kept, want, "needed {needed}");
            assert!(commits_ok(&kept, 4, 5));
        }
        // Carried for another session: not counted for this one.
        assert!(carried_by(&ring, lcl(5), &refs, 1).is_empty());
        // Reveals count the same way.
        let r: Vec<SignedReveal> = ks.iter().map(|k| SignedReveal::new(k, lcl(4))).collect();
        let votes = [&r[..2], &r[1..], &r[1..2]];
        let kept = carried_by(&ring, lcl(4), &votes, 3);
        assert_eq!(kept, vec![r[1].clone()]);
    }

    #[test]
    fn a_vote_counts_once_and_forged_copies_never_win() {
        let ks = keys(3);
        let ring = KeyRing::new(&unl(&ks));
        let c = SignedCommit::new(&ks[0], lcl(4));
        // One vote carrying an entry three times is still one vote.
        let thrice = [c.clone(), c.clone(), c.clone()];
        assert!(carried_by(&ring, lcl(4), &[&thrice[..]], 2).is_empty());
        // A copy with a broken signature that sorts first counts as a vote
        // for the entry, but the valid copy is the one kept.
        let mut forged = c.clone();
        forged.sig.0 = [0; 64];
        assert!(forged < c);
        let (honest, byzantine) = (vec![c.clone()], vec![forged.clone()]);
        let kept = carried_by(&ring, lcl(4), &[&honest[..], &byzantine[..]], 2);
        assert_eq!(kept, vec![c.clone()]);
        // Forged copies alone reach nothing, however many votes carry them.
        let kept = carried_by(&ring, lcl(4), &[&byzantine[..], &byzantine[..]], 2);
        assert!(kept.is_empty());
        // Both of a double committer's commitments may reach the
        // threshold: the outcome convicts it, not the count.
        let other = SignedCommit::sign(&ks[0], lcl(4), Hash([1; 32]));
        let both = [c.clone(), other.clone()];
        let kept = carried_by(&ring, lcl(4), &[&both[..], &both[..]], 2);
        assert_eq!(kept.len(), 2);
        assert!(commits_ok(&kept, 4, 2));
    }

    #[test]
    fn finds_double_commits_among_all_seen() {
        let ks = keys(3);
        let ring = KeyRing::new(&unl(&ks));
        let honest = commits(&ks, 4);
        let a = &ks[0];
        let other = SignedCommit::sign(a, lcl(4), Hash([1; 32]));
        let third = SignedCommit::sign(a, lcl(4), Hash([2; 32]));
        // Copies of one commit, and commits for two sessions: no fraud.
        let next = commits(&ks, 5);
        let seen: Vec<&SignedCommit> = honest.iter().chain(&honest).chain(&next).collect();
        assert!(double_commits(&ring, seen).is_empty());
        // Three commitments from one node: one proof, of the two least.
        let seen = honest.iter().chain([&third, &other]);
        let proofs = double_commits(&ring, seen);
        assert_eq!(proofs.len(), 1);
        assert_eq!(proofs[0].verify(&ring), Ok(a.public()));
        let mine = SignedCommit::new(a, lcl(4));
        let mut two = [mine, other.clone(), third.clone()];
        two.sort_by_key(|c| c.commitment);
        assert_eq!(
            proofs[0],
            FraudProof::double_commit(two[0].clone(), two[1].clone())
        );
        // A conflicting commit with a broken signature proves nothing.
        let mut forged = other;
        forged.sig.0[0] ^= 1;
        assert!(double_commits(&ring, honest.iter().chain([&forged])).is_empty());
        // But it does not hide a real one.
        let proofs = double_commits(&ring, honest.iter().chain([&forged, &third]));
        assert_eq!(proofs.len(), 1);
        assert_eq!(proofs[0].verify(&ring), Ok(a.public()));
    }

    /// Whether `c` is a well-formed set of commits for `session` in a
    /// UNL with room for `max` (two per node, so `max` rounds up to even).
    fn commits_ok(c: &[SignedCommit], session: u64, max: usize) -> bool {
        let b = crate::beacon::Beacon {
            commits: c.to_vec(),
            ..Default::default()
        };
        b.well_formed(lcl(session), max.div_ceil(2))
    }

    #[test]
    fn well_formed_rejects_unsorted_duplicate_foreign_and_too_many() {
        let ks = keys(3);
        let c = commits(&ks, 4);
        assert!(commits_ok(&c, 4, 3));
        assert!(commits_ok(&[], 4, 0));
        assert!(!commits_ok(&c, 4, 2));
        assert!(!commits_ok(&c, 5, 3));
        let mut rev = c.clone();
        rev.reverse();
        assert!(!commits_ok(&rev, 4, 3));
        let dup = vec![c[0].clone(), c[0].clone()];
        assert!(!commits_ok(&dup, 4, 3));
    }
}
