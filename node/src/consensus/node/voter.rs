//! The node's votes. [`Voter`] owns the stage the node is in and the last
//! one it proposed in, its status from the last stage's lcl votes, the
//! forks it reported, the first round this incarnation may vote in, and
//! how long the stage-1 proposal waits for the lcl's run. It decides
//! whether and on what the node proposes (the beacon's part of it comes
//! from `beacon`), and which ledger a round closes; the node keeps, sends
//! and appends what it decided.

use super::beacon;
use crate::consensus::book::ProposalBook;
use crate::consensus::chain::Chain;
use crate::consensus::exec::Execution;
use crate::consensus::message::PeerMessage;
use crate::consensus::pool::InputPool;
use crate::consensus::tally;
use crate::consensus::timing::{Slot, Timing};
use crate::consensus::{ConsensusConfig, Event, Proposal, SignedProposal, VoteStatus};
use crate::crypto::{Hash, KeyRing, Keypair};
use crate::ledger::LedgerRecord;
use std::collections::BTreeMap;
use std::sync::Arc;

/// How far into stage 1 a node waits for its run of the lcl before it
/// proposes without that result. The run starts at stage 0; stage 1
/// carries each node's own result, the first rung of the ladder that
/// certifies it. Waiting longer gives slow contracts more time, but the
/// proposal must still reach the others before stage 2.
const RESULT_WAIT_PCT: u64 = 60;

pub struct Voter {
    /// The stage the node is in, and the last one it proposed in.
    slot: Option<Slot>,
    proposed: Option<Slot>,
    status: VoteStatus,
    forks_reported: BTreeMap<u64, Hash>,
    /// The first round this incarnation may vote in: the one after the
    /// round it started in. Votes are not on disk, so a node restarted
    /// mid-round would otherwise sign that round's stages a second time,
    /// maybe differently: an equivocation, and a break in the one-vote
    /// rule the close threshold's safety rests on.
    vote_from_round: Option<u64>,
    /// Until when the stage-1 proposal waits for the lcl's run.
    result_wait: Option<u64>,
}

/// What the voter reads of the rest of the node.
pub struct View<'a> {
    pub cfg: &'a ConsensusConfig,
    pub ring: &'a KeyRing,
    pub key: &'a Keypair,
    pub timing: &'a Timing,
    pub chain: &'a Chain,
    pub book: &'a ProposalBook,
    pub pool: &'a InputPool,
    pub exec: &'a Execution,
}

/// A proposal the voter signed: the node keeps it in its book, shares its
/// signed bytes if it shares frames, and broadcasts its frame.
pub struct Signed {
    pub proposal: Arc<SignedProposal>,
    pub signing: Vec<u8>,
    pub frame: Vec<u8>,
}

/// What the voter wants done, in order.
#[derive(Debug)]
pub enum Effect {
    /// For the observers: a fork seen, a new status. Boxed: the other
    /// variant is empty.
    Notify(Box<Event>),
    /// The UNL built on another ledger at our seq: ours can never become
    /// final. Step back (unless we voted on ours: the rollback rule) and
    /// fetch theirs.
    RollBack,
}

impl Default for Voter {
    fn default() -> Self {
        Voter {
            slot: None,
            proposed: None,
            status: VoteStatus::Synced,
            forks_reported: BTreeMap::new(),
            vote_from_round: None,
            result_wait: None,
        }
    }
}

impl Voter {
    /// Told the round of every event: the first one is the round this
    /// incarnation started in, which it never votes in.
    pub fn woke_in(&mut self, round: u64) {
        if self.vote_from_round.is_none() {
            self.vote_from_round = Some(round + 1);
        }
    }

    /// The stage the node last entered (none before its first tick).
    pub fn slot(&self) -> Option<Slot> {
        self.slot
    }

    /// The current round (0 before the first tick).
    pub fn round(&self) -> u64 {
        self.slot.map_or(0, |s| s.round)
    }

    pub fn status(&self) -> VoteStatus {
        self.status
    }

    /// When the stage-1 proposal that waits for the lcl's run goes out
    /// anyway.
    pub fn deadline(&self) -> Option<u64> {
        self.result_wait
    }

    /// Moves into `slot` and says so if it is later than the current one.
    /// Only forwards: a clock stepped back must not make the node enter,
    /// and sign in, a stage it has already voted in.
    pub fn enter(&mut self, slot: Slot) -> bool {
        let later = self.slot.is_none_or(|s| slot > s);
        if later {
            self.slot = Some(slot);
        }
        later
    }

