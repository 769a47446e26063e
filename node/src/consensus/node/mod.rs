//! The consensus state machine of one node: it owns its parts and
//! dispatches each event to them. Every part keeps its own state and
//! returns what it wants done; only this file moves results between parts.

mod beacon;
mod npl;
mod vote;

use crate::consensus::backlog::Backlog;
use crate::consensus::bodies::{self, BodyFetch, MAX_BODIES_PER_MESSAGE};
use crate::consensus::book::ProposalBook;
use crate::consensus::catchup::{self, check_answer, Answer, Catchup};
use crate::consensus::chain::Chain;
use crate::consensus::exec::Execution;
use crate::consensus::frames::SentProposals;
use crate::consensus::message::PeerMessage;
use crate::consensus::pool::{Admission, InputPool};
use crate::consensus::served::Served;
use crate::consensus::state_sync::{Effect, Forced, StateSync, View};
use crate::consensus::timing::{Slot, Timing};
use crate::consensus::VoteStatus;
use crate::consensus::{Action, CloseVia, ConsensusConfig, Event, Input, Job, NodeError, Stats};
use crate::contract::{input_hash, ExecResult};
use crate::crypto::{Hash, KeyRing, Keypair, PubKey};
use crate::ledger::{LedgerId, LedgerRecord};
use crate::npl::PartyLine;
use crate::wire::MAX_FRAME_BYTES;
use std::collections::BTreeMap;
use std::sync::Arc;

/// History or body requests served to one peer per round. An honest node
/// asks once per stage at most.
const MAX_REQUESTS_PER_ROUND: u32 = 8;

