//! The node's part in the random beacon (`crate::beacon`): what each of
//! its proposals carries of it, and the record of who was absent.
//!
//! Commits, reveals and fraud proofs climb the stage ladder like verdicts,
//! one stage behind inputs, since each node's own only appear at stage 0:
//! stage 1 gathers every valid entry the stage-0 proposals carried, stages
//! 2 and 3 keep what the first and second thresholds voted for, and the
//! close threshold does the rest. A stage-3 proposal also carries the
//! outcome it computes from its lcl's commits and the reveals it votes
//! for, so the value is part of the candidate every closing node signs.

use super::voter::View;
use crate::beacon::two_each;
use crate::beacon::{self, tally, Absences, Beacon, FraudProof, SignedCommit, SignedReveal};
use crate::consensus::chain::Chain;
use crate::consensus::timing::Slot;
use crate::consensus::BeaconStats;
use crate::crypto::PubKey;
use crate::ledger::{Ledger, LedgerId};
use std::collections::{BTreeMap, BTreeSet};

/// Ledgers over which absences are counted for operators.
pub(super) const ABSENCE_WINDOW: u64 = 1000;

/// This node's beacon part for `slot`, on `lcl`.
pub(super) fn vote(v: &View, slot: Slot, lcl: LedgerId) -> Beacon {
    let Some(tip) = v.chain.get(lcl.seq).map(|r| &r.ledger) else {
        return Beacon::default();
    };
    let session = reveal_session(tip);
    let committed = |author| tip.beacon.commits.iter().any(|c| c.author == author);
    if slot.stage == 0 {
        let me = v.key.public();
        return Beacon {
            commits: vec![SignedCommit::new(v.key, lcl)],
            reveals: session
                .filter(|_| committed(me))
                .map(|s| vec![SignedReveal::new(v.key, s)])
                .unwrap_or_default(),
            frauds: vec![],
            outcome: None,
        };
    }
    let prev: Vec<&Beacon> = v
        .book
        .slot(slot.round, slot.stage - 1)
        .into_iter()
        .filter(|sp| sp.proposal.lcl == lcl)
        .map(|sp| &sp.proposal.beacon)
        .collect();
    // Stage 1 gathers; signatures keep forgeries out of what it adds.
    let needed = match slot.stage {
        1 => 1,
        s => v.cfg.needed(v.cfg.stage_thresholds_pct[s as usize - 2]),
    };
    let votes: Vec<&[SignedCommit]> = prev.iter().map(|b| b.commits.as_slice()).collect();
    let mut commits = tally::carried_by(v.ring, lcl, &votes, needed);
    commits.retain(|c| v.cfg.in_unl(&c.author));
    // Sorted by (author, commitment): a double committer's two least.
    two_each(&mut commits, |c| c.author);
    let reveals = match session {
        Some(s) => reveals(v, slot, lcl, s, &tip.beacon.commits, &prev, needed),
        None => vec![],
    };
    let frauds = frauds(v, slot.stage, lcl, &prev, needed);
    let outcome = match session {
        Some(s) if slot.stage == 3 => Some(Box::new(beacon::decide(
            v.ring,
            &v.cfg.unl,
            s,
            &tip.beacon.commits,
            &reveals,
            &tip.beacon.frauds,
        ))),
        _ => None,
    };
    Beacon {
        commits,
        frauds,
        reveals,
        outcome,
    }
}