    /// The stage whose proposal waits for the lcl's run, if one does.
    pub fn waiting(&self) -> Option<Slot> {
        self.slot.filter(|_| self.result_wait.is_some())
    }

    /// Whether the wait for the lcl's run is over at `now`.
    pub fn wait_over(&self, now: u64) -> bool {
        self.result_wait.is_some_and(|t| now >= t)
    }

    /// On entering stages 1-3: the status the previous stage's lcl votes
    /// give, and a fork if a threshold closed another ledger at our seq.
    pub fn update_status(&mut self, v: &View, slot: Slot, fx: &mut Vec<Effect>) {
        let lcl = v.chain.lcl();
        let votes = v.book.lcl_votes(slot.round, slot.stage - 1);
        tracing::trace!(round = slot.round, stage = slot.stage, ?votes, "lcl votes");
        let majority = v.cfg.needed(v.cfg.stage_thresholds_pct[0]);
        let close = v.cfg.needed(v.cfg.close_threshold_pct);
        let unl = v.cfg.unl.len();
        let (status, fork) = tally::status(&votes, lcl, majority, close, unl);
        if let Some(id) = fork {
            if self.forks_reported.insert(id.seq, id.hash) != Some(id.hash) {
                fx.push(Effect::Notify(Box::new(Event::ForkSeen {
                    seq: id.seq,
                    ours: lcl.hash,
                    theirs: id.hash,
                })));
            }
            fx.push(Effect::RollBack);
        }
        if status != self.status {
            self.status = status;
            fx.push(Effect::Notify(Box::new(Event::Status(status))));
        }
    }

    /// The proposal this node signs in `slot`; none if it proposed
    /// already, may not vote, or (stage 1) waits a while for the lcl's
    /// run: see `RESULT_WAIT_PCT`.
    pub fn propose(&mut self, v: &View, slot: Slot, now: u64) -> Option<Signed> {
        let me = v.key.public();
        if !v.cfg.in_unl(&me) || self.proposed == Some(slot) {
            return None;
        }
        self.result_wait = None;
        let lcl = v.chain.lcl();
        let undecided = v.chain.undecided();
        if slot.stage == 1 && undecided <= lcl.seq && v.exec.result(lcl.seq).is_none() {
            let until = v.timing.slot_start(slot) + v.cfg.stage_ms() * RESULT_WAIT_PCT / 100;
            if now < until {
                self.result_wait = Some(until);
                return None;
            }
        }
        if self.vote_from_round.is_none_or(|r| slot.round < r) {
            return None; // the round this node (re)started in
        }
        if slot.stage > 0 && self.status == VoteStatus::Desync {
            return None;
        }
        if slot.stage == 3 && majority_elsewhere(v, slot) {
            // Ahead of a majority: keep announcing our lcl in stages 0-2 so
            // they fetch it, but do not vote on top of it until they are
            // here. A vote would forbid rolling it back if they never come.
            return None;
        }
        let chain = v.chain;
        let (inputs, time) = match slot.stage {
            0 => (
                v.pool.proposable(
                    v.cfg,
                    lcl.seq + 1,
                    |h| chain.includes(h),
                    |s| chain.fresh(s) || crate::consensus::planted!(v.cfg, NoNonceOrder),
                ),
                v.timing.round_start(slot.round),
            ),
            _ => tally::follow(
                v.cfg,
                &v.book.slot(slot.round, slot.stage - 1),
                lcl,
                slot.stage,
                v.timing.round_start(slot.round),
            ),
        };
        // Nothing else waits for the contract: a run not done by then is
        // voted on in a later round, and stages 2-3 follow the votes.
        let results = match slot.stage {
            0 | 1 => v.exec.own_results(undecided, lcl.seq),
            _ => tally::verdicts(
                v.cfg,
                &v.book.slot(slot.round, slot.stage - 1),
                lcl,
                slot.stage,
                undecided,
                &me,
                |seq| v.exec.lost(seq),
            ),
        };
        let proposal = Proposal {
            author: me,
            round: slot.round,
            stage: slot.stage,
            time,
            lcl,
            inputs,
            results,
            beacon: beacon::vote(v, slot, lcl),
        };
        tracing::trace!(
            round = slot.round,
            stage = slot.stage,
            inputs = proposal.inputs.len(),
            "proposing"
        );
        let (signed, signing) = proposal.sign_keeping_bytes(v.key);
        let frame = PeerMessage::proposal_frame(&signing, &signed.sig);
        self.proposed = Some(slot);
        Some(Signed {
            proposal: Arc::new(signed),
            signing,
            frame,
        })
    }

