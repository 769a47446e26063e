//! Pure vote counting over one stage's proposals, and the vote status it
//! gives a node.

use super::{ConsensusConfig, ExecResult, Proposal, SignedProposal};
use crate::crypto::{Hash, PubKey};
use crate::ledger::LedgerId;
use crate::ledger::{Verdict, MAX_VERDICTS};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum VoteStatus {
    /// Enough of the UNL proposes on our lcl.
    Synced,
    /// A threshold of the UNL is on another lcl: catching up, not proposing.
    Desync,
    /// Too few proposals on our lcl to ever close.
    Unreliable,
}

/// The status a node on `lcl` has, given how many of the previous stage's
/// proposals named each lcl: desync when a majority (`majority` or more,
/// and more than on ours) is on another lcl at least as far, unreliable
/// when fewer than `close` are on ours. With desync at our own seq, also
/// the ledger the UNL built instead of ours.
///
/// A node ahead of the others stays synced (or unreliable) and keeps
/// proposing: that is how they learn there is history to fetch.
///
/// A ledger at our seq with more votes than ours and more than `unl -
/// close` (so ours could not reach `close` even if every node not seen
/// voted for it) is also given back, with unreliable: ours is dead. Below
/// the majority that happens when a byzantine node closes a ledger from
/// honest votes the honest nodes did not see together, hands it to one of
/// them as history, and the rest close another at that seq: with honest
/// nodes just at the close threshold nobody reaches the majority again.
/// Byzantine votes alone never outvote us so, while the honest reach the
/// close threshold.
pub fn status(
    votes: &BTreeMap<LedgerId, usize>,
    lcl: LedgerId,
    majority: usize,
    close: usize,
    unl: usize,
) -> (VoteStatus, Option<LedgerId>) {
    let mine = votes.get(&lcl).copied().unwrap_or(0);
    // max_by_key keeps the last maximum: ties go to the larger ledger id.
    let other = votes
        .iter()
        .filter(|(id, _)| **id != lcl)
        .max_by_key(|(_, &n)| n)
        .map(|(id, &n)| (*id, n));
    match other {
        Some((id, n)) if n >= majority && n > mine && id.seq >= lcl.seq => {
            (VoteStatus::Desync, (id.seq == lcl.seq).then_some(id))
        }
        Some((id, n)) if id.seq == lcl.seq && n > mine && n + close > unl => {
            (VoteStatus::Unreliable, Some(id))
        }
        _ if mine < close => (VoteStatus::Unreliable, None),
        _ => (VoteStatus::Synced, None),
    }
}

/// What a stage-1..3 proposal says, from the previous stage's proposals
/// `prev`: the inputs at least the stage's threshold of the UNL proposed
/// on `lcl`, and the agreed time (at most `round_start`).
pub fn follow(
    cfg: &ConsensusConfig,
    prev: &[&SignedProposal],
    lcl: LedgerId,
    stage: u8,
    round_start: u64,
) -> (Vec<Hash>, u64) {
    let on_lcl: Vec<&Proposal> = prev
        .iter()
        .map(|sp| &sp.proposal)
        .filter(|p| p.lcl == lcl)
        .collect();
    let needed = cfg.needed(cfg.stage_thresholds_pct[stage as usize - 1]);
    let inputs = inputs_with_votes(&on_lcl, needed);
    let time = agreed_time(&on_lcl, round_start).unwrap_or(round_start);
    (inputs, time)
}

/// Ledgers a run's verdict may stay pending once its copies report: a
/// node whose own stage-1 proposal reported ledger N's result votes N
/// uncertified at stage 2 when the ledgers up to N + `VERDICT_PATIENCE`
/// gave it no verdict and no value has the votes now. A node still to
/// report never does, so it takes the second threshold of the UNL having
/// reported: a contract late on every node (or on most) is slow, not in
/// disagreement, and its run is certified once enough copies report.
pub const VERDICT_PATIENCE: u64 = 8;

/// Ledgers after which a run with no verdict is uncertified whatever the
/// votes, decided from the lcl alone at stages 2 and 3. The backstop for
/// what the reporters' votes cannot end: a byzantine node that shows its
/// report to one side of an honest split only (each side then votes
/// differently, and neither reaches stage 3's threshold), or reports lost
/// to restarts. Far enough out that a contract kept within a few ledgers
/// by the intake back-pressure is never cut off; under `KEPT_RESULTS`
/// (32), so a node still holds its result of every undecided run.
pub const VERDICT_BACKSTOP: u64 = 24;

