//! The consensus state machine of one node.

use super::message::PeerMessage;
use super::timing::{Slot, Timing};
use super::votes::{agreed_time, best_candidate, inputs_with_votes, lcl_votes};
use super::{ConsensusConfig, Proposal, SignedProposal};
use crate::contract::input_hash;
use crate::contract::{ExecResult, RunReport, RunResult, StateNode};
use crate::crypto::{Hash, KeyRing, Keypair, PubKey};
use crate::ledger::{check_link, ChainError, Ledger, LedgerId, LedgerRecord};
use crate::sync::state_transfer::{FetchStats, StatePatch, StateRequest};
use crate::wire::MAX_FRAME_BYTES;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// An event fed to the node by its driver.
#[derive(Clone, Debug)]
pub enum Input {
    /// Time has passed; the driver sends this when `next_deadline` is reached.
    Tick,
    /// A frame from an authenticated peer connection.
    Peer { from: PubKey, bytes: Vec<u8> },
    /// An input body submitted by a user connected to this node.
    Submit(Vec<u8>),
    /// The contract finished running ledger `seq`, whose hash was `hash`.
    Executed {
        seq: u64,
        hash: Hash,
        report: RunReport,
    },
    /// The contract state's tree, read for `Action::ReadState { id }`.
    LocalState { id: u64, tree: StateNode },
    /// The contract host finished `Action::InstallState` for ledger `seq`.
    StateInstalled { seq: u64, error: Option<String> },
}