/// The reveals of `session` a stage-1..3 proposal carries. One that
/// opens its author's commitment in the lcl ledger is kept once seen
/// in any proposal on `lcl`, in any stage of any round still in the
/// book: there is only one such secret per commitment, so every node
/// converges on the same set whatever order reveals arrive in, and a
/// reveal lost on the way to some nodes still reaches them through the
/// others' proposals, or in the next round if this one fails to close.
/// Counting votes instead would record honest nodes absent whenever a
/// few messages are lost, with no later ledger to put it right. A
/// reveal that opens nothing is evidence of fraud, which a node could
/// make up anew every round: those climb the ladder of votes.
fn reveals(
    v: &View,
    slot: Slot,
    lcl: LedgerId,
    session: LedgerId,
    commits: &[SignedCommit],
    prev: &[&Beacon],
    needed: usize,
) -> Vec<SignedReveal> {
    let opens = |r: &SignedReveal| commits.iter().any(|c| r.opens(c));
    let committed = |r: &SignedReveal| commits.iter().any(|c| c.author == r.author);
    let oldest = slot.round.saturating_sub(v.cfg.max_round_skew);
    let mut seen: BTreeSet<&SignedReveal> = BTreeSet::new();
    // Proposals mostly carry the very same list: add each list once.
    let mut lists: Vec<&[SignedReveal]> = Vec::new();
    for sp in v.book.rounds(oldest, slot.round) {
        let list = sp.proposal.beacon.reveals.as_slice();
        if sp.proposal.lcl != lcl || lists.contains(&list) {
            continue;
        }
        lists.push(list);
        seen.extend(list.iter().filter(|r| r.lcl == session));
    }
    // One checked copy per secret: a forged copy of an honest reveal
    // (which sorts anywhere) must not stand in for the real one.
    let mut opening: BTreeMap<(PubKey, [u8; 32]), SignedReveal> = BTreeMap::new();
    for r in seen.into_iter().filter(|r| opens(r)) {
        let key = (r.author, r.secret);
        if !opening.contains_key(&key) && r.verify_with(v.ring).is_ok() {
            opening.insert(key, r.clone());
        }
    }
    let me = v.key.public();
    // Not in the book if this node missed stage 0 (it started late).
    if commits.iter().any(|c| c.author == me) && !opening.keys().any(|(a, _)| *a == me) {
        let r = SignedReveal::new(v.key, session);
        opening.insert((me, r.secret), r);
    }
    let votes: Vec<&[SignedReveal]> = prev.iter().map(|b| b.reveals.as_slice()).collect();
    let lies = tally::carried_by(v.ring, session, &votes, needed);
    let mut kept: Vec<SignedReveal> = opening.into_values().collect();
    kept.extend(lies.into_iter().filter(|r| committed(r) && !opens(r)));
    kept.sort_by_key(|r| (r.author, r.secret));
    two_each(&mut kept, |r| r.author);
    kept
}

/// Double commits in the session on `lcl`: stages 1 and 2 add those
/// the previous stage's commits show to every proof it carried (a node
/// that sent each half of the UNL another commitment shows up once the
/// halves' stage-1 proposals meet); stage 3 keeps what the threshold
/// voted for.
fn frauds(v: &View, stage: u8, lcl: LedgerId, prev: &[&Beacon], needed: usize) -> Vec<FraudProof> {
    let mut votes: Vec<&[FraudProof]> = prev.iter().map(|b| b.frauds.as_slice()).collect();
    let found;
    let needed = if stage < 3 {
        let seen = prev.iter().flat_map(|b| &b.commits);
        found = tally::double_commits(v.ring, seen);
        votes.push(&found);
        1
    } else {
        needed
    };
    let mut proofs = tally::convicted(v.ring, lcl, &votes, needed);
    proofs.retain(|p| v.cfg.in_unl(&p.accused()));
    proofs
}

pub(super) fn stats(absences: &Absences) -> BeaconStats {
    BeaconStats {
        absent: absences.withholders(1),
        convicted: absences.convicted(),
    }
}

/// Counts a new ledger's absences and frauds for operators, and says
/// so in the log: a node absent again and again is what a withholder
/// looks like.
pub(super) fn note(absences: &mut Absences, chain: &Chain, seq: u64) {
    let Some(outcome) = (chain.get(seq)).and_then(|r| r.ledger.beacon.outcome.clone()) else {
        return;
    };
    let outcome = &*outcome;
    // After a rollback the same seq comes again: start the count over.
    if absences.record(seq, outcome).is_err() {
        *absences = Absences::new(ABSENCE_WINDOW);
        let _ = absences.record(seq, outcome);
    }
    for k in &outcome.absent {
        tracing::warn!(
            seq,
            node = %k.short(),
            times = absences.absent(k),
            window = ABSENCE_WINDOW,
            "beacon: a node committed and did not reveal; its secret is left out"
        );
    }
    for p in &outcome.fraud {
        let kind = match p {
            FraudProof::DoubleCommit(..) => "two commitments",
            FraudProof::BadReveal(..) => "a reveal that does not match its commitment",
        };
        tracing::warn!(
            seq,
            node = %p.accused().short(),
            kind,
            "beacon: fraud proven; the node's secret is left out"
        );
    }
}

/// The session whose reveals go into the ledger after `tip`: the one on
/// `tip`'s parent, whose commits `tip` carries. None at genesis.
fn reveal_session(tip: &Ledger) -> Option<LedgerId> {
    let seq = tip.seq.checked_sub(1)?;
    Some(LedgerId {
        seq,
        hash: tip.prev,
    })
}