pub struct Node {
    cfg: ConsensusConfig,
    /// The UNL's keys, decompressed once.
    ring: KeyRing,
    timing: Timing,
    key: Keypair,
    chain: Chain,
    pool: InputPool,
    book: ProposalBook,
    exec: Execution,
    catchup: Catchup,
    bodies: BodyFetch,
    state: StateSync,
    npl: PartyLine,
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
    /// History and body requests served to each peer in the current
    /// round, so a UNL member cannot make this node send 16 MiB answers
    /// back to back.
    served: Served,
    /// Who the beacon recorded absent or convicted, over recent ledgers.
    absences: crate::beacon::Absences,
    /// Proposal frames the nodes of this process sent, when it shares them.
    frames: Option<SentProposals>,
    backlog: Backlog,
    stats: Stats,
    out: Vec<Action>,
}

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
        let chain = Chain::restore(stored)?;
        let lcl = chain.lcl();
        let (ran_seq, result) = ran;
        if ran_seq > lcl.seq {
            return Err(NodeError::ContractAhead {
                ran: ran_seq,
                lcl: lcl.seq,
            });
        }
        let mut npl = PartyLine::new(cfg.npl.clone(), key.public())?;
        npl.expect(ran_seq + 1);
        let mut state = StateSync::default();
        // A restart between finding a diverged run and installing the
        // certified state must not forget it: the state on disk is wrong.
        if chain
            .verdict(ran_seq)
            .flatten()
            .is_some_and(|c| c.state != result.state)
        {
            state.force(Forced::Mismatch);
        }
        Ok(Node {
            npl,
            ring: KeyRing::new(&cfg.unl).sharing(key.verified()),
            timing: Timing::new(&cfg),
            cfg,
            key,
            chain,
            pool: InputPool::default(),
            book: ProposalBook::default(),
            exec: Execution::restore(ran_seq, result, lcl.seq),
            catchup: Catchup::default(),
            bodies: BodyFetch::default(),
            state,
            slot: None,
            proposed: None,
            status: VoteStatus::Synced,
            forks_reported: BTreeMap::new(),
            vote_from_round: None,
            result_wait: None,
            served: Served::default(),
            absences: crate::beacon::Absences::new(beacon::ABSENCE_WINDOW),
            frames: None,
            backlog: Backlog::default(),
            stats: Stats::default(),
            out: vec![Action::Notify(Event::Started { lcl })],
        })
    }

    /// Shares `frames` with the other nodes of this process: the
    /// proposals this node sends go in, and a frame found there is not
    /// decoded again (see [`SentProposals`]). The simulator's nodes do.
    pub fn share_frames(&mut self, frames: &SentProposals) {
        self.frames = Some(frames.clone());
    }

    pub fn public_key(&self) -> PubKey {
        self.key.public()
    }
    pub fn lcl(&self) -> LedgerId {
        self.chain.lcl()
    }
    pub fn chain(&self) -> &[Arc<LedgerRecord>] {
        self.chain.records()
    }
    /// The node's counters, the party line's included: a snapshot, taken
    /// when an observer asks rather than after every event.
    pub fn stats(&self) -> Stats {
        Stats {
            npl: self.npl.stats().clone(),
            beacon: self.beacon_stats(),
            ..self.stats.clone()
        }
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
            self.catchup.deadline(),
            self.bodies.deadline(),
            self.state.deadline(),
            self.pool.deadline(),
            self.result_wait,
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
                let round = self.round();
                let chain = &self.chain;
                let admitted = self
                    .pool
                    .submit(&self.cfg, now, body, round, |h| chain.includes(h));
                self.count_admission(admitted);
            }
            Input::Executed { seq, hash, report } => {
                self.npl.run_finished(seq);
                let mismatch = self.exec.on_executed(&self.chain, seq, hash, report);
                self.mismatch(mismatch);
                self.propose_waiting(now);
            }
            Input::LocalState { id, tree } => {
                self.state_sync(now, |s, v, _, fx| s.on_local_state(v, id, tree, fx))
            }
            Input::StateInstalled { seq, error } => {
                self.state_sync(now, |s, v, st, fx| s.on_installed(v, seq, error, st, fx))
            }
            Input::StateServed { to, resp } => {
                let bytes = PeerMessage::StateResponse(resp).encode();
                self.out.push(Action::Send { to, bytes });
            }
            Input::RollbackFailed { seq, error } => {
                // The contract state is a later run's, not what the chain
                // now says: no run goes until the certified state is fetched
                // and installed. The driver dropped the runs it had queued.
                tracing::error!(seq, error, "contract state not rolled back; will fetch it");
                self.restore_runs(seq + 1, self.chain.lcl().seq);
                self.state.force(Forced::Rollback);
            }
            Input::RunStarted { seq } => self.npl_run_started(seq),
            Input::FromContract { seq, bytes } => self.npl_from_contract(seq, &bytes),
        }
        self.advance(now, tick);
        let intake = self
            .backlog
            .update(self.chain.lcl().seq, self.exec.ran_through());
        self.out.extend(intake);
        self.out.extend(self.pool.flush(now));
        std::mem::take(&mut self.out)
    }

    /// The current round (0 before the first tick).
    fn round(&self) -> u64 {
        self.slot.map_or(0, |s| s.round)
    }

    /// Hands an event to the state sync with what it reads of the node,
    /// then carries out what it asked for.
    fn state_sync(
        &mut self,
        now: u64,
        f: impl FnOnce(&mut StateSync, &View, &mut Stats, &mut Vec<Effect>),
    ) {
        let round = self.round();
        let v = View {
            cfg: &self.cfg,
            me: self.key.public(),
            chain: &self.chain,
            book: &self.book,
            now,
            round,
        };
        let mut fx = Vec::new();
        f(&mut self.state, &v, &mut self.stats, &mut fx);
        self.apply(fx);
    }

    /// Carries out what the state sync asked for, in order.
    fn apply(&mut self, fx: Vec<Effect>) {
        for e in fx {
            match e {
                Effect::Do(a) => self.out.push(a),
                Effect::SkipRuns(seq) => self.exec.forget_upto(seq),
                Effect::RestoreRuns { from, to } => self.restore_runs(from, to),
                Effect::Installed { seq, result } => {
                    self.exec.installed(seq, result);
                    // Only forwards: runs done again after an install have
                    // no party line left, and chunks held for the next run
                    // must stay.
                    if self.npl.running().is_none() && self.npl.expected() < seq + 1 {
                        self.npl.expect(seq + 1);
                    }
                    // Runs after it that went on the replaced state (a
                    // diverged run's successors) are due again.
                    self.restore_runs(seq + 1, self.chain.lcl().seq);
                }
            }
        }
    }

    /// Runs `from..=to` (up to the lcl) are due again.
    fn restore_runs(&mut self, from: u64, to: u64) {
        for seq in from..=to.min(self.chain.lcl().seq) {
            self.exec.schedule(seq);
        }
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
            self.enter(slot, now);
        } else if tick && self.result_wait.is_some_and(|t| now >= t) {
            self.propose_waiting(now);
        }
        self.catchup_tick(now);
        self.state_sync(now, |s, v, _, fx| s.tick(v, fx));
        self.progress_runs(now);
    }

    /// The stage-1 proposal that waited for the lcl's run goes out, with
    /// the result if it is known by now.
    fn propose_waiting(&mut self, now: u64) {
        if let Some(slot) = self.slot.filter(|_| self.result_wait.is_some()) {
            self.propose(slot, now);
        }
    }

    fn enter(&mut self, slot: Slot, now: u64) {
        self.book
            .prune(slot.round.saturating_sub(self.cfg.max_round_skew));
        if slot.stage == 0 {
            if slot.round > 0 {
                self.try_close(slot.round - 1);
            }
            self.out.extend(self.pool.expire(slot.round));
        } else {
            self.update_status(slot);
        }
        self.propose(slot, now);
    }

    fn on_peer(&mut self, now: u64, from: PubKey, bytes: &[u8]) {
        if bytes.len() > MAX_FRAME_BYTES {
            self.stats.dropped_malformed += 1;
            return;
        }
        if let Some((sp, signed)) = self.frames.as_ref().and_then(|f| f.received(bytes)) {
            return self.on_proposal(now, sp, Some(&signed));
        }
        let msg = match PeerMessage::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(peer = ?from, error = %e, "dropping frame");
                self.stats.dropped_malformed += 1;
                return;
            }
        };
        let in_unl = self.cfg.in_unl(&from);
        match msg {
            PeerMessage::Proposal(sp) => self.on_proposal(now, Arc::from(sp), None),
            PeerMessage::StateRequest(req) => {
                self.state_sync(now, |s, v, st, fx| s.serve(v, from, req, st, fx))
            }
            PeerMessage::StateResponse(resp) => {
                self.state_sync(now, |s, v, st, fx| s.on_response(v, from, resp, st, fx))
            }
            PeerMessage::HistoryResponse(records) => self.on_history(now, from, records),
            PeerMessage::BodyResponse(bodies) => self.on_bodies(now, from, bodies),
            _ if !in_unl => self.stats.dropped_not_unl += 1,
            PeerMessage::Npl(env) => self.npl_from_peer(from, *env),
            PeerMessage::Inputs(bodies) => {
                let round = self.round();
                for b in bodies {
                    let chain = &self.chain;
                    let admitted = self
                        .pool
                        .admit(&self.cfg, b, round, false, |h| chain.includes(h));
                    self.count_admission(admitted);
                }
            }
            PeerMessage::HistoryRequest { from_seq, count } => {
                if !self.may_serve(from) {
                    return;
                }
                let chain = self.chain.records();
                if let Some(bytes) = catchup::serve(&self.cfg, chain, from_seq, count) {
                    self.stats.history_served += 1;
                    self.out.push(Action::Send { to: from, bytes });
                }
            }
            PeerMessage::BodyRequest(hashes) => {
                if !self.may_serve(from) {
                    return;
                }
                let (pool, chain) = (&self.pool, &self.chain);
                let found = bodies::serve(&hashes, |h| pool.get(h).or_else(|| chain.body(h)));
                if let Some(bytes) = found {
                    self.out.push(Action::Send { to: from, bytes });
                }
            }
        }
    }

    fn count_admission(&mut self, admitted: Admission) {
        if admitted == Admission::Refused {
            self.stats.inputs_rejected += 1;
        }
    }

    /// Whether `peer` may have one more history or body request served this
    /// round; counts it if so.
    fn may_serve(&mut self, peer: PubKey) -> bool {
        let ok = self.served.take(peer, self.round(), MAX_REQUESTS_PER_ROUND);
        if !ok {
            self.stats.requests_refused += 1;
        }
        ok
    }

    /// Starts or retries a history request if a recent proposal showed a
    /// peer ahead of us.
    fn catchup_tick(&mut self, now: u64) {
        let (me, seq, round) = (self.key.public(), self.chain.lcl().seq, self.round());
        let (book, skew) = (&self.book, self.cfg.max_round_skew);
        let ahead = || book.peers_ahead(&me, seq, round, skew);
        self.out
            .extend(self.catchup.tick(&self.cfg, now, seq, ahead));
    }

    fn on_history(&mut self, now: u64, from: PubKey, records: Vec<LedgerRecord>) {
        if !self.catchup.answered(&from) {
            self.stats.dropped_duplicate += 1; // unsolicited
            return;
        }
        match check_answer(&self.cfg, &self.ring, self.chain.lcl(), records) {
            Answer::OtherParent { signers, refused } => {
                if self.rollback(true) {
                    // Ask again from the seq we now lack.
                    self.stats.signature_checks += signers as u64;
                } else {
                    self.refuse_history(from, refused);
                    self.catchup.failed();
                }
            }
            Answer::Extends { ledgers, refused } => {
                let mut adopted = Vec::new();
                for rec in ledgers {
                    self.stats.signature_checks += rec.proof.len() as u64;
                    adopted.push(self.append(rec).clone());
                }
                if let Some(e) = refused {
                    self.refuse_history(from, e);
                }
                if adopted.is_empty() {
                    self.catchup.failed();
                } else {
                    self.adopted(adopted);
                }
            }
        }
        self.catchup_tick(now);
    }

    fn refuse_history(&mut self, from: PubKey, e: crate::sync::SyncError) {
        self.stats.history_rejected += 1;
        self.catchup.failed();
        tracing::warn!(peer = ?from, error = %e, "rejecting history");
        self.out.push(Action::Notify(Event::HistoryRejected {
            peer: from,
            reason: e.to_string(),
        }));
    }

    /// Ledgers verified and appended from history: made durable, announced,
    /// and queued to run.
    fn adopted(&mut self, records: Vec<Arc<LedgerRecord>>) {
        self.stats.history_adopted += records.len() as u64;
        for r in &records {
            self.out.push(Action::Persist(r.clone()));
        }
        self.out.push(Action::Sync);
        for r in &records {
            self.out.push(Action::Notify(Event::LedgerClosed {
                ledger: r.ledger.clone(),
                hash: r.hash,
                via: CloseVia::History,
            }));
        }
        for r in records {
            self.exec.schedule(r.ledger.seq);
        }
    }

    /// Adds a verified ledger to the chain. It certifies its predecessor's
    /// run: a run of ours that differs is reported.
    fn append(&mut self, record: LedgerRecord) -> &Arc<LedgerRecord> {
        let mismatch = self.exec.on_append(&record.ledger);
        let appended = self.chain.append(record, &mut self.pool).ledger.seq;
        self.mismatch(mismatch);
        self.note_beacon(appended);
        self.chain.shared(appended).expect("just appended")
    }

    /// Our run differs from what the UNL certified: copies may diverge
    /// (what a contract heard on the party line is not agreed). With
    /// another state, the node takes the certified one before its next
    /// run; with only other outputs, withholding them is all there is.
    fn mismatch(&mut self, event: Option<Event>) {
        if let Some(e) = event {
            tracing::warn!(?e, "our run differs from the certified one");
            if matches!(e, Event::StateMismatch { .. }) {
                self.state.force(Forced::Mismatch);
            }
            self.out.push(Action::Notify(e));
        }
    }

    /// Drops the lcl if the chain's rollback rule allows it; returns
    /// whether it did. Its inputs go back to the pool, its run and
    /// outputs are forgotten, and the contract state steps back too.
    fn rollback(&mut self, proven_elsewhere: bool) -> bool {
        let Some(mut dropped) = self.chain.roll_back(proven_elsewhere) else {
            return false;
        };
        let from = dropped.id();
        let round = self.round();
        for h in &dropped.ledger.inputs {
            if let Some(body) = dropped.bodies.remove(h) {
                self.pool.put_back(*h, body, round);
            }
        }
        self.exec.on_rollback(from.seq);
        let to = self.chain.lcl();
        self.stats.rollbacks += 1;
        tracing::warn!(
            ?from,
            ?to,
            "rolling back an unfinal ledger the UNL did not build on"
        );
        self.exec.forget_above(to.seq);
        let mut fx = Vec::new();
        self.state.abort_above(&self.chain, &mut fx);
        self.apply(fx);
        self.out.push(Action::Contract(Job::Rollback { to }));
        self.out.push(Action::Sync);
        self.out
            .push(Action::Notify(Event::RolledBack { from, to }));
        true
    }

    /// After every event: hands over certified outputs (after every close
    /// and adoption queued its `Sync`, so an output never reaches a user
    /// ahead of the ledger certifying it being on disk, and before the next
    /// run is queued, so users do not wait for it), starts a state sync if
    /// the contract is far behind, hands out the runs that are ready, and
    /// asks for the bodies the next run lacks.
    fn progress_runs(&mut self, now: u64) {
        self.out.extend(self.exec.deliver_certified(&self.chain));
        let first = self.exec.first_waiting();
        self.state_sync(now, |s, v, _, fx| s.maybe_start(v, first, fx));
        // Not while the contract state is being replaced, nor while it is
        // known to be wrong and waits for a sync.
        if !self.state.active() && !self.state.forced() {
            self.out.extend(self.exec.ready_runs(&self.chain));
        }
        let (me, cfg, chain, exec) = (self.key.public(), &self.cfg, &self.chain, &self.exec);
        let want = || {
            let missing = exec.first_waiting().map(|seq| chain.missing_bodies(seq));
            let peers = cfg.peers_of(&me);
            (missing.unwrap_or_default(), peers)
        };
        let patience = catchup::patience(cfg);
        self.out.extend(self.bodies.tick(now, patience, want));
    }

    fn on_bodies(&mut self, now: u64, from: PubKey, bodies: Vec<Vec<u8>>) {
        let mut useful = false;
        for body in bodies.into_iter().take(MAX_BODIES_PER_MESSAGE) {
            let h = input_hash(&body);
            // Only bodies a waiting ledger names are kept: the hash check
            // is all the trust a body needs.
            if let Some(seq) = self.exec.waiting_for(&self.chain, &h) {
                if self.chain.add_body(seq, h, body) {
                    self.stats.bodies_fetched += 1;
                }
                useful = true;
            }
        }
        if !useful {
            self.stats.dropped_duplicate += 1;
        }
        self.bodies.answered(&from);
        self.progress_runs(now);
    }
}
