//! The consensus state machine of one node: it owns its parts and
//! dispatches each event to them. Every part keeps its own state and
//! returns what it wants done; only this file and `ledgers.rs` (closing,
//! adopting and rolling back ledgers, which touches most parts) move
//! results between parts. `voter.rs` is the part that votes, `beacon.rs`
//! the beacon's share of its proposals and of the node's records, and
//! `npl.rs` turns what the party line says into actions.

mod beacon;
mod ledgers;
mod npl;
mod serve;
mod voter;

use crate::consensus::backlog::Backlog;
use crate::consensus::bodies::{BodyFetch, MAX_BODIES_PER_MESSAGE};
use crate::consensus::book::{Arrival, ProposalBook};
use crate::consensus::catchup::{self, Catchup};
use crate::consensus::chain::Chain;
use crate::consensus::exec::Execution;
use crate::consensus::frames::SentProposals;
use crate::consensus::message::PeerMessage;
use crate::consensus::output_sigs::OutputSigs;
use crate::consensus::pool::{Admission, InputPool};
use crate::consensus::served::Served;
use crate::consensus::state_sync::{Effect, Forced, StateSync, View};
use crate::consensus::timing::{Slot, Timing};
use crate::consensus::{Action, ConsensusConfig, Event, Input, NodeError, RarePath, Stats};
use crate::consensus::{SignedProposal, VoteStatus};
use crate::contract::{input_hash, ExecResult};
use crate::crypto::{KeyRing, Keypair, PubKey};
use crate::ledger::{LedgerId, LedgerRecord};
use crate::npl::PartyLine;
use crate::wire::MAX_FRAME_BYTES;
use std::sync::Arc;
use voter::Voter;

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
    voter: Voter,
    /// History and body requests served to each peer in the current
    /// round, so a UNL member cannot make this node send 16 MiB answers
    /// back to back.
    served: Served,
    /// Who the beacon recorded absent or convicted, over recent ledgers.
    absences: crate::beacon::Absences,
    /// Proposal frames the nodes of this process sent, when it shares them.
    frames: Option<SentProposals>,
    backlog: Backlog,
    /// The UNL's signatures over delivered runs' outputs, for hpcore users.
    output_sigs: OutputSigs,
    stats: Stats,
    /// What the rare-path reports remember (`ledgers::RareMarks`).
    rare: ledgers::RareMarks,
    out: Vec<Action>,
}

