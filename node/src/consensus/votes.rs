//! Pure vote counting over one stage's proposals.

use super::{Proposal, SignedProposal};
use crate::crypto::Hash;
use crate::ledger::LedgerId;
use std::collections::BTreeMap;

/// Input hashes proposed by at least `needed` of `props`, sorted.
pub fn inputs_with_votes(props: &[&Proposal], needed: usize) -> Vec<Hash> {
    let mut votes: BTreeMap<Hash, usize> = BTreeMap::new();
    for p in props {
        for i in &p.inputs {
            *votes.entry(*i).or_default() += 1;
        }
    }
    votes
        .into_iter()
        .filter(|&(_, n)| n >= needed)
        .map(|(h, _)| h)
        .collect()
}

/// The most proposed time that is not after `not_after`; ties go to the later
/// time, so nodes converge on the newest time a plurality accepts.
pub fn agreed_time(props: &[&Proposal], not_after: u64) -> Option<u64> {
    let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
    for p in props.iter().filter(|p| p.time <= not_after) {
        *votes.entry(p.time).or_default() += 1;
    }
    // max_by_key keeps the last maximum, i.e. the latest time among ties.
    votes.into_iter().max_by_key(|&(_, n)| n).map(|(t, _)| t)
}

/// How many proposals name each lcl.
pub fn lcl_votes(props: &[&Proposal]) -> BTreeMap<LedgerId, usize> {
    let mut votes = BTreeMap::new();
    for p in props {
        *votes.entry(p.lcl).or_default() += 1;
    }
    votes
}

/// Stage-3 proposals grouped by the ledger they would close; returns the
/// group with most members (ties to the smaller ledger hash).
pub fn best_candidate<'a>(props: &[&'a SignedProposal]) -> Option<(Hash, Vec<&'a SignedProposal>)> {
    let mut groups: BTreeMap<Hash, Vec<&SignedProposal>> = BTreeMap::new();
    for sp in props {
        groups
            .entry(sp.proposal.candidate().hash())
            .or_default()
            .push(sp);
    }
    let mut best: Option<(Hash, Vec<&SignedProposal>)> = None;
    for (h, g) in groups {
        if best.as_ref().is_none_or(|(_, b)| g.len() > b.len()) {
            best = Some((h, g));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Keypair, PubKey};

    fn prop(inputs: &[u8], time: u64) -> Proposal {
        Proposal {
            author: PubKey([0; 32]),
            round: 1,
            stage: 0,
            time,
            lcl: LedgerId {
                seq: 0,
                hash: Hash::ZERO,
            },
            inputs: inputs.iter().map(|&b| Hash([b; 32])).collect(),
            state: Hash::ZERO,
            output: Hash::ZERO,
        }
    }

    #[test]
    fn input_threshold() {
        let ps = [
            prop(&[1, 2, 3], 0),
            prop(&[1, 2], 0),
            prop(&[1], 0),
            prop(&[], 0),
        ];
        let refs: Vec<&Proposal> = ps.iter().collect();
        assert_eq!(inputs_with_votes(&refs, 3), vec![Hash([1; 32])]);
        assert_eq!(
            inputs_with_votes(&refs, 2),
            vec![Hash([1; 32]), Hash([2; 32])]
        );
        assert_eq!(inputs_with_votes(&refs, 5), vec![]);
    }

    #[test]
    fn time_is_most_voted_not_future() {
        let ps = [
            prop(&[], 10),
            prop(&[], 10),
            prop(&[], 20),
            prop(&[], 30),
            prop(&[], 30),
            prop(&[], 30),
        ];
        let refs: Vec<&Proposal> = ps.iter().collect();
        assert_eq!(agreed_time(&refs, 100), Some(30));
        // 30 is in the future: 10 has more votes than 20.
        assert_eq!(agreed_time(&refs, 25), Some(10));
        assert_eq!(agreed_time(&refs, 5), None);
        // Tie between 10 and 20 (one each) goes to the later.
        let tie = [prop(&[], 10), prop(&[], 20)];
        let refs: Vec<&Proposal> = tie.iter().collect();
        assert_eq!(agreed_time(&refs, 100), Some(20));
    }

    #[test]
    fn candidates_group_by_ledger() {
        let keys: Vec<Keypair> = (0..4).map(|i| Keypair::from_seed([i; 32])).collect();
        let sp = |k: &Keypair, inputs: &[u8]| {
            let mut p = prop(inputs, 5);
            p.author = k.public();
            p.stage = 3;
            p.sign(k)
        };
        let all = [
            sp(&keys[0], &[1]),
            sp(&keys[1], &[1]),
            sp(&keys[2], &[2]),
            sp(&keys[3], &[1]),
        ];
        let refs: Vec<&SignedProposal> = all.iter().collect();
        let (h, group) = best_candidate(&refs).unwrap();
        assert_eq!(group.len(), 3);
        assert_eq!(h, all[0].proposal.candidate().hash());
    }
}