/// The verdicts a stage-2 or stage-3 proposal votes for, on runs from
/// `undecided` (the chain's first run without one) up to the lcl.
///
/// Results climb the ladder one stage behind inputs, as the lcl's run only
/// starts at stage 0: stage 1 carries each author's own results; stage 2
/// certifies a result that the first threshold of the UNL reported, calls
/// a run uncertified once no result can reach that threshold even if every
/// node yet to report agreed, and leaves it pending otherwise; stage 3
/// keeps each verdict the second threshold voted for, as a run of
/// consecutive seqs from `undecided`. The close threshold does the rest.
/// Whatever the copies computed, the ladder ends on one value for every
/// node that saw the same votes, so diverging contracts never stop the
/// chain, and a slow one only delays its verdict to a later ledger.
/// `me` is the voter: its stage-2 vote calls a run it reported in `prev`
/// uncertified after `VERDICT_PATIENCE`, as it does a run it has passed
/// without a result it could report (`lost`: its contract ran past it but
/// the result is gone, as after a restart). Only a voter still to run it
/// waits for it.
pub fn verdicts(
    cfg: &ConsensusConfig,
    prev: &[&SignedProposal],
    lcl: LedgerId,
    stage: u8,
    undecided: u64,
    me: &PubKey,
    lost: impl Fn(u64) -> bool,
) -> Vec<Verdict> {
    let on_lcl: Vec<&Proposal> = prev
        .iter()
        .map(|sp| &sp.proposal)
        .filter(|p| p.lcl == lcl)
        .collect();
    // Over half the UNL at least, whatever the settings: with an even UNL
    // a 50% threshold would let two results tie, and the lower hash win.
    let needed = cfg
        .needed(cfg.stage_thresholds_pct[stage as usize - 2])
        .max(cfg.unl.len() / 2 + 1);
    let last = lcl.seq.min(undecided + MAX_VERDICTS as u64 - 1);
    let mut out = Vec::new();
    for seq in undecided..=last {
        if lcl.seq >= seq + VERDICT_BACKSTOP {
            out.push(Verdict { seq, result: None });
            continue;
        }
        // Votes per value: `None` is "uncertified" (stage 2's votes only).
        let mut votes: BTreeMap<Option<(Hash, Hash)>, usize> = BTreeMap::new();
        let (mut reported, mut mine) = (0, false);
        for p in &on_lcl {
            if let Some(v) = p.results.iter().find(|v| v.seq == seq) {
                reported += 1;
                mine |= p.author == *me;
                *votes
                    .entry(v.result.map(|r| (r.state, r.output)))
                    .or_default() += 1;
            }
        }
        // At most one value reaches a threshold over half the UNL.
        let top = votes.iter().find(|(_, &n)| n >= needed).map(|(v, _)| *v);
        // Still pending this long after, and our own report is in: the
        // rest never reported, or split so no value can win. The vote ends
        // it, so no silent or byzantine node can hold it (and every verdict
        // after it) open; stage 3 follows the votes as for any verdict.
        let waited = lcl.seq >= seq + VERDICT_PATIENCE && (mine || lost(seq));
        let verdict = match (stage, top) {
            (_, Some(v)) => Some(v),
            (2, None) if waited => Some(None),
            (2, None) => {
                let best = votes
                    .iter()
                    .filter(|(v, _)| v.is_some())
                    .map(|(_, &n)| n)
                    .max()
                    .unwrap_or(0);
                let silent = cfg.unl.len().saturating_sub(reported);
                (best + silent < needed).then_some(None)
            }
            _ => None,
        };
        match verdict {
            Some(v) => out.push(Verdict {
                seq,
                result: v.map(|(state, output)| ExecResult { state, output }),
            }),
            None if stage == 3 => break,
            None => {}
        }
    }
    out
}