    /// At stage 0: the ledger of round `round`, if the close threshold of
    /// the UNL proposed one identical stage-3 candidate on our lcl.
    pub fn close(&self, v: &View, round: u64) -> Option<LedgerRecord> {
        let (lcl, me) = (v.chain.lcl(), v.key.public());
        let stage3 = v.book.slot(round, 3);
        let mut needed = v.cfg.needed(v.cfg.close_threshold_pct);
        if crate::consensus::planted!(v.cfg, CloseOnReceived) {
            needed = stage3.len() / 2 + 1;
        }
        let (hash, group) = tally::closing(&stage3, lcl, needed)?;
        // The hash does not cover the beacon's signatures: keep our own
        // copy, whose entries we checked as we voted, or else one whose
        // signatures hold, so the ledger's evidence convicts on its own.
        let chosen = (group.iter().find(|sp| sp.proposal.author == me))
            .or_else(|| (group.iter()).find(|sp| sp.proposal.beacon.verify_evidence(v.ring)))?;
        let ledger = chosen.proposal.candidate();
        // The book's copies, shared (`group` is made of them).
        let proof = (group.iter())
            .map(|sp| (v.book.shared(sp).cloned()).unwrap_or_else(|| Arc::new((*sp).clone())))
            .collect();
        Some(LedgerRecord {
            ledger,
            hash,
            proof,
            bodies: BTreeMap::new(),
        })
    }
}

/// Whether a majority of the previous stage proposed on another lcl.
fn majority_elsewhere(v: &View, slot: Slot) -> bool {
    let lcl = v.chain.lcl();
    let majority = v.cfg.needed(v.cfg.stage_thresholds_pct[0]);
    v.book
        .lcl_votes(slot.round, slot.stage - 1)
        .iter()
        .any(|(id, &n)| *id != lcl && n >= majority)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::ExecResult;

    /// A one-node UNL at genesis, its contract having run it.
    struct Parts {
        cfg: ConsensusConfig,
        ring: KeyRing,
        key: Keypair,
        timing: Timing,
        chain: Chain,
        book: ProposalBook,
        pool: InputPool,
        exec: Execution,
    }

    impl Parts {
        fn new() -> Parts {
            let key = Keypair::from_seed([1; 32]);
            let cfg = ConsensusConfig::new(vec![key.public()]);
            let result = ExecResult {
                state: Hash::ZERO,
                output: Hash::ZERO,
            };
            Parts {
                ring: KeyRing::new(&cfg.unl),
                timing: Timing::new(&cfg),
                chain: Chain::restore(vec![], 0).unwrap(),
                book: ProposalBook::default(),
                pool: InputPool::default(),
                exec: Execution::restore(0, result, 0),
                cfg,
                key,
            }
        }

        fn view(&self) -> View<'_> {
            View {
                cfg: &self.cfg,
                ring: &self.ring,
                key: &self.key,
                timing: &self.timing,
                chain: &self.chain,
                book: &self.book,
                pool: &self.pool,
                exec: &self.exec,
            }
        }
    }

    fn slot(round: u64, stage: u8) -> Slot {
        Slot { round, stage }
    }

    #[test]
    fn enters_only_later_stages() {
        let mut voter = Voter::default();
        assert!(voter.enter(slot(3, 1)));
        assert!(!voter.enter(slot(3, 1)), "already in it");
        assert!(!voter.enter(slot(2, 3)), "a clock stepped back");
        assert!(voter.enter(slot(4, 0)));
        assert_eq!(voter.round(), 4);
    }

    #[test]
    fn votes_from_the_round_after_it_woke_and_once_a_stage() {
        let parts = Parts::new();
        let v = parts.view();
        let mut voter = Voter::default();
        voter.woke_in(5);
        voter.woke_in(6); // only the first event counts
        let now = parts.timing.round_start(5);
        assert!(voter.propose(&v, slot(5, 0), now).is_none());
        let now = parts.timing.round_start(6);
        let signed = voter.propose(&v, slot(6, 0), now).expect("proposes");
        let p = &signed.proposal.proposal;
        assert_eq!((p.round, p.stage), (6, 0));
        assert_eq!(p.author, parts.key.public());
        assert_eq!(p.lcl, parts.chain.lcl());
        assert!(voter.propose(&v, slot(6, 0), now).is_none(), "once");
    }
}