impl Node {
    /// Starts from the ledgers a store kept (those after genesis in order,
    /// or the newest from `Chain::needed_from` on; none for a new node)
    /// and where the contract state is: `ran` is the
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
        let tip = stored.last().map_or(0, |r| r.ledger.seq);
        let keep_from = Chain::keep_from(tip, ran.0, cfg.memory_ledgers);
        let chain = Chain::restore(stored, keep_from)?;
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
            voter: Voter::default(),
            served: Served::default(),
            absences: crate::beacon::Absences::new(beacon::ABSENCE_WINDOW),
            frames: None,
            backlog: Backlog::default(),
            output_sigs: OutputSigs::default(),
            stats: Stats::default(),
            rare: Default::default(),
            out: vec![Action::Notify(Event::Started { lcl })],
        })
    }

    /// Shares `frames` with the other nodes of this process: the
    /// proposals this node sends go in, and a frame found there is not
    /// decoded again (see [`SentProposals`]). The simulator's nodes do.
    pub fn share_frames(&mut self, frames: &SentProposals) {
        self.frames = Some(frames.clone());
    }

    /// The first stored ledger [`Node::new`] needs, for a store whose
    /// newest ledger is `tip` and a contract that ran through `ran`: the
    /// recent ones kept whole, and those whose inputs and nonces a restart
    /// must know again.
    pub fn needed_from(cfg: &ConsensusConfig, tip: u64, ran: u64) -> u64 {
        Chain::needed_from(tip, ran, cfg.memory_ledgers)
    }

    pub fn public_key(&self) -> PubKey {
        self.key.public()
    }
    pub fn lcl(&self) -> LedgerId {
        self.chain.lcl()
    }
    /// The ledgers kept in memory, from `chain_base()` to the lcl.
    pub fn chain(&self) -> &[Arc<LedgerRecord>] {
        self.chain.records()
    }
    /// The seq of the first ledger in `chain()`.
    pub fn chain_base(&self) -> u64 {
        self.chain.base()
    }
    /// The node's counters, the party line's included: a snapshot, taken
    /// when an observer asks rather than after every event.
    pub fn stats(&self) -> Stats {
        Stats {
            round: self.round(),
            pooled: self.pool.len() as u64,
            npl: self.npl.stats().clone(),
            beacon: beacon::stats(&self.absences),
            ..self.stats.clone()
        }
    }
    pub fn status(&self) -> VoteStatus {
        self.voter.status()
    }
    pub fn pool_len(&self) -> usize {
        self.pool.len()
    }

    /// The node-local time at which the node next wants a `Tick`.
    pub fn next_deadline(&self, now: u64) -> u64 {
        if self.voter.slot().is_none_or(|s| self.timing.slot(now) > s) {
            return now; // a stage began and has not been entered yet
        }
        let mut d = self.timing.next_boundary(now);
        for t in [
            self.catchup.deadline(),
            self.bodies.deadline(),
            self.state.deadline(),
            self.pool.deadline(),
            self.voter.deadline(),
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
        self.voter.woke_in(self.timing.slot(now).round);
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
                // and installed. The runs queued for the host were dropped.
                tracing::error!(seq, error, "contract state not rolled back; will fetch it");
                self.reached(RarePath::ContractRollbackFailed);
                self.restore_runs(seq + 1, self.chain.lcl().seq);
                self.state.force(Forced::Rollback);
            }
            Input::RunStarted { seq } => self.out.extend(npl::run_started(&mut self.npl, seq)),
            Input::Stored { to, records, want } => self.serve_stored(to, &records, want),
            Input::FromContract { seq, bytes } => {
                let sent = npl::from_contract(&mut self.npl, &self.key, seq, &bytes);
                self.out.extend(sent);
            }
        }
        self.advance(now, tick);
        let intake = self
            .backlog
            .update(self.chain.lcl().seq, self.exec.ran_through());
        self.out.extend(intake);
        self.out.extend(self.pool.flush(now));
        let needed = self.exec.oldest_needed();
        let syncing = self.state.oldest_needed().unwrap_or(u64::MAX);
        (self.chain).prune(self.cfg.memory_ledgers, needed.min(syncing));
        std::mem::take(&mut self.out)
    }

    /// The current round (0 before the first tick).
    fn round(&self) -> u64 {
        self.voter.round()
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
        if tick && self.voter.enter(slot) {
            self.enter(slot, now);
        } else if tick && self.voter.wait_over(now) {
            self.propose_waiting(now);
        }
        self.catchup_tick(now);
        self.state_sync(now, |s, v, _, fx| s.tick(v, fx));
        self.progress_runs(now);
    }

    /// The stage-1 proposal that waited for the lcl's run goes out, with
    /// the result if it is known by now.
    fn propose_waiting(&mut self, now: u64) {
        if let Some(slot) = self.voter.waiting() {
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
            let next = self.chain.lcl().seq + 1;
            self.out.extend(self.pool.expire(slot.round, next));
        } else {
            let mut fx = Vec::new();
            self.vote(|voter, v| voter.update_status(v, slot, &mut fx));
            for e in fx {
                match e {
                    voter::Effect::Notify(e) => self.out.push(Action::Notify(*e)),
                    voter::Effect::RollBack => {
                        self.rollback(None);
                    }
                }
            }
        }
        self.propose(slot, now);
    }

    /// Hands the voter what it reads of the node.
    fn vote<T>(&mut self, f: impl FnOnce(&mut Voter, &voter::View) -> T) -> T {
        let v = voter::View {
            cfg: &self.cfg,
            ring: &self.ring,
            key: &self.key,
            timing: &self.timing,
            chain: &self.chain,
            book: &self.book,
            pool: &self.pool,
            exec: &self.exec,
        };
        f(&mut self.voter, &v)
    }

    /// Keeps and sends what the voter signs in `slot`, if anything.
    fn propose(&mut self, slot: Slot, now: u64) {
        let Some(signed) = self.vote(|voter, v| voter.propose(v, slot, now)) else {
            return;
        };
        if let Some(frames) = &self.frames {
            frames.sent(&signed.proposal, signed.signing.into());
        }
        let lcl = signed.proposal.proposal.lcl;
        self.book.insert(signed.proposal);
        if slot.stage == 3 {
            // Voted on top of our lcl: the rollback rule keeps it now.
            self.chain.vote(lcl);
        }
        self.out.push(Action::Broadcast {
            bytes: signed.frame,
        });
    }

    /// A peer's proposal; `signed` is its encoding when the frame came
    /// from the shared memory of sent frames.
    fn on_proposal(&mut self, now: u64, sp: Arc<SignedProposal>, signed: Option<&[u8]>) {
        let round = self
            .voter
            .slot()
            .map_or(self.timing.slot(now).round, |s| s.round);
        let lcl = sp.proposal.lcl;
        let arrival = self.book.arrive(&self.cfg, &self.ring, round, sp, signed);
        if arrival.verified() {
            self.stats.signature_checks += 1;
        }
        let s = &mut self.stats;
        match arrival {
            Arrival::Accepted => {
                s.proposals_accepted += 1;
                if lcl != self.chain.lcl() {
                    s.foreign_lcl += 1;
                }
                if lcl.seq > self.chain.lcl().seq {
                    self.catchup_tick(now);
                }
            }
            Arrival::Duplicate => s.dropped_duplicate += 1,
            Arrival::Equivocation => s.equivocations += 1,
            Arrival::Stale => s.dropped_stale += 1,
            Arrival::BadSignature => s.dropped_bad_signature += 1,
            Arrival::Malformed => s.dropped_malformed += 1,
            Arrival::NotUnl => s.dropped_not_unl += 1,
        }
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
            PeerMessage::Npl(env) => {
                let got = npl::from_peer(&mut self.npl, &self.cfg, &self.ring, from, *env);
                self.out.extend(got);
            }
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
                self.serve_history(from, from_seq, count)
            }
            // Signed by the peer on this link, or not counted.
            PeerMessage::OutputSig(s) if self.cfg.sign_outputs && s.author == from => {
                let lcl = self.chain.lcl().seq;
                let cfg = (&self.cfg, &self.ring);
                self.output_sigs.on_sig(cfg, lcl, s, &mut self.out);
            }
            PeerMessage::OutputSig(_) => {}
            PeerMessage::BodyRequest(hashes) => self.serve_bodies(from, &hashes),
        }
    }

    fn count_admission(&mut self, admitted: Admission) {
        if admitted == Admission::Refused {
            self.stats.inputs_rejected += 1;
        }
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

    /// After every event: hands over certified outputs (after every close
    /// and adoption queued its `Sync`, so an output never reaches a user
    /// ahead of the ledger certifying it being on disk, and before the next
    /// run is queued, so users do not wait for it), starts a state sync if
    /// the contract is far behind, hands out the runs that are ready, and
    /// asks for the bodies the next run lacks.
    fn progress_runs(&mut self, now: u64) {
        let delivered = (self.exec).deliver_certified(&self.chain, self.cfg.vouched_inputs);
        let start = self.out.len();
        self.out.extend(delivered);
        if self.cfg.sign_outputs {
            let (cfg, key, sigs) = ((&self.cfg, &self.ring), &self.key, &mut self.output_sigs);
            let (mut signed, lcl) = (Vec::new(), self.chain.lcl().seq);
            for a in &self.out[start..] {
                if let Action::Deliver { seq, ledger, run } = a {
                    sigs.delivered(cfg, key, (*seq, ledger), run, lcl, &mut signed);
                }
            }
            sigs.on_lcl(lcl, &mut signed);
            self.out.extend(signed);
        }
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
                    // Whole now: the store's copy too, as peers that fall
                    // behind are served from it once it leaves memory.
                    if self.chain.missing_bodies(seq).is_empty() {
                        let record = self.chain.shared(seq).expect("waiting ledger");
                        self.out.push(Action::Persist(record.clone()));
                    }
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