/// The candidate that closes on `lcl` if at least `needed` of the stage-3
/// proposals `stage3` name it: its hash and the proposals naming it (the
/// close proof). They agree on the ledger's content; which one's copy of
/// the signed beacon entries to keep is the caller's choice.
pub fn closing<'a>(
    stage3: &[&'a SignedProposal],
    lcl: LedgerId,
    needed: usize,
) -> Option<(Hash, Vec<&'a SignedProposal>)> {
    let on_lcl: Vec<&SignedProposal> = stage3
        .iter()
        .copied()
        .filter(|sp| sp.proposal.lcl == lcl)
        .collect();
    let (hash, group) = best_candidate(&on_lcl)?;
    (group.len() >= needed).then_some((hash, group))
}

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
    // Most name the very same candidate: hash each distinct one once (a
    // candidate's hash digests every beacon entry it carries).
    let mut hashed: Vec<(&Proposal, Hash)> = Vec::new();
    for sp in props {
        let p = &sp.proposal;
        let hash = match hashed.iter().find(|(q, _)| q.same_candidate(p)) {
            Some((_, h)) => *h,
            None => {
                let h = p.candidate_hash();
                hashed.push((p, h));
                h
            }
        };
        groups.entry(hash).or_default().push(sp);
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

    fn id(seq: u64, h: u8) -> LedgerId {
        LedgerId {
            seq,
            hash: Hash([h; 32]),
        }
    }

    #[test]
    fn vote_status() {
        let ours = id(5, 1);
        let votes = BTreeMap::from([(ours, 4), (id(5, 2), 1)]);
        assert_eq!(status(&votes, ours, 3, 4, 5), (VoteStatus::Synced, None));
        assert_eq!(
            status(&votes, ours, 3, 5, 5),
            (VoteStatus::Unreliable, None)
        );
        // A majority on another ledger at our seq: a fork, ours never final.
        let votes = BTreeMap::from([(ours, 1), (id(5, 2), 3)]);
        assert_eq!(
            status(&votes, ours, 3, 4, 5),
            (VoteStatus::Desync, Some(id(5, 2)))
        );
        // Ahead of the majority: not desync, they will fetch from us.
        let votes = BTreeMap::from([(ours, 1), (id(4, 2), 3)]);
        assert_eq!(
            status(&votes, ours, 3, 4, 5),
            (VoteStatus::Unreliable, None)
        );
        // Behind: desync with no fork.
        let votes = BTreeMap::from([(id(6, 2), 3)]);
        assert_eq!(status(&votes, ours, 3, 4, 5), (VoteStatus::Desync, None));
        // Below the majority but ours is dead: 2 of 7 elsewhere leave ours
        // at most 5 < 6 (close); 2 of 7 with close 5 do not.
        let votes = BTreeMap::from([(ours, 1), (id(5, 2), 2)]);
        assert_eq!(
            status(&votes, ours, 5, 6, 7),
            (VoteStatus::Unreliable, Some(id(5, 2)))
        );
        assert_eq!(
            status(&votes, ours, 5, 5, 7),
            (VoteStatus::Unreliable, None)
        );
        // Not with as many on ours, nor for a ledger ahead of ours.
        let votes = BTreeMap::from([(ours, 2), (id(5, 2), 2)]);
        assert_eq!(
            status(&votes, ours, 5, 6, 7),
            (VoteStatus::Unreliable, None)
        );
        let votes = BTreeMap::from([(ours, 1), (id(6, 2), 2)]);
        assert_eq!(
            status(&votes, ours, 5, 6, 7),
            (VoteStatus::Unreliable, None)
        );
    }
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
            results: vec![],
            beacon: Default::default(),
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
    fn verdicts_follow_the_stage_thresholds() {
        let keys: Vec<Keypair> = (0..5).map(|i| Keypair::from_seed([i; 32])).collect();
        let cfg = ConsensusConfig::new(keys.iter().map(|k| k.public()).collect());
        let r = |b: u8| {
            Some(ExecResult {
                state: Hash([b; 32]),
                output: Hash([b; 32]),
            })
        };
        // Each author's vote on run 0 (`None`: nothing reported), and the
        // verdict the next stage draws from them.
        let verdict = |results: &[Option<Option<ExecResult>>], stage: u8| {
            let sps: Vec<SignedProposal> = results
                .iter()
                .zip(&keys)
                .map(|(res, k)| {
                    let mut p = prop(&[], 5);
                    p.author = k.public();
                    p.stage = stage;
                    p.results = res
                        .iter()
                        .map(|&result| Verdict { seq: 0, result })
                        .collect();
                    p.sign(k)
                })
                .collect();
            let refs: Vec<&SignedProposal> = sps.iter().collect();
            let v = verdicts(
                &cfg,
                &refs,
                sps[0].proposal.lcl,
                stage + 1,
                0,
                &PubKey([9; 32]),
                |_| false,
            );
            assert!(v.len() <= 1);
            v.first().map(|v| v.result)
        };
        let (a, b, c) = (Some(r(1)), Some(r(2)), Some(r(3)));
        // Copies split 3/2: the majority's result goes on (3 of 5 >= 50%).
        assert_eq!(verdict(&[a, a, a, b, b], 1), Some(r(1)));
        // Split 2/2/1: no result can reach 3; the run is uncertified.
        assert_eq!(verdict(&[a, a, b, b, c], 1), Some(None));
        // Two agree, three not done: pending, a later ledger decides.
        assert_eq!(verdict(&[a, a, None, None, None], 1), None);
        // Stage 3 asks 65% of stage 2: 3 of 5 is not enough.
        assert_eq!(verdict(&[a, a, a, None, None], 2), None);
        assert_eq!(verdict(&[a, a, a, a, None], 2), Some(r(1)));
        let unc = Some(None);
        assert_eq!(verdict(&[unc, unc, unc, unc, a], 2), Some(None));
        // With an even UNL half is not enough: a 2/2 split cannot certify.
        let four = ConsensusConfig::new(keys[..4].iter().map(|k| k.public()).collect());
        let sps: Vec<SignedProposal> = [r(1), r(1), r(2), r(2)]
            .iter()
            .zip(&keys)
            .map(|(res, k)| {
                let mut p = prop(&[], 5);
                p.author = k.public();
                p.stage = 1;
                p.results = vec![Verdict {
                    seq: 0,
                    result: *res,
                }];
                p.sign(k)
            })
            .collect();
        let refs: Vec<&SignedProposal> = sps.iter().collect();
        let v = verdicts(
            &four,
            &refs,
            sps[0].proposal.lcl,
            2,
            0,
            &PubKey([9; 32]),
            |_| false,
        );
        assert_eq!(
            v,
            vec![Verdict {
                seq: 0,
                result: None
            }],
            "uncertified"
        );
    }

    #[test]
    fn patience_ends_a_run_its_voter_reported_never_a_late_one() {
        let keys: Vec<Keypair> = (0..5).map(|i| Keypair::from_seed([i; 32])).collect();
        let cfg = ConsensusConfig::new(keys.iter().map(|k| k.public()).collect());
        let (a, b) = (
            ExecResult {
                state: Hash([1; 32]),
                output: Hash([1; 32]),
            },
            ExecResult {
                state: Hash([2; 32]),
                output: Hash([2; 32]),
            },
        );
        // Stage-1 reports of run 0 from the first `results.len()` nodes.
        let reports = |results: &[ExecResult], lcl_seq: u64| -> Vec<SignedProposal> {
            results
                .iter()
                .zip(&keys)
                .map(|(r, k)| {
                    let mut p = prop(&[], 5);
                    p.author = k.public();
                    p.stage = 1;
                    p.lcl.seq = lcl_seq;
                    p.results = vec![Verdict {
                        seq: 0,
                        result: Some(*r),
                    }];
                    p.sign(k)
                })
                .collect()
        };
        let unc = vec![Verdict {
            seq: 0,
            result: None,
        }];
        let vote = |sps: &[SignedProposal], me: usize| {
            let refs: Vec<&SignedProposal> = sps.iter().collect();
            verdicts(
                &cfg,
                &refs,
                sps[0].proposal.lcl,
                2,
                0,
                &keys[me].public(),
                |_| false,
            )
        };
        // Two copies split 2/2, the fifth silent: pending while it may
        // still tip the split; once patience runs out, each node whose own
        // report is in votes it uncertified.
        let split = reports(&[a, a, b, b], VERDICT_PATIENCE - 1);
        assert_eq!(vote(&split, 0), vec![]);
        let split = reports(&[a, a, b, b], VERDICT_PATIENCE);
        assert_eq!(vote(&split, 0), unc);
        // The silent node has not reported: it does not call it.
        assert_eq!(vote(&split, 4), vec![]);
        // A node that ran past it and lost its result (a restart) is not
        // waiting for it either: it calls it too.
        let refs: Vec<&SignedProposal> = split.iter().collect();
        let lcl = split[0].proposal.lcl;
        assert_eq!(
            verdicts(&cfg, &refs, lcl, 2, 0, &keys[4].public(), |s| s == 0),
            unc
        );
        // Two of five reported and three are late: pending whoever votes
        // (the late ones never call it, and two votes are short of 65%).
        let late = reports(&[a, a], VERDICT_BACKSTOP - 1);
        assert_eq!(vote(&late, 4), vec![]);
        assert_eq!(vote(&late, 0), unc, "a reporter calls it");
        // A value with the votes is certified, late as it is, until the
        // backstop.
        let agreed = reports(&[a, a, a], VERDICT_BACKSTOP - 1);
        assert_eq!(
            vote(&agreed, 0),
            vec![Verdict {
                seq: 0,
                result: Some(a)
            }]
        );
        // Stage 3 decides nothing alone before the backstop: it follows
        // the stage-2 votes.
        let mut lcl = prop(&[], 5).lcl;
        lcl.seq = VERDICT_BACKSTOP - 1;
        assert_eq!(
            verdicts(&cfg, &[], lcl, 3, 0, &keys[0].public(), |_| false),
            vec![]
        );
        // At the backstop the lcl alone decides, at stages 2 and 3, for
        // every node: nothing a byzantine node shows or hides holds it.
        lcl.seq = VERDICT_BACKSTOP;
        let agreed = reports(&[a, a], VERDICT_BACKSTOP);
        assert_eq!(vote(&agreed, 4), unc);
        assert_eq!(
            verdicts(&cfg, &[], lcl, 3, 0, &keys[0].public(), |_| false),
            unc
        );
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