/// Something the driver must do, in order.
#[derive(Clone, Debug)]
pub enum Action {
    Send {
        to: PubKey,
        bytes: Vec<u8>,
    },
    /// Send to every other UNL member.
    Broadcast {
        bytes: Vec<u8>,
    },
    /// Write a ledger; it becomes durable at the next `Sync`.
    Persist(Box<LedgerRecord>),
    /// Durability point: everything persisted before must be on disk.
    Sync,
    /// Drop every stored ledger after `to`, and return the contract state to
    /// what running `to` left. Only ever the unfinal lcl (see `rollback`).
    Rollback {
        to: LedgerId,
    },
    /// Run the contract for this ledger, then feed back `Input::Executed`.
    Execute(Box<LedgerRecord>),
    /// Once queued runs are done, feed back `Input::LocalState`.
    ReadState {
        id: u64,
    },
    /// Answer a peer's state request from the contract host.
    ServeState {
        to: PubKey,
        req: StateRequest,
    },
    /// Swap the fetched state in, then feed back `Input::StateInstalled`.
    InstallState(Box<StatePatch>),
    /// Hand ledger `seq`'s outputs to the users connected here: the ledger
    /// after it, durably stored, certified exactly these.
    Deliver {
        seq: u64,
        run: RunResult,
    },
    /// A typed event for logs, traces and the simulator's checkers.
    Notify(Event),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum CloseVia {
    Consensus,
    History,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum VoteStatus {
    /// Enough of the UNL proposes on our lcl.
    Synced,
    /// A threshold of the UNL is on another lcl: catching up, not proposing.
    Desync,
    /// Too few proposals on our lcl to ever close.
    Unreliable,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Event {
    /// The node (re)started from its durable chain.
    Started {
        lcl: LedgerId,
    },
    /// A ledger is durably part of this node's chain.
    LedgerClosed {
        ledger: Ledger,
        hash: Hash,
        via: CloseVia,
    },
    Status(VoteStatus),
    /// A threshold of the UNL closed a different ledger at our lcl's seq.
    ForkSeen {
        seq: u64,
        ours: Hash,
        theirs: Hash,
    },
    /// The node dropped its unfinal lcl `from`, which the UNL did not build
    /// on, and is back on `to`.
    RolledBack {
        from: LedgerId,
        to: LedgerId,
    },
    /// Our run of ledger `seq` disagrees with what the next ledger certified.
    StateMismatch {
        seq: u64,
    },
    /// The contract is `behind` ledgers behind: fetching the state running
    /// ledger `seq` left, which the lcl certifies.
    StateSyncStarted {
        seq: u64,
        behind: u64,
    },
    /// No peer could serve the state of ledger `seq`: the node runs the
    /// ledgers itself.
    StateSyncAbandoned {
        seq: u64,
    },
    /// The fetched state of ledger `seq`, hashing to `state`, is installed.
    StateSynced {
        seq: u64,
        state: Hash,
        fetched: FetchStats,
    },
    /// A peer sent history that failed verification.
    HistoryRejected {
        peer: PubKey,
        reason: String,
    },
}

/// Counters of what the node dropped and why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub proposals_accepted: u64,
    pub dropped_not_unl: u64,
    pub dropped_bad_signature: u64,
    pub dropped_stale: u64,
    pub dropped_malformed: u64,
    pub dropped_duplicate: u64,
    pub equivocations: u64,
    pub foreign_lcl: u64,
    pub inputs_rejected: u64,
    pub history_served: u64,
    pub history_adopted: u64,
    pub history_rejected: u64,
    pub signature_checks: u64,
    pub rollbacks: u64,
    pub bodies_fetched: u64,
    /// History, body and state requests refused: the peer asked too often.
    pub requests_refused: u64,
    /// Contract states fetched and installed instead of running ledgers.
    pub state_syncs: u64,
    pub state_bytes_fetched: u64,
    pub state_files_fetched: u64,
    /// State sync answers that failed verification.
    pub state_rejected: u64,
    /// State requests passed to the contract host to answer.
    pub state_served: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeError {
    #[error("invalid consensus settings: {0}")]
    Config(#[from] super::ConfigError),
    #[error("stored chain is broken: {0}")]
    Chain(#[from] ChainError),
    #[error("the contract state is from ledger {ran}, past the stored chain's last ledger {lcl}; roll it back first")]
    ContractAhead { ran: u64, lcl: u64 },
}

pub struct Node {
    pub(super) cfg: ConsensusConfig,
    /// The UNL's keys, decompressed once.
    pub(super) ring: KeyRing,
    timing: Timing,
    pub(super) key: Keypair,
    pub(super) chain: Vec<LedgerRecord>,
    /// Result of running the lcl; `None` while that run is pending.
    pub(super) exec: Option<ExecResult>,
    /// Recent run results, to compare with what later ledgers certify.
    pub(super) exec_history: BTreeMap<u64, ExecResult>,
    /// Outputs of runs whose certifying ledger has not closed here yet.
    undelivered: BTreeMap<u64, RunResult>,
    /// Pooled inputs this node took from its own users: it re-sends them
    /// while they wait, since a lost broadcast would otherwise keep them
    /// below the stage-1 threshold for good.
    mine: BTreeSet<Hash>,
    /// Users' inputs taken since the last broadcast, and when they go out:
    /// one message for many inputs, so a busy node signs and sends a few
    /// frames a stage rather than one per input.
    outgoing: Vec<Vec<u8>>,
    outgoing_bytes: usize,
    flush_at: Option<u64>,
    /// Input bodies waiting for consensus, with the round they arrived in.
    pub(super) pool: BTreeMap<Hash, (Vec<u8>, u64)>,
    pool_bytes: usize,
    /// Inputs already in a ledger, with its seq, so they never land twice.
    pub(super) included: BTreeMap<Hash, u64>,
    pub(super) slot: Option<Slot>,
    proposed: Option<Slot>,
    proposals: BTreeMap<(u64, u8), BTreeMap<PubKey, SignedProposal>>,
    /// Latest lcl each peer proposed on, and in which round.
    pub(super) peer_lcl: BTreeMap<PubKey, (LedgerId, u64)>,
    pub(super) sync: super::catchup::Catchup,
    pub(super) bodies: super::bodies::BodyFetch,
    pub(super) state: super::state_sync::StateSync,
    status: VoteStatus,
    forks_reported: BTreeMap<u64, Hash>,
    /// The lcl this node signed a stage-3 proposal on. Such an lcl is never
    /// rolled back: that one-shot vote is what makes finality safe.
    voted_on: Option<LedgerId>,
    /// Seq of the lcl restored at start. The vote record does not survive a
    /// restart, so the restored lcl is treated as voted on.
    restored_seq: u64,
    /// The first round this incarnation may vote in: the one after the
    /// round it started in. Votes are not on disk, so a node restarted
    /// mid-round would otherwise sign that round's stages a second time,
    /// maybe differently: an equivocation, and a break in the one-vote
    /// rule the close threshold's safety rests on.
    vote_from_round: Option<u64>,
    /// Highest seq known final here: a ledger was appended on top of it.
    final_seq: u64,
    pub(super) stats: Stats,
    pub(super) out: Vec<Action>,
    /// History and body requests served to each peer in the current
    /// round, so a UNL member cannot make this node send 16 MiB answers
    /// back to back.
    served: Served,
}

/// Requests served to each peer, counted per round.
#[derive(Debug, Default)]
pub(super) struct Served(BTreeMap<PubKey, (u64, u32)>);

impl Served {
    /// Counts one more request from `peer` in `round`, unless `cap` were
    /// served already; returns whether it may be served.
    pub(super) fn take(&mut self, peer: PubKey, round: u64, cap: u32) -> bool {
        let entry = self.0.entry(peer).or_insert((round, 0));
        if entry.0 != round {
            *entry = (round, 0);
        }
        if entry.1 >= cap {
            return false;
        }
        entry.1 += 1;
        true
    }
}

/// Rounds an input may wait in the pool before it is dropped.
const INPUT_TTL_ROUNDS: u64 = 20;
/// Seqs an included input hash is remembered for, to refuse replays.
const INCLUDED_WINDOW: u64 = 1024;
/// History or body requests served to one peer per round. An honest node
/// asks once per stage at most.
const MAX_REQUESTS_PER_ROUND: u32 = 8;

/// Largest batch of waiting inputs re-sent in one message.
const RESEND_BATCH_BYTES: usize = 1 << 20;

impl Node {
    /// Starts from the ledgers a store kept (those after genesis, in order;
    /// none for a new node) and where the contract state is: `ran` is the
    /// ledger whose run left it (0 for the initial state) with that run's
    /// result. Ledgers after `ran` are run again before the node proposes.
    /// The stored chain is checked link by link: a disk can lie too.
    pub fn new(
        cfg: ConsensusConfig,
        key: Keypair,
        stored: Vec<LedgerRecord>,
        ran: (u64, ExecResult),
    ) -> Result<Node, NodeError> {
        cfg.validate()?;
        let mut chain = vec![LedgerRecord::genesis()];
        for r in stored {
            check_link(&chain[chain.len() - 1].id(), &r.ledger, &r.hash)?;
            chain.push(r);
        }
        let mut included = BTreeMap::new();
        let lcl_seq = chain.last().map_or(0, |r| r.ledger.seq);
        for r in chain
            .iter()
            .rev()
            .take_while(|r| r.ledger.seq + INCLUDED_WINDOW > lcl_seq)
        {
            for i in &r.ledger.inputs {
                included.insert(*i, r.ledger.seq);
            }
        }
        let mut node = Node {
            ring: KeyRing::new(&cfg.unl),
            timing: Timing::new(&cfg),
            cfg,
            key,
            chain,
            exec: None,
            exec_history: BTreeMap::new(),
            undelivered: BTreeMap::new(),
            mine: BTreeSet::new(),
            outgoing: Vec::new(),
            outgoing_bytes: 0,
            flush_at: None,
            pool: BTreeMap::new(),
            pool_bytes: 0,
            included,
            slot: None,
            proposed: None,
            proposals: BTreeMap::new(),
            peer_lcl: BTreeMap::new(),
            sync: Default::default(),
            bodies: Default::default(),
            state: Default::default(),
            status: VoteStatus::Synced,
            forks_reported: BTreeMap::new(),
            voted_on: None,
            restored_seq: 0,
            vote_from_round: None,
            final_seq: 0,
            stats: Stats::default(),
            out: Vec::new(),
            served: Served::default(),
        };
        let lcl = node.lcl();
        let (ran_seq, result) = ran;
        if ran_seq > lcl.seq {
            return Err(NodeError::ContractAhead {
                ran: ran_seq,
                lcl: lcl.seq,
            });
        }
        node.restored_seq = lcl.seq;
        node.final_seq = lcl.seq.saturating_sub(1);
        node.out.push(Action::Notify(Event::Started { lcl }));
        node.exec_history.insert(ran_seq, result);
        if ran_seq == lcl.seq {
            node.exec = Some(result);
        }
        for seq in ran_seq + 1..=lcl.seq {
            node.schedule_run(seq);
        }
        Ok(node)
    }

    pub fn public_key(&self) -> PubKey {
        self.key.public()
    }
    pub fn lcl(&self) -> LedgerId {
        self.chain.last().expect("chain has genesis").id()
    }
    pub fn chain(&self) -> &[LedgerRecord] {
        &self.chain
    }
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    pub fn status(&self) -> VoteStatus {
        self.status
    }
    pub fn pool_len(&self) -> usize {
        self.pool.len()
    }

    /// The node-local time at which the node next wants a `Tick`.
    pub fn next_deadline(&self, now: u64) -> u64 {
        if self.slot.is_none_or(|s| self.timing.slot(now) > s) {
            return now; // a stage began and has not been entered yet
        }
        let mut d = self.timing.next_boundary(now);
        for t in [
            self.sync.deadline(),
            self.bodies.deadline(),
            self.state.deadline(),
            self.flush_at,
        ]
        .into_iter()
        .flatten()
        {
            d = d.min(t.max(now + 1));
        }
        d
    }

    /// Feeds one event at node-local time `now` and returns what to do.
    pub fn handle(&mut self, now: u64, input: Input) -> Vec<Action> {
        if self.vote_from_round.is_none() {
            self.vote_from_round = Some(self.timing.slot(now).round + 1);
        }
        let tick = matches!(input, Input::Tick);
        match input {
            Input::Tick => {}
            Input::Peer { from, bytes } => self.on_peer(now, from, &bytes),
            Input::Submit(body) => {
                if self.add_input(body.clone(), true) {
                    self.outgoing_bytes += body.len();
                    self.outgoing.push(body);
                    let wait = (self.cfg.stage_ms() / 8).clamp(1, 10);
                    self.flush_at.get_or_insert(now + wait);
                }
            }
            Input::Executed { seq, hash, report } => self.on_executed(seq, hash, report),
            Input::LocalState { id, tree } => self.on_local_state(now, id, tree),
            Input::StateInstalled { seq, error } => self.on_state_installed(now, seq, error),
        }
        self.advance(now, tick);
        if self.flush_at.is_some_and(|t| now >= t) || self.outgoing_bytes >= RESEND_BATCH_BYTES {
            self.flush_inputs();
        }
        std::mem::take(&mut self.out)
    }

    /// Stages are entered only on a `Tick`, never in the middle of a
    /// stream of peer messages: a node that was busy (a long contract run)
    /// first takes in everything that arrived meanwhile, since its driver
    /// polls peers before its timer, and only then votes on it.
    fn advance(&mut self, now: u64, tick: bool) {
        let slot = self.timing.slot(now);
        // Only forwards: a clock stepped back must not make the node enter,
        // and sign in, a stage it has already voted in.
        if tick && self.slot.is_none_or(|s| slot > s) {
            self.slot = Some(slot);
            self.enter(slot);
        }
        self.catchup_tick(now);
        self.statesync_tick(now);
        self.bodies_tick(now);
    }

    fn enter(&mut self, slot: Slot) {
        let oldest = slot.round.saturating_sub(self.cfg.max_round_skew);
        self.proposals = self.proposals.split_off(&(oldest, 0));
        if slot.stage == 0 {
            if slot.round > 0 {
                self.try_close(slot.round - 1);
            }
            self.expire_pool(slot.round);
        } else {
            self.update_status(slot);
        }
        self.propose(slot);
    }

    fn on_peer(&mut self, now: u64, from: PubKey, bytes: &[u8]) {
        if bytes.len() > MAX_FRAME_BYTES {
            self.stats.dropped_malformed += 1;
            return;
        }
        let msg = match PeerMessage::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(peer = ?from, error = %e, "dropping frame");
                self.stats.dropped_malformed += 1;
                return;
            }
        };
        match msg {
            PeerMessage::Proposal(sp) => self.on_proposal(now, *sp),
            PeerMessage::Inputs(bodies) => {
                if !self.cfg.in_unl(&from) {
                    self.stats.dropped_not_unl += 1;
                    return;
                }
                for b in bodies {
                    self.add_input(b, false);
                }
            }
            PeerMessage::HistoryRequest { from_seq, count } => {
                self.serve_history(from, from_seq, count)
            }
            PeerMessage::HistoryResponse(records) => self.on_history(now, from, records),
            PeerMessage::BodyRequest(hashes) => self.serve_bodies(from, hashes),
            PeerMessage::BodyResponse(bodies) => self.on_bodies(now, from, bodies),
            PeerMessage::StateRequest(req) => self.serve_state(from, req),
            PeerMessage::StateResponse(resp) => self.on_state_response(now, from, resp),
        }
    }

    fn on_proposal(&mut self, now: u64, sp: SignedProposal) {
        let p = &sp.proposal;
        if !self.cfg.in_unl(&p.author) {
            self.stats.dropped_not_unl += 1;
            return;
        }
        let current = self.slot.map_or(self.timing.slot(now).round, |s| s.round);
        let skew = self.cfg.max_round_skew;
        if p.round.saturating_add(skew) < current || p.round > current.saturating_add(skew) {
            self.stats.dropped_stale += 1;
            return;
        }
        if p.stage > 3
            || p.inputs.len() > self.cfg.max_inputs_per_ledger
            || !p.inputs.windows(2).all(|w| w[0] < w[1])
        {
            self.stats.dropped_malformed += 1;
            return;
        }
        if let Some(existing) = self
            .proposals
            .get(&(p.round, p.stage))
            .and_then(|m| m.get(&p.author))
        {
            // Identical copies are free to drop; a different one must carry a
            // valid signature before we call it equivocation.
            if *existing == sp {
                self.stats.dropped_duplicate += 1;
                return;
            }
            self.stats.signature_checks += 1;
            if sp.verify_with(&self.ring).is_ok() {
                self.stats.equivocations += 1;
            } else {
                self.stats.dropped_bad_signature += 1;
            }
            return;
        }
        self.stats.signature_checks += 1;
        if sp.verify_with(&self.ring).is_err() {
            self.stats.dropped_bad_signature += 1;
            return;
        }
        self.stats.proposals_accepted += 1;
        let (author, round, lcl) = (p.author, p.round, p.lcl);
        if lcl != self.lcl() {
            self.stats.foreign_lcl += 1;
        }
        let newer = self.peer_lcl.get(&author).is_none_or(|&(_, r)| r <= round);
        if newer {
            self.peer_lcl.insert(author, (lcl, round));
        }
        self.proposals
            .entry((round, sp.proposal.stage))
            .or_default()
            .insert(author, sp);
        if lcl.seq > self.lcl().seq {
            self.catchup_tick(now);
        }
    }

    /// Pools an input; returns whether it was new.
    fn add_input(&mut self, body: Vec<u8>, from_user: bool) -> bool {
        if body.len() > self.cfg.max_input_bytes
            || self.pool.len() >= self.cfg.max_pool_inputs
            || self.pool_bytes + body.len() > self.cfg.max_pool_bytes
        {
            self.stats.inputs_rejected += 1;
            return false;
        }
        let h = input_hash(&body);
        if self.included.contains_key(&h) || self.pool.contains_key(&h) {
            return false;
        }
        if from_user {
            self.mine.insert(h);
        }
        let round = self.slot.map_or(0, |s| s.round);
        self.pool_bytes += body.len();
        self.pool.insert(h, (body, round));
        true
    }

    /// Sends the users' inputs taken since the last flush to the UNL.
    fn flush_inputs(&mut self) {
        self.flush_at = None;
        self.outgoing_bytes = 0;
        if !self.outgoing.is_empty() {
            let bytes = PeerMessage::Inputs(std::mem::take(&mut self.outgoing)).encode();
            self.out.push(Action::Broadcast { bytes });
        }
    }

    /// At stage 0: drops inputs that waited too long and re-sends this
    /// node's own users' inputs that are still waiting, every other round.
    fn expire_pool(&mut self, round: u64) {
        self.pool
            .retain(|_, (_, arrived)| arrived.saturating_add(INPUT_TTL_ROUNDS) > round);
        self.pool_bytes = self.pool.values().map(|(b, _)| b.len()).sum();
        let pool = &self.pool;
        self.mine.retain(|h| pool.contains_key(h));
        let mut batch = Vec::new();
        let mut size = 0;
        for h in &self.mine {
            let (body, arrived) = &self.pool[h];
            let waited = round.saturating_sub(*arrived);
            if waited < 2 || waited % 2 != 0 {
                continue;
            }
            if size + body.len() > RESEND_BATCH_BYTES && !batch.is_empty() {
                let bytes = PeerMessage::Inputs(std::mem::take(&mut batch)).encode();
                self.out.push(Action::Broadcast { bytes });
                size = 0;
            }
            size += body.len() + 8;
            batch.push(body.clone());
        }
        if !batch.is_empty() {
            let bytes = PeerMessage::Inputs(batch).encode();
            self.out.push(Action::Broadcast { bytes });
        }
    }

    /// Proposals of one slot, by UNL member.
    fn slot_proposals(&self, round: u64, stage: u8) -> Vec<&SignedProposal> {
        self.proposals
            .get(&(round, stage))
            .map(|m| m.values().collect())
            .unwrap_or_default()
    }

    /// How many of the previous stage's proposals name each lcl.
    fn prev_stage_lcl_votes(&self, slot: Slot) -> BTreeMap<LedgerId, usize> {
        let prev = self.slot_proposals(slot.round, slot.stage - 1);
        let props: Vec<&Proposal> = prev.iter().map(|sp| &sp.proposal).collect();
        lcl_votes(&props)
    }

    fn update_status(&mut self, slot: Slot) {
        let lcl = self.lcl();
        let votes = self.prev_stage_lcl_votes(slot);
        let mine = votes.get(&lcl).copied().unwrap_or(0);
        let other = votes
            .iter()
            .filter(|(id, _)| **id != lcl)
            .max_by_key(|(_, &n)| n)
            .map(|(id, &n)| (*id, n));
        let majority = self.cfg.needed(self.cfg.stage_thresholds_pct[0]);
        tracing::trace!(
            round = slot.round,
            stage = slot.stage,
            mine,
            ?other,
            "lcl votes"
        );
        let status = match other {
            // A node ahead of the others keeps proposing: that is how they
            // learn there is history to fetch.
            Some((id, n)) if n >= majority && n > mine && id.seq >= lcl.seq => {
                if id.seq == lcl.seq {
                    if self.forks_reported.insert(id.seq, id.hash) != Some(id.hash) {
                        self.out.push(Action::Notify(Event::ForkSeen {
                            seq: id.seq,
                            ours: lcl.hash,
                            theirs: id.hash,
                        }));
                    }
                    // The UNL built on another ledger at our seq: ours can
                    // never become final. Step back and fetch theirs.
                    self.rollback(false);
                }
                VoteStatus::Desync
            }
            _ if mine < self.cfg.needed(self.cfg.close_threshold_pct) => VoteStatus::Unreliable,
            _ => VoteStatus::Synced,
        };
        if status != self.status {
            self.status = status;
            self.out.push(Action::Notify(Event::Status(status)));
        }
    }

    pub(super) fn propose(&mut self, slot: Slot) {
        if !self.cfg.in_unl(&self.key.public()) || self.proposed == Some(slot) {
            return;
        }
        if self.vote_from_round.is_none_or(|r| slot.round < r) {
            return; // the round this node (re)started in
        }
        if slot.stage > 0 && self.status == VoteStatus::Desync {
            return;
        }
        // Only the stage-3 proposal is a candidate, so only it must carry
        // the lcl's run. Earlier stages go out while the contract still
        // runs: input agreement does not wait for it, and a run may take
        // most of a round.
        let exec = match self.exec {
            Some(e) => e,
            None if slot.stage < 3 => ExecResult {
                state: Hash::ZERO,
                output: Hash::ZERO,
            },
            None => return, // proposed once the run finishes (see on_executed)
        };
        let lcl = self.lcl();
        if slot.stage == 3 && self.majority_elsewhere(slot) {
            // Ahead of a majority: keep announcing our lcl in stages 0-2 so
            // they fetch it, but do not vote on top of it until they are
            // here. A vote would forbid rolling it back if they never come.
            return;
        }
        let round_start = self.timing.round_start(slot.round);
        let (inputs, time) = if slot.stage == 0 {
            // Oldest first, so grinding input hashes cannot jump the queue,
            // and within a byte budget, so a ledger always fits in a frame.
            let mut waiting: Vec<(u64, Hash, usize)> = self
                .pool
                .iter()
                .filter(|(h, _)| !self.included.contains_key(h))
                .map(|(h, (b, arrived))| (*arrived, *h, b.len()))
                .collect();
            waiting.sort();
            let mut budget = self.cfg.max_ledger_input_bytes;
            let mut inputs: Vec<Hash> = Vec::new();
            for (_, h, len) in waiting {
                if inputs.len() == self.cfg.max_inputs_per_ledger || len > budget {
                    break;
                }
                budget -= len;
                inputs.push(h);
            }
            inputs.sort();
            (inputs, round_start)
        } else {
            let prev = self.slot_proposals(slot.round, slot.stage - 1);
            let on_lcl: Vec<&Proposal> = prev
                .iter()
                .map(|sp| &sp.proposal)
                .filter(|p| p.lcl == lcl)
                .collect();
            let needed = self
                .cfg
                .needed(self.cfg.stage_thresholds_pct[slot.stage as usize - 1]);
            let inputs = inputs_with_votes(&on_lcl, needed);
            let time = agreed_time(&on_lcl, round_start).unwrap_or(round_start);
            (inputs, time)
        };
        let proposal = Proposal {
            author: self.key.public(),
            round: slot.round,
            stage: slot.stage,
            time,
            lcl,
            inputs,
            state: exec.state,
            output: exec.output,
        };
        tracing::trace!(
            round = slot.round,
            stage = slot.stage,
            inputs = proposal.inputs.len(),
            "proposing"
        );
        let signed = proposal.sign(&self.key);
        let bytes = PeerMessage::Proposal(Box::new(signed.clone())).encode();
        self.proposals
            .entry((slot.round, slot.stage))
            .or_default()
            .insert(self.key.public(), signed);
        self.proposed = Some(slot);
        if slot.stage == 3 {
            self.voted_on = Some(lcl);
        }
        self.out.push(Action::Broadcast { bytes });
    }

    /// Whether a majority of the previous stage proposed on another lcl.
    fn majority_elsewhere(&self, slot: Slot) -> bool {
        let lcl = self.lcl();
        let majority = self.cfg.needed(self.cfg.stage_thresholds_pct[0]);
        self.prev_stage_lcl_votes(slot)
            .iter()
            .any(|(id, &n)| *id != lcl && n >= majority)
    }

    /// Drops the lcl, if that is safe, and returns whether it did.
    ///
    /// Never a final ledger: ledgers below the lcl are final (the lcl's proof
    /// is a threshold of votes on them), and so is any lcl that once had a
    /// ledger appended on top (`final_seq`). Without a proof, only an lcl
    /// this node never voted on (nor restarted with, since the vote record
    /// is not kept across restarts). With `proven_elsewhere` (a verified
    /// threshold of votes on another ledger at this seq) a voted lcl may go
    /// too: that other ledger is final, so this one can never be, and
    /// honest nodes only ever switch towards a proven ledger.
    pub(super) fn rollback(&mut self, proven_elsewhere: bool) -> bool {
        let from = self.lcl();
        if from.seq == 0 || from.seq <= self.final_seq {
            return false;
        }
        if !proven_elsewhere && (from.seq <= self.restored_seq || self.voted_on == Some(from)) {
            return false;
        }
        let result = self.exec_history.get(&(from.seq - 1)).copied();
        let dropped = self
            .chain
            .pop()
            .expect("seq > 0 so the chain has a ledger above genesis");
        let round = self.slot.map_or(0, |s| s.round);
        for h in &dropped.ledger.inputs {
            self.included.remove(h);
            if let Some(body) = dropped.bodies.get(h) {
                self.pool_bytes += body.len();
                self.pool.insert(*h, (body.clone(), round));
            }
        }
        self.exec_history.remove(&from.seq);
        self.undelivered.retain(|s, _| *s < from.seq);
        // Without the predecessor's result (after a restart) the node waits
        // for the next adopted ledger's run before proposing again.
        self.exec = result;
        let to = self.lcl();
        self.stats.rollbacks += 1;
        tracing::warn!(
            ?from,
            ?to,
            "rolling back an unfinal ledger the UNL did not build on"
        );
        self.forget_runs_above(to.seq);
        self.abort_state_sync_above(to.seq);
        self.out.push(Action::Rollback { to });
        self.out.push(Action::Sync);
        self.out
            .push(Action::Notify(Event::RolledBack { from, to }));
        true
    }

    /// At stage 0: close round `round`'s ledger if the close threshold of the
    /// UNL proposed one identical stage-3 candidate on our lcl.
    fn try_close(&mut self, round: u64) {
        let lcl = self.lcl();
        let stage3: Vec<&SignedProposal> = self
            .slot_proposals(round, 3)
            .into_iter()
            .filter(|sp| sp.proposal.lcl == lcl)
            .collect();
        let Some((hash, group)) = best_candidate(&stage3) else {
            return;
        };
        if group.len() < self.cfg.needed(self.cfg.close_threshold_pct) {
            return;
        }
        let ledger = group[0].proposal.candidate();
        let proof: Vec<SignedProposal> = group.into_iter().cloned().collect();
        let record = self
            .append(LedgerRecord {
                ledger,
                hash,
                proof,
                bodies: BTreeMap::new(),
            })
            .clone();
        self.out.push(Action::Persist(Box::new(record.clone())));
        self.out.push(Action::Sync);
        self.out.push(Action::Notify(Event::LedgerClosed {
            ledger: record.ledger.clone(),
            hash,
            via: CloseVia::Consensus,
        }));
        let seq = record.ledger.seq;
        tracing::debug!(
            seq,
            inputs = record.ledger.inputs.len(),
            pool = self.pool.len(),
            "closing"
        );
        self.schedule_run(seq);
    }

    /// Adds a verified ledger to the chain in memory and forgets its inputs.
    /// Bodies the record lacks move into it from the pool: a peer's record
    /// may lack some this node holds, and if the only other holders crash,
    /// these copies are the last ones.
    pub(super) fn append(&mut self, mut record: LedgerRecord) -> &LedgerRecord {
        let seq = record.ledger.seq;
        for h in &record.ledger.inputs {
            if let Some((b, _)) = self.pool.remove(h) {
                self.pool_bytes -= b.len();
                record.bodies.entry(*h).or_insert(b);
            }
            self.included.insert(*h, seq);
        }
        self.included.retain(|_, s| *s + INCLUDED_WINDOW > seq);
        // The new ledger certifies the run of its predecessor.
        if let Some(r) = self.exec_history.get(&(seq - 1)) {
            if r.state != record.ledger.state || r.output != record.ledger.output {
                self.out
                    .push(Action::Notify(Event::StateMismatch { seq: seq - 1 }));
            }
        }
        self.final_seq = self.final_seq.max(seq - 1);
        self.chain.push(record);
        self.exec = None;
        self.chain.last().expect("just pushed")
    }

    fn on_executed(&mut self, seq: u64, hash: Hash, report: RunReport) {
        // A run queued before its ledger was rolled back: the rollback
        // that follows it returns the contract state too.
        if self.chain.get(seq as usize).is_none_or(|r| r.hash != hash) {
            return;
        }
        let result = ExecResult {
            state: report.state,
            output: report.run.output_hash(),
        };
        // Outputs up to the restored lcl may have reached users before a
        // restart (a ledger certifying the lcl can be delivered on, then
        // rolled back), and whether they did is not on disk: at most once
        // means never sending them again.
        if seq > self.restored_seq {
            self.undelivered.insert(seq, report.run);
        }
        self.exec_history.insert(seq, result);
        let keep_from = seq.saturating_sub(8);
        self.exec_history = self.exec_history.split_off(&keep_from);
        if let Some(next) = self.chain.get(seq as usize + 1) {
            if next.ledger.state != result.state || next.ledger.output != result.output {
                self.out.push(Action::Notify(Event::StateMismatch { seq }));
            }
        }
        if seq == self.lcl().seq {
            self.exec = Some(result);
            if let Some(slot) = self.slot {
                self.propose(slot);
            }
        }
    }

    /// Whether `peer` may have one more history or body request served this
    /// round; counts it if so.
    pub(super) fn may_serve(&mut self, peer: PubKey) -> bool {
        let round = self.slot.map_or(0, |s| s.round);
        let ok = self.served.take(peer, round, MAX_REQUESTS_PER_ROUND);
        if !ok {
            self.stats.requests_refused += 1;
        }
        ok
    }

    /// Hands over the outputs of every run the next ledger has certified.
    /// Called from `bodies_tick`, after every close and adoption has queued
    /// its `Sync` (an output never reaches a user ahead of the ledger that
    /// certifies it being on disk) and before the next run is queued (users
    /// do not wait for it).
    pub(super) fn deliver_certified(&mut self) {
        let ready: Vec<u64> = self
            .undelivered
            .keys()
            .copied()
            .filter(|s| self.chain.len() as u64 > s + 1)
            .collect();
        for seq in ready {
            let run = self.undelivered.remove(&seq).expect("key listed above");
            // A mismatch was reported as StateMismatch when it was found;
            // outputs nobody certified are never delivered.
            if self.chain[seq as usize + 1].ledger.output == run.output_hash() {
                self.out.push(Action::Deliver { seq, run });
            }
        }
    }
}
